"""modify_job, the scheduled_job decorator, next_run_times, timeout, pause_on_failure,
max_runs, jitter and bounded schedules."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import random
import threading
from datetime import datetime, timedelta, timezone

import pytest
from helpers import wait_until

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobNotFoundError,
    JobStatus,
    SchedulerConfig,
    SchedulerDepend,
    SchedulerManager,
    TriggerError,
)
from nexios_contrib_scheduler.triggers import trigger_from_dict

UTC = timezone.utc
T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def noop() -> None:
    pass


async def takes_any(*args, **kwargs) -> None:
    pass


async def takes_two(a, b) -> None:
    pass


class Calls:
    """An async job recording its arguments and the (frozen) time of each call."""

    def __init__(self, clock=None) -> None:
        self.clock = clock
        self.calls: list[tuple[tuple, dict]] = []
        self.times: list[datetime] = []

    async def __call__(self, *args, **kwargs) -> None:
        self.calls.append((args, kwargs))
        if self.clock is not None:
            self.times.append(self.clock.now())

    @property
    def count(self) -> int:
        return len(self.calls)


@pytest.fixture
async def manager():
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
    yield m
    await m.shutdown()


@pytest.fixture
async def clocked(scheduler_clock):
    """A manager driven by the frozen clock, which starts at T0."""
    scheduler_clock.set(T0)
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
    yield m
    await m.shutdown()


# ---------------------------------------------------------------- modify_job


class TestModifyJob:
    async def test_changes_the_options_and_keeps_the_rest(self, manager):
        job = manager.add_job(
            takes_any, IntervalTrigger(hours=1), id="x", name="old", max_instances=2
        )
        view = manager.modify_job(
            "x",
            name="new",
            args=(1, 2),
            kwargs={"k": "v"},
            max_instances=5,
            misfire_grace_time=7.5,
            coalesce=False,
            timeout=3,
        )
        assert view == job
        assert (job.name, job.args, job.kwargs) == ("new", (1, 2), {"k": "v"})
        assert (job.max_instances, job.misfire_grace_time, job.coalesce) == (5, 7.5, False)
        assert job.timeout == 3
        assert job.to_dict()["timeout"] == 3
        manager.modify_job("x", name="newer")
        assert (job.name, job.max_instances, job.timeout) == ("newer", 5, 3)

    async def test_none_is_a_value_not_the_default(self, manager):
        job = manager.add_job(
            noop, IntervalTrigger(hours=1), id="x", timeout=5, misfire_grace_time=10
        )
        manager.modify_job("x", timeout=None, misfire_grace_time=None)
        assert job.timeout is None and job.misfire_grace_time is None

    async def test_keeps_apscheduler_in_sync_when_running(self, manager):
        manager.add_job(Calls(), IntervalTrigger(hours=1), id="x")
        await manager.start()
        manager.modify_job(
            "x",
            name="renamed",
            max_instances=4,
            coalesce=False,
            misfire_grace_time=2.5,
            kwargs={"a": 1},
        )
        aps = manager.apscheduler.get_job("x")
        assert (aps.name, aps.max_instances, aps.coalesce) == ("renamed", 4, False)
        assert aps.misfire_grace_time == 3  # APScheduler takes whole seconds; ours is exact
        assert aps.kwargs == {"a": 1}

    async def test_changes_made_before_start_reach_apscheduler(self, manager):
        manager.add_job(noop, IntervalTrigger(hours=1), id="x")
        manager.modify_job("x", max_instances=6, name="later")
        await manager.start()
        aps = manager.apscheduler.get_job("x")
        assert (aps.name, aps.max_instances) == ("later", 6)

    async def test_runs_use_the_new_arguments(self, clocked, scheduler_clock):
        calls = Calls()
        clocked.add_job(calls, IntervalTrigger(minutes=1, start_now=False), id="x", args=(1,))
        await clocked.start()
        await scheduler_clock.advance(minutes=1)
        clocked.modify_job("x", args=(2,), kwargs={"k": 3})
        await scheduler_clock.advance(minutes=1)
        assert calls.calls == [((1,), {}), ((2,), {"k": 3})]

    async def test_unknown_id_raises_not_found_and_changes_nothing(self, manager):
        job = manager.add_job(noop, IntervalTrigger(hours=1), id="x")
        with pytest.raises(JobNotFoundError, match="No job by the id of 'nope' was found"):
            manager.modify_job("nope", name="y")
        with pytest.raises(JobNotFoundError, match="42"):
            manager.modify_job(42, name="y")
        assert job.name == "noop" and len(manager.get_jobs()) == 1

    @pytest.mark.parametrize(
        ("changes", "error", "match"),
        [
            ({"max_instances": 0}, ValueError, "max_instances must be at least 1"),
            ({"max_instances": 1.5}, TypeError, "max_instances must be a positive int"),
            ({"misfire_grace_time": 0}, ValueError, "misfire_grace_time must be a positive"),
            ({"misfire_grace_time": "30"}, TypeError, "misfire_grace_time must be a number"),
            ({"coalesce": "yes"}, TypeError, "coalesce must be True or False"),
            ({"timeout": -1}, ValueError, "timeout must be a positive number"),
            ({"timeout": float("inf")}, ValueError, "timeout must be a positive number"),
            ({"timeout": True}, TypeError, "timeout must be a number"),
            ({"args": "ab"}, TypeError, "args must be a tuple or list"),
            ({"kwargs": [1]}, TypeError, "kwargs must be a mapping"),
            ({"name": ""}, TypeError, "name must be a non-empty str"),
            ({"name": None}, TypeError, "name must be a non-empty str"),
        ],
    )
    async def test_bad_values_change_nothing(self, manager, changes, error, match):
        job = manager.add_job(noop, IntervalTrigger(hours=1), id="x", name="kept")
        before = job.to_dict()
        with pytest.raises(error, match=match):
            manager.modify_job("x", **{"name": "changed", **changes})
        assert job.to_dict() == before

    async def test_unknown_option_is_a_type_error(self, manager):
        manager.add_job(noop, IntervalTrigger(hours=1), id="x")
        with pytest.raises(TypeError):
            manager.modify_job("x", trigger=IntervalTrigger(seconds=1))

    async def test_arguments_the_function_cannot_take_are_refused_stopped(self, manager):
        job = manager.add_job(takes_two, IntervalTrigger(hours=1), id="x", args=(1, 2))
        with pytest.raises(ValueError, match="takes_two cannot be called"):
            manager.modify_job("x", args=(1, 2, 3), name="changed")
        assert job.args == (1, 2) and job.name == "takes_two"

    async def test_arguments_the_function_cannot_take_are_refused_when_running(self, manager):
        job = manager.add_job(takes_two, IntervalTrigger(hours=1), id="x", args=(1, 2))
        await manager.start()
        with pytest.raises(ValueError):
            manager.modify_job("x", args=(1, 2, 3), name="changed")
        assert job.args == (1, 2) and job.name == "takes_two"
        assert manager.apscheduler.get_job("x").args == (1, 2)

    async def test_through_the_dependency(self, manager):
        manager.add_job(noop, IntervalTrigger(hours=1), id="x")
        dep = SchedulerDepend(manager)
        assert dep.modify_job("x", name="via-di").name == "via-di"
        with pytest.raises(JobNotFoundError, match="'nope'"):
            dep.modify_job("nope", name="y")


# ---------------------------------------------------------------- decorator


class TestScheduledJobDecorator:
    async def test_registers_before_start_and_returns_the_function(self, clocked, scheduler_clock):
        calls = Calls()

        async def tick():
            await calls()

        decorated = clocked.scheduled_job(
            IntervalTrigger(minutes=5, start_now=False), id="tick", name="ticker", max_runs=2
        )(tick)
        assert decorated is tick
        job = clocked.get_job("tick")
        assert (job.name, job.func, job.max_runs) == ("ticker", tick, 2)
        await clocked.start()
        await scheduler_clock.advance(minutes=30)
        assert calls.count == 2 and job.status is JobStatus.COMPLETED

    async def test_registers_after_start(self, manager):
        await manager.start()

        @manager.scheduled_job(IntervalTrigger(hours=1, start_now=False), id="late")
        def report() -> None:
            pass

        assert callable(report) and report.__name__ == "report"
        assert manager.apscheduler.get_job("late") is not None

    async def test_bad_options_fail_at_decoration(self, manager):
        with pytest.raises(TypeError):
            manager.scheduled_job(IntervalTrigger(hours=1), bogus=1)(noop)
        with pytest.raises(TypeError, match="IntervalTrigger, CronTrigger or DateTimeTrigger"):
            manager.scheduled_job("0 * * * *")(noop)
        with pytest.raises(ValueError, match="max_instances"):
            manager.scheduled_job(IntervalTrigger(hours=1), max_instances=0)(noop)
        assert manager.get_jobs() == []

    async def test_through_the_dependency(self, manager):
        dep = SchedulerDepend(manager)

        @dep.scheduled_job(CronTrigger("@daily"), id="daily")
        async def nightly() -> None:
            pass

        assert manager.get_job("daily").func is nightly


# ---------------------------------------------------------------- next_run_times


class TestNextRunTimes:
    async def test_interval_follows_its_grid(self, clocked):
        job = clocked.add_job(noop, IntervalTrigger(minutes=10, start_now=False))
        times = job.next_run_times(3)
        assert times == [T0 + timedelta(minutes=10 * k) for k in (1, 2, 3)]
        assert times[0] == job.next_run_time
        await clocked.start()
        assert job.next_run_times(3) == times

    async def test_in_the_scheduler_zone(self, scheduler_clock):
        scheduler_clock.set(T0)
        m = SchedulerManager(config=SchedulerConfig(timezone="Europe/Paris"))
        job = m.add_job(noop, CronTrigger("30 9 * * *"))
        first, second = job.next_run_times(2)
        assert str(first.tzinfo) == "Europe/Paris"
        assert (first.hour, first.minute, second - first) == (9, 30, timedelta(days=1))

    async def test_cron_matches_the_trigger_preview(self, clocked):
        trigger = CronTrigger("15 */6 * * *")
        job = clocked.add_job(noop, trigger)
        assert job.next_run_times(5) == trigger.next_fire_times(5, start=T0)

    async def test_one_shot_and_count_edges(self, clocked):
        job = clocked.add_job(noop, DateTimeTrigger(T0 + timedelta(hours=1)))
        assert job.next_run_times(3) == [T0 + timedelta(hours=1)]
        assert job.next_run_times(0) == []
        with pytest.raises(ValueError, match="zero or more"):
            job.next_run_times(-1)
        with pytest.raises(TypeError):
            job.next_run_times("3")

    async def test_empty_while_paused_removed_or_finished(self, clocked, scheduler_clock):
        paused = clocked.add_job(noop, IntervalTrigger(hours=1), id="p")
        clocked.pause_job("p")
        assert paused.next_run_times(3) == []
        removed = clocked.add_job(noop, IntervalTrigger(hours=1), id="r")
        clocked.remove_job("r")
        assert removed.next_run_times(3) == []
        once = clocked.add_job(noop, DateTimeTrigger(T0 + timedelta(minutes=1)))
        await clocked.start()
        await scheduler_clock.advance(minutes=2)
        assert once.status is JobStatus.COMPLETED and once.next_run_times(3) == []

    async def test_stops_at_end_date_and_max_runs(self, clocked):
        bounded = clocked.add_job(
            noop,
            IntervalTrigger(minutes=10, start_now=False, end_date=T0 + timedelta(minutes=35)),
        )
        assert len(bounded.next_run_times(10)) == 3
        limited = clocked.add_job(noop, CronTrigger("* * * * *"), max_runs=4)
        assert len(limited.next_run_times(10)) == 4

    async def test_with_jitter_the_first_is_the_drawn_time(self, clocked):
        job = clocked.add_job(noop, IntervalTrigger(minutes=10, jitter=60))
        first, *rest = job.next_run_times(3)
        assert first == job.next_run_time
        assert T0 <= first <= T0 + timedelta(seconds=60)
        assert rest == [T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)]


# ---------------------------------------------------------------- timeout


class TestTimeout:
    async def test_a_coroutine_over_its_timeout_is_cancelled_and_recorded(self, manager):
        cancelled = []

        async def hang():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        job = manager.add_job(hang, IntervalTrigger(hours=1), timeout=0.05, name="hanger")
        await manager.start()
        await wait_until(lambda: job.total_run_count == 1 and job.current_instances == 0)
        assert cancelled == [True]
        run = job.history[0]
        assert run.outcome == "timeout" and run.error == "timed out after 0.05s"
        assert 0.04 <= run.duration < 25  # cut at its timeout, not the job's 30 s
        assert job.status is JobStatus.FAILED and job.last_error == "timed out after 0.05s"
        assert (job.failure_count, job.consecutive_failures, job.success_count) == (1, 1, 0)
        assert manager.running

    async def test_a_run_within_its_timeout_succeeds(self, manager):
        job = manager.add_job(noop, IntervalTrigger(hours=1), timeout=5)
        await manager.start()
        await wait_until(lambda: job.success_count == 1)
        assert job.history[0].outcome == "success"

    async def test_a_job_that_swallows_the_cancellation_still_timed_out(self, manager):
        async def stubborn():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)

        job = manager.add_job(stubborn, IntervalTrigger(hours=1), timeout=0.05)
        await manager.start()
        await wait_until(lambda: job.total_run_count == 1 and job.current_instances == 0)
        assert job.history[0].outcome == "timeout"

    async def test_the_next_run_of_the_same_submission_is_not_cancelled(
        self, clocked, scheduler_clock
    ):
        # coalesce=False: one submission runs two missed fires in a row, in one task.
        outcomes = []

        async def first_hangs():
            if not outcomes:
                outcomes.append("hang")
                await asyncio.sleep(30)
            outcomes.append("ran")
            if hasattr(asyncio.current_task(), "cancelling"):
                assert asyncio.current_task().cancelling() == 0

        job = clocked.add_job(
            first_hangs,
            IntervalTrigger(minutes=1, start_now=False),
            coalesce=False,
            misfire_grace_time=3600,
            timeout=0.05,
        )
        await clocked.start()
        await scheduler_clock.jump(minutes=2, seconds=30)
        assert [r.outcome for r in job.history] == ["success", "timeout"]
        assert outcomes == ["hang", "ran"]

    async def test_default_comes_from_job_defaults(self):
        m = SchedulerManager(config=SchedulerConfig(job_defaults={"timeout": 12}))
        assert m.add_job(noop, IntervalTrigger(hours=1)).timeout == 12
        assert m.add_job(noop, IntervalTrigger(hours=1), timeout=3).timeout == 3
        assert SchedulerManager().add_job(noop, IntervalTrigger(hours=1)).timeout is None

    @pytest.mark.parametrize(
        ("value", "error"),
        [(0, ValueError), (-1, ValueError), ("5", TypeError), (False, TypeError)],
    )
    async def test_bad_values(self, manager, value, error):
        with pytest.raises(error, match="timeout"):
            manager.add_job(noop, IntervalTrigger(hours=1), timeout=value)
        with pytest.raises(error, match="timeout"):
            SchedulerConfig(job_defaults={"timeout": value})
        assert manager.get_jobs() == []

    async def test_a_plain_function_keeps_its_slot_until_it_returns(self, manager):
        release = threading.Event()

        def blocking():
            release.wait(10)

        job = manager.add_job(
            blocking, IntervalTrigger(hours=1), timeout=0.05, max_instances=1, id="sync"
        )
        await manager.start()
        await wait_until(lambda: job.current_instances == 1)
        await asyncio.sleep(0.15)  # well past the timeout: the thread cannot be stopped
        assert job.current_instances == 1
        assert manager.run_job_now("sync") is False
        release.set()
        await wait_until(lambda: job.current_instances == 0 and job.history)
        run = job.history[0]
        assert run.outcome == "timeout"
        assert run.error.startswith("timed out after 0.05s (a plain function cannot be cancelled")
        assert job.status is JobStatus.FAILED
        assert manager.run_job_now("sync") is True

    async def test_a_quick_plain_function_succeeds(self, manager):
        job = manager.add_job(lambda: None, IntervalTrigger(hours=1), timeout=5)
        await manager.start()
        await wait_until(lambda: job.success_count == 1)

    async def test_shutdown_cancellation_is_not_a_timeout(self):
        m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=0.05))

        async def hang():
            await asyncio.sleep(30)

        job = m.add_job(hang, IntervalTrigger(hours=1), timeout=20)
        await m.start()
        await wait_until(lambda: job.current_instances == 1)
        await m.shutdown()
        assert job.history[0].outcome == "cancelled"
        assert job.current_instances == 0


# ---------------------------------------------------------------- pause_on_failure


async def boom() -> None:
    raise ValueError("boom")


class TestPauseOnFailure:
    async def test_a_failed_run_pauses_the_job_until_resumed(self, clocked, scheduler_clock):
        job = clocked.add_job(
            boom, IntervalTrigger(minutes=1, start_now=False), id="x", pause_on_failure=True
        )
        await clocked.start()
        await scheduler_clock.advance(minutes=1)
        assert job.total_run_count == 1
        assert job.status is JobStatus.FAILED
        assert job.next_run_time is None and job.next_run_times(2) == []
        assert clocked.apscheduler.get_job("x").next_run_time is None
        assert job.paused_reason == "paused after a failed run: ValueError: boom"
        await scheduler_clock.advance(minutes=10, seconds=30)
        assert job.total_run_count == 1
        assert clocked.get_jobs(status="FAILED") == [job]

        assert clocked.resume_job("x") is True
        assert job.status is JobStatus.ACTIVE and job.paused_reason is None
        assert job.next_run_time == T0 + timedelta(minutes=12)  # the next on its grid
        await scheduler_clock.advance(minutes=1)
        assert job.total_run_count == 2 and job.status is JobStatus.FAILED

    async def test_off_by_default_the_job_keeps_firing(self, clocked, scheduler_clock):
        job = clocked.add_job(boom, IntervalTrigger(minutes=1, start_now=False))
        assert job.pause_on_failure is False
        await clocked.start()
        await scheduler_clock.advance(minutes=3)
        assert job.total_run_count == 3

    async def test_from_job_defaults_and_timeouts_count(self, scheduler_clock):
        scheduler_clock.set(T0)
        m = SchedulerManager(config=SchedulerConfig(job_defaults={"pause_on_failure": True}))

        async def slow():
            await asyncio.sleep(30)

        job = m.add_job(slow, IntervalTrigger(minutes=1, start_now=False), timeout=0.02)
        assert job.pause_on_failure is True
        await m.start()
        try:
            await scheduler_clock.advance(minutes=5)
            assert job.total_run_count == 1 and job.history[0].outcome == "timeout"
            assert job.next_run_time is None
        finally:
            await m.shutdown()

    async def test_stays_paused_across_a_restart(self, clocked, scheduler_clock):
        job = clocked.add_job(
            boom, IntervalTrigger(minutes=1, start_now=False), id="x", pause_on_failure=True
        )
        await clocked.start()
        await scheduler_clock.advance(minutes=1)
        await clocked.shutdown()
        await clocked.start()
        await scheduler_clock.advance(minutes=5)
        assert job.total_run_count == 1 and job.next_run_time is None

    async def test_a_manual_success_does_not_unpause(self, clocked, scheduler_clock):
        fail = [True]

        async def flaky():
            if fail.pop() if fail else False:
                raise ValueError("once")

        job = clocked.add_job(
            flaky, IntervalTrigger(minutes=1, start_now=False), id="x", pause_on_failure=True
        )
        await clocked.start()
        await scheduler_clock.advance(minutes=1)
        assert clocked.run_job_now("x") is True
        await scheduler_clock.run_due()
        assert job.success_count == 1
        assert job.status is JobStatus.FAILED and job.next_run_time is None

    async def test_bad_value(self, manager):
        with pytest.raises(TypeError, match="pause_on_failure must be True or False"):
            manager.add_job(noop, IntervalTrigger(hours=1), pause_on_failure="yes")


# ---------------------------------------------------------------- max_runs


class TestMaxRuns:
    async def test_completes_after_n_runs(self, clocked, scheduler_clock):
        calls = Calls()
        job = clocked.add_job(calls, IntervalTrigger(minutes=1), id="x", max_runs=3)
        assert job.max_runs == 3 and job.to_dict()["max_runs"] == 3
        await clocked.start()
        await scheduler_clock.advance(minutes=10)
        assert calls.count == 3
        assert job.status is JobStatus.COMPLETED
        assert job.next_run_time is None
        assert clocked.apscheduler.get_job("x") is None
        assert clocked.run_job_now("x") is False

    async def test_a_backlog_runs_only_the_remaining_runs(self, clocked, scheduler_clock):
        calls = Calls()
        job = clocked.add_job(
            calls,
            IntervalTrigger(minutes=1, start_now=False),
            coalesce=False,
            misfire_grace_time=3600,
            max_runs=2,
        )
        await clocked.start()
        await scheduler_clock.jump(minutes=5)
        assert calls.count == 2 and job.status is JobStatus.COMPLETED

    async def test_manual_runs_count(self, clocked, scheduler_clock):
        job = clocked.add_job(noop, IntervalTrigger(hours=1, start_now=False), id="x", max_runs=2)
        await clocked.start()
        assert clocked.run_job_now("x") is True
        await scheduler_clock.run_due()
        assert job.status is JobStatus.ACTIVE
        await scheduler_clock.advance(hours=5)
        assert job.total_run_count == 2 and job.status is JobStatus.COMPLETED

    async def test_rescheduling_a_job_that_used_its_runs_completes_it_again(
        self, clocked, scheduler_clock
    ):
        job = clocked.add_job(noop, IntervalTrigger(minutes=1), id="x", max_runs=1)
        await clocked.start()
        await scheduler_clock.run_due()
        assert job.status is JobStatus.COMPLETED
        clocked.reschedule_job("x", IntervalTrigger(minutes=5))
        assert job.status is JobStatus.COMPLETED and job.next_run_time is None
        assert clocked.apscheduler.get_job("x") is None

    async def test_a_failed_last_run_ends_failed(self, clocked, scheduler_clock):
        job = clocked.add_job(boom, IntervalTrigger(minutes=1), max_runs=1)
        await clocked.start()
        await scheduler_clock.run_due()
        assert job.status is JobStatus.FAILED and job.next_run_time is None

    @pytest.mark.parametrize(
        ("value", "error"), [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)]
    )
    async def test_bad_values(self, manager, value, error):
        with pytest.raises(error, match="max_runs"):
            manager.add_job(noop, IntervalTrigger(hours=1), max_runs=value)
        assert manager.get_jobs() == []


# ---------------------------------------------------------------- jitter


class TestJitter:
    async def test_each_run_is_delayed_within_the_jitter_without_drift(
        self, clocked, scheduler_clock
    ):
        job = clocked.add_job(noop, IntervalTrigger(minutes=10, start_now=False, jitter=120))
        await clocked.start()
        await scheduler_clock.advance(hours=5, minutes=5)
        runs = list(reversed(job.history))
        assert len(runs) == 20  # the history holds 20 runs; 30 fired
        first_grid = job.total_run_count - len(runs) + 1
        offsets = []
        for k, run in enumerate(runs, start=first_grid):
            grid = T0 + timedelta(minutes=10 * k)
            assert grid <= run.scheduled_time <= grid + timedelta(seconds=120)
            assert run.start == run.scheduled_time  # the clock ran it at its jittered time
            offsets.append((run.scheduled_time - grid).total_seconds())
        assert len(set(offsets)) > 1  # the delay is drawn for each run
        assert job.total_run_count == 30

    async def test_cron_jitter(self, clocked, scheduler_clock):
        job = clocked.add_job(noop, CronTrigger("0 * * * *", jitter=300))
        await clocked.start()
        await scheduler_clock.advance(hours=6, minutes=10)
        assert job.total_run_count == 7
        for run in job.history:
            top = run.scheduled_time.replace(minute=0, second=0, microsecond=0)
            assert run.scheduled_time - top <= timedelta(seconds=300)

    async def test_a_jitter_longer_than_the_interval_never_passes_the_next_fire(
        self, clocked, scheduler_clock, monkeypatch
    ):
        monkeypatch.setattr(random, "uniform", lambda a, b: b)  # always the longest delay
        job = clocked.add_job(noop, IntervalTrigger(seconds=10, start_now=False, jitter=60))
        assert job.next_run_time == T0 + timedelta(seconds=20) - timedelta(microseconds=1)
        await clocked.start()
        await scheduler_clock.advance(seconds=100)
        assert job.total_run_count == 9  # one per interval, no bunching, no skipping
        for k, run in enumerate(reversed(job.history), start=1):
            assert run.scheduled_time == T0 + timedelta(seconds=10 * (k + 1), microseconds=-1)

    async def test_jitter_never_passes_end_date(self, monkeypatch):
        monkeypatch.setattr(random, "uniform", lambda a, b: b)
        end = T0 + timedelta(seconds=25)
        trigger = IntervalTrigger(seconds=10, start_now=False, jitter=8, end_date=end)
        schedule = trigger.to_apscheduler(UTC, T0)
        first = schedule.first_fire_time(T0)
        second = schedule.get_next_fire_time(first, first)
        assert (first, second) == (T0 + timedelta(seconds=18), end)
        assert schedule.get_next_fire_time(second, second) is None

    async def test_the_schedule_pickles_for_persistent_stores(self, clocked):
        clocked.add_job(module_level_job, IntervalTrigger(seconds=30, jitter=5), id="p")
        clocked.add_job(
            module_level_job,
            CronTrigger(
                "*/5 * * * *", jitter=10, start_date=T0, end_date="2031-01-01T00:00:00+00:00"
            ),
            id="c",
        )
        await clocked.start()
        for job_id in ("p", "c"):
            aps = clocked.apscheduler.get_job(job_id)
            copy = pickle.loads(pickle.dumps(aps))
            now = T0 + timedelta(hours=1)
            assert copy.trigger.next_base(None, now) == aps.trigger.next_base(None, now)
            assert copy.trigger.jitter == aps.trigger.jitter

    def test_to_dict_describe_and_equality(self):
        trigger = IntervalTrigger(seconds=30, jitter=5)
        assert trigger.to_dict()["jitter"] == 5
        assert trigger.describe() == "Every 30 seconds, with up to 5s of jitter"
        assert trigger != IntervalTrigger(seconds=30)
        assert trigger == IntervalTrigger(seconds=30, jitter=5)
        assert trigger_from_dict(trigger.to_dict()) == trigger
        cron = CronTrigger("@hourly", jitter=2.5)
        assert cron.to_dict()["jitter"] == 2.5 and cron != CronTrigger("@hourly")
        assert cron.describe().endswith(", with up to 2.5s of jitter")
        assert trigger_from_dict(cron.to_dict()) == cron
        assert IntervalTrigger(seconds=30, jitter=0) == IntervalTrigger(seconds=30)

    @pytest.mark.parametrize(
        ("value", "error", "match"),
        [
            (-1, TriggerError, "jitter must be a finite number of seconds of zero or more, got -1"),
            (float("nan"), TriggerError, "jitter must be a finite number"),
            ("5", TypeError, "jitter must be a number of seconds or None, not '5'"),
            (True, TypeError, "jitter must be a number"),
        ],
    )
    def test_bad_values(self, value, error, match):
        with pytest.raises(error, match=match):
            IntervalTrigger(seconds=1, jitter=value)
        with pytest.raises(error, match=match):
            CronTrigger("* * * * *", jitter=value)


async def module_level_job() -> None:
    pass


# ---------------------------------------------------------------- bounded schedules


class TestBounds:
    async def test_interval_start_date_in_the_future_is_the_anchor(self, clocked, scheduler_clock):
        start = T0 + timedelta(hours=2)
        calls = Calls(scheduler_clock)
        job = clocked.add_job(calls, IntervalTrigger(minutes=30, start_date=start))
        assert job.next_run_times(2) == [start, start + timedelta(minutes=30)]
        later = clocked.add_job(
            noop, IntervalTrigger(minutes=30, start_now=False, start_date=start)
        )
        assert later.next_run_time == start + timedelta(minutes=30)
        await clocked.start()
        await scheduler_clock.advance(hours=3)
        assert calls.times == [start, start + timedelta(minutes=30), start + timedelta(hours=1)]

    async def test_interval_start_date_in_the_past_anchors_now(self, clocked):
        job = clocked.add_job(
            noop, IntervalTrigger(minutes=30, start_now=False, start_date="2020-01-01")
        )
        assert job.next_run_time == T0 + timedelta(minutes=30)

    async def test_end_date_completes_the_job(self, clocked, scheduler_clock):
        calls = Calls(scheduler_clock)
        job = clocked.add_job(
            calls, IntervalTrigger(minutes=20, end_date=T0 + timedelta(hours=1)), id="x"
        )
        await clocked.start()
        await scheduler_clock.advance(hours=3)
        assert calls.times == [T0 + timedelta(minutes=20 * k) for k in range(4)]
        assert job.status is JobStatus.COMPLETED and job.next_run_time is None
        assert clocked.apscheduler.get_job("x") is None

    async def test_a_past_end_date_completes_at_once(self, clocked):
        job = clocked.add_job(noop, CronTrigger("* * * * *", end_date="2029-12-31T00:00:00Z"))
        assert job.status is JobStatus.COMPLETED and job.next_run_time is None

    async def test_cron_within_its_window(self, clocked, scheduler_clock):
        calls = Calls(scheduler_clock)
        clocked.add_job(
            calls,
            CronTrigger(
                "0 * * * *",
                start_date=T0 + timedelta(minutes=90),
                end_date=T0 + timedelta(hours=4),
            ),
        )
        await clocked.start()
        await scheduler_clock.advance(hours=6)
        assert calls.times == [T0 + timedelta(hours=h) for h in (2, 3, 4)]

    async def test_naive_bounds_are_in_the_scheduler_or_trigger_zone(self, scheduler_clock):
        scheduler_clock.set(T0)
        m = SchedulerManager(config=SchedulerConfig(timezone="Europe/Paris"))
        job = m.add_job(noop, IntervalTrigger(hours=1, start_date="2030-06-01T12:00:00"))
        assert job.next_run_time == datetime(2030, 6, 1, 10, tzinfo=UTC)
        cron = m.add_job(
            noop, CronTrigger("0 * * * *", timezone="UTC", start_date="2030-06-01T12:00:00")
        )
        assert cron.next_run_time == datetime(2030, 6, 1, 12, tzinfo=UTC)

    def test_to_dict_describe_and_round_trip(self):
        trigger = IntervalTrigger(hours=1, start_date="2030-01-01", end_date="2030-02-01")
        data = trigger.to_dict()
        assert data["start_date"] == "2030-01-01T00:00:00"
        assert data["end_date"] == "2030-02-01T00:00:00"
        assert trigger.describe() == (
            "Every 1 hour, from 2030-01-01 00:00:00, until 2030-02-01 00:00:00"
        )
        assert trigger_from_dict(data) == trigger
        assert trigger != IntervalTrigger(hours=1)
        cron = CronTrigger("@daily", end_date=datetime(2030, 5, 1, tzinfo=UTC))
        assert trigger_from_dict(cron.to_dict()) == cron

    @pytest.mark.parametrize("cls", ["interval", "cron"])
    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            (
                {"start_date": "2030-02-01", "end_date": "2030-01-01"},
                TriggerError,
                "end_date 2030-01-01T00:00:00 must be after start_date 2030-02-01T00:00:00",
            ),
            (
                {"start_date": "2030-01-01", "end_date": "2030-01-01"},
                TriggerError,
                "must be after start_date",
            ),
            ({"start_date": "soon"}, TriggerError, "cannot read start_date 'soon'"),
            ({"end_date": "2030-13-01"}, TriggerError, "cannot read end_date '2030-13-01'"),
            ({"end_date": 1893456000}, TypeError, "end_date must be a datetime or an ISO 8601"),
        ],
    )
    def test_bad_bounds(self, cls, kwargs, error, match):
        with pytest.raises(error, match=match):
            if cls == "interval":
                IntervalTrigger(hours=1, **kwargs)
            else:
                CronTrigger("0 * * * *", **kwargs)

    @pytest.mark.parametrize("cls", [IntervalTrigger, CronTrigger])
    def test_a_naive_and_an_aware_bound_are_refused_together(self, cls):
        args, kwargs = ((), {"hours": 1}) if cls is IntervalTrigger else (("0 * * * *",), {})
        with pytest.raises(TriggerError) as refused:
            cls(
                *args,
                **kwargs,
                start_date="2030-01-01T12:00:00+00:00",
                end_date="2030-01-01T11:00:00",
            )
        message = str(refused.value)
        assert "end_date has no UTC offset and start_date has one" in message
        assert "give them both with an offset or both without" in message


# ---------------------------------------------------------------- the view


async def test_to_dict_has_the_new_options(manager):
    job = manager.add_job(
        noop, IntervalTrigger(hours=1), timeout=2.5, pause_on_failure=True, max_runs=9
    )
    data = job.to_dict()
    assert (data["timeout"], data["pause_on_failure"], data["max_runs"]) == (2.5, True, 9)
    assert (job.timeout, job.pause_on_failure, job.max_runs) == (2.5, True, 9)


async def test_wall_clock_of_runs_is_the_frozen_clock(clocked, scheduler_clock):
    job = clocked.add_job(noop, IntervalTrigger(minutes=1, start_now=False))
    await clocked.start()
    await scheduler_clock.advance(minutes=2)
    assert [r.start for r in reversed(job.history)] == [
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=2),
    ]
