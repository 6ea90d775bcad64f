"""The APScheduler executor that runs jobs for the manager.

It replaces APScheduler's own run functions so that the manager sees each run as it starts
and ends (with its scheduled time), applies the global concurrency limit and the misfire
grace window with sub-second precision, and keeps every run task so shutdown can drain them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.job import Job

from .jobs import JobRecord, utcnow

if TYPE_CHECKING:
    from .manager import SchedulerManager


def describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_async_callable(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    # An instance whose class defines ``async def __call__``.
    return not inspect.isroutine(func) and inspect.iscoroutinefunction(type(func).__call__)


class JobExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """Runs coroutine jobs as tasks on the loop and plain functions in worker threads."""

    def __init__(self, manager: SchedulerManager) -> None:
        super().__init__()
        self._manager = manager
        self.tasks: dict[asyncio.Task[None], JobRecord] = {}

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self.tasks = {}

    def _do_submit_job(self, job: Job, run_times: Sequence[datetime]) -> None:
        record = self._manager._records.get(job.id)
        if record is None:  # removed between the scheduler's pass and this submission
            self._run_job_success(job.id, [])
            return
        record.submissions += 1
        task = self._eventloop.create_task(self._run(job, record, list(run_times)))
        self.tasks[task] = record
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.tasks.pop(task, None)

    def submit_manual(self, record: JobRecord) -> bool:
        """Start a run asked for by hand; False if ``max_instances`` runs are in progress.

        The run is counted in APScheduler's own instance count, so scheduled fires see it.
        """
        with self._lock:
            if self._instances[record.id] >= record.max_instances:
                return False
            self._instances[record.id] += 1
        record.submissions += 1
        task = self._eventloop.create_task(self._run_manual(record))
        self.tasks[task] = record
        task.add_done_callback(self._forget)
        return True

    async def _run_manual(self, record: JobRecord) -> None:
        try:
            await self.run_once(record, None)
        finally:
            record.submissions -= 1
            self._manager._submission_done(record)
            self._run_job_success(record.id, [])

    async def _run(self, job: Job, record: JobRecord, run_times: list[datetime]) -> None:
        events: list[JobExecutionEvent] = []
        try:
            for scheduled in run_times:
                event = await self.run_once(record, scheduled)
                if event is not None:
                    event.job_id, event.jobstore = job.id, job._jobstore_alias
                    events.append(event)
        finally:
            record.submissions -= 1
            self._manager._submission_done(record)
            self._run_job_success(job.id, events)

    async def run_once(
        self, record: JobRecord, scheduled: datetime | None
    ) -> JobExecutionEvent | None:
        """One run of ``record``'s function, honouring the grace window and the global limit.

        ``scheduled`` is ``None`` for a run asked for by hand (no misfire check).
        """
        manager = self._manager
        async with manager._slots():
            now = utcnow()
            grace = record.misfire_grace_time
            late = scheduled is not None and grace is not None
            if late and now - scheduled > timedelta(seconds=grace):  # type: ignore[operator,arg-type]
                manager._run_missed(record, scheduled, now)  # type: ignore[arg-type]
                return JobExecutionEvent(EVENT_JOB_MISSED, record.id, None, scheduled)
            manager._run_started(record, scheduled, now)
            try:
                await self._call(record)
            except asyncio.CancelledError:
                manager._run_finished(record, scheduled, now, "cancelled", "run was cancelled")
                raise
            except BaseException as exc:
                manager._run_finished(record, scheduled, now, "error", describe_exception(exc), exc)
                return JobExecutionEvent(
                    EVENT_JOB_ERROR,
                    record.id,
                    None,
                    scheduled,
                    exception=exc,
                    traceback=_format_tb(exc),
                )
            manager._run_finished(record, scheduled, now, "success", None)
            return JobExecutionEvent(EVENT_JOB_EXECUTED, record.id, None, scheduled)

    async def _call(self, record: JobRecord) -> None:
        func, args, kwargs = record.func, record.args, record.kwargs
        if is_async_callable(func):
            await func(*args, **kwargs)
            return
        context = contextvars.copy_context()
        call = functools.partial(context.run, func, *args, **kwargs)
        result = await self._eventloop.run_in_executor(None, call)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            await result


def _format_tb(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
