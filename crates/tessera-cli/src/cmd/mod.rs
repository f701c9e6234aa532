//! One module per subcommand.

pub mod call;
pub mod inspect;
pub mod replay;
pub mod runs;
