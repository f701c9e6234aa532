//! Retention: how long, how many and how much of the journal to keep.
//!
//! A journal records every call, so without a bound it grows for as long as
//! a server serves. A [`Retention`] policy bounds it three ways — by age, by
//! number of runs and by bytes — globally and per component, and
//! [`JournalStore::prune`](crate::JournalStore::prune) applies it (a server
//! applies it in the background as runs are recorded). Runs that something
//! still refers to (a pin, a plan or agent holding them, a run still being
//! recorded) are never removed: see [`JournalStore::hold`](crate::JournalStore::hold).
//!
//! The policy lives in the data directory's settings file,
//! `<data>/tessera.toml`, under `[journal]`, so that the server and the CLI
//! (`tessera runs prune`) read the same one; command-line flags override it.
//!
//! ```toml
//! [journal]
//! max_bytes = "256 MiB"   # the journal file on disk
//! max_runs = 100000
//! max_age = "30d"
//!
//! [journal.components.hello]   # per component, by name
//! max_runs = 1000
//! max_age = "7d"
//! max_bytes = "16 MiB"         # its runs' records and the blobs they use
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Sections of `tessera.toml` read by other loaders (the stores, the LLM
/// providers), skipped here.
const OTHER_SECTIONS: &[&str] = &["store", "llm"];

/// The settings file in a data directory.
pub const SETTINGS_FILE: &str = "tessera.toml";

/// Limits for one scope (the whole journal, or one component's runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Keep at most this many runs (the newest).
    pub max_runs: Option<u64>,
    /// Remove runs that started longer ago than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many bytes: for the whole journal, the size of the
    /// journal file on disk; for a component, the bytes of its runs' records
    /// and of the blobs they reference.
    pub max_bytes: Option<u64>,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.max_runs.is_none() && self.max_age.is_none() && self.max_bytes.is_none()
    }
}

/// A retention policy: global limits and per-component overrides.
///
/// A component's own limits apply to its runs in addition to the global
/// ones; a limit a component does not set is not inherited from the global
/// scope (the global limits already cover every run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Limits over every run.
    pub global: Limits,
    /// Limits over the runs of one component, by name: the registry name
    /// for runs a server recorded, the file name without `.wasm` for runs
    /// the CLI recorded.
    pub components: BTreeMap<String, Limits>,
}

/// A retention setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {field}: {message}")]
pub struct RetentionError {
    /// Where the setting came from (a file, `--max-age`, …).
    pub origin: String,
    /// The setting (`journal.max_age`, `journal.components.hello.max_runs`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Retention {
    /// Whether the policy sets no limit at all.
    pub fn is_empty(&self) -> bool {
        self.global.is_empty() && self.components.values().all(Limits::is_empty)
    }

    /// The limits that apply to a component's own runs.
    pub fn component(&self, name: &str) -> Option<&Limits> {
        self.components.get(name)
    }

    /// Reads `<data>/tessera.toml`; a missing file is an empty policy.
    pub fn load(data: &Path) -> Result<Self, RetentionError> {
        let path = data.join(SETTINGS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_toml(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(RetentionError {
                origin: path.display().to_string(),
                field: "(file)".into(),
                message: e.to_string(),
            }),
        }
    }

    /// Parses the `[journal]` table of a settings file (`[store]` and
    /// `[llm]` belong to other loaders and are skipped). `origin` names the
    /// file in errors. Unknown keys and sections are errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, RetentionError> {
        let err = |field: &str, message: String| RetentionError {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err("(syntax)", e.message().to_string()))?;
        let mut out = Self::default();
        for (key, value) in &doc {
            // The file holds other readers' sections too (`[store]`,
            // `[llm]`), each read by its own loader.
            if OTHER_SECTIONS.contains(&key.as_str()) {
                continue;
            }
            if key != "journal" {
                return Err(err(
                    key,
                    "unknown section (known: `journal`, `store`, `llm`)".to_string(),
                ));
            }
            let toml::Value::Table(journal) = value else {
                return Err(err("journal", "must be a table (`[journal]`)".into()));
            };
            for (k, v) in journal {
                let field = format!("journal.{k}");
                match k.as_str() {
                    "components" => {
                        let toml::Value::Table(comps) = v else {
                            return Err(err(&field, "must be a table of components".into()));
                        };
                        for (name, limits) in comps {
                            let field = format!("journal.components.{name}");
                            let toml::Value::Table(t) = limits else {
                                return Err(err(&field, "must be a table of limits".into()));
                            };
                            let mut l = Limits::default();
                            for (k, v) in t {
                                set_limit(&mut l, k, v, &format!("{field}.{k}"))
                                    .map_err(|(f, m)| err(&f, m))?;
                            }
                            out.components.insert(name.clone(), l);
                        }
                    }
                    _ => set_limit(&mut out.global, k, v, &field).map_err(|(f, m)| err(&f, m))?,
                }
            }
        }
        Ok(out)
    }
}

fn set_limit(
    l: &mut Limits,
    key: &str,
    v: &toml::Value,
    field: &str,
) -> Result<(), (String, String)> {
    let fail = |m: String| (field.to_string(), m);
    match key {
        "max_runs" => match v {
            toml::Value::Integer(n) if *n >= 0 => l.max_runs = Some(*n as u64),
            toml::Value::Integer(n) => return Err(fail(format!("{n} is negative"))),
            other => {
                return Err(fail(format!(
                    "expected a number of runs, found {}",
                    other.type_str()
                )));
            }
        },
        "max_age" => match v {
            toml::Value::String(s) => l.max_age = Some(parse_age(s).map_err(fail)?),
            other => {
                return Err(fail(format!(
                    "expected a duration such as \"30d\" or \"12h\", found {}",
                    other.type_str()
                )));
            }
        },
        "max_bytes" => match v {
            toml::Value::String(s) => l.max_bytes = Some(parse_bytes(s).map_err(fail)?),
            toml::Value::Integer(n) if *n > 0 => l.max_bytes = Some(*n as u64),
            toml::Value::Integer(n) => return Err(fail(format!("{n} is not positive"))),
            other => {
                return Err(fail(format!(
                    "expected a size such as \"256 MiB\" or a number of bytes, found {}",
                    other.type_str()
                )));
            }
        },
        other => {
            return Err(fail(format!(
                "unknown setting `{other}` (known: max_runs, max_age, max_bytes)"
            )));
        }
    }
    Ok(())
}

/// Parses an age: `30d`, `12h`, `90m`, `1h 30m`, `2weeks` (the `humantime`
/// syntax). Zero is refused.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration such as \"30d\", \"12h\" or \"90m\" ({e})")
    })?;
    if d.is_zero() {
        return Err(format!("`{s}` is zero"));
    }
    Ok(d)
}

/// Parses a size: `256 MiB`, `1GB`, `500k`, `1048576` (the `bytesize`
/// syntax: `KiB`/`MiB`/`GiB` are powers of 1024, `KB`/`MB`/`GB` of 1000).
/// Zero is refused.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let b: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| format!("`{s}` is not a size such as \"256 MiB\" or \"1GB\" ({e})"))?;
    if b.as_u64() == 0 {
        return Err(format!("`{s}` is zero"));
    }
    Ok(b.as_u64())
}

/// Formats a byte count for people (`1.5 MiB`).
pub fn format_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_policy_parses() {
        let r = Retention::from_toml(
            r#"
            [journal]
            max_bytes = "2 MiB"
            max_runs = 10
            max_age = "30d"
            [journal.components.hello]
            max_runs = 0
            max_bytes = 4096
            "#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(r.global.max_bytes, Some(2 << 20));
        assert_eq!(r.global.max_runs, Some(10));
        assert_eq!(r.global.max_age, Some(Duration::from_secs(30 * 86400)));
        let h = r.component("hello").unwrap();
        assert_eq!(
            (h.max_runs, h.max_bytes, h.max_age),
            (Some(0), Some(4096), None)
        );
        assert!(Retention::from_toml("", "t").unwrap().is_empty());
    }

    #[test]
    fn bad_settings_name_the_field() {
        let cases = [
            ("[journal]\nmax_age = \"30 dayz\"", "journal.max_age"),
            ("[journal]\nmax_age = 30", "journal.max_age"),
            ("[journal]\nmax_runs = -1", "journal.max_runs"),
            ("[journal]\nmax_runs = \"ten\"", "journal.max_runs"),
            ("[journal]\nmax_bytes = \"lots\"", "journal.max_bytes"),
            ("[journal]\nmax_bytes = 0", "journal.max_bytes"),
            ("[journal]\nmax_rusn = 3", "journal.max_rusn"),
            (
                "[journal.components.hello]\nmax_age = \"0s\"",
                "journal.components.hello.max_age",
            ),
            ("[jornal]\nmax_runs = 3", "jornal"),
            ("[journal\n", "(syntax)"),
        ];
        for (text, field) in cases {
            let e = Retention::from_toml(text, "data/tessera.toml").unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("data/tessera.toml: {field}: ")),
                "{e}"
            );
        }
    }
}
