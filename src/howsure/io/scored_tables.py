"""Scored tables read for evaluation (`howsure evaluate`) as `ScoredItems`, through pandas.

Inputs
------
* ``howsure score`` output (JSONL): a ``probabilities`` object per record plus the gold
  ``label`` column; gives the full label distribution.
* Any table (CSV, TSV, JSONL, JSON, Parquet) with a probability column and one of:

  - a correctness column (``--correct-column``): the probability is the predicted label's
    confidence (top-label view only);
  - gold and predicted label columns (``--label-column`` + ``--prediction-column``): the
    probability is the predicted label's confidence; with exactly two labels the binary
    distribution ``[1 - p, p]`` is rebuilt, so both calibration modes work;
  - a gold label column alone: the probability is P(positive label) of a binary task
    (``--positive-label`` names it unless the labels are 0/1 or true/false).

  A JSON object holding one list of records (``{"results": [...]}``) is unwrapped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from howsure.core.scored import ScoredItems, conservative_rows, top_label
from howsure.errors import DataError
from howsure.io.scored import FALSE_WORDS, TRUE_WORDS, mass_bounds, parse_correctness
from howsure.io.tables import read_table


def read_scores_table(path: str | Path, records_key: str | None = None):
    """Read any supported table into a pandas DataFrame."""
    return read_table(path, records_key=records_key)


def load_scored_items(path: str | Path, *, records_key: str | None = None, **columns: str | None) -> ScoredItems:
    """Read a scored table and turn it into `ScoredItems` (see the module docstring).

    Parameters
    ----------
    path : str or Path
        CSV, TSV, JSONL, JSON or Parquet file.
    records_key : str, optional
        JSON input: key of the list of records (default: the only list-valued key).
    **columns
        Column choices of `scored_items_from_frame`: ``prob_column``, ``correct_column``,
        ``label_column``, ``prediction_column``, ``text_column``, ``positive_label``, ``label_map``.

    Raises
    ------
    DataError
        Missing column (the message lists the columns that exist), empty table, a value that
        is not a probability or not a correctness, a gold label outside the task's labels.
    """
    frame = read_scores_table(path, records_key)
    return scored_items_from_frame(frame, source=str(path), **columns)


def scored_items_from_frame(
    frame,
    *,
    prob_column: str | None = None,
    correct_column: str | None = None,
    label_column: str | None = None,
    prediction_column: str | None = None,
    text_column: str | None = None,
    positive_label: str | None = None,
    label_map: dict[str, str] | None = None,
    source: str = "",
) -> ScoredItems:
    """Turn a DataFrame of scores into `ScoredItems`; each column argument defaults as the
    module docstring says (``confidence``, ``correct``, ``label``, ``prediction``, ``text``).

    ``label_map`` renames gold label values before they are compared with the scored or
    predicted labels, e.g. ``{"0": "negative", "1": "positive"}`` for SST-2's 0/1 column."""
    if len(frame) == 0:
        raise DataError(f"{source or 'the input'} has no rows; expected scored items")
    columns = [str(c) for c in frame.columns]
    for option, column in (("--prob-column", prob_column), ("--correct-column", correct_column),
                           ("--label-column", label_column), ("--prediction-column", prediction_column),
                           ("--text-column", text_column)):
        if column is not None:
            _require(frame, column, option)
    if label_map:
        gold_column = label_column or "label"
        _require(frame, gold_column, "gold label", hint="--label-map renames the values of the gold label column")
        frame = frame.assign(**{gold_column: [label_map.get(str(v), v) for v in frame[gold_column].tolist()]})
    text_column = text_column or ("text" if "text" in columns else None)
    texts = [str(t) for t in frame[text_column].tolist()] if text_column else None
    ids = [str(i) for i in frame["id"].tolist()] if "id" in columns else [str(i) for i in range(len(frame))]
    read = {"text": text_column} if text_column else {}
    if "id" in columns:
        read["id"] = "id"  # ids are real, not row numbers: they may fingerprint the calibrator

    if prob_column is None and "probabilities" in columns:
        gold_column = label_column or "label"
        _require(frame, gold_column, "gold label", hint="score a table with its label column to evaluate it")
        items = _from_score_output(frame, gold_column)
        read.update(probabilities="probabilities", label=gold_column)
        kind = "howsure score output (full label distribution)"
    else:
        if prob_column is None:
            if "confidence" not in columns:
                raise DataError(
                    "no probability column: pass --prob-column; columns are: " + ", ".join(columns)
                )
            prob_column = "confidence"
        probability = _probability_column(frame, prob_column)
        read["probability"] = prob_column
        if correct_column is None and label_column is None and "correct" in columns:
            correct_column = "correct"
        if correct_column is None and label_column is None:
            if "label" in columns and "prediction" in columns:
                label_column, prediction_column = "label", prediction_column or "prediction"
            else:
                raise DataError(
                    "cannot tell which items are right: pass --correct-column, or --label-column "
                    "(with --prediction-column when the probability is the predicted label's); "
                    "columns are: " + ", ".join(columns)
                )
        if correct_column is not None:
            items = ScoredItems(_correct_column(frame, correct_column), probability)
            read["correct"] = correct_column
            kind = "table: predicted label's confidence and correctness"
        elif prediction_column is not None or "prediction" in columns:
            prediction_column = prediction_column or "prediction"
            items = _from_gold_and_prediction(frame, label_column, prediction_column, probability)
            read.update(label=label_column, prediction=prediction_column)
            kind = "table: gold label, predicted label and its confidence"
        else:
            items = _from_positive_probability(frame, label_column, prob_column, probability, positive_label)
            read["label"] = label_column
            kind = f"table: binary labels and P({items.label_names[1]})"
    items.texts = texts
    items.ids = ids
    items.source = {"path": source, "kind": kind, "columns": read}
    return items


def _require(frame, column: str, what: str, hint: str = "") -> None:
    if column not in frame.columns:
        columns = ", ".join(str(c) for c in frame.columns)
        extra = f"; {hint}" if hint else ""
        raise DataError(f"{what} column {column!r} is not in the input; columns are: {columns}{extra}")


def _probability_column(frame, column: str) -> np.ndarray:
    values = frame[column].tolist()
    result = np.empty(len(values))
    for row, value in enumerate(values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not np.isfinite(number) or not 0.0 <= number <= 1.0:
            raise DataError(
                f"column {column!r} row {row}: {value!r} is not a probability; expected a number in [0, 1]"
            )
        result[row] = number
    return result


def _correct_column(frame, column: str) -> np.ndarray:
    return np.array([parse_correctness(value, row, column) for row, value in enumerate(frame[column].tolist())])


def _labels_of(frame, column: str) -> list[str]:
    values = frame[column].tolist()
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
            raise DataError(f"column {column!r} row {row} has no label; expected a label in every row")
    return [str(v) for v in values]


def _from_score_output(frame, gold_column: str) -> ScoredItems:
    records = frame["probabilities"].tolist()
    if not isinstance(records[0], dict) or not records[0]:
        raise DataError(f"'probabilities' row 0 is {records[0]!r}; expected an object of label -> probability")
    names = list(records[0])
    matrix = np.empty((len(records), len(names)))
    for row, record in enumerate(records):
        if not isinstance(record, dict) or set(record) != set(names):
            found = sorted(record) if isinstance(record, dict) else record
            raise DataError(f"'probabilities' row {row} has labels {found!r}; expected {names}")
        for column, name in enumerate(names):
            value = record[name]
            if value is None or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise DataError(
                    f"'probabilities' row {row}: label {name!r} has {value!r}; expected a number in [0, 1]"
                )
            matrix[row, column] = value
    gold = _labels_of(frame, gold_column)
    index = {name: i for i, name in enumerate(names)}
    unknown = [(row, g) for row, g in enumerate(gold) if g not in index]
    if unknown:
        row, value = unknown[0]
        raise DataError(
            f"column {gold_column!r} row {row}: gold label {value!r} is not one of the scored labels "
            f"{names} ({len(unknown)} rows like this); rename gold values with --label-map VALUE=LABEL,..."
        )
    labels = np.array([index[g] for g in gold])
    correct, confidence, predicted = top_label(matrix, labels)
    if "label_mass_bounds" in frame.columns:  # a server's top k: the predicted label at its worst case
        bounds = mass_bounds([{"label_mass_bounds": v} for v in frame["label_mass_bounds"].tolist()], names)
        if bounds is not None:
            matrix = conservative_rows(matrix, bounds)
            confidence = matrix[np.arange(len(matrix)), predicted]
    return ScoredItems(correct, confidence, matrix, labels, names)


def _from_gold_and_prediction(frame, label_column: str, prediction_column: str, probability: np.ndarray) -> ScoredItems:
    gold = _labels_of(frame, label_column)
    predicted = _labels_of(frame, prediction_column)
    correct = np.array([g == p for g, p in zip(gold, predicted)], float)
    names = sorted(set(gold) | set(predicted))
    if len(names) != 2:
        # More than two labels: only the predicted label's probability is known.
        return ScoredItems(correct, probability, label_names=names)
    index = {name: i for i, name in enumerate(names)}
    predicted_index = np.array([index[p] for p in predicted])
    matrix = np.empty((len(gold), 2))
    matrix[np.arange(len(gold)), predicted_index] = probability
    matrix[np.arange(len(gold)), 1 - predicted_index] = 1.0 - probability
    return ScoredItems(correct, probability, matrix, np.array([index[g] for g in gold]), names)


def _from_positive_probability(frame, label_column, prob_column, probability, positive_label) -> ScoredItems:
    gold = _labels_of(frame, label_column)
    values = sorted(set(gold))
    if len(values) > 2:
        raise DataError(
            f"column {label_column!r} holds {len(values)} labels ({', '.join(values[:6])}...); a probability "
            "column without --prediction-column must be P(positive) of a binary task"
        )
    if positive_label is None:
        truthy = [v for v in values if v.strip().lower() in TRUE_WORDS]
        falsy = [v for v in values if v.strip().lower() in FALSE_WORDS]
        if len(truthy) != 1 or len(truthy) + len(falsy) != len(values):
            raise DataError(
                f"column {label_column!r} holds labels {values}; say which one the probabilities in "
                f"{prob_column!r} are for with --positive-label"
            )
        positive_label = truthy[0]
    if positive_label not in values:
        raise DataError(f"--positive-label {positive_label!r} is not in column {label_column!r}; its labels are {values}")
    negatives = [v for v in values if v != positive_label]
    names = [negatives[0] if negatives else "not " + positive_label, positive_label]
    matrix = np.column_stack([1.0 - probability, probability])
    labels = np.array([int(g == positive_label) for g in gold])
    correct, confidence, _ = top_label(matrix, labels)
    return ScoredItems(correct, confidence, matrix, labels, names)
