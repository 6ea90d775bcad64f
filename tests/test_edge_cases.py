from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from helpers import wait_until

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerManager,
)
from nexios_contrib_scheduler.triggers import CronSchedule

UTC = timezone.utc


async def noop() -> None:
    pass


async def takes_one(x) -> None:
    pass


@pytest.fixture
async def manager():
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
    yield m
    await m.shutdown()


class TestEdgesOfTime:
    def test_interval_longer_than_a_thousand_years_is_refused(self):
        with pytest.raises(ValueError, match="too long"):
            IntervalTrigger(weeks=520000)
        with pytest.raises(ValueError, match="too long"):
            IntervalTrigger(weeks=1e9)

    def test_a_schedule_that_runs_past_year_9999_ends(self):
        start = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)
        assert len(IntervalTrigger(days=365 * 900).next_fire_times(3, start)) == 1
        assert CronTrigger("0 0 29 2 *").next_fire_times(2, start) == []
        schedule = CronSchedule(CronTrigger("* * * * *").expression, UTC)
        last = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
        assert schedule.get_next_fire_time(last, last) is None

    def test_run_date_out_of_utc_range_is_a_value_error(self):
        with pytest.raises(ValueError, match="out of range"):
            DateTimeTrigger("0001-01-01T00:00:00+14:00")

    async def test_a_job_at_the_end_of_time_completes_and_others_go_on(
        self, manager, scheduler_clock
    ):
        ticks = []

        async def tick():
            ticks.append(1)

        scheduler_clock.set("9999-12-31T00:00:00")
        last = manager.add_job(noop, IntervalTrigger(days=2), id="last")
        manager.add_job(tick, IntervalTrigger(seconds=10), id="tick")
        await manager.start()
        await scheduler_clock.run_due()
        # The next fire of "last" would be in year 10000: it ran once and is complete, and
        # the scheduler goes on firing the other job.
        assert last.total_run_count == 1
        assert last.status is JobStatus.COMPLETED
        await scheduler_clock.advance(seconds=20)
        assert len(ticks) == 3


class TestArgumentsCheckedAtAdd:
    async def test_wrong_arguments_are_said_at_add_and_fail_each_run(
        self, manager, caplog, scheduler_clock
    ):
        # The spec's own example passes args to a function that takes none: accepted.
        job = manager.add_job(takes_one, IntervalTrigger(seconds=10), id="bad")
        assert "takes_one cannot be called" in caplog.text
        good = manager.add_job(takes_one, IntervalTrigger(seconds=10), args=(1,), id="ok")
        await manager.start()  # the start is not broken by it
        await scheduler_clock.run_due()
        assert job.status is JobStatus.FAILED
        assert job.last_error.startswith("TypeError:")
        assert good.status is JobStatus.ACTIVE and good.total_run_count == 1
        late = manager.add_job(takes_one, IntervalTrigger(seconds=10), id="late")
        assert late.next_run_time is not None  # same while running
        with pytest.raises(ValueError, match="cannot be called"):
            manager.modify_job("ok", args=(1, 2))
        assert manager.get_job("ok").args == (1,)

    async def test_one_job_failing_to_schedule_does_not_stop_the_others(self, manager, monkeypatch):
        good = manager.add_job(noop, IntervalTrigger(seconds=10), id="good")
        bad = manager.add_job(noop, IntervalTrigger(seconds=10), id="bad")
        other = manager.add_job(noop, IntervalTrigger(seconds=10), id="other")
        real = bad.trigger.to_apscheduler

        def broken(tz, now):
            raise RuntimeError("cannot anchor")

        monkeypatch.setattr(bad.trigger, "to_apscheduler", broken)
        await manager.start()
        assert bad.status is JobStatus.FAILED
        assert "cannot anchor" in bad.last_error
        assert good.next_run_time is not None and other.next_run_time is not None
        assert {j.id for j in manager.apscheduler.get_jobs()} == {"good", "other"}
        monkeypatch.setattr(bad.trigger, "to_apscheduler", real)

    async def test_replace_existing_must_be_a_bool(self, manager):
        with pytest.raises(TypeError, match="replace_existing"):
            manager.add_job(noop, IntervalTrigger(seconds=1), replace_existing="yes")

    async def test_empty_name_is_refused(self, manager):
        with pytest.raises(TypeError, match="non-empty"):
            manager.add_job(noop, IntervalTrigger(seconds=1), name="")


class TestSkippedOneShot:
    async def test_a_one_shot_whose_only_fire_is_skipped_ends_failed(
        self, manager, scheduler_clock
    ):
        release = asyncio.Event()

        async def work():
            await release.wait()

        manager.add_job(work, IntervalTrigger(hours=1), id="sync-crm", max_instances=1)
        await manager.start()
        await scheduler_clock.run_due(wait=False)
        await wait_until(lambda: manager.get_job("sync-crm").current_instances == 1)
        job = manager.add_job(
            work,
            DateTimeTrigger(scheduler_clock.now() + timedelta(minutes=1)),
            id="sync-crm",
            replace_existing=True,
            max_instances=1,
        )
        await scheduler_clock.advance(minutes=1, wait=False)
        await wait_until(lambda: job.status is not JobStatus.ACTIVE)
        assert job.status is JobStatus.FAILED
        assert job.total_run_count == 0
        assert "skipped: max_instances" in job.last_error
        release.set()


class TestBurstsAndSlots:
    async def test_shutdown_mid_burst_does_not_run_one_shots_again(self):
        m = SchedulerManager(config=SchedulerConfig(max_concurrent_jobs=1000, shutdown_timeout=5))
        runs: list[int] = []

        async def once(i: int) -> None:
            runs.append(i)

        when = datetime.now(UTC) + timedelta(seconds=0.2)
        for i in range(300):
            m.add_job(once, DateTimeTrigger(when), id=f"j{i}", args=(i,))
        await m.start()
        try:
            await wait_until(lambda: m.apscheduler.get_job("j0") is None)
            await m.shutdown()  # most likely while the burst is still being submitted
            ran = set(runs)
            assert all(m.get_job(f"j{i}").status is JobStatus.COMPLETED for i in ran)
            await m.start()
            await wait_until(lambda: len(runs) >= 300)
            await asyncio.sleep(0.1)
            assert sorted(runs) == list(range(300))  # each exactly once
        finally:
            await m.shutdown()

    async def test_a_fire_waiting_for_a_slot_does_not_run_once_removed_or_paused(self):
        m = SchedulerManager(config=SchedulerConfig(max_concurrent_jobs=1, shutdown_timeout=5))
        release = asyncio.Event()
        ran: list[str] = []

        async def hog() -> None:
            await release.wait()

        async def victim(name: str) -> None:
            ran.append(name)

        now = datetime.now(UTC)
        hog_job = m.add_job(hog, DateTimeTrigger(now), id="hog")
        m.add_job(victim, DateTimeTrigger(now + timedelta(seconds=0.1)), args=("removed",), id="r")
        m.add_job(victim, IntervalTrigger(seconds=0.1, start_now=False), args=("paused",), id="p")
        await m.start()
        try:
            await wait_until(lambda: hog_job.current_instances == 1)
            await wait_until(lambda: m.apscheduler.get_job("r") is None)  # its fire is queued
            await wait_until(lambda: m.registry.get("p").submissions >= 1)
            assert m.remove_job("r") is True
            assert m.pause_job("p") is True
            release.set()
            await wait_until(lambda: hog_job.status is JobStatus.COMPLETED)
            await asyncio.sleep(0.05)
            assert ran == []
        finally:
            await m.shutdown()

    async def test_run_now_from_another_thread_starts_at_once(self, manager):
        import threading

        ran = asyncio.Event()

        async def work() -> None:
            ran.set()

        manager.add_job(work, IntervalTrigger(hours=1, start_now=False), id="x")
        await manager.start()
        answers: list[bool] = []
        thread = threading.Thread(target=lambda: answers.append(manager.run_job_now("x")))
        thread.start()
        thread.join()
        assert answers == [True]
        # Nothing else is due for an hour: only the run-now request can wake the loop.
        await asyncio.wait_for(ran.wait(), timeout=60)


async def test_a_plain_function_cut_off_at_shutdown_says_its_thread_runs_on():
    import threading

    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=0.05))
    release = threading.Event()
    job = m.add_job(release.wait, IntervalTrigger(hours=1), args=(5,))
    await m.start()
    await wait_until(lambda: job.current_instances == 1)
    await m.shutdown()
    release.set()
    assert job.history[0].outcome == "cancelled"
    assert "its thread runs on to the end" in job.history[0].error
