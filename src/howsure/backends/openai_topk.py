"""Label masses from a server's top-k log-probabilities, as intervals.

A server returns the k most probable next tokens as strings. Each returned token is matched to
the labels by the task's variant rule (`howsure.core.task.normalize_answer` for ``variants``,
`howsure.backends.labels.continuation_text` for ``exact``), the same rules the transformers
backend applies to its whole vocabulary. What the server did not return is unknown, not zero:

* ``lower`` (the mass seen): the returned tokens that are one of the label's answers;
* ``upper``: ``lower`` plus the returned tokens that could begin one of its answers (a proper
  prefix, such as ``"neg"`` of ``"negative"``: the rest of the answer has probability <= 1),
  plus what the unreturned tokens can hold. Every unreturned token has probability <= the k-th
  returned one (``p_k``) and together they hold at most ``1 - returned mass``. Under ``exact`` a
  label's answers begin with one token per verbalizer, so at most ``min(1 - returned,
  n_unreturned_verbalizers * p_k)`` of it is unseen; under ``variants`` any number of tokens may spell a
  verbalizer, so the bound is ``1 - returned``.

The point estimate (``label_mass``, ``probabilities``) is the mass seen, as if the rest were
zero; `howsure.core.scored.conservative_rows` is what calibration and certification use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from howsure.backends.labels import continuation_text
from howsure.core.scores import LabelScores
from howsure.core.task import Task, normalize_answer
from howsure.errors import ModelError

# Servers round; a returned log-probability this far above 0 is still read as 0.
LOGPROB_ROUNDING = 1e-4


@dataclass(frozen=True)
class AnswerMatcher:
    """Which token strings count for which label under one task's variant rule.

    ``answers[j]``: the label's answers as compared (normalised under ``variants``, the exact
    continuation strings under ``exact``)."""

    labels: list[str]
    rule: str
    answers: list[tuple[str, ...]]

    @classmethod
    def of(cls, task: Task, answer_context: str) -> "AnswerMatcher":
        """For ``task`` with the answer following ``answer_context`` (the end of the prompt; a
        chat template's assistant turn ends in whitespace or a special token, so pass ``""``)."""
        if task.variant_rule == "variants":
            answers = [tuple(dict.fromkeys(normalize_answer(v) for v in vs)) for vs in task.labels.values()]
        else:
            answers = [tuple(dict.fromkeys(continuation_text(answer_context, v) for v in vs))
                       for vs in task.labels.values()]
        return cls(task.label_names, task.variant_rule, answers)

    def key(self, token: str) -> str:
        return normalize_answer(token) if self.rule == "variants" else token

    def owner(self, token: str) -> int | None:
        """Index of the label ``token`` is an answer of, or None."""
        key = self.key(token)
        for j, answers in enumerate(self.answers):
            if key in answers:
                return j
        return None

    def begins(self, token: str) -> list[int]:
        """Labels one of whose answers ``token`` could begin without being it."""
        key = self.key(token)
        if not key:
            return []
        return [j for j, answers in enumerate(self.answers)
                if any(a != key and a.startswith(key) for a in answers)]

    def unseen_bound(self, j: int, seen: set[str], unseen_total: float, kth: float) -> float:
        """At most how much of label ``j`` the server did not return, ``seen`` being its answers
        returned as whole tokens: under ``exact`` each other answer begins with one unreturned
        token (<= ``kth``); under ``variants`` any number of tokens may spell one."""
        if self.rule == "exact":
            return min(unseen_total, sum(a not in seen for a in self.answers[j]) * kth)
        return unseen_total


def scores_from_top_logprobs(matcher: AnswerMatcher, top: Sequence[tuple[str, float]], *, top_k: int,
                             details: bool = False) -> tuple[LabelScores, float]:
    """`LabelScores` with `label_mass_bounds` from one answer position's returned tokens, and the
    labels' share of the returned mass (low: the model mostly answers other words, or the labels
    sit below the top k).

    Parameters
    ----------
    matcher : AnswerMatcher
    top : sequence of (token, logprob)
        What the server returned, in any order.
    top_k : int
        How many of them to keep as ``top_tokens``.
    details : bool
        Fill ``variants`` with the returned tokens that count for each label.
    """
    for token, lp in top:
        # A NaN or a positive log-probability is a broken server, not a probability: read as
        # one it would inflate a label's mass past 1 or, dropped, make the other label certain.
        if lp is not None and not (isinstance(lp, (int, float)) and (lp <= LOGPROB_ROUNDING or lp == -math.inf)):
            raise ModelError(f"the server returned log-probability {lp!r} for token {token!r}; a log-probability "
                             "is a number <= 0, so its scores cannot be read")
    probs = sorted(((token, math.exp(min(lp, 0.0))) for token, lp in top if lp is not None and lp > -math.inf),
                   key=lambda row: -row[1])
    n_labels = len(matcher.labels)
    lower = np.zeros(n_labels)
    begun = np.zeros(n_labels)
    seen: list[set[str]] = [set() for _ in range(n_labels)]
    counted: dict[str, list[tuple[str, float]]] = {label: [] for label in matcher.labels}
    for token, p in probs:
        owner = matcher.owner(token)
        if owner is not None:
            lower[owner] += p
            seen[owner].add(matcher.key(token))
            counted[matcher.labels[owner]].append((token, p))
            continue
        for j in matcher.begins(token):
            begun[j] += p
    returned = float(sum(p for _, p in probs))
    unseen_total = max(0.0, 1.0 - returned)
    kth = probs[-1][1] if probs else 1.0
    upper = np.array([min(1.0, lower[j] + begun[j] + matcher.unseen_bound(j, seen[j], unseen_total, kth))
                      for j in range(n_labels)])
    total = float(lower.sum())
    probabilities = lower / total if total > 0 else np.full(n_labels, 1.0 / n_labels)
    scores = LabelScores(
        labels=list(matcher.labels),
        probabilities=probabilities,
        label_mass=lower,
        other_mass=max(0.0, 1.0 - total),
        top_tokens=probs[:top_k],
        variants=counted if details else {},
        label_mass_bounds=np.stack([lower, upper], axis=1),
    )
    return scores, (total / returned if returned > 0 else 0.0)


__all__ = ["AnswerMatcher", "scores_from_top_logprobs"]
