"""The three schedulers under test, behind one small interface.

Each adapter schedules the same jobs with its own scheduler's equivalent triggers:

* ``this``: this package's ``SchedulerManager``.
* ``apscheduler``: APScheduler 3's ``AsyncIOScheduler`` used directly.
* ``nexios_contrib``: ``nexios_contrib.scheduler`` (when installed).

Job options are made as equal as the schedulers allow: one instance per job, coalescing on,
no misfire limit (``nexios_contrib`` has no "no limit": it keeps its 30 s default). Every
scheduler's logger is set to WARNING so that no system pays for per-job log lines.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

UTC = timezone.utc

#: Global run limit given to this package's scheduler: above any workload's concurrency.
MAX_CONCURRENT_JOBS = 10_000

SYSTEMS = ("this", "apscheduler", "nexios_contrib")
LABELS = {
    "this": "this package",
    "apscheduler": "APScheduler 3 (raw)",
    "nexios_contrib": "nexios_contrib 0.5",
}

JobFunc = Callable[[], Awaitable[None]]


def available(key: str) -> bool:
    """Whether the system can be imported here."""
    if key == "nexios_contrib":
        return importlib.util.find_spec("nexios_contrib") is not None and (
            importlib.util.find_spec("nexios_contrib.scheduler") is not None
        )
    return True


async def idle_job() -> None:
    """The function of the jobs that exist only to be many (they never come due)."""


class Recorder:
    """Collects (call time, lateness) for every fire of the probes that share it."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.target = 0
        self.reached: Any = None  # an asyncio.Event set once ``target`` fires are in

    def window(self, start: float, end: float) -> list[float]:
        """Lateness of the fires called between ``start`` and ``end`` (epoch seconds)."""
        return [late for at, late in self.samples if start <= at <= end]

    def count(self, start: float, end: float) -> int:
        return sum(1 for at, _ in self.samples if start <= at <= end)


class Probe:
    """A job function that records how late each call is against when it was due.

    ``expected`` is the due time of the next call; after each call it moves on by
    ``interval`` (or, for a scheduler whose intervals are measured from the previous
    start, to what ``follow`` says the scheduler now holds as the job's next run).
    """

    __slots__ = ("expected", "follow", "interval", "recorder")

    def __init__(self, recorder: Recorder, expected: float, interval: float | None = None):
        self.recorder = recorder
        self.expected = expected
        self.interval = interval
        self.follow: Callable[[], float | None] | None = None

    async def fire(self) -> None:
        now = time.time()
        recorder = self.recorder
        recorder.samples.append((now, now - self.expected))
        if self.follow is not None:
            nxt = self.follow()
            if nxt is not None:
                self.expected = nxt
        elif self.interval is not None:
            self.expected += self.interval
        if recorder.reached is not None and len(recorder.samples) >= recorder.target:
            recorder.reached.set()


class System:
    """What a workload needs from a scheduler."""

    key = ""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def add_once(self, func: JobFunc, when: float, job_id: str) -> None:
        """A one-shot job due at ``when`` (epoch seconds, a whole second)."""
        raise NotImplementedError

    def add_every(self, func: JobFunc, seconds: int, job_id: str) -> float | None:
        """An interval job whose first fire is one interval from now; returns that time."""
        raise NotImplementedError

    def follow(self, job_id: str) -> Callable[[], float | None] | None:
        """How to read a job's next run time after each fire, when intervals drift."""
        return None

    def remove(self, job_id: str) -> None:
        raise NotImplementedError


class ThisPackage(System):
    key = "this"

    def __init__(self) -> None:
        from nexios_contrib_scheduler import SchedulerConfig, SchedulerManager

        config = SchedulerConfig(
            timezone="UTC",
            max_concurrent_jobs=MAX_CONCURRENT_JOBS,
            log_level=logging.WARNING,
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        self.manager = SchedulerManager(config=config)

    async def start(self) -> None:
        await self.manager.start()

    async def stop(self) -> None:
        await self.manager.shutdown(timeout=5)

    def add_once(self, func: JobFunc, when: float, job_id: str) -> None:
        from nexios_contrib_scheduler import DateTimeTrigger

        self.manager.add_job(func, DateTimeTrigger(datetime.fromtimestamp(when, UTC)), id=job_id)

    def add_every(self, func: JobFunc, seconds: int, job_id: str) -> float | None:
        from nexios_contrib_scheduler import IntervalTrigger

        job = self.manager.add_job(
            func, IntervalTrigger(seconds=seconds, start_now=False), id=job_id
        )
        nxt = job.next_run_time
        return None if nxt is None else nxt.timestamp()

    def remove(self, job_id: str) -> None:
        self.manager.remove_job(job_id)


class RawAPScheduler(System):
    key = "apscheduler"

    def __init__(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )

    async def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)

    def add_once(self, func: JobFunc, when: float, job_id: str) -> None:
        from apscheduler.triggers.date import DateTrigger

        trigger = DateTrigger(run_date=datetime.fromtimestamp(when, UTC), timezone=UTC)
        self.scheduler.add_job(func, trigger, id=job_id)

    def add_every(self, func: JobFunc, seconds: int, job_id: str) -> float | None:
        from apscheduler.triggers.interval import IntervalTrigger

        job = self.scheduler.add_job(
            func, IntervalTrigger(seconds=seconds, timezone=UTC), id=job_id
        )
        nxt = getattr(job, "next_run_time", None)
        return None if nxt is None else nxt.timestamp()

    def remove(self, job_id: str) -> None:
        self.scheduler.remove_job(job_id)


class NexiosContrib(System):
    key = "nexios_contrib"

    def __init__(self) -> None:
        from nexios_contrib.scheduler import SchedulerConfig, SchedulerManager  # type: ignore[import-untyped]

        config = SchedulerConfig(
            timezone="UTC", max_concurrent_jobs=MAX_CONCURRENT_JOBS, log_level=logging.WARNING
        )
        self.manager = SchedulerManager(config=config)
        # Importing nexios sets its logger to DEBUG; this scheduler logs every add at INFO.
        logging.getLogger("nexios.scheduler").setLevel(logging.WARNING)

    async def start(self) -> None:
        await self.manager.start()

    async def stop(self) -> None:
        await self.manager.shutdown()

    def add_once(self, func: JobFunc, when: float, job_id: str) -> None:
        from nexios_contrib.scheduler import DateTimeTrigger

        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self.manager.add_job(func, DateTimeTrigger(stamp), id=job_id)

    def add_every(self, func: JobFunc, seconds: int, job_id: str) -> float | None:
        from nexios_contrib.scheduler import IntervalTrigger

        job = self.manager.add_job(
            func, IntervalTrigger(seconds=seconds, start_now=False), id=job_id
        )
        nxt = job.next_run_time
        return None if nxt is None else float(nxt)

    def follow(self, job_id: str) -> Callable[[], float | None] | None:
        # Its next run is counted from the previous start, and is computed before the run.
        job = self.manager.get_job(job_id)
        return None if job is None else (lambda: job.next_run_time)

    def remove(self, job_id: str) -> None:
        self.manager.remove_job(job_id)


def make_system(key: str) -> System:
    factories: dict[str, Callable[[], System]] = {
        "this": ThisPackage,
        "apscheduler": RawAPScheduler,
        "nexios_contrib": NexiosContrib,
    }
    return factories[key]()
