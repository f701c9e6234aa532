//! `wasi:cli` stdin, stdout and stderr through the gateway.
//!
//! Output is captured into the call's outcome, never written to Tessera's
//! own streams, and capped at the `max_output_bytes` limit: a write past the
//! cap traps the guest with a limit error (and an audit event). Each
//! accepted write is a step (re-performed on replay, where the request —
//! the bytes — must match). Stdin is empty: a guest reads end of file.
//!
//! A call given a [`Terminal`] (`tessera run`) has its streams connected to
//! the caller's instead: output is written through as it comes (still a
//! step per write, not held, so not capped), and stdin is read from the
//! caller's, each chunk read a step whose bytes a replay answers.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

use serde::Deserialize;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use super::{Capability, Effects, Section};
use crate::LimitHit;
use crate::audit::Decision;
use crate::gateway::{Gateway, Op, Replay, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;

/// The standard streams capability: no grant.
#[derive(Debug)]
pub struct Stdio;

/// Bytes written to stdout.
pub struct Stdout;
impl Op for Stdout {
    const CAPABILITY: &'static str = "stdio";
    const NAME: &'static str = "stdout";
    const REPLAY: Replay = Replay::Perform;
    type Request = crate::gateway::Bytes;
    type Response = ();
}

/// `wasi:cli/stdin.get-stdin`: the guest asked for its standard input
/// (always empty: a read gives end of file).
pub struct Stdin;
impl Op for Stdin {
    const CAPABILITY: &'static str = "stdio";
    const NAME: &'static str = "stdin";
    type Request = ();
    type Response = ();
}

/// A read from a connected stdin ([`Terminal`]): the size asked for, and
/// the bytes read (`None`: end of file). Reads that found nothing ready
/// are not steps.
pub struct StdinRead;
impl Op for StdinRead {
    const CAPABILITY: &'static str = "stdio";
    const NAME: &'static str = "stdin-read";
    type Request = u64;
    type Response = Option<crate::gateway::Bytes>;
}

/// Where a connected output stream's bytes go.
pub trait Sink: Send + Sync {
    /// Writes (and flushes) `bytes`.
    fn write(&self, bytes: &[u8]) -> io::Result<()>;
}

/// The process's own stdout or stderr.
struct ProcessOutput(Which);
impl Sink for ProcessOutput {
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut out: Box<dyn io::Write> = match self.0 {
            Which::Stdout => Box::new(io::stdout().lock()),
            Which::Stderr => Box::new(io::stderr().lock()),
        };
        out.write_all(bytes)?;
        out.flush()
    }
}

/// A caller's standard streams, connected to a call's instead of
/// capturing them ([`crate::CallOptions::terminal`]).
#[derive(Clone)]
pub struct Terminal {
    /// Receives what the guest writes to stdout, as it writes it.
    pub stdout: Arc<dyn Sink>,
    /// Receives what the guest writes to stderr.
    pub stderr: Arc<dyn Sink>,
    /// What the guest reads from stdin (none: end of file at once).
    pub stdin: Option<Arc<dyn StdinStream + Sync>>,
}

impl Terminal {
    /// The process's own stdin, stdout and stderr.
    pub fn process() -> Self {
        Self {
            stdout: Arc::new(ProcessOutput(Which::Stdout)),
            stderr: Arc::new(ProcessOutput(Which::Stderr)),
            stdin: Some(Arc::new(wasmtime_wasi::cli::stdin())),
        }
    }
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("stdin", &self.stdin.is_some())
            .finish_non_exhaustive()
    }
}

/// A connected stdin: each read that found bytes (or the end) is a step;
/// a replay answers the recorded reads without touching the caller's
/// stdin.
struct JournaledStdin {
    inner: Box<dyn InputStream>,
    gateway: Gateway,
}

impl JournaledStdin {
    fn answer(&self, size: usize, live: Option<Bytes>) -> StreamResult<Bytes> {
        let recorded = self
            .gateway
            .exchange::<StdinRead>(size as u64, |_| {
                live.map(|b| crate::gateway::Bytes(b.to_vec()))
            })
            .map_err(|d| StreamError::Trap(d.into()))?;
        match recorded {
            Some(b) => Ok(Bytes::from(b.0)),
            None => Err(StreamError::Closed),
        }
    }
}

#[async_trait::async_trait]
impl InputStream for JournaledStdin {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if self.gateway.replaying() {
            // A recording without the read: stdin was not connected, and
            // the guest read end of file.
            if !self.gateway.next_recorded_is::<StdinRead>() {
                return Err(StreamError::Closed);
            }
            return self.answer(size, None);
        }
        match self.inner.read(size) {
            Ok(b) if b.is_empty() => Ok(b),
            Ok(b) => self.answer(size, Some(b)),
            Err(StreamError::Closed) => self.answer(size, None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for JournaledStdin {
    async fn ready(&mut self) {
        if !self.gateway.replaying() {
            self.inner.ready().await;
        }
    }
}

/// `get-terminal-stdin`/`-stdout`/`-stderr`: never a terminal.
pub struct TerminalQuery;
impl Op for TerminalQuery {
    const CAPABILITY: &'static str = "stdio";
    const NAME: &'static str = "terminal";
    type Request = String;
    type Response = bool;
}

/// `wasi:cli/exit.exit` and `exit-with-code`: the status the guest exits
/// with (the call then ends as a trap naming it).
pub struct Exit;
impl Op for Exit {
    const CAPABILITY: &'static str = "stdio";
    const NAME: &'static str = "exit";
    const REPLAY: Replay = Replay::Perform;
    type Request = i32;
    type Response = ();
}

const CLI_VERSION: &str = "0.2.12";

/// Bytes written to stderr.
pub struct Stderr;
impl Op for Stderr {
    const CAPABILITY: &'static str = "stdio";
    const NAME: &'static str = "stderr";
    const REPLAY: Replay = Replay::Perform;
    type Request = crate::gateway::Bytes;
    type Response = ();
}

impl Capability for Stdio {
    const NAME: &'static str = "stdio";
    const MANIFEST_KEYS: &'static [&'static str] = &[];
    type Grant = ();
    type State = ();

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        // stdout and stderr are the captured streams installed in the WASI
        // context (`state`); `get-stdout`/`get-stderr` hand them out.
        let mut stdin = super::shadowing(
            linker,
            &format!("wasi:cli/stdin@{CLI_VERSION}"),
            &["get-stdin"],
        )?;
        stdin.func_wrap(
            "get-stdin",
            |mut store: wasmtime::StoreContextMut<'_, HostState>, (): ()| {
                let gateway = store.data().gateway.clone();
                gateway.exchange::<Stdin>((), |_| ())?;
                // A replay answers the reads its recording holds, whether or
                // not a stdin is connected now.
                let connected = gateway.terminal().and_then(|t| t.stdin.clone());
                let stream: wasmtime_wasi::p2::DynInputStream =
                    if connected.is_some() || gateway.replaying() {
                        Box::new(JournaledStdin {
                            inner: match connected {
                                Some(stdin) => stdin.p2_stream(),
                                None => Box::new(wasmtime_wasi::p2::pipe::ClosedInputStream),
                            },
                            gateway,
                        })
                    } else {
                        Box::new(wasmtime_wasi::p2::pipe::ClosedInputStream)
                    };
                Ok((store.data_mut().table.push(stream)?,))
            },
        )?;
        for stream in ["stdin", "stdout", "stderr"] {
            let instance = format!("wasi:cli/terminal-{stream}@{CLI_VERSION}");
            let name = format!("get-terminal-{stream}");
            let mut inst = super::shadowing(linker, &instance, &[&name])?;
            inst.func_new(&name, move |store, _, _, results| {
                store
                    .data()
                    .gateway
                    .exchange::<TerminalQuery>(stream.to_string(), |_| false)?;
                results[0] = wasmtime::component::Val::Option(None);
                Ok(())
            })?;
        }
        let mut exit = super::shadowing(
            linker,
            &format!("wasi:cli/exit@{CLI_VERSION}"),
            &["exit", "exit-with-code"],
        )?;
        exit.func_wrap(
            "exit",
            |store: wasmtime::StoreContextMut<'_, HostState>, (status,): (Result<(), ()>,)| {
                let code = if status.is_ok() { 0 } else { 1 };
                store.data().gateway.exchange::<Exit>(code, |_| ())?;
                Err::<(), _>(wasmtime::Error::new(wasmtime_wasi::I32Exit(code)))
            },
        )?;
        exit.func_wrap(
            "exit-with-code",
            |store: wasmtime::StoreContextMut<'_, HostState>, (code,): (u8,)| {
                let code = i32::from(code);
                store.data().gateway.exchange::<Exit>(code, |_| ())?;
                Err::<(), _>(wasmtime::Error::new(wasmtime_wasi::I32Exit(code)))
            },
        )?;
        linker.allow_shadowing(false);
        Ok(())
    }

    fn grant(_: &Section<'_>) -> Result<(), ManifestError> {
        Ok(())
    }

    fn state(_: &(), gateway: &Gateway, wasi: &mut WasiCtxBuilder) -> Result<(), crate::Error> {
        wasi.stdout(CapturedStream::stdout(gateway.clone()))
            .stderr(CapturedStream::stderr(gateway.clone()));
        Ok(())
    }

    fn effects(_: &()) -> Effects {
        Effects::NONE
    }

    fn describe(step: &Step) -> String {
        if step.op != "stdout" && step.op != "stderr" {
            return super::generic_description(step);
        }
        match crate::gateway::Bytes::deserialize(&step.request) {
            Ok(b) => format!("{:<16} {}", step.kind(), text(&b.0)),
            Err(_) => super::generic_description(step),
        }
    }
}

/// Output as a short quoted string.
pub(crate) fn text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim_end_matches('\n');
    if s.chars().count() > 100 {
        format!(
            "{:?}… ({} bytes)",
            s.chars().take(100).collect::<String>(),
            b.len()
        )
    } else {
        format!("{s:?}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Stdout,
    Stderr,
}

/// A guest output stream captured by the gateway.
#[derive(Debug, Clone)]
pub struct CapturedStream {
    which: Which,
    gateway: Gateway,
}

impl CapturedStream {
    /// The guest's stdout.
    pub fn stdout(gateway: Gateway) -> Self {
        Self {
            which: Which::Stdout,
            gateway,
        }
    }

    /// The guest's stderr.
    pub fn stderr(gateway: Gateway) -> Self {
        Self {
            which: Which::Stderr,
            gateway,
        }
    }

    fn name(&self) -> &'static str {
        match self.which {
            Which::Stdout => "stdout",
            Which::Stderr => "stderr",
        }
    }

    /// Appends `bytes`, or refuses with the output limit (or, replaying, a
    /// divergence from the recorded output).
    fn append(&self, bytes: &[u8]) -> Result<(), wasmtime::Error> {
        if let Some(t) = self.gateway.terminal() {
            let data = crate::gateway::Bytes(bytes.to_vec());
            let sink = match self.which {
                Which::Stdout => {
                    self.gateway.exchange::<Stdout>(data, |_| ())?;
                    &t.stdout
                }
                Which::Stderr => {
                    self.gateway.exchange::<Stderr>(data, |_| ())?;
                    &t.stderr
                }
            };
            // A closed pipe on the caller's side ends the guest's stream as
            // it would end a native program's.
            return sink.write(bytes).map_err(wasmtime::Error::new);
        }
        let limit = self.gateway.grants().limits.max_output_bytes;
        let accepted = self.gateway.with_output(|out| {
            let buf = match self.which {
                Which::Stdout => &mut out.stdout,
                Which::Stderr => &mut out.stderr,
            };
            if (buf.len() + bytes.len()) as u64 > limit {
                false
            } else {
                buf.extend_from_slice(bytes);
                true
            }
        });
        if !accepted {
            let hit = LimitHit::Output {
                stream: self.name(),
                limit,
            };
            self.gateway.audit(
                hit.capability(),
                self.name(),
                Decision::Limit,
                Some(hit.to_string()),
            );
            return Err(hit.into());
        }
        let data = crate::gateway::Bytes(bytes.to_vec());
        match self.which {
            Which::Stdout => self.gateway.exchange::<Stdout>(data, |_| ())?,
            Which::Stderr => self.gateway.exchange::<Stderr>(data, |_| ())?,
        }
        Ok(())
    }
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes).map_err(StreamError::Trap)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Every write is accepted whole: some guests (CPython's stdout)
        // drop what a short write left. Captured output is offered one byte
        // past the cap, so a write that would cross it is made, and traps
        // with a clear limit error instead of seeing a closed stream.
        if self.gateway.terminal().is_some() {
            return Ok(1 << 30);
        }
        let limit = self.gateway.grants().limits.max_output_bytes;
        let used = self.gateway.with_output(|out| match self.which {
            Which::Stdout => out.stdout.len(),
            Which::Stderr => out.stderr.len(),
        }) as u64;
        Ok(usize::try_from(limit.saturating_sub(used).saturating_add(1)).unwrap_or(usize::MAX))
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(
            self.append(buf)
                .map(|()| buf.len())
                .map_err(|e| io::Error::other(e.to_string())),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
