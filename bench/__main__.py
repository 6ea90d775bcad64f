"""``python -m bench [--quick] [--only burst,scale,...,persistent] [--systems ...]
[--stores sqlite,postgresql,redis] [--postgres URL] [--redis URL] [--json PATH]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .persistent_report import render_persistent
from .persistent_runner import PERSISTENT_FULL, PERSISTENT_QUICK, run_persistent
from .report import render
from .runner import FULL, QUICK, Results, machine, run_plan
from .stores import DEFAULT_POSTGRES, DEFAULT_REDIS, STORES
from .systems import SYSTEMS, available

WORKLOADS = ("burst", "scale", "memory", "cron", "requests", "persistent", "remote")


def _list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}"
        )
    return items


def _log(line: str) -> None:
    print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark this package against raw APScheduler 3 and nexios_contrib.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument(
        "--only",
        type=lambda t: _list(t, WORKLOADS, "workload"),
        default=list(WORKLOADS),
        help=f"comma-separated workloads ({', '.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--systems",
        type=lambda t: _list(t, SYSTEMS, "system"),
        default=list(SYSTEMS),
        help=f"comma-separated systems ({', '.join(SYSTEMS)})",
    )
    parser.add_argument(
        "--stores",
        type=lambda t: _list(t, STORES, "store"),
        default=list(STORES),
        help=f"persistent workloads: comma-separated stores ({', '.join(STORES)})",
    )
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server URL")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server URL")
    parser.add_argument("--reps", type=int, default=None, help="runs per figure (all workloads)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    pplan = PERSISTENT_QUICK if args.quick else PERSISTENT_FULL
    if args.reps is not None:
        if args.reps < 1:
            parser.error(f"--reps must be at least 1, got {args.reps}")
        plan.reps = {name: args.reps for name in plan.reps}
        pplan.reps = {name: args.reps for name in pplan.reps}
    systems = [s for s in args.systems if available(s)]
    for missing in sorted(set(args.systems) - set(systems)):
        print(f"{missing} is not installed here: left out", file=sys.stderr)

    began = time.perf_counter()
    json_path = args.json
    save = None if json_path is None else (lambda res: json_path.write_text(res.to_json()))
    in_memory = [name for name in args.only if name not in ("persistent", "remote")]
    results = (
        run_plan(plan, in_memory, systems, _log, save) if in_memory else Results(plan, systems)
    )
    if in_memory:
        print(render(results, machine()))
    if "persistent" in args.only:
        urls = {"postgresql": args.postgres, "redis": args.redis}
        persistent_began = time.perf_counter()
        run_persistent(pplan, args.stores, urls, results, _log, save)
        if in_memory:
            print()
        print(render_persistent(results, pplan, args.stores, machine()))
        print(f"\n(persistent stores: {time.perf_counter() - persistent_began:.0f} s)")
    if "remote" in args.only:
        from .remote import run_remote

        print(run_remote(args.reps or (1 if args.quick else 3), _log))
    print(f"\n(ran in {time.perf_counter() - began:.0f} s)")
    if json_path is not None:
        json_path.write_text(results.to_json())
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
