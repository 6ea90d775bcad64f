"""A follower's in-memory view is kept current off the event loop.

The leader announces its own changes; a follower reloads what a notification names, and
everything at its periodic resync, in a thread, so that no store call happens on its event
loop, and a store that stops answering never blocks it.

The leader runs on an event loop of its own, in another thread: store calls are counted on
the follower's loop thread only (with the helpers of test_in_memory_reads.py), on SQLite,
PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from helpers import FailingFirst, unannounced, wait_until
from test_in_memory_reads import Store, add_jobs, store, watched_store  # noqa: F401

from nexios_contrib_scheduler import JobStatus, SchedulerManager
from nexios_contrib_scheduler.stores import leadership

T = TypeVar("T")
HANG_SECONDS = 8.0  # how long a hung store call lasts before the test lets it go
LATE_LIMIT = 2.0  # a heartbeat later than this means the event loop was blocked


class OtherLoop:
    """An event loop in a thread of its own, for the leader."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, action: Callable[[], T]) -> T:
        async def run() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=60)

    def wait(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def pair(store: Store) -> Iterator[tuple[SchedulerManager, SchedulerManager, OtherLoop]]:  # noqa: F811
    """A started leader (on its own loop) holding job-0..job-2, and an unstarted follower."""
    other = OtherLoop()
    leader = SchedulerManager(config=store.config(coordinated=True))
    add_jobs(leader, 3)
    other.wait(leader.start())
    assert leader.is_leader
    follower = SchedulerManager(config=store.config(coordinated=True))
    try:
        yield leader, follower, other
    finally:
        other.wait(leader.shutdown())
        other.close()


def silently(leader: SchedulerManager, other: OtherLoop, action: Callable[[], object]) -> None:
    """Change a job on the leader without telling anyone (as if the notification was lost)."""
    persistence = leader.persistence
    assert persistence is not None
    with unannounced(persistence):
        other.call(action)
        assert other.wait(persistence.flush())


async def listening(leader: SchedulerManager, follower: SchedulerManager, other: OtherLoop) -> None:
    """Wait until the follower hears the leader (Redis drops what is sent before it listens)."""
    sender, receiver = leader.persistence, follower.persistence
    assert sender is not None and receiver is not None
    before = receiver.reloads
    message = {"op": "changed", "job": "job-0", "from": sender.worker_id}

    def heard() -> bool:
        other.call(lambda: sender.state.publish(message))
        return receiver.reloads > before

    await wait_until(heard, 30, "the follower to hear the leader's notifications")


def status_on(manager: SchedulerManager, job_id: str) -> JobStatus | None:
    record = manager.registry.get(job_id)  # the view itself: no read that asks for a reload
    return None if record is None else record.status


async def test_a_follower_sees_the_leaders_own_pause_and_run_within_a_notification(
    pair, monkeypatch
):
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 3600.0)  # only notifications tell
    leader, follower, other = pair
    await follower.start()
    try:
        assert not follower.is_leader
        await listening(leader, follower, other)
        other.call(lambda: leader.pause_job("job-1", reason="maintenance"))
        await wait_until(
            lambda: status_on(follower, "job-1") is JobStatus.PAUSED,
            30,
            "the leader's pause on the follower",
        )
        assert other.call(lambda: leader.run_job_now("job-2"))
        await wait_until(
            lambda: (r := follower.registry.get("job-2")) is not None and r.success_count == 1,
            30,
            "the leader's run on the follower",
        )
    finally:
        await follower.shutdown()


async def test_no_store_call_on_the_loop_during_a_followers_resync(pair, monkeypatch):
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 0.3)
    leader, follower, other = pair
    await follower.start()
    try:
        silently(leader, other, lambda: leader.pause_job("job-1"))
        with (
            pytest.MonkeyPatch.context() as patch,
            watched_store(patch, threading.get_ident()) as traffic,
        ):
            await wait_until(
                lambda: status_on(follower, "job-1") is JobStatus.PAUSED,
                30,
                "the follower's resync to show the pause",
            )
        assert traffic.calls == 0
    finally:
        await follower.shutdown()


async def test_no_store_call_on_the_loop_when_a_notification_arrives(pair, monkeypatch):
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 3600.0)
    leader, follower, other = pair
    await follower.start()
    try:
        await listening(leader, follower, other)
        silently(leader, other, lambda: leader.pause_job("job-1"))
        persistence = leader.persistence
        assert persistence is not None
        with (
            pytest.MonkeyPatch.context() as patch,
            watched_store(patch, threading.get_ident()) as traffic,
        ):
            message = {"op": "changed", "job": "job-1", "from": persistence.worker_id}
            other.call(lambda: persistence.state.publish(message))
            await wait_until(
                lambda: status_on(follower, "job-1") is JobStatus.PAUSED,
                30,
                "the notification to reach the follower",
            )
        assert traffic.calls == 0
    finally:
        await follower.shutdown()


async def test_a_hung_store_does_not_block_a_followers_loop(pair, monkeypatch):
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 0.3)
    leader, follower, other = pair
    await follower.start()
    persistence = follower.persistence
    assert persistence is not None
    let_go = threading.Event()
    try:
        with pytest.MonkeyPatch.context() as patch, watched_store(patch, None) as traffic:

            def hang(kind: str) -> None:
                traffic.calls += 1
                let_go.wait(HANG_SECONDS)

            traffic.seen = hang  # type: ignore[method-assign]
            message = {"op": "changed", "job": "job-1", "from": "another-worker"}
            # As the listening thread would hand it over, and a read and a resync.
            threading.Thread(target=persistence.bus.deliver, args=(message,)).start()
            follower.get_jobs()
            persistence.resync()
            latest, beats = 0.0, 0
            while beats < 60:  # about 3 s of heartbeats on the loop
                asked = time.monotonic()
                await asyncio.sleep(0.05)
                latest = max(latest, time.monotonic() - asked - 0.05)
                beats += 1
            let_go.set()
        assert traffic.calls > 0, "the store was never called: nothing was tested"
        assert latest < LATE_LIMIT, f"the event loop was blocked for {latest:.1f}s"
    finally:
        let_go.set()
        await follower.shutdown()


async def test_run_job_now_on_a_follower_makes_no_store_call_on_the_loop(pair, monkeypatch):
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 3600.0)
    leader, follower, other = pair
    await follower.start()
    try:
        await listening(leader, follower, other)
        with (
            pytest.MonkeyPatch.context() as patch,
            watched_store(patch, threading.get_ident()) as traffic,
        ):
            assert follower.run_job_now("job-2")  # asks the leader, through the writer
            await wait_until(
                lambda: (r := follower.registry.get("job-2")) is not None and r.success_count,
                30,
                "the leader to run job-2 as the follower asked",
            )
        assert traffic.calls == 0
        assert other.call(lambda: leader.get_job("job-2").success_count) == 1  # type: ignore[union-attr]
    finally:
        await follower.shutdown()


async def test_a_run_request_the_store_did_not_take_is_sent_again_once(pair, monkeypatch):
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 3600.0)
    leader, follower, other = pair
    await follower.start()
    persistence = follower.persistence
    assert persistence is not None
    try:
        await listening(leader, follower, other)
        real, sent = persistence.state.publish, []

        def publish(message: Any) -> None:
            real(message)
            if message.get("op") == "run":
                sent.append(message)

        flaky = FailingFirst(publish, 2, when=lambda message: message.get("op") == "run")
        patch = pytest.MonkeyPatch()
        patch.setattr(persistence.state, "publish", flaky)
        try:
            assert follower.run_job_now("job-2")
            await wait_until(lambda: flaky.left == 0, 30, "the request to be tried again")
            await wait_until(
                lambda: other.call(lambda: leader.get_job("job-2").success_count) == 1,  # type: ignore[union-attr]
                30,
                "the leader to run job-2",
            )
            assert await persistence.flush()
            assert len(sent) == 1
            assert other.call(lambda: leader.get_job("job-2").total_run_count) == 1  # type: ignore[union-attr]
        finally:
            patch.undo()
    finally:
        await follower.shutdown()


async def test_a_reload_the_store_did_not_answer_is_tried_again(pair, monkeypatch):
    # The notification was heard (and its count with it): the fallback check would not
    # reload the job, so the reload that failed is made again.
    monkeypatch.setattr(leadership, "RESYNC_SECONDS", 3600.0)
    leader, follower, other = pair
    await follower.start()
    persistence = follower.persistence
    assert persistence is not None
    try:
        await listening(leader, follower, other)
        flaky = FailingFirst(persistence.state.load, 1, when=lambda job_id: job_id == "job-1")
        monkeypatch.setattr(persistence.state, "load", flaky)
        other.call(lambda: leader.pause_job("job-1"))
        await wait_until(
            lambda: status_on(follower, "job-1") is JobStatus.PAUSED,
            30,
            "the failed reload of job-1 to be made again",
        )
        assert flaky.left == 0
    finally:
        await follower.shutdown()
