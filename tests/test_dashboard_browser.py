"""The dashboard in a real headless Chromium, against the demo app served by uvicorn.

Needs Debian's ``chromium`` at /usr/bin/chromium (scripts/test.sh installs it) and the
``playwright`` package, which drives that browser; no browser is ever downloaded.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The demo app (the README's first command), on a free loopback port."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "nexios_contrib_scheduler.demo:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/scheduler/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, f"the demo app exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"the demo app did not answer on {base}"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium is missing: {CHROMIUM} not found. Install Debian's chromium package "
            "(apt-get install chromium); scripts/test.sh does so when it is missing."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/scheduler/")
    page.wait_for_selector("tr.job-row")
    yield page
    context.close()
    assert errors == [], f"the page raised: {errors}"


@pytest.fixture
def api(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server}/scheduler", timeout=10) as client:
        yield client


def row(page, job_id: str):
    return page.locator(f'tr.job-row[data-job-id="{job_id}"]')


def refresh_now(page) -> None:
    """Turning live updates off and on again refreshes at once."""
    page.click("#live")
    page.click("#live")


class TestDashboard:
    def test_lists_every_job(self, page, api):
        jobs = api.get("/jobs").json()
        shown = page.locator("tr.job-row").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
        assert shown == [job["id"] for job in jobs]
        assert {"heartbeat", "report", "weekday-morning"} <= set(shown)
        assert row(page, "weekday-morning").locator(".trigger-text").inner_text() == (
            "At 09:00, Monday through Friday"
        )
        assert row(page, "heartbeat").locator(".trigger-text").inner_text() == "Every 5 seconds"
        assert page.locator("#empty").is_hidden()
        assert page.locator("#pill-state").inner_text() == "Running"

    def test_pause_turns_the_badge_to_paused_and_the_api_agrees(self, page, api):
        row(page, "report").locator('button[data-action="pause"]').click()
        dialog = page.locator("#pause-dialog")
        assert dialog.is_visible()
        page.fill("#pause-reason", "checked by the browser test")
        page.click("#pause-confirm")
        badge = row(page, "report").locator(".badge")
        badge.filter(has_text="PAUSED").wait_for()
        assert badge.inner_text() == "PAUSED"
        job = api.get("/jobs/report").json()
        assert job["status"] == "PAUSED"
        assert job["paused_reason"] == "checked by the browser test"
        assert row(page, "report").locator(".reason").inner_text() == (
            "“checked by the browser test”"
        )

        row(page, "report").locator('button[data-action="resume"]').click()
        badge.filter(has_text="ACTIVE").wait_for()
        assert api.get("/jobs/report").json()["status"] == "ACTIVE"

    def test_run_now_increments_the_run_count(self, page, api):
        before = api.get("/jobs/weekday-morning").json()["total_run_count"]
        shown = row(page, "weekday-morning").locator(".runs-total")
        assert int(shown.inner_text()) == before
        row(page, "weekday-morning").locator('button[data-action="run"]').click()
        page.wait_for_function(
            "([sel, n]) => Number(document.querySelector(sel).textContent) > n",
            arg=['tr.job-row[data-job-id="weekday-morning"] .runs-total', before],
        )
        after = api.get("/jobs/weekday-morning").json()["total_run_count"]
        assert after >= before + 1
        assert int(shown.inner_text()) >= before + 1
        page.locator(".toast", has_text="Started weekday-morning").wait_for()

    def test_remove_asks_first_then_removes_the_row(self, page, api):
        target = row(page, "top-of-the-minute")
        target.locator('button[data-action="remove"]').click()
        assert page.locator("#confirm-dialog").is_visible()
        page.locator("#confirm-dialog button[value=cancel]").click()
        page.wait_for_timeout(300)
        assert target.count() == 1
        assert api.get("/jobs/top-of-the-minute").status_code == 200

        target.locator('button[data-action="remove"]').click()
        page.click("#confirm-remove")
        target.wait_for(state="detached")
        assert api.get("/jobs/top-of-the-minute").status_code == 404

    def test_a_row_opens_its_run_history(self, page, api):
        wait_for(lambda: api.get("/jobs/heartbeat").json()["history"])
        row(page, "heartbeat").locator(".job-name").click()
        detail = page.locator('tr.detail[data-detail-for="heartbeat"]')
        detail.locator("ol.upcoming li").first.wait_for()
        assert detail.locator("ol.upcoming li").count() == 5
        assert detail.locator("svg.chart rect").count() >= 1
        assert detail.locator("table.hist tbody tr").count() >= 1
        assert "success" in detail.locator("table.hist").inner_text()
        row(page, "heartbeat").locator(".job-name").click()
        detail.wait_for(state="detached")

    def test_api_errors_are_shown(self, page, api):
        page.click("#live")  # no polling: the row stays until the failed action refreshes
        assert api.delete("/jobs/export-orders").status_code == 204
        row(page, "export-orders").locator('button[data-action="pause"]').click()
        page.click("#pause-confirm")
        toast = page.locator(".toast.error")
        toast.wait_for()
        assert "Could not pause export-orders" in toast.inner_text()
        assert "404" in toast.inner_text()
        assert "No job by the id of 'export-orders'" in toast.inner_text()
        row(page, "export-orders").wait_for(state="detached")

    def test_an_unreachable_api_shows_a_banner(self, page):
        page.route(
            re.compile(r"/scheduler/jobs(\?|$)"),
            lambda route: route.fulfill(
                status=503,
                content_type="application/json",
                body=json.dumps({"status": 503, "error": "x", "message": "database is down"}),
            ),
        )
        refresh_now(page)
        banner = page.locator("#banner")
        banner.wait_for(state="visible")
        assert "database is down" in banner.inner_text()
        assert "503" in banner.inner_text()

    def test_empty_state(self, page):
        page.route(
            re.compile(r"/scheduler/jobs(\?|$)"),
            lambda route: route.fulfill(status=200, content_type="application/json", body="[]"),
        )
        refresh_now(page)
        page.locator("#empty").wait_for(state="visible")
        assert "No jobs scheduled" in page.locator("#empty").inner_text()
        assert page.locator("tr.job-row").count() == 0

    def test_readable_on_a_phone(self, page, tmp_path):
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(200)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px screen"
        first = page.locator("tr.job-row").first
        box = first.bounding_box()
        assert box is not None and box["width"] <= 390
        assert first.locator(".badge").is_visible()
        assert first.locator('button[data-action="run"]').is_visible()
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
