"""A Nexios app with two scheduled jobs, a page listing them, and the scheduler's dashboard.

Run it with ``python examples/quickstart.py``, then open http://127.0.0.1:8000/jobs and the
dashboard at http://127.0.0.1:8000/scheduler/ (user ``admin``, the password it prints).
"""

import base64
import hmac
import os
import secrets

from nexios import NexiosApp
from nexios.dependencies import Context, Depend
from nexios.exceptions import HTTPException
from nexios.http import Request, Response

from nexios_contrib_scheduler import (
    CronTrigger,
    IntervalTrigger,
    SchedulerConfig,
    SchedulerDepends,
    setup_scheduler,
)
from nexios_contrib_scheduler.admin import scheduler_router

app = NexiosApp()
scheduler = setup_scheduler(app, SchedulerConfig(timezone="Europe/Paris"))


async def send_digest() -> None:
    """An async job runs on the app's event loop."""
    print("digest sent")


def rotate_logs() -> None:
    """A plain function runs in a worker thread, so it never blocks the loop."""
    print("logs rotated")


scheduler.add_job(send_digest, CronTrigger("0 9 * * mon-fri"), id="digest")
scheduler.add_job(rotate_logs, IntervalTrigger(hours=1), id="rotate-logs")


@app.get("/jobs")
async def list_jobs(request: Request, response: Response, sd=SchedulerDepends()):
    return response.json([job.to_dict() for job in sd.get_jobs()])


# The dashboard and admin API can pause, run and remove jobs, so they need a guard.
# This one is HTTP basic auth: the browser asks for user "admin" and this password.
ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(9)


def require_admin(ctx: Context = Context()) -> None:
    expected = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    given = ctx.request.headers.get("authorization") or ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "admins only", headers={"WWW-Authenticate": "Basic"})


app.mount_router(scheduler_router(dependencies=[Depend(require_admin)]))


if __name__ == "__main__":
    import uvicorn

    print(f"dashboard: http://127.0.0.1:8000/scheduler/ (user admin, password {ADMIN_PASSWORD})")
    uvicorn.run(app, host="127.0.0.1", port=8000)
