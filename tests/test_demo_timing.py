"""Where the demo's time goes: its stage clock, and the work it no longer repeats."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from howsure.pipelines.demo import StageClock
from howsure.stats.splits import _stratified_folds, crossfit_folds


def test_stage_clock_times_consecutive_stages_and_the_total(monkeypatch):
    now = iter([100.0, 101.25, 104.0, 104.04])
    monkeypatch.setattr("howsure.pipelines.demo.time.perf_counter", lambda: next(now))
    clock = StageClock()
    for stage in ("load", "scoring", "report"):
        clock.lap(stage)
    assert clock.table() == {"load": 1.2, "scoring": 2.8, "report": 0.0, "total": 4.0}


def test_cross_fitting_folds_are_computed_once_per_labels_groups_and_seed(monkeypatch):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=400)
    texts = [f"text {i % 350}" for i in range(400)]  # some duplicates: grouped folds
    _stratified_folds.cache_clear()  # counted from a cold cache whatever ran before
    splits = []
    split = StratifiedGroupKFold.split
    monkeypatch.setattr(StratifiedGroupKFold, "split", lambda self, *a, **k: (splits.append(1), split(self, *a, **k))[1])

    first, scheme = crossfit_folds(labels, n_folds=5, seed=11, groups=texts)
    # auto's six candidates ask again with equal (not identical) inputs: no new split.
    again, _ = crossfit_folds(labels.copy(), n_folds=5, seed=11, groups=list(texts))
    assert len(splits) == 1
    assert all(np.array_equal(a, b) for pair_a, pair_b in zip(first, again) for a, b in zip(pair_a, pair_b))
    held_out = np.sort(np.concatenate([held for _, held in first]))
    assert np.array_equal(held_out, np.arange(400)) and scheme.grouped
    # What the cache hands out is shared, so it cannot be changed in place.
    with pytest.raises(ValueError, match="read-only"):
        first[0][0][0] = -1

    other_seed, _ = crossfit_folds(labels, n_folds=5, seed=12, groups=texts)
    other_labels, _ = crossfit_folds(1 - labels, n_folds=5, seed=11, groups=texts)
    assert len(splits) == 3
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other_seed))
    assert len(other_labels) == 5


def straightforward_venn_abers_table(p, positive):
    """Each case's groups built anew, as the docstring of venn_abers_table describes them."""
    from scipy.optimize import isotonic_regression

    distinct, inverse = np.unique(p, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    hits = np.bincount(inverse, weights=positive.astype(np.float64))
    tables = {0.0: [], 1.0: []}
    for case in range(2 * distinct.size + 1):
        position = case // 2
        for outcome, table in tables.items():
            if case % 2:
                case_counts, case_hits = counts.copy(), hits.copy()
                case_counts[position] += 1.0
                case_hits[position] += outcome
            else:
                case_counts = np.insert(counts, position, 1.0)
                case_hits = np.insert(hits, position, outcome)
            fit = isotonic_regression(case_hits / case_counts, weights=case_counts, increasing=True)
            table.append(fit.x[position])
    return distinct, np.array(tables[0.0]), np.array(tables[1.0])


@pytest.mark.parametrize("n, distinct", [(1, 1), (2, 2), (60, 60), (300, 40)])
def test_venn_abers_table_built_in_place_equals_the_straightforward_one_exactly(n, distinct):
    from howsure.calibration.venn_abers import venn_abers_table

    rng = np.random.default_rng(n)
    scores = rng.choice(rng.random(distinct), size=n)  # ties when distinct < n
    positive = rng.random(n) < scores
    table = venn_abers_table(scores, positive)
    x, p0, p1 = straightforward_venn_abers_table(scores, positive)
    assert np.array_equal(table["x"], x)
    assert np.array_equal(table["p0"], p0) and np.array_equal(table["p1"], p1)  # bit for bit
