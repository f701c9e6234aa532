//! Plans served by the server: registered in the data directory
//! (`plan_registry.rs`), run, watched and cancelled over HTTP, and served
//! as MCP tools (`plan__<name>`).
//!
//! - **One call path.** Each step's call goes through [`Server::call_for`]
//!   ([`ServerCaller`]): a permit of the server's limit, the active version
//!   of the registered component the step names, the manifest's `[tools]`
//!   curation, cancellation, and the journal, whose header names the caller
//!   (`via: "plan"`, and the id of the token that started or resumed the
//!   run) and links the plan run, step, item and attempt
//!   ([`tessera_journal::PlanStep`]); the component reads the step's
//!   idempotency key and place through `wasi:config` (`tessera.*`), as in
//!   the CLI. A step given as a `.wasm` path is refused: a server calls
//!   only what its registry serves (see `plan_registry.rs`). Each step's
//!   journal run is held against pruning under `plan:<plan run id>` until
//!   the plan run ends or stops.
//! - **Progress** is the orchestrator's: the bucket `tessera-plans` of the
//!   server's stores ([`Server::stores`]), so `tessera plan runs` and
//!   `tessera plan resume` see the same runs.
//! - **Runs in the background.** A run started or resumed here is driven
//!   by a task of its own; the server keeps, per run it drives, the
//!   cancellation token and a feed of its [`PlanEvent`]s (a broadcast, and
//!   the events so far, so a watcher that comes late misses nothing).
//! - **Shutdown** cancels every run it drives (each is then `cancelled`:
//!   resumable) and waits for their records before the journal is flushed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::stream::BoxStream;
use serde_json::Value;
use tessera_orchestrator::local::holder;
use tessera_orchestrator::plan::ComponentRef;
use tessera_orchestrator::progress::{PLANS_BUCKET, Progress, RunRecord, RunStatus};
use tessera_orchestrator::run::{
    CallFailure as StepFailure, CallOutcome, PlanEvent, RunError, Runner, StepCall, StepCaller,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::call::{CallError, PlanCall, Verdict};
use crate::error::{ApiError, ErrorCode};
use crate::plan_registry::StoredPlan;
use crate::{Server, plan_registry};

/// Most events of a run kept for a watcher that comes late (the first,
/// `started`, is always kept; the oldest others go first).
pub const MAX_EVENT_HISTORY: usize = 10_000;

/// How long a store operation may take before giving up (a NATS server
/// that accepts connections but does not answer).
const STORE_DEADLINE: Duration = Duration::from_secs(20);

/// Makes the calls of plan steps through the server's one call path.
pub struct ServerCaller {
    server: Arc<Server>,
    token: Option<String>,
}

impl ServerCaller {
    /// Calls through `server`, naming the token id `token` (the one that
    /// started or resumed the run) in each journal header.
    pub fn new(server: Arc<Server>, token: Option<String>) -> Self {
        Self { server, token }
    }
}

fn failure(message: String, retry: bool, run_id: Option<String>) -> CallOutcome {
    CallOutcome {
        run_id,
        result: Err(StepFailure { message, retry }),
    }
}

#[async_trait::async_trait]
impl StepCaller for ServerCaller {
    async fn call(&self, call: StepCall) -> CallOutcome {
        let name = match &call.component {
            ComponentRef::Registry(name) => name.clone(),
            ComponentRef::File { path, .. } => {
                return failure(
                    format!(
                        "`{}` is a file path; a server calls only registered components",
                        path.display()
                    ),
                    false,
                    None,
                );
            }
        };
        let link = &call.link;
        let plan = tessera_journal::PlanStep {
            run: link.plan_run.clone(),
            plan: link.plan.clone(),
            step: link.step.clone(),
            item: link.item,
            attempt: link.attempt,
            key: link.key.clone(),
        };
        let caller = tessera_journal::Caller {
            via: "plan".into(),
            token: self.token.clone(),
        };
        let called = self
            .server
            .call_for(
                &name,
                &call.function,
                &call.args,
                Some(call.cancel.clone()),
                caller,
                Some(PlanCall {
                    link: plan,
                    context: link.context(),
                    digest: call.digest.clone(),
                }),
            )
            .await;
        let mut called = match called {
            Ok(c) => c,
            Err(e) => {
                // Worth another attempt: the server or the component is
                // busy, or the component is still compiling.
                let retry = matches!(
                    &e,
                    CallError::Overloaded(_)
                        | CallError::Loading { .. }
                        | CallError::Journal(tessera_journal::Error::Runtime(
                            tessera_runtime::Error::Busy { .. }
                        ))
                );
                return failure(e.to_string(), retry, None);
            }
        };
        // The journal holds the run for its plan run from its header on
        // (released in `plan_ended`).
        let run_id = called.run_id.clone();
        let returns_result = called
            .active
            .loaded
            .function(&called.outcome.function)
            .map(|f| f.returns_result())
            .unwrap_or(false);
        let function = called.outcome.function.clone();
        let result = match called.verdict() {
            Verdict::Returned {
                value, ok: true, ..
            } if returns_result => Ok(value.get("ok").cloned().unwrap_or(Value::Null)),
            Verdict::Returned {
                value, ok: true, ..
            } => Ok(value),
            Verdict::Returned { value, denial, .. } => {
                let after = denial
                    .map(|d| format!(" (after a denied {} request to {})", d.capability, d.target))
                    .unwrap_or_default();
                Err(StepFailure {
                    message: format!(
                        "{function} returned an error{after}: {}",
                        value.get("err").unwrap_or(&value)
                    ),
                    retry: true,
                })
            }
            Verdict::Failed(e) => Err(StepFailure {
                message: e.message().to_string(),
                retry: e.code() != ErrorCode::Cancelled,
            }),
        };
        CallOutcome {
            run_id: Some(run_id),
            result,
        }
    }

    async fn plan_ended(&self, plan_run: &str) {
        // Every run the plan run held (a fallback's, a cancelled
        // attempt's too), in one transaction.
        let holder = holder(plan_run);
        let journal = self.server.journal.clone();
        match tokio::task::spawn_blocking(move || journal.release_holder(&holder)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("releasing the journal runs of plan run {plan_run}: {e}"),
            Err(e) => tracing::warn!("releasing the journal runs of plan run {plan_run}: {e}"),
        }
    }
}

/// A runner and the caller it calls through.
struct Drive {
    runner: Runner,
    caller: Arc<ServerCaller>,
}

/// What became of a run this server drove: its record, or why it could
/// not go on.
pub type Ended = Result<RunRecord, ApiError>;

/// A run this server is driving.
struct Driving {
    cancel: CancellationToken,
    feed: Mutex<Feed>,
    ended: watch::Sender<Option<Ended>>,
}

/// A run's events: those so far, and the live ones.
struct Feed {
    history: VecDeque<PlanEvent>,
    live: broadcast::Sender<PlanEvent>,
}

impl Driving {
    fn new(cancel: CancellationToken) -> Self {
        Self {
            cancel,
            feed: Mutex::new(Feed {
                history: VecDeque::new(),
                live: broadcast::channel(1024).0,
            }),
            ended: watch::channel(None).0,
        }
    }

    fn feed(&self) -> MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, event: PlanEvent) {
        let mut feed = self.feed();
        if feed.history.len() >= MAX_EVENT_HISTORY {
            // The first event (`started`) stays.
            feed.history.remove(1);
        }
        feed.history.push_back(event.clone());
        let _ = feed.live.send(event);
    }
}

/// The runs a server drives, and what it last saw of the plan registry.
pub(crate) struct PlanRuns {
    driving: Mutex<HashMap<String, Arc<Driving>>>,
    /// The plan directory's modification time when last looked at.
    seen: Mutex<Option<std::time::SystemTime>>,
}

impl PlanRuns {
    pub(crate) fn new(seen: Option<std::time::SystemTime>) -> Self {
        Self {
            driving: Mutex::new(HashMap::new()),
            seen: Mutex::new(seen),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Driving>>> {
        self.driving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets `id` if `driving` is still what drives it.
    fn remove(&self, id: &str, driving: &Arc<Driving>) {
        let mut map = self.map();
        if map.get(id).is_some_and(|d| Arc::ptr_eq(d, driving)) {
            map.remove(id);
        }
    }
}

/// A run started or resumed in the background.
pub struct PlanRunHandle {
    /// The plan run's id.
    pub id: String,
    cancel: CancellationToken,
    ended: watch::Receiver<Option<Ended>>,
}

impl PlanRunHandle {
    /// Cancels the run: calls in flight stop, nothing more starts, and it
    /// ends `cancelled` (resumable).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The run's cancellation token.
    pub fn canceller(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// A guard that cancels the run when dropped.
    pub fn cancel_on_drop(&self) -> tokio_util::sync::DropGuard {
        self.cancel.clone().drop_guard()
    }

    /// Waits until the run has ended (or stopped).
    pub async fn ended(&mut self) -> Ended {
        match self.ended.wait_for(Option::is_some).await {
            Ok(v) => v
                .clone()
                .unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal, "no result"))),
            Err(_) => Err(ApiError::new(
                ErrorCode::Internal,
                format!("plan run `{}`: its task ended without a result", self.id),
            )),
        }
    }
}

/// Ends a drive when its task ends, however it ends: the run is no longer
/// driven here, and whoever waits for it is told.
struct EndDrive {
    server: Arc<Server>,
    id: String,
    driving: Arc<Driving>,
}

impl Drop for EndDrive {
    fn drop(&mut self) {
        self.server.plan_runs.remove(&self.id, &self.driving);
        self.driving.ended.send_if_modified(|e| {
            if e.is_some() {
                return false;
            }
            *e = Some(Err(ApiError::new(
                ErrorCode::Internal,
                format!("plan run `{}`: its task ended without a result", self.id),
            )));
            true
        });
    }
}

/// Runs `op` under [`STORE_DEADLINE`], its error as an API error.
pub(crate) async fn store_op<T>(
    op: impl std::future::Future<Output = Result<T, tessera_store::StoreError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(STORE_DEADLINE, op).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(
            ErrorCode::StoreUnavailable,
            format!(
                "the store did not answer within {} s",
                STORE_DEADLINE.as_secs()
            ),
        )),
    }
}

/// A plan run's error as an API error.
pub fn run_error(e: RunError) -> ApiError {
    match e {
        RunError::Plan(p) => {
            let code = if p.place == "inputs" || p.place.starts_with("inputs.") {
                ErrorCode::BadInputs
            } else {
                ErrorCode::BadPlan
            };
            plan_error(code, p)
        }
        RunError::Store(s) => s.into(),
        RunError::NoSuchRun(id) => no_such_run(&id),
        RunError::Busy { id, holder } => ApiError::new(
            ErrorCode::PlanRunActive,
            format!("plan run `{id}` is being driven by {holder}"),
        )
        .with(|d| d.plan_run = Some(id)),
        RunError::Ended { id, status } => ApiError::new(
            ErrorCode::PlanRunSucceeded,
            format!("plan run `{id}` already {status}: there is nothing to resume"),
        )
        .with(|d| d.plan_run = Some(id)),
    }
}

/// A [`PlanError`](tessera_orchestrator::plan::PlanError) with its place
/// and file.
pub fn plan_error(code: ErrorCode, p: tessera_orchestrator::plan::PlanError) -> ApiError {
    let (place, file) = (p.place.clone(), p.origin.clone());
    ApiError::new(code, p.to_string()).with(|d| {
        d.place = Some(place);
        d.file = Some(file);
    })
}

fn no_such_run(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NoSuchPlanRun, format!("no plan run `{id}`"))
        .with(|d| d.plan_run = Some(id.to_string()))
}

impl Server {
    /// The progress of plan runs: the bucket `tessera-plans` of the
    /// server's stores.
    pub async fn plan_progress(&self) -> Result<Progress, ApiError> {
        let stores = self.stores().ok_or_else(|| {
            ApiError::new(
                ErrorCode::StoreUnavailable,
                "this server has no store to keep plan runs in",
            )
        })?;
        let store = store_op(stores.for_bucket(PLANS_BUCKET)).await?;
        Ok(Progress::new(store, PLANS_BUCKET))
    }

    /// A registered plan.
    pub fn stored_plan(&self, name: &str) -> Result<StoredPlan, ApiError> {
        Ok(self.plans.get(name)?)
    }

    /// Starts a run of registered plan `name` with `inputs` (checked,
    /// defaults filled in) in the background; `token` is the id of the token
    /// that asked for it, named in each step's journal header.
    pub async fn start_plan(
        self: &Arc<Self>,
        name: &str,
        inputs: &Value,
        token: Option<String>,
    ) -> Result<PlanRunHandle, ApiError> {
        let stored = self.stored_plan(name)?;
        let plan = stored.plan().map_err(|e| {
            ApiError::from(e).with(|d| d.message.insert_str(0, "registered plan: "))
        })?;
        let drive = self.plan_runner(token).await?;
        let rec = drive
            .runner
            .create(&plan, inputs)
            .await
            .map_err(run_error)?;
        self.drive(drive, &rec.id)
            .ok_or_else(|| ApiError::new(ErrorCode::PlanRunActive, "a new run is already driven"))
    }

    /// Goes on with a plan run that has not succeeded, in the background
    /// (finished steps are not run again).
    pub async fn resume_plan(
        self: &Arc<Self>,
        id: &str,
        token: Option<String>,
    ) -> Result<PlanRunHandle, ApiError> {
        if self.plan_runs.map().contains_key(id) {
            return Err(active(id));
        }
        let drive = self.plan_runner(token).await?;
        let (rec, _) = store_op(drive.runner.progress().run(id))
            .await?
            .ok_or_else(|| no_such_run(id))?;
        if rec.status == RunStatus::Succeeded {
            return Err(run_error(RunError::Ended {
                id: id.to_string(),
                status: "succeeded".into(),
            }));
        }
        self.drive(drive, id).ok_or_else(|| active(id))
    }

    /// Cancels a plan run this server drives and waits (up to 30 s) until
    /// it has stopped; returns its record.
    pub async fn cancel_plan_run(&self, id: &str) -> Result<RunRecord, ApiError> {
        let driving = self.plan_runs.map().get(id).cloned();
        let Some(driving) = driving else {
            let progress = self.plan_progress().await?;
            return match store_op(progress.run(id)).await? {
                None => Err(no_such_run(id)),
                Some((rec, _)) => Err(not_active(&rec)),
            };
        };
        driving.cancel.cancel();
        let mut ended = driving.ended.subscribe();
        drop(driving);
        let stopped: Option<RunRecord> = {
            match tokio::time::timeout(Duration::from_secs(30), ended.wait_for(Option::is_some))
                .await
            {
                Ok(Ok(e)) => match &*e {
                    Some(Ok(rec)) => Some(rec.clone()),
                    _ => None,
                },
                _ => None,
            }
        };
        if let Some(rec) = stopped {
            return Ok(rec);
        }
        let progress = self.plan_progress().await?;
        store_op(progress.run(id))
            .await?
            .map(|(rec, _)| rec)
            .ok_or_else(|| no_such_run(id))
    }

    /// The ids of the plan runs this server is driving.
    pub fn active_plan_runs(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.plan_runs.map().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A run's events as they happen, ending with `ended`: for a run this
    /// server drives, every event since it started (or resumed) and then
    /// the live ones; for a run that has ended, its `ended` event alone.
    /// A run neither driven here nor ended (interrupted: resume it) is
    /// `plan_run_not_active`.
    pub async fn plan_run_events(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<BoxStream<'static, PlanEvent>, ApiError> {
        use futures_util::StreamExt as _;
        let live = self.plan_runs.map().get(id).map(|d| {
            let feed = d.feed();
            (feed.history.clone(), feed.live.subscribe())
        });
        let Some((backlog, rx)) = live else {
            let progress = self.plan_progress().await?;
            let (rec, _) = store_op(progress.run(id))
                .await?
                .ok_or_else(|| no_such_run(id))?;
            if rec.status == RunStatus::Running {
                return Err(not_active(&rec));
            }
            return Ok(
                futures_util::stream::once(async move { PlanEvent::Ended { record: rec } }).boxed(),
            );
        };
        struct Live {
            backlog: VecDeque<PlanEvent>,
            rx: broadcast::Receiver<PlanEvent>,
            done: bool,
            server: Arc<Server>,
            id: String,
        }
        let state = Live {
            backlog,
            rx,
            done: false,
            server: self.clone(),
            id: id.to_string(),
        };
        Ok(futures_util::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            let event = match st.backlog.pop_front() {
                Some(e) => e,
                None => loop {
                    match st.rx.recv().await {
                        Ok(e) => break e,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => {
                            // It stopped without `ended` (the store
                            // failed): its record as it stands.
                            st.done = true;
                            let progress = st.server.plan_progress().await.ok()?;
                            let (record, _) = store_op(progress.run(&st.id)).await.ok()??;
                            break PlanEvent::Ended { record };
                        }
                    }
                },
            };
            if matches!(event, PlanEvent::Ended { .. }) {
                st.done = true;
            }
            Some((event, st))
        })
        .boxed())
    }

    async fn plan_runner(self: &Arc<Self>, token: Option<String>) -> Result<Drive, ApiError> {
        let progress = self.plan_progress().await?;
        let caller = Arc::new(ServerCaller::new(self.clone(), token));
        Ok(Drive {
            runner: Runner::new(progress, caller.clone()),
            caller,
        })
    }

    /// Drives run `id` in a task of its own; `None` if it is already
    /// driven here.
    fn drive(self: &Arc<Self>, drive: Drive, id: &str) -> Option<PlanRunHandle> {
        let Drive { runner, caller } = drive;
        // A child of `stopping`: shutting down cancels it.
        let cancel = self.stopping().child_token();
        let driving = Arc::new(Driving::new(cancel.clone()));
        {
            let mut map = self.plan_runs.map();
            if map.contains_key(id) {
                return None;
            }
            map.insert(id.to_string(), driving.clone());
        }
        let handle = PlanRunHandle {
            id: id.to_string(),
            cancel: cancel.clone(),
            ended: driving.ended.subscribe(),
        };
        let end = EndDrive {
            server: self.clone(),
            id: id.to_string(),
            driving: driving.clone(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<PlanEvent>();
        let id = id.to_string();
        tokio::spawn(async move {
            let forward = {
                let (server, driving, id) = (end.server.clone(), end.driving.clone(), id.clone());
                tokio::spawn(async move {
                    while let Some(event) = rx.recv().await {
                        if let PlanEvent::Ended { record } = &event {
                            // Ended: no longer driven here (a resume asked
                            // for on seeing `ended` is not refused), and
                            // whoever waits is told.
                            server.plan_runs.remove(&id, &driving);
                            driving.ended.send_replace(Some(Ok(record.clone())));
                        }
                        driving.publish(event);
                    }
                })
            };
            let result = runner.resume(&id, Some(tx), cancel).await;
            let _ = forward.await;
            if let Err(e) = result {
                // The store failed: the run stays `running` (to resume),
                // but nothing goes on with it now.
                tracing::error!("plan run {id}: {e}");
                caller.plan_ended(&id).await;
                end.driving.ended.send_replace(Some(Err(run_error(e))));
            }
            drop(end);
        });
        Some(handle)
    }

    /// Cancels every plan run this server drives and waits up to `wait`
    /// until each has recorded how it stopped.
    pub(crate) async fn stop_plan_runs(&self, wait: Duration) {
        let all: Vec<Arc<Driving>> = self.plan_runs.map().values().cloned().collect();
        for d in &all {
            d.cancel.cancel();
        }
        drop(all);
        let deadline = tokio::time::Instant::now() + wait;
        while !self.plan_runs.map().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Tells MCP sessions the tool list changed after a plan was added or
    /// removed here (and notes the registry's state, so the watcher does
    /// not tell them twice).
    pub(crate) fn plans_changed(&self) {
        *self
            .plan_runs
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = self.plans.modified();
        self.tools_changed.send_modify(|n| *n += 1);
    }

    /// Whether another process added or removed a plan since the server
    /// last looked; if so, tells MCP sessions.
    pub(crate) fn notice_plan_changes(&self) {
        let now = self.plans.modified();
        let mut seen = self
            .plan_runs
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *seen != now {
            *seen = now;
            drop(seen);
            self.tools_changed.send_modify(|n| *n += 1);
        }
    }
}

fn active(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::PlanRunActive,
        format!("plan run `{id}` is already running in this server"),
    )
    .with(|d| d.plan_run = Some(id.to_string()))
}

fn not_active(rec: &RunRecord) -> ApiError {
    let message = match rec.status {
        RunStatus::Running => format!(
            "plan run `{}` is not running in this server: it was interrupted (or another process runs it); resume it",
            rec.id
        ),
        status => format!(
            "plan run `{}` is not running: it {}",
            rec.id,
            serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
    };
    let id = rec.id.clone();
    ApiError::new(ErrorCode::PlanRunNotActive, message).with(|d| d.plan_run = Some(id))
}

impl From<plan_registry::PlanRegistryError> for ApiError {
    fn from(e: plan_registry::PlanRegistryError) -> Self {
        use plan_registry::PlanRegistryError as E;
        match e {
            E::Plan(p) => plan_error(ErrorCode::BadPlan, p),
            e @ E::InvalidName(_) => ApiError::new(ErrorCode::InvalidName, e.to_string()),
            e @ E::NoSuchPlan(_) => ApiError::new(ErrorCode::NoSuchPlan, e.to_string()),
            e @ (E::Io { .. } | E::Corrupt { .. }) => {
                ApiError::new(ErrorCode::Registry, e.to_string())
            }
        }
    }
}

/// Signatures from the components this server serves (their active
/// versions), for checking a plan when it is registered.
pub struct ActiveCatalog<'a>(pub &'a Server);

impl tessera_orchestrator::validate::Catalog for ActiveCatalog<'_> {
    fn signature(
        &self,
        component: &ComponentRef,
        _base: &std::path::Path,
        function: &str,
    ) -> Result<
        tessera_orchestrator::validate::Signature,
        tessera_orchestrator::validate::SignatureError,
    > {
        use tessera_orchestrator::validate::{Signature, SignatureError};
        let ComponentRef::Registry(name) = component else {
            return Err(SignatureError::Component(
                "a server calls only registered components".into(),
            ));
        };
        let active = self.0.active.get(name).ok_or_else(|| {
            SignatureError::Component(format!(
                "component `{name}` is not registered here (or not loaded): add it first (`tessera components add FILE --name {name}`)"
            ))
        })?;
        let c = &active.loaded;
        let f = c
            .function(function)
            .map_err(|e| SignatureError::Function(e.to_string()))?;
        let keyvalue = c.imports().iter().any(|i| i.starts_with("wasi:keyvalue/"));
        Ok(Signature {
            params: f.params_schema.clone(),
            result: f.result_schema.clone(),
            returns_result: f.returns_result(),
            buckets: keyvalue.then(|| c.grants().keyvalue.buckets.keys().cloned().collect()),
        })
    }
}

/// Checks a plan against the components this server serves: every
/// problem, as one `bad_plan` error listing them.
pub fn check_against_active(
    server: &Server,
    plan: &tessera_orchestrator::plan::Plan,
) -> Result<(), ApiError> {
    let errors = tessera_orchestrator::validate::check(plan, &ActiveCatalog(server));
    let Some(first) = errors.first() else {
        return Ok(());
    };
    let mut message = first.to_string();
    for e in &errors[1..] {
        message.push_str(&format!("; {}: {}", e.place, e.message));
    }
    let (place, file) = (first.place.clone(), first.origin.clone());
    Err(ApiError::new(ErrorCode::BadPlan, message).with(|d| {
        d.place = Some(place);
        d.file = Some(file);
    }))
}
