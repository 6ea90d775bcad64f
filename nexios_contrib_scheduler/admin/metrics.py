"""Prometheus metrics of a scheduler, read from its jobs at scrape time.

Needs ``prometheus_client`` (the ``[metrics]`` extra). ``scheduler_router`` serves them at
``{prefix}/metrics``; to add them to your own registry instead::

    from prometheus_client import REGISTRY
    from nexios_contrib_scheduler.admin.metrics import SchedulerCollector

    REGISTRY.register(SchedulerCollector(scheduler))

Counters and gauges are the jobs' own figures, so every worker of an app that shares a
persistent job store reports the same cluster-wide values. Run durations come from each
job's run history (``SchedulerConfig.history_size`` runs): a scrape observes the runs that
finished since the previous one, so scrape at least once every ``history_size`` runs of
your busiest job for the histogram to see every run.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from ..config import JobStatus
from ..jobs import RunRecord, ScheduledJob
from .views import clean, optional_text

if TYPE_CHECKING:
    from ..manager import SchedulerManager

NAMESPACE = "nexios_scheduler"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Upper bounds (seconds) of the run duration histogram's buckets.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

_JOB_LABELS = ("job_id", "job_name")
#: Characters of a job's name in its ``job_name`` label.
NAME_LIMIT = 200

_RunKey = tuple[object, ...]


@dataclass
class _Durations:
    """One job's duration histogram, and the newest run it has observed."""

    newest: _RunKey | None = None
    counts: list[int] = field(default_factory=list)
    total: float = 0.0


def _run_key(run: RunRecord) -> _RunKey:
    return (run.scheduled_time, run.start, run.end, run.outcome)


class SchedulerCollector:
    """A ``prometheus_client`` collector that reads a scheduler's jobs when scraped.

    Metrics (labels ``job_id``, ``job_name`` on the per-job ones):
    ``nexios_scheduler_job_runs_total{outcome="success"|"failure"}``,
    ``nexios_scheduler_job_missed_total``, ``nexios_scheduler_job_skipped_total``,
    ``nexios_scheduler_job_run_duration_seconds`` (histogram),
    ``nexios_scheduler_job_running`` (runs in progress),
    ``nexios_scheduler_job_next_run_timestamp_seconds``, ``nexios_scheduler_jobs{status}``,
    ``nexios_scheduler_running``, ``nexios_scheduler_leader`` and
    ``nexios_scheduler_last_pass_timestamp_seconds``.
    """

    def __init__(
        self, manager: SchedulerManager, buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or any(b <= 0 for b in bounds) or len(set(bounds)) != len(bounds):
            raise ValueError(f"buckets must be distinct positive numbers, got {list(buckets)!r}")
        self.manager = manager
        self.buckets = tuple(bounds)
        self._durations: dict[str, _Durations] = {}
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        manager = self.manager
        jobs = manager.get_jobs()
        yield from self._scheduler_metrics(jobs)
        runs = CounterMetricFamily(
            f"{NAMESPACE}_job_runs",
            "Runs of a job that ended, by outcome (failure: error, timeout or cancelled).",
            labels=(*_JOB_LABELS, "outcome"),
        )
        missed = CounterMetricFamily(
            f"{NAMESPACE}_job_missed",
            "Fires of a job that came later than its misfire_grace_time and did not run.",
            labels=_JOB_LABELS,
        )
        skipped = CounterMetricFamily(
            f"{NAMESPACE}_job_skipped",
            "Fires of a job dropped because max_instances runs were in progress.",
            labels=_JOB_LABELS,
        )
        running = GaugeMetricFamily(
            f"{NAMESPACE}_job_running",
            "Runs of a job in progress.",
            labels=_JOB_LABELS,
        )
        next_run = GaugeMetricFamily(
            f"{NAMESPACE}_job_next_run_timestamp_seconds",
            "When a job fires next, in Unix seconds (absent while paused or once finished).",
            labels=_JOB_LABELS,
        )
        durations = HistogramMetricFamily(
            f"{NAMESPACE}_job_run_duration_seconds",
            "How long a job's runs took.",
            labels=_JOB_LABELS,
        )
        with self._lock:
            for job in jobs:
                labels = _job_labels(job)
                runs.add_metric([*labels, "success"], job.success_count)
                runs.add_metric([*labels, "failure"], job.failure_count)
                missed.add_metric(labels, job.missed_count)
                skipped.add_metric(labels, job.skipped_count)
                running.add_metric(labels, job.current_instances)
                when = job.next_run_time
                if when is not None:
                    next_run.add_metric(labels, when.timestamp())
                state = self._observe(job)
                durations.add_metric(labels, self._bucket_samples(state), state.total)
            for gone in set(self._durations) - {job.id for job in jobs}:
                del self._durations[gone]
        yield from (runs, missed, skipped, running, next_run, durations)

    def _scheduler_metrics(self, jobs: list[ScheduledJob]) -> Iterable[Metric]:
        manager = self.manager
        yield GaugeMetricFamily(
            f"{NAMESPACE}_running",
            "1 while the scheduler runs.",
            value=1 if manager.running else 0,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_leader",
            "1 when this worker fires the jobs, 0 on standby.",
            value=1 if getattr(manager, "is_leader", True) else 0,
        )
        last_pass = getattr(manager, "last_pass_time", None)
        if last_pass is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_last_pass_timestamp_seconds",
                "When the scheduler last looked for due jobs, in Unix seconds.",
                value=last_pass.timestamp(),
            )
        by_status = GaugeMetricFamily(f"{NAMESPACE}_jobs", "Jobs by status.", labels=("status",))
        counts = {status.value: 0 for status in JobStatus}
        for job in jobs:
            counts[job.status.value] += 1
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status

    def _observe(self, job: ScheduledJob) -> _Durations:
        """Add the job's runs that ended since the last scrape to its histogram."""
        state = self._durations.setdefault(job.id, _Durations(counts=[0] * (len(self.buckets) + 1)))
        history = job.history
        fresh: list[RunRecord] = []
        for run in history:
            if _run_key(run) == state.newest:
                break
            fresh.append(run)
        if history:
            state.newest = _run_key(history[0])
        for run in fresh:
            duration = run.duration
            if duration is not None:
                state.counts[bisect.bisect_left(self.buckets, duration)] += 1
                state.total += duration
        return state

    def _bucket_samples(self, state: _Durations) -> list[tuple[str, float]]:
        samples: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(self.buckets, state.counts, strict=False):
            cumulative += count
            samples.append((_format_bound(bound), cumulative))
        samples.append(("+Inf", cumulative + state.counts[-1]))
        return samples


def _job_labels(job: ScheduledJob) -> list[str]:
    # The exposition is UTF-8, so lone surrogates are replaced; a name is cut to a size a
    # label can carry. The id is kept whole: it tells the series apart.
    return [clean(job.id), optional_text(job.name, NAME_LIMIT) or ""]


def _format_bound(bound: float) -> str:
    return repr(float(bound))


def exposition(collector: SchedulerCollector) -> tuple[bytes, str]:
    """The collector's metrics in Prometheus' text format, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE
