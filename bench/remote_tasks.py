"""The tasks the remote-engine benchmark sends, for a Celery worker and an arq worker, and
the Celery beat schedule it compares with.

``BENCH_QUEUE`` names the queue (and the Redis list where ``stamp`` writes down when each
run started); ``BENCH_BROKER`` and ``BENCH_REDIS`` the servers; ``BENCH_BEAT_ENTRIES`` how
many 1-second entries Celery beat holds.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

import redis
from arq.connections import RedisSettings
from celery import Celery
from celery.schedules import schedule

QUEUE = os.environ.get("BENCH_QUEUE", "nexios-bench")
BROKER = os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
STAMPS = f"{QUEUE}:stamps"
ENTRIES = int(os.environ.get("BENCH_BEAT_ENTRIES", "0"))

app = Celery("bench_remote", broker=BROKER, backend=REDIS)
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    beat_schedule={
        f"entry-{i}": {
            "task": "bench.beat_stamp",
            "schedule": schedule(1.0),
            "args": (f"entry-{i}",),
        }
        for i in range(ENTRIES)
    },
)
_stamps = redis.Redis.from_url(REDIS)


def _stamp(task_id: str, label: str) -> None:
    _stamps.rpush(STAMPS, f"{task_id}|{label}|{time.time()!r}")


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(label: str = "") -> str:
    return label


@app.task(name="bench.stamp", bind=True)  # type: ignore[untyped-decorator]
def stamp(self: Any, label: str = "") -> None:
    _stamp(self.request.id, label)


@app.task(name="bench.beat_stamp", bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
def beat_stamp(self: Any, label: str = "") -> None:
    """``stamp`` for Celery beat's sends, which nobody reads the results of."""
    _stamp(self.request.id, label)


async def arq_noop(ctx: dict[str, Any], label: str = "") -> str:
    return label


async def arq_stamp(ctx: dict[str, Any], label: str = "") -> None:
    await ctx["redis"].rpush(STAMPS, f"{ctx['job_id']}|{label}|{time.time()!r}")


class ArqWorker:
    functions: ClassVar[list[Any]] = [arq_noop, arq_stamp]
    redis_settings = RedisSettings.from_dsn(REDIS)
    queue_name = QUEUE
    max_jobs = 200
    keep_result = 600
    # arq's workers look for new jobs every poll_delay (0.5 s by default), which would be
    # most of the lateness measured; Celery's are pushed their messages by RabbitMQ.
    poll_delay = 0.05
