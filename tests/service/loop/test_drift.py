"""Label-free drift check: PSI, KS and the alarm (howsure.service.drift), without a store."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import kolmogorov

from howsure.errors import DataError
from howsure.decisions.policy_certification import reference_quantiles
from howsure.stats.drift import check_drift, ks_test, population_stability_index, quantile_bins


def confidences(n: int, a: float = 5.0, b: float = 2.0, seed: int = 0) -> np.ndarray:
    """Top-label confidences of a binary classifier: in [0.5, 1], mostly high."""
    return 0.5 + 0.5 * np.random.default_rng(seed).beta(a, b, n)


def test_psi_matches_a_hand_computed_example():
    reference = np.arange(1, 11) / 10  # 0.1 ... 1.0; median 0.55 cuts two bins of 5
    live = [0.2, 0.3, 0.4, 0.9]  # 3 below, 1 above
    # smoothed shares: reference (5.5/11, 5.5/11) = (0.5, 0.5); live (3.5/5, 1.5/5) = (0.7, 0.3)
    expected = 0.2 * math.log(0.7 / 0.5) + (-0.2) * math.log(0.3 / 0.5)
    assert population_stability_index(reference, live, n_bins=2) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.1694595, abs=1e-7)


def test_psi_is_zero_on_the_reference_itself_small_on_a_fresh_draw_large_on_a_shift():
    reference = confidences(2000)
    assert population_stability_index(reference, reference) == pytest.approx(0.0, abs=1e-15)
    assert population_stability_index(reference, confidences(1000, seed=1)) < 0.05
    assert population_stability_index(reference, confidences(1000, a=2, b=2, seed=1)) > 0.2


def test_bins_are_reference_deciles_and_repeated_values_merge_edges():
    reference = np.arange(100) / 100
    edges, ref_counts, live_counts = quantile_bins(reference, [0.0, 0.95, 0.99], n_bins=10)
    assert edges.size == 9 and list(ref_counts) == [10] * 10
    assert list(live_counts) == [1] + [0] * 8 + [2]
    # A step calibrator: three distinct values, so three bins, each holding one step.
    steps = np.repeat([0.6, 0.8, 0.95], [500, 300, 200])
    edges, ref_counts, live_counts = quantile_bins(steps, [0.6, 0.8, 0.8, 0.95, 0.99], n_bins=10)
    assert edges.size == 2 and 0.6 < edges[0] <= 0.8 < edges[1] <= 0.95
    assert list(ref_counts) == [500, 300, 200] and list(live_counts) == [1, 2, 2]


def test_ks_statistic_is_the_largest_ecdf_gap_and_its_p_value_the_kolmogorov_tail():
    reference, live = confidences(2000), confidences(800, a=4, b=2, seed=3)
    statistic, p_value = ks_test(reference, live)
    grid = np.sort(np.concatenate([reference, live]))
    gap = np.abs(
        np.searchsorted(np.sort(reference), grid, side="right") / reference.size
        - np.searchsorted(np.sort(live), grid, side="right") / live.size
    ).max()
    assert statistic == pytest.approx(gap, abs=1e-12)
    effective = reference.size * live.size / (reference.size + live.size)
    assert p_value == pytest.approx(kolmogorov(math.sqrt(effective) * statistic), rel=0.1)
    assert 0 < p_value < 0.01


def test_same_distribution_gives_no_alarm_a_shifted_one_an_alarm_with_its_reasons():
    reference = reference_quantiles(confidences(5000))  # as a policy stores it
    quiet = check_drift(reference, confidences(1000, seed=1), policy_version=3)
    assert not quiet.alarm and quiet.psi < 0.05 and quiet.ks_p_value > 0.01
    assert quiet.message.startswith("no drift") and quiet.suggestion is None
    assert quiet.n_reference == 2000 and quiet.n_live == 1000 and quiet.policy_version == 3

    shifted = check_drift(reference, confidences(1000, a=2, b=2, seed=1), policy_version=3,
                          recalibrate_hint="howsure recalibrate --db r.db")
    assert shifted.alarm and shifted.psi > 0.2 and shifted.ks_p_value < 1e-6
    assert "PSI" in shifted.message and "KS p-value" in shifted.message and "lower now" in shifted.message
    assert "`howsure recalibrate --db r.db`" in shifted.suggestion
    data = shifted.to_dict()
    for key in ("alarm", "psi", "ks_statistic", "ks_p_value", "n_live", "n_reference", "message", "suggestion"):
        assert key in data
    assert data["alarm"] is True and isinstance(data["psi"], float)


def test_a_small_shift_alarms_through_ks_before_psi():
    reference = reference_quantiles(confidences(5000))
    report = check_drift(reference, confidences(1000, a=4, b=2, seed=2))
    assert report.alarm and report.psi < 0.2 and report.ks_p_value < 0.01
    assert "PSI" not in report.message.split("(")[1] and "KS p-value" in report.message


def test_too_few_live_items_or_no_reference_give_no_alarm_and_say_why():
    reference = confidences(500)
    few = check_drift(reference, confidences(99, a=1, b=5), min_live=100, policy_version=2)
    assert not few.alarm and few.psi is None and few.n_live == 99
    assert few.message == "only 99 live item(s) of policy version 2; drift is checked from 100 on"
    empty = check_drift(reference, [])
    assert not empty.alarm and empty.n_live == 0
    old = check_drift(None, confidences(500), policy_version=1)
    assert not old.alarm and old.n_reference == 0 and "no reference distribution" in old.message


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: population_stability_index([0.5, float("nan")], [0.5]), r"reference confidence 1 is nan"),
        (lambda: population_stability_index([0.5, 0.6], []), r"live confidences must be a non-empty 1-d"),
        (lambda: population_stability_index([0.5, 0.6], [0.5], n_bins=1), r"n_bins must be an integer >= 2, got 1"),
        (lambda: ks_test([[0.5]], [0.5]), r"reference confidences must be a non-empty 1-d sequence, got shape \(1, 1\)"),
        (lambda: check_drift([0.5], [0.5], ks_alpha=1.5), r"ks_alpha must be a number in \(0, 1\), got 1.5"),
        (lambda: check_drift([0.5], [0.5], psi_alarm=0), r"psi_alarm must be a number > 0, got 0"),
        (lambda: check_drift([0.5], [0.5], min_live=1), r"min_live must be an integer >= 2, got 1"),
    ],
)
def test_bad_inputs_raise_data_errors_naming_the_value(call, match):
    with pytest.raises(DataError, match=match):
        call()
