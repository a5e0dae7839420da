"""Label-free drift numbers: are live confidences still distributed like the certified ones?

The policy's certificate assumes future items come from the population its calibration items
were drawn from. Labels arrive late (reviews) or never (auto-handled items), but the model's
calibrated confidence is known for every item at once, so a shift of its distribution is the
earliest visible sign that the assumption broke. Two measures:

* `population_stability_index` (PSI): bins are the reference's quantiles, so each holds an
  equal share of the certified items; 0.1-0.2 is a moderate shift, above 0.2 a large one (the
  conventional credit-scoring reading). Insensitive to sample size.
* `ks_test`: scipy's two-sample Kolmogorov-Smirnov test; its p-value says how surprising the
  largest gap between the two empirical distribution functions is if nothing changed.

`check_drift` compares two samples and words the verdict; `howsure.service.drift.drift_report`
reads both samples from the review store and calls it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from howsure.core.validation import as_float_array, first_bad
from howsure.errors import DataError, ScoresError

PSI_SMOOTHING = 0.5  # pseudo-count per bin, so an empty bin gives a finite PSI


def _sample(values: Any, name: str) -> np.ndarray:
    array = as_float_array(values, lambda _exc: f"{name} confidences must be numbers, got {values!r:.80}")
    if array.ndim != 1 or array.size == 0:
        raise ScoresError(f"{name} confidences must be a non-empty 1-d sequence, got shape {array.shape}")
    bad = first_bad(~np.isfinite(array))
    if bad is not None:
        raise ScoresError(f"{name} confidence {bad[0]} is {float(array[bad])!r}; expected a finite number")
    return array


def quantile_bins(reference: Any, values: Any, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count reference and live values in bins cut at the reference's quantiles.

    Parameters
    ----------
    reference, values : array-like of shape (n,) and (m,)
    n_bins : int >= 2
        Bins wanted; fewer result when quantiles coincide (a calibrator with steps, such as
        isotonic regression, repeats values), because equal edges and bins without reference
        items are merged.

    Returns
    -------
    edges : ndarray of shape (b - 1,)
        Inner edges; a value equal to an edge counts in the bin above it.
    reference_counts, value_counts : ndarray of shape (b,), int
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise DataError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    ref = _sample(reference, "reference")
    live = _sample(values, "live")
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    # With repeated values interpolated quantiles can fall between two steps and leave a bin
    # without reference items; dropping its upper edge merges it into the next bin, so every
    # bin holds reference mass (the last one always does: it contains the maximum).
    counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    edges = edges[counts[:-1] > 0]
    n = edges.size + 1
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=n)
    live_counts = np.bincount(np.searchsorted(edges, live, side="right"), minlength=n)
    return edges, ref_counts, live_counts


def population_stability_index(reference: Any, live: Any, n_bins: int = 10) -> float:
    """PSI of ``live`` against ``reference``: ``sum((a - e) * ln(a / e))`` over bins.

    Parameters
    ----------
    reference : array-like of shape (n,)
        Confidences at certification (or any baseline sample).
    live : array-like of shape (m,)
    n_bins : int
        Bins are cut at the reference's ``n_bins``-quantiles (see `quantile_bins`).

    Returns
    -------
    float >= 0
        ``e`` and ``a`` are the reference and live shares per bin, each smoothed with
        `PSI_SMOOTHING` pseudo-items per bin so an empty bin costs a large but finite amount.
    """
    _, ref_counts, live_counts = quantile_bins(reference, live, n_bins)
    expected = (ref_counts + PSI_SMOOTHING) / (ref_counts.sum() + PSI_SMOOTHING * ref_counts.size)
    actual = (live_counts + PSI_SMOOTHING) / (live_counts.sum() + PSI_SMOOTHING * live_counts.size)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_test(reference: Any, live: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test (scipy's ``ks_2samp``, two-sided, exact or asymptotic
    as scipy chooses).

    Returns
    -------
    statistic : float in [0, 1]
        Largest gap between the two empirical distribution functions.
    p_value : float in [0, 1]
        With ties (step calibrators) the test is conservative: p-values come out too large,
        never too small, so an alarm is not made more likely by ties.
    """
    from scipy.stats import ks_2samp  # scipy is slow to import; only the check needs it

    result = ks_2samp(_sample(reference, "reference"), _sample(live, "live"))
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class DriftReport:
    """Outcome of `drift_report` / `check_drift`.

    ``psi``, ``ks_statistic`` and ``ks_p_value`` are None when nothing was compared (no
    reference in the policy, or fewer live items than ``min_live``); ``alarm`` is then False
    and ``message`` says why.
    """

    alarm: bool
    psi: float | None
    ks_statistic: float | None
    ks_p_value: float | None
    n_live: int
    n_reference: int
    message: str
    suggestion: str | None = None
    policy_version: int | None = None
    psi_alarm: float = 0.2
    ks_alpha: float = 0.01
    live_median: float | None = None
    reference_median: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (keys: every field)."""
        return asdict(self)


def check_drift_settings(psi_alarm: float, ks_alpha: float, min_live: int) -> None:
    if isinstance(psi_alarm, bool) or not isinstance(psi_alarm, (int, float)) or not psi_alarm > 0:
        raise DataError(f"psi_alarm must be a number > 0, got {psi_alarm!r}")
    if isinstance(ks_alpha, bool) or not isinstance(ks_alpha, (int, float)) or not 0 < ks_alpha < 1:
        raise DataError(f"ks_alpha must be a number in (0, 1), got {ks_alpha!r}")
    if isinstance(min_live, bool) or not isinstance(min_live, int) or min_live < 2:
        raise DataError(f"min_live must be an integer >= 2, got {min_live!r}")


def check_drift(
    reference: Any,
    live: Any,
    *,
    psi_alarm: float = 0.2,
    ks_alpha: float = 0.01,
    min_live: int = 100,
    n_bins: int = 10,
    policy_version: int | None = None,
    recalibrate_hint: str = "howsure recalibrate",
) -> DriftReport:
    """Compare live confidences with the reference; alarm when PSI >= ``psi_alarm`` or the KS
    p-value < ``ks_alpha``.

    Parameters
    ----------
    reference : array-like of shape (n,) or None
        None (a policy certified before references were kept) gives no alarm and a message.
    live : array-like of shape (m,)
        May be empty; fewer than ``min_live`` values give no alarm and a message, because a
        handful of items says little and would alarm on noise.
    recalibrate_hint : str
        The command named in the suggestion when the alarm rings.
    """
    check_drift_settings(psi_alarm, ks_alpha, min_live)
    live = np.asarray(live, dtype=np.float64).ravel()
    n_live = int(live.size)
    common = {"policy_version": policy_version, "psi_alarm": float(psi_alarm), "ks_alpha": float(ks_alpha)}
    which = "" if policy_version is None else f" of policy version {policy_version}"
    if reference is None:
        return DriftReport(
            False, None, None, None, n_live, 0,
            f"the policy{which} has no reference distribution (certified before references were "
            "kept); recalibrate to get one",
            suggestion=recalibrate_hint, **common,
        )
    ref = _sample(reference, "reference")
    if n_live < min_live:
        return DriftReport(
            False, None, None, None, n_live, int(ref.size),
            f"only {n_live} live item(s){which}; drift is checked from {min_live} on",
            reference_median=float(np.median(ref)), **common,
        )
    psi = population_stability_index(ref, live, n_bins)
    statistic, p_value = ks_test(ref, live)
    live_median, ref_median = float(np.median(live)), float(np.median(ref))
    reasons = []
    if psi >= psi_alarm:
        reasons.append(f"PSI {psi:.3f} >= {psi_alarm:g}")
    if p_value < ks_alpha:
        reasons.append(f"KS p-value {p_value:.2g} < {ks_alpha:g} (D = {statistic:.3f})")
    direction = "lower" if live_median < ref_median else "higher" if live_median > ref_median else "equal"
    medians = f"median confidence {live_median:.3f} live vs {ref_median:.3f} at certification"
    if reasons:
        message = (
            f"drift: the last {n_live} live confidences{which} differ from the certified ones "
            f"({'; '.join(reasons)}); {medians}, {direction} now"
        )
        suggestion = (
            f"the certificate assumes the same population: review the queue and run "
            f"`{recalibrate_hint}` once recent items are reviewed"
        )
    else:
        message = (
            f"no drift: the last {n_live} live confidences{which} match the certified ones "
            f"(PSI {psi:.3f} < {psi_alarm:g}, KS p-value {p_value:.2g} >= {ks_alpha:g}); {medians}"
        )
        suggestion = None
    return DriftReport(
        bool(reasons), psi, statistic, p_value, n_live, int(ref.size), message, suggestion,
        live_median=live_median, reference_median=ref_median, **common,
    )
