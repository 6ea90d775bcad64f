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
from datetime import timedelta
from pathlib import Path

from nexios_contrib_scheduler import DateTimeTrigger, SchedulerConfig, SchedulerManager
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
    manager = SchedulerManager(
        config=SchedulerConfig(
            timezone="UTC",
            jobstore=jobstore,
            coordination=coordination,
            lease_seconds=1,
            executors={kind: engine},
        )
    )
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
