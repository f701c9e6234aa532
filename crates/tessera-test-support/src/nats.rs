//! A real `nats-server` for tests and benchmarks: started on a free
//! loopback port with JetStream (the Debian package `nats-server`, which
//! `scripts/nats-server.sh` installs), its files in a temporary directory,
//! killed when dropped. Tests never depend on a server already running.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start the server.
#[derive(Debug, Clone, Copy)]
pub struct NatsOptions {
    /// With JetStream (file storage under the server's directory).
    pub jetstream: bool,
    /// The largest message it takes (`None`: the server's 1 MB default).
    pub max_payload: Option<usize>,
    /// `sync_interval: always` (fsync before every acknowledgement; NATS
    /// 2.10 and later).
    pub sync_always: bool,
}

impl Default for NatsOptions {
    /// JetStream, default payload limit, default sync interval.
    fn default() -> Self {
        Self {
            jetstream: true,
            max_payload: None,
            sync_always: false,
        }
    }
}

/// A running `nats-server`; killed (and its files removed) when dropped.
pub struct NatsServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    log: PathBuf,
}

/// The `nats-server` binary: the Debian package's, or one on `PATH`.
/// Panics, saying how to install it, when there is none.
pub fn nats_server_bin() -> PathBuf {
    let packaged = PathBuf::from("/usr/sbin/nats-server");
    if packaged.is_file() {
        return packaged;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let bin = dir.join("nats-server");
            if bin.is_file() {
                return bin;
            }
        }
    }
    panic!(
        "nats-server is not installed (not /usr/sbin/nats-server, not on PATH): \
         run scripts/nats-server.sh, which installs the Debian package nats-server"
    );
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

impl NatsServer {
    /// Starts a server with JetStream.
    pub fn start() -> Self {
        Self::start_with(NatsOptions::default())
            .unwrap_or_else(|| panic!("nats-server refused its configuration"))
    }

    /// Starts a server as `options` say; `None` when the server refuses a
    /// setting it does not know (`sync_interval` before NATS 2.10).
    pub fn start_with(options: NatsOptions) -> Option<Self> {
        let bin = nats_server_bin();
        // A port found free may be taken before the server binds it: then
        // the server exits, and another port is tried.
        for attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
            let port = free_port();
            let config = dir.path().join("nats.conf");
            let mut text = format!("listen: 127.0.0.1:{port}\n");
            if let Some(n) = options.max_payload {
                text.push_str(&format!("max_payload: {n}\n"));
            }
            if options.jetstream {
                text.push_str(&format!(
                    "jetstream {{\n  store_dir: {:?}\n{}}}\n",
                    dir.path().join("js").display().to_string(),
                    if options.sync_always {
                        "  sync_interval: always\n"
                    } else {
                        ""
                    }
                ));
            }
            std::fs::write(&config, text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
            let log = dir.path().join(format!("nats-{attempt}.log"));
            let log_file =
                std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
            let child = Command::new(&bin)
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let mut server = Self {
                child,
                url: format!("nats://127.0.0.1:{port}"),
                dir,
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if matches!(server.child.try_wait(), Ok(Some(_))) {
                    if options.sync_always && server.log().contains("sync_interval") {
                        return None;
                    }
                    break; // exited: try another port
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(server);
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server did not listen on {} within 20 s; its log:\n{}",
                    server.url,
                    server.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nats-server did not start on any of 5 free ports");
    }

    /// Its URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its directory (configuration, log, JetStream files).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it now (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
