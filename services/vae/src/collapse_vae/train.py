"""Training and scoring loops of the VAE (used by fit, evaluate and the benchmark)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from collapse_vae.model import ConvVae, as_unit, kl_to_prior, recon_nll


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (capped at the CPUs this process may use)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, available)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def neg_elbo_terms(model: ConvVae, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(−log p(x|z), KL(q(z|x) ‖ p(z))) per image (B,), nats; one reparameterised z each."""
    logits, mu, logvar = model(x, noise)  # (B, C, H, W), (B, latent), (B, latent)
    return recon_nll(model.arch, logits, x), kl_to_prior(mu, logvar)


def train_step(model: ConvVae, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
               noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Adam step on a uint8 batch (B, [C,] H, W); returns the detached (recon, kl) sums."""
    recon, kl = neg_elbo_terms(model, as_unit(batch), noise)
    loss = (recon + kl).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return recon.detach().sum(), kl.detach().sum()


@dataclass
class FitResult:
    steps: int
    images_seen: int
    log: list[dict[str, float]]


def fit_model(model: ConvVae, images: torch.Tensor, *, epochs: int, batch_size: int,
              learning_rate: float, seed: int, device: str = "cpu", log_path: Path | None = None,
              label: str = "fit") -> FitResult:
    """Adam on the negative ELBO for ``epochs`` passes over ``images`` (uint8, on the CPU).

    Shuffling and the reparameterisation noise come from generators seeded by ``seed``; the
    last batch of an epoch is kept unless it has a single image (BatchNorm needs two). The
    per-epoch log (mean loss per image, its two parts, optimizer steps so far) goes to
    ``log_path`` as JSON lines with no timings, so it is the same on every identical run.
    """
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    order = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed ^ 0x5EED)
    n = len(images)
    batches = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size) if min(n, s + batch_size) - s >= 2]
    steps, seen, log = 0, 0, []
    with tqdm(total=epochs * len(batches), desc=label, unit="step") as bar:
        for epoch in range(1, epochs + 1):
            permutation = torch.randperm(n, generator=order)
            recon_sum = torch.zeros((), device=device)
            kl_sum = torch.zeros((), device=device)
            count = 0
            for start, stop in batches:
                batch = images[permutation[start:stop]].to(device, non_blocking=True)
                noise = torch.randn(stop - start, model.arch.latent, generator=noise_gen, device=device)
                recon, kl = train_step(model, optimizer, batch, noise)
                recon_sum += recon
                kl_sum += kl
                count += stop - start
                steps += 1
                bar.update(1)
            seen += count
            record = {"epoch": epoch, "step": steps, "loss": (recon_sum + kl_sum).item() / count,
                      "recon": recon_sum.item() / count, "kl": kl_sum.item() / count}
            if not all(math.isfinite(v) for v in record.values()):
                raise FloatingPointError(f"{label}: non-finite training loss at epoch {epoch}: {record}")
            bar.set_postfix(loss=f"{record['loss']:.2f}", refresh=False)
            log.append(record)
    if log_path is not None:
        from collapse.store import atomic_write_bytes

        atomic_write_bytes(log_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in log).encode())
    model.eval()
    return FitResult(steps=steps, images_seen=seen, log=log)


@torch.no_grad()
def score(model: ConvVae, images: torch.Tensor, *, seed: int, batch_size: int,
          device: str = "cpu") -> dict[str, float]:
    """Mean negative ELBO per image and its parts (nats) on uint8 ``images``, one z per image.

    Image i's z noise comes from position i of one seeded stream, whatever ``batch_size``.
    """
    model.to(device).eval()
    noise = torch.randn(len(images), model.arch.latent, generator=torch.Generator().manual_seed(seed))
    recon_total, kl_total = 0.0, 0.0
    for start in range(0, len(images), batch_size):
        x = as_unit(images[start : start + batch_size].to(device))
        recon, kl = neg_elbo_terms(model, x, noise[start : start + batch_size].to(device))
        recon_total += recon.double().sum().item()
        kl_total += kl.double().sum().item()
    n = max(1, len(images))
    return {"test_neg_elbo": (recon_total + kl_total) / n, "test_recon": recon_total / n,
            "test_kl": kl_total / n}
