"""The manager given hostile input, and when a job or the manager's own bookkeeping fails."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from nexios_contrib_scheduler import (
    SchedulerConfig,
    SchedulerManager,
)

UTC = timezone.utc
T0 = datetime(2030, 1, 1, tzinfo=UTC)
PACKAGE_LOGGER = "nexios_contrib_scheduler"


class Calls:
    """An async job that counts its runs, and each run's function by name."""

    def __init__(self, label: str = "job") -> None:
        self.label = label
        self.runs: list[str] = []

    async def __call__(self) -> None:
        self.runs.append(self.label)

    @property
    def count(self) -> int:
        return len(self.runs)


@pytest.fixture
async def clocked(scheduler_clock):
    """A manager in UTC, driven by the frozen clock, which starts at T0."""
    scheduler_clock.set(T0)
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2))
    yield m
    await m.shutdown()


@pytest.fixture
async def new_york(scheduler_clock):
    """A manager in New York time, driven by the frozen clock, which starts at T0."""
    scheduler_clock.set(T0)
    m = SchedulerManager(config=SchedulerConfig(shutdown_timeout=2, timezone="America/New_York"))
    yield m
    await m.shutdown()


# ---------------------------------------------------------------- 16. the logger's level


class TestLogLevel:
    def test_a_level_set_on_the_package_logger_survives_new_schedulers(self):
        package_logger = logging.getLogger(PACKAGE_LOGGER)
        saved = package_logger.level
        try:
            package_logger.setLevel(logging.ERROR)
            SchedulerManager()
            SchedulerManager(config=SchedulerConfig(timezone="Europe/Paris"))
            assert package_logger.level == logging.ERROR
            SchedulerManager(config=SchedulerConfig(log_level="DEBUG"))
            assert package_logger.level == logging.DEBUG  # given explicitly: applied
        finally:
            package_logger.setLevel(saved)
