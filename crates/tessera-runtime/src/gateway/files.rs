//! `wasi:filesystem` grants: preopened directories only.
//!
//! Directories are opened with capability-based handles (cap-std), so a path
//! can never resolve outside its preopen — not through `..`, not through an
//! absolute path, not through a symlink. A read-only mount refuses every
//! mutation at the descriptor level.

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::manifest::{Mount, MountMode};

/// Preopens the granted directories.
pub fn preopen(builder: &mut WasiCtxBuilder, mounts: &[Mount]) -> Result<(), crate::Error> {
    for m in mounts {
        let perms = match m.mode {
            MountMode::ReadOnly => FsPerms::ReadOnly,
            MountMode::ReadWrite => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&m.host, &m.guest, perms)
            .map_err(|e| crate::Error::Grant(format!("cannot open {}: {e}", m.host.display())))?;
    }
    Ok(())
}
