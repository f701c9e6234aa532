//! The local language model: a GGUF file run on the host by candle's
//! quantized Llama implementation, with the tokenizer and the chat
//! template the file carries.
//!
//! - **Loaded once** per process ([`crate::ModelStore::language_model`]);
//!   the weights are shared by every completion (each completion has its
//!   own attention cache).
//! - **Sampling**: greedy when the temperature is 0 or not given (the
//!   default here, so an unseeded request is reproducible), otherwise
//!   softmax at that temperature, then nucleus (`top_p`), drawn with
//!   ChaCha8 seeded by the request's `seed` (0 when not given): the same
//!   request gives the same tokens.
//! - **Stops** at the end-of-turn token, at a stop sequence (not included
//!   in the answer), at `max_tokens` (`finish_reason` `length`), or when
//!   cancelled.
//! - **Tools**: see [`grammar`]; a completion whose calls parse ends with
//!   `finish_reason` `tool_calls`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use llguidance::{Matcher, ParserFactory};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use tessera_runtime::capability::llm::{
    ChatMessage, ChatRequest, ChatResponse, LlmError, Role, ToolCall, Usage,
};

use crate::ModelError;

pub(crate) mod grammar;
mod prompt;
mod vocab;

use vocab::Vocab;

/// The template used when a GGUF file carries none (ChatML).
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// How long each phase of a completion took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Rendering and tokenizing the prompt and running it through the
    /// model, up to the first token's logits.
    pub prompt: Duration,
    /// From the start to the first generated token.
    pub first_token: Duration,
    /// Generating the tokens after the first.
    pub decode: Duration,
    /// Tokens generated.
    pub tokens: u32,
}

/// A completion and how long it took.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The completion (its `model` is the model's name; the provider adds
    /// its own name).
    pub response: ChatResponse,
    /// The generated token ids, for comparisons with other engines.
    pub tokens: Vec<u32>,
    /// The generated text as the model wrote it (tool calls in their
    /// `<tool_call>` form; a stop sequence cut).
    pub text: String,
    /// The phases' durations.
    pub timings: Timings,
}

/// How the weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// As the file stores them (Q4_1 for SmolLM2): the numbers llama.cpp
    /// computes with. The default.
    #[default]
    AsStored,
    /// Q4_1 tensors converted to Q8_0, for which candle has AVX2 kernels:
    /// about twice the decode rate, and logits that differ from the file's
    /// by the rounding of the conversion (docs/ai.md gives the figures).
    Q8_0,
    /// Q4_1 tensors dequantized to f32 and multiplied by dense kernels:
    /// the fastest prompt processing, the slowest decoding.
    F32,
}

/// A loaded GGUF language model.
pub struct LanguageModel {
    name: String,
    digest: String,
    weights: ModelWeights,
    vocab: Arc<Vocab>,
    template: prompt::Template,
    factory: Arc<ParserFactory>,
    context: usize,
    /// Tokens that end a turn.
    stops: Vec<u32>,
    device: Device,
    /// The attention caches of recent conversation prefixes (every message
    /// but the last), newest last: a request that starts with one skips
    /// running those tokens again.
    prefixes: std::sync::Mutex<Vec<(Vec<u32>, ModelWeights)>>,
}

/// How many conversation prefixes are kept.
const PREFIXES: usize = 4;

impl std::fmt::Debug for LanguageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanguageModel")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

fn candle(e: candle_core::Error) -> LlmError {
    LlmError::Unavailable(format!("the local model failed: {e}"))
}

impl LanguageModel {
    /// Loads the GGUF file at `path` as model `name`, its weights as
    /// stored.
    pub fn load(name: &str, path: &Path, digest: String) -> Result<Self, ModelError> {
        Self::load_with(name, path, digest, Weights::AsStored)
    }

    /// Loads the GGUF file at `path` as model `name`, its weights held as
    /// `weights` says.
    pub fn load_with(
        name: &str,
        path: &Path,
        digest: String,
        weights: Weights,
    ) -> Result<Self, ModelError> {
        let fail = |reason: String| ModelError::Load {
            name: name.into(),
            reason,
        };
        let mut file = std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| fail(format!("{}: {e}", path.display())))?,
        );
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| fail(format!("{} is not a GGUF file: {e}", path.display())))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(fail(format!(
                "architecture `{arch}` is not supported (supported: llama)"
            )));
        }
        let vocab = Arc::new(Vocab::from_gguf(&content).map_err(fail)?);
        let context = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |n| (n as usize).min(MAX_SEQ_LEN));
        let source = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| CHATML.to_string());
        let text = |id: Option<u32>| {
            id.and_then(|i| vocab.text(i))
                .unwrap_or_default()
                .to_string()
        };
        let template =
            prompt::Template::new(source, text(vocab.bos), text(Some(vocab.eos))).map_err(fail)?;
        let device = Device::Cpu;
        let weights = match weights {
            Weights::AsStored => ModelWeights::from_gguf(content, &mut file, &device),
            Weights::Q8_0 | Weights::F32 => {
                let to = if weights == Weights::Q8_0 {
                    candle_core::quantized::GgmlDType::Q8_0
                } else {
                    candle_core::quantized::GgmlDType::F32
                };
                let (content, mut buf) = convert(content, &mut file, &device, to)
                    .map_err(|e| fail(format!("cannot convert the weights: {e}")))?;
                ModelWeights::from_gguf(content, &mut buf, &device)
            }
        }
        .map_err(|e| fail(format!("cannot read the weights: {e}")))?;
        let mut stops = vec![vocab.eos];
        for t in ["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>"] {
            if let Some(id) = (0..vocab.len() as u32).find(|i| vocab.text(*i) == Some(t))
                && vocab.is_special(id)
                && !stops.contains(&id)
            {
                stops.push(id);
            }
        }
        let env = vocab.tok_env();
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| fail(format!("the constraint engine: {e}")))?;
        factory.set_stderr_log_level(0);
        Ok(Self {
            name: name.into(),
            digest,
            weights,
            vocab,
            template,
            factory: Arc::new(factory),
            context,
            stops,
            device,
            prefixes: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `sha256:` of the model's files.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The longest prompt and answer together, in tokens.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Tokenizes text as a prompt is tokenized.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        self.vocab.encode(text)
    }

    /// The prompt `request` is rendered to.
    pub fn prompt(&self, request: &ChatRequest) -> Result<String, LlmError> {
        self.template.render(request).map_err(LlmError::Rejected)
    }

    /// Teacher forcing: runs `tokens` through the model one position at a
    /// time and returns, for each position, the most likely next token.
    pub fn argmax_each(&self, tokens: &[u32]) -> Result<Vec<u32>, LlmError> {
        let mut model = self.weights.clone();
        let mut out = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let input = Tensor::new(&[*t], &self.device)
                .and_then(|x| x.unsqueeze(0))
                .map_err(candle)?;
            let logits = model.forward(&input, i).map_err(candle)?;
            let v: Vec<f32> = logits
                .squeeze(0)
                .and_then(|l| l.to_vec1())
                .map_err(candle)?;
            out.push(argmax(&v));
        }
        Ok(out)
    }

    /// Runs the prompt through a fresh copy of the model, starting from the
    /// cached state of its first `stable` tokens when there is one (and
    /// caching it when there is not).
    fn run_prompt(&self, input: &[u32], stable: usize) -> Result<(ModelWeights, Tensor), LlmError> {
        let forward = |model: &mut ModelWeights, tokens: &[u32], pos: usize| {
            Tensor::new(tokens, &self.device)
                .and_then(|x| x.unsqueeze(0))
                .and_then(|x| model.forward(&x, pos))
                .map_err(candle)
        };
        if stable == 0 {
            let mut model = self.weights.clone();
            let logits = forward(&mut model, input, 0)?;
            return Ok((model, logits));
        }
        let key = &input[..stable];
        let cached = {
            let mut prefixes = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
            let hit = prefixes.iter().position(|(t, _)| t == key);
            hit.map(|i| {
                let entry = prefixes.remove(i);
                let model = entry.1.clone();
                prefixes.push(entry);
                model
            })
        };
        let mut model = match cached {
            Some(m) => m,
            None => {
                let mut m = self.weights.clone();
                forward(&mut m, key, 0)?;
                let mut prefixes = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
                if prefixes.len() >= PREFIXES {
                    prefixes.remove(0);
                }
                prefixes.push((key.to_vec(), m.clone()));
                m
            }
        };
        let logits = forward(&mut model, &input[stable..], stable)?;
        Ok((model, logits))
    }

    /// Greedy decoding from token ids, with no template and no grammar: up
    /// to `n` tokens (fewer when an end-of-turn token comes, which is
    /// included), and the timings. For comparisons with other engines.
    pub fn greedy(&self, prompt: &[u32], n: usize) -> Result<(Vec<u32>, Timings), LlmError> {
        if prompt.is_empty() || prompt.len() + n > self.context {
            return Err(LlmError::Rejected(format!(
                "a prompt of {} tokens and {n} more do not fit model `{}`'s {} tokens",
                prompt.len(),
                self.name,
                self.context
            )));
        }
        let started = Instant::now();
        let mut model = self.weights.clone();
        let mut out = Vec::with_capacity(n);
        let mut pos = 0;
        let mut input = prompt.to_vec();
        let mut timings = Timings::default();
        while out.len() < n {
            let x = Tensor::new(input.as_slice(), &self.device)
                .and_then(|x| x.unsqueeze(0))
                .map_err(candle)?;
            let logits = model.forward(&x, pos).map_err(candle)?;
            pos += input.len();
            let v: Vec<f32> = logits
                .squeeze(0)
                .and_then(|l| l.to_vec1())
                .map_err(candle)?;
            let t = argmax(&v);
            if out.is_empty() {
                timings.first_token = started.elapsed();
                timings.prompt = timings.first_token;
            }
            out.push(t);
            if self.stops.contains(&t) {
                break;
            }
            input = vec![t];
        }
        timings.decode = started.elapsed().saturating_sub(timings.first_token);
        timings.tokens = out.len() as u32;
        Ok((out, timings))
    }

    /// One completion. `max_tokens` caps the answer (default: what the
    /// context leaves); `on_text` receives the answer's text as it is
    /// generated (never a stop sequence, never a tool call's text);
    /// setting `cancel` ends the completion with [`LlmError::Timeout`].
    pub fn complete(
        &self,
        request: &ChatRequest,
        max_tokens: Option<u32>,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, LlmError> {
        let started = Instant::now();
        let grammar = grammar::for_request(request)?;
        let (prompt, prefix) = self
            .template
            .render_parts(request)
            .map_err(LlmError::Rejected)?;
        let input = self.vocab.encode(&prompt).map_err(LlmError::Rejected)?;
        // The prefix counts when its tokens begin the prompt's.
        let stable = prefix
            .filter(|p| prompt.starts_with(p.as_str()))
            .and_then(|p| self.vocab.encode(&p).ok())
            .filter(|t| !t.is_empty() && t.len() < input.len() && input.starts_with(t))
            .map_or(0, |t| t.len());
        if input.len() >= self.context {
            return Err(LlmError::Rejected(format!(
                "the prompt is {} tokens and model `{}` holds {} (prompt and answer together)",
                input.len(),
                self.name,
                self.context
            )));
        }
        let room = (self.context - input.len()) as u32;
        let limit = max_tokens.map_or(room, |m| m.min(room));
        let mut matcher = match grammar {
            None => None,
            Some(g) => {
                let m = Matcher::new(self.factory.create_parser(g));
                if let Some(e) = m.get_error() {
                    return Err(LlmError::Rejected(format!(
                        "the tools' schemas cannot constrain decoding: {e}"
                    )));
                }
                Some(m)
            }
        };
        let temperature = request.temperature.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&temperature) {
            return Err(LlmError::Rejected(format!(
                "temperature {temperature} is out of range (0 to 100)"
            )));
        }
        let top_p = request.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(LlmError::Rejected(format!(
                "top_p {top_p} is out of range (above 0, at most 1)"
            )));
        }
        if let Some(s) = request.stop.iter().find(|s| s.is_empty()) {
            return Err(LlmError::Rejected(format!("stop sequence {s:?} is empty")));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(request.seed.unwrap_or(0));
        let (mut model, mut logits) = self.run_prompt(&input, stable)?;
        let prompt_done = started.elapsed();

        let mut out: Vec<u32> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        let mut emitted = 0usize;
        let mut first_token = None;
        let mut finish = "length";
        let mut stopped_at = None;
        let hold: Vec<&str> = request
            .stop
            .iter()
            .map(String::as_str)
            .chain((matcher.is_some()).then_some(prompt::CALL_OPEN))
            .collect();
        let mut streaming = true;
        while (out.len() as u32) < limit {
            if cancel.load(Ordering::Relaxed) {
                return Err(LlmError::Timeout);
            }
            let mut v: Vec<f32> = logits
                .squeeze(0)
                .and_then(|l| l.to_vec1())
                .map_err(candle)?;
            if let Some(m) = matcher.as_mut() {
                let mask = m.compute_mask().map_err(|e| {
                    LlmError::InvalidResponse(format!("the constraint engine failed: {e}"))
                })?;
                for (i, l) in v.iter_mut().enumerate() {
                    if !mask.is_allowed(i as u32) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            let token = sample(&mut v, temperature, top_p, &mut rng);
            first_token.get_or_insert_with(|| started.elapsed());
            if self.stops.contains(&token) {
                finish = "stop";
                break;
            }
            if let Some(m) = matcher.as_mut() {
                m.consume_token(token).map_err(|e| {
                    LlmError::InvalidResponse(format!("the constraint engine failed: {e}"))
                })?;
            }
            out.push(token);
            bytes.extend_from_slice(self.vocab.piece(token));
            let text = valid_prefix(&bytes);
            if let Some(at) = request
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                stopped_at = Some(at);
                finish = "stop";
                break;
            }
            if streaming {
                if matcher.is_some()
                    && let Some(at) = text.find(prompt::CALL_OPEN)
                {
                    if at > emitted {
                        on_text(&text[emitted..at]);
                    }
                    streaming = false;
                } else {
                    let safe = text.len() - held(text, &hold);
                    if safe > emitted && text.is_char_boundary(safe) {
                        on_text(&text[emitted..safe]);
                        emitted = safe;
                    }
                }
            }
            if matcher.as_ref().is_some_and(Matcher::is_stopped) {
                finish = "stop";
                break;
            }
            let x = Tensor::new(&[token], &self.device)
                .and_then(|x| x.unsqueeze(0))
                .map_err(candle)?;
            logits = model
                .forward(&x, input.len() + out.len() - 1)
                .map_err(candle)?;
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(at) = stopped_at {
            text.truncate(at);
        }
        if streaming && text.len() > emitted && text.is_char_boundary(emitted) {
            on_text(&text[emitted..]);
        }
        let raw = text.clone();
        let (content, calls) = if matcher.is_some() {
            let (content, calls, _cut) = grammar::split_calls(&text);
            (content, calls)
        } else {
            (text, Vec::new())
        };
        let tool_calls: Vec<ToolCall> = calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, arguments))| ToolCall {
                id: format!("call_{i}"),
                name,
                arguments,
            })
            .collect();
        if !tool_calls.is_empty() && finish == "stop" {
            finish = "tool_calls";
        }
        let first = first_token.unwrap_or(prompt_done);
        let timings = Timings {
            prompt: prompt_done,
            first_token: first,
            decode: started.elapsed().saturating_sub(first),
            tokens: out.len() as u32,
        };
        Ok(Generation {
            response: ChatResponse {
                message: ChatMessage {
                    role: Role::Assistant,
                    content,
                    tool_calls,
                    tool_call_id: None,
                },
                finish_reason: finish.into(),
                usage: Usage {
                    prompt_tokens: input.len() as u32,
                    completion_tokens: out.len() as u32,
                },
                model: self.name.clone(),
            },
            tokens: out,
            text: raw,
            timings,
        })
    }
}

/// The model with its Q4_1 tensors converted to `to`, as an in-memory GGUF.
fn convert<R: std::io::Read + std::io::Seek>(
    content: gguf_file::Content,
    reader: &mut R,
    device: &Device,
    to: candle_core::quantized::GgmlDType,
) -> candle_core::Result<(gguf_file::Content, std::io::Cursor<Vec<u8>>)> {
    use candle_core::quantized::{GgmlDType, QTensor};
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let t = content.tensor(reader, name, device)?;
        let t = if t.dtype() == GgmlDType::Q4_1 {
            QTensor::quantize(&t.dequantize(device)?, to)?
        } else {
            t
        };
        tensors.push((name.as_str(), t));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &metadata, &refs)?;
    buf.set_position(0);
    let c = gguf_file::Content::read(&mut buf)?;
    Ok((c, buf))
}

/// The longest prefix of `bytes` that is UTF-8 (a character may be split
/// across tokens).
fn valid_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// How many bytes at the end of `text` may be the start of one of
/// `patterns` (held back from the stream until it is known not to be).
fn held(text: &str, patterns: &[&str]) -> usize {
    patterns
        .iter()
        .map(|p| {
            (1..p.len().min(text.len() + 1))
                .rev()
                .find(|n| text.ends_with(&p[..*n]))
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Picks the next token: argmax at temperature 0, otherwise a draw from
/// the softmax at `temperature`, restricted to the nucleus `top_p`.
fn sample(logits: &mut [f32], temperature: f32, top_p: f32, rng: &mut ChaCha8Rng) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, l)| (i as u32, ((l - max) / temperature).exp()))
        .collect();
    let sum: f32 = probs.iter().map(|p| p.1).sum();
    if probs.is_empty() || sum <= 0.0 || !sum.is_finite() {
        return argmax(logits);
    }
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut keep = probs.len();
    if top_p < 1.0 {
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p.1 / sum;
            if acc >= top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let probs = &probs[..keep];
    let total: f32 = probs.iter().map(|p| p.1).sum();
    // 53 random bits: a uniform draw in [0, 1).
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut target = u as f32 * total;
    for p in probs {
        if target < p.1 {
            return p.0;
        }
        target -= p.1;
    }
    probs[keep - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_is_a_prefix_of_a_pattern() {
        assert_eq!(held("hello <tool", &["<tool_call>"]), 5);
        assert_eq!(held("hello", &["<tool_call>"]), 0);
        assert_eq!(held("abc END", &["END"]), 0, "a whole match is not held");
        assert_eq!(held("abc EN", &["END", "x"]), 2);
    }

    #[test]
    fn sampling_is_seeded_and_respects_the_mask_and_nucleus() {
        let logits = vec![1.0, 2.0, f32::NEG_INFINITY, 1.5, 0.5];
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|_| sample(&mut logits.clone(), 1.0, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(!draw(7).contains(&2), "a masked token is never drawn");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            // top_p 0.3: only the most likely token is in the nucleus.
            assert_eq!(sample(&mut logits.clone(), 1.0, 0.3, &mut rng), 1);
        }
        assert_eq!(sample(&mut logits.clone(), 0.0, 1.0, &mut rng), 1);
    }

    #[test]
    fn calls_are_split_from_the_text() {
        let (content, calls, cut) = grammar::split_calls(
            "Let me look.<tool_call>{\"name\": \"search\", \"arguments\": {\"q\": \"Lyon\"}}</tool_call>\n<tool_call>{\"name\": \"x\"",
        );
        assert_eq!(content, "Let me look.");
        assert_eq!(calls, vec![("search".into(), "{\"q\":\"Lyon\"}".into())]);
        assert!(cut);
        let (_, calls, _) = grammar::split_calls(
            "<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"a</tool_call>b\"}}</tool_call>",
        );
        assert_eq!(
            calls,
            vec![("f".into(), "{\"s\":\"a</tool_call>b\"}".into())]
        );
        let (content, calls, cut) = grammar::split_calls("Fine.\n<tool");
        assert_eq!((content.as_str(), calls.len(), cut), ("Fine.", 0, true));
    }
}
