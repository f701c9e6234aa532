//! The Python and JavaScript sandboxes, run in this process: values,
//! output, errors with their place, the standard library, grants allowed
//! and denied, and an escape corpus — each attempt contained, and the next
//! run in the same process unaffected.

use std::path::Path;

use serde_json::json;
use tessera_runtime::{CallOptions, Grants, Runtime, RuntimeConfig};
use tessera_sandbox::{ExecError, Execution, Language, Sandboxes};
use tessera_test_support::component;

fn runtime(cache: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn sandboxes(cache: &Path, grants: Grants) -> Sandboxes {
    // Built (when stale) by the test support, like every component.
    let dir = component("py-sandbox").parent().unwrap().to_path_buf();
    assert!(component("js-sandbox").is_file());
    Sandboxes::new(runtime(cache), vec![dir], grants)
}

fn limited(fuel: u64) -> Grants {
    let mut g = Grants::deny_all();
    g.limits.fuel = fuel;
    g
}

async fn exec(s: &Sandboxes, language: Language, code: &str) -> Execution {
    s.exec(language, code, CallOptions::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{code}: {e}"))
}

fn raised(e: &Execution) -> (&str, &str, Option<u32>, Option<u32>) {
    match &e.error {
        Some(ExecError::Raised {
            exception,
            message,
            line,
            column,
            ..
        }) => (exception, message, *line, *column),
        other => panic!("expected an exception, got {other:?} ({e:?})"),
    }
}

fn limit(e: &Execution) -> &str {
    match &e.error {
        Some(ExecError::Limit { limit, .. }) => limit,
        other => panic!("expected a limit, got {other:?}"),
    }
}

/// The standard-library modules the issue names, and more: importable
/// with nothing granted (they are in the pre-initialized interpreter).
const MODULES: &[&str] = &[
    "json",
    "re",
    "math",
    "datetime",
    "collections",
    "itertools",
    "functools",
    "statistics",
    "decimal",
    "fractions",
    "random",
    "string",
    "textwrap",
    "csv",
    "io",
    "base64",
    "hashlib",
    "uuid",
    "heapq",
    "bisect",
    "dataclasses",
    "enum",
    "typing",
    "operator",
    "copy",
    "difflib",
    "unicodedata",
    "html",
    "urllib.parse",
    "zlib",
    "struct",
    "pprint",
    "calendar",
    "secrets",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_values_output_errors_and_the_standard_library() {
    let cache = tempfile::tempdir().unwrap();
    let s = sandboxes(cache.path(), Grants::deny_all());
    let py = Language::Python;

    let e = exec(&s, py, "import statistics; print(statistics.mean([1,2,3]))").await;
    assert_eq!((e.ok, e.stdout.as_str(), &e.value), (true, "2\n", &None));
    let e = exec(&s, py, "x = [1, {'a': 2.5}, None, 'é']\nx").await;
    assert_eq!(e.value, Some(json!([1, {"a": 2.5}, null, "é"])));
    assert_eq!(e.text.as_deref(), Some("[1, {'a': 2.5}, None, 'é']"));
    // Not JSON: only the text.
    let e = exec(&s, py, "{1, 2}").await;
    assert_eq!((e.value.clone(), e.text.as_deref()), (None, Some("{1, 2}")));
    // A fresh instance per run: nothing is left from the one before.
    let e = exec(&s, py, "x").await;
    assert_eq!(raised(&e).0, "NameError");
    // Large output arrives whole.
    let e = exec(&s, py, "import sys; sys.stdout.write('y' * 200000); None").await;
    assert_eq!(e.stdout.len(), 200000);

    let e = exec(&s, py, "a = 1\nb = 0\na / b").await;
    assert_eq!(
        raised(&e),
        ("ZeroDivisionError", "division by zero", Some(3), Some(1))
    );
    let Some(ExecError::Raised { traceback, .. }) = &e.error else {
        unreachable!()
    };
    assert!(
        traceback.contains("line 3")
            && traceback.ends_with("ZeroDivisionError: division by zero\n"),
        "{traceback}"
    );
    assert!(
        !traceback.contains("app.py"),
        "the sandbox's own frames are not shown: {traceback}"
    );
    let e = exec(&s, py, "x = 1\ndef f(:\n  pass").await;
    assert_eq!(
        raised(&e),
        ("SyntaxError", "invalid syntax", Some(2), Some(7))
    );

    let code = format!(
        "import {}\nlen([{}])",
        MODULES.join(", "),
        MODULES
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let e = exec(&s, py, &code).await;
    assert!(e.ok, "{:?}", e.error);
    assert_eq!(e.value, Some(json!(MODULES.len())));
    assert!(MODULES.len() >= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_escapes_are_contained_and_the_next_run_is_unaffected() {
    let cache = tempfile::tempdir().unwrap();
    let mut grants = Grants::deny_all();
    grants.limits.memory_mb = 128;
    let s = sandboxes(cache.path(), grants);
    let py = Language::Python;
    for (code, exception) in [
        ("import ctypes", "ModuleNotFoundError"),
        ("import subprocess", "ModuleNotFoundError"),
        ("import socket", "ModuleNotFoundError"),
        ("import js", "ModuleNotFoundError"),
        (
            "import threading; threading.Thread(target=print).start()",
            "RuntimeError",
        ),
        (
            "import _socket; _socket.socket().connect(('127.0.0.1', 80))",
            "PermissionError",
        ),
        (
            "import _socket; _socket.getaddrinfo('example.com', 80)",
            "PermissionError",
        ),
        ("import os; os.system('ls')", "AttributeError"),
        ("open('/etc/passwd').read()", "FileNotFoundError"),
        ("def f(): return f()\nf()", "RecursionError"),
        ("import sys; sys.exit(3)", "SystemExit"),
    ] {
        let e = exec(&s, py, code).await;
        assert_eq!(raised(&e).0, exception, "{code}");
    }
    // Nothing of the host's environment.
    let e = exec(&s, py, "import os; dict(os.environ)").await;
    assert_eq!(e.value, Some(json!({})));
    // Limits: a loop runs out of fuel, a memory bomb hits the ceiling (or
    // is refused by the interpreter), a flood of output hits its cap.
    assert_eq!(limit(&exec(&s, py, "while True: pass").await), "fuel");
    let e = exec(&s, py, "b = bytearray(10**9)").await;
    match &e.error {
        Some(ExecError::Limit { limit, .. }) => assert_eq!(limit, "memory"),
        Some(ExecError::Raised { exception, .. }) => assert_eq!(exception, "MemoryError"),
        other => panic!("{other:?}"),
    }
    assert_eq!(limit(&exec(&s, py, "print('x' * 10**7)").await), "output");
    // The process and the next sandbox carry on.
    let e = exec(&s, py, "6 * 7").await;
    assert_eq!(e.value, Some(json!(42)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sees_files_and_variables_only_when_granted() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), "granted").unwrap();
    let manifest = format!(
        "[[files]]\nhost = {:?}\nguest = \"/data\"\n\n[env.set]\nCITY = \"Lyon\"\n",
        dir.path().display().to_string()
    );
    let grants = Grants::from_toml(&manifest, "test manifest", dir.path()).unwrap();
    let granted = sandboxes(cache.path(), grants);
    let denied = sandboxes(cache.path(), Grants::deny_all());
    let read = "import os\n(open('/data/data.txt').read(), os.environ.get('CITY'))";
    let e = exec(&granted, Language::Python, read).await;
    assert_eq!(e.value, Some(json!(["granted", "Lyon"])), "{:?}", e.error);
    let e = exec(&denied, Language::Python, read).await;
    assert_eq!(raised(&e).0, "FileNotFoundError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_values_console_errors_and_escapes() {
    let cache = tempfile::tempdir().unwrap();
    let s = sandboxes(cache.path(), limited(500_000_000));
    let js = Language::JavaScript;

    let e = exec(&s, js, "console.log([1,2,3].map(x => x * 2)); 6 * 7").await;
    assert_eq!(
        (e.stdout.as_str(), &e.value),
        ("[2, 4, 6]\n", &Some(json!(42)))
    );
    let e = exec(&s, js, "console.error('warned'); ({a: [1, 'two']})").await;
    assert_eq!(
        (e.stderr.as_str(), &e.value),
        ("warned\n", &Some(json!({"a": [1, "two"]})))
    );
    let e = exec(&s, js, "let n = 1;\nnull.x").await;
    assert_eq!(raised(&e).0, "TypeError");
    assert_eq!(raised(&e).2, Some(2));
    let e = exec(&s, js, "\n\n  bar baz").await;
    assert_eq!(raised(&e), ("SyntaxError", raised(&e).1, Some(3), Some(7)));
    let e = exec(&s, js, "function f(){ return f() } f()").await;
    assert_eq!(raised(&e).0, "InternalError");

    // eval and Function run inside the sandbox, and see only it.
    let e = exec(
        &s,
        js,
        "[eval('1+1'), new Function('return typeof process')()]",
    )
    .await;
    assert_eq!(e.value, Some(json!([2, "undefined"])));
    // Pollution of the intrinsics does not outlive the instance.
    exec(
        &s,
        js,
        "Object.prototype.polluted = 1; JSON.stringify = () => 'hacked'; 1",
    )
    .await;
    let e = exec(&s, js, "[({}).polluted, JSON.stringify({a: 1})]").await;
    assert_eq!(e.value, Some(json!([null, "{\"a\":1}"])));
    assert_eq!(
        raised(&exec(&s, js, "require('fs')").await).0,
        "ReferenceError"
    );
    assert_eq!(limit(&exec(&s, js, "while (true) {}").await), "fuel");
    assert_eq!(
        raised(&exec(&s, js, "'x'.repeat(2**30)").await).0,
        "RangeError"
    );
    // No network unless granted: the host refuses the request.
    let e = exec(&s, js, "await fetch('http://127.0.0.1:9/')").await;
    assert!(!e.ok, "{e:?}");
    let e = exec(&s, js, "[1, 2, 3].reduce((a, b) => a + b)").await;
    assert_eq!(e.value, Some(json!(6)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_interpreter_state_between_runs_and_sessions_are_isolated() {
    let cache = tempfile::tempdir().unwrap();
    let s = sandboxes(cache.path(), limited(300_000_000));
    let mut a = s.session(Language::Python).await.unwrap();
    let mut b = s.session(Language::Python).await.unwrap();
    let run = |code: &'static str| (code, CallOptions::default());

    // Names, closures and generators survive from one run to the next.
    let (code, o) = run(
        "def make():\n    n = 0\n    def inc():\n        nonlocal n\n        n += 1\n        return n\n    return inc\ninc = make()\nimport itertools\ng = itertools.count(10)\nx = 41",
    );
    assert!(a.exec(code, o).await.unwrap().ok);
    let (code, o) = run("print('calls', inc(), inc())\n[x + 1, next(g), next(g)]");
    let e = a.exec(code, o).await.unwrap();
    assert_eq!(
        (e.stdout.as_str(), &e.value),
        ("calls 1 2\n", &Some(json!([42, 10, 11]))),
        "{e:?}"
    );
    // Each run has its own output and outcome.
    let (code, o) = run("inc()");
    let e = a.exec(code, o).await.unwrap();
    assert_eq!((e.stdout.as_str(), &e.value), ("", &Some(json!(3))));
    // An exception does not end the session.
    let (code, o) = run("1/0");
    assert_eq!(
        raised(&a.exec(code, o).await.unwrap()).0,
        "ZeroDivisionError"
    );
    let (code, o) = run("x");
    assert_eq!(a.exec(code, o).await.unwrap().value, Some(json!(41)));

    // Another session sees none of it; a fresh exec neither.
    let (code, o) = run("x");
    assert_eq!(raised(&b.exec(code, o).await.unwrap()).0, "NameError");
    assert_eq!(
        raised(&exec(&s, Language::Python, "inc()").await).0,
        "NameError"
    );

    // A limit ends the session, and says so afterwards; the other goes on.
    let (code, o) = run("while True: pass");
    assert_eq!(limit(&a.exec(code, o).await.unwrap()), "fuel");
    assert!(
        a.ended().is_some_and(|why| why.contains("fuel")),
        "{:?}",
        a.ended()
    );
    let (code, o) = run("x");
    let refused = a.exec(code, o).await.unwrap_err().to_string();
    assert!(refused.contains("session has ended"), "{refused}");
    let (code, o) = run("y = 1\ny + 1");
    assert_eq!(b.exec(code, o).await.unwrap().value, Some(json!(2)));
    assert!(b.memory_bytes() > 1 << 20);

    // JavaScript: the same.
    let mut j = s.session(Language::JavaScript).await.unwrap();
    let (code, o) = run("var counter = 0; function bump() { return ++counter }");
    assert!(j.exec(code, o).await.unwrap().ok);
    let (code, o) = run("bump(); bump()");
    assert_eq!(j.exec(code, o).await.unwrap().value, Some(json!(2)));
}

fn journal(dir: &Path) -> std::sync::Arc<tessera_journal::JournalStore> {
    std::sync::Arc::new(tessera_journal::JournalStore::open(dir).unwrap())
}

async fn stored(
    s: &Sandboxes,
    j: &std::sync::Arc<tessera_journal::JournalStore>,
    name: &str,
    language: Language,
) -> tessera_sandbox::StoredSession {
    s.open_session(j, name, language, None, None)
        .await
        .unwrap_or_else(|e| panic!("opening {name}: {e}"))
}

async fn run_in(session: &mut tessera_sandbox::StoredSession, code: &str) -> Execution {
    session
        .exec(code, CallOptions::default(), None)
        .await
        .unwrap_or_else(|e| panic!("{code}: {e}"))
}

/// A stored session outlives its process: a new runtime and a reopened
/// journal rebuild it by re-executing its runs (host interactions from the
/// journal), so closures, generators and random draws come back exactly;
/// a fork starts from any run and goes on independently; the history
/// replays offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_session_is_rebuilt_from_the_journal_forked_and_replayed() {
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let setup = "import random\nr = random.random()\ndef make():\n    n = 0\n    def inc():\n        nonlocal n\n        n += 1\n        return n\n    return inc\ninc = make()\ng = (i * i for i in range(100))";
    let drawn;
    {
        let s = sandboxes(cache.path(), limited(300_000_000));
        let j = journal(data.path());
        let mut a = stored(&s, &j, "a", Language::Python).await;
        assert!(run_in(&mut a, setup).await.ok);
        let e = run_in(&mut a, "[inc(), next(g), next(g), r]").await;
        drawn = e.value.clone().unwrap()[3].clone();
        assert_eq!(
            e.value.unwrap().as_array().unwrap()[..3],
            [json!(1), json!(0), json!(1)]
        );
        assert!(e.run_id.is_some());
        j.flush();
    }
    // Another "process": nothing is shared but the journal's directory.
    let s = sandboxes(cache.path(), limited(300_000_000));
    let j = journal(data.path());
    let mut a = stored(&s, &j, "a", Language::Python).await;
    let e = run_in(&mut a, "[inc(), next(g), r]").await;
    assert_eq!(e.value, Some(json!([2, 4, drawn])), "{e:?}");
    assert_eq!(a.record().history.len(), 3);

    // A fork after the first run: the closure and generator as they were
    // then; the two go on independently.
    let fork = j.fork_session("a", "b", Some(1), None).unwrap();
    assert_eq!(fork.history, a.record().history[..1].to_vec());
    let mut b = stored(&s, &j, "b", Language::Python).await;
    let e = run_in(&mut b, "[inc(), next(g)]").await;
    assert_eq!(e.value, Some(json!([1, 0])));
    assert_eq!(run_in(&mut a, "inc()").await.value, Some(json!(3)));
    assert_eq!(run_in(&mut b, "inc()").await.value, Some(json!(2)));
    // A fork past the end is refused.
    let err = j.fork_session("a", "c", Some(99), None).unwrap_err();
    assert!(err.to_string().contains("cannot fork it at 99"), "{err}");

    // Offline replay of the last run re-executes the runs before it.
    let last = a.record().history.last().unwrap().clone();
    let report = tessera_journal::replay_session_run(s.runtime(), &j, &last)
        .await
        .unwrap();
    assert_eq!(report.runs.len(), 4);
    assert!(report.first_divergence().is_none(), "{report:?}");
    // And so does `tessera_journal::session_chain` for the fork's runs:
    // the first is the run of `a` it shares.
    let chain = j.session_chain(b.record().history.last().unwrap()).unwrap();
    assert_eq!(chain[0], a.record().history[0]);
    assert_eq!(chain.len(), 3);

    // The runs are held by the sessions; removing `a` keeps `b` whole.
    assert!(j.remove_session("a").unwrap());
    let holds = j.holds(&chain[0]).unwrap();
    assert_eq!(
        holds.iter().map(|h| h.holder.as_str()).collect::<Vec<_>>(),
        ["session:b"]
    );
    drop(b);
    let mut b = stored(&s, &j, "b", Language::Python).await;
    assert_eq!(run_in(&mut b, "inc()").await.value, Some(json!(3)));
}

/// What a stored session refuses: another language, other grants, a name
/// that is not one, another owner's session, a session a limit ended
/// (which a fork before that run revives), and rebuilding a session whose
/// writable mount its history would write through again. A file a run
/// read that changed since makes the rebuild diverge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_sessions_refuse_what_they_cannot_rebuild_faithfully() {
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let s = sandboxes(cache.path(), limited(300_000_000));
    let j = journal(data.path());
    let mut a = stored(&s, &j, "a", Language::Python).await;
    assert!(run_in(&mut a, "x = 1").await.ok);
    let err = s
        .open_session(&j, "a", Language::JavaScript, None, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("runs python, not javascript"),
        "{err}"
    );
    let err = s
        .open_session(&j, "a", Language::Python, Some(limited(1_000)), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has the grants it was created with"),
        "{err}"
    );
    let err = s
        .open_session(&j, "../a", Language::Python, None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a session name"), "{err}");

    // Owned sessions are invisible to other owners.
    let mut owned = s
        .open_session(&j, "mine", Language::Python, None, Some("alice"))
        .await
        .unwrap();
    assert!(run_in(&mut owned, "secret = 7").await.ok);
    let err = s
        .open_session(&j, "mine", Language::Python, None, Some("bob"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no session `mine`");
    assert!(j.fork_session("mine", "stolen", None, Some("bob")).is_err());
    let mut again = s
        .open_session(&j, "mine", Language::Python, None, Some("alice"))
        .await
        .unwrap();
    assert_eq!(run_in(&mut again, "secret").await.value, Some(json!(7)));

    // A limit ends the session; the end is kept in the journal.
    let e = run_in(&mut a, "while True: pass").await;
    assert_eq!(limit(&e), "fuel");
    assert!(a.record().ended.is_some());
    let err = s
        .open_session(&j, "a", Language::Python, None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ended at run 2"), "{err}");
    j.fork_session("a", "a2", Some(1), None).unwrap();
    let mut a2 = stored(&s, &j, "a2", Language::Python).await;
    assert_eq!(run_in(&mut a2, "x + 1").await.value, Some(json!(2)));

    // A read-only mount: reads are re-executed and must read the same.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n.txt"), "1").unwrap();
    let manifest = |mode: &str| {
        format!(
            "[[files]]\nhost = {:?}\nguest = \"/data\"\nmode = \"{mode}\"\n\n[limits]\nfuel = 300000000\n",
            dir.path().display().to_string()
        )
    };
    let ro = Grants::from_toml(&manifest("ro"), "ro", dir.path()).unwrap();
    let mut f = s
        .open_session(&j, "files", Language::Python, Some(ro.clone()), None)
        .await
        .unwrap();
    let e = run_in(&mut f, "n = int(open('/data/n.txt').read())\nn").await;
    assert_eq!(e.value, Some(json!(1)), "{e:?}");
    drop(f);
    let mut f = s
        .open_session(&j, "files", Language::Python, Some(ro), None)
        .await
        .unwrap();
    assert_eq!(run_in(&mut f, "n + 1").await.value, Some(json!(2)));
    drop(f);
    std::fs::write(dir.path().join("n.txt"), "5").unwrap();
    let err = s
        .open_session(&j, "files", Language::Python, None, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("re-executing run 1") && err.to_string().contains("departed"),
        "{err}"
    );

    // A writable mount: created and used, but never rebuilt.
    let rw = Grants::from_toml(&manifest("rw"), "rw", dir.path()).unwrap();
    let mut w = s
        .open_session(&j, "writes", Language::Python, Some(rw), None)
        .await
        .unwrap();
    let e = run_in(&mut w, "open('/data/log.txt', 'a').write('x')").await;
    assert_eq!(e.value, Some(json!(1)), "{e:?}");
    drop(w);
    let err = s
        .open_session(&j, "writes", Language::Python, None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("writable mount (/data)"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("log.txt")).unwrap(),
        "x"
    );
}

/// A live stored session does not take the concurrency permits of fresh
/// runs of its language: with one permit, a session and a fresh run both
/// go (two fresh runs at once would not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_leave_fresh_runs_their_permits() {
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut g = limited(300_000_000);
    g.limits.max_concurrent = 1;
    let s = sandboxes(cache.path(), g);
    let j = journal(data.path());
    let mut a = stored(&s, &j, "a", Language::Python).await;
    let mut b = stored(&s, &j, "b", Language::Python).await;
    assert!(run_in(&mut a, "x = 1").await.ok);
    assert!(run_in(&mut b, "x = 2").await.ok);
    let e = exec(&s, Language::Python, "1 + 1").await;
    assert_eq!(e.value, Some(json!(2)), "{e:?}");
    // The permit is the fresh runs' limit: an in-memory session takes it.
    let _held = s.session(Language::Python).await.unwrap();
    let busy = s
        .exec(Language::Python, "1", CallOptions::default(), None)
        .await
        .unwrap_err();
    assert!(
        busy.to_string().contains("busy") || busy.to_string().contains("concurrent"),
        "{busy}"
    );
}

/// A pool keeps sessions live between calls, drops idle ones and the least
/// recently used beyond its size, and rebuilds a dropped one from the
/// journal with its state intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pool_evicts_and_rebuilds_sessions() {
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(sandboxes(cache.path(), limited(300_000_000)));
    let j = journal(data.path());
    let pool = tessera_sandbox::SessionPool::new(
        s.clone(),
        j.clone(),
        std::time::Duration::from_secs(3600),
        2,
    );
    let run = |name: &'static str, code: &'static str| {
        let pool = &pool;
        async move {
            pool.exec(name, Language::Python, code, CallOptions::default(), None)
                .await
                .unwrap_or_else(|e| panic!("{name}: {code}: {e}"))
        }
    };
    run("a", "n = 1").await;
    run("b", "n = 2").await;
    assert_eq!(pool.live_count(), 2);
    // A third pushes out the least recently used (a).
    run("c", "n = 3").await;
    assert_eq!(pool.live_count(), 2);
    assert_eq!(run("a", "n += 10; n").await.value, Some(json!(11)));
    assert_eq!(run("b", "n").await.value, Some(json!(2)));
    assert_eq!(run("c", "n").await.value, Some(json!(3)));
    // Nothing is idle for an hour: nothing goes.
    assert_eq!(pool.evict_idle(), 0);
    let short =
        tessera_sandbox::SessionPool::new(s.clone(), j.clone(), std::time::Duration::ZERO, 8);
    short
        .exec("a", Language::Python, "n", CallOptions::default(), None)
        .await
        .unwrap();
    assert_eq!(short.evict_idle(), 1);
    assert_eq!(short.live_count(), 0);
    let e = short
        .exec("a", Language::Python, "n", CallOptions::default(), None)
        .await
        .unwrap();
    assert_eq!(e.value, Some(json!(11)));
    // A caller with a token cannot use a session another token made.
    let alice = Some(tessera_journal::Caller {
        via: "test".into(),
        token: Some("alice".into()),
    });
    let bob = Some(tessera_journal::Caller {
        via: "test".into(),
        token: Some("bob".into()),
    });
    pool.exec(
        "al",
        Language::Python,
        "k = 1",
        CallOptions::default(),
        alice.clone(),
    )
    .await
    .unwrap();
    let err = pool
        .exec("al", Language::Python, "k", CallOptions::default(), bob)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no session `al`");
    let e = pool
        .exec("al", Language::Python, "k", CallOptions::default(), alice)
        .await
        .unwrap();
    assert_eq!(e.value, Some(json!(1)));
}
