"""Training data for a fine-tune: labelled texts read from a file, checked against the task, and
split into training and validation parts by content hash (exact duplicates on one side)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from howsure.calibration.fitting import HASH_DIGITS, fit_fingerprint, item_hashes
from howsure.core.task import Task
from howsure.errors import DataError


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with gold label names (already mapped to the task's labels)."""

    texts: list[str]
    labels: list[str]


@dataclass(frozen=True)
class TrainValidationSplit:
    """The two parts of the training data and the manifest that records how they were made."""

    train: LabelledTexts
    validation: LabelledTexts
    manifest: dict[str, Any]


def read_labelled_file(path: str | Path, task: Task, text_column: str = "text", label_column: str = "label",
                       label_map: Mapping[str, str] | None = None) -> LabelledTexts:
    """The labelled texts of a CSV/TSV/JSONL/JSON/Parquet file, every label one of the task's.

    A missing label column, an empty text or a label the task does not have is a `DataError`
    naming it (the columns present, the row, the label and the task's labels)."""
    from howsure.io.tables import read_table_with_lines
    from howsure.io.texts import extract_texts

    frame, lines = read_table_with_lines(path)
    if label_column not in frame.columns:
        raise DataError(
            f"training file {str(path)!r} has no label column {label_column!r}; columns are: "
            f"{', '.join(map(str, frame.columns))} (choose one with --label-column)"
        )
    rows = extract_texts(frame, text_column, None, label_column, lines)
    if rows.invalid:
        row, reason = rows.invalid[0]
        raise DataError(f"training file {str(path)!r}: {rows.where(row)} has {reason}; "
                        f"{len(rows.invalid)} row(s) have no usable text")
    mapping = dict(label_map or {})
    labels = []
    for row, raw in zip(rows.row_numbers, rows.labels):
        label = mapping.get(raw, raw)
        if label not in task.labels:
            raise DataError(
                f"training file {str(path)!r}: {rows.where(row)} has label {raw!r}, which is not one of the "
                f"task's labels {task.label_names}" + ("" if mapping else " (map raw values with --label-map RAW=LABEL)")
            )
        labels.append(label)
    return LabelledTexts(rows.texts, labels)


def split_train_validation(data: LabelledTexts, task: Task, validation_fraction: float) -> TrainValidationSplit:
    """Split by each text's content hash (calibration's fit-item hash): a text goes to validation
    when its hash, read as a fraction of 2**64, is below ``validation_fraction``. The same text
    always lands on the same side, whatever else is in the file, and the split needs no seed.

    A label with no training example is a `DataError` naming it; so is an empty validation part."""
    if len(data.texts) != len(data.labels):
        raise DataError(f"{len(data.texts)} texts but {len(data.labels)} labels")
    scale = 16 ** HASH_DIGITS
    train_texts, train_labels, val_texts, val_labels = [], [], [], []
    for text, label, digest in zip(data.texts, data.labels, item_hashes(data.texts, "text")):
        if int(digest, 16) / scale < validation_fraction:
            val_texts.append(text)
            val_labels.append(label)
        else:
            train_texts.append(text)
            train_labels.append(label)
    counts = Counter(train_labels)
    for label in task.label_names:
        if not counts[label]:
            raise DataError(
                f"label {label!r} has no example in the training split ({len(train_texts)} training texts, "
                f"labels present: {dict(counts) or 'none'}); add examples of it"
            )
    if not val_texts:
        raise DataError(
            f"the validation split is empty ({len(data.texts)} texts at validation_fraction={validation_fraction}); "
            "give more texts or a larger validation fraction"
        )
    manifest = {
        "method": "content hash: a text is in validation when its sha256 fit-item hash / 16**16 < fraction",
        "validation_fraction": validation_fraction,
        "train": {"n_items": len(train_texts), "per_label": _per_label(task, train_labels),
                  "items": fit_fingerprint(train_texts)},
        "validation": {"n_items": len(val_texts), "per_label": _per_label(task, val_labels),
                       "items": fit_fingerprint(val_texts)},
    }
    return TrainValidationSplit(LabelledTexts(train_texts, train_labels), LabelledTexts(val_texts, val_labels),
                                manifest)


def _per_label(task: Task, labels: Sequence[str]) -> dict[str, int]:
    counts = Counter(labels)
    return {label: counts[label] for label in task.label_names}
