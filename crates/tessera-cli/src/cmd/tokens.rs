//! `tessera tokens`: API tokens for `tessera serve`.

use tessera_server::auth::{Scope, Tokens};

use crate::exit;
use crate::setup::GlobalArgs;

/// Subcommands of `tessera tokens`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a token; it is printed once and stored only as a hash.
    Create {
        /// Scopes: call, manage, read (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<Scope>,
        /// A label to recognise it by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (ids, scopes, labels; never the tokens).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The id shown by `tokens list`.
        id: String,
    },
}

/// Runs the subcommand and returns the exit code.
pub fn run(global: &GlobalArgs, command: Command) -> i32 {
    if let Err(e) = std::fs::create_dir_all(&global.data) {
        eprintln!("error: {}: {e}", global.data.display());
        return exit::INTERNAL;
    }
    let tokens = Tokens::open(&global.data);
    let result = match command {
        Command::Create { scope, label } => tokens
            .create(scope, &label)
            .map(|(token, rec)| {
                println!("{token}");
                eprintln!(
                    "token {} created (shown once; only its hash is stored)",
                    rec.id
                );
            })
            .map_err(|e| e.to_string()),
        Command::List => tokens
            .list()
            .map(|list| {
                for t in list {
                    println!("{}  {:?}  {}  {}", t.id, t.scopes, t.created, t.label);
                }
            })
            .map_err(|e| e.to_string()),
        Command::Revoke { id } => tokens
            .revoke(&id)
            .map_err(|e| e.to_string())
            .and_then(|found| {
                if found {
                    println!("revoked {id}");
                    Ok(())
                } else {
                    Err(format!("no token with id {id}"))
                }
            }),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::BAD_INPUT
        }
    }
}
