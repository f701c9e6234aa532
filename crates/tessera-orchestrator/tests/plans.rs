//! Plans run against the real example components: every step an ordinary
//! journaled call, progress in a real embedded store.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tessera_journal::JournalStore;
use tessera_orchestrator::local::{FileComponents, LocalCaller};
use tessera_orchestrator::plan::Plan;
use tessera_orchestrator::progress::{PLANS_BUCKET, Progress, RunStatus, StepState};
use tessera_orchestrator::run::{PlanEvent, Runner};
use tessera_runtime::{Runtime, RuntimeConfig};
use tessera_store::Embedded;
use tokio_util::sync::CancellationToken;

struct Env {
    _dir: tempfile::TempDir,
    journal: Arc<JournalStore>,
    runner: Runner,
}

fn env() -> Env {
    // Built (if needed) before any plan names them by path.
    tessera_test_support::component("hello");
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(JournalStore::open(dir.path()).unwrap());
    let store = Arc::new(Embedded::open(&dir.path().join("store.redb")).unwrap());
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let caller = LocalCaller::new(FileComponents::new(runtime), journal.clone());
    let runner = Runner::new(Progress::new(store, PLANS_BUCKET), Arc::new(caller));
    Env {
        _dir: dir,
        journal,
        runner,
    }
}

fn plan(text: &str) -> Plan {
    Plan::from_toml(
        text,
        "test.plan.toml",
        &tessera_test_support::components_dir(),
        "test",
    )
    .unwrap()
}

const FAN_OUT: &str = r#"
name = "greetings"
[inputs.names]
type = "array"

[steps.greet]
component = "hello.wasm"
function = "greet"
for_each = ".inputs.names"
concurrency = 2
args = { name = "${{ .item }}" }

[steps.count]
component = "hello.wasm"
function = "chatter"
args = { msg = "${{ .steps.greet.output | join(\" \") }}" }

[outputs]
greetings = "${{ .steps.greet.output }}"
length = "${{ .steps.count.output }}"
"#;

#[tokio::test]
async fn a_fan_out_keeps_item_order_and_every_call_is_journaled_and_linked() {
    let e = env();
    let names: Vec<String> = (0..7).map(|i| format!("n{i}")).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let rec = e
        .runner
        .run(
            &plan(FAN_OUT),
            &json!({ "names": names }),
            Some(tx),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Succeeded, "{rec:?}");
    let outputs = rec.outputs.unwrap();
    let expected: Vec<String> = names.iter().map(|n| format!("Hello, {n}!")).collect();
    assert_eq!(outputs["greetings"], json!(expected));
    assert_eq!(outputs["length"], json!(expected.join(" ").len()));
    // Eight calls (seven greetings, one count), each its own journal run,
    // linked to the plan run, step and item.
    e.journal.flush();
    let greet = e
        .runner
        .progress()
        .step(&rec.id, "greet")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (greet.state, greet.items, greet.runs.len()),
        (StepState::Succeeded, Some(7), 7)
    );
    for run in &greet.runs {
        let h = e.journal.header(run).unwrap();
        let link = h.plan.unwrap();
        assert_eq!(
            (link.run.as_str(), link.step.as_str()),
            (rec.id.as_str(), "greet")
        );
        assert_eq!(link.key, format!("{}/greet/{}", rec.id, link.item.unwrap()));
    }
    // The events: a start, an attempt per call, a step each, the end.
    let mut attempts = 0;
    let mut ended = false;
    while let Ok(ev) = rx.try_recv() {
        match ev {
            PlanEvent::Attempt { .. } => attempts += 1,
            PlanEvent::Ended { record } => ended = record.status == RunStatus::Succeeded,
            _ => {}
        }
    }
    assert_eq!((attempts, ended), (8, true));
    // The journal runs were held while the plan ran and released after.
    assert!(e.journal.holds(&greet.runs[0]).unwrap().is_empty());
}

const RETRY_FALLBACK: &str = r#"
[inputs.b]
type = "integer"

[steps.divide]
component = "hello.wasm"
function = "types#divide"
args = { a = 10, b = "${{ .inputs.b }}" }
retry = { max_attempts = 3, backoff = "10ms" }
on_error = "fallback"
fallback = "safe"

[steps.safe]
component = "hello.wasm"
function = "types#divide"
args = { a = 10, b = 1 }

[steps.skipped]
component = "hello.wasm"
function = "greet"
when = ".inputs.b == 0 | not"
args = { name = "never" }

[steps.after]
component = "hello.wasm"
function = "greet"
args = { name = "${{ .steps.divide.output | tostring }}" }

[outputs]
result = "${{ .steps.after.output }}"
"#;

#[tokio::test]
async fn retries_then_a_fallback_stands_in_and_when_skips() {
    let e = env();
    let rec = e
        .runner
        .run(
            &plan(RETRY_FALLBACK),
            &json!({"b": 0}),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Succeeded, "{rec:?}");
    assert_eq!(rec.outputs.unwrap()["result"], json!("Hello, 10!"));
    let p = e.runner.progress();
    let divide = p.step(&rec.id, "divide").await.unwrap().unwrap();
    assert_eq!(divide.state, StepState::FellBack);
    assert_eq!(divide.attempts, 3, "{divide:?}");
    assert!(divide.error.unwrap().contains("division by zero"));
    assert_eq!(
        p.step(&rec.id, "safe").await.unwrap().unwrap().output,
        json!(10)
    );
    assert_eq!(
        p.step(&rec.id, "skipped").await.unwrap().unwrap().state,
        StepState::Skipped
    );
    // With b = 2, the primary succeeds and its fallback never runs.
    let rec = e
        .runner
        .run(
            &plan(RETRY_FALLBACK),
            &json!({"b": 2}),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(rec.outputs.unwrap()["result"], json!("Hello, 5!"));
    assert!(p.step(&rec.id, "safe").await.unwrap().is_none());
    assert_eq!(
        p.step(&rec.id, "skipped").await.unwrap().unwrap().state,
        StepState::Succeeded
    );
}

#[tokio::test]
async fn a_failed_step_fails_the_plan_keeps_finished_steps_and_resume_goes_on() {
    let e = env();
    let text = r#"
[inputs.b]
type = "integer"
[steps.first]
component = "hello.wasm"
function = "greet"
args = { name = "first" }
[steps.divide]
component = "hello.wasm"
function = "types#divide"
needs = ["first"]
args = { a = 6, b = "${{ .inputs.b }}" }
[outputs]
q = "${{ .steps.divide.output }}"
"#;
    let p = plan(text);
    let rec = e
        .runner
        .run(&p, &json!({"b": 0}), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Failed);
    assert!(
        rec.error
            .as_deref()
            .unwrap()
            .contains("step `divide` failed"),
        "{rec:?}"
    );
    let first = e
        .runner
        .progress()
        .step(&rec.id, "first")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.output, json!("Hello, first!"));
    // Resuming tries the failed step again (here it fails again: the
    // inputs are the run's) and never runs `first` again.
    let again = e
        .runner
        .resume(&rec.id, None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((again.status, again.resumes), (RunStatus::Failed, 1));
    let first_again = e
        .runner
        .progress()
        .step(&rec.id, "first")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_again, first, "a finished step ran again");
    // A succeeded run is not resumed.
    let ok = e
        .runner
        .run(&p, &json!({"b": 3}), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(ok.outputs.unwrap()["q"], json!(2));
    assert!(
        e.runner
            .resume(&ok.id, None, CancellationToken::new())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_cancelled_plan_stops_keeps_finished_steps_and_notes_the_attempt_in_flight() {
    let e = env();
    // `spin` burns fuel for a long time: the plan is cancelled while it runs.
    tessera_test_support::component("spin");
    let text = r#"
[steps.quick]
component = "hello.wasm"
function = "greet"
args = { name = "q" }
[steps.slow]
component = "spin.wasm"
function = "count"
needs = ["quick"]
args = { n = 4000000000 }
"#;
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = e.runner.clone();
    let p = plan(text);
    let c2 = cancel.clone();
    let task = tokio::spawn(async move { runner.run(&p, &Value::Null, Some(tx), c2).await });
    // Cancel once `slow` has started.
    while let Some(ev) = rx.recv().await {
        if matches!(&ev, PlanEvent::Attempt { step, .. } if step == "slow") {
            cancel.cancel();
            break;
        }
    }
    let rec = task.await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Cancelled, "{rec:?}");
    let progress = e.runner.progress();
    assert!(progress.step(&rec.id, "slow").await.unwrap().is_none());
    let quick = progress.step(&rec.id, "quick").await.unwrap().unwrap();
    // The attempt in flight was noted with its idempotency key.
    let started = progress
        .started(&rec.id, "slow", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.key, format!("{}/slow", rec.id));
    assert_eq!(quick.runs.len(), 1);
}

#[tokio::test]
async fn a_step_reads_its_idempotency_key_through_wasi_config_and_its_arguments() {
    let e = env();
    tessera_test_support::component("config-tool");
    let text = r#"
[steps.own]
component = "config-tool.wasm"
function = "get"
args = { key = "tessera.idempotency_key" }
[steps.all]
component = "config-tool.wasm"
function = "get-all"
for_each = "[1, 2]"
[steps.arg]
component = "hello.wasm"
function = "greet"
args = { name = "${{ .step.key }}" }
"#;
    let rec = e
        .runner
        .run(&plan(text), &Value::Null, None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Succeeded, "{rec:?}");
    let p = e.runner.progress();
    assert_eq!(
        p.step(&rec.id, "own").await.unwrap().unwrap().output,
        json!(format!("{}/own", rec.id))
    );
    // In a fan-out, each item has its own key; every `tessera.` value shows.
    let all = p.step(&rec.id, "all").await.unwrap().unwrap().output;
    let pairs: Vec<(String, String)> = serde_json::from_value(all[1].clone()).unwrap();
    let second: std::collections::BTreeMap<String, String> = pairs.into_iter().collect();
    assert_eq!(
        second["tessera.idempotency_key"],
        format!("{}/all/1", rec.id)
    );
    assert_eq!(second["tessera.plan.item"], "1");
    assert_eq!(second["tessera.plan.step"], "all");
    assert_eq!(second["tessera.plan.attempt"], "1");
    assert_eq!(
        p.step(&rec.id, "arg").await.unwrap().unwrap().output,
        json!(format!("Hello, {}/arg!", rec.id))
    );
    // A manifest cannot set those keys.
    let e = tessera_runtime::Grants::from_toml(
        "[config]\nvalues = { \"tessera.idempotency_key\" = \"x\" }\n",
        "m.toml",
        Path::new("."),
    )
    .unwrap_err();
    assert!(e.to_string().contains("reserved"), "{e}");
}

#[tokio::test]
async fn validation_against_the_components_names_every_mismatch() {
    use tessera_orchestrator::local::LoadedCatalog;
    use tessera_orchestrator::validate::check;
    for c in ["http-fetch", "kv-tool"] {
        tessera_test_support::component(c);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kv.toml"),
        "[keyvalue]\nbuckets = [\"notes\"]\n",
    )
    .unwrap();
    let components = tessera_test_support::components_dir();
    let text = r#"
[inputs.who]
type = "integer"
[steps.div]
component = "C/hello.wasm"
function = "types#divide"
args = { a = 1, b = 2 }
[steps.fetch]
component = "C/http-fetch.wasm"
function = "fetch"
args = { url = "http://127.0.0.1:1/" }
[steps.missing]
component = "C/no-such.wasm"
function = "f"
[steps.nofn]
component = "C/hello.wasm"
function = "no-such-function"
[steps.badparam]
component = "C/hello.wasm"
function = "greet"
args = { nme = "x" }
[steps.literal]
component = "C/hello.wasm"
function = "greet"
args = { name = 3 }
[steps.typed]
component = "C/hello.wasm"
function = "greet"
args = { name = "${{ .steps.div.output }}" }
[steps.input]
component = "C/hello.wasm"
function = "greet"
args = { name = "${{ .inputs.who }}" }
[steps.field]
component = "C/hello.wasm"
function = "greet"
args = { name = "${{ .steps.fetch.output.nosuch }}" }
[steps.bucket]
component = "C/kv-tool.wasm"
manifest = "KV"
function = "get"
args = { bucket = "other", key = "k" }
[steps.fine]
component = "C/hello.wasm"
function = "greet"
args = { name = "${{ .steps.fetch.output.body }}" }
[steps.computed]
component = "C/hello.wasm"
function = "greet"
args = { name = "${{ .steps.div.output | tostring }}" }
"#
    .replace("C/", &format!("{}/", components.display()))
    .replace(
        "\"KV\"",
        &format!("{:?}", dir.path().join("kv.toml").display().to_string()),
    );
    let p = Plan::from_toml(&text, "v.plan.toml", dir.path(), "v").unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let files = FileComponents::new(runtime);
    let errors = check(&p, &LoadedCatalog(&files));
    let found: Vec<(String, String)> = errors
        .iter()
        .map(|e| (e.place.clone(), e.message.clone()))
        .collect();
    let expect = |place: &str, needle: &str| {
        assert!(
            found.iter().any(|(p, m)| p == place && m.contains(needle)),
            "no error at {place} containing {needle:?}: {found:#?}"
        );
    };
    expect("steps.missing.component", "no-such.wasm");
    expect("steps.nofn.function", "no-such-function");
    expect("steps.badparam.args.nme", "has no parameter `nme`");
    expect("steps.badparam.args", "takes the parameter `name`");
    expect(
        "steps.literal.args.name",
        "3 is integer, the parameter takes string",
    );
    expect(
        "steps.typed.args.name",
        "is integer, the parameter takes string",
    );
    expect("steps.input.args.name", "input `who` is integer");
    expect("steps.field.args.name", "has no field `nosuch`");
    expect("steps.bucket.args.bucket", "bucket `other` is not granted");
    // Nothing else: the fine and computed steps pass, as do div and fetch.
    assert_eq!(found.len(), 9, "{found:#?}");
    assert!(errors.iter().all(|e| e.origin == "v.plan.toml"));
}

#[tokio::test]
async fn a_plan_run_replays_offline_call_by_call() {
    let e = env();
    let names = json!({"names": ["a", "b", "c"]});
    let rec = e
        .runner
        .run(&plan(FAN_OUT), &names, None, CancellationToken::new())
        .await
        .unwrap();
    let fb = e
        .runner
        .run(
            &plan(RETRY_FALLBACK),
            &json!({"b": 0}),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    e.journal.flush();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let r = tessera_orchestrator::replay::replay_run(
        e.runner.progress(),
        &e.journal,
        &runtime,
        &rec.id,
    )
    .await
    .unwrap();
    assert!(r.identical(), "{r:?}");
    // Three greetings (items 0, 1, 2 in order), then the count.
    let order: Vec<(String, Option<usize>)> =
        r.calls.iter().map(|c| (c.step.clone(), c.item)).collect();
    assert_eq!(
        order,
        vec![
            ("greet".to_string(), Some(0)),
            ("greet".to_string(), Some(1)),
            ("greet".to_string(), Some(2)),
            ("count".to_string(), None)
        ]
    );
    // Every attempt replays: three failed divisions, the fallback, and
    // the steps after; the fallback's primary-only step is listed unrun.
    let r =
        tessera_orchestrator::replay::replay_run(e.runner.progress(), &e.journal, &runtime, &fb.id)
            .await
            .unwrap();
    assert!(r.identical(), "{r:?}");
    assert_eq!(r.calls.iter().filter(|c| c.step == "divide").count(), 3);
    assert!(r.unfinished.is_empty(), "{r:?}");
    assert!(matches!(
        tessera_orchestrator::replay::replay_run(
            e.runner.progress(),
            &e.journal,
            &runtime,
            "p-none"
        )
        .await,
        Err(tessera_orchestrator::replay::ReplayError::NoSuchRun(_))
    ));
}

#[tokio::test]
async fn one_driver_at_a_time_holds_a_run_and_a_dead_processes_lease_is_taken_over() {
    use tessera_orchestrator::progress::LeaseHolder;
    use tessera_orchestrator::run::RunError;
    let e = env();
    tessera_test_support::component("spin");
    let text = r#"
[steps.slow]
component = "spin.wasm"
function = "count"
args = { n = 4000000000 }
"#;
    let p = plan(text);
    let rec = e.runner.create(&p, &Value::Null).await.unwrap();
    // A driver is running the step...
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let first = {
        let (runner, id, cancel) = (e.runner.clone(), rec.id.clone(), cancel.clone());
        tokio::spawn(async move { runner.resume(&id, Some(tx), cancel).await })
    };
    while let Some(ev) = rx.recv().await {
        if matches!(ev, PlanEvent::Attempt { .. }) {
            break;
        }
    }
    // ...so a second one is refused, naming the holder.
    match e
        .runner
        .resume(&rec.id, None, CancellationToken::new())
        .await
    {
        Err(RunError::Busy { holder, .. }) => assert_eq!(holder.pid, std::process::id()),
        other => panic!("a second driver was let in: {other:?}"),
    }
    cancel.cancel();
    assert_eq!(first.await.unwrap().unwrap().status, RunStatus::Cancelled);
    // Given back when it stopped.
    let store = e.runner.progress().store().clone();
    let key = format!("lease/{}", rec.id);
    assert!(store.get(PLANS_BUCKET, &key).await.unwrap().is_none());
    // A lease held by a process of this host that is gone (kill -9) is
    // taken over at once; one held on another host is not.
    let quick = plan(
        "[steps.q]\ncomponent = \"hello.wasm\"\nfunction = \"greet\"\nargs = { name = \"q\" }\n",
    );
    for (host, taken) in [(None, true), (Some("elsewhere"), false)] {
        let run = e.runner.create(&quick, &Value::Null).await.unwrap();
        let mut dead = LeaseHolder::here();
        dead.pid = u32::MAX - 1; // no such process
        if let Some(h) = host {
            dead.host = h.to_string();
        }
        store
            .put(
                PLANS_BUCKET,
                &format!("lease/{}", run.id),
                &serde_json::to_vec(&dead).unwrap(),
                tessera_store::Expect::Absent,
                Some(std::time::Duration::from_secs(60)),
            )
            .await
            .unwrap();
        let r = e
            .runner
            .resume(&run.id, None, CancellationToken::new())
            .await;
        match (taken, r) {
            (true, Ok(done)) => assert_eq!(done.status, RunStatus::Succeeded),
            (false, Err(RunError::Busy { holder, .. })) => assert_eq!(holder.host, "elsewhere"),
            (t, other) => panic!("host {host:?} (taken over: {t}): {other:?}"),
        }
    }
}
