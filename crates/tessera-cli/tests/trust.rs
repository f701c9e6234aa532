//! Signed components and the trust policy from the command line and the
//! server; signed audit checkpoints and signed journal exports.

mod common;

use std::path::{Path, PathBuf};

use common::{Serving, err, json, out, run};
use serde_json::Value;
use tessera_test_support::component;

/// A data directory with two key pairs (`release`, `other`) and a copy of
/// `hello.wasm` signed by `release`, one signed by `other`, one unsigned.
struct Setup {
    data: tempfile::TempDir,
    keys: PathBuf,
    signed: PathBuf,
    by_other: PathBuf,
    unsigned: PathBuf,
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn setup() -> Setup {
    let data = tempfile::tempdir().unwrap();
    let keys = data.path().join("keys-dir");
    std::fs::create_dir_all(&keys).unwrap();
    for name in ["release", "other"] {
        let o = run(
            data.path(),
            &["keys", "generate", "--out", p(&keys.join(name)), "--json"],
        );
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let v = json(&o);
        assert_eq!(v["key_id"].as_str().unwrap().len(), 24, "{v}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("release.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the secret key is private");
    }
    // A second generate does not overwrite the key.
    let o = run(
        data.path(),
        &["keys", "generate", "--out", p(&keys.join("release"))],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("already exists"), "{}", err(&o));

    let unsigned = data.path().join("hello.wasm");
    std::fs::copy(component("hello"), &unsigned).unwrap();
    let signed = data.path().join("signed").join("hello.wasm");
    let by_other = data.path().join("other").join("hello.wasm");
    for (key, dest) in [("release", &signed), ("other", &by_other)] {
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let o = run(
            data.path(),
            &[
                "sign",
                p(&unsigned),
                "--key",
                p(&keys.join(format!("{key}.key"))),
                "--out",
                p(dest),
                "--json",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let v = json(&o);
        let bytes = std::fs::read(dest).unwrap();
        assert_eq!(v["digest"], tessera_runtime::digest_of(&bytes));
    }
    Setup {
        data,
        keys,
        signed,
        by_other,
        unsigned,
    }
}

fn write_trust(s: &Setup, path: &Path) {
    std::fs::write(
        path,
        format!(
            "[keys]\nrelease = \"{}\"\nother = \"{}\"\n\n[[rule]]\nnames = [\"dev-*\"]\nallow-unsigned = true\n\n[[rule]]\nnames = [\"*\"]\nsigned-by = [\"release\"]\n",
            s.keys.join("release.pub").display(),
            s.keys.join("other.pub").display()
        ),
    )
    .unwrap();
}

#[test]
fn sign_and_verify_tell_signed_unsigned_tampered_and_other_keys_apart() {
    let s = setup();
    let d = s.data.path();
    let release_pub = s.keys.join("release.pub");
    let v = |file: &Path| {
        let o = run(d, &["verify", p(file), "--key", p(&release_pub), "--json"]);
        (o.status.code(), json(&o))
    };
    let (code, j) = v(&s.signed);
    assert_eq!(code, Some(0), "{j}");
    assert_eq!(j["signed_by"][0], "release");
    let (code, j) = v(&s.unsigned);
    assert_eq!(code, Some(8), "{j}");
    assert!(j["message"].as_str().unwrap().contains("not signed"), "{j}");
    let (code, j) = v(&s.by_other);
    assert_eq!(code, Some(8), "{j}");
    // Changed after signing: a custom section appended.
    let tampered = d.join("tampered.wasm");
    let mut bytes = std::fs::read(&s.signed).unwrap();
    bytes.extend_from_slice(&[0, 4, 1, b'x', 1, 2]);
    std::fs::write(&tampered, bytes).unwrap();
    let (code, j) = v(&tampered);
    assert_eq!(code, Some(8), "{j}");
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("changed after signing"),
        "{j}"
    );
    // Signing in place replaces the file with the signed bytes.
    let copy = d.join("copy.wasm");
    std::fs::copy(&s.unsigned, &copy).unwrap();
    let o = run(
        d,
        &["sign", p(&copy), "--key", p(&s.keys.join("release.key"))],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(v(&copy).0, Some(0));
    // A file that is not wasm, and a key that is not a key.
    let o = run(
        d,
        &[
            "sign",
            p(&release_pub),
            "--key",
            p(&s.keys.join("release.key")),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let o = run(d, &["sign", p(&copy), "--key", p(&copy)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("not an ed25519 secret key"), "{}", err(&o));
}

#[test]
fn the_trust_policy_refuses_untrusted_components_on_call_and_registry_add() {
    let s = setup();
    let d = s.data.path();
    // `<data>/trust.toml` is in force without a flag.
    write_trust(&s, &d.join("trust.toml"));
    let call = |file: &Path| {
        run(
            d,
            &[
                "call",
                p(file),
                "greet",
                "--args",
                r#"{"name":"Ada"}"#,
                "--json",
            ],
        )
    };
    let o = call(&s.signed);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("Hello, Ada!"), "{}", out(&o));
    for (file, why) in [
        (&s.unsigned, "not signed"),
        (&s.by_other, "not by a key the trust policy accepts"),
    ] {
        let o = call(file);
        assert_eq!(o.status.code(), Some(8), "{}", out(&o));
        let j = json(&o);
        assert_eq!(j["error"]["kind"], "untrusted", "{j}");
        assert!(j["error"]["message"].as_str().unwrap().contains(why), "{j}");
    }
    // Each refusal is an audit event naming the component.
    let audit = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    let refusals: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["capability"] == "trust")
        .collect();
    assert_eq!(refusals.len(), 2, "{audit}");
    assert!(
        refusals
            .iter()
            .all(|r| r["decision"] == "deny" && r["target"] == "hello")
    );
    // A name the `dev-*` rule covers may be unsigned.
    let o = run(
        d,
        &["components", "add", p(&s.unsigned), "--name", "dev-hello"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // Registry add: refused, and the registry is left as it was.
    let o = run(d, &["components", "add", p(&s.unsigned), "--name", "hello"]);
    assert_eq!(o.status.code(), Some(8), "{}", err(&o));
    assert!(err(&o).contains("not signed"), "{}", err(&o));
    let o = run(d, &["components", "list", "--json"]);
    let listed = out(&o);
    assert!(
        listed.contains("dev-hello") && !listed.contains("\"hello\""),
        "{listed}"
    );
    let o = run(d, &["components", "add", p(&s.signed), "--name", "hello"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // An explicit --trust wins over <data>/trust.toml; a bad one is named.
    let bad = d.join("bad-trust.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nnames = [\"*\"]\nsigned-by = [\"nobody\"]\n",
    )
    .unwrap();
    let o = run(
        d,
        &[
            "--trust",
            p(&bad),
            "call",
            p(&s.signed),
            "greet",
            "--args",
            r#"{"name":"x"}"#,
        ],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(
        err(&o).contains("bad-trust.toml") && err(&o).contains("rule[0].signed-by"),
        "{}",
        err(&o)
    );
}

#[test]
fn a_server_under_a_trust_policy_refuses_an_untrusted_add_with_403_and_serves_a_signed_one() {
    let s = setup();
    let d = s.data.path();
    let trust = d.join("policy.toml");
    write_trust(&s, &trust);
    let server = Serving::start(
        d,
        &[
            "--trust",
            p(&trust),
            "--audit-sign-key",
            p(&s.keys.join("release.key")),
        ],
    );
    let add = |file: &Path| {
        server.request(
            "POST",
            "/v1/components",
            &serde_json::json!({"name": "hello", "path": p(file)}).to_string(),
        )
    };
    let (status, body) = add(&s.unsigned);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "untrusted", "{body}");
    let (status, body) = server.request("GET", "/v1/components/hello", "");
    assert_eq!(status, 404, "nothing was registered: {body}");
    let (status, body) = add(&s.signed);
    assert!(status == 200 || status == 201, "{status} {body}");
    let (status, body) = server.request(
        "POST",
        "/v1/components/hello/call/greet",
        r#"{"name":"Ada"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("Hello, Ada!"), "{body}");
    server.stop();
    // The server signed the audit log's head as it stopped, after the
    // refusal it audited.
    let o = run(
        d,
        &[
            "audit",
            "verify",
            "--key",
            p(&s.keys.join("release.pub")),
            "--json",
        ],
    );
    let j = json(&o);
    assert_eq!(o.status.code(), Some(0), "{j}");
    assert_eq!(j["checkpoints"]["lines_after"], 0, "{j}");
    let audit = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"capability\":\"trust\""), "{audit}");
}

#[test]
fn audit_checkpoints_are_signed_and_verified_and_a_rewrite_is_caught() {
    let s = setup();
    let d = s.data.path();
    // A denied host gives the log lines.
    let fetch = component("http-fetch");
    for i in 0..2 {
        let o = run(
            d,
            &[
                "call",
                p(&fetch),
                "fetch",
                "--args",
                &format!(r#"{{"url":"http://127.0.0.1:9/{i}"}}"#),
            ],
        );
        assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    }
    let release_pub = s.keys.join("release.pub");
    let verify = |key: &Path| {
        let o = run(d, &["audit", "verify", "--key", p(key), "--json"]);
        (o.status.code(), json(&o))
    };
    // No checkpoint yet: nothing is signed.
    let (code, j) = verify(&release_pub);
    assert_eq!(code, Some(7), "{j}");
    let o = run(
        d,
        &[
            "audit",
            "sign",
            "--key",
            p(&s.keys.join("release.key")),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let (code, j) = verify(&release_pub);
    assert_eq!(code, Some(0), "{j}");
    assert_eq!(j["checkpoints"]["valid"], 1, "{j}");
    assert_eq!(j["checkpoints"]["lines_after"], 0, "{j}");
    let (code, _) = verify(&s.keys.join("other.pub"));
    assert_eq!(code, Some(7));
    // The checkpoint line's signature replaced by a forgery: its hash no
    // longer matches, the chain says where.
    let path = d.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let forged = text.replacen("\\\"signature\\\":\\\"", "\\\"signature\\\":\\\"A", 1);
    assert_ne!(forged, text);
    std::fs::write(&path, forged).unwrap();
    let (code, j) = verify(&release_pub);
    assert_eq!(code, Some(7), "{j}");
    assert_eq!(j["problem"]["line"], text.lines().count() as u64, "{j}");
}

#[test]
fn a_signed_journal_export_imports_only_while_its_signature_holds() {
    let s = setup();
    let d = s.data.path();
    let o = run(
        d,
        &[
            "call",
            p(&s.unsigned),
            "chatter",
            "--args",
            r#"{"msg":"hi"}"#,
            "--record",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let id = err(&o)
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .unwrap()
        .trim()
        .to_string();
    let export = d.join("run.tjx");
    let o = run(
        d,
        &[
            "runs",
            "export",
            &id,
            "-o",
            p(&export),
            "--sign",
            p(&s.keys.join("release.key")),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(d.join("run.tjx.sig").is_file());
    let other = tempfile::tempdir().unwrap();
    let import = |key: &str| {
        run(
            other.path(),
            &["runs", "import", p(&export), "--key", p(&s.keys.join(key))],
        )
    };
    let o = import("other.pub");
    assert_eq!(o.status.code(), Some(8), "{}", err(&o));
    assert!(err(&o).contains("not trusted"), "{}", err(&o));
    let o = import("release.pub");
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains(&id[..8]), "{}", out(&o));
    // One byte changed: refused, nothing imported.
    let mut bytes = std::fs::read(&export).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&export, bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let o = run(
        fresh.path(),
        &[
            "runs",
            "import",
            p(&export),
            "--key",
            p(&s.keys.join("release.pub")),
        ],
    );
    assert_eq!(o.status.code(), Some(8), "{}", err(&o));
    assert!(
        err(&o).contains("changed after it was signed"),
        "{}",
        err(&o)
    );
    let o = run(fresh.path(), &["runs", "list", "--json"]);
    assert!(!out(&o).contains(&id), "{}", out(&o));
}

#[test]
fn digests_pinned_at_registration_and_in_plan_steps_refuse_other_bytes() {
    let s = setup();
    let d = s.data.path();
    let unsigned_digest = tessera_runtime::digest_of(&std::fs::read(&s.unsigned).unwrap());
    let signed_digest = tessera_runtime::digest_of(&std::fs::read(&s.signed).unwrap());
    // `components add --digest` (any source may be pinned): other bytes
    // are refused, nothing registered.
    let o = run(
        d,
        &[
            "components",
            "add",
            p(&s.signed),
            "--name",
            "hello",
            "--digest",
            &unsigned_digest,
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert_eq!(json(&o)["error"]["kind"], "digest_mismatch");
    let o = run(d, &["components", "list", "--json"]);
    assert!(!out(&o).contains("\"hello\""), "{}", out(&o));
    let o = run(
        d,
        &[
            "components",
            "add",
            p(&s.unsigned),
            "--name",
            "hello",
            "--digest",
            &unsigned_digest,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // A plan step pinned to the registered bytes runs; pinned to others,
    // it fails naming both digests.
    let plan = |digest: &str| {
        let path = d.join(format!("pinned-{}.toml", &digest[7..15]));
        std::fs::write(
            &path,
            format!(
                "[steps.greet]\ncomponent = \"hello\"\nfunction = \"greet\"\ndigest = \"{digest}\"\nargs = {{ name = \"Ada\" }}\n\n[outputs]\ngreeting = \"${{{{ .steps.greet.output }}}}\"\n"
            ),
        )
        .unwrap();
        run(d, &["plan", "run", p(&path), "--json"])
    };
    let o = plan(&unsigned_digest);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("Hello, Ada!"), "{}", out(&o));
    let o = plan(&signed_digest);
    assert_ne!(o.status.code(), Some(0), "{}", out(&o));
    let text = format!("{}{}", out(&o), err(&o));
    assert!(
        text.contains("pinned to")
            && text.contains(&signed_digest)
            && text.contains(&unsigned_digest),
        "{text}"
    );
}
