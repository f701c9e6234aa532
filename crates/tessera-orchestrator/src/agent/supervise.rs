//! Supervision: what a failed child's supervisor does, by its
//! `[agent.supervisor]` policy.
//!
//! A restart puts an agent back to its initial state (the state it was
//! spawned with) and restarts its own children the same way; its mailbox
//! is kept, so no message is lost by a restart. A supervisor restarts
//! per its strategy — the failed child (`one_for_one`), every child
//! (`one_for_all`), or the failed child and those spawned after it
//! (`rest_for_one`) — as long as it has restarted fewer than
//! `max_restarts` times within `within_secs`. One more failure and the
//! supervisor fails itself: its children stop, and its own supervisor
//! decides about it (escalation). A top-level agent whose intensity is
//! exceeded stays failed until a user restarts it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::records::{self, Status};
use super::{AgentError, AgentEvent, Inner, commit, emit, forget_lock, load, lock_of, wake};
use tessera_runtime::capability::agent::Strategy;

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<(), AgentError>> + Send + 'a>>;

/// `child` failed a turn for good (its message is a dead letter): its
/// supervisor `parent` applies its policy.
pub(crate) fn child_failed<'a>(
    inner: &'a Arc<Inner>,
    parent: &'a str,
    child: &'a str,
    error: &'a str,
) -> Boxed<'a> {
    Box::pin(async move {
        let lock = lock_of(inner, parent);
        let guard = lock.lock().await;
        let Some((mut rec, revision)) = load(inner, parent).await? else {
            return Ok(());
        };
        let policy = rec.supervisor;
        let now = records::now_ms();
        let window = i64::try_from(policy.within_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        rec.restarts.retain(|t| now - t < window);
        rec.restarts.push(now);
        if rec.restarts.len() > policy.max_restarts as usize {
            let reason = format!(
                "restart intensity exceeded: `{child}` failed ({error}) after {} restarts within {} s",
                policy.max_restarts, policy.within_secs
            );
            rec.status = Status::Failed {
                reason: reason.clone(),
            };
            rec.restarts.clear();
            rec.last_error = Some(reason.clone());
            commit(inner, &rec, revision).await?;
            drop(guard);
            drop(lock);
            forget_lock(inner, parent);
            for c in &rec.children {
                stop(inner, c, &format!("its supervisor `{parent}` failed")).await?;
            }
            emit(
                inner,
                AgentEvent::Failed {
                    agent: parent.to_string(),
                    reason: reason.clone(),
                },
            );
            if let Some(grand) = rec.parent.clone() {
                return child_failed(inner, &grand, parent, &reason).await;
            }
            return Ok(());
        }
        commit(inner, &rec, revision).await?;
        drop(guard);
        drop(lock);
        forget_lock(inner, parent);
        let targets: Vec<String> = match policy.strategy {
            Strategy::OneForOne => vec![child.to_string()],
            Strategy::OneForAll => rec.children.clone(),
            Strategy::RestForOne => match rec.children.iter().position(|c| c == child) {
                Some(i) => rec.children[i..].to_vec(),
                None => vec![child.to_string()],
            },
        };
        let reason = format!("`{child}` failed: {error}");
        for t in &targets {
            restart(inner, t, &reason).await?;
        }
        emit(
            inner,
            AgentEvent::Restarted {
                supervisor: Some(parent.to_string()),
                agents: targets,
                reason,
            },
        );
        Ok(())
    })
}

/// Puts `id` and its subtree back to their initial states, active.
pub(crate) fn restart<'a>(inner: &'a Arc<Inner>, id: &'a str, reason: &'a str) -> Boxed<'a> {
    Box::pin(async move {
        let lock = lock_of(inner, id);
        let guard = lock.lock().await;
        let Some((mut rec, revision)) = load(inner, id).await? else {
            return Ok(());
        };
        rec.state = rec.initial.clone();
        rec.status = Status::Active;
        rec.suspended = None;
        rec.restarts.clear();
        rec.restart_count += 1;
        rec.last_error = Some(format!("restarted: {reason}"));
        commit(inner, &rec, revision).await?;
        drop(guard);
        drop(lock);
        forget_lock(inner, id);
        for c in &rec.children {
            restart(inner, c, reason).await?;
        }
        wake(inner, id);
        Ok(())
    })
}

/// Stops `id` and its subtree: they take no messages until restarted.
fn stop<'a>(inner: &'a Arc<Inner>, id: &'a str, reason: &'a str) -> Boxed<'a> {
    Box::pin(async move {
        let lock = lock_of(inner, id);
        let guard = lock.lock().await;
        let Some((mut rec, revision)) = load(inner, id).await? else {
            return Ok(());
        };
        rec.status = Status::Stopped {
            reason: reason.to_string(),
        };
        commit(inner, &rec, revision).await?;
        drop(guard);
        drop(lock);
        forget_lock(inner, id);
        for c in &rec.children {
            stop(inner, c, reason).await?;
        }
        Ok(())
    })
}
