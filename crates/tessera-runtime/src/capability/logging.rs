//! `wasi:logging` through the gateway: records go into the call's outcome,
//! the audit stream and the journal (a step each, re-performed on replay).

use serde::{Deserialize, Serialize};
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use super::{Capability, Effects, Section};
use crate::LimitHit;
use crate::audit::Decision;
use crate::gateway::{Gateway, LogRecord, Op, Replay, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;

/// The logging capability: no grant.
#[derive(Debug)]
pub struct Logging;

/// A `wasi:logging` severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
    /// Critical.
    Critical,
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRequest {
    /// Severity.
    pub level: LogLevel,
    /// The guest-provided context.
    pub context: String,
    /// The message.
    pub message: String,
}

/// `log`.
pub struct Log;
impl Op for Log {
    const CAPABILITY: &'static str = "logging";
    const NAME: &'static str = "log";
    const REPLAY: Replay = Replay::Perform;
    type Request = LogRequest;
    type Response = ();
}

impl Capability for Logging {
    const NAME: &'static str = "logging";
    const MANIFEST_KEYS: &'static [&'static str] = &[];
    type Grant = ();
    type State = ();

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        bindings::wasi::logging::logging::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(linker, |s| s)
    }

    fn grant(_: &Section<'_>) -> Result<(), ManifestError> {
        Ok(())
    }

    fn state(_: &(), _: &Gateway, _: &mut WasiCtxBuilder) -> Result<(), crate::Error> {
        Ok(())
    }

    fn effects(_: &()) -> Effects {
        Effects::NONE
    }

    fn describe(step: &Step) -> String {
        match LogRequest::deserialize(&step.request) {
            Ok(r) => format!(
                "{:<16} {:?} [{}] {}",
                step.kind(),
                r.level,
                r.context,
                r.message
            ),
            Err(_) => super::generic_description(step),
        }
    }
}

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package wasi:logging@0.1.0-draft;

            interface logging {
                enum level { trace, debug, info, warn, error, critical }
                log: func(level: level, context: string, message: string);
            }

            world host {
                import logging;
            }
        ",
        imports: { default: trappable },
    });
}

pub use bindings::wasi::logging::logging::Level;

impl From<Level> for LogLevel {
    fn from(l: Level) -> Self {
        match l {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
            Level::Critical => LogLevel::Critical,
        }
    }
}

impl Gateway {
    /// Records a guest log line.
    pub fn log(&self, level: LogLevel, context: &str, message: &str) -> wasmtime::Result<()> {
        let limit = self.grants().limits.max_output_bytes;
        let accepted = self.with_output(|out| {
            let used: usize = out
                .logs
                .iter()
                .map(|r| r.context.len() + r.message.len())
                .sum();
            if (used + context.len() + message.len()) as u64 > limit {
                return false;
            }
            out.logs.push(LogRecord {
                level,
                context: context.to_string(),
                message: message.to_string(),
            });
            true
        });
        if !accepted {
            let hit = LimitHit::Output {
                stream: "logs",
                limit,
            };
            self.audit(
                hit.capability(),
                "logs",
                Decision::Limit,
                Some(hit.to_string()),
            );
            return Err(hit.into());
        }
        self.exchange::<Log>(
            LogRequest {
                level,
                context: context.to_string(),
                message: message.to_string(),
            },
            |_| (),
        )?;
        let level_name = serde_json::to_value(level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.audit(
            "logging",
            format!("{level_name} {context}"),
            Decision::Allow,
            Some(message.to_string()),
        );
        Ok(())
    }
}

impl bindings::wasi::logging::logging::Host for HostState {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        self.gateway.log(level.into(), &context, &message)?;
        Ok(())
    }
}
