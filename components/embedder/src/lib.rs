//! `embedder`: the sentence embedder of Tessera's perception package
//! (`wit/perception/perception.wit`, world `embedder-provider`). It exports
//! `tessera:perception/embedder`: each text is tokenized by the imported
//! `tessera:perception/tokenizer` (served by a tokenizer component through
//! the manifest's `[imports]`), the batch runs through a BERT-style model
//! the host serves by name through `wasi:nn` (`input_ids`,
//! `attention_mask`, `token_type_ids` in, `last_hidden_state` out), and the
//! hidden states of each text's tokens are mean-pooled and L2-normalized.
//! The model's name is the `wasi:config` value `model`, `minilm` if unset.

wit_bindgen::generate!({
    world: "embedder-provider",
    // A symlink to the shared `wit/perception` package.
    path: "wit",
    generate_all,
});

use std::sync::OnceLock;

use exports::tessera::perception::embedder::Guest;
use tessera::perception::tokenizer;
use wasi::config::store;
use wasi::nn::errors::{Error as NnError, ErrorCode};
use wasi::nn::graph;
use wasi::nn::tensor::{Tensor, TensorType};

/// The graph loaded when the `wasi:config` value `model` is not set.
const DEFAULT_MODEL: &str = "minilm";
/// The longest token sequence given to the model, special tokens included
/// (the sentence-transformers limit of MiniLM models).
const MAX_TOKENS: u32 = 256;
/// The output tensor holding the per-token hidden states.
const OUTPUT: &str = "last_hidden_state";

/// The hidden size, once this instance has run the model.
static DIMENSIONS: OnceLock<u32> = OnceLock::new();

/// The WIT name of a `wasi:nn` error code.
fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "invalid-argument",
        ErrorCode::InvalidEncoding => "invalid-encoding",
        ErrorCode::Timeout => "timeout",
        ErrorCode::RuntimeError => "runtime-error",
        ErrorCode::UnsupportedOperation => "unsupported-operation",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::NotFound => "not-found",
        ErrorCode::Security => "security",
        ErrorCode::Unknown => "unknown",
    }
}

/// Describes a failed `wasi:nn` call: what was called, the error code and
/// the backend's message.
fn nn_error(what: &str, e: NnError) -> String {
    let data = e.data();
    if data.is_empty() {
        format!("wasi:nn {what} failed: {}", code_name(e.code()))
    } else {
        format!("wasi:nn {what} failed: {}: {data}", code_name(e.code()))
    }
}

/// The WIT name of a tensor type.
fn type_name(ty: TensorType) -> &'static str {
    match ty {
        TensorType::Fp16 => "FP16",
        TensorType::Fp32 => "FP32",
        TensorType::Fp64 => "FP64",
        TensorType::Bf16 => "BF16",
        TensorType::U8 => "U8",
        TensorType::I32 => "I32",
        TensorType::I64 => "I64",
    }
}

/// The name of the graph to load: the `wasi:config` value `model`, or
/// `minilm`.
fn model_name() -> Result<String, String> {
    match store::get("model") {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Ok(DEFAULT_MODEL.to_string()),
        Err(store::Error::Upstream(m)) => {
            Err(format!("wasi:config get(\"model\") failed: upstream: {m}"))
        }
        Err(store::Error::Io(m)) => Err(format!("wasi:config get(\"model\") failed: io: {m}")),
    }
}

/// An I64 tensor of dims `[batch, seq]` from one row of `u32`s per text,
/// little-endian.
fn i64_tensor(rows: &[&[u32]], seq: usize) -> Tensor {
    let mut data = Vec::with_capacity(rows.len() * seq * 8);
    for row in rows {
        for &value in *row {
            data.extend_from_slice(&i64::from(value).to_le_bytes());
        }
    }
    Tensor::new(&[rows.len() as u32, seq as u32], TensorType::I64, &data)
}

/// Embeds a batch: tokenize, run the model, mean-pool, normalize.
fn embed(texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let encodings = tokenizer::encode(texts, Some(MAX_TOKENS))
        .map_err(|e| format!("tokenizer encode failed: {e}"))?;
    if encodings.len() != texts.len() {
        return Err(format!(
            "tokenizer encode returned {} encodings for {} texts",
            encodings.len(),
            texts.len()
        ));
    }
    let batch = encodings.len();
    let seq = encodings[0].ids.len();
    for (i, e) in encodings.iter().enumerate() {
        if e.ids.len() != seq || e.attention_mask.len() != seq || e.type_ids.len() != seq {
            return Err(format!(
                "tokenizer encode returned an unpadded batch: text {i} has {} ids, {} mask \
                 values and {} type ids, text 0 has {seq} ids",
                e.ids.len(),
                e.attention_mask.len(),
                e.type_ids.len()
            ));
        }
    }
    if seq == 0 {
        return Err("tokenizer encode returned no tokens".to_string());
    }

    let ids: Vec<&[u32]> = encodings.iter().map(|e| e.ids.as_slice()).collect();
    let mask: Vec<&[u32]> = encodings
        .iter()
        .map(|e| e.attention_mask.as_slice())
        .collect();
    let types: Vec<&[u32]> = encodings.iter().map(|e| e.type_ids.as_slice()).collect();
    let inputs = vec![
        ("input_ids".to_string(), i64_tensor(&ids, seq)),
        ("attention_mask".to_string(), i64_tensor(&mask, seq)),
        ("token_type_ids".to_string(), i64_tensor(&types, seq)),
    ];

    let model = model_name()?;
    let graph = graph::load_by_name(&model)
        .map_err(|e| nn_error(&format!("load-by-name(\"{model}\")"), e))?;
    let context = graph
        .init_execution_context()
        .map_err(|e| nn_error(&format!("init-execution-context of \"{model}\""), e))?;
    let outputs = context
        .compute(inputs)
        .map_err(|e| nn_error(&format!("compute of \"{model}\""), e))?;

    let Some((_, hidden_states)) = outputs.iter().find(|(name, _)| name == OUTPUT) else {
        let names: Vec<&str> = outputs.iter().map(|(name, _)| name.as_str()).collect();
        return Err(format!(
            "model \"{model}\" returned no output named {OUTPUT} (its outputs: {names:?})"
        ));
    };
    let ty = hidden_states.ty();
    if ty != TensorType::Fp32 {
        return Err(format!(
            "output {OUTPUT} of model \"{model}\" is {}, expected FP32",
            type_name(ty)
        ));
    }
    let dims = hidden_states.dimensions();
    let [out_batch, out_seq, hidden] = dims[..] else {
        return Err(format!(
            "output {OUTPUT} of model \"{model}\" has dims {dims:?}, expected [batch, seq, hidden]"
        ));
    };
    let hidden = hidden as usize;
    if out_batch as usize != batch || out_seq as usize != seq || hidden == 0 {
        return Err(format!(
            "output {OUTPUT} of model \"{model}\" has dims {dims:?}, expected [{batch}, {seq}, \
             hidden] with hidden > 0"
        ));
    }
    let data = hidden_states.data();
    let expected = batch * seq * hidden * 4;
    if data.len() != expected {
        return Err(format!(
            "output {OUTPUT} of model \"{model}\" has {} bytes of data, expected {expected} \
             ({batch} x {seq} x {hidden} FP32)",
            data.len()
        ));
    }
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    let mut embeddings = Vec::with_capacity(batch);
    for (b, encoding) in encodings.iter().enumerate() {
        let mut sum = vec![0f32; hidden];
        let mut tokens = 0usize;
        for (t, &m) in encoding.attention_mask.iter().enumerate() {
            if m == 0 {
                continue;
            }
            tokens += 1;
            let row = &values[(b * seq + t) * hidden..][..hidden];
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v;
            }
        }
        if tokens == 0 {
            return Err(format!("text {b} has no tokens with attention mask 1"));
        }
        let n = tokens as f32;
        sum.iter_mut().for_each(|s| *s /= n);
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            sum.iter_mut().for_each(|s| *s /= norm);
        }
        embeddings.push(sum);
    }
    let _ = DIMENSIONS.set(hidden as u32);
    Ok(embeddings)
}

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        embed(&texts)
    }

    fn dimensions() -> Result<u32, String> {
        if let Some(&dimensions) = DIMENSIONS.get() {
            return Ok(dimensions);
        }
        let vectors = embed(&["dimensions".to_string()])?;
        Ok(vectors.first().map_or(0, |v| v.len() as u32))
    }
}

export!(Component);
