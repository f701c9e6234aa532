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
//!
//! Manifest key: `[[files]]` (`host`, `guest`, `mode`). On replay the
//! mounts are rebuilt in a scratch directory from the contents and
//! listings captured at open ([`Capability::for_replay`]), and path
//! operations run again there.

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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) mod fd;

use super::{Capability, Effects, Section};
use crate::audit::Decision;
use crate::gateway::{Bytes, Gateway, Op, Replay, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;
use crate::policy::Interaction;

/// The filesystem capability.
#[derive(Debug)]
pub struct Files;

/// Whether a mounted directory may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountMode {
    /// Reads only; every write, create, rename or delete is refused.
    ReadOnly,
    /// Reads and writes inside the directory.
    ReadWrite,
}

/// A host directory made visible to the guest at a guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The canonical host directory.
    pub host: PathBuf,
    /// The absolute guest path it appears at.
    pub guest: String,
    /// Read-only or read-write.
    pub mode: MountMode,
}

impl Mount {
    /// A mount of the host directory `host` (made canonical; it must
    /// exist) at the absolute guest path `guest` (no `..` segments). The
    /// error names the part at fault (`host` or `guest`) and why.
    pub fn new(
        host: &std::path::Path,
        guest: &str,
        mode: MountMode,
    ) -> Result<Self, (&'static str, String)> {
        let canonical = host.canonicalize().map_err(|e| {
            (
                "host",
                format!("directory {} cannot be used: {e}", host.display()),
            )
        })?;
        if !canonical.is_dir() {
            return Err(("host", format!("{} is not a directory", host.display())));
        }
        if !guest.starts_with('/') || guest.split('/').any(|s| s == "..") {
            return Err((
                "guest",
                format!("`{guest}` must be an absolute guest path without `..` segments"),
            ));
        }
        Ok(Self {
            host: canonical,
            guest: guest.to_string(),
            mode,
        })
    }
}

/// The directories a component may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesGrant {
    /// Preopened directories.
    #[serde(default)]
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    host: PathBuf,
    guest: String,
    #[serde(default)]
    mode: Option<String>,
}

/// Per-instance state: the guest path of each descriptor and stream.
#[derive(Debug, Default)]
pub struct FilesState {
    paths: HashMap<u32, String>,
}

/// A path operation the guest asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRequest {
    /// The operation (`open`, `stat`, `mkdir`, …).
    pub op: String,
    /// The guest path: the directory's guest path joined with the relative
    /// path the guest gave (not normalized, so `..` shows).
    pub path: String,
}

/// What a path operation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathResponse {
    /// Whether it was allowed to proceed.
    pub allowed: bool,
    /// Recording: the content of a regular file opened for reading, as it
    /// was when opened (so a replay can run without the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Bytes>,
    /// Recording: the entries of a directory opened, as they were when
    /// opened; subdirectories end in `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<String>>,
}

/// A path-based operation on a directory descriptor (`open-at`, `stat-at`, …).
pub struct PathOp;
impl Op for PathOp {
    const CAPABILITY: &'static str = "files";
    const NAME: &'static str = "path";
    const REPLAY: Replay = Replay::Perform;
    type Request = PathRequest;
    type Response = PathResponse;
}

/// `get-directories`: the guest paths of the granted directories.
pub struct Preopens;
impl Op for Preopens {
    const CAPABILITY: &'static str = "files";
    const NAME: &'static str = "preopens";
    const REPLAY: Replay = Replay::Verify;
    type Request = ();
    type Response = Vec<String>;
}

/// An operation on an open descriptor or one of its streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdRequest {
    /// The operation (`read`, `write`, `stat`, `set-size`, `read-directory`,
    /// `stream-read`, `stream-write`, …).
    pub op: String,
    /// The guest path the descriptor was opened at.
    pub path: String,
    /// The offset, for positioned operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The length or size asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// The bytes written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Bytes>,
}

/// What an operation on an open descriptor did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdResponse {
    /// The error code, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes read or written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// SHA-256 of the bytes read (the content itself was captured at open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A directory entry read (`None` at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// End of file or stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
}

/// An operation on an open descriptor. Replayed against the rebuilt mount;
/// what it reads must be what it read when recorded.
pub struct FdOp;
impl Op for FdOp {
    const CAPABILITY: &'static str = "files";
    const NAME: &'static str = "fd";
    const REPLAY: Replay = Replay::Verify;
    type Request = FdRequest;
    type Response = FdResponse;
}

/// The `wasi:filesystem/types` instance whose path operations are wrapped.
/// Guests importing any `0.2.x` version link against it.
pub const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";
/// The `wasi:filesystem/preopens` instance, wrapped to learn the guest path
/// of each preopened directory.
pub const FILESYSTEM_PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// Preopens the granted directories.
fn preopen(builder: &mut WasiCtxBuilder, mounts: &[Mount]) -> Result<(), crate::Error> {
    for m in mounts {
        let perms = match m.mode {
            MountMode::ReadOnly => FsPerms::ReadOnly,
            MountMode::ReadWrite => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&m.host, &m.guest, perms)
            .map_err(|e| crate::Error::Grant {
                path: m.host.clone(),
                source: std::io::Error::other(e),
            })?;
    }
    Ok(())
}

/// Largest file content captured when recording an open.
pub const MAX_CAPTURED_FILE: u64 = 16 << 20;

/// The guest path of `rel` relative to the directory `base` (a resource rep).
fn guest_path(state: &HostState, base: u32, rel: &str) -> String {
    match state.caps.files.paths.get(&base) {
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
    policy: Option<String>,
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
    gateway.exchange::<PathOp>(
        PathRequest {
            op: op.to_string(),
            path: path.to_string(),
        },
        |_| PathResponse {
            allowed: !denied,
            content,
            entries,
        },
    )?;
    if let Err(code) = &result
        && denied
    {
        gateway.audit(
            "files",
            path,
            Decision::Deny,
            Some(policy.unwrap_or_else(|| format!("{op} refused: {}", code.name()))),
        );
    }
    Ok(result)
}

/// Asks the boundary policies about a path operation the preopens allow:
/// `Some(reason)` when they deny it (the operation is then not made and the
/// guest sees `access`).
fn policy_denies(gateway: &Gateway, op: &str, path: &str, write: bool) -> Option<String> {
    let span = gateway.interaction_span("files", op, path);
    let denied = policy_allows(gateway, op, path, write);
    span.decided(if denied.is_some() { "deny" } else { "allow" });
    denied
}

fn policy_allows(gateway: &Gateway, op: &str, path: &str, write: bool) -> Option<String> {
    gateway
        .authorize(&Interaction::File {
            operation: op.to_string(),
            path: path.to_string(),
            write,
        })
        .err()
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
    ($inst:ident, $name:literal, $op:literal, $write:literal, $method:ident, ($($p:ident: $t:ty),*), $path:ident, $ret:ty) => {
        $inst.func_wrap_async(
            $name,
            |mut store: Store<'_>, (fd, $($p,)*): (Resource<Descriptor>, $($t,)*)| {
                Box::new(async move {
                    let gateway = store.data().gateway.clone();
                    let shown = guest_path(store.data(), fd.rep(), &$path);
                    let policy = policy_denies(&gateway, $op, &shown, $write);
                    let r: FsResult<$ret> = if policy.is_some() {
                        Err(ErrorCode::Access.into())
                    } else {
                        let mut view = store.data_mut().filesystem();
                        HostDescriptor::$method(&mut view, fd, $($p),*).await
                    };
                    Ok((report(&gateway, $op, &shown, r, (None, None), policy)?,))
                })
            },
        )?;
    };
}

/// The path-based methods the gateway replaces.
pub(crate) const PATH_METHODS: &[&str] = &[
    "[method]descriptor.open-at",
    "[method]descriptor.stat-at",
    "[method]descriptor.metadata-hash-at",
    "[method]descriptor.set-times-at",
    "[method]descriptor.create-directory-at",
    "[method]descriptor.remove-directory-at",
    "[method]descriptor.unlink-file-at",
    "[method]descriptor.readlink-at",
    "[method]descriptor.symlink-at",
    "[method]descriptor.rename-at",
    "[method]descriptor.link-at",
];

/// Replaces the path operations of `wasi:filesystem/types` in `linker` with
/// gateway-reporting wrappers. Call after wasmtime-wasi's `add_to_linker`.
fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fd::add_to_linker(linker)?;
    super::shadowing(linker, FILESYSTEM_PREOPENS, &["get-directories"])?.func_wrap(
        "get-directories",
        |mut store: Store<'_>, (): ()| {
            let dirs = PreopensHost::get_directories(&mut store.data_mut().filesystem())?;
            for (fd, path) in &dirs {
                store
                    .data_mut()
                    .caps
                    .files
                    .paths
                    .insert(fd.rep(), path.clone());
            }
            let guest: Vec<String> = dirs.iter().map(|(_, p)| p.clone()).collect();
            store
                .data()
                .gateway
                .exchange::<Preopens>((), |_| guest.clone())?;
            Ok((dirs,))
        },
    )?;
    let mut inst = super::shadowing(linker, FILESYSTEM_TYPES, PATH_METHODS)?;
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
                let write = flags.contains(DescriptorFlags::WRITE)
                    || open_flags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE);
                let policy = policy_denies(&gateway, "open", &shown, write);
                let r = if policy.is_some() {
                    Err(ErrorCode::Access.into())
                } else {
                    let mut view = store.data_mut().filesystem();
                    HostDescriptor::open_at(&mut view, fd, path_flags, path, open_flags, flags)
                        .await
                };
                let mut captured = (None, None);
                if let Ok(new_fd) = &r {
                    let rep = new_fd.rep();
                    let state = store.data_mut();
                    if let Ok(d) = state.table.get(new_fd) {
                        state.caps.files.paths.insert(rep, shown.clone());
                        if gateway.recording() && !gateway.replaying() {
                            captured = capture(d, flags, open_flags);
                        }
                    }
                }
                Ok((report(&gateway, "open", &shown, r, captured, policy)?,))
            })
        },
    )?;
    wrap!(inst, "[method]descriptor.stat-at", "stat", false, stat_at,
        (path_flags: PathFlags, path: String), path, DescriptorStat);
    wrap!(inst, "[method]descriptor.metadata-hash-at", "metadata-hash", false, metadata_hash_at,
        (path_flags: PathFlags, path: String), path, MetadataHashValue);
    wrap!(inst, "[method]descriptor.set-times-at", "set-times", true, set_times_at,
        (path_flags: PathFlags, path: String, atim: NewTimestamp, mtim: NewTimestamp),
        path, ());
    wrap!(inst, "[method]descriptor.create-directory-at", "mkdir", true, create_directory_at,
        (path: String), path, ());
    wrap!(inst, "[method]descriptor.remove-directory-at", "rmdir", true, remove_directory_at,
        (path: String), path, ());
    wrap!(inst, "[method]descriptor.unlink-file-at", "unlink", true, unlink_file_at,
        (path: String), path, ());
    wrap!(inst, "[method]descriptor.readlink-at", "readlink", false, readlink_at,
        (path: String), path, String);
    wrap!(inst, "[method]descriptor.symlink-at", "symlink", true, symlink_at,
        (old_path: String, new_path: String), new_path, ());
    wrap!(inst, "[method]descriptor.rename-at", "rename", true, rename_at,
        (old_path: String, new_fd: Resource<Descriptor>, new_path: String), old_path, ());
    wrap!(inst, "[method]descriptor.link-at", "link", true, link_at,
        (old_flags: PathFlags, old_path: String, new_fd: Resource<Descriptor>, new_path: String),
        new_path, ());
    linker.allow_shadowing(false);
    Ok(())
}

impl Capability for Files {
    const NAME: &'static str = "files";
    const MANIFEST_KEYS: &'static [&'static str] = &["files"];
    type Grant = FilesGrant;
    type State = FilesState;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        add_to_linker(linker)
    }

    fn grant(section: &Section<'_>) -> Result<FilesGrant, ManifestError> {
        let raw = section.parse::<Vec<RawMount>>("files")?.unwrap_or_default();
        let mut mounts: Vec<Mount> = Vec::new();
        for (i, m) in raw.iter().enumerate() {
            let field = |k: &str| format!("files[{i}].{k}");
            let host = if m.host.is_absolute() {
                m.host.clone()
            } else {
                section.base().join(&m.host)
            };
            let mode = match m.mode.as_deref() {
                None | Some("ro") | Some("read-only") => MountMode::ReadOnly,
                Some("rw") | Some("read-write") => MountMode::ReadWrite,
                Some(other) => {
                    return Err(section.invalid(
                        field("mode"),
                        format!("`{other}` is not one of ro, rw, read-only, read-write"),
                    ));
                }
            };
            let mount = Mount::new(&host, &m.guest, mode)
                .map_err(|(key, message)| section.invalid(field(key), message))?;
            if mounts.iter().any(|o| o.guest == mount.guest) {
                return Err(
                    section.invalid(field("guest"), format!("`{}` is mounted twice", m.guest))
                );
            }
            mounts.push(mount);
        }
        Ok(FilesGrant { mounts })
    }

    fn state(
        grant: &FilesGrant,
        _: &Gateway,
        wasi: &mut WasiCtxBuilder,
    ) -> Result<FilesState, crate::Error> {
        preopen(wasi, &grant.mounts)?;
        Ok(FilesState::default())
    }

    fn effects(grant: &FilesGrant) -> Effects {
        Effects {
            reads: !grant.mounts.is_empty(),
            writes: grant.mounts.iter().any(|m| m.mode == MountMode::ReadWrite),
            ..Effects::NONE
        }
    }

    fn describe(step: &Step) -> String {
        if step.op == FdOp::NAME {
            return fd::describe(step);
        }
        if step.op != PathOp::NAME {
            return super::generic_description(step);
        }
        let (Ok(req), Ok(resp)) = (
            PathRequest::deserialize(&step.request),
            PathResponse::deserialize(&step.response),
        ) else {
            return super::generic_description(step);
        };
        format!(
            "{:<16} {} {}{}{}{}",
            step.kind(),
            req.op,
            req.path,
            if resp.allowed { "" } else { " -> DENIED" },
            resp.content
                .as_ref()
                .map(|c| format!(" ({} bytes captured)", c.0.len()))
                .unwrap_or_default(),
            resp.entries
                .as_ref()
                .map(|e| format!(" ({} entries captured)", e.len()))
                .unwrap_or_default()
        )
    }

    fn for_replay(
        grant: &FilesGrant,
        steps: &[(u64, Step)],
        scratch: &Path,
    ) -> Result<FilesGrant, String> {
        materialize(scratch, &grant.mounts, steps).map(|mounts| FilesGrant { mounts })
    }
}

/// Rebuilds each mount's recorded files under `root`; returns the mounts to
/// use instead. Replay touches no host file: the guest reads what it read
/// when recorded.
fn materialize(root: &Path, mounts: &[Mount], steps: &[(u64, Step)]) -> Result<Vec<Mount>, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let mut out = Vec::new();
    let mut roots = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let dir = root.join(i.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        roots.push((m.guest.trim_end_matches('/').to_string(), dir.clone()));
        out.push(Mount {
            host: dir.canonicalize().map_err(|e| io(&dir, e))?,
            guest: m.guest.clone(),
            mode: m.mode,
        });
    }
    // The host path for a guest path, if it stays inside a mount.
    let locate = |guest: &str| -> Option<PathBuf> {
        let (prefix, dir) = roots
            .iter()
            .filter(|(g, _)| guest == g || guest.starts_with(&format!("{g}/")) || g.is_empty())
            .max_by_key(|(g, _)| g.len())?;
        let mut rel = PathBuf::new();
        for part in guest[prefix.len()..].split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if !rel.pop() {
                        return None;
                    }
                }
                p => rel.push(p),
            }
        }
        Some(dir.join(rel))
    };
    let captured: Vec<(PathRequest, PathResponse)> = steps
        .iter()
        .filter(|(_, s)| s.capability == Files::NAME && s.op == PathOp::NAME)
        .filter_map(|(_, s)| {
            Some((
                PathRequest::deserialize(&s.request).ok()?,
                PathResponse::deserialize(&s.response).ok()?,
            ))
        })
        .collect();
    // Listings first (placeholders), then contents.
    for (req, resp) in &captured {
        if let (Some(entries), Some(dir)) = (&resp.entries, locate(&req.path)) {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            for e in entries {
                let name = e.trim_end_matches('/');
                // A listing names entries of one directory: anything else
                // (an imported journal could hold `../x`) is not rebuilt.
                if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                    continue;
                }
                let p = dir.join(name);
                if e.ends_with('/') {
                    std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
                } else if !p.exists() {
                    std::fs::write(&p, b"").map_err(|e| io(&p, e))?;
                }
            }
        }
    }
    for (req, resp) in &captured {
        if let (Some(content), Some(file)) = (&resp.content, locate(&req.path)) {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            std::fs::write(&file, &content.0).map_err(|e| io(&file, e))?;
        }
    }
    Ok(out)
}
