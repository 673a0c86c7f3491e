"""A lender against GPU collateral: protects the collateral's resale value with swaps.

It holds ``collateral_gpus`` GPUs as collateral for its loans and, from ``start_ns``, buys
protection on ``coverage_ppm`` of them on every configured series (limit buys at the series'
maximum premium; see :mod:`clients.strategies.protection`). No perpetual hedge: a lender's
exposure is the resale value at the loans' maturity, not the rent.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt

from clients.strategies.protection import ProtectionBuyer, ProtectionParams


class LenderParams(ProtectionParams):
    """Parameters of :class:`Lender` (and the protection buyer's, see ``ProtectionParams``)."""

    series: dict[str, PositiveInt] = Field(
        default_factory=lambda: {"H100-RVS-LONG": 40},
        description="swap series -> the highest premium paid, ticks (per GPU per period)",
    )
    collateral_gpus: int = Field(default=10, ge=1, description="GPUs held as collateral")
    coverage_ppm: int = Field(
        default=1_000_000, ge=0, le=1_000_000, description="share of the collateral protected, ppm"
    )


class Lender(ProtectionBuyer):
    """Buys RVS protection on the GPUs it has lent against."""

    Params = LenderParams
    params: LenderParams

    def target(self, series: str) -> int:
        p = self.params
        return self.contracts_for(p.collateral_gpus, p.coverage_ppm, p.gpus_per_contract)
