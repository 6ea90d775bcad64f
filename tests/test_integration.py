from __future__ import annotations

import contextlib
import logging

import pytest
from helpers import wait_for
from nexios import NexiosApp
from nexios.dependencies import Context, Depend
from nexios.http import Request, Response
from nexios.testclient import TestClient

from nexios_contrib_scheduler import (
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerDepend,
    SchedulerDepends,
    SchedulerError,
    SchedulerManager,
    get_scheduler,
    setup_scheduler,
)


class TestSetup:
    def test_attaches_to_app_and_state(self):
        app = NexiosApp()
        scheduler = setup_scheduler(app)
        assert isinstance(scheduler, SchedulerManager)
        assert app.scheduler is scheduler
        assert app.state["scheduler"] is scheduler
        assert scheduler.app is app

    def test_twice_returns_the_same_manager(self):
        app = NexiosApp()
        assert setup_scheduler(app) is setup_scheduler(app)

    def test_config_is_used(self):
        app = NexiosApp()
        config = SchedulerConfig(timezone="Europe/Riga")
        assert setup_scheduler(app, config=config).config is config

    def test_starts_with_the_app_and_stops_after(self):
        app = NexiosApp()
        scheduler = setup_scheduler(app)
        runs = []

        async def tick():
            runs.append(1)

        scheduler.add_job(tick, IntervalTrigger(seconds=60))
        assert not scheduler.running
        with TestClient(app):
            assert scheduler.running
            wait_for(lambda: runs)
        assert not scheduler.running

    def test_two_test_clients_in_a_row(self):
        app = NexiosApp()
        scheduler = setup_scheduler(app)
        runs = []

        async def tick():
            runs.append(1)

        job = scheduler.add_job(tick, IntervalTrigger(seconds=60), id="tick")
        with TestClient(app):
            wait_for(lambda: len(runs) == 1)
        with TestClient(app):
            wait_for(lambda: len(runs) == 2)
            assert scheduler.get_job("tick") == job
            assert job.status is JobStatus.ACTIVE
        assert not scheduler.running

    def test_app_startup_and_shutdown_handlers_still_run(self):
        app = NexiosApp()
        events = []

        async def on_start():
            events.append(("start", app.scheduler.running))

        async def on_stop():
            events.append(("stop", app.scheduler.running))

        app.on_startup(on_start)
        setup_scheduler(app)
        app.on_shutdown(on_stop)
        with TestClient(app):
            assert app.scheduler.running
        # The app's own handlers run before the scheduler starts and after it stops,
        # so jobs can use what they set up.
        assert events == [("start", False), ("stop", False)]

    def test_works_with_a_lifespan_app(self):
        events = []

        @contextlib.asynccontextmanager
        async def lifespan(app):
            events.append("enter")
            yield {"db": "ready"}
            events.append("exit")

        app = NexiosApp(lifespan=lifespan)
        scheduler = setup_scheduler(app)
        runs = []

        async def tick():
            runs.append(1)

        scheduler.add_job(tick, IntervalTrigger(seconds=60))
        with TestClient(app):
            assert scheduler.running
            wait_for(lambda: runs)
            assert app.state["db"] == "ready"
        assert events == ["enter", "exit"]
        assert not scheduler.running

    async def test_a_failed_start_fails_app_startup(self, caplog, monkeypatch):
        app = NexiosApp()
        scheduler = setup_scheduler(app)

        async def broken_start():
            raise RuntimeError("job store unreachable")

        monkeypatch.setattr(scheduler, "start", broken_start)
        inbox = [{"type": "lifespan.startup"}]
        sent = []

        async def receive():
            return inbox.pop(0)

        async def send(message):
            sent.append(message)

        with caplog.at_level(logging.ERROR, logger="nexios_contrib_scheduler"):
            await app({"type": "lifespan", "state": {}}, receive, send)
        # The ASGI server is told startup failed (uvicorn then exits), with the reason.
        assert sent == [{"type": "lifespan.startup.failed", "message": "job store unreachable"}]
        assert any("failed to start" in r.getMessage() for r in caplog.records)

    def test_rejects_non_apps(self):
        with pytest.raises(TypeError, match="NexiosApp"):
            setup_scheduler(object())


class TestGetScheduler:
    def test_from_app(self):
        app = NexiosApp()
        manager = setup_scheduler(app)
        assert get_scheduler(app) is manager

    def test_missing_says_what_to_do(self):
        with pytest.raises(SchedulerError, match=r"call setup_scheduler\(app\)"):
            get_scheduler(NexiosApp())

    def test_from_request(self):
        app = NexiosApp()
        scheduler = setup_scheduler(app)
        seen = []

        @app.get("/who")
        async def who(request: Request, response: Response):
            seen.append(get_scheduler(request))
            return response.json({"ok": True})

        with TestClient(app) as client:
            assert client.get("/who").status_code == 200
        assert seen == [scheduler]


class TestDependency:
    def test_handler_gets_the_job_operations(self):
        app = NexiosApp()
        scheduler = setup_scheduler(app)

        async def process():
            pass

        @app.post("/schedule")
        async def schedule(request: Request, response: Response, sd=SchedulerDepends()):
            assert isinstance(sd, SchedulerDepend)
            data = await request.json
            job = sd.add_job(
                process,
                IntervalTrigger(seconds=data.get("interval", 60)),
                name=data["name"],
                id="api",
            )
            return response.json({"job_id": job.id, "next_run": job.next_run_time})

        @app.get("/jobs")
        async def jobs(request: Request, response: Response, sd=SchedulerDepends()):
            return response.json([j.to_dict() for j in sd.get_jobs()])

        @app.post("/jobs/{job_id}/pause")
        async def pause(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
            return response.json({"success": sd.pause_job(job_id)})

        @app.post("/jobs/{job_id}/resume")
        async def resume(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
            return response.json({"success": sd.resume_job(job_id)})

        @app.get("/jobs/{job_id}")
        async def one(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
            job = sd.get_job(job_id)
            return response.json(job.to_dict() if job else None)

        @app.delete("/jobs/{job_id}")
        async def remove(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
            return response.json({"success": sd.remove_job(job_id)})

        with TestClient(app) as client:
            r = client.post("/schedule", json={"interval": 30, "name": "from-api"})
            assert r.status_code == 200, r.text
            assert r.json()["job_id"] == "api"
            assert r.json()["next_run"]
            listed = client.get("/jobs").json()
            assert [(j["id"], j["name"], j["status"]) for j in listed] == [
                ("api", "from-api", "ACTIVE")
            ]
            assert client.post("/jobs/api/pause").json() == {"success": True}
            assert scheduler.get_job("api").status is JobStatus.PAUSED
            assert client.get("/jobs/api").json()["next_run_time"] is None
            assert client.post("/jobs/api/resume").json() == {"success": True}
            assert client.post("/jobs/nope/pause").json() == {"success": False}
            assert client.delete("/jobs/api").json() == {"success": True}
            assert client.delete("/jobs/api").json() == {"success": False}
            assert scheduler.get_jobs() == []

    def test_composes_with_other_dependencies(self):
        app = NexiosApp()
        setup_scheduler(app)

        def job_count(ctx: Context = Context(), sd=SchedulerDepends()) -> int:
            return len(sd.get_jobs())

        @app.get("/count")
        async def count(request: Request, response: Response, n: int = Depend(job_count)):
            return response.json({"n": n})

        with TestClient(app) as client:
            assert client.get("/count").json() == {"n": 0}

    def test_without_setup_the_error_says_what_to_do(self, caplog):
        app = NexiosApp()

        @app.get("/jobs")
        async def jobs(request: Request, response: Response, sd=SchedulerDepends()):
            return response.json([])

        with TestClient(app) as client:
            assert client.get("/jobs").status_code == 500
        assert "call setup_scheduler(app)" in caplog.text
