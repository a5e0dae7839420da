"""Print the guarantee-simulation table of docs/decisions.md.

Treats the cached Llama-3.1-8B-Instruct results of the public write-up (1,000 items) as the
population, draws calibration sets from it iid with replacement, certifies a threshold on
each with every rule, and reports how often the automated items' accuracy over the WHOLE
population falls below the target.

    PYTHONPATH=src python docs/scripts/guarantee_simulation.py [--draws 1000] [--seed 2024]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from howsure.decisions import SIMULATION_RULES, simulate_guarantee

RESULTS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sentiment" / "seed_cwc" / "results"
SCENARIOS = [("base", 0.95, 1000), ("base", 0.95, 500), ("base", 0.90, 300), ("base", 0.85, 1000), ("finetuned", 0.97, 1000)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--delta", type=float, default=0.05)
    args = parser.parse_args()
    print(f"delta = {args.delta}, {args.draws} calibration sets per row, seed {args.seed}")
    print("cells: failures (share of draws) / mean share of the population automated\n")
    print("| population | target | n | " + " | ".join(SIMULATION_RULES) + " |")
    print("|---|---|---|" + "---|" * len(SIMULATION_RULES))
    for name, target, n in SCENARIOS:
        records = json.loads((RESULTS / f"llama31_8b_{name}_results.json").read_text())["results"]
        confidences = np.array([r["confidence"] for r in records])
        correct = np.array([r["correct"] for r in records], bool)
        result = simulate_guarantee(confidences, correct, n_calibration=n, n_draws=args.draws,
                                    target_accuracy=target, delta=args.delta, seed=args.seed)
        cells = [
            f"{r['failures']} ({r['failure_rate']:.1%}) / {np.mean(r['automation_share']):.1%}"
            for r in (result[rule] for rule in SIMULATION_RULES)
        ]
        print(f"| {name} | {target:.2f} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
