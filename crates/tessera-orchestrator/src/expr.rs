//! Data mapping between steps: jq expressions (through jaq) and templates
//! that embed them.
//!
//! Why jq: the data between steps is JSON (arguments and results are the
//! components' WIT types as JSON), and jq is the language people already
//! use to pick, reshape and test JSON. jaq is a well-kept, pure-Rust
//! implementation with its own parser, so an expression is checked (and
//! its errors located) when the plan is validated, long before it runs.
//! Natives that read the clock, the environment or input files are left
//! out: an expression's value depends only on the plan's data, so a plan
//! run replays.
//!
//! Expressions see one JSON document:
//!
//! ```json
//! {"inputs": {...}, "steps": {"fetch": {"output": ...}}, "item": ..., "index": 0,
//!  "run": {"id": "...", "plan": "..."}, "step": {"name": "...", "key": "..."}}
//! ```
//!
//! (`item` and `index` in a fan-out's arguments; `step` — the step's name
//! and idempotency key — in arguments only.)
//!
//! A **template** is a JSON value in which a string may hold `${{ expr }}`:
//! a string that is exactly one `${{ expr }}` becomes the expression's value
//! (of any type); text around it interpolates (strings as they are, other
//! values as JSON).

use std::collections::BTreeSet;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, Vars, data};
use jaq_json::Val;
use serde_json::Value;

type Filter = jaq_core::compile::Filter<Native<data::JustLut<Val>>>;

/// Natives whose values come from outside the plan's data (the clock, the
/// process environment): left out so that expressions replay.
const NOT_IN_PLANS: &[&str] = &["now", "env"];

/// A jq expression that does not parse or compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {position} of `{expression}`")]
pub struct ExprError {
    /// The expression.
    pub expression: String,
    /// Where (0-based character offset in the expression).
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// jq's standard definitions (`map`, `select`, …), parsed once per process
/// rather than once per expression.
fn standard_defs() -> &'static [jaq_core::load::parse::Def<&'static str>] {
    static DEFS: std::sync::OnceLock<Vec<jaq_core::load::parse::Def<&'static str>>> =
        std::sync::OnceLock::new();
    DEFS.get_or_init(|| {
        jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs())
            .collect()
    })
}

/// A compiled jq expression.
#[derive(Clone)]
pub struct Expr {
    source: String,
    filter: std::sync::Arc<Filter>,
    steps: BTreeSet<String>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

fn offset(code: &str, at: &str) -> usize {
    let start = code.as_ptr() as usize;
    let here = at.as_ptr() as usize;
    if here >= start && here <= start + code.len() {
        code[..here - start].chars().count()
    } else {
        0
    }
}

impl Expr {
    /// Parses and compiles `source`.
    pub fn parse(source: &str) -> Result<Self, ExprError> {
        let fail = |position: usize, message: String| ExprError {
            expression: source.to_string(),
            position,
            message,
        };
        let defs = standard_defs().iter().cloned();
        let funs = jaq_core::funs()
            .chain(jaq_std::funs().filter(|(name, _, _)| !NOT_IN_PLANS.contains(name)))
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let loader = Loader::new(defs);
        let modules = loader
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|errs| {
                let (position, message) = errs
                    .into_iter()
                    .next()
                    .map(|(_, e)| load_error(source, e))
                    .unwrap_or((0, "does not parse".into()));
                fail(position, message)
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let first = errs
                    .into_iter()
                    .next()
                    .and_then(|(_, es)| es.into_iter().next());
                match first {
                    Some((name, undefined)) => fail(
                        offset(source, name),
                        format!("undefined {} `{name}`", undefined_kind(&undefined)),
                    ),
                    None => fail(0, "does not compile".into()),
                }
            })?;
        Ok(Self {
            source: source.to_string(),
            filter: std::sync::Arc::new(filter),
            steps: step_references(source),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The steps it reads (`.steps.NAME`).
    pub fn steps(&self) -> &BTreeSet<String> {
        &self.steps
    }

    /// Whether it reads the fan-out item (`.item` or `.index`).
    pub fn uses_item(&self) -> bool {
        path_mentions(&self.source, ".item") || path_mentions(&self.source, ".index")
    }

    /// Its one value for `input` (no value, or several, is an error). It
    /// stops at the second value, so an endless generator (`repeat(1)`) is
    /// an error, not a hang.
    pub fn eval(&self, input: &Value) -> Result<Value, String> {
        let val: Val = serde_json::from_value(input.clone())
            .map_err(|e| format!("the input is not JSON jq can read: {e}"))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, val)).map(jaq_core::unwrap_valr);
        let first = match outputs.next() {
            None => return Err("produced no value".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(v)) => v,
        };
        if outputs.next().is_some() {
            return Err("produced more than one value (one is expected)".into());
        }
        to_json(&first)
    }

    /// When the expression is a plain path (`.steps.fetch.output.body`),
    /// its keys; `None` for anything else.
    pub fn plain_path(&self) -> Option<Vec<String>> {
        let s = self.source.trim();
        let rest = s.strip_prefix('.')?;
        if rest.is_empty() {
            return Some(Vec::new());
        }
        let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
        parts.iter().all(|p| is_identifier(p)).then_some(parts)
    }
}

fn undefined_kind(u: &jaq_core::compile::Undefined) -> &'static str {
    match u {
        jaq_core::compile::Undefined::Var => "variable",
        jaq_core::compile::Undefined::Mod => "module",
        jaq_core::compile::Undefined::Filter(_) => "filter",
        jaq_core::compile::Undefined::Label => "label",
        _ => "name",
    }
}

fn load_error(source: &str, e: jaq_core::load::Error<&str>) -> (usize, String) {
    use jaq_core::load::Error;
    match e {
        Error::Io(errs) => errs
            .into_iter()
            .next()
            .map(|(p, m)| (offset(source, p), m))
            .unwrap_or((0, "cannot be read".into())),
        Error::Lex(errs) => errs
            .into_iter()
            .next()
            .map(|(expect, at)| (offset(source, at), format!("expected {}", expect.as_str())))
            .unwrap_or((0, "does not lex".into())),
        Error::Parse(errs) => errs
            .into_iter()
            .next()
            .map(|(expect, at)| {
                let found = if at.is_empty() {
                    "the end".to_string()
                } else {
                    format!("`{}`", at.chars().take(12).collect::<String>())
                };
                (
                    offset(source, at),
                    format!("expected {}, found {found}", expect.as_str()),
                )
            })
            .unwrap_or((0, "does not parse".into())),
    }
}

fn to_json(v: &Val) -> Result<Value, String> {
    serde_json::from_str(&v.to_string())
        .map_err(|_| format!("the value `{v}` is not JSON (NaN, infinity or bytes)"))
}

/// Whether `s` is an identifier jq accepts after a dot.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn path_mentions(source: &str, path: &str) -> bool {
    source.match_indices(path).any(|(i, _)| {
        let after = source[i + path.len()..].chars().next();
        let before = source[..i].chars().next_back();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ']')
    })
}

/// The step names after `.steps.` in an expression.
fn step_references(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in source.match_indices(".steps.") {
        let before = source[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ']' || c == ')') {
            continue;
        }
        let name: String = source[i + ".steps.".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// A piece of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text as written.
    Text(String),
    /// An expression's value (strings as they are, others as JSON).
    Expr(Expr),
}

/// A JSON value whose strings may hold `${{ expr }}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// A value without expressions.
    Literal(Value),
    /// A string that is exactly one expression: its value.
    Expr(Expr),
    /// Text with expressions in it: a string.
    Interp(Vec<Part>),
    /// An array of templates.
    Array(Vec<Template>),
    /// An object of templates, in order.
    Object(Vec<(String, Template)>),
}

/// A template that does not parse, with the JSON path of the bad string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {error}")]
pub struct TemplateError {
    /// Where in the value (`args.query`, `args.items[2]`).
    pub path: String,
    /// The expression's error.
    pub error: ExprError,
}

const OPEN: &str = "${{";
const CLOSE: &str = "}}";

impl Template {
    /// Parses the expressions in `value`; `path` names it in errors.
    pub fn parse(value: &Value, path: &str) -> Result<Self, TemplateError> {
        match value {
            Value::String(s) => Self::parse_str(s, path),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    out.push(Self::parse(v, &format!("{path}[{i}]"))?);
                }
                Ok(if out.iter().all(|t| matches!(t, Template::Literal(_))) {
                    Template::Literal(value.clone())
                } else {
                    Template::Array(out)
                })
            }
            Value::Object(map) => {
                let mut out = Vec::with_capacity(map.len());
                for (k, v) in map {
                    out.push((k.clone(), Self::parse(v, &format!("{path}.{k}"))?));
                }
                Ok(
                    if out.iter().all(|(_, t)| matches!(t, Template::Literal(_))) {
                        Template::Literal(value.clone())
                    } else {
                        Template::Object(out)
                    },
                )
            }
            other => Ok(Template::Literal(other.clone())),
        }
    }

    fn parse_str(s: &str, path: &str) -> Result<Self, TemplateError> {
        if !s.contains(OPEN) {
            return Ok(Template::Literal(Value::String(s.to_string())));
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find(OPEN) {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + OPEN.len()..];
            let Some(end) = after.find(CLOSE) else {
                return Err(TemplateError {
                    path: path.to_string(),
                    error: ExprError {
                        expression: s.to_string(),
                        position: s.len() - rest.len() + start,
                        message: "`${{` is not closed by `}}`".into(),
                    },
                });
            };
            let code = after[..end].trim();
            let expr = Expr::parse(code).map_err(|error| TemplateError {
                path: path.to_string(),
                error,
            })?;
            parts.push(Part::Expr(expr));
            rest = &after[end + CLOSE.len()..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(match parts.as_slice() {
            [Part::Expr(e)] => Template::Expr(e.clone()),
            _ => Template::Interp(parts),
        })
    }

    /// Every expression in it, with its JSON path.
    pub fn exprs(&self, path: &str) -> Vec<(String, &Expr)> {
        let mut out = Vec::new();
        self.collect(path, &mut out);
        out
    }

    fn collect<'a>(&'a self, path: &str, out: &mut Vec<(String, &'a Expr)>) {
        match self {
            Template::Literal(_) => {}
            Template::Expr(e) => out.push((path.to_string(), e)),
            Template::Interp(parts) => {
                for p in parts {
                    if let Part::Expr(e) = p {
                        out.push((path.to_string(), e));
                    }
                }
            }
            Template::Array(items) => {
                for (i, t) in items.iter().enumerate() {
                    t.collect(&format!("{path}[{i}]"), out);
                }
            }
            Template::Object(fields) => {
                for (k, t) in fields {
                    t.collect(&format!("{path}.{k}"), out);
                }
            }
        }
    }

    /// The steps its expressions read.
    pub fn steps(&self) -> BTreeSet<String> {
        self.exprs("")
            .into_iter()
            .flat_map(|(_, e)| e.steps().iter().cloned())
            .collect()
    }

    /// Its value for `input`; an error names the JSON path.
    pub fn eval(&self, input: &Value, path: &str) -> Result<Value, String> {
        match self {
            Template::Literal(v) => Ok(v.clone()),
            Template::Expr(e) => e
                .eval(input)
                .map_err(|m| format!("{path}: `{}` {m}", e.source())),
            Template::Interp(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => s.push_str(t),
                        Part::Expr(e) => match e
                            .eval(input)
                            .map_err(|m| format!("{path}: `{}` {m}", e.source()))?
                        {
                            Value::String(v) => s.push_str(&v),
                            other => s.push_str(&other.to_string()),
                        },
                    }
                }
                Ok(Value::String(s))
            }
            Template::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, t)| t.eval(input, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Template::Object(fields) => {
                let mut map = serde_json::Map::new();
                for (k, t) in fields {
                    map.insert(k.clone(), t.eval(input, &format!("{path}.{k}"))?);
                }
                Ok(Value::Object(map))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_evaluate_and_name_their_errors() {
        let e = Expr::parse(".steps.fetch.output.body | length").unwrap();
        assert_eq!(e.steps().iter().collect::<Vec<_>>(), ["fetch"]);
        let ctx = json!({"steps": {"fetch": {"output": {"body": "hello"}}}});
        assert_eq!(e.eval(&ctx).unwrap(), json!(5));
        assert_eq!(
            Expr::parse(".inputs.urls | map(ascii_upcase)")
                .unwrap()
                .eval(&json!({"inputs": {"urls": ["a", "b"]}}))
                .unwrap(),
            json!(["A", "B"])
        );
        let err = Expr::parse(".a | (").unwrap_err();
        assert!(err.position >= 4, "{err}");
        let err = Expr::parse(".a | nosuchfn").unwrap_err();
        assert_eq!(err.position, 5, "{err}");
        assert!(err.message.contains("nosuchfn"), "{err}");
        // No clock, no environment: a plan's values replay.
        assert!(Expr::parse("now").is_err());
        assert!(Expr::parse("env").is_err());
        assert!(Expr::parse(".[]").unwrap().eval(&json!([1, 2])).is_err());
        // An endless generator is an error at its second value.
        let e = Expr::parse("repeat(1)")
            .unwrap()
            .eval(&json!(null))
            .unwrap_err();
        assert!(e.contains("more than one value"), "{e}");
        assert_eq!(
            Expr::parse(".steps.a.output.b").unwrap().plain_path(),
            Some(vec![
                "steps".into(),
                "a".into(),
                "output".into(),
                "b".into()
            ])
        );
        assert_eq!(Expr::parse(".a | .b").unwrap().plain_path(), None);
        assert!(Expr::parse(".item.url").unwrap().uses_item());
        assert!(!Expr::parse(".items").unwrap().uses_item());
    }

    #[test]
    fn templates_interpolate_and_keep_types() {
        let t = Template::parse(
            &json!({"n": "${{ .inputs.n }}", "s": "n=${{ .inputs.n }}!", "lit": [1, "x"]}),
            "args",
        )
        .unwrap();
        let v = t.eval(&json!({"inputs": {"n": 3}}), "args").unwrap();
        assert_eq!(v, json!({"n": 3, "s": "n=3!", "lit": [1, "x"]}));
        let e = Template::parse(&json!({"a": ["ok", "${{ .x | }}"]}), "args").unwrap_err();
        assert_eq!(e.path, "args.a[1]");
        let e = Template::parse(&json!("${{ .x"), "args.q").unwrap_err();
        assert!(e.to_string().contains("not closed"), "{e}");
        let e = t.eval(&json!({"inputs": {}}), "args");
        assert_eq!(
            e.unwrap(),
            json!({"n": null, "s": "n=null!", "lit": [1, "x"]})
        );
    }
}
