//! Compares Tessera's local model with the llama.cpp reference that
//! `scripts/llm-compare.sh` records (`scripts/llm-reference/llama-cpp.json`):
//! tokenization of each prompt, the greedy tokens from llama.cpp's prompt
//! tokens, top-1 agreement under teacher forcing, and time to first token
//! and decode rate on this machine. Prints one JSON object.
//!
//! ```text
//! cargo run --release -p tessera-models --example llm-compare -- MODEL.gguf REFERENCE.json [as-stored|q8_0|f32]
//! ```
//!
//! The third argument says how the engine holds the weights
//! ([`Weights`]; default: as stored).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_models::llm::{LanguageModel, Weights};

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, reference, weights) = match args.as_slice() {
        [m, r] => (m, r, Weights::AsStored),
        [m, r, w] => (
            m,
            r,
            match w.as_str() {
                "as-stored" => Weights::AsStored,
                "q8_0" => Weights::Q8_0,
                "f32" => Weights::F32,
                other => {
                    return Err(format!("unknown weights `{other}` (as-stored, q8_0, f32)").into());
                }
            },
        ),
        _ => {
            return Err("usage: llm-compare MODEL.gguf REFERENCE.json [as-stored|q8_0|f32]".into());
        }
    };
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(reference)?)?;
    let started = std::time::Instant::now();
    let lm = LanguageModel::load_with("smollm2", &PathBuf::from(model), String::new(), weights)?;
    let load = started.elapsed();

    let f32_greedy: Vec<Vec<u32>> = reference["f32_cache"]["greedy"]
        .as_array()
        .map(|a| a.iter().map(ids).collect())
        .unwrap_or_default();
    let mut prompts = Vec::new();
    let (mut first_ms, mut rates) = (Vec::new(), Vec::new());
    for (i, p) in reference["prompts"]
        .as_array()
        .ok_or("no `prompts`")?
        .iter()
        .enumerate()
    {
        let text = p["prompt"].as_str().ok_or("a prompt has no text")?;
        let theirs = ids(&p["prompt_tokens"]);
        let ours = lm.tokenize(text)?;
        let want = ids(&p["greedy"]);
        let (got, t) = lm.greedy(&theirs, want.len())?;
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        let same_f32 = f32_greedy
            .get(i)
            .map(|w| got.iter().zip(w).take_while(|(a, b)| a == b).count());
        first_ms.push(t.first_token.as_secs_f64() * 1000.0);
        if t.tokens > 1 {
            rates.push(
                f64::from(t.tokens - 1) / t.decode.max(Duration::from_nanos(1)).as_secs_f64(),
            );
        }
        prompts.push(json!({
            "tokenization_identical": ours == theirs,
            "greedy_tokens_compared": want.len(),
            "greedy_identical_prefix": same,
            "greedy_identical_prefix_f32_cache": same_f32,
            // llama.cpp's margin (top-1 logit minus top-2) where the
            // outputs part.
            "llama_cpp_margin_at_divergence": p["greedy_margins"].get(same),
            "ours": got,
            "llama_cpp": want,
        }));
    }
    let tf = &reference["teacher_forcing"];
    let tokens = ids(&tf["tokens"]);
    let want = ids(&tf["top1"]);
    let got = lm.argmax_each(&tokens)?;
    let agree = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    let f32_top1 = ids(&reference["f32_cache"]["teacher_forcing_top1"]);
    let agree_f32 = got.iter().zip(&f32_top1).filter(|(a, b)| a == b).count();
    let llama_self = want.iter().zip(&f32_top1).filter(|(a, b)| a == b).count();
    let margins: Vec<f64> = tf["margins"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let at_disagreement: Vec<f64> = got
        .iter()
        .zip(&want)
        .zip(&margins)
        .filter(|((a, b), _)| a != b)
        .map(|(_, m)| *m)
        .collect();
    let ours_rate = median(rates);
    let theirs_rate = reference["timing"]["decode_tokens_per_s_median"]
        .as_f64()
        .unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "weights": format!("{weights:?}"),
            "load_ms": load.as_secs_f64() * 1000.0,
            "prompts": prompts,
            "teacher_forcing": {
                "positions": want.len(),
                "top1_agreement": agree as f64 / want.len().max(1) as f64,
                "top1_agreement_with_f32_cache": agree_f32 as f64 / f32_top1.len().max(1) as f64,
                "llama_cpp_f16_vs_f32_cache": llama_self as f64 / want.len().max(1) as f64,
                "llama_cpp_margin_median_all": median(margins.clone()),
                "llama_cpp_margin_median_where_disagreeing": median(at_disagreement.clone()),
                "llama_cpp_margin_max_where_disagreeing": at_disagreement.iter().copied().fold(f64::NAN, f64::max),
            },
            "timing": {
                "tessera_first_token_ms_median": median(first_ms),
                "llama_cpp_first_token_ms_median": reference["timing"]["first_token_ms_median"],
                "tessera_decode_tokens_per_s_median": ours_rate,
                "llama_cpp_decode_tokens_per_s_median": theirs_rate,
                "decode_ratio": ours_rate / theirs_rate,
            },
        }))?
    );
    Ok(())
}
