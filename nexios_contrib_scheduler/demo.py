"""The demo app: a Nexios app with a few interval, cron and one-shot jobs ticking.

``nexios-scheduler demo`` serves it; ``create_app()`` builds it for tests and for
``uvicorn --factory nexios_contrib_scheduler.demo:create_app``. ``GET /jobs`` lists the
jobs as JSON; the scheduler's dashboard and admin API are at ``/scheduler/``, behind
``demo_admin_guard``: browsers on this machine get in, anyone else needs the token.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import logging
import os
import random
from datetime import datetime, timedelta, timezone
from typing import Any

from nexios import NexiosApp
from nexios.dependencies import Context, Depend
from nexios.exceptions import HTTPException
from nexios.http import Request, Response

from .admin import scheduler_router
from .config import SchedulerConfig
from .dependencies import SchedulerDepend, SchedulerDepends
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


_exports = itertools.count(1)


async def export_orders() -> None:
    """Takes a moment, and fails every third run: failures show on the dashboard."""
    run = next(_exports)
    await asyncio.sleep(random.uniform(0.2, 1.2))
    if run % 3 == 0:
        raise ConnectionError("warehouse API did not answer within 30 s")
    log.info("exported the orders")


def _config(jobstore: str | None) -> SchedulerConfig:
    if jobstore is None:
        return SchedulerConfig(timezone="UTC")
    return SchedulerConfig(timezone="UTC", jobstore=jobstore)


def create_app(jobstore: str | None = None) -> NexiosApp:
    """Build the demo app; ``jobstore`` is passed to ``SchedulerConfig(jobstore=...)``."""
    app = NexiosApp()
    scheduler = setup_scheduler(app, _config(jobstore))
    soon = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=20)
    jobs: list[tuple[Any, Any, str]] = [
        (heartbeat, IntervalTrigger(seconds=5), "heartbeat"),
        (report, IntervalTrigger(seconds=30), "report"),
        (top_of_the_minute, CronTrigger("* * * * *"), "top-of-the-minute"),
        (weekday_morning, CronTrigger("0 9 * * mon-fri"), "weekday-morning"),
        (hello_once, DateTimeTrigger(soon), "hello-once"),
        (export_orders, IntervalTrigger(seconds=15), "export-orders"),
    ]
    for func, trigger, name in jobs:
        scheduler.add_job(func, trigger, name=name, id=name, replace_existing=True)

    @app.get("/jobs")
    async def list_jobs(
        request: Request, response: Response, sd: SchedulerDepend = SchedulerDepends()
    ) -> Any:
        return response.json([job.to_dict() for job in sd.get_jobs()])

    @app.get("/", exclude_from_schema=True)
    async def home(request: Request, response: Response) -> Any:
        return response.redirect("/scheduler/")

    app.mount_router(
        scheduler_router(dependencies=[Depend(demo_admin_guard)], title="Demo scheduler")
    )
    return app


# ---------------------------------------------------------------- the admin guard

#: The environment variable holding the token that lets other machines in.
ADMIN_TOKEN_VARIABLE = "SCHEDULER_ADMIN_TOKEN"
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def demo_admin_guard(ctx: Context = Context()) -> None:
    """Let in requests from this machine, or carrying the ``X-Admin-Token`` header.

    A request from a loopback address passes when its ``Host`` names this machine too:
    a page on another site whose DNS name was pointed at 127.0.0.1 still sends its own
    name, so it cannot drive the dashboard from a visitor's browser. Any other request
    needs ``X-Admin-Token`` equal to the ``SCHEDULER_ADMIN_TOKEN`` environment variable.
    Behind a reverse proxy on the same machine every request looks local: use a real
    login there instead.
    """
    request = ctx.request
    if request is None:
        raise HTTPException(403, "the demo admin guard only guards HTTP requests")
    expected = os.environ.get(ADMIN_TOKEN_VARIABLE, "")
    given = request.headers.get("x-admin-token")
    if given is not None:
        if expected and hmac.compare_digest(given.encode(), expected.encode()):
            return
        raise HTTPException(401, "wrong X-Admin-Token")
    client = request.client.host if request.client is not None else ""
    if _is_loopback_address(client):
        host = _host_name(request.headers.get("host") or "")
        if host in _LOOPBACK_NAMES:
            return
        raise HTTPException(
            403, f"Host {host!r} does not name this machine: open it as 127.0.0.1 or localhost"
        )
    raise HTTPException(
        401,
        "the demo's scheduler admin answers browsers on this machine only; from elsewhere "
        f"send X-Admin-Token with the value of {ADMIN_TOKEN_VARIABLE}",
    )


def _is_loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
