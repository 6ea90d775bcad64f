"""The demo app: a Nexios app with a few jobs ticking, in memory.

Run it with ``python examples/demo.py`` (or the README's first command) and open
http://127.0.0.1:8000/jobs.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone

from nexios import NexiosApp
from nexios.http import Request, Response

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    SchedulerConfig,
    SchedulerDepends,
    setup_scheduler,
)

log = logging.getLogger("demo")


def create_app() -> NexiosApp:
    app = NexiosApp()
    scheduler = setup_scheduler(app, SchedulerConfig(timezone="UTC"))

    async def heartbeat() -> None:
        log.info("heartbeat")

    def sync_report() -> None:
        log.info("report (runs in a worker thread)")

    async def top_of_the_minute() -> None:
        log.info("a new minute")

    async def hello_once() -> None:
        log.info("hello, once")

    scheduler.add_job(heartbeat, IntervalTrigger(seconds=5), name="heartbeat", id="heartbeat")
    scheduler.add_job(sync_report, IntervalTrigger(seconds=30), name="report", id="report")
    scheduler.add_job(
        top_of_the_minute, CronTrigger("* * * * *"), name="top-of-the-minute", id="minutely"
    )
    scheduler.add_job(
        hello_once,
        DateTimeTrigger(datetime.now(timezone.utc) + timedelta(seconds=20)),
        name="hello-once",
        id="hello-once",
    )

    @app.get("/jobs")
    async def list_jobs(request: Request, response: Response, sd=SchedulerDepends()):  # type: ignore[no-untyped-def]
        return response.json([job.to_dict() for job in sd.get_jobs()])

    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
    )
