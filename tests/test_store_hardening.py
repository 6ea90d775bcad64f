"""Persistent job stores under a burst of due jobs, and idle.

A pass that reads many due jobs from SQLite, PostgreSQL or Redis must still start them,
and a scheduler with nothing to do must not keep a core busy. Every backend runs against
SQLite (a file in tmp_path), and the real PostgreSQL and Redis on loopback (see
mw_services.py), each in a namespace of its own that is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import redis
from fault_services import private_redis
from helpers import unannounced, wait_until
from mw_services import (
    drop_namespace,
    end_postgres_sessions,
    postgres_url,
    redis_url,
    unique_namespace,
)

from nexios_contrib_scheduler import (
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerManager,
)
from nexios_contrib_scheduler import scheduler as scheduler_module
from nexios_contrib_scheduler.stores import leadership
from nexios_contrib_scheduler.stores import persistence as persistence_module
from nexios_contrib_scheduler.stores.persistence import MESSAGE_GRACE

UTC = timezone.utc
BACKENDS = ["sqlite", "postgresql", "redis"]

# ---------------------------------------------------------------- jobs (importable by name)

RUNS: list[str] = []


async def record_run(label: str) -> None:
    RUNS.append(label)


@pytest.fixture(autouse=True)
def _clean_runs():
    RUNS.clear()
    yield
    RUNS.clear()


# ---------------------------------------------------------------- stores and managers


@dataclass
class Store:
    kind: str
    url: str
    coordination: str
    namespace: str

    def config(self, coordinated: bool) -> SchedulerConfig:
        return SchedulerConfig(
            jobstore=self.url,
            coordination=self.coordination if coordinated else None,
            namespace=self.namespace,
            shutdown_timeout=5,
            # However late a loaded machine starts them, every run counts: the tests count
            # runs, not punctuality.
            job_defaults={"misfire_grace_time": None},
        )


def _store(kind: str, tmp_path) -> Store:
    namespace = unique_namespace()
    if kind == "sqlite":
        return Store(
            kind, f"sqlite:///{tmp_path}/jobs.db", f"file://{tmp_path}/scheduler.lock", namespace
        )
    url = postgres_url() if kind == "postgresql" else redis_url()
    return Store(kind, url, url, namespace)


@pytest.fixture
def stores(tmp_path):
    """Make stores with ``stores(kind)``; their namespaces are dropped after the test."""
    made: list[Store] = []

    def make(kind: str) -> Store:
        made.append(_store(kind, tmp_path))
        return made[-1]

    yield make
    for store in made:
        if store.kind != "sqlite":
            drop_namespace(store.url, store.namespace)


# ---------------------------------------------------------------- a burst of due jobs

BURST = 300


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("coordinated", [False, True], ids=["alone", "coordinated"])
async def test_burst_of_one_shots_runs_each_once_on_every_store(
    kind, coordinated, stores, managers
):
    manager = managers(stores(kind).config(coordinated))
    await manager.start()
    await wait_until(lambda: manager.is_leader, timeout=30)
    due = datetime.now(UTC) - timedelta(seconds=1)  # all due at one instant, already
    for i in range(BURST):
        manager.add_job(
            record_run,
            DateTimeTrigger(due),
            args=(f"shot-{i}",),
            id=f"shot-{i}",
        )

    await wait_until(lambda: len(RUNS) >= BURST, timeout=180)
    runs = Counter(RUNS)
    assert sorted(runs) == sorted(f"shot-{i}" for i in range(BURST))
    assert [label for label, count in runs.items() if count != 1] == []


INTERVAL_JOBS = 100


async def test_many_interval_jobs_due_each_second_all_keep_firing(stores, managers):
    manager = managers(stores("postgresql").config(coordinated=True))
    await manager.start()
    await wait_until(lambda: manager.is_leader, timeout=30)
    # One grid for all: the jobs are due at the same instant every second.
    grid = IntervalTrigger(seconds=1, start_date=datetime.now(UTC) + timedelta(seconds=2))
    for i in range(INTERVAL_JOBS):
        manager.add_job(record_run, grid, args=(f"tick-{i}",), id=f"tick-{i}")

    def each_ran_three_times() -> bool:
        runs = Counter(RUNS)
        return all(runs[f"tick-{i}"] >= 3 for i in range(INTERVAL_JOBS))

    await wait_until(each_ran_three_times, timeout=180, what="each interval job ran 3 times")


class _SlowClock:
    """A ``time`` module for the scheduler whose ``perf_counter`` moves a second per call:
    every read of the store looks slower than any pass budget."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


async def test_a_pass_whose_store_read_outlasts_its_budget_still_starts_a_due_job(
    managers, monkeypatch
):
    # Whatever the store read costs (here: a second per clock reading, more than any
    # budget), each pass starts at least its first due job, so a burst always drains.
    monkeypatch.setattr(scheduler_module, "time", _SlowClock())
    manager = managers(SchedulerConfig(job_defaults={"misfire_grace_time": None}))
    await manager.start()
    due = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(20):
        manager.add_job(record_run, DateTimeTrigger(due), args=(f"slow-{i}",), id=f"slow-{i}")

    await wait_until(lambda: len(RUNS) >= 20, timeout=60, what="20 due one-shots ran")
    assert sorted(Counter(RUNS).values()) == [1] * 20


# ---------------------------------------------------------------- idle


def _maintenance_thread(manager: SchedulerManager) -> threading.Thread:
    name = f"nexios-scheduler lease and heartbeat {manager.worker_id}"
    threads = [t for t in threading.enumerate() if t.name == name]
    assert len(threads) == 1, [t.name for t in threading.enumerate()]
    return threads[0]


def _thread_cpu(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_idle_scheduler_with_a_job_store_and_no_coordination_leaves_the_cpu_idle(
    kind, stores, managers, monkeypatch
):
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 0.2)
    manager = managers(stores(kind).config(coordinated=False))
    manager.add_job(record_run, IntervalTrigger(hours=1), args=("hourly",), id="hourly")
    await manager.start()
    thread = _maintenance_thread(manager)
    await asyncio.sleep(0.5)  # past the first resync period

    cpu, wall = _thread_cpu(thread), time.monotonic()
    await asyncio.sleep(2)
    cpu, wall = _thread_cpu(thread) - cpu, time.monotonic() - wall

    assert thread.is_alive()
    assert cpu < 0.2 * wall, f"the maintenance thread used {cpu:.2f}s of CPU in {wall:.2f}s"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
async def test_a_coordinated_worker_reloads_every_job_only_when_it_missed_a_message(
    kind, stores, managers, monkeypatch
):
    # The slow fallback (a reload of every job, for lost messages) compares the other
    # workers' counts of their writes with the counts their messages carried: while
    # nothing changes, or every change is announced, no worker reads every job again.
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 0.1)
    # An announced change counts as missed if its message takes longer than the grace to
    # come; a loaded machine must not make the announced change below look missed.
    monkeypatch.setattr(persistence_module, "MESSAGE_GRACE", 5.0)
    store = stores(kind)
    leader = managers(store.config(coordinated=True))
    for i in range(3):
        leader.add_job(record_run, IntervalTrigger(hours=1), args=(f"i{i}",), id=f"i{i}")
    await leader.start()
    follower = managers(store.config(coordinated=True))
    await follower.start()
    assert follower.persistence is not None and leader.persistence is not None
    reads: list[str] = []
    real = follower.persistence.state.load_all

    def counted() -> dict[str, dict[str, bytes]]:
        reads.append(threading.current_thread().name)
        return real()

    monkeypatch.setattr(follower.persistence.state, "load_all", counted)
    checks = leader.persistence.leadership.epoch_checks
    await asyncio.sleep(1.0)  # ten resync periods
    assert leader.persistence.leadership.epoch_checks >= checks  # the threads are alive
    idle_reads = len(reads)
    assert idle_reads <= 1, f"{idle_reads} full reloads in a second while nothing changed"

    # An announced change reaches the follower without a reload of every job.
    leader.modify_job("i0", name="renamed")
    await wait_until(
        lambda: follower.get_job("i0").name == "renamed", timeout=30, what="the change"
    )
    await asyncio.sleep(1.0)  # ten more periods
    assert len(reads) == idle_reads, "an announced change made the follower reload every job"

    # A change whose message was lost is found by the fallback, which reloads every job,
    # though a later change was announced (its count is greater than the lost one's).
    with unannounced(leader.persistence):
        leader.modify_job("i1", name="unannounced")
        assert await leader.flush()
    leader.modify_job("i2", name="announced")
    await wait_until(
        lambda: follower.get_job("i2").name == "announced", timeout=30, what="the later change"
    )
    await wait_until(lambda: len(reads) > idle_reads, timeout=30, what="a reload of every job")
    await wait_until(
        lambda: follower.get_job("i1").name == "unannounced", timeout=30, what="the change"
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
async def test_a_standby_tries_the_lease_at_its_pace_not_in_a_loop(kind, stores, managers):
    # A standby whose try fails (the leader holds the lease) waits before the next try:
    # one try per ``min(1, lease_seconds / 5)`` seconds (here 1 s, lease_seconds being 10).
    store = stores(kind)
    leader = managers(store.config(coordinated=True))
    await leader.start()
    standby = managers(store.config(coordinated=True))
    await standby.start()
    assert leader.is_leader and not standby.is_leader
    assert standby.persistence is not None
    lease = standby.persistence.leadership.lease
    assert lease is not None
    tries: list[float] = []
    real = lease.try_acquire

    def counted() -> bool:
        tries.append(time.monotonic())
        return bool(real())

    lease.try_acquire = counted  # type: ignore[method-assign]
    began = time.monotonic()
    await wait_until(lambda: len(tries) >= 2, timeout=30, what="two tries of the lease")
    await asyncio.sleep(0.5)
    elapsed = time.monotonic() - began
    assert not standby.is_leader
    assert len(tries) <= elapsed / 1.0 + 2, f"{len(tries)} tries in {elapsed:.2f}s"


# ---------------------------------------------------------------- reads outside a transaction


def test_a_large_read_processed_slowly_is_not_ended_by_the_idle_in_transaction_limit(
    monkeypatch,
):
    """PostgreSQL ends a session left idle inside a transaction (so that a stopped worker
    does not hold its locks); a full reload of many jobs, processed for longer than that
    limit, must not be taken for one: reads run outside a transaction."""
    from sqlalchemy import event

    from nexios_contrib_scheduler.stores import state as state_module
    from nexios_contrib_scheduler.stores.urls import parse_jobstore

    monkeypatch.setattr(state_module, "IDLE_IN_TRANSACTION", 0.2)
    namespace = unique_namespace()
    backend = state_module.open_state(parse_jobstore(postgres_url()), namespace)
    try:
        store = backend.make_jobstore()
        backend.open()
        backend.create_many({f"j{i}": {"status": b"a", "name": b"b"} for i in range(3)})
        store.write_schedules({"j0": (time.time() + 60, b"state")}, ())
        engine = backend.engine  # type: ignore[attr-defined]

        def slow_reader(_conn, _cursor, statement, *_args):  # the rows take a while to use
            if statement.lstrip().upper().startswith("SELECT"):
                time.sleep(0.6)

        event.listen(engine, "after_cursor_execute", slow_reader)
        try:
            assert set(backend.load_all()) == {"j0", "j1", "j2"}
            assert backend.load("j1") == {"status": b"a", "name": b"b"}
            assert set(store.read_schedules(None)) == {"j0"}
        finally:
            event.remove(engine, "after_cursor_execute", slow_reader)
    finally:
        backend.close()
        drop_namespace(postgres_url(), namespace)


async def test_start_with_many_jobs_runs_the_full_collection_before_it_returns(
    stores, managers, monkeypatch
):
    """The jobs loaded at start are new objects to the garbage collector; its first full
    collection of them (the longest pause) is made by ``start()``, not later while the
    app serves requests."""
    import gc

    from nexios_contrib_scheduler.stores import persistence

    monkeypatch.setattr(persistence, "COLLECT_AFTER_LOADING", 50)
    store = stores("sqlite")
    first = managers(store.config(coordinated=False))
    for i in range(60):
        first.add_job(record_run, IntervalTrigger(hours=1), args=(f"j{i}",), id=f"j{i}")
    await first.start()
    await first.shutdown()

    collections: list[int] = []
    real = gc.collect

    def collect(generation: int = 2) -> int:
        collections.append(generation)
        return real(generation)

    monkeypatch.setattr(gc, "collect", collect)
    second = managers(store.config(coordinated=False))
    await second.start()
    assert len(second.get_jobs()) == 60
    assert collections == [2]
    monkeypatch.setattr(persistence, "COLLECT_AFTER_LOADING", 61)
    await second.shutdown()
    third = managers(store.config(coordinated=False))
    await third.start()  # fewer jobs than that: no collection
    assert collections == [2]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
async def test_a_lost_message_is_found_one_grace_after_the_check_that_saw_its_count(
    kind, stores, managers, monkeypatch
):
    # No periodic check in this test: one read on the standby asks for a check, which sees
    # the leader's count above what it heard; the standby checks again once the grace has
    # passed, and reloads every job, without another read.
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 3600.0)
    store = stores(kind)
    leader = managers(store.config(coordinated=True))
    leader.add_job(record_run, IntervalTrigger(hours=1), args=("l",), id="l")
    await leader.start()
    follower = managers(store.config(coordinated=True))
    await follower.start()
    assert leader.persistence is not None and follower.persistence is not None
    with unannounced(leader.persistence):
        leader.modify_job("l", name="unannounced")
        assert await leader.flush()
    follower.get_jobs()  # a read: it asks for a check
    await wait_until(
        lambda: (r := follower.registry.get("l")) is not None and r.name == "unannounced",
        timeout=30,
        what="the standby to reload after the grace",
    )


# ---------------------------------------------------------------- a listener that reconnects


@pytest.mark.parametrize("kind", ["postgresql", "redis"])
async def test_a_listener_that_reconnects_reloads_every_job_only_if_a_message_was_lost(
    kind, stores, managers, monkeypatch
):
    """The server ends the listeners' connections; they reconnect. Messages sent meanwhile
    are lost, so the worker checks the other workers' counts: it reloads every job only if
    one of them wrote something it did not hear of (it reloaded every job every time)."""
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 3600.0)  # only the reconnect checks
    with contextlib.ExitStack() as servers:
        if kind == "redis":  # a server of its own: every listener on it is this test's
            store = Store(kind, "", "", unique_namespace())
            store.url = store.coordination = servers.enter_context(private_redis()).url
        else:
            store = stores(kind)
        leader = managers(store.config(coordinated=True))
        leader.add_job(record_run, IntervalTrigger(hours=1), args=("l",), id="l")
        leader.add_job(record_run, IntervalTrigger(hours=1), args=("m",), id="m")
        await leader.start()
        follower = managers(store.config(coordinated=True))
        await follower.start()
        sender, receiver = leader.persistence, follower.persistence
        assert sender is not None and receiver is not None
        reads: list[int] = []
        load_all = receiver.state.load_all

        def counted_load_all() -> object:
            reads.append(1)
            return load_all()

        monkeypatch.setattr(receiver.state, "load_all", counted_load_all)

        async def cut_and_rejoin() -> None:
            if kind == "redis":
                redis.Redis.from_url(store.url).client_kill_filter(_type="pubsub")
            else:
                assert end_postgres_sessions(f'LISTEN "{receiver.state.channel}"') >= 1
            # Back once it hears a message sent after the cut (one carrying no count, so
            # that those sent while it was away are not lost messages for the check).
            message = {"op": "changed", "job": "m", "from": sender.worker_id}
            before = receiver.reloads

            def heard() -> bool:
                sender.state.publish(message)
                return receiver.reloads > before

            await wait_until(heard, timeout=30, what="the follower's listener to be back")

        # Every write of the leader's heard first (a message lost in the cut is lost).
        assert await leader.flush()
        leader.modify_job("m", name="told")  # written after all the others: heard last
        await wait_until(
            lambda: (r := follower.registry.get("m")) is not None and r.name == "told",
            timeout=30,
            what="the follower to hear the leader's last change",
        )
        # Nothing was written meanwhile: the check finds nothing, and nothing is reloaded.
        await cut_and_rejoin()
        await asyncio.sleep(MESSAGE_GRACE + 1.0)  # its check after the grace is over by now
        assert reads == []

        # A change whose message was lost: found once the grace is over, without a read on
        # the follower or a periodic check.
        with unannounced(sender):
            leader.modify_job("l", name="unannounced")
            assert await leader.flush()
        await cut_and_rejoin()
        await wait_until(
            lambda: (r := follower.registry.get("l")) is not None and r.name == "unannounced",
            timeout=30,
            what="the follower to reload after the reconnect's check",
        )
        assert len(reads) == 1
        await follower.shutdown()
        await leader.shutdown()


# ---------------------------------------------------------------- settling on the leader


async def test_the_leaders_periodic_settling_goes_through_every_job_only_when_needed(
    stores, managers, monkeypatch
):
    """Settling (each periodic reload of the leader) looks through every job for runs cut
    short only once it has taken the lease, or when a stopped worker's fires are found:
    not every 10 s while nothing stopped (with 100,000 jobs that walk is about 15 ms of
    the event loop each time)."""
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 0.1)
    leader = managers(stores("postgresql").config(coordinated=True))
    for i in range(5):
        leader.add_job(record_run, IntervalTrigger(hours=1), args=(f"s{i}",), id=f"s{i}")
    await leader.start()
    persistence = leader.persistence
    assert persistence is not None and leader.is_leader
    walks: list[int] = []
    records = leader.registry.records
    sync = persistence.sync

    def walked():
        walks.append(1)
        return records()

    monkeypatch.setattr(leader.registry, "records", walked)
    reloads = persistence.reloads
    await wait_until(lambda: persistence.reloads >= reloads + 5, timeout=30, what="5 reloads")
    assert walks == []
    sync.leading()  # as when this worker takes the lease again: the next settling walks
    reloads = persistence.reloads
    await wait_until(lambda: persistence.reloads >= reloads + 3, timeout=30, what="3 reloads")
    assert walks == [1]


# ---------------------------------------------------------------- another worker's pause


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_pause_made_elsewhere_stops_a_job_the_leader_moved_on_meanwhile(
    kind, stores, managers, monkeypatch
):
    """The leader's read of a job another worker paused is older than the leader's own
    next run and move of that job (the read waits here until the leader has run it once
    more), and the leader's later reads of it wait until the end. The pause is applied
    from that one read: the leader stops firing the job (it left the job as it was and
    fired it on until a later read came between two of its runs)."""
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 3600.0)  # only the notification
    store = stores(kind)
    leader = managers(store.config(coordinated=True))
    await leader.start()
    follower = managers(store.config(coordinated=True))
    await follower.start()
    assert leader.persistence is not None and leader.is_leader
    leader.add_job(record_run, IntervalTrigger(seconds=0.2), args=("t",), id="t")
    await wait_until(lambda: RUNS.count("t") >= 2, timeout=30, what="two runs")
    await wait_until(lambda: follower.get_job("t") is not None, timeout=30, what="the follower")

    state = leader.persistence.state
    load = state.load
    pausing, held_back, released = threading.Event(), threading.Event(), threading.Event()

    def load_then_wait_for_a_run(job_id: str) -> object:
        if job_id != "t" or not pausing.is_set():
            return load(job_id)
        if held_back.is_set():
            released.wait(60)  # a later read: it cannot apply the pause before the end
            return load(job_id)
        fields = load(job_id)
        runs = RUNS.count("t")
        deadline = time.monotonic() + 30
        while RUNS.count("t") == runs and time.monotonic() < deadline:
            time.sleep(0.01)
        held_back.set()
        return fields

    monkeypatch.setattr(state, "load", load_then_wait_for_a_run)
    try:
        pausing.set()
        assert follower.pause_job("t")
        assert await follower.flush()
        await wait_until(held_back.is_set, timeout=30, what="the leader's read of the pause")
        await wait_until(
            lambda: leader.get_job("t").status is JobStatus.PAUSED,
            timeout=30,
            what="the leader to apply the pause from its first read",
        )
        runs = RUNS.count("t")
        await asyncio.sleep(1.0)  # five periods
        assert RUNS.count("t") == runs
    finally:
        released.set()
