//! Host bindings of Tessera's own WIT package (`wit/agent.wit`,
//! `tessera:agent@0.1.0`): the `agents`, `tools` and `llm` interfaces of
//! its `host` world. The capabilities that serve them (`agent` for
//! `agents` and `tools`, `llm` for `llm`) each link their own interfaces.

#[allow(missing_docs)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "tessera:agent/host",
        imports: { default: async | trappable },
    });
}
