"""Learn from the reviews: refit the calibrator, re-certify the threshold, export labels.

    from howsure.service.feedback import recalibrate, export_labelled
    record, report = recalibrate(store, actor="ops")     # new active policy version
    export_labelled(store, "reviewed.jsonl")             # labelled data for fine-tuning

Which reviewed items may certify
--------------------------------
The certificate (`howsure.policy.certify_policy`) needs an iid sample of the population the
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

import csv
import hashlib
import json
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from howsure.errors import DataError, PolicyError
from howsure.spreadsheet import formula_safe

if TYPE_CHECKING:
    from howsure.policy import Policy
    from howsure.service.store import PolicyRecord, ReviewStore

SOURCES = ("review", "audit")
EXPORT_FORMATS = ("jsonl", "csv")
EXPORT_COLUMNS = ("item_id", "text", "label", "source", "reviewer", "policy_version", "prediction", "reviewed_at")
MIN_FIT_ITEMS = 50  # fewer: warn that the calibrator is rough (it is still honest)
NO_AUDIT_CERTIFY_SHARE = 0.5  # nothing was automated: every item was reviewed, split them in half


def hash_share(item_id: Hashable, seed: int = 0) -> float:
    """A number in [0, 1) fixed by ``item_id`` and ``seed``, uniform over ids: the coin that
    decides whether a reviewed item certifies or fits.

    A hash rather than a random generator so an item lands on the same side every time the
    store is recalibrated with the same seed, whatever else was reviewed in between.
    """
    digest = hashlib.sha256(f"howsure.recalibrate:{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _check_rate(value: Any, name: str) -> float:
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
    certify_share = _check_rate(certify_share, "certify_share")
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
        rate = _check_rate(audit_rate, "audit_rate")
        return np.where(np.array([s == "audit" for s in sources], dtype=bool), rate, np.nan), rate
    if isinstance(audit_rate, (str, bytes)) or not isinstance(audit_rate, Sequence | np.ndarray) \
            or len(audit_rate) != n:
        raise PolicyError(f"audit_rate must be a number in (0, 1], None, or one rate per item ({n}), "
                          f"got {audit_rate!r:.80}")
    rates = np.full(n, np.nan)
    for position, (source, rate) in enumerate(zip(sources, audit_rate)):
        if source == "audit":
            rates[position] = _check_rate(rate, f"audit_rate of audited item {position}")
    audited = rates[~np.isnan(rates)]
    return rates, (float(audited.min()) if audited.size else None)


def recalibrate_arrays(
    raw_probabilities: Any,
    labels: Any,
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
) -> tuple["Policy", dict[str, Any]]:
    """Refit a calibrator and certify a policy from reviewed items (no store needed).

    Parameters
    ----------
    raw_probabilities : array-like of shape (n, K)
        The model's raw label probabilities, columns in ``label_names`` order.
    labels : array-like of shape (n,), int
        The reviewers' labels as column indices.
    item_ids, sources, audit_rate, certify_share, seed
        See `split_for_recalibration`.
    calibrator : str
        A name of `howsure.calibration.CALIBRATOR_NAMES` or ``"none"``.
    texts : sequence of str, optional
        Groups for ``auto``'s folds.
    **certify_kwargs
        Passed to `howsure.policy.certify_policy` (task, model_id, method, p_value, per_class,
        cost, version).

    Returns
    -------
    policy : Policy
        Certified on the certification split with the calibrator fitted on the fit split.
    report : dict
        Counts per split and source, the shares used, the calibrator and the certificate.
    """
    from howsure.fit_certify import certify_on_parts

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
        scores, truth, split.fit, split.certify, calibrator=calibrator, seed=seed, texts=texts,
        ids=list(item_ids), how=f"calibrator fitted on reviewed items outside the certification share "
        f"{split.certify_share:g} (seed {seed})",
        target_accuracy=target_accuracy, delta=delta, labels=list(label_names), **certify_kwargs,
    )
    policy, fitted = certified.policy, certified.calibrator
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


# ------------------------------------------------------------------------------ with a store
def _same_model(body: dict[str, Any], active: dict[str, Any]) -> bool:
    return body.get("labels") == active.get("labels") and body.get("model_id") == active.get("model_id")


def _estimate_audit_rate(auto: int, sampled: int, what: str = "") -> tuple[float | None, str]:
    if auto == 0:
        return None, "no item was auto-handled, so there are no audit items"
    if sampled == 0:
        raise PolicyError(
            f"{auto} items{what} were auto-handled but none was drawn for audit, so the accuracy of "
            "automation cannot be measured; serve with --audit-rate > 0 and review the audit items"
        )
    return sampled / auto, f"estimated from the store: {sampled} audited of {auto} auto-handled items{what}"


def population_audit_rates(
    store: "ReviewStore", versions: Sequence[int], labelled: Sequence[Any], given: float | None,
) -> tuple[list[float | None], float | None, str]:
    """Each labelled item's audit rate, the lowest rate of any auto item of ``versions`` (what
    bounds the certify share), and how the rates were known.

    Recorded rates (``items.audit_rate``) are exact. Items stored without one take ``given``,
    else the estimate audited / auto-handled among those items. An auto item decided at rate 0
    could never be audited: then no share of the population can be certified on honestly.
    """
    from howsure.service.audit import audit_rates

    rates = audit_rates(store, versions)
    legacy, legacy_source = None, ""
    if rates.unrecorded:
        if given is not None:
            legacy, legacy_source = _check_rate(given, "audit_rate"), "given"
        else:
            mixed = " stored without their audit rate" if rates.unrecorded < rates.auto else ""
            legacy, legacy_source = _estimate_audit_rate(rates.unrecorded, rates.unrecorded_sampled, mixed)
    if rates.lowest == 0:
        raise PolicyError(
            "some items were auto-handled with audit rate 0, so none of them could be audited and the "
            "accuracy of automation on them is unknown; recalibrate only versions served with --audit-rate > 0 "
            "(--policy-version) and review their audit items"
        )
    known = [r for r in (rates.lowest, legacy) if r is not None]
    lowest = min(known) if known else None
    per_item = [item.audit_rate if item.audit_rate is not None else legacy for item in labelled]
    if rates.auto == 0:
        source = "no item was auto-handled, so there are no audit items"
    elif not rates.unrecorded:
        source = "recorded with each item"
    elif rates.unrecorded == rates.auto:
        source = legacy_source
    else:
        source = (f"recorded with {rates.auto - rates.unrecorded} items; for the {rates.unrecorded} stored "
                  f"without it: {legacy_source}")
    return per_item, lowest, source


def recalibrate(
    store: "ReviewStore",
    *,
    actor: str,
    calibrator: str = "auto",
    target_accuracy: float | None = None,
    delta: float | None = None,
    seed: int = 0,
    audit_rate: float | None = None,
    certify_share: float | None = None,
    activate: bool = True,
    note: str | None = None,
    policy_versions: Sequence[int] | None = None,
) -> tuple["PolicyRecord", dict[str, Any]]:
    """Refit the calibrator and re-certify the threshold from the store's reviewed items, and
    add the result as a new policy version (active unless ``activate=False``).

    Parameters
    ----------
    store : ReviewStore
    actor : str
        Who recalibrates; kept with the new version and in the audit log.
    calibrator : str
        Calibrator name (``auto`` picks by cross-validated log loss) or ``"none"``.
    target_accuracy, delta : float, optional
        Default: the active policy's.
    seed : int
        Salt of the fit/certify coin and seed of ``auto``'s folds.
    audit_rate : float, optional
        The audit rate the service ran with, for items stored without their own (before
        revision 0004); default: estimated as audited / auto-handled among those items.
        Recorded rates are always used as they are.
    certify_share : float, optional
        See `split_for_recalibration`.
    activate : bool
    note : str, optional
        Stored with the version; default: a sentence with the counts.
    policy_versions : sequence of int, optional
        Learn only from items these versions decided, e.g. those after a drift alarm, when the
        older items no longer come from today's population. Default: every version with the
        same labels and model as the active one.

    Returns
    -------
    record : PolicyRecord
        The new version.
    report : dict
        What `recalibrate_arrays` reports, plus the versions pooled, the previous version,
        unreviewed queue items, how the audit rate was known, and warnings.

    Notes
    -----
    Items of every policy version with the same labels and model as the active one are pooled:
    the calibrator works on the model's raw probabilities, which do not depend on the policy.
    """
    from howsure.policy import Policy

    active = store.active_policy()
    if active is None:
        raise PolicyError("the store has no active policy to recalibrate; add one first (howsure serve --policy)")
    current = Policy.from_dict(active.body)
    history = store.policy_history()
    versions = sorted(r.version for r in history if _same_model(r.body, active.body))
    if policy_versions is not None:
        wanted = sorted({int(v) for v in policy_versions})
        other = [v for v in wanted if v not in versions]
        if other or not wanted:
            raise PolicyError(
                f"policy version(s) {other or wanted} cannot be pooled: the versions of the active "
                f"policy's model {current.model_id!r} and labels are {versions}"
            )
        versions = wanted
    labelled = [item for item in store.labelled_items() if item.policy_version in versions]
    if not labelled:
        raise PolicyError(
            f"no reviewed items under policy version(s) {versions} (model {current.model_id!r}); "
            "review queued items first"
        )
    index = {label: k for k, label in enumerate(current.labels)}
    scores = np.empty((len(labelled), len(current.labels)))
    truth = np.empty(len(labelled), dtype=np.int64)
    for row, item in enumerate(labelled):
        if item.label not in index:
            raise DataError(f"item {item.item_id} was labelled {item.label!r}, not one of {current.labels}")
        try:
            scores[row] = [float(item.raw_probabilities[label]) for label in current.labels]
        except KeyError as exc:
            raise DataError(f"item {item.item_id} has no raw probability for label {exc.args[0]!r}") from None
        truth[row] = index[item.label]
    sources = [item.source for item in labelled]

    stats = [store.stats(policy_version=v) for v in versions]
    item_rates, lowest_rate, audit_rate_source = population_audit_rates(store, versions, labelled, audit_rate)
    if certify_share is None:
        certify_share = lowest_rate
    elif lowest_rate is not None:
        check_certify_share(_check_rate(certify_share, "certify_share"), lowest_rate)
    guarantee = current.guarantee
    cost = None
    if current.cost is not None:
        from howsure.decisions import CostModel

        cost = CostModel(current.cost["cost_review"], current.cost["cost_error"], current.cost["volume_per_day"])
    next_version = max(r.version for r in history) + 1
    policy, report = recalibrate_arrays(
        scores, truth, [item.item_id for item in labelled], sources,
        label_names=current.labels, audit_rate=item_rates if lowest_rate is not None else None,
        certify_share=certify_share,
        calibrator=calibrator, seed=seed, texts=[item.text for item in labelled],
        target_accuracy=guarantee["target_accuracy"] if target_accuracy is None else target_accuracy,
        delta=guarantee["delta"] if delta is None else delta,
        task=current.task, model_id=current.model_id, per_class=current.rule == "per_class",
        method=guarantee.get("method", "fixed_sequence"), p_value=guarantee.get("p_value", "binomial"),
        cost=cost, version=next_version,
    )

    reviewed_review = sum(1 for s in sources if s == "review")
    unreviewed = {
        "review": max(sum(int(s.get("review", 0)) for s in stats) - reviewed_review, 0),
        "audit": max(sum(int(s.get("audit_sampled", 0)) - int(s.get("audit_reviewed", 0)) for s in stats), 0),
    }
    warnings = []
    if unreviewed["review"] or unreviewed["audit"]:
        warnings.append(
            f"{unreviewed['review']} review-routed and {unreviewed['audit']} audit items are not reviewed yet; "
            "the certificate treats the reviewed ones as representative of them (true when the "
            "queue is worked in order and hard items are not skipped for good)"
        )
    if not report["certified"]:
        warnings.append("nothing was certified: this version sends every item to review")
    if report["calibrator"] != "none" and report["fit"]["n"] < MIN_FIT_ITEMS:
        warnings.append(
            f"the calibrator was fitted on only {report['fit']['n']} items; its confidences are rough "
            "(the certificate still holds: it was measured on other items)"
        )
    observed = store.stats(policy_version=active.version)["automation_rate"]
    # Per-class certificates have no single automation rate; the comparison is for top_label.
    rate = report["automation_rate"]
    if report["certified"] and observed is not None and rate is not None and rate < observed:
        warnings.append(
            f"this version automates {rate:.1%} of its certification items, version "
            f"{active.version} automated {observed:.1%} of the items it decided. Either the population "
            f"changed (howsure drift) or {report['certify']['n']} certification items support only a "
            "stricter threshold; in the second case more audited reviews certify more, and keeping "
            "the previous version until then is reasonable"
        )
    c, f = report["certify"], report["fit"]
    calibrator_name = report["calibrator"] + (f" ({report['calibrator_chosen']})" if report["calibrator_chosen"] else "")
    note = note or (
        f"recalibrated from {len(labelled)} reviews: {calibrator_name} fitted on {f['n']} "
        f"({f['review']} review, {f['audit']} audit), certified on {c['n']} ({c['review']} review, "
        f"{c['audit']} audit)"
    )
    record = store.add_policy(policy.to_dict(), actor=actor, activate=activate, note=note)
    audited_rates = [rate for rate, source in zip(item_rates, sources) if source == "audit"]
    report.update({
        "audit_rate": lowest_rate,
        "audit_rates": {f"{rate:g}": audited_rates.count(rate) for rate in sorted(set(audited_rates))},
        "version": record.version,
        "active": record.active,
        "previous_version": active.version,
        "previous_threshold": current.threshold,
        "versions_pooled": versions,
        "audit_rate_source": audit_rate_source,
        "unreviewed": unreviewed,
        "warnings": warnings,
        "note": note,
    })
    return record, report


# ------------------------------------------------------------------------------ export
def labelled_rows(store: "ReviewStore", *, policy_version: int | None = None) -> list[dict[str, Any]]:
    """Reviewed items as flat dicts with `EXPORT_COLUMNS`; ``label`` is the reviewer's."""
    rows = []
    for item in store.labelled_items(policy_version=policy_version):
        reviewed_at = item.reviewed_at
        rows.append({
            "item_id": item.item_id,
            "text": item.text,
            "label": item.label,
            "source": item.source,
            "reviewer": item.reviewer,
            "policy_version": item.policy_version,
            "prediction": item.prediction,
            "reviewed_at": reviewed_at.isoformat() if hasattr(reviewed_at, "isoformat") else reviewed_at,
        })
    return rows


def export_labelled(store: "ReviewStore", path: str | Path, format: str | None = None, *,
                    policy_version: int | None = None) -> int:
    """Write reviewed items as a labelled data set for fine-tuning; returns the row count.

    JSONL keeps every value exactly. CSV cells that a spreadsheet would run as a formula
    (starting with ``= + - @``, tab or CR) are written with a leading apostrophe
    (`formula_safe`); read such a file back with that in mind, or export JSONL.

    Parameters
    ----------
    path : str or Path
    format : {"jsonl", "csv"}, optional
        Default: from the file suffix (``.jsonl`` / ``.csv``).
    policy_version : int, optional
        Only items decided under this version.
    """
    path = Path(path)
    if format is None:
        format = path.suffix.lower().lstrip(".")
    if format not in EXPORT_FORMATS:
        raise DataError(f"cannot export to {str(path)!r} as {format!r}: expected one of {list(EXPORT_FORMATS)}")
    rows = labelled_rows(store, policy_version=policy_version)
    if format == "jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, EXPORT_COLUMNS)
            writer.writeheader()
            writer.writerows({key: formula_safe(value) for key, value in row.items()} for row in rows)
    return len(rows)
