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

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "call" => Ok(Scope::Call),
            "manage" => Ok(Scope::Manage),
            "read" => Ok(Scope::Read),
            other => Err(format!("unknown scope `{other}` (call, manage, read)")),
        }
    }
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

    /// Every token record.
    pub fn list(&self) -> Result<Vec<TokenRecord>, String> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    fn save(&self, list: &[TokenRecord]) -> Result<(), String> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(list).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Creates a token; returns the secret (shown once) and its record.
    pub fn create(&self, scopes: Vec<Scope>, label: &str) -> Result<(String, TokenRecord), String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("no secure random source: {e}"))?;
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
    pub fn revoke(&self, id: &str) -> Result<bool, String> {
        let mut list = self.list()?;
        let before = list.len();
        list.retain(|t| t.id != id);
        self.save(&list)?;
        Ok(list.len() != before)
    }

    /// The record of a presented token (id and scopes), if it is valid.
    pub fn check(&self, token: &str) -> Result<Option<TokenRecord>, String> {
        let h = hash(token);
        Ok(self.list()?.into_iter().find(|t| t.sha256 == h))
    }
}

/// The id of the token a request presented, put in the request's
/// extensions by the token middleware (for the journal's `caller`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenId(pub String);
