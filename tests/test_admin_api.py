"""The admin router: every endpoint, its guard, its refusals, read-only mode, OpenAPI."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from helpers import wait_for
from nexios import NexiosApp
from nexios.dependencies import Context, Depend
from nexios.exceptions import HTTPException
from nexios.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from nexios_contrib_scheduler import (
    CronSyntaxError,
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    RunRecord,
    SchedulerConfig,
    SchedulerManager,
    TriggerError,
    setup_scheduler,
)
from nexios_contrib_scheduler.admin import scheduler_router
from nexios_contrib_scheduler.admin.metrics import SchedulerCollector
from nexios_contrib_scheduler.triggers import trigger_from_dict

TOKEN = {"X-Token": "secret"}


def require_token(ctx: Context = Context()) -> None:
    """401 without a token, 403 with a token that is not the admin's."""
    given = ctx.request.headers.get("x-token")
    if given is None:
        raise HTTPException(401, "log in first")
    if given != "secret":
        raise HTTPException(403, "not an admin")


runs: list[str] = []


async def tick() -> None:
    runs.append("tick")


async def boom() -> None:
    raise ValueError("boom")


def build_app(config: SchedulerConfig | None = None, **router_options) -> NexiosApp:
    app = NexiosApp()
    scheduler = setup_scheduler(app, config)
    scheduler.add_job(tick, IntervalTrigger(minutes=10, start_now=False), name="tick", id="tick")
    scheduler.add_job(tick, CronTrigger("0 9 * * 1-5"), name="morning", id="morning")
    scheduler.add_job(
        tick, DateTimeTrigger("2099-01-01T00:00:00+00:00"), name="far away", id="far-away"
    )
    router_options.setdefault("dependencies", [Depend(require_token)])
    app.mount_router(scheduler_router(**router_options))
    return app


@pytest.fixture
def app() -> NexiosApp:
    return build_app()


@pytest.fixture
def scheduler(app) -> SchedulerManager:
    return app.scheduler


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        client.headers.update(TOKEN)
        yield client


def error_message(response) -> str:
    body = response.json()
    assert set(body) == {"status", "error", "message"}, body
    assert body["status"] == response.status_code
    return body["message"]


# ---------------------------------------------------------------- building the router


class TestBuilding:
    def test_refuses_to_build_without_a_guard(self):
        with pytest.raises(ValueError, match="allow_unauthenticated=True"):
            scheduler_router()
        with pytest.raises(ValueError, match="auth guard"):
            scheduler_router(dependencies=[])

    def test_allow_unauthenticated_serves_everyone(self):
        app = build_app(dependencies=None, allow_unauthenticated=True)
        with TestClient(app) as client:
            assert client.get("/scheduler/jobs").status_code == 200
            assert client.post("/scheduler/jobs/tick/pause").status_code == 200

    def test_a_plain_provider_function_is_a_guard_too(self):
        app = build_app(dependencies=[require_token])
        with TestClient(app) as client:
            assert client.get("/scheduler/jobs").status_code == 401
            assert client.get("/scheduler/jobs", headers=TOKEN).status_code == 200

    @pytest.mark.parametrize("prefix", ["", "/", "scheduler", None])
    def test_bad_prefix(self, prefix):
        with pytest.raises(ValueError, match="prefix must be a path"):
            scheduler_router(prefix=prefix, dependencies=[Depend(require_token)])

    def test_bad_options(self):
        guard = [Depend(require_token)]
        with pytest.raises(TypeError, match="Depend"):
            scheduler_router(dependencies=["admin"])
        with pytest.raises(TypeError, match="read_only"):
            scheduler_router(dependencies=guard, read_only="yes")
        with pytest.raises(TypeError, match="trusted_origins"):
            scheduler_router(dependencies=guard, trusted_origins="https://a.example")
        with pytest.raises(ValueError, match="refresh_seconds"):
            scheduler_router(dependencies=guard, refresh_seconds=0)

    def test_another_prefix(self):
        app = build_app(prefix="/ops/jobs-admin/")
        with TestClient(app) as client:
            client.headers.update(TOKEN)
            assert client.get("/ops/jobs-admin/jobs").status_code == 200
            assert client.get("/scheduler/jobs").status_code == 404
            page = client.get("/ops/jobs-admin/").text
            assert '"base": "/ops/jobs-admin"' in page


# ---------------------------------------------------------------- the guard


ROUTES = [
    ("GET", "/scheduler/"),
    ("GET", "/scheduler/jobs"),
    ("GET", "/scheduler/jobs/tick"),
    ("GET", "/scheduler/health"),
    ("GET", "/scheduler/metrics"),
    ("POST", "/scheduler/jobs/tick/pause"),
    ("POST", "/scheduler/jobs/tick/resume"),
    ("POST", "/scheduler/jobs/tick/run"),
    ("DELETE", "/scheduler/jobs/tick"),
    ("PUT", "/scheduler/jobs/tick/trigger"),
]


class TestGuard:
    @pytest.mark.parametrize("method,path", ROUTES)
    def test_every_route_asks_the_guard(self, app, scheduler, method, path):
        with TestClient(app) as client:
            assert client.request(method, path).status_code == 401
            forbidden = client.request(method, path, headers={"X-Token": "guest"})
            assert forbidden.status_code == 403
            assert "not an admin" in forbidden.text
        job = scheduler.get_job("tick")
        assert job is not None
        assert job.status is JobStatus.ACTIVE
        assert job.total_run_count == 0
        assert job.trigger == IntervalTrigger(minutes=10, start_now=False)


# ---------------------------------------------------------------- reading


class TestReading:
    def test_lists_every_job_as_to_dict(self, client, scheduler):
        response = client.get("/scheduler/jobs")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert [job["id"] for job in body] == ["tick", "morning", "far-away"]
        expected = json.loads(json.dumps(scheduler.get_job("morning").to_dict(), default=str))
        morning = body[1]
        assert set(morning) == set(expected)
        assert morning["trigger_description"] == "At 09:00, Monday through Friday"
        assert morning["trigger"] == {"type": "cron", "expr": "0 9 * * 1-5", "timezone": None}
        assert morning["status"] == "ACTIVE"
        assert morning["history"] == []

    def test_filters_by_status(self, client, scheduler):
        scheduler.pause_job("morning")
        assert [j["id"] for j in client.get("/scheduler/jobs?status=PAUSED").json()] == ["morning"]
        assert [j["id"] for j in client.get("/scheduler/jobs?status=paused").json()] == ["morning"]
        assert client.get("/scheduler/jobs?status=COMPLETED").json() == []
        assert len(client.get("/scheduler/jobs?status=").json()) == 3

    def test_unknown_status_is_422(self, client):
        response = client.get("/scheduler/jobs?status=sleeping")
        assert response.status_code == 422
        message = error_message(response)
        assert "'sleeping'" in message
        assert "ACTIVE, PAUSED, COMPLETED, FAILED, CANCELLED" in message

    def test_one_job_with_its_next_five_fire_times(self, client, scheduler):
        body = client.get("/scheduler/jobs/morning").json()
        times = [datetime.fromisoformat(t) for t in body["next_run_times"]]
        assert len(times) == 5
        assert times == sorted(times)
        assert times[0] == datetime.fromisoformat(body["next_run_time"])
        assert all(t.hour == 9 and t.minute == 0 and t.weekday() < 5 for t in times)
        assert body["history"] == []
        tick = client.get("/scheduler/jobs/tick").json()
        steps = {
            b - a
            for a, b in zip(
                map(datetime.fromisoformat, tick["next_run_times"]),
                map(datetime.fromisoformat, tick["next_run_times"][1:]),
            )
        }
        assert steps == {timedelta(minutes=10)}
        once = client.get("/scheduler/jobs/far-away").json()
        assert once["next_run_times"] == ["2099-01-01T00:00:00+00:00"]

    def test_a_paused_job_has_no_fire_times(self, client, scheduler):
        scheduler.pause_job("tick")
        assert client.get("/scheduler/jobs/tick").json()["next_run_times"] == []

    def test_history_is_in_the_job(self, client, scheduler):
        assert client.post("/scheduler/jobs/tick/run").status_code == 202
        wait_for(lambda: scheduler.get_job("tick").history)
        history = client.get("/scheduler/jobs/tick").json()["history"]
        assert len(history) == 1
        assert history[0]["outcome"] == "success"
        assert history[0]["scheduled_time"] is None
        assert history[0]["duration"] >= 0

    def test_unknown_job_is_a_json_404(self, client):
        response = client.get("/scheduler/jobs/nope")
        assert response.status_code == 404
        assert error_message(response) == "No job by the id of 'nope' was found"

    def test_ids_are_url_decoded(self, app, client, scheduler):
        scheduler.add_job(tick, IntervalTrigger(hours=1), id="nightly report")
        assert client.get("/scheduler/jobs/nightly%20report").json()["id"] == "nightly report"


# ---------------------------------------------------------------- health


class TestHealth:
    def test_running_leader_with_counts_and_last_pass(self, client, scheduler):
        scheduler.pause_job("morning", reason="holiday")
        body = client.get("/scheduler/health").json()
        assert body["running"] is True
        assert body["role"] == "leader"
        assert body["jobs"] == {
            "ACTIVE": 2,
            "PAUSED": 1,
            "COMPLETED": 0,
            "FAILED": 0,
            "CANCELLED": 0,
        }
        assert body["total_jobs"] == 3
        assert body["running_jobs"] == 0
        assert body["timezone"] == "UTC"
        last_pass = datetime.fromisoformat(body["last_pass_time"])
        now = datetime.fromisoformat(body["now"])
        assert timedelta(0) <= now - last_pass < timedelta(minutes=1)

    def test_standby(self, client, monkeypatch):
        monkeypatch.setattr(
            SchedulerManager, "is_leader", property(lambda self: False), raising=False
        )
        monkeypatch.setattr(
            SchedulerManager, "worker_id", property(lambda self: "host-2:417"), raising=False
        )
        body = client.get("/scheduler/health").json()
        assert body["role"] == "standby"
        assert body["worker_id"] == "host-2:417"

    def test_in_the_schedulers_zone(self):
        app = build_app(SchedulerConfig(timezone="Europe/Paris"))
        with TestClient(app) as client:
            body = client.get("/scheduler/health", headers=TOKEN).json()
        assert body["timezone"] == "Europe/Paris"
        assert datetime.fromisoformat(body["now"]).utcoffset() in (
            timedelta(hours=1),
            timedelta(hours=2),
        )

    def test_503_when_the_scheduler_is_not_running(self, app):
        client = TestClient(app)  # no "with": the app (and its scheduler) never starts
        response = client.get("/scheduler/health", headers=TOKEN)
        assert response.status_code == 503
        assert response.json()["running"] is False
        assert response.json()["last_pass_time"] is None


# ---------------------------------------------------------------- changing


class TestPause:
    def test_without_a_body(self, client, scheduler):
        response = client.post("/scheduler/jobs/tick/pause")
        assert response.status_code == 200
        assert response.json()["status"] == "PAUSED"
        assert response.json()["paused_reason"] is None
        assert scheduler.get_job("tick").status is JobStatus.PAUSED
        assert scheduler.get_job("tick").next_run_time is None

    def test_with_a_reason(self, client, scheduler):
        response = client.post("/scheduler/jobs/tick/pause", json={"reason": "upstream down"})
        assert response.json()["paused_reason"] == "upstream down"
        assert scheduler.get_job("tick").paused_reason == "upstream down"

    @pytest.mark.parametrize(
        "body,words",
        [
            ({"reason": 5}, "reason"),
            ({"reason": "x" * 501}, "500"),
            ({"why": "x"}, "why"),
            (["x"], "object"),
            ("x", "object"),
        ],
    )
    def test_bad_body_is_422(self, client, scheduler, body, words):
        response = client.post("/scheduler/jobs/tick/pause", json=body)
        assert response.status_code == 422
        assert words in error_message(response)
        assert scheduler.get_job("tick").status is JobStatus.ACTIVE

    def test_unknown_job(self, client):
        response = client.post("/scheduler/jobs/nope/pause")
        assert response.status_code == 404
        assert "'nope'" in error_message(response)

    def test_a_finished_job_is_409(self, client, scheduler):
        soon = datetime.now(timezone.utc) + timedelta(milliseconds=50)
        scheduler.add_job(tick, DateTimeTrigger(soon), id="once")
        wait_for(lambda: scheduler.get_job("once").status is JobStatus.COMPLETED)
        for action in ("pause", "resume", "run"):
            response = client.post(f"/scheduler/jobs/once/{action}")
            assert response.status_code == 409, action
            assert "finished (COMPLETED)" in error_message(response)


class TestResume:
    def test_resumes(self, client, scheduler):
        scheduler.pause_job("tick", reason="later")
        response = client.post("/scheduler/jobs/tick/resume")
        assert response.status_code == 200
        assert response.json()["status"] == "ACTIVE"
        assert response.json()["paused_reason"] is None
        assert response.json()["next_run_time"] is not None
        assert scheduler.get_job("tick").status is JobStatus.ACTIVE

    def test_unknown_job(self, client):
        assert client.post("/scheduler/jobs/nope/resume").status_code == 404


class TestRunNow:
    def test_starts_a_run(self, client, scheduler):
        before = len(runs)
        response = client.post("/scheduler/jobs/tick/run")
        assert response.status_code == 202
        wait_for(lambda: scheduler.get_job("tick").total_run_count == 1)
        wait_for(lambda: len(runs) == before + 1)
        assert scheduler.get_job("tick").status is JobStatus.ACTIVE

    def test_runs_a_paused_job(self, client, scheduler):
        scheduler.pause_job("tick")
        assert client.post("/scheduler/jobs/tick/run").status_code == 202
        wait_for(lambda: scheduler.get_job("tick").total_run_count == 1)
        assert scheduler.get_job("tick").status is JobStatus.PAUSED

    def test_409_when_max_instances_runs_are_in_progress(self, client, scheduler):
        release = threading.Event()
        scheduler.add_job(
            release.wait, IntervalTrigger(hours=1, start_now=False), id="slow", max_instances=1
        )
        try:
            assert client.post("/scheduler/jobs/slow/run").status_code == 202
            wait_for(lambda: scheduler.get_job("slow").current_instances == 1)
            response = client.post("/scheduler/jobs/slow/run")
            assert response.status_code == 409
            assert "max_instances (1)" in error_message(response)
        finally:
            release.set()
        wait_for(lambda: scheduler.get_job("slow").current_instances == 0)

    def test_409_when_the_scheduler_is_not_running(self, app):
        client = TestClient(app)
        response = client.post("/scheduler/jobs/tick/run", headers=TOKEN)
        assert response.status_code == 409
        assert "not running" in error_message(response)

    def test_unknown_job(self, client):
        assert client.post("/scheduler/jobs/nope/run").status_code == 404


class TestRemove:
    def test_removes(self, client, scheduler):
        handle = scheduler.get_job("tick")
        response = client.delete("/scheduler/jobs/tick")
        assert response.status_code == 204
        assert response.content == b""
        assert scheduler.get_job("tick") is None
        assert handle.status is JobStatus.CANCELLED
        again = client.delete("/scheduler/jobs/tick")
        assert again.status_code == 404
        assert "'tick'" in error_message(again)


class TestReschedule:
    @pytest.mark.parametrize(
        "body,trigger,words",
        [
            (
                {"type": "cron", "expr": "30 7 * * sat", "timezone": "Europe/Paris"},
                CronTrigger("30 7 * * sat", timezone="Europe/Paris"),
                "At 07:30 on Saturday",
            ),
            ({"type": "interval", "minutes": 5}, IntervalTrigger(minutes=5), "Every 5 minutes"),
            (
                {"type": "date", "run_date": "2098-12-25T10:30:00"},
                DateTimeTrigger("2098-12-25T10:30:00"),
                "Once at 2098-12-25 10:30:00",
            ),
        ],
    )
    def test_each_kind(self, client, scheduler, body, trigger, words):
        response = client.put("/scheduler/jobs/tick/trigger", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["trigger_description"].startswith(words)
        assert scheduler.get_job("tick").trigger == trigger
        assert response.json()["next_run_time"] is not None

    def test_accepts_what_to_dict_gives(self, client, scheduler):
        source = scheduler.get_job("morning").trigger
        response = client.put("/scheduler/jobs/tick/trigger", json=source.to_dict())
        assert response.status_code == 200
        assert scheduler.get_job("tick").trigger == source

    @pytest.mark.parametrize(
        "body,build",
        [
            ({"type": "cron", "expr": "61 * * * *"}, lambda: CronTrigger("61 * * * *")),
            ({"type": "cron", "expr": "* * * *"}, lambda: CronTrigger("* * * *")),
            (
                {"type": "cron", "expr": "* * * * *", "timezone": "Mars/Olympus"},
                lambda: CronTrigger("* * * * *", timezone="Mars/Olympus"),
            ),
            ({"type": "interval", "seconds": -1}, lambda: IntervalTrigger(seconds=-1)),
            ({"type": "interval"}, lambda: IntervalTrigger()),
            ({"type": "interval", "seconds": "5"}, lambda: IntervalTrigger(seconds="5")),
            ({"type": "date", "run_date": "soon"}, lambda: DateTimeTrigger("soon")),
        ],
    )
    def test_bad_trigger_is_422_with_the_triggers_own_message(self, client, scheduler, body, build):
        with pytest.raises((TypeError, ValueError)) as raised:
            build()
        response = client.put("/scheduler/jobs/tick/trigger", json=body)
        assert response.status_code == 422
        assert error_message(response) == str(raised.value)
        assert scheduler.get_job("tick").trigger == IntervalTrigger(minutes=10, start_now=False)

    @pytest.mark.parametrize(
        "body,words",
        [
            ({"type": "weekly"}, "unknown trigger type 'weekly'"),
            ({"expr": "* * * * *"}, "unknown trigger type None"),
            ({"type": "interval", "secs": 5}, "does not take 'secs'"),
            ([{"type": "interval", "seconds": 5}], "JSON object"),
            (None, "JSON object"),
        ],
    )
    def test_bad_body_is_422(self, client, body, words):
        if body is None:
            response = client.put("/scheduler/jobs/tick/trigger")
        else:
            response = client.put("/scheduler/jobs/tick/trigger", json=body)
        assert response.status_code == 422
        assert words in error_message(response)

    def test_unknown_job(self, client):
        response = client.put(
            "/scheduler/jobs/nope/trigger", json={"type": "interval", "seconds": 5}
        )
        assert response.status_code == 404


# ---------------------------------------------------------------- what a state change accepts


class TestBodies:
    @pytest.mark.parametrize(
        "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
    )
    def test_non_json_body_is_415(self, client, scheduler, content_type):
        response = client.post(
            "/scheduler/jobs/tick/pause",
            content=b"reason=x",
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 415
        assert content_type in error_message(response)
        assert scheduler.get_job("tick").status is JobStatus.ACTIVE

    def test_body_without_a_content_type_is_415(self, client, scheduler):
        response = client.delete("/scheduler/jobs/tick", content=b'{"x": 1}')
        assert response.status_code == 415
        assert scheduler.get_job("tick") is not None

    def test_empty_body_with_any_content_type_is_fine(self, client):
        response = client.post(
            "/scheduler/jobs/tick/pause", content=b"", headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 200

    def test_json_suffix_types_are_json(self, client):
        response = client.post(
            "/scheduler/jobs/tick/pause",
            content=b'{"reason": "x"}',
            headers={"Content-Type": "application/merge-patch+json; charset=utf-8"},
        )
        assert response.status_code == 200
        assert response.json()["paused_reason"] == "x"

    def test_malformed_json_is_400(self, client, scheduler):
        response = client.post(
            "/scheduler/jobs/tick/pause",
            content=b'{"reason": ',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert "not valid JSON" in error_message(response)
        assert scheduler.get_job("tick").status is JobStatus.ACTIVE

    def test_huge_body_is_413(self, client):
        response = client.post("/scheduler/jobs/tick/pause", json={"reason": "x" * 70000})
        assert response.status_code == 413

    def test_wrong_method_is_405_and_the_route_keeps_working(self, client):
        response = client.get("/scheduler/jobs/tick/pause")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        patch = client.patch("/scheduler/jobs/tick")
        assert patch.status_code == 405
        assert patch.headers["allow"] == "DELETE, GET, HEAD"
        assert client.post("/scheduler/jobs/tick/pause").status_code == 200
        assert client.get("/scheduler/jobs/tick").status_code == 200


class TestCrossSite:
    @pytest.mark.parametrize(
        "headers",
        [
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://testserver.evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
        ],
    )
    @pytest.mark.parametrize(
        "method,path",
        [
            ("POST", "/scheduler/jobs/tick/pause"),
            ("POST", "/scheduler/jobs/tick/run"),
            ("DELETE", "/scheduler/jobs/tick"),
            ("PUT", "/scheduler/jobs/tick/trigger"),
        ],
    )
    def test_refused(self, client, scheduler, headers, method, path):
        response = client.request(
            method, path, headers=headers, json={"type": "interval", "seconds": 1}
        )
        assert response.status_code == 403
        assert "refused" in error_message(response)
        job = scheduler.get_job("tick")
        assert job is not None
        assert job.status is JobStatus.ACTIVE
        assert job.trigger == IntervalTrigger(minutes=10, start_now=False)
        assert job.total_run_count == 0

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Sec-Fetch-Site": "same-origin"},
            {"Sec-Fetch-Site": "none"},
            {"Origin": "http://testserver"},
            {"Origin": "HTTP://TESTSERVER/"},
            {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
        ],
    )
    def test_allowed(self, client, headers):
        assert client.post("/scheduler/jobs/tick/pause", headers=headers).status_code == 200

    def test_reading_is_not_refused(self, client):
        response = client.get("/scheduler/jobs", headers={"Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 200

    def test_trusted_origins(self):
        app = build_app(trusted_origins=["https://admin.example.com/"])
        with TestClient(app) as client:
            client.headers.update(TOKEN)
            trusted = {"Origin": "https://admin.example.com", "Sec-Fetch-Site": "cross-site"}
            assert client.post("/scheduler/jobs/tick/pause", headers=trusted).status_code == 200
            other = {"Origin": "https://other.example.com"}
            assert client.post("/scheduler/jobs/tick/resume", headers=other).status_code == 403


# ---------------------------------------------------------------- read-only


class TestReadOnly:
    @pytest.fixture
    def app(self) -> NexiosApp:
        return build_app(read_only=True)

    def test_reads(self, client):
        assert client.get("/scheduler/jobs").status_code == 200
        assert client.get("/scheduler/jobs/tick").status_code == 200
        assert client.get("/scheduler/health").status_code == 200
        assert client.get("/scheduler/metrics").status_code == 200
        page = client.get("/scheduler/").text
        assert '"readOnly": true' in page

    @pytest.mark.parametrize("method,path", [r for r in ROUTES if r[0] != "GET"])
    def test_changes_nothing(self, client, scheduler, method, path):
        response = client.request(method, path, json={"type": "interval", "seconds": 1})
        assert response.status_code == 405
        assert "read-only" in error_message(response)
        assert response.headers["allow"] in ("GET, HEAD", "")
        job = scheduler.get_job("tick")
        assert job.status is JobStatus.ACTIVE
        assert job.total_run_count == 0
        assert job.trigger == IntervalTrigger(minutes=10, start_now=False)

    def test_openapi_lists_only_reads(self, client):
        paths = client.get("/openapi.json").json()["paths"]
        methods = {m for p, ops in paths.items() if p.startswith("/scheduler") for m in ops}
        assert methods == {"get", "head"}


# ---------------------------------------------------------------- OpenAPI


class TestOpenAPI:
    def test_every_endpoint_is_documented_with_the_scheduler_tag(self, client):
        paths = client.get("/openapi.json").json()["paths"]
        documented = {
            (method.upper(), path)
            for path, operations in paths.items()
            if path.startswith("/scheduler")
            for method in operations
            if method != "head"
        }
        assert documented == {
            ("GET", "/scheduler/jobs"),
            ("GET", "/scheduler/jobs/{id}"),
            ("GET", "/scheduler/health"),
            ("GET", "/scheduler/metrics"),
            ("POST", "/scheduler/jobs/{id}/pause"),
            ("POST", "/scheduler/jobs/{id}/resume"),
            ("POST", "/scheduler/jobs/{id}/run"),
            ("DELETE", "/scheduler/jobs/{id}"),
            ("PUT", "/scheduler/jobs/{id}/trigger"),
        }
        for path, operations in paths.items():
            if path.startswith("/scheduler"):
                for operation in operations.values():
                    assert operation["tags"] == ["scheduler"]

    def test_models(self, client):
        doc = client.get("/openapi.json").json()
        paths = doc["paths"]
        pause = paths["/scheduler/jobs/{id}/pause"]["post"]
        body = pause["requestBody"]["content"]["application/json"]["schema"]
        assert "reason" in body["properties"]
        assert set(pause["responses"]) >= {"200", "403", "404", "409", "415", "422"}
        job = paths["/scheduler/jobs/{id}"]["get"]["responses"]["200"]["content"]
        props = job["application/json"]["schema"]["properties"]
        assert {"next_run_times", "history", "trigger_description", "status"} <= set(props)
        listing = paths["/scheduler/jobs"]["get"]
        answer = listing["responses"]["200"]["content"]["application/json"]["schema"]
        assert {"type": "array", "items": {"$ref": "#/components/schemas/JobOut"}} in answer[
            "anyOf"
        ]
        assert [p["name"] for p in listing["parameters"]] == ["status", "q", "limit", "cursor"]
        trigger = paths["/scheduler/jobs/{id}/trigger"]["put"]["requestBody"]
        text = json.dumps(trigger)
        for kind in ("CronTriggerIn", "IntervalTriggerIn", "DateTriggerIn"):
            assert kind in text
        schemas = doc["components"]["schemas"]
        assert {"CronTriggerIn", "IntervalTriggerIn", "DateTriggerIn"} <= set(schemas)
        health = paths["/scheduler/health"]["get"]["responses"]["200"]["content"]
        assert "last_pass_time" in health["application/json"]["schema"]["properties"]

    def test_the_page_is_not_an_api_operation(self, client):
        paths = client.get("/openapi.json").json()["paths"]
        assert "/scheduler" not in paths


# ---------------------------------------------------------------- metrics


def scrape(client) -> dict[str, list]:
    response = client.get("/scheduler/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples, name, **labels) -> float:
    found = [
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


class TestMetrics:
    def test_scheduler_and_job_figures(self, client, scheduler):
        scheduler.add_job(boom, IntervalTrigger(hours=1, start_now=False), id="boom", name="boom")
        scheduler.pause_job("morning")
        client.post("/scheduler/jobs/tick/run")
        client.post("/scheduler/jobs/boom/run")
        wait_for(lambda: scheduler.get_job("tick").success_count == 1)
        wait_for(lambda: scheduler.get_job("boom").failure_count == 1)
        samples = scrape(client)
        assert value(samples, "nexios_scheduler_running") == 1
        assert value(samples, "nexios_scheduler_leader") == 1
        assert value(samples, "nexios_scheduler_last_pass_timestamp_seconds") <= time.time()
        assert value(samples, "nexios_scheduler_jobs", status="PAUSED") == 1
        assert value(samples, "nexios_scheduler_jobs", status="ACTIVE") == 2
        assert value(samples, "nexios_scheduler_jobs", status="FAILED") == 1
        runs = "nexios_scheduler_job_runs_total"
        assert value(samples, runs, job_id="tick", job_name="tick", outcome="success") == 1
        assert value(samples, runs, job_id="tick", outcome="failure") == 0
        assert value(samples, runs, job_id="boom", outcome="failure") == 1
        assert value(samples, "nexios_scheduler_job_missed_total", job_id="tick") == 0
        assert value(samples, "nexios_scheduler_job_skipped_total", job_id="tick") == 0
        assert value(samples, "nexios_scheduler_job_running", job_id="tick") == 0
        next_run = scheduler.get_job("tick").next_run_time.timestamp()
        assert value(
            samples, "nexios_scheduler_job_next_run_timestamp_seconds", job_id="tick"
        ) == pytest.approx(next_run)
        paused = [
            s
            for s in samples["nexios_scheduler_job_next_run_timestamp_seconds"]
            if s.labels["job_id"] == "morning"
        ]
        assert paused == []
        duration = "nexios_scheduler_job_run_duration_seconds"
        assert value(samples, duration + "_count", job_id="tick") == 1
        assert value(samples, duration + "_bucket", job_id="tick", le="+Inf") == 1
        assert value(samples, duration + "_count", job_id="morning") == 0

    def test_a_second_scrape_counts_each_run_once(self, client, scheduler):
        client.post("/scheduler/jobs/tick/run")
        wait_for(lambda: scheduler.get_job("tick").success_count == 1)
        name = "nexios_scheduler_job_run_duration_seconds_count"
        assert value(scrape(client), name, job_id="tick") == 1
        assert value(scrape(client), name, job_id="tick") == 1
        client.post("/scheduler/jobs/tick/run")
        wait_for(lambda: scheduler.get_job("tick").success_count == 2)
        assert value(scrape(client), name, job_id="tick") == 2

    def test_removed_jobs_leave(self, client, scheduler):
        scheduler.remove_job("tick")
        samples = scrape(client)
        assert all(s.labels.get("job_id") != "tick" for v in samples.values() for s in v)

    def test_501_without_prometheus_client(self, client, monkeypatch):
        for name in [n for n in sys.modules if n.split(".")[0] == "prometheus_client"]:
            monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, "nexios_contrib_scheduler.admin.metrics")
        response = client.get("/scheduler/metrics")
        assert response.status_code == 501
        assert "nexios-contrib-scheduler[metrics]" in error_message(response)


class _Job:
    """What the collector reads from a job."""

    def __init__(self, history):
        self.id, self.name, self.status = "j", "job", JobStatus.ACTIVE
        self.success_count = self.failure_count = self.missed_count = self.skipped_count = 0
        self.current_instances = 0
        self.next_run_time = None
        self.history = history


class _Manager:
    running = True
    last_pass_time = None

    def __init__(self, job):
        self.job = job

    def get_jobs(self):
        return [self.job]


def _run(start_second: int, duration: float, outcome="success") -> RunRecord:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=start_second)
    return RunRecord(start, start, start + timedelta(seconds=duration), outcome)


def _histogram(collector) -> dict[str, float]:
    family = [f for f in collector.collect() if f.name.endswith("run_duration_seconds")][0]
    return {(s.labels.get("le") or s.name.rsplit("_", 1)[-1]): s.value for s in family.samples}


class TestCollector:
    def test_buckets_and_watermark(self):
        job = _Job([])
        collector = SchedulerCollector(_Manager(job), buckets=[0.1, 1, 10])
        job.history = [_run(2, 0.5), _run(1, 0.1), _run(0, 30, "error")]  # newest first
        h = _histogram(collector)
        assert (h["0.1"], h["1.0"], h["10.0"], h["+Inf"]) == (1, 2, 2, 3)
        assert h["count"] == 3
        assert h["sum"] == pytest.approx(30.6)
        job.history = [_run(3, 5), *job.history]
        h = _histogram(collector)
        assert (h["0.1"], h["1.0"], h["10.0"], h["+Inf"]) == (1, 2, 3, 4)
        assert _histogram(collector)["count"] == 4

    def test_runs_that_never_started_have_no_duration(self):
        missed = RunRecord(datetime(2026, 1, 1, tzinfo=timezone.utc), None, None, "missed")
        collector = SchedulerCollector(_Manager(_Job([missed])))
        assert _histogram(collector)["count"] == 0

    def test_history_that_moved_past_the_watermark_counts_what_it_holds(self):
        job = _Job([_run(0, 1)])
        collector = SchedulerCollector(_Manager(job), buckets=[10])
        assert _histogram(collector)["count"] == 1
        job.history = [_run(5, 1), _run(4, 1)]  # the observed run fell out of the history
        assert _histogram(collector)["count"] == 3

    @pytest.mark.parametrize("buckets", [[], [0], [1, 1], [-1, 2]])
    def test_bad_buckets(self, buckets):
        with pytest.raises(ValueError, match="buckets"):
            SchedulerCollector(_Manager(_Job([])), buckets=buckets)


# ---------------------------------------------------------------- the page


class TestDashboardPage:
    def test_self_contained_page_with_a_strict_policy(self, client):
        response = client.get("/scheduler/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        policy = response.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
        assert f'<script nonce="{nonce}">' in response.text
        assert f'<style nonce="{nonce}">' in response.text
        assert "frame-ancestors 'none'" in policy
        assert "connect-src 'self'" in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert not re.search(r"""(src|href)=["']https?://""", response.text)
        assert '"base": "/scheduler"' in response.text
        other = client.get("/scheduler/").headers["content-security-policy"]
        assert other != policy

    def test_without_the_trailing_slash(self, client):
        assert '"base": "/scheduler"' in client.get("/scheduler").text

    def test_title_is_escaped(self):
        app = build_app(title="</script><b>Ops</b>")
        with TestClient(app) as client:
            page = client.get("/scheduler/", headers=TOKEN).text
        assert "<title>&lt;/script&gt;&lt;b&gt;Ops&lt;/b&gt;</title>" in page
        assert "</script><b>" not in page

    async def test_under_a_root_path(self):
        # ASGI servers started with --root-path send paths that include it.
        app = build_app()
        transport = httpx.ASGITransport(app=app, root_path="/app")
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            jobs = await client.get("/app/scheduler/jobs", headers=TOKEN)
            assert jobs.status_code == 200
            assert len(jobs.json()) == 3
            page = await client.get("/app/scheduler/", headers=TOKEN)
            assert '"base": "/app/scheduler"' in page.text
            missing = await client.get("/app/scheduler/nothing", headers=TOKEN)
            assert missing.status_code == 404


# ---------------------------------------------------------------- trigger_from_dict


class TestTriggerFromDict:
    @pytest.mark.parametrize(
        "trigger",
        [
            IntervalTrigger(seconds=30),
            IntervalTrigger(minutes=1.5, hours=2, start_now=False),
            IntervalTrigger(days=1, jitter=5, start_date="2026-01-01T00:00:00+00:00"),
            CronTrigger("0 9 * * 1-5"),
            CronTrigger("@daily", timezone="Europe/Paris", end_date="2030-01-01"),
            DateTimeTrigger("2026-12-25T10:30:00"),
            DateTimeTrigger("2026-12-25T10:30:00+02:00", timezone="UTC"),
        ],
    )
    def test_round_trip(self, trigger):
        data = json.loads(json.dumps(trigger.to_dict()))
        assert trigger_from_dict(data) == trigger

    def test_errors(self):
        with pytest.raises(TriggerError, match="unknown trigger type 'x'"):
            trigger_from_dict({"type": "x"})
        with pytest.raises(TypeError, match="does not take 'secs'; it takes 'seconds'"):
            trigger_from_dict({"type": "interval", "secs": 3})
        with pytest.raises(TypeError, match="mapping"):
            trigger_from_dict([("type", "cron")])
        with pytest.raises(CronSyntaxError):
            trigger_from_dict({"type": "cron", "expr": "* * *"})


# ---------------------------------------------------------------- the demo app's guard


class TestDemoGuard:
    @staticmethod
    async def get(client_address: str, host: str, headers: dict | None = None) -> httpx.Response:
        from nexios_contrib_scheduler.demo import create_app

        transport = httpx.ASGITransport(app=create_app(), client=(client_address, 50000))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            return await client.get("/scheduler/jobs", headers=headers or {})

    @pytest.mark.parametrize(
        "address,host",
        [
            ("127.0.0.1", "127.0.0.1:8000"),
            ("127.0.0.1", "localhost:8000"),
            ("127.5.5.5", "localhost"),
            ("::1", "[::1]:8000"),
            ("::ffff:127.0.0.1", "127.0.0.1:8000"),
        ],
    )
    async def test_lets_in_browsers_on_this_machine(self, address, host):
        response = await self.get(address, host)
        assert response.status_code == 200
        assert "heartbeat" in {job["id"] for job in response.json()}

    async def test_refuses_a_rebound_dns_name(self):
        response = await self.get("127.0.0.1", "evil.example:8000")
        assert response.status_code == 403
        assert "evil.example" in response.text

    async def test_refuses_other_machines_without_the_token(self, monkeypatch):
        monkeypatch.delenv("SCHEDULER_ADMIN_TOKEN", raising=False)
        assert (await self.get("192.0.2.7", "demo.example")).status_code == 401
        unset = await self.get("192.0.2.7", "demo.example", {"X-Admin-Token": ""})
        assert unset.status_code == 401

    async def test_lets_in_the_token(self, monkeypatch):
        monkeypatch.setenv("SCHEDULER_ADMIN_TOKEN", "t0ken")
        good = await self.get("192.0.2.7", "demo.example", {"X-Admin-Token": "t0ken"})
        assert good.status_code == 200
        bad = await self.get("192.0.2.7", "demo.example", {"X-Admin-Token": "guess"})
        assert bad.status_code == 401
        # A wrong token is refused even from this machine.
        local = await self.get("127.0.0.1", "127.0.0.1", {"X-Admin-Token": "guess"})
        assert local.status_code == 401
