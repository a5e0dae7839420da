"""Threshold simulations: draw calibration sets from a scored population and see what each way
of choosing a threshold automates and how accurate that is.

`simulate_guarantee` checks the certificate's promise over the whole population,
`sample_size_curve` bootstraps the certified share at each calibration-set size, and
`sample_size_draws` measures thresholds chosen on n items on the remaining ones (the report's
sample-size figure). `naive_scan_threshold` and `empirical_threshold` are deliberately invalid
baselines kept for these comparisons.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from howsure.core.validation import check_confidences, check_delta, check_target
from howsure.decisions.certification import certify_threshold
from howsure.decisions.planning import planned_automation_share
from howsure.decisions.pvalues import DEFAULT_METHOD, METHODS, binomial_p_value
from howsure.decisions.selective import selective_counts
from howsure.decisions.walks import DEFAULT_STARTS
from howsure.errors import PolicyError

SIMULATION_RULES = ("fallback", "fixed_sequence", "multistart", "hoeffding_bentkus", "naive_scan", "empirical")


def oracle_automation_share(correct: Any, confidences: Any, target_accuracy: float) -> float:
    """Share of a population the loosest threshold whose accuracy over the WHOLE population
    reaches the target automates: what a certificate would automate if the population were
    known (the yardstick of `simulate_guarantee`'s automation shares); 0 if none reaches it."""
    target = check_target(target_accuracy)
    _, n_auto, n_err = selective_counts(correct, confidences)
    # The same tolerance as the failure count: 285 / 300 reaches 0.95.
    reached = np.flatnonzero(1 - n_err / n_auto >= target - 1e-12)
    return float(n_auto[reached[-1]] / n_auto[-1]) if reached.size else 0.0


def simulate_guarantee(
    correct: Any,
    confidences: Any,
    *,
    n_calibration: int,
    n_draws: int = 200,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    rules: Sequence[str] = SIMULATION_RULES,
    seed: int = 0,
    starts: Sequence[float] = DEFAULT_STARTS,
) -> dict[str, dict[str, Any]]:
    """Check what the guarantee promises, treating a scored data set as the whole population.

    Draws ``n_draws`` calibration sets of ``n_calibration`` items iid (with replacement) from
    the population, picks a threshold on each with every rule, and measures the accuracy of the
    items that threshold automates over the WHOLE population - the quantity the guarantee is
    about (a held-out half would only scatter around it).

    Parameters
    ----------
    correct, confidences : array-like of shape (N,)
        The population.
    n_calibration, n_draws, seed : int
    rules : sequence of str
        Any of `SIMULATION_RULES`: the three certification methods with binomial p-values,
        the default method with Hoeffding-Bentkus p-values, and the two invalid rules.
    starts : sequence of float
        Start thresholds of the fallback and multistart walks (`calibrated_starts` for a
        population of calibrated confidences, as a policy with a calibrator uses).

    Returns
    -------
    dict
        Per rule: ``threshold`` (n_draws,) with NaN where nothing was automated,
        ``population_accuracy`` (n_draws,) NaN likewise, ``automation_share`` (n_draws,)
        share of the population automated, ``failures`` (int, draws that automated something
        less accurate than the target), ``failure_rate`` and ``certified_rate``.
    """
    ok, conf = check_confidences(correct, confidences)
    target = check_target(target_accuracy)
    delta = check_delta(delta)
    unknown = [rule for rule in rules if rule not in SIMULATION_RULES]
    if unknown:
        raise PolicyError(f"unknown simulation rule {unknown[0]!r}; expected one of {list(SIMULATION_RULES)}")
    if n_calibration < 1 or n_draws < 1:
        raise PolicyError(f"n_calibration and n_draws must be >= 1, got {n_calibration!r} and {n_draws!r}")
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    cum_correct = np.cumsum(ok[order])

    def choose(rule: str, c: np.ndarray, y: np.ndarray) -> float | None:
        if rule == "naive_scan":
            return naive_scan_threshold(y, c, target, delta)
        if rule == "empirical":
            return empirical_threshold(y, c, target)
        method = rule if rule in METHODS else DEFAULT_METHOD
        p_value = "hoeffding_bentkus" if rule == "hoeffding_bentkus" else "binomial"
        return certify_threshold(y, c, target, delta, method=method, p_value=p_value, starts=starts,
                                 plan_if_uncertified=False).threshold

    rng = np.random.default_rng(seed)
    thresholds = {rule: np.full(n_draws, np.nan) for rule in rules}
    for draw in range(n_draws):
        pick = rng.integers(0, conf.size, n_calibration)
        for rule in rules:
            chosen = choose(rule, conf[pick], ok[pick])
            if chosen is not None:
                thresholds[rule][draw] = chosen
    out: dict[str, dict[str, Any]] = {}
    for rule in rules:
        t = thresholds[rule]
        automated = np.searchsorted(-sorted_conf, -np.nan_to_num(t, nan=np.inf), side="right")
        accuracy = np.full(n_draws, np.nan)
        live = automated > 0
        accuracy[live] = cum_correct[automated[live] - 1] / automated[live]
        # A tolerance for the float division: 285 / 300 must count as reaching 0.95.
        failures = int(np.sum(accuracy[live] < target - 1e-12))
        out[rule] = {
            "threshold": t,
            "population_accuracy": accuracy,
            "automation_share": automated / conf.size,
            "failures": failures,
            "failure_rate": failures / n_draws,
            "certified_rate": float(live.mean()),
        }
    return out


def naive_scan_threshold(
    correct: Any, confidences: Any, target_accuracy: float = 0.95, delta: float = 0.05
) -> float | None:
    """NOT VALID - for the simulation only. Tests every threshold at level ``delta`` and keeps
    the loosest that passes, ignoring that many thresholds were tried.

    Returns
    -------
    float or None
        The loosest threshold with binomial p-value <= ``delta``.
    """
    alpha = 1 - check_target(target_accuracy)
    delta = check_delta(delta)
    thresholds, n_auto, n_err = selective_counts(correct, confidences)
    passed = np.flatnonzero(binomial_p_value(n_err, n_auto, alpha) <= delta)
    return float(thresholds[passed[-1]]) if passed.size else None


def empirical_threshold(correct: Any, confidences: Any, target_accuracy: float = 0.95) -> float | None:
    """NOT VALID - for the simulation only. The loosest threshold whose accuracy on the
    calibration items reaches the target: what picking a threshold by eye on a chart does."""
    target = check_target(target_accuracy)
    thresholds, n_auto, n_err = selective_counts(correct, confidences)
    passed = np.flatnonzero(1 - n_err / n_auto >= target)
    return float(thresholds[passed[-1]]) if passed.size else None



def sample_size_curve(
    correct: Any,
    confidences: Any,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    *,
    sizes: Sequence[int] | None = None,
    n_draws: int = 100,
    seed: int = 0,
    method: str = DEFAULT_METHOD,
    p_value: str = "binomial",
) -> dict[str, np.ndarray]:
    """Certified automation share against calibration-set size, for the planning chart.

    Two estimates per size: the plug-in forecast (`planned_automation_share`) and a bootstrap
    that draws ``n_draws`` calibration sets of that size from the pilot set with replacement
    and certifies each (its spread shows how much a real set of that size may vary).

    Parameters
    ----------
    correct, confidences : array-like of shape (n,)
    sizes : sequence of int, optional
        Calibration-set sizes; default 100 .. 10 n on a log scale.
    n_draws : int
    seed : int

    Returns
    -------
    dict of ndarray, each of shape (S,)
        ``n_labels``, ``planned_share``, ``median_share``, ``low_share`` and ``high_share``
        (10th and 90th bootstrap percentiles), ``certified_fraction`` (share of bootstrap draws
        that certified anything).
    """
    ok, conf = check_confidences(correct, confidences)
    if sizes is None:
        sizes = np.unique(np.geomspace(100, max(1000, 10 * conf.size), 12).round().astype(int))
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0 or (sizes < 1).any():
        raise PolicyError(f"sizes must be positive integers, got {sizes.tolist()!r}")
    if n_draws < 1:
        raise PolicyError(f"n_draws must be at least 1, got {n_draws!r}")
    rng = np.random.default_rng(seed)
    planned, median, low, high, certified = [], [], [], [], []
    for size in sizes:
        planned.append(planned_automation_share(ok, conf, int(size), target_accuracy, delta, p_value=p_value,
                                                method=method))
        shares = np.empty(n_draws)
        for draw in range(n_draws):
            pick = rng.integers(0, conf.size, size)
            cert = certify_threshold(ok[pick], conf[pick], target_accuracy, delta, method=method,
                                     p_value=p_value, plan_if_uncertified=False)
            shares[draw] = cert.automation_rate
        median.append(np.median(shares))
        low.append(np.quantile(shares, 0.1))
        high.append(np.quantile(shares, 0.9))
        certified.append(np.mean(shares > 0))
    return {
        "n_labels": sizes,
        "planned_share": np.array(planned),
        "median_share": np.array(median),
        "low_share": np.array(low),
        "high_share": np.array(high),
        "certified_fraction": np.array(certified),
    }



def certified_threshold(correct: np.ndarray, confidence: np.ndarray, target: float, delta: float = 0.05) -> float | None:
    """The loosest threshold `certify_threshold` certifies (None if none), in the
    ``choose_threshold(correct, confidence, target)`` order `sample_size_draws` calls.

    Parameters
    ----------
    correct : ndarray of shape (n,), 0/1
    confidence : ndarray of shape (n,)
    target : float
        Accuracy the automated items must reach with probability at least 1 - ``delta``.
    delta : float
    """
    return certify_threshold(correct, confidence, target, delta, plan_if_uncertified=False).threshold


def sample_size_draws(
    correct: Any,
    confidence: Any,
    *,
    target: float,
    sizes: Sequence[int],
    n_repeats: int = 50,
    seed: int = 0,
    choose_threshold: Callable[[np.ndarray, np.ndarray, float], float | None] = certified_threshold,
) -> dict[str, np.ndarray]:
    """Simulate choosing a threshold on n labelled items and applying it to the rest.

    For each n in ``sizes``, ``n_repeats`` times: draw n items without replacement, choose a
    threshold on them with ``choose_threshold(correct, confidence, target)`` (None automates
    nothing), then measure on the other items the share at or above it and their accuracy.

    Parameters
    ----------
    correct : array-like of shape (N,), 0/1
    confidence : array-like of shape (N,), in [0, 1]
    target : float in (0, 1)
    sizes : sequence of int
        Each in [1, N // 2], so at least half the items are left to measure on.
    n_repeats, seed : int

    Returns
    -------
    dict of ndarray, each of shape (S,)
        ``sizes``; ``automated`` (median share automated over the draws) with
        ``automated_low`` / ``automated_high`` (10th / 90th percentiles); ``accuracy`` (mean
        accuracy of the automated items, NaN at a size where no draw automated anything) with
        ``accuracy_low`` / ``accuracy_high``.
    """
    ok, confidence = check_confidences(correct, confidence)
    correct = ok.astype(np.float64)
    target = check_target(target)
    usable = [int(size) for size in sizes]
    if not usable or any(not 0 < size <= correct.size // 2 for size in usable):
        raise PolicyError(f"sample sizes must lie in [1, {correct.size // 2}] (half of {correct.size} items), "
                          f"got {list(sizes)!r}")
    if n_repeats < 1:
        raise PolicyError(f"n_repeats must be at least 1, got {n_repeats!r}")
    rng = np.random.default_rng(seed)
    shares = np.empty((len(usable), n_repeats))
    accuracies = np.full((len(usable), n_repeats), np.nan)
    for row, size in enumerate(usable):
        for draw in range(n_repeats):
            chosen = np.zeros(correct.size, bool)
            chosen[rng.choice(correct.size, size=size, replace=False)] = True
            threshold = choose_threshold(correct[chosen], confidence[chosen], target)
            kept = ~chosen & (confidence >= (np.inf if threshold is None else threshold))
            shares[row, draw] = kept.sum() / (~chosen).sum()
            if kept.any():
                accuracies[row, draw] = correct[kept].mean()
    with warnings.catch_warnings():
        # A size at which no draw automated anything has no accuracy: NaN is the answer.
        warnings.simplefilter("ignore", RuntimeWarning)
        accuracy = np.nanmean(accuracies, axis=1)
        accuracy_low, accuracy_high = np.nanpercentile(accuracies, [10, 90], axis=1)
    return {
        "sizes": np.asarray(usable, float),
        "automated": np.median(shares, axis=1),
        "automated_low": np.percentile(shares, 10, axis=1),
        "automated_high": np.percentile(shares, 90, axis=1),
        "accuracy": accuracy,
        "accuracy_low": accuracy_low,
        "accuracy_high": accuracy_high,
    }
