"""Perpetual futures on GPU-rental indices: contract spec, impact prices, premium, funding rate,
a damped mark price and O(1) funding accrual through a cumulative index. A pure library: no
events, no engine state (``docs/perpetuals.md`` is the specification).

Units, as everywhere in ``exchange``: prices in integer **ticks**, sizes in integer **lots**,
cash in integer **minor units** (cents), time in simulated **nanoseconds**. Rates (premium,
funding) are exact :class:`fractions.Fraction` values per funding interval (``Fraction(1, 100)``
is 1 %). Nothing that touches money is a float, and every rounding happens once, at a boundary
named in the function that does it:

* :meth:`FundingIndex.accrue` rounds the per-lot funding payment half-even to nano-minor units
  (the index's fixed point, ``FUNDING_SCALE``);
* :func:`settle_funding` rounds each account's cash delta toward minus infinity to minor units
  and gives the remainder (always >= 0) to a named pool account;
* :meth:`MarkPrice.update` rounds the mark half-even to a whole tick.

Venue formulas followed (named again where they are used):

* premium index and funding rate: Binance USDⓈ-M futures ("Introduction to Binance Futures
  Funding Rates", https://www.binance.com/en/support/faq/360033525031) and BitMEX perpetual
  contracts (https://www.bitmex.com/app/perpetualContractsGuide), which share
  ``P = (max(0, impact bid - index) - max(0, index - impact ask)) / index`` and
  ``F = P + clamp(I - P, -0.05 %, +0.05 %)``; impact bid/ask as defined by dYdX v4
  (https://help.dydx.trade/en/articles/166992-default-funding-rates-on-dydx-chain): the average
  execution price of a market sell/buy of the impact size;
* funding cap: the dYdX v4 form ``|F| <= funding_rate_clamp_factor x (IM - MM)`` (dYdX chain
  governance parameter ``funding_rate_clamp_factor``, default 600 % on the 8-hour rate; BitMEX
  uses 75 %), here with a factor of 100 % on the narrowest margin tier:
  ``cap = min over tiers of (initial_margin - maintenance_margin)`` per funding interval;
* margin tiers (Binance / Hyperliquid / dYdX style): a perpetual position is margined on its
  own notional at the rates of its size's tier (:func:`tier_margin`), IM rounded up and MM
  down to whole minor units.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from exchange.products.instruments import MAX_FEE_BPS, MIN_FEE_BPS, MINOR_PER_UNIT, PositiveDecimal

#: Rates and margins given in parts per million.
PPM = 1_000_000
#: Fixed point of :class:`FundingIndex`: the cumulative index is in nano-minor units per lot.
FUNDING_SCALE = 10**9
#: Fixed point of :class:`MarkPrice`'s damped basis: nano-ticks.
BASIS_SCALE = 10**9
#: Fixed point of :class:`MarkPrice`'s decay weights: 10**18 is a weight of 1.
WEIGHT_SCALE = 10**18

_NAME = r"^[A-Za-z0-9_.\-]+$"


# ---------------------------------------------------------------------------------- the spec
class MarginTier(BaseModel):
    """One margin tier: positions up to ``max_position_lots`` (absolute lots) need
    ``initial_margin_ppm`` of notional to open and ``maintenance_margin_ppm`` to stay open
    (parts per million of notional; 50_000 = 5 %). Requires 0 < maintenance < initial <= 100 %.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_position_lots: int = Field(ge=1)
    initial_margin_ppm: int
    maintenance_margin_ppm: int

    @model_validator(mode="after")
    def _ordered(self) -> MarginTier:
        if not 0 < self.maintenance_margin_ppm < self.initial_margin_ppm <= PPM:
            raise ValueError(
                "margin tier needs 0 < maintenance_margin_ppm < initial_margin_ppm <= 1_000_000,"
                f" got mm={self.maintenance_margin_ppm}, im={self.initial_margin_ppm}"
            )
        return self


class PerpSpec(BaseModel):
    """A perpetual future on a GPU-rental index, validated.

    Attributes:
        kind: always ``"perp"`` (as ``InstrumentSpec.kind`` is ``"spot"``): the engine and
            the ``InstrumentListed`` event tell instrument kinds apart by it.
        name: symbol, e.g. ``"H100-PERP"``.
        underlying: the index it tracks, e.g. ``"H100-RENTAL"`` (dollars per GPU-hour).
        gpu_hours_per_contract: GPU-hours of rental one contract is worth (>= 1).
        tick_size: price increment in dollars per GPU-hour, a decimal string (``"0.001"``).
        lot_size: contracts per lot (>= 1).
        funding_interval_ns: time between funding settlements (8 h = ``8 * 3600 * 10**9``).
        interest_ppm_per_interval: the interest component I per interval, ppm (100 = 0.01 %,
            Binance's 0.03 % a day over three 8-hour intervals).
        premium_clamp_ppm: the band around I inside which F = I, ppm (500 = 0.05 %).
        impact_notional_lots: the size, in lots, whose average execution price is the impact
            bid/ask (venues size it in currency, e.g. dYdX 500 USDC / IMF; here in lots, so
            it does not move with the price).
        mark_basis_halflife_ns: half-life of the damped basis of the mark price (ns).
        margin_tiers: non-empty, strictly increasing ``max_position_lots``; initial and
            maintenance margins non-decreasing from tier to tier (bigger positions never need
            less margin). The engine margins every position by its tier
            (:func:`tier_margin`).
        max_price: highest accepted price and mark, in ticks.
        maker_fee_bps, taker_fee_bps: trading fees in basis points of notional (negative =
            rebate), as for ``InstrumentSpec``; default 0.

    Derived (properties, so a dump of the spec round-trips): :attr:`tick_value` and
    :attr:`funding_cap_ppm`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["perp"] = "perp"
    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    underlying: str = Field(min_length=1, max_length=64, pattern=_NAME)
    gpu_hours_per_contract: int = Field(ge=1)
    tick_size: PositiveDecimal
    lot_size: int = Field(default=1, ge=1)
    funding_interval_ns: int = Field(ge=1)
    interest_ppm_per_interval: int = Field(default=100, ge=-PPM, le=PPM)
    premium_clamp_ppm: int = Field(default=500, ge=0, le=PPM)
    impact_notional_lots: int = Field(ge=1)
    mark_basis_halflife_ns: int = Field(ge=1)
    margin_tiers: list[MarginTier] = Field(min_length=1)
    max_price: int = Field(ge=1, le=1 << 53)
    maker_fee_bps: int = Field(default=0, ge=MIN_FEE_BPS, le=MAX_FEE_BPS)
    taker_fee_bps: int = Field(default=0, ge=MIN_FEE_BPS, le=MAX_FEE_BPS)

    @model_validator(mode="after")
    def _consistent(self) -> PerpSpec:
        value = self._tick_value_decimal()
        if value != value.to_integral_value():
            raise ValueError(
                f"tick value {value} minor units per lot is not whole: tick_size x "
                "gpu_hours_per_contract x lot_size x 100 must be a whole number of cents"
            )
        for lower, upper in zip(self.margin_tiers, self.margin_tiers[1:], strict=False):
            if upper.max_position_lots <= lower.max_position_lots:
                raise ValueError("margin_tiers must have strictly increasing max_position_lots")
            if (
                upper.initial_margin_ppm < lower.initial_margin_ppm
                or upper.maintenance_margin_ppm < lower.maintenance_margin_ppm
            ):
                raise ValueError("margin_tiers must not lower the margin for bigger positions")
        return self

    def _tick_value_decimal(self) -> Decimal:
        return (
            Decimal(self.tick_size) * self.gpu_hours_per_contract * self.lot_size * MINOR_PER_UNIT
        )

    @property
    def tick_value(self) -> int:
        """Minor units one tick is worth on one lot:
        ``tick_size x gpu_hours_per_contract x lot_size x 100`` (whole, checked)."""
        # read at every mark and every tier margin: memoised on the three fields it depends
        # on (not on the spec object, so a ``model_copy(update=...)`` cannot see a stale value)
        return _tick_value(self.tick_size, self.gpu_hours_per_contract, self.lot_size)

    @property
    def funding_cap_ppm(self) -> int:
        """Largest |funding rate| per interval, ppm: the smallest ``IM - MM`` of any margin
        tier (the dYdX v4 cap ``funding_rate_clamp_factor x (IM - MM)`` with a factor of
        100 %, taken on the narrowest buffer, since a later tier may have a smaller one).

        The engine margins a perpetual by its tier (:func:`tier_margin`), so one interval at
        the cap costs at most the buffer between the position's own tier IM and MM: funding
        alone cannot take a perpetual-only position opened with exactly its tier IM below its
        tier MM in one interval at an unchanged mark -- exactly, in minor units, with the
        roundings of :meth:`FundingIndex.accrue` (exact at the cap) and :func:`settle_funding`
        (the payer pays ``ceil``), because ``ceil(a) - ceil(a - b) >= floor(b)``."""
        return min(t.initial_margin_ppm - t.maintenance_margin_ppm for t in self.margin_tiers)


@lru_cache(maxsize=256)
def _tick_value(tick_size: Decimal, gpu_hours_per_contract: int, lot_size: int) -> int:
    """``PerpSpec.tick_value`` from its inputs (pure: the same Decimal product, then ``int``)."""
    return int(Decimal(tick_size) * gpu_hours_per_contract * lot_size * MINOR_PER_UNIT)


def margin_tier(spec: PerpSpec, lots: int) -> MarginTier:
    """The tier that margins a position of ``lots`` (signed or not; its size ``|lots|``
    counts): the first tier with ``|lots| <= max_position_lots``, or the last tier for a
    position beyond every tier (venues refuse such a position; the engine margins it at the
    highest rates rather than not at all)."""
    size = abs(lots)
    for tier in spec.margin_tiers:
        if size <= tier.max_position_lots:
            return tier
    return spec.margin_tiers[-1]


def tier_margin(spec: PerpSpec, lots: int, mark: int) -> tuple[int, int]:
    """Initial and maintenance margin, minor units, of a position of ``lots`` (signed) at a
    mark of ``mark`` ticks, by its tier (:func:`margin_tier`), on its own notional
    ``N = |lots| x mark x tick_value`` (minor units), in exact integers::

        im = ceil(N x initial_margin_ppm / 10**6)
        mm = floor(N x maintenance_margin_ppm / 10**6)

    IM is rounded up (never less than the rate asks to open) and MM down, so that the
    buffer ``im - mm`` is at least ``ceil(N x (IM - MM) / 10**6)``: one funding payment at
    :attr:`PerpSpec.funding_cap_ppm` fits in it exactly. A flat position needs ``(0, 0)``."""
    if mark < 0:
        raise ValueError("mark must be >= 0 ticks")
    if not lots:
        return 0, 0
    tier = margin_tier(spec, lots)
    notional = abs(lots) * mark * spec.tick_value
    im = -(-notional * tier.initial_margin_ppm // PPM)
    mm = notional * tier.maintenance_margin_ppm // PPM
    return im, mm


# ------------------------------------------------------------------ impact prices, premium
def _walk(levels: Iterable[tuple[int, int]], lots: int) -> Fraction | None:
    """The average price (ticks, exact) of taking ``lots`` from ``levels`` (``(price, qty)``
    ints, best first), None when they hold fewer lots."""
    remaining = lots
    cost = 0
    for price, qty in levels:
        if qty >= remaining:  # this level completes the size: the rest is not read
            return Fraction(cost + price * remaining, lots)
        cost += price * qty
        remaining -= qty
    return None


def _checked(prices: Sequence[int], qtys: Sequence[int], side: str) -> list[tuple[int, int]]:
    """``(price, qty)`` ints from a side's depth, every level checked (even past any size)."""
    if len(prices) != len(qtys):
        raise ValueError(f"{side}: {len(prices)} prices but {len(qtys)} quantities")
    levels = []
    previous = None
    bids = side == "bids"
    for raw_price, raw_qty in zip(prices, qtys, strict=True):
        price, qty = int(raw_price), int(raw_qty)
        if qty <= 0 or price <= 0:
            raise ValueError(f"{side}: levels need positive price and quantity")
        if previous is not None and (price >= previous if bids else price <= previous):
            raise ValueError(f"{side}: levels must be distinct and best-first")
        previous = price
        levels.append((price, qty))
    return levels


def impact_prices(
    bid_prices: Sequence[int],
    bid_qtys: Sequence[int],
    ask_prices: Sequence[int],
    ask_qtys: Sequence[int],
    impact_lots: int,
) -> tuple[Fraction | None, Fraction | None]:
    """The impact bid and impact ask, in ticks (exact).

    The impact bid is the average execution price of a market **sell** of ``impact_lots`` into
    the bids; the impact ask that of a market **buy** into the asks (dYdX v4's definition).
    Depth is given best-first, as ``OrderBook.depth(side, n)`` returns it (int64 arrays or
    sequences of ints: prices in ticks, quantities in lots). A side whose whole given depth is
    smaller than ``impact_lots`` has **no** impact price (``None``): a thin book says nothing
    about where size would trade, so it must not move the premium (see :func:`premium_index`).
    Exactly ``impact_lots`` of depth is enough. Every level given is checked (positive,
    distinct, best first), even past the impact size.
    """
    if impact_lots < 1:
        raise ValueError("impact_lots must be >= 1")
    return impact_prices_of_levels(
        _checked(bid_prices, bid_qtys, "bids"),
        _checked(ask_prices, ask_qtys, "asks"),
        impact_lots,
    )


def impact_prices_of_levels(
    bids: Iterable[tuple[int, int]],
    asks: Iterable[tuple[int, int]],
    impact_lots: int,
) -> tuple[Fraction | None, Fraction | None]:
    """:func:`impact_prices` from a book's own levels: ``(price, qty)`` int pairs (ticks,
    lots) best first, as ``OrderBook.top(n)`` gives them (``(bids, asks)``).

    The levels are taken as the book guarantees them (positive, distinct, best first: not
    checked), and a side is read only down to the level that completes ``impact_lots``:
    the same values as :func:`impact_prices` on the same depth, for less work per mark.
    """
    if impact_lots < 1:
        raise ValueError("impact_lots must be >= 1")
    return _walk(bids, impact_lots), _walk(asks, impact_lots)


def premium_index(
    impact_bid: Fraction | int | None,
    impact_ask: Fraction | int | None,
    index: Fraction | int,
) -> Fraction:
    """The premium index P (a rate, exact), Binance USDⓈ-M / BitMEX / dYdX v4 form::

        P = (max(0, impact_bid - index) - max(0, index - impact_ask)) / index

    All prices in ticks, ``index > 0``. A missing impact price (``None``, the side cannot fill
    the impact size) contributes 0 to its term, so a book that is one-sided or thin on one side
    cannot push the premium through that side.
    """
    if index <= 0:
        raise ValueError("index must be > 0 ticks")
    index = Fraction(index)
    above = max(Fraction(0), impact_bid - index) if impact_bid is not None else Fraction(0)
    below = max(Fraction(0), index - impact_ask) if impact_ask is not None else Fraction(0)
    return (above - below) / index


def _clamp(value: Fraction, low: Fraction, high: Fraction) -> Fraction:
    return min(max(value, low), high)


def funding_rate(premium: Fraction, spec: PerpSpec) -> Fraction:
    """The funding rate F per interval (exact), positive when longs pay shorts.

    Binance USDⓈ-M / BitMEX formula (https://www.binance.com/en/support/faq/360033525031,
    https://www.bitmex.com/app/perpetualContractsGuide)::

        F = P + clamp(I - P, -clamp, +clamp)

    with ``I = interest_ppm_per_interval`` and ``clamp = premium_clamp_ppm`` (so F = I exactly
    while P is within the clamp of I), then capped dYdX-style to
    ``[-funding_cap_ppm, +funding_cap_ppm]``. ``premium`` is the interval's premium index (a
    single :func:`premium_index` or the engine's average of samples over the interval, as
    Binance averages per-minute premiums).
    """
    interest = Fraction(spec.interest_ppm_per_interval, PPM)
    band = Fraction(spec.premium_clamp_ppm, PPM)
    cap = Fraction(spec.funding_cap_ppm, PPM)
    premium = Fraction(premium)
    rate = premium + _clamp(interest - premium, -band, band)
    return _clamp(rate, -cap, cap)


# -------------------------------------------------------------------------------- mark price
#: ln 2 in binary fixed point with 128 fractional bits, from ``decimal`` (correctly rounded,
#: identical on every platform).
_EXP_BITS = 128
_EXP_ONE = 1 << _EXP_BITS
_LN2 = int(Context(prec=60).ln(Decimal(2)) * _EXP_ONE)


@lru_cache(maxsize=1024)  # pure in two ints; marks repeat the same dt (the index cadence)
def decay_weight(dt_ns: int, halflife_ns: int) -> int:
    """``2 ** (-dt_ns / halflife_ns)`` in units of 1/``WEIGHT_SCALE`` (10**18 = 1), computed
    with integers only (so identical on every machine): ``2**-q x exp(-ln2 x r / halflife)``
    for ``dt = q x halflife + r``, the exponential by its Taylor series in 128-bit fixed point,
    then rounded half-even once to 10**-18. Error below 10**-18 plus that rounding."""
    if dt_ns < 0 or halflife_ns < 1:
        raise ValueError("need dt_ns >= 0 and halflife_ns >= 1")
    whole, rest = divmod(dt_ns, halflife_ns)
    if whole >= 64:  # 2**-64 x 10**18 < 0.06: rounds to 0
        return 0
    y = _LN2 * rest // halflife_ns  # ln2 x rest / halflife in [0, ln 2), fixed point
    total = term = _EXP_ONE
    k = 1
    while term:
        term = term * y // (_EXP_ONE * k)
        total += -term if k % 2 else term
        k += 1
    return round(Fraction(total * WEIGHT_SCALE, _EXP_ONE << whole))


def _exact(value: Fraction | int) -> Fraction | int:
    """``value`` itself if an int or Fraction (both have ``numerator``/``denominator`` with a
    positive denominator), else its exact ``Fraction``."""
    return value if type(value) is int or type(value) is Fraction else Fraction(value)


def _div_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)  # denominator > 0: remainder >= 0
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


class MarkPrice:
    """The mark price of one perpetual: index + an exponentially time-weighted average of the
    basis, so that a book snapshot moves the mark only in proportion to how long it lasts.

    The basis sample at an update is ``(impact_bid + impact_ask) / 2 - index`` (ticks), or 0
    if either impact price is missing. The damped basis is the exact time-weighted EWMA of the
    piecewise-constant sampled basis, each sample held until the next update (the
    "last-value" EWMA for irregular samples): at ``update(t, ...)`` the basis decays toward
    the **previous** sample over ``dt = t - t_previous`` with weight
    ``w = 1 - 2 ** (-dt / halflife)`` (:func:`decay_weight`), and the new sample takes over from
    ``t``. So a snapshot counts only for the time it stays in the book; a spike that lasts
    ``dt << halflife`` moves the mark by about ``dt / halflife x ln 2`` of the spike; a basis
    that persists is followed, closing half the gap every half-life; several updates at the
    same ``t`` (``dt = 0``) leave only the last sample. The first update establishes the clock
    with a damped basis of 0 (the mark starts at the index).

    Fixed points: the damped basis is kept in nano-ticks (``BASIS_SCALE``), each step rounded
    half-even; weights in 10**-18 (``WEIGHT_SCALE``). The returned mark is
    ``index + basis`` rounded half-even **once** to a whole tick and clamped to
    ``[1, spec.max_price]``. The engine should call ``update`` whenever the book or the index
    changes (or at a fixed sampling cadence), since a sample is assumed to hold until the next
    call.
    """

    def __init__(self, spec: PerpSpec) -> None:
        self.spec = spec
        #: Damped basis in nano-ticks.
        self.basis_nano = 0
        #: Basis sample of the last update, in nano-ticks (held until the next update).
        self.sample_nano = 0
        #: Time of the last update (ns); ``None`` before the first.
        self.t_ns: int | None = None
        #: The last returned mark (ticks); ``None`` before the first update.
        self.mark: int | None = None

    @property
    def basis(self) -> Fraction:
        """The damped basis, ticks."""
        return Fraction(self.basis_nano, BASIS_SCALE)

    def update(
        self,
        t_ns: int,
        index_ticks: int,
        impact_bid: Fraction | int | None,
        impact_ask: Fraction | int | None,
    ) -> int:
        """Advance to ``t_ns`` (non-decreasing), take the book's impact prices and the index
        (ticks, >= 1) at ``t_ns``, and return the mark in ticks."""
        if index_ticks < 1:
            raise ValueError("index_ticks must be >= 1")
        if self.t_ns is not None:
            if t_ns < self.t_ns:
                raise ValueError(f"time went backwards: {t_ns} < {self.t_ns}")
            weight = WEIGHT_SCALE - decay_weight(t_ns - self.t_ns, self.spec.mark_basis_halflife_ns)
            self.basis_nano += _div_half_even(
                (self.sample_nano - self.basis_nano) * weight, WEIGHT_SCALE
            )
        self.t_ns = t_ns
        if impact_bid is None or impact_ask is None:
            self.sample_nano = 0
        else:
            # round(((bid + ask) / 2 - index) x BASIS_SCALE) half-even, in integers (the same
            # exact value as with Fractions; bid = a / b and ask = c / d, ints or Fractions)
            bid, ask = _exact(impact_bid), _exact(impact_ask)
            a, b = bid.numerator, bid.denominator
            c, d = ask.numerator, ask.denominator
            self.sample_nano = _div_half_even(
                (a * d + c * b - 2 * index_ticks * b * d) * BASIS_SCALE, 2 * b * d
            )
        # round(index + basis_nano / BASIS_SCALE) half-even, in integers
        mark = _div_half_even(index_ticks * BASIS_SCALE + self.basis_nano, BASIS_SCALE)
        self.mark = min(max(mark, 1), self.spec.max_price)
        return self.mark


# ------------------------------------------------------------------------ funding accrual
@dataclass(slots=True)
class FundingIndex:
    """Cumulative funding per lot of a **long** position, in nano-minor units
    (``FUNDING_SCALE`` = 10**9 per minor unit), since listing. It rises when longs pay.

    A position of ``q`` lots held from index value ``c0`` to ``c1`` owes
    ``q x (c1 - c0) / 10**9`` minor units (shorts have ``q < 0`` and so receive), whatever
    happened in between: O(1) per position, nothing is touched per interval but this integer.
    """

    cumulative: int = 0

    def accrue(self, rate: Fraction, mark_ticks: int, tick_value: int) -> int:
        """Add one interval's funding at ``rate`` (per interval, positive = longs pay) on the
        notional of one lot at the mark: ``rate x mark_ticks x tick_value`` minor units, rounded
        half-even once to nano-minor units. Longs and shorts use the same rounded integer, so
        the rounding never creates or destroys money. Returns the amount added (nano-minor
        units per lot); the new total is :attr:`cumulative`."""
        if mark_ticks < 1 or tick_value < 1:
            raise ValueError("mark_ticks and tick_value must be >= 1")
        step = round(Fraction(rate) * mark_ticks * tick_value * FUNDING_SCALE)
        self.cumulative += step
        return step

    def owed(self, position_lots: int, entry_cumulative: int) -> Fraction:
        """Exact funding owed, in minor units, by a position of ``position_lots`` (signed,
        long > 0) held since the index stood at ``entry_cumulative``; positive = the holder
        pays."""
        return Fraction(position_lots * (self.cumulative - entry_cumulative), FUNDING_SCALE)


def settle_funding(
    positions: Mapping[str, int],
    last_cumulative: Mapping[str, int],
    cumulative: int,
    remainder_account: str,
) -> dict[str, int]:
    """Integer cash deltas (minor units) that settle funding from each account's
    ``last_cumulative`` to ``cumulative`` (the :class:`FundingIndex` value, nano-minor units
    per lot).

    ``positions``: signed lots of one perpetual per account (long > 0); they must sum to zero
    (every long has a short: funding is paid between them), otherwise ``ValueError``. Every
    account with a non-zero position needs a ``last_cumulative``, and the exact amounts owed
    must balance too (they do when every position is settled at every funding time, so all
    entries are equal; otherwise ``ValueError``: a lazily settled account would make the pool
    lend).

    Rounding: each account's exact delta ``-q x (cumulative - last) / 10**9`` is rounded
    toward **minus infinity** -- payers round away from zero (pay up to 1 minor unit more),
    receivers toward zero (receive up to 1 minor unit less). The remainder goes to
    ``remainder_account`` (the engine's funding pool), so the deltas, the pool's included,
    sum to exactly zero. The pool's delta is the sum of what was rounded off, each part in
    ``[0, 1)``, so it is always ``>= 0`` and below the number of accounts: the pool never
    pays out of nothing.

    Returns ``{account: delta}`` for every account of ``positions`` (0 for a flat one) and
    ``remainder_account``, in sorted order. ``remainder_account`` may not hold a position.
    """
    if positions.get(remainder_account, 0) != 0:
        raise ValueError(f"the remainder account {remainder_account!r} must not hold a position")
    accounts = sorted(positions)
    if remainder_account not in positions:
        insort(accounts, remainder_account)
    scale = FUNDING_SCALE
    deltas: dict[str, int] = {}
    net_lots = exact_owed = pool = 0  # lots, nano-minor units, minor units
    for account in accounts:
        lots = positions.get(account, 0)
        if lots == 0:
            deltas[account] = 0  # the remainder account's slot too: filled in below
            continue
        try:
            owed = lots * (cumulative - last_cumulative[account])
        except KeyError:
            raise ValueError(f"no last_cumulative for {account!r}") from None
        net_lots += lots
        exact_owed += owed
        paid = -(-owed // scale)  # ceil: the cash delta -paid is floor(-owed)
        deltas[account] = -paid
        pool += paid
    if net_lots != 0:
        raise ValueError(f"positions must sum to zero lots, they sum to {net_lots}")
    if exact_owed != 0:
        raise ValueError(
            "funding does not balance: accounts were settled from different index values; "
            "settle every position at every funding time"
        )
    deltas[remainder_account] = pool
    return deltas
