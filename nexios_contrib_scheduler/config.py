"""Scheduler configuration and the job status enum."""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError
from .stores.urls import StoreURL, check_namespace, parse_coordination, parse_jobstore, redact

#: The longest ``claim_ahead``: a fire claimed ahead by a leader that dies before it is due
#: is recorded as not run, where one not yet claimed is run late by the next leader.
MAX_CLAIM_AHEAD = 1.0
DEFAULT_JOB_DEFAULTS: dict[str, Any] = {
    "max_instances": 3,
    "misfire_grace_time": 30,
    "coalesce": True,
    "timeout": None,
    "pause_on_failure": False,
}

# Options a job can take from ``job_defaults``; add_job accepts each of them too.
JOB_OPTION_NAMES = frozenset(DEFAULT_JOB_DEFAULTS)


class JobStatus(str, enum.Enum):
    """Where a job is in its life; the value is the upper-case name."""

    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value


def resolve_timezone(value: str | tzinfo) -> tzinfo:
    """Turn an IANA name, ``"UTC"``, ``"local"``, a fixed offset such as ``"UTC+05:30"`` or
    a tzinfo into a tzinfo.

    A pytz zone becomes its zoneinfo equivalent (a fixed-offset one, a
    ``datetime.timezone``): pytz zones give the right offsets only to datetimes made with
    their ``localize()``, and local mean time (08:56 for 09:00 in New York) to any other.
    """
    if isinstance(value, tzinfo):
        converted = _from_pytz(value)
        return value if converted is None else converted
    if not isinstance(value, str):
        raise TypeError(f"timezone must be an IANA name or a tzinfo, not {type(value).__name__}")
    if value.upper() == "UTC":
        return timezone.utc
    if value == "local":
        import tzlocal

        return tzlocal.get_localzone()
    offset = _FIXED_OFFSET.fullmatch(value)
    if offset is not None:
        return _fixed_offset(value, offset)
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ConfigError(
            f"unknown timezone {shown!r}: use an IANA name such as 'Europe/Paris', 'UTC', "
            "'local' or a fixed offset such as 'UTC+05:30'"
        ) from None


def zone_name(tz: tzinfo) -> str | None:
    """The name ``resolve_timezone`` reads back as ``tz``, or None if it has none.

    Zoneinfo zones are named by their key and fixed offsets as ``"UTC+05:30"`` (``"UTC"``
    for a zero offset), whatever name a ``datetime.timezone`` was given: ``"CET"`` would
    read back as a zone with daylight saving.
    """
    if isinstance(tz, ZoneInfo):
        return tz.key
    if isinstance(tz, timezone):
        return _offset_name(tz.utcoffset(None))
    return None


def zone_label(tz: tzinfo) -> str:
    """The zone's name for display: ``zone_name`` where it has one, else its ``str()``."""
    name = zone_name(tz)
    return str(tz) if name is None else name


# "UTC+05:30" as str(datetime.timezone(...)) writes it; seconds and microseconds optional.
_FIXED_OFFSET = re.compile(
    r"UTC([+-])(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{6}))?)?", re.IGNORECASE | re.ASCII
)


def _fixed_offset(text: str, match: re.Match[str]) -> tzinfo:
    sign, hours, minutes, seconds, micros = match.groups()
    parts = (int(hours), int(minutes), int(seconds or 0), int(micros or 0))
    if parts[0] > 23 or parts[1] > 59 or parts[2] > 59:
        raise ConfigError(
            f"timezone offset {text!r} is out of range: use UTC-23:59 to UTC+23:59 "
            "(minutes and seconds below 60)"
        )
    offset = timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2], microseconds=parts[3])
    if not offset:
        return timezone.utc
    return timezone(-offset if sign == "-" else offset)


def _offset_name(offset: timedelta) -> str:
    if not offset:
        return "UTC"
    sign = "-" if offset < timedelta(0) else "+"
    rest = abs(offset)
    hours, left = divmod(rest, timedelta(hours=1))
    minutes, left = divmod(left, timedelta(minutes=1))
    name = f"UTC{sign}{hours:02d}:{minutes:02d}"
    if left:
        name += f":{left.seconds:02d}"
        if left.microseconds:
            name += f".{left.microseconds:06d}"
    return name


def _from_pytz(value: tzinfo) -> tzinfo | None:
    """The zoneinfo equivalent of a pytz zone, or None when ``value`` is not one.

    Recognised without importing pytz: its classes live in the ``pytz`` package and have
    ``localize``. pytz zones are named by ``zone``, except ``FixedOffset`` ones.
    """
    module = type(value).__module__
    if not (module == "pytz" or module.startswith("pytz.")) or not hasattr(value, "localize"):
        return None
    name = getattr(value, "zone", None)
    if not isinstance(name, str):
        offset = value.utcoffset(None)
        return timezone.utc if not offset else timezone(offset)
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"pytz zone {name!r} is not in the zoneinfo database: pass the zone by an IANA "
            "name such as 'Europe/Paris'"
        ) from None


def check_max_instances(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_instances must be a positive int, not {value!r}")
    if value < 1:
        raise ConfigError(f"max_instances must be at least 1, got {value}")
    return value


def check_misfire_grace_time(value: object) -> float | None:
    """A positive number of seconds, or None for "run however late"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"misfire_grace_time must be a number of seconds or None, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"misfire_grace_time must be a positive number of seconds (or None), got {value!r}"
        )
    return value


def check_coalesce(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"coalesce must be True or False, not {value!r}")
    return value


def check_timeout(value: object) -> float | None:
    """A positive number of seconds a run may take, or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"timeout must be a positive number of seconds (or None for no limit), got {value!r}"
        )
    return value


def check_pause_on_failure(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"pause_on_failure must be True or False, not {value!r}")
    return value


def check_max_runs(value: object) -> int | None:
    """A positive number of runs after which the job is completed, or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_runs must be a positive int or None, not {value!r}")
    if value < 1:
        raise ConfigError(f"max_runs must be at least 1 (or None for no limit), got {value}")
    return value


_CHECKS = {
    "max_instances": check_max_instances,
    "misfire_grace_time": check_misfire_grace_time,
    "coalesce": check_coalesce,
    "timeout": check_timeout,
    "pause_on_failure": check_pause_on_failure,
}


def check_job_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``values`` over the built-in defaults, refusing unknown keys and bad values."""
    if not isinstance(values, Mapping):
        raise TypeError(f"job_defaults must be a mapping, not {type(values).__name__}")
    unknown = sorted(set(values) - JOB_OPTION_NAMES)
    if unknown:
        raise ConfigError(
            f"unknown job_defaults key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(JOB_OPTION_NAMES))}"
        )
    merged = dict(DEFAULT_JOB_DEFAULTS)
    for key, value in values.items():
        merged[key] = _CHECKS[key](value)
    return merged


def check_executors(values: object) -> dict[str, Any]:
    """The remote engines by name: each a ``RemoteExecutor``; ``"default"`` is this process."""
    from .executors import RemoteExecutor

    if not isinstance(values, Mapping):
        raise TypeError(f"executors must be a mapping of names to executors, not {values!r}")
    checked: dict[str, Any] = {}
    for name, executor in values.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"an executor's name must be a non-empty string, not {name!r}")
        if name == "default":
            raise ConfigError(
                "the executor 'default' is this process; name a remote engine otherwise "
                "(executors={'celery': ..., 'arq': ...})"
            )
        if not isinstance(executor, RemoteExecutor):
            raise TypeError(
                f"executors[{name!r}] must be a remote engine's executor (ArqExecutor, "
                f"CeleryExecutor), not {type(executor).__name__}"
            )
        checked[name] = executor
    return checked


def check_executor(name: object, configured: Mapping[str, Any]) -> str:
    """A job's ``executor``: ``"default"`` or one of the configured engines."""
    if not isinstance(name, str):
        raise TypeError(f"executor must be the name of an executor, not {name!r}")
    if name != "default" and name not in configured:
        known = ", ".join(repr(n) for n in ("default", *configured))
        raise ConfigError(
            f"no executor {name!r}; configured: {known} "
            "(remote engines are named in SchedulerConfig(executors=...))"
        )
    return name


@dataclass
class SchedulerConfig:
    """How the scheduler behaves; every field has a production-ready default.

    ``timezone`` is an IANA name, ``"UTC"``, ``"local"``, a fixed offset such as
    ``"UTC+05:30"`` or a tzinfo (pytz zones are converted by name): cron expressions and
    naive dates are read in it. ``max_concurrent_jobs`` caps runs in progress across all jobs
    (further runs wait for a slot). ``log_level`` is the level of the package's own
    logger, ``nexios_contrib_scheduler``; ``None`` (the default) leaves the level the app
    gave that logger as it is. ``job_defaults`` fill the options an
    ``add_job`` call leaves as ``None``. ``shutdown_timeout`` is how long shutdown waits
    for running jobs before cancelling them.

    ``jobstore`` is where jobs are kept: ``"memory"`` (lost on exit),
    ``"sqlite:///path/jobs.db"``, ``"postgresql://user:pw@host/db"`` or
    ``"redis://host:6379/0"``. ``coordination`` lets several processes share a persistent
    job store with exactly one of them firing jobs: ``None`` (a single process),
    ``"file:///path/scheduler.lock"`` (workers on one host), or a ``postgresql://`` or
    ``redis://`` URL (workers on several hosts). The leader holds a lease of
    ``lease_seconds``; when it dies another worker takes over within that time.
    ``namespace`` prefixes the tables and keys the scheduler keeps in the store.
    ``claim_ahead`` is how many seconds before a fire is due the leader claims it in a
    persistent store, so that its run starts on time instead of waiting for the store
    (``0``: each fire is claimed when it is due).

    ``executors`` names remote engines a job can send its fires to, by
    ``add_job(..., executor=name)``: ``{"arq": ArqExecutor(RedisSettings())}``. The
    executor of a job that names none is ``"default"``: this process.
    """

    timezone: str | tzinfo = "UTC"
    max_concurrent_jobs: int = 10
    log_level: int | str | None = None
    job_defaults: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_JOB_DEFAULTS))
    shutdown_timeout: float = 30.0
    history_size: int = 20
    jobstore: str = "memory"
    coordination: str | None = None
    lease_seconds: float = 10.0
    namespace: str = "nexios_scheduler"
    claim_ahead: float = 0.1
    executors: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tzinfo: tzinfo = resolve_timezone(self.timezone)
        if isinstance(self.max_concurrent_jobs, bool) or not isinstance(
            self.max_concurrent_jobs, int
        ):
            raise TypeError(f"max_concurrent_jobs must be an int, not {self.max_concurrent_jobs!r}")
        if self.max_concurrent_jobs < 1:
            raise ConfigError(
                f"max_concurrent_jobs must be at least 1, got {self.max_concurrent_jobs}"
            )
        if isinstance(self.log_level, bool) or not isinstance(
            self.log_level, (int, str, type(None))
        ):
            raise TypeError(f"log_level must be a logging level or None, not {self.log_level!r}")
        if isinstance(self.log_level, str):
            level = logging.getLevelName(self.log_level.upper())
            if not isinstance(level, int):
                raise ConfigError(f"unknown log_level {self.log_level!r}")
            self.log_level = level
        self.job_defaults = check_job_defaults(self.job_defaults)
        if isinstance(self.shutdown_timeout, bool) or not isinstance(
            self.shutdown_timeout, (int, float)
        ):
            raise TypeError(
                f"shutdown_timeout must be a number of seconds, not {self.shutdown_timeout!r}"
            )
        if not self.shutdown_timeout >= 0:
            raise ConfigError(
                f"shutdown_timeout must be zero or more seconds, got {self.shutdown_timeout!r}"
            )
        if isinstance(self.history_size, bool) or not isinstance(self.history_size, int):
            raise TypeError(f"history_size must be an int, not {self.history_size!r}")
        if self.history_size < 0:
            raise ConfigError(f"history_size must be zero or more, got {self.history_size}")
        self._check_stores()
        self.executors = check_executors(self.executors)

    def _check_stores(self) -> None:
        self.jobstore_url: StoreURL | None = parse_jobstore(self.jobstore)
        self.coordination_url: StoreURL | None = parse_coordination(self.coordination)
        if self.coordination_url is not None and self.jobstore_url is None:
            raise ConfigError(
                f"coordination={self.coordination_url.redacted!r} needs a persistent jobstore: "
                "with jobstore='memory' every process has its own jobs; use "
                "'sqlite:///path/jobs.db', 'postgresql://...' or 'redis://...'"
            )
        seconds = self.lease_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"lease_seconds must be a number of seconds, not {seconds!r}")
        if not (math.isfinite(seconds) and seconds >= 1):
            raise ConfigError(f"lease_seconds must be at least 1 second, got {seconds!r}")
        self.namespace = check_namespace(self.namespace)
        ahead = self.claim_ahead
        if isinstance(ahead, bool) or not isinstance(ahead, (int, float)):
            raise TypeError(f"claim_ahead must be a number of seconds, not {ahead!r}")
        if not (math.isfinite(ahead) and 0 <= ahead <= MAX_CLAIM_AHEAD):
            raise ConfigError(
                f"claim_ahead must be between 0 and {MAX_CLAIM_AHEAD:g} seconds, got {ahead!r}"
            )

    def __repr__(self) -> str:
        # The dataclass's own repr, with the credentials in the store URLs masked.
        shown = []
        for option in fields(self):
            value = getattr(self, option.name)
            if option.name in ("jobstore", "coordination") and isinstance(value, str):
                value = redact(value)
            shown.append(f"{option.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"
