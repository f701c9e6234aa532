//! Agents against real components (`components/probe-agent`,
//! `coordinator`, `worker`, `city-facts`, `react-agent`), a real embedded
//! store and a real journal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_journal::JournalStore;
use tessera_orchestrator::agent::{
    AgentError, AgentSystem, ReplyRecord, SendOptions, Status, records,
};
use tessera_orchestrator::local::FileComponents;
use tessera_runtime::capability::agent::ComponentSpec;
use tessera_runtime::capability::llm::{ApiKey, LlmProviders, Provider};
use tessera_runtime::{HostConfig, Runtime, RuntimeConfig};
use tessera_store::{StoreSettings, Stores};
use tessera_test_support::{Rule, ScriptedLlm};

const WAIT: Duration = Duration::from_secs(60);

struct Env {
    dir: tempfile::TempDir,
    stores: Arc<Stores>,
    journal: Arc<JournalStore>,
    sys: AgentSystem,
}

async fn open(
    dir: &std::path::Path,
    stores: &Arc<Stores>,
    journal: &Arc<JournalStore>,
) -> AgentSystem {
    open_with(dir, stores, journal, None).await
}

async fn open_with(
    dir: &std::path::Path,
    stores: &Arc<Stores>,
    journal: &Arc<JournalStore>,
    llm: Option<Arc<LlmProviders>>,
) -> AgentSystem {
    let store = stores.for_bucket(records::BUCKET).await.unwrap();
    let rt = Runtime::new(RuntimeConfig {
        host: HostConfig {
            stores: Some(stores.clone()),
            llm,
            ..HostConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .unwrap();
    AgentSystem::open(
        store,
        Arc::new(FileComponents::new(rt)),
        journal.clone(),
        "test",
    )
    .await
    .unwrap_or_else(|e| panic!("opening agents in {}: {e}", dir.display()))
}

async fn env() -> Env {
    env_with(None).await
}

async fn env_with(llm: Option<Arc<LlmProviders>>) -> Env {
    env_on(StoreSettings::default(), llm).await
}

async fn env_on(settings: StoreSettings, llm: Option<Arc<LlmProviders>>) -> Env {
    for c in [
        "probe-agent",
        "coordinator",
        "worker",
        "city-facts",
        "react-agent",
    ] {
        tessera_test_support::component(c);
    }
    let dir = tempfile::tempdir().unwrap();
    let stores = Arc::new(Stores::new(settings, dir.path()));
    let journal = Arc::new(JournalStore::open(dir.path()).unwrap());
    let sys = open_with(dir.path(), &stores, &journal, llm).await;
    Env {
        dir,
        stores,
        journal,
        sys,
    }
}

fn wasm(name: &str) -> String {
    tessera_test_support::components_dir()
        .join(format!("{name}.wasm"))
        .to_string_lossy()
        .into_owned()
}

impl Env {
    /// Writes a manifest into the test's directory.
    fn manifest(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &p,
            text.replace(
                "@COMPONENTS@",
                &tessera_test_support::components_dir().to_string_lossy(),
            )
            .replace("@DIR@", &self.dir.path().to_string_lossy()),
        )
        .unwrap();
        p
    }

    async fn spawn(&self, id: &str, component: &str, manifest: Option<&PathBuf>) {
        self.sys
            .spawn(
                id,
                ComponentSpec {
                    component: wasm(component),
                    manifest: manifest.map(|m| m.to_string_lossy().into_owned()),
                },
                None,
            )
            .await
            .unwrap();
    }

    async fn ask(&self, id: &str, body: Value) -> ReplyRecord {
        let (_, r) = self.sys.ask(id, &body.to_string(), WAIT).await.unwrap();
        r
    }

    /// The reply text of a turn that must have succeeded.
    async fn reply(&self, id: &str, body: Value) -> String {
        match self.ask(id, body.clone()).await {
            ReplyRecord::Replied { reply, .. } => reply.unwrap_or_default(),
            ReplyRecord::Failed { error } => panic!("{id} {body}: {error}"),
        }
    }

    async fn state(&self, id: &str) -> Value {
        self.sys.idle().await;
        let info = self.sys.get(id).await.unwrap();
        serde_json::from_str(info.record.state.as_deref().unwrap_or("null")).unwrap()
    }
}

/// The journal's tool-call runs whose link to their turn satisfies `pick`.
fn tool_runs(
    e: &Env,
    pick: impl Fn(&tessera_journal::ToolLink) -> bool,
) -> Vec<tessera_journal::RunSummary> {
    e.journal.flush();
    e.journal
        .list()
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.header
                .agent
                .as_ref()
                .and_then(|a| a.tool.as_ref())
                .is_some_and(&pick)
        })
        .collect()
}

const OPEN: &str = "[agent]\nsend = [\"*\"]\n";

#[tokio::test]
async fn messages_from_one_agent_arrive_in_order_and_a_turns_sends_are_delivered_after_it_commits()
{
    let e = env().await;
    let m = e.manifest("open", OPEN);
    e.spawn("a", "probe-agent", Some(&m)).await;
    e.spawn("b", "probe-agent", Some(&m)).await;
    let r = e
        .reply("a", json!({"op": "sendn", "to": "b", "n": 40}))
        .await;
    assert_eq!(serde_json::from_str::<Value>(&r).unwrap()["sent"], 40);
    let expected: Vec<Value> = (0..40).map(|i| json!(i)).collect();
    assert_eq!(e.state("b").await, Value::Array(expected));
    let a = e.sys.get("a").await.unwrap();
    assert_eq!(a.record.turns, 1);
    assert!(
        a.record.outbox.is_empty(),
        "the delivered outbox is cleared: {:?}",
        a.record.outbox
    );
    let b = e.sys.get("b").await.unwrap();
    assert_eq!((b.record.turns, b.depth), (40, 0));
    let log = e.sys.turns("a").await.unwrap();
    assert_eq!(log[0].sent.len(), 40);
    assert!(log[0].sent.iter().all(|(to, _)| to == "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_nats_jetstream_keep_order_de_duplicate_and_supervise() {
    let nats = tessera_test_support::NatsServer::start();
    let settings = StoreSettings::from_toml(
        &format!(
            "[store.nats]\nurl = \"{}\"\n[store.buckets]\ntessera-agents = \"nats\"\n",
            nats.url()
        ),
        "test settings",
    )
    .unwrap();
    let e = env_on(settings, None).await;
    assert_eq!(
        e.stores
            .for_bucket(records::BUCKET)
            .await
            .unwrap()
            .backend(),
        "nats"
    );
    let m = e.manifest("open", OPEN);
    e.spawn("a", "probe-agent", Some(&m)).await;
    e.spawn("b", "probe-agent", Some(&m)).await;
    e.reply("a", json!({"op": "sendn", "to": "b", "n": 20}))
        .await;
    let expected: Vec<Value> = (0..20).map(|i| json!(i)).collect();
    assert_eq!(e.state("b").await, Value::Array(expected));
    for _ in 0..2 {
        e.sys
            .send(
                "b",
                &json!({"op": "append", "value": "once"}).to_string(),
                SendOptions {
                    id: Some("dup".into()),
                    expects_reply: false,
                },
            )
            .await
            .unwrap();
        e.sys.idle().await;
    }
    assert_eq!(e.sys.get("b").await.unwrap().record.turns, 21);
    // A child that traps is restarted by its supervisor (ids with `/` and
    // `#` in NATS keys).
    let parent = e.manifest(
        "parent",
        "[agent.spawn.p]\ncomponent = \"@COMPONENTS@/probe-agent.wasm\"\n",
    );
    e.spawn("sup", "probe-agent", Some(&parent)).await;
    e.reply(
        "sup",
        json!({"op": "spawn", "name": "kid", "template": "p"}),
    )
    .await;
    e.reply("sup/kid", json!({"op": "append", "value": 1}))
        .await;
    e.ask("sup/kid", json!({"op": "trap"})).await;
    e.sys.idle().await;
    let kid = e.sys.get("sup/kid").await.unwrap();
    assert_eq!(
        (kid.record.restart_count, kid.record.state.clone()),
        (1, None)
    );
    assert_eq!(e.sys.dead_letters("sup/kid").await.unwrap().len(), 1);
    assert_eq!(e.sys.turns("sup/kid").await.unwrap().len(), 1);
}

#[tokio::test]
async fn idle_agents_keep_nothing_in_memory() {
    let e = env().await;
    let m = e.manifest(
        "parent",
        "[agent.spawn.p]\ncomponent = \"@COMPONENTS@/probe-agent.wasm\"\n",
    );
    for i in 0..40 {
        e.spawn(&format!("i{i}"), "probe-agent", Some(&m)).await;
        e.sys
            .send(
                &format!("i{i}"),
                &json!({"op": "append", "value": i}).to_string(),
                SendOptions::default(),
            )
            .await
            .unwrap();
    }
    // A supervisor restarting a child touches both.
    e.reply("i0", json!({"op": "spawn", "name": "c", "template": "p"}))
        .await;
    e.ask("i0/c", json!({"op": "trap"})).await;
    e.sys.idle().await;
    assert_eq!(e.sys.get("i0/c").await.unwrap().record.restart_count, 1);
    assert_eq!(e.sys.resident(), 0);
    assert_eq!(e.state("i39").await, json!([39]));
    // A sender that stops waiting leaves nothing either.
    let id = e
        .sys
        .send(
            "i1",
            "{\"op\":\"noop\"}",
            SendOptions {
                id: None,
                expects_reply: true,
            },
        )
        .await
        .unwrap();
    e.sys.idle().await;
    let never = e
        .sys
        .wait_reply("no-such-message", Duration::from_millis(50))
        .await;
    assert!(matches!(never, Err(AgentError::Timeout)), "{never:?}");
    assert!(matches!(
        e.sys.wait_reply(&id, WAIT).await,
        Ok(ReplyRecord::Replied { .. })
    ));
    assert_eq!(e.sys.resident(), 0);
}

#[tokio::test]
async fn a_message_delivered_twice_under_one_id_is_processed_once() {
    let e = env().await;
    let m = e.manifest(
        "held",
        "[agent.tools.cities]\ncomponent = \"@COMPONENTS@/city-facts.wasm\"\napproval = true\n",
    );
    e.spawn("b", "probe-agent", Some(&m)).await;
    // Hold the agent on an approval so every copy reaches the mailbox
    // before any is handled.
    e.sys
        .send(
            "b",
            &json!({"op": "tool", "name": "cities__cities", "args": {"country": null}}).to_string(),
            SendOptions::default(),
        )
        .await
        .unwrap();
    e.sys.idle().await;
    for _ in 0..3 {
        e.sys
            .send(
                "b",
                &json!({"op": "append", "value": "x"}).to_string(),
                SendOptions {
                    id: Some("same-id".into()),
                    expects_reply: false,
                },
            )
            .await
            .unwrap();
    }
    assert_eq!(
        e.sys.get("b").await.unwrap().depth,
        4,
        "three copies queued behind the held turn"
    );
    let req = e.sys.approvals("b").await.unwrap().remove(0);
    e.sys
        .decide("b", &req.request, true, None, None)
        .await
        .unwrap();
    e.sys.idle().await;
    // Handled: the tool turn and one append; a copy sent afterwards is
    // dropped at delivery.
    e.sys
        .send(
            "b",
            &json!({"op": "append", "value": "x"}).to_string(),
            SendOptions {
                id: Some("same-id".into()),
                expects_reply: false,
            },
        )
        .await
        .unwrap();
    e.sys
        .send(
            "b",
            &json!({"op": "append", "value": "y"}).to_string(),
            SendOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(e.state("b").await, json!(["x", "y"]));
    let info = e.sys.get("b").await.unwrap();
    assert_eq!((info.record.turns, info.depth), (3, 0));
}

#[tokio::test]
async fn sending_to_an_agent_that_is_not_granted_is_denied_and_kin_need_no_grant() {
    let e = env().await;
    e.spawn("a", "probe-agent", None).await;
    e.spawn("b", "probe-agent", None).await;
    let r = e
        .reply(
            "a",
            json!({"op": "send", "to": "b", "body": {"op": "noop"}}),
        )
        .await;
    assert!(r.contains("denied"), "{r}");
    assert_eq!(e.sys.get("b").await.unwrap().record.turns, 0);
    let m = e.manifest("granted", "[agent]\nsend = [\"b\"]\n");
    e.spawn("c", "probe-agent", Some(&m)).await;
    let r = e
        .reply(
            "c",
            json!({"op": "send", "to": "b", "body": {"op": "noop"}}),
        )
        .await;
    assert!(r.contains("\"id\""), "{r}");
    e.sys.idle().await;
    assert_eq!(e.sys.get("b").await.unwrap().record.turns, 1);
    let r = e
        .reply("c", json!({"op": "send", "to": "nobody", "body": "{}"}))
        .await;
    assert!(r.contains("no such agent") || r.contains("nobody"), "{r}");
}

#[tokio::test]
async fn ask_gets_the_reply_of_the_other_agents_turn_and_times_out_when_there_is_none() {
    let e = env().await;
    let m = e.manifest("open", OPEN);
    e.spawn("a", "probe-agent", Some(&m)).await;
    e.spawn("b", "probe-agent", Some(&m)).await;
    let r = e
        .reply(
            "a",
            json!({"op": "ask", "to": "b", "body": {"op": "append", "value": 7}}),
        )
        .await;
    assert_eq!(serde_json::from_str::<Value>(&r).unwrap()["reply"], "1");
    assert_eq!(e.state("b").await, json!([7]));
    // An agent waiting for an approval handles nothing: the ask times out.
    let tools = e.manifest(
        "tools",
        "[agent.tools.cities]\ncomponent = \"@COMPONENTS@/city-facts.wasm\"\napproval = true\n",
    );
    e.spawn("slow", "probe-agent", Some(&tools)).await;
    e.sys
        .send(
            "slow",
            &json!({"op": "tool", "name": "cities__cities", "args": {"country": null}}).to_string(),
            SendOptions::default(),
        )
        .await
        .unwrap();
    e.sys.idle().await;
    assert!(matches!(
        e.sys.get("slow").await.unwrap().record.status,
        Status::Waiting { .. }
    ));
    let r = e
        .reply(
            "a",
            json!({"op": "ask", "to": "slow", "body": {"op": "noop"}, "timeout_ms": 300}),
        )
        .await;
    assert!(r.contains("timeout") || r.contains("time"), "{r}");
}

#[tokio::test]
async fn a_full_mailbox_refuses_a_message_with_a_clear_error() {
    let e = env().await;
    let m = e.manifest(
        "small",
        "[agent]\nmailbox = 2\n[agent.tools.cities]\ncomponent = \"@COMPONENTS@/city-facts.wasm\"\napproval = true\n",
    );
    e.spawn("s", "probe-agent", Some(&m)).await;
    let send = |body: Value| {
        let sys = e.sys.clone();
        async move {
            sys.send("s", &body.to_string(), SendOptions::default())
                .await
        }
    };
    // The first message stops its turn for an approval; the next two queue.
    send(json!({"op": "tool", "name": "cities__cities", "args": {"country": null}}))
        .await
        .unwrap();
    e.sys.idle().await;
    send(json!({"op": "noop"})).await.unwrap();
    match send(json!({"op": "noop"})).await {
        Err(AgentError::MailboxFull { id, capacity }) => {
            assert_eq!((id.as_str(), capacity), ("s", 2))
        }
        other => panic!("expected a full mailbox, got {other:?}"),
    }
    let err = send(json!({"op": "noop"})).await.unwrap_err().to_string();
    assert!(err.contains("mailbox of `s` is full (2 messages)"), "{err}");
}

#[tokio::test]
async fn a_failing_turn_is_retried_then_dead_lettered_and_can_be_redriven() {
    let e = env().await;
    let m = e.manifest(
        "retry",
        "[agent]\nretries = 2\n[keyvalue]\nbuckets = [\"attempts\"]\n[config]\nvalues = { attempts_bucket = \"attempts\" }\n",
    );
    e.spawn("r", "probe-agent", Some(&m)).await;
    // Fails twice, then succeeds on the third attempt.
    let r = e.reply("r", json!({"op": "fail_until", "k": 2})).await;
    assert_eq!(serde_json::from_str::<Value>(&r).unwrap()["attempts"], 3);
    let t = &e.sys.turns("r").await.unwrap()[0];
    assert_eq!(
        t.earlier_runs.len(),
        2,
        "two failed attempts, each a journal run"
    );
    // Always failing: three attempts, then a dead letter; the state is kept.
    e.reply("r", json!({"op": "append", "value": 1})).await;
    match e.ask("r", json!({"op": "fail", "message": "boom"})).await {
        ReplyRecord::Failed { error } => assert!(error.contains("boom"), "{error}"),
        other => panic!("{other:?}"),
    }
    let dead = e.sys.dead_letters("r").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].attempts, dead[0].runs.len()), (3, 3));
    assert!(dead[0].error.contains("boom"));
    let info = e.sys.get("r").await.unwrap();
    assert!(
        info.record
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("boom")
    );
    assert_eq!(e.state("r").await, json!([1]));
    // Re-driven: it fails again (three more attempts) and is a dead letter again.
    let ids = e.sys.redrive("r", None).await.unwrap();
    assert_eq!(ids.len(), 1);
    e.sys.idle().await;
    let dead = e.sys.dead_letters("r").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.id, ids[0]);
}

#[tokio::test]
async fn a_redriven_dead_letter_that_then_succeeds_is_committed_as_a_turn() {
    let e = env().await;
    let m = e.manifest(
        "redrive",
        "[agent]\nretries = 1\n[keyvalue]\nbuckets = [\"attempts\"]\n[config]\nvalues = { attempts_bucket = \"attempts\" }\n",
    );
    e.spawn("r", "probe-agent", Some(&m)).await;
    e.reply("r", json!({"op": "append", "value": "before"}))
        .await;
    // The first three attempts of job `j` fail: two now (a dead letter),
    // then the re-drive's first; its second succeeds.
    let body = json!({"op": "fail_until", "k": 3, "key": "j"});
    match e.ask("r", body.clone()).await {
        ReplyRecord::Failed { error } => assert!(error.contains("attempt 2 fails"), "{error}"),
        other => panic!("{other:?}"),
    }
    let dead = e.sys.dead_letters("r").await.unwrap();
    assert_eq!(dead.len(), 1);
    let turns_before = e.sys.get("r").await.unwrap().record.turns;
    let ids = e.sys.redrive("r", Some(dead[0].seq)).await.unwrap();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], dead[0].message.id, "a re-drive is a new message");
    e.sys.idle().await;
    assert!(e.sys.dead_letters("r").await.unwrap().is_empty());
    let info = e.sys.get("r").await.unwrap();
    assert_eq!(info.record.turns, turns_before + 1);
    let turn = e.sys.turns("r").await.unwrap().pop().unwrap();
    assert_eq!(turn.message.id, ids[0]);
    assert_eq!(turn.message.body, body.to_string());
    assert_eq!(turn.earlier_runs.len(), 1, "one failed attempt before it");
    let reply: Value = serde_json::from_str(turn.reply.as_deref().unwrap()).unwrap();
    assert_eq!(reply["attempts"], 4);
    // The state the earlier turn built is still there.
    assert_eq!(e.state("r").await, json!(["before"]));
    // Re-driving again finds nothing.
    assert!(e.sys.redrive("r", None).await.unwrap().is_empty());
    let err = e.sys.redrive("r", Some(dead[0].seq)).await.unwrap_err();
    assert!(err.to_string().contains("no dead letter"), "{err}");
}

/// A turn stopped by `limit` (fuel, deadline or memory) fails like any
/// other failing turn: retried, then a dead letter, the state kept, the
/// agent still serving.
async fn a_turn_hits(limits: &str, op: Value, expect: &str) {
    let e = env().await;
    let m = e.manifest(
        "limited",
        &format!("[agent]\nretries = 1\n[limits]\n{limits}\n"),
    );
    e.spawn("l", "probe-agent", Some(&m)).await;
    e.reply("l", json!({"op": "append", "value": 1})).await;
    match e.ask("l", op).await {
        ReplyRecord::Failed { error } => assert!(error.contains(expect), "{error}"),
        other => panic!("the turn should hit `{expect}`: {other:?}"),
    }
    let dead = e.sys.dead_letters("l").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].attempts, dead[0].runs.len()), (2, 2));
    assert!(dead[0].error.contains(expect), "{}", dead[0].error);
    // Each attempt is a journal run that ended on the limit.
    e.journal.flush();
    for run in &dead[0].runs {
        let end = e
            .journal
            .end(run)
            .unwrap()
            .expect("the attempt's run ended");
        match &end.result {
            tessera_journal::RunResult::Limit { message, .. } => {
                assert!(message.contains(expect), "{run}: {message}")
            }
            other => panic!("{run} should have ended on a limit: {other:?}"),
        }
    }
    let info = e.sys.get("l").await.unwrap();
    assert!(matches!(info.record.status, Status::Active));
    assert!(
        info.record
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains(expect)
    );
    assert_eq!(e.state("l").await, json!([1]));
    // The next message is served as usual.
    assert_eq!(e.reply("l", json!({"op": "append", "value": 2})).await, "2");
}

#[tokio::test]
async fn a_turn_that_runs_out_of_fuel_is_dead_lettered_and_the_agent_goes_on() {
    a_turn_hits("fuel = 20000000", json!({"op": "spin"}), "fuel exhausted").await;
}

#[tokio::test]
async fn a_turn_past_its_deadline_is_dead_lettered_and_the_agent_goes_on() {
    a_turn_hits(
        "fuel = 1000000000000\ntimeout_ms = 300",
        json!({"op": "spin"}),
        "deadline exceeded",
    )
    .await;
}

#[tokio::test]
async fn a_turn_over_its_memory_limit_is_dead_lettered_and_the_agent_goes_on() {
    // 8 MiB is enough for the agent and its turns, not for 64 MiB more.
    let e = env().await;
    let m = e.manifest("roomy", "[limits]\nmemory_mb = 8\n");
    e.spawn("g", "probe-agent", Some(&m)).await;
    let r: Value =
        serde_json::from_str(&e.reply("g", json!({"op": "grow", "mib": 1})).await).unwrap();
    assert_eq!(r["bytes"], 1 << 20, "a growth under the limit is allowed");
    a_turn_hits(
        "memory_mb = 8",
        json!({"op": "grow", "mib": 64}),
        "memory limit 8 MiB exceeded",
    )
    .await;
}

/// A supervisor `p` (probe-agent) with three probe-agent children, each of
/// whose state is a list with one entry; then `p/c2` fails.
async fn supervised(e: &Env, strategy: &str, max_restarts: u32) {
    let child = e.manifest("child", "[agent]\n");
    let parent = e.manifest(
        &format!("parent-{strategy}"),
        &format!(
            "[agent.supervisor]\nstrategy = \"{strategy}\"\nmax_restarts = {max_restarts}\nwithin_secs = 60\n[agent.spawn.probe]\ncomponent = \"@COMPONENTS@/probe-agent.wasm\"\nmanifest = \"{}\"\n",
            child.display()
        ),
    );
    e.spawn("p", "probe-agent", Some(&parent)).await;
    for c in ["c1", "c2", "c3"] {
        let r = e
            .reply("p", json!({"op": "spawn", "name": c, "template": "probe"}))
            .await;
        assert!(r.contains(&format!("p/{c}")), "{r}");
        e.reply(&format!("p/{c}"), json!({"op": "append", "value": c}))
            .await;
    }
    assert_eq!(
        e.sys.get("p").await.unwrap().record.children,
        ["p/c1", "p/c2", "p/c3"]
    );
    match e.ask("p/c2", json!({"op": "trap"})).await {
        ReplyRecord::Failed { error } => assert!(error.contains("trap"), "{error}"),
        other => panic!("{other:?}"),
    }
    e.sys.idle().await;
}

async fn states(e: &Env) -> Vec<Value> {
    let mut out = Vec::new();
    for c in ["p/c1", "p/c2", "p/c3"] {
        out.push(e.state(c).await);
    }
    out
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let e = env().await;
    supervised(&e, "one_for_one", 3).await;
    assert_eq!(
        states(&e).await,
        [json!(["c1"]), Value::Null, json!(["c3"])]
    );
    assert_eq!(e.sys.get("p/c2").await.unwrap().record.restart_count, 1);
    assert_eq!(e.sys.dead_letters("p/c2").await.unwrap().len(), 1);
}

#[tokio::test]
async fn one_for_all_restarts_every_child() {
    let e = env().await;
    supervised(&e, "one_for_all", 3).await;
    assert_eq!(states(&e).await, [Value::Null, Value::Null, Value::Null]);
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_those_spawned_after_it() {
    let e = env().await;
    supervised(&e, "rest_for_one", 3).await;
    assert_eq!(states(&e).await, [json!(["c1"]), Value::Null, Value::Null]);
}

#[tokio::test]
async fn exceeding_the_restart_intensity_fails_the_supervisor_and_escalates() {
    let e = env().await;
    // max_restarts = 0: the first failure is one too many.
    supervised(&e, "one_for_one", 0).await;
    let p = e.sys.get("p").await.unwrap();
    match &p.record.status {
        Status::Failed { reason } => assert!(reason.contains("intensity"), "{reason}"),
        other => panic!("{other:?}"),
    }
    for c in ["p/c1", "p/c3"] {
        assert!(
            matches!(
                e.sys.get(c).await.unwrap().record.status,
                Status::Stopped { .. }
            ),
            "{c}"
        );
    }
    let err = e
        .sys
        .send("p/c1", "{\"op\":\"noop\"}", SendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Stopped { .. }), "{err}");
    // A user restart brings the subtree back, states reset, mailboxes kept.
    e.sys.restart("p").await.unwrap();
    e.sys.idle().await;
    assert!(matches!(
        e.sys.get("p").await.unwrap().record.status,
        Status::Active
    ));
    assert_eq!(states(&e).await, [Value::Null, Value::Null, Value::Null]);
    e.reply("p/c1", json!({"op": "append", "value": 1})).await;
}

/// A supervisor `p` whose policy is `max_restarts` within `within_secs`,
/// with one child `p/c`.
async fn supervisor_with_one_child(e: &Env, max_restarts: u32, within_secs: u64) {
    let child = e.manifest("child", "[agent]\n");
    let parent = e.manifest(
        "parent",
        &format!(
            "[agent.supervisor]\nstrategy = \"one_for_one\"\nmax_restarts = {max_restarts}\nwithin_secs = {within_secs}\n[agent.spawn.probe]\ncomponent = \"@COMPONENTS@/probe-agent.wasm\"\nmanifest = \"{}\"\n",
            child.display()
        ),
    );
    e.spawn("p", "probe-agent", Some(&parent)).await;
    e.reply(
        "p",
        json!({"op": "spawn", "name": "c", "template": "probe"}),
    )
    .await;
}

async fn child_fails(e: &Env) {
    match e.ask("p/c", json!({"op": "fail", "message": "down"})).await {
        ReplyRecord::Failed { error } => assert!(error.contains("down"), "{error}"),
        other => panic!("{other:?}"),
    }
    e.sys.idle().await;
}

fn is_failed(info: &tessera_orchestrator::agent::AgentInfo) -> bool {
    matches!(info.record.status, Status::Failed { .. })
}

#[tokio::test]
async fn restarts_are_counted_within_the_period_and_one_more_than_allowed_escalates() {
    let e = env().await;
    // Two restarts allowed within an hour: the third failure is one too many.
    supervisor_with_one_child(&e, 2, 3600).await;
    for n in 1..=2 {
        child_fails(&e).await;
        let p = e.sys.get("p").await.unwrap();
        assert!(!is_failed(&p), "after {n} failures: {:?}", p.record.status);
        assert_eq!(p.record.restarts.len(), n, "restarts in the window");
        assert_eq!(
            e.sys.get("p/c").await.unwrap().record.restart_count,
            n as u64
        );
    }
    child_fails(&e).await;
    let p = e.sys.get("p").await.unwrap();
    match &p.record.status {
        Status::Failed { reason } => {
            assert!(
                reason.contains("after 2 restarts within 3600 s"),
                "{reason}"
            )
        }
        other => panic!("the third failure should fail the supervisor: {other:?}"),
    }
    assert!(matches!(
        e.sys.get("p/c").await.unwrap().record.status,
        Status::Stopped { .. }
    ));
}

#[tokio::test]
async fn restarts_older_than_the_period_no_longer_count() {
    let e = env().await;
    // One restart allowed per second: failures further apart than that
    // never exceed it, however many there are.
    supervisor_with_one_child(&e, 1, 1).await;
    for n in 1..=3 {
        child_fails(&e).await;
        let p = e.sys.get("p").await.unwrap();
        assert!(!is_failed(&p), "failure {n}: {:?}", p.record.status);
        assert_eq!(
            p.record.restarts.len(),
            1,
            "only the newest restart is in the window"
        );
        assert_eq!(e.sys.get("p/c").await.unwrap().record.restart_count, n);
        // Past the period: the restart just made leaves the window.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // Two failures inside one period are one too many.
    child_fails(&e).await;
    child_fails(&e).await;
    assert!(is_failed(&e.sys.get("p").await.unwrap()));
}

#[tokio::test]
async fn a_supervisor_of_a_failed_supervisor_restarts_it() {
    let e = env().await;
    // top → p (max_restarts 0) → c1..c3: c2 fails, p fails, top restarts p.
    let child = e.manifest("child", "[agent]\n");
    let parent = e.manifest(
        "parent",
        &format!(
            "[agent.supervisor]\nmax_restarts = 0\n[agent.spawn.probe]\ncomponent = \"@COMPONENTS@/probe-agent.wasm\"\nmanifest = \"{}\"\n",
            child.display()
        ),
    );
    let top = e.manifest(
        "top",
        &format!(
            "[agent.supervisor]\nmax_restarts = 5\n[agent.spawn.sup]\ncomponent = \"@COMPONENTS@/probe-agent.wasm\"\nmanifest = \"{}\"\n",
            parent.display()
        ),
    );
    e.spawn("top", "probe-agent", Some(&top)).await;
    e.reply(
        "top",
        json!({"op": "spawn", "name": "p", "template": "sup", "state": "[\"kept?\"]"}),
    )
    .await;
    e.reply("top/p", json!({"op": "append", "value": "x"}))
        .await;
    e.reply(
        "top/p",
        json!({"op": "spawn", "name": "c", "template": "probe"}),
    )
    .await;
    e.ask("top/p/c", json!({"op": "fail"})).await;
    e.sys.idle().await;
    let p = e.sys.get("top/p").await.unwrap();
    assert!(
        matches!(p.record.status, Status::Active),
        "{:?}",
        p.record.status
    );
    assert_eq!(p.record.restart_count, 1);
    // Back to its initial state (the spawn's), not the one its turns built.
    assert_eq!(e.state("top/p").await, json!(["kept?"]));
    assert!(matches!(
        e.sys.get("top/p/c").await.unwrap().record.status,
        Status::Active
    ));
    assert_eq!(e.sys.get("top").await.unwrap().record.restarts.len(), 1);
}

#[tokio::test]
async fn spawn_is_idempotent_by_name_and_refuses_templates_that_are_not_granted() {
    let e = env().await;
    let m = e.manifest(
        "spawner",
        "[agent.spawn.w]\ncomponent = \"@COMPONENTS@/worker.wasm\"\n",
    );
    e.spawn("s", "probe-agent", Some(&m)).await;
    for _ in 0..2 {
        let r = e
            .reply("s", json!({"op": "spawn", "name": "one", "template": "w"}))
            .await;
        assert!(r.contains("s/one"), "{r}");
    }
    assert_eq!(e.sys.get("s").await.unwrap().record.children, ["s/one"]);
    let r = e
        .reply(
            "s",
            json!({"op": "spawn", "name": "two", "template": "other"}),
        )
        .await;
    assert!(r.contains("denied"), "{r}");
    assert!(e.sys.get("s/two").await.is_err());
}

#[tokio::test]
async fn a_coordinator_spawns_workers_and_adds_up_their_replies() {
    let e = env().await;
    let m = e.manifest(
        "coordinator",
        "[agent.spawn.worker]\ncomponent = \"@COMPONENTS@/worker.wasm\"\n",
    );
    e.spawn("coord", "coordinator", Some(&m)).await;
    let r = e
        .reply("coord", json!({"texts": ["a b c", "d e", "f"]}))
        .await;
    let v: Value = serde_json::from_str(&r).unwrap();
    assert_eq!(v["total"], 6, "{v}");
    assert_eq!(e.sys.get("coord").await.unwrap().record.children.len(), 3);
    assert_eq!(e.sys.get("coord/w1").await.unwrap().record.turns, 1);
}

#[tokio::test]
async fn a_tool_that_needs_approval_waits_across_a_restart_and_goes_on_when_approved() {
    let e = env().await;
    let m = e.manifest(
        "tools",
        "[agent.tools.cities]\ncomponent = \"@COMPONENTS@/city-facts.wasm\"\napproval = [\"compare\"]\n",
    );
    e.spawn("t", "probe-agent", Some(&m)).await;
    // The tool list is generated from the tool's WIT schemas.
    let tools: Value = serde_json::from_str(&e.reply("t", json!({"op": "tools"})).await).unwrap();
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["cities__cities", "cities__compare", "cities__population"]
    );
    let pop = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "cities__population")
        .unwrap();
    assert_eq!(
        pop["parameters"]["properties"]["city"]["type"], "string",
        "{pop}"
    );
    // A tool without approval runs at once, as a child run of the turn.
    let r = e
        .reply(
            "t",
            json!({"op": "tool", "name": "cities__population", "args": {"city": "Lyon"}}),
        )
        .await;
    assert!(r.contains("522250"), "{r}");
    let turn = e.sys.turns("t").await.unwrap().pop().unwrap();
    e.journal.flush();
    let runs = e.journal.list().unwrap();
    let child = runs
        .iter()
        .map(|r| r.header.clone())
        .find(|h| {
            h.agent
                .as_ref()
                .and_then(|a| a.tool.as_ref())
                .is_some_and(|t| Some(&t.turn_run) == turn.run.as_ref())
        })
        .expect("the tool call's run names its turn's run");
    assert_eq!(child.function, "population");
    // One that needs approval stops the turn.
    let msg = e
        .sys
        .send(
            "t",
            &json!({"op": "tool", "name": "cities__compare", "args": {"a": "Lyon", "b": "Paris"}})
                .to_string(),
            SendOptions {
                id: None,
                expects_reply: true,
            },
        )
        .await
        .unwrap();
    e.sys.idle().await;
    let waiting = e.sys.approvals("t").await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].decision.is_none());
    assert_eq!(waiting[0].tool, "cities__compare");
    // The process goes away; a new one finds the turn still waiting.
    let Env {
        dir,
        stores,
        journal,
        sys,
    } = e;
    drop(sys);
    let sys = open(dir.path(), &stores, &journal).await;
    let e = Env {
        dir,
        stores,
        journal,
        sys,
    };
    assert!(matches!(
        e.sys.get("t").await.unwrap().record.status,
        Status::Waiting { .. }
    ));
    e.sys
        .decide("t", &waiting[0].request, true, Some("test".into()), None)
        .await
        .unwrap();
    match e.sys.wait_reply(&msg, WAIT).await.unwrap() {
        ReplyRecord::Replied { reply, .. } => {
            assert!(reply.unwrap().contains("ratio"), "the compare result")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        e.sys.get("t").await.unwrap().record.status,
        Status::Active
    ));
    // Rejected: the agent sees the reason.
    let msg = e
        .sys
        .send(
            "t",
            &json!({"op": "tool", "name": "cities__compare", "args": {"a": "Nice", "b": "Paris"}})
                .to_string(),
            SendOptions {
                id: None,
                expects_reply: true,
            },
        )
        .await
        .unwrap();
    e.sys.idle().await;
    let req = e
        .sys
        .approvals("t")
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.decision.is_none())
        .unwrap();
    e.sys
        .decide("t", &req.request, false, None, Some("not today".into()))
        .await
        .unwrap();
    match e.sys.wait_reply(&msg, WAIT).await.unwrap() {
        ReplyRecord::Replied { reply, .. } => assert!(reply.unwrap().contains("not today")),
        other => panic!("{other:?}"),
    }
    let err = e
        .sys
        .decide("t", &req.request, true, None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already rejected"), "{err}");
}

#[tokio::test]
async fn a_tool_runs_under_its_own_grants_not_the_agents() {
    let e = env().await;
    tessera_test_support::component("kv-tool");
    let kv = e.manifest("kv", "[keyvalue]\nbuckets = [\"notes\"]\n");
    // The agent may open `notes` itself; `bare` is the same tool component
    // granted nothing, `kv` the same with `notes` granted to the tool.
    let m = e.manifest(
        "agent",
        &format!(
            "[keyvalue]\nbuckets = [\"notes\"]\n[agent.tools.bare]\ncomponent = \"@COMPONENTS@/kv-tool.wasm\"\nfunctions = [\"set\", \"get\"]\n[agent.tools.kv]\ncomponent = \"@COMPONENTS@/kv-tool.wasm\"\nmanifest = \"{}\"\nfunctions = [\"set\", \"get\"]\n",
            kv.display()
        ),
    );
    e.spawn("a", "probe-agent", Some(&m)).await;
    let call = |name: &'static str, args: Value| {
        let e = &e;
        async move {
            let r = e
                .reply("a", json!({"op": "tool", "name": name, "args": args}))
                .await;
            serde_json::from_str::<Value>(&r).unwrap()
        }
    };
    // Allowed: the tool's manifest grants the bucket.
    let set = call(
        "kv__set",
        json!({"bucket": "notes", "key": "k", "value": "v1"}),
    )
    .await;
    assert!(set.get("error").is_none(), "{set}");
    let got = call("kv__get", json!({"bucket": "notes", "key": "k"})).await;
    assert!(got["result"].as_str().unwrap().contains("v1"), "{got}");
    // Denied: the agent's own grant does not pass to a tool granted nothing.
    for (name, args) in [
        (
            "bare__set",
            json!({"bucket": "notes", "key": "k", "value": "v2"}),
        ),
        ("bare__get", json!({"bucket": "notes", "key": "k"})),
    ] {
        let r = call(name, args).await;
        let text = r.to_string();
        assert!(text.contains("access denied"), "{name}: {text}");
        assert!(
            !text.contains("v1"),
            "{name} read the agent's bucket: {text}"
        );
    }
    let got = call("kv__get", json!({"bucket": "notes", "key": "k"})).await;
    assert!(
        got["result"].as_str().unwrap().contains("v1"),
        "unchanged: {got}"
    );
    // The denied call's own run carries the denial, under the tool's grants.
    let denied = tool_runs(&e, |t| t.name.starts_with("bare"));
    assert_eq!(denied.len(), 2);
    for r in &denied {
        assert!(
            r.header.grants.keyvalue.buckets.is_empty(),
            "{:?}",
            r.header.grants.keyvalue
        );
    }
}

#[tokio::test]
async fn a_fork_starts_from_the_state_after_the_turn_and_keeps_the_log_up_to_it() {
    let e = env().await;
    e.spawn("f", "probe-agent", None).await;
    for v in 1..=4 {
        e.reply("f", json!({"op": "append", "value": v})).await;
    }
    let runs_before = e.journal.list().unwrap().len();
    let rec = e.sys.fork("f", 2, "g").await.unwrap();
    assert_eq!(rec.turns, 2);
    assert_eq!(e.state("g").await, json!([1, 2]));
    assert_eq!(e.sys.turns("g").await.unwrap().len(), 2);
    assert_eq!(
        e.journal.list().unwrap().len(),
        runs_before,
        "forking runs nothing"
    );
    e.reply("g", json!({"op": "append", "value": "g"})).await;
    assert_eq!(e.state("g").await, json!([1, 2, "g"]));
    assert_eq!(e.state("f").await, json!([1, 2, 3, 4]));
    assert_eq!(e.sys.get("g").await.unwrap().record.turns, 3);
    let err = e.sys.fork("f", 9, "h").await.unwrap_err();
    assert!(err.to_string().contains("no turn 9"), "{err}");
}

#[tokio::test]
async fn a_turn_replays_offline_from_the_journal() {
    let e = env().await;
    let m = e.manifest("open", OPEN);
    e.spawn("a", "probe-agent", Some(&m)).await;
    e.spawn("b", "probe-agent", Some(&m)).await;
    e.reply(
        "a",
        json!({"op": "ask", "to": "b", "body": {"op": "append", "value": 1}}),
    )
    .await;
    let turn = e.sys.turns("a").await.unwrap().pop().unwrap();
    let run = turn.run.unwrap();
    e.journal.flush();
    let steps = e.journal.steps(&run).unwrap();
    assert!(
        steps
            .iter()
            .any(|(_, s)| s.capability == "agent" && s.op == "ask"),
        "{steps:?}"
    );
    // A fresh runtime with no agent system at all.
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let report = tessera_journal::replay(&rt, &e.journal, &run, None)
        .await
        .unwrap();
    assert!(report.divergence.is_none(), "{:?}", report.divergence);
}

#[tokio::test]
async fn work_left_by_a_process_is_resumed_by_the_next() {
    let e = env().await;
    let m = e.manifest("open", OPEN);
    e.spawn("a", "probe-agent", Some(&m)).await;
    // Queue mail for `a` directly in the store, as a process that died
    // after delivering and before running the turn leaves it.
    let store = e.stores.for_bucket(records::BUCKET).await.unwrap();
    let env = records::Envelope {
        id: "left".into(),
        sender: None,
        body: json!({"op": "append", "value": "left"}).to_string(),
        expects_reply: false,
        sent: records::now(),
        trace: Default::default(),
    };
    store
        .put_hint(records::BUCKET, &records::work_key("a"), b"1")
        .await
        .unwrap();
    store
        .increment(records::BUCKET, &records::tail_key("a"), 1)
        .await
        .unwrap();
    store
        .put(
            records::BUCKET,
            &records::mail_key("a", 1),
            &serde_json::to_vec(&env).unwrap(),
            tessera_store::Expect::Any,
            None,
        )
        .await
        .unwrap();
    let sys = open(e.dir.path(), &e.stores, &e.journal).await;
    sys.idle().await;
    assert_eq!(e.state("a").await, json!(["left"]));
}

// ---------------------------------------------------------------------------
// The ReAct agent, driven by a scripted OpenAI-compatible server over real
// HTTP on 127.0.0.1 that plays the model (tessera_test_support::ScriptedLlm),
// with the real city-facts tool component.

/// The API key the providers send: it must reach the server and nothing else.
const KEY: &str = "sk-test-KEY-that-never-leaves-the-host-9f3a";

fn providers(llm: &ScriptedLlm, timeout: Duration) -> Arc<LlmProviders> {
    let mut map = std::collections::BTreeMap::new();
    for (name, stream) in [("scripted", false), ("streamed", true)] {
        let mut p = Provider::new(llm.base_url());
        p.api_key = Some(ApiKey::new(KEY));
        p.stream = stream;
        p.timeout = timeout;
        map.insert(name.to_string(), p);
    }
    Arc::new(LlmProviders::new(map))
}

fn react_manifest(e: &Env, name: &str, model: &str, extra: &str) -> PathBuf {
    e.manifest(
        name,
        &format!(
            "[llm]\nmodels = [\"{model}\"]\n{extra}\n[agent]\nretries = 1\n[agent.tools.cities]\ncomponent = \"@COMPONENTS@/city-facts.wasm\"\nfunctions = [\"population\", \"compare\"]\n[limits]\ntimeout_ms = 20000\n"
        ),
    )
}

/// The scripted conversation: two tasks, each a tool call then an answer.
fn lyon_script() -> Vec<Rule> {
    vec![
        Rule::tool_call("cities__population", json!({"city": "Lyon"}))
            .when("population of Lyon")
            .once(),
        Rule::text("Lyon has 522,250 inhabitants (INSEE, 2020).")
            .when("522250")
            .once(),
        Rule::tool_call("cities__compare", json!({"a": "Paris", "b": "Lyon"}))
            .when("compare it with Paris")
            .once(),
        Rule::text("Paris has about 4.1 times as many people as Lyon.")
            .when("ratio")
            .once(),
        Rule::text("You are welcome.").when("thanks"),
    ]
}

fn answer(reply: &str) -> String {
    serde_json::from_str::<Value>(reply).unwrap()["answer"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_react_agent_runs_a_multi_turn_task_with_tools_and_every_turn_replays_offline() {
    let mut llm = ScriptedLlm::start(lyon_script());
    let e = env_with(Some(providers(&llm, Duration::from_secs(30)))).await;
    let m = react_manifest(
        &e,
        "react",
        "scripted/gpt-test",
        "max_tokens_per_call = 256",
    );
    e.spawn("researcher", "react-agent", Some(&m)).await;
    let r1 = e
        .reply(
            "researcher",
            json!({"task": "find the population of Lyon using the tools"}),
        )
        .await;
    assert!(answer(&r1).contains("522,250"), "{r1}");
    let r2 = e
        .reply("researcher", json!({"task": "now compare it with Paris"}))
        .await;
    assert!(answer(&r2).contains("4.1 times"), "{r2}");
    let r3 = e.reply("researcher", json!({"task": "thanks"})).await;
    assert_eq!(answer(&r3), "You are welcome.");
    assert_eq!(
        llm.request_count(),
        5,
        "two steps for each task with a tool, one for the last"
    );
    // What the model was given: the tools from the WIT schemas, the key,
    // the call budget as max_tokens, and the whole conversation each time.
    let reqs = llm.requests();
    let tools: Vec<&str> = reqs[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["cities__compare", "cities__population"]);
    assert_eq!(
        reqs[0].body["tools"][1]["function"]["parameters"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(reqs[0].body["max_tokens"], 256);
    let last = reqs[4].body["messages"].as_array().unwrap();
    assert_eq!(
        last.len(),
        1 + 4 + 4 + 1,
        "system, 4 messages per tool task, the last task"
    );
    // The explicit state: the conversation so far.
    let state = e.state("researcher").await;
    assert_eq!(state["messages"].as_array().unwrap().len(), 10);
    // Every turn: its LLM exchanges and tool calls are in the journal, each
    // tool call a run of its own naming its turn.
    let turns = e.sys.turns("researcher").await.unwrap();
    assert_eq!(turns.len(), 3);
    assert!(turns.iter().all(|t| t.tokens > 0));
    e.journal.flush();
    let steps = e.journal.steps(turns[0].run.as_ref().unwrap()).unwrap();
    let kinds: Vec<String> = steps
        .iter()
        .map(|(_, s)| s.kind())
        .filter(|k| k.starts_with("llm") || k.starts_with("agent"))
        .collect();
    assert_eq!(
        kinds,
        ["agent.tools", "llm.chat", "agent.tool", "llm.chat"],
        "{kinds:?}"
    );
    // Offline: the server is gone, and every turn replays identically.
    llm.stop();
    let before = llm.request_count();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    for t in &turns {
        let report = tessera_journal::replay(&rt, &e.journal, t.run.as_ref().unwrap(), None)
            .await
            .unwrap();
        assert!(
            report.divergence.is_none(),
            "turn {}: {:?}",
            t.turn,
            report.divergence
        );
    }
    assert_eq!(llm.request_count(), before);
    // Keys never reach the journal, its exports, or the agents' store.
    for t in &turns {
        let mut out = Vec::new();
        e.journal.export(t.run.as_ref().unwrap(), &mut out).unwrap();
        assert!(!String::from_utf8_lossy(&out).contains(KEY));
    }
    for entry in walk(e.dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the key is in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn the_react_agent_stops_at_its_step_limit_and_says_so() {
    // A model that never answers: every reply is another tool call.
    let llm = ScriptedLlm::start([Rule::tool_call(
        "cities__population",
        json!({"city": "Lyon"}),
    )]);
    let e = env_with(Some(providers(&llm, Duration::from_secs(30)))).await;
    let m = react_manifest(
        &e,
        "looping",
        "scripted/gpt-test",
        "[config]\nvalues = { max_steps = \"3\" }",
    );
    e.spawn("looper", "react-agent", Some(&m)).await;
    let r: Value = serde_json::from_str(
        &e.reply("looper", json!({"task": "find the population of Lyon"}))
            .await,
    )
    .unwrap();
    assert_eq!(r["answer"], Value::Null, "{r}");
    assert_eq!(r["error"], "step limit of 3 reached", "{r}");
    assert_eq!(r["steps"], 3);
    assert_eq!(llm.request_count(), 3, "one model call per step, no more");
    // The turn committed with the conversation so far: the task, then a
    // call and its result for each step.
    let state = e.state("looper").await;
    assert_eq!(state["messages"].as_array().unwrap().len(), 1 + 3 * 2);
    let turn = e.sys.turns("looper").await.unwrap().pop().unwrap();
    let runs = tool_runs(&e, |t| Some(&t.turn_run) == turn.run.as_ref());
    assert_eq!(runs.len(), 3);
    // A limit that is not a whole number fails the turn, naming it.
    let bad = react_manifest(
        &e,
        "bad-limit",
        "scripted/gpt-test",
        "[config]\nvalues = { max_steps = \"many\" }",
    );
    e.spawn("bad", "react-agent", Some(&bad)).await;
    match e.ask("bad", json!({"task": "anything"})).await {
        ReplyRecord::Failed { error } => assert!(error.contains("max_steps"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(llm.request_count(), 3, "no model call for a bad config");
}

#[tokio::test]
async fn a_turn_replayed_with_a_changed_prompt_diverges_at_the_model_call() {
    let llm = ScriptedLlm::start(lyon_script());
    let e = env_with(Some(providers(&llm, Duration::from_secs(30)))).await;
    let m = react_manifest(&e, "react", "scripted/gpt-test", "");
    e.spawn("researcher", "react-agent", Some(&m)).await;
    e.reply(
        "researcher",
        json!({"task": "find the population of Lyon using the tools"}),
    )
    .await;
    e.reply("researcher", json!({"task": "now compare it with Paris"}))
        .await;
    let run = e.sys.turns("researcher").await.unwrap()[1]
        .run
        .clone()
        .unwrap();
    e.journal.flush();
    let header = e.journal.header(&run).unwrap();
    let steps = e.journal.steps(&run).unwrap();
    // The same turn, same recording, but the conversation it was given
    // says something else: the prompt changed.
    let mut args = header.args.clone();
    let state = args["state"]
        .as_str()
        .unwrap()
        .replace("522,250", "500,000");
    assert_ne!(state, args["state"].as_str().unwrap());
    args["state"] = json!(state);
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let loaded = rt
        .load_file(
            std::path::Path::new(&wasm("react-agent")),
            (*header.grants).clone(),
        )
        .unwrap();
    let outcome = loaded
        .call_json_with(
            &header.function,
            &args,
            tessera_runtime::CallOptions {
                replay: Some(Arc::new(tessera_journal::ReplayCursor::new(steps))),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let d = outcome.divergence.expect("a changed prompt diverges");
    assert_eq!(d.recorded.as_ref().unwrap().kind(), "llm.chat", "{d}");
    assert_ne!(
        d.recorded.as_ref().unwrap().request["digest"],
        d.actual.as_ref().unwrap().request["digest"]
    );
}

#[tokio::test]
async fn a_fork_calls_no_model_again_and_goes_on_from_the_conversation_of_its_turn() {
    let llm = ScriptedLlm::start(lyon_script());
    let e = env_with(Some(providers(&llm, Duration::from_secs(30)))).await;
    let m = react_manifest(&e, "react", "streamed/gpt-test", "");
    e.spawn("researcher", "react-agent", Some(&m)).await;
    e.reply(
        "researcher",
        json!({"task": "find the population of Lyon using the tools"}),
    )
    .await;
    e.reply("researcher", json!({"task": "now compare it with Paris"}))
        .await;
    assert!(
        llm.requests().iter().all(|r| r.body["stream"] == true),
        "the streaming provider"
    );
    let before = llm.request_count();
    e.sys.fork("researcher", 1, "researcher-b").await.unwrap();
    assert_eq!(llm.request_count(), before, "forking calls no model");
    assert_eq!(
        e.state("researcher-b").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let r = e.reply("researcher-b", json!({"task": "thanks"})).await;
    assert_eq!(answer(&r), "You are welcome.");
    let last = llm.requests().pop().unwrap();
    assert_eq!(
        last.body["messages"].as_array().unwrap().len(),
        1 + 4 + 1,
        "turn 1's conversation, not turn 2's"
    );
}

#[tokio::test]
async fn model_errors_are_retried_and_slow_replies_time_out() {
    let llm = ScriptedLlm::start([
        Rule::error(503, "overloaded").when("flaky").once(),
        Rule::text("recovered").when("flaky"),
        Rule::text("too late")
            .when("slow")
            .after(Duration::from_secs(3)),
    ]);
    let e = env_with(Some(providers(&llm, Duration::from_secs(1)))).await;
    let m = react_manifest(&e, "react", "scripted/gpt-test", "");
    e.spawn("r", "react-agent", Some(&m)).await;
    // 503 on the first attempt (the turn fails, nothing kept), the retry works.
    let r = e.reply("r", json!({"task": "flaky"})).await;
    assert_eq!(answer(&r), "recovered");
    let t = e.sys.turns("r").await.unwrap().pop().unwrap();
    assert_eq!(t.earlier_runs.len(), 1);
    assert_eq!(e.state("r").await["messages"].as_array().unwrap().len(), 2);
    // Slower than the provider's timeout, twice: a dead letter.
    match e.ask("r", json!({"task": "slow"})).await {
        ReplyRecord::Failed { error } => assert!(error.contains("timeout"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.state("r").await["messages"].as_array().unwrap().len(),
        2,
        "a failed turn keeps nothing"
    );
}

#[tokio::test]
async fn an_agents_token_budget_is_enforced_across_turns() {
    let llm = ScriptedLlm::start([Rule::text("fine")]);
    let e = env_with(Some(providers(&llm, Duration::from_secs(30)))).await;
    let m = react_manifest(
        &e,
        "react",
        "scripted/gpt-test",
        "max_tokens_per_agent = 150",
    );
    e.spawn("b", "react-agent", Some(&m)).await;
    let mut answered = 0;
    let mut refused = None;
    for i in 0..20 {
        match e
            .ask(
                "b",
                json!({"task": format!("question {i}: tell me something")}),
            )
            .await
        {
            ReplyRecord::Replied { .. } => answered += 1,
            ReplyRecord::Failed { error } => {
                refused = Some(error);
                break;
            }
        }
    }
    let error = refused.expect("the budget runs out");
    assert!(error.contains("budget"), "{error}");
    assert!(answered >= 1);
    let info = e.sys.get("b").await.unwrap();
    assert!(
        info.record.tokens <= 150 + 100,
        "{} tokens",
        info.record.tokens
    );
    let sent = llm.request_count();
    // Refused before contacting the provider.
    e.ask("b", json!({"task": "one more"})).await;
    assert_eq!(llm.request_count(), sent);
}
