"""JobRegistry: the job records of one scheduler, behind one lock, announcing changes.

The registry is the only place records are added, removed and looked up. Whoever changes
a record's state tells the registry (``changed``), and the registry tells its subscribers:
persistence subscribes to write the change to the store, instead of being called by the
code that made it. Watchers hear of every record that comes in or goes out, quiet changes
included: the job views and their list order follow the registry that way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, KeysView
from typing import Literal

from .jobs import JobRecord

#: What happened to a record: it came in (``add_job``), its state changed, its run state
#: changed (the run ledger's changes: a store writes them only with the leader's fencing
#: token), or it went out.
ChangeKind = Literal["added", "changed", "run", "removed"]
Subscriber = Callable[[ChangeKind, JobRecord], None]
#: Told ``(old, new)`` when ``new`` becomes the record of its id in place of ``old`` (None
#: if there was none; ``new`` itself when it is put again), and ``(old, None)`` when ``old``
#: is taken out.
Watcher = Callable[[JobRecord | None, JobRecord | None], None]


class JobRegistry:
    """The records by job id. ``lock`` (reentrant) guards a series of steps that must not
    interleave with another thread's; single lookups and updates need no lock."""

    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}
        self._subscribers: tuple[Subscriber, ...] = ()
        self._watchers: tuple[Watcher, ...] = ()
        self.lock = threading.RLock()

    # ------------------------------------------------------------ lookups

    def get(self, job_id: object) -> JobRecord | None:
        """The record of ``job_id``; None if there is none (or ``job_id`` is not a str)."""
        return self._records.get(job_id) if isinstance(job_id, str) else None

    def holds(self, record: JobRecord) -> bool:
        """Whether ``record`` is the current record of its id (not removed or replaced)."""
        return self._records.get(record.id) is record

    def records(self) -> list[JobRecord]:
        """A snapshot of every record, in the order they were added."""
        with self.lock:
            return list(self._records.values())

    def id_view(self) -> KeysView[str]:
        """A live view of the ids held (read it under ``lock``)."""
        return self._records.keys()

    def ids(self) -> list[str]:
        with self.lock:
            return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and job_id in self._records

    def __iter__(self) -> Iterator[JobRecord]:
        return iter(self.records())

    # ------------------------------------------------------------ changes

    def put(self, record: JobRecord) -> JobRecord | None:
        """Make ``record`` the record of its id, quietly; the record it replaced, if any.

        Quiet, because a change made in steps is announced once its last step succeeded
        (``announce``), and records read from the store are not news to the store.
        """
        with self.lock:
            old = self._records.get(record.id)
            self._records[record.id] = record
            for watcher in self._watchers:
                watcher(old, record)
            return old

    def pop(self, job_id: object) -> JobRecord | None:
        """Take the record of ``job_id`` out, quietly; None if there was none."""
        if not isinstance(job_id, str):
            return None
        with self.lock:
            record = self._records.pop(job_id, None)
            if record is not None:
                for watcher in self._watchers:
                    watcher(record, None)
            return record

    def changed(self, record: JobRecord) -> None:
        """``record``'s state changed: tell the subscribers."""
        self.announce("changed", record)

    def ran(self, record: JobRecord) -> None:
        """``record``'s run state changed (the run ledger's): tell the subscribers."""
        self.announce("run", record)

    def announce(self, kind: ChangeKind, record: JobRecord) -> None:
        for subscriber in self._subscribers:
            subscriber(kind, record)

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher(old, new)``, under ``lock``, each time a record is put in or taken
        out, quietly or not: the records ``records()`` shows. It must not raise."""
        with self.lock:
            self._watchers = (*self._watchers, watcher)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(kind, record)`` on every change; returns the way to stop."""
        with self.lock:
            self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            with self.lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe
