"""The arq worker the remote-executor tests start as a process of its own.

``python -m arq arq_tasks.WorkerSettings`` (from ``tests/``) with ``ARQ_TEST_REDIS`` (the
Redis URL) and ``ARQ_TEST_QUEUE`` (a queue of the test's own). Each task leaves a witness:
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


class WorkerSettings:
    functions = [record, boom, func(slow, timeout=0.5)]
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("ARQ_TEST_REDIS", "redis://127.0.0.1:6379/0")
    )
    queue_name = QUEUE
    poll_delay = 0.05
    keep_result = 600
    max_tries = 1
