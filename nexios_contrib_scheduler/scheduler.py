"""The APScheduler scheduler class the manager drives."""

from __future__ import annotations

from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler

from . import clock


class AdapterScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """AsyncIOScheduler whose shutdown takes effect at once when called on its own loop.

    APScheduler defers ``shutdown`` through ``call_soon_threadsafe``; if the loop closes
    first the call is lost and the scheduler believes it is still running.
    """

    #: When the scheduler last looked for due jobs (UTC), for health checks.
    last_pass_time: datetime | None = None

    def _process_jobs(self) -> float | None:
        self.last_pass_time = clock.utcnow()
        return super()._process_jobs()  # type: ignore[no-any-return]

    def _start_timer(self, wait_seconds: float | None) -> None:
        if clock.is_frozen():
            # A hand-moved clock (the testing aid) runs the due jobs itself.
            self._stop_timer()
            return
        super()._start_timer(wait_seconds)

    def shutdown(self, wait: bool = False) -> None:
        if self.state == STATE_STOPPED:
            return
        BaseScheduler.shutdown(self, wait=False)
        self._stop_timer()
        self._eventloop = None
