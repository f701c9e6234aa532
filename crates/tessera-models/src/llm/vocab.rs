//! The tokenizer of a GGUF language model, rebuilt from the file's own
//! metadata (`tokenizer.ggml.*`), so a model needs no `tokenizer.json`
//! beside it and tokenizes exactly as the GGUF says.
//!
//! Supported: byte-level BPE (`tokenizer.ggml.model = "gpt2"`), with the
//! pre-tokenizer named by `tokenizer.ggml.pre` the way llama.cpp reads it:
//! `smollm` and the StarCoder family split digits one by one and then apply
//! GPT-2's pattern; `gpt2` and `default` apply GPT-2's pattern; `llama3`
//! and `llama-bpe` apply Llama 3's. Control and user-defined tokens
//! (`token_type` 3 and 4) are special: matched whole in a prompt, never
//! produced by splitting text.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};
use toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// Llama 3's pre-tokenizer pattern.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `token_type` of a control token.
const CONTROL: i32 = 3;
/// `token_type` of a user-defined token.
const USER_DEFINED: i32 = 4;

/// A GGUF model's vocabulary: the tokenizer, each token's bytes, and the
/// special tokens.
pub(crate) struct Vocab {
    tokenizer: Tokenizer,
    /// Each token's bytes (a special token's text, marked with
    /// [`TokTrie::SPECIAL_TOKEN_MARKER`] for the constraint engine).
    bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: u32,
    /// Whether a prompt starts with the BOS token.
    pub add_bos: bool,
    /// The text of each token, by id, for the chat template.
    texts: Vec<String>,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocab")
            .field("size", &self.bytes.len())
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

fn meta<'a>(c: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value, String> {
    c.metadata
        .get(key)
        .ok_or_else(|| format!("the GGUF metadata has no `{key}`"))
}

fn strings(c: &gguf_file::Content, key: &str) -> Result<Vec<String>, String> {
    meta(c, key)?
        .to_vec()
        .map_err(|e| format!("`{key}`: {e}"))?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.to_string()
                .cloned()
                .map_err(|e| format!("`{key}[{i}]`: {e}"))
        })
        .collect()
}

/// GPT-2's byte ↔ character table: the characters byte-level BPE writes
/// bytes as.
fn byte_chars() -> HashMap<char, u8> {
    let mut map = HashMap::new();
    let mut next = 0x100u32;
    for b in 0..=255u8 {
        let c = b as char;
        if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
            map.insert(c, b);
        } else {
            // Every value 0x100..0x144 is a valid scalar value.
            if let Some(c) = char::from_u32(next) {
                map.insert(c, b);
            }
            next += 1;
        }
    }
    map
}

impl Vocab {
    /// Reads the vocabulary of a GGUF file's metadata.
    pub fn from_gguf(c: &gguf_file::Content) -> Result<Self, String> {
        let model = meta(c, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| e.to_string())?;
        if model != "gpt2" {
            return Err(format!(
                "tokenizer `{model}` is not supported (supported: `gpt2`, byte-level BPE)"
            ));
        }
        let pre = c
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map_or("default", String::as_str);
        let gpt2 = || ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => Sequence::new(vec![Digits::new(true).into(), gpt2().into()]).into(),
            "gpt2" | "default" | "gpt-2" => gpt2().into(),
            "llama3" | "llama-bpe" | "llama-v3" => {
                let split = Split::new(
                    SplitPattern::Regex(LLAMA3_PATTERN.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| format!("the Llama 3 pattern: {e}"))?;
                Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])
                .into()
            }
            other => {
                return Err(format!(
                    "pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported (supported: smollm, starcoder, gpt2, default, llama3)"
                ));
            }
        };
        let tokens = strings(c, "tokenizer.ggml.tokens")?;
        let merges = strings(c, "tokenizer.ggml.merges")?;
        let types: Vec<i32> = match c.metadata.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => v
                .to_vec()
                .map_err(|e| format!("`tokenizer.ggml.token_type`: {e}"))?
                .iter()
                .map(|t| t.to_i32().unwrap_or(1))
                .collect(),
        };
        if types.len() != tokens.len() {
            return Err(format!(
                "`tokenizer.ggml.token_type` has {} entries for {} tokens",
                types.len(),
                tokens.len()
            ));
        }
        let id = |key: &str| c.metadata.get(key).and_then(|v| v.to_u32().ok());
        let eos = id("tokenizer.ggml.eos_token_id")
            .ok_or("the GGUF metadata has no `tokenizer.ggml.eos_token_id`")?;
        let bos = id("tokenizer.ggml.bos_token_id");
        let add_bos = c
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);

        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| format!("`tokenizer.ggml.merges[{i}]` is not two tokens: `{m}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| format!("cannot build the BPE model: {e}"))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        let special: Vec<bool> = types
            .iter()
            .map(|t| *t == CONTROL || *t == USER_DEFINED)
            .collect();
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&special)
            .filter(|(_, s)| **s)
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(added)
            .map_err(|e| format!("cannot add the special tokens: {e}"))?;

        let chars = byte_chars();
        let bytes = tokens
            .iter()
            .zip(&special)
            .map(|(t, s)| {
                if *s {
                    let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    b.extend_from_slice(t.as_bytes());
                    b
                } else {
                    // A character outside the table cannot be produced by
                    // byte-level BPE: the token is unreachable; keep its
                    // UTF-8 so it still has a distinct spelling.
                    t.chars()
                        .map(|c| chars.get(&c).copied().map(|b| vec![b]))
                        .collect::<Option<Vec<_>>>()
                        .map_or_else(|| t.as_bytes().to_vec(), |v| v.concat())
                }
            })
            .collect();
        Ok(Self {
            tokenizer,
            bytes,
            special,
            bos,
            eos,
            add_bos,
            texts: tokens,
        })
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The text of a token (a special token's name).
    pub fn text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// Whether `id` is a control or user-defined token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Tokenizes a prompt: special tokens written in it are matched whole.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = Vec::new();
        if self.add_bos
            && let Some(b) = self.bos
        {
            ids.push(b);
        }
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| format!("cannot tokenize the prompt: {e}"))?;
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The bytes a generated token stands for (nothing for a special
    /// token: its name is not text of the answer).
    pub fn piece(&self, id: u32) -> &[u8] {
        match self.bytes.get(id as usize) {
            Some(b) if !self.is_special(id) => b,
            _ => &[],
        }
    }

    /// The constraint engine's view of this vocabulary.
    pub fn tok_env(self: &std::sync::Arc<Self>) -> toktrie::TokEnv {
        let mut info = TokRxInfo::new(self.bytes.len() as u32, self.eos);
        info.tok_bos = self.bos;
        let trie = TokTrie::from(&info, &self.bytes);
        std::sync::Arc::new(Env {
            trie,
            vocab: self.clone(),
        })
    }
}

/// [`Vocab`] as llguidance's tokenizer environment.
struct Env {
    trie: TokTrie,
    vocab: std::sync::Arc<Vocab>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Grammar literals are text; a byte string that is not UTF-8 falls
        // back to the trie's greedy tokenization.
        self.trie.tokenize_with_greedy_fallback(s, |s| {
            self.vocab
                .tokenizer
                .encode(s, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }

    fn tokenize_bytes_special(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |s| {
            self.trie.tokenize_with_special(s, |s| {
                self.vocab
                    .tokenizer
                    .encode(s, false)
                    .map(|e| e.get_ids().to_vec())
                    .unwrap_or_default()
            })
        })
    }
}
