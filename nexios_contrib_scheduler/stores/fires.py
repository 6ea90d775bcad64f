"""The idempotency key of a fire: the job's id and the time the fire was scheduled for."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


class FireKey(NamedTuple):
    """Which fire a run belongs to.

    ``scheduled_time`` is ``None`` for a run started by ``run_job_now``. With a persistent
    job store the key is recorded before the run, so no two workers run the same fire;
    a job can use ``key.token`` to make its own side effects idempotent too.
    """

    job_id: str
    scheduled_time: datetime | None

    @property
    def token(self) -> str:
        """``"<job id>@<microseconds since the epoch>"``, or ``"<job id>@now"`` for run-now."""
        when = "now" if self.scheduled_time is None else fire_token(self.scheduled_time)
        return f"{self.job_id}@{when}"


_current: ContextVar[FireKey | None] = ContextVar("nexios_scheduler_fire", default=None)


def current_fire() -> FireKey | None:
    """The fire the calling job function is running for; ``None`` outside a job run."""
    return _current.get()


def set_current_fire(job_id: str, scheduled: datetime | None) -> None:
    _current.set(FireKey(job_id, scheduled))


def fire_token(scheduled: datetime) -> str:
    """A scheduled time as exact integer microseconds since the epoch (UTC)."""
    return str((scheduled - _EPOCH) // _ONE_US)


def fire_time(token: str) -> datetime:
    """The scheduled time a ``fire_token`` stands for."""
    return _EPOCH + timedelta(microseconds=int(token))
