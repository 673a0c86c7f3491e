"""The compiled kernel calls the book in C (``matching_core/_book.pxd``): it reads an
``OrderBook``'s counters and buffers and calls its submit, cancel, amend and order_qty without
Python, so it takes that path only for a listing whose book is exactly an ``OrderBook``
(issue #20). A submit or amend in a listing with any other book is the reference engine's
(``Exchange.handle``), and a cancel there calls the book's Python API: either way the events
are the reference's.
"""

from __future__ import annotations

from typing import Any

from exchange.core.events import encode
from matching_core import OrderBook
from tests.exchange.kernel.test_account_orders import INSTRUMENTS, exchange


class Wrapped:
    """A book that is not an ``OrderBook``: every attribute is its inner book's."""

    def __init__(self, book: OrderBook) -> None:
        self._book = book

    def __getattr__(self, name: str) -> Any:
        return getattr(self._book, name)


def test_a_listing_whose_book_is_not_an_order_book_is_the_reference_s_for_submit_and_amend(
    fallbacks,
):
    wrapped, plain = INSTRUMENTS[:2]

    def submit(name, instrument, side, price, qty):
        command = {"type": "submit", "account": name, "instrument": instrument}
        return command | {"side": side, "price": price, "qty": qty}

    commands = [
        submit("ann", wrapped, "buy", 100, 3),  # order 1 rests
        submit("bob", wrapped, "sell", 100, 1),  # order 2 fills against it
        submit("ann", plain, "buy", 100, 2),  # order 3
        {"type": "amend", "account": "ann", "order_id": 1, "price": 101, "qty": 2},
        submit("ann", wrapped, "buy", 99, 1),  # order 4
        {"type": "cancel", "account": "ann", "order_id": 4},
        {"type": "cancel_all", "account": "ann"},
    ]
    engines = {}
    for engine in ("reference", "compiled"):
        ex, events = exchange(engine)
        ex.instruments[wrapped].book = Wrapped(ex.instruments[wrapped].book)
        results = [ex.handle(dict(command)) for command in commands]
        engines[engine] = ex, events, results
    (reference, ref_events, expected), (compiled, events, got) = engines.values()
    assert all(result.ok for result in got)
    assert got == expected
    assert [encode(e) for e in events] == [encode(e) for e in ref_events]
    assert compiled.state_hash() == reference.state_hash()
    assert not compiled.orders
    # the submits and the amend in the wrapped book: the reference's; the plain book's submit,
    # and the cancels (which call the wrapped book's Python API): compiled
    assert fallbacks == [commands[i] for i in (0, 1, 3, 4)]
