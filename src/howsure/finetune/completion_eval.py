"""Verbal confidence before and after `howsure.finetune.verbal` training: the model (base, or
base with the adapter merged in) continues the verbal-confidence prompt and its own answer, and
the number it says is read and scored against the answers' correctness.

The answer is held fixed (the record's, whose correctness is known), so before and after differ
only in what the model says about it. Scores: AUROC, ECE (15 equal-width bins), RMS calibration
error (adaptive bins of 100 items, `howsure.stats.metrics.rms_calibration_error`), the share of
distinct confidence values (a constant "Confidence: 0.5" has a share of 1/n and AUROC 0.5; one
value said for 90 % of the answers or more is flagged), and how many outputs said no readable confidence (counted, never dropped silently:
the metrics are over the readable ones and the count stands beside them).

The stated number is read by `howsure.answers.estimators.parse_confidence`, the parser
`howsure qa`'s verbal estimator uses ("Confidence: 0.8", "80%", "eighty percent", "high"), so
both judge the same words the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from howsure.answers.estimators import parse_confidence
from howsure.answers.generation import AnswerGenerator
from howsure.core.task import Task
from howsure.errors import DataError
from howsure.finetune.verbal import CONFIDENCE_SEPARATOR, PromptBuilder, VerbalRecords
from howsure.stats.metrics import auroc, expected_calibration_error, rms_calibration_error

# One value said for at least this share of the answers: the confidence barely ranks anything
# (a one-decimal confidence has at most 11 values, so the distinct share alone cannot say this).
FLAT_MODE_SHARE = 0.9


def verbal_outputs(generator: AnswerGenerator, records: VerbalRecords, task: Task, *,
                   on_batch: Callable[[int], None] | None = None) -> list[str]:
    """What the model says after each record's question and answer: `AnswerGenerator`'s greedy
    continuation of the prompt ids `PromptBuilder` trains on (``generator.max_new_tokens`` and
    ``generator.batch_size`` apply; build it with ``stop=()`` so only the end-of-turn token ends
    the continuation, as in training)."""
    builder = PromptBuilder(generator.tokenizer, task)
    answers = generator.continue_ids([builder.prompt_ids(q, a) for q, a in zip(records.questions, records.answers)],
                                     progress=on_batch)
    return [answer.text for answer in answers]


def confidence_after_answer(output: str) -> float | None:
    """The confidence stated in a continuation (the text after the answer)."""
    return parse_confidence(output.strip().removeprefix(CONFIDENCE_SEPARATOR.strip()))


@dataclass(frozen=True)
class VerbalScores:
    """How well stated confidences rank and match correctness."""

    n: int
    n_readable: int
    accuracy: float
    auroc: float | None
    ece: float | None
    rms_calibration_error: float | None
    distinct_share: float | None
    mean_confidence: float | None
    flags: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return {k: getattr(self, k) for k in ("n", "n_readable", "accuracy", "auroc", "ece", "rms_calibration_error",
                                              "distinct_share", "mean_confidence")} | {"flags": self.flags}


def score_confidences(correct: Sequence[bool], confidences: Sequence[float | None], rms_bin_size: int = 100) -> VerbalScores:
    """`VerbalScores` of stated confidences (None: unreadable) against correctness."""
    if len(correct) != len(confidences):
        raise DataError(f"{len(correct)} correctness values but {len(confidences)} confidences")
    readable = [i for i, c in enumerate(confidences) if c is not None]
    y_all = np.asarray(correct, dtype=int)
    flags = []
    if len(readable) < len(confidences):
        flags.append(f"{len(confidences) - len(readable)} of {len(confidences)} outputs state no readable confidence")
    if not readable:
        return VerbalScores(len(correct), 0, float(y_all.mean()), None, None, None, None, None, flags)
    y = y_all[readable]
    p = np.asarray([confidences[i] for i in readable], dtype=float)
    values, counts = np.unique(p, return_counts=True)
    if counts.max() >= FLAT_MODE_SHARE * len(p):
        flags.append(f"nearly flat: {values[counts.argmax()]:g} for {counts.max()} of {len(p)} answers "
                     f"({len(values)} distinct value(s))")
    both_classes = 0 < y.sum() < len(y)
    if not both_classes:
        flags.append("every readable answer is right, or every one wrong: no AUROC")
    rms = rms_calibration_error(y, p, beta=rms_bin_size)  # one bin when fewer than rms_bin_size items
    if len(p) < rms_bin_size:
        flags.append(f"only {len(p)} readable answers: RMS calibration error over one bin")
    return VerbalScores(len(correct), len(readable), float(y_all.mean()), auroc(y, p) if both_classes else None,
                        expected_calibration_error(y, p), rms, len(values) / len(p), float(p.mean()), flags)
