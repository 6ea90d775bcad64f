"""Deterministic time for tests of scheduled jobs: the ``scheduler_clock`` pytest fixture.

Installed with the package, this module is a pytest plugin: any test can ask for the
``scheduler_clock`` fixture, a ``FrozenClock`` that every scheduler in the process reads
instead of the system clock. While it is in place the schedulers arm no timers; the test
moves the clock and the clock runs whatever became due, then waits for those runs::

    async def test_report_runs_hourly(scheduler_clock):
        scheduler = SchedulerManager()
        job = scheduler.add_job(send_report, CronTrigger("0 * * * *"))
        await scheduler.start()
        await scheduler_clock.advance(hours=3)
        assert job.total_run_count == 3

``advance``/``move_to`` let time pass as it would with the scheduler awake: every fire on
the way runs at its own time. ``jump``/``jump_to`` leap over time the way a suspended
laptop or a stalled process does: the scheduler sees the clock once, at the end, so
``misfire_grace_time`` and ``coalesce`` decide what runs.

The clock drives the schedule, not the passage of time inside a run: ``asyncio.sleep`` in
a job and per-job ``timeout`` still take real time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

import apscheduler.schedulers.base as _aps_base
import pytest

from . import clock as _clock
from .triggers import parse_datetime

if TYPE_CHECKING:
    from .manager import SchedulerManager

__all__ = ["FrozenClock", "scheduler_clock"]

UTC = timezone.utc
_REAL_DATETIME = datetime
_TURNS = 5  # loop turns that let freshly submitted runs start


def _read_when(when: datetime | str) -> datetime:
    when = parse_datetime(when, "FrozenClock time")
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=UTC)  # naive values are UTC
    return when.astimezone(UTC)


def _span(
    seconds: float | timedelta, minutes: float, hours: float, days: float, weeks: float
) -> timedelta:
    base = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
    span = base + timedelta(minutes=minutes, hours=hours, days=days, weeks=weeks)
    if span < timedelta(0):
        raise ValueError(f"the clock only moves forward here, not by {span}; use jump_to")
    return span


class FrozenClock:
    """A clock that moves only when told to, and runs what becomes due as it moves.

    ``start`` (default: the real time when built, to the second) is where it starts;
    naive datetimes and ISO strings without an offset are read as UTC. ``run_timeout`` is
    how many real seconds a move waits for the runs it started before failing the test.
    """

    frozen = True

    def __init__(self, start: datetime | str | None = None, *, run_timeout: float = 30.0) -> None:
        now = datetime.now(UTC).replace(microsecond=0) if start is None else _read_when(start)
        self._now = now
        self.run_timeout = run_timeout
        self._previous: _clock.Clock | None = None
        self._saved_datetime: Any = None

    # ------------------------------------------------------------ the clock protocol

    def now(self) -> datetime:
        """The clock's current time, aware, in UTC."""
        return self._now

    # ------------------------------------------------------------ installing

    def install(self) -> None:
        """Make every scheduler in the process read this clock (the fixture does this)."""
        if self._previous is not None:
            return
        self._previous = _clock.set_clock(self)
        # APScheduler reads datetime.now() itself when it looks for due jobs.
        self._saved_datetime = _aps_base.datetime
        _aps_base.datetime = _clock_datetime(self)
        for manager in _clock.running_managers():
            manager.apscheduler.stop_timer()

    def uninstall(self) -> None:
        """Give the schedulers back the clock they had; running ones re-arm real timers."""
        if self._previous is None:
            return
        _clock.set_clock(self._previous)
        _aps_base.datetime = self._saved_datetime
        self._previous = None
        for manager in _clock.running_managers():
            loop = manager.apscheduler.event_loop
            if manager.running and loop is not None and not loop.is_closed():
                manager.apscheduler.wakeup()

    def __enter__(self) -> FrozenClock:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # ------------------------------------------------------------ moving

    def set(self, when: datetime | str) -> None:
        """Put the clock at ``when`` without running anything, e.g. before ``start()``."""
        self._now = _read_when(when)

    async def run_due(self, *, wait: bool = True) -> None:
        """Run what is due at the current time (and wait for the runs)."""
        await self._settle(wait)

    async def advance(
        self,
        seconds: float | timedelta = 0,
        *,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
        weeks: float = 0,
        wait: bool = True,
    ) -> None:
        """Let time pass: each fire on the way runs at its own time, in order.

        With ``wait=True`` each step waits for the runs it started (and the async
        listeners they called); with ``wait=False`` runs are only started, which is how a
        test keeps a run in progress while the clock moves on.
        """
        await self.move_to(self._now + _span(seconds, minutes, hours, days, weeks), wait=wait)

    async def move_to(self, when: datetime | str, *, wait: bool = True) -> None:
        """Like ``advance``, to an absolute time (which may not be in the past)."""
        target = _read_when(when)
        if target < self._now:
            raise ValueError(
                f"move_to({target.isoformat()}) would move the clock back from "
                f"{self._now.isoformat()}; use jump_to to set it back"
            )
        due = await self._settle(wait)
        stalled = 0
        while due is not None and due <= target:
            if due > self._now:
                self._now = due
                stalled = 0
            else:
                stalled += 1  # due now and still not run (a scheduler shutting down)
                if stalled > 3:
                    break
            due = await self._settle(wait)
        self._now = target
        await self._settle(wait)

    async def jump(
        self,
        seconds: float | timedelta = 0,
        *,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
        weeks: float = 0,
        wait: bool = True,
    ) -> None:
        """Leap forward; the scheduler sees only the end, as after a suspended process.

        Fires passed over are late by the time from them to the end of the jump:
        ``coalesce=True`` gives one catch-up run, ``coalesce=False`` one run per fire still
        inside ``misfire_grace_time`` and a ``missed`` record for each of the others.
        """
        await self.jump_to(self._now + _span(seconds, minutes, hours, days, weeks), wait=wait)

    async def jump_to(self, when: datetime | str, *, wait: bool = True) -> None:
        """Set the clock to ``when`` (forward or back) and run what is due then."""
        self._now = _read_when(when)
        await self._settle(wait)

    # ------------------------------------------------------------ driving the schedulers

    async def _settle(self, wait: bool) -> datetime | None:
        """Process due jobs in every running scheduler; the earliest next run after."""
        here = asyncio.get_running_loop()
        groups: dict[asyncio.AbstractEventLoop, list[SchedulerManager]] = {}
        for manager in _clock.running_managers():
            loop = manager.apscheduler.event_loop
            if manager.running and loop is not None and not loop.is_closed():
                groups.setdefault(loop, []).append(manager)
        soonest: datetime | None = None
        for loop, managers in groups.items():
            if loop is here:
                due = await self._settle_on_loop(managers, wait)
            else:  # a scheduler on another thread's loop, as under nexios' TestClient
                future: concurrent.futures.Future[datetime | None]
                future = asyncio.run_coroutine_threadsafe(
                    self._settle_on_loop(managers, wait), loop
                )
                due = await asyncio.wrap_future(future)
            if due is not None and (soonest is None or due < soonest):
                soonest = due
        return soonest

    async def _settle_on_loop(
        self, managers: list[SchedulerManager], wait: bool
    ) -> datetime | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.run_timeout
        while True:
            for manager in managers:
                if manager.running:
                    manager.apscheduler.run_due()
            for manager in managers:
                # A persistent store's claims are written off the loop; the runs wait for them.
                await manager.flush()
            for _ in range(_TURNS):
                await asyncio.sleep(0)
            pending = {
                task
                for manager in managers
                for task in (*manager.executor.tasks, *manager.listeners.tasks)
                if not task.done()
            }
            if not wait or not pending:
                break
            _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
            if still:
                names = sorted(
                    {
                        m.executor.tasks[t].name
                        for m in managers
                        for t in still
                        if t in m.executor.tasks
                    }
                )
                raise AssertionError(
                    f"runs still going after {self.run_timeout:g}s of real time: "
                    f"{', '.join(names) or 'listener callbacks'}; pass wait=False to move "
                    "the clock while runs are in progress"
                )
        return _earliest_next_run(managers)


def _earliest_next_run(managers: list[SchedulerManager]) -> datetime | None:
    soonest: datetime | None = None
    for manager in managers:
        if manager.apscheduler.state != _aps_base.STATE_RUNNING:
            continue  # a standby (or stopped) scheduler fires nothing
        due = manager.apscheduler.next_due_time()
        if due is not None and (soonest is None or due < soonest):
            soonest = due
    return None if soonest is None else soonest.astimezone(UTC)


def _clock_datetime(frozen: FrozenClock) -> type[datetime]:
    class ClockDatetime(_REAL_DATETIME):
        """``datetime`` whose ``now()`` reads the frozen clock."""

        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            current = frozen.now()
            if tz is None:
                return current.astimezone().replace(tzinfo=None)
            return current.astimezone(tz)

    return ClockDatetime


@pytest.fixture
def scheduler_clock() -> Iterator[FrozenClock]:
    """A ``FrozenClock`` installed for the test: schedulers run only when it moves.

    Ask for it before any fixture that starts a scheduler, so that no real timer is armed.
    """
    frozen = FrozenClock()
    frozen.install()
    try:
        yield frozen
    finally:
        frozen.uninstall()
