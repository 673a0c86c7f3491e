"""A noise trader: random orders at random (seeded, Poisson) times.

Order times form a Poisson process: the gap to the next order is exponential with mean
``mean_interval_ns`` (drawn from ``ctx.rng``, so a seed fixes the whole flow). Each order picks
a side with even odds and a size uniformly in ``min_qty..max_qty`` lots. With probability
``limit_ppm`` (parts per million) it is a limit order at the reference price (the book's mid,
else the last trade, else the last print of ``index``) plus or minus a uniform offset of up to
``limit_offset`` ticks, on either side of the reference (so some cross and some rest); otherwise
a market order. Resting limit orders beyond ``max_open_orders`` are cancelled, oldest first.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from clients.bot import BookView, IndexPrint, Trade
from clients.context import Context
from clients.strategies.base import HOUR_NS, Strategy, StrategyParams


class NoiseTakerParams(StrategyParams):
    """Parameters of :class:`NoiseTaker`."""

    instrument: str = Field(default="H100-PERP", description="the book traded")
    index: str | None = Field(
        default="H100-RENTAL", description="index used as the reference before any trade/mid"
    )
    mean_interval_ns: int = Field(
        default=HOUR_NS, ge=1, description="mean time between orders, ns (exponential gaps)"
    )
    start_ns: int = Field(default=0, ge=0, description="first order no earlier than this, ns")
    min_qty: int = Field(default=1, ge=1, description="smallest order, lots")
    max_qty: int = Field(default=10, ge=1, description="largest order, lots")
    limit_ppm: int = Field(
        default=0, ge=0, le=1_000_000, description="probability of a limit order, ppm"
    )
    limit_offset: int = Field(
        default=50, ge=0, description="largest distance of a limit price from the reference, ticks"
    )
    tif: Literal["gtc", "ioc"] = Field(default="gtc", description="time in force of limits")
    max_open_orders: int = Field(default=5, ge=0, description="resting limit orders kept")

    @model_validator(mode="after")
    def _sizes(self) -> NoiseTakerParams:
        if self.max_qty < self.min_qty:
            raise ValueError("max_qty must be at least min_qty")
        return self


class NoiseTaker(Strategy):
    """Random market (and optionally limit) orders at seeded Poisson times."""

    Params = NoiseTakerParams
    params: NoiseTakerParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.books = (self.params.instrument,)
        self.mid: int | None = None
        self.last_trade: int | None = None
        self.last_index: int | None = None
        self.orders_sent = 0

    def on_start(self, ctx: Context) -> None:
        self._next(ctx, max(ctx.now, self.params.start_ns))

    def _next(self, ctx: Context, after: int) -> None:
        gap = int(ctx.rng.exponential(self.params.mean_interval_ns))
        ctx.schedule(after + max(gap, 1), "order")

    def on_book(self, ctx: Context, book: BookView) -> None:
        if book.mid is not None:
            self.mid = book.mid

    def on_trade(self, ctx: Context, trade: Trade) -> None:
        if trade.instrument == self.params.instrument:
            self.last_trade = trade.price

    def on_index(self, ctx: Context, index: IndexPrint) -> None:
        if index.index == self.params.index:
            self.last_index = index.value

    def reference(self) -> int | None:
        """The price limit orders are placed around, ticks."""
        for price in (self.mid, self.last_trade, self.last_index):
            if price is not None:
                return price
        return None

    def on_timer(self, ctx: Context, tag) -> None:
        if tag != "order":
            return
        p = self.params
        rng = ctx.rng
        # draw everything every time, so the stream of draws does not depend on the book
        side = "buy" if rng.random() < 0.5 else "sell"
        qty = int(rng.integers(p.min_qty, p.max_qty + 1))
        limit = int(rng.integers(0, 1_000_000)) < p.limit_ppm
        offset = int(rng.integers(-p.limit_offset, p.limit_offset + 1))
        reference = self.reference()
        if limit and reference is not None:
            price = max(1, reference + offset)
            open_orders = ctx.open_orders(p.instrument)
            excess = len(open_orders) + 1 - p.max_open_orders
            for order in open_orders[: max(excess, 0)]:
                ctx.cancel(order.order_id)
            if p.max_open_orders or p.tif == "ioc":
                ctx.submit(p.instrument, side, price, qty, tif=p.tif)
        else:
            ctx.submit(p.instrument, side, 0, qty, order_type="market")
        self.orders_sent += 1
        self._next(ctx, ctx.now)
