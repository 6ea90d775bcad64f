"""A scheduling pass on a persistent job store reads its jobs from memory and hands its
writes to the writer: the claims of a slice's fires, then the moves of its jobs, each kind
written in one statement (or script) per batch, the claims before the moves.

Against the real SQLite (a file, with a lock file for coordination), PostgreSQL and Redis,
each test in a namespace of its own. The writes are counted by wrapping the store's methods,
never judged by timing.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from helpers import wait_until
from mw_services import drop_namespace, postgres_url, redis_url, unique_namespace

from nexios_contrib_scheduler import (
    DateTimeTrigger,
    FireKey,
    IntervalTrigger,
    SchedulerConfig,
    SchedulerManager,
    current_fire,
)
from nexios_contrib_scheduler.stores import records
from nexios_contrib_scheduler.stores import sync as sync_module

UTC = timezone.utc

# ---------------------------------------------------------------- jobs (importable by name)

FIRES: dict[str, list[FireKey | None]] = defaultdict(list)


async def tick(label: str) -> None:
    FIRES[label].append(current_fire())


@pytest.fixture(autouse=True)
def _clean_fires():
    FIRES.clear()
    yield
    FIRES.clear()


# ---------------------------------------------------------------- stores and managers


@dataclass
class Store:
    kind: str
    url: str
    coordination: str
    namespace: str

    def config(self, **options: Any) -> SchedulerConfig:
        options.setdefault("shutdown_timeout", 2)
        return SchedulerConfig(
            jobstore=self.url,
            coordination=self.coordination,
            namespace=self.namespace,
            **options,
        )


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def store(request, tmp_path):
    namespace = unique_namespace()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/jobs.db"
        coordination = f"file://{tmp_path}/lock"
    elif request.param == "postgresql":
        url = coordination = postgres_url()
    else:
        url = coordination = redis_url()
    yield Store(request.param, url, coordination, namespace)
    if request.param != "sqlite":
        drop_namespace(url, namespace)


async def leader(store: Store, managers) -> SchedulerManager:
    manager = managers(store.config())
    await manager.start()
    await wait_until(lambda: manager.is_leader, timeout=30, what="the worker to lead")
    return manager


class Writes:
    """Counts the writes of one manager: the pass's calls to its in-memory job store, and
    the writer's calls to the store (claims, moves)."""

    def __init__(self, manager: SchedulerManager, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        self.claimed: list[tuple[str, str]] = []
        persistence = manager.persistence
        state, store = persistence.state, persistence.store
        mirror, scheduler = persistence.jobstore, manager.apscheduler
        monkeypatch.setattr(state, "claim", self._counted("claim", state.claim))
        monkeypatch.setattr(state, "claim_many", self._claims(state.claim_many))
        monkeypatch.setattr(store, "move_schedules", self._counted("moves", store.move_schedules))
        monkeypatch.setattr(mirror, "write_back", self._counted("write_back", mirror.write_back))
        self.read_sizes: list[int] = []
        monkeypatch.setattr(mirror, "get_due_jobs", self._sized(mirror.get_due_jobs))
        monkeypatch.setattr(
            scheduler, "_submit_slice", self._counted("slices", scheduler._submit_slice)
        )

    def _counted(self, name: str, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return method(*args, **kwargs)

        return counted

    def _claims(self, method: Any) -> Any:
        def claims(fires: Any, *args: Any, **kwargs: Any) -> Any:
            self.counts["claim_many"] += 1
            self.claimed += list(fires)
            return method(fires, *args, **kwargs)

        return claims

    def _sized(self, method: Any) -> Any:
        def sized(*args: Any, **kwargs: Any) -> Any:
            jobs = method(*args, **kwargs)
            self.read_sizes.append(len(jobs))
            return jobs

        return sized


async def stored(manager: SchedulerManager, ids: Any = None) -> dict[str, Any]:
    """The jobs the store holds, as APScheduler jobs (once this worker's writes are in)."""
    assert await manager.flush()
    read = await asyncio.to_thread(manager.persistence.jobstore.read, ids)
    return {job_id: job for job_id, (job, _) in read.items()}


# ---------------------------------------------------------------- a burst of one-shots


BURST = 150


async def test_a_burst_of_one_shots_is_claimed_and_moved_in_batches(store, managers, monkeypatch):
    manager = await leader(store, managers)
    scheduler = manager.apscheduler
    # Slices end by their size only, so that the count below does not depend on speed.
    monkeypatch.setattr(scheduler, "slice_time", 60.0)
    monkeypatch.setattr(scheduler.pacer, "budget", math.inf)
    writes = Writes(manager, monkeypatch)
    scheduler.pause()  # every job is added before the pass that starts them
    due = datetime.now(UTC)
    for i in range(BURST):
        manager.add_job(tick, DateTimeTrigger(due), args=(f"b{i}",), id=f"b{i}")
    scheduler.resume()

    await wait_until(
        lambda: sum(len(FIRES[f"b{i}"]) for i in range(BURST)) >= BURST,
        timeout=60,
        what=f"the {BURST} one-shot jobs to run",
    )
    await wait_until(
        lambda: all(manager.get_job(f"b{i}").total_run_count == 1 for i in range(BURST)),
        timeout=60,
        what="every run to be recorded",
    )
    await asyncio.sleep(0.3)  # a second run would show by now
    assert {len(FIRES[f"b{i}"]) for i in range(BURST)} == {1}
    assert await manager.flush()  # the moves are written after the runs start, off the loop

    slices = writes.counts["slices"]
    assert slices >= math.ceil(BURST / scheduler.slice_size)
    assert slices <= math.ceil(BURST / scheduler.slice_size) + 2  # the burst came in one go
    # Every fire claimed once, by the slices' claims, in at most one write per slice (the
    # writer merges what piles up).
    assert writes.counts["claim"] == 0  # no fire was claimed on its own
    assert sorted(writes.claimed) == sorted(set(writes.claimed))
    assert {job_id for job_id, _ in writes.claimed} == {f"b{i}" for i in range(BURST)}
    assert 1 <= writes.counts["claim_many"] <= slices
    assert writes.counts["write_back"] == slices
    # The moves: at most one write per slice; none when the runs ended (and removed the
    # one-shots, which removes their schedules) before the writer came to them.
    assert writes.counts["moves"] <= slices
    # A pass reads no more due jobs than a slice submits.
    assert writes.read_sizes and max(writes.read_sizes) <= scheduler.slice_size
    # Every one-shot left the store, and the worker's view.
    assert manager.persistence.jobstore.get_all_jobs() == []
    assert await stored(manager) == {}


# ---------------------------------------------------------------- interval jobs


async def test_interval_jobs_keep_firing_across_passes_each_fire_once(store, managers, monkeypatch):
    manager = await leader(store, managers)
    writes = Writes(manager, monkeypatch)
    labels = [f"i{n}" for n in range(5)]
    for label in labels:
        manager.add_job(tick, IntervalTrigger(seconds=0.2), args=(label,), id=label)

    await wait_until(
        lambda: all(len(FIRES[label]) >= 4 for label in labels),
        timeout=60,
        what="every interval job to fire 4 times",
    )
    for label in labels:
        times = [key.scheduled_time for key in FIRES[label]]
        assert len(times) == len(set(times)), f"a fire of {label} ran twice"
        assert times == sorted(times)
        steps = {round((b - a).total_seconds(), 6) for a, b in zip(times, times[1:])}
        assert all(step > 0 and round(step / 0.2, 6).is_integer() for step in steps)
    assert writes.counts["claim"] == 0
    assert writes.counts["write_back"] == writes.counts["slices"] > 0
    # The store moved each job on: its next fire is ahead of the last one run.
    jobs = await stored(manager, labels)
    for label in labels:
        assert jobs[label].next_run_time > FIRES[label][-1].scheduled_time


# ---------------------------------------------------------------- the guard, in a batch


async def test_a_batched_pass_does_not_undo_another_workers_change(store, managers, monkeypatch):
    one = await leader(store, managers)
    two = managers(store.config())
    await two.start()
    assert not two.is_leader
    theirs = two.persistence.jobstore
    scheduler = one.apscheduler
    writes = Writes(one, monkeypatch)
    scheduler.pause()
    for label in ("a", "b", "c"):
        one.add_job(tick, IntervalTrigger(hours=1), args=(label,), id=label)
    assert await one.flush()
    await wait_until(lambda: theirs.lookup_job("b") is not None, what="worker two to see b")

    claim = scheduler.claim_fires
    changed: list[list[str]] = []

    def claim_then_change(fires):
        # Between the pass's read of the due jobs and its moves, worker two pauses b (and
        # its write is in the store first).
        claim(fires)
        if not changed:
            changed.append([job_id for job_id, _ in fires])
            paused = theirs.lookup_job("b")
            paused._modify(next_run_time=None)
            theirs.update_job(paused)
            assert two.persistence.writer.flush(10)

    monkeypatch.setattr(scheduler, "claim_fires", claim_then_change)
    scheduler.resume()
    await wait_until(
        lambda: all(len(FIRES[label]) == 1 for label in "abc"),
        timeout=30,
        what="the three jobs to run",
    )
    assert sorted(changed[0]) == ["a", "b", "c"]  # one slice
    assert writes.counts["write_back"] == 1
    # b keeps worker two's pause; a and c were moved on to their next fire.
    jobs = await stored(one)
    assert jobs["b"].next_run_time is None
    for label in "ac":
        ran = FIRES[label][0].scheduled_time
        assert jobs[label].next_run_time == ran + timedelta(hours=1)
    # Worker one hears of the pause: its view follows the store.
    mine = one.persistence.jobstore
    await wait_until(lambda: mine.lookup_job("b").next_run_time is None, what="one to see it")


# ---------------------------------------------------------------- fencing, in a batch


async def test_a_pass_s_moves_are_refused_whole_once_a_newer_leader_wrote(
    store, managers, monkeypatch
):
    one = await leader(store, managers)
    persistence = one.persistence
    token = persistence.fence
    assert token is not None
    mirror, store_, scheduler = persistence.jobstore, persistence.store, one.apscheduler
    refusals: list[Exception] = []
    fenced = persistence.fenced

    def on_fenced(error: Exception) -> None:
        refusals.append(error)
        fenced(error)

    monkeypatch.setattr(persistence, "fenced", on_fenced)
    scheduler.pause()
    now = datetime.now(UTC)
    one.add_job(tick, IntervalTrigger(hours=1), args=("x",), id="x")
    one.add_job(tick, DateTimeTrigger(now), args=("y",), id="y")
    before = {job_id: job.next_run_time for job_id, job in (await stored(one)).items()}
    assert set(before) == {"x", "y"}

    claim = scheduler.claim_fires

    def claim_then_overtaken(fires):
        # The fires are claimed; then a newer leader raises the fence before the moves.
        claim(fires)
        assert persistence.writer.flush(10)
        persistence.state.raise_fence(token + 1)

    move = store_.move_schedules
    after: list[dict[str, datetime | None]] = []

    def move_then_look(moves, fence):
        # What the store holds right after the moves (the worker may lead again soon, with
        # a newer token, and move the jobs on in a later pass).
        try:
            return move(moves, fence)
        finally:
            read = mirror.read(None)
            after.append({job_id: job.next_run_time for job_id, (job, _) in read.items()})

    monkeypatch.setattr(store_, "move_schedules", move_then_look)
    monkeypatch.setattr(scheduler, "claim_fires", claim_then_overtaken)
    scheduler.resume()
    await wait_until(lambda: after, what="the pass's moves")
    await wait_until(lambda: refusals, what="the refusal to be told")
    # Nothing of the slice was written: x was not moved on and y was not removed.
    assert after[0] == before


# ---------------------------------------------------------------- a burst's runs first


async def stored_run_counts(manager: SchedulerManager, ids: list[str]) -> list[Any]:
    state = manager.persistence.state
    loaded = [await asyncio.to_thread(state.load, job_id) for job_id in ids]
    return [
        records.decode(fields or {}, job_id).get("total_run_count")
        for job_id, fields in zip(ids, loaded)
    ]


async def _burst_behind_a_gate(
    manager: SchedulerManager, monkeypatch: pytest.MonkeyPatch
) -> threading.Event:
    """100 one-shots b0-b99 due now, whose claims are held back until the returned gate is
    set; returns once their claims are handed over (their runs wait for them)."""
    persistence, scheduler = manager.persistence, manager.apscheduler
    state = persistence.state
    gate = threading.Event()
    claim_many = state.claim_many

    def gated(fires: Any, *args: Any, **kwargs: Any) -> Any:
        if any(job_id.startswith("b") for job_id, _ in fires):
            assert gate.wait(60), "the test never let the burst's claims through"
        return claim_many(fires, *args, **kwargs)

    monkeypatch.setattr(state, "claim_many", gated)
    scheduler.pause()
    due = datetime.now(UTC)
    for i in range(100):
        manager.add_job(tick, DateTimeTrigger(due), args=(f"b{i}",), id=f"b{i}")
    scheduler.resume()
    await wait_until(
        lambda: persistence.runs_waiting() >= 100, what="the burst's claims to be handed over"
    )
    return gate


async def _runs_waiting_behind_a_burst(
    store: Store, managers, monkeypatch: pytest.MonkeyPatch, hold: float
) -> tuple[SchedulerManager, list[str], list[int], threading.Event]:
    """A leader whose jobs a0-a2 ran and whose run state is due to be encoded, while the
    claims of a burst of 100 one-shots b0-b99 are held back by ``gate``: the encoding is
    looked at once, then every 5 ms. Returns the leader, the ids whose run state was
    handed to the writer, the count of looks, and the gate."""
    monkeypatch.setattr(sync_module, "RUN_STATE_DELAY", 3600.0)  # looked at below
    monkeypatch.setattr(sync_module, "RUN_STATE_HOLD", hold)
    manager = await leader(store, managers)
    sync = manager.persistence.sync
    handed: list[str] = []
    hand = sync._hand

    def noted_hand(record: Any) -> None:
        handed.append(record.id)
        hand(record)

    monkeypatch.setattr(sync, "_hand", noted_hand)
    for i in range(3):
        trigger = IntervalTrigger(hours=1, start_now=True)
        manager.add_job(tick, trigger, args=(f"a{i}",), id=f"a{i}")
    await wait_until(
        lambda: all(manager.get_job(f"a{i}").total_run_count == 1 for i in range(3)),
        what="a0-a2 to run",
    )
    gate = await _burst_behind_a_gate(manager, monkeypatch)
    assert handed == []
    looks = [0]
    encode = sync._encode_run_state

    def look() -> None:
        looks[0] += 1
        encode()

    monkeypatch.setattr(sync, "_encode_run_state", look)
    monkeypatch.setattr(sync_module, "RUN_STATE_DELAY", 0.02)
    sync._run_state_timer.cancel()  # the one due in an hour
    look()  # a0-a2's run state is due now
    return manager, handed, looks, gate


async def test_run_state_is_encoded_after_a_burst_s_runs_have_started(store, managers, monkeypatch):
    manager, handed, looks, gate = await _runs_waiting_behind_a_burst(
        store, managers, monkeypatch, hold=3600.0
    )
    try:
        await wait_until(lambda: looks[0] >= 5, what="the run state to be looked at again")
        assert handed == []  # held: 100 runs are still to start
    finally:
        gate.set()
    await wait_until(
        lambda: all(len(FIRES[f"b{i}"]) == 1 for i in range(100)), what="the burst to run"
    )
    await wait_until(
        lambda: {"a0", "a1", "a2"} <= set(handed), what="a0-a2's run state to be handed over"
    )
    assert await manager.flush()
    assert await stored_run_counts(manager, ["a0", "a1", "a2"]) == [1, 1, 1]


async def test_run_state_waits_for_a_burst_at_most_the_hold(store, managers, monkeypatch):
    manager, handed, _, gate = await _runs_waiting_behind_a_burst(
        store, managers, monkeypatch, hold=0.3
    )
    try:
        await wait_until(
            lambda: {"a0", "a1", "a2"} <= set(handed), what="a0-a2's run state to be handed over"
        )
        assert manager.persistence.writer.runs_waiting() >= 100  # the burst still waits
    finally:
        gate.set()
    assert await manager.flush()
    assert await stored_run_counts(manager, ["a0", "a1", "a2"]) == [1, 1, 1]


RELEASE: dict[str, asyncio.Event] = {}


async def held(label: str) -> None:
    """A run that lasts until the test releases it."""
    FIRES[label].append(current_fire())
    await RELEASE[label].wait()


async def test_a_run_s_bookkeeping_waits_for_the_runs_of_a_burst_s_claims(
    store, managers, monkeypatch
):
    # With claims, the passes of a burst end before most of its runs start: the runs wait
    # for their claims. A run that ends meanwhile has its bookkeeping (counters, history,
    # listeners) wait until they have started, as it does during the passes themselves.
    manager = await leader(store, managers)
    manager.executor.later_max_wait = 3600.0  # the wait is bounded; not what is tested
    scheduler = manager.apscheduler
    RELEASE["long"] = asyncio.Event()
    try:
        long_job = manager.add_job(held, IntervalTrigger(hours=1, start_now=True), args=("long",))
        await wait_until(lambda: len(FIRES["long"]) == 1, what="the long run to start")
        gate = await _burst_behind_a_gate(manager, monkeypatch)
        try:
            await wait_until(  # each moved on: out of APScheduler's store
                lambda: all(scheduler.get_job(f"b{i}") is None for i in range(100)),
                what="the burst's passes to end",
            )
            assert scheduler.bursting  # its runs are still to start
            RELEASE["long"].set()
            tasks = manager.executor.tasks
            # A run's task leaves ``tasks`` after its end was handed to the bookkeeping.
            await wait_until(
                lambda: long_job.id not in {record.id for record in tasks.values()},
                what="the long run to end",
            )
            assert long_job.success_count == 0  # its bookkeeping waits for the burst
            assert long_job.current_instances == 1
        finally:
            gate.set()
        await wait_until(
            lambda: all(len(FIRES[f"b{i}"]) == 1 for i in range(100)), what="the burst to run"
        )
        await wait_until(
            lambda: long_job.success_count == 1, what="the long run's bookkeeping after the burst"
        )
        assert not scheduler.bursting
        assert long_job.current_instances == 0
    finally:
        RELEASE.clear()
