"""The walk-through of docs/feedback.md: a review store filled by a simulated model, then every
command of the learning loop run on it, with its output.

    PYTHONPATH=src python docs/scripts/feedback_walkthrough.py [--dir out/feedback-docs]

The simulated binary model is over-confident. Day 1: a first policy certified on 2,000
labelled items decides 3,000 items at a 5 % audit rate and a reviewer works the whole queue;
a trial recalibration (`--no-activate`) and a drift check follow. Day 2: 1,500 items from a
population on which the model is less sure (mean margin 1.0 instead of 2.5) and less accurate;
drift check, queue reviewed, recalibration. Day 3: 3,000 more drifted items under the new
version, reviewed; drift check and a recalibration from that version's items only; the policy
history, two rollbacks and the export. Everything is seeded, so the counts repeat; the dates,
paths and policy ids do not. The script also measures, on 200,000 fresh simulated items, what
version 1 does on the drifted population and how accurate that population's most confident
5 % are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from howsure.decisions.policy_certification import certify_policy
from howsure.service.store import NewItem, ReviewStore

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["negative", "positive"]
FRESH_ITEMS = 200_000


def model_outputs(n: int, seed: int, margin: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Raw probabilities of a simulated, over-confident binary model, and the true labels."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    p_true = 1 / (1 + np.exp(-rng.normal(margin, 2.0, n)))
    p_pos = np.where(truth == 1, p_true, 1 - p_true)
    return np.column_stack([1 - p_pos, p_pos]), truth


def serve(store: ReviewStore, n: int, seed: int, margin: float = 2.5, audit_rate: float = 0.05) -> dict[int, str]:
    """Decide ``n`` items with the active policy as the service does and store them; returns
    the true label per item id."""
    record = store.active_policy()
    policy, rng = record.to_policy(), np.random.default_rng(seed + 1)
    probs, truth = model_outputs(n, seed, margin)
    items = [NewItem(text=f"text {seed}-{i}", prediction=d.label, confidence=d.confidence,
                     probabilities=d.probabilities, raw_probabilities=dict(zip(LABELS, map(float, p))),
                     decision=d.decision, policy_version=record.version, policy_id=record.policy_id,
                     queue_reason="review" if d.decision == "review" else
                                  ("audit" if rng.random() < audit_rate else None))
             for i, (p, d) in enumerate(zip(probs, policy.decide(probs)))]
    records = store.add_items(items, actor="client")
    return {r.id: LABELS[t] for r, t in zip(records, truth)}


def review_queue(store: ReviewStore, truth_of: dict[int, str]) -> int:
    """A reviewer works the whole queue, labelling every item correctly; returns the count."""
    count = 0
    while (item := store.claim_next("ann")) is not None:
        store.submit_review(item.id, "ann", truth_of[item.id])
        count += 1
    return count


def howsure(directory: Path, *args: str) -> None:
    """Run one command in ``directory`` and print it with its output, as the page shows it."""
    print("$ howsure " + " ".join(args), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "100"}
    completed = subprocess.run([sys.executable, "-m", "howsure", *args], cwd=directory, env=env,
                               capture_output=True, text=True)
    print((completed.stdout + completed.stderr).rstrip())
    if completed.returncode:
        print(f"[exit {completed.returncode}]")


def drifted_population(store: ReviewStore) -> None:
    """What version 1 does on the drifted population, and how accurate its top 5 % are."""
    probs, truth = model_outputs(FRESH_ITEMS, seed=10_000, margin=1.0)
    decisions = store.get_policy(1).to_policy().decide(probs)
    auto = np.array([d.decision == "auto" for d in decisions])
    right = np.array([d.label == LABELS[t] for d, t in zip(decisions, truth)])
    top = np.argsort(-probs.max(axis=1))[: FRESH_ITEMS // 20]
    top_right = probs[top].argmax(axis=1) == truth[top]
    print(f"{FRESH_ITEMS:,} fresh drifted items: version 1 automates {auto.mean():.1%} of them at "
          f"{right[auto].mean():.1%} accuracy; the model's most confident 5 % are {top_right.mean():.1%} accurate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "feedback-docs")
    args = parser.parse_args()
    directory = args.dir.resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    store = ReviewStore(str(directory / "reviews.db"))

    probs, truth = model_outputs(2000, seed=0)
    store.add_policy(certify_policy(truth, probs, labels=LABELS, model_id="simulated").to_dict(),
                     actor="ops", note="certified on 2,000 labelled items, no calibrator")
    day1, day1_truth = model_outputs(3000, seed=1)
    decisions = store.active_policy().to_policy().decide(day1)
    right = np.array([d.label == LABELS[t] for d, t in zip(decisions, day1_truth)])
    auto = np.array([d.decision == "auto" for d in decisions])
    print(f"day 1: the model is {right.mean():.1%} accurate on the 3,000 items, "
          f"{right[auto].mean():.1%} on the {auto.sum()} version 1 automates")
    print(f"{review_queue(store, serve(store, 3000, seed=1))} reviews\n")
    howsure(directory, "policy", "list", "--db", "reviews.db")
    howsure(directory, "recalibrate", "--db", "reviews.db", "--no-activate", "--actor", "ops")
    howsure(directory, "drift", "--db", "reviews.db")

    truth_of = serve(store, 1500, seed=21, margin=1.0)
    print("\nday 2: 1,500 drifted items")
    drifted_population(store)
    howsure(directory, "drift", "--db", "reviews.db")
    print(f"{review_queue(store, truth_of)} reviews")
    howsure(directory, "recalibrate", "--db", "reviews.db", "--actor", "ops")

    print(f"\nday 3: 3,000 drifted items, {review_queue(store, serve(store, 3000, seed=31, margin=1.0))} reviews")
    howsure(directory, "drift", "--db", "reviews.db")
    active = store.active_policy().version
    howsure(directory, "recalibrate", "--db", "reviews.db", "--policy-version", str(active), "--actor", "ops")
    howsure(directory, "policy", "list", "--db", "reviews.db")
    howsure(directory, "policy", "rollback", "--db", "reviews.db", "--actor", "ops")
    howsure(directory, "policy", "rollback", "--db", "reviews.db", "--actor", "ops")
    howsure(directory, "export", "--db", "reviews.db", "--output", "reviewed.jsonl")
    print("$ head -2 reviewed.jsonl")
    print("\n".join((directory / "reviewed.jsonl").read_text().splitlines()[:2]))


if __name__ == "__main__":
    main()
