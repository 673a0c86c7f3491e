"""Index feeds: the reference prices the exchange's derivatives settle against.

An index is a named series of **prints**: at each publication time (simulated int64
nanoseconds since the session's epoch, a calendar date at UTC midnight) the index value as an
integer number of ticks. Where the values come from is a **source** (:class:`IndexSource`):

* :class:`ModelPathSource` (``"model_path"``): log-linear through dated anchors (the
  calibrations from the seed figures), plus optional seeded noise, fixed-date generation-release
  jumps and generation shocks whose date and size the seed draws (:class:`GenerationShock`);
* :class:`GbmSource` (``"gbm"``): geometric Brownian motion, optionally mean-reverting in log
  price, exact on any time grid;
* :class:`CsvSource` (``"csv"``): observed prices from a ``date,model,price`` file, as a step
  function.

A source returns **float** levels in currency units ($/GPU-hour for rental indices, $/GPU for
resale). Floats stop at :func:`to_ticks`, the one rounding boundary (round half to even of
``level / tick_size``); everything downstream is integer ticks. Randomness comes only from the
``numpy.random.Generator`` handed in, which :func:`index_prints` seeds from the session seed
and a SHA-256 of the index name, so a feed is a pure function of (spec, epoch, times, seed).
Nothing here reads the wall clock. See ``docs/indices.md``.

In a session with the credit economy (issue #21), a **rental** index's levels are multiplied by
the economy's rental-price factor for the month (:class:`RentalGlut`: the economy's open-market
price after the glut over its first month's), before the one rounding: the glut the economy's
pull-backs and defaults release feeds the exchange's rental indices (docs/credit.md, "The glut
on the exchange"). Without an economy nothing changes.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from statistics import NormalDist
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    StrictInt,
    field_validator,
    model_serializer,
    model_validator,
)

#: Nanoseconds in a day.
DAY_NS = 86_400 * 10**9
#: Nanoseconds in a year (the Julian year, 365.25 days): the unit of every ``*_per_year`` rate
#: and of annualised volatilities.
YEAR_NS = 31_557_600 * 10**9
#: Largest index value :func:`to_ticks` accepts, in ticks (2**53: exact in float64 and int64).
MAX_TICKS = 1 << 53
#: A log-space OU recursion is solved in closed form over runs of steps whose total decay
#: ``kappa * dt`` is at most this (so the ``exp(decay)`` factors stay far from overflow).
_CHUNK_DECAY = 50.0

PositiveLevel = Annotated[float, Field(gt=0, allow_inf_nan=False)]
LogJump = Annotated[float, Field(ge=-5.0, le=5.0, allow_inf_nan=False)]


class IndexDataError(ValueError):
    """Index input data is unusable: a malformed CSV file (the message names the file and line
    number), a model with no rows, or a time before the first observation."""


# --------------------------------------------------------------------------------------------
# time


def date_to_ns(d: date, epoch: date) -> int:
    """Simulated time (int ns since ``epoch``, UTC midnight) of UTC midnight on ``d``.

    Pure calendar arithmetic: ``(d - epoch).days * DAY_NS`` (negative before the epoch)."""
    return (d - epoch).days * DAY_NS


def ns_to_date(t: int, epoch: date) -> date:
    """The calendar date (UTC) containing simulated time ``t`` ns since ``epoch``.

    Floors towards minus infinity: ``t = -1`` is the day before the epoch."""
    return epoch + timedelta(days=int(t) // DAY_NS)


def _as_times(times_ns: np.ndarray) -> np.ndarray:
    """``times_ns`` as a 1-D int64 array, checked non-decreasing."""
    t = np.asarray(times_ns)
    if t.ndim != 1:
        raise ValueError(f"times_ns must be 1-D, got shape {t.shape}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"times_ns must be integer nanoseconds, got dtype {t.dtype}")
    t = t.astype(np.int64, copy=False)
    if t.size > 1 and np.any(np.diff(t) < 0):
        raise ValueError("times_ns must be non-decreasing")
    return t


# --------------------------------------------------------------------------------------------
# sources


@runtime_checkable
class IndexSource(Protocol):
    """Where an index's values come from."""

    def levels(self, times_ns: np.ndarray, epoch: date, rng: np.random.Generator) -> np.ndarray:
        """Float64 levels in currency units ($/GPU-hour rental, $/GPU resale) at ``times_ns``
        (int64 ns since ``epoch``, non-decreasing), drawing any randomness from ``rng``."""
        ...


def _ou_path(
    dt_years: np.ndarray, kappa: float, sigma: float, x0: float, rng: np.random.Generator
) -> np.ndarray:
    """An exact Ornstein-Uhlenbeck path ``dX = -kappa X dt + sigma dW`` (kappa, sigma per year;
    ``kappa = 0``: Brownian motion) at ``len(dt_years) + 1`` times with steps ``dt_years``
    (years, >= 0), starting at ``X = x0``. Draws ``len(dt_years)`` standard normals from
    ``rng`` in one call.

    Each step is the exact transition ``X' = e^{-kappa dt} X + sd(dt) Z`` with
    ``sd^2 = sigma^2 (1 - e^{-2 kappa dt}) / (2 kappa)``. The linear recursion is solved in
    closed form (cumulative sums) over runs of steps with total decay <= ``_CHUNK_DECAY``.
    """
    n = dt_years.size + 1
    x = np.empty(n)
    x[0] = x0
    if n == 1:
        return x
    if kappa > 0:
        decay = kappa * dt_years
        sd = sigma * np.sqrt(-np.expm1(-2.0 * decay) / (2.0 * kappa))
    else:
        decay = np.zeros_like(dt_years)
        sd = sigma * np.sqrt(dt_years)
    eps = sd * rng.standard_normal(n - 1)
    cum = np.zeros(n)
    np.cumsum(decay, out=cum[1:])
    s = 0
    while s < n - 1:
        e = int(np.searchsorted(cum, cum[s] + _CHUNK_DECAY, side="right")) - 1
        if e <= s:  # one step decays by more than e^-50: take it on its own
            x[s + 1] = math.exp(-decay[s]) * x[s] + eps[s]
            s += 1
            continue
        grow = np.exp(cum[s + 1 : e + 1] - cum[s])
        x[s + 1 : e + 1] = (x[s] + np.cumsum(eps[s:e] * grow)) / grow
        s = e
    return x


#: Spawn key that derives the generation-shock sub-stream from the generator's seed sequence
#: (``b"SHOCK"`` as an integer): far above the small integers ``SeedSequence.spawn`` hands out,
#: so it never collides with an ordinary child stream.
SHOCK_STREAM_KEY = int.from_bytes(b"SHOCK", "big")


def shock_stream(rng: np.random.Generator) -> np.random.Generator:
    """The generation-shock sub-stream of ``rng``: a new generator seeded from ``rng``'s own
    seed sequence with the extra spawn key :data:`SHOCK_STREAM_KEY`.

    A pure function of the seed ``rng`` was built from: it draws nothing from ``rng`` and does
    not depend on how much of ``rng`` has been used, so shock draws never move the noise
    stream (a path without shocks prints what it printed before shocks existed).

    Raises:
        ValueError: ``rng`` is ``None`` or was not built from a ``SeedSequence``.
    """
    seq = getattr(getattr(rng, "bit_generator", None), "seed_seq", None)
    if not isinstance(seq, np.random.SeedSequence):
        raise ValueError(
            "generation shocks need a numpy Generator built from a seed (its SeedSequence "
            f"derives the shock stream), got {rng!r}"
        )
    child = np.random.SeedSequence(
        seq.entropy, spawn_key=(*seq.spawn_key, SHOCK_STREAM_KEY), pool_size=seq.pool_size
    )
    return np.random.default_rng(child)


def _truncated_normal(u: float, mean: float, sd: float, lo: float, hi: float) -> float:
    """The ``u``-quantile (``0 <= u < 1``) of Normal(mean, sd) truncated to ``[lo, hi]``
    (``lo <= mean <= hi``), by inverting the CDF; ``sd = 0`` gives ``mean``."""
    if sd == 0.0 or lo == hi:
        return min(max(mean, lo), hi)
    law = NormalDist(mean, sd)
    a, b = law.cdf(lo), law.cdf(hi)
    # keep p strictly inside (0, 1), where inv_cdf is defined; the clamp below then keeps the
    # result inside [lo, hi] whatever the rounding
    p = min(max(a + u * (b - a), 1e-300), 1.0 - 2.0**-53)
    return min(max(law.inv_cdf(p), lo), hi)


def _omit_unset(data: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """``data`` without ``field`` when its ``value`` is empty (0, []): the serialised form (and
    any hash of it) of a model from before the field existed."""
    if not value:
        data.pop(field, None)
    return data


class GenerationShock(BaseModel):
    """A generation release as a random event: its date and log size are drawn per seed.

    * **date**: ``centre + D`` days, ``D`` a whole number of days: a Normal(0,
      ``date_sd_days``) truncated to ``[-date_max_days - 1/2, date_max_days + 1/2]`` and
      rounded to the nearest day (so each day gets the normal mass within half a day of it),
      and further truncated to the source's anchor range ``(first anchor, last anchor]`` (a
      shock, like a jump, is absorbed by the anchor segment containing it).
      ``date_sd_days = 0``: always ``centre``.
    * **log size**: Normal(``log_size``, ``log_size_sd``) truncated to
      ``[log_size_min, log_size_max]`` (``log_size_sd = 0``: always ``log_size``).
    * **ramp**: ``ramp_days = 0`` reprices overnight (a step on the drawn date); ``ramp_days =
      R > 0`` spreads the same log size linearly over the ``R`` days from the drawn date (a
      release shipping in volume reprices its predecessor over weeks), cut at the end of the
      anchor segment so the anchors stay exact. Not drawn: the seed moves when the ramp starts
      and how deep it goes.

    Each shock takes two uniforms, in the order the shocks are listed, from the source's shock
    stream (:func:`shock_stream`); the quantiles are the inverse CDF (``statistics.NormalDist``).
    Once drawn, a shock is a jump like the fixed ones (see :class:`ModelPathSource`).

    Attributes:
        label: what ships, for reports (``"B200 ships"``); not used by the model.
        centre: the date the release date is centred on (a seed's date), inside the source's
            anchors: ``first anchor < centre <= last anchor``.
        date_sd_days: standard deviation of the date before truncation, days (>= 0).
        date_max_days: the date is at most this many days from ``centre``, days (>= 0).
        log_size: centre of the log size (``-0.15``: a 14 % drop).
        log_size_sd: standard deviation of the log size before truncation (>= 0).
        log_size_min: smallest log size drawn (default -5, the jumps' own bound).
        log_size_max: largest log size drawn (default 0: a new generation never raises its
            predecessor's price; set it for a shock that may).
        ramp_days: days over which the drawn size is reached, linearly from the drawn date
            (0: overnight). Left out of the serialised form when 0, so a shock without a ramp
            dumps (and hashes) as it did before the field existed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(default="", max_length=64)
    centre: date
    date_sd_days: float = Field(default=0.0, ge=0.0, le=3_650.0, allow_inf_nan=False)
    date_max_days: StrictInt = Field(default=0, ge=0, le=3_650)
    log_size: LogJump
    log_size_sd: float = Field(default=0.0, ge=0.0, le=5.0, allow_inf_nan=False)
    log_size_min: LogJump = -5.0
    log_size_max: LogJump = 0.0
    ramp_days: StrictInt = Field(default=0, ge=0, le=3_650)

    @model_serializer(mode="wrap")
    def _omit_no_ramp(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _omit_unset(handler(self), "ramp_days", self.ramp_days)

    @model_validator(mode="after")
    def _ordered_bounds(self) -> GenerationShock:
        if not self.log_size_min <= self.log_size <= self.log_size_max:
            raise ValueError(
                f"log_size {self.log_size} must lie in [log_size_min, log_size_max] = "
                f"[{self.log_size_min}, {self.log_size_max}]"
            )
        return self

    def window(self, first: date, last: date) -> tuple[date, date]:
        """The first and last date the shock can fall on, for a source whose anchors run from
        ``first`` to ``last`` (``centre`` within ``date_max_days`` and inside ``(first,
        last]``)."""
        lo = max(-self.date_max_days, (first - self.centre).days + 1)
        hi = min(self.date_max_days, (last - self.centre).days)
        return self.centre + timedelta(days=lo), self.centre + timedelta(days=hi)

    def draw(self, u_date: float, u_size: float, first: date, last: date) -> tuple[date, float]:
        """The shock's ``(date, log size)`` for the uniforms ``u_date``, ``u_size`` in
        ``[0, 1)``, inside a source whose anchors run from ``first`` to ``last``."""
        start, end = self.window(first, last)
        lo, hi = (start - self.centre).days, (end - self.centre).days
        x = _truncated_normal(u_date, 0.0, self.date_sd_days, lo - 0.5, hi + 0.5)
        offset = min(max(math.floor(x + 0.5), lo), hi)
        size = _truncated_normal(
            u_size, self.log_size, self.log_size_sd, self.log_size_min, self.log_size_max
        )
        return self.centre + timedelta(days=offset), size


class ModelPathSource(BaseModel):
    """A calibrated path through dated anchors, with optional noise, jumps and shocks.

    The level is ``exp(trend(t) + jumps(t) + noise(t))``:

    * **trend**: log-linear interpolation between consecutive anchors (a constant
      percentage rate of change per segment); **flat** outside the anchors (the first anchor's
      level before it, the last one's after it) — the source does not forecast beyond its data;
      add an anchor to extend a decline.
    * **jumps**: a generation release at date ``J`` with log size ``j`` (``-0.15``: a 14 % drop)
      is a step ``j`` at ``J`` *inside the anchor segment (a, b] containing J*, and the rest of
      that segment's log-linear drift is reduced by the same amount, spread evenly over the
      segment: ``j * (1[t >= J] - (t - a) / (b - a))`` for ``a <= t <= b``, zero elsewhere. The
      segment's start and end levels are unchanged, so the path still passes through every
      anchor exactly; a negative jump makes the path above the straight log line before ``J``
      and below it after. Jump dates must satisfy ``first anchor < J <= last anchor``.
    * **shocks**: generation releases whose date and log size the seed draws
      (:class:`GenerationShock`), from the generator's shock sub-stream (:func:`shock_stream`),
      never from the noise stream. A drawn shock is then a jump exactly as above (the same
      level shift absorbed by its anchor segment, so the anchors stay exact on every seed);
      fixed jumps and drawn shocks on one date add up. ``shock_draws(rng)`` gives the draws.
    * **noise**: ``volatility > 0`` adds a zero-mean deviation in log level: a stationary
      Ornstein-Uhlenbeck process (``dX = -reversion X dt + volatility dW``, per year;
      stationary standard deviation ``volatility / sqrt(2 reversion)``) *conditioned on being
      zero at every anchor date* (an OU bridge). So noise never moves the path off an anchor:
      at an anchor time the level is the anchor, and within ``dt`` of one it deviates by about
      ``volatility * sqrt(dt)``. The anchors are medians of the noisy path (the log is
      unbiased, the level slightly above the trend on average).

    Attributes:
        anchors: ``(date, level)`` pairs, at least two, strictly increasing dates, levels > 0 in
            the index's currency units (observed at UTC midnight of the date).
        volatility: annualised volatility of the log deviation, per sqrt(year); 0 = no noise.
        reversion_per_year: OU mean-reversion rate of the deviation, per year (12: a
            deviation's half-life is about 21 days).
        jumps: ``(date, log jump)`` pairs, strictly increasing dates inside the anchor range.
        shocks: generation releases drawn per seed, each centred inside the anchor range.
            Left out of the serialised form when empty, so a source without shocks dumps (and
            hashes) as it did before the field existed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["model_path"] = "model_path"
    anchors: list[tuple[date, PositiveLevel]] = Field(min_length=2)
    volatility: float = Field(default=0.0, ge=0.0, le=10.0, allow_inf_nan=False)
    reversion_per_year: float = Field(default=12.0, gt=0.0, le=1e6, allow_inf_nan=False)
    jumps: list[tuple[date, LogJump]] = Field(default_factory=list)
    shocks: list[GenerationShock] = Field(default_factory=list, max_length=64)

    @model_serializer(mode="wrap")
    def _omit_no_shocks(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _omit_unset(handler(self), "shocks", self.shocks)

    @model_validator(mode="after")
    def _consistent_dates(self) -> ModelPathSource:
        days = [d for d, _ in self.anchors]
        if any(b <= a for a, b in zip(days, days[1:], strict=False)):
            raise ValueError(f"anchor dates must be strictly increasing, got {days}")
        jump_days = [d for d, _ in self.jumps]
        if any(b <= a for a, b in zip(jump_days, jump_days[1:], strict=False)):
            raise ValueError(f"jump dates must be strictly increasing, got {jump_days}")
        for d in jump_days:
            if not days[0] < d <= days[-1]:
                raise ValueError(
                    f"jump on {d} is outside the anchors ({days[0]}, {days[-1]}]: a jump is "
                    "absorbed by the anchor segment containing it, so it must lie in one"
                )
        for i, shock in enumerate(self.shocks):
            if not days[0] < shock.centre <= days[-1]:
                raise ValueError(
                    f"shocks.{i}: centre {shock.centre} is outside the anchors ({days[0]}, "
                    f"{days[-1]}]: a shock is absorbed by the anchor segment containing it"
                )
        return self

    def shock_draws(self, rng: np.random.Generator | None) -> list[tuple[date, float]]:
        """The ``(date, log size)`` each of ``shocks`` takes, in the order listed, drawn from
        :func:`shock_stream` of ``rng`` (``rng`` itself is not used: its state is unchanged).
        Empty, and ``rng`` not looked at, when there are no shocks."""
        if not self.shocks:
            return []
        first, last = self.anchors[0][0], self.anchors[-1][0]
        # two uniforms per shock, in list order: appending a shock leaves the others' draws
        u = shock_stream(rng).random(2 * len(self.shocks)).reshape(-1, 2)
        return [
            shock.draw(float(ud), float(us), first, last)
            for shock, (ud, us) in zip(self.shocks, u, strict=True)
        ]

    def realised_jumps(self, rng: np.random.Generator | None) -> list[tuple[date, float]]:
        """Every jump of the path for the seed behind ``rng``: the fixed ``jumps`` followed by
        the ``shock_draws`` (no shocks: ``jumps`` itself, ``rng`` not looked at). A ramped
        shock is listed at the date its ramp starts, with its whole size."""
        return [*self.jumps, *self.shock_draws(rng)] if self.shocks else list(self.jumps)

    def realised_steps(self, rng: np.random.Generator | None) -> list[tuple[date, float, int]]:
        """:meth:`realised_jumps` with each one's ramp, days (0 for fixed jumps and overnight
        shocks): ``(start date, log size, ramp days)``."""
        ramps = [0] * len(self.jumps) + [shock.ramp_days for shock in self.shocks]
        return [
            (day, size, ramp)
            for (day, size), ramp in zip(self.realised_jumps(rng), ramps, strict=True)
        ]

    def trend_log_levels(
        self, times_ns: np.ndarray, epoch: date, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Natural log of the noise-free path (trend plus jumps, plus the shocks drawn for the
        seed behind ``rng``: needed only if there are shocks) at ``times_ns``."""
        t = _as_times(times_ns)
        a_ns = np.array([date_to_ns(d, epoch) for d, _ in self.anchors], dtype=np.int64)
        log_a = np.log(np.array([level for _, level in self.anchors], dtype=np.float64))
        origin = int(a_ns[0])
        log_level = np.interp(
            (t - origin).astype(np.float64), (a_ns - origin).astype(np.float64), log_a
        )
        for day, size, ramp_days in self.realised_steps(rng):
            j_ns = date_to_ns(day, epoch)
            k = int(np.searchsorted(a_ns, j_ns, side="left"))  # a[k-1] < J <= a[k]
            lo, hi = int(a_ns[k - 1]), int(a_ns[k])
            seg = (t >= lo) & (t <= hi)
            ts = t[seg]
            ramp_ns = min(ramp_days * DAY_NS, hi - j_ns)  # the ramp ends by the segment's end
            reached = np.clip((ts - j_ns) / ramp_ns, 0.0, 1.0) if ramp_ns > 0 else ts >= j_ns
            log_level[seg] += size * (reached - (ts - lo) / (hi - lo))
        return log_level

    def _bridge(self, t: np.ndarray, epoch: date, rng: np.random.Generator) -> np.ndarray:
        """The OU deviation at ``t`` conditioned on zero at the anchor times.

        The stationary OU is simulated exactly on ``t`` merged with the anchor times
        (first value drawn from the stationary law). For a Gaussian Markov process,
        conditioning on ``X(a_i) = 0`` subtracts ``E[X(t) | X(a)]``, which depends only on the
        neighbouring anchors: with ``r1 = e^{-k(t-a)}``, ``r2 = e^{-k(b-t)}``, ``R = r1 r2``,
        ``E = X(a) r1 (1 - r2^2) / (1 - R^2) + X(b) r2 (1 - r1^2) / (1 - R^2)`` between anchors
        ``a <= t < b``, and ``X(a) e^{-k|t-a|}`` beyond the first or last anchor ``a``.
        """
        kappa, sigma = self.reversion_per_year, self.volatility
        a_ns = np.array([date_to_ns(d, epoch) for d, _ in self.anchors], dtype=np.int64)
        # merge the anchor times not already in t into the (sorted) grid
        at = np.minimum(np.searchsorted(t, a_ns), t.size - 1)
        extra = a_ns[t[at] != a_ns]
        ins = np.searchsorted(t, extra)
        grid = np.insert(t, ins, extra)
        from_t = np.ones(grid.size, dtype=bool)
        from_t[ins + np.arange(extra.size)] = False
        x0 = rng.standard_normal() * sigma / math.sqrt(2.0 * kappa)
        x = _ou_path(np.diff(grid) / YEAR_NS, kappa, sigma, x0, rng)
        xt = x[from_t]
        xa = x[np.searchsorted(grid, a_ns)]
        k = np.searchsorted(a_ns, t, side="right")  # number of anchors at or before t
        expect = np.empty_like(xt)
        before = k == 0
        after = k == a_ns.size
        mid = ~(before | after)
        expect[before] = np.exp(-kappa * ((a_ns[0] - t[before]) / YEAR_NS)) * xa[0]
        expect[after] = np.exp(-kappa * ((t[after] - a_ns[-1]) / YEAR_NS)) * xa[-1]
        km, tm = k[mid], t[mid]
        lo, hi = a_ns[km - 1], a_ns[km]
        d1 = kappa * ((tm - lo) / YEAR_NS)
        d2 = kappa * ((hi - tm) / YEAR_NS)
        den = -np.expm1(-2.0 * kappa * ((hi - lo) / YEAR_NS))
        w1 = np.exp(-d1) * -np.expm1(-2.0 * d2) / den
        w2 = np.exp(-d2) * -np.expm1(-2.0 * d1) / den
        expect[mid] = w1 * xa[km - 1] + w2 * xa[km]
        return xt - expect

    def levels(self, times_ns: np.ndarray, epoch: date, rng: np.random.Generator) -> np.ndarray:
        """Levels (currency units) at ``times_ns``; draws from ``rng`` only if
        ``volatility > 0`` (shocks come from its shock sub-stream, which leaves ``rng`` as it
        is)."""
        t = _as_times(times_ns)
        log_level = self.trend_log_levels(t, epoch, rng)
        if self.volatility > 0 and t.size:
            log_level += self._bridge(t, epoch, rng)
        return np.exp(log_level)


class GbmSource(BaseModel):
    """Geometric Brownian motion, optionally mean-reverting in log price; exact on any grid.

    Time runs from the first requested time ``t0`` (where the level is ``start``); the epoch is
    not used. With ``Y = ln(level)`` and times in years:

    * ``mean_reversion_per_year == 0``: ``d level / level = drift dt + volatility dW``, i.e.
      ``Y(t) = ln(start) + (drift - volatility^2 / 2)(t - t0) + volatility W(t - t0)``, so
      ``E[level(t)] = start * e^{drift (t - t0)}``.
    * ``mean_reversion_per_year = k > 0``: ``Y(t) = ln(long_run_level) + drift (t - t0) + U(t)``
      where ``dU = -k U dt + volatility dW`` and ``U(t0) = ln(start / long_run_level)``: the log
      price reverts towards a log-linear target that starts at ``long_run_level`` and moves at
      ``drift`` per year (0: a fixed long-run level). The stationary median is the target and
      the stationary log variance ``volatility^2 / (2k)``; the mean level grows at ``drift``,
      as in the GBM case.

    Each step uses the exact transition over its own ``dt``, so the law of the level at any
    time does not depend on the grid.

    Attributes:
        start: level at the first requested time, currency units, > 0.
        drift_per_year: growth rate of the expected level, per year (``-0.5``: roughly -39 % a
            year in expectation).
        volatility: annualised volatility of the log price, per sqrt(year).
        mean_reversion_per_year: reversion rate of the log price towards the target, per year.
        long_run_level: the target level at the first requested time, currency units; required
            if and only if ``mean_reversion_per_year > 0``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["gbm"] = "gbm"
    start: PositiveLevel
    drift_per_year: float = Field(ge=-100.0, le=100.0, allow_inf_nan=False)
    volatility: float = Field(ge=0.0, le=10.0, allow_inf_nan=False)
    mean_reversion_per_year: float = Field(default=0.0, ge=0.0, le=1e6, allow_inf_nan=False)
    long_run_level: PositiveLevel | None = None

    @model_validator(mode="after")
    def _reversion_needs_level(self) -> GbmSource:
        if self.mean_reversion_per_year > 0 and self.long_run_level is None:
            raise ValueError("mean_reversion_per_year > 0 needs a long_run_level")
        if self.mean_reversion_per_year == 0 and self.long_run_level is not None:
            raise ValueError("long_run_level is only meaningful with mean_reversion_per_year > 0")
        return self

    def levels(self, times_ns: np.ndarray, epoch: date, rng: np.random.Generator) -> np.ndarray:
        """Levels (currency units) at ``times_ns``; draws ``len(times_ns) - 1`` standard normals
        from ``rng`` when ``volatility > 0``."""
        del epoch  # the path starts at the first requested time, whatever the calendar
        t = _as_times(times_ns)
        if t.size == 0:
            return np.empty(0)
        dt = np.diff(t) / YEAR_NS
        sigma, kappa = self.volatility, self.mean_reversion_per_year
        if kappa == 0:
            steps = (self.drift_per_year - 0.5 * sigma * sigma) * dt
            if sigma > 0:
                steps += sigma * np.sqrt(dt) * rng.standard_normal(dt.size)
            y = np.empty(t.size)
            y[0] = math.log(self.start)
            np.cumsum(steps, out=y[1:])
            y[1:] += y[0]
            return np.exp(y)
        assert self.long_run_level is not None
        u0 = math.log(self.start / self.long_run_level)
        if sigma > 0:
            u = _ou_path(dt, kappa, sigma, u0, rng)
        else:
            u = u0 * np.exp(-kappa * ((t - t[0]) / YEAR_NS))
        years = (t - t[0]) / YEAR_NS
        return np.exp(math.log(self.long_run_level) + self.drift_per_year * years + u)


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CSV_HEADER = ("date", "model", "price")


def read_price_csv(path: str | Path, model: str) -> tuple[list[date], np.ndarray]:
    """Observations of ``model`` in a ``date,model,price`` CSV, sorted by date.

    The header must be exactly ``date,model,price``; each row an ISO date (``YYYY-MM-DD``), a
    non-empty model name and a finite price > 0 (currency units); blank lines are skipped.
    Every row is checked, whatever its model, and a model may not have two rows for one date.

    Returns:
        ``(dates, prices)``: the model's observation dates, increasing, and float64 prices.

    Raises:
        IndexDataError: the file is missing or unreadable, or malformed (the message names the
            file and the line number), or has no row for ``model``.
    """
    p = Path(path)
    if not p.is_file():
        raise IndexDataError(f"{path}: no such file")
    rows: dict[date, tuple[float, int]] = {}
    line = 1
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if header is None:
                raise IndexDataError(f"{path}:1: empty file, expected header 'date,model,price'")
            if tuple(h.strip() for h in header) != CSV_HEADER:
                raise IndexDataError(
                    f"{path}:1: header must be 'date,model,price', got {','.join(header)!r}"
                )
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != 3:
                    raise IndexDataError(
                        f"{path}:{line}: expected 3 fields (date,model,price), got {len(row)}"
                    )
                day_s, name, price_s = (cell.strip() for cell in row)
                try:
                    if not _ISO_DATE.match(day_s):
                        raise ValueError
                    day = date.fromisoformat(day_s)
                except ValueError:
                    raise IndexDataError(
                        f"{path}:{line}: bad date {day_s!r} (expected YYYY-MM-DD)"
                    ) from None
                if not name:
                    raise IndexDataError(f"{path}:{line}: empty model name")
                try:
                    price = float(price_s)
                except ValueError:
                    raise IndexDataError(f"{path}:{line}: bad price {price_s!r}") from None
                if not math.isfinite(price) or price <= 0:
                    raise IndexDataError(
                        f"{path}:{line}: price must be a finite number > 0, got {price_s!r}"
                    )
                if name == model:
                    if day in rows:
                        raise IndexDataError(
                            f"{path}:{line}: second row for {model} on {day} "
                            f"(first on line {rows[day][1]})"
                        )
                    rows[day] = (price, line)
    except csv.Error as exc:
        raise IndexDataError(f"{path}:{line + 1}: malformed CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise IndexDataError(f"{path}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise IndexDataError(f"{path}: cannot read: {exc}") from None
    if not rows:
        raise IndexDataError(f"{path}: no rows for model {model!r}")
    days = sorted(rows)
    return days, np.array([rows[d][0] for d in days], dtype=np.float64)


class CsvSource(BaseModel):
    """Observed prices from a CSV file, as a step function.

    The file (header ``date,model,price``; see :func:`read_price_csv`) is read and validated
    once, when the source is constructed; later changes to the file are not seen. A missing or
    malformed file, or one without rows for ``model``, fails construction with pydantic's
    ``ValidationError`` carrying the :class:`IndexDataError` message (``path:line: reason``; the
    exception itself is ``errors()[0]["ctx"]["error"]``). An
    observation dated ``d`` takes effect at UTC midnight of ``d``; the level at time ``t`` is
    the last observation at or before ``t``. Asking for a time before the first observation
    raises :class:`IndexDataError` naming that date. The ``rng`` is not used.

    Attributes:
        path: the CSV file (relative paths are relative to the working directory).
        model: the GPU model whose rows are used (the ``model`` column, e.g. ``"H100"``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["csv"] = "csv"
    path: str = Field(min_length=1)
    model: str = Field(min_length=1)

    # the file's contents as read at construction (tuples: comparable and immutable, so two
    # sources compare equal when their fields and data are equal)
    _days: tuple[date, ...] = PrivateAttr(default=())
    _prices: tuple[float, ...] = PrivateAttr(default=())

    def model_post_init(self, context: object, /) -> None:
        days, prices = read_price_csv(self.path, self.model)
        self._days, self._prices = tuple(days), tuple(prices.tolist())

    @property
    def observations(self) -> tuple[list[date], np.ndarray]:
        """``(dates, prices)`` as read from the file, sorted by date."""
        return list(self._days), np.array(self._prices, dtype=np.float64)

    def levels(self, times_ns: np.ndarray, epoch: date, rng: np.random.Generator) -> np.ndarray:
        """The last observed price at or before each of ``times_ns`` (currency units)."""
        del rng
        t = _as_times(times_ns)
        obs_ns = np.array([date_to_ns(d, epoch) for d in self._days], dtype=np.int64)
        pos = np.searchsorted(obs_ns, t, side="right") - 1
        if t.size and pos[0] < 0:
            raise IndexDataError(
                f"{self.path}: time {int(t[0])} ns ({ns_to_date(int(t[0]), epoch)}) is before "
                f"the first {self.model} observation, on {self._days[0]}"
            )
        return np.array(self._prices, dtype=np.float64)[pos]


Source = Annotated[ModelPathSource | GbmSource | CsvSource, Field(discriminator="type")]


# --------------------------------------------------------------------------------------------
# the index spec, the schedule and the rounding boundary


def _parse_tick(tick_size: str) -> Decimal:
    try:
        tick = Decimal(tick_size)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"tick_size {tick_size!r} is not a decimal number") from None
    if not tick.is_finite() or tick <= 0:
        raise ValueError(f"tick_size {tick_size!r} must be a positive decimal")
    num, den = tick.as_integer_ratio()
    if num > 10**15 or den > 10**15:
        raise ValueError(f"tick_size {tick_size!r} has too many digits (at most 15)")
    return tick


class IndexSpec(BaseModel):
    """A published index.

    Attributes:
        name: the index symbol, e.g. ``"H100-RENTAL"`` (also salts the index's random stream).
        kind: ``"rental"`` ($/GPU-hour) or ``"resale"`` ($/GPU).
        gpu: the GPU model, e.g. ``"H100"``.
        tick_size: the index is published as an integer number of these, currency units, a
            decimal string: ``"0.001"`` ($0.001/GPU-hour) for rental, ``"1"`` ($1) for resale.
        interval_ns: publication interval, ns (> 0).
        source: where the values come from (discriminated on ``type``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: Literal["rental", "resale"]
    gpu: str = Field(min_length=1, max_length=32)
    tick_size: str = "0.001"
    interval_ns: StrictInt = Field(gt=0)
    source: Source

    @field_validator("tick_size")
    @classmethod
    def _tick(cls, value: str) -> str:
        _parse_tick(value)
        return value


def publish_schedule(spec: IndexSpec, start_ns: int, end_ns: int) -> np.ndarray:
    """Publication times ``start_ns + k * spec.interval_ns <= end_ns`` (k = 0, 1, ...), int64
    ns; empty if ``end_ns < start_ns``."""
    start, end, step = int(start_ns), int(end_ns), spec.interval_ns
    if end < start:
        return np.empty(0, dtype=np.int64)
    count = (end - start) // step + 1
    return start + step * np.arange(count, dtype=np.int64)


def to_ticks(levels: np.ndarray, tick_size: str) -> np.ndarray:
    """THE rounding boundary: float levels (currency units) to int64 ticks of ``tick_size``.

    ``ticks = round_half_even(level / tick)``, computed in float64 as ``level * q / p`` where
    ``tick = p / q`` exactly (``"0.001"``: ``level * 1000``, one correctly rounded product;
    ``"1"``: ``level`` itself), then ``numpy.rint`` (ties to even: 2.5 -> 2, 3.5 -> 4). This is
    the only place an index value is rounded.

    Raises:
        ValueError: a level is NaN, infinite or <= 0, or rounds to 0 ticks (a zero index is a
            broken feed, not a price), or exceeds ``MAX_TICKS``; or ``tick_size`` is not a
            positive decimal.
    """
    num, den = _parse_tick(tick_size).as_integer_ratio()
    x = np.asarray(levels, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(f"non-finite index level {x.ravel()[i]} at position {i}")
    bad = x <= 0
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(f"index level {x.ravel()[i]} <= 0 at position {i}")
    if num == 1:
        q = x * float(den)
    elif den == 1:
        q = x / float(num)
    else:
        q = x * float(den) / float(num)
    ticks = np.rint(q)
    bad = (ticks < 1) | (ticks > MAX_TICKS)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"index level {x.ravel()[i]} at position {i} is {ticks.ravel()[i]:.0f} ticks of "
            f"{tick_size}: outside 1..{MAX_TICKS} (a zero index is a broken feed)"
        )
    return ticks.astype(np.int64)


def stable_int_from_name(name: str) -> int:
    """A process-independent 64-bit integer from ``name``: the first 8 bytes (big-endian) of
    its UTF-8 SHA-256. (Python's ``hash`` is salted per process, so it cannot seed a replay.)"""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


class RentalGlut:
    """The credit economy's rental-price factor by month, the input a rental index takes.

    Args:
        times_ns: the economy's monthly step times (int64 ns since the session's epoch,
            increasing: item ``p`` is period ``p``, midnight of its month's first day).
        prices: the economy's open-market rental price after the glut for each of those months
            (``EconomyMonth``'s ``rental_price``, int ticks of $0.001 per GPU-hour, > 0).

    :meth:`factors` at ``t``: ``prices[p] / prices[0]`` for the month ``p`` holding ``t`` (the
    last step at or before ``t``), 1 before the first step. A ratio of the economy's own
    prices, so the index keeps its own level and path and takes only the glut's relative fall
    (and the economy's input path's moves, if it has one).
    """

    __slots__ = ("prices", "times_ns")

    def __init__(self, times_ns: Any, prices: Any) -> None:
        t = np.asarray(times_ns, dtype=np.int64)
        p = np.asarray(prices, dtype=np.int64)
        if t.ndim != 1 or t.shape != p.shape or len(t) == 0:
            raise ValueError("a rental glut needs as many prices as months, at least one")
        if (np.diff(t) <= 0).any():
            raise ValueError("the glut's month times must increase")
        if (p <= 0).any():
            raise ValueError("the glut's rental prices must be positive ticks")
        self.times_ns = t
        self.prices = p

    def factors(self, times_ns: np.ndarray) -> np.ndarray:
        """The factor (float64) at each of ``times_ns`` (ns since the epoch)."""
        t = np.asarray(times_ns, dtype=np.int64)
        month = np.searchsorted(self.times_ns, t, side="right") - 1
        ratio = self.prices.astype(np.float64) / float(self.prices[0])
        return np.where(month >= 0, ratio[np.clip(month, 0, None)], 1.0)


def index_prints(
    spec: IndexSpec,
    epoch: date,
    start_ns: int,
    end_ns: int,
    seed: int,
    glut: RentalGlut | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The index's prints from ``start_ns`` to ``end_ns`` (inclusive, ns since ``epoch``).

    Times are :func:`publish_schedule`; levels come from ``spec.source`` with the generator
    ``np.random.default_rng([seed, stable_int_from_name(spec.name)])`` (so two indices of one
    session get independent streams, and a print depends only on spec, epoch, times and seed);
    values are :func:`to_ticks` of the levels. ``glut``: the credit economy's rental-price
    factor (:class:`RentalGlut`); a **rental** index's levels are multiplied by it before the
    rounding (a resale index ignores it; None, the default, changes nothing).

    Returns:
        ``(times_ns, ticks)``, both int64 arrays of equal length.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    times = publish_schedule(spec, start_ns, end_ns)
    levels = spec.source.levels(times, epoch, index_generator(spec, seed))
    if glut is not None and spec.kind == "rental":
        levels = levels * glut.factors(times)
    return times, to_ticks(levels, spec.tick_size)


def index_generator(spec: IndexSpec, seed: int) -> np.random.Generator:
    """The generator :func:`index_prints` hands the source for session seed ``seed``:
    ``np.random.default_rng([seed, stable_int_from_name(spec.name)])``."""
    return np.random.default_rng([int(seed), stable_int_from_name(spec.name)])


def index_jumps(spec: IndexSpec, seed: int) -> list[tuple[date, float]]:
    """The generation jumps of ``spec``'s path in a session with seed ``seed``, as
    ``(date, log size)``: the fixed ``jumps`` then the drawn ``shocks`` (in the order listed)
    of a ``model_path`` source, exactly those :func:`index_prints` applies; ``[]`` for other
    sources. For markers on charts and reports."""
    source = spec.source
    if not isinstance(source, ModelPathSource):
        return []
    return source.realised_jumps(index_generator(spec, seed))


# --------------------------------------------------------------------------------------------
# calibrations from the seed figures (../shared/seeds/000_*.txt, "Two Markets, One Asset";
# bracketed numbers are that essay's notes). Dates the essay gives only as a month are taken as
# the 1st; the essay is dated February 2026, so its "today" / "now" is 2026-02-01.

MINUTE_NS = 60 * 10**9
HOUR_NS = 3_600 * 10**9

# Generation releases, used as jump dates (the step a predecessor's price takes when a new
# generation arrives: "each new generation reprices its predecessor overnight").
H200_AWS_LAUNCH = date(2024, 9, 1)  # "H200 ... $10.60/hour at the AWS P5e launch (Sep 2024)" [5]
B200_AWS_LAUNCH = date(2025, 5, 1)  # "B200 ... $14/hour at AWS launch (May 2025)" [5]
RUBIN_ANNOUNCED = date(2026, 1, 6)  # "NVIDIA announces the Vera Rubin platform at CES on
#                                     January 6, 2026" [30] (announced; ships H2 2026)


def _rental(name: str, gpu: str, source: ModelPathSource) -> IndexSpec:
    return IndexSpec(
        name=name,
        kind="rental",
        gpu=gpu,
        tick_size="0.001",
        interval_ns=MINUTE_NS,
        source=source,
    )


CALIBRATIONS: dict[str, IndexSpec] = {
    "H100-RENTAL": _rental(
        "H100-RENTAL",
        "H100",
        ModelPathSource(
            anchors=[
                # "H100 prices collapsed from $8-10/hour (2023 peak)" [5]; "when H100s rented for
                # $8-$10 per hour": the midpoint, $9, on a date we chose for the 2023 peak.
                (date(2023, 8, 1), 9.00),
                # "H100 rental prices fell 80% in 30 months - blowing through the ABS models'
                # 50%-at-three-years assumption roughly 18 months ahead of schedule": 50 % of the
                # peak 18 months after it.
                (date(2025, 2, 1), 4.50),
                # "They now rent for around $2" [5]; "to approximately $2/hour composite" [5];
                # 30 months after the peak ($9 -> $2 is -78 %, "fell 80% in 30 months").
                (date(2026, 2, 1), 2.00),
            ],
            volatility=0.25,
            jumps=[(H200_AWS_LAUNCH, -0.10), (B200_AWS_LAUNCH, -0.15)],
        ),
    ),
    "H200-RENTAL": _rental(
        "H200-RENTAL",
        "H200",
        ModelPathSource(
            anchors=[
                # "from $10.60 at AWS's September 2024 launch" (H200 fell from $10.60/hour at the
                # AWS P5e launch (Sep 2024)) [5]
                (date(2024, 9, 1), 10.60),
                # "to a $3.39 median today"; "to a median of $3.39 in 17 months" [5]; -68 %
                (date(2026, 2, 1), 3.39),
            ],
            volatility=0.25,
            jumps=[(B200_AWS_LAUNCH, -0.10)],
        ),
    ),
    "B200-RENTAL": _rental(
        "B200-RENTAL",
        "B200",
        ModelPathSource(
            anchors=[
                # "from $14 per hour at AWS's May 2025 launch" [5]
                (date(2025, 5, 1), 14.00),
                # "has fallen 73% in just 9 months"; "to under $4/hour in nine months" [5]:
                # 14 x 0.27 = $3.78 (specialist providers "below $3 per hour" are the low end).
                (date(2026, 2, 1), 3.78),
            ],
            volatility=0.30,
            jumps=[(RUBIN_ANNOUNCED, -0.05)],
        ),
    ),
    "A100-RENTAL": _rental(
        "A100-RENTAL",
        "A100",
        ModelPathSource(
            anchors=[
                # The seeds give no A100 start price. Our choice: the AWS p4d.24xlarge on-demand
                # price at its November 2020 launch, $32.77/hour for 8 A100s = $4.10/GPU-hour.
                (date(2020, 11, 1), 4.10),
                # "an 89% decline over five years, accelerating after its successor shipped": a
                # SHAPE anchor, not a seed figure - a slow -20 % until the H100 shipped (Q4 2022,
                # our date), the rest of the decline after it.
                (date(2022, 10, 1), 3.28),
                # "The A100 shows the longer arc: an 89% decline over five years": 4.10 x 0.11.
                (date(2025, 11, 1), 0.45),
            ],
            volatility=0.20,
            jumps=[(H200_AWS_LAUNCH, -0.05), (B200_AWS_LAUNCH, -0.05)],
        ),
    ),
    "H100-RESALE": IndexSpec(
        name="H100-RESALE",
        kind="resale",
        gpu="H100",
        tick_size="1",
        interval_ns=HOUR_NS,
        source=ModelPathSource(
            anchors=[
                # "If an H100 that was worth $30,000 in 2023 ..." (Residual Value Swaps, [8]);
                # dated like the rental peak.
                (date(2023, 8, 1), 30_000.0),
                # "... is worth $8,000 in 2026": dated like the essay's "now".
                (date(2026, 2, 1), 8_000.0),
            ],
            volatility=0.15,
            jumps=[(H200_AWS_LAUNCH, -0.10), (B200_AWS_LAUNCH, -0.15)],
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# seeded calibrations: the same anchors and noise, with each generation release a random event
# (GenerationShock) instead of a fixed-date jump. docs/indices.md tabulates the parameters.

#: Standard deviation of a release date, days. The seeds date launches to the month ("Sep
#: 2024", "May 2025" [5]), and a predecessor reprices "when Blackwell starts shipping in
#: volume" [29], some weeks either side of a launch: three weeks (interquartile range about 4).
RELEASE_DATE_SD_DAYS = 21.0
#: A release date is at most this far from the seed's date, days: two months either side (a
#: launch the seeds place in a month does not move by a quarter).
RELEASE_DATE_MAX_DAYS = 61
#: Standard deviation of a release's log size, as a fraction of its centre's magnitude.
RELEASE_SIZE_SD_RATIO = 0.5
#: The deepest overnight repricing a release draws, in log: "an H100 would need to rent at
#: $0.98 per hour - a further 55% cut from current levels - just to match Blackwell's
#: price-per-output" [29]: a release reprices its predecessor at most to price parity, -55 %.
PARITY_LOG_FLOOR = math.log(0.45)


def _release(label: str, centre: date, log_size: float) -> GenerationShock:
    """A generation release centred on a seed's date and on the calibration's jump size."""
    return GenerationShock(
        label=label,
        centre=centre,
        date_sd_days=RELEASE_DATE_SD_DAYS,
        date_max_days=RELEASE_DATE_MAX_DAYS,
        log_size=log_size,
        log_size_sd=RELEASE_SIZE_SD_RATIO * abs(log_size),
        log_size_min=PARITY_LOG_FLOOR,
        log_size_max=0.0,
    )


def _seeded(spec: IndexSpec, shocks: list[GenerationShock]) -> IndexSpec:
    """``spec`` with its fixed jumps replaced by ``shocks`` (same name, so the same noise)."""
    source = ModelPathSource.model_validate(
        spec.source.model_dump() | {"jumps": [], "shocks": shocks}
    )
    return spec.model_copy(update={"source": source})


_H200_SHIPS = "H200 ships"
_B200_SHIPS = "B200 ships"
_RUBIN_ANNOUNCED = "Rubin announced"

#: The calibrations of :data:`CALIBRATIONS` (same names, anchors, noise and the same jump sizes
#: as centres) with every generation release a :class:`GenerationShock`: its date spreads over
#: weeks around the seed's date and its size around the calibration's, per seed. A scenario
#: uses them with ``seeded = true`` on a ``calibration`` index (``clients/scenario.py``).
SEEDED_CALIBRATIONS: dict[str, IndexSpec] = {
    "H100-RENTAL": _seeded(
        CALIBRATIONS["H100-RENTAL"],
        [
            _release(_H200_SHIPS, H200_AWS_LAUNCH, -0.10),
            _release(_B200_SHIPS, B200_AWS_LAUNCH, -0.15),
        ],
    ),
    "H200-RENTAL": _seeded(
        CALIBRATIONS["H200-RENTAL"], [_release(_B200_SHIPS, B200_AWS_LAUNCH, -0.10)]
    ),
    "B200-RENTAL": _seeded(
        # truncated at the last anchor (2026-02-01), 26 days after the centre
        CALIBRATIONS["B200-RENTAL"],
        [_release(_RUBIN_ANNOUNCED, RUBIN_ANNOUNCED, -0.05)],
    ),
    "A100-RENTAL": _seeded(
        CALIBRATIONS["A100-RENTAL"],
        [
            _release(_H200_SHIPS, H200_AWS_LAUNCH, -0.05),
            _release(_B200_SHIPS, B200_AWS_LAUNCH, -0.05),
        ],
    ),
    "H100-RESALE": _seeded(
        CALIBRATIONS["H100-RESALE"],
        [
            _release(_H200_SHIPS, H200_AWS_LAUNCH, -0.10),
            _release(_B200_SHIPS, B200_AWS_LAUNCH, -0.15),
        ],
    ),
}
