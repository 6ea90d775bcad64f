"""The arq worker the remote-executor tests start as a process of its own.

``python -m arq arq_tasks.WorkerSettings`` (from ``tests/``) with ``ARQ_TEST_REDIS`` (the
Redis URL), ``ARQ_TEST_QUEUE`` (a queue of the test's own) and, optionally,
``ARQ_TEST_JOB_TIMEOUT`` (the worker's job timeout, 300 s by default). Each task leaves a witness:
its message id (the fire's key) and its label, pushed on ``<queue>:witness``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from arq import func
from arq.connections import RedisSettings

QUEUE = os.environ.get("ARQ_TEST_QUEUE", "arq:queue")
WITNESS = f"{QUEUE}:witness"


async def record(ctx: dict[str, Any], label: str = "") -> str:
    await ctx["redis"].rpush(WITNESS, f"{ctx['job_id']}|{label}")
    return label


async def boom(ctx: dict[str, Any]) -> None:
    await ctx["redis"].rpush(WITNESS, f"{ctx['job_id']}|boom")
    raise ValueError("boom on the arq worker")


async def slow(ctx: dict[str, Any], seconds: float) -> None:
    await ctx["redis"].rpush(WITNESS, f"{ctx['job_id']}|slow")
    await asyncio.sleep(seconds)


async def hang(ctx: dict[str, Any], seconds: float) -> None:
    """Runs until the worker's own job timeout (``ARQ_TEST_JOB_TIMEOUT``) cuts it off."""
    await ctx["redis"].rpush(WITNESS, f"{ctx['job_id']}|hang")
    await asyncio.sleep(seconds)


class WorkerSettings:
    functions = [record, boom, func(slow, timeout=0.5), hang]
    # arq takes a job back from a worker that died with it once the job's in-progress
    # mark expires: this many seconds plus ten.
    job_timeout = float(os.environ.get("ARQ_TEST_JOB_TIMEOUT", "300"))
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("ARQ_TEST_REDIS", "redis://127.0.0.1:6379/0")
    )
    queue_name = QUEUE
    poll_delay = 0.05
    keep_result = 600
    max_tries = 1
