"""A linear probe on the answer-position hidden state against the label probabilities, on SST-2 dev.

    PYTHONPATH=src python docs/scripts/probe_vs_labels.py [--limit N] [--model smollm2-135m]

Every number is cross-fitted: the probe's probabilities come from `nested_crossfit` (each
outer fold's layer chosen and weights fitted on the other folds only; equal texts in one fold),
and calibrated label probabilities from `crossfit_predict` on the same folds' scheme. Metrics
(`howsure.stats.metrics.summarize`, 1000 bootstrap resamples) are top-label: confidence is the
predicted label's probability, correct says whether that label was gold. "AUROC P(pos)" is
the probability of "positive" as a score for the gold label being positive.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from howsure.backends import load_backend
from howsure.backends.transformers.hidden import answer_hidden_states
from howsure.calibration import make_calibrator
from howsure.calibration.crossfit import crossfit_predict
from howsure.core.task import load_task
from howsure.io.texts import read_texts
from howsure.probes.crossval import layer_scores, nested_crossfit
from howsure.probes.scorer import label_indices
from howsure.stats.metrics import auroc, summarize

DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sentiment" / "sst2" / "dev.tsv"
SHOWN = ("accuracy", "auroc", "ece", "rms_calibration_error", "brier")


def row(name: str, probabilities: np.ndarray, y: np.ndarray, positive: int) -> str:
    predicted = probabilities.argmax(1)
    summary = summarize(predicted == y, probabilities.max(1), n_boot=1000, seed=0)
    cells = [f"{summary[k]['value']:.3f} [{summary[k]['low']:.3f}, {summary[k]['high']:.3f}]" for k in SHOWN]
    return f"| {name} | " + " | ".join(cells) + f" | {auroc(y == positive, probabilities[:, positive]):.3f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=None, help="First N dev texts only (default: all 872).")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    task = load_task("sentiment")
    rows = read_texts(DEV, "content", None, "label")
    texts = rows.texts[: args.limit]
    gold = [{"0": "negative", "1": "positive"}[g] for g in rows.labels[: args.limit]]
    y = label_indices(gold, task.labels)
    positive = list(task.labels).index("positive")
    backend = load_backend(args.model, threads=args.threads)

    start = time.perf_counter()
    label_probs = np.stack([s.probabilities for s in backend.label_scores(task, texts)])
    label_seconds = time.perf_counter() - start
    start = time.perf_counter()
    states = answer_hidden_states(backend, task, texts)
    hidden_seconds = time.perf_counter() - start
    start = time.perf_counter()
    per_layer = layer_scores(states, y, groups=texts)
    nested = nested_crossfit(states, y, groups=texts)
    probe_seconds = time.perf_counter() - start
    calibrated = crossfit_predict(lambda: make_calibrator("temperature"), label_probs, y, groups=texts)
    probe_calibrated = crossfit_predict(lambda: make_calibrator("temperature"), nested.probabilities, y, groups=texts)

    print(f"SST-2 dev, {len(texts)} texts, model {args.model}, task {task.name}; "
          f"{states.shape[1]} hidden states of size {states.shape[2]} per text")
    print(f"label scoring {label_seconds:.1f} s, hidden states {hidden_seconds:.1f} s, "
          f"probe cross-validation {probe_seconds:.1f} s")
    print(f"{nested.scheme.describe()}")
    print()
    print("| scores | accuracy | AUROC (right vs wrong) | ECE | RMS calibration error (100/bin) | Brier | AUROC P(pos) |")
    print("|---|---|---|---|---|---|---|")
    print(row("label probabilities, raw", label_probs, y, positive))
    print(row("label probabilities, temperature (cross-fitted)", calibrated, y, positive))
    print(row("probe, nested cross-fitted", nested.probabilities, y, positive))
    print(row("probe, nested cross-fitted + temperature (cross-fitted)", probe_calibrated, y, positive))
    print()
    print(f"layers chosen per outer fold (on its training folds only): {nested.chosen_layers}")
    print("cross-validated AUROC of P(positive) per layer (5 grouped folds, all items):")
    print(", ".join(f"{layer}: {value:.3f}" for layer, value in zip(per_layer.layers, per_layer.auroc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
