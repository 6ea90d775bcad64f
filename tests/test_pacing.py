"""Bursts are started in slices sized from what the slices before cost the event loop."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from helpers import wait_until

from nexios_contrib_scheduler import DateTimeTrigger, SchedulerConfig, SchedulerManager
from nexios_contrib_scheduler.pacing import TURN_BUDGET, Pacer, in_slices

UTC = timezone.utc


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_slice_takes_the_most_then_what_fits_in_the_budget() -> None:
    clock = FakeClock()
    pacer = Pacer(budget=0.004, clock=clock)
    assert pacer.next_size(False, 64) == 64
    pacer.took(64)
    clock.now += 64 * 0.001  # the slice and its runs: 1 ms an item
    assert pacer.next_size(True, 64) == 4
    pacer.took(4)
    clock.now += 4 * 0.0001  # cheaper items: 40 fit
    assert pacer.next_size(True, 64) == 40
    pacer.took(40)
    clock.now += 40 * 0.00001  # 400 would fit: no more than the most
    assert pacer.next_size(True, 64) == 64


def test_never_fewer_than_the_least_nor_more_than_the_most() -> None:
    clock = FakeClock()
    pacer = Pacer(least=3, budget=0.004, clock=clock)
    pacer.next_size(False, 10)
    pacer.took(10)
    clock.now += 10 * 0.050  # 50 ms an item: none would fit
    assert pacer.next_size(True, 10) == 3
    pacer.took(3)
    clock.now += 0.0  # no time at all
    assert pacer.next_size(True, 10) == 10
    pacer.took(10)
    assert pacer.next_size(False, 2) == 2  # a smaller most, asked for now


def test_the_size_learnt_carries_over_to_the_next_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(budget=0.004, clock=clock)
    pacer.next_size(False, 64)
    pacer.took(64)
    clock.now += 64 * 0.0005
    assert pacer.next_size(True, 64) == 8
    pacer.took(2)  # the burst ended
    clock.now += 60.0  # a minute later: not a measure of anything
    assert pacer.next_size(False, 64) == 8
    pacer.took(8)
    clock.now += 8 * 0.0005
    assert pacer.next_size(True, 64) == 8


def test_an_infinite_budget_always_takes_the_most() -> None:
    clock = FakeClock()
    pacer = Pacer(budget=math.inf, clock=clock)
    pacer.next_size(False, 64)
    pacer.took(64)
    clock.now += 10.0
    assert pacer.next_size(True, 64) == 64


@pytest.mark.parametrize(
    ("options", "message"),
    [({"least": 0}, "least must be at least 1"), ({"budget": 0.0}, "budget must be positive")],
)
def test_bad_settings_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pacer(**options)  # type: ignore[arg-type]


def test_the_budget_is_a_few_milliseconds() -> None:
    # Two turns of the loop can fall between two beats of a 1 ms timer: a turn of at most
    # the budget, plus the little else the loop does, keeps that under 10 ms.
    assert 0.001 <= TURN_BUDGET <= 0.005


async def test_in_slices_handles_each_item_in_order_a_slice_per_turn() -> None:
    """Between two slices the loop runs (a ticker sees each turn); the slices follow the
    pacer: the most first, then what fits in the budget, learnt from the clock."""
    import asyncio

    clock = FakeClock()
    pacer = Pacer(least=2, budget=0.004, clock=clock)
    turns: list[list[int]] = [[]]
    handled: list[int] = []

    def handle(item: int) -> None:
        handled.append(item)
        turns[-1].append(item)
        clock.now += 0.0009  # each item costs 0.9 ms: 4 fit in the 4 ms budget

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0)
            turns.append([])

    ticking = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0)
    await in_slices(pacer, list(range(20)), 8, handle)
    ticking.cancel()
    assert handled == list(range(20))
    assert [len(turn) for turn in turns if turn] == [8, 4, 4, 4]


async def test_a_burst_of_costly_runs_starts_a_few_per_turn() -> None:
    """Runs that each cost the loop 1 ms (on the pacer's clock): after the first slice,
    each slice takes the budget's worth, 4 of them; every job runs once."""
    manager = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2, max_concurrent_jobs=500))
    clock = FakeClock()
    scheduler = manager.apscheduler
    scheduler.pacer = Pacer(budget=0.004, clock=clock)
    sizes: list[tuple[bool, int]] = []
    next_size = scheduler.pacer.next_size

    def recorded(continuing: bool, most: int) -> int:
        size = next_size(continuing, most)
        sizes.append((continuing, size))
        return size

    scheduler.pacer.next_size = recorded  # type: ignore[method-assign]
    ran: list[int] = []

    def costly(i: int):  # type: ignore[no-untyped-def]
        async def run() -> None:
            clock.now += 0.001  # what this run cost the loop
            ran.append(i)

        return run

    try:
        await manager.start()
        scheduler.pause()  # every job is added before the pass that starts them
        when = datetime.now(UTC) - timedelta(seconds=1)
        for i in range(200):
            manager.add_job(costly(i), DateTimeTrigger(when), id=f"c{i}")
        sizes.clear()
        scheduler.resume()
        await wait_until(lambda: len(ran) == 200, timeout=30, what="the 200 runs")
    finally:
        await manager.shutdown()
    assert sorted(ran) == list(range(200))
    continuing = [size for carried_on, size in sizes if carried_on]
    assert continuing, sizes
    assert set(continuing) == {4}, sizes


async def test_answers_go_on_after_one_that_cannot_be_given(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A claim whose future belongs to a loop that has closed (a stop, then a start on a
    new loop) is passed over: the answers queued after it are still given."""
    import asyncio
    import threading

    config = SchedulerConfig(jobstore=f"sqlite:///{tmp_path / 'jobs.db'}", shutdown_timeout=2)
    manager = SchedulerManager(config=config)
    await manager.start()
    try:
        writer = manager.persistence.writer
        gone = asyncio.new_event_loop()
        stale = gone.create_future()
        stale.add_done_callback(lambda _: None)  # answering it schedules this: refused
        gone.close()
        loop = asyncio.get_running_loop()
        first = [loop.create_future() for _ in range(150)]
        later = [loop.create_future() for _ in range(5)]

        def from_the_claims_thread() -> None:
            claims = [("gone", "t0", stale)] + [("a", f"t{i}", f) for i, f in enumerate(first)]
            writer._answer(claims, [True] * len(claims), None)
            writer._answer([("b", f"t{i}", f) for i, f in enumerate(later)], None, "refused")

        thread = threading.Thread(target=from_the_claims_thread)
        thread.start()
        thread.join()
        await wait_until(lambda: all(f.done() for f in first + later), what="the answers")
        assert all(f.result() is True for f in first)
        assert all(isinstance(f.exception(), Exception) for f in later)
        assert "refused" in str(later[0].exception())
        third = loop.create_future()
        writer._answer([("c", "t0", third)], [False], None)
        assert await asyncio.wait_for(third, 5) is False  # the queue is served still
    finally:
        await manager.shutdown()
