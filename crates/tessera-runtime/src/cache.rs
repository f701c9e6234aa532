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
//!
//! Beside the artifact an entry holds *notes*: what the runtime derived
//! from the component's bytes that the artifact does not carry (its WIT
//! doc comments, which take longer to decode than the artifact takes to
//! load). The cache stores them as opaque bytes under the same checksum;
//! the runtime says what they mean. Entries of the previous format (no
//! notes) are still read.
//!
//! One cache serves every data directory and every process of a user
//! (`$XDG_CACHE_HOME/tessera`, see [`default_dir`]): the same bytes are
//! compiled once per machine and engine, not once per data directory. Any
//! number of processes and threads may read and write it at once. A writer
//! puts each entry in a temporary file of its own in the same directory,
//! `fsync`s it and renames it into place, so a reader sees either no entry
//! or a whole one; two writers of the same entry both succeed and the last
//! rename wins (both wrote the same compilation). No lock is taken, so a
//! crashed writer cannot block anyone; it may leave a `.tmp*` file behind,
//! which the next writer of that directory removes once it is an hour old.
//!
//! A cache with a *seal key* ([`ComponentCache::with_seal`], set when a
//! trust policy is in force) also requires each entry it loads to carry a
//! seal made with that key: a sidecar `<digest>.cwasm.<seal-id>.seal`
//! holding HMAC-SHA256(key, the entry's header), the header being what
//! binds the digest to the checksum of the compiled code. The checksum
//! catches an entry damaged by accident; the seal catches one replaced on
//! purpose by whoever can write the cache but does not hold the key.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hmac::Mac;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Entries written now: magic, component digest, SHA-256 of the artifact
/// and the notes, artifact length, notes length; then the artifact, then
/// the notes.
const MAGIC: &[u8; 16] = b"tessera-cwasm-3\n";
const HEADER_LEN: usize = MAGIC.len() + 32 + 32 + 8 + 8;
/// Entries of the format before: magic, component digest, SHA-256 of the
/// artifact, artifact length; then the artifact. Read, never written.
const MAGIC_V2: &[u8; 16] = b"tessera-cwasm-2\n";
const HEADER_LEN_V2: usize = MAGIC_V2.len() + 32 + 32 + 8;

/// The environment variable that overrides the cache directory (the CLI's
/// `--cache-dir` reads it too).
pub const CACHE_DIR_ENV: &str = "TESSERA_CACHE_DIR";

/// The per-user cache directory: `$XDG_CACHE_HOME/tessera`, or
/// `$HOME/.cache/tessera` when `XDG_CACHE_HOME` is unset or not absolute
/// (the XDG Base Directory rules). `None` when neither gives an absolute
/// path. The directory is created on the first write.
pub fn default_dir() -> Option<PathBuf> {
    default_dir_from(
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

/// [`default_dir`] from the given values of `XDG_CACHE_HOME` and `HOME`.
pub fn default_dir_from(
    xdg_cache_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    let absolute = |v: Option<&std::ffi::OsStr>| {
        v.map(PathBuf::from)
            .filter(|p| p.is_absolute() && !p.as_os_str().is_empty())
    };
    absolute(xdg_cache_home)
        .or_else(|| absolute(home).map(|h| h.join(".cache")))
        .map(|d| d.join("tessera"))
}

/// Temporary files older than this are a crashed writer's leftovers.
const STALE_TMP: Duration = Duration::from_secs(3600);

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

/// A valid entry, as [`ComponentCache::load`] found it.
pub struct CachedComponent {
    /// The compiled component.
    pub component: Component,
    /// The notes stored with it by [`ComponentCache::store`] (empty for an
    /// entry of the previous format).
    pub notes: Vec<u8>,
}

/// Compiled components on disk.
#[derive(Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    seal: Option<[u8; 32]>,
}

impl std::fmt::Debug for ComponentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentCache")
            .field("dir", &self.dir)
            .field("sealed", &self.seal.is_some())
            .finish()
    }
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
            seal: None,
        }
    }

    /// The same cache, sealing the entries it writes with `key` and
    /// refusing entries without a valid seal by it (see the module
    /// documentation).
    pub fn with_seal(mut self, key: [u8; 32]) -> Self {
        self.seal = Some(key);
        self
    }

    /// The seal sidecar of an entry, named by the seal key's id.
    fn seal_path(&self, digest: &str, key: &[u8; 32]) -> PathBuf {
        let id = Sha256::new()
            .chain_update(b"tessera-cache-seal-id\0")
            .chain_update(key)
            .finalize();
        let mut p = self.entry_path(digest).into_os_string();
        p.push(format!(".{}.seal", hex::encode(&id[..8])));
        PathBuf::from(p)
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
    pub fn load(&self, engine: &Engine, digest: &str) -> Result<Option<CachedComponent>, String> {
        let path = self.entry_path(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.reject(&path, format!("unreadable: {e}"))),
        };
        let (payload, notes) = match check_entry(&bytes, digest) {
            Ok(p) => p,
            Err(reason) => return Err(self.reject(&path, reason)),
        };
        if let Some(key) = &self.seal {
            let seal_path = self.seal_path(digest, key);
            let found = fs::read(&seal_path).unwrap_or_default();
            if seal_of(key, &bytes).verify_slice(&found).is_err() {
                let _ = fs::remove_file(&seal_path);
                let why = if found.is_empty() {
                    "not sealed by this host (written without its trust policy)"
                } else {
                    "its seal does not match (the entry was replaced or changed)"
                };
                return Err(self.reject(&path, why.to_string()));
            }
        }
        // SAFETY: the payload's SHA-256 matched the header written by `store`
        // below, which only ever writes the output of `Component::serialize`
        // for this engine's configuration (the directory is keyed by the
        // engine's compatibility hash). wasmtime additionally validates the
        // artifact's header and engine compatibility and returns an error
        // rather than loading a mismatched artifact.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, payload) };
        match component {
            Ok(component) => Ok(Some(CachedComponent {
                component,
                notes: notes.to_vec(),
            })),
            Err(e) => Err(self.reject(&path, format!("not loadable by this engine: {e}"))),
        }
    }

    fn reject(&self, path: &Path, reason: String) -> String {
        tracing::warn!("compile cache entry {} rejected: {reason}", path.display());
        let _ = fs::remove_file(path);
        reason
    }

    /// Stores a compiled component atomically: the entry is written to a
    /// temporary file of its own in the entry's directory, `fsync`ed, and
    /// renamed over the entry (then the directory is `fsync`ed), so readers
    /// never see a half-written entry and concurrent writers of the same
    /// entry never interfere. `notes` are kept with it (see the module
    /// documentation) and handed back by [`ComponentCache::load`].
    pub fn store(&self, digest: &str, component: &Component, notes: &[u8]) -> std::io::Result<()> {
        let payload = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        fs::create_dir_all(&self.dir)?;
        let path = self.entry_path(digest);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp")
            .suffix(".cwasm")
            .tempfile_in(&self.dir)?;
        let mut sum = Sha256::new();
        sum.update(&payload);
        sum.update(notes);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&digest_bytes(digest));
        header.extend_from_slice(&sum.finalize());
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        header.extend_from_slice(&(notes.len() as u64).to_le_bytes());
        {
            let f = tmp.as_file_mut();
            f.write_all(&header)?;
            f.write_all(&payload)?;
            f.write_all(notes)?;
            f.sync_all()?;
        }
        tmp.persist(&path).map_err(|e| e.error)?;
        if let Some(key) = &self.seal {
            // The header is all the seal covers (see `seal_of`).
            let seal = seal_of(key, &header).finalize().into_bytes();
            let mut t = tempfile::Builder::new()
                .prefix(".tmp")
                .suffix(".seal")
                .tempfile_in(&self.dir)?;
            t.as_file_mut().write_all(&seal)?;
            t.as_file_mut().sync_all()?;
            t.persist(self.seal_path(digest, key))
                .map_err(|e| e.error)?;
        }
        // The rename itself is durable once the directory is synced (not
        // possible on every platform; the entry is valid either way).
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.remove_stale_tmp();
        Ok(())
    }

    /// Removes temporary files a crashed writer left (older than an hour,
    /// so a writer still at work is never disturbed).
    fn remove_stale_tmp(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for e in entries.flatten() {
            let is_tmp = e.file_name().to_string_lossy().starts_with(".tmp");
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP);
            if is_tmp && old {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The seal of an entry: HMAC-SHA256 under `key` of its header (the
/// header holds the digest and the checksum of everything after it, which
/// [`check_entry`] verifies before the seal is looked at). `entry` may be
/// the whole entry; only its header is read.
fn seal_of(key: &[u8; 32], entry: &[u8]) -> hmac::Hmac<Sha256> {
    let header_len = if entry.starts_with(MAGIC) {
        HEADER_LEN
    } else {
        HEADER_LEN_V2
    };
    let mut mac =
        <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(&entry[..header_len.min(entry.len())]);
    mac
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

/// The artifact and the notes of an entry, once its header and checksum
/// are found right.
fn check_entry<'a>(bytes: &'a [u8], digest: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (header_len, has_notes) = if bytes.starts_with(MAGIC) {
        (HEADER_LEN, true)
    } else if bytes.starts_with(MAGIC_V2) {
        (HEADER_LEN_V2, false)
    } else {
        return Err("not a Tessera cache entry (bad header)".into());
    };
    if bytes.len() < header_len {
        return Err("not a Tessera cache entry (bad header)".into());
    }
    let field = |at: usize| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut at = MAGIC.len();
    if bytes[at..at + 32] != digest_bytes(digest) {
        return Err("entry belongs to another component (digest mismatch)".into());
    }
    at += 32;
    let sum = &bytes[at..at + 32];
    at += 32;
    let len = field(at);
    let notes_len = if has_notes { field(at + 8) } else { 0 };
    let body = &bytes[header_len..];
    if len.checked_add(notes_len) != Some(body.len() as u64) {
        return Err(format!(
            "truncated or padded: header says {} bytes, found {}",
            len.saturating_add(notes_len),
            body.len()
        ));
    }
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch (corrupted)".into());
    }
    // `len` fits: it is at most `body.len()`.
    Ok(body.split_at(len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn default_dir_follows_the_xdg_rules() {
        let d = |x: Option<&str>, h: Option<&str>| {
            default_dir_from(x.map(OsStr::new), h.map(OsStr::new))
        };
        assert_eq!(
            d(Some("/x/cache"), Some("/home/u")),
            Some(PathBuf::from("/x/cache/tessera"))
        );
        assert_eq!(
            d(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/tessera"))
        );
        // A relative or empty XDG_CACHE_HOME is invalid and ignored.
        assert_eq!(
            d(Some("rel/cache"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/tessera"))
        );
        assert_eq!(
            d(Some(""), Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/tessera"))
        );
        assert_eq!(d(None, None), None);
        assert_eq!(d(Some("rel"), Some("also-rel")), None);
    }
}
