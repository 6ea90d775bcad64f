"""Fires sent to arq workers: a real arq worker process on the test Redis runs them.

Each test has a queue of its own (and job ids of its own), and the worker process is
started for it and stopped after; what the worker ran is read from its witness list.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from arq.connections import RedisSettings
from fault_services import private_redis
from helpers import stop_processes, wait_until
from mw_services import redis_url
from remote_leader import killed_then_followed

from nexios_contrib_scheduler import (
    DateTimeTrigger,
    IntervalTrigger,
    SchedulerConfig,
    SchedulerManager,
)
from nexios_contrib_scheduler.errors import ConfigError
from nexios_contrib_scheduler.executors import ArqExecutor, RemoteFire, RemoteTask
from nexios_contrib_scheduler.jobs import utcnow

TESTS = Path(__file__).parent


@dataclass
class ArqWorld:
    url: str
    queue: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> RedisSettings:
        return RedisSettings.from_dsn(self.url)

    def executor(self, **options: Any) -> ArqExecutor:
        return ArqExecutor(self.settings, queue_name=self.queue, poll_interval=0.05, **options)

    def start_worker(self, job_timeout: float | None = None) -> None:
        env = {**os.environ, "ARQ_TEST_REDIS": self.url, "ARQ_TEST_QUEUE": self.queue}
        if job_timeout is not None:
            env["ARQ_TEST_JOB_TIMEOUT"] = str(job_timeout)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "arq", "arq_tasks.WorkerSettings"],
            cwd=TESTS,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop_worker(self) -> None:
        if self.process is not None:
            stop_processes(self.process)
            self.process = None

    def witness(self) -> list[tuple[str, str]]:
        """What the worker ran: (message id, label), in order."""
        client = redis.Redis.from_url(self.url)
        try:
            rows = client.lrange(f"{self.queue}:witness", 0, -1)
        finally:
            client.close()
        return [tuple(row.decode().split("|", 1)) for row in rows]  # type: ignore[misc]


@pytest.fixture
def arq_world() -> Iterator[ArqWorld]:
    url = redis_url()
    tag = uuid.uuid4().hex[:12]
    world = ArqWorld(url, f"arq:t{tag}")
    world.start_worker()
    yield world
    world.stop_worker()
    client = redis.Redis.from_url(url)
    try:
        keys = [*client.scan_iter(match=f"arq:*t{tag}*"), *client.scan_iter(match=f"*t{tag}*")]
        if keys:
            client.delete(*set(keys))
    finally:
        client.close()


async def started(managers: Any, world: ArqWorld) -> SchedulerManager:
    """A started scheduler (memory store) sending to ``world``'s arq."""
    manager: SchedulerManager = managers(
        SchedulerConfig(timezone="UTC", executors={"arq": world.executor()})
    )
    await manager.start()
    return manager


def job_id(world: ArqWorld, name: str) -> str:
    return f"{world.queue.removeprefix('arq:')}-{name}"


async def test_each_fire_runs_once_on_the_arq_worker(arq_world: ArqWorld, managers: Any) -> None:
    manager = await started(managers, arq_world)
    job = manager.add_job(
        "record",
        IntervalTrigger(seconds=0.2),
        args=("tick",),
        id=job_id(arq_world, "tick"),
        executor="arq",
        max_instances=5,
    )
    await wait_until(lambda: job.success_count >= 3, 30, "three fires run on the arq worker")
    manager.pause_job(job.id)
    await wait_until(lambda: job.current_instances == 0, 30, "the fires in flight to end")
    runs = [run for run in job.history if run.outcome == "success"]
    ran = arq_world.witness()
    tokens = {f"{job.id}@{int(run.scheduled_time.timestamp() * 1e6)}" for run in runs}
    assert tokens <= {message for message, _ in ran}
    assert len(ran) == len({message for message, _ in ran}), f"a fire ran twice: {ran}"
    assert all(label == "tick" for _, label in ran)
    for run in runs:
        assert run.worker == f"arq ({arq_world.queue})"
        assert run.start is not None and run.end is not None and run.start <= run.end
        assert run.scheduled_time is not None and run.start >= run.scheduled_time
    shown = job.to_dict()
    assert shown["executor"] == "arq"
    assert shown["func"] == "task:record"
    assert shown["history"][-1]["worker"] == f"arq ({arq_world.queue})"


async def test_a_failing_task_is_recorded_with_the_workers_error(
    arq_world: ArqWorld, managers: Any
) -> None:
    manager = await started(managers, arq_world)
    job = manager.add_job(
        "boom",
        IntervalTrigger(hours=1),  # its first fire is at once
        id=job_id(arq_world, "boom"),
        executor="arq",
        pause_on_failure=True,
    )
    await wait_until(lambda: job.failure_count == 1, 30, "the failed run to be recorded")
    await wait_until(lambda: job.paused_reason is not None, 10, "pause_on_failure")
    assert job.last_error == "ValueError: boom on the arq worker"
    assert job.history[-1].outcome == "error"
    assert job.history[-1].worker == f"arq ({arq_world.queue})"
    assert job.consecutive_failures == 1
    assert "boom on the arq worker" in (job.paused_reason or "")


async def test_a_run_over_the_workers_time_limit_is_a_timeout(
    arq_world: ArqWorld, managers: Any
) -> None:
    manager = await started(managers, arq_world)
    job = manager.add_job(
        "slow",
        DateTimeTrigger(utcnow() + timedelta(seconds=0.1)),
        args=(5,),
        id=job_id(arq_world, "slow"),
        executor="arq",
    )
    await wait_until(lambda: job.failure_count == 1, 30, "the run cut off by arq")
    assert job.history[-1].outcome == "timeout"
    assert job.last_error == "timed out on the arq worker"


async def test_a_worker_killed_mid_run_is_recorded_as_arq_reports_it(
    arq_world: ArqWorld, managers: Any
) -> None:
    """arq gives a job whose worker died back to a worker once the job's in-progress mark
    expires (its timeout plus 10 s); with no tries left, it records the job as failed.
    The fire's history says so, and the fire ran once."""
    arq_world.stop_worker()
    arq_world.start_worker(job_timeout=3)
    manager = await started(managers, arq_world)
    job = manager.add_job(
        "hang",
        DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
        args=(60,),
        id=job_id(arq_world, "hang"),
        executor="arq",
    )
    await wait_until(lambda: arq_world.witness() != [], 30, "the run to start on the worker")
    assert arq_world.process is not None
    arq_world.process.kill()  # SIGKILL: the run dies with its worker
    arq_world.process.wait()
    arq_world.process = None
    assert job.current_instances == 1  # in flight until arq reports on it
    arq_world.start_worker(job_timeout=3)
    await wait_until(lambda: job.failure_count == 1, 60, "arq's report of the lost run")
    assert job.history[-1].outcome == "error"
    assert "max 1 retries exceeded" in (job.last_error or ""), job.last_error
    assert [label for _, label in arq_world.witness()] == ["hang"]  # never run again
    assert job.current_instances == 0


async def test_a_fire_sent_again_is_refused_and_runs_once(arq_world: ArqWorld) -> None:
    engine = arq_world.executor()
    try:
        fire = RemoteFire(
            f"{job_id(arq_world, 'again')}@1", RemoteTask("record"), ("again",), {}, None, None
        )
        assert await engine.send(fire) is True
        assert await engine.send(fire) is False  # a new leader sending it after a crash

        found = None
        for _ in range(600):  # up to 30 s
            found = (await engine.outcomes([fire.id])).get(fire.id)
            if found is not None:
                break
            await asyncio.sleep(0.05)
        assert found is not None and found.outcome == "success"
        assert await engine.send(fire) is False  # its result is still kept: refused too
        assert [m for m, _ in arq_world.witness()] == [fire.id]
    finally:
        await engine.close()


async def test_run_job_now_sends_one_and_a_paused_job_sends_none(
    arq_world: ArqWorld, managers: Any
) -> None:
    manager = await started(managers, arq_world)
    job = manager.add_job(
        "record",
        IntervalTrigger(hours=1),
        args=("now",),
        id=job_id(arq_world, "now"),
        executor="arq",
    )
    manager.pause_job(job.id)
    assert manager.run_job_now(job.id)
    await wait_until(lambda: job.success_count == 1, 30, "the run asked for by hand")
    ran = arq_world.witness()
    assert len(ran) == 1 and ran[0][0].startswith(f"{job.id}@now-")
    assert job.history[-1].scheduled_time is None


async def test_a_fire_not_started_before_its_grace_ends_is_missed(
    arq_world: ArqWorld, managers: Any
) -> None:
    arq_world.stop_worker()  # nobody takes the message while its grace runs out
    manager = await started(managers, arq_world)
    job = manager.add_job(
        "record",
        DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
        id=job_id(arq_world, "late"),
        executor="arq",
        misfire_grace_time=0.3,
    )
    await wait_until(lambda: job.current_instances == 1, 10, "the fire to be sent")
    await asyncio.sleep(0.6)  # the grace runs out with no worker
    arq_world.start_worker()
    await wait_until(lambda: job.history and job.history[-1].outcome == "missed", 30, "missed")
    assert arq_world.witness() == []
    assert job.missed_count == 1 and job.failure_count == 0
    assert "expired" in (job.history[-1].error or "")


async def test_shutdown_records_a_fire_still_on_the_engine_as_sent(
    arq_world: ArqWorld, managers: Any
) -> None:
    arq_world.stop_worker()
    manager = await started(managers, arq_world)
    job = manager.add_job(
        "record",
        DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
        id=job_id(arq_world, "inflight"),
        executor="arq",
    )
    await wait_until(lambda: job.current_instances == 1, 10, "the fire to be sent")
    await manager.shutdown()
    assert job.history[-1].outcome == "sent"
    assert job.current_instances == 0


async def test_a_fire_with_no_outcome_within_outcome_wait_is_recorded_sent(
    arq_world: ArqWorld, managers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    arq_world.stop_worker()  # the message waits in the queue: no outcome comes
    manager: SchedulerManager = managers(
        SchedulerConfig(timezone="UTC", executors={"arq": arq_world.executor(outcome_wait=0.3)})
    )
    await manager.start()
    job = manager.add_job(
        "record",
        IntervalTrigger(seconds=0.2),
        id=job_id(arq_world, "unanswered"),
        executor="arq",
        max_instances=1,
    )
    with caplog.at_level(logging.WARNING, logger="nexios_contrib_scheduler"):
        await wait_until(
            lambda: len([r for r in job.history if r.outcome == "sent"]) >= 2,
            20,
            "two fires recorded as sent once outcome_wait was over",
        )
    # Each held the job's one instance until its wait was over, then let the next go.
    assert job.current_instances <= 1
    assert job.failure_count == 0 and job.success_count == 0
    assert "no outcome from arq within 0.3s; recorded as sent" in caplog.text


def test_a_job_naming_an_executor_not_configured_is_refused() -> None:
    manager = SchedulerManager(config=SchedulerConfig(timezone="UTC"))
    with pytest.raises(ConfigError, match=r"no executor 'celery'; configured: 'default'"):
        manager.add_job("report", IntervalTrigger(seconds=1), executor="celery")


def test_an_arq_function_the_workers_do_not_register_is_refused() -> None:
    async def record(ctx: dict[str, Any]) -> None:
        return None

    engine = ArqExecutor(functions=[record])
    manager = SchedulerManager(config=SchedulerConfig(timezone="UTC", executors={"arq": engine}))
    with pytest.raises(LookupError, match=r"do not register a function 'report'"):
        manager.add_job("report", IntervalTrigger(seconds=1), executor="arq")
    job = manager.add_job(record, IntervalTrigger(seconds=1), executor="arq")
    assert job.func == RemoteTask("record")
    assert job.name == "record"


@pytest.mark.parametrize(
    ("executors", "error", "message"),
    [
        ({"default": None}, ConfigError, "'default' is this process"),
        ({"": None}, TypeError, "non-empty string"),
        ({"x": object()}, TypeError, r"executors\['x'\] must be a remote engine's executor"),
        ([("x", 1)], TypeError, "must be a mapping"),
    ],
)
def test_executors_are_checked(executors: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        SchedulerConfig(executors=executors)


def test_modify_job_moves_a_job_to_an_engine_but_not_back() -> None:
    manager = SchedulerManager(
        config=SchedulerConfig(timezone="UTC", executors={"arq": ArqExecutor()})
    )

    async def record(ctx: dict[str, Any]) -> None:
        return None

    job = manager.add_job(record, IntervalTrigger(seconds=1))
    assert job.executor == "default"
    manager.modify_job(job.id, executor="arq")
    assert job.executor == "arq" and job.func == RemoteTask("record")
    with pytest.raises(ConfigError, match="has no function to run in this process"):
        manager.modify_job(job.id, executor="default")
    assert job.executor == "arq"


async def test_a_remote_job_is_kept_by_the_store_even_where_its_engine_is_missing(
    arq_world: ArqWorld, managers: Any, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    first: SchedulerManager = managers(
        SchedulerConfig(timezone="UTC", jobstore=store, executors={"arq": arq_world.executor()})
    )
    await first.start()
    job_key = job_id(arq_world, "kept")
    sent = first.add_job(
        "record", IntervalTrigger(hours=1), args=("kept",), id=job_key, executor="arq"
    )
    await wait_until(lambda: sent.success_count == 1, 30, "the first fire, at once, on arq")
    assert await first.flush()
    await first.shutdown()

    again: SchedulerManager = managers(
        SchedulerConfig(timezone="UTC", jobstore=store, executors={"arq": arq_world.executor()})
    )
    await again.start()
    job = again.get_job(job_key)
    assert job is not None and job.executor == "arq" and job.func == RemoteTask("record")
    assert again.run_job_now(job_key)
    assert job.success_count == 1 and job.history[-1].worker == f"arq ({arq_world.queue})"
    await wait_until(lambda: job.success_count == 2, 30, "the reloaded job's run on arq")
    assert [label for _, label in arq_world.witness()] == ["kept", "kept"]
    again.modify_job(job_key, misfire_grace_time=None)  # any change is written back whole
    again.reschedule_job(job_key, DateTimeTrigger(utcnow() + timedelta(seconds=0.2)))
    assert await again.flush()
    await again.shutdown()

    # A worker whose settings lack the engine (an older deploy) leads: the job stays, and
    # its fire is recorded as failed, saying why.
    older: SchedulerManager = managers(SchedulerConfig(timezone="UTC", jobstore=store))
    await older.start()
    job = older.get_job(job_key)
    assert job is not None
    await wait_until(lambda: job.failure_count == 1, 30, "the fire with no executor here")
    assert "no executor for it" in (job.last_error or "")
    assert older.get_job(job_key) is not None
    assert job.executor == "arq"


@pytest.mark.parametrize("sent", [True, False], ids=["sent", "not-sent"])
async def test_the_next_leader_follows_the_fire_of_a_killed_leader(
    arq_world: ArqWorld, managers: Any, tmp_path: Path, sent: bool
) -> None:
    """A leader claims a fire, sends it (or cannot: its arq is unreachable) and is killed.
    The next leader asks arq whether it holds the fire: it follows a sent fire to its
    outcome (run once, by the arq worker), and records one never sent as missed; it never
    sends it again."""
    arq_world.stop_worker()  # the fire waits in the queue while the leaders change
    store, coordination = f"sqlite:///{tmp_path / 'jobs.db'}", f"file://{tmp_path / 'lock'}"
    job_key = job_id(arq_world, "failover")
    arq_url = arq_world.url if sent else "redis://127.0.0.1:1/0"
    _, job = await killed_then_followed(
        managers,
        ["arq", store, coordination, arq_url, arq_world.queue, job_key],
        arq_world.executor(),
    )
    if sent:
        await wait_until(lambda: job.current_instances == 1, 30, "the fire to be followed")
        arq_world.start_worker()
        await wait_until(lambda: job.success_count == 1, 30, "the outcome of the fire")
        assert [label for _, label in arq_world.witness()] == ["failover"]
        run = job.history[-1]
        assert run.outcome == "success" and run.worker == f"arq ({arq_world.queue})"
        assert job.total_run_count == 1 and job.failure_count == 0
    else:
        await wait_until(lambda: job.missed_count == 1, 30, "the fire recorded as missed")
        assert "not sent: claimed by worker" in (job.history[-1].error or "")
        assert job.total_run_count == 0 and job.failure_count == 0
        arq_world.start_worker()
        await asyncio.sleep(0.5)  # a fire sent again would run now
        assert arq_world.witness() == []
    assert job.current_instances == 0


@pytest.mark.parametrize("grace", [30.0, 0.8], ids=["back-within-grace", "grace-runs-out"])
async def test_a_fire_due_while_arqs_redis_is_down(managers: Any, grace: float) -> None:
    """The fire is tried again while its grace lasts: sent late if Redis is back in time
    (with the grace left as its expiry), else recorded missed; never lost, never twice."""
    with private_redis() as server:
        world = ArqWorld(server.url, f"arq:t{uuid.uuid4().hex[:12]}")
        manager: SchedulerManager = managers(
            SchedulerConfig(timezone="UTC", executors={"arq": world.executor()})
        )
        await manager.start()
        server.stop()
        job = manager.add_job(
            "record",
            DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
            args=("late",),
            id=job_id(world, "late"),
            executor="arq",
            misfire_grace_time=grace,
        )
        await wait_until(lambda: job.current_instances == 1, 10, "the fire to be tried")
        await asyncio.sleep(1.2)  # Redis stays down longer than the short grace
        server.start()
        world.start_worker()
        try:
            if grace > 1:
                await wait_until(lambda: job.success_count == 1, 60, "the fire sent late")
                assert [label for _, label in world.witness()] == ["late"]
            else:
                await wait_until(lambda: job.missed_count == 1, 30, "the fire recorded missed")
                error = job.history[-1].error or ""
                assert "could not be reached before its grace ran out" in error
                await asyncio.sleep(0.5)  # a fire sent after all would run now
                assert world.witness() == []
            assert job.current_instances == 0 and job.failure_count == 0
        finally:
            world.stop_worker()


async def test_outcomes_are_read_again_once_arqs_redis_is_back(
    managers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nexios_contrib_scheduler")
    with private_redis() as server:
        world = ArqWorld(server.url, f"arq:t{uuid.uuid4().hex[:12]}")
        manager: SchedulerManager = managers(
            SchedulerConfig(timezone="UTC", executors={"arq": world.executor()})
        )
        await manager.start()
        job = manager.add_job(
            "record",
            DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
            args=("after",),
            id=job_id(world, "after"),
            executor="arq",
        )
        client = redis.Redis.from_url(server.url)
        try:
            await wait_until(
                lambda: bool(client.keys("arq:job:*")), 10, "the fire's message in Redis"
            )
            client.save()  # the restarted server loads the queued message again
        finally:
            client.close()
        server.stop()
        await asyncio.sleep(0.5)  # outcomes are read (and fail) meanwhile
        server.start()
        world.start_worker()
        try:
            await wait_until(lambda: job.success_count == 1, 60, "the outcome after the outage")
        finally:
            world.stop_worker()
    warnings = [r for r in caplog.records if "could not read outcomes" in r.getMessage()]
    assert len(warnings) == 1, "the outage is logged once"
    assert any("can be read again" in r.getMessage() for r in caplog.records)


async def test_a_burst_of_fires_goes_to_arq_in_a_few_batches(
    arq_world: ArqWorld, managers: Any
) -> None:
    calls: list[int] = []

    class Counting(ArqExecutor):
        async def send_many(self, fires: list[RemoteFire]) -> list[bool | Exception]:
            calls.append(len(fires))
            return await super().send_many(fires)

    engine = Counting(arq_world.settings, queue_name=arq_world.queue, poll_interval=0.05)
    manager: SchedulerManager = managers(SchedulerConfig(timezone="UTC", executors={"arq": engine}))
    await manager.start()
    due = utcnow() + timedelta(seconds=0.5)
    jobs = [
        manager.add_job(
            "record",
            DateTimeTrigger(due),
            args=(str(i),),
            id=job_id(arq_world, f"b{i}"),
            executor="arq",
        )  # fmt: skip
        for i in range(300)
    ]
    await wait_until(
        lambda: sum(job.success_count for job in jobs) == 300, 60, "the burst's 300 runs"
    )
    assert sum(calls) == 300
    assert len(calls) <= 30, f"sent in {len(calls)} batches: {calls}"
    assert sorted(label for _, label in arq_world.witness()) == sorted(map(str, range(300)))
