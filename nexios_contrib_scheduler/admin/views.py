"""Jobs as the admin API shows them: JSON that any job's data turns into, within bounds.

A job holds whatever its owner passed: arguments of any type (a client object, a list that
contains itself, ``float("inf")``, megabytes of text, bytes), and names, pause reasons and
error texts with any characters. None of it may break an answer that lists every other
job, so each value becomes plain JSON here, cut to a fixed size, and a job's argument
values are hidden unless the router is built to show them.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from itertools import islice
from typing import Any, TypeVar

from ..executors import RemoteTask
from ..jobs import ScheduledJob

logger = logging.getLogger("nexios_contrib_scheduler")

#: Characters of one string shown before it is cut.
TEXT_LIMIT = 1000
#: Items of one list or mapping shown before the rest is counted.
ITEMS_LIMIT = 100
#: Nesting levels shown; deeper containers are named by type and size.
DEPTH_LIMIT = 6
#: Values shown across all of one job's arguments; the rest are counted.
VALUES_LIMIT = 1000
#: Characters of text across all of one job's arguments; later strings are cut short.
ARGUMENTS_TEXT_LIMIT = 20_000
#: What a string is cut to once ``ARGUMENTS_TEXT_LIMIT`` is spent.
SHORT_TEXT = 40

# Lone surrogates (from bytes decoded with "surrogateescape", say) cannot be encoded as
# UTF-8, which every client needs; they are shown as U+FFFD.
_SURROGATES = re.compile("[\ud800-\udfff]")

_T = TypeVar("_T")


def clean(value: str) -> str:
    """``value`` as valid UTF-8: each lone surrogate becomes U+FFFD."""
    return _SURROGATES.sub("\ufffd", value)


def text(value: str, limit: int = TEXT_LIMIT) -> str:
    """``value`` cut to ``limit`` characters (saying how long it was), valid as UTF-8."""
    if len(value) > limit:
        value = f"{value[:limit]}… ({len(value)} characters)"
    return clean(value)


def optional_text(value: object, limit: int = TEXT_LIMIT) -> str | None:
    """A text field of a job (a name, a reason, an error), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return text(str.__str__(value), limit)
    return repr_text(value, limit)


def repr_text(value: object, limit: int = TEXT_LIMIT) -> str:
    """``repr(value)``, cut; its type name when the ``repr`` fails."""
    try:
        shown = repr(value)
        if not isinstance(shown, str):
            raise TypeError(f"__repr__ returned {type_name(shown)}")
        return text(str.__str__(shown), limit)
    except Exception:
        return f"<unrepresentable {type_name(value)}>"


def type_name(value: object) -> str:
    name = getattr(type(value), "__name__", None)
    return name if isinstance(name, str) else "object"


def json_value(value: object) -> Any:
    """Any Python value as JSON data, cut to the limits above; never raises."""
    return _Walk().value(value, 0)


def arguments(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], *, show: bool
) -> tuple[list[Any], dict[str, Any]]:
    """A job's arguments for the API: values when ``show``, else ``"<hidden TYPE>"`` each.

    Keyword names are always shown. Every value of one job shares one size budget.
    """
    if not show:
        hidden = _Walk()
        return hidden.items(args, 0, _hidden), hidden.mapping(kwargs, 0, _hidden)
    walk = _Walk()
    return walk.items(args, 0, walk.value), walk.mapping(kwargs, 0, walk.value)


def _hidden(value: object, depth: int) -> str:
    return f"<hidden {type_name(value)}>"


class _Walk:
    """One conversion: the containers open on the way down, and what is left to spend."""

    __slots__ = ("open", "room", "values")

    def __init__(self) -> None:
        self.open: set[int] = set()
        self.values = VALUES_LIMIT
        self.room = ARGUMENTS_TEXT_LIMIT

    def value(self, value: object, depth: int) -> Any:
        self.values -= 1
        try:
            return self._convert(value, depth)
        except Exception:  # a __repr__, __iter__ or isoformat of the user's that fails
            return f"<unrepresentable {type_name(value)}>"

    def _convert(self, value: object, depth: int) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self.text(str.__str__(value))
        if isinstance(value, int):
            integer = _integer(int.__int__(value))
            return self.text(integer) if isinstance(integer, str) else integer
        if isinstance(value, float):
            number = float.__float__(value)
            return number if math.isfinite(number) else repr(number)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self.text(_bytes_text(value))
        if isinstance(value, (datetime, date, time)):
            return self.text(value.isoformat())
        if isinstance(value, (dict, list, tuple, set, frozenset, deque)):
            return self.container(value, depth)
        return self.text(repr_text(value, TEXT_LIMIT))

    def text(self, value: str) -> str:
        value = text(value, min(TEXT_LIMIT, max(self.room, SHORT_TEXT)))
        self.room -= len(value)
        return value

    def container(self, value: Any, depth: int) -> Any:
        name = type_name(value)
        if id(value) in self.open:
            return f"<recursive {name}>"
        if depth >= DEPTH_LIMIT or self.values <= 0:
            return f"<{name} of {len(value)} items>"
        self.open.add(id(value))
        try:
            if isinstance(value, dict):
                return self.mapping(value, depth + 1, self.value)
            return self.items(value, depth + 1, self.value)
        finally:
            self.open.discard(id(value))

    def items(self, value: Any, depth: int, convert: Callable[[Any, int], Any]) -> list[Any]:
        shown: list[Any] = []
        for item in islice(value, ITEMS_LIMIT):
            if self.values <= 0:
                break
            shown.append(convert(item, depth))
        left = len(value) - len(shown)
        if left > 0:
            shown.append(f"… {left} more items")
        return shown

    def mapping(
        self, value: Mapping[Any, Any], depth: int, convert: Callable[[Any, int], Any]
    ) -> dict[str, Any]:
        shown: dict[str, Any] = {}
        for key, item in islice(value.items(), ITEMS_LIMIT):
            if self.values <= 0:
                break
            shown[self.key(key)] = convert(item, depth)
        left = len(value) - len(shown)
        if left > 0:
            shown["…"] = f"{left} more items"
        return shown

    def key(self, key: object) -> str:
        self.values -= 1
        return optional_text(key, 200) or ""


def _integer(value: int) -> int | str:
    # Beyond 64 bits JavaScript loses digits, and beyond 4300 digits Python refuses str().
    if value.bit_length() <= 64:
        return value
    try:
        return str(value)
    except ValueError:
        return f"<int of about {int(value.bit_length() * math.log10(2)) + 1} digits>"


def _bytes_text(value: bytes | bytearray | memoryview) -> str:
    size = value.nbytes if isinstance(value, memoryview) else len(value)
    shown = repr(bytes(value[:SHORT_TEXT]))
    return shown if size <= SHORT_TEXT else f"{shown}… ({size} bytes)"


def func_name(func: Callable[..., Any]) -> str:
    """``module:qualname`` of the function a job calls, never its arguments.

    A ``functools.partial`` (and an object's ``repr``) would show the bound arguments, so
    a partial is named by the function it wraps, a callable object by its class.
    """
    if isinstance(func, RemoteTask):
        return clean(func.ref)
    target: Any = func
    partial = isinstance(func, functools.partial)
    while isinstance(target, functools.partial):
        target = target.func
    qualname = getattr(target, "__qualname__", None)
    module = getattr(target, "__module__", None)
    if not isinstance(qualname, str):
        qualname = getattr(type(target), "__qualname__", type_name(target))
        module = getattr(type(target), "__module__", None)
    name = f"{module}:{qualname}" if isinstance(module, str) and module else str(qualname)
    return text(f"partial({name})" if partial else name, 300)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _guarded(job: ScheduledJob, what: str, compute: Callable[[], _T], fallback: _T) -> _T:
    """``compute()``, or ``fallback`` when a job's own object (its trigger) fails."""
    try:
        return compute()
    except Exception:
        logger.warning("scheduler admin: the %s of job %r failed", what, job.id, exc_info=True)
        return fallback


def job_view(job: ScheduledJob, *, show_arguments: bool) -> dict[str, Any]:
    """``ScheduledJob.to_dict()``'s fields, each safe to send whatever the job holds."""
    args, kwargs = arguments(job.args, job.kwargs, show=show_arguments)
    trigger = job.trigger
    return {
        "id": clean(job.id),
        "name": optional_text(job.name) or "",
        "func": func_name(job.func),
        "trigger": _guarded(job, "trigger", lambda: json_value(trigger.to_dict()), {}),
        "trigger_description": _guarded(
            job, "trigger description", lambda: text(trigger.describe()), "(unavailable)"
        ),
        "args": args,
        "kwargs": kwargs,
        "max_instances": job.max_instances,
        "misfire_grace_time": job.misfire_grace_time,
        "coalesce": job.coalesce,
        "timeout": job.timeout,
        "pause_on_failure": job.pause_on_failure,
        "max_runs": job.max_runs,
        "executor": clean(job.executor),
        "status": job.status.value,
        "paused_reason": optional_text(job.paused_reason),
        "next_run_time": _guarded(job, "next run time", lambda: _iso(job.next_run_time), None),
        "last_run_time": _iso(job.last_run_time),
        "last_outcome": job.last_outcome,
        "last_error": optional_text(job.last_error),
        "total_run_count": job.total_run_count,
        "success_count": job.success_count,
        "failure_count": job.failure_count,
        "missed_count": job.missed_count,
        "skipped_count": job.skipped_count,
        "consecutive_failures": job.consecutive_failures,
        "last_duration": job.last_duration,
        "current_instances": job.current_instances,
        "created_at": _iso(job.created_at),
        "history": [_run_view(run.to_dict()) for run in job.history],
    }


def job_detail_view(job: ScheduledJob, *, show_arguments: bool, fires: int) -> dict[str, Any]:
    """The job with its next ``fires`` fire times."""
    data = job_view(job, show_arguments=show_arguments)
    no_times: list[str] = []
    data["next_run_times"] = _guarded(
        job, "next fire times", lambda: [t.isoformat() for t in job.next_run_times(fires)], no_times
    )
    return data


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    run["error"] = optional_text(run.get("error"))
    run["worker"] = optional_text(run.get("worker"))
    return run
