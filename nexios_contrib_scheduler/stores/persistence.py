"""Persistence and leadership for one SchedulerManager with a persistent job store.

The schedule lives in APScheduler's job store, the adapter's state of each job beside it
(``state.py``). Every worker runs an AsyncIOScheduler on the shared store, started paused;
only the leader, the worker holding the lease (``coordination.py``), resumes it and fires
jobs. Without coordination the single process is the leader.

* Job operations on any worker write the store directly (APScheduler's own job store for
  the schedule, field-wise updates for the state) and a follower tells the leader, which
  reloads that job and wakes its scheduler.
* ``get_job``/``get_jobs`` reload from the store, so every worker shows the same jobs.
* Every fire is claimed in the store (job id + scheduled time) before it runs; a fire
  claimed already is not run again, even by a new leader after a handover.
* Jobs declared in code before ``start()`` are reconciled by the leader: one the store
  already holds with the same function, arguments and trigger keeps its stored schedule
  and state; a changed one is rescheduled unless it was changed at run time after the
  worker declared it; one removed at run time after that stays removed.

A background thread renews or tries the lease and writes a heartbeat; another listens
for messages from the other workers. Both hand their results to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import os
import pickle
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

from ..config import JobStatus
from ..errors import SchedulerError
from ..jobs import JobRecord, utcnow
from . import records
from .coordination import Lease, open_lease
from .fires import fire_token
from .state import Message, StateBackend, open_state
from .urls import StoreURL

if TYPE_CHECKING:
    from apscheduler.job import Job

    from ..manager import SchedulerManager

logger = logging.getLogger("nexios_contrib_scheduler")

# Read at each turn of the maintenance thread (tests shorten them).
RESYNC_SECONDS = 10.0  # a coordinated leader's slow fallback: reload everything this often
PRUNE_SECONDS = 600.0  # the leader drops old claims, removals and heartbeats this often


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Persistence:
    """What a SchedulerManager does differently with a persistent job store."""

    def __init__(self, manager: SchedulerManager, jobstore: StoreURL) -> None:
        config = manager.config
        self.manager = manager
        self.jobstore_url = jobstore
        self.coordination_url: StoreURL | None = config.coordination_url
        self.namespace: str = config.namespace
        self.lease_seconds = float(config.lease_seconds)
        self._beat_every = min(5.0, self.lease_seconds / 2)
        self._live_for = 3 * self._beat_every + 1  # a heartbeat older than this is stale
        self.worker_id = new_worker_id()
        self.state: StateBackend = open_state(jobstore, self.namespace)
        self.jobstore = self.state.make_jobstore()
        self.lease: Lease | None = None
        self._leading = False
        self._started = False  # start() done, close() not yet
        self._stopping = False
        self._holding = False  # the maintenance thread's view of the lease
        self._try_now = False
        # job id -> (the record as last written or read, its stored fields)
        self._saved: dict[str, tuple[JobRecord, dict[str, bytes]]] = {}
        self._declarations: dict[str, JobRecord] = {}
        self._definitions: dict[str, JobRecord] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[Message] = []
        self._leader: str | None = None
        self._warned: set[str] = set()
        self._failing: set[str] = set()
        self._io = threading.RLock()
        manager.registry.subscribe(self._on_change)

    # ------------------------------------------------------------ lifecycle

    @property
    def _running(self) -> bool:
        """Started and not closed, on an event loop that is still open."""
        loop = self._loop
        return self._started and not (loop is not None and loop.is_closed())

    @property
    def is_leader(self) -> bool:
        """True while this worker fires the jobs."""
        return self._leading and self._running

    async def start(self) -> None:
        m = self.manager
        if self._started:
            await self._end_orphaned_run()
        self._loop = asyncio.get_running_loop()
        self.worker_id = new_worker_id()
        if self.coordination_url is not None:
            engine = getattr(self.state, "engine", None)
            same = self.coordination_url.url == self.jobstore_url.url
            self.lease = open_lease(
                self.coordination_url,
                self.worker_id,
                self.lease_seconds,
                self.namespace,
                engine if same else None,
            )
        await asyncio.to_thread(self._open)
        m.apscheduler.start(paused=True)
        self._started, self._stopping, self._leading = True, False, False
        # Jobs added before start() are declarations: the leader reconciles them with the
        # store. Until then the registry shows what the store holds.
        declared: dict[str, JobRecord] = {}
        registry = m.registry
        with registry.lock:
            for record in registry.records():
                saved = self._saved.get(record.id)
                if saved is None or saved[0] is not record:
                    registry.pop(record.id)
                    declared[record.id] = record
        self._declarations.update(declared)
        self._definitions.update({k: copy.copy(r) for k, r in declared.items()})
        try:
            self.sync_all()
        except BaseException:
            self._started = False
            for record in declared.values():
                registry.put(record)
            m.apscheduler.shutdown()
            raise
        held = True
        if self.lease is not None:
            # A failure here is retried by the maintenance thread.
            held = bool(
                await asyncio.to_thread(self._attempt, "take the lease", self.lease.try_acquire)
            )
        self._holding = held
        self._stop.clear()
        self._spawn(self._maintain, "lease and heartbeat")
        if self.lease is not None:
            self._spawn(self._listen, "messages")
        if held:
            self._become_leader()
        logger.info(
            "scheduler worker %s started as %s on %s%s with %d job(s)",
            self.worker_id,
            "leader" if self.is_leader else "standby",
            self.jobstore_url,
            "" if self.coordination_url is None else f", coordinated by {self.coordination_url}",
            len(m.registry),
        )

    def _open(self) -> None:
        try:
            self.state.open()
        except Exception as exc:
            raise SchedulerError(
                f"cannot use the job store {self.jobstore_url}: {type(exc).__name__}: {exc}"
            ) from exc
        if self.lease is not None:
            try:
                self.lease.open()
            except Exception as exc:
                raise SchedulerError(
                    f"cannot use the coordination backend {self.coordination_url}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    async def stop(self) -> None:
        """Stop leading and listening (runs in progress still save their results)."""
        if not self._running or self._stopping:
            return
        self._stopping = True
        self._leading = False
        self._stop.set()
        self._wake.set()
        threads, self._threads = self._threads, []
        await asyncio.to_thread(self._leave, threads)

    async def _end_orphaned_run(self) -> None:
        """End the previous start, whose event loop was closed without ``shutdown()``."""
        logger.warning(
            "scheduler worker %s: the event loop it ran on was closed without shutdown(); "
            "stopping it before starting again",
            self.worker_id,
        )
        self._stopping, self._leading = True, False
        self._stop.set()
        self._wake.set()
        threads, self._threads = self._threads, []
        await asyncio.to_thread(self._leave, threads)
        await asyncio.to_thread(self.close)

    def _leave(self, threads: list[threading.Thread]) -> None:
        for thread in threads:
            thread.join(timeout=10)
        try:
            if self.lease is not None and self._holding:
                self._holding = False
                self.lease.release()
                self.state.publish({"op": "released", "from": self.worker_id})
        except Exception as exc:
            logger.warning("could not release the scheduler lease cleanly: %s", exc)

    def close(self) -> None:
        """After the last run has ended: stop writing and drop the connections."""
        self._started = False
        # The heartbeat stays until the runs have ended, so that the next leader does not
        # take them for runs cut short (see _settle_interrupted_runs).
        self._attempt("remove the scheduler heartbeat", self.state.leave, self.worker_id)
        self.state.close()
        if self.lease is not None:
            self.lease.close()
            self.lease = None

    def _spawn(self, target: Any, what: str) -> None:
        thread = threading.Thread(
            target=target, name=f"nexios-scheduler {what} {self.worker_id}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _call_soon(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

    # ------------------------------------------------------------ leadership

    def _become_leader(self) -> None:
        if not self._running or self._stopping or self.is_leader:
            return
        m = self.manager
        self._leading = True
        try:
            self.sync_all()
            self._settle_interrupted_runs()
            self._reconcile_declarations()
        except Exception:
            logger.exception("could not reconcile the declared jobs with the job store")
        if m.apscheduler.state == STATE_PAUSED:
            m.apscheduler.resume()
        if self.lease is not None:
            logger.info("scheduler worker %s is now the leader", self.worker_id)

    def _step_down(self) -> None:
        if not self.is_leader:
            return
        self._leading = False
        m = self.manager
        if m.apscheduler.state == STATE_RUNNING:
            m.apscheduler.pause()
        if not self._stopping:
            logger.warning(
                "scheduler worker %s lost the lease: standing by, runs in progress go on",
                self.worker_id,
            )

    def _maintain(self) -> None:
        lease = self.lease
        seconds = self.lease_seconds
        renew_every = seconds / 3
        try_every = min(1.0, seconds / 5)
        margin = min(1.0, seconds / 10)
        beat_every = self._beat_every
        now = time.monotonic()
        valid_until = now + seconds
        next_lease = now + (renew_every if self._holding else try_every)
        next_beat = now
        next_resync = now + RESYNC_SECONDS
        next_prune = now
        while not self._stop.is_set():
            if not self._running:
                # The event loop closed without shutdown(): nothing here fires jobs any
                # more, so let another worker lead rather than renew the lease.
                self._stop.set()
                self._leave([])
                return
            now = time.monotonic()
            if lease is not None and (now >= next_lease or self._try_now):
                self._try_now = False
                started = time.monotonic()
                if self._holding:
                    ok = self._attempt("renew the scheduler lease", lease.renew)
                    if ok:
                        valid_until = started + seconds
                    if ok is False or (not ok and time.monotonic() >= valid_until - margin):
                        self._holding = False
                        self._call_soon(self._step_down)
                    next_lease = now + (renew_every if ok else try_every)
                else:
                    if self._attempt("take the scheduler lease", lease.try_acquire):
                        self._holding = True
                        valid_until = started + seconds
                        self._call_soon(self._become_leader)
                        next_prune = next_beat = now
                    next_lease = now + (renew_every if self._holding else try_every)
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + beat_every
            # Only a coordinated leader resyncs (other workers may have written the store);
            # every deadline that passed moves on, so the wait below is never for a time
            # already past (the thread would spin).
            resyncs = self._holding and lease is not None
            if now >= next_resync:
                if resyncs:
                    self._call_soon(self.resync)
                next_resync = now + RESYNC_SECONDS
            if self._holding and now >= next_prune:
                self._attempt("prune the scheduler tables", self.state.prune, time.time())
                next_prune = now + PRUNE_SECONDS
            deadline = min(next_beat, next_resync) if resyncs else next_beat
            if lease is not None:
                deadline = min(deadline, next_lease)
            self._wake.wait(max(0.0, deadline - time.monotonic()))
            self._wake.clear()

    def _attempt(self, what: str, action: Any, *args: Any) -> Any:
        """Run ``action``; None (logged once per outage) if it raised."""
        try:
            result = action(*args)
        except Exception as exc:
            if what not in self._failing:
                self._failing.add(what)
                logger.warning("could not %s: %s: %s", what, type(exc).__name__, exc)
            return None
        if what in self._failing:
            self._failing.discard(what)
            logger.info("could %s again", what)
        return result

    def _heartbeat(self) -> None:
        info = {
            "worker_id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "coordination": None if self.coordination_url is None else str(self.coordination_url),
            "role": "leader" if self._holding else "standby",
        }
        workers = self._attempt(
            "write the scheduler heartbeat",
            self.state.heartbeat,
            self.worker_id,
            info,
            self._live_for,
        )
        if workers is None:
            return
        self._workers = sorted(workers, key=lambda w: str(w.get("worker_id")))
        if self.lease is not None:
            self._leader = self._attempt("read the scheduler lease", self.lease.holder)
        self._check_neighbours(workers)

    def _check_neighbours(self, workers: list[Message]) -> None:
        """Warn, once per worker, about another worker that shares the store unsafely."""
        mine = None if self.coordination_url is None else str(self.coordination_url)
        host, pid = socket.gethostname(), os.getpid()
        for worker in workers:
            other = str(worker.get("worker_id"))
            if other == self.worker_id or other in self._warned:
                continue
            same_host = worker.get("host") == host
            if same_host and worker.get("pid") != pid and not _alive(worker.get("pid")):
                continue  # the heartbeat of a process that has died
            theirs = worker.get("coordination")
            if mine is None or theirs is None:
                problem = "and neither coordinates with the other: each of them fires every job"
            elif mine != theirs:
                problem = (
                    f"coordinated by {theirs} where this one uses {mine}: each side elects "
                    "its own leader and fires every job"
                )
            elif (
                self.coordination_url is not None
                and self.coordination_url.kind == "file"
                and (worker.get("host") != host)
            ):
                problem = (
                    "from another host, coordinated by a lock file: a file lock only "
                    "coordinates workers on one host"
                )
            else:
                continue
            self._warned.add(other)
            logger.warning(
                "several schedulers share the job store %s unsafely: worker %s (host %s, "
                "pid %s) uses it too %s. Give every worker the same "
                "SchedulerConfig(coordination=...): 'file:///path/scheduler.lock' on one "
                "host, a 'postgresql://' or 'redis://' URL across hosts",
                self.jobstore_url,
                other,
                worker.get("host"),
                worker.get("pid"),
                problem,
            )

    # ------------------------------------------------------------ messages

    def _listen(self) -> None:
        self.state.listen(self._deliver, self._stop)

    def _deliver(self, message: Message) -> None:
        if message.get("from") == self.worker_id:
            return
        if message.get("op") == "released":
            self._try_now = True
            self._wake.set()
            return
        self._call_soon(self._on_message, message)

    def _on_message(self, message: Message) -> None:
        if not self._running or self._stopping:
            return
        op, job_id = message.get("op"), message.get("job")
        try:
            if op in ("changed", "removed") and isinstance(job_id, str):
                self.sync_job(job_id)
            elif op == "resync":
                self.sync_all()
            elif op == "run" and isinstance(job_id, str) and self.is_leader:
                token = f"run:{message.get('request')}"
                if self.state.claim(job_id, token, self.worker_id):
                    self.manager.run_job_now(job_id)
                return
            else:
                return
        except Exception:
            logger.exception("could not apply a change made by another scheduler worker")
            return
        if self.is_leader:
            self.manager.apscheduler.wakeup()

    def resync(self) -> None:
        if not self._running or self._stopping or not self.is_leader:
            return
        try:
            self.sync_all()
            self._settle_interrupted_runs()
        except Exception as exc:
            logger.warning("could not reload the jobs from %s: %s", self.jobstore_url, exc)
            return
        self.manager.apscheduler.wakeup()

    def _announce(self, op: str, job_id: str) -> None:
        if self.lease is None or self.is_leader:
            return  # nobody else fires jobs
        message = {"op": op, "job": job_id, "from": self.worker_id}
        self._attempt("tell the scheduler leader about a change", self.state.publish, message)

    def request_run(self, job_id: str) -> bool:
        """Ask the leader to run a job now; False if the job is unknown or finished."""
        self.sync_job(job_id)
        record = self.manager.registry.get(job_id)
        if record is None or record.finished:
            return False
        message = {"op": "run", "job": job_id, "request": uuid.uuid4().hex, "from": self.worker_id}
        self.state.publish(message)
        logger.debug("asked the scheduler leader to run job %r (%s) now", record.name, job_id)
        return True

    # ------------------------------------------------------------ the registry and the store

    # Reading the store and applying what was read happen under ``_io``, as do encoding a
    # record and writing it: a read cannot then land after a newer write of this worker and
    # undo it. ``_io`` is taken last (after the manager's lock or APScheduler's) and
    # nothing else is taken while it is held.

    def sync_job(self, job_id: str) -> None:
        """Reload one job from the store into the manager's registry."""
        if not self._running:
            return
        with self._io:
            fields = self.state.load(job_id)
            job = self.jobstore.lookup_job(job_id) if fields is not None else None
            self._merge(job_id, fields, job)

    def sync_all(self) -> None:
        """Reload every job from the store into the manager's registry."""
        if not self._running:
            return
        m = self.manager
        with self._io:
            stored = self.state.load_all()
            jobs = {job.id: job for job in self.jobstore.get_all_jobs()}
            for job_id in m.registry.ids():
                if job_id not in stored:
                    self._merge(job_id, None, None)
            for job_id, fields in stored.items():
                self._merge(job_id, fields, jobs.get(job_id))

    def _merge(self, job_id: str, fields: dict[str, bytes] | None, job: Job | None) -> None:
        m = self.manager
        record = m.registry.get(job_id)
        saved = self._saved.get(job_id)
        if fields is None:
            if record is not None and saved is not None and saved[0] is record:
                m.registry.pop(job_id)
                record.status = JobStatus.CANCELLED
                record.pending_next_run = None
                self._saved.pop(job_id, None)
            return
        if record is None:
            record = self._declarations.pop(job_id, None)
            saved = None
        if record is not None and saved is not None and saved[0] is record:
            changed = {k: v for k, v in fields.items() if saved[1].get(k) != v}
        else:
            changed = fields
        values = records.decode(changed, job_id)
        try:
            if record is None:
                func = None if job is None else job.func
                record = records.build(values, func, m.config.history_size)
            else:
                m.ledger.restore(record, values)
        except Exception as exc:
            if job_id not in self._failing:
                self._failing.add(job_id)
                logger.error("job %s in %s cannot be loaded: %s", job_id, self.jobstore_url, exc)
            return
        if job is not None:
            record.schedule = job.trigger
            record.pending_next_run = job.next_run_time
        else:
            record.pending_next_run = None
        m.registry.put(record)
        self._saved[job_id] = (record, dict(fields))

    def refresh(self, job_id: object = None) -> None:
        """Reload one job (or all) before reading or changing it; errors are logged."""
        if not self._running or not (job_id is None or isinstance(job_id, str)):
            return
        try:
            if job_id is None:
                self.sync_all()
            else:
                self.sync_job(job_id)
        except Exception as exc:
            logger.warning("could not reload jobs from %s: %s", self.jobstore_url, exc)

    def prepare_add(self, record: JobRecord, explicit_id: bool) -> None:
        """Checks for ``add_job``: the job must be storable; a declared job needs an id."""
        records.check_storable(record.func, record.args, record.kwargs, self.jobstore_url.kind)
        if self._running:
            if explicit_id:
                self.refresh(record.id)
        elif not explicit_id:
            logger.warning(
                "job %r is declared without an id: with a persistent job store every start "
                "adds another copy of it; give it a stable id=... and replace_existing=True",
                record.name,
            )

    def load_record(self, job_id: str) -> JobRecord | None:
        self.refresh(job_id)
        return self.manager.registry.get(job_id)

    def _on_change(self, kind: str, record: JobRecord) -> None:
        self.changed(record)

    def changed(self, record: JobRecord) -> None:
        """Write what changed in ``record`` (or its removal) to the store."""
        if not self._running:
            return
        try:
            with self._io:
                op = self._write(record)
        except Exception as exc:
            logger.error(
                "could not save job %r (%s) to %s: %s",
                record.name,
                record.id,
                self.jobstore_url,
                exc,
            )
            return
        if op is not None:
            self._announce(op, record.id)

    def _write(self, record: JobRecord) -> str | None:
        """Write the record's changes; what to tell the leader ("changed", "removed", None)."""
        job_id = record.id
        saved = self._saved.get(job_id)
        if not self.manager.registry.holds(record):
            if saved is None or saved[0] is not record:
                return None
            self.state.delete(job_id, time.time())
            del self._saved[job_id]
            return "removed"
        fields = records.encode(record)
        if saved is None or saved[0] is not record:
            fields[records.DEFINED_AT] = pickle.dumps(time.time(), records.PROTOCOL)
            self.state.create(job_id, fields)
        else:
            diff = {k: v for k, v in fields.items() if saved[1].get(k) != v}
            if not diff:
                return None
            if any(name in diff for name in (*records.DEFINITION_FIELDS, *_option_names())):
                diff[records.DEFINED_AT] = pickle.dumps(time.time(), records.PROTOCOL)
            if not self.state.update(job_id, diff):
                return None  # removed by another worker meanwhile
            fields = {**saved[1], **diff}
        self._saved[job_id] = (record, fields)
        return "changed"

    def _reconcile_declarations(self) -> None:
        """Bring the jobs declared in code before ``start()`` into the store (leader only)."""
        m = self.manager
        removed = self.state.tombstones() if self._definitions else {}
        now = utcnow()
        for job_id, declared in self._definitions.items():
            declared_at = declared.created_at.timestamp()
            record = m.registry.get(job_id)
            if record is None:
                if removed.get(job_id, float("-inf")) >= declared_at:
                    continue  # removed at run time after this worker declared it
                record = self._declarations.pop(job_id, None) or copy.copy(declared)
                _define(record, declared)
                m.registry.put(record)
                m.schedule(record, now)
                m.registry.announce("added", record)
                continue
            stored_at = self._defined_at(job_id)
            if stored_at is not None and stored_at > declared_at:
                continue  # written (at run time, or by a newer worker) after this declaration
            if records.same_definition(record, declared):
                self._update_options(record, declared)
                continue
            logger.info("job %r (%s) changed in code: rescheduled", declared.name, job_id)
            _define(record, declared)
            if record.finished:
                record.finished = False
                record.status = JobStatus.ACTIVE
            m.schedule(record, now)
            m.registry.changed(record)

    def _settle_interrupted_runs(self) -> None:
        """Record the runs a worker started and never finished (it died meanwhile).

        A run counts in ``total_run_count`` when it starts and in ``success_count`` or
        ``failure_count`` when it ends; runs in progress in this worker aside, a difference
        is runs whose worker stopped. Each is recorded as ``cancelled``, a failure. Not
        while another worker that led is alive: its runs may still be going (a leader
        that shuts down hands over at once but lets its runs finish). The leader looks
        again at each reload, so a killed leader's runs are settled once its heartbeat
        has gone stale.
        """
        self._heartbeat()  # the workers alive now
        if self._other_leader_alive():
            return
        m = self.manager
        for record in m.registry.records():
            cut = record.total_run_count - record.success_count - record.failure_count
            cut -= record.current_instances
            if cut > 0:
                m.ledger.cut_short(record, cut)

    def _other_leader_alive(self) -> bool:
        host = socket.gethostname()
        for worker in self._workers:
            if worker.get("worker_id") == self.worker_id or worker.get("role") != "leader":
                continue
            if worker.get("host") != host or _alive(worker.get("pid")):
                return True
        return False

    def _defined_at(self, job_id: str) -> float | None:
        saved = self._saved.get(job_id)
        raw = None if saved is None else saved[1].get(records.DEFINED_AT)
        value = None if raw is None else pickle.loads(raw)
        return value if isinstance(value, (int, float)) else None

    def _update_options(self, record: JobRecord, declared: JobRecord) -> None:
        options = _option_names()
        changes = {
            name: getattr(declared, name)
            for name in options
            if getattr(record, name) != getattr(declared, name)
        }
        if not changes:
            return
        for name, value in changes.items():
            setattr(record, name, value)
        aps = {k: v for k, v in changes.items() if k in _APSCHEDULER_OPTIONS}
        if "misfire_grace_time" in aps:
            aps["misfire_grace_time"] = _aps_grace(aps["misfire_grace_time"])
        if aps and not record.finished:
            with contextlib.suppress(JobLookupError):
                self.manager.apscheduler.modify_job(record.id, **aps)
        self.manager.registry.changed(record)

    # ------------------------------------------------------------ runs

    def on_submit(self, job: Job, run_times: Sequence[datetime]) -> JobRecord | None:
        """Before a submission: find the record and count fires merged by ``coalesce``."""
        record = self.manager.registry.get(job.id)
        if record is None:
            record = self.load_record(job.id)
        first = getattr(job, "next_run_time", None)
        if record is None or not job.coalesce or first is None or first >= run_times[0]:
            return record
        merged = [t for t in job._get_run_times(run_times[0]) if t < run_times[0]]
        if merged:
            self.manager.ledger.coalesced(record, merged, run_times[0])
        return record

    def claim(self, record: JobRecord, scheduled: datetime) -> bool:
        """Record the fire in the store before it runs; False if it ran (or runs) elsewhere."""
        try:
            claimed = self.state.claim(record.id, fire_token(scheduled), self.worker_id)
        except Exception as exc:
            logger.error(
                "job %r (%s) fire at %s not run: it could not be recorded in %s: %s",
                record.name,
                record.id,
                scheduled.isoformat(),
                self.jobstore_url,
                exc,
            )
            return False
        if not claimed:
            logger.info(
                "job %r (%s) fire at %s was already run by another worker",
                record.name,
                record.id,
                scheduled.isoformat(),
            )
        return claimed

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        leader = self.worker_id if self.is_leader else self._leader
        if leader == self.worker_id and not self.is_leader:
            leader = None
        return {
            "worker_id": self.worker_id,
            "role": "leader" if self.is_leader else "standby" if self._running else "stopped",
            "is_leader": self.is_leader,
            "leader": leader,
            "jobstore": str(self.jobstore_url),
            "coordination": None if self.coordination_url is None else str(self.coordination_url),
            "lease_seconds": self.lease_seconds,
            "workers": [dict(w) for w in self._workers],
        }


_APSCHEDULER_OPTIONS = ("name", "max_instances", "misfire_grace_time", "coalesce")


@functools.cache
def _option_names() -> tuple[str, ...]:
    """The options ``add_job`` takes that a record keeps (beyond the definition)."""
    import inspect

    from ..manager import SchedulerManager

    params = inspect.signature(SchedulerManager.add_job).parameters
    fields = set(records.persisted_fields())
    skip = {*records.DEFINITION_FIELDS, "id"}
    return tuple(n for n in params if n in fields and n not in skip)


def _aps_grace(grace: float | None) -> int | None:
    from ..scheduler import apscheduler_grace

    return apscheduler_grace(grace)


def _define(record: JobRecord, declared: JobRecord) -> None:
    for name in (*records.DEFINITION_FIELDS, *_option_names()):
        setattr(record, name, getattr(declared, name))


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
