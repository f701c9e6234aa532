//! Components from where they live: a real OCI registry on 127.0.0.1 (the
//! `docker-registry` distribution server, started per test with its own
//! storage directory) and a real HTTPS server with a certificate made in the
//! test, driven through the `tessera` binary.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Serving, component, run, tessera};
use serde_json::Value;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A `docker-registry` serving plain HTTP on a free loopback port; killed
/// when dropped.
struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    addr: String,
    /// Its storage root.
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Self {
        Self::start_with(None)
    }

    /// A registry that requires HTTP basic authentication as `user`.
    fn start_with_login(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install the Debian package docker-registry (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((user, password)) = login {
            // The distribution server's htpasswd backend takes bcrypt only.
            let out = Command::new("/usr/bin/htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("/usr/bin/htpasswd (apache2-utils; scripts/oci-registry.sh installs it)");
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: tessera-test\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Self {
            child,
            addr,
            storage,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = if login.is_some() { 401 } else { 200 };
        loop {
            if http_get(&registry.addr, "/v2/", "").is_some_and(|(status, _)| status == ready) {
                break registry;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {}",
                registry.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `oci://127.0.0.1:<port>/<path>`.
    fn oci(&self, path: &str) -> String {
        format!("oci://{}/{path}", self.addr)
    }

    /// Where the registry keeps the blob of `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET; the status and the body, or `None` when nothing
/// answered.
fn http_get(addr: &str, path: &str, accept: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = if accept.is_empty() {
        String::new()
    } else {
        format!("Accept: {accept}\r\n")
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw[split + 4..].to_vec()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Asserts exit code 2 and returns stderr.
fn refused(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&o.stdout)
    );
    stderr
}

fn push(data: &Path, what: &str, target: &str) -> String {
    let out = ok(&run(data, &["components", "push", what, target]));
    out.trim().to_string()
}

fn hello() -> (PathBuf, Vec<u8>) {
    let p = component("hello");
    let bytes = std::fs::read(&p).unwrap();
    (p, bytes)
}

#[test]
fn push_then_add_and_call_by_tag_and_by_digest() {
    let reg = Registry::start();
    let data = tempfile::tempdir().unwrap();
    let (path, bytes) = hello();
    let digest = format!("sha256:{}", sha256_hex(&bytes));

    let pinned = push(
        data.path(),
        path.to_str().unwrap(),
        &reg.oci("tools/hello:v1"),
    );
    let prefix = format!("{}@sha256:", reg.oci("tools/hello:v1"));
    assert!(pinned.starts_with(&prefix), "{pinned}");
    let manifest_digest = pinned.rsplit('@').next().unwrap().to_string();

    // The artifact is in the CNCF Wasm OCI format: one application/wasm
    // layer holding exactly the component, a wasm config.
    let (status, body) = http_get(
        &reg.addr,
        "/v2/tools/hello/manifests/v1",
        "application/vnd.oci.image.manifest.v1+json",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), manifest_digest);
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"][0]["digest"], digest.as_str());

    // Add by tag: the registry records the digest-pinned origin.
    ok(&run(
        data.path(),
        &[
            "components",
            "add",
            &reg.oci("tools/hello:v1"),
            "--name",
            "hello",
        ],
    ));
    let list = ok(&run(data.path(), &["components", "list"]));
    assert!(list.contains(&digest), "{list}");
    assert!(list.contains(&pinned), "{list}");

    // Call by digest: the same component runs.
    let by_digest = format!("{}@{manifest_digest}", reg.oci("tools/hello"));
    let out = ok(&run(
        data.path(),
        &["call", &by_digest, "greet", "--args", r#"{"name":"Ada"}"#],
    ));
    assert_eq!(out.trim(), r#""Hello, Ada!""#);

    // Inspect by tag shows the component's own digest.
    let out = ok(&run(
        data.path(),
        &["inspect", &reg.oci("tools/hello:v1"), "--json"],
    ));
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["digest"], digest.as_str());

    // A `--digest` pin of the component bytes is checked too.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = refused(&run(
        data.path(),
        &[
            "call",
            &reg.oci("tools/hello:v1"),
            "greet",
            "--digest",
            &wrong,
        ],
    ));
    assert!(err.contains("component digest mismatch"), "{err}");
    assert!(err.contains(&wrong) && err.contains(&digest), "{err}");
    ok(&run(
        data.path(),
        &[
            "call",
            &reg.oci("tools/hello:v1"),
            "greet",
            "--digest",
            &digest,
            "--args",
            r#"{"name":"Bo"}"#,
        ],
    ));

    // A registered component is pushed by name (its active version).
    let copy = push(data.path(), "hello", &reg.oci("copies/hello"));
    assert!(
        copy.starts_with(&format!("{}:latest@sha256:", reg.oci("copies/hello"))),
        "{copy}"
    );
    let (_, body) = http_get(
        &reg.addr,
        "/v2/copies/hello/manifests/latest",
        "application/vnd.oci.image.manifest.v1+json",
    )
    .unwrap();
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest["layers"][0]["digest"], digest.as_str());
}

#[test]
fn a_pinned_manifest_must_match_its_digest() {
    let reg = Registry::start();
    let data = tempfile::tempdir().unwrap();
    let (path, _) = hello();
    let pinned = push(
        data.path(),
        path.to_str().unwrap(),
        &reg.oci("tools/hello:v1"),
    );
    let manifest_digest = pinned.rsplit('@').next().unwrap().to_string();

    // A digest the registry does not hold.
    let other = format!("sha256:{}", "1".repeat(64));
    let err = refused(&run(
        data.path(),
        &["inspect", &format!("{}@{other}", reg.oci("tools/hello"))],
    ));
    assert!(err.contains("no such manifest"), "{err}");

    // The registry's copy of the manifest altered (still valid JSON, same
    // length): pulled by its digest, it no longer hashes to that digest.
    let file = reg.blob_file(&manifest_digest);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("application/wasm\""));
    std::fs::write(
        &file,
        text.replace("application/wasm\"", "application/wasx\""),
    )
    .unwrap();
    let err = refused(&run(
        data.path(),
        &[
            "components",
            "add",
            &format!("{}@{manifest_digest}", reg.oci("tools/hello")),
            "--name",
            "hello",
        ],
    ));
    assert!(err.contains("digest"), "{err}");
    assert!(err.contains("refused"), "{err}");
    let list = ok(&run(data.path(), &["components", "list"]));
    assert!(list.is_empty(), "nothing registered: {list}");
}

#[test]
fn a_tampered_layer_is_refused() {
    let reg = Registry::start();
    let data = tempfile::tempdir().unwrap();
    let (path, bytes) = hello();
    push(
        data.path(),
        path.to_str().unwrap(),
        &reg.oci("tools/hello:v1"),
    );
    let digest = format!("sha256:{}", sha256_hex(&bytes));

    // Flip one byte of the stored layer: same size, different content.
    let file = reg.blob_file(&digest);
    let mut stored = std::fs::read(&file).unwrap();
    assert_eq!(stored, bytes);
    let last = stored.len() - 1;
    stored[last] ^= 0xff;
    std::fs::write(&file, &stored).unwrap();

    for args in [
        vec![
            "components",
            "add",
            &reg.oci("tools/hello:v1"),
            "--name",
            "hello",
        ],
        vec!["call", &reg.oci("tools/hello:v1"), "greet"],
    ] {
        let err = refused(&run(
            data.path(),
            &args.iter().map(|s| &**s).collect::<Vec<_>>(),
        ));
        assert!(err.contains(&digest), "{err}");
        assert!(err.contains("refused"), "{err}");
    }
    let list = ok(&run(data.path(), &["components", "list"]));
    assert!(list.is_empty(), "nothing registered: {list}");
}

#[test]
fn an_unreachable_registry_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there any more
    let r = format!("oci://127.0.0.1:{port}/tools/hello:v1");
    let err = refused(&run(
        data.path(),
        &["components", "add", &r, "--name", "hello"],
    ));
    assert!(
        err.contains(&format!("registry 127.0.0.1:{port}")) && err.contains("cannot connect"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connection refused"), "{err}");

    // Pushing there fails the same way.
    let (path, _) = hello();
    let o = run(
        data.path(),
        &["components", "push", path.to_str().unwrap(), &r],
    );
    let err = refused(&o);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn references_and_push_targets_are_checked() {
    let data = tempfile::tempdir().unwrap();
    let err = refused(&run(data.path(), &["inspect", "oci://hello:v1"]));
    assert!(err.contains("expected oci://host"), "{err}");
    let err = refused(&run(data.path(), &["inspect", "oci://tools/hello:v1"]));
    assert!(err.contains("not a registry host"), "{err}");
    let (path, _) = hello();
    let pinned = format!("oci://127.0.0.1:1/tools/hello@sha256:{}", "a".repeat(64));
    let err = refused(&run(
        data.path(),
        &["components", "push", path.to_str().unwrap(), &pinned],
    ));
    assert!(err.contains("names a tag, not a digest"), "{err}");
    let err = refused(&run(
        data.path(),
        &[
            "components",
            "push",
            path.to_str().unwrap(),
            "127.0.0.1:1/x",
        ],
    ));
    assert!(err.contains("oci://host[:port]/repository[:tag]"), "{err}");
}

/// An HTTPS server on a free loopback port with a certificate for
/// `localhost` made in the test, serving one file at `/hello.wasm`.
struct TlsServer {
    port: u16,
    /// The certificate as PEM, to trust with `--ca-cert`.
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start(body: Vec<u8>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let body = Arc::new(body);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let acceptor = acceptor.clone();
                    let body = body.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                        // A client that does not trust the certificate
                        // fails the handshake: nothing more to do.
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let line = String::from_utf8_lossy(&head).to_string();
                        let (status, payload): (&str, &[u8]) =
                            if line.starts_with("GET /hello.wasm ") {
                                ("200 OK", &body)
                            } else {
                                ("404 Not Found", b"not found")
                            };
                        let reply = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            payload.len()
                        );
                        let _ = tls.write_all(reply.as_bytes()).await;
                        let _ = tls.write_all(payload).await;
                        let _ = tls.shutdown().await;
                    });
                }
            });
        });
        Self {
            port,
            ca,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

#[test]
fn https_urls_need_a_digest_pin_and_a_trusted_certificate() {
    let (_, bytes) = hello();
    let hex = sha256_hex(&bytes);
    let server = TlsServer::start(bytes);
    let data = tempfile::tempdir().unwrap();
    let ca = server.ca.to_str().unwrap();
    let url = server.url("/hello.wasm");

    // Unpinned: refused before anything is fetched, saying how to pin.
    let err = refused(&run(data.path(), &["call", &url, "greet", "--ca-cert", ca]));
    assert!(err.contains("must be pinned by digest"), "{err}");
    assert!(
        err.contains("--digest sha256:") && err.contains("#sha256="),
        "{err}"
    );

    // Pinned in the URL, trusted through --ca-cert: called.
    let pinned = format!("{url}#sha256={hex}");
    let out = ok(&run(
        data.path(),
        &[
            "call",
            &pinned,
            "greet",
            "--ca-cert",
            ca,
            "--args",
            r#"{"name":"Ada"}"#,
        ],
    ));
    assert_eq!(out.trim(), r#""Hello, Ada!""#);

    // Pinned with --digest, trusted through TESSERA_CA_CERT: added, with
    // the pinned URL as its origin.
    let o = tessera(data.path())
        .env("TESSERA_CA_CERT", ca)
        .args(["components", "add", &url, "--name", "hello", "--digest"])
        .arg(format!("sha256:{hex}"))
        .output()
        .unwrap();
    ok(&o);
    let list = ok(&run(data.path(), &["components", "list"]));
    assert!(list.contains(&pinned), "{list}");

    // The certificate is not trusted without --ca-cert.
    let err = refused(&run(data.path(), &["inspect", &pinned]));
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A wrong pin: refused, naming both digests.
    let wrong = "0".repeat(64);
    let err = refused(&run(
        data.path(),
        &["inspect", &format!("{url}#sha256={wrong}"), "--ca-cert", ca],
    ));
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(err.contains(&wrong) && err.contains(&hex), "{err}");

    // Two pins that disagree.
    let err = refused(&run(
        data.path(),
        &[
            "inspect",
            &pinned,
            "--ca-cert",
            ca,
            "--digest",
            &format!("sha256:{wrong}"),
        ],
    ));
    assert!(err.contains("the URL pins"), "{err}");

    // A missing file is the server's 404.
    let err = refused(&run(
        data.path(),
        &[
            "inspect",
            &format!("{}#sha256={hex}", server.url("/nope.wasm")),
            "--ca-cert",
            ca,
        ],
    ));
    assert!(err.contains("HTTP 404"), "{err}");

    // Plain http:// is not a source.
    let err = refused(&run(
        data.path(),
        &[
            "inspect",
            &format!("http://127.0.0.1:{}/hello.wasm#sha256={hex}", server.port),
        ],
    ));
    assert!(err.contains("`http://` is not a component source"), "{err}");
}

#[test]
fn add_through_a_server_fetches_on_the_client() {
    let reg = Registry::start();
    let client = tempfile::tempdir().unwrap();
    let (path, bytes) = hello();
    let pinned = push(
        client.path(),
        path.to_str().unwrap(),
        &reg.oci("tools/hello:v1"),
    );

    let server_data = tempfile::tempdir().unwrap();
    let serving = Serving::start(server_data.path(), &[]);
    ok(&run(
        client.path(),
        &[
            "components",
            "--server",
            &serving.base,
            "add",
            &reg.oci("tools/hello:v1"),
            "--name",
            "hello",
        ],
    ));
    let (status, info) = serving.request("GET", "/v1/components/hello", "");
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["versions"][0]["origin"], pinned.as_str());
    assert_eq!(
        info["versions"][0]["digest"],
        format!("sha256:{}", sha256_hex(&bytes)).as_str()
    );
    let (status, called) = serving.request(
        "POST",
        "/v1/components/hello/call/greet",
        r#"{"name":"Ada"}"#,
    );
    assert_eq!(status, 200, "{called}");
    assert_eq!(called["result"], "Hello, Ada!");

    // The upload's `origin` is a label: one line, at most 1024 characters.
    use base64::Engine as _;
    let wasm = base64::engine::general_purpose::STANDARD.encode(&bytes);
    for (origin, status) in [
        ("a\nb".to_string(), 400),
        ("x".repeat(1025), 400),
        ("mine".into(), 201),
    ] {
        let body = serde_json::json!({ "wasm_base64": wasm, "origin": origin }).to_string();
        let (got, answer) = serving.request("PUT", "/v1/components/labelled", &body);
        assert_eq!(got, status, "{answer}");
        if status == 400 {
            assert_eq!(answer["error"]["path"], "$.origin", "{answer}");
        }
    }
    let (_, info) = serving.request("GET", "/v1/components/labelled", "");
    assert_eq!(info["versions"][0]["origin"], "mine");

    // A registered name is pushed from the local data directory only.
    let err = refused(&run(
        client.path(),
        &[
            "components",
            "--server",
            &serving.base,
            "push",
            "hello",
            &reg.oci("copies/hello:v1"),
        ],
    ));
    assert!(err.contains("not through --server"), "{err}");
    serving.stop();
}

#[test]
fn registry_credentials_are_used_and_never_recorded() {
    let password = "s3cret-f00d-4c1d";
    let reg = Registry::start_with_login("alice", password);
    let data = tempfile::tempdir().unwrap();
    let (path, _) = hello();
    let target = reg.oci("tools/hello:v1");
    let mut transcript = String::new();
    let mut keep = |o: &Output| {
        transcript.push_str(&String::from_utf8_lossy(&o.stdout));
        transcript.push_str(&String::from_utf8_lossy(&o.stderr));
    };

    // Anonymous: refused, saying how to log in.
    let o = run(
        data.path(),
        &["components", "push", path.to_str().unwrap(), &target],
    );
    keep(&o);
    let err = refused(&o);
    assert!(
        err.contains("refused access") && err.contains("--registry-user"),
        "{err}"
    );

    // A wrong password: refused.
    let o = tessera(data.path())
        .args(["components", "push", path.to_str().unwrap(), &target])
        .env("TESSERA_REGISTRY_USER", "alice")
        .env("TESSERA_REGISTRY_PASSWORD", "wrong")
        .output()
        .unwrap();
    keep(&o);
    let err = refused(&o);
    assert!(err.contains("refused access"), "{err}");

    // A user without a password is a usage error.
    let o = run(
        data.path(),
        &[
            "components",
            "push",
            path.to_str().unwrap(),
            &target,
            "--registry-user",
            "alice",
        ],
    );
    keep(&o);
    assert!(refused(&o).contains("TESSERA_REGISTRY_PASSWORD"));

    // The right credentials: push, add, and a recorded call.
    let with_login = |args: &[&str]| {
        tessera(data.path())
            .args(args)
            .env("TESSERA_REGISTRY_USER", "alice")
            .env("TESSERA_REGISTRY_PASSWORD", password)
            .output()
            .unwrap()
    };
    let o = with_login(&["components", "push", path.to_str().unwrap(), &target]);
    keep(&o);
    ok(&o);
    let o = with_login(&["components", "add", &target, "--name", "hello"]);
    keep(&o);
    ok(&o);
    let o = with_login(&[
        "call",
        &target,
        "greet",
        "--record",
        "--json",
        "--args",
        r#"{"name":"Ada"}"#,
    ]);
    keep(&o);
    assert!(ok(&o).contains("Hello, Ada!"));
    // Anonymous pulls stay refused.
    let o = run(data.path(), &["inspect", &target]);
    keep(&o);
    assert!(refused(&o).contains("refused access"));

    // The password is in no output and no file of the data directory
    // (registry, journal, audit log).
    assert!(!transcript.contains(password), "{transcript}");
    let mut files = vec![data.path().to_path_buf()];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            seen += 1;
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "{} holds the password",
                p.display()
            );
        }
    }
    assert!(seen >= 3, "registry, journal and audit log were written");
}
