"""The spec's examples, run as written (only the import lines differ).

Each ``spec_*.py`` file beside this one is a section of the documented API; these tests run
them and check what a reader of the spec would expect to see.
"""

from __future__ import annotations

import ast
import json
import os
import runpy
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_for
from nexios.testclient import TestClient

import nexios_contrib_scheduler
import nexios_contrib_scheduler.config
from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerManager,
)

HERE = Path(__file__).parent
UTC = timezone.utc

# Job options unlike the built-in defaults (max_instances=3, misfire_grace_time=30,
# coalesce=True), which the spec's examples happen to pass: with these in place an option
# that was ignored shows.
OTHER_DEFAULTS = {"max_instances": 7, "misfire_grace_time": 99, "coalesce": False}


@pytest.fixture
def run_example(monkeypatch):
    """Run ``compat/<name>.py`` fresh (its imports of other examples fresh too).

    With ``job_defaults``, a ``setup_scheduler(app)`` call in the example (no config of its
    own) makes a scheduler with those job defaults.
    """
    monkeypatch.syspath_prepend(str(HERE))

    def run(name: str, job_defaults: dict[str, Any] | None = None) -> dict:
        for module in [m for m in sys.modules if m.startswith("spec_")]:
            monkeypatch.delitem(sys.modules, module)
        if job_defaults is not None:
            real = nexios_contrib_scheduler.setup_scheduler

            def setup(app: Any, config: SchedulerConfig | None = None) -> SchedulerManager:
                if config is None:
                    config = SchedulerConfig(job_defaults=job_defaults)
                return real(app, config)

            monkeypatch.setattr(nexios_contrib_scheduler, "setup_scheduler", setup)
        return runpy.run_path(str(HERE / f"{name}.py"), run_name=name)

    return run


def built_by_expressions(name: str) -> dict[str, Any]:
    """Run ``compat/<name>.py`` statement by statement and keep the value of each bare
    expression (``IntervalTrigger(seconds=30)`` on a line of its own), keyed by the comment
    on the line above it, as a reader of the spec pairs them."""
    path = HERE / f"{name}.py"
    source = path.read_text()
    lines = source.splitlines()
    namespace: dict[str, Any] = {"__name__": name}
    built: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), str(path), "eval"), namespace)
            comment = lines[node.lineno - 2].strip()
            assert comment.startswith("# "), f"no comment above line {node.lineno}"
            built[comment[2:]] = value
        else:
            exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)
    return built


def test_quick_start_ticks_on_startup(run_example, capsys):
    ns = run_example("spec_quickstart")
    app, scheduler = ns["app"], ns["scheduler"]
    assert isinstance(scheduler, SchedulerManager) and app.scheduler is scheduler
    [job] = scheduler.get_jobs()
    assert job.func is ns["my_task"]
    assert job.trigger == IntervalTrigger(seconds=30)
    with TestClient(app):
        wait_for(lambda: job.total_run_count == 1, timeout=60, what="the run at startup")
    assert "tick" in capsys.readouterr().out


# What each trigger of the spec's "Trigger Types" should do, by the comment above it: the
# interval, or the first fire times after START.
START = datetime(2026, 11, 27, 8, 59, 30, tzinfo=UTC)  # a Friday
TRIGGER_EXAMPLES: dict[str, tuple[type, Any]] = {
    "Every 30 seconds": (IntervalTrigger, timedelta(seconds=30)),
    "Every 5 minutes": (IntervalTrigger, timedelta(minutes=5)),
    "Every 2 hours": (IntervalTrigger, timedelta(hours=2)),
    "Every 1 day": (IntervalTrigger, timedelta(days=1)),
    "Combined: every 1 hour and 15 minutes": (IntervalTrigger, timedelta(hours=1, minutes=15)),
    "Every minute": (CronTrigger, ["2026-11-27T09:00", "2026-11-27T09:01"]),
    "Every hour at minute 0": (CronTrigger, ["2026-11-27T09:00", "2026-11-27T10:00"]),
    "Daily at midnight": (CronTrigger, ["2026-11-28T00:00", "2026-11-29T00:00"]),
    "Every weekday at 9 AM": (CronTrigger, ["2026-11-27T09:00", "2026-11-30T09:00"]),
    "Every 15 minutes": (CronTrigger, ["2026-11-27T09:00", "2026-11-27T09:15"]),
    "Run on December 25, 2026 at 10:30 AM UTC": (DateTimeTrigger, ["2026-12-25T10:30"]),
}


def test_trigger_examples_build_and_mean_what_they_say():
    built = built_by_expressions("spec_triggers")
    assert set(built) == set(TRIGGER_EXAMPLES)
    for comment, (kind, expected) in TRIGGER_EXAMPLES.items():
        trigger = built[comment]
        assert type(trigger) is kind, comment
        if kind is IntervalTrigger:
            first, second = trigger.next_fire_times(2, START)
            assert (trigger.interval, second - first) == (expected, expected), comment
        else:
            fires = trigger.next_fire_times(len(expected), START)
            assert fires == [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in expected], (
                comment
            )


def test_job_management(run_example, capsys):
    # The example passes max_instances=3, misfire_grace_time=30, coalesce=True: under other
    # job defaults, those are what the job must have.
    ns = run_example("spec_job_management", job_defaults=OTHER_DEFAULTS)
    scheduler = ns["scheduler"]
    assert scheduler.config.job_defaults["max_instances"] == 7  # the defaults did change
    assert [j.name for j in ns["all_jobs"]] == ["my_task", "my_periodic_task"]
    assert [j.name for j in ns["active_jobs"]] == ["my_task", "my_periodic_task"]
    job = ns["job"]
    assert job.trigger == IntervalTrigger(seconds=30)
    assert (job.args, dict(job.kwargs)) == (("arg1",), {"key": "value"})
    assert (job.max_instances, job.misfire_grace_time, job.coalesce) == (3, 30, True)
    assert ns["paused_status"] is JobStatus.PAUSED
    assert ns["removed"] is True
    assert job.status is JobStatus.CANCELLED
    assert scheduler.get_job("my-job-id") is None
    out = capsys.readouterr().out
    assert "Status: ACTIVE" in out and "Run count: 0" in out and "Last run: None" in out


def test_dependency_injection_handler(run_example):
    ns = run_example("spec_dependency_injection")
    app = ns["app"]
    with TestClient(app) as client:
        response = client.post("/schedule-task", json={"interval": 5, "name": "nightly"})
        assert response.status_code == 200, response.text
        body = response.json()
        job = app.scheduler.get_job(body["job_id"])
        assert job.name == "nightly"
        assert job.trigger == IntervalTrigger(seconds=5)
        assert datetime.fromisoformat(body["next_run"]).tzinfo is not None


def test_configuration(run_example, monkeypatch):
    # The example's job_defaults equal the built-in ones; with other built-ins in place, a
    # value the config ignored would show.
    builtins = {**nexios_contrib_scheduler.config.DEFAULT_JOB_DEFAULTS, **OTHER_DEFAULTS}
    builtins["timeout"] = 45
    monkeypatch.setattr(nexios_contrib_scheduler.config, "DEFAULT_JOB_DEFAULTS", builtins)
    ns = run_example("spec_configuration")
    scheduler = ns["scheduler"]
    config = scheduler.config
    assert config is ns["config"]
    given = {"max_instances": 3, "misfire_grace_time": 30, "coalesce": True}
    assert {key: config.job_defaults[key] for key in given} == given
    # Options beyond the spec's keep the built-in defaults.
    assert config.job_defaults["timeout"] == 45
    # ... and a job added without options takes them from the config.
    job = scheduler.add_job(print, IntervalTrigger(seconds=10))
    assert (job.max_instances, job.misfire_grace_time, job.coalesce, job.timeout) == (
        3,
        30,
        True,
        45,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(method: str, url: str) -> object:
    req = urllib.request.Request(url, method=method, data=b"" if method != "GET" else None)
    with urllib.request.urlopen(req, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def served_complete_example():
    """The Complete Example, served by uvicorn on a free loopback port."""
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "spec_complete_example:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _request("GET", f"{base}/jobs")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"the Complete Example did not start: {proc.stdout.read()}"
                    )
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_complete_example_over_http(served_complete_example):
    base, proc = served_complete_example
    jobs = _request("GET", f"{base}/jobs")
    assert [j["name"] for j in jobs] == ["minute_ticker", "hourly_cleanup", "xmas_greeting"]
    by_name = {j["name"]: j for j in jobs}
    assert by_name["hourly_cleanup"]["status"] == "ACTIVE"
    hourly_next = datetime.fromisoformat(by_name["hourly_cleanup"]["next_run"])
    assert (hourly_next.minute, hourly_next.second) == (0, 0)
    xmas = datetime(2026, 12, 25, 10, 30, tzinfo=timezone.utc)
    if datetime.now(timezone.utc) < xmas:
        assert datetime.fromisoformat(by_name["xmas_greeting"]["next_run"]) == xmas
    else:  # the greeting's date has passed: it has no next run
        assert by_name["xmas_greeting"]["next_run"] is None
    # The interval job runs once at startup (start_now), then every 60 s.
    wait_for(
        lambda: (
            {j["name"]: j for j in _request("GET", f"{base}/jobs")}["minute_ticker"]["run_count"]
            == 1
        ),
        timeout=60,
        what="the minute ticker's run at startup",
    )

    ticker = by_name["minute_ticker"]["id"]
    assert _request("POST", f"{base}/jobs/{ticker}/pause") == {"success": True}
    paused = {j["id"]: j for j in _request("GET", f"{base}/jobs")}[ticker]
    assert (paused["status"], paused["next_run"]) == ("PAUSED", None)
    assert _request("POST", f"{base}/jobs/{ticker}/resume") == {"success": True}
    resumed = {j["id"]: j for j in _request("GET", f"{base}/jobs")}[ticker]
    assert resumed["status"] == "ACTIVE" and resumed["next_run"] is not None
    assert _request("POST", f"{base}/jobs/unknown/pause") == {"success": False}
    assert _request("DELETE", f"{base}/jobs/{ticker}") == {"success": True}
    assert _request("DELETE", f"{base}/jobs/{ticker}") == {"success": False}
    assert ticker not in {j["id"] for j in _request("GET", f"{base}/jobs")}

    proc.terminate()
    output, _ = proc.communicate(timeout=10)
    assert "Runs every minute" in output
