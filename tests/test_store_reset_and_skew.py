"""A store that lost its data is noticed and said so; a worker's clock off the store's is warned about.

The Redis reset runs on a private ``redis-server --save "" --appendonly no`` restarted under
a running worker (fault_services.py), the PostgreSQL reset drops the namespace's tables on
the shared server. Clock skew is measured against the real servers with the worker's own
clock replaced by one that runs ahead, so the figure is known without waiting for anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from fault_services import private_redis
from helpers import wait_for, wait_until
from mw_services import drop_namespace, postgres_url, redis_url, unique_namespace
from nexios import NexiosApp
from nexios.testclient import TestClient

from nexios_contrib_scheduler import IntervalTrigger, SchedulerConfig, SchedulerManager
from nexios_contrib_scheduler.admin import scheduler_router
from nexios_contrib_scheduler.integration import setup_scheduler
from nexios_contrib_scheduler.stores.leadership import CLOCK_SKEW_WARN_SECONDS, measure_skew

LOGGER = "nexios_contrib_scheduler"
AHEAD = 5.0  # seconds the fake worker clock runs ahead of the real one


async def tick() -> None:
    return None


def _config(url: str, namespace: str) -> SchedulerConfig:
    return SchedulerConfig(jobstore=url, namespace=namespace, lease_seconds=1, shutdown_timeout=2)


def _redis_job_ids(url: str, namespace: str) -> set[str]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return {key.decode() for key in client.hkeys(f"{namespace}:jobs")}
    finally:
        client.close()


def _postgres_job_ids(url: str, namespace: str) -> set[str]:
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT id FROM "{namespace}_jobs"')
            return {row[0] for row in cursor.fetchall()}
    except psycopg2.errors.UndefinedTable:
        return set()
    finally:
        connection.close()


def _reset_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and "lost its data" in r.getMessage()
    ]


async def _check_reset_is_stated(
    manager: SchedulerManager,
    caplog: pytest.LogCaptureFixture,
    stored_ids: Callable[[], set[str]],
) -> None:
    await wait_until(
        lambda: manager.status().get("store_resets"), timeout=60, what="a store reset in status()"
    )
    await wait_until(
        lambda: "declared" in stored_ids(), timeout=30, what="the declared job back in the store"
    )
    (reset,) = manager.status()["store_resets"]
    assert reset["lost_jobs"] == ["added"]
    assert reset["at"] is not None
    (line,) = _reset_errors(caplog)
    assert "added" in line and "declared jobs are re-created" in line
    assert manager.get_job("declared") is not None
    assert manager.get_job("added") is None
    assert "added" not in stored_ids()


class TestStoreReset:
    async def test_redis_restart_without_persistence_is_stated_and_declared_jobs_come_back(
        self, managers, caplog
    ):
        caplog.set_level(logging.INFO, logger=LOGGER)
        with private_redis() as server:
            namespace = unique_namespace()
            manager = managers(_config(server.url, namespace))
            manager.add_job(tick, IntervalTrigger(hours=1), id="declared")
            await manager.start()
            manager.add_job(tick, IntervalTrigger(hours=1), id="added")
            stored = lambda: _redis_job_ids(server.url, namespace)  # noqa: E731
            await wait_until(lambda: stored() == {"declared", "added"}, timeout=30)
            assert manager.status()["store_resets"] == []

            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)

            await _check_reset_is_stated(manager, caplog, stored)
            await asyncio.sleep(0)  # the next maintenance turns see the new marker: no second
            await wait_until(lambda: manager.persistence.leadership.epoch_checks >= 3, timeout=30)
            assert len(_reset_errors(caplog)) == 1
            await manager.shutdown()

    async def test_postgres_tables_dropped_under_a_worker_is_stated_and_declared_jobs_come_back(
        self, managers, caplog
    ):
        caplog.set_level(logging.INFO, logger=LOGGER)
        url, namespace = postgres_url(), unique_namespace()
        try:
            manager = managers(_config(url, namespace))
            manager.add_job(tick, IntervalTrigger(hours=1), id="declared")
            await manager.start()
            manager.add_job(tick, IntervalTrigger(hours=1), id="added")
            stored = lambda: _postgres_job_ids(url, namespace)  # noqa: E731
            await wait_until(lambda: stored() == {"declared", "added"}, timeout=30)

            await asyncio.to_thread(drop_namespace, url, namespace)

            await _check_reset_is_stated(manager, caplog, stored)
            await manager.shutdown()
        finally:
            drop_namespace(url, namespace)

    async def test_a_new_namespace_is_no_reset(self, managers, caplog, tmp_path):
        caplog.set_level(logging.INFO, logger=LOGGER)
        manager = managers(_config(f"sqlite:///{tmp_path}/jobs.db", unique_namespace()))
        await manager.start()
        await wait_until(lambda: manager.persistence.leadership.epoch_checks >= 2, timeout=30)
        assert manager.status()["store_resets"] == []
        assert _reset_errors(caplog) == []


class TestClockSkew:
    @pytest.mark.parametrize(
        ("local", "server", "expected"),
        [
            ([100.0, 100.2], 95.1, 5.0),  # worker ahead: positive
            ([100.0, 100.0], 103.0, -3.0),  # worker behind: negative
            ([50.0, 52.0], 51.0, 0.0),  # a slow round trip: the midpoint
        ],
    )
    def test_skew_is_the_midpoint_of_the_round_trip_against_the_server(
        self, local, server, expected
    ):
        times = iter(local)
        assert measure_skew(lambda: next(times), lambda: server) == pytest.approx(expected)

    def test_a_store_without_a_server_clock_has_no_skew(self):
        assert measure_skew(time.time, lambda: None) is None

    @pytest.mark.parametrize("backend", ["postgresql", "redis"])
    async def test_a_worker_clock_ahead_of_the_store_is_warned_once_and_shown(
        self, backend, managers, caplog
    ):
        caplog.set_level(logging.INFO, logger=LOGGER)
        url = postgres_url() if backend == "postgresql" else redis_url()
        namespace = unique_namespace()
        try:
            manager = managers(_config(url, namespace))
            manager.persistence.leadership.local_clock = lambda: time.time() + AHEAD
            await manager.start()
            await wait_until(
                lambda: manager.status().get("clock_skew_seconds") is not None,
                timeout=30,
                what="a clock skew figure in status()",
            )
            assert manager.status()["clock_skew_seconds"] > CLOCK_SKEW_WARN_SECONDS
            await wait_until(lambda: manager.persistence.leadership.epoch_checks >= 3, timeout=30)
            warnings = [r for r in caplog.records if "clock" in r.getMessage().lower()]
            assert [r.levelno for r in warnings] == [logging.WARNING]
            assert "ahead" in warnings[0].getMessage()
            await manager.shutdown()
        finally:
            drop_namespace(url, namespace)

    async def test_sqlite_shares_the_machine_clock_and_shows_no_skew(self, managers, tmp_path):
        manager = managers(_config(f"sqlite:///{tmp_path}/jobs.db", unique_namespace()))
        manager.persistence.leadership.local_clock = lambda: time.time() + AHEAD
        await manager.start()
        await wait_until(lambda: manager.persistence.leadership.epoch_checks >= 2, timeout=30)
        assert manager.status()["clock_skew_seconds"] is None


def test_health_is_degraded_with_a_reason_while_the_clock_is_skewed():
    url, namespace = redis_url(), unique_namespace()
    app = NexiosApp()
    manager = setup_scheduler(app, _config(url, namespace))
    manager.persistence.leadership.local_clock = lambda: time.time() + AHEAD
    app.mount_router(scheduler_router("/scheduler", allow_unauthenticated=True))
    try:
        with TestClient(app) as client:
            wait_for(
                lambda: manager.status().get("clock_skew_seconds") is not None,
                timeout=30,
                what="a clock skew figure",
            )
            response = client.get("/scheduler/health")
        assert response.status_code == 200
        body = response.json()
        assert body["degraded"] is True
        (problem,) = body["problems"]
        assert "clock" in problem and "ahead" in problem
        assert body["clock_skew_seconds"] > CLOCK_SKEW_WARN_SECONDS
        assert body["store_resets"] == []
    finally:
        drop_namespace(url, namespace)
