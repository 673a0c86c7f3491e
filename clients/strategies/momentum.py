"""A trend follower: a moving-average crossover on trade prices or index prints.

Every observation (a trade in ``instrument`` when ``source="trades"``, a print of ``index``
when ``source="index"``) joins a window of the last ``slow`` observations. Once the window is
full the signal is +1 when the mean of the last ``fast`` observations is above the mean of the
window, -1 when below, 0 when equal (compared exactly, in integers). The target position is
``signal x max_position`` lots; the bot sends a market order of at most ``clip`` lots toward
it, then waits ``cooldown_ns`` before the next one (its order needs the latency to arrive and
fill). A zero signal keeps the position.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from pydantic import Field, model_validator

from clients.bot import IndexPrint, MarginCall, Trade
from clients.context import Context
from clients.strategies.base import HOUR_NS, Strategy, StrategyParams


class MomentumParams(StrategyParams):
    """Parameters of :class:`Momentum`."""

    instrument: str = Field(default="H100-PERP", description="the perpetual traded")
    source: Literal["index", "trades"] = Field(
        default="index", description="observations: prints of index, or trades in instrument"
    )
    index: str = Field(default="H100-RENTAL", description="the index observed (source=index)")
    fast: int = Field(default=6, ge=1, description="observations in the fast average")
    slow: int = Field(default=24, ge=2, description="observations in the slow average")
    clip: int = Field(default=10, ge=1, description="largest order, lots")
    max_position: int = Field(default=50, ge=1, description="position limit, lots either way")
    cooldown_ns: int = Field(default=HOUR_NS // 2, ge=1, description="time between orders, ns")

    @model_validator(mode="after")
    def _windows(self) -> MomentumParams:
        if self.fast >= self.slow:
            raise ValueError("fast must be shorter than slow")
        return self


class Momentum(Strategy):
    """Moving-average crossover with a position limit."""

    Params = MomentumParams
    params: MomentumParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.books = ()  # trades and prints reach every bot; no book views needed
        self.window: deque[int] = deque(maxlen=self.params.slow)
        self.signal = 0
        self.next_order_at = 0
        self.halted = False
        self.signals: list[tuple[int, int]] = []  # (t, signal) at every change

    def on_trade(self, ctx: Context, trade: Trade) -> None:
        if self.params.source == "trades" and trade.instrument == self.params.instrument:
            self.observe(ctx, trade.price)

    def on_index(self, ctx: Context, index: IndexPrint) -> None:
        if self.params.source == "index" and index.index == self.params.index:
            self.observe(ctx, index.value)

    def on_margin_call(self, ctx: Context, call: MarginCall) -> None:
        if call.status == "defaulted":
            self.halted = True

    def observe(self, ctx: Context, price: int) -> None:
        p = self.params
        self.window.append(price)
        if len(self.window) < p.slow:
            return
        fast_sum = sum(list(self.window)[-p.fast :])
        slow_sum = sum(self.window)
        # fast_sum / fast vs slow_sum / slow, in integers
        diff = fast_sum * p.slow - slow_sum * p.fast
        signal = (diff > 0) - (diff < 0)
        if signal != self.signal:
            self.signals.append((ctx.now, signal))
        self.signal = signal
        self.trade(ctx)

    def trade(self, ctx: Context) -> None:
        p = self.params
        if self.halted or self.signal == 0 or ctx.now < self.next_order_at:
            return
        position = ctx.positions().get(p.instrument, 0)
        gap = self.signal * p.max_position - position
        if gap == 0:
            return
        qty = min(abs(gap), p.clip)
        ctx.submit(p.instrument, "buy" if gap > 0 else "sell", 0, qty, order_type="market")
        self.next_order_at = ctx.now + p.cooldown_ns
