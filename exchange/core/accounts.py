"""Accounts and listings: the ledger's records of who holds what and what is listed.

An :class:`Account` holds cash in minor units (cents) and positions in lots per instrument; a
:class:`Listing` an instrument's spec, its order book and its marks (prices in ticks). The
engine (``exchange.kernel.engine``) keeps them; the risk room reads them through
``exchange.core.venue.Venue``. :func:`exposure_rates` says what one lot can be worth, for the
pre-trade limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from matching_core import OrderBook


@dataclass
class Account:
    """An account: cash in minor units and positions in lots per instrument."""

    name: str
    index: int  # the int64 account id the order books see
    cash: int = 0
    positions: dict[str, int] = field(default_factory=dict)
    basis: dict[str, int] = field(default_factory=dict)  # RVS premium basis, ticks x lots
    # variation-margin basis, minor units: what the position was last settled (or traded) at
    vm_basis: dict[str, int] = field(default_factory=dict)
    # lots on the book per instrument, [buying, selling]: a function of the books (so not in
    # the canonical state), kept for the pre-trade limits (``Exchange._check_limits``)
    open_lots: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Listing:
    """A listed instrument: its spec, its book and its state (prices in ticks)."""

    spec: Any  # InstrumentSpec | PerpSpec | RvsSpec
    book: OrderBook
    last_price: int | None = None
    mark: int | None = None
    funding_cum: int = 0  # perpetuals: cumulative funding, nano-minor units per lot
    expired: bool = False
    mark_model: Any = None  # perpetuals: the damped-basis mark (exchange.products.perp.MarkPrice)
    unit_value: int = 0  # value of one lot at the last mark, minor units (MarkPrice.amount)
    periods_left: int = 0  # swaps: premium periods still to pay at the last mark (MarkPrice.qty)
    premium_charged_ns: int | None = None  # swaps: when the last premium was charged (ns)
    limits: ExposureRates | None = None  # what a lot can be worth, for the pre-trade limits

    @property
    def kind(self) -> str:
        return self.spec.kind


class ExposureRates(NamedTuple):
    """What one lot of an instrument can be worth, minor units, for the pre-trade limits
    (docs/exchange.md, "Limits"): ``position`` per lot held, ``basis`` per tick x lot of a
    swap's premium basis, ``price`` the largest price in ticks (what the basis of a lot can
    move by in one fill), ``cash`` the most one lot ordered can move its account's cash by (a
    spot fill's notional and the larger fee, both at the largest price)."""

    position: int
    basis: int
    price: int
    cash: int


def exposure_rates(spec: Any) -> ExposureRates:
    """The :class:`ExposureRates` of an instrument spec. A spot or perpetual lot is worth at
    most ``max_price x tick_value`` (a perpetual's mark is clamped to ``max_price``). A swap
    lot's value (its protection, at most the floor's payoff) less the premiums still owed on its
    basis is at most ``floor x payoff_tick_value + |basis| x tick_value x periods``; premiums
    are ``basis x tick_value`` a period."""
    top = spec.max_price * spec.tick_value
    fee_bps = max(abs(spec.maker_fee_bps), abs(spec.taker_fee_bps))
    worst_fee = -(-top * fee_bps // 10_000)  # per lot, rounded up: >= fee() on any qty
    if spec.kind == "rvs":
        periods = len(spec.premium_dates())
        return ExposureRates(
            spec.floor * spec.payoff_tick_value,
            spec.tick_value * periods,
            spec.max_price,
            worst_fee,
        )
    return ExposureRates(top, 0, spec.max_price, worst_fee + (top if spec.kind == "spot" else 0))
