//! One module per subcommand.

pub mod agents;
pub mod audit;
pub mod call;
pub mod components;
pub mod exec;
pub mod inspect;
pub mod inspect_run;
pub mod keys;
pub mod kv;
pub mod models;
pub mod plan;
pub mod plans;
pub mod policy;
pub mod project;
pub mod remote;
pub mod replay;
pub mod run;
pub mod runs;
pub mod serve;
pub mod sessions;
pub mod tokens;
