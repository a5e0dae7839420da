"""Held-out and cross-fitted calibration quality of every calibrator on the cached seed_cwc run.

    PYTHONPATH=src python docs/scripts/calibration_table.py [--seeds 10] [--data PATH]

Input: the public write-up's 1,000 cached Llama-3.1-8B-Instruct sentiment results
(../shared/data/sentiment/seed_cwc/results/llama31_8b_base_results.json). Both modes are run:
"confidence" (top-label confidence against correctness) and "distribution" (p(positive)
against the true label). Nothing is ever scored on the items it was fitted on:

* held-out: grouped (duplicate texts on one side) stratified 50/50 calibration/test splits,
  repeated over ``--seeds`` seeds; the table gives mean and standard deviation over seeds;
* cross-fitted: 5-fold out-of-fold predictions over all 1,000 items (seed 0).

Prints how often the raw high-confidence answers are right, the Markdown tables of
docs/calibration.md and auto's explanation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss

from howsure.calibration import CALIBRATOR_NAMES, make_calibrator
from howsure.calibration import crossfit_predict
from howsure.stats.splits import calibration_test_split

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2].parent
    / "shared" / "data" / "sentiment" / "seed_cwc" / "results" / "llama31_8b_base_results.json"
)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Equal-width-bin ECE; (n,) confidences and (n,) 0/1 correctness -> float."""
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    gaps = np.abs(np.bincount(bins, confidence - correct, minlength=n_bins))
    return float(gaps.sum() / counts.sum())


def load(path: Path) -> dict[str, object]:
    results = json.loads(path.read_text())["results"]
    confidence = np.array([r["confidence"] for r in results])
    p_positive = np.where([r["prediction"] == "positive" for r in results], confidence, 1.0 - confidence)
    return {
        "confidence": (confidence, np.array([r["correct"] for r in results], dtype=int)),
        "distribution": (
            np.column_stack([1.0 - p_positive, p_positive]),
            np.array([r["expected"] == "positive" for r in results], dtype=int),
        ),
        "texts": [r["text"] for r in results],
    }


def quality(mode: str, predictions: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """ECE (15 and 20 bins), Brier, NLL and accuracy of the top label, for either mode."""
    if mode == "confidence":
        confidence, correct, p_target = predictions, y, predictions
    else:
        confidence = predictions.max(axis=1)
        correct = (predictions.argmax(axis=1) == y).astype(int)
        p_target = predictions[:, 1]
    return {
        "ECE-15": expected_calibration_error(confidence, correct, 15),
        "ECE-20": expected_calibration_error(confidence, correct, 20),
        "Brier": brier_score_loss(y, p_target),
        "NLL": log_loss(y, p_target, labels=[0, 1]),
        "accuracy": float(correct.mean()),
    }


def held_out(mode: str, scores: np.ndarray, y: np.ndarray, texts: list[str], seeds: int) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {"raw": []}
    for seed in range(seeds):
        cal_idx, test_idx = calibration_test_split(y, test_size=0.5, seed=seed, groups=texts)
        rows["raw"].append(quality(mode, scores[test_idx], y[test_idx]))
        for name in CALIBRATOR_NAMES:
            calibrator = make_calibrator(name, mode=mode)
            if name == "auto":
                calibrator.fit(scores[cal_idx], y[cal_idx], groups=[texts[i] for i in cal_idx])
            else:
                calibrator.fit(scores[cal_idx], y[cal_idx])
            rows.setdefault(name, []).append(quality(mode, calibrator.predict_proba(scores[test_idx]), y[test_idx]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    data = load(args.data)
    texts = data["texts"]
    columns = ["ECE-15", "ECE-20", "Brier", "NLL", "accuracy"]
    confidence, correct = data["confidence"]
    confident = confidence >= 0.95
    print(f"raw: {confident.sum()} items scored at least 0.95, right {correct[confident].mean():.1%} of the time")
    for mode in ("confidence", "distribution"):
        scores, y = data[mode]
        print(f"\n### mode={mode}: held-out, 50/50 grouped splits, mean ± sd over {args.seeds} seeds\n")
        print("| calibrator | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for name, runs in held_out(mode, scores, y, texts, args.seeds).items():
            cells = [f"{np.mean([r[c] for r in runs]):.3f} ± {np.std([r[c] for r in runs]):.3f}" for c in columns]
            print(f"| {name} | " + " | ".join(cells) + " |")

        print(f"\n### mode={mode}: 5-fold cross-fitted over all {y.size} items (seed 0)\n")
        print("| calibrator | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        raw = quality(mode, scores, y)
        print("| raw (no fitting) | " + " | ".join(f"{raw[c]:.3f}" for c in columns) + " |")
        for name in CALIBRATOR_NAMES:
            if name == "auto":
                continue  # auto's own choice needs nested folds; its explanation is printed below
            out_of_fold = crossfit_predict(lambda name=name: make_calibrator(name, mode=mode), scores, y, groups=texts)
            row = quality(mode, out_of_fold, y)
            print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
        auto = make_calibrator("auto", mode=mode).fit(scores, y, groups=texts)
        print(f"\nauto on all {y.size} items: {auto.explanation_}")


if __name__ == "__main__":
    main()
