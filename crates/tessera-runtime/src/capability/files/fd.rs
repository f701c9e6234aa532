//! Operations on open descriptors and their streams, through the gateway.
//!
//! Every method of `wasi:filesystem/types` that takes an open descriptor —
//! `read`, `write`, `stat`, `set-size`, `set-times`, `read-directory` and its
//! entries, `sync`, `advise`, `get-flags`, `get-type`, `metadata-hash`,
//! `is-same-object` — and every stream made from one (`read-via-stream`,
//! `write-via-stream`, `append-via-stream`) is a step ([`FdOp`]): the guest
//! path, the offset and length, the bytes written, and what came back (a
//! digest of the bytes read). On replay they run against the rebuilt mount
//! and must read what they read when recorded. A refusal (`not-permitted`,
//! `access`, `read-only`) is a `files`/`deny` audit event.

use bytes::Bytes as RawBytes;
use sha2::{Digest, Sha256};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Advice, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, DirectoryEntryStream,
    ErrorCode, HostDescriptor, HostDirectoryEntryStream, MetadataHashValue, NewTimestamp,
};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, FsResult, InputStream, OutputStream, Pollable, StreamError,
    StreamResult,
};

use super::{FILESYSTEM_TYPES, FdOp, FdRequest, FdResponse};
use crate::audit::Decision;
use crate::gateway::{Bytes, Gateway};
use crate::host::HostState;

type Store<'a> = StoreContextMut<'a, HostState>;

/// The descriptor methods the gateway replaces.
pub(crate) const FD_METHODS: &[&str] = &[
    "[method]descriptor.read",
    "[method]descriptor.write",
    "[method]descriptor.stat",
    "[method]descriptor.set-size",
    "[method]descriptor.set-times",
    "[method]descriptor.read-directory",
    "[method]descriptor.sync",
    "[method]descriptor.sync-data",
    "[method]descriptor.advise",
    "[method]descriptor.get-flags",
    "[method]descriptor.get-type",
    "[method]descriptor.metadata-hash",
    "[method]descriptor.is-same-object",
    "[method]descriptor.read-via-stream",
    "[method]descriptor.write-via-stream",
    "[method]descriptor.append-via-stream",
    "[method]directory-entry-stream.read-directory-entry",
];

fn path_of(state: &HostState, rep: u32) -> String {
    state
        .caps
        .files
        .paths
        .get(&rep)
        .cloned()
        .unwrap_or_else(|| format!("<descriptor {rep}>"))
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn request(op: &str, path: &str) -> FdRequest {
    FdRequest {
        op: op.to_string(),
        path: path.to_string(),
        offset: None,
        len: None,
        data: None,
    }
}

/// Reports one operation and converts its error to what the guest sees.
fn report<T>(
    gateway: &Gateway,
    req: FdRequest,
    result: FsResult<T>,
    ok: impl FnOnce(&T) -> FdResponse,
) -> wasmtime::Result<Result<T, ErrorCode>> {
    let result = match result {
        Ok(v) => Ok(v),
        Err(e) => Err(e.downcast()?),
    };
    let response = match &result {
        Ok(v) => ok(v),
        Err(code) => FdResponse {
            error: Some(code.name().to_string()),
            ..FdResponse::default()
        },
    };
    let denied = matches!(
        result,
        Err(ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly)
    );
    let (op, path) = (req.op.clone(), req.path.clone());
    gateway.exchange::<FdOp>(req, |_| response)?;
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

fn none<T>(_: &T) -> FdResponse {
    FdResponse::default()
}

/// Defines a wrapped descriptor method whose step has no offset, length or
/// data: `$name` the WIT method, `$op` the short name, `$method` the
/// wasmtime-wasi implementation, `($p: $t),*` the parameters after the
/// descriptor, `$ret` the success type.
macro_rules! plain {
    ($inst:ident, $name:literal, $op:literal, $method:ident, ($($p:ident: $t:ty),*), $ret:ty) => {
        $inst.func_wrap_async(
            $name,
            |mut store: Store<'_>, (fd, $($p,)*): (Resource<Descriptor>, $($t,)*)| {
                Box::new(async move {
                    let gateway = store.data().gateway.clone();
                    let req = request($op, &path_of(store.data(), fd.rep()));
                    let mut view = store.data_mut().filesystem();
                    let r: FsResult<$ret> = HostDescriptor::$method(&mut view, fd, $($p),*).await;
                    Ok((report(&gateway, req, r, none)?,))
                })
            },
        )?;
    };
}

/// Replaces the descriptor methods of `wasi:filesystem/types`.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut inst = crate::capability::shadowing(linker, FILESYSTEM_TYPES, FD_METHODS)?;
    plain!(
        inst,
        "[method]descriptor.stat",
        "stat",
        stat,
        (),
        DescriptorStat
    );
    plain!(inst, "[method]descriptor.sync", "sync", sync, (), ());
    plain!(
        inst,
        "[method]descriptor.sync-data",
        "sync-data",
        sync_data,
        (),
        ()
    );
    plain!(
        inst,
        "[method]descriptor.get-flags",
        "get-flags",
        get_flags,
        (),
        DescriptorFlags
    );
    plain!(
        inst,
        "[method]descriptor.get-type",
        "get-type",
        get_type,
        (),
        DescriptorType
    );
    plain!(
        inst,
        "[method]descriptor.metadata-hash",
        "metadata-hash",
        metadata_hash,
        (),
        MetadataHashValue
    );
    plain!(inst, "[method]descriptor.set-times", "set-times", set_times,
        (atim: NewTimestamp, mtim: NewTimestamp), ());
    inst.func_wrap_async(
        "[method]descriptor.advise",
        |mut store: Store<'_>,
         (fd, offset, len, advice): (Resource<Descriptor>, u64, u64, Advice)| {
            Box::new(async move {
                let gateway = store.data().gateway.clone();
                let mut req = request("advise", &path_of(store.data(), fd.rep()));
                req.offset = Some(offset);
                req.len = Some(len);
                let mut view = store.data_mut().filesystem();
                let r = HostDescriptor::advise(&mut view, fd, offset, len, advice).await;
                Ok((report(&gateway, req, r, none)?,))
            })
        },
    )?;
    inst.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store: Store<'_>, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let gateway = store.data().gateway.clone();
                let mut req = request("set-size", &path_of(store.data(), fd.rep()));
                req.len = Some(size);
                let mut view = store.data_mut().filesystem();
                let r = HostDescriptor::set_size(&mut view, fd, size).await;
                Ok((report(&gateway, req, r, none)?,))
            })
        },
    )?;
    inst.func_wrap_async(
        "[method]descriptor.read",
        |mut store: Store<'_>, (fd, len, offset): (Resource<Descriptor>, u64, u64)| {
            Box::new(async move {
                let gateway = store.data().gateway.clone();
                let mut req = request("read", &path_of(store.data(), fd.rep()));
                req.offset = Some(offset);
                req.len = Some(len);
                let mut view = store.data_mut().filesystem();
                let r = HostDescriptor::read(&mut view, fd, len, offset).await;
                Ok((report(&gateway, req, r, |(bytes, end)| FdResponse {
                    len: Some(bytes.len() as u64),
                    digest: Some(digest(bytes)),
                    end: *end,
                    ..FdResponse::default()
                })?,))
            })
        },
    )?;
    inst.func_wrap_async(
        "[method]descriptor.write",
        |mut store: Store<'_>, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let gateway = store.data().gateway.clone();
                let mut req = request("write", &path_of(store.data(), fd.rep()));
                req.offset = Some(offset);
                req.data = Some(Bytes(buf.clone()));
                let mut view = store.data_mut().filesystem();
                let r = HostDescriptor::write(&mut view, fd, buf, offset).await;
                Ok((report(&gateway, req, r, |n| FdResponse {
                    len: Some(*n),
                    ..FdResponse::default()
                })?,))
            })
        },
    )?;
    inst.func_wrap_async(
        "[method]descriptor.is-same-object",
        |mut store: Store<'_>, (a, b): (Resource<Descriptor>, Resource<Descriptor>)| {
            Box::new(async move {
                let gateway = store.data().gateway.clone();
                let mut req = request("is-same-object", &path_of(store.data(), a.rep()));
                req.data = Some(Bytes(path_of(store.data(), b.rep()).into_bytes()));
                let mut view = store.data_mut().filesystem();
                let same = HostDescriptor::is_same_object(&mut view, a, b).await?;
                gateway.exchange::<FdOp>(req, |_| FdResponse {
                    len: Some(u64::from(same)),
                    ..FdResponse::default()
                })?;
                Ok((same,))
            })
        },
    )?;
    inst.func_wrap_async(
        "[method]descriptor.read-directory",
        |mut store: Store<'_>, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let gateway = store.data().gateway.clone();
                let path = path_of(store.data(), fd.rep());
                let req = request("read-directory", &path);
                let mut view = store.data_mut().filesystem();
                let r = HostDescriptor::read_directory(&mut view, fd).await;
                if let Ok(stream) = &r {
                    store.data_mut().caps.files.paths.insert(stream.rep(), path);
                }
                Ok((report(&gateway, req, r, none)?,))
            })
        },
    )?;
    inst.func_wrap_async(
        "[method]directory-entry-stream.read-directory-entry",
        |mut store: Store<'_>, (stream,): (Resource<DirectoryEntryStream>,)| {
            Box::new(async move {
                let gateway = store.data().gateway.clone();
                let req = request("read-directory-entry", &path_of(store.data(), stream.rep()));
                let mut view = store.data_mut().filesystem();
                let r = HostDirectoryEntryStream::read_directory_entry(&mut view, stream).await;
                Ok((report(&gateway, req, r, |e: &Option<DirectoryEntry>| {
                    FdResponse {
                        entry: e.as_ref().map(|e| e.name.clone()),
                        end: e.is_none(),
                        ..FdResponse::default()
                    }
                })?,))
            })
        },
    )?;
    inst.func_wrap(
        "[method]descriptor.read-via-stream",
        |mut store: Store<'_>, (fd, offset): (Resource<Descriptor>, u64)| {
            let gateway = store.data().gateway.clone();
            let path = path_of(store.data(), fd.rep());
            let mut req = request("read-via-stream", &path);
            req.offset = Some(offset);
            let r = HostDescriptor::read_via_stream(&mut store.data_mut().filesystem(), fd, offset);
            let r = wrap_stream(&mut store, r, |inner| -> DynInputStream {
                Box::new(GatewayInput {
                    inner,
                    gateway: gateway.clone(),
                    path: path.clone(),
                })
            })?;
            Ok((report(&gateway, req, r, none)?,))
        },
    )?;
    for (name, op, append) in [
        (
            "[method]descriptor.write-via-stream",
            "write-via-stream",
            false,
        ),
        (
            "[method]descriptor.append-via-stream",
            "append-via-stream",
            true,
        ),
    ] {
        let output = move |mut store: Store<'_>, fd: Resource<Descriptor>, offset: Option<u64>| {
            let gateway = store.data().gateway.clone();
            let path = path_of(store.data(), fd.rep());
            let mut req = request(op, &path);
            req.offset = offset;
            let mut view = store.data_mut().filesystem();
            let r = match offset {
                Some(o) => HostDescriptor::write_via_stream(&mut view, fd, o),
                None => HostDescriptor::append_via_stream(&mut view, fd),
            };
            let r = wrap_stream(&mut store, r, |inner| -> DynOutputStream {
                Box::new(GatewayOutput {
                    inner,
                    gateway: gateway.clone(),
                    path: path.clone(),
                })
            })?;
            report(&gateway, req, r, none)
        };
        if append {
            inst.func_wrap(
                name,
                move |store: Store<'_>, (fd,): (Resource<Descriptor>,)| {
                    Ok((output(store, fd, None)?,))
                },
            )?;
        } else {
            inst.func_wrap(
                name,
                move |store: Store<'_>, (fd, offset): (Resource<Descriptor>, u64)| {
                    Ok((output(store, fd, Some(offset))?,))
                },
            )?;
        }
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// Replaces the stream wasmtime-wasi made with the gateway's wrapper of it.
fn wrap_stream<S: 'static + Send>(
    store: &mut Store<'_>,
    made: FsResult<Resource<S>>,
    wrap: impl FnOnce(S) -> S,
) -> wasmtime::Result<FsResult<Resource<S>>> {
    let Ok(res) = made else {
        return Ok(made);
    };
    let table = &mut store.data_mut().table;
    let inner = table.delete(res)?;
    Ok(Ok(table.push(wrap(inner))?))
}

/// A file's input stream whose reads are steps.
struct GatewayInput {
    inner: DynInputStream,
    gateway: Gateway,
    path: String,
}

impl GatewayInput {
    fn report(&self, op: &str, asked: usize, got: &StreamResult<RawBytes>) -> StreamResult<()> {
        let response = match got {
            // A read that found nothing yet (the data is on its way) is not
            // an interaction: only data, errors and the end are.
            Ok(b) if b.is_empty() => return Ok(()),
            Ok(b) => FdResponse {
                len: Some(b.len() as u64),
                digest: Some(digest(b)),
                ..FdResponse::default()
            },
            Err(StreamError::Closed) => FdResponse {
                end: true,
                ..FdResponse::default()
            },
            Err(e) => FdResponse {
                error: Some(e.to_string()),
                ..FdResponse::default()
            },
        };
        let mut req = request(op, &self.path);
        req.len = Some(asked as u64);
        self.gateway
            .exchange::<FdOp>(req, |_| response)
            .map(drop)
            .map_err(|d| StreamError::Trap(d.into()))
    }
}

#[async_trait::async_trait]
impl InputStream for GatewayInput {
    fn read(&mut self, size: usize) -> StreamResult<RawBytes> {
        let got = self.inner.read(size);
        self.report("stream-read", size, &got)?;
        got
    }

    async fn blocking_read(&mut self, size: usize) -> StreamResult<RawBytes> {
        let got = self.inner.blocking_read(size).await;
        self.report("stream-read", size, &got)?;
        got
    }

    fn skip(&mut self, n: usize) -> StreamResult<usize> {
        self.read(n).map(|b| b.len())
    }

    async fn blocking_skip(&mut self, n: usize) -> StreamResult<usize> {
        self.blocking_read(n).await.map(|b| b.len())
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

#[async_trait::async_trait]
impl Pollable for GatewayInput {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

/// A file's output stream whose writes are steps.
struct GatewayOutput {
    inner: DynOutputStream,
    gateway: Gateway,
    path: String,
}

#[async_trait::async_trait]
impl OutputStream for GatewayOutput {
    fn write(&mut self, bytes: RawBytes) -> StreamResult<()> {
        let mut req = request("stream-write", &self.path);
        req.data = Some(Bytes(bytes.to_vec()));
        let result = self.inner.write(bytes);
        let response = match &result {
            Ok(()) => FdResponse::default(),
            Err(e) => FdResponse {
                error: Some(e.to_string()),
                ..FdResponse::default()
            },
        };
        self.gateway
            .exchange::<FdOp>(req, |_| response)
            .map_err(|d| StreamError::Trap(d.into()))?;
        result
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

#[async_trait::async_trait]
impl Pollable for GatewayOutput {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

/// One line for an `fd` step: `op path [offset] [len] -> outcome`.
pub(super) fn describe(step: &crate::gateway::Step) -> String {
    use serde::Deserialize;
    let (Ok(req), Ok(resp)) = (
        FdRequest::deserialize(&step.request),
        FdResponse::deserialize(&step.response),
    ) else {
        return crate::capability::generic_description(step);
    };
    let mut s = format!("{:<16} {} {}", step.kind(), req.op, req.path);
    if let Some(o) = req.offset {
        s.push_str(&format!(" @{o}"));
    }
    if let Some(d) = &req.data {
        s.push_str(&format!(" {} bytes", d.0.len()));
    } else if let Some(l) = req.len {
        s.push_str(&format!(" len {l}"));
    }
    match (&resp.error, resp.len, &resp.entry, resp.end) {
        (Some(e), ..) => s.push_str(&format!(" -> {e}")),
        (_, _, Some(e), _) => s.push_str(&format!(" -> {e}")),
        (_, Some(n), _, end) => {
            s.push_str(&format!(" -> {n} bytes{}", if end { ", end" } else { "" }))
        }
        (_, None, None, true) => s.push_str(" -> end"),
        _ => {}
    }
    s
}
