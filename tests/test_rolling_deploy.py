"""A rolling deploy: a worker on older code reads jobs whose function it cannot import.

The job's function lives in a throwaway module under tmp_path. The "newer" worker adds
the job while the module imports; then the module is taken out of ``sys.modules`` and its
file renamed, so the next worker on the same store is one "on older code". It must keep
the job in the store with its schedule, show it FAILED saying why, never run it (a due
fire is recorded missed, with a warning), and run it again once the module is back.
Every test runs on SQLite, PostgreSQL and Redis (see mw_services.py).
"""

from __future__ import annotations

import importlib
import logging
import pickle
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import wait_until
from mw_services import drop_namespace, postgres_url, redis_url, unique_namespace

from nexios_contrib_scheduler import IntervalTrigger, JobStatus, SchedulerConfig

BACKENDS = ["sqlite", "postgresql", "redis"]

JOB_SOURCE = """
RUNS = []


def build(label):
    RUNS.append(label)
"""


@dataclass
class Store:
    kind: str
    url: str
    namespace: str

    def config(self) -> SchedulerConfig:
        return SchedulerConfig(jobstore=self.url, namespace=self.namespace, shutdown_timeout=2)

    def stored_job(self, job_id: str) -> tuple[str, float | None] | None:
        """The job as APScheduler's table or hash holds it: (function reference, next run
        time as a timestamp), read with the store's own client; None if it is gone."""
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(self.url)
            try:
                state = client.hget(f"{self.namespace}:jobs", job_id)
                score = client.zscore(f"{self.namespace}:run_times", job_id)
            finally:
                client.close()
            if state is None:
                return None
            return pickle.loads(state)["func"], score
        import sqlalchemy

        url = self.url.replace("postgresql://", "postgresql+psycopg2://", 1)
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as connection:
                row = connection.execute(
                    sqlalchemy.text(
                        f'SELECT job_state, next_run_time FROM "{self.namespace}_jobs" '
                        "WHERE id = :id"
                    ),
                    {"id": job_id},
                ).first()
        finally:
            engine.dispose()
        if row is None:
            return None
        return pickle.loads(row[0])["func"], row[1]

    def delete_schedule(self, job_id: str) -> None:
        """Delete the job from APScheduler's table or hash, as APScheduler 3 does with a job
        it cannot restore (the adapter's state of the job stays)."""
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(self.url)
            try:
                client.hdel(f"{self.namespace}:jobs", job_id)
                client.zrem(f"{self.namespace}:run_times", job_id)
            finally:
                client.close()
            return
        import sqlalchemy

        url = self.url.replace("postgresql://", "postgresql+psycopg2://", 1)
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(
                    sqlalchemy.text(f'DELETE FROM "{self.namespace}_jobs" WHERE id = :id'),
                    {"id": job_id},
                )
        finally:
            engine.dispose()


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path) -> Iterator[Store]:
    namespace = unique_namespace()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/jobs.db"
    elif request.param == "postgresql":
        url = postgres_url()
    else:
        url = redis_url()
    yield Store(request.param, url, namespace)
    if request.param != "sqlite":
        drop_namespace(url, namespace)


class JobModule:
    """A module holding ``build``, importable until ``hide()`` and again after ``restore()``."""

    def __init__(self, folder: Path) -> None:
        self.name = f"deployed_{uuid.uuid4().hex[:10]}"
        self.path = folder / f"{self.name}.py"
        self.path.write_text(JOB_SOURCE)
        self.ref = f"{self.name}:build"

    @property
    def module(self):
        return importlib.import_module(self.name)

    @property
    def build(self):
        return self.module.build

    def hide(self) -> None:
        self.path.rename(self.path.with_suffix(".gone"))
        sys.modules.pop(self.name, None)
        importlib.invalidate_caches()

    def restore(self) -> None:
        self.path.with_suffix(".gone").rename(self.path)
        importlib.invalidate_caches()


@pytest.fixture
def job_module(tmp_path) -> Iterator[JobModule]:
    folder = tmp_path / "code"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    module = JobModule(folder)
    yield module
    sys.path.remove(str(folder))
    sys.modules.pop(module.name, None)


async def _added_by_newer_worker(store: Store, job_module: JobModule, managers, **options):
    """The newer worker adds the job and stops; what the store holds for it then."""
    newer = managers(store.config())
    await newer.start()
    newer.add_job(job_module.build, IntervalTrigger(**options), args=("x",), id="build")
    await newer.shutdown()
    stored = store.stored_job("build")
    assert stored is not None and stored[0] == job_module.ref
    return stored


def _cannot_import(job_module: JobModule) -> str:
    return f"cannot import {job_module.ref!r} in this worker: ModuleNotFoundError"


async def test_a_worker_that_cannot_import_a_job_keeps_it_in_the_store(
    store, job_module, managers, caplog
):
    stored = await _added_by_newer_worker(store, job_module, managers, hours=1)
    job_module.hide()

    older = managers(store.config())
    with caplog.at_level(logging.WARNING, logger="nexios_contrib_scheduler"):
        await older.start()
        listed = {job.id: job for job in older.get_jobs()}
        assert older.persistence is not None
        older.persistence.resync()
        older.get_jobs()
        job = older.get_job("build")

    assert store.stored_job("build") == stored, "the read changed or deleted the stored job"
    assert "build" in listed
    assert job.status is JobStatus.FAILED
    assert job.last_error is not None and job.last_error.startswith(_cannot_import(job_module))
    warnings = [r for r in caplog.records if job_module.ref in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING


async def test_a_due_job_that_cannot_be_imported_is_recorded_missed_and_kept(
    store, job_module, managers, caplog, scheduler_clock
):
    await _added_by_newer_worker(store, job_module, managers, seconds=10)
    job_module.hide()

    older = managers(store.config())
    await older.start()
    before = store.stored_job("build")
    assert before is not None
    runs = older.get_job("build").total_run_count
    with caplog.at_level(logging.WARNING, logger="nexios_contrib_scheduler"):
        await scheduler_clock.advance(seconds=10)
        await wait_until(
            lambda: older.get_job("build").missed_count >= 1, what="the fire recorded missed"
        )
    job = older.get_job("build")
    (missed,) = [run for run in job.history if run.outcome == "missed"]
    assert missed.error is not None and _cannot_import(job_module) in missed.error
    assert job.total_run_count == runs
    assert any(
        r.levelno == logging.WARNING and "not run" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    after = store.stored_job("build")
    assert after is not None and after[0] == job_module.ref
    assert after[1] is not None and before[1] is not None and after[1] > before[1], (
        "the next run time in the store did not move on"
    )


async def test_the_job_runs_again_once_its_module_can_be_imported(
    store, job_module, managers, scheduler_clock
):
    await _added_by_newer_worker(store, job_module, managers, seconds=10)
    job_module.hide()

    older = managers(store.config())
    await older.start()
    assert older.get_job("build").status is JobStatus.FAILED

    job_module.restore()
    successes = older.get_job("build").success_count
    await scheduler_clock.advance(seconds=10)
    await wait_until(lambda: job_module.module.RUNS == ["x"], what="the job to run again")
    job = older.get_job("build")
    assert (job.status, job.last_error) == (JobStatus.ACTIVE, None)
    assert job.success_count == successes + 1


async def test_redeclaring_a_job_that_could_not_be_imported_repairs_it(
    store, job_module, managers, scheduler_clock
):
    await _added_by_newer_worker(store, job_module, managers, seconds=10)
    job_module.hide()
    older = managers(store.config())
    await older.start()
    older.get_jobs()
    await older.shutdown()

    job_module.restore()
    newer = managers(store.config())
    newer.add_job(
        job_module.build, IntervalTrigger(seconds=10), args=("x",), id="build",
        replace_existing=True,
    )  # fmt: skip
    await newer.start()
    job = newer.get_job("build")
    assert job.status is JobStatus.ACTIVE and job.next_run_time is not None
    await scheduler_clock.advance(seconds=10)
    await wait_until(lambda: job_module.module.RUNS == ["x"], what="the redeclared job to run")
    stored = store.stored_job("build")
    assert stored is not None and stored[0] == job_module.ref


async def test_redeclaring_a_job_whose_schedule_an_older_release_deleted_repairs_it(
    store, job_module, managers, scheduler_clock
):
    # Before jobs that cannot be loaded were kept, APScheduler deleted the job's schedule
    # and left its state: the job listed ACTIVE with no next fire, forever.
    await _added_by_newer_worker(store, job_module, managers, seconds=10)
    store.delete_schedule("build")

    newer = managers(store.config())
    newer.add_job(
        job_module.build, IntervalTrigger(seconds=10), args=("x",), id="build",
        replace_existing=True,
    )  # fmt: skip
    await newer.start()
    job = newer.get_job("build")
    assert job.status is JobStatus.ACTIVE and job.next_run_time is not None
    await scheduler_clock.advance(seconds=10)
    await wait_until(lambda: "x" in job_module.module.RUNS, what="the redeclared job to run")
    assert store.stored_job("build") is not None
