"""The fit loop: next-token prediction on token windows, single process or data parallel.

One optimizer step consumes ``batch_size`` windows (the *global* batch). Under
``torch.distributed`` every rank walks the same seeded order and takes its own contiguous,
equal slice of each global batch, so N processes make the same updates as one (up to float
error). The learning rate warms up linearly for ``warmup_steps`` steps, then follows a cosine
to ``min_lr_ratio · learning_rate`` at the last step. Per-step JSON lines (the paper's Fig. 4
curves) go to ``log_path`` from rank 0 only.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from collapse.seeds import derive_seed
from collapse_lm.metrics import Windows, autocast, cross_entropy, world
from collapse_lm.settings import TrainSettings

FLUSH_EVERY = 16  # steps between host syncs (loss read-back, DDP loss average, log write)
TAIL_STEPS = 20  # final_train_loss = mean loss of the last TAIL_STEPS steps


def learning_rate_at(step: int, total_steps: int, settings: TrainSettings) -> float:
    """LR of optimizer step ``step`` (0-based): linear warm-up to the peak, cosine to the floor at the last step."""
    peak = settings.learning_rate
    floor = peak * settings.min_lr_ratio
    if step < settings.warmup_steps:
        return peak * (step + 1) / settings.warmup_steps
    decay_steps = total_steps - settings.warmup_steps  # steps warmup … total-1 end at progress 1/decay … 1
    if decay_steps <= 0:
        return peak
    progress = min(1.0, (step + 1 - settings.warmup_steps) / decay_steps)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (the current CUDA device) or ``auto`` (CUDA when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("settings.device is 'cuda' but CUDA is not available; use 'cpu' or 'auto'")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _vocab_size(model: torch.nn.Module) -> int:
    """Rows of the model's input embedding (the ids it accepts)."""
    embedding = model.get_input_embeddings()  # type: ignore[operator]
    return int(embedding.num_embeddings)


def _batch(windows: Windows, indices: np.ndarray, settings: TrainSettings, vocab_size: int,
           device: torch.device) -> torch.Tensor:
    """Stack windows ``indices`` into a (B, block_size+1) int64 tensor on ``device``, checking shape and ids."""
    batch = np.stack([np.asarray(windows[int(i)], dtype=np.int64) for i in indices])  # (B, T+1)
    if batch.shape[1] != settings.block_size + 1:
        raise ValueError(
            f"windows hold {batch.shape[1]} tokens but settings.block_size {settings.block_size} needs "
            f"{settings.block_size + 1}; build the windows with the same block size"
        )
    if batch.min() < 0 or batch.max() >= vocab_size:
        raise ValueError(f"token ids span [{batch.min()}, {batch.max()}], outside the model vocabulary {vocab_size}")
    tensor = torch.from_numpy(batch)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def _loss(model: torch.nn.Module, tokens: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy of a (B, T+1) token batch."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T), (B, T)
    logits = model(input_ids=inputs, use_cache=False).logits  # (B, T, vocab)
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)


def evaluate(model: torch.nn.Module, windows: Windows, settings: TrainSettings,
             device: torch.device | None = None) -> float:
    """Mean next-token loss on the first ``eval_batches · batch_size`` windows (in order), shared over ranks."""
    _, size = world()
    chunk = settings.micro_batch_size or max(1, settings.batch_size // size)
    return cross_entropy(model, windows, batch_size=chunk, device=device,
                         max_windows=settings.eval_batches * settings.batch_size, progress=False)["cross_entropy"]


def _schedule(n_windows: int, settings: TrainSettings) -> tuple[int, int]:
    """(steps per epoch, total steps); the last incomplete batch of each epoch is dropped."""
    per_epoch = n_windows // settings.batch_size
    if per_epoch == 0:
        raise ValueError(
            f"{n_windows} training windows cannot fill one batch of {settings.batch_size}: "
            "lower settings.batch_size or block_size, or train on more data"
        )
    return per_epoch, max(1, math.floor(settings.epochs * per_epoch + 1e-9))


def _global_batches(n_windows: int, settings: TrainSettings) -> Iterator[tuple[int, np.ndarray]]:
    """(1-based epoch, window indices of one global batch) for every step; a fresh seeded order per epoch."""
    per_epoch, total = _schedule(n_windows, settings)
    step, epoch = 0, 0
    while step < total:
        order = np.random.default_rng(derive_seed(settings.seed, "lm-train-order", epoch)).permutation(n_windows)
        epoch += 1
        for start in range(0, per_epoch * settings.batch_size, settings.batch_size):
            if step == total:
                return
            yield epoch, order[start : start + settings.batch_size]
            step += 1


def _optimizer(model: torch.nn.Module, settings: TrainSettings, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on ≥2-D weights (matrices, embeddings) only."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(settings.beta1, settings.beta2),
                             fused=device.type == "cuda")


def train(model: torch.nn.Module, windows: Windows, settings: TrainSettings, *,
          eval_windows: Windows | None = None, log_path: Path | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Fit ``model`` (a causal LM) in place on ``windows`` (each an int array of block_size+1 tokens).

    The model is moved to the settings' device and left there; the settings are recorded in
    ``model.config.collapse_train``. Returns a JSON-ready summary (steps, tokens, final train and
    eval loss, tokens/s, wall seconds). Under an initialised process group the model is wrapped in
    DistributedDataParallel and ``batch_size`` must be divisible by the world size.
    """
    rank, world_size = world()
    if settings.batch_size % world_size:
        raise ValueError(f"batch_size {settings.batch_size} is not divisible by the world size {world_size}")
    per_rank = settings.batch_size // world_size
    micro = settings.micro_batch_size or per_rank
    if per_rank % micro:
        raise ValueError(f"per-rank batch {per_rank} is not divisible by micro_batch_size {micro}")
    device = resolve_device(settings.device)
    per_epoch, total_steps = _schedule(len(windows), settings)
    model.to(device)
    model.train()
    config = getattr(model, "config", None)
    if config is not None:
        config.collapse_train = settings.model_dump()
    vocab = _vocab_size(model)
    wrapped: torch.nn.Module = model
    if world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if settings.compile:
        wrapped = torch.compile(wrapped)  # type: ignore[assignment]
    optimizer = _optimizer(model, settings, device)
    step_tokens = settings.batch_size * settings.block_size
    log = None
    if rank == 0 and log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "w", encoding="utf-8")  # closed in the finally below
    bar = tqdm(total=total_steps, disable=not (progress and rank == 0), desc="fit", unit="step")
    pending: list[dict[str, Any]] = []
    losses: list[float] = []
    eval_loss: float | None = None
    eval_seconds = 0.0
    started = time.perf_counter()

    def flush() -> None:
        """Read back the pending steps' losses (averaged over ranks) and write their log lines."""
        if not pending:
            return
        values = torch.stack([record.pop("loss") for record in pending]).double()
        if world_size > 1:
            dist.all_reduce(values)
            values /= world_size
        norms = torch.stack([record.pop("grad_norm") for record in pending]).double().tolist()
        for record, value, norm in zip(pending, values.tolist(), norms, strict=True):
            losses.append(value)
            record.update(loss=value, grad_norm=norm)
            if log is not None:
                log.write(json.dumps(record) + "\n")
        if log is not None:
            log.flush()
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        pending.clear()

    fork_devices = [device.index] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(derive_seed(settings.seed, "lm-train-torch", rank))  # dropout, if a preset has any
            for step, (epoch, indices) in enumerate(_global_batches(len(windows), settings)):
                mine = indices[rank * per_rank : (rank + 1) * per_rank]  # this rank's slice of the global batch
                lr = learning_rate_at(step, total_steps, settings)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_loss = torch.zeros((), device=device)
                for start in range(0, per_rank, micro):
                    tokens = _batch(windows, mine[start : start + micro], settings, vocab, device)  # (b, T+1)
                    last = start + micro >= per_rank
                    sync = contextlib.nullcontext() if last or world_size == 1 else wrapped.no_sync()  # type: ignore[operator]
                    with sync:
                        with autocast(device):
                            loss = _loss(wrapped, tokens) * (micro / per_rank)
                        loss.backward()  # type: ignore[no-untyped-call]
                    step_loss += loss.detach()
                if settings.grad_clip > 0:
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                else:
                    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                pending.append({"step": step + 1, "epoch": epoch, "lr": lr, "loss": step_loss,
                                "grad_norm": norm.detach(), "tokens": (step + 1) * step_tokens})
                bar.update(1)
                done = step + 1 == total_steps
                evaluate_now = eval_windows is not None and (
                    done or (settings.eval_every > 0 and (step + 1) % settings.eval_every == 0)
                )
                if evaluate_now:
                    record = pending[-1]
                    clock = time.perf_counter()
                    eval_loss = evaluate(model, eval_windows, settings, device)  # type: ignore[arg-type]
                    eval_seconds += time.perf_counter() - clock
                    record["eval_loss"] = eval_loss
                if evaluate_now or done or len(pending) >= FLUSH_EVERY:
                    flush()
    finally:
        bar.close()
        if log is not None:
            log.close()
    wall = time.perf_counter() - started
    tail = losses[-TAIL_STEPS:]
    return {
        "steps": total_steps,
        "steps_per_epoch": per_epoch,
        "epochs": settings.epochs,
        "tokens": total_steps * step_tokens,
        "final_train_loss": float(np.mean(tail)),
        "final_eval_loss": eval_loss,
        "tokens_per_second": total_steps * step_tokens / max(wall - eval_seconds, 1e-9),
        "wall_seconds": wall,
        "world_size": world_size,
        "device": str(device),
    }
