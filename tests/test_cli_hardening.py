"""The command line given hostile job names, odd app modules and dates at the calendar's ends."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time
import unicodedata
import warnings
from pathlib import Path

import pytest

from nexios_contrib_scheduler.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")


@pytest.fixture
def module(tmp_path, monkeypatch):
    """Write a module into an importable directory: ``module(source)`` gives its name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    written: list[str] = []

    def write(source: str) -> str:
        name = f"cli_hard_{os.getpid()}_{time.monotonic_ns()}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


APP = """
from nexios import NexiosApp
from nexios_contrib_scheduler import IntervalTrigger, setup_scheduler

app = NexiosApp()
scheduler = setup_scheduler(app)


async def job():
    pass


scheduler.add_job(job, IntervalTrigger(minutes=5), id="plain", name="plain job")
"""


class TestJobNames:
    def test_control_characters_in_job_names_are_shown_escaped(self, capsys, wide, module):
        name = module(
            APP
            + """
scheduler.add_job(job, IntervalTrigger(minutes=5), id="ansi", name="red\\x1b[31mALERT\\x1b[0m")
scheduler.add_job(job, IntervalTrigger(minutes=5), id="bidi", name="invoice\\u202egnp.exe")
scheduler.add_job(job, IntervalTrigger(minutes=5), id="bell", name="ding\\x07\\x00\\x7f\\x9b")
"""
        )
        code, out, err = run(capsys, "jobs", f"{name}:app")
        assert code == 0, err
        assert [c for c in out if unicodedata.category(c)[0] == "C" and c != "\n"] == []
        rows = {line.split()[0]: line for line in out.splitlines()[2:]}
        assert r"red\x1b[31mALERT\x1b[0m" in rows["ansi"]
        assert r"invoice\u202egnp.exe" in rows["bidi"]
        assert r"ding\x07\x00\x7f\x9b" in rows["bell"]
        assert "plain job" in rows["plain"]


class TestAppLoading:
    def test_an_async_factory_is_awaited(self, capsys, wide, module):
        name = module(
            APP
            + """

async def create_app():
    return app
"""
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code, out, err = run(capsys, "jobs", f"{name}:create_app")
            gc.collect()
        assert code == 0, err
        assert "plain job" in out
        assert not [w for w in caught if "never awaited" in str(w.message)]

    def test_an_async_factory_that_fails_is_reported(self, capsys, module):
        name = module(
            """
async def create_app():
    raise RuntimeError("no database")
"""
        )
        code, out, err = run(capsys, "jobs", f"{name}:create_app")
        assert code == 1 and out == ""
        assert f"calling {name}:create_app to build the app failed" in err
        assert "RuntimeError('no database')" in err

    @pytest.mark.parametrize(("argument", "shown"), [("0", "0"), ("'bye'", "'bye'"), ("", "")])
    def test_a_module_that_calls_sys_exit_at_import_is_an_error(self, tmp_path, argument, shown):
        (tmp_path / "exits_at_import.py").write_text(f"import sys\nsys.exit({argument})\n")
        result = subprocess.run(
            [sys.executable, "-m", "nexios_contrib_scheduler", "jobs", "exits_at_import:app"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert result.returncode == 1
        assert result.stdout == ""
        assert f"importing 'exits_at_import' called sys.exit({shown})" in result.stderr

    def test_a_factory_that_calls_sys_exit_is_an_error(self, capsys, module):
        name = module(
            """
import sys


def create_app():
    sys.exit(0)
"""
        )
        code, out, err = run(capsys, "jobs", f"{name}:create_app")
        assert code == 1 and out == ""
        assert f"calling {name}:create_app to build the app called sys.exit(0)" in err


class TestCalendarEnds:
    @pytest.mark.parametrize(
        ("start", "zone", "bound", "advice"),
        [
            ("0001-01-01T00:00", "Asia/Tokyo", "is before the range", "0001-01-01T09:20"),
            ("0001-01-01T00:00", "UTC", "is before the range", "0001-01-01T00:01"),
            ("0001-01-01T00:00+01:00", "UTC", "is before the range", "0001-01-01T00:01"),
            (
                "9999-12-31T23:00",
                "America/New_York",
                "is after the range",
                "9999-12-31T18:59",
            ),
        ],
    )
    def test_a_start_outside_the_supported_range_is_refused_naming_it(
        self, capsys, start, zone, bound, advice
    ):
        code, out, err = run(capsys, "cron", "* * * * *", "--from", start, "--tz", zone)
        assert code == 2 and out == ""
        assert f"--from {start!r}" in err
        assert bound in err
        assert advice in err
        assert "(0001-01-01 00:00:00" in err or "(9999-12-31 23:00:00" in err  # the instant
        assert "0001-01-01 00:01 to 9999-12-31 23:59 UTC" in err  # the supported range

    @pytest.mark.parametrize(
        ("start", "zone", "first"),
        [
            ("0001-01-01T09:20", "Asia/Tokyo", "0001-01-01 09:20:00+09:18:59"),
            ("0001-01-01T00:01", "UTC", "0001-01-01 00:01:00+00:00"),
            ("9999-12-31T18:59", "America/New_York", "9999-12-31 18:59:00-05:00"),
        ],
    )
    def test_the_first_and_last_supported_starts_list_fire_times(
        self, capsys, wide, start, zone, first
    ):
        code, out, err = run(capsys, "cron", "* * * * *", "--from", start, "--tz", zone, "-n", "1")
        assert code == 0, err
        assert f"1  {first}" in out

    def test_no_fire_left_says_where_the_calendar_ends(self, capsys, wide):
        code, out, err = run(capsys, "cron", "0 0 1 1 *", "--from", "9999-06-01T00:00")
        assert code == 0 and err == ""
        assert "dates run out after the year 9999" in out


class TestSecrets:
    @pytest.mark.parametrize(
        "url",
        [
            "sqlite:///jobs.db?password=hunter2",
            "mysql://u:hunter2@h/db?token=hunter2",
            "postgresql://u:hunter2@h:port/db?password=hunter2",
        ],
    )
    def test_a_refused_demo_jobstore_is_quoted_without_its_secrets(self, capsys, url):
        code, out, err = run(capsys, "demo", "--jobstore", url)
        assert code == 2 and out == ""
        assert "hunter2" not in err
        assert "***" in err
