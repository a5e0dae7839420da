"""Confidence estimators for a generated answer, each a number in [0, 1] (higher = more
confident) computed only from what its name says it uses:

=====================  ==================================================================
score name             what it reads
=====================  ==================================================================
token_mean_logprob     the answer tokens' mean log-probability (raw, <= 0; not in [0, 1])
token_geo_mean         exp(mean log-probability): the geometric mean token probability
token_min              the smallest answer-token probability
p_true                 the model asked whether its answer is true: label probability of
                       True/Yes under `P_TRUE_TASK`, read with the backend's label scoring
verbal                 the model asked for "Confidence: p"; `parse_confidence` of its reply
consistency            share of k sampled answers whose normalised form equals the greedy one
semantic_entropy       1 - H / log(k), H the entropy of the k samples' clusters of equivalent
                       answers (k samples in one cluster: 1; k clusters of one: 0)
=====================  ==================================================================

An empty answer has no tokens: its token scores are null. An unparseable verbal reply is null
and counted (never dropped or guessed).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

from howsure.answers.generation import Prompt
from howsure.answers.judges import normalise
from howsure.backends.base import Backend
from howsure.core.task import Task
from howsure.errors import DataError

ESTIMATOR_GROUPS = {
    "token": ("token_mean_logprob", "token_geo_mean", "token_min"),
    "p_true": ("p_true",),
    "verbal": ("verbal",),
    "consistency": ("consistency",),
    "semantic_entropy": ("semantic_entropy",),
}
SAMPLING_GROUPS = ("consistency", "semantic_entropy")
#: Scores that are not confidences in [0, 1] (left out of AUROC summaries' [0, 1] checks).
RAW_SCORES = ("token_mean_logprob",)

P_TRUE_TASK = Task(
    name="qa-p-true",
    instruction="{text}\n\nIs the proposed answer true? Answer True or False.",
    labels={"true": ("True", "Yes"), "false": ("False", "No")},
    description="P(True) of howsure qa: is the model's own proposed answer true?",
)
ENTAILMENT_TASK = Task(
    name="qa-entailment",
    instruction="{text}\n\nDoes answer A mean the same as answer B? Answer yes or no.",
    labels={"yes": ("yes",), "no": ("no",)},
    description="Semantic-entropy clustering of howsure qa: are two answers to a question equivalent?",
)
VERBAL_PROMPT = Prompt(
    instruction="{text}\n\nHow likely is the proposed answer to be correct? Reply with 'Confidence: p', "
                "p between 0 and 1.",
    examples=(
        ("Question: What is the capital of Japan?\nProposed answer: Tokyo", "0.95"),
        ("Question: Who was the 19th person to walk on the moon?\nProposed answer: Tom Baker", "0.1"),
        ("Question: In which year was the Eiffel Tower finished?\nProposed answer: 1887", "0.4"),
    ),
    system="Say how likely a proposed answer is to be correct.",
    answer_start="Confidence:",
)


def parse_estimators(text: str) -> list[str]:
    """``"token,p_true"`` -> the groups, checked against `ESTIMATOR_GROUPS`."""
    groups = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [g for g in groups if g not in ESTIMATOR_GROUPS]
    if unknown or not groups:
        raise DataError(f"estimator {unknown[0] if unknown else text!r} is not one of {', '.join(ESTIMATOR_GROUPS)}")
    return list(dict.fromkeys(groups))


def question_answer_text(question: str, answer: str) -> str:
    return f"Question: {question}\nProposed answer: {answer}"


# ---------------------------------------------------------------------- token probability
def token_scores(token_logprobs: Sequence[float]) -> dict[str, float | None]:
    """The three token scores of one answer from its tokens' log-probabilities (nothing else)."""
    if not token_logprobs:
        return dict.fromkeys(ESTIMATOR_GROUPS["token"])
    mean = sum(token_logprobs) / len(token_logprobs)
    return {"token_mean_logprob": mean, "token_geo_mean": math.exp(mean), "token_min": math.exp(min(token_logprobs))}


# ---------------------------------------------------------------------- P(True)
def p_true(backend: Backend, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
    """Label probability of True/Yes (normalised over the two labels) for each proposed answer."""
    texts = [question_answer_text(q, a) for q, a in zip(questions, answers)]
    return [float(s.probabilities[0]) for s in backend.label_scores(P_TRUE_TASK, texts)]


# ---------------------------------------------------------------------- verbalised confidence
_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
#: Words read as a confidence when no number is given, longest first where one contains another.
CONFIDENCE_WORDS = (
    ("very high", 0.9), ("very low", 0.1), ("extremely high", 0.95), ("extremely low", 0.05),
    ("not sure", 0.3), ("unsure", 0.3), ("uncertain", 0.3), ("certain", 0.95), ("sure", 0.9),
    ("high", 0.8), ("medium", 0.5), ("moderate", 0.5), ("low", 0.2),
)
_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_WORD_NUMBER = re.compile(r"\b(one hundred|hundred|(?:" + "|".join(_TENS) + r")(?:[\s-](?:" +
                          "|".join(u for u in _UNITS if _UNITS[u] < 10 and u != "zero") + r"))?|" +
                          "|".join(_UNITS) + r")\s*(?:percent|per cent|%)")


def _in_unit(value: float) -> float | None:
    return value if 0 <= value <= 1 else None


def parse_confidence(text: str | None) -> float | None:
    """A confidence in [0, 1] from a model's reply, or None when there is none to read. Tried in
    order: a fraction ("8/10", "4 out of 5"); a percentage ("80%", "80 percent", "eighty
    percent"); a number after "confidence" ("Confidence: 0.8", whole numbers 2..100 read as
    percent: "Confidence: 85"); the first number in [0, 1] anywhere; a word of
    `CONFIDENCE_WORDS` ("high", "very low")."""
    if not text:
        return None
    lower = text.lower().replace(",", ".") if re.search(r"\d,\d", text) else text.lower()
    if match := re.search(r"(\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+(?:\.\d+)?)", lower):
        numerator, denominator = float(match[1]), float(match[2])
        return _in_unit(numerator / denominator) if denominator > 0 else None
    if match := re.search(_NUMBER + r"\s*(?:%|percent|per cent)", lower):
        return _in_unit(float(match[1]) / 100)
    if match := _WORD_NUMBER.search(lower):
        words = match[1].replace("-", " ").split()
        if words[-1] == "hundred":
            return 1.0
        value = sum(_TENS.get(w, 0) + _UNITS.get(w, 0) for w in words)
        return _in_unit(value / 100)
    if match := re.search(r"confidence\w*\s*(?:level|score)?\s*(?:[:=]|is|of)?\s*(-?" + _NUMBER + ")", lower):
        value = float(match[1])
        if 0 <= value <= 1:
            return value
        return value / 100 if value.is_integer() and 1 < value <= 100 else None
    for match in re.finditer(r"(?<![\d.-])" + _NUMBER, lower):
        value = float(match[1])
        if 0 <= value <= 1:
            return value
    for word, value in CONFIDENCE_WORDS:
        if re.search(r"\b" + word + r"\b", lower):
            return value
    return None


# ---------------------------------------------------------------------- sampling
def _check_samples(samples: Sequence[str]) -> None:
    if len(samples) < 2:
        raise DataError(f"sampling estimators need k >= 2 samples per question, got k = {len(samples)}; "
                        "pass --samples 2 or more")


def consistency(greedy: str, samples: Sequence[str]) -> float:
    """Share of ``samples`` whose normalised answer equals the greedy answer's."""
    _check_samples(samples)
    target = normalise(greedy)
    return sum(normalise(s) == target for s in samples) / len(samples)


def normalised_clusters(samples: Sequence[str]) -> list[int]:
    """Cluster index of each sample: samples with the same normalised answer share one."""
    index: dict[str, int] = {}
    return [index.setdefault(normalise(s), len(index)) for s in samples]


def entailment_clusters(backend: Backend, question: str, samples: Sequence[str]) -> list[int]:
    """Clusters by bidirectional entailment through ``backend``: answers equal after
    normalisation share a cluster; otherwise an answer joins the first cluster whose first member
    it entails and is entailed by (yes probability >= 0.5 both ways), as Kuhn et al. cluster."""
    first = normalised_clusters(samples)
    representatives: dict[int, str] = {}
    for sample, c in zip(samples, first):
        representatives.setdefault(c, sample)
    merged: dict[int, int] = {}
    kept: list[int] = []
    for c, text in representatives.items():
        target = c
        if kept:
            pairs = [(text, representatives[k]) for k in kept] + [(representatives[k], text) for k in kept]
            texts = [f"Question: {question}\nAnswer A: {a}\nAnswer B: {b}" for a, b in pairs]
            yes = [s.probabilities[0] >= 0.5 for s in backend.label_scores(ENTAILMENT_TASK, texts)]
            for j, k in enumerate(kept):
                if yes[j] and yes[len(kept) + j]:
                    target = k
                    break
        if target == c:
            kept.append(c)
        merged[c] = target
    return [merged[c] for c in first]


def semantic_entropy(clusters: Sequence[int]) -> float:
    """1 - H / log(k) over the clusters of k samples (H in nats): 1 when all agree, 0 when all
    differ."""
    k = len(clusters)
    if k < 2:
        raise DataError(f"semantic entropy needs k >= 2 samples per question, got k = {k}; pass --samples 2 or more")
    counts = Counter(clusters).values()
    entropy = -sum(c / k * math.log(c / k) for c in counts)
    return max(0.0, 1.0 - entropy / math.log(k))
