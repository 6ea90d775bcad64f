"""The in-memory job store: APScheduler's ``MemoryJobStore`` contract on a binary heap.

APScheduler's own memory store keeps a list sorted by next run time, so every add, update
and removal shifts the list (O(n)); with 100,000 jobs that dominates adding a job. Here the
jobs sit in a heap of ``(timestamp, id)`` entries beside an id index:

* add and update push a new entry (O(log n)); the entry the index no longer points to is
  dead and is dropped when it reaches the top of the heap, or all at once when dead entries
  outnumber live ones;
* ``get_due_jobs`` pops the due entries and holds them aside until the scheduler writes the
  job back (``update_job``) or removes it, which is what it does with every job it is given;
  any it did not write back go back on the heap before the store answers anything else;
* paused jobs (no next run time) are in the index only.

The order APScheduler promises is kept: due jobs and ``get_all_jobs`` come by next run time,
then id, paused jobs last.

An entry holds no job (the jobs are in a dict by id): a tuple of a number and a string is
one the garbage collector stops tracking at its first look, so a job costs its full
collections, which stop the interpreter, one object fewer.
"""

from __future__ import annotations

from collections.abc import KeysView
from datetime import datetime
from heapq import heapify, heappop, heappush

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError

# (next run as a UTC timestamp or None when paused, job id). An entry is live while the
# index holds that very object: a dead one and its replacement can be equal.
_Entry = tuple[float | None, str]

# Rebuild the heap when dead entries outnumber live ones, and at least this many are dead.
_COMPACT_AT = 1024


def _timestamp(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _order(entry: _Entry) -> tuple[bool, float, str]:
    stamp = entry[0]
    return (stamp is None, 0.0 if stamp is None else stamp, entry[1])


class HeapJobStore(BaseJobStore):  # type: ignore[misc]
    """Keeps jobs in RAM, in a heap ordered by next run time; no persistence.

    ``get_due_jobs`` takes an optional ``limit`` so the scheduler can work through a large
    batch of due jobs a slice at a time.
    """

    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, Job] = {}
        self._index: dict[str, _Entry] = {}
        self._heap: list[_Entry] = []
        self._taken: dict[str, _Entry] = {}
        self._dead = 0

    # ------------------------------------------------------------ reads

    def lookup_job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def get_due_jobs(self, now: datetime, limit: int | None = None) -> list[Job]:
        """Jobs due at ``now``, earliest first; at most ``limit`` of them if given."""
        self._put_back()
        stamp = now.timestamp()
        heap, index, taken, held = self._heap, self._index, self._taken, self._jobs
        jobs: list[Job] = []
        most = len(index) if limit is None else limit
        while heap and heap[0][0] <= stamp and len(jobs) < most:  # type: ignore[operator]
            entry = heappop(heap)
            job_id = entry[1]
            if index.get(job_id) is not entry:
                self._dead -= 1
                continue
            taken[job_id] = entry
            jobs.append(held[job_id])
        return jobs

    def peek_due(self, when: datetime, limit: int) -> list[Job]:
        """The jobs due by ``when``, earliest first, at most ``limit``; they stay in the heap
        (``get_due_jobs`` hands them out until written back)."""
        jobs = self.get_due_jobs(when, limit)
        self._put_back()
        return jobs

    def get_next_run_time(self) -> datetime | None:
        self._put_back()
        heap, index = self._heap, self._index
        while heap and index.get(heap[0][1]) is not heap[0]:
            heappop(heap)
            self._dead -= 1
        return self._jobs[heap[0][1]].next_run_time if heap else None

    def job_ids(self) -> KeysView[str]:
        """The ids of the jobs held (a live view)."""
        return self._index.keys()

    def get_all_jobs(self) -> list[Job]:
        """Every job, by next run time then id; paused jobs last."""
        held = self._jobs
        return [held[entry[1]] for entry in sorted(self._index.values(), key=_order)]

    # ------------------------------------------------------------ writes

    def add_job(self, job: Job) -> None:
        if job.id in self._index:
            raise ConflictingIdError(job.id)
        entry = (_timestamp(job.next_run_time), job.id)
        self._index[job.id] = entry
        self._jobs[job.id] = job
        if entry[0] is not None:
            heappush(self._heap, entry)

    def update_job(self, job: Job) -> None:
        old = self._index.get(job.id)
        if old is None:
            raise JobLookupError(job.id)
        entry = (_timestamp(job.next_run_time), job.id)
        self._index[job.id] = entry
        self._jobs[job.id] = job
        self._retire(old)
        if entry[0] is not None:
            heappush(self._heap, entry)
        self._compact_if_needed()

    def remove_job(self, job_id: str) -> None:
        old = self._index.pop(job_id, None)
        if old is None:
            raise JobLookupError(job_id)
        del self._jobs[job_id]
        self._retire(old)
        self._compact_if_needed()

    def remove_all_jobs(self) -> None:
        self._jobs = {}
        self._index = {}
        self._heap = []
        self._taken = {}
        self._dead = 0

    def shutdown(self) -> None:
        # As APScheduler's memory store: the jobs do not outlive the scheduler.
        self.remove_all_jobs()

    # ------------------------------------------------------------ upkeep

    def _retire(self, old: _Entry) -> None:
        """``old`` is no longer the job's entry: forget it if held aside, else it is dead."""
        if self._taken.pop(old[1], None) is None and old[0] is not None:
            self._dead += 1

    def _put_back(self) -> None:
        """Return to the heap the due entries handed out and not written back."""
        if not self._taken:
            return
        index, heap = self._index, self._heap
        for job_id, entry in self._taken.items():
            if index.get(job_id) is entry:
                heappush(heap, entry)
        self._taken = {}

    def _compact_if_needed(self) -> None:
        if self._dead < _COMPACT_AT or self._dead <= len(self._index):
            return
        taken = self._taken
        self._heap = [
            entry
            for job_id, entry in self._index.items()
            if entry[0] is not None and job_id not in taken
        ]
        heapify(self._heap)
        self._dead = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ({len(self._index)} jobs)>"
