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

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t

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
    cdef dict ids  # generator order id -> exchange order id (the source's, pruned per chunk)
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
        self.ids = self.source.ids
        return 0

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
                    self.ids[self.gen_ids[j]] = order_id
            else:
                order_id = self.ids.get(self.gen_ids[j], 0)
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
                self.ids[self.gen_ids[j]] = order_id
        else:
            order_id = self.ids.get(self.gen_ids[j], 0)
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
            self.source._load(i + 1)
            self._take()
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
            HOLD(self.engine, False)
            self.drain()
        return 0
