"""What the protection buyers (GPU owner, lender, speculator) share: buying residual value swap
protection up to a target on each series, at no more than a maximum premium.

A series trades by premium: the price is the premium per period per GPU, in the series' ticks
(``H100-RVS-*``: whole dollars per GPU per 30 days), and the buyer is long. From ``start_ns``,
and again every ``retry_ns``, for each series the buyer sends a
limit **buy** at its maximum premium for the lots it still lacks (target, less its position,
less what it already has resting): the order lifts every offer at or below that premium (at the
offers' prices), and what is not filled rests as a bid (``rest=True``, good till cancelled) or
is cancelled (``rest=False``, immediate or cancel) and retried later. A series that has expired
or is unknown is dropped after its first rejection. Under a collateral call the exchange accepts
only orders that reduce a position, so the buyer pauses until the call is cured; it meets the
call by depositing from its outside ``reserve`` (minor units), as far as that goes.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt

from clients.bot import FillReport, MarginCall, OrderUpdate
from clients.context import Context
from clients.strategies.base import HOUR_NS, InFlight, Strategy, StrategyParams, resting


class ProtectionParams(StrategyParams):
    """Parameters every protection buyer has."""

    series: dict[str, PositiveInt] = Field(
        default_factory=lambda: {"H100-RVS-SHORT": 350, "H100-RVS-LONG": 40},
        description="swap series -> the highest premium paid, ticks (per GPU per period)",
    )
    gpus_per_contract: int = Field(default=1, ge=1, description="GPUs one contract covers")
    start_ns: int = Field(default=0, ge=0, description="when buying starts, ns")
    retry_ns: int = Field(default=HOUR_NS, ge=1, description="time between buying rounds, ns")
    rest: bool = Field(default=True, description="leave the unfilled part resting as a bid")
    reserve: int = Field(
        default=0, ge=0, description="cash outside the exchange for collateral calls, minor units"
    )


class ProtectionBuyer(Strategy):
    """Buys protection on every configured series up to :meth:`target` contracts."""

    Params = ProtectionParams
    params: ProtectionParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.books = tuple(self.params.series)
        self.active = dict.fromkeys(self.params.series)  # ordered; dropped when unusable
        self.in_flight = InFlight()
        self.called = False
        self.defaulted = False
        self.bought: dict[str, int] = dict.fromkeys(self.params.series, 0)  # lots filled
        self.reserve = self.params.reserve  # outside cash left, minor units

    # ------------------------------------------------------------------ sizing
    def target(self, series: str) -> int:
        """Contracts wanted on ``series``."""
        raise NotImplementedError

    @staticmethod
    def contracts_for(gpus: int, coverage_ppm: int, gpus_per_contract: int) -> int:
        """Contracts that cover ``coverage_ppm`` of ``gpus`` GPUs (rounded up)."""
        covered = -(-gpus * coverage_ppm // 1_000_000)
        return -(-covered // gpus_per_contract)

    # ------------------------------------------------------------------ callbacks
    def on_start(self, ctx: Context) -> None:
        ctx.schedule(max(ctx.now, self.params.start_ns), "protect")

    def on_timer(self, ctx: Context, tag) -> None:
        if tag != "protect":
            return
        self.round(ctx)
        ctx.schedule(ctx.now + self.params.retry_ns, "protect")

    def on_order(self, ctx: Context, update: OrderUpdate) -> None:
        self.in_flight.update(update)
        if update.status == "rejected" and update.instrument in self.active:
            reason = update.reason or ""
            if "expired" in reason or "unknown instrument" in reason:
                del self.active[update.instrument]

    def on_fill(self, ctx: Context, fill: FillReport) -> None:
        if fill.instrument in self.bought and fill.side == "buy":
            self.bought[fill.instrument] += fill.qty

    def on_margin_call(self, ctx: Context, call: MarginCall) -> None:
        if call.status == "called":
            self.called = True
            pay = min(self.reserve, call.amount)
            if pay > 0:  # meet the call from outside cash, as far as it goes
                self.reserve -= pay
                ctx.deposit(pay)
        elif call.status == "cured":
            self.called = False
        elif call.status == "defaulted":
            self.defaulted = True

    # ------------------------------------------------------------------ buying
    def round(self, ctx: Context) -> None:
        """One buying round: every series short of its target gets a bid for the rest."""
        if self.called or self.defaulted:
            return
        positions = ctx.positions()
        for series in list(self.active):
            if self.in_flight.busy(series):
                continue
            lacking = self.target(series) - positions.get(series, 0) - resting(ctx, series, "buy")
            if lacking > 0:
                ref = ctx.submit(
                    series,
                    "buy",
                    self.params.series[series],
                    lacking,
                    tif="gtc" if self.params.rest else "ioc",
                )
                self.in_flight.sent(ref, series)
