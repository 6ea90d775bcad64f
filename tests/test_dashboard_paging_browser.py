"""The dashboard's job list in pages, in headless Chromium: filter, search, next/previous.

The server pages, filters and searches (GET /jobs?limit=&cursor=&status=&q=); the page
shows 50 jobs at a time and polls only the page it shows. Needs Debian's
/usr/bin/chromium and ``playwright``, as tests/test_dashboard_browser.py does (its
``browser`` fixture is reused here).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn
from helpers import wait_for
from nexios import NexiosApp
from test_dashboard_browser import browser  # noqa: F401  (the shared Chromium fixture)

from nexios_contrib_scheduler import IntervalTrigger, SchedulerManager, setup_scheduler
from nexios_contrib_scheduler.admin import scheduler_router

JOBS = 130  # three pages of 50
PAUSED = [f"job-{n:03d}" for n in range(0, JOBS, 10)]  # 13 jobs
REPORTS = [f"job-{n:03d}" for n in range(0, JOBS, 7)]  # 19 jobs call send_report


async def tick() -> None:
    pass


async def send_report() -> None:
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[str, SchedulerManager]]:
    """A fresh app with JOBS jobs (job-000 first), served by uvicorn in a thread."""
    app = NexiosApp()
    scheduler = setup_scheduler(app)
    for n in range(JOBS):
        func = send_report if f"job-{n:03d}" in REPORTS else tick
        trigger = IntervalTrigger(hours=1, start_now=False)
        scheduler.add_job(func, trigger, id=f"job-{n:03d}", name=f"Job {n}")
    for job_id in PAUSED:
        scheduler.pause_job(job_id)
    # Polling every 0.2 s: a test waits for the next refreshes instead of forcing them.
    app.mount_router(scheduler_router(allow_unauthenticated=True, refresh_seconds=0.2))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="dashboard-paging-app", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, "the app to serve")
        assert server.started, f"the app did not start on port {port}"
        yield f"http://127.0.0.1:{port}", scheduler
    finally:
        server.should_exit = True
        thread.join(30)


class Dashboard:
    """The page, and the job-list requests it has sent."""

    def __init__(self, page, base: str) -> None:
        self.page = page
        self.lists: list[dict[str, list[str]]] = []
        page.on("request", self._seen)
        page.goto(f"{base}/scheduler/")
        page.wait_for_selector("tr.job-row")

    def _seen(self, request) -> None:
        url = urlsplit(request.url)
        if url.path == "/scheduler/jobs":
            self.lists.append(parse_qs(url.query, keep_blank_values=True))

    def shown(self) -> list[str]:
        return self.page.locator("tr.job-row").evaluate_all(
            "rows => rows.map(r => r.dataset.jobId)"
        )

    def info(self) -> str:
        return self.page.locator("#page-info").inner_text()

    def wait_for_first(self, job_id: str, count: int) -> None:
        """Wait until the rows start with ``job_id`` and there are ``count`` of them."""
        self.page.wait_for_function(
            """([id, count]) => {
                const rows = document.querySelectorAll("tr.job-row");
                return rows.length === count && rows[0].dataset.jobId === id;
            }""",
            arg=[job_id, count],
        )

    def wait_for_refreshes(self, count: int) -> None:
        for _ in range(count):
            with self.page.expect_response(lambda r: urlsplit(r.url).path == "/scheduler/jobs"):
                pass


@pytest.fixture
def dashboard(browser, served) -> Iterator[Dashboard]:  # noqa: F811  (the imported fixture)
    base, _ = served
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield Dashboard(page, base)
    context.close()
    assert errors == [], f"the page raised: {errors}"


def ids(first: int, last: int) -> list[str]:
    return [f"job-{n:03d}" for n in range(first, last + 1)]


class TestPages:
    def test_next_and_previous_walk_the_pages_of_fifty(self, dashboard):
        assert dashboard.shown() == ids(0, 49)
        assert dashboard.info() == "1–50 of 130"
        assert dashboard.page.locator("#page-prev").is_disabled()

        dashboard.page.click("#page-next")
        dashboard.wait_for_first("job-050", 50)
        assert dashboard.shown() == ids(50, 99)
        assert dashboard.info() == "51–100 of 130"

        dashboard.page.click("#page-next")
        dashboard.wait_for_first("job-100", 30)
        assert dashboard.info() == "101–130 of 130"
        assert dashboard.page.locator("#page-next").is_disabled()

        dashboard.page.click("#page-prev")
        dashboard.wait_for_first("job-050", 50)
        assert dashboard.info() == "51–100 of 130"

    def test_a_new_page_starts_at_the_top_of_the_list(self, dashboard):
        dashboard.page.locator("#page-next").scroll_into_view_if_needed()
        panel_top = "() => document.querySelector('section.panel').getBoundingClientRect().top"
        assert dashboard.page.evaluate(panel_top) < 0
        dashboard.page.click("#page-next")
        dashboard.wait_for_first("job-050", 50)
        dashboard.page.wait_for_function(f"() => Math.abs(({panel_top})()) < 2")

    def test_polling_asks_for_the_page_shown_only(self, dashboard):
        dashboard.page.click("#page-next")
        dashboard.wait_for_first("job-050", 50)
        asked = len(dashboard.lists)
        # The first response seen may answer a request counted in ``asked`` already; a
        # refresh asks again only once the one before has landed, so four responses mean
        # at least three requests sent after ``asked``.
        dashboard.wait_for_refreshes(4)
        polls = dashboard.lists[asked:]
        assert len(polls) >= 3
        cursors = {tuple(poll.get("cursor", [])) for poll in polls}
        assert len(cursors) == 1 and cursors != {()}, polls
        assert all(poll.get("limit") == ["50"] for poll in dashboard.lists), dashboard.lists
        assert dashboard.shown() == ids(50, 99)

    def test_a_page_whose_jobs_all_went_shows_the_one_before(self, dashboard, served):
        _, scheduler = served
        dashboard.page.click("#page-next")
        dashboard.wait_for_first("job-050", 50)
        dashboard.page.click("#page-next")
        dashboard.wait_for_first("job-100", 30)
        for job_id in ids(100, 129):
            scheduler.remove_job(job_id)
        dashboard.wait_for_first("job-050", 50)
        dashboard.page.wait_for_function(
            "() => document.querySelector('#page-info').textContent === '51–100 of 100'"
        )
        assert dashboard.page.locator("#page-next").is_disabled()


class TestFilterAndSearch:
    def test_a_status_tab_lists_the_servers_matches(self, dashboard):
        dashboard.page.click('#tabs button[data-filter="PAUSED"]')
        dashboard.wait_for_first("job-000", len(PAUSED))
        assert dashboard.shown() == PAUSED
        assert dashboard.info() == "1–13 of 13 matching"
        badges = dashboard.page.locator("tr.job-row .badge").all_inner_texts()
        assert set(badges) == {"PAUSED"}
        assert dashboard.lists[-1]["status"] == ["PAUSED"]
        tab = dashboard.page.locator('#tabs [data-n="PAUSED"]').inner_text()
        assert tab == "13"

    def test_search_waits_for_typing_to_pause_then_asks_the_server(self, dashboard):
        asked = len(dashboard.lists)
        # Six keystrokes in one go: no pause between them, so one search only.
        dashboard.page.locator("#search").evaluate(
            """input => {
                for (const value of ["s", "se", "sen", "send", "send_", "SEND_REPORT"]) {
                    input.value = value;
                    input.dispatchEvent(new Event("input", {bubbles: true}));
                }
            }"""
        )
        dashboard.wait_for_first("job-000", len(REPORTS))
        assert dashboard.shown() == REPORTS
        assert dashboard.info() == f"1–{len(REPORTS)} of {len(REPORTS)} matching"
        searches = [poll["q"] for poll in dashboard.lists[asked:] if "q" in poll]
        assert searches and set(map(tuple, searches)) == {("SEND_REPORT",)}

    def test_filter_and_search_combine_and_start_from_the_first_page(self, dashboard):
        dashboard.page.click("#page-next")
        dashboard.wait_for_first("job-050", 50)
        dashboard.page.fill("#search", "report")
        dashboard.wait_for_first("job-000", len(REPORTS))
        dashboard.page.click('#tabs button[data-filter="PAUSED"]')
        both = [job_id for job_id in REPORTS if job_id in PAUSED]
        dashboard.wait_for_first(both[0], len(both))
        assert dashboard.shown() == both == ["job-000", "job-070"]
        last = dashboard.lists[-1]
        assert (last["status"], last["q"], "cursor" in last) == (["PAUSED"], ["report"], False)

    def test_no_match_says_so_and_show_all_clears_the_search(self, dashboard):
        dashboard.page.fill("#search", "no such job")
        dashboard.page.locator("#empty").wait_for(state="visible")
        assert "No jobs match" in dashboard.page.locator("#empty").inner_text()
        assert dashboard.page.locator("#pager").is_hidden()
        dashboard.page.click("#clear-filter")
        dashboard.wait_for_first("job-000", 50)
        assert dashboard.page.locator("#search").input_value() == ""
        assert dashboard.info() == "1–50 of 130"
