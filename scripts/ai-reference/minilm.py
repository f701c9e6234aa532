#!/usr/bin/env python3
"""Independent reference embeddings for sentence-transformers/all-MiniLM-L6-v2.

Usage: python minilm.py MODEL_DIR < sentences.json > embeddings.json

Input: a JSON list of strings. Output: JSON
  {"model": "...", "embeddings": [[f32, ...], ...], "ids": [[token ids], ...]}
with one 384-dimensional, L2-normalised embedding and the token ids
(with [CLS] and [SEP], without padding) per sentence.

The BERT encoder runs as a plain NumPy forward pass in float64 (no torch,
no transformers), so it checks a host implementation independently:
  embeddings (word + position + token type, LayerNorm)
  -> N x [self-attention with the padding mask, add & LayerNorm,
          GELU feed-forward, add & LayerNorm]
  -> mean pooling over the attention mask -> L2 normalisation,
which is what sentence-transformers does for this model (modules.json:
Transformer, Pooling with mean tokens, Normalize). BERT's pooler layer is
not used.
"""
import json
import math
import os
import sys
from pathlib import Path

# The matrices of one sentence are small: BLAS threads only contend for the
# cores (five times slower on a busy two-core machine). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# Exact GELU, 0.5 * x * (1 + erf(x / sqrt(2))), as BERT's "gelu" is; NumPy
# has no erf, so math.erf is applied element-wise.
_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as torch
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x, w, prefix):
    # torch's nn.Linear stores the weight as [out, in]: y = x W^T + b.
    return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]


def encode(w, cfg, ids, type_ids, mask):
    """The BERT encoder: [B, L] ids -> [B, L, hidden] last hidden states."""
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    batch, length = ids.shape
    head_dim = cfg["hidden_size"] // heads

    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][np.arange(length)][None]
         + w["embeddings.token_type_embeddings.weight"][type_ids])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)

    # Keys that are padding get no attention: their scores become -inf
    # (every row keeps at least [CLS], so the softmax stays defined).
    real = mask.astype(bool)  # [B, L]
    key_ok = real[:, None, None, :]  # [B, 1, 1, L]

    def split(t):  # [B, L, H*D] -> [B, H, L, D]
        return t.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = split(linear(x, w, p + "attention.self.query"))
        k = split(linear(x, w, p + "attention.self.key"))
        v = split(linear(x, w, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)  # [B, H, L, L]
        scores = np.where(key_ok, scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, heads * head_dim)
        x = layer_norm(x + linear(ctx, w, p + "attention.output.dense"),
                       w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        # GELU element by element is slow in Python, so only the real
        # tokens get it; padding positions are never attended to, whatever
        # their values, and stay 0 here.
        pre = linear(x, w, p + "intermediate.dense")
        h = np.zeros_like(pre)
        h[real] = gelu(pre[real])
        x = layer_norm(x + linear(h, w, p + "output.dense"),
                       w[p + "output.LayerNorm.weight"],
                       w[p + "output.LayerNorm.bias"], eps)
    return x


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python minilm.py MODEL_DIR < sentences.json > embeddings.json")
    model_dir = Path(sys.argv[1])
    cfg = json.loads((model_dir / "config.json").read_text())
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    st_cfg = json.loads((model_dir / "sentence_bert_config.json").read_text())

    # What this script implements; fail loudly on any other model.
    assert cfg["model_type"] == "bert" and cfg["hidden_act"] == "gelu", cfg
    assert cfg["position_embedding_type"] == "absolute", cfg
    assert pooling["pooling_mode_mean_tokens"] and not any(
        pooling[k] for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                             "pooling_mode_mean_sqrt_len_tokens")), pooling
    max_len = st_cfg["max_seq_length"]
    assert max_len == 256, st_cfg

    sentences = json.load(sys.stdin)
    assert isinstance(sentences, list) and sentences and all(isinstance(s, str) for s in sentences), \
        "input: a non-empty JSON list of strings"

    # tokenizer.json itself says truncate to 128 and pad to a fixed 128;
    # sentence-transformers truncates to max_seq_length and pads to the
    # longest sequence of the batch, so set that here.
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=cfg["pad_token_id"], pad_token="[PAD]")  # to the longest
    enc = tok.encode_batch(sentences)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    type_ids = np.array([e.type_ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.float64)

    # All the math in float64, from the float32 weights.
    w = {k: v.astype(np.float64) for k, v in load_file(str(model_dir / "model.safetensors")).items()
         if not k.startswith("pooler.") and k != "embeddings.position_ids"}

    # One sentence at a time, trimmed to its own tokens: padding all of them
    # to the longest makes this several times slower, for the same result
    # (encode() masks padding, so it takes padded batches just as well).
    out = np.zeros((len(enc), cfg["hidden_size"]))
    for i in range(len(enc)):
        n = int(mask[i].sum())
        b_ids, b_types, b_mask = ids[i:i + 1, :n], type_ids[i:i + 1, :n], mask[i:i + 1, :n]
        hidden = encode(w, cfg, b_ids, b_types, b_mask)
        # Mean over the real tokens ([CLS] and [SEP] included, padding not).
        summed = (hidden * b_mask[:, :, None]).sum(axis=1)
        out[i] = summed[0] / max(b_mask.sum(), 1e-9)
    # L2 normalisation (the Normalize module; torch's F.normalize eps).
    out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)

    json.dump({
        "model": MODEL_NAME,
        # Rounded to float32; 9 significant digits round-trip any f32.
        "embeddings": [[float(f"{v:.9g}") for v in row.astype(np.float32)] for row in out],
        "ids": [[int(t) for t, m in zip(r, mk) if m] for r, mk in zip(ids, mask)],
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
