from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from helpers import wait_until

from nexios_contrib_scheduler import (
    ConflictingIdError,
    DateTimeTrigger,
    IntervalTrigger,
    JobNotFoundError,
    JobStatus,
    SchedulerConfig,
    SchedulerManager,
)

UTC = timezone.utc


async def noop() -> None:
    pass


@pytest.fixture
async def manager():
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
    yield m
    await m.shutdown()


class Counter:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    async def __call__(self, *args, **kwargs) -> None:
        self.calls.append((args, kwargs))

    @property
    def count(self) -> int:
        return len(self.calls)


class TestAddJob:
    async def test_returns_a_live_view_with_the_options(self, manager):
        job = manager.add_job(
            noop,
            IntervalTrigger(seconds=30),
            name="my_periodic_task",
            args=("arg1",),
            kwargs={"key": "value"},
            max_instances=3,
            misfire_grace_time=30,
            coalesce=True,
            id="my-job-id",
        )
        assert job.id == "my-job-id"
        assert job.name == "my_periodic_task"
        assert job.func is noop
        assert job.args == ("arg1",)
        assert job.kwargs == {"key": "value"}
        assert (job.max_instances, job.misfire_grace_time, job.coalesce) == (3, 30, True)
        assert job.status is JobStatus.ACTIVE
        assert job.total_run_count == 0
        assert job.last_run_time is None and job.last_error is None
        assert job.created_at.tzinfo is not None

    async def test_generated_id_and_default_name(self, manager):
        a = manager.add_job(noop, IntervalTrigger(seconds=1))
        b = manager.add_job(noop, IntervalTrigger(seconds=1))
        assert a.id != b.id and len(a.id) == 32
        assert a.name == "noop"

    async def test_next_run_time_is_known_before_start(self, manager):
        before = datetime.now(UTC)
        job = manager.add_job(noop, IntervalTrigger(minutes=5, start_now=False))
        assert job.next_run_time is not None
        assert job.next_run_time.tzinfo is not None
        assert (
            before + timedelta(minutes=5)
            <= job.next_run_time
            <= datetime.now(UTC) + timedelta(minutes=5)
        )
        date_job = manager.add_job(noop, DateTimeTrigger("2099-12-25T10:30:00"))
        assert date_job.next_run_time == datetime(2099, 12, 25, 10, 30, tzinfo=UTC)

    async def test_options_default_from_config(self):
        m = SchedulerManager(
            config=SchedulerConfig(
                job_defaults={"max_instances": 7, "misfire_grace_time": 12.5, "coalesce": False}
            )
        )
        job = m.add_job(noop, IntervalTrigger(seconds=1))
        assert (job.max_instances, job.misfire_grace_time, job.coalesce) == (7, 12.5, False)

    async def test_explicit_falsy_options_are_honoured(self, manager):
        job = manager.add_job(noop, IntervalTrigger(seconds=1), coalesce=False)
        assert job.coalesce is False

    async def test_grace_none_in_defaults_runs_however_late(self):
        m = SchedulerManager(config=SchedulerConfig(job_defaults={"misfire_grace_time": None}))
        assert m.add_job(noop, IntervalTrigger(seconds=1)).misfire_grace_time is None

    @pytest.mark.parametrize("grace", [0, -1, -0.5])
    async def test_non_positive_grace_is_refused(self, manager, grace):
        with pytest.raises(ValueError, match="misfire_grace_time must be a positive"):
            manager.add_job(noop, IntervalTrigger(seconds=1), misfire_grace_time=grace)
        assert manager.get_jobs() == []

    async def test_duplicate_id_conflicts(self, manager):
        manager.add_job(noop, IntervalTrigger(seconds=1), id="x")
        with pytest.raises(ConflictingIdError, match="'x'"):
            manager.add_job(noop, IntervalTrigger(seconds=2), id="x")
        assert len(manager.get_jobs()) == 1

    async def test_duplicate_id_conflicts_when_running(self, manager):
        await manager.start()
        manager.add_job(noop, IntervalTrigger(seconds=10), id="x")
        with pytest.raises(ConflictingIdError):
            manager.add_job(noop, IntervalTrigger(seconds=20), id="x")
        assert len(manager.apscheduler.get_jobs()) == 1

    async def test_replace_existing_replaces(self, manager):
        old = manager.add_job(noop, IntervalTrigger(seconds=1), id="x", name="old")
        new = manager.add_job(
            noop, IntervalTrigger(seconds=2), id="x", name="new", replace_existing=True
        )
        assert manager.get_job("x").name == "new"
        assert old.status is JobStatus.CANCELLED and new.status is JobStatus.ACTIVE
        await manager.start()
        assert [j.name for j in manager.apscheduler.get_jobs()] == ["new"]

    @pytest.mark.parametrize("bad", [None, 42, "not callable"])
    async def test_non_callable_is_a_type_error(self, manager, bad):
        with pytest.raises(TypeError, match="callable"):
            manager.add_job(bad, IntervalTrigger(seconds=1))

    async def test_coroutine_object_is_a_type_error(self, manager):
        with pytest.raises(TypeError, match="not a coroutine object"):
            manager.add_job(noop(), IntervalTrigger(seconds=1))

    async def test_unknown_option_is_a_type_error(self, manager):
        with pytest.raises(TypeError):
            manager.add_job(noop, IntervalTrigger(seconds=1), bogus=1)

    async def test_trigger_must_be_one_of_ours(self, manager):
        with pytest.raises(TypeError, match="IntervalTrigger, CronTrigger or DateTimeTrigger"):
            manager.add_job(noop, "*/5 * * * *")


class TestOperations:
    async def test_unknown_ids(self, manager):
        assert manager.get_job("nope") is None
        assert manager.remove_job("nope") is False
        assert manager.pause_job("nope") is False
        assert manager.resume_job("nope") is False

    async def test_remove_cancels_and_forgets(self, manager):
        job = manager.add_job(noop, IntervalTrigger(seconds=10), id="x")
        await manager.start()
        assert manager.remove_job("x") is True
        assert job.status is JobStatus.CANCELLED
        assert job.next_run_time is None
        assert manager.get_job("x") is None
        assert manager.apscheduler.get_job("x") is None
        assert manager.remove_job("x") is False

    async def test_get_jobs_filters_by_status(self, manager):
        manager.add_job(noop, IntervalTrigger(seconds=10), id="a")
        manager.add_job(noop, IntervalTrigger(seconds=10), id="b")
        manager.pause_job("b")
        assert [j.id for j in manager.get_jobs()] == ["a", "b"]
        assert [j.id for j in manager.get_jobs(status=JobStatus.ACTIVE)] == ["a"]
        assert [j.id for j in manager.get_jobs(status="PAUSED")] == ["b"]
        with pytest.raises(ValueError):
            manager.get_jobs(status="SLEEPING")

    async def test_pause_and_resume_while_running(self, manager):
        job = manager.add_job(noop, IntervalTrigger(seconds=60, start_now=False), id="x")
        await manager.start()
        first = job.next_run_time
        assert manager.pause_job("x") is True
        assert job.status is JobStatus.PAUSED and job.next_run_time is None
        assert manager.apscheduler.get_job("x").next_run_time is None
        assert manager.resume_job("x") is True
        assert job.status is JobStatus.ACTIVE
        # Resuming recomputes from the interval grid: same slot, the job was paused briefly.
        assert job.next_run_time == first

    async def test_pause_before_start_keeps_job_paused_at_start(self, manager, scheduler_clock):
        counter = Counter()
        manager.add_job(counter, IntervalTrigger(seconds=0.02), id="x")
        manager.pause_job("x")
        await manager.start()
        await scheduler_clock.advance(seconds=1)  # fifty fires, had it not been paused
        assert counter.count == 0
        assert manager.get_job("x").next_run_time is None
        manager.resume_job("x")
        await wait_until(lambda: counter.count >= 1)

    async def test_resume_of_an_active_job_is_harmless(self, manager):
        job = manager.add_job(noop, IntervalTrigger(seconds=60), id="x")
        assert manager.resume_job("x") is True
        assert job.status is JobStatus.ACTIVE

    async def test_paused_job_does_not_fire(self, manager, scheduler_clock):
        counter = Counter()
        manager.add_job(counter, IntervalTrigger(seconds=10, start_now=False), id="x")
        await manager.start()
        await scheduler_clock.advance(seconds=10)
        assert counter.count == 1
        manager.pause_job("x")
        await scheduler_clock.advance(minutes=5, seconds=3)
        assert counter.count == 1
        manager.resume_job("x")  # back on the 10 s grid: next fire at 5:20
        await scheduler_clock.advance(seconds=6)
        assert counter.count == 1
        await scheduler_clock.advance(seconds=1)
        assert counter.count == 2


class TestRunning:
    async def test_args_and_kwargs_are_passed(self, manager):
        counter = Counter()
        manager.add_job(counter, IntervalTrigger(seconds=60), args=(1, 2), kwargs={"k": "v"})
        await manager.start()
        await wait_until(lambda: counter.count == 1)
        assert counter.calls == [((1, 2), {"k": "v"})]

    async def test_start_now_runs_once_at_start_then_every_interval(self, manager, scheduler_clock):
        counter = Counter()
        job = manager.add_job(counter, IntervalTrigger(seconds=30))
        await manager.start()
        await scheduler_clock.run_due()
        assert counter.count == 1
        assert job.last_run_time == scheduler_clock.now()
        await scheduler_clock.advance(seconds=29)
        assert counter.count == 1  # exactly once at start, not twice
        await scheduler_clock.advance(seconds=1)
        assert job.total_run_count == 2
        await scheduler_clock.advance(seconds=90)
        assert job.total_run_count == 5

    async def test_start_now_false_waits_one_interval(self, manager, scheduler_clock):
        counter = Counter()
        job = manager.add_job(counter, IntervalTrigger(seconds=30, start_now=False))
        await manager.start()
        await scheduler_clock.advance(seconds=29)
        assert counter.count == 0
        await scheduler_clock.advance(seconds=1)
        assert job.total_run_count == 1

    async def test_sync_job_runs_in_a_worker_thread(self, manager):
        threads: list[int] = []
        manager.add_job(lambda: threads.append(threading.get_ident()), IntervalTrigger(seconds=60))
        await manager.start()
        await wait_until(lambda: threads)
        assert threads[0] != threading.get_ident()

    async def test_sync_job_does_not_block_the_loop(self, manager):
        release = threading.Event()
        job = manager.add_job(release.wait, IntervalTrigger(seconds=60))
        await manager.start()
        # The job blocks its thread until the loop, still free, releases it.
        await wait_until(lambda: job.current_instances == 1)
        release.set()
        await wait_until(lambda: job.current_instances == 0)
        assert job.history[0].outcome == "success"

    async def test_one_shot_completes(self, manager):
        counter = Counter()
        soon = datetime.now(UTC) + timedelta(seconds=0.05)
        job = manager.add_job(counter, DateTimeTrigger(soon))
        await manager.start()
        await wait_until(lambda: job.status is JobStatus.COMPLETED)
        assert counter.count == 1
        assert job.next_run_time is None
        assert job.total_run_count == 1
        assert manager.get_jobs(status=JobStatus.COMPLETED) == [job]
        assert manager.pause_job(job.id) is False

    async def test_failing_one_shot_ends_failed(self, manager):
        async def boom():
            raise ValueError("boom")

        job = manager.add_job(boom, DateTimeTrigger(datetime.now(UTC)))
        await manager.start()
        await wait_until(lambda: job.status is JobStatus.FAILED)
        assert job.last_error == "ValueError: boom"
        assert manager.get_jobs() == [job]

    async def test_failed_recurring_job_keeps_firing_and_recovers(self, manager, scheduler_clock):
        outcomes = iter([ValueError("boom"), None, None])

        async def flaky():
            exc = next(outcomes)
            if exc:
                raise exc

        job = manager.add_job(flaky, IntervalTrigger(seconds=10))
        await manager.start()
        await scheduler_clock.run_due()
        assert job.total_run_count == 1
        assert job.status is JobStatus.FAILED
        assert job.last_error == "ValueError: boom"
        assert job.next_run_time is not None  # still scheduled
        await scheduler_clock.advance(seconds=10)
        assert job.total_run_count == 2
        assert job.status is JobStatus.ACTIVE
        assert job.last_error == "ValueError: boom"  # kept for inspection

    @pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, GeneratorExit])
    async def test_base_exceptions_are_recorded_not_propagated(self, manager, exc_type):
        async def bad():
            raise exc_type("bye")

        counter = Counter()
        bad_job = manager.add_job(bad, IntervalTrigger(seconds=0.05))
        manager.add_job(counter, IntervalTrigger(seconds=0.05))
        await manager.start()
        await wait_until(lambda: bad_job.total_run_count >= 2 and counter.count >= 3)
        assert bad_job.status is JobStatus.FAILED
        assert bad_job.last_error == f"{exc_type.__name__}: bye"
        assert manager.running

    async def test_sync_job_raising_system_exit_is_recorded(self, manager):
        def bad():
            raise SystemExit(3)

        job = manager.add_job(bad, IntervalTrigger(seconds=60))
        await manager.start()
        await wait_until(lambda: job.status is JobStatus.FAILED)
        assert job.last_error == "SystemExit: 3"

    async def test_missed_one_shot_fails_with_reason(self, manager, caplog):
        past = datetime.now(UTC) - timedelta(minutes=5)
        job = manager.add_job(noop, DateTimeTrigger(past), misfire_grace_time=10, name="late")
        with caplog.at_level(logging.WARNING, logger="nexios_contrib_scheduler"):
            await manager.start()
            await wait_until(lambda: job.status is JobStatus.FAILED)
        assert job.total_run_count == 0
        assert "missed" in job.last_error and "misfire_grace_time of 10s" in job.last_error
        assert any("late" in r.getMessage() and "missed" in r.getMessage() for r in caplog.records)

    async def test_past_one_shot_without_grace_runs(self):
        m = SchedulerManager(config=SchedulerConfig(job_defaults={"misfire_grace_time": None}))
        past = datetime.now(UTC) - timedelta(days=3)
        job = m.add_job(noop, DateTimeTrigger(past))
        await m.start()
        try:
            await wait_until(lambda: job.status is JobStatus.COMPLETED)
            assert job.total_run_count == 1
        finally:
            await m.shutdown()


class TestGuards:
    async def test_max_instances_skips_and_logs(self, manager, caplog):
        release = asyncio.Event()

        async def slow():
            await release.wait()

        job = manager.add_job(slow, IntervalTrigger(seconds=0.03), max_instances=2, name="slowpoke")
        with caplog.at_level(logging.WARNING, logger="nexios_contrib_scheduler"):
            await manager.start()
            await wait_until(lambda: job.current_instances == 2 and job.skipped_count >= 2)
        assert job.total_run_count == 2  # a skipped fire is not a run
        assert any(
            "slowpoke" in r.getMessage() and "max_instances" in r.getMessage()
            for r in caplog.records
        )
        release.set()
        await wait_until(lambda: job.current_instances == 0 or job.total_run_count > 2)

    async def test_global_limit_makes_runs_wait_for_a_slot(self):
        m = SchedulerManager(config=SchedulerConfig(max_concurrent_jobs=2, shutdown_timeout=1))
        running = 0
        peak = 0
        done = 0

        async def work():
            nonlocal running, peak, done
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1
            done += 1

        for _ in range(6):
            m.add_job(work, DateTimeTrigger(datetime.now(UTC)))
        await m.start()
        try:
            await wait_until(lambda: done == 6)
            assert peak == 2
        finally:
            await m.shutdown()

    async def test_coalesce_merges_a_backlog_into_one_run(self, manager, scheduler_clock):
        counter = Counter()
        job = manager.add_job(counter, IntervalTrigger(seconds=10, start_now=False), coalesce=True)
        await manager.start()
        await scheduler_clock.jump(seconds=65)  # six fire times pass while the process stalls
        assert counter.count == 1
        assert job.missed_count == 0
        assert job.history[0].scheduled_time == scheduler_clock.now() - timedelta(seconds=5)

    async def test_no_coalesce_runs_every_missed_fire_inside_grace(self, manager, scheduler_clock):
        counter = Counter()
        job = manager.add_job(
            counter,
            IntervalTrigger(seconds=10, start_now=False),
            coalesce=False,
            misfire_grace_time=35,
        )
        await manager.start()
        # Fire times at 10 .. 60 s pass unserved; at 65 s those within 35 s (30 .. 60) run.
        await scheduler_clock.jump(seconds=65)
        assert counter.count == 4
        assert job.missed_count == 2
        assert sorted(r.outcome for r in job.history) == ["missed"] * 2 + ["success"] * 4


class TestLifecycle:
    async def test_start_is_idempotent_and_running_flag(self, manager):
        assert not manager.running
        await manager.start()
        await manager.start()
        assert manager.running
        await manager.shutdown()
        assert not manager.running
        await manager.shutdown()

    async def test_restart_restores_jobs(self, manager):
        counter = Counter()
        manager.add_job(counter, IntervalTrigger(seconds=0.05), id="tick")
        manager.add_job(noop, IntervalTrigger(seconds=60), id="paused")
        manager.pause_job("paused")
        await manager.start()
        await wait_until(lambda: counter.count >= 1)
        await manager.shutdown()
        assert manager.apscheduler.get_jobs() == []
        seen = counter.count
        await manager.start()
        await wait_until(lambda: counter.count > seen)
        assert {j.id for j in manager.apscheduler.get_jobs()} == {"tick", "paused"}
        assert manager.get_job("paused").status is JobStatus.PAUSED

    async def test_shutdown_waits_for_running_jobs(self, manager):
        finished = []

        async def slow():
            await asyncio.sleep(0.2)
            finished.append(True)

        job = manager.add_job(slow, IntervalTrigger(seconds=60))
        await manager.start()
        await wait_until(lambda: job.current_instances == 1)
        await manager.shutdown()
        assert finished == [True]
        assert job.history[0].outcome == "success"

    async def test_shutdown_cancels_runs_past_the_timeout(self, caplog):
        m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=0.1))
        cancelled = []

        async def hang():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        job = m.add_job(hang, IntervalTrigger(seconds=60), name="hanger")
        await m.start()
        await wait_until(lambda: job.current_instances == 1)
        with caplog.at_level(logging.WARNING, logger="nexios_contrib_scheduler"):
            started = time.monotonic()
            await m.shutdown()
        assert time.monotonic() - started < 10  # 0.1 s of grace, not the job's 60 s
        assert cancelled == [True]
        assert job.current_instances == 0
        assert job.history[0].outcome == "cancelled"
        assert any("hanger" in r.getMessage() for r in caplog.records)
        assert not m.running

    async def test_no_firing_after_shutdown(self, manager):
        counter = Counter()
        manager.add_job(counter, IntervalTrigger(seconds=0.02))
        await manager.start()
        await wait_until(lambda: counter.count >= 1)
        await manager.shutdown()
        seen = counter.count
        await asyncio.sleep(0.1)
        assert counter.count == seen

    async def test_log_level_sets_only_our_logger(self):
        ours = logging.getLogger("nexios_contrib_scheduler")
        root, before = logging.getLogger().level, ours.level
        try:
            SchedulerManager(config=SchedulerConfig(log_level=logging.DEBUG))
            assert ours.level == logging.DEBUG
            assert logging.getLogger().level == root
            SchedulerManager()  # no log_level given: the level set before stays
            assert ours.level == logging.DEBUG
        finally:
            ours.setLevel(before)


class TestRunNowRescheduleAndPauseReason:
    async def test_run_now_runs_once_without_moving_the_schedule(self, manager):
        counter = Counter()
        job = manager.add_job(counter, IntervalTrigger(hours=1, start_now=False), id="x")
        await manager.start()
        before = job.next_run_time
        assert manager.run_job_now("x") is True
        await wait_until(lambda: counter.count == 1 and job.current_instances == 0)
        assert job.total_run_count == 1
        assert job.next_run_time == before
        assert job.history[0].outcome == "success" and job.history[0].scheduled_time is None

    async def test_run_now_works_on_a_paused_job(self, manager):
        counter = Counter()
        job = manager.add_job(counter, IntervalTrigger(hours=1), id="x")
        manager.pause_job("x")
        await manager.start()
        assert manager.run_job_now("x") is True
        await wait_until(lambda: counter.count == 1)
        assert job.status is JobStatus.PAUSED

    async def test_run_now_respects_max_instances(self, manager):
        release = asyncio.Event()

        async def slow():
            await release.wait()

        job = manager.add_job(slow, IntervalTrigger(hours=1), max_instances=1, id="x")
        await manager.start()
        await wait_until(lambda: job.current_instances == 1)
        assert manager.run_job_now("x") is False
        release.set()
        await wait_until(lambda: job.current_instances == 0)
        assert manager.run_job_now("x") is True
        await wait_until(lambda: job.total_run_count == 2)

    async def test_run_now_unknown_or_stopped(self, manager):
        manager.add_job(noop, IntervalTrigger(hours=1), id="x")
        assert manager.run_job_now("nope") is False
        assert manager.run_job_now("x") is False  # not started: nothing can run

    async def test_reschedule_changes_the_trigger(self, manager):
        job = manager.add_job(noop, IntervalTrigger(hours=1, start_now=False), id="x")
        await manager.start()
        view = manager.reschedule_job("x", DateTimeTrigger("2099-01-01T00:00:00"))
        assert view == job
        assert job.next_run_time == datetime(2099, 1, 1, tzinfo=UTC)
        with pytest.raises(JobNotFoundError, match="'nope'"):
            manager.reschedule_job("nope", IntervalTrigger(seconds=1))
        with pytest.raises(TypeError):
            manager.reschedule_job("x", "0 * * * *")

    async def test_reschedule_revives_a_completed_job(self, manager):
        counter = Counter()
        job = manager.add_job(counter, DateTimeTrigger(datetime.now(UTC)), id="x")
        await manager.start()
        await wait_until(lambda: job.status is JobStatus.COMPLETED)
        manager.reschedule_job("x", IntervalTrigger(hours=1))
        assert job.status is JobStatus.ACTIVE
        await wait_until(lambda: counter.count == 2)

    async def test_pause_reason_is_kept_until_resume(self, manager):
        job = manager.add_job(noop, IntervalTrigger(hours=1), id="x")
        assert manager.pause_job("x", reason="maintenance window") is True
        assert job.paused_reason == "maintenance window"
        assert job.to_dict()["paused_reason"] == "maintenance window"
        manager.resume_job("x")
        assert job.paused_reason is None


class TestTimeZones:
    async def test_next_run_time_is_shown_in_the_scheduler_zone(self):
        from zoneinfo import ZoneInfo

        from nexios_contrib_scheduler import CronTrigger

        riga = ZoneInfo("Europe/Riga")
        m = SchedulerManager(config=SchedulerConfig(timezone="Europe/Riga"))
        job = m.add_job(noop, CronTrigger("30 3 * * *"))
        assert job.next_run_time.tzinfo is riga
        assert (job.next_run_time.hour, job.next_run_time.minute) == (3, 30)
        await m.start()
        try:
            assert job.next_run_time.tzinfo is riga
            assert (job.next_run_time.hour, job.next_run_time.minute) == (3, 30)
            # APScheduler itself works on UTC instants, so its wakeup arithmetic holds
            # across daylight-saving changes.
            assert m.apscheduler.timezone == UTC
        finally:
            await m.shutdown()


async def test_to_dict_is_json_ready(manager):
    import json

    class Client:
        def __repr__(self) -> str:
            return "<Client>"

    job = manager.add_job(
        noop,
        IntervalTrigger(seconds=30),
        args=(Client(), [1, "a"]),
        kwargs={"when": datetime(2026, 1, 1, tzinfo=UTC)},
        id="x",
    )
    data = json.loads(json.dumps(job.to_dict()))
    assert data["args"] == ["<Client>", [1, "a"]]
    assert data["kwargs"] == {"when": repr(datetime(2026, 1, 1, tzinfo=UTC))}
    assert data["status"] == "ACTIVE"
    assert data["trigger"] == {"type": "interval", "seconds": 30, "start_now": True}
    assert datetime.fromisoformat(data["next_run_time"]) == job.next_run_time
    assert datetime.fromisoformat(data["created_at"]) == job.created_at
