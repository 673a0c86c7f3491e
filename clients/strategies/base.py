"""What every reference strategy shares: validated parameters and order bookkeeping.

A strategy is a :class:`~clients.bot.Bot` whose parameters are a pydantic model (``Params``,
unknown fields refused). It is constructed from keyword arguments only —
``MarketMaker(instrument="H100-PERP", size=10)`` — which is also how a scenario file's
``params`` mapping reaches it (``make_bot`` in :mod:`clients.strategies`). The validated
parameters are ``bot.params``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from clients.bot import Bot, OrderUpdate
from clients.context import Context

HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: unknown fields are refused, models are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Strategy(Bot):
    """A bot with validated parameters: ``Strategy(**params)``.

    Raises ``pydantic.ValidationError`` (a ``ValueError``) naming the bad field.
    """

    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, **params: Any) -> None:
        self.params = self.Params(**params)


class InFlight:
    """Orders sent but not yet acknowledged, so a bot does not send the same order twice while
    the first is still travelling (its commands take the bot's latency to arrive).

    An order is in flight from :meth:`sent` until an ``on_order`` update for it arrives:
    ``accepted`` (then it has filled, rested or been cancelled, and the account view shows
    which) or ``rejected``. A command the exchange rejects before it becomes an order carries
    no ``ref``; such a rejection clears every order in flight in the instrument it names.
    """

    def __init__(self) -> None:
        self._refs: dict[int, str] = {}  # ref -> instrument

    def sent(self, ref: int, instrument: str) -> None:
        self._refs[ref] = instrument

    def update(self, update: OrderUpdate) -> None:
        if update.ref is not None:
            if update.status in ("accepted", "rejected"):
                self._refs.pop(update.ref, None)
        elif update.status == "rejected":
            for ref in [r for r, i in self._refs.items() if i == update.instrument]:
                del self._refs[ref]

    def busy(self, instrument: str) -> bool:
        return instrument in self._refs.values()


def resting(ctx: Context, instrument: str, side: str) -> int:
    """Lots the bot has resting on one side of one book."""
    return sum(o.qty for o in ctx.open_orders(instrument) if o.side == side)
