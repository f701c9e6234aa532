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
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, DescriptorStat, ErrorCode, HostDescriptor, MetadataHashValue, NewTimestamp,
    OpenFlags, PathFlags,
};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::{Gateway, HostState, Interaction};
use crate::audit::Decision;
use crate::manifest::{Mount, MountMode};

/// The `wasi:filesystem/types` instance whose path operations are wrapped.
/// Guests importing any `0.2.x` version link against it.
pub const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

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

/// Reports a path operation's outcome to the gateway and converts the error
/// to what the guest sees.
fn report<T>(
    gateway: &Gateway,
    op: &str,
    path: &str,
    result: FsResult<T>,
) -> wasmtime::Result<Result<T, ErrorCode>> {
    let result = match result {
        Ok(v) => Ok(v),
        Err(e) => Err(e.downcast()?),
    };
    let denied = matches!(
        result,
        Err(ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly)
    );
    gateway.exchange(
        Interaction::File {
            op: op.to_string(),
            path: path.to_string(),
            allowed: !denied,
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
                    let shown = $path.clone();
                    let mut view = store.data_mut().filesystem();
                    let r: FsResult<$ret> = HostDescriptor::$method(&mut view, fd, $($p),*).await;
                    Ok((report(&gateway, $op, &shown, r)?,))
                })
            },
        )?;
    };
}

/// Replaces the path operations of `wasi:filesystem/types` in `linker` with
/// gateway-reporting wrappers. Call after wasmtime-wasi's `add_to_linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut inst = linker.instance(FILESYSTEM_TYPES)?;
    wrap!(inst, "[method]descriptor.open-at", "open", open_at,
        (path_flags: PathFlags, path: String, open_flags: OpenFlags, flags: DescriptorFlags),
        path, Resource<Descriptor>);
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
