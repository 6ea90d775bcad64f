"""Take docs/dashboard.png: the demo app's dashboard in headless Chromium.

Serves the demo app on a free loopback port, gives its jobs some history through the admin
API (a few runs, a failure, a paused job), opens the dashboard with one job's run history
expanded and saves the screenshot. Needs Debian's ``chromium`` (/usr/bin/chromium) and the
``playwright`` package; never downloads a browser.

    .venv/bin/python scripts/screenshot_dashboard.py [--out docs/dashboard.png] [--width 1360]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def demo_server() -> Iterator[str]:
    port = free_port()
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
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/scheduler/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the demo app did not start on {base}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_and_wait(client: httpx.Client, job_id: str, times: int) -> None:
    for _ in range(times):
        deadline = time.monotonic() + 10
        while client.get(f"/scheduler/jobs/{job_id}").json()["current_instances"]:
            if time.monotonic() > deadline:
                raise SystemExit(f"{job_id} kept running")
            time.sleep(0.05)
        client.post(f"/scheduler/jobs/{job_id}/run").raise_for_status()
        time.sleep(0.1)
    while client.get(f"/scheduler/jobs/{job_id}").json()["current_instances"]:
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--width", type=int, default=1360)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--expand", default="export-orders", help="job whose history is shown")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")

    with demo_server() as base, httpx.Client(base_url=base, timeout=10) as client:
        run_and_wait(client, "export-orders", 8)
        run_and_wait(client, "report", 2)
        client.post(
            "/scheduler/jobs/weekday-morning/pause", json={"reason": "Holiday week"}
        ).raise_for_status()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(
                    viewport={"width": args.width, "height": args.height},
                    device_scale_factor=1 if args.width > 700 else 2,
                )
                page.goto(f"{base}/scheduler/")
                page.wait_for_selector("tr.job-row")
                if args.expand:
                    page.click(f'tr.job-row[data-job-id="{args.expand}"] .job-name')
                    page.wait_for_selector(
                        f'tr.detail[data-detail-for="{args.expand}"] ol, '
                        f'tr.detail[data-detail-for="{args.expand}"] p'
                    )
                page.wait_for_timeout(300)
                page.screenshot(path=args.out, full_page=True)
            finally:
                browser.close()
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
