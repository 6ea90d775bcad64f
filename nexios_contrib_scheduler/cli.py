"""The ``nexios-scheduler`` command (also ``python -m nexios_contrib_scheduler``).

``demo`` serves the demo app, ``cron`` explains a crontab expression and lists its next fire
times, ``jobs`` lists the jobs a Nexios app declares without serving it. Results go to
stdout, errors to stderr with a non-zero exit code (2 for bad input).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import shutil
import sys
import unicodedata
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, TextIO

from . import __version__
from .config import resolve_timezone, zone_label
from .cron import CronSyntaxError
from .errors import ConfigError, SchedulerError
from .integration import get_scheduler
from .jobs import ScheduledJob
from .triggers import CronTrigger

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

_ELLIPSIS = "…"
_MIN_COLUMN = 4

# Fire times are whole minutes between these instants: the first minute after the earliest
# datetime, and the latest datetime.
_FIRST_START = datetime(1, 1, 1, 0, 1, tzinfo=timezone.utc)
_LAST_START = datetime.max.replace(tzinfo=timezone.utc)
_RANGE = "0001-01-01 00:01 to 9999-12-31 23:59 UTC"


class CommandError(Exception):
    """A problem to report on stderr, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- tables


def printable(text: str, keep: str = "") -> str:
    """``text`` with control and format characters shown as escapes (``\\x1b``, ``\\u202e``).

    Job names come from the app's code or from its users; raw, an ANSI sequence or a
    bidirectional override in one would restyle the terminal or reorder what it shows.
    Characters in ``keep`` stay as they are.
    """
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c)[0] == "C" and c not in keep
        else c
        for c in text
    )


def _fit(cell: str, width: int) -> str:
    if len(cell) <= width:
        return cell
    return cell[: max(width - 1, 0)] + _ELLIPSIS if width > 0 else ""


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    keep: Sequence[int] = (),
) -> str:
    """Lay ``rows`` out under ``headers`` in at most ``width`` characters per line.

    Columns are separated by two spaces. When the table is too wide, the widest column is
    narrowed first (columns listed in ``keep`` only once no other can give way), and its
    cells end with an ellipsis.
    """
    cells = [[printable(" ".join(str(c).split())) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    gap = 2
    budget = width - gap * (len(headers) - 1)
    for candidates in ([i for i in range(len(widths)) if i not in keep], range(len(widths))):
        while sum(widths) > budget:
            shrinkable = [i for i in candidates if widths[i] > _MIN_COLUMN]
            if not shrinkable:
                break
            widths[max(shrinkable, key=lambda i: widths[i])] -= 1
    lines = []
    for row in [list(headers), ["-" * w for w in widths], *cells]:
        line = (" " * gap).join(_fit(c, w).ljust(w) for c, w in zip(row, widths, strict=True))
        lines.append(line.rstrip())
    return "\n".join(lines)


def _terminal_width() -> int:
    """The terminal's width; unlimited when the output goes to a file or a pipe."""
    if "COLUMNS" not in os.environ and not sys.stdout.isatty():
        return sys.maxsize
    return shutil.get_terminal_size((100, 24)).columns


# ---------------------------------------------------------------- cron


def _parse_from(text: str, tz: tzinfo) -> datetime:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"--from {text!r} is not an ISO 8601 date-time; "
            "use e.g. 2026-03-29T00:30 or 2026-03-29T00:30:00+02:00",
            EXIT_USAGE,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    _check_in_range(text, when, tz)
    return when


def _check_in_range(text: str, when: datetime, tz: tzinfo) -> None:
    """Refuse a start whose instant is outside the range fire times are computed in."""
    try:
        early, late = when.astimezone(timezone.utc) < _FIRST_START, False
    except OverflowError:  # the instant in UTC falls before year 1 or after year 9999
        early = when.year == 1
        late = not early
    if not (early or late):
        return
    side, bound, way = (
        ("before", _FIRST_START, "later") if early else ("after", _LAST_START, "earlier")
    )
    message = (
        f"--from {text!r} ({when.isoformat(sep=' ')}) is {side} the range fire times are "
        f"computed in, {_RANGE}"
    )
    try:
        exact = bound.astimezone(tz).replace(tzinfo=None)
    except OverflowError:
        raise CommandError(message, EXIT_USAGE) from None
    local = exact.replace(second=0, microsecond=0)
    if early and local < exact:
        local += timedelta(minutes=1)
    advice = local.isoformat(timespec="minutes")
    raise CommandError(f"{message}: use --from {advice} or {way}", EXIT_USAGE)


def _zone(name: str | None) -> tzinfo:
    if name is None:
        return timezone.utc
    try:
        return resolve_timezone(name)
    except ConfigError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


def cmd_cron(args: argparse.Namespace, out: TextIO) -> int:
    tz = _zone(args.tz)
    try:
        trigger = CronTrigger(args.expr, timezone=tz)
    except CronSyntaxError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    start = _parse_from(args.start, tz) if args.start else datetime.now(tz)
    times = trigger.next_fire_times(args.n, start)
    out.write(f"{trigger.expr}: {trigger.describe()}\n")
    if not times:
        since = start.isoformat(sep=" ", timespec="seconds")
        out.write(f"\nNo fire time found from {since}: dates run out after the year 9999.\n")
        return EXIT_OK
    since = start.isoformat(sep=" ", timespec="seconds")
    out.write(f"\nNext {len(times)} fire time(s) from {since}:\n\n")
    in_utc = zone_label(tz) != "UTC"
    rows = []
    for i, when in enumerate(times, 1):
        row = [str(i), when.isoformat(sep=" "), f"{when:%A}"]
        if in_utc:
            row.append(when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        rows.append(row)
    headers = ["#", f"time ({zone_label(tz)})", "weekday", "in UTC"][: len(rows[0])]
    out.write(format_table(headers, rows, _terminal_width(), keep=(0, 1)) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------- jobs


def load_app(target: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted) from the current directory or sys.path."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CommandError(
            f"APP must look like module:attr (for example myproject.main:app), got {target!r}",
            EXIT_USAGE,
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except SystemExit as exc:
        raise CommandError(f"importing {module_name!r} called {_exit_call(exc)}") from None
    except ImportError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise CommandError(
                f"cannot import module {module_name!r}: {exc} (run the command from the "
                "directory that holds it, or install it)"
            ) from None
        raise CommandError(f"importing {module_name!r} failed: {exc!r}") from exc
    except Exception as exc:
        raise CommandError(f"importing {module_name!r} failed: {exc!r}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CommandError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isfunction(obj):  # an app factory, as in create_app (async def too)
        try:
            obj = obj()
            if inspect.isawaitable(obj):
                obj = asyncio.run(_result(obj))
        except SystemExit as exc:
            raise CommandError(
                f"calling {target} to build the app called {_exit_call(exc)}"
            ) from None
        except Exception as exc:
            raise CommandError(f"calling {target} to build the app failed: {exc!r}") from exc
    return obj


async def _result(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _exit_call(exc: SystemExit) -> str:
    return "sys.exit()" if exc.code is None else f"sys.exit({exc.code!r})"


def _options(job: ScheduledJob) -> str:
    data = job.to_dict()
    parts = [
        f"max_instances={job.max_instances}",
        f"misfire_grace_time={_number(job.misfire_grace_time)}",
        f"coalesce={job.coalesce}",
    ]
    # Options some versions add; shown only when set.
    for key in ("timeout", "max_runs", "pause_on_failure"):
        value = data.get(key)
        if value not in (None, False):
            parts.append(f"{key}={_number(value)}")
    return " ".join(parts)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def cmd_jobs(args: argparse.Namespace, out: TextIO) -> int:
    app = load_app(args.app)
    try:
        manager = get_scheduler(app)
    except SchedulerError:
        raise CommandError(
            f"{args.app} has no scheduler: call setup_scheduler(app) when building it"
        ) from None
    jobs = manager.get_jobs()
    if not jobs:
        out.write(f"{args.app} declares no jobs\n")
        return EXIT_OK
    tz = manager.config.tzinfo
    rows = []
    for job in jobs:
        nxt = job.next_run_time
        rows.append(
            [
                job.id,
                job.name,
                job.trigger.describe(),
                "-" if nxt is None else f"{nxt.astimezone(tz):%Y-%m-%d %H:%M:%S}",
                job.status.value,
                _options(job),
            ]
        )
    headers = ["id", "name", "trigger", f"next fire ({zone_label(tz)})", "status", "options"]
    out.write(format_table(headers, rows, _terminal_width(), keep=(0, 3, 4)) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    try:
        import uvicorn
    except ImportError:
        raise CommandError(
            "the demo needs uvicorn: pip install 'nexios-contrib-scheduler[demo]'"
        ) from None
    from .demo import create_app

    try:
        app = create_app(jobstore=args.jobstore)
    except (ValueError, TypeError) as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out.write(
        f"demo app on http://{args.host}:{args.port}/jobs, dashboard at "
        f"http://{args.host}:{args.port}/scheduler/ (Ctrl+C to stop)\n"
    )
    out.flush()
    uvicorn.run(app, host=args.host, port=args.port)
    return EXIT_OK


# ---------------------------------------------------------------- argument parsing


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 10000, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nexios-scheduler",
        description="Tools for nexios-contrib-scheduler: run the demo, explain cron "
        "expressions, list the jobs of an app.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="serve the demo app",
        description="Serve the demo Nexios app: interval, cron and one-shot jobs, listed "
        "as JSON at /jobs.",
    )
    demo.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    demo.add_argument("--port", type=_port, default=8000, help="port (default: %(default)s)")
    demo.add_argument(
        "--jobstore",
        metavar="URL",
        help="where jobs are kept, e.g. sqlite:///jobs.db (default: in memory)",
    )
    demo.set_defaults(handler=cmd_demo)

    cron = commands.add_parser(
        "cron",
        help="explain a crontab expression and list its next fire times",
        description="Print a crontab expression in words and its next fire times, as the "
        "scheduler computes them (Debian cron's rules, daylight saving included). "
        "A bad expression prints the error and exits with code 2.",
    )
    cron.add_argument("expr", metavar="EXPR", help="5 fields or an alias, e.g. '0 9 * * mon-fri'")
    cron.add_argument(
        "-n", type=_count, default=5, help="how many fire times (default: %(default)s)"
    )
    cron.add_argument(
        "--tz", metavar="ZONE", help="IANA time zone to read the expression in (default: UTC)"
    )
    cron.add_argument(
        "--from",
        dest="start",
        metavar="ISO_DATETIME",
        help="list fire times at or after this time (default: now); read in --tz if it "
        "has no offset",
    )
    cron.set_defaults(handler=cmd_cron)

    jobs = commands.add_parser(
        "jobs",
        help="list the jobs a Nexios app declares",
        description="Import a Nexios app without serving it and list the jobs it declares: "
        "id, name, trigger in words, next fire time, status and options.",
    )
    jobs.add_argument(
        "app",
        metavar="APP",
        help="module:attr of the app, e.g. myproject.main:app, or of a function that "
        "returns it, e.g. myproject.main:create_app",
    )
    jobs.set_defaults(handler=cmd_jobs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return int(args.handler(args, sys.stdout))
    except CommandError as exc:
        print(printable(str(exc), keep="\n"), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
