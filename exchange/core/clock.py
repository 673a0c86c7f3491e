"""The simulated clock and the timer queue: one thread, one clock, no wall time.

Timers are kept in a binary heap ordered by ``(time, priority, insertion number)``. At the same
nanosecond the exchange's own actions (``MARKET``: index prints, marks, funding, premiums,
expiries) come before participants' commands (``PARTICIPANT``), margin cycles (``CLEARING``)
come after both -- a cycle closes its nanosecond: it sees every print, fill and deposit of it,
so a deposit at a call's deadline counts before the deadline is checked -- and observers come
last. Within a priority timers fire in the order they were scheduled — so a run is a pure
function of its inputs, and a verification that schedules the same actions in a different
order still replays identically.
Nothing here (or anywhere in the exchange) reads the wall clock.

This :class:`Simulator` is the reference. ``exchange.core._clock.Simulator`` is its compiled
twin (the heap in C; the same API, order and errors, held to it by
tests/exchange/core/test_clock.py): sessions of the compiled engine run on it, sessions of the
reference engine on this one (``exchange.kernel.engines.clock_class``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

#: A simulated day and a 365-day year, in ns.
DAY_NS = 86_400 * 10**9
YEAR_NS = 365 * DAY_NS

MARKET = 0
PARTICIPANT = 1
#: Margin cycles (scheduled and index-move triggered): after the exchange's own actions and
#: the participants' commands of the same instant.
CLEARING = 2
#: After everything else at the same instant: observers that only read the state (the bot
#: runner publishing market data) and emit no events, so verification need not run them.
OBSERVER = 3


class Simulator:
    """A discrete-event loop over simulated time (int64 nanoseconds)."""

    def __init__(self, start: int = 0) -> None:
        self.now = start
        self._queue: list[tuple[int, int, int, Callable[..., Any], tuple]] = []
        self._scheduled = 0

    def schedule(
        self, at: int, action: Callable[..., Any], *args: Any, priority: int = PARTICIPANT
    ) -> None:
        """Run ``action(*args)`` at simulated time ``at`` ns (not before ``now``); at equal
        times lower ``priority`` runs first (``MARKET``, ``PARTICIPANT``, ``CLEARING``,
        ``OBSERVER``)."""
        if at < self.now:
            raise ValueError(f"cannot schedule at {at} ns: the clock is already at {self.now} ns")
        heapq.heappush(self._queue, (at, priority, self._scheduled, action, args))
        self._scheduled += 1

    def run(self, until: int, on_step: Callable[[int], None] | None = None) -> None:
        """Fire every timer due at or before ``until`` ns in order, then set the clock to
        ``until``. ``on_step(now)`` is called before each action (the engine uses it to move
        its own clock)."""
        queue = self._queue
        while queue and queue[0][0] <= until:
            at, _, _, action, args = heapq.heappop(queue)
            self.now = at
            if on_step is not None:
                on_step(at)
            action(*args)
        self.now = max(self.now, until)

    def __len__(self) -> int:
        return len(self._queue)
