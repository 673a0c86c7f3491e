"""The tick values of a spec are functions of its fields alone: memoised on those fields
(``RvsSpec.tick_value`` / ``payoff_tick_value``, ``PerpSpec.tick_value``), never on the spec
object, so a copy with other fields has its own values."""

from datetime import date
from decimal import Decimal

import pytest

from exchange.products.instruments import MINOR_PER_UNIT
from tests.markets import perp_spec, rvs_spec

RVS = rvs_spec(maturity=date(2024, 8, 30))


def exact(tick_size, contracts):  # the Decimal product the spec validates as whole
    return int(Decimal(tick_size) * contracts * MINOR_PER_UNIT)


@pytest.mark.parametrize(
    ("tick_size", "index_tick_size", "gpus"),
    [("1", "1", 1), ("0.5", "2", 8), ("0.01", "0.25", 4), ("1.0", "1.00", 3)],
)
def test_swap_tick_values_follow_the_fields_of_each_copy(tick_size, index_tick_size, gpus):
    assert RVS.tick_value == exact(RVS.tick_size, RVS.gpus_per_contract)  # read before copying
    assert RVS.payoff_tick_value == exact(RVS.index_tick_size, RVS.gpus_per_contract)
    copy = RVS.model_copy(
        update={
            "tick_size": tick_size,
            "index_tick_size": index_tick_size,
            "gpus_per_contract": gpus,
        }
    )
    assert copy.tick_value == exact(tick_size, gpus)
    assert copy.payoff_tick_value == exact(index_tick_size, gpus)
    assert copy.tick_value == int(copy._tick_value())
    assert copy.payoff_tick_value == int(copy._payoff_tick_value())


def test_a_swap_copy_with_more_gpus_has_its_own_tick_values():
    assert (RVS.tick_value, RVS.payoff_tick_value) == (100, 100)
    eight = RVS.model_copy(update={"gpus_per_contract": 8})
    assert (eight.tick_value, eight.payoff_tick_value) == (800, 800)
    assert (RVS.tick_value, RVS.payoff_tick_value) == (100, 100)


def test_a_perpetual_copy_has_its_own_tick_value():
    perp = perp_spec()
    assert perp.tick_value == 10
    double = perp.model_copy(update={"lot_size": perp.lot_size * 2})
    assert double.tick_value == 2 * perp.tick_value == int(double._tick_value_decimal())
