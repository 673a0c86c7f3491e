"""The ``products`` scenario: one H100 rental perpetual and two H100 residual value swaps.

Indices (from the seed calibrations): the H100 rental index hourly and the H100 resale index
daily. Products: ``H100-PERP`` on the rental index, funded every 8 hours; two swap series on
the resale index paying monthly premiums — ``H100-RVS-SHORT`` (floor $20,000, maturing inside
the session, so it settles) and ``H100-RVS-LONG`` (floor $12,000, maturing after it).

Participants (scripted, seeded): a market maker quoting the perpetual around the index every
hour; a taker sending small market orders; a GPU owner buying protection from a guarantor that
offers both series; a lender buying a little more of the long series a month in.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, Field, ValidationError, model_validator

from exchange.core.clock import Simulator
from exchange.core.limits import (
    MAX_BALANCE,
    RawChecked,
    check_date,
    check_funding,
    check_market_actions,
    check_money,
    every_count,
)
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.products.index import CALIBRATIONS, IndexSpec
from exchange.products.perp import MarginTier, PerpSpec
from exchange.products.rvs import RvsSpec
from exchange.risk.margin_cycle import AuctionBidder, MarginConfig
from exchange.sessions.market import schedule_market

HOUR_NS = 3_600 * 10**9

H100_PERP = PerpSpec(
    name="H100-PERP",
    underlying="H100-RENTAL",
    gpu_hours_per_contract=100,
    tick_size="0.001",
    funding_interval_ns=8 * HOUR_NS,
    impact_notional_lots=20,
    mark_basis_halflife_ns=2 * HOUR_NS,
    margin_tiers=[
        MarginTier(
            max_position_lots=1_000, initial_margin_ppm=100_000, maintenance_margin_ppm=50_000
        ),
        MarginTier(
            max_position_lots=10_000, initial_margin_ppm=200_000, maintenance_margin_ppm=100_000
        ),
    ],
    max_price=1_000_000,
)


def _series(start: date, days: int) -> tuple[RvsSpec, RvsSpec]:
    short = RvsSpec(
        name="H100-RVS-SHORT",
        gpu="H100",
        resale_index="H100-RESALE",
        floor=20_000,
        listed=start,
        maturity=start + timedelta(days=days - 30),
        premium_period_days=30,
        gpus_per_contract=1,
        tick_size="1",
    )
    long = RvsSpec(
        name="H100-RVS-LONG",
        gpu="H100",
        resale_index="H100-RESALE",
        floor=12_000,
        listed=start,
        maturity=date(2027, 6, 30),
        premium_period_days=30,
        gpus_per_contract=1,
        tick_size="1",
    )
    return short, long


class ProductsScenario(RawChecked):
    """A perpetual and two swap series on the H100 calibrations.

    Attributes:
        start: the session's first day (its calendar epoch).
        days: session length in days (the short series matures 30 days before the end).
        maker_spread_ticks: the maker's half-spread around the index, ticks.
        maker_size: lots per maker quote.
        owner_contracts: protection the GPU owner buys on each series, contracts.
        guarantor_cash: the guarantor's capital, minor units (the seeds' $5.7 million).
        insurance_fund: the exchange's insurance fund at the start, minor units.
        default_fund_contribution: what every participant puts in the default fund, minor
            units (taken from its cash at the start).
        margin: margin cycle, cure period and the initial-margin grid.
    """

    model_config = ConfigDict(extra="forbid")

    #: User-facing sweep parameter names -> (field path, unit); see ``exchange.sessions.sweep``.
    SWEEP_ALIASES: ClassVar[dict[str, tuple[str, str]]] = {
        "guarantor.capital": ("guarantor_cash", "dollars"),
        "margin.cure_period": ("margin.cure_ns", "duration"),
        "margin.interval": ("margin.interval_ns", "duration"),
        "insurance.fund": ("insurance_fund", "dollars"),
        "owner.contracts": ("owner_contracts", "int"),
        "days": ("days", "int"),
    }

    name: Literal["products"] = "products"
    start: date = date(2024, 6, 1)
    days: int = Field(default=120, ge=45, le=2_000)
    maker_spread_ticks: int = Field(default=40, ge=1)
    maker_size: int = Field(default=25, ge=1)
    owner_contracts: int = Field(default=40, ge=1)
    guarantor_cash: int = Field(default=5_700_000_00, ge=0, le=MAX_BALANCE)
    insurance_fund: int = Field(default=250_000_00, ge=0, le=MAX_BALANCE)
    default_fund_contribution: int = Field(default=20_000_00, ge=0, le=MAX_BALANCE)
    margin: MarginConfig = Field(
        default_factory=lambda: MarginConfig(
            # the market maker stands in default auctions for up to 100 lots, 10 % off the mark
            auction_bidders=[AuctionBidder(account="maker", discount_ppm=100_000, max_lots=100)]
        )
    )

    @model_validator(mode="after")
    def _within_limits(self) -> ProductsScenario:
        check_date("start", self.start)
        check_date("the session's end (start + days)", self.start + timedelta(days=self.days))
        check_money(
            "the participants' cash and the insurance fund, together",
            sum(cash for _, cash in self._accounts()) + self.insurance_fund,
        )
        try:
            series = _series(self.start, self.days)
        except ValidationError as exc:
            raise ValueError(f"start: the swap series cannot be listed ({_first(exc)})") from None
        end = self.end_ns
        counts = {
            "index prints": sum(every_count(end, spec.interval_ns) + 1 for spec in self.indices()),
            "fundings": every_count(end, H100_PERP.funding_interval_ns),
            "premiums": sum(len(spec.premium_dates()) for spec in series),
            "margin.interval_ns (margin cycles)": every_count(end, self.margin.interval_ns),
        }
        check_market_actions(end, counts)
        check_funding("H100-PERP", H100_PERP, end)
        return self

    def _accounts(self) -> list[tuple[str, int]]:
        """The participants and their opening cash, minor units."""
        return [
            ("maker", 5_000_000_00),
            ("taker", 2_000_000_00),
            ("owner", 3_000_000_00),
            ("guarantor", self.guarantor_cash),
            ("lender", 2_000_000_00),
        ]

    @property
    def end_ns(self) -> int:
        return self.days * DAY_NS

    def indices(self) -> list[IndexSpec]:
        rental = CALIBRATIONS["H100-RENTAL"].model_copy(update={"interval_ns": HOUR_NS})
        resale = CALIBRATIONS["H100-RESALE"].model_copy(update={"interval_ns": DAY_NS})
        return [rental, resale]

    def setup(self, engine: Exchange) -> None:
        """List the products and open and fund the participants."""
        engine.epoch = self.start
        engine.margin = self.margin
        engine.list_instrument(H100_PERP)
        for series in _series(self.start, self.days):
            engine.list_instrument(series)
        for name, cash in self._accounts():
            engine.open_account(name, stp="cancel-resting")
            engine.credit(name, cash)
            if self.default_fund_contribution:
                engine.contribute(name, min(cash, self.default_fund_contribution))
        if self.insurance_fund:
            engine.fund_pool("insurance", self.insurance_fund)

    def schedule_market(self, engine: Exchange, sim: Simulator, seed: int) -> None:
        schedule_market(
            engine, sim, epoch=self.start, indices=self.indices(), end_ns=self.end_ns, seed=seed
        )

    def drive(self, engine: Exchange, sim: Simulator, seed: int) -> None:
        _Participants(self, engine, sim, seed).start()


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return error["msg"].removeprefix("Value error, ")


class _Participants:
    def __init__(self, s: ProductsScenario, engine: Exchange, sim: Simulator, seed: int):
        self.s, self.engine, self.sim = s, engine, sim
        self.rng = np.random.default_rng([seed, 4])
        self.quotes: list[int] = []
        self.short, self.long = _series(s.start, s.days)

    def send(self, **command: Any):
        return self.engine.handle(command)

    def start(self) -> None:
        # quotes and taker flow every hour, one nanosecond after the index print (it comes first
        # anyway at equal times, but a participant cannot react in zero time)
        for hour in range(1, self.s.days * 24):
            self.sim.schedule(hour * HOUR_NS + 1, self.hourly)
        self.sim.schedule(DAY_NS + 2, self.protection, self.s.owner_contracts, "owner")
        self.sim.schedule(
            31 * DAY_NS + 2, self.protection, self.s.owner_contracts // 4, "lender", "long"
        )

    def hourly(self) -> None:
        index = self.engine.indices.get("H100-RENTAL")
        if index is None:
            return
        for order_id in self.quotes:
            self.send(type="cancel", account="maker", order_id=order_id)
        self.quotes = []
        skew = int(self.rng.integers(-5, 6))
        for side, sign in (("buy", -1), ("sell", 1)):
            for level in (0, 1):
                price = index + sign * (self.s.maker_spread_ticks + 10 * level) + skew
                result = self.send(
                    type="submit",
                    account="maker",
                    instrument="H100-PERP",
                    side=side,
                    price=max(price, 1),
                    qty=self.s.maker_size,
                )
                if result.ok and result.order_id in self.engine.orders:
                    self.quotes.append(result.order_id)
        if self.rng.random() < 0.5:
            self.send(
                type="submit",
                account="taker",
                instrument="H100-PERP",
                side="buy" if self.rng.random() < 0.5 else "sell",
                order_type="market",
                qty=int(self.rng.integers(1, 11)),
            )

    def protection(self, contracts: int, buyer: str, which: str = "both") -> None:
        """The guarantor offers protection at the model's premium plus a margin; the buyer
        lifts the offer."""
        series = [self.short, self.long] if which == "both" else [self.long]
        for spec in series:
            mark = self.engine.instruments[spec.name].mark
            if mark is None:
                continue
            price = mark + 5
            self.send(
                type="submit",
                account="guarantor",
                instrument=spec.name,
                side="sell",
                price=price,
                qty=contracts,
            )
            self.send(
                type="submit",
                account=buyer,
                instrument=spec.name,
                side="buy",
                price=price,
                qty=contracts,
            )
