"""One job cannot stop the scheduler: a trigger that misbehaves in the scheduling pass
fails its own job."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, tzinfo

import pytest
from helpers import wait_until

from nexios_contrib_scheduler import IntervalTrigger, JobStatus, SchedulerManager
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
