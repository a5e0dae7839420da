"""Learn from the reviews: refit the calibrator, re-certify the threshold, export labels.

    from howsure.service.feedback import recalibrate, export_labelled
    record, report = recalibrate(store, actor="ops")     # new active policy version
    export_labelled(store, "reviewed.jsonl")             # labelled data for fine-tuning

This is the review store's side: which items and audit rates the store holds, the new policy
version, the export. Which reviewed items may certify and the fit/certify split itself are
numbers in, numbers out, in `howsure.decisions.recalibration` (re-exported here).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from howsure.calibration.fitting import item_hashes
from howsure.decisions.costs import CostModel
from howsure.decisions.policy import Policy
from howsure.decisions.recalibration import (
    MIN_FIT_ITEMS,
    NO_AUDIT_CERTIFY_SHARE,
    SOURCES,
    CertificationSplit,
    check_certify_share,
    check_rate,
    hash_share,
    recalibrate_arrays,
    split_for_recalibration,
)
from howsure.errors import DataError, PolicyError
from howsure.io.spreadsheet import formula_safe

if TYPE_CHECKING:
    from howsure.service.store import PolicyRecord, ReviewStore

EXPORT_FORMATS = ("jsonl", "csv")
EXPORT_COLUMNS = ("item_id", "text", "label", "source", "reviewer", "policy_version", "prediction", "reviewed_at")

__all__ = [
    "EXPORT_COLUMNS",
    "EXPORT_FORMATS",
    "MIN_FIT_ITEMS",
    "NO_AUDIT_CERTIFY_SHARE",
    "SOURCES",
    "CertificationSplit",
    "export_labelled",
    "hash_share",
    "labelled_rows",
    "population_audit_rates",
    "recalibrate",
    "recalibrate_arrays",
    "split_for_recalibration",
]


# ------------------------------------------------------------------------------ with a store
def _adapter_checksum(body: dict[str, Any]) -> str | None:
    return (body.get("adapter") or {}).get("checksum")


def _same_model(body: dict[str, Any], active: dict[str, Any]) -> bool:
    """Same labels, model and adapter: their items' raw probabilities come from the same scorer."""
    return (body.get("labels") == active.get("labels") and body.get("model_id") == active.get("model_id")
            and _adapter_checksum(body) == _adapter_checksum(active))


def adapter_trained_hashes(body: dict[str, Any]) -> set[str]:
    """The text hashes a policy's adapter trained on (empty without an adapter); `PolicyError`
    when the adapter directory is gone, so the guard never passes by not looking."""
    adapter = body.get("adapter")
    if not adapter:
        return set()
    # Local for weight: the adapters module loads torch, which recalibrating without one never needs.
    from howsure.backends.transformers.adapters import trained_hashes

    try:
        return trained_hashes(adapter["directory"])
    except DataError as exc:
        raise PolicyError(f"the active policy's adapter cannot tell which items it trained on: {exc}") from None


def overlap_sentence(n_overlap: int, n_items: int) -> str:
    """What a policy certified with ``--allow-overlap`` says about it, in words."""
    return (f"{n_overlap} of the {n_items} reviewed items this policy was fitted and certified on were items its "
            "adapter trained on (--allow-overlap): its confidences and certificate may be optimistic")


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
            legacy, legacy_source = check_rate(given, "audit_rate"), "given"
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


def pooled_items(store: "ReviewStore", policy_versions: Sequence[int] | None = None, *, any_model: bool = False,
                 ) -> tuple["PolicyRecord", list[int], list[Any]]:
    """The active policy, the versions whose reviewed items recalibration pools (``policy_versions``,
    else every version with the active one's labels, model and adapter; with ``any_model`` every
    version with its labels: items scored again by a new model) and those items."""
    active = store.active_policy()
    if active is None:
        raise PolicyError("the store has no active policy to recalibrate; add one first (howsure serve --policy)")
    versions = sorted(r.version for r in store.policy_history()
                      if (r.body.get("labels") == active.body.get("labels") if any_model else _same_model(r.body, active.body)))
    if policy_versions is not None:
        wanted = sorted({int(v) for v in policy_versions})
        other = [v for v in wanted if v not in versions]
        if other or not wanted:
            raise PolicyError(
                f"policy version(s) {other or wanted} cannot be pooled: the versions of the active "
                f"policy's model {active.body.get('model_id')!r} and labels are {versions}"
            )
        versions = wanted
    return active, versions, [item for item in store.labelled_items() if item.policy_version in versions]


def default_certify_share(store: "ReviewStore", policy_versions: Sequence[int] | None = None, *,
                          any_model: bool = False) -> float | None:
    """The share of the population `recalibrate` certifies on by default: the lowest audit rate of
    the pooled versions (`pooled_items`; None when nothing was auto-handled)."""
    _, versions, labelled = pooled_items(store, policy_versions, any_model=any_model)
    return population_audit_rates(store, versions, labelled, None)[1]


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
    allow_overlap: bool = False,
    rescore: Callable[[list[str]], np.ndarray] | None = None,
    adapter: dict[str, Any] | None = None,
    trained: set[str] | None = None,
    model_id: str | None = None,
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
    allow_overlap : bool
        Fit and certify even on items the active policy's adapter trained on (its
        ``trained_hashes``); the new policy's ``overlap`` says so. Without it such items are a
        `PolicyError` naming how many.
    rescore, adapter, trained
        For a new model version (``howsure finetune --db``): ``rescore(texts)`` gives the new
        model's raw probabilities (n, K) in label order, used instead of the stored ones;
        ``adapter`` (``{"directory", "checksum"}``) goes into the new policy; items whose text
        hash is in ``trained`` (what the new adapter trained on) are left out, not refused.
    model_id : str, optional
        The new policy's model (default: the active policy's).

    Returns
    -------
    record : PolicyRecord
        The new version.
    report : dict
        What `recalibrate_arrays` reports, plus the versions pooled, the previous version,
        unreviewed queue items, how the audit rate was known, and warnings.

    Notes
    -----
    Items of every policy version with the same labels, model and adapter as the active one
    are pooled: the calibrator works on the model's raw probabilities, which do not depend on
    the policy. With ``rescore`` every version with the same labels is pooled (all are scored
    again by the new model).
    """
    active, versions, labelled = pooled_items(store, policy_versions, any_model=rescore is not None)
    current = Policy.from_dict(active.body)
    history = store.policy_history()
    n_pooled = len(labelled)
    if trained is not None:
        labelled = [item for item, digest in zip(labelled, item_hashes([i.text for i in labelled], "text"))
                    if digest not in trained]
    overlap = None
    active_trained = adapter_trained_hashes(active.body) if rescore is None else set()
    if active_trained:
        n_overlap = sum(digest in active_trained for digest in item_hashes([i.text for i in labelled], "text"))
        if n_overlap and not allow_overlap:
            raise PolicyError(
                f"{n_overlap} of the {len(labelled)} reviewed items were trained on by the active policy's adapter "
                f"{active.body['adapter']['directory']!r}; fitting or certifying on them is not honest. Review "
                "new items, or pass --allow-overlap (the policy will say so)")
        overlap = overlap_sentence(n_overlap, len(labelled)) if n_overlap else None
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
    if rescore is not None:
        scores = np.asarray(rescore([item.text for item in labelled]), dtype=np.float64)
    sources = [item.source for item in labelled]

    stats = [store.stats(policy_version=v) for v in versions]
    item_rates, lowest_rate, audit_rate_source = population_audit_rates(store, versions, labelled, audit_rate)
    if certify_share is None:
        certify_share = lowest_rate
    elif lowest_rate is not None:
        check_certify_share(check_rate(certify_share, "certify_share"), lowest_rate)
    guarantee = current.guarantee
    cost = None
    if current.cost is not None:
        cost = CostModel(current.cost["cost_review"], current.cost["cost_error"], current.cost["volume_per_day"])
    next_version = max(r.version for r in history) + 1
    policy, report = recalibrate_arrays(
        truth, scores, [item.item_id for item in labelled], sources,
        label_names=current.labels, audit_rate=item_rates if lowest_rate is not None else None,
        certify_share=certify_share,
        calibrator=calibrator, seed=seed, texts=[item.text for item in labelled],
        target_accuracy=guarantee["target_accuracy"] if target_accuracy is None else target_accuracy,
        delta=guarantee["delta"] if delta is None else delta,
        task=current.task, model_id=current.model_id if model_id is None else model_id, per_class=current.rule == "per_class",
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
    policy.adapter = adapter if rescore is not None else current.adapter
    policy.overlap = overlap
    if overlap:
        warnings.append(overlap)
    report["policy_id"] = policy.policy_id
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
        "adapter": policy.adapter,
        "left_out_trained": n_pooled - len(labelled),
        "overlap": overlap,
    })
    return record, report


# ------------------------------------------------------------------------------ export
def labelled_rows(store: "ReviewStore", *, policy_version: int | None = None,
                  include_audited: bool = True) -> list[dict[str, Any]]:
    """Reviewed items as flat dicts with `EXPORT_COLUMNS`; ``label`` is the reviewer's."""
    rows = []
    for item in store.labelled_items(policy_version=policy_version):
        if item.source == "audit" and not include_audited:
            continue
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
                    policy_version: int | None = None, include_audited: bool = True) -> int:
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
    include_audited : bool
        Keep the audited items (``source`` audit); for the chat format see
        `howsure.service.training_data.write_chat_jsonl`.
    """
    path = Path(path)
    if format is None:
        format = path.suffix.lower().lstrip(".")
    if format not in EXPORT_FORMATS:
        raise DataError(f"cannot export to {str(path)!r} as {format!r}: expected one of {list(EXPORT_FORMATS)}")
    rows = labelled_rows(store, policy_version=policy_version, include_audited=include_audited)
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
