"""Fires sent to remote engines: ``python -m bench --only remote``.

Two workloads, each measured in a fresh process, with two engine worker processes
running (``bench/remote_tasks.py``); for the send workload, the workers run on a CPU apart
from the sender's (``_cpus``):

* **send**: 2,000 one-shot jobs due at one instant, sent to Celery (RabbitMQ, Redis
  results) or arq (Redis). Sends per second (from the due time to the last send
  answered), fires per second with their outcomes back (to the last outcome read), and the
  longest loop stall meanwhile.
* **lateness**: 500 entries firing every second for ``window`` seconds, each run writing
  down when it started on the worker. This package: start minus the fire's scheduled time
  (its key). Celery beat (``celery beat``, its own process, the same 500 entries): start
  minus the entry's grid (its first start plus whole seconds), since beat keeps no
  scheduled time; a beat entry that drifts shows as late. p50 and p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from .stats import Heartbeat, median, percentile, stalls

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("celery", "arq")
SEND_JOBS = 2000
LATENESS_ENTRIES = 500
WINDOW = 20.0
SETTLE = 3.0
MARKER = "REMOTE-RESULT "
Log = Callable[[str], None]


# ---------------------------------------------------------------- engine worker processes


def _env(queue: str, entries: int = 0) -> dict[str, str]:
    return {
        **os.environ,
        "BENCH_QUEUE": queue,
        "BENCH_BEAT_ENTRIES": str(entries),
        "PYTHONPATH": str(ROOT),
    }


def _cpus(apart: bool) -> tuple[set[int], set[int]]:
    """The CPUs the sending process (this package's app, or Celery beat) runs on, and those
    the engine's workers run on. ``apart`` (the send workload): the workers on the last CPU
    and the sender on the others, where the machine has more than one, as they would be in
    production (the workers are other hosts); sharing the CPUs, the workers' runs of the
    burst would take the app's CPU and show as its loop's stalls. Otherwise (lateness, which
    is measured on idle engine workers) all share all CPUs: on one CPU of their own, the
    workers could not keep up with 500 runs a second on this machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if not apart or len(cpus) < 2:
        return set(cpus), set(cpus)
    return set(cpus[:-1]), {cpus[-1]}


def _on(cpus: set[int]) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def start_workers(
    kind: str, queue: str, logs: Path, apart: bool = False
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for n in range(2):
        if kind == "celery":
            command = [sys.executable, "-m", "celery", "-A", "bench.remote_tasks", "worker"]
            command += ["-Q", queue, "--pool=prefork", "-c", "2", "-n", f"bench{n}@%h"]
            command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        else:
            command = [sys.executable, "-m", "arq", "bench.remote_tasks.ArqWorker"]
        log = (logs / f"{kind}-{n}.log").open("w")
        procs.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=_env(queue),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_on(_cpus(apart)[1]),
            )
        )
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cleanup(queue: str) -> None:
    import redis

    from . import remote_tasks

    client = redis.Redis.from_url(remote_tasks.REDIS)
    try:
        for pattern in (f"*{queue}*", "celery-task-meta-*bench-*", "arq:*bench-*"):
            keys = list(client.scan_iter(match=pattern, count=10_000))
            for i in range(0, len(keys), 5000):
                client.delete(*keys[i : i + 5000])
        keys = list(client.scan_iter(match="nexios-scheduler-start-*bench-*", count=10_000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    with remote_tasks.app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)


def stamps(queue: str) -> list[tuple[str, str, float]]:
    import redis

    from . import remote_tasks

    client = redis.Redis.from_url(remote_tasks.REDIS)
    try:
        rows = cast("list[bytes]", client.lrange(f"{queue}:stamps", 0, -1))
    finally:
        client.close()
    found = []
    for row in rows:
        task_id, label, at = row.decode().split("|")
        found.append((task_id, label, float(at)))
    return found


# ---------------------------------------------------------------- workloads (one process)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def _engine(kind: str, queue: str) -> Any:
    """The engine's executor, noting when each send was answered."""
    from nexios_contrib_scheduler.executors import ArqExecutor, CeleryExecutor

    from . import remote_tasks

    sent: list[float] = []

    class TimedCelery(CeleryExecutor):
        async def send(self, fire: Any) -> bool:
            answer = await super().send(fire)
            sent.append(time.time())
            return answer

    class TimedArq(ArqExecutor):
        async def send(self, fire: Any) -> bool:
            answer = await super().send(fire)
            sent.append(time.time())
            return answer

    if kind == "celery":
        engine: Any = TimedCelery(remote_tasks.app)  # outcomes read every 0.25 s: the default
    else:
        from arq.connections import RedisSettings

        settings = RedisSettings.from_dsn(remote_tasks.REDIS)
        engine = TimedArq(settings, queue_name=queue)
    engine.sent_at = sent
    return engine


async def _started(kind: str, queue: str, **job_defaults: Any) -> tuple[Any, Any]:
    """A started scheduler (memory store) sending to ``kind``, and its timed engine."""
    from nexios_contrib_scheduler import SchedulerConfig, SchedulerManager

    engine = _engine(kind, queue)
    defaults = {"misfire_grace_time": None, **job_defaults}
    config = SchedulerConfig(timezone="UTC", executors={kind: engine}, job_defaults=defaults)
    manager = SchedulerManager(config=config)
    await manager.start()
    return manager, engine


async def send_workload(kind: str, queue: str) -> dict[str, Any]:
    from nexios_contrib_scheduler import DateTimeTrigger

    manager, engine = await _started(kind, queue, max_instances=1, coalesce=True)
    task = "bench.noop" if kind == "celery" else "arq_noop"
    due = math.ceil(time.time() + 1.5)
    jobs = [
        manager.add_job(
            task, DateTimeTrigger(_utc(due)), id=f"bench-{uuid.uuid4().hex[:8]}-{i}", executor=kind
        )
        for i in range(SEND_JOBS)
    ]
    # Outcomes counted as they are recorded (reading 2,000 jobs' counters every few
    # milliseconds would be most of what the loop does meanwhile).
    succeeded: list[float] = []
    all_back = asyncio.Event()

    def back(event: Any) -> None:
        succeeded.append(time.time())
        if len(succeeded) >= SEND_JOBS:
            all_back.set()

    manager.add_listener(back, "job_succeeded")
    heartbeat = Heartbeat()
    heartbeat.start()
    await asyncio.sleep(max(0.0, due - 0.1 - time.time()))
    heartbeat.begin()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_back.wait(), 120)
    done_at = max(succeeded, default=time.time())
    result: dict[str, Any] = {**stalls(heartbeat)}
    heartbeat.stop()
    sent = engine.sent_at
    result["sent"] = len(sent)
    result["outcomes"] = sum(job.success_count for job in jobs)
    result["sends_per_s"] = len(sent) / (max(sent) - due) if sent else math.nan
    result["outcomes_per_s"] = result["outcomes"] / (done_at - due)
    await manager.shutdown()
    return result


async def lateness_workload(kind: str, queue: str) -> dict[str, Any]:
    """This package: 500 entries a second for ``WINDOW`` seconds, then the workers' stamps."""
    from nexios_contrib_scheduler import IntervalTrigger

    manager, _ = await _started(kind, queue, max_instances=5, coalesce=False)
    task = "bench.stamp" if kind == "celery" else "arq_stamp"
    start = math.ceil(time.time() + 1.0)
    for i in range(LATENESS_ENTRIES):
        manager.add_job(
            task,
            IntervalTrigger(
                seconds=1, start_now=False, start_date=_utc(start + i / LATENESS_ENTRIES)
            ),
            args=(f"entry-{i}",),
            id=f"bench-late-{i}",
            executor=kind,
        )
    await asyncio.sleep(start + SETTLE + WINDOW + 2 - time.time())
    await manager.shutdown()
    await asyncio.sleep(1)
    late = []
    for task_id, _, at in stamps(queue):
        _, _, micros = task_id.partition("@")
        if not micros.isdigit():
            continue
        scheduled = int(micros) / 1e6
        if start + SETTLE <= scheduled < start + SETTLE + WINDOW:
            late.append((at - scheduled) * 1000)
    return {"runs": len(late), "p50_ms": percentile(late, 50), "p99_ms": percentile(late, 99)}


def beat_lateness(queue: str, logs: Path) -> dict[str, Any]:
    """Celery beat holding the same entries, in its own process, for the same window."""
    schedule_file = logs / f"beat-schedule-{queue}"  # with the run's logs
    began = time.time()
    command = [sys.executable, "-m", "celery", "-A", "bench.remote_tasks", "beat"]
    command += ["-s", str(schedule_file), "--max-interval", "1", "-l", "warning"]
    beat = subprocess.Popen(
        command,
        cwd=ROOT,
        env=_env(queue, LATENESS_ENTRIES),
        stdout=(logs / "beat.log").open("w"),
        stderr=subprocess.STDOUT,
        preexec_fn=_on(_cpus(False)[0]),
    )
    try:
        time.sleep(1.0 + SETTLE + WINDOW + 2)
    finally:
        stop([beat])
    time.sleep(1)
    by_entry: dict[str, list[float]] = {}
    for _, label, at in stamps(queue):
        by_entry.setdefault(label, []).append(at)
    late = []
    window_start = began + 1.0 + SETTLE
    for starts in by_entry.values():
        starts.sort()
        first = starts[0]
        for k, at in enumerate(starts):  # the k-th run is due k seconds after the first
            if window_start <= at < window_start + WINDOW:
                late.append((at - (first + k)) * 1000)
    return {"runs": len(late), "p50_ms": percentile(late, 50), "p99_ms": percentile(late, 99)}


# ---------------------------------------------------------------- the runner


def _one(workload: str, kind: str, queue: str, logs: Path, log: Log) -> dict[str, Any]:
    apart = workload == "send"
    workers = start_workers(kind, queue, logs, apart)
    try:
        time.sleep(4)  # the workers connect
        if workload == "beat":
            return beat_lateness(queue, logs)
        began = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "bench.remote", workload, kind, queue],
            cwd=ROOT,
            env=_env(queue),
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=_on(_cpus(apart)[0]),
        )
        log(f"{workload} {kind}: {time.perf_counter() - began:.1f}s")
        for line in out.stdout.splitlines():
            if line.startswith(MARKER):
                return dict(json.loads(line[len(MARKER) :]))
        raise RuntimeError(f"{workload} {kind} gave no result:\n{out.stderr[-3000:]}")
    finally:
        stop(workers)
        cleanup(queue)


def run_remote(reps: int, log: Log) -> str:
    logs = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(reps):
        for workload, kind in (
            ("send", "celery"),
            ("send", "arq"),
            ("lateness", "celery"),
            ("lateness", "arq"),
            ("beat", "celery"),
        ):
            queue = f"nexios-bench-{uuid.uuid4().hex[:8]}"
            runs.setdefault((workload, kind), []).append(_one(workload, kind, queue, logs, log))
    return render(runs, reps)


def _m(runs: list[dict[str, Any]], key: str) -> float:
    return median([float(r[key]) for r in runs if isinstance(r.get(key), (int, float))])


def render(runs: dict[tuple[str, str], list[dict[str, Any]]], reps: int) -> str:
    lines = [
        f"Remote engines (medians of {reps} run(s))",
        "",
        "| figure | Celery (RabbitMQ, Redis results) | arq (Redis) |",
        "|---|---|---|",
    ]
    for label, key, unit in (
        ("2,000 due at once: sends/s", "sends_per_s", "/s"),
        ("2,000 due at once: fires/s with outcomes back", "outcomes_per_s", "/s"),
        ("2,000 due at once: longest loop stall", "stall", "ms"),
        ("2,000 due at once: longest stall outside collections", "stall_outside_gc", "ms"),
    ):
        cells = []
        for kind in ENGINES:
            value = _m(runs.get(("send", kind), []), key)
            cells.append(f"{value * 1000:.2f} ms" if unit == "ms" else f"{value:,.0f}{unit}")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    beat = runs.get(("beat", "celery"), [])
    for q in ("p50_ms", "p99_ms"):
        cells = []
        for kind in ENGINES:
            value = _m(runs.get(("lateness", kind), []), q)
            ratio = ""
            if kind == "celery" and beat:
                ratio = f" ({value / _m(beat, q):.2f}x Celery beat's {_m(beat, q):.1f} ms)"
            cells.append(f"{value:.1f} ms{ratio}")
        lines.append(f"| 500 entries a second: lateness {q[:3]} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    workload, kind, queue = argv
    import nexios  # noqa: F401  (an app's process has imported Nexios)

    call = send_workload if workload == "send" else lateness_workload
    result = asyncio.run(call(kind, queue))
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
