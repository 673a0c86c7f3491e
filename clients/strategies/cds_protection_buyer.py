"""A CDS protection buyer: a lender to the reference entity hedging a share of its loan.

It holds a (simulated, off-exchange) loan of ``loan`` minor units to the series' reference
entity and buys protection on a share of it, never more than the loan:

    share     = min(max_hedge_ppm, hedge_ppm + step_ppm x steps)          (ppm of the loan)
    steps     = max(0, (mark - anchor) // widen_ticks)      (whole widenings past the anchor)
    target    = loan x share // 1,000,000 // notional                    (contracts, rounded down)

``anchor`` is the ``anchor`` parameter, or the first mark it sees; ``mark`` the latest mark of
the series (any source). The share **ratchets**: it is the largest share any mark has given so
far, so a widening adds protection and a tightening never removes it. The bot **never sells
protection**: it sends only buys, and a position at or above its target is left alone.

From ``start_ns`` a **round** runs whenever its book or the mark changes (and every
``retry_ns`` too, when set): when it lacks contracts (target less its position) and the book
offers protection at or below its limit ``min(mark + pay_up, max_spread)`` ticks, it sends one
immediate-or-cancel **buy** for what it lacks at that limit: it lifts the offers up to that
spread, and the rest waits for the next offer (IOC: no bid left resting at a stale price, and
no order sent into a book with nothing to lift). Before its first mark, with a stale mark
(older than ``max_age_ns``) or with one order still in flight, a round sends nothing. Under a
collateral call it sends nothing until the call is cured (the exchange would accept only
orders that reduce the position), and it meets the call from its outside ``reserve`` as far as
that goes; after its account defaults, or once the series is settled or gone, it stops.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from clients.bot import MarginCall
from clients.context import Context
from clients.strategies.cds_common import CdsParams, CdsStrategy

PPM = 1_000_000


class CdsProtectionBuyerParams(CdsParams):
    """Parameters of :class:`CdsProtectionBuyer` (and every CDS strategy's, see ``CdsParams``)."""

    loan: int = Field(
        default=10_000_000_000,
        ge=0,
        description="the loan to the reference entity that is hedged, minor units ($100m)",
    )
    notional: int = Field(
        default=100_000_000, ge=1, description="notional of one contract, minor units ($1m)"
    )
    hedge_ppm: int = Field(
        default=500_000, ge=0, le=PPM, description="share of the loan hedged at the anchor, ppm"
    )
    anchor: int | None = Field(
        default=None,
        ge=1,
        description="spread (ticks) the widening is measured from; None: the first mark",
    )
    widen_ticks: int = Field(
        default=100, ge=1, description="ticks of widening past the anchor that add step_ppm"
    )
    step_ppm: int = Field(
        default=100_000, ge=0, le=PPM, description="share added per widen_ticks of widening, ppm"
    )
    max_hedge_ppm: int = Field(
        default=PPM, ge=0, le=PPM, description="the largest share of the loan hedged, ppm"
    )
    pay_up: int = Field(default=25, ge=0, description="ticks over the mark the buyer pays at most")
    max_spread: int = Field(
        default=5_000, ge=1, description="the highest running spread it ever pays, ticks"
    )
    start_ns: int = Field(default=0, ge=0, description="when buying starts, ns")
    retry_ns: int | None = Field(
        default=None,
        ge=1,
        description="time between extra buying rounds, ns (None: rounds only when the book "
        "or the mark changes)",
    )
    reserve: int = Field(
        default=0, ge=0, description="cash outside the exchange for collateral calls, minor units"
    )

    @model_validator(mode="after")
    def _shares_in_order(self) -> CdsProtectionBuyerParams:
        if self.hedge_ppm > self.max_hedge_ppm:
            raise ValueError("hedge_ppm must not exceed max_hedge_ppm")
        return self


class CdsProtectionBuyer(CdsStrategy):
    """Buys CDS protection on a share of a loan to the reference entity; never sells it."""

    Params = CdsProtectionBuyerParams
    params: CdsProtectionBuyerParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.anchor: int | None = self.params.anchor
        self.share = self.params.hedge_ppm  # ppm of the loan hedged; only ever rises
        self.bought = 0  # contracts filled
        self.reserve = self.params.reserve  # outside cash left, minor units
        self.started = False  # start_ns has come (the first "protect" timer fired)

    # ------------------------------------------------------------------ sizing
    def share_at(self, mark: int) -> int:
        """The share of the loan (ppm) a mark of ``mark`` ticks calls for."""
        p = self.params
        anchor = self.anchor if self.anchor is not None else mark
        steps = max(0, (mark - anchor) // p.widen_ticks)
        return min(p.max_hedge_ppm, p.hedge_ppm + p.step_ppm * steps)

    def target(self) -> int:
        """Contracts wanted: the current share of the loan, rounded down (never over-hedged)."""
        p = self.params
        return p.loan * self.share // PPM // p.notional

    def on_spread(self, ctx: Context, implied: bool) -> None:
        if self.mark is None:
            return
        if self.anchor is None:
            self.anchor = self.mark
        self.share = max(self.share, self.share_at(self.mark))
        self.round(ctx)

    # ------------------------------------------------------------------ callbacks
    def on_start(self, ctx: Context) -> None:
        ctx.schedule(max(ctx.now, self.params.start_ns), "protect")

    def on_timer(self, ctx: Context, tag) -> None:
        if tag != "protect":
            return
        self.started = True
        self.round(ctx)
        if self.can_trade() and self.params.retry_ns is not None:
            ctx.schedule(ctx.now + self.params.retry_ns, "protect")

    def on_book(self, ctx: Context, book) -> None:
        if book.instrument == self.params.series:
            self.round(ctx)

    def on_fill(self, ctx: Context, fill) -> None:
        if fill.instrument == self.params.series and fill.side == "buy":
            self.bought += fill.qty

    def meet_call(self, ctx: Context, call: MarginCall) -> None:
        pay = min(self.reserve, call.amount)
        if pay > 0:  # meet the call from outside cash, as far as it goes
            self.reserve -= pay
            ctx.deposit(pay)

    # ------------------------------------------------------------------ buying
    def round(self, ctx: Context) -> None:
        """One buying round: an IOC buy for the contracts still lacking, if the book offers
        any at its limit."""
        p = self.params
        if not self.started or self.called or not self.can_trade():
            return
        if self.in_flight.busy(p.series):
            return
        mark = self.fresh_mark(ctx)
        if mark is None:
            return  # no spread to price against
        lacking = self.target() - self.position(ctx)
        if lacking <= 0:
            return  # hedged (or over: it never sells)
        price = min(mark + p.pay_up, p.max_spread)
        _, ask = self.top(ctx)
        if ask is None or ask > price:
            return  # nothing on offer at its limit
        ref = ctx.submit(p.series, "buy", price, lacking, tif="ioc")
        self.in_flight.sent(ref, p.series)
