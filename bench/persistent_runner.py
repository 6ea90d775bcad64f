"""The persistent-store part of the run: chains of steps on one store, each step a fresh
process with a time limit.

A chain shares one ``Place`` (a namespace on the store, a directory) between its steps, so
that a store filled once serves several measurements; the place is removed when the chain
ends. A step that runs past its limit is killed (with any server it started) and recorded
as ``"> N s"``; the chain's later steps are then recorded as not run, since they would
need what the cut step did not finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .runner import MARKER, ROOT, Results, RunError
from .stores import STORES, Place, check_reachable, new_place, remove_place

Result = dict[str, Any]


@dataclass
class PersistentPlan:
    """Sizes, repetitions and time limits of the persistent workloads."""

    name: str
    sizes: dict[str, int]  # "small", "idle", "large": jobs stored
    reps: dict[str, int]
    probe: dict[str, Any]
    idle: dict[str, Any]
    adds: dict[str, Any]
    burst: dict[str, Any]
    fires: dict[str, Any]
    restart: dict[str, Any]
    limits: dict[str, float]  # seconds per step, by workload ("fill_<size>" for fills)
    parallel: int = 1
    standby: dict[str, Any] = field(default_factory=dict)
    #: Workloads that measure lateness: their chains run one at a time, after the others
    #: (a lateness measured while other chains load the same server and the same cores
    #: measures those chains as much as the scheduler).
    alone: tuple[str, ...] = ("p_burst", "p_fires", "p_restart")


PERSISTENT_FULL = PersistentPlan(
    name="full",
    sizes={"small": 1000, "idle": 10_000, "large": 100_000},
    reps={"probe": 3, "idle": 3, "adds": 3, "burst": 3, "fires": 1, "restart": 3},
    probe={"settle": 1.0, "lists": 3, "lookups": 50, "pages": 3, "budget": 10.0},
    idle={"settle": 12.0, "window": 5.0},
    adds={
        "jobs": 20_000,
        "batch": 100,
        "checkpoints": [1000, 10_000, 20_000],
        "window": 1000,
        "limit": 30.0,
    },
    burst={"jobs": 2000, "lead": 1.0, "limit": 60.0, "timeout": 30.0, "linger": 1.0},
    fires={"jobs": 500, "settle": 2.0, "window": 60.0, "grace": 2.0},
    restart={"jobs": 1000, "ticks": 20, "settle": 2.0, "down": 2.0, "recover": 5.0},
    limits={
        "fill_small": 120.0,
        "fill_idle": 180.0,
        "fill_large": 150.0,
        "p_probe": 180.0,
        "p_idle": 120.0,
        "p_adds": 120.0,
        "p_burst": 150.0,
        "p_fires": 200.0,
        "p_restart": 90.0,
        "p_standby": 150.0,
    },
    standby={"settle": 14.0, "window": 30.0, "read_every": 2.0, "leader_limit": 90.0},
)

PERSISTENT_QUICK = PersistentPlan(
    name="quick",
    sizes={"small": 100, "idle": 200, "large": 1000},
    reps={name: 1 for name in ("probe", "idle", "adds", "burst", "fires", "restart")},
    probe={"settle": 0.2, "lists": 2, "lookups": 10, "pages": 2, "budget": 5.0},
    idle={"settle": 0.5, "window": 0.5},
    adds={"jobs": 300, "batch": 100, "checkpoints": [100, 300], "window": 100, "limit": 10.0},
    burst={"jobs": 100, "lead": 0.5, "limit": 20.0, "timeout": 20.0, "linger": 0.2},
    fires={"jobs": 20, "settle": 1.0, "window": 3.0, "grace": 1.5},
    restart={"jobs": 50, "ticks": 5, "settle": 1.0, "down": 0.5, "recover": 2.0},
    limits={
        "fill_small": 60.0,
        "fill_idle": 60.0,
        "fill_large": 120.0,
        "p_probe": 90.0,
        "p_idle": 60.0,
        "p_adds": 60.0,
        "p_burst": 90.0,
        "p_fires": 90.0,
        "p_restart": 60.0,
        "p_standby": 90.0,
    },
    parallel=4,
    standby={"settle": 0.5, "window": 1.0, "read_every": 0.5, "leader_limit": 60.0},
)


@dataclass
class Step:
    workload: str
    system: str
    params: dict[str, Any]
    limit: float
    tag: dict[str, Any] = field(default_factory=dict)  # kept with the result ("size")


@dataclass
class Chain:
    store: str
    steps: list[Step]


SYSTEMS = ("this", "apscheduler")


def build_chains(plan: PersistentPlan, stores: Sequence[str]) -> list[Chain]:
    """Every chain, in the order to run them: per store, the list chain of each system,
    then the adds, bursts, steady fires and restarts, one chain per run."""
    sizes, reps, limits = plan.sizes, plan.reps, plan.limits
    chains: list[Chain] = []
    for store in stores:
        for system in SYSTEMS:
            steps: list[Step] = []
            have = 0
            for label in ("small", "idle", "large"):
                size = sizes[label]
                fill = {"first": have, "last": size}
                steps.append(Step("p_fill", system, fill, limits[f"fill_{label}"], {"size": size}))
                have = size
                if label == "idle":
                    for _ in range(reps["idle"]):
                        steps.append(Step("p_idle", system, dict(plan.idle), limits["p_idle"]))
                    for _ in range(reps["idle"]):
                        params = dict(plan.standby)
                        steps.append(Step("p_standby", system, params, limits["p_standby"]))
                    continue
                for _ in range(reps["probe"]):
                    params = {**plan.probe, "size": size}
                    steps.append(Step("p_probe", system, params, limits["p_probe"], {"size": size}))
            chains.append(Chain(store, steps))
    for _ in range(reps["adds"]):
        for store in stores:
            for system in SYSTEMS:
                chains.append(
                    Chain(store, [Step("p_adds", system, dict(plan.adds), limits["p_adds"])])
                )
    for _ in range(reps["burst"]):
        for store in ("memory", *stores):
            for system in SYSTEMS:
                step = Step("p_burst", system, dict(plan.burst), limits["p_burst"])
                chains.append(Chain(store, [step]))
    if "postgresql" in stores:
        for _ in range(reps["fires"]):
            for system in SYSTEMS:
                step = Step("p_fires", system, dict(plan.fires), limits["p_fires"])
                chains.append(Chain("postgresql", [step]))
    if "redis" in stores:
        for _ in range(reps["restart"]):
            for system in SYSTEMS:
                step = Step("p_restart", system, dict(plan.restart), limits["p_restart"])
                chains.append(Chain("redis", [step]))
    return chains


def _idle_sizes(chain: Chain) -> None:
    """The idle steps measure with the store at the size filled just before them."""
    size = 0
    for step in chain.steps:
        if step.workload == "p_fill":
            size = step.tag["size"]
        elif step.workload == "p_idle":
            step.tag["size"] = size


def _projected(step: Step, rate: float | None) -> float | None:
    """Seconds a fill would take at ``rate``, when that is well past its limit."""
    if step.workload != "p_fill" or not rate:
        return None
    seconds = (step.params["last"] - step.params["first"]) / rate
    return seconds if seconds > 1.5 * step.limit else None


def run_step(step: Step, place: Place) -> Result:
    """Run one step in a fresh process; ``{"cut": "> N s"}`` if it passed its limit."""
    params = {**step.params, "place": place.to_json()}
    spec = {"workload": step.workload, "system": step.system, "params": params}
    command = [sys.executable, "-m", "bench.worker", json.dumps(spec)]
    # A session of its own, so that on timeout the worker and any server it started go.
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=step.limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"cut": f"> {step.limit:g} s"}
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])  # type: ignore[no-any-return]
    raise RunError(
        f"{step.workload}/{step.system} exited {proc.returncode}:\n{out[-2000:]}\n{err[-4000:]}"
    )


def run_persistent(
    plan: PersistentPlan,
    stores: Sequence[str],
    urls: dict[str, str],
    results: Results,
    log: Callable[[str], None],
    save: Callable[[Results], None] | None = None,
) -> None:
    """Run every chain of the plan on the reachable stores; figures go into ``results``
    under ``p_<workload>`` and ``<system>@<store>``."""
    usable = []
    for store in stores:
        problem = check_reachable(store, urls.get(store, ""))
        if problem is None:
            usable.append(store)
        else:
            results.failures.append(f"persistent/{store}: {problem}")
            log(f"{problem}: its workloads are left out")
    chains = build_chains(plan, usable)
    for chain in chains:
        _idle_sizes(chain)
    total = sum(len(chain.steps) for chain in chains)
    done = 0

    def execute(chain: Chain) -> None:
        nonlocal done
        place = new_place(chain.store, urls)
        blocked: str | None = None
        rate: float | None = None  # jobs per second of the chain's last fill
        try:
            for step in chain.steps:
                pair = f"{step.system}@{chain.store}"
                began = time.perf_counter()
                projected = _projected(step, rate)
                if blocked is not None:
                    result: Result = {"cut": blocked}
                elif projected is not None:
                    # The last fill's pace says this one cannot finish: not worth the wait.
                    result = {"cut": f"> {step.limit:g} s (projected {projected:,.0f} s)"}
                    blocked = f"not run (p_fill {result['cut']})"
                else:
                    try:
                        result = run_step(step, place)
                    except (RunError, OSError) as exc:
                        results.failures.append(f"{step.workload}/{pair}: {exc}")
                        result = {"cut": "failed"}
                    if "cut" in result:
                        blocked = f"not run ({step.workload} {result['cut']})"
                    elif step.workload == "p_fill" and result.get("fill_s"):
                        added = step.params["last"] - step.params["first"]
                        rate = added / result["fill_s"]
                results.add(step.workload, pair, {**step.tag, **result})
                if save is not None:
                    save(results)
                done += 1
                note = f" ({result['cut']})" if "cut" in result else ""
                size = f" {step.tag['size']:,}" if "size" in step.tag else ""
                log(
                    f"[{done}/{total}] {step.workload}{size} {pair}: "
                    f"{time.perf_counter() - began:.1f}s{note}"
                )
        finally:
            try:
                remove_place(place)
            except Exception as exc:  # leave the run going; say what was left behind
                log(f"could not remove namespace {place.namespace} on {chain.store}: {exc}")

    def runs_alone(chain: Chain) -> bool:
        return any(step.workload in plan.alone for step in chain.steps)

    alone = [chain for chain in chains if runs_alone(chain)]
    shared = [chain for chain in chains if not runs_alone(chain)]
    if plan.parallel <= 1:
        for chain in shared:
            execute(chain)
    else:
        with ThreadPoolExecutor(max_workers=plan.parallel) as pool:
            list(pool.map(execute, shared))
    for chain in alone:
        execute(chain)


__all__ = ["PERSISTENT_FULL", "PERSISTENT_QUICK", "STORES", "run_persistent"]
