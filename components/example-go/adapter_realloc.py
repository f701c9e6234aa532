#!/usr/bin/env python3
"""Adds the export `cabi_realloc_adapter` to the Go core module.

Usage: adapter_realloc.py <in.wasm> <out.wasm>

The WASI preview 1 adapter allocates its state and stack through the main
module's `cabi_realloc_adapter` while the Go runtime is still starting
(see the comment on `adapterArena` in abi.go), so that function cannot be
Go. This script finds the arena's magic bytes in the module's active data
segments, and appends a small bump allocator over the arena, written
directly in WebAssembly, exported as `cabi_realloc_adapter`. It traps on
a reallocation (the adapter only asks for new blocks) and when the arena
is full.
"""

import sys

MAGIC = b"tessera-adapter!"
NEXT = 16  # offset of the next-free-address word in the arena
DATA = 32  # offset of the first allocatable byte
SIZE = 32 + (256 << 10)  # the arena's size, as declared in abi.go


def uleb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def read_uleb(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def read_name(buf, pos):
    n, pos = read_uleb(buf, pos)
    return buf[pos : pos + n].decode(), pos + n


def sections(wasm):
    """Yields (id, payload) for each section."""
    pos = 8
    while pos < len(wasm):
        sid = wasm[pos]
        size, pos = read_uleb(wasm, pos + 1)
        yield sid, wasm[pos : pos + size]
        pos += size


def encode_section(sid, payload):
    return bytes([sid]) + uleb(len(payload)) + payload


def find_arena(data_payload):
    """The address of the arena, from the active data segments."""
    found = []
    count, pos = read_uleb(data_payload, 0)
    for _ in range(count):
        flags, pos = read_uleb(data_payload, pos)
        if flags == 1:  # passive
            n, pos = read_uleb(data_payload, pos)
            pos += n
            continue
        if flags == 2:  # active, explicit memory index
            _, pos = read_uleb(data_payload, pos)
        # The offset: `i32.const N end`, as the Go linker writes it.
        if data_payload[pos] != 0x41:
            raise SystemExit("unexpected data segment offset expression")
        offset = 0
        shift = 0
        pos += 1
        while True:
            byte = data_payload[pos]
            pos += 1
            offset |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if byte & 0x40:
                    offset -= 1 << shift
                break
        if data_payload[pos] != 0x0B:
            raise SystemExit("unexpected data segment offset expression")
        n, pos = read_uleb(data_payload, pos + 1)
        segment = data_payload[pos : pos + n]
        pos += n
        at = segment.find(MAGIC)
        while at >= 0:
            found.append(offset + at)
            at = segment.find(MAGIC, at + 1)
    if len(found) != 1:
        raise SystemExit(f"expected the arena's magic once in the data, found it {len(found)} times")
    return found[0]


def realloc_body(arena):
    """(old, old_size, align, new_size) -> address; one i32 local."""
    next_addr, first, end = arena + NEXT, arena + DATA, arena + SIZE
    code = b"".join(
        [
            b"\x20\x00\x04\x40\x00\x0b",  # if old != 0: unreachable
            b"\x41" + sleb(next_addr) + b"\x28\x02\x00",  # i32.load next
            b"\x22\x04\x45\x04\x40",  # local.tee p; if p == 0
            b"\x41" + sleb(first) + b"\x21\x04\x0b",  # p = first; end
            # p = (p + align - 1) & -align
            b"\x20\x04\x20\x02\x6a\x41\x01\x6b\x41\x00\x20\x02\x6b\x71\x21\x04",
            # if p + new_size > end: unreachable
            b"\x20\x04\x20\x03\x6a\x41" + sleb(end) + b"\x4b\x04\x40\x00\x0b",
            # next = p + new_size
            b"\x41" + sleb(next_addr) + b"\x20\x04\x20\x03\x6a\x36\x02\x00",
            b"\x20\x04\x0b",  # p; end
        ]
    )
    body = b"\x01\x01\x7f" + code  # one local of type i32
    return uleb(len(body)) + body


def main():
    src, dst = sys.argv[1], sys.argv[2]
    wasm = open(src, "rb").read()
    secs = list(sections(wasm))
    ids = [sid for sid, _ in secs]

    types = dict(secs)[1]
    # Find or note the type (i32 i32 i32 i32) -> i32.
    want = b"\x60\x04\x7f\x7f\x7f\x7f\x01\x7f"
    count, pos = read_uleb(types, 0)
    type_index = None
    for i in range(count):
        start = pos
        assert types[pos] == 0x60
        nparams, pos = read_uleb(types, pos + 1)
        pos += nparams
        nresults, pos = read_uleb(types, pos)
        pos += nresults
        if types[start:pos] == want:
            type_index = i
            break
    if type_index is None:
        raise SystemExit("no (i32 i32 i32 i32) -> i32 type in the module (is cabi_realloc exported?)")

    imported_funcs = 0
    if 2 in ids:
        imports = dict(secs)[2]
        count, pos = read_uleb(imports, 0)
        for _ in range(count):
            _, pos = read_name(imports, pos)
            _, pos = read_name(imports, pos)
            kind = imports[pos]
            pos += 1
            if kind == 0:
                imported_funcs += 1
                _, pos = read_uleb(imports, pos)
            elif kind == 1:  # table: reftype, limits
                pos += 1
                flags, pos = read_uleb(imports, pos)
                _, pos = read_uleb(imports, pos)
                if flags & 1:
                    _, pos = read_uleb(imports, pos)
            elif kind == 2:  # memory: limits
                flags, pos = read_uleb(imports, pos)
                _, pos = read_uleb(imports, pos)
                if flags & 1:
                    _, pos = read_uleb(imports, pos)
            elif kind == 3:  # global: valtype, mutability
                pos += 2
            else:
                raise SystemExit(f"unexpected import kind {kind}")

    arena = find_arena(dict(secs)[11])
    out = bytearray(wasm[:8])
    for sid, payload in secs:
        if sid == 3:  # functions: add ours
            count, pos = read_uleb(payload, 0)
            func_index = imported_funcs + count
            payload = uleb(count + 1) + payload[pos:] + uleb(type_index)
        elif sid == 7:  # exports
            count, pos = read_uleb(payload, 0)
            name = b"cabi_realloc_adapter"
            payload = (
                uleb(count + 1) + payload[pos:] + uleb(len(name)) + name + b"\x00" + uleb(func_index)
            )
        elif sid == 10:  # code
            count, pos = read_uleb(payload, 0)
            payload = uleb(count + 1) + payload[pos:] + realloc_body(arena)
        out += encode_section(sid, payload)
    open(dst, "wb").write(out)
    print(f"cabi_realloc_adapter: arena at {arena:#x}, {SIZE - DATA} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
