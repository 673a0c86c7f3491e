"""A thinly capitalised guarantor: writes residual value protection for premium, and meets
collateral calls until it cannot.

**Writing.** For every configured offer it keeps one ask resting on the series: ``clip`` lots
(fewer if that would take it past ``max_contracts`` sold) at ``premium`` ticks — the premium per
GPU per period it charges. After a fill, and every ``requote_ns``, it re-posts, until it has
sold ``max_contracts`` on the series. The price is a fixed parameter (a thin guarantor prices
off its own model, not the exchange's ``on_mark``): set it a little above the series' model
premium at listing (``guarantor-spiral`` asks $32 and $24 against model premiums near $29 and
$22; the ``products`` scenario's scripted guarantor asks the mark + 5 ticks).

**Meeting calls.** When called for ``amount`` minor units (``on_margin_call``, status
``called``, or ``increased`` when a call is raised to a grown shortfall: ``amount`` is then
the whole new amount due) it cancels its asks and stops writing for good, then pays, in this
order:

a. cash it holds outside the exchange: deposits up to the amount from ``reserve``;
b. asset sales at a haircut: sells just enough of its ``assets`` (minor units, illiquid) that
   the proceeds ``sold x (1 - haircut_ppm / 1e6)`` (rounded down) cover what is still due, or
   all of them, and deposits the proceeds; the assets sold are gone;
c. when both are exhausted it cannot pay the rest and does nothing: the exchange declares the
   default at the call's deadline.

A series that has expired (or is unknown) is dropped after its first rejection. A later call
(after a cure) is met the same way from what is left. Every step is recorded in
``self.actions`` as ``(t, step, amount)`` — ``("reserve", deposited)``, ``("asset_sale",
assets sold)`` with ``("deposit_proceeds", proceeds)``, ``("unable", still due)``,
``("called", amount)``, ``("increased", amount)``, ``("cured", 0)``, ``("defaulted",
missed)`` — and nothing here raises.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from clients.bot import FillReport, MarginCall, OrderUpdate
from clients.context import Context
from clients.strategies.base import HOUR_NS, InFlight, Strategy, StrategyParams, resting


class Offer(BaseModel):
    """Protection offered on one series."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instrument: str = Field(description="the swap series")
    premium: int = Field(ge=1, description="ask price, premium ticks per GPU per period")
    max_contracts: int = Field(ge=1, description="most protection sold on the series, lots")
    clip: int = Field(default=100, ge=1, description="lots per resting ask")


class GuarantorParams(StrategyParams):
    """Parameters of :class:`Guarantor`."""

    offers: list[Offer] = Field(
        default_factory=lambda: [
            Offer(instrument="H100-RVS-SHORT", premium=320, max_contracts=200),
            Offer(instrument="H100-RVS-LONG", premium=30, max_contracts=200),
        ],
        description="the series it writes protection on",
    )
    reserve: int = Field(default=0, ge=0, description="cash held outside the exchange, minor units")
    assets: int = Field(
        default=0, ge=0, description="illiquid assets it can sell, minor units (book value)"
    )
    haircut_ppm: int = Field(
        default=300_000, ge=0, lt=1_000_000, description="discount on asset sales, ppm"
    )
    start_ns: int = Field(default=0, ge=0, description="when it starts offering, ns")
    requote_ns: int = Field(default=HOUR_NS, ge=1, description="time between re-posts, ns")


class Guarantor(Strategy):
    """Sells RVS protection; meets calls from reserve, then asset sales; then defaults."""

    Params = GuarantorParams
    params: GuarantorParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.books = tuple(o.instrument for o in self.params.offers)
        self.reserve = self.params.reserve
        self.assets = self.params.assets
        self.writing = True  # false once called (or defaulted): no new protection
        self.in_flight = InFlight()
        self.sold: dict[str, int] = {o.instrument: 0 for o in self.params.offers}
        self.actions: list[tuple[int, str, int]] = []
        self.closed: list[str | None] = []  # series that expired or are unknown

    # ------------------------------------------------------------------ writing
    def on_start(self, ctx: Context) -> None:
        ctx.schedule(max(ctx.now, self.params.start_ns), "offer")

    def on_timer(self, ctx: Context, tag) -> None:
        if tag != "offer" or not self.writing:
            return
        self.offer(ctx)
        ctx.schedule(ctx.now + self.params.requote_ns, "offer")

    def on_fill(self, ctx: Context, fill: FillReport) -> None:
        if fill.instrument in self.sold and fill.side == "sell":
            self.sold[fill.instrument] += fill.qty
        if self.writing and ctx.now >= self.params.start_ns:
            self.offer(ctx)

    def on_order(self, ctx: Context, update: OrderUpdate) -> None:
        self.in_flight.update(update)
        reason = update.reason or ""
        if update.status == "rejected" and ("expired" in reason or "unknown instr" in reason):
            self.closed.append(update.instrument)  # the series is gone: stop offering it

    def offer(self, ctx: Context) -> None:
        """Post an ask on every series with none resting and protection left to write."""
        positions = ctx.positions()
        for offer in self.params.offers:
            name = offer.instrument
            if name in self.closed or self.in_flight.busy(name) or resting(ctx, name, "sell"):
                continue
            written = max(-positions.get(name, 0), 0)
            qty = min(offer.clip, offer.max_contracts - written)
            if qty > 0:
                self.in_flight.sent(ctx.submit(name, "sell", offer.premium, qty), name)

    # ------------------------------------------------------------------ calls
    def on_margin_call(self, ctx: Context, call: MarginCall) -> None:
        # a raise (``increased``: the shortfall grew, the deadline did not move) is met like
        # a call: ``amount`` is the whole of what is due now, deposits already made counted
        if call.status in ("called", "increased"):
            self.actions.append((ctx.now, call.status, call.amount))
            if self.writing:
                self.writing = False
                ctx.cancel_all()
            self.meet(ctx, call.amount)
        elif call.status == "cured":
            self.actions.append((ctx.now, "cured", 0))
        elif call.status == "defaulted":
            self.writing = False
            self.actions.append((ctx.now, "defaulted", call.amount))

    def meet(self, ctx: Context, due: int) -> None:
        """Pay ``due`` minor units: reserve first, then asset sales at the haircut."""
        pay = min(self.reserve, due)
        if pay > 0:
            self.reserve -= pay
            due -= pay
            ctx.deposit(pay)
            self.actions.append((ctx.now, "reserve", pay))
        if due > 0 and self.assets > 0:
            keep_ppm = 1_000_000 - self.params.haircut_ppm
            needed = -(-due * 1_000_000 // keep_ppm)  # assets whose proceeds cover ``due``
            sold = min(needed, self.assets)
            proceeds = sold * keep_ppm // 1_000_000
            self.assets -= sold
            self.actions.append((ctx.now, "asset_sale", sold))
            if proceeds > 0:
                due -= min(proceeds, due)
                ctx.deposit(proceeds)
                self.actions.append((ctx.now, "deposit_proceeds", proceeds))
        if due > 0:
            self.actions.append((ctx.now, "unable", due))
