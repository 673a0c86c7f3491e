"""Residual value swaps: a series, its premium schedule and its settlement, in integers.

A series is one (GPU model, maturity, floor, premium period). The protection **buyer** (a long
position) pays a premium every period while the position is open; at maturity the **seller**
pays ``max(floor - resale index, 0)`` per GPU. Economically the buyer holds a put on the GPU's
resale value.

Series trade on the book by premium: the price is the premium per period per GPU, in ticks of
``tick_size`` dollars. Each trade adds ``price x qty`` to the buyer's **premium basis** and takes
the same from the seller's, so the bases of all accounts sum to zero and so do the premiums
(``premium = basis x tick_value`` per period). A position closed by an offsetting trade at a
different premium keeps paying (or receiving) the difference until maturity — the premium it
locked in, exactly as an offset swap does; nothing is created or lost.

Units: floor and settlement index in ticks of the resale index (dollars per GPU); premiums in
ticks of ``tick_size`` (dollars per GPU per period); cash in minor units (cents).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from exchange.products.instruments import MAX_FEE_BPS, MIN_FEE_BPS, MINOR_PER_UNIT, PositiveDecimal


class RvsSpec(BaseModel):
    """A residual value swap series.

    Attributes:
        name: symbol, e.g. ``"H100-RVS-2027-12-F9000"``.
        gpu: the GPU model (``"H100"``).
        resale_index: the resale-value index the series settles on (its name).
        floor: the floor, in ticks of the resale index (whole dollars per GPU for the built-in
            resale indices).
        index_tick_size: dollars per tick of the resale index (decimal string).
        listed: first day of trading; premiums accrue per period from here.
        maturity: settlement date.
        premium_period_days: days between premium payments.
        gpus_per_contract: GPUs one contract covers.
        tick_size: premium tick, dollars per GPU per period (decimal string).
        volatility: annualised volatility of the resale index for the mark model.
        max_price: largest premium accepted on the book, in ticks.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["rvs"] = "rvs"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    gpu: str = Field(min_length=1, max_length=32)
    resale_index: str = Field(min_length=1, max_length=64)
    floor: int = Field(gt=0)
    index_tick_size: PositiveDecimal = "1"
    listed: date
    maturity: date
    premium_period_days: int = Field(default=30, ge=1, le=366)
    gpus_per_contract: int = Field(default=1, ge=1)
    tick_size: PositiveDecimal = "1"
    volatility: float = Field(default=0.35, gt=0, le=5)
    min_price: int = Field(default=1, ge=1)
    max_price: int = Field(default=1_000_000, ge=1, le=1 << 53)
    maker_fee_bps: int = Field(default=0, ge=MIN_FEE_BPS, le=MAX_FEE_BPS)
    taker_fee_bps: int = Field(default=0, ge=MIN_FEE_BPS, le=MAX_FEE_BPS)

    @model_validator(mode="after")
    def _check(self) -> RvsSpec:
        if self.maturity <= self.listed:
            raise ValueError("maturity must be after the listing date")
        for what, value in (
            ("tick value", self._tick_value()),
            ("payoff tick value", self._payoff_tick_value()),
        ):
            if value != value.to_integral_value():
                raise ValueError(f"{what} {value} minor units is not whole")
        return self

    def _tick_value(self) -> Decimal:
        return Decimal(self.tick_size) * self.gpus_per_contract * MINOR_PER_UNIT

    def _payoff_tick_value(self) -> Decimal:
        return Decimal(self.index_tick_size) * self.gpus_per_contract * MINOR_PER_UNIT

    @property
    def tick_value(self) -> int:
        """Minor units per premium tick per contract per period."""
        # read for every holder at every mark (equity): memoised on the fields it depends on,
        # not on the spec object (a ``model_copy(update=...)`` copies instance caches)
        return _minor_per_tick(self.tick_size, self.gpus_per_contract)

    @property
    def payoff_tick_value(self) -> int:
        """Minor units per resale-index tick of payoff per contract."""
        return _minor_per_tick(self.index_tick_size, self.gpus_per_contract)

    def premium_dates(self) -> list[date]:
        """The dates premiums are paid: every period after listing, up to maturity (the last
        period may be short and is paid at maturity)."""
        from datetime import timedelta

        step = timedelta(days=self.premium_period_days)
        dates, day = [], self.listed + step
        while day < self.maturity:
            dates.append(day)
            day += step
        dates.append(self.maturity)
        return dates


@lru_cache(maxsize=256)
def _minor_per_tick(tick_size: str, gpus_per_contract: int) -> int:
    """Minor units one tick of ``tick_size`` dollars per GPU is worth on one contract of
    ``gpus_per_contract`` GPUs: ``RvsSpec.tick_value`` (premium tick) and
    ``RvsSpec.payoff_tick_value`` (index tick) from their inputs, the same Decimal product as
    ``RvsSpec._tick_value`` / ``_payoff_tick_value``, then ``int`` (pure)."""
    return int(Decimal(tick_size) * gpus_per_contract * MINOR_PER_UNIT)


def premium_due(basis: int, tick_value: int) -> int:
    """Premium one account pays this period (minor units; negative = it receives):
    its premium basis (ticks x lots) times the tick value."""
    return basis * tick_value


def payoff_per_contract(floor: int, index_ticks: int, payoff_tick_value: int) -> int:
    """What the protection seller pays per contract at maturity, minor units:
    ``max(floor - index, 0)`` index ticks times the payoff tick value."""
    return max(floor - index_ticks, 0) * payoff_tick_value
