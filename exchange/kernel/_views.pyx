# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled engine's account view (issue #20): :func:`account_view` is
``CompiledExchange.account_view``.

``Exchange.account_view`` (exchange/kernel/engine.py) stays plain Python and is the semantics:
cash, the non-zero positions sorted by instrument name, and the resting orders ``(order_id,
instrument, side, price, qty)`` in the order they entered their books. The bot runner asks for
a view whenever a bot's snapshot is stale, so the reference's cost -- a tuple per order from
each book's ``orders_of``, a zip and a sort to merge the books -- is paid many times a session.
Here the account's orders are found by walking the C books' levels directly (as
``OrderBook.orders_of`` does), merged across books by their entries in C, and a Python tuple is
built only for each order listed. A book that is not the C ``OrderBook`` is read through its
``orders_of``, which gives the same rows.
"""

from cpython.dict cimport PyDict_Next
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport qsort

from matching_core._book cimport Order, OrderBook

cdef int32_t NIL = -1  # the book's end-of-list index (matching_core/_book.pyx)
cdef tuple _SIDE_NAME = ("buy", "sell")  # Exchange's _SIDE_NAME


cdef struct Row:              # a listed order: its entry, its book, its index in that book
    int64_t entry
    int32_t book              # index into the account's books with open lots (a Python list)
    int32_t order             # index into that book's order pool; -1: a row of ``rows``


cdef int _by_entry(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const Row*>a).entry
    cdef int64_t y = (<const Row*>b).entry
    return (x > y) - (x < y)


def account_view(self, name):
    """One account as its owner may see it: cash (minor units), non-zero positions (lots, by
    instrument name, sorted) and resting orders ``(order_id, instrument, side, price, qty)``
    (price in ticks, qty the open lots) oldest entry first across the account's books --
    ``Exchange.account_view``'s contract, computed over the C books. Raises ``KeyError`` for an
    unknown account, as the reference does. An account whose positions or open lots are not
    plain dicts gets the reference's view."""
    account = self.accounts[name]
    held = account.positions
    open_lots = account.open_lots
    if type(held) is not dict or type(open_lots) is not dict:  # the C walks read dicts only
        from exchange.kernel.engine import Exchange

        return Exchange.account_view(self, name)
    positions = {}
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    if len(held) > 1:
        for k in sorted(held):  # unique keys: the reference's sort of the items, by name
            lots = held[k]
            if lots:
                positions[k] = lots
    else:
        while PyDict_Next(held, &pos, &key, &value):
            if <object>value:
                positions[<object>key] = <object>value
    # the books where the account has lots resting, and an upper bound on the rows they list
    cdef list books = []
    cdef list names = []
    cdef list listed = []  # per book: None for a C book, else its orders_of rows
    cdef int64_t bound = 0
    instruments = self.instruments
    pos = 0
    while PyDict_Next(open_lots, &pos, &key, &value):
        lots = <object>value
        if lots[0] or lots[1]:
            book = instruments[<object>key].book
            books.append(book)
            names.append(<object>key)
            if type(book) is OrderBook:
                bound += (<OrderBook>book).n_orders
                listed.append(None)
            else:
                got = book.orders_of(account.index)
                bound += len(got)
                listed.append(got)
    cdef list orders = []
    if not books:
        return account.cash, positions, orders
    cdef int64_t acct = account.index
    cdef Row few[64]
    cdef Row* rows = few
    cdef Py_ssize_t n = 0, b, i, nb = len(books)
    cdef int64_t last = -1
    cdef bint ordered = True
    cdef int side
    cdef int32_t oi
    cdef OrderBook c
    cdef Order* o
    cdef list other = []  # the rows of books that are not the C one, by their position
    if bound > 64:
        rows = <Row*>PyMem_RawMalloc(bound * sizeof(Row))
        if rows == NULL:
            raise MemoryError("account_view")
    try:
        for b in range(nb):
            book = books[b]
            if type(book) is OrderBook:
                c = <OrderBook>book
                # OrderBook.orders_of(acct)'s walk: every level of both sides
                for side in range(2):
                    for i in range(c.heap_size[side]):
                        oi = c.levels[c.heap[side][i].level].head
                        while oi != NIL:
                            o = &c.orders[oi]
                            if o.account == acct:
                                rows[n].entry = o.entry
                                rows[n].book = <int32_t>b
                                rows[n].order = oi
                                n += 1
                                ordered = ordered and o.entry > last
                                last = o.entry
                            oi = o.next
            else:
                for row in listed[b]:
                    rows[n].entry = row[0]
                    rows[n].book = <int32_t>b
                    rows[n].order = <int32_t>len(other)
                    other.append(row)
                    n += 1
                    ordered = ordered and row[0] > last
                    last = row[0]
        if not ordered:  # entries are unique across books: the sort is the reference's merge
            qsort(rows, n, sizeof(Row), _by_entry)
        for i in range(n):
            book = books[rows[i].book]
            if type(book) is OrderBook:
                c = <OrderBook>book
                o = &c.orders[rows[i].order]
                orders.append((o.order_id, names[rows[i].book], _SIDE_NAME[o.side],
                               c.levels[o.level].price, o.qty))
            else:
                row = other[rows[i].order]
                orders.append((row[1], names[rows[i].book], _SIDE_NAME[row[2]], row[3], row[4]))
    finally:
        if rows != few:
            PyMem_RawFree(rows)
    return account.cash, positions, orders
