"""The diagnose page (pyrovae/reports/diagnose_page.py) in a real headless browser: the
system Chromium (``apt-get install chromium``, as ``.ci/run`` does) driven by Playwright;
skipped, with the reason, where either is missing."""

from __future__ import annotations

import shutil

import pytest
import torch

from pyrovae.reports.diagnose import REPORT_HTML, diagnose

PHONE = {"width": 375, "height": 800}


def _chromium() -> str | None:
    """The system's Chromium (or Chrome), found on PATH."""
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((path for path in map(shutil.which, names) if path), None)


def test_report_loads_without_console_errors_and_shows_the_verdict(make_vae, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("no system Chromium on PATH (apt-get install -y chromium)")
    vae = make_vae(latent_dim=2)
    images = torch.bernoulli(torch.full((12, 1, 4, 4), 0.3))
    labels = torch.arange(12) % 3
    result = diagnose(
        vae, images, tmp_path, labels=labels, class_names=["T-shirt/top", "Trouser", "Bag"],
        n=12, draws=100, nuts=1, nuts_draws=10, nuts_warmup=20, chains=2, ppc_draws=10,
        latent_points=12,
    )  # fmt: skip
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=PHONE)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto((tmp_path / REPORT_HTML).as_uri())
            verdict = page.locator("#verdict")
            shown = verdict.inner_text() if verdict.is_visible() else ""
            wide = page.evaluate("document.documentElement.scrollWidth")
            broken = page.evaluate(
                "Array.from(document.images).filter(i => !i.complete || !i.naturalWidth).length"
            )
            classes = page.locator("#worst").inner_text()
        finally:
            browser.close()
    assert not errors, errors
    assert shown == result.verdict
    assert wide <= PHONE["width"], "the page is wider than a phone"
    assert broken == 0, "an embedded image did not load"
    assert "T-shirt/top" in classes
