"""The policy file: certify from arrays, save/load as JSON, decide (howsure.decisions.policy and policy_certification)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from howsure.calibration import make_calibrator, save_calibrator
from howsure.decisions.certification import certify_threshold, certify_two_sided
from howsure.decisions.costs import CostModel
from howsure.decisions.pvalues import min_items_to_certify
from howsure.errors import PolicyError
from howsure.decisions.policy import SCHEMA_VERSION, Decision, Policy, TwoSidedRule, positive_label
from howsure.decisions.policy_certification import ASSUMPTION, assumption_text, certify_policy
from howsure.core.task import Task

LABELS = ["negative", "positive"]


def scored(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw binary probabilities from an over-confident model, and true label indices."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    # The model leans the right way, with confidence that rises with how right it is.
    margin = rng.normal(2.0, 2.0, n)
    p_true = 1 / (1 + np.exp(-2 * margin))
    p_positive = np.where(truth == 1, p_true, 1 - p_true)
    return np.column_stack([1 - p_positive, p_positive]), truth


@pytest.fixture
def task() -> Task:
    return Task(instruction="Is this positive or negative?\n\n{text}",
                labels={"negative": ["negative"], "positive": ["positive"]}, name="sentiment")


def test_certified_policy_round_trips_through_json(tmp_path, task):
    probabilities, truth = scored()
    policy = certify_policy(truth, probabilities, target_accuracy=0.95, delta=0.05, task=task,
                            model_id="tiny-model", version=3)
    assert policy.guarantee["certified"]
    path = policy.save(tmp_path / "policy.json")
    loaded = Policy.load(path)
    assert loaded.policy_id == policy.policy_id
    assert loaded.labels == LABELS and loaded.model_id == "tiny-model" and loaded.version == 3
    assert loaded.task == task.to_dict()
    assert loaded.threshold == policy.threshold
    assert loaded.decide(probabilities) == policy.decide(probabilities)


def test_the_file_holds_the_guarantee_and_the_fingerprint(tmp_path):
    probabilities, truth = scored()
    policy = certify_policy(truth, probabilities, labels=LABELS)
    data = json.loads(policy.save(tmp_path / "p.json").read_text())
    assert data["format"] == "howsure.policy" and data["schema_version"] == SCHEMA_VERSION
    assert data["created"][:2] == "20" and data["policy_id"] == policy.policy_id
    guarantee = data["guarantee"]
    for key in ("target_accuracy", "delta", "method", "p_value", "n_calibration", "n_automated",
                "n_errors", "certified_range", "assumption"):
        assert key in guarantee
    assert guarantee["n_calibration"] == 1500 and guarantee["target_accuracy"] == 0.95
    assert data["data_fingerprint"].startswith("sha256:") and len(data["data_fingerprint"]) == 71
    # The threshold is exactly what certify_threshold gives on the same confidences.
    certificate = certify_threshold(probabilities.argmax(axis=1) == truth, probabilities.max(axis=1))
    assert data["threshold"] == certificate.threshold
    assert guarantee["n_automated"] == certificate.n_automated


def test_the_fingerprint_changes_with_one_label_and_not_otherwise():
    probabilities, truth = scored(n=300)
    first = certify_policy(truth, probabilities, labels=LABELS).data_fingerprint
    again = certify_policy(truth.copy(), probabilities.copy(), labels=LABELS).data_fingerprint
    flipped = truth.copy()
    flipped[7] = 1 - flipped[7]
    assert first == again != certify_policy(flipped, probabilities, labels=LABELS).data_fingerprint


def test_decide_automates_exactly_the_items_at_or_above_the_threshold():
    probabilities, truth = scored()
    policy = certify_policy(truth, probabilities, labels=LABELS)
    decisions = policy.decide(probabilities)
    assert all(isinstance(d, Decision) for d in decisions)
    confidence = probabilities.max(axis=1)
    assert [d.decision == "auto" for d in decisions] == list(confidence >= policy.threshold)
    first = decisions[0]
    assert first.label == LABELS[int(probabilities[0].argmax())]
    assert first.confidence == confidence[0]
    assert first.probabilities == {"negative": probabilities[0, 0], "positive": probabilities[0, 1]}


def test_truth_may_be_label_names():
    probabilities, truth = scored(n=400)
    by_index = certify_policy(truth, probabilities, labels=LABELS)
    by_name = certify_policy([LABELS[i] for i in truth], probabilities, labels=LABELS)
    assert by_name.threshold == by_index.threshold and by_name.data_fingerprint == by_index.data_fingerprint


def test_from_confidences_and_correctness():
    probabilities, truth = scored()
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    policy = certify_policy(correct, confidence, labels=LABELS)
    assert policy.threshold == certify_policy(truth, probabilities, labels=LABELS).threshold


def test_an_uncertifiable_set_gives_a_review_everything_policy():
    probabilities, truth = scored(n=40)
    policy = certify_policy(truth, probabilities, labels=LABELS)
    assert policy.threshold is None and not policy.guarantee["certified"]
    assert policy.guarantee["labels_needed"] > 40
    assert {d.decision for d in policy.decide(probabilities)} == {"review"}
    assert policy.summary() == "automates nothing: every item goes to review"


def test_per_class_policy_uses_each_labels_threshold(tmp_path):
    probabilities, truth = scored(n=3000, seed=1)
    policy = certify_policy(truth, probabilities, labels=LABELS, per_class=True)
    thresholds = policy.class_thresholds
    assert set(thresholds) == set(LABELS) and all(t is not None for t in thresholds.values())
    assert policy.guarantee["classes"]["positive"]["delta"] == pytest.approx(0.025)
    loaded = Policy.load(policy.save(tmp_path / "pc.json"))
    predicted = probabilities.argmax(axis=1)
    cut = np.array([thresholds[LABELS[p]] for p in predicted])
    assert [d.decision == "auto" for d in loaded.decide(probabilities)] == list(probabilities.max(axis=1) >= cut)


def test_cost_picks_the_cheapest_certified_threshold():
    probabilities, truth = scored()
    certified = certify_policy(truth, probabilities, labels=LABELS)
    # Reviews are dear and errors cheap: stay at the loosest certified threshold.
    cheap_errors = certify_policy(truth, probabilities, labels=LABELS, cost=CostModel(10.0, 1.0, 1000))
    assert cheap_errors.threshold == certified.threshold
    # Errors ruinous: automate less (or nothing) even though more is certified.
    dear_errors = certify_policy(truth, probabilities, labels=LABELS, cost=CostModel(1.0, 10_000.0, 1000))
    assert dear_errors.threshold is None or dear_errors.threshold > certified.threshold
    assert dear_errors.cost["chosen"]["cost_per_day"] <= dear_errors.cost["review_everything"]["cost_per_day"]
    assert dear_errors.guarantee["threshold"] == certified.threshold


@pytest.mark.parametrize("name,mode", [("platt", "distribution"), ("isotonic", "confidence"), ("temperature", "distribution")])
def test_a_calibrator_is_applied_at_certification_and_at_decision(tmp_path, name, mode):
    probabilities, truth = scored(n=3000, seed=2)
    fit, certify = np.arange(1500), np.arange(1500, 3000)
    calibrator = make_calibrator(name, mode=mode)
    if mode == "distribution":
        calibrator.fit(probabilities[fit], truth[fit])
    else:
        calibrator.fit(probabilities[fit].max(axis=1), probabilities[fit].argmax(axis=1) == truth[fit])
    policy = certify_policy(truth[certify], probabilities[certify], labels=LABELS, calibrator=calibrator)
    assert policy.calibrator == calibrator.to_dict()
    loaded = Policy.load(policy.save(tmp_path / "p.json"))
    decisions = loaded.decide(probabilities[certify])
    if mode == "distribution":
        calibrated = calibrator.predict_proba(probabilities[certify])
        expected_confidence = calibrated.max(axis=1)
    else:
        expected_confidence = calibrator.predict_proba(probabilities[certify].max(axis=1))
    np.testing.assert_allclose([d.confidence for d in decisions], expected_confidence)
    automated = sum(d.decision == "auto" for d in decisions)
    assert automated == policy.guarantee["n_automated"]
    for d in decisions[:20]:
        assert sum(d.probabilities.values()) == pytest.approx(1.0)


def test_a_saved_calibrator_file_works_as_the_policy_calibrator(tmp_path):
    probabilities, truth = scored(n=2000, seed=3)
    calibrator = make_calibrator("platt", mode="distribution").fit(probabilities[:1000], truth[:1000])
    reloaded = json.loads(save_calibrator(calibrator, tmp_path / "cal.json").read_text())
    policy = certify_policy(truth[1000:], probabilities[1000:], labels=LABELS, calibrator=reloaded)
    direct = certify_policy(truth[1000:], probabilities[1000:], labels=LABELS, calibrator=calibrator)
    assert policy.threshold == direct.threshold


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"target_accuracy": 1.2}, r"target accuracy must be in \(0, 1\), got 1.2"),
        ({"delta": 0.0}, r"delta .* must be in \(0, 1\), got 0.0"),
        ({"delta": 1.5}, r"got 1.5"),
        ({"labels": ["negative", "positive", "neutral"]}, r"got 3 labels .* for 2 probability columns"),
        ({"labels": None}, r"give the label names"),
        ({"labels": ["negative", "positive"], "per_class": True, "cost": CostModel(1, 1, 1)}, r"cost optimisation is available for top_label policies"),
        ({"method": "holm"}, r"unknown certification method 'holm'"),
    ],
)
def test_bad_certification_arguments(kwargs, match):
    probabilities, truth = scored(n=200)
    with pytest.raises(PolicyError, match=match):
        certify_policy(truth, probabilities, **{"labels": LABELS, **kwargs})


@pytest.mark.parametrize(
    "scores,truth,match",
    [
        (np.empty((0, 2)), [], r"the calibration set is empty"),
        ([], [], r"the calibration set is empty"),
        (np.full((3, 2), 0.5), ["negative", "maybe", "positive"], r"true label 'maybe' of item 1 is not one of the labels \['negative', 'positive'\]"),
        (np.full((3, 2), 0.5), [0, 1, 5], r"true label 5 of item 2 is not a class index in \[0, 2\)"),
        (np.full((3, 2), 0.5), [True, False, True], r"give the true labels \(names or indices\), not correctness"),
        (np.full((3, 2), 0.5), [0, 1], r"expected 3 true labels"),
        (np.ones((2, 2, 2)), [0, 1], r"shape \(n, K\) or \(n,\)"),
        ([0.9, 0.8], [1, 0, 1], r"confidences has 2 items but correct has shape \(3,\)"),
    ],
)
def test_bad_calibration_data(scores, truth, match):
    with pytest.raises(PolicyError, match=match):
        certify_policy(truth, scores, labels=LABELS)


def test_labels_not_in_the_task_are_named(task):
    probabilities, truth = scored(n=50)
    with pytest.raises(PolicyError, match=r"label 'neutral' is not one of the task's labels \['negative', 'positive'\]"):
        certify_policy(truth, probabilities, labels=["neutral", "positive"], task=task)
    with pytest.raises(PolicyError, match=r"true label 'maybe' of item 0 is not one of the labels"):
        certify_policy(["maybe", "positive"], probabilities[:2], task=task)


def test_confidences_with_a_distribution_calibrator_are_refused():
    probabilities, truth = scored(n=400)
    calibrator = make_calibrator("platt", mode="distribution").fit(probabilities, truth)
    with pytest.raises(PolicyError, match=r"a 'distribution'-mode calibrator needs \(n, K\) label probabilities"):
        certify_policy(probabilities.argmax(axis=1) == truth, probabilities.max(axis=1), labels=LABELS, calibrator=calibrator)


def test_decide_refuses_the_wrong_number_of_labels():
    probabilities, truth = scored(n=300)
    policy = certify_policy(truth, probabilities, labels=LABELS)
    with pytest.raises(PolicyError, match=r"probabilities have 3 columns but the policy has 2 labels"):
        policy.decide(np.full((2, 3), 1 / 3))


def test_a_calibrator_refusing_the_input_is_a_policy_error():
    probabilities, truth = scored(n=400)
    calibrator = make_calibrator("platt", mode="distribution").fit(probabilities[:200], truth[:200])
    policy = certify_policy(truth[200:], probabilities[200:], labels=LABELS, calibrator=calibrator)
    with pytest.raises(PolicyError, match=r"the policy's calibrator refused the input: .*row 0 sums to 0.5"):
        policy.decide(np.array([[0.2, 0.3]]))


def saved(tmp_path) -> tuple[dict, object]:
    probabilities, truth = scored(n=300)
    path = certify_policy(truth, probabilities, labels=LABELS).save(tmp_path / "p.json")
    return json.loads(path.read_text()), path


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d.update(schema_version=2), r"policy schema version 2 is not supported; this howsure reads schema version 1"),
        (lambda d: d.update(format="something"), r"not a howsure policy: format is 'something'"),
        (lambda d: d.pop("labels"), r"policy is missing the field 'labels'"),
        (lambda d: d.update(threshold=0.5), r"policy_id .* does not match the content"),
        (lambda d: (d.update(threshold=1.5), d.pop("policy_id")), r"threshold must be a number in \[0, 1\] or null, got 1.5"),
        (lambda d: (d.update(rule="magic"), d.pop("policy_id")), r"unknown policy rule 'magic'"),
        (lambda d: (d.update(labels=["only"]), d.pop("policy_id")), r"at least 2 non-empty names"),
        (lambda d: (d.update(version=0), d.pop("policy_id")), r"policy version must be an integer >= 1, got 0"),
        (lambda d: (d.update(rule="per_class", class_thresholds={"maybe": 0.9}), d.pop("policy_id")),
         r"class threshold for 'maybe', which is not one of the labels"),
    ],
)
def test_bad_policy_files_are_refused(tmp_path, edit, match):
    data, path = saved(tmp_path)
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyError, match=match):
        Policy.load(path)


def test_missing_and_non_json_files(tmp_path):
    with pytest.raises(PolicyError, match=r"policy file '.*nope.json' does not exist"):
        Policy.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PolicyError, match=r"is not valid JSON"):
        Policy.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(PolicyError, match=r"a policy must be a JSON object, got list"):
        Policy.load(tmp_path / "list.json")


# ---------------------------------------------------------------------- reference distribution
# Written by the policy code before `reference` existed (the assumption text trimmed to keep
# the line short); its policy_id was computed by that code, so loading it checks that old
# files keep their identity.
OLD_POLICY_FILE = (
    '{"format":"howsure.policy","schema_version":1,"version":1,"created":"2025-01-01T00:00:00+00:00",'
    '"model_id":null,"task":null,"labels":["negative","positive"],"calibrator":null,"rule":"top_label",'
    '"threshold":0.5963157894736842,"class_thresholds":null,"guarantee":{"kind":"top_label",'
    '"target_accuracy":0.8,"delta":0.2,"method":"fixed_sequence","p_value":"binomial",'
    '"threshold":0.5963157894736842,"n_calibration":20,"n_automated":18,"n_errors":1,'
    '"certified_range":[0.5963157894736842,0.8278947368421052],"labels_needed":null,"starts":[],'
    '"certified":true,"automation_rate":0.9,"empirical_accuracy":0.9444444444444444},"cost":null,'
    '"data_fingerprint":"sha256:3187f266647d84c8f2eba96c6cd7e98dc1efe4fcb6d4d7f270c98ed5590bb74d",'
    '"policy_id":"d1cca64eb1b37704"}'
)


def test_a_policy_file_from_before_the_reference_field_still_loads_with_its_id(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(OLD_POLICY_FILE)
    policy = Policy.load(path)
    assert policy.reference is None and policy.policy_id == "d1cca64eb1b37704"
    assert "reference" not in policy.to_dict()
    assert [d.decision for d in policy.decide([[0.3, 0.7], [0.45, 0.55]])] == ["auto", "review"]
    # Saved again without a reference, it is byte-for-byte the same policy.
    assert Policy.load(policy.save(tmp_path / "again.json")).policy_id == "d1cca64eb1b37704"


def test_certify_keeps_the_sorted_calibrated_confidences_it_certified_on(tmp_path):
    probabilities, truth = scored(n=300)
    calibrator = make_calibrator("platt", mode="distribution").fit(*scored(n=400, seed=1))
    policy = certify_policy(truth, probabilities, labels=LABELS, calibrator=calibrator)
    _, confidence, _ = policy.calibrate(probabilities)
    assert policy.reference == [round(float(c), 6) for c in np.sort(confidence)]
    # Not the raw confidences: the calibrator moved them.
    assert policy.reference != [round(float(c), 6) for c in np.sort(probabilities.max(axis=1))]
    loaded = Policy.load(policy.save(tmp_path / "p.json"))
    assert loaded.reference == policy.reference and loaded.policy_id == policy.policy_id


def test_a_large_calibration_set_keeps_2000_quantiles_spanning_its_range():
    probabilities, truth = scored(n=5000)
    policy = certify_policy(truth, probabilities, labels=LABELS)
    confidence = np.sort(probabilities.max(axis=1))
    reference = np.array(policy.reference)
    assert reference.size == 2000 and np.all(np.diff(reference) >= 0)
    assert reference[0] == round(confidence[0], 6) and reference[-1] == round(confidence[-1], 6)
    assert abs(reference[1000] - np.quantile(confidence, 1000 / 1999)) < 1e-6


def test_per_class_and_confidence_only_policies_have_a_reference_too():
    probabilities, truth = scored(n=300)
    per_class = certify_policy(truth, probabilities, labels=LABELS, per_class=True)
    assert len(per_class.reference) == 300
    confidence = probabilities.max(axis=1)
    from_confidence = certify_policy(probabilities.argmax(axis=1) == truth, confidence, labels=LABELS)
    assert from_confidence.reference == [round(float(c), 6) for c in np.sort(confidence)]


def test_the_reference_is_part_of_the_policy_id():
    probabilities, truth = scored(n=300)
    policy = certify_policy(truth, probabilities, labels=LABELS)
    data = policy.to_dict()
    data["reference"] = data["reference"][:-1]
    with pytest.raises(PolicyError, match=r"policy_id .* does not match the content"):
        Policy.from_dict(data)


@pytest.mark.parametrize(
    "reference,match",
    [
        ([], r"non-empty list of confidences or null"),
        ("0.5", r"non-empty list of confidences or null"),
        ([0.2, 1.5], r"reference value 1 must be a number in \[0, 1\], got 1.5"),
        ([0.2, True], r"reference value 1 must be a number in \[0, 1\], got True"),
        ([0.6, 0.5], r"must be sorted; value 1 \(0.5\) < value 0 \(0.6\)"),
        ([0.5] * 2001, r"holds 2001 values; at most 2000"),
    ],
)
def test_bad_references_are_refused(reference, match):
    data = json.loads(OLD_POLICY_FILE)
    data.pop("policy_id")
    data["reference"] = reference
    with pytest.raises(PolicyError, match=match):
        Policy.from_dict(data)


# ---------------------------------------------------------------------- the stored assumption
def test_fixed_sequence_states_the_extra_condition_of_its_data_dependent_start():
    probabilities, truth = scored(n=600)
    text = certify_policy(truth, probabilities, labels=LABELS, method="fixed_sequence").guarantee["assumption"]
    assert text.startswith(ASSUMPTION + ". ")
    extra = text[len(ASSUMPTION) + 2:]
    # One sentence, naming where the walk starts and what must then hold.
    assert extra.count(". ") == 0 and extra.endswith(".")
    assert "starts at the strictest threshold that automates 59 calibration items" in extra
    assert "no top slice of the most confident items too small to hold 59 calibration items is less accurate" in extra
    assert "accuracy does not fall as the threshold tightens" in extra and "multistart" in extra
    # The number follows the target and delta (min_items_to_certify).
    other = certify_policy(truth, probabilities, labels=LABELS, method="fixed_sequence", target_accuracy=0.9, delta=0.1)
    assert "automates 22 calibration items" in other.guarantee["assumption"]
    assert min_items_to_certify(0.9, 0.1) == 22


def test_multistart_keeps_the_plain_assumption():
    probabilities, truth = scored(n=600)
    policy = certify_policy(truth, probabilities, labels=LABELS, method="multistart")
    assert policy.guarantee["assumption"] == ASSUMPTION
    assert assumption_text("multistart", 0.95, 0.05) == ASSUMPTION


def test_per_class_assumption_counts_items_per_label_at_its_share_of_delta():
    probabilities, truth = scored(n=600)
    text = certify_policy(truth, probabilities, labels=LABELS, method="fixed_sequence", per_class=True).guarantee["assumption"]
    # Each of the two labels is certified at delta / 2 = 0.025: its walk starts at 72 items.
    assert min_items_to_certify(0.95, 0.025) == 72
    assert "automates 72 of the calibration items predicted as that label" in text
    assert "no top slice of a label's most confident items too small to hold 72" in text


def test_a_stored_assumption_is_kept_as_written_so_old_files_keep_their_id(tmp_path):
    # A file certified before the assumption named the walk's start: plain text, fixed_sequence.
    data = json.loads(OLD_POLICY_FILE)
    data["guarantee"]["assumption"] = ASSUMPTION
    data.pop("policy_id")
    policy = Policy.from_dict(data)
    data["policy_id"] = policy.policy_id
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    loaded = Policy.load(path)
    assert loaded.guarantee["assumption"] == ASSUMPTION and loaded.policy_id == data["policy_id"]
    assert Policy.load(loaded.save(tmp_path / "again.json")).policy_id == data["policy_id"]
    # The reference-less file of before still loads too (its guarantee has no assumption at all).
    (tmp_path / "x.json").write_text(OLD_POLICY_FILE)
    assert Policy.load(tmp_path / "x.json").policy_id == "d1cca64eb1b37704"


# ---------------------------------------------------------------------- two labels, per class
def test_a_two_label_per_class_policy_is_the_two_sided_policy():
    probabilities, truth = scored(n=3000, seed=1)
    policy = certify_policy(truth, probabilities, labels=LABELS, per_class=True)
    rule = policy.two_sided()
    two = certify_two_sided(truth == 1, probabilities[:, 1], 0.95, 0.05)
    assert (rule.positive, rule.negative) == ("positive", "negative")
    assert rule.accept_above == two.accept_above
    assert rule.reject_below == pytest.approx(two.reject_below, abs=1e-15)
    assert policy.summary() == (
        f"auto-positive if P(positive) >= {two.accept_above:.6g}, auto-negative if P(positive) <= "
        f"{rule.reject_below:.6g}, review the middle; with probability >= 95% each automated label's "
        "precision is >= 95.0%"
    )
    # Routing by the per-class policy is routing by the two-sided rule.
    p_positive = probabilities[:, 1]
    auto = [d.decision == "auto" for d in policy.decide(probabilities)]
    assert auto == list((p_positive >= rule.accept_above) | (p_positive <= rule.reject_below))


def test_the_two_sided_reading_finds_the_positive_label_and_says_never():
    rule = TwoSidedRule(positive="yes", negative="no", accept_above=0.97, reject_below=None)
    assert rule.text() == "auto-yes if P(yes) >= 0.97, never auto-no, review the middle"
    assert rule.text(calibrated=True).endswith("review the middle (P(yes) calibrated)")
    assert positive_label(["yes", "no"]) == "yes" and positive_label(["Positive", "negative"]) == "Positive"
    assert positive_label(["spam", "ham"]) == "ham"  # no name says positive: the second label


def test_no_two_sided_reading_for_top_label_or_three_labels():
    probabilities, truth = scored(n=600)
    assert certify_policy(truth, probabilities, labels=LABELS).two_sided() is None
    rng = np.random.default_rng(3)
    three = rng.dirichlet([1, 1, 1], 600)
    policy = certify_policy(rng.integers(0, 3, 600), three, labels=["a", "b", "c"], per_class=True)
    assert policy.two_sided() is None and policy.summary().startswith("automates per predicted label")


# ---------------------------------------------------------------------- starts and predicted label
def test_a_policy_with_a_calibrator_walks_from_starts_around_the_target():
    from howsure.decisions.walks import calibrated_starts, DEFAULT_STARTS

    probabilities, truth = scored(n=1200)
    raw = certify_policy(truth, probabilities, labels=LABELS, target_accuracy=0.9)
    assert tuple(raw.guarantee["starts"]) == DEFAULT_STARTS and raw.guarantee["method"] == "fallback"
    calibrator = make_calibrator("platt").fit(*scored(n=800, seed=5))
    calibrated = certify_policy(truth, probabilities, labels=LABELS, target_accuracy=0.9, calibrator=calibrator)
    assert tuple(calibrated.guarantee["starts"]) == calibrated_starts(0.9)
    assert calibrated.guarantee["assumption"] == ASSUMPTION


def test_per_class_certifies_each_item_as_the_label_it_is_routed_as():
    # A confidence-mode calibrator of a badly over-confident 3-label model: many calibrated
    # confidences fall below 1/3, so another label's share of the rest is larger than the
    # predicted label's. The policy still routes on the raw top label; certification must
    # count each item under that same label.
    rng = np.random.default_rng(3)
    n, labels = 3000, ["a", "b", "c"]
    top = rng.uniform(0.4, 1.0, n)
    predicted_raw = rng.integers(0, 3, n)
    # The more confident, the more often wrong: right 60 % of the time at 0.4, 25 % at 1.
    right = rng.uniform(size=n) < 0.6 - 0.35 * (top - 0.4) / 0.6
    truth = np.where(right, predicted_raw, (predicted_raw + rng.integers(1, 3, n)) % 3)
    probabilities = np.empty((n, 3))
    share = rng.uniform(0.2, 0.8, n)
    for k in range(3):
        probabilities[:, k] = np.where(predicted_raw == k, top, 0.0)
    first, second = (predicted_raw + 1) % 3, (predicted_raw + 2) % 3
    rows = np.arange(n)
    probabilities[rows, first] = (1 - top) * share * (top >= 0.5) + (1 - top) / 2 * (top < 0.5)
    probabilities[rows, second] = 1 - top - probabilities[rows, first]
    assert np.all(probabilities.argmax(axis=1) == predicted_raw)
    calibrator = make_calibrator("platt", mode="confidence").fit(top[:1000], right[:1000])
    policy = certify_policy(truth[1000:], probabilities[1000:], labels=labels, calibrator=calibrator,
                            per_class=True, target_accuracy=0.8)
    predicted, confidence, calibrated = policy.calibrate(probabilities[1000:])
    assert (confidence < 1 / 3).sum() > 100  # the case this test is about
    assert (calibrated.argmax(axis=1) != predicted).sum() > 100
    counts = {label: policy.guarantee["classes"][label]["n_calibration"] for label in labels}
    assert counts == {label: int((predicted == k).sum()) for k, label in enumerate(labels)}
    # And what was certified per label is what routing automates under that label.
    auto = policy.automate(predicted, confidence)
    for k, label in enumerate(labels):
        cert = policy.guarantee["classes"][label]
        assert int((auto & (predicted == k)).sum()) == cert["n_automated"]
