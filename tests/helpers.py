"""The one home of the tests' waiting helpers.

A wait only bounds how long a test is willing to wait for something that must happen; it
never judges speed. Timeouts are generous because the machine running the suite may be
loaded; a test that passes only when the machine is fast is a flaky test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_INTERVAL = 0.005


def _failure(what: str | None, timeout: float) -> AssertionError:
    subject = what or "condition"
    return AssertionError(f"waited {timeout}s for {subject}, and it did not happen")


async def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str | None = None
) -> None:
    """Wait on the event loop for ``predicate`` to hold; fail after ``timeout`` seconds.

    ``what`` says what was waited for, so a failure reads as a sentence.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise _failure(what, timeout)
        await asyncio.sleep(POLL_INTERVAL)


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, what: str | None = None
) -> None:
    """Block until ``predicate`` holds; fail after ``timeout`` seconds (for code off the loop).

    ``what`` says what was waited for, so a failure reads as a sentence.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise _failure(what, timeout)
        time.sleep(POLL_INTERVAL)
