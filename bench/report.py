"""The comparison table, the targets and the notes, as Markdown."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cron import EXPRESSIONS, ZONES
from .runner import Results
from .stats import median
from .systems import LABELS, MAX_CONCURRENT_JOBS

REFERENCE = "apscheduler"


@dataclass
class Row:
    label: str
    value: Callable[[str], Any]  # system -> figure (float, str or None)
    unit: str  # "ms", "us", "bytes", "pct", "count", "rate", "x"


def _num(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


def _fmt(value: Any, unit: str) -> str:
    if isinstance(value, str):
        return value
    number = _num(value)
    if number is None:
        return "—"
    if unit == "ms":
        return _sig(number * 1e3) + " ms"
    if unit == "us":
        return _sig(number * 1e6) + " µs"
    if unit == "bytes":
        return f"{number:,.0f} B"
    if unit == "pct":
        return f"{number * 100:.2f} %"
    if unit == "count":
        return f"{number:,.0f}"
    if unit == "rate":
        return f"{number:,.0f}/s"
    if unit == "x":
        return f"{number:.2f}x"
    return _sig(number)


def _sig(number: float) -> str:
    if number == 0:
        return "0"
    magnitude = abs(number)
    if magnitude >= 100:
        return f"{number:,.0f}"
    if magnitude >= 10:
        return f"{number:.1f}"
    if magnitude >= 1:
        return f"{number:.2f}"
    return f"{number:.3f}"


def _ratio(value: Any, reference: Any) -> str:
    a, b = _num(value), _num(reference)
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}x"


class Figures:
    """Medians over repetitions, by workload, system and key."""

    def __init__(self, results: Results) -> None:
        self.results = results

    def get(self, workload: str, system: str, key: str) -> Any:
        runs = self.results.runs.get(workload, {}).get(system, [])
        values = [run.get(key) for run in runs]
        texts = [v for v in values if isinstance(v, str)]
        numbers = [n for n in map(_num, values) if n is not None]
        if numbers:
            return median(numbers)
        return texts[0] if texts else None

    def ratio(self, workload: str, system: str, top: str, bottom: str) -> float | None:
        a = _num(self.get(workload, system, top))
        b = _num(self.get(workload, system, bottom))
        return None if a is None or b is None or b == 0 else a / b


def rows(figures: Figures) -> list[Row | str]:
    plan = figures.results.plan
    burst, scale, req = plan.burst, plan.scale, plan.requests
    out: list[Row | str] = []

    def metric(workload: str, key: str) -> Callable[[str], Any]:
        return lambda system: figures.get(workload, system, key)

    n_burst = f"{burst['jobs']:,}"
    out.append(f"Burst: {n_burst} one-shot jobs due at the same instant")
    out += [
        Row("start lateness p50", metric("burst", "late_p50"), "ms"),
        Row("start lateness p99", metric("burst", "late_p99"), "ms"),
        Row("start lateness max", metric("burst", "late_max"), "ms"),
        Row("longest loop stall (loop busy)", metric("burst", "stall_busy"), "ms"),
        Row("longest loop stall (wall clock)", metric("burst", "stall"), "ms"),
        Row("CPU per fire", metric("burst", "cpu_per_fire"), "us"),
        Row("fires", metric("burst", "fires"), "count"),
    ]
    n_scale = f"{scale['jobs']:,}"
    out.append(f"Scale: {n_scale} interval jobs (1-2 h) added to a running scheduler")
    out += [
        Row("jobs added per second", metric("scale", "adds_per_s"), "rate"),
        Row("memory per idle job (tracemalloc)", metric("memory", "bytes_per_job"), "bytes"),
        Row(f"idle CPU over {scale['idle']:g} s (one core)", metric("scale", "idle_cpu"), "pct"),
    ]
    firing, window = scale["firing"], scale["window"]
    out.append(f"Steady load: {firing} jobs firing every second, {window:g} s")
    for prefix, count in (("few", scale["few"]), ("many", scale["jobs"])):
        with_jobs = f"with {count:,} jobs"
        out += [
            Row(f"lateness p99, {with_jobs}", metric("scale", f"{prefix}_late_p99"), "ms"),
            Row(f"CPU per fire, {with_jobs}", metric("scale", f"{prefix}_cpu_per_fire"), "us"),
            Row(
                f"longest stall (busy), {with_jobs}", metric("scale", f"{prefix}_stall_busy"), "ms"
            ),
            Row(f"fires in the window, {with_jobs}", metric("scale", f"{prefix}_fires"), "count"),
        ]
    out.append(
        Row(
            f"CPU per fire, {scale['jobs']:,} ÷ {scale['few']:,} jobs",
            lambda s: figures.ratio("scale", s, "many_cpu_per_fire", "few_cpu_per_fire"),
            "x",
        )
    )
    out.append("Cron: time per next-fire computation (successive fires from 2026-03-01)")
    for expr in EXPRESSIONS:
        for zone in ZONES:
            out.append(Row(f"`{expr}` {zone}", metric("cron", f"{expr} | {zone}"), "us"))
    base50 = _fmt(figures.get("requests", "none", "p50"), "ms")
    base99 = _fmt(figures.get("requests", "none", "p99"), "ms")
    out.append(
        f"Requests: GET of a trivial endpoint at {req['rate']:g}/s for {req['duration']:g} s, "
        f"with {req['fires']:,} fires/s (no scheduler: p50 {base50}, p99 {base99})"
    )
    out += [
        Row("latency p50", metric("requests", "p50"), "ms"),
        Row("latency p99", metric("requests", "p99"), "ms"),
        Row(
            "p99 ÷ no-scheduler p99",
            lambda s: _div(
                figures.get("requests", s, "p99"), figures.get("requests", "none", "p99")
            ),
            "x",
        ),
        Row("fires per second achieved", metric("requests", "fires_per_s"), "rate"),
    ]
    return out


def _div(a: Any, b: Any) -> float | None:
    x, y = _num(a), _num(b)
    return None if x is None or y is None or y == 0 else x / y


def table(figures: Figures) -> str:
    systems = figures.results.systems
    header = ["Workload / figure"]
    for system in systems:
        header.append(LABELS[system])
        if system != REFERENCE and REFERENCE in systems:
            header.append("÷ APS")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows(figures):
        if isinstance(row, str):
            lines.append(f"| **{row}** |" + " |" * (len(header) - 1))
            continue
        cells = [row.label]
        reference = row.value(REFERENCE) if REFERENCE in systems else None
        for system in systems:
            value = row.value(system)
            cells.append(_fmt(value, row.unit))
            if system != REFERENCE and REFERENCE in systems:
                cells.append("" if row.unit == "x" else _ratio(value, reference))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(figures: Figures) -> list[tuple[bool | None, str]]:
    """Each target of this package, held or not (``None``: not measured in this run)."""
    plan = figures.results.plan
    get = figures.get
    out: list[tuple[bool | None, str]] = []

    def check(ok: bool | None, text: str) -> None:
        out.append((ok, text))

    def both(a: Any, b: Any) -> tuple[float, float] | None:
        x, y = _num(a), _num(b)
        return None if x is None or y is None else (x, y)

    pair = both(get("burst", "this", "late_p99"), get("burst", REFERENCE, "late_p99"))
    check(
        None if pair is None else pair[0] <= pair[1] / 2,
        "burst p99 lateness at most half of raw APScheduler's"
        + ("" if pair is None else f": {_fmt(pair[0], 'ms')} vs {_fmt(pair[1], 'ms')}"),
    )
    stall = _num(get("burst", "this", "stall_busy"))
    check(
        None if stall is None else stall <= 0.010,
        "burst longest loop stall (loop busy) at most 10 ms"
        + ("" if stall is None else f": {_fmt(stall, 'ms')}"),
    )
    adds = _num(get("scale", "this", "adds_per_s"))
    check(
        None if adds is None else adds >= 20_000,
        f"at least 20,000 adds/s with {plan.scale['jobs']:,} jobs"
        + ("" if adds is None else f": {_fmt(adds, 'rate')}"),
    )
    mem = _num(get("memory", "this", "bytes_per_job"))
    check(
        None if mem is None else mem <= 1500,
        "at most 1.5 KB per idle job" + ("" if mem is None else f": {_fmt(mem, 'bytes')}"),
    )
    idle = _num(get("scale", "this", "idle_cpu"))
    check(
        None if idle is None else idle < 0.01,
        f"idle CPU under 1 % with {plan.scale['jobs']:,} jobs"
        + ("" if idle is None else f": {_fmt(idle, 'pct')}"),
    )
    growth = figures.ratio("scale", "this", "many_cpu_per_fire", "few_cpu_per_fire")
    check(
        None if growth is None else growth <= 1.2,
        "steady CPU per fire with many jobs at most 1.2x that with few"
        + ("" if growth is None else f": {growth:.2f}x"),
    )
    cron_values = [_num(get("cron", "this", f"{e} | {z}")) for e in EXPRESSIONS for z in ZONES]
    worst = None if any(v is None for v in cron_values) else max(v for v in cron_values if v)
    check(
        None if worst is None else worst <= 50e-6,
        "cron next-fire at most 50 µs for every expression"
        + ("" if worst is None else f": slowest {_fmt(worst, 'us')}"),
    )
    with_fires = _div(get("requests", "this", "p99"), get("requests", "none", "p99"))
    check(
        None if with_fires is None else with_fires <= 1.2,
        "request p99 with fires at most 1.2x the no-scheduler p99"
        + ("" if with_fires is None else f": {with_fires:.2f}x"),
    )
    overhead = _div(get("burst", "this", "cpu_per_fire"), get("burst", REFERENCE, "cpu_per_fire"))
    check(
        None if overhead is None else overhead <= 1.1,
        "CPU per fire on the burst at most 1.1x raw APScheduler's"
        + ("" if overhead is None else f": {overhead:.2f}x"),
    )
    return out


def notes(results: Results) -> list[str]:
    plan = results.plan
    return [
        f"Every figure is the median of {_reps(plan.reps)} runs, each in a fresh process; "
        "÷ APS is the figure divided by raw APScheduler's.",
        f"This package: SchedulerConfig(max_concurrent_jobs={MAX_CONCURRENT_JOBS:,}, "
        "job_defaults={max_instances: 1, coalesce: True, misfire_grace_time: None}), "
        "its default (in-memory) job store.",
        "Raw APScheduler: AsyncIOScheduler with its default MemoryJobStore and AsyncIOExecutor, "
        "the same job defaults, DateTrigger / IntervalTrigger / CronTrigger.from_crontab "
        "(weekdays by name; an OrTrigger where Debian cron ORs the day fields).",
        "nexios_contrib: its defaults (1 s polling tick, misfire_grace_time 30 s); its "
        "interval jobs count from the previous start, so its lateness is measured against "
        "its own next_run_time. Its cron ignores time zones (n/a) and searches one year.",
        "Loggers of all three at WARNING. Lateness = call time of the job function minus its "
        "due time. Loop stall: a 1 ms timer callback; 'loop busy' counts only the CPU time "
        "the loop thread spent during the delay (the machine is shared, so the wall-clock "
        "figure also holds time the process was descheduled).",
        "CPU per fire: process CPU time divided by the fires. Burst: over the burst, less "
        "the heartbeat's own CPU (measured before the scheduler starts). Steady load: over "
        f"{plan.scale['cpu_window']:g} s right after the window, with the heartbeat stopped.",
        "Idle CPU: process CPU over the idle window without the heartbeat running.",
        "A full garbage collection runs before each measured window, so that none owed to "
        "the set-up (imports, adding the jobs) falls inside it.",
        "Requests: uvicorn (h11, asyncio loop) serving a Nexios app in its own process; an "
        "open-loop load generator in another process on loopback; latency counted from when "
        "each request was due to be sent. The jobs' phases are spread over the second.",
    ]


def _reps(reps: dict[str, int]) -> str:
    values = sorted(set(reps.values()))
    if len(values) == 1:
        return str(values[0])
    return ", ".join(f"{k} {v}" for k, v in reps.items())


def render(results: Results, machine: dict[str, str]) -> str:
    figures = Figures(results)
    parts = [
        f"Benchmark ({results.plan.name} run) on {machine['cpus']} CPU(s), {machine['cpu']}, "
        f"Python {machine['python']}, {machine['platform']}",
        "",
        table(figures),
        "",
        "Targets (this package):",
    ]
    for ok, text in targets(figures):
        mark = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        parts.append(f"- [{mark}] {text}")
    parts += ["", "Notes:"]
    parts += [f"- {note}" for note in notes(results)]
    if results.failures:
        parts += ["", "Failed runs:"]
        parts += [f"- {line.splitlines()[0]}" for line in results.failures]
    return "\n".join(parts)
