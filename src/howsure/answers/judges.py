"""Is a generated answer right? Rules tried in order, the first that accepts it decides:

1. ``exact``: the normalised answer equals the normalised first gold answer;
2. ``alias``: it equals any other gold alias, normalised;
3. ``f1``: the token F1 against some gold answer reaches ``f1_threshold`` (SQuAD's token F1
   over normalised words);
4. ``llm`` (only when a judge backend is given): the backend's label scoring of a yes/no task
   (`JUDGE_TASK`) puts at least half the label mass on yes.

When none accepts, the last rule tried decides "wrong" (``f1``, or ``llm`` when there is one).
Normalisation (`normalise`) is SQuAD's: lower case, punctuation and the articles a/an/the
removed, whitespace collapsed.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from howsure.backends.base import Backend
from howsure.core.task import Task
from howsure.errors import DataError

JUDGES = ("exact", "alias", "f1", "llm")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014"}

JUDGE_TASK = Task(
    name="qa-judge",
    instruction="{text}\n\nDoes the proposed answer mean the same as one of the gold answers? Answer yes or no.",
    labels={"yes": ("yes",), "no": ("no",)},
    description="LLM judge of howsure qa: is a proposed answer one of the gold answers?",
)


def normalise(text: str) -> str:
    """Lower case, accents folded, punctuation and articles removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch) and ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 between two answers after `normalise`."""
    pred, ref = normalise(prediction).split(), normalise(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    judge: str


@dataclass(frozen=True)
class AnswerJudge:
    """Judges answers by the rules of the module docstring; ``llm`` is any backend (or None)."""

    f1_threshold: float = 0.5
    llm: Backend | None = None

    def __post_init__(self) -> None:
        if not 0 < self.f1_threshold <= 1:
            raise DataError(f"the F1 threshold must be in (0, 1], got {self.f1_threshold!r}")

    def rules(self, answer: str, gold: Sequence[str]) -> Verdict | None:
        """The verdict of the first rule that accepts ``answer``, else None."""
        if not gold:
            raise DataError("an answer cannot be judged against an empty gold list")
        said = normalise(answer)
        if said and said == normalise(gold[0]):
            return Verdict(True, "exact")
        if said and any(said == normalise(alias) for alias in gold[1:]):
            return Verdict(True, "alias")
        if max(token_f1(answer, alias) for alias in gold) >= self.f1_threshold and said:
            return Verdict(True, "f1")
        return None

    def judge(self, questions: Sequence[str], answers: Sequence[str], golds: Sequence[Sequence[str]]) -> list[Verdict]:
        verdicts = [self.rules(answer, gold) for answer, gold in zip(answers, golds)]
        if self.llm is None:
            return [v or Verdict(False, "f1") for v in verdicts]
        ask = [i for i, v in enumerate(verdicts) if v is None]
        if ask:
            texts = [judge_text(questions[i], answers[i], golds[i]) for i in ask]
            for i, scores in zip(ask, self.llm.label_scores(JUDGE_TASK, texts)):
                verdicts[i] = Verdict(bool(scores.probabilities[0] >= 0.5), "llm")
        return verdicts  # type: ignore[return-value]


def judge_text(question: str, answer: str, gold: Sequence[str]) -> str:
    return f"Question: {question}\nGold answers: {'; '.join(gold)}\nProposed answer: {answer}"
