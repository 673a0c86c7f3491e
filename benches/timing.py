"""Timing shared by the benches: our own per-round seconds beside pytest-benchmark's, so a
figure (and a ratio asserted on it) exists under ``--benchmark-disable`` too."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def timed_median(benchmark, function: Callable[[], Any], rounds: int) -> tuple[Any, float, int]:
    """``function()`` for ``rounds`` rounds under pytest-benchmark (one under
    ``--benchmark-disable``), after one warm-up round: the last result, the median of our own
    per-round seconds, and the number of rounds timed."""
    seconds: list[float] = []
    out: dict[str, Any] = {}

    def target() -> None:
        t0 = time.perf_counter()
        out["result"] = function()
        seconds.append(time.perf_counter() - t0)

    benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=1)
    kept = seconds[-rounds:]  # the warm-up round is timed too: leave it out
    return out["result"], statistics.median(kept), len(kept)
