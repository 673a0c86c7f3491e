# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled order path of :class:`exchange.kernel.compiled.CompiledExchange` (issue #20, point 1).

:func:`handle` is ``CompiledExchange.handle``: the flat trading commands (``submit``,
``cancel``, ``amend``, ``deposit``, ``withdraw``, ``cancel_all``) are validated here, once, and
executed with typed locals, without pydantic and without the ``jsonable`` round trip; their
events, state changes and ``Result`` are exactly those of the reference engine
(``exchange.kernel.engine.Exchange``: ``handle`` -> ``_execute`` -> ``_submit`` / ``_cancel`` / ...
-> ``_check_limits`` / ``_after_match`` / ``_trade`` / ``_fee``), which this file mirrors step
for step.

**Validation at the edge, exact.** A raw command takes the fast path only when this file can
prove that the reference would accept it -- that ``parse_command(jsonable(raw))`` gives a model
with the same values (a ``dict`` whose keys, each an exact ``str``, are all fields of its
type, required ones present;
ints of exact type ``int`` within the models' bounds, never a bool; names of type ``str``, 1 to
64 ASCII characters; ``post_only`` a bool; the literals) -- and that every engine check would
pass (account known, not defaulted; instrument listed and not expired; price in range; own
order; the limits; the cash bounds).

**Refusals, compiled.** Once a command is proven to parse, the engine's own refusals of it are
given here too, in the order ``Exchange._execute`` and its callees check them, word for word:
an unknown or defaulted account, an order id that is not the account's resting order, an
unknown or expired instrument, a price outside the range, a market order with a time in force,
a post-only order that is not gtc, an order under a collateral call that does not reduce the
position, a withdrawal past the cash, a deposit past the ledger's bound -- one
``CommandRejected`` with ``jsonable(raw)`` and the reason, nothing else (:func:`_refuse`). A
limit the compiled check cannot prove is asked of the reference's own ``_check_limits`` (the
engine's is it: :meth:`Kernel.usable`), whose ``CommandError`` is the refusal. Every refusal
of the reference is raised before a command's first event, so a refusal given here has the
reference's events exactly; tests hold them byte-identical (tests/exchange/
test_engine_differential.py aims hypothesis streams at each).

**Left to the reference.** A command that does not parse (pydantic's reasons are the
reference's), a deposit of a defaulted account or of one under a call (it reviews the call), a
swap under bilateral clearing, an order past a limit that the reference lets through (an
account already past it that makes nothing worse), a value past the bounds this file computes
in: ``Exchange.handle(engine, raw)``, unchanged. On `flow`, that is only the malformed
commands the scenario sprinkles in (0.03 % of its commands; 3.7 % before the refusals were
compiled).

**Rows as values.** :func:`handle_row` takes a `flow` generator row's values (the compiled
engine's ``handle_row``), runs the same checks and events, and builds the mapping
(:func:`row_command`) only for a refusal's log or to hand the row to ``handle``.

**Arithmetic.** Ticks, lots and rates are int64 locals; products that could pass int64 (an
exposure, a notional, a fee's numerator) are computed in 128 bits from operands this file
bounds first (the compiler's ``__int128``: gcc and clang, as the project's builds use), and the
ledger's running values (cash, positions, bases, pools) stay the engine's Python ints, so no
sum can wrap.

The engine's state stays its Python objects this slice (``Account`` dataclasses, dicts,
``LiveOrder``); the kernel reads and writes them directly -- through the objects' instance
dicts, which is what attribute access does for these plain classes (no descriptor, no
``__getattr__``: checked once per class), at a third of its cost. An engine whose
order-path methods are overridden (a subclass, or a test's monkeypatch on the instance) takes
the reference path for every command.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.dict cimport PyDict_GetItem, PyDict_Next, PyDict_Size
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from exchange.core._lines cimport Buf, LineBatch, put_bytes, put_value
from matching_core._records cimport Cancel, Fill

import dataclasses

from exchange.core import events as ev
from exchange.core.commands import (
    MAX_BALANCE,
    MAX_EXPOSURE,
    MAX_POSITION_LOTS,
    CommandError,
)
from exchange.kernel.engine import Account, Exchange, Listing, LiveOrder, Result
from exchange.core.events import Event
from matching_core import Reject
from matching_core.codes import CANCEL_DTYPE, FILL_DTYPE

cdef extern from *:
    # GCC/Clang's 128-bit integer, for products of two int64 values (never converted to a
    # Python object directly: see _py128)
    ctypedef long long i128 "__int128"

cdef extern from *:
    """
    /* tuple.__new__(cls, items) for a tuple subclass (a namedtuple), as CPython's
       tuple_subtype_new builds it -- cls->tp_alloc, then each item -- without the
       intermediate tuple and the call: the same object, a third of the cost. */
    static PyObject* gpuex_tuple3(PyTypeObject* cls, PyObject* a, PyObject* b, PyObject* c) {
        PyObject* t = cls->tp_alloc(cls, 3);
        if (t == NULL) return NULL;
        Py_INCREF(a); PyTuple_SET_ITEM(t, 0, a);
        Py_INCREF(b); PyTuple_SET_ITEM(t, 1, b);
        Py_INCREF(c); PyTuple_SET_ITEM(t, 2, c);
        return t;
    }
    /* the type's attribute-cache version: it changes whenever the class or a base is
       modified (a method set or deleted); 0 while unassigned */
    static unsigned int gpuex_type_version(PyTypeObject* cls) {
        return (cls->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? cls->tp_version_tag : 0;
    }
    /* cls.__new__(cls) for a plain class (object's tp_new, no __init__) */
    static PyObject* gpuex_new(PyTypeObject* cls) {
        PyObject* args = PyTuple_New(0);
        PyObject* obj;
        if (args == NULL) return NULL;
        obj = cls->tp_new(cls, args, NULL);
        Py_DECREF(args);
        return obj;
    }
    static PyObject* gpuex_tuple13(
        PyTypeObject* cls, PyObject* f0, PyObject* f1, PyObject* f2, PyObject* f3,
        PyObject* f4, PyObject* f5, PyObject* f6, PyObject* f7, PyObject* f8, PyObject* f9,
        PyObject* f10, PyObject* f11, PyObject* f12
    ) {
        PyObject* items[13] = {f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12};
        PyObject* t = cls->tp_alloc(cls, 13);
        Py_ssize_t i;
        if (t == NULL) return NULL;
        for (i = 0; i < 13; i++) {
            Py_INCREF(items[i]);
            PyTuple_SET_ITEM(t, i, items[i]);
        }
        return t;
    }
    """
    object gpuex_tuple3(PyTypeObject* cls, object a, object b, object c)
    object gpuex_new(PyTypeObject* cls)
    unsigned int gpuex_type_version(PyTypeObject* cls)
    object gpuex_tuple13(
        PyTypeObject* cls, object f0, object f1, object f2, object f3, object f4, object f5,
        object f6, object f7, object f8, object f9, object f10, object f11, object f12
    )

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    PyObject** _PyObject_GetDictPtr(object)


# ----------------------------------------------------------------------------- constants
cdef int64_t C_MAX_BALANCE = MAX_BALANCE
cdef int64_t C_MAX_EXPOSURE = MAX_EXPOSURE
cdef int64_t C_MAX_POSITION_LOTS = MAX_POSITION_LOTS
# the models' bound on every int field (PositiveInt, Submit.price)
cdef int64_t C_MAX_INT = 1 << 62
# the fast path's own bounds, far above anything the limits let through (a command past them
# is the reference's): an order's lots (the book's largest quantity), and the lots an
# account holds or has on the book in one instrument
cdef int64_t FAST_MAX_QTY = 1 << 40
cdef int64_t FAST_MAX_LOTS = 1 << 42
# the largest price (ticks) x tick value (minor units) an instrument may have for the fast
# path: a notional, price x qty x tick value, then fits 103 bits
cdef int64_t FAST_MAX_TOP = 1 << 62

# the book's records (matching_core.codes: FILL_DTYPE, CANCEL_DTYPE), read in place from its
# buffers (OrderBook.fill_arr / cancel_arr, the first n_fills / n_cancels records)
ctypedef Fill BookFill
ctypedef Cancel BookCancel


def _same_layout(dtype, names, size) -> bool:
    """Whether ``dtype`` is the int64 record this file reads as a struct of ``names``."""
    return (
        dtype.itemsize == size
        and dtype.names == names
        and all(dtype.fields[name][0] == "<i8" for name in names)
        and [dtype.fields[name][1] for name in names] == [8 * k for k in range(len(names))]
    )


if not (
    _same_layout(
        FILL_DTYPE,
        (
            "taker_order_id",
            "maker_order_id",
            "taker_account",
            "maker_account",
            "price",
            "qty",
            "msg_index",
        ),
        sizeof(BookFill),
    )
    and _same_layout(CANCEL_DTYPE, ("order_id", "account", "qty", "msg_index"), sizeof(BookCancel))
):  # pragma: no cover - a change to matching_core.codes this file must follow
    raise ImportError("exchange.kernel._kernel: the book's record layouts have changed")

cdef enum:
    SPOT = 0
    PERP = 1
    RVS = 2

_REJECT_NAMES = {int(code): code.name.lower() for code in Reject}
_SIDE_NAME = ("buy", "sell")
_NO_LOTS = (0, 0)
#: The engine methods this file stands in for: an engine that overrides any of them (its
#: class, or its instance) is the reference's, command by command.
HOOKS = (
    "_emit",
    "_execute",
    "_received",
    "_reject",
    "_submit",
    "_cancel",
    "_amend",
    "_deposit",
    "_withdraw",
    "_cancel_all_command",
    "_cancel_all",
    "_after_match",
    "_trade",
    "_fee",
    "_check_limits",
    "_listing",
    "_check_price",
    "_own_order",
    "credit",
)
#: The reference's own functions for them, as this module found them.
_REFERENCE_HOOKS = tuple(getattr(Exchange, name) for name in HOOKS)

cdef str COMMAND_RECEIVED = ev.COMMAND_RECEIVED
cdef str ORDER_ACCEPTED = ev.ORDER_ACCEPTED
cdef str ORDER_REJECTED = ev.ORDER_REJECTED
cdef str ORDER_RESTED = ev.ORDER_RESTED
cdef str ORDER_CANCELLED = ev.ORDER_CANCELLED
cdef str ORDER_AMENDED = ev.ORDER_AMENDED
cdef str FILL = ev.FILL
cdef str FEE = ev.FEE
cdef str DEPOSIT = ev.DEPOSIT
cdef str WITHDRAWAL = ev.WITHDRAWAL
cdef str COMMAND_REJECTED = ev.COMMAND_REJECTED


#: The attributes this file reads and writes through instance dicts, by class: a class whose
#: attribute access could be anything else (a descriptor of that name, ``__getattribute__``,
#: ``__setattr__``) is the reference's.
ENGINE_ATTRS = (
    "seq",
    "t",
    "_sink",
    "accounts",
    "defaulted",
    "instruments",
    "calls",
    "margin",
    "next_order_id",
    "orders",
    "_by_index",
    "pools",
    "deposited",
    "withdrawn",
)
ACCOUNT_ATTRS = ("name", "index", "cash", "positions", "basis", "vm_basis", "open_lots")
LISTING_ATTRS = ("spec", "book", "expired", "last_price")
ORDER_ATTRS = ("account", "instrument", "side", "price")


def plain_attributes(cls, names) -> bool:
    """Whether reading and writing ``names`` on an instance of ``cls`` is its instance dict's
    ``get`` and ``set``: ``cls`` has the default ``__getattribute__`` and ``__setattr__``, no
    ``__getattr__``, and no descriptor of those names in its MRO (a plain class value is
    shadowed by the instance's)."""
    if cls.__getattribute__ is not object.__getattribute__:
        return False
    if cls.__setattr__ is not object.__setattr__ or hasattr(cls, "__getattr__"):
        return False
    for name in names:
        for klass in cls.__mro__:
            if name in klass.__dict__:
                value = klass.__dict__[name]
                if hasattr(type(value), "__get__") or hasattr(type(value), "__set__"):
                    return False
                break
    return True


# the engine's own record classes are fixed: checked once, here (a LiveOrder is made as its
# dataclass __init__ would make it: its four fields, in order, nothing after)
if not (
    plain_attributes(Account, ACCOUNT_ATTRS)
    and plain_attributes(Listing, LISTING_ATTRS)
    and plain_attributes(LiveOrder, ORDER_ATTRS)
    and tuple(field.name for field in dataclasses.fields(LiveOrder)) == ORDER_ATTRS
    and not hasattr(LiveOrder, "__post_init__")
    and LiveOrder.__new__ is object.__new__
):  # pragma: no cover - a change to exchange.kernel.engine's classes this file must follow
    raise ImportError("exchange.kernel._kernel: Account, Listing or LiveOrder has changed")


# ----------------------------------------------------------------------------- helpers
cdef inline dict _attrs(object obj):
    """``obj.__dict__`` (made if the object keeps its attributes inline)."""
    cdef PyObject** ptr = _PyObject_GetDictPtr(obj)
    if ptr == NULL or ptr[0] == NULL:
        raise TypeError(f"{type(obj).__name__} has no instance dict")
    return <dict>ptr[0]


cdef inline object _py128(i128 v):
    """A 128-bit integer as a Python int (exactly, whatever its size)."""
    cdef int64_t hi
    if -(<i128>1 << 63) <= v < (<i128>1 << 63):
        return <int64_t>v
    hi = <int64_t>(v >> 64)
    return (<object>hi << 64) + <object>(<unsigned long long>(v & <i128>0xFFFFFFFFFFFFFFFF))


cdef inline bint _name_ok(object v):
    """Whether ``v`` is a value the models' ``Name`` takes and ``jsonable`` keeps as is: a
    ``str`` of 1 to 64 characters (ASCII: no surrogate orjson would refuse)."""
    cdef Py_ssize_t n
    if type(v) is not str:
        return False
    n = PyUnicode_GET_LENGTH(v)
    return 1 <= n <= 64 and PyUnicode_IS_ASCII(v)


cdef inline int _int_of(object v, int64_t low, int64_t* out):
    """1 and ``out`` set when ``v`` is an ``int`` (exactly: no bool, no numpy int) in
    ``low..2**62``; else 0."""
    cdef int overflow = 0
    cdef long long x
    if type(v) is not int:
        return 0
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or x < low or x > C_MAX_INT:
        return 0
    out[0] = x
    return 1


cdef inline object _result(object ok, object order_id, object reason):
    """``Result(ok, order_id, reason)``, built as ``tuple.__new__`` builds it."""
    return gpuex_tuple3(<PyTypeObject*>Result, ok, order_id, reason)


# The sink of lines (issue #20, point 1): when the engine's sink is a LineBatch's ``append``
# (a recorded run's), an event is written straight into its buffer as its canonical line --
# no Event tuple, no Python call -- byte for byte what ``append(Event(...))`` writes. The last
# sink seen is remembered (held, so its identity cannot be reused) with its verdict: the
# engine keeps one sink object until ``subscribe`` replaces it.
cdef object _seen_sink = None
cdef LineBatch _seen_lines = None


cdef inline LineBatch _lines_of(object sink):
    """The LineBatch whose ``append`` ``sink`` is, else None."""
    global _seen_sink, _seen_lines
    if sink is _seen_sink:
        return _seen_lines
    owner = getattr(sink, "__self__", None)
    lines = None
    if type(owner) is LineBatch and getattr(sink, "__name__", None) == "append":
        lines = owner
    _seen_sink = sink
    _seen_lines = lines
    return lines


cdef int _put_line(
    LineBatch lines,
    object seq,
    object t,
    object kind,
    object instrument,
    object account,
    object order_id,
    object side,
    object price,
    object qty,
    object amount,
    object counterparty,
    object counter_order_id,
    object data,
    object key,
) except -1:
    """The event's line written into ``lines`` (1), or nothing (0) when the event is not one
    the C encoder writes whole (a float, a subclass...) or its seq is not the next line's:
    the caller then gives ``lines.append`` the Event, whose checks and orjson say the rest.
    With ``key`` (a str), the event's data is ``{key: data}``, written without the dict."""
    cdef PyObject* fields[13]
    cdef Buf* b = &lines.buf
    cdef Py_ssize_t start = b.len
    cdef long long c_t
    cdef int overflow = 0
    cdef int i
    if type(seq) is not int or type(t) is not int or seq != lines.first + lines.count:
        return 0
    c_t = PyLong_AsLongLongAndOverflow(t, &overflow)
    if overflow:
        return 0
    fields[0] = <PyObject*>seq
    fields[1] = <PyObject*>t
    fields[2] = <PyObject*>kind
    fields[3] = <PyObject*>instrument
    fields[4] = <PyObject*>account
    fields[5] = <PyObject*>order_id
    fields[6] = <PyObject*>side
    fields[7] = <PyObject*>price
    fields[8] = <PyObject*>qty
    fields[9] = <PyObject*>amount
    fields[10] = <PyObject*>counterparty
    fields[11] = <PyObject*>counter_order_id
    fields[12] = <PyObject*>data
    put_bytes(b, b"[", 1)
    for i in range(13 if key is None else 12):
        if i:
            put_bytes(b, b",", 1)
        # depth 1: the event's own array, as the encoder's walk of an Event tuple
        if put_value(b, fields[i], 1) != 0:
            b.len = start
            return 0
    if key is not None:  # a one-key mapping: nothing to sort; its value one level deeper
        put_bytes(b, b",{", 2)
        if put_value(b, <PyObject*>key, 2) != 0:
            b.len = start
            return 0
        put_bytes(b, b":", 1)
        if put_value(b, <PyObject*>data, 2) != 0:
            b.len = start
            return 0
        put_bytes(b, b"}", 1)
    put_bytes(b, b"]", 1)
    lines.end_line(c_t)
    return 1


cdef inline object _emit_with(
    dict E,
    object kind,
    object instrument,
    object account,
    object order_id,
    object side,
    object price,
    object qty,
    object amount,
    object counterparty,
    object counter_order_id,
    object data,
    object key,
):
    """``Exchange._emit`` (``E`` the engine's attributes): number (the engine's ``seq``
    first), stamp and pass on one event; the sink is read at each event, as ``subscribe`` may
    have replaced it. A LineBatch's ``append`` gets the event's line, written here. With
    ``key``, the event's data is ``{key: data}`` (the dict made only for an Event)."""
    seq = E["seq"] + 1
    E["seq"] = seq
    sink = E["_sink"]
    lines = _lines_of(sink)
    if lines is not None and _put_line(
        lines, seq, E["t"], kind, instrument, account, order_id, side, price, qty, amount,
        counterparty, counter_order_id, data, key,
    ):
        return None
    if key is not None:
        data = {key: data}
    # tuple.__new__(Event, (...)), as Exchange._emit, built directly
    event = gpuex_tuple13(
        <PyTypeObject*>Event,
        seq,
        E["t"],
        kind,
        instrument,
        account,
        order_id,
        side,
        price,
        qty,
        amount,
        counterparty,
        counter_order_id,
        data,
    )
    sink(event)


cdef inline object _emit(
    dict E,
    object kind,
    object instrument,
    object account,
    object order_id,
    object side,
    object price,
    object qty,
    object amount,
    object counterparty,
    object counter_order_id,
    object data,
):
    """:func:`_emit_with` of an event whose data is ``data`` (a mapping or None)."""
    _emit_with(E, kind, instrument, account, order_id, side, price, qty, amount, counterparty,
               counter_order_id, data, None)


cdef inline object _emit1(
    dict E,
    object kind,
    object instrument,
    object account,
    object order_id,
    object side,
    object price,
    object qty,
    object amount,
    object counterparty,
    object counter_order_id,
    str key,
    object value,
):
    """:func:`_emit_with` of an event whose data is ``{key: value}``."""
    _emit_with(E, kind, instrument, account, order_id, side, price, qty, amount, counterparty,
               counter_order_id, value, key)


cdef inline void _received(dict E, object account, dict command):
    _emit1(E, COMMAND_RECEIVED, None, account, None, None, None, None, None, None, None,
          "command", command)


cdef inline i128 _fee(i128 notional, int64_t bps):
    """``exchange.products.instruments.fee``: rounded half away from zero, once."""
    cdef i128 numerator = (notional if notional >= 0 else -notional) * (bps if bps >= 0 else -bps)
    cdef i128 magnitude = (numerator + 5_000) // 10_000
    return magnitude if bps >= 0 else -magnitude


cdef inline void _pay_fee(
    dict E, dict A, object name, object order_id, i128 amount, str role
):
    """``Exchange._fee`` (``A`` the account's attributes): the fee moves (cash to the fee
    pool), then ``Fee``; none when 0."""
    cdef object value
    cdef dict pools
    if amount:
        value = _py128(amount)
        A["cash"] = A["cash"] - value
        pools = E["pools"]
        pools["fees"] = pools["fees"] + value
        _emit1(E, FEE, name, A["name"], order_id, None, None, None, -value, None, None,
              "role", role)


cdef inline void _move_lots(
    dict A, object name, object delta, object change, object premium
):
    """One side of ``exchange.risk.variation.move_lots``: ``delta`` lots into the position, the VM
    basis by ``change`` (when not 0), a swap's premium basis by ``premium`` (when not None),
    in that order."""
    cdef dict positions = A["positions"]
    cdef dict vm_basis, basis
    positions[name] = positions.get(name, 0) + delta
    if change:
        vm_basis = A["vm_basis"]
        vm_basis[name] = vm_basis.get(name, 0) + change
    if premium is not None:
        basis = A["basis"]
        basis[name] = basis.get(name, 0) + premium


cdef inline void _book_record(object array, int64_t i, void* out, size_t size):
    """Copy record ``i`` (``size`` bytes) of a book's buffer ``array`` (a contiguous numpy
    array of its records) into ``out``."""
    cdef Py_buffer view
    PyObject_GetBuffer(array, &view, PyBUF_SIMPLE)
    try:
        if (i + 1) * <Py_ssize_t>size > view.len:
            raise IndexError("record past the book's buffer")
        memcpy(out, <char*>view.buf + i * size, size)
    finally:
        PyBuffer_Release(&view)


cdef inline void _add_lots(dict A, object name, int side, object lots):
    """``account.open_lots[name][side] += lots``."""
    cdef list both = A["open_lots"][name]
    both[side] = both[side] + lots


# ----------------------------------------------------------------------------- instruments
cdef class _Listing:
    """What the order path needs of one listing, typed once (the spec is frozen; the cache
    entry is dropped when the instrument's ``Listing`` or its spec is no longer the same
    object)."""

    cdef object listing
    cdef object spec
    cdef object book
    cdef object name
    cdef int kind
    cdef bint fast  # every value below fits the bounds this file computes in
    cdef int64_t tick_value, min_price, max_price
    cdef int64_t maker_bps, taker_bps
    cdef int64_t r_position, r_basis, r_price, r_cash

    def __init__(self, listing):
        spec = listing.spec
        rates = listing.limits
        self.listing = listing
        self.spec = spec
        self.book = listing.book
        self.name = spec.name
        kind = spec.kind
        self.kind = SPOT if kind == "spot" else PERP if kind == "perp" else RVS
        self.fast = False
        if type(listing) is not Listing or kind not in ("spot", "perp", "rvs"):
            return
        tick_value = spec.tick_value
        min_price = getattr(spec, "min_price", 1)  # as Exchange._check_price reads it
        values = (
            tick_value,
            min_price,
            spec.max_price,
            spec.maker_fee_bps,
            spec.taker_fee_bps,
            rates.position,
            rates.basis,
            rates.price,
            rates.cash,
        )
        if not all(type(v) is int and abs(v) < (1 << 62) for v in values):
            return
        if any(v < 0 for v in (tick_value, rates.position, rates.basis, rates.price, rates.cash)):
            return
        if spec.max_price * tick_value > FAST_MAX_TOP or spec.max_price > (1 << 53):
            return
        if listing.book.max_qty > FAST_MAX_QTY:  # a fill's lots, at most the book's largest
            return
        self.tick_value = tick_value
        self.min_price = min_price
        self.max_price = spec.max_price
        self.maker_bps = spec.maker_fee_bps
        self.taker_bps = spec.taker_fee_bps
        self.r_position = rates.position
        self.r_basis = rates.basis
        self.r_price = rates.price
        self.r_cash = rates.cash
        self.fast = True


cdef inline bint _bilateral(dict E):
    """``exchange.risk.bilateral.is_bilateral``."""
    margin = E["margin"]
    return margin is not None and margin.clearing == "bilateral"


# ----------------------------------------------------------------------------- the kernel
cdef class Kernel:
    """The per-engine state of the compiled path: the typed listings, and whether the
    engine's order-path methods and attributes are still the reference's."""

    cdef dict listings
    cdef object engine_type
    cdef unsigned int type_version
    cdef bint type_ok
    cdef Py_ssize_t dict_size
    cdef bint patched
    cdef bint rows_ok  # the class's ``handle`` is this file's (for :func:`handle_row`)
    cdef bint handle_patched  # the instance holds a ``handle`` of its own

    def __init__(self):
        self.listings = {}
        self.engine_type = None
        self.type_version = 0
        self.type_ok = False
        self.dict_size = -1
        self.patched = True
        self.rows_ok = False
        self.handle_patched = True

    cdef bint usable(self, object engine, dict E) except -1:
        """Whether ``engine`` (``E`` its attributes) runs the reference's order path: its
        class's :data:`HOOKS` are the reference's own functions (no override in a subclass,
        no monkeypatch on a class: checked again whenever the class's version changes) and
        its attributes are plain (:func:`plain_attributes`), and its instance holds none of
        them (checked again whenever the instance's attribute count changes, which a
        monkeypatch's set and undo do)."""
        cdef Py_ssize_t size
        cls = type(engine)
        if cls is not self.engine_type or (
            gpuex_type_version(<PyTypeObject*>cls) != self.type_version
            or self.type_version == 0
        ):
            self.engine_type = cls
            self.type_ok = plain_attributes(cls, ENGINE_ATTRS) and all(
                getattr(cls, name) is reference
                for name, reference in zip(HOOKS, _REFERENCE_HOOKS)
            )
            self.rows_ok = getattr(cls, "handle", None) is handle
            # (the look-ups above gave the class a version if it had none)
            self.type_version = gpuex_type_version(<PyTypeObject*>cls)
            self.dict_size = -1
        if not self.type_ok:
            return False
        size = PyDict_Size(E)
        if size != self.dict_size:
            self.dict_size = size
            self.patched = any(name in E for name in HOOKS) or not all(
                name in E for name in ENGINE_ATTRS
            )
            self.handle_patched = "handle" in E
        return not self.patched

    cdef bint rows(self, object engine, dict E) except -1:
        """Whether :func:`handle_row` may run ``engine``'s row itself: :meth:`usable`, and
        the engine's ``handle`` is :func:`handle` (a subclass or a patch that wraps
        ``handle`` sees every command the driver sends, as it did with dicts)."""
        return self.usable(engine, E) and self.rows_ok and not self.handle_patched

    cdef _Listing listing(self, object listing, object name):
        """The typed view of ``listing`` (built at first use, again if it changed)."""
        cdef _Listing info
        cdef PyObject* found = PyDict_GetItem(self.listings, name)
        if found != NULL:
            info = <_Listing>found
            if info.listing is listing and _attrs(listing)["spec"] is info.spec:
                return info
        info = _Listing(listing)
        self.listings[name] = info
        return info

def handle(self, raw):
    """Validate and execute one command from outside (``Exchange.handle``'s contract: same
    events, same state changes, same :class:`~exchange.kernel.engine.Result`). The flat trading
    commands the module docstring describes run here, and so do their commonest refusals
    (one ``CommandRejected``, the reference's reason word for word); anything else, and
    anything not proven, is ``Exchange.handle(self, raw)``'s."""
    cdef PyObject** attributes = _PyObject_GetDictPtr(self)
    cdef PyObject* found
    cdef Kernel kernel
    cdef dict E
    if attributes == NULL or attributes[0] == NULL:
        return Exchange.handle(self, raw)
    E = <dict>attributes[0]
    found = PyDict_GetItem(E, "_kernel")
    if found == NULL or type(<object>found) is not Kernel:
        self._kernel = Kernel()  # an engine made without __init__ (a copy): its own
        return Exchange.handle(self, raw)
    kernel = <Kernel>found
    result = None
    if type(raw) is dict and kernel.usable(self, E):
        result = _run(kernel, self, E, <dict>raw)
        if type(result) is str:
            return _refuse(E, <dict>raw, result)
    if result is None:
        return Exchange.handle(self, raw)
    return result


#: The flow driver's codes (``matching_core``'s ``Op``, ``OrderType`` and the generator's
#: time-in-force index) as the command's literals.
_ROW_SIDES = ("buy", "sell")
_ROW_TIFS = ("gtc", "ioc", "fok")
cdef enum:
    ROW_ADD = 0
    ROW_CANCEL = 1
    ROW_AMEND = 2


def row_command(name, instrument, int op, order_id, price, qty, int side, int order_type,
                int tif, int post_only):
    """The command mapping a `flow` row stands for, as the flow driver builds it for the
    reference engine (``exchange.sessions.scenarios._FlowDriver.send``): :func:`handle_row` hands this
    to ``handle`` whenever it cannot run the row itself."""
    if op == ROW_ADD:
        command = {
            "type": "submit",
            "account": name,
            "instrument": instrument,
            "side": _ROW_SIDES[side],
            "qty": qty,
        }
        if order_type == 1:
            command["order_type"] = "market"
            if price:
                command["price"] = price
        else:
            command["price"] = price
            command["tif"] = _ROW_TIFS[tif]
            command["post_only"] = bool(post_only)
        return command
    if op == ROW_CANCEL:
        return {"type": "cancel", "account": name, "order_id": order_id}
    return {"type": "amend", "account": name, "order_id": order_id, "price": price, "qty": qty}


def handle_row(self, name, instrument, int op, order_id, price, qty, int side, int order_type,
               int tif, int post_only):
    """``handle(row_command(...))`` -- the same events, state changes and ``Result`` -- for
    one row of the `flow` generator, taken as its values rather than a mapping: ``op`` 0
    submit, 1 cancel, 2 amend (``matching_core.Op``); ``name`` the account, ``instrument``
    the instrument's name; ``order_id`` the exchange's order id (cancel, amend; ignored for a
    submit); ``price`` in ticks (0: none, for a market order), ``qty`` in lots; ``side`` 0
    buy, 1 sell; ``order_type`` 0 limit, 1 market; ``tif`` 0 gtc, 1 ioc, 2 fok; ``post_only``
    0 or 1. The values are checked as the dict path checks them (exact ``int`` in the models'
    bounds, names of 1 to 64 ASCII characters); a row that is not proven, an engine whose
    ``handle`` is overridden or patched, or an engine the compiled path does not run, takes
    the mapping's path. Codes out of their range raise ValueError (a driver's bug, not a
    client's command)."""
    cdef PyObject** attributes = _PyObject_GetDictPtr(self)
    cdef PyObject* found
    cdef Kernel kernel
    cdef dict E
    cdef int64_t c_order_id = 0, c_price = 0, c_qty = 0
    if not (0 <= op <= 2 and 0 <= side <= 1 and 0 <= order_type <= 1 and 0 <= tif <= 2
            and 0 <= post_only <= 1):
        raise ValueError(
            f"handle_row: a code out of range (op {op}, side {side}, order_type {order_type}, "
            f"tif {tif}, post_only {post_only})"
        )
    if attributes == NULL or attributes[0] == NULL:
        return self.handle(row_command(name, instrument, op, order_id, price, qty, side,
                                       order_type, tif, post_only))
    E = <dict>attributes[0]
    found = PyDict_GetItem(E, "_kernel")
    if found == NULL or type(<object>found) is not Kernel or not (<Kernel>found).rows(self, E):
        return self.handle(row_command(name, instrument, op, order_id, price, qty, side,
                                       order_type, tif, post_only))
    kernel = <Kernel>found
    result = None
    if _name_ok(name):
        A = _account(E, name)
        if A is None:
            pass
        elif op == ROW_ADD:
            if _name_ok(instrument) and _int_of(qty, 1, &c_qty) and _int_of(price, 0, &c_price):
                if order_type == 0:
                    result = _submit_checked(
                        kernel, self, E, A, name, instrument, side, _ROW_SIDES[side], True,
                        "limit", c_price, price, c_qty, qty, _ROW_TIFS[tif], post_only != 0,
                        True if post_only else False,
                    )
                else:
                    result = _submit_checked(
                        kernel, self, E, A, name, instrument, side, _ROW_SIDES[side], False,
                        "market", c_price, price, c_qty, qty, "gtc", False, False,
                    )
        elif op == ROW_CANCEL:
            if _int_of(order_id, 1, &c_order_id):
                result = _cancel_checked(E, A, name, c_order_id, order_id)
        elif (_int_of(order_id, 1, &c_order_id) and _int_of(price, 1, &c_price)
              and _int_of(qty, 1, &c_qty)):
            result = _amend_checked(
                kernel, self, E, A, name, c_order_id, order_id, c_price, price, c_qty, qty
            )
    if result is None or type(result) is str:
        raw = row_command(name, instrument, op, order_id, price, qty, side, order_type, tif,
                          post_only)
        if result is None:
            # not proven: the mapping's own path would decline it the same way
            return Exchange.handle(self, raw)
        return _refuse(E, raw, result)
    return result


# ----------------------------------------------------------------------------- refusals
cdef object _refuse(dict E, dict raw, str reason):
    """``Exchange._reject(jsonable(raw), reason)`` for a command proven to parse: one
    ``CommandRejected`` with the command as the log records it, attributed to its account if
    that is one; nothing else changes. ``raw``'s keys are its model's field names (exact
    ``str``, ASCII) and its values exact ``str`` (ASCII names, the literals), ``int``,
    ``bool`` or None, which a JSON round trip gives back equal: ``jsonable(raw)`` is its copy
    with the keys sorted, built here without the round trip (a microsecond a refusal)."""
    command = dict(sorted(raw.items()))
    account = command["account"]
    if account not in E["accounts"]:
        account = None
    _emit(E, COMMAND_REJECTED, None, account, None, None, None, None, None, None, None,
          {"command": command, "reason": reason})
    return _result(False, None, reason)


#: What :func:`_account` gives for an account that is not one, or has defaulted.
cdef object UNKNOWN = object()
cdef object DEFAULTED = object()


cdef object _account(dict E, object name):
    """``name``'s ``Account`` attributes (a dict); :data:`UNKNOWN` or :data:`DEFAULTED`
    (``Exchange._execute``'s two refusals, once the command is proven to parse); None when
    anything is unusual (the reference's)."""
    try:
        account = E["accounts"].get(name)
        if account is None:
            return UNKNOWN
        if type(account) is not Account:
            return None
        if name in E["defaulted"]:
            return DEFAULTED
        return _attrs(account)
    except Exception:
        return None


cdef inline str _account_refusal(object status, object name):
    """``Exchange._execute``'s reason for an unknown or defaulted account."""
    if status is UNKNOWN:
        return f"account: unknown account {name!r}"
    return f"account: {name!r} has defaulted"


cdef inline str _no_order(object order_id, object name):
    """``Exchange._own_order``'s reason."""
    return f"order_id: no resting order {order_id} of account {name!r}"


cdef inline str _price_refusal(_Listing info, object price, str what):
    """``Exchange._check_price``'s reason (the listing's typed range is its spec's)."""
    return (
        f"{what}: {price} ticks is outside {info.name}'s range "
        f"{info.min_price}..{info.max_price}"
    )


cdef object _limits_refusal(
    object engine, dict E, object listing, object name, int side, object qty, object released
):
    """The reason ``Exchange._check_limits`` (the reference's own function: :meth:`Kernel.
    usable` has proven the engine's is it) refuses an order with, when the compiled check
    could not prove it passes; None when it passes after all (values past this file's
    bounds: the reference's command). Its other exceptions propagate (the caller falls
    back)."""
    try:
        Exchange._check_limits(engine, E["accounts"][name], listing, side, qty, released)
    except CommandError as exc:
        return exc.reason if type(exc.reason) is str else None
    return None


cdef inline bint _plain_keys(dict raw):
    """Whether every key of ``raw`` is an exact ``str``: ``jsonable`` refuses any other key
    (a ``str`` subclass too), so the reference would not parse the command."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    while PyDict_Next(raw, &pos, &key, &value):
        if type(<object>key) is not str:
            return False
    return True


cdef object _run(Kernel kernel, object engine, dict E, dict raw):
    """The command's ``Result``; the reason the reference refuses it with (a ``str``:
    nothing emitted yet, the caller emits the ``CommandRejected``); or None: not proven, the
    reference's to run. A refusal is given only once the command is proven to parse (every
    field as the model takes it), in the order ``Exchange._execute`` and its callees check."""
    cdef PyObject* item
    if not _plain_keys(raw):
        return None
    item = PyDict_GetItem(raw, "type")
    if item == NULL:
        return None
    kind = <object>item
    if type(kind) is not str:
        return None
    item = PyDict_GetItem(raw, "account")
    if item == NULL:
        return None
    name = <object>item
    if not _name_ok(name):
        return None
    A = _account(E, name)
    if A is None:
        return None
    if kind == "submit":
        return _submit(kernel, engine, E, raw, A, name)
    if kind == "cancel":
        return _cancel(E, raw, A, name)
    if kind == "amend":
        return _amend(kernel, engine, E, raw, A, name)
    if kind == "deposit":
        return _deposit(E, raw, A, name)
    if kind == "withdraw":
        return _withdraw(E, raw, A, name)
    if kind == "cancel_all":
        return _cancel_all(E, raw, A, name)
    return None


cdef int _limits_ok(
    _Listing info, dict A, int side, int64_t qty, int64_t released
) except -1:
    """1 when ``Exchange._check_limits`` provably passes for an order of ``qty`` lots on
    ``side`` (an amend's ``released`` open lots off first), without entering its
    past-a-limit branch; else 0 (the reference then decides). Raises (a conversion) when a
    value is past int64: the caller falls back."""
    cdef object name = info.name
    cdef int64_t position = A["positions"].get(name, 0)
    cdef int64_t buying, selling
    cdef int64_t basis = 0
    cdef int64_t cash = A["cash"]
    cdef i128 new_buying, new_selling, new_lots, new_worst, exposure, swing
    buying, selling = A["open_lots"].get(name, _NO_LOTS)
    if not (-FAST_MAX_LOTS <= position <= FAST_MAX_LOTS and 0 <= buying <= FAST_MAX_LOTS
            and 0 <= selling <= FAST_MAX_LOTS):
        return 0
    new_buying = buying
    new_selling = selling
    if side == 0:
        new_buying += qty - released
    else:
        new_selling += qty - released
    new_lots = position + new_buying
    if new_selling - position > new_lots:
        new_lots = new_selling - position
    if new_lots > C_MAX_POSITION_LOTS:
        return 0
    new_worst = new_lots * info.r_position
    if info.r_basis:
        basis = A["basis"].get(name, 0)
        exposure = basis + new_buying * info.r_price
        if new_selling * info.r_price - basis > exposure:
            exposure = new_selling * info.r_price - basis
        if exposure > C_MAX_EXPOSURE or exposure < -C_MAX_EXPOSURE:
            return 0  # (exposure >= 0 whenever open lots are: the reference's to weigh)
        new_worst += exposure * info.r_basis
    if new_worst > C_MAX_EXPOSURE:
        return 0
    swing = (<i128>qty - released) * info.r_cash
    if swing > 0 and not (-C_MAX_BALANCE <= cash - swing <= C_MAX_BALANCE - 2 * swing):
        return 0
    return 1

# ----------------------------------------------------------------------------- submit
cdef object _submit(Kernel kernel, object engine, dict E, dict raw, object A, object name):
    """A raw submit: the model's fields proven (``Submit``, as pydantic -- strict,
    ``extra="forbid"`` -- takes them), then :func:`_submit_checked`."""
    cdef PyObject* item
    cdef Py_ssize_t found = 2  # type, account
    cdef int64_t price = 0, qty = 0
    cdef int side
    item = PyDict_GetItem(raw, "instrument")
    if item == NULL or not _name_ok(<object>item):
        return None
    instrument = <object>item
    found += 1
    item = PyDict_GetItem(raw, "side")
    if item == NULL or type(<object>item) is not str:
        return None
    side_name = <object>item
    if side_name == "buy":
        side = 0
    elif side_name == "sell":
        side = 1
    else:
        return None
    found += 1
    item = PyDict_GetItem(raw, "qty")
    if item == NULL or not _int_of(<object>item, 1, &qty):
        return None
    qty_value = <object>item
    found += 1
    item = PyDict_GetItem(raw, "order_type")
    if item == NULL:
        order_type = "limit"
    else:
        order_type = <object>item
        if type(order_type) is not str or (order_type != "limit" and order_type != "market"):
            return None
        found += 1
    item = PyDict_GetItem(raw, "price")
    if item == NULL:
        price_value = 0
    else:
        price_value = <object>item
        if not _int_of(price_value, 0, &price):
            return None
        found += 1
    item = PyDict_GetItem(raw, "tif")
    if item == NULL:
        tif = "gtc"
    else:
        tif = <object>item
        if type(tif) is not str or (tif != "gtc" and tif != "ioc" and tif != "fok"):
            return None
        found += 1
    item = PyDict_GetItem(raw, "post_only")
    if item == NULL:
        post_only_value = False
    else:
        post_only_value = <object>item
        if type(post_only_value) is not bool:
            return None
        found += 1
    if found != PyDict_Size(raw):
        return None  # a key the model does not have (extra="forbid")
    return _submit_checked(
        kernel, engine, E, A, name, instrument, side, side_name, order_type == "limit",
        order_type, price, price_value, qty, qty_value, tif, post_only_value is True,
        post_only_value,
    )


cdef object _submit_checked(
    Kernel kernel,
    object engine,
    dict E,
    object A,
    object name,
    object instrument,
    int side,
    object side_name,
    bint limit,
    object order_type,
    int64_t price,
    object price_value,
    int64_t qty,
    object qty_value,
    object tif,
    bint post_only,
    object post_only_value,
):
    """A submit whose fields parse (``A`` from :func:`_account`): ``Exchange._execute``'s
    and ``Exchange._submit``'s checks in their order -- each proven to pass, or its refusal
    (a ``str``), or None (the reference's) -- then the events."""
    cdef int code
    cdef int64_t order_id
    cdef _Listing info
    if type(A) is not dict:
        return _account_refusal(A, name)
    try:
        listing = E["instruments"].get(instrument)
        if listing is None:
            return f"instrument: unknown instrument {instrument!r}"
        info = kernel.listing(listing, instrument)
        if not info.fast:
            return None
        if _attrs(listing)["expired"]:
            return f"instrument: {instrument!r} has expired"
        if (limit or price) and not info.min_price <= price <= info.max_price:
            return _price_refusal(info, price_value, "price" if limit else "price (protection)")
        if not limit and (post_only or tif != "gtc"):
            return "order_type: market orders take neither tif nor post_only"
        if post_only and tif != "gtc":
            return "post_only: only a gtc limit order can be post-only"
        if name in E["calls"]:
            # under a collateral call only an order that reduces the position passes
            position = A["positions"].get(info.name, 0)
            reduces = -position if side == 0 else position
            if qty_value > max(reduces, 0):
                return (
                    f"account: {name!r} is under a collateral call; only orders that reduce "
                    f"its position are accepted ({info.name} position {position:+})"
                )
        if info.kind == RVS and _bilateral(E):
            return None  # its fills record bilateral contracts: the reference's
        if qty > FAST_MAX_QTY or not _limits_ok(info, A, side, qty, 0):
            return _limits_refusal(engine, E, listing, name, side, qty_value, 0)
        book_account = A["index"]
    except Exception:
        return None
    # ---- proven: the events (Exchange._submit from _received on)
    _received(
        E,
        name,
        {
            "account": name,
            "type": "submit",
            "instrument": instrument,
            "side": side_name,
            "order_type": order_type,
            "price": price_value,
            "qty": qty_value,
            "tif": tif,
            "post_only": post_only_value,
        },
    )
    order_id_value = E["next_order_id"]
    E["next_order_id"] = order_id_value + 1
    order_id = order_id_value
    book = info.book
    if limit:
        code = book.submit(
            order_id,
            book_account,
            side,
            price,
            qty,
            0 if tif == "gtc" else 1 if tif == "ioc" else 2,
            post_only,
        )
    else:
        code = book.submit_market(order_id, book_account, side, qty, price)
    if code:
        reason = _REJECT_NAMES.get(code) or Reject(code).name.lower()
        _emit1(E, ORDER_REJECTED, info.name, name, order_id_value, None, None, None, None, None,
              None, "reason", reason)
        return _result(False, order_id_value, reason)
    _emit(
        E,
        ORDER_ACCEPTED,
        info.name,
        name,
        order_id_value,
        side_name,
        price_value,
        qty_value,
        None,
        None,
        None,
        {"order_type": order_type, "tif": tif, "post_only": post_only_value},
    )
    if limit:
        remainder = "stp" if tif == "gtc" else tif
    else:
        remainder = "market"
    _after_match(E, info, A, name, order_id_value, side, price_value, remainder)
    return _result(True, order_id_value, None)


cdef void _after_match(
    dict E,
    _Listing info,
    dict taker,
    object taker_name,
    object order_id,
    int side,
    object price,
    object remainder_reason,
):
    """``Exchange._after_match`` (``taker`` the taker's attributes): the book's last outcome
    as fills, fees, STP cancels, the rest or the remainder's cancel -- each state change
    before its event."""
    cdef object book = info.book
    cdef object name = info.name
    cdef int maker_side = 1 - side
    cdef int kind = info.kind
    cdef int64_t tick_value = info.tick_value
    cdef int64_t px, qty, i, n
    cdef i128 notional, cash, change, delta
    cdef dict maker, listing, orders, accounts, open_lots
    cdef list names
    cdef object cash_value, change_value, premium, delta_value, px_value, qty_value, maker_id
    cdef BookFill fill
    cdef BookCancel cancel
    n = book.n_fills
    if n:
        names = E["_by_index"]
        orders = E["orders"]
        accounts = E["accounts"]
        listing = _attrs(info.listing)
        taker_side = _SIDE_NAME[side]
        for i in range(n):
            # one record at a time, copied out of the buffer: nothing below touches the book's
            # fills, but the copy keeps this loop safe even if something did
            _book_record(book.fill_arr, i, &fill, sizeof(BookFill))
            maker_id = fill.maker_order_id
            px = fill.price
            qty = fill.qty
            px_value = px
            qty_value = qty
            maker = _attrs(accounts[names[fill.maker_account]])
            _add_lots(maker, name, maker_side, -qty_value)
            # the book has already matched: a maker order it filled is gone, and the last
            # price is this fill's, before the Fill announces them
            if book.order_qty(maker_id) == 0:
                orders.pop(maker_id, None)
            listing["last_price"] = px_value
            notional = <i128>px * qty * tick_value
            # spot pays the notional at the trade; perpetuals and swaps move no cash there
            if kind == SPOT:
                cash = -notional if side == 0 else notional
            else:
                cash = 0
            # ---- Exchange._trade (exchange.risk.variation.move_lots, then cash, then Fill)
            delta = qty if side == 0 else -qty
            delta_value = _py128(delta)
            change = delta * px * tick_value if kind == PERP else 0
            change_value = _py128(change)
            premium = _py128(px * delta) if kind == RVS else None
            _move_lots(taker, name, delta_value, change_value, premium)
            _move_lots(
                maker,
                name,
                -delta_value,
                -change_value,
                -premium if premium is not None else None,
            )
            cash_value = _py128(cash)
            taker["cash"] = taker["cash"] + cash_value
            maker["cash"] = maker["cash"] - cash_value
            _emit(E, FILL, name, taker_name, order_id, taker_side, px_value, qty_value,
                  cash_value, maker["name"], maker_id, None)
            _pay_fee(E, taker, name, order_id, _fee(notional, info.taker_bps), "taker")
            _pay_fee(E, maker, name, maker_id, _fee(notional, info.maker_bps), "maker")
    n = book.n_cancels
    for i in range(n):
        _book_record(book.cancel_arr, i, &cancel, sizeof(BookCancel))
        maker_id = cancel.order_id
        qty_value = cancel.qty
        owner = _attrs(E["orders"].pop(maker_id))
        _add_lots(_attrs(E["accounts"][owner["account"]]), name, owner["side"], -qty_value)
        _emit1(E, ORDER_CANCELLED, name, owner["account"], maker_id, None, None, qty_value, None,
              None, None, "reason", "stp")
    resting = book.last_resting
    if resting:
        # LiveOrder(taker.name, name, side, price)
        live = gpuex_new(<PyTypeObject*>LiveOrder)
        fields = _attrs(live)
        fields["account"] = taker["name"]
        fields["instrument"] = name
        fields["side"] = side
        fields["price"] = price
        E["orders"][order_id] = live
        open_lots = taker["open_lots"]
        lots = open_lots.get(name)
        if lots is None:
            lots = open_lots[name] = [0, 0]
        lots[side] = lots[side] + resting
        _emit(E, ORDER_RESTED, name, taker_name, order_id, _SIDE_NAME[side], price, resting,
              None, None, None, None)
    cancelled = book.last_cancelled
    if cancelled:
        _emit1(E, ORDER_CANCELLED, name, taker_name, order_id, None, None, cancelled, None, None,
              None, "reason", remainder_reason)


# ----------------------------------------------------------------------------- cancel, amend
cdef object _own_order(dict E, object name, object order_id):
    """``Exchange._own_order``: the attributes of ``name``'s resting ``LiveOrder``
    ``order_id``; its refusal (a ``str``) when there is none; None when the engine's record
    is not a ``LiveOrder`` (the reference's). Raises on an unusual engine (the caller falls
    back)."""
    order = E["orders"].get(order_id)
    if order is None:
        return _no_order(order_id, name)
    if type(order) is not LiveOrder:
        return None
    fields = _attrs(order)
    if fields["account"] != name:
        return _no_order(order_id, name)
    return fields


cdef object _cancel(dict E, dict raw, object A, object name):
    cdef int64_t order_id
    cdef PyObject* item = PyDict_GetItem(raw, "order_id")
    if item == NULL or not _int_of(<object>item, 1, &order_id) or PyDict_Size(raw) != 3:
        return None
    return _cancel_checked(E, A, name, order_id, <object>item)


cdef object _cancel_checked(
    dict E, object A, object name, int64_t order_id, object order_id_value
):
    """A cancel whose fields parse: the account, the order, then the events."""
    cdef dict order
    if type(A) is not dict:
        return _account_refusal(A, name)
    try:
        found = _own_order(E, name, order_id_value)
        if type(found) is not dict:
            return found  # the refusal, or None
        order = found
    except Exception:
        return None
    _received(E, name, {"account": name, "type": "cancel", "order_id": order_id_value})
    instrument = order["instrument"]
    book = E["instruments"][instrument].book
    book.cancel(order_id)
    del E["orders"][order_id_value]
    cancelled = book.last_cancelled
    _add_lots(A, instrument, order["side"], -cancelled)
    _emit1(E, ORDER_CANCELLED, instrument, name, order_id_value, None, None, cancelled, None, None,
          None, "reason", "user")
    return _result(True, order_id_value, None)


cdef object _amend(Kernel kernel, object engine, dict E, dict raw, object A, object name):
    cdef int64_t order_id = 0, price = 0, qty = 0
    cdef PyObject* item
    cdef PyObject* price_item
    cdef PyObject* qty_item
    item = PyDict_GetItem(raw, "order_id")
    price_item = PyDict_GetItem(raw, "price")
    qty_item = PyDict_GetItem(raw, "qty")
    if (
        item == NULL
        or price_item == NULL
        or qty_item == NULL
        or not _int_of(<object>item, 1, &order_id)
        or not _int_of(<object>price_item, 1, &price)
        or not _int_of(<object>qty_item, 1, &qty)
        or PyDict_Size(raw) != 5
    ):
        return None
    return _amend_checked(
        kernel, engine, E, A, name, order_id, <object>item, price, <object>price_item, qty,
        <object>qty_item,
    )


cdef object _amend_checked(
    Kernel kernel,
    object engine,
    dict E,
    object A,
    object name,
    int64_t order_id,
    object order_id_value,
    int64_t price,
    object price_value,
    int64_t qty,
    object qty_value,
):
    """An amend whose fields parse: ``Exchange._amend``'s checks in their order (the
    account, the order, the price, the limits), then the events."""
    cdef int64_t open_qty = 0
    cdef int code, side
    cdef bint kept
    cdef _Listing info
    cdef dict order
    cdef list lots
    if type(A) is not dict:
        return _account_refusal(A, name)
    try:
        found = _own_order(E, name, order_id_value)
        if type(found) is not dict:
            return found  # the refusal, or None
        order = found
        instrument = order["instrument"]
        listing = E["instruments"][instrument]
        info = kernel.listing(listing, instrument)
        if not info.fast:
            return None
        if not info.min_price <= price <= info.max_price:
            return _price_refusal(info, price_value, "price")
        if info.kind == RVS and _bilateral(E):
            return None
        book = info.book
        open_qty = book.order_qty(order_id)
        side = order["side"]
        if qty > FAST_MAX_QTY or not _limits_ok(info, A, side, qty, open_qty):
            return _limits_refusal(engine, E, listing, name, side, qty_value, open_qty)
        kept = price_value == order["price"] and qty <= open_qty
    except Exception:
        return None
    _received(
        E,
        name,
        {
            "account": name,
            "type": "amend",
            "order_id": order_id_value,
            "price": price_value,
            "qty": qty_value,
        },
    )
    code = book.amend(order_id, price, qty)
    if code:
        reason = _REJECT_NAMES.get(code) or Reject(code).name.lower()
        _emit1(E, ORDER_REJECTED, instrument, name, order_id_value, None, None, None, None, None,
              None, "reason", reason)
        return _result(False, order_id_value, reason)
    lots = A["open_lots"][instrument]
    if kept:
        lots[side] = lots[side] + (qty - open_qty)
    else:  # leaves the book and comes back as a new order (which may trade)
        lots[side] = lots[side] - open_qty
        del E["orders"][order_id_value]
    _emit(
        E,
        ORDER_AMENDED,
        instrument,
        name,
        order_id_value,
        _SIDE_NAME[side],
        price_value,
        qty_value,
        None,
        None,
        None,
        {"priority": "kept" if kept else "lost"},
    )
    if not kept:
        _after_match(E, info, A, name, order_id_value, side, price_value, "stp")
    return _result(True, order_id_value, None)


cdef object _cancel_all(dict E, dict raw, object A, object name):
    cdef PyObject* item = PyDict_GetItem(raw, "instrument")
    cdef Py_ssize_t n_fields = 2
    cdef dict orders, instruments, order
    if item == NULL:
        instrument = None
    else:
        instrument = <object>item
        if instrument is not None and not _name_ok(instrument):
            return None
        n_fields = 3
    if PyDict_Size(raw) != n_fields:
        return None
    if type(A) is not dict:
        return _account_refusal(A, name)
    try:
        if instrument is not None and instrument not in E["instruments"]:
            return f"instrument: unknown instrument {instrument!r}"
    except Exception:
        return None
    _received(E, name, {"account": name, "type": "cancel_all", "instrument": instrument})
    # Exchange._cancel_all(name, "user", instrument): oldest order first
    orders = E["orders"]
    instruments = E["instruments"]
    ids = [
        oid
        for oid, o in orders.items()
        if o.account == name and (instrument is None or instrument == o.instrument)
    ]
    for order_id in ids:
        order = _attrs(orders.pop(order_id))
        book = instruments[order["instrument"]].book
        book.cancel(order_id)
        cancelled = book.last_cancelled
        _add_lots(A, order["instrument"], order["side"], -cancelled)
        _emit1(E, ORDER_CANCELLED, order["instrument"], name, order_id, None, None, cancelled,
              None, None, None, "reason", "user")
    return _result(True, None, None)


# ----------------------------------------------------------------------------- cash
cdef object _amount(dict raw):
    """The raw command's ``amount`` when it is a PositiveInt and the only other keys are
    ``type`` and ``account``; else None."""
    cdef int64_t amount
    cdef PyObject* item = PyDict_GetItem(raw, "amount")
    if item == NULL or not _int_of(<object>item, 1, &amount) or PyDict_Size(raw) != 3:
        return None
    return <object>item


cdef object _deposit(dict E, dict raw, object A, object name):
    amount = _amount(raw)
    if amount is None:
        return None
    if type(A) is not dict:
        # a defaulted account may still deposit (Exchange._execute): the reference's
        return _account_refusal(A, name) if A is UNKNOWN else None
    try:
        cash = A["cash"] + amount
        if cash > MAX_BALANCE:
            return (
                f"amount: depositing {amount} minor units would take the cash of {name!r} to "
                f"{cash}, past the ledger's bound of {MAX_BALANCE}"
            )
        total = E["deposited"] + amount
        if total > MAX_BALANCE:
            return (
                f"amount: depositing {amount} minor units would take the session's deposits "
                f"to {total}, past the ledger's bound of {MAX_BALANCE}"
            )
        if name in E["calls"]:
            return None  # the deposit reviews the call: the reference's
    except Exception:
        return None
    _received(E, name, {"account": name, "type": "deposit", "amount": amount})
    # Exchange.credit
    A["cash"] = A["cash"] + amount
    E["deposited"] = E["deposited"] + amount
    _emit(E, DEPOSIT, None, name, None, None, None, None, amount, None, None, None)
    return _result(True, None, None)


cdef object _withdraw(dict E, dict raw, object A, object name):
    amount = _amount(raw)
    if amount is None:
        return None
    if type(A) is not dict:
        return _account_refusal(A, name)
    try:
        cash = A["cash"]
        if amount > cash:
            return f"amount: {amount} exceeds the account's cash of {cash} minor units"
        total = E["withdrawn"] + amount
        if total > MAX_BALANCE:
            return (
                f"amount: withdrawing {amount} minor units would take the session's "
                f"withdrawals to {total}, past the ledger's bound of {MAX_BALANCE}"
            )
    except Exception:
        return None
    _received(E, name, {"account": name, "type": "withdraw", "amount": amount})
    A["cash"] = A["cash"] - amount
    E["withdrawn"] = E["withdrawn"] + amount
    _emit(E, WITHDRAWAL, None, name, None, None, None, None, -amount, None, None, None)
    return _result(True, None, None)
