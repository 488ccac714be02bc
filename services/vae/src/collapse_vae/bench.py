"""Throughput of the VAE: training and sampling images/s at the default and paper resolutions,
and the lab's training loop against a plain hand-written loop on the same model and batches.
On the CPU the clock is the process's CPU time, so that other jobs on a shared machine distort
the numbers less; with more than one thread it sums the threads' time.

    python -m collapse_vae.bench [--threads 2] [--device cpu] [--rounds 3]

The lab/plain ratio should be >= 0.9: the lab's loop (seeded shuffling, per-epoch log,
progress bar) must cost next to nothing beyond the model's own forward/backward.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from collapse_vae.config import PRESETS
from collapse_vae.model import ConvVae, VaeArch, parameter_count
from collapse_vae.service import decode_items
from collapse_vae.train import fit_model, torch_threads


@dataclass(frozen=True)
class Case:
    name: str
    arch: VaeArch
    batch_size: int
    train_images: int  # images per timed training pass
    sample_images: int


def _cases(quick: bool) -> list[Case]:
    default = PRESETS["default"]
    small = VaeArch(1, 28, 28, tuple(default["model"]["hidden"]), default["model"]["latent"])
    paper = VaeArch(3, 64, 64)  # App. E
    scale = 4 if quick else 1
    return [
        Case("default (Fashion-MNIST 28×28×1, preset network)", small, default["train"]["batch_size"],
             4096 // scale, 4096 // scale),
        Case("paper (CelebA 64×64×3, App. E network)", paper, 64, 512 // scale, 1024 // scale),
    ]


def plain_epoch(model: ConvVae, images: torch.Tensor, batch_size: int, lr: float, device: str) -> None:
    """The textbook loop: in-order batches, float conversion, forward, −ELBO, Adam step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for start in range(0, len(images) - 1, batch_size):
        x = images[start : start + batch_size].to(device).float().div(255)
        x = x if x.dim() == 4 else x.unsqueeze(1)
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = model.decode(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = (recon + kl) / len(x)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _clock(device: str) -> float:
    """CPU seconds of this process on the CPU (less disturbed by other jobs on a shared
    machine than wall time), wall seconds on a GPU."""
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def bench_case(case: Case, rounds: int, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (case.train_images, *case.arch.image_shape), dtype=torch.uint8)
    base = ConvVae(case.arch)
    warm = copy.deepcopy(base).to(device)
    plain_epoch(warm, images[: 2 * case.batch_size], case.batch_size, 1e-3, device)  # warm-up

    def lab() -> float:
        model = copy.deepcopy(base)
        started = _clock(device)
        fit_model(model, images, epochs=1, batch_size=case.batch_size, learning_rate=1e-3, seed=0,
                  device=device, label="lab loop")
        return _clock(device) - started

    def plain() -> float:
        model = copy.deepcopy(base).to(device)
        started = _clock(device)
        plain_epoch(model, images, case.batch_size, 1e-3, device)
        return _clock(device) - started

    lab_s, plain_s, sample_s = [], [], []
    for r in range(rounds):  # alternating order; the median ratio of rounds resists a busy machine
        if r % 2:
            plain_s.append(plain())
            lab_s.append(lab())
        else:
            lab_s.append(lab())
            plain_s.append(plain())
        model = copy.deepcopy(base).to(device).eval()
        started = _clock(device)
        decode_items(model, 0, case.sample_images, seed=0, iteration=1, device=device)
        sample_s.append(_clock(device) - started)
    ratios = sorted(p / q for p, q in zip(plain_s, lab_s, strict=True))
    return {"parameters": parameter_count(base), "lab_train": case.train_images / min(lab_s),
            "plain_train": case.train_images / min(plain_s), "sample": case.sample_images / min(sample_s),
            "ratio": ratios[len(ratios) // 2], "ratio_best": min(plain_s) / min(lab_s),
            "ratio_low": ratios[0], "ratio_high": ratios[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a quarter of the images (a smoke run)")
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
        rows = [(case, bench_case(case, args.rounds, args.device)) for case in _cases(args.quick)]
    print(f"\n{'case':<52} {'params':>10} {'train img/s':>12} {'plain img/s':>12} {'lab/plain':>10} "
          f"{'sample img/s':>13}")
    for case, r in rows:
        print(f"{case.name:<52} {int(r['parameters']):>10,} {r['lab_train']:>12.1f} {r['plain_train']:>12.1f} "
              f"{r['ratio']:>10.3f} {r['sample']:>13.1f}")
    for case, r in rows:
        print(f"{case.name}: lab/plain per round {r['ratio_low']:.3f}..{r['ratio_high']:.3f}, "
              f"best round vs best round {r['ratio_best']:.3f}")
    worst = min(r["ratio"] for _, r in rows)
    clock = "wall" if args.device == "cuda" else "process CPU"
    print(f"\nimages/s per {clock} second (best round); lab/plain = median over rounds of plain time / "
          f"lab time on the same model and batches: worst {worst:.3f} (target >= 0.9)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
