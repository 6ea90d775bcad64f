"""A leader that sends one fire to a remote engine and is then killed: the remote-executor
tests run it.

``python remote_leader.py arq <jobstore> <coordination> <redis url> <queue> <job id>``, or
``python remote_leader.py celery <jobstore> <coordination> "" "" <job id>`` (the Celery app
of ``celery_tasks``), with an optional last argument: the job's misfire grace time in
seconds (none by default). It starts a scheduler that leads, adds a one-shot job due at once
(sending ``record("failover")``), and prints ``SENT`` once the fire is claimed and sent
(or, when the engine cannot be reached, claimed and being tried), with its run state
written. Then it waits to be killed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from helpers import wait_until

from nexios_contrib_scheduler import (
    DateTimeTrigger,
    ScheduledJob,
    SchedulerConfig,
    SchedulerManager,
)
from nexios_contrib_scheduler.executors import ArqExecutor, CeleryExecutor, RemoteExecutor
from nexios_contrib_scheduler.jobs import utcnow


async def sent_then_killed(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run this script with ``argv`` until it says ``SENT``, then SIGKILL it."""
    leader = subprocess.Popen(
        [sys.executable, str(Path(__file__)), *argv],
        cwd=Path(__file__).parent,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert leader.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(leader.stdout.readline), 60)
        assert line.strip() == "SENT", f"the first leader said {line!r}"
    finally:
        leader.kill()
        leader.wait()


def leader_config(
    kind: str, jobstore: str, coordination: str, engine: RemoteExecutor
) -> SchedulerConfig:
    """The configuration of the leader this script runs, and of the one that follows it."""
    return SchedulerConfig(
        timezone="UTC",
        jobstore=jobstore,
        coordination=coordination,
        lease_seconds=1,
        executors={kind: engine},
    )


async def killed_then_followed(
    managers: Callable[[SchedulerConfig], Any],
    argv: list[str],
    engine: RemoteExecutor,
    env: dict[str, str] | None = None,
) -> tuple[SchedulerManager, ScheduledJob]:
    """Run this script with ``argv`` (``kind jobstore coordination url queue job_id
    [grace]``) until it has sent its fire, SIGKILL it, and start the next leader (made by
    the tests' ``managers`` fixture) sending to ``engine``. That leader, and the job once
    it has read it from the store."""
    kind, jobstore, coordination, job_id = argv[0], argv[1], argv[2], argv[5]
    await sent_then_killed(argv, env)
    follower: SchedulerManager = managers(leader_config(kind, jobstore, coordination, engine))
    await follower.start()
    await wait_until(lambda: follower.get_job(job_id) is not None, 30, "the job in the store")
    job = follower.get_job(job_id)
    assert job is not None
    return follower, job


def engine_of(kind: str, url: str, queue: str) -> tuple[RemoteExecutor, str]:
    if kind == "arq":
        from arq.connections import RedisSettings

        settings = RedisSettings.from_dsn(url)
        return ArqExecutor(settings, queue_name=queue, poll_interval=0.05), "record"
    import celery_tasks

    return CeleryExecutor(celery_tasks.app, poll_interval=0.05), "tests.record"


async def main(
    kind: str, jobstore: str, coordination: str, url: str, queue: str, job_id: str, grace: str = ""
) -> None:
    engine, task = engine_of(kind, url, queue)
    manager = SchedulerManager(config=leader_config(kind, jobstore, coordination, engine))
    await manager.start()
    while not manager.is_leader:
        await asyncio.sleep(0.01)
    job = manager.add_job(
        task,
        DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
        args=("failover",),
        id=job_id,
        executor=kind,
        misfire_grace_time=float(grace) if grace else None,
    )
    while job.current_instances == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the send (or its first try) is done
    assert await manager.flush()
    print("SENT", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
