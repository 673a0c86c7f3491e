# The Cython order book's declarations (matching_core/_book.pyx): its pool records and the
# OrderBook class's C attributes and methods, so that the exchange's compiled order path
# (exchange/kernel/_kernel.pyx) cimports OrderBook and calls submit, cancel, amend and
# order_qty and reads its counters and buffers as C, with no Python call or attribute look-up.
# The methods' semantics and Python API are _book.pyx's (its docstrings).
from libc.stdint cimport int32_t, int64_t, uint8_t

from matching_core._records cimport Cancel, Fill


cdef struct Order:
    int64_t order_id
    int64_t account
    int64_t qty               # open lots
    int64_t entry             # when it entered the book: a value of _entries (orders_of)
    int32_t level             # index into the level pool
    int32_t prev              # FIFO neighbours (order indices), NIL at the ends
    int32_t next              # also the free-list link of a free slot
    uint8_t side
    uint8_t post_only

cdef struct Level:
    int64_t price             # ticks
    int64_t qty               # lots resting here
    int32_t head              # oldest order (first to trade); free-list link of a free slot
    int32_t tail              # newest order
    int32_t count             # resting orders; 0 = empty (still in its heap until popped)
    uint8_t side

cdef struct HeapEntry:
    int64_t key               # price for asks, -price for bids: the smallest key is best
    int32_t level

cdef struct HMap:
    # Open addressing with linear probing; vals[i] == NIL marks an empty slot; deletion by
    # backward shift (no tombstones), so lookups stay short however many deletes happen.
    int64_t* keys
    int32_t* vals
    int64_t mask
    int64_t size


cdef class OrderBook:
    cdef Order* orders
    cdef int64_t orders_cap
    cdef int32_t free_order
    cdef int64_t n_orders
    cdef Level* levels
    cdef int64_t levels_cap
    cdef int32_t free_level
    cdef HeapEntry* heap[2]
    cdef int64_t heap_size[2]
    cdef int64_t heap_cap[2]
    cdef int64_t live[2]              # non-empty levels per side
    cdef int32_t* scan                # scratch for ordered heap walks (heap positions)
    cdef int64_t scan_cap
    cdef HMap order_map
    cdef HMap level_map
    cdef HMap stp_map
    cdef int default_stp

    # the fill and STP-cancel buffers and their counts are readable from Python (the
    # exchange's compiled order path reads the records in place: exchange/kernel/_kernel.pyx)
    cdef readonly object fill_arr
    cdef Fill* fill_buf
    cdef int64_t fill_cap
    cdef readonly int64_t n_fills
    cdef readonly object cancel_arr
    cdef Cancel* cancel_buf
    cdef int64_t cancel_cap
    cdef readonly int64_t n_cancels

    cdef int64_t msg_index

    cdef readonly int64_t max_price
    """Largest accepted price, in ticks."""
    cdef readonly int64_t max_qty
    """Largest accepted order quantity, in lots."""
    cdef readonly int64_t messages_processed
    """Messages (calls or batch rows) handled so far, rejected ones included."""
    cdef readonly int64_t last_filled
    """Lots the last message's order traded as taker."""
    cdef readonly int64_t last_resting
    """Lots of the last message's order left resting."""
    cdef readonly int64_t last_cancelled
    """Lots of the last message's order removed without trading."""

    # (inline as in the .pyx: a direct call the C compiler may inline, not through the vtable)
    cdef void _chain_free_orders(self, int64_t start) noexcept
    cdef void _chain_free_levels(self, int64_t start) noexcept
    cdef inline int32_t _alloc_order(self) except -2
    cdef inline int32_t _alloc_level(self) except -2
    cdef int _reserve_fills(self, int64_t need) except -1
    cdef int _reserve_cancels(self, int64_t need) except -1
    cdef inline void _sift_up(self, int side, int64_t pos) noexcept
    cdef inline void _sift_down(self, int side, int64_t pos) noexcept
    cdef int _heap_push(self, int side, int64_t key, int32_t level) except -1
    cdef inline void _heap_pop(self, int side) noexcept
    cdef inline void _free_level(self, int32_t lv) noexcept
    cdef inline int32_t _best_level(self, int side) noexcept
    cdef void _maybe_compact(self, int side) noexcept
    cdef inline int64_t _key(self, int side, int64_t price) noexcept
    cdef int _rest(self, int64_t order_id, int64_t account, int side, int64_t price,
                   int64_t qty, int post_only) except -1
    cdef inline void _remove(self, int32_t oi) noexcept
    cdef inline int _stp_mode(self, int64_t account) noexcept
    cdef inline bint _would_cross(self, int side, int64_t limit_key) noexcept
    cdef int64_t _available(self, int side, int64_t account, int64_t limit_key,
                            int64_t need) noexcept
    cdef int _match(self, int64_t order_id, int64_t account, int side, int64_t limit_key,
                    int64_t qty, bint rest, int64_t price, int post_only) except -1
    cdef inline int _check_qty(self, int64_t qty) noexcept
    cdef inline int _check_price(self, int64_t price, bint allow_zero) noexcept
    cdef int _add(self, int64_t order_id, int64_t account, int side, int otype, int64_t price,
                  int64_t qty, int tif, int post_only) except -1
    cdef int _cancel(self, int64_t order_id) except -1
    cdef int _amend(self, int64_t order_id, int64_t price, int64_t qty) except -1
    cdef inline void _begin(self) noexcept
    cdef inline void _end(self) noexcept
    cdef int64_t _ordered_levels(self, int side, int64_t n, int32_t* out) noexcept

    # the per-call API (a Python method too): the Reject code, 0 accepted
    cpdef int submit(self, int64_t order_id, int64_t account, int side, int64_t price,
                     int64_t qty, int tif=*, int post_only=*) except -1
    cpdef int submit_market(self, int64_t order_id, int64_t account, int side, int64_t qty,
                            int64_t protection=*) except -1
    cpdef int cancel(self, int64_t order_id) except -1
    cpdef int amend(self, int64_t order_id, int64_t price, int64_t qty) except -1
    cpdef int64_t order_qty(self, int64_t order_id) noexcept


# a level of a book view, made from (price, qty): ``levels_of``'s ``make``
ctypedef object (*make_level)(object cls, int64_t price, int64_t qty)

# the best ``n`` levels of ``side``, read in place (``OrderBook.best_levels`` without its
# checks; ``make`` NULL: plain ``(price, qty)`` tuples)
cdef tuple levels_of(OrderBook book, int side, int64_t n, make_level make, object cls)
