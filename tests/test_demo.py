"""The README's main command, `howsure demo`: on the tiny model for speed, and on the real
bundled model end to end (its report opened in Chromium in tests/test_demo_report.py)."""

import json

import pytest
from typer.testing import CliRunner

from howsure.calibration import calibrator_from_dict, overlap_with_fit_items
from howsure.cli import app
from howsure.policy import Policy


def test_demo_runs_the_whole_loop_and_resumes(tmp_path, tiny_model_dir):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--model", str(tiny_model_dir), "--limit", "300", "--target", "0.6"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("scores.jsonl", "report.html", "summary.json", "policy.json", "calibrator.json"):
        assert (out / name).exists(), name
    assert len((out / "scores.jsonl").read_text().splitlines()) == 300
    policy = Policy.load(out / "policy.json")
    assert policy.labels == ["positive", "negative"]
    # Certified by the method that needs iid items only, on items the calibrator never saw.
    fit = policy.guarantee["calibrator_fit"]
    assert policy.guarantee["method"] == "fallback" and fit["n_fit"] + fit["n_certify"] == 300
    assert policy.guarantee["n_calibration"] == fit["n_certify"] == 150
    assert policy.calibrator["fit_items"]["n_items"] == fit["n_fit"]
    scored_texts = [json.loads(line)["text"] for line in (out / "scores.jsonl").read_text().splitlines()]
    fitted = calibrator_from_dict(policy.calibrator)
    assert overlap_with_fit_items(fitted, texts=scored_texts) == fit["n_fit"]
    summary = json.loads((out / "summary.json").read_text())
    columns = {column["key"]: column["values"] for column in summary["metrics"]}
    assert 0 <= columns["raw"]["accuracy"]["value"] <= 1
    assert columns["calibrated"]["ece"]["low"] <= columns["calibrated"]["ece"]["value"] <= columns["calibrated"]["ece"]["high"]
    assert "fold" in summary["calibration"]["scheme"]["description"]
    assert "report:" in result.output and "accuracy" in result.output
    # The tiny random model puts almost nothing on the labels: said once, as a warning line.
    assert " ".join(result.output.split()).count("warning: median probability on the labels is") == 1
    again = CliRunner().invoke(app, args)  # scores are reused, not recomputed
    assert again.exit_code == 0, again.output
    assert len((out / "scores.jsonl").read_text().splitlines()) == 300


def test_demo_rejects_a_bad_target(tmp_path, tiny_model_dir):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--model", str(tiny_model_dir),
                                      "--limit", "50", "--target", "1.5"])
    assert result.exit_code == 2
    assert "1.5" in result.output


def test_demo_dtype_help_lists_every_dtype():
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert all(dtype in text for dtype in ("float32", "mixed", "bfloat16"))
