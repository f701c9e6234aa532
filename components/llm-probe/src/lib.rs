//! `llm-probe`: passes its requests to `tessera:agent/llm.chat` and returns
//! the answers unchanged, so the runtime's tests can exercise the `llm`
//! capability with any request, one or several per call.

wit_bindgen::generate!({
    world: "llm-probe",
    path: "wit",
    generate_all,
});

use tessera::agent::llm;

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn chat(request: ChatRequest) -> Result<ChatResponse, LlmError> {
        llm::chat(&request)
    }

    fn chat_all(requests: Vec<ChatRequest>) -> Vec<Result<ChatResponse, LlmError>> {
        requests.iter().map(llm::chat).collect()
    }
}

export!(Component);
