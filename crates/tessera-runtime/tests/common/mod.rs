//! Shared helpers: locating built components, runtimes, local HTTP servers,
//! waiting for a guest's output.
#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tessera_runtime::audit::MemoryAudit;
use tessera_runtime::gateway::{CallScope, InteractionObserver, Recorded, Step};
use tessera_runtime::{CallOutcome, Grants, LoadedComponent, Runtime, RuntimeConfig};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

pub use tessera_test_support::component;

pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

pub fn runtime_with_audit() -> (Runtime, Arc<MemoryAudit>) {
    let audit = Arc::new(MemoryAudit::default());
    let rt = Runtime::new(RuntimeConfig {
        audit: audit.clone(),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    (rt, audit)
}

pub fn grants(toml: &str) -> Grants {
    Grants::from_toml(toml, "test-manifest.toml", Path::new(".")).expect("manifest")
}

pub fn load(rt: &Runtime, name: &str, toml: &str) -> LoadedComponent {
    rt.load_file(&component(name), grants(toml)).expect("load")
}

pub async fn call(c: &LoadedComponent, f: &str, args: Value) -> CallOutcome {
    c.call_json(f, &args).await.expect("call accepted")
}

pub async fn call_ok(c: &LoadedComponent, f: &str, args: Value) -> Value {
    let o = call(c, f, args).await;
    match o.result {
        Ok(v) => v,
        Err(e) => panic!(
            "{f} failed: {e}\nstderr: {}",
            String::from_utf8_lossy(&o.output.stderr)
        ),
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that records every request line it
/// receives. `/redirect?to=URL` answers 302 to URL; anything else answers 200
/// with body `hello from <path>`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    pub fn start(ip: &str) -> Self {
        let listener = TcpListener::bind(format!("{ip}:0")).expect("bind");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    // Drain headers.
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    log.lock().unwrap().push(path.clone());
                    let resp = if let Some(to) = path.strip_prefix("/redirect?to=") {
                        format!(
                            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                    } else {
                        let body = format!("hello from {path}");
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Test: yes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = stream.write_all(resp.as_bytes());
                });
            }
        });
        Self { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// How long a test waits for an event before giving up. Only a guard
/// against hangs: no test relies on how long anything takes.
pub const EVENT_WAIT: Duration = Duration::from_secs(60);

/// Passes what a call's guest writes to stdout on to a channel, as it is
/// written: a test waits for it to know the guest is running.
pub struct StdoutEvents(UnboundedSender<String>);

impl InteractionObserver for StdoutEvents {
    fn observe(&self, _scope: &CallScope, _index: u64, step: &Recorded) {
        if let Some(bytes) = stdout_bytes(&step.to_step()) {
            let _ = self.0.send(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
}

/// An observer for `CallOptions::observer` and the receiving end of what
/// it reports.
pub fn stdout_events() -> (Arc<StdoutEvents>, UnboundedReceiver<String>) {
    let (tx, rx) = unbounded_channel();
    (Arc::new(StdoutEvents(tx)), rx)
}

/// The next chunk of stdout reported by [`stdout_events`]; panics after
/// [`EVENT_WAIT`] or if the call ended without writing.
pub async fn next_stdout(rx: &mut UnboundedReceiver<String>) -> String {
    tokio::time::timeout(EVENT_WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("the guest wrote nothing to stdout within {EVENT_WAIT:?}"))
        .expect("the call ended without writing to stdout")
}

/// A TCP server on 127.0.0.1 that accepts connections, keeps them open and
/// never answers; each connection is reported as it is accepted.
pub struct SilentServer {
    pub port: u16,
    connections: UnboundedReceiver<()>,
}

impl SilentServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let (tx, connections) = unbounded_channel();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                held.push(stream);
                let _ = tx.send(());
            }
        });
        Self { port, connections }
    }

    /// Waits (at most [`EVENT_WAIT`]) until the next connection is accepted.
    pub async fn next_connection(&mut self) {
        tokio::time::timeout(EVENT_WAIT, self.connections.recv())
            .await
            .unwrap_or_else(|_| panic!("no connection within {EVENT_WAIT:?}"))
            .expect("the server stopped");
    }
}

/// The bytes of a `stdio.stdout` step.
pub fn stdout_bytes(step: &Step) -> Option<Vec<u8>> {
    if step.capability != "stdio" || step.op != "stdout" {
        return None;
    }
    hex::decode(step.request.as_str()?).ok()
}
