# An account's resting orders across its books, as the compiled engine lists them (its
# account view, exchange/kernel/_views.pyx, and a cancel-all, exchange/kernel/_kernel.pyx):
# the walk of OrderBook.orders_of(account) over a C book's levels, with no Python object per
# order, and the merge of several books' orders by entry. Declarations only (inline): nothing
# to import at run time.
from libc.stdint cimport int32_t, int64_t

from matching_core._book cimport Order, OrderBook


cdef enum:
    _END = -1  # the book's end-of-list index (matching_core/_book.pyx's NIL)


cdef struct Resting:
    int64_t entry     # when it entered its book (OrderBook.orders_of's entry)
    int64_t order_id
    int32_t book      # its book's index in the caller's list of books
    int32_t order     # its index in that C book's order pool (or in the caller's other rows)


cdef inline int by_entry(const void* a, const void* b) noexcept nogil:
    """qsort's comparison: by entry (unique across books: the reference's merge)."""
    cdef int64_t x = (<const Resting*>a).entry
    cdef int64_t y = (<const Resting*>b).entry
    return (x > y) - (x < y)


cdef inline Py_ssize_t walk_resting(
    OrderBook c, int64_t account, int32_t book, Resting* rows, Py_ssize_t n,
    int64_t* last, bint* ordered,
) noexcept:
    """OrderBook.orders_of(account)'s walk of ``c`` -- every level of both sides, each
    level's queue oldest first -- appending each of the account's orders to ``rows`` from
    ``n`` (which has room for ``c.n_orders`` more), tagged ``book``; the new count.
    ``last``/``ordered`` carry across calls whether the entries so far increase (if so, no
    sort is needed)."""
    cdef int side
    cdef int64_t i
    cdef int32_t oi
    cdef Order* o
    for side in range(2):
        for i in range(c.heap_size[side]):
            oi = c.levels[c.heap[side][i].level].head  # _END: an empty level
            while oi != _END:
                o = &c.orders[oi]
                if o.account == account:
                    rows[n].entry = o.entry
                    rows[n].order_id = o.order_id
                    rows[n].book = book
                    rows[n].order = oi
                    n += 1
                    ordered[0] = ordered[0] and o.entry > last[0]
                    last[0] = o.entry
                oi = o.next
    return n
