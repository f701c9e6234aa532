//! The compile cache: compiled components on disk, keyed by content digest
//! and engine compatibility.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! many seconds; loading a compiled artifact takes well under a millisecond
//! of work plus an `mmap`. Artifacts live in
//! `<dir>/<engine-hash>/<component-digest>.cwasm`, so an engine with other
//! settings (or another Tessera/wasmtime version) never sees them.
//!
//! Deserializing an artifact is trusted native code, so an entry is never
//! believed blindly: each file carries a header with a magic string and the
//! SHA-256 of its payload, checked before the bytes are handed to wasmtime,
//! which in turn checks that the artifact was made by a compatible engine. A
//! corrupt, truncated or foreign entry is removed and the component is
//! recompiled.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 16] = b"tessera-cwasm-2\n";
/// Magic, component digest, payload SHA-256, payload length.
const HEADER_LEN: usize = MAGIC.len() + 32 + 32 + 8;

/// What a cache lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// A valid entry was used; nothing was compiled.
    Hit,
    /// No entry existed; the component was compiled and stored.
    Miss,
    /// An entry existed but was rejected (the reason says why); the component
    /// was recompiled and the entry replaced.
    Rejected(String),
    /// Caching is disabled for this runtime.
    Disabled,
    /// This runtime had already compiled the component (same digest).
    Memory,
}

/// Compiled components on disk.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

/// Feeds `Hash` output into SHA-256 so the engine hash is stable across runs.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A stable hex digest of the engine's compatibility hash.
pub fn engine_hash(engine: &Engine) -> String {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..12])
}

impl ComponentCache {
    /// A cache rooted at `root`, partitioned by the engine's compatibility.
    pub fn new(root: &Path, engine: &Engine) -> Self {
        Self {
            dir: root.join(engine_hash(engine)),
        }
    }

    /// The directory holding this engine's entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry path for a component digest (`sha256:<hex>`).
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}.cwasm"))
    }

    /// Whether an entry exists (it may still turn out to be invalid).
    pub fn contains(&self, digest: &str) -> bool {
        self.entry_path(digest).is_file()
    }

    /// Loads an entry. `Ok(None)` means there is none; `Err(reason)` means
    /// there was one and it was rejected (and removed).
    pub fn load(&self, engine: &Engine, digest: &str) -> Result<Option<Component>, String> {
        let path = self.entry_path(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.reject(&path, format!("unreadable: {e}"))),
        };
        let payload = match check_entry(&bytes, digest) {
            Ok(p) => p,
            Err(reason) => return Err(self.reject(&path, reason)),
        };
        // SAFETY: the payload's SHA-256 matched the header written by `store`
        // below, which only ever writes the output of `Component::serialize`
        // for this engine's configuration (the directory is keyed by the
        // engine's compatibility hash). wasmtime additionally validates the
        // artifact's header and engine compatibility and returns an error
        // rather than loading a mismatched artifact.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, payload) };
        match component {
            Ok(c) => Ok(Some(c)),
            Err(e) => Err(self.reject(&path, format!("not loadable by this engine: {e}"))),
        }
    }

    fn reject(&self, path: &Path, reason: String) -> String {
        tracing::warn!("compile cache entry {} rejected: {reason}", path.display());
        let _ = fs::remove_file(path);
        reason
    }

    /// Stores a compiled component atomically (write to a temporary file,
    /// then rename), so readers never see a half-written entry.
    pub fn store(&self, digest: &str, component: &Component) -> std::io::Result<()> {
        let payload = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        fs::create_dir_all(&self.dir)?;
        let path = self.entry_path(digest);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&digest_bytes(digest))?;
            f.write_all(&Sha256::digest(&payload))?;
            f.write_all(&(payload.len() as u64).to_le_bytes())?;
            f.write_all(&payload)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)
    }
}

fn digest_bytes(digest: &str) -> [u8; 32] {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let mut out = [0u8; 32];
    if hex::decode_to_slice(hex, &mut out).is_err() {
        // Not a SHA-256 digest: key the header by a hash of the name instead.
        out.copy_from_slice(&Sha256::digest(digest.as_bytes()));
    }
    out
}

fn check_entry<'a>(bytes: &'a [u8], digest: &str) -> Result<&'a [u8], String> {
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a Tessera cache entry (bad header)".into());
    }
    let mut at = MAGIC.len();
    if bytes[at..at + 32] != digest_bytes(digest) {
        return Err("entry belongs to another component (digest mismatch)".into());
    }
    at += 32;
    let sum = &bytes[at..at + 32];
    at += 32;
    let len_bytes: [u8; 8] = bytes[at..HEADER_LEN]
        .try_into()
        .map_err(|_| "bad header".to_string())?;
    let len = u64::from_le_bytes(len_bytes);
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(format!(
            "truncated or padded: header says {len} bytes, found {}",
            payload.len()
        ));
    }
    if Sha256::digest(payload).as_slice() != sum {
        return Err("checksum mismatch (corrupted)".into());
    }
    Ok(payload)
}
