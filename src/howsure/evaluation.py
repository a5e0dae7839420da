"""The evaluation pipeline: input table -> arrays -> honest calibration -> metrics -> plots -> report.

Honesty by construction: calibrated numbers come only from items the calibrator was not fitted
on, through k-fold cross-fitting (every item scored by a calibrator fitted on the other folds)
or an explicit calibration/test split, both stratified, seeded, and keeping exact duplicate
texts on one side. Raw numbers (no calibration, all items) are reported too, since they need
no fitting. Fitting and scoring on the same items is not offered.

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

import datetime as _dt
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from howsure import __version__
from howsure.errors import CalibrationError, DataError
from howsure.metrics import summarize, top_label

TRUE_WORDS = {"true", "1", "yes", "y", "t", "1.0"}
FALSE_WORDS = {"false", "0", "no", "n", "f", "0.0"}

MODE_DESCRIPTIONS = {
    "distribution": "the whole label distribution was calibrated against the gold labels, so the "
    "predicted label may change; this is how a model biased towards one label wins accuracy back",
    "confidence": "only the predicted label's confidence was calibrated against whether it was "
    "right; labels never change",
}


# --------------------------------------------------------------------------- input


@dataclass
class ScoredItems:
    """What evaluation needs from an input, in the top-label view and, where known, in full.

    Attributes
    ----------
    correct : ndarray of shape (n,), 0.0/1.0
        Whether the given prediction was right.
    confidence : ndarray of shape (n,)
        Probability of the given prediction.
    probabilities : ndarray of shape (n, K) or None
        Full label distribution, columns in ``label_names`` order.
    labels : ndarray of shape (n,), int, or None
        Gold label index into ``label_names``.
    label_names : list of str or None
    texts : list of str or None
        Used to keep exact duplicates on one side of every split.
    ids : list of str
    source : dict
        Path, kind of input and the columns read, for the report.
    """

    correct: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray | None = None
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    texts: list[str] | None = None
    ids: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.correct.size)

    @property
    def has_distribution(self) -> bool:
        return self.probabilities is not None and self.labels is not None


def read_scores_table(path: str | Path, records_key: str | None = None):
    """Read any supported table into a pandas DataFrame (the one place that reads files)."""
    from howsure.data import read_table

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
    result = np.empty(len(frame))
    for row, value in enumerate(frame[column].tolist()):
        word = str(value).strip().lower()
        if isinstance(value, (bool, np.bool_)) or word in TRUE_WORDS | FALSE_WORDS:
            result[row] = 1.0 if (value is True or value is np.True_ or word in TRUE_WORDS) else 0.0
        else:
            raise DataError(
                f"column {column!r} row {row}: {value!r} is not a correctness; expected true/false or 1/0"
            )
    return result


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
    correct, confidence, _ = top_label(matrix, labels)
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


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvaluationConfig:
    """Settings of one evaluation; saved in the summary next to the numbers they made."""

    calibrator: str = "auto"        # a name from howsure.calibration.CALIBRATOR_NAMES
    mode: str | None = None         # None: "distribution" when the input has a full distribution
    n_folds: int = 5                # k of cross-fitting (ignored when test_size is set)
    test_size: float | None = None  # fraction held out by an explicit calibration/test split
    n_bins: int = 15                # bins of ECE and MCE (the public Llama run used 20)
    beta: int = 100                 # items per bin of the RMS calibration error
    n_boot: int = 1000              # bootstrap resamples behind every interval
    seed: int = 0                   # splits, auto's inner folds, bootstrap, sample-size draws
    level: float = 0.95             # coverage of the intervals
    target: float = 0.9             # accuracy the sample-size chart aims a threshold at
    title: str | None = None


@dataclass
class Evaluation:
    """Everything one evaluation produced.

    Attributes
    ----------
    summary : dict
        JSON-ready numbers, settings and plots (see `howsure.report`).
    evaluated : ndarray of shape (m,), int
        Indices of the items the calibrated numbers are measured on (all for cross-fitting).
    calibrated_confidence : ndarray of shape (m,)
    calibrated_correct : ndarray of shape (m,)
    calibrated_probabilities : ndarray of shape (m, K) or None
        Distribution mode only.
    fold : ndarray of shape (m,), int
        Fold that scored each item (0 for a split).
    calibrator : Calibrator
        Fitted on all items, for use; its expected quality is the held-out numbers.
    items : ScoredItems
    """

    summary: dict
    evaluated: np.ndarray
    calibrated_confidence: np.ndarray
    calibrated_correct: np.ndarray
    calibrated_probabilities: np.ndarray | None
    fold: np.ndarray
    calibrator: Any
    items: ScoredItems

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write report.html, summary.json, calibrator.json and predictions.jsonl to ``out_dir``."""
        from howsure.calibration import save_calibrator
        from howsure.report import write_report

        out_dir = Path(out_dir)
        html_path, json_path = write_report(self.summary, out_dir)
        calibrator_path = save_calibrator(self.calibrator, out_dir / "calibrator.json")
        predictions_path = out_dir / "predictions.jsonl"
        with open(predictions_path, "w", encoding="utf-8") as handle:
            for record in self.prediction_records():
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return {"report": html_path, "summary": json_path, "calibrator": calibrator_path,
                "predictions": predictions_path}

    def prediction_records(self):
        """One record per evaluated item: raw and held-out calibrated prediction and confidence."""
        items, names = self.items, self.items.label_names
        for position, i in enumerate(self.evaluated):
            record = {"id": items.ids[i], "fold": int(self.fold[position]),
                      "raw_confidence": float(items.confidence[i]), "raw_correct": bool(items.correct[i]),
                      "calibrated_confidence": float(self.calibrated_confidence[position]),
                      "calibrated_correct": bool(self.calibrated_correct[position])}
            if items.labels is not None and names:
                record["label"] = names[items.labels[i]]
            if self.calibrated_probabilities is not None and names:
                record["calibrated_prediction"] = names[int(self.calibrated_probabilities[position].argmax())]
                record["calibrated_probabilities"] = {
                    name: float(p) for name, p in zip(names, self.calibrated_probabilities[position])
                }
            yield record


def resolve_mode(mode: str | None, items: ScoredItems) -> str:
    """The calibration mode to use: the given one, or distribution when the input allows it."""
    from howsure.calibration import MODES

    if mode is None:
        return "distribution" if items.has_distribution else "confidence"
    if mode not in MODES:
        raise CalibrationError(f"unknown calibration mode {mode!r}; expected one of {list(MODES)}")
    if mode == "distribution" and not items.has_distribution:
        raise CalibrationError(
            "mode 'distribution' needs per-label probabilities and gold labels, but this input gives only "
            "the predicted label's confidence and correctness; use --mode confidence, or give "
            "--label-column and --prediction-column for a two-label task"
        )
    return mode


def _new_calibrator(config: EvaluationConfig, mode: str):
    from howsure.calibration import make_calibrator

    params = {"seed": config.seed} if config.calibrator == "auto" else {}
    return make_calibrator(config.calibrator, mode=mode, **params)


def _fit(config: EvaluationConfig, mode: str, scores, y, groups, ids=None, *, fingerprint: bool = True):
    """A calibrator fitted on these items, fingerprinted by their texts (or real ids) unless
    ``fingerprint`` is off (a fold's calibrator is used once and never saved); auto
    cross-validates inside, and the texts keep duplicates in one inner fold too."""
    from howsure.calibration import fit_calibrator

    return fit_calibrator(config.calibrator, scores, y, mode=mode, seed=config.seed, groups=groups,
                          texts=groups if fingerprint else None, ids=ids)


def _subset(groups: Sequence[str] | None, index: np.ndarray):
    return None if groups is None else [groups[i] for i in index]


def evaluate(items: ScoredItems, config: EvaluationConfig | None = None, command: str | None = None) -> Evaluation:
    """Calibrate honestly and measure raw and calibrated predictions with intervals.

    Parameters
    ----------
    items : ScoredItems
    config : EvaluationConfig
    command : str, optional
        The command line that asked for this, recorded in the summary.

    Returns
    -------
    Evaluation
    """
    from howsure.splits import calibration_test_split, crossfit_folds

    config = config or EvaluationConfig()
    mode = resolve_mode(config.mode, items)
    _new_calibrator(config, mode)  # an unknown name or parameter fails before any splitting
    if mode == "distribution":
        scores, y = items.probabilities, items.labels
    else:
        scores, y = items.confidence, items.correct.astype(np.int64)
    groups = items.texts

    if config.test_size is not None:
        split = calibration_test_split(y, test_size=config.test_size, seed=config.seed, groups=groups)
        folds, scheme = [(split.cal_idx, split.test_idx)], split.scheme
    else:
        folds, scheme = crossfit_folds(y, n_folds=config.n_folds, seed=config.seed, groups=groups)

    evaluated = np.sort(np.concatenate([held_out for _, held_out in folds]))
    position = np.empty(items.n_items, dtype=np.int64)
    position[evaluated] = np.arange(evaluated.size)
    predictions = np.full((evaluated.size,) + np.shape(scores)[1:], np.nan)
    fold_of = np.zeros(evaluated.size, dtype=np.int64)
    chosen_per_fold: list[str] = []
    for number, (fit_idx, held_out) in enumerate(folds):
        calibrator = _fit(config, mode, scores[fit_idx], y[fit_idx], _subset(groups, fit_idx), fingerprint=False)
        predictions[position[held_out]] = calibrator.predict_proba(scores[held_out])
        fold_of[position[held_out]] = number
        chosen_per_fold.append(getattr(calibrator, "chosen_", calibrator.name))
    # Fitted on every item, and fingerprinted so: howsure thresholds refuses to certify with it
    # on any of them.
    final = _fit(config, mode, scores, y, groups, ids=items.ids if items.source.get("columns", {}).get("id") else None)

    if mode == "distribution":
        calibrated_correct, calibrated_confidence, _ = top_label(predictions, items.labels[evaluated])
        calibrated_probabilities = predictions
    else:
        calibrated_correct, calibrated_confidence = items.correct[evaluated], predictions
        calibrated_probabilities = None

    summary = _summary(items, config, mode, scheme, evaluated, calibrated_correct, calibrated_confidence,
                       calibrated_probabilities, chosen_per_fold, final, command)
    return Evaluation(summary, evaluated, calibrated_confidence, calibrated_correct, calibrated_probabilities,
                      fold_of, final, items)


def _metrics(items: ScoredItems, index: np.ndarray, config: EvaluationConfig, correct=None, confidence=None, probabilities=None):
    correct = items.correct[index] if correct is None else correct
    confidence = items.confidence[index] if confidence is None else confidence
    distribution = {}
    if probabilities is not None:
        distribution = {"probabilities": probabilities, "labels": items.labels[index]}
    return summarize(correct, confidence, n_bins=config.n_bins, beta=config.beta, n_boot=config.n_boot,
                     seed=config.seed, level=config.level, **distribution)


def _summary(items, config, mode, scheme, evaluated, calibrated_correct, calibrated_confidence,
             calibrated_probabilities, chosen_per_fold, final, command) -> dict:
    from howsure import plots

    everything = np.arange(items.n_items)
    raw_probabilities = items.probabilities if items.has_distribution else None
    split = config.test_size is not None
    n_eval = evaluated.size
    held_out = (f"fitted on the {items.n_items - n_eval} calibration items, measured on the {n_eval} test items"
                if split else f"each of the {n_eval} items scored by a calibrator fitted on the other "
                f"{scheme.n_folds - 1} of {scheme.n_folds} folds")
    columns = [{
        "key": "raw", "title": f"Raw (all {items.n_items})", "short": "raw",
        "description": f"uncalibrated scores on all {items.n_items} items; no fitting involved",
        "values": _metrics(items, everything, config, probabilities=raw_probabilities),
    }]
    if split:
        columns.append({
            "key": "raw_test", "title": f"Raw (test {n_eval})", "short": "raw (test)",
            "description": f"uncalibrated scores on the {n_eval} test items, to compare like with like",
            "values": _metrics(items, evaluated, config,
                               probabilities=None if raw_probabilities is None else raw_probabilities[evaluated]),
        })
    columns.append({
        "key": "calibrated", "title": f"Calibrated (held-out {n_eval})", "short": "calibrated",
        "description": f"{config.calibrator} calibration, {held_out}",
        "values": _metrics(items, evaluated, config, calibrated_correct, calibrated_confidence, calibrated_probabilities),
    })

    raw_correct, raw_confidence = items.correct[evaluated], items.confidence[evaluated]
    figures = [
        ("reliability", "Reliability: raw vs calibrated",
         "Each dot is a bin of items with similar confidence: how often they were right (up) against how "
         "confident the model was (across). On the dashed line confidence means what it says; below it "
         "the model is over-confident. Dot area and the printed number give the items in the bin; grey "
         "bars are the confidence histogram. The right panel uses only held-out predictions.",
         plots.side_by_side(
             plots.reliability_diagram(raw_correct, raw_confidence, config.n_bins, title="Raw confidence"),
             plots.reliability_diagram(calibrated_correct, calibrated_confidence, config.n_bins,
                                       title="Calibrated (held-out)"))),
        ("outcomes", "Confidence of right and wrong answers",
         "How confident the model was when it was right (green) and when it was wrong (orange). The more "
         "wrong answers sit at high confidence, the less a threshold can separate them.",
         plots.side_by_side(
             plots.outcome_histogram(raw_correct, raw_confidence, title="Raw confidence"),
             plots.outcome_histogram(calibrated_correct, calibrated_confidence, title="Calibrated (held-out)"))),
        ("thresholds_raw", "Threshold trade-off: raw confidence",
         "Bars: how many items have at least this raw confidence (count and share). Line: how often those "
         "items are right, with a 95% exact (Clopper-Pearson) interval.",
         plots.threshold_tradeoff(raw_correct, raw_confidence, title="Raw confidence")),
        ("thresholds_calibrated", "Threshold trade-off: calibrated confidence",
         "The same on held-out calibrated confidence: a calibrated threshold of 0.9 should keep items that "
         "are right about 90% of the time or more.",
         plots.threshold_tradeoff(calibrated_correct, calibrated_confidence, title="Calibrated (held-out)")),
    ]
    notes = []
    if items.n_items >= 100:
        progression = plots.sample_size_progression(items.correct, items.confidence, target=config.target,
                                                    seed=config.seed, title="Raw confidence")
        figures.append((
            "sample_size", f"How many labels to trust a threshold? (target {100 * config.target:g}% accuracy)",
            progression.method + " Bars: median share of the other items automated (whiskers: 10th-90th "
            "percentile); line: their accuracy. Few labels certify little or nothing; more labels certify "
            "looser thresholds that automate more while staying on target.",
            progression))
    else:
        notes.append(f"Sample-size chart left out: {items.n_items} items are fewer than 100.")

    duplicates = _duplicates_sentence(items.texts)
    if mode == "distribution":
        raw_prediction = items.probabilities[evaluated].argmax(axis=1)
        changed = int((calibrated_probabilities.argmax(axis=1) != raw_prediction).sum())
        notes.append(f"Calibration changed the predicted label of {changed} of {n_eval} items.")
    fold_choices = Counter(chosen_per_fold)
    if config.calibrator == "auto":
        listed = ", ".join(f"{name} in {count}" for name, count in fold_choices.most_common())
        notes.append(f"auto chose per fitting part: {listed} of {len(chosen_per_fold)}.")
    if items.texts is None:
        notes.append("No text column: exact duplicates could not be kept on one side of the splits.")

    return {
        "format": "howsure.evaluation",
        "version": 1,
        "title": config.title or f"Calibration report: {Path(items.source.get('path', 'input')).name}",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "howsure_version": __version__,
        "command": command,
        "input": {**items.source, "n_items": items.n_items, "labels": items.label_names,
                  "n_unique_texts": None if items.texts is None else len(set(items.texts)),
                  "duplicates": duplicates},
        "calibration": {
            "mode": mode,
            "mode_description": MODE_DESCRIPTIONS[mode],
            "calibrator": config.calibrator,
            "chosen": getattr(final, "chosen_", None),
            "reason": getattr(final, "explanation_", None),
            "scheme": scheme.to_dict(),
        },
        "settings": {"n_bins": config.n_bins, "beta": config.beta, "n_boot": config.n_boot,
                     "seed": config.seed, "level": config.level, "target": config.target,
                     "n_folds": None if split else config.n_folds, "test_size": config.test_size},
        "metrics": columns,
        "plots": [{"key": key, "title": title, "caption": caption, "display": display.to_dict()}
                  for key, title, caption, display in figures],
        "notes": notes,
    }


def _duplicates_sentence(texts: list[str] | None) -> str:
    if texts is None:
        return "unknown (no text column)"
    counts = Counter(texts)
    repeated = {t: c for t, c in counts.items() if c > 1}
    if not repeated:
        return f"none: all {len(texts)} texts are distinct"
    extra = sum(repeated.values()) - len(repeated)
    return (f"{len(repeated)} texts appear more than once ({extra} extra copies among {len(texts)} items); "
            "every copy of a text was kept on the same side of each split")
