"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from nexios_contrib_scheduler import SchedulerConfig, SchedulerManager


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Each phase's report on the test item (``report_call``...): fixtures that gather
    evidence when a test failed read it."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


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
