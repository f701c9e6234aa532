//! Snapshots of a guest's state: linear memories and globals of every core
//! instance inside a component, read through wasmtime's guest-debug API.
//!
//! This needs no cooperation from the component: the engine must only be
//! created with [`crate::RuntimeConfig::guest_debug`].

use sha2::{Digest, Sha256};
use wasmtime::Store;

use crate::host::HostState;

/// Size of a wasm page.
pub const PAGE: usize = 64 * 1024;

/// One linear memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySnapshot {
    /// Index of the core instance within the store.
    pub instance: usize,
    /// Memory index within that instance.
    pub index: u32,
    /// The contents.
    pub bytes: Vec<u8>,
}

impl MemorySnapshot {
    /// `sha256:<hex>` of the contents.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.bytes)))
    }

    /// Runs of at least `min` printable ASCII characters: (offset, text).
    pub fn strings(&self, min: usize) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, b) in self.bytes.iter().enumerate() {
            let printable = b.is_ascii_graphic() || *b == b' ';
            match (printable, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    if i - s >= min {
                        out.push((s, String::from_utf8_lossy(&self.bytes[s..i]).to_string()));
                    }
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start
            && self.bytes.len() - s >= min
        {
            out.push((s, String::from_utf8_lossy(&self.bytes[s..]).to_string()));
        }
        out
    }
}

/// One global.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSnapshot {
    /// Index of the core instance within the store.
    pub instance: usize,
    /// Global index within that instance.
    pub index: u32,
    /// The value, rendered (`i32 1048576`).
    pub value: String,
}

/// The state of every core instance of a call at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Linear memories.
    pub memories: Vec<MemorySnapshot>,
    /// Globals.
    pub globals: Vec<GlobalSnapshot>,
}

/// A changed byte range of one memory between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryChange {
    /// Core instance.
    pub instance: usize,
    /// Memory index.
    pub index: u32,
    /// First changed byte.
    pub start: usize,
    /// One past the last changed byte.
    pub end: usize,
}

impl Snapshot {
    /// Reads every memory and global of every core instance in `store`.
    /// Empty unless the engine has guest debugging enabled.
    pub(crate) fn take(store: &mut Store<HostState>) -> Self {
        let mut snap = Snapshot::default();
        for (i, inst) in store.debug_all_instances().into_iter().enumerate() {
            let mut m = 0;
            while let Some(mem) = inst.debug_memory(&mut *store, m) {
                snap.memories.push(MemorySnapshot {
                    instance: i,
                    index: m,
                    bytes: mem.data(&*store).to_vec(),
                });
                m += 1;
            }
            let mut g = 0;
            while let Some(global) = inst.debug_global(&mut *store, g) {
                let value = match global.get(&mut *store) {
                    wasmtime::Val::I32(v) => format!("i32 {v}"),
                    wasmtime::Val::I64(v) => format!("i64 {v}"),
                    wasmtime::Val::F32(v) => format!("f32 {}", f32::from_bits(v)),
                    wasmtime::Val::F64(v) => format!("f64 {}", f64::from_bits(v)),
                    wasmtime::Val::V128(v) => format!("v128 {:#034x}", v.as_u128()),
                    other => format!("{other:?}"),
                };
                snap.globals.push(GlobalSnapshot {
                    instance: i,
                    index: g,
                    value,
                });
                g += 1;
            }
        }
        snap
    }

    /// Byte ranges that differ between `self` and `later` (a memory that
    /// grew counts its new tail as changed), merged when closer than 16 bytes.
    pub fn changes(&self, later: &Snapshot) -> Vec<MemoryChange> {
        let mut out = Vec::new();
        for new in &later.memories {
            let old = self
                .memories
                .iter()
                .find(|m| m.instance == new.instance && m.index == new.index);
            let old_bytes: &[u8] = old.map(|m| m.bytes.as_slice()).unwrap_or(&[]);
            let len = new.bytes.len().max(old_bytes.len());
            let mut i = 0;
            while i < len {
                if old_bytes.get(i) == new.bytes.get(i) {
                    i += 1;
                    continue;
                }
                let start = i;
                let mut end = i + 1;
                let mut same_run = 0;
                while end < len && same_run < 16 {
                    if old_bytes.get(end) == new.bytes.get(end) {
                        same_run += 1;
                    } else {
                        same_run = 0;
                    }
                    end += 1;
                }
                let end = end - same_run;
                out.push(MemoryChange {
                    instance: new.instance,
                    index: new.index,
                    start,
                    end,
                });
                i = end;
            }
        }
        out
    }
}
