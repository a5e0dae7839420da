"""Fit a calibrator on one part of the labelled items and certify the policy on the other.

The one place that does it, for ``howsure demo``, ``howsure thresholds --fit-calibrator`` and
``howsure recalibrate``: the certificate assumes the calibrator was fitted on other items than
the ones certifying the threshold, and here that holds by construction. The policy file states
the split in ``guarantee.calibrator_fit``.

It also holds the two checks ``howsure thresholds`` makes of a calibrator brought from elsewhere
(`check_calibrator_overlap`: were these items among its fitting items?) and of raw scores
(`raw_calibration_note`: are they so badly calibrated that a threshold on them wastes labels?).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from howsure.errors import PolicyError

# Raw top-label confidences whose expected calibration error (15 equal-width bins) is above
# this are called badly calibrated: a 90 % threshold on them means something else entirely.
RAW_ECE_WARNING = 0.05
DEFAULT_TEST_SIZE = 0.5  # share of the items that certifies; the rest fits the calibrator


@dataclass
class SplitCertification:
    """What `certify_with_split` did: the policy, the fitted calibrator and the two parts."""

    policy: Any
    calibrator: Any
    fit_idx: np.ndarray
    certify_idx: np.ndarray


def _subset(values: Sequence[Any] | None, index: np.ndarray) -> list[Any] | None:
    return None if values is None else [values[i] for i in index]


def certify_on_parts(
    scores: Any,
    truth: Any,
    fit_idx: Any,
    certify_idx: Any,
    *,
    calibrator: str,
    seed: int = 0,
    texts: Sequence[str] | None = None,
    ids: Sequence[Hashable] | None = None,
    how: str = "",
    **certify_kwargs: Any,
) -> SplitCertification:
    """Fit ``calibrator`` (a name, or ``"none"``) on the items ``fit_idx`` and certify a policy on
    the items ``certify_idx``.

    Parameters
    ----------
    scores : array-like of shape (n, K)
        Raw label probabilities.
    truth : array-like of shape (n,), int
        True class indices.
    fit_idx, certify_idx : array-like of int
        Disjoint item indices.
    seed : int
        Seed of ``auto``'s folds.
    texts, ids : sequences of length n, optional
        Fingerprint the fitting items (``calibrator.fit_items``) and keep duplicate texts in
        one of ``auto``'s folds.
    how : str
        How the parts were drawn, stated in the policy's ``guarantee.calibrator_fit``.
    **certify_kwargs
        Passed to `howsure.policy.certify_policy` (labels, task, target_accuracy, ...).
    """
    from howsure.calibration import fit_calibrator
    from howsure.policy import certify_policy

    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth)
    fit_idx, certify_idx = np.asarray(fit_idx, dtype=np.int64), np.asarray(certify_idx, dtype=np.int64)
    if np.intersect1d(fit_idx, certify_idx).size:
        raise PolicyError("the fitting and certification parts share items; the certificate needs disjoint parts")
    if certify_idx.size == 0:
        raise PolicyError("no items are left to certify on; label more items")
    fitted = fit_calibrator(calibrator, scores[fit_idx], truth[fit_idx], seed=seed,
                            texts=_subset(texts, fit_idx), ids=_subset(ids, fit_idx))
    policy = certify_policy(scores[certify_idx], truth[certify_idx], calibrator=fitted, **certify_kwargs)
    policy.guarantee["calibrator_fit"] = {
        "calibrator": calibrator, "chosen": getattr(fitted, "chosen_", None),
        "n_fit": int(fit_idx.size), "n_certify": int(certify_idx.size), "split": how,
    }
    policy._validate()
    return SplitCertification(policy, fitted, fit_idx, certify_idx)


def certify_with_split(
    scores: Any,
    truth: Any,
    *,
    calibrator: str,
    test_size: float = DEFAULT_TEST_SIZE,
    seed: int = 0,
    texts: Sequence[str] | None = None,
    ids: Sequence[Hashable] | None = None,
    **certify_kwargs: Any,
) -> SplitCertification:
    """Split the items (stratified by label, exact duplicate texts on one side, seeded), fit
    ``calibrator`` on one part and certify on the ``test_size`` share; see `certify_on_parts`."""
    from howsure.splits import calibration_test_split

    truth = np.asarray(truth)
    if truth.dtype.kind not in "iu":
        raise PolicyError(f"true labels must be class indices to split by, got dtype {truth.dtype}")
    split = calibration_test_split(truth, test_size=test_size, seed=seed, groups=texts)
    how = (f"calibrator fitted on {split.cal_idx.size} items, threshold certified on the other "
           f"{split.test_idx.size} (share {test_size:g}, seed {seed}, stratified by label"
           + (", duplicate texts on one side)" if texts is not None else ")"))
    return certify_on_parts(scores, truth, split.cal_idx, split.test_idx, calibrator=calibrator, seed=seed,
                            texts=texts, ids=ids, how=how, **certify_kwargs)


def check_calibrator_overlap(calibrator: Any, *, texts: Sequence[str] | None, ids: Sequence[Hashable] | None,
                             allow_overlap: bool, source: str = "the input") -> dict[str, Any]:
    """Refuse to certify on items the calibrator was fitted on, unless ``allow_overlap``.

    Returns the statement a policy stores as ``guarantee.calibrator_overlap``: whether it could
    be checked, by what, how many items overlapped, whether that was allowed.

    Raises
    ------
    PolicyError
        Some items of ``source`` were among the calibrator's fitting items.
    """
    from howsure.calibration import overlap_with_fit_items

    fingerprint = getattr(calibrator, "fit_items", None)
    overlap = overlap_with_fit_items(calibrator, texts=texts, ids=ids)
    n = len(texts) if texts is not None else len(ids) if ids is not None else None
    statement = {"checked": overlap is not None, "by": None if fingerprint is None else fingerprint["key"],
                 "n_overlap": overlap, "allowed": bool(allow_overlap)}
    if overlap and not allow_overlap:
        raise PolicyError(
            f"{overlap} of the {n} items of {source} are among the {fingerprint['n_items']} items the "
            f"calibrator was fitted on (matched by {fingerprint['key']}), so the certificate would not "
            "hold; certify on other labelled items, use --fit-calibrator NAME to fit and certify on "
            "disjoint parts, or pass --allow-overlap to certify anyway (the policy file then says so)"
        )
    return statement


def raw_calibration_note(confidence: Any, correct: Any) -> str | None:
    """A sentence when raw top-label confidences are badly calibrated (ECE over
    `RAW_ECE_WARNING`), None otherwise."""
    from howsure.metrics import expected_calibration_error

    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    ece = expected_calibration_error(correct, confidence, n_bins=15)
    if ece <= RAW_ECE_WARNING:
        return None
    return (f"the raw confidences are badly calibrated: expected calibration error {ece:.3g} "
            f"(above {RAW_ECE_WARNING}; mean confidence {confidence.mean():.3f}, accuracy "
            f"{correct.mean():.3f}); --fit-calibrator auto fits a calibrator on part of these items "
            "and certifies on the rest")
