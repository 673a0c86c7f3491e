# cython: language_level=3
"""The Cython order book: price-time priority over flat C pools.

The specification is ``docs/matching_core.md``; ``matching_core/reference.py`` is the same
specification in plain Python and the oracle this file is tested against.

Layout, chosen so the hot path is plain typed loops over contiguous memory:

* orders: an array of ``Order`` structs with a free list; each order is a node in its price
  level's doubly linked FIFO;
* levels: an array of ``Level`` structs with a free list; per side a binary min-heap of
  ``(key, level)`` where ``key`` is the price for asks and ``-price`` for bids, so that "best"
  is the heap top on both sides;
* two open-addressing hash tables: order id -> order, and (price, side) -> level;
* fills and STP cancels are written into numpy arrays that are reused between calls and grow
  by doubling, so the per-call API creates no Python object per fill.

A level that empties stays in its heap (keeping cancel O(1)) and is discarded when it reaches
the top; when empty levels outnumber live ones the heap is compacted, so the waste is bounded
and the cost is O(1) amortised.
"""

from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcpy

from matching_core._records cimport Cancel, Fill, Message

import numpy as np

from matching_core.codes import (
    CANCEL_DTYPE,
    DEFAULT_MAX_PRICE,
    DEFAULT_MAX_QTY,
    FILL_DTYPE,
    MESSAGE_DTYPE,
    REPORT_DTYPE,
    RESTING_DTYPE,
    StpMode,
)

# ----------------------------------------------------------------------------- codes
# Mirrors of matching_core.codes, as C constants for the hot path.
cdef enum:
    BUY = 0
    SELL = 1
    LIMIT = 0
    MARKET = 1
    GTC = 0
    IOC = 1
    FOK = 2
    OP_ADD = 0
    OP_CANCEL = 1
    OP_AMEND = 2
    STP_NONE = 0
    STP_CANCEL_RESTING = 1
    STP_CANCEL_INCOMING = 2
    STP_CANCEL_BOTH = 3
    R_OK = 0
    R_NON_POSITIVE_QTY = 1
    R_NON_POSITIVE_PRICE = 2
    R_PRICE_OUT_OF_RANGE = 3
    R_QTY_OUT_OF_RANGE = 4
    R_DUPLICATE_ORDER_ID = 5
    R_UNKNOWN_ORDER_ID = 6
    R_POST_ONLY_WOULD_CROSS = 7
    R_FOK_NOT_FILLABLE = 8
    R_INVALID_SIDE = 9
    R_INVALID_TYPE = 10
    R_INVALID_TIF = 11
    R_INVALID_OP = 12
    R_INVALID_POST_ONLY = 13
    NIL = -1
    COMPACT_SLACK = 64


# ----------------------------------------------------------------------------- records

cdef struct Report:           # REPORT_DTYPE, 32 bytes
    int64_t reject
    int64_t filled
    int64_t resting
    int64_t cancelled

# Order, Level and HeapEntry (the pools' records), HMap below and OrderBook's attributes and C
# methods are declared in _book.pxd: the exchange's compiled order path cimports OrderBook.


# ----------------------------------------------------------------------------- hash table
# HMap (its declaration): _book.pxd

cdef inline uint64_t _mix(int64_t k) noexcept nogil:
    # splitmix64's finaliser: a fixed function, so table layout (and so nothing observable)
    # depends only on the inputs.
    cdef uint64_t z = <uint64_t>k
    z = (z ^ (z >> 30)) * <uint64_t>0xbf58476d1ce4e5b9
    z = (z ^ (z >> 27)) * <uint64_t>0x94d049bb133111eb
    return z ^ (z >> 31)

cdef int hmap_init(HMap* m, int64_t capacity) except -1:
    cdef int64_t cap = 16
    cdef int64_t i
    while cap < capacity:
        cap <<= 1
    m.keys = <int64_t*>PyMem_RawMalloc(cap * sizeof(int64_t))
    m.vals = <int32_t*>PyMem_RawMalloc(cap * sizeof(int32_t))
    if m.keys == NULL or m.vals == NULL:
        raise MemoryError("order book hash table")
    for i in range(cap):
        m.vals[i] = NIL
    m.mask = cap - 1
    m.size = 0
    return 0

cdef void hmap_free(HMap* m) noexcept:
    PyMem_RawFree(m.keys)
    PyMem_RawFree(m.vals)
    m.keys = NULL
    m.vals = NULL

cdef inline int32_t hmap_get(HMap* m, int64_t key) noexcept nogil:
    cdef int64_t i = <int64_t>(_mix(key) & <uint64_t>m.mask)
    while m.vals[i] != NIL:
        if m.keys[i] == key:
            return m.vals[i]
        i = (i + 1) & m.mask
    return NIL

cdef int hmap_grow(HMap* m) except -1:
    cdef HMap old = m[0]
    cdef int64_t i
    hmap_init(m, (old.mask + 1) * 2)
    for i in range(old.mask + 1):
        if old.vals[i] != NIL:
            hmap_put(m, old.keys[i], old.vals[i])
    hmap_free(&old)
    return 0

cdef inline int hmap_put(HMap* m, int64_t key, int32_t val) except -1:
    """Insert a key known to be absent."""
    cdef int64_t i
    if (m.size + 1) * 2 > m.mask + 1:
        hmap_grow(m)
    i = <int64_t>(_mix(key) & <uint64_t>m.mask)
    while m.vals[i] != NIL:
        i = (i + 1) & m.mask
    m.keys[i] = key
    m.vals[i] = val
    m.size += 1
    return 0

cdef inline void hmap_del(HMap* m, int64_t key) noexcept nogil:
    cdef int64_t i = <int64_t>(_mix(key) & <uint64_t>m.mask)
    cdef int64_t j, home
    while m.vals[i] != NIL:
        if m.keys[i] == key:
            break
        i = (i + 1) & m.mask
    else:
        return
    j = i
    while True:
        j = (j + 1) & m.mask
        if m.vals[j] == NIL:
            break
        home = <int64_t>(_mix(m.keys[j]) & <uint64_t>m.mask)
        # move j back into the hole at i unless j's home lies cyclically in (i, j]
        if ((j - home) & m.mask) >= ((j - i) & m.mask):
            m.keys[i] = m.keys[j]
            m.vals[i] = m.vals[j]
            i = j
    m.vals[i] = NIL
    m.size -= 1


cdef int _grow(void** ptr, int64_t* cap, size_t item, int64_t need) except -1:
    """Grow a raw pool to hold at least ``need`` items (doubling)."""
    cdef int64_t new_cap = cap[0] if cap[0] > 0 else 16
    cdef void* p
    while new_cap < need:
        new_cap *= 2
    if new_cap > 0x7FFFFFFF:
        raise MemoryError("order book pool exceeds 2**31 entries")
    p = PyMem_RawRealloc(ptr[0], new_cap * item)
    if p == NULL:
        raise MemoryError("order book pool")
    ptr[0] = p
    cap[0] = new_cap
    return 0


cdef inline int64_t _level_key(int64_t price, int side) noexcept nogil:
    return price * 2 + side


cdef struct Found:            # an order orders_of lists: its entry, its index in the pool
    int64_t entry
    int32_t order

cdef int _by_entry(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const Found*>a).entry
    cdef int64_t y = (<const Found*>b).entry
    return (x > y) - (x < y)


# Every order that enters a book -- a rest, or the re-entry of an amend that lost priority --
# takes the next value of this count, whichever book it enters: one process-wide sequence, so
# the entries of orders in different books compare, and sorting by them gives the order the
# orders entered their books in (OrderBook.orders_of; the exchange lists an account's resting
# orders across its instruments that way). Only the order of the values means anything.
cdef int64_t _entries = 0


cdef class OrderBook:
    """A price-time-priority limit order book for one instrument (Cython).

    Prices are int64 ticks in ``1..max_price``, quantities int64 lots in ``1..max_qty``, order
    ids and accounts int64. The full rules are in ``docs/matching_core.md``.

    Per-call API: :meth:`submit`, :meth:`submit_market`, :meth:`cancel`, :meth:`amend` return
    a :class:`~matching_core.Reject` code; the call's outcome is in :attr:`last_filled`,
    :attr:`last_resting`, :attr:`last_cancelled`, its trades in :attr:`fills` and its
    self-trade-prevention removals in :attr:`stp_cancels` (views of reused buffers, valid until
    the next call). Batch API: :meth:`process`.

    Args:
        max_price: largest accepted price, in ticks (at most 2**62).
        max_qty: largest accepted order quantity, in lots (at most 2**62).
        stp: default self-trade-prevention mode (:class:`~matching_core.StpMode`) for every
            account; :meth:`set_stp` overrides it per account.
    """

    # (its C attributes and methods are declared in _book.pxd)

    def __cinit__(self, max_price=DEFAULT_MAX_PRICE, max_qty=DEFAULT_MAX_QTY, stp=0):
        self.orders = NULL
        self.levels = NULL
        self.heap[0] = NULL
        self.heap[1] = NULL
        self.scan = NULL
        self.order_map.keys = NULL
        self.order_map.vals = NULL
        self.level_map.keys = NULL
        self.level_map.vals = NULL
        self.stp_map.keys = NULL
        self.stp_map.vals = NULL

    def __init__(self, max_price=DEFAULT_MAX_PRICE, max_qty=DEFAULT_MAX_QTY, stp=StpMode.NONE):
        if not 1 <= max_price <= (1 << 62):
            raise ValueError(f"max_price must be in 1..2**62 ticks, got {max_price}")
        if not 1 <= max_qty <= (1 << 62):
            raise ValueError(f"max_qty must be in 1..2**62 lots, got {max_qty}")
        self.max_price = max_price
        self.max_qty = max_qty
        self.default_stp = int(StpMode(stp))
        self.orders_cap = 0
        self.levels_cap = 0
        self.heap_cap[0] = 0
        self.heap_cap[1] = 0
        self.scan_cap = 0
        _grow(<void**>&self.orders, &self.orders_cap, sizeof(Order), 1024)
        _grow(<void**>&self.levels, &self.levels_cap, sizeof(Level), 256)
        _grow(<void**>&self.heap[0], &self.heap_cap[0], sizeof(HeapEntry), 256)
        _grow(<void**>&self.heap[1], &self.heap_cap[1], sizeof(HeapEntry), 256)
        _grow(<void**>&self.scan, &self.scan_cap, sizeof(int32_t), 256)
        self._chain_free_orders(0)
        self._chain_free_levels(0)
        self.n_orders = 0
        self.heap_size[0] = self.heap_size[1] = 0
        self.live[0] = self.live[1] = 0
        hmap_init(&self.order_map, 2048)
        hmap_init(&self.level_map, 512)
        hmap_init(&self.stp_map, 16)
        self.fill_cap = 0
        self.cancel_cap = 0
        self._reserve_fills(256)
        self._reserve_cancels(16)
        self.n_fills = 0
        self.n_cancels = 0
        self.messages_processed = 0
        self.msg_index = 0

    def __dealloc__(self):
        PyMem_RawFree(self.orders)
        PyMem_RawFree(self.levels)
        PyMem_RawFree(self.heap[0])
        PyMem_RawFree(self.heap[1])
        PyMem_RawFree(self.scan)
        hmap_free(&self.order_map)
        hmap_free(&self.level_map)
        hmap_free(&self.stp_map)

    # ------------------------------------------------------------------------- pools
    cdef void _chain_free_orders(self, int64_t start) noexcept:
        cdef int64_t i
        for i in range(start, self.orders_cap - 1):
            self.orders[i].next = <int32_t>(i + 1)
        self.orders[self.orders_cap - 1].next = NIL
        self.free_order = <int32_t>start

    cdef void _chain_free_levels(self, int64_t start) noexcept:
        cdef int64_t i
        for i in range(start, self.levels_cap - 1):
            self.levels[i].head = <int32_t>(i + 1)
        self.levels[self.levels_cap - 1].head = NIL
        self.free_level = <int32_t>start

    cdef inline int32_t _alloc_order(self) except -2:
        cdef int32_t idx
        cdef int64_t old
        if self.free_order == NIL:
            old = self.orders_cap
            _grow(<void**>&self.orders, &self.orders_cap, sizeof(Order), old + 1)
            self._chain_free_orders(old)
        idx = self.free_order
        self.free_order = self.orders[idx].next
        return idx

    cdef inline int32_t _alloc_level(self) except -2:
        cdef int32_t idx
        cdef int64_t old
        if self.free_level == NIL:
            old = self.levels_cap
            _grow(<void**>&self.levels, &self.levels_cap, sizeof(Level), old + 1)
            self._chain_free_levels(old)
        idx = self.free_level
        self.free_level = self.levels[idx].head
        return idx

    cdef int _reserve_fills(self, int64_t need) except -1:
        cdef int64_t cap = self.fill_cap if self.fill_cap > 0 else 256
        if need <= self.fill_cap:
            return 0
        while cap < need:
            cap *= 2
        arr = np.zeros(cap, dtype=FILL_DTYPE)
        if self.fill_cap > 0:
            arr[: self.fill_cap] = self.fill_arr
        self.fill_arr = arr
        self.fill_buf = <Fill*><size_t>arr.ctypes.data
        self.fill_cap = cap
        return 0

    cdef int _reserve_cancels(self, int64_t need) except -1:
        cdef int64_t cap = self.cancel_cap if self.cancel_cap > 0 else 16
        if need <= self.cancel_cap:
            return 0
        while cap < need:
            cap *= 2
        arr = np.zeros(cap, dtype=CANCEL_DTYPE)
        if self.cancel_cap > 0:
            arr[: self.cancel_cap] = self.cancel_arr
        self.cancel_arr = arr
        self.cancel_buf = <Cancel*><size_t>arr.ctypes.data
        self.cancel_cap = cap
        return 0

    # ------------------------------------------------------------------------- heaps
    cdef inline void _sift_up(self, int side, int64_t pos) noexcept:
        cdef HeapEntry* h = self.heap[side]
        cdef HeapEntry e = h[pos]
        cdef int64_t parent
        while pos > 0:
            parent = (pos - 1) >> 1
            if h[parent].key <= e.key:
                break
            h[pos] = h[parent]
            pos = parent
        h[pos] = e

    cdef inline void _sift_down(self, int side, int64_t pos) noexcept:
        cdef HeapEntry* h = self.heap[side]
        cdef int64_t n = self.heap_size[side]
        cdef HeapEntry e = h[pos]
        cdef int64_t child
        while True:
            child = 2 * pos + 1
            if child >= n:
                break
            if child + 1 < n and h[child + 1].key < h[child].key:
                child += 1
            if e.key <= h[child].key:
                break
            h[pos] = h[child]
            pos = child
        h[pos] = e

    cdef int _heap_push(self, int side, int64_t key, int32_t level) except -1:
        cdef int64_t n = self.heap_size[side]
        if n + 1 > self.heap_cap[side]:
            _grow(<void**>&self.heap[side], &self.heap_cap[side], sizeof(HeapEntry), n + 1)
        if n + 1 > self.scan_cap:
            _grow(<void**>&self.scan, &self.scan_cap, sizeof(int32_t), n + 1)
        self.heap[side][n].key = key
        self.heap[side][n].level = level
        self.heap_size[side] = n + 1
        self._sift_up(side, n)
        return 0

    cdef inline void _heap_pop(self, int side) noexcept:
        cdef int64_t n = self.heap_size[side] - 1
        self.heap_size[side] = n
        if n > 0:
            self.heap[side][0] = self.heap[side][n]
            self._sift_down(side, 0)

    cdef inline void _free_level(self, int32_t lv) noexcept:
        hmap_del(&self.level_map, _level_key(self.levels[lv].price, self.levels[lv].side))
        self.levels[lv].head = self.free_level
        self.free_level = lv

    cdef inline int32_t _best_level(self, int side) noexcept:
        """The best non-empty level of ``side`` (NIL if none), discarding empty tops."""
        cdef int32_t lv
        while self.heap_size[side] > 0:
            lv = self.heap[side][0].level
            if self.levels[lv].count > 0:
                return lv
            self._heap_pop(side)
            self._free_level(lv)
        return NIL

    cdef void _maybe_compact(self, int side) noexcept:
        """Drop empty levels from a heap once they outnumber live ones (amortised O(1))."""
        cdef int64_t i, j = 0, n = self.heap_size[side]
        cdef HeapEntry* h = self.heap[side]
        if n - self.live[side] <= self.live[side] + COMPACT_SLACK:
            return
        for i in range(n):
            if self.levels[h[i].level].count > 0:
                h[j] = h[i]
                j += 1
            else:
                self._free_level(h[i].level)
        self.heap_size[side] = j
        i = j // 2 - 1
        while i >= 0:
            self._sift_down(side, i)
            i -= 1

    cdef inline int64_t _key(self, int side, int64_t price) noexcept:
        return -price if side == BUY else price

    # ------------------------------------------------------------------------- orders
    cdef int _rest(self, int64_t order_id, int64_t account, int side, int64_t price,
                   int64_t qty, int post_only) except -1:
        """Append an order at the back of its price level's queue."""
        global _entries
        cdef int64_t lkey = _level_key(price, side)
        cdef int32_t lv = hmap_get(&self.level_map, lkey)
        cdef int32_t oi
        cdef Level* L
        cdef Order* o
        if lv == NIL:
            lv = self._alloc_level()
            L = &self.levels[lv]
            L.price = price
            L.qty = 0
            L.head = NIL
            L.tail = NIL
            L.count = 0
            L.side = side
            hmap_put(&self.level_map, lkey, lv)
            self._heap_push(side, self._key(side, price), lv)
        oi = self._alloc_order()
        hmap_put(&self.order_map, order_id, oi)
        L = &self.levels[lv]
        if L.count == 0:
            self.live[side] += 1
        o = &self.orders[oi]
        o.order_id = order_id
        o.account = account
        o.qty = qty
        o.entry = _entries
        _entries += 1
        o.level = lv
        o.side = side
        o.post_only = post_only
        o.next = NIL
        o.prev = L.tail
        if L.tail != NIL:
            self.orders[L.tail].next = oi
        else:
            L.head = oi
        L.tail = oi
        L.count += 1
        L.qty += qty
        self.n_orders += 1
        return 0

    cdef inline void _remove(self, int32_t oi) noexcept:
        """Take an order off the book (its level stays, possibly empty, until popped)."""
        cdef Order* o = &self.orders[oi]
        cdef Level* L = &self.levels[o.level]
        if o.prev != NIL:
            self.orders[o.prev].next = o.next
        else:
            L.head = o.next
        if o.next != NIL:
            self.orders[o.next].prev = o.prev
        else:
            L.tail = o.prev
        L.count -= 1
        L.qty -= o.qty
        if L.count == 0:
            self.live[L.side] -= 1
        hmap_del(&self.order_map, o.order_id)
        o.next = self.free_order
        self.free_order = oi
        self.n_orders -= 1

    cdef inline int _stp_mode(self, int64_t account) noexcept:
        cdef int32_t m
        if self.stp_map.size == 0:
            return self.default_stp
        m = hmap_get(&self.stp_map, account)
        return self.default_stp if m == NIL else m

    cdef inline bint _would_cross(self, int side, int64_t limit_key) noexcept:
        cdef int32_t lv = self._best_level(1 - side)
        if lv == NIL:
            return False
        return self._key(1 - side, self.levels[lv].price) <= limit_key

    cdef int64_t _available(self, int side, int64_t account, int64_t limit_key,
                            int64_t need) noexcept:
        """Lots an incoming order could trade (the FOK test), walking levels best-first.

        Stops early once ``need`` is reached. The walk visits heap positions in key order using
        a second heap of positions (``scan``), so it never reorders the book's own heap.
        """
        cdef int other = 1 - side
        cdef HeapEntry* h = self.heap[other]
        cdef int64_t n = self.heap_size[other]
        cdef int32_t* s = self.scan
        cdef int64_t ns = 0, total = 0, pos, child, k, parent, c
        cdef int32_t p, oi
        cdef int mode = self._stp_mode(account)
        cdef Level* L
        if n == 0:
            return 0
        s[0] = 0
        ns = 1
        while ns > 0:
            # pop the smallest-key position
            pos = s[0]
            ns -= 1
            if ns > 0:
                p = s[ns]
                k = 0
                while True:
                    child = 2 * k + 1
                    if child >= ns:
                        break
                    if child + 1 < ns and h[s[child + 1]].key < h[s[child]].key:
                        child += 1
                    if h[p].key <= h[s[child]].key:
                        break
                    s[k] = s[child]
                    k = child
                s[k] = p
            if h[pos].key > limit_key:
                break
            L = &self.levels[h[pos].level]
            if L.count > 0:
                if mode == STP_NONE:
                    total += L.qty
                else:
                    oi = L.head
                    while oi != NIL:
                        if self.orders[oi].account == account:
                            if mode != STP_CANCEL_RESTING:
                                return total
                        else:
                            total += self.orders[oi].qty
                        oi = self.orders[oi].next
                if total >= need:
                    return total
            # push the children of pos
            for c in range(2 * pos + 1, 2 * pos + 3):
                if c < n:
                    k = ns
                    ns += 1
                    while k > 0:
                        parent = (k - 1) >> 1
                        if h[s[parent]].key <= h[c].key:
                            break
                        s[k] = s[parent]
                        k = parent
                    s[k] = <int32_t>c
        return total

    cdef int _match(self, int64_t order_id, int64_t account, int side, int64_t limit_key,
                    int64_t qty, bint rest, int64_t price, int post_only) except -1:
        """Trade an incoming order against the other side, then rest or cancel the rest."""
        cdef int other = 1 - side
        cdef int mode = self._stp_mode(account)
        cdef bint stopped = False
        cdef int64_t remaining = qty, traded
        cdef int32_t lv, oi
        cdef Level* L
        cdef Order* o
        cdef Fill* f
        cdef Cancel* c
        while remaining > 0:
            lv = self._best_level(other)
            if lv == NIL:
                break
            L = &self.levels[lv]
            if self._key(other, L.price) > limit_key:
                break
            oi = L.head
            while oi != NIL and remaining > 0:
                o = &self.orders[oi]
                if o.account == account and mode != STP_NONE:
                    if mode != STP_CANCEL_INCOMING:
                        if self.n_cancels == self.cancel_cap:
                            self._reserve_cancels(self.n_cancels + 1)
                        c = &self.cancel_buf[self.n_cancels]
                        self.n_cancels += 1
                        c.order_id = o.order_id
                        c.account = o.account
                        c.qty = o.qty
                        c.msg_index = self.msg_index
                        oi = o.next
                        self._remove(<int32_t>(o - self.orders))
                    if mode != STP_CANCEL_RESTING:
                        stopped = True
                        break
                    continue
                traded = remaining if remaining < o.qty else o.qty
                if self.n_fills == self.fill_cap:
                    self._reserve_fills(self.n_fills + 1)
                f = &self.fill_buf[self.n_fills]
                self.n_fills += 1
                f.taker_order_id = order_id
                f.maker_order_id = o.order_id
                f.taker_account = account
                f.maker_account = o.account
                f.price = L.price
                f.qty = traded
                f.msg_index = self.msg_index
                remaining -= traded
                self.last_filled += traded
                if traded == o.qty:
                    oi = o.next
                    self._remove(<int32_t>(o - self.orders))
                else:
                    o.qty -= traded
                    L.qty -= traded
            if stopped:
                break
        if remaining > 0:
            if rest and not stopped:
                self._rest(order_id, account, side, price, remaining, post_only)
                self.last_resting = remaining
            else:
                self.last_cancelled += remaining
        return 0

    cdef inline int _check_qty(self, int64_t qty) noexcept:
        if qty <= 0:
            return R_NON_POSITIVE_QTY
        if qty > self.max_qty:
            return R_QTY_OUT_OF_RANGE
        return R_OK

    cdef inline int _check_price(self, int64_t price, bint allow_zero) noexcept:
        if price < 0 or (price == 0 and not allow_zero):
            return R_NON_POSITIVE_PRICE
        if price > self.max_price:
            return R_PRICE_OUT_OF_RANGE
        return R_OK

    cdef int _add(self, int64_t order_id, int64_t account, int side, int otype, int64_t price,
                  int64_t qty, int tif, int post_only) except -1:
        cdef int code
        cdef bint is_limit
        cdef int64_t limit_key
        if side != BUY and side != SELL:
            return R_INVALID_SIDE
        if otype != LIMIT and otype != MARKET:
            return R_INVALID_TYPE
        is_limit = otype == LIMIT
        if is_limit and (tif < GTC or tif > FOK):
            return R_INVALID_TIF
        if (post_only != 0 and post_only != 1) or (post_only and not (is_limit and tif == GTC)):
            return R_INVALID_POST_ONLY
        code = self._check_qty(qty)
        if code:
            return code
        code = self._check_price(price, not is_limit)
        if code:
            return code
        if hmap_get(&self.order_map, order_id) != NIL:
            return R_DUPLICATE_ORDER_ID
        if is_limit or price != 0:
            limit_key = self._key(1 - side, price)
        else:
            limit_key = INT64_MAX
        if post_only and self._would_cross(side, limit_key):
            return R_POST_ONLY_WOULD_CROSS
        if is_limit and tif == FOK and self._available(side, account, limit_key, qty) < qty:
            return R_FOK_NOT_FILLABLE
        self._match(order_id, account, side, limit_key, qty, is_limit and tif == GTC, price,
                    post_only)
        return R_OK

    cdef int _cancel(self, int64_t order_id) except -1:
        cdef int32_t oi = hmap_get(&self.order_map, order_id)
        if oi == NIL:
            return R_UNKNOWN_ORDER_ID
        self.last_cancelled = self.orders[oi].qty
        self._remove(oi)
        return R_OK

    cdef int _amend(self, int64_t order_id, int64_t price, int64_t qty) except -1:
        cdef int code = self._check_qty(qty)
        cdef int32_t oi
        cdef Order* o
        cdef int64_t account
        cdef int side, post_only
        if code:
            return code
        code = self._check_price(price, False)
        if code:
            return code
        oi = hmap_get(&self.order_map, order_id)
        if oi == NIL:
            return R_UNKNOWN_ORDER_ID
        o = &self.orders[oi]
        if price == self.levels[o.level].price and qty <= o.qty:
            self.last_cancelled = o.qty - qty
            self.last_resting = qty
            self.levels[o.level].qty -= o.qty - qty
            o.qty = qty
            return R_OK
        side = o.side
        if o.post_only and self._would_cross(side, self._key(1 - side, price)):
            return R_POST_ONLY_WOULD_CROSS
        account = o.account
        post_only = o.post_only
        self._remove(oi)
        self._match(order_id, account, side, self._key(1 - side, price), qty, True, price, post_only)
        return R_OK

    # ------------------------------------------------------------------------- per-call API
    cdef inline void _begin(self) noexcept:
        self.n_fills = 0
        self.n_cancels = 0
        self.last_filled = 0
        self.last_resting = 0
        self.last_cancelled = 0
        self.msg_index = self.messages_processed

    cdef inline void _end(self) noexcept:
        self.messages_processed += 1
        self._maybe_compact(BUY)
        self._maybe_compact(SELL)

    cpdef int submit(self, int64_t order_id, int64_t account, int side, int64_t price,
                     int64_t qty, int tif=GTC, int post_only=0) except -1:
        """Add a limit order.

        Args:
            order_id: unique among resting orders.
            account: the owner (for self-trade prevention).
            side: ``Side.BUY`` (0) or ``Side.SELL`` (1).
            price: limit price in ticks.
            qty: lots.
            tif: ``TimeInForce`` (GTC, IOC, FOK).
            post_only: reject instead of trading if it would cross (GTC only).

        Returns:
            The ``Reject`` code as an int (0 = accepted).
        """
        cdef int code
        self._begin()
        code = self._add(order_id, account, side, LIMIT, price, qty, tif, post_only)
        self._end()
        return code

    cpdef int submit_market(self, int64_t order_id, int64_t account, int side, int64_t qty,
                            int64_t protection=0) except -1:
        """Add a market order (IOC at any price, or not beyond ``protection`` ticks if > 0).

        Returns:
            The ``Reject`` code as an int (0 = accepted).
        """
        cdef int code
        self._begin()
        code = self._add(order_id, account, side, MARKET, protection, qty, GTC, 0)
        self._end()
        return code

    cpdef int cancel(self, int64_t order_id) except -1:
        """Cancel a resting order. Returns the ``Reject`` code (0 = cancelled)."""
        cdef int code
        self._begin()
        code = self._cancel(order_id)
        self._end()
        return code

    cpdef int amend(self, int64_t order_id, int64_t price, int64_t qty) except -1:
        """Amend a resting order to ``price`` ticks and ``qty`` open lots.

        Reducing quantity at the same price keeps time priority; any other change is a
        cancel-and-replace that may trade. Returns the ``Reject`` code (0 = accepted).
        """
        cdef int code
        self._begin()
        code = self._amend(order_id, price, qty)
        self._end()
        return code

    @property
    def fill_count(self):
        """Number of fills of the last call (or batch)."""
        return self.n_fills

    @property
    def fills(self):
        """Fills of the last call (or batch), ``FILL_DTYPE``: a view valid until the next call."""
        return self.fill_arr[: self.n_fills]

    @property
    def stp_cancels(self):
        """Resting orders removed by self-trade prevention in the last call (or batch),
        ``CANCEL_DTYPE``: a view valid until the next call."""
        return self.cancel_arr[: self.n_cancels]

    # ------------------------------------------------------------------------- batch API
    def process(self, messages, reports=None):
        """Run a batch of messages through the book.

        Args:
            messages: a 1-d numpy array of dtype ``MESSAGE_DTYPE``.
            reports: optional ``REPORT_DTYPE`` array of the same length, filled with each
                message's outcome.

        Returns:
            A new ``FILL_DTYPE`` array of every fill, in match order, with ``msg_index`` the
            index of the causing message in ``messages``.
        """
        cdef Message* msgs
        cdef Message* m
        cdef Report* reps = NULL
        cdef int64_t i, n
        cdef int code
        if not isinstance(messages, np.ndarray) or messages.dtype != MESSAGE_DTYPE:
            raise TypeError("messages must be a numpy array of dtype matching_core.MESSAGE_DTYPE")
        if messages.ndim != 1:
            raise ValueError("messages must be one-dimensional")
        messages = np.ascontiguousarray(messages)
        n = messages.shape[0]
        if reports is not None:
            if (not isinstance(reports, np.ndarray) or reports.dtype != REPORT_DTYPE
                    or reports.ndim != 1 or reports.shape[0] != n
                    or not reports.flags.c_contiguous or not reports.flags.writeable):
                raise ValueError(
                    "reports must be a writeable contiguous REPORT_DTYPE array as long as messages"
                )
            reps = <Report*><size_t>reports.ctypes.data
        msgs = <Message*><size_t>messages.ctypes.data
        self.n_fills = 0
        self.n_cancels = 0
        for i in range(n):
            m = &msgs[i]
            self.last_filled = 0
            self.last_resting = 0
            self.last_cancelled = 0
            self.msg_index = i
            if m.op == OP_ADD:
                code = self._add(m.order_id, m.account, m.side, m.type, m.price, m.qty, m.tif,
                                 m.post_only)
            elif m.op == OP_CANCEL:
                code = self._cancel(m.order_id)
            elif m.op == OP_AMEND:
                code = self._amend(m.order_id, m.price, m.qty)
            else:
                code = R_INVALID_OP
            if reps != NULL:
                reps[i].reject = code
                reps[i].filled = self.last_filled
                reps[i].resting = self.last_resting
                reps[i].cancelled = self.last_cancelled
            self._end()
        out = np.empty(self.n_fills, dtype=FILL_DTYPE)
        if self.n_fills:
            memcpy(<void*><size_t>out.ctypes.data, self.fill_buf, self.n_fills * sizeof(Fill))
        return out

    # ------------------------------------------------------------------------- configuration
    def set_stp(self, int64_t account, mode):
        """Set the self-trade-prevention mode (``StpMode``) of one account."""
        cdef int32_t m = int(StpMode(mode))
        if hmap_get(&self.stp_map, account) != NIL:
            hmap_del(&self.stp_map, account)
        hmap_put(&self.stp_map, account, m)

    def stp(self, int64_t account):
        """The self-trade-prevention mode in force for ``account``."""
        return self._stp_mode(account)

    # ------------------------------------------------------------------------- queries
    def __len__(self):
        return self.n_orders

    def best_bid(self):
        """Best bid in ticks, or None when there is none."""
        cdef int32_t lv = self._best_level(BUY)
        return None if lv == NIL else self.levels[lv].price

    def best_ask(self):
        """Best ask in ticks, or None when there is none."""
        cdef int32_t lv = self._best_level(SELL)
        return None if lv == NIL else self.levels[lv].price

    cpdef int64_t order_qty(self, int64_t order_id) noexcept:
        """Open lots of a resting order; 0 if it is not resting."""
        cdef int32_t oi = hmap_get(&self.order_map, order_id)
        return 0 if oi == NIL else self.orders[oi].qty

    def level_qty(self, int side, int64_t price):
        """Total lots resting at ``price`` ticks on ``side``."""
        if side != BUY and side != SELL:
            raise ValueError(f"side must be 0 (buy) or 1 (sell), got {side}")
        cdef int32_t lv = hmap_get(&self.level_map, _level_key(price, side))
        return 0 if lv == NIL else self.levels[lv].qty

    def level_count(self, int side):
        """Number of non-empty price levels on ``side``."""
        if side != BUY and side != SELL:
            raise ValueError(f"side must be 0 (buy) or 1 (sell), got {side}")
        return self.live[side]

    cdef int64_t _ordered_levels(self, int side, int64_t n, int32_t* out) noexcept:
        """Write up to ``n`` non-empty levels of ``side``, best first, into ``out``."""
        cdef HeapEntry* h = self.heap[side]
        cdef int64_t size = self.heap_size[side]
        cdef int32_t* s = self.scan
        cdef int64_t ns = 1, got = 0, pos, child, k, parent, c
        cdef int32_t p
        if size == 0 or n <= 0:
            return 0
        s[0] = 0
        while ns > 0 and got < n:
            pos = s[0]
            ns -= 1
            if ns > 0:
                p = s[ns]
                k = 0
                while True:
                    child = 2 * k + 1
                    if child >= ns:
                        break
                    if child + 1 < ns and h[s[child + 1]].key < h[s[child]].key:
                        child += 1
                    if h[p].key <= h[s[child]].key:
                        break
                    s[k] = s[child]
                    k = child
                s[k] = p
            if self.levels[h[pos].level].count > 0:
                out[got] = h[pos].level
                got += 1
            for c in range(2 * pos + 1, 2 * pos + 3):
                if c < size:
                    k = ns
                    ns += 1
                    while k > 0:
                        parent = (k - 1) >> 1
                        if h[s[parent]].key <= h[c].key:
                            break
                        s[k] = s[parent]
                        k = parent
                    s[k] = <int32_t>c
        return got

    def depth(self, int side, Py_ssize_t n):
        """The best ``n`` levels of ``side``: ``(prices, qtys)`` int64 arrays (ticks, lots),
        best first."""
        if side != BUY and side != SELL:
            raise ValueError(f"side must be 0 (buy) or 1 (sell), got {side}")
        if n < 0:
            raise ValueError("n must be >= 0")
        cdef int64_t want = min(n, self.live[side])
        cdef int32_t[::1] lv = np.empty(want, dtype=np.int32)
        cdef int64_t got = self._ordered_levels(side, want, &lv[0]) if want > 0 else 0
        prices = np.empty(got, dtype=np.int64)
        qtys = np.empty(got, dtype=np.int64)
        cdef int64_t[::1] pv = prices
        cdef int64_t[::1] qv = qtys
        cdef int64_t i
        for i in range(got):
            pv[i] = self.levels[lv[i]].price
            qv[i] = self.levels[lv[i]].qty
        return prices, qtys

    def best_levels(self, int side, Py_ssize_t n):
        """The best ``n`` levels of ``side`` as a tuple of ``(price, qty)`` tuples (ticks,
        lots), best first: ``depth``'s values as Python ints, built in C (no array)."""
        if side != BUY and side != SELL:
            raise ValueError(f"side must be 0 (buy) or 1 (sell), got {side}")
        if n < 0:
            raise ValueError("n must be >= 0")
        return _levels(self, side, n)

    def top(self, Py_ssize_t n):
        """The best ``n`` levels of each side: ``(bids, asks)``, each as ``best_levels``
        gives it."""
        if n < 0:
            raise ValueError("n must be >= 0")
        return _levels(self, BUY, n), _levels(self, SELL, n)

    def snapshot(self):
        """Every resting order as ``RESTING_DTYPE``: bids best-first, then asks best-first,
        time priority within a level."""
        out = np.empty(self.n_orders, dtype=RESTING_DTYPE)
        cdef int64_t row = 0, i, got
        cdef int side
        cdef int32_t oi
        cdef int32_t[::1] lv
        for side in range(2):
            if self.live[side] == 0:
                continue
            lv = np.empty(self.live[side], dtype=np.int32)
            got = self._ordered_levels(side, self.live[side], &lv[0])
            for i in range(got):
                oi = self.levels[lv[i]].head
                while oi != NIL:
                    out[row] = (side, self.levels[lv[i]].price, self.orders[oi].order_id,
                                self.orders[oi].account, self.orders[oi].qty)
                    row += 1
                    oi = self.orders[oi].next
        return out

    def orders_of(self, account=None):
        """The resting orders of ``account`` (every resting order when None), in the order
        they entered the book: a list of ``(entry, order_id, side, price, qty)`` tuples (side 0
        buy or 1 sell, price in ticks, qty the open lots).

        An order enters when it rests; an amend that keeps priority keeps its entry, one that
        loses it (a new price, or more lots) re-enters. ``entry`` increases with every entry
        into any book of this class in the process, so lists of several books merge into
        entry order by sorting on it (what ``Exchange.account_view`` does); only the order of
        the values means anything. Walks the book's levels in C: no Python object for an order
        of another account.
        """
        cdef bint every = account is None
        cdef int64_t acct = 0 if every else account
        cdef int64_t last = -1, n = 0, i
        cdef bint ordered = True
        cdef int side
        cdef int32_t oi
        cdef Order* o
        cdef Found few[32]
        # the account's orders, found by walking every level (an order at each step), then
        # put in entry order in C: a Python tuple only for each order listed
        cdef Found* found = few
        if self.n_orders > 32:
            found = <Found*>PyMem_RawMalloc(self.n_orders * sizeof(Found))
            if found == NULL:
                raise MemoryError("order book: orders_of")
        try:
            for side in range(2):
                for i in range(self.heap_size[side]):
                    oi = self.levels[self.heap[side][i].level].head  # NIL: an empty level
                    while oi != NIL:
                        o = &self.orders[oi]
                        if every or o.account == acct:
                            found[n].entry = o.entry
                            found[n].order = oi
                            n += 1
                            ordered = ordered and o.entry > last
                            last = o.entry
                        oi = o.next
            if not ordered:
                qsort(found, n, sizeof(Found), _by_entry)
            out = []
            for i in range(n):
                o = &self.orders[found[i].order]
                out.append((o.entry, o.order_id, o.side, self.levels[o.level].price, o.qty))
            return out
        finally:
            if found != few:
                PyMem_RawFree(found)

    def memory_bytes(self):
        """Bytes held by the book's pools, tables and buffers (its whole footprint in C)."""
        return int(
            self.orders_cap * sizeof(Order)
            + self.levels_cap * sizeof(Level)
            + (self.heap_cap[0] + self.heap_cap[1]) * sizeof(HeapEntry)
            + self.scan_cap * sizeof(int32_t)
            + (self.order_map.mask + 1 + self.level_map.mask + 1 + self.stp_map.mask + 1)
            * (sizeof(int64_t) + sizeof(int32_t))
            + self.fill_cap * sizeof(Fill)
            + self.cancel_cap * sizeof(Cancel)
        )


cdef tuple _levels(OrderBook book, int side, int64_t n):
    """``OrderBook.best_levels`` without the checks."""
    return levels_of(book, side, n, NULL, None)


cdef tuple levels_of(OrderBook book, int side, int64_t n, make_level make, object cls):
    """The best ``n`` levels of ``side`` as a tuple, best first, each ``(price, qty)`` (ticks,
    lots) -- or ``make(cls, price, qty)`` when ``make`` is given (the bots' book view makes its
    own level type: exchange/kernel/_views.pyx). Read in place, as ``top`` reads them."""
    cdef int64_t want = min(n, book.live[side])
    if want <= 0:
        return ()
    cdef int32_t few[64]
    # a view of the usual depth (the mark's walk reads 64) needs no allocation
    cdef int32_t* lv = few
    if want > 64:
        lv = <int32_t*>PyMem_RawMalloc(want * sizeof(int32_t))
        if lv == NULL:
            raise MemoryError("order book: best_levels")
    cdef int64_t got, i
    cdef Level* level
    try:
        got = book._ordered_levels(side, want, lv)
        out = PyTuple_New(got)
        for i in range(got):
            level = &book.levels[lv[i]]
            if make == NULL:
                pair = (level.price, level.qty)
            else:
                pair = make(cls, level.price, level.qty)
            Py_INCREF(pair)  # PyTuple_SET_ITEM steals the reference
            PyTuple_SET_ITEM(out, i, pair)
        return out
    finally:
        if lv != few:
            PyMem_RawFree(lv)
