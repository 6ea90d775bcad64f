"""Run state written off the event loop, in batches: nothing lost, fewer writes, and the
loop never waits for them.

Against the real SQLite (a file), PostgreSQL and Redis, each test in a namespace of its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from helpers import FailingFirst, wait_until
from mw_services import drop_namespace, postgres_url, redis_url, unique_namespace

from nexios_contrib_scheduler import (
    DateTimeTrigger,
    IntervalTrigger,
    SchedulerConfig,
    SchedulerManager,
)
from nexios_contrib_scheduler.stores import records
from nexios_contrib_scheduler.stores import sync as sync_module
from nexios_contrib_scheduler.stores import writer as writer_module

UTC = timezone.utc
LOGGER = "nexios_contrib_scheduler"
RUNS: Counter[str] = Counter()


async def count(label: str) -> None:
    RUNS[label] += 1


@pytest.fixture(autouse=True)
def _clean():
    RUNS.clear()
    yield
    RUNS.clear()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def config(request, tmp_path):
    namespace = unique_namespace()
    if request.param == "sqlite":
        url, coordination = f"sqlite:///{tmp_path}/jobs.db", f"file://{tmp_path}/lock"
    else:
        url = coordination = postgres_url() if request.param == "postgresql" else redis_url()

    def make(**options) -> SchedulerConfig:
        options.setdefault("shutdown_timeout", 10)
        options.setdefault("job_defaults", {"misfire_grace_time": None})
        return SchedulerConfig(
            jobstore=url, coordination=coordination, namespace=namespace, **options
        )

    yield make
    if request.param != "sqlite":
        drop_namespace(url, namespace)


def _stored_counts(manager: SchedulerManager, job_id: str) -> tuple[int, int]:
    persistence = manager.persistence
    assert persistence is not None
    values = records.decode(persistence.state.load(job_id) or {}, job_id)
    return values.get("total_run_count", 0), values.get("success_count", 0)


async def test_the_runs_of_a_burst_are_written_in_few_batches_and_none_is_lost(
    config, managers, monkeypatch
):
    # Run state handed to the writer by count only (not cut short by time, as a loaded
    # machine would cut it): the machine's speed does not decide the batches counted.
    monkeypatch.setattr(sync_module, "RUN_STATE_TIME", 3600.0)
    manager = managers(config())
    await manager.start()
    persistence = manager.persistence
    assert persistence is not None
    writes_on_loop: list[int] = []
    real = persistence.state.write_run_state
    loop_thread = threading.get_ident()

    def watched(*args, **kwargs):
        if threading.get_ident() == loop_thread:
            writes_on_loop.append(1)
        return real(*args, **kwargs)

    persistence.state.write_run_state = watched  # type: ignore[method-assign]
    # Slices by count only: on a loaded machine, slices cut short by time would mean more
    # claims written, and the machine's speed would decide the count below.
    manager.apscheduler.slice_time = 3600.0
    due = datetime.now(UTC) + timedelta(seconds=0.5)
    jobs = 120
    for i in range(jobs):
        manager.add_job(count, DateTimeTrigger(due), args=(f"b{i}",), id=f"b{i}")
    assert await persistence.flush()  # the adds' writes are not the burst's
    batches_of_adds = persistence.writer.batches
    await wait_until(lambda: len(RUNS) == jobs, timeout=60, what="every one-shot to run")
    await wait_until(  # the runs' bookkeeping waits while a burst is being started
        lambda: all(manager.get_job(f"b{i}").success_count == 1 for i in range(jobs)),
        timeout=60,
        what="every run recorded",
    )
    batches_before = persistence.writer.batches
    assert await persistence.flush()
    assert sorted(RUNS.values()) == [1] * jobs
    for i in range(jobs):
        assert _stored_counts(manager, f"b{i}") == (1, 1)
    # Each run leaves about five writes of run state (start, its fire noted started, end,
    # its fire ended, the job completing); merged, far fewer batches reach the store.
    burst_batches = persistence.writer.batches - batches_of_adds
    assert burst_batches < jobs, burst_batches
    assert batches_before <= persistence.writer.batches
    assert writes_on_loop == []
    assert persistence.state.in_flight() == []


async def test_a_write_that_fails_is_tried_again_and_nothing_is_lost(config, managers, caplog):
    manager = managers(config())
    await manager.start()
    persistence = manager.persistence
    assert persistence is not None
    flaky = FailingFirst(persistence.state.write_run_state, 2)
    persistence.state.write_run_state = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        manager.add_job(count, IntervalTrigger(seconds=0.2), args=("r",), id="r")
        await wait_until(lambda: RUNS["r"] >= 3, timeout=60, what="three runs")
        manager.pause_job("r")  # no more runs: what the store holds can be compared
        await wait_until(
            lambda: manager.get_job("r").success_count == RUNS["r"],
            timeout=30,
            what="the last run recorded",
        )
        assert await persistence.flush()
    total, succeeded = _stored_counts(manager, "r")
    job = manager.get_job("r")
    assert total >= 3 and succeeded >= 3
    assert (total, succeeded) == (job.total_run_count, job.success_count)
    assert flaky.left == 0
    assert "could not write to the job store" in caplog.text


async def test_shutdown_writes_the_last_runs_before_it_returns(config, managers):
    first = managers(config())
    await first.start()
    first.add_job(count, DateTimeTrigger(datetime.now(UTC)), args=("s",), id="s")
    await wait_until(lambda: RUNS["s"] == 1, timeout=30, what="the run")
    await first.shutdown()
    second = managers(config())
    await second.start()
    job = second.get_job("s")
    assert (job.total_run_count, job.success_count) == (1, 1)
    assert second.persistence is not None and second.persistence.state.in_flight() == []


async def test_jobs_declared_before_start_are_written_together(config, managers, monkeypatch):
    manager = managers(config())
    declared = 300
    for i in range(declared):
        manager.add_job(count, IntervalTrigger(hours=1), args=(f"d{i}",), id=f"d{i}")
    persistence = manager.persistence
    assert persistence is not None
    state, store = persistence.state, persistence.store
    calls: Counter[str] = Counter()

    def counted(name: str, method):
        def call(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)

        return call

    for name in ("create", "create_many", "write_ops"):
        monkeypatch.setattr(state, name, counted(name, getattr(state, name)))
    monkeypatch.setattr(store, "write_schedules", counted("schedules", store.write_schedules))
    # The writer holds its batch for the start-up reconcile at most HOLD_MAX; a loaded
    # machine can take longer to hand the 300 jobs over.
    monkeypatch.setattr(writer_module, "HOLD_MAX", 3600.0)
    await manager.start()

    # The writer merged them: a few transactions, each with states and schedules together.
    assert calls["create"] == 0 and calls["create_many"] == 0
    assert 1 <= calls["write_ops"] <= 3
    assert calls["schedules"] == calls["write_ops"]
    assert len(persistence.jobstore.get_all_jobs()) == declared
    assert len(await asyncio.to_thread(store.read_schedules, None)) == declared
    assert len(await asyncio.to_thread(state.load_all)) == declared
    await manager.shutdown()
    again = managers(config())
    await again.start()
    assert len(again.get_jobs()) == declared


async def test_a_runs_state_is_written_once_with_its_fires_end_and_a_reload_keeps_it(
    config, managers, monkeypatch
):
    """A run's state reaches the writer a little after the run (once for its start and
    end), its fire's end with it or after it, never before; a reload of the job read
    meanwhile leaves the newer state in memory be; a flush writes it."""
    from nexios_contrib_scheduler.stores import sync

    monkeypatch.setattr(sync, "RUN_STATE_DELAY", 3600.0)  # held until the flush below
    manager = managers(config())
    await manager.start()
    persistence = manager.persistence
    assert persistence is not None
    calls: list[tuple[list[str], list[str]]] = []
    real = persistence.state.write_run_state

    def watched(updates, started, ended, fence=None):
        calls.append((sorted(updates), [job_id for job_id, _ in ended]))
        return real(updates, started, ended, fence)

    persistence.state.write_run_state = watched  # type: ignore[method-assign]
    manager.add_job(count, IntervalTrigger(hours=1), args=("o",), id="o")
    await wait_until(
        lambda: manager.get_job("o").success_count == 1, timeout=30, what="the first run"
    )
    assert persistence.writer.flush(10)  # what was handed over; the run state was not
    assert _stored_counts(manager, "o") == (0, 0)
    assert not any("o" in ended for _, ended in calls)  # its end waits for its run state

    loaded = await asyncio.to_thread(persistence.sync.load, {"o"})
    persistence.sync.apply(loaded)  # read before the run state was written
    job = manager.get_job("o")
    assert (job.total_run_count, job.success_count) == (1, 1)

    assert await manager.flush()
    assert _stored_counts(manager, "o") == (1, 1)
    assert persistence.state.in_flight() == []
    updated = [i for i, (ids, _) in enumerate(calls) if "o" in ids]
    ended = [i for i, (_, ids) in enumerate(calls) if "o" in ids]
    assert updated and ended and updated[0] <= ended[0]
