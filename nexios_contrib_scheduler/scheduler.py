"""The APScheduler scheduler class the manager drives."""

from __future__ import annotations

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler


class AdapterScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """AsyncIOScheduler whose shutdown takes effect at once when called on its own loop.

    APScheduler defers ``shutdown`` through ``call_soon_threadsafe``; if the loop closes
    first the call is lost and the scheduler believes it is still running.
    """

    def shutdown(self, wait: bool = False) -> None:
        if self.state == STATE_STOPPED:
            return
        BaseScheduler.shutdown(self, wait=False)
        self._stop_timer()
        self._eventloop = None
