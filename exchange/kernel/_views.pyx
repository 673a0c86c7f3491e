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

Two more views for the compiled bot runner (clients/_runner.pyx), each the value its reference
(``clients.runner.BotRunner``) builds, with each tuple of a named type (a ``NamedTuple`` the
runner passes in: this layer imports nothing from ``clients``) made as ``tuple.__new__(cls,
items)`` makes it -- the type's ``tp_alloc``, the items set -- without the intermediate tuple,
the ``map`` and the call per item: :func:`account_snapshot` (``BotRunner._snapshot``'s
``AccountView`` of ``OpenOrder`` tuples) and :func:`book_levels` (``BotRunner._book_view``'s
``BookLevel`` tuples, read from the C book's levels as ``OrderBook.top`` reads them).
"""

from cpython.dict cimport PyDict_Next
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM
from cpython.type cimport PyType_IsSubtype
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport qsort

from exchange.kernel._resting cimport Resting, by_entry, walk_resting
from matching_core._book cimport Order, OrderBook, levels_of

cdef tuple _SIDE_NAME = ("buy", "sell")  # Exchange's _SIDE_NAME


cdef extern from *:
    """
    /* what tuple.__new__(cls, items) does for a subclass (tuple_subtype_new): the type's own
       allocator, n item slots (NULL until set) */
    static PyObject* gpuex_views_alloc(PyObject* cls, Py_ssize_t n) {
        return ((PyTypeObject*)cls)->tp_alloc((PyTypeObject*)cls, n);
    }
    """
    object _tp_alloc "gpuex_views_alloc"(object cls, Py_ssize_t n)


cdef inline int _check_tuple_type(object cls) except -1:
    """``cls`` must be a subclass of tuple (as ``tuple.__new__(cls, ...)`` requires)."""
    if not isinstance(cls, type) or not PyType_IsSubtype(<type>cls, tuple):
        raise TypeError(f"{cls!r:.80} is not a subtype of tuple")
    return 0


cdef inline object _made(object cls, tuple items):
    """``tuple.__new__(cls, items)``: a ``cls`` holding ``items`` (``cls`` checked)."""
    cdef Py_ssize_t i, n = len(items)
    made = _tp_alloc(cls, n)
    for i in range(n):
        value = items[i]
        Py_INCREF(value)  # PyTuple_SET_ITEM steals the reference
        PyTuple_SET_ITEM(made, i, value)
    return made


cdef inline object _order(object cls, int64_t order_id, object instrument, object side,
                          int64_t price, int64_t qty):
    """``tuple.__new__(cls, (order_id, instrument, side, price, qty))`` (``cls`` checked)."""
    made = _tp_alloc(cls, 5)
    cdef object value = order_id  # declared: an untyped name would stay a C int64
    Py_INCREF(value)
    PyTuple_SET_ITEM(made, 0, value)
    Py_INCREF(instrument)
    PyTuple_SET_ITEM(made, 1, instrument)
    Py_INCREF(side)
    PyTuple_SET_ITEM(made, 2, side)
    value = price
    Py_INCREF(value)
    PyTuple_SET_ITEM(made, 3, value)
    value = qty
    Py_INCREF(value)
    PyTuple_SET_ITEM(made, 4, value)
    return made


cdef inline object _pair(object cls, int64_t a, int64_t b):
    """``tuple.__new__(cls, (a, b))`` of two ints (``cls`` checked)."""
    made = _tp_alloc(cls, 2)
    cdef object value = a  # a Python int (declared: an untyped name would stay C)
    Py_INCREF(value)  # PyTuple_SET_ITEM steals the reference
    PyTuple_SET_ITEM(made, 0, value)
    value = b
    Py_INCREF(value)
    PyTuple_SET_ITEM(made, 1, value)
    return made


def account_view(self, name):
    """One account as its owner may see it: cash (minor units), non-zero positions (lots, by
    instrument name, sorted) and resting orders ``(order_id, instrument, side, price, qty)``
    (price in ticks, qty the open lots) oldest entry first across the account's books --
    ``Exchange.account_view``'s contract, computed over the C books. Raises ``KeyError`` for an
    unknown account, as the reference does. An account whose positions or open lots are not
    plain dicts gets the reference's view."""
    return _account(self, name, None)


def account_snapshot(self, name, view_type, order_type):
    """``view_type(cash, positions, orders)`` of :func:`account_view`'s ``self.account_view(
    name)``, its orders a tuple of ``order_type`` -- what ``clients.runner.BotRunner._snapshot``
    builds (``AccountView`` and ``OpenOrder``: both subclasses of tuple, made as
    ``tuple.__new__`` makes them) -- with no intermediate tuple per order. Units as
    :func:`account_view`'s; ``KeyError`` for an unknown account."""
    _check_tuple_type(view_type)
    _check_tuple_type(order_type)
    cash, positions, orders = _account(self, name, order_type)
    return _made(view_type, (cash, positions, tuple(orders)))


def book_levels(book, Py_ssize_t depth, level_type):
    """``book.top(depth)`` with each ``(price, qty)`` level a ``level_type`` (a subclass of
    tuple, made as ``tuple.__new__`` makes it): ``(bids, asks)``, each a tuple of the best
    ``depth`` levels best first, price in ticks, qty the lots resting there --
    ``clients.runner.BotRunner._book_view``'s levels. The C ``OrderBook``'s levels are read in
    place (``_ordered_levels``, as its ``top`` reads them); any other book through its
    ``top``."""
    _check_tuple_type(level_type)
    if type(book) is not OrderBook or depth < 0:  # top's own answer (and its ValueError)
        bids, asks = book.top(depth)
        return (tuple([tuple.__new__(level_type, level) for level in bids]),
                tuple([tuple.__new__(level_type, level) for level in asks]))
    return (levels_of(<OrderBook>book, 0, depth, _pair, level_type),
            levels_of(<OrderBook>book, 1, depth, _pair, level_type))


cdef tuple _account(self, name, object order_type):
    """:func:`account_view`'s ``(cash, positions, orders)``, each order a plain tuple or (with
    ``order_type``) ``tuple.__new__(order_type, order)``."""
    account = self.accounts[name]
    held = account.positions
    open_lots = account.open_lots
    if type(held) is not dict or type(open_lots) is not dict:  # the C walks read dicts only
        from exchange.kernel.engine import Exchange

        view = Exchange.account_view(self, name)
        if order_type is None:
            return view
        return view[0], view[1], [_made(order_type, tuple(row)) for row in view[2]]
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
    cdef Resting few[64]
    cdef Resting* rows = few
    cdef Py_ssize_t n = 0, b, i, nb = len(books)
    cdef int64_t last = -1
    cdef bint ordered = True
    cdef OrderBook c
    cdef Order* o
    cdef list other = []  # the rows of books that are not the C one, by their position
    if bound > 64:
        rows = <Resting*>PyMem_RawMalloc(bound * sizeof(Resting))
        if rows == NULL:
            raise MemoryError("account_view")
    try:
        for b in range(nb):
            book = books[b]
            if type(book) is OrderBook:
                n = walk_resting(<OrderBook>book, acct, <int32_t>b, rows, n, &last, &ordered)
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
            qsort(rows, n, sizeof(Resting), by_entry)
        for i in range(n):
            book = books[rows[i].book]
            if type(book) is OrderBook:
                c = <OrderBook>book
                o = &c.orders[rows[i].order]
                if order_type is None:
                    orders.append((o.order_id, names[rows[i].book], _SIDE_NAME[o.side],
                                   c.levels[o.level].price, o.qty))
                else:
                    orders.append(_order(order_type, o.order_id, names[rows[i].book],
                                         _SIDE_NAME[o.side], c.levels[o.level].price, o.qty))
            else:
                row = other[rows[i].order]
                order = (row[1], names[rows[i].book], _SIDE_NAME[row[2]], row[3], row[4])
                orders.append(order if order_type is None else _made(order_type, order))
    finally:
        if rows != few:
            PyMem_RawFree(rows)
    return account.cash, positions, orders
