"""howsure.stats.intervals: one Clopper-Pearson interval for the plots and the service, and the
bootstrap percentile interval of the metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

from howsure.errors import DataError
from howsure.stats.intervals import clopper_pearson, clopper_pearson_one, percentile_interval


def reference_by_ppf(k: float, n: float, level: float) -> tuple[float, float]:
    """The service's former formula: both ends from ``beta.ppf``."""
    alpha = 1 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def reference_by_isf(k: float, n: float, level: float) -> tuple[float, float]:
    """The threshold plot's former formula: the upper end from ``beta.isf``."""
    tail = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.isf(tail, k + 1, n - k))
    return low, high


COUNTS = [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (57, 60), (4 / 14 * 33.7, 33.7), (999, 1000), (1, 5000)]


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_clopper_pearson_gives_the_numbers_of_both_former_copies(level):
    successes = np.array([k for k, _ in COUNTS])
    trials = np.array([n for _, n in COUNTS])
    low, high = clopper_pearson(successes, trials, level)
    for i, (k, n) in enumerate(COUNTS):
        for reference in (reference_by_ppf, reference_by_isf):
            ref_low, ref_high = reference(k, n, level)
            assert low[i] == pytest.approx(ref_low, rel=1e-12, abs=1e-15)
            assert high[i] == pytest.approx(ref_high, rel=1e-12, abs=1e-15)
        assert clopper_pearson_one(k, n, level) == (float(low[i]), float(high[i]))


def test_clopper_pearson_closed_forms_and_empty_bins():
    low, high = clopper_pearson([0, 10, 0], [10, 10, 0])
    assert low[0] == 0.0 and high[0] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert high[1] == 1.0 and low[1] == pytest.approx(0.025 ** (1 / 10))
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_clopper_pearson_narrows_with_more_trials_at_the_same_rate():
    low, high = clopper_pearson([8, 80, 800], [10, 100, 1000])
    widths = high - low
    assert widths[0] > widths[1] > widths[2]
    assert np.all((low < 0.8) & (0.8 < high))


def test_clopper_pearson_one_keeps_the_service_message():
    with pytest.raises(DataError, match=r"^need 0 <= successes <= n and n >= 1, got successes=11, n=10$"):
        clopper_pearson_one(11, 10)
    with pytest.raises(DataError, match=r"got successes=0, n=0"):
        clopper_pearson_one(0, 0)


@pytest.mark.parametrize(
    "successes,trials,level,match",
    [
        ([1, 5], [3, 4], 0.95, r"successes = 5.0 and trials = 4.0 at index \(1,\); expected 0 <= successes <= trials"),
        ([-1], [3], 0.95, r"successes = -1.0"),
        ([1], [3], 1.0, r"level = 1.0; expected a coverage strictly between 0 and 1"),
        ([1], [3], "high", r"level = 'high'"),
    ],
)
def test_clopper_pearson_rejects_impossible_counts_and_levels(successes, trials, level, match):
    with pytest.raises(DataError, match=match):
        clopper_pearson(successes, trials, level)


def test_percentile_interval_recentres_by_the_bootstrap_bias():
    replicates = np.array([0.2, 0.3, 0.4, 0.5, np.nan])
    plain = percentile_interval(0.1, replicates, 0.5)
    assert plain == {"value": 0.1, "low": pytest.approx(0.275), "high": pytest.approx(0.425)}
    shifted = percentile_interval(0.1, replicates, 0.5, recentre=True)
    assert shifted["bias"] == pytest.approx(0.25)
    assert (shifted["low"], shifted["high"]) == (pytest.approx(0.025), pytest.approx(0.175))
    empty = percentile_interval(float("nan"), replicates, 0.95, recentre=True)
    assert np.isnan(empty["low"]) and np.isnan(empty["bias"])


def test_the_service_and_the_plots_use_this_one():
    """One Clopper-Pearson: the plots and the service's audited accuracy call this module's."""
    from howsure.report import plots
    from howsure.service import audit

    assert plots.clopper_pearson is clopper_pearson
    assert audit.clopper_pearson is clopper_pearson_one
