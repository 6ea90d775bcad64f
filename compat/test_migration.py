"""What changes for a user of nexios_contrib.scheduler 0.5.0, shown side by side.

Each class is one row of the table in docs/migration.md. ``test_old_*`` runs
``nexios_contrib.scheduler`` 0.5.0 and pins down what it does; ``test_new_*`` shows what
``nexios_contrib_scheduler`` does instead. 0.5.0 reads the clock itself and polls once a
second, so its tests drive its own scheduling steps (``_get_due_jobs(now)`` picks the due
jobs and works out their next run, ``_execute_job`` runs one) with explicit timestamps
instead of waiting on its ticker.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import nexios_contrib.scheduler as old
import pytest
from nexios import NexiosApp
from nexios.testclient import TestClient

import nexios_contrib_scheduler as new
from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerError,
    SchedulerManager,
)
from tests.helpers import wait_until

UTC = timezone.utc


def ts(iso: str) -> float:
    """A UTC ISO date-time as the float timestamp 0.5.0 works in."""
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%a %Y-%m-%d %H:%M")


def old_fires(expr: str, start: str, n: int = 4) -> list[str]:
    trigger = old.CronTrigger(expr)
    at, out = ts(start), []
    for _ in range(n):
        at = trigger.get_next_run(at)
        out.append(iso(at))
    return out


def new_fires(expr: str, start: str, n: int = 4, tz: str = "UTC") -> list[str]:
    trigger = CronTrigger(expr, timezone=tz)
    after = datetime.fromisoformat(start).replace(tzinfo=UTC) + timedelta(minutes=1)
    return [t.strftime("%a %Y-%m-%d %H:%M") for t in trigger.next_fire_times(n, after)]


async def noop() -> None:
    pass


@pytest.fixture(autouse=True)
def quiet_old_logs(monkeypatch):
    # 0.5.0 logs failures with tracebacks through Nexios' handler, straight to the terminal.
    monkeypatch.setattr(logging.getLogger("nexios.scheduler"), "disabled", True)
    monkeypatch.setattr(logging.getLogger("nexios.scheduler.job"), "disabled", True)


@pytest.fixture
async def manager():
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
    yield m
    await m.shutdown()


# ---------------------------------------------------------------- imports and types


class TestImportPath:
    def test_every_old_name_has_a_new_home(self):
        missing = [name for name in old.__all__ if not hasattr(new, name)]
        assert missing == []

    def test_new_names(self):
        added = set(new.__all__) - set(old.__all__)
        assert {
            "JobNotFoundError",
            "ConflictingIdError",
            "SchedulerError",
            "CronSyntaxError",
        } <= added


class TestAwareDatetimes:
    async def test_old_uses_float_timestamps(self):
        m = old.SchedulerManager()
        job = m.add_job(noop, old.IntervalTrigger(seconds=30))
        assert isinstance(job.created_at, float)
        assert job.next_run_time is None  # unknown until start()
        job.compute_next_run(ts("2026-01-01T00:00:00"))
        assert job.next_run_time == 1767225600.0
        assert job.to_dict()["next_run_time"] == 1767225600.0

    async def test_new_uses_aware_datetimes(self, manager):
        now = datetime.now(UTC)
        job = manager.add_job(noop, IntervalTrigger(seconds=30))
        assert isinstance(job.created_at, datetime) and job.created_at.tzinfo is not None
        assert job.next_run_time is not None  # known before start()
        assert abs(job.next_run_time - now) < timedelta(seconds=5)
        assert job.to_dict()["next_run_time"] == job.next_run_time.isoformat()


class TestJobView:
    def test_old_job_is_a_mutable_object_with_methods(self):
        job = old.SchedulerManager().add_job(noop, old.IntervalTrigger(seconds=30))
        assert callable(job.pause) and callable(job.cancel)
        assert job.to_dict()["trigger"] == "30s" and job.to_dict()["trigger_type"] == "INTERVAL"

    async def test_new_job_is_a_read_only_view(self, manager):
        job = manager.add_job(noop, IntervalTrigger(seconds=30), id="j")
        assert not hasattr(job, "pause") and not hasattr(job, "cancel")
        with pytest.raises(AttributeError):
            job.name = "other"  # type: ignore[misc]
        data = job.to_dict()
        assert data["trigger"] == {"type": "interval", "seconds": 30, "start_now": True}
        assert data["trigger_description"] == "Every 30 seconds"
        assert manager.pause_job("j") and job.status is JobStatus.PAUSED


# ---------------------------------------------------------------- cron


class TestWeekdayNumbering:
    # 2026-01-02 is a Friday.
    def test_old_reads_0_as_monday_and_ignores_the_weekday_field(self):
        # With day-of-month "*", 0.5.0 ORs the day fields, so any weekday list fires daily.
        assert old_fires("0 9 * * 0", "2026-01-02T12:00") == [
            "Sat 2026-01-03 09:00",
            "Sun 2026-01-04 09:00",
            "Mon 2026-01-05 09:00",
            "Tue 2026-01-06 09:00",
        ]
        # Restricting day-of-month shows its numbering: 0 is Monday.
        assert old_fires("0 9 31 * 0", "2026-01-02T12:00", 2) == [
            "Mon 2026-01-05 09:00",
            "Mon 2026-01-12 09:00",
        ]

    def test_old_rejects_names_and_accepts_7_silently(self):
        with pytest.raises(ValueError, match="invalid literal for int"):
            old.CronTrigger("0 9 * * mon-fri")
        assert old_fires("0 9 31 * 7", "2026-01-02T12:00", 1) == ["Sat 2026-01-31 09:00"]

    def test_new_reads_0_and_7_as_sunday(self):
        sundays = ["Sun 2026-01-04 09:00", "Sun 2026-01-11 09:00"]
        assert new_fires("0 9 * * 0", "2026-01-02T12:00", 2) == sundays
        assert new_fires("0 9 * * 7", "2026-01-02T12:00", 2) == sundays
        assert new_fires("0 9 * * sun", "2026-01-02T12:00", 2) == sundays

    def test_new_weekdays_by_name(self):
        assert new_fires("0 9 * * mon-fri", "2026-01-02T12:00", 3) == [
            "Mon 2026-01-05 09:00",
            "Tue 2026-01-06 09:00",
            "Wed 2026-01-07 09:00",
        ]


class TestDayRule:
    def test_old_fires_monthly_and_weekday_jobs_every_day(self):
        assert old_fires("0 0 1 * *", "2026-01-02T12:00", 3) == [
            "Sat 2026-01-03 00:00",
            "Sun 2026-01-04 00:00",
            "Mon 2026-01-05 00:00",
        ]
        assert old_fires("0 9 * * 1-5", "2026-01-02T12:00", 2) == [
            "Sat 2026-01-03 09:00",
            "Sun 2026-01-04 09:00",
        ]

    def test_new_ands_the_day_fields_unless_both_are_restricted(self):
        assert new_fires("0 0 1 * *", "2026-01-02T12:00", 2) == [
            "Sun 2026-02-01 00:00",
            "Sun 2026-03-01 00:00",
        ]
        assert new_fires("0 9 * * 1-5", "2026-01-02T12:00", 2) == [
            "Mon 2026-01-05 09:00",
            "Tue 2026-01-06 09:00",
        ]
        # Both restricted: the 13th of the month OR any Friday, as cron has it.
        assert new_fires("0 0 13 * fri", "2026-01-02T12:00", 3) == [
            "Fri 2026-01-09 00:00",
            "Tue 2026-01-13 00:00",
            "Fri 2026-01-16 00:00",
        ]


class TestCronValidation:
    @pytest.mark.parametrize("expr", ["61 * * * *", "0 0 30 2 *", "0 25 * * *"])
    def test_old_accepts_what_cannot_be_right(self, expr):
        old.CronTrigger(expr)

    async def test_old_start_fails_and_no_job_runs(self):
        m = old.SchedulerManager()
        m.add_job(noop, old.IntervalTrigger(seconds=1))
        m.add_job(noop, old.CronTrigger("61 * * * *"))
        # start() scans a year of minutes, blocking the loop, then gives up.
        with pytest.raises(RuntimeError, match="Could not find next run time"):
            await m.start()
        assert m._running is True and m._ticker_task is None  # "running", but nothing ticks

    def test_old_fires_february_30th_every_day_of_february(self):
        assert old_fires("0 0 30 2 *", "2026-01-02T12:00", 2) == [
            "Sun 2026-02-01 00:00",
            "Mon 2026-02-02 00:00",
        ]

    @pytest.mark.parametrize(
        "expr, message",
        [
            ("61 * * * *", "minute value 61 out of range 0-59 in '61 * * * *'"),
            ("0 0 30 2 *", "day-of-month '30' never occurs in February"),
            ("0 25 * * *", "hour value 25 out of range 0-23"),
        ],
    )
    def test_new_refuses_with_the_reason(self, expr, message):
        with pytest.raises(ValueError, match=re.escape(message)):
            CronTrigger(expr)


class TestAliases:
    @pytest.mark.parametrize("alias", ["@annually", "@midnight", "@DAILY"])
    def test_old_knows_six_lower_case_aliases(self, alias):
        with pytest.raises(ValueError, match="Expected 5 fields"):
            old.CronTrigger(alias)

    @pytest.mark.parametrize(
        "alias, expr",
        [("@annually", "0 0 1 1 *"), ("@midnight", "0 0 * * *"), ("@DAILY", "0 0 * * *")],
    )
    def test_new_knows_cron_s_aliases_in_any_case(self, alias, expr):
        start = datetime(2026, 5, 17, 13, 0, tzinfo=UTC)
        assert CronTrigger(alias).next_fire_times(3, start) == CronTrigger(expr).next_fire_times(
            3, start
        )


class TestTimezone:
    def test_old_ignores_the_configured_zone(self):
        m = old.SchedulerManager(config=old.SchedulerConfig(timezone="Europe/Paris"))
        job = m.add_job(noop, old.CronTrigger("0 9 * * *"))
        job.compute_next_run(ts("2026-07-01T00:00"))
        assert iso(job.next_run_time) == "Wed 2026-07-01 09:00"  # 09:00 UTC, 11:00 in Paris

    def test_old_reads_naive_dates_as_utc_whatever_the_zone(self):
        trigger = old.DateTimeTrigger("2026-07-01T09:00:00")
        assert iso(trigger.get_run_timestamp()) == "Wed 2026-07-01 09:00"

    async def test_new_reads_cron_and_naive_dates_in_the_configured_zone(self):
        m = SchedulerManager(config=SchedulerConfig(timezone="Europe/Paris"))
        cron = m.add_job(noop, CronTrigger("0 9 * * *"))
        date = m.add_job(noop, DateTimeTrigger("2099-07-01T09:00:00"))
        assert (cron.next_run_time.hour, cron.next_run_time.minute) == (9, 0)
        assert str(cron.next_run_time.tzinfo) == "Europe/Paris"
        assert date.next_run_time.astimezone(UTC) == datetime(2099, 7, 1, 7, 0, tzinfo=UTC)

    def test_new_zone_per_trigger(self):
        trigger = CronTrigger("0 9 * * *", timezone="America/New_York")
        first = trigger.next_fire_times(1, datetime(2026, 7, 1, tzinfo=UTC))[0]
        assert first.astimezone(UTC) == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)


class TestDaylightSaving:
    def test_old_has_no_daylight_saving_since_it_runs_in_utc(self):
        # A 09:00 job moves by an hour on local clocks twice a year.
        assert old_fires("0 9 * * *", "2026-03-28T12:00", 2) == [
            "Sun 2026-03-29 09:00",
            "Mon 2026-03-30 09:00",
        ]

    def test_new_fixed_time_job_in_the_skipped_hour_runs_once_at_the_jump(self):
        fires = CronTrigger("30 2 * * *", timezone="Europe/Berlin").next_fire_times(
            3, datetime(2026, 3, 28, 0, 0, tzinfo=UTC)
        )
        assert [f.isoformat() for f in fires] == [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
        ]

    def test_new_fixed_time_job_in_the_repeated_hour_runs_once(self):
        fires = CronTrigger("30 2 * * *", timezone="Europe/Berlin").next_fire_times(
            2, datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
        )
        assert [f.astimezone(UTC).isoformat() for f in fires] == [
            "2026-10-25T00:30:00+00:00",
            "2026-10-26T01:30:00+00:00",
        ]

    def test_new_wildcard_hour_job_follows_the_wall_clock(self):
        fires = CronTrigger("30 * * * *", timezone="Europe/Berlin").next_fire_times(
            3, datetime(2026, 10, 24, 23, 45, tzinfo=UTC)
        )
        # 02:30 happens twice on 2026-10-25 and fires twice.
        assert [f.astimezone(UTC).strftime("%H:%M") for f in fires] == ["00:30", "01:30", "02:30"]
        assert [f.strftime("%H:%M%z") for f in fires] == ["02:30+0200", "02:30+0100", "03:30+0100"]


# ---------------------------------------------------------------- running jobs


class TestFailureKeepsFiring:
    async def test_old_stops_a_recurring_job_forever_after_one_failure(self):
        m = old.SchedulerManager()

        async def flaky():
            raise ValueError("boom")

        job = m.add_job(flaky, old.IntervalTrigger(seconds=10))
        t = ts("2026-01-01T00:00")
        job.compute_next_run(t)
        (due,) = m._get_due_jobs(t)
        await m._execute_job(due)
        assert job.status is old.JobStatus.FAILED and job.last_error == "boom"
        for later in range(1, 100):
            assert m._get_due_jobs(t + 10 * later) == []

    async def test_new_keeps_firing_and_recovers(self, manager):
        outcomes = iter([ValueError("boom"), ValueError("boom"), None])

        async def flaky():
            exc = next(outcomes, None)
            if exc is not None:
                raise exc

        job = manager.add_job(flaky, IntervalTrigger(seconds=0.05))
        await manager.start()
        await wait_until(lambda: job.failure_count == 2)
        assert job.last_error == "ValueError: boom"
        await wait_until(lambda: job.success_count >= 1)
        assert job.status is JobStatus.ACTIVE


class TestSyncFunctions:
    async def test_old_awaits_a_plain_function_and_marks_it_failed(self):
        m = old.SchedulerManager()
        calls = []
        job = m.add_job(lambda: calls.append(1), old.IntervalTrigger(seconds=10))
        await m._execute_job(job)
        assert calls == [1]  # it ran, then awaiting its result failed
        assert job.status is old.JobStatus.FAILED
        assert "can't be used in 'await' expression" in job.last_error

    async def test_new_runs_a_plain_function_in_a_worker_thread(self, manager):
        import threading

        threads = []
        job = manager.add_job(
            lambda: threads.append(threading.current_thread()), IntervalTrigger(seconds=60)
        )
        await manager.start()
        await wait_until(lambda: job.success_count == 1)
        assert threads[0] is not threading.main_thread()
        assert job.status is JobStatus.ACTIVE


class TestOneShotOutcome:
    async def test_old_marks_a_failed_one_shot_completed(self):
        m = old.SchedulerManager()

        async def broken():
            raise RuntimeError("nope")

        job = m.add_job(broken, old.DateTimeTrigger("2026-01-01T00:00:00"))
        await m._execute_job(job)
        assert job.status is old.JobStatus.COMPLETED and job.last_error == "nope"

    def test_old_fires_a_one_shot_again_on_every_tick_until_its_first_run_ends(self):
        m = old.SchedulerManager()
        job = m.add_job(noop, old.DateTimeTrigger("2026-01-01T00:00:00"))
        t = ts("2026-01-01T00:00")
        job.compute_next_run(t)
        assert m._get_due_jobs(t) == [job]
        # A run that takes longer than the 1 s tick is still ACTIVE at the next tick.
        assert m._get_due_jobs(t + 1) == [job]
        assert m._get_due_jobs(t + 2) == [job]

    def test_old_warns_forever_about_a_missed_one_shot(self):
        m = old.SchedulerManager()
        job = m.add_job(noop, old.DateTimeTrigger("2026-01-01T00:00:00"))
        t = ts("2026-01-01T00:00")
        job.compute_next_run(t)
        for later in (60, 61, 3600):
            assert m._get_due_jobs(t + later) == []  # "misfired", and again next second
        assert job.status is old.JobStatus.ACTIVE
        assert job.next_run_time == t

    async def test_new_failed_one_shot_is_failed(self, manager):
        async def broken():
            raise RuntimeError("nope")

        job = manager.add_job(broken, DateTimeTrigger(datetime.now(UTC)))
        await manager.start()
        await wait_until(lambda: job.status is JobStatus.FAILED)
        assert job.last_error == "RuntimeError: nope" and job.total_run_count == 1

    async def test_new_missed_one_shot_ends_failed_with_the_reason(self, manager):
        job = manager.add_job(noop, DateTimeTrigger(datetime.now(UTC) - timedelta(minutes=5)))
        await manager.start()
        await wait_until(lambda: job.status is JobStatus.FAILED)
        assert job.total_run_count == 0
        assert job.last_error.startswith("missed: run scheduled for")
        assert job.next_run_time is None


class TestCoalesce:
    def test_old_turns_coalesce_false_into_true(self):
        m = old.SchedulerManager()
        job = m.add_job(noop, old.IntervalTrigger(seconds=1), coalesce=False)
        assert job.coalesce is True

    def test_old_never_catches_up(self):
        # After a stall, 0.5.0 runs at most once and moves on, whatever coalesce says.
        m = old.SchedulerManager()
        job = m.add_job(noop, old.IntervalTrigger(seconds=10, start_now=False))
        t = ts("2026-01-01T00:00")
        job.compute_next_run(t)
        assert m._get_due_jobs(t + 25) == [job]  # fires due at +10 and +20: one run
        assert job.next_run_time == t + 35  # counted from "now", not +30: the grid is lost

    @staticmethod
    async def runs_for_a_stall(manager, clock, coalesce: bool) -> int:
        """Let six fire times pass while the process stalls; the runs made for those six."""
        job = manager.add_job(
            noop,
            IntervalTrigger(seconds=10, start_now=False),
            coalesce=coalesce,
            misfire_grace_time=60,
        )
        assert job.coalesce is coalesce
        await manager.start()
        await clock.jump(seconds=65)  # fire times 10 .. 60 pass unserved, all within grace
        return job.total_run_count

    async def test_new_coalesce_false_runs_every_missed_fire_inside_grace(
        self, manager, scheduler_clock
    ):
        assert await self.runs_for_a_stall(manager, scheduler_clock, coalesce=False) == 6

    async def test_new_coalesce_true_merges_them(self, manager, scheduler_clock):
        assert await self.runs_for_a_stall(manager, scheduler_clock, coalesce=True) == 1


class TestFalsyOptions:
    def test_old_replaces_zero_by_the_default(self):
        job = old.SchedulerManager().add_job(
            noop, old.IntervalTrigger(seconds=1), max_instances=0, misfire_grace_time=0
        )
        assert (job.max_instances, job.misfire_grace_time) == (3, 30)

    @pytest.mark.parametrize("option", [{"max_instances": 0}, {"misfire_grace_time": 0}])
    async def test_new_refuses_zero(self, manager, option):
        with pytest.raises(ValueError, match="at least 1|positive number"):
            manager.add_job(noop, IntervalTrigger(seconds=1), **option)

    async def test_new_grace_can_be_fractional(self, manager):
        job = manager.add_job(noop, IntervalTrigger(seconds=1), misfire_grace_time=0.25)
        assert job.misfire_grace_time == 0.25


class TestNoDoubleRunAtStart:
    async def test_old_runs_a_start_now_job_twice_in_its_first_second(self):
        m = old.SchedulerManager()
        runs = []

        async def tick():
            runs.append(1)

        job = m.add_job(tick, old.IntervalTrigger(seconds=60))
        t = time.time()
        job.compute_next_run(t)  # what start() does
        (due,) = m._get_due_jobs(t)  # first tick
        await m._execute_job(due)
        assert m._get_due_jobs(t + 1) == [job]  # second tick, one second later
        await m._execute_job(job)
        assert runs == [1, 1]

    async def test_new_runs_it_once_then_every_interval(self, manager, scheduler_clock):
        runs = []

        async def tick():
            runs.append(1)

        job = manager.add_job(tick, IntervalTrigger(seconds=60))
        await manager.start()
        await scheduler_clock.run_due()
        assert runs == [1]
        await scheduler_clock.advance(seconds=59)
        assert runs == [1]  # once at start, not again a tick later
        assert job.next_run_time - job.history[0].scheduled_time == timedelta(seconds=60)
        await scheduler_clock.advance(seconds=1)
        assert runs == [1, 1]


class TestIntervalGrid:
    def test_old_counts_from_when_the_last_run_started(self):
        job = old.SchedulerManager().add_job(noop, old.IntervalTrigger(seconds=10))
        job._last_run_time = ts("2026-01-01T00:00") + 0.9  # started 0.9 s late
        job.compute_next_run()
        assert job.next_run_time == ts("2026-01-01T00:00") + 10.9  # the lateness adds up

    def test_new_fires_on_a_fixed_grid(self):
        start = datetime(2026, 1, 1, tzinfo=UTC)
        fires = IntervalTrigger(seconds=10).next_fire_times(4, start)
        assert [(f - start).total_seconds() for f in fires] == [0, 10, 20, 30]

    async def test_new_fires_at_the_due_time_not_on_a_polling_tick(self, manager):
        # 0.5.0 looks for due jobs once a second; sub-second intervals run at most once a tick.
        job = manager.add_job(noop, IntervalTrigger(seconds=0.05))
        await manager.start()
        await wait_until(lambda: job.success_count >= 6, timeout=60, what="six runs")
        scheduled = sorted(run.scheduled_time for run in job.history)
        steps = {round((b - a).total_seconds(), 3) for a, b in zip(scheduled, scheduled[1:])}
        # Every fire is on the 0.05 s grid. A loop woken 50 ms late (a loaded machine) finds
        # two fires due and runs the latest (coalescing), so a step can be a multiple.
        assert min(steps) == 0.05
        assert all(round(step / 0.05, 6).is_integer() for step in steps), steps


class TestConcurrencyLimit:
    async def test_old_ignores_max_concurrent_jobs(self):
        m = old.SchedulerManager(config=old.SchedulerConfig(max_concurrent_jobs=1))
        t = ts("2026-01-01T00:00")
        jobs = [m.add_job(noop, old.IntervalTrigger(seconds=10)) for _ in range(3)]
        for job in jobs:
            job.compute_next_run(t)
        assert m._get_due_jobs(t) == jobs  # all three start together

    async def test_new_makes_runs_wait_for_a_slot(self):
        m = SchedulerManager(config=SchedulerConfig(max_concurrent_jobs=1, shutdown_timeout=1))
        running, peak, done = 0, 0, 0

        async def work():
            nonlocal running, peak, done
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.03)
            running -= 1
            done += 1

        for _ in range(3):
            m.add_job(work, DateTimeTrigger(datetime.now(UTC)))
        await m.start()
        try:
            await wait_until(lambda: done == 3)
            assert peak == 1
        finally:
            await m.shutdown()


class TestDuplicateIds:
    def test_old_replaces_silently(self):
        m = old.SchedulerManager()
        m.add_job(noop, old.IntervalTrigger(seconds=1), id="report")
        m.add_job(noop, old.IntervalTrigger(seconds=99), id="report")
        assert m.get_job("report").trigger.seconds == 99

    async def test_new_refuses_unless_asked(self, manager):
        manager.add_job(noop, IntervalTrigger(seconds=1), id="report")
        with pytest.raises(new.ConflictingIdError, match="'report' already exists"):
            manager.add_job(noop, IntervalTrigger(seconds=99), id="report")
        manager.add_job(noop, IntervalTrigger(seconds=99), id="report", replace_existing=True)
        assert manager.get_job("report").trigger.seconds == 99


class TestInputChecks:
    async def test_old_accepts_a_non_callable_and_fails_when_it_runs(self):
        m = old.SchedulerManager()
        job = m.add_job("not a function", old.IntervalTrigger(seconds=1), name="report")
        await m._execute_job(job)
        assert job.status is old.JobStatus.FAILED
        assert job.last_error == "'str' object is not callable"

    async def test_new_refuses_it_at_once(self, manager):
        with pytest.raises(TypeError, match="add_job needs a callable"):
            manager.add_job("not a function", IntervalTrigger(seconds=1))  # type: ignore[arg-type]

    def test_old_date_formats(self):
        with pytest.raises(ValueError, match="Could not parse datetime"):
            old.DateTimeTrigger("2026-12-25T10:30:00.500")
        with pytest.raises(TypeError):
            old.DateTimeTrigger(datetime(2026, 12, 25, tzinfo=UTC))  # type: ignore[arg-type]

    def test_new_date_formats(self):
        assert DateTimeTrigger("2026-12-25T10:30:00.500").run_date.microsecond == 500000
        aware = datetime(2026, 12, 25, tzinfo=UTC)
        assert DateTimeTrigger(aware).run_date == aware


# ---------------------------------------------------------------- the app's lifecycle


class TestGracefulShutdown:
    async def test_old_returns_while_runs_go_on_and_cancels_every_job(self):
        m = old.SchedulerManager()
        finished = []
        release = asyncio.Event()  # the run goes on until the test lets it end

        async def slow():
            await release.wait()
            finished.append(True)

        job = m.add_job(slow, old.IntervalTrigger(seconds=60))
        await m.start()
        await wait_until(lambda: job.current_instances == 1)
        await m.shutdown()
        assert finished == [] and job.current_instances == 1  # still running, unowned
        assert job.status is old.JobStatus.CANCELLED
        release.set()
        await wait_until(lambda: finished == [True])

    async def test_old_restart_runs_nothing(self):
        m = old.SchedulerManager()
        m.add_job(noop, old.IntervalTrigger(seconds=60))
        await m.start()
        await m.shutdown()
        await m.start()
        try:
            assert m._get_due_jobs(time.time() + 120) == []
            assert [j.status for j in m.get_jobs()] == [old.JobStatus.CANCELLED]
        finally:
            await m.shutdown()

    async def test_new_waits_for_runs_then_can_start_again(self, manager):
        finished = []

        async def slow():
            await asyncio.sleep(0.2)
            finished.append(True)

        job = manager.add_job(slow, IntervalTrigger(seconds=60))
        await manager.start()
        await wait_until(lambda: job.current_instances == 1)
        await manager.shutdown()
        assert finished == [True] and job.current_instances == 0
        assert job.status is JobStatus.ACTIVE
        await manager.start()
        assert job.next_run_time is not None


class TestAppLifespan:
    def test_old_never_starts_in_an_app_with_a_lifespan(self):
        import contextlib

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield

        app = NexiosApp(lifespan=lifespan)
        scheduler = old.setup_scheduler(app)
        with TestClient(app):
            assert scheduler._running is False

    def test_new_starts_and_stops_with_any_app(self):
        import contextlib

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield

        app = NexiosApp(lifespan=lifespan)
        scheduler = new.setup_scheduler(app)
        with TestClient(app):
            assert scheduler.running is True
        assert scheduler.running is False

    def test_old_get_scheduler_raises_attribute_error(self):
        with pytest.raises(AttributeError, match="Scheduler not initialised"):
            old.get_scheduler(NexiosApp())

    def test_new_get_scheduler_raises_scheduler_error(self):
        with pytest.raises(SchedulerError, match=r"call setup_scheduler\(app\)"):
            new.get_scheduler(NexiosApp())


class TestLogging:
    SCRIPT = (
        "import logging\n"
        "from {module} import SchedulerManager\n"
        "SchedulerManager()\n"
        "print(len(logging.getLogger().handlers), logging.getLogger().level)\n"
    )

    def _root_after(self, module: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", self.SCRIPT.format(module=module)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.split()

    def test_old_configures_the_root_logger(self):
        assert self._root_after("nexios_contrib.scheduler") == ["1", str(logging.INFO)]

    def test_new_leaves_the_root_logger_alone(self):
        assert self._root_after("nexios_contrib_scheduler") == ["0", str(logging.WARNING)]
