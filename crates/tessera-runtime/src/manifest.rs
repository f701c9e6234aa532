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

use std::collections::BTreeMap;
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    files: Vec<RawMount>,
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    env: Option<RawEnv>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    deterministic: bool,
    #[serde(default)]
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    host: PathBuf,
    guest: String,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    inherit: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<u64>,
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
    max_concurrent: Option<u32>,
    max_output_bytes: Option<u64>,
}

/// Whether a mounted directory may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountMode {
    /// Reads only; every write, create, rename or delete is refused.
    ReadOnly,
    /// Reads and writes inside the directory.
    ReadWrite,
}

/// A host directory made visible to the guest at a guest path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// The canonical host directory.
    pub host: PathBuf,
    /// The absolute guest path it appears at.
    pub guest: String,
    /// Read-only or read-write.
    pub mode: MountMode,
}

/// Environment variables the guest may see, resolved at load time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvGrant {
    /// Name/value pairs, in name order.
    pub vars: BTreeMap<String, String>,
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

/// An outbound HTTP allow-list entry: `scheme://host[:port]`.
///
/// `host` may start with `*.` to match any subdomain (not the bare domain),
/// or be `*` alone to match any host name (IP literals and `localhost` must
/// always be listed explicitly). `port` may be `*` for any port. A
/// pattern without a port matches the scheme's default port only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostPattern {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, lower-cased; may start with `*.` or be `*`.
    pub host: String,
    /// `None` means any port.
    pub port: Option<u16>,
    /// The pattern as written.
    pub source: String,
}

impl HostPattern {
    /// Parses a pattern, explaining what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` must look like scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => return Err(format!("`{text}`: scheme `{other}` is not http or https")),
        };
        if rest.is_empty() {
            return Err(format!("`{text}`: missing host"));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "`{text}`: only scheme://host[:port] is allowed (no path, query or user info)"
            ));
        }
        let (host, port) = split_host_port(rest).map_err(|m| format!("`{text}`: {m}"))?;
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("`{text}`: port `{p}` is not a number 0-65535 or `*`"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("`{text}`: missing host"));
        }
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if host != "*" && (bare.contains('*') || bare.is_empty()) {
            return Err(format!(
                "`{text}`: `*` is only allowed as the whole host or as a leading `*.` label"
            ));
        }
        if host != "*"
            && !bare.starts_with('[')
            && !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(format!("`{text}`: `{host}` is not a valid host name"));
        }
        Ok(Self {
            scheme,
            host,
            port,
            source: text.to_string(),
        })
    }

    /// Whether the host part is a wildcard (`*` or `*.domain`).
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with('*')
    }

    /// Whether a request to `scheme://host:port` matches this pattern.
    ///
    /// `host` must already be lower-case and, for IPv6, bracketed.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !self.scheme.eq_ignore_ascii_case(scheme) {
            return false;
        }
        if let Some(p) = self.port
            && p != port
        {
            return false;
        }
        if self.host == "*" {
            // IP literals and localhost are reachable only when listed.
            return !is_ip_or_localhost(host);
        }
        match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1),
            None => self.host == host,
        }
    }
}

/// Whether `host` is an IP literal or a localhost name, including the
/// numeric spellings the system resolver accepts (`127.1`, `2130706433`,
/// `0x7f000001`, `0177.0.0.1`): a host name's last label is never numeric.
pub fn is_ip_or_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return true;
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    let numeric = !last.is_empty() && last.chars().all(|c| c.is_ascii_digit());
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
    numeric || hex
}

fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(after) = rest.strip_prefix('[') {
        let end = after
            .find(']')
            .ok_or_else(|| "unterminated IPv6 literal".to_string())?;
        let host = &rest[..end + 2];
        let tail = &after[end + 1..];
        return match tail.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if tail.is_empty() => Ok((host, None)),
            None => Err("unexpected text after IPv6 literal".into()),
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    })
}

/// Everything a component is granted, validated and resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grants {
    /// Preopened directories.
    pub mounts: Vec<Mount>,
    /// Outbound HTTP allow-list; empty means no outbound HTTP.
    pub allowed_outbound_hosts: Vec<HostPattern>,
    /// Environment variables.
    pub env: EnvGrant,
    /// Command-line arguments (`argv[1..]`) the guest sees.
    pub args: Vec<String>,
    /// Limits.
    pub limits: Limits,
    /// Deterministic execution: `Some(seed)` makes clocks virtual (driven by
    /// fuel), random bytes a PRNG seeded with `seed`, and the deadline a
    /// fuel deadline only.
    #[serde(default)]
    pub deterministic: Option<u64>,
}

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
    pub fn from_toml(text: &str, origin: &str, base: &Path) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            origin: origin.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let invalid = |field: String, message: String| ManifestError::Invalid {
            origin: origin.to_string(),
            field,
            message,
        };

        let mut mounts = Vec::new();
        for (i, m) in raw.files.iter().enumerate() {
            let field = |k: &str| format!("files[{i}].{k}");
            let host = if m.host.is_absolute() {
                m.host.clone()
            } else {
                base.join(&m.host)
            };
            let host = host.canonicalize().map_err(|e| {
                invalid(
                    field("host"),
                    format!("directory {} cannot be used: {e}", host.display()),
                )
            })?;
            if !host.is_dir() {
                return Err(invalid(
                    field("host"),
                    format!("{} is not a directory", host.display()),
                ));
            }
            if !m.guest.starts_with('/') || m.guest.split('/').any(|s| s == "..") {
                return Err(invalid(
                    field("guest"),
                    format!(
                        "`{}` must be an absolute guest path without `..` segments",
                        m.guest
                    ),
                ));
            }
            if mounts.iter().any(|o: &Mount| o.guest == m.guest) {
                return Err(invalid(
                    field("guest"),
                    format!("`{}` is mounted twice", m.guest),
                ));
            }
            let mode = match m.mode.as_deref() {
                None | Some("ro") | Some("read-only") => MountMode::ReadOnly,
                Some("rw") | Some("read-write") => MountMode::ReadWrite,
                Some(other) => {
                    return Err(invalid(
                        field("mode"),
                        format!("`{other}` is not one of ro, rw, read-only, read-write"),
                    ));
                }
            };
            mounts.push(Mount {
                host,
                guest: m.guest.clone(),
                mode,
            });
        }

        let mut allowed_outbound_hosts = Vec::new();
        if let Some(http) = &raw.http {
            for (i, p) in http.allowed_outbound_hosts.iter().enumerate() {
                allowed_outbound_hosts.push(
                    HostPattern::parse(p)
                        .map_err(|m| invalid(format!("http.allowed_outbound_hosts[{i}]"), m))?,
                );
            }
        }

        let mut env = EnvGrant::default();
        if let Some(raw_env) = &raw.env {
            for (name, value) in &raw_env.set {
                check_env_name(name).map_err(|m| invalid(format!("env.set.{name}"), m))?;
                env.vars.insert(name.clone(), value.clone());
            }
            for (i, name) in raw_env.inherit.iter().enumerate() {
                let field = format!("env.inherit[{i}]");
                check_env_name(name).map_err(|m| invalid(field.clone(), m))?;
                if env.vars.contains_key(name) {
                    return Err(invalid(field, format!("`{name}` is also in env.set")));
                }
                // A variable that is unset on the host is simply not passed.
                if let Ok(value) = std::env::var(name) {
                    env.vars.insert(name.clone(), value);
                }
            }
        }

        let mut limits = Limits::default();
        if let Some(l) = &raw.limits {
            let positive = |name: &str, v: u64| {
                if v == 0 {
                    Err(invalid(
                        format!("limits.{name}"),
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
                        "limits.memory_mb".into(),
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

        if raw.seed.is_some() && !raw.deterministic {
            return Err(invalid(
                "seed".into(),
                "only meaningful with `deterministic = true`".into(),
            ));
        }
        Ok(Self {
            mounts,
            allowed_outbound_hosts,
            env,
            args: raw.args,
            limits,
            deterministic: raw.deterministic.then(|| raw.seed.unwrap_or(0)),
        })
    }

    /// The allow-list entry that lets a request to `scheme://host:port`
    /// through, preferring an entry that names the host exactly.
    pub fn outbound_match(&self, scheme: &str, host: &str, port: u16) -> Option<&HostPattern> {
        let host = host.to_ascii_lowercase();
        let mut matching = self
            .allowed_outbound_hosts
            .iter()
            .filter(|p| p.matches(scheme, &host, port));
        let first = matching.next()?;
        if !first.is_wildcard() {
            return Some(first);
        }
        Some(matching.find(|p| !p.is_wildcard()).unwrap_or(first))
    }

    /// Whether an outbound request to `scheme://host:port` is allowed by the
    /// patterns (before name resolution; see `gateway::http`).
    pub fn allows_outbound(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.outbound_match(scheme, host, port).is_some()
    }
}

fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        Err(format!("`{name}` is not a valid environment variable name"))
    } else {
        Ok(())
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
        assert!(g.mounts.is_empty() && g.allowed_outbound_hosts.is_empty());
        assert!(g.env.vars.is_empty() && g.args.is_empty());
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
        let g = parse(
            "[env]\nset = { A = \"1\" }\ninherit = [\"PATH\", \"TESSERA_SURELY_UNSET_VAR\"]\n",
        )
        .unwrap();
        assert_eq!(g.env.vars.get("A").map(String::as_str), Some("1"));
        assert!(g.env.vars.contains_key("PATH"));
        assert!(!g.env.vars.contains_key("TESSERA_SURELY_UNSET_VAR"));
    }
}
