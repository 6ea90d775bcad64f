"""The in-memory job store of a scheduler with a persistent store.

APScheduler reads and changes its jobs on the event loop, so its job store must answer from
memory. ``MirrorJobStore`` is the heap store (``memory.py``) holding every job of the
persistent store; what APScheduler changes in it is handed to the writer (``writer.py``),
which writes it off the loop, and what other workers change reaches it by reloads
(``sync.py``, which reads off the loop and applies here quietly, without writing back).

Each job's stored state (APScheduler's pickled job) is kept as last read or written: a
scheduling pass moves a job on only if the store still holds that state, so a pass never
undoes what another worker changed meanwhile.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore
from apscheduler.util import datetime_to_utc_timestamp

from ..triggers import compact_time
from .memory import HeapJobStore

logger = logging.getLogger("nexios_contrib_scheduler")

if TYPE_CHECKING:
    from .writer import Schedule


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND = timedelta(seconds=1)


def utc_timestamp(when: datetime) -> float:
    """APScheduler's ``datetime_to_utc_timestamp`` (what its stores write in their
    ``next_run_time`` columns), to the last bit, in a quarter of the time: whole seconds
    by integer arithmetic, not through ``utctimetuple`` and ``calendar.timegm``."""
    if when.tzinfo is None:
        return float(datetime_to_utc_timestamp(when))
    return (when - _EPOCH) // _SECOND + when.microsecond / 1_000_000


class Outbox(Protocol):
    """Where the mirror hands its writes (the writer)."""

    def put_schedule(self, job_id: str, schedule: Schedule) -> None: ...

    def delete_schedule(self, job_id: str) -> None: ...

    def move(self, job_id: str, expected: bytes | None, schedule: Schedule | None) -> None: ...


class MirrorJobStore(HeapJobStore):
    """A persistent job store's jobs in memory; its writes go through the writer.

    ``store`` is the persistent store (APScheduler's SQLAlchemy or Redis store, guarded),
    used only off the event loop. ``outbox`` takes the writes; ``on_write(job_id, moved)``
    is told of each (``moved``: a pass moved the job on, not a job operation), so that a
    reload read before it does not undo it.
    """

    def __init__(self, store: BaseJobStore, outbox: Outbox) -> None:
        super().__init__()
        self.store: Any = store
        self.outbox = outbox
        self.on_write: Callable[[str, bool], None] | None = None
        self._stored: dict[str, bytes] = {}
        self._protocol: int = getattr(store, "pickle_protocol", pickle.HIGHEST_PROTOCOL)

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        # The persistent store restores jobs for this scheduler; it is opened (its tables
        # made) off the loop, with the state backend, so only its base class starts here.
        BaseJobStore.start(self.store, scheduler, alias)

    def shutdown(self) -> None:
        """The jobs stay in the store; the mirror forgets them."""
        HeapJobStore.remove_all_jobs(self)
        self._stored = {}

    # ------------------------------------------------------------ APScheduler's writes

    def add_job(self, job: Job) -> None:
        super().add_job(job)
        self._put(job)

    def update_job(self, job: Job) -> None:
        super().update_job(job)
        self._put(job)

    def remove_job(self, job_id: str) -> None:
        super().remove_job(job_id)
        self._stored.pop(job_id, None)
        self._noted(job_id)
        self.outbox.delete_schedule(job_id)

    def remove_all_jobs(self) -> None:
        ids = list(self.job_ids())
        super().remove_all_jobs()
        self._stored = {}
        for job_id in ids:
            self._noted(job_id)
            self.outbox.delete_schedule(job_id)

    def write_back(self, updated: Sequence[Job], removed: Sequence[str]) -> set[str]:
        """A pass's moves: ``updated`` moved on, ``removed`` (no fire left) out. Each is
        written only if the store still holds the job as this worker last saw it. Returns
        the ids of removed jobs that were not here."""
        stored, outbox = self._stored, self.outbox
        for job in updated:
            expected = stored.get(job.id)
            HeapJobStore.update_job(self, job)
            schedule = self._schedule(job)
            stored[job.id] = schedule[1]
            self._noted(job.id, moved=True)
            outbox.move(job.id, expected, schedule)
        missing: set[str] = set()
        for job_id in removed:
            if self.lookup_job(job_id) is None:
                missing.add(job_id)
                continue
            HeapJobStore.remove_job(self, job_id)
            self._noted(job_id, moved=True)
            outbox.move(job_id, stored.pop(job_id, None), None)
        return missing

    def _put(self, job: Job) -> None:
        schedule = self._schedule(job)
        self._stored[job.id] = schedule[1]
        self._noted(job.id)
        self.outbox.put_schedule(job.id, schedule)

    def _schedule(self, job: Job) -> Schedule:
        when = job.next_run_time
        fields = job.__getstate__()
        fields["next_run_time"] = compact_time(when)
        state = pickle.dumps(fields, self._protocol)
        return (None if when is None else utc_timestamp(when), state)

    def _noted(self, job_id: str, moved: bool = False) -> None:
        if self.on_write is not None:
            self.on_write(job_id, moved)

    # ------------------------------------------------------------ reloads (quiet)

    def load(self, job: Job, state: bytes) -> None:
        """A job as read from the store (not written back)."""
        if self._stored.get(job.id) == state and self.lookup_job(job.id) is not None:
            return  # as held already
        if self.lookup_job(job.id) is None:
            HeapJobStore.add_job(self, job)
        else:
            HeapJobStore.update_job(self, job)
        self._stored[job.id] = state

    def holds(self, job_id: str, state: bytes | None) -> bool:
        """Whether the job's schedule held is the one stored as ``state`` (None: whether
        no schedule of it is held)."""
        if state is None:
            return self.lookup_job(job_id) is None
        return self._stored.get(job_id) == state and self.lookup_job(job_id) is not None

    def drop(self, job_id: str) -> None:
        """A job the store no longer holds (not written back)."""
        if self.lookup_job(job_id) is not None:
            HeapJobStore.remove_job(self, job_id)
        self._stored.pop(job_id, None)

    def read(self, ids: Collection[str] | None) -> dict[str, tuple[Job | None, bytes]]:
        """Off the event loop: the given jobs (None: every job) as the store holds them, with
        their stored states; a job that cannot be restored comes as None."""
        found: dict[str, tuple[Job | None, bytes]] = {}
        for job_id, raw in self.store.read_schedules(ids).items():
            state = bytes(raw)
            try:
                job = self.store.restore(state)
            except Exception:
                logger.exception("job %s in the store cannot be restored; kept", job_id)
                job = None
            found[job_id] = (job, state)
        return found

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ({len(self.job_ids())} jobs) of {self.store!r}>"


__all__ = ["MirrorJobStore", "Outbox", "utc_timestamp"]
