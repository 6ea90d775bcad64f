"""Scheduler events and the listeners that receive them."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

logger = logging.getLogger("nexios_contrib_scheduler")

#: Every event kind a listener can ask for, in the order a job meets them.
EVENT_KINDS: tuple[str, ...] = (
    "job_added",
    "job_started",
    "job_succeeded",
    "job_failed",
    "job_missed",
    "job_skipped",
    "job_paused",
    "job_resumed",
    "job_removed",
)

Listener = Callable[["SchedulerEvent"], Any]


class NamedJob(Protocol):
    """What an event needs to know of the job it is about."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class SchedulerEvent:
    """What happened to a job, as given to listeners.

    ``kind`` is one of ``EVENT_KINDS``. ``scheduled_time`` is the fire time a run served
    (``None`` for a run started by ``run_job_now`` and for events that are not about a
    run); ``duration`` is set on ``job_succeeded`` and ``job_failed``; ``exception`` is what
    a failed run raised (a ``TimeoutError`` for a run over its ``timeout``); ``error`` is the
    text recorded for a failed, missed or skipped run.
    """

    kind: str
    job_id: str
    job_name: str
    scheduled_time: datetime | None = None
    duration: float | None = None
    exception: BaseException | None = None
    error: str | None = None


def check_event_kinds(events: str | Iterable[str] | None) -> frozenset[str] | None:
    """The set of kinds a listener asked for (``None``: all), refusing unknown names."""
    if events is None:
        return None
    names = [events] if isinstance(events, str) else list(events)
    unknown = [name for name in names if name not in EVENT_KINDS]
    if unknown:
        raise ValueError(
            f"unknown event name(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(EVENT_KINDS)}"
        )
    if not names:
        raise ValueError(f"events is empty; give None for every event or some of: {EVENT_KINDS}")
    return frozenset(names)


class Listeners:
    """The callbacks registered on one scheduler, and the tasks of the async ones."""

    def __init__(self, loop: Callable[[], asyncio.AbstractEventLoop | None]) -> None:
        self._entries: list[tuple[Listener, frozenset[str] | None]] = []
        self._scheduler_loop = loop
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, callback: Listener, events: str | Iterable[str] | None = None) -> None:
        if not callable(callback):
            raise TypeError(f"a listener must be callable, not {type(callback).__name__}")
        kinds = check_event_kinds(events)
        self._entries = [*self._entries, (callback, kinds)]

    def remove(self, callback: Listener) -> bool:
        kept = [entry for entry in self._entries if entry[0] != callback]
        removed = len(kept) != len(self._entries)
        self._entries = kept
        return removed

    def wants(self, kind: str) -> bool:
        if not self._entries:  # the common case, on every run: keep it cheap
            return False
        return any(kinds is None or kind in kinds for _, kinds in self._entries)

    def job_event(
        self,
        kind: str,
        job: NamedJob,
        scheduled: datetime | None = None,
        duration: float | None = None,
        exc: BaseException | None = None,
        error: str | None = None,
    ) -> None:
        """Send a ``kind`` event about a job to the listeners that take it (if any do)."""
        if self.wants(kind):
            self.emit(SchedulerEvent(kind, job.id, job.name, scheduled, duration, exc, error))

    def emit(self, event: SchedulerEvent) -> None:
        for callback, kinds in self._entries:
            if kinds is not None and event.kind not in kinds:
                continue
            try:
                result = callback(event)
            except BaseException:  # SystemExit from a listener must not stop the app either
                logger.exception(
                    "listener %r failed on %s for job %r", callback, event.kind, event.job_id
                )
                continue
            if inspect.isawaitable(result):
                self._schedule(callback, event, result)

    def _schedule(self, callback: Listener, event: SchedulerEvent, awaitable: Any) -> None:
        coro = _guarded(callback, event, awaitable)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task = loop.create_task(coro)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        target = self._scheduler_loop()
        if target is not None and not target.is_closed():
            asyncio.run_coroutine_threadsafe(coro, target)
            return
        coro.close()
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        logger.warning(
            "async listener %r not called for %s of job %r: no event loop is running",
            callback,
            event.kind,
            event.job_id,
        )


async def _guarded(callback: Listener, event: SchedulerEvent, awaitable: Any) -> None:
    try:
        await awaitable
    except asyncio.CancelledError:
        raise
    except BaseException:
        logger.exception("listener %r failed on %s for job %r", callback, event.kind, event.job_id)
