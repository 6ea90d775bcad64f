"""Workloads on persistent job stores: this package and raw APScheduler 3 on the same store.

Each function runs in a fresh process (``python -m bench.worker``) for one system on one
``Place`` (a store with a namespace of its own) and returns its figures. Job functions are
module-level, so that both systems can store them by reference.

* ``this``: ``SchedulerManager`` with ``jobstore`` on the store and ``coordination`` on it
  too (a lock file for SQLite), as an app served by several workers runs it.
* ``apscheduler``: ``AsyncIOScheduler`` with its own ``SQLAlchemyJobStore`` or
  ``RedisJobStore`` under the same namespace, and a Nexios route listing its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from datetime import datetime, timezone
from typing import Any

from .stats import CpuMeter, Heartbeat, percentile, stalls
from .stores import Place, PrivateRedis, aps_bulk_fill, aps_jobstore, idle_interval
from .systems import MAX_CONCURRENT_JOBS, idle_job

UTC = timezone.utc
Params = dict[str, Any]
Result = dict[str, Any]

#: The job options both systems get: one instance, coalescing, no misfire limit.
JOB_DEFAULTS = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
#: Admin page size asked for (this package ignores ``limit`` until its list is paged).
PAGE = 50
#: How long to wait for a coordinated scheduler to take the lease after it starts.
LEAD_WAIT = 30.0


# ---------------------------------------------------------------- job functions

_calls: Counter[str] = Counter()
_lateness: list[float] = []
_due = math.nan
_done: asyncio.Event | None = None
_target = 0
_fires: list[tuple[str, float, float]] = []  # (job id, scheduled, called)
_submitted: dict[str, deque[float]] = defaultdict(deque)


async def burst_job(job_id: str) -> None:
    """A one-shot of the burst: counts its calls and how late the first one is."""
    now = time.time()
    _calls[job_id] += 1
    if _calls[job_id] == 1:
        _lateness.append(now - _due)
    if _done is not None and len(_lateness) >= _target:
        _done.set()


async def tick_job(job_id: str) -> None:
    """A job of the steady load: records its scheduled time and when it was called."""
    from nexios_contrib_scheduler import current_fire

    now = time.time()
    fire = current_fire()
    if fire is not None and fire.scheduled_time is not None:
        scheduled = fire.scheduled_time.timestamp()
    else:
        queue = _submitted.get(job_id)
        scheduled = queue.popleft() if queue else math.nan
    _fires.append((job_id, scheduled, now))


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


# ---------------------------------------------------------------- the two systems


class StoreSystem:
    """What the persistent workloads need from a scheduler on a store."""

    key = ""

    def __init__(self, place: Place) -> None:
        self.place = place

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def wait_leading(self) -> None:
        """Return once this scheduler fires jobs."""

    def add_idle(self, i: int, replace: bool = False) -> None:
        raise NotImplementedError

    def add_once(self, job_id: str, when: float) -> None:
        raise NotImplementedError

    def add_tick(self, job_id: str, start: float) -> float:
        """An interval job of 1 s calling ``tick_job``, on a grid starting at ``start`` (a
        Unix time); returns its first fire time."""
        raise NotImplementedError

    def remove(self, job_id: str) -> None:
        raise NotImplementedError

    async def durable(self) -> None:
        """Wait until every change made so far is in the store (a system whose writes are
        made as they are asked for has nothing to wait for)."""
        return None

    def count_jobs(self) -> int:
        """``get_jobs()``, the number of jobs it returned."""
        raise NotImplementedError

    def get_job(self, job_id: str) -> object:
        raise NotImplementedError

    def app(self) -> tuple[Any, str]:
        """An ASGI app listing the jobs, and the path of the list's first page."""
        raise NotImplementedError


class ThisOnStore(StoreSystem):
    key = "this"

    def __init__(self, place: Place, coordinated: bool = True) -> None:
        import logging

        from nexios import NexiosApp

        from nexios_contrib_scheduler import SchedulerConfig, setup_scheduler
        from nexios_contrib_scheduler.admin import scheduler_router

        super().__init__(place)
        config = SchedulerConfig(
            timezone="UTC",
            max_concurrent_jobs=MAX_CONCURRENT_JOBS,
            log_level=logging.WARNING,
            job_defaults=dict(JOB_DEFAULTS),
            jobstore=place.jobstore,
            coordination=place.coordination if coordinated else None,
            namespace=place.namespace,
        )
        logging.getLogger("nexios").setLevel(logging.WARNING)
        self._app = NexiosApp()
        self.manager = setup_scheduler(self._app, config)
        self._app.mount_router(scheduler_router(allow_unauthenticated=True, read_only=True))

    async def start(self) -> None:
        await self.manager.start()

    async def stop(self) -> None:
        await self.manager.shutdown(timeout=5)

    async def wait_leading(self) -> None:
        deadline = time.monotonic() + LEAD_WAIT
        while not self.manager.is_leader:
            if time.monotonic() > deadline:
                raise RuntimeError(f"this package did not lead within {LEAD_WAIT:g} s")
            await asyncio.sleep(0.02)

    def add_idle(self, i: int, replace: bool = False) -> None:
        from nexios_contrib_scheduler import IntervalTrigger

        trigger = IntervalTrigger(seconds=idle_interval(i), start_now=False)
        self.manager.add_job(idle_job, trigger, id=f"idle-{i}", replace_existing=replace)

    def add_once(self, job_id: str, when: float) -> None:
        from nexios_contrib_scheduler import DateTimeTrigger

        trigger = DateTimeTrigger(datetime.fromtimestamp(when, UTC))
        self.manager.add_job(burst_job, trigger, id=job_id, args=(job_id,))

    def add_tick(self, job_id: str, start: float) -> float:
        from nexios_contrib_scheduler import IntervalTrigger

        trigger = IntervalTrigger(seconds=1, start_now=False, start_date=_utc(start))
        job = self.manager.add_job(tick_job, trigger, id=job_id, args=(job_id,))
        nxt = job.next_run_time
        return math.nan if nxt is None else nxt.timestamp()

    def remove(self, job_id: str) -> None:
        self.manager.remove_job(job_id)

    async def durable(self) -> None:
        if not await self.manager.flush(300):
            raise RuntimeError("the adds were not written within 300 s")

    def count_jobs(self) -> int:
        return len(self.manager.get_jobs())

    def get_job(self, job_id: str) -> object:
        return self.manager.get_job(job_id)

    def app(self) -> tuple[Any, str]:
        return self._app, f"/scheduler/jobs?limit={PAGE}"


class RawOnStore(StoreSystem):
    key = "apscheduler"

    def __init__(self, place: Place) -> None:
        import logging

        from apscheduler.events import EVENT_JOB_SUBMITTED
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        super().__init__(place)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        logging.getLogger("nexios").setLevel(logging.WARNING)
        stores = {} if place.store == "memory" else {"default": aps_jobstore(place)}
        self.scheduler = AsyncIOScheduler(
            timezone=UTC, jobstores=stores, job_defaults=dict(JOB_DEFAULTS)
        )
        self.scheduler.add_listener(self._on_submit, EVENT_JOB_SUBMITTED)

    @staticmethod
    def _on_submit(event: Any) -> None:
        # The job function cannot learn its scheduled time; the submission event has it,
        # and is sent before the job's task first runs.
        for when in event.scheduled_run_times:
            _submitted[event.job_id].append(when.timestamp())

    async def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)
        await asyncio.sleep(0)

    def add_idle(self, i: int, replace: bool = False) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        trigger = IntervalTrigger(seconds=idle_interval(i), timezone=UTC)
        self.scheduler.add_job(idle_job, trigger, id=f"idle-{i}", replace_existing=replace)

    def add_once(self, job_id: str, when: float) -> None:
        from apscheduler.triggers.date import DateTrigger

        trigger = DateTrigger(run_date=datetime.fromtimestamp(when, UTC), timezone=UTC)
        self.scheduler.add_job(burst_job, trigger, id=job_id, args=(job_id,))

    def add_tick(self, job_id: str, start: float) -> float:
        from apscheduler.triggers.interval import IntervalTrigger

        trigger = IntervalTrigger(seconds=1, start_date=_utc(start), timezone=UTC)
        job = self.scheduler.add_job(tick_job, trigger, id=job_id, args=(job_id,))
        nxt = getattr(job, "next_run_time", None)
        return math.nan if nxt is None else float(nxt.timestamp())

    def remove(self, job_id: str) -> None:
        self.scheduler.remove_job(job_id)

    def count_jobs(self) -> int:
        return len(self.scheduler.get_jobs())

    def get_job(self, job_id: str) -> object:
        return self.scheduler.get_job(job_id)

    def app(self) -> tuple[Any, str]:
        from nexios import NexiosApp

        app = NexiosApp()
        scheduler = self.scheduler

        @app.get("/jobs")
        async def list_jobs(request: Any, response: Any) -> Any:
            # APScheduler has no paging: the first page is sliced from the whole list.
            limit = int(request.query_params.get("limit") or 0) or None
            jobs = scheduler.get_jobs()[:limit]
            rows = [
                {
                    "id": job.id,
                    "name": job.name,
                    "trigger": str(job.trigger),
                    "next_run_time": None
                    if job.next_run_time is None
                    else job.next_run_time.isoformat(),
                }
                for job in jobs
            ]
            return response.json(rows)

        return app, f"/jobs?limit={PAGE}"


def make_store_system(key: str, place: Place) -> StoreSystem:
    if key == "this":
        return ThisOnStore(place)
    if key == "apscheduler":
        return RawOnStore(place)
    raise ValueError(f"unknown system {key!r}: use 'this' or 'apscheduler'")


def _place(params: Params) -> Place:
    return Place.from_json(params["place"])


async def _bounded_stop(system: StoreSystem, timeout: float = 15.0) -> None:
    """Stop, but do not let a scheduler that cannot reach its store hold the run up."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(system.stop(), timeout)


# ---------------------------------------------------------------- fill, probe, idle


async def fill(system_key: str, params: Params) -> Result:
    """Bring the store to ``last`` idle jobs (``idle-<first>`` .. ``idle-<last - 1>`` new).

    This package by its fastest public path: the jobs declared before ``start()``, which
    writes them. Raw APScheduler: rows written in bulk in its own format.
    """
    place, first, last = _place(params), int(params["first"]), int(params["last"])
    began = time.perf_counter()
    if system_key == "apscheduler":
        await asyncio.to_thread(aps_bulk_fill, place, first, last, idle_job)
    else:
        system = ThisOnStore(place)
        for i in range(first, last):
            system.add_idle(i, replace=True)
        await system.start()
        await system.wait_leading()
        await system.stop()
    return {"fill_s": time.perf_counter() - began, "jobs": last}


async def _timed(call: Any, times: int, budget: float) -> list[float]:
    """Seconds per call, ``times`` calls or fewer once ``budget`` seconds are spent."""
    out: list[float] = []
    while len(out) < times and sum(out) < budget:
        began = time.perf_counter()
        await call()
        out.append(time.perf_counter() - began)
        await asyncio.sleep(0.01)
    return out


async def probe(system_key: str, params: Params) -> Result:
    """Start on a filled store; ``get_jobs()``, ``get_job``, the admin list's first page,
    and the longest loop stall while they run."""
    import httpx

    place, size = _place(params), int(params["size"])
    system = make_store_system(system_key, place)
    heartbeat = Heartbeat()
    heartbeat.start()
    began = time.perf_counter()
    await system.start()
    await system.wait_leading()
    result: Result = {"start_s": time.perf_counter() - began}
    await asyncio.sleep(params["settle"])
    gc.collect()
    heartbeat.begin()
    counts: list[int] = []

    async def list_all() -> None:
        counts.append(system.count_jobs())

    result["get_jobs_s"] = statistics.median(
        await _timed(list_all, int(params["lists"]), params["budget"])
    )
    result["listed"] = counts[-1]
    rng = random.Random(size)
    ids = [f"idle-{rng.randrange(size)}" for _ in range(int(params["lookups"]))]
    found = 0
    lookups = []
    for job_id in ids:
        t0 = time.perf_counter()
        found += system.get_job(job_id) is not None
        lookups.append(time.perf_counter() - t0)
    result["get_job_s"] = statistics.median(lookups)
    result["get_job_p99_s"] = percentile(lookups, 99)
    result["found"] = found
    app, path = system.app()
    transport = httpx.ASGITransport(app=app)
    items: list[int] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def page() -> None:
            response = await client.get(path)
            response.raise_for_status()
            body = response.json()
            if isinstance(body, dict):  # a paged answer: the jobs beside a cursor
                body = next((v for v in body.values() if isinstance(v, list)), [])
            items.append(len(body))

        result["admin_s"] = statistics.median(
            await _timed(page, int(params["pages"]), params["budget"])
        )
    result["admin_items"] = items[-1]
    result.update(stalls(heartbeat, "stall_list"))
    heartbeat.stop()
    await _bounded_stop(system)
    return result


async def idle(system_key: str, params: Params) -> Result:
    """CPU share of one core while the scheduler does nothing, with ``size`` jobs stored,
    measured after start-up and the package's periodic work (resync) have had their turn."""
    place = _place(params)
    system = make_store_system(system_key, place)
    await system.start()
    await system.wait_leading()
    await asyncio.sleep(params["settle"])
    gc.collect()
    meter = CpuMeter()
    meter.start()
    await asyncio.sleep(params["window"])
    meter.stop()
    await _bounded_stop(system)
    return {"idle_cpu": meter.share}


# ---------------------------------------------------------------- standby


async def standby(system_key: str, params: Params) -> Result:
    """CPU share of one core of a scheduler whose jobs change elsewhere, read as a
    dashboard reads it, with the jobs stored (filled before).

    This package: a standby worker, the leader in another process (``lead_until_closed``)
    running one job a second (each run writes run state and notifies); the standby's jobs
    listed every ``read_every`` seconds. Raw APScheduler (no standby): the scheduler itself
    running the same job, its jobs listed as often."""
    place = _place(params)
    leader: subprocess.Popen[str] | None = None
    if system_key == "this":
        leader = _start_leader(place, float(params["leader_limit"]))
    try:
        system = make_store_system(system_key, place)
        await system.start()
        if system_key != "this":
            await system.wait_leading()
            system.add_tick("standby-tick", time.time() + 0.5)
        await asyncio.sleep(float(params["settle"]))
        gc.collect()
        meter = CpuMeter()
        meter.start()
        end = time.monotonic() + float(params["window"])
        reads = 0
        while time.monotonic() < end:
            system.count_jobs()
            reads += 1
            await asyncio.sleep(min(float(params["read_every"]), max(0.0, end - time.monotonic())))
        meter.stop()
        await _bounded_stop(system)
        return {"standby_cpu": meter.share, "reads": reads}
    finally:
        if leader is not None:
            _stop_leader(leader)


def _start_leader(place: Place, limit: float) -> subprocess.Popen[str]:
    """A process leading this package's scheduler on ``place``; returns once it leads."""
    code = (
        "import sys; from bench.persistent import lead_until_closed; lead_until_closed(sys.argv[1])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(place.to_json())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = [False]

    def wait() -> None:
        ready[0] = process.stdout.readline().strip() == "LEADING"  # type: ignore[union-attr]

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(limit)
    if not ready[0]:
        _stop_leader(process)
        raise RuntimeError(f"the leader process did not lead within {limit:g} s")
    return process


def _stop_leader(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(Exception):
        if process.stdin is not None:
            process.stdin.close()  # it stops when its stdin closes
        process.wait(15)
    if process.poll() is None:
        process.kill()
        process.wait(5)


def lead_until_closed(place_json: str) -> None:
    """The leader of the standby workload: lead, run one job a second, say ``LEADING``,
    stop once stdin closes."""
    import nexios  # noqa: F401  (as the worker process does)

    place = Place.from_json(json.loads(place_json))

    async def main() -> None:
        system = make_store_system("this", place)
        await system.start()
        await system.wait_leading()
        system.add_tick("standby-tick", time.time() + 0.5)
        print("LEADING", flush=True)
        await asyncio.to_thread(sys.stdin.read)
        await _bounded_stop(system)

    asyncio.run(main())


# ---------------------------------------------------------------- adds


async def adds(system_key: str, params: Params) -> Result:
    """Add up to ``jobs`` idle jobs to a running scheduler on an empty store, ``batch`` at
    a time between yields; adds/s over the thousand ending at each checkpoint, and the
    longest loop stall. Stops at ``limit`` seconds and says how far it got."""
    place, total, batch = _place(params), int(params["jobs"]), int(params["batch"])
    checkpoints = sorted(int(c) for c in params["checkpoints"])
    window = int(params["window"])
    system = make_store_system(system_key, place)
    await system.start()
    await system.wait_leading()
    heartbeat = Heartbeat()
    heartbeat.start()
    gc.collect()
    await asyncio.sleep(0.05)
    heartbeat.begin()
    began = time.perf_counter()
    deadline = began + float(params["limit"])
    stamps = {0: 0.0}
    added = 0
    while added < total and time.perf_counter() < deadline:
        for i in range(added, min(added + batch, total)):
            system.add_idle(i)
            added += 1
            if added % window == 0 or added in checkpoints:
                stamps[added] = time.perf_counter() - began
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - began
    await system.durable()  # the loop is watched until every add is in the store
    written = time.perf_counter() - began
    result: Result = {"added": added, "seconds": elapsed, **stalls(heartbeat)}
    heartbeat.stop()
    result["adds_per_s"] = added / elapsed if elapsed else math.nan
    result["durable_per_s"] = added / written if written else math.nan
    for mark in checkpoints:
        start = mark - window
        if mark in stamps and start in stamps:
            result[f"adds_per_s_at_{mark}"] = window / (stamps[mark] - stamps[start])
        else:
            result[f"adds_per_s_at_{mark}"] = f"> limit ({added:,} in {params['limit']:g} s)"
    await _bounded_stop(system)
    return result


# ---------------------------------------------------------------- burst


async def burst(system_key: str, params: Params) -> Result:
    """``jobs`` one-shots due at one instant: runs, duplicates, start lateness, stall.

    The instant is set after timing a few adds (added and removed again), far enough
    ahead for all of them to be added at that pace, and at most ``limit`` ahead.
    """
    global _due, _done, _target
    place, n = _place(params), int(params["jobs"])
    system = make_store_system(system_key, place)
    await system.start()
    await system.wait_leading()
    calibrate = 20
    t0 = time.perf_counter()
    for i in range(calibrate):
        system.add_once(f"calibrate-{i}", time.time() + 3600)
    for i in range(calibrate):
        system.remove(f"calibrate-{i}")
    per_add = (time.perf_counter() - t0) / (2 * calibrate)
    lead = float(params["lead"]) + 1.5 * per_add * n
    result: Result = {"jobs": n, "lead_s": lead}
    if lead > float(params["limit"]):
        await _bounded_stop(system)
        return {**result, "cut": f"> limit (adds at {1 / per_add:,.0f}/s)"}
    _due = math.ceil(time.time() + lead)
    _done, _target = asyncio.Event(), n
    for i in range(n):
        system.add_once(f"burst-{i}", _due)
    added_by = time.time()
    result["added_before_due_s"] = _due - added_by
    gc.collect()
    heartbeat = Heartbeat()
    heartbeat.start()
    delay = _due - 0.05 - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    heartbeat.begin()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_done.wait(), timeout=float(params["timeout"]))
    await asyncio.sleep(float(params["linger"]))  # late duplicates, if any
    result.update(stalls(heartbeat))
    heartbeat.stop()
    await _bounded_stop(system)
    result["runs"] = len(_calls)
    result["duplicates"] = sum(count - 1 for count in _calls.values())
    result["late_p50"] = percentile(_lateness, 50)
    result["late_p99"] = percentile(_lateness, 99)
    result["late_max"] = max(_lateness) if _lateness else math.nan
    return result


# ---------------------------------------------------------------- steady fires


async def fires(system_key: str, params: Params) -> Result:
    """``jobs`` interval jobs of 1 s (``jobs`` fires per second) for ``window`` seconds:
    lateness p99, duplicate runs of one fire, and gaps (fires due in the window that did
    not run)."""
    place, n = _place(params), int(params["jobs"])
    system = make_store_system(system_key, place)
    await system.start()
    await system.wait_leading()
    firsts = {}
    began = time.perf_counter()
    # The jobs' grids are spread evenly over a second, a steady ``n`` fires per second,
    # the same for both systems (left to the pace of the adds, they would come in bursts
    # as dense as the adds were fast). They start after ``settle`` seconds, by which both
    # systems have added them all.
    base = math.ceil(time.time()) + float(params["settle"])
    for i in range(n):
        job_id = f"tick-{i}"
        firsts[job_id] = system.add_tick(job_id, base + i / n)
        await asyncio.sleep(0)
    result: Result = {"add_s": time.perf_counter() - began}
    await asyncio.sleep(float(params["settle"]))
    heartbeat = Heartbeat()
    heartbeat.start()
    gc.collect()
    heartbeat.begin()
    start = time.time()
    end = start + float(params["window"])
    await asyncio.sleep(end - time.time() + float(params["grace"]))
    result.update(stalls(heartbeat))
    heartbeat.stop()
    await _bounded_stop(system)
    seen: Counter[tuple[str, int]] = Counter()
    lateness = []
    for job_id, scheduled, called in _fires:
        if math.isnan(scheduled) or not start <= scheduled <= end:
            continue
        seen[(job_id, round(scheduled * 1000))] += 1
        lateness.append(called - scheduled)
    expected = 0
    gaps = 0
    for job_id, first in firsts.items():
        if math.isnan(first):
            continue
        k = max(0, math.ceil(start - first - 1e-6))
        while first + k <= end:
            expected += 1
            if (job_id, round((first + k) * 1000)) not in seen:
                gaps += 1
            k += 1
    result.update(
        fires=len(lateness),
        expected=expected,
        duplicates=sum(count - 1 for count in seen.values()),
        gaps=gaps,
        late_p50=percentile(lateness, 50),
        late_p99=percentile(lateness, 99),
        late_max=max(lateness) if lateness else math.nan,
    )
    return result


# ---------------------------------------------------------------- store restart


async def restart(system_key: str, params: Params) -> Result:
    """A private Redis server restarted under a running scheduler holding ``jobs`` jobs,
    ``ticks`` of them firing every second: the longest loop stall from just before the
    restart until ``recover`` seconds after it, and whether the fires resumed."""
    base = _place(params)
    server = PrivateRedis(base.directory)
    server.start()
    try:
        place = Place("redis", server.url, base.namespace, base.directory)
        system = make_store_system(system_key, place)
        await system.start()
        await system.wait_leading()
        for i in range(int(params["jobs"])):
            system.add_idle(i)
        ticks = int(params["ticks"])
        first = time.time() + 1.0
        for i in range(ticks):
            system.add_tick(f"tick-{i}", first + i / ticks)
        await asyncio.sleep(float(params["settle"]))
        heartbeat = Heartbeat()
        heartbeat.start()
        heartbeat.begin()
        await asyncio.sleep(0.5)
        process = server.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 10)
        down_at = time.time()
        await asyncio.sleep(float(params["down"]))
        await asyncio.to_thread(server.start)
        up_at = time.time()
        await asyncio.sleep(float(params["recover"]))
        stall = stalls(heartbeat)
        heartbeat.stop()
        after = [called for _, _, called in _fires if called > up_at]
        await _bounded_stop(system)
        return {
            **stall,
            "fires_before": sum(1 for _, _, called in _fires if called < down_at),
            "fires_after": len(after),
            "resumed_s": (min(after) - up_at) if after else f"> {params['recover']:g} s",
        }
    finally:
        server.stop()


PERSISTENT_WORKLOADS = {
    "p_fill": fill,
    "p_probe": probe,
    "p_idle": idle,
    "p_standby": standby,
    "p_adds": adds,
    "p_burst": burst,
    "p_fires": fires,
    "p_restart": restart,
}
