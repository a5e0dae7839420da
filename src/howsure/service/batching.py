"""Micro-batching: concurrent requests share forward passes.

Each classify request submits its texts to a `MicroBatcher`; one worker task collects pending
texts until it has ``max_batch`` of them or none arrived for ``max_wait_ms`` (under load it
first waits a little longer for the clients it just answered), then runs one
call of the processing function (``backend.label_scores``) in a dedicated worker thread and hands
each request its own results. Texts that arrive while a batch runs queue up and form the next
batch at once, so under load the batches are full (the model still waits while a round's
clients are answered and send again; see overlap below).

    batcher = MicroBatcher(lambda texts: backend.label_scores(task, texts), max_batch=32)
    await batcher.start()
    scores = await batcher.submit(["a text", "another"])   # in a request handler
    await batcher.stop()

With ``overlap=True`` a pass never waits while texts are waiting: when
one ends, the next starts at once with the texts that queued while it ran, and the texts that
come later wait for the pass after. Only an idle model waits to fill a batch, and then only until
half as many texts as the last pass had have come (or a gap of ``max_wait_ms``). Under load the
clients so settle into two cohorts: one is scored while the web side answers the other and its
clients send their next texts, instead of the model waiting for every client of a round. The
service runs without it: on the bundled model the half-size passes cost more per text than the
waits they save (docs/service.md, Throughput).

One bad item does not fail its neighbours: when a batch raises, its items are run again one by
one and only the failing ones get the exception. An exception of a type in ``fail_whole`` (a
dependency every item needs is down: no item would fare better alone) fails the whole batch at
once instead.

Fairness and bounds: each submission names its ``client`` and each item may carry a ``cost`` (the
service passes the text's token count). Batches are formed round-robin across the clients with
items waiting, one item from each in turn, so a client that queued hundreds of texts delays
another client's text by one batch, not by all of its own; ``max_batch_cost`` bounds a batch's
summed cost (so how long one batch runs); ``max_queue_cost`` and ``max_client_cost`` bound the
cost waiting or running, in all and per client, and a submission over either fails at once
with `QueueFull` (the service answers 429 with its ``retry_after_s``). A submission whose caller
is cancelled (its HTTP client went away) takes its waiting items out of the queue: they are
never processed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from howsure.errors import DataError
from howsure.service.throttle import RetryLater

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("howsure.service")


class BatcherClosed(RuntimeError):
    """`MicroBatcher.submit` was called before `start` or after `stop`."""


class QueueFull(RetryLater):
    """A submission would take the batcher's queue, or its client's share, over its bound."""


@dataclass
class BatcherStats:
    """Counters since start; read them for monitoring and tests (``batches``, ``items``,
    ``largest``: most items in one batch; ``busy_s``: seconds spent in the processing function;
    ``cost``: summed cost of the items processed; ``refused``: submissions refused as `QueueFull`;
    ``dropped``: queued items taken out unprocessed because their caller went away)."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    busy_s: float = 0.0
    cost: float = 0.0
    refused: int = 0
    dropped: int = 0
    sizes: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else 0.0
        return {"batches": self.batches, "items": self.items, "largest": self.largest,
                "mean_batch": round(mean, 3), "busy_s": round(self.busy_s, 3), "cost": round(self.cost, 3),
                "refused": self.refused, "dropped": self.dropped}


@dataclass
class _Entry:
    item: Any
    future: asyncio.Future
    enqueued: float
    client: Hashable = None
    cost: float = 0.0


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
        this share of the last batch's processing time (0 turns this off; ``overlap`` never
        waits for them).
    overlap : bool
        Start each pass with the items that queued while the last one ran, at once, instead of
        waiting for the clients the last one answered (see the module docstring).
    keep_sizes : int
        How many recent batch sizes `stats` keeps (for tests and the bench).
    fail_whole : tuple of exception types
        Exceptions of these types from ``process`` go to every item of the batch at once,
        without running the items again one by one.
    max_batch_cost : float, optional
        Most summed item cost in one call of ``process`` (a batch always takes its first item,
        whatever it costs). None: only ``max_batch`` bounds a batch.
    max_queue_cost, max_client_cost : float, optional
        Most summed cost of the items submitted and not yet answered, over all clients and per
        client; a submission that would go over fails with `QueueFull`. None: unbounded.
    """

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        refill_share: float = 0.25,
        overlap: bool = False,
        keep_sizes: int = 10_000,
        max_batch_cost: float | None = None,
        max_queue_cost: float | None = None,
        max_client_cost: float | None = None,
        fail_whole: tuple[type[BaseException], ...] = (),
    ) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise DataError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        if not max_wait_ms >= 0:
            raise DataError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if not 0 <= refill_share <= 1:
            raise DataError(f"refill_share must be in [0, 1], got {refill_share!r}")
        for name, bound in (("max_batch_cost", max_batch_cost), ("max_queue_cost", max_queue_cost),
                            ("max_client_cost", max_client_cost)):
            if bound is not None and not bound > 0:
                raise DataError(f"{name} must be > 0 or None, got {bound!r}")
        self.process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.refill_share = refill_share
        self.overlap = overlap
        self.max_batch_cost = math.inf if max_batch_cost is None else float(max_batch_cost)
        self.max_queue_cost = math.inf if max_queue_cost is None else float(max_queue_cost)
        self.max_client_cost = math.inf if max_client_cost is None else float(max_client_cost)
        self._last_size = 0
        self._last_duration = 0.0
        self.keep_sizes = keep_sizes
        self.fail_whole = fail_whole
        self.stats = BatcherStats()
        # Waiting items per client, in the order the clients take turns (the next is first).
        self._waiting: dict[Hashable, deque[_Entry]] = {}
        self._arrived: asyncio.Event | None = None
        # Cost submitted and not yet answered, in all and per client (the queue bounds).
        self._open_cost = 0.0
        self._client_open_cost: dict[Hashable, float] = {}
        self._worker: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    @property
    def waiting(self) -> int:
        """Items queued and not yet in a batch."""
        return sum(len(entries) for entries in self._waiting.values())

    async def start(self) -> None:
        """Start the worker on the running event loop (idempotent)."""
        if self.running:
            return
        self._arrived = asyncio.Event()
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
        waiting, self._waiting = self._waiting, {}
        for entries in waiting.values():
            for entry in entries:
                if not entry.future.done():
                    entry.future.set_exception(BatcherClosed("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, items: Sequence[T], *, client: Hashable = None,
                     costs: Sequence[float] | None = None) -> list[R]:
        """Queue ``items`` for ``client`` and wait for their results (in order).

        Items of one call may be processed in different batches (a request larger than
        ``max_batch`` is split); the first exception among them is raised. ``costs`` (one per
        item, default 0) count against ``max_batch_cost`` and the queue bounds; `QueueFull`
        when the queue, or this client's share of it, has no room for them.
        """
        if not self.running or self._arrived is None:
            raise BatcherClosed("the batcher is not running; start() it on the server's event loop")
        costs = [0.0] * len(items) if costs is None else [float(cost) for cost in costs]
        if len(costs) != len(items):
            raise DataError(f"submit got {len(costs)} costs for {len(items)} items")
        self._admit(client, sum(costs))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        entries = [_Entry(item, loop.create_future(), now, client, cost) for item, cost in zip(items, costs)]
        for entry in entries:
            self._open(entry)
        self._waiting.setdefault(client, deque()).extend(entries)
        self._arrived.set()
        try:
            return list(await asyncio.gather(*(entry.future for entry in entries)))
        except BaseException:
            # The caller went away (or one item failed): the others need no result, and those
            # still waiting leave the queue now instead of taking a place in a batch.
            for entry in entries:
                entry.future.cancel()
            self._drop_waiting(client)
            raise

    # ------------------------------------------------------------------ bounds
    def _admit(self, client: Hashable, cost: float) -> None:
        client_open = self._client_open_cost.get(client, 0.0)
        if self._open_cost + cost <= self.max_queue_cost and client_open + cost <= self.max_client_cost:
            return
        self.stats.refused += 1
        if client_open + cost > self.max_client_cost:
            excess, what = client_open + cost - self.max_client_cost, f"this client's share ({self.max_client_cost:g})"
        else:
            excess, what = self._open_cost + cost - self.max_queue_cost, f"the queue's bound ({self.max_queue_cost:g})"
        raise QueueFull(f"the model is busy: this request's {cost:g} tokens would take {what} over; "
                        "retry after the time in Retry-After", retry_after_s=self._drain_seconds(excess))

    def _drain_seconds(self, cost: float) -> float:
        """About how long the worker takes to work off ``cost`` at its rate so far (>= 1 s)."""
        with self._lock:
            rate = self.stats.cost / self.stats.busy_s if self.stats.busy_s > 0 else 0.0
        return max(1.0, min(300.0, cost / rate)) if rate > 0 else 1.0

    def _open(self, entry: _Entry) -> None:
        self._open_cost += entry.cost
        self._client_open_cost[entry.client] = self._client_open_cost.get(entry.client, 0.0) + entry.cost
        entry.future.add_done_callback(lambda _: self._close(entry))

    def _close(self, entry: _Entry) -> None:
        self._open_cost -= entry.cost
        left = self._client_open_cost.get(entry.client, 0.0) - entry.cost
        if left <= 1e-9:
            self._client_open_cost.pop(entry.client, None)
        else:
            self._client_open_cost[entry.client] = left

    def _drop_waiting(self, client: Hashable) -> None:
        entries = self._waiting.get(client)
        if not entries:
            return
        kept = deque(entry for entry in entries if not entry.future.done())
        self.stats.dropped += len(entries) - len(kept)
        if kept:
            self._waiting[client] = kept
        else:
            del self._waiting[client]

    # ------------------------------------------------------------------ worker
    def _take(self, room: float, skipped: set) -> _Entry | None:
        """The next waiting item in the clients' turn order whose cost fits in ``room``; the
        client it came from goes to the back of the order. A client whose next item does not
        fit joins ``skipped`` and keeps its place, so it goes first in the next batch (which
        takes its first item whatever it costs): a large item waits one batch, not forever."""
        for client, entries in list(self._waiting.items()):
            if client in skipped:
                continue
            while entries and entries[0].future.done():  # its caller went away
                entries.popleft()
            if not entries:
                del self._waiting[client]
                continue
            if entries[0].cost > room:
                skipped.add(client)
                continue
            entry = entries.popleft()
            del self._waiting[client]
            if entries:
                self._waiting[client] = entries  # to the back: the other clients go first
            return entry
        return None

    async def _collect(self, after_pass: bool = False) -> list[_Entry]:
        """The next batch; ``after_pass``: a pass ended a moment ago, so what waits now queued
        while it ran."""
        assert self._arrived is not None
        ready = time.monotonic()
        queued_during_pass = after_pass and bool(self._waiting)
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        batch: list[_Entry] = []
        cost = 0.0
        skipped: set = set()
        # The clients the last batch answered come back over some tens to hundreds of
        # milliseconds (their responses, the database write, their next requests). Starting
        # the next pass with the first of them would split every round into a small, slow pass
        # (slow because it runs while the web side is busiest) and a large one. So, up to a
        # share of the last pass's duration, the batch waits for as many texts as the last
        # batch had; after that (and always when the last batch was a lone text) it closes
        # after max_wait without a new text. A client that left costs one round one wait.
        expected = min(self._last_size, self.max_batch)
        refill_until = ready + self.refill_share * self._last_duration
        # With overlap the texts that queued during the last pass go at once, and an idle model
        # starts with half as many as the last pass had, as soon as they have come: the other
        # half queue meanwhile and go next, so one cohort of clients is scored while the other
        # is answered.
        limit = self.max_batch
        if self.overlap and not queued_during_pass and expected:
            limit = math.ceil(expected / 2)
        while True:
            while len(batch) < limit:
                entry = self._take(self.max_batch_cost - cost if batch else math.inf, skipped)
                if entry is None:
                    break
                batch.append(entry)
                cost += entry.cost
            if len(batch) >= self.max_batch or skipped or not batch and not self._waiting:
                break  # full (in items or in cost), or every waiting caller went away
            if self.overlap and (queued_during_pass or len(batch) >= limit):
                break
            refilling = not self.overlap and len(batch) < expected and time.monotonic() < refill_until
            timeout = refill_until - time.monotonic() if refilling else self.max_wait_s
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), max(0.0, timeout))
            except (asyncio.TimeoutError, TimeoutError):
                if not refilling:
                    break  # the refill window is over: from now on a gap of max_wait closes it
        return batch

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        after_pass = False
        while True:
            batch = [entry for entry in await self._collect(after_pass) if not entry.future.done()]
            after_pass = bool(batch)
            if not batch:
                continue
            running = loop.run_in_executor(self._executor, self._process_batch, [e.item for e in batch],
                                           sum(e.cost for e in batch))
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

    def _process_batch(self, items: list[T], cost: float = 0.0) -> list[tuple[bool, Any]]:
        started = time.perf_counter()
        try:
            try:
                return [(True, result) for result in self._call(items)]
            except Exception as exc:  # noqa: BLE001 - isolated below, re-raised per item
                if len(items) == 1 or isinstance(exc, self.fail_whole):
                    return [(False, exc)] * len(items)
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
                stats.cost += cost
                stats.sizes.append(len(items))
                if len(stats.sizes) > self.keep_sizes:
                    del stats.sizes[: len(stats.sizes) - self.keep_sizes]
