"""Persistent job stores: restarts, declared jobs, several schedulers on one store.

Every backend test runs against SQLite (a file in tmp_path, with a lock file for
coordination), and the real PostgreSQL and Redis on loopback (see mw_services.py), each
in a namespace of its own that is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.schedulers.base import STATE_PAUSED
from helpers import wait_until
from mw_services import drop_namespace, postgres_url, redis_url, unique_namespace

from nexios_contrib_scheduler import (
    DateTimeTrigger,
    FireKey,
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerError,
    SchedulerManager,
    current_fire,
)

UTC = timezone.utc
BACKENDS = ["sqlite", "postgresql", "redis"]

# ---------------------------------------------------------------- jobs (importable by name)

FIRES: dict[str, list[FireKey | None]] = defaultdict(list)


async def tick(label: str) -> None:
    FIRES[label].append(current_fire())


async def tock(label: str) -> None:
    FIRES[label].append(current_fire())


def boom() -> None:
    raise ValueError("boom")


# A run of ``gated(label)`` goes on until the test opens ``GATES[label]``.
GATES: dict[str, asyncio.Event] = {}


async def gated(label: str) -> None:
    await GATES[label].wait()
    FIRES[label].append(current_fire())


@pytest.fixture(autouse=True)
def _clean_fires():
    FIRES.clear()
    GATES.clear()
    yield
    FIRES.clear()
    GATES.clear()


# ---------------------------------------------------------------- stores and managers


@dataclass
class Store:
    kind: str
    url: str
    coordination: str
    namespace: str

    def config(self, coordinated: bool = False, **options) -> SchedulerConfig:
        options.setdefault("shutdown_timeout", 2)
        return SchedulerConfig(
            jobstore=self.url,
            coordination=self.coordination if coordinated else None,
            namespace=self.namespace,
            **options,
        )


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    namespace = unique_namespace()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/jobs.db"
        coordination = f"file://{tmp_path}/scheduler.lock"
    elif request.param == "postgresql":
        url = coordination = postgres_url()
    else:
        url = coordination = redis_url()
    yield Store(request.param, url, coordination, namespace)
    if request.param != "sqlite":
        drop_namespace(url, namespace)


@pytest.fixture
def sqlite_store(tmp_path):
    return Store(
        "sqlite", f"sqlite:///{tmp_path}/jobs.db", f"file://{tmp_path}/lock", unique_namespace()
    )


def assert_same_or_runs_since(after: dict, before: dict) -> None:
    """``after`` is ``before``, or ``before`` with successful runs made since on top."""
    since = after["total_run_count"] - before["total_run_count"]
    assert since >= 0 and after["success_count"] - before["success_count"] == since
    assert after["history"][since:] == before["history"]
    if since == 0:
        assert after == before
        return
    run_fields = ("total_run_count", "success_count", "history", "last_run_time")
    assert {k: v for k, v in after.items() if k not in (*run_fields, "last_duration")} == {
        k: v for k, v in before.items() if k not in (*run_fields, "last_duration")
    }


def snapshot(job) -> dict:
    return {
        key: value
        for key, value in job.to_dict().items()
        if key not in ("next_run_time", "current_instances")
    }


# ---------------------------------------------------------------- restarts


class TestRestart:
    async def test_jobs_statuses_and_counters_survive_a_restart(self, store, managers):
        first = managers(store.config())
        await first.start()
        a = first.add_job(tick, IntervalTrigger(seconds=0.2), args=("a",), id="a")
        first.add_job(tick, IntervalTrigger(seconds=0.2), args=("b",), id="b", name="bee")
        c = first.add_job(boom, IntervalTrigger(hours=1), id="c", max_instances=2)
        await wait_until(lambda: a.total_run_count >= 3 and c.failure_count == 1)
        assert first.pause_job("b", reason="maintenance")
        await first.shutdown()
        before = {job.id: snapshot(job) for job in first.get_jobs()}
        assert before["c"]["status"] == "FAILED"

        second = managers(store.config())
        await second.start()
        after = {job.id: snapshot(job) for job in second.get_jobs()}
        assert {k: after[k] for k in "bc"} == {k: before[k] for k in "bc"}
        # a fires every 0.2 s: the second worker may run a fire as it starts.
        assert_same_or_runs_since(after["a"], before["a"])
        job_b = second.get_job("b")
        assert (job_b.status, job_b.paused_reason, job_b.next_run_time) == (
            JobStatus.PAUSED,
            "maintenance",
            None,
        )
        assert second.get_job("c").last_error == "ValueError: boom"
        assert second.get_job("a").func is tick

        # The restored jobs go on firing where they were.
        count = second.get_job("a").total_run_count
        await wait_until(lambda: second.get_job("a").total_run_count >= count + 2)
        assert second.resume_job("b")
        await wait_until(lambda: len(FIRES["b"]) > before["b"]["total_run_count"])

    async def test_a_backlog_runs_once_and_the_merged_fires_are_counted_missed(
        self, store, managers, scheduler_clock
    ):
        first = managers(store.config())
        await first.start()
        job = first.add_job(tick, IntervalTrigger(seconds=0.2), args=("a",), id="a")
        await scheduler_clock.advance(seconds=0.2)  # the runs at 0 and 0.2 s
        await first.shutdown()
        assert job.total_run_count == 2
        last = job.history[0].scheduled_time
        missed = job.missed_count

        await scheduler_clock.jump(seconds=0.9)  # the fires at 0.4 to 1.0 s fall due meanwhile
        second = managers(store.config())
        await second.start()
        await scheduler_clock.run_due()
        after = second.get_job("a")
        assert after.total_run_count == 3
        new = [r for r in after.history if r.scheduled_time > last]
        step = timedelta(seconds=0.2)
        ran = [r.scheduled_time for r in new if r.outcome == "success"]
        merged = [r.scheduled_time for r in new if r.outcome == "missed"]
        assert ran == [last + 4 * step]  # the backlog ran once, for its latest fire
        assert sorted(merged) == [last + step, last + 2 * step, last + 3 * step]
        assert after.missed_count == missed + 3
        assert all("coalesced" in r.error for r in new if r.outcome == "missed")
        assert len(FIRES["a"]) == 3

    async def test_a_fire_beyond_the_grace_time_is_recorded_missed(
        self, store, managers, scheduler_clock
    ):
        first = managers(store.config())
        await first.start()
        when = scheduler_clock.now() + timedelta(seconds=0.4)
        first.add_job(
            tick, DateTimeTrigger(when), args=("late",), id="late", misfire_grace_time=0.1
        )
        await first.shutdown()  # before the fire, however slow the machine
        await scheduler_clock.jump_to(when + timedelta(seconds=0.3))

        second = managers(store.config())
        await second.start()
        await scheduler_clock.run_due()
        await wait_until(lambda: second.get_job("late").missed_count == 1, what="the missed fire")
        job = second.get_job("late")
        assert job.total_run_count == 0 and FIRES["late"] == []
        assert job.history[0].outcome == "missed" and job.history[0].scheduled_time == when
        assert job.status is JobStatus.FAILED

    async def test_a_run_cut_short_by_a_dead_worker_is_recorded(self, sqlite_store, managers):
        first = managers(sqlite_store.config())
        await first.start()
        first.add_job(tick, IntervalTrigger(hours=1), args=("r",), id="r")
        await wait_until(lambda: first.get_job("r").success_count == 1)
        await first.shutdown()
        # What a worker killed during its second run leaves: a run started, never ended.
        started = pickle.dumps(2, pickle.HIGHEST_PROTOCOL)
        first.persistence.state.update("r", {"total_run_count": started})

        second = managers(sqlite_store.config())
        await second.start()
        job = second.get_job("r")
        assert (job.total_run_count, job.success_count, job.failure_count) == (2, 1, 1)
        assert job.history[0].outcome == "cancelled" and job.status is JobStatus.FAILED
        assert "worker running it stopped" in job.last_error

    async def test_a_one_shot_that_ran_does_not_run_again(self, store, managers, scheduler_clock):
        first = managers(store.config())
        when = scheduler_clock.now() + timedelta(seconds=0.2)
        first.add_job(tick, DateTimeTrigger(when), args=("once",), id="once")
        await first.start()
        await scheduler_clock.advance(seconds=0.2)
        assert first.get_job("once").status is JobStatus.COMPLETED
        await first.shutdown()

        second = managers(store.config())
        second.add_job(tick, DateTimeTrigger(when), args=("once",), id="once")
        await second.start()
        await scheduler_clock.advance(seconds=1)  # well inside the fire's grace time
        assert second.get_job("once").status is JobStatus.COMPLETED
        assert len(FIRES["once"]) == 1


# ---------------------------------------------------------------- jobs declared in code


class TestDeclaredJobs:
    async def test_a_restart_with_the_same_declaration_keeps_schedule_and_state(
        self, store, managers, scheduler_clock
    ):
        def declare(manager):
            return manager.add_job(
                tick, IntervalTrigger(seconds=30), args=("d",), id="d", replace_existing=True
            )

        first = managers(store.config())
        declare(first)
        await first.start()
        await scheduler_clock.run_due()
        assert len(FIRES["d"]) == 1  # start_now: one run at start
        next_run = first.get_job("d").next_run_time
        await first.shutdown()

        second = managers(store.config())
        job = declare(second)
        await second.start()
        await scheduler_clock.advance(seconds=10)  # a rescheduled job would run at once
        assert len(FIRES["d"]) == 1  # no extra run for the restart
        assert job.next_run_time == next_run  # the handle from add_job is live
        assert job.total_run_count == 1

        assert second.pause_job("d", reason="hold")
        await second.shutdown()
        third = managers(store.config())
        declare(third)
        await third.start()
        await scheduler_clock.advance(seconds=10)
        job = third.get_job("d")
        assert (job.status, job.paused_reason, len(FIRES["d"])) == (JobStatus.PAUSED, "hold", 1)
        assert third.resume_job("d")
        assert third.get_job("d").next_run_time == next_run  # still the first grid

    @pytest.mark.parametrize(
        ("func", "trigger"),
        [(tick, IntervalTrigger(seconds=20)), (tock, IntervalTrigger(seconds=30))],
        ids=["trigger", "function"],
    )
    async def test_a_changed_declaration_reschedules_and_keeps_counters(
        self, store, managers, func, trigger
    ):
        first = managers(store.config())
        first.add_job(tick, IntervalTrigger(seconds=30), args=("d",), id="d")
        await first.start()
        await wait_until(lambda: len(FIRES["d"]) == 1)
        await first.shutdown()

        second = managers(store.config())
        second.add_job(func, trigger, args=("d",), id="d", replace_existing=True)
        await second.start()
        await wait_until(lambda: len(FIRES["d"]) == 2)  # rescheduled: start_now runs again
        job = second.get_job("d")
        assert job.func is func and job.trigger == trigger
        await wait_until(lambda: second.get_job("d").total_run_count == 2)

    async def test_a_worker_with_older_code_does_not_undo_a_newer_declaration(
        self, store, managers, scheduler_clock
    ):
        old = managers(store.config())
        old.add_job(tick, IntervalTrigger(seconds=30), args=("d",), id="d")  # declared first
        new = managers(store.config())
        newer = IntervalTrigger(seconds=20)
        new.add_job(tick, newer, args=("d",), id="d", max_instances=1)
        await new.start()
        await scheduler_clock.run_due()
        assert len(FIRES["d"]) == 1
        await new.shutdown()

        await old.start()  # leads after the newer worker wrote its declaration
        await scheduler_clock.advance(seconds=10)  # a rescheduled job would run at once
        job = old.get_job("d")
        assert (job.trigger, job.max_instances, len(FIRES["d"])) == (newer, 1, 1)

    async def test_a_job_removed_at_run_time_stays_removed_until_declared_again(
        self, sqlite_store, managers
    ):
        def declare(manager):
            manager.add_job(tick, IntervalTrigger(hours=1), args=("d",), id="d")

        config = functools.partial(sqlite_store.config, coordinated=True, lease_seconds=1)
        leader, follower = managers(config()), managers(config())
        declare(leader)
        declare(follower)
        await leader.start()
        await follower.start()
        assert leader.is_leader and not follower.is_leader
        assert follower.remove_job("d")

        await leader.shutdown()  # the follower takes over and reconciles its declarations
        # Taking the lead and reconciling happen in one step on the loop.
        await wait_until(lambda: follower.is_leader, timeout=60, what="the follower to lead")
        assert follower.get_job("d") is None

        restarted = managers(config())
        declare(restarted)  # declared after the removal: a new deployment brings it back
        await follower.shutdown()
        await restarted.start()
        assert restarted.get_job("d") is not None


# ---------------------------------------------------------------- what add_job refuses


class Holder:
    async def method(self) -> None:
        pass

    async def __call__(self) -> None:
        pass


class TestStorableJobs:
    @pytest.fixture
    def manager(self, sqlite_store):
        return SchedulerManager(config=sqlite_store.config())

    def closure(self):
        async def inner() -> None:
            pass

        return inner

    @pytest.mark.parametrize(
        ("make", "name", "reason"),
        [
            (lambda self: lambda: None, "<lambda>", "a lambda"),
            (lambda self: self.closure(), "closure.<locals>.inner", "inside another function"),
            (lambda self: Holder().method, "Holder.method", "a bound method"),
            (lambda self: functools.partial(tick, "x"), "functools.partial", "a functools.partial"),
            (lambda self: Holder(), "Holder", "a callable object"),
        ],
        ids=["lambda", "closure", "bound-method", "partial", "callable-object"],
    )
    def test_unimportable_functions_are_refused_at_add_job(self, manager, make, name, reason):
        with pytest.raises(ValueError, match="job function") as raised:
            manager.add_job(make(self), IntervalTrigger(seconds=1), id="x")
        assert name in str(raised.value) and reason in str(raised.value)
        assert "sqlite job store" in str(raised.value)
        assert manager.get_jobs() == []

    def test_arguments_that_cannot_be_pickled_are_refused(self, manager):
        with pytest.raises(ValueError, match="args or kwargs of job function 'tick'"):
            manager.add_job(tick, IntervalTrigger(seconds=1), args=(threading_lock(),), id="x")

    def test_the_memory_store_still_takes_any_callable(self):
        manager = SchedulerManager()
        assert manager.add_job(lambda: None, IntervalTrigger(seconds=1)).id

    def test_a_declared_job_without_an_id_is_warned_about(self, manager, caplog):
        with caplog.at_level(logging.WARNING, logger="nexios_contrib_scheduler"):
            manager.add_job(tick, IntervalTrigger(seconds=1), args=("x",))
        assert "declared without an id" in caplog.text


def threading_lock():
    import threading

    return threading.Lock()


# ---------------------------------------------------------------- configuration


class TestConfig:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"jobstore": "mysql://host/db"}, "'sqlite:///path/jobs.db'"),
            ({"jobstore": "sqlite://"}, "needs a database file"),
            ({"jobstore": "sqlite:///:memory:"}, "needs a database file"),
            ({"jobstore": "sqlite:///a.db", "coordination": "zookeeper://x"}, "'file:///path"),
            ({"coordination": "file:///tmp/x.lock"}, "needs a persistent jobstore"),
            ({"jobstore": "sqlite:///a.db", "lease_seconds": 0.5}, "at least 1 second"),
            ({"jobstore": "sqlite:///a.db", "namespace": "has-dash"}, "namespace 'has-dash'"),
        ],
    )
    def test_bad_values_are_refused_naming_what_is_allowed(self, options, message):
        with pytest.raises(ValueError) as raised:
            SchedulerConfig(**options)
        assert message in str(raised.value)

    def test_a_password_is_not_shown(self):
        with pytest.raises(ValueError) as raised:
            SchedulerConfig(jobstore="mysql://user:secret@host/db")
        assert "secret" not in str(raised.value)
        config = SchedulerConfig(jobstore="postgresql://user:secret@host/db")
        assert str(config.jobstore_url) == "postgresql://user:***@host/db"

    def test_defaults(self):
        config = SchedulerConfig()
        assert (config.jobstore, config.coordination, config.lease_seconds) == (
            "memory",
            None,
            10.0,
        )

    @pytest.mark.parametrize(
        "url", ["postgresql://postgres@127.0.0.1:1/test", "redis://127.0.0.1:1/0"]
    )
    async def test_an_unreachable_store_fails_start_naming_it(self, url):
        manager = SchedulerManager(config=SchedulerConfig(jobstore=url))
        with pytest.raises(SchedulerError, match=f"cannot use the job store {url}"):
            await manager.start()
        assert not manager.running


# ---------------------------------------------------------------- several schedulers


class TestWorkers:
    async def test_one_leader_and_a_handover_when_it_stops(self, store, managers):
        # The lease outlasts the wait for the takeover: only a handover can pass.
        config = store.config(coordinated=True, lease_seconds=120)
        first, second = managers(config), managers(config)
        await first.start()
        await second.start()
        assert (first.is_leader, second.is_leader) == (True, False)
        assert first.status()["role"] == "leader" and second.status()["role"] == "standby"
        assert first.worker_id != second.worker_id
        await wait_until(
            lambda: second.status()["leader"] == first.worker_id,
            timeout=60,
            what="the standby to name the leader",
        )
        workers = {w["worker_id"] for w in second.status()["workers"]}
        assert {first.worker_id, second.worker_id} <= workers

        await first.shutdown()  # gives the lease up: no need to wait for it to expire
        await wait_until(lambda: second.is_leader, timeout=60, what="the standby to lead")
        assert first.status()["role"] == "stopped"

    @pytest.mark.parametrize("kind", ["postgresql", "redis"])
    async def test_a_leader_whose_lease_is_taken_stands_by(self, kind, managers):
        # What a leader sees after a pause longer than its lease: another worker holds it.
        url = postgres_url() if kind == "postgresql" else redis_url()
        namespace = unique_namespace()
        # A lease long enough that no renewal, on a loaded machine, is late enough to lose it
        # while the follower starts: the lease changes hands only when the test hands it.
        config = SchedulerConfig(
            jobstore=url, coordination=url, namespace=namespace, lease_seconds=10
        )
        leader, follower = managers(config), managers(config)
        try:
            await leader.start()
            await follower.start()
            assert leader.is_leader and not follower.is_leader
            _hand_lease_to(url, namespace, follower.worker_id)
            await wait_until(
                lambda: follower.is_leader and not leader.is_leader,
                timeout=60,
                what="the lease's new holder to lead and the old leader to stand by",
            )
            assert leader.status()["role"] == "standby"
            assert leader.apscheduler.state == STATE_PAUSED  # it fires nothing
        finally:
            await leader.shutdown()
            await follower.shutdown()
            drop_namespace(url, namespace)

    async def test_a_run_still_draining_on_the_old_leader_is_not_taken_as_cut_short(
        self, sqlite_store, managers
    ):
        # The old leader waits for its run as long as the test needs (shutdown_timeout).
        config = sqlite_store.config(coordinated=True, lease_seconds=1, shutdown_timeout=120)
        old, new = managers(config), managers(config)
        await old.start()
        await new.start()
        GATES["s"] = asyncio.Event()
        old.add_job(gated, IntervalTrigger(hours=1), args=("s",), id="s")
        await wait_until(lambda: old.get_job("s").current_instances == 1, what="the run")

        stopping = asyncio.create_task(old.shutdown())  # hands over, lets the run finish
        await wait_until(lambda: new.is_leader, timeout=60, what="the new leader")
        assert old.running and FIRES["s"] == []  # the run is still going
        GATES["s"].set()
        await stopping
        await wait_until(
            lambda: new.get_job("s").success_count == 1,
            timeout=60,
            what="the new leader to see the run the old one finished",
        )
        job = new.get_job("s")
        assert (job.total_run_count, job.success_count, job.failure_count) == (1, 1, 0)
        new.persistence.resync()  # the leader's periodic reload settles nothing either
        assert new.get_job("s").history[0].outcome == "success"

    async def test_a_scheduling_pass_does_not_undo_another_workers_change(self, store, managers):
        one, two = managers(store.config()), managers(store.config())
        await one.start()
        await two.start()
        trigger = IntervalTrigger(hours=1, start_now=False)
        one.add_job(tick, trigger, args=("p",), id="p")
        one.add_job(tick, trigger, args=("q",), id="q")
        assert await one.flush()
        mine, theirs = one.persistence.jobstore, two.persistence.jobstore
        for job, state in (await asyncio.to_thread(theirs.read, {"p", "q"})).values():
            theirs.load(job, state)
        later = datetime.now(UTC) + timedelta(hours=2)

        # A pass of worker one takes both jobs as due...
        due = {job.id: job for job in mine.get_due_jobs(later)}
        assert set(due) == {"p", "q"}
        # ...worker two pauses p and removes q meanwhile...
        paused = theirs.lookup_job("p")
        paused._modify(next_run_time=None)
        theirs.update_job(paused)
        theirs.remove_job("q")
        assert await two.flush()
        # ...and the pass moves them on: that does not undo the change.
        for job in due.values():
            job._modify(next_run_time=later + timedelta(hours=1))
        assert mine.write_back(list(due.values()), []) == set()
        assert await one.flush()
        stored = await asyncio.to_thread(mine.read, {"p", "q"})
        assert set(stored) == {"p"}
        assert stored["p"][0].next_run_time is None

        # Outside a pass, writes are APScheduler's own.
        job = mine.lookup_job("p")
        job._modify(next_run_time=later)
        mine.update_job(job)
        assert await one.flush()
        stored = await asyncio.to_thread(mine.read, {"p"})
        assert stored["p"][0].next_run_time == later

    async def test_operations_on_a_follower_reach_the_leader(
        self, store, managers, scheduler_clock
    ):
        config = store.config(coordinated=True, lease_seconds=2)
        leader, follower = managers(config), managers(config)
        await leader.start()
        await follower.start()
        assert leader.is_leader and not follower.is_leader

        follower.add_job(tick, IntervalTrigger(seconds=0.1), args=("x",), id="x")
        assert await follower.flush()  # written; the leader hears of it
        await wait_until(lambda: leader.get_job("x") is not None, what="the leader to see x")
        await scheduler_clock.advance(seconds=0.1)  # the leader runs the fires at 0 and 0.1 s
        assert len(FIRES["x"]) == 2
        await wait_until(
            lambda: follower.get_job("x").total_run_count == 2, what="the follower to see 2 runs"
        )
        assert leader.get_job("x").func is tick

        assert follower.pause_job("x", reason="from a follower")
        # Reads answer from memory: the leader's view follows the store within a notification.
        await wait_until(
            lambda: leader.get_job("x").status is JobStatus.PAUSED,
            timeout=60,
            what="the leader to show the pause",
        )
        await scheduler_clock.advance(seconds=1.05)  # ten fires would have been due
        assert len(FIRES["x"]) == 2

        assert follower.run_job_now("x")  # the leader runs it
        await wait_until(lambda: len(FIRES["x"]) == 3, timeout=60, what="the run asked for")
        assert FIRES["x"][-1] == FireKey("x", None)

        assert follower.resume_job("x")
        # Let the leader's own copy hear of the resume first: a fire its pass reaches while
        # that copy still says PAUSED is dropped, with no run and no record.
        await wait_until(
            lambda: leader.registry.get("x").status is JobStatus.ACTIVE,
            timeout=60,
            what="the leader to hear of the resume",
        )
        await scheduler_clock.advance(seconds=0.3)
        assert len(FIRES["x"]) == 6  # back on the 0.1 s grid: 1.2, 1.3 and 1.4 s
        later = IntervalTrigger(hours=1, start_now=False)
        rescheduled_at = scheduler_clock.now()
        assert follower.reschedule_job("x", later) is not None
        await wait_until(
            lambda: leader.get_job("x").trigger == later,
            timeout=60,
            what="the leader to show the new trigger",
        )
        await scheduler_clock.advance(seconds=1)
        assert len(FIRES["x"]) == 6  # the leader follows the new trigger
        assert leader.get_job("x").next_run_time == rescheduled_at + timedelta(hours=1)
        assert follower.remove_job("x")
        await wait_until(
            lambda: leader.get_job("x") is None, timeout=60, what="the leader to drop the job"
        )

    async def test_each_fire_runs_once_even_when_two_schedulers_fire(
        self, sqlite_store, managers, caplog
    ):
        # A misconfiguration: two schedulers share a store without coordination. The
        # fire claims still keep every fire to one run, and both warn loudly.
        caplog.set_level(logging.WARNING, logger="nexios_contrib_scheduler")
        one, two = managers(sqlite_store.config()), managers(sqlite_store.config())
        for manager in (one, two):  # two processes of one app: the same job declared
            manager.add_job(tick, IntervalTrigger(seconds=0.05), args=("x",), id="x")
        await one.start()
        await two.start()
        assert one.is_leader and two.is_leader
        assert one.get_job("x") is not None and two.get_job("x") is not None
        await wait_until(lambda: len(FIRES["x"]) >= 20, timeout=60, what="20 fires")
        keys = [key.token for key in FIRES["x"]]
        assert len(keys) == len(set(keys))
        # Each worker looks at the others at every heartbeat (every 5 s here).
        await wait_until(lambda: "share the job store" in caplog.text, timeout=60, what="a warning")
        assert "neither coordinates with the other" in caplog.text


def _hand_lease_to(url: str, namespace: str, worker_id: str) -> None:
    """Give the lease to ``worker_id`` for long enough that the old leader cannot take it
    back before the new holder renews it, however slow the machine."""
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        client.set(f"{namespace}:lease", worker_id, px=60_000)
        client.close()
        return
    import psycopg2

    connection = psycopg2.connect(url)
    with connection, connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{namespace}_lease" SET holder = %s, '
            "expires_at = clock_timestamp() + interval '60 seconds'",
            (worker_id,),
        )
    connection.close()


# ---------------------------------------------------------------- status and fire keys


class TestStatusAndFireKeys:
    async def test_memory_status(self):
        manager = SchedulerManager()
        assert not manager.is_leader
        assert manager.status()["role"] == "stopped"
        await manager.start()
        try:
            status = manager.status()
            assert manager.is_leader and status["is_leader"] and status["role"] == "leader"
            assert status["jobstore"] == "memory" and status["coordination"] is None
            assert status["leader"] == manager.worker_id
        finally:
            await manager.shutdown()

    async def test_a_job_sees_its_fire(self):
        manager = SchedulerManager()
        manager.add_job(tick, IntervalTrigger(seconds=10), args=("k",), id="k")
        await manager.start()
        try:
            await wait_until(lambda: len(FIRES["k"]) == 1)
            key = FIRES["k"][0]
            assert key.job_id == "k" and key.scheduled_time is not None
            assert key.token == f"k@{int(key.scheduled_time.timestamp() * 1_000_000)}"
            manager.run_job_now("k")
            await wait_until(lambda: len(FIRES["k"]) == 2)
            assert FIRES["k"][1] == FireKey("k", None) and FIRES["k"][1].token == "k@now"
        finally:
            await manager.shutdown()
        assert current_fire() is None

    async def test_a_claimed_fire_is_not_run_again(self, store, managers):
        manager = managers(store.config())
        job = manager.add_job(tick, IntervalTrigger(hours=1, start_now=False), args=("c",), id="c")
        await manager.start()
        record, claims = manager.registry.get("c"), manager.persistence
        when = datetime(2030, 1, 1, tzinfo=UTC)
        assert await claims.reserve(record, [when])[0] is True
        assert await claims.reserve(record, [when])[0] is False
        assert await claims.reserve(record, [when + timedelta(microseconds=1)])[0] is True
        assert job.total_run_count == 0
