"""Credit default swaps: a series spec and the reduced-form (hazard rate) pricing model.

A CDS series is protection on one reference entity (a simulated borrower: a neocloud, a lab)
from an effective date to an IMM maturity. The protection **buyer** (a long position) pays a
running **coupon** on the notional every quarter (IMM dates, 20 Mar/Jun/Sep/Dec) while the entity
survives, plus the coupon accrued since the last premium date if it defaults; the **seller**
pays ``(1 - R)`` of the notional on default. A long position gains when spreads widen.
The model and every formula are in ``docs/credit.md``; the listing on the exchange (premiums,
marks, margin, the credit event) is ``exchange.risk.cds_market``. On a flat hazard the legs also
have
a closed form (``flat_legs``, ``flat_par_spread``, ``flat_upfront``, ``flat_calibrate``): the
listing's fast path, held by the tests to the general piecewise functions, its reference
(docs/credit.md, "Speed").

Units
-----
- Spreads, coupons and hazard rates inside the model: fractions per year (``0.064`` = 640 bps,
  ``0.107`` = 10.7 % a year). On the spec: ``coupon_bps`` (int basis points) and marks in ticks
  of ``tick_bps`` basis points.
- Recovery: ``recovery_ppm`` on the spec (parts per million of notional); a fraction in the model.
- Times: years from the valuation date, ACT/365F (``days / 365``). Premium accruals: ACT/360
  (``days / 360``), the CDS market's convention.
- ``rate``: flat risk-free rate, continuously compounded per year (``D(t) = exp(-rate t)``).
- Model values (``protection_leg``, ``risky_annuity``, ``upfront``, ``cs01``...): fractions of
  notional, present value at the valuation date, floats.
- ``notional`` on the spec and position values: integer minor units (cents).

Floats and integers
-------------------
Floats exist only inside the model. They cross to integers at one documented boundary, two
functions that each round **once**, half to even, from the float's exact binary value:
``spread_to_ticks`` (a spread -> the mark in ticks) and ``value_to_minor`` (a value as a fraction
of notional x an integer notional -> minor units). ``cds_mark`` and ``position_value`` call them
once each, on the final quantity (a position is rounded as a whole, never contract by contract).
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from exchange.products.instruments import MAX_FEE_BPS, MIN_FEE_BPS, MINOR_PER_UNIT, PositiveDecimal
from exchange.products.pricing import finite_real

__all__ = [
    "BPS",
    "CdsSpec",
    "HazardCurve",
    "Period",
    "bootstrap_hazard",
    "cds_mark",
    "cs01",
    "default_leg_pv",
    "default_probability",
    "flat_calibrate",
    "flat_hazard_from_spread",
    "flat_legs",
    "flat_par_spread",
    "flat_par_spread_supremum",
    "flat_upfront",
    "is_imm_date",
    "par_spread",
    "position_value",
    "position_value_at_spread",
    "protection_leg",
    "risky_annuity",
    "spread_to_ticks",
    "triangle_hazard",
    "upfront",
    "value_to_minor",
]

#: One basis point as a fraction.
BPS = 1e-4
#: Parts per million in one.
PPM = 1_000_000
#: IMM months: premium dates fall on the 20th of these months.
IMM_MONTHS = (3, 6, 9, 12)
IMM_DAY = 20

#: A premium period as the model sees it: (start, end) in years from the valuation date
#: (ACT/365F; the start is negative for the period running at the valuation date) and the
#: period's whole accrual fraction (ACT/360 of its days).
Period = tuple[float, float, float]


# --------------------------------------------------------------------------------------------
# input checks


_real = finite_real  # the pricing models' one input check


def _recovery(recovery: float) -> float:
    recovery = _real("recovery", recovery)
    if not 0.0 <= recovery < 1.0:
        raise ValueError(f"recovery must be in [0, 1), got {recovery!r}")
    return recovery


def _periods(periods: list[Period]) -> list[Period]:
    """The periods as floats, checked: each ends after it starts and after the valuation date,
    with a positive accrual, in increasing order."""
    out: list[Period] = []
    last_end = -math.inf
    for start, end, accrual in periods:
        start, end, accrual = _real("start", start), _real("end", end), _real("accrual", accrual)
        if not (start < end and end > 0.0 and accrual > 0.0 and start >= last_end):
            raise ValueError(f"bad premium period {(start, end, accrual)!r}")
        out.append((start, end, accrual))
        last_end = end
    if not out:
        raise ValueError("a CDS needs at least one premium period after the valuation date")
    return out


# --------------------------------------------------------------------------------------------
# the hazard curve


@dataclass(frozen=True)
class HazardCurve:
    """A piecewise-constant hazard rate ``h(t)`` (default intensity, per year).

    ``rates[i]`` applies on ``(times[i-1], times[i]]`` (with ``times[-1] = 0``); the last rate
    extends beyond ``times[-1]`` (flat extrapolation). Survival to ``t`` years is
    ``Q(t) = exp(-H(t))`` with ``H(t) = int_0^t h(u) du``.

    Attributes:
        times: right ends of the pieces, years from the valuation date, strictly increasing, > 0.
        rates: hazard rate of each piece, per year, >= 0 and finite.
    """

    times: tuple[float, ...]
    rates: tuple[float, ...]

    def __post_init__(self) -> None:
        times = tuple(_real("time", t) for t in self.times)
        rates = tuple(_real("hazard rate", h) for h in self.rates)
        if not times or len(times) != len(rates):
            raise ValueError("a hazard curve needs as many rates as times, at least one")
        if any(h < 0.0 for h in rates):
            raise ValueError(f"hazard rates must be >= 0, got {rates!r}")
        if times[0] <= 0.0 or any(b <= a for a, b in zip(times, times[1:], strict=False)):
            raise ValueError(f"hazard curve times must be > 0 and increasing, got {times!r}")
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "rates", rates)

    @classmethod
    def flat(cls, hazard: float) -> HazardCurve:
        """A constant hazard rate ``hazard`` per year at every horizon."""
        return cls(times=(1.0,), rates=(hazard,))

    def pieces(self, a: float, b: float) -> list[tuple[float, float, float]]:
        """``[a, b]`` (years, ``0 <= a <= b``) cut at the curve's knots: ``(t0, t1, h)`` triples
        on which the hazard is constant, in order."""
        out: list[tuple[float, float, float]] = []
        t0 = a
        for knot, h in zip(self.times, self.rates, strict=True):
            if knot <= t0:
                continue
            t1 = min(knot, b)
            if t1 > t0:
                out.append((t0, t1, h))
            t0 = t1
            if t0 >= b:
                return out
        if b > t0:
            out.append((t0, b, self.rates[-1]))
        return out

    def cumulative(self, t: float) -> float:
        """``H(t) = int_0^t h(u) du`` (dimensionless); 0 for ``t <= 0``."""
        t = _real("t", t)
        if t <= 0.0:
            return 0.0
        return math.fsum((t1 - t0) * h for t0, t1, h in self.pieces(0.0, t))

    def survival(self, t: float) -> float:
        """``Q(t) = exp(-H(t))``: probability of no default by ``t`` years (1 for ``t <= 0``)."""
        return math.exp(-self.cumulative(t))


def default_probability(curve: HazardCurve, t: float) -> float:
    """``1 - Q(t)``: the probability of default within ``t`` years, computed as ``-expm1(-H)``
    so that small probabilities keep their digits."""
    return -math.expm1(-curve.cumulative(t))


def triangle_hazard(spread: float, recovery: float) -> float:
    """The **credit triangle** ``h ~= s / (1 - R)`` (per year), an approximation.

    Exact when premiums are paid continuously and the hazard is flat (then the premium leg's
    rate ``s Q(t) D(t)`` and the protection leg's rate ``(1 - R) h Q(t) D(t)`` balance for every
    ``t``); with quarterly premiums and half-period accrual on default it is within a few basis
    points of the bootstrapped flat hazard (``docs/credit.md``).
    """
    return _real("spread", spread) / (1.0 - _recovery(recovery))


# --------------------------------------------------------------------------------------------
# the legs


def _phi(x: float) -> float:
    """``(1 - exp(-x)) / x`` with its limit 1 at ``x = 0``, accurate near 0."""
    if abs(x) < 1e-12:
        return 1.0 - 0.5 * x
    return -math.expm1(-x) / x


def default_leg_pv(curve: HazardCurve, rate: float, a: float, b: float) -> float:
    """``int_a^b D(t) (-dQ(t)) = int_a^b exp(-r t) h(t) Q(t) dt``: the present value of one unit
    paid at the moment of default, if default falls in ``[a, b]`` (years, ``0 <= a <= b``).

    Exact for piecewise-constant ``h`` and flat ``r``: on a piece ``[t0, t1]`` with hazard ``h``
    it is ``h Q(t0) D(t0) dt phi((h + r) dt)``, ``phi(x) = (1 - e^-x) / x``.
    """
    rate, a, b = _real("rate", rate), _real("a", a), _real("b", b)
    if not 0.0 <= a <= b:
        raise ValueError(f"need 0 <= a <= b, got {a!r}, {b!r}")
    total = []
    cumulative = curve.cumulative(a)
    for t0, t1, h in curve.pieces(a, b):
        dt = t1 - t0
        if h > 0.0:
            total.append(h * math.exp(-cumulative - rate * t0) * dt * _phi((h + rate) * dt))
        cumulative += h * dt
    return math.fsum(total)


def protection_leg(curve: HazardCurve, rate: float, recovery: float, maturity: float) -> float:
    """Present value of the protection leg per unit notional: ``(1 - R) int_0^T D(t) (-dQ(t))``.

    ``maturity`` in years from the valuation date (``<= 0``: expired, 0). The loss is paid at the
    moment of default. In ``[0, 1 - R]`` for ``rate >= 0``.
    """
    recovery = _recovery(recovery)
    maturity = _real("maturity", maturity)
    if maturity <= 0.0:
        return 0.0
    return (1.0 - recovery) * default_leg_pv(curve, rate, 0.0, maturity)


def risky_annuity(curve: HazardCurve, rate: float, periods: list[Period]) -> float:
    """The risky annuity (RPV01): present value of paying 1 a year of running spread, per unit
    notional, in years.

    ``sum_i alpha_i D(e_i) Q(e_i)`` (the coupon paid at each period end if the entity survives)
    ``+ sum_i alpha_i u_i int_{max(s_i,0)}^{e_i} D dPD`` (the accrued coupon paid on default).
    ``u_i`` is the share of the period accrued at the midpoint of its remaining part: ``1/2`` for
    a period wholly in the future, the ISDA half-accrual approximation (the accrued coupon at the
    default time, linear in time, replaced by its value at the middle of the period).
    Periods that started before the valuation date count their whole accrual (the buyer owes
    the coupon accrued so far), so this is the *dirty* annuity.

    Args:
        curve: hazard curve.
        rate: flat continuously compounded rate per year.
        periods: ``(start, end, accrual)`` per premium period (see :data:`Period`).
    """
    rate = _real("rate", rate)
    terms = []
    for start, end, accrual in _periods(periods):
        terms.append(accrual * math.exp(-rate * end) * curve.survival(end))
        lo = max(start, 0.0)
        share = (0.5 * (lo + end) - start) / (end - start)
        terms.append(accrual * share * default_leg_pv(curve, rate, lo, end))
    return math.fsum(terms)


def par_spread(curve: HazardCurve, rate: float, recovery: float, periods: list[Period]) -> float:
    """The running spread (fraction per year) at which the CDS is worth zero:
    ``protection_leg / risky_annuity``, protection running to the last period's end."""
    periods = _periods(periods)
    annuity = risky_annuity(curve, rate, periods)
    return protection_leg(curve, rate, recovery, periods[-1][1]) / annuity


def upfront(
    curve: HazardCurve, rate: float, recovery: float, periods: list[Period], coupon: float
) -> float:
    """Value to the protection **buyer** of a CDS paying running ``coupon`` (fraction per year),
    per unit notional: ``protection_leg - coupon x risky_annuity`` = ``(par - coupon) x RPV01``.

    This is the (dirty) upfront the buyer pays to enter at a standard coupon: positive when
    the par spread is above the coupon. For a contract whose first period starts at the
    valuation date it is the quoted upfront in points (x 100); otherwise the clean points are
    this plus ``coupon x`` the accrual since the last premium date.
    """
    periods = _periods(periods)
    coupon = _real("coupon", coupon)
    protection = protection_leg(curve, rate, recovery, periods[-1][1])
    return protection - coupon * risky_annuity(curve, rate, periods)


# --------------------------------------------------------------------------------------------
# the flat-hazard fast path
#
# On a flat hazard ``h`` and a flat rate ``r`` every leg above has a closed form per period,
# with ``k = h + r``: survival times discount is ``exp(-k t)`` and the default leg on
# ``[a, b]`` is ``h exp(-k a) (b - a) phi(k (b - a))``, the reference's piece formula taken
# over the whole interval. The general functions cut each interval at the curve's knots and
# rebuild ``H(t)`` piece by piece (about 0.2 ms a par spread); these make one pass over the
# periods (about 10 us). The general code stays the reference: docs/credit.md ("Speed") states
# the bound between the two and the tests check it.


def _flat_schedule(periods: list[Period]) -> tuple[tuple, float, float]:
    """``periods`` checked (:func:`_periods`) and prepared for :func:`_flat_annuity`: ``(rows,
    maturity, elapsed)``, a row ``(lo, end, end - lo, accrual, accrual x share, chained)``
    per period with ``lo = max(start, 0)``, ``share`` the accrual on default of
    :func:`risky_annuity` and ``chained`` whether ``lo`` is the previous period's end (its
    discount factor is then the previous one's); ``maturity`` the last end and ``elapsed``
    the running period's accrued time (years). Kept per schedule: a listed series asks again
    for the same one (a mark, then its margin shocks)."""
    try:
        return _prepared_schedule(tuple(periods))
    except TypeError:  # periods that are not hashable tuples: prepared every time
        return _prepared_schedule.__wrapped__(periods)


@functools.lru_cache(maxsize=1024)
def _prepared_schedule(periods: tuple) -> tuple[tuple, float, float]:
    periods = _periods(periods)
    rows = []
    previous_end = 0.0
    for start, end, accrual in periods:
        lo = 0.0 if start < 0.0 else start
        share = (0.5 * (lo + end) - start) / (end - start)
        rows.append((lo, end, end - lo, accrual, accrual * share, lo == previous_end))
        previous_end = end
    return tuple(rows), periods[-1][1], max(0.0, -periods[0][0])


def _flat_annuity(hazard: float, rate: float, schedule: tuple, slope: bool) -> tuple[float, float]:
    """``(RPV01, dRPV01/dh)`` on the flat hazard ``hazard`` over a :func:`_flat_schedule`
    (the slope per unit of hazard, 0.0 unless asked and ``h + r != 0``). The slope only steers
    Newton's method: it never reaches a price, so it is summed plainly."""
    k = hazard + rate
    terms = []
    paid = on_default = moved = 0.0  # the slope's three sums
    at_previous = 1.0
    exp, expm1 = math.exp, math.expm1
    for lo, end, span, accrual, weight, chained in schedule:
        at_lo = at_previous if chained else exp(-k * lo)
        at_previous = at_end = exp(-k * end)
        x = k * span
        # int_lo^end exp(-k t) dt = exp(-k lo) span phi(k span), _phi inlined
        grown = at_lo * span * (-expm1(-x) / x if abs(x) >= 1e-12 else 1.0 - 0.5 * x)
        terms.append(accrual * at_end)
        terms.append(weight * hazard * grown)
        if slope:
            paid += accrual * end * at_end
            on_default += weight * grown
            moved += weight * (end * at_end - lo * at_lo)
    if not slope or k == 0.0:
        return math.fsum(terms), 0.0
    # d/dh of accrual exp(-k e) and of weight h (exp(-k lo) - exp(-k e)) / k
    return math.fsum(terms), (rate / k) * on_default + (hazard / k) * moved - paid


def _flat_protection(hazard: float, rate: float, recovery: float, maturity: float):
    """``(Prot, dProt/dh)`` on a flat hazard: ``(1 - R) h T phi(k T)``, ``k = h + r`` (the
    slope 0.0 at ``k = 0``)."""
    k = hazard + rate
    grown = maturity * _phi(k * maturity)
    protection = (1.0 - recovery) * hazard * grown
    if k == 0.0:
        return protection, 0.0
    at_maturity = math.exp(-k * maturity)
    return protection, (1.0 - recovery) * (
        (rate / k) * grown + (hazard / k) * maturity * at_maturity
    )


def flat_legs(
    hazard: float, rate: float, recovery: float, periods: list[Period]
) -> tuple[float, float]:
    """``(protection_leg, risky_annuity)`` per unit notional on a **flat** hazard, in closed
    form: the fast path of ``protection_leg(HazardCurve.flat(hazard), ...)`` and
    ``risky_annuity``, with their units and conventions (protection to the last period's end;
    the dirty annuity in years, with the accrued coupon on default).

    Args:
        hazard: flat hazard rate per year, >= 0.
        rate: flat continuously compounded rate per year.
        recovery: recovery fraction in [0, 1).
        periods: ``(start, end, accrual)`` per premium period (see :data:`Period`).
    """
    hazard, rate = _real("hazard rate", hazard), _real("rate", rate)
    if hazard < 0.0:
        raise ValueError(f"hazard rate must be >= 0, got {hazard!r}")
    recovery = _recovery(recovery)
    schedule, maturity, _elapsed = _flat_schedule(periods)
    protection, _ = _flat_protection(hazard, rate, recovery, maturity)
    return protection, _flat_annuity(hazard, rate, schedule, False)[0]


def flat_par_spread(hazard: float, rate: float, recovery: float, periods: list[Period]) -> float:
    """:func:`par_spread` on a flat hazard (fraction per year), by :func:`flat_legs`."""
    protection, annuity = flat_legs(hazard, rate, recovery, periods)
    return protection / annuity


def flat_par_spread_supremum(recovery: float, periods: list[Period]) -> float:
    """The least upper bound of the par spread (fraction per year) over every flat hazard on
    ``periods``: the limit of :func:`flat_par_spread` (and of :func:`par_spread` on a flat
    curve) as the hazard grows without bound. The par spread is increasing in the hazard, so
    every spread below this is reached by one finite hazard and none at or above it is.

    As ``h -> oo`` the entity defaults at once: the protection leg tends to ``1 - R`` and the
    annuity to the accrual on default of the first period alone, ``alpha_1 u_1`` (its share
    ``u_1`` accrued at the middle of its remaining part, :func:`risky_annuity`); every other
    term carries ``exp(-h t)`` for some ``t > 0``. Hence ``(1 - R) / (alpha_1 u_1)``, whatever
    the rate. Short when little of the running period is left and much of it has accrued: one
    day before a quarter's premium date, about ``0.6 / 0.25 = 2.4`` (24,000 bps) at 40 %
    recovery. ``math.inf`` when the first period starts after the valuation date (no premium
    accrues before the default).
    """
    recovery = _recovery(recovery)
    start, end, accrual = _periods(periods)[0]
    if start > 0.0:
        return math.inf
    share = (0.5 * end - start) / (end - start)  # risky_annuity's u_1 with lo = 0
    return (1.0 - recovery) / (accrual * share)


def flat_upfront(
    hazard: float, rate: float, recovery: float, periods: list[Period], coupon: float
) -> float:
    """:func:`upfront` on a flat hazard (fraction of notional, to the protection buyer), by
    :func:`flat_legs`: ``Prot - coupon x RPV01``."""
    coupon = _real("coupon", coupon)
    protection, annuity = flat_legs(hazard, rate, recovery, periods)
    return protection - coupon * annuity


def flat_calibrate(
    spread: float, recovery: float, rate: float, periods: list[Period]
) -> tuple[float, float, float]:
    """The flat hazard (per year) whose par spread over ``periods`` is ``spread`` (fraction
    per year, >= 0), and the legs on it: ``(hazard, protection_leg, risky_annuity)`` (the
    root :func:`flat_hazard_from_spread` finds and :func:`flat_legs` at it).

    Newton's method in ``u = log h`` on ``g(u) = log Prot(h) - log(spread x RPV01(h))``,
    with its analytic slope ``h (Prot'/Prot - RPV01'/RPV01)``: the par spread is nearly
    proportional to the hazard, so ``g`` is nearly linear in ``u`` and the iterates stay
    positive. It starts from the credit triangle corrected for ACT/360, premiums in arrears
    (docs/credit.md) and the dirty annuity's accrual before the valuation date (the buyer pays
    ``T + elapsed`` years of premium for ``T`` years of protection): about three evaluations
    of the closed-form legs where the bisection takes fifty of the general ones. It stops at
    the first iterate whose step is at most 1e-14 (the step is its distance to the root, to
    first order; convergence is quadratic, so the step before was about 1e-7), and returns
    that iterate and the legs evaluated there. Falls back to the bisection
    (:func:`_solve_increasing` on the closed-form par spread) if a leg or the slope is not
    positive, a step exceeds 20 (a factor e^20), or 60 steps do not converge.
    Deterministic: a function of its arguments alone (the same floats in the same order).
    """
    spread = _real("spread", spread)
    recovery = _recovery(recovery)
    rate = _real("rate", rate)
    if spread < 0.0:
        raise ValueError(f"spread must be >= 0, got {spread!r}")
    schedule, maturity, elapsed = _flat_schedule(periods)
    if spread == 0.0:
        return 0.0, 0.0, _flat_annuity(0.0, rate, schedule, False)[0]
    # s ~= h (1 - R) (360 / 365) / (1 - r dt / 2) x T / (T + elapsed), dt a quarter
    hazard = spread / (1.0 - recovery) * (365.0 / 360.0) * (1.0 - rate / 8.0)
    hazard *= (maturity + elapsed) / maturity
    for _ in range(60):
        protection, protection_slope = _flat_protection(hazard, rate, recovery, maturity)
        annuity, annuity_slope = _flat_annuity(hazard, rate, schedule, True)
        if not (protection > 0.0 and annuity > 0.0):
            break
        slope = hazard * (protection_slope / protection - annuity_slope / annuity)
        if not slope > 0.0:
            break
        step = math.log(protection / (spread * annuity)) / slope
        if abs(step) <= 1e-14:
            return hazard, protection, annuity
        if not abs(step) < 20.0:
            break
        hazard *= math.exp(-step)
        if not hazard < 1e6:
            break

    def par(h: float) -> float:
        protection, _ = _flat_protection(h, rate, recovery, maturity)
        return protection / _flat_annuity(h, rate, schedule, False)[0]

    hazard = _solve_increasing(par, spread, 0.0, max(2.0 * triangle_hazard(spread, recovery), 1e-6))
    protection, _ = _flat_protection(hazard, rate, recovery, maturity)
    return hazard, protection, _flat_annuity(hazard, rate, schedule, False)[0]


# --------------------------------------------------------------------------------------------
# calibration


def _solve_increasing(f, target: float, lo: float, hi: float) -> float:
    """The ``x`` in ``[lo, ...)`` with ``f(x) = target`` for an increasing ``f``, by bisection
    (the upper bracket doubles until it covers ``target``); to about 1e-15 relative."""
    while f(hi) < target:
        lo, hi = hi, 2.0 * hi
        if hi > 1e6:
            raise ValueError(f"no hazard rate reproduces the spread {target!r}")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def flat_hazard_from_spread(
    spread: float, recovery: float, rate: float, periods: list[Period]
) -> HazardCurve:
    """The flat hazard curve whose par spread over ``periods`` is ``spread`` (fraction per
    year, >= 0): the standard conversion of a quoted spread (ISDA's upfront converter also
    assumes a flat hazard). Started from the credit triangle, solved by bisection."""
    spread = _real("spread", spread)
    recovery = _recovery(recovery)
    periods = _periods(periods)
    if spread < 0.0:
        raise ValueError(f"spread must be >= 0, got {spread!r}")
    if spread == 0.0:
        return HazardCurve.flat(0.0)
    guess = max(2.0 * triangle_hazard(spread, recovery), 1e-6)
    hazard = _solve_increasing(
        lambda h: par_spread(HazardCurve.flat(h), rate, recovery, periods), spread, 0.0, guess
    )
    return HazardCurve.flat(hazard)


def bootstrap_hazard(
    pillars: list[tuple[list[Period], float]], recovery: float, rate: float
) -> HazardCurve:
    """A piecewise-constant hazard curve repricing a term structure of par spreads.

    ``pillars`` are ``(periods, spread)`` in increasing maturity (each CDS's last period end);
    the hazard on ``(T_{i-1}, T_i]`` is solved so that CDS ``i`` prices at par given the pieces
    before it (the hazard after the last pillar is the last piece's). ``ValueError`` when a
    spread is too low to be reached with a non-negative hazard (an arbitrageable curve).
    """
    times: list[float] = []
    rates: list[float] = []
    for periods, spread in pillars:
        periods = _periods(periods)
        spread = _real("spread", spread)
        maturity = periods[-1][1]
        if times and maturity <= times[-1]:
            raise ValueError("pillars must be in increasing maturity")

        def at(h: float, periods=periods, maturity=maturity) -> float:
            curve = HazardCurve(tuple(times) + (maturity,), tuple(rates) + (h,))
            return par_spread(curve, rate, recovery, periods)

        if at(0.0) > spread:
            raise ValueError(f"spread {spread!r} at {maturity!r} years needs a negative hazard")
        guess = max(2.0 * triangle_hazard(spread, recovery), 1e-6)
        rates.append(_solve_increasing(at, spread, 0.0, guess))
        times.append(maturity)
    if not times:
        raise ValueError("no pillars")
    return HazardCurve(tuple(times), tuple(rates))


def cs01(
    spread: float, recovery: float, rate: float, periods: list[Period], coupon: float
) -> float:
    """Spread DV01: the change of the protection buyer's value (fraction of notional) when the
    par spread rises by one basis point from ``spread`` (flat hazard re-calibrated at
    ``spread + 1bp``). Positive: bought protection gains when spreads widen."""
    low = flat_hazard_from_spread(spread, recovery, rate, periods)
    high = flat_hazard_from_spread(spread + BPS, recovery, rate, periods)
    return upfront(high, rate, recovery, periods, coupon) - upfront(
        low, rate, recovery, periods, coupon
    )


# --------------------------------------------------------------------------------------------
# the float -> int boundary


def _round_half_even(value: Fraction) -> int:
    quotient, remainder = divmod(value.numerator, value.denominator)
    twice = 2 * remainder
    if twice > value.denominator or (twice == value.denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def spread_to_ticks(spread: float, tick_bps: str) -> int:
    """A spread (fraction per year, finite, >= 0) as whole ticks of ``tick_bps`` basis points,
    rounded half to even **once** from the float's exact value (``spread x 10^4 / tick``)."""
    spread = _real("spread", spread)
    if spread < 0.0:
        raise ValueError(f"spread must be >= 0, got {spread!r}")
    tick = Fraction(Decimal(tick_bps))
    if tick <= 0:
        raise ValueError(f"tick_bps must be positive, got {tick_bps!r}")
    return _round_half_even(Fraction(spread) * 10_000 / tick)


def value_to_minor(value: float, notional: int) -> int:
    """``value`` (a fraction of notional, finite, any sign) times ``notional`` (integer minor
    units, may be negative for a short position) in whole minor units, rounded half to even
    **once** from the float's exact value."""
    value = _real("value", value)
    notional = operator.index(notional)
    return _round_half_even(Fraction(value) * notional)


# --------------------------------------------------------------------------------------------
# the spec


def is_imm_date(day: date) -> bool:
    """Whether ``day`` is an IMM date: the 20th of March, June, September or December."""
    return day.day == IMM_DAY and day.month in IMM_MONTHS


def _next_imm(day: date) -> date:
    """The first IMM date strictly after ``day``."""
    for month in IMM_MONTHS:
        candidate = date(day.year, month, IMM_DAY)
        if candidate > day:
            return candidate
    return date(day.year + 1, IMM_MONTHS[0], IMM_DAY)


class CdsSpec(BaseModel):
    """A credit default swap series.

    Attributes:
        name: symbol, e.g. ``"CRWV-CDS-2030-12-C500"``.
        reference_entity: the borrower whose default triggers protection (``"CoreWeave"``).
        notional: notional per contract, minor units (cents).
        coupon_bps: running coupon, basis points per year of notional (100 and 500 are the
            standard coupons; a par-spread contract carries its par spread).
        recovery_ppm: recovery rate assumed by the mark model, parts per million of notional
            (400_000 = 40 %, the market's senior unsecured convention).
        effective: start of protection and of the first premium accrual.
        maturity: end of protection, an IMM date (20 Mar/Jun/Sep/Dec).
        tick_bps: mark and quote tick, basis points (decimal string).

    Listed on the exchange (``exchange.risk.cds_market``, docs/credit.md "Listing CDS on the
    exchange") a series also has:

    Attributes:
        initial_spread_bps: the model's 5-year spread of the reference entity before the
            economy announces one (``EconomyMonth``'s ``cds_spread_bps``), whole bps; None:
            the coupon.
        settlement: ``fixed`` (a credit event settles at ``recovery_ppm``) or ``auction`` (at
            the ``recovery_ppm`` of the ``BorrowerDefaulted`` event: the auction of the
            defaulter's GPUs; the spec's when the event has none).
        margin_shocks_bps: the spread moves of the initial-margin grid, whole bps (the
            shocked spread is floored at 0): the worst loss of a position over them is its IM.
        min_price, max_price: the range of spreads the book accepts, ticks.
        maker_fee_bps, taker_fee_bps: fees in bps of a fill's notional
            (``price x qty x tick_value``: a year of premium at the traded spread).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["cds"] = "cds"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    reference_entity: str = Field(min_length=1, max_length=64)
    notional: int = Field(default=1_000_000 * MINOR_PER_UNIT, gt=0, le=1 << 53)
    coupon_bps: int = Field(ge=0, le=100_000)
    recovery_ppm: int = Field(default=400_000, ge=0, lt=PPM)
    effective: date
    maturity: date
    tick_bps: PositiveDecimal = "1"
    initial_spread_bps: int | None = Field(default=None, ge=0, le=100_000)
    settlement: Literal["fixed", "auction"] = "fixed"
    margin_shocks_bps: tuple[int, ...] = Field(
        default=(-100, 100, 250), min_length=1, max_length=16
    )
    min_price: int = Field(default=1, ge=1)
    max_price: int = Field(default=100_000, ge=1, le=1 << 53)
    maker_fee_bps: int = Field(default=0, ge=MIN_FEE_BPS, le=MAX_FEE_BPS)
    taker_fee_bps: int = Field(default=0, ge=MIN_FEE_BPS, le=MAX_FEE_BPS)

    @model_validator(mode="after")
    def _check(self) -> CdsSpec:
        if self.maturity <= self.effective:
            raise ValueError("maturity must be after the effective date")
        if not is_imm_date(self.maturity):
            raise ValueError(f"maturity {self.maturity} is not an IMM date (20 Mar/Jun/Sep/Dec)")
        if self.min_price > self.max_price:
            raise ValueError("min_price must be at most max_price")
        if any(not -100_000 <= shock <= 100_000 for shock in self.margin_shocks_bps):
            raise ValueError("margin_shocks_bps must each be within -100_000..100_000 bps")
        return self

    def _tick_value(self) -> Decimal:
        return Decimal(self.notional) * Decimal(self.tick_bps) / 10_000

    @property
    def tick_value(self) -> int:
        """Minor units per spread tick per contract per **year** of premium (``notional x
        tick_bps / 10_000``): 10_000 cents (100 USD) for 1 bp on 1m USD. A fill's notional
        is ``price x qty x tick_value``, a year of premium at the traded spread.

        Raises:
            ValueError: not a whole number of minor units (such a series can be priced by the
                model but not listed)."""
        tick = self._tick_value()
        if tick != tick.to_integral_value() or tick < 1:
            raise ValueError(
                f"{self.name}: tick value {tick} minor units (notional x tick_bps / 10_000) "
                "is not a whole number of at least 1"
            )
        return int(tick)

    @property
    def start_spread_bps(self) -> int:
        """The model's spread before the economy announces one, bps (the initial spread,
        else the coupon)."""
        return self.coupon_bps if self.initial_spread_bps is None else self.initial_spread_bps

    @property
    def coupon(self) -> float:
        """The running coupon as a fraction per year (model side)."""
        return self.coupon_bps * BPS

    @property
    def recovery(self) -> float:
        """The recovery rate as a fraction (model side)."""
        return self.recovery_ppm / PPM

    def premium_dates(self) -> list[date]:
        """The premium payment dates: every IMM date after ``effective`` up to ``maturity``
        (the first period is a short stub when ``effective`` is not an IMM date). Unadjusted:
        the simulation has no holiday calendar."""
        dates, day = [], _next_imm(self.effective)
        while day <= self.maturity:
            dates.append(day)
            day = _next_imm(day)
        return dates

    def periods(self, valuation: date) -> list[Period]:
        """The premium periods still to pay at ``valuation`` as the model sees them: ``(start,
        end)`` in years from ``valuation`` (ACT/365F) and the accrual (ACT/360)."""
        if not self.effective <= valuation < self.maturity:
            raise ValueError(f"valuation {valuation} is outside [{self.effective}, maturity)")
        out: list[Period] = []
        start = self.effective
        for end in self.premium_dates():
            if end > valuation:
                out.append(
                    (
                        (start - valuation).days / 365.0,
                        (end - valuation).days / 365.0,
                        (end - start).days / 360.0,
                    )
                )
            start = end
        return out

    def accrued(self, valuation: date) -> float:
        """The coupon accrual since the last premium date, ACT/360 years (clean = dirty -
        coupon x this)."""
        start = self.effective
        for end in self.premium_dates():
            if end > valuation:
                break
            start = end
        return (valuation - start).days / 360.0


# --------------------------------------------------------------------------------------------
# spec-level marks and values (the integer side)


def cds_mark(spec: CdsSpec, curve: HazardCurve, rate: float, valuation: date) -> int:
    """The model mark of a series: its par spread in ticks of ``spec.tick_bps``, rounded once."""
    periods = spec.periods(valuation)
    return spread_to_ticks(par_spread(curve, rate, spec.recovery, periods), spec.tick_bps)


def position_value(
    spec: CdsSpec, contracts: int, curve: HazardCurve, rate: float, valuation: date
) -> int:
    """Mark-to-market of a position, minor units, rounded once for the whole position.

    ``contracts`` > 0 is bought protection (long), < 0 sold. The value is
    ``contracts x notional x upfront(coupon)``: a long gains when the spread widens.
    """
    contracts = operator.index(contracts)
    periods = spec.periods(valuation)
    value = upfront(curve, rate, spec.recovery, periods, spec.coupon)
    return value_to_minor(value, contracts * spec.notional)


def position_value_at_spread(
    spec: CdsSpec, contracts: int, spread_ticks: int, rate: float, valuation: date
) -> int:
    """:func:`position_value` with the curve implied by a quoted par spread (integer ticks of
    ``spec.tick_bps``), through a flat hazard (:func:`flat_hazard_from_spread`)."""
    spread_ticks = operator.index(spread_ticks)
    if spread_ticks < 0:
        raise ValueError(f"spread_ticks must be >= 0, got {spread_ticks}")
    spread = float(Fraction(Decimal(spec.tick_bps)) * spread_ticks / 10_000)
    curve = flat_hazard_from_spread(spread, spec.recovery, rate, spec.periods(valuation))
    return position_value(spec, contracts, curve, rate, valuation)
