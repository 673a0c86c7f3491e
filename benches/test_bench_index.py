"""Index feeds: one year of 1-minute prints (525,600) for each seed calibration.

Times ``index_prints`` end to end — the publication schedule, the calibrated path (log-linear
anchors, generation-release jumps, the pinned OU noise) and the rounding to ticks. Units:
**prints/s** (index publications generated per second), seconds. Each round times itself with
``time.perf_counter`` (so figures exist under ``--benchmark-disable`` too); the figure is
``525,600 / median round seconds``. Every round must return the same ticks (determinism) and
525,600 positive ticks, so a broken feed fails instead of reporting a number. See
benches/README.md, "Index feeds".
"""

from __future__ import annotations

import statistics
import time
from datetime import date

import numpy as np
import pytest

from exchange.products.index import CALIBRATIONS, DAY_NS, MINUTE_NS, index_prints

EPOCH = date(2025, 2, 1)
END_NS = 365 * DAY_NS - MINUTE_NS  # 525,600 one-minute prints from 0
N_PRINTS = 525_600
ROUNDS = 5
SEED = 7


def report(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n[index feeds] {line}")


@pytest.mark.parametrize("name", list(CALIBRATIONS))
def test_one_year_of_minute_prints(benchmark, capsys, name):
    spec = CALIBRATIONS[name].model_copy(update={"interval_ns": MINUTE_NS})
    seconds: list[float] = []
    outputs: list[np.ndarray] = []

    def target() -> None:
        t0 = time.perf_counter()
        times, ticks = index_prints(spec, EPOCH, 0, END_NS, SEED)
        seconds.append(time.perf_counter() - t0)
        assert times.size == ticks.size == N_PRINTS
        outputs.append(ticks)

    benchmark.pedantic(target, rounds=ROUNDS, iterations=1)
    assert all(np.array_equal(outputs[0], ticks) for ticks in outputs)
    assert outputs[0].min() > 0
    median = statistics.median(seconds)
    rate = N_PRINTS / median
    benchmark.extra_info.update(
        prints=N_PRINTS, rounds=len(seconds), median_s=median, prints_per_s=round(rate)
    )
    report(
        capsys,
        f"{name:<12} {N_PRINTS:,} one-minute prints: {rate:,.0f} prints/s "
        f"(median of {len(seconds)} rounds, {median * 1e3:.0f} ms)",
    )
