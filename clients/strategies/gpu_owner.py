"""A GPU owner: protects its fleet's resale value with swaps and hedges its rental income with
perpetuals.

From ``start_ns`` it buys ``coverage_ppm`` of its ``gpus`` in protection on every configured
series (see :mod:`clients.strategies.protection`: limit buys at the series' maximum premium),
and sells the perpetual ``perp`` short against the rental income it expects over the next
``hedge_hours``: the fleet earns ``gpus x hedge_hours`` GPU-hours of rent, one contract covers
``gpu_hours_per_contract`` of them, so the short target is

    hedge_lots = gpus x hedge_hours x hedge_ratio_ppm / 1e6 / gpu_hours_per_contract

(rounded down), reached with market sells of at most ``hedge_clip`` lots per round (every
``retry_ns``), so it does not sweep a thin book at once. A falling rental index then pays the
short what the fleet loses in rent.
"""

from __future__ import annotations

from pydantic import Field

from clients.context import Context
from clients.strategies.protection import ProtectionBuyer, ProtectionParams


class GpuOwnerParams(ProtectionParams):
    """Parameters of :class:`GpuOwner` (and the protection buyer's, see ``ProtectionParams``)."""

    gpus: int = Field(default=40, ge=1, description="GPUs in the fleet")
    coverage_ppm: int = Field(
        default=1_000_000, ge=0, le=1_000_000, description="share of the fleet protected, ppm"
    )
    perp: str | None = Field(
        default="H100-PERP", description="perpetual shorted against rental income (None: none)"
    )
    hedge_ratio_ppm: int = Field(
        default=500_000, ge=0, le=1_000_000, description="share of rental income hedged, ppm"
    )
    hedge_hours: int = Field(default=720, ge=1, description="hours of future rent hedged")
    gpu_hours_per_contract: int = Field(
        default=100, ge=1, description="GPU-hours one perpetual contract covers"
    )
    hedge_clip: int = Field(default=25, ge=1, description="largest hedge order, lots")


class GpuOwner(ProtectionBuyer):
    """Buys RVS protection on its fleet and shorts the rental perpetual."""

    Params = GpuOwnerParams
    params: GpuOwnerParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.params.perp is not None:
            self.books = (*self.books, self.params.perp)

    def target(self, series: str) -> int:
        p = self.params
        return self.contracts_for(p.gpus, p.coverage_ppm, p.gpus_per_contract)

    @property
    def hedge_lots(self) -> int:
        """The short perpetual position wanted, lots (positive)."""
        p = self.params
        return p.gpus * p.hedge_hours * p.hedge_ratio_ppm // (1_000_000 * p.gpu_hours_per_contract)

    def round(self, ctx: Context) -> None:
        super().round(ctx)
        p = self.params
        if p.perp is None or self.called or self.defaulted or self.in_flight.busy(p.perp):
            return
        short = -ctx.positions().get(p.perp, 0)
        lacking = self.hedge_lots - short
        if lacking > 0:
            qty = min(lacking, p.hedge_clip)
            ref = ctx.submit(p.perp, "sell", 0, qty, order_type="market")
            self.in_flight.sent(ref, p.perp)
