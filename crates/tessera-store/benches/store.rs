//! The store's durable commits and key-value operations, embedded (redb)
//! against NATS JetStream, with the cost of one fsync on the same disk
//! measured in the same run.
//!
//! 1. **fsync baseline**: a plain `std::fs` write of 300 bytes followed by
//!    `File::sync_data()`, to a file in the temporary directory that also
//!    holds the redb file and the NATS storage: once overwriting the same
//!    300 bytes in place (one device flush, the floor of any durable
//!    write), once appending (as a log would; the file's size changes too),
//!    and once writing what one redb commit of these cases writes (seen
//!    with `strace`): a 320-byte header at the start of the file and seven
//!    4 KiB pages at other offsets, then `sync_data`.
//! 2. **Durable commit**: `put` with [`Expect::Absent`] on a fresh key each
//!    time, a ~300-byte JSON value (a plan step's result), back to back by
//!    one writer, then by 8 concurrent writers (the embedded store's writer
//!    thread commits what waits for it together: group commit).
//! 3. **Get**: an existing key with a 100-byte value, one reader.
//! 4. **Set**: unconditional `put` of a 100-byte value over existing keys,
//!    one writer and 8 writers.
//!
//! Each case runs against the embedded store (a redb file, commits with
//! fsync), against the same store on tmpfs (`/dev/shm`, where an fsync
//! costs nothing: what is left is redb's work and the hand-offs to and
//! from the writer thread) and against a `nats-server -js` the bench
//! starts on a free loopback port with its storage in the same temporary
//! directory (killed when the bench ends). If that server accepts
//! `sync_interval: always` (NATS 2.10 and later), a second one is started
//! with it and measured too: by default JetStream acknowledges a write
//! before it is fsynced (NATS documents a 2-minute default interval), so
//! the default NATS rows are not durable against power loss the way the
//! embedded ones are.
//!
//! The operations of each case are split into rounds; every round runs
//! every case, in an order rotated from round to round, so that all cases
//! see the same moments of machine noise. Latencies are pooled over the
//! rounds (p50, p99, mean); ops/s is the median of the rounds' throughputs;
//! "CPU wait / op" is the time the threads of the bench and of its NATS
//! servers spent runnable but waiting for a CPU during the case (from
//! `/proc/<pid>/task/*/schedstat`), per operation: when something else
//! keeps the cores busy, it tells a slow disk from a late wake-up; the
//! last column gives the range of the rounds' p50s (the noise).
//!
//! Run: `cargo bench -p tessera-store --bench store`. `BENCH_N` sets the
//! operations per case (default 2000), `BENCH_ROUNDS` the rounds they are
//! split into (default 4). Needs `nats-server` (`scripts/nats-server.sh`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_store::{Embedded, Expect, Nats, SharedStore};
use tessera_test_support::{NatsOptions, NatsServer, nats_server_bin};

// ---------------------------------------------------------------------------
// The NATS server (as tests/store.rs starts it).

fn nats_server_version() -> String {
    Command::new(nats_server_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

// ---------------------------------------------------------------------------
// Values.

/// A plan step's result as the orchestrator would commit it: JSON, 300
/// bytes.
fn step_result(run: &str, step: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"run":"{run}","step":{step},"component":"summarize","function":"run","status":"ok","attempt":1,"started_ms":1764547200123,"duration_us":48211,"output":{{"text":""#
    );
    let tail = r#""}}"#;
    let fill = 300usize.saturating_sub(head.len() + tail.len());
    let mut v = head.into_bytes();
    v.extend(std::iter::repeat_n(b'x', fill));
    v.extend_from_slice(tail.as_bytes());
    v
}

/// A 100-byte value.
fn small_value(i: usize) -> Vec<u8> {
    let mut v = format!("value {i:>8} ").into_bytes();
    v.resize(100, b'.');
    v
}

/// Keys of the get and set cases.
const KV_KEYS: usize = 100;

fn kv_key(i: usize) -> String {
    format!("key-{:03}", i % KV_KEYS)
}

// ---------------------------------------------------------------------------
// Cases.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Overwrite 300 bytes in place + `sync_data`.
    FsyncOverwrite,
    /// Append 300 bytes + `sync_data`.
    FsyncAppend,
    /// A 320-byte header and 7 pages of 4 KiB in place + `sync_data`.
    FsyncPages,
    /// `put`, `Expect::Absent`, fresh key, 300-byte JSON.
    Commit,
    /// `get` of an existing key (100 bytes).
    Get,
    /// `put`, `Expect::Any`, existing key, 100 bytes.
    Set,
}

struct Case {
    op: Op,
    /// Index into the stores (unused by the fsync baselines).
    store: usize,
    writers: usize,
    /// Latencies of every round.
    samples: Vec<Duration>,
    /// Each round's p50.
    round_p50: Vec<Duration>,
    /// Each round's ops/s.
    round_rate: Vec<f64>,
    /// Time runnable threads waited for a CPU during the case.
    cpu_wait: Duration,
}

impl Case {
    fn new(op: Op, store: usize, writers: usize) -> Self {
        Self {
            op,
            store,
            writers,
            samples: Vec::new(),
            round_p50: Vec::new(),
            round_rate: Vec::new(),
            cpu_wait: Duration::ZERO,
        }
    }

    fn what(&self) -> &'static str {
        match self.op {
            Op::FsyncOverwrite => "fsync baseline: overwrite 300 B + sync_data",
            Op::FsyncAppend => "fsync baseline: append 300 B + sync_data",
            Op::FsyncPages => "fsync baseline: 320 B + 7 × 4 KiB pages in place + sync_data",
            Op::Commit => "durable commit: put Absent, fresh key, 300 B JSON",
            Op::Get => "get: existing key, 100 B",
            Op::Set => "set: put Any, existing key, 100 B",
        }
    }
}

/// Pages of the file the page-pattern baseline writes in.
const PAGES: u64 = 128;

/// Runs `ops` fsynced writes of one baseline kind to `file`.
fn fsync_round(file: &mut File, op: Op, ops: usize) -> (Vec<Duration>, Duration) {
    let bytes = step_result("fsync", 0);
    let header = [7u8; 320];
    let page = [9u8; 4096];
    let mut lat = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops as u64 {
        let t = Instant::now();
        match op {
            Op::FsyncOverwrite => file.write_all_at(&bytes, 0).unwrap(),
            Op::FsyncAppend => file.write_all(&bytes).unwrap(),
            Op::FsyncPages => {
                file.write_all_at(&header, 0).unwrap();
                for p in 0..7 {
                    let at = 1 + (i * 7 + p) % (PAGES - 1);
                    file.write_all_at(&page, at * 4096).unwrap();
                }
            }
            _ => unreachable!(),
        }
        file.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    (lat, start.elapsed())
}

/// Runs `ops` operations split over `writers` concurrent tasks; `tag`
/// makes the commit keys fresh.
async fn store_round(
    store: &SharedStore,
    op: Op,
    writers: usize,
    ops: usize,
    tag: &str,
) -> (Vec<Duration>, Duration) {
    let per = ops.div_ceil(writers);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let store = store.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                match op {
                    Op::Commit => {
                        let run = format!("{tag}-w{w}");
                        let key = format!("{run}/step-{i}");
                        let value = step_result(&run, i);
                        let t = Instant::now();
                        store
                            .put("steps", &key, &value, Expect::Absent, None)
                            .await
                            .unwrap();
                        lat.push(t.elapsed());
                    }
                    Op::Get => {
                        let key = kv_key(i * writers + w);
                        let t = Instant::now();
                        let e = store.get("kv", &key).await.unwrap();
                        lat.push(t.elapsed());
                        assert_eq!(e.map(|e| e.value.len()), Some(100));
                    }
                    Op::Set => {
                        let key = kv_key(i * writers + w);
                        let value = small_value(i);
                        let t = Instant::now();
                        store
                            .put("kv", &key, &value, Expect::Any, None)
                            .await
                            .unwrap();
                        lat.push(t.elapsed());
                    }
                    Op::FsyncOverwrite | Op::FsyncAppend | Op::FsyncPages => unreachable!(),
                }
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(per * writers);
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    (lat, start.elapsed())
}

// ---------------------------------------------------------------------------
// Statistics.

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn p50(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    quantile(&v, 0.5)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Milliseconds, or microseconds below 10 µs (an embedded read).
fn show(d: Duration) -> String {
    if d < Duration::from_micros(10) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.3} ms", ms(d))
    }
}

/// How long the threads of these processes have waited, runnable, for a
/// CPU (the second field of `/proc/<pid>/task/<tid>/schedstat`; 0 where
/// the kernel does not keep it).
fn cpu_wait(pids: &[u32]) -> Duration {
    let mut ns = 0u64;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------

fn main() {
    let n = env("BENCH_N", 2000);
    let rounds = env("BENCH_ROUNDS", 4);
    let per_round = n.div_ceil(rounds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // One temporary directory for everything that touches the disk.
    let dir = tempfile::tempdir().unwrap();
    let version = nats_server_version();
    let nats_default = NatsServer::start_with(NatsOptions::default())
        .expect("a nats-server without `sync_interval` starts");
    let nats_sync = NatsServer::start_with(NatsOptions {
        sync_always: true,
        ..NatsOptions::default()
    });

    let mut stores: Vec<(String, SharedStore)> = Vec::new();
    let embedded = Embedded::open(&dir.path().join("store.redb")).unwrap();
    stores.push(("embedded".into(), Arc::new(embedded)));
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    if let Some(shm) = &shm {
        let on_tmpfs = Embedded::open(&shm.path().join("store.redb")).unwrap();
        stores.push(("embedded on tmpfs (fsync free)".into(), Arc::new(on_tmpfs)));
    }
    let connect = |url: &str| {
        let url = url.to_string();
        rt.block_on(async move {
            Nats::connect(tessera_store::NatsOptions {
                url,
                prefix: "bench".into(),
                credentials: None,
            })
            .await
            .unwrap()
        })
    };
    stores.push((
        "nats (default: no fsync per write)".into(),
        Arc::new(connect(nats_default.url())),
    ));
    if let Some(s) = &nats_sync {
        stores.push((
            "nats (sync_interval: always)".into(),
            Arc::new(connect(s.url())),
        ));
    }

    let mut cases = vec![
        Case::new(Op::FsyncOverwrite, 0, 1),
        Case::new(Op::FsyncAppend, 0, 1),
        Case::new(Op::FsyncPages, 0, 1),
    ];
    for (op, writers) in [
        (Op::Commit, 1),
        (Op::Commit, 8),
        (Op::Get, 1),
        (Op::Set, 1),
        (Op::Set, 8),
    ] {
        for store in 0..stores.len() {
            cases.push(Case::new(op, store, writers));
        }
    }

    let mut overwrite = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join("fsync-overwrite.bin"))
        .unwrap();
    let mut append = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("fsync-append.bin"))
        .unwrap();
    let mut pages = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join("fsync-pages.bin"))
        .unwrap();
    pages.set_len(PAGES * 4096).unwrap();
    pages.sync_all().unwrap();

    // Warm-up: buckets created, keys of the get and set cases written,
    // every path run once.
    rt.block_on(async {
        for (_, s) in &stores {
            for i in 0..KV_KEYS {
                s.put("kv", &kv_key(i), &small_value(i), Expect::Any, None)
                    .await
                    .unwrap();
            }
            for op in [Op::Commit, Op::Get, Op::Set] {
                store_round(s, op, 8, 64, "warm").await;
            }
        }
    });
    fsync_round(&mut overwrite, Op::FsyncOverwrite, 20);
    fsync_round(&mut append, Op::FsyncAppend, 20);
    fsync_round(&mut pages, Op::FsyncPages, 20);

    println!(
        "tessera-store bench: {n} ops per case in {rounds} rounds of {per_round}; \
         temporary directory {}; {version}",
        dir.path().display()
    );
    if shm.is_none() {
        println!("(no /dev/shm: no tmpfs rows)");
    }
    if nats_sync.is_none() {
        println!(
            "({version} does not know `sync_interval`: no `sync_interval: always` rows; \
             its JetStream fsyncs file storage on a timer, not per write)"
        );
    }
    let mut pids = vec![std::process::id(), nats_default.pid()];
    pids.extend(nats_sync.as_ref().map(|s| s.pid()));
    let started = Instant::now();
    for round in 0..rounds {
        let k = cases.len();
        for j in 0..k {
            // Rotated order: each round starts with another case.
            let index = (j + round * 3) % k;
            let case = &mut cases[index];
            let waited = cpu_wait(&pids);
            let (lat, wall) = match case.op {
                Op::FsyncOverwrite => fsync_round(&mut overwrite, case.op, per_round),
                Op::FsyncAppend => fsync_round(&mut append, case.op, per_round),
                Op::FsyncPages => fsync_round(&mut pages, case.op, per_round),
                op => {
                    let store = &stores[case.store].1;
                    // Fresh commit keys for every case and round.
                    let tag = format!("c{index}r{round}");
                    rt.block_on(store_round(store, op, case.writers, per_round, &tag))
                }
            };
            case.round_rate.push(lat.len() as f64 / wall.as_secs_f64());
            case.cpu_wait += cpu_wait(&pids).saturating_sub(waited);
            case.round_p50.push(p50(&lat));
            case.samples.extend(lat);
        }
        eprintln!(
            "round {}/{rounds} done at {:.1} s",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }

    let floor = p50(&cases[0].samples);
    println!();
    println!(
        "| case | backend | writers | ops | p50 | p99 | mean | ops/s | p50 ÷ fsync | CPU wait / op | round p50s |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for case in &mut cases {
        case.samples.sort();
        let s = &case.samples;
        let mean = s.iter().sum::<Duration>() / s.len() as u32;
        let backend = match case.op {
            Op::FsyncOverwrite | Op::FsyncAppend | Op::FsyncPages => "disk (std::fs)",
            _ => stores[case.store].0.as_str(),
        };
        let lo = case.round_p50.iter().min().copied().unwrap_or_default();
        let hi = case.round_p50.iter().max().copied().unwrap_or_default();
        println!(
            "| {} | {backend} | {} | {} | {} | {} | {} | {:.0} | {:.2}x | {} | {}–{} |",
            case.what(),
            case.writers,
            s.len(),
            show(quantile(s, 0.5)),
            show(quantile(s, 0.99)),
            show(mean),
            median(case.round_rate.clone()),
            quantile(s, 0.5).as_secs_f64() / floor.as_secs_f64(),
            show(case.cpu_wait / s.len() as u32),
            show(lo),
            show(hi),
        );
    }
    println!();
    println!(
        "p50 ÷ fsync: against the p50 of one in-place 300-byte write + sync_data ({:.3} ms). \
         ops/s: median of the rounds' throughputs. Total {:.1} s.",
        ms(floor),
        started.elapsed().as_secs_f64()
    );
    drop(stores);
    drop(nats_sync);
    drop(nats_default);
}
