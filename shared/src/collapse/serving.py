"""What every modality's BentoML service shares: which trained model answers, and how.

A service serves one chosen (lineage, iteration) model of its modality, picked by environment:

* ``COLLAPSE_PROJECT`` — the project root (default: the current directory). The server works
  in that directory, because artefacts record paths relative to it.
* ``COLLAPSE_PARAMS`` — the params file, relative to the root (default ``params.yaml``).
* ``COLLAPSE_LINEAGE`` — the lineage (default: ``serving.<modality>.lineage`` in params.yaml,
  else the modality's first lineage there).
* ``COLLAPSE_ITERATION`` — the iteration (default: ``serving.<modality>.iteration``, else
  ``latest``: the highest trained one).
* ``COLLAPSE_CACHE_MODELS`` — how many other (lineage, iteration) models stay loaded for
  requests that name one (default: ``serving.cache_models``, else 4).

Every model is opened through :func:`collapse.stages.open_generator` (the folder is verified
against its card, then loaded by the service's ``Modality.load``), the same code path the
generate stage uses, so a request for items ``start .. start + n`` of the stream of ``seed``
returns the items at those positions of the shard the pipeline wrote when ``seed`` is the
lineage's seed (the default). The modality decides how item ``i`` of a stream is drawn from
(seed, iteration, i); see each service's serving module.

This module names no modality and imports no web framework at module level: the pydantic request
and response building blocks live here, the BentoML classes in the services.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collapse import layout
from collapse.contracts import LineageSpec
from collapse.modality import ConfigError, Generator, Modality
from collapse.params import LabParams, load_params

ENV_PROJECT = "COLLAPSE_PROJECT"
ENV_PARAMS = "COLLAPSE_PARAMS"
ENV_LINEAGE = "COLLAPSE_LINEAGE"
ENV_ITERATION = "COLLAPSE_ITERATION"
ENV_CACHE = "COLLAPSE_CACHE_MODELS"
LATEST: Literal["latest"] = "latest"
DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise (`bentoml serve --host 0.0.0.0`)
DEFAULT_PORT = 3000
DEFAULT_CACHE_MODELS = 4
MAX_CACHE_MODELS = 64
PAGE_PATH = "/ui"  # where each service mounts its sample page
MAX_SEED = 2**63
MAX_ITERATION = 10_000


class ServingError(ValueError):
    """A request the server cannot answer as asked: 4xx, the message names the field."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ModelNotFound(ServingError):
    """The named lineage or iteration does not exist, or is not trained yet (404)."""

    status = 404


class ModelNotTrained(ConfigError):
    """The start-up model has not been trained: the message names the folder and the command."""


# --- request and response building blocks ------------------------------------------------------


class Request(BaseModel):
    """Base of every request body: unknown fields and loose types (``"3"`` for 3) are 4xx."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


LineageField = Annotated[
    str | None,
    Field(default=None, min_length=1, max_length=128,
          description="lineage to answer from (a name under `lineages:` in params.yaml of this "
                      "service's modality); default: the model the server was started with"),
]
IterationField = Annotated[
    int | None,
    Field(default=None, ge=1, le=MAX_ITERATION,
          description="iteration (1-based) of that lineage's model; default: the start-up model's "
                      "iteration when the lineage is the start-up lineage, else the lineage's "
                      "highest trained iteration"),
]
SeedField = Annotated[
    int | None,
    Field(default=None, ge=0, lt=MAX_SEED,
          description="seed of the item stream; default: the lineage's seed in params.yaml, which "
                      "is the stream the pipeline wrote to runs/<modality>/<lineage>/iter_<n>/samples"),
]


class ModelRequest(Request):
    """Fields that pick the answering model (optional: the start-up model by default)."""

    lineage: LineageField = None
    iteration: IterationField = None


class ModelInfo(BaseModel):
    """Which model answered: every response carries one."""

    model_config = ConfigDict(frozen=True)

    modality: str = Field(description="the service's modality")
    lineage: str = Field(description="the lineage asked for")
    policy: str = Field(description="that lineage's data policy")
    lineage_seed: int = Field(description="that lineage's seed (the pipeline's sample stream)")
    iteration: int = Field(description="iteration n of the model (model n was fit to training set n)")
    card_lineage: str | None = Field(
        description="the lineage on the model card: null for iteration 1, which every lineage of "
                    "the seed shares")
    model_dir: str = Field(description="the model folder, relative to the project root")
    weights_sha256: str = Field(description="sha256 of the weights file")
    card_sha256: str = Field(description="sha256 of model/card.json")
    train_items: int = Field(description="items in the model's training set")
    parameter_count: int = Field(description="trainable parameters")


class LineageListing(BaseModel):
    name: str = Field(description="lineage name")
    policy: str = Field(description="data policy")
    seed: int = Field(description="lineage seed")
    iterations: int = Field(description="iterations in params.yaml")
    trained: list[int] = Field(description="iterations whose model folder exists (has card.json)")


class ModelsResponse(BaseModel):
    modality: str = Field(description="the service's modality")
    default: ModelInfo = Field(description="the start-up model (answers requests that name none)")
    lineages: list[LineageListing] = Field(description="every lineage of the modality in params.yaml")
    cache_models: int = Field(description="other models kept loaded at most (least recently used go)")
    loaded: list[str] = Field(description="model folders loaded now: the start-up model's, then the cache's")


@dataclass
class Loaded:
    """A generator opened once, and a lock that serialises its use across request threads."""

    generator: Generator
    modality: Modality
    config: Any
    card_sha256: str
    lock: threading.Lock


# --- the served lab ----------------------------------------------------------------------------


class ServingChoice(BaseModel):
    """``serving.<modality>`` in params.yaml: the model a server of that modality starts with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lineage: str | None = Field(default=None, description="default: the modality's first lineage")
    iteration: int | Literal["latest"] = Field(default=LATEST, description="a number, or the highest trained")


class ServingParams(BaseModel):
    """The ``serving:`` section of params.yaml (every key optional).

    ```yaml
    serving:
      cache_models: 4                    # other (lineage, iteration) models a server keeps loaded
      linreg: {lineage: linreg-accumulate, iteration: latest}
      lm: {lineage: lm-replace, iteration: 5}
    ```
    Environment variables (``COLLAPSE_LINEAGE``, ``COLLAPSE_ITERATION``, ``COLLAPSE_CACHE_MODELS``)
    win over these. Host and port are ``bentoml serve`` options (default 127.0.0.1:3000).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache_models: int = Field(default=DEFAULT_CACHE_MODELS, ge=0, le=MAX_CACHE_MODELS, strict=True)
    models: dict[str, ServingChoice] = Field(default_factory=dict)


def serving_params(params: LabParams, source: str = "params.yaml") -> ServingParams:
    """The validated ``serving:`` section; errors name the key (``serving.lm.iteration: …``)."""
    raw = dict(params.serving)
    known = {"cache_models", *params.modalities}
    unknown = sorted(key for key in raw if key not in known)
    if unknown:
        raise ConfigError(f"{source}: serving.{unknown[0]} is not a serving setting; allowed: "
                          f"{', '.join(sorted(known))} (a modality's key holds its lineage and iteration)")
    models = {key: value for key, value in raw.items() if key != "cache_models"}
    try:
        return ServingParams.model_validate({**({"cache_models": raw["cache_models"]} if "cache_models" in raw
                                                else {}), "models": models})
    except ValidationError as error:
        problems = "; ".join(
            "serving." + ".".join(str(p) for p in (item["loc"][1:] if item["loc"][0] == "models" else item["loc"]))
            + f": {item['msg']}" for item in error.errors())
        raise ConfigError(f"{source}: {problems}") from None


def _env_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None


def _sha256(path: Path) -> str:
    from collapse.store import sha256_file

    return sha256_file(path)


def release_request_timers() -> None:
    """Work around a memory leak of BentoML 1.4's request-timeout middleware.

    ``bentoml._internal.server.http.traffic.TimeoutMiddleware`` schedules one timer per request
    (``loop.call_later(timeout, …)``) and never cancels it, so every answered request stays
    referenced (≈ 5 KB) until its timeout — 120 s here — has passed: a steady load of a few
    hundred requests/s held 100+ MiB (measured by ``nox -s soak``: linreg +57 % RSS in 120 s).
    This replaces its ``__call__`` with one whose wait on the first response message is an
    ``asyncio.wait`` with a timeout, which cancels its own timer when the response starts. Same
    behaviour otherwise: no first message within the timeout → the request is cancelled and
    answered 504. Idempotent; called by every service's :class:`ServedLab`.
    """
    import asyncio

    from bentoml._internal.server.http import traffic

    middleware = traffic.TimeoutMiddleware
    if getattr(middleware, "_collapse_releases_timers", False):
        return

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        responding = asyncio.Event()

        async def send_marking_the_start(message: Any) -> None:
            responding.set()
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, receive, send_marking_the_start))
        started = asyncio.ensure_future(responding.wait())
        done, _ = await asyncio.wait({handler, started}, timeout=self.timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if not done and handler.cancel():
            from starlette.responses import JSONResponse

            answer = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                  status_code=504)
            await answer(scope, receive, send)
            return
        await handler

    setattr(middleware, "__call__", call)  # noqa: B010 - a class attribute, replaced on purpose
    setattr(middleware, "_collapse_releases_timers", True)  # noqa: B010


class ServedLab:
    """One project's trained models of one modality, as a server sees them.

    Opens the start-up model at construction (a :class:`ModelNotTrained` error, naming the folder
    and the ``dvc repro`` command, when it has not been trained; with ``load=False`` it only
    resolves which model that is). Other (lineage, iteration)
    models are opened on first request and kept in a small LRU cache; the start-up model is
    never evicted. Iteration 1 is one model shared by every lineage of a seed, so it is cached
    once. The process changes its working directory to the project root (artefacts record paths
    relative to it).
    """

    def __init__(self, modality: str, *, root: str | Path | None = None, params_file: str | None = None,
                 lineage: str | None = None, iteration: int | str | None = None,
                 cache_models: int | None = None, load: bool = True) -> None:
        self.modality = modality
        if load:
            release_request_timers()
        self.root = Path(root or os.environ.get(ENV_PROJECT) or Path.cwd()).resolve()
        self.params_file = params_file or os.environ.get(ENV_PARAMS) or layout.PARAMS
        if not (self.root / self.params_file).is_file():
            raise ConfigError(
                f"{self.root / self.params_file} does not exist: start the server in the project root or "
                f"set {ENV_PROJECT} to it ({ENV_PARAMS} names another params file)")
        if load and Path.cwd().resolve() != self.root:
            os.chdir(self.root)  # artefacts hold paths relative to the project root
        self.params: LabParams = load_params(self.root / self.params_file)
        serving = serving_params(self.params, self.params_file)
        self.settings = serving.models.get(modality, ServingChoice())
        if not self.params.lineages_of(modality):
            raise ConfigError(f"{self.params_file} defines no lineage of modality {modality!r}: add one under "
                              "`lineages:` and run `collapse pipeline write` and `dvc repro`")
        cache = cache_models if cache_models is not None else os.environ.get(ENV_CACHE)
        self.cache_models = serving.cache_models if cache is None else _env_int(ENV_CACHE, str(cache))
        if not 0 <= self.cache_models <= MAX_CACHE_MODELS:
            raise ConfigError(f"{ENV_CACHE} must be in 0..{MAX_CACHE_MODELS}, got {self.cache_models}")
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Loaded] = OrderedDict()
        self._default_dir: str | None = None
        self._default: Loaded | None = None
        spec = self._startup_lineage(lineage or os.environ.get(ENV_LINEAGE) or self.settings.lineage)
        wanted = iteration if iteration is not None else (os.environ.get(ENV_ITERATION) or self.settings.iteration)
        number = self._startup_iteration(spec, wanted)
        self.default_lineage, self.default_iteration = spec.name, number
        self._default_dir = self.model_dir(spec, number)  # pinned: never in the LRU cache
        if load:
            self._default = self._open(spec, number)
            self.default_info = self.info(spec, number, self._default)

    # --- where models are ----------------------------------------------------------------------

    def model_dir(self, spec: LineageSpec, iteration: int) -> str:
        return layout.iteration_paths(spec, iteration).model

    def is_trained(self, spec: LineageSpec, iteration: int) -> bool:
        return (self.root / self.model_dir(spec, iteration) / "card.json").is_file()

    def trained(self, spec: LineageSpec) -> list[int]:
        return [n for n in range(1, spec.iterations + 1) if self.is_trained(spec, n)]

    def _how_to_train(self, spec: LineageSpec, iteration: int) -> str:
        return (f"train it with `dvc repro {layout.pipeline_file(spec.name, iteration)}` in {self.root} "
                "(or `dvc repro` for every lineage)")

    def _startup_lineage(self, name: str | None) -> LineageSpec:
        if name is None:
            return self.params.lineages_of(self.modality)[0]
        spec = self.params.lineage(name)  # unknown names: "did you mean", the defined ones
        if spec.modality != self.modality:
            raise ConfigError(f"{ENV_LINEAGE}={name!r} is a {spec.modality} lineage; this is the "
                              f"{self.modality} service (its lineages: {', '.join(self._names())})")
        return spec

    def _startup_iteration(self, spec: LineageSpec, wanted: int | str) -> int:
        if str(wanted) == LATEST:
            done = self.trained(spec)
            if not done:
                path = self.root / self.model_dir(spec, 1)
                raise ModelNotTrained(f"no model of lineage {spec.name} has been trained yet ({path} does not "
                                      f"exist): {self._how_to_train(spec, 1)}")
            return done[-1]
        number = wanted if isinstance(wanted, int) else _env_int(ENV_ITERATION, str(wanted))
        if not 1 <= number <= spec.iterations:
            raise ConfigError(f"{ENV_ITERATION}={number}: lineage {spec.name} has iterations 1..{spec.iterations} "
                              f"in {self.params_file} (or use {LATEST!r})")
        if not self.is_trained(spec, number):
            path = self.root / self.model_dir(spec, number)
            raise ModelNotTrained(f"model {number} of lineage {spec.name} has not been trained yet ({path} does "
                                  f"not exist): {self._how_to_train(spec, number)}")
        return number

    def _names(self) -> list[str]:
        return [spec.name for spec in self.params.lineages_of(self.modality)]

    # --- requests ------------------------------------------------------------------------------

    def resolve(self, lineage: str | None, iteration: int | None) -> tuple[LineageSpec, int]:
        """The (lineage, iteration) a request asks for; :class:`ServingError` naming the field."""
        if lineage is None or lineage == self.default_lineage:
            spec = self.params.lineage(self.default_lineage)
            if iteration is None:
                return spec, self.default_iteration
        else:
            found = self.params.lineages.get(lineage)
            if found is None or found.modality != self.modality:
                raise ModelNotFound("lineage", f"no {self.modality} lineage {lineage!r}; known: "
                                    f"{', '.join(self._names())}")
            spec = found
            if iteration is None:
                done = self.trained(spec)
                if not done:
                    raise ModelNotFound("lineage", f"no model of lineage {lineage} has been trained yet: "
                                        f"{self._how_to_train(spec, 1)}")
                return spec, done[-1]
        if not 1 <= iteration <= spec.iterations:
            raise ModelNotFound("iteration", f"lineage {spec.name} has iterations 1..{spec.iterations}, "
                                f"not {iteration}")
        if not self.is_trained(spec, iteration):
            raise ModelNotFound("iteration", f"model {iteration} of lineage {spec.name} has not been trained "
                                f"yet: {self._how_to_train(spec, iteration)}")
        return spec, iteration

    def open(self, lineage: str | None = None, iteration: int | None = None) -> tuple[Loaded, ModelInfo, LineageSpec]:
        """The loaded model a request asks for, its :class:`ModelInfo` and its lineage."""
        spec, number = self.resolve(lineage, iteration)
        loaded = self._open(spec, number)
        return loaded, self.info(spec, number, loaded), spec

    def _open(self, spec: LineageSpec, iteration: int) -> Loaded:
        from collapse.stages import open_generator

        key = self.model_dir(spec, iteration)
        if key == self._default_dir and self._default is not None:
            return self._default  # set once at start-up, never evicted: no lock needed
        with self._lock:  # one load at a time: a model is never loaded twice
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            config_file = layout.step_config(self.modality, "generate")
            modality, config, generator = open_generator(
                str(self.root / self.params_file), key, layout.real_dir(self.modality), "generate",
                config_file if Path(config_file).is_file() else None)
            loaded = Loaded(generator, modality, config, _sha256(Path(key) / "card.json"), threading.Lock())
            if key != self._default_dir:
                self._cache[key] = loaded
                while len(self._cache) > self.cache_models:
                    self._cache.popitem(last=False)
            return loaded

    def info(self, spec: LineageSpec, iteration: int, loaded: Loaded | None = None) -> ModelInfo:
        """What answers for (``spec``, ``iteration``); ``loaded`` is its model (opened if not given)."""
        loaded = loaded or self._open(spec, iteration)
        card = loaded.generator.card
        return ModelInfo(
            modality=self.modality, lineage=spec.name, policy=spec.policy.name, lineage_seed=spec.seed,
            iteration=iteration, card_lineage=card.lineage, model_dir=self.model_dir(spec, iteration),
            weights_sha256=card.weights_sha256, card_sha256=loaded.card_sha256,
            train_items=card.train_items, parameter_count=card.parameter_count,
        )

    def listing(self) -> ModelsResponse:
        return ModelsResponse(
            modality=self.modality, default=self.default_info, cache_models=self.cache_models,
            loaded=self.loaded_models(),
            lineages=[LineageListing(name=spec.name, policy=spec.policy.name, seed=spec.seed,
                                     iterations=spec.iterations, trained=self.trained(spec))
                      for spec in self.params.lineages_of(self.modality)],
        )

    def loaded_models(self) -> list[str]:
        """Model folders loaded now (start-up model first, then least recently used first)."""
        with self._lock:
            return [str(self._default_dir), *self._cache]


def check_startup(modality: str) -> str:
    """Which model a server started now would serve, after verifying its folder (nothing loaded).

    For BentoML's ``on_deployment`` hook, which runs once in the ``bentoml serve`` process before
    any worker: an untrained or damaged model stops the server with the error, instead of
    workers that fail and are restarted. Returns a one-line description for the log.
    """
    from collapse.stages import _resolved
    from collapse.store import read_model

    lab = ServedLab(modality, load=False)
    directory = lab.root / str(lab._default_dir)
    card = read_model(directory)
    config_file = lab.root / layout.step_config(modality, "generate")
    # the sampling config must be the one the pipeline used (else: "run `dvc repro`")
    _resolved(str(lab.root / lab.params_file), modality, "generate",
              str(config_file) if config_file.is_file() else None)
    return (f"collapse {modality}: serving lineage {lab.default_lineage} iteration {lab.default_iteration} "
            f"({directory}, weights sha256 {card.weights_sha256[:12]}) from {lab.root}")


def stream_seed(spec: LineageSpec, seed: int | None) -> int:
    """The seed of the stream a request reads: its own, or the lineage's (the pipeline's)."""
    return spec.seed if seed is None else seed


# --- errors as HTTP answers --------------------------------------------------------------------


@contextlib.contextmanager
def http_errors() -> Iterator[None]:
    """Turn request problems into BentoML 4xx errors (their message names the field).

    :class:`ServingError` keeps its status (400/404); a pydantic ``ValidationError`` raised while
    handling a request (e.g. a sampling setting the model refuses) becomes a 400 naming the field.
    """
    try:
        yield
    except ServingError as error:
        raise _bentoml_error(str(error), error.status) from error
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}"
                             for item in error.errors())
        raise _bentoml_error(problems, 400) from error


def _bentoml_error(message: str, status: int) -> Exception:
    from http import HTTPStatus

    from bentoml.exceptions import InvalidArgument, NotFound

    return NotFound(message) if status == HTTPStatus.NOT_FOUND else InvalidArgument(message)


def finite_rows(rows: list[list[float]], width: int, field: str) -> None:
    """Every row of ``rows`` has ``width`` values (the model's input width), else a 400 naming it."""
    for index, row in enumerate(rows):
        if len(row) != width:
            raise ServingError(f"{field}[{index}]", f"has {len(row)} values; this model takes {width} per row")
