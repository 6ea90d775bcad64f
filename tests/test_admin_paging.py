"""The admin job list in pages: limit, cursor, status filter and search (GET /jobs?...)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from nexios import NexiosApp
from nexios.testclient import TestClient

from nexios_contrib_scheduler import IntervalTrigger, SchedulerManager, setup_scheduler
from nexios_contrib_scheduler.admin import paging, scheduler_router
from nexios_contrib_scheduler.admin import router as admin_router
from nexios_contrib_scheduler.testing import FrozenClock

START = datetime(2030, 1, 7, 8, 0, tzinfo=timezone.utc)


async def tick() -> None:
    pass


async def send_invoice() -> None:
    pass


class Client:
    """A TestClient on an app whose jobs are added at known instants of a frozen clock."""

    def __init__(self, client: TestClient, scheduler: SchedulerManager, clock: FrozenClock):
        self.http = client
        self.scheduler = scheduler
        self.clock = clock
        self.at = START

    def add(self, job_id: str, *, func: Any = tick, name: str | None = None, later: bool = True):
        """Add a job created one second after the previous one (or at the same instant)."""
        if later:
            self.at += timedelta(seconds=1)
        self.clock.set(self.at)
        return self.scheduler.add_job(
            func, IntervalTrigger(hours=1), id=job_id, name=name or job_id
        )

    def get(self, **params: Any) -> Any:
        response = self.http.get("/scheduler/jobs", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def walk(self, **params: Any) -> list[dict[str, Any]]:
        """Every page from the first."""
        pages = []
        cursor = None
        while True:
            query = dict(params, cursor=cursor) if cursor else dict(params)
            body = self.get(**query)
            pages.append(body)
            cursor = body["next_cursor"]
            if cursor is None:
                return pages
            assert len(pages) < 1000, "the pages never end"


@pytest.fixture
def api() -> Iterator[Client]:
    with FrozenClock(START) as clock:
        app = NexiosApp()
        scheduler = setup_scheduler(app)
        app.mount_router(scheduler_router(allow_unauthenticated=True))
        with TestClient(app) as http:
            yield Client(http, scheduler, clock)


def ids(pages: list[dict[str, Any]]) -> list[str]:
    return [job["id"] for body in pages for job in body["jobs"]]


class TestPages:
    def test_pages_visit_every_job_once_oldest_first(self, api):
        order = [f"job-{n:02d}" for n in range(25)]
        for job_id in reversed(order[13:]):  # ids out of order: the order is creation time
            api.add(job_id)
        for job_id in order[:13]:
            api.add(job_id)
        expected = list(reversed(order[13:])) + order[:13]

        pages = api.walk(limit=7)

        assert ids(pages) == expected
        assert [len(body["jobs"]) for body in pages] == [7, 7, 7, 4]
        assert [body["offset"] for body in pages] == [0, 7, 14, 21]
        assert {body["total"] for body in pages} == {25}
        assert {body["limit"] for body in pages} == {7}
        assert pages[-1]["next_cursor"] is None

    def test_jobs_created_at_the_same_instant_are_listed_by_id(self, api):
        api.add("m")
        for job_id in ["c", "a", "b"]:
            api.add(job_id, later=False)
        api.add("0")
        assert ids(api.walk(limit=2)) == ["a", "b", "c", "m", "0"]

    def test_each_job_on_a_page_is_the_whole_job_view(self, api):
        api.add("nightly", name="Nightly report")
        body = api.get(limit=10)
        assert set(body) == {"jobs", "total", "offset", "limit", "next_cursor"}
        listed = api.http.get("/scheduler/jobs").json()
        assert body["jobs"] == listed

    def test_the_default_page_is_a_hundred_jobs(self, api):
        for n in range(101):
            api.add(f"job-{n:03d}")
        first = api.get(cursor="")
        assert len(first["jobs"]) == 100 and first["limit"] == 100
        last = api.get(cursor=first["next_cursor"])
        assert ids([last]) == ["job-100"] and last["next_cursor"] is None

    def test_one_page_holds_up_to_a_thousand_jobs(self, api):
        for n in range(1001):
            api.add(f"job-{n:04d}")
        body = api.get(limit=1000)
        assert len(body["jobs"]) == 1000 and body["next_cursor"] is not None

    def test_an_empty_list_is_one_empty_last_page(self, api):
        assert api.get(limit=5) == {
            "jobs": [],
            "total": 0,
            "offset": 0,
            "limit": 5,
            "next_cursor": None,
        }

    def test_a_page_builds_the_views_of_its_own_jobs_only(self, api, monkeypatch):
        for n in range(300):
            api.add(f"job-{n:03d}", func=send_invoice if n % 2 else tick)
        viewed: list[str] = []
        real_view = admin_router.job_view

        def counting_view(job, **options):
            viewed.append(job.id)
            return real_view(job, **options)

        monkeypatch.setattr(admin_router, "job_view", counting_view)
        body = api.get(limit=10, q="invoice", status="ACTIVE")
        assert body["total"] == 150
        assert viewed == ids([body])
        assert len(viewed) == 10


class TestChangesBetweenPages:
    def test_jobs_added_and_removed_between_pages_skip_or_repeat_no_lasting_job(self, api):
        for n in range(40):
            api.add(f"job-{n:02d}")
        lasting = {f"job-{n:02d}" for n in range(40)}
        listed: list[str] = []
        cursor = None
        for turn in range(100):
            body = api.get(limit=5, **({"cursor": cursor} if cursor else {}))
            shown = ids([body])
            listed.extend(shown)
            cursor = body["next_cursor"]
            if cursor is None:
                break
            # Removed: the job the cursor points at, one shown before it, one not reached.
            for job_id in (shown[-1], shown[0], f"job-{39 - turn:02d}"):
                if api.scheduler.remove_job(job_id):
                    lasting.discard(job_id)
            api.add(f"new-{turn}")  # created after every other job: listed at the end
            api.clock.set(START)  # created before every other job: behind the cursor
            api.scheduler.add_job(tick, IntervalTrigger(hours=1), id=f"early-{turn}")
        else:
            pytest.fail("the pages never end")

        assert len(listed) == len(set(listed)), "a job was listed twice"
        assert lasting <= set(listed), f"skipped: {sorted(lasting - set(listed))}"
        assert [i for i in listed if i.startswith("early-")] == []
        assert [i for i in listed if i.startswith("new-")] == [f"new-{n}" for n in range(turn)]

    def test_a_cursor_still_works_after_its_job_is_removed(self, api):
        for n in range(6):
            api.add(f"job-{n}")
        first = api.get(limit=3)
        assert ids([first]) == ["job-0", "job-1", "job-2"]
        api.scheduler.remove_job("job-2")
        second = api.get(limit=3, cursor=first["next_cursor"])
        assert ids([second]) == ["job-3", "job-4", "job-5"]
        assert second["offset"] == 2 and second["total"] == 5

    def test_a_replaced_job_moves_to_the_end(self, api):
        for n in range(5):
            api.add(f"job-{n}")
        first = api.get(limit=2)
        api.at += timedelta(seconds=1)
        api.clock.set(api.at)
        api.scheduler.add_job(tick, IntervalTrigger(hours=1), id="job-0", replace_existing=True)
        api.scheduler.add_job(tick, IntervalTrigger(hours=1), id="job-3", replace_existing=True)
        rest = api.walk(limit=2, cursor=first["next_cursor"])
        assert ids([first, *rest]) == ["job-0", "job-1", "job-2", "job-4", "job-0", "job-3"]
        assert ids(api.walk(limit=2)) == ["job-1", "job-2", "job-4", "job-0", "job-3"]
        assert rest[0]["offset"] == 1  # job-1: the only job left at or before the cursor


class TestFilters:
    @pytest.fixture
    def jobs(self, api):
        api.add("billing-daily", func=send_invoice, name="Daily invoices")
        api.add("billing-weekly", func=send_invoice, name="Weekly invoices")
        api.add("cleanup", name="Remove old files")
        api.add("REPORT-1", name="Sales report")
        api.add("report-2", name="Stock report")
        api.scheduler.pause_job("billing-weekly")
        api.scheduler.pause_job("report-2")
        return api

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            ("PAUSED", ["billing-weekly", "report-2"]),
            ("paused", ["billing-weekly", "report-2"]),
            ("ACTIVE", ["billing-daily", "cleanup", "REPORT-1"]),
            (
                "PAUSED,active",
                ["billing-daily", "billing-weekly", "cleanup", "REPORT-1", "report-2"],
            ),
            (" PAUSED , COMPLETED ,", ["billing-weekly", "report-2"]),
            ("COMPLETED,FAILED", []),
            ("", ["billing-daily", "billing-weekly", "cleanup", "REPORT-1", "report-2"]),
        ],
    )
    def test_status_takes_one_or_several_statuses(self, jobs, status, expected):
        body = jobs.get(status=status, limit=10)
        assert ids([body]) == expected
        assert body["total"] == len(expected)

    def test_status_may_be_repeated(self, jobs):
        response = jobs.http.get("/scheduler/jobs?status=COMPLETED&status=PAUSED&limit=9")
        assert ids([response.json()]) == ["billing-weekly", "report-2"]

    @pytest.mark.parametrize(
        ("q", "expected"),
        [
            ("report", ["REPORT-1", "report-2"]),  # the id, in any case
            ("Invoices", ["billing-daily", "billing-weekly"]),  # the name
            ("OLD FILES", ["cleanup"]),
            ("send_invoice", ["billing-daily", "billing-weekly"]),  # the function
            ("test_admin_paging:tick", ["cleanup", "REPORT-1", "report-2"]),
            ("  cleanup  ", ["cleanup"]),  # spaces around are not searched for
            ("nothing like this", []),
        ],
    )
    def test_q_finds_id_name_or_function_in_any_case(self, jobs, q, expected):
        body = jobs.get(q=q, limit=10)
        assert ids([body]) == expected
        assert body["total"] == len(expected)

    def test_status_and_q_combine_across_pages(self, api):
        for n in range(30):
            api.add(f"sync-{n:02d}" if n % 3 else f"other-{n:02d}")
            if n % 2:
                api.scheduler.pause_job(f"sync-{n:02d}" if n % 3 else f"other-{n:02d}")
        expected = [f"sync-{n:02d}" for n in range(30) if n % 3 and n % 2]
        pages = api.walk(limit=4, status="PAUSED", q="SYNC")
        assert ids(pages) == expected
        assert {body["total"] for body in pages} == {len(expected)}

    def test_filters_without_limit_or_cursor_keep_the_bare_list(self, jobs):
        listed = jobs.http.get("/scheduler/jobs", params={"status": "PAUSED,ACTIVE", "q": "bill"})
        assert [job["id"] for job in listed.json()] == ["billing-daily", "billing-weekly"]
        everything = jobs.http.get("/scheduler/jobs").json()
        assert isinstance(everything, list) and len(everything) == 5


class TestFilteredPagesInSlices:
    """A filtered page looks at the jobs a slice at a time (``paging.SLICE``), letting the
    event loop run in between: the answer is the same as in one pass."""

    @pytest.fixture(autouse=True)
    def small_slices(self, monkeypatch):
        monkeypatch.setattr(paging, "SLICE", 7)

    def test_pages_counts_and_cursors_across_slices(self, api):
        for n in range(60):
            api.add(f"job-{n:02d}", func=send_invoice if n % 4 == 0 else tick)
            if n % 3 == 0:
                api.scheduler.pause_job(f"job-{n:02d}")
        paused = [f"job-{n:02d}" for n in range(60) if n % 3 == 0]
        pages = api.walk(limit=6, status="PAUSED")
        assert ids(pages) == paused
        assert [body["offset"] for body in pages] == [0, 6, 12, 18]
        assert {body["total"] for body in pages} == {20}
        both = [f"job-{n:02d}" for n in range(60) if n % 12 == 0]
        pages = api.walk(limit=2, status="PAUSED", q="INVOICE")
        assert ids(pages) == both
        assert [body["offset"] for body in pages] == [0, 2, 4]

    def test_a_cursor_from_a_filtered_page_counts_what_came_before_it(self, api):
        for n in range(30):
            api.add(f"job-{n:02d}")
        first = api.get(limit=5, q="JOB-1")  # job-10 .. job-19 match
        assert ids([first]) == ["job-10", "job-11", "job-12", "job-13", "job-14"]
        api.scheduler.remove_job("job-11")
        api.add("job-1x")  # created after every other job: listed at the end
        second = api.get(limit=10, q="JOB-1", cursor=first["next_cursor"])
        assert ids([second]) == ["job-15", "job-16", "job-17", "job-18", "job-19", "job-1x"]
        assert (second["offset"], second["total"]) == (4, 10)
        assert second["next_cursor"] is None

    async def test_the_loop_runs_between_slices_and_the_page_is_a_snapshot(self):
        scheduler = SchedulerManager()
        for n in range(50):
            scheduler.add_job(tick, IntervalTrigger(hours=1), id=f"job-{n:02d}")
        turns: list[int] = []

        async def meanwhile() -> None:
            # Runs whenever the page yields: removes a job it has not reached yet.
            for n in range(49, 40, -1):
                turns.append(n)
                scheduler.remove_job(f"job-{n:02d}")
                await asyncio.sleep(0)

        other = asyncio.ensure_future(meanwhile())
        query = paging.parse_query({"limit": "100", "q": "JOB"})
        found = await paging.page(scheduler.job_list(), query)
        await other
        assert len(turns) >= 50 // 7  # the loop ran at least once per slice
        # Read from the snapshot taken at the start: the 50 jobs there were then.
        assert found.total == 50 and len(found.jobs) == 50
        assert found.next_cursor is None


HOSTILE = [
    "%",
    "%25",
    "_",
    "*",
    ".*",
    "(a+)+$",
    "[",
    "\\",
    "'; DROP TABLE jobs; --",
    '" OR 1=1 --',
    "<script>alert(1)</script>",
    "{{config}}",
    "${jndi:ldap://x}",
    "$where",
    "\x00",
    "../..",
    "\u202e",
    "🚀",
    "a" * 200,
]


class TestHostileSearch:
    @pytest.mark.parametrize("q", HOSTILE)
    def test_a_hostile_q_is_searched_for_as_plain_text(self, api, q):
        jobs = {"plain": "plain", "50% off": "half", "a.*b": "dot star", "xss": HOSTILE[10]}
        for job_id, name in jobs.items():
            api.add(job_id, name=name)
        wanted = q.strip().casefold()
        expected = [
            job_id
            for job_id, name in jobs.items()
            if any(wanted in text.casefold() for text in (job_id, name, "test_admin_paging:tick"))
        ]
        body = api.get(q=q, limit=10)
        assert ids([body]) == expected
        assert body["total"] == len(expected)
        assert sorted(job.id for job in api.scheduler.get_jobs()) == sorted(jobs)

    @pytest.mark.parametrize("raw", ["%ED%A0%80", "%FF%FE", "%00", "%25%32%35", "%E2%80%AE"])
    def test_a_q_that_is_not_valid_text_in_the_url_finds_nothing_and_breaks_nothing(self, api, raw):
        api.add("plain")
        response = api.http.get(f"/scheduler/jobs?limit=5&q={raw}")
        assert response.status_code == 200
        assert response.json()["jobs"] == []


def error_of(response) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"status", "error", "message"}
    assert body["status"] == 422 and body["error"] == "Unprocessable Entity"
    assert len(response.content) < 500
    return body["message"]


def _cursor(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


class TestRefusals:
    @pytest.mark.parametrize(
        "limit", ["0", "-1", "1001", "abc", "1.5", " 5", "1e3", "١٢", "10" * 30, "5,6"]
    )
    def test_a_bad_limit_is_a_short_422(self, api, limit):
        message = error_of(api.http.get("/scheduler/jobs", params={"limit": limit}))
        assert message.startswith("limit must be a whole number from 1 to 1000, not ")
        assert repr(limit)[:50] in message

    @pytest.mark.parametrize(
        "cursor",
        [
            "not a cursor",
            "!!!!",
            "AAAA",
            _cursor({"after": "x"}),
            _cursor([1, "2030-01-07T08:00:00", "naive-time"]),
            _cursor([2, "2030-01-07T08:00:00+00:00", "other-version"]),
            _cursor([1, "yesterday", "x"]),
            _cursor([1, "2030-01-07T08:00:00+00:00", 5]),
            base64.urlsafe_b64encode(b"[" * 20_000).decode(),
            "é" * 10,
        ],
    )
    def test_a_bad_cursor_is_a_short_422(self, api, cursor):
        message = error_of(api.http.get("/scheduler/jobs", params={"cursor": cursor}))
        assert "is not one this API gave" in message
        assert "next_cursor" in message

    @pytest.mark.parametrize("status", ["sleeping", "ACTIVE,sleeping", "x" * 10000])
    def test_an_unknown_status_is_a_short_422(self, api, status):
        message = error_of(api.http.get("/scheduler/jobs", params={"status": status, "limit": 5}))
        assert "ACTIVE, PAUSED, COMPLETED, FAILED, CANCELLED" in message
        assert "several separated by commas" in message

    def test_a_search_over_200_characters_is_a_short_422(self, api):
        message = error_of(api.http.get("/scheduler/jobs", params={"q": "x" * 201}))
        assert message == "q is 201 characters long: a search may be up to 200"


def test_the_openapi_document_describes_the_paging_parameters(api):
    doc = api.http.get("/openapi.json").json()
    listing = doc["paths"]["/scheduler/jobs"]["get"]
    assert [p["name"] for p in listing["parameters"]] == ["status", "q", "limit", "cursor"]
    answer = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["anyOf"] == [
        {"type": "array", "items": {"$ref": "#/components/schemas/JobOut"}},
        {"$ref": "#/components/schemas/JobPageOut"},
    ]
    page = doc["components"]["schemas"]["JobPageOut"]
    assert set(page["properties"]) == {"jobs", "total", "offset", "limit", "next_cursor"}
    references = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert references - set(doc["components"]["schemas"]) == set()
