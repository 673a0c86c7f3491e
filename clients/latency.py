"""Simulated latency: how long a bot's commands take to reach the exchange, and market data to
reach the bot.

Each direction waits ``fixed_ns`` plus a seeded uniform jitter in ``[0, jitter_ns]``. Draws come
from the bot's own latency generator (seeded from the session seed and the bot's name, drawn in
blocks of 1,024), one per batch: a command batch (everything one callback sent) or a data batch
(everything the exchange produced for the bot in one simulated instant). Arrivals never overtake
each other in one direction (a message that would arrive before the previous one waits for it),
as on a TCP connection. The smallest possible latency is 1 ns: a bot never reacts in zero time.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Latency(BaseModel):
    """A latency model: ``fixed_ns`` plus a uniform jitter of up to ``jitter_ns`` (both ns).

    Example: ``Latency(fixed_ns=2_000_000, jitter_ns=500_000)`` is 2 to 2.5 ms each way.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fixed_ns: int = Field(default=1_000_000, ge=1, le=86_400 * 10**9)
    jitter_ns: int = Field(default=0, ge=0, le=86_400 * 10**9)


class Link:
    """One direction of a bot's connection: arrival times that respect order and latency."""

    #: Jitter draws are taken from the generator this many at a time (one numpy call per
    #: block instead of one per batch: the draws were a third of a busy session's time).
    BLOCK = 1024

    def __init__(self, latency: Latency, rng: np.random.Generator) -> None:
        self.fixed = latency.fixed_ns
        self.jitter = latency.jitter_ns
        self.rng = rng
        self.last = -1
        self._draws: list[int] = []

    def arrival(self, now: int) -> int:
        """When something sent at ``now`` ns arrives, ns."""
        at = now + self.fixed
        if self.jitter:
            draws = self._draws
            if not draws:
                block = self.rng.integers(0, self.jitter + 1, size=self.BLOCK).tolist()
                draws = self._draws = block[::-1]  # consumed from the end, in drawn order
            at += draws.pop()
        # never before the previous arrival (no overtaking); a test, not max(): once a batch
        last = self.last
        if at < last:
            at = last
        self.last = at
        return at
