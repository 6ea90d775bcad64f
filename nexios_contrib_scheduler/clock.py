"""The one clock every scheduler reads the current time from.

Production code reads the system clock. ``nexios_contrib_scheduler.testing`` swaps in a
frozen clock that tests move by hand; while a clock with ``frozen = True`` is in place the
schedulers arm no timers of their own and whoever moves the clock runs what became due.
Running schedulers register here so that such a clock can find them.
"""

from __future__ import annotations

import weakref
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .manager import SchedulerManager

UTC = timezone.utc


class Clock(Protocol):
    """What the schedulers need from a clock."""

    #: True when the clock does not move by itself (the scheduler then arms no timers).
    frozen: bool

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""
        ...


class SystemClock:
    """The real time."""

    frozen = False

    def now(self) -> datetime:
        return datetime.now(UTC)


_clock: Clock = SystemClock()
_running: weakref.WeakSet[SchedulerManager] = weakref.WeakSet()


def utcnow() -> datetime:
    """The current time from the installed clock, aware, in UTC."""
    return _clock.now()


def get_clock() -> Clock:
    """The clock in use."""
    return _clock


def set_clock(clock: Clock | None) -> Clock:
    """Install ``clock`` (``None``: the system clock) and return the one it replaces."""
    global _clock
    previous = _clock
    _clock = SystemClock() if clock is None else clock
    return previous


def is_frozen() -> bool:
    """True while a clock that only moves by hand is installed."""
    return _clock.frozen


def register_running(manager: SchedulerManager) -> None:
    _running.add(manager)


def unregister_running(manager: SchedulerManager) -> None:
    _running.discard(manager)


def running_managers() -> list[SchedulerManager]:
    """The schedulers started and not yet shut down."""
    return list(_running)
