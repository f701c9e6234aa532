//! The `bert` backend: a BERT encoder on candle, its weights memory-mapped
//! from `model.safetensors`. It takes the inputs the ONNX exports of the
//! same models take and returns their `last_hidden_state`; pooling is the
//! caller's (the embedder component pools and normalizes).

use std::path::Path;

use candle_core::{DType, Device, Tensor as CTensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tessera_runtime::capability::nn::{NnError, NnErrorCode, NnGraph, Tensor, TensorType};

use crate::ModelError;

/// An integer input's values and its `[batch, sequence]` shape.
type Ids = (Vec<u32>, [usize; 2]);

/// A loaded BERT encoder.
pub(crate) struct Bert {
    name: String,
    digest: String,
    config: Config,
    model: BertModel,
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from `dir`.
    pub(crate) fn load(name: &str, dir: &Path, digest: String) -> Result<Self, ModelError> {
        let fail = |reason: String| ModelError::Load {
            name: name.into(),
            reason,
        };
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| fail(format!("config.json: {e}")))?;
        let config: Config =
            serde_json::from_str(&text).map_err(|e| fail(format!("config.json: {e}")))?;
        // SAFETY: the file is mapped read-only while the weights are read
        // out of it into the model's own tensors; the model directory is
        // Tessera's own, verified against its record just before, and
        // nothing in Tessera writes to an installed model's files.
        #[allow(unsafe_code)]
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
        }
        .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let model =
            BertModel::load(vb, &config).map_err(|e| fail(format!("model.safetensors: {e}")))?;
        Ok(Self {
            name: name.into(),
            digest,
            config,
            model,
        })
    }

    fn invalid(&self, m: String) -> NnError {
        NnError::new(
            NnErrorCode::InvalidArgument,
            format!("model `{}`: {m}", self.name),
        )
    }

    /// An input as `[batch, sequence]` of `u32`, checked against `limit`.
    fn ids(
        &self,
        inputs: &[(String, Tensor)],
        name: &str,
        limit: Option<usize>,
    ) -> Result<Option<Ids>, NnError> {
        let Some((_, t)) = inputs.iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        let [b, s] = t.dimensions[..] else {
            return Err(self.invalid(format!(
                "input `{name}` must have dimensions [batch, sequence], not {:?}",
                t.dimensions
            )));
        };
        let values: Vec<i64> = match t.ty {
            TensorType::I64 => t
                .data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
            TensorType::I32 => t
                .data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or_default())))
                .collect(),
            other => {
                return Err(
                    self.invalid(format!("input `{name}` must be i64 or i32, not {other:?}"))
                );
            }
        };
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            let ok = v >= 0 && limit.is_none_or(|l| (v as u64) < l as u64);
            if !ok {
                return Err(self.invalid(format!(
                    "input `{name}` holds {v} at position {i}, outside 0..{}",
                    limit.map_or("2^32".to_string(), |l| l.to_string())
                )));
            }
            out.push(v as u32);
        }
        Ok(Some((out, [b as usize, s as usize])))
    }

    fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, NnError> {
        for (n, _) in inputs {
            if !matches!(
                n.as_str(),
                "input_ids" | "attention_mask" | "token_type_ids"
            ) {
                return Err(self.invalid(format!(
                    "unknown input `{n}` (the inputs are input_ids, attention_mask and token_type_ids)"
                )));
            }
        }
        let Some((ids, shape)) = self.ids(inputs, "input_ids", Some(self.config.vocab_size))?
        else {
            return Err(self.invalid("the input `input_ids` is missing".into()));
        };
        let [batch, seq] = shape;
        if seq == 0 || batch == 0 {
            return Err(self.invalid(format!("input `input_ids` is empty ({batch}x{seq})")));
        }
        if seq > self.config.max_position_embeddings {
            return Err(self.invalid(format!(
                "sequences of {seq} tokens are longer than the model's {} positions",
                self.config.max_position_embeddings
            )));
        }
        let mask = self.ids(inputs, "attention_mask", Some(2))?;
        let types = self.ids(inputs, "token_type_ids", Some(self.config.type_vocab_size))?;
        for (n, t) in [("attention_mask", &mask), ("token_type_ids", &types)] {
            if let Some((_, s)) = t
                && *s != shape
            {
                return Err(self.invalid(format!(
                    "input `{n}` has dimensions {s:?}, input_ids has {shape:?}"
                )));
            }
        }
        let backend = |e: candle_core::Error| {
            NnError::new(
                NnErrorCode::RuntimeError,
                format!("model `{}`: {e}", self.name),
            )
        };
        let dev = &Device::Cpu;
        let tensor = |v: Vec<u32>| CTensor::from_vec(v, (batch, seq), dev).map_err(backend);
        let input_ids = tensor(ids)?;
        let token_type_ids = tensor(types.map_or_else(|| vec![0; batch * seq], |t| t.0))?;
        let attention_mask = match mask {
            Some((m, _)) => Some(tensor(m)?),
            None => None,
        };
        let out = self
            .model
            .forward(&input_ids, &token_type_ids, attention_mask.as_ref())
            .map_err(backend)?;
        let dims: Vec<u32> = out.dims().iter().map(|d| *d as u32).collect();
        let values: Vec<f32> = out
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(backend)?;
        let mut data = Vec::with_capacity(values.len() * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        Ok(vec![(
            "last_hidden_state".to_string(),
            Tensor {
                dimensions: dims,
                ty: TensorType::Fp32,
                data,
            },
        )])
    }
}

impl NnGraph for Bert {
    fn digest(&self) -> &str {
        &self.digest
    }

    fn compute(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, NnError> {
        for (name, t) in inputs {
            t.check()
                .map_err(|m| self.invalid(format!("input `{name}`: {m}")))?;
        }
        self.run(inputs)
    }
}
