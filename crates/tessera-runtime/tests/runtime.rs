//! Integration tests of the runtime against the real example components.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};
use tessera_runtime::{
    CacheStatus, CallFailure, Decision, Error, Grants, LimitHit, Runtime, RuntimeConfig,
};

// ---------------------------------------------------------------- JSON ↔ WIT

#[tokio::test]
async fn every_wit_type_round_trips() {
    let rt = runtime();
    let hello = load(&rt, "hello", "");
    let cases: Vec<(&str, Value)> = vec![
        ("echo-bool", json!(true)),
        ("echo-s8", json!(-128)),
        ("echo-u8", json!(255)),
        ("echo-s16", json!(-32768)),
        ("echo-u16", json!(65535)),
        ("echo-s32", json!(i32::MIN)),
        ("echo-u32", json!(u32::MAX)),
        ("echo-s64", json!(i64::MIN)),
        ("echo-u64", json!(u64::MAX)),
        ("echo-f32", json!(1.5)),
        ("echo-f64", json!(-2.25e300)),
        ("echo-f64", json!("NaN")),
        ("echo-f64", json!("-Infinity")),
        ("echo-char", json!("é")),
        ("echo-char", json!("🦀")),
        ("echo-string", json!("multi\nline \"quoted\" ✓")),
        ("echo-list", json!([1, 2, 3, 4294967295u32])),
        ("echo-list", json!([])),
        ("echo-bytes", json!([0, 127, 255])),
        ("echo-tuple", json!([7, "seven", false])),
        ("echo-point", json!({"x": -1, "y": 2})),
        (
            "echo-items",
            json!([{"id": 1, "name": "a", "tags": ["x", "y"], "color": "green"},
                   {"id": 2, "name": "b", "tags": [], "color": null}]),
        ),
        ("echo-shape", json!({"circle": 2.5})),
        ("echo-shape", json!({"rect": {"x": 3, "y": 4}})),
        ("echo-shape", json!("empty")),
        ("echo-color", json!("blue")),
        ("echo-option", json!("some text")),
        ("echo-option", json!(null)),
        ("echo-nested-option", json!(null)),
        ("echo-nested-option", json!({"some": null})),
        ("echo-nested-option", json!({"some": 5})),
        ("echo-result", json!({"ok": 9})),
        ("echo-result", json!({"err": "bad"})),
        ("echo-unit-result", json!({"ok": null})),
        ("echo-unit-result", json!({"err": null})),
        ("echo-perms", json!(["read", "exec"])),
        ("echo-perms", json!([])),
    ];
    for (f, v) in cases {
        let param = if f == "echo-items" { "items" } else { "v" };
        let out = call_ok(&hello, &format!("types#{f}"), json!({ param: v.clone() })).await;
        assert_eq!(out, v, "{f} did not round-trip");
    }
    // A record field of option type may be omitted and comes back as null.
    let out = call_ok(
        &hello,
        "types#echo-items",
        json!({"items": [{"id": 1, "name": "a", "tags": []}]}),
    )
    .await;
    assert_eq!(
        out,
        json!([{"id": 1, "name": "a", "tags": [], "color": null}])
    );
    // Functions without a result return null; guest errors are results.
    assert_eq!(
        call_ok(&hello, "types#no-result", json!({"v": 1})).await,
        json!(null)
    );
    let o = call(&hello, "divide", json!({"a": 1, "b": 0})).await;
    assert_eq!(
        o.result.clone().unwrap(),
        json!({"err": "division by zero"})
    );
    assert!(o.guest_error);
    let o = call(&hello, "divide", json!({"a": 7, "b": 2})).await;
    assert_eq!(o.result.unwrap(), json!({"ok": 3}));
    assert!(!o.guest_error);
}

#[tokio::test]
async fn bad_arguments_name_the_json_path_and_type() {
    let rt = runtime();
    let hello = load(&rt, "hello", "");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "types#echo-items",
            json!({"items": [{"id": 1, "name": "a", "tags": []}, {"id": 1, "name": "a", "tags": []},
                             {"id": 1, "name": "a", "tags": []}, {"id": 300, "name": "b", "tags": []}]}),
            "$.items[3].id: expected u8 (0..=255), got 300",
        ),
        (
            "types#echo-u8",
            json!({"v": -1}),
            "$.v: expected u8 (0..=255), got -1",
        ),
        ("types#echo-u8", json!({"v": 1.5}), "$.v: expected u8"),
        (
            "types#echo-s64",
            json!({"v": 9223372036854775808u64}),
            "$.v: expected s64",
        ),
        ("types#echo-char", json!({"v": "ab"}), "$.v: expected char"),
        (
            "types#echo-color",
            json!({"v": "purple"}),
            "$.v: expected enum (one of red, green, blue)",
        ),
        (
            "types#echo-point",
            json!({"v": {"x": 1}}),
            "$.v.y: missing field",
        ),
        (
            "types#echo-point",
            json!({"v": {"x": 1, "y": 2, "z": 3}}),
            "$.v.z: unknown field",
        ),
        (
            "types#echo-tuple",
            json!({"v": [1, "a"]}),
            "$.v: expected tuple",
        ),
        (
            "types#echo-shape",
            json!({"v": {"rect": {"x": "1", "y": 2}}}),
            "$.v.rect.x: expected s32",
        ),
        (
            "types#echo-shape",
            json!({"v": "circle"}),
            "case `circle` needs a payload",
        ),
        (
            "types#echo-perms",
            json!({"v": ["read", "fly"]}),
            "$.v[1]: expected flags",
        ),
        (
            "types#echo-result",
            json!({"v": {"maybe": 1}}),
            "$.v: expected result",
        ),
        (
            "greet",
            json!({}),
            "$.name: missing parameter of type string",
        ),
        (
            "greet",
            json!({"name": "a", "extra": 1}),
            "$.extra: unknown parameter",
        ),
        ("greet", json!([1]), "$: arguments must be a JSON object"),
    ];
    for (f, args, expected) in cases {
        match hello.call_json(f, &args).await {
            Err(Error::BadArguments { error, .. }) => {
                assert!(
                    error.to_string().contains(expected),
                    "{f} {args}: got `{error}`, expected `{expected}`"
                );
            }
            other => panic!("{f} {args}: expected BadArguments, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn function_names_resolve_and_unknown_names_list_the_choices() {
    let rt = runtime();
    let hello = load(&rt, "hello", "");
    for name in [
        "types#echo-u8",
        "types.echo-u8",
        "echo-u8",
        "tessera:hello/types@0.1.0#echo-u8",
    ] {
        assert_eq!(
            call_ok(&hello, name, json!({"v": 5})).await,
            json!(5),
            "{name}"
        );
    }
    match hello.call_json("nope", &json!({})).await {
        Err(Error::NoSuchFunction { available, .. }) => assert!(available.contains("greet")),
        other => panic!("{other:?}"),
    }
    match hello.call_json("make-counter", &json!({"start": 1})).await {
        Err(Error::NotCallable { reason, .. }) => assert!(reason.contains("resource"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn schemas_match_golden_file() {
    let rt = runtime();
    let hello = load(&rt, "hello", "");
    let doc: Vec<Value> = hello.functions().iter().map(|f| f.to_json()).collect();
    let actual = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/hello.schema.json");
    if std::env::var_os("TESSERA_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&golden)
        .expect("golden file missing: run the tests with TESSERA_BLESS=1 to create it");
    assert_eq!(
        actual, expected,
        "schemas changed: review, then re-bless with TESSERA_BLESS=1"
    );
}

#[test]
fn schemas_have_exact_integer_ranges_and_docs() {
    let rt = runtime();
    let hello = load(&rt, "hello", "");
    let f = hello.function("types#echo-s64").unwrap();
    assert_eq!(
        f.params_schema["properties"]["v"],
        json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX, "format": "int64"})
    );
    let f = hello.function("types#echo-u64").unwrap();
    assert_eq!(f.result_schema["maximum"], json!(u64::MAX));
    let greet = hello.function("greet").unwrap();
    assert!(
        greet.docs.as_deref().unwrap_or("").contains("Greets"),
        "WIT doc comment missing: {:?}",
        greet.docs
    );
    assert_eq!(greet.params_schema["required"], json!(["name"]));
}

// ---------------------------------------------------------------- isolation

#[tokio::test]
async fn each_call_gets_a_fresh_instance() {
    let rt = runtime();
    let hello = load(&rt, "hello", "");
    for _ in 0..3 {
        assert_eq!(call_ok(&hello, "bump", json!({})).await, json!(1));
    }
}

#[tokio::test]
async fn a_trap_is_a_result_and_the_next_call_works() {
    let rt = runtime();
    let hello = load(&rt, "hello", "");
    let o = call(&hello, "types#fail", json!({"msg": "boom"})).await;
    match &o.result {
        Err(CallFailure::Trap { message, .. }) => assert!(message.contains("fail"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(String::from_utf8_lossy(&o.output.stderr).contains("boom"));
    assert_eq!(
        call_ok(&hello, "greet", json!({"name": "again"})).await,
        json!("Hello, again!")
    );
}

// One thread runs everything here, so a guest that never returns must give
// the thread back to let other calls run: the epoch callback yields at every
// tick. Were it not to, the ticker would hold the thread until its deadline
// and end before any other call ran.
#[tokio::test(flavor = "current_thread")]
async fn a_spinning_call_does_not_block_concurrent_calls() {
    let rt = runtime();
    // The deadline ends the test if yielding is broken; otherwise the call
    // is cancelled long before.
    let ticker = load(
        &rt,
        "spin",
        "[limits]\ntimeout_ms = 20000\nfuel = 1000000000000000\n",
    );
    let hello = load(&rt, "hello", "");
    let (observer, mut stdout) = stdout_events();
    let cancel = tessera_runtime::CancellationToken::new();
    let options = tessera_runtime::CallOptions {
        observer: Some(observer),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let ticking = tokio::spawn(async move {
        ticker
            .call_json_with("ticker", &json!({"every": 1_000_000}), options)
            .await
    });
    // The first tick: the ticker is running, and loops from now on.
    assert!(next_stdout(&mut stdout).await.starts_with("tick "));
    for i in 0..20 {
        let name = format!("n{i}");
        assert_eq!(
            call_ok(&hello, "greet", json!({"name": name})).await,
            json!(format!("Hello, {name}!"))
        );
    }
    assert!(
        !ticking.is_finished(),
        "the ticker ended before the other calls ran: it did not yield"
    );
    cancel.cancel();
    let o = ticking.await.unwrap().unwrap();
    assert_eq!(o.result, Err(CallFailure::Cancelled));
}

#[tokio::test]
async fn cancelling_interrupts_a_spinning_guest() {
    let rt = runtime();
    let spin = load(
        &rt,
        "spin",
        "[limits]\ntimeout_ms = 600000\nfuel = 100000000000000\n",
    );
    let (observer, mut stdout) = stdout_events();
    let token = tessera_runtime::CancellationToken::new();
    let options = tessera_runtime::CallOptions {
        observer: Some(observer),
        cancel: Some(token.clone()),
        ..Default::default()
    };
    let spinning = tokio::spawn(async move {
        spin.call_json_with("ticker", &json!({"every": 1_000_000}), options)
            .await
    });
    // The first tick: the guest is running, and loops from now on.
    next_stdout(&mut stdout).await;
    token.cancel();
    let o = spinning.await.unwrap().unwrap();
    assert_eq!(o.result, Err(CallFailure::Cancelled));
    assert!(o.fuel_consumed > 0);
}

#[tokio::test]
async fn cancelling_interrupts_a_guest_waiting_on_the_host() {
    let mut server = SilentServer::start();
    let rt = runtime();
    let fetch = load(
        &rt,
        "http-fetch",
        &format!(
            "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n[limits]\ntimeout_ms = 600000\n",
            server.port
        ),
    );
    let token = tessera_runtime::CancellationToken::new();
    let options = tessera_runtime::CallOptions {
        cancel: Some(token.clone()),
        ..Default::default()
    };
    let url = format!("http://127.0.0.1:{}/never", server.port);
    let waiting = tokio::spawn(async move {
        fetch
            .call_json_with("fetch", &json!({ "url": url }), options)
            .await
    });
    // Connected: the guest now waits for an answer that never comes.
    server.next_connection().await;
    token.cancel();
    let o = waiting.await.unwrap().unwrap();
    assert_eq!(o.result, Err(CallFailure::Cancelled));
}

#[tokio::test]
async fn the_deadline_stops_a_guest_waiting_on_the_host() {
    // Live and deterministic alike: a deterministic call's deadline is fuel
    // only while it runs wasm, but a wait on the host is still bounded.
    for mode in ["", "deterministic = true\n"] {
        let server = SilentServer::start();
        let rt = runtime();
        let fetch = load(
            &rt,
            "http-fetch",
            &format!(
                "{mode}[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n[limits]\ntimeout_ms = 200\n",
                server.port
            ),
        );
        let url = format!("http://127.0.0.1:{}/never", server.port);
        let o = tokio::time::timeout(EVENT_WAIT, call(&fetch, "fetch", json!({ "url": url })))
            .await
            .unwrap_or_else(|_| panic!("{mode}: still waiting after {EVENT_WAIT:?}"));
        if mode.is_empty() {
            assert_eq!(o.result, Err(CallFailure::Limit(LimitHit::Deadline(200))));
        } else {
            // Deterministic: the exchange itself times out and the guest
            // sees an error it can handle — recorded, so a replay gives the
            // guest the same answer without waiting.
            let err = o.result.as_ref().unwrap()["err"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(err.contains("ConnectionReadTimeout"), "{err}");
        }
        assert!(
            o.audit.iter().any(|e| e.capability == "deadline"
                && e.detail
                    .as_deref()
                    .is_some_and(|m| m.contains("waiting on the host"))),
            "{mode}{:?}",
            o.audit
        );
    }
}

#[tokio::test]
async fn guest_output_and_logs_are_captured() {
    let rt = runtime();
    let hello = load(&rt, "hello", "");
    let o = call(&hello, "chatter", json!({"msg": "ping"})).await;
    assert_eq!(o.result.clone().unwrap(), json!(4));
    assert_eq!(String::from_utf8_lossy(&o.output.stdout), "stdout: ping\n");
    assert_eq!(String::from_utf8_lossy(&o.output.stderr), "stderr: ping\n");
    assert_eq!(o.output.logs.len(), 1);
    assert_eq!(o.output.logs[0].message, "ping");
    assert_eq!(o.output.logs[0].context, "hello");
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn fuel_limit() {
    let rt = runtime();
    let spin = load(&rt, "spin", "[limits]\nfuel = 1000000\n");
    assert!(
        call(&spin, "count", json!({"n": 1000}))
            .await
            .result
            .is_ok()
    );
    let o = call(&spin, "count", json!({"n": 100000000})).await;
    match o.result {
        Err(CallFailure::Limit(hit)) => {
            assert_eq!(hit, LimitHit::Fuel(1_000_000));
            assert_eq!(hit.to_string(), "fuel exhausted (limit 1000000)");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        o.audit
            .iter()
            .any(|e| e.capability == "fuel" && e.decision == Decision::Limit)
    );
}

#[tokio::test]
async fn deadline_stops_a_tight_loop() {
    let (rt, audit) = runtime_with_audit();
    let spin = load(
        &rt,
        "spin",
        "[limits]\ntimeout_ms = 200\nfuel = 1000000000000\n",
    );
    let o = call(&spin, "spin", json!({})).await;
    assert_eq!(o.result, Err(CallFailure::Limit(LimitHit::Deadline(200))));
    let events = audit.take();
    let e = events
        .iter()
        .find(|e| e.capability == "deadline")
        .expect("audit event");
    assert_eq!(e.decision, Decision::Limit);
    assert_eq!(e.component, spin.digest());
    assert!(e.function.ends_with("spin"));
}

#[tokio::test]
async fn memory_limit() {
    let rt = runtime();
    let hog = load(&rt, "memory-hog", "[limits]\nmemory_mb = 32\n");
    assert_eq!(call_ok(&hog, "hog", json!({"mib": 8})).await, json!(8));
    let o = call(&hog, "hog", json!({"mib": 64})).await;
    match o.result {
        Err(CallFailure::Limit(hit)) => assert_eq!(hit.to_string(), "memory limit 32 MiB exceeded"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_memory_limit_covers_all_memories_of_an_instance() {
    // `two-memories` has two linear memories, in two core modules, of one
    // 64 KiB page each; `grow` grows both by the given numbers of pages.
    const PAGE: usize = 64 * 1024;
    const LIMIT_PAGES: u32 = 1024; // memory_mb = 64
    let rt = runtime();
    let two = load(&rt, "two-memories", "[limits]\nmemory_mb = 64\n");
    // Each memory at 0.4 of the limit: 0.8 of it together, allowed. The
    // peak is the total of both.
    let each = LIMIT_PAGES * 4 / 10;
    let o = call(
        &two,
        "grow",
        json!({"a-pages": each - 1, "b-pages": each - 1}),
    )
    .await;
    assert_eq!(o.result, Ok(json!(2 * each)));
    assert_eq!(o.peak_memory_bytes, 2 * each as usize * PAGE);
    // Each memory at 0.75 of the limit: within it alone, 1.5 times it
    // together. The second growth is refused.
    let each = LIMIT_PAGES * 3 / 4;
    let o = call(
        &two,
        "grow",
        json!({"a-pages": each - 1, "b-pages": each - 1}),
    )
    .await;
    assert_eq!(o.result, Err(CallFailure::Limit(LimitHit::Memory(64))));
    assert!(o.peak_memory_bytes <= LIMIT_PAGES as usize * PAGE);
    assert!(
        o.audit
            .iter()
            .any(|e| e.capability == "memory" && e.decision == Decision::Limit),
        "{:?}",
        o.audit
    );
}

#[tokio::test]
async fn stack_limit() {
    let rt = runtime();
    let r = load(&rt, "deep-recursion", "");
    assert_eq!(
        call_ok(&r, "recurse", json!({"depth": 100})).await,
        json!(100)
    );
    let o = call(&r, "recurse", json!({"depth": 100000000})).await;
    assert_eq!(o.result, Err(CallFailure::Limit(LimitHit::Stack)));
}

#[tokio::test]
async fn output_limit() {
    let rt = runtime();
    let hello = load(&rt, "hello", "[limits]\nmax_output_bytes = 64\n");
    assert!(
        call(&hello, "chatter", json!({"msg": "short"}))
            .await
            .result
            .is_ok()
    );
    let o = call(&hello, "chatter", json!({"msg": "x".repeat(100)})).await;
    match o.result {
        Err(CallFailure::Limit(LimitHit::Output { limit: 64, .. })) => {}
        other => panic!("{other:?}"),
    }
    let o = call(&hello, "types#echo-string", json!({"v": "y".repeat(100)})).await;
    assert_eq!(
        o.result,
        Err(CallFailure::Limit(LimitHit::Output {
            stream: "result",
            limit: 64
        }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit() {
    let rt = runtime();
    let spin = load(
        &rt,
        "spin",
        "[limits]\nmax_concurrent = 1\ntimeout_ms = 60000\nfuel = 1000000000000000\n",
    );
    let (observer, mut stdout) = stdout_events();
    let cancel = tessera_runtime::CancellationToken::new();
    let options = tessera_runtime::CallOptions {
        observer: Some(observer),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let first = {
        let spin = spin.clone();
        tokio::spawn(async move {
            spin.call_json_with("ticker", &json!({"every": 1_000_000}), options)
                .await
        })
    };
    // The first tick: the first call is running, so it holds the one slot.
    next_stdout(&mut stdout).await;
    match spin.call_json("count", &json!({"n": 1})).await {
        Err(Error::Busy { limit: 1 }) => {}
        other => panic!("expected Busy, got {other:?}"),
    }
    cancel.cancel();
    assert_eq!(
        first.await.unwrap().unwrap().result,
        Err(CallFailure::Cancelled)
    );
    // Once the first call is done, the slot is free again.
    assert!(call(&spin, "count", json!({"n": 1})).await.result.is_ok());
}

// ---------------------------------------------------------------- cache

/// A runtime with its compile cache in `dir`.
fn cached_runtime(dir: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[test]
fn compile_cache_hit_miss_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let make = || cached_runtime(dir.path());
    let rt = make();
    let path = component("hello");
    let first = rt.load_file(&path, grants("")).unwrap();
    assert_eq!(first.cache_status(), &CacheStatus::Miss);
    let second = make().load_file(&path, grants("")).unwrap();
    assert_eq!(second.cache_status(), &CacheStatus::Hit);

    let entry = rt.cache().unwrap().entry_path(first.digest());
    // Flip one byte in the payload: detected, recompiled, replaced.
    let mut bytes = std::fs::read(&entry).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let third = make().load_file(&path, grants("")).unwrap();
    assert!(
        matches!(third.cache_status(), CacheStatus::Rejected(r) if r.contains("checksum")),
        "{:?}",
        third.cache_status()
    );
    assert_eq!(
        make().load_file(&path, grants("")).unwrap().cache_status(),
        &CacheStatus::Hit
    );

    // Truncated entry.
    std::fs::write(&entry, &bytes[..40]).unwrap();
    assert!(matches!(
        make().load_file(&path, grants("")).unwrap().cache_status(),
        CacheStatus::Rejected(_)
    ));

    // A valid entry of another component copied over this one: foreign.
    let spin = make().load_file(&component("spin"), grants("")).unwrap();
    let spin_entry = rt.cache().unwrap().entry_path(spin.digest());
    std::fs::copy(&spin_entry, &entry).unwrap();
    let c = make().load_file(&path, grants("")).unwrap();
    assert!(
        matches!(c.cache_status(), CacheStatus::Rejected(r) if r.contains("another component")),
        "{:?}",
        c.cache_status()
    );
    // And the component still works after all this.
    let rt2 = make();
    let hello = rt2.load_file(&path, grants("")).unwrap();
    let out = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(hello.call_json("greet", &json!({"name": "cache"})))
        .unwrap();
    assert_eq!(out.result.unwrap(), json!("Hello, cache!"));
}

/// The doc comments of a component are kept with its compiled artifact:
/// a load from the cache describes its functions as the compile did, from
/// the entry's notes (not the bytes), and an entry of the previous format,
/// which has no notes, still loads and reads them from the bytes.
#[test]
fn compile_cache_keeps_the_doc_comments() {
    let dir = tempfile::tempdir().unwrap();
    let make = || cached_runtime(dir.path());
    let docs = |c: &tessera_runtime::LoadedComponent| -> Vec<(String, Option<String>)> {
        c.functions()
            .iter()
            .map(|f| (f.qualified_name(), f.docs.clone()))
            .collect()
    };
    let path = component("hello");
    let compiled = make().load_file(&path, grants("")).unwrap();
    assert_eq!(compiled.cache_status(), &CacheStatus::Miss);
    let greet = compiled.function("greet").unwrap();
    assert!(
        greet.docs.as_deref().is_some_and(|d| !d.is_empty()),
        "hello's greet has a doc comment: {:?}",
        greet.docs
    );
    let hit = make().load_file(&path, grants("")).unwrap();
    assert_eq!(hit.cache_status(), &CacheStatus::Hit);
    assert_eq!(docs(&hit), docs(&compiled));

    // The notes are what a hit reads: rewrite them and the docs follow.
    let rt = make();
    let cache = rt.cache().unwrap().clone();
    let artifact =
        wasmtime::component::Component::from_binary(rt.engine(), &std::fs::read(&path).unwrap())
            .unwrap();
    let notes = json!({"docs_version": 1, "docs": [
        {"interface": null, "function": "greet", "text": "Kept in the cache."}
    ]});
    cache
        .store(compiled.digest(), &artifact, notes.to_string().as_bytes())
        .unwrap();
    let from_notes = make().load_file(&path, grants("")).unwrap();
    assert_eq!(from_notes.cache_status(), &CacheStatus::Hit);
    assert_eq!(
        from_notes.function("greet").unwrap().docs.as_deref(),
        Some("Kept in the cache.")
    );

    // An entry of the previous format: header without a notes length, no
    // notes. Still a hit, with the docs read from the bytes.
    let payload = artifact.serialize().unwrap();
    let mut old = b"tessera-cwasm-2\n".to_vec();
    let hex = compiled.digest().strip_prefix("sha256:").unwrap();
    old.extend((0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()));
    {
        use sha2::Digest as _;
        old.extend(sha2::Sha256::digest(&payload));
    }
    old.extend((payload.len() as u64).to_le_bytes());
    old.extend(&payload);
    std::fs::write(cache.entry_path(compiled.digest()), &old).unwrap();
    let from_old = make().load_file(&path, grants("")).unwrap();
    assert_eq!(from_old.cache_status(), &CacheStatus::Hit);
    assert_eq!(docs(&from_old), docs(&compiled));
}

/// Many writers and readers of one entry at once, as several processes
/// sharing the per-user cache are: every write succeeds, a reader finds no
/// entry or a whole valid one (never a partial file), and no temporary file
/// is left behind.
#[test]
fn compile_cache_is_safe_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let prepared = rt.prepare_file(&component("hello")).unwrap();
    let compiled =
        wasmtime::component::Component::from_binary(rt.engine(), &prepared.component_bytes)
            .unwrap();
    let cache = rt.cache().unwrap().clone();
    let writers = 6;
    let start = std::sync::Barrier::new(writers + 2);
    let writing = std::sync::atomic::AtomicUsize::new(writers);
    let (found, missing) = std::thread::scope(|s| {
        for _ in 0..writers {
            s.spawn(|| {
                start.wait();
                for _ in 0..15 {
                    cache
                        .store(&prepared.digest, &compiled, b"notes")
                        .expect("a concurrent write fails");
                }
                writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let (mut found, mut missing) = (0, 0);
                    while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                        match cache.load(rt.engine(), &prepared.digest) {
                            Ok(Some(c)) => {
                                assert_eq!(c.notes, b"notes", "notes lost or mixed up");
                                found += 1;
                            }
                            Ok(None) => missing += 1,
                            Err(reason) => panic!("a reader saw a bad entry: {reason}"),
                        }
                    }
                    (found, missing)
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    assert!(found + missing > 0, "the readers never read");
    let left: Vec<_> = std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec![format!(
            "{}.cwasm",
            prepared.digest.trim_start_matches("sha256:")
        )],
        "only the entry remains"
    );
    let again = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap()
    .load_file(&component("hello"), grants(""))
    .unwrap();
    assert_eq!(again.cache_status(), &CacheStatus::Hit);
}

/// Runtimes on several threads compiling the same component into one
/// cache at once all succeed; the entry they leave is then used.
#[test]
fn runtimes_compiling_the_same_component_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let make = || {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            pooling: false,
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    let n = 4;
    let start = std::sync::Barrier::new(n);
    let statuses: Vec<CacheStatus> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let rt = make();
                    start.wait();
                    let c = rt.load_file(&component("spin"), grants("")).unwrap();
                    c.cache_status().clone()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses
            .iter()
            .all(|s| matches!(s, CacheStatus::Miss | CacheStatus::Hit)),
        "{statuses:?}"
    );
    assert_eq!(
        make()
            .load_file(&component("spin"), grants(""))
            .unwrap()
            .cache_status(),
        &CacheStatus::Hit
    );
}

// ---------------------------------------------------------------- loading

#[tokio::test]
async fn wasip1_core_module_runs_through_the_adapter() {
    let rt = runtime();
    let m = load(
        &rt,
        "p1-command",
        "args = [\"one\", \"two\"]\n[env]\nset = { GREETING = \"hi there\" }\n",
    );
    assert!(m.adapted());
    let o = call(&m, "run", json!({})).await;
    assert_eq!(o.result.clone().unwrap(), json!({"ok": null}));
    let out = String::from_utf8_lossy(&o.output.stdout).to_string();
    assert!(out.contains("hello from wasip1"), "{out}");
    assert!(out.contains("one") && out.contains("two"), "{out}");
    assert!(out.contains("hi there"), "{out}");
    // Denied case: no env granted.
    let bare = load(&rt, "p1-command", "");
    let out =
        String::from_utf8_lossy(&call(&bare, "run", json!({})).await.output.stdout).to_string();
    assert!(out.contains("GREETING unset"), "{out}");
    assert!(!out.contains("one"), "{out}");
}

#[test]
fn malformed_components_are_clear_errors() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").unwrap();
    let e = rt.load_file(&garbage, grants("")).unwrap_err();
    assert!(matches!(e, Error::NotWasm { .. }), "{e}");
    assert!(e.to_string().contains("garbage.wasm"), "{e}");

    let truncated = dir.path().join("truncated.wasm");
    let bytes = std::fs::read(component("hello")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = rt.load_file(&truncated, grants("")).unwrap_err();
    assert!(matches!(e, Error::Compile { .. }), "{e}");

    let missing = rt
        .load_file(&dir.path().join("missing.wasm"), grants(""))
        .unwrap_err();
    assert!(matches!(missing, Error::Read { .. }), "{missing}");
    // The runtime carries on.
    assert!(rt.load_file(&component("hello"), grants("")).is_ok());
}

// ---------------------------------------------------------------- HTTP grants

#[tokio::test]
async fn http_allowed_host_is_reached() {
    let server = TestServer::start("127.0.0.1");
    let rt = runtime();
    let fetch = load(
        &rt,
        "http-fetch",
        &format!(
            "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
            server.addr.port()
        ),
    );
    let o = call(&fetch, "fetch", json!({"url": server.url("/x")})).await;
    let r = o.result.unwrap();
    assert_eq!(r["ok"]["status"], json!(200));
    assert_eq!(r["ok"]["body"], json!("hello from /x"));
    assert_eq!(server.requests(), vec!["/x".to_string()]);
    let e = o.audit.iter().find(|e| e.capability == "http").unwrap();
    assert_eq!(e.decision, Decision::Allow);
}

#[tokio::test]
async fn http_denied_requests_never_leave_the_process() {
    let server = TestServer::start("127.0.0.1");
    let (rt, audit) = runtime_with_audit();
    let port = server.addr.port();
    // Nothing granted.
    let fetch = load(&rt, "http-fetch", "");
    let o = call(&fetch, "fetch", json!({"url": server.url("/denied")})).await;
    let r = o.result.clone().unwrap();
    assert!(
        r["err"].as_str().unwrap().contains("HttpRequestDenied"),
        "{r}"
    );
    assert!(o.denied());
    // Another port on the same host is not granted.
    let other_port = load(
        &rt,
        "http-fetch",
        &format!(
            "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
            port.wrapping_add(1)
        ),
    );
    assert!(
        call(&other_port, "fetch", json!({"url": server.url("/port")}))
            .await
            .denied()
    );
    // `localhost` granted does not grant the IP literal, and `*` does not
    // grant IP literals at all.
    let by_name = load(
        &rt,
        "http-fetch",
        "[http]\nallowed_outbound_hosts = [\"http://localhost:*\", \"http://*:*\"]\n",
    );
    assert!(
        call(&by_name, "fetch", json!({"url": server.url("/ip")}))
            .await
            .denied()
    );
    // A pattern without a port is the default port only.
    let no_port = load(
        &rt,
        "http-fetch",
        "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1\"]\n",
    );
    assert!(
        call(
            &no_port,
            "fetch",
            json!({"url": server.url("/default-port")})
        )
        .await
        .denied()
    );
    // Numeric spellings of 127.0.0.1 and names resolving to it are not
    // covered by a wildcard either.
    for host in ["127.1", "2130706433", "0x7f000001", "localhost."] {
        let url = format!("http://{host}:{port}/sneaky");
        let o = call(&by_name, "fetch", json!({"url": url})).await;
        assert!(o.denied(), "{url} was not denied: {:?}", o.result);
    }
    assert!(
        server.requests().is_empty(),
        "denied requests arrived: {:?}",
        server.requests()
    );
    let events = audit.take();
    let denials: Vec<_> = events
        .iter()
        .filter(|e| e.decision == Decision::Deny)
        .collect();
    assert_eq!(denials.len(), 8, "{events:?}");
    assert!(
        denials
            .iter()
            .all(|e| e.capability == "http" && e.target.contains("/"))
    );
}

#[tokio::test]
async fn redirects_to_non_listed_hosts_are_not_followed() {
    let allowed = TestServer::start("127.0.0.1");
    let other = TestServer::start("127.0.0.2");
    let rt = runtime();
    let manifest = format!(
        "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
        allowed.addr.port()
    );
    let net = load(&rt, "net-escape", &manifest);
    // Redirect within the allowed host: followed.
    let to_self = allowed.url(&format!("/redirect?to={}", allowed.url("/landed")));
    assert_eq!(
        call_ok(&net, "fetch-follow", json!({"url": to_self})).await,
        json!({"ok": 200})
    );
    // Redirect to a non-listed host: refused, and never arrives there.
    let away = allowed.url(&format!("/redirect?to={}", other.url("/stolen")));
    let o = call(&net, "fetch-follow", json!({"url": away})).await;
    assert!(
        o.result.unwrap()["err"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied")
    );
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    // The plain fetcher returns the 3xx and follows nothing.
    let fetch = load(&rt, "http-fetch", &manifest);
    let r = call_ok(
        &fetch,
        "fetch",
        json!({"url": allowed.url(&format!("/redirect?to={}", other.url("/x")))}),
    )
    .await;
    assert_eq!(r["ok"]["status"], json!(302));
    assert!(other.requests().is_empty());
}

#[tokio::test]
async fn raw_sockets_env_and_args_are_denied_unless_granted() {
    let server = TestServer::start("127.0.0.1");
    let rt = runtime();
    let net = load(&rt, "net-escape", "");
    let r = call_ok(
        &net,
        "tcp-connect",
        json!({"addr": server.addr.to_string()}),
    )
    .await;
    let err = r["err"].as_str().expect("tcp-connect must fail");
    assert!(err.contains("access-denied"), "{err}");
    assert_eq!(call_ok(&net, "read-env", json!({})).await, json!([]));
    // argv[0] is the function name; nothing else unless granted.
    assert_eq!(
        call_ok(&net, "read-args", json!({})).await,
        json!(["read-args"])
    );
    assert!(server.requests().is_empty());
    let granted = load(
        &rt,
        "net-escape",
        "args = [\"--flag\"]\n[env]\nset = { MODE = \"test\" }\n",
    );
    assert_eq!(
        call_ok(&granted, "read-env", json!({})).await,
        json!([["MODE", "test"]])
    );
    assert_eq!(
        call_ok(&granted, "read-args", json!({})).await,
        json!(["read-args", "--flag"])
    );
}

// ---------------------------------------------------------------- file grants

#[tokio::test]
async fn files_read_write_list_within_grants() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ro = dir.path().join("ro");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("fixed.txt"), "read me").unwrap();
    let manifest = format!(
        "[[files]]\nhost = \"{}\"\nguest = \"/data\"\nmode = \"rw\"\n\n[[files]]\nhost = \"{}\"\nguest = \"/ro\"\n",
        data.display(),
        ro.display()
    );
    let (rt, audit) = runtime_with_audit();
    let fs = load(&rt, "fs-tool", &manifest);
    assert_eq!(
        call_ok(
            &fs,
            "write",
            json!({"path": "/data/a.txt", "contents": "alpha"})
        )
        .await,
        json!({"ok": null})
    );
    assert_eq!(
        std::fs::read_to_string(data.join("a.txt")).unwrap(),
        "alpha"
    );
    assert_eq!(
        call_ok(&fs, "read", json!({"path": "/data/a.txt"})).await,
        json!({"ok": "alpha"})
    );
    assert_eq!(
        call_ok(&fs, "list", json!({"path": "/data"})).await,
        json!({"ok": ["a.txt"]})
    );
    assert_eq!(
        call_ok(&fs, "read", json!({"path": "/ro/fixed.txt"})).await,
        json!({"ok": "read me"})
    );
    // Read-only means read-only.
    let r = call_ok(
        &fs,
        "write",
        json!({"path": "/ro/new.txt", "contents": "x"}),
    )
    .await;
    assert!(r.get("err").is_some(), "{r}");
    let r = call_ok(
        &fs,
        "write",
        json!({"path": "/ro/fixed.txt", "contents": "x"}),
    )
    .await;
    assert!(r.get("err").is_some(), "{r}");
    assert!(!ro.join("new.txt").exists());
    let events = audit.take();
    assert!(
        events.iter().any(|e| e.capability == "files"
            && e.decision == Decision::Deny
            && e.target == "/ro/new.txt"),
        "{events:?}"
    );
    assert_eq!(
        std::fs::read_to_string(ro.join("fixed.txt")).unwrap(),
        "read me"
    );
    // No grant: nothing is visible.
    let bare = load(&rt, "fs-tool", "");
    let r = call_ok(&bare, "read", json!({"path": "/data/a.txt"})).await;
    assert!(r.get("err").is_some(), "{r}");
}

#[tokio::test]
async fn file_escapes_are_impossible() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "TOP SECRET").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), sandbox.join("link-out")).unwrap();
    std::os::unix::fs::symlink(dir.path(), sandbox.join("dir-out")).unwrap();
    let manifest = format!(
        "[[files]]\nhost = \"{}\"\nguest = \"/sandbox\"\nmode = \"rw\"\n",
        sandbox.display()
    );
    let (rt, audit) = runtime_with_audit();
    let esc = load(&rt, "fs-escape", &manifest);
    let secret_abs = dir.path().join("secret.txt").display().to_string();
    for path in [
        "/sandbox/../secret.txt",
        "/sandbox/../../etc/passwd",
        "/etc/passwd",
        secret_abs.as_str(),
        "/sandbox/link-out",
        "/sandbox/dir-out/secret.txt",
        "../secret.txt",
    ] {
        let r = call_ok(&esc, "attempt-read", json!({"path": path})).await;
        assert!(r.get("err").is_some(), "{path} was readable: {r}");
        assert!(!r.to_string().contains("TOP SECRET"));
    }
    let r = call_ok(
        &esc,
        "attempt-write",
        json!({"path": "/sandbox/../escaped.txt", "contents": "x"}),
    )
    .await;
    assert!(r.get("err").is_some(), "{r}");
    assert!(!dir.path().join("escaped.txt").exists());
    let r = call_ok(
        &esc,
        "attempt-write",
        json!({"path": "/sandbox/dir-out/escaped.txt", "contents": "x"}),
    )
    .await;
    assert!(r.get("err").is_some(), "{r}");
    assert!(!dir.path().join("escaped.txt").exists());
    // A symlink the guest creates pointing outside cannot be followed either.
    let _ = call(
        &esc,
        "attempt-symlink",
        json!({"target": "../secret.txt", "link": "/sandbox/made-link"}),
    )
    .await;
    let r = call_ok(&esc, "attempt-read", json!({"path": "/sandbox/made-link"})).await;
    assert!(r.get("err").is_some(), "{r}");
    let r = call_ok(&esc, "attempt-list", json!({"path": "/sandbox/.."})).await;
    assert!(r.get("err").is_some(), "{r}");
    // Every refusal that reached the host is an audit event naming the path.
    let events = audit.take();
    let denied: Vec<&str> = events
        .iter()
        .filter(|e| e.capability == "files" && e.decision == Decision::Deny)
        .map(|e| e.target.as_str())
        .collect();
    for path in [
        "/sandbox/../secret.txt",
        "/sandbox/link-out",
        "/sandbox/dir-out/secret.txt",
        "/sandbox/../escaped.txt",
    ] {
        assert!(
            denied.contains(&path),
            "no audit event for {path}: {denied:?}"
        );
    }
    // Allowed case through the same component.
    std::fs::write(sandbox.join("inside.txt"), "fine").unwrap();
    assert_eq!(
        call_ok(&esc, "attempt-read", json!({"path": "/sandbox/inside.txt"})).await,
        json!({"ok": "fine"})
    );
    assert!(audit.take().iter().all(|e| e.decision != Decision::Deny));
}

// ---------------------------------------------------------------- gateway

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl tessera_runtime::gateway::InteractionObserver for Recorder {
    fn observe(
        &self,
        scope: &tessera_runtime::gateway::CallScope,
        _index: u64,
        step: &tessera_runtime::gateway::Recorded,
    ) {
        let step = &step.to_step();
        let text = |v: &Value| {
            String::from_utf8_lossy(&hex::decode(v.as_str().unwrap_or_default()).unwrap())
                .into_owned()
        };
        let (req, resp) = (&step.request, &step.response);
        let kind = match (&*step.capability, &*step.op) {
            ("clocks", op) => op.to_string(),
            ("random", "bytes") => format!("random:{}", req["len"]),
            ("stdio", stream) => format!("{stream}:{}", text(req)),
            ("logging", _) => format!("log:{}", req["message"].as_str().unwrap()),
            ("http", _) => format!("http:{}:{}", req["uri"].as_str().unwrap(), resp["allowed"]),
            ("files", "fd") => format!(
                "fd:{}:{}",
                req["op"].as_str().unwrap(),
                req["path"].as_str().unwrap()
            ),
            ("files", "path") => format!(
                "file:{}:{}:{}",
                req["op"].as_str().unwrap(),
                req["path"].as_str().unwrap(),
                resp["allowed"]
            ),
            ("env", "environment") => format!("env:{resp}"),
            (cap, op) => format!("{cap}.{op}"),
        };
        self.0
            .lock()
            .unwrap()
            .push(format!("{}|{kind}", scope.function));
    }
}

#[tokio::test]
async fn the_gateway_reports_every_interaction_to_the_observer() {
    let recorder = std::sync::Arc::new(Recorder::default());
    let rt = Runtime::new(RuntimeConfig {
        observer: Some(recorder.clone()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let hello = load(&rt, "hello", "");
    call_ok(&hello, "chatter", json!({"msg": "obs"})).await;
    let net = load(&rt, "net-escape", "[env]\nset = { K = \"v\" }\n");
    call_ok(&net, "read-env", json!({})).await;
    let secs = call_ok(&net, "wall-clock", json!({}))
        .await
        .as_u64()
        .unwrap();
    assert!(secs > 1_700_000_000);
    call_ok(
        &net,
        "fetch-status",
        json!({"url": "http://127.0.0.1:9/nope"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fs = load(
        &rt,
        "fs-tool",
        &format!(
            "[[files]]\nhost = \"{}\"\nguest = \"/d\"\n",
            dir.path().display()
        ),
    );
    call_ok(&fs, "read", json!({"path": "/d/missing.txt"})).await;
    let rw = load(
        &rt,
        "fs-tool",
        &format!(
            "[[files]]\nhost = \"{}\"\nguest = \"/d\"\nmode = \"rw\"\n",
            dir.path().display()
        ),
    );
    call_ok(
        &rw,
        "write",
        json!({"path": "/d/new.txt", "contents": "abc"}),
    )
    .await;
    call_ok(&rw, "read", json!({"path": "/d/new.txt"})).await;
    let seen = recorder.0.lock().unwrap().clone();
    // Reads and writes on open descriptors are steps too.
    assert!(
        seen.iter()
            .any(|s| s.starts_with("write|fd:") && s.ends_with(":/d/new.txt")),
        "no descriptor write step in {seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.starts_with("read|fd:") && s.ends_with(":/d/new.txt")),
        "no descriptor read step in {seen:#?}"
    );
    assert!(seen.iter().any(|s| s == "read|files.preopens"), "{seen:#?}");
    // Unbuffered stderr may arrive in several writes: join them.
    let stderr: String = seen
        .iter()
        .filter_map(|s| s.strip_prefix("chatter|stderr:"))
        .collect();
    assert_eq!(stderr, "stderr: obs\n");
    for expected in [
        "chatter|stdout:stdout: obs\n",
        "chatter|log:obs",
        "wall-clock|wall-clock",
        "read-env|env:[[\"K\",\"v\"]]",
        "fetch-status|http:http://127.0.0.1:9/nope:false",
        "read|file:open:/d/missing.txt:true",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "missing `{expected}` in {seen:#?}"
        );
    }
}

#[tokio::test]
async fn falls_back_to_on_demand_allocation_when_the_pool_cannot_be_reserved() {
    // A pool this large cannot be reserved in a 47-bit address space.
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 100_000_000,
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert!(!rt.pooling());
    let hello = load(&rt, "hello", "");
    assert_eq!(
        call_ok(&hello, "greet", json!({"name": "x"})).await,
        json!("Hello, x!")
    );
    assert!(
        runtime().pooling(),
        "the default pool should be available here"
    );
}

// ---------------------------------------------------------------- determinism

#[tokio::test]
async fn deterministic_mode_reproduces_clocks_and_random() {
    let rt = runtime();
    let seeded = load(&rt, "net-escape", "deterministic = true\nseed = 42\n");
    let a = call_ok(&seeded, "entropy", json!({})).await;
    let b = call_ok(&seeded, "entropy", json!({})).await;
    assert_eq!(a, b, "same seed, same inputs: same values");
    let other = load(&rt, "net-escape", "deterministic = true\nseed = 43\n");
    let c = call_ok(&other, "entropy", json!({})).await;
    assert_ne!(a[0], c[0], "another seed gives other random numbers");
    // Virtual time starts at 2024-01-01 and advances with fuel.
    let wall_ns = a[3].as_u64().unwrap();
    assert!(
        (1_704_067_200_000_000_000..1_704_067_201_000_000_000).contains(&wall_ns),
        "{wall_ns}"
    );
    assert!(a[2].as_u64().unwrap() < wall_ns - 1_704_067_200_000_000_000 + 1);
    // Live mode is not deterministic.
    let live = load(&rt, "net-escape", "");
    assert_ne!(
        call_ok(&live, "entropy", json!({})).await[0],
        call_ok(&live, "entropy", json!({})).await[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_deadlines_are_fuel_deadlines() {
    let rt = runtime();
    // A deterministic call is held at its first tick until its wall-clock
    // deadline has surely passed; released, it must still end on fuel.
    let manifest = "deterministic = true\n[limits]\ntimeout_ms = 100\nfuel = 300000000\n";
    let ticker = load(&rt, "spin", manifest);
    let (observer, mut held_at, release) = HoldAtFirstStdout::new();
    let options = tessera_runtime::CallOptions {
        observer: Some(observer),
        ..Default::default()
    };
    let held = {
        let ticker = ticker.clone();
        tokio::spawn(async move {
            ticker
                .call_json_with("ticker", &json!({"every": 100_000}), options)
                .await
        })
    };
    next_stdout(&mut held_at).await;
    // A live call started now, with a deadline longer than the held call's
    // (and than any grace after it), is stopped by it: by then the held
    // call is past its own.
    let live = load(
        &rt,
        "spin",
        "[limits]\ntimeout_ms = 500\nfuel = 1000000000000000\n",
    );
    assert_eq!(
        call(&live, "spin", json!({})).await.result,
        Err(CallFailure::Limit(LimitHit::Deadline(500)))
    );
    release.send(()).unwrap();
    let o = held.await.unwrap().unwrap();
    assert_eq!(
        o.result,
        Err(CallFailure::Limit(LimitHit::Fuel(300_000_000)))
    );
    // Not held, the same call consumes the same fuel and prints the same.
    let o2 = call(&ticker, "ticker", json!({"every": 100_000})).await;
    assert_eq!(o2.result, o.result);
    assert_eq!(o.fuel_consumed, o2.fuel_consumed);
    assert_eq!(o.output.stdout, o2.output.stdout);
}

/// Holds the guest in its first write to stdout (the observer runs in the
/// guest's host call) until released, after reporting that write.
struct HoldAtFirstStdout {
    reached: tokio::sync::mpsc::UnboundedSender<String>,
    release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl HoldAtFirstStdout {
    #[allow(clippy::type_complexity)]
    fn new() -> (
        std::sync::Arc<Self>,
        tokio::sync::mpsc::UnboundedReceiver<String>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (reached, reached_rx) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let hold = Self {
            reached,
            release: std::sync::Mutex::new(Some(release_rx)),
        };
        (std::sync::Arc::new(hold), reached_rx, release)
    }
}

impl tessera_runtime::gateway::InteractionObserver for HoldAtFirstStdout {
    fn observe(
        &self,
        _scope: &tessera_runtime::gateway::CallScope,
        _index: u64,
        i: &tessera_runtime::gateway::Recorded,
    ) {
        let Some(bytes) = stdout_bytes(&i.to_step()) else {
            return;
        };
        let Some(release) = self.release.lock().unwrap().take() else {
            return;
        };
        let _ = self
            .reached
            .send(String::from_utf8_lossy(&bytes).into_owned());
        // Bounded only against a hang: the test releases it.
        let _ = release.recv_timeout(EVENT_WAIT);
    }
}

// ---------------------------------------------------------------- capabilities

fn runtime_with_host(
    host: tessera_runtime::HostConfig,
) -> (Runtime, std::sync::Arc<tessera_runtime::audit::MemoryAudit>) {
    let audit = std::sync::Arc::new(tessera_runtime::audit::MemoryAudit::default());
    let rt = Runtime::new(RuntimeConfig {
        audit: audit.clone(),
        host,
        ..RuntimeConfig::default()
    })
    .unwrap();
    (rt, audit)
}

#[tokio::test]
async fn wasi_config_values_come_from_the_manifest_and_secrets_from_the_host() {
    let mut host = tessera_runtime::HostConfig::default();
    host.secrets.insert("api_key".into(), "k-123".into());
    host.secrets.insert("not_granted".into(), "hidden".into());
    let (rt, _) = runtime_with_host(host);
    let manifest = "[config]\nvalues = { model = \"small\" }\nsecrets = [\"api_key\"]\n";
    let c = load(&rt, "config-tool", manifest);
    assert_eq!(
        call_ok(&c, "get", json!({"key": "model"})).await,
        json!({"ok": "small"})
    );
    assert_eq!(
        call_ok(&c, "get", json!({"key": "api_key"})).await,
        json!({"ok": "k-123"})
    );
    // A secret the host has but the manifest does not name stays invisible.
    assert_eq!(
        call_ok(&c, "get", json!({"key": "not_granted"})).await,
        json!({"ok": null})
    );
    assert_eq!(
        call_ok(&c, "get-all", json!({})).await,
        json!({"ok": [["api_key", "k-123"], ["model", "small"]]})
    );
    // Without a [config] grant the component sees nothing.
    let bare = load(&rt, "config-tool", "");
    assert_eq!(
        call_ok(&bare, "get-all", json!({})).await,
        json!({"ok": []})
    );
}

#[tokio::test]
async fn a_secret_the_host_does_not_provide_fails_the_load_naming_the_field() {
    let (rt, _) = runtime_with_host(tessera_runtime::HostConfig::default());
    let e = rt
        .load_file(
            &component("config-tool"),
            grants("[config]\nsecrets = [\"api_key\"]\n"),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Bind { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("config.secrets[0]") && msg.contains("api_key"),
        "{msg}"
    );
}

/// A runtime whose buckets live in an embedded store in `dir`.
fn runtime_with_store(
    dir: &Path,
) -> (Runtime, std::sync::Arc<tessera_runtime::audit::MemoryAudit>) {
    let host = tessera_runtime::HostConfig {
        stores: Some(std::sync::Arc::new(tessera_store::Stores::new(
            tessera_store::StoreSettings::default(),
            dir,
        ))),
        ..Default::default()
    };
    runtime_with_host(host)
}

#[tokio::test]
async fn wasi_keyvalue_store_atomics_and_batch_on_a_granted_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, audit) = runtime_with_store(dir.path());
    let kv = load(&rt, "kv-tool", "[keyvalue]\nbuckets = [\"notes\"]\n");
    let ok = |v: Value| json!({ "ok": v });
    let n = |k: &str| json!({"bucket": "notes", "key": k});
    assert_eq!(call_ok(&kv, "get", n("a")).await, ok(json!(null)));
    assert_eq!(call_ok(&kv, "exists", n("a")).await, ok(json!(false)));
    call_ok(
        &kv,
        "set",
        json!({"bucket": "notes", "key": "a", "value": "one"}),
    )
    .await;
    assert_eq!(call_ok(&kv, "get", n("a")).await, ok(json!("one")));
    assert_eq!(call_ok(&kv, "exists", n("a")).await, ok(json!(true)));
    // Counters: absent counts as 0; negative deltas; a value that is not a
    // number is the guest's error, not a trap.
    let inc = |k: &str, d: i64| json!({"bucket": "notes", "key": k, "delta": d});
    assert_eq!(call_ok(&kv, "increment", inc("c", 5)).await, ok(json!(5)));
    assert_eq!(call_ok(&kv, "increment", inc("c", -7)).await, ok(json!(-2)));
    let e = call_ok(&kv, "increment", inc("a", 1)).await;
    assert!(
        e["err"].as_str().unwrap().contains("not a decimal integer"),
        "{e}"
    );
    // Compare-and-swap through a cas handle.
    let app = |s: &str| json!({"bucket": "notes", "key": "log", "suffix": s});
    assert_eq!(call_ok(&kv, "append", app("x")).await, ok(json!("x")));
    assert_eq!(call_ok(&kv, "append", app("y")).await, ok(json!("xy")));
    // Batch.
    call_ok(
        &kv,
        "set-many",
        json!({"bucket": "notes", "entries": [["b1", "B1"], ["b2", "B2"]]}),
    )
    .await;
    assert_eq!(
        call_ok(
            &kv,
            "get-many",
            json!({"bucket": "notes", "keys": ["b1", "zz", "b2"]})
        )
        .await,
        ok(json!(["B1", null, "B2"]))
    );
    assert_eq!(
        call_ok(&kv, "keys", json!({"bucket": "notes"})).await,
        ok(json!(["a", "b1", "b2", "c", "log"]))
    );
    call_ok(
        &kv,
        "delete-many",
        json!({"bucket": "notes", "keys": ["b1", "b2"]}),
    )
    .await;
    call_ok(&kv, "delete", n("a")).await;
    assert_eq!(
        call_ok(&kv, "keys", json!({"bucket": "notes"})).await,
        ok(json!(["c", "log"]))
    );
    // What the guest wrote is in the store for anyone to read.
    let store = tessera_store::Embedded::open(&dir.path().join("store.redb"));
    // The runtime's store holds the file: a second opener is told so.
    let e = store.unwrap_err().to_string();
    assert!(e.contains("another process"), "{e}");
    assert!(audit.take().iter().any(|e| e.capability == "keyvalue"
        && e.target == "notes"
        && e.decision == Decision::Allow));
}

#[tokio::test]
async fn wasi_keyvalue_denies_ungranted_buckets_and_writes_to_read_only_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, audit) = runtime_with_store(dir.path());
    let writer = load(&rt, "kv-tool", "[keyvalue]\nbuckets = [\"shared\"]\n");
    call_ok(
        &writer,
        "set",
        json!({"bucket": "shared", "key": "k", "value": "v"}),
    )
    .await;
    let reader = load(&rt, "kv-tool", "[keyvalue]\nbuckets = [\"shared:ro\"]\n");
    // Allowed: reading a read-only bucket.
    assert_eq!(
        call_ok(&reader, "get", json!({"bucket": "shared", "key": "k"})).await,
        json!({"ok": "v"})
    );
    audit.take();
    // Denied: writing it, in every way.
    for (f, args) in [
        ("set", json!({"bucket": "shared", "key": "k", "value": "w"})),
        ("delete", json!({"bucket": "shared", "key": "k"})),
        (
            "increment",
            json!({"bucket": "shared", "key": "n", "delta": 1}),
        ),
        (
            "append",
            json!({"bucket": "shared", "key": "k", "suffix": "w"}),
        ),
        (
            "set-many",
            json!({"bucket": "shared", "entries": [["k", "w"]]}),
        ),
        ("delete-many", json!({"bucket": "shared", "keys": ["k"]})),
    ] {
        let r = call_ok(&reader, f, args).await;
        assert!(
            r["err"].as_str().unwrap().contains("access denied"),
            "{f}: {r}"
        );
    }
    let denied = audit.take();
    assert_eq!(
        denied
            .iter()
            .filter(|e| e.capability == "keyvalue" && e.decision == Decision::Deny)
            .count(),
        6,
        "{denied:?}"
    );
    assert_eq!(
        call_ok(&reader, "get", json!({"bucket": "shared", "key": "k"})).await,
        json!({"ok": "v"}),
        "a denied write changed the value"
    );
    audit.take();
    // Denied: a bucket that is not granted at all (and nothing granted).
    for c in [&reader, &load(&rt, "kv-tool", "")] {
        let r = call_ok(c, "get", json!({"bucket": "other", "key": "k"})).await;
        assert!(r["err"].as_str().unwrap().contains("access denied"), "{r}");
    }
    let events = audit.take();
    assert!(
        events
            .iter()
            .all(|e| e.decision == Decision::Deny && e.target == "other")
            && events.len() == 2,
        "{events:?}"
    );
    assert!(
        events[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("[keyvalue] buckets")
    );
    // A host without a store answers an error, not a trap.
    let (bare, _) = runtime_with_host(tessera_runtime::HostConfig::default());
    let c = load(&bare, "kv-tool", "[keyvalue]\nbuckets = [\"shared\"]\n");
    let r = call_ok(&c, "get", json!({"bucket": "shared", "key": "k"})).await;
    assert!(
        r["err"].as_str().unwrap().contains("no key-value store"),
        "{r}"
    );
}

#[tokio::test]
async fn wasi_keyvalue_increments_from_concurrent_calls_lose_none() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = runtime_with_store(dir.path());
    let kv = std::sync::Arc::new(load(&rt, "kv-tool", "[keyvalue]\nbuckets = [\"n\"]\n"));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            call_ok(
                &kv,
                "increment",
                json!({"bucket": "n", "key": "hits", "delta": 1}),
            )
            .await;
            call_ok(
                &kv,
                "append",
                json!({"bucket": "n", "key": "log", "suffix": "x"}),
            )
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        call_ok(&kv, "get", json!({"bucket": "n", "key": "hits"})).await,
        json!({"ok": "40"})
    );
    assert_eq!(
        call_ok(&kv, "get", json!({"bucket": "n", "key": "log"})).await,
        json!({"ok": "x".repeat(40)})
    );
}

#[tokio::test]
async fn wasi_keyvalue_on_nats_jetstream_store_atomics_batch_and_concurrent_increments() {
    let nats = tessera_test_support::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let settings = tessera_store::StoreSettings::from_toml(
        &format!(
            "[store]\ndefault = \"nats\"\n[store.nats]\nurl = \"{}\"\nprefix = \"rt\"\n",
            nats.url()
        ),
        "test settings",
    )
    .unwrap();
    let host = tessera_runtime::HostConfig {
        stores: Some(std::sync::Arc::new(tessera_store::Stores::new(
            settings,
            dir.path(),
        ))),
        ..Default::default()
    };
    let (rt, _) = runtime_with_host(host);
    let kv = std::sync::Arc::new(load(&rt, "kv-tool", "[keyvalue]\nbuckets = [\"notes\"]\n"));
    call_ok(
        &kv,
        "set",
        json!({"bucket": "notes", "key": "a b", "value": "one"}),
    )
    .await;
    assert_eq!(
        call_ok(&kv, "get", json!({"bucket": "notes", "key": "a b"})).await,
        json!({"ok": "one"})
    );
    call_ok(
        &kv,
        "set-many",
        json!({"bucket": "notes", "entries": [["x", "X"], ["y", "Y"]]}),
    )
    .await;
    assert_eq!(
        call_ok(
            &kv,
            "get-many",
            json!({"bucket": "notes", "keys": ["x", "zz", "y"]})
        )
        .await,
        json!({"ok": ["X", null, "Y"]})
    );
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            call_ok(
                &kv,
                "increment",
                json!({"bucket": "notes", "key": "n", "delta": 1}),
            )
            .await;
            call_ok(
                &kv,
                "append",
                json!({"bucket": "notes", "key": "log", "suffix": "x"}),
            )
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        call_ok(&kv, "get", json!({"bucket": "notes", "key": "n"})).await,
        json!({"ok": "20"})
    );
    assert_eq!(
        call_ok(&kv, "get", json!({"bucket": "notes", "key": "log"})).await,
        json!({"ok": "x".repeat(20)})
    );
    call_ok(
        &kv,
        "delete-many",
        json!({"bucket": "notes", "keys": ["x", "y"]}),
    )
    .await;
    assert_eq!(
        call_ok(&kv, "keys", json!({"bucket": "notes"})).await,
        json!({"ok": ["a b", "log", "n"]})
    );
    // It is the NATS server that holds them: another client sees the
    // bucket (`rt_notes`) and the plain key.
    let client = tessera_store::Nats::connect(tessera_store::NatsOptions {
        url: nats.url().to_string(),
        prefix: "rt".into(),
        credentials: None,
    })
    .await
    .unwrap();
    use tessera_store::Store as _;
    assert_eq!(
        client.get("notes", "n").await.unwrap().map(|e| e.value),
        Some(b"20".to_vec())
    );
}

#[tokio::test]
async fn components_built_for_the_earlier_keyvalue_draft_share_buckets_with_draft_2() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, audit) = runtime_with_store(dir.path());
    let old = load(&rt, "kv-draft", "[keyvalue]\nbuckets = [\"notes\"]\n");
    let new = load(&rt, "kv-tool", "[keyvalue]\nbuckets = [\"notes\"]\n");
    call_ok(
        &old,
        "set",
        json!({"bucket": "notes", "key": "a", "value": "from draft"}),
    )
    .await;
    assert_eq!(
        call_ok(&new, "get", json!({"bucket": "notes", "key": "a"})).await,
        json!({"ok": "from draft"})
    );
    assert_eq!(
        call_ok(
            &old,
            "increment",
            json!({"bucket": "notes", "key": "n", "delta": 5})
        )
        .await,
        json!({"ok": 5})
    );
    // Draft 2 takes the counter below zero: the draft's unsigned increment
    // says so instead of wrapping.
    call_ok(
        &new,
        "increment",
        json!({"bucket": "notes", "key": "n", "delta": -9}),
    )
    .await;
    let r = call_ok(
        &old,
        "increment",
        json!({"bucket": "notes", "key": "n", "delta": 1}),
    )
    .await;
    assert!(r["err"].as_str().unwrap().contains("-3"), "{r}");
    // The numeric cursor pages through more than one page of keys.
    let many: Vec<(String, String)> = (0..2100)
        .map(|i| (format!("k{i:05}"), "v".to_string()))
        .collect();
    let back = call_ok(
        &old,
        "round-trip",
        json!({"bucket": "notes", "entries": many}),
    )
    .await;
    assert_eq!(back["ok"].as_array().unwrap().len(), 2100);
    let keys = call_ok(&old, "keys", json!({"bucket": "notes"})).await;
    let keys: Vec<&str> = keys["ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = (0..2100).map(|i| format!("k{i:05}")).collect();
    expected.extend(["a".to_string(), "n".to_string()]);
    expected.sort();
    assert_eq!(keys, expected);
    // Grants hold for the draft too.
    audit.take();
    let r = call_ok(&old, "get", json!({"bucket": "secret", "key": "a"})).await;
    assert!(r["err"].as_str().unwrap().contains("access denied"), "{r}");
    assert!(
        audit
            .take()
            .iter()
            .any(|e| e.capability == "keyvalue" && e.decision == Decision::Deny)
    );
}

#[test]
fn keyvalue_grants_name_the_bad_field() {
    for (toml, field) in [
        ("[keyvalue]\nbuckets = [\"a.b\"]\n", "keyvalue.buckets[0]"),
        (
            "[keyvalue]\nbuckets = [\"a\", \"a:ro\"]\n",
            "keyvalue.buckets[1]",
        ),
        ("[keyvalue]\nbuckets = [\"a:rx\"]\n", "keyvalue.buckets[0]"),
        ("[keyvalue]\nbucket = [\"a\"]\n", "keyvalue"),
    ] {
        let e = Grants::from_toml(toml, "m.toml", Path::new(".")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(field) && msg.contains("m.toml"),
            "{toml}: {msg}"
        );
    }
    let g = grants("[keyvalue]\nbuckets = [\"a\", \"b:ro\"]\n");
    assert!(g.effects().writes && g.effects().reads);
    let g = grants("[keyvalue]\nbuckets = [\"b:ro\"]\n");
    assert!(!g.effects().writes && g.effects().reads);
}

#[tokio::test]
async fn sockets_are_refused_by_the_gateway_with_an_audit_event() {
    let server = TestServer::start("127.0.0.1");
    let (rt, audit) = runtime_with_audit();
    let net = load(&rt, "net-escape", "");
    let o = call(
        &net,
        "tcp-connect",
        json!({"addr": server.addr.to_string()}),
    )
    .await;
    assert!(
        o.result.as_ref().unwrap()["err"]
            .as_str()
            .unwrap()
            .contains("create-tcp-socket failed: access-denied")
    );
    let events = audit.take();
    assert!(
        events.iter().any(|e| e.capability == "sockets"
            && e.decision == Decision::Deny
            && e.target == "tcp"),
        "{events:?}"
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn deterministic_timers_advance_virtual_time_instead_of_waiting() {
    let rt = runtime();
    let det = load(&rt, "net-escape", "deterministic = true\n");
    // A one-hour sleep: waiting would hit the default 10 s deadline, so the
    // call returning at all shows the timer did not wait on the host.
    let a = call_ok(&det, "sleep", json!({"ms": 3_600_000})).await;
    let b = call_ok(&det, "sleep", json!({"ms": 3_600_000})).await;
    assert!(a.as_u64().unwrap() >= 3_600_000_000_000, "{a}");
    assert_eq!(a, b, "deterministic runs must see the same time");
    // Live, the timer waits on the host clock.
    let live = load(&rt, "net-escape", "");
    let ns = call_ok(&live, "sleep", json!({"ms": 20})).await;
    assert!(ns.as_u64().unwrap() >= 20_000_000, "{ns}");
}

#[test]
fn every_capability_declares_its_effects_and_manifest_keys() {
    use tessera_runtime::capability::NAMES;
    for name in [
        "clocks", "random", "env", "stdio", "logging", "files", "http", "sockets", "config", "llm",
    ] {
        assert!(NAMES.contains(&name), "{name} is not registered: {NAMES:?}");
    }
    let e = Grants::from_toml("[kv]\n", "m.toml", Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown key `kv`") && e.contains("config"),
        "{e}"
    );
}

/// The WIT directory a dependency ships (`wit` under its source), found
/// through `cargo metadata`.
fn dependency_wit(package: &str, sub: &str) -> std::path::PathBuf {
    let rustc = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("host triple");
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("{package} is not a dependency"))["manifest_path"]
        .as_str()
        .unwrap()
        .to_string();
    Path::new(&manifest).parent().unwrap().join(sub)
}

#[test]
fn every_wasi_function_is_served_or_refused_by_the_gateway() {
    use tessera_runtime::capability::coverage::{Coverage, coverage};
    let mut missing = Vec::new();
    let mut unlisted = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    for (package, sub, world) in [
        ("wasmtime-wasi", "src/p2/wit", "wasmtime:wasi/bindings"),
        ("wasmtime-wasi-http", "wit", "wasmtime:wasi-http/bindings"),
    ] {
        let mut resolve = wit_parser::Resolve::default();
        let (pkg, _) = resolve.push_dir(dependency_wit(package, sub)).unwrap();
        let world = resolve
            .select_world(&[pkg], Some(world))
            .unwrap_or_else(|e| panic!("{world}: {e}"));
        for (_, item) in &resolve.worlds[world].imports {
            let wit_parser::WorldItem::Interface { id, .. } = item else {
                continue;
            };
            let iface = &resolve.interfaces[*id];
            let package = &resolve.packages[iface.package.unwrap()].name;
            let name = format!(
                "{}:{}/{}",
                package.namespace,
                package.name,
                iface.name.as_deref().unwrap_or("?")
            );
            let version = package
                .version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default();
            if !tessera_runtime::imports::PROVIDED
                .iter()
                .any(|p| p.interface == name && p.version == version)
            {
                unlisted.push(format!("{name}@{version}"));
            }
            for function in iface.functions.keys() {
                match coverage(&name, function) {
                    None => missing.push(format!("{name}#{function}")),
                    Some(c) => {
                        let kind = match c {
                            Coverage::Gateway(_) => "gateway",
                            Coverage::Refused(_) => "refused",
                            Coverage::Local(_) => "local",
                        };
                        *counts.entry(kind).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "host functions the gateway does not cover: {missing:#?}"
    );
    // The interfaces an unresolved import is checked against (see
    // `tessera_runtime::imports`) are exactly those linked.
    assert!(
        unlisted.is_empty(),
        "linked interfaces missing from imports::PROVIDED: {unlisted:#?}"
    );
    // Sanity: the walk saw the worlds (path and descriptor methods of the
    // filesystem alone are 27 gateway functions).
    assert!(counts["gateway"] >= 27 + 10, "{counts:?}");
    assert!(counts["refused"] >= 3, "{counts:?}");
}

// ---------------------------------------------------------------- tool curation

/// Which functions of `c` are served, by short name, in export order.
fn served(c: &tessera_runtime::LoadedComponent) -> Vec<String> {
    c.exposures()
        .filter(|(_, x)| x.served())
        .map(|(f, _)| f.short_name())
        .collect()
}

#[tokio::test]
async fn toolchain_internals_are_hidden_by_default_and_served_when_included() {
    let rt = runtime();
    // Defaults: componentize-py's initializer and, beside other functions,
    // `wasi:cli/run` are hidden.
    let c = load(&rt, "toolchain-exports", "");
    assert_eq!(served(&c), ["add", "sub"]);
    let hidden: Vec<(String, String)> = c
        .exposures()
        .filter_map(|(f, x)| x.hidden.as_ref().map(|h| (f.short_name(), h.to_string())))
        .collect();
    assert_eq!(hidden.len(), 2, "{hidden:?}");
    assert_eq!(hidden[0].0, "exports#init");
    assert!(hidden[0].1.contains("componentize-py"), "{hidden:?}");
    assert_eq!(hidden[1].0, "run#run");
    assert!(hidden[1].1.contains("wasi:cli/run"), "{hidden:?}");
    match c.served_function("exports#init") {
        Err(Error::NotServed { function, reason }) => {
            assert_eq!(function, "exports#init");
            assert!(reason.contains("tools.include"), "{reason}");
        }
        other => panic!("init served: {other:?}"),
    }
    // The runtime itself still calls it (and it traps, as componentize-py's does).
    let o = call(
        &c,
        "exports#init",
        json!({"app-name": "app", "symbols": [], "stub-wasi": false}),
    )
    .await;
    assert!(matches!(o.result, Err(CallFailure::Trap { .. })), "{o:?}");

    // Included, they are served; what `include` leaves out is not.
    let c = load(
        &rt,
        "toolchain-exports",
        "[tools]\ninclude = [\"add\", \"exports#init\", \"wasi:cli/run@0.2.0#run\"]\n",
    );
    assert_eq!(served(&c), ["add", "exports#init", "run#run"]);
    assert!(matches!(
        c.served_function("sub"),
        Err(Error::NotServed { .. })
    ));
    assert_eq!(c.served_function("run").unwrap().0.short_name(), "run#run");

    // A command whose only export is `run` serves it.
    let p1 = load(&rt, "p1-command", "");
    assert!(
        served(&p1).iter().any(|n| n == "run#run"),
        "{:?}",
        served(&p1)
    );
}

#[tokio::test]
async fn exclusions_and_overrides_apply_to_the_named_functions() {
    let rt = runtime();
    let c = load(
        &rt,
        "toolchain-exports",
        "[tools]\nexclude = [\"sub\"]\n\n[tools.functions.add]\ntitle = \"Add\"\n\
         description = \"  Adds two numbers.\\n\"\n",
    );
    assert_eq!(served(&c), ["add"]);
    let (_, add) = c.served_function("add").unwrap();
    assert_eq!(add.title.as_deref(), Some("Add"));
    assert_eq!(add.description.as_deref(), Some("Adds two numbers."));
    match c.served_function("sub") {
        Err(Error::NotServed { reason, .. }) => {
            assert!(reason.contains("tools.exclude"), "{reason}")
        }
        other => panic!("sub served: {other:?}"),
    }
    // An unknown name lists only what is served.
    match c.served_function("mul") {
        Err(Error::NoSuchFunction { available, .. }) => assert_eq!(available, "add"),
        other => panic!("{other:?}"),
    }
    // Curation is not a sandbox: the runtime calls an excluded function.
    assert_eq!(call_ok(&c, "sub", json!({"a": 5, "b": 2})).await, json!(3));
}

#[test]
fn a_tools_section_naming_no_export_is_a_load_error_naming_the_field() {
    let rt = runtime();
    // The error of parsing `toml` or, if it parses, of loading with it.
    let load_err = |toml: &str| match Grants::from_toml(toml, "test-manifest.toml", Path::new("."))
    {
        Err(e) => e.to_string(),
        Ok(g) => rt
            .load_file(&component("toolchain-exports"), g)
            .expect_err("loaded")
            .to_string(),
    };
    let e = load_err("[tools]\nexclude = [\"add\", \"substract\"]\n");
    assert!(
        e.contains("test-manifest.toml: field `tools.exclude[1]`")
            && e.contains("`substract`")
            && e.contains("available: add, sub"),
        "{e}"
    );
    let e = load_err("[tools]\ninclude = [\"nope\"]\n");
    assert!(e.contains("field `tools.include[0]`"), "{e}");
    let e = load_err("[tools.functions.\"exports#nope\"]\ntitle = \"x\"\n");
    assert!(
        e.contains("field `tools.functions.\"exports#nope\"`"),
        "{e}"
    );
    // Two names for one function.
    let e = load_err("[tools]\ninclude = [\"add\"]\nexclude = [\"add\"]\n");
    assert!(e.contains("field `tools.exclude[0]`"), "{e}");
    let e = load_err("[tools]\ninclude = [\"add\"]\nexclude = [\"sub\", \"add\"]\n");
    assert!(e.contains("tools.exclude[1]"), "{e}");
    // A description for a function that is not served would never show.
    let e = load_err("[tools]\nexclude = [\"sub\"]\n[tools.functions.sub]\ndescription = \"x\"\n");
    assert!(
        e.contains("field `tools.functions.sub`") && e.contains("excluded"),
        "{e}"
    );
    let e = load_err("[tools.functions.\"exports#init\"]\ndescription = \"x\"\n");
    assert!(e.contains("hidden by default"), "{e}");
    // An included function JSON cannot call.
    let hello = |toml: &str| {
        rt.load_file(&component("hello"), grants(toml))
            .expect_err("loaded")
            .to_string()
    };
    let e = hello("[tools]\ninclude = [\"greet\", \"types#make-counter\"]\n");
    assert!(
        e.contains("field `tools.include[1]`") && e.contains("not callable"),
        "{e}"
    );
    // Errors found when parsing, before any component is seen.
    for (toml, field) in [
        ("[tools]\nincluded = []\n", "tools"),
        ("[tools]\ninclude = [\"\"]\n", "tools.include[0]"),
        ("[tools]\nexclude = [\"a\", \"a\"]\n", "tools.exclude[1]"),
        ("[tools.functions.add]\n", "tools.functions.add"),
        (
            "[tools.functions.add]\ntitle = \" \"\n",
            "tools.functions.add.title",
        ),
        ("[tools.functions.add]\nsummary = \"x\"\n", "tools"),
    ] {
        let e = Grants::from_toml(toml, "m.toml", Path::new("."))
            .expect_err(toml)
            .to_string();
        assert!(e.contains(&format!("field `{field}`")), "{toml}: {e}");
    }
}

// ---------------------------------------------------------------- llm
//
// Tests use a scripted OpenAI-compatible server in place of a model
// (`tessera_test_support::ScriptedLlm`).

mod llm {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::{Value, json};
    use tessera_runtime::audit::MemoryAudit;
    use tessera_runtime::capability::llm::{LlmProviders, Provider};
    use tessera_runtime::gateway::{ReplaySource, Step};
    use tessera_runtime::{CallFailure, CallOptions, Decision, HostConfig, Runtime};
    use tessera_test_support::{Rule, ScriptedLlm};

    use super::common::*;
    use super::runtime_with_host;

    /// Grants the scripted provider's `gpt-test` (the default) and any
    /// other of its models.
    const GRANT: &str = "[llm]\nmodels = [\"scripted/gpt-test\", \"scripted/*\"]\n";

    fn providers(llm: &ScriptedLlm, configure: impl FnOnce(&mut Provider)) -> Arc<LlmProviders> {
        let mut p = Provider::new(llm.base_url());
        configure(&mut p);
        Arc::new(LlmProviders::new([("scripted".to_string(), p)].into()))
    }

    /// A runtime whose provider `scripted` is `llm`, adjusted by `configure`.
    fn llm_runtime(
        llm: &ScriptedLlm,
        configure: impl FnOnce(&mut Provider),
    ) -> (Runtime, Arc<MemoryAudit>) {
        runtime_with_host(HostConfig {
            llm: Some(providers(llm, configure)),
            ..Default::default()
        })
    }

    fn msg(role: &str, content: &str) -> Value {
        json!({"role": role, "content": content, "tool-calls": []})
    }

    fn request(messages: Vec<Value>) -> Value {
        json!({"request": {"messages": messages, "tools": [], "stop": []}})
    }

    fn ask(text: &str) -> Value {
        request(vec![msg("system", "You are terse."), msg("user", text)])
    }

    /// The `ok` of a `chat` result; panics on an error.
    fn ok(v: &Value) -> &Value {
        v.get("ok")
            .unwrap_or_else(|| panic!("expected a completion, got {v}"))
    }

    /// The `err` of a `chat` result; panics on a completion.
    fn err(v: &Value) -> &Value {
        v.get("err")
            .unwrap_or_else(|| panic!("expected an error, got {v}"))
    }

    fn chats(llm: &ScriptedLlm) -> Vec<Value> {
        llm.requests()
            .into_iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .map(|r| r.body)
            .collect()
    }

    #[tokio::test]
    async fn a_text_reply_with_its_usage_and_an_allow_event() {
        let llm = ScriptedLlm::start([Rule::text("Hello from the script.")]);
        let (rt, audit) = llm_runtime(&llm, |_| {});
        let c = load(&rt, "llm-probe", GRANT);
        let o = call(&c, "chat", ask("Say hello")).await;
        let v = o.result.clone().unwrap();
        let r = ok(&v);
        assert_eq!(r["message"]["role"], "assistant");
        assert_eq!(r["message"]["content"], "Hello from the script.");
        assert_eq!(r["finish-reason"], "stop");
        assert_eq!(r["model"], "scripted/gpt-test");
        // "You are terse." + "Say hello": 23 characters, 5 tokens; the
        // reply's 22 characters, 5 tokens.
        assert_eq!(
            r["usage"],
            json!({"prompt-tokens": 5, "completion-tokens": 5})
        );
        assert_eq!(o.usage.get("llm.prompt_tokens"), Some(&5));
        assert_eq!(o.usage.get("llm.completion_tokens"), Some(&5));
        let sent = chats(&llm);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["model"], "gpt-test");
        assert_eq!(
            sent[0]["messages"],
            json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}])
        );
        assert!(sent[0].get("tools").is_none() && sent[0].get("stream").is_none());
        assert_eq!(llm.requests()[0].authorization, None);
        let events = audit.take();
        assert!(
            events.iter().any(|e| e.capability == "llm"
                && e.decision == Decision::Allow
                && e.target == "scripted/gpt-test"),
            "{events:?}"
        );
        // A model named by its bare name resolves through the patterns.
        let mut q = ask("Say hello");
        q["request"]["model"] = json!("other-model");
        let v = call_ok(&c, "chat", q).await;
        assert_eq!(ok(&v)["model"], "scripted/other-model");
        assert_eq!(chats(&llm)[1]["model"], "other-model");
    }

    fn weather_tool() -> Value {
        json!({
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}"
        })
    }

    /// A conversation that asks for the weather with the tool offered.
    fn weather_question() -> Value {
        let mut q = ask("What is the weather in Oslo?");
        q["request"]["tools"] = json!([weather_tool()]);
        q
    }

    /// The same conversation after the tool call and its answer.
    fn weather_answered(call_id: &str) -> Value {
        let mut q = weather_question();
        let messages = q["request"]["messages"].as_array_mut().unwrap();
        messages.push(json!({
            "role": "assistant",
            "content": "",
            "tool-calls": [{"id": call_id, "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}],
        }));
        messages.push(json!({
            "role": "tool",
            "content": "{\"sky\":\"clear\"}",
            "tool-calls": [],
            "tool-call-id": call_id,
        }));
        q
    }

    fn weather_script() -> Vec<Rule> {
        vec![
            Rule::tool_call("get_weather", json!({"city": "Oslo"})).when("weather in Oslo"),
            Rule::text("It is clear in Oslo.").when("clear"),
        ]
    }

    /// Runs the two turns of the weather conversation; returns both answers.
    async fn weather(c: &tessera_runtime::LoadedComponent) -> (Value, Value) {
        let first = call_ok(c, "chat", weather_question()).await;
        let r = ok(&first);
        assert_eq!(r["finish-reason"], "tool_calls", "{first}");
        let calls = r["message"]["tool-calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["name"], "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(calls[0]["arguments"].as_str().unwrap()).unwrap(),
            json!({"city": "Oslo"})
        );
        let id = calls[0]["id"].as_str().unwrap().to_string();
        assert!(!id.is_empty());
        let second = call_ok(c, "chat", weather_answered(&id)).await;
        assert_eq!(ok(&second)["message"]["content"], "It is clear in Oslo.");
        assert_eq!(ok(&second)["finish-reason"], "stop");
        (first, second)
    }

    #[tokio::test]
    async fn tool_definitions_are_sent_and_tool_calls_come_back() {
        let llm = ScriptedLlm::start(weather_script());
        let (rt, _) = llm_runtime(&llm, |_| {});
        let c = load(&rt, "llm-probe", GRANT);
        weather(&c).await;
        let sent = chats(&llm);
        assert_eq!(
            sent[0]["tools"],
            json!([{"type": "function", "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            }}])
        );
        let m = &sent[1]["messages"];
        assert_eq!(m[2]["role"], "assistant");
        assert_eq!(m[2]["content"], Value::Null);
        assert_eq!(m[2]["tool_calls"][0]["type"], "function");
        assert_eq!(m[2]["tool_calls"][0]["function"]["name"], "get_weather");
        assert_eq!(m[3]["role"], "tool");
        assert_eq!(m[3]["tool_call_id"], m[2]["tool_calls"][0]["id"]);
        assert_eq!(m[3]["content"], "{\"sky\":\"clear\"}");
    }

    #[tokio::test]
    async fn a_streaming_provider_assembles_the_same_completions() {
        let plain = ScriptedLlm::start(weather_script());
        let (rt, _) = llm_runtime(&plain, |_| {});
        let expected = weather(&load(&rt, "llm-probe", GRANT)).await;
        let streamed = ScriptedLlm::start(weather_script());
        let (rt, _) = llm_runtime(&streamed, |p| p.stream = true);
        let c = load(&rt, "llm-probe", GRANT);
        assert_eq!(weather(&c).await, expected);
        let sent = chats(&streamed);
        assert!(
            sent.iter()
                .all(|b| b["stream"] == true && b["stream_options"]["include_usage"] == true),
            "{sent:?}"
        );
        // A long text arrives in many events, cut through lines.
        let long = "A fairly long answer, streamed in pieces of five characters each.";
        streamed.push([Rule::text(long)]);
        let v = call_ok(&c, "chat", ask("Tell me more")).await;
        assert_eq!(ok(&v)["message"]["content"], long);
        assert!(ok(&v)["usage"]["completion-tokens"].as_u64().unwrap() > 1);
    }

    #[tokio::test]
    async fn provider_failures_map_to_llm_errors() {
        let llm = ScriptedLlm::start([
            Rule::error(500, "the model is overloaded")
                .when("first")
                .once(),
            Rule::error(400, "context length exceeded")
                .when("second")
                .once(),
            Rule::text("too late")
                .when("slow")
                .after(Duration::from_secs(3)),
        ]);
        let (rt, audit) = llm_runtime(&llm, |p| p.timeout = Duration::from_millis(400));
        let c = load(&rt, "llm-probe", GRANT);
        let v = call_ok(&c, "chat", ask("first")).await;
        let m = err(&v)["unavailable"].as_str().unwrap();
        assert!(m.contains("500") && m.contains("overloaded"), "{m}");
        let v = call_ok(&c, "chat", ask("second")).await;
        let m = err(&v)["rejected"].as_str().unwrap();
        assert!(
            m.contains("400") && m.contains("context length exceeded"),
            "{m}"
        );
        let started = std::time::Instant::now();
        let v = call_ok(&c, "chat", ask("slow")).await;
        assert_eq!(err(&v), "timeout");
        assert!(started.elapsed() < Duration::from_secs(3));
        // A provider nobody listens on.
        let port = tessera_test_support::free_port();
        let (rt, _) = runtime_with_host(HostConfig {
            llm: Some(Arc::new(LlmProviders::new(
                [(
                    "scripted".to_string(),
                    Provider::new(format!("http://127.0.0.1:{port}/v1")),
                )]
                .into(),
            ))),
            ..Default::default()
        });
        let v = call_ok(&load(&rt, "llm-probe", GRANT), "chat", ask("hi")).await;
        assert!(
            err(&v)["unavailable"]
                .as_str()
                .unwrap()
                .contains("scripted"),
            "{v}"
        );
        // A host without providers loads the grant and answers `unavailable`.
        let (rt, _) = runtime_with_host(HostConfig::default());
        let v = call_ok(&load(&rt, "llm-probe", GRANT), "chat", ask("hi")).await;
        assert_eq!(
            err(&v)["unavailable"],
            "this host has no LLM providers configured"
        );
        // None of these is a denial.
        assert!(audit.take().iter().all(|e| e.decision != Decision::Deny));
    }

    #[tokio::test]
    async fn models_are_denied_unless_granted_with_an_audit_event() {
        let llm = ScriptedLlm::start([Rule::text("hi")]);
        let (rt, audit) = llm_runtime(&llm, |_| {});
        // Nothing granted.
        let none = load(&rt, "llm-probe", "");
        assert!(
            rt.load_file(&component("llm-probe"), grants(""))
                .unwrap()
                .grants()
                .effects()
                .read_only()
        );
        let mut q = ask("hello");
        q["request"]["model"] = json!("gpt-test");
        let o = call(&none, "chat", q.clone()).await;
        let v = o.result.clone().unwrap();
        assert!(
            err(&v)["denied"]
                .as_str()
                .unwrap()
                .contains("grants no model"),
            "{v}"
        );
        assert!(o.guest_error && o.denied());
        let events = audit.take();
        assert!(
            events.iter().any(|e| e.capability == "llm"
                && e.decision == Decision::Deny
                && e.target == "gpt-test"
                && e.detail.as_deref().unwrap().contains("[llm] models")),
            "{events:?}"
        );
        // A model outside the grant.
        let one = load(
            &rt,
            "llm-probe",
            "[llm]\nmodels = [\"scripted/gpt-test\"]\n",
        );
        assert!(one.grants().effects().network && one.grants().effects().external);
        q["request"]["model"] = json!("scripted/gpt-big");
        let v = call_ok(&one, "chat", q.clone()).await;
        assert!(
            err(&v)["denied"]
                .as_str()
                .unwrap()
                .contains("scripted/gpt-big"),
            "{v}"
        );
        let events = audit.take();
        assert!(
            events
                .iter()
                .any(|e| e.decision == Decision::Deny && e.target == "scripted/gpt-big"),
            "{events:?}"
        );
        assert_eq!(
            llm.request_count(),
            0,
            "a denied request reached the provider"
        );
        // Allowed: the granted one.
        q["request"]["model"] = json!("scripted/gpt-test");
        assert_eq!(
            ok(&call_ok(&one, "chat", q).await)["message"]["content"],
            "hi"
        );
        assert_eq!(llm.request_count(), 1);
    }

    #[test]
    fn llm_grants_and_bindings_name_the_bad_field() {
        for (manifest, field) in [
            ("[llm]\nmodels = [\"gpt-test\"]\n", "llm.models[0]"),
            ("[llm]\nmodels = [\"a/b\", \"a/\"]\n", "llm.models[1]"),
            ("[llm]\nmodels = [\"a/b\", \"a/b\"]\n", "llm.models[1]"),
            ("[llm]\nmodels = [\"a/b*\"]\n", "llm.models[0]"),
            ("[llm]\nmodel = [\"a/b\"]\n", "llm"),
            (
                "[llm]\nmax_tokens_per_call = 0\n",
                "llm.max_tokens_per_call",
            ),
        ] {
            let e =
                tessera_runtime::Grants::from_toml(manifest, "m.toml", std::path::Path::new("."))
                    .unwrap_err()
                    .to_string();
            assert!(e.contains(&format!("`{field}`")), "{manifest}: {e}");
        }
        let llm = ScriptedLlm::start([]);
        let (rt, _) = llm_runtime(&llm, |p| p.models = vec!["gpt-test".into()]);
        for (manifest, field) in [
            (
                "[llm]\nmodels = [\"scripted/gpt-test\", \"openai/gpt-4o\"]\n",
                "llm.models[1]",
            ),
            (
                "[llm]\nmodels = [\"scripted/gpt-other\"]\n",
                "llm.models[0]",
            ),
        ] {
            let e = rt
                .load_file(&component("llm-probe"), grants(manifest))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{manifest}: {e}");
        }
        rt.load_file(&component("llm-probe"), grants(GRANT))
            .unwrap();
    }

    #[tokio::test]
    async fn the_call_budget_caps_max_tokens() {
        let llm = ScriptedLlm::start([Rule::text("0123456789".repeat(10))]);
        let (rt, _) = llm_runtime(&llm, |_| {});
        let c = load(
            &rt,
            "llm-probe",
            &format!("{GRANT}max_tokens_per_call = 5\n"),
        );
        let mut q = ask("Count");
        q["request"]["max-tokens"] = json!(100);
        let v = call_ok(&c, "chat", q.clone()).await;
        assert_eq!(chats(&llm)[0]["max_tokens"], 5);
        // The scripted model stops at 5 tokens (20 characters).
        assert_eq!(ok(&v)["finish-reason"], "length");
        assert_eq!(ok(&v)["message"]["content"], "01234567890123456789");
        // Without the cap, the request's own is sent.
        let c = load(&rt, "llm-probe", GRANT);
        call_ok(&c, "chat", q).await;
        assert_eq!(chats(&llm)[1]["max_tokens"], 100);
    }

    #[tokio::test]
    async fn the_turn_budget_refuses_the_call_after_it_is_used_up() {
        // Each answer uses 25 prompt tokens (100 characters) and 10
        // completion tokens: 35 of the turn's 30.
        let llm = ScriptedLlm::start([Rule::text("x".repeat(40))]);
        let (rt, audit) = llm_runtime(&llm, |_| {});
        let c = load(
            &rt,
            "llm-probe",
            &format!("{GRANT}max_tokens_per_turn = 30\n"),
        );
        let one = ask(&"y".repeat(86))["request"].clone();
        let o = call(&c, "chat-all", json!({"requests": [one, one]})).await;
        let v = o.result.unwrap();
        assert!(ok(&v[0])["message"]["content"].is_string(), "{v}");
        let m = err(&v[1])["budget-exceeded"].as_str().unwrap();
        assert!(
            m.contains("35/30") && m.contains("max_tokens_per_turn"),
            "{m}"
        );
        assert_eq!(
            llm.request_count(),
            1,
            "the refused call reached the provider"
        );
        assert_eq!(chats(&llm)[0]["max_tokens"], 30);
        assert_eq!(o.usage.get("llm.prompt_tokens"), Some(&25));
        assert_eq!(o.usage.get("llm.completion_tokens"), Some(&10));
        assert!(
            audit
                .take()
                .iter()
                .any(|e| e.decision == Decision::Limit && e.capability == "llm")
        );
        // The next call is another turn, with a budget of its own.
        let v = call_ok(&c, "chat", json!({"request": one})).await;
        assert!(v.get("ok").is_some(), "{v}");
        assert_eq!(llm.request_count(), 2);
    }

    #[tokio::test]
    async fn the_agent_budget_comes_from_the_call_context() {
        let llm = ScriptedLlm::start([Rule::text("fine")]);
        let (rt, _) = llm_runtime(&llm, |_| {});
        let c = load(
            &rt,
            "llm-probe",
            &format!("{GRANT}max_tokens_per_agent = 1000\n"),
        );
        let with_left = |left: &str| CallOptions {
            context: Some(Arc::new(
                [("tessera.agent.tokens_left".to_string(), left.to_string())].into(),
            )),
            ..CallOptions::default()
        };
        let o = c
            .call_json_with("chat", &ask("hi"), with_left("12"))
            .await
            .unwrap();
        assert!(o.result.unwrap().get("ok").is_some());
        assert_eq!(chats(&llm)[0]["max_tokens"], 12);
        let o = c
            .call_json_with("chat", &ask("hi"), with_left("0"))
            .await
            .unwrap();
        let v = o.result.unwrap();
        assert!(
            err(&v)["budget-exceeded"]
                .as_str()
                .unwrap()
                .contains("agent"),
            "{v}"
        );
        assert_eq!(llm.request_count(), 1);
        assert!(o.usage.is_empty(), "{:?}", o.usage);
    }

    /// Every file under `dir`, read whole.
    fn all_bytes(dir: &std::path::Path, out: &mut Vec<u8>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                all_bytes(&p, out);
            } else {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[tokio::test]
    async fn the_api_key_reaches_the_provider_and_nothing_else() {
        const KEY: &str = "sk-tessera-test-7f3a9c2e51";
        let llm = ScriptedLlm::start([
            Rule::text("Keyed hello.").when("hello").once(),
            Rule::error(401, format!("Incorrect API key provided: {KEY}")).when("again"),
        ]);
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("openai.key"), format!("{KEY}\n")).unwrap();
        std::fs::write(
            data.path().join("tessera.toml"),
            format!(
                "[store]\ndefault = \"embedded\"\n\n[llm.providers.scripted]\nbase_url = \"{}\"\napi_key_file = \"openai.key\"\n",
                llm.base_url()
            ),
        )
        .unwrap();
        let providers = LlmProviders::load(data.path()).unwrap().unwrap();
        assert!(!format!("{providers:?}").contains(KEY));
        // The same key through an environment variable.
        let env = |n: &str| (n == "TESSERA_TEST_LLM_KEY").then(|| KEY.to_string());
        let from_env = LlmProviders::from_toml_with_env(
            &format!("[llm.providers.scripted]\nbase_url = \"{}\"\napi_key_env = \"TESSERA_TEST_LLM_KEY\"\n", llm.base_url()),
            "inline",
            data.path(),
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            from_env
                .get("scripted")
                .unwrap()
                .api_key
                .as_ref()
                .unwrap()
                .expose(),
            KEY
        );
        let host = HostConfig {
            llm: Some(Arc::new(providers)),
            ..Default::default()
        };
        assert!(!format!("{host:?}").contains(KEY));
        let (rt, audit) = runtime_with_host(host);
        let journal_dir = tempfile::tempdir().unwrap();
        let store = Arc::new(tessera_journal::JournalStore::open(journal_dir.path()).unwrap());
        let c = load(&rt, "llm-probe", GRANT);
        let (hello, o) = tessera_journal::record_call(&store, &c, "chat", &ask("hello"))
            .await
            .unwrap();
        assert_eq!(
            ok(o.result.as_ref().unwrap())["message"]["content"],
            "Keyed hello."
        );
        let (again, o) = tessera_journal::record_call(&store, &c, "chat", &ask("again"))
            .await
            .unwrap();
        let v = o.result.unwrap();
        let m = err(&v)["rejected"].as_str().unwrap();
        assert!(
            m.contains("401") && m.contains("<redacted>") && !m.contains(KEY),
            "{m}"
        );
        // The provider got it, in the header.
        let seen = llm.requests();
        assert_eq!(seen.len(), 2);
        assert!(
            seen.iter()
                .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {KEY}")))
        );
        // Nothing else did.
        store.flush();
        let mut bytes = Vec::new();
        all_bytes(journal_dir.path(), &mut bytes);
        assert!(!bytes.is_empty());
        assert!(!contains(&bytes, KEY), "the key is in the journal files");
        for run in [&hello, &again] {
            let mut export = Vec::new();
            store.export(run, &mut export).unwrap();
            assert!(
                contains(&export, "llm"),
                "{}",
                String::from_utf8_lossy(&export)
            );
            assert!(!contains(&export, KEY), "the key is in the export of {run}");
            for (_, step) in store.steps(run).unwrap() {
                assert!(!tessera_runtime::capability::describe(&step).contains(KEY));
            }
        }
        assert!(!format!("{:?}", audit.take()).contains(KEY));
    }

    /// Steps answered in order.
    struct Recorded(Vec<Step>);

    impl ReplaySource for Recorded {
        fn recorded(&self, index: u64) -> Option<&Step> {
            self.0.get(index as usize)
        }
    }

    #[tokio::test]
    async fn a_recorded_conversation_replays_offline_and_a_changed_prompt_diverges() {
        let mut llm = ScriptedLlm::start([Rule::text("Recorded answer, once only.").once()]);
        let (rt, _) = llm_runtime(&llm, |_| {});
        let journal_dir = tempfile::tempdir().unwrap();
        let store = Arc::new(tessera_journal::JournalStore::open(journal_dir.path()).unwrap());
        let c = load(&rt, "llm-probe", GRANT);
        let (run, recorded) =
            tessera_journal::record_call(&store, &c, "chat", &ask("Remember this"))
                .await
                .unwrap();
        assert_eq!(llm.request_count(), 1);
        let steps = store.steps(&run).unwrap();
        let chat: Vec<&Step> = steps
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.capability == "llm")
            .collect();
        assert_eq!(chat.len(), 1);
        // The step holds the digest and the whole reply, not the conversation.
        let step = chat[0];
        assert_eq!(step.op, "chat");
        assert_eq!(step.request["model"], "scripted/gpt-test");
        assert_eq!(step.request["messages"], 2);
        assert!(
            step.request["digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        assert!(!step.request.to_string().contains("Remember this"));
        assert_eq!(
            step.response["Ok"]["message"]["content"],
            "Recorded answer, once only."
        );
        let line = tessera_runtime::capability::describe(step);
        assert!(
            line.starts_with("llm.chat")
                && line.contains("scripted/gpt-test 2 messages")
                && line.contains("-> stop, 6+6 tokens: \"Recorded answer"),
            "{line}"
        );
        // Offline: the server is gone, and the replaying host has no such
        // provider (another one only).
        llm.stop();
        let other = ScriptedLlm::start([]);
        let (offline, _) = runtime_with_host(HostConfig {
            llm: Some(Arc::new(LlmProviders::new(
                [("local".to_string(), Provider::new(other.base_url()))].into(),
            ))),
            ..Default::default()
        });
        let report = tessera_journal::replay(&offline, &store, &run, None)
            .await
            .unwrap();
        assert!(report.divergence.is_none(), "{:?}", report.divergence);
        assert_eq!(report.outcome.result, recorded.result);
        assert_eq!(report.outcome.usage, recorded.usage);
        assert!(!report.outcome.usage.is_empty());
        assert_eq!(llm.request_count(), 1);
        assert_eq!(other.request_count(), 0);
        // The same steps, under a changed prompt: the digest differs.
        let source = Arc::new(Recorded(steps.iter().map(|(_, s)| s.clone()).collect()));
        // Loading the live grant on this host fails (no `scripted`
        // provider); the grant adapted for replay needs none.
        let e = offline
            .load_file(&component("llm-probe"), grants(GRANT))
            .unwrap_err();
        assert!(e.to_string().contains("llm.models[0]"), "{e}");
        let scratch = tempfile::tempdir().unwrap();
        let replay_grants = grants(GRANT).for_replay(&steps, scratch.path()).unwrap();
        let c = offline
            .load_file(&component("llm-probe"), replay_grants)
            .unwrap();
        let replayed = |args: Value| {
            let source = source.clone();
            let c = c.clone();
            async move {
                c.call_json_with(
                    "chat",
                    &args,
                    CallOptions {
                        replay: Some(source),
                        ..CallOptions::default()
                    },
                )
                .await
                .unwrap()
            }
        };
        let same = replayed(ask("Remember this")).await;
        assert!(same.divergence.is_none(), "{:?}", same.divergence);
        let changed = replayed(ask("Remember that")).await;
        let d = changed.divergence.expect("a changed prompt must diverge");
        assert!(
            matches!(changed.result, Err(CallFailure::Diverged(_))),
            "{:?}",
            changed.result
        );
        assert!(d.to_string().contains("llm.chat"), "{d}");
        assert_eq!(other.request_count(), 0);
    }
}
