//! Plan files: what a plan is, read from TOML with errors that name the
//! file, the step and the field.
//!
//! ```toml
//! name = "research"
//! description = "Fetch pages about a topic and summarize them."
//! max_parallel = 4
//!
//! [inputs.topic]
//! type = "string"
//! description = "What to research."
//!
//! [steps.search]
//! component = "search-tool"            # a registry name, or a path to a .wasm
//! function = "search"
//! args = { query = "${{ .inputs.topic }}" }
//! retry = { max_attempts = 3, backoff = "200ms" }
//! timeout = "10s"
//!
//! [steps.fetch]
//! component = "fetcher"
//! function = "fetch"
//! for_each = ".steps.search.output"    # one call per item, results in order
//! concurrency = 4
//! args = { url = "${{ .item }}" }
//! on_error = "fallback"
//! fallback = "cached"
//!
//! [outputs]
//! pages = "${{ .steps.fetch.output }}"
//! ```
//!
//! The JSON Schema of this format is [`schema`] (published as
//! `docs/plan.schema.json`); see `docs/plans.md` for every key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::expr::{Expr, Template, is_identifier};

/// A plan that cannot be used, naming where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {place}: {message}")]
pub struct PlanError {
    /// The plan file (or `<inline>`).
    pub origin: String,
    /// Where in it: `steps.fetch.args.url`, `inputs.topic`, `outputs.x`,
    /// or `plan` for the whole.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

/// The JSON type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// Any number.
    Number,
    /// true or false.
    Boolean,
    /// A list.
    Array,
    /// An object.
    Object,
}

impl InputType {
    /// Whether `v` is of this type.
    pub fn admits(self, v: &Value) -> bool {
        match self {
            InputType::String => v.is_string(),
            InputType::Integer => v.is_i64() || v.is_u64(),
            InputType::Number => v.is_number(),
            InputType::Boolean => v.is_boolean(),
            InputType::Array => v.is_array(),
            InputType::Object => v.is_object(),
        }
    }

    /// The JSON Schema name.
    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }
}

/// One input of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Its name.
    pub name: String,
    /// Its type (any JSON value when absent).
    pub ty: Option<InputType>,
    /// Its value when the run does not give one; without a default the
    /// input is required.
    pub default: Option<Value>,
    /// What it is, for people and for MCP clients.
    pub description: Option<String>,
}

/// Which component a step calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentRef {
    /// A component registered in the data directory, by name.
    Registry(String),
    /// A `.wasm` file (relative to the plan file), with an optional
    /// manifest (relative too).
    File {
        /// The component.
        path: PathBuf,
        /// Its grants.
        manifest: Option<PathBuf>,
    },
}

impl std::fmt::Display for ComponentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComponentRef::Registry(n) => f.write_str(n),
            ComponentRef::File { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

/// How often a step is tried and how long it waits in between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Attempts in all (1: no retry).
    pub max_attempts: u32,
    /// The wait before the second attempt.
    pub backoff: Duration,
    /// Each wait is this many times the one before.
    pub factor: f64,
    /// No wait is longer.
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff: Duration::from_millis(100),
            factor: 2.0,
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl Retry {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn wait_after(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1) as i32);
        let ms = self.backoff.as_secs_f64() * exp;
        Duration::from_secs_f64(ms.min(self.max_backoff.as_secs_f64()).max(0.0))
    }
}

/// What a failed step does to the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnError {
    /// The plan fails (steps already running finish; nothing new starts).
    Fail,
    /// The step's output is `null` and the plan goes on.
    Continue,
    /// The named step runs instead; its output stands for this one's.
    Fallback(String),
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name (a jq identifier: `.steps.NAME` reads its output).
    pub name: String,
    /// The component it calls.
    pub component: ComponentRef,
    /// The digest (`sha256:…`) the component must have: a registered
    /// component whose active version has other bytes, or a file that
    /// changed, is refused (the step fails, no retry).
    pub digest: Option<String>,
    /// The function.
    pub function: String,
    /// The arguments, a template of the function's parameters.
    pub args: Template,
    /// Steps it waits for: those named in `needs` and those its
    /// expressions read.
    pub needs: BTreeSet<String>,
    /// Runs only when this is true (else it is skipped; its output is null).
    pub when: Option<Expr>,
    /// Fan-out: one call per item of this list.
    pub for_each: Option<Expr>,
    /// Calls of a fan-out at once.
    pub concurrency: usize,
    /// Retries.
    pub retry: Retry,
    /// Each attempt's time limit (besides the component's own limits).
    pub timeout: Option<Duration>,
    /// What a failure does.
    pub on_error: OnError,
}

/// A plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Where it was read from.
    pub origin: String,
    /// The directory relative paths resolve against.
    pub base: PathBuf,
    /// Steps running at once, at most.
    pub max_parallel: usize,
    /// Inputs, in file order.
    pub inputs: Vec<Input>,
    /// Steps, in file order.
    pub steps: Vec<Step>,
    /// Outputs, in file order.
    pub outputs: Vec<(String, Template)>,
    /// The plan's text, as read (kept with each run).
    pub text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Option<String>,
    description: Option<String>,
    max_parallel: Option<usize>,
    #[serde(default)]
    inputs: toml::Table,
    #[serde(default)]
    steps: toml::Table,
    #[serde(default)]
    outputs: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    #[serde(rename = "type")]
    ty: Option<InputType>,
    default: Option<toml::Value>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    component: String,
    digest: Option<String>,
    manifest: Option<PathBuf>,
    function: String,
    #[serde(default)]
    args: Option<toml::Table>,
    #[serde(default)]
    needs: Vec<String>,
    when: Option<String>,
    for_each: Option<String>,
    concurrency: Option<usize>,
    retry: Option<RawRetry>,
    timeout: Option<String>,
    on_error: Option<String>,
    fallback: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    backoff: Option<String>,
    factor: Option<f64>,
    max_backoff: Option<String>,
}

/// Default `max_parallel`.
pub const DEFAULT_PARALLEL: usize = 4;
/// Default fan-out `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 4;

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

fn message(e: toml::de::Error) -> String {
    e.message().trim_end().replace('\n', " ")
}

impl Plan {
    /// Reads a plan file.
    pub fn from_file(path: &Path) -> Result<Self, PlanError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PlanError {
            origin: origin.clone(),
            place: "plan".into(),
            message: format!("cannot read it: {e}"),
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let default_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| {
                n.trim_end_matches(".toml")
                    .trim_end_matches(".plan")
                    .to_string()
            })
            .unwrap_or_else(|| "plan".into());
        Self::from_toml(&text, &origin, &base, &default_name)
    }

    /// Reads a plan from TOML text. `origin` names it in errors, relative
    /// paths resolve against `base`, and `default_name` names a plan
    /// without `name`.
    pub fn from_toml(
        text: &str,
        origin: &str,
        base: &Path,
        default_name: &str,
    ) -> Result<Self, PlanError> {
        let err = |place: &str, message: String| PlanError {
            origin: origin.to_string(),
            place: place.to_string(),
            message,
        };
        let raw: RawPlan = toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "plan".into());
            err(&place, message(e))
        })?;
        let name = raw.name.unwrap_or_else(|| default_name.to_string());
        if name.is_empty() || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(err("name", format!("`{name}` is not a usable plan name")));
        }
        let max_parallel = raw.max_parallel.unwrap_or(DEFAULT_PARALLEL);
        if max_parallel == 0 {
            return Err(err("max_parallel", "must be at least 1".into()));
        }
        let mut inputs = Vec::new();
        for (iname, v) in raw.inputs {
            let place = format!("inputs.{iname}");
            if !is_identifier(&iname) {
                return Err(err(
                    &place,
                    "an input name is letters, digits and `_`, not starting with a digit".into(),
                ));
            }
            let ri: RawInput = v.try_into().map_err(|e| err(&place, message(e)))?;
            let default = ri.default.map(toml_to_json);
            if let (Some(t), Some(d)) = (ri.ty, &default)
                && !t.admits(d)
            {
                return Err(err(
                    &format!("{place}.default"),
                    format!("{d} is not of type {}", t.name()),
                ));
            }
            inputs.push(Input {
                name: iname,
                ty: ri.ty,
                default,
                description: ri.description,
            });
        }
        if raw.steps.is_empty() {
            return Err(err("steps", "a plan needs at least one step".into()));
        }
        let mut steps = Vec::new();
        for (sname, v) in raw.steps {
            steps.push(parse_step(&sname, v, &err)?);
        }
        let mut outputs = Vec::new();
        for (oname, v) in raw.outputs {
            let place = format!("outputs.{oname}");
            let t = Template::parse(&toml_to_json(v), &place)
                .map_err(|e| err(&e.path, e.error.to_string()))?;
            outputs.push((oname, t));
        }
        let plan = Plan {
            name,
            description: raw.description,
            origin: origin.to_string(),
            base: base.to_path_buf(),
            max_parallel,
            inputs,
            steps,
            outputs,
            text: text.to_string(),
        };
        plan.check_graph()?;
        Ok(plan)
    }

    fn error(&self, place: impl Into<String>, message: impl Into<String>) -> PlanError {
        PlanError {
            origin: self.origin.clone(),
            place: place.into(),
            message: message.into(),
        }
    }

    /// A step by name.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The steps that run only as another's fallback.
    pub fn fallbacks(&self) -> BTreeMap<&str, &str> {
        self.steps
            .iter()
            .filter_map(|s| match &s.on_error {
                OnError::Fallback(f) => Some((f.as_str(), s.name.as_str())),
                _ => None,
            })
            .collect()
    }

    /// References, cycles and fallbacks.
    fn check_graph(&self) -> Result<(), PlanError> {
        let names: BTreeSet<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        let mut fallback_of: BTreeMap<&str, &str> = BTreeMap::new();
        for s in &self.steps {
            for n in &s.needs {
                if !names.contains(n.as_str()) {
                    return Err(self.error(
                        format!("steps.{}", s.name),
                        format!("needs step `{n}`, which the plan does not have"),
                    ));
                }
                if n == &s.name {
                    return Err(self.error(
                        format!("steps.{}", s.name),
                        "a step cannot read its own output",
                    ));
                }
            }
            if let OnError::Fallback(f) = &s.on_error {
                let place = format!("steps.{}.fallback", s.name);
                if !names.contains(f.as_str()) {
                    return Err(self.error(place, format!("step `{f}` does not exist")));
                }
                if f == &s.name {
                    return Err(self.error(place, "a step cannot be its own fallback"));
                }
                if let Some(other) = fallback_of.insert(f.as_str(), s.name.as_str()) {
                    return Err(self.error(
                        place,
                        format!("step `{f}` is already the fallback of `{other}`"),
                    ));
                }
            }
        }
        for s in &self.steps {
            for n in &s.needs {
                if let Some(primary) = fallback_of.get(n.as_str())
                    && *primary != s.name
                {
                    return Err(self.error(
                        format!("steps.{}", s.name),
                        format!(
                            "step `{n}` runs only as the fallback of `{primary}`: read `.steps.{primary}.output`, which its output stands for"
                        ),
                    ));
                }
            }
        }
        for (f, primary) in &fallback_of {
            if let Some(step) = self.step(f)
                && step.needs.contains(*primary)
            {
                return Err(self.error(
                    format!("steps.{f}"),
                    format!("the fallback of `{primary}` cannot read `{primary}`'s output"),
                ));
            }
        }
        // Cycles: the dependencies, with a fallback standing in for its
        // primary (dependents of the primary may get the fallback's output).
        let deps = |s: &Step| -> Vec<String> {
            let mut d: Vec<String> = s.needs.iter().cloned().collect();
            if let OnError::Fallback(f) = &s.on_error {
                d.push(f.clone());
            }
            d
        };
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let index: BTreeMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut marks = vec![Mark::New; self.steps.len()];
        for start in 0..self.steps.len() {
            if marks[start] != Mark::New {
                continue;
            }
            // Depth-first with an explicit stack: (step, next dependency).
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            marks[start] = Mark::Open;
            while let Some((at, next)) = stack.last_mut() {
                let d = deps(&self.steps[*at]);
                if *next >= d.len() {
                    marks[*at] = Mark::Done;
                    stack.pop();
                    continue;
                }
                let dep = index.get(d[*next].as_str()).copied();
                *next += 1;
                let Some(dep) = dep else { continue };
                match marks[dep] {
                    Mark::Done => {}
                    Mark::New => {
                        marks[dep] = Mark::Open;
                        stack.push((dep, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(s, _)| *s == dep).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(s, _)| self.steps[*s].name.as_str())
                            .collect();
                        cycle.push(self.steps[dep].name.as_str());
                        cycle.reverse();
                        return Err(self.error(
                            format!("steps.{}", self.steps[dep].name),
                            format!("the steps form a cycle: {}", cycle.join(" -> ")),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The inputs of a run: `given` checked against the declared inputs,
    /// defaults filled in.
    pub fn bind_inputs(&self, given: &Value) -> Result<Value, PlanError> {
        let obj = match given {
            Value::Null => serde_json::Map::new(),
            Value::Object(m) => m.clone(),
            other => {
                return Err(self.error(
                    "inputs",
                    format!("the inputs are a JSON object, not {other}"),
                ));
            }
        };
        for k in obj.keys() {
            if !self.inputs.iter().any(|i| &i.name == k) {
                let known: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                return Err(self.error(
                    format!("inputs.{k}"),
                    format!(
                        "the plan has no input `{k}` (its inputs: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        let mut out = serde_json::Map::new();
        for i in &self.inputs {
            let v = match (obj.get(&i.name), &i.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => {
                    return Err(self.error(
                        format!("inputs.{}", i.name),
                        "is required (it has no default)",
                    ));
                }
            };
            if let Some(t) = i.ty
                && !t.admits(&v)
            {
                return Err(self.error(
                    format!("inputs.{}", i.name),
                    format!("{v} is not of type {}", t.name()),
                ));
            }
            out.insert(i.name.clone(), v);
        }
        Ok(Value::Object(out))
    }

    /// The JSON Schema of the plan's inputs (an MCP tool's input schema).
    pub fn input_schema(&self) -> Value {
        let mut props = serde_json::Map::new();
        let mut required = Vec::new();
        for i in &self.inputs {
            let mut p = serde_json::Map::new();
            if let Some(t) = i.ty {
                p.insert("type".into(), Value::String(t.name().into()));
            }
            if let Some(d) = &i.description {
                p.insert("description".into(), Value::String(d.clone()));
            }
            match &i.default {
                Some(d) => {
                    p.insert("default".into(), d.clone());
                }
                None => required.push(Value::String(i.name.clone())),
            }
            props.insert(i.name.clone(), Value::Object(p));
        }
        serde_json::json!({
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// Steps in an order where each comes after those it needs (file order
    /// among the ready ones).
    pub fn topological(&self) -> Vec<&Step> {
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::with_capacity(self.steps.len());
        while out.len() < self.steps.len() {
            let before = out.len();
            for s in &self.steps {
                if !done.contains(s.name.as_str())
                    && s.needs.iter().all(|n| done.contains(n.as_str()))
                {
                    done.insert(s.name.as_str());
                    out.push(s);
                }
            }
            if out.len() == before {
                break; // a cycle: refused when the plan was read
            }
        }
        out
    }
}

type ErrFn<'a> = dyn Fn(&str, String) -> PlanError + 'a;

fn parse_duration(s: &str, place: &str, err: &ErrFn<'_>) -> Result<Duration, PlanError> {
    humantime::parse_duration(s).map_err(|e| {
        err(
            place,
            format!("`{s}` is not a duration (like 500ms, 10s, 2m): {e}"),
        )
    })
}

fn parse_step(name: &str, v: toml::Value, err: &ErrFn<'_>) -> Result<Step, PlanError> {
    let place = format!("steps.{name}");
    if !is_identifier(name) {
        return Err(err(
            &place,
            "a step name is letters, digits and `_`, not starting with a digit (expressions read it as `.steps.NAME`)".into(),
        ));
    }
    let raw: RawStep = v.try_into().map_err(|e| err(&place, message(e)))?;
    let component = if raw.component.ends_with(".wasm") || raw.component.contains('/') {
        ComponentRef::File {
            path: PathBuf::from(&raw.component),
            manifest: raw.manifest,
        }
    } else {
        if raw.manifest.is_some() {
            return Err(err(
                &format!("{place}.manifest"),
                "a registered component has its manifest in the registry; `manifest` is for a .wasm path".into(),
            ));
        }
        if raw.component.is_empty() {
            return Err(err(&format!("{place}.component"), "is empty".into()));
        }
        ComponentRef::Registry(raw.component)
    };
    if raw.function.is_empty() {
        return Err(err(&format!("{place}.function"), "is empty".into()));
    }
    if let Some(d) = &raw.digest {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(err(
                &format!("{place}.digest"),
                format!("`{d}` is not a digest (`sha256:` and 64 hex digits)"),
            ));
        }
    }
    let args_json = raw
        .args
        .map(|t| toml_to_json(toml::Value::Table(t)))
        .unwrap_or_else(|| Value::Object(Default::default()));
    let args = Template::parse(&args_json, &format!("{place}.args"))
        .map_err(|e| err(&e.path, e.error.to_string()))?;
    let when = raw
        .when
        .map(|w| Expr::parse(&w).map_err(|e| err(&format!("{place}.when"), e.to_string())))
        .transpose()?;
    let for_each = raw
        .for_each
        .map(|w| Expr::parse(&w).map_err(|e| err(&format!("{place}.for_each"), e.to_string())))
        .transpose()?;
    let concurrency = match (raw.concurrency, &for_each) {
        (Some(_), None) => {
            return Err(err(
                &format!("{place}.concurrency"),
                "applies to a fan-out: set `for_each` too".into(),
            ));
        }
        (Some(0), _) => {
            return Err(err(
                &format!("{place}.concurrency"),
                "must be at least 1".into(),
            ));
        }
        (Some(n), _) => n,
        (None, _) => DEFAULT_CONCURRENCY,
    };
    if for_each.is_none() {
        for (path, e) in args.exprs(&format!("{place}.args")) {
            if e.uses_item() {
                return Err(err(
                    &path,
                    format!(
                        "`{}` reads `.item`/`.index`, which only a step with `for_each` has",
                        e.source()
                    ),
                ));
            }
        }
    }
    let mut retry = Retry::default();
    if let Some(r) = raw.retry {
        if let Some(n) = r.max_attempts {
            if n == 0 {
                return Err(err(
                    &format!("{place}.retry.max_attempts"),
                    "must be at least 1".into(),
                ));
            }
            retry.max_attempts = n;
        }
        if let Some(b) = r.backoff {
            retry.backoff = parse_duration(&b, &format!("{place}.retry.backoff"), err)?;
        }
        if let Some(f) = r.factor {
            if !(1.0..=10.0).contains(&f) {
                return Err(err(
                    &format!("{place}.retry.factor"),
                    "must be between 1 and 10".into(),
                ));
            }
            retry.factor = f;
        }
        if let Some(m) = r.max_backoff {
            retry.max_backoff = parse_duration(&m, &format!("{place}.retry.max_backoff"), err)?;
        }
    }
    let timeout = raw
        .timeout
        .map(|t| parse_duration(&t, &format!("{place}.timeout"), err))
        .transpose()?;
    let on_error = match (raw.on_error.as_deref(), raw.fallback) {
        (None | Some("fail"), None) => OnError::Fail,
        (Some("continue"), None) => OnError::Continue,
        (Some("fallback") | None, Some(f)) => OnError::Fallback(f),
        (Some("fallback"), None) => {
            return Err(err(
                &format!("{place}.fallback"),
                "`on_error = \"fallback\"` needs `fallback = \"STEP\"`".into(),
            ));
        }
        (Some(other @ ("fail" | "continue")), Some(_)) => {
            return Err(err(
                &format!("{place}.fallback"),
                format!("a fallback needs `on_error = \"fallback\"`, not `{other}`"),
            ));
        }
        (Some(other), _) => {
            return Err(err(
                &format!("{place}.on_error"),
                format!("`{other}` is not one of `fail`, `continue`, `fallback`"),
            ));
        }
    };
    let mut needs: BTreeSet<String> = raw.needs.into_iter().collect();
    needs.extend(args.steps());
    for e in when.iter().chain(for_each.iter()) {
        needs.extend(e.steps().iter().cloned());
    }
    Ok(Step {
        name: name.to_string(),
        component,
        digest: raw.digest.map(|d| d.to_ascii_lowercase()),
        function: raw.function,
        args,
        needs,
        when,
        for_each,
        concurrency,
        retry,
        timeout,
        on_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, PlanError> {
        Plan::from_toml(text, "p.toml", Path::new("."), "p")
    }

    #[test]
    fn needs_are_inferred_and_errors_name_the_place() {
        let p = plan(
            "[inputs.topic]\ntype = \"string\"\n\
             [steps.a]\ncomponent = \"hello\"\nfunction = \"greet\"\nargs = { name = \"${{ .inputs.topic }}\" }\n\
             [steps.b]\ncomponent = \"hello\"\nfunction = \"greet\"\nargs = { name = \"${{ .steps.a.output }}\" }\n",
        )
        .unwrap();
        assert_eq!(p.step("b").unwrap().needs.iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            p.topological()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        for (text, place, needle) in [
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\nretires = 3\n",
                "steps.a",
                "unknown field `retires`",
            ),
            (
                "bogus = 1\n[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\n",
                "line 1",
                "unknown field `bogus`",
            ),
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\ndigest = \"sha256:12\"\n",
                "steps.a.digest",
                "not a digest",
            ),
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\nneeds = [\"zz\"]\n",
                "steps.a",
                "`zz`",
            ),
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\nargs = { x = \"${{ .steps.b.output }}\" }\n\
              [steps.b]\ncomponent = \"h\"\nfunction = \"f\"\nargs = { x = \"${{ .steps.a.output }}\" }\n",
                "steps.a",
                "cycle: a -> b -> a",
            ),
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\nargs = { x = \"${{ .inputs | }}\" }\n",
                "steps.a.args.x",
                "at character",
            ),
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\nargs = { x = \"${{ .item }}\" }\n",
                "steps.a.args.x",
                "for_each",
            ),
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\non_error = \"explode\"\n",
                "steps.a.on_error",
                "`explode`",
            ),
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\nfallback = \"a\"\n",
                "steps.a.fallback",
                "own fallback",
            ),
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\ntimeout = \"soon\"\n",
                "steps.a.timeout",
                "not a duration",
            ),
            (
                "[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\nfallback = \"b\"\n\
                 [steps.b]\ncomponent = \"h\"\nfunction = \"f\"\n\
                 [steps.c]\ncomponent = \"h\"\nfunction = \"f\"\nneeds = [\"b\"]\n",
                "steps.c",
                "only as the fallback of `a`",
            ),
            (
                "[steps.a-b]\ncomponent = \"h\"\nfunction = \"f\"\n",
                "steps.a-b",
                "letters",
            ),
            (
                "[inputs.n]\ntype = \"integer\"\ndefault = \"x\"\n[steps.a]\ncomponent = \"h\"\nfunction = \"f\"\n",
                "inputs.n.default",
                "integer",
            ),
            ("name = \"x\"\n", "steps", "at least one step"),
        ] {
            match plan(text) {
                Err(e) => {
                    assert_eq!(e.place, place, "{text}: {e}");
                    assert!(e.message.contains(needle), "{text}: {e}");
                    assert_eq!(e.origin, "p.toml");
                }
                Ok(_) => panic!("accepted: {text}"),
            }
        }
    }

    #[test]
    fn inputs_are_checked_and_defaulted() {
        let p = plan(
            "[inputs.topic]\ntype = \"string\"\n[inputs.n]\ntype = \"integer\"\ndefault = 3\n\
             [steps.a]\ncomponent = \"h\"\nfunction = \"f\"\n",
        )
        .unwrap();
        assert_eq!(
            p.bind_inputs(&serde_json::json!({"topic": "wasm"}))
                .unwrap(),
            serde_json::json!({"topic": "wasm", "n": 3})
        );
        assert_eq!(
            p.bind_inputs(&serde_json::json!({})).unwrap_err().place,
            "inputs.topic"
        );
        assert_eq!(
            p.bind_inputs(&serde_json::json!({"topic": 1}))
                .unwrap_err()
                .place,
            "inputs.topic"
        );
        assert_eq!(
            p.bind_inputs(&serde_json::json!({"topic": "x", "zz": 1}))
                .unwrap_err()
                .place,
            "inputs.zz"
        );
        assert_eq!(p.input_schema()["required"], serde_json::json!(["topic"]));
    }
}
