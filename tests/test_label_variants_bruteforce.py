"""Which tokens count for each label, checked against a brute force over the whole vocabulary.

Every token id of the tokenizer is decoded on its own and compared with the verbalizers as
src/howsure/task.py documents the rules, written here from that text and not from the backend's
code: under ``variants`` a label counts every (non-special) token whose decoded string, stripped
and case-folded, equals one of its verbalizers stripped and case-folded; a verbalizer no single
token spells is read as token sequences. Under ``exact`` each verbalizer counts exactly as it
would follow the prompt: one token or one sequence that decodes to the verbalizer, after a space
unless the prompt ends in whitespace. On the tiny model and, marked ``model``, the bundled one.
"""

from __future__ import annotations

import functools

import pytest

from howsure.backends import load_backend
from howsure.core.task import load_task, Task

# Case variants in the verbalizers themselves, two verbalizers on one label, and multi-token
# verbalizers ("not sure", "world news") that no single token spells.
TINY_TASK_LABELS = {
    "positive": ["positive", "good"],
    "negative": ["NEGATIVE", "bad"],
    "neutral": ["neutral"],
    "unsure": ["not sure", "maybe"],
}
BUNDLED_TASK_LABELS = {
    "sports": ["sports"],
    "business": ["Business", "finance"],
    "world": ["world news"],
    "science": ["science", "tech"],
}


@functools.lru_cache(maxsize=4)
def decoded_vocabulary(tokenizer) -> tuple[str | None, ...]:
    """Each token id decoded alone; None for the special tokens (no answer is a special token)."""
    special = set(tokenizer.all_special_ids)
    return tuple(None if token_id in special else tokenizer.decode([token_id]) for token_id in range(len(tokenizer)))


def same_answer(decoded: str, verbalizer: str) -> bool:
    return decoded.strip().casefold() == verbalizer.strip().casefold()


def brute_force_variant_ids(tokenizer, verbalizer: str) -> set[int]:
    return {token_id for token_id, decoded in enumerate(decoded_vocabulary(tokenizer))
            if decoded is not None and same_answer(decoded, verbalizer)}


def check_variants_rule(backend, task: Task) -> int:
    """Assert the backend's token sets are the brute force's; returns how many tokens count."""
    assert task.variant_rule == "variants"
    tokenizer = backend.tokenizer
    vocab = backend.prepare(task).vocab
    counted = 0
    for index, (label, verbalizers) in enumerate(task.labels.items()):
        expected: set[int] = set()
        spelled_by_no_token = []
        for verbalizer in verbalizers:
            found = brute_force_variant_ids(tokenizer, verbalizer)
            expected |= found
            if not found:
                spelled_by_no_token.append(verbalizer)
        assert set(vocab.token_ids[index].tolist()) == expected, label
        # The sequences are the verbalizers no single token spells, each in at least one
        # spelling, and nothing else.
        sequence_answers = [tokenizer.decode(list(seq)) for seq in vocab.sequences[index]]
        assert all(len(seq) >= 2 for seq in vocab.sequences[index])
        for answer in sequence_answers:
            assert any(same_answer(answer, v) for v in spelled_by_no_token), (label, answer)
        for verbalizer in spelled_by_no_token:
            assert any(same_answer(answer, verbalizer) for answer in sequence_answers), (label, verbalizer)
        counted += len(expected)
    return counted


def check_exact_rule(backend, task: Task) -> None:
    assert task.variant_rule == "exact"
    tokenizer = backend.tokenizer
    vocab = backend.prepare(task).vocab
    marker = "MARKERWHERETHETEXTGOES"
    prompt_end = backend.prompt(task, marker).partition(marker)[2]
    for index, (label, verbalizers) in enumerate(task.labels.items()):
        counted = [tokenizer.decode([int(t)]) for t in vocab.token_ids[index]]
        counted += [tokenizer.decode(list(seq)) for seq in vocab.sequences[index]]
        spaced = "" if not prompt_end or prompt_end[-1].isspace() else " "
        assert sorted(counted) == sorted(spaced + v for v in verbalizers), label


@pytest.fixture(scope="module")
def tiny_backends(tiny_model_dir, tiny_plain_model_dir):
    return [load_backend(str(tiny_model_dir)), load_backend(str(tiny_plain_model_dir))]


def test_variants_on_the_tiny_models_equal_a_brute_force_over_the_vocabulary(tiny_backends):
    task = Task(instruction="Which? {text}", labels=TINY_TASK_LABELS, variant_rule="variants")
    for backend in tiny_backends:
        counted = check_variants_rule(backend, task)
        # Not vacuous: the tiny vocabulary spells 'positive' in several cases and spacings.
        assert counted > len(TINY_TASK_LABELS)
        assert len(brute_force_variant_ids(backend.tokenizer, "positive")) >= 3


def test_exact_on_the_tiny_models_counts_each_verbalizer_as_it_follows_the_prompt(tiny_backends):
    task = Task(instruction="Which? {text}", labels=TINY_TASK_LABELS, variant_rule="exact")
    chat, plain = tiny_backends  # the chat prompt ends in a newline, the plain one in "Answer:"
    for backend in tiny_backends:
        check_exact_rule(backend, task)
    def counted(backend):
        return [ids.tolist() for ids in backend.prepare(task).vocab.token_ids]

    assert counted(plain) != counted(chat)  # ' positive' after "Answer:", 'positive' on a new line


@pytest.mark.model
def test_variants_and_exact_on_the_bundled_model_equal_the_brute_force(bundled_backend):
    bundled = load_task("sentiment")
    topics = Task(instruction="What is this news about? {text}", labels=BUNDLED_TASK_LABELS, variant_rule="variants")
    assert check_variants_rule(bundled_backend, topics) > len(BUNDLED_TASK_LABELS)
    variants = Task(**{**bundled.to_dict(), "variant_rule": "variants"})
    assert check_variants_rule(bundled_backend, variants) > len(bundled.labels)
    check_exact_rule(bundled_backend, bundled)
