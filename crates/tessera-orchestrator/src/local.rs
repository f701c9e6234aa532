//! Steps called in this process: through the runtime, each call recorded
//! in the journal and linked to its plan run, its journal run held against
//! pruning until the plan run ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tessera_journal::{Caller, JournalStore, PlanStep};
use tessera_runtime::{CallFailure, CallOptions, Grants, LoadedComponent, Runtime};

use crate::plan::ComponentRef;
use crate::run::{CallFailure as StepFailure, CallOutcome, StepCall, StepCaller};

/// Where the components of a plan's steps come from.
pub trait Components: Send + Sync + 'static {
    /// Loads (or returns the already loaded) component of a step.
    fn load(&self, component: &ComponentRef, base: &Path) -> Result<Arc<LoadedComponent>, String>;
}

/// Components given as `.wasm` paths (with their manifests), loaded once
/// each; registry names are resolved by `registry`, when there is one.
pub struct FileComponents {
    runtime: Runtime,
    loaded: Mutex<HashMap<FileKey, Arc<LoadedComponent>>>,
    registry: Option<Box<RegistryFn>>,
}

/// A component file and its manifest.
type FileKey = (PathBuf, Option<PathBuf>);

/// Resolves a registry name to its loaded component.
pub type RegistryFn = dyn Fn(&str) -> Result<Arc<LoadedComponent>, String> + Send + Sync;

impl FileComponents {
    /// Loads paths with `runtime`; registry names fail unless
    /// [`FileComponents::with_registry`] is given.
    pub fn new(runtime: Runtime) -> Self {
        Self {
            runtime,
            loaded: Mutex::new(HashMap::new()),
            registry: None,
        }
    }

    /// Resolves registry names with `f`.
    pub fn with_registry(mut self, f: Box<RegistryFn>) -> Self {
        self.registry = Some(f);
        self
    }
}

impl Components for FileComponents {
    fn load(&self, component: &ComponentRef, base: &Path) -> Result<Arc<LoadedComponent>, String> {
        match component {
            ComponentRef::Registry(name) => match &self.registry {
                Some(f) => f(name),
                None => Err(format!(
                    "component `{name}` is a registry name, and this runner has no registry"
                )),
            },
            ComponentRef::File { path, manifest } => {
                let path = base.join(path);
                let manifest = manifest.as_ref().map(|m| base.join(m));
                let key = (path.clone(), manifest.clone());
                if let Some(c) = self
                    .loaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                {
                    return Ok(c.clone());
                }
                let grants = match &manifest {
                    Some(m) => Grants::from_file(m).map_err(|e| e.to_string())?,
                    None => Grants::deny_all(),
                };
                let loaded = Arc::new(
                    self.runtime
                        .load_file(&path, grants)
                        .map_err(|e| e.to_string())?,
                );
                self.loaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, loaded.clone());
                Ok(loaded)
            }
        }
    }
}

/// Signatures from the loaded components (plan validation).
pub struct LoadedCatalog<'a, C: Components>(pub &'a C);

impl<C: Components> crate::validate::Catalog for LoadedCatalog<'_, C> {
    fn signature(
        &self,
        component: &ComponentRef,
        base: &Path,
        function: &str,
    ) -> Result<crate::validate::Signature, crate::validate::SignatureError> {
        use crate::validate::{Signature, SignatureError};
        let c = self
            .0
            .load(component, base)
            .map_err(SignatureError::Component)?;
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

/// Calls steps in this process, recording each call in `journal`.
pub struct LocalCaller<C: Components> {
    components: Arc<C>,
    journal: Arc<JournalStore>,
}

impl<C: Components> LocalCaller<C> {
    /// Calls through `components`, recording in `journal`.
    pub fn new(components: C, journal: Arc<JournalStore>) -> Self {
        Self {
            components: Arc::new(components),
            journal,
        }
    }

    /// The components it calls.
    pub fn components(&self) -> &C {
        &self.components
    }
}

/// The journal holder of a plan run's step runs (the journal holds each
/// step's run from its header on).
pub fn holder(plan_run: &str) -> String {
    tessera_journal::plan_holder(plan_run)
}

#[async_trait::async_trait]
impl<C: Components> StepCaller for LocalCaller<C> {
    async fn call(&self, call: StepCall) -> CallOutcome {
        let fail = |message: String, retry: bool| CallOutcome {
            run_id: None,
            result: Err(StepFailure { message, retry }),
        };
        let components = self.components.clone();
        let (component, base) = (call.component.clone(), call.base.clone());
        // Loading may compile: not on the async workers.
        let loaded =
            match tokio::task::spawn_blocking(move || components.load(&component, &base)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return fail(e, false),
                Err(e) => return fail(format!("loading the component failed: {e}"), false),
            };
        if let Some(pin) = &call.digest
            && loaded.digest() != pin
        {
            return fail(pin_mismatch(&call.component, pin, loaded.digest()), false);
        }
        let returns_result = match loaded.function(&call.function) {
            Ok(f) => f.returns_result(),
            Err(e) => return fail(e.to_string(), false),
        };
        let link = &call.link;
        let plan = PlanStep {
            run: link.plan_run.clone(),
            plan: link.plan.clone(),
            step: link.step.clone(),
            item: link.item,
            attempt: link.attempt,
            key: link.key.clone(),
        };
        let recorded = tessera_journal::record_call_for(
            &self.journal,
            &loaded,
            &call.function,
            &call.args,
            CallOptions {
                cancel: Some(call.cancel.clone()),
                context: Some(Arc::new(link.context())),
                ..CallOptions::default()
            },
            Some(Caller {
                via: "plan".into(),
                token: None,
            }),
            Some(plan),
        )
        .await;
        let (run_id, outcome) = match recorded {
            Ok(r) => r,
            Err(e) => return fail(e.to_string(), false),
        };
        let result = match outcome.result {
            Ok(v) if outcome.guest_error => Err(StepFailure {
                message: format!(
                    "{} returned an error: {}",
                    call.function,
                    v.get("err").unwrap_or(&v)
                ),
                retry: true,
            }),
            Ok(v) if returns_result => Ok(v.get("ok").cloned().unwrap_or(serde_json::Value::Null)),
            Ok(v) => Ok(v),
            Err(CallFailure::Cancelled) => Err(StepFailure {
                message: "cancelled".into(),
                retry: false,
            }),
            Err(e) => Err(StepFailure {
                message: e.to_string(),
                retry: true,
            }),
        };
        CallOutcome {
            run_id: Some(run_id),
            result,
        }
    }

    async fn plan_ended(&self, plan_run: &str) {
        let holder = holder(plan_run);
        let journal = self.journal.clone();
        match tokio::task::spawn_blocking(move || journal.release_holder(&holder)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("releasing the journal runs of plan run {plan_run}: {e}"),
            Err(e) => tracing::warn!("releasing the journal runs of plan run {plan_run}: {e}"),
        }
    }
}

/// Why a step pinned to `pin` refuses a component with `actual` bytes.
pub fn pin_mismatch(component: &ComponentRef, pin: &str, actual: &str) -> String {
    format!("`{component}` is pinned to {pin} by the step's `digest`, but its bytes are {actual}")
}
