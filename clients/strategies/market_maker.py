"""A market maker: quotes both sides of one book around a fair price, skewed against its
inventory.

Fair price: the latest print of ``index`` (``on_index``), or — with ``index=None``, or before
the first print — the book's mid. Every requote (on each print of ``index`` when
``requote_on_index``, and on a timer every ``requote_ns`` when set) cancels all the bot's
resting orders in the instrument and posts ``levels`` bids and asks of ``size`` lots:

    bid_k = fair - half_spread - k * level_step - skew
    ask_k = fair + half_spread + k * level_step - skew
    skew  = clamp(position * skew_per_lot, -max_skew, +max_skew)

so a long inventory lowers both quotes (sells more readily, buys less readily) and a short one
raises them. At ``max_position`` lots (either way) the side that would add to the position is
not quoted; under a collateral call only the side that reduces it is (the exchange refuses the
other). A fair price older than ``max_fair_age_ns`` is stale: quotes are pulled and none are
posted until a fresh one arrives.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from clients.bot import BookView, IndexPrint, MarginCall
from clients.context import Context
from clients.strategies.base import HOUR_NS, Strategy, StrategyParams


class MarketMakerParams(StrategyParams):
    """Parameters of :class:`MarketMaker`."""

    instrument: str = Field(default="H100-PERP", description="the book quoted")
    index: str | None = Field(
        default="H100-RENTAL",
        description="index whose prints are the fair price (same ticks as the book); "
        "None: the book's mid",
    )
    levels: int = Field(default=2, ge=1, le=20, description="quotes per side")
    size: int = Field(default=10, ge=1, description="lots per quote")
    half_spread: int = Field(default=40, ge=1, description="ticks from fair to the best quotes")
    level_step: int = Field(default=10, ge=1, description="ticks between a side's levels")
    skew_per_lot: int = Field(
        default=1, ge=0, description="ticks both quotes move against each lot of inventory"
    )
    max_skew: int = Field(default=200, ge=0, description="largest skew, ticks")
    max_position: int = Field(
        default=500,
        ge=1,
        description="inventory (lots, either way) beyond which it quotes "
        "only the side that reduces it",
    )
    requote_ns: int | None = Field(
        default=None,
        ge=1,
        description="requote timer, ns (None: only on index prints; needed without an index)",
    )
    requote_on_index: bool = Field(default=True, description="requote on every print of index")
    max_fair_age_ns: int = Field(
        default=2 * HOUR_NS, ge=1, description="a fair price older than this (ns) is stale"
    )

    @model_validator(mode="after")
    def _something_requotes(self) -> MarketMakerParams:
        if self.requote_ns is None and (self.index is None or not self.requote_on_index):
            raise ValueError("requote_ns is needed when quotes do not follow index prints")
        return self


class MarketMaker(Strategy):
    """Two-sided quotes around the index (or mid) with an inventory skew."""

    Params = MarketMakerParams
    params: MarketMakerParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.books = (self.params.instrument,)
        self.fair: int | None = None
        self.fair_t = 0
        self.requotes = 0
        self.quoted: list[tuple[int, int, int, int]] = []  # (t, position, best bid, best ask)
        self.called = False  # under a collateral call: quote only the reducing side
        self.halted = False  # defaulted: quote nothing

    def on_start(self, ctx: Context) -> None:
        if self.params.requote_ns is not None:
            ctx.schedule(ctx.now + self.params.requote_ns, "requote")

    def on_index(self, ctx: Context, index: IndexPrint) -> None:
        if index.index != self.params.index:
            return
        self.fair, self.fair_t = index.value, ctx.now
        if self.params.requote_on_index:
            self.requote(ctx)

    def on_book(self, ctx: Context, book: BookView) -> None:
        if self.params.index is None and book.mid is not None:
            self.fair, self.fair_t = book.mid, ctx.now

    def on_timer(self, ctx: Context, tag) -> None:
        if tag != "requote":
            return
        self.requote(ctx)
        ctx.schedule(ctx.now + self.params.requote_ns, "requote")

    def on_margin_call(self, ctx: Context, call: MarginCall) -> None:
        # under a call the exchange accepts only orders that reduce the position (a raised
        # call, ``increased``, is still a call: treated the same)
        if call.status in ("called", "increased"):
            self.called = True
            ctx.cancel_all(self.params.instrument)
        elif call.status == "cured":
            self.called = False
        elif call.status == "defaulted":
            self.halted = True

    def skew(self, position: int) -> int:
        """Ticks both quotes move down (up, when negative) for ``position`` lots."""
        p = self.params
        return max(-p.max_skew, min(p.max_skew, position * p.skew_per_lot))

    def requote(self, ctx: Context) -> None:
        """Replace every quote: cancel the old ones, post fresh ones around the fair price."""
        p = self.params
        if self.halted:
            return
        if ctx.open_orders(p.instrument):
            ctx.cancel_all(p.instrument)
        fair = self.fair
        if fair is None and p.index is not None:  # before the first print: the mid, if any
            book = ctx.book(p.instrument)
            fair = book.mid if book is not None else None
        stale = self.fair is not None and ctx.now - self.fair_t > p.max_fair_age_ns
        if fair is None or stale:
            return  # nothing to quote around, or the fair price is stale
        position = ctx.positions().get(p.instrument, 0)
        skew = self.skew(position)
        bid = fair - p.half_spread - skew
        ask = fair + p.half_spread - skew
        for level in range(p.levels):
            step = level * p.level_step
            buys = position < 0 if self.called else position < p.max_position
            sells = position > 0 if self.called else position > -p.max_position
            if buys and bid - step >= 1:
                ctx.submit(p.instrument, "buy", bid - step, p.size)
            if sells and ask + step >= 1:
                ctx.submit(p.instrument, "sell", ask + step, p.size)
        self.requotes += 1
        self.quoted.append((ctx.now, position, bid, ask))
