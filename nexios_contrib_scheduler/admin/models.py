"""The request and response bodies of the admin API, as pydantic models.

Responses are built from ``ScheduledJob.to_dict()``; these models describe them in the
app's OpenAPI document. Request bodies are validated here, and the handlers answer 422
themselves (Nexios' ``request_model=`` only documents).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


class ErrorOut(BaseModel):
    """Every error answer: the HTTP status, its phrase and what went wrong."""

    status: int = Field(description="e.g. 404")
    error: str = Field(description="e.g. 'Not Found'")
    message: str = Field(description="e.g. No job by the id of 'nightly' was found")


class RunOut(BaseModel):
    """One run of a job, or one fire that did not become a run (missed, skipped)."""

    scheduled_time: str | None = Field(None, description="ISO 8601; null for a run-now")
    start: str | None = None
    end: str | None = None
    duration: float | None = Field(None, description="seconds")
    outcome: str = Field(
        description="success, error, timeout, missed, skipped, cancelled; sent: sent to a "
        "remote engine, outcome unknown"
    )
    error: str | None = None
    worker: str | None = Field(None, description="the remote engine's worker that ran it")


class JobOut(BaseModel):
    """A job, as ``ScheduledJob.to_dict()`` gives it; times are ISO 8601 strings."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    func: str = Field(description="e.g. 'app.jobs:send_digest'")
    trigger: dict[str, Any] = Field(description="e.g. {'type': 'interval', 'seconds': 30}")
    trigger_description: str = Field(description="e.g. 'Every 30 seconds'")
    args: list[Any] = Field(
        [], description="e.g. ['<hidden str>']; the values with show_arguments=True"
    )
    kwargs: dict[str, Any] = Field(
        {}, description="e.g. {'token': '<hidden str>'}; the values with show_arguments=True"
    )
    max_instances: int = 1
    misfire_grace_time: float | None = None
    coalesce: bool = True
    executor: str = Field("default", description="'default' (in process) or a remote engine")
    status: str = Field(description="e.g. 'ACTIVE'")
    paused_reason: str | None = None
    next_run_time: str | None = None
    last_run_time: str | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    total_run_count: int = 0
    success_count: int = 0
    failure_count: int = 0
    missed_count: int = 0
    skipped_count: int = 0
    consecutive_failures: int = 0
    last_duration: float | None = None
    current_instances: int = 0
    created_at: str | None = None
    history: list[RunOut] = []


class JobDetailOut(JobOut):
    """A job with its next fire times (none while paused or once finished)."""

    next_run_times: list[str] = Field([], description="the next 5 fire times, ISO 8601")


class JobPageOut(BaseModel):
    """One page of the job list: the answer when ``limit`` or ``cursor`` is given."""

    jobs: list[JobOut] = Field(description="up to limit jobs, oldest first")
    total: int = Field(description="jobs matching status and q, on every page")
    offset: int = Field(description="matching jobs before this page")
    limit: int = Field(description="the page size asked for (default 100, at most 1000)")
    next_cursor: str | None = Field(
        description="pass as cursor for the next page; null on the last page"
    )


class JobListOut(RootModel[list[JobOut] | JobPageOut]):
    """Every matching job as an array; one page of them when ``limit`` or ``cursor`` is given."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # Nexios moves a response model's "$defs" into the document's components but does
        # not rewrite the references inside them (JobPageOut -> JobOut -> RunOut here), so
        # every reference is written as a component reference from the start.
        kwargs.setdefault("ref_template", "#/components/schemas/{model}")
        return super().model_json_schema(*args, **kwargs)


class HealthOut(BaseModel):
    """Whether the scheduler runs, its role among workers, and its jobs by status."""

    running: bool
    role: Literal["leader", "standby"]
    worker_id: str | None = None
    timezone: str = Field(description="e.g. 'UTC'")
    now: str = Field(description="the server's clock, ISO 8601 in the scheduler's zone")
    last_pass_time: str | None = Field(
        None, description="when the scheduler last looked for due jobs"
    )
    jobs: dict[str, int] = Field(description="e.g. {'ACTIVE': 3, 'PAUSED': 1}")
    total_jobs: int
    running_jobs: int = Field(description="runs in progress across all jobs")
    degraded: bool = Field(False, description="true while any problem below is present")
    problems: list[str] = Field(
        default_factory=list, description="why the scheduler is degraded, one sentence each"
    )
    clock_skew_seconds: float | None = Field(
        None, description="this worker's clock minus the store server's (None: not measured)"
    )
    store_resets: list[dict[str, Any]] = Field(
        default_factory=list, description="times the job store was seen to lose its data"
    )


class PauseIn(BaseModel):
    """The optional body of a pause: why the job is paused."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(max_length=500)] | None = None


class IntervalTriggerIn(BaseModel):
    """``IntervalTrigger``'s parameters; give at least one non-zero unit."""

    model_config = ConfigDict(extra="allow")

    type: Literal["interval"]
    seconds: float = 0
    minutes: float = 0
    hours: float = 0
    days: float = 0
    weeks: float = 0
    start_now: bool = True
    jitter: float | None = Field(None, description="a random delay of up to this many seconds")
    start_date: str | None = Field(None, description="ISO 8601; no fires before it")
    end_date: str | None = Field(None, description="ISO 8601; no fires after it")


class CronTriggerIn(BaseModel):
    """``CronTrigger``'s parameters: a 5-field crontab expression and an optional zone."""

    model_config = ConfigDict(extra="allow")

    type: Literal["cron"]
    expr: str = Field(description="e.g. '0 9 * * 1-5'")
    timezone: str | None = Field(None, description="e.g. 'Europe/Paris'")
    jitter: float | None = Field(None, description="a random delay of up to this many seconds")
    start_date: str | None = Field(None, description="ISO 8601; no fires before it")
    end_date: str | None = Field(None, description="ISO 8601; no fires after it")


class DateTriggerIn(BaseModel):
    """``DateTimeTrigger``'s parameters: an ISO 8601 date and an optional zone."""

    model_config = ConfigDict(extra="allow")

    type: Literal["date"]
    run_date: str = Field(description="e.g. '2026-12-25T10:30:00'")
    timezone: str | None = None


class TriggerIn(
    RootModel[
        Annotated[CronTriggerIn | IntervalTriggerIn | DateTriggerIn, Field(discriminator="type")]
    ]
):
    """A new trigger: its ``type`` and the trigger constructor's own parameters."""
