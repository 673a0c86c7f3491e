"""The simulated clock and the timer queue: one thread, one clock, no wall time.

Timers are kept in a binary heap ordered by ``(time, insertion number)``: two timers due at the
same nanosecond fire in the order they were scheduled, so a run is a pure function of its
inputs. Nothing here (or anywhere in the exchange) reads the wall clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class Simulator:
    """A discrete-event loop over simulated time (int64 nanoseconds)."""

    def __init__(self, start: int = 0) -> None:
        self.now = start
        self._queue: list[tuple[int, int, Callable[..., Any], tuple]] = []
        self._scheduled = 0

    def schedule(self, at: int, action: Callable[..., Any], *args: Any) -> None:
        """Run ``action(*args)`` at simulated time ``at`` ns (not before ``now``)."""
        if at < self.now:
            raise ValueError(f"cannot schedule at {at} ns: the clock is already at {self.now} ns")
        heapq.heappush(self._queue, (at, self._scheduled, action, args))
        self._scheduled += 1

    def run(self, until: int, on_step: Callable[[int], None] | None = None) -> None:
        """Fire every timer due at or before ``until`` ns in order, then set the clock to
        ``until``. ``on_step(now)`` is called before each action (the engine uses it to move
        its own clock)."""
        queue = self._queue
        while queue and queue[0][0] <= until:
            at, _, action, args = heapq.heappop(queue)
            self.now = at
            if on_step is not None:
                on_step(at)
            action(*args)
        self.now = max(self.now, until)

    def __len__(self) -> int:
        return len(self._queue)
