//! What one turn's `tessera:agent` imports reach: the [`AgentLink`] the
//! system hands each turn. Sends go to the turn's outbox (committed with
//! it), asks are delivered at once, children are created at once (by name,
//! idempotently), tools run as journal runs of their own linked to the
//! turn, and a tool that needs approval stops the turn.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tessera_journal::{AgentTurn, Caller, ToolLink};
use tessera_runtime::CallOptions;
use tessera_runtime::capability::agent::{
    AgentLink, AskError, SendError, SpawnError, ToolAnswer, ToolError, ToolSpec,
};
use tessera_store::Expect;

use super::records::{self, Approval, Envelope, Outgoing, ReplyRecord};
use super::{Inner, SpawnSpec};

/// The link of one turn attempt.
pub(crate) struct TurnLink {
    pub(crate) inner: Arc<Inner>,
    pub(crate) id: String,
    pub(crate) parent: Option<String>,
    pub(crate) turn: u64,
    pub(crate) attempt: u32,
    pub(crate) message: String,
    /// The journal run id this attempt records under.
    pub(crate) run: String,
    pub(crate) grants: Arc<tessera_runtime::Grants>,
    pub(crate) effects: Mutex<Effects>,
}

/// What the turn did that is committed with it.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) children: Vec<String>,
    pub(crate) outbox: Vec<Outgoing>,
    pub(crate) sends: u32,
    pub(crate) asks: u32,
    pub(crate) tool_calls: u32,
    /// The approval request the turn stopped for.
    pub(crate) suspended: Option<String>,
}

impl TurnLink {
    fn effects(&self) -> std::sync::MutexGuard<'_, Effects> {
        self.effects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `to` can take a message now.
    async fn check_recipient(&self, to: &str, capacity: bool) -> Result<(), SendError> {
        let store = &self.inner.store;
        let rec = match store.get(records::BUCKET, &records::agent_key(to)).await {
            Ok(Some(e)) => serde_json::from_slice::<records::AgentRecord>(&e.value).ok(),
            _ => None,
        };
        let Some(rec) = rec else {
            // A child spawned in this turn exists already; anything else
            // must have a record.
            return Err(SendError::NoSuchAgent(to.to_string()));
        };
        if !rec.status.takes_messages() {
            return Err(SendError::Stopped(to.to_string()));
        }
        if capacity {
            let tail = super::read_counter(store, &records::tail_key(to)).await;
            if tail.saturating_sub(rec.head) >= u64::from(rec.mailbox) {
                return Err(SendError::MailboxFull(to.to_string()));
            }
        }
        Ok(())
    }

    fn tool_link(&self, name: &str) -> AgentTurn {
        AgentTurn {
            agent: self.id.clone(),
            turn: self.turn,
            message: self.message.clone(),
            attempt: self.attempt,
            tool: Some(ToolLink {
                turn_run: self.run.clone(),
                name: name.to_string(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl AgentLink for TurnLink {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn parent(&self) -> Option<String> {
        self.parent.clone()
    }

    fn children(&self) -> Vec<String> {
        self.effects().children.clone()
    }

    async fn send(&self, to: &str, body: &str) -> Result<String, SendError> {
        self.check_recipient(to, true).await?;
        let mut fx = self.effects();
        fx.sends += 1;
        let id = format!("{}#{}.{}", self.id, self.turn, fx.sends);
        fx.outbox.push(Outgoing::Message {
            to: to.to_string(),
            envelope: Envelope {
                id: id.clone(),
                sender: Some(self.id.clone()),
                body: body.to_string(),
                expects_reply: false,
                sent: records::now(),
                trace: tessera_runtime::telemetry::carrier(&opentelemetry::Context::current()),
            },
        });
        Ok(id)
    }

    async fn ask(&self, to: &str, body: &str, timeout: Duration) -> Result<String, AskError> {
        if to == self.id {
            return Err(AskError::Failed(
                "an agent cannot ask itself: its turn holds its mailbox".into(),
            ));
        }
        self.check_recipient(to, true)
            .await
            .map_err(AskError::Send)?;
        let id = {
            let mut fx = self.effects();
            fx.asks += 1;
            format!("{}#{}.a{}", self.id, self.turn, fx.asks)
        };
        let envelope = Envelope {
            id: id.clone(),
            sender: Some(self.id.clone()),
            body: body.to_string(),
            expects_reply: true,
            sent: records::now(),
            trace: tessera_runtime::telemetry::carrier(&opentelemetry::Context::current()),
        };
        super::deliver(&self.inner, to, envelope, super::Delivery::FromTurn)
            .await
            .map_err(|e| match e {
                super::AgentError::NotFound(a) => AskError::Send(SendError::NoSuchAgent(a)),
                super::AgentError::MailboxFull { id, .. } => {
                    AskError::Send(SendError::MailboxFull(id))
                }
                super::AgentError::Stopped { id, .. } => AskError::Send(SendError::Stopped(id)),
                other => AskError::Failed(other.to_string()),
            })?;
        match super::wait_reply(&self.inner, &id, timeout).await {
            Ok(ReplyRecord::Replied { reply: Some(r), .. }) => Ok(r),
            Ok(ReplyRecord::Replied { reply: None, .. }) => Err(AskError::NoReply),
            Ok(ReplyRecord::Failed { error }) => Err(AskError::Failed(error)),
            Err(super::AgentError::Timeout) => Err(AskError::Timeout),
            Err(e) => Err(AskError::Failed(e.to_string())),
        }
    }

    async fn spawn(
        &self,
        name: &str,
        template: &str,
        state: Option<&str>,
    ) -> Result<String, SpawnError> {
        let child = format!("{}/{name}", self.id);
        let Some(component) = self.grants.agent.spawn.get(template).cloned() else {
            return Err(SpawnError::Denied(template.to_string()));
        };
        let spec = SpawnSpec {
            id: child.clone(),
            component,
            state: state.map(str::to_string),
            parent: Some(self.id.clone()),
            template: Some(template.to_string()),
        };
        match super::spawn(&self.inner, spec).await {
            Ok(_) => {}
            Err(super::AgentError::Exists(_)) => {
                let same = super::load(&self.inner, &child)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|(r, _)| {
                        r.template.as_deref() == Some(template)
                            && r.parent.as_deref() == Some(&self.id)
                    });
                if !same {
                    return Err(SpawnError::Exists(child));
                }
            }
            Err(e) => return Err(SpawnError::InvalidName(e.to_string())),
        }
        let mut fx = self.effects();
        if !fx.children.contains(&child) {
            fx.children.push(child.clone());
        }
        Ok(child)
    }

    async fn tools(&self) -> Vec<ToolSpec> {
        super::tools::list(&self.inner, &self.grants).await
    }

    async fn call_tool(&self, name: &str, arguments: &str) -> ToolAnswer {
        let done = |result: Result<String, ToolError>| ToolAnswer::Done { result, run: None };
        let Some((grant_name, function)) = name.split_once("__") else {
            return done(Err(ToolError::Unknown(name.to_string())));
        };
        let Some(grant) = self.grants.agent.tools.get(grant_name) else {
            return done(Err(ToolError::Unknown(name.to_string())));
        };
        if !grant.offers(function) {
            return done(Err(ToolError::Unknown(name.to_string())));
        }
        let args: Value = match serde_json::from_str(arguments) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return done(Err(ToolError::InvalidArguments(
                    "the arguments are not a JSON object".into(),
                )));
            }
            Err(e) => return done(Err(ToolError::InvalidArguments(e.to_string()))),
        };
        let index = {
            let mut fx = self.effects();
            fx.tool_calls += 1;
            fx.tool_calls
        };
        if grant.needs_approval(function) {
            let request = format!("t{}-{}", self.turn, index);
            let key = records::approval_key(&self.id, &request);
            let store = &self.inner.store;
            let existing = match store.get(records::BUCKET, &key).await {
                Ok(e) => e.and_then(|e| serde_json::from_slice::<Approval>(&e.value).ok()),
                Err(e) => return done(Err(ToolError::Failed(e.to_string()))),
            };
            match existing.and_then(|a| a.decision) {
                Some(d) if d.approved => {}
                Some(d) => {
                    return done(Err(ToolError::Rejected(
                        d.reason.unwrap_or_else(|| "rejected".into()),
                    )));
                }
                None => {
                    let approval = Approval {
                        request: request.clone(),
                        agent: self.id.clone(),
                        tool: name.to_string(),
                        arguments: arguments.to_string(),
                        turn: self.turn,
                        asked: records::now(),
                        decision: None,
                    };
                    let bytes = serde_json::to_vec(&approval).unwrap_or_default();
                    // Absent: a first request; present and undecided: the
                    // same request asked again (a resumed turn).
                    if let Err(e) = store
                        .put(records::BUCKET, &key, &bytes, Expect::Absent, None)
                        .await
                        && !matches!(e, tessera_store::StoreError::Conflict { .. })
                    {
                        return done(Err(ToolError::Failed(e.to_string())));
                    }
                    super::emit(
                        &self.inner,
                        super::AgentEvent::Approval {
                            agent: self.id.clone(),
                            request: request.clone(),
                            tool: name.to_string(),
                            arguments: arguments.to_string(),
                        },
                    );
                    self.effects().suspended = Some(request.clone());
                    return ToolAnswer::Suspend { request };
                }
            }
        }
        super::tools::call(
            &self.inner,
            &grant.component,
            function,
            &args,
            CallOptions::default(),
            Caller {
                via: "agent".into(),
                token: None,
            },
            self.tool_link(name),
        )
        .await
    }
}
