//! API tokens: scoped, stored hashed.
//!
//! A token is 32 random bytes shown once, as `tsr_<hex>`, when created. The
//! data directory keeps only its SHA-256 (`<data>/tokens.json`), so a leaked
//! tokens file grants nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Call component functions (HTTP calls, MCP tools).
    Call,
    /// Add, activate, roll back and remove components and their grants.
    Manage,
    /// Read runs, replay them, and stream audit events.
    Read,
}

/// A scope name that is not `call`, `manage` or `read`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}` (call, manage, read)")]
pub struct UnknownScope(pub String);

impl std::str::FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, UnknownScope> {
        match s {
            "call" => Ok(Scope::Call),
            "manage" => Ok(Scope::Manage),
            "read" => Ok(Scope::Read),
            other => Err(UnknownScope(other.to_string())),
        }
    }
}

/// Why the tokens file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `tokens.json` could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `tokens.json` is not a list of token records.
    #[error("{}: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// No secure random source to make a token with.
    #[error("no secure random source: {0}")]
    Random(getrandom::Error),
}

/// A stored token (hash only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// A short public id (to list and revoke).
    pub id: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// A label.
    #[serde(default)]
    pub label: String,
    /// RFC 3339 creation time.
    pub created: String,
}

/// The tokens of a data directory.
#[derive(Debug, Clone)]
pub struct Tokens {
    path: PathBuf,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    /// The tokens file of a data directory.
    pub fn open(data: &Path) -> Self {
        Self {
            path: data.join("tokens.json"),
        }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
        |source| TokenError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self) -> impl FnOnce(serde_json::Error) -> TokenError + '_ {
        |source| TokenError::Corrupt {
            path: self.path.clone(),
            source,
        }
    }

    /// Every token record.
    pub fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(self.corrupt()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io()(e)),
        }
    }

    fn save(&self, list: &[TokenRecord]) -> Result<(), TokenError> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(list).map_err(self.corrupt())?;
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(self.io())
    }

    /// Creates a token; returns the secret (shown once) and its record.
    pub fn create(
        &self,
        scopes: Vec<Scope>,
        label: &str,
    ) -> Result<(String, TokenRecord), TokenError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(TokenError::Random)?;
        let token = format!("tsr_{}", hex::encode(secret));
        let record = TokenRecord {
            id: hash(&token)[..12].to_string(),
            sha256: hash(&token),
            scopes,
            label: label.to_string(),
            created: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        };
        let mut list = self.list()?;
        list.push(record.clone());
        self.save(&list)?;
        Ok((token, record))
    }

    /// Removes a token by id; returns whether it existed.
    pub fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        let mut list = self.list()?;
        let before = list.len();
        list.retain(|t| t.id != id);
        self.save(&list)?;
        Ok(list.len() != before)
    }

    /// The record of a presented token (id and scopes), if it is valid.
    pub fn check(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        let h = hash(token);
        Ok(self.list()?.into_iter().find(|t| t.sha256 == h))
    }
}

/// The id of the token a request presented, put in the request's
/// extensions by the token middleware (for the journal's `caller`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenId(pub String);
