"""The instrument registry: what can be traded and how ticks and lots become money.

An instrument quotes prices in integer **ticks** and sizes in integer **lots**. Money is in the
settlement currency's **minor units** (cents). The conversion is exact integer arithmetic:

    notional (minor units) = price (ticks) x qty (lots) x tick_value

where ``tick_value`` is the minor units one tick is worth on one lot:
``tick_size x lot_size x contract_multiplier x minor units per currency unit``. The spec's
decimal fields are strings (never floats) and the model refuses a combination whose tick value
is not a whole number of minor units.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

#: Minor units per unit of the settlement currency (USD cents).
MINOR_PER_UNIT = 100
#: Fee rates are in basis points of notional; rebates (negative) down to this bound.
MIN_FEE_BPS = -100
MAX_FEE_BPS = 1_000


def _positive_decimal(value: str) -> str:
    try:
        number = Decimal(value)
    except ArithmeticError as exc:
        raise ValueError(f"{value!r} is not a decimal number") from exc
    if not number.is_finite() or number <= 0:
        raise ValueError(f"{value!r} must be a positive decimal")
    return value


#: A positive decimal number written as a string (tick sizes, multipliers): never a float.
PositiveDecimal = Annotated[str, AfterValidator(_positive_decimal)]


class InstrumentSpec(BaseModel):
    """A listed instrument, validated.

    Attributes:
        name: symbol, e.g. ``"H100-SPOT"``.
        tick_size: price increment in currency units per contract unit (a decimal string,
            e.g. ``"0.01"`` dollars per GPU-hour).
        lot_size: contracts per lot.
        contract_multiplier: underlying units per contract (e.g. GPU-hours), a decimal string.
        min_price, max_price: accepted prices, in ticks.
        maker_fee_bps, taker_fee_bps: fees in basis points of notional (negative = rebate).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["spot"] = "spot"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    tick_size: PositiveDecimal = "0.01"
    lot_size: int = Field(default=1, ge=1)
    contract_multiplier: PositiveDecimal = "1"
    min_price: int = Field(default=1, ge=1)
    max_price: int = Field(default=10_000_000, ge=1, le=1 << 53)
    maker_fee_bps: int = Field(default=0, ge=MIN_FEE_BPS, le=MAX_FEE_BPS)
    taker_fee_bps: int = Field(default=0, ge=MIN_FEE_BPS, le=MAX_FEE_BPS)

    @model_validator(mode="after")
    def _whole_tick_value(self) -> InstrumentSpec:
        if self.min_price > self.max_price:
            raise ValueError("min_price must not exceed max_price")
        value = self._tick_value_decimal()
        if value != value.to_integral_value():
            raise ValueError(
                f"tick value {value} minor units per lot is not whole: choose tick_size, "
                "lot_size and contract_multiplier whose product is a whole number of cents"
            )
        return self

    def _tick_value_decimal(self) -> Decimal:
        return (
            Decimal(self.tick_size)
            * self.lot_size
            * Decimal(self.contract_multiplier)
            * MINOR_PER_UNIT
        )

    @property
    def tick_value(self) -> int:
        """Minor units one tick is worth on one lot."""
        return int(self._tick_value_decimal())


def fee(notional: int, bps: int) -> int:
    """Fee in minor units on ``notional`` minor units at ``bps`` basis points.

    Rounded half away from zero, once, here: the only rounding in the fee path.
    """
    numerator = abs(notional) * abs(bps)
    magnitude = (numerator + 5_000) // 10_000
    return magnitude if bps >= 0 else -magnitude
