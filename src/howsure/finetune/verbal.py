"""Teaching the model to say it: LoRA fine-tuning that makes the model end its own answer with
"Confidence: p", where p is a target probability per question (a probe's cross-fitted
P(correct), or any column the user names).

Each training record is a question, the model's own answer to it, whether that answer was right,
and the target. The prompt is the verbal-confidence task's prompt for the question (chat
template when the tokenizer has one) followed by the answer; the target is
``"\\nConfidence: p"`` (p rounded to ``decimals``) and the end-of-turn token. The loss is the
causal-LM cross-entropy of the target tokens only: no prompt position carries a label
(`completion_labels`, `completion_cross_entropy`).

Training runs through `howsure.finetune.trainer.finetune` (LoRA setup, content-hash split of the
questions into training and validation, checkpoints, resume, best checkpoint, metadata) with
`CompletionObjective` as its loss; the split's labels are the answers' correctness, so its
manifest counts right and wrong answers on each side.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from howsure.core.task import Task
from howsure.errors import DataError
from howsure.finetune.config import FinetuneConfig
from howsure.finetune.data import LabelledTexts, TrainValidationSplit
from howsure.finetune.trainer import FinetuneResult, finetune
from howsure.models import DEFAULT_MODEL

VERBAL_INSTRUCTION = ("Answer the question with a short phrase. Then, on a new line, write Confidence: and the "
                      "probability from 0 to 1 that your answer is right.\n\nQuestion: {text}")
CONFIDENCE_SEPARATOR = "\n"
IGNORE_INDEX = -100  # torch's cross_entropy ignore_index: positions that carry no loss

TRUE_WORDS = {"true", "1", "yes", "1.0"}
FALSE_WORDS = {"false", "0", "no", "0.0"}


def verbal_task(instruction: str = VERBAL_INSTRUCTION) -> Task:
    """The task whose prompt the adapter is trained on. Its labels are the answer's correctness
    (they name the two sides of the split's manifest); its fingerprint identifies the prompt in
    the adapter's metadata, so scoring a label task with this adapter is refused."""
    return Task(instruction=instruction, labels={"correct": ("right",), "wrong": ("wrong",)},
                name="verbal-confidence",
                description="howsure finetune-verbal: the answer, then 'Confidence: p' on a new line")


def confidence_text(probability: float, decimals: int = 1) -> str:
    """The words the model learns to say after its answer, e.g. ``"Confidence: 0.7"``."""
    return f"Confidence: {round(float(probability), decimals):.{decimals}f}"


@dataclass(frozen=True)
class VerbalRecords:
    """Questions, the model's own answers, their correctness and the target confidence of each."""

    questions: list[str]
    answers: list[str]
    correct: list[bool]
    targets: list[float]

    def __len__(self) -> int:
        return len(self.questions)

    def as_labelled(self) -> LabelledTexts:
        """The questions labelled by correctness, as `split_train_validation` splits them."""
        return LabelledTexts(list(self.questions), ["correct" if c else "wrong" for c in self.correct])


def read_verbal_file(path: str | Path, target_column: str = "target_confidence", question_column: str = "question",
                     answer_column: str = "answer", correct_column: str = "correct") -> VerbalRecords:
    """The records of a CSV/TSV/JSONL/JSON/Parquet file. A missing column, an empty question, a
    target that is missing, not a number or outside [0, 1], or a correctness that is not a
    boolean is a `DataError` naming the file, row and value."""
    from howsure.io.tables import read_table_with_lines

    frame, lines = read_table_with_lines(path)
    for column, option in ((question_column, "--question-column"), (answer_column, "--answer-column"),
                           (correct_column, "--correct-column"), (target_column, "--target-column")):
        if column not in frame.columns:
            raise DataError(f"input file {str(path)!r} has no column {column!r}; columns are: "
                            f"{', '.join(map(str, frame.columns))} (choose one with {option})")
    records = VerbalRecords([], [], [], [])
    for position, row in enumerate(frame[[question_column, answer_column, correct_column, target_column]]
                                   .itertuples(index=False)):
        where = f"{str(path)!r} line {lines[position]}" if lines else f"{str(path)!r} record {position + 1}"
        question, answer, correct, target = row
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: {question_column!r} is empty or not text ({question!r})")
        records.questions.append(question)
        records.answers.append("" if _missing(answer) else str(answer))
        records.correct.append(_boolean(correct, where, correct_column))
        records.targets.append(_probability(target, where, target_column))
    if not records.questions:
        raise DataError(f"input file {str(path)!r} has no records")
    return records


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _boolean(value: Any, where: str, column: str) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if not _missing(value) else ""
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise DataError(f"{where}: {column!r} is {value!r}, expected true or false (or 1 / 0)")


def _probability(value: Any, where: str, column: str) -> float:
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: no {column!r} value; every record needs a target confidence in [0, 1]")
    if isinstance(value, bool):
        raise DataError(f"{where}: {column!r} is {value!r}, expected a number in [0, 1]")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {column!r} is {value!r}, expected a number in [0, 1]") from None
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise DataError(f"{where}: {column!r} is {value!r}, outside [0, 1]")
    return number


class PromptBuilder:
    """The verbal-confidence prompt of a question as token ids, built as the backend builds
    prompts (chat template when the tokenizer has one, else the task's plain prompt)."""

    def __init__(self, tokenizer, task: Task) -> None:
        self.tokenizer = tokenizer
        self.task = task
        self.uses_chat_template = bool(getattr(tokenizer, "chat_template", None))

    def prompt(self, question: str) -> str:
        if self.uses_chat_template:
            return self.tokenizer.apply_chat_template(self.task.messages(question), tokenize=False,
                                                      add_generation_prompt=True)
        return self.task.plain_prompt(question) + " "

    def prompt_ids(self, question: str, answer: str) -> list[int]:
        """The question's prompt followed by the model's own answer."""
        return self.tokenizer.encode(self.prompt(question) + answer.strip(),
                                     add_special_tokens=not self.uses_chat_template)

    def target_ids(self, probability: float, decimals: int) -> list[int]:
        """``"\\nConfidence: p"`` and the end-of-turn token (so the model learns to stop)."""
        ids = self.tokenizer.encode(CONFIDENCE_SEPARATOR + confidence_text(probability, decimals),
                                    add_special_tokens=False)
        eos = self.tokenizer.eos_token_id
        return ids + ([eos] if eos is not None else [])


@dataclass(frozen=True)
class CompletionRow:
    prompt: list[int]
    target: list[int]


def completion_labels(rows: Sequence[CompletionRow], pad_id: int,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, labels) of right-padded rows: a label is the token itself on
    target positions and `IGNORE_INDEX` on every prompt and padding position."""
    width = max(len(r.prompt) + len(r.target) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        sequence = row.prompt + row.target
        ids[i, :len(sequence)] = torch.tensor(sequence)
        mask[i, :len(sequence)] = 1
        labels[i, len(row.prompt):len(sequence)] = torch.tensor(row.target)
    return ids.to(device), mask.to(device), labels.to(device)


def completion_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Causal-LM cross-entropy: position t's logits predict token t + 1; positions whose next
    token is labelled `IGNORE_INDEX` (the prompt, the padding) contribute nothing, not even a
    gradient. ``reduction="sum"`` gives the total over target tokens."""
    predicted = logits[:, :-1, :].float()
    following = labels[:, 1:]
    return torch.nn.functional.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), following.reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction=reduction)


def completion_loss(model, rows: Sequence[CompletionRow], pad_id: int, device, reduction: str = "mean") -> torch.Tensor:
    ids, mask, labels = completion_labels(rows, pad_id, device)
    return completion_cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels, reduction)


class CompletionObjective:
    """The trainer's loss for verbal confidence (the ``objective`` of
    `howsure.finetune.trainer.finetune`): target-token cross-entropy per training batch, the
    token-weighted mean over the validation split for the checkpoint choice."""

    def __init__(self, records: VerbalRecords, task: Task, decimals: int = 1) -> None:
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 3:
            raise DataError(f"decimals must be a whole number from 0 to 3, got {decimals!r}")
        self.records = records
        self.task = task
        self.decimals = decimals
        self.train_rows: list[CompletionRow] = []
        self.validation_rows: list[CompletionRow] = []
        self.pad_id = 0

    def fingerprint(self) -> str:
        """Everything besides the questions that decides the training targets (the trainer's run
        key already holds the task, the config and the questions of each split)."""
        blob = json.dumps({"kind": "verbal-confidence", "separator": CONFIDENCE_SEPARATOR, "decimals": self.decimals,
                           "answers": self.records.answers,
                           "targets": [confidence_text(t, self.decimals) for t in self.records.targets]},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def prepare(self, tokenizer, split: TrainValidationSplit, max_length: int) -> int:
        builder = PromptBuilder(tokenizer, self.task)
        validation = set(split.validation.texts)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.train_rows, self.validation_rows = [], []
        for i, (question, answer, target) in enumerate(zip(self.records.questions, self.records.answers,
                                                           self.records.targets)):
            row = CompletionRow(builder.prompt_ids(question, answer), builder.target_ids(target, self.decimals))
            if len(row.prompt) + len(row.target) > max_length:
                raise DataError(f"record {i + 1} makes {len(row.prompt) + len(row.target)} tokens, more than "
                                f"max_length={max_length}; raise --max-length or shorten it")
            (self.validation_rows if question in validation else self.train_rows).append(row)
        return len(self.train_rows)

    def train_loss(self, model, rows: list[int], device) -> torch.Tensor:
        return completion_loss(model, [self.train_rows[i] for i in rows], self.pad_id, device)

    def validation_loss(self, model, batch_size: int, device) -> float:
        order = sorted(self.validation_rows, key=lambda r: len(r.prompt) + len(r.target))
        total, tokens = 0.0, 0
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            total += float(completion_loss(model, chunk, self.pad_id, device, reduction="sum"))
            tokens += sum(len(r.target) for r in chunk)
        return total / tokens


def finetune_verbal(records: VerbalRecords, output: str | Path, *, model: str = DEFAULT_MODEL,
                    config: FinetuneConfig = FinetuneConfig(), decimals: int = 1, resume: bool = True,
                    device: str = "cpu", source: str | None = None, on_step: Callable | None = None,
                    instruction: str = VERBAL_INSTRUCTION) -> FinetuneResult:
    """Train the adapter (`howsure.finetune.trainer.finetune` with `CompletionObjective`); the
    questions of the validation split are never trained on."""
    task = verbal_task(instruction)
    return finetune(task, records.as_labelled(), output, model=model, config=config, resume=resume, device=device,
                    source=source, on_step=on_step, objective=CompletionObjective(records, task, decimals))
