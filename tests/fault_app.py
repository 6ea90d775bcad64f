"""The app tests/test_faults.py serves as three uvicorn worker processes, then breaks.

It uses the package's public API only. The environment says how: ``FAULT_JOBSTORE``,
``FAULT_COORDINATION``, ``FAULT_NAMESPACE``, ``FAULT_LEASE`` (seconds), and the files the
test reads:

- ``FAULT_WITNESS``: every run appends ``start <job> <scheduled µs> <pid> <time>`` when it
  begins and ``end ...`` when it is done (one ``O_APPEND`` write each: lines never interleave);
- ``FAULT_LEADERS``: each worker appends ``leader <pid> <time>`` when it becomes the leader;
- ``FAULT_ARM``: when this file exists, the next worker to become leader takes it and kills
  itself with SIGKILL as its first run starts (right after its first scheduling pass, when
  the fires it took over are claimed and their runs are starting), or ``FAULT_KILL_AFTER``
  seconds after its election if no run starts before; it writes ``killed <pid> <time>`` to
  ``FAULT_LEADERS`` first. Timed from inside, so a loaded machine does not stretch it.

``FAULT_EXTRA_JOBS`` declares that many more 1-second jobs (``extra-0``, ...).
``FAULT_OLD_CODE=1`` makes this the app's previous release: it has no ``newer_feature``
function and does not declare the ``newer`` job, as a worker not yet upgraded in a rolling
deploy. The admin router is mounted without a guard (loopback only, for the test).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

from nexios import NexiosApp
from nexios.http import Request, Response

from nexios_contrib_scheduler import IntervalTrigger, SchedulerConfig, current_fire, setup_scheduler
from nexios_contrib_scheduler.admin import scheduler_router

WITNESS = os.environ["FAULT_WITNESS"]
LEADERS = os.environ["FAULT_LEADERS"]
ARM = os.environ["FAULT_ARM"]
KILL_AFTER = float(os.environ.get("FAULT_KILL_AFTER", "1.0"))
OLD_CODE = os.environ.get("FAULT_OLD_CODE") == "1"
RUN_SECONDS = 0.2  # long enough for a SIGKILL to catch a run in progress now and then
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# The scheduler's own log lines, with their level, on stderr: the test reads them.
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
for _name in ("nexios_contrib_scheduler", "apscheduler"):
    logging.getLogger(_name).addHandler(_handler)
    logging.getLogger(_name).setLevel(logging.INFO)

config = SchedulerConfig(
    jobstore=os.environ["FAULT_JOBSTORE"],
    coordination=os.environ["FAULT_COORDINATION"],
    namespace=os.environ["FAULT_NAMESPACE"],
    lease_seconds=float(os.environ["FAULT_LEASE"]),
    # Every fire counts: fires run late after a takeover, one by one, within a minute.
    job_defaults={"coalesce": False, "misfire_grace_time": 60, "max_instances": 1},
    shutdown_timeout=5,
    history_size=500,  # the whole test stays in every job's history
)
app = NexiosApp()
scheduler = setup_scheduler(app, config)
# The test asks for every thread's stack (SIGUSR1) when it fails: where a stuck worker is.
faulthandler.register(signal.SIGUSR1, all_threads=True)
app.mount_router(scheduler_router(allow_unauthenticated=True))


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _witness(stage: str) -> None:
    fire = current_fire()
    assert fire is not None
    scheduled = fire.scheduled_time
    us = "-" if scheduled is None else str((scheduled - _EPOCH) // timedelta(microseconds=1))
    _append(WITNESS, f"{stage} {fire.job_id} {us} {os.getpid()} {time.time()}\n")


async def record_run() -> None:
    """The job: say which fire this run serves, when it starts and when it is done."""
    import asyncio

    _witness("start")
    if _armed.is_set():
        _die()
    await asyncio.sleep(RUN_SECONDS)
    _witness("end")


scheduler.add_job(record_run, IntervalTrigger(seconds=1), id="tick", replace_existing=True)
for _n in range(int(os.environ.get("FAULT_EXTRA_JOBS", "0"))):  # more fires due at once
    scheduler.add_job(
        record_run, IntervalTrigger(seconds=1), id=f"extra-{_n}", replace_existing=True
    )

if not OLD_CODE:

    async def newer_feature() -> None:
        """A job the previous release does not have."""
        await record_run()

    scheduler.add_job(newer_feature, IntervalTrigger(seconds=1), id="newer", replace_existing=True)


_armed = threading.Event()


def _die() -> None:
    _append(LEADERS, f"killed {os.getpid()} {time.time()}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def _watch_leadership() -> None:
    """Note each election of this worker; die soon after it if the test armed the trap."""
    leading = False
    while True:
        now_leading = scheduler.is_leader
        if now_leading and not leading:
            _append(LEADERS, f"leader {os.getpid()} {time.time()}\n")
            try:
                os.rename(ARM, f"{ARM}.taken-by-{os.getpid()}")
            except OSError:
                pass  # not armed, or another worker took it
            else:
                _armed.set()
                timer = threading.Timer(KILL_AFTER, _die)
                timer.daemon = True
                timer.start()
        leading = now_leading
        time.sleep(0.005)


threading.Thread(target=_watch_leadership, name="leadership-watch", daemon=True).start()


@app.get("/fault/status")
async def status(request: Request, response: Response) -> Response:
    return response.json({**scheduler.status(), "pid": os.getpid()})


@app.post("/fault/add/{job_id}")
async def add(request: Request, response: Response, job_id: str) -> Response:
    """Add a 1-second interval job at run time (not declared in code)."""
    job = scheduler.add_job(record_run, IntervalTrigger(seconds=1), id=job_id)
    return response.json({"id": job.id})
