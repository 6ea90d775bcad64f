"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from nexios_contrib_scheduler import SchedulerConfig, SchedulerManager


@pytest.fixture
async def managers() -> AsyncIterator[Callable[[SchedulerConfig], SchedulerManager]]:
    """Make managers with ``managers(config)``; all are shut down after the test."""
    made: list[SchedulerManager] = []

    def make(config: SchedulerConfig) -> SchedulerManager:
        manager = SchedulerManager(config=config)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.shutdown()
