//! `qa-agent`: answers questions over indexed documents.
//!
//! Each message is a question: the `question` of a body
//! `{"question": "..."}`, or the whole body as is. The turn:
//!
//! 1. embeds it with the tool `embedder__embedder_embed`;
//! 2. searches the vector index (`vectors__vector-index_query`) with the
//!    embedding and the keyword index (`keywords__keyword-index_search`)
//!    with the text, `candidates` hits each;
//! 3. fuses the two rankings by reciprocal rank (each hit scores
//!    `1 / (60 + rank)`, rank from 1, summed over the rankings; ties by id),
//!    the same fusion as `examples/retrieval/search.plan.toml`;
//! 4. reads the `top_k` best passages (`keywords__keyword-index_get`);
//! 5. asks the model (`llm.chat`, greedy unless `temperature` is set) to
//!    answer from those passages only, citing them as `[n]`.
//!
//! It replies `{"question", "answer", "sources": [{"n", "id", "score"}],
//! "vector": [ids], "keyword": [ids]}`. The tools are the agent's grants
//! `embedder`, `vectors` and `keywords` (see `examples/retrieval/qa.toml`);
//! a tool or model error fails the turn, so the host's retries and
//! supervision apply.
//!
//! Config (`wasi:config`), all optional: `bucket` (default `retrieval`),
//! `index` (default `handbook`), `top_k` (4), `candidates` (5, at least
//! `top_k`), `model`,
//! `max_tokens` (160), `temperature`, `system_prompt`. The state is
//! `{"questions": n}`: how many questions it has answered.

wit_bindgen::generate!({
    world: "qa-agent",
    path: "wit",
    generate_all,
});

use std::collections::BTreeMap;

use exports::tessera::agent::handler::{Guest, Message, TurnOutput};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera::agent::llm::{self, ChatMessage, ChatRequest, LlmError, Role};
use tessera::agent::tools::{self, ToolError};
use wasi::config::store as config;
use wasi::logging::logging::{Level, log};

/// The system prompt when config `system_prompt` is unset.
const DEFAULT_SYSTEM_PROMPT: &str = "You answer questions about a handbook. Use only the \
numbered sources given with the question. Answer in one or two short sentences and cite \
the sources you used by their numbers in brackets, like [1]. If the sources do not hold \
the answer, say that you do not know.";

/// Reciprocal-rank fusion's constant (Cormack, Clarke and Büttcher, 2009).
const RRF_K: f64 = 60.0;

/// The logging context of every message this agent logs.
const LOG_CONTEXT: &str = "qa";

/// The component's single implementation type.
struct Component;

/// The agent's state between turns.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct State {
    /// How many questions it has answered.
    questions: u64,
}

/// What the turn reads from config.
struct Settings {
    bucket: String,
    index: String,
    top_k: u32,
    candidates: u32,
    model: Option<String>,
    max_tokens: u32,
    temperature: Option<f32>,
    system_prompt: String,
}

/// The value of config `key`; a config that cannot be read counts as unset.
fn config_value(key: &str) -> Option<String> {
    match config::get(key) {
        Ok(value) => value.filter(|v| !v.trim().is_empty()),
        Err(config::Error::Upstream(why) | config::Error::Io(why)) => {
            log(
                Level::Warn,
                LOG_CONTEXT,
                &format!("reading config `{key}`: {why}; treating it as unset"),
            );
            None
        }
    }
}

/// Config `key` parsed as a `T`, or `default` if unset.
fn config_parsed<T: std::str::FromStr>(key: &str, what: &str, default: T) -> Result<T, String> {
    match config_value(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("config `{key}` is not {what}: `{v}`")),
    }
}

impl Settings {
    fn read() -> Result<Self, String> {
        let top_k = config_parsed("top_k", "a count", 4u32)?;
        if top_k == 0 {
            return Err("config `top_k` must be at least 1".into());
        }
        let candidates = config_parsed("candidates", "a count", 5u32)?.max(top_k);
        Ok(Settings {
            bucket: config_value("bucket").unwrap_or_else(|| "retrieval".into()),
            index: config_value("index").unwrap_or_else(|| "handbook".into()),
            top_k,
            candidates,
            model: config_value("model"),
            max_tokens: config_parsed("max_tokens", "a count", 160u32)?,
            temperature: config_value("temperature")
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| format!("config `temperature` is not a number: `{v}`"))
                })
                .transpose()?,
            system_prompt: config_value("system_prompt")
                .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.into()),
        })
    }
}

fn tool_error_text(e: &ToolError) -> String {
    match e {
        ToolError::Unknown(name) => format!("no tool `{name}` is granted"),
        ToolError::InvalidArguments(why) => format!("invalid arguments: {why}"),
        ToolError::Failed(why) => why.clone(),
        ToolError::Rejected(why) => format!("rejected by a person: {why}"),
    }
}

fn llm_error_text(e: &LlmError) -> String {
    match e {
        LlmError::Denied(why) => format!("denied: {why}"),
        LlmError::BudgetExceeded(why) => format!("budget exceeded: {why}"),
        LlmError::Unavailable(why) => format!("unavailable: {why}"),
        LlmError::Rejected(why) => format!("rejected: {why}"),
        LlmError::Timeout => "timed out".into(),
        LlmError::InvalidResponse(why) => format!("invalid response: {why}"),
    }
}

/// Calls tool `name` with `args` and answers its result as JSON (the `ok`
/// value of a function returning a `result`).
fn call(name: &str, args: Value) -> Result<Value, String> {
    let text = tools::call(name, &args.to_string())
        .map_err(|e| format!("tool `{name}`: {}", tool_error_text(&e)))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("tool `{name}` answered text that is not JSON: {e}"))?;
    Ok(match value {
        Value::Object(mut o) if o.len() == 1 && o.contains_key("ok") => {
            o.remove("ok").unwrap_or(Value::Null)
        }
        other => other,
    })
}

/// A ranked hit of a search.
#[derive(Deserialize)]
struct Hit {
    id: String,
}

fn hits(name: &str, value: Value) -> Result<Vec<String>, String> {
    let hits: Vec<Hit> = serde_json::from_value(value)
        .map_err(|e| format!("tool `{name}` answered no list of hits: {e}"))?;
    Ok(hits.into_iter().map(|h| h.id).collect())
}

/// Reciprocal-rank fusion of `rankings`: the ids and their fused scores,
/// best first (ties by id).
fn fuse(rankings: &[&[String]]) -> Vec<(String, f64)> {
    let mut scores: BTreeMap<&str, f64> = BTreeMap::new();
    for ranking in rankings {
        for (rank, id) in ranking.iter().enumerate() {
            *scores.entry(id).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(String, f64)> = scores
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    fused
}

/// The question of a message body.
fn question_of(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => match o.get("question") {
            Some(Value::String(q)) => q.clone(),
            _ => body.to_string(),
        },
        _ => body.to_string(),
    }
}

fn answer(question: &str, s: &Settings) -> Result<Value, String> {
    let embedded = call("embedder__embedder_embed", json!({ "texts": [question] }))?;
    let vector = embedded
        .get(0)
        .cloned()
        .ok_or("tool `embedder__embedder_embed` answered no embedding")?;
    let by_vector = hits(
        "vectors__vector-index_query",
        call(
            "vectors__vector-index_query",
            json!({ "bucket": s.bucket, "index": s.index, "vector": vector, "k": s.candidates }),
        )?,
    )?;
    let by_keyword = hits(
        "keywords__keyword-index_search",
        call(
            "keywords__keyword-index_search",
            json!({ "bucket": s.bucket, "index": s.index, "query": question, "k": s.candidates }),
        )?,
    )?;
    let mut fused = fuse(&[&by_vector, &by_keyword]);
    fused.truncate(s.top_k as usize);
    let ids: Vec<&str> = fused.iter().map(|(id, _)| id.as_str()).collect();
    let passages = call(
        "keywords__keyword-index_get",
        json!({ "bucket": s.bucket, "index": s.index, "ids": ids }),
    )?;
    let passages = passages
        .as_array()
        .ok_or("tool `keywords__keyword-index_get` answered no list")?;
    let mut sources = String::new();
    let mut cited = Vec::new();
    for (n, ((id, score), passage)) in fused.iter().zip(passages).enumerate() {
        let text = passage
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("passage `{id}` is not in the keyword index"))?;
        sources.push_str(&format!("[{}] {}\n\n", n + 1, text.trim()));
        cited.push(json!({ "n": n + 1, "id": id, "score": score }));
    }
    log(
        Level::Info,
        LOG_CONTEXT,
        &format!("question {question:?}: passages {}", ids.join(", ")),
    );
    let request = ChatRequest {
        model: s.model.clone(),
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: s.system_prompt.clone(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
            ChatMessage {
                role: Role::User,
                content: format!("Sources:\n\n{sources}Question: {question}"),
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
        ],
        tools: Vec::new(),
        max_tokens: Some(s.max_tokens),
        temperature: s.temperature,
        top_p: None,
        seed: None,
        stop: Vec::new(),
    };
    let response = llm::chat(&request).map_err(|e| format!("llm: {}", llm_error_text(&e)))?;
    Ok(json!({
        "question": question,
        "answer": response.message.content.trim(),
        "sources": cited,
        "vector": by_vector,
        "keyword": by_keyword,
        "model": response.model,
    }))
}

impl Guest for Component {
    fn turn(state: Option<String>, message: Message) -> Result<TurnOutput, String> {
        let mut state: State = match state.as_deref() {
            None => State::default(),
            Some(text) => serde_json::from_str(text)
                .map_err(|e| format!("the state is not {{\"questions\": n}}: {e}"))?,
        };
        let settings = Settings::read()?;
        let question = question_of(&message.body);
        if question.trim().is_empty() {
            return Err("the question is empty".into());
        }
        let reply = answer(&question, &settings)?;
        state.questions += 1;
        let state = serde_json::to_string(&state).map_err(|e| format!("saving the state: {e}"))?;
        Ok(TurnOutput {
            state,
            reply: Some(reply.to_string()),
        })
    }
}

export!(Component);
