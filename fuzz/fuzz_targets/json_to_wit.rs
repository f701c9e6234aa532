//! Arbitrary JSON → component values, against every parameter type of every
//! function of `hello` (its `types` interface covers every WIT type).
//!
//! Each input that parses as JSON is converted
//!
//! * as an argument object, for every function (`LoadedComponent::arguments`);
//! * as a single value, against every parameter type of every function
//!   (`json::to_val`), so any JSON reaches every type without having to be
//!   wrapped in `{"v": …}` first.
//!
//! Neither may panic. When a conversion succeeds, the value must survive a
//! round trip: `from_val` gives JSON that `to_val` accepts again, giving an
//! equal value (floats compared bit for bit, NaN equal to NaN), and that
//! JSON is a fixpoint (converting it once more gives the same JSON). The
//! input itself need not come back: `1.0` for a `u8` comes back as `1`, an
//! omitted `option` field as `null`, `1e2` as `100`; the round trip starts
//! from the first value, which is what a guest would receive.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tessera_runtime::json::{from_val, to_val};
use tessera_runtime::{Grants, LoadedComponent, Runtime, RuntimeConfig};
use wasmtime::component::{Type, Val};

fn hello() -> &'static LoadedComponent {
    static HELLO: OnceLock<LoadedComponent> = OnceLock::new();
    HELLO.get_or_init(|| {
        let runtime = Runtime::new(RuntimeConfig {
            pooling: false,
            ..RuntimeConfig::default()
        })
        .expect("cannot create the runtime");
        runtime
            .load_file(&tessera_fuzz::component("hello"), Grants::deny_all())
            .expect("cannot load hello")
    })
}

/// `v` (converted from `input` for type `ty`) survives JSON and back.
fn round_trip(v: &Val, ty: &Type, input: &Value, what: &str) {
    let json = from_val(v, ty);
    let again = to_val(&json, ty, "$").unwrap_or_else(|e| {
        panic!("{what}: {input} converted to {v:?}, whose JSON {json} is refused: {e}")
    });
    assert!(
        again == *v,
        "{what}: {input} converted to {v:?}, whose JSON {json} converts to {again:?}"
    );
    let json_again = from_val(&again, ty);
    assert_eq!(json_again, json, "{what}: JSON of {v:?} is not a fixpoint");
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let hello = hello();
    for f in hello.functions() {
        let name = f.short_name();
        if let Ok(vals) = hello.arguments(f, &input) {
            assert_eq!(
                vals.len(),
                f.params.len(),
                "{name}: one value per parameter"
            );
            for ((param, ty), v) in f.params.iter().zip(&vals) {
                let given = input.get(param).unwrap_or(&Value::Null);
                round_trip(v, ty, given, &format!("{name}({param})"));
            }
        }
        for (param, ty) in &f.params {
            if let Ok(v) = to_val(&input, ty, "$") {
                round_trip(&v, ty, &input, &format!("{name}({param}) alone"));
            }
        }
    }
});
