"""The APScheduler executor of a remote engine: claims each fire like a run here, sends it
to the engine with the fire's key as the message id, waits for its outcome (read back for
all fires in flight at once) and reports it to the run ledger.

A fire in flight on the engine counts as a run in progress: it holds one of the job's
``max_instances`` until its outcome arrives or ``outcome_wait`` passes. It does not take
one of ``max_concurrent_jobs``' slots: those bound the runs in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent

from .executor import Find, Fires, JobExecutor
from .executors import RemoteExecutor, RemoteFire, RemoteOutcome, RemoteTask
from .jobs import JobRecord, describe_exception, utcnow
from .ledger import RunLedger
from .pacing import Pacer, in_slices
from .registry import JobRegistry
from .stores.fires import FireKey

logger = logging.getLogger("nexios_contrib_scheduler")

#: Seconds between two tries to send a fire while its engine cannot be reached: the first,
#: doubled each time up to the most.
SEND_RETRY_FIRST = 0.5
SEND_RETRY_MOST = 5.0
#: Seconds after a fire's message expired before the engine is asked whether it started
#: (a worker that took it just before its expiry has begun it by then).
EXPIRY_MARGIN = 5.0
#: Most outcomes handed to their fires' runs in one turn of the event loop.
OUTCOMES_SLICE = 64


@contextlib.asynccontextmanager
async def _no_slot() -> AsyncIterator[None]:
    yield


class RemoteRuns(JobExecutor):
    """Sends the fires of the jobs that name ``name`` to ``engine``."""

    def __init__(
        self,
        name: str,
        engine: RemoteExecutor,
        registry: JobRegistry,
        ledger: RunLedger,
        fires: Fires,
        find: Find | None = None,
    ) -> None:
        super().__init__(registry, ledger, _no_slot, fires, find)
        self.name = name
        self.engine = engine
        self._waiting: dict[str, asyncio.Future[RemoteOutcome | None]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._poll_failing = False
        self._stopping = False
        self._expiring: dict[str, datetime] = {}  # fires in flight whose messages expire
        self._deadlines: dict[str, float] = {}  # loop time when each fire's outcome_wait ends
        self._pacer = Pacer()  # slices of outcomes handed over in a turn

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._stopping = False

    # ------------------------------------------------------------ one fire

    async def _run_claimed(
        self, record: JobRecord, scheduled: datetime | None
    ) -> JobExecutionEvent | None:
        if record.max_runs is not None and record.total_run_count >= record.max_runs:
            return None
        if scheduled is not None and not self._still_wanted(record, scheduled):
            return None
        now = utcnow()
        grace = record.misfire_grace_time
        expires_at: datetime | None = None
        if scheduled is not None and grace is not None:
            expires_at = scheduled + timedelta(seconds=grace)
            if now > expires_at:
                self._after(self.ledger.missed, record, scheduled, now)
                return JobExecutionEvent(EVENT_JOB_MISSED, record.id, None, scheduled)
        if scheduled is not None:
            self._bookkeep(self._fires.started, record, scheduled)
        self._bookkeep(self.ledger.started, record, scheduled, now)
        try:
            # The job's function is the engine's task (add_job and modify_job see to it;
            # a job read from the store written by other code may not be).
            func = record.func
            task = func if isinstance(func, RemoteTask) else self.engine.task(func)
        except Exception as exc:
            error = (
                f"cannot be sent to {self.engine.engine} ({self.name!r}): {describe_exception(exc)}"
            )
            return self._failed(record, scheduled, now, error, exc)
        fire_id = FireKey(record.id, scheduled).token
        if scheduled is None:
            fire_id += f"-{uuid.uuid4().hex[:12]}"  # each run asked by hand is its own
        fire = RemoteFire(fire_id, task, record.args, record.kwargs, expires_at, record.timeout)
        fresh = await self._send(record, scheduled, now, fire)
        if fresh is None:  # not sent: the engine could not be reached in time
            return JobExecutionEvent(EVENT_JOB_MISSED, record.id, None, scheduled)
        if not fresh:
            logger.info(
                "job %r (%s): fire %s was sent already (by an earlier leader); its outcome is awaited",
                record.name,
                record.id,
                fire_id,
            )
        if not self.engine.tracks_outcomes:
            return self._report(record, scheduled, now, None)  # sent, and nothing more
        try:
            outcome = await self._outcome(fire_id, expires_at)
        except asyncio.CancelledError:
            self._finished(record, scheduled, now, "sent", None)  # it runs on: not known
            raise
        return self._report(record, scheduled, now, outcome)

    async def _send(
        self, record: JobRecord, scheduled: datetime | None, sent: datetime, fire: RemoteFire
    ) -> bool | None:
        """Send ``fire``, trying again (``SEND_RETRY_FIRST`` to ``SEND_RETRY_MOST`` seconds
        apart) while the engine cannot be reached, until the fire's grace runs out
        (``expires_at``; None: until the scheduler stops). What ``send`` answers; None if
        it was never sent, recorded as missed with the last error. Cancelled (shutdown)
        while a send is under way, the fire is recorded as sent; between tries, missed."""
        delay = SEND_RETRY_FIRST
        warned = False
        while True:
            try:
                return await self.engine.send(fire)
            except asyncio.CancelledError:
                self._finished(record, scheduled, sent, "sent", None)
                raise
            except Exception as exc:
                error = describe_exception(exc)
                expires_at = fire.expires_at
                left = None if expires_at is None else (expires_at - utcnow()).total_seconds()
                if self._stopping or (left is not None and left <= delay):
                    why = "the scheduler stopped" if self._stopping else "its grace ran out"
                    self._finished(
                        record,
                        scheduled,
                        utcnow(),
                        "missed",
                        f"missed: not sent: {self.engine.engine} ({self.name!r}) could not be "
                        f"reached before {why}: {error}",
                    )
                    return None
                if not warned:
                    logger.warning(
                        "job %r (%s): could not send fire %s to %s (%r): %s; trying again",
                        record.name,
                        record.id,
                        fire.id,
                        self.engine.engine,
                        self.name,
                        error,
                    )
                    warned = True
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self._finished(
                    record,
                    scheduled,
                    utcnow(),
                    "missed",
                    f"missed: not sent: the scheduler stopped while {self.engine.engine} "
                    f"({self.name!r}) could not be reached: {error}",
                )
                raise
            delay = min(delay * 2, SEND_RETRY_MOST)

    # ------------------------------------------------------------ a stopped leader's fires

    def adopt(self, record: JobRecord, scheduled: datetime, worker: str, counted: bool) -> None:
        """A fire of ``record`` that ``worker`` (now stopped) claimed while it led: follow
        it to its outcome if the engine has it (it was sent), else record it as missed
        (it was not: a fire is never sent twice). It holds one of the job's
        ``max_instances`` meanwhile. ``counted``: the store counts its run already."""
        with self._lock:
            self._instances[record.id] += 1
        self.ledger.adopted(record, scheduled, worker, counted)
        task = self._eventloop.create_task(self._follow(record, scheduled, worker))
        self.tasks[task] = record
        task.add_done_callback(self._forget)

    async def _follow(self, record: JobRecord, scheduled: datetime, worker: str) -> None:
        fire_id = FireKey(record.id, scheduled).token
        try:
            try:
                held = fire_id in await self.engine.known([fire_id])
            except Exception as exc:  # the engine cannot say: follow it anyway
                logger.warning(
                    "could not ask %s whether fire %s was sent: %s; waiting for its outcome",
                    self.engine.engine,
                    fire_id,
                    describe_exception(exc),
                )
                held = True
            now = utcnow()
            if not held:
                self._finished(
                    record,
                    scheduled,
                    now,
                    "missed",
                    f"missed: not sent: claimed by worker {worker}, which stopped before "
                    f"sending it to {self.engine.engine}",
                )
                return
            # Its message expires when its grace ends, as the dead leader sent it: one the
            # broker dropped unstarted is then known as missed, not awaited for nothing.
            grace = record.misfire_grace_time
            expires_at = None if grace is None else scheduled + timedelta(seconds=grace)
            self._report(record, scheduled, now, await self._outcome(fire_id, expires_at))
        finally:
            self._run_job_success(record.id, [])

    def _report(
        self,
        record: JobRecord,
        scheduled: datetime | None,
        sent: datetime,
        outcome: RemoteOutcome | None,
    ) -> JobExecutionEvent | None:
        if outcome is None:
            self._finished(record, scheduled, sent, "sent", None)
            return None
        start = outcome.start or sent
        end = outcome.end or utcnow()
        if outcome.outcome == "success":
            self._finished(
                record, scheduled, start, "success", None, end=end, worker=outcome.worker
            )
            return self._executed_event(record, scheduled)
        error = outcome.error or outcome.outcome
        exc = RemoteRunError(error)
        self._finished(
            record, scheduled, start, outcome.outcome, error, exc, end=end, worker=outcome.worker
        )
        if outcome.outcome == "missed":
            return JobExecutionEvent(EVENT_JOB_MISSED, record.id, None, scheduled)
        return JobExecutionEvent(EVENT_JOB_ERROR, record.id, None, scheduled, exception=exc)

    # ------------------------------------------------------------ outcomes

    async def _outcome(
        self, fire_id: str, expires_at: datetime | None = None
    ) -> RemoteOutcome | None:
        """The fire's outcome once read; None if none came within ``outcome_wait`` (or the
        wait was cut short: shutdown). A fire whose message expired (``expires_at``) and
        that the engine says never started is missed."""
        if self._stopping:  # sent as the scheduler stops: one look, no wait
            with contextlib.suppress(Exception):
                return (await self.engine.outcomes([fire_id])).get(fire_id)
            return None
        loop = asyncio.get_running_loop()
        waiter = self._waiting.get(fire_id)
        if waiter is not None:  # awaited already (a fire followed twice): its outcome too
            return await asyncio.shield(waiter)
        # One future a fire, resolved by the poller (with None once ``outcome_wait`` is
        # over): thousands of fires in flight cost no timer or task each.
        waiter = self._waiting[fire_id] = loop.create_future()
        if self.engine.outcome_wait is not None:
            self._deadlines[fire_id] = loop.time() + self.engine.outcome_wait
        if expires_at is not None:
            self._expiring[fire_id] = expires_at
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll())
        try:
            return await waiter
        finally:
            if self._waiting.get(fire_id) is waiter:
                del self._waiting[fire_id]
            self._expiring.pop(fire_id, None)
            self._deadlines.pop(fire_id, None)

    async def _poll(self) -> None:
        """Read the outcomes of every fire in flight, every ``poll_interval``, while any is."""
        while self._waiting:
            await asyncio.sleep(self.engine.poll_interval)
            await self.poll_once()

    async def poll_once(self) -> None:
        """One read of the outcomes of the fires in flight."""
        waiting = {k: f for k, f in self._waiting.items() if not f.done()}
        if not waiting:
            return
        try:
            found = await self.engine.outcomes(list(waiting))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._poll_failing:
                logger.warning(
                    "could not read outcomes from %s (%r): %s; retrying",
                    self.engine.engine,
                    self.name,
                    describe_exception(exc),
                )
            self._poll_failing = True
            found = {}
        else:
            if self._poll_failing:
                logger.info(
                    "outcomes from %s (%r) can be read again", self.engine.engine, self.name
                )
                self._poll_failing = False
        ended: list[tuple[asyncio.Future[RemoteOutcome | None], RemoteOutcome | None]] = [
            (waiting[fire_id], outcome) for fire_id, outcome in found.items() if fire_id in waiting
        ]
        now = asyncio.get_running_loop().time()
        over: list[str] = []
        for fire_id, deadline in self._deadlines.items():
            if deadline > now:
                break  # kept in the order they were set, one outcome_wait after each send
            over.append(fire_id)
        for fire_id in over:
            if fire_id in waiting and fire_id not in found:
                logger.warning(
                    "fire %s: no outcome from %s within %gs; recorded as sent",
                    fire_id,
                    self.engine.engine,
                    self.engine.outcome_wait,
                )
                ended.append((waiting[fire_id], None))
        await self._deliver(ended)
        if not self._poll_failing:
            await self._drop_expired(waiting, found)

    async def _deliver(
        self, ended: list[tuple[asyncio.Future[RemoteOutcome | None], RemoteOutcome | None]]
    ) -> None:
        """Hand each fire its outcome, a slice per turn of the loop: each fire's run then
        records it (history, counters, events, listeners) in the next turn, and a read that
        brings back thousands must not do all of that in one."""
        await in_slices(self._pacer, ended, OUTCOMES_SLICE, _resolve)

    async def _drop_expired(
        self,
        waiting: dict[str, asyncio.Future[RemoteOutcome | None]],
        found: dict[str, RemoteOutcome],
    ) -> None:
        """Fires whose messages expired ``EXPIRY_MARGIN`` ago without an outcome: those
        the engine says never started are missed (their messages were dropped)."""
        limit = utcnow() - timedelta(seconds=EXPIRY_MARGIN)
        expired = [
            fire_id
            for fire_id, at in self._expiring.items()
            if at < limit and fire_id in waiting and fire_id not in found
        ]
        if not expired:
            return
        try:
            gone = await self.engine.not_started(expired)
        except Exception:
            return  # asked again at the next read
        missed = RemoteOutcome(
            "missed",
            None,
            None,
            f"not started on a {self.engine.engine} worker before it expired",
        )
        await self._deliver([(waiting[fire_id], missed) for fire_id in gone])

    async def stop_waiting(self) -> None:
        """At shutdown: a last read of outcomes; fires still without one are recorded as
        sent (their runs go on on the engine)."""
        self._stopping = True
        with contextlib.suppress(Exception):
            await self.poll_once()
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def close(self) -> None:
        await self.stop_waiting()
        await self.engine.close()


def _resolve(ended: tuple[asyncio.Future[RemoteOutcome | None], RemoteOutcome | None]) -> None:
    future, outcome = ended
    if not future.done():
        future.set_result(outcome)


class RemoteRunError(Exception):
    """A fire's run failed on the engine's worker; the message is the engine's error text."""


__all__ = ["RemoteRunError", "RemoteRuns"]
