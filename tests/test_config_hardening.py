"""Store URLs and store backends under hostile or partial conditions.

Credentials in store URLs are never shown; an install with one storage extra works without
the others and a missing extra is named; a database holding tables or keys of another
shape is refused with the documented error.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
from mw_services import drop_namespace, postgres_url, redis_url, unique_namespace

from nexios_contrib_scheduler import (
    IntervalTrigger,
    SchedulerConfig,
    SchedulerError,
    SchedulerManager,
)
from nexios_contrib_scheduler.stores.urls import parse_jobstore, redact

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hunter2"
SECRET_URL = f"postgresql://u:{SECRET}@h/db?password={SECRET}&sslpassword={SECRET}&token={SECRET}"


def with_secrets(url: str) -> str:
    """``url`` (no credentials, no query) with a password and secret query parameters."""
    scheme, rest = url.split("://", 1)
    user = rest.split("@", 1)[0] if "@" in rest else ""
    host = rest.split("@", 1)[1] if "@" in rest else rest
    return f"{scheme}://{user}:{SECRET}@{host}?password={SECRET}&sslpassword={SECRET}"


def everything_shown(error: BaseException) -> str:
    """The error as a log or a console would show it, causes included."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


async def noop() -> None:
    return None


# ---------------------------------------------------------------- 14: secrets


class TestSecretsAreMasked:
    def test_a_config_never_shows_the_secrets_of_its_urls(self):
        config = SchedulerConfig(jobstore=SECRET_URL, coordination=SECRET_URL)
        for shown in (
            repr(config),
            str(config),
            str(config.jobstore_url),
            repr(config.jobstore_url),
            str(config.coordination_url),
            repr(config.coordination_url),
        ):
            assert SECRET not in shown
        assert "postgresql://u:***@h/db?" in repr(config)
        assert config.jobstore == SECRET_URL  # the real URL is kept for connecting
        assert config.jobstore_url is not None and config.jobstore_url.url == SECRET_URL

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            (
                "postgresql://u:p%40ss@h:5432/db?sslmode=require&password=x&api_key=y",
                "postgresql://u:***@h:5432/db?sslmode=require&password=***&api_key=***",
            ),
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://h:6379/0?Token=abc&db=2", "redis://h:6379/0?Token=***&db=2"),
            (
                "rediss://h/0?passwd=a&pwd=b&secret=c&auth=d&access_key=e&client_name=f",
                "rediss://h/0?passwd=***&pwd=***&secret=***&auth=***&access_key=***&client_name=f",
            ),
            ("postgresql://h/db?password", "postgresql://h/db?password"),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
        ],
    )
    def test_credentials_are_masked_and_the_rest_kept(self, url, shown):
        assert redact(url) == shown

    def test_a_url_that_cannot_be_parsed_is_masked_whole(self):
        assert redact("postgresql://u:hunter2@[::1/db") == "postgresql://***"

    def test_a_driver_message_quoting_a_credential_is_masked(self):
        url = parse_jobstore(f"postgresql://u:p%40{SECRET}@h/db?token={SECRET}x&pwd=ab")
        assert url is not None
        message = f"bad value 'p@{SECRET}' and {SECRET}x in {url.url}; ab stays"
        assert url.scrub(message) == f"bad value '***' and *** in {url}; ab stays"

    @pytest.mark.parametrize(
        "value",
        [
            f"mysql://u:{SECRET}@h/db?password={SECRET}",
            f"sqlite:///jobs.db?password={SECRET}",
            f"zookeeper://h/?token={SECRET}",
        ],
    )
    def test_refused_urls_are_quoted_without_secrets(self, value):
        with pytest.raises(ValueError) as raised:
            SchedulerConfig(jobstore="sqlite:///jobs.db", coordination=value)
        assert SECRET not in str(raised.value)
        with pytest.raises(ValueError) as raised:
            SchedulerConfig(jobstore=value)
        assert SECRET not in str(raised.value)

    @pytest.mark.parametrize(
        "url",
        [
            SECRET_URL.replace("@h/", "@127.0.0.1:1/"),
            f"postgresql://u:{SECRET}@127.0.0.1:1/db?password={SECRET}&sslpassword={SECRET}",
            f"redis://:{SECRET}@127.0.0.1:1/0?password={SECRET}",
            f"redis://u:{SECRET}@127.0.0.1:1/0?token={SECRET}",
        ],
    )
    async def test_a_start_on_an_unreachable_store_shows_no_secret(self, url, caplog):
        caplog.set_level(logging.DEBUG)
        with pytest.raises((SchedulerError, ValueError)) as raised:
            manager = SchedulerManager(config=SchedulerConfig(jobstore=url))
            await manager.start()
        assert SECRET not in everything_shown(raised.value)
        assert "***" in str(raised.value)
        assert SECRET not in caplog.text

    async def test_logs_and_status_of_a_running_scheduler_show_no_secret(self, caplog):
        caplog.set_level(logging.DEBUG)
        url = with_secrets(postgres_url())
        namespace = unique_namespace()
        config = SchedulerConfig(jobstore=url, coordination=url, namespace=namespace)
        manager = SchedulerManager(config=config)
        try:
            await manager.start()
            manager.add_job(noop, IntervalTrigger(hours=1), id="j")
            status = manager.status()
            assert status["jobstore"].startswith("postgresql://postgres:***@127.0.0.1")
            assert "password=***" in status["jobstore"]
            assert SECRET not in repr(status)
            assert SECRET not in repr(manager.persistence.jobstore)
        finally:
            await manager.shutdown()
            drop_namespace(postgres_url(), namespace)
        assert "started as leader on postgresql://postgres:***@" in caplog.text
        assert SECRET not in caplog.text


# ---------------------------------------------------------------- 15: extras


def run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where importing ``blocked`` packages fails."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


FIRE_ONE_JOB = """
import asyncio
from datetime import datetime, timedelta, timezone

from nexios_contrib_scheduler import DateTimeTrigger, SchedulerConfig, SchedulerManager

fired = asyncio.Event()

async def job():
    fired.set()

async def main():
    config = SchedulerConfig(jobstore={url!r}, namespace={namespace!r})
    manager = SchedulerManager(config=config)
    await manager.start()
    try:
        when = datetime.now(timezone.utc) + timedelta(seconds=0.2)
        manager.add_job(job, DateTimeTrigger(when), id="once")
        await asyncio.wait_for(fired.wait(), 60)
    finally:
        await manager.shutdown()
    print("fired")

asyncio.run(main())
"""

MAKE_MANAGER = """
from nexios_contrib_scheduler import SchedulerConfig, SchedulerManager
try:
    SchedulerManager(config=SchedulerConfig(jobstore={url!r}))
except ImportError as exc:
    from nexios_contrib_scheduler import SchedulerError
    assert isinstance(exc, SchedulerError), type(exc).__mro__
    print(exc)
else:
    print("no error")
"""


class TestExtras:
    def test_sqlite_works_without_redis(self, tmp_path):
        url = f"sqlite:///{tmp_path}/jobs.db"
        code = FIRE_ONE_JOB.format(url=url, namespace="nexios_scheduler")
        result = run_without(["redis"], code)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "fired"

    def test_redis_works_without_sqlalchemy(self):
        namespace = unique_namespace()
        url = redis_url()
        code = FIRE_ONE_JOB.format(url=url, namespace=namespace)
        try:
            result = run_without(["sqlalchemy", "psycopg2"], code)
        finally:
            drop_namespace(url, namespace)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "fired"

    @pytest.mark.parametrize(
        ("blocked", "url", "extra"),
        [
            (["sqlalchemy"], "sqlite:///jobs.db", "sqlalchemy"),
            (["sqlalchemy", "psycopg2"], "postgresql://h/db", "postgres"),
            (["psycopg2"], "postgresql://h/db", "postgres"),
            (["redis"], "redis://h:6379/0", "redis"),
        ],
    )
    def test_a_missing_extra_is_named(self, blocked, url, extra):
        result = run_without(blocked, MAKE_MANAGER.format(url=url))
        assert result.returncode == 0, result.stderr
        assert f"pip install 'nexios-contrib-scheduler[{extra}]'" in result.stdout


# ---------------------------------------------------------------- 17: foreign schemas


def sqlite_with(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()


class TestForeignSchemas:
    @pytest.mark.parametrize(
        ("table", "statements"),
        [
            (
                "nexios_scheduler_jobs",
                [
                    "CREATE TABLE nexios_scheduler_jobs (a INTEGER, b TEXT)",
                    "INSERT INTO nexios_scheduler_jobs VALUES (1, 'x')",
                ],
            ),
            ("nexios_scheduler_state", ["CREATE TABLE nexios_scheduler_state (a INTEGER)"]),
            ("nexios_scheduler_fires", ["CREATE TABLE nexios_scheduler_fires (job_id TEXT)"]),
            ("nexios_scheduler_workers", ["CREATE TABLE nexios_scheduler_workers (x TEXT)"]),
        ],
    )
    async def test_a_sqlite_table_of_another_shape_is_refused_at_start(
        self, tmp_path, table, statements
    ):
        path = tmp_path / "jobs.db"
        sqlite_with(path, *statements)
        manager = SchedulerManager(config=SchedulerConfig(jobstore=f"sqlite:///{path}"))
        with pytest.raises(SchedulerError) as raised:
            await manager.start()
        message = str(raised.value)
        assert f"cannot use the job store sqlite:///{path}" in message
        assert f"table {table!r}" in message
        assert "namespace" in message  # says what to do
        assert not manager.running

    async def test_a_sqlite_file_with_other_tables_is_shared(self, tmp_path):
        path = tmp_path / "jobs.db"
        sqlite_with(path, "CREATE TABLE users (name TEXT)", "INSERT INTO users VALUES ('a')")
        manager = SchedulerManager(config=SchedulerConfig(jobstore=f"sqlite:///{path}"))
        await manager.start()
        manager.add_job(noop, IntervalTrigger(hours=1), id="j")
        await manager.shutdown()
        connection = sqlite3.connect(path)
        assert connection.execute("SELECT name FROM users").fetchall() == [("a",)]
        connection.close()

    async def test_a_postgresql_table_of_another_shape_is_refused_at_start(self):
        import psycopg2

        url = postgres_url()
        namespace = unique_namespace()
        connection = psycopg2.connect(url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {namespace}_jobs (a integer, b text)")
        connection.close()
        manager = SchedulerManager(
            config=SchedulerConfig(jobstore=with_secrets(url), namespace=namespace)
        )
        try:
            with pytest.raises(SchedulerError) as raised:
                await manager.start()
        finally:
            drop_namespace(url, namespace)
        message = str(raised.value)
        assert "cannot use the job store postgresql://postgres:***@" in message
        assert f"table '{namespace}_jobs'" in message
        assert SECRET not in everything_shown(raised.value)

    @pytest.mark.parametrize(
        ("suffix", "make"),
        [
            ("jobs", lambda client, key: client.set(key, "x")),
            ("run_times", lambda client, key: client.rpush(key, "x")),
            ("removed", lambda client, key: client.sadd(key, "x")),
            ("workers", lambda client, key: client.set(key, "x")),
            ("state_ids", lambda client, key: client.hset(key, "a", "b")),
        ],
    )
    async def test_a_redis_key_of_the_wrong_type_is_refused_at_start(self, suffix, make):
        import redis

        url = redis_url()
        namespace = unique_namespace()
        client = redis.Redis.from_url(url)
        key = f"{namespace}:{suffix}"
        make(client, key)
        manager = SchedulerManager(config=SchedulerConfig(jobstore=url, namespace=namespace))
        try:
            with pytest.raises(SchedulerError) as raised:
                await manager.start()
        finally:
            drop_namespace(url, namespace)
            client.close()
        message = str(raised.value)
        assert f"cannot use the job store {url}" in message
        assert f"key {key!r}" in message
        assert "namespace" in message


def test_parse_keeps_the_url_to_connect_with():
    url = parse_jobstore(SECRET_URL)
    assert url is not None and url.url == SECRET_URL and SECRET not in str(url)
