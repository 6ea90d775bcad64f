"""The writer: run state written to the store in batches, off the event loop.

What a run leaves (its start and end noted on its fire in flight, the run ledger's changes
to counters, history and status) is not needed in the store before the run goes on: the
claim of the fire, written before the run starts, is what keeps a fire from running twice.
So the event loop hands these writes to one thread, which lets changes gather for
``GATHER_SECONDS`` and merges what piles up (the changes of one job become one update) and writes each batch in one transaction
(one round trip on Redis), with the leader's fencing token. Then it tells the other workers
which jobs changed.

A batch that fails is kept and tried again (after 0.5 s, then up to 5 s apart), merged with
what came since; ``flush`` waits until everything handed over is written (shutdown does).
A batch the store refuses because a newer leader raised the fence is dropped: this worker
lost the lease and writes no more run state; the outcome of each run it ended is sent to
the leader instead, which records it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..jobs import RunRecord
from .state import FencedError

if TYPE_CHECKING:
    from .persistence import Persistence

logger = logging.getLogger("nexios_contrib_scheduler")

RETRY_FIRST = 0.5
RETRY_MAX = 5.0
#: How long the thread lets run state gather after the first change before it writes (the
#: bound on how late a run's state reaches the store, beside the write itself).
GATHER_SECONDS = 0.01


@dataclass
class Batch:
    """Run state waiting to be written: field changes by job, fires started and ended."""

    updates: dict[str, dict[str, bytes]] = field(default_factory=dict)
    started: list[tuple[str, str]] = field(default_factory=list)
    ended: list[tuple[str, str, RunRecord | None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.updates or self.started or self.ended)

    def merge_newer(self, newer: Batch) -> None:
        """Add ``newer`` (handed over after this batch) on top of this one."""
        for job_id, fields in newer.updates.items():
            self.updates.setdefault(job_id, {}).update(fields)
        self.started += newer.started
        self.ended += newer.ended


class Writer:
    """One thread that writes one worker's run state in batches."""

    def __init__(self, owner: Persistence) -> None:
        self.owner = owner
        self._lock = threading.Condition()
        self._pending = Batch()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._refused_starts: set[tuple[str, str]] = set()
        self._handed = 0  # items handed over so far
        self._done = 0  # of them, written or dropped (they are taken in order)
        self.batches = 0  # batches written (tests and the benchmark read it)

    # ------------------------------------------------------------ from the event loop

    def update(self, job_id: str, fields: dict[str, bytes]) -> None:
        with self._lock:
            self._pending.updates.setdefault(job_id, {}).update(fields)
            self._handed += 1
            self._lock.notify()

    def start_fire(self, job_id: str, token: str) -> None:
        with self._lock:
            self._pending.started.append((job_id, token))
            self._handed += 1
            self._lock.notify()

    def end_fire(self, job_id: str, token: str, run: RunRecord | None) -> None:
        with self._lock:
            self._pending.ended.append((job_id, token, run))
            self._handed += 1
            self._lock.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until everything handed over so far is written (or dropped: refused by the
        fence); False if it was not within ``timeout`` seconds. What is handed over
        meanwhile is not waited for."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._handed
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return self._done >= target
                self._lock.wait(min(left, 0.1))
        return True

    # ------------------------------------------------------------ the thread

    def start(self, name: str) -> None:
        with self._lock:
            self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Write what is pending (up to ``timeout`` seconds), then end the thread."""
        self.flush(timeout)
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

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
                batch, self._pending = self._pending, Batch()
                upto = self._handed
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

    def _write(self, batch: Batch) -> bool:
        """Write one batch; True if it should be tried again."""
        owner = self.owner
        ended = [(j, t) for j, t, _ in batch.ended]
        try:
            owner.state.write_run_state(batch.updates, batch.started, ended, owner.fence)
        except FencedError as exc:
            self._refused(batch, exc)
            return False
        except Exception as exc:
            owner.attempt("write run state to the job store", _raise, exc)
            return True
        owner.attempt("write run state to the job store", _ok)
        self.batches += 1
        if batch.updates:
            owner.bus.announce_many("changed", sorted(batch.updates))
        return False

    def _refused(self, batch: Batch, error: FencedError) -> None:
        """The fence refused the batch: report the outcomes of the runs it ended."""
        owner = self.owner
        self._refused_starts.update(batch.started)
        owner.fenced(error)
        for job_id, token, run in batch.ended:
            counted = (job_id, token) not in self._refused_starts
            self._refused_starts.discard((job_id, token))
            if run is not None:
                owner.bus.report_outcome(job_id, token, run, counted=counted)


def _raise(exc: Exception) -> None:
    raise exc


def _ok() -> None:
    return None
