"""Wiring a SchedulerManager into a Nexios app's lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from .config import SchedulerConfig
from .errors import SchedulerError
from .manager import SchedulerManager

logger = logging.getLogger("nexios_contrib_scheduler")

_SETUP_HINT = "call setup_scheduler(app) when you build the app"


def setup_scheduler(app: Any, config: SchedulerConfig | None = None) -> SchedulerManager:
    """Attach a scheduler to ``app``: started on app startup, drained on shutdown.

    The manager is set as ``app.scheduler`` and ``app.state["scheduler"]``. Calling this
    again for the same app returns the same manager. A scheduler that fails to start fails
    the app's startup (the ASGI server then exits) instead of leaving it running without jobs.
    """
    existing = getattr(app, "scheduler", None)
    if isinstance(existing, SchedulerManager):
        if config is not None and config is not existing.config:
            logger.warning(
                "setup_scheduler was already called for this app; the new config is ignored"
            )
        return existing
    if not hasattr(app, "lifespan_context"):
        raise TypeError(f"setup_scheduler needs a NexiosApp, not {type(app).__name__}")
    manager = SchedulerManager(app, config)
    app.scheduler = manager
    state = getattr(app, "state", None)
    if isinstance(state, dict):
        state["scheduler"] = manager
    app.lifespan_context = _scheduler_lifespan(manager, app.lifespan_context)
    return manager


def _scheduler_lifespan(
    manager: SchedulerManager, user_lifespan: Callable[[Any], Any] | None
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    # Nexios ignores on_startup/on_shutdown handlers when the app has a lifespan, and it
    # logs and swallows exceptions from those handlers. Owning the lifespan lets a failed
    # start fail the app's startup, and keeps the app's own handlers or lifespan working:
    # they run first on startup and last on shutdown, so jobs can use what they set up.
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with contextlib.AsyncExitStack() as stack:
            state = None
            if user_lifespan is not None:
                state = await stack.enter_async_context(user_lifespan(app))
            else:
                await app._startup()
                stack.push_async_callback(app._shutdown)
            try:
                await manager.start()
            except Exception:
                logger.exception("the scheduler failed to start; failing app startup")
                raise
            stack.push_async_callback(manager.shutdown)
            yield state

    return lifespan


def get_scheduler(app_or_request: Any) -> SchedulerManager:
    """The scheduler set up for an app (or for a request's app).

    Raises ``SchedulerError`` if ``setup_scheduler`` was not called for it.
    """
    for candidate in (app_or_request, getattr(app_or_request, "base_app", None)):
        manager = getattr(candidate, "scheduler", None)
        if isinstance(manager, SchedulerManager):
            return manager
        state = getattr(candidate, "state", None)
        if isinstance(state, dict) and isinstance(state.get("scheduler"), SchedulerManager):
            return state["scheduler"]  # type: ignore[no-any-return]
    raise SchedulerError(f"no scheduler is set up for this app: {_SETUP_HINT}")
