"""The APScheduler executor that runs jobs and reports each run to the run ledger.

It replaces APScheduler's own run functions so that the ledger sees each run as it starts
and ends (with its scheduled time), applies the global concurrency limit (the slots) and
the misfire grace window with sub-second precision, and keeps every run task so shutdown
can drain them. It is given what it needs, not the manager: the registry (to find a job's
current record), the ledger, the slots, and the fire book (``Fires``: the claim of each
fire as it is submitted, before the pass moves the job on, then its start and end).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, Union

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.job import Job

from .config import JobStatus
from .jobs import JobRecord, Outcome, RunRecord, describe_exception, utcnow
from .ledger import RunLedger
from .registry import JobRegistry
from .stores.fires import set_current_fire

logger = logging.getLogger("nexios_contrib_scheduler")


#: A fire's claim: known at once, or being written.
Claim = Union[bool, "asyncio.Future[bool]"]


class Fires(Protocol):
    """What the executor tells the job store about each scheduled fire.

    ``reserve`` is called as a fire is submitted, in the scheduling pass, before the pass
    moves the job on: the fire is claimed (no other worker runs it) and noted in flight, so
    a leader that dies before running it leaves a trace the next leader records. A claim
    may be a future (it is being written): the run waits for it. Each fire then ends with
    ``ended``, whether it ran (``run`` says how) or not (``run`` is None).
    """

    def reserve(self, record: JobRecord, run_times: Sequence[datetime]) -> list[Claim]:
        """Claim each fire; False for one that must not run (run elsewhere, or recorded as
        not run already); a future that says so once the claim is written, or raises if
        it could not be."""

    def started(self, record: JobRecord, scheduled: datetime) -> None:
        """The run of a claimed fire starts (called just before the ledger counts it)."""

    def ended(self, record: JobRecord, scheduled: datetime, run: RunRecord | None) -> None:
        """A claimed fire is over: its run ended (``run``), or it was not run."""


class LocalFires:
    """The fire book of a scheduler without a job store: every fire is its own."""

    def reserve(self, record: JobRecord, run_times: Sequence[datetime]) -> list[Claim]:
        return [True] * len(run_times)

    def started(self, record: JobRecord, scheduled: datetime) -> None:
        return None

    def ended(self, record: JobRecord, scheduled: datetime, run: RunRecord | None) -> None:
        return None


#: The record a submission of an APScheduler job runs; None if the job is gone.
Find = Callable[[Job, Sequence[datetime]], "JobRecord | None"]

__all__ = ["Fires", "JobExecutor", "LocalFires", "describe_exception", "is_async_callable"]


def is_async_callable(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    # An instance whose class defines ``async def __call__``.
    return not inspect.isroutine(func) and inspect.iscoroutinefunction(type(func).__call__)


class JobExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """Runs coroutine jobs as tasks on the loop and plain functions in worker threads."""

    def __init__(
        self,
        registry: JobRegistry,
        ledger: RunLedger,
        slots: Callable[[], contextlib.AbstractAsyncContextManager[Any]],
        fires: Fires,
        find: Find | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.ledger = ledger
        self._slots = slots
        self._fires = fires
        self._find = find
        self.tasks: dict[asyncio.Task[None], JobRecord] = {}
        self._later: deque[tuple[float, Callable[..., Any], tuple[Any, ...]]] = deque()
        self._draining = False
        self._settled = False
        self._async_funcs: dict[Any, bool] = {}
        self._loop_thread: int | None = None
        # Tasks (by id) whose claimed fire ran: ``_finished`` told the fire book it ended.
        self._ran: dict[int, bool] = {}

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._loop_thread = threading.get_ident()
        self.tasks = {}
        self._later.clear()
        self._draining = False

    def shutdown(self, wait: bool = True) -> None:
        self._run_later_now()
        super().shutdown(wait)

    # ------------------------------------------------------------ bookkeeping of runs
    #
    # While the scheduler is still submitting a burst of due jobs (its pass stopped at the
    # end of a slice), the bookkeeping a run leaves when it ends waits in ``_later``, so that
    # the jobs still to start are not delayed by it. It is done in order, a slice at a time,
    # once the burst has started or has kept it waiting ``later_max_wait`` seconds.

    #: Longest (seconds) a run's bookkeeping waits for a burst of due jobs to start.
    later_max_wait = 0.1
    #: Most deferred items done before the loop gets its turn again.
    later_slice = 64

    def _burst_in_progress(self) -> bool:
        return bool(getattr(self._scheduler, "bursting", False))

    def _after(self, fn: Callable[..., Any], record: JobRecord, *args: Any) -> None:
        """``fn(record, *args)`` now or, while a burst of due jobs is starting, soon after it."""
        if not self._later and not self._burst_in_progress():
            self._bookkeep(fn, record, *args)
            return
        self._later.append((self._eventloop.time(), fn, (record, *args)))
        if not self._draining:
            self._draining = True
            self._eventloop.call_soon(self._drain)

    def _drain(self) -> None:
        later, loop = self._later, self._eventloop
        if not later:
            self._draining = False
            return
        if loop.time() - later[0][0] < self.later_max_wait:
            if self._burst_in_progress():
                self._settled = False
                loop.call_soon(self._drain)  # the burst's next slice comes first
                return
            if not self._settled:
                # One more turn, for the runs the burst's last slice submitted to start.
                self._settled = True
                loop.call_soon(self._drain)
                return
        stop = time.perf_counter() + 0.002
        for _ in range(self.later_slice):
            if not later or time.perf_counter() > stop:
                break
            _, fn, args = later.popleft()
            self._bookkeep(fn, *args)
        if later:
            loop.call_soon(self._drain)
        else:
            self._draining = False

    def _run_later_now(self) -> None:
        while self._later:
            _, fn, args = self._later.popleft()
            self._bookkeep(fn, *args)
        self._draining = False

    def _bookkeep(self, fn: Callable[..., Any], record: JobRecord, *args: Any) -> None:
        """Call the ledger's ``fn(record, *args)`` to record a run; if that raises, the run
        goes on and the failure is recorded on the job, never raised into the run."""
        try:
            fn(record, *args)
        except Exception as exc:
            self.ledger.bookkeeping_failed(record, exc)

    def _finished(
        self,
        record: JobRecord,
        scheduled: datetime | None,
        start: datetime,
        outcome: Outcome,
        error: str | None,
        exc: BaseException | None = None,
        *,
        end: datetime | None = None,
        worker: str | None = None,
    ) -> None:
        """A run ended (``end``: now if not given; ``worker``: where it ran, if elsewhere)."""
        end = utcnow() if end is None else end
        self._after(
            self.ledger.finished, record, scheduled, start, outcome, error, exc, end, worker
        )
        if scheduled is not None:
            self._ran[id(asyncio.current_task())] = True
            run = RunRecord(scheduled, start, end, outcome, error, worker)
            self._after(self._fires.ended, record, scheduled, run)

    def _succeeded(
        self, record: JobRecord, scheduled: datetime | None, start: datetime
    ) -> JobExecutionEvent | None:
        self._finished(record, scheduled, start, "success", None)
        return self._executed_event(record, scheduled)

    def _executed_event(
        self, record: JobRecord, scheduled: datetime | None
    ) -> JobExecutionEvent | None:
        if self._listened(EVENT_JOB_EXECUTED):
            return JobExecutionEvent(EVENT_JOB_EXECUTED, record.id, None, scheduled)
        return None  # nobody listens: not worth building

    def _listened(self, code: int) -> bool:
        wants = getattr(self._scheduler, "wants", None)
        return wants is None or bool(wants(code))

    def _is_async(self, func: Any) -> bool:
        """``is_async_callable``, remembered per function (per class for bound methods)."""
        if type(func) is types.MethodType:
            func = func.__func__  # a bound method is async when its function is
        try:
            known = self._async_funcs.get(func)
        except TypeError:  # an unhashable callable
            return is_async_callable(func)
        if known is None:
            known = is_async_callable(func)
            if len(self._async_funcs) >= 512:
                self._async_funcs.clear()
            self._async_funcs[func] = known
        return known

    def _do_submit_job(self, job: Job, run_times: Sequence[datetime]) -> None:
        # ``find`` (a persistent store) may load it, and counts coalesced fires.
        find = self._find
        record = self.registry.get(job.id) if find is None else find(job, run_times)
        if record is None:  # removed between the scheduler's pass and this submission
            self._run_job_success(job.id, [])
            return
        self.ledger.submitted(record)
        claims = self._fires.reserve(record, run_times)
        fires: list[tuple[datetime, Claim]] = [
            (t, c) for t, c in zip(run_times, claims, strict=True) if c is not False
        ]
        task = self._eventloop.create_task(self._run(job, record, fires))
        self.tasks[task] = record  # _run takes it out when it ends

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
            self.ledger.submitted(record)
        if threading.get_ident() == self._loop_thread:
            self._start_manual(record)
        else:  # asked from another thread: the loop starts the run (and wakes for it)
            self._eventloop.call_soon_threadsafe(self._start_manual, record)
        return True

    def _start_manual(self, record: JobRecord) -> None:
        task = self._eventloop.create_task(self._run_manual(record))
        self.tasks[task] = record
        task.add_done_callback(self._forget)

    async def _run_manual(self, record: JobRecord) -> None:
        try:
            await self.run_once(record, None)
        finally:
            self._run_job_success(record.id, [])  # first: gives back the max_instances slot
            self._bookkeep(self.ledger.submission_ended, record)

    async def _run(self, job: Job, record: JobRecord, fires: list[tuple[datetime, Claim]]) -> None:
        events: list[JobExecutionEvent] = []
        try:
            for scheduled, claim in fires:
                if not isinstance(claim, bool) and not await self._claimed(
                    record, scheduled, claim
                ):
                    continue
                event = await self.run_once(record, scheduled)
                if event is not None:
                    event.job_id, event.jobstore = job.id, job._jobstore_alias
                    events.append(event)
        finally:
            self.tasks.pop(asyncio.current_task(self._eventloop), None)  # type: ignore[arg-type]
            self._run_job_success(job.id, events)
            self._after(self.ledger.submission_ended, record)

    async def _claimed(
        self, record: JobRecord, scheduled: datetime, claim: asyncio.Future[bool]
    ) -> bool:
        """Wait for a fire's claim to be written: True if this worker runs it. A claim that
        could not be written is recorded as not run."""
        try:
            return await claim
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._after(self.ledger.not_run, record, scheduled, f"it could not be claimed: {exc}")
            return False

    async def run_once(
        self, record: JobRecord, scheduled: datetime | None
    ) -> JobExecutionEvent | None:
        """One run of ``record``'s function, honouring the grace window and the global limit.

        ``scheduled`` is ``None`` for a run asked for by hand (no misfire check); a scheduled
        fire has been claimed (``Fires.reserve``) and ends with ``Fires.ended``.
        """
        set_current_fire(record.id, scheduled)
        if scheduled is None:
            return await self._run_claimed(record, None)
        try:
            return await self._run_claimed(record, scheduled)
        finally:
            if not self._ran.pop(id(asyncio.current_task()), False):
                self._after(self._fires.ended, record, scheduled, None)

    async def _run_claimed(
        self, record: JobRecord, scheduled: datetime | None
    ) -> JobExecutionEvent | None:
        async with self._slots():
            if record.max_runs is not None and record.total_run_count >= record.max_runs:
                return None  # an earlier run took the job's last one
            if scheduled is not None and not self._still_wanted(record, scheduled):
                return None
            now = utcnow()
            grace = record.misfire_grace_time
            late = scheduled is not None and grace is not None
            if late and now - scheduled > timedelta(seconds=grace):  # type: ignore[operator,arg-type]
                self._after(self.ledger.missed, record, scheduled, now)
                return JobExecutionEvent(EVENT_JOB_MISSED, record.id, None, scheduled)
            if scheduled is not None:  # first: the store writes it with the count
                self._bookkeep(self._fires.started, record, scheduled)
            self._bookkeep(self.ledger.started, record, scheduled, now)
            timed_out = None
            try:
                if record.timeout is None:
                    await self._call(record)
                else:
                    timed_out = await self._call_with_timeout(record, record.timeout)
            except asyncio.CancelledError as exc:
                if _cancel_requested():
                    error = "run was cancelled"
                    if not self._is_async(record.func):
                        error += (
                            " (a plain function cannot be stopped: its thread runs on to the end)"
                        )
                    self._finished(record, scheduled, now, "cancelled", error, exc)
                    raise
                # Nobody cancelled this run: the job raised CancelledError itself (or awaited
                # something that was cancelled). That is the job failing, not a cancellation.
                error = f"{describe_exception(exc)} raised by the job (the run was not cancelled)"
                return self._failed(record, scheduled, now, error, exc)
            except BaseException as exc:
                return self._failed(record, scheduled, now, describe_exception(exc), exc)
            if timed_out is not None:
                text, raised = timed_out
                timeout_exc = TimeoutError(text)
                timeout_exc.__cause__ = raised  # what the run raised after its timeout, if any
                self._finished(record, scheduled, now, "timeout", text, timeout_exc)
                return JobExecutionEvent(
                    EVENT_JOB_ERROR, record.id, None, scheduled, exception=timeout_exc
                )
            return self._succeeded(record, scheduled, now)

    def _failed(
        self,
        record: JobRecord,
        scheduled: datetime | None,
        start: datetime,
        error: str,
        exc: BaseException,
    ) -> JobExecutionEvent:
        self._finished(record, scheduled, start, "error", error, exc)
        return JobExecutionEvent(
            EVENT_JOB_ERROR,
            record.id,
            None,
            scheduled,
            exception=exc,
            traceback=_format_tb(exc),
        )

    def _still_wanted(self, record: JobRecord, scheduled: datetime) -> bool:
        """Whether a fire that waited for a slot (``max_concurrent_jobs``) should still run:
        not once its job was removed, replaced or paused meanwhile. (Fires submitted before
        a shutdown still run: shutdown drains them.)"""
        if not self.registry.holds(record):
            return False
        return record.status not in (JobStatus.CANCELLED, JobStatus.PAUSED) and not (
            record.failure_paused
        )

    async def _call_with_timeout(
        self, record: JobRecord, timeout: float
    ) -> tuple[str, BaseException | None] | None:
        """Run with a time limit. None if the run kept to it; else the error text, and the
        exception the run raised after its deadline (None if it raised nothing, or only
        the cancellation the deadline sent it).

        A coroutine still running at the deadline is cancelled. A plain function runs in a
        worker thread that cannot be stopped: it is awaited to its end (keeping its slot)
        and reported as timed out if it took too long.
        """
        loop = self._eventloop
        if not is_async_callable(record.func):
            started = loop.time()
            handle = loop.call_later(timeout, _warn_overrun, record, timeout)
            raised: BaseException | None = None
            try:
                await self._call(record)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if loop.time() - started <= timeout:
                    raise
                raised = exc
            finally:
                handle.cancel()
            elapsed = loop.time() - started
            if elapsed <= timeout:
                return None
            ending = (
                f"it returned after {elapsed:.3f}s"
                if raised is None
                else f"it raised {describe_exception(raised)} after {elapsed:.3f}s"
            )
            return (
                f"timed out after {timeout:g}s (a plain function cannot be cancelled; {ending})",
                raised,
            )
        task = asyncio.current_task()
        assert task is not None
        deadline = _Deadline(task)
        handle = loop.call_later(timeout, deadline.expire)
        try:
            await self._call(record)
        except BaseException as exc:
            if not deadline.expired:
                raise
            if deadline.withdraw() and isinstance(exc, asyncio.CancelledError):
                raise  # cancelled by someone else too (shutdown): let that through
            if not isinstance(exc, asyncio.CancelledError):
                # The job caught the cancellation and raised something else: keep it.
                text = f"timed out after {timeout:g}s, then raised {describe_exception(exc)}"
                return text, exc
        else:
            if not deadline.expired:
                return None
            deadline.withdraw()  # the job swallowed the cancellation and returned
        finally:
            handle.cancel()
        return f"timed out after {timeout:g}s", None

    async def _call(self, record: JobRecord) -> None:
        func, args, kwargs = record.func, record.args, record.kwargs
        if self._is_async(func):
            await func(*args, **kwargs)
            return
        context = contextvars.copy_context()
        call = functools.partial(context.run, func, *args, **kwargs)
        result = await self._eventloop.run_in_executor(None, call)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            await result


def _cancel_requested() -> bool:
    """Whether the running task was asked to stop (by shutdown, a timeout, the loop closing),
    as opposed to a CancelledError the job raised on its own.

    Python 3.10 keeps no count of cancellation requests: there, every CancelledError is
    taken for a cancellation, as the safe reading.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


class _Deadline:
    """Cancels a run's task at its timeout, remembering that it did."""

    __slots__ = ("expired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def withdraw(self) -> bool:
        """Take back our cancellation; True if the task was also cancelled by another.

        Python 3.10 does not count cancellations, so there it always answers False.
        """
        uncancel = getattr(self.task, "uncancel", None)
        return uncancel is not None and uncancel() > 0


def _warn_overrun(record: JobRecord, timeout: float) -> None:
    logger.warning(
        "job %r (%s) is still running after its %gs timeout; a plain function cannot be "
        "cancelled, so the run keeps its max_instances slot until it returns",
        record.name,
        record.id,
        timeout,
    )


def _format_tb(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
