"""Fencing and fires in flight: a leader that lost its lease writes no run state, and every
fire a worker claimed is run, or recorded as not run by the next leader.

Against the real SQLite (a file), PostgreSQL and Redis, each test in a namespace of its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from helpers import wait_until
from mw_services import (
    drop_namespace,
    end_postgres_sessions,
    opened_state,
    postgres_url,
    redis_url,
    unique_namespace,
)

from nexios_contrib_scheduler import (
    DateTimeTrigger,
    FireKey,
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    current_fire,
)
from nexios_contrib_scheduler.stores.fires import fire_token
from nexios_contrib_scheduler.stores.state import FencedError

UTC = timezone.utc
LOGGER = "nexios_contrib_scheduler"

FIRES: dict[str, list[FireKey | None]] = defaultdict(list)
GATES: dict[str, asyncio.Event] = {}


async def tick(label: str) -> None:
    FIRES[label].append(current_fire())


async def gated(label: str) -> None:
    await GATES[label].wait()
    FIRES[label].append(current_fire())


@pytest.fixture(autouse=True)
def _clean():
    FIRES.clear()
    GATES.clear()
    yield
    FIRES.clear()
    GATES.clear()


def _url(kind: str, tmp_path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.db"
    return postgres_url() if kind == "postgresql" else redis_url()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def state(request, tmp_path):
    """A state backend, open, in a namespace of its own."""
    with opened_state(_url(request.param, tmp_path)) as (backend, _):
        yield backend


FIELDS = {"success_count": b"\x80\x05K\x01."}


class TestTheStoreRefusesAnOlderToken:
    def test_writes_with_a_smaller_token_are_refused_and_write_nothing(self, state):
        state.create("j", {"status": b"a"})
        state.raise_fence(5)
        assert state.update("j", {"status": b"b"}, fence=5)  # the fence's own token
        with pytest.raises(FencedError, match="fencing token 4"):
            state.update("j", {"status": b"stale"}, fence=4)
        with pytest.raises(FencedError):
            state.create("j", {"status": b"stale"}, fence=4)
        with pytest.raises(FencedError):
            state.claim("j", "1", "old", fence=4, track=True)
        assert state.load("j")["status"] == b"b"
        assert state.claim("j", "1", "new", fence=6, track=True)  # a newer one raises it
        with pytest.raises(FencedError):
            state.end_fires([("j", "1")], fence=5)
        assert [f.worker for f in state.in_flight()] == ["new"]

    def test_writes_without_a_token_are_not_checked(self, state):
        state.raise_fence(7)
        state.create("j", {"status": b"a"})  # a job operation, not run state
        assert state.update("j", {"status": b"b"})
        assert state.load("j")["status"] == b"b"

    def test_a_fire_is_in_flight_from_its_claim_to_its_end(self, state):
        assert state.claim("j", "10", "w1", track=True)
        assert not state.claim("j", "10", "w2", track=True)  # claimed already
        assert state.claim("j", "11", "w1")  # not tracked (a run asked by hand)
        assert [(f.fire, f.worker, f.started) for f in state.in_flight()] == [("10", "w1", False)]
        state.start_fire("j", "10")
        assert [f.started for f in state.in_flight()] == [True]
        state.end_fires([("j", "10")])
        assert state.in_flight() == []

    def test_many_fires_are_claimed_in_one_write_each_once(self, state):
        assert state.claim("a", "1", "other", track=True)
        fires = [("a", "1"), ("a", "2"), ("b", "1")]
        assert state.claim_many(fires, "me", fence=3) == [False, True, True]
        assert state.claim_many(fires, "me", fence=3) == [False, False, False]
        flying = {(f.job_id, f.fire, f.worker) for f in state.in_flight()}
        assert flying == {("a", "1", "other"), ("a", "2", "me"), ("b", "1", "me")}
        state.raise_fence(4)
        with pytest.raises(FencedError):
            state.claim_many([("c", "1")], "me", fence=3)
        assert state.claim("c", "1", "x")  # the refused write claimed nothing

    def test_a_retried_claim_is_the_workers_own_earlier_write_that_landed(self, state):
        """A claim written whose answer was lost (the connection went after the commit) is
        tried again: the store takes this worker's own earlier claim as the claim, and no
        other worker's."""
        assert state.claim_many([("a", "1"), ("b", "1")], "me", fence=3) == [True, True]
        fires = [("a", "1"), ("b", "1"), ("c", "1")]
        again = [("a", "1"), ("b", "1")]
        assert state.claim_many(fires, "me", fence=3, retried=again) == [True, True, True]
        assert state.claim_many([("a", "1")], "me", fence=3) == [False]  # not a retry
        assert state.claim_many([("a", "1")], "other", fence=3, retried=[("a", "1")]) == [False]
        flying = sorted((f.job_id, f.fire, f.worker) for f in state.in_flight())
        assert flying == [("a", "1", "me"), ("b", "1", "me"), ("c", "1", "me")]
        state.raise_fence(4)
        with pytest.raises(FencedError):
            state.claim_many([("a", "1")], "me", fence=3, retried=[("a", "1")])


@pytest.fixture
def postgres_state():
    with opened_state(postgres_url()) as (backend, _):
        yield backend


def test_postgres_claims_go_on_after_the_server_ended_their_connection(postgres_state):
    """PostgreSQL claims are one statement on a connection the claims' thread keeps: when
    the server ends it, that batch fails (the writer retries it) and the next one is made
    on a new connection."""
    state = postgres_state
    assert state.claim_many([("a", "1")], "me", fence=1) == [True]
    ended = end_postgres_sessions("WITH held AS")
    assert ended >= 1, "the claims' connection was not found on the server"
    with pytest.raises(Exception, match="(?i)server closed|terminat|connection"):
        state.claim_many([("a", "2")], "me", fence=1)
    assert state.claim_many([("a", "2"), ("a", "1")], "me", fence=1) == [True, False]
    flying = sorted((f.job_id, f.fire) for f in state.in_flight())
    assert flying == [("a", "1"), ("a", "2")]


def test_postgres_a_raise_waits_for_a_stopped_sessions_hold_of_the_fence_at_most_a_while(
    postgres_state,
):
    """A leader stopped inside a transaction holds the fence's row until the server ends
    its session; a new leader's raise waits for it at most ``lock_wait`` (its lease must be
    renewed meanwhile), fails, and succeeds once the row is free."""
    import time

    import psycopg2

    state = postgres_state
    state.raise_fence(1)
    holder = psycopg2.connect(postgres_url())
    try:
        with holder.cursor() as cursor:  # a transaction left open, as by a stopped worker
            cursor.execute(f"UPDATE {state.fence_t.name} SET token = token WHERE id = 1")
        began = time.monotonic()
        with pytest.raises(Exception, match="(?i)lock"):
            state.raise_fence(2, lock_wait=0.3)
        assert time.monotonic() - began < 5.0  # not held until the session is ended
        holder.rollback()
        state.raise_fence(2, lock_wait=0.3)
    finally:
        holder.close()
    with pytest.raises(FencedError):
        state.claim_many([("a", "1")], "old", fence=1)


# ---------------------------------------------------------------- with schedulers


@pytest.fixture(params=["postgresql", "redis"])
def shared(request):
    namespace = unique_namespace()
    url = postgres_url() if request.param == "postgresql" else redis_url()
    yield url, namespace
    drop_namespace(url, namespace)


def _config(url: str, namespace: str, **options) -> SchedulerConfig:
    options.setdefault("shutdown_timeout", 30)
    return SchedulerConfig(jobstore=url, coordination=url, namespace=namespace, **options)


async def test_a_claim_that_landed_unanswered_is_run_once(shared, managers, caplog):
    """The store took a batch of claims but its answer was lost: the writer tries again,
    the store knows the claims as this worker's, and each fire runs once (not dropped as
    'already run by another worker')."""
    url, namespace = shared
    manager = managers(_config(url, namespace))
    await manager.start()
    await wait_until(lambda: manager.is_leader, timeout=30, what="the lease")
    persistence = manager.persistence
    assert persistence is not None
    real = persistence.state.claim_many
    lost: list[int] = []

    def answer_lost(*args, **kwargs):
        answers = real(*args, **kwargs)
        if not lost:
            lost.append(len(answers))
            raise ConnectionError("the connection went before the answer came")
        return answers

    persistence.state.claim_many = answer_lost  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for label in ("u1", "u2"):
            manager.add_job(tick, DateTimeTrigger(datetime.now(UTC)), args=(label,), id=label)
        await wait_until(
            lambda: len(FIRES["u1"]) == 1 and len(FIRES["u2"]) == 1,
            timeout=30,
            what="both one-shots to run",
        )
        await asyncio.sleep(0.3)  # a second run would show by now
    assert lost and len(FIRES["u1"]) == len(FIRES["u2"]) == 1
    assert "already run by another worker" not in caplog.text
    assert "could not write to the job store" in caplog.text
    assert await manager.flush()
    assert persistence.state.in_flight() == []


async def _recorded_once(leader, job_id: str):
    """Wait until ``leader`` records the run another worker reported; it counts it once."""
    await wait_until(
        lambda: leader.get_job(job_id).success_count == 1,
        timeout=60,
        what="the new leader to record the run the old one reported",
    )
    job = leader.get_job(job_id)
    assert (job.total_run_count, job.success_count, job.failure_count) == (1, 1, 0)
    return job


class TestALeaderThatLostItsLease:
    async def test_its_run_ends_on_record_through_the_new_leader_never_as_cancelled(
        self, shared, managers, caplog
    ):
        url, namespace = shared
        config = _config(url, namespace, lease_seconds=1)
        old = managers(config)
        await old.start()
        GATES["g"] = asyncio.Event()
        old.add_job(gated, IntervalTrigger(hours=1), args=("g",), id="g")
        await wait_until(lambda: old.get_job("g").current_instances == 1, what="the run")
        new = managers(config)
        await new.start()
        token = old.persistence.fence
        assert token is not None

        # The old leader stops renewing (as if paused): the lease runs out, the new worker
        # takes it with a greater token and raises the store's fence.
        old.persistence.leadership.halt()
        await wait_until(lambda: new.is_leader, timeout=60, what="the new leader")
        assert new.persistence.fence > token
        with caplog.at_level(logging.INFO, logger=LOGGER):
            GATES["g"].set()  # the old leader's run ends: it may write nothing
            job = await _recorded_once(new, "g")
        assert [r.outcome for r in job.history] == ["success"]
        assert "write refused" in caplog.text and "recorded by the leader" in caplog.text
        new.persistence.resync()  # nor does the new leader's settling take it as cut short
        await wait_until(lambda: new.persistence.reloads >= 2, what="a reload")
        assert new.get_job("g").failure_count == 0
        assert await new.persistence.flush()
        assert new.persistence.state.in_flight() == []

    async def test_a_run_whose_count_was_refused_is_counted_by_the_new_leader(
        self, shared, managers
    ):
        """The fence is raised after the old leader's run started and before it wrote the
        run state that counts the run: the start and its count are refused together, so
        the new leader counts the run once (it did not when the start was written alone:
        the old leader reported the run as counted, and the count showed 0)."""
        url, namespace = shared
        config = _config(url, namespace, lease_seconds=1)
        old = managers(config)
        await old.start()
        state = old.persistence.state
        real = state.write_run_state
        fence_raised = threading.Event()

        def held_back(updates, started, ended, fence):
            if "g" in updates and "total_run_count" in updates["g"]:
                fence_raised.wait(60)  # the writer stalls here until the new leader leads
            return real(updates, started, ended, fence)

        state.write_run_state = held_back  # type: ignore[method-assign]
        GATES["g"] = asyncio.Event()
        old.add_job(gated, IntervalTrigger(hours=1), args=("g",), id="g")
        await wait_until(lambda: old.get_job("g").current_instances == 1, what="the run")
        old.persistence.leadership.halt()
        new = managers(config)
        await new.start()
        await wait_until(lambda: new.is_leader, timeout=60, what="the new leader")
        fence_raised.set()
        GATES["g"].set()
        await _recorded_once(new, "g")
        assert await new.persistence.flush()
        assert new.persistence.state.in_flight() == []


class TestFiresOfAWorkerThatDied:
    async def test_a_claimed_fire_never_started_is_recorded_missed_with_a_log_line(
        self, shared, managers, caplog
    ):
        url, namespace = shared
        first = managers(_config(url, namespace))
        first.add_job(tick, IntervalTrigger(hours=1, start_now=False), args=("d",), id="d")
        await first.start()
        await first.shutdown()
        # What a leader on another host leaves when it dies between claiming a fire and
        # running it: the claim, in flight, not started.
        when = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
        state = first.persistence.state
        state.open()
        assert state.claim("d", fire_token(when), "otherhost:4242:dead00", track=True)
        # ... and a run it started and never ended, for another fire.
        started_at = when - timedelta(hours=1)
        assert state.claim("d", fire_token(started_at), "otherhost:4242:dead00", track=True)
        state.start_fire("d", fire_token(started_at))
        state.update("d", {"total_run_count": b"\x80\x05K\x01."})
        state.close()

        with caplog.at_level(logging.WARNING, logger=LOGGER):
            second = managers(_config(url, namespace))
            await second.start()
            await wait_until(lambda: second.get_job("d").missed_count == 1, what="the miss")
        job = second.get_job("d")
        missed = [r for r in job.history if r.outcome == "missed"]
        assert [r.scheduled_time for r in missed] == [when]
        assert "claimed by worker otherhost:4242:dead00" in missed[0].error
        assert "d" in caplog.text and "not run" in caplog.text
        assert job.failure_count == 1 and job.history[0].outcome in ("missed", "cancelled")
        assert any(r.outcome == "cancelled" for r in job.history)
        assert await second.persistence.flush()  # run state is written off the loop
        assert second.persistence.state.in_flight() == []
        assert FIRES["d"] == []  # neither fire ran again

    async def test_a_run_of_a_worker_still_alive_is_not_taken_as_cut_short(self, shared, managers):
        url, namespace = shared
        first = managers(_config(url, namespace))
        first.add_job(tick, IntervalTrigger(hours=1, start_now=False), args=("a",), id="a")
        await first.start()
        await first.shutdown()
        # A run started by a worker on this host whose process is alive (stopped, say):
        # its heartbeat is stale, but its run may still end and report.
        import os

        state = first.persistence.state
        state.open()
        when = datetime.now(UTC) - timedelta(minutes=5)
        mine = f"{__import__('socket').gethostname()}:{os.getppid()}:beef00"
        assert state.claim("a", fire_token(when), mine, track=True)
        state.start_fire("a", fire_token(when))
        state.update("a", {"total_run_count": b"\x80\x05K\x01."})
        state.close()

        second = managers(_config(url, namespace))
        await second.start()
        job = second.get_job("a")
        assert (job.total_run_count, job.failure_count) == (1, 0)
        assert job.status is JobStatus.ACTIVE and job.history == []
        assert await second.persistence.flush()
        assert [f.worker for f in second.persistence.state.in_flight()] == [mine]


# ---------------------------------------------------------------- listening, and the counts


def test_a_message_sent_once_the_listener_is_ready_is_delivered(state):
    heard: list[dict] = []
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=state.listen, args=(heard.append, stop, ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "the listener never said it was listening"
        state.publish({"op": "changed", "job": "j", "from": "w", "count": 1})
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.01)
        assert heard == [{"op": "changed", "job": "j", "from": "w", "count": 1}]
    finally:
        stop.set()
        thread.join(5)


def test_each_write_stores_the_writers_count_and_others_read_it(state):
    state.writer_id = "w1"
    state.create("j", FIELDS)
    state.write_ops({}, {"j": FIELDS}, {})
    state.write_run_state({"j": FIELDS}, [], [])
    assert state.counted == 3
    state.writer_id = "w2"  # another worker reads the first one's count, not its own
    assert state.counted == 0
    state.update("j", FIELDS)
    assert state.change_counts() == {"w1": 3}
    state.writer_id = "w1"  # a count set lower (a writer counting again) never lowers it
    state.create("k", FIELDS)
    state.writer_id = "w3"
    assert state.change_counts() == {"w1": 3, "w2": 1}


def test_a_write_refused_stores_no_count_and_the_next_takes_it(state):
    state.writer_id = "w1"
    state.create("j", FIELDS)
    state.raise_fence(5)
    with pytest.raises(FencedError):
        state.write_run_state({"j": FIELDS}, [], [], fence=4)  # a stale leader's write
    assert state.counted == 1
    state.write_run_state({"j": FIELDS}, [], [], fence=5)
    assert state.counted == 2  # no count was skipped: the others see no gap
    state.writer_id = "w2"
    assert state.change_counts() == {"w1": 2}
