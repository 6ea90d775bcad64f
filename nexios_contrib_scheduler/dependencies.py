"""SchedulerDepends: the scheduler as a Nexios dependency."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nexios.dependencies import Context, Depend

from .config import JobStatus
from .integration import get_scheduler
from .jobs import ScheduledJob
from .manager import SchedulerManager
from .triggers import Trigger


class SchedulerDepend:
    """What ``SchedulerDepends()`` injects: the job operations of the app's scheduler."""

    __slots__ = ("manager",)

    def __init__(self, manager: SchedulerManager) -> None:
        self.manager = manager

    def add_job(
        self,
        func: Callable[..., Any],
        trigger: Trigger,
        *,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        max_instances: int | None = None,
        misfire_grace_time: float | None = None,
        coalesce: bool | None = None,
        id: str | None = None,
        replace_existing: bool = False,
    ) -> ScheduledJob:
        """See ``SchedulerManager.add_job``."""
        return self.manager.add_job(
            func,
            trigger,
            name=name,
            args=args,
            kwargs=kwargs,
            max_instances=max_instances,
            misfire_grace_time=misfire_grace_time,
            coalesce=coalesce,
            id=id,
            replace_existing=replace_existing,
        )

    def remove_job(self, job_id: str) -> bool:
        return self.manager.remove_job(job_id)

    def get_job(self, job_id: str) -> ScheduledJob | None:
        return self.manager.get_job(job_id)

    def get_jobs(self, status: JobStatus | str | None = None) -> list[ScheduledJob]:
        return self.manager.get_jobs(status)

    def pause_job(self, job_id: str, reason: str | None = None) -> bool:
        return self.manager.pause_job(job_id, reason)

    def resume_job(self, job_id: str) -> bool:
        return self.manager.resume_job(job_id)

    def run_job_now(self, job_id: str) -> bool:
        return self.manager.run_job_now(job_id)

    def reschedule_job(self, job_id: str, trigger: Trigger) -> ScheduledJob | None:
        return self.manager.reschedule_job(job_id, trigger)


def _provide_scheduler(ctx: Context = Context()) -> SchedulerDepend:
    app = ctx.base_app if ctx.base_app is not None else getattr(ctx.request, "base_app", None)
    return SchedulerDepend(get_scheduler(app))


def SchedulerDepends() -> Any:  # noqa: N802 - named like Nexios' own Depends helpers
    """A handler parameter default that injects a ``SchedulerDepend``."""
    return Depend(_provide_scheduler)
