//! One conformance suite, run against both backends: the embedded redb
//! store (a file in a temporary directory) and NATS JetStream (a
//! `nats-server -js` each test starts on a free loopback port, with its own
//! storage directory, and kills when it ends). Every suite test exists
//! twice, as `embedded::<name>` and `nats::<name>`; the `nats_only` tests
//! cover what only NATS has (an unreachable server, the entries other NATS
//! clients see, the server's payload limit).
//!
//! The tests need `nats-server` (`scripts/nats-server.sh` installs it); they
//! fail, not skip, without it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tessera_store::{
    Embedded, Entry, Expect, Nats, NatsOptions, Page, SharedStore, Store, StoreError,
};
use tessera_test_support::{NatsOptions as ServerOptions, NatsServer, free_port, nats_server_bin};

// ---------------------------------------------------------------------------
// The backends.

/// The largest message the test servers take (the default is 1 MB).
const TEST_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// A `nats-server` with JetStream on a free loopback port, taking messages
/// up to [`TEST_MAX_PAYLOAD`]; killed when dropped.
fn start_nats() -> NatsServer {
    start_nats_with(true)
}

fn start_nats_with(jetstream: bool) -> NatsServer {
    NatsServer::start_with(ServerOptions {
        jetstream,
        max_payload: Some(TEST_MAX_PAYLOAD),
        sync_always: false,
    })
    .expect("nats-server starts")
}

/// A prefix no other test uses (each test has its own server anyway).
fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}n{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

enum Kind {
    Embedded { path: PathBuf },
    Nats { server: NatsServer, prefix: String },
}

/// A store under test and what keeps it alive.
struct Fixture {
    store: SharedStore,
    kind: Kind,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    async fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store = Embedded::open(&path).unwrap();
        Self {
            store: Arc::new(store),
            kind: Kind::Embedded { path },
            _dir: Some(dir),
        }
    }

    async fn nats() -> Self {
        let server = start_nats();
        let prefix = unique_prefix();
        let store = Nats::connect(NatsOptions {
            url: server.url().to_string(),
            prefix: prefix.clone(),
            credentials: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; nats-server log:\n{}", server.log()));
        Self {
            store: Arc::new(store),
            kind: Kind::Nats { server, prefix },
            _dir: None,
        }
    }

    /// Another handle on the same store: a second NATS connection; the
    /// same embedded store (one process holds a store file once).
    async fn another(&self) -> SharedStore {
        match &self.kind {
            Kind::Embedded { path } => {
                assert!(path.exists());
                self.store.clone()
            }
            Kind::Nats { server, prefix } => Arc::new(
                Nats::connect(NatsOptions {
                    url: server.url().to_string(),
                    prefix: prefix.clone(),
                    credentials: None,
                })
                .await
                .unwrap(),
            ),
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let f = super::Fixture::embedded().await;
                    assert_eq!(f.store.backend(), "embedded");
                    super::$name(&f).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let f = super::Fixture::nats().await;
                    assert_eq!(f.store.backend(), "nats");
                    super::$name(&f).await;
                }
            )*
        }
    };
}

conformance!(
    put_get_and_revisions,
    delete,
    put_expecting_absent,
    compare_and_swap,
    increment,
    concurrent_increments_lose_none,
    concurrent_cas_loops_lose_none,
    list_pages,
    odd_keys_round_trip,
    ttl,
    buckets,
    batches,
    invalid_names,
    concurrent_first_writes_to_a_bucket,
    large_values,
    many_keys,
    lazy_and_hint_writes_keep_their_conditions,
    writes_in_order_stop_at_the_first_unmet_condition,
);

// ---------------------------------------------------------------------------
// Helpers.

async fn put(s: &SharedStore, bucket: &str, key: &str, value: &str) -> u64 {
    s.put(bucket, key, value.as_bytes(), Expect::Any, None)
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key:?}: {e}"))
}

async fn value(s: &SharedStore, bucket: &str, key: &str) -> Option<String> {
    s.get(bucket, key)
        .await
        .unwrap_or_else(|e| panic!("get {bucket}/{key:?}: {e}"))
        .map(|e| String::from_utf8(e.value).unwrap())
}

/// Every key of a listing, page by page.
async fn list_all(s: &SharedStore, bucket: &str, prefix: &str, limit: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let page = s
            .list(bucket, prefix, after.as_deref(), limit)
            .await
            .unwrap();
        assert!(page.keys.len() <= limit, "{page:?}");
        out.extend(page.keys.iter().cloned());
        match page.cursor {
            None => return out,
            Some(c) => {
                assert_eq!(Some(&c), page.keys.last(), "the cursor is the last key");
                after = Some(c);
            }
        }
    }
    panic!("the listing did not end");
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(
    r: Result<T, StoreError>,
    want_expected: Expect,
    want_found: Option<u64>,
) {
    match r {
        Err(StoreError::Conflict {
            expected, found, ..
        }) => {
            assert_eq!(expected, want_expected);
            assert_eq!(found, want_found);
        }
        other => panic!("expected a conflict ({want_expected}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The suite.

async fn put_get_and_revisions(f: &Fixture) {
    let s = &f.store;
    assert_eq!(
        s.get("never", "k").await.unwrap(),
        None,
        "a bucket never written"
    );
    assert_eq!(
        s.list("never", "", None, 10).await.unwrap(),
        Page::default()
    );
    assert_eq!(s.get("b", "missing").await.unwrap(), None);

    let r1 = put(s, "b", "k", "one").await;
    assert_eq!(
        s.get("b", "k").await.unwrap(),
        Some(Entry {
            value: b"one".to_vec(),
            revision: r1
        })
    );
    assert_eq!(s.get("b", "missing").await.unwrap(), None);
    let r2 = put(s, "b", "k", "two").await;
    assert!(r2 > r1, "{r2} > {r1}");
    let r3 = put(s, "b", "other", "x").await;
    assert!(r3 > r2, "revisions grow within a bucket: {r3} > {r2}");
    let e = s.get("b", "k").await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.revision), (&b"two"[..], r2));
    // Empty values are values.
    put(s, "b", "empty", "").await;
    assert_eq!(value(s, "b", "empty").await.as_deref(), Some(""));
    // Binary values.
    let bytes: Vec<u8> = (0..=255u8).collect();
    s.put("b", "bin", &bytes, Expect::Any, None).await.unwrap();
    assert_eq!(s.get("b", "bin").await.unwrap().unwrap().value, bytes);
}

async fn delete(f: &Fixture) {
    let s = &f.store;
    put(s, "b", "k", "v").await;
    s.delete("b", "k", Expect::Any).await.unwrap();
    assert_eq!(s.get("b", "k").await.unwrap(), None);
    // Deleting what is absent is not an error, in a bucket or not.
    s.delete("b", "k", Expect::Any).await.unwrap();
    s.delete("b", "never-written", Expect::Any).await.unwrap();
    s.delete("no-such-bucket", "k", Expect::Any).await.unwrap();
    s.delete("no-such-bucket", "k", Expect::Absent)
        .await
        .unwrap();
    assert_conflict(
        s.delete("no-such-bucket", "k", Expect::Revision(1)).await,
        Expect::Revision(1),
        None,
    );
    // Written again after a delete.
    let r = put(s, "b", "k", "again").await;
    assert_eq!(s.get("b", "k").await.unwrap().unwrap().revision, r);
    assert_eq!(list_all(s, "b", "", 10).await, vec!["k"]);
    s.delete("b", "k", Expect::Any).await.unwrap();
    assert!(list_all(s, "b", "", 10).await.is_empty());
}

async fn put_expecting_absent(f: &Fixture) {
    let s = &f.store;
    let r1 = s
        .put("b", "k", b"first", Expect::Absent, None)
        .await
        .unwrap();
    assert_conflict(
        s.put("b", "k", b"second", Expect::Absent, None).await,
        Expect::Absent,
        Some(r1),
    );
    assert_eq!(value(s, "b", "k").await.as_deref(), Some("first"));
    s.delete("b", "k", Expect::Any).await.unwrap();
    let r2 = s
        .put("b", "k", b"third", Expect::Absent, None)
        .await
        .expect("absent again after a delete");
    assert!(r2 > r1);
    assert_eq!(value(s, "b", "k").await.as_deref(), Some("third"));
    // In a bucket that does not exist yet.
    s.put("fresh", "k", b"v", Expect::Absent, None)
        .await
        .unwrap();
}

async fn compare_and_swap(f: &Fixture) {
    let s = &f.store;
    let r1 = put(s, "b", "k", "1").await;
    let r2 = s
        .put("b", "k", b"2", Expect::Revision(r1), None)
        .await
        .unwrap();
    assert!(r2 > r1);
    assert_conflict(
        s.put("b", "k", b"stale", Expect::Revision(r1), None).await,
        Expect::Revision(r1),
        Some(r2),
    );
    assert_eq!(value(s, "b", "k").await.as_deref(), Some("2"));
    assert_conflict(
        s.put("b", "absent", b"x", Expect::Revision(r2), None).await,
        Expect::Revision(r2),
        None,
    );
    assert_eq!(s.get("b", "absent").await.unwrap(), None);
    // Deletes.
    assert_conflict(
        s.delete("b", "k", Expect::Revision(r1)).await,
        Expect::Revision(r1),
        Some(r2),
    );
    assert_conflict(
        s.delete("b", "k", Expect::Absent).await,
        Expect::Absent,
        Some(r2),
    );
    assert_eq!(value(s, "b", "k").await.as_deref(), Some("2"));
    s.delete("b", "k", Expect::Revision(r2)).await.unwrap();
    assert_eq!(s.get("b", "k").await.unwrap(), None);
    s.delete("b", "k", Expect::Absent).await.unwrap();
    assert_conflict(
        s.delete("b", "k", Expect::Revision(r2)).await,
        Expect::Revision(r2),
        None,
    );
    assert_conflict(
        s.put("b", "k", b"x", Expect::Revision(r2), None).await,
        Expect::Revision(r2),
        None,
    );
}

async fn increment(f: &Fixture) {
    let s = &f.store;
    assert_eq!(s.increment("b", "n", 5).await.unwrap(), 5, "absent is 0");
    assert_eq!(s.increment("b", "n", -7).await.unwrap(), -2);
    assert_eq!(value(s, "b", "n").await.as_deref(), Some("-2"));
    let r1 = s.get("b", "n").await.unwrap().unwrap().revision;
    assert_eq!(s.increment("b", "n", 0).await.unwrap(), -2);
    assert!(s.get("b", "n").await.unwrap().unwrap().revision > r1);
    // Surrounding ASCII space is allowed.
    put(s, "b", "spaced", " 41\n").await;
    assert_eq!(s.increment("b", "spaced", 1).await.unwrap(), 42);
    assert_eq!(value(s, "b", "spaced").await.as_deref(), Some("42"));

    put(s, "b", "text", "forty").await;
    assert!(matches!(
        s.increment("b", "text", 1).await,
        Err(StoreError::NotAnInteger { .. })
    ));
    assert_eq!(value(s, "b", "text").await.as_deref(), Some("forty"));

    put(s, "b", "big", &i64::MAX.to_string()).await;
    assert!(matches!(
        s.increment("b", "big", 1).await,
        Err(StoreError::Overflow { .. })
    ));
    assert_eq!(value(s, "b", "big").await, Some(i64::MAX.to_string()));
    assert_eq!(s.increment("b", "big", -1).await.unwrap(), i64::MAX - 1);
    s.put(
        "b",
        "low",
        i64::MIN.to_string().as_bytes(),
        Expect::Any,
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        s.increment("b", "low", -1).await,
        Err(StoreError::Overflow { .. })
    ));

    s.delete("b", "n", Expect::Any).await.unwrap();
    assert_eq!(s.increment("b", "n", 3).await.unwrap(), 3, "deleted is 0");
    // In a bucket that does not exist yet.
    assert_eq!(s.increment("counters", "c", -1).await.unwrap(), -1);
}

async fn concurrent_increments_lose_none(f: &Fixture) {
    const TASKS: i64 = 20;
    const EACH: i64 = 10;
    // Half the tasks on a second handle (a second connection on NATS).
    let other = f.another().await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let s = if t % 2 == 0 {
            f.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..EACH {
                seen.push(s.increment("counters", "hits", 1).await.unwrap());
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    // Each increment saw a value of its own: none lost, none counted twice.
    assert_eq!(all, (1..=TASKS * EACH).collect::<Vec<_>>());
    assert_eq!(
        value(&f.store, "counters", "hits").await,
        Some((TASKS * EACH).to_string())
    );
}

async fn concurrent_cas_loops_lose_none(f: &Fixture) {
    const TASKS: u64 = 5;
    const EACH: u64 = 20;
    let other = f.another().await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let s = if t % 2 == 0 {
            f.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..EACH {
                loop {
                    let current = s.get("cas", "count").await.unwrap();
                    let (n, expect) = match &current {
                        None => (0, Expect::Absent),
                        Some(e) => (
                            std::str::from_utf8(&e.value)
                                .unwrap()
                                .parse::<u64>()
                                .unwrap(),
                            Expect::Revision(e.revision),
                        ),
                    };
                    match s
                        .put("cas", "count", (n + 1).to_string().as_bytes(), expect, None)
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        value(&f.store, "cas", "count").await,
        Some((TASKS * EACH).to_string())
    );
}

async fn list_pages(f: &Fixture) {
    let s = &f.store;
    let mut want: Vec<String> = (0..23).map(|i| format!("k/{i:02}")).collect();
    for k in &want {
        put(s, "b", k, "v").await;
    }
    for k in ["j", "k", "k0", "l/0", "kz"] {
        put(s, "b", k, "v").await;
    }
    // Deleted keys are not listed.
    put(s, "b", "k/gone", "v").await;
    s.delete("b", "k/gone", Expect::Any).await.unwrap();

    for limit in [1, 5, 7, 23, 100] {
        assert_eq!(list_all(s, "b", "k/", limit).await, want, "limit {limit}");
    }
    let first = s.list("b", "k/", None, 7).await.unwrap();
    assert_eq!(first.keys, want[..7]);
    assert_eq!(first.cursor.as_deref(), Some("k/06"));
    let second = s.list("b", "k/", Some("k/06"), 7).await.unwrap();
    assert_eq!(second.keys, want[7..14]);
    let last = s.list("b", "k/", Some("k/15"), 7).await.unwrap();
    assert_eq!(last.keys, want[16..23]);
    assert_eq!(last.cursor, None, "no cursor when nothing remains");
    let exact = s.list("b", "k/", None, 23).await.unwrap();
    assert_eq!((exact.keys.len(), exact.cursor), (23, None));
    // `after` need not be a key, nor start with the prefix.
    assert_eq!(
        s.list("b", "k/", Some("k/10x"), 3).await.unwrap().keys,
        want[11..14]
    );
    assert_eq!(
        s.list("b", "k/", Some("a"), 2).await.unwrap().keys,
        want[..2]
    );
    assert!(
        s.list("b", "k/", Some("z"), 5)
            .await
            .unwrap()
            .keys
            .is_empty()
    );
    // A limit of 0: nothing, and no cursor.
    assert_eq!(s.list("b", "k/", None, 0).await.unwrap(), Page::default());
    // No prefix: every key, in byte order.
    want.extend(["j", "k", "k0", "kz", "l/0"].map(String::from));
    want.sort();
    assert_eq!(list_all(s, "b", "", 4).await, want);
    assert_eq!(list_all(s, "b", "k", 100).await.len(), 26);
    assert!(
        s.list("b", "nothing", None, 5)
            .await
            .unwrap()
            .keys
            .is_empty()
    );
}

async fn odd_keys_round_trip(f: &Fixture) {
    let s = &f.store;
    let keys = [
        "with space",
        "é",
        "a:b",
        "*",
        ">",
        "a.*.>",
        "_x.abc",
        "_x.",
        "_x",
        ".dot",
        "dot.",
        "a..b",
        "plain",
        "a/b.c-d_e=f",
        "日本語 キー",
        "tab\u{a0}nbsp",
        "quote\"'`",
    ];
    for k in keys {
        put(s, "odd", k, &format!("value of {k}")).await;
    }
    for k in keys {
        assert_eq!(
            value(s, "odd", k).await,
            Some(format!("value of {k}")),
            "{k:?}"
        );
    }
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(list_all(s, "odd", "", 3).await, want);
    assert_eq!(list_all(s, "odd", "_x.", 10).await, vec!["_x.", "_x.abc"]);
    assert_eq!(
        list_all(s, "odd", "_x", 10).await,
        vec!["_x", "_x.", "_x.abc"]
    );
    let a: Vec<String> = want
        .iter()
        .filter(|k| k.starts_with('a'))
        .cloned()
        .collect();
    assert_eq!(a.len(), 4);
    assert_eq!(list_all(s, "odd", "a", 10).await, a);
    // CAS, increments and deletes on such keys.
    let e = s.get("odd", "a:b").await.unwrap().unwrap();
    s.put("odd", "a:b", b"new", Expect::Revision(e.revision), None)
        .await
        .unwrap();
    assert_eq!(s.increment("odd", "count me é", 2).await.unwrap(), 2);
    s.delete("odd", "_x.abc", Expect::Any).await.unwrap();
    assert_eq!(s.get("odd", "_x.abc").await.unwrap(), None);
    assert_eq!(list_all(s, "odd", "_x", 10).await, vec!["_x", "_x."]);
    // The longest key.
    let long = "é".repeat(tessera_store::MAX_KEY_BYTES / 2);
    put(s, "odd", &long, "long").await;
    assert_eq!(value(s, "odd", &long).await.as_deref(), Some("long"));
}

/// Polls until `key` reads as absent; how long it took.
async fn until_absent(s: &SharedStore, bucket: &str, key: &str, start: Instant) -> Duration {
    let deadline = start + Duration::from_secs(15);
    loop {
        if s.get(bucket, key).await.unwrap().is_none() {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{key:?} still present 15 s after its 300 ms TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ttl(f: &Fixture) {
    let s = &f.store;
    let ttl = Some(Duration::from_millis(300));
    put(s, "ttl", "stays", "v").await;
    put(s, "ttl-only", "k", "v").await;
    let start = Instant::now();
    let r = s.put("ttl", "brief", b"v", Expect::Any, ttl).await.unwrap();
    s.put("ttl", "counter", b"41", Expect::Any, ttl)
        .await
        .unwrap();
    s.put("ttl-only", "k", b"v", Expect::Any, ttl)
        .await
        .unwrap();
    // Present until it passes (the test checks right away: far less than
    // 300 ms after the put on any machine that runs it).
    let present = s.get("ttl", "brief").await.unwrap();
    if start.elapsed() < Duration::from_millis(250) {
        assert_eq!(present.map(|e| e.revision), Some(r));
        assert_eq!(
            list_all(s, "ttl", "", 10).await,
            vec!["brief", "counter", "stays"]
        );
    }
    let took = until_absent(s, "ttl", "brief", start).await;
    assert!(
        took >= Duration::from_millis(290),
        "absent after {took:?}, before its TTL"
    );
    until_absent(s, "ttl", "counter", start).await;
    // Absent everywhere.
    assert_eq!(list_all(s, "ttl", "", 10).await, vec!["stays"]);
    let many = s
        .get_many("ttl", &["brief".into(), "stays".into()])
        .await
        .unwrap();
    assert_eq!(many[0], None);
    assert!(many[1].is_some());
    // A bucket whose only key expired is not listed (the embedded store
    // counts an expired key until its sweep removes it, within about a
    // second of idleness: hence the polling).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let b = s.buckets().await.unwrap();
        if b == vec!["ttl"] {
            break;
        }
        assert!(Instant::now() < deadline, "buckets: {b:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Conditions: absent, not at its revision.
    assert_conflict(
        s.put("ttl", "brief", b"x", Expect::Revision(r), None).await,
        Expect::Revision(r),
        None,
    );
    assert_conflict(
        s.delete("ttl", "brief", Expect::Revision(r)).await,
        Expect::Revision(r),
        None,
    );
    s.delete("ttl", "brief", Expect::Absent).await.unwrap();
    let r2 = s
        .put("ttl", "brief", b"back", Expect::Absent, None)
        .await
        .expect("an expired key is absent");
    assert!(r2 > r);
    assert_eq!(value(s, "ttl", "brief").await.as_deref(), Some("back"));
    // An expired counter counts from 0.
    assert_eq!(s.increment("ttl", "counter", 1).await.unwrap(), 1);
    // A put without a TTL over one with a TTL keeps the value for good.
    s.put("ttl", "kept", b"v", Expect::Any, ttl).await.unwrap();
    put(s, "ttl", "kept", "for good").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(value(s, "ttl", "kept").await.as_deref(), Some("for good"));
}

async fn buckets(f: &Fixture) {
    let s = &f.store;
    assert_eq!(s.buckets().await.unwrap(), Vec::<String>::new());
    put(s, "beta", "k", "v").await;
    put(s, "alpha", "k", "v").await;
    put(s, "gamma-2", "k", "v").await;
    put(s, "gamma_1", "k", "v").await;
    assert_eq!(
        s.buckets().await.unwrap(),
        vec!["alpha", "beta", "gamma-2", "gamma_1"]
    );
    s.delete("beta", "k", Expect::Any).await.unwrap();
    assert_eq!(
        s.buckets().await.unwrap(),
        vec!["alpha", "gamma-2", "gamma_1"],
        "a bucket without keys is not listed"
    );
    // Reads and deletes do not make buckets.
    s.get("delta", "k").await.unwrap();
    s.delete("delta", "k", Expect::Any).await.unwrap();
    s.list("delta", "", None, 1).await.unwrap();
    assert!(!s.buckets().await.unwrap().contains(&"delta".to_string()));
}

async fn batches(f: &Fixture) {
    let s = &f.store;
    let entries: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("k{i:02}"), format!("v{i}").into_bytes()))
        .collect();
    s.put_many("b", &entries).await.unwrap();
    s.put_many("b", &[]).await.unwrap();
    let asked: Vec<String> = vec!["k03".into(), "missing".into(), "k01".into(), "k39".into()];
    let got = s.get_many("b", &asked).await.unwrap();
    let values: Vec<Option<Vec<u8>>> = got
        .iter()
        .map(|e| e.as_ref().map(|e| e.value.clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            Some(b"v3".to_vec()),
            None,
            Some(b"v1".to_vec()),
            Some(b"v39".to_vec())
        ]
    );
    for (e, k) in got.iter().zip(&asked) {
        if let Some(e) = e {
            assert_eq!(s.get("b", k).await.unwrap().as_ref(), Some(e));
        }
    }
    assert_eq!(list_all(s, "b", "k", 15).await.len(), 40);
    let gone: Vec<String> = (0..40).step_by(2).map(|i| format!("k{i:02}")).collect();
    s.delete_many("b", &gone).await.unwrap();
    s.delete_many("b", &["never".into()]).await.unwrap();
    s.delete_many("nobucket", &["k".into()]).await.unwrap();
    let left = list_all(s, "b", "", 100).await;
    assert_eq!(left.len(), 20);
    assert!(left.iter().all(|k| !gone.contains(k)));
    assert!(
        s.get_many("b", &gone)
            .await
            .unwrap()
            .iter()
            .all(Option::is_none)
    );
    assert_eq!(
        s.get_many("nobucket", &["a".into(), "b".into()])
            .await
            .unwrap(),
        vec![None, None]
    );
    assert_eq!(s.get_many("b", &[]).await.unwrap(), vec![]);
}

async fn invalid_names(f: &Fixture) {
    let s = &f.store;
    let bad_bucket = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::InvalidBucket { .. })), "{r:?}")
    };
    let bad_key = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::InvalidKey { .. })), "{r:?}")
    };
    for bucket in ["", "a.b", "a b", "é", "a>", "*", &"x".repeat(65)] {
        bad_bucket(s.get(bucket, "k").await.map(drop));
        bad_bucket(s.put(bucket, "k", b"v", Expect::Any, None).await.map(drop));
        bad_bucket(s.delete(bucket, "k", Expect::Any).await);
        bad_bucket(s.increment(bucket, "k", 1).await.map(drop));
        bad_bucket(s.list(bucket, "", None, 1).await.map(drop));
        bad_bucket(s.get_many(bucket, &["k".into()]).await.map(drop));
        bad_bucket(s.put_many(bucket, &[("k".into(), vec![])]).await);
        bad_bucket(s.delete_many(bucket, &["k".into()]).await);
    }
    let long = "x".repeat(tessera_store::MAX_KEY_BYTES + 1);
    for key in ["", "a\nb", "nul\0", "\u{7f}", long.as_str()] {
        bad_key(s.get("b", key).await.map(drop));
        bad_key(s.put("b", key, b"v", Expect::Any, None).await.map(drop));
        bad_key(s.put("b", key, b"v", Expect::Absent, None).await.map(drop));
        bad_key(s.delete("b", key, Expect::Any).await);
        bad_key(s.increment("b", key, 1).await.map(drop));
        bad_key(s.get_many("b", &["ok".into(), key.into()]).await.map(drop));
        bad_key(
            s.put_many("b", &[("ok".into(), vec![]), (key.into(), vec![])])
                .await,
        );
        bad_key(s.delete_many("b", &["ok".into(), key.into()]).await);
    }
    // Nothing was written by the refused batches.
    assert_eq!(s.get("b", "ok").await.unwrap(), None);
    assert_eq!(s.buckets().await.unwrap(), Vec::<String>::new());
}

async fn concurrent_first_writes_to_a_bucket(f: &Fixture) {
    // Several handles (connections, on NATS) create the same bucket at once.
    let mut handles = vec![f.store.clone()];
    for _ in 0..3 {
        handles.push(f.another().await);
    }
    for round in 0..3 {
        let bucket = format!("fresh{round}");
        let mut tasks = Vec::new();
        for (i, s) in handles.iter().enumerate() {
            for j in 0..4 {
                let s = s.clone();
                let bucket = bucket.clone();
                tasks.push(tokio::spawn(async move {
                    s.put(&bucket, &format!("k{i}-{j}"), b"v", Expect::Any, None)
                        .await
                }));
            }
        }
        for t in tasks {
            t.await.unwrap().expect("a first write to a new bucket");
        }
        assert_eq!(list_all(&f.store, &bucket, "", 100).await.len(), 16);
    }
}

async fn large_values(f: &Fixture) {
    let s = &f.store;
    // 3 MB (the test NATS servers take messages up to 8 MB; NATS's default
    // is 1 MB).
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = s.put("big", "blob", &big, Expect::Any, None).await.unwrap();
    let e = s.get("big", "blob").await.unwrap().unwrap();
    assert_eq!(e.revision, r);
    assert!(e.value == big, "the value came back changed");
}

async fn many_keys(f: &Fixture) {
    // More keys than NATS reads in one request while listing (1024).
    let s = &f.store;
    let entries: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| (format!("key {i:05}"), i.to_string().into_bytes()))
        .collect();
    s.put_many("many", &entries).await.unwrap();
    let want: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(list_all(s, "many", "", 1000).await, want);
    assert_eq!(list_all(s, "many", "key 01", 64).await, want[1000..2000]);
    let page = s.list("many", "", Some("key 02498"), 10).await.unwrap();
    assert_eq!(
        (page.keys, page.cursor),
        (vec!["key 02499".to_string()], None)
    );
    assert_eq!(s.buckets().await.unwrap(), vec!["many"]);
}

// ---------------------------------------------------------------------------
// NATS only.

mod nats_only {
    use super::*;

    /// A plain NATS KV handle on a Tessera bucket, as another client sees it.
    async fn raw_bucket(
        server: &NatsServer,
        prefix: &str,
        bucket: &str,
    ) -> async_nats::jetstream::kv::Store {
        let client = async_nats::connect(server.url()).await.unwrap();
        async_nats::jetstream::new(client)
            .get_key_value(format!("{prefix}_{bucket}"))
            .await
            .unwrap()
    }

    fn server_and_prefix(f: &Fixture) -> (&NatsServer, &str) {
        match &f.kind {
            Kind::Nats { server, prefix } => (server, prefix),
            Kind::Embedded { .. } => unreachable!(),
        }
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        let port = free_port(); // nothing listens there
        let url = format!("nats://127.0.0.1:{port}");
        let start = Instant::now();
        let r = Nats::connect(NatsOptions {
            url: url.clone(),
            prefix: "tessera".into(),
            credentials: None,
        })
        .await;
        let took = start.elapsed();
        match r {
            Err(
                e @ StoreError::Unavailable {
                    backend: "nats", ..
                },
            ) => {
                let StoreError::Unavailable { at, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(at, &url);
                assert!(e.to_string().contains(&url), "{e}");
                println!("{e}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(took < Duration::from_secs(7), "took {took:?}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_unavailable_within_the_timeout() {
        // Accepts connections (the kernel does, for the backlog) and never
        // says a word.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("nats://{}", silent.local_addr().unwrap());
        let start = Instant::now();
        let r = Nats::connect(NatsOptions {
            url: url.clone(),
            prefix: "tessera".into(),
            credentials: None,
        })
        .await;
        let took = start.elapsed();
        match r {
            Err(StoreError::Unavailable { at, .. }) => assert_eq!(at, url),
            other => panic!("{other:?}"),
        }
        assert!(took < Duration::from_secs(8), "took {took:?}");
        drop(silent);
    }

    #[tokio::test]
    async fn a_server_without_jetstream_is_unavailable() {
        let server = start_nats_with(false);
        let r = Nats::connect(NatsOptions {
            url: server.url().to_string(),
            prefix: "tessera".into(),
            credentials: None,
        })
        .await;
        match r {
            Err(StoreError::Unavailable { at, message, .. }) => {
                assert_eq!(at, server.url());
                assert!(message.contains("JetStream"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_missing_credentials_file_is_unavailable() {
        let r = Nats::connect(NatsOptions {
            url: "nats://127.0.0.1:1".into(),
            prefix: "tessera".into(),
            credentials: Some(PathBuf::from("/nonexistent/tessera.creds")),
        })
        .await;
        match r {
            Err(StoreError::Unavailable { message, .. }) => {
                assert!(message.contains("/nonexistent/tessera.creds"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_bad_prefix_is_refused() {
        let r = Nats::connect(NatsOptions {
            url: "nats://127.0.0.1:1".into(),
            prefix: "a.b".into(),
            credentials: None,
        })
        .await;
        assert!(matches!(r, Err(StoreError::Settings { .. })), "{r:?}");
    }

    #[test]
    fn options_default_and_debug() {
        let o = NatsOptions::default();
        assert_eq!(o.url, "nats://127.0.0.1:4222");
        assert_eq!(o.prefix, "tessera");
        assert_eq!(o.credentials, None);
    }

    #[tokio::test]
    async fn plain_entries_for_other_clients() {
        let f = Fixture::nats().await;
        let (server, prefix) = server_and_prefix(&f);
        let s = &f.store;
        let r = put(s, "notes", "plain/key", "hello").await;
        put(s, "notes", "with space", "encoded").await;
        s.put(
            "notes",
            "brief",
            b"soon gone",
            Expect::Any,
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
        let kv = raw_bucket(server, prefix, "notes").await;
        let e = kv.entry("plain/key").await.unwrap().unwrap();
        assert_eq!((e.value.as_ref(), e.revision), (&b"hello"[..], r));
        let mut keys: Vec<String> =
            futures_util::TryStreamExt::try_collect(kv.keys().await.unwrap())
                .await
                .unwrap();
        keys.sort();
        assert_eq!(keys, vec!["_x.d2l0aCBzcGFjZQ", "brief", "plain/key"]);
        assert_eq!(
            kv.get("_x.d2l0aCBzcGFjZQ").await.unwrap().as_deref(),
            Some(&b"encoded"[..])
        );
        // The TTL is a header; the value is the value.
        assert_eq!(
            kv.get("brief").await.unwrap().as_deref(),
            Some(&b"soon gone"[..])
        );
        // What another client writes, Tessera reads (its keys are Tessera
        // keys as they are).
        kv.put("from.other", "theirs".into()).await.unwrap();
        // Under the marker but not base64url: no Tessera key, left out.
        kv.put("_x.a", "not ours".into()).await.unwrap();
        assert_eq!(
            value(s, "notes", "from.other").await.as_deref(),
            Some("theirs")
        );
        assert_eq!(
            list_all(s, "notes", "", 10).await,
            vec!["brief", "from.other", "plain/key", "with space"]
        );
        kv.delete("from.other").await.unwrap();
        assert_eq!(s.get("notes", "from.other").await.unwrap(), None);
        kv.purge("plain/key").await.unwrap();
        assert_eq!(s.get("notes", "plain/key").await.unwrap(), None);
        assert_eq!(
            list_all(s, "notes", "", 10).await,
            vec!["brief", "with space"]
        );
    }

    #[tokio::test]
    async fn a_value_over_max_payload_is_refused_clearly() {
        let f = Fixture::nats().await;
        let s = &f.store;
        let big = vec![7u8; TEST_MAX_PAYLOAD + 1];
        match s.put("big", "blob", &big, Expect::Any, None).await {
            Err(StoreError::Backend {
                backend: "nats",
                message,
            }) => {
                assert!(message.contains("max_payload"), "{message}");
                assert!(message.contains(&TEST_MAX_PAYLOAD.to_string()), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Just under the limit, headers included, also fails clearly or
        // passes; it never hangs.
        let edge = vec![7u8; TEST_MAX_PAYLOAD - 10];
        match s
            .put(
                "big",
                "edge",
                &edge,
                Expect::Absent,
                Some(Duration::from_secs(60)),
            )
            .await
        {
            Ok(_) => {}
            Err(StoreError::Backend { message, .. }) => {
                assert!(message.contains("max_payload"), "{message}")
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn buckets_of_other_prefixes_are_not_ours() {
        let f = Fixture::nats().await;
        let (server, prefix) = server_and_prefix(&f);
        put(&f.store, "mine", "k", "v").await;
        let other = Nats::connect(NatsOptions {
            url: server.url().to_string(),
            prefix: format!("{prefix}x"),
            credentials: None,
        })
        .await
        .unwrap();
        other
            .put("theirs", "k", b"v", Expect::Any, None)
            .await
            .unwrap();
        assert_eq!(f.store.buckets().await.unwrap(), vec!["mine"]);
        assert_eq!(other.buckets().await.unwrap(), vec!["theirs"]);
        assert_eq!(other.get("mine", "k").await.unwrap(), None);
        let debug = format!("{other:?}");
        assert!(debug.contains(server.url()), "{debug}");
    }

    #[tokio::test]
    async fn a_server_gone_is_unavailable() {
        let mut f = Fixture::nats().await;
        put(&f.store, "b", "k", "v").await;
        if let Kind::Nats { server, .. } = &mut f.kind {
            server.kill();
        }
        // Reads and writes fail as unavailable, within the request timeout
        // (5 s), not later.
        let start = Instant::now();
        let (get, put, list) = tokio::join!(
            f.store.get("b", "k"),
            f.store.put("b", "k", b"v", Expect::Any, None),
            f.store.list("b", "", None, 10),
        );
        for r in [get.map(drop), put.map(drop), list.map(drop)] {
            match r {
                Err(StoreError::Unavailable { at, message, .. }) => {
                    println!("{message}");
                    assert!(at.starts_with("nats://127.0.0.1:"))
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn the_server_binary_is_found() {
        assert!(Path::new(&nats_server_bin()).is_file());
    }
}

/// The writes that do not wait for durability mean the same as their
/// durable forms: conditions checked, revisions and counters returned,
/// TTLs kept, visible to readers at once.
async fn lazy_and_hint_writes_keep_their_conditions(f: &Fixture) {
    let s = &f.store;
    let b = "lazy";
    let r1 = s
        .put_lazy(b, "k", b"1", Expect::Absent, None)
        .await
        .unwrap();
    assert_eq!(value(s, b, "k").await.as_deref(), Some("1"));
    assert_conflict(
        s.put_lazy(b, "k", b"2", Expect::Absent, None).await,
        Expect::Absent,
        Some(r1),
    );
    assert_conflict(
        s.put_lazy(b, "k", b"2", Expect::Revision(r1 + 1000), None)
            .await,
        Expect::Revision(r1 + 1000),
        Some(r1),
    );
    let r2 = s
        .put_lazy(b, "k", b"2", Expect::Revision(r1), None)
        .await
        .unwrap();
    assert!(r2 > r1);
    assert_eq!(s.get(b, "k").await.unwrap().unwrap().revision, r2);
    assert_eq!(s.increment_lazy(b, "n", 5).await.unwrap(), 5);
    assert_eq!(s.increment_lazy(b, "n", -2).await.unwrap(), 3);
    assert_eq!(s.increment(b, "n", 1).await.unwrap(), 4);
    s.put_hint_with_ttl(b, "t", b"x", Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(value(s, b, "t").await.as_deref(), Some("x"));
    let start = Instant::now();
    until_absent(s, b, "t", start).await;
    s.put_hint(b, "h", b"y").await.unwrap();
    assert_eq!(value(s, b, "h").await.as_deref(), Some("y"));
    s.delete_hint(b, "h").await.unwrap();
    assert_eq!(value(s, b, "h").await, None);
    s.delete_hint(b, "never-there").await.unwrap();
}

/// `write_in_order`: every write applied in order when every condition
/// holds; stopped at the first one that does not, with the earlier ones
/// applied and the later ones not.
async fn writes_in_order_stop_at_the_first_unmet_condition(f: &Fixture) {
    use tessera_store::OrderedWrite;
    let s = &f.store;
    let b = "ordered";
    let r = put(s, b, "rec", "v1").await;
    put(s, b, "gone", "x").await;
    let put_w = |key: &str, value: &str, expect: Expect| OrderedWrite::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        expect,
        ttl: None,
    };
    let done = s
        .write_in_order(
            b,
            &[
                put_w("log", "1", Expect::Any),
                put_w("rec", "v2", Expect::Revision(r)),
                OrderedWrite::Delete {
                    key: "gone".into(),
                    expect: Expect::Any,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 3);
    assert_eq!(s.get(b, "rec").await.unwrap().unwrap().revision, done[1]);
    assert_eq!(value(s, b, "rec").await.as_deref(), Some("v2"));
    assert_eq!(value(s, b, "log").await.as_deref(), Some("1"));
    assert_eq!(value(s, b, "gone").await, None);
    // The swap's revision is stale now: the first write lands, the swap
    // is refused, the delete after it does not happen.
    put(s, b, "keep", "k").await;
    let err = s
        .write_in_order(
            b,
            &[
                put_w("log", "2", Expect::Any),
                put_w("rec", "v3", Expect::Revision(r)),
                OrderedWrite::Delete {
                    key: "keep".into(),
                    expect: Expect::Any,
                },
            ],
        )
        .await;
    assert_conflict(err, Expect::Revision(r), Some(done[1]));
    assert_eq!(value(s, b, "log").await.as_deref(), Some("2"));
    assert_eq!(value(s, b, "rec").await.as_deref(), Some("v2"));
    assert_eq!(value(s, b, "keep").await.as_deref(), Some("k"));
}
