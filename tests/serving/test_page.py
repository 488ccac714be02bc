"""The sample page of each service, in headless Chromium (the system's, driven by Playwright)."""

from __future__ import annotations

import base64
import io
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serving.servers import Server
from serving.smoke import lineages, linreg_dim

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
CONTROLS = {"linreg": {"n": "6"}, "lm": {"n": "2", "max_new_tokens": "24"}, "vae": {"n": "6"}}
DATA_PNG = "data:image/png;base64,"


def shown_grid(page: Any, side: str) -> np.ndarray:
    """The PNG grid the panel shows: decoded by the browser (its natural size) and here (its pixels)."""
    image = page.locator(f"#{side} figure.images img")
    assert image.count() == 1
    source = image.get_attribute("src")
    assert source is not None and source.startswith(DATA_PNG)  # from the answer, never fetched
    natural = image.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(source[len(DATA_PNG):]))))
    assert natural == [True, pixels.shape[1], pixels.shape[0]]
    return pixels


def check_vae_grids(page: Any, lab: Path, names: dict[str, str], wanted: int) -> None:
    """Each panel shows items 0..wanted-1 of its lineage's iteration-2 shard, tiled with 1-pixel gaps."""
    for side, policy in (("left", "replace"), ("right", "accumulate")):
        shard = np.load(lab / "runs/vae" / names[policy] / "iter_2/samples/shard.npy", allow_pickle=False)
        height, width = shard.shape[-2:]
        columns = math.ceil(math.sqrt(wanted))
        rows = -(-wanted // columns)
        grid = shown_grid(page, side)
        assert grid.shape[:2] == (rows * (height + 1) - 1, columns * (width + 1) - 1)
        for index in range(wanted):
            top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
            assert grid[top : top + height, left : left + width].tolist() == shard[index].tolist()
        caption = page.inner_text(f"#{side} figure.images figcaption")
        assert f"{wanted} images" in caption and f"{columns} per row" in caption
        box = page.locator(f"#{side} figure.images img").bounding_box()
        assert box is not None and box["width"] >= 2 * grid.shape[1]  # shown upscaled, whole pixels


@pytest.mark.parametrize("modality", ["linreg", "lm", "vae"])
def test_page_samples_replace_beside_accumulate(modality: str, request: pytest.FixtureRequest,
                                                smoke_lab: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    server: Server = request.getfixturevalue(f"{modality}_server")
    names = lineages(smoke_lab, modality)
    problems: list[str] = []
    screenshot = smoke_lab / "reports/screenshots" / f"serving-{modality}.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("requestfailed", lambda req: problems.append(f"{req.url}: {req.failure}"))
            page.on("response", lambda resp: problems.append(f"{resp.url}: {resp.status}") if resp.status >= 400
                    else None)
            page.goto(server.url + "/ui/")
            page.wait_for_selector("body[data-ready=true]", timeout=30_000)
            assert page.locator("#left select[name=lineage]").input_value() == names["replace"]
            assert page.locator("#right select[name=lineage]").input_value() == names["accumulate"]
            assert page.locator("#left select[name=iteration]").input_value() == "2"
            for name, value in CONTROLS[modality].items():
                page.fill(f"#f-{name}", value)
            page.click("#sample")
            for side in ("left", "right"):
                page.wait_for_selector(f"#{side}[data-state=done]", timeout=240_000)
            wanted = int(CONTROLS[modality]["n"])
            if modality == "vae":  # one PNG grid of the n images per panel
                check_vae_grids(page, smoke_lab, names, wanted)
            else:
                assert page.locator("#left .sample").count() == page.locator("#right .sample").count() == wanted
            left_card = page.inner_text("#left .card")
            assert "iteration 2" in left_card and names["replace"] in left_card
            assert names["accumulate"] in page.inner_text("#right .card")
            if modality == "linreg":  # the page's first row is the pipeline's first row
                first = page.locator("#left tbody tr").first.inner_text().split()
                assert first[0] == "0" and len(first) == 1 + linreg_dim(smoke_lab) + 1
            elif modality == "lm":
                assert all(page.locator("#left .sample").nth(i).inner_text() is not None for i in range(wanted))
            page.select_option("#right select[name=iteration]", "1")  # iteration 1 beside iteration 2
            page.click("#sample")
            page.wait_for_selector("#right[data-state=done]", timeout=240_000)
            page.wait_for_function("document.querySelector('#right .card').textContent.includes('iteration 1')")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copyfile(screenshot, Path("/tmp") / screenshot.name)


def test_page_is_self_contained(linreg_server: Server) -> None:
    """One document: inline CSS/JS, no external URL, a CSP that allows only this origin."""
    import re

    import httpx

    response = httpx.get(linreg_server.url + "/ui/", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", response.text)
    assert "<script src" not in response.text and "<link rel=\"stylesheet\"" not in response.text
