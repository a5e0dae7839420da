"""Honest splits: partitions, stratification, seeds, duplicates never straddling, and
cross-fitting that gives every item exactly one out-of-fold prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from howsure.calibration import make_calibrator
from howsure.errors import CalibrationError
from howsure.calibration import crossfit_predict
from howsure.stats.splits import calibration_test_split, crossfit_folds

SEED_CWC_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sentiment" / "seed_cwc"


@pytest.fixture(scope="module")
def seed_cwc_texts():
    """All 10,000 lines of the 8-category set (1,199 duplicate lines) with their polarity."""
    files = sorted(SEED_CWC_DIR.glob("*.txt"))
    if not files:
        pytest.skip(f"shared data not found under {SEED_CWC_DIR}")
    texts, labels = [], []
    for path in files:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        texts += lines
        labels += [int(path.stem.endswith("positive"))] * len(lines)
    assert len(texts) - len(set(texts)) == 1199  # the known flaw these tests guard against
    return texts, np.array(labels)


def groups_straddling(texts, part_a, part_b) -> set[str]:
    return {texts[i] for i in part_a} & {texts[i] for i in part_b}


def test_split_partitions_and_is_stratified():
    y = np.array([0] * 300 + [1] * 100)
    cal_idx, test_idx = calibration_test_split(y, test_size=0.25, seed=0)
    assert np.array_equal(np.sort(np.concatenate([cal_idx, test_idx])), np.arange(400))
    assert test_idx.size == 100
    assert y[test_idx].mean() == pytest.approx(0.25, abs=0.02)


def test_split_is_seeded():
    y = np.arange(200) % 3
    first = calibration_test_split(y, seed=5)
    assert np.array_equal(first.test_idx, calibration_test_split(y, seed=5).test_idx)
    assert not np.array_equal(first.test_idx, calibration_test_split(y, seed=6).test_idx)


def test_split_never_separates_duplicate_texts(seed_cwc_texts):
    texts, labels = seed_cwc_texts
    split = calibration_test_split(labels, seed=0, groups=texts)
    assert groups_straddling(texts, split.cal_idx, split.test_idx) == set()
    assert split.scheme.grouped and split.scheme.n_groups == len(set(texts))
    assert labels[split.test_idx].mean() == pytest.approx(labels.mean(), abs=0.02)
    # Without groups the same data would leak duplicates across the split: the check has teeth.
    ungrouped = calibration_test_split(labels, seed=0)
    assert groups_straddling(texts, ungrouped.cal_idx, ungrouped.test_idx)


def test_scheme_says_what_was_done(seed_cwc_texts):
    texts, labels = seed_cwc_texts
    scheme = calibration_test_split(labels, test_size=0.3, seed=4, groups=texts).scheme
    assert scheme.describe() == (
        "calibration/test split holding out 30% for testing; stratified by label, seed 4; "
        "10000 items in 8801 groups, duplicates kept on one side"
    )
    assert scheme.to_dict()["kind"] == "calibration/test split"


def test_crossfit_folds_partition_and_keep_duplicates_together(seed_cwc_texts):
    texts, labels = seed_cwc_texts
    folds, scheme = crossfit_folds(labels, n_folds=5, seed=0, groups=texts)
    held_out = np.concatenate([held for _, held in folds])
    assert np.array_equal(np.sort(held_out), np.arange(labels.size))  # each item held out once
    for fit_idx, held_idx in folds:
        assert np.intersect1d(fit_idx, held_idx).size == 0
        assert groups_straddling(texts, fit_idx, held_idx) == set()
        assert labels[held_idx].mean() == pytest.approx(labels.mean(), abs=0.03)
    assert scheme.describe().startswith("5-fold cross-fitting")


@pytest.mark.parametrize("mode", ["distribution", "confidence"])
def test_crossfit_gives_each_item_one_out_of_fold_prediction(mode):
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.integers(0, 2, n)
    p = np.clip(rng.beta(2, 2, n) * 0.6 + labels * 0.3, 0, 1)
    scores = np.column_stack([1 - p, p]) if mode == "distribution" else p
    texts = [f"text {i % 250}" for i in range(n)]  # 50 duplicated texts

    def factory():
        return make_calibrator("isotonic", mode=mode)

    predictions, scheme = crossfit_predict(factory, scores, labels, n_folds=4, seed=2, groups=texts, return_scheme=True)
    assert predictions.shape == factory().fit(scores, labels).predict_proba(scores).shape
    assert not np.isnan(predictions).any()
    assert scheme.kind == "cross-fitting" and scheme.n_folds == 4 and scheme.n_groups == 250

    # Each prediction comes from the calibrator fitted on the other folds, and only from it.
    folds, _ = crossfit_folds(labels, n_folds=4, seed=2, groups=texts)
    for fit_idx, held_idx in folds:
        expected = factory().fit(scores[fit_idx], labels[fit_idx]).predict_proba(scores[held_idx])
        assert np.array_equal(predictions[held_idx], expected)


def test_crossfit_is_not_in_sample_fitting():
    # In-sample isotonic reproduces the labels' frequencies perfectly; out-of-fold it cannot.
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    confidence = rng.uniform(size=400)
    in_sample = make_calibrator("isotonic", mode="confidence").fit(confidence, labels).predict_proba(confidence)
    out_of_fold = crossfit_predict(lambda: make_calibrator("isotonic", mode="confidence"), confidence, labels)
    assert np.abs(in_sample - labels).mean() < np.abs(out_of_fold - labels).mean()


def test_crossfit_accepts_an_unfitted_calibrator_as_template():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 150)
    probs = rng.dirichlet(np.ones(3), 150)
    template = make_calibrator("temperature")
    predictions = crossfit_predict(template, probs, labels, n_folds=3)
    assert predictions.shape == (150, 3)
    assert not template.is_fitted
    assert np.array_equal(predictions, crossfit_predict(lambda: make_calibrator("temperature"), probs, labels, n_folds=3))


Y8 = np.array([0, 1] * 4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: calibration_test_split([1, 1, 1, 1]), r"one class only \(1 for all 4 items\)"),
        (lambda: calibration_test_split([0, 0, 0, 1]), r"label 1 has only 1 items"),
        (lambda: calibration_test_split(Y8, test_size=1.5), r"test_size must be a fraction in \(0, 1\), got 1\.5"),
        (lambda: calibration_test_split(Y8, groups=["a"] * 3), r"y has 8 items but groups has 3"),
        (lambda: calibration_test_split([0.0, np.nan, 1.0, 1.0]), r"y contains NaN \(first at index 1\)"),
        (lambda: crossfit_folds(Y8, n_folds=1), r"n_folds must be an integer >= 2, got 1"),
        (lambda: crossfit_folds(Y8[:4], n_folds=5), r"4 items are fewer than n_folds=5"),
        (lambda: crossfit_folds(np.array([0] * 9 + [1] * 3), n_folds=4), r"label 1 has only 3 items; 4-fold"),
        (
            lambda: crossfit_folds([0, 0, 0, 0, 0, 0, 1, 1], n_folds=2, groups=list("abcdefgg")),
            r"label 1 has only 1 groups; 2-fold cross-fitting needs at least 2 per label",
        ),
        (lambda: crossfit_predict("isotonic", [0.5] * 8, Y8), r"make_calibrator_fn must be a callable"),
        (
            lambda: crossfit_predict(lambda: make_calibrator("platt", mode="confidence"), [0.5] * 7, Y8),
            r"mismatched lengths: scores has 7 items but y has 8",
        ),
    ],
)
def test_bad_split_inputs_are_named(call, match):
    with pytest.raises(CalibrationError, match=match):
        call()


def test_crossfit_folds_take_labels_of_any_dtype_and_fold_them_alike():
    # The fold cache keys labels by their bytes: object labels (strings, a pandas Series) have
    # none of their own, and must fold exactly as their integer codes do.
    import pandas as pd

    codes = np.array([0, 1, 1, 0, 1] * 6)
    names = np.array(["neg", "pos"], dtype=object)[codes]
    expected, _ = crossfit_folds(codes, n_folds=3, seed=4)
    for labels in (names, pd.Series(names), names.astype(str)):
        folds, _ = crossfit_folds(labels, n_folds=3, seed=4)
        assert all(np.array_equal(a, b) and np.array_equal(c, d) for (a, c), (b, d) in zip(folds, expected))
