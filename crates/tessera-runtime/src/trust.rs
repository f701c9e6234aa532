//! Trust policy: which components may load, by signature and by digest.
//!
//! A `trust.toml` (reference: `docs/trust.md`) names the public keys whose
//! signatures are trusted, says for which component names a signature is
//! required and by which keys, and pins names to digests:
//!
//! ```toml
//! [keys]
//! release = "keys/release.pub"
//!
//! [[rule]]
//! names = ["dev-*"]
//! allow-unsigned = true
//!
//! [[rule]]
//! names = ["*"]
//! signed-by = ["release"]
//!
//! [pins]
//! hello = "sha256:…"
//! ```
//!
//! The runtime checks the policy in [`crate::Runtime::prepare`], before a
//! byte is adapted or compiled, so the check covers every way in: a file
//! called from the CLI, a registry add, a version the server serves, a
//! provider linked through `[imports]`. The first rule whose pattern
//! matches the name decides; a name no rule matches is refused (fail
//! closed). The result of verifying a digest's signatures is kept for the
//! life of the policy, so a component loaded again costs a map lookup.
//!
//! With a policy in force, entries of the compile cache are sealed:
//! compiled code is native code, so an entry is used only if it carries a
//! seal (an HMAC of its checksummed header) made with this host's seal key,
//! which lives in the data directory, not in the shared cache. An entry
//! changed, replaced or written by anyone without the key is refused and
//! the component compiled again from its verified bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

pub mod keys;

pub use keys::{ContentSignature, PublicKey, SecretKey, Signatures};

/// Errors of keys, signing and trust files.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A key file cannot be read, parsed or written.
    #[error("key {}: {message}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A binary cannot be signed.
    #[error("cannot sign: {0}")]
    Sign(String),
    /// The trust file is invalid.
    #[error("{}: {message}", path.display())]
    File {
        /// The trust file.
        path: PathBuf,
        /// What is wrong, with the line and column or the field.
        message: String,
    },
}

/// Why a component was refused. Each names the component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The name is pinned to another digest.
    #[error("`{name}` is pinned to {expected} but these bytes are {actual}")]
    PinMismatch {
        /// The component's name.
        name: String,
        /// The pinned digest.
        expected: String,
        /// The digest of the bytes offered.
        actual: String,
    },
    /// No rule covers the name.
    #[error("no rule of the trust policy covers `{name}` (add a [[rule]] whose names match it)")]
    NoRule {
        /// The component's name.
        name: String,
    },
    /// A signature is required and there is none.
    #[error("`{name}` is not signed; the trust policy requires a signature by {keys}")]
    Unsigned {
        /// The component's name.
        name: String,
        /// The keys that would do, comma-separated.
        keys: String,
    },
    /// A signature by a required key names it but does not verify: the
    /// bytes changed after signing.
    #[error("`{name}`: the signature does not match its bytes (changed after signing)")]
    Tampered {
        /// The component's name.
        name: String,
    },
    /// Signed, but not by a key the rule trusts.
    #[error(
        "`{name}` is signed by {signers}, not by a key the trust policy accepts for it ({keys})"
    )]
    Untrusted {
        /// The component's name.
        name: String,
        /// The key names or ids that did sign.
        signers: String,
        /// The keys that would do.
        keys: String,
    },
    /// The signature section cannot be read.
    #[error("`{name}`: its signature section is malformed: {message}")]
    Malformed {
        /// The component's name.
        name: String,
        /// The parser's message.
        message: String,
    },
}

/// What the policy found for an accepted component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The trusted keys that signed it (by name; empty for a rule that
    /// allows unsigned components and bytes not signed by a trusted key).
    pub signed_by: Vec<String>,
    /// Whether a pin matched.
    pub pinned: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    keys: BTreeMap<String, String>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
    #[serde(default)]
    pins: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RuleFile {
    names: Vec<String>,
    #[serde(default)]
    signed_by: Option<Vec<String>>,
    #[serde(default)]
    allow_unsigned: bool,
}

#[derive(Debug)]
struct Rule {
    set: globset::GlobSet,
    /// Indexes into `keys`.
    keys: Vec<usize>,
    allow_unsigned: bool,
}

/// A loaded trust policy. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct TrustPolicy {
    path: PathBuf,
    keys: Vec<PublicKey>,
    rules: Vec<Rule>,
    pins: BTreeMap<String, String>,
    seal_key: Option<[u8; 32]>,
    /// Signature checks already made, by digest.
    verified: Mutex<HashMap<String, Signatures>>,
}

impl TrustPolicy {
    /// Reads and checks a trust file. Key paths are relative to the
    /// file's directory. Errors name the file and the line and column
    /// (a TOML error) or the field (`rule[2].signed-by`).
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrustError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses a trust file's text; `path` names it in errors and anchors
    /// relative key paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TrustError> {
        let bad = |message: String| TrustError::File {
            path: path.to_path_buf(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| bad(e.to_string().trim().into()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut keys = Vec::new();
        for (name, p) in &file.keys {
            let kp = dir.join(p);
            let key = keys::read_public(&kp, name).map_err(|e| bad(format!("keys.{name}: {e}")))?;
            keys.push(key);
        }
        let mut rules = Vec::new();
        let file_rules = if file.rules.is_empty() {
            // No rule: every component must be signed by a listed key.
            vec![RuleFile {
                names: vec!["*".into()],
                signed_by: None,
                allow_unsigned: false,
            }]
        } else {
            file.rules
        };
        for (i, r) in file_rules.into_iter().enumerate() {
            let at = format!("rule[{i}]");
            if r.names.is_empty() {
                return Err(bad(format!("{at}.names: empty; name at least one pattern")));
            }
            let mut b = globset::GlobSetBuilder::new();
            for n in &r.names {
                let g = globset::GlobBuilder::new(n)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| bad(format!("{at}.names: `{n}`: {e}")))?;
                b.add(g);
            }
            let set = b.build().map_err(|e| bad(format!("{at}.names: {e}")))?;
            let key_idx = match &r.signed_by {
                None => (0..keys.len()).collect(),
                Some(names) => {
                    let mut idx = Vec::new();
                    for n in names {
                        let i = keys.iter().position(|k| &k.name == n).ok_or_else(|| {
                            bad(format!(
                                "{at}.signed-by: no key `{n}` in [keys] (known: {})",
                                key_names(&keys)
                            ))
                        })?;
                        idx.push(i);
                    }
                    idx
                }
            };
            if r.allow_unsigned && r.signed_by.is_some() {
                return Err(bad(format!(
                    "{at}: `allow-unsigned` and `signed-by` contradict each other"
                )));
            }
            if !r.allow_unsigned && key_idx.is_empty() {
                return Err(bad(format!(
                    "{at}: requires a signature but no key is listed (add [keys], or set allow-unsigned = true)"
                )));
            }
            rules.push(Rule {
                set,
                keys: key_idx,
                allow_unsigned: r.allow_unsigned,
            });
        }
        for (name, digest) in &file.pins {
            let hex = digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "pins.{name}: `{digest}` is not a digest (`sha256:` and 64 hex digits)"
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            keys,
            rules,
            pins: file.pins,
            seal_key: None,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The same policy, sealing compile-cache entries with `key` (the
    /// host's seal key, see [`seal_key`]).
    pub fn with_seal_key(mut self, key: [u8; 32]) -> Self {
        self.seal_key = Some(key);
        self
    }

    /// The host's seal key, if one was given.
    pub fn seal(&self) -> Option<&[u8; 32]> {
        self.seal_key.as_ref()
    }

    /// The trust file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Decides whether the component `name` with these bytes (of `digest`)
    /// may load.
    pub fn check(&self, name: &str, bytes: &[u8], digest: &str) -> Result<Verdict, Refusal> {
        let pinned = match self.pins.get(name) {
            Some(pin) if pin != digest => {
                return Err(Refusal::PinMismatch {
                    name: name.into(),
                    expected: pin.clone(),
                    actual: digest.into(),
                });
            }
            Some(_) => true,
            None => false,
        };
        let rule = self
            .rules
            .iter()
            .find(|r| r.set.is_match(name))
            .ok_or_else(|| Refusal::NoRule { name: name.into() })?;
        let sigs = self.signatures(bytes, digest);
        let signed_by: Vec<String> = match &sigs {
            Signatures::SignedBy(names) => names
                .iter()
                .filter(|n| rule.keys.iter().any(|&i| &self.keys[i].name == *n))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if rule.allow_unsigned || !signed_by.is_empty() {
            return Ok(Verdict { signed_by, pinned });
        }
        let wanted = rule
            .keys
            .iter()
            .map(|&i| self.keys[i].name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let name = name.to_string();
        Err(match sigs {
            Signatures::Unsigned => Refusal::Unsigned { name, keys: wanted },
            Signatures::Malformed(message) => Refusal::Malformed { name, message },
            Signatures::Invalid { tampered: true, .. } => Refusal::Tampered { name },
            Signatures::Invalid { key_ids, .. } => Refusal::Untrusted {
                name,
                signers: key_ids
                    .iter()
                    .map(|id| format!("key {id}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                keys: wanted,
            },
            Signatures::SignedBy(others) => Refusal::Untrusted {
                name,
                signers: others.join(", "),
                keys: wanted,
            },
        })
    }

    fn signatures(&self, bytes: &[u8], digest: &str) -> Signatures {
        let mut known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = known.get(digest) {
            return s.clone();
        }
        drop(known);
        let s = keys::signatures(bytes, &self.keys);
        known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= 4096 {
            known.clear();
        }
        known.insert(digest.to_string(), s.clone());
        s
    }
}

fn key_names(keys: &[PublicKey]) -> String {
    if keys.is_empty() {
        return "none".into();
    }
    keys.iter()
        .map(|k| k.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the host's seal key from `path`, creating it (32 random bytes,
/// readable by its owner only) if it does not exist.
pub fn seal_key(path: &Path) -> Result<[u8; 32], TrustError> {
    let err = |message: String| TrustError::Key {
        path: path.to_path_buf(),
        message,
    };
    match std::fs::read(path) {
        Ok(b) => {
            return b
                .try_into()
                .map_err(|b: Vec<u8>| err(format!("{} bytes; a seal key is 32", b.len())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let seed = ed25519_compact::Seed::generate();
    let key: [u8; 32] = *seed;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| err(e.to_string()))?;
    {
        use std::io::Write;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(e.to_string()))?;
        }
        let f = tmp.as_file_mut();
        f.write_all(&key).map_err(|e| err(e.to_string()))?;
        f.sync_all().map_err(|e| err(e.to_string()))?;
    }
    // Linked into place only whole, and never over another process's key.
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(key),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => seal_key(path),
        Err(e) => Err(err(e.error.to_string())),
    }
}
