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
import torch

from howsure.answers.estimators import parse_confidence
from howsure.core.task import Task
from howsure.errors import DataError
from howsure.finetune.verbal import CONFIDENCE_SEPARATOR, PromptBuilder, VerbalRecords
from howsure.stats.metrics import auroc, expected_calibration_error, rms_calibration_error

# One value said for at least this share of the answers: the confidence barely ranks anything
# (a one-decimal confidence has at most 11 values, so the distinct share alone cannot say this).
FLAT_MODE_SHARE = 0.9


def greedy_continuations(model, tokenizer, prompts: Sequence[list[int]], *, max_new_tokens: int = 12,
                         batch_size: int = 16, device: torch.device | str = "cpu",
                         on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Greedy continuation text of each prompt (token ids), in batches of left-padded prompts,
    stopping at the end-of-turn token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        with torch.no_grad():
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=pad,
                                       eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(chunk):
            out[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True)
        if on_batch is not None:
            on_batch(len(chunk))
    return out


def verbal_outputs(model, tokenizer, records: VerbalRecords, task: Task, **kwargs) -> list[str]:
    """What the model says after each record's question and answer."""
    builder = PromptBuilder(tokenizer, task)
    return greedy_continuations(model, tokenizer, [builder.prompt_ids(q, a) for q, a in
                                                   zip(records.questions, records.answers)], **kwargs)


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
