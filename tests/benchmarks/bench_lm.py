"""lm training benchmark (`nox -s bench`): the lab's fit vs a minimal hand-written loop.

Same preset, same batch, same windows, same thread count, measured in one run; prints tokens/s
and the ratio (target >= 0.9). Sampling speed (HF batched vs vLLM vs a naive loop) is
`nox -s bench-sampling`, which needs the vLLM environment.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from collapse_lm.model import build_model
from collapse_lm.settings import TrainSettings
from collapse_lm.train import train


def minimal_loop(model: torch.nn.Module, windows: list[np.ndarray], batch: int, steps: int, lr: float) -> float:
    """Plain AdamW next-token training; tokens/s over all steps (as the lab's summary counts them)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    start, tokens = time.perf_counter(), 0
    for step in range(steps):
        chunk = torch.from_numpy(np.stack(windows[step * batch : (step + 1) * batch]))  # (B, T+1)
        logits = model(chunk[:, :-1]).logits  # (B, T, vocab)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens += chunk[:, :-1].numel()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="gpt2-mini")
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    windows = list(rng.integers(3, args.vocab_size, size=(args.steps * args.batch, args.block + 1)))
    ids = {"bos_id": 0, "eos_id": 1, "pad_id": 2}
    hand = minimal_loop(build_model(args.preset, args.vocab_size, **ids, seed=0), windows, args.batch,
                        args.steps, 1e-3)
    settings = TrainSettings(batch_size=args.batch, block_size=args.block, learning_rate=1e-3,
                             epochs=1, eval_every=0)
    summary = train(build_model(args.preset, args.vocab_size, **ids, seed=0), windows, settings, progress=False)
    lab = float(summary["tokens_per_second"])
    print(f"\nlm training, {args.preset}, vocab {args.vocab_size}, batch {args.batch} × block {args.block}, "
          f"{torch.get_num_threads()} threads")
    print(f"  minimal hand-written loop: {hand:10.0f} tokens/s")
    print(f"  the lab's fit:             {lab:10.0f} tokens/s")
    print(f"  ratio lab / minimal:       {lab / hand:10.2f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
