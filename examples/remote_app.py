"""A Nexios app whose heavy jobs run on Celery workers (examples/celery_worker.py) and on
arq workers (examples/arq_worker.py).

Run the workers (``celery -A examples.celery_worker worker``,
``arq examples.arq_worker.WorkerSettings``) and the app (``uvicorn examples.remote_app:app``);
the dashboard at /scheduler/ (read-only here, on loopback; guard it as
examples/quickstart.py does before serving it elsewhere) shows where each job runs and,
for each run, the worker that ran it.
"""

from __future__ import annotations

import os

from arq.connections import RedisSettings
from nexios import NexiosApp

from examples.arq_worker import WorkerSettings
from examples.celery_worker import app as celery_app
from examples.celery_worker import export
from nexios_contrib_scheduler import CronTrigger, IntervalTrigger, SchedulerConfig, setup_scheduler
from nexios_contrib_scheduler.admin import scheduler_router
from nexios_contrib_scheduler.executors import ArqExecutor, CeleryExecutor

redis = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
app = NexiosApp()
scheduler = setup_scheduler(
    app,
    SchedulerConfig(
        timezone="Europe/Paris",
        executors={
            "celery": CeleryExecutor(celery_app),
            # functions=: a job naming a function the workers lack is refused at add_job.
            "arq": ArqExecutor(redis, functions=WorkerSettings.functions),
        },
    ),
)
scheduler.add_job(
    export,  # the Celery task itself, or its name: "reports.export"
    CronTrigger("0 7 * * mon-fri"),
    args=("csv",),
    id="daily-export",
    executor="celery",
    misfire_grace_time=600,  # a fire not started within 10 minutes expires: missed
    timeout=900,  # the task's hard time limit on the worker
)
scheduler.add_job(
    "send_report", IntervalTrigger(hours=1), args=("hourly",), id="report", executor="arq"
)
scheduler.add_job("rebuild_index", IntervalTrigger(minutes=30), id="index", executor="arq")
app.mount_router(scheduler_router(read_only=True, allow_unauthenticated=True))
