"""JobListing: the view of every job, kept in step with the registry, in two orders.

``get_jobs`` lists jobs in the order they were added (the registry's order); the admin
API's job list shows them oldest first, by ``created_at`` and then id (a job's position).
Both are kept up to date as records come in and go out (the registry tells its watchers
of each one, quiet changes included), so no read builds, filters or sorts anything per
job: with 100,000 jobs, ``get_jobs()`` copies one list and a page of the admin list reads
its own jobs from an ordered index, after a binary search.

Each job's ``ScheduledJob`` view is made once, when its record comes in: a listing of many
jobs allocates nothing per job (allocating 100,000 objects per call sets off the garbage
collector).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import chain

from .config import JobStatus
from .jobs import JobRecord, RunTimes, ScheduledJob
from .registry import JobRegistry

#: A job's place in the list: when it was created (aware), then its id.
Position = tuple[datetime, str]

_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def position(record: JobRecord) -> Position:
    """Where ``record`` stands in the list (a ``created_at`` without a zone is taken as UTC)."""
    when = record.created_at
    if not isinstance(when, datetime):  # never from this package; listed first, not raised
        when = _EARLIEST
    elif when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when, record.id


@dataclass(frozen=True, slots=True)
class Following:
    """Up to ``count`` jobs after a position, with where that position stands."""

    #: Jobs in the list.
    total: int
    #: Jobs at or before the position.
    before: int
    #: The jobs after it, in list order, with their positions.
    jobs: list[tuple[Position, ScheduledJob]]


class JobListing:
    """The view of each job the registry holds, in the order added and in list order.

    Reads take the registry's lock for as long as they copy (a list of views, or a page).
    """

    def __init__(self, registry: JobRegistry, times: RunTimes) -> None:
        self._registry = registry
        self._times = times
        # In the registry's order: an id put again keeps its place in both dicts.
        self._views: dict[str, ScheduledJob] = {}
        self._positions: dict[str, Position] = {}
        self._order = _Ordered()
        with registry.lock:
            for record in registry.records():
                self._changed(None, record)
            registry.watch(self._changed)

    def __len__(self) -> int:
        return len(self._views)

    def view(self, record: JobRecord) -> ScheduledJob:
        """The view of ``record``: the one kept while the registry holds it, else a new one."""
        with self._registry.lock:
            if self._registry.holds(record):
                kept = self._views.get(record.id)
                if kept is not None:
                    return kept
        return ScheduledJob(self._times, record)

    def jobs(self, status: JobStatus | None = None) -> list[ScheduledJob]:
        """A new list of the views of every job (or those with ``status``), in the order
        the jobs were added."""
        with self._registry.lock:
            if status is None:
                return list(self._views.values())
            kept = self._views
            return [kept[r.id] for r in self._registry.records() if r.status is status]

    def following(self, after: Position | None, count: int) -> Following:
        """The first ``count`` jobs after ``after`` (None: from the first) in list order,
        how many jobs are at or before it, and how many there are: O(count + log jobs)."""
        with self._registry.lock:
            order = self._order
            return Following(
                total=len(order),
                before=0 if after is None else order.rank(after),
                jobs=order.following(after, count),
            )

    def ordered(self) -> tuple[list[Position], list[ScheduledJob]]:
        """New lists of every job's position and view, in list order (a snapshot)."""
        with self._registry.lock:
            return self._order.items()

    def _changed(self, old: JobRecord | None, new: JobRecord | None) -> None:
        if old is not None and new is old:
            where = position(new)
            kept = self._views.get(new.id)
            if kept is not None and self._positions.get(new.id) == where:
                return  # the same record put again, where it was
        if old is not None:
            gone = self._positions.pop(old.id, None)
            if gone is not None:
                self._order.remove(gone)
            if new is None:
                self._views.pop(old.id, None)
        if new is not None:
            view = self._views.get(new.id) if new is old else None
            if view is None:
                view = ScheduledJob(self._times, new)
            self._views[new.id] = view
            where = position(new)
            self._positions[new.id] = where
            self._order.insert(where, view)


class _Ordered:
    """Views sorted by position: a list of blocks of up to ``2 * LOAD`` entries each, with
    the last position of each block, so an insert or a removal moves one block's entries
    and a lookup is two binary searches."""

    LOAD = 500

    __slots__ = ("_keys", "_len", "_maxes", "_values")

    def __init__(self) -> None:
        self._keys: list[list[Position]] = []
        self._values: list[list[ScheduledJob]] = []
        self._maxes: list[Position] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def insert(self, key: Position, value: ScheduledJob) -> None:
        self._len += 1
        maxes = self._maxes
        if not maxes:
            self._keys.append([key])
            self._values.append([value])
            maxes.append(key)
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):  # after every other: the usual case, a job just created
            i -= 1
            self._keys[i].append(key)
            self._values[i].append(value)
            maxes[i] = key
        else:
            keys = self._keys[i]
            j = bisect_left(keys, key)
            keys.insert(j, key)
            self._values[i].insert(j, value)
        if len(self._keys[i]) > 2 * self.LOAD:
            self._split(i)

    def remove(self, key: Position) -> None:
        maxes = self._maxes
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return
        keys = self._keys[i]
        j = bisect_left(keys, key)
        if j == len(keys) or keys[j] != key:
            return
        del keys[j]
        del self._values[i][j]
        self._len -= 1
        if not keys:
            del self._keys[i], self._values[i], maxes[i]
            return
        maxes[i] = keys[-1]
        if len(keys) < self.LOAD // 4 and len(maxes) > 1:
            first = i if i + 1 < len(maxes) else i - 1  # merge this block with a neighbour
            self._keys[first] += self._keys.pop(first + 1)
            self._values[first] += self._values.pop(first + 1)
            del maxes[first]
            if len(self._keys[first]) > 2 * self.LOAD:
                self._split(first)

    def _split(self, i: int) -> None:
        keys, values = self._keys[i], self._values[i]
        half = len(keys) // 2
        self._keys.insert(i + 1, keys[half:])
        self._values.insert(i + 1, values[half:])
        del keys[half:], values[half:]
        self._maxes[i] = keys[-1]
        self._maxes.insert(i + 1, self._keys[i + 1][-1])

    def rank(self, key: Position) -> int:
        """Entries at or before ``key``."""
        i = bisect_right(self._maxes, key)  # the blocks before i end at or before key
        before = sum(map(len, self._keys[:i]))
        if i < len(self._keys):
            before += bisect_right(self._keys[i], key)
        return before

    def following(self, key: Position | None, count: int) -> list[tuple[Position, ScheduledJob]]:
        """Up to ``count`` entries after ``key`` (None: from the first), in order."""
        i = j = 0
        if key is not None:
            i = bisect_right(self._maxes, key)
            if i < len(self._keys):
                j = bisect_right(self._keys[i], key)
        found: list[tuple[Position, ScheduledJob]] = []
        while i < len(self._keys) and len(found) < count:
            end = j + count - len(found)
            found.extend(zip(self._keys[i][j:end], self._values[i][j:end], strict=True))
            i, j = i + 1, 0
        return found

    def items(self) -> tuple[list[Position], list[ScheduledJob]]:
        return list(chain.from_iterable(self._keys)), list(chain.from_iterable(self._values))
