"""Scored items read for the decision commands (thresholds, route, plan) as `ScoredItems`, and
the one parser of correctness values. No pandas: these commands start in about a second.

``howsure score`` output (a ``probabilities`` object per record) or any table with the
predicted label's ``confidence`` and a ``prediction`` column; the truth from a gold-label or a
correctness column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from howsure.core.scored import ScoredItems, conservative_rows
from howsure.errors import DataError, PolicyError
from howsure.io.records import read_records

TRUE_WORDS = {"true", "1", "yes", "y", "t", "1.0"}
FALSE_WORDS = {"false", "0", "no", "n", "f", "0.0"}


def parse_correctness(value: Any, row: int, column: str) -> float:
    """1.0 or 0.0 from a correctness cell: a bool, 0/1, or a word of `TRUE_WORDS`/`FALSE_WORDS`."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return 1.0
    if word in FALSE_WORDS:
        return 0.0
    try:
        number = float(word)
    except ValueError:
        number = float("nan")
    if number in (0.0, 1.0):
        return number
    raise DataError(f"column {column!r} row {row}: {value!r} is not a correctness; expected true/false or 1/0")


def _parse_value(value: Any) -> Any:
    """Cells of CSV files are strings: turn JSON objects and numbers back into values."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{"):
            try:
                return json.loads(stripped)
            except json.JSONDecodeError:
                return value
        try:
            return float(stripped)
        except ValueError:
            return value
    return value


def _column_or_none(records: list[dict[str, Any]], column: str) -> list[str] | None:
    """Every record's value in ``column`` as text, or None unless all records have one."""
    values = [record.get(column) for record in records]
    return None if any(v is None or v == "" for v in values) else [str(v) for v in values]


def read_scored(
    path: Path,
    *,
    prob_column: str | None = None,
    label_column: str | None = None,
    correct_column: str | None = None,
    prediction_column: str = "prediction",
    labels: list[str] | None = None,
    read_truth: bool = True,
) -> ScoredItems:
    """Read scored items, keeping the records as read (``records``) and each predicted label.

    ``prob_column`` holds either an object ``{label: probability}`` per record (``howsure
    score`` output: column ``probabilities``) or one number, the predicted label's confidence
    (column ``confidence``; the prediction then comes from ``prediction_column``). The truth
    comes from ``label_column`` (default ``label``, else ``expected``) or ``correct_column``
    (default ``correct``). ``labels`` fixes the label names and their order (from the task or
    the policy); otherwise they are read from the data. ``read_truth=False`` ignores gold labels
    and correctness (routing does not need them): ``correct`` is then None.
    """
    records = read_records(path)
    first = records[0]
    if prob_column is None:
        prob_column = next((c for c in ("probabilities", "confidence") if c in first), None)
        if prob_column is None:
            raise DataError(
                f"{path} has no 'probabilities' or 'confidence' column (columns: {sorted(first)}); "
                "name yours with --prob-column"
            )
    if read_truth and label_column is None:
        label_column = next((c for c in ("label", "expected") if c in first), None)
    if read_truth and correct_column is None and "correct" in first:
        correct_column = "correct"
    for column in (prob_column, label_column, correct_column):
        if column is not None and column not in first:
            raise DataError(f"{path} has no column {column!r}; its columns are {sorted(first)}")

    values = [_parse_value(r.get(prob_column)) for r in records]
    gold = None
    if label_column is not None:
        gold = [None if r.get(label_column) in (None, "") else str(r[label_column]) for r in records]
        if any(g is None for g in gold):
            gold = None if all(g is None for g in gold) else gold
            if gold is not None:
                missing = gold.index(None)
                raise DataError(f"record {missing} of {path} has no gold label in column {label_column!r}")

    if isinstance(values[0], dict):
        names, probabilities = _label_probabilities(values, prob_column, labels)
        predicted_index = probabilities.argmax(axis=1)
        kind = "label probabilities"
        bounds = mass_bounds(records, names)
        if bounds is not None:  # a server's top k only: the predicted label at its worst case
            probabilities = conservative_rows(probabilities, bounds)
            kind = "label probabilities, conservative within label mass bounds"
        confidence = probabilities[np.arange(len(records)), predicted_index]
        predicted = [names[i] for i in predicted_index]
    else:
        try:
            confidence = np.array([float(v) for v in values])
        except (TypeError, ValueError):
            bad = next(i for i, v in enumerate(values) if not isinstance(v, (int, float)))
            raise DataError(f"record {bad}: column {prob_column!r} must be a number or an object of label probabilities, got {values[bad]!r}") from None
        if prediction_column not in first:
            raise DataError(
                f"column {prob_column!r} holds one confidence per item, so the predicted label must "
                f"come from a column; {path} has no {prediction_column!r} (use --prediction-column)"
            )
        predicted = [str(r[prediction_column]) for r in records]
        names = labels if labels is not None else sorted(set(predicted) | set(gold or []))
        probabilities = _two_label_distribution(confidence, predicted, names)
        kind = "predicted label and its confidence"
    if len(names) < 2:
        raise DataError(f"found only the label(s) {names} in {path}; pass --task to name all labels")
    columns = {"probability": prob_column}
    gold_index = correct = None
    if gold is not None:
        unknown = next((g for g in gold if g not in names), None)
        if unknown is not None:
            raise PolicyError(f"gold label {unknown!r} is not one of the labels {names}")
        index = {name: k for k, name in enumerate(names)}
        gold_index = np.array([index[g] for g in gold], dtype=np.int64)
        correct = np.array([p == g for p, g in zip(predicted, gold)], dtype=float)
        columns["label"] = label_column
    elif correct_column is not None:
        correct = np.array([parse_correctness(_parse_value(r.get(correct_column)), i, correct_column)
                            for i, r in enumerate(records)])
        columns["correct"] = correct_column
    texts, ids = _column_or_none(records, "text"), _column_or_none(records, "id")
    if texts is not None:
        columns["text"] = "text"
    if ids is not None:
        columns["id"] = "id"  # real ids, not row numbers: they may fingerprint the calibrator
    return ScoredItems(
        correct, confidence, probabilities, gold_index, list(names), texts=texts,
        ids=ids if ids is not None else [str(i) for i in range(len(records))],
        source={"path": str(path), "kind": kind, "columns": columns}, predicted=predicted, records=records,
    )


def _label_probabilities(values: list[Any], prob_column: str, labels: list[str] | None) -> tuple[list[str], np.ndarray]:
    """Label names and the (n, K) matrix of ``{label: probability}`` objects, in ``labels``
    order when given, else in the first object's order."""
    names = labels if labels is not None else [str(k) for k in values[0]]
    probabilities = np.empty((len(values), len(names)))
    for i, value in enumerate(values):
        if not isinstance(value, dict):
            raise DataError(f"record {i}: column {prob_column!r} must be an object of label probabilities, got {value!r}")
        keys = [str(k) for k in value]
        unknown = sorted(set(keys) - set(names))
        if unknown:
            raise PolicyError(f"record {i} has a probability for label {unknown[0]!r}, which is not one of the labels {names}")
        if set(keys) != set(names):
            missing = sorted(set(names) - set(keys))
            raise DataError(f"record {i} has no probability for label {missing[0]!r}")
        try:
            probabilities[i] = [float(value[name]) for name in names]
        except (TypeError, ValueError):
            raise DataError(f"record {i}: probabilities must be numbers, got {value!r}") from None
    return list(names), probabilities


def mass_bounds(records: list[dict[str, Any]], names: list[str]) -> np.ndarray | None:
    """The (n, K, 2) ``label_mass_bounds`` of `howsure score` records from a server's top k
    (`LabelScores.label_mass_bounds`), in ``names`` order; None when no record has them.
    `DataError` when only some records have them or one is not a [lower, upper] pair per label."""
    present = [isinstance(_parse_value(r.get("label_mass_bounds")), dict) for r in records]
    if not any(present):
        return None
    if not all(present):
        raise DataError(f"record {present.index(False)} has no label_mass_bounds but others do: one file "
                        "holds scores of two kinds of backend; score it again with one")
    bounds = np.empty((len(records), len(names), 2))
    for i, record in enumerate(records):
        value = _parse_value(record["label_mass_bounds"])
        try:
            bounds[i] = [[float(value[name][0]), float(value[name][1])] for name in names]
        except (KeyError, IndexError, TypeError, ValueError):
            raise DataError(f"record {i}: label_mass_bounds {value!r} is not a [lower, upper] pair for each "
                            f"of the labels {names}") from None
    return bounds


def _two_label_distribution(confidence: np.ndarray, predicted: list[str], names: list[str]) -> np.ndarray | None:
    """With two labels the predicted label's confidence determines the whole distribution;
    with more, only that confidence is known (None)."""
    if len(names) != 2:
        return None
    low = np.flatnonzero(confidence < 0.5)
    if low.size:
        raise DataError(
            f"record {int(low[0])} has confidence {confidence[low[0]].item()!r} < 0.5 for its predicted "
            "label, which with two labels cannot be the most probable one"
        )
    index = {name: k for k, name in enumerate(names)}
    probabilities = np.empty((len(predicted), 2))
    for i, label in enumerate(predicted):
        if label not in index:
            raise PolicyError(f"predicted label {label!r} of record {i} is not one of the labels {names}")
        probabilities[i, index[label]] = confidence[i]
        probabilities[i, 1 - index[label]] = 1 - confidence[i]
    return probabilities
