"""The lm BentoML service: ``generate`` stories and ``score`` texts with one trained iteration.

Serve it from the project root (model choice and paths: :mod:`collapse.serving`)::

    COLLAPSE_LINEAGE=lm-replace COLLAPSE_ITERATION=2 \\
        bentoml serve collapse_lm.serving:LmService --port 3001

* ``POST /generate`` — ``{"n": 4, "start": 0, "seed": null, "prompt": null, "max_new_tokens":
  null, "temperature": null, "top_p": null, "top_k": null}`` → ``texts`` and their ``tokens``.

  *Unconditional* (no prompt, or ``""``): documents ``start .. start+n-1`` of model n's stream of
  ``seed``, drawn by :meth:`collapse_lm.service.LmGenerator.sample` — the generate stage's own
  call. Document i is drawn from BOS with its own seed ``sample_seed(seed, n, i) =
  derive_seed(seed, "lm", "sample", n, i)`` (Gumbel-max noise per row), so it is the same in
  any batch. With ``seed`` left out the stream is the lineage's seed, and with the sampling
  fields left out the settings are the lineage config's, so the tokens equal documents
  ``start .. start+n-1`` of ``runs/lm/<lineage>/iter_<n>/samples/shard.npy`` (without their
  BOS). A sampling field that is given replaces the config's value for this request only.

  *Conditional* (a prompt): a separate path, not a pipeline stream. The prompt is encoded with
  the model's tokenizer and the model continues ``[BOS] + prompt`` with the same processors
  (temperature → top-k → top-p → Gumbel noise seeded by ``sample_seed(seed, n, i)`` for row i),
  so an answer is reproducible from (model, prompt, seed, i) and independent of the batch, but it
  is not an item of any shard. ``texts`` then hold the continuations only (``prompt`` is echoed).
* ``POST /score`` — ``{"texts": [...]}`` → per-text cross-entropy in nats per predicted token,
  each text scored as a training document (``[BOS] + tokens + [EOS]``, every token after BOS
  predicted) in windows of the model's context, with :func:`collapse_lm.metrics.cross_entropy`
  (the evaluate stage's implementation).
* ``POST /models``; ``GET /ui/`` — the lineages, and a page to compare stories side by side.

Every answer carries ``model`` (:class:`collapse.serving.ModelInfo`). torch and transformers are
imported when the service starts (in ``__init__``), not when this module is imported.
"""

from __future__ import annotations

from typing import Annotated, Any

import bentoml
from pydantic import BaseModel, Field

from collapse.serving import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    PAGE_PATH,
    ModelInfo,
    ModelRequest,
    ModelsResponse,
    SeedField,
    ServingError,
    http_errors,
    stream_seed,
)
from collapse.serving_page import Control, PageSpec, page_app

MAX_GENERATE = 64
MAX_NEW_TOKENS = 1024
MAX_START = 2**40
MAX_PROMPT_CHARS = 2_000
MAX_SCORE_TEXTS = 64
MAX_TEXT_CHARS = 20_000


class GenerateRequest(ModelRequest):
    prompt: Annotated[str | None, Field(
        max_length=MAX_PROMPT_CHARS,
        description="text to continue; null or \"\" draws documents from BOS exactly as the pipeline does")] = None
    n: Annotated[int, Field(ge=1, le=MAX_GENERATE, description=f"how many texts (1..{MAX_GENERATE})")] = 4
    start: Annotated[int, Field(ge=0, le=MAX_START,
                                description="stream index of the first text (text i uses seed sample_seed(seed, "
                                            "iteration, start + i))")] = 0
    seed: SeedField = None
    max_new_tokens: Annotated[int | None, Field(
        ge=1, le=MAX_NEW_TOKENS,
        description="tokens generated at most (default: the lineage config's, with a prompt capped to what the "
                    "model's context leaves); BOS + prompt + max_new_tokens must fit the context")] = None
    temperature: Annotated[float | None, Field(
        ge=0.01, le=10, allow_inf_nan=False,
        description="softmax temperature, 0.01..10 (default: the lineage config's)")] = None
    top_p: Annotated[float | None, Field(
        gt=0, le=1, allow_inf_nan=False, description="nucleus mass, 1 = off (default: the lineage config's)")] = None
    top_k: Annotated[int | None, Field(
        ge=0, le=1_000_000, description="keep the k likeliest tokens, 0 = off (default: the lineage config's)")] = None


class GenerateResponse(BaseModel):
    model: ModelInfo = Field(description="the model that answered")
    seed: int = Field(description="the stream's seed (the lineage's unless the request gave one)")
    start: int = Field(description="stream index of the first text")
    prompt: str | None = Field(description="the prompt continued, or null (unconditional, the pipeline's stream)")
    settings: dict[str, float | int] = Field(description="the sampling settings used")
    texts: list[str] = Field(description="the generated texts (continuations of the prompt, if any)")
    tokens: list[list[int]] = Field(description="their token ids (no BOS; EOS last when the text ended)")


class ScoreRequest(ModelRequest):
    texts: Annotated[
        list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]],
        Field(min_length=1, max_length=MAX_SCORE_TEXTS,
              description=f"texts to score (1..{MAX_SCORE_TEXTS}, each at most {MAX_TEXT_CHARS} characters)"),
    ]


class ScoreResponse(BaseModel):
    model: ModelInfo = Field(description="the model that answered")
    cross_entropy: list[float] = Field(description="per text: mean next-token cross-entropy, nats per token")
    perplexity: list[float] = Field(description="per text: exp(cross_entropy)")
    tokens: list[int] = Field(description="per text: predicted tokens (its tokens + EOS)")
    mean_cross_entropy: float = Field(description="over all texts' tokens (token-weighted)")


PAGE = PageSpec(
    title="collapse-lab · language-model stories",
    intro="Stories that model n of a lineage writes (with no prompt: the very documents iteration n+1 "
          "may train on).",
    endpoint="/generate",
    controls=[
        Control(name="n", label="stories", kind="int", default=3, min=1, max=MAX_GENERATE),
        Control(name="start", label="first index", kind="int", default=0, min=0),
        Control(name="seed", label="seed (blank: the lineage's)", kind="int", min=0),
        Control(name="max_new_tokens", label="max new tokens (blank: config)", kind="int", min=1,
                max=MAX_NEW_TOKENS),
        Control(name="temperature", label="temperature (blank: config)", kind="float", min=0.05, max=10,
                step=0.05),
        Control(name="prompt", label="prompt (blank: from BOS, as the pipeline)", kind="text"),
    ],
    render="texts",
    texts_field="texts",
    prefix_field="prompt",
)


def _context(model: Any) -> int | None:
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def _end_document(tokens: list[int], special: dict[str, int]) -> list[int]:
    """Up to and including the first EOS; a BOS/PAD (a new document) ends it with EOS instead."""
    out: list[int] = []
    for token in tokens:
        if token == special["eos_id"]:
            return [*out, token]
        if token in (special["bos_id"], special["pad_id"]):
            return [*out, special["eos_id"]]
        out.append(token)
    return out


def continue_prompt(generator: Any, prompt_ids: list[int], seeds: list[int], settings: Any) -> list[list[int]]:
    """The conditional path: continue ``[BOS] + prompt_ids`` once per seed (batched, KV cache).

    Row i's randomness is Gumbel noise from ``seeds[i]`` (the sampler's processors), so a row does
    not depend on the batch it is drawn in.
    """
    import torch
    from transformers import GenerationConfig

    from collapse_lm.sample import logits_processors

    special, model, device = generator.special, generator.model, generator.device
    prefix = [special["bos_id"], *prompt_ids]
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=settings.max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
        bos_token_id=special["bos_id"], eos_token_id=special["eos_id"], pad_token_id=special["pad_id"])
    out: list[list[int]] = []
    with torch.no_grad():
        for first in range(0, len(seeds), settings.batch_size):
            chunk = seeds[first : first + settings.batch_size]
            input_ids = torch.tensor([prefix] * len(chunk), dtype=torch.long, device=device)  # (B, P)
            output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    generation_config=config,
                                    logits_processor=logits_processors(settings, chunk, device))  # (B, P + k)
            out.extend(_end_document(row, special) for row in output[:, len(prefix):].tolist())
    return out


def score_texts(generator: Any, texts: list[str]) -> tuple[list[float], list[int]]:
    """(mean nats per predicted token, predicted tokens) of each text, scored as a document.

    A text becomes ``[BOS] + tokens + [EOS]`` (as ``prepare`` encodes documents) and is cut into
    windows of at most context + 1 tokens whose targets do not overlap; each group of equal-length
    windows goes through :func:`collapse_lm.metrics.cross_entropy`.
    """
    import numpy as np

    from collapse_lm.metrics import cross_entropy
    from collapse_lm.tokenizer import encode_documents

    model = generator.model
    context = _context(model) or 1024
    means: list[float] = []
    counts: list[int] = []
    for document in encode_documents(generator.tokenizer, texts):
        ids = np.asarray(document, dtype=np.int64)  # (L,) with BOS first, EOS last
        windows = [ids[a : a + context + 1] for a in range(0, len(ids) - 1, context)]
        nats, predicted = 0.0, 0
        for length in sorted({len(w) for w in windows}):
            group = [w for w in windows if len(w) == length]
            result = cross_entropy(model, group, batch_size=16, device=generator.device, progress=False)
            nats += result["cross_entropy"] * len(group) * (length - 1)
            predicted += len(group) * (length - 1)
        means.append(nats / predicted)
        counts.append(predicted)
    return means, counts


@bentoml.asgi_app(page_app(PAGE), path=PAGE_PATH, name="page")
@bentoml.service(name="collapse-lm", http={"host": DEFAULT_HOST, "port": DEFAULT_PORT}, traffic={"timeout": 300})
class LmService:
    """One language model (chosen by COLLAPSE_LINEAGE / COLLAPSE_ITERATION) behind HTTP."""

    def __init__(self) -> None:
        from collapse.serving import ServedLab

        self.lab = ServedLab("lm")  # loads torch/transformers through the lm service's generator

    @bentoml.on_deployment  # type: ignore[untyped-decorator]
    def check_model() -> None:
        """Once, before any worker starts: stop with a clear error when the model is not trained."""
        import logging

        from collapse.serving import check_startup

        logging.getLogger("bentoml.serve").info(check_startup("lm"))

    @bentoml.api  # type: ignore[untyped-decorator]
    def models(self) -> ModelsResponse:
        """Every lm lineage, its trained iterations, and the start-up model."""
        return self.lab.listing()

    @bentoml.api(input_spec=GenerateRequest)  # type: ignore[untyped-decorator]
    def generate(self, **fields: Any) -> GenerateResponse:
        """Texts ``start .. start+n-1`` of the model's stream (from BOS), or continuations of ``prompt``."""
        from collapse_lm.sample import sample_seed

        request = GenerateRequest.model_validate(fields)
        with http_errors():
            loaded, info, spec = self.lab.open(request.lineage, request.iteration)
            generator: Any = loaded.generator
            seed = stream_seed(spec, request.seed)
            options: dict[str, Any] = {name: value for name in ("max_new_tokens", "temperature", "top_p", "top_k")
                                       if (value := getattr(request, name)) is not None}
            explicit = request.max_new_tokens is not None
            settings = generator.settings(options or None)
            context = _context(generator.model)
            with loaded.lock:  # one request at a time per model (the fast tokenizer is not thread-safe)
                prompt_ids: list[int] = []
                if request.prompt:
                    # as documents are encoded: a literal "<|bos|>" in a prompt is text, never a BOS id
                    prompt_ids = list(generator.tokenizer(request.prompt, add_special_tokens=False,
                                                          split_special_tokens=True)["input_ids"])
                room = None if context is None else context - 1 - len(prompt_ids)  # tokens left after BOS + prompt
                if room is not None and prompt_ids and not explicit and 1 <= room < settings.max_new_tokens:
                    options["max_new_tokens"] = room  # the config's length, capped to fit the prompt
                    settings = generator.settings(options)
                if room is not None and settings.max_new_tokens > room:
                    field = "max_new_tokens" if explicit or not prompt_ids else "prompt"
                    raise ServingError(field, f"BOS + {len(prompt_ids)} prompt tokens + max_new_tokens "
                                              f"{settings.max_new_tokens} exceed the model's context of {context} "
                                              "tokens: shorten the prompt or lower max_new_tokens")
                if request.prompt:
                    seeds = [sample_seed(seed, info.iteration, i)
                             for i in range(request.start, request.start + request.n)]
                    tokens = continue_prompt(generator, prompt_ids, seeds, settings)
                else:
                    tokens = generator.sample(request.start, request.start + request.n, seed, options or None)
                texts = generator.decode(tokens)
        used = settings.model_dump(include={"temperature", "top_p", "top_k", "max_new_tokens"})
        return GenerateResponse(model=info, seed=seed, start=request.start, prompt=request.prompt or None,
                                settings=used, texts=texts, tokens=tokens)

    @bentoml.api(input_spec=ScoreRequest)  # type: ignore[untyped-decorator]
    def score(self, **fields: Any) -> ScoreResponse:
        """Per-text cross-entropy (nats per token) of the chosen model."""
        import math

        request = ScoreRequest.model_validate(fields)
        with http_errors():
            loaded, info, _ = self.lab.open(request.lineage, request.iteration)
            with loaded.lock:
                means, counts = score_texts(loaded.generator, request.texts)
        mean = sum(m * c for m, c in zip(means, counts, strict=True)) / sum(counts)
        return ScoreResponse(model=info, cross_entropy=means, perplexity=[math.exp(m) for m in means],
                             tokens=counts, mean_cross_entropy=mean)
