"""Label-free drift check: are live confidences still distributed like the certified ones?

The numbers (PSI, KS, the verdict) live in `howsure.stats.drift`; this module reads the two
samples from the review store::

    from howsure.service.drift import drift_report
    report = drift_report(store)          # live items of the active policy vs its reference
    if report.alarm:
        print(report.message, report.suggestion)

The reference is the policy's ``reference`` field (`howsure.policy.reference_quantiles`): the
calibrated top-label confidences of its certification items, at most 2,000 quantiles. The live
confidences are the stored calibrated confidences of items decided under the same policy
version, so both sides went through the same calibrator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from howsure.errors import DataError
from howsure.stats.drift import (
    PSI_SMOOTHING,
    DriftReport,
    check_drift_settings,
    check_drift,
    ks_test,
    population_stability_index,
    quantile_bins,
)

if TYPE_CHECKING:
    from howsure.service.store import ReviewStore

# The drift numbers stay importable from here (tests, docs/feedback.md).
__all__ = [
    "PSI_SMOOTHING", "DriftReport", "check_drift", "drift_report", "ks_test", "population_stability_index",
    "quantile_bins",
]


def drift_report(
    store: "ReviewStore",
    *,
    policy_version: int | None = None,
    window: int = 1000,
    psi_alarm: float = 0.2,
    ks_alpha: float = 0.01,
    min_live: int = 100,
) -> DriftReport:
    """Drift of the newest ``window`` live confidences of a policy version against its
    reference; the active version by default.

    Label-free: reads only the stored calibrated confidences of decided items.
    """
    from howsure.service.db import safe_url

    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise DataError(f"window must be an integer >= 1, got {window!r}")
    check_drift_settings(psi_alarm, ks_alpha, min_live)
    if policy_version is None:
        record = store.active_policy()
        if record is None:
            return DriftReport(False, None, None, None, 0, 0, "no active policy in the store",
                               psi_alarm=float(psi_alarm), ks_alpha=float(ks_alpha))
    else:
        record = store.get_policy(policy_version)
    live = store.live_confidences(policy_version=record.version, limit=window)
    return check_drift(
        record.body.get("reference"), live, psi_alarm=psi_alarm, ks_alpha=ks_alpha,
        min_live=min_live, policy_version=record.version,
        recalibrate_hint=f"howsure recalibrate --db {safe_url(store.engine)}",
    )
