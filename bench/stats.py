"""Small measuring tools shared by the workloads: percentiles, the loop heartbeat, CPU time."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    """The median of the values that are numbers; NaN when there are none."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


class Heartbeat:
    """A callback that asks to run every millisecond and records how late each call is.

    A call later than asked means the loop was busy with something else for that long:
    the longest such delay, while ``recording``, is the longest stall (``longest``). On a
    shared machine the process can also be descheduled, which delays the call without the
    loop doing anything; ``longest_busy`` counts only the part of each delay that the loop's
    thread spent on the CPU, which is what a stall caused by the scheduler looks like. It is
    a plain timer callback (no task, no future) so that it costs the loop little.
    """

    PERIOD = 0.001

    def __init__(self) -> None:
        self.recording = False
        self.longest = 0.0
        self.longest_busy = 0.0
        self._cpu = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + self.PERIOD
        self._cpu = time.thread_time()
        self._handle = self._loop.call_at(self._due, self._beat)

    def begin(self) -> None:
        """Start recording (and forget what was seen before). A beat already late when
        this is called (the caller blocked the loop just before, say with ``gc.collect()``)
        counts from now: only what happens after ``begin`` is recorded."""
        self.longest = 0.0
        self.longest_busy = 0.0
        self.recording = True
        if self._loop is not None:
            self._due = max(self._due, self._loop.time())
            self._cpu = time.thread_time()

    def end(self) -> float:
        """Stop recording; the longest stall seen since ``begin``, in seconds."""
        self.recording = False
        return self.longest

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _beat(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        cpu = time.thread_time()
        if self.recording:
            late = now - self._due
            busy = min(late, cpu - self._cpu)
            if late > self.longest:
                self.longest = late
            if busy > self.longest_busy:
                self.longest_busy = busy
        self._cpu = cpu
        self._due = now + self.PERIOD
        self._handle = loop.call_at(self._due, self._beat)


class CpuMeter:
    """CPU seconds this process used (all threads) between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self._cpu = 0.0
        self._wall = 0.0
        self.cpu = 0.0
        self.wall = 0.0

    def start(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def stop(self) -> None:
        self.cpu = time.process_time() - self._cpu
        self.wall = time.perf_counter() - self._wall

    @property
    def share(self) -> float:
        """CPU used as a fraction of one core over the measured wall time."""
        return self.cpu / self.wall if self.wall else math.nan


async def sleep_until(when: float) -> None:
    """Sleep until the wall clock reads ``when`` (epoch seconds)."""
    delay = when - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def drain_loop() -> None:
    """Return once every callback queued on the loop before this call has run."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done
