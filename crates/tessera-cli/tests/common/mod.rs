//! Helpers shared by the tests that run `tessera serve`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub use tessera_test_support::component;

/// The Python of the interop tests' environment (`scripts/python-env.sh`
/// makes it, or finds it made): the MCP SDK, schemathesis, the Prometheus
/// client.
pub fn python() -> std::path::PathBuf {
    let root = tessera_test_support::repo_root();
    let status = Command::new("bash")
        .arg(root.join("scripts/python-env.sh"))
        .status()
        .expect("run scripts/python-env.sh");
    assert!(status.success(), "scripts/python-env.sh failed");
    root.join("target/mcp-venv/bin/python")
}

/// `tessera --data <data>`, with the compile cache in `<data>/cache` (never
/// the user's own).
pub fn tessera(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.arg("--data").arg(data);
    c.env("TESSERA_CACHE_DIR", data.join("cache"));
    c
}

/// Runs `tessera` with `args` on `data` and waits for it.
pub fn run(data: &Path, args: &[&str]) -> std::process::Output {
    tessera(data).args(args).output().expect("run tessera")
}

/// A finished command's standard output, as text.
pub fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished command's standard error, as text.
pub fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A finished command's standard output, parsed as one JSON value.
pub fn json(o: &std::process::Output) -> Value {
    serde_json::from_str(out(o).trim()).unwrap_or_else(|e| panic!("{e}: {}", out(o)))
}

/// `tessera components add components/<wasm>.wasm --name <name>`, with a
/// manifest written into the data directory if given. The component is
/// then compiled into the data directory's compile cache (with `tessera
/// inspect`), so a server started afterwards serves it from its first
/// `tools/list` rather than compiling it in the background.
pub fn register(data: &Path, name: &str, wasm: &str, manifest: Option<&str>) {
    let mut c = tessera(data);
    c.args(["components", "add"])
        .arg(component(wasm))
        .args(["--name", name]);
    if let Some(text) = manifest {
        let path = data.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        c.arg("--manifest").arg(path);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "components add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tessera(data)
        .arg("inspect")
        .arg(component(wasm))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect {wasm}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `tessera serve` on an ephemeral loopback port.
pub struct Serving {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The MCP endpoint.
    pub url: String,
}

impl Serving {
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        let mut child = tessera(data)
            .args(["serve", "--listen", "127.0.0.1:0", "--grace-ms", "2000"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("tessera serve exited before listening")
                .unwrap();
            if let Some(rest) = line.split("on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                break format!("http://{addr}");
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url: format!("{url}/mcp"),
            base: url,
        }
    }

    /// SIGKILL: the server gets no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// One HTTP/1.1 request to the API without a token; returns the status
    /// and the JSON body (status 0 if the connection failed or closed
    /// without an answer).
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        request(&self.base, method, path, body)
    }

    /// SIGTERM, then wait for the graceful exit.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "tessera serve exited with {exit}");
    }
}

/// One HTTP/1.1 request to `base` (`http://host:port`), as
/// [`Serving::request`]; usable from another thread.
pub fn request(base: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    request_with(base, method, path, &[], body)
}

/// [`request`] with extra header lines (`name`, `value`).
pub fn request_with(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let authority = base.strip_prefix("http://").expect("an http:// base");
    let Ok(mut stream) = TcpStream::connect(authority) else {
        return (0, Value::Null);
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n{extra}Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body.as_bytes()).is_err() {
        return (0, Value::Null);
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
