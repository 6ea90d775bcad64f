"""Persistence for one scheduler with a persistent job store: the coordinator of three rooms.

* ``leadership.py``: the lease and the heartbeats; only the leader fires jobs.
* ``bus.py``: notifications between the workers sharing the store.
* ``sync.py``: the job records to and from the store, and the claim of each fire.

Every worker runs an AsyncIOScheduler on the shared store, started paused; the leader
resumes it. Without coordination the single process is the leader. The coordinator starts
and stops the rooms, hands what their threads learn to the event loop, and is what the
manager calls; it talks to the registry, the ledger and the scheduler through their public
names only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Union

from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

from ..clock import utcnow
from ..config import SchedulerConfig
from ..errors import SchedulerError
from ..jobs import JobRecord, RunRecord
from ..ledger import RunLedger
from ..registry import JobRegistry
from .bus import Bus
from .fires import fire_time, fire_token
from .leadership import Leadership, running_here
from .mirror import MirrorJobStore
from .records import MissingFunction
from .state import StateBackend, open_state
from .sync import Loaded, StoreSync
from .urls import StoreURL
from .writer import Writer

#: A fire's claim, as the executor is given it: known already, or a future.
Claimed = Union[bool, "asyncio.Future[bool]"]

if TYPE_CHECKING:
    from apscheduler.job import Job

    from ..scheduler import AdapterScheduler

logger = logging.getLogger("nexios_contrib_scheduler")

#: Longest a stopping leader waits for its last writes (the claims it gives back among
#: them) before it gives back the lease.
GIVE_BACK_WAIT = 5.0
#: Longest start() waits for its listening thread to hear messages before it reads.
LISTEN_WAIT = 2.0
#: How long a message may take to come (SQLite's are polled four times a second): a
#: count read longer ago and not announced since means a message was lost.
MESSAGE_GRACE = 2.0
_APPLIED = object()  # what a reload's applying gives once merged

#: With at least this many jobs once started, ``start()`` runs one full garbage collection.
COLLECT_AFTER_LOADING = 1000


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Persistence:
    """What a scheduler does differently with a persistent job store.

    ``schedule(record, now)`` anchors a record's trigger and hands it to APScheduler;
    ``run_now(job_id)`` starts a run at once (on the leader, asked by another worker). The
    APScheduler scheduler is given with ``attach``, once built on ``jobstore``.
    """

    def __init__(
        self,
        config: SchedulerConfig,
        registry: JobRegistry,
        ledger: RunLedger,
        jobstore: StoreURL,
        *,
        schedule: Callable[[JobRecord, datetime], None],
        run_now: Callable[[str], bool],
        adopt: Callable[[JobRecord, datetime, str, bool], bool] | None = None,
    ) -> None:
        self.registry = registry
        self.schedule = schedule
        self.run_now = run_now
        #: ``adopt(record, scheduled, worker, counted)``: follow a fire a stopped worker
        #: claimed for a job run by a remote engine; False if this worker cannot.
        self.adopt = adopt
        self.jobstore_url = jobstore
        self.namespace: str = config.namespace
        self.lease_seconds = float(config.lease_seconds)
        self.worker_id = new_worker_id()
        self.state: StateBackend = open_state(jobstore, self.namespace)
        #: APScheduler's job store on the persistent store (used off the event loop only).
        self.store: Any = self.state.make_jobstore()
        self.writer = Writer(self)
        #: The job store APScheduler is given: the jobs in memory, written through the writer.
        self.jobstore = MirrorJobStore(self.store, self.writer)
        self._scheduler: AdapterScheduler | None = None
        self._leading = False
        self._started = False  # start() done, close() not yet
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._threads: list[threading.Thread] = []
        self._failing: set[str] = set()
        self.declared_ids: set[str] = set()  # jobs declared in code before a start
        self.store_resets: list[dict[str, Any]] = []  # since the last start
        self.leadership = Leadership(self, config.coordination_url)
        # Reloads asked for and not yet done (merged), for the sync thread.
        self._pending = threading.Lock()
        self._reload_all = False
        self._reload_ids: set[str] = set()
        self._settle = False  # with the reload: the leader settles runs cut short
        self._check = False  # reload everything only if a message was missed
        self._lead_next = False  # with the reload: this worker has just become the leader
        # The other workers' counts of their writes (``StateBackend.change_counts``): the
        # greatest up to which this worker heard every one, in their messages or read
        # before a full reload; those heard beyond a gap; and those read at a check
        # greater than heard then (with when they were read).
        self._heard: dict[str, int] = {}  # every count up to it heard
        self._ahead: dict[str, set[int]] = {}  # heard after a count not heard (yet)
        self._unheard: dict[str, tuple[int, float]] = {}  # count, when first read
        self._reconcile = False  # with the reload: the leader re-creates declared jobs
        self.reloads = 0  # reloads applied (tests wait on it)
        # Reloads read and waiting to be applied on the loop, the first being applied.
        self._applies: collections.deque[tuple[Loaded, bool, bool, bool]] = collections.deque()
        self._applying: Iterator[None] | None = None
        # The fencing token this worker's writes of run state carry: its lease's, from the
        # time it leads (None without coordination). Kept after stepping down, so that what
        # its runs still write is refused once a newer leader has written.
        self.fence: int | None = None
        self._fenced_at: int | None = None  # the token a refusal was logged for
        # Claims made by reserve_many, by (job id, fire token), until their fire is submitted.
        self._reserved: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self.bus = Bus(self)
        self.sync = StoreSync(self, registry, ledger, config.history_size)
        self.jobstore.on_write = self.sync.note_write
        self.ledger = ledger

    def attach(self, scheduler: AdapterScheduler) -> None:
        self._scheduler = scheduler

    @property
    def scheduler(self) -> AdapterScheduler:
        if self._scheduler is None:
            raise SchedulerError("persistence is used before a scheduler was attached to it")
        return self._scheduler

    @property
    def coordination_url(self) -> StoreURL | None:
        return self.leadership.coordination_url

    # ------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Started and not closed, on an event loop that is still open."""
        loop = self._loop
        return self._started and not (loop is not None and loop.is_closed())

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def is_leader(self) -> bool:
        """True while this worker fires the jobs."""
        return self._leading and self.running

    async def start(self) -> None:
        if self._started:
            await self._end_orphaned_run()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.worker_id = new_worker_id()
        self.state.writer_id = self.worker_id  # its writes are not news to itself
        self.leadership.open_lease(getattr(self.state, "engine", None))
        await asyncio.to_thread(self._open)
        scheduler = self.scheduler
        scheduler.start(paused=True)
        self._started, self._stopping, self._leading = True, False, False
        self.store_resets = []
        self._applies.clear()  # a reload left half-applied by an earlier stop
        self._applying = None
        declared = self.sync.take_declarations()
        self.declared_ids.update(declared)
        leadership = self.leadership
        leadership.stopped.clear()
        if leadership.coordinated:
            # Listening before the first read: a message sent meanwhile is not lost (the
            # read then takes the counts its sender's messages carry up to then).
            self._spawn(self.bus.listen, "messages")
        try:
            if leadership.coordinated:
                await asyncio.to_thread(self.bus.listening.wait, LISTEN_WAIT)
            held = await asyncio.to_thread(leadership.try_take)  # a failure is retried later
            leadership.holding = held
            # Read off the loop: every job, and what a leader settles and reconciles with.
            loaded = await asyncio.to_thread(self._read, None, held, held)
            self.sync.apply(loaded)
        except BaseException:
            self._started = False
            leadership.stopped.set()  # the listening thread ends
            self.sync.give_back(declared)
            scheduler.shutdown()
            raise
        self._spawn(leadership.maintain, "lease and heartbeat")
        self._spawn(self._sync_thread, "store reads")
        self.writer.start(f"nexios-scheduler run state writes {self.worker_id}")
        running_here(self.worker_id, True)
        if held:
            self._leading = True
            self._take_fence()
            self._lead(loaded)
        await self.flush()  # the declared jobs are in the store when start() returns
        if len(self.registry) >= COLLECT_AFTER_LOADING:
            # The jobs just loaded are objects the garbage collector has not examined: its
            # next full collection, the longest pause (it grows with every job held), would
            # come at some moment while the app serves requests. It comes now instead.
            gc.collect()
        logger.info(
            "scheduler worker %s started as %s on %s%s with %d job(s)",
            self.worker_id,
            "leader" if self.is_leader else "standby",
            self.jobstore_url,
            "" if self.coordination_url is None else f", coordinated by {self.coordination_url}",
            len(self.registry),
        )

    def _open(self) -> None:
        try:
            self.state.open()
        except Exception as exc:
            raise SchedulerError(
                f"cannot use the job store {self.jobstore_url}: {type(exc).__name__}: {exc}"
            ) from exc
        self.leadership.open()
        self.leadership.open_epoch()
        counts = self.state.change_counts()  # read before the jobs are loaded
        with self._pending:
            self._heard, self._ahead, self._unheard = {}, {}, {}
        self.heard(counts)

    async def stop(self) -> None:
        """Stop leading and listening (runs in progress still save their results)."""
        if not self.running or self._stopping:
            return
        self._stopping = True
        self._leading = False
        self._give_back_all()
        self.leadership.halt()
        threads, self._threads = self._threads, []
        await asyncio.to_thread(self.leave, threads)

    async def _end_orphaned_run(self) -> None:
        """End the previous start, whose event loop was closed without ``shutdown()``."""
        logger.warning(
            "scheduler worker %s: the event loop it ran on was closed without shutdown(); "
            "stopping it before starting again",
            self.worker_id,
        )
        self._stopping, self._leading = True, False
        self.leadership.halt()
        threads, self._threads = self._threads, []
        await asyncio.to_thread(self.leave, threads)
        await asyncio.to_thread(self.close)

    def leave(self, threads: list[threading.Thread]) -> None:
        """Wait for the threads to end, then give the lease back (saying so)."""
        for thread in threads:
            thread.join(timeout=10)
        # The claims given back are in the store before the next leader can take over.
        self.writer.flush(GIVE_BACK_WAIT)
        try:
            if self.leadership.release():
                self.bus.released()
        except Exception as exc:
            logger.warning("could not release the scheduler lease cleanly: %s", exc)

    async def flush(self, timeout: float = 30.0) -> bool:
        """Wait (off the event loop) until the run state handed to the writer is written;
        False if it was not within ``timeout`` seconds."""
        self.sync.hand_run_state()
        return await asyncio.to_thread(self.writer.flush, timeout)

    def close(self) -> None:
        """After the last run has ended: write what is pending, stop writing, drop the
        connections."""
        self.writer.stop(timeout=10.0)
        running_here(self.worker_id, False)
        self._started = False
        # The heartbeat stays until the runs have ended, so that the next leader does not
        # take them for runs cut short (see StoreSync.settle_interrupted_runs).
        self.attempt("remove the scheduler heartbeat", self.state.leave, self.worker_id)
        self.attempt("close the job store", self.store.shutdown)
        self.state.close()
        self.leadership.close()

    def _spawn(self, target: Any, what: str) -> None:
        thread = threading.Thread(
            target=target, name=f"nexios-scheduler {what} {self.worker_id}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    # ------------------------------------------------------------ reloads, off the loop

    def refresh_soon(
        self,
        job_id: str | None = None,
        *,
        settle: bool = False,
        reconcile: bool = False,
        check: bool = False,
    ) -> None:
        """Reload one job (None: every job) from the store soon, in the sync thread.

        Merged with a reload already asked for and not yet begun, so at most one is pending.
        The store is read off the event loop; what was read is applied on it. ``check``:
        instead of every job, reload every job only if a message was missed (``_missed``:
        a slow fallback for lost messages, nearly free otherwise).
        """
        with self._pending:
            if check:
                self._check = True
            elif job_id is None:
                self._reload_all = True
            else:
                self._reload_ids.add(job_id)
            self._settle |= settle
            self._reconcile |= reconcile
        self.leadership.sync_wanted.set()

    def _sync_thread(self) -> None:
        wanted, stopped = self.leadership.sync_wanted, self.leadership.stopped
        while not stopped.is_set():
            if not wanted.wait(self._recheck_in()):
                with self._pending:  # a count read at a check has had its grace: look again
                    self._check = True
            wanted.clear()
            if stopped.is_set() or not self.running:
                return
            with self._pending:
                everything, ids = self._reload_all, self._reload_ids
                settle, reconcile, check = self._settle, self._reconcile, self._check
                lead = self._lead_next
                self._reload_all, self._reload_ids = False, set()
                if everything and ids:  # read again after the full read: it may predate them
                    self._reload_ids = set(ids)
                    wanted.set()
                self._settle = self._reconcile = self._check = self._lead_next = False
            if check and not everything:
                counts = self.attempt(
                    "read the job store's change counts", self.state.change_counts
                )
                everything = counts is not None and self._missed(counts)
            if not everything and not ids and not settle and not reconcile and not lead:
                continue
            what = None if everything else ids
            if not everything and not ids:
                what = set()
            loaded = self.attempt(
                "reload the jobs from the job store",
                self._read,
                what,
                settle and self.leadership.holding,
                reconcile,
            )
            if loaded is None:  # the store did not answer: the same again, in a second
                with self._pending:
                    self._reload_all |= everything
                    self._reload_ids |= ids
                    self._settle |= settle
                    self._reconcile |= reconcile
                    self._lead_next |= lead  # the new leader fires once it has read the store
                stopped.wait(1.0)
                wanted.set()
                continue
            self.call_soon(self._apply, loaded, settle, reconcile, lead)

    def _read(self, ids: set[str] | None, settle: bool, reconcile: bool) -> Loaded:
        """Off the loop: read the given jobs (None: every job; empty: none), and with
        ``settle`` the workers alive and the fires in flight, with ``reconcile`` the
        removals, for the leader."""
        if ids is None:
            counted = self.state.change_counts()  # read before the jobs
            loaded = self.sync.load(None)
            self.heard(counted)
        elif ids:
            loaded = self.sync.load(ids)
        else:
            loaded = self.sync.nothing_loaded()
        if settle:
            self.leadership.heartbeat()  # the workers alive now, for settling
            loaded.in_flight = self.state.in_flight()
        if reconcile:
            loaded.tombstones = self.state.tombstones()
        return loaded

    def heard(self, counts: dict[str, int]) -> None:
        """Other workers' counts of their writes, read before a full reload (any thread):
        their writes up to them are known here."""
        with self._pending:
            heard = self._heard
            for worker, count in counts.items():
                if count > heard.get(worker, 0):
                    heard[worker] = count
                    self._in_a_row(worker)

    def heard_message(self, worker: str, count: int) -> None:
        """A message from ``worker`` carried ``count`` (any thread): its write ``count`` is
        known here; all of its writes are once every count up to it was heard."""
        with self._pending:
            if count > self._heard.get(worker, 0):
                self._ahead.setdefault(worker, set()).add(count)
                self._in_a_row(worker)

    def _in_a_row(self, worker: str) -> None:
        """Move ``worker``'s known count on over the counts heard ahead of it in a row."""
        later = self._ahead.get(worker)
        if later is None:
            return
        known = self._heard.get(worker, 0)
        later.difference_update([n for n in later if n <= known])
        while known + 1 in later:
            known += 1
            later.discard(known)
        self._heard[worker] = known
        if not later:
            del self._ahead[worker]

    def _recheck_in(self) -> float | None:
        """Seconds until a count read at a check and not heard since has had its grace
        (the sync thread checks again then); None if there is none."""
        with self._pending:
            if not self._unheard:
                return None
            first = min(since for _, since in self._unheard.values())
        return max(0.05, first + MESSAGE_GRACE - time.monotonic() + 0.05)

    def _missed(self, counts: dict[str, int]) -> bool:
        """Whether a message was missed: a worker's count, read at a check at least
        ``MESSAGE_GRACE`` seconds ago, is still greater than any it announced since (the
        sync thread checks again once that time has passed). The slow fallback for
        messages lost on the way."""
        now = time.monotonic()
        with self._pending:
            heard, unheard = self._heard, self._unheard
            for worker in list(unheard):
                if worker not in counts or unheard[worker][0] <= heard.get(worker, 0):
                    del unheard[worker]  # its message came (or its count is gone)
            missed = any(now - since >= MESSAGE_GRACE for _, since in unheard.values())
            if missed:
                unheard.clear()  # every job is reloaded next, with the counts as of then
            else:
                for worker, count in counts.items():
                    if count > heard.get(worker, 0) and worker not in unheard:
                        unheard[worker] = (count, now)
        if missed:
            logger.info("a change made by another scheduler worker went unannounced: reloading")
        return missed

    def _apply(self, loaded: Loaded, settle: bool, reconcile: bool, lead: bool = False) -> None:
        """On the event loop: merge a reload (a slice per turn of the loop, after the
        reloads before it), then settle and reconcile if asked and leading (``lead``: this
        worker has just taken the lease, and starts firing after them)."""
        self._applies.append((loaded, settle, reconcile, lead))
        if len(self._applies) == 1:
            self._apply_slice()

    def _apply_slice(self) -> None:
        if not self._applies:
            return
        loaded, settle, reconcile, lead = self._applies[0]
        if not self.running or self._stopping:
            self._applies.clear()
            self._applying = None
            return
        failed = False
        try:
            if self._applying is None:
                self._applying = self.sync.applying(loaded)
            if next(self._applying, _APPLIED) is not _APPLIED:  # more slices to come
                asyncio.get_running_loop().call_soon(self._apply_slice)
                return
        except Exception:
            logger.exception("could not apply the jobs reloaded from %s", self.jobstore_url)
            failed = True
        self._applying = None
        self._applies.popleft()
        try:
            if not failed:
                self._applied(loaded, settle, reconcile, lead)
        finally:
            self.reloads += 1
            if self._applies:
                asyncio.get_running_loop().call_soon(self._apply_slice)

    def _applied(self, loaded: Loaded, settle: bool, reconcile: bool, lead: bool) -> None:
        """A reload merged: settle and reconcile if asked, or lead; then wake the scheduler."""
        try:
            if lead and self.is_leader:
                self._lead(loaded)
                return
            if settle and self.is_leader and loaded.in_flight is not None:
                self.sync.settle_interrupted_runs(loaded.in_flight)
            if reconcile and self.is_leader and loaded.tombstones is not None:
                self.sync.reconcile_declarations(loaded.tombstones, self.sync.present(loaded))
        except Exception:
            logger.exception("could not apply the jobs reloaded from %s", self.jobstore_url)
            return
        self.wake_scheduler()

    def call_soon(self, callback: Any, *args: Any) -> None:
        """Run ``callback(*args)`` on the event loop (from any thread); dropped once closed."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

    def attempt(self, what: str, action: Any, *args: Any) -> Any:
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

    # ------------------------------------------------------------ leading

    def become_leader(self) -> None:
        """This worker has just taken the lease (on the loop): it reads the store off the
        loop, settles what stopped workers left and reconciles the declared jobs, then fires
        (``_lead``)."""
        if not self.running or self._stopping or self.is_leader:
            return
        self._leading = True
        self._take_fence()
        with self._pending:
            self._lead_next = True
        self.refresh_soon(settle=True, reconcile=True)

    def _take_fence(self) -> None:
        """From now on, this worker's writes of run state carry its lease's token (and its
        next settling looks for runs the workers before it left cut short)."""
        self.fence = self.leadership.token
        self.sync.leading()

    def _lead(self, loaded: Loaded) -> None:
        """On the loop, with the store as read just now: settle, reconcile, fire."""
        try:
            if loaded.in_flight is not None:
                self.sync.settle_interrupted_runs(loaded.in_flight)
            if loaded.tombstones is not None:  # read with the jobs: a lead reconciles
                self.sync.reconcile_declarations(loaded.tombstones, self.sync.present(loaded))
        except Exception:
            logger.exception("could not reconcile the declared jobs with the job store")
        scheduler = self.scheduler
        if scheduler.state == STATE_PAUSED:
            scheduler.resume()
        if self.leadership.coordinated:
            logger.info("scheduler worker %s is now the leader", self.worker_id)

    def step_down(self) -> None:
        if not self.is_leader:
            return
        self._leading = False
        scheduler = self.scheduler
        if scheduler.state == STATE_RUNNING:
            scheduler.pause()
        self._run_claimed_ahead()
        if not self._stopping:
            logger.warning(
                "scheduler worker %s lost the lease: standing by, runs in progress go on",
                self.worker_id,
            )

    def fenced(self, error: Exception) -> None:
        """The store refused a write of run state: a newer leader has written. This worker
        lost the lease (it may not know yet): it stands by, and writes no more run state."""
        if self._fenced_at != self.fence:
            self._fenced_at = self.fence
            logger.warning(
                "scheduler worker %s: %s; it stands by (runs in progress go on, and their "
                "outcomes are sent to the leader)",
                self.worker_id,
                error,
            )
        self.leadership.holding = False
        self.leadership.wake.set()
        if threading.get_ident() == self._loop_thread:
            self.step_down()
        else:
            self.call_soon(self.step_down)

    def resync(self) -> None:
        """The slow fallback of a coordinated worker: reload every job (off the loop) if the
        store changed since the last full reload; the leader also settles the fires of
        workers that stopped, then looks for due jobs."""
        if self.running and not self._stopping:
            self.refresh_soon(settle=True, check=True)

    def store_reset(self, old: str | None, new: str, known: list[str]) -> None:
        """The store lost its data (its epoch marker changed or went) while this worker ran.

        Said at ERROR, once per reset: the declared jobs are re-created (by the leader; a
        standby drops what the store lost), the jobs added at run time are gone and named.
        They are not re-created from this worker's view: another worker may have removed
        or changed them, and bringing back a job someone removed is worse than saying one
        is lost (the app or an operator adds it again).
        """
        lost = [job_id for job_id in known if job_id not in self.declared_ids]
        logger.error(
            "the job store at %s lost its data (epoch %s → %s): declared jobs are re-created; "
            "%d job(s) added at runtime are lost%s",
            self.jobstore_url,
            old,
            new,
            len(lost),
            ": ids " + ", ".join(lost) if lost else "",
        )
        self.store_resets.append(
            {"at": utcnow().isoformat(), "epoch": new, "previous_epoch": old, "lost_jobs": lost}
        )
        del self.store_resets[:-10]
        if self.running and not self._stopping:
            self.refresh_soon(reconcile=True)

    def wake_scheduler(self) -> None:
        """Look for due jobs now, if this worker fires them (another worker changed one)."""
        if self.is_leader:
            self.scheduler.wakeup()

    # ------------------------------------------------------------ for the manager

    def prepare_add(self, record: JobRecord, explicit_id: bool) -> None:
        """Checks for ``add_job``: the job must be storable; a declared job needs an id."""
        self.sync.prepare_add(record, explicit_id)

    def on_submit(self, job: Job, run_times: Sequence[datetime]) -> JobRecord | None:
        """Before a submission: find the record and count fires merged by ``coalesce``."""
        return self.sync.on_submit(job, run_times)

    # ------------------------------------------------------------ the fire book (executor)

    def claims_unwritten(self) -> bool:
        """Whether claims handed to the writer are still to be written."""
        return self.writer.claims_unwritten()

    def runs_waiting(self) -> int:
        """How many fires handed to the writer to be claimed have runs still to start."""
        return self.writer.runs_waiting()

    def reserve_many(self, fires: Sequence[tuple[str, Sequence[datetime]]]) -> None:
        """In a scheduling pass, before a slice of due jobs is submitted: claim all their
        fires (job id, run times), handed to the writer, which writes them together.
        ``reserve`` hands each claim over as its fire is submitted; one never submitted
        (``max_instances`` reached) is ended by ``ended``, as it is recorded skipped."""
        if self._stopping or not self.is_leader:
            return  # each fire is then claimed as it is submitted, if it is
        reserved, registry = self._reserved, self.registry
        wanted: dict[tuple[str, str], None] = {}
        for job_id, run_times in fires:
            record = registry.get(job_id)
            if record is None or isinstance(record.func, MissingFunction):
                continue  # ``reserve`` handles it
            for scheduled in run_times:
                key = (job_id, fire_token(scheduled))
                if key not in reserved:
                    wanted[key] = None
        keys = list(wanted)
        reserved.update(zip(keys, self.writer.claim_many(keys), strict=True))

    def reserve(self, record: JobRecord, run_times: Sequence[datetime]) -> list[Claimed]:
        """The claim of each fire as it is submitted, before the pass moves the job on: a
        future the run waits on (made by ``reserve_many`` when it was called for it)."""
        reserved = self._reserved
        claims: list[Claimed] = []
        for scheduled in run_times:
            token = fire_token(scheduled)
            reserved_claim = reserved.pop((record.id, token), None)
            if reserved_claim is None:
                claims.append(self.sync.claim(record, scheduled))
            else:
                claims.append(reserved_claim)
        return claims

    def started(self, record: JobRecord, scheduled: datetime) -> None:
        self.sync.start_fire(record.id, fire_token(scheduled))

    def ended(self, record: JobRecord, scheduled: datetime, run: RunRecord | None) -> None:
        token = fire_token(scheduled)
        claim = self._reserved.pop((record.id, token), None)
        if claim is not None:  # a fire never submitted: it is ended if it was claimed here
            claim.add_done_callback(functools.partial(self._end_if_claimed, record.id, token))
            return
        self.sync.end_fire(record.id, token, run)

    def _end_if_claimed(self, job_id: str, token: str, claim: asyncio.Future[bool]) -> None:
        if not claim.cancelled() and claim.exception() is None and claim.result():
            self.writer.end_fire(job_id, token, None)

    # ------------------------------------------------------------ claims made ahead

    def give_back_unused(self) -> None:
        """After a pass: give back the claims made ahead (``claim_ahead``) of fires that are
        due and were not submitted, because their job was paused, changed or removed before
        they came; a later fire at the same time (a job resumed) can then be claimed again.
        A fire not yet due, or due and not yet submitted, keeps its claim."""
        reserved = self._reserved
        if not reserved:
            return
        now = utcnow().timestamp()
        lookup = self.jobstore.lookup_job
        unused: list[tuple[str, str]] = []
        for key in reserved:
            job_id, token = key
            at = fire_time(token).timestamp()
            if at > now:
                continue
            job = lookup(job_id)
            following = None if job is None else job.next_run_time
            if following is None or following.timestamp() > at:
                unused.append(key)
        for key in unused:
            self._give_back(key, reserved.pop(key))

    def _give_back_all(self) -> None:
        """Stopping: give back every claim made ahead and not used (under the lease, before
        it is released, so that the next leader runs those fires)."""
        reserved, self._reserved = self._reserved, {}
        for key, claim in reserved.items():
            self._give_back(key, claim)

    def _give_back(self, key: tuple[str, str], claim: asyncio.Future[bool]) -> None:
        if claim.done():
            self._release_if_claimed(key, claim)
        else:
            claim.add_done_callback(functools.partial(self._release_if_claimed, key))

    def _release_if_claimed(self, key: tuple[str, str], claim: asyncio.Future[bool]) -> None:
        if not claim.cancelled() and claim.exception() is None and claim.result():
            self.writer.release(*key)

    def _run_claimed_ahead(self) -> None:
        """This worker lost the lease: the fires it claimed ahead are its own to run (no
        other worker can claim them), so it runs each when it is due, as a run it started
        while it led; a new leader skips them, as claimed."""
        if not self._reserved:
            return
        loop = asyncio.get_running_loop()
        now = time.time()
        for key in list(self._reserved):
            delay = max(0.0, fire_time(key[1]).timestamp() - now)
            loop.call_later(delay, self._run_left, key)

    def _run_left(self, key: tuple[str, str]) -> None:
        claim = self._reserved.get(key)
        if claim is None or self.is_leader:
            return  # used or given back meanwhile, or leading again: the pass runs it
        job_id, token = key
        job = self.jobstore.lookup_job(job_id)
        if job is None or not self.running or self._stopping:
            self._give_back(key, self._reserved.pop(key))
            return
        scheduled = fire_time(token)
        logger.info(
            "job %s fire at %s: claimed ahead while this worker led; run here",
            job_id,
            scheduled.isoformat(),
        )
        try:
            self.scheduler.submit_fire(job, scheduled)
        except Exception as exc:
            logger.warning(
                "job %s fire at %s, claimed ahead while this worker led, not run: %s",
                job_id,
                scheduled.isoformat(),
                exc,
            )
            if key in self._reserved:
                self._give_back(key, self._reserved.pop(key))

    def record_outcome(
        self, job_id: str, token: str, run: RunRecord, counted: bool, worker: str
    ) -> None:
        """On the leader: record the outcome of a run another worker started while it led and
        ended after it lost the lease (it reported it, as it can write nothing)."""
        if not self.is_leader:
            return
        record = self.registry.get(job_id)
        if record is None:
            return
        if not self.sync.forget_fire(job_id, token):
            logger.warning(
                "job %r (%s): worker %s reports its run for %s ended (%s), after it was "
                "recorded as cut short",
                record.name,
                job_id,
                worker,
                run.scheduled_time,
                run.outcome,
            )
            return
        if not counted:
            record.total_run_count += 1
            record.last_run_time = run.start
        self.ledger.ran_elsewhere(record, run, worker)
        self.writer.end_fire(job_id, token, None)

    def request_run(self, job_id: str) -> bool:
        """Ask the leader to run a job now; False if the job is unknown or finished (as
        this worker's view shows it). A job this worker declared in code is known even
        before the leader's write of it has reached this worker's view."""
        record = self.registry.get(job_id) or self.sync.declared(job_id)
        if record is None or record.finished:
            return False
        self.bus.request_run(job_id, record.name)
        return True

    def status(self) -> dict[str, Any]:
        leadership = self.leadership
        leader = self.worker_id if self.is_leader else leadership.leader
        if leader == self.worker_id and not self.is_leader:
            leader = None
        return {
            "worker_id": self.worker_id,
            "role": "leader" if self.is_leader else "standby" if self.running else "stopped",
            "is_leader": self.is_leader,
            "leader": leader,
            "jobstore": str(self.jobstore_url),
            "coordination": None if self.coordination_url is None else str(self.coordination_url),
            "lease_seconds": self.lease_seconds,
            "workers": [dict(w) for w in leadership.workers],
            "clock_skew_seconds": leadership.clock_skew,
            "store_resets": [dict(r, lost_jobs=list(r["lost_jobs"])) for r in self.store_resets],
            "problems": self.problems(),
        }

    def problems(self) -> list[str]:
        """What makes this worker degraded: a clock off the store's, a store that lost data."""
        found = [f"the job store lost its data at {r['at']}" for r in self.store_resets]
        skew = self.leadership.skew_problem()
        return found if skew is None else [skew, *found]
