"""Reads are served from the in-memory view: no store query on the event loop, and a
store outage never turns a read into an exception, a 500 or a hang.

Every test runs against SQLite (a file in tmp_path) and the real PostgreSQL and Redis on
loopback (see mw_services.py), each in a namespace of its own that is dropped afterwards.
Store traffic is watched at the drivers (SQLAlchemy's cursor executions, redis-py's
commands), so any path to the store counts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.client
import sqlalchemy.exc
from helpers import wait_until
from mw_services import drop_namespace, postgres_url, redis_url, unique_namespace
from nexios import NexiosApp
from nexios.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

from nexios_contrib_scheduler import (
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerManager,
    setup_scheduler,
)
from nexios_contrib_scheduler.admin import scheduler_router

BACKENDS = ["sqlite", "postgresql", "redis"]
HANG_LIMIT = 10.0  # a request that has not answered by then is taken as hanging

RUNS: list[str] = []


async def tick() -> None:
    RUNS.append("tick")


@dataclass
class Store:
    kind: str
    url: str
    coordination: str
    namespace: str

    def config(self, coordinated: bool = False) -> SchedulerConfig:
        return SchedulerConfig(
            jobstore=self.url,
            coordination=self.coordination if coordinated else None,
            namespace=self.namespace,
            shutdown_timeout=5,
            job_defaults={"misfire_grace_time": None},
        )


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path) -> Iterator[Store]:
    kind = request.param
    namespace = unique_namespace()
    if kind == "sqlite":
        found = Store(
            kind, f"sqlite:///{tmp_path}/jobs.db", f"file://{tmp_path}/scheduler.lock", namespace
        )
    else:
        url = postgres_url() if kind == "postgresql" else redis_url()
        found = Store(kind, url, url, namespace)
    RUNS.clear()
    yield found
    if kind != "sqlite":
        drop_namespace(found.url, namespace)


class StoreTraffic:
    """Counts store calls made on one thread; with ``failing``, every store call (on any
    thread) fails as it would with the server gone."""

    def __init__(self, thread: int | None) -> None:
        self.thread = thread
        self.calls = 0
        self.failing = False

    def seen(self, kind: str) -> None:
        if self.thread is None or threading.get_ident() == self.thread:
            self.calls += 1
        if self.failing:
            if kind == "redis":
                raise redis.ConnectionError("Error 111 connecting to the store: refused")
            raise sqlalchemy.exc.OperationalError("SELECT", {}, ConnectionRefusedError(111))


@contextlib.contextmanager
def watched_store(monkeypatch, thread: int | None) -> Iterator[StoreTraffic]:
    traffic = StoreTraffic(thread)

    def before_execute(*args: Any, **kwargs: Any) -> None:
        traffic.seen("sql")

    real_command = redis.client.Redis.execute_command
    real_pipeline = redis.client.Pipeline.execute

    def execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        traffic.seen("redis")
        return real_command(self, *args, **kwargs)

    def pipeline_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        traffic.seen("redis")
        return real_pipeline(self, *args, **kwargs)

    event.listen(Engine, "before_cursor_execute", before_execute)
    monkeypatch.setattr(redis.client.Redis, "execute_command", execute_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline_execute)
    try:
        yield traffic
    finally:
        event.remove(Engine, "before_cursor_execute", before_execute)
        monkeypatch.undo()


def add_jobs(manager: SchedulerManager, count: int) -> None:
    for n in range(count):
        manager.add_job(
            tick, IntervalTrigger(hours=1, start_now=False), id=f"job-{n}", replace_existing=True
        )


# ---------------------------------------------------------------- (1) no store query


async def test_get_jobs_get_job_and_to_dict_make_no_store_query_on_the_loop(store, monkeypatch):
    manager = SchedulerManager(config=store.config())
    add_jobs(manager, 5)
    await manager.start()
    try:
        with watched_store(monkeypatch, threading.get_ident()) as traffic:
            jobs = manager.get_jobs()
            views = [job.to_dict() for job in jobs]
            one = manager.get_job("job-3")
            assert one is not None
            single = one.to_dict()
            times = [job.next_run_time for job in jobs]
            manager.status()
        assert traffic.calls == 0
        assert len(views) == 5
        assert single["next_run_time"] is not None
        assert all(t is not None for t in times)
    finally:
        await manager.shutdown()


async def test_a_followers_reads_make_no_store_query_on_the_loop(store, monkeypatch):
    leader = SchedulerManager(config=store.config(coordinated=True))
    add_jobs(leader, 3)
    await leader.start()
    follower = SchedulerManager(config=store.config(coordinated=True))
    await follower.start()
    try:
        assert leader.is_leader and not follower.is_leader
        with watched_store(monkeypatch, threading.get_ident()) as traffic:
            views = [job.to_dict() for job in follower.get_jobs()]
            job = follower.get_job("job-1")
            assert job is not None
            job.to_dict()
        assert traffic.calls == 0
        assert {v["id"] for v in views} == {"job-0", "job-1", "job-2"}
        assert all(v["next_run_time"] is not None for v in views)
    finally:
        await follower.shutdown()
        await leader.shutdown()


# ---------------------------------------------------------------- (2) a store outage


async def test_reads_answer_from_memory_while_the_store_is_unreachable(store, monkeypatch):
    manager = SchedulerManager(config=store.config())
    add_jobs(manager, 3)
    await manager.start()
    try:
        before = manager.get_job("job-1")
        assert before is not None
        expected = before.to_dict()
        with watched_store(monkeypatch, None) as traffic:
            traffic.failing = True
            job = manager.get_job("job-1")
            assert job is not None
            assert job.to_dict() == expected
            assert [j.id for j in manager.get_jobs()] == ["job-0", "job-1", "job-2"]
            assert [j.id for j in manager.get_jobs(JobStatus.ACTIVE)] == [
                "job-0",
                "job-1",
                "job-2",
            ]
            assert manager.status()["role"] == "leader"
    finally:
        await manager.shutdown()


def _answer_within(client: TestClient, path: str) -> Any:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.get, path)
        try:
            return future.result(timeout=HANG_LIMIT)
        except concurrent.futures.TimeoutError:
            pytest.fail(f"GET {path} did not answer within {HANG_LIMIT}s: it hangs")


def test_admin_job_and_health_answer_200_while_the_store_is_unreachable(store, monkeypatch):
    app = NexiosApp()
    manager = setup_scheduler(app, store.config())
    add_jobs(manager, 2)
    app.mount_router(scheduler_router(allow_unauthenticated=True))
    with TestClient(app) as client:
        assert client.get("/scheduler/jobs/job-1").status_code == 200
        with watched_store(monkeypatch, None) as traffic:
            traffic.failing = True
            job = _answer_within(client, "/scheduler/jobs/job-1")
            assert job.status_code == 200, job.text
            assert job.json()["id"] == "job-1"
            assert job.json()["next_run_time"] is not None
            health = _answer_within(client, "/scheduler/health")
            assert health.status_code == 200, health.text
            listing = _answer_within(client, "/scheduler/jobs")
            assert listing.status_code == 200, listing.text


# ---------------------------------------------------------------- (3) a follower catches up


async def test_a_followers_view_catches_up_with_changes_made_on_the_leader(store):
    leader = SchedulerManager(config=store.config(coordinated=True))
    leader.add_job(
        tick, IntervalTrigger(hours=1, start_now=False), id="paused", replace_existing=True
    )
    leader.add_job(
        tick, IntervalTrigger(hours=1, start_now=False), id="moved", replace_existing=True
    )
    leader.add_job(tick, IntervalTrigger(hours=1, start_now=False), id="run", replace_existing=True)
    await leader.start()
    follower = SchedulerManager(config=store.config(coordinated=True))
    await follower.start()
    try:
        assert leader.is_leader and not follower.is_leader

        def seen(job_id: str) -> Any:
            job = follower.get_job(job_id)
            assert job is not None
            return job

        before = seen("moved").next_run_time
        assert before is not None
        leader.pause_job("paused", reason="maintenance")
        moved = leader.reschedule_job("moved", IntervalTrigger(minutes=5))
        assert leader.run_job_now("run")
        await wait_until(lambda: leader.get_job("run").success_count == 1, 30, "the run")

        await wait_until(
            lambda: seen("paused").status is JobStatus.PAUSED, 30, "the pause on the follower"
        )
        assert seen("paused").paused_reason == "maintenance"
        assert seen("paused").next_run_time is None
        await wait_until(
            lambda: seen("moved").next_run_time == moved.next_run_time,
            30,
            "the new next run time on the follower",
        )
        await wait_until(
            lambda: seen("run").success_count == 1, 30, "the leader's run on the follower"
        )
        assert seen("run").history[0].outcome == "success"
    finally:
        await follower.shutdown()
        await leader.shutdown()
