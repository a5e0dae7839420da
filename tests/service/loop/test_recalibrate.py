"""Recalibration as a pure function over arrays (howsure.decisions.recalibration): which reviewed
items fit the calibrator, which certify, and whether the new policy keeps its promise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kstest

from howsure.errors import DataError, PolicyError
from howsure.stats.drift import ks_test
from howsure.decisions.recalibration import hash_share, recalibrate_arrays, split_for_recalibration
from loop_sim import LABELS, population


def served(n: int = 6000, *, automated: float = 0.4, audit_rate: float = 0.1, seed: int = 1):
    """What the service stores: the top ``automated`` share auto-handled, each audited with
    probability ``audit_rate``; every review-routed item reviewed. Returns the population and
    the indices, sources and probabilities of the reviewed items."""
    probabilities, truth = population(n, seed)
    confidence = probabilities.max(axis=1)
    auto = confidence >= np.quantile(confidence, 1 - automated)
    audited = auto & (np.random.default_rng(seed + 100).random(n) < audit_rate)
    reviewed = np.flatnonzero(~auto | audited)
    sources = np.where(audited[reviewed], "audit", "review").tolist()
    return probabilities, truth, reviewed, sources


def test_by_default_every_audited_item_certifies_and_review_items_at_the_audit_rate():
    _, _, ids, sources = served()
    split = split_for_recalibration(ids.tolist(), sources, audit_rate=0.1)
    assert split.certify_share == 0.1 and split.audit_keep == 1.0
    assert np.intersect1d(split.fit, split.certify).size == 0
    assert np.array_equal(np.sort(np.concatenate([split.fit, split.certify])), np.arange(len(ids)))
    counts = split.counts(sources)
    assert counts["certify"]["audit"] == sources.count("audit") and counts["fit"]["audit"] == 0
    n_review = sources.count("review")
    # Binomial(n_review, 0.1): within four standard deviations.
    assert abs(counts["certify"]["review"] - 0.1 * n_review) < 4 * np.sqrt(n_review * 0.09)
    assert counts["fit"]["n"] + counts["certify"]["n"] == len(ids)


def test_the_certification_set_is_an_iid_sample_of_the_population_and_all_reviews_are_not():
    probabilities, _, ids, sources = served()
    confidence = probabilities.max(axis=1)
    split = split_for_recalibration(ids.tolist(), sources, audit_rate=0.1)
    _, p_certify = ks_test(confidence, confidence[ids[split.certify]])
    _, p_all = ks_test(confidence, confidence[ids])
    assert p_certify > 0.05  # indistinguishable from the population
    assert p_all < 1e-20  # every reviewed item: heavily skewed to low confidence


def test_a_smaller_certify_share_moves_that_part_of_the_audited_items_to_the_fit_set():
    _, _, ids, sources = served()
    split = split_for_recalibration(ids.tolist(), sources, audit_rate=0.1, certify_share=0.05)
    assert split.audit_keep == pytest.approx(0.5)
    counts = split.counts(sources)
    n_audit = sources.count("audit")
    assert abs(counts["certify"]["audit"] - n_audit / 2) < 4 * np.sqrt(n_audit / 4)
    assert counts["fit"]["audit"] == n_audit - counts["certify"]["audit"] > 0


def test_the_coin_is_a_uniform_hash_of_the_id_fixed_by_the_seed():
    shares = np.array([hash_share(i) for i in range(5000)])
    assert kstest(shares, "uniform").pvalue > 0.01
    assert hash_share(17) == hash_share(17) != hash_share(17, seed=1)
    ids, sources = list(range(400)), ["review"] * 400
    first = split_for_recalibration(ids, sources, audit_rate=0.2)
    assert np.array_equal(first.certify, split_for_recalibration(ids, sources, audit_rate=0.2).certify)
    assert not np.array_equal(first.certify, split_for_recalibration(ids, sources, audit_rate=0.2, seed=3).certify)
    # Adding reviewed items never moves an item already placed: its side depends on its id only.
    grown = split_for_recalibration(list(range(800)), ["review"] * 800, audit_rate=0.2)
    assert np.array_equal(first.certify, grown.certify[grown.certify < 400])


def test_without_automation_half_of_the_reviewed_items_certify():
    split = split_for_recalibration(list(range(1000)), ["review"] * 1000, audit_rate=None)
    assert split.certify_share == 0.5 and split.audit_keep is None
    assert 430 < split.certify.size < 570


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(audit_rate=0.05, certify_share=0.1), PolicyError,
         r"certify_share 0.1 exceeds the audit rate 0.05: auto-handled items were labelled only at the audit rate"),
        (dict(audit_rate=None, sources=["review", "audit"]), PolicyError,
         r"audited items need the audit rate .* got audit_rate=None"),
        (dict(audit_rate=0.0), PolicyError, r"audit_rate must be a number in \(0, 1\], got 0.0"),
        (dict(audit_rate=0.1, certify_share=-1), PolicyError, r"certify_share must be a number in \(0, 1\], got -1"),
        (dict(audit_rate=0.1, sources=["review", "guess"]), DataError,
         r"source 'guess' is not one of \['review', 'audit'\]"),
    ],
)
def test_split_refuses_shares_that_would_bias_the_certificate(kwargs, error, match):
    sources = kwargs.pop("sources", ["review", "review"])
    with pytest.raises(error, match=match):
        split_for_recalibration([1, 2], sources, **kwargs)


def test_recalibrated_policy_automates_more_than_the_old_one_from_disjoint_fit_and_certify_sets():
    probabilities, truth, ids, sources = served(automated=0.4)
    policy, report = recalibrate_arrays(
        truth[ids], probabilities[ids], ids.tolist(), sources, label_names=LABELS, audit_rate=0.1,
        calibrator="platt", target_accuracy=0.95, delta=0.05, model_id="m",
    )
    assert report["certified"] and report["calibrator"] == "platt" and policy.model_id == "m"
    assert report["fit"]["n"] + report["certify"]["n"] == report["n_reviewed"] == len(ids)
    assert report["certify"]["audit"] == sources.count("audit") and report["fit"]["audit"] == 0
    assert policy.guarantee["n_calibration"] == report["certify"]["n"]
    assert len(policy.reference) == report["certify"]["n"]
    fresh, _ = population(40_000, seed=7)
    predicted, confidence, _ = policy.calibrate(fresh)
    # The old policy automated 40 %; the data support far more at 95 %.
    assert policy.automate(predicted, confidence).mean() > 0.6


def test_the_guarantee_fails_on_fresh_items_no_more_often_than_delta():
    # 40 services, each recalibrated from its own reviews; the true accuracy of what each new
    # policy automates is measured on 200,000 fresh items. At delta = 0.05 about 2 of 40 may
    # miss the target (Binomial(40, 0.05) reaches 7 with probability 0.003); a certification
    # set skewed towards some confidences would miss far more often.
    fresh, fresh_truth = population(200_000, seed=999)
    misses, automation = 0, []
    for run in range(40):
        probabilities, truth, ids, sources = served(automated=0.4, seed=run + 10)
        policy, _ = recalibrate_arrays(truth[ids], probabilities[ids], ids.tolist(), sources,
                                       label_names=LABELS, audit_rate=0.1, calibrator="platt", seed=run)
        predicted, confidence, _ = policy.calibrate(fresh)
        automated = policy.automate(predicted, confidence)
        automation.append(automated.mean())
        misses += automated.any() and (predicted[automated] == fresh_truth[automated]).mean() < 0.95
    assert misses <= 6
    assert np.mean(automation) > 0.6


def test_auto_reports_the_calibrator_it_chose():
    probabilities, truth, ids, sources = served(n=2500)
    _, report = recalibrate_arrays(truth[ids], probabilities[ids], ids.tolist(), sources,
                                   label_names=LABELS, audit_rate=0.1, calibrator="auto",
                                   texts=[f"text {i}" for i in ids])
    assert report["calibrator"] == "auto" and report["calibrator_chosen"] in ("temperature", "platt", "beta",
                                                                              "isotonic", "histogram", "venn_abers")
    assert report["calibrator_explanation"].startswith(f"Chose {report['calibrator_chosen']}")
