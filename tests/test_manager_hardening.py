"""The manager given hostile input, and when a job or the manager's own bookkeeping fails."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from nexios import NexiosApp
from nexios.testclient import TestClient

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerManager,
    TriggerError,
    setup_scheduler,
)
from nexios_contrib_scheduler.admin import scheduler_router
from nexios_contrib_scheduler.triggers import IntervalSchedule

UTC = timezone.utc
T0 = datetime(2030, 1, 1, tzinfo=UTC)
PACKAGE_LOGGER = "nexios_contrib_scheduler"


class Calls:
    """An async job that counts its runs, and each run's function by name."""

    def __init__(self, label: str = "job") -> None:
        self.label = label
        self.runs: list[str] = []

    async def __call__(self) -> None:
        self.runs.append(self.label)

    @property
    def count(self) -> int:
        return len(self.runs)


@pytest.fixture
async def clocked(scheduler_clock):
    """A manager in UTC, driven by the frozen clock, which starts at T0."""
    scheduler_clock.set(T0)
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
    yield m
    await m.shutdown()


@pytest.fixture
async def new_york(scheduler_clock):
    """A manager in New York time, driven by the frozen clock, which starts at T0."""
    scheduler_clock.set(T0)
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2, timezone="America/New_York"))
    yield m
    await m.shutdown()


# ---------------------------------------------------------------- 2. ended triggers


class TestEndedTriggers:
    async def test_rescheduling_to_an_ended_trigger_stops_the_old_schedule(
        self, clocked, scheduler_clock
    ):
        calls = Calls()
        job = clocked.add_job(calls, IntervalTrigger(seconds=1), id="x")
        await clocked.start()
        await scheduler_clock.advance(3)
        assert calls.count == 4  # at 0, 1, 2 and 3 s

        view = clocked.reschedule_job("x", IntervalTrigger(seconds=0.2, end_date=T0))
        assert view is not None and view.status is JobStatus.COMPLETED
        await scheduler_clock.advance(5)
        assert calls.count == 4  # the old schedule fires no more
        assert job.status is JobStatus.COMPLETED and job.next_run_time is None
        assert clocked.apscheduler.get_job("x") is None

    async def test_replacing_with_an_ended_trigger_runs_neither_function(
        self, clocked, scheduler_clock
    ):
        old, new = Calls("old"), Calls("new")
        first = clocked.add_job(old, IntervalTrigger(seconds=1), id="x")
        await clocked.start()
        await scheduler_clock.advance(1)
        assert old.count == 2

        replaced = clocked.add_job(
            new, IntervalTrigger(seconds=1, end_date=T0), id="x", replace_existing=True
        )
        assert replaced.status is JobStatus.COMPLETED
        assert first.status is JobStatus.CANCELLED
        await scheduler_clock.advance(5)
        assert (old.count, new.count) == (2, 0)
        assert replaced.status is JobStatus.COMPLETED and replaced.next_run_time is None

    async def test_replacing_a_paused_job_with_an_ended_trigger_completes_it(
        self, clocked, scheduler_clock
    ):
        old, new = Calls("old"), Calls("new")
        clocked.add_job(old, IntervalTrigger(seconds=1), id="x")
        await clocked.start()
        clocked.pause_job("x")
        ended = IntervalTrigger(seconds=1, end_date=T0 - timedelta(hours=1))
        replaced = clocked.add_job(new, ended, id="x", replace_existing=True)
        assert clocked.apscheduler.get_job("x") is None  # the old, paused schedule is gone
        assert clocked.resume_job("x") is False  # finished: nothing left to resume
        await scheduler_clock.advance(3)
        assert (old.count, new.count) == (0, 0)
        assert replaced.status is JobStatus.COMPLETED

    def test_putting_an_ended_trigger_over_http_stops_the_job(self, scheduler_clock):
        scheduler_clock.set(T0)
        calls = Calls()
        app = NexiosApp()
        scheduler = setup_scheduler(app, SchedulerConfig(shutdown_timeout=2))
        job = scheduler.add_job(calls, IntervalTrigger(seconds=1), id="x")
        app.mount_router(scheduler_router(allow_unauthenticated=True))
        ended = IntervalTrigger(seconds=0.2, end_date=T0)
        with TestClient(app) as client:
            asyncio.run(scheduler_clock.advance(2))
            assert calls.count == 3
            response = client.put("/scheduler/jobs/x/trigger", json=ended.to_dict())
            assert response.status_code == 200
            assert response.json()["status"] == "COMPLETED"
            asyncio.run(scheduler_clock.advance(5))
        assert calls.count == 3 and job.status is JobStatus.COMPLETED


# ---------------------------------------------------------------- 3. failed replaces


class _BrokenSchedule(IntervalSchedule):
    def first_fire_time(self, now: datetime) -> datetime | None:
        raise RuntimeError("this schedule cannot compute its first fire")


class BrokenTrigger(IntervalTrigger):
    """A trigger whose first fire time cannot be computed."""

    def to_apscheduler(self, tz: Any, now: datetime) -> IntervalSchedule:
        schedule = super().to_apscheduler(tz, now)
        schedule.__class__ = _BrokenSchedule
        return schedule


def _replace_with(trigger_factory):
    return lambda m, func: m.add_job(func, trigger_factory(), id="x", replace_existing=True)


def _reschedule_to(trigger_factory):
    return lambda m, func: m.reschedule_job("x", trigger_factory())


def _refused_by_apscheduler(call):
    """``call`` while APScheduler refuses the job it is handed."""

    def attempt(m, func):
        def refuse(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("the job store refused the job")

        m.apscheduler.add_job = refuse
        try:
            call(m, func)
        finally:
            del m.apscheduler.add_job

    return attempt


FAILED_CHANGES = [
    (
        "replace: naive date past the calendar in New York",
        _replace_with(lambda: DateTimeTrigger("9999-12-31T23:00")),
        TriggerError,
    ),
    ("replace: first fire raises", _replace_with(lambda: BrokenTrigger(seconds=5)), RuntimeError),
    (
        "replace: bad option",
        lambda m, func: m.add_job(
            func, IntervalTrigger(seconds=5), id="x", replace_existing=True, max_instances=0
        ),
        ValueError,
    ),
    (
        "replace: refused by the job store",
        _refused_by_apscheduler(_replace_with(lambda: IntervalTrigger(seconds=5))),
        RuntimeError,
    ),
    (
        "reschedule: naive date past the calendar in New York",
        _reschedule_to(lambda: DateTimeTrigger("9999-12-31T23:00")),
        TriggerError,
    ),
    (
        "reschedule: first fire raises",
        _reschedule_to(lambda: BrokenTrigger(seconds=5)),
        RuntimeError,
    ),
    (
        "reschedule: refused by the job store",
        _refused_by_apscheduler(_reschedule_to(lambda: CronTrigger("*/5 * * * *"))),
        RuntimeError,
    ),
    (
        "modify: one bad value among good ones",
        lambda m, func: m.modify_job("x", name="renamed", max_instances=0),
        ValueError,
    ),
]


# Every case with the scheduler running, and those that do not need APScheduler's job store
# (a stopped scheduler hands it nothing) with the scheduler stopped too.
FAILED_CHANGE_CASES = [
    pytest.param(change, error, running, id=f"{name}-{'running' if running else 'stopped'}")
    for name, change, error in FAILED_CHANGES
    for running in (True, False)
    if running or "job store" not in name
]


class TestFailedChangesChangeNothing:
    @pytest.mark.parametrize(("change", "error", "running"), FAILED_CHANGE_CASES)
    async def test_a_failed_change_leaves_the_existing_job_untouched(
        self, new_york, scheduler_clock, change, error, running
    ):
        calls, other = Calls("existing"), Calls("replacement")
        job = new_york.add_job(calls, IntervalTrigger(seconds=1), id="x")
        if running:
            await new_york.start()
            await scheduler_clock.advance(1)
        before = job.to_dict()
        times_before = job.next_run_times(3)

        with pytest.raises(error):
            change(new_york, other)

        assert job.to_dict() == before
        assert job.next_run_times(3) == times_before
        assert new_york.get_job("x") == job
        if not running:
            await new_york.start()
        count = calls.count
        await scheduler_clock.advance(2)
        runs = [run.scheduled_time for run in reversed(job.history[: calls.count - count])]
        assert runs == [t for t in times_before if t <= scheduler_clock.now()]
        assert len(runs) >= 2  # still fires, on its own schedule
        assert other.count == 0
        assert job.status is JobStatus.ACTIVE


# ---------------------------------------------------------------- 4. resume after the end


class TestResumeAfterTheEnd:
    @pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
    async def test_resuming_after_the_end_date_passed_completes_the_job(
        self, clocked, scheduler_clock, running
    ):
        end = T0 + timedelta(seconds=5)
        paused, never_paused = Calls("paused"), Calls("never paused")
        job = clocked.add_job(paused, IntervalTrigger(seconds=1, end_date=end), id="p")
        twin = clocked.add_job(never_paused, IntervalTrigger(seconds=1, end_date=end), id="t")
        await clocked.start()
        await scheduler_clock.advance(1)
        assert clocked.pause_job("p")
        await scheduler_clock.advance(9)  # past the end date
        if not running:
            await clocked.shutdown()

        assert clocked.resume_job("p") is True
        if not running:
            await clocked.start()
        await scheduler_clock.advance(5)

        assert twin.status is JobStatus.COMPLETED
        assert job.status is JobStatus.COMPLETED and job.next_run_time is None
        assert paused.count == 2  # at 0 and 1 s, before the pause
        assert clocked.pause_job("p") is False and clocked.resume_job("p") is False


# ---------------------------------------------------------------- 16. the logger's level


class TestLogLevel:
    def test_a_level_set_on_the_package_logger_survives_new_schedulers(self):
        package_logger = logging.getLogger(PACKAGE_LOGGER)
        saved = package_logger.level
        try:
            package_logger.setLevel(logging.ERROR)
            SchedulerManager()
            SchedulerManager(config=SchedulerConfig(timezone="Europe/Paris"))
            assert package_logger.level == logging.ERROR
            SchedulerManager(config=SchedulerConfig(log_level="DEBUG"))
            assert package_logger.level == logging.DEBUG  # given explicitly: applied
        finally:
            package_logger.setLevel(saved)
