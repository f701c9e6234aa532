//! What Tessera's tests and benchmarks share: the guest components under
//! `components/`, located by name and built first when they are missing or
//! stale.
//!
//! The built components (`components/<name>.wasm`) are not in git, so a
//! fresh checkout has none, and an edited guest leaves an old binary
//! behind. [`component`] therefore checks, once per process, that every
//! artifact the build produces (as listed by
//! `scripts/build-components.sh --list`) exists and is newer than every
//! source it is built from (anything under `components/` except `target/`,
//! installed npm packages (`node_modules/`), Python bytecode caches
//! (`__pycache__/`) and the artifacts, and the build scripts themselves),
//! and runs the script when one is missing or older. The build scripts
//! skip what is fresh, so a run after one edited guest recompiles only
//! that guest (the JavaScript and Python guests take tens of seconds). When everything is fresh nothing is built. Concurrent test processes take a lock
//! file (`components/target/tests-build.lock`) around the build, so one
//! builds and the others find the result fresh.
//!
//! Tests also share servers started on free loopback ports: a real
//! `nats-server` ([`NatsServer`]) and [`ScriptedLlm`], a scripted
//! OpenAI-compatible chat server that tests use in place of a language
//! model.
#![deny(missing_docs)]

mod crash;
mod llm;
mod nats;
pub use crash::CrashPoints;
pub use llm::{Reply, Rule, SCRIPTED_MODEL, ScriptedLlm, ScriptedRequest};
pub use nats::{NatsOptions, NatsServer, free_port, nats_server_bin};

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

/// The root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// The guest projects' directory, where built components are placed.
pub fn components_dir() -> PathBuf {
    repo_root().join("components")
}

/// The path of the built component `components/<name>.wasm`, building the
/// components first if any is missing or older than its sources.
///
/// Panics if the build fails, or if `name` is not a component the build
/// produces.
pub fn component(name: &str) -> PathBuf {
    let path = components_dir().join(format!("{name}.wasm"));
    // Checking and building happen once, under one lock: tests running in
    // parallel threads wait for a single build, and share its failure.
    static BUILT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = built.get_or_insert_with(|| build_if_stale(&path)) {
        panic!("{e}");
    }
    drop(built);
    assert!(
        path.is_file(),
        "{} does not exist after building the components: is `{name}` listed in \
         scripts/build-components.sh?",
        path.display()
    );
    path
}

/// Runs `scripts/build-components.sh` unless every built component is
/// newer than every source. `wanted` is the component being asked for,
/// which must exist too.
fn build_if_stale(wanted: &Path) -> Result<(), String> {
    let root = repo_root();
    let Some(reason) = stale(&root, wanted)? else {
        return Ok(());
    };
    let dir = root.join("components/target");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock_path = dir.join("tests-build.lock");
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    // Another process may have built them while this one waited.
    if stale(&root, wanted)?.is_none() {
        return Ok(());
    }
    // Straight to the terminal: the test harness captures only the print
    // macros, and a build can take minutes.
    let _ = writeln!(
        std::io::stderr(),
        "building the guest components ({reason}): scripts/build-components.sh"
    );
    let status = Command::new("bash")
        .arg(root.join("scripts/build-components.sh"))
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run scripts/build-components.sh: {e}"))?;
    if !status.success() {
        return Err(format!(
            "scripts/build-components.sh failed ({status}); see its output above"
        ));
    }
    Ok(())
}

/// Why the components must be built, or `None` when they are fresh: every
/// artifact the build produces (and `wanted`) exists and is newer than the
/// newest source.
fn stale(root: &Path, wanted: &Path) -> Result<Option<String>, String> {
    let components = root.join("components");
    if !wanted.is_file() {
        return Ok(Some(format!("{} is missing", relative(root, wanted))));
    }
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut sources = vec![
        root.join("scripts/build-components.sh"),
        root.join("scripts/build-polyglot.sh"),
        root.join("scripts/build-third-party.sh"),
    ];
    collect_sources(&components, true, &mut sources);
    // The sandboxes are built from the published WIT (`wit/sandbox`).
    collect_sources(&root.join("wit"), true, &mut sources);
    for path in sources {
        let Ok(time) = modified(&path) else { continue };
        if newest.as_ref().is_none_or(|(t, _)| time > *t) {
            newest = Some((time, path));
        }
    }
    let Some((newest, newest_path)) = newest else {
        return Ok(None);
    };
    for artifact in artifacts(root)? {
        match modified(&artifact) {
            Ok(time) if time >= newest => {}
            Ok(_) => {
                return Ok(Some(format!(
                    "{} is older than {}",
                    relative(root, &artifact),
                    relative(root, &newest_path)
                )));
            }
            Err(_) => return Ok(Some(format!("{} is missing", relative(root, &artifact)))),
        }
    }
    Ok(None)
}

/// The components the build produces, as `scripts/build-components.sh
/// --list` names them.
fn artifacts(root: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("bash")
        .arg(root.join("scripts/build-components.sh"))
        .arg("--list")
        .output()
        .map_err(|e| format!("cannot run scripts/build-components.sh --list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/build-components.sh --list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|name| root.join("components").join(format!("{name}.wasm")))
        .collect())
}

/// Every file under `dir` that a build reads: all but `target/`, hidden
/// entries, installed npm packages, Python bytecode caches and, at the top
/// (`components/`), the built components.
fn collect_sources(dir: &Path, top: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.')
            || name == "target"
            || name == "node_modules"
            || name == "__pycache__"
        {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_sources(&path, false, out);
        } else if !(top && name.ends_with(".wasm")) {
            out.push(path);
        }
    }
}

fn modified(path: &Path) -> std::io::Result<SystemTime> {
    std::fs::metadata(path)?.modified()
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A plain HTTP server on 127.0.0.1 for tests of outbound requests: it
/// reads each request whole (head and `Content-Length` body), answers
/// `200` with an empty body and closes. Returns its port and the heads of
/// every request received, in order.
pub fn http_stub() -> (u16, std::sync::Arc<std::sync::Mutex<String>>) {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local address").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let Ok(read_half) = s.try_clone() else {
                continue;
            };
            let mut r = std::io::BufReader::new(read_half);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, seen)
}
