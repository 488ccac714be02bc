"""The linreg BentoML service: ``predict`` and ``sample`` from one trained iteration's ŵ.

Serve it from the project root (model choice and paths: :mod:`collapse.serving`)::

    COLLAPSE_LINEAGE=linreg-replace COLLAPSE_ITERATION=3 \\
        bentoml serve collapse_linreg.serving:LinregService --port 3000

* ``POST /predict`` — ``{"x": [[x_1 … x_d], …]}`` → ``y_hat`` = x·ŵ per row.
* ``POST /sample`` — ``{"n": 8, "start": 0, "seed": null}`` → rows ``start .. start+n-1`` of
  model n's synthetic stream, as ``x`` (n × d) and ``y`` (n): exactly what the generate stage
  does. With ``seed`` left out the stream is the lineage's seed, so the rows equal rows
  ``start .. start+n-1`` of ``runs/linreg/<lineage>/iter_<n>/samples/shard.npy`` (columns
  ``[x | y]``), to the bit. Row r's label noise is position r of the stream
  ``rng_for(seed, "linreg", "generate", n)`` and its x is design row ``r mod T`` (or position
  r of ``rng_for(seed, "linreg", "generate-x", n)`` with a fresh design), so a row never
  depends on which other rows are asked for.
* ``POST /models`` — the lineages, their trained iterations and the start-up model.
* ``GET /ui/`` — a page: pick lineages/iterations, sample, see rows side by side.

Every answer carries ``model`` (:class:`collapse.serving.ModelInfo`). Requests may name another
``lineage``/``iteration`` of linreg; it is loaded on first use and cached (LRU).
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
    finite_rows,
    http_errors,
    stream_seed,
)
from collapse.serving_page import Control, PageSpec, page_app

MAX_PREDICT_ROWS = 10_000
MAX_WIDTH = 4_096
MAX_SAMPLE = 10_000
MAX_START = 1_000_000  # row r costs O(r) noise draws: the stream is read from position 0

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class PredictRequest(ModelRequest):
    x: Annotated[
        list[Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_WIDTH)]],
        Field(min_length=1, max_length=MAX_PREDICT_ROWS,
              description=f"rows of inputs x, each with d finite numbers (d: the model's dimension); "
                          f"at most {MAX_PREDICT_ROWS} rows"),
    ]


class PredictResponse(BaseModel):
    model: ModelInfo = Field(description="the model that answered")
    y_hat: list[float] = Field(description="x·ŵ for each row of x")


class SampleRequest(ModelRequest):
    n: Annotated[int, Field(ge=1, le=MAX_SAMPLE, description=f"how many rows (1..{MAX_SAMPLE})")] = 8
    start: Annotated[int, Field(ge=0, le=MAX_START,
                                description=f"index of the first row in the stream (0..{MAX_START})")] = 0
    seed: SeedField = None


class SampleResponse(BaseModel):
    model: ModelInfo = Field(description="the model that answered")
    seed: int = Field(description="the stream's seed (the lineage's unless the request gave one)")
    start: int = Field(description="stream index of the first row")
    x: list[list[float]] = Field(description="n × d inputs")
    y: list[float] = Field(description="n labels x·ŵ + σε (σ from the lineage's config)")


PAGE = PageSpec(
    title="collapse-lab · linear regression samples",
    intro="Synthetic (x, y) rows that model n of a lineage generates (what iteration n+1 may train on).",
    endpoint="/sample",
    controls=[
        Control(name="n", label="rows", kind="int", default=8, min=1, max=200),
        Control(name="start", label="first row", kind="int", default=0, min=0, max=MAX_START),
        Control(name="seed", label="seed (blank: the lineage's)", kind="int", min=0,
                help="blank: the pipeline's stream"),
    ],
    render="table",
    matrix_field="x",
    vector_field="y",
)


@bentoml.asgi_app(page_app(PAGE), path=PAGE_PATH, name="page")
@bentoml.service(name="collapse-linreg", http={"host": DEFAULT_HOST, "port": DEFAULT_PORT},
                 traffic={"timeout": 120})
class LinregService:
    """One linreg model (chosen by COLLAPSE_LINEAGE / COLLAPSE_ITERATION) behind HTTP."""

    def __init__(self) -> None:
        from collapse.serving import ServedLab

        self.lab = ServedLab("linreg")

    @bentoml.on_deployment  # type: ignore[untyped-decorator]
    def check_model() -> None:
        """Once, before any worker starts: stop with a clear error when the model is not trained."""
        import logging

        from collapse.serving import check_startup

        logging.getLogger("bentoml.serve").info(check_startup("linreg"))

    @bentoml.api  # type: ignore[untyped-decorator]
    def models(self) -> ModelsResponse:
        """Every linreg lineage, its trained iterations, and the start-up model."""
        return self.lab.listing()

    @bentoml.api(input_spec=PredictRequest)  # type: ignore[untyped-decorator]
    def predict(self, **fields: Any) -> PredictResponse:
        """ŷ = x·ŵ of the chosen model for each row of ``x``."""
        import numpy as np

        request = PredictRequest.model_validate(fields)
        with http_errors():
            loaded, info, _ = self.lab.open(request.lineage, request.iteration)
            w_hat = loaded.generator.w_hat  # type: ignore[attr-defined]  # (d,)
            finite_rows(request.x, int(w_hat.shape[0]), "x")
            y_hat = np.asarray(request.x, dtype=np.float64) @ w_hat  # (rows,)
        return PredictResponse(model=info, y_hat=y_hat.tolist())

    @bentoml.api(input_spec=SampleRequest)  # type: ignore[untyped-decorator]
    def sample(self, **fields: Any) -> SampleResponse:
        """Rows ``start .. start+n-1`` of the model's synthetic stream (the pipeline's by default)."""
        request = SampleRequest.model_validate(fields)
        with http_errors():
            loaded, info, spec = self.lab.open(request.lineage, request.iteration)
            seed = stream_seed(spec, request.seed)
            with loaded.lock:
                rows = loaded.generator.sample(request.start, request.start + request.n, seed)  # (n, d + 1)
        return SampleResponse(model=info, seed=seed, start=request.start, x=rows[:, :-1].tolist(),
                              y=rows[:, -1].tolist())
