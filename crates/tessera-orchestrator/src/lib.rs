//! Tessera's orchestrator: plans — graphs of component calls with data
//! flowing between them — that run to the end even if the process dies
//! halfway.

#![deny(missing_docs)]

pub mod agent;
pub mod expr;
pub mod graph;
pub mod local;
pub mod plan;
pub mod progress;
pub mod replay;
pub mod run;
pub mod validate;
