"""The APScheduler scheduler class the manager drives.

``AdapterScheduler`` is APScheduler's ``AsyncIOScheduler`` with the parts that do not scale
replaced through its own extension points; what it does stays APScheduler's:

* its default job store is ``HeapJobStore`` (a heap instead of a sorted list);
* adding a job does not cost a wake-up each: a wake-up is only needed when the new job is
  due before the armed timer, and the wake-ups asked for before the loop gets to them are
  served by one pass;
* a pass submits due jobs in slices (at most ``slice_size`` jobs or ``slice_time`` seconds)
  and lets the event loop run between slices, so a thousand jobs due at once do not stall
  the app; during a burst each slice is sized (``pacer``) so that it and the first steps of
  the runs it starts take about ``pacing.TURN_BUDGET`` of the loop's time (with claims, the
  runs start as the claims are answered, and the writer paces those instead);
  while such a burst is being started, the listener events of the passes (and the
  executor's bookkeeping of finished runs) wait until every due job has started;
* with a persistent store (whose jobs the scheduler reads from memory, ``MirrorJobStore``),
  a pass hands the claims of a slice's fires to the writer (``claim_fires``) before it
  submits the slice's jobs, then moves them all on (the store's ``write_back``); the writer
  writes the claims before the moves, and each run waits until its claim is written, so
  a leader that dies in between leaves claims the next one settles; while claims handed
  over are still to be written (``claims_unwritten``), the loop idles ``SLICE_YIELD``
  between slices, so that the thread writing them gets the interpreter's lock; the burst
  lasts until its runs have started (``runs_waiting``), not only until its last pass;
* a trigger that fails in the pass (raises, or gives a next fire time that is naive or not
  later than the last one) takes its own job out of the store, reported to
  ``on_trigger_error``; the pass goes on with the other jobs;
* a scheduler whose event loop was closed without ``shutdown()`` counts as stopped, and
  ``start()`` on a new loop starts it afresh;
* the callable checks of ``add_job`` (signature inspection, reference lookup) are done once
  per function, not once per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

from apscheduler.events import (
    EVENT_ALL,
    EVENT_JOB_ADDED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_REMOVED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
    SchedulerEvent,
)
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import (
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_STOPPED,
    TIMEOUT_MAX,
    BaseScheduler,
)
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import (
    check_callable_args,
    convert_to_datetime,
    get_callable_name,
    obj_to_ref,
    undefined,
)

from . import clock
from .pacing import Pacer
from .stores.memory import HeapJobStore

# What ``add_job`` learns about a callable for a given number of positional arguments and
# keyword names: its textual reference (None if it has none) and its default name.
_CallableFacts = tuple[str | None, str]
_FACTS_LIMIT = 512
# Held-back pass events sent per loop turn once a burst has started: at most this many,
# for at most this long (the listeners' work is done as each one is sent).
_EVENTS_SLICE = 256
_EVENTS_TIME = 0.002
#: Seconds the loop stays idle between two slices of a pass while the claims handed over
#: are being written: long enough for the claims' thread to take the interpreter's lock.
SLICE_YIELD = 0.0005
#: Most fires claimed ahead by one pass, and handed over per turn of the loop.
CLAIM_AHEAD_MOST = 4096
CLAIM_AHEAD_SLICE = 256
# A timer may fire this early (seconds) and still count as on time for claiming ahead.
_AHEAD_SLACK = 0.001
# Seconds after the last fire claimed ahead is due that unused claims are looked for.
_UNUSED_AFTER = 0.5
#: Runs waiting for their claims beyond which a burst counts as still being started
#: (``bursting``); a few are in flight whenever fires are due a few milliseconds apart.
BURST_RUNS = 64
# A due job ready to be submitted: the job, its executor, its run times, the fire after them.
_Due = tuple[Job, Any, list[datetime], datetime | None]


class AdapterScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """AsyncIOScheduler that stays fast with many jobs and whose shutdown takes effect at once.

    APScheduler defers ``shutdown`` through ``call_soon_threadsafe``; if the loop closes
    first the call is lost and the scheduler believes it is still running.
    """

    #: Most due jobs a pass submits before it lets the event loop run (during a burst the
    #: ``pacer`` may take fewer).
    slice_size = 64
    #: Longest a pass runs (seconds) before it lets the event loop run.
    slice_time = 0.002

    #: When the scheduler last looked for due jobs (UTC), for health checks.
    last_pass_time: datetime | None = None
    #: Called with a job's id and what went wrong when its trigger could not give the next
    #: fire time in a pass; the job has been taken out of its store and was not run.
    on_trigger_error: Callable[[str, str], None] | None = None
    #: The executor given the jobs whose executor is not configured here (APScheduler
    #: deletes such a job); None: APScheduler's way.
    fallback_executor: Any = None
    #: Called with a job's id and its next fire time (None: no fire left) each time a pass
    #: moves the job on, so that reads need not ask the job store.
    on_next_run_time: Callable[[str, datetime | None], None] | None = None
    #: Called in a pass with the fires of a slice of due jobs (each job's id and the run
    #: times it is about to be submitted with), before any of them is submitted: a
    #: persistent store claims them all in one write.
    claim_fires: Callable[[list[tuple[str, list[datetime]]]], None] | None = None
    #: Whether claims handed over are still to be written (None: no claims).
    claims_unwritten: Callable[[], bool] | None = None
    #: How many fires handed over to be claimed have runs still to start (None: no claims).
    runs_waiting: Callable[[], int] | None = None
    #: Seconds before a fire is due that its claim is handed over (``claim_fires``), so that
    #: its run need not wait for the store; 0: claimed in the pass that submits it.
    claim_ahead = 0.0
    #: Called after each pass that started no burst: claims made ahead whose fires were not
    #: submitted (the job was paused, changed or removed meanwhile) are given back.
    end_unused_claims: Callable[[], None] | None = None

    _eventloop: asyncio.AbstractEventLoop | None = None
    _wake_pending = False
    _loop_thread: int | None = None
    _timer_due: float | None = None  # when the armed timer fires, as a UTC timestamp
    _more_due = False  # the last pass stopped at the end of a slice
    # ... because the slice was full: a burst of due jobs is being started, and what can
    # wait (listener events, the runs' bookkeeping) waits for it.
    _bursting = False
    _continuing = False  # the next pass carries on a burst, one turn of the loop later
    _ahead_until = 0.0  # fires due up to this UTC timestamp were claimed ahead
    _unused_handle: asyncio.TimerHandle | None = None  # the next look for unused claims
    _pass_count = 0  # the due jobs the last pass handled
    _listened = 0  # the event kinds some listener takes
    _state: int = STATE_STOPPED

    def __init__(self, gconfig: Mapping[str, Any] | None = None, **options: Any) -> None:
        self._callable_facts: dict[tuple[Any, int, tuple[str, ...], bool], _CallableFacts] = {}
        self._held_events: list[SchedulerEvent] = []
        #: Sizes the slices of a burst from what the slices before cost the loop.
        self.pacer = Pacer()
        super().__init__(gconfig or {}, **options)

    # ------------------------------------------------------------ lifecycle

    def _create_default_jobstore(self) -> BaseJobStore:
        return HeapJobStore()

    @property
    def state(self) -> int:
        """APScheduler's state; a scheduler whose event loop was closed counts as stopped."""
        loop = self._eventloop
        if loop is not None and loop.is_closed():
            return int(STATE_STOPPED)
        return self._state

    @state.setter
    def state(self, value: int) -> None:
        self._state = value

    def start(self, paused: bool = False) -> None:
        loop = self._eventloop
        if loop is not None and loop.is_closed():
            self._leave_closed_loop()
        self._loop_thread = threading.get_ident()
        self._wake_pending = False
        super().start(paused)

    def _leave_closed_loop(self) -> None:
        """Shut down what was left running on an event loop closed without ``shutdown()``.

        Nothing runs on a closed loop any more: its timer and its runs are gone, so the
        executors' counts of running instances start again from zero.
        """
        self._logger.warning(
            "The event loop the scheduler ran on was closed without shutdown(); "
            "shutting the scheduler down before starting it again"
        )
        self._eventloop = None  # the state is what it was when the loop closed
        self.shutdown()
        for executor in self._executors.values():
            with executor._lock:
                executor._instances.clear()

    def shutdown(self, wait: bool = False) -> None:
        if self.state == STATE_STOPPED:
            return
        # Events held back during a burst still tell the listeners what happened (a one-shot
        # job that fired is finished, and must not be scheduled again at the next start).
        held, self._held_events = self._held_events, []
        for event in held:
            self._dispatch_event(event)
        BaseScheduler.shutdown(self, wait=False)
        self._stop_timer()
        if self._unused_handle is not None:
            self._unused_handle.cancel()
            self._unused_handle = None
        self._ahead_until = 0.0
        self._eventloop = None

    # ------------------------------------------------------------ waking up

    def wakeup(self) -> None:
        """Look for due jobs soon; calls made before that pass runs share it."""
        if self._wake_pending:
            return
        loop = self._eventloop
        if loop is None:
            return
        self._wake_pending = True
        try:
            if threading.get_ident() == self._loop_thread:
                loop.call_soon(self._wake)
            else:
                loop.call_soon_threadsafe(self._wake)
        except BaseException:
            self._wake_pending = False
            raise

    def _wake(self) -> None:
        self._wake_pending = False
        continuing, self._continuing = self._continuing, False
        if self._eventloop is None or self.state == STATE_STOPPED:
            return
        self._stop_timer()
        # With claims (a persistent store), the runs start when their claims are answered,
        # and the answers are paced (the writer's ``answer_pacer``): a pass only hands its
        # fires over, and smaller slices would only mean more claims written.
        pacer = self.pacer if self.claim_fires is None else None
        try:
            limit = (
                self.slice_size if pacer is None else pacer.next_size(continuing, self.slice_size)
            )
            wait_seconds = self._process_jobs(limit)
            if pacer is not None:
                pacer.took(self._pass_count)
        except Exception:
            # Whatever went wrong, the timer is armed again: the scheduler never stops.
            self._logger.exception(
                "Error in the scheduling pass; trying again in %ss", self.jobstore_retry_interval
            )
            self._more_due = self._bursting = False
            wait_seconds = float(self.jobstore_retry_interval)
        if self._more_due and self.state == STATE_RUNNING:
            # More jobs are due: carry on once the loop has had its turn.
            self._wake_pending = self._continuing = True
            busy = self.claims_unwritten
            if busy is not None and busy():
                # The claims handed over are being written by another thread, which needs
                # the interpreter's lock too: the loop waits a moment (idle, without the
                # lock) instead of holding the lock for the next slice at once.
                self._eventloop.call_later(SLICE_YIELD, self._wake)
            else:
                self._eventloop.call_soon(self._wake)
            return
        if (
            wait_seconds is not None
            and self.claim_ahead > 0
            and self.claim_fires is not None
            and self.state == STATE_RUNNING
        ):
            wait_seconds = self._claim_ahead(wait_seconds)
        self._give_back_unused()
        self._start_timer(wait_seconds)

    def _claim_ahead(self, wait: float) -> float:
        """Hand over the claims of the fires due within ``claim_ahead`` seconds (not claimed
        ahead yet), so that their runs start when they are due, not once the store has
        answered. Returns the seconds to wait: until ``claim_ahead`` before the next fire
        if it is further away, so as to claim it ahead then."""
        ahead = self.claim_ahead
        if wait > ahead + _AHEAD_SLACK:
            return wait - ahead
        now = clock.utcnow()
        horizon = now + timedelta(seconds=ahead)
        after = max(now.timestamp(), self._ahead_until)
        fires: list[tuple[str, list[datetime]]] = []
        with self._jobstores_lock:
            for store in self._jobstores.values():
                if isinstance(store, HeapJobStore):
                    for job in store.peek_due(horizon, CLAIM_AHEAD_MOST):
                        when = job.next_run_time
                        if when is not None and when.timestamp() > after:
                            fires.append((job.id, [when]))
        self._ahead_until = max(self._ahead_until, horizon.timestamp())
        if fires:
            self._hand_ahead(fires)
            self._look_for_unused_claims(ahead + _UNUSED_AFTER)
        return wait

    def _look_for_unused_claims(self, delay: float) -> None:
        """Look for claims made ahead and not used ``delay`` seconds from now (and at the
        end of each pass): a job paused or removed before its fire leaves no pass to do it."""
        loop = self._eventloop
        if loop is None:
            return
        at = loop.time() + delay
        handle = self._unused_handle
        if handle is not None and not handle.cancelled() and handle.when() >= at:
            return
        if handle is not None:
            handle.cancel()
        self._unused_handle = loop.call_at(at, self._unused_timer)

    def _unused_timer(self) -> None:
        self._unused_handle = None
        self._give_back_unused()

    def _give_back_unused(self) -> None:
        unused = self.end_unused_claims
        if unused is not None:
            try:
                unused()
            except Exception:
                self._logger.exception("Error giving back the claims of fires not submitted")

    def _hand_ahead(self, fires: list[tuple[str, list[datetime]]]) -> None:
        """``claim_fires`` a slice at a time, one turn of the loop apart."""
        claim = self.claim_fires
        if claim is None or self.state != STATE_RUNNING:
            return
        try:
            claim(fires[:CLAIM_AHEAD_SLICE])
        except Exception:
            # Only a shortcut: each fire is then claimed as it is submitted.
            self._logger.exception("Error claiming %d fire(s) ahead", len(fires))
            return
        rest = fires[CLAIM_AHEAD_SLICE:]
        if rest and self._eventloop is not None:
            self._eventloop.call_soon(self._hand_ahead, rest)

    def _wake_for(self, when: datetime | None) -> None:
        """Wake up for a job due at ``when``, unless the armed timer fires first anyway."""
        if when is None:
            return
        due = self._timer_due
        if due is not None and when.timestamp() >= due:
            return
        self.wakeup()

    def _start_timer(self, wait_seconds: float | None) -> None:
        self._stop_timer()
        if clock.is_frozen():
            # A hand-moved clock (the testing aid) runs the due jobs itself.
            return
        if wait_seconds is not None and self._eventloop is not None:
            self._timeout = self._eventloop.call_later(wait_seconds, self._wake)
            self._timer_due = clock.utcnow().timestamp() + wait_seconds

    def _stop_timer(self) -> None:
        self._timer_due = None
        super()._stop_timer()

    # ------------------------------------------------------------ adding jobs

    def add_job(
        self,
        func: Any,
        trigger: Any = None,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        id: str | None = None,
        name: str | None = None,
        misfire_grace_time: Any = undefined,
        coalesce: Any = undefined,
        max_instances: Any = undefined,
        next_run_time: Any = undefined,
        jobstore: str = "default",
        executor: str = "default",
        replace_existing: bool = False,
        *,
        check_args: bool = True,
        **trigger_args: Any,
    ) -> Job:
        """APScheduler's ``add_job``; the callable checks are remembered per function.

        ``check_args=False`` (the manager's use) accepts arguments the function cannot take:
        the manager reports them at its own ``add_job`` and each run records the error.
        """
        if isinstance(func, str) or not callable(func):
            return super().add_job(
                func, trigger, args, kwargs, id, name, misfire_grace_time, coalesce,
                max_instances, next_run_time, jobstore, executor, replace_existing,
                **trigger_args,
            )  # fmt: skip
        job = self._new_job(
            func,
            self._create_trigger(trigger, trigger_args),
            tuple(args) if args is not None else (),
            dict(kwargs) if kwargs is not None else {},
            id,
            name,
            executor,
            check_args,
        )
        # Options left undefined are filled from job_defaults when the job is stored.
        if misfire_grace_time is not undefined:
            if misfire_grace_time is not None and (
                not isinstance(misfire_grace_time, int) or misfire_grace_time <= 0
            ):
                raise TypeError("misfire_grace_time must be either None or a positive integer")
            job.misfire_grace_time = misfire_grace_time
        if coalesce is not undefined:
            job.coalesce = bool(coalesce)
        if max_instances is not undefined:
            if not isinstance(max_instances, int) or max_instances <= 0:
                raise TypeError("max_instances must be a positive integer")
            job.max_instances = max_instances
        if next_run_time is not undefined:
            if not (isinstance(next_run_time, datetime) and next_run_time.tzinfo is not None):
                next_run_time = convert_to_datetime(next_run_time, self.timezone, "next_run_time")
            job.next_run_time = next_run_time
        with self._jobstores_lock:
            if self.state == STATE_STOPPED:
                self._pending_jobs.append((job, jobstore, replace_existing))
                self._logger.info(
                    "Adding job tentatively -- it will be properly scheduled when "
                    "the scheduler starts"
                )
            else:
                self._real_add_job(job, jobstore, replace_existing)
        return job

    def _new_job(
        self, func: Callable[..., Any], trigger: BaseTrigger, args: tuple[Any, ...],
        kwargs: dict[str, Any], job_id: str | None, name: str | None, executor: str,
        check_args: bool = True,
    ) -> Job:  # fmt: skip
        """A ``Job`` built as ``Job(self, ...)`` builds it, with the same checks and errors;
        what the checks learn about the callable is remembered."""
        job_id = job_id or uuid4().hex
        if not isinstance(job_id, str):
            raise TypeError("id must be a nonempty string")
        func_ref, default_name = self._facts(func, args, kwargs, check_args)
        if name is None:
            name = default_name
        elif not name or not isinstance(name, str):
            raise TypeError("name must be a nonempty string")
        if not isinstance(executor, str):
            raise TypeError("executor must be a string")
        job = Job.__new__(Job)
        job._scheduler = self
        job._jobstore_alias = None
        job.id, job.name, job.trigger, job.executor = job_id, name, trigger, executor
        job.func, job.func_ref, job.args, job.kwargs = func, func_ref, args, kwargs
        return job

    def _facts(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        check_args: bool = True,
    ) -> _CallableFacts:
        try:
            key = (func, len(args), tuple(kwargs), check_args)
            known = self._callable_facts.get(key)
        except TypeError:  # an unhashable callable
            key, known = None, None
        if known is not None:
            return known
        if check_args:
            check_callable_args(func, args, kwargs)
        try:
            func_ref = obj_to_ref(func)
        except ValueError:
            func_ref = None  # such a job cannot be serialized, as in APScheduler
        known = (func_ref, get_callable_name(func))
        if key is not None:
            if len(self._callable_facts) >= _FACTS_LIMIT:
                self._callable_facts.clear()
            self._callable_facts[key] = known
        return known

    def _real_add_job(self, job: Job, jobstore_alias: str, replace_existing: bool) -> None:
        replacements = {
            key: value for key, value in self._job_defaults.items() if not hasattr(job, key)
        }
        if not hasattr(job, "next_run_time"):
            now = clock.utcnow().astimezone(self.timezone)
            replacements["next_run_time"] = job.trigger.get_next_fire_time(None, now)
        if replacements:
            job._modify(**replacements)
        store = self._lookup_jobstore(jobstore_alias)
        try:
            store.add_job(job)
        except ConflictingIdError:
            if not replace_existing:
                raise
            store.update_job(job)
        job._jobstore_alias = jobstore_alias
        if self._wants(EVENT_JOB_ADDED):
            self._dispatch_event(JobEvent(EVENT_JOB_ADDED, job.id, jobstore_alias))
        self._logger.info('Added job "%s" to job store "%s"', job.name, jobstore_alias)
        if self.state == STATE_RUNNING:
            self._wake_for(job.next_run_time)

    def add_listener(self, callback: Callable[[Any], Any], mask: int = EVENT_ALL) -> None:
        super().add_listener(callback, mask)
        self._listened = self._listener_mask()

    def remove_listener(self, callback: Callable[[Any], Any]) -> None:
        super().remove_listener(callback)
        self._listened = self._listener_mask()

    def _listener_mask(self) -> int:
        with self._listeners_lock:
            combined = 0
            for _, mask in self._listeners:
                combined |= mask
            return combined

    def _wants(self, code: int) -> bool:
        """Whether any listener takes events of this kind (so the event is worth building)."""
        return bool(self._listened & code)

    wants = _wants

    @property
    def bursting(self) -> bool:
        """True while a burst of due jobs is being started (what can wait, waits): a pass
        stopped at the end of a full slice, or, with claims, more than ``BURST_RUNS`` runs
        still wait for their claims to be answered (the passes of a burst end before most
        of its runs start)."""
        if self._bursting:
            return True
        waiting = self.runs_waiting
        return waiting is not None and waiting() > BURST_RUNS

    # ------------------------------------------------------------ for a hand-moved clock

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the scheduler runs on; None while stopped."""
        return self._eventloop

    def stop_timer(self) -> None:
        """Disarm the timer (a frozen clock drives the passes instead)."""
        self._stop_timer()

    def run_due(self) -> None:
        """One whole scheduling pass now: submit every job due at the clock's time."""
        self._process_jobs()

    def submit_fire(self, job: Job, run_time: datetime) -> None:
        """Submit one fire of ``job`` to its executor outside a pass, without moving the job
        on (a worker that lost the lease runs a fire it claimed ahead while it led).
        Raises ``LookupError`` for an unknown executor, and ``MaxInstancesReachedError``."""
        executor = self._executor_for(job)
        if executor is None:
            raise LookupError(f"no executor {job.executor!r}")
        executor.submit_job(job, [run_time])

    def next_due_time(self) -> datetime | None:
        """When the earliest job in any of the job stores is due; None if none is."""
        soonest: datetime | None = None
        with self._jobstores_lock:
            for store in self._jobstores.values():
                due = store.get_next_run_time()
                if due is not None and (soonest is None or due < soonest):
                    soonest = due
        return soonest

    # ------------------------------------------------------------ processing due jobs

    def _process_jobs(self, limit: int | None = None) -> float | None:
        """Submit the due jobs (at most ``limit``, within ``slice_time``, when given).

        Returns the seconds until the next job is due, like APScheduler's; ``_more_due``
        tells whether due jobs were left for the next slice.
        """
        self.last_pass_time = datetime.now(timezone.utc)
        self._more_due = self._bursting = False
        self._pass_count = 0
        if self.state == STATE_PAUSED:
            self._logger.debug("Scheduler is paused -- not processing jobs")
            return None
        now = clock.utcnow().astimezone(self.timezone)
        room = limit if limit is not None else -1
        next_wakeup_time: datetime | None = None
        events: list[SchedulerEvent] = []
        with self._jobstores_lock:
            for alias, store in self._jobstores.items():
                if self._more_due:
                    break
                read_at = time.perf_counter()
                try:
                    takes_limit = isinstance(store, HeapJobStore) or getattr(
                        store, "takes_due_limit", False
                    )
                    if takes_limit and room >= 0:
                        due_jobs = store.get_due_jobs(now, room)
                    else:
                        due_jobs = store.get_due_jobs(now)
                except Exception as exc:
                    self._logger.warning("Error getting due jobs from job store %r: %s", alias, exc)
                    retry = now + timedelta(seconds=self.jobstore_retry_interval)
                    if next_wakeup_time is None or next_wakeup_time > retry:
                        next_wakeup_time = retry
                    continue
                stop_at = None
                if limit is not None:
                    # The time budget is for submitting, not for reading: a store that took
                    # longer than the budget to read (SQL, Redis) may take as long again to
                    # submit, so each read pays off. The first due job goes whatever the
                    # budget, so every pass makes progress.
                    submit_at = time.perf_counter()
                    stop_at = submit_at + max(self.slice_time, submit_at - read_at)
                if self.claim_fires is None and getattr(store, "write_back", None) is None:
                    # A job at a time (the memory store: nothing to gain from batching).
                    for count, job in enumerate(due_jobs):
                        if room == 0:
                            self._more_due = self._bursting = True
                            break
                        if count and stop_at is not None and time.perf_counter() >= stop_at:
                            self._more_due = True
                            break
                        room -= 1
                        self._submit_due(job, alias, store, now, events)
                else:
                    room = self._submit_batched(due_jobs, alias, store, now, events, room, stop_at)
                store_next = store.get_next_run_time()
                if room == 0 and store_next is not None and store_next <= now:
                    # The slice is full and more jobs are due.
                    self._more_due = self._bursting = True
                if store_next is not None and (
                    next_wakeup_time is None or store_next < next_wakeup_time
                ):
                    next_wakeup_time = store_next.astimezone(self.timezone)
        if limit is not None:
            self._pass_count = limit - room
        self._send(events, hold=self._bursting, all_now=limit is None)
        if self.state == STATE_PAUSED or next_wakeup_time is None:
            return None
        wait = next_wakeup_time.timestamp() - clock.utcnow().timestamp()
        return min(max(wait, 0.0), float(TIMEOUT_MAX))

    def _send(self, events: list[SchedulerEvent], hold: bool, all_now: bool) -> None:
        """Dispatch a pass's events. While a burst of due jobs is being started they wait
        (the listeners' work would delay the jobs still to start); then they go out a slice
        at a time, or all at once for a pass that was not sliced (``all_now``)."""
        if not hold and not self._held_events:
            for event in events:
                self._dispatch_event(event)
            return
        self._held_events.extend(events)
        if not hold:
            self._send_held(everything=all_now)

    def _send_held(self, everything: bool = False) -> None:
        if self._bursting:
            return  # a burst started again: the pass that ends it sends them
        held = self._held_events
        count = len(held) if everything else _EVENTS_SLICE
        stop = None if everything else time.perf_counter() + _EVENTS_TIME
        sent = 0
        for event in held[:count]:
            if stop is not None and sent and time.perf_counter() > stop:
                break
            self._dispatch_event(event)
            sent += 1
        self._held_events = held[sent:]
        if self._held_events and self._eventloop is not None:
            self._eventloop.call_soon(self._send_held)

    def _executor_for(self, job: Job) -> Any:
        """The executor of ``job``: the one it names, or the fallback (logged each time)."""
        executor = self._executors.get(job.executor)
        if executor is None and self.fallback_executor is not None:
            self._logger.error(
                'job "%s" names the executor %r, which this worker does not have; its fire '
                "is recorded here as failed (configure it in SchedulerConfig(executors=...))",
                job,
                job.executor,
            )
            return self.fallback_executor
        return executor

    def _submit_due(
        self, job: Job, alias: str, store: BaseJobStore, now: datetime,
        events: list[SchedulerEvent],
    ) -> None:  # fmt: skip
        """APScheduler's handling of one due job: submit its run times, then move it on."""
        executor = self._executor_for(job)
        if executor is None:
            self._logger.error(
                'Executor lookup ("%s") failed for job "%s" -- removing it from the job store',
                job.executor,
                job,
            )
            self.remove_job(job.id, alias)
            return
        try:
            run_times, following = _run_times(job, now)
        except Exception as exc:
            problem = str(exc) if isinstance(exc, FireTimeError) else _raised(job.trigger, exc)
            self._trigger_failed(job, alias, store, problem, events)
            return
        if run_times and job.coalesce:
            run_times = run_times[-1:]
        if not run_times:
            return
        try:
            executor.submit_job(job, run_times)
        except MaxInstancesReachedError:
            self._logger.warning(
                'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
                job,
                job.max_instances,
            )
            events.append(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, job.id, alias, run_times))
        except BaseException:
            self._logger.exception('Error submitting job "%s" to executor "%s"', job, job.executor)
        else:
            if self._wants(EVENT_JOB_SUBMITTED):
                events.append(JobSubmissionEvent(EVENT_JOB_SUBMITTED, job.id, alias, run_times))
        if following is None:
            # No more fires: out of the store (APScheduler's remove_job, with the event
            # sent with the pass's other events).
            with contextlib.suppress(JobLookupError):
                store.remove_job(job.id)
                if self._wants(EVENT_JOB_REMOVED):
                    events.append(JobEvent(EVENT_JOB_REMOVED, job.id, alias))
                self._logger.info("Removed job %s", job.id)
            self._moved_on(job.id, None)
            return
        job.next_run_time = following
        store.update_job(job)
        self._moved_on(job.id, following)

    def _submit_batched(
        self, due_jobs: list[Job], alias: str, store: BaseJobStore, now: datetime,
        events: list[SchedulerEvent], room: int, stop_at: float | None,
    ) -> int:  # fmt: skip
        """``_submit_due`` for a persistent store, a slice at a time: the fires of the whole
        slice are claimed in one write, then its jobs are submitted, then they are all moved
        on in one write (in this order: a leader that dies between the two writes leaves
        claims the next leader settles, never a job moved on with no claim). Returns the
        room left."""
        batch: list[_Due] = []
        for count, job in enumerate(due_jobs):
            if room == 0:
                self._more_due = self._bursting = True
                break
            if count and stop_at is not None and time.perf_counter() >= stop_at:
                self._more_due = True
                break
            room -= 1
            due = self._due(job, alias, store, now, events)
            if due is None:
                continue
            batch.append(due)
            if len(batch) >= self.slice_size:  # a pass that is not sliced: a slice per write
                self._submit_slice(batch, alias, store, events)
                batch = []
        if batch:
            self._submit_slice(batch, alias, store, events)
        return room

    def _due(
        self, job: Job, alias: str, store: BaseJobStore, now: datetime,
        events: list[SchedulerEvent],
    ) -> _Due | None:  # fmt: skip
        """What ``_submit_due`` finds out before it submits a job: its executor, its run
        times and the fire time after them; None when the job is not to be submitted (a
        failed executor lookup or trigger is handled as ``_submit_due`` handles it)."""
        executor = self._executor_for(job)
        if executor is None:
            self._logger.error(
                'Executor lookup ("%s") failed for job "%s" -- removing it from the job store',
                job.executor,
                job,
            )
            self.remove_job(job.id, alias)
            return None
        try:
            run_times, following = _run_times(job, now)
        except Exception as exc:
            problem = str(exc) if isinstance(exc, FireTimeError) else _raised(job.trigger, exc)
            self._trigger_failed(job, alias, store, problem, events)
            return None
        if run_times and job.coalesce:
            run_times = run_times[-1:]
        if not run_times:
            return None
        return job, executor, run_times, following

    def _submit_slice(
        self, batch: list[_Due], alias: str, store: BaseJobStore, events: list[SchedulerEvent]
    ) -> None:
        claim = self.claim_fires
        if claim is not None:
            try:
                claim([(job.id, run_times) for job, _, run_times, _ in batch])
            except Exception:
                # Only a shortcut: each fire is then claimed as it is submitted.
                self._logger.exception("Error claiming the fires of %d due job(s)", len(batch))
        for job, executor, run_times, _ in batch:
            try:
                executor.submit_job(job, run_times)
            except MaxInstancesReachedError:
                self._logger.warning(
                    'Execution of job "%s" skipped: maximum number of running instances '
                    "reached (%d)",
                    job,
                    job.max_instances,
                )
                events.append(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, job.id, alias, run_times))
            except BaseException:
                self._logger.exception(
                    'Error submitting job "%s" to executor "%s"', job, job.executor
                )
            else:
                if self._wants(EVENT_JOB_SUBMITTED):
                    events.append(JobSubmissionEvent(EVENT_JOB_SUBMITTED, job.id, alias, run_times))
        updated: list[Job] = []
        removed: list[str] = []
        for job, _, _, following in batch:
            if following is None:
                removed.append(job.id)
            else:
                job.next_run_time = following
                updated.append(job)
        write_back = getattr(store, "write_back", None)
        if write_back is not None:
            missing: set[str] = write_back(updated, removed)
        else:
            missing = set()
            for job, _, _, following in batch:
                if following is None:
                    try:
                        store.remove_job(job.id)
                    except JobLookupError:
                        missing.add(job.id)
                else:
                    store.update_job(job)
        wants_removed = self._wants(EVENT_JOB_REMOVED)
        for job, _, _, following in batch:
            if following is None and job.id not in missing:
                if wants_removed:
                    events.append(JobEvent(EVENT_JOB_REMOVED, job.id, alias))
                self._logger.info("Removed job %s", job.id)
            self._moved_on(job.id, following)

    def _moved_on(self, job_id: str, following: datetime | None) -> None:
        report = self.on_next_run_time
        if report is not None:
            report(job_id, following)

    def _trigger_failed(
        self, job: Job, alias: str, store: BaseJobStore, problem: str,
        events: list[SchedulerEvent],
    ) -> None:  # fmt: skip
        """The job's trigger cannot say when the job fires next: the job leaves the store."""
        error = f"could not compute the next fire time: {problem}"
        with contextlib.suppress(JobLookupError):
            store.remove_job(job.id)
            if self._wants(EVENT_JOB_REMOVED):
                events.append(JobEvent(EVENT_JOB_REMOVED, job.id, alias))
        report = self.on_trigger_error
        if report is None:
            self._logger.error('Job "%s" removed: %s', job, error)
            return
        try:
            report(job.id, error)
        except Exception:
            self._logger.exception('Error reporting the failed trigger of job "%s"', job)


class FireTimeError(ValueError):
    """A trigger gave a next fire time the scheduler cannot use."""


def _run_times(job: Job, now: datetime) -> tuple[list[datetime], datetime | None]:
    """The job's run times up to ``now`` and the fire time after them.

    APScheduler asks the trigger for the fire after the last run time twice (once to stop
    collecting, once to move the job on); once is enough. A fire time that is naive or
    not later than the one before raises ``FireTimeError``: trusting it would loop forever
    (or walk backwards) inside the pass.
    """
    run_times: list[datetime] = []
    limit = now.timestamp()
    nxt = job.next_run_time
    trigger = job.trigger
    while nxt is not None and nxt.timestamp() <= limit:
        run_times.append(nxt)
        following = trigger.get_next_fire_time(nxt, now)
        if following is not None:
            _check_advances(trigger, nxt, following)
        nxt = following
    return run_times, nxt


def _check_advances(trigger: BaseTrigger, previous: datetime, following: datetime) -> None:
    if not isinstance(following, datetime):
        raise FireTimeError(
            f"{trigger} gave {following!r} as the next fire time; it must be a datetime or None"
        )
    if following.tzinfo is None or following.utcoffset() is None:
        raise FireTimeError(
            f"{trigger} gave a naive datetime ({following.isoformat()}) as the fire time "
            f"after {previous.isoformat()}; fire times must be timezone-aware"
        )
    if following.timestamp() <= previous.timestamp():
        raise FireTimeError(
            f"{trigger} gave {following.isoformat()} as the fire time after "
            f"{previous.isoformat()}; a next fire time must be later than the previous fire time"
        )


def _raised(trigger: BaseTrigger, exc: Exception) -> str:
    text = str(exc)
    return f"{trigger} raised {type(exc).__name__}{': ' + text if text else ''}"


def apscheduler_grace(grace: float | None) -> int | None:
    """A job's ``misfire_grace_time`` as APScheduler takes it (a positive int, or None);
    the executor applies the exact window itself."""
    return None if grace is None else max(1, math.ceil(grace))
