"""Fires sent to Celery workers: a real Celery worker process (prefork, one child) takes them
from RabbitMQ, and its results go to the test Redis.

The module has a queue of its own (``CELERY_TEST_QUEUE``, set before the Celery app is
imported) and one worker process for it; each test has job ids of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

TAG = uuid.uuid4().hex[:12]
os.environ["CELERY_TEST_QUEUE"] = f"nexios-test-{TAG}"

import celery_tasks  # noqa: E402  (reads the queue above)
from helpers import stop_processes, wait_until  # noqa: E402
from mw_services import redis_url  # noqa: E402
from remote_leader import sent_then_killed  # noqa: E402

from nexios_contrib_scheduler import (  # noqa: E402
    DateTimeTrigger,
    IntervalTrigger,
    SchedulerConfig,
    SchedulerManager,
)
from nexios_contrib_scheduler.executors import (  # noqa: E402
    CeleryExecutor,
    RemoteFire,
    RemoteTask,
)
from nexios_contrib_scheduler.jobs import utcnow  # noqa: E402

TESTS = Path(__file__).parent
QUEUE = celery_tasks.QUEUE


def rabbitmq_reachable() -> None:
    try:
        with celery_tasks.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        pytest.fail(
            f"RabbitMQ is not reachable at {celery_tasks.BROKER} ({exc}); start it "
            "(scripts/test.sh does: rabbitmq-server -detached)",
            pytrace=False,
        )


class CeleryWorker:
    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "CELERY_TEST_QUEUE": QUEUE}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "-Q", QUEUE]
            + ["--pool=prefork", "-c", "1", "-n", f"w-{TAG}@%h", "-l", "warning"]
            + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=TESTS,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_processes(self.process)
            self.process = None


@pytest.fixture(scope="module")
def worker() -> Iterator[CeleryWorker]:
    redis_url()
    rabbitmq_reachable()
    running = CeleryWorker()
    running.start()
    yield running
    running.stop()
    with celery_tasks.app.connection_for_write() as connection:
        connection.default_channel.queue_delete(QUEUE)
    client = redis.Redis.from_url(celery_tasks.BACKEND)
    try:
        keys = set(client.scan_iter(match=f"*{TAG}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def witness() -> list[tuple[str, ...]]:
    client = redis.Redis.from_url(celery_tasks.BACKEND)
    try:
        rows = client.lrange(celery_tasks.WITNESS, 0, -1)
    finally:
        client.close()
    return [tuple(row.decode().split("|")) for row in rows]


def ran(job_id: str) -> list[tuple[str, ...]]:
    return [row for row in witness() if row[0].startswith(f"{job_id}@")]


def new_id(name: str) -> str:
    return f"{TAG}-{name}-{uuid.uuid4().hex[:6]}"


def config(**options: Any) -> SchedulerConfig:
    engine = CeleryExecutor(celery_tasks.app, poll_interval=0.05, **options)
    return SchedulerConfig(timezone="UTC", executors={"celery": engine})


async def test_each_fire_runs_once_on_a_celery_worker(worker: CeleryWorker, managers: Any) -> None:
    manager: SchedulerManager = managers(config())
    await manager.start()
    job = manager.add_job(
        celery_tasks.record,  # the task object, or its name: "tests.record"
        IntervalTrigger(seconds=0.3),
        args=("tick",),
        id=new_id("tick"),
        executor="celery",
    )
    await wait_until(lambda: job.success_count >= 3, 60, "three fires run on the worker")
    manager.pause_job(job.id)
    await wait_until(lambda: job.current_instances == 0, 30, "the fires in flight to end")
    rows = ran(job.id)
    assert len(rows) == len({row[0] for row in rows}), f"a fire ran twice: {rows}"
    runs = [run for run in job.history if run.outcome == "success"]
    assert {f"{job.id}@{int(run.scheduled_time.timestamp() * 1e6)}" for run in runs} <= {
        row[0] for row in rows
    }
    for run in runs:
        assert run.worker == f"celery (w-{TAG}@{rows[0][2].split('@', 1)[1]})"
        assert run.start is not None and run.end is not None
        assert run.scheduled_time is not None and run.scheduled_time <= run.start <= run.end
    assert job.to_dict()["func"] == "task:tests.record"
    assert job.executor == "celery"


async def test_a_failing_task_and_a_task_over_its_time_limit(
    worker: CeleryWorker, managers: Any
) -> None:
    manager: SchedulerManager = managers(config())
    await manager.start()
    soon = DateTimeTrigger(utcnow() + timedelta(seconds=0.05))
    failing = manager.add_job("tests.boom", soon, id=new_id("boom"), executor="celery")
    slow = manager.add_job(
        "tests.slow", soon, args=(30,), id=new_id("slow"), executor="celery", timeout=1
    )
    await wait_until(lambda: failing.failure_count == 1, 60, "the failed run")
    assert failing.last_error == "ValueError: boom on the Celery worker"
    assert failing.history[-1].outcome == "error"
    await wait_until(lambda: slow.failure_count == 1, 60, "the run cut off by its time limit")
    assert slow.history[-1].outcome == "timeout"
    assert "timed out on the Celery worker" in (slow.last_error or "")


async def test_a_fire_not_started_before_its_grace_ends_is_missed(
    worker: CeleryWorker, managers: Any
) -> None:
    worker.stop()  # nobody takes the message while its grace runs out
    try:
        manager: SchedulerManager = managers(config())
        await manager.start()
        job = manager.add_job(
            "tests.record",
            DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
            id=new_id("late"),
            executor="celery",
            misfire_grace_time=0.5,
        )
        await wait_until(lambda: job.current_instances == 1, 10, "the fire to be sent")
        await asyncio.sleep(1.0)  # the grace runs out with no worker
    finally:
        worker.start()
    await wait_until(lambda: job.missed_count == 1, 60, "the expired fire recorded missed")
    assert "expired" in (job.history[-1].error or "")
    assert ran(job.id) == [] and job.failure_count == 0 and job.total_run_count == 0


def test_a_task_the_app_does_not_know_is_refused_unless_told() -> None:
    manager = SchedulerManager(config=config())
    with pytest.raises(LookupError, match=r"has no task 'tests.nope'"):
        manager.add_job("tests.nope", IntervalTrigger(seconds=1), executor="celery")
    lenient = SchedulerManager(config=config(check_tasks=False))
    job = lenient.add_job("tests.nope", IntervalTrigger(seconds=1), executor="celery")
    assert job.func == RemoteTask("tests.nope")
    with pytest.raises(TypeError, match="must be a Celery app"):
        CeleryExecutor(object())


def test_a_fire_is_published_as_celerys_send_task_publishes_it() -> None:
    """The executor publishes a fire's message itself (without send_task's result object
    and subscription): the same exchange, routing key, headers and properties as
    send_task, with the app's routes (a queue and a priority) applied."""
    from celery.signals import before_task_publish

    rabbitmq_reachable()
    seen: list[dict[str, Any]] = []

    def capture(sender: Any = None, **message: Any) -> None:
        seen.append({"task": sender, **message})

    app = celery_tasks.app
    executor = CeleryExecutor(app)
    expires = utcnow() + timedelta(minutes=5)
    ours, theirs = f"ours-{TAG}", f"theirs-{TAG}"
    fire = RemoteFire(ours, executor.task("tests.elsewhere"), ("a",), {"b": 1}, expires, 7.0)
    before_task_publish.connect(capture)
    try:
        assert asyncio.run(executor.send_many([fire])) == [True]
        app.send_task(
            "tests.elsewhere",
            args=["a"],
            kwargs={"b": 1},
            task_id=theirs,
            expires=expires,
            time_limit=7.0,
        )
        with app.connection_for_write() as connection:
            # The executor declared the queue before its message (the first one published).
            _, count, _ = connection.default_channel.queue_declare(
                celery_tasks.ELSEWHERE, passive=True
            )
        assert count == 2
    finally:
        before_task_publish.disconnect(capture)
        asyncio.run(executor.close())
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(celery_tasks.ELSEWHERE)
    assert [m["task"] for m in seen] == ["tests.elsewhere", "tests.elsewhere"]
    mine, celerys = seen

    def comparable(message: dict[str, Any], task_id: str) -> dict[str, Any]:
        headers = {**message["headers"]}
        assert headers.pop("id") == headers.pop("root_id") == task_id
        properties = {**message["properties"]}
        assert properties.pop("correlation_id") == task_id
        assert properties.pop("reply_to")  # the sending thread's: each has its own
        expiration = properties.pop("expiration")
        assert 290 < expiration <= 300  # the message's TTL: until the fire's grace ends
        # send_task declares the queue with each message; the executor once per batch.
        return {**message, "headers": headers, "properties": properties, "declare": None}

    assert comparable(mine, ours) == comparable(celerys, theirs)
    assert mine["routing_key"] == celery_tasks.ELSEWHERE
    assert [queue.name for queue in celerys["declare"]] == [celery_tasks.ELSEWHERE]
    assert mine["properties"]["priority"] == 3
    assert mine["headers"]["timelimit"] == (7.0, None) or mine["headers"]["timelimit"] == [
        7.0,
        None,
    ]
    assert mine["headers"]["expires"] == expires.isoformat()


async def test_the_next_leader_follows_the_fire_of_a_killed_leader(
    worker: CeleryWorker, managers: Any, tmp_path: Path
) -> None:
    worker.stop()  # the message waits in RabbitMQ while the leaders change
    store, coordination = f"sqlite:///{tmp_path / 'jobs.db'}", f"file://{tmp_path / 'lock'}"
    job_key = new_id("failover")
    try:
        await sent_then_killed(
            ["celery", store, coordination, "", "", job_key], {"CELERY_TEST_QUEUE": QUEUE}
        )
        follower: SchedulerManager = managers(
            SchedulerConfig(
                timezone="UTC",
                jobstore=store,
                coordination=coordination,
                lease_seconds=1,
                executors={"celery": CeleryExecutor(celery_tasks.app, poll_interval=0.05)},
            )
        )
        await follower.start()
        await wait_until(lambda: follower.get_job(job_key) is not None, 30, "the job")
        job = follower.get_job(job_key)
        assert job is not None
        await wait_until(lambda: job.current_instances == 1, 30, "the fire to be followed")
    finally:
        worker.start()
    await wait_until(lambda: job.success_count == 1, 60, "the outcome of the fire")
    assert [row[1] for row in ran(job_key)] == ["failover"]
    assert job.total_run_count == 1 and job.history[-1].worker is not None


async def test_a_worker_process_lost_during_a_run_is_recorded_as_celery_reports_it(
    worker: CeleryWorker, managers: Any
) -> None:
    manager: SchedulerManager = managers(config())
    await manager.start()
    job = manager.add_job(
        "tests.slow",
        DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
        args=(60,),
        id=new_id("lost"),
        executor="celery",
    )
    await wait_until(lambda: bool(ran(job.id)), 60, "the run to start on the worker")
    assert worker.process is not None
    children = subprocess.run(
        ["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert children, "the worker's pool process"
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    await wait_until(lambda: job.failure_count == 1, 60, "the lost run to be recorded")
    assert job.history[-1].outcome == "error"
    assert "the Celery worker was lost" in (job.last_error or "")


async def test_a_fire_due_while_the_broker_is_down_is_missed_and_the_app_serves(
    worker: CeleryWorker, managers: Any
) -> None:
    """A Celery app whose broker cannot be reached: each try to send fails in the sending
    thread (the event loop keeps turning), and the fire is recorded missed once its grace
    is over; it is never sent."""
    from celery import Celery

    down = Celery("down", broker="amqp://guest:guest@127.0.0.1:1//", backend=celery_tasks.BACKEND)
    down.conf.update(broker_connection_timeout=0.5, task_publish_retry=False)
    manager: SchedulerManager = managers(
        SchedulerConfig(
            timezone="UTC",
            executors={"celery": CeleryExecutor(down, check_tasks=False, poll_interval=0.05)},
        )
    )
    await manager.start()
    job = manager.add_job(
        "tests.record",
        DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
        id=new_id("down"),
        executor="celery",
        misfire_grace_time=1.5,
    )
    beats = 0
    while job.missed_count == 0 and beats < 3000:  # up to 30 s of 10 ms turns
        await asyncio.sleep(0.01)
        beats += 1
    assert job.missed_count == 1, "the fire was not recorded missed"
    assert beats > 20, "the loop went on turning while the sends failed"
    error = job.history[-1].error or ""
    assert "could not be reached before its grace ran out" in error, error
    assert job.failure_count == 0 and job.total_run_count == 0
