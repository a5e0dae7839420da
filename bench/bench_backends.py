"""Backends side by side on the SST-2 dev texts: texts/s and agreement with transformers float32.

Every method runs in its own subprocess with the same model (the bundled SmolLM2-135M; the GGUF
file itself for llama.cpp and its server), the same bundled sentiment task and prompts, and the
same thread count, and one table is printed from one run:

* transformers-fp32   howsure's transformers backend, float32 (`bench_scoring.run_method`'s
                      ``howsure-fp32``);
* transformers-mixed  its fast CPU mode, ``--dtype mixed`` (``howsure-mixed``);
* llamacpp            howsure's llama.cpp backend in-process (prefix kept in the KV cache);
* llamacpp-state      the same, the prefix restored from a saved state before every batch;
* openai              howsure's OpenAI-compatible backend against a local llama-cpp-python server
                      on the same GGUF (``--threads`` threads, on loopback; its start-up is not
                      timed); runs where ``howsure.backends.openai`` exists;
* lm-eval             lm-evaluation-harness's HFLM.loglikelihood on the label continuations of the
                      same prompts (the peer; ``bench_scoring.run_method``'s ``lm-eval``).

Agreement is each method's P(positive) against transformers-fp32's: the largest difference, the
mean one and the share of texts with the same predicted label. The last lines check the
targets of issue 15: howsure's fastest CPU mode at least 5x lm-evaluation-harness, and the
OpenAI backend against a local server within 2x of llama.cpp in-process.

    python bench/bench_backends.py                # 872 texts, 2 threads, every method
    python bench/bench_backends.py --limit 200    # quicker
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's howsure, as the children get (PYTHONPATH)
sys.path.insert(0, str(ROOT / "bench"))
from bench_scoring import load_texts, peak_rss_mb, run_children, run_method  # noqa: E402  (the shared methods)

METHODS = ["transformers-fp32", "transformers-mixed", "llamacpp", "llamacpp-state", "openai", "lm-eval"]
#: methods bench_scoring already measures, under its names
SCORING_METHODS = {"transformers-fp32": "howsure-fp32", "transformers-mixed": "howsure-mixed", "lm-eval": "lm-eval"}
REFERENCE = "transformers-fp32"
SERVED_NAME = "smollm2-135m-gguf"


def p_positive(scores) -> list[float]:
    return [float(s.probabilities[0]) for s in scores]


def run_llamacpp(texts: list[str], threads: int, prefix_reuse: str) -> dict:
    from howsure.backends import load_backend
    from howsure.core.task import load_task

    task = load_task("sentiment")
    backend = load_backend("smollm2-135m", "llamacpp", threads=threads, prefix_reuse=prefix_reuse)
    backend.prepare(task)  # the prefix, as every method's model load, is not timed
    start = time.perf_counter()
    scores = backend.label_scores(task, texts, top_k=1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "p_positive": p_positive(scores), "note": f"prefix reuse {prefix_reuse}"}


def run_openai(texts: list[str], threads: int) -> dict:
    if importlib.util.find_spec("howsure.backends.openai") is None:
        return {"skipped": "howsure.backends.openai is not in this checkout yet"}
    from howsure.backends import load_backend
    from howsure.backends.openai_server import llama_cpp_server
    from howsure.core.task import load_task
    from howsure.models import PRESETS, preset_file

    task = load_task("sentiment")
    with llama_cpp_server(preset_file(PRESETS["smollm2-135m"]), alias=SERVED_NAME, threads=threads) as url:
        backend = load_backend(SERVED_NAME, "openai", base_url=url)
        backend.label_scores(task, texts[:1], top_k=1)  # the first request warms the server
        start = time.perf_counter()
        scores = backend.label_scores(task, texts, top_k=1)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "p_positive": p_positive(scores), "note": f"local llama-cpp-python server, {url}"}


def run_child(method: str, texts: list[str], threads: int) -> dict:
    if method in SCORING_METHODS:
        result = run_method(SCORING_METHODS[method], texts, threads)
        if "skipped" in result:
            return {"method": method, **result}
        result = {"seconds": result["seconds"], "p_positive": result["p_positive"], "note": result.get("dtype", "")}
    elif method in ("llamacpp", "llamacpp-state"):
        result = run_llamacpp(texts, threads, "state" if method.endswith("state") else "kv")
    elif method == "openai":
        result = run_openai(texts, threads)
    else:
        raise SystemExit(f"unknown method {method}; methods: {', '.join(METHODS)}")
    if "skipped" not in result:
        result["texts_per_s"] = len(texts) / result["seconds"]
        result["peak_rss_mb"] = peak_rss_mb()
    return {"method": method, **result}


def agreement(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """max |difference|, mean |difference|, share of texts with the same predicted label."""
    import numpy as np

    x, y = np.array(a), np.array(b)
    return float(np.abs(x - y).max()), float(np.abs(x - y).mean()), float(np.mean((x > 0.5) == (y > 0.5)))


def print_targets(results: dict) -> None:
    ours = {m: r["texts_per_s"] for m, r in results.items()
            if m in ("transformers-fp32", "transformers-mixed", "llamacpp", "llamacpp-state") and "skipped" not in r}
    peer = results.get("lm-eval", {}).get("texts_per_s")
    print("\ntargets")
    if ours and peer:
        best = max(ours, key=ours.get)
        ratio = ours[best] / peer
        print(f"  fastest howsure CPU mode ({best}) / lm-eval: {ratio:.2f}x (target >= 5x): "
              f"{'met' if ratio >= 5 else 'NOT met'}")
    local = results.get("llamacpp", {}).get("texts_per_s")
    served = results.get("openai", {}).get("texts_per_s")
    if local and served:
        ratio = local / served
        print(f"  llama.cpp in-process / OpenAI backend on a local server: {ratio:.2f}x (target <= 2x): "
              f"{'met' if ratio <= 2 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N dev texts (default: all 872)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, load_texts(args.limit), args.threads)))
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    texts = load_texts(args.limit)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"{len(texts)} SST-2 dev texts, {args.threads} threads, model smollm2-135m (SmolLM2-135M-Instruct "
          f"Q4_1 GGUF), bundled sentiment task, commit {commit or '?'}")
    results = run_children(__file__, args.methods.split(","), args.threads, args.limit)
    reference = results.get(REFERENCE)
    peer = results.get("lm-eval", {}).get("texts_per_s")
    header = (f"{'method':19} {'texts/s':>8} {'x lm-eval':>9} {'peak MB':>8}  "
              f"agreement with {REFERENCE} (max |dp|, mean |dp|, same argmax)")
    print(header)
    print("-" * len(header))
    for method, r in results.items():
        if "skipped" in r:
            print(f"{method:19} skipped: {r['skipped']}")
            continue
        ratio = f"{r['texts_per_s'] / peer:9.2f}" if peer else "        -"
        agree = ""
        if reference and "skipped" not in reference and method != REFERENCE:
            largest, mean, same = agreement(r["p_positive"], reference["p_positive"])
            agree = f"{largest:.4f}, {mean:.4f}, {same:.1%}"
        print(f"{method:19} {r['texts_per_s']:8.2f} {ratio} {r['peak_rss_mb']:8.0f}  {agree}")
    print_targets(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
