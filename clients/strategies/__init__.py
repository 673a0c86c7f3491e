"""The reference strategies (issue #6; the CDS ones, issue #21), by the names scenario files use.

Every strategy is a :class:`~clients.bot.Bot` built from keyword parameters validated by its
``Params`` model (unknown fields refused): ``MarketMaker(size=10)``, or from a scenario's
mapping with :func:`make_bot`. ``docs/strategies.md`` describes each one.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from clients.bot import Bot
from clients.strategies.base import Strategy, StrategyParams
from clients.strategies.cds_basis import CdsBasisTrader
from clients.strategies.cds_dealer import CdsDealer
from clients.strategies.cds_protection_buyer import CdsProtectionBuyer
from clients.strategies.gpu_owner import GpuOwner
from clients.strategies.guarantor import Guarantor
from clients.strategies.lender import Lender
from clients.strategies.market_maker import MarketMaker
from clients.strategies.momentum import Momentum
from clients.strategies.noise_taker import NoiseTaker
from clients.strategies.speculator import Speculator

#: Strategy classes by snake_case name.
STRATEGIES: dict[str, type[Bot]] = {
    "market_maker": MarketMaker,
    "noise_taker": NoiseTaker,
    "momentum": Momentum,
    "gpu_owner": GpuOwner,
    "lender": Lender,
    "guarantor": Guarantor,
    "speculator": Speculator,
    "cds_protection_buyer": CdsProtectionBuyer,
    "cds_basis_trader": CdsBasisTrader,
    "cds_dealer": CdsDealer,
}


def make_bot(strategy: str, params: dict[str, Any] | None = None) -> Bot:
    """Build the bot ``strategy`` with ``params`` (a mapping of its parameters).

    Raises ``ValueError`` naming the strategy and, for bad parameters, the field and why.
    """
    cls = STRATEGIES.get(strategy)
    if cls is None:
        raise ValueError(
            f"unknown strategy {strategy!r}; known strategies: {', '.join(sorted(STRATEGIES))}"
        )
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"strategy {strategy!r}: params must be a mapping, got {params!r}")
    try:
        return cls(**params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'params'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(f"strategy {strategy!r}: bad parameters: {problems}") from None


__all__ = [
    "STRATEGIES",
    "CdsBasisTrader",
    "CdsDealer",
    "CdsProtectionBuyer",
    "GpuOwner",
    "Guarantor",
    "Lender",
    "MarketMaker",
    "Momentum",
    "NoiseTaker",
    "Speculator",
    "Strategy",
    "StrategyParams",
    "make_bot",
]
