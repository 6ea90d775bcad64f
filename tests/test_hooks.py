"""add_listener / remove_listener and the SchedulerEvent they deliver."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from datetime import datetime, timedelta, timezone

import pytest
from helpers import wait_until

from nexios_contrib_scheduler import (
    EVENT_KINDS,
    DateTimeTrigger,
    IntervalTrigger,
    SchedulerConfig,
    SchedulerDepend,
    SchedulerEvent,
    SchedulerManager,
)

UTC = timezone.utc
T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def noop() -> None:
    pass


async def boom() -> None:
    raise ValueError("boom")


@pytest.fixture
async def clocked(scheduler_clock):
    scheduler_clock.set(T0)
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
    yield m
    await m.shutdown()


def kinds(events: list[SchedulerEvent]) -> list[str]:
    return [e.kind for e in events]


class TestEvents:
    async def test_a_job_life_in_events(self, clocked, scheduler_clock):
        events: list[SchedulerEvent] = []
        clocked.add_listener(events.append)
        job = clocked.add_job(noop, IntervalTrigger(minutes=1, start_now=False), id="x", name="n")
        await clocked.start()
        await scheduler_clock.advance(minutes=1)
        clocked.pause_job("x", reason="deploy")
        clocked.resume_job("x")
        clocked.remove_job("x")
        assert kinds(events) == [
            "job_added",
            "job_started",
            "job_succeeded",
            "job_paused",
            "job_resumed",
            "job_removed",
        ]
        assert all((e.job_id, e.job_name) == ("x", "n") for e in events)
        started, succeeded = events[1], events[2]
        assert started.scheduled_time == T0 + timedelta(minutes=1)
        assert started.duration is None and started.exception is None
        assert succeeded.scheduled_time == started.scheduled_time
        assert succeeded.duration == job.history[0].duration
        assert events[3].error == "deploy"

    async def test_failed_carries_the_exception(self, clocked, scheduler_clock):
        events: list[SchedulerEvent] = []
        clocked.add_listener(events.append, events=["job_failed"])
        clocked.add_job(boom, IntervalTrigger(minutes=1, start_now=False))
        await clocked.start()
        await scheduler_clock.advance(minutes=1)
        (failed,) = events
        assert isinstance(failed.exception, ValueError) and str(failed.exception) == "boom"
        assert failed.error == "ValueError: boom"
        assert failed.duration is not None and failed.duration >= 0

    async def test_a_timeout_is_a_failure_with_a_timeout_error(self):
        m = SchedulerManager()
        events: list[SchedulerEvent] = []
        m.add_listener(events.append, "job_failed")

        async def hang():
            await asyncio.sleep(30)

        m.add_job(hang, IntervalTrigger(hours=1), timeout=0.02)
        await m.start()
        try:
            await wait_until(lambda: events, timeout=60, what="the failure event")
        finally:
            await m.shutdown()
        assert isinstance(events[0].exception, TimeoutError)
        assert events[0].error == "timed out after 0.02s"

    async def test_missed_and_skipped(self, clocked, scheduler_clock):
        events: list[SchedulerEvent] = []
        clocked.add_listener(events.append, events=("job_missed", "job_skipped"))
        clocked.add_job(
            noop, DateTimeTrigger(T0 + timedelta(minutes=1)), misfire_grace_time=5, id="late"
        )
        release = asyncio.Event()

        async def slow():
            await release.wait()

        clocked.add_job(slow, IntervalTrigger(minutes=1), max_instances=1, id="busy")
        await clocked.start()
        await scheduler_clock.run_due(wait=False)
        await scheduler_clock.jump(minutes=2, wait=False)
        missed = [e for e in events if e.kind == "job_missed"]
        skipped = [e for e in events if e.kind == "job_skipped"]
        assert [e.job_id for e in missed] == ["late"]
        assert missed[0].scheduled_time == T0 + timedelta(minutes=1)
        assert "misfire_grace_time of 5s" in missed[0].error
        assert [e.job_id for e in skipped] == ["busy"]
        assert "max_instances (1)" in skipped[0].error
        release.set()
        await scheduler_clock.run_due()

    async def test_pause_on_failure_pauses_after_the_failure(self, clocked, scheduler_clock):
        events: list[SchedulerEvent] = []
        clocked.add_listener(events.append, events=["job_failed", "job_paused"])
        clocked.add_job(boom, IntervalTrigger(minutes=1, start_now=False), pause_on_failure=True)
        await clocked.start()
        await scheduler_clock.advance(minutes=1)
        assert kinds(events) == ["job_failed", "job_paused"]
        assert events[1].error == "paused after a failed run: ValueError: boom"

    async def test_run_now_has_no_scheduled_time(self, clocked, scheduler_clock):
        events: list[SchedulerEvent] = []
        clocked.add_listener(events.append, "job_started")
        clocked.add_job(noop, IntervalTrigger(hours=1, start_now=False), id="x")
        await clocked.start()
        clocked.run_job_now("x")
        await scheduler_clock.run_due()
        assert events[0].scheduled_time is None

    def test_the_event_is_frozen_and_exported(self):
        event = SchedulerEvent("job_added", "x", "n")
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.kind = "job_removed"  # type: ignore[misc]
        assert (event.scheduled_time, event.duration, event.exception) == (None, None, None)
        assert EVENT_KINDS == (
            "job_added",
            "job_started",
            "job_succeeded",
            "job_failed",
            "job_missed",
            "job_skipped",
            "job_paused",
            "job_resumed",
            "job_removed",
        )


class TestRegistration:
    def test_unknown_event_names_are_refused_with_the_allowed_ones(self):
        m = SchedulerManager()
        with pytest.raises(
            ValueError, match=r"unknown event name\(s\) 'job_done'; allowed: job_added"
        ):
            m.add_listener(print, events=["job_started", "job_done"])
        with pytest.raises(ValueError, match="events is empty"):
            m.add_listener(print, events=[])
        with pytest.raises(TypeError, match="listener must be callable"):
            m.add_listener("print")
        m.add_job(noop, IntervalTrigger(hours=1))  # nothing was registered: no listener fails

    def test_filtering_and_removal(self):
        m = SchedulerManager()
        added: list[str] = []
        everything: list[str] = []

        def on_added(event):
            added.append(event.job_id)

        def on_all(event):
            everything.append(event.kind)

        m.add_listener(on_added, "job_added")
        m.add_listener(on_all)
        m.add_job(noop, IntervalTrigger(hours=1), id="a")
        m.pause_job("a")
        assert m.remove_listener(on_added) is True
        assert m.remove_listener(on_added) is False
        m.add_job(noop, IntervalTrigger(hours=1), id="b")
        assert added == ["a"]
        assert everything == ["job_added", "job_paused", "job_added"]

    def test_through_the_dependency(self):
        m = SchedulerManager()
        dep = SchedulerDepend(m)
        seen: list[str] = []
        dep.add_listener(lambda e: seen.append(e.kind), ["job_removed"])
        m.add_job(noop, IntervalTrigger(hours=1), id="a")
        m.remove_job("a")
        assert seen == ["job_removed"]
        assert dep.remove_listener(print) is False


class TestCallbacks:
    async def test_async_callbacks_run_as_tasks(self, clocked, scheduler_clock):
        seen: list[tuple[str, bool]] = []
        loop_thread = threading.get_ident()

        async def on_event(event):
            await asyncio.sleep(0)
            seen.append((event.kind, threading.get_ident() == loop_thread))

        clocked.add_listener(on_event, ["job_started", "job_succeeded"])
        clocked.add_job(noop, IntervalTrigger(minutes=1, start_now=False))
        await clocked.start()
        await scheduler_clock.advance(minutes=1)  # also waits for listener tasks
        assert seen == [("job_started", True), ("job_succeeded", True)]

    async def test_errors_in_callbacks_are_logged_never_raised(
        self, clocked, scheduler_clock, caplog
    ):
        def bad_sync(event):
            raise RuntimeError("sync listener broke")

        async def bad_async(event):
            raise RuntimeError("async listener broke")

        def exits(event):
            raise SystemExit(1)

        for callback in (bad_sync, bad_async, exits):
            clocked.add_listener(callback)
        with caplog.at_level(logging.ERROR, logger="nexios_contrib_scheduler"):
            job = clocked.add_job(noop, IntervalTrigger(minutes=1, start_now=False), id="x")
            await clocked.start()
            await scheduler_clock.advance(minutes=3)
            clocked.pause_job("x")
        assert job.success_count == 3 and clocked.running
        messages = [r.getMessage() for r in caplog.records]
        assert any("bad_sync" in m and "job_succeeded" in m for m in messages)
        assert any("bad_async" in m and "job_started" in m for m in messages)
        assert any("exits" in m and "job_paused" in m for m in messages)
        texts = "".join(r.exc_text or "" for r in caplog.records)
        assert "sync listener broke" in texts and "async listener broke" in texts

    def test_an_async_callback_without_a_loop_is_skipped_with_a_warning(self, caplog):
        m = SchedulerManager()
        called = []

        async def on_added(event):
            called.append(event)

        m.add_listener(on_added)
        with caplog.at_level(logging.WARNING, logger="nexios_contrib_scheduler"):
            m.add_job(noop, IntervalTrigger(hours=1), id="x")
        assert called == []
        assert any("no event loop is running" in r.getMessage() for r in caplog.records)

    async def test_an_async_callback_for_an_operation_from_another_thread(self):
        m = SchedulerManager()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        seen: list[bool] = []

        async def on_added(event):
            seen.append(asyncio.get_running_loop() is loop)
            done.set()

        m.add_listener(on_added, "job_added")
        await m.start()
        try:
            await asyncio.to_thread(m.add_job, noop, IntervalTrigger(hours=1, start_now=False))
            await asyncio.wait_for(done.wait(), 5)
        finally:
            await m.shutdown()
        assert seen == [True]
