#!/usr/bin/env python3
"""Install the package in fresh virtual environments, one per extra, and use each install.

The docs promise that ``pip install nexios-contrib-scheduler`` runs jobs in memory, that
``[sqlalchemy]`` alone is enough for SQLite, ``[postgres]`` for PostgreSQL, ``[redis]`` for
Redis, ``[metrics]`` for ``/metrics``, ``[arq]`` for ``ArqExecutor`` and ``[celery]`` for
``CeleryExecutor``, and that a store (or an engine) whose extra is missing says which one
to install. The development virtualenv has every extra, so only separate
installs can tell. For each install this script:

* builds the package once from a copy of the working tree (not an editable install: the
  installed files are what a user gets) and installs that wheel with the extra into a new
  ``python3 -m venv`` in a temporary directory (the installs share pip's cache and run in
  parallel);
* runs this same file inside that environment (``--probe EXTRA``), which starts a
  scheduler on each store the install promises and fires a job on it (PostgreSQL and
  Redis on loopback, in a namespace of their own that is dropped afterwards), and checks
  that each store it does not promise is refused with an error naming its extra.

It exits non-zero, naming each install that broke and how. Only the standard library is
used outside ``--probe``. ``NEXIOS_SCHEDULER_TEST_POSTGRES`` and
``NEXIOS_SCHEDULER_TEST_REDIS`` point it at other servers, as for the test suite.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALLS = ["", "sqlalchemy", "postgres", "redis", "metrics", "arq", "celery"]
POSTGRES_URL = os.environ.get(
    "NEXIOS_SCHEDULER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("NEXIOS_SCHEDULER_TEST_REDIS", "redis://127.0.0.1:6379/0")
STEP_TIMEOUT = 600  # seconds for one pip install or one probe, on a loaded machine


def label(extra: str) -> str:
    return f"[{extra}]" if extra else "no extra"


# ---------------------------------------------------------------- the driver


class CheckFailedError(Exception):
    pass


def run(command: list[str], what: str, **options: object) -> str:
    """Run ``command``; its output, or ``CheckFailedError`` saying ``what`` failed and why."""
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
            **options,  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired:
        raise CheckFailedError(f"{what} did not finish within {STEP_TIMEOUT} s") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise CheckFailedError(f"{what} failed (exit code {result.returncode}):\n{output}")
    return str(result.stdout)


def copy_tree(destination: Path) -> None:
    """The working tree's files (tracked, or new and not ignored), without build leftovers."""
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        "listing the files of the checkout",
        cwd=ROOT,
    )
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def build_wheel(workdir: Path) -> Path:
    source, wheels = workdir / "src", workdir / "wheels"
    copy_tree(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)], "building the package")
    (wheel,) = wheels.glob("nexios_contrib_scheduler-*.whl")
    return wheel


def check_install(extra: str, wheel: Path, workdir: Path) -> str:
    """Install ``wheel`` with ``extra`` in a new venv and probe it; the probe's report."""
    venv = workdir / f"venv-{extra or 'bare'}"
    run([sys.executable, "-m", "venv", str(venv)], "creating the virtual environment")
    python = venv / "bin" / "python"
    requirement = f"{wheel}[{extra}]" if extra else str(wheel)
    run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", requirement],
        f"pip install '{requirement}'",
    )
    probe_dir = workdir / f"probe-{extra or 'bare'}"
    probe_dir.mkdir()
    return run(
        [str(python), str(Path(__file__).resolve()), "--probe", extra],
        "using the install",
        cwd=probe_dir,  # not the checkout: the installed package must be the one imported
    )


def main_check() -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="nexios-scheduler-extras-"))
    failures: dict[str, str] = {}
    try:
        try:
            wheel = build_wheel(workdir)
        except CheckFailedError as exc:
            print(f"extras check: {exc}", file=sys.stderr)
            return 1
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(INSTALLS)) as pool:
            futures = {pool.submit(check_install, e, wheel, workdir): e for e in INSTALLS}
            for future in concurrent.futures.as_completed(futures):
                extra = futures[future]
                try:
                    report = future.result()
                except CheckFailedError as exc:
                    failures[extra] = str(exc)
                    print(f"FAILED {label(extra)}")
                else:
                    print(f"ok     {label(extra)}: {report.strip()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for extra, reason in failures.items():
        print(f"\nThe install with {label(extra)} broke: {reason}", file=sys.stderr)
    seconds = time.monotonic() - started
    if failures:
        broken = ", ".join(label(e) for e in failures)
        print(f"extras check FAILED for {broken} ({seconds:.0f} s)", file=sys.stderr)
        return 1
    print(f"extras check passed: {len(INSTALLS)} installs in {seconds:.0f} s")
    return 0


# ---------------------------------------------------------------- the probe (in each venv)

# The stores each install promises, and the extra each other store names when refused.
PROMISES = {
    "": set(),
    "sqlalchemy": {"sqlite"},
    "postgres": {"sqlite", "postgresql"},
    "redis": {"redis"},
    "metrics": set(),
    # arq and Celery's [redis] bring redis-py: the Redis store works with them too.
    "arq": {"redis"},
    "celery": {"redis"},
}
STORE_EXTRAS = {"sqlite": "sqlalchemy", "postgresql": "postgres", "redis": "redis"}


_FIRED: list[str] = []


async def probe_job() -> None:
    _FIRED.append("fired")


async def fire_one_job(jobstore: str, namespace: str) -> None:
    """Start a scheduler on ``jobstore``, fire a one-shot job on it, shut it down."""
    import asyncio
    from datetime import datetime, timedelta, timezone

    from nexios_contrib_scheduler import DateTimeTrigger, SchedulerConfig, SchedulerManager

    _FIRED.clear()
    config = SchedulerConfig(jobstore=jobstore, namespace=namespace, shutdown_timeout=5)
    manager = SchedulerManager(config=config)
    await manager.start()
    try:
        when = datetime.now(timezone.utc) + timedelta(seconds=0.2)
        manager.add_job(probe_job, DateTimeTrigger(when), id="probe")
        deadline = time.monotonic() + 60
        while not _FIRED:
            if time.monotonic() > deadline:
                raise AssertionError(f"a job on the {jobstore} store did not fire in 60 s")
            await asyncio.sleep(0.02)
    finally:
        await manager.shutdown()


def drop_namespace(kind: str, namespace: str) -> None:
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    elif kind == "postgresql":
        import psycopg2

        connection = psycopg2.connect(POSTGRES_URL)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (f"{namespace}\\_%",)
            )
            for (table,) in cursor.fetchall():
                cursor.execute(f'DROP TABLE IF EXISTS "{table}"')
        connection.close()


def store_url(kind: str) -> str:
    return {
        "sqlite": f"sqlite:///{Path.cwd() / 'jobs.db'}",
        "postgresql": POSTGRES_URL,
        "redis": REDIS_URL,
    }[kind]


async def get(app: object, path: str) -> tuple[int, str]:
    """A GET request straight to the ASGI app (no HTTP client is installed here)."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    await app(scope, receive, send)  # type: ignore[operator]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    return int(status), body.decode()  # type: ignore[call-overload]


async def check_metrics(extra: str) -> None:
    from nexios import NexiosApp

    from nexios_contrib_scheduler import setup_scheduler
    from nexios_contrib_scheduler.admin import scheduler_router

    app = NexiosApp()
    scheduler = setup_scheduler(app)
    app.mount_router(scheduler_router(allow_unauthenticated=True))
    await scheduler.start()
    try:
        status, body = await get(app, "/scheduler/metrics")
    finally:
        await scheduler.shutdown()
    if extra == "metrics":
        assert status == 200 and "nexios_scheduler_running 1.0" in body, (status, body[:500])
    else:
        wanted = "pip install 'nexios-contrib-scheduler[metrics]'"
        assert status == 501 and wanted in body, (status, body[:500])


def check_engines(extra: str) -> list[str]:
    """Each remote engine's executor is made with its extra; ArqExecutor names its extra
    without it (a CeleryExecutor needs a Celery app, which cannot be made without it)."""
    from nexios_contrib_scheduler import SchedulerConfig
    from nexios_contrib_scheduler.executors import ArqExecutor, CeleryExecutor

    if extra == "celery":
        from celery import Celery

        SchedulerConfig(executors={"celery": CeleryExecutor(Celery("probe"))})
        return ["celery executor made"]
    if extra == "arq":
        SchedulerConfig(executors={"arq": ArqExecutor(queue_name="probe")})
        return ["arq executor made"]
    try:
        ArqExecutor()
    except ImportError as exc:
        wanted = "pip install 'nexios-contrib-scheduler[arq]'"
        assert wanted in str(exc), f"{exc!r} does not say {wanted}"
    else:
        raise AssertionError("ArqExecutor was made without [arq]")
    return ["arq executor named [arq]"]


async def probe(extra: str) -> list[str]:
    import uuid

    import nexios_contrib_scheduler
    from nexios_contrib_scheduler import SchedulerConfig, SchedulerManager

    where = Path(nexios_contrib_scheduler.__file__).resolve()
    assert Path(sys.prefix).resolve() in where.parents, f"imported from {where}, not the venv"
    done = []
    await fire_one_job("memory", "nexios_scheduler")
    done.append("memory store fired")
    for kind, needs in STORE_EXTRAS.items():
        url = store_url(kind)
        if kind in PROMISES[extra]:
            namespace = f"x{uuid.uuid4().hex[:12]}"
            try:
                await fire_one_job(url, namespace)
            finally:
                drop_namespace(kind, namespace)
            done.append(f"{kind} store fired")
            continue
        try:
            SchedulerManager(config=SchedulerConfig(jobstore=url))
        except ImportError as exc:
            wanted = f"pip install 'nexios-contrib-scheduler[{needs}]'"
            assert wanted in str(exc), f"{kind}: {exc!r} does not say {wanted}"
            done.append(f"{kind} refused naming [{needs}]")
        else:
            raise AssertionError(f"a {kind} job store was accepted without [{needs}]")
    await check_metrics(extra)
    done.append("/metrics answered" if extra == "metrics" else "/metrics named [metrics]")
    done.extend(check_engines(extra))
    command = [str(Path(sys.prefix) / "bin" / "nexios-scheduler"), "cron", "@daily", "-n", "1"]
    listed = subprocess.run(
        [*command, "--from", "2026-01-01T12:00"], capture_output=True, text=True, check=False
    )
    assert "2026-01-02 00:00:00+00:00" in listed.stdout, (listed.stdout, listed.stderr)
    done.append("nexios-scheduler ran")
    return done


def main_probe(extra: str) -> int:
    import asyncio
    import traceback

    try:
        done = asyncio.run(probe(extra))
    except BaseException:
        print(f"the install with {label(extra)} does not do what it promises:", file=sys.stderr)
        traceback.print_exc()
        return 1
    print(", ".join(done))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", metavar="EXTRA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        return main_probe(args.probe)
    return main_check()


if __name__ == "__main__":
    sys.exit(main())
