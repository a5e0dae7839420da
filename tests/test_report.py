"""The HTML report: self-contained, says how its numbers were made, opens in a real browser."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from howsure import report
from howsure.errors import DataError
from howsure.io.scored_tables import scored_items_from_frame
from howsure.pipelines.evaluate import EvaluationConfig, evaluate

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "out" / "screenshots"


@pytest.fixture(scope="module")
def evaluation():
    rng = np.random.default_rng(4)
    confidence = rng.uniform(0.5, 1.0, 300)
    correct = rng.uniform(size=300) < confidence**3
    frame = pd.DataFrame({"text": [f"t{i % 280}" for i in range(300)], "confidence": confidence, "correct": correct})
    items = scored_items_from_frame(frame, source="synthetic.csv")
    return evaluate(items, EvaluationConfig(calibrator="platt", n_boot=100, seed=7, title="Over-confident <b>model</b>"),
                    command="howsure evaluate synthetic.csv --out out")


@pytest.fixture(scope="module")
def written(evaluation, tmp_path_factory):
    return evaluation.write(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page_html(written) -> str:
    return written["report"].read_text("utf-8")


def test_report_is_self_contained(page_html, evaluation):
    assert not re.search(r"(?:src|href)\s*=\s*[\"'](?!data:)", page_html), "every src/href must be a data URI"
    assert not re.search(r"https?://|url\(|@import|<link|<script", page_html)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page_html)
    assert len(images) == len(evaluation.summary["plots"]) == 5
    for encoded in images:
        assert base64.b64decode(encoded).startswith(b"\x89PNG\r\n\x1a\n")


def test_report_says_how_the_numbers_were_made(page_html, evaluation):
    summary = evaluation.summary
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page_html)))
    assert "confidence — only the predicted label's confidence was calibrated" in text
    assert "5-fold cross-fitting" in text and "seed 7" in text
    assert "300 items in 280 groups, duplicates kept on one side" in text
    assert "20 texts appear more than once" in text
    assert "Calibrated numbers come only from items the calibrator was not fitted on" in text
    raw, calibrated = summary["metrics"]
    for column in (raw, calibrated):
        ece = column["values"]["ece"]
        assert f"{ece['value']:.3f}" in text
        assert f"[{ece['low']:.3f}, {ece['high']:.3f}]" in text
    assert "howsure evaluate synthetic.csv --out out" in text


def test_report_marks_better_and_worse_changes(page_html, evaluation):
    raw, calibrated = (c["values"] for c in evaluation.summary["metrics"])
    assert calibrated["ece"]["value"] < raw["ece"]["value"]
    drop = raw["ece"]["value"] - calibrated["ece"]["value"]
    assert re.search(rf'<td class="better">▼ {drop:.3f}</td>', page_html)


def test_title_is_escaped(page_html):
    assert "<title>Over-confident &lt;b&gt;model&lt;/b&gt;</title>" in page_html
    assert "<b>model</b>" not in page_html


def test_summary_json_has_no_nan_and_reloads(written, evaluation):
    text = written["summary"].read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = report.load_summary(written["summary"])
    assert loaded["metrics"][0]["values"]["accuracy"] == evaluation.summary["metrics"][0]["values"]["accuracy"]
    assert report.render_html(loaded) == written["report"].read_text("utf-8")


def test_json_ready_turns_nan_and_numpy_into_json():
    data = {"a": np.float64("nan"), "b": [np.int64(3), np.array([1.5, np.inf])], "c": np.bool_(True), 4: "x"}
    assert report.json_ready(data) == {"a": None, "b": [3, [1.5, None]], "c": True, "4": "x"}


@pytest.mark.parametrize(
    "entry,expected",
    [
        ({"value": 0.12345, "low": 0.1, "high": 0.15}, ("0.123", "[0.100, 0.150]")),
        ({"value": 0.5, "low": None, "high": None}, ("0.500", "")),
        ({"value": None, "low": None, "high": None}, ("–", "")),
        (None, ("–", "")),
    ],
)
def test_format_interval(entry, expected):
    assert report.format_interval(entry) == expected


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda s: s.update(format="x"), r"not a howsure evaluation summary \(format 'x'"),
        (lambda s: s.update(version=2), r"summary version 2"),
        (lambda s: s.pop("plots"), r"lacks plots"),
        (lambda s: s["plots"][0]["display"].update(kind="pie"), r"plot kind 'pie' is unknown"),
    ],
)
def test_bad_summaries_are_named(evaluation, mutate, match):
    summary = json.loads(json.dumps(report.json_ready(evaluation.summary)))
    mutate(summary)
    with pytest.raises(DataError, match=match):
        report.render_html(summary)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_report_renders_offline_in_chromium(written):
    sync_api = pytest.importorskip("playwright.sync_api")
    url = written["report"].resolve().as_uri()
    requested: list[str] = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "report.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(url, wait_until="load")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            heading = page.inner_text("h1")
            table_rows = page.locator("table tbody tr").count()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert requested == [url], f"the report asked for more than itself: {requested}"
    assert len(widths) == 5 and all(w > 300 for w in widths), widths
    assert heading == "Over-confident <b>model</b>"
    assert table_rows == 10
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000
