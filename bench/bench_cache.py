"""What the score cache saves: the same SST-2 dev texts scored twice on the bundled model through
`howsure.backends.load_backend(..., cache=PATH)`, in one run, into a fresh cache file.

* first   open the cached backend, score every text (all miss: the model loads and scores them);
* second  open a new cached backend on the same file, score the same texts (all hit: the model
          never loads).

Each time includes opening the backend, as a second ``howsure score --cache`` run would. It
prints both times, the ratio first / second and whether the second run's scores equal the first
run's; the target is a ratio of at least 50.

    python bench/bench_cache.py               # 200 texts, 2 threads
    python bench/bench_cache.py --limit 872   # every dev text
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's howsure
sys.path.insert(0, str(ROOT / "bench"))

from bench_scoring import load_texts  # noqa: E402  (after the path set-up above)

TARGET_RATIO = 50.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np

    from howsure.backends import load_backend
    from howsure.models import DEFAULT_MODEL
    from howsure.core.task import load_task

    texts = load_texts(args.limit)
    task = load_task("sentiment")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scores.sqlite"
        runs = []
        for _ in ("first", "second"):
            start = time.perf_counter()
            backend = load_backend(DEFAULT_MODEL, cache=path, threads=args.threads)
            scores = backend.label_scores(task, texts)
            runs.append((time.perf_counter() - start, backend.hits, backend.scored, scores))
    (first_s, first_hits, first_scored, first), (second_s, second_hits, second_scored, second) = runs
    same = all(np.array_equal(a.probabilities, b.probabilities) for a, b in zip(first, second))
    ratio = first_s / second_s
    print(f"{len(texts)} SST-2 dev texts, model {DEFAULT_MODEL}, {args.threads} threads, bundled sentiment task")
    print(f"first  run: {first_s:8.3f} s  ({first_hits} from the cache, {first_scored} scored by the model)")
    print(f"second run: {second_s:8.3f} s  ({second_hits} from the cache, {second_scored} scored by the model)")
    print(f"first / second: {ratio:.0f}x (target >= {TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'}); "
          f"second run's scores equal the first's: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
