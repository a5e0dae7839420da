"""vLLM against transformers on one GPU, side by side in one run: the same SST-2 dev texts, the
same bundled model and task, scored by `--backend vllm` and by the transformers backend on the
same GPU. Prints texts/s of each, their ratio, the largest difference of a label probability and
how often the predicted labels agree.

Needs a CUDA GPU and vLLM (`pip install vllm`, in an environment of its own); without either it
says which is missing and exits 2. Not yet run: no GPU was available where it was written
(docs/backends.md says what has been measured).

    PYTHONPATH=src python bench/bench_vllm.py               # 872 texts
    PYTHONPATH=src python bench/bench_vllm.py --limit 200
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's howsure
sys.path.insert(0, str(ROOT / "bench"))

from bench_scoring import load_texts  # noqa: E402  (after the path set-up above)


def missing() -> str | None:
    """Why this machine cannot run the benchmark, or None."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (on a CUDA machine: pip install vllm, in an environment of its own)"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU; vLLM needs one"
    return None


def timed_scores(backend, task, texts):
    backend.label_scores(task, texts[:8])  # warm-up: kernels, prefix cache, label vocabulary
    start = time.perf_counter()
    scores = backend.label_scores(task, texts)
    return scores, len(texts) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    reason = missing()
    if reason:
        print(f"bench_vllm: cannot run here: {reason}", file=sys.stderr)
        return 2

    import numpy as np
    import torch

    from howsure.backends import load_backend
    from howsure.core.task import load_task

    texts = load_texts(args.limit)
    task = load_task("sentiment")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"{len(texts)} SST-2 dev texts, model {args.model}, {torch.cuda.get_device_name()}, commit {commit}")
    reference, reference_rate = timed_scores(load_backend(args.model, device="cuda"), task, texts)
    scores, rate = timed_scores(load_backend(args.model, "vllm"), task, texts)
    gap = max(float(np.max(np.abs(a.probabilities - b.probabilities))) for a, b in zip(scores, reference))
    agree = np.mean([a.prediction == b.prediction for a, b in zip(scores, reference)])
    print(f"{'backend':<24}{'texts/s':>10}{'ratio':>8}")
    print(f"{'transformers (cuda)':<24}{reference_rate:>10.1f}{1.0:>8.2f}")
    print(f"{'vllm':<24}{rate:>10.1f}{rate / reference_rate:>8.2f}")
    print(f"largest label-probability difference vllm vs transformers: {gap:.4f}; "
          f"predictions agree on {agree:.1%} of the texts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
