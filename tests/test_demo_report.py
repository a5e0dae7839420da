"""The README's main command on the real bundled model, its report opened in headless Chromium."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.decisions.policy import Policy

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.model, pytest.mark.browser]


# A skip here fails in CI (tests/conftest.py), where .ci/system-deps installs Chromium.
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/system-deps)")
def test_demo_on_the_bundled_model_and_its_report_in_chromium(tmp_path, bundled_model_ready):
    sync_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--threads", "2", "--no-finetune"])
    assert result.exit_code == 0, result.output
    assert len((out / "scores.jsonl").read_text().splitlines()) == 2000
    summary = json.loads((out / "summary.json").read_text())
    columns = {column["key"]: column["values"] for column in summary["metrics"]}
    # held-out calibration must fix most of the raw miscalibration of this model
    assert columns["calibrated"]["ece"]["value"] < 0.5 * columns["raw"]["ece"]["value"]
    assert columns["calibrated"]["nll"]["value"] < columns["raw"]["nll"]["value"]
    assert Policy.load(out / "policy.json").model_id == "smollm2-135m"
    # The run's own stage times (what the README's demo timing quotes), also in the test log.
    stages = summary["stage_seconds"]
    print("demo stage seconds:", stages)
    assert set(stages) == {"load", "scoring", "calibration", "report", "certification", "total"}
    assert max(stages, key=lambda stage: stages[stage] if stage != "total" else -1) == "scoring"

    url = (out / "report.html").resolve().as_uri()
    requested: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True).new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(url, wait_until="load")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            heading = page.inner_text("h1")
            page.screenshot(path=str(tmp_path / "demo-report.png"), full_page=True)
        finally:
            browser.close()
    assert requested == [url], f"the report asked for more than itself: {requested}"
    assert widths and all(w > 300 for w in widths), widths
    assert "SmolLM2-135M" in heading
    assert (tmp_path / "demo-report.png").stat().st_size > 50_000
