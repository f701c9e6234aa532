//! Stdin and stdout for MCP over stdio, without a thread hop per message.
//!
//! `tokio::io::stdin()` and `tokio::io::stdout()` do every read and write
//! on tokio's blocking pool: each message in and each answer out is handed
//! to another thread and back, and on a busy machine those hand-offs are
//! where the tail of the round trip comes from. When stdin and stdout are
//! pipes (as they are when an MCP host spawns the server), they are read
//! and written non-blocking on the runtime's own event loop instead
//! (`tokio::net::unix::pipe`, which puts a duplicate of the descriptor in
//! non-blocking mode). Anything else (a terminal, a file, a socket), or a
//! stdout that is also the process's stderr, keeps tokio's blocking-pool
//! stdio.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The server's stdin.
pub(crate) enum Input {
    /// A pipe, read on the event loop.
    #[cfg(unix)]
    Pipe(tokio::net::unix::pipe::Receiver),
    /// Anything else, read on the blocking pool.
    Std(tokio::io::Stdin),
}

/// The server's stdout.
pub(crate) enum Output {
    /// A pipe, written on the event loop.
    #[cfg(unix)]
    Pipe(tokio::net::unix::pipe::Sender),
    /// Anything else, written on the blocking pool.
    Std(tokio::io::Stdout),
}

/// Stdin, non-blocking when it is a pipe. Call within the runtime.
pub(crate) fn stdin() -> Input {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        if let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned()
            && let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        {
            return Input::Pipe(pipe);
        }
    }
    Input::Std(tokio::io::stdin())
}

/// Stdout, non-blocking when it is a pipe of its own (not shared with
/// stderr, whose writers expect a blocking descriptor). Call within the
/// runtime.
pub(crate) fn stdout() -> Output {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        use std::os::unix::fs::MetadataExt as _;
        let identity = |fd: std::os::fd::BorrowedFd<'_>| {
            std::fs::File::from(fd.try_clone_to_owned().ok()?)
                .metadata()
                .ok()
                .map(|m| (m.dev(), m.ino()))
        };
        let out = std::io::stdout();
        let err = std::io::stderr();
        let shared = match (identity(out.as_fd()), identity(err.as_fd())) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if !shared
            && let Ok(fd) = out.as_fd().try_clone_to_owned()
            && let Ok(pipe) = tokio::net::unix::pipe::Sender::from_owned_fd(fd)
        {
            return Output::Pipe(pipe);
        }
    }
    Output::Std(tokio::io::stdout())
}

impl AsyncRead for Input {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            #[cfg(unix)]
            Input::Pipe(p) => Pin::new(p).poll_read(cx, buf),
            Input::Std(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            #[cfg(unix)]
            Output::Pipe(p) => Pin::new(p).poll_write(cx, buf),
            Output::Std(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            #[cfg(unix)]
            Output::Pipe(p) => Pin::new(p).poll_flush(cx),
            Output::Std(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            #[cfg(unix)]
            Output::Pipe(p) => Pin::new(p).poll_shutdown(cx),
            Output::Std(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            #[cfg(unix)]
            Output::Pipe(p) => Pin::new(p).poll_write_vectored(cx, bufs),
            Output::Std(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            #[cfg(unix)]
            Output::Pipe(p) => p.is_write_vectored(),
            Output::Std(s) => s.is_write_vectored(),
        }
    }
}
