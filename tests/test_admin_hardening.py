"""The admin API under hostile data: job arguments and texts it must show, bodies it must
refuse, ids it must reach, arguments it must hide, triggers it must take back."""

from __future__ import annotations

import json
import logging
from datetime import timedelta, timezone
from urllib.parse import quote

import pytest
from helpers import wait_for
from nexios import NexiosApp
from nexios.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    SchedulerManager,
    setup_scheduler,
)
from nexios_contrib_scheduler.admin import scheduler_router

SECRET = "postgresql://app:hunter2@db.internal/prod"
TRIGGER = IntervalTrigger(minutes=10, start_now=False)
LIMIT = 2000  # characters: what "a short error" may take, body included


async def tick(*args: object, **kwargs: object) -> None:
    pass


def build_app(**router_options: object) -> NexiosApp:
    app = NexiosApp()
    scheduler = setup_scheduler(app)
    scheduler.add_job(tick, TRIGGER, id="plain", name="plain")
    router_options.setdefault("allow_unauthenticated", True)
    app.mount_router(scheduler_router(**router_options))
    return app


@pytest.fixture
def app() -> NexiosApp:
    return build_app()


@pytest.fixture
def scheduler(app: NexiosApp) -> SchedulerManager:
    return app.scheduler  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def client(app: NexiosApp):
    with TestClient(app) as client:
        yield client


def url(job_id: str, action: str = "") -> str:
    """The path of a job, for Nexios' TestClient.

    A server decodes a path once (``%25`` is ``%``); Nexios' TestClient (3.12) decodes it
    twice, so ids are encoded twice here to reach the app as a server would pass them.
    The dashboard's browser tests check the single encoding against a real server.
    """
    once = quote(job_id, safe="")
    return "/scheduler/jobs/" + quote(once, safe="") + (f"/{action}" if action else "")


def assert_short_json_error(response, status_range: range = range(400, 500)) -> str:
    """A 4xx (by default) answered as the API's error object, short, without a traceback."""
    assert response.status_code in status_range, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    assert len(response.text) < LIMIT, response.text[:300]
    body = response.json()
    assert set(body) == {"status", "error", "message"}, body
    assert body["status"] == response.status_code
    return str(body["message"])


# ---------------------------------------------------------------- item 9: one job's data


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class _ReprNotText:
    def __repr__(self) -> object:  # type: ignore[override]
        return 42


def _self_referencing_list() -> list[object]:
    loop: list[object] = [1]
    loop.append(loop)
    return loop


def _self_referencing_dict() -> dict[str, object]:
    loop: dict[str, object] = {"a": 1}
    loop["me"] = loop
    return loop


def _deep(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_ARGUMENTS = {
    "inf": ((), {"threshold": float("inf")}),
    "nan": ((float("nan"), float("-inf")), {}),
    "self-list": ((_self_referencing_list(),), {}),
    "self-dict": ((), {"config": _self_referencing_dict()}),
    "deep": ((_deep(5000),), {}),
    "repr-raises": ((_ReprRaises(),), {"x": _ReprRaises()}),
    "repr-not-text": ((_ReprNotText(),), {}),
    "bytes": ((b"\x00\xff" * 10, bytearray(b"abc"), memoryview(b"xyz")), {}),
    "huge-text": (("x" * 5_000_000,), {}),
    "huge-list": ((list(range(1_000_000)),), {}),
    "huge-int": ((10**5000, -(10**50)), {}),
    "odd-keys": ((), {"k": {(1, 2): "tuple key", None: 1, float("nan"): 2}}),
    "surrogates": (("\udc80 lone",), {"s": "\ud800"}),
    "sets": (({1, 2}, frozenset({"a"})), {}),
}


class TestOneJobsDataNeverBreaksTheAPI:
    """Every kind of argument (and text) a job may hold still lists, with every other job."""

    @pytest.mark.parametrize("show_arguments", [False, True])
    @pytest.mark.parametrize("kind", list(HOSTILE_ARGUMENTS))
    def test_a_job_with_hostile_arguments_leaves_every_endpoint_answering(
        self, kind: str, show_arguments: bool
    ) -> None:
        app = build_app(show_arguments=show_arguments)
        scheduler = app.scheduler  # type: ignore[attr-defined]
        args, kwargs = HOSTILE_ARGUMENTS[kind]
        scheduler.add_job(tick, TRIGGER, id="hostile", args=args, kwargs=kwargs)
        with TestClient(app) as client:
            listing = client.get("/scheduler/jobs")
            assert listing.status_code == 200, listing.text[:300]
            assert [job["id"] for job in listing.json()] == ["plain", "hostile"]
            assert len(listing.content) < 200_000
            detail = client.get("/scheduler/jobs/hostile")
            assert detail.status_code == 200, detail.text[:300]
            assert len(detail.json()["args"]) == len(args)
            assert set(detail.json()["kwargs"]) == {str(key) for key in kwargs}
            assert client.get("/scheduler/health").status_code == 200
            assert client.get("/scheduler/metrics").status_code == 200
            paused = client.post("/scheduler/jobs/hostile/pause")
            assert paused.status_code == 200, paused.text[:300]

    def test_infinite_and_nan_values_are_shown_as_text(self) -> None:
        app = build_app(show_arguments=True)
        app.scheduler.add_job(  # type: ignore[attr-defined]
            tick, TRIGGER, id="inf", args=(float("nan"),), kwargs={"threshold": float("inf")}
        )
        with TestClient(app) as client:
            job = client.get("/scheduler/jobs/inf").json()
        assert job["kwargs"] == {"threshold": "inf"}
        assert job["args"] == ["nan"]

    def test_a_self_referencing_argument_is_shown_up_to_where_it_repeats(self) -> None:
        app = build_app(show_arguments=True)
        app.scheduler.add_job(  # type: ignore[attr-defined]
            tick, TRIGGER, id="loop", args=(_self_referencing_list(),)
        )
        with TestClient(app) as client:
            job = client.get("/scheduler/jobs/loop").json()
        assert job["args"] == [[1, "<recursive list>"]]

    def test_huge_arguments_are_cut_and_say_how_much_was_left_out(self) -> None:
        app = build_app(show_arguments=True)
        app.scheduler.add_job(  # type: ignore[attr-defined]
            tick,
            TRIGGER,
            id="huge",
            args=("x" * 5_000_000, list(range(1_000_000)), 10**5000, b"\x01" * 100_000),
        )
        with TestClient(app) as client:
            text, items, number, data = client.get("/scheduler/jobs/huge").json()["args"]
        assert text.startswith("xxxx") and text.endswith("(5000000 characters)")
        assert items[:3] == [0, 1, 2] and items[-1] == "… 999900 more items"
        assert number == "<int of about 5001 digits>"
        assert data.startswith("b'\\x01") and data.endswith("(100000 bytes)")

    def test_an_argument_whose_repr_fails_is_named_by_its_type(self) -> None:
        app = build_app(show_arguments=True)
        app.scheduler.add_job(  # type: ignore[attr-defined]
            tick, TRIGGER, id="odd", args=(_ReprRaises(), _ReprNotText())
        )
        with TestClient(app) as client:
            job = client.get("/scheduler/jobs/odd").json()
        assert job["args"] == ["<unrepresentable _ReprRaises>", "<unrepresentable _ReprNotText>"]

    def test_hostile_names_reasons_and_errors_are_listed(self, client, scheduler) -> None:
        huge = "e" * 1_000_000

        async def fails() -> None:
            raise ValueError(huge)

        scheduler.add_job(fails, TRIGGER, id="fails", name="name \udc80 " + "n" * 100_000)
        assert client.post("/scheduler/jobs/fails/run").status_code == 202
        wait_for(lambda: scheduler.get_job("fails").failure_count == 1, what="the failed run")
        scheduler.pause_job("fails", "reason \ud800 " + "r" * 100_000)
        for path in ("/scheduler/jobs", "/scheduler/jobs/fails"):
            response = client.get(path)
            assert response.status_code == 200, response.text[:300]
            assert len(response.content) < 100_000
        job = client.get("/scheduler/jobs/fails").json()
        assert job["name"].startswith("name \ufffd nnn")
        assert job["paused_reason"].startswith("reason \ufffd rrr")
        assert job["last_error"].startswith("ValueError: eee")
        assert job["history"][0]["error"].startswith("ValueError: eee")
        metrics = client.get("/scheduler/metrics")
        assert metrics.status_code == 200
        names = {
            sample.labels.get("job_name", "")
            for family in text_string_to_metric_families(metrics.text)
            for sample in family.samples
        }
        assert any(name.startswith("name \ufffd nnn") for name in names)


# ---------------------------------------------------------------- item 10: bad bodies

DEEP = b'{"type": "interval", "seconds": ' + b"[" * 20000 + b"]" * 20000 + b"}"

HOSTILE_TRIGGER_BODIES: dict[str, bytes] = {
    "400-digit integer": b'{"type": "interval", "seconds": 1' + b"0" * 400 + b"}",
    "5000-digit integer": b'{"type": "interval", "seconds": 1' + b"0" * 5000 + b"}",
    "1e308 seconds": b'{"type": "interval", "seconds": 1e308}',
    "1e308 weeks": b'{"type": "interval", "weeks": 1e308}',
    "-1e308 seconds": b'{"type": "interval", "seconds": -1e308}',
    "1e999 (infinite) seconds": b'{"type": "interval", "seconds": 1e999}',
    "NaN seconds": b'{"type": "interval", "seconds": NaN}',
    "Infinity jitter": b'{"type": "interval", "seconds": 5, "jitter": Infinity}',
    "1e308 jitter": b'{"type": "interval", "seconds": 5, "jitter": 1e308}',
    "string seconds": b'{"type": "interval", "seconds": "5"}',
    "list seconds": b'{"type": "interval", "seconds": [5]}',
    "object seconds": b'{"type": "interval", "seconds": {"a": 1}}',
    "boolean seconds": b'{"type": "interval", "seconds": true}',
    "null seconds": b'{"type": "interval", "seconds": null}',
    "number type": b'{"type": 5}',
    "list type": b'{"type": ["interval"]}',
    "object type": b'{"type": {"interval": 1}}',
    "number expr": b'{"type": "cron", "expr": 5}',
    "huge expr": b'{"type": "cron", "expr": "' + b"*" * 60000 + b'"}',
    "huge timezone": b'{"type": "cron", "expr": "* * * * *", "timezone": "' + b"x" * 60000 + b'"}',
    "number timezone": b'{"type": "cron", "expr": "* * * * *", "timezone": 5}',
    "surrogate expr": b'{"type": "cron", "expr": "\\ud800"}',
    "number run_date": b'{"type": "date", "run_date": 5}',
    "year 0 run_date": b'{"type": "date", "run_date": "0000-01-01T00:00:00"}',
    "year 1 run_date": b'{"type": "date", "run_date": "0001-01-01T00:00:00+14:00"}',
    "number start_date": b'{"type": "interval", "seconds": 5, "start_date": 5}',
    "huge key": b'{"' + b"k" * 60000 + b'": 1}',
    "deep nesting": DEEP,
    "deep array": b"[" * 60000,
    "array": b'[{"type": "interval", "seconds": 5}]',
    "string": b'"interval"',
    "number": b"5",
    "true": b"true",
    "null": b"null",
    "truncated": b'{"type": "interval", ',
    "single quotes": b"{'type': 'interval'}",
    "not UTF-8": b"\xff\xfe{}",
    "over 64 KiB": b'{"type": "cron", "expr": "' + b"*" * 70000 + b'"}',
}


class TestEveryBadBodyIsAShort4xx:
    @pytest.mark.parametrize("body", HOSTILE_TRIGGER_BODIES.values(), ids=HOSTILE_TRIGGER_BODIES)
    def test_a_hostile_trigger_body_is_refused_and_changes_nothing(
        self, client, scheduler, body: bytes
    ) -> None:
        response = client.put(
            url("plain", "trigger"), content=body, headers={"Content-Type": "application/json"}
        )
        assert_short_json_error(response)
        assert scheduler.get_job("plain").trigger == TRIGGER

    def test_a_400_digit_interval_is_a_422_quoting_the_value_briefly(self, client) -> None:
        response = client.put(
            url("plain", "trigger"), json={"type": "interval", "seconds": 10**400}
        )
        assert_short_json_error(response, range(422, 423))

    @pytest.mark.parametrize(
        "body",
        [
            b'{"reason": 5}',
            b'{"reason": ["x"]}',
            b'{"reason": "' + b"x" * 1000 + b'"}',
            b'{"reason": "x", "extra": 1}',
            b'{"reason": NaN}',
            b"[]",
            b'"x"',
            b"[" * 60000,
            b'{"reason": ' + b"[" * 20000 + b"]" * 20000 + b"}",
            b"\xff",
        ],
        ids=lambda body: body[:24].decode("latin-1"),
    )
    def test_a_hostile_pause_body_is_refused(self, client, scheduler, body: bytes) -> None:
        response = client.post(
            url("plain", "pause"), content=body, headers={"Content-Type": "application/json"}
        )
        assert_short_json_error(response)
        assert scheduler.get_job("plain").status is JobStatus.ACTIVE

    @pytest.mark.parametrize("action", ["resume", "run"])
    @pytest.mark.parametrize(
        "body", [b"[" * 60000, b"{", b'{"x": NaN}'], ids=["deep", "bad", "nan"]
    )
    def test_a_hostile_body_on_a_bodiless_action_is_refused(
        self, client, action: str, body: bytes
    ) -> None:
        response = client.post(
            url("plain", action), content=body, headers={"Content-Type": "application/json"}
        )
        assert_short_json_error(response)

    def test_a_hostile_body_on_remove_is_refused_and_keeps_the_job(self, client, scheduler):
        response = client.request(
            "DELETE",
            url("plain"),
            content=b"[" * 60000,
            headers={"Content-Type": "application/json"},
        )
        assert_short_json_error(response)
        assert scheduler.get_job("plain") is not None

    def test_a_hostile_status_filter_is_a_short_422(self, client) -> None:
        response = client.get("/scheduler/jobs", params={"status": "x" * 10000})
        assert len(assert_short_json_error(response, range(422, 423))) < 500

    def test_an_unexpected_error_is_a_short_500_and_the_traceback_is_logged(
        self, client, scheduler, monkeypatch, caplog
    ) -> None:
        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("internal detail 4711")

        monkeypatch.setattr(scheduler, "get_jobs", broken)
        monkeypatch.setattr(scheduler, "pause_job", broken)
        with caplog.at_level(logging.ERROR, logger="nexios_contrib_scheduler"):
            listing = client.get("/scheduler/jobs")
            pause = client.post(url("plain", "pause"))
        for response in (listing, pause):
            message = assert_short_json_error(response, range(500, 501))
            assert "internal detail" not in response.text
            assert "log" in message
        logged = [r for r in caplog.records if r.exc_info and "4711" in str(r.exc_info[1])]
        assert len(logged) == 2
        assert "/scheduler/jobs" in logged[0].getMessage()

    def test_a_router_on_an_app_without_a_scheduler_says_so_briefly(self) -> None:
        app = NexiosApp()
        app.mount_router(scheduler_router(allow_unauthenticated=True))
        with TestClient(app) as client:
            response = client.get("/scheduler/jobs")
        assert "setup_scheduler" in assert_short_json_error(response, range(500, 501))


# ---------------------------------------------------------------- item 11: every id reachable

UNUSUAL_IDS = [
    "nightly report",
    " leading and trailing ",
    "50%",
    "100%25",
    "a%2Fb",
    "what?",
    "a?b=c&d",
    "#hash",
    "a+b",
    "ünïcödé ✓",
    "日本語のジョブ",
    "emoji 🚀",
    'say "hi"',
    "it's",
    "<img src=x onerror=alert(1)>",
    "back\\slash",
    "semi;colon",
    "...",
    "a.b",
    ".hidden",
    "constructor",
    "__proto__",
]


class TestEveryIdIsReachable:
    @pytest.mark.parametrize("job_id", UNUSUAL_IDS)
    def test_every_action_reaches_a_job_with_an_unusual_id(self, client, scheduler, job_id):
        scheduler.add_job(tick, TRIGGER, id=job_id)
        got = client.get(url(job_id))
        assert got.status_code == 200, got.text[:300]
        assert got.json()["id"] == job_id
        assert job_id in [job["id"] for job in client.get("/scheduler/jobs").json()]
        paused = client.post(url(job_id, "pause"), json={"reason": "checking"})
        assert paused.status_code == 200 and paused.json()["id"] == job_id
        assert scheduler.get_job(job_id).status is JobStatus.PAUSED
        assert client.post(url(job_id, "resume")).status_code == 200
        assert scheduler.get_job(job_id).status is JobStatus.ACTIVE
        assert client.post(url(job_id, "run")).status_code == 202
        wait_for(lambda: scheduler.get_job(job_id).total_run_count == 1, what="the run")
        moved = client.put(url(job_id, "trigger"), json={"type": "interval", "minutes": 5})
        assert moved.status_code == 200 and moved.json()["id"] == job_id
        assert scheduler.get_job(job_id).trigger == IntervalTrigger(minutes=5)
        assert client.delete(url(job_id)).status_code == 204
        assert scheduler.get_job(job_id) is None
        assert scheduler.get_job("plain") is not None

    def test_a_missing_unusual_id_is_quoted_in_the_404(self, client) -> None:
        response = client.get(url("<b>gone<b> 100%"))
        assert response.status_code == 404
        assert response.json()["message"] == "No job by the id of '<b>gone<b> 100%' was found"

    def test_a_very_long_missing_id_is_quoted_briefly(self, client) -> None:
        response = client.get(url("x" * 10_000))
        assert response.status_code == 404
        assert "No job by the id of 'xxx" in assert_short_json_error(response)


# ---------------------------------------------------------------- item 12: redaction


def _secret_app(**router_options: object) -> NexiosApp:
    app = build_app(**router_options)
    app.scheduler.add_job(  # type: ignore[attr-defined]
        tick,
        TRIGGER,
        id="export",
        args=(SECRET, 3),
        kwargs={"token": "tok-123456", "retries": 2, "options": {"password": "pw-987"}},
    )
    return app


def _job_answers(client) -> list[dict[str, object]]:
    """The export job as every endpoint that returns a job answers it."""
    listed = [job for job in client.get("/scheduler/jobs").json() if job["id"] == "export"]
    return [
        *listed,
        client.get("/scheduler/jobs/export").json(),
        client.post("/scheduler/jobs/export/pause").json(),
        client.post("/scheduler/jobs/export/resume").json(),
        client.put("/scheduler/jobs/export/trigger", json={"type": "interval", "hours": 1}).json(),
    ]


class TestArgumentsAreHiddenByDefault:
    @pytest.mark.parametrize("read_only", [False, True])
    def test_values_are_hidden_and_only_types_and_keyword_names_are_shown(self, read_only):
        with TestClient(_secret_app(read_only=read_only)) as client:
            raw = client.get("/scheduler/jobs").text + client.get("/scheduler/jobs/export").text
            answers = (
                _job_answers(client)
                if not read_only
                else [client.get("/scheduler/jobs/export").json()]
            )
        for secret in ("hunter2", "tok-123456", "pw-987", SECRET):
            assert secret not in raw
        for job in answers:
            assert job["args"] == ["<hidden str>", "<hidden int>"]
            assert job["kwargs"] == {
                "token": "<hidden str>",
                "retries": "<hidden int>",
                "options": "<hidden dict>",
            }

    def test_show_arguments_true_shows_the_values(self) -> None:
        with TestClient(_secret_app(show_arguments=True)) as client:
            answers = _job_answers(client)
        for job in answers:
            assert job["args"] == [SECRET, 3]
            assert job["kwargs"] == {
                "token": "tok-123456",
                "retries": 2,
                "options": {"password": "pw-987"},
            }

    def test_the_dashboard_is_told_whether_arguments_are_shown(self) -> None:
        for shown in (False, True):
            with TestClient(_secret_app(show_arguments=shown)) as client:
                page = client.get("/scheduler/").text
            config = json.loads(page.split('id="config"', 1)[1].split(">", 1)[1].split("<")[0])
            assert config["showArguments"] is shown

    @pytest.mark.parametrize("value", [1, "yes", None])
    def test_show_arguments_must_be_a_bool(self, value: object) -> None:
        with pytest.raises(TypeError, match=f"show_arguments must be True or False, not {value!r}"):
            scheduler_router(allow_unauthenticated=True, show_arguments=value)


# ---------------------------------------------------------------- item 13: PUT back as read

ROUND_TRIP_TRIGGERS = {
    "interval in UTC": IntervalTrigger(hours=2, start_date="2030-01-01T00:00:00+00:00"),
    "cron in UTC": CronTrigger("15 9 * * 1-5", timezone="UTC"),
    "cron in an IANA zone": CronTrigger("30 7 * * sat", timezone="Europe/Paris"),
    "date in an IANA zone": DateTimeTrigger("2098-12-25T10:30:00", timezone="America/New_York"),
    "cron in a fixed offset": CronTrigger(
        "0 9 * * *", timezone=timezone(timedelta(hours=5, minutes=30))
    ),
    "date in a fixed offset": DateTimeTrigger(
        "2098-12-25T10:30:00", timezone=timezone(timedelta(hours=-3, minutes=-30))
    ),
}


class TestATriggerReadCanBePutBack:
    @pytest.mark.parametrize("trigger", ROUND_TRIP_TRIGGERS.values(), ids=list(ROUND_TRIP_TRIGGERS))
    def test_the_trigger_of_get_job_is_accepted_by_put_trigger_unchanged(
        self, client, scheduler, trigger
    ) -> None:
        scheduler.add_job(tick, trigger, id="source")
        read = client.get(url("source")).json()
        times = read["next_run_times"]
        response = client.put(url("plain", "trigger"), json=read["trigger"])
        assert response.status_code == 200, response.text[:300]
        assert scheduler.get_job("plain").trigger == trigger
        assert response.json()["trigger"] == read["trigger"]
        assert client.get(url("plain")).json()["next_run_times"][:1] == times[:1]


def test_a_job_removed_while_its_new_trigger_is_read_is_a_404(client, scheduler, monkeypatch):
    real = scheduler.reschedule_job

    def removed_first(job_id: str, trigger: object) -> object:
        scheduler.remove_job(job_id)
        return real(job_id, trigger)

    monkeypatch.setattr(scheduler, "reschedule_job", removed_first)
    response = client.put(url("plain", "trigger"), json={"type": "interval", "minutes": 5})
    assert assert_short_json_error(response, range(404, 405)) == (
        "No job by the id of 'plain' was found"
    )
