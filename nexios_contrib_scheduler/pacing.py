"""How much of a burst to handle in one turn of the event loop.

A burst (thousands of fires due at one instant) is started a slice at a time, and the
loop runs between slices so that the app's requests are served meanwhile. A slice's cost
is not only its own: the runs it starts take their first steps in the loop's next turn.
How long that is depends on the jobs (one whose body computes before its first ``await``
costs more) and on the machine, so a fixed number of fires per slice either stalls the loop
or slows the burst. ``Pacer`` sizes each slice from what the previous ones cost: the time
from one slice's start to the next slice's start, which covers the slice, the first steps
of the runs it started and whatever else the loop did in between, divided by the slice's
size. It then takes as many as fit in ``TURN_BUDGET``, never fewer than ``least`` (a busy
app still sees its jobs start) nor more than ``most``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Seconds of the loop's time a slice of a burst, with the first steps of its runs, aims at.
TURN_BUDGET = 0.004


class Pacer:
    """The size of the next slice of a burst, learnt from the cost of the slices before.

    Call ``next_size(continuing, most)`` as a slice begins (``continuing``: the slice before
    was of the same burst, one turn of the loop ago), then ``took(count)`` with the number
    of items the slice handled. The size learnt carries over to the next burst.
    """

    def __init__(
        self,
        least: int = 4,
        budget: float = TURN_BUDGET,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if least < 1:
            raise ValueError(f"least must be at least 1, got {least}")
        if not budget > 0:
            raise ValueError(f"budget must be positive, got {budget}")
        self.least = least
        #: Seconds a turn aims at; ``math.inf`` makes every slice as large as allowed.
        self.budget = budget
        self.clock = clock
        #: The size the last slice was given; None before the first.
        self.size: int | None = None
        self._began: float | None = None
        self._count = 0

    def next_size(self, continuing: bool, most: int) -> int:
        """The number of items (at most ``most``) the slice beginning now may handle."""
        now = self.clock()
        size = most if self.size is None else self.size
        if continuing and self._began is not None and self._count > 0:
            per_item = (now - self._began) / self._count
            fits = self.budget / per_item if per_item > 0 else math.inf
            size = most if fits >= most else max(self.least, int(fits))
        self.size = size = max(1, min(size, most))
        self._began = now
        self._count = 0
        return size

    def took(self, count: int) -> None:
        """The slice that began last handled ``count`` items."""
        self._count = count


async def in_slices(
    pacer: Pacer, items: Sequence[T], most: int, handle: Callable[[T], object]
) -> None:
    """Call ``handle`` on each of ``items``, a slice per turn of the event loop (the loop
    runs between slices), each slice sized by ``pacer`` (at most ``most``). Meant for work
    whose cost lands in the next turn: setting the results of futures that runs await."""
    continuing = False
    start = 0
    while start < len(items):
        size = pacer.next_size(continuing, most)
        for item in items[start : start + size]:
            handle(item)
        pacer.took(min(size, len(items) - start))
        start += size
        continuing = True
        if start < len(items):
            await asyncio.sleep(0)
