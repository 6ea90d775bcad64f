"""A Nexios app whose heavy jobs run on arq workers (examples/arq_worker.py).

Run the worker (``arq examples.arq_worker.WorkerSettings``) and the app
(``uvicorn examples.arq_app:app``); the dashboard at /scheduler/ (read-only here, on
loopback; guard it as examples/quickstart.py does before serving it elsewhere) shows each
job's runs, with the arq worker's start and end times.
"""

from __future__ import annotations

import os

from arq.connections import RedisSettings
from nexios import NexiosApp

from examples.arq_worker import WorkerSettings
from nexios_contrib_scheduler import CronTrigger, IntervalTrigger, SchedulerConfig, setup_scheduler
from nexios_contrib_scheduler.admin import scheduler_router
from nexios_contrib_scheduler.executors import ArqExecutor

redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
app = NexiosApp()
scheduler = setup_scheduler(
    app,
    SchedulerConfig(
        timezone="Europe/Paris",
        executors={
            # functions=: a job naming a function the workers lack is refused at add_job.
            "arq": ArqExecutor(
                RedisSettings.from_dsn(redis_url), functions=WorkerSettings.functions
            )
        },
    ),
)
scheduler.add_job(
    "send_report",
    CronTrigger("0 7 * * mon-fri"),
    args=("daily",),
    id="daily-report",
    executor="arq",
    misfire_grace_time=600,  # a fire not started within 10 minutes expires, recorded as missed
)
scheduler.add_job("rebuild_index", IntervalTrigger(minutes=30), id="index", executor="arq")
app.mount_router(scheduler_router(read_only=True, allow_unauthenticated=True))
