"""Batched answer generation against the naive computation, on the tiny random model: the same
greedy answers one at a time, the log-probabilities of the answer tokens only, the samples, the
hidden states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from howsure.answers import estimators as est
from howsure.answers.estimators import token_scores
from howsure.answers.generation import AnswerGenerator, Prompt
from howsure.backends import load_backend
from howsure.errors import DataError

QUESTIONS = ["Is this good?", "the worst film of the year, dull and stupid", "yes",
             "A gorgeous, witty, seductive movie. very good quite bad", "no or maybe", "sports business"]
PROMPT = Prompt(instruction="Text: {text}", examples=(("very good", "positive"), ("quite bad", "negative")),
                system="Answer: Label:", answer_start="Answer:")


STOP = ("D",)  # a string this random model really writes (after some answers' third token)


@pytest.fixture(scope="module")
def model_dir(tiny_qa_model_dir):
    return tiny_qa_model_dir


@pytest.fixture(scope="module")
def backend(model_dir):
    return load_backend(str(model_dir), batch_size=4)


@pytest.fixture(scope="module")
def generator(backend):
    return AnswerGenerator(backend, max_new_tokens=8, stop=STOP, batch_size=4)


def test_batched_generation_equals_one_at_a_time(model_dir, generator):
    batched = generator.generate(PROMPT, QUESTIONS)
    assert len({tuple(a.token_ids) for a in batched}) >= 3  # the comparison is not trivial
    alone = AnswerGenerator(load_backend(str(model_dir), share_prefix=False), max_new_tokens=8,
                            stop=STOP, batch_size=1)
    for question, answer in zip(QUESTIONS, batched):
        single = alone.generate(PROMPT, [question])[0]
        assert single.token_ids == answer.token_ids and single.text == answer.text
        np.testing.assert_allclose(single.token_logprobs, answer.token_logprobs, atol=1e-4)
    assert {a.finish for a in batched} >= {"length"} and any(a.finish == "stop" for a in batched)


def test_greedy_answers_match_transformers_generate(generator):
    """The naive method of bench/bench_qa.py: one `generate()` call per question."""
    answers = generator.generate(PROMPT, QUESTIONS[:3])
    for question, answer in zip(QUESTIONS[:3], answers):
        ids = generator.prompt_ids(PROMPT, question)
        with torch.inference_mode():
            out = generator.model.generate(torch.tensor([ids]), attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
                                           max_new_tokens=len(answer.token_ids) + 1, do_sample=False,
                                           pad_token_id=generator.backend.pad_id)
        assert out[0, len(ids):len(ids) + len(answer.token_ids)].tolist() == answer.token_ids


def test_token_confidence_reads_the_answer_positions_only(generator):
    answers = generator.generate(PROMPT, QUESTIONS)
    # The generated log-probs are those of the answer tokens after the prompt, position by position.
    forced = generator.answer_logprobs(PROMPT, QUESTIONS, [a.token_ids for a in answers])
    for answer, logprobs in zip(answers, forced):
        assert len(answer.token_logprobs) == len(answer.token_ids)
        np.testing.assert_allclose(answer.token_logprobs, logprobs, atol=1e-4)
    # Another prompt, the same answer tokens: one score per answer token, each read at the
    # position before that token, none at a prompt token.
    fixed = answers[0].token_ids
    assert fixed
    for question in QUESTIONS[1:3]:
        ids = generator.prompt_ids(PROMPT, question)
        with torch.inference_mode():
            full = generator.model(input_ids=torch.tensor([ids + fixed])).logits[0].float().log_softmax(-1)
        expected = [float(full[len(ids) - 1 + j, token]) for j, token in enumerate(fixed)]
        got = generator.answer_logprobs(PROMPT, [question], [fixed])[0]
        np.testing.assert_allclose(got, expected, atol=1e-5)
        prompt_positions = [float(full[j, ids[j + 1]]) for j in range(len(ids) - 1)]
        assert len(got) == len(fixed) and not any(np.isclose(got[0], p, atol=1e-7) for p in prompt_positions[-1:])
    # The confidence is a function of those log-probs and nothing else.
    scores = token_scores(answers[0].token_logprobs)
    assert scores["token_geo_mean"] == pytest.approx(np.exp(np.mean(answers[0].token_logprobs)))
    assert scores["token_min"] == pytest.approx(np.exp(min(answers[0].token_logprobs)))
    assert token_scores([]) == {"token_mean_logprob": None, "token_geo_mean": None, "token_min": None}


def test_samples_share_the_prompt_and_repeat_with_the_seed(generator):
    first = generator.generate(PROMPT, QUESTIONS[:3], samples=4, temperature=1.0, seed=3)
    again = generator.generate(PROMPT, QUESTIONS[:3], samples=4, temperature=1.0, seed=3)
    assert all(len(a.samples) == 4 for a in first)
    assert [a.samples for a in first] == [a.samples for a in again]
    greedy = generator.generate(PROMPT, QUESTIONS[:3])
    assert [a.token_ids for a in first] == [a.token_ids for a in greedy]  # sampling leaves greedy as it was
    # A near-zero temperature samples the greedy answer.
    cold = generator.generate(PROMPT, QUESTIONS[:3], samples=2, temperature=1e-4)
    assert all(set(a.samples) == {a.text} for a in cold)


def test_hidden_states_at_the_prompt_and_the_answer(generator):
    n_layers = generator.model.config.num_hidden_layers
    width = generator.model.config.hidden_size
    for at in ("prompt", "answer"):
        answers = generator.generate(PROMPT, QUESTIONS[:4], hidden=at)
        for question, answer in zip(QUESTIONS[:4], answers):
            assert answer.hidden.shape == (n_layers + 1, width) and answer.hidden.dtype == np.float16
            ids = generator.prompt_ids(PROMPT, question)
            full = ids + (answer.token_ids if at == "answer" else [])
            with torch.inference_mode():
                states = generator.model(input_ids=torch.tensor([full]), output_hidden_states=True).hidden_states
            expected = torch.stack([h[0, -1] for h in states]).numpy()
            np.testing.assert_allclose(answer.hidden.astype(np.float32), expected, atol=2e-2, rtol=1e-2)


def test_bad_settings_are_clear_errors(generator, backend):
    with pytest.raises(DataError, match="hidden 'middle'"):
        generator.generate(PROMPT, QUESTIONS[:1], hidden="middle")
    with pytest.raises(DataError, match="temperature"):
        generator.generate(PROMPT, QUESTIONS[:1], samples=3, temperature=0)
    with pytest.raises(DataError, match="exactly once"):
        Prompt(instruction="no placeholder")
    with pytest.raises(DataError, match="max_new_tokens"):
        AnswerGenerator(backend, max_new_tokens=0)


def test_generation_uses_only_the_backends_public_methods(backend):
    """answers/generation.py runs the backend's model through `cache_kwargs` and
    `real_tokens_only`, not its private attributes (hidden.py, in the backend's package, uses
    `cache_kwargs` too)."""
    import inspect
    import re

    from howsure.answers import generation
    from howsure.backends.transformers import hidden

    assert not re.search(r"backend\._\w", inspect.getsource(generation))
    assert "_cache_kw" not in inspect.getsource(hidden)
    (key, value), = backend.cache_kwargs("CACHE").items()
    assert value == "CACHE" and key in inspect.signature(backend.model.forward).parameters
    mask = torch.ones((1, 3), dtype=torch.long)
    with backend.real_tokens_only(mask, answers_only=True):
        pass


class _Asked:
    """A real backend whose label-scoring calls are recorded (what entailment clustering asks)."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []

    def label_scores(self, task, texts, **kwargs):
        self.calls.append((task.name, list(texts)))
        return self.backend.label_scores(task, texts, **kwargs)


def _yes(backend, question, a, b):
    text = f"Question: {question}\nAnswer A: {a}\nAnswer B: {b}"
    return backend.label_scores(est.ENTAILMENT_TASK, [text])[0].probabilities[0]


def test_entailment_clustering_through_a_real_model_asks_both_directions(backend):
    question = "What is the capital of France?"
    samples = ["Paris", "paris", "Berlin", "Rome"]
    asked = _Asked(backend)
    clusters = est.entailment_clusters(asked, question, samples)
    assert clusters[0] == clusters[1]  # equal after normalisation: never asked
    assert [name for name, _ in asked.calls] == ["qa-entailment", "qa-entailment"]
    berlin, rome = (texts for _, texts in asked.calls)
    assert berlin == [f"Question: {question}\nAnswer A: Berlin\nAnswer B: Paris",
                      f"Question: {question}\nAnswer A: Paris\nAnswer B: Berlin"]
    assert len(rome) == 2 * (2 if clusters[2] != clusters[0] else 1)  # both directions to every kept cluster
    # the rule recomputed from the real model's yes probabilities: joined only when both are >= 0.5
    both = lambda a, b: _yes(backend, question, a, b) >= 0.5 and _yes(backend, question, b, a) >= 0.5  # noqa: E731
    assert (clusters[2] == clusters[0]) == both("Berlin", "Paris")
    kept = ["Paris"] + ([] if clusters[2] == clusters[0] else ["Berlin"])
    joined = next((k for k in kept if both("Rome", k)), None)
    if joined is not None:
        assert clusters[3] == clusters[samples.index(joined)]
    assert (joined is None) == (clusters[3] not in clusters[:3])


@pytest.mark.model
def test_entailment_clustering_with_the_bundled_model(bundled_backend):
    """Obvious equivalences: "Paris"/"paris" (normalised) share a cluster; "Berlin" and "Tokyo" never join Paris."""
    asked = _Asked(bundled_backend)
    clusters = est.entailment_clusters(asked, "What is the capital of France?", ["Paris", "paris", "Berlin", "Tokyo"])
    assert clusters[0] == clusters[1] and clusters[2] != clusters[0] and clusters[3] != clusters[0]
    assert asked.calls and all(len(texts) % 2 == 0 for _, texts in asked.calls)
