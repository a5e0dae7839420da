"""How texts become forward passes: the cheapest split of length-sorted texts into passes, and
running passes side by side on shares of torch's threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import torch

PASS_OVERHEAD_TOKENS = 64
"""What one more forward pass costs beyond its tokens, in tokens: every pass streams all the
weights from memory, which at a small batch is what bounds it. `bench/bench_padding.py` prints
the pass cost in tokens on the bundled model; splitting a length-sorted batch pays off when it saves more
padding than this."""

PAD_SHARE_WHEN_SKIPPED = 0.2
"""What a pad costs, as a share of a real token, when the linear layers skip the pads
(`howsure.backends.transformers.unpadding`): attention, norms and rotary embeddings still see it.
`bench/bench_padding.py` fits it on the bundled model with 2 threads (float32) over passes
with a quarter to all of their tokens real. Splitting a pass then
pays off only when it saves 1 / PAD_SHARE_WHEN_SKIPPED times more padding than without skipping."""


def split_sorted(lengths: Sequence[int], max_rows: int, max_tokens: int,
                 overhead: float = PASS_OVERHEAD_TOKENS) -> list[tuple[int, int]]:
    """Split ascending ``lengths`` into consecutive passes (start, stop) of at most ``max_rows``
    rows and ``max_tokens`` padded tokens (a single row may exceed it) with the least total
    cost, a pass costing ``overhead`` + rows x its longest length (left padding fills the rest).
    When the linear layers skip the pads, pass ``overhead`` over the pad's share of a token's
    cost (`PAD_SHARE_WHEN_SKIPPED`): the real tokens cost the same in every split.

    Dynamic programming over the cut points, O(n x max_rows). Filling passes greedily up to
    ``max_tokens`` pads short texts to long ones; this split pads less
    (`tests/test_backend_transformers.py` checks it is the cheapest split on small cases). Ties go to the longer pass, so a pass of this split, split again, stays whole."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for stop in range(1, n + 1):
        width = lengths[stop - 1]
        for start in range(max(0, stop - max_rows), stop):
            rows = stop - start
            if rows > 1 and rows * width > max_tokens:
                continue
            cost = best[start] + overhead + rows * width
            if cost < best[stop]:
                best[stop], cut[stop] = cost, start
    passes = []
    stop = n
    while stop > 0:
        passes.append((cut[stop], stop))
        stop = cut[stop]
    return passes[::-1]


_T = TypeVar("_T")
_R = TypeVar("_R")


def map_concurrently(function: Callable[[_T], _R], items: Sequence[_T], workers: int) -> Iterator[_R]:
    """``map(function, items)`` in order, with up to ``workers`` calls running at once, each
    on its share of torch's intra-op threads (restored afterwards).

    Two passes at a time, each on half the threads, can beat one pass on all of them: the
    small per-layer operations of a pass do not keep two threads busy, and two independent
    passes need no synchronisation between them."""
    workers = min(workers, len(items))
    if workers <= 1:
        yield from map(function, items)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="howsure-pass") as pool:
            yield from pool.map(function, items)
    finally:
        torch.set_num_threads(threads)
