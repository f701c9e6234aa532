//! JSON ↔ component values, driven by the component's own types.
//!
//! The mapping (the same one [`crate::schema`] describes as JSON Schema):
//!
//! | WIT | JSON |
//! | --- | --- |
//! | `bool` | `true`/`false` |
//! | `u8`…`s64` | integer within the type's exact range |
//! | `f32`, `f64` | number (also `"NaN"`, `"Infinity"`, `"-Infinity"`) |
//! | `char` | string of exactly one Unicode scalar |
//! | `string` | string |
//! | `list<T>` | array |
//! | `tuple<…>` | array of fixed length |
//! | `record` | object with every field (an `option` field may be omitted) |
//! | `variant` | `"case"` for a case without payload, `{"case": payload}` otherwise |
//! | `enum` | `"case"` |
//! | `option<T>` | `null` or `T`; when `T` itself may be `null`, `{"some": T}` |
//! | `result<T, E>` | `{"ok": T}` or `{"err": E}` (`null` payload when absent) |
//! | `flags` | array of set flag names |
//!
//! Arguments are validated before the guest runs; an error names the JSON
//! path and the expected type: `$.items[3].id: expected u8 (0..=255), got 300`.

use serde_json::{Map, Number, Value};
use wasmtime::component::{Type, Val};

/// An argument that does not match the function's parameter types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ArgError {
    /// JSON path of the offending value, `$` being the argument object.
    pub path: String,
    /// What was expected and what was found.
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> ArgError {
    ArgError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// A short description of a JSON value for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() <= 40 => format!("{s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

/// A human name for a type, used in "expected …" messages.
pub fn type_name(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8 (-128..=127)".into(),
        Type::U8 => "u8 (0..=255)".into(),
        Type::S16 => "s16 (-32768..=32767)".into(),
        Type::U16 => "u16 (0..=65535)".into(),
        Type::S32 => format!("s32 ({}..={})", i32::MIN, i32::MAX),
        Type::U32 => format!("u32 (0..={})", u32::MAX),
        Type::S64 => format!("s64 ({}..={})", i64::MIN, i64::MAX),
        Type::U64 => format!("u64 (0..={})", u64::MAX),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char (a string of one character)".into(),
        Type::String => "string".into(),
        Type::List(_) | Type::FixedLengthList(_) => "list (an array)".into(),
        Type::Map(_) => "map (an array of [key, value] pairs)".into(),
        Type::Record(_) => "record (an object)".into(),
        Type::Tuple(t) => format!("tuple (an array of {} items)", t.types().len()),
        Type::Variant(v) => format!(
            "variant (one of {})",
            v.cases()
                .map(|c| c.name.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Enum(e) => format!("enum (one of {})", e.names().collect::<Vec<_>>().join(", ")),
        Type::Option(_) => "option (null or a value)".into(),
        Type::Result(_) => "result ({\"ok\": …} or {\"err\": …})".into(),
        Type::Flags(f) => format!(
            "flags (an array of names from {})",
            f.names().collect::<Vec<_>>().join(", ")
        ),
        Type::Own(_) | Type::Borrow(_) => "resource".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

/// Whether `ty` has a value whose JSON form is `null` (so an enclosing
/// `option` must use the `{"some": …}` form).
pub fn can_be_null(ty: &Type) -> bool {
    matches!(ty, Type::Option(_))
}

/// Why a type cannot cross the JSON boundary, if it cannot.
pub fn not_json_callable(ty: &Type) -> Option<String> {
    match ty {
        Type::Own(_) | Type::Borrow(_) => {
            Some("resources are handles into a live instance and are not callable from JSON".into())
        }
        Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            Some("async futures, streams and error contexts are not callable from JSON".into())
        }
        Type::List(l) => not_json_callable(&l.ty()),
        Type::FixedLengthList(l) => not_json_callable(&l.ty()),
        Type::Map(m) => not_json_callable(&m.key()).or_else(|| not_json_callable(&m.value())),
        Type::Option(o) => not_json_callable(&o.ty()),
        Type::Result(r) => r
            .ok()
            .and_then(|t| not_json_callable(&t))
            .or_else(|| r.err().and_then(|t| not_json_callable(&t))),
        Type::Record(r) => r.fields().find_map(|f| not_json_callable(&f.ty)),
        Type::Tuple(t) => t.types().find_map(|t| not_json_callable(&t)),
        Type::Variant(v) => v
            .cases()
            .find_map(|c| c.ty.as_ref().and_then(not_json_callable)),
        _ => None,
    }
}

fn int<T: TryFrom<i128>>(v: &Value, ty: &Type, path: &str) -> Result<T, ArgError> {
    let expected = || {
        err(
            path,
            format!("expected {}, got {}", type_name(ty), describe(v)),
        )
    };
    let n = match v {
        Value::Number(n) => n,
        _ => return Err(expected()),
    };
    let wide: i128 = if let Some(i) = n.as_i64() {
        i.into()
    } else if let Some(u) = n.as_u64() {
        u.into()
    } else {
        // A float: accept only if it is integral (1.0), never silently truncate.
        let f = n.as_f64().ok_or_else(expected)?;
        if f.fract() != 0.0 || !f.is_finite() || f.abs() > 1.8e19 {
            return Err(expected());
        }
        f as i128
    };
    T::try_from(wide).map_err(|_| expected())
}

fn float(v: &Value, ty: &Type, path: &str) -> Result<f64, ArgError> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| {
            err(
                path,
                format!("expected {}, got {}", type_name(ty), describe(v)),
            )
        }),
        Value::String(s) if s == "NaN" => Ok(f64::NAN),
        Value::String(s) if s == "Infinity" => Ok(f64::INFINITY),
        Value::String(s) if s == "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => Err(err(
            path,
            format!("expected {}, got {}", type_name(ty), describe(v)),
        )),
    }
}

/// Converts one JSON value to a component value of type `ty`.
pub fn to_val(v: &Value, ty: &Type, path: &str) -> Result<Val, ArgError> {
    let mismatch = || {
        err(
            path,
            format!("expected {}, got {}", type_name(ty), describe(v)),
        )
    };
    Ok(match ty {
        Type::Bool => Val::Bool(v.as_bool().ok_or_else(mismatch)?),
        Type::S8 => Val::S8(int(v, ty, path)?),
        Type::U8 => Val::U8(int(v, ty, path)?),
        Type::S16 => Val::S16(int(v, ty, path)?),
        Type::U16 => Val::U16(int(v, ty, path)?),
        Type::S32 => Val::S32(int(v, ty, path)?),
        Type::U32 => Val::U32(int(v, ty, path)?),
        Type::S64 => Val::S64(int(v, ty, path)?),
        Type::U64 => Val::U64(int(v, ty, path)?),
        Type::Float32 => {
            let f = float(v, ty, path)?;
            // Out of range means rounding to infinity: up to half an ulp
            // past f32::MAX rounds to f32::MAX, which `from_val` prints as
            // 3.4028235e38, a little above it.
            if f.is_finite() && (f as f32).is_infinite() {
                return Err(err(path, format!("{f} is out of range for f32")));
            }
            Val::Float32(f as f32)
        }
        Type::Float64 => Val::Float64(float(v, ty, path)?),
        Type::Char => {
            let s = v.as_str().ok_or_else(mismatch)?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(mismatch()),
            }
        }
        Type::String => Val::String(v.as_str().ok_or_else(mismatch)?.to_string()),
        Type::List(l) => {
            let items = v.as_array().ok_or_else(mismatch)?;
            let elem = l.ty();
            Val::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| to_val(x, &elem, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::FixedLengthList(l) => {
            let items = v.as_array().ok_or_else(mismatch)?;
            if items.len() != l.len() as usize {
                return Err(err(
                    path,
                    format!("expected exactly {} items, got {}", l.len(), items.len()),
                ));
            }
            let elem = l.ty();
            Val::FixedLengthList(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| to_val(x, &elem, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Map(m) => {
            let items = v.as_array().ok_or_else(mismatch)?;
            let (kt, vt) = (m.key(), m.value());
            let mut pairs = Vec::with_capacity(items.len());
            for (i, pair) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                match pair.as_array().map(Vec::as_slice) {
                    Some([k, x]) => pairs.push((
                        to_val(k, &kt, &format!("{p}[0]"))?,
                        to_val(x, &vt, &format!("{p}[1]"))?,
                    )),
                    _ => return Err(err(&p, "expected a [key, value] pair")),
                }
            }
            Val::Map(pairs)
        }
        Type::Record(r) => {
            let obj = v.as_object().ok_or_else(mismatch)?;
            let mut fields = Vec::new();
            for f in r.fields() {
                let p = format!("{path}.{}", f.name);
                match obj.get(f.name) {
                    Some(x) => fields.push((f.name.to_string(), to_val(x, &f.ty, &p)?)),
                    None if matches!(f.ty, Type::Option(_)) => {
                        fields.push((f.name.to_string(), Val::Option(None)))
                    }
                    None => {
                        return Err(err(
                            &p,
                            format!("missing field of type {}", type_name(&f.ty)),
                        ));
                    }
                }
            }
            if let Some(extra) = obj
                .keys()
                .find(|k| !r.fields().any(|f| f.name == k.as_str()))
            {
                return Err(err(
                    &format!("{path}.{extra}"),
                    format!(
                        "unknown field; the record has {}",
                        r.fields().map(|f| f.name).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            Val::Record(fields)
        }
        Type::Tuple(t) => {
            let items = v.as_array().ok_or_else(mismatch)?;
            if items.len() != t.types().len() {
                return Err(mismatch());
            }
            Val::Tuple(
                items
                    .iter()
                    .zip(t.types())
                    .enumerate()
                    .map(|(i, (x, ty))| to_val(x, &ty, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Variant(var) => {
            let (name, payload) = tagged(v).ok_or_else(mismatch)?;
            let case = var.cases().find(|c| c.name == name).ok_or_else(mismatch)?;
            match (case.ty, payload) {
                (None, None) | (None, Some(Value::Null)) => Val::Variant(name.to_string(), None),
                (Some(ty), Some(p)) => Val::Variant(
                    name.to_string(),
                    Some(Box::new(to_val(p, &ty, &format!("{path}.{name}"))?)),
                ),
                (Some(ty), None) => {
                    return Err(err(
                        path,
                        format!(
                            "case `{name}` needs a payload of type {}: {{\"{name}\": …}}",
                            type_name(&ty)
                        ),
                    ));
                }
                (None, Some(_)) => {
                    return Err(err(path, format!("case `{name}` has no payload")));
                }
            }
        }
        Type::Enum(e) => {
            let s = v.as_str().ok_or_else(mismatch)?;
            if !e.names().any(|n| n == s) {
                return Err(mismatch());
            }
            Val::Enum(s.to_string())
        }
        Type::Option(o) => {
            let inner = o.ty();
            if v.is_null() {
                Val::Option(None)
            } else if can_be_null(&inner) {
                let obj = v
                    .as_object()
                    .filter(|o| o.len() == 1)
                    .ok_or_else(|| err(path, "expected null or {\"some\": …} (nested option)"))?;
                let x = obj
                    .get("some")
                    .ok_or_else(|| err(path, "expected null or {\"some\": …} (nested option)"))?;
                Val::Option(Some(Box::new(to_val(x, &inner, &format!("{path}.some"))?)))
            } else {
                Val::Option(Some(Box::new(to_val(v, &inner, path)?)))
            }
        }
        Type::Result(r) => {
            let (name, payload) = tagged(v).ok_or_else(mismatch)?;
            let (ty, is_ok) = match name {
                "ok" => (r.ok(), true),
                "err" => (r.err(), false),
                _ => return Err(mismatch()),
            };
            let inner = match (ty, payload) {
                (None, None) | (None, Some(Value::Null)) => None,
                (Some(ty), Some(p)) => Some(Box::new(to_val(p, &ty, &format!("{path}.{name}"))?)),
                (Some(ty), None) => {
                    return Err(err(
                        path,
                        format!("`{name}` needs a payload of type {}", type_name(&ty)),
                    ));
                }
                (None, Some(_)) => {
                    return Err(err(path, format!("`{name}` has no payload; use null")));
                }
            };
            Val::Result(if is_ok { Ok(inner) } else { Err(inner) })
        }
        Type::Flags(f) => {
            let items = v.as_array().ok_or_else(mismatch)?;
            let mut set = Vec::new();
            for (i, x) in items.iter().enumerate() {
                let name = x.as_str().filter(|s| f.names().any(|n| n == *s));
                match name {
                    Some(n) if !set.iter().any(|s: &String| s == n) => set.push(n.to_string()),
                    Some(n) => {
                        return Err(err(&format!("{path}[{i}]"), format!("flag `{n}` repeated")));
                    }
                    None => {
                        return Err(err(
                            &format!("{path}[{i}]"),
                            format!("expected {}, got {}", type_name(ty), describe(x)),
                        ));
                    }
                }
            }
            Val::Flags(set)
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(err(
                path,
                not_json_callable(ty).unwrap_or_else(|| "not callable from JSON".into()),
            ));
        }
    })
}

/// Reads `"case"` or `{"case": payload}`.
fn tagged(v: &Value) -> Option<(&str, Option<&Value>)> {
    match v {
        Value::String(s) => Some((s.as_str(), None)),
        Value::Object(o) if o.len() == 1 => o.iter().next().map(|(k, x)| (k.as_str(), Some(x))),
        _ => None,
    }
}

fn float_json(f: f64) -> Value {
    if f.is_nan() {
        Value::String("NaN".into())
    } else if f.is_infinite() {
        Value::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Converts a component value of type `ty` to JSON.
pub fn from_val(v: &Val, ty: &Type) -> Value {
    match (v, ty) {
        (Val::Bool(b), _) => Value::Bool(*b),
        (Val::S8(n), _) => (*n).into(),
        (Val::U8(n), _) => (*n).into(),
        (Val::S16(n), _) => (*n).into(),
        (Val::U16(n), _) => (*n).into(),
        (Val::S32(n), _) => (*n).into(),
        (Val::U32(n), _) => (*n).into(),
        (Val::S64(n), _) => (*n).into(),
        (Val::U64(n), _) => (*n).into(),
        (Val::Float32(f), _) => {
            // Print the shortest decimal that round-trips as f32.
            if f.is_finite() {
                format!("{f}")
                    .parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            } else {
                float_json(*f as f64)
            }
        }
        (Val::Float64(f), _) => float_json(*f),
        (Val::Char(c), _) => Value::String(c.to_string()),
        (Val::String(s), _) => Value::String(s.clone()),
        (Val::List(items), Type::List(l)) => {
            let t = l.ty();
            Value::Array(items.iter().map(|x| from_val(x, &t)).collect())
        }
        (Val::FixedLengthList(items), Type::FixedLengthList(l)) => {
            let t = l.ty();
            Value::Array(items.iter().map(|x| from_val(x, &t)).collect())
        }
        (Val::Map(pairs), Type::Map(m)) => {
            let (kt, vt) = (m.key(), m.value());
            Value::Array(
                pairs
                    .iter()
                    .map(|(k, x)| Value::Array(vec![from_val(k, &kt), from_val(x, &vt)]))
                    .collect(),
            )
        }
        (Val::Record(fields), Type::Record(r)) => {
            let mut obj = Map::new();
            for ((name, x), f) in fields.iter().zip(r.fields()) {
                obj.insert(name.clone(), from_val(x, &f.ty));
            }
            Value::Object(obj)
        }
        (Val::Tuple(items), Type::Tuple(t)) => Value::Array(
            items
                .iter()
                .zip(t.types())
                .map(|(x, t)| from_val(x, &t))
                .collect(),
        ),
        (Val::Variant(name, payload), Type::Variant(var)) => match payload {
            None => Value::String(name.clone()),
            Some(p) => {
                let case_ty = var.cases().find(|c| c.name == name).and_then(|c| c.ty);
                let inner = case_ty.map(|t| from_val(p, &t)).unwrap_or(Value::Null);
                single(name, inner)
            }
        },
        (Val::Enum(name), _) => Value::String(name.clone()),
        (Val::Option(None), _) => Value::Null,
        (Val::Option(Some(x)), Type::Option(o)) => {
            let inner = o.ty();
            let j = from_val(x, &inner);
            if can_be_null(&inner) {
                single("some", j)
            } else {
                j
            }
        }
        (Val::Result(r), Type::Result(rt)) => match r {
            Ok(x) => single(
                "ok",
                match (x, rt.ok()) {
                    (Some(x), Some(t)) => from_val(x, &t),
                    _ => Value::Null,
                },
            ),
            Err(x) => single(
                "err",
                match (x, rt.err()) {
                    (Some(x), Some(t)) => from_val(x, &t),
                    _ => Value::Null,
                },
            ),
        },
        (Val::Flags(names), _) => {
            Value::Array(names.iter().map(|n| Value::String(n.clone())).collect())
        }
        (Val::Resource(_), _) => Value::String("<resource>".into()),
        _ => Value::Null,
    }
}

fn single(key: &str, v: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_string(), v);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by the `json_to_wit` fuzz target: `3.4028234e38` converted to
    /// `f32::MAX`, whose JSON (`3.4028235e38`) was then refused.
    #[test]
    fn f32_extremes_round_trip() {
        for (input, expected) in [
            (json!(3.4028234e38), f32::MAX),
            (json!(-3.4028234e38), f32::MIN),
            (json!(3.4028235e38), f32::MAX),
            (json!(1e-46), 0.0),
        ] {
            let v = to_val(&input, &Type::Float32, "$").unwrap();
            assert_eq!(v, Val::Float32(expected), "{input}");
            let back = from_val(&v, &Type::Float32);
            assert_eq!(
                to_val(&back, &Type::Float32, "$"),
                Ok(v),
                "{input} → {back}"
            );
        }
        for too_big in [json!(3.41e38), json!(-1e39), json!(1e300)] {
            let e = to_val(&too_big, &Type::Float32, "$").unwrap_err();
            assert!(e.message.contains("out of range for f32"), "{e}");
        }
    }
}
