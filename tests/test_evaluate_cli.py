"""`howsure evaluate` / `howsure report` driven through typer's runner, and the pipeline behind them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from howsure.calibration import make_calibrator
from howsure.cli import app
from howsure.io.scored_tables import load_scored_items
from howsure.pipelines.evaluate import EvaluationConfig, evaluate
from howsure.stats.metrics import expected_calibration_error
from howsure.stats.splits import crossfit_folds

runner = CliRunner()
FAST = ["--bootstrap", "100"]


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def over_confident_table(n: int = 400, seed: int = 0, duplicates: int = 0) -> pd.DataFrame:
    """Predicted label's confidence and correctness, right only confidence**4 of the time."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < confidence**4
    texts = [f"text {i}" for i in range(n)]
    for i in range(duplicates):  # exact copies, as in the seed_cwc data
        texts[n - 1 - i] = texts[i]
        confidence[n - 1 - i], correct[n - 1 - i] = confidence[i], correct[i]
    return pd.DataFrame({"id": range(n), "text": texts, "confidence": confidence,
                         "correct": ["True" if c else "False" for c in correct]})


def score_output(path: Path, n: int = 300, seed: int = 1) -> Path:
    """A `howsure score` style JSONL of a three-label task whose model leans towards 'a'."""
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c"]
    gold = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[gold] + np.array([1.5, 0.0, 0.0])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    with open(path, "w") as handle:
        for i in range(n):
            p = {name: round(float(v), 8) for name, v in zip(names, probabilities[i])}
            top = max(p, key=p.get)
            handle.write(json.dumps({"row": i, "id": str(i), "text": f"t{i}", "label": names[gold[i]],
                                     "prediction": top, "confidence": p[top], "probabilities": p,
                                     "label_mass": p, "other_mass": 0.0, "top_tokens": []}) + "\n")
    return path


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("table") / "scores.csv"
    over_confident_table(duplicates=30).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def evaluated(table_csv, tmp_path_factory) -> Path:
    """One isotonic cross-fitted evaluation of the over-confident table, shared by the tests
    that only read its outputs."""
    out = tmp_path_factory.mktemp("evaluated")
    result = run("evaluate", table_csv, "--out", out, "--calibrator", "isotonic", "--folds", "4", "--seed", "3", *FAST)
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------- the public run


def test_reproduces_public_run_raw_numbers(shared_data, tmp_path):
    source = shared_data / "sentiment/seed_cwc/results/llama31_8b_base_results.json"
    result = run("evaluate", source, "--out", tmp_path, "--bins", "20", "--calibrator", "isotonic", *FAST)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    raw = summary["metrics"][0]["values"]
    assert raw["ece"]["value"] == pytest.approx(0.173, abs=0.002)
    assert raw["auroc"]["value"] == pytest.approx(0.719, abs=0.002)
    assert raw["accuracy"]["value"] == pytest.approx(0.722, abs=0.002)
    calibrated = summary["metrics"][-1]["values"]
    # The write-up fitted isotonic and scored it on the same items: ECE 8.5e-18. Held out,
    # isotonic is good but nowhere near zero.
    assert 0.01 < calibrated["ece"]["value"] < raw["ece"]["value"]
    assert summary["input"]["n_unique_texts"] == 935
    assert "0.173" in result.output and "report.html" in result.output


# --------------------------------------------------------------------------- honesty


def test_calibrated_numbers_are_out_of_fold(table_csv, evaluated):
    records = [json.loads(line) for line in (evaluated / "predictions.jsonl").read_text().splitlines()]
    frame = pd.read_csv(table_csv)
    correct = (frame["correct"] == True).to_numpy().astype(int)  # noqa: E712 - pandas parsed the words
    confidence = frame["confidence"].to_numpy()
    folds, _ = crossfit_folds(correct, n_folds=4, seed=3, groups=frame["text"].tolist())
    by_id = {r["id"]: r for r in records}
    for number, (fit_idx, held_out) in enumerate(folds):
        refit = make_calibrator("isotonic", mode="confidence").fit(confidence[fit_idx], correct[fit_idx])
        expected = refit.predict_proba(confidence[held_out])
        got = [by_id[str(i)]["calibrated_confidence"] for i in held_out]
        np.testing.assert_allclose(got, expected, rtol=1e-9)
        assert {by_id[str(i)]["fold"] for i in held_out} == {number}
        # ...and not what a calibrator that saw the item would give.
        seen_all = make_calibrator("isotonic", mode="confidence").fit(confidence, correct)
        assert not np.allclose(got, seen_all.predict_proba(confidence[held_out]))


def test_duplicate_texts_share_a_fold(table_csv, evaluated):
    frame = pd.read_csv(table_csv)
    folds = {r["id"]: r["fold"] for r in map(json.loads, (evaluated / "predictions.jsonl").read_text().splitlines())}
    for _, copies in frame.groupby("text"):
        assert len({folds[str(i)] for i in copies["id"]}) == 1
    summary = json.loads((evaluated / "summary.json").read_text())
    assert summary["input"]["duplicates"].startswith("30 texts appear more than once")
    assert "370 groups" in summary["calibration"]["scheme"]["description"]


def test_explicit_split_measures_only_test_items(table_csv):
    items = load_scored_items(table_csv)
    evaluation = evaluate(items, EvaluationConfig(calibrator="temperature", test_size=0.25, n_boot=50))
    summary = evaluation.summary
    assert [c["key"] for c in summary["metrics"]] == ["raw", "raw_test", "calibrated"]
    n_test = evaluation.evaluated.size
    assert 80 <= n_test <= 120
    assert summary["calibration"]["scheme"]["kind"] == "calibration/test split"
    assert summary["metrics"][1]["title"] == f"Raw (test {n_test})"
    assert summary["metrics"][1]["values"]["accuracy"]["value"] == pytest.approx(items.correct[evaluation.evaluated].mean())


def test_calibration_helps_an_over_confident_model_on_held_out_items(evaluated):
    raw, calibrated = (c["values"] for c in json.loads((evaluated / "summary.json").read_text())["metrics"])
    assert calibrated["ece"]["value"] < raw["ece"]["value"] / 2
    assert calibrated["brier"]["value"] < raw["brier"]["value"]
    assert calibrated["accuracy"]["value"] == raw["accuracy"]["value"]  # confidence mode keeps labels


def test_auto_reports_its_choice(tmp_path):
    path = tmp_path / "scores.csv"
    over_confident_table(n=120).to_csv(path, index=False)
    config = EvaluationConfig(calibrator="auto", n_folds=3, n_boot=50)
    evaluation = evaluate(load_scored_items(path), config)
    calibration = evaluation.summary["calibration"]
    assert calibration["chosen"] in {"temperature", "platt", "isotonic", "beta", "histogram", "venn_abers"}
    assert calibration["reason"].startswith(f"Chose {calibration['chosen']}")
    assert any(note.startswith("auto chose per fitting part") for note in evaluation.summary["notes"])


# --------------------------------------------------------------------------- inputs


def test_score_output_uses_the_full_distribution(tmp_path):
    path = score_output(tmp_path / "scored.jsonl")
    # Platt scaling is fitted per label (one-vs-rest), so unlike temperature it can undo a bias.
    result = run("evaluate", path, "--out", tmp_path / "out", "--calibrator", "platt", *FAST)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["calibration"]["mode"] == "distribution"
    assert summary["input"]["labels"] == ["a", "b", "c"]
    raw, calibrated = (c["values"] for c in summary["metrics"])
    assert {"nll_multiclass", "brier_multiclass"} <= set(raw) & set(calibrated)
    # The model leans to 'a'; calibrating the distribution moves some predictions and wins accuracy.
    assert calibrated["accuracy"]["value"] > raw["accuracy"]["value"]
    assert any(note.startswith("Calibration changed the predicted label of") for note in summary["notes"])
    record = json.loads((tmp_path / "out/predictions.jsonl").read_text().splitlines()[0])
    assert set(record["calibrated_probabilities"]) == {"a", "b", "c"}


def test_label_map_renames_gold_values(tmp_path):
    path = score_output(tmp_path / "scored.jsonl")
    numbered = tmp_path / "numbered.jsonl"
    codes = {"a": "0", "b": "1", "c": "2"}
    records = [json.loads(line) for line in path.read_text().splitlines()]
    numbered.write_text("".join(json.dumps({**r, "label": codes[r["label"]]}) + "\n" for r in records))
    mapped = load_scored_items(numbered, label_map={"0": "a", "1": "b", "2": "c"})
    np.testing.assert_array_equal(mapped.labels, load_scored_items(path).labels)
    result = run("evaluate", numbered, "--out", tmp_path / "out", "--label-map", "0=a,1=b,2")
    assert result.exit_code == 2
    assert "--label-map entry '2' is not VALUE=LABEL" in " ".join(result.output.split())
    result = run("evaluate", numbered, "--out", tmp_path / "out")
    assert "rename gold values with --label-map VALUE=LABEL" in " ".join(result.output.split())


def test_score_output_in_confidence_mode(tmp_path):
    items = load_scored_items(score_output(tmp_path / "scored.jsonl"))
    summary = evaluate(items, EvaluationConfig(calibrator="isotonic", mode="confidence", n_boot=50)).summary
    raw, calibrated = summary["metrics"]
    assert summary["calibration"]["mode"] == "confidence"
    assert calibrated["values"]["accuracy"] == raw["values"]["accuracy"]
    assert "nll_multiclass" in raw["values"] and "nll_multiclass" not in calibrated["values"]


def test_gold_and_prediction_columns_rebuild_a_binary_distribution(shared_data):
    source = shared_data / "sentiment/seed_cwc/results/llama31_8b_base_results.json"
    items = load_scored_items(source, label_column="expected", prediction_column="prediction")
    assert items.label_names == ["negative", "positive"]
    assert items.has_distribution
    np.testing.assert_allclose(items.probabilities.sum(axis=1), 1.0)
    assert expected_calibration_error(items.correct, items.confidence, 20) == pytest.approx(0.173, abs=0.002)


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "parquet"])
def test_positive_probability_tables(tmp_path, suffix):
    rng = np.random.default_rng(2)
    p_positive = rng.uniform(0, 1, 200)
    frame = pd.DataFrame({"y": (rng.uniform(size=200) < p_positive).astype(int), "p": p_positive})
    path = tmp_path / f"scores.{suffix}"
    if suffix == "parquet":
        frame.to_parquet(path)
    elif suffix == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, sep="\t" if suffix == "tsv" else ",", index=False)
    items = load_scored_items(path, prob_column="p", label_column="y")
    assert items.label_names == ["0", "1"]
    np.testing.assert_allclose(items.confidence, np.maximum(p_positive, 1 - p_positive))
    np.testing.assert_array_equal(items.correct, ((p_positive > 0.5) == frame["y"].astype(bool)).astype(float))


# --------------------------------------------------------------------------- report command


def test_report_redraws_from_the_summary(evaluated, tmp_path):
    result = run("report", evaluated / "summary.json", "--out", tmp_path / "again.html")
    assert result.exit_code == 0, result.output
    again = (tmp_path / "again.html").read_text()
    assert again == (evaluated / "report.html").read_text()
    assert "Calibrated (held-out 400)" in result.output


# --------------------------------------------------------------------------- bad input


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


BAD_INPUTS = [
    (lambda: pd.DataFrame({"p": [0.5], "correct": [1]}), [],
     r"no probability column: pass --prob-column; columns are: p, correct"),
    (lambda: pd.DataFrame({"confidence": [0.5], "ok": [1]}), ["--correct-column", "right"],
     r"--correct-column column 'right' is not in the input; columns are: confidence, ok"),
    (lambda: pd.DataFrame({"confidence": [0.5, None], "correct": [1, 0]}), [],
     r"column 'confidence' row 1: .* is not a probability; expected a number in \[0, 1\]"),
    (lambda: pd.DataFrame({"confidence": [0.5, 1.3], "correct": [1, 0]}), [],
     r"column 'confidence' row 1: '1.3' is not a probability"),
    (lambda: pd.DataFrame({"confidence": [0.5, 0.7], "correct": [1, "maybe"]}), [],
     r"column 'correct' row 1: 'maybe' is not a correctness; expected true/false or 1/0"),
    (lambda: pd.DataFrame({"confidence": [0.6] * 20, "correct": [1] * 20}), [],
     r"one class only"),
    (lambda: pd.DataFrame({"confidence": [0.6, 0.7, 0.8], "correct": [1, 0, 1]}), [],
     r"3 items are fewer than n_folds=5"),
    (lambda: pd.DataFrame({"confidence": [0.6, 0.7], "correct": [1, 0]}), ["--mode", "distribution"],
     r"mode 'distribution' needs per-label probabilities and gold labels"),
    (lambda: pd.DataFrame({"confidence": [0.6, 0.7], "correct": [1, 0]}), ["--mode", "both"],
     r"unknown calibration mode 'both'"),
    (lambda: pd.DataFrame({"confidence": [0.6, 0.7], "correct": [1, 0]}), ["--calibrator", "magic"],
     r"unknown calibrator 'magic'"),
    (lambda: pd.DataFrame({"confidence": [0.6, 0.7], "correct": [1, 0]}), ["--folds", "3", "--test-size", "0.5"],
     r"--folds 3 and --test-size 0.5 exclude each other"),
    (lambda: pd.DataFrame({"p": [0.6, 0.7], "y": ["pos", "neg"]}), ["--prob-column", "p", "--label-column", "y"],
     r"column 'y' holds labels \['neg', 'pos'\]; say which one .* --positive-label"),
    (lambda: pd.DataFrame({"p": [0.6, 0.7], "y": ["pos", "neg"]}),
     ["--prob-column", "p", "--label-column", "y", "--positive-label", "good"],
     r"--positive-label 'good' is not in column 'y'"),
    (lambda: pd.DataFrame({"confidence": [0.6, 0.7], "label": ["a", ""], "prediction": ["a", "b"]}), [],
     r"column 'label' row 1 has no label"),
    (lambda: pd.DataFrame({"text": ["x"], "score": [0.5]}), ["--prob-column", "score"],
     r"cannot tell which items are right: pass --correct-column, or --label-column"),
]


@pytest.mark.parametrize("make_frame,options,match", BAD_INPUTS)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, make_frame, options, match):
    path = write(tmp_path, make_frame())
    result = run("evaluate", path, "--out", tmp_path / "out", "--calibrator", "platt", *options, *FAST)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # rich wraps long lines
    assert message.startswith("error:")
    assert re.search(match, message), message
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "records,match",
    [
        ([{"text": "t", "label": "d", "probabilities": {"a": 0.6, "b": 0.4}}],
         r"column 'label' row 0: gold label 'd' is not one of the scored labels \['a', 'b'\]"),
        ([{"text": "t", "label": "a", "probabilities": {"a": 0.6, "b": 0.4}},
          {"text": "u", "label": "a", "probabilities": {"a": 0.6, "c": 0.4}}],
         r"'probabilities' row 1 has labels \['a', 'c'\]; expected \['a', 'b'\]"),
        ([{"text": "t", "label": "a", "probabilities": {"a": "high", "b": 0.4}}],
         r"'probabilities' row 0: label 'a' has 'high'; expected a number in \[0, 1\]"),
        ([{"text": "t", "probabilities": {"a": 0.6, "b": 0.4}}],
         r"gold label column 'label' is not in the input; columns are: text, probabilities; score a table with its label column"),
    ],
)
def test_bad_score_output_is_named(tmp_path, records, match):
    path = tmp_path / "scored.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run("evaluate", path, "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 2
    assert re.search(match, " ".join(result.output.split())), result.output


@pytest.mark.parametrize(
    "content,match",
    [
        ('{"format": "other"}', r"is not a howsure evaluation summary \(format 'other'"),
        ("[1, 2]", r"is not a howsure evaluation summary \(format 'list'"),
        ('{"format": "howsure.evaluation", "version": 9}', r"has summary version 9"),
        ('{"format": "howsure.evaluation", "version": 1, "title": "x"}', r"lacks input, calibration, settings"),
        ("{not json", r"is not valid JSON"),
    ],
)
def test_report_rejects_what_is_not_a_summary(tmp_path, content, match):
    path = tmp_path / "summary.json"
    path.write_text(content)
    result = run("report", path)
    assert result.exit_code == 2
    assert re.search(match, " ".join(result.output.split())), result.output


def test_report_of_missing_file(tmp_path):
    result = run("report", tmp_path / "nope.json")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_evaluate_says_what_the_calibration_error_intervals_are_and_records_the_fitting_items(tmp_path):
    path = score_output(tmp_path / "scored.jsonl")
    result = run("evaluate", path, "--out", tmp_path / "out", "--calibrator", "platt", *FAST)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    biases = [column["values"]["ece"]["bias"] for column in summary["metrics"]]
    text = " ".join(result.output.split())
    assert "calibration-error intervals: 95 % bootstrap spread of the estimate, recentred on it" in text
    assert f"{biases[0]:+.3f} raw, {biases[1]:+.3f} calibrated" in text
    for column in summary["metrics"]:
        ece = column["values"]["ece"]
        assert ece["low"] <= ece["value"] <= ece["high"]
    # The calibrator written beside the report was fitted on every item, and says so.
    calibrator = json.loads((tmp_path / "out" / "calibrator.json").read_text())
    assert calibrator["fit_items"]["key"] == "text" and calibrator["fit_items"]["n_items"] == 300
