//! `wasi:logging` through the gateway: records go into the call's outcome,
//! the audit stream and the observer.

use super::{Gateway, HostState, Interaction, LimitHit, LogLevel, LogRecord};
use crate::audit::Decision;

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
        self.exchange(
            Interaction::Log {
                level,
                context: context.to_string(),
                message: message.to_string(),
            },
            |p| p,
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

/// Adds `wasi:logging` to a linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    bindings::wasi::logging::logging::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(linker, |s| s)
}
