"""Next-fire computation for the cron expressions of the benchmark, in each system.

Each system gets the expression in its own dialect with the same meaning where it can:

* APScheduler's ``CronTrigger.from_crontab`` reads day-of-week 0 as Monday and ANDs the
  two day fields, so weekdays are given by name and an expression that restricts both day
  fields becomes an ``OrTrigger`` of two cron triggers (Debian cron ORs them). It has no
  ``@`` aliases, so ``@yearly`` is written out.
* ``nexios_contrib`` numbers weekdays from Monday = 0, accepts no names, always ORs the
  day fields and ignores time zones (it computes in UTC only); it searches minute by
  minute for at most a year, so ``0 0 29 2 *`` can fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo

UTC = timezone.utc

EXPRESSIONS = (
    "* * * * *",
    "0 9 * * 1-5",
    "0 0 29 2 *",
    "@yearly",
    "*/7 3-20/3 1,15 * mon-fri",
)
ZONES = ("UTC", "America/New_York")
START = datetime(2026, 3, 1, tzinfo=UTC)

_APSCHEDULER_FORMS: dict[str, tuple[str, ...]] = {
    "* * * * *": ("* * * * *",),
    "0 9 * * 1-5": ("0 9 * * mon-fri",),
    "0 0 29 2 *": ("0 0 29 2 *",),
    "@yearly": ("0 0 1 1 *",),
    "*/7 3-20/3 1,15 * mon-fri": ("*/7 3-20/3 1,15 * *", "*/7 3-20/3 * * mon-fri"),
}
_CONTRIB_FORMS = {
    "* * * * *": "* * * * *",
    "0 9 * * 1-5": "0 9 * * 0-4",
    "0 0 29 2 *": "0 0 29 2 *",
    "@yearly": "@yearly",
    "*/7 3-20/3 1,15 * mon-fri": "*/7 3-20/3 1,15 * 0-4",
}

Step = Callable[[datetime], datetime | None]


class UnsupportedError(Exception):
    """The system cannot compute this expression in this zone."""


def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def stepper(system: str, expr: str, zone: str) -> Step:
    """A function from one fire time to the next, as the system's scheduler computes it."""
    if system == "this":
        from nexios_contrib_scheduler import CronTrigger

        schedule = CronTrigger(expr, timezone=zone).to_apscheduler(UTC, START)
        return lambda prev: schedule.get_next_fire_time(prev, prev)
    if system == "apscheduler":
        from apscheduler.triggers.combining import OrTrigger
        from apscheduler.triggers.cron import CronTrigger as APCron

        parts = [
            APCron.from_crontab(form, timezone=_zone(zone)) for form in _APSCHEDULER_FORMS[expr]
        ]
        trigger = parts[0] if len(parts) == 1 else OrTrigger(parts)
        return lambda prev: trigger.get_next_fire_time(prev, prev)
    if system == "nexios_contrib":
        if zone != "UTC":
            raise UnsupportedError("computes in UTC only")
        from nexios_contrib.scheduler import CronTrigger as ContribCron  # type: ignore[import-untyped]

        cron = ContribCron(_CONTRIB_FORMS[expr])

        def step(prev: datetime) -> datetime | None:
            return datetime.fromtimestamp(cron.get_next_run(prev.timestamp()), UTC)

        return step
    raise ValueError(f"unknown system {system!r}")


def time_next_fires(step: Step, max_calls: int, budget: float) -> tuple[float, int]:
    """Seconds per next-fire call over successive fire times from ``START``; calls made.

    Stops after ``max_calls`` calls or once ``budget`` seconds have passed.
    """
    prev = START
    calls = 0
    clock = time.perf_counter
    began = clock()
    elapsed = 0.0
    while calls < max_calls and elapsed < budget:
        nxt = step(prev)
        calls += 1
        elapsed = clock() - began
        if nxt is None:
            break
        prev = nxt
    return elapsed / calls, calls
