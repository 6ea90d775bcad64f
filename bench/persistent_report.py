"""The persistent-store table, its targets and notes, as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .persistent_runner import PersistentPlan
from .report import _fmt, _num, _ratio
from .runner import Results
from .stats import median
from .stores import STORE_LABELS

THIS, RAW = "this", "apscheduler"
Row = tuple[str, str, str, dict[str, Any], str]  # label, workload, key, match, unit


class PFigures:
    """Medians over a step's runs; a cut run makes the figure its cut (``"> 40 s"``)."""

    def __init__(self, results: Results) -> None:
        self.results = results

    def get(self, workload: str, pair: str, key: str, **match: Any) -> Any:
        runs = [
            run
            for run in self.results.runs.get(workload, {}).get(pair, [])
            if all(run.get(k) == v for k, v in match.items())
        ]
        if not runs:
            return None
        cut = next((run["cut"] for run in runs if "cut" in run), None)
        if cut is not None:
            return cut
        values = [run.get(key) for run in runs]
        numbers = [n for n in map(_num, values) if n is not None]
        if numbers:
            return median(numbers)
        texts = [v for v in values if isinstance(v, str)]
        return texts[0] if texts else None


def _store_rows(plan: PersistentPlan, store: str) -> list[Row | str]:
    small, idle, large = (plan.sizes[k] for k in ("small", "idle", "large"))
    adds, burst = plan.adds, plan.burst
    label = STORE_LABELS[store]
    rows: list[Row | str] = [f"{label}"]
    for size in (small, idle, large):
        rows.append((f"fill to {size:,} jobs", "p_fill", "fill_s", {"size": size}, "s"))
    rows.append(
        (f"start-up with {large:,} jobs stored", "p_probe", "start_s", {"size": large}, "s")
    )
    rows.append((f"idle CPU with {idle:,} jobs (one core)", "p_idle", "idle_cpu", {}, "pct"))
    every = plan.standby.get("read_every", 2.0)
    rows.append(
        (
            f"CPU with {idle:,} jobs, runs elsewhere, read every {every:g} s (one core)",
            "p_standby",
            "standby_cpu",
            {},
            "pct",
        )
    )
    for mark in adds["checkpoints"]:
        rows.append((f"adds/s at {mark:,} jobs", "p_adds", f"adds_per_s_at_{mark}", {}, "rate"))
    rows.append(
        (f"adds/s until all {adds['jobs']:,} are written", "p_adds", "durable_per_s", {}, "rate")
    )
    for size in (small, large):
        rows += [
            (f"get_jobs(), {size:,} jobs", "p_probe", "get_jobs_s", {"size": size}, "ms"),
            (f"get_job, {size:,} jobs", "p_probe", "get_job_s", {"size": size}, "ms"),
            (f"admin list first page, {size:,} jobs", "p_probe", "admin_s", {"size": size}, "ms"),
            (
                f"jobs on that page, {size:,} jobs",
                "p_probe",
                "admin_items",
                {"size": size},
                "count",
            ),
        ]
    n_burst = f"{burst['jobs']:,}"
    rows += [
        (f"burst of {n_burst}: runs", "p_burst", "runs", {}, "count"),
        (f"burst of {n_burst}: duplicates", "p_burst", "duplicates", {}, "count"),
        (f"burst of {n_burst}: start lateness p99", "p_burst", "late_p99", {}, "ms"),
        (f"longest loop stall: adding {adds['jobs']:,} jobs", "p_adds", "stall", {}, "ms"),
        *_gc_rows(f"adding {adds['jobs']:,} jobs", "p_adds", "stall"),
        (
            f"longest loop stall: listing {large:,} jobs",
            "p_probe",
            "stall_list",
            {"size": large},
            "ms",
        ),
        *_gc_rows(f"listing {large:,} jobs", "p_probe", "stall_list", {"size": large}),
        (f"longest loop stall: burst of {n_burst}", "p_burst", "stall", {}, "ms"),
        *_gc_rows(f"burst of {n_burst}", "p_burst", "stall"),
    ]
    if store == "redis":
        rows += [
            ("longest loop stall: store restart", "p_restart", "stall", {}, "ms"),
            *_gc_rows("store restart", "p_restart", "stall"),
            ("first fire after the restart", "p_restart", "resumed_s", {}, "s"),
        ]
    if store == "postgresql":
        fires = plan.fires
        head = f"{fires['jobs']} fires/s for {fires['window']:g} s"
        rows += [
            (f"{head}: lateness p99", "p_fires", "late_p99", {}, "ms"),
            (f"{head}: fires in the window", "p_fires", "fires", {}, "count"),
            (f"{head}: duplicates", "p_fires", "duplicates", {}, "count"),
            (f"{head}: gaps", "p_fires", "gaps", {}, "count"),
            (f"{head}: longest loop stall", "p_fires", "stall", {}, "ms"),
        ]
    return rows


def _gc_rows(what: str, workload: str, key: str, match: dict[str, Any] | None = None) -> list[Row]:
    """The stall's two parts: the longest garbage collection in the window, and the
    longest stall outside collections (what the code did)."""
    match = match or {}
    return [
        (f"longest garbage collection: {what}", workload, f"{key}_gc", match, "ms"),
        (f"longest stall outside collections: {what}", workload, f"{key}_outside_gc", match, "ms"),
    ]


def _memory_rows(plan: PersistentPlan) -> list[Row | str]:
    n = f"{plan.burst['jobs']:,}"
    return [
        "Memory (the burst's reference)",
        (f"burst of {n}: runs", "p_burst", "runs", {}, "count"),
        (f"burst of {n}: start lateness p99", "p_burst", "late_p99", {}, "ms"),
        (f"longest loop stall: burst of {n}", "p_burst", "stall", {}, "ms"),
        *_gc_rows(f"burst of {n}", "p_burst", "stall"),
    ]


def _cell(value: Any, unit: str) -> str:
    if unit == "s" and _num(value) is not None:
        return _fmt(value, "") + " s"
    return _fmt(value, unit)


def persistent_table(results: Results, plan: PersistentPlan, stores: Sequence[str]) -> str:
    figures = PFigures(results)
    header = "| Persistent stores / figure | this package | ÷ APS | APScheduler 3 (raw) |"
    lines = [header, "|---|---|---|---|"]
    sections = [(store, _store_rows(plan, store)) for store in stores]
    sections.append(("memory", _memory_rows(plan)))
    for store, rows in sections:
        for row in rows:
            if isinstance(row, str):
                lines.append(f"| **{row}** | | | |")
                continue
            label, workload, key, match, unit = row
            this = figures.get(workload, f"{THIS}@{store}", key, **match)
            raw = figures.get(workload, f"{RAW}@{store}", key, **match)
            ratio = _ratio(this, raw) if unit in ("ms", "s", "rate", "pct") else ""
            lines.append(f"| {label} | {_cell(this, unit)} | {ratio} | {_cell(raw, unit)} |")
    return "\n".join(lines)


def persistent_targets(
    results: Results, plan: PersistentPlan, stores: Sequence[str]
) -> list[tuple[bool | None, str]]:
    """The targets of the persistent stores, held or not (None: not measured)."""
    get = PFigures(results).get
    small, idle, large = (plan.sizes[k] for k in ("small", "idle", "large"))
    top = max(plan.adds["checkpoints"])
    out: list[tuple[bool | None, str]] = []

    def check(value: Any, ok: Any, text: str, unit: str) -> None:
        number = _num(value)
        shown = "" if value is None else f": {_cell(value, unit)}"
        if isinstance(value, str) and value.startswith("not run"):
            value = None  # not measured: a step it needed was cut
        out.append(
            (None if value is None else (number is not None and bool(ok(number))), text + shown)
        )

    for store in stores:
        pair, label = f"{THIS}@{store}", STORE_LABELS[store]
        check(
            get("p_idle", pair, "idle_cpu"),
            lambda v: v < 0.01,
            f"{label}: idle CPU under 1 % with {idle:,} jobs",
            "pct",
        )
        check(
            get("p_adds", pair, f"adds_per_s_at_{top}"),
            lambda v: v >= 5000,
            f"{label}: at least 5,000 adds/s at {top:,} jobs",
            "rate",
        )
        this = get("p_probe", pair, "get_jobs_s", size=small)
        raw = get("p_probe", f"{RAW}@{store}", "get_jobs_s", size=small)
        half = _num(raw)
        check(
            this,
            lambda v, half=half: half is not None and v <= half / 2,
            f"{label}: get_jobs() at most half of raw APScheduler's with {small:,} jobs (raw {_cell(raw, 'ms')})",
            "ms",
        )
        check(
            get("p_probe", pair, "get_jobs_s", size=large),
            lambda v: v < 0.1,
            f"{label}: get_jobs() under 100 ms with {large:,} jobs",
            "ms",
        )
        check(
            get("p_probe", pair, "get_job_s", size=large),
            lambda v: v < 0.001,
            f"{label}: get_job under 1 ms with {large:,} jobs",
            "ms",
        )
        check(
            get("p_probe", pair, "admin_s", size=large),
            lambda v: v < 0.1,
            f"{label}: admin list first page under 100 ms with {large:,} jobs",
            "ms",
        )
        stalls = [
            ("adding", get("p_adds", pair, "stall")),
            ("listing", get("p_probe", pair, "stall_list", size=large)),
            ("burst", get("p_burst", pair, "stall")),
        ]
        if store == "redis":
            stalls.append(("restart", get("p_restart", pair, "stall")))
        for what, value in stalls:
            check(
                value,
                lambda v: v <= 0.010,
                f"{label}: longest loop stall at most 10 ms, {what}",
                "ms",
            )
    if "postgresql" in stores:
        pg = f"{THIS}@postgresql"
        n = plan.burst["jobs"]
        check(
            get("p_burst", pg, "runs"),
            lambda v: v == n,
            f"PostgreSQL burst: all {n:,} run",
            "count",
        )
        check(
            get("p_burst", pg, "duplicates"),
            lambda v: v == 0,
            "PostgreSQL burst: no duplicate",
            "count",
        )
        mem = _num(get("p_burst", f"{THIS}@memory", "late_p99"))
        check(
            get("p_burst", pg, "late_p99"),
            lambda v: mem is not None and v <= 2 * mem,
            "PostgreSQL burst: p99 lateness at most 2x the memory store's",
            "ms",
        )
        check(
            get("p_fires", pg, "late_p99"),
            lambda v: v < 0.05,
            "PostgreSQL steady fires: lateness p99 under 50 ms",
            "ms",
        )
        check(
            get("p_fires", pg, "duplicates"),
            lambda v: v == 0,
            "PostgreSQL steady fires: no duplicate",
            "count",
        )
        check(
            get("p_fires", pg, "gaps"), lambda v: v == 0, "PostgreSQL steady fires: no gap", "count"
        )
    return out


def persistent_notes(plan: PersistentPlan) -> list[str]:
    reps = ", ".join(f"{k} {v}" for k, v in plan.reps.items())
    limits = ", ".join(f"{k} {v:g} s" for k, v in plan.limits.items())
    return [
        f"Medians of {reps} runs, each in a fresh process; a run cut at its time limit "
        "shows as '> N s' (and the steps of its chain that needed it as 'not run'). "
        f"Limits: {limits}; adds stop after {plan.adds['limit']:g} s.",
        "This package: jobstore and coordination on the store (a lock file for SQLite), "
        "job_defaults {max_instances: 1, coalesce: True, misfire_grace_time: None}. Raw "
        "APScheduler: AsyncIOScheduler with its own SQLAlchemyJobStore / RedisJobStore under "
        "the same namespace, the same job defaults, no coordination (it has none).",
        "Fill: this package declares the jobs before start() (its fastest public path); raw "
        "APScheduler's rows are written in bulk in its own format. A chain fills one "
        "namespace to each size in turn and measures in between.",
        "get_jobs()/get_job/admin list: medians of a few calls in a started scheduler. "
        f"Admin list: GET of the first page (limit={50}) through the app's ASGI interface "
        "(httpx ASGITransport); raw APScheduler: a Nexios route slicing get_jobs(). "
        "'jobs on that page' shows whether the list was paged.",
        f"Idle CPU: process CPU over {plan.idle['window']:g} s, after start-up and "
        f"{plan.idle['settle']:g} s more (the full run waits past the package's 10 s resync; "
        "its heartbeats come every lease_seconds / 2 = 5 s, SQLite change polling every "
        "0.25 s). Raw APScheduler has no periodic work but its wake-ups.",
        f"Runs elsewhere: process CPU over {plan.standby.get('window', 0):g} s of a "
        "scheduler whose jobs are read (get_jobs()) every "
        f"{plan.standby.get('read_every', 0):g} s, as a dashboard reads them, after "
        f"{plan.standby.get('settle', 0):g} s. This package: a standby worker, its leader in "
        "another process running one job a second (each run writes run state and notifies "
        "the standby). Raw APScheduler (no standby): the scheduler itself runs that job.",
        "Adds: jobs added to a running scheduler on an empty store, "
        f"{plan.adds['batch']} between yields; adds/s over the {plan.adds['window']:,} "
        "adds ending at each count.",
        "Loop stall: the longest lateness (wall clock) of a 1 ms heartbeat callback on the "
        "loop; a blocking store call counts whole. Burst: one-shots due at one whole second "
        "set after timing a few adds; lateness = first call minus due time. Longest "
        "garbage collection: the longest single collection of the interpreter's cycle "
        "collector in the same window (gc.callbacks); it holds the interpreter's lock, so "
        "it stalls the loop whichever thread set it off. Longest stall outside "
        "collections: each beat's lateness less the collections since the beat before.",
        "Steady fires: interval jobs of 1 s; scheduled times from current_fire() (this "
        "package) and the submission events (raw APScheduler); a gap is a fire due in the "
        "window that did not run.",
        "Store restart: a private redis-server on its own port (append-only file, so no "
        "data is lost) stopped with SIGTERM and started again; PostgreSQL is not restarted.",
    ]


def render_persistent(
    results: Results, plan: PersistentPlan, stores: Sequence[str], machine: dict[str, str]
) -> str:
    parts = [
        f"Persistent stores ({plan.name} run) on {machine['cpus']} CPU(s), {machine['cpu']}, "
        f"Python {machine['python']}",
        "",
        persistent_table(results, plan, stores),
        "",
        "Targets (this package, persistent stores):",
    ]
    for ok, text in persistent_targets(results, plan, stores):
        mark = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        parts.append(f"- [{mark}] {text}")
    parts += ["", "Notes:"]
    parts += [f"- {note}" for note in persistent_notes(plan)]
    return "\n".join(parts)
