"""RunLedger: the only writer of run state.

Counters (``total_run_count``, the success, failure, missed and skipped counts,
``consecutive_failures``), ``history``, the ``last_*`` fields, the runs in progress
(``current_instances``, ``submissions``) and the status changes that runs cause (a run
started, finished, missed, skipped, cut short; ``FAILED`` and ``COMPLETED``;
``pause_on_failure``; ``max_runs``) are written here and nowhere else. Each change is
announced through the registry and, where a listener asked for it, as a ``SchedulerEvent``.

What the ledger needs from the scheduler is two narrow actions given at construction:
``unschedule(job_id)`` (no more fires) and ``hold(job_id)`` (no fires until resumed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .config import JobStatus
from .events import Listeners
from .jobs import FAILURE_OUTCOMES, JobRecord, Outcome, RunRecord, describe_exception, utcnow
from .registry import JobRegistry
from .triggers import DateTimeTrigger

logger = logging.getLogger("nexios_contrib_scheduler")

#: The ``last_error`` of a run whose worker stopped before the run ended.
CUT_SHORT = "cancelled: the worker running it stopped before the run ended"


class RunLedger:
    """Records runs and their effects on the job records of one scheduler."""

    def __init__(
        self,
        registry: JobRegistry,
        listeners: Listeners,
        *,
        unschedule: Callable[[str], None],
        hold: Callable[[str], None],
    ) -> None:
        self.registry = registry
        self.listeners = listeners
        self._unschedule = unschedule
        self._hold = hold

    # ------------------------------------------------------------ submissions

    # A run's slot in ``current_instances`` (and a submission's in ``submissions``) is taken
    # and given back first thing, so that it is given back even when the rest of the
    # bookkeeping fails (see bookkeeping_failed).

    def submitted(self, record: JobRecord) -> None:
        """A submission of fires (or a run asked for by hand) is under way."""
        record.submissions += 1

    def submission_ended(self, record: JobRecord) -> None:
        record.submissions -= 1
        self.settle(record)

    def settle(self, record: JobRecord) -> None:
        """Settle the final status of a job whose schedule has ended, once nothing runs."""
        if not record.finished or record.submissions or record.status is JobStatus.CANCELLED:
            return
        failed = record.last_outcome in FAILURE_OUTCOMES
        record.status = JobStatus.FAILED if failed else JobStatus.COMPLETED
        self.registry.ran(record)

    def schedule_ended(self, record: JobRecord) -> None:
        """The job has no fire left: it completes (or fails) once its runs have ended."""
        record.finished = True
        record.pending_next_run = None
        self.settle(record)
        self.registry.ran(record)

    # ------------------------------------------------------------ runs

    def started(self, record: JobRecord, scheduled: datetime | None, start: datetime) -> None:
        record.current_instances += 1
        record.total_run_count += 1
        record.last_run_time = start
        if record.max_runs is not None and record.total_run_count >= record.max_runs:
            # That was the last run: no more fires; the status settles when it ends.
            self._unschedule(record.id)
            if not record.finished:
                self.schedule_ended(record)
        self.registry.ran(record)
        self.listeners.job_event("job_started", record, scheduled)

    def adopted(self, record: JobRecord, scheduled: datetime, worker: str, counted: bool) -> None:
        """A fire that ``worker`` (stopped) claimed, and may have sent to a remote engine,
        is followed here to its outcome: in progress until then. ``counted``: the stored
        run state counts its run already (the store holds its start)."""
        if not counted:
            record.total_run_count += 1
        record.current_instances += 1
        self.registry.ran(record)
        logger.info(
            "job %r (%s): fire at %s, claimed by worker %s (stopped), is followed here",
            record.name,
            record.id,
            scheduled.isoformat(),
            worker,
        )

    def finished(
        self,
        record: JobRecord,
        scheduled: datetime | None,
        start: datetime,
        outcome: Outcome,
        error: str | None,
        exc: BaseException | None = None,
        end: datetime | None = None,
        worker: str | None = None,
    ) -> None:
        record.current_instances -= 1
        end = utcnow() if end is None else end
        # A fire sent to a remote engine was counted as a run when sent. Whether it ran is
        # not known (``sent``: its outcome did not come back) or it did not (``missed``:
        # the engine did not start it within its grace): it is not counted after all, so
        # that the runs counted are those known to have started (a run counted and never
        # ended is one cut short).
        if outcome == "sent":
            record.total_run_count -= 1
            record.record(RunRecord(scheduled, start, None, "sent", None, worker))
            record.last_outcome = "sent"
            self.registry.ran(record)
            return
        if outcome == "missed":
            record.total_run_count -= 1
            record.missed_count += 1
            record.last_outcome = "missed"
            record.record(RunRecord(scheduled, None, None, "missed", error, worker))
            self.registry.ran(record)
            logger.warning("job %r (%s) missed: %s", record.name, record.id, error)
            self.listeners.job_event("job_missed", record, scheduled, error=error)
            return
        run = RunRecord(scheduled, start, end, outcome, error, worker)
        record.last_duration = run.duration
        record.last_outcome = outcome
        record.record(run)
        if outcome == "success":
            record.success_count += 1
            record.consecutive_failures = 0
            if record.status is JobStatus.FAILED and not record.failure_paused:
                record.status = JobStatus.ACTIVE
            self.registry.ran(record)
            self.listeners.job_event("job_succeeded", record, scheduled, run.duration)
            return
        record.failure_count += 1
        record.consecutive_failures += 1
        record.last_error = error
        if record.status is JobStatus.ACTIVE:
            record.status = JobStatus.FAILED
        _log_failure(record, outcome, error, exc)
        self.registry.ran(record)
        self.listeners.job_event("job_failed", record, scheduled, run.duration, exc, error)
        if record.pause_on_failure and outcome in ("error", "timeout"):
            self.pause_after_failure(record, error)

    def pause_after_failure(self, record: JobRecord, error: str | None) -> None:
        """``pause_on_failure``: stop firing until ``resume_job``; the status stays FAILED."""
        if record.finished or record.failure_paused:
            return
        if record.status in (JobStatus.PAUSED, JobStatus.CANCELLED):
            return
        record.failure_paused = True
        record.paused_reason = f"paused after a failed run: {error}"
        record.pending_next_run = None
        self._hold(record.id)
        self.registry.ran(record)
        logger.warning(
            "job %r (%s) paused after a failed run (pause_on_failure); resume_job to go on",
            record.name,
            record.id,
        )
        self.listeners.job_event("job_paused", record, error=record.paused_reason)

    def missed(self, record: JobRecord, scheduled: datetime, now: datetime) -> None:
        """A fire that came later than its ``misfire_grace_time``: not run."""
        late = (now - scheduled).total_seconds()
        error = (
            f"missed: run scheduled for {scheduled.isoformat()} was {late:.3f}s late, "
            f"beyond its misfire_grace_time of {record.misfire_grace_time:g}s"
        )
        record.missed_count += 1
        record.last_outcome = "missed"
        record.record(RunRecord(scheduled, None, None, "missed", error))
        if record.schedule is not None and is_one_shot(record):
            record.last_error = error
            if record.status is JobStatus.ACTIVE:
                record.status = JobStatus.FAILED
        self.registry.ran(record)
        logger.warning("job %r (%s) %s", record.name, record.id, error)
        self.listeners.job_event("job_missed", record, scheduled, error=error)

    def coalesced(self, record: JobRecord, merged: list[datetime], into: datetime) -> None:
        """Fires merged by ``coalesce`` into the run for ``into``: recorded as missed."""
        if len(merged) == 1:
            what = f"the fire due at {merged[0].isoformat()} was"
        else:
            what = (
                f"{len(merged)} fires due from {merged[0].isoformat()} to "
                f"{merged[-1].isoformat()} were"
            )
        error = f"missed: {what} coalesced into the run scheduled for {into.isoformat()}"
        record.missed_count += len(merged)
        for scheduled in merged[-record.history_size :] if record.history_size else ():
            record.record(RunRecord(scheduled, None, None, "missed", error))
        self.registry.ran(record)
        logger.warning("job %r (%s) %s", record.name, record.id, error)

    def not_run(self, record: JobRecord, scheduled: datetime, reason: str) -> None:
        """A fire not run, ``reason`` saying why (this worker cannot import the job's
        function, the claim could not be written, the worker that claimed it stopped):
        recorded missed, with a log line; the job keeps its schedule."""
        error = f"missed: not run: {reason}"
        record.missed_count += 1
        record.last_outcome = "missed"
        record.record(RunRecord(scheduled, None, None, "missed", error))
        self.registry.ran(record)
        logger.warning(
            "job %r (%s) fire at %s not run: %s",
            record.name,
            record.id,
            scheduled.isoformat(),
            reason,
        )
        self.listeners.job_event("job_missed", record, scheduled, error=error)

    def skipped(self, record: JobRecord, scheduled: datetime) -> None:
        """A fire not run because ``max_instances`` runs were in progress."""
        reason = f"skipped: max_instances ({record.max_instances}) runs already in progress"
        record.skipped_count += 1
        record.record(RunRecord(scheduled, None, None, "skipped", reason))
        if is_one_shot(record):  # its only fire: the job ends FAILED, saying why
            record.last_outcome = "skipped"
            record.last_error = reason
        self.registry.ran(record)
        logger.warning(
            "job %r (%s) fire at %s %s", record.name, record.id, scheduled.isoformat(), reason
        )
        self.listeners.job_event("job_skipped", record, scheduled, error=reason)

    def ran_elsewhere(self, record: JobRecord, run: RunRecord, worker: str) -> None:
        """A run another worker started while it led and ended after it lost the lease (it
        writes nothing then): recorded here, by the leader, as that worker reported it."""
        record.record(run)
        record.last_duration = run.duration
        record.last_outcome = run.outcome
        if run.outcome == "success":
            record.success_count += 1
            record.consecutive_failures = 0
            if record.status is JobStatus.FAILED and not record.failure_paused:
                record.status = JobStatus.ACTIVE
        else:
            record.failure_count += 1
            record.consecutive_failures += 1
            record.last_error = run.error
            if record.status is JobStatus.ACTIVE:
                record.status = JobStatus.FAILED
        self.registry.ran(record)
        logger.info(
            "job %r (%s): run for %s on worker %s ended (%s) after that worker lost the lease; "
            "recorded by the leader",
            record.name,
            record.id,
            "a run asked by hand" if run.scheduled_time is None else run.scheduled_time.isoformat(),
            worker,
            run.outcome,
        )
        if run.outcome == "success":
            self.listeners.job_event("job_succeeded", record, run.scheduled_time, run.duration)
        else:
            self.listeners.job_event(
                "job_failed", record, run.scheduled_time, run.duration, None, run.error
            )

    def cut_short(self, record: JobRecord, count: int) -> None:
        """``count`` runs whose worker stopped before they ended: each a ``cancelled`` failure."""
        record.failure_count += count
        record.consecutive_failures += count
        record.last_outcome = "cancelled"
        record.last_error = CUT_SHORT
        for _ in range(min(count, record.history_size)):
            record.record(RunRecord(None, record.last_run_time, None, "cancelled", CUT_SHORT))
        if record.status is JobStatus.ACTIVE:
            record.status = JobStatus.FAILED
        self.registry.ran(record)
        logger.warning(
            "job %r (%s): %d run(s) cut short: the worker running it stopped",
            record.name,
            record.id,
            count,
        )

    # ------------------------------------------------------------ schedules that fail

    def not_scheduled(self, record: JobRecord, exc: Exception) -> None:
        """The job could not be scheduled at start: it ends, saying why."""
        record.last_error = f"could not be scheduled at start: {describe_exception(exc)}"
        record.last_outcome = "error"
        self.schedule_ended(record)
        logger.exception("job %r (%s) could not be scheduled at start", record.name, record.id)

    def trigger_failed(self, record: JobRecord, error: str) -> None:
        """The trigger could not give the next fire time: the job was not run and has no
        next fire; it ends FAILED, saying why."""
        record.last_outcome = "error"
        record.last_error = error
        logger.error("job %r (%s) stopped: %s", record.name, record.id, error)
        self.schedule_ended(record)
        self.listeners.job_event("job_failed", record, error=error)

    def bookkeeping_failed(self, record: JobRecord, exc: Exception) -> None:
        """Recording a run of ``record`` raised: the job goes on, and the failure is kept on
        it, where it shows, instead of being lost in a log."""
        record.last_error = f"the scheduler failed to record a run: {describe_exception(exc)}"
        logger.error(
            "job %r (%s): recording a run failed; the job goes on",
            record.name,
            record.id,
            exc_info=(type(exc), exc, exc.__traceback__),
        )

    # ------------------------------------------------------------ state read from a store

    def restore(self, record: JobRecord, values: Mapping[str, Any]) -> None:
        """Set state read from the job store on ``record`` (another worker's runs)."""
        from .stores import records

        records.apply(record, values)


def is_one_shot(record: JobRecord) -> bool:
    return isinstance(record.trigger, DateTimeTrigger)


def _log_failure(
    record: JobRecord, outcome: Outcome, error: str | None, exc: BaseException | None
) -> None:
    # A run over its timeout that then raised carries the job's exception as the cause.
    raised = exc.__cause__ if outcome == "timeout" and exc is not None else None
    if outcome == "error":
        logger.error(
            "job %r (%s) raised %s",
            record.name,
            record.id,
            error,
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        )
    elif raised is not None:
        logger.error(
            "job %r (%s): %s",
            record.name,
            record.id,
            error,
            exc_info=(type(raised), raised, raised.__traceback__),
        )
    else:
        logger.warning("job %r (%s): %s", record.name, record.id, error)
