"""The Celery app of examples/remote_app.py's Celery jobs, run by the Celery workers.

Run a worker with ``celery -A examples.celery_worker worker`` from the repository root
(RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379, or ``CELERY_BROKER_URL`` and
``CELERY_RESULT_BACKEND``).
"""

from __future__ import annotations

import os

from celery import Celery

from nexios_contrib_scheduler.executors import record_task_starts

app = Celery(
    "examples",
    broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
app.conf.result_extended = True  # results say which worker ran them
record_task_starts(app)  # and the history shows when each run started


@app.task(name="reports.export", bind=True)
def export(self, fmt: str) -> str:  # type: ignore[no-untyped-def]
    # self.request.id is the fire's key, "<job id>@<microseconds>": the same on a retry.
    print(f"export {fmt!r} for fire {self.request.id}")
    return fmt
