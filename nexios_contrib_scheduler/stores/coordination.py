"""Leases: which one of several workers fires the jobs.

The worker holding the lease is the leader. Each kind of lease is held by the backend
itself, so a leader that dies loses it without doing anything:

* ``file://``: an exclusive ``flock`` on a file. The kernel releases it when the process
  dies, so a standby takes over at its next try. One host only.
* ``postgresql://``: a row holding the leader's id and an expiry in the database's own
  clock, renewed by the leader; a standby takes it over once the expiry has passed.
* ``redis://``: a key set with ``SET NX PX`` and renewed by an atomic check-and-extend
  script; it expires ``lease_seconds`` after the leader's last renewal.

Each lease also hands its holder a *fencing token* (``Lease.token``), a number that grows
with each new holder, so that a store can refuse the writes of a leader that was paused
past its lease and has not noticed yet:

* ``file://``: a counter in the sidecar file ``<path>.token``, incremented while holding the
  ``flock`` each time the lock is taken.
* ``postgresql://``: a ``token`` column of the lease row, incremented by the upsert that
  takes the lease over. Releasing keeps the row (expired), so the count goes on.
* ``redis://``: a counter key ``<lease key>:token``, incremented by the script that takes
  the lease; it never expires and is never deleted.
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
        #: The fencing token of the lease while this worker holds it: set when the lease is
        #: taken, unchanged by renewals, and greater than the token of every earlier holder
        #: of this lease (a worker that loses the lease and takes it again gets a new,
        #: greater token). None while the lease is not held.
        self.token: int | None = None

    def open(self) -> None:
        """Connect once and create what is missing; raises if the backend is unreachable."""
        return None

    @abstractmethod
    def try_acquire(self) -> bool:
        """Take the lease if it is free or ours (renewing it); True if we hold it now.

        Sets ``token`` (a new one when the lease is taken, the same one when renewed), or
        clears it when returning False.
        """

    @abstractmethod
    def renew(self) -> bool:
        """Extend the lease ``try_acquire`` gave us, keeping ``token``; False (and ``token``
        cleared) if it is no longer ours."""

    @abstractmethod
    def release(self) -> None:
        """Give the lease up at once, if we hold it; clears ``token``."""

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
        self.token_path = f"{self.path}.token"
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
            self.token = None
            return False
        try:
            token = self._next_token()
        except BaseException:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            raise
        self._held = True
        self.token = token
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, self.worker_id.encode(), 0)
        return True

    def _next_token(self) -> int:
        """Count one more holder in ``<path>.token`` (the caller holds the lock).

        The new count goes to a temporary file that replaces the old one, so a crash leaves
        either count, never an empty or half-written file.
        """
        try:
            with open(self.token_path, encoding="ascii") as file:
                text = file.read().strip()
        except FileNotFoundError:
            text = ""
        if text and not text.isdigit():
            raise ValueError(
                f"the lease's token file {self.token_path} holds {text[:40]!r}, not a count"
            )
        token = int(text or "0") + 1
        temporary = f"{self.token_path}.tmp"
        with open(temporary, "w", encoding="ascii") as file:
            file.write(f"{token}\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.token_path)
        directory = os.open(os.path.dirname(os.path.abspath(self.token_path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return token

    def renew(self) -> bool:
        if not self._held:
            self.token = None
        return self._held  # the kernel keeps the lock for as long as the file is open

    def release(self) -> None:
        import fcntl

        if self._held and self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._held = False
        self.token = None

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


# KEYS: the lease key, its token counter. ARGV: worker id, milliseconds, our token or "".
# Returns the token we hold the lease with (a new one unless we held it with ARGV[3]), or 0.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
    return tonumber(ARGV[3])
  end
  return redis.call('INCR', KEYS[2])
end
return 0
"""
# KEYS: the lease key, its token counter. ARGV: worker id, milliseconds, our token.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
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
    """A Redis key holding the leader's id, set with ``NX PX`` and extended atomically;
    the fencing tokens come from the counter ``<key>:token``."""

    def __init__(
        self, url: StoreURL, worker_id: str, seconds: float, client: Redis, key: str
    ) -> None:
        super().__init__(url, worker_id, seconds)
        self.client = client
        self.key = key
        self.token_key = f"{key}:token"
        self._acquire = client.register_script(_ACQUIRE)
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)

    @property
    def _ms(self) -> int:
        return max(1, round(self.seconds * 1000))

    def open(self) -> None:
        self.client.ping()

    def try_acquire(self) -> bool:
        ours = "" if self.token is None else str(self.token)
        token = int(
            self._acquire(keys=[self.key, self.token_key], args=[self.worker_id, self._ms, ours])
        )
        self.token = token if token > 0 else None
        return self.token is not None

    def renew(self) -> bool:
        if self.token is None:
            return False
        args = [self.worker_id, str(self._ms), str(self.token)]
        if self._extend(keys=[self.key, self.token_key], args=args):
            return True
        self.token = None
        return False

    def release(self) -> None:
        self.token = None
        self._release(keys=[self.key], args=[self.worker_id])  # the counter stays

    def holder(self) -> str | None:
        value: Any = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        self.client.connection_pool.disconnect()


class PostgresLease(Lease):
    """A row ``(name, holder, expires_at, token)`` in ``<namespace>_lease``, in the server's
    clock. The row is never deleted, so its ``token`` only grows."""

    def __init__(
        self, url: StoreURL, worker_id: str, seconds: float, engine: Engine, table: str
    ) -> None:
        from sqlalchemy import BigInteger, Column, DateTime, MetaData, Table, Unicode, text

        super().__init__(url, worker_id, seconds)
        self.engine = engine
        self.metadata = MetaData()
        self.table = Table(
            table,
            self.metadata,
            Column("name", Unicode(100), primary_key=True),
            Column("holder", Unicode(200), nullable=False),
            Column("expires_at", DateTime(timezone=True), nullable=False),
            Column("token", BigInteger, nullable=False, server_default=text("0")),
        )

    def open(self) -> None:
        import zlib

        from sqlalchemy import func, inspect, select, text

        from .state import create_tables

        create_tables(self.engine, [self.table])
        # A table made before the tokens lacks their column. The advisory lock lets one
        # worker add it while the others, starting at the same time, wait and then see it.
        t = self.table
        key = zlib.crc32(f"{t.name}.token column".encode())
        with self.engine.begin() as connection:
            if any(c["name"] == "token" for c in inspect(connection).get_columns(t.name)):
                return
            connection.execute(select(func.pg_advisory_xact_lock(key)))
            name = self.engine.dialect.identifier_preparer.quote(t.name)
            connection.execute(
                text(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS token BIGINT NOT NULL DEFAULT 0")
            )

    def _expiry(self) -> Any:
        from sqlalchemy import func

        # make_interval(years, months, weeks, days, hours, mins, secs)
        return func.clock_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0, self.seconds)

    def try_acquire(self) -> bool:
        from sqlalchemy import and_, case, func, or_
        from sqlalchemy.dialects.postgresql import insert

        t = self.table
        values = insert(t).values(
            name="leader", holder=self.worker_id, expires_at=self._expiry(), token=1
        )
        # The token stays only when we renew the live lease we hold with it; any other
        # taking (another holder's lease, an expired one, one we did not take) counts one more.
        token: Any = t.c.token + 1
        if self.token is not None:
            renewing = and_(
                t.c.holder == self.worker_id,
                t.c.expires_at >= func.clock_timestamp(),
                t.c.token == self.token,
            )
            token = case((renewing, t.c.token), else_=t.c.token + 1)
        statement = values.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={
                "holder": values.excluded.holder,
                "expires_at": values.excluded.expires_at,
                "token": token,
            },
            where=or_(t.c.holder == self.worker_id, t.c.expires_at < func.clock_timestamp()),
        ).returning(t.c.token)
        with self.engine.begin() as connection:
            value = connection.execute(statement).scalar()
        self.token = None if value is None else int(value)
        return self.token is not None

    def renew(self) -> bool:
        if self.token is None:
            return False
        t = self.table
        statement = (
            t.update()
            .where(t.c.name == "leader", t.c.holder == self.worker_id, t.c.token == self.token)
            .values(expires_at=self._expiry())
        )
        with self.engine.begin() as connection:
            renewed = bool(connection.execute(statement).rowcount == 1)
        if not renewed:
            self.token = None
        return renewed

    def release(self) -> None:
        from sqlalchemy import func

        # The row stays, expired, so that the next holder's token is greater than ours.
        t = self.table
        self.token = None
        expired = func.clock_timestamp() - func.make_interval(0, 0, 0, 0, 0, 0, 1)
        with self.engine.begin() as connection:
            connection.execute(
                t.update()
                .where(t.c.name == "leader", t.c.holder == self.worker_id)
                .values(expires_at=expired)
            )

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
