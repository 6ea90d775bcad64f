"""Runs each workload in fresh processes, several times, and keeps every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKER = "BENCH-RESULT "

Result = dict[str, Any]


class RunError(RuntimeError):
    """A benchmark process failed; the message has its output."""


@dataclass
class Plan:
    """Sizes and repetitions of every workload."""

    name: str
    reps: dict[str, int]
    burst: dict[str, Any]
    scale: dict[str, Any]
    memory: dict[str, Any]
    cron: dict[str, Any]
    requests: dict[str, Any]
    #: Processes run at once, per workload (1 when not given). Only the memory workload,
    #: which counts bytes rather than time, runs several at once in the full plan.
    parallel: dict[str, int] = field(default_factory=dict)


FULL = Plan(
    name="full",
    reps={"burst": 5, "scale": 3, "memory": 3, "cron": 3, "requests": 3},
    burst={"jobs": 2000, "lead": 1.0, "timeout": 10.0, "calibrate": 1.5},
    scale={
        "jobs": 100_000,
        "few": 100,
        "batch": 500,
        "firing": 500,
        "spread": 1.0,
        "settle": 1.1,
        "window": 10.0,
        "cpu_window": 5.0,
        "idle": 5.0,
        "idle_settle": 1.0,
    },
    memory={"jobs": 100_000, "batch": 500},
    cron={"calls": 200, "budget": 0.2},
    requests={
        "fires": 1000,
        "spread": 1.0,
        "settle": 1.2,
        "rate": 300,
        "duration": 5.0,
        "warmup": 0.5,
    },
    parallel={"memory": 3},
)

QUICK = Plan(
    name="quick",
    reps={"burst": 1, "scale": 1, "memory": 1, "cron": 1, "requests": 1},
    burst={"jobs": 300, "lead": 0.3, "timeout": 10.0, "calibrate": 0.3},
    scale={
        "jobs": 3000,
        "few": 50,
        "batch": 500,
        "firing": 50,
        "spread": 0.1,
        "settle": 1.0,
        "window": 1.0,
        "cpu_window": 1.0,
        "idle": 0.3,
        "idle_settle": 0.1,
    },
    memory={"jobs": 3000, "batch": 500},
    cron={"calls": 20, "budget": 0.02},
    requests={
        "fires": 100,
        "spread": 0.2,
        "settle": 1.05,
        "rate": 100,
        "duration": 1.0,
        "warmup": 0.2,
    },
    parallel={name: 4 for name in ("burst", "scale", "memory", "cron", "requests")},
)


@dataclass
class Results:
    """Every repetition's figures: ``runs[workload][system]`` is a list of result dicts."""

    plan: Plan
    systems: list[str]
    runs: dict[str, dict[str, list[Result]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, workload: str, system: str, result: Result) -> None:
        self.runs.setdefault(workload, {}).setdefault(system, []).append(result)

    def to_json(self) -> str:
        return json.dumps(
            {
                "plan": self.plan.name,
                "systems": self.systems,
                "runs": self.runs,
                "failures": self.failures,
            },
            indent=1,
        )


def _python(module: str, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", module, json.dumps(spec)]


def _parse(output: str) -> Result:
    for line in reversed(output.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])  # type: ignore[no-any-return]
    raise ValueError("no result line")


def run_worker(workload: str, system: str, params: dict[str, Any], timeout: float) -> Result:
    spec = {"workload": workload, "system": system, "params": params}
    proc = subprocess.run(
        _python("bench.worker", spec),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        return _parse(proc.stdout)
    except ValueError:
        raise RunError(
            f"{workload}/{system} exited {proc.returncode}:\n{proc.stdout[-2000:]}"
            f"\n{proc.stderr[-4000:]}"
        ) from None


def run_requests(system: str, params: dict[str, Any], timeout: float) -> Result:
    """Start the app server for ``system``, load it, stop it; latency and fire rate."""
    spec = {"system": system, **{k: params[k] for k in ("fires", "spread", "settle")}}
    server = subprocess.Popen(
        _python("bench.server", spec),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + timeout
        port = None
        while port is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            if line.startswith("READY "):
                port = int(line.split()[1])
        if port is None:
            server.kill()
            _, err = server.communicate(timeout=10)
            raise RunError(f"requests/{system}: the server did not start:\n{err[-4000:]}")
        load = {"port": port, **{k: params[k] for k in ("rate", "duration", "warmup")}}
        proc = subprocess.run(
            _python("bench.loadgen", load),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        try:
            result = _parse(proc.stdout)
        except ValueError:
            raise RunError(
                f"requests/{system}: load generator failed:\n{proc.stderr[-4000:]}"
            ) from None
        out, err = server.communicate("stop\n", timeout=30)
        try:
            result.update(_parse(out))
        except ValueError:
            raise RunError(f"requests/{system}: server gave no figures:\n{err[-4000:]}") from None
        return result
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


Task = tuple[str, str, Callable[[], Result]]


def build_tasks(plan: Plan, workloads: Sequence[str], systems: Sequence[str]) -> list[Task]:
    """Every (workload, system, run) in the order to run them: systems alternate within
    each repetition so that slow drifts of the machine's load hit all of them alike."""
    tasks: list[Task] = []
    for workload in workloads:
        params = getattr(plan, workload)
        names = (["none", *systems]) if workload == "requests" else list(systems)
        for _ in range(plan.reps[workload]):
            for system in names:
                if workload == "requests":
                    tasks.append((workload, system, _bind(run_requests, system, params, 120.0)))
                else:
                    fn = _bind_worker(workload, system, params, 600.0)
                    tasks.append((workload, system, fn))
    return tasks


def _bind(fn: Callable[..., Result], *args: Any) -> Callable[[], Result]:
    return lambda: fn(*args)


def _bind_worker(
    workload: str, system: str, params: dict[str, Any], timeout: float
) -> Callable[[], Result]:
    return lambda: run_worker(workload, system, params, timeout)


def run_plan(
    plan: Plan,
    workloads: Sequence[str],
    systems: Sequence[str],
    log: Callable[[str], None],
    save: Callable[[Results], None] | None = None,
) -> Results:
    """Run every task of the plan; ``save`` is called after each one (to keep partial runs)."""
    results = Results(plan, list(systems))
    tasks = build_tasks(plan, workloads, systems)
    total = len(tasks)
    done = 0

    def execute(task: Task) -> None:
        nonlocal done
        workload, system, fn = task
        began = time.perf_counter()
        try:
            result = fn()
        except (RunError, subprocess.TimeoutExpired, OSError) as exc:
            results.failures.append(f"{workload}/{system}: {exc}")
            done += 1
            log(f"[{done}/{total}] {workload} {system}: FAILED ({str(exc).splitlines()[0]})")
            return
        results.add(workload, system, result)
        if save is not None:
            save(results)
        done += 1
        log(f"[{done}/{total}] {workload} {system}: {time.perf_counter() - began:.1f}s")

    for workload in workloads:
        group = [task for task in tasks if task[0] == workload]
        width = plan.parallel.get(workload, 1)
        if width <= 1:
            for task in group:
                execute(task)
        else:
            with ThreadPoolExecutor(max_workers=width) as pool:
                list(pool.map(execute, group))
    return results


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import platform

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
