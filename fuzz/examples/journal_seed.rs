//! Writes the seeds of the `journal_import` fuzz target: real `hello` runs
//! recorded with `tessera_journal::record_call`, exported as a user would
//! export them.
//!
//! ```text
//! cd fuzz && cargo run --release --example journal_seed [-- <dir>]
//! ```
//!
//! `<dir>` defaults to `fuzz/corpus/journal_import`. The line holding the
//! component's own bytes is left out of each seed: import does not need it
//! (a run imported without it replays with `--component`), and a 100 KB
//! line would make every fuzzing input that long.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use tessera_journal::JournalStore;
use tessera_runtime::{Grants, Runtime, RuntimeConfig};

/// (seed file, manifest, function, arguments).
const RUNS: &[(&str, &str, &str, &str)] = &[
    ("seed-greet", "", "greet", r#"{"name": "Ada"}"#),
    // stdout, stderr and a log record; the message is long enough for
    // stdout to be stored as a blob.
    (
        "seed-chatter",
        "",
        "chatter",
        r#"{"msg": "a message long enough that its bytes, hex-encoded, are stored as a blob of the journal"}"#,
    ),
    // Clocks, random bytes and logs, under grants with every section.
    (
        "seed-busy-host",
        "args = [\"x\"]\ndeterministic = true\nseed = 3\n\n[limits]\nfuel = 100000000\n\n[env]\nset = { A = \"1\" }\n\n[config]\nvalues = { k = \"v\" }\n\n[http]\nallowed_outbound_hosts = [\"https://example.com\"]\n",
        "busy-host",
        r#"{"rounds": 2}"#,
    ),
    // A trap: the end record has no value.
    ("seed-fail", "", "fail", r#"{"msg": "boom"}"#),
];

#[tokio::main]
async fn main() {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/journal_import"));
    std::fs::create_dir_all(&out).expect("cannot create the seed directory");
    let data = tempfile::tempdir().expect("cannot create a temp dir");
    let store = Arc::new(JournalStore::open(data.path()).expect("cannot open a journal"));
    let runtime = Runtime::new(RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    })
    .expect("cannot create the runtime");
    let hello = std::fs::read(tessera_fuzz::component("hello")).expect("cannot read hello");
    let prepared = runtime
        .prepare(hello, "components/hello.wasm")
        .expect("hello is a component");
    for (file, manifest, function, args) in RUNS {
        let grants = Grants::from_toml(manifest, "seed.toml", data.path()).expect("valid manifest");
        let component = runtime.load(&prepared, grants).expect("cannot load hello");
        let args: Value = serde_json::from_str(args).expect("valid arguments");
        let (id, _) = tessera_journal::record_call(&store, &component, function, &args)
            .await
            .expect("the call is recorded");
        let mut export = Vec::new();
        store.export(&id, &mut export).expect("the run exports");
        let component_blob = json!(component.digest());
        let seed: String = String::from_utf8(export)
            .expect("exports are UTF-8")
            .lines()
            .filter(|line| {
                let v: Value = serde_json::from_str(line).expect("export lines are JSON");
                v.get("blob") != Some(&component_blob)
            })
            .flat_map(|line| [line, "\n"])
            .collect();
        let path = out.join(file);
        std::fs::write(&path, &seed).expect("cannot write the seed");
        println!("{:>6} bytes  {}", seed.len(), path.display());
    }
}
