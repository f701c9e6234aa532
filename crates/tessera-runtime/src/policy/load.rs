//! Reading a policy directory: its `*.cedar` files, checked against
//! Tessera's schema, and its `quotas.toml`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use super::quota::{ACTIONS, Quota};

/// Tessera's Cedar schema (`docs/policies.md` describes it).
pub const SCHEMA: &str = include_str!("tessera.cedarschema");

/// The parsed schema (it is part of the binary, so it parses).
pub(crate) fn schema() -> &'static Result<Schema, String> {
    static SCHEMA_PARSED: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA_PARSED.get_or_init(|| {
        Schema::from_cedarschema_str(SCHEMA)
            .map(|(s, _)| s)
            .map_err(|e| format!("Tessera's policy schema does not parse: {e}"))
    })
}

/// A problem in a policy file, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the problem is the whole file's).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file.display(), self.message),
            (l, 0) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.message),
        }
    }
}

/// Errors of loading policies.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy directory or a file in it cannot be read.
    #[error("{}: {message}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Policies or quotas that do not parse or do not fit the schema.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// A loaded policy set: the policies of every `*.cedar` file of a
/// directory (or one file), and the directory's quotas.
#[derive(Debug)]
pub struct Policies {
    pub(crate) set: PolicySet,
    /// Policy id → `file:line`.
    pub(crate) origins: HashMap<String, String>,
    pub(crate) quotas: Vec<Quota>,
    source: PathBuf,
    warnings: Vec<Problem>,
}

impl Policies {
    /// No policies and no quotas (every request is denied: Cedar permits
    /// only what a policy permits).
    pub fn empty() -> Self {
        Self {
            set: PolicySet::new(),
            origins: HashMap::new(),
            quotas: Vec::new(),
            source: PathBuf::new(),
            warnings: Vec::new(),
        }
    }

    /// Loads a directory of `*.cedar` files (and `quotas.toml`), or one
    /// `.cedar` file. Every policy is checked against Tessera's schema;
    /// every problem of every file is reported, with its position.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let read_err = |p: &Path, e: std::io::Error| PolicyError::Read {
            path: p.to_path_buf(),
            message: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
        let (files, quota_file) = if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|e| read_err(path, e))? {
                let p = entry.map_err(|e| read_err(path, e))?.path();
                if p.extension().is_some_and(|x| x == "cedar") {
                    files.push(p);
                }
            }
            files.sort();
            let q = path.join("quotas.toml");
            (files, q.is_file().then_some(q))
        } else {
            (vec![path.to_path_buf()], None)
        };
        if files.is_empty() {
            return Err(PolicyError::Invalid(vec![Problem {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                message: "no `*.cedar` policy files here".into(),
            }]));
        }

        let mut problems = Vec::new();
        let mut set = PolicySet::new();
        let mut origins = HashMap::new();
        let mut texts: HashMap<String, (PathBuf, std::sync::Arc<str>)> = HashMap::new();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|e| read_err(file, e))?;
            let parsed = match text.parse::<PolicySet>() {
                Ok(p) => p,
                Err(errs) => {
                    for e in errs.iter() {
                        problems.push(at(file, &text, e, e.to_string()));
                    }
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(Problem {
                    file: file.clone(),
                    line: 0,
                    column: 0,
                    message:
                        "policy templates (with `?principal` or `?resource`) are not supported"
                            .into(),
                });
            }
            let shared: std::sync::Arc<str> = text.clone().into();
            let mut cursor = 0;
            for policy in parsed.policies() {
                let source = policy.to_string();
                let offset = text[cursor..]
                    .find(source.trim())
                    .map_or(cursor, |o| cursor + o);
                cursor = offset;
                let (line, _) = line_col(&text, offset);
                let id = match policy.annotation("id") {
                    Some(id) => id.to_string(),
                    None => format!(
                        "{}:{line}",
                        file.file_name().unwrap_or_default().to_string_lossy()
                    ),
                };
                let place = format!("{}:{line}", file.display());
                if let Some(first) = origins.get(&id) {
                    problems.push(Problem {
                        file: file.clone(),
                        line,
                        column: 0,
                        message: format!("policy id `{id}` is already used at {first}"),
                    });
                    continue;
                }
                if let Err(e) = set.add(policy.new_id(PolicyId::new(&id))) {
                    problems.push(Problem {
                        file: file.clone(),
                        line,
                        column: 0,
                        message: e.to_string(),
                    });
                    continue;
                }
                origins.insert(id.clone(), place);
                texts.insert(id, (file.clone(), shared.clone()));
            }
        }

        // The policies that parsed are checked against the schema even when
        // others did not, so one run reports every problem.
        let mut warnings = Vec::new();
        {
            let schema = schema().as_ref().map_err(|m| PolicyError::Read {
                path: path.to_path_buf(),
                message: m.clone(),
            })?;
            let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            for e in result.validation_errors() {
                problems.push(validation_problem(&texts, e.policy_id(), e, e.to_string()));
            }
            for w in result.validation_warnings() {
                warnings.push(validation_problem(&texts, w.policy_id(), w, w.to_string()));
            }
        }

        let quotas = match &quota_file {
            None => Vec::new(),
            Some(q) => match read_quotas(q) {
                Ok(quotas) => quotas,
                Err(mut p) => {
                    problems.append(&mut p);
                    Vec::new()
                }
            },
        };
        if !problems.is_empty() {
            return Err(PolicyError::Invalid(problems));
        }
        Ok(Self {
            set,
            origins,
            quotas,
            source: path.to_path_buf(),
            warnings,
        })
    }

    /// Where the policies were loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The policy ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.origins.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// How many policies there are.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// The quotas.
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// What the schema check warned about (the policies still load).
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// `file:line` of a policy.
    pub fn origin(&self, id: &str) -> Option<&str> {
        self.origins.get(id).map(String::as_str)
    }
}

/// Reads and checks `quotas.toml`.
fn read_quotas(path: &Path) -> Result<Vec<Quota>, Vec<Problem>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        quota: Vec<Quota>,
    }
    let problem = |line: usize, column: usize, message: String| Problem {
        file: path.to_path_buf(),
        line,
        column,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| vec![problem(0, 0, e.to_string())])?;
    let file: File = toml::from_str(&text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(&text, s.start));
        vec![problem(line, column, e.message().to_string())]
    })?;
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, q) in file.quota.iter().enumerate() {
        let whose = format!("quota[{i}] (`{}`)", q.id);
        if !seen.insert(q.id.clone()) {
            problems.push(problem(0, 0, format!("{whose}: the id is used twice")));
        }
        if q.actions.is_empty() {
            problems.push(problem(0, 0, format!("{whose}: `actions` is empty")));
        }
        for a in &q.actions {
            if !ACTIONS.contains(&a.as_str()) {
                problems.push(problem(
                    0,
                    0,
                    format!(
                        "{whose}: unknown action `{a}` (one of {})",
                        ACTIONS.join(", ")
                    ),
                ));
            }
        }
        if q.unit == super::quota::Unit::Tokens && !q.actions.iter().any(|a| a == "llm.complete") {
            problems.push(problem(
                0,
                0,
                format!("{whose}: a `tokens` quota counts `llm.complete` only"),
            ));
        }
    }
    if problems.is_empty() {
        Ok(file.quota)
    } else {
        Err(problems)
    }
}

/// A problem placed by a diagnostic's first label in `text`.
fn at(file: &Path, text: &str, d: &dyn Diagnostic, message: String) -> Problem {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let (line, column) = offset.map_or((0, 0), |o| line_col(text, o));
    Problem {
        file: file.to_path_buf(),
        line,
        column,
        message,
    }
}

fn validation_problem(
    texts: &HashMap<String, (PathBuf, std::sync::Arc<str>)>,
    id: &PolicyId,
    d: &dyn Diagnostic,
    message: String,
) -> Problem {
    match texts.get(id.to_string().as_str()) {
        Some((file, text)) => at(file, text, d, format!("policy `{id}`: {message}")),
        None => Problem {
            file: PathBuf::new(),
            line: 0,
            column: 0,
            message: format!("policy `{id}`: {message}"),
        },
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |n| offset - n - 1) + 1;
    (line, column)
}
