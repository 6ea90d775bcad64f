"""Small measuring tools shared by the workloads: percentiles, the loop heartbeat, CPU time."""

from __future__ import annotations

import asyncio
import gc
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

    It also times the interpreter's garbage collections (``gc.callbacks``): a collection
    holds the interpreter's lock, so it stalls the loop whichever thread set it off.
    ``gc_longest`` is the longest one while recording; ``longest_outside_gc`` the longest
    lateness less the time collections took since the beat before, i.e. what the code on
    the loop (or a thread holding the lock) did besides collecting.
    """

    PERIOD = 0.001

    def __init__(self) -> None:
        self.recording = False
        self.longest = 0.0
        self.longest_busy = 0.0
        self.gc_longest = 0.0
        self.longest_outside_gc = 0.0
        self._gc_began = 0.0
        self._gc_counted_from = 0.0
        self._gc_running = False
        self._gc_since_beat = 0.0
        self._cpu = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + self.PERIOD
        self._cpu = time.thread_time()
        self._handle = self._loop.call_at(self._due, self._beat)
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Called in the thread that set the collection off. The loop can run between the
        # end of a collection and the "stop" call (the calling thread may hand over the
        # interpreter's lock first), so a beat counts a collection still under way too.
        now = time.perf_counter()
        if phase == "start":
            self._gc_began = self._gc_counted_from = now
            self._gc_running = True
            return
        self._gc_running = False
        self._gc_since_beat += now - self._gc_counted_from
        took = now - self._gc_began
        if self.recording and took > self.gc_longest:
            self.gc_longest = took

    def begin(self) -> None:
        """Start recording (and forget what was seen before). A beat already late when
        this is called (the caller blocked the loop just before, say with ``gc.collect()``)
        counts from now: only what happens after ``begin`` is recorded."""
        self.longest = 0.0
        self.longest_busy = 0.0
        self.gc_longest = 0.0
        self.longest_outside_gc = 0.0
        self._gc_since_beat = 0.0
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
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

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
            collecting = self._gc_since_beat
            if self._gc_running:  # ended, its "stop" not called yet: counted up to now
                counted_to = time.perf_counter()
                collecting += counted_to - self._gc_counted_from
                self._gc_counted_from = counted_to
            outside = max(0.0, late - collecting)
            if outside > self.longest_outside_gc:
                self.longest_outside_gc = outside
        self._gc_since_beat = 0.0
        self._cpu = cpu
        self._due = now + self.PERIOD
        self._handle = loop.call_at(self._due, self._beat)


def stalls(heartbeat: Heartbeat, key: str = "stall") -> dict[str, float]:
    """End ``heartbeat``'s window: the longest stall under ``key``, the longest garbage
    collection in it under ``key_gc`` and the longest stall outside collections under
    ``key_outside_gc``."""
    return {
        key: heartbeat.end(),
        f"{key}_gc": heartbeat.gc_longest,
        f"{key}_outside_gc": heartbeat.longest_outside_gc,
    }


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
