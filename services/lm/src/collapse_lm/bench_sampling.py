"""Sampling throughput of the backends, and the small random models it (and the tests) run on.

``benchmark_samplers`` times the naive loop (the baseline), batched HF ``generate`` and vLLM on
one saved model and prints tokens/s with ratios against the naive loop measured in the same run.
``python -m collapse_lm.bench_sampling`` builds randomly initialised models of the lab's presets
(``gpt2-mini``, ``gpt2-9m``; plus a tiny one-head GPT-2; no download) and benchmarks each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from collapse.seeds import derive_seed, rng_for
from collapse_lm.sample import HFSampler, NaiveSampler, VllmSampler, vllm_installed
from collapse_lm.settings import SamplingSettings
from collapse_lm.tokenizer import BOS, EOS, PAD, train_tokenizer

SPECIAL_TOKENS = (BOS, EOS, PAD)  # ids 0, 1, 2 in every tokenizer built here

_WORDS = (
    "the a little big dog cat girl boy tree sun moon ball red blue happy sad ran jumped saw said "
    "played found went home park friend mom dad one day once upon time there was she he they it "
    "and but so then with to in on under over very good bad nice fun toy box bird fish water"
).split()


@dataclass(frozen=True)
class TinyLm:
    """A saved model + tokenizer and the special-token ids they share."""

    model_dir: Path
    tokenizer_dir: Path
    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int


def synthetic_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` short pseudo-stories from a fixed word list (for tokenizer training)."""
    rng = rng_for(seed, "bench_sampling", "texts")
    texts = []
    for _ in range(count):
        words = rng.choice(len(_WORDS), size=int(rng.integers(5, 40)))
        texts.append(" ".join(_WORDS[i] for i in words) + ".")
    return texts


def build_tokenizer(out_dir: Path, vocab_size: int, texts: Sequence[str] | None = None) -> dict[str, int]:
    """The lab's byte-level BPE (:func:`collapse_lm.tokenizer.train_tokenizer`) on ``texts``
    (synthetic if None), saved in ``out_dir``; returns the special-token ids (bos, eos, pad)."""
    tokenizer = train_tokenizer(texts if texts is not None else synthetic_texts(2000), vocab_size, Path(out_dir))
    return {"bos": int(tokenizer.bos_token_id), "eos": int(tokenizer.eos_token_id),
            "pad": int(tokenizer.pad_token_id)}


def build_random_gpt2(
    out_dir: Path,
    *,
    vocab_size: int,
    d_model: int,
    n_layer: int,
    n_head: int,
    n_positions: int,
    bos_id: int = 0,
    eos_id: int = 1,
    pad_id: int = 2,
    seed: int = 0,
    initializer_range: float = 0.02,
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 saved to ``out_dir`` with safetensors (seeded)."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=d_model,
        n_layer=n_layer,
        n_head=n_head,
        n_positions=n_positions,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        initializer_range=initializer_range,
    )
    torch.manual_seed(derive_seed(seed, "bench_sampling", "init") % (2**63))
    model = GPT2LMHeadModel(config)
    model.train(False)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def build_test_lm(
    out_dir: Path,
    *,
    vocab_size: int = 300,
    d_model: int = 32,
    n_layer: int = 2,
    n_head: int = 1,
    n_positions: int = 128,
    seed: int = 0,
    initializer_range: float = 0.02,
) -> TinyLm:
    """Tokenizer and random GPT-2 in one directory (vLLM reads both from there).

    The default is tiny (300 tokens, d 32, 2 layers) with one head, because vLLM's CPU attention
    supports head sizes 32, 64, 80, … only.
    """
    out_dir = Path(out_dir)
    ids = build_tokenizer(out_dir, vocab_size)
    build_random_gpt2(
        out_dir, vocab_size=vocab_size, d_model=d_model, n_layer=n_layer, n_head=n_head, n_positions=n_positions,
        bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"], seed=seed, initializer_range=initializer_range,
    )
    return TinyLm(out_dir, out_dir, ids["bos"], ids["eos"], ids["pad"], vocab_size)


def build_fixed_logits_lm(
    out_dir: Path,
    logits: Sequence[float] | np.ndarray,
    *,
    d_model: int = 32,
    n_layer: int = 1,
    n_positions: int = 128,
    seed: int = 0,
) -> TinyLm:
    """A GPT-2 whose next-token logits are exactly ``logits`` after every prefix (plus its tokenizer).

    The final layer norm gets weight 0 and bias ``e_0``, so the last hidden state is the constant
    ``e_0`` and the (tied) output layer returns column 0 of the embedding, which is set to
    ``logits``: every generated token is an independent draw from ``softmax(logits / T)``, which
    makes the sampling distribution exactly checkable (and EOS frequent when ``logits[eos]`` is high).
    """
    vocab_size = len(logits)
    out_dir = Path(out_dir)
    ids = build_tokenizer(out_dir, vocab_size)
    model = build_random_gpt2(
        out_dir, vocab_size=vocab_size, d_model=d_model, n_layer=n_layer, n_head=1, n_positions=n_positions,
        bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"], seed=seed,
    )
    with torch.no_grad():
        model.transformer.wte.weight[:, 0] = torch.as_tensor(logits, dtype=torch.float32)  # (V,)
        model.transformer.ln_f.weight.zero_()  # (d,)
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
    model.save_pretrained(out_dir, safe_serialization=True)
    return TinyLm(out_dir, out_dir, ids["bos"], ids["eos"], ids["pad"], vocab_size)


def _time_sampler(sampler: Any, seeds: Sequence[int], warmup_seeds: Sequence[int]) -> dict[str, float]:
    if warmup_seeds:
        sampler.generate(warmup_seeds)
    start = time.perf_counter()
    samples = sampler.generate(seeds)
    seconds = time.perf_counter() - start
    tokens = sum(len(s) for s in samples)
    return {"samples": len(samples), "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "mean_length": tokens / max(1, len(samples))}


def benchmark_samplers(
    model_dir: Path,
    tokenizer_dir: Path,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    n_samples: int = 64,
    max_new_tokens: int = 128,
    batch_size: int = 64,
    temperature: float = 1.0,
    naive_samples: int | None = None,
    backends: Sequence[str] = ("naive", "hf", "vllm"),
    run_dir: Path | None = None,
    seed: int = 0,
    label: str = "",
    threads: int | None = None,
) -> dict[str, Any]:
    """Time each backend on ``model_dir``; print tokens/s and ratios against the naive loop.

    Throughput is generated tokens (EOS included) per wall-clock second of ``generate``, after a
    short warm-up call. ``naive_samples`` (default ``n_samples``) lets the slow baseline run on fewer
    samples: its rate hardly depends on how many. vLLM is skipped with a note when it is not
    installed here (it lives in its own environment). ``threads`` sets torch's intra-op threads for
    the HF backends and ``VLLM_CPU_OMP_THREADS_BIND`` (cores ``0..threads-1``) for vLLM; on a busy
    machine one thread gives the steadiest numbers. Returns the measurements as a dict.
    """
    settings = SamplingSettings(temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size)
    seeds = [derive_seed(seed, "bench_sampling", i) for i in range(n_samples)]
    warmup = [derive_seed(seed, "bench_sampling", "warmup", i) for i in range(2)]
    results: dict[str, Any] = {"label": label, "model_dir": str(model_dir), "n_samples": n_samples,
                               "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                               "threads": threads or torch.get_num_threads(), "backends": {}}
    default_threads = torch.get_num_threads()
    for backend in backends:
        torch.set_num_threads(threads or default_threads)  # again each time: a vLLM engine may have lowered it
        if backend == "naive":
            sampler: Any = NaiveSampler(model_dir, settings, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
            measured = _time_sampler(sampler, seeds[: naive_samples or n_samples], warmup[:1])
        elif backend == "hf":
            sampler = HFSampler(model_dir, settings, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
            measured = _time_sampler(sampler, seeds, warmup)
        elif backend == "vllm":
            if not vllm_installed():
                results["backends"]["vllm"] = {"skipped": f"vLLM is not installed in {sys.executable}"}
                continue
            if threads is not None:
                os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "0" if threads == 1 else f"0-{threads - 1}"
            with tempfile.TemporaryDirectory() as scratch:
                start = time.perf_counter()
                sampler = VllmSampler(model_dir, tokenizer_dir, settings, bos_id=bos_id, eos_id=eos_id,
                                      run_dir=Path(run_dir) if run_dir is not None else Path(scratch))
                startup = time.perf_counter() - start
                measured = _time_sampler(sampler, seeds, warmup)
                measured["startup_seconds"] = startup
        else:
            raise ValueError(f"unknown backend {backend!r}: choose from 'naive', 'hf', 'vllm'")
        results["backends"][backend] = measured
        del sampler
        gc.collect()
    baseline = results["backends"].get("naive", {}).get("tokens_per_s")
    print(f"== sampling throughput {label} ({model_dir}); {n_samples} samples, max_new_tokens={max_new_tokens}, "
          f"batch {batch_size}, threads {results['threads']}")
    for backend, measured in results["backends"].items():
        if "skipped" in measured:
            print(f"  {backend:>6}: skipped ({measured['skipped']})")
            continue
        ratio = measured["tokens_per_s"] / baseline if baseline else float("nan")
        measured["speedup_vs_naive"] = ratio
        extra = f", engine start {measured['startup_seconds']:.1f} s" if "startup_seconds" in measured else ""
        print(f"  {backend:>6}: {measured['tokens_per_s']:10.1f} tokens/s  ({measured['tokens']} tokens in "
              f"{measured['seconds']:.2f} s, mean length {measured['mean_length']:.1f}) = {ratio:6.2f}x naive{extra}")
    return results


# name: (the lab's model preset, vocabulary); "tiny" is build_test_lm's one-head GPT-2 (vLLM's CPU
# attention needs head sizes >= 32), the others are exactly the presets lineages train
BENCH_MODELS: dict[str, tuple[str | None, int]] = {
    "tiny": (None, 300),
    "small": ("gpt2-mini", 2000),
    "9m": ("gpt2-9m", 8000),
}


def build_preset_lm(out_dir: Path, preset: str, vocab_size: int, seed: int = 0) -> TinyLm:
    """A tokenizer and a freshly initialised model of the lab preset ``preset`` in one directory."""
    from collapse_lm.model import build_model

    out_dir = Path(out_dir)
    ids = build_tokenizer(out_dir, vocab_size)
    model = build_model(preset, vocab_size, bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"],
                        seed=derive_seed(seed, "bench_sampling", "init"))
    model.save_pretrained(out_dir)
    return TinyLm(out_dir, out_dir, ids["bos"], ids["eos"], ids["pad"], vocab_size)


def main(argv: Sequence[str] | None = None) -> int:
    """Build randomly initialised models (the lab's presets) and benchmark the samplers on each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BENCH_MODELS), choices=list(BENCH_MODELS))
    parser.add_argument("--backends", nargs="+", default=["naive", "hf", "vllm"], choices=["naive", "hf", "vllm"])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--naive-samples", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=None, help="where models are built (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=None, help="torch / vLLM OMP threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    all_results = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch)
        for name in args.models:
            preset, vocab = BENCH_MODELS[name]
            lm = (build_preset_lm(root / name, preset, vocab) if preset is not None
                  else build_test_lm(root / name, vocab_size=vocab, n_positions=256))
            all_results.append(benchmark_samplers(
                lm.model_dir, lm.tokenizer_dir, bos_id=lm.bos_id, eos_id=lm.eos_id, pad_id=lm.pad_id,
                n_samples=args.samples, naive_samples=args.naive_samples, max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size, backends=args.backends, run_dir=root / name / "run", label=name,
                threads=args.threads,
            ))
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=2, default=str))
    return 0


__all__ = ["BENCH_MODELS", "SPECIAL_TOKENS", "TinyLm", "benchmark_samplers", "build_fixed_logits_lm", "build_preset_lm",
           "build_random_gpt2", "build_test_lm", "build_tokenizer", "synthetic_texts"]

if __name__ == "__main__":
    raise SystemExit(main())
