"""The dashboard in headless Chromium with jobs whose ids and arguments are hostile.

A real server (uvicorn, in a thread) decodes each path once, as in production; the
browser builds every URL itself. Needs Debian's /usr/bin/chromium and ``playwright``, as
tests/test_dashboard_browser.py does (its ``browser`` fixture is reused here).
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import httpx
import pytest
import uvicorn
from helpers import wait_for
from nexios import NexiosApp
from test_dashboard_browser import browser  # noqa: F401  (the shared Chromium fixture)

from nexios_contrib_scheduler import IntervalTrigger, JobStatus, SchedulerManager, setup_scheduler
from nexios_contrib_scheduler.admin import scheduler_router

UNUSUAL_IDS = [
    "nightly report",
    "50%",
    "100%25",
    "a%2Fb",
    "a?b=c&d",
    "#hash",
    "a+b",
    "ünïcödé ✓",
    "emoji 🚀",
    'say "hi"',
    "it's",
    "<img src=x onerror=alert(1)>",
    "back\\slash",
    "...",
    "constructor",
    "__proto__",
    "hasOwnProperty",
    "toString",
]
# Ids whose URL an action builds wrongly if it forgets to encode, or encodes twice.
ACTION_IDS = ["100%25", "a%2Fb", "a?b=c&d", "#hash", "ünïcödé ✓", 'say "hi"', "constructor"]
SECRET = "postgresql://app:hunter2@db.internal/prod"
TOKEN = "tok-123456"


async def tick(*args: object, **kwargs: object) -> None:
    pass


def _name(index: int) -> str:
    return f"job-{index:02d}"


def _app() -> NexiosApp:
    app = NexiosApp()
    scheduler = setup_scheduler(app)
    for index, job_id in enumerate(UNUSUAL_IDS):
        scheduler.add_job(tick, IntervalTrigger(hours=1), id=job_id, name=_name(index))
        scheduler.add_job(tick, IntervalTrigger(hours=1), id=f"api {job_id}")
    scheduler.add_job(
        tick,
        IntervalTrigger(hours=1),
        id="export",
        name="export",
        args=(SECRET,),
        kwargs={"token": TOKEN, "retries": 2},
    )
    # Polling every 0.2 s: a test waits for the next refreshes instead of forcing them.
    app.mount_router(scheduler_router(allow_unauthenticated=True, refresh_seconds=0.2))
    app.mount_router(
        scheduler_router(
            "/open", allow_unauthenticated=True, show_arguments=True, refresh_seconds=0.2
        )
    )
    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, SchedulerManager]]:
    app = _app()
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="dashboard-app", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, "the app to serve")
        assert server.started, f"the app did not start on port {port}"
        yield f"http://127.0.0.1:{port}", app.scheduler  # type: ignore[attr-defined]
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def page(browser, served):  # noqa: F811  (the imported fixture)
    base, _ = served
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/scheduler/")
    page.wait_for_selector("tr.job-row")
    yield page
    context.close()
    assert errors == [], f"the page raised: {errors}"


def row(page, name: str):
    name_cell = page.locator(".job-name", has_text=re.compile(f"^{re.escape(name)}$"))
    return page.locator("tr.job-row", has=name_cell)


def detail_fires(page, job_id: str) -> int:
    """How many next fire times the open detail of ``job_id`` lists (-1: not open)."""
    return int(
        page.evaluate(
            """id => {
                const rows = [...document.querySelectorAll("tr.detail")];
                const row = rows.find(r => r.dataset.detailFor === id);
                return row ? row.querySelectorAll("ol.upcoming li").length : -1;
            }""",
            job_id,
        )
    )


def wait_for_refreshes(page, count: int) -> None:
    """Wait until the page has asked for the job list ``count`` more times.

    A refresh asks for the next one only once it has finished (shown its data or its
    error), so after two requests the first refresh has fully landed.
    """
    for _ in range(count):
        with page.expect_response(
            lambda response: urlsplit(response.url).path == "/scheduler/jobs"
        ):
            pass


class TestUnusualIds:
    def test_each_row_opens_its_own_details_and_refreshes_keep_working(self, page):
        for index, job_id in enumerate(UNUSUAL_IDS):
            target = row(page, _name(index))
            assert target.get_attribute("data-job-id") == job_id
            assert target.get_attribute("aria-expanded") == "false", f"{job_id!r} opened alone"
            target.locator(".job-name").click()
            page.wait_for_function(
                """id => [...document.querySelectorAll("tr.detail")]
                    .some(r => r.dataset.detailFor === id
                        && r.querySelectorAll("ol.upcoming li").length === 5)""",
                arg=job_id,
            )
            wait_for_refreshes(page, 2)
            assert page.locator("#banner").is_hidden(), page.locator("#banner").inner_text()
            assert detail_fires(page, job_id) == 5
            target.locator(".job-name").click()
            page.wait_for_function(
                """id => ![...document.querySelectorAll("tr.detail")]
                    .some(r => r.dataset.detailFor === id)""",
                arg=job_id,
            )
        assert page.locator("tr.detail").count() == 0

    def test_run_and_pause_reach_jobs_with_unusual_ids(self, page, served):
        _, scheduler = served
        for job_id in ACTION_IDS:
            name = _name(UNUSUAL_IDS.index(job_id))
            runs = scheduler.get_job(job_id).total_run_count
            row(page, name).locator('button[data-action="run"]').click()
            page.locator(".toast", has_text=f"Started {name}").wait_for()
            wait_for(lambda: scheduler.get_job(job_id).total_run_count == runs + 1, 30)

            row(page, name).locator('button[data-action="pause"]').click()
            page.click("#pause-confirm")
            row(page, name).locator(".badge", has_text="PAUSED").wait_for()
            assert scheduler.get_job(job_id).status is JobStatus.PAUSED
            row(page, name).locator('button[data-action="resume"]').click()
            row(page, name).locator(".badge", has_text="ACTIVE").wait_for()
        assert page.locator(".toast.error").count() == 0


class TestUnusualIdsOverHttp:
    @pytest.mark.parametrize("job_id", UNUSUAL_IDS)
    def test_every_action_reaches_the_job_through_a_real_server(self, served, job_id):
        base, scheduler = served
        job_id = f"api {job_id}"
        path = "/scheduler/jobs/" + quote(job_id, safe="")
        with httpx.Client(base_url=base, timeout=30) as api:
            assert api.get(path).json()["id"] == job_id
            assert api.post(path + "/pause", json={"reason": "x"}).json()["status"] == "PAUSED"
            assert api.post(path + "/resume").json()["status"] == "ACTIVE"
            assert api.post(path + "/run").status_code == 202
            moved = api.put(path + "/trigger", json={"type": "interval", "minutes": 7})
            assert moved.json()["trigger_description"] == "Every 7 minutes"
            assert api.delete(path).status_code == 204
            assert api.get(path).status_code == 404
        assert scheduler.get_job(job_id) is None


class TestArguments:
    def _arguments_shown(self, page, base: str, prefix: str) -> str:
        page.goto(f"{base}{prefix}/")
        row(page, "export").locator(".job-name").click()
        detail = page.locator('tr.detail[data-detail-for="export"]')
        detail.locator("ol.upcoming li").first.wait_for()
        terms = detail.locator("dl.kv dt").all_inner_texts()
        values = detail.locator("dl.kv dd").all_inner_texts()
        assert "Arguments" in terms
        return values[terms.index("Arguments")]

    def test_hidden_by_default(self, page, served):
        base, _ = served
        shown = self._arguments_shown(page, base, "/scheduler")
        assert shown.startswith("(<hidden str>, token=<hidden str>, retries=<hidden int>)")
        assert "show_arguments=True" in shown
        content = page.content()
        assert TOKEN not in content and "hunter2" not in content

    def test_shown_when_the_router_says_so(self, page, served):
        base, _ = served
        shown = self._arguments_shown(page, base, "/open")
        assert shown == f'("{SECRET}", token="{TOKEN}", retries=2)'
