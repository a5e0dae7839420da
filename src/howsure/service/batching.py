"""Micro-batching: concurrent requests share forward passes.

Each classify request submits its texts to a `MicroBatcher`; one worker task collects pending
texts until it has ``max_batch`` of them or none arrived for ``max_wait_ms`` (under load it
first waits a little longer for the clients it just answered), then runs one
call of the processing function (``backend.label_scores``) in a dedicated worker thread and hands
each request its own results. Texts that arrive while a batch runs queue up and form the next
batch at once, so under load the batches are full and the model never waits for the web layer.

    batcher = MicroBatcher(lambda texts: backend.label_scores(task, texts), max_batch=32)
    await batcher.start()
    scores = await batcher.submit(["a text", "another"])   # in a request handler
    await batcher.stop()

One bad item does not fail its neighbours: when a batch raises, its items are run again one by
one and only the failing ones get the exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from howsure.errors import DataError

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("howsure.service")


class BatcherClosed(RuntimeError):
    """`MicroBatcher.submit` was called before `start` or after `stop`."""


@dataclass
class BatcherStats:
    """Counters since start; read them for monitoring and tests (``batches``, ``items``,
    ``largest``: most items in one batch; ``busy_s``: seconds spent in the processing function)."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    busy_s: float = 0.0
    sizes: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else 0.0
        return {"batches": self.batches, "items": self.items, "largest": self.largest,
                "mean_batch": round(mean, 3), "busy_s": round(self.busy_s, 3)}


@dataclass
class _Entry:
    item: Any
    future: asyncio.Future
    enqueued: float


class MicroBatcher(Generic[T, R]):
    """Collect items from concurrent callers into batches for one processing function.

    Parameters
    ----------
    process : callable
        ``process(items: list[T]) -> list[R]``, one result per item, in order. Runs in one
        dedicated thread, so it is never called concurrently with itself (a torch model needs
        no lock) and never blocks the event loop.
    max_batch : int
        Most items in one call of ``process``.
    max_wait_ms : float
        How long a batch that is not full waits for the next item; it closes after a gap this
        long (so a lone item waits max_wait_ms, a trickle at most max_batch * max_wait_ms).
    refill_share : float
        Under load: while fewer items than the last batch had have arrived, wait for them up to
        this share of the last batch's processing time (0 turns this off).
    keep_sizes : int
        How many recent batch sizes `stats` keeps (for tests and the bench).
    """

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        refill_share: float = 0.25,
        keep_sizes: int = 10_000,
    ) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise DataError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        if not max_wait_ms >= 0:
            raise DataError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if not 0 <= refill_share <= 1:
            raise DataError(f"refill_share must be in [0, 1], got {refill_share!r}")
        self.process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.refill_share = refill_share
        self._last_size = 0
        self._last_duration = 0.0
        self.keep_sizes = keep_sizes
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Entry] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        """Start the worker on the running event loop (idempotent)."""
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="howsure-batch")
        self._worker = asyncio.get_running_loop().create_task(self._run_forever(), name="howsure-batcher")

    async def stop(self) -> None:
        """Stop the worker. A batch being processed is finished and answered; items still
        waiting for a batch fail with `BatcherClosed`."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                entry = self._queue.get_nowait()
                if not entry.future.done():
                    entry.future.set_exception(BatcherClosed("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Queue ``items`` and wait for their results (in order).

        Items of one call may be processed in different batches (a request larger than
        ``max_batch`` is split); the first exception among them is raised.
        """
        if not self.running or self._queue is None:
            raise BatcherClosed("the batcher is not running; start() it on the server's event loop")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = []
        for item in items:
            future = loop.create_future()
            self._queue.put_nowait(_Entry(item, future, now))
            futures.append(future)
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            # The caller went away (or one item failed): the others need no result.
            for future in futures:
                future.cancel()
            raise

    # ------------------------------------------------------------------ worker
    async def _collect(self) -> list[_Entry]:
        assert self._queue is not None
        ready = time.monotonic()
        batch = [await self._queue.get()]
        # The clients the last batch answered come back over some tens to hundreds of
        # milliseconds (their responses, the database write, their next requests). Starting
        # the next pass with the first of them would split every round into a small, slow pass
        # (slow because it runs while the web side is busiest) and a large one. So, up to a
        # share of the last pass's duration, the batch waits for as many texts as the last
        # batch had; after that (and always when the last batch was a lone text) it closes
        # after max_wait without a new text. A client that left costs one round one wait.
        expected = min(self._last_size, self.max_batch)
        refill_until = ready + self.refill_share * self._last_duration
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            refilling = len(batch) < expected and time.monotonic() < refill_until
            timeout = refill_until - time.monotonic() if refilling else self.max_wait_s
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), max(0.0, timeout)))
            except (asyncio.TimeoutError, TimeoutError):
                if not refilling:
                    break  # the refill window is over: from now on a gap of max_wait closes it
        return batch

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [entry for entry in await self._collect() if not entry.future.done()]
            if not batch:
                continue
            running = loop.run_in_executor(self._executor, self._process_batch, [e.item for e in batch])
            try:
                outcomes = await asyncio.shield(running)
            except asyncio.CancelledError:
                # stop() during a forward pass: finish it and answer its callers, then stop.
                self._deliver(batch, await running)
                raise
            self._deliver(batch, outcomes)

    @staticmethod
    def _deliver(batch: list[_Entry], outcomes: list[tuple[bool, Any]]) -> None:
        for entry, (ok, value) in zip(batch, outcomes):
            if entry.future.done():  # the caller went away while the batch ran
                continue
            if ok:
                entry.future.set_result(value)
            else:
                entry.future.set_exception(value)

    def _call(self, items: list[T]) -> list[R]:
        results = list(self.process(items))
        if len(results) != len(items):
            raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
        return results

    def _process_batch(self, items: list[T]) -> list[tuple[bool, Any]]:
        started = time.perf_counter()
        try:
            try:
                return [(True, result) for result in self._call(items)]
            except Exception as exc:  # noqa: BLE001 - isolated below, re-raised per item
                if len(items) == 1:
                    return [(False, exc)]
                log.info("a batch of %d failed (%s); running its items one by one", len(items), exc)
            outcomes: list[tuple[bool, Any]] = []
            for item in items:
                try:
                    outcomes.append((True, self._call([item])[0]))
                except Exception as exc:  # noqa: BLE001 - handed to that item's caller
                    outcomes.append((False, exc))
            return outcomes
        finally:
            self._last_size = len(items)
            self._last_duration = time.perf_counter() - started
            with self._lock:
                stats = self.stats
                stats.batches += 1
                stats.items += len(items)
                stats.largest = max(stats.largest, len(items))
                stats.busy_s += time.perf_counter() - started
                stats.sizes.append(len(items))
                if len(stats.sizes) > self.keep_sizes:
                    del stats.sizes[: len(stats.sizes) - self.keep_sizes]
