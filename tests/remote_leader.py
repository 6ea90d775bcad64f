"""A leader that sends one fire to arq and is then killed: tests/test_remote_arq.py runs it.

``python remote_leader.py <jobstore> <coordination> <arq redis url> <queue> <job id>``
starts a scheduler that leads, adds a one-shot arq job due at once, and prints ``SENT``
once the fire is claimed and sent (or, when the arq URL cannot be reached, once the fire is
claimed and being tried), with its run state written. Then it waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from arq.connections import RedisSettings

from nexios_contrib_scheduler import DateTimeTrigger, SchedulerConfig, SchedulerManager
from nexios_contrib_scheduler.executors import ArqExecutor
from nexios_contrib_scheduler.jobs import utcnow


async def main(jobstore: str, coordination: str, arq_url: str, queue: str, job_id: str) -> None:
    engine = ArqExecutor(RedisSettings.from_dsn(arq_url), queue_name=queue, poll_interval=0.05)
    manager = SchedulerManager(
        config=SchedulerConfig(
            timezone="UTC",
            jobstore=jobstore,
            coordination=coordination,
            lease_seconds=1,
            executors={"arq": engine},
        )
    )
    await manager.start()
    while not manager.is_leader:
        await asyncio.sleep(0.01)
    job = manager.add_job(
        "record",
        DateTimeTrigger(utcnow() + timedelta(seconds=0.05)),
        args=("failover",),
        id=job_id,
        executor="arq",
    )
    while job.current_instances == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the send (or its first try) is done
    assert await manager.flush()
    print("SENT", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
