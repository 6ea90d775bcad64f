"""The one home of the tests' waiting helpers (and of two faults: ``unannounced``, a lost
notification, and ``FailingFirst``, a store that went away and came back), of
``report_workers``, what a failed test's worker processes say, and of ``stop_processes``.

A wait only bounds how long a test is willing to wait for something that must happen; it
never judges speed. Timeouts are generous because the machine running the suite may be
loaded; a test that passes only when the machine is fast is a flaky test.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

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


@contextlib.contextmanager
def unannounced(persistence: Any) -> Iterator[None]:
    """The changes this worker's writer writes meanwhile reach the store and no other worker
    hears of them, as if their notifications were lost (every notification of a change goes
    through ``Bus.announce_many``). Flush inside the block: a write made after it is told."""
    bus = persistence.bus
    real = bus.announce_many
    bus.announce_many = lambda op, job_ids: None
    try:
        yield
    finally:
        bus.announce_many = real


class FailingFirst:
    """Stands for a store method: its first ``times`` calls that ``when`` accepts (every
    call by default) raise ``ConnectionError``, as a store that went away would; the others
    go to ``real``. ``left`` is how many failures are still to come."""

    def __init__(
        self, real: Callable[..., Any], times: int, when: Callable[..., bool] | None = None
    ) -> None:
        self.real = real
        self.left = times
        self.when = when

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.left and (self.when is None or self.when(*args, **kwargs)):
            self.left -= 1
            raise ConnectionError("the store went away")
        return self.real(*args, **kwargs)


class WorkerProcess(Protocol):
    """A worker the multi-worker and fault suites start: its process and its log."""

    proc: subprocess.Popen[bytes]
    log: Path


def report_workers(workers: Iterable[WorkerProcess]) -> None:
    """For a failed test's report: every live worker (woken if stopped) writes its threads'
    stacks to its log (``faulthandler`` on SIGUSR1), then the tail of each log is printed."""
    workers = list(workers)
    alive = [worker for worker in workers if worker.proc.poll() is None]
    for worker in alive:
        worker.proc.send_signal(signal.SIGCONT)
        worker.proc.send_signal(signal.SIGUSR1)
    if alive:
        time.sleep(1.0)
    for worker in workers:
        print(f"--- worker pid {worker.proc.pid}:\n{worker.log.read_text()[-12000:]}")


def stop_processes(*procs: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM the processes, wait for them (``timeout`` seconds each), SIGKILL what is left."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
