"""Print the seed_cwc figures of docs/decisions.md: what can be certified on the public
write-up's 1,000 cached Llama-3.1-8B-Instruct results at 95 % accuracy, delta 0.05.

    PYTHONPATH=src python docs/scripts/seed_cwc_figures.py

Every confidence used here was produced without looking at the items it is judged on: the raw
model confidences (nothing fitted), or a calibrator fitted on one half (split group-aware by
text, so duplicate texts stay together) and certified on the other half.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from howsure.calibration import make_calibrator
from howsure.decisions.certification import certify_threshold, certify_two_sided
from howsure.decisions.planning import labels_needed
from howsure.decisions.simulation import empirical_threshold, naive_scan_threshold
from howsure.decisions.policy_certification import certify_policy
from howsure.stats.splits import calibration_test_split

RESULTS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sentiment" / "seed_cwc" / "results"
LABELS = ["negative", "positive"]
TARGET, DELTA = 0.95, 0.05


def main() -> None:
    data = json.loads((RESULTS / "llama31_8b_base_results.json").read_text())
    records = data["results"]
    confidence = np.array([r["confidence"] for r in records])
    correct = np.array([r["correct"] for r in records], bool)
    texts = [r["text"] for r in records]
    truth = np.array([LABELS.index(r["expected"]) for r in records])
    # Two labels: the predicted label's confidence gives the whole distribution.
    p_positive = np.where([r["prediction"] == "positive" for r in records], confidence, 1 - confidence)
    probabilities = np.column_stack([1 - p_positive, p_positive])
    n = len(records)

    print(f"{n} items, accuracy {correct.mean():.3f}; target {TARGET}, delta {DELTA}\n")
    print("1. Raw confidences, all items (nothing fitted):")
    for method, p_value in [("fallback", "binomial"), ("fallback", "hoeffding_bentkus"),
                            ("multistart", "binomial"), ("fixed_sequence", "binomial")]:
        cert = certify_threshold(correct, confidence, TARGET, DELTA, method=method, p_value=p_value)
        print(f"   {method:15s} {p_value:18s} threshold {cert.threshold:.6f}: {cert.n_automated} items "
              f"({cert.automation_rate:.1%}), {cert.n_errors} errors, observed accuracy {cert.empirical_accuracy:.3f}")
    for name, threshold in [("naive scan (NOT valid)", naive_scan_threshold(correct, confidence, TARGET, DELTA)),
                            ("observed accuracy >= target (NOT valid)", empirical_threshold(correct, confidence, TARGET))]:
        chosen = confidence >= threshold
        print(f"   {name:38s} threshold {threshold:.6f}: {chosen.sum()} items, observed accuracy {correct[chosen].mean():.3f}")
    isotonic_same_items = np.array(data["calibrated"]["isotonic_calibrated"])
    print(f"   write-up: isotonic fitted and judged on the same items, calibrated >= 0.95: "
          f"{(isotonic_same_items >= 0.95).sum()} items ({len(np.unique(isotonic_same_items))} distinct values)")

    print("\n2. Two-sided (each side at delta/2):")
    for method in ("fallback", "fixed_sequence"):
        two = certify_two_sided(truth == 1, p_positive, TARGET, DELTA, method=method)
        accepted = p_positive >= two.accept_above if two.accept_above is not None else np.zeros(n, bool)
        rejected = p_positive <= two.reject_below if two.reject_below is not None else np.zeros(n, bool)
        sides = [f"auto-positive if P(positive) >= {two.accept_above:.6f} ({accepted.sum()} items)"
                 if two.accept_above is not None else "never auto-positive",
                 f"auto-negative if P(positive) <= {two.reject_below:.6f} ({rejected.sum()} items)"
                 if two.reject_below is not None else "never auto-negative"]
        print(f"   {method:15s} {', '.join(sides)}, review {n - accepted.sum() - rejected.sum()}")
    # The same rule is what a per-class policy on the two labels stores and routes by.
    per_class = certify_policy(truth, probabilities, labels=LABELS, target_accuracy=TARGET, delta=DELTA,
                               per_class=True, method="fixed_sequence")
    routed = sum(d.decision == "auto" for d in per_class.decide(probabilities))
    print(f"   as a per-class policy (howsure thresholds --per-class --method fixed_sequence): "
          f"{per_class.two_sided().text()}; automates {routed}")

    print("\n3. Calibrator fitted on one half, threshold certified on the other (split by text, seed s):")
    for seed in (0, 1):
        fit_idx, cert_idx = calibration_test_split(truth, test_size=0.5, seed=seed, groups=texts)
        raw = certify_policy(truth[cert_idx], probabilities[cert_idx], labels=LABELS, target_accuracy=TARGET, delta=DELTA)
        row = [f"raw {raw.guarantee['n_automated']}"]
        for name in ("platt", "temperature", "isotonic"):
            calibrator = make_calibrator(name, mode="distribution").fit(probabilities[fit_idx], truth[fit_idx])
            policy = certify_policy(truth[cert_idx], probabilities[cert_idx], labels=LABELS, calibrator=calibrator,
                                    target_accuracy=TARGET, delta=DELTA)
            row.append(f"{name} {policy.guarantee['n_automated']}")
        print(f"   s={seed}: fit on {len(fit_idx)}, certify on {len(cert_idx)}; automated: " + ", ".join(row))

    print("\n4. Labelled items needed (plug-in, observed profile of all 1,000 raw confidences):")
    for rate in (0.1, 0.2, 0.25, 0.3):
        needed = labels_needed(correct, confidence, TARGET, DELTA, automation_rate=rate)
        print(f"   automate {rate:.0%}: " + ("not reachable" if needed is None else f"{needed:,} labelled items"))


if __name__ == "__main__":
    main()
