"""A Nexios app with two scheduled jobs and a page listing them.

Run it with ``python examples/quickstart.py`` and open http://127.0.0.1:8000/jobs.
"""

from nexios import NexiosApp
from nexios.http import Request, Response

from nexios_contrib_scheduler import (
    CronTrigger,
    IntervalTrigger,
    SchedulerConfig,
    SchedulerDepends,
    setup_scheduler,
)

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


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
