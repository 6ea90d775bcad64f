"""The benchmark harness keeps working: ``python -m bench --quick`` prints the whole table.

The figures themselves are not checked (they depend on the machine); what is checked is
that every workload ran for every system installed and that the jobs all fired. The
persistent-store workloads run on the test PostgreSQL and Redis (``mw_services``), which
must answer: the test fails naming the one that does not.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from mw_services import postgres_url, redis_url

ROOT = Path(__file__).resolve().parent.parent
STORES = ("sqlite", "postgresql", "redis")
MEMORY_WORKLOADS = "burst,scale,memory,cron,requests"


def test_quick_run_prints_the_table(tmp_path):
    raw = tmp_path / "runs.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", MEMORY_WORKLOADS, "--json", str(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    systems = ["this", "apscheduler"]
    header = "| Workload / figure | this package | ÷ APS | APScheduler 3 (raw) |"
    if importlib.util.find_spec("nexios_contrib") is not None:
        systems.append("nexios_contrib")
        header += " nexios_contrib 0.5 | ÷ APS |"
    assert header in out
    for section in ("**Burst:", "**Scale:", "**Steady load:", "**Cron:", "**Requests:"):
        assert section in out
    assert "Targets (this package):" in out
    runs = json.loads(raw.read_text())["runs"]
    for workload in ("burst", "scale", "memory", "cron", "requests"):
        assert sorted(runs[workload]) == sorted(
            systems + (["none"] if workload == "requests" else [])
        ), workload
    plan_jobs = 300
    for system in systems:
        (burst,) = runs["burst"][system]
        assert burst["fires"] == plan_jobs, system
        (scale,) = runs["scale"][system]
        assert scale["few_fires"] > 0 and scale["many_fires"] > 0, system
        assert scale["adds_per_s"] > 0 and runs["memory"][system][0]["bytes_per_job"] > 0
        (cron,) = runs["cron"][system]
        assert isinstance(cron["@yearly | UTC"], float), system
    for system in ("none", *systems):
        (req,) = runs["requests"][system]
        assert req["requests"] > 0 and req["errors"] == 0, system


PERSISTENT_STEPS = ("p_fill", "p_probe", "p_idle", "p_adds", "p_burst", "p_fires", "p_restart")


def test_quick_persistent_run_measures_both_systems_on_every_store(tmp_path):
    """``--only persistent --quick``: this package and raw APScheduler on SQLite, PostgreSQL
    and Redis (the test services, under a namespace of their own, removed afterwards)."""
    raw = tmp_path / "runs.json"
    command = [sys.executable, "-m", "bench", "--quick", "--only", "persistent"]
    command += ["--postgres", postgres_url(), "--redis", redis_url(), "--json", str(raw)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "| Persistent stores / figure | this package | ÷ APS | APScheduler 3 (raw) |" in out
    for section in ("**SQLite", "**PostgreSQL", "**Redis", "**Memory"):
        assert section in out, section
    assert "longest loop stall" in out
    runs = json.loads(raw.read_text())["runs"]
    for step in PERSISTENT_STEPS:
        assert step in runs, step
    pairs = [f"{system}@{store}" for store in STORES for system in ("this", "apscheduler")]
    for step in ("p_probe", "p_adds"):
        assert sorted(runs[step]) == sorted(pairs), step
    for pair in pairs:
        for run in runs["p_probe"][pair]:
            assert run.get("get_jobs_s", 0) > 0 and run.get("admin_s", 0) > 0, (pair, run)
        (adds,) = runs["p_adds"][pair]
        assert adds.get("added", 0) > 0 and adds.get("stall", -1) >= 0, (pair, adds)
    (burst,) = runs["p_burst"]["this@memory"]
    assert burst["runs"] == burst["jobs"] and burst["duplicates"] == 0, burst
    for pair in ("this@postgresql", "apscheduler@postgresql"):
        (burst,) = runs["p_burst"][pair]
        assert burst.get("runs", 0) > 0, (pair, burst)
        (fires,) = runs["p_fires"][pair]
        assert fires.get("fires", 0) > 0, (pair, fires)
    for pair in ("this@redis", "apscheduler@redis"):
        (restart,) = runs["p_restart"][pair]
        assert restart.get("stall", -1) >= 0, (pair, restart)


async def test_the_loop_stall_heartbeat_counts_only_what_follows_begin():
    """A stall measured from ``begin``: the loop blocked just before it (the workloads call
    ``gc.collect()`` there) is not counted; a block after it is."""
    import asyncio
    import time

    sys.path.insert(0, str(ROOT))
    from bench.stats import Heartbeat

    heartbeat = Heartbeat()
    heartbeat.start()
    try:
        await asyncio.sleep(0.01)
        time.sleep(0.5)  # before begin: not the window's
        heartbeat.begin()
        await asyncio.sleep(0.05)
        assert heartbeat.end() < 0.25
        heartbeat.begin()
        await asyncio.sleep(0.01)
        time.sleep(0.3)  # inside the window
        await asyncio.sleep(0.01)
        assert heartbeat.end() >= 0.25
    finally:
        heartbeat.stop()


async def test_the_heartbeat_tells_garbage_collections_from_other_stalls() -> None:
    """A full collection inside the window counts as a stall and as a collection, not as
    a stall outside collections; a blocking call counts outside them."""
    import asyncio
    import gc
    import time

    sys.path.insert(0, str(ROOT))
    from bench.stats import Heartbeat, stalls

    heap = [[i] for i in range(600_000)]  # a collection walks them: tens of ms
    heartbeat = Heartbeat()
    heartbeat.start()
    try:
        await asyncio.sleep(0.01)
        heartbeat.begin()
        await asyncio.sleep(0.01)
        gc.collect()
        await asyncio.sleep(0.01)
        figures = stalls(heartbeat)
        assert figures["stall_gc"] > 0.005
        assert figures["stall"] >= 0.9 * figures["stall_gc"]  # the beat was due after it began
        assert figures["stall_outside_gc"] < figures["stall_gc"] / 2
        heartbeat.begin()
        await asyncio.sleep(0.01)
        time.sleep(0.3)
        await asyncio.sleep(0.01)
        figures = stalls(heartbeat)
        assert figures["stall_outside_gc"] >= 0.25
    finally:
        heartbeat.stop()
    assert heartbeat._on_gc not in gc.callbacks
    del heap


def test_the_lateness_workloads_run_alone_after_the_others(monkeypatch) -> None:
    """Chains that measure lateness (bursts, steady fires, restarts) run one at a time,
    once every other chain has run, however many the others run side by side."""
    import dataclasses
    import threading
    import time

    sys.path.insert(0, str(ROOT))
    from bench import persistent_runner
    from bench.runner import QUICK, Results

    running: list[str] = []
    overlaps: list[tuple[str, list[str]]] = []
    order: list[str] = []
    lock = threading.Lock()

    def fake_step(step, place):
        with lock:
            if step.workload in persistent_runner.PERSISTENT_QUICK.alone and running:
                overlaps.append((step.workload, list(running)))
            if running and any(w in persistent_runner.PERSISTENT_QUICK.alone for w in running):
                overlaps.append((step.workload, list(running)))
            running.append(step.workload)
            order.append(step.workload)
        time.sleep(0.002)
        with lock:
            running.remove(step.workload)
        return {"fill_s": 0.01} if step.workload == "p_fill" else {}

    monkeypatch.setattr(persistent_runner, "run_step", fake_step)
    plan = dataclasses.replace(persistent_runner.PERSISTENT_QUICK, parallel=4)
    results = Results(QUICK, [])
    stores = ["sqlite", "postgresql", "redis"]
    urls = {"postgresql": postgres_url(), "redis": redis_url()}
    persistent_runner.run_persistent(plan, stores, urls, results, lambda line: None)
    assert results.failures == []
    alone = [i for i, w in enumerate(order) if w in plan.alone]
    assert alone and alone == list(range(len(order) - len(alone), len(order)))
    assert {order[i] for i in alone} == {"p_burst", "p_fires", "p_restart"}
    assert overlaps == []
