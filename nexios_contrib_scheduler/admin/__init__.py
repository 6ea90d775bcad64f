"""The scheduler's admin HTTP API, live dashboard and Prometheus metrics, as one router.

``scheduler_router(dependencies=[Depend(require_admin)])`` returns a Nexios router to mount
with ``app.mount_router(...)``; see its docstring for the routes and the options.
"""

from .router import scheduler_router

__all__ = ["scheduler_router"]
