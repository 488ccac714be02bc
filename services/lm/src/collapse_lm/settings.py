"""Training and sampling settings: plain pydantic, importable without torch (configs, checks)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from collapse.contracts import Contract


class TrainSettings(BaseModel):
    """Optimisation hyper-parameters of one fit (recorded in the checkpoint's config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float = Field(default=1.0, gt=0, le=10_000, description="passes over the windows (fractions allowed)")
    batch_size: int = Field(default=32, ge=1, description="global batch: windows per optimizer step, all ranks")
    micro_batch_size: int | None = Field(
        default=None, ge=1, description="windows per forward pass and rank (gradient accumulation); None = all"
    )
    block_size: int = Field(default=128, ge=1, description="tokens per window input (windows hold block_size+1)")
    learning_rate: float = Field(default=1e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine floor as a fraction of the peak")
    warmup_steps: int = Field(default=0, ge=0, description="optimizer steps of linear warm-up (absolute count)")
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW decay, applied to ≥2-D weights only")
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    grad_clip: float = Field(default=1.0, ge=0, description="max global gradient norm; 0 = no clipping")
    compile: bool = Field(default=False, description="torch.compile the model")
    eval_every: int = Field(default=0, ge=0, description="evaluate every this many steps; 0 = only at the end")
    eval_batches: int = Field(default=20, ge=1, description="evaluate on at most this many batches")
    seed: int = Field(default=0, ge=0, lt=2**63, description="window order (per epoch) and torch RNG")
    device: Literal["cpu", "cuda", "auto"] = "cpu"


class SamplingSettings(Contract):
    """How samples are drawn (the same for every backend)."""

    temperature: float = Field(default=1.0, gt=0, description="softmax temperature (paper ablation: 0.3)")
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling mass; 1.0 = off")
    top_k: int = Field(default=0, ge=0, description="keep the k most likely tokens; 0 = off")
    max_new_tokens: int = Field(default=256, ge=1, description="tokens generated after BOS at most")
    batch_size: int = Field(default=64, ge=1, description="sequences generated together")
