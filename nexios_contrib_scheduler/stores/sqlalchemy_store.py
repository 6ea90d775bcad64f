"""APScheduler's SQLAlchemy job store, guarded for several writers.

APScheduler reads the due jobs, submits them, then writes each job back with its next run
time. When another worker changed the job in between (paused, rescheduled or removed it),
that write would put the old state back. This subclass remembers the stored bytes of the
jobs a scheduling pass read and makes that pass's write conditional on them: a job changed
meanwhile keeps the other worker's version. A pass's writes are run state: they carry the
leader's fencing token (``fence_token``), checked in the same transaction, and a leader
that lost its lease to a newer one writes nothing (``on_fenced`` is told). A pass writes
a whole slice of jobs back in one transaction (``write_back``). Every other write is
APScheduler's own.

Imported only for a ``sqlite:`` or ``postgresql:`` job store: it needs SQLAlchemy (the
``sqlalchemy`` or ``postgres`` extra), and nothing of Redis.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import and_, bindparam, select
from sqlalchemy.engine import Engine

from .records import load_keeping_unimportable
from .urls import StoreURL

logger = logging.getLogger("nexios_contrib_scheduler")


class GuardedSQLAlchemyJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """``SQLAlchemyJobStore`` whose post-pass writes do not undo another worker's change."""

    def __init__(self, engine: Engine, tablename: str, url: StoreURL) -> None:
        super().__init__(engine=engine, tablename=tablename)
        self._seen: dict[str, bytes] = {}
        self._url = url
        #: The leader's lease token while it leads with coordination (None: not checked).
        self.fence_token: int | None = None
        #: ``check(connection, token)``: raises FencedError in a transaction a newer token
        #: has overtaken (the state backend's); ``on_fenced(error)`` hears of a refusal.
        self.fence_check: Callable[[Any, int | None], None] | None = None
        self.on_fenced: Callable[[Exception], None] | None = None

    def __repr__(self) -> str:
        # APScheduler's shows the engine's URL, whose query may hold credentials.
        return f"<{type(self).__name__} (url={self._url})>"

    #: ``get_due_jobs`` takes a ``limit``: a pass reads no more due jobs than it submits.
    takes_due_limit = True

    def get_due_jobs(self, now: datetime, limit: int | None = None) -> list[Any]:
        timestamp = datetime_to_utc_timestamp(now)
        table = self.jobs_t
        query = (
            select(table.c.id, table.c.job_state)
            .where(table.c.next_run_time <= timestamp)
            .order_by(table.c.next_run_time)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.begin() as connection:
            rows = connection.execute(query).all()
        jobs, seen, failed = [], {}, []
        for row in rows:
            try:
                jobs.append(self._reconstitute_job(row.job_state))
            except BaseException:
                self._logger.exception('Unable to restore job "%s" -- removing it', row.id)
                failed.append(row.id)
                continue
            seen[row.id] = row.job_state
        if failed:
            with self.engine.begin() as connection:
                connection.execute(table.delete().where(table.c.id.in_(failed)))
        self._seen = seen
        return jobs

    def _reconstitute_job(self, job_state: bytes) -> Any:
        # A job whose function this worker cannot import is kept, not deleted.
        return load_keeping_unimportable(job_state, super()._reconstitute_job)

    def get_next_run_time(self) -> datetime | None:
        # APScheduler asks for this right after the pass that read the due jobs.
        self._seen = {}
        return super().get_next_run_time()  # type: ignore[no-any-return]

    # ------------------------------------------------------------ bulk adds

    _bulk: dict[str, Any] | None = None

    def begin_bulk(self) -> None:
        """From now on ``add_job`` only collects (a job added again replaces the one added
        before, as ``replace_existing``), until ``end_bulk`` writes them all at once."""
        self._bulk = {}

    def end_bulk(self) -> None:
        """Write the collected jobs in one transaction (each replacing a stored one)."""
        jobs, self._bulk = self._bulk or {}, None
        if not jobs:
            return
        from sqlalchemy.dialects import postgresql, sqlite

        table = self.jobs_t
        rows = [
            {
                "id": job.id,
                "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol),
            }
            for job in jobs.values()
        ]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(table)
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={
                "next_run_time": insert.excluded.next_run_time,
                "job_state": insert.excluded.job_state,
            },
        )
        with self.engine.begin() as connection:
            connection.execute(statement, rows)

    def add_job(self, job: Any) -> None:
        if self._bulk is not None:
            self._bulk[job.id] = job
            return
        super().add_job(job)

    def update_job(self, job: Any) -> None:
        expected = self._seen.pop(job.id, None)
        if expected is None:
            super().update_job(job)
            return
        table = self.jobs_t
        update = (
            table.update()
            .values(
                next_run_time=datetime_to_utc_timestamp(job.next_run_time),
                job_state=pickle.dumps(job.__getstate__(), self.pickle_protocol),
            )
            .where(and_(table.c.id == job.id, table.c.job_state == expected))
        )
        with self._fenced() as connection:
            if connection is not None and connection.execute(update).rowcount == 0:
                logger.debug("job %s changed by another worker during a pass; kept", job.id)

    def remove_job(self, job_id: str) -> None:
        expected = self._seen.pop(job_id, None)
        if expected is None:
            super().remove_job(job_id)
            return
        table = self.jobs_t
        delete = table.delete().where(and_(table.c.id == job_id, table.c.job_state == expected))
        with self._fenced() as connection:
            if connection is not None:
                connection.execute(delete)

    def write_back(self, updated: Sequence[Any], removed: Sequence[str]) -> set[str]:
        """A pass's write-back of a slice of jobs, in one fenced transaction: ``updated``
        moved on, ``removed`` (no fire left) deleted, each only if its stored bytes are those
        the pass read (``update_job`` and ``remove_job`` for many jobs). Returns the ids of
        removed jobs that were not in the store (``remove_job`` would have raised)."""
        seen = self._seen
        updates, deletes, missing = [], [], set()
        for job in updated:
            expected = seen.pop(job.id, None)
            if expected is None:
                super().update_job(job)  # not read by this pass: APScheduler's own write
                continue
            updates.append(
                {
                    "b_id": job.id,
                    "b_expected": expected,
                    "b_next": datetime_to_utc_timestamp(job.next_run_time),
                    "b_state": pickle.dumps(job.__getstate__(), self.pickle_protocol),
                }
            )
        for job_id in removed:
            expected = seen.pop(job_id, None)
            if expected is None:
                try:
                    super().remove_job(job_id)
                except JobLookupError:
                    missing.add(job_id)
                continue
            deletes.append({"b_id": job_id, "b_expected": expected})
        if not updates and not deletes:
            return missing
        table = self.jobs_t
        guard = and_(table.c.id == bindparam("b_id"), table.c.job_state == bindparam("b_expected"))
        with self._fenced() as connection:
            if connection is None:
                return missing
            kept = 0
            if updates:
                update = table.update().where(guard)
                update = update.values(
                    next_run_time=bindparam("b_next"), job_state=bindparam("b_state")
                )
                written = connection.execute(update, updates).rowcount
                kept = len(updates) - written if written >= 0 else 0
            if deletes:
                connection.execute(table.delete().where(guard), deletes)
            if kept > 0 and connection.dialect.supports_sane_multi_rowcount:
                logger.debug("%d job(s) changed by another worker during a pass; kept", kept)
        return missing

    @contextlib.contextmanager
    def _fenced(self) -> Iterator[Any]:
        """A transaction for a pass's write, fenced; yields None when the fence refused it."""
        from .state import FencedError

        check, token = self.fence_check, self.fence_token
        refused: FencedError | None = None
        with self.engine.begin() as connection:
            try:
                if check is not None:
                    check(connection, token)
            except FencedError as exc:
                if self.on_fenced is None:
                    raise
                refused = exc
            else:
                yield connection
                return
        if self.on_fenced is not None and refused is not None:
            self.on_fenced(refused)
        yield None
