"""SchedulerDepends: the scheduler as a Nexios dependency."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from nexios.dependencies import Context, Depend

from .config import JobStatus
from .events import Listener
from .integration import get_scheduler
from .jobs import ScheduledJob
from .manager import UNCHANGED, SchedulerManager, Unchanged
from .triggers import Trigger

F = TypeVar("F", bound=Callable[..., Any])


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
        timeout: float | None = None,
        pause_on_failure: bool | None = None,
        max_runs: int | None = None,
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
            timeout=timeout,
            pause_on_failure=pause_on_failure,
            max_runs=max_runs,
        )

    def scheduled_job(self, trigger: Trigger, **options: Any) -> Callable[[F], F]:
        """See ``SchedulerManager.scheduled_job``."""
        return self.manager.scheduled_job(trigger, **options)

    def modify_job(
        self,
        job_id: str,
        *,
        name: str | Unchanged = UNCHANGED,
        args: Iterable[Any] | Unchanged = UNCHANGED,
        kwargs: Mapping[str, Any] | Unchanged = UNCHANGED,
        max_instances: int | Unchanged = UNCHANGED,
        misfire_grace_time: float | Unchanged | None = UNCHANGED,
        coalesce: bool | Unchanged = UNCHANGED,
        timeout: float | Unchanged | None = UNCHANGED,
    ) -> ScheduledJob:
        """See ``SchedulerManager.modify_job``."""
        return self.manager.modify_job(
            job_id,
            name=name,
            args=args,
            kwargs=kwargs,
            max_instances=max_instances,
            misfire_grace_time=misfire_grace_time,
            coalesce=coalesce,
            timeout=timeout,
        )

    def add_listener(self, callback: Listener, events: str | Iterable[str] | None = None) -> None:
        """See ``SchedulerManager.add_listener``."""
        self.manager.add_listener(callback, events)

    def remove_listener(self, callback: Listener) -> bool:
        """See ``SchedulerManager.remove_listener``."""
        return self.manager.remove_listener(callback)

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

    def reschedule_job(self, job_id: str, trigger: Trigger) -> ScheduledJob:
        return self.manager.reschedule_job(job_id, trigger)


def _provide_scheduler(ctx: Context = Context()) -> SchedulerDepend:
    app = ctx.base_app if ctx.base_app is not None else getattr(ctx.request, "base_app", None)
    return SchedulerDepend(get_scheduler(app))


def SchedulerDepends() -> Any:  # noqa: N802 - named like Nexios' own Depends helpers
    """A handler parameter default that injects a ``SchedulerDepend``."""
    return Depend(_provide_scheduler)
