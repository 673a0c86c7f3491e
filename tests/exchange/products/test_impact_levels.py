"""``impact_prices_of_levels``: the impact prices from a book's own ``(price, qty)`` levels
(``OrderBook.top``), the same values as ``impact_prices`` on the same depth, reading a side only
down to the level that completes the impact size (issue #20, the mark's walk)."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.products.perp import impact_prices, impact_prices_of_levels
from tests.exchange.products.test_perp import book_side


@settings(max_examples=40, deadline=None)
@given(book_side(descending=True), book_side(descending=False), st.integers(1, 300))
def test_impact_prices_of_levels_equal_impact_prices_on_the_same_depth(bids, asks, lots):
    got = impact_prices_of_levels(
        tuple(zip(*bids, strict=True)), tuple(zip(*asks, strict=True)), lots
    )
    assert got == impact_prices(bids[0], bids[1], asks[0], asks[1], lots)
    assert all(x is None or type(x) is Fraction for x in got)


def test_impact_prices_of_levels_stop_at_the_level_that_completes_the_size():
    def side():
        yield 10_000, 2
        yield 9_990, 3  # completes 5 lots: 2 at 10,000 and 3 at 9,990
        raise AssertionError("read past the level that completes the size")

    assert impact_prices_of_levels(side(), (), 5) == (Fraction(49_970, 5), None)
    assert impact_prices_of_levels((), side(), 1) == (None, 10_000)


def test_impact_prices_of_levels_need_a_positive_size():
    with pytest.raises(ValueError):
        impact_prices_of_levels(((10_000, 1),), (), 0)
