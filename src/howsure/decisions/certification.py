"""Certify thresholds with Learn-then-Test: one for all items, one per predicted label, or the
two sides of a binary policy.

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

`howsure.decisions.simulation.naive_scan_threshold` (test every threshold at level ``delta``, keep the loosest that
passes) and `empirical_threshold` (keep the loosest whose calibration accuracy reaches the
target) are NOT valid; they exist for the simulation in ``tests/test_guarantee_simulation.py``
that shows them failing more often.
"""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from howsure.core.validation import (
    check_choice,
    check_class_indices,
    check_confidences,
    check_delta,
    check_probabilities,
    check_target,
)
from howsure.decisions.planning import labels_needed
from howsure.decisions.pvalues import DEFAULT_METHOD, METHODS, p_value_function
from howsure.decisions.selective import selective_counts
from howsure.decisions.walks import DEFAULT_STARTS, certify_walk
from howsure.errors import PolicyError


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
    correct: Any,
    confidences: Any,
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
    correct : array-like of shape (n,)
        Whether each predicted label was right.
    confidences : array-like of shape (n,)
        Confidence of each calibration item's predicted label. Calibrated or not: the guarantee
        holds for whatever confidence is given, as long as the same function produces the
        confidences of future items and it was not fitted on these items.
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
    check_choice(method, METHODS, "certification method")
    p_func = p_value_function(p_value)
    thresholds, n_auto, n_err = selective_counts(correct, confidences)
    alpha = 1 - target
    n = int(n_auto[-1])
    chosen, used_starts = certify_walk(method, thresholds, n_auto, n_err, alpha, delta, p_func, starts)

    if chosen is None:
        needed = None
        if plan_if_uncertified:
            needed = labels_needed(correct, confidences, target, delta, p_value=p_value, method=method,
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
    true_labels: Any,
    probabilities: Any,
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
    true_labels : array-like of shape (n,)
        Class indices in [0, K).
    probabilities : array-like of shape (n, K)
        Label probabilities (calibrated or raw) of each calibration item.
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
                truth[mask] == index, confidence[mask], target, level, method=method, p_value=p_value,
                starts=starts,
            )
            if mask.any()
            else None
        )
    return PerClassCertificate(labels=names, certificates=certificates, delta=delta, joint=joint)



@dataclass(frozen=True)
class TwoSidedCertificate:
    """A binary policy: auto-accept when P(positive) >= ``accept_above``, auto-reject when
    P(positive) <= ``reject_below``, review the middle. Either side may be None (never)."""

    accept_above: float | None
    reject_below: float | None
    per_class: PerClassCertificate


def certify_two_sided(
    is_positive: Any,
    positive_probability: Any,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    *,
    method: str = DEFAULT_METHOD,
    p_value: str = "binomial",
) -> TwoSidedCertificate:
    """Two-sided binary policy with jointly certified precision on both sides.

    Parameters
    ----------
    is_positive : array-like of shape (n,)
        The true answer, bool or 0/1.
    positive_probability : array-like of shape (n,)
        P(positive) per calibration item.

    Returns
    -------
    TwoSidedCertificate
        With probability >= ``1 - delta`` the auto-accepted items are >= target positive AND
        the auto-rejected items are >= target negative (each side at ``delta / 2``).
    """
    positive, p = check_confidences(is_positive, positive_probability, names=("is_positive", "positive_probability"))
    per_class = certify_per_class(
        positive.astype(np.int64), np.column_stack([1 - p, p]), target_accuracy, delta,
        labels=("negative", "positive"), joint=True, method=method, p_value=p_value,
    )
    t_neg, t_pos = per_class.thresholds["negative"], per_class.thresholds["positive"]
    return TwoSidedCertificate(
        accept_above=t_pos, reject_below=None if t_neg is None else 1 - t_neg, per_class=per_class
    )

