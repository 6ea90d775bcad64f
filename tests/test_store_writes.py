"""Writes of many rows to SQLite and PostgreSQL go to the driver with each row made as the
driver takes it (SQLite's ``executemany``, psycopg2's ``execute_values``), not as
SQLAlchemy's parameter dictionaries, and Redis's as a script call per page of jobs: what goes in comes back byte for byte, a pass's
guarded moves keep what another worker changed, and a large write leaves (almost) nothing
behind for the garbage collector's oldest generation, whose full collections stop the
event loop. Against the real servers."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mw_services import opened_state, postgres_url, redis_url

from nexios_contrib_scheduler.stores.state import FencedError, SqlState

AWKWARD_IDS = ["plain", "with,comma", 'quote\'d "twice"', "tab\tand\nnewline", "日本語", ""]


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SqlState, Any]]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else postgres_url()
    with opened_state(url) as (backend, store):
        assert isinstance(backend, SqlState)
        yield backend, store


@pytest.fixture
def sqlite_state(tmp_path: Path) -> Iterator[tuple[SqlState, Any]]:
    with opened_state(f"sqlite:///{tmp_path / 'jobs.db'}") as (backend, store):
        assert isinstance(backend, SqlState)
        yield backend, store


def _fields(i: int) -> dict[str, bytes]:
    return {f"f{k}": bytes([i % 256, k]) * (k + 1) for k in range(28)}


def test_state_rows_come_back_byte_for_byte(sqlite_state):
    state, _ = sqlite_state
    jobs = {
        job_id: {"v": bytes(range(256)), "empty": b"", "n": "é".encode()} for job_id in AWKWARD_IDS
    }
    state.write_ops(jobs, {}, {})
    assert state.load_all() == jobs


def test_changes_replace_and_add_fields_only_of_jobs_still_stored(sqlite_state):
    state, _ = sqlite_state
    state.write_ops({"a": {"x": b"1", "y": b"2"}, "b": {"x": b"3"}}, {}, {})
    state.write_ops({}, {"a": {"y": b"two", "z": b"new"}, "gone": {"x": b"9"}}, {})
    assert state.load_all() == {"a": {"x": b"1", "y": b"two", "z": b"new"}, "b": {"x": b"3"}}


def test_schedules_put_replace_and_guarded_moves(sql_state):
    _, store = sql_state
    now = time.time()
    store.write_schedules({"a": (now, b"a1"), "b": (now, b"b1"), "c": (None, b"c1")}, ())
    store.write_schedules({"a": (now + 1, b"a2")}, ())  # replaces
    assert store.read_schedules(None) == {"a": b"a2", "b": b"b1", "c": b"c1"}
    kept = store.move_schedules(
        {
            "a": (b"a2", (now + 2, b"a3")),  # as last seen: moved
            "b": (b"stale", (now + 2, b"b2")),  # changed by another worker: kept
            "c": (b"c1", None),  # as last seen: deleted
        },
        None,
    )
    assert kept == 1
    assert store.read_schedules(None) == {"a": b"a3", "b": b"b1"}
    assert store.move_schedules({"b": (b"stale", None)}, None) == 0  # a guarded delete
    assert store.read_schedules(None) == {"a": b"a3", "b": b"b1"}


def _survivors_of_young_collections(action: Callable[[], object]) -> int:
    """How many objects were in the middle generation when it was collected during
    ``action``: objects alive across a young collection, which a collection of that
    generation moves into the oldest one (every 25 % it grows sets off a full collection)."""
    counts: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 1:
            counts.append(len(gc.get_objects(1)))

    old = gc.get_threshold()
    gc.collect()
    gc.set_threshold(100, 1, 1_000_000)  # young collections often; no full ones
    gc.callbacks.append(on_gc)
    try:
        action()
    finally:
        gc.callbacks.remove(on_gc)
        gc.set_threshold(*old)
    return sum(counts)


def test_a_large_write_leaves_nothing_for_the_oldest_generation(sql_state):
    state, store = sql_state
    now = time.time()
    state.write_ops({"warm": _fields(0)}, {}, {})  # the statements compiled and cached
    store.write_schedules({"warm": (now, b"w")}, ())
    store.move_schedules({"warm": (b"w", (now, b"w2"))}, None)
    jobs = {f"job-{i}": _fields(i) for i in range(300)}  # 8,400 state rows
    schedules = {f"job-{i}": (now + i, b"s" * 300) for i in range(2000)}
    moves: dict[str, tuple[bytes, tuple[float, bytes] | None]] = {
        job_id: (b"s" * 300, (when + 1, b"t" * 300) if i % 2 else None)  # moved or deleted
        for i, (job_id, (when, _)) in enumerate(schedules.items())
    }

    def write() -> None:
        state.write_ops(jobs, {}, {})
        state.write_ops({}, {job_id: {"f0": b"changed", "new": b"x"} for job_id in jobs}, {})
        store.write_schedules(schedules, ())
        assert store.move_schedules(moves, None) == 0

    survivors = _survivors_of_young_collections(write)
    # Through SQLAlchemy's executemany every row stayed alive for the whole call as a
    # dictionary holding a driver object for its binary value: SQLite's state rows alone
    # left about 24,000 survivors, PostgreSQL's 2,000 schedules about 2,600.
    assert survivors < 1_000
    assert state.load_all()["job-7"]["new"] == b"x"


@pytest.fixture
def redis_state() -> Iterator[Any]:
    with opened_state(redis_url()) as (backend, _):
        yield backend


def test_redis_writes_of_many_jobs_leave_nothing_for_the_oldest_generation(redis_state):
    """A write's job hashes go as a script call per page of jobs, not a command or two per
    job held in the pipeline until it is sent; a job gone meanwhile gets no fields back."""
    state = redis_state
    state.write_ops({"warm": _fields(0), "gone": {"x": b"1"}}, {}, {})
    state.write_ops({}, {}, {"gone": time.time()})
    jobs = {f"job-{i}": _fields(i) for i in range(1000)}
    changes = {job_id: {"f0": b"changed", "new": b"x"} for job_id in [*jobs, "gone"]}

    def write() -> None:
        state.write_ops(jobs, {}, {})
        state.write_ops({}, changes, {})

    survivors = _survivors_of_young_collections(write)
    # A command per job (two for a new one): about 2,000 survivors for this write.
    assert survivors < 1_000
    stored = state.load_all()
    assert "gone" not in stored
    assert stored["job-7"] == {**_fields(7), "f0": b"changed", "new": b"x"}


def test_redis_run_state_goes_as_a_few_script_calls_with_each_job_s_fires(redis_state):
    """A write of run state (jobs' fields, fires started, fires ended) is a script call
    per page of about ``MANY`` values, not one or two per job; a job gone meanwhile gets no
    fields back; a write with an older fencing token changes nothing."""
    state = redis_state
    jobs = {f"job-{i}": _fields(i) for i in range(1500)}
    state.write_ops(jobs, {}, {})
    fires = [(job_id, "2026-12-01T10:00:00") for job_id in jobs]
    assert state.claim_many(fires, "worker-a", None) == [True] * len(fires)
    state.raise_fence(5)
    calls = [0]
    script = state._run_state_script

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return script(*args, **kwargs)

    state._run_state_script = counted
    updates = {job_id: {"f0": b"ran", "runs": b"1"} for job_id in [*jobs, "gone"]}
    with pytest.raises(FencedError):
        state.write_run_state(updates, fires, fires[:500], fence=4)
    assert state.load_all()["job-3"] == _fields(3)
    assert {f.started for f in state.in_flight()} == {False}

    def write() -> None:
        state.write_run_state(updates, fires, fires[:500], fence=5)

    calls[0] = 0
    survivors = _survivors_of_young_collections(write)
    assert calls[0] <= 10  # 1,500 jobs' fields, starts and ends: a few pages, not 3,500
    assert survivors < 1_000
    stored = state.load_all()
    assert "gone" not in stored
    assert stored["job-3"] == {**_fields(3), "f0": b"ran", "runs": b"1"}
    in_flight = state.in_flight()
    assert sorted(f.job_id for f in in_flight) == sorted(j for j, _ in fires[500:])
    assert {f.started for f in in_flight} == {True}
