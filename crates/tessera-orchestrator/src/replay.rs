//! Replaying a plan run offline: every call its finished steps made is
//! replayed from the journal, in dependency order (a fan-out's calls in
//! item order, a step's attempts in order), until the first divergence,
//! which is reported with the step's name. Nothing touches the network,
//! the files or the stores: the journal answers every host interaction.

use std::path::Path;

use tessera_journal::{JournalStore, ReplayDivergence, replay};
use tessera_runtime::Runtime;

use crate::plan::Plan;
use crate::progress::Progress;

/// One replayed call.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReplayedCall {
    /// The step.
    pub step: String,
    /// The item of a fan-out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// The journal run.
    pub run: String,
    /// Whether it replayed identically.
    pub identical: bool,
    /// Where it departed from its recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<String>,
}

/// A plan run's replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlanReplay {
    /// The plan run.
    pub plan_run: String,
    /// The plan.
    pub plan: String,
    /// The calls replayed, in order, up to and including the first that
    /// diverged.
    pub calls: Vec<ReplayedCall>,
    /// Steps that had not finished (a crashed or cancelled run) or were
    /// not run (a fallback whose primary succeeded, a step after a failure).
    pub unfinished: Vec<String>,
    /// The first divergence: the step and what differed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<String>,
}

impl PlanReplay {
    /// Whether every replayed call was identical.
    pub fn identical(&self) -> bool {
        self.divergence.is_none()
    }
}

/// Why a plan run could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No such plan run.
    #[error("no plan run `{0}`")]
    NoSuchRun(String),
    /// The plan kept with the run does not read.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// The progress store.
    #[error("plan progress: {0}")]
    Store(#[from] tessera_store::StoreError),
    /// A journal run could not be replayed at all (missing, or its
    /// component cannot be loaded).
    #[error("step `{step}`, journal run {run}: {error}")]
    Journal {
        /// The step.
        step: String,
        /// The run.
        run: String,
        /// What went wrong.
        error: tessera_journal::Error,
    },
}

fn what(d: &ReplayDivergence) -> String {
    d.to_string()
}

/// Replays plan run `id` from `journal`, with `runtime` (whose host needs
/// no store: every answer comes from the journal).
pub async fn replay_run(
    progress: &Progress,
    journal: &JournalStore,
    runtime: &Runtime,
    id: &str,
) -> Result<PlanReplay, ReplayError> {
    let (rec, _) = progress
        .run(id)
        .await?
        .ok_or_else(|| ReplayError::NoSuchRun(id.to_string()))?;
    let plan = Plan::from_toml(&rec.text, &rec.origin, Path::new(&rec.base), &rec.plan)?;
    let mut out = PlanReplay {
        plan_run: id.to_string(),
        plan: plan.name.clone(),
        calls: Vec::new(),
        unfinished: Vec::new(),
        divergence: None,
    };
    for step in plan.topological() {
        let Some(record) = progress.step(id, &step.name).await? else {
            out.unfinished.push(step.name.clone());
            continue;
        };
        // The calls in order, each with its item.
        let mut calls: Vec<(Option<usize>, String)> = Vec::new();
        match (step.for_each.is_some(), record.items) {
            (true, Some(n)) => {
                for i in 0..n as usize {
                    if let Some(item) = progress.item(id, &step.name, i).await? {
                        calls.extend(item.runs.into_iter().map(|r| (Some(i), r)));
                    }
                }
            }
            _ => calls.extend(record.runs.into_iter().map(|r| (None, r))),
        }
        for (item, run) in calls {
            let report = replay(runtime, journal, &run, None)
                .await
                .map_err(|error| ReplayError::Journal {
                    step: step.name.clone(),
                    run: run.clone(),
                    error,
                })?;
            let divergence = report.divergence.as_ref().map(what);
            let identical = divergence.is_none();
            out.calls.push(ReplayedCall {
                step: step.name.clone(),
                item,
                run: run.clone(),
                identical,
                divergence: divergence.clone(),
            });
            if let Some(d) = divergence {
                let at = match item {
                    Some(i) => format!("step `{}` (item {i})", step.name),
                    None => format!("step `{}`", step.name),
                };
                out.divergence = Some(format!("{at}, journal run {run}: {d}"));
                return Ok(out);
            }
        }
    }
    Ok(out)
}
