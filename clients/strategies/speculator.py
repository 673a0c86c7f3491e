"""A speculator: buys residual value protection without owning GPUs — a bet that resale values
fall below the floors.

Its size comes from a premium budget: ``budget`` minor units, split evenly across the
configured series, must pay ``periods`` premium periods at the series' maximum premium, so on
each series it buys

    contracts = (budget // n_series) // (max_premium x tick_value x periods)

where ``tick_value`` is the minor units one premium tick costs per contract per period (100 for
the ``H100-RVS-*`` series: $1 per GPU, one GPU a contract). Buying works as for every protection
buyer (:mod:`clients.strategies.protection`).
"""

from __future__ import annotations

from pydantic import Field, PositiveInt

from clients.strategies.protection import ProtectionBuyer, ProtectionParams


class SpeculatorParams(ProtectionParams):
    """Parameters of :class:`Speculator` (and the protection buyer's, see
    ``ProtectionParams``)."""

    series: dict[str, PositiveInt] = Field(
        default_factory=lambda: {"H100-RVS-LONG": 40},
        description="swap series -> the highest premium paid, ticks (per GPU per period)",
    )
    budget: int = Field(default=100_000_00, ge=0, description="premium budget, minor units")
    periods: int = Field(default=3, ge=1, description="premium periods the budget must pay")
    tick_value: int = Field(
        default=100, ge=1, description="minor units per premium tick per contract per period"
    )


class Speculator(ProtectionBuyer):
    """Buys RVS protection sized by a premium budget."""

    Params = SpeculatorParams
    params: SpeculatorParams

    def target(self, series: str) -> int:
        p = self.params
        share = p.budget // max(len(p.series), 1)
        return share // (p.series[series] * p.tick_value * p.periods)
