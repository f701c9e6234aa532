//! Tools: other components' functions an agent's manifest grants
//! (`[agent.tools.<name>]`), described to the model from their WIT schemas
//! (the same descriptions and input schemas MCP clients see), each call a
//! journal run of its own under the tool's grants, linked to the turn.

use std::sync::Arc;

use serde_json::Value;
use tessera_journal::{AgentTurn, Caller};
use tessera_runtime::capability::agent::{
    ComponentSpec, ToolAnswer, ToolError, ToolSpec, tool_function_name,
};
use tessera_runtime::{CallFailure, CallOptions, Grants, LoadedComponent};

use super::Inner;

/// Loads a component off the async workers (loading may compile).
pub(crate) async fn load(
    inner: &Arc<Inner>,
    spec: &ComponentSpec,
) -> Result<Arc<LoadedComponent>, String> {
    let components = inner.components.clone();
    let r = super::component_ref(spec);
    tokio::task::spawn_blocking(move || components.load(&r, std::path::Path::new("/")))
        .await
        .map_err(|e| format!("loading `{}` failed: {e}", spec.component))?
}

/// The tools `grants` offer, sorted by name.
pub(crate) async fn list(inner: &Arc<Inner>, grants: &Grants) -> Vec<ToolSpec> {
    let mut out = Vec::new();
    for (grant_name, grant) in &grants.agent.tools {
        let Ok(c) = load(inner, &grant.component).await else {
            continue;
        };
        for (f, exposure) in c.exposures() {
            if !exposure.served() {
                continue;
            }
            let short = f.short_name();
            if !grant.offers(&short) {
                continue;
            }
            out.push(ToolSpec {
                name: format!("{grant_name}__{}", tool_function_name(&short)),
                description: exposure
                    .description
                    .clone()
                    .unwrap_or_else(|| f.tool_description()),
                parameters: f.params_schema.to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Calls `function` of the tool component as a journal run linked to the
/// turn.
pub(crate) async fn call(
    inner: &Arc<Inner>,
    spec: &ComponentSpec,
    function: &str,
    args: &Value,
    options: CallOptions,
    caller: Caller,
    link: AgentTurn,
) -> ToolAnswer {
    let failed = |m: String| ToolAnswer::Done {
        result: Err(ToolError::Failed(m)),
        run: None,
    };
    let loaded = match load(inner, spec).await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    // The tool name's form of an interface's function (`vector-index_query`)
    // first, then any name the runtime resolves.
    let by_tool_name = loaded
        .exposures()
        .map(|(f, _)| f)
        .find(|f| tool_function_name(&f.short_name()) == function);
    let f = match by_tool_name.map_or_else(|| loaded.function(function), Ok) {
        Ok(f) => f,
        Err(e) => {
            return ToolAnswer::Done {
                result: Err(ToolError::Unknown(e.to_string())),
                run: None,
            };
        }
    };
    if let Err(e) = loaded.arguments(f, args) {
        return ToolAnswer::Done {
            result: Err(ToolError::InvalidArguments(e.to_string())),
            run: None,
        };
    }
    let short = f.short_name();
    let recorded = tessera_journal::record_call_linked(
        &inner.journal,
        &loaded,
        &short,
        args,
        options,
        Some(caller),
        None,
        Some(link),
        None,
    )
    .await;
    let (run, outcome) = match recorded {
        Ok(r) => r,
        Err(e) => return failed(e.to_string()),
    };
    let result = match outcome.result {
        Ok(v) if outcome.guest_error => Err(ToolError::Failed(match v.get("err") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => v.to_string(),
        })),
        Ok(v) => Ok(match v.get("ok") {
            Some(ok) if f.returns_result() => ok.to_string(),
            _ => v.to_string(),
        }),
        Err(CallFailure::Trap { message, .. }) => Err(ToolError::Failed(message)),
        Err(other) => Err(ToolError::Failed(other.to_string())),
    };
    ToolAnswer::Done {
        result,
        run: Some(run),
    }
}
