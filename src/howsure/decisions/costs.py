"""What automation costs: the cost model, the cost-minimising threshold (within a certified
range or not) and the table of candidate thresholds a manager compares, with bootstrap
intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from howsure.core.validation import check_confidences
from howsure.decisions.certification import ThresholdCertificate
from howsure.decisions.selective import selective_counts
from howsure.errors import PolicyError

# Percentile interval of the bootstrap used for cost, automation and error intervals.
INTERVAL_LEVEL = 0.95


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
    correct: Any,
    confidences: Any,
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
    correct, confidences : array-like of shape (n,)
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
    ok, conf = check_confidences(correct, confidences)
    error_cost = cost.error_costs(predicted_labels, conf.size)
    thresholds, _, _ = selective_counts(ok, conf)
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
    correct: Any,
    confidences: Any,
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
    ok, conf = check_confidences(correct, confidences)
    error_cost = cost.error_costs(predicted_labels, conf.size)
    sorted_desc = np.sort(conf)[::-1]
    entries: dict[float | None, str] = {None: "review all"}
    for share in shares:
        if not 0 < share < 1:
            raise PolicyError(f"automation shares must be in (0, 1), got {share!r}")
        entries.setdefault(float(sorted_desc[max(0, int(round(share * conf.size)) - 1)]), f"~{share:.0%}")
    free = optimal_threshold(ok, conf, cost, predicted_labels=predicted_labels, n_bootstrap=1, seed=seed)
    entries[free.best.threshold] = "cheapest"
    if certificate is not None and certificate.certified:
        entries[certificate.threshold] = "certified"
        bound = optimal_threshold(ok, conf, cost, predicted_labels=predicted_labels,
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

