"""Fit a calibrator on one part and certify on the other, and refuse to certify on fitting items
(howsure.decisions.recalibration, howsure.calibration.fitting, howsure thresholds --fit-calibrator)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.calibration import calibrator_from_dict, fit_calibrator, load_calibrator, overlap_with_fit_items
from howsure.calibration.fitting import item_hashes
from howsure.cli import app
from howsure.errors import CalibrationError, PolicyError
from howsure.decisions.recalibration import RAW_ECE_WARNING, certify_on_parts, certify_with_split, raw_calibration_note
from howsure.decisions.policy import Policy
from test_decisions_cli import LABELS, score_records

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def biased_records(n: int = 2400, seed: int = 0) -> list[dict]:
    """`howsure score` records of a three-label model that piles mass on "refund": its raw
    argmax is mostly wrong, though the probabilities still order the labels usefully."""
    return score_records(n, seed, signal=(4.0, 1.5), last_label_bias=6.0)


def arrays(records):
    probabilities = np.array([[r["probabilities"][label] for label in LABELS] for r in records])
    truth = np.array([LABELS.index(r["label"]) for r in records])
    return probabilities, truth


@pytest.fixture
def scored(tmp_path) -> Path:
    path = tmp_path / "scored.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in biased_records()))
    return path


# ------------------------------------------------------------------------------ library
def test_a_fitted_calibrator_records_its_fitting_items_and_keeps_them_through_json():
    probabilities, truth = arrays(biased_records(600))
    texts = [f"text number {i}" for i in range(600)]
    calibrator = fit_calibrator("temperature", probabilities[:400], truth[:400], texts=texts[:400])
    assert calibrator.fit_items["key"] == "text" and calibrator.fit_items["n_items"] == 400
    assert sorted(calibrator.fit_items["hashes"]) == sorted(item_hashes(texts[:400], "text"))
    again = calibrator_from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert again.fit_items == calibrator.fit_items
    assert overlap_with_fit_items(again, texts=texts[400:]) == 0
    assert overlap_with_fit_items(again, texts=texts[390:410]) == 10
    # Fingerprinted by text, the ids of the items cannot tell.
    assert overlap_with_fit_items(again, ids=["item-1"]) is None


def test_a_calibrator_without_fitting_items_writes_the_same_json_as_before():
    probabilities, truth = arrays(biased_records(300))
    data = fit_calibrator("temperature", probabilities, truth).to_dict()
    assert "fit_items" not in data
    assert calibrator_from_dict(data).fit_items is None


def test_a_malformed_fit_items_is_refused_by_name():
    probabilities, truth = arrays(biased_records(300))
    data = fit_calibrator("temperature", probabilities, truth, ids=["a"] * 300).to_dict()
    data["fit_items"]["hashes"] = "not a list"
    with pytest.raises(CalibrationError, match="malformed fit_items"):
        calibrator_from_dict(data)


def test_certify_with_split_fits_on_one_part_and_certifies_on_the_other():
    records = biased_records()
    probabilities, truth = arrays(records)
    texts = [r["text"] for r in records]
    done = certify_with_split(truth, probabilities, calibrator="platt", test_size=0.5, seed=3, texts=texts,
                              labels=LABELS, target_accuracy=0.9)
    assert np.intersect1d(done.fit_idx, done.certify_idx).size == 0
    assert done.fit_idx.size + done.certify_idx.size == len(records)
    policy = done.policy
    assert policy.guarantee["n_calibration"] == done.certify_idx.size
    assert policy.guarantee["calibrator_fit"]["n_fit"] == done.fit_idx.size
    assert overlap_with_fit_items(done.calibrator, texts=[texts[i] for i in done.certify_idx]) == 0
    assert overlap_with_fit_items(done.calibrator, texts=[texts[i] for i in done.fit_idx]) == done.fit_idx.size
    # The raw argmax is mostly wrong; calibrated (per label, undoing the bias) nearly all is right.
    assert (probabilities.argmax(axis=1) == truth).mean() < 0.5
    assert policy.guarantee["certified"] and policy.guarantee["automation_rate"] > 0.9


def test_parts_that_share_items_are_refused():
    probabilities, truth = arrays(biased_records(300))
    with pytest.raises(PolicyError, match="share items"):
        certify_on_parts(truth, probabilities, np.arange(0, 200), np.arange(150, 300), calibrator="platt",
                         labels=LABELS)


def test_the_raw_calibration_note_names_the_ece_above_the_level():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1, 2000)
    calibrated = rng.uniform(size=2000) < confidence
    assert raw_calibration_note(calibrated, confidence) is None
    over = raw_calibration_note(rng.uniform(size=2000) < confidence - 0.2, confidence)
    assert over is not None and f"above {RAW_ECE_WARNING}" in over and "--fit-calibrator" in over


# ------------------------------------------------------------------------------ CLI
def test_thresholds_fit_calibrator_certifies_what_raw_scores_cannot(tmp_path, scored):
    raw = invoke("thresholds", scored, "--target", 0.9, "--out", tmp_path / "raw.json")
    assert raw.exit_code == 0, raw.output
    assert "raw confidences are badly calibrated" in " ".join(raw.output.split())
    assert Policy.load(tmp_path / "raw.json").guarantee["automation_rate"] < 0.5

    fitted = invoke("thresholds", scored, "--target", 0.9, "--fit-calibrator", "platt", "--seed", 1,
                    "--out", tmp_path / "fit.json")
    assert fitted.exit_code == 0, fitted.output
    out = " ".join(fitted.output.split())
    assert "calibrator platt fitted on 1200 items, threshold certified on the other 1200" in out
    assert "badly calibrated" not in out
    policy = Policy.load(tmp_path / "fit.json")
    assert policy.guarantee["automation_rate"] > 0.9 and policy.guarantee["n_calibration"] == 1200
    assert policy.calibrator["fit_items"]["n_items"] == 1200
    assert policy.guarantee["calibrator_fit"]["split"].startswith("calibrator fitted on 1200 items")


def test_thresholds_refuses_a_calibrator_fitted_on_the_same_items(tmp_path, scored):
    evaluated = invoke("evaluate", scored, "--out", tmp_path / "ev", "--calibrator", "platt", "--bootstrap", 20)
    assert evaluated.exit_code == 0, evaluated.output
    calibrator = tmp_path / "ev" / "calibrator.json"
    assert load_calibrator(calibrator).fit_items["n_items"] == 2400

    refused = invoke("thresholds", scored, "--calibrator", calibrator, "--out", tmp_path / "p.json")
    assert refused.exit_code != 0
    assert "2400 of the 2400 items" in " ".join(refused.output.split()) and "--allow-overlap" in refused.output
    assert not (tmp_path / "p.json").exists()

    allowed = invoke("thresholds", scored, "--calibrator", calibrator, "--allow-overlap", "--out", tmp_path / "p.json")
    assert allowed.exit_code == 0, allowed.output
    assert "the certificate does not hold" in " ".join(allowed.output.split())
    assert Policy.load(tmp_path / "p.json").guarantee["calibrator_overlap"] == {
        "checked": True, "by": "text", "n_overlap": 2400, "allowed": True}


def test_thresholds_accepts_a_calibrator_fitted_on_other_items(tmp_path):
    records = biased_records()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in records[:1200]))
    second.write_text("".join(json.dumps(r) + "\n" for r in records[1200:]))
    assert invoke("evaluate", first, "--out", tmp_path / "ev", "--calibrator", "platt", "--bootstrap", 20).exit_code == 0
    result = invoke("thresholds", second, "--target", 0.9, "--calibrator", tmp_path / "ev" / "calibrator.json",
                    "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    assert Policy.load(tmp_path / "p.json").guarantee["calibrator_overlap"]["n_overlap"] == 0


def test_fit_calibrator_and_calibrator_exclude_each_other(tmp_path, scored):
    result = invoke("thresholds", scored, "--fit-calibrator", "platt", "--calibrator", tmp_path / "c.json",
                    "--out", tmp_path / "p.json")
    assert result.exit_code != 0 and "exclude each other" in result.output
