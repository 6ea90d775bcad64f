"""A reload is applied a slice at a time: the event loop serves others between slices.

A coordinated worker reloads every job now and then (the periodic check, a reconnect, a
new lease); with many jobs, merging all of them in one turn of the loop held it for
hundreds of milliseconds. These tests make the slices small (``APPLY_SLICE``) and check
that the loop runs other callbacks between them, that a job this worker changes meanwhile
keeps its change, that a job gone from the store leaves the view, and that reloads are
applied one after another, in the order they were read. On SQLite, PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import unannounced, wait_until
from test_in_memory_reads import Store, add_jobs, store  # noqa: F401

from nexios_contrib_scheduler import JobStatus, SchedulerManager
from nexios_contrib_scheduler.stores import leadership, sync

JOBS = 30
SLICE = 4


@pytest.fixture
async def leader(store: Store, monkeypatch) -> Any:  # noqa: F811
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 3600.0)  # reloads only when asked
    monkeypatch.setattr(sync, "APPLY_SLICE", SLICE)
    manager = SchedulerManager(config=store.config(coordinated=True))
    add_jobs(manager, JOBS)
    await manager.start()
    assert manager.is_leader
    try:
        yield manager
    finally:
        await manager.shutdown()


def watch_applies(manager: SchedulerManager, monkeypatch, events: list[str]) -> None:
    persistence = manager.persistence
    assert persistence is not None
    real = persistence.sync._apply_one

    def one(job_id: str, *args: Any) -> None:
        events.append(job_id)
        real(job_id, *args)

    monkeypatch.setattr(persistence.sync, "_apply_one", one)


async def reload_all(manager: SchedulerManager) -> None:
    persistence = manager.persistence
    assert persistence is not None
    before = persistence.reloads
    persistence.refresh_soon()
    await wait_until(lambda: persistence.reloads > before, 30, "the reload to be applied")


async def test_the_loop_runs_other_callbacks_between_the_slices_of_a_reload(leader, monkeypatch):
    events: list[str] = []
    watch_applies(leader, monkeypatch, events)
    stop = asyncio.Event()

    async def ticking() -> None:
        while not stop.is_set():
            events.append("tick")
            await asyncio.sleep(0)

    ticker = asyncio.create_task(ticking())
    try:
        await reload_all(leader)
    finally:
        stop.set()
        await ticker
    applied = [e for e in events if e != "tick"]
    assert sorted(applied) == sorted(f"job-{n}" for n in range(JOBS))
    runs: list[int] = []  # jobs applied in one turn of the loop, turn after turn
    current = 0
    for event in events:
        if event != "tick":
            current += 1
        elif current:
            runs.append(current)
            current = 0
    runs += [current] if current else []
    assert max(runs) <= SLICE and len(runs) >= JOBS // SLICE, runs


async def test_a_job_changed_while_a_reload_is_applied_keeps_the_change(leader, monkeypatch):
    persistence = leader.persistence
    assert persistence is not None
    real = persistence.sync._apply_one
    changed = []

    def one(job_id: str, *args: Any) -> None:
        if not changed:  # in the first slice, the app pauses a job not applied yet
            changed.append(leader.pause_job("job-29", reason="mid-reload"))
        real(job_id, *args)

    monkeypatch.setattr(persistence.sync, "_apply_one", one)
    await reload_all(leader)
    assert changed == [True]
    job = leader.get_job("job-29")
    assert job is not None and job.status is JobStatus.PAUSED
    assert await leader.flush()
    monkeypatch.setattr(persistence.sync, "_apply_one", real)
    await reload_all(leader)  # and the store has it
    job = leader.get_job("job-29")
    assert job is not None and job.status is JobStatus.PAUSED
    assert job.paused_reason == "mid-reload"


async def test_a_job_gone_from_the_store_leaves_the_view_after_a_sliced_reload(
    leader,
    store,  # noqa: F811
    monkeypatch,
):
    other = SchedulerManager(config=store.config(coordinated=True))
    await other.start()
    try:
        persistence = other.persistence
        assert persistence is not None and not other.is_leader
        with unannounced(persistence):  # nobody is told
            assert other.remove_job("job-7")
            assert await other.flush()
    finally:
        await other.shutdown()
    assert leader.get_job("job-7") is not None  # not heard of yet
    await reload_all(leader)
    assert leader.get_job("job-7") is None
    assert len(leader.get_jobs()) == JOBS - 1


async def test_reloads_are_applied_one_after_another_in_the_order_read(leader, monkeypatch):
    persistence = leader.persistence
    assert persistence is not None
    order: list[str] = []
    real_sync = persistence.sync
    real_applying = real_sync.applying

    def applying(loaded: Any) -> Any:
        tag = "all" if loaded.ids is None else ",".join(sorted(loaded.ids))
        order.append(f"begin {tag}")
        yield from real_applying(loaded)
        order.append(f"end {tag}")

    monkeypatch.setattr(real_sync, "applying", applying)
    full = await asyncio.to_thread(persistence._read, None, False, False)
    one = await asyncio.to_thread(persistence._read, {"job-3"}, False, False)
    before = persistence.reloads
    persistence._apply(full, False, False)
    persistence._apply(one, False, False)
    await wait_until(lambda: persistence.reloads == before + 2, 30, "both reloads applied")
    assert order == ["begin all", "end all", "begin job-3", "end job-3"]
