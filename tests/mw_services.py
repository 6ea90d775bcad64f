"""The real PostgreSQL and Redis the persistence tests run against, on loopback.

``scripts/test.sh`` starts both when they are down. A test that cannot reach one fails
with a message naming it; it is never skipped. ``NEXIOS_SCHEDULER_TEST_POSTGRES`` and
``NEXIOS_SCHEDULER_TEST_REDIS`` point the tests elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

POSTGRES_URL = os.environ.get(
    "NEXIOS_SCHEDULER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("NEXIOS_SCHEDULER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def postgres_url() -> str:
    """The test database's URL, once it answered; fails the test if it does not."""
    import psycopg2

    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=5).close()
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc}); start it "
            "(scripts/test.sh does) or set NEXIOS_SCHEDULER_TEST_POSTGRES",
            pytrace=False,
        )
    return POSTGRES_URL


def redis_url() -> str:
    """The test Redis's URL, once it answered; fails the test if it does not."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    except Exception as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}); start it "
            "(scripts/test.sh does) or set NEXIOS_SCHEDULER_TEST_REDIS",
            pytrace=False,
        )
    return REDIS_URL


def unique_namespace() -> str:
    """A namespace no other test run uses, so runs never see each other's tables or keys."""
    return f"t{uuid.uuid4().hex[:12]}"


def drop_namespace(url: str, namespace: str) -> None:
    """Remove every table or key a test made under ``namespace``."""
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    elif url.startswith("postgres"):
        import psycopg2

        connection = psycopg2.connect(url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                (f"{namespace}\\_%",),
            )
            for (table,) in cursor.fetchall():
                cursor.execute(f'DROP TABLE IF EXISTS "{table}"')
        connection.close()


@contextlib.contextmanager
def opened_state(url: str) -> Iterator[tuple[Any, Any]]:
    """A state backend on ``url`` and its APScheduler job store, open, in a namespace of
    their own; closed and the namespace dropped afterwards (a SQLite file is left where
    ``url`` put it)."""
    from nexios_contrib_scheduler.stores.state import open_state
    from nexios_contrib_scheduler.stores.urls import parse_jobstore

    namespace = unique_namespace()
    backend = open_state(parse_jobstore(url), namespace)
    store = backend.make_jobstore()
    backend.open()
    try:
        yield backend, store
    finally:
        backend.close()
        drop_namespace(url, namespace)


def end_postgres_sessions(prefix: str, url: str | None = None) -> int:
    """Have the PostgreSQL server end the sessions whose last query starts with ``prefix``
    (other than the one asking); how many it ended."""
    import psycopg2

    connection = psycopg2.connect(url or postgres_url())
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND query LIKE %s",
                (prefix.replace("%", "") + "%",),
            )
            row = cursor.fetchone()
            return int(row[0]) if row else 0
    finally:
        connection.close()
