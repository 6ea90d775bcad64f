"""The manager given hostile input, and when a job or the manager's own bookkeeping fails."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from helpers import wait_until
from nexios import NexiosApp
from nexios.testclient import TestClient

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobNotFoundError,
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


# ---------------------------------------------------------------- 7. CancelledError


async def raises_cancelled_error() -> None:
    raise asyncio.CancelledError()


async def awaits_a_cancelled_task() -> None:
    task = asyncio.ensure_future(asyncio.sleep(60))
    task.cancel()
    await task


class TestCancelledErrorFromTheJob:
    @pytest.mark.parametrize("func", [raises_cancelled_error, awaits_a_cancelled_task])
    async def test_a_job_raising_cancelled_error_is_a_failure_not_a_cancellation(
        self, clocked, scheduler_clock, func
    ):
        job = clocked.add_job(func, IntervalTrigger(seconds=1), id="x")
        await clocked.start()
        await scheduler_clock.advance(2)

        assert job.total_run_count == 3  # every fire ran: the first did not end the task
        assert [run.outcome for run in job.history] == ["error"] * 3
        assert job.last_outcome == "error" and job.status is JobStatus.FAILED
        assert job.last_error is not None and "CancelledError" in job.last_error
        assert "raised by the job" in job.last_error
        assert job.current_instances == 0

    async def test_a_run_cut_short_at_shutdown_is_still_cancelled(self, scheduler_clock):
        scheduler_clock.set(T0)
        m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=0))
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.sleep(60)

        job = m.add_job(hang, IntervalTrigger(hours=1), id="x")
        await m.start()
        await scheduler_clock.run_due(wait=False)
        await asyncio.wait_for(started.wait(), 30)
        await m.shutdown()
        assert job.history[0].outcome == "cancelled"
        assert job.last_error == "run was cancelled"


# ---------------------------------------------------------------- 11. ids


class TestIds:
    @pytest.mark.parametrize(
        "bad",
        ["a/b", "/", "reports/", ".", "..", "tab\there", "nl\n", "\x7f", "\x85", "lone\ud800"],
    )
    async def test_ids_the_admin_api_cannot_serve_are_refused(self, clocked, bad):
        with pytest.raises(ValueError) as caught:
            clocked.add_job(Calls(), IntervalTrigger(hours=1), id=bad)
        message = str(caught.value)
        assert repr(bad) in message
        assert "'/'" in message and "control characters" in message
        assert "'.' or '..'" in message
        with pytest.raises(ValueError):
            clocked.scheduled_job(IntervalTrigger(hours=1), id=bad)(Calls())
        assert clocked.get_jobs() == []

    async def test_an_empty_id_is_refused(self, clocked):
        with pytest.raises(TypeError, match="id must be a non-empty str"):
            clocked.add_job(Calls(), IntervalTrigger(hours=1), id="")
        assert clocked.get_jobs() == []

    @pytest.mark.parametrize(
        "good", ["with space", "50%", "what?", "#tag", "a.b", "...", "a..b", "ünï-cødé", "日報"]
    )
    async def test_other_ids_stay_allowed(self, clocked, good):
        job = clocked.add_job(Calls(), IntervalTrigger(hours=1), id=good)
        assert clocked.get_job(good) == job


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


# ---------------------------------------------------------------- 18. unknown ids


class TestUnknownIds:
    @pytest.mark.parametrize(
        "call",
        [
            lambda m, job_id: m.modify_job(job_id, name="renamed"),
            lambda m, job_id: m.reschedule_job(job_id, IntervalTrigger(seconds=1)),
        ],
        ids=["modify_job", "reschedule_job"],
    )
    async def test_changing_an_unknown_job_raises_job_not_found(self, clocked, call):
        job = clocked.add_job(Calls(), IntervalTrigger(hours=1), id="existing")
        before = job.to_dict()
        with pytest.raises(JobNotFoundError) as caught:
            call(clocked, "nope")
        assert isinstance(caught.value, LookupError)
        assert caught.value.job_id == "nope"
        assert str(caught.value) == "No job by the id of 'nope' was found"
        with pytest.raises(JobNotFoundError):
            call(clocked, 42)
        assert job.to_dict() == before and len(clocked.get_jobs()) == 1


# ---------------------------------------------------------------- 20. bookkeeping failures


def _fail_once(monkeypatch, part: object, step: str) -> list[int]:
    """Make ``part.step`` (a part of the manager) raise the first time it is called; return
    its call count."""
    real = getattr(part, step)
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(f"{step} broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(part, step, flaky)
    return calls


class TestBookkeepingFailures:
    @pytest.mark.parametrize(("part", "step"), [("registry", "ran"), ("listeners", "job_event")])
    async def test_a_failed_bookkeeping_step_does_not_leave_the_job_stuck(
        self, clocked, scheduler_clock, monkeypatch, caplog, part, step
    ):
        calls = Calls()
        job = clocked.add_job(calls, IntervalTrigger(seconds=1), id="x", max_instances=1)
        clocked.add_listener(lambda event: None)  # so that runs emit events
        await clocked.start()
        attempts = _fail_once(monkeypatch, getattr(clocked, part), step)
        with caplog.at_level(logging.ERROR, logger=PACKAGE_LOGGER):
            await scheduler_clock.advance(4)

        assert attempts  # the step was reached, and failed once
        assert calls.count == 5 and job.total_run_count == 5  # every fire ran
        assert job.current_instances == 0 and job.skipped_count == 0
        assert job.last_error is not None and f"{step} broke" in job.last_error
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert any(f"{step} broke" in str(r.exc_info[1]) for r in errors if r.exc_info)

    async def test_a_failed_bookkeeping_step_after_a_run_now_does_not_skip_later_fires(
        self, clocked, scheduler_clock, monkeypatch, caplog
    ):
        calls = Calls()
        job = clocked.add_job(
            calls, IntervalTrigger(seconds=1, start_now=False), id="x", max_instances=1
        )
        await clocked.start()
        _fail_once(monkeypatch, clocked.ledger, "settle")
        with caplog.at_level(logging.ERROR, logger=PACKAGE_LOGGER):
            assert clocked.run_job_now("x")
            await scheduler_clock.run_due()
            await scheduler_clock.advance(3)

        assert calls.count == 4 and job.skipped_count == 0
        assert job.current_instances == 0
        assert job.last_error is not None and "settle broke" in job.last_error
        assert any(r.exc_info for r in caplog.records if r.levelno == logging.ERROR)

    async def test_a_plain_function_that_raises_after_its_timeout_has_its_error_recorded(
        self, clocked, scheduler_clock, caplog
    ):
        release = threading.Event()

        def slow_then_broken() -> None:
            release.wait(30)
            raise ValueError("gave up on the upstream")

        job = clocked.add_job(slow_then_broken, IntervalTrigger(hours=1), id="x", timeout=0.05)
        await clocked.start()
        with caplog.at_level(logging.WARNING, logger=PACKAGE_LOGGER):
            await scheduler_clock.run_due(wait=False)
            await wait_until(
                lambda: any("still running after" in r.getMessage() for r in caplog.records),
                timeout=30,
            )
            release.set()
            await wait_until(lambda: job.current_instances == 0, timeout=30)

        assert job.last_outcome == "timeout"
        assert "timed out after 0.05s" in job.last_error
        assert "ValueError: gave up on the upstream" in job.last_error
        assert job.history[0].error == job.last_error
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
        assert any(isinstance(r.exc_info[1], ValueError) for r in errors)

    async def test_an_async_job_raising_while_cut_off_at_its_timeout_has_its_error_recorded(
        self, clocked, scheduler_clock, caplog
    ):
        never = asyncio.Event()

        async def cleans_up_badly() -> None:
            try:
                await never.wait()
            except asyncio.CancelledError:
                raise OSError("could not close the connection") from None

        job = clocked.add_job(cleans_up_badly, IntervalTrigger(hours=1), id="x", timeout=0.05)
        await clocked.start()
        with caplog.at_level(logging.WARNING, logger=PACKAGE_LOGGER):
            await scheduler_clock.run_due()  # waits for the run, cut off after 0.05 s

        assert job.last_outcome == "timeout" and job.current_instances == 0
        assert job.last_error == (
            "timed out after 0.05s, then raised OSError: could not close the connection"
        )
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
        assert any(isinstance(r.exc_info[1], OSError) for r in errors)
