"""Metrics: cross-checked against scikit-learn, torchmetrics and plain loops written here."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from howsure.errors import DataError
from howsure.stats import metrics

PUBLIC_RUN = Path(__file__).resolve().parents[2] / "shared/data/sentiment/seed_cwc/results/llama31_8b_base_results.json"


def random_predictions(n: int, seed: int, miscalibration: float = 1.0):
    """Confidences in (0.5, 1) and correctness drawn with P(right) = confidence ** miscalibration."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, n)
    correct = (rng.uniform(size=n) < confidence**miscalibration).astype(float)
    return correct, confidence


# --------------------------------------------------------------------------- independent loops


def loop_ece(correct, confidence, n_bins, strategy="uniform", norm="l1"):
    """Textbook binned calibration error, one bin at a time."""
    if strategy == "uniform":
        edges = np.linspace(0, 1, n_bins + 1)
        groups = []
        for b in range(n_bins):
            lo, hi = edges[b], edges[b + 1]
            inside = (confidence > lo) & (confidence <= hi) if b else (confidence >= lo) & (confidence <= hi)
            groups.append(np.flatnonzero(inside))
    else:
        groups = np.array_split(np.argsort(confidence, kind="stable"), n_bins)
    total, worst = 0.0, 0.0
    for members in groups:
        if len(members) == 0:
            continue
        gap = abs(correct[members].mean() - confidence[members].mean())
        total += len(members) / len(correct) * (gap if norm == "l1" else gap**2)
        worst = max(worst, gap)
    return {"l1": total, "l2": np.sqrt(total), "max": worst}[norm]


def loop_rms(correct, confidence, beta):
    """Hendrycks et al.'s calib_err(p='2'), with its last bin counted."""
    order = np.argsort(confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    bins = [[i * beta, (i + 1) * beta] for i in range(max(len(confidence) // beta, 1))]
    bins[-1][1] = len(confidence)
    error = 0.0
    for lo, hi in bins:
        error += (hi - lo) / len(confidence) * (confidence[lo:hi].mean() - correct[lo:hi].mean()) ** 2
    return np.sqrt(error)


def loop_aurc(correct, confidence):
    """Mean error rate of the k most confident items, k = 1..n, ties broken by list order."""
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    risks = [np.mean([1 - correct[i] for i in order[:k]]) for k in range(1, len(order) + 1)]
    return float(np.mean(risks))


# --------------------------------------------------------------------------- public run


@pytest.mark.skipif(not PUBLIC_RUN.exists(), reason="../shared data not present")
def test_reproduces_public_llama_run_raw_numbers():
    records = json.loads(PUBLIC_RUN.read_text())["results"]
    confidence = np.array([r["confidence"] for r in records])
    correct = np.array([r["correct"] for r in records])
    assert len(records) == 1000
    assert metrics.accuracy(correct) == pytest.approx(0.722, abs=0.002)
    assert metrics.expected_calibration_error(correct, confidence, n_bins=20) == pytest.approx(0.173, abs=0.002)
    assert metrics.auroc(correct, confidence) == pytest.approx(0.719, abs=0.002)
    # The write-up also published an MCE of 0.3046 with the same 20 bins.
    assert metrics.maximum_calibration_error(correct, confidence, n_bins=20) == pytest.approx(0.3046, abs=0.001)


# --------------------------------------------------------------------------- cross-checks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_label_scores_match_scikit_learn(seed):
    correct, confidence = random_predictions(500, seed, miscalibration=2.0)
    assert metrics.brier_score(correct, confidence) == pytest.approx(brier_score_loss(correct, confidence))
    assert metrics.negative_log_likelihood(correct, confidence) == pytest.approx(
        log_loss(correct, confidence, labels=[0, 1])
    )
    assert metrics.auroc(correct, confidence) == pytest.approx(roc_auc_score(correct, confidence))


def test_auroc_matches_scikit_learn_with_heavy_ties():
    rng = np.random.default_rng(5)
    confidence = rng.choice([0.6, 0.7, 0.8, 0.9], size=300)
    correct = (rng.uniform(size=300) < confidence).astype(float)
    assert metrics.auroc(correct, confidence) == pytest.approx(roc_auc_score(correct, confidence))


@pytest.mark.parametrize("n_labels", [2, 4])
def test_multiclass_scores_match_scikit_learn(n_labels):
    rng = np.random.default_rng(n_labels)
    probabilities = rng.dirichlet(np.ones(n_labels), size=400)
    labels = rng.integers(0, n_labels, size=400)
    assert metrics.multiclass_brier_score(probabilities, labels) == pytest.approx(
        brier_score_loss(labels, probabilities, labels=list(range(n_labels)), scale_by_half=False)
    )
    assert metrics.multiclass_log_loss(probabilities, labels) == pytest.approx(
        log_loss(labels, probabilities, labels=list(range(n_labels)))
    )


@pytest.mark.parametrize("strategy", metrics.STRATEGIES)
@pytest.mark.parametrize("n_bins", [1, 7, 15, 20])
def test_calibration_errors_match_plain_loops(strategy, n_bins):
    correct, confidence = random_predictions(733, n_bins, miscalibration=3.0)
    assert metrics.expected_calibration_error(correct, confidence, n_bins, strategy) == pytest.approx(
        loop_ece(correct, confidence, n_bins, strategy)
    )
    assert metrics.maximum_calibration_error(correct, confidence, n_bins, strategy) == pytest.approx(
        loop_ece(correct, confidence, n_bins, strategy, norm="max")
    )


def test_uniform_bins_are_closed_on_the_right_like_the_loop():
    # Confidences exactly on bin edges go to the bin below.
    confidence = np.array([0.0, 0.25, 0.5, 0.5, 0.75, 1.0])
    correct = np.array([0, 1, 0, 1, 1, 1])
    assert metrics.expected_calibration_error(correct, confidence, 4) == pytest.approx(
        loop_ece(correct, confidence, 4)
    )
    curve = metrics.reliability_curve(correct, confidence, 4)
    assert curve.counts.tolist() == [2, 2, 1, 1]


@pytest.mark.parametrize("n,beta", [(1000, 100), (1234, 100), (57, 100), (300, 7)])
def test_rms_calibration_error_matches_reference_loop(n, beta):
    correct, confidence = random_predictions(n, n + beta, miscalibration=2.0)
    assert metrics.rms_calibration_error(correct, confidence, beta) == pytest.approx(
        loop_rms(correct, confidence, beta)
    )


@pytest.mark.parametrize("n_bins", [10, 20])
def test_calibration_errors_match_torchmetrics(n_bins):
    functional = pytest.importorskip("torchmetrics.functional.classification")
    torch = pytest.importorskip("torch")
    correct, confidence = random_predictions(800, n_bins, miscalibration=2.5)
    preds, target = torch.tensor(confidence), torch.tensor(correct.astype(int))
    for norm, ours in [
        ("l1", metrics.expected_calibration_error(correct, confidence, n_bins)),
        ("max", metrics.maximum_calibration_error(correct, confidence, n_bins)),
    ]:
        theirs = functional.binary_calibration_error(preds, target, n_bins=n_bins, norm=norm)
        assert ours == pytest.approx(float(theirs), abs=1e-6)


# --------------------------------------------------------------------------- properties


def test_ece_small_when_calibrated_and_large_when_not():
    correct, confidence = random_predictions(20_000, 11)
    assert metrics.expected_calibration_error(correct, confidence) < 0.02
    over_confident, confidence = random_predictions(20_000, 11, miscalibration=4.0)
    assert metrics.expected_calibration_error(over_confident, confidence) > 0.15


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=60),
    n_bins=st.integers(1, 12),
    strategy=st.sampled_from(metrics.STRATEGIES),
)
def test_reliability_curve_agrees_with_ece(data, n_bins, strategy):
    confidence = np.array([c for c, _ in data])
    correct = np.array([k for _, k in data], float)
    curve = metrics.reliability_curve(correct, confidence, n_bins, strategy)
    assert curve.counts.sum() == len(data)
    assert len(curve.counts) <= n_bins
    assert np.all((curve.mean_confidence >= curve.bin_lower - 1e-12) & (curve.mean_confidence <= curve.bin_upper + 1e-12))
    assert curve.ece == pytest.approx(metrics.expected_calibration_error(correct, confidence, n_bins, strategy))
    assert metrics.ReliabilityCurve.from_dict(json.loads(json.dumps(curve.to_dict()))).ece == pytest.approx(curve.ece)


def test_equal_mass_bins_hold_equal_counts():
    correct, confidence = random_predictions(1003, 3)
    curve = metrics.reliability_curve(correct, confidence, 10, "quantile")
    assert curve.counts.max() - curve.counts.min() <= 1
    assert np.all(np.diff(curve.mean_confidence) > 0)


def test_aurc_matches_loop_without_ties():
    correct, confidence = random_predictions(200, 4, miscalibration=2.0)
    assert metrics.aurc(correct, confidence) == pytest.approx(loop_aurc(correct, confidence))


def test_aurc_with_ties_is_the_average_over_tie_orders():
    confidence = np.array([0.9, 0.9, 0.9, 0.7, 0.7, 0.6])
    correct = np.array([1, 0, 1, 0, 1, 0])
    tied = [[0, 1, 2], [3, 4], [5]]
    values = []
    for a, b in itertools.product(itertools.permutations(tied[0]), itertools.permutations(tied[1])):
        order = list(a) + list(b) + tied[2]
        # The loop sorts stably, so feeding items in this order breaks ties this way.
        values.append(loop_aurc(correct[order], confidence[order]))
    assert metrics.aurc(correct, confidence) == pytest.approx(np.mean(values))
    # And it does not depend on how the input happens to be ordered.
    shuffled = np.random.default_rng(0).permutation(6)
    assert metrics.aurc(correct[shuffled], confidence[shuffled]) == pytest.approx(np.mean(values))


def test_aurc_bounds_perfect_and_reversed_rankings():
    correct = np.array([1] * 8 + [0] * 2)
    perfect = np.linspace(1.0, 0.55, 10)
    error = 0.2
    best = metrics.aurc(correct, perfect)
    worst = metrics.aurc(correct, perfect[::-1])
    assert best < error**2 / 2 + 0.05 < error < worst


def test_top_label_reduces_distribution():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.4, 0.4, 0.2]])
    correct, confidence, prediction = metrics.top_label(probabilities, [0, 1, 1])
    assert prediction.tolist() == [0, 2, 0]
    assert correct.tolist() == [1.0, 0.0, 0.0]
    assert confidence.tolist() == [0.7, 0.6, 0.4]


# --------------------------------------------------------------------------- bootstrap


def test_summarize_intervals_cover_point_and_are_seeded():
    correct, confidence = random_predictions(400, 8, miscalibration=2.0)
    first = metrics.summarize(correct, confidence, n_boot=300, seed=3)
    again = metrics.summarize(correct, confidence, n_boot=300, seed=3)
    other = metrics.summarize(correct, confidence, n_boot=300, seed=4)
    assert first == again
    assert first["ece"]["low"] != other["ece"]["low"]
    assert set(first) == {name for name in metrics.METRICS if "multiclass" not in name}
    for name, value in first.items():
        assert value["low"] <= value["high"], name
        assert value["low"] - 0.03 <= value["value"] <= value["high"] + 0.03, name
        if name in metrics.RECENTRED:
            assert value["low"] <= value["value"] <= value["high"], name
    assert first["accuracy"]["value"] == pytest.approx(correct.mean())
    assert first["ece"]["value"] == pytest.approx(metrics.expected_calibration_error(correct, confidence))


def test_intervals_narrow_with_more_items():
    small = metrics.summarize(*random_predictions(100, 1), n_boot=300)
    large = metrics.summarize(*random_predictions(3000, 1), n_boot=300)
    for name in ("accuracy", "brier", "auroc", "ece"):
        assert large[name]["high"] - large[name]["low"] < small[name]["high"] - small[name]["low"], name


def test_bootstrap_chunking_does_not_change_the_resamples(monkeypatch):
    correct, confidence = random_predictions(300, 2)
    whole = metrics.summarize(correct, confidence, n_boot=200, seed=1)
    monkeypatch.setattr(metrics, "_MAX_CELLS", 300 * 7)
    chunked = metrics.summarize(correct, confidence, n_boot=200, seed=1)
    assert chunked == whole


def test_bootstrap_interval_covers_true_accuracy_most_of_the_time():
    true_accuracy, hits = 0.8, 0
    for seed in range(60):
        correct = (np.random.default_rng(seed).uniform(size=200) < true_accuracy).astype(float)
        interval = metrics.summarize(correct, np.full(200, 0.8), n_boot=400, seed=seed)["accuracy"]
        hits += interval["low"] <= true_accuracy <= interval["high"]
    assert hits >= 52  # nominal 95 %: 57 of 60


def test_summarize_adds_full_distribution_view():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([2, 2, 2], size=200)
    labels = rng.integers(0, 3, size=200)
    correct, confidence, _ = metrics.top_label(probabilities, labels)
    summary = metrics.summarize(correct, confidence, probabilities=probabilities, labels=labels, n_boot=100)
    assert summary["nll_multiclass"]["value"] == pytest.approx(log_loss(labels, probabilities))
    assert summary["brier_multiclass"]["value"] == pytest.approx(
        metrics.multiclass_brier_score(probabilities, labels)
    )


def test_auroc_undefined_with_one_outcome():
    summary = metrics.summarize(np.ones(30), np.linspace(0.5, 1, 30), n_boot=50)
    assert np.isnan(summary["auroc"]["value"]) and np.isnan(summary["auroc"]["low"])
    assert summary["accuracy"]["value"] == 1.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "correct,confidence,match",
    [
        ([1, 0], [0.5, float("nan")], r"confidence\[1\] is NaN"),
        ([1, 0], [0.5, 1.2], r"confidence\[1\] = 1.2 is outside \[0, 1\]"),
        ([1, 0], [-0.1, 0.5], r"confidence\[0\] = -0.1 is outside"),
        ([1, 0, 1], [0.5, 0.6], r"correct has 3 items but confidence has 2"),
        ([1, 2], [0.5, 0.6], r"correct\[1\] = 2.0; expected 0/1"),
        ([1, float("nan")], [0.5, 0.6], r"correct\[1\] is NaN"),
        ([], [], r"is empty"),
        ([[1]], [[0.5]], r"expected a 1-D array"),
        (["yes"], [0.5], r"correct must be numeric"),
    ],
)
def test_bad_top_label_input_is_named(correct, confidence, match):
    with pytest.raises(DataError, match=match):
        metrics.expected_calibration_error(correct, confidence)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_bins": 0}, r"n_bins = 0; expected a positive integer"),
        ({"n_bins": 2.5}, r"n_bins = 2.5"),
        ({"strategy": "kmeans"}, r"strategy 'kmeans' is unknown; expected one of \('uniform', 'quantile'\)"),
    ],
)
def test_bad_binning_is_named(kwargs, match):
    with pytest.raises(DataError, match=match):
        metrics.reliability_curve([1, 0], [0.6, 0.7], **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beta": 0}, r"beta = 0"),
        ({"level": 1.0}, r"level = 1.0"),
        ({"n_boot": -1}, r"n_boot = -1"),
        ({"labels": [0, 1]}, r"probabilities and labels go together"),
        ({"probabilities": [[0.5, 0.5]], "labels": [0]}, r"probabilities have 1 rows but confidence has 2"),
    ],
)
def test_bad_summary_options_are_named(kwargs, match):
    with pytest.raises(DataError, match=match):
        metrics.summarize([1, 0], [0.6, 0.7], **kwargs)


@pytest.mark.parametrize(
    "probabilities,labels,match",
    [
        ([[0.5, 0.4]], [0], r"row 0 sums to 0.9; expected each row to sum to 1"),
        ([[0.5, 0.5]], [2], r"labels\[0\] = 2.0; expected a label index in 0..1"),
        ([[0.5, 0.5]], [0.5], r"labels\[0\] = 0.5"),
        ([[1.5, -0.5]], [0], r"probabilities\[0, 0\] = 1.5 is outside \[0, 1\]"),
        ([[float("nan"), 1.0]], [0], r"probabilities\[0, 0\] is NaN"),
        ([0.5, 0.5], [0], r"shape \(2,\); expected \(n_items, n_labels\)"),
        ([[0.5, 0.5]], [0, 1], r"labels has 2 items but probabilities has 1 rows"),
    ],
)
def test_bad_distribution_input_is_named(probabilities, labels, match):
    with pytest.raises(DataError, match=match):
        metrics.multiclass_log_loss(probabilities, labels)


def test_the_ece_interval_contains_its_estimate_where_the_percentile_bootstrap_misses_it():
    # 600 well-calibrated items: the plug-in ECE (about 0.02) is biased upward, its resamples
    # more so, and the plain percentile interval lies entirely above the estimate.
    rng = np.random.default_rng(10)
    confidence = rng.uniform(0.5, 1, 600)
    correct = (rng.uniform(size=600) < confidence).astype(float)
    result = metrics.summarize(correct, confidence, n_boot=300, seed=0)
    replicates = np.concatenate([metrics._ece_rows(correct[i], confidence[i], 15, "uniform")
                                 for i in metrics.bootstrap_indices(600, 300, 0)])
    percentile_low = np.percentile(replicates, 2.5)
    ece = result["ece"]
    assert ece["value"] < percentile_low  # the case of the test
    assert ece["low"] <= ece["value"] <= ece["high"]
    assert ece["bias"] == pytest.approx(replicates.mean() - ece["value"])
    assert ece["high"] - ece["low"] == pytest.approx(np.subtract(*np.percentile(replicates, [97.5, 2.5])), abs=0.002)


def test_every_calibration_error_interval_contains_its_estimate():
    for seed in range(6):
        correct, confidence = random_predictions(300, seed, miscalibration=1.0 + seed / 3)
        result = metrics.summarize(correct, confidence, n_boot=200, seed=seed)
        for name in metrics.RECENTRED:
            entry = result[name]
            assert 0.0 <= entry["low"] <= entry["value"] <= entry["high"], (seed, name)
            assert entry["bias"] > 0, (seed, name)  # binned errors are biased upward


def test_a_recentred_interval_stays_inside_zero_and_one():
    # Two items wrong at confidence 1 make the MCE 1; resamples that miss both sit below it,
    # so the bias is negative and the shifted percentile interval would reach past 1.
    rng = np.random.default_rng(0)
    confidence = np.r_[np.ones(2), rng.uniform(0.5, 0.9, 38)]
    correct = np.r_[np.zeros(2), (rng.uniform(size=38) < confidence[2:]).astype(float)]
    result = metrics.summarize(correct, confidence, n_boot=300, seed=0)
    assert result["mce"]["value"] == 1.0 and result["mce"]["bias"] < 0  # the case of the test
    for name in metrics.RECENTRED:
        entry = result[name]
        assert 0.0 <= entry["low"] <= entry["value"] <= entry["high"] <= 1.0, (name, entry)
