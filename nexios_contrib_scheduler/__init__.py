"""Job scheduling for Nexios apps: interval, cron and one-shot jobs on APScheduler 3."""

from .config import JobStatus, SchedulerConfig
from .cron import CronSyntaxError
from .dependencies import SchedulerDepend, SchedulerDepends
from .errors import ConflictingIdError, JobNotFoundError, SchedulerError, TriggerError
from .events import EVENT_KINDS, SchedulerEvent
from .integration import get_scheduler, setup_scheduler
from .jobs import RunRecord, ScheduledJob
from .manager import SchedulerManager
from .stores import FireKey, current_fire
from .triggers import CronTrigger, DateTimeTrigger, IntervalTrigger, Trigger

__version__ = "0.1.0"

__all__ = [
    "EVENT_KINDS",
    "ConflictingIdError",
    "CronSyntaxError",
    "CronTrigger",
    "DateTimeTrigger",
    "FireKey",
    "IntervalTrigger",
    "JobNotFoundError",
    "JobStatus",
    "RunRecord",
    "ScheduledJob",
    "SchedulerConfig",
    "SchedulerDepend",
    "SchedulerDepends",
    "SchedulerError",
    "SchedulerEvent",
    "SchedulerManager",
    "Trigger",
    "TriggerError",
    "__version__",
    "current_fire",
    "get_scheduler",
    "setup_scheduler",
]
