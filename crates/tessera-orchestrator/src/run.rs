//! The scheduler: runs a plan's steps in dependency order, at most
//! `max_parallel` at once, each one an ordinary (journaled) component call
//! made through a [`StepCaller`], its result committed to the store before
//! any step that reads it starts.
//!
//! Durability: a finished step's record is in the store before its
//! dependents start, so after `kill -9` at any moment [`Runner::resume`]
//! runs no finished step again. A step that was in flight is run again
//! with the same idempotency key (`<plan run>/<step>`, or
//! `<plan run>/<step>/<index>` for one call of a fan-out): at-least-once
//! for steps in flight at a crash, exactly-once for finished ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_store::StoreError;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::plan::{ComponentRef, OnError, Plan, PlanError, Step};
use crate::progress::{
    Progress, RunRecord, RunStatus, Started, StepRecord, StepState, new_run_id, now,
};

/// Which plan run, step and attempt a call belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepLink {
    /// The plan run.
    pub plan_run: String,
    /// The plan's name.
    pub plan: String,
    /// The step.
    pub step: String,
    /// The item of a fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// The attempt (1-based; attempts made before a crash count).
    pub attempt: u32,
    /// The idempotency key: the same for every attempt of this step (or
    /// item), in this process or after a resume.
    pub key: String,
}

impl StepLink {
    /// The values a step's call is given, which the component reads through
    /// `wasi:config`: `tessera.idempotency_key`, `tessera.plan.run`,
    /// `tessera.plan.name`, `tessera.plan.step`, `tessera.plan.attempt`, and
    /// `tessera.plan.item` in a fan-out.
    pub fn context(&self) -> std::collections::BTreeMap<String, String> {
        let mut m = std::collections::BTreeMap::new();
        m.insert("tessera.idempotency_key".into(), self.key.clone());
        m.insert("tessera.plan.run".into(), self.plan_run.clone());
        m.insert("tessera.plan.name".into(), self.plan.clone());
        m.insert("tessera.plan.step".into(), self.step.clone());
        m.insert("tessera.plan.attempt".into(), self.attempt.to_string());
        if let Some(i) = self.item {
            m.insert("tessera.plan.item".into(), i.to_string());
        }
        m
    }
}

/// One call a step makes.
#[derive(Debug, Clone)]
pub struct StepCall {
    /// The component.
    pub component: ComponentRef,
    /// The digest the component must have (the step's `digest` pin).
    pub digest: Option<String>,
    /// The directory a component path is relative to.
    pub base: PathBuf,
    /// The function.
    pub function: String,
    /// The arguments.
    pub args: Value,
    /// Where it belongs.
    pub link: StepLink,
    /// Cancelled when the plan is (or the attempt's timeout passes).
    pub cancel: CancellationToken,
}

/// Why a call did not give a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// What happened.
    pub message: String,
    /// Whether another attempt could help (a trap, a guest error, a limit:
    /// yes; a missing component or bad arguments: no).
    pub retry: bool,
}

/// What a call gave.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// The journal run that recorded it.
    pub run_id: Option<String>,
    /// The output (the `ok` value of a WIT result), or the failure.
    pub result: Result<Value, CallFailure>,
}

/// Makes the component calls of plan steps (the CLI through the runtime
/// and its journal, a server through its one call path).
#[async_trait::async_trait]
pub trait StepCaller: Send + Sync + 'static {
    /// Makes one call. A call that sees `call.cancel` cancelled ends as
    /// soon as it can.
    async fn call(&self, call: StepCall) -> CallOutcome;

    /// The plan run ended (or stopped): the journal runs it made are no
    /// longer in use by it.
    async fn plan_ended(&self, _plan_run: &str) {}
}

/// What happens in a plan run, as it happens.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum PlanEvent {
    /// The run started or resumed.
    Started {
        /// The plan run.
        run: String,
        /// The plan.
        plan: String,
        /// The steps, in dependency order.
        steps: Vec<String>,
        /// Steps already finished (a resume).
        finished: Vec<String>,
    },
    /// An attempt started.
    Attempt {
        /// The step.
        step: String,
        /// The item of a fan-out.
        #[serde(skip_serializing_if = "Option::is_none")]
        item: Option<usize>,
        /// Which attempt.
        attempt: u32,
    },
    /// An attempt failed and another one follows.
    Retrying {
        /// The step.
        step: String,
        /// The item of a fan-out.
        #[serde(skip_serializing_if = "Option::is_none")]
        item: Option<usize>,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// Milliseconds until the next one.
        wait_ms: u64,
    },
    /// A step finished.
    Step {
        /// The step.
        step: String,
        /// How.
        record: StepRecord,
    },
    /// The run ended.
    Ended {
        /// The run.
        record: RunRecord,
    },
}

/// A plan run that could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The plan or its inputs.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The store that keeps the progress.
    #[error("plan progress: {0}")]
    Store(#[from] StoreError),
    /// No such plan run.
    #[error("no plan run `{0}`")]
    NoSuchRun(String),
    /// Another process (or task) drives it now.
    #[error("plan run `{id}` is being driven by {holder}; its lease lapses within {}s unless renewed", crate::progress::LEASE_TTL.as_secs())]
    Busy {
        /// The run.
        id: String,
        /// Who holds its lease.
        holder: crate::progress::LeaseHolder,
    },
    /// It already ended.
    #[error("plan run `{id}` already {status}")]
    Ended {
        /// The run.
        id: String,
        /// `succeeded`.
        status: String,
    },
}

/// Runs plans, keeping their progress in a store.
#[derive(Clone)]
pub struct Runner {
    progress: Progress,
    caller: Arc<dyn StepCaller>,
}

type Events = Option<mpsc::UnboundedSender<PlanEvent>>;

fn emit(events: &Events, e: PlanEvent) {
    if let Some(tx) = events {
        let _ = tx.send(e);
    }
}

impl Runner {
    /// A runner whose steps call through `caller`.
    pub fn new(progress: Progress, caller: Arc<dyn StepCaller>) -> Self {
        Self { progress, caller }
    }

    /// The progress store.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Records a new run of `plan` with `inputs` (checked, defaults filled
    /// in) and returns it without running it.
    pub async fn create(&self, plan: &Plan, inputs: &Value) -> Result<RunRecord, RunError> {
        let inputs = plan.bind_inputs(inputs)?;
        let rec = RunRecord {
            id: new_run_id(),
            plan: plan.name.clone(),
            origin: plan.origin.clone(),
            base: plan.base.display().to_string(),
            text: plan.text.clone(),
            inputs,
            status: RunStatus::Running,
            started: now(),
            finished: None,
            resumes: 0,
            outputs: None,
            error: None,
        };
        self.progress.create_run(&rec).await?;
        Ok(rec)
    }

    /// Starts a run of `plan` and runs it to its end.
    pub async fn run(
        &self,
        plan: &Plan,
        inputs: &Value,
        events: Events,
        cancel: CancellationToken,
    ) -> Result<RunRecord, RunError> {
        let rec = self.create(plan, inputs).await?;
        self.resume(&rec.id, events, cancel).await
    }

    /// Goes on with a run that has not succeeded: finished steps are kept,
    /// steps in flight when it stopped run again with their idempotency
    /// keys, failed steps are tried again.
    pub async fn resume(
        &self,
        id: &str,
        events: Events,
        cancel: CancellationToken,
    ) -> Result<RunRecord, RunError> {
        let (mut rec, mut rev) = self
            .progress
            .run(id)
            .await?
            .ok_or_else(|| RunError::NoSuchRun(id.to_string()))?;
        if rec.status == RunStatus::Succeeded {
            return Err(RunError::Ended {
                id: id.to_string(),
                status: "succeeded".into(),
            });
        }
        let plan = Plan::from_toml(
            &rec.text,
            &rec.origin,
            std::path::Path::new(&rec.base),
            &rec.plan,
        )?;
        // One driver at a time: the lease is renewed while the run goes on;
        // losing it (taken over after it lapsed) stops this driver.
        let lease = match self.progress.acquire_lease(id).await {
            Ok(l) => l,
            Err(crate::progress::LeaseRefused::Held(holder)) => {
                return Err(RunError::Busy {
                    id: id.to_string(),
                    holder,
                });
            }
            Err(crate::progress::LeaseRefused::Store(e)) => return Err(e.into()),
        };
        let cancel = cancel.child_token();
        let renewing = {
            let progress = self.progress.clone();
            let cancel = cancel.clone();
            let id = id.to_string();
            let mut lease = lease;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(crate::progress::LEASE_RENEW) => {}
                        () = cancel.cancelled() => return lease,
                    }
                    if let Err(e) = progress.renew_lease(&mut lease).await {
                        tracing::error!("plan run {id}: lost its lease ({e}); stopping");
                        cancel.cancel();
                        return lease;
                    }
                }
            })
        };
        let outcome = self
            .drive(id, &mut rec, &mut rev, plan, events, cancel.clone())
            .await;
        cancel.cancel();
        if let Ok(lease) = renewing.await {
            self.progress.release_lease(lease).await;
        }
        outcome
    }

    async fn drive(
        &self,
        id: &str,
        rec: &mut RunRecord,
        rev: &mut u64,
        plan: Plan,
        events: Events,
        cancel: CancellationToken,
    ) -> Result<RunRecord, RunError> {
        let mut done: BTreeMap<String, StepRecord> = BTreeMap::new();
        for s in &plan.steps {
            if let Some(r) = self.progress.step(id, &s.name).await? {
                if r.state == StepState::Failed {
                    // Tried again: the failure is forgotten.
                    self.progress.forget_step(id, &s.name).await?;
                } else {
                    done.insert(s.name.clone(), r);
                }
            }
        }
        if rec.status != RunStatus::Running || rec.finished.is_some() {
            rec.status = RunStatus::Running;
            rec.finished = None;
            rec.error = None;
        }
        if !done.is_empty() || rec.resumes > 0 || rec.status != RunStatus::Running {
            rec.resumes += 1;
        }
        *rev = self.progress.update_run(rec, *rev).await?;
        emit(
            &events,
            PlanEvent::Started {
                run: rec.id.clone(),
                plan: plan.name.clone(),
                steps: plan.topological().iter().map(|s| s.name.clone()).collect(),
                finished: done.keys().cloned().collect(),
            },
        );
        let drive = Drive {
            plan: Arc::new(plan),
            run: rec.id.clone(),
            inputs: rec.inputs.clone(),
            progress: self.progress.clone(),
            caller: self.caller.clone(),
            events: events.clone(),
            cancel: cancel.clone(),
        };
        let outcome = drive.steps(done).await;
        let (status, outputs, error) = match outcome {
            Err(e) => {
                // The store failed: the run stays `running`, to resume.
                return Err(e.into());
            }
            Ok(o) => o,
        };
        rec.status = status;
        rec.outputs = outputs;
        rec.error = error;
        rec.finished = Some(now());
        *rev = self.progress.update_run(rec, *rev).await?;
        self.caller.plan_ended(&rec.id).await;
        emit(
            &events,
            PlanEvent::Ended {
                record: rec.clone(),
            },
        );
        Ok(rec.clone())
    }
}

/// One drive of a run's steps.
#[derive(Clone)]
struct Drive {
    plan: Arc<Plan>,
    run: String,
    inputs: Value,
    progress: Progress,
    caller: Arc<dyn StepCaller>,
    events: Events,
    cancel: CancellationToken,
}

type Ended = (RunStatus, Option<Value>, Option<String>);

/// How a step's attempts ended.
enum Tried {
    Ok(Value, u32, Vec<String>),
    Failed(String, u32, Vec<String>),
    Cancelled,
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Drive {
    /// What the expressions of a step see: the inputs, and the steps it
    /// waits for (its expressions can name no others).
    fn context(&self, done: &BTreeMap<String, StepRecord>, names: &BTreeSet<String>) -> Value {
        let steps: serde_json::Map<String, Value> = names
            .iter()
            .filter_map(|k| done.get(k).map(|r| (k, r)))
            .map(|(k, r)| (k.clone(), json!({"output": r.output, "state": r.state})))
            .collect();
        json!({
            "inputs": self.inputs,
            "steps": steps,
            "run": {"id": self.run, "plan": self.plan.name},
        })
    }

    /// The steps a step waits for: its own needs, and those of its
    /// fallback (which may run in its place).
    fn waits_for(&self, s: &Step) -> BTreeSet<String> {
        let mut w = s.needs.clone();
        if let OnError::Fallback(f) = &s.on_error
            && let Some(fs) = self.plan.step(f)
        {
            w.extend(fs.needs.iter().cloned());
        }
        w
    }

    async fn steps(&self, mut done: BTreeMap<String, StepRecord>) -> Result<Ended, StoreError> {
        let fallbacks: BTreeSet<String> = self
            .plan
            .fallbacks()
            .keys()
            .map(|s| s.to_string())
            .collect();
        let mut running: JoinSet<(String, Result<Option<StepRecord>, StoreError>)> = JoinSet::new();
        let mut in_flight: BTreeSet<String> = BTreeSet::new();
        let mut failure: Option<String> = None;
        let mut store_error: Option<StoreError> = None;
        // Computed once: what each step waits for, who waits for each step,
        // and how many of its waits are not finished; a step is ready when
        // that count reaches 0.
        let order = self.plan.topological();
        let waits: HashMap<String, BTreeSet<String>> = order
            .iter()
            .map(|s| (s.name.clone(), self.waits_for(s)))
            .collect();
        let mut waiting_on: HashMap<String, Vec<String>> = HashMap::new();
        let mut missing: HashMap<String, usize> = HashMap::new();
        let mut ready: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        for s in &order {
            let w = &waits[&s.name];
            for n in w {
                waiting_on
                    .entry(n.clone())
                    .or_default()
                    .push(s.name.clone());
            }
            let left = w.iter().filter(|n| !done.contains_key(*n)).count();
            missing.insert(s.name.clone(), left);
            if left == 0 && !done.contains_key(&s.name) && !fallbacks.contains(&s.name) {
                ready.push_back(s.name.clone());
            }
        }
        loop {
            if failure.is_none() && store_error.is_none() && !self.cancel.is_cancelled() {
                while in_flight.len() < self.plan.max_parallel {
                    let Some(name) = ready.pop_front() else { break };
                    let ctx = self.context(&done, &waits[&name]);
                    let me = self.clone();
                    in_flight.insert(name.clone());
                    running.spawn(async move {
                        let r = me.step(&name, ctx).await;
                        (name, r)
                    });
                }
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (name, result) = match joined {
                Ok(x) => x,
                Err(e) => {
                    failure.get_or_insert(format!("a step's task failed: {e}"));
                    continue;
                }
            };
            in_flight.remove(&name);
            match result {
                Err(e) => {
                    store_error.get_or_insert(e);
                }
                Ok(None) => {} // cancelled: nothing committed
                Ok(Some(rec)) => {
                    if rec.state == StepState::Failed {
                        failure.get_or_insert(format!(
                            "step `{name}` failed: {}",
                            rec.error.as_deref().unwrap_or("unknown error")
                        ));
                    }
                    emit(
                        &self.events,
                        PlanEvent::Step {
                            step: name.clone(),
                            record: rec.clone(),
                        },
                    );
                    for d in waiting_on.get(&name).into_iter().flatten() {
                        if let Some(m) = missing.get_mut(d) {
                            *m = m.saturating_sub(1);
                            if *m == 0 && !done.contains_key(d) && !fallbacks.contains(d) {
                                ready.push_back(d.clone());
                            }
                        }
                    }
                    done.insert(name, rec);
                }
            }
        }
        if let Some(e) = store_error {
            return Err(e);
        }
        if self.cancel.is_cancelled() && failure.is_none() {
            return Ok((RunStatus::Cancelled, None, Some("cancelled".into())));
        }
        if let Some(f) = failure {
            return Ok((RunStatus::Failed, None, Some(f)));
        }
        let never: Vec<&str> = order
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| !done.contains_key(*n) && !fallbacks.contains(*n))
            .collect();
        if !never.is_empty() {
            return Ok((
                RunStatus::Failed,
                None,
                Some(format!("steps never became ready: {}", never.join(", "))),
            ));
        }
        let all: BTreeSet<String> = done.keys().cloned().collect();
        let ctx = self.context(&done, &all);
        let mut outputs = serde_json::Map::new();
        for (name, t) in &self.plan.outputs {
            match t.eval(&ctx, &format!("outputs.{name}")) {
                Ok(v) => {
                    outputs.insert(name.clone(), v);
                }
                Err(e) => return Ok((RunStatus::Failed, None, Some(e))),
            }
        }
        Ok((RunStatus::Succeeded, Some(Value::Object(outputs)), None))
    }

    /// Runs one step (and its fallback) to a committed record; `None` when
    /// cancelled.
    fn step(
        &self,
        name: &str,
        ctx: Value,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Option<StepRecord>, StoreError>> + Send + '_>,
    > {
        let name = name.to_string();
        Box::pin(async move {
            if let Some(r) = self.progress.step(&self.run, &name).await? {
                return Ok(Some(r));
            }
            let Some(step) = self.plan.step(&name).cloned() else {
                return Ok(None);
            };
            let started = now();
            let clock = Instant::now();
            let record = |state: StepState,
                          output: Value,
                          attempts: u32,
                          runs: Vec<String>,
                          error: Option<String>,
                          items: Option<u64>| StepRecord {
                state,
                output,
                attempts,
                runs,
                started: started.clone(),
                finished: now(),
                duration_ms: millis(clock.elapsed()),
                error,
                items,
            };
            if let Some(w) = &step.when {
                match w.eval(&ctx) {
                    Ok(v) if !truthy(&v) => {
                        let r = record(StepState::Skipped, Value::Null, 0, vec![], None, None);
                        return self
                            .progress
                            .commit_step(&self.run, &name, r)
                            .await
                            .map(Some);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let msg = format!("steps.{name}.when: `{}` {e}", w.source());
                        let r = record(StepState::Failed, Value::Null, 0, vec![], Some(msg), None);
                        return self.finish_failed(&step, r, ctx).await;
                    }
                }
            }
            let tried = match &step.for_each {
                None => self.attempts(&step, &ctx, None).await?,
                Some(list) => match list.eval(&ctx) {
                    Ok(Value::Array(items)) => {
                        let n = items.len() as u64;
                        match self.fan_out(&step, &ctx, items).await? {
                            Tried::Ok(v, a, runs) => {
                                let r = record(StepState::Succeeded, v, a, runs, None, Some(n));
                                return self
                                    .progress
                                    .commit_step(&self.run, &name, r)
                                    .await
                                    .map(Some);
                            }
                            other => other,
                        }
                    }
                    Ok(other) => Tried::Failed(
                        format!(
                            "steps.{name}.for_each: `{}` gave {other}, not a list",
                            list.source()
                        ),
                        0,
                        vec![],
                    ),
                    Err(e) => Tried::Failed(
                        format!("steps.{name}.for_each: `{}` {e}", list.source()),
                        0,
                        vec![],
                    ),
                },
            };
            match tried {
                Tried::Cancelled => Ok(None),
                Tried::Ok(v, attempts, runs) => {
                    let r = record(StepState::Succeeded, v, attempts, runs, None, None);
                    self.progress
                        .commit_step(&self.run, &name, r)
                        .await
                        .map(Some)
                }
                Tried::Failed(e, attempts, runs) => {
                    let r = record(
                        StepState::Failed,
                        Value::Null,
                        attempts,
                        runs,
                        Some(e),
                        None,
                    );
                    self.finish_failed(&step, r, ctx).await
                }
            }
        })
    }

    /// A step whose attempts failed: `on_error` decides.
    async fn finish_failed(
        &self,
        step: &Step,
        mut r: StepRecord,
        ctx: Value,
    ) -> Result<Option<StepRecord>, StoreError> {
        match &step.on_error {
            OnError::Fail => {}
            OnError::Continue => {
                r.state = StepState::Continued;
                r.output = Value::Null;
            }
            OnError::Fallback(f) => match self.step(f, ctx).await? {
                None => return Ok(None),
                Some(fr) => {
                    emit(
                        &self.events,
                        PlanEvent::Step {
                            step: f.clone(),
                            record: fr.clone(),
                        },
                    );
                    if matches!(
                        fr.state,
                        StepState::Succeeded | StepState::Continued | StepState::FellBack
                    ) {
                        r.state = StepState::FellBack;
                        r.output = fr.output;
                    } else {
                        r.error = Some(format!(
                            "{}; its fallback `{f}` failed too: {}",
                            r.error.as_deref().unwrap_or("failed"),
                            fr.error.as_deref().unwrap_or("failed")
                        ));
                    }
                }
            },
        }
        self.progress
            .commit_step(&self.run, &step.name, r)
            .await
            .map(Some)
    }

    /// The calls of a fan-out, at most `concurrency` at once, results in
    /// item order; finished items are committed one by one.
    async fn fan_out(
        &self,
        step: &Step,
        ctx: &Value,
        items: Vec<Value>,
    ) -> Result<Tried, StoreError> {
        let gate = Arc::new(Semaphore::new(step.concurrency));
        let mut set: JoinSet<(usize, Result<Option<StepRecord>, StoreError>)> = JoinSet::new();
        let stop = self.cancel.child_token();
        for (i, item) in items.iter().enumerate() {
            let me = self.clone();
            let step = step.clone();
            let mut ctx = ctx.clone();
            ctx["item"] = item.clone();
            ctx["index"] = json!(i);
            let gate = gate.clone();
            let stop = stop.clone();
            set.spawn(async move {
                let Ok(_permit) = gate.acquire_owned().await else {
                    return (i, Ok(None));
                };
                if let Some(r) = match me.progress.item(&me.run, &step.name, i).await {
                    Ok(r) => r,
                    Err(e) => return (i, Err(e)),
                } {
                    return (i, Ok(Some(r)));
                }
                if stop.is_cancelled() {
                    return (i, Ok(None));
                }
                let started = now();
                let clock = Instant::now();
                let tried = match me.attempts(&step, &ctx, Some(i)).await {
                    Ok(t) => t,
                    Err(e) => return (i, Err(e)),
                };
                let (state, output, attempts, runs, error) = match tried {
                    Tried::Cancelled => return (i, Ok(None)),
                    Tried::Ok(v, a, runs) => (StepState::Succeeded, v, a, runs, None),
                    Tried::Failed(e, a, runs) => {
                        // The other items stop: the step has failed.
                        stop.cancel();
                        (StepState::Failed, Value::Null, a, runs, Some(e))
                    }
                };
                let rec = StepRecord {
                    state,
                    output,
                    attempts,
                    runs,
                    started,
                    finished: now(),
                    duration_ms: millis(clock.elapsed()),
                    error,
                    items: None,
                };
                if rec.state == StepState::Failed {
                    // Not committed: a resume tries the item again.
                    return (i, Ok(Some(rec)));
                }
                (
                    i,
                    me.progress
                        .commit_item(&me.run, &step.name, i, rec)
                        .await
                        .map(Some),
                )
            });
        }
        let mut results: Vec<Option<StepRecord>> = vec![None; items.len()];
        let mut store_error = None;
        while let Some(j) = set.join_next().await {
            match j {
                Ok((i, Ok(r))) => results[i] = r,
                Ok((_, Err(e))) => {
                    store_error.get_or_insert(e);
                    stop.cancel();
                }
                Err(e) => {
                    store_error.get_or_insert(StoreError::Backend {
                        backend: "plans",
                        message: format!("a fan-out task failed: {e}"),
                    });
                    stop.cancel();
                }
            }
        }
        if let Some(e) = store_error {
            return Err(e);
        }
        let mut outputs = Vec::with_capacity(results.len());
        let mut attempts = 0;
        let mut runs = Vec::new();
        let mut first_failure = None;
        let mut missing = false;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                None => missing = true,
                Some(r) => {
                    attempts += r.attempts;
                    runs.extend(r.runs);
                    if r.state == StepState::Failed {
                        first_failure
                            .get_or_insert(format!("item {i}: {}", r.error.unwrap_or_default()));
                    }
                    outputs.push(r.output);
                }
            }
        }
        if let Some(f) = first_failure {
            return Ok(Tried::Failed(f, attempts, runs));
        }
        if missing {
            return Ok(Tried::Cancelled);
        }
        Ok(Tried::Ok(Value::Array(outputs), attempts, runs))
    }

    /// A step's (or item's) attempts, with retries and timeouts.
    async fn attempts(
        &self,
        step: &Step,
        ctx: &Value,
        item: Option<usize>,
    ) -> Result<Tried, StoreError> {
        let path = match item {
            Some(i) => format!("steps.{}.args (item {i})", step.name),
            None => format!("steps.{}.args", step.name),
        };
        let key = match item {
            Some(i) => format!("{}/{}/{i}", self.run, step.name),
            None => format!("{}/{}", self.run, step.name),
        };
        // `.step` in the arguments: this step's name and idempotency key.
        let mut ctx = ctx.clone();
        ctx["step"] = json!({"name": step.name, "key": key});
        let args = match step.args.eval(&ctx, &path) {
            Ok(a) => a,
            Err(e) => return Ok(Tried::Failed(e, 0, vec![])),
        };
        let before = self
            .progress
            .started(&self.run, &step.name, item)
            .await?
            .map(|s| s.attempt)
            .unwrap_or(0);
        let mut runs = Vec::new();
        let mut last_error = String::new();
        for n in 1..=step.retry.max_attempts {
            let attempt = before + n;
            self.progress
                .mark_started(
                    &self.run,
                    &step.name,
                    item,
                    &Started {
                        attempt,
                        key: key.clone(),
                        at: now(),
                    },
                )
                .await?;
            emit(
                &self.events,
                PlanEvent::Attempt {
                    step: step.name.clone(),
                    item,
                    attempt,
                },
            );
            let cancel = self.cancel.child_token();
            let call = StepCall {
                component: step.component.clone(),
                digest: step.digest.clone(),
                base: self.plan.base.clone(),
                function: step.function.clone(),
                args: args.clone(),
                link: StepLink {
                    plan_run: self.run.clone(),
                    plan: self.plan.name.clone(),
                    step: step.name.clone(),
                    item,
                    attempt,
                    key: key.clone(),
                },
                cancel: cancel.clone(),
            };
            // With tracing on, a span per step attempt: its call hangs
            // under it.
            let trace = tessera_runtime::telemetry::enabled().then(|| {
                use opentelemetry::KeyValue;
                tessera_runtime::telemetry::start(
                    format!("plan step {}", step.name),
                    opentelemetry::trace::SpanKind::Internal,
                    &opentelemetry::Context::current(),
                    vec![
                        KeyValue::new("tessera.plan", self.plan.name.clone()),
                        KeyValue::new("tessera.plan.run", self.run.clone()),
                        KeyValue::new("tessera.plan.step", step.name.clone()),
                        KeyValue::new("tessera.plan.attempt", i64::from(attempt)),
                    ],
                )
            });
            let cx = trace
                .clone()
                .unwrap_or_else(opentelemetry::Context::current);
            let outcome = match step.timeout {
                None => {
                    opentelemetry::context::FutureExt::with_context(self.caller.call(call), cx)
                        .await
                }
                Some(t) => {
                    let fut =
                        opentelemetry::context::FutureExt::with_context(self.caller.call(call), cx);
                    tokio::pin!(fut);
                    tokio::select! {
                        o = &mut fut => o,
                        () = tokio::time::sleep(t) => {
                            cancel.cancel();
                            let mut o = fut.await;
                            if o.result.is_ok() {
                                // It finished as the timeout passed: keep it.
                            } else {
                                o.result = Err(CallFailure {
                                    message: format!("timed out after {}", humantime::format_duration(t)),
                                    retry: true,
                                });
                            }
                            o
                        }
                    }
                }
            };
            if let Some(cx) = &trace {
                tessera_runtime::telemetry::end(
                    cx,
                    Vec::new(),
                    outcome.result.as_ref().err().map(|f| f.message.clone()),
                );
            }
            runs.extend(outcome.run_id.clone());
            match outcome.result {
                Ok(v) => return Ok(Tried::Ok(v, n, runs)),
                Err(_) if self.cancel.is_cancelled() => return Ok(Tried::Cancelled),
                Err(f) => {
                    last_error = f.message;
                    if !f.retry || n == step.retry.max_attempts {
                        return Ok(Tried::Failed(last_error, n, runs));
                    }
                    let wait = step.retry.wait_after(n);
                    emit(
                        &self.events,
                        PlanEvent::Retrying {
                            step: step.name.clone(),
                            item,
                            attempt,
                            error: last_error.clone(),
                            wait_ms: millis(wait),
                        },
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.cancel.cancelled() => return Ok(Tried::Cancelled),
                    }
                }
            }
        }
        Ok(Tried::Failed(last_error, step.retry.max_attempts, runs))
    }
}

/// jq's truth: everything but `false` and `null`.
fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
}

/// The state of every step of a run, in dependency order (`None`: not
/// finished), for display.
pub async fn step_records(
    progress: &Progress,
    plan: &Plan,
    run: &str,
) -> Result<Vec<(String, Option<StepRecord>)>, StoreError> {
    let mut out = Vec::new();
    for s in plan.topological() {
        out.push((s.name.clone(), progress.step(run, &s.name).await?));
    }
    Ok(out)
}
