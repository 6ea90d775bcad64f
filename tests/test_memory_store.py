"""The heap-ordered memory job store and the scheduler passes that use it.

The store is checked against APScheduler's own ``MemoryJobStore`` on the same random
operations, then the scheduler behaviours that depend on it are checked end to end.
"""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.triggers.date import DateTrigger
from helpers import wait_until

from nexios_contrib_scheduler import (
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    ScheduledJob,
    SchedulerConfig,
    SchedulerManager,
)
from nexios_contrib_scheduler.scheduler import SLICE_YIELD, AdapterScheduler
from nexios_contrib_scheduler.stores.memory import HeapJobStore

UTC = timezone.utc
T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def noop() -> None:
    pass


def make_job(scheduler: AdapterScheduler, job_id: str, when: datetime | None):
    """A job as the scheduler builds it, with ``when`` as its next run (None: paused)."""
    return scheduler.add_job(noop, DateTrigger(T0, timezone=UTC), id=job_id, next_run_time=when)


@pytest.fixture
def scheduler():
    return AdapterScheduler(timezone=UTC)  # never started: jobs are only built here


def ids(jobs) -> list[str]:
    return [job.id for job in jobs]


class TestAgainstAPSchedulersMemoryStore:
    """Every read gives what APScheduler's sorted-list store gives after the same writes."""

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_random_operations(self, scheduler, seed):
        rng = random.Random(seed)
        ours, theirs = HeapJobStore(), MemoryJobStore()
        live: list[str] = []
        # Few distinct times, so that ties (same next run, ordered by id) are common.
        times = [T0 + timedelta(seconds=s) for s in range(12)]

        def pick_time():
            return None if rng.random() < 0.15 else rng.choice(times)

        for step in range(3000):
            op = rng.random()
            if op < 0.3 or not live:
                job_id = f"j{rng.randrange(400):03d}"
                job = make_job(scheduler, job_id, pick_time())
                results = []
                for store in (ours, theirs):
                    try:
                        store.add_job(job)
                        results.append("ok")
                    except ConflictingIdError:
                        results.append("conflict")
                assert results[0] == results[1], step
                if results[0] == "ok":
                    live.append(job_id)
            elif op < 0.55:
                job = make_job(scheduler, rng.choice(live), pick_time())
                ours.update_job(job)
                theirs.update_job(job)
            elif op < 0.65:
                job_id = live.pop(rng.randrange(len(live)))
                ours.remove_job(job_id)
                theirs.remove_job(job_id)
            elif op < 0.85:
                now = rng.choice(times)
                due = ours.get_due_jobs(now)
                assert ids(due) == ids(theirs.get_due_jobs(now)), step
                # As the scheduler does: write back some of them, leave others as they were.
                for job in due:
                    if rng.random() < 0.7:
                        moved = make_job(scheduler, job.id, pick_time())
                        ours.update_job(moved)
                        theirs.update_job(moved)
            else:
                assert ids(ours.get_all_jobs()) == ids(theirs.get_all_jobs()), step
                assert ours.get_next_run_time() == theirs.get_next_run_time(), step
            lookup = rng.choice(live) if live else "missing"
            assert ours.lookup_job(lookup) is theirs.lookup_job(lookup)
        assert ids(ours.get_all_jobs()) == ids(theirs.get_all_jobs())


class TestHeapJobStore:
    def test_due_jobs_come_by_time_then_id_and_paused_jobs_never(self, scheduler):
        store = HeapJobStore()
        for job_id, when in [
            ("b", T0),
            ("a", T0),
            ("c", T0 - timedelta(seconds=1)),
            ("d", T0 + timedelta(seconds=1)),
            ("p", None),
        ]:
            store.add_job(make_job(scheduler, job_id, when))
        assert ids(store.get_due_jobs(T0)) == ["c", "a", "b"]
        assert ids(store.get_all_jobs()) == ["c", "a", "b", "d", "p"]

    def test_limit_hands_out_the_earliest_and_keeps_the_rest(self, scheduler):
        store = HeapJobStore()
        for i in range(10):
            store.add_job(make_job(scheduler, f"j{i}", T0 + timedelta(seconds=i)))
        later = T0 + timedelta(seconds=60)
        assert ids(store.get_due_jobs(later, 3)) == ["j0", "j1", "j2"]
        assert ids(store.get_due_jobs(later, 3)) == ["j0", "j1", "j2"]  # not written back
        for job_id in ("j0", "j1", "j2"):
            store.remove_job(job_id)
        assert ids(store.get_due_jobs(later, 3)) == ["j3", "j4", "j5"]
        assert store.get_next_run_time() == T0 + timedelta(seconds=3)

    def test_a_due_job_written_back_is_not_due_again(self, scheduler):
        store = HeapJobStore()
        store.add_job(make_job(scheduler, "x", T0))
        (job,) = store.get_due_jobs(T0)
        store.update_job(make_job(scheduler, "x", T0 + timedelta(hours=1)))
        assert store.get_due_jobs(T0 + timedelta(minutes=59)) == []
        assert store.get_next_run_time() == T0 + timedelta(hours=1)

    def test_conflicts_and_unknown_ids(self, scheduler):
        store = HeapJobStore()
        store.add_job(make_job(scheduler, "x", T0))
        with pytest.raises(ConflictingIdError):
            store.add_job(make_job(scheduler, "x", T0))
        with pytest.raises(JobLookupError):
            store.update_job(make_job(scheduler, "y", T0))
        with pytest.raises(JobLookupError):
            store.remove_job("y")
        assert store.lookup_job("y") is None

    def test_many_rewrites_keep_order_after_the_heap_is_rebuilt(self, scheduler):
        store = HeapJobStore()
        for i in range(50):
            store.add_job(make_job(scheduler, f"j{i:02d}", T0))
        for round_ in range(100):  # 5,000 rewrites: the dead entries get compacted away
            for i in range(50):
                offset = timedelta(seconds=(i * 7 + round_) % 50)
                store.update_job(make_job(scheduler, f"j{i:02d}", T0 + offset))
        assert len(store._heap) < 50 + 1024 + 50
        expected = sorted(
            (T0 + timedelta(seconds=(i * 7 + 99) % 50), f"j{i:02d}") for i in range(50)
        )
        assert ids(store.get_all_jobs()) == [job_id for _, job_id in expected]
        assert ids(store.get_due_jobs(T0 + timedelta(seconds=49))) == [j for _, j in expected]

    def test_shutdown_forgets_the_jobs_as_apschedulers_store_does(self, scheduler):
        store = HeapJobStore()
        store.add_job(make_job(scheduler, "x", T0))
        store.shutdown()
        assert store.get_all_jobs() == []
        assert store.get_next_run_time() is None


# ---------------------------------------------------------------- through the manager


@pytest.fixture
async def manager():
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2, max_concurrent_jobs=1000))
    yield m
    await m.shutdown()


class Counter:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


class TestSchedulerSemantics:
    async def test_the_default_store_is_the_heap_store(self, manager):
        await manager.start()
        assert isinstance(manager.apscheduler._lookup_jobstore("default"), HeapJobStore)

    async def test_get_jobs_orders_by_next_run_with_paused_last(self, manager):
        await manager.start()
        manager.add_job(noop, IntervalTrigger(hours=3, start_now=False), id="three")
        manager.add_job(noop, IntervalTrigger(hours=1, start_now=False), id="one")
        manager.add_job(noop, IntervalTrigger(hours=2, start_now=False), id="two")
        manager.pause_job("one")
        assert [job.id for job in manager.apscheduler.get_jobs()] == ["two", "three", "one"]

    async def test_coalesce_gives_one_catch_up_run(self, manager, scheduler_clock):
        on, off = Counter(), Counter()
        every_10s = IntervalTrigger(seconds=10, start_now=False)
        manager.add_job(on, every_10s, coalesce=True, misfire_grace_time=60)
        manager.add_job(off, every_10s, coalesce=False, misfire_grace_time=60)
        await manager.start()
        await scheduler_clock.jump(seconds=45)  # over the fires at 10, 20, 30 and 40 s
        assert on.count == 1
        assert off.count == 4

    async def test_misfire_grace_time_records_missed_fires(self, manager, scheduler_clock):
        counter = Counter()
        job = manager.add_job(
            counter, IntervalTrigger(seconds=10, start_now=False), misfire_grace_time=5
        )
        await manager.start()
        await scheduler_clock.jump(seconds=17)
        assert counter.count == 0
        assert job.missed_count == 1
        await scheduler_clock.advance(seconds=3)
        assert counter.count == 1

    async def test_max_instances_skips_fires_while_a_run_goes_on(self, manager):
        release = asyncio.Event()
        started = Counter()

        async def slow() -> None:
            await started()
            await release.wait()

        job = manager.add_job(slow, IntervalTrigger(seconds=0.05), max_instances=1)
        await manager.start()
        await wait_until(lambda: job.skipped_count >= 2)
        assert started.count == 1
        release.set()

    async def test_pause_resume_and_remove(self, manager, scheduler_clock):
        counter = Counter()
        manager.add_job(counter, IntervalTrigger(seconds=10, start_now=False), id="x")
        await manager.start()
        manager.pause_job("x")
        await scheduler_clock.advance(seconds=25)
        assert counter.count == 0
        manager.resume_job("x")  # back on the 10 s grid: next fire at 30 s
        await scheduler_clock.advance(seconds=4)
        assert counter.count == 0
        await scheduler_clock.advance(seconds=1)
        assert counter.count == 1
        manager.remove_job("x")
        await scheduler_clock.advance(seconds=30)
        assert counter.count == 1
        assert manager.apscheduler.get_job("x") is None

    async def test_replace_existing_keeps_one_job_with_the_new_schedule(self, manager):
        await manager.start()
        manager.add_job(noop, IntervalTrigger(hours=1, start_now=False), id="x")
        manager.add_job(
            noop, IntervalTrigger(hours=5, start_now=False), id="x", replace_existing=True
        )
        (job,) = manager.apscheduler.get_jobs()
        assert job.id == "x"
        assert job.next_run_time - datetime.now(UTC) > timedelta(hours=4)


class TestPasses:
    async def test_many_due_jobs_all_run_once_in_slices_the_loop_runs_between(self, manager):
        manager.apscheduler.slice_size = 10
        order: list[str] = []
        runs: dict[int, int] = {}

        def job(i: int):
            async def run() -> None:
                runs[i] = runs.get(i, 0) + 1
                order.append("job")

            return run

        async def ticker() -> None:
            while True:
                order.append("tick")
                await asyncio.sleep(0)

        await manager.start()
        when = datetime.now(UTC) + timedelta(seconds=0.2)
        jobs = [manager.add_job(job(i), DateTimeTrigger(when)) for i in range(100)]
        ticking = asyncio.create_task(ticker())
        try:
            await wait_until(lambda: len(runs) == 100)
        finally:
            ticking.cancel()
        assert set(runs.values()) == {1}
        first, last = order.index("job"), len(order) - order[::-1].index("job") - 1
        assert "tick" in order[first:last]  # the loop ran other work between slices
        await wait_until(lambda: all(j.status is JobStatus.COMPLETED for j in jobs))

    async def test_adds_in_one_go_share_one_pass(self, manager):
        await manager.start()
        await asyncio.sleep(0.05)
        passes = []
        scheduler = manager.apscheduler
        original = scheduler._process_jobs

        def counting(*args):
            passes.append(1)
            return original(*args)

        scheduler._process_jobs = counting
        for i in range(500):
            manager.add_job(noop, DateTimeTrigger(datetime.now(UTC) + timedelta(seconds=30 + i)))
        await asyncio.sleep(0.05)
        assert 1 <= len(passes) <= 2

    async def test_a_job_due_after_the_armed_timer_needs_no_pass(self, manager):
        await manager.start()
        manager.add_job(noop, IntervalTrigger(minutes=1, start_now=False))
        await asyncio.sleep(0.05)
        passes = []
        scheduler = manager.apscheduler
        original = scheduler._process_jobs

        def counting(*args):
            passes.append(1)
            return original(*args)

        scheduler._process_jobs = counting
        manager.add_job(noop, IntervalTrigger(hours=1, start_now=False))
        await asyncio.sleep(0.05)
        assert passes == []
        manager.add_job(noop, IntervalTrigger(seconds=30, start_now=False))
        await asyncio.sleep(0.05)
        assert passes == [1]

    async def test_a_job_added_from_another_thread_runs(self, manager):
        counter = Counter()
        await manager.start()
        await asyncio.sleep(0.05)

        def add() -> None:
            manager.add_job(counter, DateTimeTrigger(datetime.now(UTC)))

        thread = threading.Thread(target=add)
        thread.start()
        thread.join()
        await wait_until(lambda: counter.count == 1)

    async def test_callable_checks_still_refuse_bad_arguments(self, manager):
        await manager.start()

        async def one_arg(x) -> None:
            pass

        with pytest.raises(ValueError):
            manager.apscheduler.add_job(one_arg, DateTrigger(T0), args=(1, 2))
        manager.apscheduler.add_job(one_arg, DateTrigger(T0), args=(1,))
        with pytest.raises(ValueError):  # the remembered check is per argument count
            manager.apscheduler.add_job(one_arg, DateTrigger(T0), args=(1, 2))


class TestBursts:
    """While a burst of due jobs is being started, the runs' bookkeeping waits for it."""

    @staticmethod
    async def _burst(
        manager: SchedulerManager, later_max_wait: float
    ) -> tuple[list[str], list[ScheduledJob]]:
        """100 one-shots due at once, in slices of 10 (not cut short by time); the kinds of
        the started and succeeded events in the order they came, and the jobs."""
        manager.apscheduler.slice_size = 10
        manager.apscheduler.slice_time = 3600.0
        manager.executor.later_max_wait = later_max_wait
        seen: list[str] = []
        manager.add_listener(lambda event: seen.append(event.kind), ["job_started"])
        manager.add_listener(lambda event: seen.append(event.kind), ["job_succeeded"])
        await manager.start()
        when = datetime.now(UTC) + timedelta(seconds=0.2)
        jobs = [manager.add_job(noop, DateTimeTrigger(when)) for _ in range(100)]
        await wait_until(lambda: seen.count("job_succeeded") == 100)
        return seen, jobs

    async def test_every_start_comes_before_the_bookkeeping_of_the_burst(self, manager):
        # A burst is a run of full slices (``slice_size`` jobs each). A slice cut short by
        # ``slice_time`` is not one, and on a loaded machine 10 starts can take longer than
        # the 2 ms it allows. The bookkeeping waits for a burst at most ``later_max_wait``,
        # and on a loaded machine the burst's ten slices can take longer than its 0.1 s.
        # With both limits out of the way, the machine's speed does not decide what this
        # test sees.
        seen, jobs = await self._burst(manager, later_max_wait=3600.0)
        assert seen == ["job_started"] * 100 + ["job_succeeded"] * 100
        for job in jobs:
            assert job.status is JobStatus.COMPLETED
            assert job.total_run_count == 1 and job.success_count == 1
            assert job.current_instances == 0
            assert [run.outcome for run in job.history] == ["success"]

    async def test_the_bookkeeping_waits_for_a_burst_at_most_later_max_wait(self, manager):
        # With no wait allowed, a slice's bookkeeping is done right after the next slice
        # starts: the successes come out between the starts, never all after them.
        seen, jobs = await self._burst(manager, later_max_wait=0.0)
        last_start = len(seen) - 1 - seen[::-1].index("job_started")
        assert seen.index("job_succeeded") < last_start
        assert sorted(seen) == sorted(["job_started"] * 100 + ["job_succeeded"] * 100)
        assert {j.status for j in jobs} == {JobStatus.COMPLETED}

    async def test_while_claims_are_unwritten_the_loop_idles_between_slices(self, manager):
        # With claims (a persistent store), another thread writes them and needs the
        # interpreter's lock: the next slice waits SLICE_YIELD, idle, while claims handed
        # over are unwritten, and follows at once when they are written.
        manager.apscheduler.slice_size = 10
        manager.apscheduler.slice_time = 3600.0
        unwritten = [True]
        manager.apscheduler.claims_unwritten = lambda: unwritten[0]
        await manager.start()
        loop = asyncio.get_running_loop()
        wake = manager.apscheduler._wake
        continued: list[str] = []
        real_later, real_soon = loop.call_later, loop.call_soon

        def later(delay, callback, *args, **kwargs):
            if callback == wake:
                continued.append("later" if delay == SLICE_YIELD else f"timer {delay}")
            return real_later(delay, callback, *args, **kwargs)

        def soon(callback, *args, **kwargs):
            if callback == wake:
                continued.append("soon")
            return real_soon(callback, *args, **kwargs)

        loop.call_later, loop.call_soon = later, soon  # type: ignore[method-assign]
        try:
            when = datetime.now(UTC) + timedelta(seconds=0.2)
            first = [manager.add_job(noop, DateTimeTrigger(when)) for _ in range(50)]
            await wait_until(lambda: all(j.status is JobStatus.COMPLETED for j in first))
            yields = continued.count("later")
            # At least five slices (the pacer may make them smaller): each continuation a yield.
            assert yields >= 4, continued
            unwritten[0] = False
            when = datetime.now(UTC) + timedelta(seconds=0.2)
            second = [manager.add_job(noop, DateTimeTrigger(when)) for _ in range(50)]
            await wait_until(lambda: all(j.status is JobStatus.COMPLETED for j in second))
        finally:
            del loop.call_later, loop.call_soon
        assert continued.count("later") == yields, continued  # no yield once written
        assert all(j.total_run_count == 1 for j in first + second)

    async def test_failures_in_a_burst_are_recorded(self, manager):
        manager.apscheduler.slice_size = 10

        async def boom() -> None:
            raise ValueError("boom")

        await manager.start()
        when = datetime.now(UTC) + timedelta(seconds=0.2)
        bad = [manager.add_job(boom, DateTimeTrigger(when)) for _ in range(30)]
        good = [manager.add_job(noop, DateTimeTrigger(when)) for _ in range(30)]
        await wait_until(lambda: all(j.status is not JobStatus.ACTIVE for j in bad + good))
        assert {j.status for j in bad} == {JobStatus.FAILED}
        assert {j.last_error for j in bad} == {"ValueError: boom"}
        assert {j.status for j in good} == {JobStatus.COMPLETED}

    async def test_shutdown_completes_the_bookkeeping_left(self, manager):
        manager.apscheduler.slice_size = 5
        await manager.start()
        when = datetime.now(UTC) + timedelta(seconds=0.1)
        jobs = [manager.add_job(noop, DateTimeTrigger(when)) for _ in range(50)]
        await wait_until(lambda: all(j.total_run_count == 1 for j in jobs))
        await manager.shutdown()
        assert all(j.success_count == 1 and j.current_instances == 0 for j in jobs)
        assert {j.status for j in jobs} == {JobStatus.COMPLETED}
