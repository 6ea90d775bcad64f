"""The scheduler_clock fixture and FrozenClock, on interval, cron and one-shot jobs."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apscheduler.schedulers.base as aps_base
import pytest
from helpers import wait_until

import nexios_contrib_scheduler.testing as testing
from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerManager,
)
from nexios_contrib_scheduler import clock as clock_module
from nexios_contrib_scheduler.testing import FrozenClock

UTC = timezone.utc
T0 = datetime(2030, 1, 7, 8, tzinfo=UTC)  # a Monday
ROOT = Path(__file__).resolve().parent.parent


class Stamps:
    """An async job that notes the clock's time at each call."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.times: list[datetime] = []

    async def __call__(self) -> None:
        self.times.append(self.clock.now())


@pytest.fixture
async def clocked(scheduler_clock):
    scheduler_clock.set(T0)
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
    yield m
    await m.shutdown()


def hhmm(times: list[datetime]) -> list[str]:
    return [t.strftime("%a %H:%M") for t in times]


class TestAdvance:
    async def test_interval_runs_each_fire_at_its_time(self, clocked, scheduler_clock):
        stamps = Stamps(scheduler_clock)
        job = clocked.add_job(stamps, IntervalTrigger(minutes=20))
        await clocked.start()
        await scheduler_clock.advance(hours=1)
        assert hhmm(stamps.times) == ["Mon 08:00", "Mon 08:20", "Mon 08:40", "Mon 09:00"]
        assert [r.scheduled_time for r in job.history] == [r.start for r in job.history]
        assert scheduler_clock.now() == T0 + timedelta(hours=1)

    async def test_cron_in_the_scheduler_zone(self, scheduler_clock):
        scheduler_clock.set(T0)
        m = SchedulerManager(config=SchedulerConfig(timezone="Europe/Paris"))
        stamps = Stamps(scheduler_clock)
        m.add_job(stamps, CronTrigger("30 9 * * 1-5"))  # 09:30 Paris is 08:30 UTC in winter
        await m.start()
        try:
            await scheduler_clock.advance(days=7)
        finally:
            await m.shutdown()
        assert hhmm(stamps.times) == [f"{d} 08:30" for d in ("Mon", "Tue", "Wed", "Thu", "Fri")]

    async def test_one_shot_runs_once_at_its_time(self, clocked, scheduler_clock):
        stamps = Stamps(scheduler_clock)
        job = clocked.add_job(stamps, DateTimeTrigger(T0 + timedelta(minutes=90)))
        await clocked.start()
        await scheduler_clock.advance(hours=1)
        assert stamps.times == [] and job.status is JobStatus.ACTIVE
        await scheduler_clock.move_to(T0 + timedelta(hours=2))
        assert stamps.times == [T0 + timedelta(minutes=90)]
        assert job.status is JobStatus.COMPLETED

    async def test_plain_functions_and_several_schedulers(self, clocked, scheduler_clock):
        other = SchedulerManager()
        calls: list[str] = []
        clocked.add_job(lambda: calls.append("a"), IntervalTrigger(minutes=30, start_now=False))
        other.add_job(lambda: calls.append("b"), IntervalTrigger(hours=1, start_now=False))
        await clocked.start()
        await other.start()
        try:
            await scheduler_clock.advance(hours=2)
        finally:
            await other.shutdown()
        assert sorted(calls) == ["a", "a", "a", "a", "b", "b"]

    async def test_jobs_added_while_running_and_run_now(self, clocked, scheduler_clock):
        await clocked.start()
        stamps = Stamps(scheduler_clock)
        job = clocked.add_job(stamps, IntervalTrigger(minutes=5), id="x")  # due at once
        await scheduler_clock.run_due()
        assert stamps.times == [T0]
        clocked.run_job_now("x")
        await scheduler_clock.run_due()
        assert len(stamps.times) == 2 and job.total_run_count == 2

    async def test_no_real_timer_is_armed_while_frozen(self, clocked, scheduler_clock):
        stamps = Stamps(scheduler_clock)
        clocked.add_job(stamps, IntervalTrigger(seconds=0.01, start_now=False))
        await clocked.start()
        await asyncio.sleep(0.1)  # ten intervals of real time
        assert stamps.times == []
        await scheduler_clock.advance(seconds=0.03)
        assert len(stamps.times) == 3


class TestJump:
    async def test_coalesce_gives_one_catch_up_run(self, clocked, scheduler_clock):
        stamps = Stamps(scheduler_clock)
        job = clocked.add_job(stamps, IntervalTrigger(minutes=1, start_now=False))
        await clocked.start()
        await scheduler_clock.jump(hours=3)
        assert stamps.times == [T0 + timedelta(hours=3)]
        assert job.history[0].scheduled_time == T0 + timedelta(hours=3)
        assert (job.total_run_count, job.missed_count) == (1, 0)

    async def test_without_coalesce_the_fires_inside_the_grace_run(self, clocked, scheduler_clock):
        job = clocked.add_job(
            Stamps(scheduler_clock),
            IntervalTrigger(minutes=1, start_now=False),
            coalesce=False,
            misfire_grace_time=150,
        )
        await clocked.start()
        await scheduler_clock.jump(minutes=10)
        # Fires at 08:01 .. 08:10; at 08:10 those at most 150 s late are 08:08 .. 08:10.
        ran = sorted(r.scheduled_time for r in job.history if r.outcome == "success")
        assert hhmm(ran) == ["Mon 08:08", "Mon 08:09", "Mon 08:10"]
        assert job.missed_count == 7 and job.total_run_count == 3

    async def test_a_one_shot_past_its_grace_is_missed(self, clocked, scheduler_clock):
        job = clocked.add_job(
            Stamps(scheduler_clock),
            DateTimeTrigger(T0 + timedelta(minutes=1)),
            misfire_grace_time=30,
        )
        await clocked.start()
        await scheduler_clock.jump(minutes=2)
        assert job.status is JobStatus.FAILED and job.history[0].outcome == "missed"

    async def test_a_cron_fire_past_its_grace_is_missed(self, clocked, scheduler_clock):
        job = clocked.add_job(Stamps(scheduler_clock), CronTrigger("0 9 * * *"), coalesce=False)
        await clocked.start()
        await scheduler_clock.jump(hours=2)  # 09:00 is an hour late at 10:00: default grace 30 s
        assert (job.total_run_count, job.missed_count) == (0, 1)
        assert job.next_run_time == T0 + timedelta(days=1, hours=1)

    async def test_jump_to_can_go_back(self, clocked, scheduler_clock):
        stamps = Stamps(scheduler_clock)
        job = clocked.add_job(stamps, DateTimeTrigger(T0 + timedelta(hours=1)))
        await clocked.start()
        await scheduler_clock.jump_to(T0 - timedelta(days=1))
        assert scheduler_clock.now() == T0 - timedelta(days=1)
        assert stamps.times == [] and job.next_run_time == T0 + timedelta(hours=1)


class TestRunsInProgress:
    async def test_wait_false_keeps_a_run_going_while_time_moves(self, clocked, scheduler_clock):
        release = asyncio.Event()

        async def slow() -> None:
            await release.wait()

        job = clocked.add_job(slow, IntervalTrigger(minutes=1), max_instances=1, id="x")
        await clocked.start()
        await scheduler_clock.advance(minutes=3, wait=False)
        assert (job.current_instances, job.skipped_count) == (1, 3)
        assert clocked.run_job_now("x") is False
        release.set()
        await scheduler_clock.run_due()
        assert job.current_instances == 0 and job.success_count == 1

    async def test_a_run_that_never_ends_fails_the_move(self, clocked, scheduler_clock):
        never = asyncio.Event()

        async def stuck() -> None:
            await never.wait()

        clocked.add_job(stuck, IntervalTrigger(minutes=1), name="stuck-job")
        await clocked.start()
        scheduler_clock.run_timeout = 0.1
        with pytest.raises(AssertionError, match="runs still going after 0.1s.*stuck-job"):
            await scheduler_clock.run_due()
        never.set()


class TestClockItself:
    async def test_times_are_read_as_utc_and_checked(self, scheduler_clock):
        scheduler_clock.set("2030-01-01T09:00:00")
        assert scheduler_clock.now() == datetime(2030, 1, 1, 9, tzinfo=UTC)
        scheduler_clock.set("2030-01-01T09:00:00+02:00")
        assert scheduler_clock.now() == datetime(2030, 1, 1, 7, tzinfo=UTC)
        scheduler_clock.set("2030-01-01T09:00:00Z")
        assert scheduler_clock.now().tzinfo is UTC
        with pytest.raises(ValueError, match="cannot read time 'noon'"):
            scheduler_clock.set("noon")
        with pytest.raises(TypeError, match="datetime or an ISO 8601 str"):
            scheduler_clock.set(1893456000)
        with pytest.raises(ValueError, match="use jump_to"):
            await scheduler_clock.move_to("2029-01-01T00:00:00Z")
        with pytest.raises(ValueError, match="only moves forward"):
            await scheduler_clock.advance(-1)
        await scheduler_clock.advance(timedelta(minutes=5), hours=1)
        assert scheduler_clock.now() == datetime(2030, 1, 1, 10, 5, tzinfo=UTC)

    def test_the_fixture_installs_the_clock_everywhere(self, scheduler_clock):
        scheduler_clock.set(T0)
        assert clock_module.get_clock() is scheduler_clock
        assert clock_module.utcnow() == T0
        assert aps_base.datetime.now(UTC) == T0
        assert SchedulerManager().add_job(print, IntervalTrigger(hours=1)).created_at == T0
        assert IntervalTrigger(hours=1).next_fire_times(1) == [T0]

    def test_the_plugin_is_registered_by_its_entry_point(self, pytestconfig):
        assert pytestconfig.pluginmanager.get_plugin("nexios_scheduler") is testing

    async def test_uninstall_gives_back_the_real_clock_and_timers(self):
        real_datetime = aps_base.datetime
        m = SchedulerManager()
        runs: list[int] = []
        with FrozenClock(T0) as frozen:
            assert clock_module.is_frozen()
            m.add_job(lambda: runs.append(1), IntervalTrigger(seconds=0.02, start_now=False))
            await m.start()
            await asyncio.sleep(0.1)
            assert runs == []
            await frozen.advance(seconds=0.02)
            assert runs == [1]
        try:
            assert not clock_module.is_frozen() and aps_base.datetime is real_datetime
            assert abs(clock_module.utcnow() - datetime.now(UTC)) < timedelta(seconds=5)
            m.reschedule_job(m.get_jobs()[0].id, IntervalTrigger(seconds=0.02))
            # Real timers drive it again.
            await wait_until(lambda: len(runs) >= 3, timeout=60, what="three runs in real time")
        finally:
            await m.shutdown()


def test_the_testing_page_samples_pass_as_a_test_module(tmp_path):
    """docs/testing.md's python blocks, together, are a test module that passes."""
    page = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    code = "\n\n".join(re.findall(r"^```python\n(.*?)^```", page, re.S | re.M))
    tests = re.findall(r"^(?:async )?def (test_\w+)", code, re.M)
    assert len(tests) >= 6
    (tmp_path / "test_from_docs.py").write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_from_docs.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(tests)} passed" in result.stdout, result.stdout
