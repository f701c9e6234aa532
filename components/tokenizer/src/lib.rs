//! `tokenizer`: the tokenizer of Tessera's perception package
//! (`wit/perception/perception.wit`, world `tokenizer-provider`). It exports
//! `tessera:perception/tokenizer` with the Hugging Face `tokenizers` crate,
//! compiled to pure Rust for `wasm32-wasip2`, reading the model's
//! `tokenizer.json` from `/model/tokenizer.json`, a directory the
//! component's manifest mounts (`[[files]] host = "…", guest = "/model"`).
//! The file is parsed once per instance, on the first call that needs it.

wit_bindgen::generate!({
    world: "tokenizer-provider",
    // A symlink to the shared `wit/perception` package.
    path: "wit",
});

use std::sync::{Mutex, OnceLock};

use exports::tessera::perception::tokenizer::{Encoding, Guest};
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, PostProcessor, Tokenizer, TruncationParams,
};

/// Where the guest reads the tokenizer from.
const TOKENIZER_PATH: &str = "/model/tokenizer.json";

/// The instance's tokenizer, or why it could not be loaded. Behind a mutex
/// because truncation and padding are settings of the tokenizer, set for
/// each call.
static TOKENIZER: OnceLock<Result<Mutex<Tokenizer>, String>> = OnceLock::new();

/// Reads and parses `/model/tokenizer.json`.
fn load() -> Result<Mutex<Tokenizer>, String> {
    // No threads in wasm32-wasip2: batches are encoded in this thread.
    tokenizers::utils::parallelism::set_parallelism(false);
    let bytes = std::fs::read(TOKENIZER_PATH).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "cannot read {TOKENIZER_PATH}: {e}; the tokenizer component's manifest must \
                 mount the model directory (the one holding tokenizer.json) at /model: \
                 [[files]] with host = \"<model directory>\", guest = \"/model\""
            )
        } else {
            format!("cannot read {TOKENIZER_PATH}: {e}")
        }
    })?;
    let tokenizer = Tokenizer::from_bytes(&bytes)
        .map_err(|e| format!("cannot parse {TOKENIZER_PATH} as a tokenizer: {e}"))?;
    Ok(Mutex::new(tokenizer))
}

/// Runs `f` with the instance's tokenizer, loading it first if needed.
fn with_tokenizer<T>(f: impl FnOnce(&mut Tokenizer) -> Result<T, String>) -> Result<T, String> {
    let cell = TOKENIZER.get_or_init(load).as_ref().map_err(Clone::clone)?;
    // A poisoned lock only means an earlier call panicked (and trapped):
    // every call sets the settings it needs, so the tokenizer is usable.
    let mut tokenizer = cell
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut tokenizer)
}

/// The padding of `encode`: to the longest encoding of the batch, with the
/// pad token of the tokenizer's own padding settings if it has any, else
/// `[PAD]` (with its id from the vocabulary, or 0).
fn batch_padding(tokenizer: &Tokenizer) -> PaddingParams {
    match tokenizer.get_padding() {
        Some(own) => PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_to_multiple_of: None,
            ..own.clone()
        },
        None => PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: tokenizer.token_to_id("[PAD]").unwrap_or(0),
            pad_type_id: 0,
            pad_token: "[PAD]".to_string(),
        },
    }
}

/// The number of special tokens the post-processor adds to a single text.
fn added_tokens(tokenizer: &Tokenizer) -> usize {
    tokenizer
        .get_post_processor()
        .map_or(0, |p| p.added_tokens(false))
}

/// Converts a length or offset to the WIT's `u32`.
fn to_u32(n: usize, what: &str) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{what} {n} does not fit in a u32"))
}

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn encode(texts: Vec<String>, max_length: Option<u32>) -> Result<Vec<Encoding>, String> {
        with_tokenizer(|tokenizer| {
            let truncation = match max_length {
                None => None,
                Some(max) => {
                    let max = max as usize;
                    let added = added_tokens(tokenizer);
                    if max <= added {
                        return Err(format!(
                            "max-length {max} leaves no room for text: the tokenizer adds \
                             {added} special tokens to each text"
                        ));
                    }
                    let own = tokenizer.get_truncation().cloned().unwrap_or_default();
                    Some(TruncationParams {
                        max_length: max,
                        stride: 0,
                        ..own
                    })
                }
            };
            let padding = batch_padding(tokenizer);
            tokenizer
                .with_truncation(truncation)
                .map_err(|e| format!("cannot truncate to max-length {max_length:?}: {e}"))?;
            tokenizer.with_padding(Some(padding));
            let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let encodings = tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| format!("cannot encode: {e}"))?;
            encodings
                .into_iter()
                .map(|e| {
                    let offsets = e
                        .get_offsets()
                        .iter()
                        .map(|&(start, end)| Ok((to_u32(start, "offset")?, to_u32(end, "offset")?)))
                        .collect::<Result<Vec<_>, String>>()?;
                    Ok(Encoding {
                        ids: e.get_ids().to_vec(),
                        type_ids: e.get_type_ids().to_vec(),
                        attention_mask: e.get_attention_mask().to_vec(),
                        tokens: e.get_tokens().to_vec(),
                        offsets,
                    })
                })
                .collect()
        })
    }

    fn decode(ids: Vec<u32>, skip_special_tokens: bool) -> Result<String, String> {
        with_tokenizer(|tokenizer| {
            tokenizer
                .decode(&ids, skip_special_tokens)
                .map_err(|e| format!("cannot decode: {e}"))
        })
    }

    fn count(text: String) -> Result<u32, String> {
        with_tokenizer(|tokenizer| {
            tokenizer
                .with_truncation(None)
                .map_err(|e| format!("cannot turn truncation off: {e}"))?;
            tokenizer.with_padding(None);
            let encoding = tokenizer
                .encode(text.as_str(), true)
                .map_err(|e| format!("cannot encode: {e}"))?;
            to_u32(encoding.len(), "token count")
        })
    }
}

export!(Component);
