"""A Nexios app whose jobs are sent to Celery or arq workers; tests/test_remote_e2e.py serves
it as several uvicorn worker processes sharing a PostgreSQL job store.

The environment says how: ``RM_ENGINE`` (``celery`` or ``arq``), ``RM_STORE`` (the job
store and coordination URL), ``RM_NAMESPACE``, ``RM_QUEUE`` (the engine's queue, also
``CELERY_TEST_QUEUE`` for the Celery app of ``celery_tasks``) and ``RM_REDIS`` (arq's
Redis). The jobs (``<namespace>-tick-a``, ``-tick-b``, ``-minutely``) send
``record(<job id>)``; the engine workers write down each run. The dashboard is at
``/scheduler/``.
"""

from __future__ import annotations

import os

from nexios import NexiosApp
from nexios.http import Request, Response

from nexios_contrib_scheduler import CronTrigger, IntervalTrigger, SchedulerConfig, setup_scheduler
from nexios_contrib_scheduler.admin import scheduler_router
from nexios_contrib_scheduler.executors import ArqExecutor, CeleryExecutor, RemoteExecutor

ENGINE = os.environ["RM_ENGINE"]
STORE = os.environ["RM_STORE"]

engine: RemoteExecutor
if ENGINE == "celery":
    import celery_tasks

    engine, task = CeleryExecutor(celery_tasks.app, poll_interval=0.1), "tests.record"
else:
    from arq.connections import RedisSettings

    settings = RedisSettings.from_dsn(os.environ["RM_REDIS"])
    engine = ArqExecutor(settings, queue_name=os.environ["RM_QUEUE"], poll_interval=0.1)
    task = "record"

config = SchedulerConfig(
    jobstore=STORE,
    coordination=STORE,
    namespace=os.environ["RM_NAMESPACE"],  # the jobs' ids begin with it too
    lease_seconds=2,
    # Every fire counts: late fires (after a takeover) are still sent, one by one.
    job_defaults={"coalesce": False, "misfire_grace_time": 60, "max_instances": 10},
    history_size=100,
    shutdown_timeout=5,
    executors={ENGINE: engine},
)
app = NexiosApp()
scheduler = setup_scheduler(app, config)
# The dashboard, open to all: a test app on the loopback interface.
app.mount_router(scheduler_router("/scheduler", allow_unauthenticated=True))
NAMESPACE = os.environ["RM_NAMESPACE"]
for name in ("tick-a", "tick-b"):
    scheduler.add_job(
        task, IntervalTrigger(seconds=1), args=(name,), id=f"{NAMESPACE}-{name}",
        executor=ENGINE, replace_existing=True,
    )  # fmt: skip
scheduler.add_job(
    task, CronTrigger("* * * * *"), args=("minutely",), id=f"{NAMESPACE}-minutely",
    executor=ENGINE, replace_existing=True,
)  # fmt: skip


@app.get("/status")
async def status(request: Request, response: Response) -> Response:
    return response.json({**scheduler.status(), "pid": os.getpid()})


@app.get("/jobs/{job_id}")
async def get_job(request: Request, response: Response, job_id: str) -> Response:
    job = scheduler.get_job(job_id)
    if job is None:
        return response.json({"error": "no such job"}, status_code=404)
    return response.json(job.to_dict())
