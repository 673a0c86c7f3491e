"""The second-derivative view of a series: level S, velocity S', acceleration S''.

From the seed essay ("The Second Derivative"): *"Let the relevant quantity be S. Three numbers
describe it. The level is S itself ... The first derivative is the velocity, S': how fast it is
growing. The second derivative is the acceleration, S'': whether that growth is itself speeding
up or slowing down."* And: *"There is a window - call it borrowed time - between the moment the
second derivative rolls over and the moment the first derivative crosses zero."*

:func:`trend` estimates all three at every sample from a **trailing local quadratic
regression**; :func:`borrowed_time` finds the borrowed-time windows. A **jump** (a generation
shock: the index reprices overnight) is a level shift, not a slope: :func:`detect_jumps` finds
the steps that stand out of a series' noise, and :func:`trend` given them fits the series with
those steps taken out and puts them back into the level S, so S follows the index through the
jump while S' and S'' see only the movement around it. This is analysis, not the
ledger: floats throughout, nothing here is rounded into ticks. Times are int64 simulated
nanoseconds; rates are per year (:data:`exchange.products.index.YEAR_NS`, 365.25 days).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from exchange.products.index import YEAR_NS

#: A fit needs this many points in its window (a quadratic has three coefficients).
MIN_POINTS = 3
#: A step is a jump when it is this many robust standard deviations (1.4826 x the median
#: absolute deviation of the steps) away from the median step ...
JUMP_SIGMAS = 10.0
#: ... and at least this big in log (about 3 %; for a series with a non-positive level: this
#: fraction of the median absolute level). The seeds' generation shocks are -15 % to -55 % in
#: one print; the calibrated indices' noise is under 1 % a print (daily resale) and about
#: 0.3 % (hourly rental), whose largest steps over a year stay under 5 robust sigmas.
MIN_JUMP_LOG = 0.03


class Jump(NamedTuple):
    """One level shift of a series.

    Attributes:
        i: index of the first sample after the shift (the shift is between ``i - 1`` and ``i``).
        t: that sample's time, int64 ns.
        size: the shift, in the input's units: the step ``y[i] - y[i-1]`` less the series'
            median step (the drift a sample would have moved anyway).
        log_size: ``log(y[i] / y[i-1])`` (NaN for a non-positive level).
    """

    i: int
    t: int
    size: float
    log_size: float


def detect_jumps(
    times_ns: np.ndarray,
    levels: np.ndarray,
    *,
    sigmas: float = JUMP_SIGMAS,
    min_log: float = MIN_JUMP_LOG,
) -> list[Jump]:
    """The level shifts of a series: steps that stand out of its noise.

    A step ``i-1 -> i`` is a jump when its log change ``r_i = log(y[i] / y[i-1])`` is more than
    ``sigmas`` robust standard deviations from the median step (the noise scale is
    ``1.4826 x median(|r - median(r)|)``, which a few jumps do not inflate) and
    ``|r_i| >= min_log``. A series with a non-positive level is tested on its level steps
    instead (the floor is then ``min_log`` x the median absolute level). Returned in time order.

    The noise scale is taken over the whole series: this is analysis after the fact (the
    trend's own fits still look only backwards).

    Args:
        times_ns: sample times, int64 ns, strictly increasing.
        levels: the series at those times (finite).
        sigmas: the threshold in robust standard deviations.
        min_log: the smallest jump, in log (or as a fraction of the level, see above).
    """
    t = np.asarray(times_ns, dtype=np.int64)
    y = np.asarray(levels, dtype=np.float64)
    if y.size < 3:
        return []
    positive = bool(np.all(y > 0))
    steps = np.diff(np.log(y)) if positive else np.diff(y)
    floor = min_log if positive else min_log * float(np.median(np.abs(y)))
    centre = float(np.median(steps))
    scale = 1.4826 * float(np.median(np.abs(steps - centre)))
    hit = np.flatnonzero(
        (np.abs(steps - centre) > sigmas * scale) & (np.abs(steps) >= floor) & (floor > 0)
    )
    drift = float(np.median(np.diff(y)))
    out = []
    for k in hit.tolist():
        i = k + 1
        log_size = float(steps[k]) if positive else float("nan")
        out.append(Jump(i, int(t[i]), float(y[i] - y[k]) - drift, log_size))
    return out


class Trend(NamedTuple):
    """The estimates at each input time (NaN where no estimate is made).

    Attributes:
        t: sample times, int64 ns.
        S: the smoothed level, in the input's units.
        S1: the velocity S', input units per year.
        S2: the acceleration S'', input units per year^2.
    """

    t: np.ndarray
    S: np.ndarray
    S1: np.ndarray
    S2: np.ndarray


def trend(
    times_ns: np.ndarray,
    levels: np.ndarray,
    window_ns: int,
    jumps: Sequence[Jump] = (),
) -> Trend:
    """Level, velocity and acceleration from a trailing local quadratic regression.

    ``jumps`` (from :func:`detect_jumps`, or known from the index's model): level shifts to
    take out before the fit. The fit runs on ``y - J``, ``J(t)`` the sum of the sizes of the
    jumps at or before ``t``, and the level is ``S = fit + J(t_i)``: a jump moves S at once by
    its size and leaves no slope behind it, so S follows the level through it and S', S''
    show only the movement around it. Without jumps (the default) the fit is on ``y`` itself.

    At each sample time ``t_i``, the samples with ``t_i - window_ns <= t_j <= t_i`` are fitted
    by least squares with ``c0 + c1 x + c2 x^2``, ``x = t_j - t_i`` in years; then
    ``S = c0`` (the fitted level at ``t_i``), ``S1 = c1`` (per year), ``S2 = 2 c2`` (per
    year^2). The window looks only backwards, so an estimate at ``t_i`` uses nothing an
    observer at ``t_i`` would not have (no look-ahead). The fit is exact for a quadratic
    series on any grid; for smoother-than-the-window curves the bias is of order ``S''' w`` in
    ``S2`` (on a dense uniform grid: ``-S''' w / 2`` in ``S2``, ``-S''' w^2 / 10`` in ``S1`` and
    ``-S''' w^3 / 120`` in ``S``, ``w`` the window in years): a roll-over of ``S2`` shows up
    about half a window late, a zero of ``S1`` practically on time. Irregular grids are fine:
    the regression uses the actual times.

    NaN where the estimate is not made: before the series covers a whole window
    (``t_i - t_0 < window_ns``) and where the window holds fewer than :data:`MIN_POINTS`
    samples.

    Args:
        times_ns: sample times, int64 ns, strictly increasing.
        levels: the series at those times (any units; finite).
        window_ns: the trailing window, ns (> 0).

    Cost: O(n) vector work, in chunks of samples that fit in one window (each chunk's moments
    are taken about its own origin, in units of the window, to keep the cumulative sums
    well-conditioned).
    """
    t = np.asarray(times_ns)
    y = np.asarray(levels, dtype=np.float64)
    if t.ndim != 1 or y.shape != t.shape:
        raise ValueError(f"times_ns and levels must be 1-D of equal length: {t.shape}, {y.shape}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"times_ns must be integer nanoseconds, got dtype {t.dtype}")
    t = t.astype(np.int64, copy=False)
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ValueError("times_ns must be strictly increasing")
    if not np.all(np.isfinite(y)):
        raise ValueError("levels must be finite")
    if isinstance(window_ns, bool) or int(window_ns) != window_ns or window_ns <= 0:
        raise ValueError(f"window_ns must be a positive integer, got {window_ns!r}")
    window_ns = int(window_ns)
    n = t.size
    S, S1, S2 = (np.full(n, np.nan) for _ in range(3))
    if n == 0:
        return Trend(t, S, S1, S2)
    shift = np.zeros(n)  # J: the jumps taken out, cumulative
    for jump in jumps:
        if not 0 < jump.i < n:
            raise ValueError(f"a jump must fall inside the series (1..{n - 1}), not {jump.i}")
        shift[jump.i :] += jump.size
    y = y - shift

    lo = np.searchsorted(t, t - window_ns, side="left")  # first sample in each window
    count = np.arange(n) - lo + 1
    valid = np.flatnonzero((count >= MIN_POINTS) & (t - t[0] >= window_ns))
    w_years = window_ns / YEAR_NS
    tv = t[valid]
    p = 0
    while p < valid.size:
        # a chunk: valid samples within one window of the chunk's first one
        q = int(np.searchsorted(tv, tv[p] + window_ns, side="right"))
        out = valid[p:q]
        r0, r1 = int(lo[out[0]]), int(out[-1]) + 1  # every sample any of these windows uses
        origin = t[out[-1]]
        u = (t[r0:r1] - origin) / window_ns  # in [-2, 0]
        y_ref = y[out[0]]  # a level no later than any sample estimated in this chunk
        yc = y[r0:r1] - y_ref
        moments = np.zeros((5, r1 - r0 + 1))
        ymoments = np.zeros((3, r1 - r0 + 1))
        power = np.ones_like(u)
        for k in range(5):
            np.cumsum(power, out=moments[k, 1:])
            if k < 3:
                np.cumsum(yc * power, out=ymoments[k, 1:])
            power = power * u
        a, b = lo[out] - r0, out - r0 + 1
        m = moments[:, b] - moments[:, a]  # sums of u^k over each window
        my = ymoments[:, b] - ymoments[:, a]  # sums of (y - y_ref) u^k
        # shift to x = u - d, d = (t_i - origin) / window: sums of x^k and (y - y_ref) x^k
        d = (t[out] - origin) / window_ns
        s0 = m[0]
        s1 = m[1] - d * m[0]
        s2 = m[2] - 2 * d * m[1] + d**2 * m[0]
        s3 = m[3] - 3 * d * m[2] + 3 * d**2 * m[1] - d**3 * m[0]
        s4 = m[4] - 4 * d * m[3] + 6 * d**2 * m[2] - 4 * d**3 * m[1] + d**4 * m[0]
        g0 = my[0]
        g1 = my[1] - d * my[0]
        g2 = my[2] - 2 * d * my[1] + d**2 * my[0]
        normal = np.stack(
            [np.stack([s0, s1, s2], -1), np.stack([s1, s2, s3], -1), np.stack([s2, s3, s4], -1)],
            -2,
        )
        coef = np.linalg.solve(normal, np.stack([g0, g1, g2], -1)[..., None])[..., 0]
        S[out] = coef[:, 0] + y_ref + shift[out]
        S1[out] = coef[:, 1] / w_years
        S2[out] = 2.0 * coef[:, 2] / w_years**2
        p = q
    return Trend(t, S, S1, S2)


def borrowed_time(tr: Trend, min_ns: int = 0) -> list[tuple[int, int | None]]:
    """The borrowed-time windows of a trend: ``[(t_start_ns, t_end_ns or None), ...]``.

    *"There is a window - call it borrowed time - between the moment the second derivative
    rolls over and the moment the first derivative crosses zero. During that window everything
    looks fine."* (the seed essay). Here:

    * a window **opens** at the first sample where ``S2 < 0`` after a sample with ``S2 >= 0``,
      if ``S1 > 0`` there (growth still positive, no longer accelerating);
    * it **closes** at the first later sample with ``S1 <= 0``; ``None`` if ``S1`` has not
      reached zero by the end of the series (the window is still open).

    Samples where ``S1`` or ``S2`` is NaN are skipped (consecutive means consecutive among the
    estimated samples). Roll-overs inside an open window do not open another one: a window is
    dated from its first roll-over. A series whose first estimate already has ``S2 < 0`` has no
    observed roll-over there, so no window starts at it. Times are sample times (ns), not
    interpolated crossings.

    ``min_ns``: a closed window shorter than this (``t_end - t_start < min_ns``) is a flicker of
    the estimates around a turn, not a window, and is left out (the report uses one day, so
    every window it lists has a length). An open window is always kept.
    """
    ok = np.isfinite(tr.S1) & np.isfinite(tr.S2)
    t, s1, s2 = np.asarray(tr.t)[ok], tr.S1[ok], tr.S2[ok]
    if t.size < 2:
        return []
    starts = np.flatnonzero((s2[:-1] >= 0) & (s2[1:] < 0) & (s1[1:] > 0)) + 1
    ends = np.flatnonzero(s1 <= 0)
    windows: list[tuple[int, int | None]] = []
    after = 0
    for s in starts.tolist():
        if s < after:
            continue
        k = int(np.searchsorted(ends, s))
        if k == ends.size:
            windows.append((int(t[s]), None))
            break
        e = int(ends[k])
        if int(t[e]) - int(t[s]) >= min_ns:
            windows.append((int(t[s]), int(t[e])))
        after = e + 1
    return windows
