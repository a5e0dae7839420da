"""Certified thresholds, cost-optimal thresholds and sample-size planning (howsure.decisions)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from howsure import decisions as D
from howsure.errors import PolicyError


def ranked(n: int, wrong_ranks: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """n items with distinct confidences, rank 1 the most confident; the given ranks are wrong."""
    confidences = np.linspace(0.999, 0.5, n)
    correct = np.array([rank not in wrong_ranks for rank in range(1, n + 1)])
    return confidences, correct


def binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


# ---------------------------------------------------------------------------------- p-values
@pytest.mark.parametrize("errors,n,alpha", [(0, 59, 0.05), (3, 100, 0.05), (10, 80, 0.1), (7, 7, 0.2), (0, 1, 0.5)])
def test_binomial_p_value_is_the_binomial_cdf(errors, n, alpha):
    expected = 1.0 if errors >= n else binomial_cdf(errors, n, alpha)
    assert D.binomial_p_value(errors, n, alpha) == pytest.approx(expected, rel=1e-10)


def test_p_value_is_one_when_nothing_is_selected():
    assert D.binomial_p_value(0, 0, 0.05) == 1.0
    assert D.hoeffding_bentkus_p_value(0, 0, 0.05) == 1.0


@pytest.mark.parametrize("n", [20, 59, 150])
@pytest.mark.parametrize("true_error", [0.05, 0.08, 0.2])
def test_binomial_p_value_rejects_a_true_null_at_most_delta_of_the_time(n, true_error):
    """Super-uniformity, computed exactly: under error rate >= alpha, P(p <= delta) <= delta."""
    alpha, delta = 0.05, 0.05
    errors = np.arange(n + 1)
    rejected = errors[D.binomial_p_value(errors, n, alpha) <= delta]
    probability = sum(math.comb(n, int(k)) * true_error**k * (1 - true_error) ** (n - k) for k in rejected)
    assert probability <= delta + 1e-12


def test_hoeffding_bentkus_is_more_conservative_than_the_exact_binomial():
    errors, n = np.meshgrid(np.arange(0, 40), np.arange(1, 300))
    errors = np.minimum(errors, n)
    assert np.all(D.hoeffding_bentkus_p_value(errors, n, 0.05) >= D.binomial_p_value(errors, n, 0.05) - 1e-12)


@pytest.mark.parametrize("target,delta", [(0.95, 0.05), (0.9, 0.1), (0.99, 0.01), (0.8, 0.2)])
def test_min_items_to_certify_is_the_smallest_error_free_count_that_rejects(target, delta):
    m = D.min_items_to_certify(target, delta)
    assert target**m <= delta < target ** (m - 1)


def test_59_error_free_items_are_needed_at_95_percent_and_delta_005():
    # 0.95 ** 59 = 0.0485 <= 0.05 < 0.95 ** 58 = 0.0510
    assert D.min_items_to_certify(0.95, 0.05) == 59


# ---------------------------------------------------------------------------------- certify
def test_fixed_sequence_stops_at_the_first_failure_where_the_naive_scan_goes_on():
    # Rank 61 is the only error. Testing strict to loose: 59 and 60 error-free items reject
    # (0.95^59 <= 0.05); at 61 items with 1 error P(Bin(61, .05) <= 1) = 0.18 > 0.05: stop.
    # The naive scan also tests looser thresholds and keeps 100 items with 1 error (p = 0.037).
    confidences, correct = ranked(100, {61})
    certificate = D.certify_threshold(correct, confidences, 0.95, 0.05, method="fixed_sequence")
    assert certificate.certified
    assert certificate.n_automated == 60 and certificate.n_errors == 0
    assert certificate.threshold == confidences[59]
    assert certificate.certified_range == (confidences[59], confidences[58])
    assert D.naive_scan_threshold(correct, confidences, 0.95, 0.05) == confidences[99]
    assert D.binomial_p_value(1, 100, 0.05) < 0.05 < D.binomial_p_value(1, 61, 0.05)


def test_nothing_certified_below_the_minimum_count():
    confidences, correct = ranked(58, set())
    certificate = D.certify_threshold(correct, confidences, 0.95, 0.05, method="fixed_sequence")
    assert not certificate.certified
    assert certificate.threshold is None and certificate.n_automated == 0
    assert certificate.labels_needed == 59
    assert "1 more labelled items (59 in all)" in certificate.summary()


def test_an_error_free_set_of_59_is_certified_whole():
    confidences, correct = ranked(59, set())
    certificate = D.certify_threshold(correct, confidences, 0.95, 0.05, method="fixed_sequence")
    assert certificate.n_automated == 59 and certificate.automation_rate == 1.0


def test_when_accuracy_never_reaches_the_target_more_labels_will_not_help():
    rng = np.random.default_rng(0)
    confidences = rng.uniform(0.5, 1, 400)
    correct = rng.uniform(size=400) < 0.6  # 60 % accurate at every confidence
    certificate = D.certify_threshold(correct, confidences, 0.95, 0.05)
    assert not certificate.certified
    assert certificate.labels_needed is None
    assert "more labels alone will not help" in certificate.summary()


def test_ties_are_automated_together():
    confidences = np.repeat([0.99, 0.9, 0.7], [80, 40, 30])
    correct = np.concatenate([np.ones(80, bool), np.r_[np.ones(38, bool), np.zeros(2, bool)], np.zeros(30, bool)])
    certificate = D.certify_threshold(correct, confidences, 0.9, 0.05, method="fixed_sequence")
    assert certificate.threshold == 0.9
    assert certificate.n_automated == 120 and certificate.n_errors == 2


def test_fallback_passes_a_walks_level_on_at_the_next_start_where_multistart_cannot():
    # Two starts (80 and 100 items), each carrying delta / 2 = 0.025. The walk from the first
    # rejects through the second (ranks 80-100 are error-free, p <= 0.0166), so from there on it
    # tests at 0.05: ranks 100-160 all have p <= 0.0446, and ranks 161 on are wrong. Multistart
    # tests each walk at 0.025 alone and stops at the second error (rank 141).
    confidences, correct = ranked(200, {121, 141, 156, *range(161, 201)})
    starts = (confidences[79], confidences[99])
    _, n_auto, n_err = D.selective_counts(correct, confidences)
    p = D.binomial_p_value(n_err, n_auto, 0.05)
    assert p[79:100].max() <= 0.025 < p[99:160].max() <= 0.05 < p[160]
    fallback = D.certify_threshold(correct, confidences, 0.95, 0.05, method="fallback", starts=starts)
    multistart = D.certify_threshold(correct, confidences, 0.95, 0.05, method="multistart", starts=starts)
    assert fallback.n_automated == 160 and fallback.n_errors == 3
    assert fallback.threshold == confidences[159] and fallback.certified_range == (confidences[159], starts[0])
    assert multistart.n_automated == 140


def test_a_failed_walk_restarts_at_the_next_start_with_its_own_share_only():
    # Ranks 1-99 are right, the rest wrong. The first start (10 items, p = 0.95^10 = 0.60)
    # fails, so the walk from the second start tests at delta / 2 = 0.025 alone: from 80 items
    # (0.95^80 = 0.0165) it certifies the 99, from 70 items (0.95^70 = 0.0276) nothing, though a
    # walk from 70 items at the whole delta would.
    confidences, correct = ranked(200, set(range(100, 201)))
    at_80 = D.certify_threshold(correct, confidences, 0.95, 0.05, method="fallback",
                                starts=(confidences[9], confidences[79]))
    assert at_80.n_automated == 99 and at_80.certified_range == (confidences[98], confidences[79])
    at_70 = (confidences[9], confidences[69])
    assert not D.certify_threshold(correct, confidences, 0.95, 0.05, method="fallback", starts=at_70).certified
    assert D.certify_threshold(correct, confidences, 0.95, 0.05, method="fallback", starts=at_70[1:]).certified


def test_with_one_start_fallback_is_the_fixed_sequence_walk_from_it():
    confidences, correct = synthetic(n=600, seed=4)
    for start in (0.99, 0.9, 0.75):
        one = [D.certify_threshold(correct, confidences, 0.9, 0.05, method=m, starts=[start])
               for m in ("fallback", "multistart")]
        assert one[0] == dataclasses.replace(one[1], method="fallback")


def test_calibrated_starts_sit_around_the_target():
    assert D.calibrated_starts(0.9) == pytest.approx((0.975, 0.95, 0.925, 0.9, 0.875))
    assert D.calibrated_starts(0.5) == pytest.approx((0.875, 0.75, 0.625, 0.5, 0.375))


def synthetic(n: int = 800, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Confidences whose accuracy rises with them, like a calibrated model."""
    rng = np.random.default_rng(seed)
    confidences = rng.beta(5, 1.2, n).clip(0.5, 1)
    return confidences, rng.uniform(size=n) < confidences


def test_the_certificate_is_invariant_to_order_and_to_monotone_transforms():
    confidences, correct = synthetic()
    base = D.certify_threshold(correct, confidences, 0.9, 0.05)
    permutation = np.random.default_rng(3).permutation(confidences.size)
    shuffled = D.certify_threshold(correct[permutation], confidences[permutation], 0.9, 0.05)
    squashed = D.certify_threshold(correct, confidences**3, 0.9, 0.05)
    assert base.certified
    assert shuffled.threshold == base.threshold
    assert squashed.n_automated == base.n_automated
    assert squashed.threshold == pytest.approx(base.threshold**3)


def test_a_looser_risk_level_or_lower_target_never_automates_less():
    confidences, correct = synthetic()
    automated = [D.certify_threshold(correct, confidences, 0.9, d).n_automated for d in (0.01, 0.05, 0.2)]
    assert automated == sorted(automated) and automated[0] > 0
    automated = [D.certify_threshold(correct, confidences, t, 0.05).n_automated for t in (0.97, 0.93, 0.85)]
    assert automated == sorted(automated)


def test_multistart_and_hoeffding_bentkus_automate_no_more_than_the_default():
    confidences, correct = synthetic()
    default = D.certify_threshold(correct, confidences, 0.9, 0.05)
    for kwargs in ({"method": "multistart"}, {"p_value": "hoeffding_bentkus"}):
        other = D.certify_threshold(correct, confidences, 0.9, 0.05, **kwargs)
        assert other.certified and other.n_automated <= default.n_automated


def test_a_multistart_walk_only_certifies_from_a_start_that_selects_enough_items():
    confidences, correct = ranked(100, {61})
    # 50 items above the start: 0.95^50 = 0.077 > 0.05, the only walk fails at once.
    at_50 = D.certify_threshold(correct, confidences, 0.95, 0.05, method="multistart", starts=[confidences[49]])
    assert not at_50.certified
    at_59 = D.certify_threshold(correct, confidences, 0.95, 0.05, method="multistart", starts=[confidences[58]])
    assert at_59.n_automated == 60 and at_59.starts == (confidences[58],)
    # Two starts halve the level: 59 error-free items no longer suffice (0.95^59 > 0.025).
    two = D.certify_threshold(correct, confidences, 0.95, 0.05, method="multistart",
                              starts=[confidences[58], confidences[10]])
    assert not two.certified


def test_the_empirical_rule_takes_the_loosest_threshold_with_enough_observed_accuracy():
    # Errors at ranks 5 and 50: the top 100 are 98 % accurate; 99 % holds only for the top 4
    # (with one error, 99 % needs 100 items, which contain the second error).
    confidences, correct = ranked(100, {5, 50})
    assert D.empirical_threshold(correct, confidences, 0.98) == confidences[99]
    assert D.empirical_threshold(correct, confidences, 0.99) == confidences[3]


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"target_accuracy": 1.5}, r"target accuracy must be in \(0, 1\), got 1.5; accuracy is a fraction"),
        ({"target_accuracy": 95}, r"got 95; accuracy is a fraction, write 0.95"),
        ({"target_accuracy": 1.0}, r"got 1.0; a target of exactly 1"),
        ({"target_accuracy": 0}, r"target accuracy must be in \(0, 1\), got 0"),
        ({"target_accuracy": "high"}, r"target accuracy must be a number in \(0, 1\), got 'high'"),
        ({"target_accuracy": float("nan")}, r"got nan"),
        ({"delta": 0}, r"delta .* must be in \(0, 1\), got 0"),
        ({"delta": 1}, r"delta .* must be in \(0, 1\), got 1"),
        ({"delta": -0.1}, r"got -0.1"),
        ({"delta": 5}, r"got 5"),
        ({"method": "bonferroni"}, r"unknown certification method 'bonferroni'; expected one of \['fallback', 'fixed_sequence', 'multistart'\]"),
        ({"p_value": "wilson"}, r"unknown p-value 'wilson'"),
        ({"method": "multistart", "starts": [1.5]}, r"start thresholds in \[0, 1\], got \[1.5\]"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    confidences, correct = ranked(100, set())
    with pytest.raises(PolicyError, match=match):
        D.certify_threshold(correct, confidences, **{"target_accuracy": 0.95, "delta": 0.05, **kwargs})


@pytest.mark.parametrize(
    "confidences,correct,match",
    [
        ([], [], r"the calibration set is empty"),
        ([0.9, 1.2], [1, 1], r"confidences must be in \[0, 1\]; item 1 has 1.2"),
        ([0.9, float("nan")], [1, 1], r"item 1 has nan"),
        ([[0.9, 0.1]], [1], r"confidences must have shape \(n,\), got shape \(1, 2\)"),
        ([0.9, 0.8], [1], r"confidences has 2 items but correct has shape \(1,\)"),
        ([0.9, 0.8], [1, 2], r"correct must hold 0/1 or true/false; item 1 has 2"),
        ([0.9, 0.8], ["yes", "no"], r"correct must hold 0/1 or true/false, got values like \['yes', 'no'\]"),
        (["high", 0.8], [1, 1], r"confidences must be numbers in \[0, 1\]"),
    ],
)
def test_bad_calibration_sets_are_named(confidences, correct, match):
    with pytest.raises(PolicyError, match=match):
        D.certify_threshold(correct, confidences, 0.95, 0.05)


# ---------------------------------------------------------------------------------- per class
def two_classes(n: int = 1000, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Binary probabilities where 'positive' predictions are reliable (the more so the more
    confident) and 'negative' ones are right only 70 % of the time whatever their confidence."""
    rng = np.random.default_rng(seed)
    p_positive = rng.uniform(0, 1, n)
    predicted_positive = p_positive >= 0.5
    right = np.where(predicted_positive, rng.uniform(size=n) < p_positive**0.2, rng.uniform(size=n) < 0.7)
    truth = np.where(right, predicted_positive, ~predicted_positive).astype(np.int64)
    return np.column_stack([1 - p_positive, p_positive]), truth


def test_per_class_certifies_the_reliable_label_only_and_splits_delta():
    probabilities, truth = two_classes(n=3000, seed=4)
    result = D.certify_per_class(truth, probabilities, 0.95, 0.05, labels=["negative", "positive"])
    assert result.thresholds["negative"] is None
    assert result.thresholds["positive"] is not None
    assert result.certificates["positive"].delta == pytest.approx(0.025)
    separate = D.certify_per_class(truth, probabilities, 0.95, 0.05, labels=["negative", "positive"], joint=False)
    assert separate.certificates["positive"].delta == 0.05
    assert separate.certificates["positive"].n_automated >= result.certificates["positive"].n_automated


def test_a_label_never_predicted_gets_no_certificate():
    probabilities = np.tile([0.1, 0.2, 0.7], (100, 1))
    result = D.certify_per_class(np.full(100, 2), probabilities, 0.9, 0.05, labels=["a", "b", "c"])
    assert result.certificates["a"] is None and result.thresholds["b"] is None
    assert result.certificates["c"].n_automated == 100


def test_two_sided_policy_accepts_above_and_rejects_below():
    rng = np.random.default_rng(4)
    p_positive = rng.uniform(0, 1, 5000)
    is_positive = rng.uniform(size=5000) < p_positive  # calibrated
    result = D.certify_two_sided(is_positive, p_positive, 0.9, 0.05)
    assert 0.5 <= result.accept_above < 1 and 0 < result.reject_below <= 0.5
    accepted, rejected = p_positive >= result.accept_above, p_positive <= result.reject_below
    assert is_positive[accepted].mean() >= 0.9
    assert (~is_positive[rejected]).mean() >= 0.9
    # Calibrated: 90 % precision needs roughly p >= 0.8 (mean of U(0.8, 1) is 0.9), and the
    # certificate must be stricter than that; symmetrically below 0.2.
    assert 0.8 <= result.accept_above < 0.95 and 0.05 < result.reject_below <= 0.2


@pytest.mark.parametrize(
    "probabilities,truth,match",
    [
        (np.ones((3, 1)), [0, 0, 0], r"shape \(n, K\) with K >= 2"),
        (np.full((2, 2), 0.5), [0, 2], r"true label 2 of item 1 is not a class index in \[0, 2\)"),
        (np.full((2, 2), 0.5), ["a", "b"], r"true labels must be class indices"),
        (np.array([[0.5, 1.5], [0.5, 0.5]]), [0, 1], r"item 0, label 1 has 1.5"),
    ],
)
def test_bad_per_class_input(probabilities, truth, match):
    with pytest.raises(PolicyError, match=match):
        D.certify_per_class(np.asarray(truth), probabilities, 0.9, 0.05)


# ---------------------------------------------------------------------------------- planning
def test_labels_needed_really_certifies_when_the_profile_holds():
    confidences, correct = synthetic(n=300, seed=5)
    needed = D.labels_needed(correct, confidences, 0.9, 0.05, automation_rate=0.3)
    assert needed is not None and needed > 0
    # A calibration set showing the pilot's profile exactly: the pilot repeated.
    copies = math.ceil(needed / confidences.size)
    certificate = D.certify_threshold(np.tile(correct, copies), np.tile(confidences, copies), 0.9, 0.05)
    assert certificate.automation_rate >= 0.3 - 1e-9


def test_more_automation_needs_more_labels():
    confidences, correct = synthetic(n=600, seed=6)
    needs = [D.labels_needed(correct, confidences, 0.9, 0.05, automation_rate=r) for r in (0.1, 0.3, 0.5)]
    assert all(n is not None for n in needs) and needs == sorted(needs)


def test_an_unreachable_automation_rate_says_so():
    confidences, correct = synthetic(n=600, seed=6)
    assert D.labels_needed(correct, confidences, 0.9, 0.05, automation_rate=1.0) is None


def test_planned_share_grows_with_the_labelled_set():
    confidences, correct = synthetic(n=600, seed=6)
    shares = [D.planned_automation_share(correct, confidences, n, 0.9, 0.05) for n in (30, 100, 300, 1000, 3000)]
    assert shares[0] == 0.0 and shares[-1] > 0.3
    assert shares == sorted(shares)


def test_sample_size_curve_has_one_value_per_size_and_is_reproducible():
    confidences, correct = synthetic(n=400, seed=7)
    curve = D.sample_size_curve(correct, confidences, 0.9, 0.05, sizes=[50, 200, 800], n_draws=20, seed=3)
    again = D.sample_size_curve(correct, confidences, 0.9, 0.05, sizes=[50, 200, 800], n_draws=20, seed=3)
    assert set(curve) == {"n_labels", "planned_share", "median_share", "low_share", "high_share", "certified_fraction"}
    for key, values in curve.items():
        assert values.shape == (3,)
        np.testing.assert_array_equal(values, again[key])
    assert np.all(curve["low_share"] <= curve["median_share"]) and np.all(curve["median_share"] <= curve["high_share"])
    assert curve["median_share"][0] < curve["median_share"][2]


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda c, y: D.labels_needed(y, c, automation_rate=1.5), r"automation rate must be in \(0, 1\], got 1.5"),
        (lambda c, y: D.sample_size_curve(y, c, sizes=[0, 10]), r"sizes must be positive integers, got \[0, 10\]"),
        (lambda c, y: D.sample_size_curve(y, c, n_draws=0), r"n_draws must be at least 1, got 0"),
    ],
)
def test_bad_planning_input(call, match):
    confidences, correct = synthetic(n=100)
    with pytest.raises(PolicyError, match=match):
        call(confidences, correct)


# ---------------------------------------------------------------------------------- cost
def brute_force_cost(confidences, correct, cost_review, cost_error, volume):
    """Expected daily cost of every candidate (automate nothing, then each distinct threshold)."""
    candidates = [None, *sorted(set(confidences.tolist()), reverse=True)]
    costs = []
    for t in candidates:
        total = 0.0
        for c, ok in zip(confidences, correct):
            if t is None or c < t:
                total += cost_review
            elif not ok:
                total += cost_error
        costs.append(total / len(confidences) * volume)
    return candidates, costs


def test_the_cost_optimal_threshold_is_the_cheapest_candidate():
    confidences, correct = synthetic(n=300, seed=8)
    cost = D.CostModel(cost_review=3.0, cost_error=40.0, volume_per_day=5000)
    decision = D.optimal_threshold(correct, confidences, cost, n_bootstrap=50)
    candidates, costs = brute_force_cost(confidences, correct, 3.0, 40.0, 5000)
    best = int(np.argmin(costs))
    assert decision.best.threshold == candidates[best]
    assert decision.best.cost_per_day == pytest.approx(costs[best])
    assert decision.review_everything.cost_per_day == pytest.approx(3.0 * 5000)
    assert decision.automate_everything.cost_per_day == pytest.approx((~correct).mean() * 40.0 * 5000)
    assert decision.best.automated_per_day + decision.best.reviewed_per_day == pytest.approx(5000)


def test_cheap_reviews_mean_less_automation():
    confidences, correct = synthetic(n=300, seed=8)
    cheap = D.optimal_threshold(correct, confidences, D.CostModel(0.5, 40.0, 1000), n_bootstrap=10)
    dear = D.optimal_threshold(correct, confidences, D.CostModel(8.0, 40.0, 1000), n_bootstrap=10)
    assert cheap.best.automation_rate < dear.best.automation_rate


def test_per_label_error_costs_steer_the_threshold():
    probabilities, truth = two_classes(n=600)
    predicted = np.where(probabilities[:, 1] >= 0.5, "positive", "negative")
    confidences = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == truth)
    flat = D.optimal_threshold(correct, confidences, D.CostModel(2.0, 10.0, 1000), predicted_labels=predicted, n_bootstrap=10)
    costly_negative = D.optimal_threshold(
        correct, confidences, D.CostModel(2.0, {"negative": 1000.0, "positive": 10.0}, 1000),
        predicted_labels=predicted, n_bootstrap=10,
    )
    assert costly_negative.best.automation_rate < flat.best.automation_rate


def test_the_constrained_optimum_stays_inside_the_certified_range():
    confidences, correct = synthetic(n=800, seed=9)
    certificate = D.certify_threshold(correct, confidences, 0.9, 0.05)
    # Errors cost almost nothing, so the unconstrained optimum automates everything.
    cost = D.CostModel(5.0, 0.1, 1000)
    free = D.optimal_threshold(correct, confidences, cost, n_bootstrap=10)
    bound = D.optimal_threshold(correct, confidences, cost, certificate=certificate, n_bootstrap=10)
    assert free.best.automation_rate == 1.0 and not free.best.certified
    low, high = certificate.certified_range
    assert low <= bound.best.threshold <= high and bound.best.certified and bound.constrained
    assert bound.best.threshold == low  # cheapest certified = loosest certified here


def test_an_uncertified_constraint_leaves_only_review_everything():
    confidences, correct = ranked(40, set())
    certificate = D.certify_threshold(correct, confidences, 0.95, 0.05)
    decision = D.optimal_threshold(correct, confidences, D.CostModel(5.0, 0.1, 1000), certificate=certificate, n_bootstrap=10)
    assert decision.best.threshold is None and decision.best.automation_rate == 0


def test_intervals_contain_the_point_estimates():
    confidences, correct = synthetic(n=500, seed=10)
    rows = D.manager_table(correct, confidences, D.CostModel(2.0, 30.0, 2000),
                           certificate=D.certify_threshold(correct, confidences, 0.9, 0.05), n_bootstrap=300)
    for row in rows:
        assert row.cost_interval[0] <= row.cost_per_day <= row.cost_interval[1]
        assert row.errors_interval[0] <= row.errors_per_day <= row.errors_interval[1]
        if row.accuracy is not None:
            assert row.accuracy_interval[0] <= row.accuracy <= row.accuracy_interval[1]


def test_manager_table_runs_strict_to_loose_with_the_named_rows():
    confidences, correct = synthetic(n=500, seed=10)
    certificate = D.certify_threshold(correct, confidences, 0.9, 0.05, method="fixed_sequence")
    rows = D.manager_table(correct, confidences, D.CostModel(2.0, 30.0, 2000), certificate=certificate, n_bootstrap=20)
    notes = [row.note for row in rows]
    assert notes[0] == "review all" and rows[0].threshold is None
    assert notes[-1] == "automate all" and rows[-1].automation_rate == 1.0
    assert any(note.startswith("certified") for note in notes)
    thresholds = [row.threshold for row in rows[1:]]
    assert thresholds == sorted(thresholds, reverse=True)
    rates = [row.automation_rate for row in rows]
    assert rates == sorted(rates)
    certified_row = next(row for row in rows if row.note.startswith("certified"))
    assert certified_row.threshold == certificate.threshold and certified_row.certified
    assert all(key in rows[1].to_dict() for key in ("threshold", "automated_per_day", "reviewed_per_day", "accuracy", "cost_per_day"))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"cost_review": -1, "cost_error": 5, "volume_per_day": 10}, r"cost review must be a number >= 0, got -1"),
        ({"cost_review": 1, "cost_error": 5, "volume_per_day": float("inf")}, r"volume per day must be a number >= 0, got inf"),
        ({"cost_review": 1, "cost_error": {"spam": -2}, "volume_per_day": 10}, r"cost of an error on 'spam' must be a number >= 0, got -2"),
        ({"cost_review": 1, "cost_error": "lots", "volume_per_day": 10}, r"cost of an error on '\*' must be a number >= 0, got 'lots'"),
    ],
)
def test_bad_cost_models(kwargs, match):
    with pytest.raises(PolicyError, match=match):
        D.CostModel(**kwargs)


def test_a_label_without_an_error_cost_is_named():
    cost = D.CostModel(1.0, {"spam": 10.0}, 100)
    with pytest.raises(PolicyError, match=r"no error cost given for predicted label 'ham'; costs are given for \['spam'\]"):
        D.optimal_threshold([1, 0], [0.9, 0.8], cost, predicted_labels=["spam", "ham"])


# ---------------------------------------------------------------------------------- simulation helper
def test_simulation_counts_failures_against_the_whole_population():
    # A population whose accuracy is 80 % at every confidence: the empirical rule at 95 %
    # always picks some top slice by luck, and that slice is 80 % accurate in the population.
    rng = np.random.default_rng(11)
    confidences = rng.uniform(0.5, 1, 2000)
    correct = rng.uniform(size=2000) < 0.8
    result = D.simulate_guarantee(correct, confidences, n_calibration=300, n_draws=30,
                                  rules=("fixed_sequence", "empirical"), seed=1)
    assert result["fixed_sequence"]["failures"] == 0
    assert result["fixed_sequence"]["certified_rate"] == 0.0
    # The empirical rule finds a lucky top slice in most draws; a tiny slice may truly be
    # all correct, so not every pick fails.
    assert result["empirical"]["certified_rate"] > 0.7
    assert result["empirical"]["failure_rate"] > 0.5


def test_unknown_simulation_rule_is_named():
    with pytest.raises(PolicyError, match=r"unknown simulation rule 'magic'"):
        D.simulate_guarantee([1], [0.9], n_calibration=1, rules=("magic",))
