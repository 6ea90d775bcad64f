"""Leases: which one of several workers fires the jobs.

The worker holding the lease is the leader. Each kind of lease is held by the backend
itself, so a leader that dies loses it without doing anything:

* ``file://``: an exclusive ``flock`` on a file. The kernel releases it when the process
  dies, so a standby takes over at its next try. One host only.
* ``postgresql://``: a row holding the leader's id and an expiry in the database's own
  clock, renewed by the leader; a standby takes it over once the expiry has passed.
* ``redis://``: a key set with ``SET NX PX`` and renewed by an atomic check-and-extend
  script; it expires ``lease_seconds`` after the leader's last renewal.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from .urls import StoreURL

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy.engine import Engine


class Lease(ABC):
    """A lease one worker at a time can hold."""

    def __init__(self, url: StoreURL, worker_id: str, seconds: float) -> None:
        self.url = url
        self.worker_id = worker_id
        self.seconds = seconds

    def open(self) -> None:
        """Connect once and create what is missing; raises if the backend is unreachable."""
        return None

    @abstractmethod
    def try_acquire(self) -> bool:
        """Take the lease if it is free or ours (renewing it); True if we hold it now."""

    @abstractmethod
    def renew(self) -> bool:
        """Extend our lease; False if it is no longer ours."""

    @abstractmethod
    def release(self) -> None:
        """Give the lease up at once, if we hold it."""

    @abstractmethod
    def holder(self) -> str | None:
        """The id of the worker holding the lease, if known."""

    def close(self) -> None:
        """Drop connections and files."""
        return None


class FileLease(Lease):
    """An exclusive ``flock`` on a file, for workers on one host."""

    def __init__(self, url: StoreURL, worker_id: str, seconds: float) -> None:
        super().__init__(url, worker_id, seconds)
        self.path = url.path
        self._fd: int | None = None
        self._held = False

    def open(self) -> None:
        import fcntl  # noqa: F401  (POSIX only: fail here, clearly, elsewhere)

        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def try_acquire(self) -> bool:
        import fcntl

        if self._held:
            return True
        if self._fd is None:
            self.open()
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._held = True
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, self.worker_id.encode(), 0)
        return True

    def renew(self) -> bool:
        return self._held  # the kernel keeps the lock for as long as the file is open

    def release(self) -> None:
        import fcntl

        if self._held and self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._held = False

    def holder(self) -> str | None:
        if self._held:
            return self.worker_id
        try:
            with open(self.path, encoding="utf-8") as file:
                return file.read().strip() or None
        except OSError:
            return None

    def close(self) -> None:
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# KEYS: the lease key. ARGV: worker id, milliseconds.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: the lease key. ARGV: worker id.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease(Lease):
    """A Redis key holding the leader's id, set with ``NX PX`` and extended atomically."""

    def __init__(
        self, url: StoreURL, worker_id: str, seconds: float, client: Redis, key: str
    ) -> None:
        super().__init__(url, worker_id, seconds)
        self.client = client
        self.key = key
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)

    @property
    def _ms(self) -> int:
        return max(1, round(self.seconds * 1000))

    def open(self) -> None:
        self.client.ping()

    def try_acquire(self) -> bool:
        if self.client.set(self.key, self.worker_id, nx=True, px=self._ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        return bool(self._extend(keys=[self.key], args=[self.worker_id, self._ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.worker_id])

    def holder(self) -> str | None:
        value: Any = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        self.client.connection_pool.disconnect()


class PostgresLease(Lease):
    """A row ``(name, holder, expires_at)`` in ``<namespace>_lease``, in the server's clock."""

    def __init__(
        self, url: StoreURL, worker_id: str, seconds: float, engine: Engine, table: str
    ) -> None:
        from sqlalchemy import Column, DateTime, MetaData, Table, Unicode

        super().__init__(url, worker_id, seconds)
        self.engine = engine
        self.metadata = MetaData()
        self.table = Table(
            table,
            self.metadata,
            Column("name", Unicode(100), primary_key=True),
            Column("holder", Unicode(200), nullable=False),
            Column("expires_at", DateTime(timezone=True), nullable=False),
        )

    def open(self) -> None:
        from .state import create_tables

        create_tables(self.engine, [self.table])

    def _expiry(self) -> Any:
        from sqlalchemy import func

        # make_interval(years, months, weeks, days, hours, mins, secs)
        return func.clock_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0, self.seconds)

    def try_acquire(self) -> bool:
        from sqlalchemy import func, or_
        from sqlalchemy.dialects.postgresql import insert

        t = self.table
        values = insert(t).values(name="leader", holder=self.worker_id, expires_at=self._expiry())
        statement = values.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={"holder": values.excluded.holder, "expires_at": values.excluded.expires_at},
            where=or_(t.c.holder == self.worker_id, t.c.expires_at < func.clock_timestamp()),
        ).returning(t.c.holder)
        with self.engine.begin() as connection:
            return connection.execute(statement).first() is not None

    def renew(self) -> bool:
        t = self.table
        statement = (
            t.update()
            .where(t.c.name == "leader", t.c.holder == self.worker_id)
            .values(expires_at=self._expiry())
        )
        with self.engine.begin() as connection:
            return bool(connection.execute(statement).rowcount == 1)

    def release(self) -> None:
        t = self.table
        with self.engine.begin() as connection:
            connection.execute(t.delete().where(t.c.name == "leader", t.c.holder == self.worker_id))

    def holder(self) -> str | None:
        from sqlalchemy import func, select

        t = self.table
        query = select(t.c.holder).where(
            t.c.name == "leader", t.c.expires_at > func.clock_timestamp()
        )
        with self.engine.begin() as connection:
            value = connection.execute(query).scalar()
        return None if value is None else str(value)

    def close(self) -> None:
        self.engine.dispose()


def open_lease(
    url: StoreURL, worker_id: str, seconds: float, namespace: str, engine: Engine | None = None
) -> Lease:
    """The lease for a coordination URL; ``engine`` is reused for a PostgreSQL URL if given."""
    if url.kind == "file":
        return FileLease(url, worker_id, seconds)
    if url.kind == "redis":
        from .state import create_redis_client

        return RedisLease(url, worker_id, seconds, create_redis_client(url), f"{namespace}:lease")
    from .state import create_sql_engine

    engine = engine if engine is not None else create_sql_engine(url)
    return PostgresLease(url, worker_id, seconds, engine, f"{namespace}_lease")
