//! Serving and shutting down: the HTTP listener (API and MCP over
//! streamable HTTP) and MCP over stdio, each with the same order of
//! shutdown — stop taking work, cancel plan runs (each recorded as
//! `cancelled`, resumable), let calls in flight finish within the grace
//! period, cancel the rest (journaled as cancelled), close sessions, flush
//! the journal.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Server, ServerError, http, mcp};

impl Server {
    /// Whether the server is shutting down (streams end, no new sessions).
    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Lets calls in flight finish within the grace period, then cancels
    /// the rest and waits for their journals.
    async fn drain(&self) {
        // Plan runs are cancelled when shutdown begins (their tokens are
        // children of `stopping`): wait for them to record it, so their
        // calls do not hold up the grace period.
        self.stop_plan_runs(Duration::from_secs(5)).await;
        if !self.calls_finished(self.config.grace).await {
            tracing::warn!("grace period over: cancelling calls still running");
        }
        self.stop_calls(Duration::from_secs(5)).await;
    }

    /// Serves the HTTP API and MCP over streamable HTTP (at `/mcp`) until
    /// `shutdown` resolves. Then it stops accepting connections, gives calls
    /// in flight up to the grace period to finish, cancels the rest (their
    /// runs are journaled as cancelled), closes MCP sessions and flushes the
    /// journal.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let local = listener.local_addr().map_err(ServerError::Listen)?;
        let watcher = self.spawn_registry_watcher();
        let sessions = CancellationToken::new();
        let app = http::router(
            self.clone(),
            mcp::http_service(self.clone(), local, sessions.clone()),
            local,
        );
        let stopping = self.stopping.clone();
        // No Nagle delay: streamed (SSE) responses are written in several
        // small pieces.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let mut serving = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopping.cancelled().await })
                .into_future(),
        );
        let ended_early = tokio::select! {
            r = &mut serving => Some(r),
            () = shutdown => None,
        };
        self.stopping.cancel();
        if let Some(r) = ended_early {
            watcher.abort();
            self.stop_calls(Duration::from_secs(5)).await;
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ServerError::Serve(e)),
                Err(e) => Err(ServerError::Task(e)),
            };
        }
        self.drain().await;
        sessions.cancel();
        if tokio::time::timeout(Duration::from_secs(2), &mut serving)
            .await
            .is_err()
        {
            serving.abort();
        }
        watcher.abort();
        self.journal.flush();
        Ok(())
    }

    /// Serves MCP over stdin and stdout (for an MCP host that spawns
    /// Tessera) until the client closes stdin or `shutdown` resolves. On a
    /// signal it drains calls like [`Server::serve`]; when stdin closes, calls
    /// still running are cancelled at once (the client can no longer want
    /// them) and journaled. Nothing but MCP messages is written to stdout.
    pub async fn serve_stdio(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        self.serve_io(crate::stdio::stdin(), crate::stdio::stdout(), shutdown)
            .await
    }

    /// [`Server::serve_stdio`] over any byte streams: MCP messages (one
    /// JSON-RPC message a line) are read from `input` and written to
    /// `output`. The end of `input` is the client going away.
    pub async fn serve_io<R, W>(
        self: Arc<Self>,
        input: R,
        output: W,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use rmcp::ServiceExt as _;
        let mut shutdown = std::pin::pin!(shutdown);
        // Registry changes (and components compiled meanwhile) are followed
        // from the start, not only once a client has connected.
        let watcher = self.spawn_registry_watcher();
        let running = tokio::select! {
            // When the client closes stdin it can no longer ask for
            // anything: calls still running are cancelled (and journaled)
            // at once rather than left to run out their deadlines.
            r = mcp::McpService::new(self.clone()).serve((
                CancelOnEof {
                    inner: input,
                    on_eof: self.shutdown.clone(),
                },
                output,
            )) => match r {
                Ok(r) => r,
                Err(e) => {
                    watcher.abort();
                    return Err(ServerError::Stdio(Box::new(e)));
                }
            },
            // A signal before the client even connected.
            () = &mut shutdown => {
                watcher.abort();
                return Ok(());
            }
        };
        let cancel = running.cancellation_token();
        let mut waiting = std::pin::pin!(running.waiting());
        tokio::select! {
            // Stdin closed: its calls were cancelled (`CancelOnEof`).
            _ = &mut waiting => {
                self.stopping.cancel();
                self.stop_calls(Duration::from_secs(5)).await;
            }
            () = shutdown => {
                self.stopping.cancel();
                self.drain().await;
                cancel.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(2), waiting).await;
            }
        }
        watcher.abort();
        self.journal.flush();
        Ok(())
    }
}

/// A reader that cancels a token when it reaches end of file.
struct CancelOnEof<R> {
    inner: R,
    on_eof: CancellationToken,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CancelOnEof<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = polled
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            self.on_eof.cancel();
        }
        polled
    }
}
