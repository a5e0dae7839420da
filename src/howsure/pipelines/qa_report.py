"""Confidence estimators for free-form answers, compared by the same honest procedure.

Input: the records `howsure qa` writes, one per question (``id``, ``correct`` as a boolean,
``scores`` mapping each estimator's name to a number in [0, 1] or null where it gave none, e.g.
an unparseable verbal confidence), and optionally the last-token hidden states saved beside
them (``--save-hidden``: an (n, layers, hidden) array in record order), from which a linear
probe's nested cross-fitted P(correct) becomes one more estimator (`howsure.probes.crossval`).

Every estimator then goes through the same steps, on the questions it scored:

* metrics of its raw scores and of its calibrated scores (`howsure.stats.metrics.summarize`:
  accuracy, AUROC, ECE, Brier, RMS calibration error over adaptive bins of 100 items, each
  with a bootstrap interval), calibrated by cross-fitting (`crossfit_predict`, folds grouped
  by question id), so no calibrated score comes from a calibrator that saw its question;
* a certified threshold: a calibrator fitted on one half of the questions, the threshold
  certified on the other (`decisions.certification.certify_threshold`): answer automatically
  only when the confidence is at least it, so that the answered questions' accuracy is at
  least the target with probability 1 - delta; otherwise abstain or escalate;
* a reliability diagram, raw and calibrated side by side.

An estimator whose scores are all one value says nothing about which answers are right: its
AUROC is 0.5 by the ranks' ties, and it is flagged ``constant``, because calibrating it gives
every question the overall accuracy, whose ECE is small and proves nothing. Nulls are counted
per estimator and left out of its numbers (its coverage is stated).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from howsure import __version__
from howsure.calibration import fit_calibrator, make_calibrator
from howsure.calibration.crossfit import crossfit_predict
from howsure.decisions.certification import certify_threshold
from howsure.errors import DataError
from howsure.io.records import read_records
from howsure.probes.crossval import layer_scores, nested_crossfit
from howsure.report.plots import reliability_diagram, side_by_side
from howsure.stats.metrics import summarize
from howsure.stats.splits import calibration_test_split

SUMMARY_FORMAT = "howsure.qa_report"
SHOWN_METRICS = ("accuracy", "auroc", "ece", "rms_calibration_error", "brier")
PROBE_NAME = "hidden_state_probe"
MIN_ITEMS = 10  # fewer scored questions (or fewer than 2 right or wrong): the estimator is reported, not measured


@dataclass
class QARecords:
    """The records of a `howsure qa` output, as arrays in record order."""

    ids: list[str]
    correct: np.ndarray  # (n,) bool
    scores: dict[str, np.ndarray]  # estimator -> (n,) float, NaN where the record had null
    judges: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how scores were read (log-probabilities)


def _score(value: Any, estimator: str, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: score {estimator!r} is {value!r}; expected a number in [0, 1] or null")
    return float(value)


def _as_probabilities(name: str, values: np.ndarray, source: str) -> tuple[np.ndarray, str | None]:
    """An estimator's scores as numbers in [0, 1]: as they are, or, when every one is <= 0 and
    some below, read as log-probabilities (``token_mean_logprob``) and exponentiated (a monotone
    map: AUROC is unchanged). Anything else outside [0, 1] is an error naming it."""
    present = values[~np.isnan(values)]
    if present.size == 0 or ((present >= 0) & (present <= 1)).all():
        return values, None
    if (present <= 0).all():
        return np.exp(values), f"{name}: read as a log-probability (every score <= 0); its exp() is the confidence"
    bad = float(present[(present < 0) | (present > 1)][0])
    raise DataError(f"{source}: score {name!r} has {bad!r}, outside [0, 1], and its scores are not all "
                    "log-probabilities (<= 0); write confidences in [0, 1]")


def qa_records_from_dicts(records: Sequence[dict], source: str = "the input") -> QARecords:
    """Check and convert `howsure qa` records (see the module docstring)."""
    if not records:
        raise DataError(f"{source} holds no records")
    names: list[str] = []
    for record in records:
        for name in (record.get("scores") or {}):
            if name not in names:
                names.append(name)
    ids, correct, judges = [], [], []
    scores = {name: np.full(len(records), np.nan) for name in names}
    for i, record in enumerate(records):
        where = f"{source} record {i + 1}"
        if not isinstance(record, dict) or not isinstance(record.get("correct"), bool):
            raise DataError(f"{where}: 'correct' must be true or false, got "
                            f"{record.get('correct') if isinstance(record, dict) else record!r}")
        if not isinstance(record.get("scores", {}), dict):
            raise DataError(f"{where}: 'scores' must map estimator names to numbers, got {record.get('scores')!r}")
        ids.append(str(record.get("id", i)))
        correct.append(record["correct"])
        judges.append(record.get("judge"))
        for name in names:
            scores[name][i] = _score(record.get("scores", {}).get(name), name, where)
    if len(set(ids)) != len(ids):
        raise DataError(f"{source}: record ids repeat; each question needs its own id")
    notes = []
    for name in names:
        scores[name], note = _as_probabilities(name, scores[name], source)
        if note:
            notes.append(note)
    return QARecords(ids, np.array(correct, dtype=bool), scores, judges, notes)


def read_qa_records(path: str | Path) -> QARecords:
    """Read a `howsure qa` JSONL (or JSON/CSV) output."""
    return qa_records_from_dicts(read_records(Path(path)), repr(str(path)))


def load_hidden(path: str | Path, n_items: int) -> np.ndarray:
    """The (n, layers, hidden) states ``--save-hidden`` wrote (an .npy file; never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"hidden-state file {str(path)!r} does not exist")
    try:
        states = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{str(path)!r} is not a plain .npy array ({exc})") from None
    if states.ndim != 3 or states.shape[0] != n_items:
        raise DataError(f"{str(path)!r} has shape {states.shape}; expected ({n_items}, layers, hidden), one row per record")
    return states.astype(np.float32)


@dataclass
class QAReportConfig:
    calibrator: str = "platt"
    n_folds: int = 5
    target_accuracy: float = 0.8
    delta: float = 0.05
    certify_share: float = 0.5
    n_boot: int = 1000
    beta: int = 100
    n_bins: int = 15
    seed: int = 0


def _entry(summary: dict, name: str) -> dict:
    return {k: summary[name].get(k) for k in ("value", "low", "high")}


def _certify(confidence: np.ndarray, correct: np.ndarray, ids: list[str], config: QAReportConfig) -> dict:
    """Fit the calibrator on one share of the questions, certify a threshold on the other."""
    split = calibration_test_split(correct.astype(int), test_size=config.certify_share, seed=config.seed, groups=ids)
    calibrator = fit_calibrator(config.calibrator, confidence[split.cal_idx], correct[split.cal_idx].astype(int),
                                mode="confidence", seed=config.seed, ids=[ids[i] for i in split.cal_idx])
    held = confidence[split.test_idx]
    calibrated = held if calibrator is None else calibrator.predict_proba(held)
    certificate = certify_threshold(confidences=calibrated, correct=correct[split.test_idx],
                                    target_accuracy=config.target_accuracy, delta=config.delta)
    return {**certificate.to_dict(), "summary": certificate.summary(), "n_fit": int(split.cal_idx.size)}


def estimator_result(name: str, scores: np.ndarray, correct: np.ndarray, ids: list[str],
                     config: QAReportConfig) -> dict:
    """Every number the report shows for one estimator (see the module docstring)."""
    present = ~np.isnan(scores)
    n_null = int((~present).sum())
    result: dict[str, Any] = {"name": name, "n_items": int(correct.size), "n_scored": int(present.sum()),
                              "n_null": n_null, "flags": [], "raw": None, "calibrated": None, "certification": None,
                              "plot": None}
    confidence, right = scores[present], correct[present]
    scored_ids = [ids[i] for i in np.flatnonzero(present)]
    if n_null:
        result["flags"].append(f"{n_null} of {correct.size} questions without a score (null), left out of its numbers")
    distinct = np.unique(confidence).size
    result["n_distinct"] = int(distinct)
    if distinct == 1:
        result["flags"].append(f"constant: every scored question got {confidence[0]:.4g}, so it cannot tell right "
                               "answers from wrong ones (AUROC 0.5); a small calibration error here proves nothing")
    n_right = int(right.sum())
    if right.size < MIN_ITEMS or min(n_right, right.size - n_right) < config.n_folds:
        result["flags"].append(f"not measured: {right.size} scored questions with {n_right} right; cross-fitting "
                               f"needs at least {MIN_ITEMS} and {config.n_folds} of each outcome")
        return result
    raw = summarize(right, confidence, n_bins=config.n_bins, beta=config.beta, n_boot=config.n_boot, seed=config.seed)
    calibrated = confidence
    if config.calibrator != "none":
        factory = lambda: make_calibrator(config.calibrator, mode="confidence")  # noqa: E731
        calibrated = crossfit_predict(factory, confidence, right.astype(int), n_folds=config.n_folds,
                                      seed=config.seed, groups=scored_ids)
    cal = summarize(right, calibrated, n_bins=config.n_bins, beta=config.beta, n_boot=config.n_boot, seed=config.seed)
    result["raw"] = {metric: _entry(raw, metric) for metric in SHOWN_METRICS}
    result["calibrated"] = {metric: _entry(cal, metric) for metric in SHOWN_METRICS}
    result["certification"] = _certify(confidence, right, scored_ids, config)
    result["plot"] = side_by_side(
        reliability_diagram(right, confidence, config.n_bins, "quantile", title=f"{name}: raw"),
        reliability_diagram(right, calibrated, config.n_bins, "quantile", title=f"{name}: {config.calibrator}, cross-fitted"),
    ).to_dict()
    return result


@dataclass
class ProbeResult:
    """The hidden-state probe as an estimator: each record's nested cross-fitted P(correct) (no
    value from a probe fitted, or a layer chosen, on its own question), what the summary says of
    it, and the note."""

    values: np.ndarray  # (n,) in record order
    info: dict
    note: str


def hidden_state_probe(records: QARecords, hidden: np.ndarray, config: QAReportConfig) -> ProbeResult:
    """A linear probe's nested cross-fitted P(correct) from the saved hidden states (folds grouped
    by question id; each outer fold picks its layer on its own training part)."""
    if hidden.shape[0] != records.correct.size:
        raise DataError(f"{hidden.shape[0]} rows of hidden states for {records.correct.size} records")
    nested = nested_crossfit(hidden, records.correct.astype(int), groups=records.ids, n_folds=config.n_folds,
                             seed=config.seed)
    # Descriptive only (the probe's scores never use it): each layer's cross-validated AUROC over
    # all the questions, and the layer it puts first.
    per_layer = layer_scores(hidden, records.correct.astype(int), groups=records.ids, n_folds=config.n_folds,
                             seed=config.seed)
    info = {"chosen_layers": nested.chosen_layers, "auroc": nested.auroc, "scheme": nested.scheme.to_dict(),
            "best_layer": per_layer.best_layer,
            "layer_auroc": {str(layer): value for layer, value in zip(per_layer.layers, per_layer.auroc)}}
    note = (f"{PROBE_NAME}: logistic regression on a last-token hidden state, {nested.scheme.describe()}; "
            f"the layer chosen inside each outer fold's training part: {nested.chosen_layers}")
    return ProbeResult(nested.probabilities[:, 1], info, note)


def write_targets(records: Sequence[dict], probe: ProbeResult, path: str | Path) -> Path:
    """Each `howsure qa` record plus ``target_confidence``, the probe's cross-fitted P(correct):
    the targets `howsure finetune-verbal` trains the model to say."""
    if len(records) != probe.values.size:
        raise DataError(f"{len(records)} records but {probe.values.size} probe values")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record, value in zip(records, probe.values):
            handle.write(json.dumps({**record, "target_confidence": round(float(value), 6)}, ensure_ascii=False) + "\n")
    return path


def qa_report(records: QARecords, *, hidden: np.ndarray | None = None, config: QAReportConfig | None = None,
              source: str = "", command: str | None = None, probe: ProbeResult | None = None) -> dict:
    """The summary of every estimator (one entry each, in the records' order, the probe last).

    With ``hidden`` (or its ``probe``, `hidden_state_probe`, already computed), the probe's nested
    cross-fitted P(correct) is added as ``hidden_state_probe`` and its layers are stated."""
    config = config or QAReportConfig()
    scores = dict(records.scores)
    notes = list(records.notes)
    if probe is None and hidden is not None:
        probe = hidden_state_probe(records, hidden, config)
    probe_info = None if probe is None else probe.info
    if probe is not None:
        scores[PROBE_NAME] = probe.values
        notes.append(probe.note)
    if not scores:
        raise DataError(f"{source or 'the input'} has no estimator scores ('scores' is empty in every record)")
    estimators = [estimator_result(name, values, records.correct, records.ids, config)
                  for name, values in scores.items()]
    return {
        "format": SUMMARY_FORMAT, "version": 1, "title": "Confidence estimators for free-form answers",
        "howsure_version": __version__, "command": command,
        "input": {"path": source, "n_items": int(records.correct.size), "n_correct": int(records.correct.sum()),
                  "accuracy": float(records.correct.mean())},
        "settings": {"calibrator": config.calibrator, "n_folds": config.n_folds, "target_accuracy": config.target_accuracy,
                     "delta": config.delta, "certify_share": config.certify_share, "n_boot": config.n_boot,
                     "beta": config.beta, "n_bins": config.n_bins, "seed": config.seed},
        "probe": probe_info, "estimators": estimators, "notes": notes,
    }
