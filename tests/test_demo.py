"""The README's main command, `howsure demo`: on the tiny model for speed, and on the real
bundled model end to end (its report opened in Chromium in tests/test_demo_report.py)."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

import howsure.decisions.recalibration
from howsure.calibration import calibrator_from_dict, overlap_with_fit_items
from howsure.calibration.auto import AutoCalibrator
from howsure.calibration.base import Calibrator
from howsure.cli import app
from howsure.pipelines.demo import STAGES
from howsure.decisions.policy import Policy


def record_fits_and_certifications(monkeypatch) -> tuple[dict[int, np.ndarray], list[dict]]:
    """Spies: (id(calibrator) -> the scores of its last fit, [certify_policy's arguments])."""
    fitted: dict[int, np.ndarray] = {}
    certified: list[dict] = []
    for cls in (Calibrator, AutoCalibrator):
        def recording_fit(self, scores, y, *args, _fit=cls.fit, **kwargs):
            result = _fit(self, scores, y, *args, **kwargs)
            fitted[id(self)] = np.asarray(scores)  # after the call: an outer fit outlasts inner ones
            return result
        monkeypatch.setattr(cls, "fit", recording_fit)
    certify_policy = howsure.decisions.recalibration.certify_policy

    def recording_certify(truth, scores, *args, **kwargs):
        certified.append({"scores": np.asarray(scores), **kwargs})
        return certify_policy(truth, scores, *args, **kwargs)

    monkeypatch.setattr(howsure.decisions.recalibration, "certify_policy", recording_certify)
    return fitted, certified


def test_demo_runs_the_whole_loop_and_resumes(tmp_path, tiny_model_dir, monkeypatch):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--model", str(tiny_model_dir), "--limit", "300", "--target", "0.6",
            "--no-finetune"]
    fitted, certified = record_fits_and_certifications(monkeypatch)
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
    policy_calibrator = calibrator_from_dict(policy.calibrator)
    assert overlap_with_fit_items(policy_calibrator, texts=scored_texts) == fit["n_fit"]
    summary = json.loads((out / "summary.json").read_text())
    columns = {column["key"]: column["values"] for column in summary["metrics"]}
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    raw_right = [max(row["probabilities"], key=row["probabilities"].get) == row["label"] for row in rows]
    assert columns["raw"]["accuracy"]["value"] == pytest.approx(np.mean(raw_right))
    # The threshold is certified on items the policy's calibrator was not fitted on: the two
    # halves of the 300 items share no item (told apart by their score rows, all distinct here).
    [certification] = certified
    fit_rows = {tuple(row) for row in fitted[id(certification["calibrator"])]}
    certify_rows = {tuple(row) for row in certification["scores"]}
    assert len({tuple(row["probabilities"].values()) for row in rows}) == 300
    assert len(fit_rows) + len(certify_rows) == 300 and 100 <= len(certify_rows) <= 200
    assert fit_rows.isdisjoint(certify_rows)
    assert columns["calibrated"]["ece"]["low"] <= columns["calibrated"]["ece"]["value"] <= columns["calibrated"]["ece"]["high"]
    assert "fold" in summary["calibration"]["scheme"]["description"]
    # Its own stage times, in summary.json and in the output, adding up to the total.
    stages = summary["stage_seconds"]
    assert list(stages) == [*STAGES, "total"] and all(seconds >= 0 for seconds in stages.values())
    assert stages["scoring"] > 0 and sum(stages[s] for s in STAGES) == pytest.approx(stages["total"], abs=0.35)
    printed = " ".join(result.output.split())
    assert "stages: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages.items()) in printed
    # ... and what they were measured on: the dtype computed in, the threads, the CPU's flags.
    assert re.match(r"(float32|mixed|bfloat16), \d+ threads; cpu flags: ", summary["machine"]), summary["machine"]
    assert "on: " + " ".join(summary["machine"].split()) in printed
    redrawn = CliRunner().invoke(app, ["report", str(out / "summary.json"), "--out", str(tmp_path / "again.html")])
    assert redrawn.exit_code == 0, redrawn.output
    assert "report:" in result.output and "accuracy" in result.output
    assert "automation" not in summary and not (out / "adapter").exists()  # the short path trains nothing
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
