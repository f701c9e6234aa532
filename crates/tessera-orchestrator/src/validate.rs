//! Checking a plan against its components before it runs: every step's
//! component loads and has its function, the arguments name the function's
//! parameters (all the required ones), literal arguments and plain
//! references (`${{ .steps.fetch.output.body }}`, `${{ .inputs.n }}`) have
//! the types the parameters take — read from the components' WIT types as
//! JSON Schemas — references into a step's output name fields it has, and a
//! literal `bucket` argument of a key-value component names a granted
//! bucket.
//!
//! Expressions other than plain paths are not typed (jq can compute
//! anything); they are checked when they run.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::expr::{Expr, Template};
use crate::plan::{ComponentRef, Plan, PlanError, Step};

/// What validation needs to know about a step's function.
#[derive(Debug, Clone)]
pub struct Signature {
    /// JSON Schema of the argument object.
    pub params: Value,
    /// JSON Schema of the result.
    pub result: Value,
    /// Whether the result is a WIT `result` (the output is its `ok` value).
    pub returns_result: bool,
    /// The buckets the component is granted, when it imports
    /// `wasi:keyvalue` (`None`: it does not).
    pub buckets: Option<BTreeSet<String>>,
}

/// Where validation finds components' signatures.
pub trait Catalog {
    /// The signature of `function` of the step's component.
    fn signature(
        &self,
        component: &ComponentRef,
        base: &Path,
        function: &str,
    ) -> Result<Signature, SignatureError>;
}

/// Why a signature could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The component cannot be found or loaded.
    Component(String),
    /// It has no such function.
    Function(String),
}

/// The JSON types a schema admits (`None`: unknown, anything).
fn types_of(schema: &Value) -> Option<BTreeSet<&'static str>> {
    const ALL: [&str; 7] = [
        "null", "boolean", "integer", "number", "string", "array", "object",
    ];
    let named = |t: &str| ALL.iter().copied().find(|a| *a == t);
    if let Some(t) = schema.get("type") {
        return match t {
            Value::String(s) => named(s).map(|n| BTreeSet::from([n])),
            Value::Array(a) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().and_then(named))
                    .collect(),
            ),
            _ => None,
        };
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return Some(e.iter().map(json_type).collect());
    }
    if let Some(c) = schema.get("const") {
        return Some(BTreeSet::from([json_type(c)]));
    }
    for k in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(k).and_then(Value::as_array) {
            let mut out = BTreeSet::new();
            for b in branches {
                out.extend(types_of(b)?);
            }
            return Some(out);
        }
    }
    None
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a value of one of `from` types can be one of `to`.
fn compatible(from: &BTreeSet<&str>, to: &BTreeSet<&str>) -> bool {
    from.iter().any(|f| {
        to.contains(f)
            || (*f == "integer" && to.contains("number"))
            || (*f == "number" && to.contains("integer"))
    })
}

fn describe(types: &BTreeSet<&str>) -> String {
    types.iter().copied().collect::<Vec<_>>().join(" or ")
}

/// The schema of a step's output: the `ok` branch of a WIT result, a list
/// of them for a fan-out.
fn output_schema(step: &Step, sig: &Signature) -> Value {
    let one = if sig.returns_result {
        sig.result
            .get("oneOf")
            .and_then(|b| b.get(0))
            .and_then(|ok| ok.pointer("/properties/ok"))
            .cloned()
            .unwrap_or(Value::Null)
    } else {
        sig.result.clone()
    };
    if step.for_each.is_some() {
        serde_json::json!({"type": "array", "items": one})
    } else {
        one
    }
}

/// Follows `fields` into `schema` (objects by property, arrays by
/// `items`); `Err` names the first field the schema does not have.
fn follow<'a>(
    mut schema: &'a Value,
    fields: &[String],
) -> Result<Option<&'a Value>, (String, Vec<String>)> {
    for f in fields {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            match props.get(f) {
                Some(s) => schema = s,
                None => return Err((f.clone(), props.keys().cloned().collect())),
            }
        } else {
            // Not a record as far as the schema says: no more to check.
            return Ok(None);
        }
    }
    Ok(Some(schema))
}

/// Checks `plan` against its components; every problem found, each naming
/// the file, the step and the field.
pub fn check(plan: &Plan, catalog: &dyn Catalog) -> Vec<PlanError> {
    let mut errors = Vec::new();
    let err = |place: String, message: String| PlanError {
        origin: plan.origin.clone(),
        place,
        message,
    };
    let mut sigs = std::collections::BTreeMap::new();
    for s in &plan.steps {
        match catalog.signature(&s.component, &plan.base, &s.function) {
            Ok(sig) => {
                sigs.insert(s.name.clone(), sig);
            }
            Err(SignatureError::Component(m)) => {
                errors.push(err(format!("steps.{}.component", s.name), m));
            }
            Err(SignatureError::Function(m)) => {
                errors.push(err(format!("steps.{}.function", s.name), m));
            }
        }
    }
    for s in &plan.steps {
        let Some(sig) = sigs.get(&s.name) else {
            continue;
        };
        let place = format!("steps.{}.args", s.name);
        let props = sig.params.get("properties").and_then(Value::as_object);
        let required: Vec<&str> = sig
            .params
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let fields: Vec<(String, ArgForm<'_>)> = match &s.args {
            Template::Literal(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), ArgForm::Literal(v)))
                .collect(),
            Template::Object(fs) => fs
                .iter()
                .map(|(k, t)| {
                    let form = match t {
                        Template::Literal(v) => ArgForm::Literal(v),
                        Template::Expr(e) => ArgForm::Expr(e),
                        _ => ArgForm::Other,
                    };
                    (k.clone(), form)
                })
                .collect(),
            _ => {
                errors.push(err(
                    place.clone(),
                    "the arguments are an object of parameters".into(),
                ));
                continue;
            }
        };
        let Some(props) = props else { continue };
        let names: Vec<&str> = props.keys().map(String::as_str).collect();
        for r in &required {
            if !fields.iter().any(|(k, _)| k == r) {
                errors.push(err(
                    place.clone(),
                    format!(
                        "`{}` takes the parameter `{r}`, which the step does not give",
                        s.function
                    ),
                ));
            }
        }
        for (k, form) in &fields {
            let field = format!("{place}.{k}");
            let Some(param) = props.get(k) else {
                errors.push(err(
                    field,
                    format!(
                        "`{}` has no parameter `{k}` (its parameters: {})",
                        s.function,
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
                continue;
            };
            let Some(want) = types_of(param) else {
                continue;
            };
            match form {
                ArgForm::Literal(v) => {
                    let have = BTreeSet::from([json_type(v)]);
                    if !compatible(&have, &want) {
                        errors.push(err(
                            field.clone(),
                            format!(
                                "{v} is {}, the parameter takes {}",
                                describe(&have),
                                describe(&want)
                            ),
                        ));
                    }
                    if k == "bucket"
                        && let (Some(buckets), Value::String(b)) = (&sig.buckets, v)
                        && !buckets.contains(b)
                    {
                        errors.push(err(
                            field,
                            format!(
                                "bucket `{b}` is not granted to the component (its buckets: {})",
                                if buckets.is_empty() {
                                    "none".to_string()
                                } else {
                                    buckets.iter().cloned().collect::<Vec<_>>().join(", ")
                                }
                            ),
                        ));
                    }
                }
                ArgForm::Expr(e) => {
                    if let Some(m) = check_reference(plan, &sigs, e, &want) {
                        errors.push(err(field, m));
                    }
                }
                ArgForm::Other => {}
            }
        }
    }
    errors
}

enum ArgForm<'a> {
    Literal(&'a Value),
    Expr(&'a Expr),
    Other,
}

/// A plain path into an input or a step's output, checked against the
/// parameter's types.
fn check_reference(
    plan: &Plan,
    sigs: &std::collections::BTreeMap<String, Signature>,
    e: &Expr,
    want: &BTreeSet<&'static str>,
) -> Option<String> {
    let path = e.plain_path()?;
    let (schema, what): (Value, String) = match path.as_slice() {
        [inputs, name] if inputs == "inputs" => {
            let Some(input) = plan.inputs.iter().find(|i| &i.name == name) else {
                return Some(format!("`{}`: the plan has no input `{name}`", e.source()));
            };
            let ty = input.ty?;
            (
                serde_json::json!({"type": ty.name()}),
                format!("input `{name}`"),
            )
        }
        [steps, name, output, rest @ ..] if steps == "steps" && output == "output" => {
            let step = plan.step(name)?;
            let sig = sigs.get(name)?;
            let out = output_schema(step, sig);
            match follow(&out, rest) {
                Err((field, fields)) => {
                    return Some(format!(
                        "`{}`: the output of step `{name}` has no field `{field}` (its fields: {})",
                        e.source(),
                        fields.join(", ")
                    ));
                }
                Ok(None) => return None,
                Ok(Some(s)) => (s.clone(), format!("`{}`", e.source())),
            }
        }
        _ => return None,
    };
    let have = types_of(&schema)?;
    if compatible(&have, want) {
        None
    } else {
        Some(format!(
            "{what} is {}, the parameter takes {}",
            describe(&have),
            describe(want)
        ))
    }
}
