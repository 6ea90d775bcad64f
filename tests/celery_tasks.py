"""The Celery app the remote-executor tests send to, and run as a worker process.

``celery -A celery_tasks worker -Q <queue>`` (from ``tests/``) with ``CELERY_TEST_QUEUE``
(a queue of the test run's own), ``CELERY_TEST_BROKER`` (RabbitMQ) and
``CELERY_TEST_BACKEND`` (Redis). Each task leaves a witness: its task id (the fire's key),
its label and the worker's name, pushed on ``<queue>:witness``.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from nexios_contrib_scheduler.executors import record_task_starts

BROKER = os.environ.get("CELERY_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("CELERY_TEST_BACKEND", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("CELERY_TEST_QUEUE", "nexios-scheduler-tests")
WITNESS = f"{QUEUE}:witness"

app = Celery("celery_tasks", broker=BROKER, backend=BACKEND)
app.conf.update(
    task_default_queue=QUEUE,
    result_extended=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
record_task_starts(app)
_witness = redis.Redis.from_url(BACKEND)


@app.task(name="tests.record", bind=True)
def record(self, label: str = "") -> str:  # type: ignore[no-untyped-def]
    _witness.rpush(WITNESS, f"{self.request.id}|{label}|{self.request.hostname}")
    return label


@app.task(name="tests.boom", bind=True)
def boom(self) -> None:  # type: ignore[no-untyped-def]
    _witness.rpush(WITNESS, f"{self.request.id}|boom|{self.request.hostname}")
    raise ValueError("boom on the Celery worker")


@app.task(name="tests.slow", bind=True)
def slow(self, seconds: float) -> None:  # type: ignore[no-untyped-def]
    _witness.rpush(WITNESS, f"{self.request.id}|slow|{self.request.hostname}")
    time.sleep(seconds)


#: A queue no test worker reads: messages published there stay for the tests to look at.
ELSEWHERE = f"{QUEUE}-elsewhere"
app.conf.task_routes = {"tests.elsewhere": {"queue": ELSEWHERE, "priority": 3}}


@app.task(name="tests.elsewhere")
def elsewhere(label: str = "") -> str:
    return label
