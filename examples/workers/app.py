"""An app served by several workers, one of which fires the jobs.

From the repository root, on one host (SQLite and a lock file)::

    uvicorn examples.workers.app:app --workers 4

On several hosts sharing PostgreSQL (run on each host)::

    DATABASE_URL=postgresql://app:secret@db.internal:5432/app \
        uvicorn examples.workers.app:app --workers 4
"""

import os

from nexios import NexiosApp
from nexios.http import Request, Response

from examples.workers.jobs import nightly_report, send_digest
from nexios_contrib_scheduler import CronTrigger, SchedulerConfig, setup_scheduler

DATABASE = os.environ.get("DATABASE_URL", "sqlite:///jobs.db")
LOCK = os.environ.get("SCHEDULER_LOCK", "file:///tmp/app-scheduler.lock")

app = NexiosApp()
scheduler = setup_scheduler(
    app,
    SchedulerConfig(
        jobstore=DATABASE,
        # One host: a lock file. Several hosts: the database itself.
        coordination=LOCK if DATABASE.startswith("sqlite") else DATABASE,
        lease_seconds=10,
    ),
)

# Declared at every start: stable ids, and replace_existing=True.
scheduler.add_job(
    nightly_report, CronTrigger("0 3 * * *"), id="nightly-report", replace_existing=True
)
scheduler.add_job(
    send_digest, CronTrigger("0 9 * * mon"), args=("ops",), id="digest-ops", replace_existing=True
)


@app.get("/health")
async def health(request: Request, response: Response) -> Response:
    """Which worker answered, and which one leads."""
    return response.json(scheduler.status())
