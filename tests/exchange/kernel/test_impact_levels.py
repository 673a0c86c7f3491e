"""The mark's impact prices come from the book's best 64 levels a side, as ``impact_prices``
over ``depth(side, 64)`` gives them, on both engines (issue #20: ``Exchange._impact`` reads
``OrderBook.top`` and no arrays)."""

from fractions import Fraction

import pytest

from exchange.kernel.engines import ENGINES
from exchange.products.perp import impact_prices
from tests.markets import START, perp_spec


@pytest.fixture(params=sorted(ENGINES))
def listing(request):
    engine = ENGINES[request.param](lambda event: None)
    engine.epoch = START
    engine.start("test", 1, {})
    engine.list_instrument(perp_spec(name="A-PERP", impact_notional_lots=70))
    return engine, engine.instruments["A-PERP"]


class TopOnly:
    """The listing's book without ``depth``: the walk must read ``top``'s tuples."""

    def __init__(self, book):
        self.book = book

    def top(self, n):
        return self.book.top(n)


def _from_depth(book, lots):
    return impact_prices(*book.depth(0, 64), *book.depth(1, 64), lots)


def test_impact_reads_the_best_64_levels_a_side_as_impact_prices_over_depth(listing):
    engine, listing = listing
    book = listing.book
    listing.book = TopOnly(book)
    assert engine._impact(listing) == (None, None)  # an empty book
    # 65 levels a side of one lot: the 70 lots are not in the best 64 of either side...
    for i in range(65):
        book.submit(1 + i, 1, 0, 10_000 - i, 1)
        book.submit(100 + i, 2, 1, 10_100 + i, 1)
    assert engine._impact(listing) == _from_depth(book, 70) == (None, None)
    # ...until the best levels hold them: 6 more lots at the best bid and ask
    book.submit(200, 1, 0, 10_000, 6)
    book.submit(201, 2, 1, 10_100, 6)
    bid, ask = engine._impact(listing)
    assert (bid, ask) == _from_depth(book, 70)
    # 7 lots at the best level, then one at each of the next 63
    assert bid == Fraction(7 * 10_000 + sum(10_000 - i for i in range(1, 64)), 70)
    assert ask == Fraction(7 * 10_100 + sum(10_100 + i for i in range(1, 64)), 70)
