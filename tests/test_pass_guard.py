"""One job cannot stop the scheduler: a trigger that misbehaves in the scheduling pass
fails its own job, and a scheduler whose event loop went away starts again on a new one."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, tzinfo

import pytest
from helpers import wait_until

from nexios_contrib_scheduler import IntervalTrigger, JobStatus, SchedulerConfig, SchedulerManager
from nexios_contrib_scheduler.triggers import ScheduleTrigger

# ---------------------------------------------------------------- triggers that misbehave

# A broken trigger gives a bad answer this many times and then says "no more fires", so
# that a scheduler which trusts it ends the job (and the test fails) instead of hanging.
_BAD_ANSWERS = 10_000


class _BadSchedule(ScheduleTrigger):
    """The real schedule for the first fire; after a fire, a bad next fire time."""

    def __init__(self, real: ScheduleTrigger, how: str) -> None:
        self.real = real
        self.how = how
        self.answers = 0

    def first_base(self, now: datetime) -> datetime | None:
        return self.real.first_base(now)

    def next_base(self, previous: datetime | None, now: datetime) -> datetime | None:
        return self.real.next_base(previous, now)

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        if previous is None:
            return self.real.get_next_fire_time(None, now)
        self.answers += 1
        if self.answers > _BAD_ANSWERS:
            return None
        if self.how == "stuck":
            return previous
        if self.how == "backwards":
            return previous - timedelta(seconds=1)
        if self.how == "naive":
            return (previous + timedelta(seconds=1)).replace(tzinfo=None)
        raise RuntimeError("the trigger broke")


class _BadTrigger(IntervalTrigger):
    def __init__(self, how: str) -> None:
        super().__init__(seconds=0.5)
        self.how = how

    def to_apscheduler(self, tz: tzinfo, now: datetime) -> ScheduleTrigger:
        return _BadSchedule(super().to_apscheduler(tz, now), self.how)


# ---------------------------------------------------------------- the pass guard


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("stuck", "later than the previous fire time"),
        ("backwards", "later than the previous fire time"),
        ("naive", "naive datetime"),
        ("raises", "RuntimeError: the trigger broke"),
    ],
)
async def test_a_trigger_that_misbehaves_fails_its_job_and_other_jobs_keep_firing(how, said):
    runs: Counter[str] = Counter()

    async def beat() -> None:
        runs["beat"] += 1

    async def bad() -> None:
        runs["bad"] += 1

    manager = SchedulerManager()
    manager.add_job(beat, IntervalTrigger(seconds=0.2), id="beat")
    manager.add_job(bad, _BadTrigger(how), id="bad")
    await manager.start()
    try:
        job = manager.get_job("bad")
        assert job is not None
        await wait_until(lambda: job.status is not JobStatus.ACTIVE, timeout=30)

        assert job.status is JobStatus.FAILED
        assert job.last_error is not None and said in job.last_error
        assert job.next_run_time is None
        beats = runs["beat"]
        await wait_until(lambda: runs["beat"] >= beats + 3, timeout=30)
        assert manager.get_job("bad").status is JobStatus.FAILED
    finally:
        await manager.shutdown()


# ---------------------------------------------------------------- a loop closed without shutdown

LOOP_RUNS: Counter[str] = Counter()


async def count_run(label: str) -> None:
    LOOP_RUNS[label] += 1


@pytest.fixture
def loop_runs():
    LOOP_RUNS.clear()
    yield LOOP_RUNS
    LOOP_RUNS.clear()


def _config(kind: str, tmp_path, **options) -> SchedulerConfig:
    if kind == "memory":
        return SchedulerConfig(**options)
    return SchedulerConfig(
        jobstore=f"sqlite:///{tmp_path}/jobs.db",
        coordination=f"file://{tmp_path}/scheduler.lock" if kind == "sqlite-coordinated" else None,
        **options,
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite", "sqlite-coordinated"])
def test_a_scheduler_whose_loop_closed_without_shutdown_starts_again_on_a_new_loop(
    kind, tmp_path, loop_runs
):
    manager = SchedulerManager(config=_config(kind, tmp_path))
    manager.add_job(count_run, IntervalTrigger(seconds=0.2), args=("beat",), id="beat")
    manager.add_job(count_run, IntervalTrigger(seconds=0.2), args=("gone",), id="gone")

    async def first_life() -> None:
        await manager.start()
        await wait_until(lambda: loop_runs["beat"] >= 1 and loop_runs["gone"] >= 1, timeout=30)

    asyncio.run(first_life())  # the loop closes; shutdown() is never called

    assert not manager.running
    assert not manager.is_leader
    if kind == "memory":
        assert manager.remove_job("gone")
    later = IntervalTrigger(seconds=0.2)
    manager.add_job(count_run, later, args=("added later",), id="added later")
    gone_runs = loop_runs["gone"]

    async def second_life() -> None:
        beats = loop_runs["beat"]
        await manager.start()
        try:
            assert manager.running
            await wait_until(
                lambda: loop_runs["beat"] >= beats + 3 and loop_runs["added later"] >= 3,
                timeout=30,
            )
            assert manager.get_job("beat").next_run_time is not None
        finally:
            await manager.shutdown()

    asyncio.run(second_life())
    assert not manager.running
    if kind == "memory":
        assert loop_runs["gone"] == gone_runs


def test_a_leader_whose_loop_closed_without_shutdown_lets_another_worker_lead(tmp_path, loop_runs):
    config = _config("sqlite-coordinated", tmp_path, lease_seconds=1)
    first = SchedulerManager(config=config)
    first.add_job(count_run, IntervalTrigger(seconds=0.2), args=("beat",), id="beat")

    async def first_life() -> None:
        await first.start()
        await wait_until(lambda: first.is_leader and loop_runs["beat"] >= 1, timeout=30)

    asyncio.run(first_life())  # the leader's loop closes; shutdown() is never called

    second = SchedulerManager(config=config)

    async def other_worker() -> None:
        await second.start()
        try:
            await wait_until(lambda: second.is_leader, timeout=60)
            beats = loop_runs["beat"]
            await wait_until(lambda: loop_runs["beat"] >= beats + 2, timeout=30)
        finally:
            await second.shutdown()

    asyncio.run(other_worker())
