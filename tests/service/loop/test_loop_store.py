"""The learning loop on a real store (SQLite and PostgreSQL): recalibrate from reviews, check
drift against the policy's reference, export labelled items."""

from __future__ import annotations

import csv
import json

import pytest

from howsure.errors import DataError, PolicyError
from howsure.decisions.policy import Policy
from howsure.service.drift import drift_report
from howsure.service.feedback import export_labelled, recalibrate
from loop_sim import loop_policy_dict, review, serve


def test_recalibrate_writes_an_active_version_from_an_iid_certification_share(store, loop_policy):
    first = store.add_policy(loop_policy, actor="admin")
    served = serve(store, first, 300, audit_rate=0.5)
    stats = store.stats()
    assert review(store, served, limit=stats["review"] + stats["audit_sampled"] - 10) > 0  # 10 left queued
    reviews = store.labelled_items()
    n_audit = sum(item.source == "audit" for item in reviews)

    record, report = recalibrate(store, actor="ops", calibrator="platt")

    assert record.version == 2 and record.active and store.active_policy().version == 2
    assert record.created_by == "ops" and record.note == report["note"]
    policy = Policy.from_dict(record.body)
    assert policy.calibrator["name"] == "platt" and policy.version == 2 and policy.reference
    assert policy.guarantee["target_accuracy"] == 0.95 and policy.guarantee["delta"] == 0.05  # the old ones
    # Every audited review certifies; review items certify at the estimated audit rate.
    assert report["audit_rate"] == pytest.approx(stats["audit_sampled"] / stats["auto"])
    assert report["audit_rate_source"].startswith(f"estimated from the store: {stats['audit_sampled']} audited")
    assert report["certify"]["audit"] == n_audit and report["fit"]["audit"] == 0
    assert report["fit"]["n"] + report["certify"]["n"] == report["n_reviewed"] == len(reviews)
    assert policy.guarantee["n_calibration"] == report["certify"]["n"]
    assert report["certified"] and report["previous_version"] == 1 and report["versions_pooled"] == [1]
    # The ten unreviewed queue items are reported, split by why they were queued.
    left = store.stats()
    assert report["unreviewed"]["review"] + report["unreviewed"]["audit"] == 10 == left["queue_length"]
    assert any("not reviewed yet" in warning for warning in report["warnings"])
    assert record.note.startswith(f"recalibrated from {len(reviews)} reviews: platt fitted on {report['fit']['n']}")
    [added] = store.events(action="policy_added", limit=1)
    assert added.actor == "ops" and added.policy_version == 2

    # A trial version: half the audited items fit, the given audit rate, another target.
    trial, report = recalibrate(store, actor="ops", calibrator="platt", audit_rate=0.5, certify_share=0.25,
                                activate=False, target_accuracy=0.9, delta=0.1)
    assert not trial.active and trial.version == 3 and store.active_policy().version == 2
    assert report["audit_rate_source"] == "given" and report["audit_keep"] == pytest.approx(0.5)
    assert 0 < report["fit"]["audit"] < n_audit and report["certify"]["audit"] == n_audit - report["fit"]["audit"]
    assert trial.body["guarantee"]["target_accuracy"] == 0.9 and report["versions_pooled"] == [1, 2]


def test_recalibration_uses_each_items_recorded_audit_rate(store, loop_policy):
    """The service ran at audit rate 0.5, then at 0.1. The store-wide estimate (audited / auto)
    lies between the two and would certify on too large a share, over-representing the items
    of the 0.5 period. With the rates stored per item, the share is the lowest rate, 0.1: an
    item audited at 0.1 always certifies, one audited at 0.5 with chance 0.1 / 0.5."""
    from howsure.decisions.recalibration import hash_share
    from loop_sim import Served

    first = store.add_policy(loop_policy, actor="admin")
    often = serve(store, first, 300, audit_rate=0.5, seed=1, record_rate=True)
    rarely = serve(store, first, 300, audit_rate=0.1, seed=2, record_rate=True, text_prefix="later")
    review(store, Served(often.records + rarely.records, {**often.truth, **rarely.truth}))
    stats = store.stats()
    estimate = stats["audit_sampled"] / stats["auto"]
    assert 0.15 < estimate < 0.45

    record, report = recalibrate(store, actor="ops", calibrator="platt", seed=4)

    assert report["audit_rate"] == 0.1 and report["certify_share"] == 0.1
    assert report["audit_rate_source"] == "recorded with each item"
    labelled = {item.item_id: item for item in store.labelled_items()}
    audited = {rate: [i for i, item in labelled.items() if item.source == "audit" and item.audit_rate == rate]
               for rate in (0.5, 0.1)}
    assert report["audit_rates"] == {"0.1": len(audited[0.1]), "0.5": len(audited[0.5])}
    expected = len(audited[0.1]) + sum(hash_share(i, 4) < 0.1 / 0.5 for i in audited[0.5])
    assert report["certify"]["audit"] == expected
    assert report["certify"]["audit"] < len(audited[0.1]) + len(audited[0.5])
    with pytest.raises(PolicyError, match="certify_share 0.2 exceeds the audit rate 0.1"):
        recalibrate(store, actor="ops", certify_share=0.2)


def test_a_second_recalibration_pools_the_reviews_of_both_versions_of_the_same_model(store, loop_policy):
    first = store.add_policy(loop_policy, actor="admin")
    review(store, serve(store, first, 200, audit_rate=0.3, seed=1))
    second, _ = recalibrate(store, actor="ops", calibrator="temperature")
    review(store, serve(store, second, 80, audit_rate=0.3, seed=2))
    # A policy for another model is not pooled, even though it is stored in between.
    store.add_policy(loop_policy_dict(model_id="other-model"), actor="admin", activate=False)
    _, report = recalibrate(store, actor="ops", calibrator="temperature")
    assert report["versions_pooled"] == [1, 2] and report["version"] == 4
    assert report["n_reviewed"] == len(store.labelled_items())
    # After a drift only the newer items may describe today's population: pool what is asked.
    _, report = recalibrate(store, actor="ops", calibrator="temperature", policy_versions=[2], activate=False)
    assert report["versions_pooled"] == [2] and report["n_reviewed"] == len(store.labelled_items(policy_version=2))
    with pytest.raises(PolicyError, match=r"policy version\(s\) \[3\] cannot be pooled: the versions of the "
                                          r"active policy's model 'test-model' and labels are \[1, 2, 4, 5\]"):
        recalibrate(store, actor="ops", policy_versions=[2, 3])


def test_a_per_class_policy_is_recalibrated_per_class(store):
    from howsure.decisions.policy_certification import certify_policy
    from loop_sim import LABELS, population

    probabilities, truth = population(2000, 0)
    body = certify_policy(truth, probabilities, labels=LABELS, per_class=True, target_accuracy=0.9,
                          model_id="test-model").to_dict()
    first = store.add_policy(body, actor="admin")
    review(store, serve(store, first, 200, audit_rate=0.5))
    record, report = recalibrate(store, actor="ops", calibrator="platt")
    assert record.body["rule"] == "per_class" and report["rule"] == "per_class"
    assert set(record.body["class_thresholds"]) == set(LABELS) and report["automation_rate"] is None
    assert record.body["guarantee"]["target_accuracy"] == 0.9


def test_recalibrate_refuses_what_it_cannot_do_honestly(store, loop_policy):
    with pytest.raises(PolicyError, match=r"the store has no active policy to recalibrate"):
        recalibrate(store, actor="ops")
    first = store.add_policy(loop_policy, actor="admin")
    with pytest.raises(PolicyError, match=r"no reviewed items under policy version\(s\) \[1\]"):
        recalibrate(store, actor="ops")
    # Auto-handled items but none audited: the accuracy of automation was never measured.
    review(store, serve(store, first, 60, audit_rate=0.0))
    with pytest.raises(PolicyError, match=r"items were auto-handled but none was drawn for audit"):
        recalibrate(store, actor="ops")
    with pytest.raises(PolicyError, match=r"certify_share 0.5 exceeds the audit rate 0.1"):
        recalibrate(store, actor="ops", audit_rate=0.1, certify_share=0.5)
    assert [r.version for r in store.policy_history()] == [1]


def test_drift_report_is_quiet_on_the_certified_population_and_alarms_on_a_shifted_one(store, loop_policy):
    first = store.add_policy(loop_policy, actor="admin")
    assert drift_report(store).message == "only 0 live item(s) of policy version 1; drift is checked from 100 on"
    serve(store, first, 600, audit_rate=0.0, seed=5)
    quiet = drift_report(store)
    assert not quiet.alarm and quiet.n_live == 600 and quiet.n_reference == 2000 and quiet.policy_version == 1
    # The newest 300 items come from a less confident population: the window sees only them.
    serve(store, first, 300, audit_rate=0.0, seed=6, mean_margin=1.0)
    shifted = drift_report(store, window=300)
    assert shifted.alarm and shifted.n_live == 300 and shifted.psi > 0.2 and "lower now" in shifted.message
    assert "howsure recalibrate --db" in shifted.suggestion and "howsure:howsure@" not in shifted.suggestion
    # Explicit versions: a version without items has nothing to compare.
    store.add_policy(loop_policy_dict(seed=3), actor="admin")
    assert drift_report(store, policy_version=1, window=300).alarm
    assert drift_report(store).n_live == 0


def test_drift_report_without_a_policy_or_a_reference_gives_no_alarm(store, loop_policy):
    assert drift_report(store).message == "no active policy in the store"
    old = dict(loop_policy)
    del old["reference"], old["policy_id"]
    record = store.add_policy(old, actor="admin")
    serve(store, record, 150, audit_rate=0.0)
    report = drift_report(store)
    assert not report.alarm and "has no reference distribution" in report.message


def test_export_writes_every_review_as_jsonl_and_csv(store, loop_policy, tmp_path):
    first = store.add_policy(loop_policy, actor="admin")
    served = serve(store, first, 40, audit_rate=1.0)
    review(store, served, reviewer="ann", limit=5)
    review(store, served, reviewer="bob")
    labelled = {item.item_id: item for item in store.labelled_items()}
    assert export_labelled(store, tmp_path / "reviews.jsonl") == len(labelled) > 5
    rows = [json.loads(line) for line in (tmp_path / "reviews.jsonl").read_text().splitlines()]
    for row in rows:
        item = labelled[row["item_id"]]
        assert row["label"] == served.truth[row["item_id"]] == item.label
        assert (row["text"], row["source"], row["reviewer"], row["policy_version"]) == (
            item.text, item.source, item.reviewer, 1)
    assert {row["reviewer"] for row in rows} == {"ann", "bob"} and {row["source"] for row in rows} == {"audit", "review"}
    assert export_labelled(store, tmp_path / "reviews.csv") == len(rows)
    with (tmp_path / "reviews.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["item_id"], r["text"], r["label"]) for r in table] == [(str(r["item_id"]), r["text"], r["label"]) for r in rows]
    assert export_labelled(store, tmp_path / "none.jsonl", policy_version=2) == 0


def test_export_keeps_awkward_texts_intact_in_csv(store, loop_policy, new_item, tmp_path):
    record = store.add_policy(loop_policy, actor="admin")
    text = 'a "quoted", multi-line\ntext with <script>alert(1)</script> and ünïcödé'
    [item] = store.add_items([new_item(record, text=text, confidence=0.6)], actor="client")
    store.claim_next("rev")
    store.submit_review(item.id, "rev", "positive")
    export_labelled(store, tmp_path / "out.txt", format="csv")
    with (tmp_path / "out.txt").open(newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["text"] == text and row["label"] == "positive" and row["source"] == "review"
    with pytest.raises(DataError, match=r"cannot export to '.*out.parquet' as 'parquet': expected one of \['jsonl', 'csv'\]"):
        export_labelled(store, tmp_path / "out.parquet")


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\r=1"])
def test_csv_export_neutralises_formulas_and_jsonl_keeps_the_text(store, loop_policy, new_item, tmp_path, text):
    """A text (or a reviewer name) starting with = + - @, tab or CR would run as a formula when
    the CSV is opened in a spreadsheet: CSV cells get a leading apostrophe; JSONL keeps it exact."""
    import json

    store.add_user("=cmd|' /C calc'!A0", "reviewer", actor="admin")
    record = store.add_policy(loop_policy, actor="admin")
    [item] = store.add_items([new_item(record, text=text, confidence=0.6)], actor="client")
    reviewer = "=cmd|' /C calc'!A0"
    store.claim_next(reviewer)
    store.submit_review(item.id, reviewer, "positive")
    export_labelled(store, tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["text"] == "'" + text and row["reviewer"] == "'" + reviewer
    assert row["label"] == "positive" and row["item_id"] == str(item.id)
    export_labelled(store, tmp_path / "out.jsonl")
    [line] = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["text"] == text and json.loads(line)["reviewer"] == reviewer
