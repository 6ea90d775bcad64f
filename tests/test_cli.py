from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from nexios_contrib_scheduler.cli import format_table, main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


class TestTable:
    def test_fits_when_there_is_room(self):
        text = format_table(["id", "name"], [["a", "alpha"], ["bb", "b"]], 80)
        assert text.splitlines() == ["id  name", "--  -----", "a   alpha", "bb  b"]

    def test_narrows_the_widest_column_with_an_ellipsis(self):
        rows = [["job-1", "x" * 50, "short"]]
        text = format_table(["id", "description", "s"], rows, 30)
        lines = text.splitlines()
        assert all(len(line) <= 30 for line in lines)
        assert lines[2].startswith("job-1  xxxx")
        assert "…" in lines[2] and lines[2].endswith("short")

    def test_kept_columns_give_way_last(self):
        rows = [["2026-01-01 09:00:00", "y" * 40]]
        lines = format_table(["when", "what"], rows, 40, keep=(0,)).splitlines()
        assert lines[2].startswith("2026-01-01 09:00:00  yyy")
        assert all(len(line) <= 40 for line in lines)

    def test_newlines_in_cells_do_not_break_rows(self):
        lines = format_table(["a"], [["one\ntwo"]], 40).splitlines()
        assert lines[2] == "one two"


class TestCron:
    def test_words_and_fire_times(self, capsys, wide):
        code, out, err = run(
            capsys, "cron", "0 9 * * mon-fri", "-n", "3", "--from", "2026-01-01T00:00:00+00:00"
        )
        assert code == 0 and err == ""
        lines = out.splitlines()
        assert lines[0] == "0 9 * * mon-fri: At 09:00, Monday through Friday"
        body = "\n".join(lines)
        assert "2026-01-01 09:00:00+00:00  Thursday" in body
        assert "2026-01-02 09:00:00+00:00  Friday" in body
        assert "2026-01-05 09:00:00+00:00  Monday" in body
        assert "2026-01-03" not in body and "2026-01-04" not in body

    def test_default_count_is_five(self, capsys, wide):
        code, out, _ = run(capsys, "cron", "@hourly", "--from", "2026-01-01T00:30")
        assert code == 0
        fire_rows = [line for line in out.splitlines() if line[:1].isdigit()]
        assert [r.split()[0] for r in fire_rows] == ["1", "2", "3", "4", "5"]
        assert "2026-01-01 01:00:00+00:00" in fire_rows[0]

    def test_time_zone_and_daylight_saving(self, capsys, wide):
        # 02:30 does not exist on 2026-03-29 in Berlin: a fixed-time job runs at the jump.
        code, out, _ = run(
            capsys, "cron", "30 2 * * *", "--tz", "Europe/Berlin", "--from", "2026-03-28", "-n", "3"
        )
        assert code == 0
        assert "time (Europe/Berlin)" in out
        assert "2026-03-28 02:30:00+01:00  Saturday  2026-03-28 01:30 UTC" in out
        assert "2026-03-29 03:00:00+02:00  Sunday    2026-03-29 01:00 UTC" in out
        assert "2026-03-30 02:30:00+02:00  Monday    2026-03-30 00:30 UTC" in out

    def test_from_defaults_to_now(self, capsys, wide):
        code, out, _ = run(capsys, "cron", "* * * * *", "-n", "1")
        assert code == 0
        assert "from " + time.strftime("%Y-%m-%d", time.gmtime()) in out

    @pytest.mark.parametrize(
        "expr, message",
        [
            ("61 * * * *", "minute value 61 out of range 0-59 in '61 * * * *'"),
            ("* * * * funday", "day-of-week value 'funday' is not a number or name in"),
            ("0 0 30 2 *", "can never fire"),
            ("@fortnightly", "unknown alias '@fortnightly'"),
        ],
    )
    def test_bad_expression_prints_the_error_and_exits_2(self, capsys, expr, message):
        from nexios_contrib_scheduler import CronTrigger

        with pytest.raises(ValueError) as exc:
            CronTrigger(expr)
        code, out, err = run(capsys, "cron", expr)
        assert code == 2
        assert out == ""
        assert err == f"{exc.value}\n"
        assert message in err

    def test_at_the_end_of_the_calendar(self, capsys, wide):
        code, out, err = run(capsys, "cron", "* * * * *", "--from", "9999-12-31T23:58", "-n", "5")
        assert code == 0 and err == ""
        assert "9999-12-31 23:59:00+00:00" in out and "Next 2 fire time(s)" in out
        code, out, err = run(capsys, "cron", "0 0 29 2 *", "--from", "9999-03-01T00:00")
        assert code == 0 and err == ""
        assert "No fire time found from 9999-03-01 00:00:00+00:00" in out

    def test_bad_zone(self, capsys):
        code, out, err = run(capsys, "cron", "* * * * *", "--tz", "Mars/Olympus")
        assert code == 2 and out == ""
        assert "unknown timezone 'Mars/Olympus'" in err

    def test_bad_from(self, capsys):
        code, out, err = run(capsys, "cron", "* * * * *", "--from", "yesterday")
        assert code == 2 and out == ""
        assert "--from 'yesterday' is not an ISO 8601 date-time" in err

    @pytest.mark.parametrize("n", ["0", "-1", "many"])
    def test_bad_count(self, capsys, n):
        code, out, err = run(capsys, "cron", "* * * * *", "-n", n)
        assert code == 2 and out == ""
        assert "argument -n" in err

    def test_table_fits_a_narrow_terminal(self, capsys, monkeypatch):
        monkeypatch.setenv("COLUMNS", "40")
        code, out, _ = run(capsys, "cron", "*/5 * * * *", "--tz", "America/New_York")
        assert code == 0
        table = out.split("\n\n")[-1].splitlines()
        assert len(table) == 7
        assert all(len(line) <= 40 for line in table)


APP_MODULE = """
from nexios import NexiosApp
from nexios_contrib_scheduler import (
    CronTrigger, DateTimeTrigger, IntervalTrigger, SchedulerConfig, setup_scheduler,
)

app = NexiosApp()
scheduler = setup_scheduler(app, SchedulerConfig(timezone="Europe/Paris"))


async def cleanup():
    pass


scheduler.add_job(cleanup, CronTrigger("0 9 * * mon-fri"), name="morning cleanup", id="cleanup")
scheduler.add_job(
    cleanup, IntervalTrigger(minutes=5, start_now=False), id="often",
    max_instances=1, misfire_grace_time=2.5, coalesce=False,
)
scheduler.add_job(cleanup, DateTimeTrigger("2099-12-25T10:30:00"), id="xmas")
scheduler.pause_job("often")

bare = NexiosApp()


def create_app():
    return app


def broken_factory():
    raise RuntimeError("no database")
"""


@pytest.fixture
def app_module(tmp_path, monkeypatch):
    name = f"cli_app_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield name
    sys.modules.pop(name, None)


class TestJobs:
    def test_lists_every_job(self, capsys, wide, app_module):
        code, out, err = run(capsys, "jobs", f"{app_module}:app")
        assert code == 0 and err == ""
        lines = out.splitlines()
        assert lines[0].split() == [
            "id",
            "name",
            "trigger",
            "next",
            "fire",
            "(Europe/Paris)",
            "status",
            "options",
        ]
        rows = {line.split()[0]: line for line in lines[2:]}
        assert set(rows) == {"cleanup", "often", "xmas"}
        assert "morning cleanup" in rows["cleanup"]
        assert "At 09:00, Monday through Friday" in rows["cleanup"]
        assert re.search(r"2\d\d\d-\d\d-\d\d 09:00:00 +ACTIVE", rows["cleanup"])
        assert "max_instances=3 misfire_grace_time=30 coalesce=True" in rows["cleanup"]
        assert "Every 5 minutes" in rows["often"]
        assert re.search(r"Every 5 minutes +- +PAUSED", rows["often"])
        assert "max_instances=1 misfire_grace_time=2.5 coalesce=False" in rows["often"]
        assert "Once at 2099-12-25 10:30:00" in rows["xmas"]
        assert re.search(r"2099-12-25 10:30:00 +ACTIVE", rows["xmas"])

    def test_does_not_start_the_scheduler(self, capsys, wide, app_module):
        assert run(capsys, "jobs", f"{app_module}:app")[0] == 0
        assert sys.modules[app_module].scheduler.running is False

    def test_app_factory(self, capsys, wide, app_module):
        code, out, _ = run(capsys, "jobs", f"{app_module}:create_app")
        assert code == 0
        assert "morning cleanup" in out

    def test_fits_a_narrow_terminal(self, capsys, monkeypatch, app_module):
        monkeypatch.setenv("COLUMNS", "72")
        code, out, _ = run(capsys, "jobs", f"{app_module}:app")
        assert code == 0
        assert all(len(line) <= 72 for line in out.splitlines())
        assert "…" in out

    def test_no_jobs(self, capsys, tmp_path, monkeypatch):
        (tmp_path / "cli_empty_app.py").write_text(
            "from nexios import NexiosApp\n"
            "from nexios_contrib_scheduler import setup_scheduler\n"
            "app = NexiosApp()\nsetup_scheduler(app)\n"
        )
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))
        try:
            code, out, _ = run(capsys, "jobs", "cli_empty_app:app")
        finally:
            sys.modules.pop("cli_empty_app", None)
        assert code == 0
        assert out == "cli_empty_app:app declares no jobs\n"

    def test_app_without_scheduler(self, capsys, app_module):
        code, out, err = run(capsys, "jobs", f"{app_module}:bare")
        assert code == 1 and out == ""
        assert f"{app_module}:bare has no scheduler: call setup_scheduler(app)" in err

    def test_factory_that_fails(self, capsys, app_module):
        code, _, err = run(capsys, "jobs", f"{app_module}:broken_factory")
        assert code == 1
        assert "RuntimeError('no database')" in err

    def test_missing_attribute(self, capsys, app_module):
        code, _, err = run(capsys, "jobs", f"{app_module}:nothing")
        assert code == 1
        assert f"module {app_module!r} has no attribute 'nothing'" in err

    def test_missing_module(self, capsys, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        code, _, err = run(capsys, "jobs", "no_such_module_here:app")
        assert code == 1
        assert "cannot import module 'no_such_module_here'" in err

    def test_module_that_fails_to_import(self, capsys, tmp_path, monkeypatch):
        (tmp_path / "cli_broken_app.py").write_text("import no_such_dependency_x\n")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))
        code, _, err = run(capsys, "jobs", "cli_broken_app:app")
        sys.modules.pop("cli_broken_app", None)
        assert code == 1
        assert "importing 'cli_broken_app' failed" in err
        assert "no_such_dependency_x" in err

    @pytest.mark.parametrize("target", ["main", "main:", ":app"])
    def test_target_shape(self, capsys, target):
        code, out, err = run(capsys, "jobs", target)
        assert code == 2 and out == ""
        assert (
            f"APP must look like module:attr (for example myproject.main:app), got {target!r}"
            in err
        )


class TestDemo:
    def test_serves_the_demo_app(self, capsys, monkeypatch):
        import uvicorn

        served = {}

        def fake_run(app, host, port):
            served.update(app=app, host=host, port=port)

        monkeypatch.setattr(uvicorn, "run", fake_run)
        code, out, _ = run(capsys, "demo", "--host", "0.0.0.0", "--port", "8123")
        assert code == 0
        assert served["host"] == "0.0.0.0" and served["port"] == 8123
        jobs = served["app"].scheduler.get_jobs()
        assert {job.id for job in jobs} >= {"heartbeat", "top-of-the-minute", "hello-once"}
        assert "http://0.0.0.0:8123/jobs" in out

    def test_defaults(self, monkeypatch, capsys):
        import uvicorn

        served = {}
        monkeypatch.setattr(uvicorn, "run", lambda app, host, port: served.update(h=host, p=port))
        assert run(capsys, "demo")[0] == 0
        assert served == {"h": "127.0.0.1", "p": 8000}

    def test_bad_port(self, capsys):
        code, _, err = run(capsys, "demo", "--port", "99999")
        assert code == 2
        assert "expected a port from 0 to 65535, got 99999" in err

    def test_without_uvicorn(self, capsys, monkeypatch):
        monkeypatch.setitem(sys.modules, "uvicorn", None)
        code, out, err = run(capsys, "demo")
        assert code == 1 and out == ""
        assert "pip install 'nexios-contrib-scheduler[demo]'" in err

    def test_bad_jobstore(self, capsys):
        code, out, err = run(capsys, "demo", "--jobstore", "ftp://example.com/jobs")
        assert code == 2 and out == ""
        assert "'ftp://example.com/jobs'" in err and "sqlite" in err

    def test_jobstore_is_passed_to_the_config(self, capsys, monkeypatch, tmp_path):
        import uvicorn

        served = {}
        monkeypatch.setattr(uvicorn, "run", lambda app, host, port: served.update(app=app))
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        assert run(capsys, "demo", "--jobstore", url)[0] == 0
        assert served["app"].scheduler.config.jobstore == url


class TestHelp:
    @pytest.mark.parametrize("argv", [[], ["demo"], ["cron"], ["jobs"]])
    def test_every_command_has_help(self, capsys, argv):
        code, out, _ = run(capsys, *argv, "--help")
        assert code == 0
        assert out.startswith("usage: nexios-scheduler")
        for word in {
            "demo": ["--host", "--port", "--jobstore URL"],
            "cron": ["EXPR", "-n N", "--tz ZONE", "--from ISO_DATETIME"],
            "jobs": ["APP"],
        }.get(argv[0] if argv else "", ["demo", "cron", "jobs"]):
            assert word in out

    def test_no_command(self, capsys):
        code, out, err = run(capsys)
        assert code == 2 and out == ""
        assert "required: COMMAND" in err

    def test_version(self, capsys):
        from nexios_contrib_scheduler import __version__

        code, out, _ = run(capsys, "--version")
        assert code == 0 and out == f"nexios-scheduler {__version__}\n"


def _python(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nexios_contrib_scheduler", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        **kwargs,
    )


class TestSubprocess:
    def test_cron(self):
        result = _python("cron", "@daily", "-n", "2", "--from", "2026-05-01T12:00Z")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("@daily: At 00:00\n")
        assert "2026-05-02 00:00:00+00:00" in result.stdout
        assert "2026-05-03 00:00:00+00:00" in result.stdout

    def test_bad_cron(self):
        result = _python("cron", "* * * *")
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr == (
            "expected 5 fields (minute hour day-of-month month day-of-week), got 4 in '* * * *'\n"
        )

    def test_jobs_of_the_example(self):
        result = _python("jobs", "examples.demo:app", env={**os.environ, "COLUMNS": "200"})
        assert result.returncode == 0, result.stderr
        assert "At 09:00, Monday through Friday" in result.stdout

    def test_output_to_a_pipe_is_not_cut(self):
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        result = _python("jobs", "examples.reports:app", env=env)
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout
        assert "max_instances=1 misfire_grace_time=30 coalesce=False" in result.stdout
        assert "Once at 2099-12-31 23:59:00" in result.stdout

    def test_console_script_is_installed(self):
        script = Path(sys.executable).with_name("nexios-scheduler")
        assert script.exists(), "pip install -e . installs the nexios-scheduler command"
        result = subprocess.run(
            [str(script), "cron", "0 0 1 1 *", "-n", "1", "--from", "2026-06-01"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "2027-01-01 00:00:00+00:00" in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_and_fetch(*extra: str) -> list[dict]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexios_contrib_scheduler", "demo", "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the demo exited early: {proc.stdout.read()}"
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/jobs", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the demo did not answer within 30 s"
                time.sleep(0.1)
        assert response.status_code == 200
        return response.json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class TestDemoServer:
    def test_demo_serves_its_jobs(self):
        jobs = _serve_and_fetch()
        by_id = {job["id"]: job for job in jobs}
        assert set(by_id) >= {
            "heartbeat",
            "report",
            "top-of-the-minute",
            "weekday-morning",
            "hello-once",
        }
        assert by_id["weekday-morning"]["trigger_description"] == "At 09:00, Monday through Friday"
        assert by_id["heartbeat"]["status"] == "ACTIVE"
        assert by_id["heartbeat"]["next_run_time"] is not None

    def test_demo_with_a_sqlite_jobstore(self, tmp_path):
        jobs = _serve_and_fetch("--jobstore", f"sqlite:///{tmp_path / 'jobs.db'}")
        assert "heartbeat" in {job["id"] for job in jobs}
        assert (tmp_path / "jobs.db").exists()
