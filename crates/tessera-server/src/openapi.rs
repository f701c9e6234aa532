//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.
//! [`ROUTES`] lists the same operations; a test checks both against the
//! real router.

use serde_json::{Value, json};

/// Every operation: (method, path template, scope, summary).
pub const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("get", "/v1/health", "none", "Liveness"),
    ("get", "/openapi.json", "none", "This document"),
    ("get", "/v1/components", "call", "List components"),
    (
        "post",
        "/v1/components",
        "manage",
        "Add a component (or a new version) from a server-side path",
    ),
    (
        "get",
        "/v1/components/{name}",
        "call",
        "Inspect a component: versions and function schemas",
    ),
    (
        "put",
        "/v1/components/{name}",
        "manage",
        "Upload a component (or a new version), base64 in JSON",
    ),
    (
        "delete",
        "/v1/components/{name}",
        "manage",
        "Remove a component; calls in flight finish",
    ),
    (
        "post",
        "/v1/components/{name}/activate",
        "manage",
        "Activate a version (hot swap)",
    ),
    (
        "post",
        "/v1/components/{name}/rollback",
        "manage",
        "Go back to the previously active version",
    ),
    (
        "post",
        "/v1/components/{name}/call/{function}",
        "call",
        "Call a function with JSON arguments",
    ),
    ("get", "/v1/runs", "read", "List recorded runs"),
    ("get", "/v1/runs/{id}", "read", "Show a run's journal"),
    (
        "post",
        "/v1/runs/{id}/replay",
        "read",
        "Replay a run offline",
    ),
    (
        "get",
        "/v1/audit",
        "read",
        "Stream audit events (server-sent events)",
    ),
];

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "enum": [
                        "unauthorized", "forbidden", "body_too_large", "overloaded",
                        "component_busy", "no_such_component", "no_such_version",
                        "no_such_function", "no_such_run", "invalid_name", "bad_json",
                        "bad_arguments", "not_callable", "bad_manifest", "bad_component",
                        "denied", "limit", "trap", "registry", "journal", "engine", "tokens"
                    ]},
                    "message": { "type": "string" },
                    "path": { "type": "string", "description": "JSON path of the offending argument" },
                    "grant": { "type": "string", "description": "the capability that denied" },
                    "limit": { "description": "the limit involved" },
                    "run_id": { "type": "string" }
                }
            }
        }
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, scope, summary) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "summary": summary,
            "operationId": format!("{method}{}", path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": {
                "200": { "description": "Success", "content": { "application/json": {} } },
                "default": {
                    "description": "Error",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        });
        if *scope != "none" {
            op["security"] = json!([{ "bearer": [scope] }]);
            op["x-tessera-scope"] = json!(scope);
        }
        if *method == "post" || *method == "put" {
            op["requestBody"] = json!({ "required": false, "content": { "application/json": {} } });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tessera API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Components as typed tools: register, hot-swap, call from JSON, and read the journal and audit stream. The same tools are served over MCP (streamable HTTP) at /mcp, with the `call` scope."
        },
        "paths": paths,
        "components": {
            "schemas": { "Error": error_schema() },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}
