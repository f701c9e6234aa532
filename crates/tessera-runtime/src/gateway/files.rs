//! `wasi:filesystem` through the gateway.
//!
//! Confinement is structural: granted directories are preopened with
//! capability-based handles (cap-std), so no path can resolve outside its
//! preopen — not through `..`, not through an absolute path, not through a
//! symlink — and a read-only mount refuses every mutation at the descriptor.
//!
//! On top of that, every path-based operation (`open-at`, `stat-at`,
//! `create-directory-at`, `unlink-file-at`, `rename-at`, `symlink-at`, …)
//! is routed through the gateway: the linker's implementation of each is
//! replaced by a wrapper that delegates to wasmtime-wasi and then reports
//! the operation as an [`Interaction::File`]; a refusal (`not-permitted`,
//! `access`, `read-only`) becomes a `files` audit event naming the path.
//!
//! A path the guest's libc cannot map to any preopen (e.g. `/etc/passwd`
//! with only `/data` granted) never reaches the host at all, so it leaves no
//! event: there is nothing to refuse.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as PreopensHost;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, DescriptorStat, ErrorCode, HostDescriptor, MetadataHashValue, NewTimestamp,
    OpenFlags, PathFlags,
};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::{Bytes, Gateway, HostState, Interaction};
use crate::audit::Decision;
use crate::manifest::{Mount, MountMode};

/// The `wasi:filesystem/types` instance whose path operations are wrapped.
/// Guests importing any `0.2.x` version link against it.
pub const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";
/// The `wasi:filesystem/preopens` instance, wrapped to learn the guest path
/// of each preopened directory.
pub const FILESYSTEM_PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

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

/// Largest file content captured when recording an open.
pub const MAX_CAPTURED_FILE: u64 = 16 << 20;

/// The guest path of `rel` relative to the directory `base` (a resource rep).
fn guest_path(state: &HostState, base: u32, rel: &str) -> String {
    match state.dir_paths.get(&base) {
        Some(dir) if rel.starts_with('/') => format!("{dir}{rel}"),
        Some(dir) => format!("{}/{rel}", dir.trim_end_matches('/')),
        None => rel.to_string(),
    }
}

/// Reports a path operation's outcome to the gateway and converts the error
/// to what the guest sees.
fn report<T>(
    gateway: &Gateway,
    op: &str,
    path: &str,
    result: FsResult<T>,
    captured: (Option<Bytes>, Option<Vec<String>>),
) -> wasmtime::Result<Result<T, ErrorCode>> {
    let result = match result {
        Ok(v) => Ok(v),
        Err(e) => Err(e.downcast()?),
    };
    let denied = matches!(
        result,
        Err(ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly)
    );
    let (content, entries) = captured;
    gateway.exchange(
        Interaction::File {
            op: op.to_string(),
            path: path.to_string(),
            allowed: !denied,
            content,
            entries,
        },
        |p| p,
    )?;
    if let Err(code) = &result
        && denied
    {
        gateway.audit(
            "files",
            path,
            Decision::Deny,
            Some(format!("{op} refused: {}", code.name())),
        );
    }
    Ok(result)
}

/// Reads what a freshly opened descriptor holds, for the journal.
fn capture(
    d: &Descriptor,
    flags: DescriptorFlags,
    open_flags: OpenFlags,
) -> (Option<Bytes>, Option<Vec<String>>) {
    match d {
        Descriptor::File(f) => {
            if !flags.contains(DescriptorFlags::READ) || open_flags.contains(OpenFlags::TRUNCATE) {
                return (None, None);
            }
            use std::os::unix::fs::FileExt;
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut offset = 0u64;
            while offset < MAX_CAPTURED_FILE {
                match f.file.read_at(&mut buf, offset) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        out.extend_from_slice(&buf[..n]);
                        offset += n as u64;
                    }
                }
            }
            (Some(Bytes(out)), None)
        }
        Descriptor::Dir(dir) => {
            use std::os::fd::AsRawFd;
            let listing = std::fs::read_dir(format!("/proc/self/fd/{}", dir.dir.as_raw_fd()));
            let mut names: Vec<String> = match listing {
                Ok(rd) => rd
                    .flatten()
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            format!("{name}/")
                        } else {
                            name
                        }
                    })
                    .collect(),
                Err(_) => return (None, None),
            };
            names.sort();
            (None, Some(names))
        }
    }
}

type Store<'a> = StoreContextMut<'a, HostState>;

/// Defines one wrapped path operation: `$name` is the WIT method, `$op` the
/// short name in events, `$method` the wasmtime-wasi implementation,
/// `($p: $t),*` the parameters after the descriptor, `$path` the parameter
/// reported as the path, `$ret` the success type.
macro_rules! wrap {
    ($inst:ident, $name:literal, $op:literal, $method:ident, ($($p:ident: $t:ty),*), $path:ident, $ret:ty) => {
        $inst.func_wrap_async(
            $name,
            |mut store: Store<'_>, (fd, $($p,)*): (Resource<Descriptor>, $($t,)*)| {
                Box::new(async move {
                    let gateway = store.data().gateway.clone();
                    let shown = guest_path(store.data(), fd.rep(), &$path);
                    let mut view = store.data_mut().filesystem();
                    let r: FsResult<$ret> = HostDescriptor::$method(&mut view, fd, $($p),*).await;
                    Ok((report(&gateway, $op, &shown, r, (None, None))?,))
                })
            },
        )?;
    };
}

/// Replaces the path operations of `wasi:filesystem/types` in `linker` with
/// gateway-reporting wrappers. Call after wasmtime-wasi's `add_to_linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM_PREOPENS)?.func_wrap(
        "get-directories",
        |mut store: Store<'_>, (): ()| {
            let dirs = PreopensHost::get_directories(&mut store.data_mut().filesystem())?;
            for (fd, path) in &dirs {
                store.data_mut().dir_paths.insert(fd.rep(), path.clone());
            }
            Ok((dirs,))
        },
    )?;
    let mut inst = linker.instance(FILESYSTEM_TYPES)?;
    inst.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: Store<'_>,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let gateway = store.data().gateway.clone();
                let shown = guest_path(store.data(), fd.rep(), &path);
                let mut view = store.data_mut().filesystem();
                let r = HostDescriptor::open_at(&mut view, fd, path_flags, path, open_flags, flags)
                    .await;
                let mut captured = (None, None);
                if let Ok(new_fd) = &r {
                    let rep = new_fd.rep();
                    let state = store.data_mut();
                    if let Ok(d) = state.table.get(new_fd) {
                        if matches!(d, Descriptor::Dir(_)) {
                            state.dir_paths.insert(rep, shown.clone());
                        }
                        if gateway.recording() && !gateway.replaying() {
                            captured = capture(d, flags, open_flags);
                        }
                    }
                }
                Ok((report(&gateway, "open", &shown, r, captured)?,))
            })
        },
    )?;
    wrap!(inst, "[method]descriptor.stat-at", "stat", stat_at,
        (path_flags: PathFlags, path: String), path, DescriptorStat);
    wrap!(inst, "[method]descriptor.metadata-hash-at", "metadata-hash", metadata_hash_at,
        (path_flags: PathFlags, path: String), path, MetadataHashValue);
    wrap!(inst, "[method]descriptor.set-times-at", "set-times", set_times_at,
        (path_flags: PathFlags, path: String, atim: NewTimestamp, mtim: NewTimestamp),
        path, ());
    wrap!(inst, "[method]descriptor.create-directory-at", "mkdir", create_directory_at,
        (path: String), path, ());
    wrap!(inst, "[method]descriptor.remove-directory-at", "rmdir", remove_directory_at,
        (path: String), path, ());
    wrap!(inst, "[method]descriptor.unlink-file-at", "unlink", unlink_file_at,
        (path: String), path, ());
    wrap!(inst, "[method]descriptor.readlink-at", "readlink", readlink_at,
        (path: String), path, String);
    wrap!(inst, "[method]descriptor.symlink-at", "symlink", symlink_at,
        (old_path: String, new_path: String), new_path, ());
    wrap!(inst, "[method]descriptor.rename-at", "rename", rename_at,
        (old_path: String, new_fd: Resource<Descriptor>, new_path: String), old_path, ());
    wrap!(inst, "[method]descriptor.link-at", "link", link_at,
        (old_flags: PathFlags, old_path: String, new_fd: Resource<Descriptor>, new_path: String),
        new_path, ());
    linker.allow_shadowing(false);
    Ok(())
}
