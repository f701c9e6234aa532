//! The trust policy against real components: signed, unsigned, changed
//! after signing, signed by an untrusted key, pinned; and sealed compile
//! cache entries, including one replaced by another component's code.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use tessera_runtime::audit::MemoryAudit;
use tessera_runtime::trust::{self, Refusal, TrustPolicy};
use tessera_runtime::{CacheStatus, Decision, Error, Runtime, RuntimeConfig};

struct Keys {
    dir: tempfile::TempDir,
    release: trust::SecretKey,
    other: trust::SecretKey,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    trust::keys::generate(&dir.path().join("release")).unwrap();
    trust::keys::generate(&dir.path().join("other")).unwrap();
    let release = trust::keys::read_secret(&dir.path().join("release.key")).unwrap();
    let other = trust::keys::read_secret(&dir.path().join("other.key")).unwrap();
    Keys {
        dir,
        release,
        other,
    }
}

fn policy(k: &Keys, text: &str) -> TrustPolicy {
    let path = k.dir.path().join("trust.toml");
    std::fs::write(&path, text).unwrap();
    TrustPolicy::load(&path).unwrap()
}

const RELEASE_ONLY: &str = r#"
[keys]
release = "release.pub"
other = "other.pub"

[[rule]]
names = ["dev-*"]
allow-unsigned = true

[[rule]]
names = ["hello", "tools/*"]
signed-by = ["release"]
"#;

fn hello() -> Vec<u8> {
    std::fs::read(component("hello")).unwrap()
}

fn check(p: &TrustPolicy, name: &str, bytes: &[u8]) -> Result<trust::Verdict, Refusal> {
    p.check(name, bytes, &tessera_runtime::digest_of(bytes))
}

#[test]
fn signed_unsigned_tampered_and_untrusted_components_are_told_apart() {
    let k = keys();
    let p = policy(&k, RELEASE_ONLY);
    let signed = trust::keys::sign_component(&hello(), &k.release).unwrap();
    // Signed by the required key: trusted.
    let v = check(&p, "hello", &signed).expect("signed by release");
    assert_eq!(v.signed_by, vec!["release".to_string()]);
    assert!(check(&p, "tools/hello", &signed).is_ok());
    // Unsigned.
    assert!(matches!(
        check(&p, "hello", &hello()),
        Err(Refusal::Unsigned { keys, .. }) if keys == "release"
    ));
    // Changed after signing: one more custom section at the end.
    let mut tampered = signed.clone();
    tampered.extend_from_slice(&[0, 4, 1, b'x', 0xde, 0xad]);
    assert!(matches!(
        check(&p, "hello", &tampered),
        Err(Refusal::Tampered { .. })
    ));
    // Signed by a key the policy knows but does not accept for this name.
    let by_other = trust::keys::sign_component(&hello(), &k.other).unwrap();
    let e = check(&p, "hello", &by_other).unwrap_err();
    assert!(
        matches!(&e, Refusal::Untrusted { signers, .. } if signers == "other"),
        "{e:?}"
    );
    // Signed by a key nobody listed.
    let stranger_dir = tempfile::tempdir().unwrap();
    trust::keys::generate(&stranger_dir.path().join("s")).unwrap();
    let stranger = trust::keys::read_secret(&stranger_dir.path().join("s.key")).unwrap();
    let by_stranger = trust::keys::sign_component(&hello(), &stranger).unwrap();
    let e = check(&p, "hello", &by_stranger).unwrap_err();
    assert!(
        matches!(&e, Refusal::Untrusted { signers, .. } if signers.contains(&stranger.id())),
        "{e:?}"
    );
    // A rule that allows unsigned components, and a name no rule covers.
    assert!(check(&p, "dev-hello", &hello()).is_ok());
    assert!(matches!(
        check(&p, "prod-hello", &signed),
        Err(Refusal::NoRule { .. })
    ));
}

#[test]
fn a_pin_accepts_only_its_digest() {
    let k = keys();
    let bytes = hello();
    let digest = tessera_runtime::digest_of(&bytes);
    let p = policy(
        &k,
        &format!(
            "[[rule]]\nnames = [\"*\"]\nallow-unsigned = true\n\n[pins]\nhello = \"{digest}\"\n"
        ),
    );
    let v = check(&p, "hello", &bytes).unwrap();
    assert!(v.pinned);
    // Signing changes the bytes, so the pin no longer holds.
    let signed = trust::keys::sign_component(&bytes, &k.release).unwrap();
    let e = check(&p, "hello", &signed).unwrap_err();
    assert!(
        matches!(&e, Refusal::PinMismatch { expected, .. } if *expected == digest),
        "{e:?}"
    );
    // Other names are not pinned.
    assert!(!check(&p, "other", &signed).unwrap().pinned);
}

#[test]
fn bad_trust_files_name_the_place() {
    let k = keys();
    let path = k.dir.path().join("trust.toml");
    let err = |text: &str| {
        std::fs::write(&path, text).unwrap();
        TrustPolicy::load(&path).unwrap_err().to_string()
    };
    let e = err(
        "[keys]\nrelease = \"release.pub\"\n[[rule]]\nnames = [\"*\"]\nsigned-by = [\"nobody\"]\n",
    );
    assert!(
        e.contains("rule[0].signed-by") && e.contains("nobody"),
        "{e}"
    );
    let e = err("[keys]\nrelease = \"missing.pub\"\n");
    assert!(
        e.contains("keys.release") && e.contains("missing.pub"),
        "{e}"
    );
    let e = err("[keys]\nrelease = \"release.key\"\n");
    assert!(e.contains("not an ed25519 public key"), "{e}");
    let e = err("[[rule]]\nnames = [\"*\"]\nallow-unsigned = true\n[pins]\nhello = \"md5:abc\"\n");
    assert!(e.contains("pins.hello"), "{e}");
    let e = err("[[rule]]\nnames = [\"*\"]\nsigned-by = []\n");
    assert!(e.contains("rule[0]") && e.contains("no key"), "{e}");
    let e = err("[[rule]]\nnames = [\"*\"]\nallow-unsigned = true\nunknown = 1\n");
    assert!(e.contains("unknown") && e.contains("line 4"), "{e}");
    let e = err("[[rule]]\nnames = [\"[\"]\nallow-unsigned = true\n");
    assert!(e.contains("rule[0].names"), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");
}

fn trusted_runtime(p: TrustPolicy, cache: &Path, seal: [u8; 32]) -> (Runtime, Arc<MemoryAudit>) {
    let audit = Arc::new(MemoryAudit::default());
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        audit: audit.clone(),
        trust: Some(Arc::new(p.with_seal_key(seal))),
        ..RuntimeConfig::default()
    })
    .unwrap();
    (rt, audit)
}

#[test]
fn the_runtime_refuses_untrusted_components_before_compiling_them() {
    let k = keys();
    let cache = tempfile::tempdir().unwrap();
    let (rt, audit) = trusted_runtime(policy(&k, RELEASE_ONLY), cache.path(), [7; 32]);
    let e = rt
        .prepare_named(hello(), "hello.wasm", "hello")
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Untrusted {
                refusal: Refusal::Unsigned { .. },
                ..
            }
        ),
        "{e}"
    );
    // Nothing was compiled, and the refusal is an audit event.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    let events = audit.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].capability, "trust");
    assert_eq!(events[0].target, "hello");
    assert_eq!(events[0].decision, Decision::Deny);
    assert!(events[0].detail.as_deref().unwrap().contains("not signed"));
    // Signed: loads and runs.
    let signed = trust::keys::sign_component(&hello(), &k.release).unwrap();
    let p = rt.prepare_named(signed, "hello.wasm", "hello").unwrap();
    assert_eq!(
        p.trust.as_ref().unwrap().signed_by,
        vec!["release".to_string()]
    );
    rt.load(&p, grants("")).expect("a trusted component loads");
    // A file's name is its stem.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dev-tool.wasm");
    std::fs::write(&f, hello()).unwrap();
    assert_eq!(rt.prepare_file(&f).unwrap().name, "dev-tool");
}

/// Rewrites the digest in a cache entry's header, so the entry — a whole,
/// correctly checksummed compilation — claims to be another component's.
fn relabel_entry(from: &Path, to: &Path, digest: &str) {
    let mut bytes = std::fs::read(from).unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex, &mut d).unwrap();
    bytes[16..48].copy_from_slice(&d);
    std::fs::write(to, bytes).unwrap();
}

fn entry_of(rt: &Runtime, digest: &str) -> PathBuf {
    rt.cache().unwrap().entry_path(digest)
}

#[test]
fn a_replaced_compile_cache_entry_is_refused_under_the_trust_policy_and_used_without_it() {
    let k = keys();
    let cache = tempfile::tempdir().unwrap();
    let signed = trust::keys::sign_component(&hello(), &k.release).unwrap();
    let digest = tessera_runtime::digest_of(&signed);
    let other_bytes = std::fs::read(component("kv-tool")).unwrap();
    let other_digest = tessera_runtime::digest_of(&other_bytes);
    let hello_functions = {
        let (rt, _) = trusted_runtime(policy(&k, RELEASE_ONLY), cache.path(), [7; 32]);
        let p = rt
            .prepare_named(signed.clone(), "hello.wasm", "hello")
            .unwrap();
        let i = rt.inspect(&p).unwrap();
        assert_eq!(i.cache_status, CacheStatus::Miss);
        i.functions.len()
    };
    // A second runtime with the same key uses the sealed entry.
    {
        let (rt, _) = trusted_runtime(policy(&k, RELEASE_ONLY), cache.path(), [7; 32]);
        let p = rt
            .prepare_named(signed.clone(), "hello.wasm", "hello")
            .unwrap();
        assert_eq!(rt.inspect(&p).unwrap().cache_status, CacheStatus::Hit);
    }
    // Someone who can write the cache puts kv-tool's compiled code under
    // hello's digest, with a correct checksum.
    let plain = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let po = plain.prepare(other_bytes, "kv-tool.wasm").unwrap();
    let kv_functions = plain.inspect(&po).unwrap().functions.len();
    assert_ne!(kv_functions, hello_functions);
    relabel_entry(
        &entry_of(&plain, &other_digest),
        &entry_of(&plain, &digest),
        &digest,
    );
    // Under the trust policy the entry is refused (audited) and hello is
    // compiled again from its verified bytes.
    {
        let (rt, audit) = trusted_runtime(policy(&k, RELEASE_ONLY), cache.path(), [7; 32]);
        let p = rt
            .prepare_named(signed.clone(), "hello.wasm", "hello")
            .unwrap();
        let i = rt.inspect(&p).unwrap();
        assert!(
            matches!(&i.cache_status, CacheStatus::Rejected(r) if r.contains("seal")),
            "{:?}",
            i.cache_status
        );
        assert_eq!(i.functions.len(), hello_functions);
        let events = audit.take();
        assert!(
            events
                .iter()
                .any(|e| e.capability == "compile-cache" && e.decision == Decision::Deny),
            "{events:?}"
        );
    }
    // A host with another seal key does not accept this host's seal.
    {
        let (rt, _) = trusted_runtime(policy(&k, RELEASE_ONLY), cache.path(), [9; 32]);
        let p = rt
            .prepare_named(signed.clone(), "hello.wasm", "hello")
            .unwrap();
        assert!(matches!(
            rt.inspect(&p).unwrap().cache_status,
            CacheStatus::Rejected(_)
        ));
    }
    // Without the policy the same replacement goes unnoticed: the runtime
    // runs kv-tool's code for hello's bytes. This is what the seal is for.
    relabel_entry(
        &entry_of(&plain, &other_digest),
        &entry_of(&plain, &digest),
        &digest,
    );
    let fresh = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let p = fresh.prepare(signed, "hello.wasm").unwrap();
    let i = fresh.inspect(&p).unwrap();
    assert_eq!(i.cache_status, CacheStatus::Hit);
    assert_eq!(i.functions.len(), kv_functions);
}

#[test]
fn content_signatures_hold_only_for_their_content_purpose_and_keys() {
    let k = keys();
    let public =
        vec![trust::keys::read_public(&k.dir.path().join("release.pub"), "release").unwrap()];
    let sig = trust::keys::sign_content("journal-export", b"content", &k.release);
    let by = trust::keys::verify_content("journal-export", b"content", &sig, &public).unwrap();
    assert_eq!(by.name, "release");
    let e = trust::keys::verify_content("journal-export", b"changed", &sig, &public).unwrap_err();
    assert!(e.contains("changed"), "{e}");
    let e = trust::keys::verify_content("audit-head", b"content", &sig, &public).unwrap_err();
    assert!(e.contains("journal-export"), "{e}");
    let by_other = trust::keys::sign_content("journal-export", b"content", &k.other);
    let e =
        trust::keys::verify_content("journal-export", b"content", &by_other, &public).unwrap_err();
    assert!(e.contains("not trusted"), "{e}");
    // A forged signature value for the right key id.
    let mut forged = sig.clone();
    forged.signature = by_other.signature.clone();
    let e =
        trust::keys::verify_content("journal-export", b"content", &forged, &public).unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
}

#[test]
fn signed_checkpoints_cover_the_audit_chain_and_a_rewritten_log_loses_them() {
    use tessera_runtime::audit::{AuditEvent, AuditSink, JsonLinesAudit, chain};
    let k = keys();
    let release =
        vec![trust::keys::read_public(&k.dir.path().join("release.pub"), "release").unwrap()];
    let other = vec![trust::keys::read_public(&k.dir.path().join("other.pub"), "other").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = JsonLinesAudit::open(&path).unwrap();
    let event =
        |target: &str| AuditEvent::now("sha256:00", "f", "http", target, Decision::Deny, None);
    log.record(&event("https://a.example/"));
    log.record(&event("https://b.example/"));
    // Nothing signed yet: verifying with a key is a problem.
    let r = chain::verify_checkpoints(&path, &release).unwrap();
    assert_eq!(r.valid, 0);
    assert!(r.problem.unwrap().detail.contains("no signed checkpoint"));
    let c = log.checkpoint(&k.release).unwrap();
    assert_eq!(c.seq, 2);
    log.record(&event("https://c.example/"));
    assert!(chain::verify(&path).unwrap().intact());
    let r = chain::verify_checkpoints(&path, &release).unwrap();
    assert_eq!((r.valid, r.last_line, r.lines_after), (1, Some(3), 1));
    assert_eq!(r.signed_by, vec!["release".to_string()]);
    assert!(r.problem.is_none());
    // Another key does not make it hold.
    let r = chain::verify_checkpoints(&path, &other).unwrap();
    assert!(r.problem.unwrap().detail.contains("not trusted"));
    // A log rewritten whole with fresh hashes (the first event changed):
    // its chain is intact, its checkpoint no longer is.
    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let forged_path = dir.path().join("forged.jsonl");
    let forged = JsonLinesAudit::open(&forged_path).unwrap();
    for (i, e) in events.iter().enumerate() {
        let mut e = e.clone();
        if i == 0 {
            e.target = "https://innocent.example/".into();
        }
        forged.record(&e);
    }
    assert!(chain::verify(&forged_path).unwrap().intact());
    let r = chain::verify_checkpoints(&forged_path, &release).unwrap();
    let p = r.problem.expect("the rewritten log's checkpoint fails");
    assert_eq!(p.line, 3);
    assert!(p.detail.contains("not the line before"), "{}", p.detail);
}

#[test]
fn a_component_without_a_registry_name_goes_by_its_file_or_repository_name() {
    use tessera_runtime::name_of;
    assert_eq!(name_of("tools/hello.wasm"), "hello");
    assert_eq!(name_of("/abs/dir/dev-tool.wasm"), "dev-tool");
    assert_eq!(
        name_of("https://example.com/x/hello.wasm#sha256=00ff"),
        "hello"
    );
    assert_eq!(
        name_of("oci://127.0.0.1:5000/tools/hello:1.0@sha256:00ff"),
        "hello"
    );
    assert_eq!(name_of("oci://registry.example/hello@sha256:00ff"), "hello");
    // A registered version, as a journal records its origin.
    assert_eq!(name_of("hello v3"), "hello");
    assert_eq!(name_of("dir/hello v3.wasm"), "hello v3");
}
