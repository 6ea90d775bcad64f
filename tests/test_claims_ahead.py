"""With a persistent store the leader claims each fire ``claim_ahead`` seconds before it is
due, so that its run starts on time instead of waiting for the store; a claim it does not
use is given back, and one it cannot use as leader any more is run all the same.

Against the real SQLite (a file, with a lock file for coordination), PostgreSQL and Redis,
each test in a namespace of its own. A wide ``claim_ahead`` (1 s) leaves time to act
between a claim and its fire; what was claimed is read from the store, never judged by
timing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from helpers import wait_until
from test_batched_pass import FIRES, Store, _clean_fires, store, tick  # noqa: F401

from nexios_contrib_scheduler import DateTimeTrigger, SchedulerConfig, SchedulerManager
from nexios_contrib_scheduler.stores.fires import fire_token
from nexios_contrib_scheduler.stores.state import FencedError

UTC = timezone.utc
AHEAD = 1.0


def _config(where: Store, **options: Any) -> SchedulerConfig:
    return where.config(claim_ahead=AHEAD, lease_seconds=1, **options)


async def _leader(where: Store, managers: Any) -> SchedulerManager:
    manager = managers(_config(where))
    await manager.start()
    await wait_until(lambda: manager.is_leader, timeout=30, what="the worker to lead")
    return manager


async def _in_flight(manager: SchedulerManager) -> dict[tuple[str, str], Any]:
    found = await asyncio.to_thread(manager.persistence.state.in_flight)
    return {(fire.job_id, fire.fire): fire for fire in found}


async def _claimed_ahead(manager: SchedulerManager, job_id: str, due: datetime) -> None:
    """Wait until ``manager`` has claimed the fire at ``due`` in the store (before it)."""
    key = (job_id, fire_token(due))
    deadline = time.monotonic() + 30
    while key not in await _in_flight(manager):
        assert time.monotonic() < deadline, f"{job_id}'s fire was never claimed"
        await asyncio.sleep(0.02)
    assert datetime.now(UTC) < due, "claimed, but not ahead of the fire (machine too slow?)"


def _due_in(seconds: float) -> datetime:
    return datetime.fromtimestamp(round(time.time() + seconds, 3), UTC)


async def test_fires_are_claimed_ahead_and_each_runs_once(
    store,  # noqa: F811
    managers,
    monkeypatch,
):
    manager = await _leader(store, managers)
    state = manager.persistence.state
    calls: list[tuple[float, list[Any]]] = []
    claim_many = state.claim_many

    def noted(fires: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((time.time(), list(fires)))
        return claim_many(fires, *args, **kwargs)

    monkeypatch.setattr(state, "claim_many", noted)
    due = _due_in(AHEAD + 2)
    for i in range(300):
        manager.add_job(tick, DateTimeTrigger(due), args=(f"b{i}",), id=f"b{i}")
    await wait_until(
        lambda: all(len(FIRES[f"b{i}"]) == 1 for i in range(300)), what="the burst to run"
    )
    token = fire_token(due)
    claimed = {job_id for at, fires in calls for job_id, t in fires if t == token}
    assert claimed == {f"b{i}" for i in range(300)}
    last_claim = max(at for at, fires in calls if any(t == token for _, t in fires))
    assert last_claim < due.timestamp()  # all written before the fire was due
    await asyncio.sleep(0.2)
    assert all(len(FIRES[f"b{i}"]) == 1 for i in range(300))  # no second run


async def test_a_paused_job_gives_its_claim_back_and_runs_once_resumed(
    store,  # noqa: F811
    managers,
):
    manager = await _leader(store, managers)
    due = _due_in(AHEAD + 1.5)
    job = manager.add_job(tick, DateTimeTrigger(due), args=("p",), id="p")
    await _claimed_ahead(manager, "p", due)
    manager.pause_job("p")
    # Past the fire and the look for unused claims: the claim is given back.
    await wait_until(lambda: datetime.now(UTC) > due, what="the fire's time to pass")

    async def given_back() -> bool:
        return ("p", fire_token(due)) not in await _in_flight(manager)

    deadline = time.monotonic() + 30
    while not await given_back():
        assert time.monotonic() < deadline, "the paused job's claim was never given back"
        await asyncio.sleep(0.05)
    assert FIRES["p"] == []
    manager.resume_job("p")  # a one-shot resumed late still runs (no misfire grace)
    await wait_until(lambda: len(FIRES["p"]) == 1, what="the resumed job to run")
    await asyncio.sleep(0.2)
    assert len(FIRES["p"]) == 1 and job.total_run_count == 1


async def test_a_removed_job_s_claim_is_given_back(
    store,  # noqa: F811
    managers,
):
    manager = await _leader(store, managers)
    due = _due_in(AHEAD + 1.5)
    manager.add_job(tick, DateTimeTrigger(due), args=("r",), id="r")
    await _claimed_ahead(manager, "r", due)
    manager.remove_job("r")
    state = manager.persistence.state
    token = fire_token(due)
    # Given back: another worker can claim the fire (the job's removal took its entry in
    # flight already). Until then the claim is refused, and nothing is claimed.
    deadline = time.monotonic() + 30
    while not (await asyncio.to_thread(state.claim_many, [("r", token)], "another-worker"))[0]:
        assert time.monotonic() < deadline, "the removed job's claim was never given back"
        await asyncio.sleep(0.05)
    assert datetime.now(UTC) > due  # given back once the fire's time had passed
    assert FIRES["r"] == []


async def test_a_leader_that_stops_gives_its_claims_back_to_the_next(
    store,  # noqa: F811
    managers,
):
    first = await _leader(store, managers)
    second = managers(_config(store))
    await second.start()
    due = _due_in(AHEAD + 2)
    first.add_job(tick, DateTimeTrigger(due), args=("h",), id="h")
    await _claimed_ahead(first, "h", due)
    await first.shutdown()
    await wait_until(lambda: second.is_leader, timeout=30, what="the second worker to lead")
    await wait_until(lambda: len(FIRES["h"]) == 1, what="the next leader to run the fire")
    await asyncio.sleep(0.3)
    assert len(FIRES["h"]) == 1


async def test_a_leader_that_lost_the_lease_runs_what_it_claimed(
    store,  # noqa: F811
    managers,
    caplog,
):
    first = await _leader(store, managers)
    due = _due_in(AHEAD + 2)
    first.add_job(tick, DateTimeTrigger(due), args=("l",), id="l")
    await _claimed_ahead(first, "l", due)
    lease = first.persistence.leadership.lease
    if lease is not None:  # it does not take the lease back: another worker may lead
        lease.try_acquire = lambda: False
        lease.renew = lambda: False
    caplog.set_level(logging.INFO, logger="nexios_contrib_scheduler")
    first.persistence.fenced(FencedError(99))
    assert not first.is_leader
    await wait_until(lambda: len(FIRES["l"]) == 1, what="the fire claimed ahead to run")
    await asyncio.sleep(0.3)
    assert len(FIRES["l"]) == 1
    assert "claimed ahead while this worker led; run here" in caplog.text


def test_claim_ahead_must_be_a_short_number_of_seconds() -> None:
    with pytest.raises(TypeError, match="claim_ahead"):
        SchedulerConfig(claim_ahead="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="claim_ahead"):
        SchedulerConfig(claim_ahead=-1)
    with pytest.raises(ValueError, match="claim_ahead"):
        SchedulerConfig(claim_ahead=5)
    assert SchedulerConfig().claim_ahead == 0.1


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
def test_a_worker_gives_back_only_its_own_claims_of_runs_not_started(kind, tmp_path) -> None:
    from mw_services import opened_state, postgres_url, redis_url

    url = {
        "sqlite": f"sqlite:///{tmp_path / 'jobs.db'}",
        "postgresql": postgres_url(),
        "redis": redis_url(),
    }[kind]
    with opened_state(url) as (state, _):
        fires = [("mine", "1"), ("started", "1"), ("theirs", "1"), ("taken", "1")]
        assert state.claim_many(fires[:2], "w1", None) == [True, True]
        assert state.claim_many(fires[2:], "w2", None) == [True, True]
        state.start_fire("started", "1")
        state.end_fires([("taken", "1")])  # its entry in flight gone (its job removed)
        state.release_fires([*fires[:3], ("never", "1")], "w1")
        state.release_fires([("taken", "1")], "w2")
        in_flight = {(f.job_id, f.worker, f.started) for f in state.in_flight()}
        assert in_flight == {("started", "w1", True), ("theirs", "w2", False)}
        # Given back: "mine" and "taken" can be claimed again; the others cannot.
        again = state.claim_many([*fires, ("never", "1")], "w3", None)
        assert again == [True, False, False, True, True]
