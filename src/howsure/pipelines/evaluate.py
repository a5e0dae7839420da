"""The evaluation pipeline: scored items -> honest calibration -> metrics -> plots -> report.

Honesty by construction: calibrated numbers come only from items the calibrator was not fitted
on, through k-fold cross-fitting (every item scored by a calibrator fitted on the other folds)
or an explicit calibration/test split, both stratified, seeded, and keeping exact duplicate
texts on one side. Raw numbers (no calibration, all items) are reported too, since they need
no fitting. Fitting and scoring on the same items is not offered. The inputs it reads are
described in `howsure.io.scored_tables`.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from howsure import __version__
from howsure.calibration import MODES, fit_calibrator, make_calibrator, save_calibrator
from howsure.core.scored import ScoredItems, top_label
from howsure.errors import CalibrationError
from howsure.report import plots, write_report
from howsure.stats.metrics import summarize
from howsure.stats.splits import calibration_test_split, crossfit_folds

MODE_DESCRIPTIONS = {
    "distribution": "the whole label distribution was calibrated against the gold labels, so the "
    "predicted label may change; this is how a model biased towards one label wins accuracy back",
    "confidence": "only the predicted label's confidence was calibrated against whether it was "
    "right; labels never change",
}



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
    config: EvaluationConfig | None = None  # the settings it ran with (None: built by hand)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write report.html, summary.json, calibrator.json and predictions.jsonl to ``out_dir``."""
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
    params = {"seed": config.seed} if config.calibrator == "auto" else {}
    return make_calibrator(config.calibrator, mode=mode, **params)


def _fit(config: EvaluationConfig, mode: str, scores, y, groups, ids=None, *, fingerprint: bool = True):
    """A calibrator fitted on these items, fingerprinted by their texts (or real ids) unless
    ``fingerprint`` is off (a fold's calibrator is used once and never saved); auto
    cross-validates inside, and the texts keep duplicates in one inner fold too."""
    return fit_calibrator(config.calibrator, scores, y, mode=mode, seed=config.seed, groups=groups,
                          texts=groups if fingerprint else None, ids=ids)


def _subset(groups: Sequence[str] | None, index: np.ndarray):
    return None if groups is None else [groups[i] for i in index]


def evaluate(items: ScoredItems, config: EvaluationConfig | None = None, command: str | None = None,
             adapter_overlap: dict[str, Any] | None = None) -> Evaluation:
    """Calibrate honestly and measure raw and calibrated predictions with intervals.

    Parameters
    ----------
    items : ScoredItems
    config : EvaluationConfig
    command : str, optional
        The command line that asked for this, recorded in the summary.
    adapter_overlap : dict, optional
        With scores from a LoRA adapter, `howsure.pipelines.adapter_guard.check_adapter_overlap`'s
        statement: the summary keeps it as ``adapter`` and its words lead the notes.

    Returns
    -------
    Evaluation
    """
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
    final = _fit(config, mode, scores, y, groups, ids=items.real_ids)

    if mode == "distribution":
        calibrated_correct, calibrated_confidence, _ = top_label(predictions, items.labels[evaluated])
        calibrated_probabilities = predictions
    else:
        calibrated_correct, calibrated_confidence = items.correct[evaluated], predictions
        calibrated_probabilities = None

    summary = _summary(items, config, mode, scheme, evaluated, calibrated_correct, calibrated_confidence,
                       calibrated_probabilities, chosen_per_fold, final, command)
    if adapter_overlap is not None:
        summary["adapter"] = adapter_overlap
        summary["notes"].insert(0, adapter_overlap["words"])
    return Evaluation(summary, evaluated, calibrated_confidence, calibrated_correct, calibrated_probabilities,
                      fold_of, final, items, config)


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
