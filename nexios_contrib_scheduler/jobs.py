"""ScheduledJob, the read-only view of a job, and the records behind it."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, Protocol

from .clock import utcnow as utcnow  # re-exported: the executor and manager read time here
from .config import JobStatus
from .executors import RemoteTask
from .triggers import ScheduleTrigger, Trigger

#: ``sent``: a fire sent to a remote engine whose outcome did not come back.
Outcome = Literal["success", "error", "timeout", "missed", "skipped", "cancelled", "sent"]

FAILURE_OUTCOMES: frozenset[str] = frozenset({"error", "timeout", "missed", "cancelled", "skipped"})


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: boom"``, or the exception's type name when it says nothing."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a job, or one fire that did not become a run (missed, skipped)."""

    scheduled_time: datetime | None
    start: datetime | None
    end: datetime | None
    outcome: Outcome
    error: str | None = None
    #: The remote engine's worker that ran it (``executor=``); None for a run here.
    worker: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as a constructor call: a third of the time of the state dict a slotted
        # dataclass pickles by default, and a run's history is written with each run.
        # Records pickled the old way still load (through the dataclass's __setstate__).
        values: tuple[Any, ...] = (self.scheduled_time, self.start, self.end, self.outcome)
        values += (self.error,) if self.worker is None else (self.error, self.worker)
        return (RunRecord, values)

    def __setstate__(self, state: Sequence[Any]) -> None:
        # Records pickled the old way: the dataclass's state, the fields' values in order,
        # without the fields added since (``worker``), which take their defaults.
        for name, value in itertools.zip_longest(_RUN_FIELDS, state[: len(_RUN_FIELDS)]):
            object.__setattr__(self, name, value)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, for runs that started."""
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheduled_time": _iso(self.scheduled_time),
            "start": _iso(self.start),
            "end": _iso(self.end),
            "duration": self.duration,
            "outcome": self.outcome,
            "error": self.error,
            "worker": self.worker,
        }


_RUN_FIELDS = tuple(f.name for f in fields(RunRecord))

# The history of a job that has not run yet: one shared empty deque instead of an empty
# deque of its own per job (an empty deque takes about 760 bytes). ``record`` replaces it.
_NO_HISTORY: deque[RunRecord] = deque(maxlen=0)


@dataclass(eq=False, slots=True)
class JobRecord:
    """The mutable state of one job, held by the registry.

    Run state (counters, history, ``last_*``, runs in progress, the status runs cause) is
    written by the run ledger only; the definition and options by the manager's job
    operations; both are set from the store when another worker changed them.
    """

    id: str
    name: str
    func: Callable[..., Any]
    trigger: Trigger
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    max_instances: int
    misfire_grace_time: float | None
    coalesce: bool
    created_at: datetime
    history_size: int
    timeout: float | None = None
    pause_on_failure: bool = False
    max_runs: int | None = None
    #: The executor that runs the job's fires: ``"default"`` (this process) or an engine
    #: named in ``SchedulerConfig(executors=...)``.
    executor: str = "default"
    status: JobStatus = JobStatus.ACTIVE
    #: Paused by ``pause_on_failure`` after a failed run (the status stays FAILED).
    failure_paused: bool = False
    paused_reason: str | None = None
    schedule: ScheduleTrigger | None = None
    pending_next_run: datetime | None = None
    finished: bool = False
    submissions: int = 0
    current_instances: int = 0
    last_run_time: datetime | None = None
    last_outcome: Outcome | None = None
    last_error: str | None = None
    total_run_count: int = 0
    success_count: int = 0
    failure_count: int = 0
    missed_count: int = 0
    skipped_count: int = 0
    consecutive_failures: int = 0
    last_duration: float | None = None
    history: deque[RunRecord] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.history:
            self.history = deque(self.history, maxlen=self.history_size)
        else:
            self.history = _NO_HISTORY

    def record(self, run: RunRecord) -> None:
        if self.history_size:
            if self.history is _NO_HISTORY:
                self.history = deque(maxlen=self.history_size)
            self.history.appendleft(run)


class RunTimes(Protocol):
    """Where a job's next fire times come from (the scheduler that holds the job)."""

    def next_run_time(self, record: JobRecord) -> datetime | None: ...

    def next_run_times(self, record: JobRecord, n: int) -> list[datetime]: ...


class ScheduledJob:
    """A live, read-only view of a scheduled job.

    Every attribute reads the job's current state, so a handle kept from ``add_job`` shows
    later runs, a pause, or ``CANCELLED`` once the job is removed.
    """

    __slots__ = ("_record", "_times")

    def __init__(self, times: RunTimes, record: JobRecord) -> None:
        self._times = times
        self._record = record

    id = property(lambda self: self._record.id, doc="The job's id.")
    name = property(lambda self: self._record.name, doc="The job's name.")
    func = property(lambda self: self._record.func, doc="The function the job calls.")

    @property
    def trigger(self) -> Trigger:
        return self._record.trigger

    @property
    def args(self) -> tuple[Any, ...]:
        return self._record.args

    @property
    def kwargs(self) -> Mapping[str, Any]:
        return dict(self._record.kwargs)

    @property
    def max_instances(self) -> int:
        return self._record.max_instances

    @property
    def misfire_grace_time(self) -> float | None:
        return self._record.misfire_grace_time

    @property
    def coalesce(self) -> bool:
        return self._record.coalesce

    @property
    def timeout(self) -> float | None:
        """Seconds a run may take before it is cancelled (``None``: no limit)."""
        return self._record.timeout

    @property
    def pause_on_failure(self) -> bool:
        """Whether a failed run pauses the job until ``resume_job``."""
        return self._record.pause_on_failure

    @property
    def max_runs(self) -> int | None:
        """Runs after which the job is completed (``None``: no limit)."""
        return self._record.max_runs

    @property
    def executor(self) -> str:
        """Where the job's fires run: ``"default"`` (this process) or a remote engine's name
        from ``SchedulerConfig(executors=...)``."""
        return self._record.executor

    @property
    def status(self) -> JobStatus:
        return self._record.status

    @property
    def paused_reason(self) -> str | None:
        """The reason given to ``pause_job``, while the job is paused."""
        return self._record.paused_reason

    @property
    def next_run_time(self) -> datetime | None:
        """When the job fires next; ``None`` while paused or once finished."""
        return self._times.next_run_time(self._record)

    def next_run_times(self, n: int) -> list[datetime]:
        """The next ``n`` fire times, starting at ``next_run_time``; empty while paused or
        once the job has finished.

        They follow the job's own schedule (its interval grid, its bounds, ``max_runs``).
        With jitter, the first time is the drawn one; later times are shown without jitter,
        which is drawn as each becomes the next.
        """
        return self._times.next_run_times(self._record, n)

    @property
    def last_run_time(self) -> datetime | None:
        """When the latest run started."""
        return self._record.last_run_time

    @property
    def total_run_count(self) -> int:
        """Runs started (a fire skipped or missed is not a run)."""
        return self._record.total_run_count

    @property
    def last_error(self) -> str | None:
        """``"ValueError: boom"`` for the latest failed run, kept until the next failure."""
        return self._record.last_error

    @property
    def current_instances(self) -> int:
        """Runs of this job in progress now."""
        return self._record.current_instances

    @property
    def created_at(self) -> datetime:
        return self._record.created_at

    @property
    def last_outcome(self) -> Outcome | None:
        return self._record.last_outcome

    @property
    def success_count(self) -> int:
        return self._record.success_count

    @property
    def failure_count(self) -> int:
        return self._record.failure_count

    @property
    def missed_count(self) -> int:
        return self._record.missed_count

    @property
    def skipped_count(self) -> int:
        return self._record.skipped_count

    @property
    def consecutive_failures(self) -> int:
        return self._record.consecutive_failures

    @property
    def last_duration(self) -> float | None:
        return self._record.last_duration

    @property
    def history(self) -> list[RunRecord]:
        """The latest runs, newest first (``SchedulerConfig.history_size`` of them)."""
        return list(self._record.history)

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data; times are ISO 8601 strings."""
        record = self._record
        return {
            "id": record.id,
            "name": record.name,
            "func": _func_name(record.func),
            "trigger": record.trigger.to_dict(),
            "trigger_description": record.trigger.describe(),
            "args": [_json_safe(arg) for arg in record.args],
            "kwargs": {str(k): _json_safe(v) for k, v in record.kwargs.items()},
            "max_instances": record.max_instances,
            "misfire_grace_time": record.misfire_grace_time,
            "coalesce": record.coalesce,
            "timeout": record.timeout,
            "pause_on_failure": record.pause_on_failure,
            "max_runs": record.max_runs,
            "executor": record.executor,
            "status": record.status.value,
            "paused_reason": record.paused_reason,
            "next_run_time": _iso(self.next_run_time),
            "last_run_time": _iso(record.last_run_time),
            "last_outcome": record.last_outcome,
            "last_error": record.last_error,
            "total_run_count": record.total_run_count,
            "success_count": record.success_count,
            "failure_count": record.failure_count,
            "missed_count": record.missed_count,
            "skipped_count": record.skipped_count,
            "consecutive_failures": record.consecutive_failures,
            "last_duration": record.last_duration,
            "current_instances": record.current_instances,
            "created_at": _iso(record.created_at),
            "history": [run.to_dict() for run in record.history],
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScheduledJob) and other._record is self._record

    def __hash__(self) -> int:
        return hash(self._record.id)

    def __repr__(self) -> str:
        return f"<ScheduledJob id={self.id!r} name={self.name!r} status={self.status.value}>"


def _json_safe(value: Any) -> Any:
    """JSON types as they are; anything else (a client, a model) as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return repr(value)


def _func_name(func: Callable[..., Any]) -> str:
    if isinstance(func, RemoteTask):
        return func.ref
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}:{qualname}" if module else qualname
