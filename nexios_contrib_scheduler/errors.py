"""The exception classes raised by the scheduler."""

from __future__ import annotations


class SchedulerError(Exception):
    """Base class of every error the scheduler raises on its own account."""


class JobNotFoundError(SchedulerError, LookupError):
    """No job with the given id is registered (raised by ``modify_job`` and
    ``reschedule_job``)."""

    def __init__(self, job_id: object) -> None:
        super().__init__(f"No job by the id of {job_id!r} was found")
        self.job_id = job_id


class ConflictingIdError(SchedulerError):
    """A job with the given id is already registered."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"A job by the id of {job_id!r} already exists; "
            "pass replace_existing=True to replace it"
        )
        self.job_id = job_id


class TriggerError(ValueError):
    """A trigger was given values it cannot schedule."""


class ConfigError(ValueError):
    """A scheduler option has a value it cannot take."""
