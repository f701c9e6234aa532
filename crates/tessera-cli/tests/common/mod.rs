//! Helpers shared by the tests that run `tessera serve`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub use tessera_test_support::component;

pub fn tessera(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.arg("--data").arg(data);
    c
}

/// `tessera components add components/<wasm>.wasm --name <name>`, with a
/// manifest written into the data directory if given.
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
