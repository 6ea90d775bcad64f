"""The three trigger kinds of the documented API and their APScheduler counterparts.

A user-facing trigger (``IntervalTrigger``, ``CronTrigger``, ``DateTimeTrigger``) only holds
validated values and can be reused for many jobs. When a job is scheduled, the manager turns
it into a per-job APScheduler trigger (``to_apscheduler``) anchored at that moment and bound
to the scheduler's time zone. All arithmetic is done on UTC instants so that daylight-saving
changes never stretch or shrink an interval.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from .config import resolve_timezone
from .cron import CronExpression
from .errors import TriggerError

UTC = timezone.utc
_ONE_MICROSECOND = timedelta(microseconds=1)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value


def _check_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {n!r}")
    if n < 0:
        raise ValueError(f"n must be zero or more, got {n}")
    return n


class Trigger(ABC):
    """What the three trigger kinds have in common."""

    @abstractmethod
    def to_apscheduler(self, tz: tzinfo, now: datetime) -> ScheduleTrigger:
        """The per-job APScheduler trigger for a job scheduled at ``now`` in zone ``tz``."""

    @abstractmethod
    def describe(self) -> str:
        """The schedule in words, e.g. ``Every 30 seconds``."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The trigger as JSON-ready data: its kind and constructor arguments."""

    def next_fire_times(self, n: int, start: datetime | None = None) -> list[datetime]:
        """The next ``n`` fire times of a job scheduled at ``start`` (default: now).

        Naive values are read in the trigger's own zone, else UTC.
        """
        count = _check_count(n)
        start = _now() if start is None else _aware(start, "start")
        zone = self._default_zone()
        schedule = self.to_apscheduler(zone, start)
        return [fire.astimezone(zone) for fire in schedule.fire_times(count, start)]

    def _default_zone(self) -> tzinfo:
        return UTC

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Trigger)
            and type(other) is type(self)
            and self.to_dict() == other.to_dict()
        )

    def __hash__(self) -> int:
        return hash(repr(self))


class ScheduleTrigger(BaseTrigger):  # type: ignore[misc]
    """Base of the per-job APScheduler triggers this package schedules with.

    Fire times are UTC datetimes. Python compares and subtracts two datetimes that share a
    ``tzinfo`` by their wall-clock values, which is wrong across a daylight-saving change;
    UTC values compare as instants. Views convert to the scheduler's zone for display.
    """

    def first_fire_time(self, now: datetime) -> datetime | None:
        """When a newly scheduled job fires first."""
        return self.get_next_fire_time(None, now)  # type: ignore[no-any-return]

    def fire_times(self, n: int, now: datetime) -> list[datetime]:
        times: list[datetime] = []
        fire = self.first_fire_time(now)
        while fire is not None and len(times) < n:
            times.append(fire)
            fire = self.get_next_fire_time(fire, now)
        return times


# ---------------------------------------------------------------- interval

_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
_UNIT_SECONDS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


class IntervalTrigger(Trigger):
    """Fire every fixed interval.

    With ``start_now=True`` (the default) the job runs once as soon as it is scheduled (at
    startup for jobs added before it), then every interval after that.
    """

    def __init__(
        self,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
        weeks: float = 0,
        start_now: bool = True,
    ) -> None:
        values = {
            "weeks": weeks,
            "days": days,
            "hours": hours,
            "minutes": minutes,
            "seconds": seconds,
        }
        for unit, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"IntervalTrigger {unit} must be a number, not {value!r}")
            if not math.isfinite(value) or value < 0:
                raise TriggerError(
                    f"IntervalTrigger {unit} must be a finite number of zero or more, got {value!r}"
                )
        if not isinstance(start_now, bool):
            raise TypeError(f"IntervalTrigger start_now must be True or False, not {start_now!r}")
        total = sum(values[u] * _UNIT_SECONDS[u] for u in _UNITS)
        interval = timedelta(seconds=total)
        if interval <= timedelta(0):
            raise TriggerError(
                "IntervalTrigger needs a positive interval: give at least one of "
                "seconds, minutes, hours, days or weeks greater than 0"
            )
        self.weeks, self.days, self.hours = weeks, days, hours
        self.minutes, self.seconds = minutes, seconds
        self.start_now = start_now
        self.interval = interval

    def to_apscheduler(self, tz: tzinfo, now: datetime) -> IntervalSchedule:
        return IntervalSchedule(self.interval, _aware(now, "now"), self.start_now, tz)

    def describe(self) -> str:
        parts = []
        rest = self.interval.total_seconds()
        for unit in _UNITS:
            size = _UNIT_SECONDS[unit]
            count = rest // size if unit != "seconds" else rest
            if count:
                rest -= count * size
                amount = f"{count:g}" if unit == "seconds" else f"{int(count)}"
                parts.append(f"{amount} {unit[:-1] if amount == '1' else unit}")
        return "Every " + " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "interval"}
        for unit in _UNITS:
            value = getattr(self, unit)
            if value:
                data[unit] = value
        data["start_now"] = self.start_now
        return data


class IntervalSchedule(ScheduleTrigger):
    """Fires at ``anchor + k * interval`` (k >= 0 with start_now, else k >= 1)."""

    def __init__(self, interval: timedelta, anchor: datetime, start_now: bool, tz: tzinfo) -> None:
        self.interval = interval
        self.anchor = anchor.astimezone(UTC)
        self.start_now = start_now
        self.timezone = tz

    def first_fire_time(self, now: datetime) -> datetime:
        return self.anchor if self.start_now else self.anchor + self.interval

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None:
            return previous_fire_time.astimezone(UTC) + self.interval
        # No previous fire (resumed, rescheduled): the first grid point at or after now.
        base = self.anchor if self.start_now else self.anchor + self.interval
        now_utc = now.astimezone(UTC)
        if now_utc > base:
            steps = math.ceil((now_utc - base) / self.interval)
            base += steps * self.interval
        return base

    def __str__(self) -> str:
        return f"interval[{self.interval}]"

    def __repr__(self) -> str:
        return (
            f"<IntervalSchedule (interval={self.interval!r}, anchor={self.anchor.isoformat()!r})>"
        )


# ---------------------------------------------------------------- cron


class CronTrigger(Trigger):
    """Fire on a 5-field crontab expression, read as Debian's cron reads it.

    ``timezone`` (IANA name or tzinfo) defaults to the scheduler's zone, or UTC when the
    trigger is used on its own.
    """

    def __init__(self, expr: str, timezone: str | tzinfo | None = None) -> None:
        self.expression = CronExpression(expr)
        self.expr = self.expression.expr
        self.timezone = None if timezone is None else resolve_timezone(timezone)

    def to_apscheduler(self, tz: tzinfo, now: datetime) -> CronSchedule:
        return CronSchedule(self.expression, self.timezone or tz)

    def describe(self) -> str:
        return self.expression.describe()

    def to_dict(self) -> dict[str, Any]:
        return {"type": "cron", "expr": self.expr, "timezone": _zone_name(self.timezone)}

    def _default_zone(self) -> tzinfo:
        return self.timezone or UTC


class CronSchedule(ScheduleTrigger):
    def __init__(self, expression: CronExpression, tz: tzinfo) -> None:
        self.expression = expression
        self.timezone = tz

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # A job scheduled exactly on a fire time fires at that time.
        after = now - _ONE_MICROSECOND if previous_fire_time is None else previous_fire_time
        return self.expression.next_after(after, self.timezone).astimezone(UTC)

    def __str__(self) -> str:
        return f"cron[{self.expression.expr}]"

    def __repr__(self) -> str:
        return f"<CronSchedule ({self.expression.expr!r}, timezone={_zone_name(self.timezone)!r})>"


# ---------------------------------------------------------------- date


def parse_run_date(value: str | datetime) -> datetime:
    """Read a run date; the result is naive when the input names no zone."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise TypeError(f"DateTimeTrigger run_date must be a str or datetime, not {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise TriggerError(
            f"DateTimeTrigger cannot read run_date {value!r}: use ISO 8601 such as "
            "'2026-12-25T10:30:00', '2026-12-25T10:30:00+00:00', '2026-12-25 10:30:00' "
            "or '2026-12-25'"
        ) from None


class DateTimeTrigger(Trigger):
    """Fire once, at ``run_date``.

    Naive dates and the date-only form are read in ``timezone`` if given, else in the
    scheduler's zone (UTC unless configured).
    """

    def __init__(self, run_date: str | datetime, timezone: str | tzinfo | None = None) -> None:
        self.run_date = parse_run_date(run_date)
        self.timezone = None if timezone is None else resolve_timezone(timezone)

    def resolve(self, tz: tzinfo) -> datetime:
        if self.run_date.tzinfo is not None and self.run_date.utcoffset() is not None:
            return self.run_date
        return self.run_date.replace(tzinfo=self.timezone or tz)

    def to_apscheduler(self, tz: tzinfo, now: datetime) -> DateSchedule:
        return DateSchedule(self.resolve(tz))

    def describe(self) -> str:
        when = self.run_date
        zone = (
            "" if when.tzinfo is not None else f" {_zone_name(self.timezone) or 'scheduler time'}"
        )
        return f"Once at {when.isoformat(sep=' ')}{zone}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "date",
            "run_date": self.run_date.isoformat(),
            "timezone": _zone_name(self.timezone),
        }

    def next_fire_times(self, n: int, start: datetime | None = None) -> list[datetime]:
        count = _check_count(n)
        start = _now() if start is None else _aware(start, "start")
        when = self.resolve(self.timezone or UTC)
        return [when] if count and when >= start else []


class DateSchedule(ScheduleTrigger):
    def __init__(self, run_date: datetime) -> None:
        self.run_date = run_date.astimezone(UTC)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        return self.run_date if previous_fire_time is None else None

    def __str__(self) -> str:
        return f"date[{self.run_date.isoformat()}]"

    def __repr__(self) -> str:
        return f"<DateSchedule (run_date={self.run_date.isoformat()!r})>"


def _zone_name(tz: tzinfo | None) -> str | None:
    if tz is None:
        return None
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else str(tz)
