"""The spec's examples, run as written (only the import lines differ).

Each ``spec_*.py`` file beside this one is a section of the documented API; these tests run
them and check what a reader of the spec would expect to see.
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from tests.helpers import wait_for
from nexios.testclient import TestClient

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    SchedulerManager,
)

HERE = Path(__file__).parent


@pytest.fixture
def run_example(monkeypatch):
    """Run ``compat/<name>.py`` fresh (its imports of other examples fresh too)."""
    monkeypatch.syspath_prepend(str(HERE))

    def run(name: str) -> dict:
        for module in [m for m in sys.modules if m.startswith("spec_")]:
            monkeypatch.delitem(sys.modules, module)
        return runpy.run_path(str(HERE / f"{name}.py"), run_name=name)

    return run


def test_quick_start_ticks_on_startup(run_example, capsys):
    ns = run_example("spec_quickstart")
    app, scheduler = ns["app"], ns["scheduler"]
    assert isinstance(scheduler, SchedulerManager) and app.scheduler is scheduler
    [job] = scheduler.get_jobs()
    assert job.func is ns["my_task"]
    assert job.trigger == IntervalTrigger(seconds=30)
    with TestClient(app):
        wait_for(lambda: job.total_run_count == 1)
    assert "tick" in capsys.readouterr().out


def test_trigger_examples_build_and_mean_what_they_say(run_example):
    run_example("spec_triggers")
    start = datetime(2026, 11, 27, 8, 59, tzinfo=timezone.utc)  # a Friday
    assert IntervalTrigger(hours=1, minutes=15).interval.total_seconds() == 4500
    assert CronTrigger("0 9 * * 1-5").next_fire_times(2, start) == [
        datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc),
        datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc),  # Monday
    ]
    assert DateTimeTrigger("2026-12-25T10:30:00").next_fire_times(1, start) == [
        datetime(2026, 12, 25, 10, 30, tzinfo=timezone.utc)
    ]


def test_job_management(run_example, capsys):
    ns = run_example("spec_job_management")
    scheduler = ns["scheduler"]
    assert [j.name for j in ns["all_jobs"]] == ["my_task", "my_periodic_task"]
    assert [j.name for j in ns["active_jobs"]] == ["my_task", "my_periodic_task"]
    job = ns["job"]
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


def test_configuration(run_example):
    ns = run_example("spec_configuration")
    config = ns["scheduler"].config
    assert config is ns["config"]
    given = {"max_instances": 3, "misfire_grace_time": 30, "coalesce": True}
    assert {key: config.job_defaults[key] for key in given} == given
    # Options beyond the spec's keep their built-in defaults.
    assert config.job_defaults["timeout"] is None


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
        deadline = time.monotonic() + 20
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
    # The interval job runs once at startup (start_now), then every 60 s.
    wait_for(
        lambda: (
            {j["name"]: j for j in _request("GET", f"{base}/jobs")}["minute_ticker"]["run_count"]
            == 1
        )
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
