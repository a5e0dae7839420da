"""What padding costs the transformers backend, with and without skipping the pads.

Two measurements on the bundled model, side by side in one process, skipping on and off
alternated (`howsure.backends.transformers.unpadding`; "off" is the same backend with the hooks removed):

1. The cost model of one pass with the pads skipped, fitted by least squares over passes of
   8-32 rows x 20-80 tokens after the shared prefix, a quarter to all of them real: ms per
   pass + ms per real token + ms per pad. (Without skipping a pad costs what a token does.) The pad's share of a real token's cost is what `split_sorted` is
   told (PAD_SHARE_WHEN_SKIPPED), and the per-pass cost in tokens is PASS_OVERHEAD_TOKENS.
2. Scoring 256 texts of the bundled sample as the review service gets them (groups of 32 in
   arrival order, ``--service-batch-tokens``) and as offline scoring does (all at once,
   sorted by length): ms per text, with the ratio of the service-like groups to offline.

    python bench/bench_padding.py               # 2 threads, about 6 minutes
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "howsure" / "samples" / "rt_polarity_2000.csv"


def fit_pass_cost(backend, task, *, rng) -> tuple[float, float, float]:
    """(ms per pass, ms per real token, ms per pad) by least squares."""
    prepared = backend.prepare(task)
    features, millis = [], []
    for rows in (8, 16, 32):
        for width in (20, 40, 80):
            for real in (width // 4, width // 2, width):
                # rows-1 texts of `real` tokens and one of `width`, so the pass is `width` wide
                suffixes = [rng.integers(100, 20000, size=real).tolist() for _ in range(rows - 1)]
                suffixes.append(rng.integers(100, 20000, size=width).tolist())
                started = time.perf_counter()
                backend._forward(suffixes, prepared.prefix_cache, len(prepared.prefix_ids), prepared.vocab)
                millis.append(1000 * (time.perf_counter() - started))
                real_tokens = (rows - 1) * real + width
                features.append([1.0, real_tokens, rows * width - real_tokens])
    coefficients, *_ = np.linalg.lstsq(np.array(features), np.array(millis), rcond=None)
    return tuple(float(c) for c in coefficients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="Alternations of skipping on and off.")
    parser.add_argument("--service-batch-tokens", type=int, default=512)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from howsure.backends import load_backend
    from howsure.backends.transformers.unpadding import skip_padding
    from howsure.core.task import load_task

    with open(SAMPLE, newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][: args.texts]
    task = load_task("sentiment")
    backend = load_backend("smollm2-135m", threads=args.threads)
    backend.label_scores(task, texts[:8])  # warm-up
    rng = np.random.default_rng(0)
    print(f"bundled model, {args.threads} threads, {len(texts)} texts of the bundled sample, "
          f"{args.rounds} alternations of skipping on / off", flush=True)

    def set_skipping(on: bool) -> None:
        backend._real_tokens.remove()
        if on:
            backend._real_tokens = skip_padding(backend.model)

    fits = []
    per_text: dict[tuple[bool, str], list[float]] = {}
    groups = [texts[i:i + 32] for i in range(0, len(texts), 32)]
    for _ in range(args.rounds):
        for on in (True, False):
            set_skipping(on)
            if on:
                fits.append(fit_pass_cost(backend, task, rng=rng))
            for name, batches, batch_tokens in (("offline, all at once", [texts], 4096),
                                                ("service-like, groups of 32", groups, args.service_batch_tokens)):
                backend.batch_tokens = batch_tokens
                started = time.perf_counter()
                for batch in batches:
                    backend.label_scores(task, batch)
                per_text.setdefault((on, name), []).append(1000 * (time.perf_counter() - started) / len(texts))
    set_skipping(True)

    print("\npass cost model with the pads skipped, one fit per alternation")
    print(f"{'ms/pass':>9}{'ms/real token':>15}{'ms/pad':>8}{'pad share':>11}{'pass in tokens':>16}")
    for per_pass, per_real, per_pad in fits:
        print(f"{per_pass:9.1f}{per_real:15.3f}{per_pad:8.3f}{per_pad / per_real:11.2f}{per_pass / per_real:16.0f}")
    print("\nms per text (median of the alternations)")
    for name in ("offline, all at once", "service-like, groups of 32"):
        on, off = statistics.median(per_text[True, name]), statistics.median(per_text[False, name])
        print(f"  {name:28} skipping {on:6.1f}   computing pads {off:6.1f}   ratio {off / on:.2f}")
    offline = statistics.median(per_text[True, "offline, all at once"])
    service = statistics.median(per_text[True, "service-like, groups of 32"])
    print(f"  service-like groups cost {service / offline:.2f}x offline with skipping "
          f"({statistics.median(per_text[False, 'service-like, groups of 32']) / statistics.median(per_text[False, 'offline, all at once']):.2f}x without)")


if __name__ == "__main__":
    main()
