"""Print how much each certification method automates against the most it could.

The yardstick is the oracle share: treating a scored data set as the whole population, the
share automated by the loosest threshold whose accuracy over the WHOLE population reaches the
target (`howsure.decisions.oracle_automation_share`). No method that certifies from a sample
can reach it reliably; the table says how close each comes. Calibration sets are drawn from the
population iid with replacement, as in ``guarantee_simulation.py`` (same populations and
scenarios, plus calibrated SmolLM2 at the demo's 0.90).

Rows marked "calibrated starts" run the fallback and multistart walks from
`howsure.decisions.calibrated_starts` of the target, as a policy with a calibrator does; the
others from `DEFAULT_STARTS`, as a policy on raw confidences does.

    PYTHONPATH=src python docs/scripts/oracle_share.py [--draws 500] [--seed 2024]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guarantee_simulation import RESULTS, SCENARIOS, population  # noqa: E402

from howsure.decisions.certification import certify_threshold
from howsure.decisions.simulation import oracle_automation_share
from howsure.decisions.walks import calibrated_starts, DEFAULT_STARTS

METHODS = ("fallback", "multistart", "fixed_sequence")


def run(confidences, correct, target, n, draws, seed, starts, delta):
    """Per method: (mean share of the population automated, failures)."""
    rng = np.random.default_rng(seed)
    shares = {m: np.zeros(draws) for m in METHODS}
    failures = dict.fromkeys(METHODS, 0)
    for draw in range(draws):
        pick = rng.integers(0, confidences.size, n)
        for method in METHODS:
            t = certify_threshold(correct[pick], confidences[pick], target, delta, method=method,
                                  starts=starts, plan_if_uncertified=False).threshold
            if t is None:
                continue
            automated = confidences >= t
            shares[method][draw] = automated.mean()
            failures[method] += int(correct[automated].mean() < target - 1e-12)
    return {m: (float(shares[m].mean()), failures[m]) for m in METHODS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--delta", type=float, default=0.05)
    args = parser.parse_args()
    print(f"delta = {args.delta}, {args.draws} calibration sets per row, seed {args.seed}")
    print("cells: mean share of the population automated (0 when nothing certified), its ratio to the "
          "oracle share, failures\n")
    print("| population | target | n | starts | oracle | " + " | ".join(METHODS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(METHODS))
    rows = [(*s, False) for s in SCENARIOS] + [
        ("smollm2_calibrated", 0.80, 1000, True), ("smollm2_calibrated", 0.85, 1000, True),
        ("smollm2_calibrated", 0.90, 1000, False), ("smollm2_calibrated", 0.90, 1000, True),
    ]
    for name, target, n, calibrated in rows:
        if not name.startswith("smollm2_") and not RESULTS.exists():
            continue
        confidences, correct = population(name)
        oracle = oracle_automation_share(correct, confidences, target)
        starts = calibrated_starts(target) if calibrated else DEFAULT_STARTS
        result = run(confidences, correct, target, n, args.draws, args.seed, starts, args.delta)
        cells = [
            f"{share:.1%} ({share / oracle:.0%}), {fails}" if oracle else f"{share:.1%}, {fails}"
            for share, fails in (result[m] for m in METHODS)
        ]
        kind = "calibrated" if calibrated else "default"
        print(f"| {name} | {target:.2f} | {n} | {kind} | {oracle:.1%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
