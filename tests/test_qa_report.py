"""The estimator comparison of `howsure qa-report`: every estimator through the same cross-fitted
calibration, metrics and certified threshold; a constant estimator flagged with AUROC 0.5; nulls
counted; a probe from saved hidden states cross-fitted by question."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.errors import DataError
from howsure.pipelines.qa_report import PROBE_NAME, QAReportConfig, qa_records_from_dicts, qa_report

runner = CliRunner()


def synthetic(n=300, seed=0):
    """Records with an informative estimator, a constant one, one with nulls, and hidden states
    whose layer 1 carries correctness."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.4
    informative = np.clip(0.25 + 0.4 * correct + rng.normal(0, 0.15, n), 0, 1)
    verbal = np.where(rng.random(n) < 0.2, np.nan, np.clip(0.5 + 0.1 * correct + rng.normal(0, 0.2, n), 0, 1))
    records = []
    for i in range(n):
        records.append({"id": f"q{i}", "question": f"question {i}?", "answer": "a", "gold": ["a"],
                        "correct": bool(correct[i]), "judge": "exact_match",
                        "scores": {"token_prob": float(informative[i]), "always_half": 0.5,
                                   "verbal": None if np.isnan(verbal[i]) else float(verbal[i])}})
    hidden = rng.normal(size=(n, 3, 8)).astype(np.float16)
    hidden[:, 1, 0] += (2.5 * correct).astype(np.float16)
    return records, hidden


CONFIG = QAReportConfig(n_boot=100)


def write_inputs(tmp_path, n=200):
    """`synthetic` records as qa.jsonl and their hidden states as hidden.npy in ``tmp_path``."""
    records, hidden = synthetic(n=n)
    source = tmp_path / "qa.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    np.save(tmp_path / "hidden.npy", hidden)
    return records, hidden, source


def by_name(summary):
    return {e["name"]: e for e in summary["estimators"]}


def test_a_constant_estimator_gets_auroc_one_half_and_is_flagged():
    records, _ = synthetic()
    estimators = by_name(qa_report(qa_records_from_dicts(records), config=CONFIG))
    constant = estimators["always_half"]
    assert constant["raw"]["auroc"]["value"] == pytest.approx(0.5)
    assert any(flag.startswith("constant") for flag in constant["flags"])
    informative = estimators["token_prob"]
    assert informative["raw"]["auroc"]["value"] > 0.85
    assert not any(flag.startswith("constant") for flag in informative["flags"])


def test_nulls_are_counted_and_left_out():
    records, _ = synthetic()
    n_null = sum(r["scores"]["verbal"] is None for r in records)
    verbal = by_name(qa_report(qa_records_from_dicts(records), config=CONFIG))["verbal"]
    assert verbal["n_null"] == n_null > 0 and verbal["n_scored"] == len(records) - n_null
    assert any("null" in flag for flag in verbal["flags"])


def test_every_estimator_gets_calibrated_metrics_and_a_certified_threshold():
    records, _ = synthetic()
    summary = qa_report(qa_records_from_dicts(records), config=QAReportConfig(n_boot=100, target_accuracy=0.7))
    informative = by_name(summary)["token_prob"]
    for side in ("raw", "calibrated"):
        assert set(informative[side]) == {"accuracy", "auroc", "ece", "rms_calibration_error", "brier"}
    cert = informative["certification"]
    assert cert["certified"] and cert["n_calibration"] + cert["n_fit"] == len(records)
    assert cert["empirical_accuracy"] >= 0.7
    # The constant estimator cannot single out questions to answer: its answered accuracy is
    # the base rate (0.4), below the target, so nothing is certified.
    assert not by_name(summary)["always_half"]["certification"]["certified"]


def test_probe_from_hidden_states_is_cross_fitted(tmp_path):
    records, hidden = synthetic()
    summary = qa_report(qa_records_from_dicts(records), hidden=hidden.astype(np.float32), config=CONFIG)
    probe = by_name(summary)[PROBE_NAME]
    assert probe["raw"]["auroc"]["value"] > 0.8
    assert summary["probe"]["chosen_layers"] == [1] * 5
    # Hidden states of pure noise give a probe near chance: nothing leaks from fitting items.
    noise = np.random.default_rng(9).normal(size=(len(records), 1, 300)).astype(np.float32)
    noisy = by_name(qa_report(qa_records_from_dicts(records), hidden=noise, config=CONFIG))[PROBE_NAME]
    assert abs(noisy["raw"]["auroc"]["value"] - 0.5) < 0.12


def test_bad_records_name_the_value():
    with pytest.raises(DataError, match="'correct' must be true or false"):
        qa_records_from_dicts([{"id": "a", "correct": "yes", "scores": {}}])
    with pytest.raises(DataError, match="score 'p' has 1.5, outside"):
        qa_records_from_dicts([{"id": "a", "correct": True, "scores": {"p": 1.5}}])
    with pytest.raises(DataError, match="score 'p' is 'high'"):
        qa_records_from_dicts([{"id": "a", "correct": True, "scores": {"p": "high"}}])


def test_log_probability_scores_are_exponentiated_and_said_so():
    records = qa_records_from_dicts([{"id": "a", "correct": True, "scores": {"lp": -0.5}},
                                     {"id": "b", "correct": False, "scores": {"lp": None}},
                                     {"id": "c", "correct": False, "scores": {"lp": -2.0}}])
    np.testing.assert_allclose(records.scores["lp"], [np.exp(-0.5), np.nan, np.exp(-2.0)])
    assert records.notes and "log-probability" in records.notes[0]
    with pytest.raises(DataError, match="ids repeat"):
        qa_records_from_dicts([{"id": "a", "correct": True, "scores": {}}] * 2)


def test_qa_report_command_writes_the_page_and_the_summary(tmp_path):
    records, hidden, source = write_inputs(tmp_path)
    result = runner.invoke(app, ["qa-report", "-i", str(source), "--hidden", str(tmp_path / "hidden.npy"),
                                 "-o", str(tmp_path / "report.html"), "--json", str(tmp_path / "summary.json"),
                                 "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert page.count("<h2>Reliability: ") == 4  # one diagram per estimator, the probe included
    assert "constant: every scored question got 0.5" in page
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [e["name"] for e in summary["estimators"]] == ["token_prob", "always_half", "verbal", PROBE_NAME]
    np.save(tmp_path / "short.npy", hidden[:10])
    result = runner.invoke(app, ["qa-report", "-i", str(source), "--hidden", str(tmp_path / "short.npy"),
                                 "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "expected (200, layers, hidden)" in " ".join(result.output.split())


def test_markdown_table_has_every_metric_raw_and_calibrated_with_intervals_and_the_probe_layer(tmp_path):
    records, hidden, source = write_inputs(tmp_path)
    result = runner.invoke(app, ["qa-report", "-i", str(source), "--hidden", str(tmp_path / "hidden.npy"),
                                 "-o", str(tmp_path / "report.html"), "--json", str(tmp_path / "summary.json"),
                                 "--bootstrap", "50", "--markdown"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    probe = summary["probe"]
    assert probe["best_layer"] == 1 and set(probe["layer_auroc"]) == {"0", "1", "2"}
    assert probe["layer_auroc"]["1"] > 0.8 > max(probe["layer_auroc"]["0"], probe["layer_auroc"]["2"])
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| estimator | scored | accuracy raw | accuracy cal. | AUROC raw | AUROC cal. | "
                               "ECE raw | ECE cal. | RMS cal. error raw | RMS cal. error cal. |")
    token = next(line for line in lines if line.startswith("| token_prob |")).split(" | ")
    raw_ece = summary["estimators"][0]["raw"]["ece"]
    assert token[6] == f"{raw_ece['value']:.3f} [{raw_ece['low']:.3f}, {raw_ece['high']:.3f}]"
    assert all("[" in cell for cell in token[2:10])  # every metric with its interval
    assert any(line.startswith("Probe layer: 1 has the best") for line in lines)


def test_targets_out_writes_each_record_with_the_probes_cross_fitted_value(tmp_path):
    from howsure.finetune.verbal import read_verbal_file
    from howsure.probes.crossval import nested_crossfit

    records, hidden, source = write_inputs(tmp_path)
    out = tmp_path / "targets.jsonl"
    result = runner.invoke(app, ["qa-report", "-i", str(source), "--hidden", str(tmp_path / "hidden.npy"),
                                 "-o", str(tmp_path / "r.html"), "--bootstrap", "20", "--targets-out", str(out)])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: v for k, v in w.items() if k != "target_confidence"} for w in written] == records
    nested = nested_crossfit(hidden.astype(np.float32), np.array([r["correct"] for r in records], dtype=int),
                             groups=[r["id"] for r in records], n_folds=5, seed=0)
    for fit, held in nested.folds:  # each value from the outer fold that held its question out
        np.testing.assert_allclose([written[i]["target_confidence"] for i in held], nested.probabilities[held, 1],
                                   atol=1e-6)
    assert read_verbal_file(out).targets == [w["target_confidence"] for w in written]  # finetune-verbal reads it
    result = runner.invoke(app, ["qa-report", "-i", str(source), "-o", str(tmp_path / "r.html"),
                                 "--targets-out", str(out)])
    assert result.exit_code == 2 and "give --hidden too" in " ".join(result.output.split())
