"""What the scheduler does when things go wrong: bad input, jobs that raise or hang,
shutdown with runs in flight, jumps of the wall clock, and many concurrent API calls."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from helpers import wait_for, wait_until
from nexios import NexiosApp
from nexios.http import Request, Response
from nexios.testclient import TestClient

from nexios_contrib_scheduler import (
    ConflictingIdError,
    CronSyntaxError,
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobNotFoundError,
    JobStatus,
    SchedulerConfig,
    SchedulerDepends,
    SchedulerManager,
    TriggerError,
    setup_scheduler,
)

UTC = timezone.utc
T0 = datetime(2030, 1, 7, 8, tzinfo=UTC)


async def noop() -> None:
    pass


def snapshot(m: SchedulerManager) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """Everything a failed call must leave as it was: the registry and APScheduler's store."""
    jobs = [j.to_dict() for j in m.get_jobs()]
    aps = [(j.id, j.next_run_time) for j in m.apscheduler.get_jobs()] if m.running else []
    return jobs, aps


# ---------------------------------------------------------------- bad input

# Triggers are built before any scheduler sees them: what they decide is the error, which
# names the bad value and what is allowed.
BAD_TRIGGERS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    # wrong types, zero and negative values, bad dates, unknown zones
    ("interval str", lambda: IntervalTrigger(seconds="5"), TypeError, "seconds must be a number, not '5'"),
    ("interval negative", lambda: IntervalTrigger(minutes=-1), TriggerError, "minutes must be a finite number of zero or more, got -1"),
    ("interval zero", lambda: IntervalTrigger(), TriggerError, "needs a positive interval: give at least one of seconds, minutes, hours, days or weeks greater than 0"),
    ("interval inf", lambda: IntervalTrigger(hours=float("inf")), TriggerError, "hours must be a finite number of zero or more, got inf"),
    ("interval start_now", lambda: IntervalTrigger(seconds=1, start_now="yes"), TypeError, "start_now must be True or False, not 'yes'"),
    ("interval jitter", lambda: IntervalTrigger(seconds=1, jitter=-2), TriggerError, "jitter must be a finite number of seconds of zero or more, got -2"),
    ("interval start_date", lambda: IntervalTrigger(seconds=1, start_date="yesterday"), TriggerError, "cannot read start_date 'yesterday': use ISO 8601"),
    ("interval bounds", lambda: IntervalTrigger(seconds=1, start_date="2030-02-01", end_date="2030-01-01"), TriggerError, "end_date 2030-01-01T00:00:00 must be after start_date 2030-02-01T00:00:00"),
    ("cron minute", lambda: CronTrigger("61 * * * *"), CronSyntaxError, "minute value 61 out of range 0-59"),
    ("cron hour", lambda: CronTrigger("* 24 * * *"), CronSyntaxError, "hour value 24 out of range 0-23"),
    ("cron day", lambda: CronTrigger("* * 32 * *"), CronSyntaxError, "day-of-month value 32 out of range 1-31"),
    ("cron month", lambda: CronTrigger("* * * 13 *"), CronSyntaxError, "month value 13 out of range 1-12"),
    ("cron weekday", lambda: CronTrigger("* * * * 8"), CronSyntaxError, "day-of-week value 8 out of range 0-7"),
    ("cron month name", lambda: CronTrigger("* * * foo *"), CronSyntaxError, "month value 'foo' is not a number or name"),
    ("cron weekday name", lambda: CronTrigger("* * * * funday"), CronSyntaxError, "day-of-week value 'funday' is not a number or name"),
    ("cron step", lambda: CronTrigger("*/0 * * * *"), CronSyntaxError, "minute step in '*/0' must be at least 1"),
    ("cron range", lambda: CronTrigger("5-1 * * * *"), CronSyntaxError, "minute range '5-1' starts after it ends (5 > 1)"),
    ("cron fields", lambda: CronTrigger("* * *"), CronSyntaxError, "expected 5 fields (minute hour day-of-month month day-of-week), got 3"),
    ("cron alias", lambda: CronTrigger("@sometimes"), CronSyntaxError, "unknown alias '@sometimes' in '@sometimes'; allowed: @annually"),
    ("cron type", lambda: CronTrigger(15), TypeError, "cron expression must be a str, not int"),
    ("cron zone", lambda: CronTrigger("* * * * *", timezone="Mars/Olympus"), ValueError, "unknown timezone 'Mars/Olympus': use an IANA name"),
    ("cron jitter", lambda: CronTrigger("* * * * *", jitter="1"), TypeError, "jitter must be a number of seconds or None, not '1'"),
    ("date text", lambda: DateTimeTrigger("2026-13-01"), TriggerError, "cannot read run_date '2026-13-01': use ISO 8601"),
    ("date type", lambda: DateTimeTrigger(20261225), TypeError, "run_date must be a datetime or an ISO 8601 str, not 20261225"),
    ("date zone", lambda: DateTimeTrigger("2030-01-01", timezone="Nowhere/Land"), ValueError, "unknown timezone 'Nowhere/Land': use an IANA name"),
]  # fmt: skip

# Calls on a manager that holds the job "existing": each must raise, and change nothing.
BAD_CALLS: list[tuple[str, Callable[[SchedulerManager], Any], type[Exception], str]] = [
    # add_job
    ("not callable", lambda m: m.add_job("noop", IntervalTrigger(seconds=1)), TypeError, "needs a callable, not str"),
    ("coroutine object", lambda m: m.add_job(noop(), IntervalTrigger(seconds=1)), TypeError, "not a coroutine object"),
    ("trigger text", lambda m: m.add_job(noop, "*/5 * * * *"), TypeError, "not str"),
    ("duplicate id", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), id="existing"), ConflictingIdError, "'existing'"),
    ("unknown option", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), retries=3), TypeError, "retries"),
    ("misspelt option", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), max_instance=2), TypeError, "max_instance"),
    ("name", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), name=5), TypeError, "name must be a non-empty str"),
    ("id", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), id=""), TypeError, "id must be a non-empty str"),
    ("args", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), args="ab"), TypeError, "args must be a tuple or list"),
    ("kwargs", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), kwargs=[1]), TypeError, "kwargs must be a mapping"),
    ("max_instances", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), max_instances=0), ValueError, "at least 1, got 0"),
    ("grace", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), misfire_grace_time=-1), ValueError, "got -1"),
    ("coalesce", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), coalesce="y"), TypeError, "not 'y'"),
    ("timeout", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), timeout=0), ValueError, "got 0"),
    ("max_runs", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), max_runs=0), ValueError, "got 0"),
    ("pause_on_failure", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), pause_on_failure=1), TypeError, "not 1"),
    # replacing the job: the bad replacement must leave the old job as it was
    ("replace with bad option", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), id="existing", replace_existing=True, max_instances=0), ValueError, "at least 1, got 0"),
    ("replace with bad name", lambda m: m.add_job(noop, IntervalTrigger(seconds=1), id="existing", replace_existing=True, name=5), TypeError, "name must be a non-empty str"),
    # changing jobs
    ("modify value", lambda m: m.modify_job("existing", name="new", max_instances=-1), ValueError, "got -1"),
    ("modify option", lambda m: m.modify_job("existing", trigger=None), TypeError, "trigger"),
    ("reschedule", lambda m: m.reschedule_job("existing", "@daily"), TypeError, "not str"),
    ("pause reason", lambda m: m.pause_job("existing", reason=5), TypeError, "reason must be a str"),
    ("listener event", lambda m: m.add_listener(print, ["job_done"]), ValueError, "'job_done'"),
    ("listener events", lambda m: m.add_listener(print, ["job_added", "job_done"]), ValueError, "'job_done'"),
]  # fmt: skip


class TestBadInput:
    @pytest.mark.parametrize(
        ("build", "error", "match"),
        [case[1:] for case in BAD_TRIGGERS],
        ids=[case[0] for case in BAD_TRIGGERS],
    )
    def test_a_bad_trigger_is_refused_naming_the_value_and_what_is_allowed(
        self, build, error, match
    ):
        with pytest.raises(error) as caught:
            build()
        assert match in str(caught.value)

    @pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
    @pytest.mark.parametrize(
        ("call", "error", "match"),
        [case[1:] for case in BAD_CALLS],
        ids=[case[0] for case in BAD_CALLS],
    )
    async def test_a_clear_error_and_no_change(self, running, call, error, match):
        m = SchedulerManager()
        m.add_job(noop, IntervalTrigger(hours=1), id="existing", name="kept", max_instances=2)
        if running:
            await m.start()
        try:
            before = snapshot(m)
            with pytest.raises(error) as caught:
                call(m)
            assert match in str(caught.value)
            assert snapshot(m) == before
            assert m.remove_listener(print) is False  # no listener was added either
        finally:
            await m.shutdown()

    async def test_operations_on_unknown_ids_answer_false_or_none_or_raise_not_found(self):
        m = SchedulerManager()
        m.add_job(noop, IntervalTrigger(hours=1), id="existing")
        await m.start()
        try:
            before = snapshot(m)
            for job_id in ("nope", "", None, 42):
                assert m.get_job(job_id) is None
                assert m.remove_job(job_id) is False
                assert m.pause_job(job_id) is False
                assert m.resume_job(job_id) is False
                assert m.run_job_now(job_id) is False
                with pytest.raises(JobNotFoundError) as missing:
                    m.reschedule_job(job_id, IntervalTrigger(seconds=1))
                assert str(missing.value) == f"No job by the id of {job_id!r} was found"
                with pytest.raises(JobNotFoundError):
                    m.modify_job(job_id, name="x")
            assert m.remove_listener(print) is False
            assert snapshot(m) == before
        finally:
            await m.shutdown()


# ---------------------------------------------------------------- jobs that raise


class TestJobsThatRaise:
    def test_base_exceptions_leave_the_app_serving(self):
        app = NexiosApp()
        scheduler = setup_scheduler(app, SchedulerConfig(shutdown_timeout=2))

        async def exits() -> None:
            raise SystemExit("bye")

        def interrupts() -> None:
            raise KeyboardInterrupt

        async def exits_with_a_timeout() -> None:
            raise SystemExit(2)

        scheduler.add_job(exits, IntervalTrigger(seconds=0.05), id="exits")
        scheduler.add_job(interrupts, IntervalTrigger(seconds=0.05), id="interrupts")
        scheduler.add_job(exits_with_a_timeout, IntervalTrigger(seconds=0.05), id="t", timeout=5)

        @app.get("/ping")
        async def ping(request: Request, response: Response):
            return response.json({"jobs": len(scheduler.get_jobs())})

        with TestClient(app) as client:
            wait_for(
                lambda: all(j.total_run_count >= 3 for j in scheduler.get_jobs()),
                timeout=60,
                what="three runs of each job",
            )
            assert client.get("/ping").json() == {"jobs": 3}
            assert scheduler.running
        # Every run that ran ended in an error. A fire can also be on record as skipped
        # (its runs overlapped: a loaded machine) or missed (its loop was late).
        errors = {
            j.id: (
                j.status,
                {r.outcome for r in j.history if r.outcome not in ("skipped", "missed")},
                j.last_error,
            )
            for j in scheduler.get_jobs()
        }
        assert errors == {
            "exits": (JobStatus.FAILED, {"error"}, "SystemExit: bye"),
            "interrupts": (JobStatus.FAILED, {"error"}, "KeyboardInterrupt"),
            "t": (JobStatus.FAILED, {"error"}, "SystemExit: 2"),
        }


# ---------------------------------------------------------------- jobs that hang


class TestJobsThatHang:
    async def test_with_a_timeout_each_run_is_cancelled_and_the_job_goes_on(self):
        m = SchedulerManager()

        async def hang() -> None:
            await asyncio.sleep(60)

        job = m.add_job(hang, IntervalTrigger(seconds=0.05), timeout=0.02, max_instances=1)
        await m.start()
        try:
            await wait_until(lambda: job.failure_count >= 3)
            assert {r.outcome for r in job.history} <= {"timeout", "skipped"}
            assert job.current_instances <= 1
        finally:
            await m.shutdown()

    async def test_without_a_timeout_skips_are_counted_and_run_now_refuses(
        self, scheduler_clock, caplog
    ):
        scheduler_clock.set(T0)
        m = SchedulerManager()
        release = asyncio.Event()

        async def hang() -> None:
            await release.wait()

        job = m.add_job(hang, IntervalTrigger(minutes=1), max_instances=1, id="h", name="hang")
        await m.start()
        try:
            with caplog.at_level(logging.WARNING, logger="nexios_contrib_scheduler"):
                await scheduler_clock.advance(minutes=5, wait=False)
                assert m.run_job_now("h") is False
            data = job.to_dict()
            assert (data["current_instances"], data["skipped_count"]) == (1, 5)
            assert [r["outcome"] for r in data["history"]] == ["skipped"] * 5
            assert data["history"][0]["error"] == (
                "skipped: max_instances (1) runs already in progress"
            )
            assert any("not run now" in r.getMessage() for r in caplog.records)
            release.set()
            await scheduler_clock.run_due()
            assert job.current_instances == 0 and m.run_job_now("h") is True
        finally:
            release.set()
            await m.shutdown()


# ---------------------------------------------------------------- shutdown


class TestShutdownWithRunsInFlight:
    async def test_quick_runs_finish_slow_ones_are_cancelled_and_recorded(self):
        m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
        finished: list[str] = []
        go = asyncio.Event()  # set as shutdown begins: the quick run ends within the timeout
        never = asyncio.Event()

        async def quick() -> None:
            await go.wait()
            finished.append("quick")

        async def stuck() -> None:
            await never.wait()

        jobs = {
            "quick": m.add_job(quick, IntervalTrigger(hours=1)),
            "stuck": m.add_job(stuck, IntervalTrigger(hours=1)),
            "stuck-with-timeout": m.add_job(stuck, IntervalTrigger(hours=1), timeout=30),
            "two-instances": m.add_job(stuck, IntervalTrigger(hours=1), max_instances=2),
        }
        await m.start()
        m.run_job_now(jobs["two-instances"].id)
        await wait_until(lambda: all(j.current_instances for j in jobs.values()))
        go.set()
        # A shutdown that waited for the stuck runs would never end: the wait only bounds it.
        await asyncio.wait_for(m.shutdown(), timeout=60)
        assert finished == ["quick"]
        outcomes = {name: [r.outcome for r in j.history] for name, j in jobs.items()}
        assert outcomes == {
            "quick": ["success"],
            "stuck": ["cancelled"],
            "stuck-with-timeout": ["cancelled"],
            "two-instances": ["cancelled", "cancelled"],
        }
        assert all(j.current_instances == 0 for j in jobs.values())
        assert m.executor.tasks == {}
        ours = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert ours == []  # nothing of the scheduler's is left running

    def test_the_app_stops_within_the_shutdown_timeout(self):
        app = NexiosApp()
        scheduler = setup_scheduler(app, SchedulerConfig(shutdown_timeout=0.1))

        async def stuck() -> None:
            await asyncio.sleep(60)

        job = scheduler.add_job(stuck, IntervalTrigger(hours=1))
        with TestClient(app):
            wait_for(lambda: job.current_instances == 1, timeout=60, what="the stuck run")
            started = time.monotonic()
        # Not a speed check: the app stopped without waiting for the 60 s run to end.
        assert time.monotonic() - started < 30
        assert job.history[0].outcome == "cancelled" and not scheduler.running


# ---------------------------------------------------------------- wall-clock jumps


class TestWallClockJumps:
    async def test_forward_over_many_intervals_with_coalesce_is_one_run(self, scheduler_clock):
        scheduler_clock.set(T0)
        m = SchedulerManager()
        every_minute = m.add_job(noop, IntervalTrigger(minutes=1, start_now=False))
        hourly_cron = m.add_job(noop, CronTrigger("0 * * * *"), misfire_grace_time=None)
        await m.start()
        try:
            await scheduler_clock.run_due()  # the cron job's 08:00 fire
            await scheduler_clock.jump(days=1)
            assert (every_minute.total_run_count, every_minute.missed_count) == (1, 0)
            assert hourly_cron.total_run_count == 2  # 08:00 at start, then one catch-up
            assert every_minute.next_run_time == T0 + timedelta(days=1, minutes=1)
        finally:
            await m.shutdown()

    async def test_without_coalesce_exactly_the_runs_inside_the_grace(self, scheduler_clock):
        scheduler_clock.set(T0)
        m = SchedulerManager()
        job = m.add_job(
            noop,
            IntervalTrigger(minutes=1, start_now=False),
            coalesce=False,
            misfire_grace_time=600,
        )
        await m.start()
        try:
            await scheduler_clock.jump(days=1)
        finally:
            await m.shutdown()
        # 1440 fires; those at most 600 s late at the end are the last 11 (0 .. 600 s).
        assert job.total_run_count == 11
        assert job.missed_count == 1440 - 11
        assert job.history[0].scheduled_time == T0 + timedelta(days=1)

    async def test_backwards_runs_nothing_and_keeps_the_schedule(self, scheduler_clock):
        scheduler_clock.set(T0)
        m = SchedulerManager()
        job = m.add_job(noop, IntervalTrigger(minutes=10, start_now=False))
        await m.start()
        try:
            await scheduler_clock.jump_to(T0 - timedelta(hours=3))
            assert job.total_run_count == 0
            assert job.next_run_time == T0 + timedelta(minutes=10)
            await scheduler_clock.move_to(T0 + timedelta(minutes=10))
            assert job.total_run_count == 1 and job.missed_count == 0
        finally:
            await m.shutdown()


# ---------------------------------------------------------------- concurrent API calls


def build_app() -> NexiosApp:
    app = NexiosApp()
    setup_scheduler(app, SchedulerConfig(shutdown_timeout=2))

    async def tick() -> None:
        await asyncio.sleep(0)

    @app.post("/jobs/{job_id}")
    async def add(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
        try:
            sd.add_job(tick, IntervalTrigger(seconds=0.01), id=job_id)
        except ConflictingIdError:
            return response.json({"ok": False}, status_code=409)
        return response.json({"ok": True})

    @app.post("/jobs/{job_id}/pause")
    async def pause(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
        await asyncio.sleep(random.random() / 100)
        ok = await asyncio.to_thread(sd.pause_job, job_id, "api")  # from a worker thread
        return response.json({"ok": ok})

    @app.post("/jobs/{job_id}/resume")
    async def resume(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
        await asyncio.sleep(random.random() / 50)
        ok = await asyncio.to_thread(sd.resume_job, job_id)
        return response.json({"ok": ok})

    @app.delete("/jobs/{job_id}")
    async def remove(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
        await asyncio.sleep(random.random() / 100)
        return response.json({"ok": sd.remove_job(job_id)})

    return app


def assert_consistent(m: SchedulerManager) -> None:
    registry = {j.id: j for j in m.get_jobs() if j.status is not JobStatus.COMPLETED}
    stored = {j.id: j for j in m.apscheduler.get_jobs()}
    assert set(registry) == set(stored)
    for job_id, job in registry.items():
        paused = job.status is JobStatus.PAUSED
        assert (stored[job_id].next_run_time is None) == paused, job.to_dict()


async def test_fifty_concurrent_requests_leave_the_registry_consistent():
    app = build_app()
    scheduler = app.scheduler
    rng = random.Random(7)
    ids = [f"job-{i}" for i in range(8)]
    calls = [("POST", f"/jobs/{i}") for i in ids]  # every id is added once at least
    for _ in range(42):
        job_id = rng.choice(ids)
        calls.append(
            rng.choices(
                [
                    ("POST", f"/jobs/{job_id}"),
                    ("POST", f"/jobs/{job_id}/pause"),
                    ("POST", f"/jobs/{job_id}/resume"),
                    ("DELETE", f"/jobs/{job_id}"),
                ],
                weights=[1, 3, 1, 1],  # so that some jobs are likely to end paused
            )[0]
        )
    rng.shuffle(calls)
    assert len(calls) == 50
    transport = httpx.ASGITransport(app=app)
    async with (
        app.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        responses = await asyncio.gather(*(client.request(m, u) for m, u in calls))
        assert {r.status_code for r in responses} <= {200, 409}
        assert_consistent(scheduler)
        active = scheduler.get_jobs(status=JobStatus.ACTIVE)
        await wait_until(lambda: all(j.total_run_count for j in active))  # they fire
        assert_consistent(scheduler)
        # The final state follows from the answers: removed ids are gone everywhere.
        for job_id in ids:
            if scheduler.get_job(job_id) is None:
                assert scheduler.apscheduler.get_job(job_id) is None
    assert not scheduler.running
