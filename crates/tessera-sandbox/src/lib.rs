//! Code sandboxes: run Python or JavaScript that someone (often an LLM)
//! wrote at run time, inside a WebAssembly component.
//!
//! Each language is a component built from `components/`: `py-sandbox`
//! (CPython, built with componentize-py) and `js-sandbox` (SpiderMonkey,
//! built with componentize-js). Both export `tessera:sandbox/interpreter`
//! (`wit/sandbox/sandbox.wit`): code in; the value of its last expression,
//! or the exception with its place and traceback, out. What the code
//! prints is the component's stdout and stderr, which the runtime captures
//! and caps like any component's.
//!
//! A [`Sandboxes`] loads each language's component once (from the compile
//! cache after the first time) and runs every piece of code in a fresh
//! instance, under the grants and limits it was given — by default nothing
//! granted (no files, network or environment) and the default fuel,
//! deadline and memory limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use tessera_journal::JournalStore;
use tessera_runtime::{CallFailure, CallOptions, CallOutcome, Grants, LoadedComponent, Runtime};

mod session;
pub use session::{SessionPool, StoredSession, session_language};

/// The function every sandbox exports.
pub const RUN: &str = "tessera:sandbox/interpreter@0.1.0#run";

/// The environment variable naming the directory that holds the sandbox
/// components (`py-sandbox.wasm`, `js-sandbox.wasm`).
pub const DIR_VARIABLE: &str = "TESSERA_SANDBOXES";

/// A language a sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// CPython.
    Python,
    /// JavaScript (SpiderMonkey).
    JavaScript,
}

impl Language {
    /// Every language, in the order tools are listed.
    pub const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    /// `python` or `javascript`.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
        }
    }

    /// The component's file name without `.wasm`.
    pub fn component(self) -> &'static str {
        match self {
            Language::Python => "py-sandbox",
            Language::JavaScript => "js-sandbox",
        }
    }
}

impl std::str::FromStr for Language {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, SandboxError> {
        match s {
            "python" | "py" | "python3" => Ok(Language::Python),
            "javascript" | "js" => Ok(Language::JavaScript),
            other => Err(SandboxError::UnknownLanguage(other.to_string())),
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why code could not be run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Not a language Tessera has a sandbox for.
    #[error("`{0}` is not a sandbox language: use python (py) or javascript (js)")]
    UnknownLanguage(String),
    /// The sandbox component is not where it was looked for.
    #[error(
        "the {language} sandbox ({file}) was not found in {}; build it with scripts/build-components.sh, or name its directory with {DIR_VARIABLE}",
        looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// The language.
        language: Language,
        /// The file looked for.
        file: String,
        /// The directories looked in.
        looked_in: Vec<PathBuf>,
    },
    /// The component did not load (or the call was refused before it ran).
    #[error("the {language} sandbox: {source}")]
    Runtime {
        /// The language.
        language: Language,
        /// What the runtime said.
        #[source]
        source: tessera_runtime::Error,
    },
    /// The task loading the component failed.
    #[error("loading the {language} sandbox: {message}")]
    Task {
        /// The language.
        language: Language,
        /// What happened.
        message: String,
    },
    /// The run could not be journaled.
    #[error("journal: {0}")]
    Journal(String),
    /// A stored session could not be opened, rebuilt or recorded.
    #[error(transparent)]
    Session(#[from] tessera_journal::Error),
    /// The session runs another language.
    #[error("session `{name}` runs {is}, not {asked}")]
    SessionLanguage {
        /// The session.
        name: String,
        /// Its language.
        is: Language,
        /// The language asked for.
        asked: Language,
    },
    /// The session was created with other grants.
    #[error(
        "session `{name}` has the grants it was created with; open it without a manifest, or fork it into a new session"
    )]
    SessionGrants {
        /// The session.
        name: String,
    },
    /// The sandbox answered with something that is not its interface's
    /// result (a component that is not a Tessera sandbox).
    #[error("the {language} sandbox returned an unexpected result: {value}")]
    Malformed {
        /// The language.
        language: Language,
        /// What it returned.
        value: Value,
    },
}

/// Why code did not produce a value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecError {
    /// The code raised an exception (or did not parse).
    Raised {
        /// The exception's type: `SyntaxError`, `ZeroDivisionError`, …
        #[serde(rename = "type")]
        exception: String,
        /// Its message.
        message: String,
        /// 1-based line in the code, when known.
        line: Option<u32>,
        /// 1-based column, when known.
        column: Option<u32>,
        /// The traceback (Python) or stack (JavaScript).
        traceback: String,
    },
    /// A limit stopped it (fuel, deadline, memory, stack, output).
    Limit {
        /// Which limit.
        limit: String,
        /// The limit's message.
        message: String,
    },
    /// The interpreter itself trapped.
    Trap {
        /// The trap.
        message: String,
    },
    /// The caller cancelled the run.
    Cancelled,
    /// The code exited the interpreter with a status (JavaScript has no
    /// way to; Python's `sys.exit` is an exception).
    Exit {
        /// The status.
        code: i32,
    },
    /// Replaying, the run departed from its recording.
    Diverged {
        /// Where and how.
        message: String,
    },
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Raised {
                exception,
                message,
                line,
                column,
                ..
            } => {
                write!(f, "{exception}: {message}")?;
                match (line, column) {
                    (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
                    (Some(l), None) => write!(f, " (line {l})"),
                    _ => Ok(()),
                }
            }
            ExecError::Limit { message, .. } => f.write_str(message),
            ExecError::Trap { message } => f.write_str(message),
            ExecError::Cancelled => f.write_str("cancelled"),
            ExecError::Exit { code } => write!(f, "exited with status {code}"),
            ExecError::Diverged { message } => f.write_str(message),
        }
    }
}

/// What running a piece of code gave.
#[derive(Debug, Clone, Serialize)]
pub struct Execution {
    /// The language.
    pub language: Language,
    /// Whether it ran to the end without an exception.
    pub ok: bool,
    /// What it printed.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// The last expression's value as JSON, when it has one that JSON can
    /// represent.
    pub value: Option<Value>,
    /// The last expression's value as the language shows it.
    pub text: Option<String>,
    /// Why it stopped, when it did not end normally.
    pub error: Option<ExecError>,
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Peak linear memory, bytes.
    pub peak_memory_bytes: u64,
    /// Wall-clock time of the call, instantiation included.
    pub duration_us: u64,
    /// The journal run, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Execution {
    /// Reads a sandbox call's outcome.
    pub fn from_outcome(language: Language, outcome: &CallOutcome) -> Result<Self, SandboxError> {
        let malformed = |value: &Value| SandboxError::Malformed {
            language,
            value: value.clone(),
        };
        let (mut value, mut text, mut error) = (None, None, None);
        match &outcome.result {
            Ok(v) => match (v.get("ok"), v.get("err")) {
                (Some(Value::Null), None) => {}
                (Some(ok), None) => {
                    text = Some(
                        ok.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| malformed(v))?
                            .to_string(),
                    );
                    value = ok
                        .get("json")
                        .and_then(Value::as_str)
                        .and_then(|j| serde_json::from_str(j).ok());
                }
                (None, Some(err)) => {
                    let s = |k: &str| err.get(k).and_then(Value::as_str).map(str::to_string);
                    let n = |k: &str| {
                        err.get(k)
                            .and_then(Value::as_u64)
                            .and_then(|n| u32::try_from(n).ok())
                    };
                    error = Some(ExecError::Raised {
                        exception: s("kind").ok_or_else(|| malformed(v))?,
                        message: s("message").unwrap_or_default(),
                        line: n("line"),
                        column: n("column"),
                        traceback: s("traceback").unwrap_or_default(),
                    });
                }
                _ => return Err(malformed(v)),
            },
            Err(CallFailure::Limit(l)) => {
                error = Some(ExecError::Limit {
                    limit: l.capability().to_string(),
                    message: l.to_string(),
                })
            }
            Err(CallFailure::Trap { message, .. }) => {
                error = Some(ExecError::Trap {
                    message: message.clone(),
                })
            }
            Err(CallFailure::Cancelled) => error = Some(ExecError::Cancelled),
            Err(CallFailure::Exit(code)) => error = Some(ExecError::Exit { code: *code }),
            Err(CallFailure::Diverged(d)) => {
                error = Some(ExecError::Diverged {
                    message: d.to_string(),
                })
            }
        }
        Ok(Self {
            language,
            ok: error.is_none(),
            stdout: String::from_utf8_lossy(&outcome.output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&outcome.output.stderr).into_owned(),
            value,
            text,
            error,
            fuel_consumed: outcome.fuel_consumed,
            peak_memory_bytes: outcome.peak_memory_bytes as u64,
            duration_us: u64::try_from(outcome.duration.as_micros()).unwrap_or(u64::MAX),
            run_id: None,
        })
    }

    /// The execution as the JSON a tool returns.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }
}

/// The directories a sandbox component is looked for in, in order: the
/// one given, `$TESSERA_SANDBOXES`, `sandboxes/` beside the executable,
/// the `components/` directory of the source checkout the executable was
/// built in, and `./components`.
pub fn search_path(given: Option<&Path>) -> Vec<PathBuf> {
    if let Some(d) = given {
        return vec![d.to_path_buf()];
    }
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(DIR_VARIABLE) {
        dirs.push(PathBuf::from(d));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("sandboxes"));
        // target/<profile>/tessera (or target/<profile>/deps/…) in a checkout.
        for up in exe_dir.ancestors().skip(1).take(3) {
            if up.file_name().is_some_and(|n| n == "target") {
                if let Some(root) = up.parent() {
                    dirs.push(root.join("components"));
                }
                break;
            }
        }
    }
    dirs.push(PathBuf::from("components"));
    dirs
}

/// Every language's sandbox, loaded on first use.
pub struct Sandboxes {
    runtime: Runtime,
    dirs: Vec<PathBuf>,
    grants: Grants,
    loaded: tokio::sync::Mutex<HashMap<Language, Arc<LoadedComponent>>>,
}

impl std::fmt::Debug for Sandboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandboxes")
            .field("dirs", &self.dirs)
            .finish_non_exhaustive()
    }
}

impl Sandboxes {
    /// Sandboxes found in `dirs` (see [`search_path`]), run in `runtime`
    /// under `grants` (for code from an LLM: [`Grants::deny_all`], with the
    /// limits wanted).
    pub fn new(runtime: Runtime, dirs: Vec<PathBuf>, grants: Grants) -> Self {
        Self {
            runtime,
            dirs,
            grants,
            loaded: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The languages whose sandbox component is in one of the directories.
    pub fn available(&self) -> Vec<Language> {
        Language::ALL
            .into_iter()
            .filter(|l| self.file(*l).is_ok())
            .collect()
    }

    /// The file of `language`'s sandbox, if it is in one of the directories.
    pub fn file(&self, language: Language) -> Result<PathBuf, SandboxError> {
        let file = format!("{}.wasm", language.component());
        self.dirs
            .iter()
            .map(|d| d.join(&file))
            .find(|p| p.is_file())
            .ok_or_else(|| SandboxError::NotFound {
                language,
                file,
                looked_in: self.dirs.clone(),
            })
    }

    /// The grants and limits code runs under by default.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// The runtime the sandboxes run in.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// `language`'s sandbox loaded under other grants than the sandboxes'
    /// own (compiled once: the compile cache serves every load after the
    /// first).
    pub async fn load_with(
        &self,
        language: Language,
        grants: Grants,
    ) -> Result<LoadedComponent, SandboxError> {
        let file = self.file(language)?;
        let rt = self.runtime.clone();
        tokio::task::spawn_blocking(move || rt.load_file(&file, grants))
            .await
            .map_err(|e| SandboxError::Task {
                language,
                message: e.to_string(),
            })?
            .map_err(|source| SandboxError::Runtime { language, source })
    }

    /// `language`'s sandbox, loaded (and compiled, the first time) once.
    pub async fn component(
        &self,
        language: Language,
    ) -> Result<Arc<LoadedComponent>, SandboxError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(c) = loaded.get(&language) {
            return Ok(c.clone());
        }
        let file = self.file(language)?;
        let (rt, grants) = (self.runtime.clone(), self.grants.clone());
        let component = tokio::task::spawn_blocking(move || rt.load_file(&file, grants))
            .await
            .map_err(|e| SandboxError::Task {
                language,
                message: e.to_string(),
            })?
            .map_err(|source| SandboxError::Runtime { language, source })?;
        let component = Arc::new(component);
        loaded.insert(language, component.clone());
        Ok(component)
    }

    /// Runs `code` in a fresh instance of `language`'s sandbox, recorded in
    /// `journal` when one is given.
    pub async fn exec(
        &self,
        language: Language,
        code: &str,
        options: CallOptions,
        journal: Option<&Arc<JournalStore>>,
    ) -> Result<Execution, SandboxError> {
        self.exec_by(language, code, options, journal, None).await
    }

    /// [`Sandboxes::exec`], journaled with `caller` in the run's header.
    pub async fn exec_by(
        &self,
        language: Language,
        code: &str,
        options: CallOptions,
        journal: Option<&Arc<JournalStore>>,
        caller: Option<tessera_journal::Caller>,
    ) -> Result<Execution, SandboxError> {
        let component = self.component(language).await?;
        let args = json!({ "code": code });
        let runtime = |source| SandboxError::Runtime { language, source };
        let (outcome, run_id) = match journal {
            Some(store) => {
                match tessera_journal::record_call_for(
                    store, &component, RUN, &args, options, caller, None,
                )
                .await
                {
                    Ok((id, o)) => (o, Some(id)),
                    Err(tessera_journal::Error::Runtime(e)) => return Err(runtime(e)),
                    Err(e) => return Err(SandboxError::Journal(e.to_string())),
                }
            }
            None => (
                component
                    .call_json_with(RUN, &args, options)
                    .await
                    .map_err(runtime)?,
                None,
            ),
        };
        let mut execution = Execution::from_outcome(language, &outcome)?;
        execution.run_id = run_id;
        Ok(execution)
    }

    /// Opens a session of `language`'s sandbox: one live instance whose
    /// interpreter state (names, imports, closures) each `exec` leaves for
    /// the next.
    pub async fn session(&self, language: Language) -> Result<SandboxSession, SandboxError> {
        let component = self.component(language).await?;
        let session = component
            .session()
            .await
            .map_err(|source| SandboxError::Runtime { language, source })?;
        Ok(SandboxSession { language, session })
    }
}

/// A live sandbox instance kept between runs ([`Sandboxes::session`]).
/// A run stopped by a limit or a trap ends it (the interpreter may be
/// half way through an update); an exception does not.
#[derive(Debug)]
pub struct SandboxSession {
    language: Language,
    session: tessera_runtime::Session,
}

impl SandboxSession {
    /// Runs `code` in the session's interpreter.
    pub async fn exec(
        &mut self,
        code: &str,
        options: CallOptions,
    ) -> Result<Execution, SandboxError> {
        let language = self.language;
        let outcome = self
            .session
            .call_json_with(RUN, &json!({ "code": code }), options)
            .await
            .map_err(|source| SandboxError::Runtime { language, source })?;
        Execution::from_outcome(language, &outcome)
    }

    /// The language.
    pub fn language(&self) -> Language {
        self.language
    }

    /// The linear memory the interpreter holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.session.memory_bytes()
    }

    /// Why the session ended, if a run ended it.
    pub fn ended(&self) -> Option<&str> {
        self.session.ended()
    }
}
