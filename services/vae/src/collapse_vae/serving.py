"""The vae BentoML service: ``sample`` images from the prior and ``reconstruct`` an image.

Serve it from the project root (model choice and paths: :mod:`collapse.serving`)::

    COLLAPSE_LINEAGE=vae-replace COLLAPSE_ITERATION=2 \\
        bentoml serve collapse_vae.serving:VaeService --port 3002

* ``POST /sample`` — ``{"n": 16, "start": 0, "seed": null}`` → ``images`` (n uint8 images as
  nested lists, each of the model's stored shape: (H, W) grey, (C, H, W) colour) and ``png``
  (the same images as one base64 PNG grid, row-major, ``columns`` wide). Items ``start ..
  start+n-1`` of model n's stream of ``seed``, drawn by
  :meth:`collapse_vae.service.VaeGenerator.sample` — the generate stage's own call: item i's
  latent comes from its own generator seeded with ``derive_seed(seed, "vae", "sample", n, i)``
  and items are decoded in aligned blocks, so an item never depends on the batch it is asked in.
  With ``seed`` left out the stream is the lineage's seed, so the images equal items
  ``start .. start+n-1`` of ``runs/vae/<lineage>/iter_<n>/samples/shard.npy``, to the bit.
* ``POST /reconstruct`` — ``{"image": [[0..255, …], …]}`` (one image of the model's stored shape)
  → the decoder mean at the posterior mean μ(x), as ``image`` and ``png``
  (:meth:`collapse_vae.service.VaeGenerator.reconstruct`).
* ``POST /models`` — the lineages, their trained iterations and the start-up model.
* ``GET /ui/`` — a page: pick lineages and iterations, sample, see the two PNG grids side by side
  (:mod:`collapse.serving_page`, rendered from the ``png`` of ``/sample``; nothing else fetched).

Every answer carries ``model`` (:class:`collapse.serving.ModelInfo`). torch is imported when the
service starts (in ``__init__``), not when this module is imported.
"""

from __future__ import annotations

import base64
import io
import math
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

MAX_SAMPLE = 256
MAX_START = 2**40
MAX_SIDE = 512  # pixels per image side a request may send
MAX_CHANNELS = 4

Pixel = Annotated[int, Field(ge=0, le=255)]
Row = Annotated[list[Pixel], Field(min_length=1, max_length=MAX_SIDE)]
Grey = Annotated[list[Row], Field(min_length=1, max_length=MAX_SIDE)]
Colour = Annotated[list[Grey], Field(min_length=1, max_length=MAX_CHANNELS)]


class SampleRequest(ModelRequest):
    n: Annotated[int, Field(ge=1, le=MAX_SAMPLE, description=f"how many images (1..{MAX_SAMPLE})")] = 16
    start: Annotated[int, Field(ge=0, le=MAX_START,
                                description="stream index of the first image (image i's latent is drawn with "
                                            "seed derive_seed(seed, \"vae\", \"sample\", iteration, start + i))")] = 0
    seed: SeedField = None


class SampleResponse(BaseModel):
    model: ModelInfo = Field(description="the model that answered")
    seed: int = Field(description="the stream's seed (the lineage's unless the request gave one)")
    start: int = Field(description="stream index of the first image")
    shape: list[int] = Field(description="shape of one image: [H, W] grey, [C, H, W] colour")
    images: list[Grey] | list[Colour] = Field(description="n uint8 images (0..255), each of `shape`")
    png: str = Field(description="the images as one PNG grid (row-major, `columns` wide), base64")
    columns: int = Field(description="images per row of the PNG grid")


class ReconstructRequest(ModelRequest):
    image: Annotated[
        Grey | Colour,
        Field(description="one image of the model's stored shape, integers 0..255: [H][W] rows of pixels for a "
                          "grey model, [C][H][W] for a colour one (see `shape` of /sample)"),
    ]


class ReconstructResponse(BaseModel):
    model: ModelInfo = Field(description="the model that answered")
    shape: list[int] = Field(description="shape of the image: [H, W] grey, [C, H, W] colour")
    image: Grey | Colour = Field(description="the decoder mean at the posterior mean μ(x), uint8 (0..255)")
    png: str = Field(description="the reconstruction as a PNG, base64")


def png_grid(images: Any, columns: int | None = None) -> tuple[str, int]:
    """uint8 images (N, H, W) or (N, C, H, W) → (base64 PNG of a grid with 1-pixel gaps, columns)."""
    import numpy as np
    from PIL import Image

    count = int(images.shape[0])
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = -(-count // columns)
    tiles = images if images.ndim == 3 else np.moveaxis(images, 1, -1)  # (N, H, W[, C])
    if tiles.ndim == 4 and tiles.shape[-1] == 1:
        tiles = tiles[..., 0]
    height, width = tiles.shape[1:3]
    grid = np.zeros((rows * (height + 1) - 1, columns * (width + 1) - 1, *tiles.shape[3:]), dtype=np.uint8)
    for index in range(count):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        grid[top : top + height, left : left + width] = tiles[index]
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), columns


def _image_shape(generator: Any) -> tuple[int, ...]:
    return tuple(int(side) for side in generator.arch.image_shape)


PAGE = PageSpec(
    title="collapse-lab · VAE samples",
    intro="Images that model n of a lineage generates from its prior (what iteration n+1 may train on).",
    endpoint="/sample",
    controls=[
        Control(name="n", label="images", kind="int", default=16, min=1, max=MAX_SAMPLE),
        Control(name="start", label="first image", kind="int", default=0, min=0, max=MAX_START),
        Control(name="seed", label="seed (blank: the lineage's)", kind="int", min=0,
                help="blank: the pipeline's stream"),
    ],
    render="images",
    image_field="png",
    columns_field="columns",
    count_field="images",
)


@bentoml.asgi_app(page_app(PAGE), path=PAGE_PATH, name="page")
@bentoml.service(name="collapse-vae", http={"host": DEFAULT_HOST, "port": DEFAULT_PORT}, traffic={"timeout": 120})
class VaeService:
    """One VAE (chosen by COLLAPSE_LINEAGE / COLLAPSE_ITERATION) behind HTTP."""

    def __init__(self) -> None:
        from collapse.serving import ServedLab

        self.lab = ServedLab("vae")  # loads torch through the vae service's generator

    @bentoml.on_deployment  # type: ignore[untyped-decorator]
    def check_model() -> None:
        """Once, before any worker starts: stop with a clear error when the model is not trained."""
        import logging

        from collapse.serving import check_startup

        logging.getLogger("bentoml.serve").info(check_startup("vae"))

    @bentoml.api  # type: ignore[untyped-decorator]
    def models(self) -> ModelsResponse:
        """Every vae lineage, its trained iterations, and the start-up model."""
        return self.lab.listing()

    @bentoml.api(input_spec=SampleRequest)  # type: ignore[untyped-decorator]
    def sample(self, **fields: Any) -> SampleResponse:
        """Images ``start .. start+n-1`` of the model's stream (the pipeline's by default)."""
        request = SampleRequest.model_validate(fields)
        with http_errors():
            loaded, info, spec = self.lab.open(request.lineage, request.iteration)
            seed = stream_seed(spec, request.seed)
            with loaded.lock:
                images = loaded.generator.sample(request.start, request.start + request.n, seed)  # (n, [C,] H, W)
            png, columns = png_grid(images)
        return SampleResponse(model=info, seed=seed, start=request.start, shape=list(images.shape[1:]),
                              images=images.tolist(), png=png, columns=columns)

    @bentoml.api(input_spec=ReconstructRequest)  # type: ignore[untyped-decorator]
    def reconstruct(self, **fields: Any) -> ReconstructResponse:
        """The chosen model's reconstruction of ``image`` (decoder mean at the posterior mean)."""
        import numpy as np

        request = ReconstructRequest.model_validate(fields)
        with http_errors():
            loaded, info, _ = self.lab.open(request.lineage, request.iteration)
            expected = _image_shape(loaded.generator)
            try:
                image = np.array(request.image, dtype=np.uint8)  # values are 0..255 (validated)
            except ValueError:
                raise ServingError("image", f"is ragged (rows of different lengths); this model takes one "
                                            f"image of shape {list(expected)}") from None
            if image.shape != expected:
                raise ServingError("image", f"has shape {list(image.shape)}; this model takes one image of shape "
                                            f"{list(expected)} ([H, W] grey, [C, H, W] colour)")
            with loaded.lock:
                out = loaded.generator.reconstruct(image[None])  # type: ignore[attr-defined]  # (1, [C,] H, W)
            png, _ = png_grid(out, columns=1)
        return ReconstructResponse(model=info, shape=list(expected), image=out[0].tolist(), png=png)
