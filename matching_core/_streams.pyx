# cython: language_level=3
"""The compiled loop of :meth:`matching_core.streams.OrderFlow.take` (issue #20).

``OrderFlow.take`` draws a chunk's random fields vectorised (numpy, in ``streams.py``) and then
plays the chunk, message by message, into a book to know which orders are live: a cancel or an
amend targets one of them. :class:`Player` is that loop in C, for a generator whose book is the
Cython :class:`~matching_core._book.OrderBook`: the live list, the id -> position table and each
live order's fields (account, side, price in ticks) are C memory; the book is called through
its C methods and its outcome (``last_filled``, ``last_resting``, the fill buffer) read in
place; the messages are written straight into the ``MESSAGE_DTYPE`` array. The Python loop in
``streams.py`` is its reference (the generator of the published stream bytes) and
``tests/matching_core/test_streams_compiled.py`` holds the two byte-identical, chunk after
chunk: same calls to the book in the same order, same live list order (append, swap-remove),
same floating-point picks.
"""

from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.stdint cimport int64_t, uint8_t, uint64_t

from matching_core._book cimport OrderBook
from matching_core._records cimport Fill, Message

import numpy as np

from matching_core.codes import MESSAGE_DTYPE

# Mirrors of streams.py's message kinds (_K_*) and of matching_core.codes, as C constants.
cdef enum:
    K_CANCEL = 1
    K_AMEND = 3
    LIMIT = 0
    MARKET = 1
    GTC = 0
    OP_ADD = 0
    OP_CANCEL = 1
    OP_AMEND = 2


cdef struct Live:             # a live order: a cancel's or amend's target and its fields
    int64_t order_id
    int64_t account
    int64_t price             # its current price, ticks (an accepted amend moves it)
    uint8_t side


if MESSAGE_DTYPE.itemsize != sizeof(Message):
    raise ImportError("matching_core._streams: MESSAGE_DTYPE does not match its C record")


cdef inline uint64_t _mix(int64_t k) noexcept nogil:
    # splitmix64's finaliser (as the book's tables): ids are sequential, old ones linger, so
    # scatter them rather than index by id & mask
    cdef uint64_t z = <uint64_t>k
    z = (z ^ (z >> 30)) * <uint64_t>0xbf58476d1ce4e5b9
    z = (z ^ (z >> 27)) * <uint64_t>0x94d049bb133111eb
    return z ^ (z >> 31)


cdef class Player:
    """The generator's live orders and the loop that plays a chunk into its book.

    ``Player(book, reduce_frac)``: ``book`` is the generator's (empty) Cython ``OrderBook``,
    ``reduce_frac`` is ``streams._AMEND_REDUCE_FRAC`` (the share of amends that reduce the open
    lots in place). The live orders carry over from one :meth:`play` to the next, as the
    reference's ``_live``, ``_pos`` and ``_orders`` do.
    """

    cdef OrderBook book
    cdef double reduce_frac
    # the live orders, in the reference's list order: a pick is live[int(u * n_live)]
    cdef Live* live
    cdef int64_t n_live
    cdef int64_t live_cap
    # id -> index in live: open addressing, linear probing, key 0 = empty (ids are >= 1),
    # deletion by backward shift (no tombstones)
    cdef int64_t* keys
    cdef int64_t* vals
    cdef int64_t mask
    cdef int64_t size

    def __cinit__(self):
        self.live = NULL
        self.keys = NULL
        self.vals = NULL

    def __init__(self, OrderBook book not None, double reduce_frac):
        self.book = book
        self.reduce_frac = reduce_frac
        self.n_live = 0
        self.live_cap = 0
        # small to start (a flow holds a few hundred live orders): they double as needed,
        # and every test of a few thousand messages takes the growth paths
        self._grow_live(16)
        self._table(32)

    def __dealloc__(self):
        PyMem_RawFree(self.live)
        PyMem_RawFree(self.keys)
        PyMem_RawFree(self.vals)

    # ------------------------------------------------------------------------- memory
    cdef int _grow_live(self, int64_t need) except -1:
        cdef int64_t cap = self.live_cap if self.live_cap > 0 else 16
        cdef void* p
        while cap < need:
            cap *= 2
        p = PyMem_RawRealloc(self.live, cap * sizeof(Live))
        if p == NULL:
            raise MemoryError("order flow: live orders")
        self.live = <Live*>p
        self.live_cap = cap
        return 0

    cdef int _table(self, int64_t cap) except -1:
        """A new empty id table of ``cap`` slots (a power of two) holding the live orders."""
        cdef int64_t i
        PyMem_RawFree(self.keys)
        PyMem_RawFree(self.vals)
        self.keys = <int64_t*>PyMem_RawMalloc(cap * sizeof(int64_t))
        self.vals = <int64_t*>PyMem_RawMalloc(cap * sizeof(int64_t))
        if self.keys == NULL or self.vals == NULL:
            raise MemoryError("order flow: id table")
        for i in range(cap):
            self.keys[i] = 0
        self.mask = cap - 1
        self.size = 0
        for i in range(self.n_live):
            self._put(self.live[i].order_id, i)
        return 0

    # ------------------------------------------------------------------------- id table
    cdef inline int64_t _find(self, int64_t key) noexcept:
        """The slot of ``key``, or -1."""
        cdef int64_t i = <int64_t>(_mix(key) & <uint64_t>self.mask)
        while self.keys[i] != 0:
            if self.keys[i] == key:
                return i
            i = (i + 1) & self.mask
        return -1

    cdef inline void _put(self, int64_t key, int64_t val) noexcept:
        """Insert a key known to be absent (the table has room: see :meth:`_join`)."""
        cdef int64_t i = <int64_t>(_mix(key) & <uint64_t>self.mask)
        while self.keys[i] != 0:
            i = (i + 1) & self.mask
        self.keys[i] = key
        self.vals[i] = val
        self.size += 1

    cdef inline void _del_slot(self, int64_t i) noexcept:
        cdef int64_t j = i, home
        while True:
            j = (j + 1) & self.mask
            if self.keys[j] == 0:
                break
            home = <int64_t>(_mix(self.keys[j]) & <uint64_t>self.mask)
            # move j back into the hole at i unless j's home lies cyclically in (i, j]
            if ((j - home) & self.mask) >= ((j - i) & self.mask):
                self.keys[i] = self.keys[j]
                self.vals[i] = self.vals[j]
                i = j
        self.keys[i] = 0
        self.size -= 1

    # ------------------------------------------------------------------------- live set
    cdef int _join(self, int64_t order_id, int64_t account, uint8_t side,
                   int64_t price) except -1:
        """An order that rests joins the live set (at the end of the list)."""
        if self.n_live == self.live_cap:
            self._grow_live(self.n_live + 1)
        if (self.size + 1) * 2 > self.mask + 1:
            self._table((self.mask + 1) * 2)
        self.live[self.n_live].order_id = order_id
        self.live[self.n_live].account = account
        self.live[self.n_live].price = price
        self.live[self.n_live].side = side
        self._put(order_id, self.n_live)
        self.n_live += 1
        return 0

    cdef inline int _leave_slot(self, int64_t slot) except -1:
        """The order at table slot ``slot`` leaves: the last of the list takes its place.

        The checks never fail unless the list and the table disagree (a bug): then stop
        rather than write outside the list."""
        cdef int64_t j = self.vals[slot], s
        if j >= self.n_live or self.live[j].order_id != self.keys[slot]:
            raise RuntimeError("order flow: the live list and the id table disagree")
        self._del_slot(slot)
        self.n_live -= 1
        if j != self.n_live:
            self.live[j] = self.live[self.n_live]
            s = self._find(self.live[j].order_id)
            if s < 0:  # (never: see above)
                raise RuntimeError("order flow: the live list and the id table disagree")
            self.vals[s] = j
        return 0

    cdef int _drop_filled_makers(self) except -1:
        """Every maker of the last call's fills that the book no longer holds leaves."""
        cdef OrderBook book = self.book
        cdef Fill* fills = book.fill_buf  # (re-read after each call: the buffer may grow)
        cdef int64_t f, slot, maker
        for f in range(book.n_fills):
            maker = fills[f].maker_order_id
            slot = self._find(maker)
            if slot >= 0 and book.order_qty(maker) == 0:
                self._leave_slot(slot)
        return 0

    # ------------------------------------------------------------------------- the loop
    def play(
        self,
        int64_t base,
        const uint8_t[::1] kind,
        const int64_t[::1] price,
        const int64_t[::1] qty,
        const int64_t[::1] account,
        const uint8_t[::1] side,
        const uint8_t[::1] typ,
        const uint8_t[::1] tif,
        const uint8_t[::1] post,
        const double[::1] u_pick,
        const double[::1] u_amend,
        const int64_t[::1] move,
    ):
        """Play one chunk into the book; return its messages (a new ``MESSAGE_DTYPE`` array).

        The arguments are ``OrderFlow.take``'s vectorised draws for the chunk, each of its
        length: ``kind`` (0 limit add, 1 cancel, 2 marketable, 3 amend), the add's ``price``
        (ticks; 0 for an unprotected market order), ``qty`` (lots), ``account``, ``side``,
        ``typ``, ``tif``, ``post`` (post-only), ``u_pick`` (which live order a cancel or amend
        targets), ``u_amend`` (reduce or move, and how much to reduce) and ``move`` (ticks an
        amend moves the price). The add at index ``i`` has order id ``base + i + 1``.
        """
        cdef Py_ssize_t n = kind.shape[0], i
        if not (price.shape[0] == qty.shape[0] == account.shape[0] == side.shape[0] == n
                and typ.shape[0] == tif.shape[0] == post.shape[0] == n
                and u_pick.shape[0] == u_amend.shape[0] == move.shape[0] == n):
            raise ValueError("play: the draws' lengths differ")
        msgs = np.zeros(n, dtype=MESSAGE_DTYPE)
        if n == 0:
            return msgs
        cdef Message* out = <Message*><size_t>msgs.ctypes.data
        cdef Message* m
        cdef OrderBook book = self.book
        cdef int k
        cdef int64_t j, slot, target, open_qty, new_price, new_qty, oid
        cdef double ua
        for i in range(n):
            m = &out[i]
            k = kind[i]
            if (k == K_CANCEL or k == K_AMEND) and self.n_live > 0:
                j = <int64_t>(u_pick[i] * <double>self.n_live)
                target = self.live[j].order_id
                m.order_id = target
                m.account = self.live[j].account
                m.side = self.live[j].side
                m.type = LIMIT
                m.tif = GTC
                m.post_only = 0
                if k == K_CANCEL:
                    m.op = OP_CANCEL  # (price and qty stay 0)
                    book.cancel(target)
                    slot = self._find(target)
                    if slot < 0:  # (never: a live order is in the table)
                        raise RuntimeError("order flow: a live order is not in the id table")
                    self._leave_slot(slot)
                    continue
                m.op = OP_AMEND
                open_qty = book.order_qty(target)
                ua = u_amend[i]
                if ua < self.reduce_frac and open_qty > 1:
                    new_price = self.live[j].price
                    new_qty = 1 + <int64_t>((ua / self.reduce_frac) * <double>(open_qty - 1))
                else:
                    new_price = self.live[j].price + move[i]
                    if new_price < 1:
                        new_price = 1
                    new_qty = open_qty
                m.price = new_price
                m.qty = new_qty
                if book.amend(target, new_price, new_qty) == 0:
                    self.live[j].price = new_price  # (j still the target: nothing left yet)
                    if book.last_filled:
                        self._drop_filled_makers()
                        if book.last_resting == 0:  # traded in full
                            slot = self._find(target)
                            if slot >= 0:
                                self._leave_slot(slot)
                continue
            # an add (a cancel or amend with nothing live falls back to its passive limit)
            oid = base + i + 1
            m.order_id = oid
            m.account = account[i]
            m.price = price[i]
            m.qty = qty[i]
            m.op = OP_ADD
            m.side = side[i]
            m.type = typ[i]
            m.tif = tif[i]
            m.post_only = post[i]
            if typ[i] == MARKET:
                book.submit_market(oid, account[i], side[i], qty[i], price[i])
            else:
                book.submit(oid, account[i], side[i], price[i], qty[i], tif[i], post[i])
            if book.last_filled:
                self._drop_filled_makers()
            if book.last_resting:
                self._join(oid, account[i], side[i], price[i])
        return msgs

    # ------------------------------------------------------------------------- views
    def live_ids(self):
        """Ids of the live orders (a set): the only ones a later cancel or amend targets."""
        cdef int64_t j
        return {self.live[j].order_id for j in range(self.n_live)}

    def held(self):
        """``(live orders, id table entries)``: both the number of orders resting in the book,
        nothing held for an order that left it."""
        return int(self.n_live), int(self.size)

    def memory_bytes(self):
        """Bytes of the live list and the id table."""
        return int(self.live_cap * sizeof(Live) + (self.mask + 1) * 2 * sizeof(int64_t))
