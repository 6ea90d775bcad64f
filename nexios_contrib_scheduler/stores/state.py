"""What the scheduler keeps beside APScheduler's job store, per backend.

APScheduler's job store holds each job's schedule. Beside it, in the same database, the
scheduler keeps:

* the adapter's state of each job (status, counters, history, ...), one value per field so
  that two workers changing different fields do not overwrite each other;
* when a job was removed (so a worker that declared it earlier does not bring it back);
* the fires already claimed: the idempotency keys, written before a run;
* the fires in flight: claimed and not yet ended, with the worker that claimed them and
  whether the run started, so that the next leader can tell a fire a dead worker claimed and
  never ran (recorded as missed) from a run it left cut short (recorded as cancelled);
* the fence: the greatest lease token that wrote run state. A write of run state carries
  the writer's token and is refused when the fence holds a greater one, so a leader that
  lost its lease (paused past it, say) writes nothing once another has written;
* a heartbeat per worker, to list the workers and spot several of them sharing a store
  without coordination;
* an epoch marker, a random id written once when the namespace is first made, so that a
  worker notices a store that lost its data (a Redis restarted without persistence, dropped
  tables) instead of silently rebuilding it;
* a message channel to tell the leader that another worker changed a job (PostgreSQL
  ``LISTEN``/``NOTIFY``, Redis pub/sub, or a change table polled every quarter second on
  SQLite).

Values are pickled, as APScheduler pickles its jobs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import select as selectors
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from ..errors import ConfigError, SchedulerError
from .urls import StoreURL

if TYPE_CHECKING:
    from apscheduler.jobstores.base import BaseJobStore
    from redis import Redis
    from sqlalchemy import Table
    from sqlalchemy.engine import Engine

logger = logging.getLogger("nexios_contrib_scheduler")

Message = dict[str, Any]
Deliver = Callable[[Message], None]

CLAIM_TTL = 7 * 86400.0  # how long a claimed fire is remembered
TOMBSTONE_TTL = 30 * 86400.0  # how long a removal is remembered
WORKER_TTL = 3600.0  # when a silent worker's heartbeat is forgotten
MESSAGE_TTL = 600.0  # how long the SQLite change table keeps a message
POLL_SECONDS = 0.25  # how often SQLite workers look at the change table
MANY = 1000  # most ids or fields in one Redis command of a batch
IDLE_IN_TRANSACTION = 5.0  # PostgreSQL ends a session idle this long inside a transaction
#: State rows per statement on PostgreSQL (given as one ``bytea`` and their lengths).
ROWS_PER_STATEMENT = 2_000
_FIELD_NAME_BYTES: dict[str, bytes] = {}  # field names as UTF-8, encoded once

# What each kind of store imports, and the extra that installs it.
_DRIVERS: dict[str, tuple[str, ...]] = {
    "sqlite": ("sqlalchemy",),
    "postgresql": ("sqlalchemy", "psycopg2"),
    "redis": ("redis",),
}
_EXTRAS = {"sqlite": "sqlalchemy", "postgresql": "postgres", "redis": "redis"}


class MissingDriverError(SchedulerError, ImportError):
    """The driver a store URL needs is not installed; the message names the extra."""


class ForeignSchemaError(SchedulerError):
    """A table or key the scheduler would use exists and holds something else."""


class FencedError(SchedulerError):
    """A write of run state refused: a leader with a greater lease token has written."""

    def __init__(self, token: int) -> None:
        super().__init__(
            f"write refused: a newer scheduler leader has written to the store since this "
            f"worker's lease (fencing token {token}) was taken"
        )
        self.token = token


class InFlight(NamedTuple):
    """A fire claimed and not yet ended: by which worker, and whether its run started."""

    job_id: str
    fire: str
    worker: str
    started: bool


def require_driver(url: StoreURL) -> None:
    """Raise ``MissingDriverError`` naming the extra to install if ``url``'s driver is missing."""
    for module in _DRIVERS.get(url.kind, ()):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDriverError(
                f"{url} needs {module}, which is not installed: "
                f"pip install 'nexios-contrib-scheduler[{_EXTRAS[url.kind]}]'"
            ) from exc


@contextlib.contextmanager
def credentials_masked(url: StoreURL) -> Iterator[None]:
    """Re-raise an error whose message quotes a credential of ``url`` with it masked.

    The original error is dropped from the chain, as a traceback would show its message.
    """
    try:
        yield
    except Exception as exc:
        text = str(exc)
        masked = url.scrub(text)
        if masked == text:
            raise
        raise SchedulerError(f"{type(exc).__name__}: {masked}") from None


def _bad_url(url: StoreURL, exc: Exception) -> ConfigError:
    return ConfigError(f"cannot use {url}: {url.scrub(str(exc))}")


class StateBackend(ABC):
    """The scheduler's own keys or tables in one database."""

    def __init__(self, url: StoreURL, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self._writer_id = ""
        self._counted = 0
        self._count_lock = threading.Lock()

    @abstractmethod
    def make_jobstore(self) -> BaseJobStore:
        """APScheduler's job store for this database, guarded for several writers."""

    @abstractmethod
    def open(self) -> None:
        """Connect once and create what is missing; raises if the database is unreachable."""

    def close(self) -> None:
        """Drop the connections (they are made again on the next use)."""
        return None

    # ---- job state: field name -> pickled value

    @abstractmethod
    def load(self, job_id: str) -> dict[str, bytes] | None:
        """The stored fields of one job, or None if it has none."""

    @abstractmethod
    def load_all(self) -> dict[str, dict[str, bytes]]:
        """The stored fields of every job."""

    # ``fence``: the writer's lease token, for a write of run state (None: no check). Such a
    # write raises ``FencedError`` (and writes nothing) if a greater token has written.

    @abstractmethod
    def create(self, job_id: str, fields: Mapping[str, bytes], fence: int | None = None) -> None:
        """Store a job's fields, replacing whatever it had; forgets a removal of its id."""

    def create_many(self, jobs: Mapping[str, Mapping[str, bytes]]) -> None:
        """``create`` for many jobs, in one write."""
        self.write_ops(jobs, {}, {})

    @abstractmethod
    def update(self, job_id: str, fields: Mapping[str, bytes], fence: int | None = None) -> bool:
        """Overwrite these fields of a stored job; False (nothing written) if it is gone."""

    @abstractmethod
    def write_ops(
        self,
        creates: Mapping[str, Mapping[str, bytes]],
        changes: Mapping[str, Mapping[str, bytes]],
        deletes: Mapping[str, float],
        also: Callable[[Any], None] | None = None,
    ) -> None:
        """Job operations' writes at once (one transaction, or one pipeline): states
        created (replacing any stored), fields changed (of jobs still stored), jobs deleted
        (at the times given); ``also(transaction)`` adds its writes to the same transaction
        (the schedules: the SQL connection, or the Redis pipeline). Not fenced: any worker
        may change a job."""

    def delete(self, job_id: str, removed_at: float) -> None:
        """Forget a job's fields and remember when it was removed."""
        self.write_ops({}, {}, {job_id: removed_at})

    # Each worker counts its writes of jobs' state (one per transaction or pipeline) and
    # stores the count under its id with them; the messages it sends after a write carry
    # the count. A worker that heard a count has heard of every write it counts, so one
    # that finds a count greater than it heard has missed a message.

    @property
    def writer_id(self) -> str:
        """The worker whose writes this backend counts as its own (see ``change_counts``);
        set for each start, which counts from 0 again."""
        return self._writer_id

    @writer_id.setter
    def writer_id(self, worker_id: str) -> None:
        with self._count_lock:
            self._writer_id, self._counted = worker_id, 0

    @property
    def counted(self) -> int:
        """This worker's count of its writes, as its last write stored it."""
        return self._counted

    def _next_count(self) -> int:
        """The count the next write stores; counted once it is written (``_counted_to``),
        so that a write that failed and is made again stores the same count."""
        with self._count_lock:
            return self._counted + 1

    def _counted_to(self, count: int) -> None:
        with self._count_lock:
            self._counted = max(self._counted, count)

    @abstractmethod
    def change_counts(self) -> dict[str, int]:
        """Each other worker's count of its writes of jobs' state (not ``writer_id``'s)."""

    @abstractmethod
    def tombstones(self) -> dict[str, float]:
        """Job id -> when it was removed (epoch seconds)."""

    # ---- fires

    @abstractmethod
    def claim(
        self, job_id: str, token: str, worker_id: str, fence: int | None = None, track: bool = False
    ) -> bool:
        """Record a fire before it runs; False if some worker recorded it first.

        ``track``: also note it in flight (until ``end_fires``), for the next leader.
        """

    def claim_many(
        self,
        fires: Sequence[tuple[str, str]],
        worker_id: str,
        fence: int | None = None,
        retried: Collection[tuple[str, str]] = (),
    ) -> list[bool]:
        """``claim`` (tracked) for each ``(job id, token)``, in one write: whether each was
        claimed now. The fence is checked once, for all of them.

        ``retried``: fires an earlier call tried to claim and failed with no answer (the
        connection went after the write may have landed); one of them already claimed by
        ``worker_id`` itself counts as claimed, as that earlier write was its own (the
        backends' own versions of this method honour it)."""
        return [self.claim(j, t, worker_id, fence, True) for j, t in fires]

    def write_run_state(
        self,
        updates: Mapping[str, Mapping[str, bytes]],
        started: Sequence[tuple[str, str]],
        ended: Sequence[tuple[str, str]],
        fence: int | None = None,
    ) -> None:
        """Write a batch of run state: field changes of stored jobs (a job removed meanwhile
        is skipped), fires whose run started, fires that ended. ``FencedError`` if refused."""
        for job_id, fields in updates.items():
            self.update(job_id, fields, fence)
        for job_id, token in started:
            self.start_fire(job_id, token, fence)
        self.end_fires(ended, fence)

    @abstractmethod
    def start_fire(self, job_id: str, token: str, fence: int | None = None) -> None:
        """Note that the run of a fire in flight started."""

    @abstractmethod
    def end_fires(self, fires: Sequence[tuple[str, str]], fence: int | None = None) -> None:
        """Forget these ``(job id, token)`` fires in flight: they ended or were settled."""

    @abstractmethod
    def release_fires(self, fires: Sequence[tuple[str, str]], worker_id: str) -> None:
        """Give back fires ``worker_id`` claimed and will not run: each one's claim and its
        entry in flight are deleted, if they are still that worker's and its run has not
        started, so that the fire can be claimed again. Not fenced: a worker that lost the
        lease may still give back what it will not run."""

    @abstractmethod
    def in_flight(self) -> list[InFlight]:
        """The fires claimed (with ``track``) and not yet ended."""

    @abstractmethod
    def raise_fence(self, fence: int, lock_wait: float | None = None) -> None:
        """Set the fence to ``fence`` (a new leader's token): from now on, writes of run state
        with a smaller token are refused. Raises ``FencedError`` if it holds a greater one.

        ``lock_wait``: the longest to wait for another session's hold of the fence (a
        leader stopped inside a transaction holds it until the server ends that session);
        past it, the raise fails and is tried again later."""

    # ---- workers

    @abstractmethod
    def heartbeat(self, worker_id: str, info: Mapping[str, Any], live_for: float) -> list[Message]:
        """Record this worker as alive; the workers seen within ``live_for`` seconds."""

    @abstractmethod
    def leave(self, worker_id: str) -> None:
        """Forget this worker's heartbeat."""

    @abstractmethod
    def prune(self, now: float) -> None:
        """Drop claims, removals, heartbeats and messages too old to matter."""

    # ---- the epoch marker and the server's clock

    @abstractmethod
    def read_epoch(self) -> str | None:
        """The store's epoch marker; None if it has none (new, or its data was lost)."""

    @abstractmethod
    def ensure_epoch(self, epoch: str) -> str:
        """Write ``epoch`` as the marker unless one exists; the marker the store now holds."""

    def server_time(self) -> float | None:
        """The database server's clock (epoch seconds); None when it is this machine's."""
        return None

    # ---- messages between workers

    @abstractmethod
    def publish(self, message: Message) -> None:
        """Send a message to every listening worker."""

    @abstractmethod
    def listen(
        self, deliver: Deliver, stop: threading.Event, ready: threading.Event | None = None
    ) -> None:
        """Call ``deliver`` for each message until ``stop`` is set (blocks; run it in a thread).

        ``ready`` is set once the messages sent from then on reach ``deliver``. After a lost
        connection it delivers ``{"op": "resync"}``: messages may have been lost (the
        worker checks the counts of the other workers' writes).
        """


# ---------------------------------------------------------------- SQL (SQLite, PostgreSQL)


def create_sql_engine(url: StoreURL) -> Engine:
    """An SQLAlchemy engine for a ``sqlite:`` or ``postgresql:`` URL."""
    import os

    require_driver(url)
    from sqlalchemy import create_engine, event

    if url.kind == "sqlite":
        directory = os.path.dirname(os.path.abspath(url.path))
        os.makedirs(directory, exist_ok=True)
        engine = create_engine(url.url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers in other processes go on while one writes.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    scheme, rest = url.url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg2"
    # A worker stopped (SIGSTOP, a frozen VM) in the middle of a transaction would hold its
    # row locks (the fence's, the lease's) for as long as it stays stopped, and no other
    # worker could take over: the server ends such a session after IDLE_IN_TRANSACTION.
    options = f"-c idle_in_transaction_session_timeout={int(IDLE_IN_TRANSACTION * 1000)}"
    try:
        return create_engine(
            f"{scheme}://{rest}",
            pool_pre_ping=True,
            connect_args={"options": options},
            # The writer's batches update and delete many rows at once: in pages of
            # statements per round trip, not a round trip per row.
            executemany_mode="values_plus_batch",
        )
    except (ValueError, TypeError) as exc:
        raise _bad_url(url, exc) from None


def create_tables(engine: Engine, tables: Sequence[Table]) -> None:
    """Create the missing tables, safely when several workers start at once.

    On PostgreSQL an advisory lock serialises the workers; on SQLite (whose check and
    create are not one step) a worker that lost the race sees the table on a retry.
    """
    import zlib

    from sqlalchemy import func, select

    key = zlib.crc32(",".join(t.name for t in tables).encode())
    for attempt in range(5):
        try:
            with engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    connection.execute(select(func.pg_advisory_xact_lock(key)))
                for table in tables:
                    table.create(connection, checkfirst=True)
            return
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))


def check_tables(engine: Engine, tables: Sequence[Table]) -> None:
    """Refuse a table of ours that exists without the columns we need (someone else's)."""
    from sqlalchemy import inspect

    with engine.connect() as connection:
        inspector = inspect(connection)
        for table in tables:
            found = [column["name"] for column in inspector.get_columns(table.name)]
            needed = [column.name for column in table.columns]
            missing = [name for name in needed if name not in found]
            if missing:
                raise ForeignSchemaError(
                    f"table {table.name!r} is not the scheduler's: it has the columns "
                    f"{', '.join(found)}; the scheduler needs {', '.join(needed)}. Give "
                    "SchedulerConfig a namespace=... of its own (the prefix of its tables), "
                    "or another database"
                )


class SqlState(StateBackend):
    """Tables ``<namespace>_state``, ``_removed``, ``_fires``, ``_workers``, ``_epoch`` (and
    ``_messages`` on SQLite) beside APScheduler's ``<namespace>_jobs``."""

    def __init__(self, url: StoreURL, namespace: str, engine: Engine) -> None:
        from sqlalchemy import (
            BigInteger,
            Boolean,
            Column,
            Float,
            Integer,
            LargeBinary,
            MetaData,
            Table,
            Unicode,
            UnicodeText,
        )

        super().__init__(url, namespace)
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._jobs_table: Table | None = None
        self._put_statements: dict[str, Any] = {}  # ``_put_rows_postgres``'s, compiled once
        # The claims' thread's own connection and statement (``_claim_many_postgres``).
        self._claims_connection: Any = None
        self._claim_statement: Any = None
        self.channel = f"{namespace}_messages"
        md = MetaData()
        self.metadata = md
        self.state_t = Table(
            f"{namespace}_state",
            md,
            Column("job_id", Unicode(191), primary_key=True),
            Column("field", Unicode(100), primary_key=True),
            Column("value", LargeBinary, nullable=False),
        )
        self.removed_t = Table(
            f"{namespace}_removed",
            md,
            Column("job_id", Unicode(191), primary_key=True),
            Column("removed_at", Float, nullable=False),
        )
        self.fires_t = Table(
            f"{namespace}_fires",
            md,
            Column("job_id", Unicode(191), primary_key=True),
            Column("fire", Unicode(64), primary_key=True),
            Column("worker", Unicode(200), nullable=False),
            Column("claimed_at", Float, nullable=False, index=True),
        )
        self.inflight_t = Table(
            f"{namespace}_inflight",
            md,
            Column("job_id", Unicode(191), primary_key=True),
            Column("fire", Unicode(64), primary_key=True),
            Column("worker", Unicode(200), nullable=False),
            Column("started", Boolean, nullable=False),
            Column("claimed_at", Float, nullable=False),
        )
        self.fence_t = Table(
            f"{namespace}_fence",
            md,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("token", BigInteger, nullable=False),
        )
        self.changes_t = Table(
            f"{namespace}_changes",
            md,
            Column("worker", Unicode(200), primary_key=True),
            Column("count", BigInteger, nullable=False),
        )
        self.workers_t = Table(
            f"{namespace}_workers",
            md,
            Column("worker_id", Unicode(200), primary_key=True),
            Column("info", UnicodeText, nullable=False),
            Column("seen_at", Float, nullable=False),
        )
        self.epoch_t = Table(
            f"{namespace}_epoch",
            md,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("epoch", Unicode(64), nullable=False),
            Column("created_at", Float, nullable=False),
        )
        self.messages_t = Table(
            f"{namespace}_messages",
            md,
            Column("seq", Integer, primary_key=True, autoincrement=True),
            Column("payload", UnicodeText, nullable=False),
            Column("sent_at", Float, nullable=False),
            sqlite_autoincrement=True,  # sequence numbers never go back after a prune
        )

    def make_jobstore(self) -> BaseJobStore:
        from .sqlalchemy_store import GuardedSQLAlchemyJobStore

        store = GuardedSQLAlchemyJobStore(self.engine, f"{self.namespace}_jobs", self.url)
        store.fence_check = self.check_fence
        self._jobs_table = store.jobs_t
        return store

    def _insert(self, table: Any) -> Any:
        if self.postgres:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def _quote(self, table: Any) -> str:
        """``table``'s name as SQL writes it."""
        return str(self.engine.dialect.identifier_preparer.quote(table.name))

    def open(self) -> None:
        tables = [
            self.state_t,
            self.removed_t,
            self.fires_t,
            self.inflight_t,
            self.fence_t,
            self.changes_t,
            self.workers_t,
            self.epoch_t,
        ]
        if not self.postgres:
            tables.append(self.messages_t)
        if self._jobs_table is not None:
            tables.append(self._jobs_table)  # APScheduler's, before it races to make it
        with credentials_masked(self.url):
            create_tables(self.engine, tables)
            check_tables(self.engine, tables)

    def close(self) -> None:
        connection, self._claims_connection = self._claims_connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
        self.engine.dispose()

    def load(self, job_id: str) -> dict[str, bytes] | None:
        from sqlalchemy import select

        from .sqlalchemy_store import reading

        t = self.state_t
        with reading(self.engine) as connection:
            rows = connection.execute(select(t.c.field, t.c.value).where(t.c.job_id == job_id))
            fields = {row.field: bytes(row.value) for row in rows}
        return fields or None

    def load_all(self) -> dict[str, dict[str, bytes]]:
        from sqlalchemy import select

        from .sqlalchemy_store import reading

        t = self.state_t
        jobs: dict[str, dict[str, bytes]] = {}
        with reading(self.engine) as connection:  # 28 rows a job: no transaction held open
            for row in connection.execute(select(t.c.job_id, t.c.field, t.c.value)):
                jobs.setdefault(row.job_id, {})[row.field] = bytes(row.value)
        return jobs

    def check_fence(self, connection: Any, fence: int | None) -> None:
        """In a write's transaction: raise ``FencedError`` if a greater token has written;
        else hold the fence at ``fence`` (locking its row until the transaction ends, so no
        write checked against the old fence lands after a new leader's raise).

        Call it last, just before the commit: the row is then locked only for the commit,
        and one lane's writes (run state, say) do not keep another's (claims) waiting.
        Checked last, it holds as well as first: a raise committed before it refuses the
        whole transaction; a raise made after it waits for the commit."""
        if fence is not None:
            self._hold_fence(connection, fence)

    @contextlib.contextmanager
    def fenced(self, fence: int | None) -> Iterator[Any]:
        """A transaction whose writes land only if ``fence`` still holds: the fence is
        checked at its end (``check_fence``), also when the body returns early."""
        with self.engine.begin() as connection:
            yield connection
            self.check_fence(connection, fence)

    def _hold_fence(self, connection: Any, fence: int) -> None:
        """Set the fence to ``fence`` unless a greater token holds it (then raise
        ``FencedError``), locking its row until the transaction ends."""
        f = self.fence_t
        statement = self._insert(f).values(id=1, token=fence)
        statement = statement.on_conflict_do_update(
            index_elements=[f.c.id], set_={"token": fence}, where=f.c.token <= fence
        )
        if connection.execute(statement).rowcount != 1:
            raise FencedError(fence)

    def _count_change(self, connection: Any) -> int:
        """Store the count of this write (``_counted_to`` it once committed)."""
        from sqlalchemy import case

        c = self.changes_t
        counted = self._next_count()
        statement = self._insert(c).values(worker=self.writer_id, count=counted)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[c.c.worker],
                set_={"count": case((c.c.count < counted, counted), else_=c.c.count)},
            )
        )
        return counted

    def change_counts(self) -> dict[str, int]:
        from sqlalchemy import select

        from .sqlalchemy_store import reading

        c = self.changes_t
        query = select(c.c.worker, c.c.count).where(c.c.worker != self.writer_id)
        with reading(self.engine) as connection:
            return {str(w): int(n) for w, n in connection.execute(query)}

    def create(self, job_id: str, fields: Mapping[str, bytes], fence: int | None = None) -> None:
        with self.fenced(fence) as connection:
            counted = self._count_change(connection)
            self._create_rows(connection, {job_id: fields})
        self._counted_to(counted)

    def write_ops(
        self,
        creates: Mapping[str, Mapping[str, bytes]],
        changes: Mapping[str, Mapping[str, bytes]],
        deletes: Mapping[str, float],
        also: Callable[[Any], None] | None = None,
    ) -> None:
        if not (creates or changes or deletes or also):
            return
        with self.engine.begin() as connection:
            counted = self._count_change(connection)
            if creates:
                self._create_rows(connection, creates)
            if changes:
                self._update_fields(connection, changes)
            if deletes:
                self._delete_rows(connection, deletes)
            if also is not None:
                also(connection)
        self._counted_to(counted)

    def _create_rows(self, connection: Any, jobs: Mapping[str, Mapping[str, bytes]]) -> None:
        from .sqlalchemy_store import execute_rows

        t, r = self.state_t, self.removed_t
        ids = list(jobs)
        for start in range(0, len(ids), 1000):  # bounded IN lists
            chunk = ids[start : start + 1000]
            connection.execute(t.delete().where(t.c.job_id.in_(chunk)))
            connection.execute(r.delete().where(r.c.job_id.in_(chunk)))
        if self.postgres:
            self._put_rows_postgres(connection, jobs, only_stored=False)
            return
        execute_rows(
            connection,
            f"INSERT INTO {self._quote(t)} (job_id, field, value) VALUES (?, ?, ?)",
            ((job_id, k, v) for job_id, fields in jobs.items() for k, v in fields.items()),
        )

    def _put_rows_postgres(
        self, connection: Any, jobs: Mapping[str, Mapping[str, bytes]], only_stored: bool
    ) -> None:
        """PostgreSQL: insert or replace the fields' rows, a page of rows per statement
        (``only_stored``: of the jobs that still have rows).

        A page goes as two values: the bytes of every row's job id, field name and value one
        after the other (``bytea``), and their lengths (a comma-separated ``text``); the
        server cuts the rows out. The driver writes each out in one step, where arrays cost
        it about 0.7 us an element with the interpreter's lock held (60 us a job): the lock
        is the event loop's too. No per-row objects pile up for the garbage collector. The
        lengths are parsed once (``MATERIALIZED``: inlined, PostgreSQL parsed them again
        for every row, half again as slow on the server).
        """
        from sqlalchemy import text

        key = "stored" if only_stored else "any"
        statement = self._put_statements.get(key)
        if statement is None:
            table = self._quote(self.state_t)
            only = (
                f" WHERE EXISTS (SELECT 1 FROM {table} AS s WHERE s.job_id = u.job_id)"
                if only_stored
                else ""
            )
            statement = text(
                "WITH p AS MATERIALIZED ("
                " SELECT CAST(:data AS bytea) AS d,"
                " CAST(string_to_array(:lens, ',') AS int[]) AS n"
                "), q AS MATERIALIZED ("
                " SELECT d, n, ARRAY("
                "  SELECT CAST(1 + sum(x) OVER (ORDER BY k) - x AS int)"
                "  FROM unnest(n) WITH ORDINALITY AS e(x, k) ORDER BY k"
                " ) AS o FROM p"
                "), u AS ("
                " SELECT convert_from(substr(d, o[3 * i + 1], n[3 * i + 1]), 'UTF8') AS job_id,"
                " convert_from(substr(d, o[3 * i + 2], n[3 * i + 2]), 'UTF8') AS field,"
                " substr(d, o[3 * i + 3], n[3 * i + 3]) AS value"
                " FROM q, generate_series(0, cardinality(n) / 3 - 1) AS i"
                ")"
                f" INSERT INTO {table} (job_id, field, value)"
                f" SELECT u.job_id, u.field, u.value FROM u{only}"
                " ON CONFLICT (job_id, field) DO UPDATE SET value = EXCLUDED.value"
            )
            self._put_statements[key] = statement
        parts: list[bytes] = []
        lengths: list[int] = []
        names = _FIELD_NAME_BYTES

        def put() -> None:
            connection.execute(
                statement, {"data": b"".join(parts), "lens": ",".join(map(str, lengths))}
            )
            parts.clear()
            lengths.clear()

        for job_id, fields in jobs.items():
            encoded_id = job_id.encode()
            id_length = len(encoded_id)
            for name, value in fields.items():
                encoded_name = names.get(name)
                if encoded_name is None:
                    encoded_name = name.encode()
                    if len(names) < 256:  # the record's field names: a few dozen
                        names[name] = encoded_name
                parts += (encoded_id, encoded_name, value)
                lengths += (id_length, len(encoded_name), len(value))
            if len(lengths) >= 3 * ROWS_PER_STATEMENT:
                put()
        if lengths:
            put()

    def _update_fields(self, connection: Any, updates: Mapping[str, Mapping[str, bytes]]) -> None:
        """Change fields of the jobs still stored (a job removed meanwhile is left out)."""
        from sqlalchemy import select

        from .sqlalchemy_store import execute_rows

        if self.postgres:
            self._put_rows_postgres(connection, updates, only_stored=True)
            return
        t = self.state_t
        stored: dict[str, set[str]] = {}
        ids = list(updates)
        for start in range(0, len(ids), 1000):
            query = select(t.c.job_id, t.c.field).where(t.c.job_id.in_(ids[start : start + 1000]))
            for row in connection.execute(query):
                stored.setdefault(row.job_id, set()).add(row.field)
        table = self._quote(t)
        execute_rows(
            connection,
            f"UPDATE {table} SET value = ? WHERE job_id = ? AND field = ?",
            (
                (value, job_id, name)
                for job_id, fields in updates.items()
                for name, value in fields.items()
                if name in stored.get(job_id, ())
            ),
        )
        execute_rows(  # fields new to a job stored before they existed
            connection,
            f"INSERT INTO {table} (job_id, field, value) VALUES (?, ?, ?)",
            (
                (job_id, name, value)
                for job_id, fields in updates.items()
                if job_id in stored
                for name, value in fields.items()
                if name not in stored[job_id]
            ),
        )

    def _delete_rows(self, connection: Any, deletes: Mapping[str, float]) -> None:
        t, r, i = self.state_t, self.removed_t, self.inflight_t
        ids = list(deletes)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            connection.execute(t.delete().where(t.c.job_id.in_(chunk)))
            connection.execute(i.delete().where(i.c.job_id.in_(chunk)))
        insert = self._insert(r)
        statement = insert.on_conflict_do_update(
            index_elements=[r.c.job_id], set_={"removed_at": insert.excluded.removed_at}
        )
        connection.execute(
            statement, [{"job_id": j, "removed_at": at} for j, at in deletes.items()]
        )

    def update(self, job_id: str, fields: Mapping[str, bytes], fence: int | None = None) -> bool:
        from sqlalchemy import select

        t = self.state_t
        with self.fenced(fence) as connection:
            query = select(t.c.field).where(t.c.job_id == job_id).limit(1)
            if connection.execute(query).first() is None:
                return False
            counted = self._count_change(connection)
            self._update_fields(connection, {job_id: fields})
        self._counted_to(counted)
        return True

    def tombstones(self) -> dict[str, float]:
        from sqlalchemy import select

        r = self.removed_t
        with self.engine.begin() as connection:
            return {row.job_id: row.removed_at for row in connection.execute(select(r))}

    def claim(
        self, job_id: str, token: str, worker_id: str, fence: int | None = None, track: bool = False
    ) -> bool:
        now = time.time()
        statement = (
            self._insert(self.fires_t)
            .values(job_id=job_id, fire=token, worker=worker_id, claimed_at=now)
            .on_conflict_do_nothing()
        )
        with self.fenced(fence) as connection:
            if connection.execute(statement).rowcount != 1:
                return False
            if track:
                connection.execute(
                    self.inflight_t.insert().values(
                        job_id=job_id, fire=token, worker=worker_id, started=False, claimed_at=now
                    )
                )
            return True

    def claim_many(
        self,
        fires: Sequence[tuple[str, str]],
        worker_id: str,
        fence: int | None = None,
        retried: Collection[tuple[str, str]] = (),
    ) -> list[bool]:
        if not fires:
            return []
        unique = list(dict.fromkeys(fires))
        if self.postgres and fence is not None:
            return self._claim_many_postgres(unique, fires, worker_id, fence, set(retried))
        now = time.time()
        f, i = self.fires_t, self.inflight_t
        rows = [{"job_id": j, "fire": t, "worker": worker_id, "claimed_at": now} for j, t in unique]
        # One statement for any number of rows (executed as multi-row inserts, compiled
        # once): the rows returned are the fires this call claimed.
        statement = self._insert(f).on_conflict_do_nothing().returning(f.c.job_id, f.c.fire)
        with self.fenced(fence) as connection:
            claimed = {(r.job_id, r.fire) for r in connection.execute(statement, rows)}
            if claimed:
                connection.execute(
                    i.insert(),
                    [{**r, "started": False} for r in rows if (r["job_id"], r["fire"]) in claimed],
                )
            retried = set(retried)
            again = [f for f in unique if f in retried and f not in claimed]
            if again:  # an earlier write of this worker's that landed unanswered
                claimed |= self._claimed_by(connection, worker_id, again)
        return [(j, t) in claimed for j, t in fires]

    def _claimed_by(
        self, connection: Any, worker_id: str, fires: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        from sqlalchemy import select, tuple_

        f = self.fires_t
        mine: set[tuple[str, str]] = set()
        for start in range(0, len(fires), 500):
            chunk = list(fires[start : start + 500])
            query = select(f.c.job_id, f.c.fire).where(
                f.c.worker == worker_id, tuple_(f.c.job_id, f.c.fire).in_(chunk)
            )
            mine.update((row.job_id, row.fire) for row in connection.execute(query))
        return mine

    def _claim_many_postgres(
        self,
        unique: list[tuple[str, str]],
        fires: Sequence[tuple[str, str]],
        worker_id: str,
        fence: int,
        retried: set[tuple[str, str]],
    ) -> list[bool]:
        """Claims on PostgreSQL in one statement, one round trip: hold the fence, insert
        the fires' rows, track the ones claimed. Its own transaction (autocommit), on a
        connection the claims' thread keeps: a claim waits for the server once, not for a
        check-out, a BEGIN, three statements and a COMMIT, each of which can also wait for
        the interpreter's lock when the event loop is busy."""
        from sqlalchemy import text

        if self._claim_statement is None:
            fence_t, fires_t, inflight_t = (
                self._quote(t) for t in (self.fence_t, self.fires_t, self.inflight_t)
            )
            # The first row (no job) says the fence held; the others are the claimed fires.
            self._claim_statement = text(
                f"WITH held AS ("
                f" INSERT INTO {fence_t} (id, token) VALUES (1, :fence)"
                f" ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token"
                f" WHERE {fence_t}.token <= EXCLUDED.token RETURNING token"
                f"), claimed AS ("
                f" INSERT INTO {fires_t} (job_id, fire, worker, claimed_at)"
                f" SELECT u.job_id, u.fire, :worker, :now"
                f" FROM unnest(CAST(:job_ids AS text[]), CAST(:fire_ids AS text[]))"
                f" AS u(job_id, fire)"
                f" WHERE EXISTS (SELECT 1 FROM held)"
                f" ON CONFLICT DO NOTHING RETURNING job_id, fire"
                f"), tracked AS ("
                f" INSERT INTO {inflight_t} (job_id, fire, worker, started, claimed_at)"
                f" SELECT job_id, fire, :worker, false, :now FROM claimed"
                # Retried fires this worker's unanswered earlier write claimed (the
                # statement's snapshot: rows from before it, not the ones it inserts).
                f"), again AS ("
                f" SELECT f.job_id, f.fire FROM {fires_t} AS f"
                f" JOIN unnest(CAST(:retried_jobs AS text[]), CAST(:retried_fires AS text[]))"
                f" AS r(job_id, fire) ON f.job_id = r.job_id AND f.fire = r.fire"
                f" WHERE f.worker = :worker AND EXISTS (SELECT 1 FROM held)"
                f") SELECT NULL AS job_id, NULL AS fire FROM held"
                f" UNION ALL SELECT job_id, fire FROM claimed"
                f" UNION ALL SELECT job_id, fire FROM again"
            )
        params = {
            "fence": fence,
            "worker": worker_id,
            "now": time.time(),
            "job_ids": [j for j, _ in unique],
            "fire_ids": [t for _, t in unique],
            "retried_jobs": [j for j, t in unique if (j, t) in retried],
            "retried_fires": [t for j, t in unique if (j, t) in retried],
        }
        connection = self._claims_connection
        if connection is None:
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._claims_connection = connection
        try:
            rows = connection.execute(self._claim_statement, params).all()
        except BaseException:
            self._claims_connection = None  # a new one next time, the server may have gone
            with contextlib.suppress(Exception):
                connection.invalidate()
                connection.close()
            raise
        if not any(row.job_id is None for row in rows):
            raise FencedError(fence)
        claimed = {(row.job_id, row.fire) for row in rows if row.job_id is not None}
        return [(j, t) in claimed for j, t in fires]

    def write_run_state(
        self,
        updates: Mapping[str, Mapping[str, bytes]],
        started: Sequence[tuple[str, str]],
        ended: Sequence[tuple[str, str]],
        fence: int | None = None,
    ) -> None:
        from sqlalchemy import and_, bindparam

        i = self.inflight_t
        counted = 0
        with self.fenced(fence) as connection:
            if updates:
                counted = self._count_change(connection)
                self._update_fields(connection, updates)
            match = and_(i.c.job_id == bindparam("j"), i.c.fire == bindparam("f"))
            if started:
                connection.execute(
                    i.update().where(match).values(started=True),
                    [{"j": j, "f": f} for j, f in started],
                )
            if ended:
                connection.execute(i.delete().where(match), [{"j": j, "f": f} for j, f in ended])
        self._counted_to(counted)

    def start_fire(self, job_id: str, token: str, fence: int | None = None) -> None:
        i = self.inflight_t
        with self.fenced(fence) as connection:
            connection.execute(
                i.update().where(i.c.job_id == job_id, i.c.fire == token).values(started=True)
            )

    def end_fires(self, fires: Sequence[tuple[str, str]], fence: int | None = None) -> None:
        from sqlalchemy import and_, bindparam

        if not fires:
            return
        i = self.inflight_t
        statement = i.delete().where(and_(i.c.job_id == bindparam("j"), i.c.fire == bindparam("f")))
        with self.fenced(fence) as connection:
            connection.execute(statement, [{"j": j, "f": f} for j, f in fires])

    def release_fires(self, fires: Sequence[tuple[str, str]], worker_id: str) -> None:
        from sqlalchemy import and_, bindparam, exists, select

        if not fires:
            return
        f, i = self.fires_t, self.inflight_t
        rows = [{"j": j, "t": t, "w": worker_id} for j, t in fires]
        fire = and_(i.c.job_id == bindparam("j"), i.c.fire == bindparam("t"))
        started = exists(select(i.c.job_id).where(fire, i.c.started.is_(True)))
        claim = and_(
            f.c.job_id == bindparam("j"), f.c.fire == bindparam("t"), f.c.worker == bindparam("w")
        )
        with self.engine.begin() as connection:
            # The claim, unless its run started (its entry in flight may be gone with its job).
            connection.execute(f.delete().where(claim, ~started), rows)
            connection.execute(
                i.delete().where(fire, i.c.worker == bindparam("w"), i.c.started.is_(False)), rows
            )

    def raise_fence(self, fence: int, lock_wait: float | None = None) -> None:
        from sqlalchemy import text

        with self.engine.begin() as connection:
            if lock_wait is not None and self.postgres:
                # A waiting raise would hold up the lease's thread past the lease.
                milliseconds = max(1, int(lock_wait * 1000))
                connection.execute(text(f"SET LOCAL lock_timeout = {milliseconds}"))
            self._hold_fence(connection, fence)

    def in_flight(self) -> list[InFlight]:
        from sqlalchemy import select

        i = self.inflight_t
        query = select(i.c.job_id, i.c.fire, i.c.worker, i.c.started)
        with self.engine.begin() as connection:
            return [
                InFlight(r.job_id, r.fire, r.worker, bool(r.started))
                for r in connection.execute(query)
            ]

    def heartbeat(self, worker_id: str, info: Mapping[str, Any], live_for: float) -> list[Message]:
        from sqlalchemy import select

        w = self.workers_t
        now = time.time()
        text = json.dumps(dict(info))
        statement = self._insert(w).values(worker_id=worker_id, info=text, seen_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=[w.c.worker_id], set_={"info": text, "seen_at": now}
        )
        with self.engine.begin() as connection:
            connection.execute(statement)
            rows = connection.execute(
                select(w.c.info, w.c.seen_at).where(w.c.seen_at >= now - live_for)
            )
            return [{**json.loads(row.info), "seen_at": row.seen_at} for row in rows]

    def leave(self, worker_id: str) -> None:
        w = self.workers_t
        with self.engine.begin() as connection:
            connection.execute(w.delete().where(w.c.worker_id == worker_id))

    def prune(self, now: float) -> None:
        f, r, w, m = self.fires_t, self.removed_t, self.workers_t, self.messages_t
        with self.engine.begin() as connection:
            connection.execute(f.delete().where(f.c.claimed_at < now - CLAIM_TTL))
            i = self.inflight_t
            connection.execute(i.delete().where(i.c.claimed_at < now - CLAIM_TTL))
            connection.execute(r.delete().where(r.c.removed_at < now - TOMBSTONE_TTL))
            connection.execute(w.delete().where(w.c.seen_at < now - WORKER_TTL))
            if not self.postgres:
                connection.execute(m.delete().where(m.c.sent_at < now - MESSAGE_TTL))

    def read_epoch(self) -> str | None:
        from sqlalchemy import inspect, select

        e = self.epoch_t
        try:
            with self.engine.begin() as connection:
                return cast("str | None", connection.execute(select(e.c.epoch)).scalar())
        except Exception:
            with self.engine.connect() as connection:
                if not inspect(connection).has_table(e.name):
                    return None  # the table was dropped: the data is gone
            raise

    def ensure_epoch(self, epoch: str) -> str:
        e = self.epoch_t
        statement = (
            self._insert(e)
            .values(id=1, epoch=epoch, created_at=time.time())
            .on_conflict_do_nothing()
        )
        with self.engine.begin() as connection:
            connection.execute(statement)
        return self.read_epoch() or epoch

    def server_time(self) -> float | None:
        if not self.postgres:
            return None  # SQLite is a file on this machine: it has no clock of its own
        from sqlalchemy import text

        with self.engine.begin() as connection:
            value = connection.execute(text("SELECT extract(epoch from clock_timestamp())"))
            return float(value.scalar_one())

    def publish(self, message: Message) -> None:
        from sqlalchemy import func, select

        payload = json.dumps(message)
        with self.engine.begin() as connection:
            if self.postgres:
                connection.execute(select(func.pg_notify(self.channel, payload)))
            else:
                connection.execute(
                    self.messages_t.insert().values(payload=payload, sent_at=time.time())
                )

    def listen(
        self, deliver: Deliver, stop: threading.Event, ready: threading.Event | None = None
    ) -> None:
        ready = threading.Event() if ready is None else ready
        if self.postgres:
            self._listen_postgres(deliver, stop, ready)
        else:
            self._poll_messages(deliver, stop, ready)

    def _poll_messages(
        self, deliver: Deliver, stop: threading.Event, ready: threading.Event
    ) -> None:
        """SQLite: read the messages table every ``POLL_SECONDS``, on a connection of its
        own, kept. A poll first asks SQLite's ``PRAGMA data_version``, which changes only
        when another connection has committed: an idle poll is that one pragma, not a
        query (this worker's own writes are on other connections, so they count)."""
        table = self.messages_t.name.replace('"', '""')
        newest = f'SELECT max(seq) FROM "{table}"'
        newer = f'SELECT seq, payload FROM "{table}" WHERE seq > ? ORDER BY seq'
        connection: Any = None
        last: int | None = None
        version: object = None
        failing = False
        while not stop.is_set():
            try:
                if connection is None:
                    proxy = self.engine.raw_connection()
                    connection = proxy.driver_connection
                    proxy.detach()  # this thread's alone, never handed back to the pool
                    version = None
                current = connection.execute("PRAGMA data_version").fetchone()[0]
                rows: list[Any] = []
                if last is None:
                    last = connection.execute(newest).fetchone()[0] or 0
                elif current != version:
                    rows = connection.execute(newer, (last,)).fetchall()
                version = current
                ready.set()
                if failing:
                    failing = False
                    deliver({"op": "resync"})
                for seq, payload in rows:
                    last = seq
                    deliver(json.loads(payload))
            except Exception as exc:
                if not failing:
                    logger.warning(
                        "cannot read scheduler messages from %s: %s",
                        self.url,
                        self.url.scrub(str(exc)),
                    )
                failing = True
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()
                    connection = None
            stop.wait(POLL_SECONDS)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def _listen_postgres(
        self, deliver: Deliver, stop: threading.Event, ready: threading.Event
    ) -> None:
        connected_once = failing = False
        while not stop.is_set():
            proxy = None
            try:
                proxy = self.engine.raw_connection()
                connection = cast(Any, proxy.driver_connection)
                proxy.detach()  # a listening session is never handed back to the pool
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute(f'LISTEN "{self.channel}"')
                ready.set()
                if connected_once:
                    deliver({"op": "resync"})
                connected_once, failing = True, False
                while not stop.is_set():
                    readable, _, _ = selectors.select([connection], [], [], 0.5)
                    if not readable:
                        continue
                    connection.poll()
                    while connection.notifies:
                        note = connection.notifies.pop(0)
                        deliver(json.loads(note.payload))
            except Exception as exc:
                if not failing:
                    logger.warning(
                        "lost the scheduler message channel on %s: %s",
                        self.url,
                        self.url.scrub(str(exc)),
                    )
                failing = True
                stop.wait(1.0)
            finally:
                if proxy is not None:
                    with contextlib.suppress(Exception):
                        proxy.close()


# ---------------------------------------------------------------- Redis

# Every script below begins with the fence: KEYS[1] is the fence key, ARGV[1] the writer's
# token ('' for a write that is not checked). -1: refused, a greater token has written.
_FENCE = """
if ARGV[1] ~= '' then
  local held = tonumber(redis.call('GET', KEYS[1]) or '0')
  if held > tonumber(ARGV[1]) then return -1 end
  redis.call('SET', KEYS[1], ARGV[1])
end
"""

# The writer's count of its writes, kept if greater than the one stored.
# KEYS: the change counts (by writer). ARGV: writer id, count.
_COUNT = """
local counted = tonumber(ARGV[2])
if counted > tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[1], ARGV[1], counted)
end
"""

# Many jobs' state hashes, each replaced (``replace`` '1') or changed if it exists ('0').
# KEYS: the jobs' state hashes. ARGV: replace, then for each job in turn its number of
# fields and those fields (name, value, name, value, ...).
_PUT_MANY = """
local replace = ARGV[1] == '1'
local at = 2
for _, key in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  local last = at + 2 * count
  if replace then redis.call('DEL', key) end
  if count > 0 and (replace or redis.call('EXISTS', key) == 1) then
    redis.call('HSET', key, unpack(ARGV, at + 1, last))
  end
  at = last + 1
end
"""

# KEYS: fence, the job's state hash, the change counts (by writer).
# ARGV: token, writer id, count, field, value, field, value, ...
_UPDATE_IF_PRESENT = (
    _FENCE
    + """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
local counted = tonumber(ARGV[3])
if counted > tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0') then
  redis.call('HSET', KEYS[3], ARGV[2], counted)
end
return 1
"""
)

# KEYS: fence, the job's state hash, the ids set, the removals hash, the change counts.
# ARGV: token, job id, writer id, count, field, value, field, value, ...
_CREATE = (
    _FENCE
    + """
local counted = tonumber(ARGV[4])
if counted > tonumber(redis.call('HGET', KEYS[5], ARGV[3]) or '0') then
  redis.call('HSET', KEYS[5], ARGV[3], counted)
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
return 1
"""
)

# KEYS: fence, the fire's key, the in-flight hash.
# ARGV: token, worker id, seconds to keep the claim, in-flight field ('': not tracked), entry.
_CLAIM = (
    _FENCE
    + """
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[3]) then return 0 end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[4], ARGV[5]) end
return 1
"""
)

# KEYS: fence, the in-flight hash, then each fire's key.
# ARGV: token, worker id, seconds to keep a claim, then each fire's in-flight field, entry
# and '1' if it is retried (an earlier write of it was not answered), else '0'.
_CLAIM_MANY = (
    _FENCE
    + """
local claimed = {}
for n = 3, #KEYS do
  local field = ARGV[1 + 3 * (n - 2)]
  local entry = ARGV[2 + 3 * (n - 2)]
  local retried = ARGV[3 + 3 * (n - 2)]
  if redis.call('SET', KEYS[n], ARGV[2], 'NX', 'EX', ARGV[3]) then
    redis.call('HSET', KEYS[2], field, entry)
    claimed[#claimed + 1] = 1
  elseif retried == '1' and redis.call('GET', KEYS[n]) == ARGV[2] then
    claimed[#claimed + 1] = 1  -- this worker's own earlier write, unanswered
  else
    claimed[#claimed + 1] = 0
  end
end
return claimed
"""
)

# KEYS: fence, the in-flight hash. ARGV: token, field.
_START_FIRE = (
    _FENCE
    + """
local entry = redis.call('HGET', KEYS[2], ARGV[2])
if not entry then return 0 end
local value = cjson.decode(entry)
value['started'] = true
redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(value))
return 1
"""
)

# A page of a write of run state: fires started, fires ended, and the run state of jobs
# still stored.
# KEYS: fence, the in-flight hash, the change counts, then each job's state hash.
# ARGV: token, writer id, count, the number of fires started and of fires ended, their
# in-flight fields, then for each job its number of fields and those fields.
_RUN_STATE_MANY = (
    _FENCE
    + """
local starts, ends = tonumber(ARGV[4]), tonumber(ARGV[5])
local at = 6
for n = at, at + starts - 1 do
  local entry = redis.call('HGET', KEYS[2], ARGV[n])
  if entry then
    local value = cjson.decode(entry)
    value['started'] = true
    redis.call('HSET', KEYS[2], ARGV[n], cjson.encode(value))
  end
end
at = at + starts
if ends > 0 then redis.call('HDEL', KEYS[2], unpack(ARGV, at, at + ends - 1)) end
at = at + ends
local wrote = false
for k = 4, #KEYS do
  local count = tonumber(ARGV[at])
  local last = at + 2 * count
  if count > 0 and redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('HSET', KEYS[k], unpack(ARGV, at + 1, last))
    wrote = true
  end
  at = last + 1
end
local counted = tonumber(ARGV[3])
if wrote and counted > tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0') then
  redis.call('HSET', KEYS[3], ARGV[2], counted)
end
return 1
"""
)

# Fires a worker gives back (not fenced). KEYS: the in-flight hash, then each fire's key.
# ARGV: worker id, then each fire's in-flight field. A fire is given back if its entry in
# flight is the worker's and its run has not started (or it has no entry), and its key is
# still the worker's.
_RELEASE = """
for n = 2, #KEYS do
  local field = ARGV[n]
  local entry = redis.call('HGET', KEYS[1], field)
  local mine = true
  if entry then
    local value = cjson.decode(entry)
    mine = value['worker'] == ARGV[1] and not value['started']
  end
  if mine and redis.call('GET', KEYS[n]) == ARGV[1] then
    redis.call('DEL', KEYS[n])
    if entry then redis.call('HDEL', KEYS[1], field) end
  end
end
return 1
"""

# KEYS: fence. ARGV: token.
_RAISE_FENCE = (
    _FENCE
    + """
return 1
"""
)

# KEYS: fence, the in-flight hash. ARGV: token, field, field, ...
_END_FIRES = (
    _FENCE
    + """
redis.call('HDEL', KEYS[2], unpack(ARGV, 2))
return 1
"""
)


def _in_flight_field(job_id: str, token: str) -> str:
    """A fire's field in the in-flight hash (``RedisState.in_flight`` splits it back)."""
    return f"{job_id}\x1f{token}"


def _fenced(result: Any, fence: int | None) -> int:
    """A script's answer; raises ``FencedError`` for -1 (refused by the fence)."""
    value = int(result)
    if value == -1:
        raise FencedError(fence or 0)
    return value


def _token(fence: int | None) -> str:
    return "" if fence is None else str(int(fence))


def create_redis_client(url: StoreURL) -> Redis:
    require_driver(url)
    from redis import Redis

    try:
        return Redis.from_url(url.url, health_check_interval=30)
    except (ValueError, TypeError) as exc:
        raise _bad_url(url, exc) from None


class RedisState(StateBackend):
    """Keys ``<namespace>:state:<job id>`` (hashes), ``:state_ids``, ``:removed``,
    ``:fire:<job id>:<token>``, ``:workers``, ``:epoch`` and the channel ``:messages``, beside
    APScheduler's ``<namespace>:jobs`` and ``<namespace>:run_times``."""

    def __init__(self, url: StoreURL, namespace: str, client: Redis) -> None:
        super().__init__(url, namespace)
        self.client = client
        self.prefix = f"{namespace}:"
        self.ids_key = self.prefix + "state_ids"
        self.removed_key = self.prefix + "removed"
        self.workers_key = self.prefix + "workers"
        self.epoch_key = self.prefix + "epoch"
        self.fence_key = self.prefix + "fence"
        self.changes_key = self.prefix + "changes"
        self.inflight_key = self.prefix + "inflight"
        self.channel = self.prefix + "messages"
        self._update_script = client.register_script(_UPDATE_IF_PRESENT)
        self._create_script = client.register_script(_CREATE)
        self._count_script = client.register_script(_COUNT)
        self._claim_script = client.register_script(_CLAIM)
        self._start_fire_script = client.register_script(_START_FIRE)
        self._end_fires_script = client.register_script(_END_FIRES)
        self._raise_fence_script = client.register_script(_RAISE_FENCE)
        self._claim_many_script = client.register_script(_CLAIM_MANY)
        self._put_many_script = client.register_script(_PUT_MANY)
        self._run_state_script = client.register_script(_RUN_STATE_MANY)
        self._release_script = client.register_script(_RELEASE)

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}state:{job_id}"

    def _fire_key(self, job_id: str, token: str) -> str:
        """The key of a fire's claim (its value: the worker that claimed it)."""
        return f"{self.prefix}fire:{job_id}:{token}"

    def make_jobstore(self) -> BaseJobStore:
        from redis.connection import parse_url

        from .redis_store import GuardedRedisJobStore

        options = dict(parse_url(self.url.url))  # type: ignore[no-untyped-call]
        try:
            store = GuardedRedisJobStore(
                jobs_key=self.prefix + "jobs", run_times_key=self.prefix + "run_times", **options
            )
        except (ValueError, TypeError) as exc:  # an option of the URL redis-py does not take
            raise _bad_url(self.url, exc) from None
        store.fence_key = self.fence_key
        return store

    def open(self) -> None:
        with credentials_masked(self.url):
            self.client.ping()
            self._check_keys()

    def _check_keys(self) -> None:
        """Refuse a key of ours that exists with another type (someone else's)."""
        expected = {
            self.prefix + "jobs": "hash",
            self.prefix + "run_times": "zset",
            self.ids_key: "set",
            self.removed_key: "hash",
            self.workers_key: "hash",
            self.epoch_key: "string",
            self.fence_key: "string",
            self.changes_key: "hash",
            self.inflight_key: "hash",
        }
        pipe = self.client.pipeline(transaction=False)
        for key in expected:
            pipe.type(key)
        for (key, wanted), found in zip(expected.items(), pipe.execute(), strict=True):
            kind = found.decode() if isinstance(found, bytes) else str(found)
            if kind not in ("none", wanted):
                raise ForeignSchemaError(
                    f"key {key!r} is not the scheduler's: it holds a {kind} where the "
                    f"scheduler keeps a {wanted}. Give SchedulerConfig a namespace=... of its "
                    "own (the prefix of its keys), or another database"
                )

    def close(self) -> None:
        self.client.connection_pool.disconnect()

    @staticmethod
    def _fields(raw: Mapping[Any, Any]) -> dict[str, bytes]:
        return {(k.decode() if isinstance(k, bytes) else str(k)): bytes(v) for k, v in raw.items()}

    def load(self, job_id: str) -> dict[str, bytes] | None:
        raw = cast(Mapping[Any, Any], self.client.hgetall(self._key(job_id)))
        return self._fields(raw) or None

    def load_all(self) -> dict[str, dict[str, bytes]]:
        ids = sorted(
            i.decode() if isinstance(i, bytes) else str(i)
            for i in cast(set[Any], self.client.smembers(self.ids_key))
        )
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._key(job_id))
        jobs: dict[str, dict[str, bytes]] = {}
        for job_id, raw in zip(ids, pipe.execute(), strict=True):
            if raw:
                jobs[job_id] = self._fields(raw)
        return jobs

    def create(self, job_id: str, fields: Mapping[str, bytes], fence: int | None = None) -> None:
        counted = self._next_count()
        args: list[Any] = [_token(fence), job_id, self.writer_id, counted]
        for name, value in fields.items():
            args += [name, value]
        keys = [
            self.fence_key,
            self._key(job_id),
            self.ids_key,
            self.removed_key,
            self.changes_key,
        ]
        _fenced(self._create_script(keys=keys, args=args), fence)
        self._counted_to(counted)

    def update(self, job_id: str, fields: Mapping[str, bytes], fence: int | None = None) -> bool:
        counted = self._next_count()
        args: list[Any] = [_token(fence), self.writer_id, counted]
        for name, value in fields.items():
            args += [name, value]
        keys = [self.fence_key, self._key(job_id), self.changes_key]
        written = bool(_fenced(self._update_script(keys=keys, args=args), fence))
        if written:
            self._counted_to(counted)
        return written

    def write_ops(
        self,
        creates: Mapping[str, Mapping[str, bytes]],
        changes: Mapping[str, Mapping[str, bytes]],
        deletes: Mapping[str, float],
        also: Callable[[Any], None] | None = None,
    ) -> None:
        if not (creates or changes or deletes or also):
            return
        if deletes:
            inflight = [f for f in self._inflight_raw() if f.split("\x1f", 1)[0] in deletes]
        pipe = self.client.pipeline(transaction=True)
        counted = self._next_count()
        self._count_script(keys=[self.changes_key], args=[self.writer_id, counted], client=pipe)
        self._put_many(pipe, creates, replace=True)
        created = list(creates)
        for first in range(0, len(created), MANY):  # one command for many ids
            pipe.sadd(self.ids_key, *created[first : first + MANY])
            pipe.hdel(self.removed_key, *created[first : first + MANY])
        self._put_many(pipe, changes, replace=False)  # of the jobs still stored
        for job_id, removed_at in deletes.items():
            pipe.delete(self._key(job_id))
            pipe.srem(self.ids_key, job_id)
            pipe.hset(self.removed_key, job_id, repr(removed_at))
        if deletes and inflight:
            pipe.hdel(self.inflight_key, *inflight)
        if also is not None:
            also(pipe)
        pipe.execute()
        self._counted_to(counted)

    def _put_many(self, pipe: Any, jobs: Mapping[str, Mapping[str, bytes]], replace: bool) -> None:
        """Queue on ``pipe`` the writes of ``jobs``' fields: ``replace`` each job's hash, or
        change the fields of each job still stored. A command per page of jobs (about
        ``MANY`` values), not one or two per job: a pipeline holds every command queued
        until it is sent, so a write of thousands of jobs would hold thousands of objects
        long enough for the garbage collector to move them into its oldest generation."""
        keys: list[str] = []
        args: list[Any] = ["1" if replace else "0"]
        for job_id, fields in jobs.items():
            keys.append(self._key(job_id))
            args.append(len(fields))
            for name, value in fields.items():
                args += (name, value)
            if len(args) >= MANY:
                self._put_many_script(keys=keys, args=args, client=pipe)
                keys, args = [], [args[0]]
        if keys:
            self._put_many_script(keys=keys, args=args, client=pipe)

    def change_counts(self) -> dict[str, int]:
        raw = cast(Mapping[Any, Any], self.client.hgetall(self.changes_key))
        found = {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
        found.pop(self.writer_id, None)
        return found

    def tombstones(self) -> dict[str, float]:
        raw = cast(Mapping[Any, Any], self.client.hgetall(self.removed_key))
        return {k.decode(): float(v) for k, v in raw.items()}

    def claim(
        self, job_id: str, token: str, worker_id: str, fence: int | None = None, track: bool = False
    ) -> bool:
        key = self._fire_key(job_id, token)
        field = _in_flight_field(job_id, token) if track else ""
        entry = json.dumps({"worker": worker_id, "started": False, "at": time.time()})
        keys = [self.fence_key, key, self.inflight_key]
        args: list[Any] = [_token(fence), worker_id, int(CLAIM_TTL), field, entry]
        return bool(_fenced(self._claim_script(keys=keys, args=args), fence))

    def claim_many(
        self,
        fires: Sequence[tuple[str, str]],
        worker_id: str,
        fence: int | None = None,
        retried: Collection[tuple[str, str]] = (),
    ) -> list[bool]:
        unique = list(dict.fromkeys(fires))
        if not unique:
            return []
        entry = json.dumps({"worker": worker_id, "started": False, "at": time.time()})
        keys = [self.fence_key, self.inflight_key]
        again = set(retried)
        args: list[Any] = [_token(fence), worker_id, int(CLAIM_TTL)]
        for job_id, token in unique:
            keys.append(self._fire_key(job_id, token))
            args += [
                _in_flight_field(job_id, token),
                entry,
                "1" if (job_id, token) in again else "0",
            ]
        answer = self._claim_many_script(keys=keys, args=args)
        if not isinstance(answer, list):
            _fenced(answer, fence)
            return [False] * len(fires)
        claimed = {fire for fire, ok in zip(unique, answer, strict=True) if int(ok) == 1}
        return [fire in claimed for fire in fires]

    def write_run_state(
        self,
        updates: Mapping[str, Mapping[str, bytes]],
        started: Sequence[tuple[str, str]],
        ended: Sequence[tuple[str, str]],
        fence: int | None = None,
    ) -> None:
        counted = self._next_count() if updates else 0
        pipe = self.client.pipeline(transaction=False)
        for keys, args in self._run_state_pages(updates, started, ended, _token(fence), counted):
            self._run_state_script(keys=keys, args=args, client=pipe)
        for answer in pipe.execute():
            _fenced(answer, fence)
        self._counted_to(counted)

    def _run_state_pages(
        self,
        updates: Mapping[str, Mapping[str, bytes]],
        started: Sequence[tuple[str, str]],
        ended: Sequence[tuple[str, str]],
        token: str,
        counted: int,
    ) -> Iterator[tuple[list[str], list[Any]]]:
        """A write of run state as script calls of about ``MANY`` values each, not a call
        per job (a pipeline holds every call until it is sent). A job's fires started and
        ended go in the same call as its fields: the store holds a run's start and the
        run state that counts it both or neither. Built with a few lists per call and no
        object per job, which the garbage collector would have to look at."""
        page_of: dict[str, int] = {}
        sizes = [0]

        def place(job_id: str, size: int) -> int:
            page = page_of.get(job_id)
            if page is None:
                if sizes[-1] >= MANY:
                    sizes.append(0)
                page = page_of[job_id] = len(sizes) - 1
            sizes[page] += size
            return page

        for job_id, fields in updates.items():
            place(job_id, 1 + 2 * len(fields))
        for job_id, _ in (*started, *ended):
            place(job_id, 1)
        count = len(sizes)
        keys: list[list[str]] = [[self.fence_key, self.inflight_key, self.changes_key]]
        keys += [list(keys[0]) for _ in range(count - 1)]
        starts: list[list[str]] = [[] for _ in range(count)]
        ends: list[list[str]] = [[] for _ in range(count)]
        values: list[list[Any]] = [[] for _ in range(count)]
        for job_id, fire in started:
            starts[page_of[job_id]].append(_in_flight_field(job_id, fire))
        for job_id, fire in ended:
            ends[page_of[job_id]].append(_in_flight_field(job_id, fire))
        for job_id, fields in updates.items():
            page = page_of[job_id]
            keys[page].append(self._key(job_id))
            values[page].append(len(fields))
            for name, value in fields.items():
                values[page] += (name, value)
        for page in range(count):
            if len(keys[page]) == 3 and not starts[page] and not ends[page]:
                continue  # nothing to write (an empty write)
            head = [token, self.writer_id, counted, len(starts[page]), len(ends[page])]
            yield keys[page], [*head, *starts[page], *ends[page], *values[page]]

    def start_fire(self, job_id: str, token: str, fence: int | None = None) -> None:
        keys = [self.fence_key, self.inflight_key]
        _fenced(
            self._start_fire_script(
                keys=keys, args=[_token(fence), _in_flight_field(job_id, token)]
            ),
            fence,
        )

    def end_fires(self, fires: Sequence[tuple[str, str]], fence: int | None = None) -> None:
        if not fires:
            return
        keys = [self.fence_key, self.inflight_key]
        args = [_token(fence), *(_in_flight_field(j, t) for j, t in fires)]
        _fenced(self._end_fires_script(keys=keys, args=args), fence)

    def release_fires(self, fires: Sequence[tuple[str, str]], worker_id: str) -> None:
        for start in range(0, len(fires), MANY):
            page = fires[start : start + MANY]
            keys = [self.inflight_key, *(self._fire_key(j, t) for j, t in page)]
            self._release_script(
                keys=keys, args=[worker_id, *(_in_flight_field(j, t) for j, t in page)]
            )

    def raise_fence(self, fence: int, lock_wait: float | None = None) -> None:
        _fenced(self._raise_fence_script(keys=[self.fence_key], args=[_token(fence)]), fence)

    def _inflight_raw(self) -> dict[str, Any]:
        raw = cast(Mapping[Any, Any], self.client.hgetall(self.inflight_key))
        return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}

    def in_flight(self) -> list[InFlight]:
        found = []
        for field, value in self._inflight_raw().items():
            job_id, _, token = field.partition("\x1f")
            with contextlib.suppress(ValueError, TypeError, KeyError):
                entry = json.loads(value)
                found.append(InFlight(job_id, token, str(entry["worker"]), bool(entry["started"])))
        return found

    def heartbeat(self, worker_id: str, info: Mapping[str, Any], live_for: float) -> list[Message]:
        now = time.time()
        self.client.hset(self.workers_key, worker_id, json.dumps({**info, "seen_at": now}))
        raw = cast(Mapping[Any, Any], self.client.hgetall(self.workers_key))
        seen = [json.loads(v) for v in raw.values()]
        return [w for w in seen if w.get("seen_at", 0) >= now - live_for]

    def leave(self, worker_id: str) -> None:
        self.client.hdel(self.workers_key, worker_id)

    def prune(self, now: float) -> None:
        old = [k for k, v in self.tombstones().items() if v < now - TOMBSTONE_TTL]
        if old:
            self.client.hdel(self.removed_key, *old)
        raw = cast(Mapping[Any, Any], self.client.hgetall(self.workers_key))
        gone = [k for k, v in raw.items() if json.loads(v).get("seen_at", 0) < now - WORKER_TTL]
        if gone:
            self.client.hdel(self.workers_key, *gone)
        stale = []
        for field, value in self._inflight_raw().items():
            with contextlib.suppress(ValueError, TypeError):
                if float(json.loads(value).get("at", now)) < now - CLAIM_TTL:
                    stale.append(field)
        if stale:
            self.client.hdel(self.inflight_key, *stale)

    def read_epoch(self) -> str | None:
        raw = self.client.get(self.epoch_key)
        return None if raw is None else _epoch_of(raw)

    def ensure_epoch(self, epoch: str) -> str:
        marker = json.dumps({"epoch": epoch, "created_at": time.time()})
        self.client.set(self.epoch_key, marker, nx=True)
        return self.read_epoch() or epoch

    def server_time(self) -> float | None:
        seconds, micros = cast("tuple[int, int]", self.client.time())
        return seconds + micros / 1e6

    def publish(self, message: Message) -> None:
        self.client.publish(self.channel, json.dumps(message))

    def listen(
        self, deliver: Deliver, stop: threading.Event, ready: threading.Event | None = None
    ) -> None:
        connected_once = failing = False
        while not stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel)
                pubsub.get_message(timeout=5.0)  # the subscription's answer: it is in place
                if ready is not None:
                    ready.set()
                if connected_once:
                    deliver({"op": "resync"})
                connected_once, failing = True, False
                while not stop.is_set():
                    item = pubsub.get_message(timeout=0.5)
                    if item is not None and item.get("type") == "message":
                        deliver(json.loads(item["data"]))
            except Exception as exc:
                if not failing:
                    logger.warning(
                        "lost the scheduler message channel on %s: %s",
                        self.url,
                        self.url.scrub(str(exc)),
                    )
                failing = True
                stop.wait(1.0)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()


def _epoch_of(raw: Any) -> str:
    """The epoch id out of a Redis marker (JSON with ``epoch`` and ``created_at``)."""
    value = raw.decode() if isinstance(raw, bytes) else str(raw)
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return str(json.loads(value)["epoch"])
    return value


def open_state(url: StoreURL, namespace: str) -> StateBackend:
    """The state backend for a job store URL (nothing is connected yet)."""
    if url.kind == "redis":
        return RedisState(url, namespace, create_redis_client(url))
    return SqlState(url, namespace, create_sql_engine(url))
