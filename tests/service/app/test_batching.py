"""MicroBatcher: concurrent submissions share calls, results go back to the right caller, one bad
item fails alone, and the processing function never runs concurrently with itself."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from howsure.errors import DataError
from howsure.service.batching import BatcherClosed, MicroBatcher, QueueFull

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """A batch function that sleeps ``delay`` plus ``per_item`` for each item (like a forward
    pass) and records its calls, their (start, end) times and how many ran at once."""

    def __init__(self, delay: float = 0.0, per_item: float = 0.0):
        self.calls: list[list] = []
        self.spans: list[tuple[float, float]] = []
        self.active = 0
        self.max_active = 0
        self.delay = delay
        self.per_item = per_item
        self.lock = threading.Lock()

    def __call__(self, items):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        started = time.monotonic()
        try:
            time.sleep(self.delay + self.per_item * len(items))
            if any(item == "bad" for item in items):
                raise ValueError("bad item")
            self.calls.append(list(items))
            return [f"<{item}>" for item in items]
        finally:
            self.spans.append((started, time.monotonic()))
            with self.lock:
                self.active -= 1

    def idle_s(self, skip: int) -> float:
        """Seconds between consecutive calls after the first ``skip`` (the model waiting)."""
        spans = self.spans[skip:]
        return sum(start - end for (_, end), (start, _) in zip(spans, spans[1:]))


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_and_get_their_own_results():
    recorder = Recorder(delay=0.02)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=8, max_wait_ms=50)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(40)))
        finally:
            await batcher.stop()
        return results, batcher.stats

    results, stats = run(main())
    assert results == [[f"<t{i}>"] for i in range(40)]
    assert stats.items == 40
    assert stats.largest == 8
    assert all(len(call) <= 8 for call in recorder.calls)
    assert stats.batches <= 10  # 40 items in batches of up to 8, not 40 calls
    assert recorder.max_active == 1


def test_a_lone_item_waits_at_most_about_max_wait():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch=32, max_wait_ms=30)
        await batcher.start()
        started = time.monotonic()
        result = await batcher.submit(["only"])
        elapsed = time.monotonic() - started
        await batcher.stop()
        return result, elapsed

    result, elapsed = run(main())
    assert result == ["<only>"]
    assert 0.025 <= elapsed < 1.0


def test_a_request_larger_than_max_batch_is_split_in_order():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch=3, max_wait_ms=1)
        await batcher.start()
        try:
            return await batcher.submit([str(i) for i in range(10)])
        finally:
            await batcher.stop()

    assert run(main()) == [f"<{i}>" for i in range(10)]
    assert [len(c) for c in recorder.calls] == [3, 3, 3, 1]


def test_one_bad_item_fails_alone():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch=8, max_wait_ms=50)
        await batcher.start()
        try:
            return await asyncio.gather(
                batcher.submit(["a"]), batcher.submit(["bad"]), batcher.submit(["b"]),
                return_exceptions=True,
            )
        finally:
            await batcher.stop()

    good_a, bad, good_b = run(main())
    assert good_a == ["<a>"] and good_b == ["<b>"]
    assert isinstance(bad, ValueError) and "bad item" in str(bad)


def test_a_fail_whole_error_fails_the_batch_at_once_without_rerunning_its_items():
    calls: list[list[str]] = []

    def database_down(items):
        calls.append(list(items))
        raise ConnectionError("database down")

    async def main():
        batcher = MicroBatcher(database_down, max_batch=8, max_wait_ms=50, fail_whole=(ConnectionError,))
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit([text]) for text in "abc"), return_exceptions=True)
        finally:
            await batcher.stop()

    outcomes = run(main())
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
    assert calls == [["a", "b", "c"]]  # one call: no item was run again on its own


def test_wrong_number_of_results_is_an_error_not_a_misalignment():
    async def main():
        batcher = MicroBatcher(lambda items: items[:-1], max_batch=4, max_wait_ms=1)
        await batcher.start()
        try:
            await batcher.submit(["x", "y"])
        finally:
            await batcher.stop()

    with pytest.raises(RuntimeError, match="returned 1 results for 2 items|returned 0 results for 1 items"):
        run(main())


def test_submit_needs_a_running_batcher_and_stop_fails_waiting_items():
    recorder = Recorder(delay=0.2)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=1, max_wait_ms=0)
        with pytest.raises(BatcherClosed):
            await batcher.submit(["early"])
        await batcher.start()
        first = asyncio.create_task(batcher.submit(["first"]))
        second = asyncio.create_task(batcher.submit(["second"]))
        await asyncio.sleep(0.05)  # "first" is being processed, "second" waits in the queue
        await batcher.stop()
        return await asyncio.gather(first, second, return_exceptions=True)

    first, second = run(main())
    assert first == ["<first>"]  # the batch in progress is finished and answered
    assert isinstance(second, BatcherClosed)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_batch": 0}, "max_batch must be an integer >= 1, got 0"),
    ({"max_wait_ms": -1}, "max_wait_ms must be >= 0, got -1"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(DataError, match=match):
        MicroBatcher(lambda items: items, **kwargs)


def test_clients_answered_by_a_batch_can_join_the_next_one():
    recorder = Recorder(delay=0.2)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=4, max_wait_ms=300)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(["a1", "a2", "a3", "a4"]))  # full: runs at once
            await asyncio.sleep(0.05)
            queued = asyncio.create_task(batcher.submit(["b"]))  # waits while "a" is processed
            await first
            await asyncio.sleep(0.05)  # a client answered by the first batch comes back
            late = await batcher.submit(["c"])
            return await queued, late
        finally:
            await batcher.stop()

    assert run(main()) == (["<b>"], ["<c>"])
    assert recorder.calls == [["a1", "a2", "a3", "a4"], ["b", "c"]]


def test_a_batch_closes_on_a_gap_not_on_a_fixed_window():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch=8, max_wait_ms=150)
        await batcher.start()
        try:
            tasks = []
            for i in range(5):  # one every 30 ms: 120 ms in all, never a 150 ms gap
                tasks.append(asyncio.create_task(batcher.submit([f"t{i}"])))
                await asyncio.sleep(0.03)
            await asyncio.gather(*tasks)
            await asyncio.sleep(0.2)  # a gap: the next item starts a new batch
            await batcher.submit(["later"])
        finally:
            await batcher.stop()

    run(main())
    assert recorder.calls == [["t0", "t1", "t2", "t3", "t4"], ["later"]]


def test_under_load_the_next_batch_waits_for_the_clients_just_answered():
    recorder = Recorder(delay=0.4)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=8, max_wait_ms=10, refill_share=0.5)
        await batcher.start()
        try:
            async def client(name: str, rounds: int, pause: float) -> None:
                for k in range(rounds):
                    await batcher.submit([f"{name}{k}"])
                    await asyncio.sleep(pause)  # the client's turnaround, longer than max_wait

            # Four clients; after each answer they come back 20-80 ms later.
            await asyncio.gather(*(client(name, 3, pause) for name, pause in
                                   (("a", 0.02), ("b", 0.04), ("c", 0.06), ("d", 0.08))))
        finally:
            await batcher.stop()

    run(main())
    # Without the refill wait the 10 ms gap rule would split each later round apart.
    assert [len(call) for call in recorder.calls] == [4, 4, 4]


async def clients_with_turnaround(batcher: MicroBatcher, clients: int, rounds: int, turnaround: float) -> list:
    """``clients`` callers that each send one text, wait for it, take ``turnaround`` (the web
    side answering them and their next request coming in) and send again, ``rounds`` times."""
    async def client(name: str) -> list:
        results = []
        for k in range(rounds):
            results.append(await batcher.submit([f"{name}{k}"], client=name))
            await asyncio.sleep(turnaround)
        return results

    await batcher.start()
    try:
        return await asyncio.gather(*(client(f"c{i}-") for i in range(clients)))
    finally:
        await batcher.stop()


def test_with_overlap_one_cohort_is_scored_while_the_other_is_answered():
    clients, rounds, turnaround = 8, 6, 0.06
    runs = {}
    for overlap in (False, True):
        # A pass of 4 texts (0.1 s) outlasts the 0.06 s the other 4 clients take to come back.
        recorder = Recorder(per_item=0.025)
        batcher = MicroBatcher(recorder, max_batch=8, max_wait_ms=10, overlap=overlap)
        results = run(clients_with_turnaround(batcher, clients, rounds, turnaround))
        assert results == [[[f"<c{i}-{k}>"] for k in range(rounds)] for i in range(clients)]
        assert recorder.max_active == 1  # overlap or not, never two passes at once
        runs[overlap] = recorder

    waiting, overlapped = runs[False], runs[True]
    # Without overlap every round the model waits a turnaround for all 8 clients to come back.
    assert [len(call) for call in waiting.calls] == [8] * rounds
    assert waiting.idle_s(skip=0) >= 0.8 * (rounds - 1) * turnaround
    # With it the first round's clients split into two cohorts of about 4 that take turns, and
    # from then on each pass starts as the one before ends.
    sizes = [len(call) for call in overlapped.calls]
    assert sum(sizes) == clients * rounds and max(sizes[2:]) <= 6, sizes
    assert overlapped.idle_s(skip=1) < 0.25 * waiting.idle_s(skip=0), sizes


# ---------------------------------------------------------------------------- fairness and bounds
def test_batches_take_turns_across_clients_so_a_flood_delays_others_by_one_batch():
    recorder = Recorder(delay=0.05)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=4, max_wait_ms=5)
        await batcher.start()
        try:
            flood = asyncio.create_task(batcher.submit([f"f{i}" for i in range(40)], client="flood"))
            await asyncio.sleep(0.01)  # the flood's first batch is running, 36 texts wait
            light = await batcher.submit(["x"], client="light")
            calls_before_light = next(i for i, call in enumerate(recorder.calls) if "x" in call)
            await flood
            return light, calls_before_light
        finally:
            await batcher.stop()

    light, calls_before_light = run(main())
    assert light == ["<x>"]
    assert calls_before_light == 1  # the batch after the one running, not the tenth
    assert [item for call in recorder.calls for item in call if item != "x"] == [f"f{i}" for i in range(40)]


def test_a_batch_holds_at_most_max_batch_cost_but_always_its_first_item():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch=32, max_wait_ms=5, max_batch_cost=10)
        await batcher.start()
        try:
            return await batcher.submit(["a", "b", "c", "big", "d"], costs=[4, 4, 4, 25, 1])
        finally:
            await batcher.stop()

    assert run(main()) == ["<a>", "<b>", "<c>", "<big>", "<d>"]
    assert recorder.calls == [["a", "b"], ["c"], ["big"], ["d"]]


def test_over_the_queue_bound_or_the_clients_share_is_queue_full_with_a_retry_time():
    recorder = Recorder(delay=0.3)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=8, max_wait_ms=1, max_queue_cost=100, max_client_cost=60)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(["a"], client="ann", costs=[50]))
            await asyncio.sleep(0.01)
            with pytest.raises(QueueFull, match="this client's share") as own:
                await batcher.submit(["b"], client="ann", costs=[20])  # 70 > 60 for ann
            other = asyncio.create_task(batcher.submit(["c"], client="bob", costs=[45]))
            await asyncio.sleep(0.01)
            with pytest.raises(QueueFull, match="the queue's bound") as full:
                await batcher.submit(["d"], client="cid", costs=[10])  # 105 > 100 in all
            results = await asyncio.gather(first, other)
            after = await batcher.submit(["e"], client="cid", costs=[10])  # answered ones free their room
            return own.value, full.value, results, after, batcher.stats
        finally:
            await batcher.stop()

    own, full, results, after, stats = run(main())
    assert own.retry_after_s >= 1 and full.retry_after_s >= 1
    assert results == [["<a>"], ["<c>"]] and after == ["<e>"]
    assert stats.refused == 2


def test_a_cancelled_submission_leaves_the_queue_unprocessed():
    recorder = Recorder(delay=0.2)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=2, max_wait_ms=1, max_client_cost=10)
        await batcher.start()
        try:
            running = asyncio.create_task(batcher.submit(["r1", "r2"], client="a", costs=[1, 1]))
            await asyncio.sleep(0.02)  # r1, r2 are being processed
            gone = asyncio.create_task(batcher.submit(["g1", "g2", "g3"], client="b", costs=[3, 3, 3]))
            await asyncio.sleep(0.02)
            assert batcher.waiting == 3
            gone.cancel()  # its HTTP client disconnected
            await asyncio.sleep(0.01)  # while r1, r2 still run
            assert batcher.waiting == 0
            again = await batcher.submit(["n"], client="b", costs=[9])  # its room is free again
            await running
            return again, batcher.stats
        finally:
            await batcher.stop()

    again, stats = run(main())
    assert again == ["<n>"]
    assert stats.dropped == 3
    assert not any(item.startswith("g") for call in recorder.calls for item in call)


def test_a_client_whose_next_item_does_not_fit_goes_first_in_the_next_batch():
    recorder = Recorder(delay=0.1)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=32, max_wait_ms=5, max_batch_cost=10)
        await batcher.start()
        try:
            blocker = asyncio.create_task(batcher.submit(["z"], client="z", costs=[1]))
            await asyncio.sleep(0.02)  # "z" runs; the others queue behind it
            tasks = [asyncio.create_task(batcher.submit([f"{name}{i}" for i in range(3)], client=name,
                                                        costs=[3] * 3)) for name in ("s", "t")]
            await asyncio.sleep(0)
            big = asyncio.create_task(batcher.submit(["big"], client="b", costs=[8]))
            more = asyncio.create_task(batcher.submit(["u0", "u1"], client="u", costs=[3, 3]))
            await asyncio.gather(blocker, big, more, *tasks)
        finally:
            await batcher.stop()

    run(main())
    # "big" does not fit beside s0 (3 + 8 > 10) and is passed over once, then leads the next
    # batch, although small items of other clients are still waiting.
    assert recorder.calls[:3] == [["z"], ["s0", "t0", "u0"], ["big"]]
