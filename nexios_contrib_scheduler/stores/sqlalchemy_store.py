"""APScheduler's SQLAlchemy job store, as the writer and the reloads use it.

The schedules (APScheduler's ``<namespace>_jobs`` table, in its own format) are what the
scheduler's in-memory job store (``mirror.py``) mirrors. Nothing here runs on the event
loop: the writer's thread writes (``write_schedules``, ``move_schedules``), the sync thread
reads (``read_schedules``). A scheduling pass's moves are conditional on the stored bytes
being those the worker last read or wrote, so they do not undo another worker's change
made meanwhile, and they carry the leader's fencing token, checked in the same
transaction: a leader that lost its lease to a newer one moves nothing.

Imported only for a ``sqlite:`` or ``postgresql:`` job store: it needs SQLAlchemy (the
``sqlalchemy`` or ``postgres`` extra), and nothing of Redis.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import select
from sqlalchemy.engine import Engine

from .records import load_keeping_unimportable
from .urls import StoreURL

logger = logging.getLogger("nexios_contrib_scheduler")

#: Ids per ``IN`` list.
_CHUNK = 1000
#: Rows per statement of ``execute_values`` (PostgreSQL).
ROWS_PER_VALUES_PAGE = 500


#: A pass's moves per statement on PostgreSQL (given as arrays; two pickled jobs a row): the
#: driver writes the arrays out holding the interpreter's lock, a few milliseconds a page.
MOVES_PER_ARRAY_PAGE = 500


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Any]:
    """A connection for reads outside a transaction (each statement its own): a large
    result is processed with no transaction left open, which the server would end as idle
    in a transaction (``IDLE_IN_TRANSACTION``) were the processing slow."""
    with engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


def execute_rows(connection: Any, sql: str, rows: Iterable[tuple[Any, ...]]) -> int:
    """SQLite: ``sql`` (with ``?`` placeholders) once per row, in the connection's
    transaction, through the driver's ``executemany``; the rows changed.

    The rows are made one at a time as the driver asks for them, as tuples of plain values
    (the driver binds ``bytes`` as a BLOB). A tuple holding only such values is one the
    garbage collector stops tracking at its first look, and each row is gone before the
    next is made. Through SQLAlchemy every row of a call stays alive as a dictionary with a
    ``memoryview`` in it (how SQLAlchemy hands binary values to this driver) until the call
    returns; a write of many jobs then moved hundreds of thousands of such objects into the
    collector's oldest generation, each 25 % of its size setting off a full collection,
    with the interpreter (and so the event loop) stopped for 100 ms or more at 20,000 jobs.
    """
    cursor = connection.connection.cursor()
    try:
        cursor.executemany(sql, rows)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def execute_values(connection: Any, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """PostgreSQL: ``sql``, whose ``VALUES %s`` takes a page of ``rows`` at a time, in the
    connection's transaction (psycopg2's ``execute_values``). Only a page of rows is alive
    at a time, as tuples of plain values (see ``execute_rows``), where SQLAlchemy's
    executemany holds a dictionary per row, with a driver object for each binary value."""
    from psycopg2.extras import execute_values as driver_execute_values

    cursor = connection.connection.cursor()
    try:
        driver_execute_values(cursor, sql, rows, page_size=ROWS_PER_VALUES_PAGE)
    finally:
        cursor.close()


class GuardedSQLAlchemyJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """``SQLAlchemyJobStore`` with batched writes, guarded reads of raw schedules."""

    def __init__(self, engine: Engine, tablename: str, url: StoreURL) -> None:
        super().__init__(engine=engine, tablename=tablename)
        self._url = url
        #: ``check(connection, token)``: raises FencedError in a transaction a newer token
        #: has overtaken (the state backend's).
        self.fence_check: Callable[[Any, int | None], None] | None = None
        self._move_statements: dict[str, Any] = {}

    def __repr__(self) -> str:
        # APScheduler's shows the engine's URL, whose query may hold credentials.
        return f"<{type(self).__name__} (url={self._url})>"

    def _reconstitute_job(self, job_state: bytes) -> Any:
        # A job whose function this worker cannot import is kept, not deleted.
        return load_keeping_unimportable(job_state, super()._reconstitute_job)

    def restore(self, job_state: bytes) -> Any:
        """The APScheduler job stored as ``job_state`` (its function kept unresolved when
        this worker cannot import it)."""
        return self._reconstitute_job(job_state)

    def read_schedules(self, ids: Collection[str] | None) -> dict[str, bytes]:
        """The stored states of the given jobs (None: of every job), by id."""
        table = self.jobs_t
        query = select(table.c.id, table.c.job_state)
        with reading(self.engine) as connection:
            if ids is None:
                return {row.id: bytes(row.job_state) for row in connection.execute(query)}
            wanted = list(ids)
            found: dict[str, bytes] = {}
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                for row in connection.execute(query.where(table.c.id.in_(chunk))):
                    found[row.id] = bytes(row.job_state)
            return found

    def write_schedules(
        self,
        puts: Mapping[str, tuple[float | None, bytes]],
        deletes: Collection[str],
        into: Any = None,
    ) -> None:
        """Put (insert or replace) and delete schedules, in one transaction: ``into`` (a
        connection in a transaction) or one of its own."""
        if not puts and not deletes:
            return
        if into is None:
            with self.engine.begin() as connection:
                self._write_schedules(connection, puts, deletes)
        else:
            self._write_schedules(into, puts, deletes)

    def _write_schedules(
        self,
        connection: Any,
        puts: Mapping[str, tuple[float | None, bytes]],
        deletes: Collection[str],
    ) -> None:
        table = self.jobs_t
        if deletes:
            wanted = list(deletes)
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                connection.execute(table.delete().where(table.c.id.in_(chunk)))
        if not puts:
            return
        upsert = (
            f"INSERT INTO {self._quoted()} (id, next_run_time, job_state) VALUES {{}}"
            " ON CONFLICT (id) DO UPDATE SET next_run_time = excluded.next_run_time,"
            " job_state = excluded.job_state"
        )
        rows = ((job_id, when, state) for job_id, (when, state) in puts.items())
        if self.engine.dialect.name == "sqlite":
            execute_rows(connection, upsert.format("(?, ?, ?)"), rows)
        else:
            execute_values(connection, upsert.format("%s"), rows)

    def move_schedules(
        self,
        moves: Mapping[str, tuple[bytes | None, tuple[float | None, bytes] | None]],
        fence: int | None,
    ) -> int:
        """A pass's moves, in one fenced transaction: each job's schedule replaced (or
        deleted: None) only if its stored state is the one expected. Returns how many
        were kept as another worker left them."""
        if self.engine.dialect.name == "sqlite":
            return self._move_sqlite(moves, fence)
        # PostgreSQL: the updates, then the deletes, a page of each per statement.
        updates = [(job_id, move) for job_id, move in moves.items() if move[1] is not None]
        deletes = [(job_id, move[0]) for job_id, move in moves.items() if move[1] is None]
        written = 0
        with self.engine.begin() as connection:
            for start in range(0, len(updates), MOVES_PER_ARRAY_PAGE):
                page = updates[start : start + MOVES_PER_ARRAY_PAGE]
                written += self._move_page(connection, "update", page)
            for start in range(0, len(deletes), MOVES_PER_ARRAY_PAGE):
                self._move_page(connection, "delete", deletes[start : start + MOVES_PER_ARRAY_PAGE])
            if self.fence_check is not None:  # last: the fence's row is locked until commit
                self.fence_check(connection, fence)
        kept = len(updates) - written
        if kept > 0:
            logger.debug("%d job(s) changed by another worker during a pass; kept", kept)
        return kept

    def _move_sqlite(
        self,
        moves: Mapping[str, tuple[bytes | None, tuple[float | None, bytes] | None]],
        fence: int | None,
    ) -> int:
        """SQLite: ``move_schedules``' statements, each row made as the driver binds it."""
        table = self._quoted()
        guard = "WHERE id = ? AND job_state = ?"
        with self.engine.begin() as connection:
            written = execute_rows(
                connection,
                f"UPDATE {table} SET next_run_time = ?, job_state = ? {guard}",
                (
                    (schedule[0], schedule[1], job_id, expected)
                    for job_id, (expected, schedule) in moves.items()
                    if schedule is not None
                ),
            )
            execute_rows(
                connection,
                f"DELETE FROM {table} {guard}",
                (
                    (job_id, expected)
                    for job_id, (expected, schedule) in moves.items()
                    if schedule is None
                ),
            )
            if self.fence_check is not None:  # last: the fence's row is locked until commit
                self.fence_check(connection, fence)
        updates = sum(1 for _, schedule in moves.values() if schedule is not None)
        kept = updates - written if written >= 0 else 0
        if kept > 0:
            logger.debug("%d job(s) changed by another worker during a pass; kept", kept)
        return kept

    def _quoted(self) -> str:
        return str(self.engine.dialect.identifier_preparer.quote(self.jobs_t.name))

    def _move_page(self, connection: Any, kind: str, page: Sequence[tuple[str, Any]]) -> int:
        """PostgreSQL: one page of a pass's guarded updates (``(id, (expected, (next run
        time, state)))``) or deletes (``(id, expected)``), given as arrays: no parameter set
        (a dictionary, a driver object per binary value) per row. The rows changed."""
        from sqlalchemy import text

        statement = self._move_statements.get(kind)
        if statement is None:
            table = self._quoted()
            if kind == "update":
                statement = text(
                    f"UPDATE {table} AS j SET next_run_time = u.next_run_time,"
                    f" job_state = u.job_state FROM unnest("
                    f"CAST(:ids AS text[]), CAST(:expected AS bytea[]),"
                    f" CAST(:next_run_times AS double precision[]), CAST(:states AS bytea[])"
                    f") AS u(id, expected, next_run_time, job_state)"
                    f" WHERE j.id = u.id AND j.job_state = u.expected"
                )
            else:
                statement = text(
                    f"DELETE FROM {table} AS j USING unnest("
                    f"CAST(:ids AS text[]), CAST(:expected AS bytea[])) AS u(id, expected)"
                    f" WHERE j.id = u.id AND j.job_state = u.expected"
                )
            self._move_statements[kind] = statement
        params: dict[str, list[Any]] = {"ids": [job_id for job_id, _ in page]}
        if kind == "update":
            params["expected"] = [expected for _, (expected, _) in page]
            params["next_run_times"] = [schedule[0] for _, (_, schedule) in page]
            params["states"] = [schedule[1] for _, (_, schedule) in page]
        else:
            params["expected"] = [expected for _, expected in page]
        return int(connection.execute(statement, params).rowcount)
