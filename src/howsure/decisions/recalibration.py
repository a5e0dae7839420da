"""Fit a calibrator on one part of the labelled items and certify the policy on the other, and
choose those parts among reviewed items so the certificate still sees an iid sample.

The one place that does it, for ``howsure demo``, ``howsure thresholds --fit-calibrator`` and
``howsure recalibrate``: the certificate assumes the calibrator was fitted on other items than
the ones certifying the threshold, and here that holds by construction. The policy file states
the split in ``guarantee.calibrator_fit``.

It also holds the two checks ``howsure thresholds`` makes of a calibrator brought from elsewhere
(`check_calibrator_overlap`: were these items among its fitting items?) and of raw scores
(`raw_calibration_note`: are they so badly calibrated that a threshold on them wastes labels?).
Numbers in, numbers out: the review store's side is `howsure.service.feedback`.

Which reviewed items may certify
--------------------------------
The certificate (`howsure.decisions.policy.certify_policy`) needs an iid sample of the population the
policy will decide on. The labelled items in the store are not one: every item routed to
review is queued (all low-confidence items), but an auto-handled item is queued only when the
service drew it for audit, with probability ``audit_rate``. Certifying on all reviewed items
would over-represent the low-confidence ones.

So the certification set keeps each item of the population with the same probability
``certify_share`` (at most the lowest audit rate any auto item was decided at, by default
equal to it):

* an audited item with probability ``certify_share / audit_rate`` of that item: weighting by
  the inverse of the chance it was drawn, done by thinning so that the certificate still sees
  an unweighted iid sample (every item drawn at the lowest rate certifies by default);
* a reviewed review-routed item with probability ``certify_share``.

The service stores with each auto item the audit rate it ran with (``items.audit_rate``), so
these chances are exact, also when the service ran with different rates over time. For items
stored before that column existed the rate is estimated, as audited / auto-handled items
among them (or given with ``audit_rate=``); the report says which.

Both draws are made by a hash of the item's id (`hash_share`): independent of text, label and
confidence, the same on every run with the same seed. Every other reviewed item fits the
calibrator, so the two sets are disjoint, as the certificate's assumption requires. The report
says how many items of each source went where, how many queued items are still unreviewed (the
certificate treats the reviewed ones as representative of them), and how the audit rate was
known.

The fit set is mostly review-routed (low-confidence) items; calibrators that extrapolate
smoothly (temperature, Platt) carry that to high confidences better than step functions. Pass
a ``certify_share`` below the audit rate to move some audited items into the fit set, at the
cost of a smaller certification set.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from howsure.calibration import fit_calibrator, overlap_with_fit_items
from howsure.calibration.fitting import fit_fingerprint
from howsure.decisions.policy import Policy
from howsure.decisions.policy_certification import certify_policy
from howsure.errors import DataError, PolicyError
from howsure.stats.metrics import expected_calibration_error
from howsure.stats.splits import calibration_test_split

# Raw top-label confidences whose expected calibration error (15 equal-width bins) is above
# this are called badly calibrated: a 90 % threshold on them means something else entirely.
RAW_ECE_WARNING = 0.05
DEFAULT_TEST_SIZE = 0.5  # share of the items that certifies; the rest fits the calibrator
SOURCES = ("review", "audit")
MIN_FIT_ITEMS = 50  # fewer: warn that the calibrator is rough (it is still honest)
NO_AUDIT_CERTIFY_SHARE = 0.5  # nothing was automated: every item was reviewed, split them in half


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
    truth: Any,
    scores: Any,
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
    truth : array-like of shape (n,), int
        True class indices.
    scores : array-like of shape (n, K)
        Raw label probabilities.
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
        Passed to `howsure.decisions.policy.certify_policy` (labels, task, target_accuracy, ...).
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth)
    fit_idx, certify_idx = np.asarray(fit_idx, dtype=np.int64), np.asarray(certify_idx, dtype=np.int64)
    if np.intersect1d(fit_idx, certify_idx).size:
        raise PolicyError("the fitting and certification parts share items; the certificate needs disjoint parts")
    if certify_idx.size == 0:
        raise PolicyError("no items are left to certify on; label more items")
    fitted = fit_calibrator(calibrator, scores[fit_idx], truth[fit_idx], seed=seed,
                            texts=_subset(texts, fit_idx), ids=_subset(ids, fit_idx))
    policy = certify_policy(truth[certify_idx], scores[certify_idx], calibrator=fitted, **certify_kwargs)
    policy.guarantee["calibrator_fit"] = {
        "calibrator": calibrator, "chosen": getattr(fitted, "chosen_", None),
        "n_fit": int(fit_idx.size), "n_certify": int(certify_idx.size), "split": how,
    }
    policy._validate()
    return SplitCertification(policy, fitted, fit_idx, certify_idx)


def certify_with_split(
    truth: Any,
    scores: Any,
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
    truth = np.asarray(truth)
    if truth.dtype.kind not in "iu":
        raise PolicyError(f"true labels must be class indices to split by, got dtype {truth.dtype}")
    split = calibration_test_split(truth, test_size=test_size, seed=seed, groups=texts)
    how = (f"calibrator fitted on {split.cal_idx.size} items, threshold certified on the other "
           f"{split.test_idx.size} (share {test_size:g}, seed {seed}, stratified by label"
           + (", duplicate texts on one side)" if texts is not None else ")"))
    return certify_on_parts(truth, scores, split.cal_idx, split.test_idx, calibrator=calibrator, seed=seed,
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


def raw_calibration_note(correct: Any, confidence: Any) -> str | None:
    """A sentence when raw top-label confidences are badly calibrated (ECE over
    `RAW_ECE_WARNING`), None otherwise."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    ece = expected_calibration_error(correct, confidence, n_bins=15)
    if ece <= RAW_ECE_WARNING:
        return None
    return (f"the raw confidences are badly calibrated: expected calibration error {ece:.3g} "
            f"(above {RAW_ECE_WARNING}; mean confidence {confidence.mean():.3f}, accuracy "
            f"{correct.mean():.3f}); --fit-calibrator auto fits a calibrator on part of these items "
            "and certifies on the rest")


def hash_share(item_id: Hashable, seed: int = 0) -> float:
    """A number in [0, 1) fixed by ``item_id`` and ``seed``, uniform over ids: the coin that
    decides whether a reviewed item certifies or fits.

    A hash rather than a random generator so an item lands on the same side every time the
    store is recalibrated with the same seed, whatever else was reviewed in between.
    """
    digest = hashlib.sha256(f"howsure.recalibrate:{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_rate(value: Any, name: str) -> float:
    """``value`` as a float if it is a rate in (0, 1], else `PolicyError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1 or math.isnan(value):
        raise PolicyError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class CertificationSplit:
    """Indices of the reviewed items that fit the calibrator and of those that certify.

    ``certify_share`` is each population item's chance of certifying; ``audit_keep`` the chance
    an audited item certifies given it was audited (``certify_share / audit_rate``; None when
    the audited items were drawn at different rates, or there are none).
    """

    fit: np.ndarray
    certify: np.ndarray
    certify_share: float
    audit_keep: float | None

    def counts(self, sources: Sequence[str]) -> dict[str, dict[str, int]]:
        """{"fit": {"n", "review", "audit"}, "certify": {...}}."""
        source_array = np.asarray(sources, dtype=object)
        out = {}
        for name, index in (("fit", self.fit), ("certify", self.certify)):
            chosen = source_array[index]
            out[name] = {"n": int(index.size), **{s: int(np.sum(chosen == s)) for s in SOURCES}}
        return out


def split_for_recalibration(
    item_ids: Sequence[Hashable],
    sources: Sequence[str],
    *,
    audit_rate: float | None,
    certify_share: float | None = None,
    seed: int = 0,
) -> CertificationSplit:
    """Choose which reviewed items certify (an iid share of the population) and which fit.

    Parameters
    ----------
    item_ids : sequence of shape (n,)
        Store ids of the reviewed items (the hash's input).
    sources : sequence of str, shape (n,)
        ``"review"`` (routed to review: every such item was queued) or ``"audit"`` (auto-handled
        and drawn for audit with probability ``audit_rate``).
    audit_rate : float in (0, 1], sequence of shape (n,), or None
        Chance an auto-handled item was audited: one rate for every item, or each item's own
        (the entries of review items are not used and may be None). None when nothing was
        auto-handled; then no item may be an audit item.
    certify_share : float in (0, 1], optional
        Chance any population item certifies; at most the (lowest) audit rate. Default: that
        rate (every audited item drawn at it certifies), or 0.5 when nothing was auto-handled.
    seed : int
        Salt of `hash_share`.

    Returns
    -------
    CertificationSplit
    """
    sources = [str(s) for s in sources]
    if len(sources) != len(item_ids):
        raise DataError(f"got {len(item_ids)} item ids but {len(sources)} sources")
    unknown = next((s for s in sources if s not in SOURCES), None)
    if unknown is not None:
        raise DataError(f"reviewed item source {unknown!r} is not one of {list(SOURCES)}")
    rates, lowest = _audit_rates(audit_rate, sources)
    if certify_share is None:
        certify_share = lowest if lowest is not None else NO_AUDIT_CERTIFY_SHARE
    certify_share = check_rate(certify_share, "certify_share")
    if lowest is not None:
        check_certify_share(certify_share, lowest)
    audited = np.array([s == "audit" for s in sources], dtype=bool)
    distinct = set(rates[audited].tolist()) if audited.any() else ({lowest} if lowest is not None else set())
    audit_keep = certify_share / distinct.pop() if len(distinct) == 1 else None
    shares = np.array([hash_share(i, seed) for i in item_ids], dtype=np.float64)
    limits = np.where(audited, certify_share / np.where(audited, rates, 1.0), certify_share)
    certify = shares < limits
    return CertificationSplit(np.flatnonzero(~certify), np.flatnonzero(certify), certify_share, audit_keep)


def check_certify_share(certify_share: float, lowest_audit_rate: float) -> None:
    """`PolicyError` when ``certify_share`` exceeds the lowest audit rate of the population."""
    if certify_share > lowest_audit_rate:
        raise PolicyError(
            f"certify_share {certify_share:g} exceeds the audit rate {lowest_audit_rate:g}: auto-handled "
            "items were labelled only at the audit rate, so no larger share of the population can "
            "be certified on without over-weighting the reviewed low-confidence items"
        )


def _audit_rates(audit_rate: Any, sources: Sequence[str]) -> tuple[np.ndarray, float | None]:
    """(each item's audit rate, NaN for review items; the lowest rate, None without one)."""
    n = len(sources)
    if audit_rate is None:
        if "audit" in sources:
            raise PolicyError("audited items need the audit rate they were drawn at; got audit_rate=None")
        return np.full(n, np.nan), None
    if isinstance(audit_rate, (int, float)) and not isinstance(audit_rate, bool):
        rate = check_rate(audit_rate, "audit_rate")
        return np.where(np.array([s == "audit" for s in sources], dtype=bool), rate, np.nan), rate
    if isinstance(audit_rate, (str, bytes)) or not isinstance(audit_rate, Sequence | np.ndarray) \
            or len(audit_rate) != n:
        raise PolicyError(f"audit_rate must be a number in (0, 1], None, or one rate per item ({n}), "
                          f"got {audit_rate!r:.80}")
    rates = np.full(n, np.nan)
    for position, (source, rate) in enumerate(zip(sources, audit_rate)):
        if source == "audit":
            rates[position] = check_rate(rate, f"audit_rate of audited item {position}")
    audited = rates[~np.isnan(rates)]
    return rates, (float(audited.min()) if audited.size else None)


def recalibrate_arrays(
    labels: Any,
    raw_probabilities: Any,
    item_ids: Sequence[Hashable],
    sources: Sequence[str],
    *,
    label_names: Sequence[str],
    audit_rate: float | None,
    certify_share: float | None = None,
    calibrator: str = "auto",
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    seed: int = 0,
    texts: Sequence[str] | None = None,
    **certify_kwargs: Any,
) -> tuple[Policy, dict[str, Any]]:
    """Refit a calibrator and certify a policy from reviewed items (no store needed).

    Parameters
    ----------
    labels : array-like of shape (n,), int
        The reviewers' labels as column indices.
    raw_probabilities : array-like of shape (n, K)
        The model's raw label probabilities, columns in ``label_names`` order.
    item_ids, sources, audit_rate, certify_share, seed
        See `split_for_recalibration`.
    calibrator : str
        A name of `howsure.calibration.CALIBRATOR_NAMES` or ``"none"``.
    texts : sequence of str, optional
        Groups for ``auto``'s folds.
    **certify_kwargs
        Passed to `howsure.decisions.policy.certify_policy` (task, model_id, method, p_value, per_class,
        cost, version).

    Returns
    -------
    policy : Policy
        Certified on the certification split with the calibrator fitted on the fit split.
    report : dict
        Counts per split and source, the shares used, the calibrator and the certificate.
    """
    scores = np.asarray(raw_probabilities, dtype=np.float64)
    truth = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != truth.shape[0] or scores.shape[1] != len(label_names):
        raise DataError(
            f"expected (n, {len(label_names)}) probabilities and n labels, got shapes {scores.shape} and {truth.shape}"
        )
    split = split_for_recalibration(item_ids, sources, audit_rate=audit_rate, certify_share=certify_share, seed=seed)
    if split.certify.size == 0:
        raise PolicyError(
            f"none of the {len(item_ids)} reviewed items fell into the certification share "
            f"({split.certify_share:g}); review more items (audited ones certify first)"
        )
    if split.fit.size == 0 and calibrator != "none":
        raise DataError(f"no reviewed items are left to fit the {calibrator!r} calibrator; review more "
                        "items, lower certify_share, or use calibrator='none'")
    certified = certify_on_parts(
        truth, scores, split.fit, split.certify, calibrator=calibrator, seed=seed, texts=texts,
        ids=list(item_ids), how=f"calibrator fitted on reviewed items outside the certification share "
        f"{split.certify_share:g} (seed {seed})",
        target_accuracy=target_accuracy, delta=delta, labels=list(label_names), **certify_kwargs,
    )
    policy, fitted = certified.policy, certified.calibrator
    if texts is not None:  # a later fine-tune keeps these out of training (howsure finetune --db)
        policy.certified_on = fit_fingerprint(_subset(texts, split.certify))
    guarantee = policy.guarantee
    report: dict[str, Any] = {
        "n_reviewed": len(item_ids),
        "audit_rate": _audit_rates(audit_rate, sources)[1],
        "certify_share": split.certify_share,
        "audit_keep": split.audit_keep,
        "seed": seed,
        **split.counts(sources),
        "calibrator": calibrator if fitted is None else fitted.name,
        "calibrator_chosen": getattr(fitted, "chosen_", None),
        "calibrator_explanation": getattr(fitted, "explanation_", None),
        "rule": policy.rule,
        "threshold": policy.threshold,
        "class_thresholds": policy.class_thresholds,
        "certified": bool(guarantee.get("certified")),
        "target_accuracy": guarantee["target_accuracy"],
        "delta": guarantee["delta"],
        "automation_rate": guarantee.get("automation_rate"),
        "labels_needed": guarantee.get("labels_needed"),
        "policy_id": policy.policy_id,
    }
    return policy, report
