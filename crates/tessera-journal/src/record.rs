//! Recording: a call run with the journal's observer, its steps streamed
//! into the store.

use std::sync::Arc;

use serde_json::Value;
use tessera_runtime::capability::link::{LinkedCall, LinkedCalls, LinkedFuture};
use tessera_runtime::gateway::{CallScope, InteractionObserver, Recorded};
use tessera_runtime::http_handler::{HttpRequest, HttpResponse};
use tessera_runtime::{CallFailure, CallOptions, CallOutcome, LoadedComponent, Runtime};

use crate::format::{self, Caller, ComponentRef, End, EngineSettings, Header, RunResult};
use crate::{Error, JournalStore, store};

/// A new run id: the UTC time to the second, then 16 hex digits (ids sort
/// by start time). The digits are a random base drawn once per process plus
/// a counter, so no two ids a process makes are the same (for 2^64 calls),
/// however many runs start in one second; ids of different processes meet
/// only by a 64-bit chance. The ids a process makes in one second are
/// consecutive, so the journal's writer adds each second's runs at one end
/// of its tables instead of all over the second's range.
pub fn new_run_id() -> String {
    run_id_at(time::OffsetDateTime::now_utc())
}

/// [`new_run_id`] for a run that starts at `now`.
fn run_id_at(now: time::OffsetDateTime) -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u128);
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format_run_id(now, base.wrapping_add(n))
}

/// `YYYYMMDDTHHMMSS-` and 16 hex digits, written by hand: a run id is made
/// on every call, and `format!` cost a few percent of a small one.
fn format_run_id(now: time::OffsetDateTime, suffix: u64) -> String {
    fn digits(s: &mut String, n: u32, width: u32) {
        for i in (0..width).rev() {
            s.push(char::from(b'0' + (n / 10u32.pow(i) % 10) as u8));
        }
    }
    let year = now.year();
    let mut s = String::with_capacity(32);
    if (0..=9999).contains(&year) {
        digits(&mut s, year as u32, 4);
    } else {
        s.push_str(&format!("{year:04}"));
    }
    digits(&mut s, u32::from(u8::from(now.month())), 2);
    digits(&mut s, u32::from(now.day()), 2);
    s.push('T');
    digits(&mut s, u32::from(now.hour()), 2);
    digits(&mut s, u32::from(now.minute()), 2);
    digits(&mut s, u32::from(now.second()), 2);
    s.push('-');
    for i in (0..16).rev() {
        s.push(char::from(
            b"0123456789abcdef"[((suffix >> (i * 4)) & 0xf) as usize],
        ));
    }
    s
}

pub(crate) fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Streams one run's steps into the store.
struct Recorder {
    buffer: Arc<store::RunBuffer>,
    also: Option<Arc<dyn InteractionObserver>>,
}

impl InteractionObserver for Recorder {
    fn observe(&self, scope: &CallScope, index: u64, step: &Recorded) {
        self.buffer.push(index, step);
        if let Some(o) = &self.also {
            o.observe(scope, index, step);
        }
    }
}

fn engine_settings(runtime: &Runtime) -> EngineSettings {
    EngineSettings {
        wasmtime: tessera_runtime::WASMTIME_VERSION.to_string(),
        fuel: true,
        max_wasm_stack: runtime.max_wasm_stack(),
    }
}

/// The end record for an outcome.
pub fn end_of(outcome: &CallOutcome) -> End {
    let result = match &outcome.result {
        Ok(v) => RunResult::Returned { value: v.clone() },
        Err(CallFailure::Limit(l)) => RunResult::Limit {
            limit: l.capability().to_string(),
            message: l.to_string(),
        },
        Err(CallFailure::Trap { message, backtrace }) => RunResult::Trap {
            message: message.clone(),
            backtrace: backtrace.clone(),
        },
        Err(CallFailure::Diverged(d)) => RunResult::Trap {
            message: d.to_string(),
            backtrace: None,
        },
        Err(CallFailure::Exit(code)) => RunResult::Exited { code: *code },
        Err(CallFailure::Cancelled) => RunResult::Cancelled {
            message: "call cancelled".into(),
        },
    };
    End {
        result,
        fuel_consumed: outcome.fuel_consumed,
        peak_memory_bytes: outcome.peak_memory_bytes as u64,
        duration_us: outcome.duration.as_micros() as u64,
        steps: outcome.interactions,
    }
}

/// Calls `function` and records the run. Returns the run id with the outcome.
pub async fn record_call(
    store: &Arc<JournalStore>,
    component: &LoadedComponent,
    function: &str,
    args: &Value,
) -> Result<(String, CallOutcome), Error> {
    record_call_with(
        store,
        component,
        function,
        args,
        CallOptions::default(),
        None,
    )
    .await
}

/// [`record_call`] with call options (a cancellation token, a snapshot, an
/// extra observer, which sees every step the journal records) and the
/// caller to name in the header.
pub async fn record_call_with(
    store: &Arc<JournalStore>,
    component: &LoadedComponent,
    function: &str,
    args: &Value,
    options: CallOptions,
    caller: Option<Caller>,
) -> Result<(String, CallOutcome), Error> {
    record_call_for(store, component, function, args, options, caller, None).await
}

/// [`record_call_with`] for a call a plan step makes: the header links the
/// run to the plan run, step and attempt.
pub async fn record_call_for(
    store: &Arc<JournalStore>,
    component: &LoadedComponent,
    function: &str,
    args: &Value,
    options: CallOptions,
    caller: Option<Caller>,
    plan: Option<crate::format::PlanStep>,
) -> Result<(String, CallOutcome), Error> {
    record_call_linked(
        store, component, function, args, options, caller, plan, None, None,
    )
    .await
}

/// [`record_call_for`] for an agent's turn or one of its tool calls: the
/// header names the agent and turn ([`crate::AgentTurn`]), and the journal
/// holds the run for the agent. `run_id`, when given (made with
/// [`new_run_id`]), is the run's id: a turn's tool calls name their turn's
/// run before it ends.
#[allow(clippy::too_many_arguments)]
pub async fn record_call_linked(
    store: &Arc<JournalStore>,
    component: &LoadedComponent,
    function: &str,
    args: &Value,
    options: CallOptions,
    caller: Option<Caller>,
    plan: Option<crate::format::PlanStep>,
    agent: Option<crate::format::AgentTurn>,
    run_id: Option<String>,
) -> Result<(String, CallOutcome), Error> {
    let links = Links {
        caller,
        plan,
        agent,
        run_id,
        ..Links::default()
    };
    record_run(
        store,
        Target::Fresh(component),
        function,
        args,
        options,
        links,
    )
    .await
}

/// What a recorded run's header links it to.
#[derive(Debug, Default)]
pub(crate) struct Links {
    pub caller: Option<Caller>,
    pub plan: Option<crate::format::PlanStep>,
    pub agent: Option<crate::format::AgentTurn>,
    pub session: Option<crate::format::SessionLink>,
    pub linked: Option<crate::format::LinkedFrom>,
    pub run_id: Option<String>,
}

/// Records the provider side of a recorded run's linked imports: each
/// call a run of its own, whose header names the consumer's run and step,
/// made by the same caller.
struct LinkRecorder {
    store: Arc<JournalStore>,
    run: String,
    caller: Option<Caller>,
}

impl LinkedCalls for LinkRecorder {
    fn call<'a>(
        &'a self,
        provider: &'a LoadedComponent,
        call: LinkedCall,
        options: CallOptions,
    ) -> LinkedFuture<'a> {
        Box::pin(async move {
            let links = Links {
                caller: self.caller.clone(),
                linked: Some(crate::format::LinkedFrom {
                    run: self.run.clone(),
                    step: call.step,
                    interface: call.interface,
                }),
                ..Links::default()
            };
            let (run, outcome) = record_run(
                &self.store,
                Target::Fresh(provider),
                &call.function,
                &call.args,
                options,
                links,
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok((Some(run), outcome))
        })
    }
}

/// Where a recorded call runs: a fresh instance, a session's, or a fresh
/// instance of an HTTP handler given a request (its arguments).
pub(crate) enum Target<'a> {
    Fresh(&'a LoadedComponent),
    Session(&'a mut tessera_runtime::Session),
    Http(&'a LoadedComponent, &'a HttpRequest),
}

/// Handles `request` with the HTTP handler `component` and records the run:
/// the request is its arguments, the response its result. Returns the run
/// id, the outcome and the response, if the handler gave one.
pub async fn record_http(
    store: &Arc<JournalStore>,
    component: &LoadedComponent,
    request: &HttpRequest,
    options: CallOptions,
    caller: Option<Caller>,
) -> Result<(String, CallOutcome, Option<HttpResponse>), Error> {
    let f = component
        .http_handler()
        .ok_or_else(|| tessera_runtime::Error::NotCallable {
            function: tessera_runtime::http_handler::INCOMING_HANDLER.to_string(),
            reason: "the component does not export it (it is not an HTTP handler)".into(),
        })?
        .qualified_name();
    let args = serde_json::to_value(request).map_err(|source| Error::Encode {
        what: "an HTTP request",
        source,
    })?;
    let links = Links {
        caller,
        ..Links::default()
    };
    let (run_id, outcome) = record_run(
        store,
        Target::Http(component, request),
        &f,
        &args,
        options,
        links,
    )
    .await?;
    let response = outcome
        .result
        .as_ref()
        .ok()
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    Ok((run_id, outcome, response))
}

/// Records one call into `target`: the header, every step, the end.
pub(crate) async fn record_run(
    store: &Arc<JournalStore>,
    target: Target<'_>,
    function: &str,
    args: &Value,
    options: CallOptions,
    links: Links,
) -> Result<(String, CallOutcome), Error> {
    let component = match &target {
        Target::Fresh(c) | Target::Http(c, _) => (*c).clone(),
        Target::Session(s) => s.component().clone(),
    };
    let f = component.function(function)?;
    let now = time::OffsetDateTime::now_utc();
    let run_id = links.run_id.unwrap_or_else(|| run_id_at(now));
    let header = Header {
        format: format::FORMAT.to_string(),
        version: format::VERSION,
        run_id: run_id.clone(),
        started: rfc3339(now),
        component: ComponentRef {
            digest: component.digest().to_string(),
            origin: component.origin().to_string(),
        },
        function: f.qualified_name(),
        args: args.clone(),
        grants: component.shared_grants(),
        engine: engine_settings(component.runtime()),
        caller: links.caller,
        plan: links.plan,
        agent: links.agent,
        session: links.session,
        linked: links.linked,
    };
    let function = header.function.clone();
    let header_caller = header.caller.clone();
    let buffer = store.begin_run(header, component.source_bytes());
    let recorder = Arc::new(Recorder {
        buffer: buffer.clone(),
        also: options.observer.clone(),
    });
    // A replay answers linked calls from the journal: nothing to record.
    let links: Option<Arc<dyn LinkedCalls>> = match (&options.links, &options.replay) {
        (None, None) if !component.grants().link.is_empty() => Some(Arc::new(LinkRecorder {
            store: store.clone(),
            run: run_id.clone(),
            caller: header_caller,
        })),
        _ => options.links.clone(),
    };
    let options = CallOptions {
        observer: Some(recorder),
        links,
        ..options
    };
    let outcome = match target {
        Target::Fresh(c) => c.call_json_with(&function, args, options).await,
        Target::Session(s) => s.call_json_with(&function, args, options).await,
        Target::Http(c, request) => c.handle_http(request, options).await.map(|(o, _)| o),
    };
    match outcome {
        Ok(o) => {
            // Queued, not awaited: the writer commits in the background.
            // `JournalStore::flush` (or dropping the store) waits for it.
            store.finish_run(buffer, end_of(&o));
            Ok((run_id, o))
        }
        Err(e) => {
            store.finish_run(
                buffer,
                End {
                    result: RunResult::Refused {
                        message: e.to_string(),
                    },
                    fuel_consumed: 0,
                    peak_memory_bytes: 0,
                    duration_us: 0,
                    steps: 0,
                },
            );
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{format_run_id, new_run_id};

    #[test]
    fn run_ids_are_the_start_second_and_the_suffix_in_hex() {
        let t = time::Date::from_calendar_date(2026, time::Month::March, 4)
            .unwrap()
            .with_hms_milli(5, 6, 7, 500)
            .unwrap()
            .assume_utc();
        assert_eq!(
            format_run_id(t, 0x0123_4567_89ab_cdef),
            "20260304T050607-0123456789abcdef"
        );
        assert_eq!(format_run_id(t, 0x2a), "20260304T050607-000000000000002a");
    }

    /// Under load thousands of runs start in the same second; their ids are
    /// keys of the journal, so two equal ids would mix two runs' records.
    #[test]
    fn run_ids_made_in_one_process_never_repeat() {
        let n = 300_000;
        let ids: std::collections::HashSet<String> = (0..n).map(|_| new_run_id()).collect();
        assert_eq!(ids.len(), n, "a run id repeated");
        let id = new_run_id();
        let (time, suffix) = id.split_once('-').expect("time-suffix");
        assert_eq!(time.len(), 15, "{id}");
        assert_eq!(time.as_bytes()[8], b'T', "{id}");
        assert!(
            suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
}
