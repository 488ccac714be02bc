"""The report of a smoke run, opened from disk in real headless Chromium (slow tier)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, reset_lab

pytestmark = pytest.mark.slow


def test_report_opens_offline_with_every_image_and_lineage(slow_lab: Path) -> None:
    from playwright.sync_api import sync_playwright

    reset_lab(slow_lab)
    index = slow_lab / "reports/index.html"
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(index.as_uri(), wait_until="load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
        text = page.inner_text("body")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "report.png"  # outside the lab: reports/ holds DVC outputs only
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert all(url.startswith("file://") for url in requests), "the report must not touch the network"
    assert len(images) >= 6 and all(width > 0 for _, width in images), images
    for name in ("linreg", "lm", "linreg-replace", "linreg-accumulate", "lm-replace", "lm-accumulate",
                 "replace", "accumulate", "The paper's numbers", "Learning curves", "Compute per iteration",
                 "What each model writes", "Library versions"):
        assert name in text, name
    print(f"report screenshot: {shot}")
