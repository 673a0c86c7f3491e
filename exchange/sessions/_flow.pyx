# cython: language_level=3
"""The `flow` session's per-message loop compiled, inside the compiled clock's loop.

:class:`FlowDriver` is ``exchange.sessions.scenarios._FlowDriver.step`` for the compiled engine
on the compiled clock (``exchange.core._clock``): the chunk's columns as int64 arrays,
``handle_row`` called with the row's values, the generator-id -> order-id map, and the same
next message scheduled on the clock with no Python frame in between. When the engine's
``handle_row`` is the compiled one itself (``exchange.kernel._kernel.handle_row``, bound to
the engine), the row goes to its C entry (``_kernel.ROW_ID``): the same call, without the
Python call's argument tuple and boxing, and without the ``Result`` the driver only reads the
order id of; any other ``handle_row`` (a subclass's, a test's patch) is called as before. What
is rare stays in the Python driver it wraps and is called from here at the same positions:
generating a chunk (``_FlowDriver._load``, which also prunes the id map), the cash messages
and the malformed ones.
The Python ``_FlowDriver`` is the reference and drives the reference engine; both give the same
log, byte for byte (tests/exchange/sessions/test_flow_driver.py).

:class:`RunStep` is ``session.run``'s ``on_step`` (before each action: the engine's clock moved
to the action's time, then the batches the last action completed committed) as a
:class:`~exchange.core._clock.StepHook`.
"""

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint64_t

from exchange.core._clock cimport Action, Simulator, StepHook

from exchange.core.clock import PARTICIPANT
from exchange.kernel import _kernel
from matching_core import Op

# ``exchange.kernel._kernel._row_id`` (its ROW_ID): ``handle_row(...).order_id`` with the
# row's price, quantity and codes as C values
ctypedef object (*RowId)(
    object, object, object, int64_t, object, int64_t, int64_t, int64_t, int64_t, int64_t,
    int64_t,
)
# ``exchange.kernel._kernel._hold`` (its HOLD): the engine's rows hold the ledger between
# them (on), or write it back and let go (off)
ctypedef int (*Hold)(object, bint) except -1
cdef Hold HOLD = <Hold>PyCapsule_GetPointer(_kernel.HOLD, b"exchange.kernel._kernel.hold")
# ``exchange.kernel._kernel._advance`` (its ADVANCE): the engine's clock moved while the
# kernel holds it (1), or not held (0)
ctypedef int (*Advance)(object, int64_t) except -1
cdef Advance ADVANCE = <Advance>PyCapsule_GetPointer(
    _kernel.ADVANCE, b"exchange.kernel._kernel.advance"
)

cdef int64_t C_PARTICIPANT = PARTICIPANT
cdef int64_t ADD = int(Op.ADD)


# Fibonacci hashing (2**64 / the golden ratio) of blocks of 16 ids: the generator's ids run in
# sequence, so a block's ids are put one after another, and with a block's slots side by side
# (four cache lines) they are written in place in the cache instead of each in a line of its
# own (each a miss: the table is ~2 MiB on `flow`, past the core's cache; 0.04 s of the run's
# 0.29 s measured, decision 107); the product's top bits spread the blocks over the table
cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t home(int64_t key, int shift) noexcept:
    """Generator id ``key``'s first slot in a table of ``2 ** (64 - shift)`` slots (16 at
    least): its block of 16 ids' place, then its own within the block."""
    if shift >= 60:  # a table of one block
        return <uint64_t>key & 15
    return ((((<uint64_t>key >> 4) * GOLDEN) >> (shift + 4)) << 4) | (<uint64_t>key & 15)


cdef inline uint64_t fit(Py_ssize_t n) noexcept:
    """Slots for ``n`` ids at most half full: a power of two, 16 or more."""
    cdef uint64_t size = 16
    while size < 2 * <uint64_t>max(n, 0) + 2:
        size *= 2
    return size


cdef struct Slot:
    int64_t key  # a generator order id (> 0); 0: the slot is empty
    int64_t value  # the exchange's order id


@cython.final
cdef class IdMap:
    """The flow driver's generator order id -> exchange order id map: an open-addressing table
    of int64 pairs (linear probing, a power-of-two number of slots at most half full, doubled
    as it fills). A generator id is > 0 (``OrderFlow`` numbers its messages from 1); an id the
    map lacks reads 0, as ``ids.get(gen, 0)`` does. Nothing is removed but by :meth:`prune`,
    which keeps the ids given (the generator's live ones) in a table sized for them and
    ``room`` more (the next chunk's adds): it holds no more than the generator's live orders
    and one chunk's adds, and is sized for them, whatever the run's length; given its room
    (``IdMap(room)``, then each prune's) it never grows."""

    cdef Slot* slots
    cdef uint64_t mask  # slots - 1
    cdef int shift  # 64 - log2(slots)
    cdef Py_ssize_t used

    def __cinit__(self, Py_ssize_t room=0):
        """A map with room for ``room`` ids before it grows."""
        self.slots = NULL
        self._alloc(fit(room))

    def __dealloc__(self):
        PyMem_Free(self.slots)

    cdef int _alloc(self, uint64_t size) except -1:
        """An empty table of ``size`` slots (a power of two) in place of this one's (which the
        caller has kept or freed)."""
        # (zeroed: every key 0, empty; a large table comes as fresh zero pages, not cleared)
        cdef Slot* slots = <Slot*>PyMem_Calloc(size, sizeof(Slot))
        if slots == NULL:
            raise MemoryError()
        self.slots = slots
        self.mask = size - 1
        self.shift = 64
        while size > 1:
            size >>= 1
            self.shift -= 1
        self.used = 0
        return 0

    cdef inline int64_t get(self, int64_t key) noexcept:
        """The exchange's order id of generator id ``key``; 0 if the map lacks it."""
        cdef uint64_t i = home(key, self.shift)
        cdef Slot* slot
        while True:
            slot = &self.slots[i]
            if slot.key == key:
                return slot.value
            if slot.key == 0:
                return 0
            i = (i + 1) & self.mask

    cdef int put(self, int64_t key, int64_t value) except -1:
        """Map generator id ``key`` (> 0) to ``value`` (replacing any value it had)."""
        cdef uint64_t i
        cdef Slot* slot
        if key <= 0:
            raise ValueError(f"a generator order id is > 0, not {key}")
        if 2 * (self.used + 1) > <Py_ssize_t>(self.mask + 1):
            self._grow(2 * (self.mask + 1))
        i = home(key, self.shift)
        while True:
            slot = &self.slots[i]
            if slot.key == key:
                slot.value = value
                return 0
            if slot.key == 0:
                slot.key = key
                slot.value = value
                self.used += 1
                return 0
            i = (i + 1) & self.mask

    cdef int _grow(self, uint64_t size) except -1:
        """Rehash into ``size`` slots."""
        cdef Slot* old = self.slots
        cdef uint64_t n = self.mask + 1, k
        self._alloc(size)
        for k in range(n):
            if old[k].key != 0:
                self.put(old[k].key, old[k].value)
        PyMem_Free(old)
        return 0

    cpdef prune(self, live, Py_ssize_t room=0):
        """Keep only the generator ids in ``live`` (a set of ints: the generator's live
        orders): ``{gen: oid for gen, oid in ids.items() if gen in live}``, in a table sized
        for what can be kept and ``room`` new ids."""
        cdef Slot* old = self.slots
        cdef uint64_t old_mask = self.mask
        cdef int old_shift = self.shift
        cdef Slot* slot
        cdef int64_t key
        cdef uint64_t i
        # (what is kept is at most the live ids and at most what the table holds)
        self._alloc(fit(min(len(live), self.used) + room))  # (this one's kept if it raises)
        try:
            for gen in live:
                key = gen
                if key <= 0:
                    continue
                i = home(key, old_shift)
                while True:
                    slot = &old[i]
                    if slot.key == key:
                        self.put(key, slot.value)
                        break
                    if slot.key == 0:
                        break
                    i = (i + 1) & old_mask
        finally:
            PyMem_Free(old)

    def __getitem__(self, int64_t key):
        """(Python) ``get``: the exchange's order id of generator id ``key``, or 0."""
        return self.get(key) if key > 0 else 0

    def __setitem__(self, int64_t key, int64_t value):
        """(Python) ``put``."""
        self.put(key, value)

    def __len__(self):
        """How many generator ids the map holds."""
        return self.used

    def items(self):
        """The (generator id, exchange order id) pairs, in slot order (tests)."""
        cdef uint64_t k
        return [
            (self.slots[k].key, self.slots[k].value)
            for k in range(self.mask + 1)
            if self.slots[k].key != 0
        ]

    @property
    def capacity(self):
        """The table's slots (tests: it stays sized to what it holds)."""
        return self.mask + 1


cdef class FlowDriver(Action):
    """The compiled step of a ``_FlowDriver`` made with ``typed=True`` on a compiled clock
    (see the module docstring); :meth:`start` schedules the first message."""

    cdef Simulator sim
    cdef object source  # the Python driver: the chunks, the cash and malformed messages
    cdef object row  # the engine's ``handle_row``
    cdef object engine
    # the compiled ``handle_row``'s C entry, when ``row`` is that function bound to the engine
    # (a subclass's or a patch's ``handle_row`` is called as the Python method it is); NULL
    # otherwise
    cdef RowId row_id
    cdef object instrument
    cdef list names
    # generator order id -> exchange order id (in place of the source's dict, which stays
    # empty), pruned per chunk to the generator's live ids
    cdef readonly IdMap ids
    cdef int64_t count, first, n, cash_every, malformed_every
    cdef const int64_t[::1] gen_ids, accounts, prices, qtys, ops, sides, types, tifs, post_only
    cdef const int64_t[::1] times

    def __init__(self, source):
        if source._row is None or not getattr(source, "typed", False):
            raise ValueError("FlowDriver drives a typed _FlowDriver of an engine with handle_row")
        self.source = source
        self.sim = source.sim
        self.row = source._row
        self.engine = source.engine
        self.row_id = NULL
        if (
            getattr(self.row, "__func__", None) is _kernel.handle_row
            and getattr(self.row, "__self__", None) is self.engine
        ):
            self.row_id = <RowId>PyCapsule_GetPointer(
                _kernel.ROW_ID, b"exchange.kernel._kernel.row_id"
            )
        self.instrument = source.instrument
        self.names = source.names
        self.count = source.count
        self.cash_every = source.s.cash_every
        self.malformed_every = source.s.malformed_every
        self._take()
        self.ids = IdMap(self._adds())

    cdef int _take(self) except -1:
        """Read the chunk the source has just loaded."""
        (
            self.gen_ids,
            self.accounts,
            self.prices,
            self.qtys,
            self.ops,
            self.sides,
            self.types,
            self.tifs,
            self.post_only,
        ) = self.source.arrays
        self.times = self.source.times
        self.first = self.source._first
        self.n = self.times.shape[0]
        return 0

    cdef Py_ssize_t _adds(self):
        """The loaded chunk's adds: the most ids it puts in the map."""
        cdef Py_ssize_t k, adds = 0
        for k in range(self.n):
            adds += self.ops[k] == ADD
        return adds

    def start(self):
        """Schedule the first message."""
        if self.count:
            self.sim.schedule_action(self.times[0], self, 0, C_PARTICIPANT)

    cdef int fire(self, int64_t i) except -1:
        """Message ``i``, and the next ones as long as the clock would run them next
        (``Simulator.runs_next``: nothing else due first), each taken in place
        (``Simulator.turn``: the step hook run, as the clock would) -- a burst through which
        the compiled engine holds its ledger (``_kernel.HOLD``, decision 92) until Python is
        about to run: the chunk's load, a cash or malformed message, the end of the burst
        (and the step hook's drain, which lets go itself)."""
        cdef Simulator sim = self.sim
        cdef bint burst = self.row_id != NULL
        cdef int64_t t
        try:
            while True:
                if burst:
                    HOLD(self.engine, True)
                self._step(i)
                if i + 1 >= self.count:
                    return 0
                t = self.times[i + 1 - self.first]
                if not burst or not sim.runs_next(t, C_PARTICIPANT):
                    sim.schedule_action(t, self, i + 1, C_PARTICIPANT)
                    return 0
                sim.turn(t)  # (RunStep lets go of the ledger before it runs Python)
                i += 1
        finally:
            if burst:
                HOLD(self.engine, False)

    cdef int _step(self, int64_t i) except -1:
        """Message ``i``: ``_FlowDriver.step(i)`` with the compiled engine's rows; the next
        chunk loaded when ``i`` is its last (the ledger written back before any Python)."""
        cdef int64_t j = i - self.first
        cdef int64_t op = self.ops[j]
        cdef object name = self.names[self.accounts[j]]
        cdef object order_id
        if self.row_id != NULL:
            if op == ADD:
                order_id = self.row_id(
                    self.engine, name, self.instrument, op, 0, self.prices[j], self.qtys[j],
                    self.sides[j], self.types[j], self.tifs[j], self.post_only[j],
                )
                if order_id is not None:
                    self.ids.put(self.gen_ids[j], order_id)
            else:
                order_id = self.ids.get(self.gen_ids[j])
                self.row_id(
                    self.engine, name, self.instrument, op, order_id, self.prices[j],
                    self.qtys[j], self.sides[j], self.types[j], self.tifs[j],
                    self.post_only[j],
                )
        elif op == ADD:
            result = self.row(
                name, self.instrument, op, 0, self.prices[j], self.qtys[j], self.sides[j],
                self.types[j], self.tifs[j], self.post_only[j],
            )
            order_id = result.order_id
            if order_id is not None:
                self.ids.put(self.gen_ids[j], order_id)
        else:
            order_id = self.ids.get(self.gen_ids[j])
            self.row(
                name, self.instrument, op, order_id, self.prices[j], self.qtys[j],
                self.sides[j], self.types[j], self.tifs[j], self.post_only[j],
            )
        if self.cash_every and i % self.cash_every == self.cash_every - 1:
            HOLD(self.engine, False)
            self.source.cash(i)
        if self.malformed_every and i % self.malformed_every == self.malformed_every - 1:
            HOLD(self.engine, False)
            self.source.malformed(i)
        if i + 1 < self.count and j + 1 == self.n:
            HOLD(self.engine, False)
            # the map pruned as ``_load`` prunes the source's (empty) dict: to the ids live
            # before the next chunk is generated, with room for that chunk's adds
            live = self.source.flow.live_ids()
            self.source._load(i + 1)
            self._take()
            self.ids.prune(live, self._adds())
        return 0


cdef class RunStep(StepHook):
    """``session.run``'s step: ``engine.advance(t)``, then ``drain()`` once ``pending`` (the
    recorder's sink: anything with a length, a list of events or a ``LineBatch``) holds
    ``batch_size`` events or more.

    With ``direct`` (the engine's ``advance`` is ``Exchange.advance``, which only checks that
    time runs forward and sets ``engine.t``), the clock is set here without the Python call,
    and not at all when it is already at ``t``; a ``t`` before the engine's clock still calls
    ``advance``, for its error."""

    cdef object engine
    cdef object pending
    cdef Py_ssize_t batch_size
    cdef object drain
    cdef bint direct

    def __init__(self, engine, pending, Py_ssize_t batch_size, drain, bint direct):
        self.engine = engine
        self.pending = pending
        self.batch_size = batch_size
        self.drain = drain
        self.direct = direct

    cdef int before(self, int64_t t) except -1:
        cdef object now
        if self.direct and ADVANCE(self.engine, t):
            pass  # (the kernel holds the engine's clock in a burst of flow rows)
        else:
            HOLD(self.engine, False)  # (the engine's own clock is read and moved next)
            if self.direct:
                now = self.engine.t
                if type(now) is int and <int64_t>now <= t:
                    if <int64_t>now != t:
                        self.engine.t = t
                else:
                    self.engine.advance(t)
            else:
                self.engine.advance(t)
        if len(self.pending) >= self.batch_size:
            # the drain's Python (the recorder taking the batches, folding and storing them
            # or handing them on; the progress callbacks, given counts and times) reads
            # nothing of the engine: a held ledger stays held, written back at the driver's
            # next Python instead of at every batch (decision 112)
            try:
                self.drain()
            except BaseException:
                HOLD(self.engine, False)  # (whatever reads the engine next: as before)
                raise
        return 0
