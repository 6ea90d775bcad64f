"""SchedulerManager: the documented API over APScheduler's AsyncIOScheduler.

The manager is the facade over the parts that do the work: the registry holds the job
records (``registry.py``), the run ledger records runs (``ledger.py``), APScheduler decides
when jobs are due and the executor runs them, reporting to the ledger (``executor.py``),
and with a persistent job store, persistence (``stores/``) follows the registry's changes.
A listener on APScheduler's events notices what APScheduler does on its own (a one-shot
job leaving the store, a fire skipped because ``max_instances`` was reached). The registry
outlives APScheduler's in-memory store, so a manager can be stopped and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_REMOVED, JobEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.util import check_callable_args

from . import clock
from .config import (
    JobStatus,
    SchedulerConfig,
    check_coalesce,
    check_executor,
    check_max_instances,
    check_max_runs,
    check_misfire_grace_time,
    check_pause_on_failure,
    check_timeout,
)
from .errors import ConfigError, ConflictingIdError, JobNotFoundError
from .events import Listener, Listeners
from .executor import JobExecutor, LocalFires
from .executors import RemoteTask, remote_task_stand_in
from .jobs import JobRecord, ScheduledJob, utcnow
from .ledger import RunLedger
from .listing import JobListing
from .registry import JobRegistry
from .remote import RemoteRuns
from .scheduler import AdapterScheduler, apscheduler_grace
from .triggers import ScheduleTrigger, Trigger, check_count

if TYPE_CHECKING:
    from .stores.persistence import Persistence

logger = logging.getLogger("nexios_contrib_scheduler")

F = TypeVar("F", bound=Callable[..., Any])


class _Unchanged(enum.Enum):
    UNCHANGED = "unchanged"

    def __repr__(self) -> str:
        return "<unchanged>"


#: The default of ``modify_job``'s options: leave that option as it is.
UNCHANGED = _Unchanged.UNCHANGED
Unchanged = Literal[_Unchanged.UNCHANGED]


class SchedulerManager:
    """Schedules and runs jobs on the app's event loop.

    Jobs can be added before or after ``start()``; ``apscheduler`` gives the underlying
    ``AsyncIOScheduler`` for advanced use.
    """

    # The parts behind the facade, for the store layer and the testing aid.
    registry: JobRegistry
    ledger: RunLedger
    listeners: Listeners
    executor: JobExecutor
    #: With a persistent job store: what the manager does differently (else None).
    persistence: Persistence | None

    def __init__(self, app: Any = None, config: SchedulerConfig | None = None) -> None:
        if config is not None and not isinstance(config, SchedulerConfig):
            raise TypeError(f"config must be a SchedulerConfig, not {type(config).__name__}")
        self.app = app
        self.config = config if config is not None else SchedulerConfig()
        if self.config.log_level is not None:  # else: the level the app gave the logger
            logger.setLevel(self.config.log_level)
        self.registry = JobRegistry()
        self.listeners = Listeners(lambda: self._scheduler.event_loop)
        self.ledger = RunLedger(
            self.registry, self.listeners, unschedule=self._drop_from_apscheduler, hold=self._hold
        )
        self._times = JobTimes(self)
        self._listing = JobListing(self.registry, self._times)
        self._reader = StoreReader(self)
        self._semaphore: asyncio.Semaphore | None = None
        self.persistence = None
        jobstores: dict[str, Any] = {}
        if self.config.jobstore_url is not None:
            from .stores.persistence import Persistence

            self.persistence = Persistence(
                self.config,
                self.registry,
                self.ledger,
                self.config.jobstore_url,
                schedule=self._schedule,
                run_now=self.run_job_now,
                adopt=self._adopt,
            )
            jobstores["default"] = self.persistence.jobstore
        fires = LocalFires() if self.persistence is None else self.persistence
        find = None if self.persistence is None else self.persistence.on_submit
        self.executor = JobExecutor(self.registry, self.ledger, self._slots, fires, find)
        #: The remote engines' executors, by name (``SchedulerConfig(executors=...)``).
        self.remote: dict[str, RemoteRuns] = {
            name: RemoteRuns(name, engine, self.registry, self.ledger, fires, find)
            for name, engine in self.config.executors.items()
        }
        self._scheduler = AdapterScheduler(
            # APScheduler works in UTC: with a zone that has daylight saving, its wakeup
            # arithmetic on same-zone datetimes is off by the DST offset around a change.
            # Triggers read wall clocks in the configured zone themselves.
            timezone=timezone.utc,
            executors={"default": self.executor, **self.remote},
            jobstores=jobstores,
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self._scheduler.add_listener(
            self._on_apscheduler_event, EVENT_JOB_REMOVED | EVENT_JOB_MAX_INSTANCES
        )
        self._scheduler.on_trigger_error = self._trigger_failed
        # A job whose executor this worker lacks (a worker on older settings, during a
        # deploy) stays scheduled: its fires go to this process, which records each as
        # failed and says why, instead of APScheduler deleting the job.
        self._scheduler.fallback_executor = self.executor
        self._scheduler.on_next_run_time = self._moved_on
        if self.persistence is not None:
            self.persistence.attach(self._scheduler)
            self._scheduler.claim_fires = self.persistence.reserve_many
            self._scheduler.claims_unwritten = self.persistence.claims_unwritten
            self._scheduler.runs_waiting = self.persistence.runs_waiting
            self._scheduler.claim_ahead = float(self.config.claim_ahead)
            self._scheduler.end_unused_claims = self.persistence.give_back_unused

    # ------------------------------------------------------------ lifecycle

    @property
    def apscheduler(self) -> AsyncIOScheduler:
        """The underlying APScheduler scheduler, for what this API does not cover."""
        return self._scheduler

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``shutdown()``."""
        return bool(self._scheduler.state != STATE_STOPPED)

    @property
    def last_pass_time(self) -> datetime | None:
        """When the scheduler last looked for due jobs (UTC); None before its first look."""
        return self._scheduler.last_pass_time

    @property
    def worker_id(self) -> str:
        """This worker's id: ``host:pid``, plus a random part (new at each start) when the
        job store is persistent."""
        if self.persistence is not None:
            return self.persistence.worker_id
        return f"{socket.gethostname()}:{os.getpid()}"

    @property
    def is_leader(self) -> bool:
        """True while this worker fires jobs: always while running with ``jobstore="memory"``
        or no ``coordination``; with coordination, while it holds the lease."""
        if self.persistence is not None:
            return self.persistence.is_leader
        return self.running

    def status(self) -> dict[str, Any]:
        """Which worker fires the jobs, for a health or status page.

        Keys: ``worker_id``, ``role`` (``"leader"``, ``"standby"`` or ``"stopped"``),
        ``is_leader``, ``leader`` (the leading worker's id, if known), ``jobstore`` and
        ``coordination`` (URLs without passwords), ``lease_seconds``, and ``workers``: the
        workers seen alive by their heartbeats. It does no I/O: the leader and the workers
        are as of the latest heartbeat (every ``lease_seconds / 2``, at most 5 s).
        """
        if self.persistence is not None:
            return self.persistence.status()
        return {
            "worker_id": self.worker_id,
            "role": "leader" if self.running else "stopped",
            "is_leader": self.running,
            "leader": self.worker_id if self.running else None,
            "jobstore": "memory",
            "coordination": None,
            "lease_seconds": self.config.lease_seconds,
            "workers": [],
        }

    async def start(self) -> None:
        """Start firing jobs on the running event loop; a no-op if already running."""
        if self.running:
            return
        self._semaphore = asyncio.Semaphore(self.config.max_concurrent_jobs)
        if self.persistence is not None:
            await self.persistence.start()
            clock.register_running(self)
            return
        self._scheduler.start()
        clock.register_running(self)
        now = utcnow()
        with self.registry.lock:
            for record in self.registry.records():
                if not record.finished:
                    self._schedule_at_start(record, now)
        logger.info("scheduler started with %d job(s)", len(self.registry))

    async def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every change made so far is written to the job store.

        With a persistent store, ``add_job``, ``pause_job`` and the other job operations
        change this worker's view at once and return; the store is written off the event
        loop, in batches, a few milliseconds later (the other workers see the change once
        it is written). Await this to know it is durable: True once everything handed
        over before the call is written, False if it was not within ``timeout`` seconds
        (the store is unreachable: the writes are kept and retried). Without a persistent
        store there is nothing to write: True at once.
        """
        if self.persistence is None or not self.running:
            return True
        return await self.persistence.flush(timeout)

    def _schedule_at_start(self, record: JobRecord, now: datetime) -> None:
        # One job that cannot be scheduled must not leave the others unscheduled.
        try:
            self._schedule(record, now)
        except Exception as exc:
            self.ledger.not_scheduled(record, exc)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop firing, let running jobs finish (up to ``shutdown_timeout``), cancel the rest."""
        if not self.running:
            return
        if self.persistence is not None:
            await self.persistence.stop()
        self._scheduler.pause()
        limit = self.config.shutdown_timeout if timeout is None else timeout
        for runs in self.remote.values():
            await runs.stop_waiting()  # their runs go on on the engine: recorded as sent
        tasks = dict(self.executor.tasks)
        for runs in self.remote.values():
            tasks.update(runs.tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=limit)
            if pending:
                names = sorted({tasks[t].name for t in pending})
                logger.warning(
                    "cancelling %d run(s) still going after %gs at shutdown: %s",
                    len(pending),
                    limit,
                    ", ".join(names),
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        self._scheduler.shutdown()
        for runs in self.remote.values():
            await runs.close()
        if self.persistence is not None:
            await self.persistence.flush()  # what is handed to the writer, written off the loop
            await asyncio.to_thread(self.persistence.close)
        clock.unregister_running(self)
        with self.registry.lock:
            for record in self.registry.records():
                if not record.finished and record.status is not JobStatus.PAUSED:
                    record.pending_next_run = None
        self._semaphore = None
        logger.info("scheduler stopped")

    def _slots(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.config.max_concurrent_jobs)
        return self._semaphore

    # ------------------------------------------------------------ job operations

    def add_job(
        self,
        func: Callable[..., Any] | str,
        trigger: Trigger,
        *,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        max_instances: int | None = None,
        misfire_grace_time: float | None = None,
        coalesce: bool | None = None,
        id: str | None = None,
        replace_existing: bool = False,
        timeout: float | None = None,
        pause_on_failure: bool | None = None,
        max_runs: int | None = None,
        executor: str = "default",
    ) -> ScheduledJob:
        """Schedule ``func`` on ``trigger``; options left as ``None`` take ``job_defaults``.

        ``timeout`` is how many seconds a run may take: a coroutine run still going then is
        cancelled and recorded as ``timeout``; a plain function (run in a worker thread,
        which cannot be stopped) is recorded as ``timeout`` and keeps its ``max_instances``
        slot until it returns. ``pause_on_failure=True`` pauses the job after a failed run
        (status ``FAILED``) until ``resume_job``. ``max_runs`` completes the job after that
        many runs.

        ``executor`` names where the fires run: ``"default"``, this process, or a remote
        engine from ``SchedulerConfig(executors=...)``; ``func`` is then the engine's task
        (its name, or the object the engine registers) and each fire is sent to it.

        Raises ``ConflictingIdError`` if ``id`` is taken (unless ``replace_existing``),
        ``TypeError`` for a non-callable or an unknown option, ``ValueError`` for bad option
        values.
        """
        if not isinstance(replace_existing, bool):
            raise TypeError(f"replace_existing must be True or False, not {replace_existing!r}")
        executor = check_executor(executor, self.remote)
        if executor != "default":
            func = self.remote[executor].engine.task(func)
        elif isinstance(func, str):
            raise TypeError(
                f"add_job needs a callable, not str {func!r}: a task's name is for a "
                "remote engine's executor (executor='celery', 'arq', ...)"
            )
        record = self._new_record(
            func, trigger, name, args, kwargs, max_instances, misfire_grace_time, coalesce, id
        )
        record.executor = executor
        defaults = self.config.job_defaults
        record.timeout = check_timeout(defaults["timeout"] if timeout is None else timeout)
        record.pause_on_failure = check_pause_on_failure(
            defaults["pause_on_failure"] if pause_on_failure is None else pause_on_failure
        )
        record.max_runs = check_max_runs(max_runs)
        now = utcnow()
        plan = self._plan(trigger, now)  # a trigger that cannot be scheduled changes nothing
        if self.persistence is not None:
            self.persistence.prepare_add(record, explicit_id=id is not None)
        registry = self.registry
        with registry.lock:
            old = registry.get(record.id)
            if old is not None and not replace_existing:
                raise ConflictingIdError(record.id)
            registry.put(record)
            try:
                self._schedule(record, now, plan)
            except BaseException:
                if old is None:
                    registry.pop(record.id)
                else:
                    registry.put(old)
                raise
            if old is not None:
                old.status = JobStatus.CANCELLED
            registry.announce("added", record)
        if logger.isEnabledFor(logging.DEBUG):  # describe() costs more than the add itself
            logger.debug("added job %r (%s): %s", record.name, record.id, record.trigger.describe())
        self.listeners.job_event("job_added", record)
        return self._view(record)

    def scheduled_job(self, trigger: Trigger, **options: Any) -> Callable[[F], F]:
        """Decorator form of ``add_job``: ``@scheduler.scheduled_job(IntervalTrigger(seconds=30))``.

        ``options`` are those of ``add_job``. The function is scheduled when the decorator
        runs (before or after ``start()``) and is returned unchanged.
        """

        def decorate(func: F) -> F:
            self.add_job(func, trigger, **options)
            return func

        return decorate

    def modify_job(
        self,
        job_id: str,
        *,
        name: str | Unchanged = UNCHANGED,
        args: Iterable[Any] | Unchanged = UNCHANGED,
        kwargs: Mapping[str, Any] | Unchanged = UNCHANGED,
        max_instances: int | Unchanged = UNCHANGED,
        misfire_grace_time: float | Unchanged | None = UNCHANGED,
        coalesce: bool | Unchanged = UNCHANGED,
        timeout: float | Unchanged | None = UNCHANGED,
        executor: str | Unchanged = UNCHANGED,
    ) -> ScheduledJob:
        """Change some of a job's options; those not given stay as they are.

        ``None`` is a value here, not "the default": ``misfire_grace_time=None`` runs
        however late, ``timeout=None`` lifts the time limit. Values are checked as by
        ``add_job`` (same errors) and nothing changes if one is refused. Runs already in
        progress keep the options they started with. Raises ``JobNotFoundError`` for an
        unknown id. ``executor`` moves the job to a remote engine (its function's name is
        the task's) or between engines; a job whose function is a remote task cannot move
        to ``"default"`` (add it again with a function).
        """
        changes: dict[str, Any] = {}
        if executor is not UNCHANGED:
            changes["executor"] = check_executor(executor, self.remote)
        if name is not UNCHANGED:
            changes["name"] = _check_name(name)
        if args is not UNCHANGED:
            changes["args"] = _check_args(args)
        if kwargs is not UNCHANGED:
            changes["kwargs"] = _check_kwargs(kwargs)
        if max_instances is not UNCHANGED:
            changes["max_instances"] = check_max_instances(max_instances)
        if misfire_grace_time is not UNCHANGED:
            changes["misfire_grace_time"] = check_misfire_grace_time(misfire_grace_time)
        if coalesce is not UNCHANGED:
            changes["coalesce"] = check_coalesce(coalesce)
        if timeout is not UNCHANGED:
            changes["timeout"] = check_timeout(timeout)
        with self.registry.lock:
            record = self._found(job_id)
            if "executor" in changes:
                func = self._func_for(record, changes["executor"])
                if func is not record.func:
                    changes["func"] = func
            if "args" in changes or "kwargs" in changes:
                problem = _call_problem(
                    record.func,
                    changes.get("args", record.args),
                    changes.get("kwargs", record.kwargs),
                )
                if problem is not None:
                    raise ValueError(problem)
            aps_changes = {k: v for k, v in changes.items() if k not in ("timeout",)}
            if "func" in aps_changes:
                aps_changes["func"] = _apscheduler_func(changes["func"])
            if "misfire_grace_time" in aps_changes:
                aps_changes["misfire_grace_time"] = apscheduler_grace(changes["misfire_grace_time"])
            if aps_changes and self.running and not record.finished:
                with contextlib.suppress(JobLookupError):
                    self._scheduler.modify_job(record.id, **aps_changes)
            for key, value in changes.items():
                setattr(record, key, value)
            self.registry.changed(record)
        logger.debug("modified job %r (%s): %s", record.name, job_id, ", ".join(changes))
        return self._view(record)

    def _new_record(
        self,
        func: Callable[..., Any],
        trigger: Trigger,
        name: str | None,
        args: Iterable[Any],
        kwargs: Mapping[str, Any] | None,
        max_instances: int | None,
        misfire_grace_time: float | None,
        coalesce: bool | None,
        job_id: str | None,
    ) -> JobRecord:
        if inspect.iscoroutine(func):
            func.close()
            raise TypeError(
                "add_job needs the function itself, not a coroutine object: "
                "write add_job(my_task, ...) rather than add_job(my_task(), ...)"
            )
        if not callable(func):
            raise TypeError(f"add_job needs a callable, not {type(func).__name__}: {func!r}")
        if not isinstance(trigger, Trigger):
            raise TypeError(
                "trigger must be an IntervalTrigger, CronTrigger or DateTimeTrigger, "
                f"not {type(trigger).__name__}"
            )
        if name is not None:
            _check_name(name)
        if job_id is not None:
            _check_id(job_id)
        args = _check_args(args)
        kwargs = _check_kwargs({} if kwargs is None else kwargs)
        problem = _call_problem(func, args, kwargs)
        if problem is not None:
            # Accepted, as APScheduler-style schedulers accept it: each run will fail and
            # say why. Said now too, where the mistake was made.
            logger.warning("%s; every run of this job will fail", problem)
        defaults = self.config.job_defaults
        return JobRecord(
            id=job_id or uuid.uuid4().hex,
            name=name or _default_name(func),
            func=func,
            trigger=trigger,
            args=args,
            kwargs=kwargs,
            max_instances=check_max_instances(
                defaults["max_instances"] if max_instances is None else max_instances
            ),
            misfire_grace_time=check_misfire_grace_time(
                defaults["misfire_grace_time"] if misfire_grace_time is None else misfire_grace_time
            ),
            coalesce=check_coalesce(defaults["coalesce"] if coalesce is None else coalesce),
            created_at=utcnow(),
            history_size=self.config.history_size,
        )

    def _plan(self, trigger: Trigger, now: datetime) -> tuple[ScheduleTrigger, datetime | None]:
        """``trigger`` anchored at ``now``, and its first fire time; changes nothing.

        Whatever a trigger raises, it raises here, before a job is touched.
        """
        schedule = trigger.to_apscheduler(self.config.tzinfo, now)
        return schedule, schedule.first_fire_time(now)

    def _schedule(
        self,
        record: JobRecord,
        now: datetime,
        plan: tuple[ScheduleTrigger, datetime | None] | None = None,
    ) -> None:
        """Anchor the record's trigger at ``now`` (``plan``: as already computed by ``_plan``)
        and hand the job to APScheduler if running; a schedule with no fire left finishes
        the job and takes any earlier schedule of it out of APScheduler. (Persistence is
        given it as a callback, for the jobs declared in code that it reconciles.)"""
        record.schedule, first = self._plan(record.trigger, now) if plan is None else plan
        paused = record.status is JobStatus.PAUSED or record.failure_paused
        exhausted = record.max_runs is not None and record.total_run_count >= record.max_runs
        if first is None or exhausted:
            self._drop_from_apscheduler(record.id)
            self.ledger.schedule_ended(record)
            return
        record.pending_next_run = None if paused else first
        if not self.running:
            return
        grace = record.misfire_grace_time
        self._scheduler.add_job(
            _apscheduler_func(record.func),
            trigger=record.schedule,
            id=record.id,
            name=record.name,
            args=record.args,
            kwargs=record.kwargs,
            max_instances=record.max_instances,
            misfire_grace_time=apscheduler_grace(grace),
            coalesce=record.coalesce,
            next_run_time=None if paused else first,
            executor=record.executor,
            replace_existing=True,
            check_args=False,  # reported at add_job; each run records the error
        )

    def remove_job(self, job_id: str) -> bool:
        """Remove a job for good; False if there is no such job."""
        with self.registry.lock:
            record = self.registry.pop(job_id)
            if record is None:
                return False
            record.status = JobStatus.CANCELLED
            record.pending_next_run = None
            self._drop_from_apscheduler(job_id)
            self.registry.announce("removed", record)
        logger.debug("removed job %r (%s)", record.name, job_id)
        self.listeners.job_event("job_removed", record)
        return True

    def _drop_from_apscheduler(self, job_id: str) -> None:
        if self.running:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(job_id)

    def _hold(self, job_id: str) -> None:
        if self.running:
            with contextlib.suppress(JobLookupError):
                self._scheduler.pause_job(job_id)

    def get_job(self, job_id: str) -> ScheduledJob | None:
        """The job with this id, or None.

        Served from memory, never from the store: with several workers, a worker that does
        not lead may show another worker's latest change a moment late (see
        docs/deploying.md).
        """
        self._reader.read()
        record = self.registry.get(job_id)
        return None if record is None else self._view(record)

    def get_jobs(self, status: JobStatus | str | None = None) -> list[ScheduledJob]:
        """Every job, or those with the given status; served from memory, as ``get_job``."""
        wanted = (
            None
            if status is None
            else JobStatus(status.upper() if isinstance(status, str) else status)
        )
        self._reader.read()
        return self._listing.jobs(wanted)

    def job_list(self) -> JobListing:
        """The jobs in the admin list's order (oldest first: by ``created_at``, then id),
        for reading a page of them (``following``) or all of them (``ordered``).

        Served from memory, as ``get_jobs``; the listing follows later changes.
        """
        self._reader.read()
        return self._listing

    def _view(self, record: JobRecord) -> ScheduledJob:
        """The view of ``record``, made once when it came in (see ``listing.py``)."""
        return self._listing.view(record)

    def pause_job(self, job_id: str, reason: str | None = None) -> bool:
        """Stop a job from firing until ``resume_job``; False if unknown or finished.

        ``reason`` is kept on the job as ``paused_reason``.
        """
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str, not {type(reason).__name__}")
        with self.registry.lock:
            record = self.registry.get(job_id)
            if record is None or record.finished:
                return False
            if record.status is not JobStatus.PAUSED:
                if self.running:
                    try:
                        self._scheduler.pause_job(job_id)
                    except JobLookupError:
                        return False  # its last fire is under way: nothing left to pause
                record.status = JobStatus.PAUSED
                record.pending_next_run = None
            record.paused_reason = reason
            self.registry.changed(record)
        logger.debug("paused job %r (%s)", record.name, job_id)
        self.listeners.job_event("job_paused", record, error=reason)
        return True

    def resume_job(self, job_id: str) -> bool:
        """Let a paused job fire again, from its next fire time after now.

        A job paused by ``pause_on_failure`` becomes ``ACTIVE`` again too.
        """
        with self.registry.lock:
            record = self.registry.get(job_id)
            if record is None or record.finished:
                return False
            if record.status is not JobStatus.PAUSED and not record.failure_paused:
                return True
            paused = (record.status, record.failure_paused, record.paused_reason)
            record.status = JobStatus.ACTIVE
            record.failure_paused = False
            record.paused_reason = None
            if self.running:
                # APScheduler removes a job whose schedule ended during the pause; its
                # removal event then finishes the record, settling the status set above.
                try:
                    resumed = self._scheduler.resume_job(job_id)
                except JobLookupError:
                    record.status, record.failure_paused, record.paused_reason = paused
                    return False
                if resumed is not None:
                    record.pending_next_run = resumed.next_run_time
                elif not record.finished:
                    self.ledger.schedule_ended(record)
            elif record.schedule is not None:
                nxt = record.schedule.get_next_fire_time(None, utcnow())
                record.pending_next_run = nxt
                if nxt is None:
                    self.ledger.schedule_ended(record)
            self.registry.changed(record)
        logger.debug("resumed job %r (%s)", record.name, job_id)
        self.listeners.job_event("job_resumed", record)
        return True

    def run_job_now(self, job_id: str) -> bool:
        """Start an extra run at once, without moving the schedule; works on paused jobs.

        False if the job is unknown, finished, the scheduler is not running, or
        ``max_instances`` runs are already in progress. With several workers, a worker that
        is not the leader asks the leader to run it (True once asked).
        """
        if self.persistence is not None and self.running and not self.persistence.is_leader:
            return self.persistence.request_run(job_id)
        with self.registry.lock:
            record = self.registry.get(job_id)
            if record is None or record.finished or not self.running:
                return False
            if not self.executor_of(record).submit_manual(record):
                logger.warning(
                    "job %r (%s) not run now: max_instances (%d) runs already in progress",
                    record.name,
                    job_id,
                    record.max_instances,
                )
                return False
        logger.debug("running job %r (%s) now", record.name, job_id)
        return True

    def reschedule_job(self, job_id: str, trigger: Trigger) -> ScheduledJob:
        """Give a job a new trigger, anchored now.

        A trigger with no fire time left completes the job. Raises ``JobNotFoundError`` for
        an unknown id; if the trigger cannot be scheduled, the job is left as it was.
        """
        if not isinstance(trigger, Trigger):
            raise TypeError(
                "trigger must be an IntervalTrigger, CronTrigger or DateTimeTrigger, "
                f"not {type(trigger).__name__}"
            )
        with self.registry.lock:
            record = self._found(job_id)
            now = utcnow()
            plan = self._plan(trigger, now)
            previous = (
                record.trigger,
                record.finished,
                record.status,
                record.schedule,
                record.pending_next_run,
            )
            record.trigger = trigger
            if record.finished:
                record.finished = False
                record.status = JobStatus.ACTIVE
            try:
                self._schedule(record, now, plan)
            except BaseException:
                (
                    record.trigger,
                    record.finished,
                    record.status,
                    record.schedule,
                    record.pending_next_run,
                ) = previous
                raise
            self.registry.changed(record)
        logger.debug("rescheduled job %r (%s): %s", record.name, job_id, trigger.describe())
        return self._view(record)

    def executor_of(self, record: JobRecord) -> JobExecutor:
        """The executor that runs ``record``'s fires (this process's for an engine this
        worker does not have)."""
        return self.remote.get(record.executor, self.executor)

    def _adopt(self, record: JobRecord, scheduled: datetime, worker: str, counted: bool) -> bool:
        """Follow a fire of a remote engine's job that a stopped leader claimed (and may
        have sent); False if this worker has no such engine."""
        runs = self.remote.get(record.executor)
        if runs is None:
            return False
        runs.adopt(record, scheduled, worker, counted)
        return True

    def _func_for(self, record: JobRecord, executor: str) -> Callable[..., Any]:
        """``record``'s function as ``executor`` takes it: a remote engine's task."""
        if executor == "default":
            if isinstance(record.func, RemoteTask):
                raise ConfigError(
                    f"job {record.id!r} sends the task {record.func.name!r} to its engine; "
                    "it has no function to run in this process: add it again with one"
                )
            return record.func
        task = self.remote[executor].engine.task(record.func)
        return record.func if task == record.func else task

    def _found(self, job_id: object) -> JobRecord:
        """The record of ``job_id``; ``JobNotFoundError`` if there is none."""
        record = self.registry.get(job_id)
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    # ------------------------------------------------------------ hooks

    def add_listener(self, callback: Listener, events: str | Iterable[str] | None = None) -> None:
        """Call ``callback(event)`` with a ``SchedulerEvent`` on each of ``events`` (None: all).

        Event names: ``job_added``, ``job_started``, ``job_succeeded``, ``job_failed``,
        ``job_missed``, ``job_skipped``, ``job_paused``, ``job_resumed``, ``job_removed``;
        an unknown name is a ``ValueError``. A plain function is called inline, on the
        event loop for run events, so it must not block; an ``async`` one runs as a task
        on the loop. An exception in a callback is logged, never raised.
        """
        self.listeners.add(callback, events)

    def remove_listener(self, callback: Listener) -> bool:
        """Stop calling ``callback``; False if it was not registered."""
        return self.listeners.remove(callback)

    # ------------------------------------------------------------ the listener layer

    def _on_apscheduler_event(self, event: JobEvent) -> None:
        record = self.registry.get(event.job_id)
        if record is None:
            return
        if event.code == EVENT_JOB_REMOVED:
            # APScheduler removes a job whose trigger has no next fire; removals we make
            # ourselves have taken the record out of the registry already. A job that is
            # back in the store (replaced under the same id) is not finished.
            if self._scheduler.get_job(event.job_id) is None:
                self.ledger.schedule_ended(record)
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            for scheduled in event.scheduled_run_times:
                self.ledger.skipped(record, scheduled)
                if self.persistence is not None:
                    self.persistence.ended(record, scheduled, None)

    def _trigger_failed(self, job_id: str, error: str) -> None:
        record = self.registry.get(job_id)
        if record is not None:
            record.pending_next_run = None
            self.ledger.trigger_failed(record, error)

    def _moved_on(self, job_id: str, when: datetime | None) -> None:
        """A scheduling pass moved a job on: its record shows when it fires next."""
        record = self.registry.get(job_id)
        if record is not None:
            record.pending_next_run = when


class JobTimes:
    """A job's next fire times, as its ``ScheduledJob`` shows them."""

    __slots__ = ("manager",)

    def __init__(self, manager: SchedulerManager) -> None:
        self.manager = manager

    def next_run_time(self, record: JobRecord) -> datetime | None:
        # From the record, never from APScheduler's store (a query per job): the record
        # learns it when the job is scheduled, resumed, moved on by a pass, or reloaded.
        if record.finished or record.status in (JobStatus.PAUSED, JobStatus.CANCELLED):
            return None
        if record.failure_paused:
            return None
        nxt = record.pending_next_run
        return None if nxt is None else nxt.astimezone(self.manager.config.tzinfo)

    def next_run_times(self, record: JobRecord, n: int) -> list[datetime]:
        count = check_count(n)
        first = self.next_run_time(record)
        if first is None or record.schedule is None:
            return []
        if record.max_runs is not None:
            count = min(count, max(0, record.max_runs - record.total_run_count))
        times = record.schedule.fire_times(count, first, first=first)
        return [t.astimezone(self.manager.config.tzinfo) for t in times]


class StoreReader:
    """Keeps a worker that does not lead current for its reads, off the event loop.

    Reads answer from the registry at once. A worker that leads needs nothing more: it
    makes the changes (or hears of them on the bus). One that does not also asks the store
    layer to check for missed messages (``Persistence.refresh_soon(check=True)``: done in
    its sync thread, merged with one already pending; it reads the other workers' counts
    of their writes, and reloads every job once a count stays above what their messages
    said), at most once per ``min_gap`` seconds, so a later read shows any change a
    notification missed; a check that fails (the store is down) is logged once per outage
    and changes nothing.
    """

    #: Shortest time (seconds) between two reloads asked by reads.
    min_gap = 1.0

    def __init__(self, manager: SchedulerManager) -> None:
        self.manager = manager
        self._asked = float("-inf")

    def read(self) -> None:
        """A read is served: ask for a reload if this worker does not lead."""
        persistence = self.manager.persistence
        if persistence is None or not persistence.running or persistence.is_leader:
            return
        now = time.monotonic()
        if now - self._asked >= self.min_gap:
            self._asked = now
            persistence.refresh_soon(check=True)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, not {name!r}")
    return name


# A slash, a control character (Unicode category Cc: C0, DEL and C1), or a lone surrogate
# (no UTF-8 form, so no URL can name it).
_UNSERVABLE_IN_ID = re.compile(r"[/\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _default_name(func: Callable[..., Any]) -> str:
    if isinstance(func, RemoteTask):
        return func.name
    return getattr(func, "__qualname__", None) or repr(func)


def _apscheduler_func(func: Callable[..., Any]) -> Callable[..., Any]:
    """What APScheduler's job of ``func`` calls: a remote task's stand-in (importable, so
    the job can be stored; the executors run the record's function, never this one)."""
    return remote_task_stand_in if isinstance(func, RemoteTask) else func


def _check_id(job_id: object) -> str:
    # The admin API serves each job at /jobs/<id>, and the dashboard links to that path.
    if not isinstance(job_id, str) or not job_id:
        raise TypeError(f"id must be a non-empty str, not {job_id!r}")
    if job_id in (".", "..") or _UNSERVABLE_IN_ID.search(job_id):
        raise ValueError(
            f"job id {job_id!r} is not allowed: an id may hold any character except '/', "
            "control characters and lone surrogates, and may not be '.' or '..' (the admin "
            "API serves each job "
            "at /jobs/<id>)"
        )
    return job_id


def _check_args(args: object) -> tuple[Any, ...]:
    if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
        raise TypeError(f"args must be a tuple or list, not {type(args).__name__}")
    return tuple(args)


# _call_problem's answers by (function, number of args, keyword names): the check reads the
# function's signature, which costs more than the rest of adding a job.
_CALL_PROBLEMS: dict[tuple[Any, int, tuple[str, ...]], str | None] = {}


def _call_problem(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> str | None:
    """Why ``func(*args, **kwargs)`` cannot work, or None."""
    try:
        key: tuple[Any, int, tuple[str, ...]] | None = (func, len(args), tuple(kwargs))
        if key in _CALL_PROBLEMS:
            return _CALL_PROBLEMS[key]
    except TypeError:  # an unhashable callable
        key = None
    problem = None
    try:
        check_callable_args(func, args, kwargs)
    except ValueError as exc:
        name = getattr(func, "__qualname__", None) or repr(func)
        problem = f"{name} cannot be called with these args/kwargs: {exc}"
    if key is not None:
        if len(_CALL_PROBLEMS) >= 512:
            _CALL_PROBLEMS.clear()
        _CALL_PROBLEMS[key] = problem
    return problem


def _check_kwargs(kwargs: object) -> dict[str, Any]:
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs must be a mapping, not {type(kwargs).__name__}")
    return dict(kwargs)
