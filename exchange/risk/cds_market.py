"""Credit default swaps listed on the exchange: the integer side (issue #21).

``exchange.products.cds`` is the pricing model (floats, no state); this module is what the engine
does
with a listed :class:`~exchange.products.cds.CdsSpec` series, in integers, through the engine's own
ledger (every payment is one event between one account and the ``clearing`` pool, so the
ledger balances after every event). docs/credit.md, "Listing CDS on the exchange", documents
every rule; in short:

- **Trading.** A series trades on its book by **running spread** in ticks of ``tick_bps``
  (price = spread ticks, qty = contracts); a buy is bought protection (long). Like a residual
  value swap's premium basis, each fill adds ``price x qty`` to the buyer's **spread basis**
  and takes it from the seller's (``exchange.risk.variation.move_lots``): bases sum to zero, and a
  contract pays the spread it was traded at.
- **Premiums** (:func:`charge_premium`, on each IMM premium date): an account with spread
  basis ``B`` (ticks x contracts) owes ``B x tick_value x days / 360`` minor units for the
  period's ``days`` (ACT/360; ``tick_value = notional x tick_bps / 10_000``, a year of premium
  per tick per contract). Exact rationals, rounded **once per account and date** by
  :func:`allocate` (floors, then the residual a minor unit each to the largest fractional
  parts, ties by account name), so the amounts sum to exactly the rounded sum of the exact
  ones: zero when the bases do.
- **Marks** (:func:`mark`, at every margin cycle's instant, or weekly without margin): the
  book's mid when the book is tight (the RVS rule, ``exchange.products.pricing.rvs_mark``), else the
  model: the series' par spread on the flat hazard that reprices the reference entity's
  5-year spread (``EconomyMonth``'s ``cds_spread_bps``, kept by the engine; before any, the
  spec's ``start_spread_bps``).
- **Value and variation margin** (:func:`position_value`): a position of ``n`` contracts with
  spread basis ``B`` is worth ``n x notional x Prot(s) - B x tick_value x RPV01(s)`` at mark
  ``s`` (the dirty legs of ``exchange.products.cds`` on the flat hazard of ``s``), rounded once for
  the whole position: ``cds.position_value_at_spread`` when every contract was traded at the
  coupon (``B = n x coupon``). Variation margin pays its change.
- **Initial margin** (:func:`initial_margin`): the worst loss of the position's value over the
  spec's spread shocks (``margin_shocks_bps``), per series, added to the account's other
  margin (``exchange.risk.margin_cycle``).
- **Credit event** (:func:`credit_event`, when the engine announces a ``BorrowerDefaulted`` of
  a series' reference entity): the book is cancelled, the premium accrued since the last
  premium date is paid, each position settles at ``(1 - R) x notional`` per contract (net of
  the variation margin it has received, as an RVS settles at maturity), and the series
  closes (``InstrumentExpired``). A seller that cannot pay is left with negative cash, which
  the next margin cycle calls and, past the cure period, defaults (``exchange.risk.default``).

Units: spreads in ticks of ``tick_bps`` basis points; money in minor units (cents); recovery
in ppm; dates are the session's calendar (``Exchange.epoch``; the valuation date of an instant
is the day it falls in). Floats exist only inside ``exchange.products.cds``'s model; they meet
integers
at :func:`position_value` (one rounding per position) and the model mark
(``cds.spread_to_ticks``).
"""

from __future__ import annotations

import functools
import math
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from exchange.core import events as ev
from exchange.core.clock import MARKET, Simulator
from exchange.products.cds import (
    CdsSpec,
    HazardCurve,
    _next_imm,
    _round_half_even,
    flat_calibrate,
    flat_hazard_from_spread,
    flat_par_spread,
    flat_par_spread_supremum,
    par_spread,
    protection_leg,
    risky_annuity,
    spread_to_ticks,
    triangle_hazard,
)
from exchange.products.pricing import rvs_mark

if TYPE_CHECKING:
    from exchange.core.accounts import Listing
    from exchange.core.venue import Venue

__all__ = [
    "BOOK_MAX_SPREAD_TICKS",
    "BOOK_MIN_DEPTH_LOTS",
    "BOUND_MARGIN",
    "MARK_INTERVAL_NS",
    "RATE",
    "STANDARD_TENOR_YEARS",
    "accrual_days",
    "allocate",
    "charge_premium",
    "credit_event",
    "exposure_rates",
    "initial_margin",
    "mark",
    "model_ticks",
    "note_month",
    "position_value",
    "premium_dues",
    "schedule_cds",
    "spread_bound_ticks",
    "valuation_date",
]

DAY_NS = 86_400 * 10**9
PPM = 1_000_000
#: The model's flat risk-free rate, continuously compounded per year: a stated assumption (a
#: round USD short rate for late 2025; docs/credit.md, "Parameters and their sources").
RATE = 0.04
#: The tenor of the economy's quoted spread: ``cds_spread_bps`` is a 5-year spread.
STANDARD_TENOR_YEARS = 5
#: The book is trusted for the mark as an RVS book is (``exchange.kernel.engine``'s constants): a
#: spread of at most this many ticks, at least this many contracts on each best level.
BOOK_MAX_SPREAD_TICKS = 5
BOOK_MIN_DEPTH_LOTS = 10
#: Marks of a session without margin: weekly (with margin: at every cycle's instant).
MARK_INTERVAL_NS = 7 * DAY_NS


# --------------------------------------------------------------------------------------------
# dates and rounding


def valuation_date(engine: Venue, spec: CdsSpec) -> date:
    """The model's valuation date at the engine's instant: the calendar day ``engine.t`` falls
    in (``Exchange.epoch`` + whole days), never before the series' effective date."""
    if engine.epoch is None:
        raise ValueError("a CDS series needs a session calendar (Exchange.epoch)")
    return max(engine.epoch + timedelta(days=engine.t // DAY_NS), spec.effective)


def _last_premium_date(spec: CdsSpec, day: date) -> date:
    """The last premium date on or before ``day`` (the effective date before the first)."""
    last = spec.effective
    for end in spec.premium_dates():
        if end > day:
            break
        last = end
    return last


def accrual_days(spec: CdsSpec, day: date) -> int:
    """Days of premium accrued at ``day`` since the last premium date before it (on a premium
    date: the whole period that ends there; ACT: calendar days)."""
    last = spec.effective
    for end in spec.premium_dates():
        if end >= day:
            break
        last = end
    return (min(day, spec.maturity) - last).days


def allocate(exact: dict[str, Fraction]) -> dict[str, int]:
    """Round exact amounts (minor units, any sign) to integers **once each**, so that they sum
    to the half-even rounding of their exact sum (zero when the exact amounts sum to zero):
    each account gets the floor of its amount, then the residual goes a minor unit each to the
    largest fractional parts (ties by account name). Every result is the floor or the ceiling
    of its exact amount."""
    floors = {name: amount.numerator // amount.denominator for name, amount in exact.items()}
    target = _round_half_even(sum(exact.values(), Fraction(0)))
    residual = target - sum(floors.values())  # 0 <= residual < len(exact)
    order = sorted(exact, key=lambda n: (-(exact[n] - floors[n]), n))
    for name in order[:residual]:
        floors[name] += 1
    return floors


def premium_dues(spec: CdsSpec, bases: dict[str, int], days: int) -> dict[str, int]:
    """What each account pays for ``days`` of premium (minor units, negative: it pays; a
    short's negative basis receives): ``-basis x tick_value x days / 360``, through
    :func:`allocate`. Accounts whose amount rounds to nothing are left out."""
    exact = {
        name: Fraction(-basis * spec.tick_value * days, 360)
        for name, basis in sorted(bases.items())
        if basis
    }
    return {name: amount for name, amount in allocate(exact).items() if amount}


# --------------------------------------------------------------------------------------------
# the model side, cached: the closed-form fast path, the general model as its reference

#: Run the listing on the **reference** model alone (the general piecewise ``HazardCurve``
#: legs of ``exchange.products.cds`` and the secant solver) instead of the closed-form flat-hazard
# fast
#: path (``cds.flat_calibrate``, ``cds.flat_par_spread``). Only the tests set it, to check that
#: both paths put the same integers in the log (docs/credit.md, "Speed").
REFERENCE_MODEL = False
#: How far apart the fast and the reference legs may be, relative (docs/credit.md, "Speed":
#: measured below 1e-14, bounded by about 3e-13). An integer whose value lies within twice
#: this share of its terms' size of a rounding boundary (a half tick, a half minor unit) is
#: computed again by the reference path, whose answer is kept.
FAST_PATH_TOLERANCE = 1e-12


def _near_tie(value: float, size: float) -> bool:
    """Whether ``value`` (a float of magnitude at most ``size``, in the unit rounded to) may be
    within ``FAST_PATH_TOLERANCE x size`` of a half-integer, where half to even rounding can
    change its answer. The slack is doubled to cover the float evaluation's own error (a few
    1e-16 of ``size``); a value too large for floats to tell is always near."""
    slack = 2.0 * FAST_PATH_TOLERANCE * size
    return slack >= 0.5 or abs(value - math.floor(value) - 0.5) <= slack


@functools.lru_cache(maxsize=64)
def _tick(tick_bps: str) -> Fraction:
    """A tick of ``tick_bps`` basis points as an exact fraction of a basis point."""
    return Fraction(Decimal(tick_bps))


@functools.lru_cache(maxsize=4096)
def _schedule(spec: CdsSpec, valuation: date) -> tuple:
    """``spec.periods(valuation)``, kept: a mark, its values and its margin shocks share it."""
    return tuple(spec.periods(valuation))


#: How far (relative) the largest spread the listing prices stays below the par spread's
#: supremum (``cds.flat_par_spread_supremum``): the supremum is a float good to a few ulps and
#: each solver's par spread to about 1e-15, so a spread closer than this to it could be
#: reached by one model path and refused by the other. 1e-12 of 24,000 bps is 2.4e-8 bps: for
#: a tick of 1 bp the bound is the supremum rounded down unless the supremum lies within
#: 2.4e-8 bps above a whole tick (docs/credit.md, "Marks").
BOUND_MARGIN = 1e-12


def _bound_ticks(recovery: float, periods: tuple, tick_bps: str) -> int:
    """The largest whole tick of ``tick_bps`` strictly below the par spread's supremum over
    ``periods`` less :data:`BOUND_MARGIN` of it (exact arithmetic on the float supremum).
    ``periods`` start at or before the valuation date (a listed schedule always does), so
    the supremum is finite; it is positive (``R < 1``), so the bound is at least 0."""
    supremum = flat_par_spread_supremum(recovery, periods)
    limit = Fraction(supremum) * (1 - Fraction(BOUND_MARGIN)) * 10_000 / _tick(tick_bps)
    return math.ceil(limit) - 1


@functools.lru_cache(maxsize=4096)
def spread_bound_ticks(spec: CdsSpec, valuation: date) -> int:
    """The largest spread (whole ticks of ``tick_bps``) the model reaches on the series'
    remaining schedule at ``valuation`` (before maturity): the par spread's supremum as the
    flat hazard grows without bound (``cds.flat_par_spread_supremum``, the same float on the
    fast and the reference path), rounded down, :data:`BOUND_MARGIN` below it. A mark, a
    position's value and every shocked spread of initial margin are clamped to it, so no
    spread reaching the model is one no hazard reprices (issue #21: the book accepts spreads
    up to ``max_price``, beyond it near a premium date)."""
    return _bound_ticks(spec.recovery, _schedule(spec, valuation), spec.tick_bps)


@functools.lru_cache(maxsize=4096)
def _standard_periods(valuation: date) -> tuple:
    """The remaining periods of a standard contract from ``valuation``: quarterly IMM premiums
    to the IMM date on or after five years on (the tenor of ``cds_spread_bps``)."""
    try:
        end = valuation.replace(year=valuation.year + STANDARD_TENOR_YEARS)
    except ValueError:  # 29 February
        end = (valuation - timedelta(days=1)).replace(year=valuation.year + STANDARD_TENOR_YEARS)
    standard = CdsSpec(
        name="standard",
        reference_entity="standard",
        coupon_bps=0,
        effective=valuation,
        maturity=_next_imm(end - timedelta(days=1)),
    )
    return tuple(standard.periods(valuation))


@functools.lru_cache(maxsize=4096)
def _entity_bound_bps(recovery_ppm: int, valuation: date) -> int:
    """The largest 5-year spread (whole bps) a flat hazard reaches on the standard contract
    from ``valuation`` (:func:`spread_bound_ticks` for that contract in ticks of 1 bp): at
    least about 47,000 bps at 40 % recovery (a whole first quarter)."""
    return _bound_ticks(recovery_ppm / PPM, _standard_periods(valuation), "1")


def _flat_hazard(spread: float, recovery: float, periods: tuple) -> float:
    """The flat hazard (per year) repricing ``spread`` (fraction per year) over ``periods`` at
    :data:`RATE`, on the fast path: ``cds.flat_calibrate`` (Newton on the closed-form legs
    with their analytic slope, about three evaluations; the bisection as its fallback)."""
    return flat_calibrate(spread, recovery, RATE, periods)[0]


def _flat_hazard_reference(spread: float, recovery: float, periods: tuple) -> float:
    """The reference of :func:`_flat_hazard`: ``cds.flat_hazard_from_spread`` by the secant
    method on the general model's par spread from the credit triangle, to 1e-13 relative;
    the bisection itself if the secant leaves the positive hazards or does not converge.
    Deterministic (the same floats in the same order)."""
    if spread <= 0.0:
        return 0.0

    def gap(h: float) -> float:
        return par_spread(HazardCurve.flat(h), RATE, recovery, periods) - spread

    h0 = triangle_hazard(spread, recovery)
    h1 = h0 * 1.01
    f0, f1 = gap(h0), gap(h1)
    for _ in range(40):
        if f1 == f0:
            break
        h2 = h1 - f1 * (h1 - h0) / (f1 - f0)
        if not 0.0 < h2 < 1e6 or h2 != h2:
            break
        if abs(h2 - h1) <= 1e-13 * h2:
            return h2
        h0, f0, h1, f1 = h1, f1, h2, gap(h2)
    return flat_hazard_from_spread(spread, recovery, RATE, list(periods)).rates[0]


@functools.lru_cache(maxsize=8192)
def _legs(
    spec: CdsSpec, valuation: date, spread_ticks: int, reference: bool = False
) -> tuple[float, float]:
    """``(Prot, RPV01)`` per unit notional of ``spec`` at ``valuation`` on the flat hazard
    that reprices ``spread_ticks`` over the series' own remaining schedule: the closed form,
    or with ``reference`` the general model."""
    periods = _schedule(spec, valuation)
    spread = float(_tick(spec.tick_bps) * spread_ticks / 10_000)
    if not reference:  # a spread <= 0 is a zero hazard, as the reference solver has it
        _hazard, protection, annuity = flat_calibrate(
            max(spread, 0.0), spec.recovery, RATE, periods
        )
        return protection, annuity
    curve = HazardCurve.flat(_flat_hazard_reference(spread, spec.recovery, periods))
    protection = protection_leg(curve, RATE, spec.recovery, periods[-1][1])
    return protection, risky_annuity(curve, RATE, periods)


def _round_legs(
    spec: CdsSpec, valuation: date, spread_ticks: int, protected: int, paying: int
) -> int:
    """``Prot x protected - RPV01 x paying`` (minor units) rounded half to even **once** from
    its exact value, the legs at the flat hazard of ``spread_ticks``: the fast legs, unless
    the value is within :data:`FAST_PATH_TOLERANCE` of a rounding boundary (then the
    reference's answer) or :data:`REFERENCE_MODEL` is set."""
    reference = REFERENCE_MODEL
    protection, annuity = _legs(spec, valuation, spread_ticks, reference)
    if not reference:
        value = protection * protected - annuity * paying
        if _near_tie(value, abs(protection * protected) + abs(annuity * paying)):
            protection, annuity = _legs(spec, valuation, spread_ticks, True)
    # the exact value over the floats' common power-of-two denominator: no Fraction, no gcd
    p_num, p_den = protection.as_integer_ratio()
    a_num, a_den = annuity.as_integer_ratio()
    den = max(p_den, a_den)
    num = p_num * protected * (den // p_den) - a_num * paying * (den // a_den)
    quotient, remainder = divmod(num, den)
    if 2 * remainder > den or (2 * remainder == den and quotient % 2 == 1):
        quotient += 1
    return quotient


def position_value(
    spec: CdsSpec, contracts: int, basis: int, spread_ticks: int, valuation: date
) -> int:
    """Mark-to-market of a position, minor units, rounded half to even **once** from the
    exact value of ``contracts x notional x Prot - basis x tick_value x RPV01`` (``contracts``
    > 0 bought protection; ``basis`` its spread basis, ticks x contracts; the legs at the flat
    hazard of ``spread_ticks``, floored at 0 and clamped to :func:`spread_bound_ticks`: a
    mark made on an earlier day may lie past today's bound). 0 from maturity on (nothing left
    to pay or protect)."""
    if (not contracts and not basis) or valuation >= spec.maturity:
        return 0
    spread_ticks = min(max(0, spread_ticks), spread_bound_ticks(spec, valuation))
    return _round_legs(
        spec, valuation, spread_ticks, contracts * spec.notional, basis * spec.tick_value
    )


@functools.lru_cache(maxsize=4096)
def _entity_hazard(
    spread_bps: int, recovery_ppm: int, valuation: date, reference: bool = False
) -> float:
    """The flat hazard (per year) that reprices a ``spread_bps`` 5-year spread on a standard
    contract from ``valuation`` (quarterly IMM premiums to the IMM date on or after five
    years on); with ``reference``, by the reference solver."""
    if spread_bps <= 0:
        return 0.0
    periods = _standard_periods(valuation)
    solve = _flat_hazard_reference if reference else _flat_hazard
    return solve(spread_bps * 1e-4, recovery_ppm / PPM, periods)


@functools.lru_cache(maxsize=8192)
def _model_spread(spec: CdsSpec, spread_bps: int, valuation: date, reference: bool) -> float:
    """The series' par spread (fraction per year) on the flat hazard of the entity's 5-year
    spread ``spread_bps``: closed form, or with ``reference`` the general model."""
    hazard = _entity_hazard(spread_bps, spec.recovery_ppm, valuation, reference)
    periods = _schedule(spec, valuation)
    if not reference:
        return flat_par_spread(hazard, RATE, spec.recovery, periods)
    return par_spread(HazardCurve.flat(hazard), RATE, spec.recovery, periods)


def model_ticks(spec: CdsSpec, spread_bps: int, valuation: date) -> int:
    """The model mark: the series' par spread (ticks of ``tick_bps``, rounded once) on the
    flat hazard of the reference entity's 5-year spread ``spread_bps`` (the fast path, the
    reference's answer within :data:`FAST_PATH_TOLERANCE` of a half tick), both clamped
    (:func:`_model_ticks`)."""
    return _model_ticks(spec, spread_bps, valuation)[0]


def _model_ticks(spec: CdsSpec, spread_bps: int, valuation: date) -> tuple[int, bool]:
    """:func:`model_ticks` and whether a bound bit: the entity's spread is first clamped to
    the largest a flat hazard reaches on the standard contract (:func:`_entity_bound_bps`),
    and the ticks, rounded half to even from a par spread below the supremum, to the series'
    :func:`spread_bound_ticks` (a half tick rounding up past it)."""
    reference = REFERENCE_MODEL
    entity_bound = _entity_bound_bps(spec.recovery_ppm, valuation)
    clamped = spread_bps > entity_bound
    spread_bps = min(spread_bps, entity_bound)
    spread = _model_spread(spec, spread_bps, valuation, reference)
    if not reference:
        ticks = spread * 10_000 / float(spec.tick_bps)
        if _near_tie(ticks, ticks):
            spread = _model_spread(spec, spread_bps, valuation, True)
    ticks = spread_to_ticks(spread, spec.tick_bps)
    bound = spread_bound_ticks(spec, valuation)
    if ticks > bound:
        return bound, True
    return ticks, clamped


# --------------------------------------------------------------------------------------------
# the engine's side


def exposure_rates(spec: CdsSpec) -> tuple[int, int, int, int]:
    """``(position, basis, price, cash)`` of ``engine.ExposureRates`` for a series: a contract
    is worth at most its notional (protection at zero recovery), a tick x contract of spread
    basis at most its premiums to maturity (``tick_value`` a year, rounded up), the largest
    price ``max_price``, and one contract ordered moves its account's cash by at most the
    larger fee at that price."""
    years = -(-(spec.maturity - spec.effective).days // 360) + 1
    top = spec.max_price * spec.tick_value
    fee_bps = max(abs(spec.maker_fee_bps), abs(spec.taker_fee_bps))
    return spec.notional, spec.tick_value * years, spec.max_price, -(-top * fee_bps // 10_000)


def note_month(engine: Venue, data: dict[str, Any] | None) -> None:
    """Keep the economy's implied 5-year spreads (``cds_spread_bps``: entity -> whole bps) of
    an ``EconomyMonth``, the latest per entity, for the model marks. Engine-only (not in the
    canonical state): a re-execution re-announces the month; the fold sees the marks."""
    spreads = (data or {}).get("cds_spread_bps")
    if not isinstance(spreads, dict):
        return
    kept = engine.cds_spread_bps
    for entity, bps in sorted(spreads.items()):
        if type(bps) is int and bps >= 0:
            kept[entity] = bps


def entity_spread_bps(engine: Venue, spec: CdsSpec) -> int:
    """The reference entity's 5-year spread the model uses now, bps."""
    kept = engine.cds_spread_bps
    return kept.get(spec.reference_entity, spec.start_spread_bps)


def mark(engine: Venue, listing: Listing) -> None:
    """Mark a series (``MarkPrice``: price = the mark in ticks, amount = a contract's
    protection leg at the mark in minor units, ``data`` source, model ticks and the entity's
    spread): the book's mid if tight, else the model. Nothing from maturity on or once
    closed.

    The mark is at most :func:`spread_bound_ticks` (the book accepts spreads up to
    ``max_price``, and the mid may lie up to 5 ticks past the model): when a bound bit, on
    the mark, the model's ticks or the entity's spread (:func:`_model_ticks`), ``data`` also
    carries ``clamped: true`` (absent otherwise, so logs where no bound bites are
    unchanged)."""
    spec = listing.spec
    day = valuation_date(engine, spec)
    if listing.expired or day >= spec.maturity:
        return
    entity_bps = entity_spread_bps(engine, spec)
    model, clamped = _model_ticks(spec, entity_bps, day)
    book = listing.book
    bid_px, bid_qty = book.depth(0, 1)
    ask_px, ask_qty = book.depth(1, 1)
    ticks, source = rvs_mark(
        float(model),  # already whole ticks: the tick of "1" keeps them exactly
        "1",
        int(bid_px[0]) if len(bid_px) else None,
        int(ask_px[0]) if len(ask_px) else None,
        BOOK_MAX_SPREAD_TICKS,
        BOOK_MIN_DEPTH_LOTS,
        int(bid_qty[0]) if len(bid_qty) else 0,
        int(ask_qty[0]) if len(ask_qty) else 0,
    )
    bound = spread_bound_ticks(spec, day)
    if ticks > bound:  # a tight book past what any hazard reaches
        ticks, clamped = bound, True
    listing.mark = ticks
    listing.unit_value = _round_legs(spec, day, ticks, spec.notional, 0)
    data: dict[str, Any] = {"source": source, "model": model, "entity_spread_bps": entity_bps}
    if clamped:
        data["clamped"] = True
    engine.emit(
        ev.MARK_PRICE, instrument=spec.name, price=ticks, amount=listing.unit_value, data=data
    )


def value(engine: Venue, listing: Listing, position: int, basis: int) -> int:
    """A position's value (minor units, :func:`position_value`) at the series' last mark and
    the engine's valuation date: what variation margin settles to."""
    spec = listing.spec
    return position_value(spec, position, basis, listing.mark, valuation_date(engine, spec))


def initial_margin(engine: Venue, listing: Listing, position: int, basis: int) -> int:
    """The worst loss (minor units, >= 0) of a position's value over the spec's spread shocks
    (``margin_shocks_bps``, each turned into whole ticks half to even, the shocked spread
    floored at 0 and clamped to :func:`spread_bound_ticks`: a widening past what any hazard
    reaches is the widening to it), at the last mark and today's valuation date."""
    spec = listing.spec
    day = valuation_date(engine, spec)
    if listing.mark is None or day >= spec.maturity or not (position or basis):
        return 0
    now = position_value(spec, position, basis, listing.mark, day)
    tick = Fraction(Decimal(spec.tick_bps))
    bound = spread_bound_ticks(spec, day)
    worst = 0
    for shock in spec.margin_shocks_bps:
        shocked = min(max(0, listing.mark + _round_half_even(Fraction(shock) / tick)), bound)
        worst = max(worst, now - position_value(spec, position, basis, shocked, day))
    return worst


def _participants(engine: Venue, name: str) -> list:
    """Accounts taking part in a series (sorted by name): not closed out after a default."""
    return [a for a in engine.sorted_accounts() if not engine.is_closed_out(a, name)]


def charge_premium(engine: Venue, name: str) -> None:
    """A premium date of a series (an IMM date, at its midnight): the series is re-marked
    without the period that ends today (``MarkPrice``) and its variation margin settled on
    that value, and each account with a spread basis pays the period's premium
    (``PremiumPaid``, ``data.days``), all payers first so the clearing pool never lends. On
    the maturity date the value is 0 (no mark), and the series then closes: its resting
    orders are cancelled and its positions and bases dropped (``InstrumentExpired``)."""
    listing = engine.instruments[name]
    if listing.expired:
        return
    spec = listing.spec
    day = valuation_date(engine, spec)
    days = accrual_days(spec, day)
    payments: list[tuple[int, str, int]] = []  # (amount, account, 0 = VM / 1 = premium)
    values: dict[str, tuple[int, int]] = {}
    if listing.mark is not None:
        if day < spec.maturity:
            engine.mark(name)
        values = engine.variation_dues(name, listing)
        payments += [(due, a, 0) for a, (due, _value) in values.items()]
    bases = {a.name: a.basis.get(name, 0) for a in _participants(engine, name)}
    payments += [(amount, a, 1) for a, amount in premium_dues(spec, bases, days).items()]
    for amount, account_name, what in sorted(payments, key=lambda p: (p[0] > 0, p[1], p[2])):
        if what == 0:
            engine.pay_variation(name, listing, account_name, amount, values[account_name][1])
        else:
            engine._clear(ev.PREMIUM_PAID, name, account_name, amount, data={"days": days})
    if day >= spec.maturity:
        _close(engine, name, listing, "matured", {})


def _close(engine: Venue, name: str, listing: Listing, reason: str, data: dict[str, Any]) -> None:
    """Cancel the book, drop every position and basis, close the series
    (``InstrumentExpired``, ``data.reason``)."""
    engine.cancel_book(name, reason)
    for account in engine.accounts.values():
        account.positions.pop(name, None)
        account.basis.pop(name, None)
        account.vm_basis.pop(name, None)
    listing.expired = True
    engine.emit(ev.INSTRUMENT_EXPIRED, instrument=name, data={"reason": reason, **data})


def recovery_ppm(spec: CdsSpec, data: dict[str, Any] | None) -> int:
    """The recovery a credit event settles at, ppm: the event's ``recovery_ppm`` (the auction
    of the defaulter's GPUs) when the spec settles by ``auction`` and the event carries a
    whole number in ``0..10**6``; else the spec's fixed ``recovery_ppm``."""
    if spec.settlement == "auction":
        auctioned = (data or {}).get("recovery_ppm")
        if type(auctioned) is int and 0 <= auctioned <= PPM:
            return auctioned
    return spec.recovery_ppm


def credit_event(engine: Venue, entity: str | None, data: dict[str, Any] | None) -> None:
    """Settle every open series on ``entity`` (listing order) after its ``BorrowerDefaulted``:
    :func:`_settle_default` each."""
    if entity is None:
        return
    for name, listing in list(engine.instruments.items()):
        spec = listing.spec
        if listing.kind == "cds" and not listing.expired and spec.reference_entity == entity:
            _settle_default(engine, name, listing, data)


def _settle_default(
    engine: Venue, name: str, listing: Listing, data: dict[str, Any] | None
) -> None:
    """The credit-event steps of one series, each state change then its event:

    1. the book is cancelled (``OrderCancelled``, reason ``credit event``);
    2. the premium accrued from the last premium date to the default date
       (``PremiumPaid``, ``data.days``, ``data.reason = "accrued"``), :func:`premium_dues`;
    3. the settlement (``SwapSettled``, payers first): each position's protection
       ``contracts x notional x (1 - R)`` (rounded by :func:`allocate`: the shorts pay what
       the longs receive) less its VM basis (the value variation margin has already paid it),
       ``price`` = ``R`` in ppm, ``data`` the protection and the VM basis;
    4. the series closes (``InstrumentExpired``, reason ``credit event``)."""
    spec = listing.spec
    day = valuation_date(engine, spec)
    engine.cancel_book(name, "credit event")
    accrued = (min(day, spec.maturity) - _last_premium_date(spec, day)).days
    participants = _participants(engine, name)
    bases = {a.name: a.basis.get(name, 0) for a in participants}
    dues = premium_dues(spec, bases, accrued) if accrued > 0 else {}
    for account_name in sorted(dues, key=lambda n: (dues[n] > 0, n)):
        engine._clear(
            ev.PREMIUM_PAID,
            name,
            account_name,
            dues[account_name],
            data={"days": accrued, "reason": "accrued"},
        )
    recovery = recovery_ppm(spec, data)
    protection = allocate(
        {
            a.name: Fraction(a.positions.get(name, 0) * spec.notional * (PPM - recovery), PPM)
            for a in participants
            if a.positions.get(name, 0) or a.vm_basis.get(name, 0)
        }
    )
    due = {a: protection[a] - engine.accounts[a].vm_basis.get(name, 0) for a in protection}
    for account_name in sorted(due, key=lambda n: (due[n] > 0, n)):
        # the VM basis stays until the close drops it with the position (as an RVS expiry)
        settled = engine.accounts[account_name].vm_basis.get(name, 0)
        engine._clear(
            ev.SWAP_SETTLED,
            name,
            account_name,
            due[account_name],
            price=recovery,
            data={"protection": protection[account_name], "vm_basis": settled},
        )
    _close(engine, name, listing, "credit event", {"recovery_ppm": recovery})


def schedule_cds(engine: Venue, sim: Simulator, end_ns: int) -> int:
    """Schedule every listed series' premium dates (``Exchange.charge_cds_premium``) and
    marks (at every margin cycle's instant, else every :data:`MARK_INTERVAL_NS`, from 0) in
    ``0..end_ns`` at ``MARKET`` priority (so a cycle at the same instant sees the mark);
    returns how many actions it scheduled. Call after the economy is scheduled: at an instant
    both fall, the month's news comes first."""
    series = [name for name, li in engine.instruments.items() if li.kind == "cds"]
    if not series:
        return 0
    count = 0
    for name in series:
        for day in engine.instruments[name].spec.premium_dates():
            t = engine.date_ns(day)
            if 0 < t <= end_ns:
                sim.schedule(t, engine.charge_cds_premium, name, priority=MARKET)
                count += 1
    interval = engine.margin.interval_ns if engine.margin is not None else MARK_INTERVAL_NS
    t = 0
    while t <= end_ns:
        sim.schedule(t, _mark_all, engine, series, priority=MARKET)
        count += 1
        t += interval
    return count


def _mark_all(engine: Venue, series: list[str]) -> None:
    """Mark each series in ``series`` (listing order); a closed one is skipped by the mark."""
    for name in series:
        engine.mark(name)


def action_count(spec: CdsSpec, start: date, end_ns: int, interval_ns: int | None) -> int:
    """How many timed actions :func:`schedule_cds` implies for one series (premium dates in
    the session; marks counted per series, an upper bound), for the scenario's limits."""
    days = end_ns // DAY_NS
    last = start + timedelta(days=days)
    premiums = sum(1 for d in spec.premium_dates() if start < d <= last)
    return premiums + end_ns // (interval_ns or MARK_INTERVAL_NS) + 1
