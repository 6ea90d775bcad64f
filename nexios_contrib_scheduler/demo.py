"""The demo app: a Nexios app with a few interval, cron and one-shot jobs ticking.

``nexios-scheduler demo`` serves it; ``create_app()`` builds it for tests and for
``uvicorn --factory nexios_contrib_scheduler.demo:create_app``. ``GET /jobs`` lists the
jobs as JSON.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from nexios import NexiosApp
from nexios.http import Request, Response

from .config import SchedulerConfig
from .dependencies import SchedulerDepend, SchedulerDepends
from .errors import ConfigError
from .integration import setup_scheduler
from .triggers import CronTrigger, DateTimeTrigger, IntervalTrigger

log = logging.getLogger("nexios_contrib_scheduler.demo")


# The jobs are module-level functions so that a persistent job store can import them.
async def heartbeat() -> None:
    """Every 5 seconds."""
    log.info("heartbeat")


def report() -> None:
    """A plain function: it runs in a worker thread, never blocking the event loop."""
    log.info("report (runs in a worker thread)")


async def top_of_the_minute() -> None:
    log.info("a new minute")


async def weekday_morning() -> None:
    log.info("good morning")


async def hello_once() -> None:
    log.info("hello, once")


def _config(jobstore: str | None) -> SchedulerConfig:
    options: dict[str, Any] = {"timezone": "UTC"}
    if jobstore is not None:
        names = {f.name for f in dataclasses.fields(SchedulerConfig)}
        if "jobstore" not in names:
            raise ConfigError(
                f"cannot use job store {jobstore!r}: this version of "
                "nexios-contrib-scheduler keeps jobs in memory only (no jobstore option)"
            )
        options["jobstore"] = jobstore
    return SchedulerConfig(**options)


def create_app(jobstore: str | None = None) -> NexiosApp:
    """Build the demo app; ``jobstore`` is passed to ``SchedulerConfig(jobstore=...)``."""
    app = NexiosApp()
    scheduler = setup_scheduler(app, _config(jobstore))
    soon = datetime.now(timezone.utc) + timedelta(seconds=20)
    jobs: list[tuple[Any, Any, str]] = [
        (heartbeat, IntervalTrigger(seconds=5), "heartbeat"),
        (report, IntervalTrigger(seconds=30), "report"),
        (top_of_the_minute, CronTrigger("* * * * *"), "top-of-the-minute"),
        (weekday_morning, CronTrigger("0 9 * * mon-fri"), "weekday-morning"),
        (hello_once, DateTimeTrigger(soon), "hello-once"),
    ]
    for func, trigger, name in jobs:
        scheduler.add_job(func, trigger, name=name, id=name, replace_existing=True)

    @app.get("/jobs")
    async def list_jobs(
        request: Request, response: Response, sd: SchedulerDepend = SchedulerDepends()
    ) -> Any:
        return response.json([job.to_dict() for job in sd.get_jobs()])

    return app
