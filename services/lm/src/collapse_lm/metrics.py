"""Evaluation of a language model and of the text it generates.

* :func:`cross_entropy` — mean next-token cross entropy (nats) of a model on held-out windows,
  and its perplexity: the paper's test loss (Sec. 3.1).
* Sample statistics on generated token ids (lists without the BOS prompt): diversity
  (:func:`distinct_n`), length, how often a sample ends with EOS, and how far the generated unigram
  distribution has drifted from the real one (:func:`unigram_kl`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

Sample = Sequence[int]


class Windows(Protocol):
    """Any indexable collection of token windows, e.g. :class:`collapse_lm.tokens.TokenWindows` or a list."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> np.ndarray:
        """(block_size + 1,) integer token ids: inputs ``[:-1]``, targets ``[1:]``."""
        ...


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA, plain fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Cross entropy on real windows: the one implementation (fit-time evaluation and evaluate stage)
# ---------------------------------------------------------------------------------------------


def _logits(model: Any, inputs: torch.Tensor) -> torch.Tensor:
    """Logits (B, L, V) of an HF causal LM (``.logits``) or of a module returning the tensor itself."""
    output = model(inputs)
    return output.logits if hasattr(output, "logits") else output


@torch.no_grad()
def cross_entropy(
    model: torch.nn.Module,
    windows: Windows,
    *,
    batch_size: int,
    device: str | torch.device | None = None,
    max_windows: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Mean next-token cross entropy (nats per predicted token) of ``model`` over ``windows``.

    Each window ``w`` is an int array of shape (block + 1,): the inputs are ``w[:-1]``, the
    targets ``w[1:]``. The mean is over all predicted tokens of the first ``max_windows`` windows
    (all when None). Under an initialised process group every rank scores every world-th window
    and the sums are reduced, so any number of ranks gives the same value. Logits are scored in
    fp32 (bf16 autocast for the forward on CUDA). The model's training mode is restored.
    Returns ``{"cross_entropy": nats, "perplexity": exp(nats)}``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    count = len(windows) if max_windows is None else min(len(windows), max_windows)
    if count == 0:
        raise ValueError("cross_entropy needs at least one window (got none): check the validation split")
    lengths = {np.asarray(windows[i]).shape for i in range(min(count, batch_size))}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1 or next(iter(lengths))[0] < 2:
        raise ValueError(f"windows must be 1-D arrays of one length block + 1 >= 2, got shapes {sorted(lengths)}")
    rank, size = world()
    mine = np.arange(rank, count, size)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # (nats, predicted tokens)
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(mine), batch_size)
        for start in tqdm(starts, desc="cross entropy", unit="batch", disable=not progress, leave=False):
            batch = np.stack([np.asarray(windows[int(i)], dtype=np.int64) for i in mine[start : start + batch_size]])
            tokens = torch.from_numpy(batch).to(device)  # (B, block + 1)
            inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, block) each
            with autocast(device):
                logits = _logits(model, inputs)  # (B, block, V)
            nats = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
            totals[0] += nats.double()
            totals[1] += targets.numel()
    finally:
        model.train(was_training)
    if size > 1:
        dist.all_reduce(totals)
    mean = float(totals[0] / totals[1])
    return {"cross_entropy": mean, "perplexity": math.exp(mean)}


# ---------------------------------------------------------------------------------------------
# Statistics of generated samples
# ---------------------------------------------------------------------------------------------


def distinct_n(samples: Sequence[Sample], n: int) -> float:
    """Unique n-grams / total n-grams, pooled over all samples (n-grams do not cross samples).

    0.0 when no sample has ``n`` tokens. EOS tokens count like any other token.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[int, ...]] = set()
    total = 0
    for sample in samples:
        tokens = tuple(int(t) for t in sample)
        for i in range(len(tokens) - n + 1):
            seen.add(tokens[i : i + n])
            total += 1
    return len(seen) / total if total else 0.0


def _require_samples(samples: Sequence[Sample], what: str) -> None:
    if len(samples) == 0:
        raise ValueError(f"{what} needs at least one sample (got none)")


def mean_length(samples: Sequence[Sample]) -> float:
    """Mean number of generated tokens per sample (EOS included when present)."""
    _require_samples(samples, "mean_length")
    return float(np.mean([len(sample) for sample in samples]))


def eos_fraction(samples: Sequence[Sample], eos_id: int) -> float:
    """Fraction of samples that end with ``eos_id`` (the others hit ``max_new_tokens``)."""
    _require_samples(samples, "eos_fraction")
    return float(np.mean([len(sample) > 0 and int(sample[-1]) == eos_id for sample in samples]))


def real_unigram_counts(windows_or_token_arrays: Iterable[np.ndarray | Sequence[int]], vocab_size: int) -> np.ndarray:
    """Token counts (int64, shape (vocab_size,)) over arrays of token ids.

    Pass the real token stream (or non-overlapping windows): overlapping windows count the shared
    tokens more than once.
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    for tokens in windows_or_token_arrays:
        array = np.asarray(tokens, dtype=np.int64).ravel()
        if array.size and (array.min() < 0 or array.max() >= vocab_size):
            raise ValueError(f"token ids must lie in [0, {vocab_size}), got range [{array.min()}, {array.max()}]")
        counts += np.bincount(array, minlength=vocab_size)
    return counts


def unigram_kl(
    samples: Sequence[Sample],
    real_counts: np.ndarray,
    vocab_size: int,
    *,
    alpha: float = 1.0,
    ignore_ids: Sequence[int] = (),
) -> float:
    """KL(P_real ‖ P_generated) in nats between unigram distributions, with additive smoothing.

    Direction: the expectation is under the REAL distribution, ``sum_v P_real(v) log(P_real(v) /
    P_gen(v))``, so it grows when the model stops producing tokens that real text uses (the tails
    vanishing under model collapse), and stays finite thanks to the smoothing. Both distributions
    are ``(count + alpha) / (total + alpha * V)`` over the ``V`` ids kept; ``ignore_ids`` (e.g. BOS,
    which real windows contain and samples never do, or padding) are dropped from both first.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 to keep the KL finite, got {alpha}")
    real = np.asarray(real_counts, dtype=np.float64)
    if real.shape != (vocab_size,):
        raise ValueError(f"real_counts must have shape ({vocab_size},), got {real.shape}: use real_unigram_counts")
    generated = real_unigram_counts((np.asarray(s, dtype=np.int64) for s in samples), vocab_size).astype(np.float64)
    keep = np.ones(vocab_size, dtype=bool)
    keep[list(ignore_ids)] = False
    real, generated = real[keep] + alpha, generated[keep] + alpha  # (V',) each
    p_real, p_gen = real / real.sum(), generated / generated.sum()
    return float(np.sum(p_real * (np.log(p_real) - np.log(p_gen))))


def sample_metrics(
    samples: Sequence[Sample],
    real_counts: np.ndarray,
    vocab_size: int,
    eos_id: int,
    *,
    ignore_ids: Sequence[int] = (),
) -> dict[str, float]:
    """distinct_1/2/3, mean_length, eos_fraction and unigram_kl (alpha 1) of generated samples."""
    return {
        "distinct_1": distinct_n(samples, 1),
        "distinct_2": distinct_n(samples, 2),
        "distinct_3": distinct_n(samples, 3),
        "mean_length": mean_length(samples),
        "eos_fraction": eos_fraction(samples, eos_id),
        "unigram_kl": unigram_kl(samples, real_counts, vocab_size, ignore_ids=ignore_ids),
    }
