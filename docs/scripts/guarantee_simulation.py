"""Print the guarantee-simulation table of docs/decisions.md.

Treats a scored data set as the population, draws calibration sets from it iid with
replacement, certifies a threshold on each with every rule, and reports how often the
automated items' accuracy over the WHOLE population falls below the target. Populations:

* ``base`` / ``finetuned``: the 1,000 cached Llama-3.1-8B-Instruct results of the public
  write-up (raw confidences);
* ``smollm2_raw`` / ``smollm2_calibrated``: the bundled model (SmolLM2-135M) on the 2,000
  bundled rt-polarity sentences, from ``tests/data/smollm2_rt_polarity_scores.csv``: its raw
  confidences, and the 5-fold cross-fitted calibrated ones (each item calibrated by a
  calibrator fitted on the other folds, with its own calibrated prediction and correctness).

    PYTHONPATH=src python docs/scripts/guarantee_simulation.py [--draws 1000] [--seed 2024]

The SmolLM2 fixture was written by this script from ``howsure score`` and ``howsure evaluate``
output (tests/data/README.md has the commands):

    PYTHONPATH=src python docs/scripts/guarantee_simulation.py --write-fixture SCORES.jsonl PREDICTIONS.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from howsure.decisions.pvalues import min_items_to_certify
from howsure.decisions.simulation import simulate_guarantee, SIMULATION_RULES

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / ".." / "shared" / "data" / "sentiment" / "seed_cwc" / "results"
SMOLLM2 = ROOT / "tests" / "data" / "smollm2_rt_polarity_scores.csv"
SAMPLE = ROOT / "src" / "howsure" / "samples" / "rt_polarity_2000.csv"
# (population, target accuracy, calibration-set size); tests/test_guarantee_simulation.py runs the same.
SCENARIOS = [
    ("base", 0.95, 1000), ("base", 0.95, 500), ("base", 0.90, 300), ("base", 0.85, 1000),
    ("finetuned", 0.97, 1000),
    ("smollm2_raw", 0.80, 1000), ("smollm2_raw", 0.85, 1000),
    ("smollm2_calibrated", 0.80, 1000), ("smollm2_calibrated", 0.85, 1000),
]


def population(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of every item of a population."""
    if name.startswith("smollm2_"):
        with SMOLLM2.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        prefix = "" if name == "smollm2_raw" else "calibrated_"
        return (np.array([float(r[prefix + "confidence"]) for r in rows]),
                np.array([r[prefix + "correct"] == "1" for r in rows]))
    records = json.loads((RESULTS / f"llama31_8b_{name}_results.json").read_text())["results"]
    return np.array([r["confidence"] for r in records]), np.array([r["correct"] for r in records], bool)


def write_fixture(scores: Path, predictions: Path, out: Path = SMOLLM2) -> None:
    """One row per scored sentence: its id in the bundled sample, gold label, the raw confidence
    of the predicted label and whether it was right, and the same for the cross-fitted
    calibrated prediction (``howsure evaluate``'s predictions.jsonl)."""
    with SAMPLE.open(newline="") as handle:
        sample_ids = [row["id"] for row in csv.DictReader(handle)]
    scored = [json.loads(line) for line in scores.read_text().splitlines() if line.strip()]
    held_out = {r["id"]: r for r in map(json.loads, predictions.read_text().splitlines()) if r}
    if len(scored) != len(sample_ids) or set(held_out) != {s["id"] for s in scored}:
        raise SystemExit(f"{scores} and {predictions} must both cover all {len(sample_ids)} sample rows")
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "label", "confidence", "correct", "calibrated_confidence", "calibrated_correct"])
        for s in scored:
            p = held_out[s["id"]]
            writer.writerow([
                sample_ids[s["row"]], s["label"], f"{s['confidence']:.8f}", int(s["prediction"] == s["label"]),
                f"{p['calibrated_confidence']:.8f}", int(p["calibrated_correct"]),
            ])
    print(f"{len(scored)} rows written to {out}")


def describe_populations(delta: float) -> None:
    """What the simulation table's rows depend on: each population's accuracy, how accurate its
    most confident fifth is, where its most confident error sits, and how many error-free
    automated calibration items each target needs before anything can be certified."""
    for name in dict.fromkeys(name for name, _, _ in SCENARIOS):
        confidence, correct = population(name)
        ranked = correct[np.argsort(-confidence, kind="stable")]
        top_fifth = ranked[: len(ranked) // 5]
        print(f"{name}: {len(ranked)} items, accuracy {correct.mean():.3f}; most confident 20 % "
              f"{top_fifth.mean():.3f} accurate; most confident error at rank {int(np.argmin(ranked)) + 1}")
    for target in sorted({target for _, target, _ in SCENARIOS}):
        print(f"target {target:.2f}: at least {min_items_to_certify(target, delta)} error-free automated items to certify")
    print()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--write-fixture", nargs=2, type=Path, metavar=("SCORES", "PREDICTIONS"),
                        help="Write the SmolLM2 fixture from howsure score and howsure evaluate output.")
    args = parser.parse_args()
    if args.write_fixture:
        write_fixture(*args.write_fixture)
        return
    describe_populations(args.delta)
    print(f"delta = {args.delta}, {args.draws} calibration sets per row, seed {args.seed}")
    print("cells: draws whose automated items fell below the target (share of draws); last column: share of "
          "draws in which fallback / fixed_sequence / multistart certified anything; oracle_share.py prints the "
          "shares automated in the same draws\n")
    print("| population | target | n | " + " | ".join(SIMULATION_RULES) + " | certified in |")
    print("|---|---|---|" + "---|" * (len(SIMULATION_RULES) + 1))
    for name, target, n in SCENARIOS:
        confidences, correct = population(name)
        result = simulate_guarantee(correct, confidences, n_calibration=n, n_draws=args.draws,
                                    target_accuracy=target, delta=args.delta, seed=args.seed)
        cells = [
            f"{r['failures']} ({r['failure_rate']:.1%})"
            for r in (result[rule] for rule in SIMULATION_RULES)
        ]
        certified = " / ".join(f"{result[m]['certified_rate']:.0%}" for m in ("fallback", "fixed_sequence", "multistart"))
        print(f"| {name} | {target:.2f} | {n} | " + " | ".join(cells) + f" | {certified} |")


if __name__ == "__main__":
    main()
