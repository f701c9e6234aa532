//! `cabi_realloc_adapter` for Go modules.
//!
//! The port of components/example-go/adapter_realloc.py: the WASI preview 1
//! adapter allocates its state and stack through the main module's
//! `cabi_realloc_adapter` while the Go runtime is still starting, so that
//! function cannot be Go. This finds the arena `abi.go` declares by its
//! magic bytes in the module's active data segments and appends a bump
//! allocator over it, written directly in WebAssembly, exported as
//! `cabi_realloc_adapter`. It traps on a reallocation (the adapter only
//! asks for new blocks) and when the arena is full.

/// Reads a WebAssembly binary.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or("unexpected end of the module")?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or("unexpected end of the module")?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn uleb(&mut self) -> Result<u64, String> {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let b = self.byte()?;
            if shift >= 64 {
                return Err("LEB128 number too long".into());
            }
            value |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
    }

    fn usize(&mut self) -> Result<usize, String> {
        usize::try_from(self.uleb()?).map_err(|e| e.to_string())
    }

    fn sleb(&mut self) -> Result<i64, String> {
        let (mut value, mut shift) = (0i64, 0);
        loop {
            let b = self.byte()?;
            if shift >= 64 {
                return Err("LEB128 number too long".into());
            }
            value |= i64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Ok(value);
            }
        }
    }
}

fn uleb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn sleb(mut n: i64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if (n == 0 && byte & 0x40 == 0) || (n == -1 && byte & 0x40 != 0) {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The address of the arena, from the active data segments.
fn find_arena(data: &[u8]) -> Result<u32, String> {
    let mut r = Reader { buf: data, pos: 0 };
    let mut found = Vec::new();
    for _ in 0..r.uleb()? {
        let flags = r.uleb()?;
        if flags == 1 {
            // Passive.
            let n = r.usize()?;
            r.take(n)?;
            continue;
        }
        if flags == 2 {
            // Active, with an explicit memory index.
            r.uleb()?;
        }
        // The offset: `i32.const N end`, as the Go linker writes it.
        if r.byte()? != 0x41 {
            return Err("unexpected data segment offset expression".into());
        }
        let offset = r.sleb()?;
        if r.byte()? != 0x0b {
            return Err("unexpected data segment offset expression".into());
        }
        let n = r.usize()?;
        let segment = r.take(n)?;
        found.extend(
            segment
                .windows(ARENA_MAGIC.len())
                .enumerate()
                .filter(|(_, w)| w == ARENA_MAGIC)
                .map(|(at, _)| offset + at as i64),
        );
    }
    match found[..] {
        [at] => u32::try_from(at).map_err(|e| e.to_string()),
        _ => Err(format!(
            "expected the arena's magic once in the data, found it {} times",
            found.len()
        )),
    }
}

/// The body of `(old, old_size, align, new_size) -> address`, with one
/// i32 local.
fn realloc_body(arena: u32) -> Vec<u8> {
    let (next, first, end) = (
        i64::from(arena + ARENA_NEXT),
        i64::from(arena + ARENA_DATA),
        i64::from(arena + ARENA_DATA + ARENA_BYTES),
    );
    let mut code = vec![0x01, 0x01, 0x7f]; // one local of type i32
    code.extend([0x20, 0x00, 0x04, 0x40, 0x00, 0x0b]); // if old != 0: unreachable
    code.push(0x41); // i32.load next
    sleb(next, &mut code);
    code.extend([0x28, 0x02, 0x00]);
    code.extend([0x22, 0x04, 0x45, 0x04, 0x40]); // local.tee p; if p == 0
    code.push(0x41); // p = first; end
    sleb(first, &mut code);
    code.extend([0x21, 0x04, 0x0b]);
    // p = (p + align - 1) & -align
    code.extend([
        0x20, 0x04, 0x20, 0x02, 0x6a, 0x41, 0x01, 0x6b, 0x41, 0x00, 0x20, 0x02, 0x6b, 0x71, 0x21,
        0x04,
    ]);
    // if p + new_size > end: unreachable
    code.extend([0x20, 0x04, 0x20, 0x03, 0x6a, 0x41]);
    sleb(end, &mut code);
    code.extend([0x4b, 0x04, 0x40, 0x00, 0x0b]);
    // next = p + new_size
    code.push(0x41);
    sleb(next, &mut code);
    code.extend([0x20, 0x04, 0x20, 0x03, 0x6a, 0x36, 0x02, 0x00]);
    code.extend([0x20, 0x04, 0x0b]); // p; end
    let mut body = Vec::new();
    uleb(code.len() as u64, &mut body);
    body.extend(code);
    body
}

/// `wasm` (a Go core module with the adapter arena) with the export
/// `cabi_realloc_adapter` added.
pub(super) fn add_adapter_realloc(wasm: &[u8]) -> Result<Vec<u8>, String> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err("not a WebAssembly module".into());
    }
    let mut sections = Vec::new();
    let mut r = Reader { buf: wasm, pos: 8 };
    while r.pos < wasm.len() {
        let id = r.byte()?;
        let size = r.usize()?;
        sections.push((id, r.take(size)?));
    }
    let section = |id: u8| sections.iter().find(|(i, _)| *i == id).map(|(_, p)| *p);

    // The type (i32 i32 i32 i32) -> i32.
    const WANT: &[u8] = &[0x60, 0x04, 0x7f, 0x7f, 0x7f, 0x7f, 0x01, 0x7f];
    let types = section(1).ok_or("no type section")?;
    let mut r = Reader { buf: types, pos: 0 };
    let mut type_index = None;
    for i in 0..r.uleb()? {
        let start = r.pos;
        if r.byte()? != 0x60 {
            return Err("unexpected type in the type section".into());
        }
        let params = r.usize()?;
        r.take(params)?;
        let results = r.usize()?;
        r.take(results)?;
        if &types[start..r.pos] == WANT {
            type_index = Some(i);
            break;
        }
    }
    let type_index = type_index
        .ok_or("no (i32 i32 i32 i32) -> i32 type in the module (is cabi_realloc exported?)")?;

    let mut imported_funcs = 0u64;
    if let Some(imports) = section(2) {
        let mut r = Reader {
            buf: imports,
            pos: 0,
        };
        for _ in 0..r.uleb()? {
            for _ in 0..2 {
                let n = r.usize()?;
                r.take(n)?;
            }
            match r.byte()? {
                0 => {
                    imported_funcs += 1;
                    r.uleb()?;
                }
                kind @ (1 | 2) => {
                    if kind == 1 {
                        r.byte()?; // the table's reference type
                    }
                    let flags = r.uleb()?;
                    r.uleb()?;
                    if flags & 1 != 0 {
                        r.uleb()?;
                    }
                }
                3 => {
                    r.take(2)?; // value type, mutability
                }
                kind => return Err(format!("unexpected import kind {kind}")),
            }
        }
    }

    let arena = find_arena(section(11).ok_or("no data section")?)?;
    let mut out = wasm[..8].to_vec();
    let mut func_index = None;
    for (id, payload) in sections {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let mut new = Vec::new();
        match id {
            3 => {
                let count = r.uleb()?;
                func_index = Some(imported_funcs + count);
                uleb(count + 1, &mut new);
                new.extend(&payload[r.pos..]);
                uleb(type_index, &mut new);
            }
            7 => {
                let count = r.uleb()?;
                uleb(count + 1, &mut new);
                new.extend(&payload[r.pos..]);
                let name = b"cabi_realloc_adapter";
                uleb(name.len() as u64, &mut new);
                new.extend(name);
                new.push(0x00);
                uleb(func_index.ok_or("no function section")?, &mut new);
            }
            10 => {
                let count = r.uleb()?;
                uleb(count + 1, &mut new);
                new.extend(&payload[r.pos..]);
                new.extend(realloc_body(arena));
            }
            _ => new.extend(payload),
        }
        out.push(id);
        uleb(new.len() as u64, &mut out);
        out.extend(new);
    }
    Ok(out)
}

/// The Go projects' arena for the WASI adapter's allocations (see the Go
/// `abi.go` template and [`add_adapter_realloc`]): magic, header, size.
pub(super) const ARENA_MAGIC: &[u8; 16] = b"tessera-adapter!";
/// The offset in the arena of the next-free-address word.
pub(super) const ARENA_NEXT: u32 = 16;
/// The offset in the arena of its first allocatable byte.
pub(super) const ARENA_DATA: u32 = 32;
/// The arena's allocatable bytes (256 KiB).
pub(super) const ARENA_BYTES: u32 = 256 << 10;
