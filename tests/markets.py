"""The perpetual and the swap series the engine tests and the fuzzer list, built in one place.

Several test modules set up a ``products``-style market by hand (an H100 perpetual on the
rental index, an H100 residual value swap on the resale index, listed on ``START``); they
differ only in a few fields (impact depth, margin tiers, fees, maturity), so each passes just
those as overrides and the rest stays the same everywhere.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from exchange.products.perp import PerpSpec
from exchange.products.rvs import RvsSpec
from exchange.sessions.scenario_products import H100_PERP

HOUR_NS = 3_600 * 10**9
#: The calendar epoch of these markets: the day the swap series is listed.
START = date(2024, 6, 1)


def perp_spec(**overrides: Any) -> PerpSpec:
    """``H100-PERP`` of the built-in scenarios (``exchange.sessions.scenario_products.H100_PERP``:
    on
    ``H100-RENTAL``, 100 GPU-hours a lot, $0.001 ticks, funding every 8 h) with its first
    margin tier only (10 % initial, 5 % maintenance up to 1,000 lots); ``overrides`` replace
    fields, and the result is validated afresh."""
    fields: dict[str, Any] = {name: getattr(H100_PERP, name) for name in PerpSpec.model_fields}
    fields["margin_tiers"] = H100_PERP.margin_tiers[:1]
    fields.update(overrides)
    return PerpSpec(**fields)


def rvs_spec(*, maturity: date, **overrides: Any) -> RvsSpec:
    """``H100-RVS`` on ``H100-RESALE``: a floor of 20,000 index ticks, listed on ``START``,
    premiums every 30 days, maturing on ``maturity`` (each test picks its own term);
    ``overrides`` replace fields."""
    fields: dict[str, Any] = dict(
        name="H100-RVS",
        gpu="H100",
        resale_index="H100-RESALE",
        floor=20_000,
        listed=START,
        maturity=maturity,
        premium_period_days=30,
    )
    fields.update(overrides)
    return RvsSpec(**fields)
