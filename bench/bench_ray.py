"""`--engine ray` against single-process scoring, side by side in one run: the same SST-2 dev
texts, bundled model and options, scored by `score_rows` in this process and by
`score_rows_on_ray` on a local cluster (loopback, ``--actors`` actors of ``--threads`` threads
each). Prints the wall time of each (the Ray time includes starting the cluster and the actors,
each loading the model), texts/s, their ratio, whether the two output files are equal byte for
byte, and the machine's load average (other processes slow both runs).

    PYTHONPATH=src python bench/bench_ray.py --limit 400 --actors 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's howsure
sys.path.insert(0, str(ROOT / "bench"))

from bench_scoring import load_texts  # noqa: E402  (after the path set-up above)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per actor, and of the single process")
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    import warnings

    from howsure.backends import load_backend
    from howsure.backends.labels import LowLabelMassWarning
    from howsure.core.task import load_task
    from howsure.io.texts import TextRows
    from howsure.pipelines.ray_engine import score_rows_on_ray
    from howsure.pipelines.score_job import score_rows

    warnings.simplefilter("ignore", LowLabelMassWarning)
    texts = load_texts(args.limit)
    rows = TextRows(list(range(len(texts))), texts, [str(i) for i in range(len(texts))], [None] * len(texts))
    task = load_task("sentiment")
    options = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        single, clustered = Path(tmp) / "single.jsonl", Path(tmp) / "ray.jsonl"
        start = time.perf_counter()
        score_rows(load_backend(args.model, **options), task, rows, single)
        single_s = time.perf_counter() - start
        start = time.perf_counter()
        score_rows_on_ray(args.model, "transformers", options, task, rows, clustered, actors=args.actors,
                          num_cpus=args.threads)
        ray_s = time.perf_counter() - start
        equal = single.read_bytes() == clustered.read_bytes()
    print(f"{len(texts)} SST-2 dev texts, model {args.model}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'engine':<34}{'seconds':>9}{'texts/s':>9}{'ratio':>7}")
    print(f"{'local (1 process, ' + str(args.threads) + ' thread(s))':<34}{single_s:>9.1f}"
          f"{len(texts) / single_s:>9.1f}{1.0:>7.2f}")
    print(f"{'ray (' + str(args.actors) + ' actors, ' + str(args.threads) + ' thread(s) each)':<34}{ray_s:>9.1f}"
          f"{len(texts) / ray_s:>9.1f}{single_s / ray_s:>7.2f}")
    print(f"outputs equal byte for byte: {'yes' if equal else 'NO'}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
