"""A Nexios app that tests/test_multiworker.py serves as several uvicorn worker processes.

Every worker runs the same code and shares one job store; the environment says which:
``MW_JOBSTORE``, ``MW_COORDINATION``, ``MW_NAMESPACE``, ``MW_LEASE`` (seconds), and
``MW_WITNESS``, an SQLite file where each job run writes a row (job id, the fire's
scheduled time, when it ran, which process ran it). The test counts those rows.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sqlite3
import time
from datetime import datetime

from nexios import NexiosApp
from nexios.http import Request, Response

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    SchedulerConfig,
    current_fire,
    setup_scheduler,
)
from nexios_contrib_scheduler.stores.fires import fire_token

WITNESS = os.environ["MW_WITNESS"]

config = SchedulerConfig(
    jobstore=os.environ["MW_JOBSTORE"],
    coordination=os.environ["MW_COORDINATION"],
    namespace=os.environ["MW_NAMESPACE"],
    lease_seconds=float(os.environ["MW_LEASE"]),
    # Every fire counts: late fires (after a takeover) still run, one by one.
    job_defaults={"coalesce": False, "misfire_grace_time": 60, "max_instances": 1},
    shutdown_timeout=5,
    # Every fire of the test's 25 s stays in the history, where the test looks for the
    # fires that were skipped or missed rather than run.
    history_size=100,
)
app = NexiosApp()
scheduler = setup_scheduler(app, config)
# On SIGUSR1 the worker writes every thread's stack to its log (a failed test's report).
faulthandler.register(signal.SIGUSR1, all_threads=True)


def record_fire() -> None:
    """The job: write down which fire this run is for."""
    fire = current_fire()
    assert fire is not None
    scheduled = None if fire.scheduled_time is None else int(fire_token(fire.scheduled_time))
    with sqlite3.connect(WITNESS, timeout=30) as db:
        db.execute(
            "INSERT INTO runs (job_id, scheduled_us, ran_at, pid) VALUES (?, ?, ?, ?)",
            (fire.job_id, scheduled, time.time(), os.getpid()),
        )
    db.close()


def record_fire_and_overrun() -> None:
    """The job, taking 1.5 s: each run overlaps the next fire of its 1 s schedule, which
    ``max_instances=1`` skips (and records as skipped)."""
    record_fire()
    time.sleep(1.5)


for job_id in ("tick-a", "tick-b", "tick-c"):
    scheduler.add_job(record_fire, IntervalTrigger(seconds=1), id=job_id, replace_existing=True)
scheduler.add_job(record_fire, CronTrigger("* * * * *"), id="minutely", replace_existing=True)
# Run only by hand ("run now"): never in progress when asked, so max_instances never
# refuses the run.
scheduler.add_job(record_fire, IntervalTrigger(days=1), id="on-demand", replace_existing=True)
scheduler.add_job(
    record_fire_and_overrun, IntervalTrigger(seconds=1), id="overrun", replace_existing=True
)


@app.get("/status")
async def status(request: Request, response: Response) -> Response:
    return response.json({**scheduler.status(), "pid": os.getpid()})


@app.get("/jobs/{job_id}")
async def get_job(request: Request, response: Response, job_id: str) -> Response:
    job = scheduler.get_job(job_id)
    if job is None:
        return response.json({"error": "no such job"}, status_code=404)
    return response.json(job.to_dict())


@app.post("/jobs/{job_id}/{action}")
async def act(request: Request, response: Response, job_id: str, action: str) -> Response:
    if action == "pause":
        ok = scheduler.pause_job(job_id, reason="paused over HTTP")
    elif action == "resume":
        ok = scheduler.resume_job(job_id)
    elif action == "run":
        ok = scheduler.run_job_now(job_id)
    elif action == "remove":
        ok = scheduler.remove_job(job_id)
    elif action == "every-second":
        trigger = IntervalTrigger(seconds=1)
        ok = scheduler.add_job(record_fire, trigger, id=job_id).id == job_id
    elif action == "once":
        when = datetime.fromisoformat(request.query_params["at"])
        ok = scheduler.add_job(record_fire, DateTimeTrigger(when), id=job_id).id == job_id
    else:
        return response.json({"error": f"unknown action {action!r}"}, status_code=404)
    return response.json({"ok": ok, "at": time.time()})
