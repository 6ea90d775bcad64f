"""Sync: job records to and from the store.

The schedule lives in APScheduler's job store, the adapter's state of each job beside it
(``state.py``), field by field. Sync follows the registry's changes and writes what changed
(field-wise diffs against what it last wrote or read); it reloads jobs into the registry
when another worker changed them, before a job operation, and on ``get_job``/``get_jobs``,
so every worker shows the same jobs. Jobs declared in code before ``start()`` are
reconciled by the leader: one the store already holds with the same function, arguments
and trigger keeps its stored schedule and state; a changed one is rescheduled unless it was
changed at run time after the worker declared it; one removed at run time after that stays
removed. Every fire is claimed in the store (job id + scheduled time) before it runs; a
fire claimed already is not run again, even by a new leader after a handover.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import logging
import pickle
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from apscheduler.jobstores.base import JobLookupError

from ..config import JobStatus
from ..jobs import JobRecord, RunRecord, utcnow
from ..ledger import RunLedger
from ..registry import ChangeKind, JobRegistry
from ..scheduler import apscheduler_grace
from . import records
from .fires import fire_time, fire_token
from .state import InFlight

if TYPE_CHECKING:
    from apscheduler.job import Job

    from .persistence import Persistence

logger = logging.getLogger("nexios_contrib_scheduler")

FLUSH_BEFORE_READ = 5.0  # longest a reload waits for this worker's run state to be written
#: Run state is encoded for the writer this long after a run changed it, once per job
#: however many changes came meanwhile (a run's start and end are one write), in slices of
#: at most ``RUN_STATE_SLICE`` jobs and ``RUN_STATE_TIME`` seconds per turn of the event
#: loop: a burst of runs starts first, and the app's requests are served in between.
RUN_STATE_DELAY = 0.1
RUN_STATE_SLICE = 64
RUN_STATE_TIME = 0.002
#: While more than ``RUN_STATE_SLICE`` fires handed over to be claimed have runs still to
#: start (a burst, not the steady flow of a busy scheduler), the encoding waits, up to this
#: long after the oldest change it holds: the loop starts the burst's runs first.
RUN_STATE_HOLD = 1.0
#: Jobs of a reload merged per turn of the event loop (about 2-5 ms of work).
APPLY_SLICE = 200


@dataclass
class Loaded:
    """Jobs read from the store by ``StoreSync.load``, to be applied on the event loop."""

    since: int  # this worker's write count when the read began
    stored: dict[str, dict[str, bytes]]  # the stored fields, by job id
    # Their APScheduler jobs (those with a schedule; None: it cannot be restored), each
    # with its stored state.
    jobs: dict[str, tuple[Job | None, bytes]]
    ids: set[str] | None  # the ids asked for (None: every job, so others are gone)
    in_flight: list[InFlight] | None = None  # read for the leader to settle, if asked
    tombstones: dict[str, float] | None = None  # removals, for the leader to reconcile


class StoreSync:
    """Keeps the registry and the store in step for one worker."""

    def __init__(
        self, owner: Persistence, registry: JobRegistry, ledger: RunLedger, history_size: int
    ) -> None:
        self.owner = owner
        self.registry = registry
        self.ledger = ledger
        self.history_size = history_size
        # job id -> (the record as last written or read, its stored fields)
        self._saved = _Saved()
        self._declarations: dict[str, JobRecord] = {}
        self._definitions: dict[str, JobRecord] = {}
        self._failing: set[str] = set()
        self._unloadable: set[str] = set()  # ids of jobs whose function cannot be imported
        self._unscheduled: set[str] = set()  # ids of jobs with state but no schedule stored
        self._io = threading.RLock()
        self._writes = 0  # writes begun by this worker
        self._settled: set[tuple[str, str]] = set()  # fires of stopped workers, settled here
        # Whether settling looks through every job for runs cut short: once this worker
        # leads, and whenever a worker that led or a fire's worker may have stopped since.
        self._cut_scan_due = True
        self._written: dict[str, int] = {}  # job id -> the count at its last write
        self._op_written: dict[str, int] = {}  # ... at its last write that was not run state
        # Jobs whose run state changed and is not encoded yet, and the timer that will.
        self._run_state_due: dict[str, JobRecord] = {}
        self._run_state_timer: asyncio.TimerHandle | None = None
        self._run_state_loop: asyncio.AbstractEventLoop | None = None
        self._run_state_since = 0.0  # loop time of the oldest change not encoded
        self._ends_due: dict[str, list[tuple[str, RunRecord | None]]] = {}
        # Fires whose run started and whose start waits for the run state that counts it.
        self._starts_due: dict[str, list[str]] = {}
        registry.subscribe(self.on_change)

    def take_declarations(self) -> dict[str, JobRecord]:
        """At start: the jobs added before it are declarations, taken out of the registry
        until the leader reconciles them with the store (the registry shows the store)."""
        declared: dict[str, JobRecord] = {}
        registry = self.registry
        with registry.lock:
            for record in registry.records():
                saved = self._saved.get(record.id)
                if saved is None or saved[0] is not record:
                    registry.pop(record.id)
                    declared[record.id] = record
        self._declarations.update(declared)
        self._definitions.update({k: copy.copy(r) for k, r in declared.items()})
        return declared

    def declared(self, job_id: str) -> JobRecord | None:
        """The job as this worker declared it in code before ``start()``, while the store's
        version of it has not reached this worker's view yet (None otherwise)."""
        return self._declarations.get(job_id)

    def give_back(self, declared: dict[str, JobRecord]) -> None:
        """A start that failed: the declarations are the registry's again."""
        for record in declared.values():
            self.registry.put(record)

    def on_change(self, kind: ChangeKind, record: JobRecord) -> None:
        if kind == "run" and self._defer_run_state(record):
            return
        self.changed(record, run_state=kind == "run")

    def _defer_run_state(self, record: JobRecord) -> bool:
        """A run changed ``record``: encode its run state a little later (on the loop, once
        for all the changes meanwhile); False if it is to be handed to the writer at once:
        not running, not on the event loop, or stopping (what changes from then on is
        handed at once, so that the last writes made as the scheduler closes include it)."""
        if not self.owner.running or self.owner.stopping:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        # Noted now, so that a reload read before the write leaves the job's run state be.
        self.note_write(record.id, run_state=True)
        if not self._run_state_due:
            self._run_state_since = loop.time()
        self._run_state_due[record.id] = record
        if self._run_state_timer is None:
            self._run_state_timer = loop.call_later(RUN_STATE_DELAY, self._encode_run_state)
            self._run_state_loop = loop
        return True

    def _encode_run_state(self) -> None:
        """Hand the run state of up to ``RUN_STATE_SLICE`` jobs to the writer; the rest in
        the next turns of the loop. Put off while a burst of claimed fires has runs still
        to start (up to ``RUN_STATE_HOLD``): the encoding would delay them."""
        self._run_state_timer = None
        due, loop = self._run_state_due, self._run_state_loop
        if loop is None or loop.is_closed():
            return
        if (
            due
            and loop.time() - self._run_state_since < RUN_STATE_HOLD
            and self.owner.writer.runs_waiting() > RUN_STATE_SLICE
        ):
            self._run_state_timer = loop.call_later(RUN_STATE_DELAY / 4, self._encode_run_state)
            return
        stop = time.perf_counter() + RUN_STATE_TIME
        for count in range(min(RUN_STATE_SLICE, len(due))):
            if count and time.perf_counter() > stop:
                break
            self._hand(due.pop(next(iter(due))))
        if due:
            self._run_state_timer = loop.call_later(0, self._encode_run_state)

    def hand_run_state(self) -> None:
        """Hand every pending run state to the writer now (on the loop: before a flush)."""
        if self._run_state_timer is not None:
            self._run_state_timer.cancel()
            self._run_state_timer = None
        due, self._run_state_due = self._run_state_due, {}
        for record in due.values():
            self._hand(record)
        for job_id in list(self._starts_due):
            self._hand_starts(job_id)

    def _hand(self, record: JobRecord) -> None:
        """A job's run state to the writer, then the ends of its fires that wait for it."""
        self.changed(record, run_state=True)
        writer = self.owner.writer
        for token, run in self._ends_due.pop(record.id, ()):
            writer.end_fire(record.id, token, run)

    def start_fire(self, job_id: str, token: str) -> None:
        """A claimed fire's run starts (before the ledger counts it): its start goes to the
        writer with the job's next write of run state, the one that counts the run, in the
        same fenced write. The store then holds both or neither: a worker fenced in between
        reports the run as not counted, and the leader counts it (a start written alone
        would say the run was counted when its count was refused)."""
        self._starts_due.setdefault(job_id, []).append(token)

    def _hand_starts(self, job_id: str) -> None:
        """The starts of ``job_id`` still waiting, to the writer on their own."""
        writer = self.owner.writer
        for token in self._starts_due.pop(job_id, ()):
            writer.start_fire(job_id, token)

    def end_fire(self, job_id: str, token: str, run: RunRecord | None) -> None:
        """A fire ended: its end goes to the writer right after the job's run state (the
        one that counts the run), never before it, nor before its start."""
        if job_id in self._run_state_due:
            self._ends_due.setdefault(job_id, []).append((token, run))
        else:
            self._hand_starts(job_id)
            self.owner.writer.end_fire(job_id, token, run)

    # Reading the store and applying what was read happen under ``_io``, as do encoding a
    # record and writing it: a read cannot then land after a newer write of this worker and
    # undo it. ``_io`` is taken last (after the registry's lock or APScheduler's) and
    # nothing else is taken while it is held.

    def note_write(self, job_id: str, run_state: bool = False) -> None:
        """This worker changed ``job_id`` (a reload read before it leaves the job be, but
        for a pause or removal made elsewhere: ``_apply_if_stopped``). ``run_state``: a
        write of the runs' side (the ledger's run state, or a pass moving the job on), not
        a job operation."""
        self._writes += 1
        self._written[job_id] = self._writes
        if not run_state:
            self._op_written[job_id] = self._writes

    def present(self, loaded: Loaded) -> set[str] | None:
        """The jobs the store holds as a full reload read them, with those this worker
        created or changed since (being written); None after a partial reload."""
        if loaded.ids is not None:
            return None
        since = loaded.since
        return {*loaded.stored, *(j for j, n in self._op_written.items() if n > since)}

    # A reload is split in two: ``load`` reads the store (any thread, no lock held) and
    # ``apply`` merges what it read (on the event loop, as everything that touches the
    # registry's records and APScheduler). A job this worker wrote after the read began is
    # left as it is: what was read of it may be older than what this worker wrote.

    def load(self, ids: set[str] | None) -> Loaded:
        """Read the given jobs (None: every job) from the store."""
        since = self._writes
        # The run state handed to the writer before this read is in the store first (the
        # read is off the loop: waiting is fine); what comes after is ``newer``.
        self.owner.writer.flush(FLUSH_BEFORE_READ)
        mirror = self.owner.jobstore
        if ids is None:
            stored = self.owner.state.load_all()
            loaded = Loaded(since, stored, mirror.read(None), None)
            # A job's state and schedule are read one after the other: a job written in
            # between shows a schedule without state. Those are read again, whole.
            torn = {job_id for job_id in loaded.jobs if job_id not in stored}
            if torn:
                again = self.load(torn)
                stored.update(again.stored)
                for job_id in torn:
                    loaded.jobs.pop(job_id, None)
                loaded.jobs.update(again.jobs)
            return loaded
        stored = {}
        for job_id in ids:
            fields = self.owner.state.load(job_id)
            if fields is not None:
                stored[job_id] = fields
        return Loaded(since, stored, mirror.read(ids), set(ids))

    def nothing_loaded(self) -> Loaded:
        """A reload that read nothing (to settle or reconcile without reading jobs)."""
        return Loaded(self._writes, {}, {}, set())

    def apply(self, loaded: Loaded) -> None:
        """Merge what ``load`` read into the registry, at once (at start-up)."""
        for _ in self.applying(loaded):
            pass

    def applying(self, loaded: Loaded) -> Iterator[None]:
        """Merge what ``load`` read into the registry and APScheduler's job store (in
        memory), ``APPLY_SLICE`` jobs at a time: it yields between slices, and the caller
        lets the event loop serve others meanwhile. A job this worker writes in between
        is left as it is, like one it wrote while the read went on. A job whose stored
        fields and schedule are those held already costs a comparison."""
        if not self.owner.running:
            return
        stored, scheduled = loaded.stored, loaded.jobs
        # What was read is the reload's own: it is gone through as it is, not copied.
        read = itertools.chain(stored, (j for j in scheduled if j not in stored))
        # Of the jobs read, how many the registry and the mirror hold (after a full reload:
        # those held and not read are gone from the store).
        held = [0, 0] if loaded.ids is None else None
        yield from self._apply_slices(read, loaded, held)
        # Those held and not read: gone from the store (every job read), or not stored.
        # Most often there are none: every job held was among those read.
        mirror = self.owner.jobstore
        with self.registry.lock:
            if loaded.ids is not None:
                unread = [j for j in loaded.ids if j not in stored and j not in scheduled]
            elif held is not None and held != [len(self.registry), len(mirror.job_ids())]:
                both = self.registry.id_view() | mirror.job_ids()
                unread = list(both - stored.keys() - scheduled.keys())
            else:
                unread = []
        yield from self._apply_slices(unread, loaded)
        if loaded.ids is None:
            yield from self._forget_writes(loaded.since)

    def _apply_slices(
        self, job_ids: Iterable[str], loaded: Loaded, held: list[int] | None = None
    ) -> Iterator[None]:
        """Apply ``job_ids``, yielding after every ``APPLY_SLICE`` of them; ``held`` counts
        those the registry and the mirror then hold. After a full reload, this worker's
        writes made before it began are forgotten as their jobs are applied (the reload
        has them)."""
        since, stored, scheduled = loaded.since, loaded.stored, loaded.jobs
        forget = loaded.ids is None
        registry, mirror = self.registry, self.owner.jobstore
        ids = iter(job_ids)
        while True:
            if not self.owner.running:
                return
            with registry.lock, self._io:
                written, op_written = self._written, self._op_written
                count = 0
                for job_id in itertools.islice(ids, APPLY_SLICE):
                    count += 1
                    last = written.get(job_id, 0)
                    if last <= since:
                        if forget and last:
                            del written[job_id]
                            op_written.pop(job_id, None)
                        self._apply_one(job_id, stored.get(job_id), scheduled.get(job_id))
                    elif op_written.get(job_id, 0) <= since:
                        self._apply_if_stopped(job_id, stored.get(job_id), scheduled.get(job_id))
                    # else: this worker changed it after the read began; it stays as it is
                    if held is not None:
                        held[0] += registry.get(job_id) is not None
                        held[1] += mirror.lookup_job(job_id) is not None
            if count < APPLY_SLICE:
                return
            yield

    def _forget_writes(self, since: int) -> Iterator[None]:
        """After a full reload: forget this worker's writes made before it began that are
        left (of jobs neither read nor held), ``10 * APPLY_SLICE`` at a time."""
        with self.registry.lock, self._io:
            noted = [*self._written, *self._op_written]
        step = 10 * APPLY_SLICE
        for first in range(0, len(noted), step):
            with self.registry.lock, self._io:
                written, op_written = self._written, self._op_written
                for job_id in noted[first : first + step]:
                    if written.get(job_id, since + 1) <= since:
                        del written[job_id]
                    if op_written.get(job_id, since + 1) <= since:
                        del op_written[job_id]
            yield

    def _apply_if_stopped(
        self,
        job_id: str,
        fields: dict[str, bytes] | None,
        scheduled: tuple[Job | None, bytes] | None,
    ) -> None:
        """A job this worker ran or moved on after the read began: what was read may be
        older than those writes, so the job is left as it is, unless the read shows that
        another worker removed or paused it (this worker's moves since were refused by
        their guard). That is applied at once, the run state this worker holds kept, so
        that the job's fires stop now, not one fire later."""
        held = self.owner.jobstore.lookup_job(job_id)
        saved = self._saved.get(job_id)
        if held is None or held.next_run_time is None or saved is None:
            return  # not firing here: nothing to stop
        if fields is None and scheduled is None:
            self._apply_one(job_id, None, None)  # removed
            return
        if fields is None or scheduled is None or scheduled[0] is None:
            return
        if scheduled[0].next_run_time is not None:
            return  # not paused in the store
        merged = dict(saved[1])
        merged.update((k, fields[k]) for k in _PAUSE_FIELDS if k in fields)
        self._apply_one(job_id, merged, scheduled)

    def _apply_one(
        self,
        job_id: str,
        fields: dict[str, bytes] | None,
        scheduled: tuple[Job | None, bytes] | None,
    ) -> None:
        mirror = self.owner.jobstore
        state = None if scheduled is None else scheduled[1]
        saved = self._saved.get(job_id)
        if (
            fields is not None
            and saved is not None
            and saved[1] == fields
            and self.registry.get(job_id) is saved[0]
            and not isinstance(saved[0].func, records.MissingFunction)
            and mirror.holds(job_id, state)
            and (scheduled is not None or job_id in self._unscheduled)
        ):
            return  # as held already
        self._merge(job_id, fields, None if scheduled is None else scheduled[0])
        if scheduled is None:
            mirror.drop(job_id)
        elif scheduled[0] is not None:
            mirror.load(scheduled[0], scheduled[1])
        # else: its schedule cannot be restored here; what is held of it stays

    def _merge(self, job_id: str, fields: dict[str, bytes] | None, job: Job | None) -> None:
        record = self.registry.get(job_id)
        saved = self._saved.get(job_id)
        if fields is None:
            if record is not None and saved is not None and saved[0] is record:
                self.registry.pop(job_id)
                record.status = JobStatus.CANCELLED
                record.pending_next_run = None
                self._saved.pop(job_id)
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
                record = records.build(values, func, self.history_size)
            else:
                self.ledger.restore(record, values)
        except Exception as exc:
            if job_id not in self._failing:
                self._failing.add(job_id)
                logger.error(
                    "job %s in %s cannot be loaded: %s", job_id, self.owner.jobstore_url, exc
                )
            return
        if job is not None:
            record.schedule = job.trigger
            record.pending_next_run = job.next_run_time
            self._unscheduled.discard(job_id)
        else:
            record.pending_next_run = None
            self._unscheduled.add(job_id)
        self._check_loadable(record, fields)
        self.registry.put(record)
        self._saved[job_id] = (record, dict(fields))

    # A job whose function this worker cannot import (a rolling deploy: this worker runs
    # older code) stays in the store with its schedule. Here it reads FAILED, its
    # last_error saying why; that view is this worker's alone and never written to the
    # store (see _write), where a worker that can import the function sees the job as is.

    def _check_loadable(self, record: JobRecord, fields: dict[str, bytes]) -> None:
        func = record.func
        if isinstance(func, records.MissingFunction):
            func = record.func = records.resolve(func.ref)  # the code may be here now
        if isinstance(func, records.MissingFunction):
            if record.status is JobStatus.ACTIVE:
                record.status = JobStatus.FAILED
            record.last_error = func.error
            if record.id not in self._unloadable:
                self._unloadable.add(record.id)
                logger.warning(
                    "job %r (%s) in %s is kept but not run by this worker: %s",
                    record.name,
                    record.id,
                    self.owner.jobstore_url,
                    func.error,
                )
            return
        if record.id in self._unloadable:
            self._unloadable.discard(record.id)
            stored = records.decode(
                {k: fields[k] for k in ("status", "last_error") if k in fields}, record.id
            )
            record.status = stored.get("status", record.status)
            record.last_error = stored.get("last_error")
            logger.info("job %r (%s) can be imported again", record.name, record.id)

    def refresh(self, job_id: object = None) -> None:
        """Reload one job (or all) soon, off the event loop."""
        if self.owner.running and (job_id is None or isinstance(job_id, str)):
            self.owner.refresh_soon(job_id)

    def prepare_add(self, record: JobRecord, explicit_id: bool) -> None:
        """Checks for ``add_job``: the job must be storable; a declared job needs an id."""
        records.check_storable(
            record.func, record.args, record.kwargs, self.owner.jobstore_url.kind
        )
        if not self.owner.running and not explicit_id:
            logger.warning(
                "job %r is declared without an id: with a persistent job store every start "
                "adds another copy of it; give it a stable id=... and replace_existing=True",
                record.name,
            )

    def changed(self, record: JobRecord, run_state: bool = False) -> None:
        """Write what changed in ``record`` (or its removal) to the store; a change of run
        state carries the leader's fencing token."""
        if not self.owner.running:
            return
        try:
            with self._io:
                self._write(record, run_state)
        except Exception as exc:
            if run_state:
                self._hand_starts(record.id)
            logger.error(
                "could not save job %r (%s) to %s: %s",
                record.name,
                record.id,
                self.owner.jobstore_url,
                exc,
            )

    def _write(self, record: JobRecord, run_state: bool = False) -> None:
        """Hand the record's changes (or its removal) to the writer, which writes them off
        the loop and tells the other workers; a change of run state carries the leader's
        fencing token."""
        job_id = record.id
        writer = self.owner.writer
        saved = self._saved.get(job_id)
        if (
            run_state
            and job_id in self._starts_due
            and not (saved is not None and saved[0] is record and self.registry.holds(record))
        ):
            self._hand_starts(job_id)  # no update of run state follows to carry them
        if not self.registry.holds(record):
            if saved is None or saved[0] is not record:
                return
            self.note_write(job_id)
            writer.delete(job_id, time.time())
            del self._saved[job_id]
            return
        if run_state and saved is not None and saved[0] is record:
            # A run changes run state only: the definition and options are not encoded
            # again (the trigger, arguments and function are the costly ones).
            fields = records.encode(record, _run_state_names())
        else:
            fields = records.encode(record)
        if saved is not None and isinstance(record.func, records.MissingFunction):
            _keep_stored_view(record, fields, saved[1])
        if saved is None or saved[0] is not record:
            fields[records.DEFINED_AT] = pickle.dumps(time.time(), records.PROTOCOL)
            self.note_write(job_id)
            writer.create(job_id, fields)
            self._saved[job_id] = (record, fields)
            return
        diff = {k: v for k, v in fields.items() if saved[1].get(k) != v}
        definition = any(name in diff for name in (*records.DEFINITION_FIELDS, *_option_names()))
        if run_state and (definition or not diff):
            self._hand_starts(job_id)
        if not diff:
            return
        if definition:
            diff[records.DEFINED_AT] = pickle.dumps(time.time(), records.PROTOCOL)
        self.note_write(job_id, run_state=run_state and not definition)
        if run_state and not definition:
            writer.update(job_id, diff, self._starts_due.pop(job_id, ()))
        else:
            writer.change(job_id, diff)
        self._saved[job_id] = (record, {**saved[1], **diff})

    def reconcile_declarations(self, removed: dict[str, float], present: set[str] | None) -> None:
        """Bring the jobs declared in code before ``start()`` into the store (leader only);
        ``removed``: the store's removals, read (off the loop) with the jobs. What it
        creates goes through the writer, which writes them together. ``present``: the jobs
        the store holds (from a full reload; None: not known); a declared job it lacks and
        did not remove (the store lost its data) is written again from this worker's view."""
        with self.owner.writer.gathering():  # one transaction, however slow the loop is
            self._reconcile(removed, present)

    def _reconcile(self, removed: dict[str, float], present: set[str] | None) -> None:
        now = utcnow()
        for job_id, declared in self._definitions.items():
            declared_at = declared.created_at.timestamp()
            record = self.registry.get(job_id)
            if record is not None and present is not None and job_id not in present:
                if job_id not in removed:
                    logger.warning(
                        "declared job %r (%s) is not in the job store: written again",
                        declared.name,
                        job_id,
                    )
                    self._saved.pop(job_id)  # written whole, as a new job
                    _define(record, declared)
                    self.owner.schedule(record, now)
                    self.registry.changed(record)
                continue
            if record is None:
                if removed.get(job_id, float("-inf")) >= declared_at:
                    continue  # removed at run time after this worker declared it
                record = self._declarations.pop(job_id, None) or copy.copy(declared)
                _define(record, declared)
                self.registry.put(record)
                self.owner.schedule(record, now)
                self.registry.announce("added", record)
                continue
            # A schedule deleted from APScheduler's store (APScheduler 3 does so with a job
            # it cannot load, as a worker on older code did before such jobs were kept):
            # declaring the job again schedules it again.
            lost = job_id in self._unscheduled and _lost_schedule(record)
            stored_at = self._defined_at(job_id)
            if stored_at is not None and stored_at > declared_at:
                if lost:  # written (at run time, or by a newer worker) after this declaration
                    self._schedule_again(record, now)
                continue
            if records.same_definition(record, declared):
                self._update_options(record, declared)
                if lost:
                    self._schedule_again(record, now)
                continue
            logger.info("job %r (%s) changed in code: rescheduled", declared.name, job_id)
            _define(record, declared)
            if record.finished:
                record.finished = False
                record.status = JobStatus.ACTIVE
            self.owner.schedule(record, now)
            self.registry.changed(record)

    def _schedule_again(self, record: JobRecord, now: datetime) -> None:
        logger.warning("job %r (%s) had lost its schedule: scheduled again", record.name, record.id)
        self.owner.schedule(record, now)
        self.registry.changed(record)

    def settle_interrupted_runs(self, in_flight: list[InFlight]) -> None:
        """Record the fires and runs of workers that stopped (died) meanwhile (leader only).

        Each fire is noted in flight from its claim to its end, with the worker that claimed
        it and whether its run started. A dead worker's fire that never started is recorded
        missed ("not run"), with a log line; a run it started and never ended is recorded
        ``cancelled`` (a failure). A run counts in ``total_run_count`` when it starts and
        in ``success_count`` or ``failure_count`` when it ends; runs in progress on this
        worker or on a worker that may still be running aside, a difference is runs cut
        short. A worker may still be running while its heartbeat is fresh, or while its
        process exists on this host (a stopped process wakes up: its runs end, and it
        reports their outcomes). Not while another worker that led is alive: its runs may
        still be going (a leader that shuts down hands over at once but lets its runs
        finish). The leader looks again at each reload; it goes through every job only
        when runs may have been cut short since it last did (it has just taken the lease,
        another leader was alive, or a stopped worker's fires were found): only a worker
        that leads runs jobs, and this one counts its own runs in progress.
        """
        leadership = self.owner.leadership
        if leadership.other_leader_alive():
            self._cut_scan_due = True
            return
        still_running: dict[str, int] = {}
        ended: list[tuple[str, str]] = []
        adopted = False
        for fire in in_flight:
            if leadership.worker_alive(fire.worker):
                if fire.started and fire.worker != self.owner.worker_id:
                    still_running[fire.job_id] = still_running.get(fire.job_id, 0) + 1
                continue
            self._settled.add((fire.job_id, fire.fire))
            record = self.registry.get(fire.job_id)
            if record is not None and self._adopt(record, fire):
                adopted = True  # a remote engine's fire: followed to its outcome here
                continue
            ended.append((fire.job_id, fire.fire))
            if record is not None and not fire.started:
                reason = f"claimed by worker {fire.worker}, which stopped before running it"
                self.ledger.not_run(record, fire_time(fire.fire), reason)
        if ended or adopted or self._cut_scan_due:
            self._cut_scan_due = False
            for record in self.registry.records():
                cut = record.total_run_count - record.success_count - record.failure_count
                cut -= record.current_instances + still_running.get(record.id, 0)
                if cut > 0:
                    self.ledger.cut_short(record, cut)
        for job_id, token in ended:
            self.owner.writer.end_fire(job_id, token, None)

    def _adopt(self, record: JobRecord, fire: InFlight) -> bool:
        adopt = self.owner.adopt
        if adopt is None or record.executor == "default":
            return False
        return adopt(record, fire_time(fire.fire), fire.worker, fire.started)

    def leading(self) -> None:
        """This worker has taken the lease: its next settling looks through every job."""
        self._cut_scan_due = True

    def forget_fire(self, job_id: str, token: str) -> bool:
        """A fire another worker reports ended: False if it was settled here already."""
        if (job_id, token) in self._settled:
            self._settled.discard((job_id, token))
            return False
        return True

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
            aps["misfire_grace_time"] = apscheduler_grace(aps["misfire_grace_time"])
        if aps and not record.finished:
            with contextlib.suppress(JobLookupError):
                self.owner.scheduler.modify_job(record.id, **aps)
        self.registry.changed(record)

    # ------------------------------------------------------------ runs

    def on_submit(self, job: Job, run_times: Sequence[datetime]) -> JobRecord | None:
        """Before a submission: find the record and count fires merged by ``coalesce``."""
        record = self.registry.get(job.id)
        if record is None:
            self.refresh(job.id)  # a schedule without the adapter's state: look again
            return None
        first = getattr(job, "next_run_time", None)
        if record is None or not job.coalesce or first is None or first >= run_times[0]:
            return record
        merged = [t for t in job._get_run_times(run_times[0]) if t < run_times[0]]
        if merged:
            self.ledger.coalesced(record, merged, run_times[0])
        return record

    def claim(self, record: JobRecord, scheduled: datetime) -> bool | asyncio.Future[bool]:
        """Claim a fire not claimed by the pass (the writer writes it); the future says
        whether it runs here. A job whose function this worker cannot import is not run:
        its fire is claimed all the same (so that no worker runs it after it was missed)
        and recorded as not run."""
        owner = self.owner
        token = fire_token(scheduled)
        claim = owner.writer.claim(record.id, token)
        missing = record.func
        if isinstance(missing, records.MissingFunction):
            saved = self._saved.get(record.id)
            if saved is not None and saved[0] is record:
                self._check_loadable(record, saved[1])  # the code may be here now
            self.refresh(record.id)
            missing = record.func
        if not isinstance(missing, records.MissingFunction):
            return claim
        claim.add_done_callback(functools.partial(self._missed, record, scheduled, missing))
        return False

    def _missed(
        self,
        record: JobRecord,
        scheduled: datetime,
        missing: records.MissingFunction,
        claim: asyncio.Future[bool],
    ) -> None:
        if claim.cancelled() or claim.exception() is not None or not claim.result():
            return
        self.ledger.not_run(record, scheduled, missing.error)
        self.owner.writer.end_fire(record.id, fire_token(scheduled), None)


#: The stored fields a pause sets (``pause_job``; its ``pending_next_run`` is not stored).
_PAUSE_FIELDS = ("status", "paused_reason")


class _Saved:
    """Job id -> (the record as last written or read, its stored fields), kept as two
    dicts and read as a pair made on the spot: a pair kept per job would be one more
    object per job for the garbage collector (one holding the record is tracked), whose
    full collections stop the interpreter for a time that grows with every such object."""

    __slots__ = ("_fields", "_records")

    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}
        self._fields: dict[str, dict[str, bytes]] = {}

    def get(self, job_id: str) -> tuple[JobRecord, dict[str, bytes]] | None:
        record = self._records.get(job_id)
        return None if record is None else (record, self._fields[job_id])

    def __setitem__(self, job_id: str, saved: tuple[JobRecord, dict[str, bytes]]) -> None:
        self._records[job_id], self._fields[job_id] = saved

    def __delitem__(self, job_id: str) -> None:
        del self._records[job_id], self._fields[job_id]

    def pop(self, job_id: str) -> None:
        """Forget ``job_id`` if saved."""
        if self._records.pop(job_id, None) is not None:
            del self._fields[job_id]


def _keep_stored_view(
    record: JobRecord, fields: dict[str, bytes], stored: dict[str, bytes]
) -> None:
    """For a job whose function this worker cannot import: write its status and last_error
    as stored, not as this worker shows them (FAILED, saying it cannot import it)."""
    func = record.func
    if record.status is JobStatus.FAILED and "status" in stored:
        fields["status"] = stored["status"]
    missing = isinstance(func, records.MissingFunction) and record.last_error == func.error
    if missing and "last_error" in stored:
        fields["last_error"] = stored["last_error"]


def _lost_schedule(record: JobRecord) -> bool:
    """A job that should have a schedule in APScheduler's store (it is not over or paused)."""
    paused = record.status is JobStatus.PAUSED or record.failure_paused
    return not (record.finished or paused or record.status is JobStatus.CANCELLED)


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


@functools.cache
def _run_state_names() -> tuple[str, ...]:
    """The stored fields a run may change: all but the id, the definition, the options and
    the creation time."""
    fixed = {"id", "created_at", *records.DEFINITION_FIELDS, *_option_names()}
    return tuple(n for n in records.persisted_fields() if n not in fixed)


def _define(record: JobRecord, declared: JobRecord) -> None:
    for name in (*records.DEFINITION_FIELDS, *_option_names()):
        setattr(record, name, getattr(declared, name))
