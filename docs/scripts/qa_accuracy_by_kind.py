"""Accuracy of a `howsure qa` output per kind of question (the id's part before the first '-',
as `howsure datasets closed-qa` writes ids), and which judge decided.

    python docs/scripts/qa_accuracy_by_kind.py closed-answers.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict


def main(path: str) -> None:
    right: dict[str, list[bool]] = defaultdict(list)
    judges: Counter = Counter()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            right[str(record["id"]).split("-")[0]].append(bool(record["correct"]))
            judges[(record["judge"], record["correct"])] += 1
    for kind, values in sorted(right.items()):
        print(f"{kind:12s} {sum(values):4d} of {len(values):4d} right ({sum(values) / len(values):.1%})")
    total = [v for values in right.values() for v in values]
    print(f"{'all':12s} {sum(total):4d} of {len(total):4d} right ({sum(total) / len(total):.1%})")
    print("decided by: " + ", ".join(f"{judge} {'right' if ok else 'wrong'} {n}" for (judge, ok), n in sorted(judges.items())))


if __name__ == "__main__":
    main(sys.argv[1])
