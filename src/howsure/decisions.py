"""Decide what to automate: certified thresholds, cost-optimal thresholds, sample-size planning.

Everything here works on plain arrays of confidences and correctness and returns numbers; the
CLI and the plots draw them. Only numpy and ``scipy.special`` are imported, so ``howsure
thresholds`` and ``howsure route`` start quickly.

The guarantee
-------------
A *threshold* ``t`` automates every item whose confidence is at least ``t``. Its *selective
accuracy* is the accuracy of the items it automates, in the population the items come from::

    A(t) = P(correct | confidence >= t),     selective risk R(t) = 1 - A(t).

Given ``n`` labelled calibration items drawn iid from that population, a target accuracy
``1 - alpha`` and a risk level ``delta``, `certify_threshold` returns a threshold ``t_hat``
(or none) such that::

    P( A(t_hat) >= 1 - alpha ) >= 1 - delta        (over the draw of the calibration set).

It is Learn-then-Test (Angelopoulos et al., 2021): one null hypothesis per threshold,
``H_t: R(t) > alpha``, tested with a p-value that is valid for each fixed ``t``, and a
multiple-testing procedure over all thresholds that controls the family-wise error rate at
``delta``; ``t_hat`` is the loosest rejected threshold.

The p-value for a fixed ``t`` uses the selected items only. Given that ``n_t`` of the ``n``
calibration items reach ``t``, those ``n_t`` items are iid draws from the population
conditioned on ``confidence >= t``, so their error count is ``Binomial(n_t, R(t))``. Under
``H_t`` that count is stochastically larger than ``Binomial(n_t, alpha)``, hence::

    p_t = P( Binomial(n_t, alpha) <= errors_t )

is a valid p-value conditionally on ``n_t`` and therefore unconditionally (``p_t = 1`` when
``n_t = 0``). This is what makes the *conditional* risk testable: the test is on the items
the threshold selects, not on all ``n``.

Fixed-sequence testing walks thresholds from strict to loose and rejects until the first
p-value above ``delta``. The walk runs over the whole continuum of thresholds, not a grid:
``p_t`` only changes where ``t`` passes a calibration confidence, so the walk is evaluated at
the distinct calibration confidences, and every threshold between two of them shares the
p-value of the stricter one. Validity: let ``t0`` be the strictest threshold whose null holds
(by continuity of ``R`` from above, ``R(t0) >= alpha``); rejecting any true null needs
rejecting ``t0`` first, which happens with probability at most ``delta``.

The start of the walk. The strictest thresholds automate so few calibration items that no
error count can reject them (with ``m`` items and no error, ``p = (1 - alpha)^m``). A walk
that began there would stop at once. ``method="fixed_sequence"`` therefore begins at the
strictest threshold that could be rejected at all (``m0`` items: 59 for alpha = delta =
0.05). The start depends on the data. If the walk starts no later than ``t0`` the argument
above is unchanged; it can only start later when fewer than ``m0`` calibration items reach
``t0``, so in general::

    P(failure) <= delta + P(Binomial(n, Q0) < m0),     Q0 = P(confidence >= t0),

and the second term vanishes unless a pocket of the most confident items, smaller than about
``m0 / n`` of the population, misses the target. It is exactly zero when **the selective risk
does not rise as the threshold tightens** (``R`` non-increasing in ``t``): then conditioning on
few items above a threshold can only make the items below it look worse, never better.
``method="multistart"`` needs iid only: it runs one fixed-sequence walk from each of a few
data-independent start thresholds at level ``delta / S`` (Bonferroni over the ``S`` walks) and
keeps the loosest rejection.

``method="fallback"``, the default, needs iid only too and rejects everything multistart does:
the fallback procedure (Wiens 2003) over the same starts, each carrying ``delta / S``. A walk
that reaches the next start with every threshold since its own start rejected adds that start's
share to its level; after a failure the next start begins a new walk at its own share.
Validity: take the strictest wrongly rejected threshold ``u``. Its walk began at some start and
rejected only true alternatives before ``u``, so every start it passed has ``u`` as the first
true null at or below it, and ``u`` was tested at ``delta`` times the total share of those
starts. Distinct ``u`` own disjoint sets of starts, so by the union bound the chance of any
wrong rejection is at most ``delta`` times the sum of all shares, ``delta``. Starts are fixed
before the labels are seen: `DEFAULT_STARTS` for raw confidences, `calibrated_starts` (around
the target) for confidences from a calibrator fitted on other items.

`naive_scan_threshold` (test every threshold at level ``delta``, keep the loosest that
passes) and `empirical_threshold` (keep the loosest whose calibration accuracy reaches the
target) are NOT valid; they exist for the simulation in ``tests/test_guarantee_simulation.py``
that shows them failing more often.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import special

from howsure.errors import PolicyError
from howsure.walks import fallback_walk, last_rejected, multistart_walk

METHODS = ("fallback", "fixed_sequence", "multistart")
DEFAULT_METHOD = "fallback"  # valid for iid data with no further condition
P_VALUES = ("binomial", "hoeffding_bentkus")

# Data-independent starts of the fallback and multistart walks. Raw language-model
# confidences pile up just below 1, calibrated ones spread over [1/K, 1]; the starts cover both.
DEFAULT_STARTS = (0.999999, 0.99999, 0.9999, 0.999, 0.998, 0.995, 0.99, 0.95, 0.9, 0.8, 0.7, 0.6)
# Calibrated confidences mean what they say, so the loosest threshold meeting the target sits
# near the target itself: starts at these multiples of the error budget ``1 - target`` below 1
# (for 0.9: 0.975, 0.95, 0.925, 0.9, 0.875). Fewer, better placed starts split delta less;
# measured against the population optimum by docs/scripts/oracle_share.py.
CALIBRATED_START_MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.25)


def calibrated_starts(target_accuracy: float) -> tuple[float, ...]:
    """Start thresholds for confidences from a calibrator fitted on other items (they depend
    on the target only, so they are fixed before the calibration labels are seen)."""
    alpha = 1 - check_target(target_accuracy)
    return tuple(max(0.0, 1 - alpha * m) for m in CALIBRATED_START_MULTIPLES)

# The sample-size planner extrapolates the observed accuracy profile only over thresholds
# that automate at least this many calibration items (a tenth of a small pilot set): a top
# slice of a handful of items says nothing reliable about its population share.
PLANNING_MIN_ITEMS = 20
PLANNING_MIN_FLOOR = 5

# Percentile interval of the bootstrap used for cost, automation and error intervals.
INTERVAL_LEVEL = 0.95


# ---------------------------------------------------------------------------------- checks
def check_target(target_accuracy: Any) -> float:
    """Return ``target_accuracy`` as a float in (0, 1) or raise `PolicyError` naming it."""
    try:
        value = float(target_accuracy)
    except (TypeError, ValueError):
        raise PolicyError(f"target accuracy must be a number in (0, 1), got {target_accuracy!r}") from None
    if not 0.0 < value < 1.0 or math.isnan(value):
        hint = (
            "; accuracy is a fraction, write 0.95 for 95 %" if value > 1 else
            "; a target of exactly 1 (no error ever) cannot be certified from a finite sample"
            if value == 1 else ""
        )
        raise PolicyError(f"target accuracy must be in (0, 1), got {target_accuracy!r}{hint}")
    return value


def check_delta(delta: Any) -> float:
    """Return ``delta`` as a float in (0, 1) or raise `PolicyError` naming it."""
    try:
        value = float(delta)
    except (TypeError, ValueError):
        raise PolicyError(f"delta must be a number in (0, 1), got {delta!r}") from None
    if not 0.0 < value < 1.0 or math.isnan(value):
        raise PolicyError(
            f"delta (the chance the guarantee may fail) must be in (0, 1), got {delta!r}; "
            "0.05 means the certified accuracy holds with probability 0.95"
        )
    return value


def check_confidences(confidences: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a calibration set.

    Parameters
    ----------
    confidences : array-like of shape (n,)
        Confidence of each item's predicted label, in [0, 1].
    correct : array-like of shape (n,)
        Whether that predicted label was right: bool or 0/1.

    Returns
    -------
    confidences : ndarray of shape (n,), float64
    correct : ndarray of shape (n,), bool
    """
    try:
        conf = np.asarray(confidences, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"confidences must be numbers in [0, 1]: {exc}") from None
    if conf.ndim != 1:
        raise PolicyError(f"confidences must have shape (n,), got shape {conf.shape}")
    if conf.size == 0:
        raise PolicyError("the calibration set is empty; a threshold needs labelled items to certify")
    bad = ~np.isfinite(conf) | (conf < 0) | (conf > 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise PolicyError(f"confidences must be in [0, 1]; item {i} has {conf[i].item()!r}")
    raw = np.asarray(correct)
    if raw.shape != conf.shape:
        raise PolicyError(
            f"confidences has {conf.size} items but correct has shape {raw.shape}; "
            "give one 0/1 correctness per item"
        )
    if raw.dtype != bool:
        try:
            numeric = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise PolicyError(f"correct must hold 0/1 or true/false, got values like {raw[:3].tolist()!r}") from None
        off = ~np.isin(numeric, (0.0, 1.0))
        if off.any():
            i = int(np.argmax(off))
            raise PolicyError(f"correct must hold 0/1 or true/false; item {i} has {raw[i].item()!r}")
        raw = numeric == 1.0
    return conf, raw


def _check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise PolicyError(f"unknown {what} {value!r}; expected one of {list(allowed)}")
    return value


# ---------------------------------------------------------------------------------- p-values
def binomial_p_value(errors: Any, n: Any, alpha: float) -> np.ndarray:
    """Exact binomial p-value of ``H: error rate > alpha`` from ``errors`` out of ``n``.

    Parameters
    ----------
    errors, n : array-like, broadcastable
        Error counts and item counts. Non-integers are accepted (the regularised incomplete
        beta function extends the binomial CDF continuously); the sample-size planner uses it.
    alpha : float
        Largest tolerated error rate, ``1 - target accuracy``.

    Returns
    -------
    ndarray
        ``P(Binomial(n, alpha) <= errors)``; 1 where ``n == 0`` or ``errors >= n``.
    """
    errors = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    errors, n = np.broadcast_arrays(errors, n)
    out = np.ones(errors.shape)
    live = errors < n
    # P(X <= k) = I_{1-alpha}(n - k, k + 1), the binomial CDF through the incomplete beta.
    out[live] = special.betainc(n[live] - errors[live], errors[live] + 1.0, 1.0 - alpha)
    return out


def hoeffding_bentkus_p_value(errors: Any, n: Any, alpha: float) -> np.ndarray:
    """Hoeffding-Bentkus p-value of ``H: error rate > alpha`` (Bates et al., RCPS, 2021).

    Valid for any loss in [0, 1], hence more conservative than `binomial_p_value` on 0/1
    errors; offered for comparison with the LTT literature.

    Parameters
    ----------
    errors, n : array-like, broadcastable
    alpha : float

    Returns
    -------
    ndarray
        ``min(exp(-n * kl(min(r, alpha), alpha)), e * P(Binomial(n, alpha) <= ceil(n r)))``
        with ``r = errors / n``; 1 where ``n == 0``.
    """
    errors = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    errors, n = np.broadcast_arrays(errors, n)
    rate = np.divide(errors, n, out=np.ones(errors.shape), where=n > 0)
    a = np.minimum(rate, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = special.xlogy(a, a / alpha) + special.xlogy(1 - a, (1 - a) / (1 - alpha))
    hoeffding = np.exp(-n * kl)
    bentkus = math.e * binomial_p_value(np.ceil(errors), n, alpha)
    return np.where(n > 0, np.minimum(np.minimum(hoeffding, bentkus), 1.0), 1.0)


_P_VALUE_FUNCTIONS = {"binomial": binomial_p_value, "hoeffding_bentkus": hoeffding_bentkus_p_value}


def min_items_to_certify(target_accuracy: float, delta: float, p_value: str = "binomial") -> int:
    """Fewest automated calibration items that can certify ``target_accuracy`` at all.

    Reached with zero errors: for the binomial p-value, the smallest ``m`` with
    ``target_accuracy ** m <= delta`` (59 for 0.95 / 0.05).
    """
    alpha = 1 - check_target(target_accuracy)
    delta = check_delta(delta)
    p_func = _P_VALUE_FUNCTIONS[_check_choice(p_value, P_VALUES, "p-value")]
    m = max(1, int(math.floor(math.log(delta) / math.log1p(-alpha))))
    while p_func(0, m, alpha) > delta:
        m += 1
    while m > 1 and p_func(0, m - 1, alpha) <= delta:
        m -= 1
    return m


# ---------------------------------------------------------------------------------- curves
def selective_counts(confidences: Any, correct: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items automated and errors among them at every distinct threshold, strict to loose.

    Parameters
    ----------
    confidences : array-like of shape (n,)
    correct : array-like of shape (n,)

    Returns
    -------
    thresholds : ndarray of shape (T,)
        The distinct confidences, descending; threshold ``thresholds[j]`` automates every item
        with confidence >= it.
    n_automated : ndarray of shape (T,), int
        Items automated at each threshold (cumulative, increasing).
    n_errors : ndarray of shape (T,), int
        Wrong items among them.
    """
    conf, ok = check_confidences(confidences, correct)
    negated, group = np.unique(-conf, return_inverse=True)
    n_automated = np.cumsum(np.bincount(group, minlength=negated.size))
    n_errors = np.cumsum(np.bincount(group, weights=~ok, minlength=negated.size)).astype(np.int64)
    return -negated, n_automated, n_errors


def selective_accuracy_curve(confidences: Any, correct: Any) -> dict[str, np.ndarray]:
    """The accuracy-versus-automation trade-off, for tables and charts.

    Returns
    -------
    dict of ndarray, each of shape (T,)
        ``threshold`` (descending), ``automation_rate`` (share of items at or above it),
        ``accuracy`` (accuracy of those items), ``n_automated``, ``n_errors``.
    """
    thresholds, n_automated, n_errors = selective_counts(confidences, correct)
    n = n_automated[-1]
    return {
        "threshold": thresholds,
        "automation_rate": n_automated / n,
        "accuracy": 1 - n_errors / n_automated,
        "n_automated": n_automated,
        "n_errors": n_errors,
    }


# ---------------------------------------------------------------------------------- certify
@dataclass(frozen=True)
class ThresholdCertificate:
    """What `certify_threshold` found.

    ``threshold`` automates every item with confidence >= it; with probability at least
    ``1 - delta`` over the calibration draw, the automated items' accuracy in the population is
    at least ``target_accuracy``. ``None`` when nothing could be certified: automate nothing.
    """

    threshold: float | None
    target_accuracy: float
    delta: float
    method: str
    p_value: str
    n_calibration: int
    n_automated: int
    n_errors: int
    # Every threshold in [certified_range[0], certified_range[1]] is covered by the same
    # guarantee (the walk rejected all of them); the cost optimiser may choose among them.
    certified_range: tuple[float, float] | None
    # Labelled items in total that would certify something if the observed accuracy profile
    # held; only set when nothing was certified. None there means the profile never reaches
    # the target, so more labels alone cannot help.
    labels_needed: int | None = None
    starts: tuple[float, ...] = ()

    @property
    def certified(self) -> bool:
        return self.threshold is not None

    @property
    def automation_rate(self) -> float:
        return self.n_automated / self.n_calibration

    @property
    def empirical_accuracy(self) -> float | None:
        return None if self.n_automated == 0 else 1 - self.n_errors / self.n_automated

    def summary(self) -> str:
        """One or two sentences a person can act on."""
        if self.certified:
            return (
                f"confidence >= {self.threshold:.6g} automates {self.n_automated} of "
                f"{self.n_calibration} calibration items ({self.automation_rate:.1%}); with "
                f"probability >= {1 - self.delta:.0%} their accuracy is >= "
                f"{self.target_accuracy:.1%} ({self.n_errors} errors seen, method {self.method})"
            )
        text = (
            f"no threshold can be certified at accuracy >= {self.target_accuracy:.1%} with "
            f"probability >= {1 - self.delta:.0%} from {self.n_calibration} labelled items; "
            "route everything to review"
        )
        if self.labels_needed is None:
            return text + (
                "; the observed accuracy never reaches the target at any threshold, so more "
                "labels alone will not help (improve the model or lower the target)"
            )
        return text + (
            f"; about {self.labels_needed - self.n_calibration} more labelled items "
            f"({self.labels_needed} in all) would certify one if the observed accuracy profile holds"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["certified_range"] = list(self.certified_range) if self.certified_range else None
        data["starts"] = list(self.starts)
        data["certified"] = self.certified
        data["automation_rate"] = self.automation_rate
        data["empirical_accuracy"] = self.empirical_accuracy
        return data


def certify_threshold(
    confidences: Any,
    correct: Any,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    *,
    method: str = DEFAULT_METHOD,
    p_value: str = "binomial",
    starts: Sequence[float] = DEFAULT_STARTS,
    plan_if_uncertified: bool = True,
) -> ThresholdCertificate:
    """The loosest threshold whose automated accuracy is certified (see the module docstring).

    Parameters
    ----------
    confidences : array-like of shape (n,)
        Confidence of each calibration item's predicted label. Calibrated or not: the guarantee
        holds for whatever confidence is given, as long as the same function produces the
        confidences of future items and it was not fitted on these items.
    correct : array-like of shape (n,)
        Whether each predicted label was right.
    target_accuracy : float in (0, 1)
    delta : float in (0, 1)
        The guarantee may fail with probability at most ``delta``.
    method : {"fallback", "fixed_sequence", "multistart"}
        ``fallback`` (the default) and ``multistart`` walk from the fixed ``starts`` and need
        iid only; ``fallback`` passes the level of a walk that gets through a start on to it,
        so it certifies at least what ``multistart`` does. ``fixed_sequence`` starts its walk
        at the strictest testable threshold, which needs one condition beyond iid: no top
        slice of the most confident items too small to hold `min_items_to_certify`
        calibration items is less accurate than the target (true when the selective risk does
        not rise as the threshold tightens; see the module docstring). The bundled SmolLM2
        model breaks that condition.
    p_value : {"binomial", "hoeffding_bentkus"}
    starts : sequence of float
        Start thresholds of the ``fallback`` and ``multistart`` walks; fix them before seeing
        the data (`calibrated_starts` for calibrated confidences).
    plan_if_uncertified : bool
        When nothing is certified, estimate how many labelled items would be needed.

    Returns
    -------
    ThresholdCertificate
    """
    target = check_target(target_accuracy)
    delta = check_delta(delta)
    _check_choice(method, METHODS, "certification method")
    p_func = _P_VALUE_FUNCTIONS[_check_choice(p_value, P_VALUES, "p-value")]
    thresholds, n_auto, n_err = selective_counts(confidences, correct)
    alpha = 1 - target
    p = p_func(n_err, n_auto, alpha)
    n = int(n_auto[-1])

    chosen: tuple[float, float, int] | None = None  # (threshold, strictest certified, index)
    used_starts: tuple[float, ...] = ()
    if method == "fixed_sequence":
        testable = np.flatnonzero(p_func(0, n_auto, alpha) <= delta)
        if testable.size:
            first = int(testable[0])
            last = last_rejected(p, delta, first)
            if last >= first:
                chosen = (float(thresholds[last]), float(thresholds[first]), last)
    else:
        used_starts = tuple(sorted({float(s) for s in starts}, reverse=True))
        if not used_starts or any(not 0 <= s <= 1 for s in used_starts):
            raise PolicyError(f"{method} needs start thresholds in [0, 1], got {list(starts)!r}")
        walk = fallback_walk if method == "fallback" else multistart_walk
        chosen = walk(thresholds, p, used_starts, delta)

    if chosen is None:
        needed = None
        if plan_if_uncertified:
            needed = labels_needed(confidences, correct, target, delta, p_value=p_value, method=method,
                                   starts=starts)
        return ThresholdCertificate(
            threshold=None, target_accuracy=target, delta=delta, method=method, p_value=p_value,
            n_calibration=n, n_automated=0, n_errors=0, certified_range=None,
            labels_needed=needed, starts=used_starts,
        )
    threshold, strictest, index = chosen
    return ThresholdCertificate(
        threshold=threshold, target_accuracy=target, delta=delta, method=method, p_value=p_value,
        n_calibration=n, n_automated=int(n_auto[index]), n_errors=int(n_err[index]),
        certified_range=(threshold, strictest), starts=used_starts,
    )


def naive_scan_threshold(
    confidences: Any, correct: Any, target_accuracy: float = 0.95, delta: float = 0.05
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
    thresholds, n_auto, n_err = selective_counts(confidences, correct)
    passed = np.flatnonzero(binomial_p_value(n_err, n_auto, alpha) <= delta)
    return float(thresholds[passed[-1]]) if passed.size else None


def empirical_threshold(confidences: Any, correct: Any, target_accuracy: float = 0.95) -> float | None:
    """NOT VALID - for the simulation only. The loosest threshold whose accuracy on the
    calibration items reaches the target: what picking a threshold by eye on a chart does."""
    target = check_target(target_accuracy)
    thresholds, n_auto, n_err = selective_counts(confidences, correct)
    passed = np.flatnonzero(1 - n_err / n_auto >= target)
    return float(thresholds[passed[-1]]) if passed.size else None


# ---------------------------------------------------------------------------------- per class
def predicted_and_confidence(probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    """Top label and its probability.

    Parameters
    ----------
    probabilities : array-like of shape (n, K)

    Returns
    -------
    predicted : ndarray of shape (n,), int
    confidence : ndarray of shape (n,), float
    """
    probs = check_probabilities(probabilities)
    predicted = probs.argmax(axis=1)
    return predicted, probs[np.arange(probs.shape[0]), predicted]


def check_probabilities(probabilities: Any) -> np.ndarray:
    """Validate an (n, K) array of label probabilities (rows need not sum to 1: a policy may
    act on raw label masses) and return it as float64."""
    try:
        probs = np.asarray(probabilities, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"probabilities must be numbers: {exc}") from None
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise PolicyError(f"probabilities must have shape (n, K) with K >= 2, got shape {probs.shape}")
    if probs.shape[0] == 0:
        raise PolicyError("the calibration set is empty; a threshold needs labelled items to certify")
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise PolicyError(f"probabilities must be in [0, 1]; item {i}, label {k} has {probs[i, k].item()!r}")
    return probs


@dataclass(frozen=True)
class PerClassCertificate:
    """One certificate per predicted label: the precision of each auto-assigned label.

    With ``joint=True`` each class is certified at ``delta / K``, so with probability at least
    ``1 - delta`` every class's automated precision is at least the target at once (and so is
    the overall accuracy of automated items, a mixture of them).
    """

    labels: tuple[str, ...]
    certificates: dict[str, ThresholdCertificate | None]  # None: the label was never predicted
    delta: float
    joint: bool

    @property
    def thresholds(self) -> dict[str, float | None]:
        return {
            label: (cert.threshold if cert is not None else None)
            for label, cert in self.certificates.items()
        }


def certify_per_class(
    probabilities: Any,
    true_labels: Any,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    *,
    labels: Sequence[str] | None = None,
    joint: bool = True,
    method: str = DEFAULT_METHOD,
    p_value: str = "binomial",
    starts: Sequence[float] = DEFAULT_STARTS,
    predicted: Any = None,
) -> PerClassCertificate:
    """Certify one threshold per predicted label.

    Parameters
    ----------
    probabilities : array-like of shape (n, K)
        Label probabilities (calibrated or raw) of each calibration item.
    true_labels : array-like of shape (n,)
        Class indices in [0, K).
    labels : sequence of K str, optional
        Label names; defaults to ``"0" .. "K-1"``.
    joint : bool
        Split ``delta`` over the K labels so that all guarantees hold together.
    predicted : array-like of shape (n,), int, optional
        The label each item would be automated as, when it is not the most probable column
        (a confidence-mode calibrator keeps the raw top label even where its calibrated
        confidence falls below 1/K); each item is certified at that label's probability.
        Default: the argmax of ``probabilities``.

    Returns
    -------
    PerClassCertificate
    """
    if predicted is None:
        predicted, confidence = predicted_and_confidence(probabilities)
    else:
        probs = check_probabilities(probabilities)
        predicted = check_class_indices(predicted, probs.shape[0], probs.shape[1])
        confidence = probs[np.arange(probs.shape[0]), predicted]
    k = np.asarray(probabilities).shape[1]
    truth = check_class_indices(true_labels, predicted.size, k)
    names = tuple(labels) if labels is not None else tuple(str(i) for i in range(k))
    if len(names) != k:
        raise PolicyError(f"got {len(names)} label names {list(names)} for {k} probability columns")
    target = check_target(target_accuracy)
    delta = check_delta(delta)
    level = delta / k if joint else delta
    certificates: dict[str, ThresholdCertificate | None] = {}
    for index, name in enumerate(names):
        mask = predicted == index
        certificates[name] = (
            certify_threshold(
                confidence[mask], truth[mask] == index, target, level, method=method, p_value=p_value,
                starts=starts,
            )
            if mask.any()
            else None
        )
    return PerClassCertificate(labels=names, certificates=certificates, delta=delta, joint=joint)


def check_class_indices(true_labels: Any, n: int, k: int) -> np.ndarray:
    """Validate (n,) class indices in [0, k) and return them as int64."""
    truth = np.asarray(true_labels)
    if truth.shape != (n,):
        raise PolicyError(f"expected {n} true labels, got shape {truth.shape}")
    if truth.dtype.kind not in "iu":
        raise PolicyError(f"true labels must be class indices (integers), got dtype {truth.dtype}")
    bad = (truth < 0) | (truth >= k)
    if bad.any():
        i = int(np.argmax(bad))
        raise PolicyError(f"true label {int(truth[i])} of item {i} is not a class index in [0, {k})")
    return truth.astype(np.int64)


@dataclass(frozen=True)
class TwoSidedCertificate:
    """A binary policy: auto-accept when P(positive) >= ``accept_above``, auto-reject when
    P(positive) <= ``reject_below``, review the middle. Either side may be None (never)."""

    accept_above: float | None
    reject_below: float | None
    per_class: PerClassCertificate


def certify_two_sided(
    positive_probability: Any,
    is_positive: Any,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    *,
    method: str = DEFAULT_METHOD,
    p_value: str = "binomial",
) -> TwoSidedCertificate:
    """Two-sided binary policy with jointly certified precision on both sides.

    Parameters
    ----------
    positive_probability : array-like of shape (n,)
        P(positive) per calibration item.
    is_positive : array-like of shape (n,)
        The true answer, bool or 0/1.

    Returns
    -------
    TwoSidedCertificate
        With probability >= ``1 - delta`` the auto-accepted items are >= target positive AND
        the auto-rejected items are >= target negative (each side at ``delta / 2``).
    """
    p, positive = check_confidences(positive_probability, is_positive)
    per_class = certify_per_class(
        np.column_stack([1 - p, p]), positive.astype(np.int64), target_accuracy, delta,
        labels=("negative", "positive"), joint=True, method=method, p_value=p_value,
    )
    t_neg, t_pos = per_class.thresholds["negative"], per_class.thresholds["positive"]
    return TwoSidedCertificate(
        accept_above=t_pos, reject_below=None if t_neg is None else 1 - t_neg, per_class=per_class
    )


# ---------------------------------------------------------------------------------- planning
def _planning_profile(confidences: Any, correct: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(threshold, share automated, error rate among automated) at each threshold worth
    extrapolating, strict to loose."""
    thresholds, n_auto, n_err = selective_counts(confidences, correct)
    n = n_auto[-1]
    keep = n_auto >= min(PLANNING_MIN_ITEMS, max(PLANNING_MIN_FLOOR, n // 10), n)
    return thresholds[keep], n_auto[keep] / n, n_err[keep] / n_auto[keep]


def _planned_share(profile: tuple[np.ndarray, np.ndarray, np.ndarray], n_labels: float, alpha: float,
                   delta: float, p_func, method: str = DEFAULT_METHOD,
                   starts: Sequence[float] = DEFAULT_STARTS) -> float:
    """Automation share ``method`` would certify if a calibration set of ``n_labels`` items
    showed exactly the observed profile."""
    thresholds, share, error_rate = profile
    counts = n_labels * share
    p = p_func(counts * error_rate, counts, alpha)
    if method == "fixed_sequence":
        testable = np.flatnonzero(p_func(0, counts, alpha) <= delta)
        if not testable.size:
            return 0.0
        first = int(testable[0])
        last = last_rejected(p, delta, first)
        return float(share[last]) if last >= first else 0.0
    walk = fallback_walk if method == "fallback" else multistart_walk
    chosen = walk(thresholds, p, tuple(sorted({float(s) for s in starts}, reverse=True)), delta)
    return 0.0 if chosen is None else float(share[chosen[2]])


def planned_automation_share(
    confidences: Any,
    correct: Any,
    n_labels: int,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    *,
    p_value: str = "binomial",
    method: str = DEFAULT_METHOD,
    starts: Sequence[float] = DEFAULT_STARTS,
) -> float:
    """Share of items a calibration set of ``n_labels`` would certify for automation, if it
    showed the observed accuracy profile exactly (a plug-in forecast, not a bound).

    Parameters
    ----------
    confidences, correct : array-like of shape (n,)
        A pilot calibration set.
    n_labels : int
        Size of the calibration set being planned.

    Returns
    -------
    float in [0, 1]
    """
    alpha = 1 - check_target(target_accuracy)
    return _planned_share(_planning_profile(confidences, correct), float(n_labels), alpha, check_delta(delta),
                          _P_VALUE_FUNCTIONS[_check_choice(p_value, P_VALUES, "p-value")],
                          _check_choice(method, METHODS, "certification method"), starts)


def labels_needed(
    confidences: Any,
    correct: Any,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    *,
    automation_rate: float | None = None,
    p_value: str = "binomial",
    method: str = DEFAULT_METHOD,
    starts: Sequence[float] = DEFAULT_STARTS,
    max_labels: int = 10_000_000,
) -> int | None:
    """Labelled items needed to certify ``target_accuracy`` while automating at least
    ``automation_rate`` (any positive share when None), if the observed profile holds.

    Parameters
    ----------
    confidences, correct : array-like of shape (n,)
        A pilot calibration set whose accuracy profile is extrapolated.
    automation_rate : float in (0, 1], optional

    Returns
    -------
    int or None
        The smallest calibration-set size that would do it; None when the observed profile
        never reaches the target at that automation rate, whatever the number of labels.
    """
    profile = _planning_profile(confidences, correct)
    alpha = 1 - check_target(target_accuracy)
    delta = check_delta(delta)
    _check_choice(method, METHODS, "certification method")
    p_func = _P_VALUE_FUNCTIONS[_check_choice(p_value, P_VALUES, "p-value")]
    if automation_rate is not None and not 0 < automation_rate <= 1:
        raise PolicyError(f"automation rate must be in (0, 1], got {automation_rate!r}")
    wanted = automation_rate if automation_rate is not None else 0.0

    def enough(n_labels: float) -> bool:
        reached = _planned_share(profile, n_labels, alpha, delta, p_func, method, starts)
        return reached >= wanted and reached > 0

    # Double until enough: the first size that works, not the largest, is wanted, and at
    # huge sizes the walk would start inside the thin top slices the profile cannot judge.
    low, high = 1, 1
    while not enough(high):
        if high >= max_labels:
            return None
        low, high = high, min(high * 2, max_labels)
    while high - low > 1:  # enough(high) holds and enough(low) does not (or low == 1)
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return low if enough(low) else high


def sample_size_curve(
    confidences: Any,
    correct: Any,
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
    confidences, correct : array-like of shape (n,)
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
    conf, ok = check_confidences(confidences, correct)
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
        planned.append(planned_automation_share(conf, ok, int(size), target_accuracy, delta, p_value=p_value,
                                                method=method))
        shares = np.empty(n_draws)
        for draw in range(n_draws):
            pick = rng.integers(0, conf.size, size)
            cert = certify_threshold(conf[pick], ok[pick], target_accuracy, delta, method=method,
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


# ---------------------------------------------------------------------------------- cost
@dataclass(frozen=True)
class CostModel:
    """What a decision costs.

    ``cost_error`` is the cost of one wrong automated decision: one number, or one per label
    (the label that was wrongly auto-assigned), e.g. ``{"approve": 500, "reject": 20}``.
    """

    cost_review: float
    cost_error: float | Mapping[str, float]
    volume_per_day: float

    def __post_init__(self) -> None:
        for name in ("cost_review", "volume_per_day"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PolicyError(f"{name.replace('_', ' ')} must be a number >= 0, got {value!r}")
        errors = self.cost_error if isinstance(self.cost_error, Mapping) else {"*": self.cost_error}
        for label, value in errors.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PolicyError(f"cost of an error on {label!r} must be a number >= 0, got {value!r}")

    def error_costs(self, predicted_labels: Sequence[str] | None, n: int) -> np.ndarray:
        """(n,) cost of each item's automated decision being wrong."""
        if not isinstance(self.cost_error, Mapping):
            return np.full(n, float(self.cost_error))
        if predicted_labels is None:
            raise PolicyError("per-label error costs need the predicted label of every item")
        labels = list(predicted_labels)
        missing = sorted(set(labels) - set(self.cost_error))
        if missing:
            raise PolicyError(
                f"no error cost given for predicted label {missing[0]!r}; costs are given for "
                f"{sorted(self.cost_error)}"
            )
        return np.array([float(self.cost_error[label]) for label in labels])

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost_review": self.cost_review,
            "cost_error": dict(self.cost_error) if isinstance(self.cost_error, Mapping) else self.cost_error,
            "volume_per_day": self.volume_per_day,
        }


@dataclass(frozen=True)
class PolicyRow:
    """One candidate threshold as a manager reads it: per day, with 95 % bootstrap intervals
    of the expected values (uncertainty from the calibration sample, not day-to-day noise)."""

    threshold: float | None  # None: automate nothing
    note: str
    automation_rate: float
    automated_per_day: float
    automated_interval: tuple[float, float]
    reviewed_per_day: float
    accuracy: float | None  # of automated items
    accuracy_interval: tuple[float, float] | None
    errors_per_day: float
    errors_interval: tuple[float, float]
    cost_per_day: float
    cost_interval: tuple[float, float]
    certified: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: intervals as lists, NaN (no bootstrap replicate had the value) as None."""

        def clean(value: Any) -> Any:
            if isinstance(value, (tuple, list)):
                return [clean(v) for v in value]
            if isinstance(value, float) and math.isnan(value):
                return None
            return value

        return {key: clean(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class CostDecision:
    """The cost-minimising threshold and how it compares with the two extremes."""

    best: PolicyRow
    review_everything: PolicyRow
    automate_everything: PolicyRow
    constrained: bool  # True when only certified thresholds were allowed
    cost: CostModel


def _rows(
    conf: np.ndarray,
    ok: np.ndarray,
    error_cost: np.ndarray,
    cost: CostModel,
    thresholds: Sequence[float | None],
    notes: Sequence[str],
    certified_range: tuple[float, float] | None,
    n_bootstrap: int,
    seed: int,
) -> list[PolicyRow]:
    n = conf.size
    rows = []
    for threshold, note in zip(thresholds, notes):
        auto = np.zeros(n, bool) if threshold is None else conf >= threshold
        wrong = auto & ~ok
        per_item_cost = np.where(auto, np.where(ok, 0.0, error_cost), cost.cost_review)
        # Every figure depends on the items only through their (automated, wrong, cost) kind,
        # so resampling the counts of the few kinds is the bootstrap of the calibration set,
        # in memory that does not grow with n.
        kinds, kind_of_item = np.unique(np.column_stack([auto, wrong, per_item_cost]), axis=0, return_inverse=True)
        counts = np.random.default_rng(seed).multinomial(
            n, np.bincount(kind_of_item.ravel(), minlength=len(kinds)) / n, size=n_bootstrap
        ).astype(np.float64)
        rate_b = counts @ kinds[:, 0] / n
        err_b = counts @ kinds[:, 1] / n
        cost_b = counts @ kinds[:, 2] / n * cost.volume_per_day
        with np.errstate(invalid="ignore", divide="ignore"):
            acc_b = 1 - (counts @ kinds[:, 1]) / (counts @ kinds[:, 0])
        rate = auto.mean()
        lo, hi = (1 - INTERVAL_LEVEL) / 2 * 100, (1 + INTERVAL_LEVEL) / 2 * 100

        def interval(values: np.ndarray) -> tuple[float, float]:
            values = values[np.isfinite(values)]
            return (float(np.percentile(values, lo)), float(np.percentile(values, hi))) if values.size else (math.nan, math.nan)

        in_range = (
            certified_range is not None and threshold is not None
            and certified_range[0] <= threshold <= certified_range[1]
        )
        rows.append(PolicyRow(
            threshold=threshold,
            note=note,
            automation_rate=float(rate),
            automated_per_day=float(rate * cost.volume_per_day),
            automated_interval=tuple(v * cost.volume_per_day for v in interval(rate_b)),
            reviewed_per_day=float((1 - rate) * cost.volume_per_day),
            accuracy=None if not auto.any() else float(1 - wrong.sum() / auto.sum()),
            accuracy_interval=None if not auto.any() else interval(acc_b),
            errors_per_day=float(wrong.mean() * cost.volume_per_day),
            errors_interval=tuple(v * cost.volume_per_day for v in interval(err_b)),
            cost_per_day=float(per_item_cost.mean() * cost.volume_per_day),
            cost_interval=interval(cost_b),
            certified=bool(in_range) or threshold is None,
        ))
    return rows


def optimal_threshold(
    confidences: Any,
    correct: Any,
    cost: CostModel,
    *,
    predicted_labels: Sequence[str] | None = None,
    certificate: ThresholdCertificate | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> CostDecision:
    """The threshold minimising expected cost per day.

    Expected cost per item at threshold ``t``: ``cost_review`` for each item below ``t``, and
    the error cost of its predicted label for each wrong item at or above ``t``, estimated on
    the calibration set and multiplied by the volume per day.

    Parameters
    ----------
    confidences, correct : array-like of shape (n,)
    cost : CostModel
    predicted_labels : sequence of n str, optional
        Needed when ``cost.cost_error`` is per label.
    certificate : ThresholdCertificate, optional
        When given, only thresholds inside its certified range (or automating nothing) are
        allowed: the cheapest policy that keeps the accuracy guarantee.
    n_bootstrap, seed : int
        Bootstrap replicates and seed for the intervals.

    Returns
    -------
    CostDecision
    """
    conf, ok = check_confidences(confidences, correct)
    error_cost = cost.error_costs(predicted_labels, conf.size)
    thresholds, _, _ = selective_counts(conf, ok)
    # Expected cost per item when automating the top j groups (j = 0: automate nothing).
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    wrong_cost = np.where(ok[order], 0.0, error_cost[order])
    # Cost only changes at group boundaries; take the cumulative sums there.
    ends = np.searchsorted(-sorted_conf, -thresholds, side="right")
    cum_wrong = np.concatenate([[0.0], np.cumsum(wrong_cost)[ends - 1]])
    cum_auto = np.concatenate([[0], ends])
    per_item = (cum_wrong + (conf.size - cum_auto) * cost.cost_review) / conf.size
    candidates: list[float | None] = [None, *thresholds.tolist()]
    allowed = np.ones(len(candidates), bool)
    constrained = certificate is not None
    if certificate is not None:
        lo_hi = certificate.certified_range
        allowed[1:] = False if lo_hi is None else (thresholds >= lo_hi[0]) & (thresholds <= lo_hi[1])
    best = int(np.flatnonzero(allowed)[np.argmin(per_item[allowed])])
    rows = _rows(
        conf, ok, error_cost, cost,
        [candidates[best], None, float(thresholds[-1])],
        ["cheapest certified" if constrained else "cheapest", "review all", "automate all"],
        certificate.certified_range if certificate is not None else None,
        n_bootstrap, seed,
    )
    return CostDecision(best=rows[0], review_everything=rows[1], automate_everything=rows[2],
                        constrained=constrained, cost=cost)


def manager_table(
    confidences: Any,
    correct: Any,
    cost: CostModel,
    *,
    predicted_labels: Sequence[str] | None = None,
    certificate: ThresholdCertificate | None = None,
    shares: Sequence[float] = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> list[PolicyRow]:
    """The rows a manager compares, strict to loose, each with a note: "review all", "~30%"
    (the threshold automating about that share), "certified" (the loosest certified
    threshold), "cheapest" (lowest expected cost), "cheapest certified" (lowest among the
    certified range), "automate all".

    Returns
    -------
    list of PolicyRow
    """
    conf, ok = check_confidences(confidences, correct)
    error_cost = cost.error_costs(predicted_labels, conf.size)
    sorted_desc = np.sort(conf)[::-1]
    entries: dict[float | None, str] = {None: "review all"}
    for share in shares:
        if not 0 < share < 1:
            raise PolicyError(f"automation shares must be in (0, 1), got {share!r}")
        entries.setdefault(float(sorted_desc[max(0, int(round(share * conf.size)) - 1)]), f"~{share:.0%}")
    free = optimal_threshold(conf, ok, cost, predicted_labels=predicted_labels, n_bootstrap=1, seed=seed)
    entries[free.best.threshold] = "cheapest"
    if certificate is not None and certificate.certified:
        entries[certificate.threshold] = "certified"
        bound = optimal_threshold(conf, ok, cost, predicted_labels=predicted_labels,
                                  certificate=certificate, n_bootstrap=1, seed=seed)
        if bound.best.threshold is not None:
            entries[bound.best.threshold] = (
                "certified, cheapest" if bound.best.threshold == certificate.threshold
                else "cheapest certified"
            )
    entries.setdefault(float(sorted_desc[-1]), "automate all")
    ordered = sorted(entries, key=lambda t: math.inf if t is None else t, reverse=True)
    return _rows(conf, ok, error_cost, cost, ordered, [entries[t] for t in ordered],
                 certificate.certified_range if certificate is not None else None, n_bootstrap, seed)


# ---------------------------------------------------------------------------------- simulation
SIMULATION_RULES = ("fallback", "fixed_sequence", "multistart", "hoeffding_bentkus", "naive_scan", "empirical")


def oracle_automation_share(confidences: Any, correct: Any, target_accuracy: float) -> float:
    """Share of a population the loosest threshold whose accuracy over the WHOLE population
    reaches the target automates: what a certificate would automate if the population were
    known (the yardstick of `simulate_guarantee`'s automation shares); 0 if none reaches it."""
    target = check_target(target_accuracy)
    _, n_auto, n_err = selective_counts(confidences, correct)
    # The same tolerance as the failure count: 285 / 300 reaches 0.95.
    reached = np.flatnonzero(1 - n_err / n_auto >= target - 1e-12)
    return float(n_auto[reached[-1]] / n_auto[-1]) if reached.size else 0.0


def simulate_guarantee(
    confidences: Any,
    correct: Any,
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
    confidences, correct : array-like of shape (N,)
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
    conf, ok = check_confidences(confidences, correct)
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
            return naive_scan_threshold(c, y, target, delta)
        if rule == "empirical":
            return empirical_threshold(c, y, target)
        method = rule if rule in METHODS else DEFAULT_METHOD
        p_value = "hoeffding_bentkus" if rule == "hoeffding_bentkus" else "binomial"
        return certify_threshold(c, y, target, delta, method=method, p_value=p_value, starts=starts,
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
