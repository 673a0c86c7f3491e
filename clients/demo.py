"""The ``demo`` session of ``gpuex serve``: the products market with two small bots.

The market is the built-in ``products`` scenario's (an H100 rental perpetual and two residual
value swaps on the seed calibrations; ``exchange.sessions.scenario_products``), without its scripted
participants: instead, :class:`DemoMaker` quotes the perpetual for account ``maker`` and
:class:`DemoTaker` trades against it for account ``taker``. Either can be served remotely
(``gpuex serve demo --remote maker``); ``examples/remote_market_maker.py`` is
:class:`DemoMaker` written against the bare protocol, and gives the same log.
"""

from __future__ import annotations

from clients.bot import BookView, Bot, IndexPrint
from clients.context import Context
from clients.gateway import BotEntry
from clients.latency import Latency
from exchange.sessions.scenario_products import HOUR_NS, ProductsScenario

PERP = "H100-PERP"
INDEX = "H100-RENTAL"


class DemoMaker(Bot):
    """Quotes ``size`` lots each side of the perpetual, ``spread`` ticks around every print of
    the rental index (cancelling its previous quotes first)."""

    books = (PERP,)

    def __init__(self, spread: int = 30, size: int = 10) -> None:
        self.spread, self.size = spread, size

    def on_index(self, ctx: Context, index: IndexPrint) -> None:
        if index.index != INDEX:
            return
        ctx.cancel_all(PERP)
        ctx.submit(PERP, "buy", max(index.value - self.spread, 1), self.size)
        ctx.submit(PERP, "sell", index.value + self.spread, self.size)


class DemoTaker(Bot):
    """Every ``every_ns`` (plus a random wait of up to as much again) sends a market order
    of 1-3 lots on a random side, leaning against its position beyond ``max_position``."""

    books = (PERP,)

    def __init__(self, every_ns: int = HOUR_NS // 2, max_position: int = 30) -> None:
        self.every_ns, self.max_position = every_ns, max_position
        self.filled = 0

    def on_start(self, ctx: Context) -> None:
        ctx.schedule(ctx.now + self.every_ns, ("trade", 0))

    def on_timer(self, ctx: Context, tag) -> None:
        kind, count = tag
        book: BookView | None = ctx.book(PERP)
        if kind == "trade" and book is not None and book.mid is not None:
            position = ctx.positions().get(PERP, 0)
            if position > self.max_position:
                side = "sell"
            elif position < -self.max_position:
                side = "buy"
            else:
                side = "buy" if ctx.rng.random() < 0.5 else "sell"
            ctx.submit(PERP, side, 0, int(ctx.rng.integers(1, 4)), order_type="market")
        wait = self.every_ns + int(ctx.rng.integers(0, self.every_ns))
        ctx.schedule(ctx.now + wait, ("trade", count + 1))

    def on_fill(self, ctx, fill) -> None:
        self.filled += fill.qty


def demo_session(days: int = 45) -> tuple[ProductsScenario, list[BotEntry]]:
    """The demo scenario and its bots (``maker``: :class:`DemoMaker`, ``taker``:
    :class:`DemoTaker`), each with 1 ms +- 0.5 ms latency."""
    latency = Latency(fixed_ns=1_000_000, jitter_ns=500_000)
    return ProductsScenario(days=days), [
        BotEntry("mm", "maker", DemoMaker(), latency),
        BotEntry("tk", "taker", DemoTaker(), latency),
    ]
