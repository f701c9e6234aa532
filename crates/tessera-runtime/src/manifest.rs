//! The manifest: what a component is granted, and the limits it runs under.
//!
//! A manifest is a TOML file. Everything is denied unless it is listed:
//! no files, no outbound HTTP, no environment variables, no arguments, no
//! sockets. Every limit has a safe default, so a call never runs unbounded
//! even without a manifest. The manifest is validated completely when a
//! component is loaded (unknown keys, malformed host patterns, missing
//! directories are errors that name the field); at call time the grants are
//! only enforced, never re-parsed.
//!
//! The format is documented in `docs/manifest.md`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A problem with a manifest, naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema (unknown key, wrong type).
    #[error("{origin}: {message}")]
    Syntax {
        /// Where the manifest came from (a path, or `<inline>`).
        origin: String,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A field has a value that parses but is not acceptable.
    #[error("{origin}: field `{field}`: {message}")]
    Invalid {
        /// Where the manifest came from.
        origin: String,
        /// The dotted path of the field, e.g. `http.allowed_outbound_hosts[2]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Default fuel per call: enough for about a second of busy guest code.
pub const DEFAULT_FUEL: u64 = 2_000_000_000;
/// Default wall-clock deadline per call.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default linear-memory ceiling per instance, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 256;
/// Default number of calls of one component that may run at once.
pub const DEFAULT_MAX_CONCURRENT: u32 = 64;
/// Default ceiling on a call's output (result JSON, stdout and stderr each).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 4 * 1024 * 1024;

/// The hard ceiling for `memory_mb`: the pooling allocator reserves this much
/// address space per linear memory, so no manifest may ask for more.
pub const MAX_MEMORY_MB: u64 = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<u64>,
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
    max_concurrent: Option<u32>,
    max_output_bytes: Option<u64>,
}

/// The limits every call of a component runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Fuel (roughly: wasm instructions) per call.
    pub fuel: u64,
    /// Wall-clock deadline per call, in milliseconds.
    pub timeout_ms: u64,
    /// Linear-memory ceiling per instance, in MiB.
    pub memory_mb: u64,
    /// Calls of this component that may run at the same time.
    pub max_concurrent: u32,
    /// Ceiling on the result JSON and on each of stdout/stderr, in bytes.
    pub max_output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: DEFAULT_FUEL,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_mb: DEFAULT_MEMORY_MB,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

pub use crate::capability::Grants;
pub use crate::capability::env::EnvGrant;
pub use crate::capability::files::{FilesGrant, Mount, MountMode};
pub use crate::capability::http::{HostPattern, HttpGrant, is_ip_or_localhost};

impl Grants {
    /// Grants nothing and applies the default limits.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Reads and validates a manifest file. Relative `host` directories are
    /// resolved against the manifest's own directory.
    pub fn from_file(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, &path.display().to_string(), base)
    }

    /// Parses and validates manifest text. `origin` names it in errors;
    /// `base` resolves relative host directories.
    ///
    /// The runtime reads `limits`, `deterministic`, `seed` and `tools`
    /// (see [`crate::tools`]); every other
    /// top-level key belongs to the capability that declared it, which
    /// parses and validates it (see `crate::capability`). A key no one
    /// declared is an error.
    pub fn from_toml(text: &str, origin: &str, base: &Path) -> Result<Self, ManifestError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            origin: origin.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let known = crate::capability::manifest_keys();
        if let Some(key) = table.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ManifestError::Syntax {
                origin: origin.to_string(),
                message: format!("unknown key `{key}`, expected one of: {}", known.join(", ")),
            });
        }
        let section = crate::capability::Section {
            origin,
            base,
            table: &table,
        };
        let invalid = |field: &str, message: String| section.invalid(field, message);

        let mut limits = Limits::default();
        if let Some(l) = section.parse::<RawLimits>("limits")? {
            let positive = |name: &str, v: u64| {
                if v == 0 {
                    Err(invalid(
                        &format!("limits.{name}"),
                        "must be at least 1".into(),
                    ))
                } else {
                    Ok(v)
                }
            };
            if let Some(v) = l.fuel {
                limits.fuel = positive("fuel", v)?;
            }
            if let Some(v) = l.timeout_ms {
                limits.timeout_ms = positive("timeout_ms", v)?;
            }
            if let Some(v) = l.memory_mb {
                limits.memory_mb = positive("memory_mb", v)?;
                if v > MAX_MEMORY_MB {
                    return Err(invalid(
                        "limits.memory_mb",
                        format!("{v} is above the maximum of {MAX_MEMORY_MB}"),
                    ));
                }
            }
            if let Some(v) = l.max_concurrent {
                limits.max_concurrent = positive("max_concurrent", v.into())? as u32;
            }
            if let Some(v) = l.max_output_bytes {
                limits.max_output_bytes = positive("max_output_bytes", v)?;
            }
        }

        let deterministic = section.parse::<bool>("deterministic")?.unwrap_or(false);
        let seed = section.parse::<u64>("seed")?;
        if seed.is_some() && !deterministic {
            return Err(invalid(
                "seed",
                "only meaningful with `deterministic = true`".into(),
            ));
        }
        let tools = crate::tools::ToolCuration::parse(&section)?;
        Grants::parse_capabilities(
            &section,
            limits,
            deterministic.then(|| seed.unwrap_or(0)),
            tools,
        )
    }

    /// The allow-list entry that lets a request to `scheme://host:port`
    /// through, preferring an entry that names the host exactly.
    pub fn outbound_match(&self, scheme: &str, host: &str, port: u16) -> Option<&HostPattern> {
        self.http.outbound_match(scheme, host, port)
    }

    /// Whether an outbound request to `scheme://host:port` is allowed by the
    /// patterns (before name resolution; see `capability::http`).
    pub fn allows_outbound(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.outbound_match(scheme, host, port).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Grants, ManifestError> {
        Grants::from_toml(text, "test.toml", Path::new("."))
    }

    #[test]
    fn empty_manifest_denies_everything_with_default_limits() {
        let g = parse("").unwrap();
        assert!(g.files.mounts.is_empty() && g.http.allowed_outbound_hosts.is_empty());
        assert!(g.env.vars().is_empty() && g.env.args.is_empty());
        assert!(g.config.values.is_empty() && g.config.secrets.is_empty());
        assert_eq!(g.effects(), crate::Effects::NONE);
        assert_eq!(g.limits, Limits::default());
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = parse("[limits]\nfuell = 3\n").unwrap_err().to_string();
        assert!(e.contains("fuell"), "{e}");
        let e = parse("[network]\n").unwrap_err().to_string();
        assert!(e.contains("network"), "{e}");
    }

    #[test]
    fn host_patterns() {
        let p = HostPattern::parse("https://*.example.com").unwrap();
        assert!(p.matches("https", "api.example.com", 443));
        assert!(!p.matches("https", "example.com", 443));
        assert!(!p.matches("https", "api.example.com", 8443));
        assert!(!p.matches("http", "api.example.com", 443));
        assert!(!p.matches("https", "evilexample.com", 443));
        let any = HostPattern::parse("https://*:*").unwrap();
        assert!(any.matches("https", "example.org", 8443));
        assert!(!any.matches("https", "10.0.0.1", 443));
        assert!(!any.matches("https", "[::1]", 443));
        assert!(!any.matches("https", "localhost", 443));
        for numeric in [
            "127.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "localhost.",
            "a.localhost",
        ] {
            assert!(!any.matches("https", numeric, 443), "{numeric}");
        }
        let p = HostPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(p.matches("http", "127.0.0.1", 8080));
        let p = HostPattern::parse("http://localhost").unwrap();
        assert!(p.matches("http", "localhost", 80) && !p.matches("http", "localhost", 81));
        let p = HostPattern::parse("http://[::1]:8080").unwrap();
        assert!(p.matches("http", "[::1]", 8080));
        for bad in [
            "example.com",
            "ftp://x",
            "http://",
            "http://a*.b",
            "http://x/path",
            "http://x:99999",
            "http://ex ample",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn bad_pattern_names_field_index() {
        let e = parse("[http]\nallowed_outbound_hosts = [\"http://ok\", \"nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.allowed_outbound_hosts[1]"), "{e}");
    }

    #[test]
    fn missing_directory_names_field() {
        let e = parse("[[files]]\nhost = \"/definitely/not/here\"\nguest = \"/data\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("files[0].host"), "{e}");
    }

    #[test]
    fn limits_parse_and_validate() {
        let g = parse("[limits]\nfuel = 5\ntimeout_ms = 7\nmemory_mb = 9\nmax_concurrent = 2\nmax_output_bytes = 100\n").unwrap();
        assert_eq!(
            g.limits,
            Limits {
                fuel: 5,
                timeout_ms: 7,
                memory_mb: 9,
                max_concurrent: 2,
                max_output_bytes: 100
            }
        );
        let e = parse("[limits]\nmemory_mb = 0\n").unwrap_err().to_string();
        assert!(e.contains("limits.memory_mb"), "{e}");
    }

    #[test]
    fn deterministic_switch_and_seed() {
        assert_eq!(parse("").unwrap().deterministic, None);
        assert_eq!(
            parse("deterministic = true\n").unwrap().deterministic,
            Some(0)
        );
        assert_eq!(
            parse("deterministic = true\nseed = 7\n")
                .unwrap()
                .deterministic,
            Some(7)
        );
        let e = parse("seed = 7\n").unwrap_err().to_string();
        assert!(e.contains("`seed`"), "{e}");
    }

    #[test]
    fn env_set_and_inherit() {
        // SAFETY-free: set_var is unsafe in edition 2024, so use a variable the
        // test process always has instead.
        let mut g = parse(
            "[env]\nset = { A = \"1\" }\ninherit = [\"PATH\", \"TESSERA_SURELY_UNSET_VAR\"]\n",
        )
        .unwrap();
        // Inherited values come from the host when the grant is bound.
        assert!(!g.env.vars().contains_key("PATH"));
        g.bind(&crate::HostConfig::default()).unwrap();
        let vars = g.env.vars();
        assert_eq!(vars.get("A").copied(), Some("1"));
        assert!(vars.contains_key("PATH"));
        assert!(!vars.contains_key("TESSERA_SURELY_UNSET_VAR"));
        // The inherited value is not part of what is serialized.
        let path = std::env::var("PATH").unwrap();
        assert!(!serde_json::to_string(&g).unwrap().contains(&path));
    }

    #[test]
    fn config_values_and_secrets() {
        let mut g =
            parse("[config]\nvalues = { model = \"small\" }\nsecrets = [\"api_key\"]\n").unwrap();
        assert_eq!(
            g.config.values.get("model").map(String::as_str),
            Some("small")
        );
        assert!(g.effects().reads && g.effects().read_only());
        let e = g.clone().bind(&crate::HostConfig::default()).unwrap_err();
        assert_eq!(e.field, "config.secrets[0]");
        let mut host = crate::HostConfig::default();
        host.secrets.insert("api_key".into(), "s3cr3t".into());
        g.bind(&host).unwrap();
        assert!(!serde_json::to_string(&g).unwrap().contains("s3cr3t"));
        let e = parse("[config]\nvalues = { a = \"1\" }\nsecrets = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.secrets[0]"), "{e}");
        let e = parse("[config]\nvalue = {}\n").unwrap_err().to_string();
        assert!(e.contains("config") && e.contains("value"), "{e}");
    }

    #[test]
    fn effects_follow_the_grants() {
        let dir = std::env::temp_dir();
        let ro = parse(&format!(
            "[[files]]\nhost = \"{}\"\nguest = \"/d\"\n",
            dir.display()
        ))
        .unwrap();
        assert!(ro.effects().reads && ro.effects().read_only());
        let rw = parse(&format!(
            "[[files]]\nhost = \"{}\"\nguest = \"/d\"\nmode = \"rw\"\n",
            dir.display()
        ))
        .unwrap();
        assert!(rw.effects().writes && !rw.effects().read_only());
        let net = parse("[http]\nallowed_outbound_hosts = [\"https://example.com\"]\n").unwrap();
        assert!(net.effects().network && !net.effects().read_only());
    }
}
