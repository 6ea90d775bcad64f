"""The three trigger kinds of the documented API and their APScheduler counterparts.

A user-facing trigger (``IntervalTrigger``, ``CronTrigger``, ``DateTimeTrigger``) only holds
validated values and can be reused for many jobs. When a job is scheduled, the manager turns
it into a per-job APScheduler trigger (``to_apscheduler``) anchored at that moment and bound
to the scheduler's time zone. All arithmetic is done on UTC instants so that daylight-saving
changes never stretch or shrink an interval.
"""

from __future__ import annotations

import inspect
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from .clock import utcnow
from .config import resolve_timezone, zone_label, zone_name
from .cron import CronExpression, NoNextFireError
from .errors import TriggerError

UTC = timezone.utc
_ONE_MICROSECOND = timedelta(microseconds=1)
# The first and last instants a datetime can hold; schedules end at the last.
_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def _now() -> datetime:
    return utcnow()


def _brief(value: object, limit: int = 40) -> str:
    """``repr(value)``, shortened to quote it in a message."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python will write out
        text = "<a number too long to write out>"
    return text if len(text) <= limit else text[:limit] + "..."


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return _without_pytz(value)


def _without_pytz(value: datetime) -> datetime:
    """``value`` with a pytz zone replaced by its zoneinfo equivalent.

    A datetime made with pytz's ``localize()`` (or fixed by its ``normalize()``) keeps its
    instant. Any other, made with ``datetime(..., tzinfo=zone)`` or ``replace()``, carries
    the zone's local mean time (-04:56 in New York), which nobody means: its wall time is
    read in the zone instead.
    """
    tz = value.tzinfo
    if tz is None:
        return value
    zone = resolve_timezone(tz)
    if zone is tz:
        return value
    offset = value.utcoffset()
    for fold in (0, 1):
        candidate = value.replace(tzinfo=zone, fold=fold)
        if candidate.utcoffset() == offset:
            return candidate
    return value.replace(tzinfo=zone, fold=0)


def _utc_in_calendar(value: datetime) -> datetime | None:
    """The aware ``value`` in UTC; the first instant if its UTC time is before the year 1,
    None if after the year 9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return _FIRST if value.year == 1 else None


def _out_of_range(owner: str, name: str, value: datetime, tz: tzinfo | None) -> TriggerError:
    where = "" if tz is None or _is_aware(value) else f" in {_zone_label(tz)}"
    return TriggerError(
        f"{owner} {name} {value.isoformat()}{where} is out of range: its time in UTC must "
        "be within the years 1 to 9999"
    )


def check_count(n: object) -> int:
    """``n`` of ``next_fire_times(n)`` checked: an int, zero or more."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {n!r}")
    if n < 0:
        raise ValueError(f"n must be zero or more, got {n}")
    return n


def _check_jitter(value: object, owner: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner} jitter must be a number of seconds or None, not {_brief(value)}")
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        raise TriggerError(
            f"{owner} jitter must be a finite number of seconds of zero or more, "
            f"got {_brief(value)}"
        )
    if value > _MAX_INTERVAL_SECONDS:
        raise TriggerError(
            f"{owner} jitter of {_brief(value)} seconds is too long: at most "
            f"{_MAX_INTERVAL_SECONDS // 86400} days"
        )
    return value or None


def parse_datetime(value: object, what: str) -> datetime:
    """Read an ISO 8601 string (``Z`` allowed) or a datetime; naive when it names no zone.

    ``what`` names the value in the error, e.g. ``"DateTimeTrigger run_date"``.
    """
    if isinstance(value, datetime):
        return _without_pytz(value)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a datetime or an ISO 8601 str, not {_brief(value)}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        owner, _, name = what.rpartition(" ")
        raise TriggerError(
            f"{owner} cannot read {name} {_brief(value)}: use ISO 8601 such as "
            "'2026-12-25T10:30:00', '2026-12-25T10:30:00+00:00', '2026-12-25 10:30:00' "
            "or '2026-12-25'"
        ) from None


def _read_bound(value: object, owner: str, name: str) -> datetime | None:
    """Read a start_date or end_date; naive when the input names no zone."""
    return None if value is None else parse_datetime(value, f"{owner} {name}")


def _is_aware(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() is not None


def _check_bounds(
    start: datetime | None, end: datetime | None, zone: tzinfo | None, owner: str
) -> None:
    """Refuse bounds out of range or in the wrong order, as far as can be told without the
    scheduler's zone: naive bounds are read in ``zone`` if known, else compared as wall
    times (and read in the scheduler's zone when the job is scheduled)."""
    if start is not None and end is not None and _is_aware(start) != _is_aware(end):
        naive, aware = ("start_date", "end_date") if _is_aware(end) else ("end_date", "start_date")
        raise TriggerError(
            f"{owner} {naive} has no UTC offset and {aware} has one "
            f"({start.isoformat()}, {end.isoformat()}): give them both with an offset or "
            "both without, as a naive one is read in the scheduler's zone"
        )
    if zone is not None or any(v is not None and _is_aware(v) for v in (start, end)):
        _resolve_bounds(start, end, zone or UTC, owner)
    elif start is not None and end is not None and end <= start:
        raise TriggerError(
            f"{owner} end_date {end.isoformat()} must be after start_date {start.isoformat()}"
        )


def _resolve_bounds(
    start: datetime | None, end: datetime | None, tz: tzinfo, owner: str
) -> tuple[datetime | None, datetime | None]:
    """The bounds as UTC instants, naive ones read in ``tz``."""

    def utc(value: datetime | None, name: str) -> datetime | None:
        if value is None:
            return None
        try:
            return (value if _is_aware(value) else value.replace(tzinfo=tz)).astimezone(UTC)
        except OverflowError:
            raise _out_of_range(owner, name, value, tz) from None

    first, last = utc(start, "start_date"), utc(end, "end_date")
    if start and end and first and last and last <= first:
        where = "" if _is_aware(start) else f" in {_zone_label(tz)}"
        raise TriggerError(
            f"{owner} end_date {end.isoformat()} must be after start_date "
            f"{start.isoformat()}{where}"
        )
    return first, last


def _describe_extras(jitter: float | None, start: datetime | None, end: datetime | None) -> str:
    parts = []
    if jitter:
        parts.append(f", with up to {jitter:g}s of jitter")
    if start is not None:
        parts.append(f", from {start.isoformat(sep=' ')}")
    if end is not None:
        parts.append(f", until {end.isoformat(sep=' ')}")
    return "".join(parts)


def _extras_dict(
    jitter: float | None, start: datetime | None, end: datetime | None
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if jitter:
        data["jitter"] = jitter
    if start is not None:
        data["start_date"] = start.isoformat()
    if end is not None:
        data["end_date"] = end.isoformat()
    return data


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
        count = check_count(n)
        begin = _utc_in_calendar(_now() if start is None else _aware(start, "start"))
        if begin is None:
            return []
        zone = self._default_zone()
        schedule = self.to_apscheduler(zone, begin)
        return [fire.astimezone(zone) for fire in schedule.fire_times(count, begin)]

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

    Subclasses give the fire times without jitter (``next_base``); this class adds the
    jitter: a random delay in ``[0, jitter]`` seconds, cut short so that a run never moves
    past the next un-jittered fire time (nor past ``end_date``). The delay is drawn afresh
    each time APScheduler asks for a fire time, so schedules stay plain picklable data.
    """

    # Class-level defaults keep schedules pickled before these attributes existed loadable.
    jitter: float | None = None
    end_date: datetime | None = None

    def next_base(self, previous: datetime | None, now: datetime) -> datetime | None:
        """The next fire time without jitter: the first strictly after ``previous``, or
        with no previous fire, the first at or after ``now``."""
        raise NotImplementedError

    def first_base(self, now: datetime) -> datetime | None:
        """When a job scheduled at ``now`` fires first, without jitter."""
        return self.next_base(None, now)

    def first_fire_time(self, now: datetime) -> datetime | None:
        """When a newly scheduled job fires first."""
        return self._jittered(self.first_base(now))

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        return self._jittered(self.next_base(previous_fire_time, now))

    def fire_times(self, n: int, now: datetime, first: datetime | None = None) -> list[datetime]:
        """Up to ``n`` fire times without jitter, from ``first`` (default: the first fire)."""
        times: list[datetime] = []
        fire = self.first_base(now) if first is None else first
        while fire is not None and len(times) < n:
            times.append(fire)
            fire = self.next_base(fire, now)
        return times

    def _jittered(self, base: datetime | None) -> datetime | None:
        if base is None or not self.jitter:
            return base
        delay = timedelta(seconds=random.uniform(0, self.jitter))
        following = self.next_base(base, base)
        if following is not None:
            delay = min(delay, following - base - _ONE_MICROSECOND)
        if self.end_date is not None:
            delay = min(delay, self.end_date - base)
        return base + max(min(delay, _LAST - base), timedelta(0))


# ---------------------------------------------------------------- compact pickles

# Every job's schedule is pickled into the store when it is added and each time it moves
# on. Pickled as objects, a schedule names five classes (its own, ``datetime``,
# ``timezone``, ``timedelta``...), and the pickler looks each one up again on every call:
# about 20 us for an interval schedule. Pickled as ``_restore(kind, values)``, with UTC
# datetimes and intervals as integers (microseconds) and zones by name, it names one
# function: about 4 us. Pickles made before this (objects with their ``__dict__``) still
# load, and ``_restore`` and the kinds' names below stay as they are for the pickles made
# since.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PACKED: dict[str, type[_Packed]] = {}  # kind -> class, filled by ``_Packed``


def _pack_time(value: datetime | None) -> datetime | int | None:
    """A UTC datetime as its microseconds since the epoch; any other value as it is."""
    if type(value) is datetime and value.tzinfo is UTC and not value.fold:
        return (value - _EPOCH) // _MICROSECOND
    return value


def _pack_zone(value: tzinfo | None) -> tzinfo | str | None:
    """``UTC`` as ``""``, a zone from the IANA database by its key; others as they are."""
    if value is UTC:
        return ""
    key = getattr(value, "key", None)
    if type(value) is ZoneInfo and isinstance(key, str) and ZoneInfo(key) is value:
        return key
    return value


def _unpack_zone(value: tzinfo | str | None) -> tzinfo | None:
    if value == "":
        return UTC
    if isinstance(value, str):
        return ZoneInfo(value)
    return value


class _UtcInstant:
    """Stands for a UTC datetime in a pickle (``compact_time``)."""

    __slots__ = ("micros",)

    def __init__(self, micros: int) -> None:
        self.micros = micros

    def __reduce__(self) -> tuple[Any, ...]:
        return _utc_instant, (self.micros,)


def _utc_instant(micros: int) -> datetime:
    """A UTC datetime pickled by ``compact_time``."""
    return _EPOCH + timedelta(microseconds=micros)


def compact_time(value: Any) -> Any:
    """What to pickle in place of ``value``: for a UTC datetime, an object whose pickle
    loads as that same datetime, in one call instead of three classes (4 us to pickle
    instead of 14); any other value as it is."""
    packed = _pack_time(value)
    return _UtcInstant(packed) if type(packed) is int else value


class _Packed:
    """Pickles its instances as ``_restore(kind, values)``. A subclass names its ``kind``
    and its ``fields``: each attribute with how it is packed, ``"time"`` (a datetime or
    None), ``"zone"``, ``"interval"`` (a timedelta) or ``"value"`` (as it is)."""

    _kind: str = ""
    _fields: tuple[tuple[str, str], ...] = ()
    # From ``_fields``, for ``_restore``: the names, then those of each kind to unpack.
    _names: tuple[str, ...] = ()
    _times: tuple[str, ...] = ()
    _zones: tuple[str, ...] = ()
    _intervals: tuple[str, ...] = ()

    def __init_subclass__(cls, kind: str = "", **rest: Any) -> None:
        super().__init_subclass__(**rest)
        if kind:
            cls._kind = kind
            _PACKED[kind] = cls
        fields = cls._fields
        cls._names = tuple(name for name, _ in fields)
        cls._times = tuple(name for name, how in fields if how == "time")
        cls._zones = tuple(name for name, how in fields if how == "zone")
        cls._intervals = tuple(name for name, how in fields if how == "interval")

    def __reduce__(self) -> tuple[Any, ...]:
        values: list[Any] = []
        for name, how in self._fields:
            value = getattr(self, name)
            if how == "time":
                value = _pack_time(value)
            elif how == "zone":
                value = _pack_zone(value)
            elif how == "interval":
                value = value // _MICROSECOND
            values.append(value)
        return _restore, (self._kind, tuple(values))


def _restore(kind: str, values: tuple[Any, ...]) -> Any:
    """An object pickled by ``_Packed.__reduce__``."""
    cls = _PACKED[kind]
    obj = cls.__new__(cls)
    state = dict(zip(cls._names, values, strict=True))
    for name in cls._times:
        micros = state[name]
        if type(micros) is int:
            state[name] = _utc_instant(micros)
    for name in cls._zones:
        state[name] = _unpack_zone(state[name])
    for name in cls._intervals:
        state[name] = timedelta(microseconds=state[name])
    obj.__dict__.update(state)
    return obj


# ---------------------------------------------------------------- interval

_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
_UNIT_SECONDS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
# A thousand years; longer intervals run past the last date a datetime can hold.
_MAX_INTERVAL_SECONDS = 365_250 * 86400
_UNIT_MAX = {unit: _MAX_INTERVAL_SECONDS / _UNIT_SECONDS[unit] for unit in _UNITS}
# Shorter intervals would keep the event loop busy firing.
_MIN_INTERVAL = timedelta(milliseconds=10)


class IntervalTrigger(_Packed, Trigger, kind="interval-trigger"):
    """Fire every fixed interval.

    With ``start_now=True`` (the default) the job runs once as soon as it is scheduled (at
    startup for jobs added before it), then every interval after that.

    ``jitter`` delays each run by a random ``[0, jitter]`` seconds, never past the next
    scheduled run. ``start_date`` and ``end_date`` (aware datetimes or ISO 8601 strings;
    naive ones in the scheduler's zone) bound the schedule: a ``start_date`` still to come
    replaces the moment of scheduling as the start of the interval grid, and the job is
    completed after the last fire before ``end_date``.
    """

    _fields = (
        ("weeks", "value"), ("days", "value"), ("hours", "value"), ("minutes", "value"),
        ("seconds", "value"), ("start_now", "value"), ("interval", "interval"),
        ("jitter", "value"), ("start_date", "time"), ("end_date", "time"),
    )  # fmt: skip

    def __init__(
        self,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
        weeks: float = 0,
        start_now: bool = True,
        *,
        jitter: float | None = None,
        start_date: str | datetime | None = None,
        end_date: str | datetime | None = None,
    ) -> None:
        values = {
            "weeks": weeks,
            "days": days,
            "hours": hours,
            "minutes": minutes,
            "seconds": seconds,
        }
        for unit, value in values.items():
            kind = type(value)
            if (kind is int or kind is float) and 0 <= value <= _UNIT_MAX[unit]:
                continue  # the common case, checked in one step (NaN and inf are not)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"IntervalTrigger {unit} must be a number, not {_brief(value)}")
            # Ints are compared as they are: some are too large to become a float.
            if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
                raise TriggerError(
                    f"IntervalTrigger {unit} must be a finite number of zero or more, "
                    f"got {_brief(value)}"
                )
            if value > _UNIT_MAX[unit]:
                raise TriggerError(
                    f"IntervalTrigger {unit}={_brief(value)} is too long: an interval is at "
                    f"most {_MAX_INTERVAL_SECONDS // 86400} days"
                )
        if not isinstance(start_now, bool):
            raise TypeError(
                f"IntervalTrigger start_now must be True or False, not {_brief(start_now)}"
            )
        # In _UNITS' order, as a sum() over them would add them.
        total = (
            float(weeks) * _UNIT_SECONDS["weeks"]
            + float(days) * _UNIT_SECONDS["days"]
            + float(hours) * _UNIT_SECONDS["hours"]
            + float(minutes) * _UNIT_SECONDS["minutes"]
            + float(seconds) * _UNIT_SECONDS["seconds"]
        )
        if total > _MAX_INTERVAL_SECONDS:
            raise TriggerError(
                f"IntervalTrigger interval of {total:g} seconds is too long: at most "
                f"{_MAX_INTERVAL_SECONDS // 86400} days"
            )
        if total == 0:
            raise TriggerError(
                "IntervalTrigger needs a positive interval: give at least one of "
                "seconds, minutes, hours, days or weeks greater than 0"
            )
        interval = timedelta(seconds=total)
        if interval < _MIN_INTERVAL:
            raise TriggerError(
                f"IntervalTrigger interval of {total:g} seconds is too short: it must be at "
                f"least {_MIN_INTERVAL.total_seconds():g} seconds"
            )
        self.weeks, self.days, self.hours = weeks, days, hours
        self.minutes, self.seconds = minutes, seconds
        self.start_now = start_now
        self.interval = interval
        self.jitter = _check_jitter(jitter, "IntervalTrigger")
        self.start_date = _read_bound(start_date, "IntervalTrigger", "start_date")
        self.end_date = _read_bound(end_date, "IntervalTrigger", "end_date")
        _check_bounds(self.start_date, self.end_date, None, "IntervalTrigger")

    def to_apscheduler(self, tz: tzinfo, now: datetime) -> IntervalSchedule:
        anchor = _aware(now, "now").astimezone(UTC)
        start, end = _resolve_bounds(self.start_date, self.end_date, tz, "IntervalTrigger")
        if start is not None and start > anchor:
            anchor = start
        return IntervalSchedule(
            self.interval, anchor, self.start_now, tz, jitter=self.jitter, end_date=end
        )

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
        extras = _describe_extras(self.jitter, self.start_date, self.end_date)
        return "Every " + " ".join(parts) + extras

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "interval"}
        for unit in _UNITS:
            value = getattr(self, unit)
            if value:
                data[unit] = value
        data["start_now"] = self.start_now
        data.update(_extras_dict(self.jitter, self.start_date, self.end_date))
        return data


class IntervalSchedule(_Packed, ScheduleTrigger, kind="interval"):
    """Fires at ``anchor + k * interval`` (k >= 0 with start_now, else k >= 1)."""

    _fields = (
        ("interval", "interval"), ("anchor", "time"), ("start_now", "value"),
        ("timezone", "zone"), ("jitter", "value"), ("end_date", "time"),
    )  # fmt: skip

    def __init__(
        self,
        interval: timedelta,
        anchor: datetime,
        start_now: bool,
        tz: tzinfo,
        *,
        jitter: float | None = None,
        end_date: datetime | None = None,
    ) -> None:
        self.interval = interval
        self.anchor = anchor.astimezone(UTC)
        self.start_now = start_now
        self.timezone = tz
        self.jitter = jitter
        self.end_date = end_date

    def _within(self, fire: datetime | None) -> datetime | None:
        if fire is None or self.end_date is None or fire <= self.end_date:
            return fire
        return None

    def _step(self, start: datetime, steps: int) -> datetime | None:
        """``steps`` intervals after ``start``; None past the last date a datetime holds."""
        if steps > (_LAST - start) // self.interval:
            return None
        return start + steps * self.interval

    def first_base(self, now: datetime) -> datetime | None:
        return self._within(self.anchor if self.start_now else self._step(self.anchor, 1))

    def next_base(self, previous: datetime | None, now: datetime) -> datetime | None:
        start = self.anchor if self.start_now else self._step(self.anchor, 1)
        if start is None:
            return None
        if previous is None:
            # No previous fire (resumed, rescheduled): the first grid point at or after now.
            ref = now.astimezone(UTC)
            steps = -((start - ref) // self.interval) if ref > start else 0
        else:
            # The first grid point after the previous fire, which jitter may have delayed.
            ref = previous.astimezone(UTC)
            steps = (ref - start) // self.interval + 1 if ref >= start else 0
        return self._within(self._step(start, steps))

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

    ``jitter`` delays each run by a random ``[0, jitter]`` seconds, never past the next
    scheduled run. ``start_date`` and ``end_date`` (aware datetimes or ISO 8601 strings;
    naive ones in the trigger's zone) bound the schedule: nothing fires before
    ``start_date``, and the job is completed after the last fire before ``end_date``.
    """

    def __init__(
        self,
        expr: str,
        timezone: str | tzinfo | None = None,
        *,
        jitter: float | None = None,
        start_date: str | datetime | None = None,
        end_date: str | datetime | None = None,
    ) -> None:
        self.expression = CronExpression(expr)
        self.expr = self.expression.expr
        self.timezone = _trigger_zone(timezone, "CronTrigger")
        self.jitter = _check_jitter(jitter, "CronTrigger")
        self.start_date = _read_bound(start_date, "CronTrigger", "start_date")
        self.end_date = _read_bound(end_date, "CronTrigger", "end_date")
        _check_bounds(self.start_date, self.end_date, self.timezone, "CronTrigger")

    def to_apscheduler(self, tz: tzinfo, now: datetime) -> CronSchedule:
        zone = self.timezone or tz
        start, end = _resolve_bounds(self.start_date, self.end_date, zone, "CronTrigger")
        return CronSchedule(
            self.expression, zone, jitter=self.jitter, start_date=start, end_date=end
        )

    def describe(self) -> str:
        extras = _describe_extras(self.jitter, self.start_date, self.end_date)
        return self.expression.describe() + extras

    def to_dict(self) -> dict[str, Any]:
        data = {"type": "cron", "expr": self.expr, "timezone": _zone_label(self.timezone)}
        data.update(_extras_dict(self.jitter, self.start_date, self.end_date))
        return data

    def _default_zone(self) -> tzinfo:
        return self.timezone or UTC


class CronSchedule(_Packed, ScheduleTrigger, kind="cron"):
    _fields = (
        ("expression", "value"), ("timezone", "zone"), ("jitter", "value"),
        ("start_date", "time"), ("end_date", "time"),
    )  # fmt: skip

    start_date: datetime | None = None

    def __init__(
        self,
        expression: CronExpression,
        tz: tzinfo,
        *,
        jitter: float | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> None:
        self.expression = expression
        self.timezone = tz
        self.jitter = jitter
        self.start_date = start_date
        self.end_date = end_date

    def next_base(self, previous: datetime | None, now: datetime) -> datetime | None:
        # A job scheduled exactly on a fire time fires at that time (except on the very first
        # microsecond of the calendar, which has nothing before it).
        after = previous if previous is not None else _just_before(now)
        if self.start_date is not None and after < self.start_date:
            after = _just_before(self.start_date)
        try:
            local = self.expression.next_after(after, self.timezone)
        except NoNextFireError:
            return None
        try:
            fire = local.astimezone(UTC)
        except OverflowError:
            return None  # a wall time on 9999-12-31 whose UTC time is in the year 10000
        return None if self.end_date is not None and fire > self.end_date else fire

    def __str__(self) -> str:
        return f"cron[{self.expression.expr}]"

    def __repr__(self) -> str:
        return f"<CronSchedule ({self.expression.expr!r}, timezone={_zone_label(self.timezone)!r})>"


def _just_before(when: datetime) -> datetime:
    return when - _ONE_MICROSECOND if when > _FIRST else when


# ---------------------------------------------------------------- date


def parse_run_date(value: str | datetime) -> datetime:
    """Read a run date; the result is naive when the input names no zone."""
    return parse_datetime(value, "DateTimeTrigger run_date")


class DateTimeTrigger(Trigger):
    """Fire once, at ``run_date``.

    Naive dates and the date-only form are read in ``timezone`` if given, else in the
    scheduler's zone (UTC unless configured).
    """

    def __init__(self, run_date: str | datetime, timezone: str | tzinfo | None = None) -> None:
        self.run_date = parse_run_date(run_date)
        self.timezone = _trigger_zone(timezone, "DateTimeTrigger")
        if self.run_date.tzinfo is not None or self.timezone is not None:
            self.to_apscheduler(UTC, _FIRST)  # refuse dates a UTC instant cannot hold

    def resolve(self, tz: tzinfo) -> datetime:
        if self.run_date.tzinfo is not None and self.run_date.utcoffset() is not None:
            return self.run_date
        return self.run_date.replace(tzinfo=self.timezone or tz)

    def to_apscheduler(self, tz: tzinfo, now: datetime) -> DateSchedule:
        try:
            return DateSchedule(self.resolve(tz))
        except OverflowError:
            zone = self.timezone or tz
            raise _out_of_range("DateTimeTrigger", "run_date", self.run_date, zone) from None

    def describe(self) -> str:
        when = self.run_date
        zone = (
            "" if when.tzinfo is not None else f" {_zone_label(self.timezone) or 'scheduler time'}"
        )
        return f"Once at {when.isoformat(sep=' ')}{zone}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "date",
            "run_date": self.run_date.isoformat(),
            "timezone": _zone_label(self.timezone),
        }

    def next_fire_times(self, n: int, start: datetime | None = None) -> list[datetime]:
        count = check_count(n)
        begin = _utc_in_calendar(_now() if start is None else _aware(start, "start"))
        zone = self.timezone or UTC
        when = self.to_apscheduler(zone, _FIRST).run_date
        return [self.resolve(zone)] if count and begin is not None and when >= begin else []


class DateSchedule(_Packed, ScheduleTrigger, kind="date"):
    _fields = (("run_date", "time"),)

    def __init__(self, run_date: datetime) -> None:
        self.run_date = run_date.astimezone(UTC)

    def next_base(self, previous: datetime | None, now: datetime) -> datetime | None:
        return self.run_date if previous is None else None

    def __str__(self) -> str:
        return f"date[{self.run_date.isoformat()}]"

    def __repr__(self) -> str:
        return f"<DateSchedule (run_date={self.run_date.isoformat()!r})>"


def _trigger_zone(value: str | tzinfo | None, owner: str) -> tzinfo | None:
    """A trigger's own zone: one with a name, so that ``to_dict()`` can give it back."""
    if value is None:
        return None
    zone = resolve_timezone(value)
    if zone_name(zone) is None:
        raise TriggerError(
            f"{owner} timezone {_brief(value)} cannot be written down, so to_dict() could "
            "not give it back: use an IANA name, 'UTC', 'local', a fixed offset such as "
            "'UTC+05:30', a ZoneInfo or a datetime.timezone"
        )
    return zone


def _zone_label(tz: tzinfo | None) -> str | None:
    """The zone's name (see ``zone_label``); None for the scheduler's zone (no own zone)."""
    return None if tz is None else zone_label(tz)


# ---------------------------------------------------------------- from data

_TRIGGER_KINDS: dict[str, type[Trigger]] = {
    "interval": IntervalTrigger,
    "cron": CronTrigger,
    "date": DateTimeTrigger,
}


def trigger_from_dict(data: Mapping[str, Any]) -> Trigger:
    """Build a trigger from ``{"type": "interval" | "cron" | "date", **constructor_args}``.

    It reads exactly what ``Trigger.to_dict()`` writes, so
    ``trigger_from_dict(t.to_dict()) == t``. Raises ``TypeError`` for a parameter the
    trigger's constructor does not take, and the trigger's own ``TypeError`` or
    ``ValueError`` (``TriggerError``, ``CronSyntaxError``) for bad values.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"a trigger must be a mapping with a 'type' key, not {_brief(data)}")
    kind = data.get("type")
    cls = _TRIGGER_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        allowed = ", ".join(repr(k) for k in _TRIGGER_KINDS)
        raise TriggerError(f"unknown trigger type {_brief(kind)}: use one of {allowed}")
    params = {key: value for key, value in data.items() if key != "type"}
    accepted = [name for name in inspect.signature(cls).parameters if name != "self"]
    unknown = sorted(str(key) for key in params if key not in accepted)
    if unknown:
        raise TypeError(
            f"{cls.__name__} does not take {', '.join(map(_brief, unknown[:3]))}"
            f"{' and more' if len(unknown) > 3 else ''}; "
            f"it takes {', '.join(map(repr, accepted))}"
        )
    return cls(**params)
