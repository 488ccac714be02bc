"""One fit job, in process or data parallel: ``torchrun --nproc_per_node N -m collapse_lm.ddp --job job.json``.

``job.json`` is a :class:`FitJob`. Every rank builds the same seeded model and the same token
windows; :func:`collapse_lm.train.train` gives each rank its slice of every global batch. Rank 0
writes the log, saves the Hugging Face checkpoint to ``out_dir`` atomically (temp dir + rename)
and writes the summary JSON to ``summary_path``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

from collapse.contracts import DatasetManifest, ManifestEntry
from collapse.store import read_json, write_plain_json
from collapse_lm.model import build_model, count_parameters
from collapse_lm.settings import TrainSettings
from collapse_lm.train import train


class FitJob(BaseModel):
    """What one fit needs: model, settings, data (a manifest file) and where results go."""

    model_config = ConfigDict(extra="forbid")

    preset: str
    vocab_size: int = Field(ge=2)
    bos_id: int = Field(ge=0)
    eos_id: int = Field(ge=0)
    pad_id: int = Field(ge=0)
    model_seed: int = Field(ge=0, lt=2**63)
    settings: TrainSettings
    train_manifest: str = Field(description="path of a DatasetManifest JSON")
    valid_entries: list[ManifestEntry] | None = None
    out_dir: str = Field(description="the checkpoint directory (replaced if it exists)")
    log_path: str | None = None
    summary_path: str | None = None


def save_checkpoint(model: Any, out_dir: str | Path) -> Path:
    """``model.save_pretrained`` into a temporary sibling of ``out_dir``, then rename it into place."""
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, retired / "previous")
            shutil.rmtree(retired)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def run_job(job: dict[str, Any] | FitJob, *, progress: bool = True) -> dict[str, Any]:
    """Run ``job`` in this process (data parallel when a process group is initialised); the summary."""
    from collapse_lm.tokens import TokenWindows

    spec = FitJob.model_validate(job)
    settings = spec.settings
    manifest = read_json(spec.train_manifest, DatasetManifest)
    windows = TokenWindows(manifest.entries, spec.bos_id, settings.block_size)
    eval_windows = None
    if spec.valid_entries:
        eval_windows = TokenWindows(spec.valid_entries, spec.bos_id, settings.block_size)
        if len(eval_windows) == 0:
            raise ValueError(
                f"valid_entries hold {eval_windows.total_tokens} tokens, fewer than one window of "
                f"{settings.block_size + 1}: add validation documents or lower block_size"
            )
    model = build_model(spec.preset, spec.vocab_size, bos_id=spec.bos_id, eos_id=spec.eos_id, pad_id=spec.pad_id,
                        seed=spec.model_seed)
    log_path = Path(spec.log_path) if spec.log_path else None
    summary = train(model, windows, settings, eval_windows=eval_windows, log_path=log_path, progress=progress)
    summary.update(
        preset=spec.preset,
        parameters=count_parameters(model),
        train_windows=len(windows),
        train_documents=windows.documents,
        train_tokens_available=windows.total_tokens,
        out_dir=spec.out_dir,
    )
    distributed = dist.is_available() and dist.is_initialized()
    if not distributed or dist.get_rank() == 0:
        save_checkpoint(model, spec.out_dir)
        if spec.summary_path:
            write_plain_json(spec.summary_path, summary)
    if distributed:
        dist.barrier()
    return summary


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point: set up the process group from the environment, run the job, tear down."""
    parser = argparse.ArgumentParser(prog="python -m collapse_lm.ddp", description=__doc__)
    parser.add_argument("--job", type=Path, required=True, help="FitJob JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.job.is_file():
        parser.error(f"job file {args.job} does not exist")
    spec = FitJob.model_validate(json.loads(args.job.read_text()))
    launched = "WORLD_SIZE" in os.environ and "RANK" in os.environ  # set by torchrun
    if launched:
        device = spec.settings.device
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        run_job(spec, progress=not args.no_progress)
    finally:
        if launched:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
