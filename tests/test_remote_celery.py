"""Fires sent to Celery workers: a real Celery worker process (prefork, one child) takes them
from RabbitMQ, and its results go to the test Redis.

The module has a queue of its own (``CELERY_TEST_QUEUE``, set before the Celery app is
imported) and one worker process for it; each test has job ids of its own. The test that
stops the broker mid-run has a RabbitMQ node, a queue and a worker of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

TAG = uuid.uuid4().hex[:12]
os.environ["CELERY_TEST_QUEUE"] = f"nexios-test-{TAG}"

import celery_tasks  # noqa: E402  (reads the queue above)
from fault_services import private_rabbitmq  # noqa: E402
from helpers import stop_processes, wait_for, wait_until  # noqa: E402
from mw_services import redis_url  # noqa: E402
from remote_leader import killed_then_followed  # noqa: E402

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
from nexios_contrib_scheduler.jobs import RunRecord, utcnow  # noqa: E402
from nexios_contrib_scheduler.stores.fires import FireKey  # noqa: E402

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


def witness(key: str = celery_tasks.WITNESS) -> list[tuple[str, ...]]:
    client = redis.Redis.from_url(celery_tasks.BACKEND)
    try:
        rows = client.lrange(key, 0, -1)
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
        app.backend.client.delete(app.backend.get_key_for_task(ours))  # its SENT mark
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
        _, job = await killed_then_followed(
            managers,
            ["celery", store, coordination, "", "", job_key],
            CeleryExecutor(celery_tasks.app, poll_interval=0.05),
            {"CELERY_TEST_QUEUE": QUEUE},
        )
        await wait_until(lambda: job.current_instances == 1, 30, "the fire to be followed")
    finally:
        worker.start()
    await wait_until(lambda: job.success_count == 1, 60, "the outcome of the fire")
    assert [row[1] for row in ran(job_key)] == ["failover"]
    assert job.total_run_count == 1 and job.history[-1].worker is not None


async def test_the_next_leader_records_a_dead_leaders_expired_fire_as_missed(
    worker: CeleryWorker, managers: Any, tmp_path: Path
) -> None:
    """The first leader sends a fire with a 1 s grace and is killed; no worker takes the
    message before it expires. The next leader follows the fire with its expiry, finds it
    never started and records it missed; the worker, back, never runs it."""
    worker.stop()
    store, coordination = f"sqlite:///{tmp_path / 'jobs.db'}", f"file://{tmp_path / 'lock'}"
    job_key = new_id("expired")
    try:
        follower, job = await killed_then_followed(
            managers,
            ["celery", store, coordination, "", "", job_key, "1"],  # a grace of 1 s
            CeleryExecutor(celery_tasks.app, poll_interval=0.05),
            {"CELERY_TEST_QUEUE": QUEUE},
        )
        await wait_until(lambda: job.missed_count == 1, 30, "the expired fire recorded missed")
    finally:
        worker.start()
    assert "not started on a celery worker before it expired" in (job.history[-1].error or "")
    assert job.current_instances == 0 and job.total_run_count == 0
    # A fire sent after it, on the same queue, runs: the expired one never did.
    probe = follower.add_job(
        "tests.record",
        DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
        args=("probe",),
        id=new_id("probe"),
        executor="celery",
    )
    await wait_until(lambda: probe.success_count == 1, 60, "the probe to run")
    assert ran(job_key) == []


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


def consumers(broker_url: str, queue: str) -> int:
    """How many consumers ``queue`` has on the broker at ``broker_url`` (0 if it cannot say)."""
    import kombu

    try:
        with kombu.Connection(broker_url, connect_timeout=2) as connection:
            _, _, count = connection.default_channel.queue_declare(queue, passive=True)
    except Exception:
        return 0
    return int(count)


class Beats:
    """Counts the turns of the event loop (one each 10 ms when it is free) and notes the
    longest time between two."""

    def __init__(self) -> None:
        self.count = 0
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            self.count += 1
            self.longest = max(self.longest, now - last)
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def refused_until_listening(port: int, seen: list[datetime]) -> None:
    """Try to connect to ``port`` every 50 ms until it accepts; ``seen[0]`` is then the last
    time a try began that was refused: the broker did not listen from its stop until then."""
    while True:
        at = utcnow()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            seen[:] = [at]
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


UNREACHABLE = "could not be reached before its grace ran out"
EXPIRED = "not started on a celery worker before it expired"


async def test_the_broker_stopped_mid_run_and_started_again(managers: Any, tmp_path: Path) -> None:
    """RabbitMQ stops while a job fires every 0.5 s to a Celery worker, stays down for
    longer than a fire's grace, and starts again. Every fire keeps one outcome in the job's
    history: those due while the broker was down are missed (each try to send them failed
    until their grace ran out) and never run; the event loop goes on turning meanwhile; once
    the broker is back the sends go through again, and once the worker has reconnected (by
    itself) it runs the fires again; no fire runs twice."""
    from celery import Celery

    redis_url()
    interval, grace = 0.5, 1.5
    queue = f"nexios-test-{TAG}-outage-{uuid.uuid4().hex[:6]}"
    witness_key = f"{queue}:witness"
    job_id = new_id("outage")
    worker_log = tmp_path / "worker.log"
    beats = Beats()

    def forget_keys() -> None:  # the witness list, the fires' results, marks and starts
        client = redis.Redis.from_url(celery_tasks.BACKEND)
        try:
            client.delete(witness_key, *client.scan_iter(match=f"*{job_id}*"))
        finally:
            client.close()

    def show_worker_log() -> None:  # for a failed test's report
        if worker_log.exists():
            print(f"--- worker log:\n{worker_log.read_text()[-8000:]}")

    # Each step of the cleanup runs, last made first, whatever the steps before it raised.
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.callback(show_worker_log)
        cleanup.callback(forget_keys)
        broker = cleanup.enter_context(private_rabbitmq())
        env = {**os.environ, "CELERY_TEST_BROKER": broker.url, "CELERY_TEST_QUEUE": queue}
        with worker_log.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "-Q", queue]
                + ["--pool=prefork", "-c", "1", "-n", f"w-{TAG}-outage@%h", "-l", "warning"]
                + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=TESTS,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        cleanup.callback(stop_processes, process)
        wait_for(lambda: consumers(broker.url, queue) > 0, 60, "the worker to consume")

        # The scheduler's Celery app: a send while the broker is down fails at once, with no
        # retries of Celery's or kombu's (the scheduler tries again itself while the fire's
        # grace lasts). kombu connects a pooled connection with retries whatever
        # broker_connection_timeout says (it sleeps 2 s after the first refusal before it
        # looks at the timeout): ``max_retries: 0`` stops that.
        app = Celery(f"outage-{TAG}", broker=broker.url, backend=celery_tasks.BACKEND)
        app.conf.update(
            task_default_queue=queue,
            broker_connection_timeout=1.0,
            broker_connection_retry=False,
            broker_transport_options={"max_retries": 0},
            task_publish_retry=False,
        )
        cleanup.callback(app.close)
        # The queue is durable and its messages persistent (Celery's defaults, which the
        # worker declares the queue with): a message the broker took and no worker had taken
        # yet when it stopped is still there when it starts again.
        assert app.amqp.queues[queue].durable and app.conf.task_default_delivery_mode == 2
        engine = CeleryExecutor(app, check_tasks=False, poll_interval=0.05)
        manager: SchedulerManager = managers(
            SchedulerConfig(timezone="UTC", history_size=1000, executors={"celery": engine})
        )
        await manager.start()
        cleanup.push_async_callback(manager.shutdown)
        job = manager.add_job(
            "tests.record",
            IntervalTrigger(seconds=interval),
            args=("outage",),
            id=job_id,
            executor="celery",
            misfire_grace_time=grace,
            max_instances=100,  # every fire is sent: none skipped for those in flight
        )

        def outcomes(outcome: str, says: str = "") -> list[RunRecord]:
            return [r for r in job.history if r.outcome == outcome and says in (r.error or "")]

        await wait_until(lambda: job.success_count >= 5, 60, "five fires run before the outage")

        beats.start()
        cleanup.push_async_callback(beats.stop)
        stopping = utcnow()
        await asyncio.to_thread(broker.stop)  # returns once the node's process is gone
        stopped = utcnow()
        await wait_until(
            lambda: (
                len(outcomes("missed", UNREACHABLE)) >= 3
                and (utcnow() - stopping).total_seconds() > grace
            ),
            30,
            "fires missed while the broker is down, for longer than a fire's grace",
        )
        starting = utcnow()
        refused: list[datetime] = [stopped]
        probe = asyncio.ensure_future(refused_until_listening(broker.port, refused))
        try:
            await asyncio.to_thread(broker.start)
            await asyncio.wait_for(probe, 30)
        finally:
            probe.cancel()
        started = utcnow()
        await beats.stop()

        def after() -> list[RunRecord]:
            return [r for r in outcomes("success") if started < (r.scheduled_time or started)]

        # The worker reconnects by itself, 2, 6, 12, 20, 30 s after it lost the broker.
        await wait_until(lambda: len(after()) >= 3, 90, "three fires run after the outage")
        manager.pause_job(job.id)
        await wait_until(lambda: job.current_instances == 0, 60, "the fires in flight to end")
        history = sorted(job.history, key=lambda r: r.scheduled_time or started)
        success_count, missed_count = job.success_count, job.missed_count
        rows = witness(witness_key)

    print(f"stopping {stopping}, stopped {stopped}, starting {starting}, started {started}")
    print(f"refused until {refused[0]}; {beats.count} turns, longest {beats.longest:.3f}s")
    for run in history:
        print(run.scheduled_time, run.outcome, run.error)

    def fire_id(run: RunRecord) -> str:
        return FireKey(job_id, run.scheduled_time).token

    def due(run: RunRecord) -> datetime:
        assert run.scheduled_time is not None
        return run.scheduled_time

    # Never silently lost: every fire from the first to the last has one outcome.
    times = [due(run) for run in history]
    steps = {later - earlier for earlier, later in itertools.pairwise(times)}
    assert steps == {timedelta(seconds=interval)}, f"a fire is missing or recorded twice: {steps}"
    assert {run.outcome for run in history} <= {"success", "missed"}
    assert success_count == len([r for r in history if r.outcome == "success"])
    assert missed_count == len([r for r in history if r.outcome == "missed"])

    # What ran on the worker ran once, and is what the history says succeeded: no missed
    # fire ran, before, during or after the outage. A fire published just before the broker
    # stopped is the one in doubt: the worker may have taken it (it ran: success), or its
    # message was still in the queue, which kept it (durable queue, persistent message), or
    # it was lost with the connection the broker closed. But its message expires when its
    # grace ends, and the broker was down for longer than a grace: once back, RabbitMQ drops
    # it or the worker revokes it as expired. It never runs late, nor twice (a message the
    # worker had taken and not yet acknowledged comes back expired too); it is missed.
    assert refused[0] - stopped > timedelta(seconds=grace)
    ran_ids = [row[0] for row in rows]
    assert len(ran_ids) == len(set(ran_ids)), f"a fire ran twice: {ran_ids}"
    assert set(ran_ids) == {fire_id(r) for r in history if r.outcome == "success"}

    # Before: a fire whose grace ended before the broker was stopped was settled while it
    # was up (its message expired then if no worker had taken it): it ran.
    before = [r for r in history if due(r) + timedelta(seconds=grace) < stopping]
    assert len(before) >= 2 and all(r.outcome == "success" for r in before), before

    # Down: the broker did not listen from ``stopped`` until ``refused[0]``, so every try to
    # send a fire due then and not past its grace by then was refused: missed, never sent.
    # The first of them may be the exception: the first publish over the connection the
    # broker closed as it stopped is written before the connection is known to be gone,
    # and lost; that fire is missed too, once its message expired unstarted.
    down = [
        r for r in history if stopped <= due(r) and due(r) + timedelta(seconds=grace) <= refused[0]
    ]
    assert len(down) >= 3, f"the broker was down for {refused[0] - stopped}"
    assert all(r.outcome == "missed" for r in down), down
    assert all(UNREACHABLE in (r.error or "") for r in down[1:]), down
    assert UNREACHABLE in (down[0].error or "") or EXPIRED in (down[0].error or ""), down[0]
    assert beats.count > 100, f"the event loop turned {beats.count} times in the outage"

    # After: a fire due once the broker was back was not refused. It was sent (those whose
    # messages expired before the worker had reconnected are missed), or, while the sending
    # thread was still connecting to the node just started, its grace ran out before it
    # could be published (missed, not sent). Each from the first that ran after the outage
    # on ran.
    back = [r for r in history if due(r) > started]
    late = "grace ran out before its message could be published"
    assert all(
        EXPIRED in (r.error or "") or late in (r.error or "") for r in back if r.outcome == "missed"
    ), back
    first = next(i for i, r in enumerate(back) if r.outcome == "success")
    assert len(back[first:]) >= 3 and all(r.outcome == "success" for r in back[first:]), back
