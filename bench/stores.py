"""The persistent stores the benchmark runs on: where they are, how to clean up after a run,
a private Redis server to restart, and a bulk fill of raw APScheduler's own job store.

Every run keeps its tables and keys under a namespace of its own (a prefix no other run
uses), so that runs never see each other's jobs, and removes them afterwards. The shared
servers are never restarted or flushed: the restart workload starts a Redis server of its
own on a free port.
"""

from __future__ import annotations

import pickle
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

UTC = timezone.utc

STORES = ("sqlite", "postgresql", "redis")
STORE_LABELS = {
    "sqlite": "SQLite",
    "postgresql": "PostgreSQL",
    "redis": "Redis",
    "memory": "Memory",
}
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Place:
    """One run's store: the store's URL, a namespace of its own, a directory for files."""

    store: str  # "sqlite", "postgresql", "redis" or "memory"
    url: str  # the server's URL ("" for SQLite and memory: the file is in ``directory``)
    namespace: str
    directory: str

    @property
    def jobstore(self) -> str:
        """The URL given to this package's ``SchedulerConfig(jobstore=...)``."""
        if self.store == "sqlite":
            return f"sqlite:///{self.directory}/this.db"
        if self.store == "memory":
            return "memory"
        return self.url

    @property
    def coordination(self) -> str | None:
        """This package's coordination on the store: a lock file for SQLite (one host)."""
        if self.store == "sqlite":
            return f"file://{self.directory}/scheduler.lock"
        if self.store == "memory":
            return None
        return self.url

    @property
    def sqlalchemy_url(self) -> str:
        """The URL of raw APScheduler's ``SQLAlchemyJobStore``, its driver named."""
        if self.store == "sqlite":
            return f"sqlite:///{self.directory}/apscheduler.db"
        return self.url.replace("postgresql://", "postgresql+psycopg2://", 1)

    @property
    def aps_table(self) -> str:
        return f"{self.namespace}_aps_jobs"

    @property
    def aps_keys(self) -> tuple[str, str]:
        return f"{self.namespace}:aps:jobs", f"{self.namespace}:aps:run_times"

    def to_json(self) -> dict[str, str]:
        return {
            "store": self.store,
            "url": self.url,
            "namespace": self.namespace,
            "directory": self.directory,
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Place:
        return cls(data["store"], data["url"], data["namespace"], data["directory"])


def new_place(store: str, urls: dict[str, str]) -> Place:
    """A fresh namespace and directory for one run on ``store``."""
    directory = tempfile.mkdtemp(prefix="bench-store-")
    namespace = f"b{uuid.uuid4().hex[:12]}"
    return Place(store, urls.get(store, ""), namespace, directory)


def remove_place(place: Place) -> None:
    """Drop every table or key under the place's namespace and delete its directory."""
    try:
        if place.store == "postgresql":
            _drop_tables(place.url, place.namespace)
        elif place.store == "redis":
            _delete_keys(place.url, place.namespace)
    finally:
        shutil.rmtree(place.directory, ignore_errors=True)


def _drop_tables(url: str, namespace: str) -> None:
    import psycopg2

    connection = psycopg2.connect(url, connect_timeout=10)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                (f"{namespace}\\_%",),
            )
            for (table,) in cursor.fetchall():
                cursor.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    finally:
        connection.close()


def _delete_keys(url: str, namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=10)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def check_reachable(store: str, url: str) -> str | None:
    """Why ``store`` at ``url`` cannot be used, or None when it answers."""
    try:
        if store == "postgresql":
            import psycopg2

            psycopg2.connect(url, connect_timeout=5).close()
        elif store == "redis":
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except Exception as exc:
        return f"{STORE_LABELS[store]} is not reachable at {url}: {exc}"
    return None


# ---------------------------------------------------------------- raw APScheduler's store


def aps_jobstore(place: Place) -> Any:
    """Raw APScheduler's own job store for the place."""
    if place.store == "redis":
        from apscheduler.jobstores.redis import RedisJobStore
        from redis.connection import parse_url

        jobs_key, run_times_key = place.aps_keys
        options = parse_url(place.url)  # type: ignore[no-untyped-call]
        return RedisJobStore(jobs_key=jobs_key, run_times_key=run_times_key, **options)
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    return SQLAlchemyJobStore(url=place.sqlalchemy_url, tablename=place.aps_table)


def aps_bulk_fill(place: Place, first: int, last: int, func: Any) -> None:
    """Write idle interval jobs ``idle-<first>`` .. ``idle-<last - 1>`` straight into raw
    APScheduler's store, in its own format (the pickled ``Job.__getstate__()``), in bulk.

    A scheduler started on the store afterwards reads them as if it had added them.
    """
    from apscheduler.job import Job
    from apscheduler.schedulers.base import BaseScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    class _Owner(BaseScheduler):  # type: ignore[misc]
        def shutdown(self, wait: bool = True) -> None:
            return None

        def wakeup(self) -> None:
            return None

    owner = _Owner(timezone=UTC)
    now = datetime.now(UTC)
    rows: list[tuple[str, float, bytes]] = []
    for i in range(first, last):
        seconds = idle_interval(i)
        trigger = IntervalTrigger(seconds=seconds, start_date=now, timezone=UTC)
        job = Job(
            owner,
            id=f"idle-{i}",
            func=func,
            trigger=trigger,
            executor="default",
            args=(),
            kwargs={},
            name="idle_job",
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
            next_run_time=now + timedelta(seconds=seconds),
        )
        rows.append((job.id, job.next_run_time.timestamp(), pickle.dumps(job.__getstate__(), 5)))
    if place.store == "redis":
        _fill_redis(place, rows)
    else:
        _fill_sql(place, rows)


def _fill_sql(place: Place, rows: list[tuple[str, float, bytes]]) -> None:
    store = aps_jobstore(place)
    table = store.jobs_t
    table.create(store.engine, checkfirst=True)
    with store.engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            chunk = rows[start : start + 5000]
            connection.execute(
                table.insert(),
                [{"id": i, "next_run_time": t, "job_state": s} for i, t, s in chunk],
            )
    store.engine.dispose()


def _fill_redis(place: Place, rows: list[tuple[str, float, bytes]]) -> None:
    import redis

    jobs_key, run_times_key = place.aps_keys
    client = redis.Redis.from_url(place.url)
    try:
        for start in range(0, len(rows), 5000):
            chunk = rows[start : start + 5000]
            pipe = client.pipeline()
            pipe.hset(jobs_key, mapping={i: s for i, _, s in chunk})
            pipe.zadd(run_times_key, {i: t for i, t, _ in chunk})
            pipe.execute()
    finally:
        client.close()


def idle_interval(i: int) -> int:
    """1 to 2 hours, so that no idle job comes due during a run."""
    return 3600 + i % 3601


# ---------------------------------------------------------------- a private Redis server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of this run's own, on a free loopback port, with an append-only
    file so that a restart keeps the data (a plain restart, not a loss)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: the restart workload needs it")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", self.directory, "--save", "", "--appendonly", "yes"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"the private redis-server on port {self.port} did not start")

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
