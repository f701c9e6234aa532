//! Record and replay against the real example components.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tessera_journal::{Error, JournalStore, ReplayDivergence, record_call, replay};
use tessera_runtime::{Grants, LoadedComponent, Runtime, RuntimeConfig};
use tessera_test_support::component;

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<JournalStore>,
    rt: Runtime,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JournalStore::open(dir.path()).unwrap());
    Env {
        _dir: dir,
        store,
        rt: Runtime::new(RuntimeConfig::default()).unwrap(),
    }
}

impl Env {
    fn load(&self, name: &str, manifest: &str) -> LoadedComponent {
        let grants = Grants::from_toml(manifest, "test.toml", Path::new(".")).unwrap();
        self.rt.load_file(&component(name), grants).unwrap()
    }

    async fn record(&self, c: &LoadedComponent, f: &str, args: Value) -> (String, Value) {
        let (id, o) = record_call(&self.store, c, f, &args).await.unwrap();
        (id, o.result.unwrap_or(Value::Null))
    }

    async fn assert_identical(&self, run: &str) {
        let r = replay(&self.rt, &self.store, run, None).await.unwrap();
        assert!(
            r.divergence.is_none(),
            "run {run} diverged: {}",
            r.divergence.unwrap()
        );
        assert!(r.complete);
        assert_eq!(r.outcome.interactions, r.recorded_steps);
    }
}

/// A one-shot HTTP server on 127.0.0.1 answering every request with `body`.
fn serve(
    body: &'static str,
) -> (
    String,
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Sender<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        loop {
            if stopped.try_recv().is_ok() {
                return;
            }
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    });
    (url, handle, stop)
}

#[tokio::test]
async fn a_keyvalue_run_replays_offline_without_the_store() {
    let e = env();
    let data = tempfile::tempdir().unwrap();
    let live = Runtime::new(RuntimeConfig {
        host: tessera_runtime::HostConfig {
            stores: Some(Arc::new(tessera_store::Stores::new(
                tessera_store::StoreSettings::default(),
                data.path(),
            ))),
            ..Default::default()
        },
        ..RuntimeConfig::default()
    })
    .unwrap();
    let grants = Grants::from_toml(
        "[keyvalue]\nbuckets = [\"notes\"]\n",
        "t.toml",
        Path::new("."),
    )
    .unwrap();
    let kv = live
        .load_file(&component("kv-tool"), grants.clone())
        .unwrap();
    let mut runs = Vec::new();
    for (f, args) in [
        (
            "set",
            json!({"bucket": "notes", "key": "a", "value": "one"}),
        ),
        (
            "append",
            json!({"bucket": "notes", "key": "a", "suffix": "+two"}),
        ),
        (
            "increment",
            json!({"bucket": "notes", "key": "n", "delta": 3}),
        ),
        ("keys", json!({"bucket": "notes"})),
        (
            "get-many",
            json!({"bucket": "notes", "keys": ["a", "n", "x"]}),
        ),
        ("get", json!({"bucket": "other", "key": "a"})),
    ] {
        runs.push(e.record(&kv, f, args).await);
    }
    assert_eq!(runs[1].1, json!({"ok": "one+two"}));
    assert_eq!(runs[4].1, json!({"ok": ["one+two", "3", null]}));
    // The steps name the bucket, the key and what the store answered.
    let steps = e.store.steps(&runs[1].0).unwrap();
    let lines: Vec<String> = steps
        .iter()
        .map(|(_, s)| tessera_runtime::capability::describe(s))
        .filter(|l| l.starts_with("keyvalue"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[1].contains("notes/a") && lines[1].contains("\"one\""),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("keyvalue.swap") && lines[2].ends_with("ok"),
        "{lines:?}"
    );
    // `e.rt` has no store at all: every answer comes from the journal.
    for (id, result) in &runs {
        let r = replay(&e.rt, &e.store, id, None).await.unwrap();
        assert!(r.divergence.is_none(), "{id}: {:?}", r.divergence);
        assert_eq!(r.outcome.result.as_ref().unwrap(), result);
    }
    // Live, that runtime cannot reach a store: the same call is an error.
    let bare = e.rt.load_file(&component("kv-tool"), grants).unwrap();
    let o = bare
        .call_json("get", &json!({"bucket": "notes", "key": "a"}))
        .await
        .unwrap();
    assert!(
        o.result.unwrap()["err"]
            .as_str()
            .unwrap()
            .contains("no key-value store")
    );
}

#[tokio::test]
async fn record_and_replay_every_example_component() {
    let e = env();
    let hello = e.load("hello", "");
    for (f, args) in [
        ("greet", json!({"name": "Ada"})),
        ("chatter", json!({"msg": "recorded"})),
        (
            "types#echo-items",
            json!({"items": [{"id": 1, "name": "x", "tags": ["a"]}]}),
        ),
        ("divide", json!({"a": 1, "b": 0})),
        ("types#fail", json!({"msg": "boom"})),
    ] {
        let (id, _) = e.record(&hello, f, args).await;
        e.assert_identical(&id).await;
    }
    let spin = e.load("spin", "[limits]\nfuel = 100000\n");
    let (id, _) = e.record(&spin, "count", json!({"n": 1000000})).await;
    e.assert_identical(&id).await; // a fuel-limit run replays to the same limit
    let hog = e.load("memory-hog", "[limits]\nmemory_mb = 16\n");
    let (id, _) = e.record(&hog, "hog", json!({"mib": 4})).await;
    e.assert_identical(&id).await;
    let r = e.load("deep-recursion", "");
    let (id, _) = e.record(&r, "recurse", json!({"depth": 1000})).await;
    e.assert_identical(&id).await;
    let p1 = e.load(
        "p1-command",
        "args = [\"a\"]\n[env]\nset = { GREETING = \"hi\" }\n",
    );
    let (id, _) = e.record(&p1, "run", json!({})).await;
    e.assert_identical(&id).await;
    let net = e.load("net-escape", "[env]\nset = { K = \"v\" }\n");
    for f in ["read-env", "read-args", "wall-clock", "tcp-connect"] {
        let args = if f == "tcp-connect" {
            json!({"addr": "127.0.0.1:9"})
        } else {
            json!({})
        };
        let (id, _) = e.record(&net, f, args).await;
        e.assert_identical(&id).await;
    }
    let esc = e.load("fs-escape", "");
    let (id, _) = e
        .record(&esc, "attempt-read", json!({"path": "/etc/passwd"}))
        .await;
    e.assert_identical(&id).await;
}

#[tokio::test]
async fn clocks_and_random_replay_identically() {
    let e = env();
    let net = e.load("net-escape", "");
    let (id, recorded) = e.record(&net, "entropy", json!({})).await;
    let (_, again) = e.record(&net, "entropy", json!({})).await;
    assert_ne!(recorded, again, "two live runs should differ");
    let r = replay(&e.rt, &e.store, &id, None).await.unwrap();
    assert!(r.divergence.is_none(), "{:?}", r.divergence);
    assert_eq!(r.outcome.result.unwrap(), recorded);
    let steps = e.store.steps(&id).unwrap();
    let kinds: Vec<String> = steps.iter().map(|(_, s)| s.kind()).collect();
    assert_eq!(
        kinds,
        [
            "random.bytes",
            "random.bytes",
            "clocks.monotonic-clock",
            "clocks.wall-clock"
        ]
    );
}

#[tokio::test]
async fn http_run_replays_after_the_server_is_gone() {
    let e = env();
    let (url, handle, stop) = serve("payload from the network");
    let port = url.rsplit(':').next().unwrap();
    let fetch = e.load(
        "http-fetch",
        &format!("[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"),
    );
    let (id, live) = e
        .record(&fetch, "fetch", json!({"url": format!("{url}/x")}))
        .await;
    assert_eq!(live["ok"]["body"], json!("payload from the network"));
    stop.send(()).unwrap();
    handle.join().unwrap();
    // The server is gone: a live call now fails...
    let o = fetch
        .call_json("fetch", &json!({"url": format!("{url}/x")}))
        .await
        .unwrap();
    assert!(o.result.unwrap().get("err").is_some());
    // ...and the replay still reproduces the recorded response.
    let r = replay(&e.rt, &e.store, &id, None).await.unwrap();
    assert!(r.divergence.is_none(), "{:?}", r.divergence);
    assert_eq!(r.outcome.result.unwrap(), live);
    // A denied request is recorded and replayed too.
    let denied = e.load("http-fetch", "");
    let (id, _) = e
        .record(&denied, "fetch", json!({"url": format!("{url}/y")}))
        .await;
    e.assert_identical(&id).await;
}

#[tokio::test]
async fn file_run_replays_after_the_files_changed_or_vanished() {
    let e = env();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("a.txt"), "original contents").unwrap();
    std::fs::create_dir(data.path().join("sub")).unwrap();
    std::fs::write(data.path().join("sub/b.txt"), "nested").unwrap();
    let manifest = format!(
        "[[files]]\nhost = \"{}\"\nguest = \"/data\"\nmode = \"rw\"\n",
        data.path().display()
    );
    let fs = e.load("fs-tool", &manifest);
    let (read_id, read) = e.record(&fs, "read", json!({"path": "/data/a.txt"})).await;
    assert_eq!(read, json!({"ok": "original contents"}));
    let (nested_id, _) = e
        .record(&fs, "read", json!({"path": "/data/sub/b.txt"}))
        .await;
    let (list_id, list) = e.record(&fs, "list", json!({"path": "/data"})).await;
    assert_eq!(list, json!({"ok": ["a.txt", "sub"]}));
    let (write_id, _) = e
        .record(
            &fs,
            "write",
            json!({"path": "/data/new.txt", "contents": "w"}),
        )
        .await;
    // Change and delete the files.
    std::fs::write(data.path().join("a.txt"), "CHANGED").unwrap();
    std::fs::remove_dir_all(data.path().join("sub")).unwrap();
    std::fs::remove_file(data.path().join("new.txt")).unwrap();
    for id in [&read_id, &nested_id, &list_id, &write_id] {
        e.assert_identical(id).await;
    }
    // Replay wrote nothing into the real directory.
    assert!(!data.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(data.path().join("a.txt")).unwrap(),
        "CHANGED"
    );
}

/// Exports a run, lets `edit` change its step lines, imports it under a new id.
fn tamper(store: &JournalStore, run: &str, edit: impl FnOnce(&mut Vec<Value>)) -> String {
    let mut buf = Vec::new();
    store.export(run, &mut buf).unwrap();
    let mut lines: Vec<Value> = buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let new_id = format!("{run}-tampered-{}", lines.len());
    lines[0]["header"]["run_id"] = json!(new_id);
    let mut steps: Vec<Value> = lines
        .iter()
        .filter(|l| l.get("step").is_some())
        .cloned()
        .collect();
    lines.retain(|l| l.get("step").is_none());
    edit(&mut steps);
    for (i, s) in steps.iter_mut().enumerate() {
        s["step"] = json!(i);
    }
    let end = lines.iter().position(|l| l.get("end").is_some()).unwrap();
    for s in steps.into_iter().rev() {
        lines.insert(end, s);
    }
    let text: String = lines.iter().map(|l| l.to_string() + "\n").collect();
    store.import(&mut text.as_bytes(), "tampered").unwrap()
}

#[tokio::test]
async fn tampered_journals_diverge_at_the_right_step() {
    let e = env();
    let hello = e.load("hello", "");
    let (id, _) = e.record(&hello, "chatter", json!({"msg": "abc"})).await;
    let steps = e.store.steps(&id).unwrap();
    let kinds: Vec<String> = steps.iter().map(|(_, s)| s.kind()).collect();
    let stdout_at = kinds
        .iter()
        .position(|k| k == "stdio.stdout")
        .expect("a stdout step");
    let div_index = |r: tessera_journal::ReplayReport| match r.divergence {
        Some(ReplayDivergence::Interaction(d)) => d.index,
        other => panic!("expected an interaction divergence, got {other:?}"),
    };

    // A changed byte in what the guest wrote.
    let changed = tamper(&e.store, &id, |steps| {
        let hex = steps[stdout_at]["interaction"]["request"]
            .as_str()
            .unwrap()
            .to_string();
        let mut b = hex::decode(hex).unwrap();
        b[0] ^= 1;
        steps[stdout_at]["interaction"]["request"] = json!(hex::encode(b));
    });
    let r = replay(&e.rt, &e.store, &changed, None).await.unwrap();
    assert_eq!(div_index(r), stdout_at as u64);

    // A removed step.
    let removed = tamper(&e.store, &id, |steps| {
        steps.remove(stdout_at);
    });
    assert_eq!(
        div_index(replay(&e.rt, &e.store, &removed, None).await.unwrap()),
        stdout_at as u64
    );

    // Two steps swapped.
    let swapped = tamper(&e.store, &id, |steps| steps.swap(stdout_at, stdout_at + 1));
    assert_eq!(
        div_index(replay(&e.rt, &e.store, &swapped, None).await.unwrap()),
        stdout_at as u64
    );

    // A changed byte in a value the host supplied (an HTTP body) changes
    // what the guest computes: the result differs.
    let (url, handle, stop) = serve("0123456789");
    let port = url.rsplit(':').next().unwrap();
    let fetch = e.load(
        "http-fetch",
        &format!("[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"),
    );
    let (hid, _) = e.record(&fetch, "fetch", json!({"url": url})).await;
    stop.send(()).unwrap();
    handle.join().unwrap();
    let body_changed = tamper(&e.store, &hid, |steps| {
        steps[0]["interaction"]["response"]["response"]["body"] = json!(hex::encode("0123456780"));
    });
    let r = replay(&e.rt, &e.store, &body_changed, None).await.unwrap();
    assert!(
        matches!(r.divergence, Some(ReplayDivergence::Result { .. })),
        "{:?}",
        r.divergence
    );
}

#[tokio::test]
async fn a_different_component_is_refused() {
    let e = env();
    let hello = e.load("hello", "");
    let (id, _) = e.record(&hello, "greet", json!({"name": "x"})).await;
    match replay(&e.rt, &e.store, &id, Some(&component("spin"))).await {
        Err(Error::ComponentMismatch { recorded, .. }) => assert_eq!(recorded, hello.digest()),
        other => panic!("expected a mismatch, got {:?}", other.map(|r| r.divergence)),
    }
    // The same component passed explicitly is accepted.
    let r = replay(&e.rt, &e.store, &id, Some(&component("hello")))
        .await
        .unwrap();
    assert!(r.divergence.is_none());
}

#[tokio::test]
async fn unknown_format_versions_are_refused() {
    let e = env();
    let hello = e.load("hello", "");
    let (id, _) = e.record(&hello, "greet", json!({"name": "x"})).await;
    let mut buf = Vec::new();
    e.store.export(&id, &mut buf).unwrap();
    let text = String::from_utf8(buf)
        .unwrap()
        .replacen("\"version\":2", "\"version\":99", 1);
    match e.store.import(&mut text.as_bytes(), "future.jsonl") {
        Err(err) => assert!(err.to_string().contains("version 99"), "{err}"),
        Ok(_) => panic!("a version-99 journal was accepted"),
    }
    let truncated = "{\"header\": {\"format\": \"something-else\"}}\n";
    assert!(
        e.store
            .import(&mut truncated.as_bytes(), "x.jsonl")
            .is_err()
    );
}

#[tokio::test]
async fn export_and_import_round_trip() {
    let e = env();
    let hello = e.load("hello", "");
    let (id, _) = e
        .record(&hello, "chatter", json!({"msg": "x".repeat(500)}))
        .await;
    let mut buf = Vec::new();
    e.store.export(&id, &mut buf).unwrap();
    let other = env();
    let imported = other
        .store
        .import(&mut buf.as_slice(), "export.jsonl")
        .unwrap();
    assert_eq!(imported, id);
    assert_eq!(other.store.steps(&id).unwrap(), e.store.steps(&id).unwrap());
    other.assert_identical(&id).await;
}

/// Found by the `journal_import` fuzz target: importing a run over an
/// earlier import of the same id kept the earlier import's steps, past the
/// step count of the new end record.
#[test]
fn an_import_replaces_the_run_stored_under_its_id() {
    let e = env();
    let header = r#"{"header":{"format":"tessera-journal","version":2,"run_id":"r","started":"","component":{"digest":"d","origin":""},"function":"f","args":null,"grants":{},"engine":{"wasmtime":"","fuel":true,"max_wasm_stack":0}}}"#;
    let first = format!(
        "{header}\n{}\n{}\n",
        r#"{"step":0,"interaction":{"capability":"c","op":"o"}}"#,
        r#"{"step":1,"interaction":{"capability":"c","op":"o"}}"#
    );
    let second = format!(
        "{header}\n{}\n{}\n",
        r#"{"step":0,"interaction":{"capability":"c","op":"p"}}"#,
        r#"{"end":{"result":{"status":"trap","message":""},"fuel_consumed":0,"peak_memory_bytes":0,"duration_us":0,"steps":1}}"#
    );
    e.store.import(&mut first.as_bytes(), "first").unwrap();
    e.store.import(&mut second.as_bytes(), "second").unwrap();
    let steps = e.store.steps("r").unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].1.op, "p");
    assert_eq!(e.store.end("r").unwrap().unwrap().steps, 1);
    // And back: an import without an end record leaves the run incomplete.
    e.store.import(&mut first.as_bytes(), "first").unwrap();
    assert_eq!(e.store.steps("r").unwrap().len(), 2);
    assert_eq!(e.store.end("r").unwrap(), None);
}

#[tokio::test]
async fn inspect_run_shows_what_the_guest_wrote_at_that_step_and_not_before() {
    let e = env();
    let net = e.load(
        "net-escape",
        "[env]\nset = { MARKER = \"zebra-42-marker\" }\n",
    );
    let (id, _) = e.record(&net, "read-env", json!({})).await;
    let debug_rt = Runtime::new(RuntimeConfig {
        guest_debug: true,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let contains = |s: &tessera_journal::StepState| {
        s.snapshot
            .memories
            .iter()
            .any(|m| m.bytes.windows(15).any(|w| w == b"zebra-42-marker"))
    };
    let before = tessera_journal::state_at(&debug_rt, &e.store, &id, 0)
        .await
        .unwrap();
    assert!(before.reached);
    assert_eq!(
        before.next.as_ref().map(|n| n.kind()),
        Some("env.environment".to_string())
    );
    assert!(
        !contains(&before),
        "the value is in memory before the guest received it"
    );
    let after = tessera_journal::state_at(&debug_rt, &e.store, &id, 1)
        .await
        .unwrap();
    assert!(
        contains(&after),
        "the value the guest received is not in memory"
    );
    let changes = before.snapshot.changes(&after.snapshot);
    assert!(!changes.is_empty());
    // The marker lies inside one of the changed ranges.
    let m = after
        .snapshot
        .memories
        .iter()
        .find(|m| m.bytes.windows(15).any(|w| w == b"zebra-42-marker"))
        .unwrap();
    let at = m
        .bytes
        .windows(15)
        .position(|w| w == b"zebra-42-marker")
        .unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.instance == m.instance && c.index == m.index && c.start <= at && at < c.end),
        "{changes:?} does not cover offset {at}"
    );
    // Without guest debugging there is nothing to show, and that is an error.
    assert!(
        tessera_journal::state_at(&e.rt, &e.store, &id, 1)
            .await
            .is_err()
    );
}

/// A server that reads each request whole (headers and a `content-length`
/// body), keeps it, and answers 200 `ok`.
fn serve_posts() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            std::io::Read::read_exact(&mut r, &mut body).unwrap();
            head.push_str(&String::from_utf8_lossy(&body));
            log.lock().unwrap().push(head);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (url, seen)
}

/// Exports `run`, applies `edit` to the header, and imports it as a new run.
fn tamper_header(store: &JournalStore, run: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut buf = Vec::new();
    store.export(run, &mut buf).unwrap();
    let mut lines: Vec<Value> = buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    lines[0]["header"]["run_id"] = json!(format!("{run}-edited"));
    edit(&mut lines[0]["header"]);
    let text: String = lines.iter().map(|l| l.to_string() + "\n").collect();
    store.import(&mut text.as_bytes(), "edited").unwrap()
}

#[tokio::test]
async fn a_replay_that_sends_a_different_body_diverges_at_the_request() {
    let e = env();
    let (url, seen) = serve_posts();
    let port = url.rsplit(':').next().unwrap();
    let net = e.load(
        "net-escape",
        &format!("[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"),
    );
    let (id, live) = e
        .record(
            &net,
            "post",
            json!({"url": url, "body": "prompt A", "auth": null}),
        )
        .await;
    assert_eq!(live, json!({"ok": [200, "ok"]}));
    assert!(seen.lock().unwrap()[0].ends_with("prompt A"));
    // The same request replays without the server.
    e.assert_identical(&id).await;
    let recorded_step = e
        .store
        .steps(&id)
        .unwrap()
        .into_iter()
        .find(|(_, s)| s.capability == "http");
    let (http_at, _) = recorded_step.expect("an http step");

    // The guest now sends another body (a changed prompt).
    let changed = tamper_header(&e.store, &id, |h| h["args"]["body"] = json!("prompt B"));
    let r = replay(&e.rt, &e.store, &changed, None).await.unwrap();
    let Some(ReplayDivergence::Interaction(d)) = r.divergence else {
        panic!(
            "expected a divergence at the request, got {:?}",
            r.divergence
        )
    };
    assert_eq!(d.index, http_at);
    let (rec, act) = (d.recorded.unwrap(), d.actual.unwrap());
    assert_eq!(rec.request["uri"], act.request["uri"]);
    assert_eq!(rec.request["body_len"], json!(8));
    assert_ne!(rec.request["body_digest"], act.request["body_digest"]);
    // The report shows both requests.
    let text = ReplayDivergence::Interaction(tessera_runtime::gateway::Divergence {
        index: d.index,
        recorded: Some(rec.clone()),
        actual: Some(act.clone()),
        reason: None,
    })
    .to_string();
    assert_eq!(text.matches("http.request").count(), 2, "{text}");
    assert!(text.contains("POST"), "{text}");
    // Only the server's first request arrived: replays never reach it.
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn secrets_are_journaled_as_digests_and_checked_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JournalStore::open(dir.path()).unwrap());
    let key = tessera_runtime::gateway::RedactionKey::new([3; 32]);
    let runtime = |secret: &str| {
        let mut host = tessera_runtime::HostConfig {
            redaction_key: key.clone(),
            ..Default::default()
        };
        host.secrets.insert("api_key".into(), secret.into());
        Runtime::new(RuntimeConfig {
            host,
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    let (url, seen) = serve_posts();
    let port = url.rsplit(':').next().unwrap();
    let manifest = format!(
        "[config]\nsecrets = [\"api_key\"]\n[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"
    );
    let grants = Grants::from_toml(&manifest, "t.toml", Path::new(".")).unwrap();
    let rt = runtime("sk-live-4f9a2b");
    let tool = rt.load_file(&component("config-tool"), grants).unwrap();
    let (id, o) = record_call(
        &store,
        &tool,
        "call-with-key",
        &json!({"key": "api_key", "url": url}),
    )
    .await
    .unwrap();
    assert_eq!(o.result.unwrap(), json!({"ok": 200}));
    // The API got the key; the journal did not.
    assert!(seen.lock().unwrap()[0].contains("Bearer sk-live-4f9a2b"));
    let mut export = Vec::new();
    store.export(&id, &mut export).unwrap();
    let export = String::from_utf8(export).unwrap();
    assert!(!export.contains("sk-live-4f9a2b"), "{export}");
    assert!(export.contains("\"redacted\":\"hmac-sha256:"), "{export}");
    store.flush();
    let raw = std::fs::read(store.path()).unwrap();
    assert!(
        !raw.windows(14).any(|w| w == b"sk-live-4f9a2b"),
        "the secret is in the journal file"
    );
    for (i, s) in store.steps(&id).unwrap() {
        let line = tessera_journal::describe_step(i, &s);
        assert!(!line.contains("sk-live-4f9a2b"), "{line}");
    }
    // Same key, same secret: identical.
    let r = replay(&rt, &store, &id, None).await.unwrap();
    assert!(r.divergence.is_none(), "{:?}", r.divergence);
    // Another secret value: the replay diverges at the read, naming it.
    let r = replay(&runtime("sk-other"), &store, &id, None)
        .await
        .unwrap();
    let d = r
        .divergence
        .expect("a changed secret must diverge")
        .to_string();
    assert!(d.contains("secret `api_key` differs"), "{d}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn file_writes_and_reads_on_open_descriptors_are_steps_that_replay() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let fs = e.load(
        "fs-tool",
        &format!(
            "[[files]]\nhost = \"{}\"\nguest = \"/d\"\nmode = \"rw\"\n",
            dir.path().display()
        ),
    );
    let (wid, _) = e
        .record(
            &fs,
            "write",
            json!({"path": "/d/out.txt", "contents": "written"}),
        )
        .await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "written"
    );
    let steps = e.store.steps(&wid).unwrap();
    let writes: Vec<&Value> = steps
        .iter()
        .filter(|(_, s)| s.capability == "files" && s.op == "fd")
        .map(|(_, s)| &s.request)
        .filter(|r| {
            r["op"].as_str().is_some_and(|o| o.contains("write")) && r.get("data").is_some()
        })
        .collect();
    assert_eq!(
        writes
            .iter()
            .map(|r| hex::decode(r["data"].as_str().unwrap()).unwrap())
            .collect::<Vec<_>>()
            .concat(),
        b"written"
    );
    // The write replays into a scratch mount: the host file is untouched.
    std::fs::write(dir.path().join("out.txt"), "changed since").unwrap();
    e.assert_identical(&wid).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "changed since"
    );
    let (rid, read) = e.record(&fs, "read", json!({"path": "/d/out.txt"})).await;
    assert_eq!(read, json!({"ok": "changed since"}));
    e.assert_identical(&rid).await;
    // A guest that writes something else diverges at the write.
    let other = tamper_header(&e.store, &wid, |h| h["args"]["contents"] = json!("other"));
    let r = replay(&e.rt, &e.store, &other, None).await.unwrap();
    let Some(ReplayDivergence::Interaction(d)) = r.divergence else {
        panic!("expected a divergence, got {:?}", r.divergence)
    };
    assert_eq!(d.recorded.unwrap().op, "fd");
}

#[tokio::test]
async fn absurd_imports_are_clear_errors_and_store_nothing() {
    let e = env();
    let hello = e.load("hello", "");
    let (id, _) = e.record(&hello, "chatter", json!({"msg": "x"})).await;
    let mut buf = Vec::new();
    e.store.export(&id, &mut buf).unwrap();
    let good: Vec<Value> = buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let runs_before = e.store.list().unwrap().len();
    let attempt = |label: &str, edit: &dyn Fn(&mut Vec<Value>), expect: &str| {
        let mut lines = good.clone();
        lines[0]["header"]["run_id"] = json!(format!("absurd-{label}"));
        edit(&mut lines);
        let text: String = lines.iter().map(|l| l.to_string() + "\n").collect();
        let err = e
            .store
            .import(&mut text.as_bytes(), "absurd.jsonl")
            .expect_err(label)
            .to_string();
        assert!(err.contains(expect), "{label}: {err}");
        assert!(err.contains("absurd.jsonl:"), "{label}: no place in {err}");
    };
    let step_at =
        |lines: &mut Vec<Value>| lines.iter().position(|l| l.get("step").is_some()).unwrap();
    attempt(
        "huge-index",
        &|l| {
            let i = step_at(l);
            l[i]["step"] = json!(u64::MAX);
        },
        "out of range",
    );
    attempt(
        "negative-index",
        &|l| {
            let i = step_at(l);
            l[i]["step"] = json!(-1);
        },
        "not a non-negative integer",
    );
    attempt(
        "wrong-type",
        &|l| {
            let i = step_at(l);
            l[i]["interaction"]["capability"] = json!(17);
        },
        "step 0",
    );
    attempt(
        "index-past-end",
        &|l| {
            let i = step_at(l);
            l[i]["step"] = json!(100_000);
        },
        "past the",
    );
    attempt(
        "duplicate-index",
        &|l| {
            let i = step_at(l);
            let dup = l[i].clone();
            l.insert(i, dup);
        },
        "appears twice",
    );
    attempt(
        "bad-run-id",
        &|l| l[0]["header"]["run_id"] = json!("../../etc"),
        "header.run_id",
    );
    attempt(
        "second-header",
        &|l| {
            let h = l[0].clone();
            l.push(h);
        },
        "second header",
    );
    // A blob referenced but not shipped (a truncated export).
    let (hid, _) = e
        .record(&hello, "chatter", json!({"msg": "y".repeat(400)}))
        .await;
    let mut big = Vec::new();
    e.store.export(&hid, &mut big).unwrap();
    let text: String = String::from_utf8(big)
        .unwrap()
        .lines()
        .filter(|l| {
            !(l.contains("\"blob\":")
                && l.contains("\"data\":")
                && !l.contains(&hello.digest()[7..]))
        })
        .map(|l| l.replace(&hid, "absurd-missing-blob") + "\n")
        .collect();
    let err = e
        .store
        .import(&mut text.as_bytes(), "truncated.jsonl")
        .unwrap_err()
        .to_string();
    assert!(err.contains("is missing"), "{err}");
    // A line longer than any export can have is refused without being read whole.
    let mut huge =
        std::io::Cursor::new(vec![b'x'; (tessera_journal::MAX_IMPORT_LINE + 10) as usize]);
    let err = e
        .store
        .import(&mut huge, "huge.jsonl")
        .unwrap_err()
        .to_string();
    assert!(err.contains("longer than"), "{err}");
    // Nothing of any of them was stored.
    assert_eq!(e.store.list().unwrap().len(), runs_before + 1);
}

// Retention.

fn policy(text: &str) -> tessera_journal::Retention {
    tessera_journal::Retention::from_toml(text, "test.toml").unwrap()
}

fn run_ids(store: &JournalStore) -> Vec<String> {
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.header.run_id)
        .collect()
}

fn removed_ids(r: &tessera_journal::PruneReport) -> Vec<String> {
    r.removed.iter().map(|p| p.run_id.clone()).collect()
}

#[tokio::test]
async fn retention_prunes_by_age() {
    let e = env();
    let hello = e.load("hello", "");
    let (recent, _) = e.record(&hello, "greet", json!({"name": "new"})).await;
    let (template, _) = e.record(&hello, "greet", json!({"name": "old"})).await;
    // Runs recorded two days ago, as imports would bring them.
    let old = tamper_header(&e.store, &template, |h| {
        h["started"] = json!("2026-01-01T00:00:00Z");
    });
    let policy = policy("[journal]\nmax_age = \"1d\"");
    let dry = e.store.prune(&policy, true).unwrap();
    assert!(dry.dry_run);
    assert_eq!(removed_ids(&dry), vec![old.clone()]);
    assert!(
        dry.removed[0].reason.contains("max_age"),
        "{:?}",
        dry.removed
    );
    assert_eq!(run_ids(&e.store).len(), 3, "a dry run removes nothing");
    let r = e.store.prune(&policy, false).unwrap();
    assert_eq!(removed_ids(&r), vec![old]);
    assert_eq!(run_ids(&e.store), vec![recent.clone(), template.clone()]);
    // What is left still replays.
    e.assert_identical(&recent).await;
}

#[tokio::test]
async fn retention_prunes_by_count_globally_and_per_component() {
    let e = env();
    let hello = e.load("hello", "");
    let mut greets = Vec::new();
    for i in 0..5 {
        greets.push(
            e.record(&hello, "greet", json!({"name": format!("n{i}")}))
                .await
                .0,
        );
    }
    // Per component: hello keeps its newest 2; nothing else is touched.
    let r = e
        .store
        .prune(&policy("[journal.components.hello]\nmax_runs = 2"), false)
        .unwrap();
    assert_eq!(removed_ids(&r), greets[..3].to_vec());
    assert!(
        r.removed
            .iter()
            .all(|p| p.reason == "component hello: max_runs 2")
    );
    assert_eq!(run_ids(&e.store), greets[3..].to_vec());
    // A component the policy names but that has no runs changes nothing.
    let r = e
        .store
        .prune(&policy("[journal.components.other]\nmax_runs = 0"), false)
        .unwrap();
    assert!(r.removed.is_empty());
    // Globally: the newest one stays.
    let r = e
        .store
        .prune(&policy("[journal]\nmax_runs = 1"), false)
        .unwrap();
    assert_eq!(removed_ids(&r), vec![greets[3].clone()]);
    assert_eq!(run_ids(&e.store), vec![greets[4].clone()]);
}

#[tokio::test]
async fn retention_by_size_shrinks_the_file_on_disk_and_removes_unreferenced_blobs() {
    let e = env();
    let hello = e.load("hello", "");
    let mut runs = Vec::new();
    for i in 0..300 {
        // Each run writes a distinct long payload: its own blobs.
        let msg = format!("{i:04}-{}", "x".repeat(400));
        runs.push(e.record(&hello, "chatter", json!({ "msg": msg })).await.0);
    }
    let stats = e.store.stats().unwrap();
    let before = std::fs::metadata(e.store.path()).unwrap().len();
    assert_eq!(stats.file_bytes, before);
    assert_eq!(stats.runs, 300);
    assert_eq!(stats.blobs, 2 * 300 + 2, "{stats:?}");
    // What the same journal compacted down to one run takes (a twin
    // recorded the same way): the floor no limit can go below with a run
    // left. A compacted file keeps some of its grown size, so a fresh
    // journal's floor would be too low.
    let floor = {
        let f = env();
        let h = f.load("hello", "");
        for i in 0..300 {
            let msg = format!("{i:04}-{}", "x".repeat(400));
            f.record(&h, "chatter", json!({ "msg": msg })).await;
        }
        f.store
            .prune(&policy("[journal]\nmax_runs = 1"), false)
            .unwrap()
            .file_bytes_after
    };
    let used = stats.allocated_bytes.min(before);
    assert!(floor < used, "one run takes {floor} bytes, 300 take {used}");
    // Half way from that floor to what the pages in use take:
    // compaction alone cannot get there (the file itself may be much
    // larger than its pages in use, depending on how the commits fell),
    // and some runs fit.
    let limit = floor + (used - floor) / 2;
    let pol = policy(&format!("[journal]\nmax_bytes = {limit}"));
    let dry = e.store.prune(&pol, true).unwrap();
    assert!(!dry.removed.is_empty(), "{stats:?} {before} {dry:?}");
    assert_eq!(std::fs::metadata(e.store.path()).unwrap().len(), before);
    let r = e.store.prune(&pol, false).unwrap();
    let after = std::fs::metadata(e.store.path()).unwrap().len();
    assert_eq!(r.file_bytes_after, after);
    assert!(after <= limit, "{after} > {limit}: {r:?}");
    assert!(r.bytes_freed() >= before - limit);
    // The oldest went, the newest stayed.
    let left = run_ids(&e.store);
    assert_eq!(left.len() as u64, r.runs_kept);
    assert_eq!(left.last(), runs.last());
    assert_eq!(removed_ids(&r), runs[..runs.len() - left.len()].to_vec());
    // Their payload blobs went with them; the kept runs' are all there.
    assert!(r.blobs_removed >= r.removed.len() as u64, "{r:?}");
    // Two payload blobs per run (stdout, stderr), the component and the
    // grants (stored once).
    assert_eq!(e.store.stats().unwrap().blobs, 2 * left.len() as u64 + 2);
    for id in &left {
        e.store.steps(id).unwrap();
    }
    e.assert_identical(left.last().unwrap()).await;
}

#[tokio::test]
async fn background_size_pruning_keeps_the_newest_run_when_the_limit_is_small() {
    let e = env();
    let hello = e.load("hello", "");
    // What one run and its component's bytes take on disk, compacted.
    e.record(&hello, "greet", json!({"name": "a"})).await;
    e.record(&hello, "greet", json!({"name": "b"})).await;
    let one = e
        .store
        .prune(&policy("[journal]\nmax_runs = 1"), false)
        .unwrap()
        .file_bytes_after;
    // A limit whose low mark (where background pruning aims) is below
    // that: no estimate can get there with a run left.
    let limit = 5 * one;
    e.store
        .set_retention(Some(policy(&format!("[journal]\nmax_bytes = {limit}"))));
    let mut pruned = false;
    for i in 0..200 {
        let (id, _) = e
            .record(&hello, "greet", json!({"name": format!("n{i}")}))
            .await;
        // The second flush returns after the writer's background pruning
        // that followed the first.
        e.store.flush();
        e.store.flush();
        let ids = run_ids(&e.store);
        assert_eq!(ids.last(), Some(&id), "run {i}: the newest run is gone");
        pruned |= ids.len() < i + 2;
        let len = std::fs::metadata(e.store.path()).unwrap().len();
        assert!(len <= limit, "run {i}: {len} bytes > {limit}");
    }
    assert!(pruned, "the journal was never pruned");
    e.assert_identical(run_ids(&e.store).last().unwrap()).await;
}

#[tokio::test]
async fn pinned_and_in_progress_runs_are_never_pruned() {
    let e = env();
    let hello = e.load("hello", "");
    let (pinned, _) = e.record(&hello, "greet", json!({"name": "p"})).await;
    let (plain, _) = e.record(&hello, "greet", json!({"name": "q"})).await;
    e.store.pin(&pinned).unwrap();
    e.store.hold(&plain, "plan:demo").unwrap();
    assert!(matches!(
        e.store.pin("no-such-run"),
        Err(Error::NoSuchRun(_))
    ));
    // A run begun and not ended: in progress in this process.
    let (template, _) = e.record(&hello, "greet", json!({"name": "t"})).await;
    let end = e.store.end(&template).unwrap().unwrap();
    let mut header = e.store.header(&template).unwrap();
    header.run_id = "20990101T000000-inprogress".into();
    e.store.begin(header, hello.source_bytes()).unwrap();
    let everything = policy("[journal]\nmax_runs = 0\nmax_bytes = 1");
    let r = e.store.prune(&everything, false).unwrap();
    assert_eq!(removed_ids(&r), vec![template.clone()]);
    let mut left = run_ids(&e.store);
    left.sort();
    let mut expected = vec![
        pinned.clone(),
        plain.clone(),
        "20990101T000000-inprogress".to_string(),
    ];
    expected.sort();
    assert_eq!(left, expected);
    let held: std::collections::BTreeMap<_, _> = r
        .held
        .iter()
        .map(|h| (h.run_id.clone(), h.held_by.clone()))
        .collect();
    assert_eq!(held[&pinned], vec!["pin".to_string()]);
    assert_eq!(held[&plain], vec!["plan:demo".to_string()]);
    assert_eq!(
        held["20990101T000000-inprogress"],
        vec!["in-progress".to_string()]
    );
    // The component blob is still referenced, so it stays.
    assert!(e.store.blob(hello.digest()).unwrap().is_some());
    // Released, ended: now they go.
    assert!(e.store.unpin(&pinned).unwrap());
    assert!(!e.store.unpin(&pinned).unwrap());
    assert!(e.store.release(&plain, "plan:demo").unwrap());
    e.store.append_end("20990101T000000-inprogress", &end);
    let r = e.store.prune(&everything, false).unwrap();
    assert_eq!(r.removed.len(), 3, "{r:?}");
    assert!(run_ids(&e.store).is_empty());
    // No run references the component any more: its blob is gone…
    assert!(e.store.blob(hello.digest()).unwrap().is_none());
    assert!(r.blobs_removed >= 1);
    // …and a new run of it stores it again, so the run replays.
    let (again, _) = e.record(&hello, "greet", json!({"name": "again"})).await;
    e.assert_identical(&again).await;
}

#[tokio::test]
async fn an_incomplete_run_of_a_process_that_died_is_not_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let hello = rt
        .load_file(&component("hello"), Grants::deny_all())
        .unwrap();
    let template = {
        let store = Arc::new(JournalStore::open(dir.path()).unwrap());
        let (id, _) = record_call(&store, &hello, "greet", &json!({"name": "a"}))
            .await
            .unwrap();
        let mut header = store.header(&id).unwrap();
        header.run_id = "20260101T000000-cutoff".into();
        store.begin(header, hello.source_bytes()).unwrap();
        id
    };
    let store = JournalStore::open(dir.path()).unwrap();
    let list = store.list().unwrap();
    assert!(
        list.iter()
            .any(|r| r.header.run_id == "20260101T000000-cutoff" && r.end.is_none())
    );
    let r = store
        .prune(&policy("[journal]\nmax_runs = 1"), false)
        .unwrap();
    assert_eq!(removed_ids(&r), vec!["20260101T000000-cutoff".to_string()]);
    assert_eq!(run_ids(&store), vec![template]);
}

// --- Composition: `[imports]` served by another component ------------------

const TRANSFORM: &str = "example:text/transform";
const TEXT: &str = "Tessera links components together";

/// A runtime whose compile cache is the one the polyglot tests share (the
/// Python components take many seconds to compile), and a journal.
fn compose_env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JournalStore::open(dir.path()).unwrap());
    let cache = tessera_test_support::components_dir().join("target/polyglot-test-cache");
    Env {
        _dir: dir,
        store,
        rt: Runtime::new(RuntimeConfig {
            cache_dir: Some(cache),
            ..RuntimeConfig::default()
        })
        .unwrap(),
    }
}

/// Loads component `name` under `manifest`, written to `dir/<name>.toml`
/// (so its relative paths resolve in `dir`).
fn load_in(
    rt: &Runtime,
    dir: &Path,
    name: &str,
    manifest: &str,
) -> Result<LoadedComponent, tessera_runtime::Error> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    let grants = Grants::from_file(&path)?;
    rt.load_file(&component(name), grants)
}

/// `[imports]` mapping the transform interface to a provider file with a
/// manifest setting its `SIGNATURE`, and the consumer's own `SIGNATURE`.
fn consumer_manifest(dir: &Path, provider: &Path, provider_sig: Option<&str>, own: &str) -> String {
    let mut m = String::from("[imports]\n");
    match provider_sig {
        Some(sig) => {
            std::fs::write(
                dir.join("provider.toml"),
                format!("[env]\nset = {{ SIGNATURE = \"{sig}\" }}\n"),
            )
            .unwrap();
            m.push_str(&format!(
                "\"{TRANSFORM}\" = {{ component = \"{}\", manifest = \"provider.toml\" }}\n",
                provider.display()
            ));
        }
        None => m.push_str(&format!("\"{TRANSFORM}\" = \"{}\"\n", provider.display())),
    }
    m.push_str(&format!("[env]\nset = {{ SIGNATURE = \"{own}\" }}\n"));
    m
}

fn expected_report(provider: Value, consumer: &str) -> Value {
    json!({
        "shout": "TESSERA LINKS COMPONENTS TOGETHER!",
        "counts": {"chars": 33, "words": 4},
        "longest": "components",
        "provider": provider,
        "consumer": consumer,
    })
}

#[tokio::test]
async fn imports_are_served_by_a_provider_in_another_language_under_its_own_grants_and_replay_offline()
 {
    let e = compose_env();
    for (consumer, provider) in [
        ("text-consumer", "text-provider-py"),
        ("text-consumer-py", "text-provider"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // The provider is a copy, removed before the replay: a replay
        // answers linked calls from the journal.
        let copy = dir.path().join(format!("{provider}.wasm"));
        std::fs::copy(component(provider), &copy).unwrap();
        let m = consumer_manifest(dir.path(), &copy, Some(provider), consumer);
        let c = load_in(&e.rt, dir.path(), consumer, &m).unwrap();
        let (run, result) = e.record(&c, "report", json!({ "text": TEXT })).await;
        // Each side saw its own environment only.
        assert_eq!(
            result,
            expected_report(json!(provider), consumer),
            "{consumer} <- {provider}"
        );

        // Every call across the link is a step of the consumer's run,
        // naming the provider's own run, whose header names the step.
        let steps = e.store.steps(&run).unwrap();
        let links: Vec<&(u64, tessera_runtime::gateway::Step)> = steps
            .iter()
            .filter(|(_, s)| s.capability == "link")
            .collect();
        let functions: Vec<&str> = links
            .iter()
            .map(|(_, s)| s.request["function"].as_str().unwrap())
            .collect();
        assert_eq!(functions, ["upper", "count", "longest", "signature"]);
        let provider_digest = tessera_runtime::digest_of(&std::fs::read(&copy).unwrap());
        for (index, step) in &links {
            assert_eq!(step.response["digest"], json!(provider_digest));
            let provider_run = step.response["run"].as_str().expect("a provider run");
            let header = e.store.header(provider_run).unwrap();
            let linked = header.linked.expect("a provider run names its consumer");
            assert_eq!((linked.run.as_str(), linked.step), (run.as_str(), *index));
            assert_eq!(linked.interface, format!("{TRANSFORM}@0.1.0"));
            assert_eq!(header.component.digest, provider_digest);
            let line = tessera_runtime::capability::describe(step);
            assert!(
                line.starts_with("link") && line.contains(provider_run),
                "{line}"
            );
        }
        let upper = &links[0].1;
        assert_eq!(upper.request["args"], json!({ "text": TEXT }));
        assert_eq!(
            upper.response["result"],
            json!({"Ok": "TESSERA LINKS COMPONENTS TOGETHER"})
        );

        std::fs::remove_file(&copy).unwrap();
        e.assert_identical(&run).await;

        // A provider granted nothing sees no SIGNATURE, while the
        // consumer still sees its own.
        let bare = dir.path().join(format!("{provider}-bare.wasm"));
        std::fs::copy(component(provider), &bare).unwrap();
        let m = consumer_manifest(dir.path(), &bare, None, consumer);
        let c = load_in(&e.rt, dir.path(), consumer, &m).unwrap();
        let (_, result) = e.record(&c, "report", json!({ "text": TEXT })).await;
        assert_eq!(result, expected_report(Value::Null, consumer));
    }
}

/// A registry of providers the test swaps versions in, as a server's
/// registry does when a new version is activated.
#[derive(Default)]
struct SwappableProviders(std::sync::Mutex<std::collections::HashMap<String, LoadedComponent>>);

impl tessera_runtime::capability::link::Providers for SwappableProviders {
    fn provider(&self, name: &str) -> Result<Option<LoadedComponent>, String> {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .map(Some)
            .ok_or_else(|| format!("no component `{name}` is registered"))
    }
}

#[tokio::test]
async fn swapping_a_registered_provider_changes_its_consumer_and_replay_keeps_the_linked_version() {
    let e = compose_env();
    let dir = tempfile::tempdir().unwrap();
    let providers = Arc::new(SwappableProviders::default());
    e.rt.set_providers(Some(providers.clone()));
    let version = |name: &str, sig: &str| {
        load_in(
            &e.rt,
            dir.path(),
            name,
            &format!("[env]\nset = {{ SIGNATURE = \"{sig}\" }}\n"),
        )
        .unwrap()
    };
    let manifest = format!("[imports]\n\"{TRANSFORM}\" = \"text\"\n");
    // Not registered yet: loading the consumer fails, naming both sides.
    let err = load_in(&e.rt, dir.path(), "text-consumer", &manifest).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, tessera_runtime::Error::Compose { .. })
            && msg.contains("text-consumer")
            && msg.contains(TRANSFORM)
            && msg.contains("`text`")
            && msg.contains("no component `text` is registered"),
        "{msg}"
    );

    let v1 = version("text-provider", "v1 in Rust");
    providers.0.lock().unwrap().insert("text".into(), v1);
    let consumer = load_in(&e.rt, dir.path(), "text-consumer", &manifest).unwrap();
    let (first, result) = e.record(&consumer, "report", json!({ "text": TEXT })).await;
    assert_eq!(result["provider"], json!("v1 in Rust"));

    // A new version in another language: the same loaded consumer uses it.
    let v2 = version("text-provider-py", "v2 in Python");
    let v2_digest = v2.digest().to_string();
    providers.0.lock().unwrap().insert("text".into(), v2);
    let (second, result) = e.record(&consumer, "report", json!({ "text": TEXT })).await;
    assert_eq!(result["provider"], json!("v2 in Python"));
    assert_eq!(result["shout"], json!("TESSERA LINKS COMPONENTS TOGETHER!"));
    let step = e
        .store
        .steps(&second)
        .unwrap()
        .into_iter()
        .find(|(_, s)| s.capability == "link")
        .unwrap()
        .1;
    assert_eq!(step.response["digest"], json!(v2_digest));

    // The first run replays with v1's answers, though v2 is registered.
    let r = replay(&e.rt, &e.store, &first, None).await.unwrap();
    assert!(r.divergence.is_none(), "{:?}", r.divergence);
    assert_eq!(r.outcome.result.unwrap()["provider"], json!("v1 in Rust"));

    // A version whose types differ: the consumer's next call fails with
    // an error naming both sides and the function, and the provider is
    // not called.
    let wrong = version("text-provider-wrong", "wrong");
    providers.0.lock().unwrap().insert("text".into(), wrong);
    let (_, o) = record_call(&e.store, &consumer, "report", &json!({ "text": TEXT }))
        .await
        .unwrap();
    let msg = o.result.unwrap_err().to_string();
    assert!(
        msg.contains(TRANSFORM)
            && msg.contains("text-provider-wrong")
            && msg.contains("`count` result"),
        "{msg}"
    );
    e.rt.set_providers(None);
}

#[test]
fn imports_that_cannot_be_served_are_load_errors_naming_both_sides() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        format!(
            "[imports]\n\"{TRANSFORM}\" = \"{}\"\n",
            component(name).display()
        )
    };
    let compose_err = |name: &str, manifest: &str| match load_in(&rt, dir.path(), name, manifest) {
        Err(e @ tessera_runtime::Error::Compose { .. }) => e.to_string(),
        Err(e) => panic!("not a composition error: {e}"),
        Ok(_) => panic!("{name} loaded under {manifest}"),
    };

    // Types that differ: every difference is named.
    let msg = compose_err("text-consumer", &file("text-provider-wrong"));
    for part in [
        "text-consumer",
        TRANSFORM,
        "text-provider-wrong",
        "`count` result: the consumer expects record { chars: u32, words: u32 }, \
         the provider returns u32",
        "`longest`: the consumer passes (text: string), the provider takes (text: string, limit: u32)",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    // A provider without the interface.
    let msg = compose_err("text-consumer", &file("hello"));
    assert!(
        msg.contains("hello") && msg.contains(&format!("does not export `{TRANSFORM}`")),
        "{msg}"
    );
    // A consumer that does not import it.
    let msg = compose_err("hello", &file("text-provider"));
    assert!(msg.contains("the component does not import it"), "{msg}");
    // A file that would serve itself: a cycle of files.
    let msg = compose_err("text-consumer", &file("text-consumer"));
    assert!(msg.contains("the files import each other"), "{msg}");
    // A registry name, with no registry to resolve it.
    let msg = compose_err(
        "text-consumer",
        &format!("[imports]\n\"{TRANSFORM}\" = \"text\"\n"),
    );
    assert!(msg.contains("registry name"), "{msg}");
    // Without `[imports]`, the import is unresolved, as any unknown import.
    let err = load_in(&rt, dir.path(), "text-consumer", "").unwrap_err();
    assert!(
        matches!(&err, tessera_runtime::Error::Link { .. }) && err.to_string().contains(TRANSFORM),
        "{err}"
    );
    // The same provider loads (the allowed case of the above). What the
    // consumer may do then includes whatever a provider may: no
    // read-only hint.
    let c = load_in(&rt, dir.path(), "text-consumer", &file("text-provider")).unwrap();
    assert!(!c.grants().effects().read_only());
    assert!(Grants::deny_all().effects().read_only());

    // Manifest errors name the field.
    for (manifest, field) in [
        (
            format!("[imports]\n\"{TRANSFORM}\" = \"missing.wasm\"\n"),
            format!("imports.\"{TRANSFORM}\".component"),
        ),
        (
            "[imports]\n\"wasi:cli/environment\" = \"x\"\n".to_string(),
            "imports.\"wasi:cli/environment\"".to_string(),
        ),
        (
            "[imports]\n\"not an interface\" = \"x\"\n".to_string(),
            "imports.\"not an interface\"".to_string(),
        ),
        (
            format!("[imports]\n\"{TRANSFORM}@0.1\" = \"x\"\n"),
            format!("imports.\"{TRANSFORM}@0.1\""),
        ),
        (
            format!("[imports]\n\"{TRANSFORM}\" = {{ component = \"x\", extra = 1 }}\n"),
            format!("imports.\"{TRANSFORM}\""),
        ),
        ("imports = 3\n".to_string(), "imports".to_string()),
    ] {
        match Grants::from_toml(&manifest, "consumer.toml", dir.path()) {
            Err(tessera_runtime::ManifestError::Invalid { field: f, .. }) => {
                assert_eq!(f, field, "{manifest}")
            }
            other => panic!("{manifest}: {other:?}"),
        }
    }
}
