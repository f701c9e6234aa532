//! What agents cost, each figure beside a baseline measured in the same run.
//!
//! * **no-op turns**: `BENCH_TURNS` (default 4,000) `{"op":"noop"}`
//!   messages to 64 `probe-agent`s, every turn durable (its record's
//!   compare-and-swap) and journaled; turns per second, and the commit's
//!   p50/p99 (from the turn events). Baseline: the same turn function
//!   called as a plain journaled call, and a durable compare-and-swap of a
//!   record of the same size, alone.
//! * **commit at the aimed load**: the same 64 agents sent `BENCH_RATE`
//!   (default 2,000, the throughput aim) messages per second, open loop
//!   (each send at its scheduled time, whatever the turns before did), for
//!   `BENCH_TURNS` messages; the commit's p50/p99 at that load, beside the
//!   saturated figure above.
//! * **dormant agents**: `BENCH_AGENTS` (default 100,000; the docs' figure
//!   uses 1,000,000) agents spawned into the embedded store, none of them
//!   with an instance or memory in the process; store bytes per agent, and
//!   the wake latency (message in → turn committed → reply read) of 1,000
//!   random ones, p50/p99. Baseline: the same with 1,000 agents in the
//!   store.
//! * **ping-pong**: two agents bouncing `BENCH_PINGS` (default 2,000)
//!   messages; messages per second. Baseline: the same number of no-op
//!   turns of one agent, each message sent from outside.
//! * **supervisor restart**: a child's turn fails; time from the message
//!   to its supervisor's restart, median of 50. Baseline: the same failing
//!   turn of an agent without a supervisor (message to dead letter).
//! * **replay of a 50-turn conversation**: the ReAct agent against a
//!   scripted model answering after `BENCH_LLM_MS` (default 20) ms, then
//!   the 50 turn runs replayed offline from the journal.
//!
//! Run: `cargo bench -p tessera-orchestrator --bench agents`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_journal::JournalStore;
use tessera_orchestrator::agent::{AgentEvent, AgentSystem, SendOptions, records};
use tessera_orchestrator::local::FileComponents;
use tessera_runtime::capability::agent::ComponentSpec;
use tessera_runtime::capability::llm::{LlmProviders, Provider};
use tessera_runtime::{HostConfig, Runtime, RuntimeConfig};
use tessera_store::{Expect, StoreSettings, Stores};
use tessera_test_support::{Rule, ScriptedLlm};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Env {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    stores: Arc<Stores>,
    journal: Arc<JournalStore>,
    sys: AgentSystem,
    runtime: Runtime,
}

async fn env(llm: Option<Arc<LlmProviders>>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let stores = Arc::new(Stores::new(StoreSettings::default(), dir.path()));
    let journal = Arc::new(JournalStore::open(dir.path()).unwrap());
    let runtime = Runtime::new(RuntimeConfig {
        host: HostConfig {
            stores: Some(stores.clone()),
            llm,
            ..HostConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .unwrap();
    let store = stores.for_bucket(records::BUCKET).await.unwrap();
    let sys = AgentSystem::open(
        store,
        Arc::new(FileComponents::new(runtime.clone())),
        journal.clone(),
        "bench",
    )
    .await
    .unwrap();
    Env {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        stores,
        journal,
        sys,
        runtime,
    }
}

fn spec(component: &str, manifest: Option<&Path>) -> ComponentSpec {
    ComponentSpec {
        component: tessera_test_support::component(component)
            .to_string_lossy()
            .into_owned(),
        manifest: manifest.map(|m| m.to_string_lossy().into_owned()),
    }
}

fn noop() -> String {
    json!({"op": "noop"}).to_string()
}

/// Sends a no-op to `to`, waiting while its mailbox is full.
async fn send_when_room(sys: &AgentSystem, to: &str) {
    loop {
        match sys.send(to, &noop(), SendOptions::default()).await {
            Ok(_) => return,
            Err(tessera_orchestrator::agent::AgentError::MailboxFull { .. }) => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Spawns `n0`..`n{agents-1}` (probe-agent) and runs one turn of each
/// (compiles, fills caches).
async fn warm_agents(e: &Env, agents: usize) {
    for i in 0..agents {
        e.sys
            .spawn(&format!("n{i}"), spec("probe-agent", None), None)
            .await
            .unwrap();
        e.sys
            .send(&format!("n{i}"), &noop(), SendOptions::default())
            .await
            .unwrap();
    }
    e.sys.idle().await;
}

async fn no_op_turns(turns: usize) {
    let e = env(None).await;
    let agents = 64;
    warm_agents(&e, agents).await;
    let collect = commits(&e.sys);
    let started = Instant::now();
    // Senders from outside, one task per 8 agents, as clients would.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let sys = e.sys.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..turns / 8 {
                let to = format!("n{}", (t * 8 + k % 8) % agents);
                send_when_room(&sys, &to).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    e.sys.idle().await;
    let elapsed = started.elapsed();
    let sent = (turns / 8) * 8;
    let mut loaded_commits = finish(collect).await;
    let mut total = 0;
    for i in 0..agents {
        total += e.sys.get(&format!("n{i}")).await.unwrap().record.turns as usize;
    }
    assert_eq!(total, sent + agents, "every message made one turn");
    // Baselines: the turn function as a plain journaled call, and a durable
    // compare-and-swap alone.
    let loaded = e
        .runtime
        .load_file(
            &tessera_test_support::component("probe-agent"),
            tessera_runtime::Grants::deny_all(),
        )
        .unwrap();
    let args = json!({"state": null, "message": {"id": "m", "sender": null, "body": noop(), "expects-reply": false}});
    let n = 2000;
    let t0 = Instant::now();
    for _ in 0..n {
        let (_, o) = tessera_journal::record_call(&e.journal, &loaded, "handler#turn", &args)
            .await
            .unwrap();
        assert!(o.result.is_ok());
    }
    let direct = t0.elapsed() / n;
    let store = e.stores.for_bucket("bench").await.unwrap();
    let value = vec![b'x'; 420];
    let mut rev = store
        .put("bench", "k", &value, Expect::Any, None)
        .await
        .unwrap();
    let mut cas = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        rev = store
            .put("bench", "k", &value, Expect::Revision(rev), None)
            .await
            .unwrap();
        cas.push(ms(t.elapsed()));
    }
    println!(
        "no-op turns: {sent} turns over 64 agents in {:.0} ms = {:.0} turns/s; commit under this load p50 {:.3} ms p99 {:.3} ms",
        ms(elapsed),
        sent as f64 / elapsed.as_secs_f64(),
        pct(&mut loaded_commits, 0.5),
        pct(&mut loaded_commits, 0.99)
    );
    println!(
        "  baseline: the turn as a plain journaled call {:.3} ms ({:.0}/s in a row); a 420-byte durable CAS alone p50 {:.3} ms",
        ms(direct),
        1.0 / direct.as_secs_f64(),
        pct(&mut cas, 0.5)
    );
    let _ = &e.dir;
}

/// Collects the commit latencies of the turns from now on (ms), until
/// [`finish`].
type Collector = (
    tokio::task::JoinHandle<Vec<f64>>,
    tokio::sync::oneshot::Sender<()>,
);

fn commits(sys: &AgentSystem) -> Collector {
    let mut events = sys.events();
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut out = Vec::new();
        loop {
            tokio::select! {
                _ = &mut stopped => return out,
                e = events.recv() => match e {
                    Ok(AgentEvent::Turn { commit_us, .. }) => out.push(commit_us as f64 / 1e3),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return out,
                },
            }
        }
    });
    (task, stop)
}

async fn finish((task, stop): Collector) -> Vec<f64> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = stop.send(());
    task.await.unwrap_or_default()
}

async fn paced(turns: usize, rate: usize) {
    let e = env(None).await;
    let agents = 64;
    warm_agents(&e, agents).await;
    let collect = commits(&e.sys);
    // Open loop: 8 senders, each with its own schedule of sends at
    // `rate / 8` per second, staggered; a send that falls behind its
    // schedule goes at once (the load is offered, not adapted).
    let per_sender = turns / 8;
    let interval = Duration::from_secs_f64(8.0 / rate as f64);
    let started = tokio::time::Instant::now();
    let mut late = 0usize;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let sys = e.sys.clone();
        tasks.push(tokio::spawn(async move {
            let mut behind = 0usize;
            let offset = interval.mul_f64(t as f64 / 8.0);
            for k in 0..per_sender {
                let at = started + offset + interval.mul_f64(k as f64);
                if tokio::time::Instant::now() > at + Duration::from_millis(1) {
                    behind += 1;
                }
                tokio::time::sleep_until(at).await;
                let to = format!("n{}", (t * 8 + k % 8) % agents);
                send_when_room(&sys, &to).await;
            }
            behind
        }));
    }
    for t in tasks {
        late += t.await.unwrap();
    }
    e.sys.idle().await;
    let elapsed = started.elapsed();
    let mut c = finish(collect).await;
    let sent = per_sender * 8;
    println!(
        "turn commit at {rate} turns/s offered (64 agents, open loop): {sent} turns in {:.0} ms = {:.0} turns/s; commit p50 {:.3} ms p99 {:.3} ms ({} commits; {late} sends more than 1 ms behind schedule)",
        ms(elapsed),
        sent as f64 / elapsed.as_secs_f64(),
        pct(&mut c, 0.5),
        pct(&mut c, 0.99),
        c.len(),
    );
    let _ = &e.dir;
}

async fn commit_latency(turns: usize) {
    // One agent, turns in a row: the commit's latency without contention.
    let e = env(None).await;
    e.sys
        .spawn("one", spec("probe-agent", None), None)
        .await
        .unwrap();
    let collect = commits(&e.sys);
    for _ in 0..turns {
        e.sys
            .send("one", &noop(), SendOptions::default())
            .await
            .unwrap();
        e.sys.idle().await;
    }
    let mut one = finish(collect).await;
    // 64 agents at once: commits share the store's group commit.
    for i in 0..64 {
        e.sys
            .spawn(&format!("c{i}"), spec("probe-agent", None), None)
            .await
            .unwrap();
    }
    let collect = commits(&e.sys);
    for k in 0..turns {
        e.sys
            .send(&format!("c{}", k % 64), &noop(), SendOptions::default())
            .await
            .unwrap();
    }
    e.sys.idle().await;
    let mut many = finish(collect).await;
    println!(
        "turn commit: 1 agent in a row p50 {:.3} ms p99 {:.3} ms ({} turns); 64 agents at once p50 {:.3} ms p99 {:.3} ms ({} turns)",
        pct(&mut one, 0.5),
        pct(&mut one, 0.99),
        one.len(),
        pct(&mut many, 0.5),
        pct(&mut many, 0.99),
        many.len()
    );
}

async fn dormant(agents: usize, wakes: usize) -> (f64, f64, f64) {
    let e = env(None).await;
    let s = spec("probe-agent", None);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per = agents.div_ceil(32);
    for t in 0..32 {
        let sys = e.sys.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in t * per..((t + 1) * per).min(agents) {
                sys.spawn(&format!("d{i:07}"), s.clone(), None)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let spawn_time = started.elapsed();
    let bytes = std::fs::metadata(e.stores.embedded_path())
        .map(|m| m.len())
        .unwrap_or(0);
    let mut lat = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..wakes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = format!("d{:07}", x as usize % agents);
        let t = Instant::now();
        let (_, reply) = e
            .sys
            .ask(&id, &noop(), Duration::from_secs(30))
            .await
            .unwrap();
        lat.push(ms(t.elapsed()));
        assert!(matches!(reply, records::ReplyRecord::Replied { .. }));
    }
    println!(
        "dormant: {agents} agents spawned in {:.1} s; store file {:.1} MiB = {:.0} bytes per agent; wake p50 {:.3} ms p99 {:.3} ms ({wakes} wakes)",
        spawn_time.as_secs_f64(),
        bytes as f64 / 1048576.0,
        bytes as f64 / agents as f64,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    (
        bytes as f64 / agents as f64,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
    )
}

async fn ping_pong(pings: usize) {
    let e = env(None).await;
    let m = e.dir.join("open.toml");
    std::fs::write(&m, "[agent]\nsend = [\"*\"]\n").unwrap();
    for id in ["a", "b"] {
        e.sys
            .spawn(id, spec("probe-agent", Some(&m)), None)
            .await
            .unwrap();
    }
    // Warm.
    e.sys
        .send(
            "a",
            &json!({"op": "ping", "peer": "b", "n": 10}).to_string(),
            SendOptions::default(),
        )
        .await
        .unwrap();
    e.sys.idle().await;
    let t = Instant::now();
    e.sys
        .send(
            "a",
            &json!({"op": "ping", "peer": "b", "n": pings}).to_string(),
            SendOptions::default(),
        )
        .await
        .unwrap();
    e.sys.idle().await;
    let pp = t.elapsed();
    // Baseline: as many no-op turns of one agent, each sent from outside.
    let t = Instant::now();
    for _ in 0..pings {
        e.sys
            .send("a", &noop(), SendOptions::default())
            .await
            .unwrap();
        e.sys.idle().await;
    }
    let seq = t.elapsed();
    println!(
        "ping-pong: {pings} messages in {:.0} ms = {:.0} messages/s; baseline {pings} no-op turns of one agent in a row: {:.0}/s",
        ms(pp),
        pings as f64 / pp.as_secs_f64(),
        pings as f64 / seq.as_secs_f64()
    );
}

async fn restart(rounds: usize) {
    let e = env(None).await;
    let child = e.dir.join("child.toml");
    std::fs::write(&child, "[agent]\n").unwrap();
    let parent = e.dir.join("parent.toml");
    std::fs::write(
        &parent,
        format!(
            "[agent.supervisor]\nmax_restarts = 1000000\nwithin_secs = 1\n[agent.spawn.c]\ncomponent = \"{}\"\nmanifest = \"{}\"\n",
            tessera_test_support::component("probe-agent").display(),
            child.display()
        ),
    )
    .unwrap();
    e.sys
        .spawn("p", spec("probe-agent", Some(&parent)), None)
        .await
        .unwrap();
    e.sys
        .spawn("lone", spec("probe-agent", None), None)
        .await
        .unwrap();
    e.sys
        .ask(
            "p",
            &json!({"op": "spawn", "name": "c", "template": "c"}).to_string(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let fail = json!({"op": "fail"}).to_string();
    let mut sup = Vec::new();
    let mut lone = Vec::new();
    for _ in 0..rounds {
        let mut events = e.sys.events();
        let t = Instant::now();
        e.sys
            .send("p/c", &fail, SendOptions::default())
            .await
            .unwrap();
        loop {
            if let Ok(AgentEvent::Restarted { .. }) = events.recv().await {
                break;
            }
        }
        sup.push(ms(t.elapsed()));
        e.sys.idle().await;
        let mut events = e.sys.events();
        let t = Instant::now();
        e.sys
            .send("lone", &fail, SendOptions::default())
            .await
            .unwrap();
        loop {
            if let Ok(AgentEvent::DeadLetter { .. }) = events.recv().await {
                break;
            }
        }
        lone.push(ms(t.elapsed()));
        e.sys.idle().await;
    }
    println!(
        "supervisor restart: message → child restarted median {:.3} ms; baseline message → dead letter without a supervisor {:.3} ms",
        pct(&mut sup, 0.5),
        pct(&mut lone, 0.5)
    );
}

async fn replay_conversation(turns: usize, llm_ms: u64) {
    let llm = ScriptedLlm::start([Rule::text("noted.").after(Duration::from_millis(llm_ms))]);
    let mut map = std::collections::BTreeMap::new();
    map.insert("scripted".to_string(), Provider::new(llm.base_url()));
    let e = env(Some(Arc::new(LlmProviders::new(map)))).await;
    let m = e.dir.join("react.toml");
    std::fs::write(
        &m,
        "[llm]\nmodels = [\"scripted/gpt-test\"]\n[limits]\ntimeout_ms = 60000\nmemory_mb = 256\n",
    )
    .unwrap();
    e.sys
        .spawn("talker", spec("react-agent", Some(&m)), None)
        .await
        .unwrap();
    let t = Instant::now();
    for i in 0..turns {
        e.sys
            .ask(
                "talker",
                &json!({"task": format!("message {i}: remember this")}).to_string(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
    let original = t.elapsed();
    let runs: Vec<String> = e
        .sys
        .turns("talker")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|t| t.run)
        .collect();
    e.journal.flush();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let before = llm.request_count();
    let t = Instant::now();
    for run in &runs {
        let r = tessera_journal::replay(&rt, &e.journal, run, None)
            .await
            .unwrap();
        assert!(r.divergence.is_none());
    }
    let replay = t.elapsed();
    assert_eq!(llm.request_count(), before, "the replay calls no model");
    println!(
        "replay of a {turns}-turn conversation: original {:.0} ms (scripted model {llm_ms} ms a reply), offline replay {:.0} ms = {:.1}x faster",
        ms(original),
        ms(replay),
        original.as_secs_f64() / replay.as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for c in ["probe-agent", "react-agent"] {
        tessera_test_support::component(c);
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    rt.block_on(async {
        if want("turns") {
            no_op_turns(env_usize("BENCH_TURNS", 4000)).await;
            commit_latency(2000).await;
        }
        if want("paced") {
            paced(env_usize("BENCH_TURNS", 4000), env_usize("BENCH_RATE", 2000)).await;
        }
        if want("dormant") {
            let (b1, p50_1, p99_1) = dormant(1000, 1000).await;
            let (b, p50, p99) = dormant(env_usize("BENCH_AGENTS", 100_000), 1000).await;
            println!(
                "  vs 1,000 agents: {:.0} bytes/agent, wake p50 {:.3} ms p99 {:.3} ms; ratio p99 {:.2}x",
                b1,
                p50_1,
                p99_1,
                p99 / p99_1
            );
            let _ = (b, p50);
        }
        if want("pingpong") {
            ping_pong(env_usize("BENCH_PINGS", 2000)).await;
        }
        if want("restart") {
            restart(50).await;
        }
        if want("replay") {
            replay_conversation(50, env_usize("BENCH_LLM_MS", 20) as u64).await;
        }
    });
}
