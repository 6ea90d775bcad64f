"""Fencing tokens of the coordination leases, against the real backends.

Every test runs on a lock file in tmp_path, and on the real PostgreSQL and Redis on
loopback (see mw_services.py), each in a namespace of its own that is dropped afterwards.
A backend that cannot be reached fails the test, naming it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import wait_for
from mw_services import drop_namespace, postgres_url, redis_url, unique_namespace

from nexios_contrib_scheduler.stores.coordination import Lease, open_lease
from nexios_contrib_scheduler.stores.urls import StoreURL, parse_coordination

BACKENDS = ["file", "postgresql", "redis"]
EXPIRING = ["postgresql", "redis"]  # a file lock does not run out: its holder must die
SHORT = 1.5  # seconds: a lease that runs out while the test waits (long enough that two
# round trips to the store, on a loaded machine, fit well inside it)
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Backend:
    kind: str
    url: StoreURL
    namespace: str
    leases: list[Lease] = field(default_factory=list)

    def lease(self, worker_id: str, seconds: float = 30.0) -> Lease:
        """An opened lease for ``worker_id``; closed after the test."""
        lease = open_lease(self.url, worker_id, seconds, self.namespace)
        self.leases.append(lease)
        lease.open()
        return lease


def _url(kind: str, tmp_path: Path) -> StoreURL:
    if kind == "file":
        text = f"file://{tmp_path}/scheduler.lock"
    elif kind == "postgresql":
        text = postgres_url()
    else:
        text = redis_url()
    url = parse_coordination(text)
    assert url is not None
    return url


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Iterator[Backend]:
    made = Backend(request.param, _url(request.param, tmp_path), unique_namespace())
    yield made
    _clean(made)


@pytest.fixture(params=EXPIRING)
def expiring(request, tmp_path) -> Iterator[Backend]:
    made = Backend(request.param, _url(request.param, tmp_path), unique_namespace())
    yield made
    _clean(made)


@pytest.fixture
def postgres(tmp_path) -> Iterator[Backend]:
    made = Backend("postgresql", _url("postgresql", tmp_path), unique_namespace())
    yield made
    _clean(made)


@pytest.fixture
def redis_backend(tmp_path) -> Iterator[Backend]:
    made = Backend("redis", _url("redis", tmp_path), unique_namespace())
    yield made
    _clean(made)


def _clean(backend: Backend) -> None:
    for lease in backend.leases:
        lease.close()
    if backend.kind != "file":
        drop_namespace(backend.url.url, backend.namespace)


# ---------------------------------------------------------------- every backend


def test_first_holder_gets_a_token_that_renewals_keep(backend):
    one = backend.lease("one")
    assert one.token is None
    assert one.try_acquire()
    token = one.token
    assert isinstance(token, int) and token >= 1
    for _ in range(3):
        assert one.renew()
        assert one.token == token
    assert one.try_acquire()  # already ours: a renewal, not a new lease
    assert one.token == token
    assert one.holder() == "one"


def test_a_second_worker_cannot_take_a_live_lease(backend):
    one, two = backend.lease("one"), backend.lease("two")
    assert one.try_acquire()
    token = one.token
    assert not two.try_acquire()
    assert two.token is None
    assert not two.renew()
    assert two.token is None
    assert one.holder() == two.holder() == "one"
    assert one.renew() and one.token == token


def test_after_a_release_the_next_holder_gets_a_greater_token(backend):
    one, two = backend.lease("one"), backend.lease("two")
    assert one.try_acquire()
    first = one.token
    assert first is not None
    one.release()
    assert one.token is None
    assert not one.renew()  # given up: nothing left to renew
    assert two.holder() is None

    assert two.try_acquire()
    second = two.token
    assert second is not None and second > first
    assert not one.try_acquire() and one.token is None
    assert two.holder() == "two"

    two.release()
    assert two.token is None
    assert one.try_acquire()
    third = one.token
    assert third is not None and third > second
    assert one.holder() == "one"


def test_tokens_never_go_back_across_releases_and_new_leases(backend):
    seen: list[int] = []
    for turn in range(6):
        worker = f"w{turn % 3}"
        lease = backend.lease(worker)  # a new lease each turn, as a restarted worker has
        assert lease.try_acquire(), f"turn {turn}: {worker} could not take a released lease"
        assert lease.token is not None
        seen.append(lease.token)
        assert lease.renew() and lease.token == seen[-1]
        lease.release()
        assert lease.token is None
        lease.close()
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen


# ---------------------------------------------------------------- leases that run out


def test_after_expiry_a_standby_takes_over_with_a_greater_token(expiring):
    one, two = expiring.lease("one", SHORT), expiring.lease("two", SHORT)
    assert one.try_acquire()
    first = one.token
    assert first is not None
    assert not two.try_acquire()

    # "one" is paused past its lease; "two" takes over once it has run out.
    wait_for(two.try_acquire, what="two taking the expired lease")
    second = two.token
    assert second is not None and second > first
    # "one" wakes: it still shows its old token until its renewal fails.
    assert one.token == first
    assert not one.renew()
    assert one.token is None

    # "two" stops renewing in turn; "one" takes the lease back with a greater token.
    wait_for(one.try_acquire, what="one taking the lease back")
    third = one.token
    assert third is not None and third > second
    assert not two.renew() and two.token is None


def test_the_same_worker_retaking_its_expired_lease_gets_a_new_token(expiring):
    one = expiring.lease("one", SHORT)
    assert one.try_acquire()
    first = one.token
    assert first is not None
    wait_for(lambda: one.holder() is None, what="the lease to run out")
    assert one.try_acquire()
    assert one.token is not None and one.token > first


# ---------------------------------------------------------------- per backend


def test_file_a_dead_holders_lock_goes_to_a_standby_with_a_greater_token(tmp_path):
    """The kernel drops a killed process's flock; the standby's token is greater."""
    url = f"file://{tmp_path}/scheduler.lock"
    script = (
        "import sys, time\n"
        "from nexios_contrib_scheduler.stores.coordination import open_lease\n"
        "from nexios_contrib_scheduler.stores.urls import parse_coordination\n"
        "lease = open_lease(parse_coordination(sys.argv[1]), 'child', 30.0, 'ns')\n"
        "lease.open()\n"
        "assert lease.try_acquire()\n"
        "print(lease.token, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True, env=env
    )
    standby = None
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), f"the child printed {line!r}, not its token"
        child_token = int(line)
        standby = open_lease(parse_coordination(url), "standby", 30.0, "ns")  # type: ignore[arg-type]
        standby.open()
        assert not standby.try_acquire()
        assert standby.holder() == "child"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        wait_for(standby.try_acquire, what="the standby taking the lock")
        assert standby.token is not None and standby.token > child_token
        assert Path(f"{tmp_path}/scheduler.lock.token").read_text().strip() == str(standby.token)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
        if standby is not None:
            standby.close()


def test_redis_token_counter_outlives_the_lease(redis_backend):
    import redis

    one = redis_backend.lease("one")
    assert one.try_acquire()
    client = redis.Redis.from_url(redis_backend.url.url)
    try:
        counter = f"{redis_backend.namespace}:lease:token"
        assert int(client.get(counter)) == one.token
        one.release()
        assert client.get(f"{redis_backend.namespace}:lease") is None
        assert client.ttl(counter) == -1  # exists, no expiry
    finally:
        client.close()


def _psql(url: str, *statements: str) -> list[tuple]:
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection, connection.cursor() as cursor:
            rows: list[tuple] = []
            for statement in statements:
                cursor.execute(statement)
                if cursor.description is not None:
                    rows = cursor.fetchall()
            return rows
    finally:
        connection.close()


def test_postgres_release_keeps_the_row_expired(postgres):
    one = postgres.lease("one")
    assert one.try_acquire()
    token = one.token
    one.release()
    rows = _psql(
        postgres.url.url,
        f'SELECT holder, token, expires_at < clock_timestamp() FROM "{postgres.namespace}_lease"',
    )
    assert rows == [("one", token, True)]
    assert one.holder() is None


def test_postgres_old_lease_table_gets_the_token_column_on_open(postgres):
    table = f'"{postgres.namespace}_lease"'
    _psql(
        postgres.url.url,
        f"CREATE TABLE {table} (name VARCHAR(100) PRIMARY KEY, holder VARCHAR(200) NOT NULL, "
        "expires_at TIMESTAMP WITH TIME ZONE NOT NULL)",
        f"INSERT INTO {table} VALUES ('leader', 'old', clock_timestamp() + interval '60 seconds')",
    )
    # Several workers start at once on the old table: each opens without error.
    url, errors = postgres.url, []
    leases = [open_lease(url, f"w{n}", 30.0, postgres.namespace) for n in range(4)]
    postgres.leases.extend(leases)
    barrier = threading.Barrier(len(leases))

    def start(lease: Lease) -> None:
        try:
            barrier.wait(timeout=30)
            lease.open()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    columns = _psql(
        url.url,
        "SELECT data_type, is_nullable, column_default FROM information_schema.columns "
        f"WHERE table_name = '{postgres.namespace}_lease' AND column_name = 'token'",
    )
    assert columns == [("bigint", "NO", "0")]

    first, second = leases[0], leases[1]
    assert first.holder() == "old"
    assert not first.try_acquire()  # the old release's worker still holds it
    _psql(url.url, f"UPDATE {table} SET expires_at = clock_timestamp() - interval '1 second'")
    assert first.try_acquire()
    assert first.token == 1
    assert first.renew() and first.token == 1
    first.release()
    assert second.try_acquire()
    assert second.token == 2
    # Opening again once the column is there changes nothing.
    again = postgres.lease("again")
    assert not again.try_acquire()
    assert second.renew() and second.token == 2
