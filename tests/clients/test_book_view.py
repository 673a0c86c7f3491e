"""``BotRunner._book_view``: the best ``depth`` levels of each side as ``BookLevel`` tuples of
ints, read from the book's ``top`` (no depth arrays; issue #20)."""

from __future__ import annotations

import pytest

from clients.bot import BookLevel, BookView
from clients.runner import BotRunner
from tests.clients.test_runner import market

# every test here runs with both runner twins (tests/clients/conftest.py)
pytestmark = pytest.mark.usefixtures("twin")


class TopOnly:
    """An instrument's book without ``depth``: the view must read ``top``'s tuples."""

    def __init__(self, book):
        self.book = book

    def top(self, n):
        return self.book.top(n)


def _from_depth(book, side, n):
    prices, qtys = book.depth(side, n)
    return tuple(BookLevel(int(p), int(q)) for p, q in zip(prices, qtys, strict=True))


def test_a_book_view_holds_the_best_depth_levels_of_each_side_as_book_levels():
    engine, sim, _runner, _events, _end = market()
    runner = BotRunner(engine, sim, 3, depth=3)
    listing = engine.instruments["H100-PERP"]
    book = listing.book
    for i in range(5):
        book.submit(900_001 + i, 1, 0, 1_000 - 2 * i, 1 + i)
        book.submit(900_101 + i, 2, 1, 1_100 + 3 * i, 2 + i)
    want = BookView("H100-PERP", engine.t, _from_depth(book, 0, 3), _from_depth(book, 1, 3))
    listing.book = TopOnly(book)
    try:
        view = runner._book_view("H100-PERP")
    finally:
        listing.book = book
    assert view == want
    assert type(view) is BookView
    assert len(view.bids) == len(view.asks) == 3
    assert view.bids[0] == BookLevel(1_000, 1) and view.asks[0] == BookLevel(1_100, 2)
    for level in view.bids + view.asks:
        assert type(level) is BookLevel
        assert type(level.price) is int and type(level.qty) is int
