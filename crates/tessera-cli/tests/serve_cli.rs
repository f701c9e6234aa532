//! `tessera components --server`: managing a running server's registry
//! through its HTTP API, with tokens.

mod common;

use std::process::Output;

use common::{Serving, component, tessera};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn components_are_managed_through_a_running_server() {
    let data = tempfile::tempdir().unwrap();
    let token = |scope: &str| {
        let o = tessera(data.path())
            .args(["tokens", "create", "--scope", scope])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let (manage, call) = (token("manage"), token("call"));
    let serving = Serving::start(data.path(), &["--require-tokens"]);
    let remote = |token: Option<&str>, args: &[&str]| {
        let mut c = tessera(data.path());
        c.args(["components", "--server", &serving.base]);
        if let Some(t) = token {
            c.args(["--token", t]);
        }
        c.args(args).output().unwrap()
    };
    let hello = component("hello").display().to_string();
    let spin = component("spin").display().to_string();

    // Denied: no token, and a token without the `manage` scope.
    let o = remote(None, &["add", &hello, "--name", "hello"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unauthorized (401)"), "{}", text(&o));
    let o = remote(Some(&call), &["add", &hello, "--name", "hello"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("forbidden (403)"), "{}", text(&o));

    // Allowed: upload, a second version, list, inspect, rollback, remove.
    let o = remote(Some(&manage), &["add", &hello, "--name", "tool"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("tool v1 active"), "{}", text(&o));
    let o = remote(Some(&manage), &["add", &spin, "--name", "tool"]);
    assert!(text(&o).contains("tool v2 active"), "{}", text(&o));
    let o = remote(Some(&call), &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("tool") && text(&o).contains("v2/2"),
        "{}",
        text(&o)
    );
    let o = remote(Some(&call), &["inspect", "tool"]);
    assert!(text(&o).contains("fn spin"), "{}", text(&o));
    let o = remote(Some(&manage), &["rollback", "tool"]);
    assert!(text(&o).contains("tool v1 active"), "{}", text(&o));
    let o = remote(Some(&call), &["inspect", "tool"]);
    assert!(text(&o).contains("fn greet"), "{}", text(&o));
    let o = remote(Some(&manage), &["remove", "tool"]);
    assert!(text(&o).contains("tool removed"), "{}", text(&o));
    let o = remote(Some(&call), &["inspect", "tool"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no_such_component (404)"), "{}", text(&o));

    // A bad component is refused by the server with its reason.
    let o = remote(
        Some(&manage),
        &[
            "add",
            &data.path().join("tokens.json").display().to_string(),
            "--name",
            "junk",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bad_component"), "{}", text(&o));
    serving.stop();

    // Not a URL the client speaks.
    let o = tessera(data.path())
        .args(["components", "--server", "https://example.com", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("use http://"), "{}", text(&o));
}
