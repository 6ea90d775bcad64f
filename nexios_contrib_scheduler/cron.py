"""Crontab expressions with the semantics of Debian's cron.

Syntax: five whitespace-separated fields, ``minute hour day-of-month month day-of-week``,
with the ranges 0-59, 0-23, 1-31, 1-12 and 0-7 (0 and 7 are both Sunday). Each field is a
comma-separated list of items; an item is a value, ``*``, a range ``a-b``, or a stepped
``*/n`` or ``a-b/n``. Month names JAN-DEC and weekday names SUN-SAT are accepted in any
case wherever a number is, including in ranges (``mon-fri``). An expression may instead
be one of the aliases in :data:`ALIASES` (matched case-insensitively).

Choices worth knowing (the first two differ from cronsim, which reads both as ``a-max/n``):

* ``a/n`` (a step on a single value) is rejected, as Debian's parser does ("step
  specified without range"); write ``a-59/n``.
* A stepped one-value range ``a-a/n`` is just ``a``, as in Debian.
* A range whose start is after its end, and a step of 0, are errors rather than fields
  that match nothing.
* An expression that can never fire (``0 0 30 2 *``) is rejected at parse time.

Day rule: when the day-of-month and day-of-week fields both start with something other
than ``*``, a day matches if either field matches; otherwise both must match. Debian looks
only at the first character, so ``*/2`` counts as unrestricted for this rule.

Daylight saving: a job is "fixed-time" when neither its minute nor its hour field starts
with ``*``. A fixed-time job whose wall time is skipped by a forward jump runs once at the
jump; in a repeated interval it runs only on the first pass. Other jobs follow the wall
clock: skipped times do not fire, repeated times fire on both passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone, tzinfo
from itertools import pairwise
from typing import Any

__all__ = ["ALIASES", "CronExpression", "CronSyntaxError", "NoNextFireError"]

ALIASES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
    "@every_minute": "* * * * *",
}

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DOW_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (name, low, high, names accepted for low, low+1, ...)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 7, _DOW_NAMES),
)
_FIELD_LIST = "minute hour day-of-month month day-of-week"
_SPLIT = re.compile(r"[ \t]+")
_MONTH_LEN = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MAX_MONTH_LEN = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_FULL_DOW = 0x7F
_MINUTE = timedelta(minutes=1)
_ZERO = timedelta(0)
# The Gregorian calendar repeats every 400 years; a valid expression fires well within that.
_HORIZON_YEARS = 401

_MONTH_WORDS = (
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DOW_WORDS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


class CronSyntaxError(ValueError):
    """The text is not a valid crontab expression."""


class NoNextFireError(OverflowError):
    """No fire time is left before the calendar ends (a datetime holds years 1 to 9999).

    This is how the search says "no next fire"; any other ``OverflowError`` is a bug.
    """


def _cut(text: str, limit: int = 40) -> str:
    """``text``, shortened to quote it in a message."""
    return text if len(text) <= limit else text[:limit] + "..."


def _bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _low_bit(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _value(token: str, field: int, expr: str) -> int:
    name, lo, hi, names = _FIELDS[field]
    upper = token.upper()
    if names and upper in names:
        return names.index(upper) + lo
    if not token.isascii() or not token.isdigit():
        kind = "a number or name" if names else "a number"
        raise CronSyntaxError(f"{name} value {_cut(token)!r} is not {kind} in {expr!r}")
    # Long digit strings are out of range whatever they say; int() would refuse some.
    value = int(token) if len(token) <= 9 else hi + 1
    if not lo <= value <= hi:
        shown = _cut(token) if len(token) > 9 else str(value)
        raise CronSyntaxError(f"{name} value {shown} out of range {lo}-{hi} in {expr!r}")
    return value


def _parse_field(text: str, field: int, expr: str) -> int:
    name, lo, hi, _ = _FIELDS[field]
    mask = 0
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        if not base:
            raise CronSyntaxError(f"{name} field {_cut(text)!r} has an empty item in {expr!r}")
        step = 1
        if slash:
            if not step_text.isascii() or not step_text.isdigit():
                raise CronSyntaxError(
                    f"{name} step {_cut(step_text)!r} is not a number in {expr!r}"
                )
            # Any step past the field's range selects only its first value.
            step = int(step_text) if len(step_text) <= 9 else hi + 1
            if step == 0:
                raise CronSyntaxError(
                    f"{name} step in {_cut(item)!r} must be at least 1 in {expr!r}"
                )
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, field, expr), _value(last, field, expr)
            if start > end:
                raise CronSyntaxError(
                    f"{name} range {_cut(base)!r} starts after it ends ({start} > {end}) "
                    f"in {expr!r}"
                )
        elif slash:
            raise CronSyntaxError(
                f"{name} step {_cut(item)!r} needs a range or '*' "
                f"(write {_cut(base)}-{hi}/{step}) in {expr!r}"
            )
        else:
            start = end = _value(base, field, expr)
        for v in range(start, end + 1, step):
            mask |= 1 << v
    return mask


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _join(words: list[str], conj: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conj} {words[-1]}"


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _listing(values: list[int], word: Callable[[int], str], conj: str = "and") -> str:
    parts: list[str] = []
    for a, b in _runs(values):
        if b - a >= 2:
            parts.append(f"{word(a)} through {word(b)}")
        else:
            parts.extend(word(v) for v in range(a, b + 1))
    return _join(parts, conj)


def _step_of(values: list[int]) -> int:
    """The common difference if ``values`` is an arithmetic progression of 3+ terms, else 0."""
    if len(values) < 3:
        return 0
    step = values[1] - values[0]
    ok = all(b - a == step for a, b in pairwise(values))
    return step if ok and step > 1 else 0


def _clock_phrase(values: list[int], lo: int, hi: int, unit: str) -> str:
    """Describe a minute or hour set, e.g. 'every 15 minutes' or 'hours 9 and 17'."""
    step = _step_of(values)
    if len(values) == hi - lo + 1:
        return f"every {unit}"
    if step and values[0] == lo and values[-1] + step > hi:
        if unit == "minute" and 60 % step == 0:
            return f"every {step} minutes"
        return f"every {_ordinal(step)} {unit}"
    if step:
        return f"every {_ordinal(step)} {unit} from {values[0]} through {values[-1]}"
    if len(_runs(values)) == 1 and len(values) > 2:
        return f"every {unit} from {values[0]} through {values[-1]}"
    plural = "s" if len(values) > 1 else ""
    return f"{unit}{plural} {_listing(values, str)}"


class CronExpression:
    """A parsed crontab expression; immutable, hashable and picklable."""

    __slots__ = (
        "_day_or",
        "_dom",
        "_dom_only",
        "_dow",
        "_dow_masks",
        "_expr",
        "_fixed",
        "_hours",
        "_minutes",
        "_months",
    )

    _expr: str
    _minutes: int
    _hours: int
    _dom: int
    _months: int
    _dow: int
    _day_or: bool
    _fixed: bool
    _dom_only: bool
    _dow_masks: tuple[int, ...]

    def __init__(self, expr: str) -> None:
        if not isinstance(expr, str):
            raise TypeError(f"cron expression must be a str, not {type(expr).__name__}")
        text = expr.strip()
        source = text
        if text.startswith("@"):
            alias = ALIASES.get(text.lower())
            if alias is None:
                allowed = ", ".join(sorted(ALIASES))
                raise CronSyntaxError(
                    f"unknown alias {_cut(text)!r} in {_cut(text)!r}; allowed: {allowed}"
                )
            source = alias
        parts = _SPLIT.split(source) if source else []
        if len(parts) != 5:
            raise CronSyntaxError(
                f"expected 5 fields ({_FIELD_LIST}), got {len(parts)} in {_cut(text)!r}"
            )
        masks = [_parse_field(part, i, _cut(text)) for i, part in enumerate(parts)]
        dow = masks[4]
        if dow & 0x80:
            dow = (dow | 1) & _FULL_DOW
        s = object.__setattr__
        s(self, "_expr", text)
        s(self, "_minutes", masks[0])
        s(self, "_hours", masks[1])
        s(self, "_dom", masks[2])
        s(self, "_months", masks[3])
        s(self, "_dow", dow)
        # Debian decides the day rule (and the DST rule below) from the first character of
        # the field text, not from the values it selects.
        s(self, "_day_or", not parts[2].startswith("*") and not parts[4].startswith("*"))
        s(self, "_fixed", not parts[0].startswith("*") and not parts[1].startswith("*"))
        s(self, "_dom_only", not self._day_or and dow == _FULL_DOW)
        # _dow_masks[k]: the days of a month whose 1st is Python weekday k (Monday=0) that
        # satisfy the day-of-week field.
        s(
            self,
            "_dow_masks",
            tuple(sum(1 << d for d in range(1, 32) if dow >> (k + d) % 7 & 1) for k in range(7)),
        )
        if not self._day_or and not any(
            masks[2] & ((2 << _MAX_MONTH_LEN[m]) - 2) for m in _bits(masks[3])
        ):
            months = _listing(_bits(masks[3]), _MONTH_WORDS.__getitem__, "or")
            raise CronSyntaxError(
                f"day-of-month {_cut(parts[2])!r} never occurs in {months}, "
                f"so {_cut(text)!r} can never fire"
            )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CronExpression is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("CronExpression is immutable")

    # -- read-only views -------------------------------------------------------------

    @property
    def expr(self) -> str:
        """The expression text as given, stripped of surrounding whitespace."""
        return self._expr

    @property
    def minutes(self) -> frozenset[int]:
        return frozenset(_bits(self._minutes))

    @property
    def hours(self) -> frozenset[int]:
        return frozenset(_bits(self._hours))

    @property
    def days(self) -> frozenset[int]:
        """Days of the month (1-31)."""
        return frozenset(_bits(self._dom))

    @property
    def months(self) -> frozenset[int]:
        return frozenset(_bits(self._months))

    @property
    def weekdays(self) -> frozenset[int]:
        """Days of the week, Sunday=0 (a 7 in the expression is stored as 0)."""
        return frozenset(_bits(self._dow))

    @property
    def day_or(self) -> bool:
        """True when a day matches if either the day-of-month or day-of-week field does."""
        return self._day_or

    @property
    def fixed_time(self) -> bool:
        """True when the minute and hour fields are both restricted (see the DST rule)."""
        return self._fixed

    def _key(self) -> tuple[int, int, int, int, int, bool, bool]:
        return (
            self._minutes,
            self._hours,
            self._dom,
            self._months,
            self._dow,
            self._day_or,
            self._fixed,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronExpression):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"CronExpression({self._expr!r})"

    def __reduce__(self) -> tuple[type[CronExpression], tuple[str]]:
        return (CronExpression, (self._expr,))

    # -- wall-clock search -----------------------------------------------------------

    def _day_mask(self, y: int, mo: int) -> int:
        if mo == 2:
            n = 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
        else:
            n = _MONTH_LEN[mo]
        valid = (2 << n) - 2
        if self._dom_only:
            return self._dom & valid
        dm = self._dow_masks[date(y, mo, 1).weekday()]
        return ((self._dom | dm) if self._day_or else (self._dom & dm)) & valid

    def _match(self, y: int, mo: int, d: int, h: int, mi: int) -> datetime:
        """First matching wall time at or after the given fields (``mi`` may be 60).

        Raises ``NoNextFireError`` past the year 9999.
        """
        months, hours, minutes = self._months, self._hours, self._minutes
        limit = y + _HORIZON_YEARS
        while True:
            m = months >> mo
            if not m & 1:
                if m:
                    mo += _low_bit(m)
                else:
                    y += 1
                    mo = _low_bit(months)
                    if y > limit or y > 9999:
                        raise NoNextFireError(
                            f"{_cut(self._expr)!r} has no fire time before year {y}"
                        )
                d, h, mi = 1, 0, 0
            days = self._day_mask(y, mo) >> d
            if not days:
                mo, d, h, mi = mo + 1, 1, 0, 0
                continue
            if not days & 1:
                d += _low_bit(days)
                h = mi = 0
            hs = hours >> h
            if not hs:
                d, h, mi = d + 1, 0, 0
                continue
            if not hs & 1:
                h += _low_bit(hs)
                mi = 0
            ms = minutes >> mi
            if not ms:
                h, mi = h + 1, 0
                continue
            return datetime(y, mo, d, h, mi + _low_bit(ms))

    def _match_after(self, w: datetime) -> datetime:
        return self._match(w.year, w.month, w.day, w.hour, w.minute + 1)

    def _match_from(self, w: datetime) -> datetime:
        return self._match(w.year, w.month, w.day, w.hour, w.minute)

    # -- public API ------------------------------------------------------------------

    def next_after(self, after: datetime, tz: tzinfo) -> datetime:
        """The first fire time strictly after the aware instant ``after``, aware in ``tz``.

        Raises ``NoNextFireError`` when there is none before the end of the year 9999 in
        ``tz``.
        """
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError("next_after() needs an aware datetime, got a naive one")
        if not isinstance(tz, tzinfo):
            raise TypeError(f"tz must be a tzinfo, not {type(tz).__name__}")
        try:
            local = after.astimezone(tz)
        except OverflowError:
            if after.year > 1:
                raise NoNextFireError(
                    f"{_cut(self._expr)!r} has no fire time before year 10000 in {tz}"
                ) from None
            # `after` falls in the year 0 on this zone's clock, so every wall time of the
            # calendar is after it. (A fire at its very first minute is not found.)
            local = datetime(1, 1, 1, tzinfo=tz)
        if isinstance(tz, timezone):
            w = self._match_after(local)
            return datetime(w.year, w.month, w.day, w.hour, w.minute, tzinfo=tz)
        return self._next_zoned(local, tz)

    def next_fire_times(self, n: int, after: datetime, tz: tzinfo) -> list[datetime]:
        """The next ``n`` fire times strictly after ``after``, in order."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out: list[datetime] = []
        for _ in range(n):
            after = self.next_after(after, tz)
            out.append(after)
        return out

    def _next_zoned(self, local: datetime, tz: tzinfo) -> datetime:
        # Walls are naive local times; instants are naive UTC. A wall w can be normal, in a
        # repeated interval (offset for fold=0 larger than for fold=1) or in a skipped one
        # (the reverse), which decides whether it fires zero, one or two times.
        off_a = local.utcoffset() or _ZERO
        a = datetime(local.year, local.month, local.day, local.hour, local.minute)
        # Fire times are whole minutes, so comparing against the minute of `after` is exact.
        w = self._match_after(a)
        if not self._fixed and local.fold == 0:
            off_a1 = _offset(tz, a, 1)
            if off_a > off_a1:
                # `after` is in the first pass of a repeated interval: later walls of that
                # first pass come next, then the whole second pass from its start.
                d = off_a - off_a1
                o0, o1 = _offset(tz, w, 0), _offset(tz, w, 1)
                if o0 > o1 and w - a < d:
                    return _aware(w, tz, 0)
                start = _first_minute(a - d, a, lambda x: _offset(tz, x, 0) > _offset(tz, x, 1))
                w2 = self._match_from(start)
                if w2 <= a:
                    return _aware(w2, tz, 1)
        while True:
            o0, o1 = _offset(tz, w, 0), _offset(tz, w, 1)
            if o0 == o1:
                return _aware(w, tz, 0)
            if o0 > o1:
                # w's first pass (instant w - o0) is after `after` (instant a - off_a); in
                # this form nothing is computed outside the calendar's range.
                if w - a > o0 - off_a:
                    return _aware(w, tz, 0)
                # `after` is in the second pass and w's first pass is already over.
                if not self._fixed:
                    return _aware(w, tz, 1)
                end = _first_minute(
                    w, w + (o0 - o1), lambda x: _offset(tz, x, 0) == _offset(tz, x, 1)
                )
                w = self._match_from(end)
                continue
            end = _first_minute(w, w + (o1 - o0), lambda x: _offset(tz, x, 0) >= _offset(tz, x, 1))
            if self._fixed:
                # Debian runs fixed-time jobs from the skipped interval once, on the jump.
                return _aware(end, tz, 0)
            w = self._match_from(end)

    # -- description -----------------------------------------------------------------

    def describe(self) -> str:
        """An English description, e.g. 'At 09:00, Monday through Friday'."""
        return self._describe_time() + self._describe_days()

    def _describe_time(self) -> str:
        minutes, hours = _bits(self._minutes), _bits(self._hours)
        if len(minutes) * len(hours) <= 6 and len(minutes) <= 3 and len(hours) <= 3:
            times = [f"{h:02d}:{m:02d}" for h in hours for m in minutes]
            return f"At {_join(times)}"
        min_text = _clock_phrase(minutes, 0, 59, "minute")
        if len(hours) == 24 and min_text.startswith("every"):
            return min_text.capitalize()
        head = min_text.capitalize() if min_text.startswith("every") else f"At {min_text}"
        return f"{head} past {_clock_phrase(hours, 0, 23, 'hour')}"

    def _describe_days(self) -> str:
        dom, months, dow = _bits(self._dom), _bits(self._months), _bits(self._dow)
        dom_r, dow_r = len(dom) < 31, len(dow) < 7
        if self._day_or and not (dom_r and dow_r):
            dom_r = dow_r = False  # either field matching every day makes every day match
        month_text = _listing(months, _MONTH_WORDS.__getitem__) if len(months) < 12 else ""
        monday_first = sorted((v + 6) % 7 for v in dow)
        dow_text = _listing(
            monday_first, lambda v: _DOW_WORDS[(v + 1) % 7], "or" if dom_r else "and"
        )
        if self._day_or and dom_r and dow_r:
            in_month = f", in {month_text}" if month_text else ""
            return f" on {_dom_phrase(dom)} of the month or on {dow_text}{in_month}"
        text = ""
        if dom_r:
            text = f" on {_dom_phrase(dom)} of {month_text or 'the month'}"
            if dow_r:
                text += f", if it is a {dow_text}" if len(dow) == 1 else f", if it is {dow_text}"
            return text
        if dow_r:
            single_run = len(_runs(monday_first)) == 1 and len(dow) >= 3
            text = f", {dow_text}" if single_run else f" on {dow_text}"
        if month_text:
            text += f", in {month_text}" if dow_r else f" in {month_text}"
        return text


def _dom_phrase(days: list[int]) -> str:
    step = _step_of(days)
    if step and days[0] == 1 and days[-1] + step > 31:
        return f"every {_ordinal(step)} day"
    if step:
        return f"every {_ordinal(step)} day from {days[0]} through {days[-1]}"
    plural = "s" if len(days) > 1 else ""
    return f"day{plural} {_listing(days, str)}"


def _offset(tz: tzinfo, w: datetime, fold: int) -> timedelta:
    if fold:
        w = datetime(w.year, w.month, w.day, w.hour, w.minute, fold=1)
    off = tz.utcoffset(w)
    return off if off is not None else _ZERO


def _aware(w: datetime, tz: tzinfo, fold: int) -> datetime:
    return datetime(w.year, w.month, w.day, w.hour, w.minute, tzinfo=tz, fold=fold)


def _first_minute(lo: datetime, hi: datetime, ok: Callable[[datetime], Any]) -> datetime:
    """The earliest whole minute in (lo, hi] where ``ok`` holds, given ok(hi) and not ok(lo)."""
    low, high = 0, int((hi - lo) / _MINUTE)
    while high - low > 1:
        mid = (low + high) // 2
        if ok(lo + mid * _MINUTE):
            high = mid
        else:
            low = mid
    return lo + high * _MINUTE
