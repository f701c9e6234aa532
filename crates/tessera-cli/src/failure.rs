//! How a command fails: one exit code, a stable kind, a message and
//! context — printed as `error: <message>` on stderr, or, for a command run
//! with `--json`, as one JSON object on stdout, so a script that asked for
//! JSON always gets JSON:
//!
//! ```json
//! {"ok": false, "error": {"kind": "link", "message": "…", "context": {…}}}
//! ```

use serde_json::{Map, Value, json};

use crate::exit;

/// A failed command.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The exit code.
    pub code: i32,
    /// A stable, snake_case name of what went wrong (`link`, `manifest`,
    /// `usage`, `no_such_run`, …).
    pub kind: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// Details that depend on the kind (the file, the field, the
    /// unresolved imports, …). Boxed to keep `Result<_, Failure>` small.
    pub context: Box<Map<String, Value>>,
}

impl Failure {
    /// A failure without context.
    pub fn new(code: i32, kind: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            kind: kind.to_string(),
            message: message.into(),
            context: Box::default(),
        }
    }

    /// Bad input (exit 2).
    pub fn bad_input(kind: &str, message: impl Into<String>) -> Self {
        Self::new(exit::BAD_INPUT, kind, message)
    }

    /// Tessera itself failed (exit 1).
    pub fn internal(kind: &str, message: impl Into<String>) -> Self {
        Self::new(exit::INTERNAL, kind, message)
    }

    /// Adds a context entry.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.context.insert(key.to_string(), value.into());
        self
    }

    /// A runtime error raised before the guest ran, with its details.
    pub fn from_runtime(e: &tessera_runtime::Error) -> Self {
        use tessera_runtime::Error as E;
        let kind = match e {
            E::Read { .. } => "read",
            E::NotWasm { .. } => "not_wasm",
            E::Adapt { .. } => "adapt",
            E::Compile { .. } => "compile",
            E::Link { .. } => "link",
            E::Compose { .. } => "compose",
            E::Manifest(_) => "manifest",
            E::Grant { .. } => "grant",
            E::Bind { .. } => "bind",
            E::Engine { .. } => "engine",
            E::Task { .. } => "task",
            E::NoSuchFunction { .. } => "no_such_function",
            E::Ambiguous { .. } => "ambiguous_function",
            E::NotCallable { .. } => "not_callable",
            E::NotServed { .. } => "not_served",
            E::BadArguments { .. } => "bad_arguments",
            E::BadHttpRequest { .. } => "bad_http_request",
            E::Busy { .. } => "busy",
            E::Instantiate { .. } => "instantiate",
            E::SessionEnded { .. } => "session_ended",
            E::Untrusted { .. } => "untrusted",
        };
        let f = Self::new(exit::for_error(e), kind, e.to_string());
        match e {
            E::Read { path, .. } => f.with("path", path.display().to_string()),
            E::NotWasm { origin, .. } | E::Adapt { origin, .. } | E::Compile { origin, .. } => {
                f.with("component", origin.as_str())
            }
            E::Link {
                origin,
                unresolved,
                exports,
                ..
            } => f
                .with("component", origin.as_str())
                .with("unresolved_imports", unresolved_json(unresolved))
                .with("exports", exports.clone()),
            E::Compose {
                consumer,
                interface,
                provider,
                ..
            } => f
                .with("component", consumer.as_str())
                .with("interface", interface.as_str())
                .with("provider", provider.as_str()),
            E::Manifest(m) => Self::from_manifest(m),
            E::Bind { origin, source } => f
                .with("component", origin.as_str())
                .with("field", source.field.as_str()),
            E::Grant { path, .. } => f.with("path", path.display().to_string()),
            E::NoSuchFunction {
                name, available, ..
            } => f
                .with("function", name.as_str())
                .with("available", available.as_str()),
            E::Ambiguous {
                name, candidates, ..
            } => f
                .with("function", name.as_str())
                .with("candidates", candidates.as_str()),
            E::NotCallable { function, .. } => f.with("function", function.as_str()),
            E::NotServed { function, reason } => f
                .with("function", function.as_str())
                .with("reason", reason.as_str()),
            E::BadArguments { function, error } => f
                .with("function", function.as_str())
                .with("path", error.path.as_str()),
            E::Busy { limit } => f.with("limit", *limit),
            E::Instantiate { origin, .. } => f.with("component", origin.as_str()),
            E::Untrusted { origin, .. } => f.with("component", origin.as_str()),
            E::Engine { .. }
            | E::Task { .. }
            | E::SessionEnded { .. }
            | E::BadHttpRequest { .. } => f,
        }
    }

    /// An invalid manifest, naming it and the field at fault.
    pub fn from_manifest(m: &tessera_runtime::ManifestError) -> Self {
        use tessera_runtime::ManifestError as M;
        let f = Self::bad_input("manifest", m.to_string());
        match m {
            M::Read { path, .. } => f.with("manifest", path.display().to_string()),
            M::Syntax { origin, .. } => f.with("manifest", origin.as_str()),
            M::Invalid { origin, field, .. } => f
                .with("manifest", origin.as_str())
                .with("field", field.as_str()),
        }
    }

    /// The failure as the JSON object `--json` prints.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": false,
            "error": {
                "kind": self.kind,
                "message": self.message,
                "context": self.context,
            }
        })
    }

    /// Prints the failure (JSON on stdout with `json`, text on stderr
    /// otherwise) and returns its exit code.
    pub fn emit(&self, json: bool) -> i32 {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.to_json()).unwrap_or_default()
            );
        } else {
            eprintln!("error: {}", self.message);
        }
        self.code
    }
}

/// A command's outcome: its exit code, or a failure to print.
pub type Outcome = Result<i32, Failure>;

/// Prints a failed outcome and returns the exit code.
pub fn finish(outcome: Outcome, json: bool) -> i32 {
    match outcome {
        Ok(code) => code,
        Err(f) => f.emit(json),
    }
}

/// A journal error (finding, reading or replaying a run), with its kind.
/// Runtime errors keep their own kind and exit code; the others are bad
/// input (a run id, a file), as the commands have always answered.
pub fn journal_failure(e: &tessera_journal::Error) -> Failure {
    use tessera_journal::Error as J;
    let kind = match e {
        J::Runtime(r) => return Failure::from_runtime(r),
        J::NoSuchRun(_) => "no_such_run",
        J::Ambiguous(..) => "ambiguous_run",
        J::ComponentMismatch { .. } => "component_mismatch",
        J::ComponentMissing(_) => "component_missing",
        J::NoGuestState => "no_guest_state",
        J::UnsupportedVersion(_) => "unsupported_version",
        J::Corrupt(_) => "corrupt_journal",
        J::Io(..) => "io",
        J::BadSessionName(_) => "bad_session_name",
        J::NoSuchSession(_) => "no_such_session",
        J::SessionExists(_) => "session_exists",
        J::SessionMoved { .. } => "session_moved",
        J::ForkBeyondHistory { .. } => "fork_beyond_history",
        J::SessionEnded { .. } => "session_ended",
        J::SessionNotRebuildable { .. } => "session_not_rebuildable",
        J::SessionDiverged { .. } => "session_diverged",
        _ => "journal",
    };
    let f = Failure::bad_input(kind, e.to_string());
    match e {
        J::Io(path, _) => f.with("path", path.display().to_string()),
        _ => f,
    }
}

/// The unresolved imports of a component as JSON, each with its message.
pub fn unresolved_json(unresolved: &[tessera_runtime::UnresolvedImport]) -> Vec<Value> {
    unresolved
        .iter()
        .map(|u| {
            let mut v = serde_json::to_value(u).unwrap_or_default();
            v["message"] = json!(u.to_string());
            v
        })
        .collect()
}
