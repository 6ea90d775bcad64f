"""The writer: every write of one worker to the store, in batches, off the event loop.

Nothing the event loop does waits for the store. A job operation changes the worker's view
(the registry and the in-memory job store, ``mirror.py``) at once and hands the write to one
thread; so do the scheduling pass (its claims and the jobs it moves on) and the runs (their
start and end, the run ledger's changes). The thread lets writes gather for
``GATHER_SECONDS``, merges what piles up (the changes of one job become one write; a job
added then removed is removed) and writes the batch in a few transactions (pipelines on
Redis), in this order:

1. job operations: the adapter's state of each job created, changed or removed, and the
   jobs' schedules put or deleted (not fenced: any worker may change a job);
2. the pass's moves: each job moved on only if its stored schedule is the one this worker
   last read or wrote (a job changed by another worker meanwhile keeps that change), fenced,
   once the claims handed over before them are written;
3. run state: the fires started and ended, the ledger's changes, fenced;
4. fires given back: claims (made ahead of their fires) this worker will not use, deleted
   if they are still its own and their runs have not started (not fenced).

The claims of fires go their own way, in a second thread, so that a run waits for its
claim only (``claim`` hands back a future), not for the moves and run state before it:
each batch of claims is one fenced statement (one script on Redis). The runs come first: a
batch waits (up to ``RUNS_FIRST_WAIT``) until the runs of the claims answered before it
have started, and the answers reach the loop in slices, so that a burst of due jobs starts
without sharing the interpreter with the writes that record it.

Then it tells the other workers which jobs changed, and sends the messages handed over
with the batch (a standby's request that the leader run a job now). A step that fails is kept and tried
again (after 0.5 s, then up to 5 s apart), merged with what came since; a step that was
written is not written again. ``flush`` waits until everything handed over is written
(``await manager.flush()``; shutdown does). A step the store refuses because a newer leader
raised the fence is dropped: this worker lost the lease; its claims are refused (those
fires are the new leader's), and the outcome of each run it ended is sent to the leader,
which records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..jobs import RunRecord
from ..pacing import Pacer
from .fires import fire_time
from .state import FencedError, Message

if TYPE_CHECKING:
    from .persistence import Persistence

logger = logging.getLogger("nexios_contrib_scheduler")

RETRY_FIRST = 0.5
RETRY_MAX = 5.0
#: How long the thread lets writes gather after the first one before it writes (the bound
#: on how late a write reaches the store, beside the write itself).
GATHER_SECONDS = 0.01
#: Longest the moves wait for the claims before them, before they are tried again later.
CLAIMS_WAIT = 1.0
#: Longest a batch waits for the runs of the claims answered before it to start (the runs
#: come first: a batch written meanwhile would hold the interpreter's lock for long spells).
RUNS_FIRST_WAIT = 0.5
#: Longest the thread waits for a ``gathering()`` block to end before it writes anyway.
HOLD_MAX = 1.0
#: Most claims answered in one turn of the event loop (their runs start in the next turn);
#: fewer when their runs cost more than ``pacing.TURN_BUDGET`` (``Writer.answer_pacer``).
ANSWER_SLICE = 100

#: A job's schedule as APScheduler stores it: its next run as a UTC timestamp (None:
#: paused) and its pickled state.
Schedule = tuple[float | None, bytes]
#: A pass's move of a job: the stored state expected, then the new schedule (None: the job
#: has no fire left and leaves the store).
Move = tuple[bytes | None, Schedule | None]
#: A claim of a fire (job id, fire token) and the future its run waits on.
Claim = tuple[str, str, "asyncio.Future[bool]"]


@dataclass
class Batch:
    """Writes waiting to be made, merged per job."""

    creates: dict[str, dict[str, bytes]] = field(default_factory=dict)
    changes: dict[str, dict[str, bytes]] = field(default_factory=dict)
    deletes: dict[str, float] = field(default_factory=dict)
    puts: dict[str, Schedule] = field(default_factory=dict)
    unschedules: set[str] = field(default_factory=set)
    moves: dict[str, Move] = field(default_factory=dict)
    claims_upto: int = 0  # the moves wait until this many claims are written
    updates: dict[str, dict[str, bytes]] = field(default_factory=dict)
    started: list[tuple[str, str]] = field(default_factory=list)
    ended: list[tuple[str, str, RunRecord | None]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)  # sent after the writes
    released: list[tuple[str, str]] = field(default_factory=list)  # fires given back

    def __bool__(self) -> bool:
        return bool(
            self.has_ops() or self.moves or self.has_run_state() or self.messages or self.released
        )

    def has_ops(self) -> bool:
        return bool(self.creates or self.changes or self.deletes or self.puts or self.unschedules)

    def has_run_state(self) -> bool:
        return bool(self.updates or self.started or self.ended)

    # Each of these merges one write into the batch, after what it holds.

    def create(self, job_id: str, fields: dict[str, bytes]) -> None:
        self.deletes.pop(job_id, None)
        self.changes.pop(job_id, None)
        self.updates.pop(job_id, None)
        self.creates[job_id] = dict(fields)

    def change(self, job_id: str, fields: dict[str, bytes], run_state: bool) -> None:
        created = self.creates.get(job_id)
        if created is not None:
            created.update(fields)
            return
        mine, other = (self.updates, self.changes) if run_state else (self.changes, self.updates)
        mine.setdefault(job_id, {}).update(fields)
        theirs = other.get(job_id)
        if theirs is not None:
            for name in fields:
                theirs.pop(name, None)
            if not theirs:
                del other[job_id]

    def delete(self, job_id: str, removed_at: float) -> None:
        self.creates.pop(job_id, None)
        self.changes.pop(job_id, None)
        self.updates.pop(job_id, None)
        self.deletes[job_id] = removed_at

    def put(self, job_id: str, schedule: Schedule) -> None:
        self.unschedules.discard(job_id)
        self.moves.pop(job_id, None)
        self.puts[job_id] = schedule

    def unschedule(self, job_id: str) -> None:
        self.puts.pop(job_id, None)
        self.moves.pop(job_id, None)
        self.unschedules.add(job_id)

    def move(self, job_id: str, expected: bytes | None, schedule: Schedule | None) -> None:
        if expected is None or job_id in self.puts or job_id in self.unschedules:
            # Over a write of this worker's not made yet (or with nothing to compare with):
            # it replaces it, as it would have followed it.
            if schedule is None:
                self.unschedule(job_id)
            else:
                self.put(job_id, schedule)
            return
        earlier = self.moves.get(job_id)
        self.moves[job_id] = (expected if earlier is None else earlier[0], schedule)

    def merge_newer(self, newer: Batch) -> None:
        """Add ``newer`` (handed over after this batch) on top of this one."""
        for job_id, at in newer.deletes.items():
            self.delete(job_id, at)
        for job_id, fields in newer.creates.items():
            self.create(job_id, fields)
        for job_id, fields in newer.changes.items():
            self.change(job_id, fields, False)
        for job_id, fields in newer.updates.items():
            self.change(job_id, fields, True)
        for job_id in newer.unschedules:
            self.unschedule(job_id)
        for job_id, schedule in newer.puts.items():
            self.put(job_id, schedule)
        for job_id, (expected, moved) in newer.moves.items():
            self.move(job_id, expected, moved)
        self.claims_upto = max(self.claims_upto, newer.claims_upto)
        self.started += newer.started
        self.ended += newer.ended
        self.messages += newer.messages
        self.released += newer.released


@dataclass
class _Answers:
    """A batch of claims written (or not) and what the store answered, answered on the loop
    a slice at a time; ``next``: the first claim not answered yet."""

    claims: list[Claim]
    answers: list[bool] | None  # None: not written (``failed`` says why)
    failed: str | None
    fenced: bool
    next: int = 0


class Writer:
    """One thread that makes one worker's writes to the store, in batches."""

    def __init__(self, owner: Persistence) -> None:
        self.owner = owner
        self._lock = threading.Condition()
        self._pending = Batch()
        self._holds = 0  # ``gathering()`` blocks under way
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._refused_starts: set[tuple[str, str]] = set()
        self._handed = 0  # items handed over so far
        self._done = 0  # of them, written or dropped (they are taken in order)
        self.batches = 0  # batches written (tests and the benchmark read it)
        # The claims' lane: its own thread, list and counts (under its own condition).
        self._claim_lock = threading.Condition()
        self._claims: list[Claim] = []
        self._claims_handed = 0
        self._claims_done = 0
        self._claims_started = 0  # of them, answered on the loop, their runs under way
        #: Sizes the slices of claims answered per turn of the loop (on the loop only).
        self.answer_pacer = Pacer()
        self._to_answer: deque[_Answers] = deque()  # on the loop only
        self._answering = False  # a slice of answers is due in the loop's next turn
        # Fires whose claim was sent and got no answer (the write may have landed): when
        # tried again, the store takes this worker's own earlier claim as the claim.
        self._unanswered: set[tuple[str, str]] = set()
        self._claim_thread: threading.Thread | None = None

    # ------------------------------------------------------------ from the event loop

    def _hand(self, merge: Callable[[Batch], None]) -> None:
        with self._lock:
            merge(self._pending)
            self._handed += 1
            self._lock.notify()

    def create(self, job_id: str, fields: dict[str, bytes]) -> None:
        """The adapter's state of a new job (replacing any stored under its id)."""
        self._hand(lambda batch: batch.create(job_id, fields))

    def change(self, job_id: str, fields: dict[str, bytes]) -> None:
        """Fields of a job's state changed by a job operation (not fenced)."""
        self._hand(lambda batch: batch.change(job_id, fields, False))

    def update(self, job_id: str, fields: dict[str, bytes], started: Sequence[str] = ()) -> None:
        """Fields of a job's state changed by a run (run state: fenced), with the starts of
        its fires (tokens) that it counts: they are written together or not at all."""

        def merge(batch: Batch) -> None:
            batch.change(job_id, fields, True)
            batch.started.extend((job_id, token) for token in started)

        self._hand(merge)

    def delete(self, job_id: str, removed_at: float) -> None:
        """A job removed (its state, its fires in flight; its removal noted)."""
        self._hand(lambda batch: batch.delete(job_id, removed_at))

    def put_schedule(self, job_id: str, schedule: Schedule) -> None:
        """A job's schedule added or replaced in APScheduler's table."""
        self._hand(lambda batch: batch.put(job_id, schedule))

    def delete_schedule(self, job_id: str) -> None:
        """A job's schedule taken out of APScheduler's table."""
        self._hand(lambda batch: batch.unschedule(job_id))

    def move(self, job_id: str, expected: bytes | None, schedule: Schedule | None) -> None:
        """A scheduling pass moved a job on (``schedule``; None: it has no fire left); it is
        written after the claims handed over before it."""
        upto = self._claims_handed

        def merge(batch: Batch) -> None:
            batch.move(job_id, expected, schedule)
            batch.claims_upto = max(batch.claims_upto, upto)

        self._hand(merge)

    def claim(self, job_id: str, token: str) -> asyncio.Future[bool]:
        """Claim a fire (on the event loop); the future says whether this worker runs it."""
        return self.claim_many([(job_id, token)])[0]

    def claim_many(self, fires: Sequence[tuple[str, str]]) -> list[asyncio.Future[bool]]:
        """Claim fires (job id, fire token) together (on the event loop): one hand-over for
        a pass's slice. Each future says whether this worker runs its fire."""
        loop = asyncio.get_running_loop()
        claims: list[Claim] = [(job_id, token, loop.create_future()) for job_id, token in fires]
        if claims:
            with self._claim_lock:
                self._claims.extend(claims)
                self._claims_handed += len(claims)
                # All: the writer's thread may be waiting on this condition too (for runs
                # to start), and a single wake-up could go to it instead of the claims'.
                self._claim_lock.notify_all()
        return [future for _, _, future in claims]

    def publish(self, message: Message) -> None:
        """A message for the other workers, sent after the writes handed over before it
        (a job added and then asked to run reaches the leader in that order)."""
        self._hand(lambda batch: batch.messages.append(message))

    def release(self, job_id: str, token: str) -> None:
        """Give back a fire this worker claimed and will not run (not fenced)."""
        self._hand(lambda batch: batch.released.append((job_id, token)))

    def start_fire(self, job_id: str, token: str) -> None:
        self._hand(lambda batch: batch.started.append((job_id, token)))

    def end_fire(self, job_id: str, token: str, run: RunRecord | None) -> None:
        self._hand(lambda batch: batch.ended.append((job_id, token, run)))

    def flush(self, timeout: float) -> bool:
        """Wait until everything handed over so far is written (or dropped: refused by the
        fence); False if it was not within ``timeout`` seconds. What is handed over
        meanwhile is not waited for."""
        deadline = time.monotonic() + timeout
        if not self._claims_written(self._claims_handed, deadline):
            return False
        with self._lock:
            target = self._handed
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return self._done >= target
                self._lock.wait(min(left, 0.1))
        return True

    def _claims_written(self, target: int, deadline: float) -> bool:
        """Wait until ``target`` claims are written (or answered); False at ``deadline``."""
        with self._claim_lock:
            while self._claims_done < target:
                left = deadline - time.monotonic()
                thread = self._claim_thread
                if left <= 0 or thread is None or not thread.is_alive():
                    return self._claims_done >= target
                self._claim_lock.wait(min(left, 0.1))
        return True

    # ------------------------------------------------------------ the thread

    @contextlib.contextmanager
    def gathering(self) -> Iterator[None]:
        """What is handed over inside the block is written together: the thread does not
        take a batch until the block ends (or ``HOLD_MAX`` seconds have passed), however
        long handing it over takes (the jobs declared at start-up, on a loaded machine)."""
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                self._lock.notify_all()

    def start(self, name: str) -> None:
        # Answers queued on a loop that has gone (a stop, then a start on a new loop): their
        # runs went with it.
        self._to_answer.clear()
        self._answering = False
        with self._claim_lock:
            self._claims_started = self._claims_handed  # no run of the old loop is to start
        with self._lock:
            self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._claim_thread = threading.Thread(
            target=self._run_claims, name=f"{name} (claims)", daemon=True
        )
        self._claim_thread.start()

    def stop(self, timeout: float) -> None:
        """Write what is pending (up to ``timeout`` seconds), then end the thread. Claims
        that could not be written are answered: not claimed."""
        self.flush(timeout)
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        with self._claim_lock:
            self._claim_lock.notify_all()
        for thread in (self._thread, self._claim_thread):
            if thread is not None:
                thread.join(timeout=1.0)
        self._thread = self._claim_thread = None
        with self._lock:
            self._pending = Batch()
        with self._claim_lock:
            left, self._claims = self._claims, []
            self._claims_done += len(left)
        if left:
            self._answer(left, None, "the scheduler stopped before it could claim it")

    def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            with self._lock:
                while not self._pending and not self._stopped:
                    self._lock.wait()
                if not self._pending and self._stopped:
                    return
                if not self._stopped:
                    self._lock.wait(GATHER_SECONDS)  # let what comes with it gather
                    held_until = time.monotonic() + HOLD_MAX
                    while self._holds and not self._stopped:  # ``gathering()``
                        left = held_until - time.monotonic()
                        if left <= 0:
                            break
                        self._lock.wait(left)
                batch, self._pending = self._pending, Batch()
                upto = self._handed
            self._let_runs_start()
            retry = self._write(batch)
            with self._lock:
                if retry:
                    batch.merge_newer(self._pending)
                    self._pending = batch
                else:
                    self._done = max(self._done, upto)
                self._lock.notify_all()
                if retry and self._stopped:
                    return  # stopping, and the store does not answer: give up
            if retry:
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            else:
                delay = RETRY_FIRST

    def _let_runs_start(self) -> None:
        """Wait (up to ``RUNS_FIRST_WAIT``) until the runs of the claims handed over so far
        have started: a burst of due jobs starts before its moves and run state are
        written, instead of sharing the interpreter with those writes."""
        deadline = time.monotonic() + RUNS_FIRST_WAIT
        with self._claim_lock:
            target = self._claims_handed
            while self._claims_started < target and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._claim_lock.wait(left)

    def claims_unwritten(self) -> bool:
        """Whether claims handed over are still to be written (or answered)."""
        return self._claims_done < self._claims_handed

    def runs_waiting(self) -> int:
        """How many fires handed over to be claimed have runs still to start."""
        with self._claim_lock:
            return self._claims_handed - self._claims_started

    def _runs_started(self, count: int) -> None:
        """On the loop, a turn after ``count`` claims were answered: their runs are under way."""
        with self._claim_lock:
            self._claims_started += count
            self._claim_lock.notify_all()

    def _write(self, batch: Batch) -> bool:
        """Write one batch, step by step; True if what is left of it should be tried again
        (each step written is emptied from it)."""
        owner = self.owner
        what = "write to the job store"
        try:
            if batch.has_ops():
                self._write_ops(batch)
            if batch.moves:
                if not self._claims_written(batch.claims_upto, time.monotonic() + CLAIMS_WAIT):
                    return True  # the claims before these moves are not written yet
                self._write_moves(batch)
            if batch.has_run_state():
                self._write_run_state(batch)
            if batch.released:
                owner.state.release_fires(batch.released, owner.worker_id)
                batch.released = []
            while batch.messages:
                owner.state.publish(batch.messages[0])
                del batch.messages[0]
        except Exception as exc:
            owner.attempt(what, _raise, exc)
            return True
        owner.attempt(what, _ok)
        self.batches += 1
        return False

    def _write_ops(self, batch: Batch) -> None:
        owner = self.owner
        puts, unschedules = batch.puts, batch.unschedules

        def schedules(transaction: object) -> None:
            owner.store.write_schedules(puts, unschedules, into=transaction)

        owner.state.write_ops(batch.creates, batch.changes, batch.deletes, also=schedules)
        removed = sorted(batch.deletes)
        changed = {*batch.creates, *batch.changes, *batch.puts, *batch.unschedules}
        batch.creates, batch.changes, batch.deletes = {}, {}, {}
        batch.puts, batch.unschedules = {}, set()
        owner.bus.announce_many("changed", sorted(changed.difference(removed)))
        owner.bus.announce_many("removed", removed)

    def _run_claims(self) -> None:
        """The claims' thread: each batch of claims in one write, answered at once."""
        delay = RETRY_FIRST
        while True:
            with self._claim_lock:
                while not self._claims and not self._stopped:
                    self._claim_lock.wait()
                if not self._claims:
                    return
                # No wait for more to gather: the runs wait for these. Those handed over
                # while this batch is written make the next one.
                claims, self._claims = self._claims, []
            try:
                self._write_claims(claims)
            except Exception as exc:
                self.owner.attempt("write to the job store", _raise, exc)
                self._unanswered.update((job_id, token) for job_id, token, _ in claims)
                with self._claim_lock:
                    self._claims[:0] = claims  # before what came since
                    if self._stopped:
                        return  # stopping, and the store does not answer: stop() answers
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            with self._claim_lock:
                self._claims_done += len(claims)
                self._claim_lock.notify_all()

    def _write_claims(self, claims: list[Claim]) -> None:
        owner = self.owner
        fires = [(j, t) for j, t, _ in claims]
        unanswered = self._unanswered
        retried = [fire for fire in fires if fire in unanswered] if unanswered else []
        try:
            answers = owner.state.claim_many(fires, owner.worker_id, owner.fence, retried)
        except FencedError as exc:
            unanswered.difference_update(retried)
            owner.fenced(exc)
            self._answer(claims, [False] * len(claims), None, fenced=True)
            logger.info("%d fire(s) left to the new leader", len(claims))
            return
        unanswered.difference_update(retried)
        self._answer(claims, answers, None)

    def _answer(
        self,
        claims: list[Claim],
        answers: list[bool] | None,
        failed: str | None,
        fenced: bool = False,
    ) -> None:
        """Answer the claims' futures on the event loop (from any thread), after those
        answered before them."""
        self.owner.call_soon(self._queue_answers, _Answers(claims, answers, failed, fenced))

    def _queue_answers(self, answers: _Answers) -> None:
        self._to_answer.append(answers)
        if not self._answering:
            self._answering = True
            self._settle(False)

    def _settle(self, continuing: bool) -> None:
        """One slice of the queued answers (at most ``ANSWER_SLICE``, fewer when their runs
        cost the loop more than ``TURN_BUDGET``; ``continuing``: the slice before was one
        turn ago): the runs of one slice take their first steps before the next slice is
        answered, so that a burst of claims, however many batches it was written in, does
        not start thousands of runs in one turn of the loop."""
        pacer, queue = self.answer_pacer, self._to_answer
        loop = asyncio.get_running_loop()
        room = pacer.next_size(continuing, ANSWER_SLICE)
        done = 0
        try:
            while queue and done < room:
                batch = queue[0]
                end = min(batch.next + room - done, len(batch.claims))
                while batch.next < end:
                    index = batch.next
                    batch.next += 1  # past it even if answering it raises
                    done += 1
                    _answer_one(batch, index)
                if batch.next == len(batch.claims):
                    queue.popleft()
                    # After the runs this batch woke.
                    loop.call_soon(self._runs_started, len(batch.claims))
        finally:
            # Whatever happened, the queue goes on being served (or is marked idle).
            pacer.took(done)
            if queue:
                loop.call_soon(self._settle, True)  # after the runs this slice woke
            else:
                self._answering = False

    def _write_moves(self, batch: Batch) -> None:
        owner = self.owner
        moves, batch.moves = batch.moves, {}
        try:
            kept = owner.store.move_schedules(moves, owner.fence)
        except FencedError as exc:
            owner.fenced(exc)
            return
        if kept:  # another worker changed some of them meanwhile: read what it left
            for job_id in moves:
                owner.refresh_soon(job_id)

    def _write_run_state(self, batch: Batch) -> None:
        owner = self.owner
        ended = [(j, t) for j, t, _ in batch.ended]
        try:
            owner.state.write_run_state(batch.updates, batch.started, ended, owner.fence)
        except FencedError as exc:
            self._refused(batch, exc)
        else:
            if batch.updates:
                owner.bus.announce_many("changed", sorted(batch.updates))
        batch.updates, batch.started, batch.ended = {}, [], []

    def _refused(self, batch: Batch, error: FencedError) -> None:
        """The fence refused the run state: report the outcomes of the runs it ended."""
        owner = self.owner
        self._refused_starts.update(batch.started)
        owner.fenced(error)
        for job_id, token, run in batch.ended:
            counted = (job_id, token) not in self._refused_starts
            self._refused_starts.discard((job_id, token))
            if run is not None:
                owner.bus.report_outcome(job_id, token, run, counted=counted)


def _answer_one(batch: _Answers, index: int) -> None:
    """Answer the claim ``index`` of ``batch`` (unless its future is done already)."""
    job_id, token, future = batch.claims[index]
    if future.done():
        return
    try:
        if batch.answers is None:
            future.set_exception(ClaimError(batch.failed or "not claimed"))
            return
        future.set_result(batch.answers[index])
    except RuntimeError as exc:  # its loop has closed (a stop, then a start on a new loop)
        logger.debug("claim of job %s not answered: %s", job_id, exc)
        return
    if not batch.answers[index] and not batch.fenced:
        logger.info(
            "job %s fire at %s was already run by another worker",
            job_id,
            fire_time(token).isoformat(),
        )


class ClaimError(Exception):
    """A fire's claim could not be written (the scheduler stopped first)."""


def _raise(exc: Exception) -> None:
    raise exc


def _ok() -> None:
    return None


__all__ = ["Batch", "ClaimError", "Move", "Schedule", "Writer"]
