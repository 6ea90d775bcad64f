# The spec's "Configuration" example; unchanged but for the import lines (the spec's
# sample uses logging without importing it).
import logging

from nexios import NexiosApp

from nexios_contrib_scheduler import SchedulerConfig, setup_scheduler

app = NexiosApp()

config = SchedulerConfig(
    timezone="UTC",
    max_concurrent_jobs=10,  # Global limit
    log_level=logging.INFO,
    job_defaults={
        "max_instances": 3,  # Per-job default
        "misfire_grace_time": 30,  # Seconds
        "coalesce": True,  # Merge missed firings
    },
)
scheduler = setup_scheduler(app, config=config)

from nexios_contrib_scheduler import JobStatus

JobStatus.ACTIVE  # Running and eligible to fire
JobStatus.PAUSED  # Temporarily suspended
JobStatus.COMPLETED  # Finished (one-shot DateTimeTrigger jobs)
JobStatus.FAILED  # Last execution raised an exception
JobStatus.CANCELLED  # Permanently removed
