//! Named sessions kept in the journal: an interpreter whose state outlives
//! the process, can be forked at any run, and whose history replays
//! offline.
//!
//! A [`StoredSession`] is a [`tessera_journal::JournaledSession`] of a
//! sandbox: every `exec` is a journaled run linked to the one before it,
//! and opening the session in another process re-executes those runs with
//! their host interactions answered from the journal (see the journal's
//! `session` module). A [`SessionPool`] keeps sessions live in a long-lived
//! process (the server) between calls, evicts the ones idle for longer than
//! its idle timeout or beyond its size, and rebuilds an evicted one from
//! the journal when it is used again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_journal::{Caller, JournalStore, JournaledSession, SessionRecord};
use tessera_runtime::{CallOptions, Grants};

use crate::{Execution, Language, RUN, SandboxError, Sandboxes};

/// A named sandbox session whose runs are journaled.
#[derive(Debug)]
pub struct StoredSession {
    language: Language,
    inner: JournaledSession,
}

impl StoredSession {
    /// Runs `code` in the session and records it; `caller` goes in the
    /// run's header.
    pub async fn exec(
        &mut self,
        code: &str,
        options: CallOptions,
        caller: Option<Caller>,
    ) -> Result<Execution, SandboxError> {
        let (run_id, outcome) = self
            .inner
            .call(RUN, &json!({ "code": code }), options, caller)
            .await?;
        let mut execution = Execution::from_outcome(self.language, &outcome)?;
        execution.run_id = Some(run_id);
        Ok(execution)
    }

    /// The language.
    pub fn language(&self) -> Language {
        self.language
    }

    /// The session as the journal keeps it.
    pub fn record(&self) -> &SessionRecord {
        self.inner.record()
    }

    /// The live interpreter's linear memory, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }
}

/// The language a stored session runs, from its record.
pub fn session_language(record: &SessionRecord) -> Result<Language, SandboxError> {
    record.kind.parse()
}

impl Sandboxes {
    /// Opens the session `name` of `language` stored in `journal`: rebuilt
    /// from its history if it exists, created with `grants` (the
    /// sandboxes' own when `None`) if not. A session's grants are fixed
    /// when it is created: opening it with other grants, or as another
    /// language, is an error. `owner` is the token id of a server's caller;
    /// a session created by one owner is invisible to the others.
    pub async fn open_session(
        &self,
        journal: &Arc<JournalStore>,
        name: &str,
        language: Language,
        grants: Option<Grants>,
        owner: Option<&str>,
    ) -> Result<StoredSession, SandboxError> {
        tessera_journal::check_session_name(name)?;
        if let Some(record) = journal.find_session(name)? {
            if record.owner.is_some() && record.owner.as_deref() != owner {
                return Err(tessera_journal::Error::NoSuchSession(name.to_string()).into());
            }
            let is = session_language(&record)?;
            if is != language {
                return Err(SandboxError::SessionLanguage {
                    name: name.to_string(),
                    is,
                    asked: language,
                });
            }
            if let Some(g) = &grants
                && *g != *record.grants
            {
                return Err(SandboxError::SessionGrants {
                    name: name.to_string(),
                });
            }
            let inner = JournaledSession::resume(self.runtime(), journal, name, owner).await?;
            return Ok(StoredSession { language, inner });
        }
        // A load of its own (from the compile cache): a live session holds
        // one of its component's concurrency permits for as long as it
        // lives, and must not take them from fresh runs of the language.
        let grants = grants.unwrap_or_else(|| self.grants.clone());
        let component = self.load_with(language, grants).await?;
        let inner =
            JournaledSession::create(journal, &component, name, language.name(), owner).await?;
        Ok(StoredSession { language, inner })
    }
}

/// A live session in a [`SessionPool`].
struct Live {
    session: tokio::sync::Mutex<Option<StoredSession>>,
    last_used: Mutex<Instant>,
}

/// Sessions kept live between calls in a long-lived process.
pub struct SessionPool {
    sandboxes: Arc<Sandboxes>,
    journal: Arc<JournalStore>,
    idle: Duration,
    max_live: usize,
    live: Mutex<HashMap<String, Arc<Live>>>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("idle", &self.idle)
            .field("max_live", &self.max_live)
            .field("live", &self.live_count())
            .finish_non_exhaustive()
    }
}

impl SessionPool {
    /// A pool over `sandboxes`, recording into `journal`; a session unused
    /// for `idle` is evicted (its instance dropped, its history kept), and
    /// at most `max_live` sessions are live at once (the least recently
    /// used idle one is evicted to make room).
    pub fn new(
        sandboxes: Arc<Sandboxes>,
        journal: Arc<JournalStore>,
        idle: Duration,
        max_live: usize,
    ) -> Self {
        Self {
            sandboxes,
            journal,
            idle,
            max_live: max_live.max(1),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// How many sessions hold a live instance.
    pub fn live_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn entry(&self, name: &str) -> Arc<Live> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = live.get(name) {
            return e.clone();
        }
        if live.len() >= self.max_live {
            // The least recently used session nobody is running code in.
            let victim = live
                .iter()
                .filter(|(_, e)| e.session.try_lock().is_ok())
                .min_by_key(|(_, e)| *e.last_used.lock().unwrap_or_else(|p| p.into_inner()))
                .map(|(k, _)| k.clone());
            if let Some(v) = victim {
                live.remove(&v);
            }
        }
        let e = Arc::new(Live {
            session: tokio::sync::Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
        });
        live.insert(name.to_string(), e.clone());
        e
    }

    /// Runs `code` in the session `name` (created on first use under the
    /// sandboxes' grants, rebuilt from the journal if it was evicted).
    /// Runs in one session are one at a time, in arrival order.
    pub async fn exec(
        &self,
        name: &str,
        language: Language,
        code: &str,
        options: CallOptions,
        caller: Option<Caller>,
    ) -> Result<Execution, SandboxError> {
        tessera_journal::check_session_name(name)?;
        let owner = caller.as_ref().and_then(|c| c.token.clone());
        let entry = self.entry(name);
        let mut slot = entry.session.lock().await;
        *entry.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if let Some(s) = slot.as_ref()
            && s.record().owner.is_some()
            && s.record().owner.as_deref() != owner.as_deref()
        {
            return Err(tessera_journal::Error::NoSuchSession(name.to_string()).into());
        }
        if slot.is_none() {
            let opened = self
                .sandboxes
                .open_session(&self.journal, name, language, None, owner.as_deref())
                .await;
            match opened {
                Ok(s) => *slot = Some(s),
                Err(e) => {
                    drop(slot);
                    self.forget(name, &entry);
                    return Err(e);
                }
            }
        }
        let Some(session) = slot.as_mut() else {
            return Err(tessera_journal::Error::NoSuchSession(name.to_string()).into());
        };
        if session.language() != language {
            return Err(SandboxError::SessionLanguage {
                name: name.to_string(),
                is: session.language(),
                asked: language,
            });
        }
        let ran = session.exec(code, options, caller).await;
        *entry.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        // A session the run ended, or that failed to record, is rebuilt
        // (or refused) from the journal next time.
        if ran.is_err() || session.record().ended.is_some() {
            *slot = None;
        }
        ran
    }

    /// Drops `name`'s live entry if it is still `entry`.
    fn forget(&self, name: &str, entry: &Arc<Live>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.get(name).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            live.remove(name);
        }
    }

    /// Drops the live instance of `name`, if it has one (after the session
    /// was removed from the journal, for instance).
    pub fn evict(&self, name: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    /// Evicts every session unused for longer than the idle timeout and not
    /// running code; returns how many.
    pub fn evict_idle(&self) -> usize {
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let before = live.len();
        live.retain(|_, e| {
            let idle = now.duration_since(*e.last_used.lock().unwrap_or_else(|p| p.into_inner()));
            idle < self.idle || e.session.try_lock().is_err()
        });
        before - live.len()
    }

    /// Evicts idle sessions every quarter of the idle timeout (at least
    /// every second) until `stop` is cancelled.
    pub async fn sweep(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let every = (self.idle / 4).max(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {
                    self.evict_idle();
                }
            }
        }
    }
}
