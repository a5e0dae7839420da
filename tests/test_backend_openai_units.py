"""The OpenAI-compatible backend's pieces that need no server: the interval rule, the
conservative rule, Retry-After, and label_mass_bounds through records, readers and the cache.
tests/test_backend_openai.py runs the backend against a real llama-cpp-python server."""

import json
import math
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.backends.cache import scores_from_json, scores_to_json
from howsure.backends.openai import OpenAIBackend
from howsure.backends.openai_http import MAX_RETRY_AFTER_S, RetryPolicy, retry_after_s
from howsure.backends.openai_topk import AnswerMatcher, scores_from_top_logprobs
from howsure.cli import app
from howsure.core.scored import conservative_rows
from howsure.core.task import Task
from howsure.errors import DataError, ModelError
from howsure.io.scored import read_scored
from howsure.io.scored_tables import load_scored_items

TASK = Task(instruction="Review: {text}", labels={"positive": ["positive"], "negative": ["negative"]})


def top(**probs):
    return [(token.replace("_", " "), math.log(p)) for token, p in probs.items()]


def test_seen_labels_give_their_mass_and_the_kth_bound_under_exact():
    matcher = AnswerMatcher.of(Task(**{**TASK.to_dict(), "variant_rule": "exact"}), "")
    returned = [("positive", math.log(0.5)), ("The", math.log(0.2)), ("negative", math.log(0.1))]
    scores, share = scores_from_top_logprobs(matcher, returned, top_k=2)
    assert scores.label_mass.tolist() == pytest.approx([0.5, 0.1])
    # each label's one answer was returned whole: nothing of it is unseen
    np.testing.assert_allclose(scores.label_mass_bounds, [[0.5, 0.5], [0.1, 0.1]])
    assert scores.probabilities.tolist() == pytest.approx([0.5 / 0.6, 0.1 / 0.6])
    assert share == pytest.approx(0.6 / 0.8)
    assert [t for t, _ in scores.top_tokens] == ["positive", "The"]


def test_an_unreturned_exact_answer_is_bounded_by_the_kth_probability():
    matcher = AnswerMatcher.of(Task(**{**TASK.to_dict(), "variant_rule": "exact"}), "")
    scores, _ = scores_from_top_logprobs(matcher, top(positive=0.5, The=0.2, A=0.1), top_k=3)
    # 0.2 unreturned, but one token <= 0.1 (the k-th) is all "negative" can have
    np.testing.assert_allclose(scores.label_mass_bounds, [[0.5, 0.5], [0.0, 0.1]])


def test_a_label_below_the_top_k_is_unknown_not_zero():
    matcher = AnswerMatcher.of(TASK, "")  # variants: any number of tokens may spell a verbalizer
    scores, _ = scores_from_top_logprobs(matcher, top(Positive=0.3, The=0.25, A=0.05), top_k=5)
    assert scores.label_mass.tolist() == pytest.approx([0.3, 0.0])
    np.testing.assert_allclose(scores.label_mass_bounds, [[0.3, 0.7], [0.0, 0.4]])
    # the predicted label at its lower mass, the other at its upper: 0.3 / (0.3 + 0.4)
    assert conservative_rows(scores.probabilities[None], scores.label_mass_bounds[None])[0].tolist() == \
        pytest.approx([0.3 / 0.7, 0.4 / 0.7])


def test_a_token_that_may_begin_an_answer_widens_only_the_upper_end():
    matcher = AnswerMatcher.of(TASK, "")
    scores, _ = scores_from_top_logprobs(matcher, top(_neg=0.4, positive=0.5, x=0.1), top_k=3)
    np.testing.assert_allclose(scores.label_mass_bounds, [[0.5, 0.5], [0.0, 0.4]])


def test_exact_rule_counts_only_the_continuation_as_written():
    exact = Task(**{**TASK.to_dict(), "variant_rule": "exact"})
    after_colon = AnswerMatcher.of(exact, "Answer:")
    scores, _ = scores_from_top_logprobs(after_colon, top(_positive=0.4, positive=0.3, Negative=0.2), top_k=3)
    assert scores.label_mass.tolist() == pytest.approx([0.4, 0.0])  # " positive" only; no case variants
    assert scores.label_mass_bounds[1].tolist() == pytest.approx([0.0, 0.1])


def test_conservative_rows_keep_point_rows_without_mass_and_reject_bad_bounds():
    probabilities = np.array([[0.5, 0.5], [0.8, 0.2]])
    bounds = np.array([[[0, 0], [0, 0]], [[0.4, 0.5], [0.1, 0.3]]], dtype=float)
    out = conservative_rows(probabilities, bounds)
    assert out[0].tolist() == [0.5, 0.5] and out[1].tolist() == pytest.approx([0.4 / 0.7, 0.3 / 0.7])
    with pytest.raises(DataError, match="lower <= upper"):
        conservative_rows(probabilities, bounds[:, :, ::-1])
    with pytest.raises(DataError, match="shape"):
        conservative_rows(probabilities, bounds[:, :1])


def test_retry_after_reads_seconds_and_dates_and_backoff_is_jittered_and_capped():
    assert retry_after_s("3") == 3.0 and retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=4.0)
    rng = random.Random(0)
    waits = [policy.wait_s(attempt, None, rng) for attempt in range(8) for _ in range(50)]
    assert 0 <= min(waits) and max(waits) <= 4.0 and len(set(waits)) > 100
    assert policy.wait_s(0, 7.5, rng) == 7.5 and policy.wait_s(0, 1e6, rng) == MAX_RETRY_AFTER_S


def scored_file(tmp_path, bounds: bool):
    matcher = AnswerMatcher.of(TASK, "")
    rows = []
    for i, returned in enumerate([top(positive=0.6, x=0.3), top(negative=0.5, positive=0.45)]):
        scores, _ = scores_from_top_logprobs(matcher, returned, top_k=2)
        if not bounds:
            scores.label_mass_bounds = None
        rows.append({"id": str(i), "text": f"t{i}", "label": ["positive", "negative"][i]} | scores.to_record())
    path = tmp_path / ("bounds.jsonl" if bounds else "plain.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_readers_apply_the_conservative_rule_when_records_carry_bounds(tmp_path):
    path, rows = scored_file(tmp_path, bounds=True)
    np.testing.assert_allclose([rows[0]["label_mass_bounds"][k] for k in ("positive", "negative")], [[0.6, 0.7], [0, 0.1]])
    items = read_scored(path)
    plain = read_scored(scored_file(tmp_path, bounds=False)[0])
    assert plain.confidence.tolist() == pytest.approx([1.0, 0.5 / 0.95])
    # row 0: 0.6 / (0.6 + 0.1); row 1: 0.5 / (0.5 + 0.45 + 0.05)
    assert items.confidence.tolist() == pytest.approx([0.6 / 0.7, 0.5 / 1.0])
    assert items.predicted == ["positive", "negative"] and items.correct.tolist() == [1.0, 1.0]
    assert "conservative" in items.source["kind"]
    evaluated = load_scored_items(path)
    assert evaluated.confidence.tolist() == pytest.approx(items.confidence.tolist())
    np.testing.assert_allclose(evaluated.probabilities, items.probabilities)


def test_a_file_mixing_records_with_and_without_bounds_is_refused(tmp_path):
    path, rows = scored_file(tmp_path, bounds=True)
    del rows[1]["label_mass_bounds"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="record 1 has no label_mass_bounds"):
        read_scored(path)


def test_bounds_round_trip_through_the_cache_json():
    scores, _ = scores_from_top_logprobs(AnswerMatcher.of(TASK, ""), top(positive=0.6, x=0.3), top_k=2)
    back = scores_from_json(scores_to_json(scores))
    assert back.label_mass_bounds.tolist() == scores.label_mass_bounds.tolist()
    scores.label_mass_bounds = None
    assert scores_from_json(scores_to_json(scores)).label_mass_bounds is None


@pytest.mark.parametrize("option, value", [("dtype", "mixed"), ("threads", 2), ("device", "cuda")])
def test_settings_only_the_server_controls_are_refused_before_any_request(option, value):
    # port 9 (discard) on loopback: were the option checked after opening, this would be a
    # connection error instead
    with pytest.raises(ModelError, match=rf"--{option} {value!r} has no effect with the openai backend"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", **{option: value})


def test_the_command_line_refuses_a_dtype_the_server_would_ignore(tmp_path):
    texts = tmp_path / "t.csv"
    texts.write_text("text\nfine\n")
    result = CliRunner().invoke(app, ["score", "-i", str(texts), "-o", str(tmp_path / "o.jsonl"), "--backend", "openai",
                                      "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--dtype", "mixed"])
    assert result.exit_code == 2, result.output
    assert "--dtype 'mixed' has no effect with the openai backend" in " ".join(result.output.split())
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("bad", [float("nan"), 2.0, "0.5"])
def test_a_broken_log_probability_is_refused_by_name(bad):
    """Read as one, a positive log-probability gives a mass over 1 and a NaN, dropped, would make
    the other label certain: either is a broken server, named, not scores."""
    matcher = AnswerMatcher.of(TASK, "")
    returned = [("positive", bad), ("negative", math.log(0.2))]
    with pytest.raises(ModelError, match=r"log-probability .* for token 'positive'; a log-probability is a number <= 0"):
        scores_from_top_logprobs(matcher, returned, top_k=2)
    # A rounding of 0 to a hair above it is still read, as probability 1.
    scores, _ = scores_from_top_logprobs(matcher, [("positive", 1e-7), ("negative", -math.inf)], top_k=2)
    assert scores.label_mass.tolist() == [1.0, 0.0]
