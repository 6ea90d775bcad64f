"""What a job costs the garbage collector: the objects it tracks for each job held.

CPython's full collections examine every tracked object with the interpreter (and so the
event loop) stopped, and one runs each time the tracked objects grow by a quarter: with
20,000 jobs each object a job keeps adds about 10 ms to those pauses. A job keeps its
record, its public view, APScheduler's job, the trigger and its schedule; nothing else
(index entries are tuples of plain values, which the collector stops tracking).
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from nexios_contrib_scheduler import IntervalTrigger, SchedulerConfig, SchedulerManager

JOBS = 2000
#: The record, its ScheduledJob view, APScheduler's Job, the IntervalTrigger, its schedule.
PER_JOB = 5


async def idle() -> None:
    return None


def _tracked() -> int:
    gc.collect()
    return len(gc.get_objects())


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_job_keeps_five_tracked_objects(store: str, tmp_path: Path) -> None:
    jobstore = "memory" if store == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    manager = SchedulerManager(SchedulerConfig(timezone="UTC", jobstore=jobstore))
    await manager.start()
    try:
        before = _tracked()
        for i in range(JOBS):
            manager.add_job(idle, IntervalTrigger(seconds=3600 + i), id=f"job-{i}")
        assert await manager.flush(60)
        per_job = (_tracked() - before) / JOBS
    finally:
        await manager.shutdown()
    assert per_job < PER_JOB + 0.1, f"{per_job:.2f} tracked objects a job"
