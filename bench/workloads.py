"""The workloads, each run in a fresh process for one system; each returns its figures.

All times are reported in seconds, CPU in seconds per fire or as a share of one core,
memory in bytes; the report converts units.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
import tracemalloc
from typing import Any

from .cron import EXPRESSIONS, ZONES, UnsupportedError, stepper, time_next_fires
from .stats import CpuMeter, Heartbeat, drain_loop, percentile, sleep_until
from .systems import Probe, Recorder, System, idle_job, make_system

Params = dict[str, Any]
Result = dict[str, Any]


async def _heartbeat_cost(seconds: float) -> float:
    """CPU seconds per second the heartbeat alone uses (no scheduler running yet)."""
    await asyncio.sleep(0.1)
    meter = CpuMeter()
    meter.start()
    await asyncio.sleep(seconds)
    meter.stop()
    return meter.share


async def _collect_garbage() -> None:
    """A full collection now, so that none owed to the set-up falls in a measured window;
    then a moment for the loop (and the heartbeat) to catch up with the pause."""
    gc.collect()
    await asyncio.sleep(0.05)


def _idle_interval(i: int) -> int:
    # 1 to 2 hours, so that none comes due during a run.
    return 3600 + i % 3601


# ---------------------------------------------------------------- burst


async def burst(system_key: str, params: Params) -> Result:
    """``jobs`` one-shot jobs all due at the same whole second."""
    n = int(params["jobs"])
    heartbeat = Heartbeat()
    heartbeat.start()
    hb_rate = await _heartbeat_cost(params["calibrate"])
    system = make_system(system_key)
    await system.start()
    recorder = Recorder()
    recorder.target = n
    recorder.reached = asyncio.Event()
    due = math.ceil(time.time() + params["lead"])
    for i in range(n):
        system.add_once(Probe(recorder, due).fire, due, f"burst-{i}")
    await _collect_garbage()
    await sleep_until(due - 0.05)
    await drain_loop()
    meter = CpuMeter()
    heartbeat.begin()
    meter.start()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(recorder.reached.wait(), timeout=params["timeout"])
    meter.stop()
    stall = heartbeat.end()
    heartbeat.stop()
    await system.stop()
    lateness = [late for _, late in recorder.samples]
    fires = len(lateness)
    return {
        "fires": fires,
        "late_p50": percentile(lateness, 50),
        "late_p99": percentile(lateness, 99),
        "late_max": max(lateness) if lateness else math.nan,
        "stall": stall,
        "stall_busy": heartbeat.longest_busy,
        "cpu_per_fire": (meter.cpu - hb_rate * meter.wall) / fires if fires else math.nan,
    }


# ---------------------------------------------------------------- scale and steady load


async def _add_idle(system: System, first: int, count: int, batch: int) -> float:
    """Add ``count`` idle interval jobs, yielding to the loop every ``batch``; seconds taken.

    The time runs until the loop has also run what the adds queued (wake-ups).
    """
    began = time.perf_counter()
    for i in range(first, first + count):
        system.add_every(idle_job, _idle_interval(i), f"idle-{i}")
        if (i - first + 1) % batch == 0:
            await asyncio.sleep(0)
    await drain_loop()
    return time.perf_counter() - began


async def _steady(system: System, heartbeat: Heartbeat, params: Params, tag: str) -> Result:
    """``firing`` jobs every second, their phases spread over the second.

    Lateness and stalls are measured over ``window`` seconds with the heartbeat running;
    CPU per fire over the ``cpu_window`` seconds after it, with the heartbeat stopped (it
    costs more CPU than the fires, so subtracting it would leave mostly its noise).
    """
    firing = int(params["firing"])
    recorder = Recorder()
    spacing = params["spread"] / firing
    ids = []
    for i in range(firing):
        job_id = f"{tag}-fire-{i}"
        probe = Probe(recorder, math.nan, 1.0)
        first = system.add_every(probe.fire, 1, job_id)
        probe.expected = math.nan if first is None else first
        probe.follow = system.follow(job_id)
        ids.append(job_id)
        await asyncio.sleep(spacing)
    await asyncio.sleep(params["settle"])
    await _collect_garbage()
    heartbeat.begin()
    start = time.time()
    await asyncio.sleep(params["window"])
    end = time.time()
    stall = heartbeat.end()
    heartbeat.stop()
    meter = CpuMeter()
    meter.start()
    cpu_start = time.time()
    await asyncio.sleep(params["cpu_window"])
    meter.stop()
    cpu_fires = recorder.count(cpu_start, time.time())
    heartbeat.start()
    for job_id in ids:
        system.remove(job_id)
    lateness = recorder.window(start, end)
    return {
        "fires": len(lateness),
        "late_p99": percentile(lateness, 99),
        "stall": stall,
        "stall_busy": heartbeat.longest_busy,
        "cpu_per_fire": meter.cpu / cpu_fires if cpu_fires else math.nan,
    }


async def scale(system_key: str, params: Params) -> Result:
    """Steady load with few jobs, then many idle jobs added, idle CPU, steady load again."""
    total = int(params["jobs"])
    few = int(params["few"])
    heartbeat = Heartbeat()
    heartbeat.start()
    system = make_system(system_key)
    await system.start()
    await _add_idle(system, 0, few, 500)
    result: Result = {}
    for key, value in (await _steady(system, heartbeat, params, "few")).items():
        result[f"few_{key}"] = value
    await asyncio.sleep(0.2)
    seconds = await _add_idle(system, few, total - few, int(params["batch"]))
    result["adds_per_s"] = (total - few) / seconds
    # Idle CPU is measured without the heartbeat, which costs more than an idle scheduler.
    heartbeat.stop()
    await _collect_garbage()
    await asyncio.sleep(params["idle_settle"])
    meter = CpuMeter()
    meter.start()
    await asyncio.sleep(params["idle"])
    meter.stop()
    result["idle_cpu"] = meter.share
    heartbeat.start()
    for key, value in (await _steady(system, heartbeat, params, "many")).items():
        result[f"many_{key}"] = value
    heartbeat.stop()
    await system.stop()
    return result


async def memory(system_key: str, params: Params) -> Result:
    """Bytes allocated (tracemalloc) per idle interval job, with ``jobs`` jobs scheduled.

    The jobs are added before the scheduler starts: what each job keeps is the same as when
    added to a running scheduler, and the adds (timed by ``scale``) are not slowed down by
    tracing here.
    """
    total = int(params["jobs"])
    tracemalloc.start()
    system = make_system(system_key)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(total):
        system.add_every(idle_job, _idle_interval(i), f"idle-{i}")
    await system.start()
    await asyncio.sleep(0.2)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    await system.stop()
    return {"bytes_per_job": (after - before) / total}


# ---------------------------------------------------------------- cron


def cron(system_key: str, params: Params) -> Result:
    """Microseconds per next-fire computation, per expression and zone; ``None``: cannot."""
    result: Result = {}
    for expr in EXPRESSIONS:
        for zone in ZONES:
            key = f"{expr} | {zone}"
            try:
                step = stepper(system_key, expr, zone)
                result[key] = time_next_fires(step, params["calls"], params["budget"])[0]
            except UnsupportedError as exc:
                result[key] = f"n/a ({exc})"
            except Exception as exc:
                result[key] = f"fails ({type(exc).__name__})"
    return result


ASYNC_WORKLOADS = {"burst": burst, "scale": scale, "memory": memory}
SYNC_WORKLOADS = {"cron": cron}
