"""Scoring throughput on the 872 SST-2 dev texts: howsure vs the naive method vs batching.

Every method runs in its own subprocess (so each one's peak memory is its own) with the same
model, prompt, labels and thread count, and the table is printed side by side from one run:

* naive          one ``generate(max_new_tokens=1, output_scores=True)`` per text, as the public
                 Classification-with-Confidence write-up does;
* batched        plain padded batches of 32 in input order, full prompt each time;
* batched-sorted the same, batches formed from length-sorted texts;
* lm-eval        lm-evaluation-harness's HFLM.loglikelihood on the same prompts and verbalizers
                 (the peer; skipped with a note if lm_eval is not installed);
* howsure-fp32   howsure's backend: shared-prefix KV cache, length-sorted batches, logits only
                 at the answer position, float32;
* howsure-mixed  the same with the MLP's gate and up projections in bfloat16, the rest float32,
                 near ties re-scored in float32 (the backend's defaults for ``mixed``);
* howsure-mixed-2w  the same with two parts of each pass at once (``pass_workers=2``);
* howsure-bf16   the same entirely in bfloat16; both checked against fp32.

It first prints the CPU flags that decide which kernels run fast (avx2, avx512*, avx512_bf16,
amx*, avx_vnni, avx_ne_convert), torch's CPU capability, whether bf16 is native here, and at
the end which kernels each method's linear layers ran, so runs on different machines can be
compared. Where bf16 is emulated (no AMX-BF16, AVX512-BF16 or AVX-NE-CONVERT), the bf16 modes
compute in float32 (`howsure.backends.transformers.cpu_features`) and their bound is the float32 one.

It also measures this machine's matmul GFLOP/s for float32 and bfloat16 at the model's shapes
(the faster of torch's ``a @ b`` and oneDNN's linear on a pre-packed weight, which the backend
uses on the CPU: the bound is what the machine can do, not what one kernel does),
counts the FLOPs each text actually needs (its tokens after the shared prefix through every
layer, in the last one only their keys and values, plus the answer position's queries, output
and MLP and one vocabulary projection) and prints achieved / FLOP-bound throughput. The bound of
each method uses the matmul rate measured in that method's own process just before and after
its run, so a rate that drifts on a shared machine does not flatter or punish one method. The
last lines check the issue's targets (fp32 >= 0.75 of its bound; the fast modes >= 5x naive
with probabilities within 0.01 of fp32 and the same argmax on >= 99.5 % of texts; peak memory
under 1.5 GB).

    python bench/bench_scoring.py                 # all methods, 872 texts, 2 threads
    python bench/bench_scoring.py --limit 200     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's howsure, as the children get (PYTHONPATH)
DEV = ROOT.parent / "shared" / "data" / "sentiment" / "sst2" / "dev.tsv"
METHODS = ["naive", "batched", "batched-sorted", "lm-eval", "howsure-fp32", "howsure-mixed", "howsure-mixed-2w",
           "howsure-bf16"]
DTYPE_OF = {"howsure-bf16": "bfloat16", "howsure-mixed": "mixed", "howsure-mixed-2w": "mixed"}
PASS_WORKERS_OF = {"howsure-mixed-2w": 2}


def load_texts(limit: int | None) -> list[str]:
    import pandas as pd

    texts = pd.read_csv(DEV, sep="\t", keep_default_na=False, dtype=str)["content"].tolist()
    return texts[:limit] if limit else texts


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- methods (child side)
def run_method(method: str, texts: list[str], threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from howsure.backends import load_backend
    from howsure.core.task import load_task

    task = load_task("sentiment")
    dtype = DTYPE_OF.get(method, "float32")
    # The other methods run transformers' own layers: howsure's packed ones would speed them up.
    backend = load_backend("smollm2-135m", dtype=dtype, threads=threads, pass_workers=PASS_WORKERS_OF.get(method, 1),
                           prepack=method.startswith("howsure"))
    vocab = backend.prepare(task).vocab
    label_ids = [torch.tensor(ids) for ids in vocab.token_ids]
    prompts = [backend.prompt(task, t) for t in texts]
    model, tok = backend.model, backend.tokenizer

    def masses_from(probs: torch.Tensor) -> np.ndarray:
        return torch.stack([probs[:, ids].sum(1) for ids in label_ids], 1).double().numpy()

    # The rates of the dtypes this method computes in (bf16 only where it really runs).
    dtypes = ("float32", "bfloat16") if method.startswith("howsure") and backend.dtype != "float32" else ("float32",)
    before = {d: matmul_gflops(d, threads, seconds=1.0) for d in dtypes}
    start = time.perf_counter()
    if method.startswith("howsure"):
        scores = backend.label_scores(task, texts, top_k=1)
        masses = np.stack([s.label_mass for s in scores])
    elif method == "naive":
        rows = []
        for prompt in prompts:
            ids = torch.tensor([backend.encode(prompt)])
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                                     do_sample=False, output_scores=True, return_dict_in_generate=True,
                                     pad_token_id=backend.pad_id)
            rows.append(masses_from(out.scores[0].float().softmax(-1)))
        masses = np.concatenate(rows)
    elif method in ("batched", "batched-sorted"):
        order = list(range(len(prompts)))
        encoded = [backend.encode(p) for p in prompts]
        if method == "batched-sorted":
            order.sort(key=lambda i: len(encoded[i]))
        masses = np.zeros((len(prompts), len(label_ids)))
        for start_row in range(0, len(order), 32):
            batch = order[start_row:start_row + 32]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), backend.pad_id)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]):] = 1
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
            masses[batch] = masses_from(logits.softmax(-1))
    elif method == "lm-eval":
        try:
            from lm_eval.api.instance import Instance
            from lm_eval.models.huggingface import HFLM
        except ImportError:
            return {"method": method, "skipped": "lm_eval is not installed (pip install lm-eval)"}
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=32, device="cpu")
        continuations = [v[0] for v in task.labels.values()]  # exact verbalizer, as lm-eval scores
        requests = [
            Instance(request_type="loglikelihood", doc={}, arguments=(p, c), idx=j)
            for p in prompts for j, c in enumerate(continuations)
        ]
        start = time.perf_counter()
        results = lm.loglikelihood(requests, disable_tqdm=True)
        masses = np.exp(np.array([r[0] for r in results])).reshape(len(prompts), len(continuations))
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    # The machine's matmul rate, measured again right after this method ran, in this process:
    # on a shared machine the rate drifts, so each method is held to the rate of its own moment.
    gflops = {d: (before[d] + matmul_gflops(d, threads, seconds=1.0)) / 2 for d in before if before[d] is not None}
    probs = masses / masses.sum(1, keepdims=True)
    suffix_tokens = [len(backend.encode(p)) - len(backend.prepare(task).prefix_ids) for p in prompts]
    return {
        "method": method,
        "dtype": backend.dtype if method.startswith("howsure") else "float32",
        "kernels": kernels_used(model),
        "seconds": seconds,
        "texts_per_s": len(texts) / seconds,
        "p_positive": probs[:, 0].tolist(),
        "peak_rss_mb": peak_rss_mb(),
        "gflops": gflops,
        "prompt_tokens_mean": float(np.mean([len(backend.encode(p)) for p in prompts])),
        "prefix_tokens": len(backend.prepare(task).prefix_ids),
        "suffix_tokens": suffix_tokens,
        "flops_per_text": flops_per_text(model.config, suffix_tokens, len(backend.prepare(task).prefix_ids)),
        "mlp_flop_share": mlp_flop_share(model.config, suffix_tokens, len(backend.prepare(task).prefix_ids)),
    }


def kernels_used(model) -> str:
    """Which matmul kernels a loaded model's linear layers run, counted by kind: oneDNN on a
    packed weight (howsure's `PackedLinear`, bf16 `MixedPrecisionLinear` layers packed or not)
    or torch's own ``F.linear``, each with its dtype."""
    from collections import Counter

    from howsure.backends.transformers.onednn import PackedLinear
    from howsure.backends.transformers.precision import MixedPrecisionLinear

    kinds = Counter()
    for module in model.modules():
        if isinstance(module, PackedLinear):
            kinds[f"oneDNN packed {str(module.compute_dtype).removeprefix('torch.')}"] += 1
        elif isinstance(module, MixedPrecisionLinear):
            kinds["bf16 " + ("oneDNN packed" if module.packed else "F.linear") + " (mixed)"] += 1
        elif isinstance(module, __import__("torch").nn.Linear):
            kinds[f"F.linear {str(module.weight.dtype).removeprefix('torch.')}"] += 1
    return ", ".join(f"{kind} x{count}" for kind, count in kinds.most_common())


def flops_per_text(config, suffix_tokens: list[int], prefix_len: int) -> float:
    """Mean FLOPs one text needs: its own tokens (after the shared prefix) through every layer
    with attention over prefix + own tokens, except in the last layer, where only the keys and
    values are needed at every token and the queries, attention output and MLP at the answer
    position alone; and one vocabulary projection at the answer position."""
    import numpy as np

    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = hidden // heads
    inter = config.intermediate_size
    keys_values = 2 * 2 * hidden * kv_heads * head_dim
    per_token_linear = keys_values + 2 * (2 * hidden * heads * head_dim + 3 * hidden * inter)
    total = []
    for n in suffix_tokens:
        attention = 2 * 2 * heads * head_dim * sum(prefix_len + k + 1 for k in range(n))
        last_layer = n * keys_values + (per_token_linear - keys_values) + 2 * 2 * heads * head_dim * (prefix_len + n)
        total.append((layers - 1) * (n * per_token_linear + attention) + last_layer
                     + 2 * hidden * config.vocab_size)
    return float(np.mean(total))


def mlp_flop_share(config, suffix_tokens: list[int], prefix_len: int) -> float:
    """Share of a text's FLOPs spent in the MLP's gate and up projections (what dtype 'mixed'
    runs in bf16; the down projection stays float32)."""
    import numpy as np

    tokens_through_mlp = (config.num_hidden_layers - 1) * np.mean(suffix_tokens) + 1
    mlp = 2 * 2 * config.hidden_size * config.intermediate_size * tokens_through_mlp
    return float(mlp / flops_per_text(config, suffix_tokens, prefix_len))


def matmul_gflops(dtype_name: str, threads: int, seconds: float = 2.0, kernel: str = "best") -> float | None:
    """Sustained GFLOP/s of this machine for the model's MLP matmul shape in ``dtype``, with
    torch's ``a @ b`` (kernel "matmul"), oneDNN's linear on a pre-packed weight ("packed", what
    the backend runs on the CPU) or, for the bound, the faster of the two ("best"). None where
    the kernel does not exist here (oneDNN packs no bf16 weight on a CPU with AVX2 alone)."""
    import torch

    from howsure.backends.transformers import cpu_features

    if kernel == "best":
        rates = [matmul_gflops(dtype_name, threads, seconds / 2, k) for k in ("matmul", "packed")]
        return max((r for r in rates if r is not None), default=None)
    torch.set_num_threads(threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    a = torch.randn(1024, 576, dtype=dtype)
    b = torch.randn(576, 1536, dtype=dtype)
    if kernel == "packed":
        from howsure.backends.transformers.onednn import pack_weight, packed_linear

        if not cpu_features.onednn_packs(dtype):
            return None
        weight = pack_weight(b.t())

        def product():
            return packed_linear(a, weight)
    else:
        def product():
            return a @ b
    for _ in range(2 if dtype == torch.bfloat16 and cpu_features.bf16_support().native is None else 5):
        product()  # emulated bf16 runs about a second per call: two warm-ups are enough
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        product()
        reps += 1
    return 2 * 1024 * 576 * 1536 * reps / (time.perf_counter() - start) / 1e9


def rate_text(gflops: float | None) -> str:
    return "unavailable" if gflops is None else f"{gflops:.1f}"


def print_targets(results: dict, naive: float | None) -> None:
    """The issue's targets, each with the measured figure and whether it was met."""
    import numpy as np

    fp32 = results.get("howsure-fp32")
    if not fp32 or "skipped" in fp32:
        return
    print("\ntargets")
    print(f"  fp32 >= 0.75 of its FLOP bound: {fp32['flop_bound_ratio']:.2f} "
          f"{'met' if fp32['flop_bound_ratio'] >= 0.75 else 'NOT met'}")
    for method in ("howsure-mixed", "howsure-mixed-2w", "howsure-bf16"):
        r = results.get(method)
        if not r or "skipped" in r:
            continue
        a, b = np.array(r["p_positive"]), np.array(fp32["p_positive"])
        close, same = np.abs(a - b).max(), np.mean((a > 0.5) == (b > 0.5))
        speed = r["texts_per_s"] / naive if naive else float("nan")
        ok = speed >= 5 and close <= 0.01 and same >= 0.995
        print(f"  {method}: {speed:.1f}x naive (>= 5), max |dp| {close:.4f} (<= 0.01), "
              f"same argmax {same:.2%} (>= 99.5 %): {'met' if ok else 'NOT met'}")
    worst = max(r["peak_rss_mb"] for m, r in results.items() if m.startswith("howsure") and "skipped" not in r)
    print(f"  peak memory of howsure < 1500 MB: {worst:.0f} MB {'met' if worst < 1500 else 'NOT met'}")


# ---------------------------------------------------------------------------- parent side
def run_children(script: str, methods: list[str], threads: int, limit: int | None) -> dict[str, dict]:
    """Run ``script --child METHOD`` once per method, one fresh process each (so no method warms
    another's caches or allocator), and collect the JSON result each prints last; a failing
    method is reported with its stderr tail and left out."""
    results = {}
    for method in methods:
        cmd = [sys.executable, script, "--child", method, "--threads", str(threads)]
        if limit:
            cmd += ["--limit", str(limit)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        if done.returncode != 0:
            print(f"{method}: failed\n{done.stderr[-2000:]}")
            continue
        results[method] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_method(args.child, load_texts(args.limit), args.threads)))
        return
    if args.child is None and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    texts = load_texts(args.limit)
    print(f"{len(texts)} SST-2 dev texts, {args.threads} threads, model smollm2-135m, bundled sentiment task")
    from howsure.backends.transformers import cpu_features

    support = cpu_features.bf16_support()
    print(cpu_features.describe())
    print(f"bf16: {'native (' + support.native + ')' if support.native else 'emulated (' + support.missing + ')'}, "
          f"oneDNN packs bf16 weights: {'yes' if support.packs else 'no'}")
    kernels = {(d, k): matmul_gflops(d, args.threads, kernel=k) for d in ("float32", "bfloat16")
               for k in ("matmul", "packed")}
    gflops = {d: max((r for r in (kernels[d, "matmul"], kernels[d, "packed"]) if r is not None), default=None)
              for d in ("float32", "bfloat16")}
    print("matmul (1024x576 @ 576x1536), GFLOP/s, a @ b / oneDNN on a packed weight: " + ", ".join(
        f"{d} {rate_text(kernels[d, 'matmul'])} / {rate_text(kernels[d, 'packed'])}" for d in ("float32", "bfloat16")))
    results = run_children(__file__, args.methods.split(","), args.threads, args.limit)
    import numpy as np

    naive = results.get("naive", {}).get("texts_per_s")
    fp32 = results.get("howsure-fp32")
    print(f"\nmean prompt {fp32['prompt_tokens_mean']:.1f} tokens, shared prefix {fp32['prefix_tokens']} tokens, "
          f"{fp32['flops_per_text'] / 1e9:.3f} GFLOP needed per text" if fp32 else "")
    header = f"{'method':16} {'texts/s':>8} {'x naive':>8} {'FLOP-bound':>11} {'peak MB':>8}  agreement with fp32"
    print(header)
    print("-" * len(header))
    for method, r in results.items():
        if "skipped" in r:
            print(f"{method:16} skipped: {r['skipped']}")
            continue
        rate = r["gflops"]  # measured in the method's own process, around its run
        if r["dtype"] == "mixed":  # MLP FLOPs at the bf16 rate, the rest at the fp32 rate
            mlp_share = r["mlp_flop_share"]
            seconds_per_flop = mlp_share / rate["bfloat16"] + (1 - mlp_share) / rate["float32"]
            bound = 1 / (seconds_per_flop * 1e-9 * r["flops_per_text"])
        else:  # the dtype it computed in: float32 where a bf16 mode fell back to it
            bound = rate[r["dtype"]] * 1e9 / r["flops_per_text"]
        r["flop_bound_ratio"] = r["texts_per_s"] / bound
        ratio = f"{r['texts_per_s'] / naive:8.2f}" if naive else "       -"
        agree = ""
        if fp32 and method != "howsure-fp32":
            a, b = np.array(r["p_positive"]), np.array(fp32["p_positive"])
            same = np.mean((a > 0.5) == (b > 0.5))
            agree = f"max |dp| {np.abs(a - b).max():.4f}, same argmax {same:.2%}"
        print(f"{method:16} {r['texts_per_s']:8.1f} {ratio} {r['flop_bound_ratio']:11.2f} {r['peak_rss_mb']:8.0f}  {agree}")
    print("\nkernels each method ran (linear layers by kind)")
    for method, r in results.items():
        if "skipped" not in r:
            asked = DTYPE_OF.get(method, "float32")
            dtype = r["dtype"] if r["dtype"] == asked else f"{r['dtype']} ({asked} asked: bf16 is emulated here)"
            print(f"  {method:16} {dtype}: {r['kernels']}")
    print_targets(results, naive)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"gflops": gflops, "results": results}, indent=2))


if __name__ == "__main__":
    main()
