//! `wasi:nn` (`wasi:nn@0.2.0-rc-2024-10-28`, the version wasmtime 48
//! ships): machine-learning inference on the host, for named models.
//!
//! **Why not `wasmtime-wasi-nn`'s host.** That crate binds the same WIT
//! straight to its backends (OpenVINO, ONNX Runtime, PyTorch: native
//! libraries). Here every host interaction goes through the gateway: a
//! graph load and each `compute` are journaled steps, so a replay answers
//! them from the journal and runs without the model; and a model is
//! granted per component, by name. So this module implements the WIT
//! itself and asks an [`NnModels`] for graphs, the way `wasmtime-wasi-nn`
//! asks its backend traits. The backend that serves them is host
//! configuration ([`HostConfig::nn`]): `tessera-models` provides one in
//! pure Rust (candle), over the models installed with `tessera models`.
//!
//! **Grant.** `[nn] models = ["minilm"]`. A model that is not granted is
//! refused with the `security` error code (and an audit event); one the
//! host does not have is a load error when the host has models, and a
//! `not-found` error when a live call finds none (a replay needs none).
//!
//! **Steps.**
//! - `nn.load` `{model}` → `{digest}` (the digest of the model's files) or
//!   the error;
//! - `nn.compute` `{model, digest, inputs: [{name, dimensions, type,
//!   sha256}]}` → the output tensors, their data recorded (long data as
//!   journal blobs), or the error.
//!
//! A guest-built graph (`graph.load` of bytes) is refused with
//! `unsupported-operation`: models come from the host, installed and
//! verified once, shared by every instance, and granted by name.
//!
//! **Limits.** A `compute` runs on a blocking thread while the guest
//! waits; it is bounded by the call's deadline (past it, the guest gets a
//! `timeout` error, and the epoch deadline traps it when it resumes). The
//! model's own memory is the host's, not the guest's: only the tensors the
//! guest holds count against its memory limit.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiCtxBuilder;

use super::{BindError, Capability, Effects, HostConfig, Section};
use crate::audit::Decision;
use crate::gateway::{Bytes, Gateway, Op, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;
use crate::policy::Interaction;

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/nn",
        world: "wasi:nn/ml",
        imports: { default: async | trappable },
        with: {
            "wasi:nn/tensor.tensor": super::TensorHandle,
            "wasi:nn/graph.graph": super::GraphHandle,
            "wasi:nn/inference.graph-execution-context": super::ContextHandle,
            "wasi:nn/errors.error": super::ErrorHandle,
        },
    });
}

use bindings::wasi::nn::errors::ErrorCode as WitCode;
use bindings::wasi::nn::graph::{ExecutionTarget, GraphEncoding};
use bindings::wasi::nn::tensor::TensorType as WitType;

/// The `wasi:nn` capability.
#[derive(Debug)]
pub struct Nn;

// ------------------------------------------------------------------ backend interface

/// The type of a tensor's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorType {
    /// IEEE half precision.
    Fp16,
    /// IEEE single precision.
    Fp32,
    /// IEEE double precision.
    Fp64,
    /// bfloat16.
    Bf16,
    /// Unsigned bytes.
    U8,
    /// 32-bit signed integers.
    I32,
    /// 64-bit signed integers.
    I64,
}

impl TensorType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TensorType::U8 => 1,
            TensorType::Fp16 | TensorType::Bf16 => 2,
            TensorType::Fp32 | TensorType::I32 => 4,
            TensorType::Fp64 | TensorType::I64 => 8,
        }
    }
}

/// A tensor: dimensions, element type and little-endian, row-major data.
#[derive(Clone, PartialEq, Eq)]
pub struct Tensor {
    /// The size of each dimension.
    pub dimensions: Vec<u32>,
    /// The element type.
    pub ty: TensorType,
    /// `product(dimensions) * ty.size()` bytes.
    pub data: Vec<u8>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({:?} {:?}, {} bytes)",
            self.ty,
            self.dimensions,
            self.data.len()
        )
    }
}

impl Tensor {
    /// Checks that the data has the size the dimensions and type say.
    pub fn check(&self) -> Result<(), String> {
        let elements = self
            .dimensions
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d as usize));
        let want = elements.and_then(|n| n.checked_mul(self.ty.size()));
        match want {
            Some(w) if w == self.data.len() => Ok(()),
            Some(w) => Err(format!(
                "dimensions {:?} of {:?} need {w} bytes of data, the tensor has {}",
                self.dimensions,
                self.ty,
                self.data.len()
            )),
            None => Err(format!("dimensions {:?} are too large", self.dimensions)),
        }
    }
}

/// The `wasi:nn` error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NnErrorCode {
    /// The guest passed an invalid argument.
    InvalidArgument,
    /// The graph's encoding is not one the backend reads.
    InvalidEncoding,
    /// The operation ran out of time.
    Timeout,
    /// The backend failed.
    RuntimeError,
    /// The operation is not supported.
    UnsupportedOperation,
    /// The graph is too large.
    TooLarge,
    /// The model is not there.
    NotFound,
    /// The model is not granted.
    Security,
    /// Anything else.
    Unknown,
}

/// A failed `wasi:nn` operation: the code the guest sees and a message
/// that names the model and what went wrong (the error's `data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct NnError {
    /// The code.
    pub code: NnErrorCode,
    /// What went wrong.
    pub message: String,
}

impl NnError {
    /// An error with `code`.
    pub fn new(code: NnErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// How a host provides models: which exist, and their loaded graphs.
/// Implementations load a model once per process and share it.
pub trait NnModels: Send + Sync + fmt::Debug {
    /// The names of the models this host has.
    fn names(&self) -> Vec<String>;

    /// The model `name`, loaded (the first time, by reading and verifying
    /// its files: this may block for a while).
    fn graph(&self, name: &str) -> Result<Arc<dyn NnGraph>, NnError>;
}

/// A loaded model.
pub trait NnGraph: Send + Sync {
    /// `sha256:<hex>` identifying the model's files.
    fn digest(&self) -> &str;

    /// One inference: named input tensors in, named output tensors out.
    /// Blocks for as long as the inference takes.
    fn compute(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, NnError>;
}

// ------------------------------------------------------------------ grant

/// The models a component may load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NnGrant {
    /// Model names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Set for a replay: every load and compute is answered from the
    /// journal, so the host need not have the models.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNn {
    #[serde(default)]
    models: Vec<String>,
}

/// Whether `name` is a valid model name: lowercase letters, digits, `-`,
/// `_` and `.`, starting with a letter or digit, at most 64 bytes.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

// ------------------------------------------------------------------ steps

/// The recorded answer of a load: which files the model was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loaded {
    /// `sha256:<hex>` of the model's files.
    pub digest: String,
}

/// `nn.load`: a graph loaded by name.
pub struct Load;

impl Op for Load {
    const CAPABILITY: &'static str = "nn";
    const NAME: &'static str = "load";
    type Request = LoadStep;
    type Response = Result<Loaded, NnError>;
}

/// The request of a load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadStep {
    /// The model name.
    pub model: String,
}

/// An input as recorded: its shape and a digest of its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDigest {
    /// The input's name.
    pub name: String,
    /// Its dimensions.
    pub dimensions: Vec<u32>,
    /// Its element type.
    #[serde(rename = "type")]
    pub ty: TensorType,
    /// `sha256:<hex>` of its data.
    pub sha256: String,
}

/// The request of a compute: the model and its inputs, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeStep {
    /// The model name.
    pub model: String,
    /// The model's digest (from its load).
    pub digest: String,
    /// The inputs.
    pub inputs: Vec<InputDigest>,
}

/// An output as recorded: everything, data included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTensor {
    /// The output's name.
    pub name: String,
    /// Its dimensions.
    pub dimensions: Vec<u32>,
    /// Its element type.
    #[serde(rename = "type")]
    pub ty: TensorType,
    /// Its data.
    pub data: Bytes,
}

/// `nn.compute`: one inference.
pub struct Compute;

impl Op for Compute {
    const CAPABILITY: &'static str = "nn";
    const NAME: &'static str = "compute";
    type Request = ComputeStep;
    type Response = Result<Vec<RecordedTensor>, NnError>;
}

// ------------------------------------------------------------------ resources

/// A guest's tensor.
#[derive(Debug)]
pub struct TensorHandle(Tensor);

/// A loaded graph: the model's name and digest, and (live) the backend's
/// graph; a replayed load has none.
#[derive(Clone)]
pub struct GraphHandle {
    model: String,
    digest: String,
    graph: Option<Arc<dyn NnGraph>>,
}

impl fmt::Debug for GraphHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphHandle")
            .field("model", &self.model)
            .field("digest", &self.digest)
            .finish()
    }
}

/// An execution context of a graph.
#[derive(Debug)]
pub struct ContextHandle(GraphHandle);

/// A `wasi:nn` error resource.
#[derive(Debug)]
pub struct ErrorHandle(NnError);

fn wit_type(t: TensorType) -> WitType {
    match t {
        TensorType::Fp16 => WitType::Fp16,
        TensorType::Fp32 => WitType::Fp32,
        TensorType::Fp64 => WitType::Fp64,
        TensorType::Bf16 => WitType::Bf16,
        TensorType::U8 => WitType::U8,
        TensorType::I32 => WitType::I32,
        TensorType::I64 => WitType::I64,
    }
}

fn from_wit_type(t: WitType) -> TensorType {
    match t {
        WitType::Fp16 => TensorType::Fp16,
        WitType::Fp32 => TensorType::Fp32,
        WitType::Fp64 => TensorType::Fp64,
        WitType::Bf16 => TensorType::Bf16,
        WitType::U8 => TensorType::U8,
        WitType::I32 => TensorType::I32,
        WitType::I64 => TensorType::I64,
    }
}

fn wit_code(c: NnErrorCode) -> WitCode {
    match c {
        NnErrorCode::InvalidArgument => WitCode::InvalidArgument,
        NnErrorCode::InvalidEncoding => WitCode::InvalidEncoding,
        NnErrorCode::Timeout => WitCode::Timeout,
        NnErrorCode::RuntimeError => WitCode::RuntimeError,
        NnErrorCode::UnsupportedOperation => WitCode::UnsupportedOperation,
        NnErrorCode::TooLarge => WitCode::TooLarge,
        NnErrorCode::NotFound => WitCode::NotFound,
        NnErrorCode::Security => WitCode::Security,
        NnErrorCode::Unknown => WitCode::Unknown,
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

// ------------------------------------------------------------------ host calls

impl HostState {
    fn nn_error<T>(&mut self, e: NnError) -> wasmtime::Result<Result<T, Resource<ErrorHandle>>> {
        Ok(Err(self.table.push(ErrorHandle(e))?))
    }
}

/// Loads `model` on a blocking thread (a first load reads and verifies its
/// files).
async fn load_live(gateway: &Gateway, model: &str) -> Result<Arc<dyn NnGraph>, NnError> {
    let Some(models) = gateway.host().nn.clone() else {
        return Err(NnError::new(
            NnErrorCode::NotFound,
            format!(
                "model `{model}`: this host has no models (install one with `tessera models add`)"
            ),
        ));
    };
    let name = model.to_string();
    tokio::task::spawn_blocking(move || models.graph(&name))
        .await
        .unwrap_or_else(|e| {
            Err(NnError::new(
                NnErrorCode::RuntimeError,
                format!("model `{model}`: loading failed: {e}"),
            ))
        })
}

impl bindings::wasi::nn::graph::Host for HostState {
    async fn load(
        &mut self,
        _builder: Vec<Vec<u8>>,
        encoding: GraphEncoding,
        _target: ExecutionTarget,
    ) -> wasmtime::Result<Result<Resource<GraphHandle>, Resource<ErrorHandle>>> {
        self.nn_error(NnError::new(
            NnErrorCode::UnsupportedOperation,
            format!(
                "graph.load of guest bytes ({encoding:?}) is not supported: models are installed on the host (`tessera models add`), granted by name (`[nn] models`) and loaded with graph.load-by-name"
            ),
        ))
    }

    async fn load_by_name(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<GraphHandle>, Resource<ErrorHandle>>> {
        let gateway = self.gateway.clone();
        let grant = &gateway.grants().nn;
        let policy = if grant.models.contains(&name) {
            gateway
                .authorize(&Interaction::Nn {
                    model: name.clone(),
                })
                .err()
        } else {
            None
        };
        let granted = grant.models.contains(&name) && policy.is_none();
        let mut span = gateway.interaction_span("nn", "load", &name);
        span.decide(if granted { "allow" } else { "deny" });
        if granted {
            gateway.audit("nn", name.clone(), Decision::Allow, None);
        } else if let Some(reason) = &policy {
            gateway.audit("nn", name.clone(), Decision::Deny, Some(reason.clone()));
        } else {
            gateway.audit(
                "nn",
                name.clone(),
                Decision::Deny,
                Some(format!(
                    "model `{name}` is not granted (add it to `[nn] models` in the manifest)"
                )),
            );
        }
        let index = gateway.reserve_index();
        let step = LoadStep {
            model: name.clone(),
        };
        let mut graph = None;
        let answer = match gateway.answer::<Load>(index, &step)? {
            Some(r) => r,
            None if !granted => Err(NnError::new(
                NnErrorCode::Security,
                policy.clone().unwrap_or_else(|| format!(
                    "model `{name}` is not granted to this component (granted: {}; add it to `[nn] models` in the manifest)",
                    if grant.models.is_empty() {
                        "none".to_string()
                    } else {
                        grant.models.join(", ")
                    }
                )),
            )),
            None => match load_live(&gateway, &name).await {
                Ok(g) => {
                    let digest = g.digest().to_string();
                    graph = Some(g);
                    Ok(Loaded { digest })
                }
                Err(e) => Err(e),
            },
        };
        gateway.report::<Load>(index, &step, &answer);
        match answer {
            Ok(loaded) => Ok(Ok(self.table.push(GraphHandle {
                model: name,
                digest: loaded.digest,
                graph,
            })?)),
            Err(e) => self.nn_error(e),
        }
    }
}

impl bindings::wasi::nn::graph::HostGraph for HostState {
    async fn init_execution_context(
        &mut self,
        graph: Resource<GraphHandle>,
    ) -> wasmtime::Result<Result<Resource<ContextHandle>, Resource<ErrorHandle>>> {
        let g = self.table.get(&graph)?.clone();
        Ok(Ok(self.table.push(ContextHandle(g))?))
    }

    async fn drop(&mut self, graph: Resource<GraphHandle>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl bindings::wasi::nn::inference::Host for HostState {}

impl bindings::wasi::nn::inference::HostGraphExecutionContext for HostState {
    async fn compute(
        &mut self,
        ctx: Resource<ContextHandle>,
        inputs: Vec<(String, Resource<TensorHandle>)>,
    ) -> wasmtime::Result<Result<Vec<(String, Resource<TensorHandle>)>, Resource<ErrorHandle>>>
    {
        let graph = self.table.get(&ctx)?.0.clone();
        let mut tensors = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            let tensor = self.table.get(&t)?.0.clone();
            tensors.push((name, tensor));
        }
        let gateway = self.gateway.clone();
        let step = ComputeStep {
            model: graph.model.clone(),
            digest: graph.digest.clone(),
            inputs: tensors
                .iter()
                .map(|(name, t)| InputDigest {
                    name: name.clone(),
                    dimensions: t.dimensions.clone(),
                    ty: t.ty,
                    sha256: sha256(&t.data),
                })
                .collect(),
        };
        let index = gateway.reserve_index();
        let answer = match gateway.answer::<Compute>(index, &step)? {
            Some(r) => r,
            None => compute_live(&gateway, &graph, tensors).await,
        };
        gateway.report::<Compute>(index, &step, &answer);
        match answer {
            Ok(outputs) => {
                let mut out = Vec::with_capacity(outputs.len());
                for o in outputs {
                    let handle = self.table.push(TensorHandle(Tensor {
                        dimensions: o.dimensions,
                        ty: o.ty,
                        data: o.data.0,
                    }))?;
                    out.push((o.name, handle));
                }
                Ok(Ok(out))
            }
            Err(e) => self.nn_error(e),
        }
    }

    async fn drop(&mut self, ctx: Resource<ContextHandle>) -> wasmtime::Result<()> {
        self.table.delete(ctx)?;
        Ok(())
    }
}

/// Runs one inference on a blocking thread, bounded by what is left of the
/// call's deadline.
async fn compute_live(
    gateway: &Gateway,
    graph: &GraphHandle,
    inputs: Vec<(String, Tensor)>,
) -> Result<Vec<RecordedTensor>, NnError> {
    let model = graph.model.clone();
    for (name, t) in &inputs {
        t.check().map_err(|m| {
            NnError::new(
                NnErrorCode::InvalidArgument,
                format!("model `{model}`, input `{name}`: {m}"),
            )
        })?;
    }
    let Some(g) = graph.graph.clone() else {
        // A graph loaded by a replay whose compute is no longer recorded
        // (a replay that goes on live past its recording).
        return Err(NnError::new(
            NnErrorCode::NotFound,
            format!("model `{model}` was not loaded in this process (its load was replayed)"),
        ));
    };
    let timeout = gateway.grants().limits.timeout_ms;
    let left = std::time::Duration::from_millis(timeout).saturating_sub(gateway.elapsed());
    let job = tokio::task::spawn_blocking(move || g.compute(&inputs));
    let outputs = match tokio::time::timeout(left, job).await {
        Err(_) => {
            return Err(NnError::new(
                NnErrorCode::Timeout,
                format!(
                    "model `{model}`: the inference did not finish within the call's deadline ({timeout} ms, limits.timeout_ms)"
                ),
            ));
        }
        Ok(Err(e)) => {
            return Err(NnError::new(
                NnErrorCode::RuntimeError,
                format!("model `{model}`: the inference failed: {e}"),
            ));
        }
        Ok(Ok(r)) => r?,
    };
    Ok(outputs
        .into_iter()
        .map(|(name, t)| RecordedTensor {
            name,
            dimensions: t.dimensions,
            ty: t.ty,
            data: Bytes(t.data),
        })
        .collect())
}

impl bindings::wasi::nn::tensor::Host for HostState {}

impl bindings::wasi::nn::tensor::HostTensor for HostState {
    async fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: WitType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<TensorHandle>> {
        Ok(self.table.push(TensorHandle(Tensor {
            dimensions,
            ty: from_wit_type(ty),
            data,
        }))?)
    }

    async fn dimensions(&mut self, t: Resource<TensorHandle>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&t)?.0.dimensions.clone())
    }

    async fn ty(&mut self, t: Resource<TensorHandle>) -> wasmtime::Result<WitType> {
        Ok(wit_type(self.table.get(&t)?.0.ty))
    }

    async fn data(&mut self, t: Resource<TensorHandle>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&t)?.0.data.clone())
    }

    async fn drop(&mut self, t: Resource<TensorHandle>) -> wasmtime::Result<()> {
        self.table.delete(t)?;
        Ok(())
    }
}

impl bindings::wasi::nn::errors::Host for HostState {}

impl bindings::wasi::nn::errors::HostError for HostState {
    async fn code(&mut self, e: Resource<ErrorHandle>) -> wasmtime::Result<WitCode> {
        Ok(wit_code(self.table.get(&e)?.0.code))
    }

    async fn data(&mut self, e: Resource<ErrorHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.0.message.clone())
    }

    async fn drop(&mut self, e: Resource<ErrorHandle>) -> wasmtime::Result<()> {
        self.table.delete(e)?;
        Ok(())
    }
}

// ------------------------------------------------------------------ the capability

impl Capability for Nn {
    const NAME: &'static str = "nn";
    const MANIFEST_KEYS: &'static [&'static str] = &["nn"];
    type Grant = NnGrant;
    type State = ();

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        type Me = wasmtime::component::HasSelf<HostState>;
        bindings::Ml::add_to_linker::<HostState, Me>(linker, |s| s)
    }

    fn grant(section: &Section<'_>) -> Result<NnGrant, ManifestError> {
        let Some(raw) = section.parse::<RawNn>("nn")? else {
            return Ok(NnGrant::default());
        };
        for (i, m) in raw.models.iter().enumerate() {
            let field = format!("nn.models[{i}]");
            if !valid_model_name(m) {
                return Err(section.invalid(
                    field,
                    format!("`{m}` is not a model name (lowercase letters, digits, `-`, `_` and `.`, at most 64 bytes)"),
                ));
            }
            if raw.models[..i].contains(m) {
                return Err(section.invalid(field, format!("`{m}` is listed twice")));
            }
        }
        Ok(NnGrant {
            models: raw.models,
            replay: false,
        })
    }

    /// With models on the host, every granted model must be one of them. A
    /// host with none loads any grant: a replay needs no model, and a live
    /// load answers `not-found`.
    fn bind(grant: &mut NnGrant, host: &HostConfig) -> Result<(), BindError> {
        let Some(models) = &host.nn else {
            return Ok(());
        };
        if grant.replay {
            return Ok(());
        }
        let names = models.names();
        for (i, m) in grant.models.iter().enumerate() {
            if !names.contains(m) {
                return Err(BindError {
                    field: format!("nn.models[{i}]"),
                    message: format!(
                        "model `{m}` is not installed on this host (installed: {}; add it with `tessera models add {m}`)",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                });
            }
        }
        Ok(())
    }

    fn state(_: &NnGrant, _: &Gateway, _: &mut WasiCtxBuilder) -> Result<(), crate::Error> {
        Ok(())
    }

    fn effects(grant: &NnGrant) -> Effects {
        Effects {
            reads: !grant.models.is_empty(),
            ..Effects::NONE
        }
    }

    fn describe(step: &Step) -> String {
        describe(step).unwrap_or_else(|| super::generic_description(step))
    }

    /// A replay answers every load and compute from the journal: the
    /// replaying host needs none of the models.
    fn for_replay(grant: &NnGrant, _: &[(u64, Step)], _: &Path) -> Result<NnGrant, String> {
        Ok(NnGrant {
            replay: true,
            ..grant.clone()
        })
    }
}

fn describe(step: &Step) -> Option<String> {
    match &*step.op {
        "load" => {
            let req: LoadStep = serde_json::from_value(step.request.clone()).ok()?;
            let res = step.decode::<Load>().ok()?;
            Some(match res {
                Ok(l) => format!("nn.load          {} -> {}", req.model, short(&l.digest)),
                Err(e) => format!(
                    "nn.load          {} -> {:?}: {}",
                    req.model, e.code, e.message
                ),
            })
        }
        "compute" => {
            let req: ComputeStep = serde_json::from_value(step.request.clone()).ok()?;
            let res = step.decode::<Compute>().ok()?;
            let shape = |name: &str, ty: TensorType, dims: &[u32]| {
                let d: Vec<String> = dims.iter().map(u32::to_string).collect();
                format!("{name} {ty:?}[{}]", d.join("x"))
            };
            let ins: Vec<String> = req
                .inputs
                .iter()
                .map(|i| shape(&i.name, i.ty, &i.dimensions))
                .collect();
            let outs = match res {
                Ok(o) => o
                    .iter()
                    .map(|t| shape(&t.name, t.ty, &t.dimensions))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => format!("{:?}: {}", e.code, e.message),
            };
            Some(format!(
                "nn.compute       {} ({}) -> {}",
                req.model,
                ins.join(", "),
                outs
            ))
        }
        _ => None,
    }
}

fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_check_their_size() {
        let t = Tensor {
            dimensions: vec![2, 3],
            ty: TensorType::I64,
            data: vec![0; 48],
        };
        assert!(t.check().is_ok());
        let short = Tensor {
            data: vec![0; 47],
            ..t.clone()
        };
        assert!(short.check().unwrap_err().contains("need 48 bytes"));
        let huge = Tensor {
            dimensions: vec![u32::MAX, u32::MAX, u32::MAX],
            ..t
        };
        assert!(huge.check().unwrap_err().contains("too large"));
    }

    #[test]
    fn model_names() {
        for ok in ["minilm", "smollm2-135m", "a.b_c", "7b"] {
            assert!(valid_model_name(ok), "{ok}");
        }
        for bad in ["", "MiniLM", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }
}
