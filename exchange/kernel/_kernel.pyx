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
order; the limits; the cash bounds). The mapping is read once (:func:`_fields`): one walk of
its items, each key found among the models' field names by identity (a literal key is the
interned name) or by equality, its value kept by field; a key that is not an exact ``str``
or is no field of the command's model is the reference's.

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
(:func:`row_command`) only for a refusal's log or to hand the row to ``handle``. Its C entry
(:data:`ROW_ID`, the compiled flow driver's) takes the numbers as C values and gives only the
order id, with no ``Result`` built on the compiled path.

**Lines, typed.** Into a recorded run's sink (a ``LineBatch``), the order path's hot events
are written as their canonical lines field by field -- ints from C, literals, kinds and keys
as constant bytes, a command's mapping in its sorted-key order with no dict built -- with the
engine's ``seq`` and ``t`` read once per command (see *typed lines* below); anything a typed
writer cannot vouch for takes the generic encoder, byte for byte the same
(tests/exchange/kernel/test_kernel_lines.py and the differential tests hold them to
``encode`` of the reference's events). When the sink keeps its lines in their stored form
(``LineBatch.store_compact``: a recorded run on this engine), the same writers write each
typed line as the batch's tokens instead, with no JSON (``Out.tw``: the pieces of JSON the
writers are made of compiled once into their tokens, names found in the batch's string
table by the object's address, ints as varints; decision 106), the bytes ``compact`` makes
of the line. A cancel-all finds the account's resting orders in
the C books' levels (as ``OrderBook.orders_of`` does, with no tuple per order), merges them
by entry in C and writes its command and each cancel as typed lines
(tests/exchange/kernel/test_kernel_commands.py, test_kernel_cancel_all.py).

**Arithmetic.** Ticks, lots and rates are int64 locals; products that could pass int64 (an
exposure, a notional, a fee's numerator) are computed in 128 bits from operands this file
bounds first (the compiler's ``__int128``: gcc and clang, as the project's builds use), and the
ledger's running values (cash, positions, bases, pools) stay the engine's Python ints, so no
sum can wrap.

The engine's state stays its Python objects (``Account`` dataclasses, dicts, ``LiveOrder``),
which the kernel reads and writes through the objects' instance dicts -- what attribute
access does for these plain classes (no descriptor, no ``__getattr__``: checked once per
class), at a third of its cost. **The held ledger** (decision 92, see "held ledger" below):
the fields a command moves -- each account's cash, one listing's position, VM and premium
bases and open lots, the fee pool -- are read into typed slots at their first use and written
back before any Python can run. A command from Python writes back as it ends; the compiled
flow driver holds the ledger (:data:`HOLD`) across a burst of rows, with the engine's seq,
clock and next order id, and lets go before it calls Python. An engine whose order-path
methods are overridden (a subclass, or a test's monkeypatch on the instance) takes the
reference path for every command.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItemWithError, PyDict_Next, PyDict_Size
from cpython.exc cimport PyErr_Occurred
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from cpython.object cimport PyObject, PyObject_GenericSetAttr, PyTypeObject
from cpython.pycapsule cimport PyCapsule_New
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memset

from exchange.core._compact cimport (
    Frag,
    TokMark,
    Tokens,
    frag_compile,
    frag_free,
    tokens_close,
    tokens_code,
    tokens_frag,
    tokens_gen,
    tokens_indexed,
    tokens_int,
    tokens_number,
    tokens_open,
    tokens_string,
    tokens_undo,
)
from exchange.core._lines cimport Buf, LineBatch, Tap, put_bytes, put_u64, put_value, quiet_at
from exchange.kernel._resting cimport Resting, by_entry, walk_resting
from matching_core._book cimport OrderBook
from matching_core._records cimport Cancel, Fill

import dataclasses
from sys import intern as _intern

import orjson as _orjson

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

# i128 and py128 (a 128-bit integer as a Python int): _kernel.pxd

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


cdef LineBatch lines_of(object sink):
    """The LineBatch whose ``append`` ``sink`` is, else None (the last verdict remembered:
    an engine's sink does not change; shared with ``exchange.kernel._mark``)."""
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
    lines = lines_of(sink)
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


# ----------------------------------------------------------------------------- typed lines
# The order path's hot events (a command's CommandReceived, OrderAccepted, Fill, Fee,
# OrderRested, OrderCancelled, OrderAmended) are written into a LineBatch by typed writers:
# ints from their C values, the literals and keys as constant bytes (orjson's own bytes for
# them, made at import), names through the C encoder's str writer, a command's mapping in
# its canonical (sorted-key) order with no dict built. The bytes are those of the generic
# walk (_put_line) of the same event -- the differential tests hold them to ``encode`` of
# the reference's events. A field the typed writer cannot vouch for (an int past 64 bits, a
# value that is not an exact str...) rewinds the line and takes the generic path, which
# gives orjson the Event when the C encoder cannot write it.
#
# A command's events go through one ``Out``: with a LineBatch sink, the engine's ``seq`` and
# ``t`` are read once (:func:`_begin`) and ``seq`` is written back once (:func:`_done`, in a
# ``finally``), since nothing between two events runs Python code that could read them (the
# book is C, the state's dicts hold exact ints and strs) and the sink -- a LineBatch's
# ``append``, which runs no Python code -- can only be replaced by ``subscribe``, which no
# step of a command calls. A LineBatch read by a tap (the bot runner's) runs its
# ``on_wanted`` at the end of a line of a kind it wants whose instant it has not announced
# yet (``Tap.line_ended``; any other line's end runs no Python): there, ``seq`` is written
# back before the line ends and everything is read again after (:func:`_close`), as if per
# event; at the other lines' ends, nothing (``Out.wanted``, ``quiet_at``). Any other sink
# gets each event as before (seq and sink read per event: a listener may read the engine,
# or subscribe, at any event).
cdef struct Out:
    PyObject* E      # the engine's attributes (borrowed: the command's caller holds them)
    PyObject* lines  # the LineBatch written into (borrowed: the engine's sink holds it); NULL:
                     # every event through _emit_with
    Buf* buf         # its buffer
    long long seq    # with lines: the seq of the last event written
    long long t      # with lines: the engine's t (ns)
    bint tapped      # with lines: a tap reads them (Python may run as a line ends)
    # with a tap: bit k set when the tap wants the kind of typed line k (K_RECEIVED...): only
    # a wanted line's end can run Python (``Tap.line_ended``)
    int wanted
    # with lines as JSON: every line starts ``[seq,t``: ``seq``'s decimal digits are kept
    # (the last ``seq_len`` bytes of ``seq_digits``) and counted up per line; ``t``'s are
    # written once per command (the last ``t_len`` of ``t_digits``); lines as tokens need
    # neither (decision 111)
    char seq_digits[24]
    int seq_len
    char t_digits[24]
    int t_len
    # the Kernel whose held ledger the command moves (borrowed), or NULL: written back before
    # any Python runs in the command (see "held ledger")
    PyObject* kernel
    # with lines kept in their stored form (LineBatch.store_compact): the lines' token
    # streams, the typed lines written there as tokens, with no JSON (decision 106); NULL:
    # as JSON into ``buf``. ``mark``: the open line's (for _undo); ``json``: a lower bound of
    # the bytes its JSON line would have (the stored form's choice of raw or tokens needs
    # them: LineBatch._raw_size): exact but for an int, counted as one digit, and the line's
    # seq and t, one each (decision 111)
    Tokens* tw
    TokMark mark
    Py_ssize_t json


# the kinds of the typed lines (Out.wanted's bits)
cdef enum:
    K_RECEIVED = 0
    K_ACCEPTED = 1
    K_FILL = 2
    K_FEE = 3
    K_RESTED = 4
    K_CANCELLED = 5
    K_AMENDED = 6
    K_REJECTED = 7
    K_ORDER_REJECTED = 8
cdef tuple _LINE_KINDS = (
    COMMAND_RECEIVED, ORDER_ACCEPTED, FILL, FEE, ORDER_RESTED, ORDER_CANCELLED, ORDER_AMENDED,
    COMMAND_REJECTED, ORDER_REJECTED,
)
# the last tap asked which of them it wants, held (its identity cannot be reused), and its
# answer (a tap's wanted kinds are fixed when it is made)
cdef object _wanted_tap = None
cdef int _wanted_mask = 0


cdef int _wanted_by(Tap tap) except -1:
    """The bits of the typed lines' kinds that ``tap`` wants (``Tap.wants``)."""
    global _wanted_tap, _wanted_mask
    cdef int mask = 0
    cdef int k
    if tap is not _wanted_tap:
        for k in range(len(_LINE_KINDS)):
            if tap.wants(_LINE_KINDS[k]):
                mask |= 1 << k
        _wanted_tap = tap
        _wanted_mask = mask
    return _wanted_mask


cdef bytes _json(object value):
    """``value``'s canonical bytes (the encoder's options)."""
    return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)


# each constant below is the bytes between two typed fields of a line, from the comma after
# ``t`` on
cdef bytes _NULLS3 = b",null,null,null"
cdef bytes R_HEAD = b"," + _json(COMMAND_RECEIVED) + b",null,"
cdef bytes R_COMMAND = b",null,null,null,null,null,null,null," + b'{"command":{"account":'
cdef bytes R_INSTRUMENT = b',"instrument":'
# ``,"order_type":...,"post_only":...,"price":`` by [limit][post_only]
cdef tuple R_TYPE_POST = tuple(
    tuple(
        b',"order_type":' + _json(order_type) + b',"post_only":' + _json(post_only)
        + b',"price":'
        for post_only in (False, True)
    )
    for order_type in ("market", "limit")
)
cdef bytes R_QTY = b',"qty":'
cdef tuple _TIFS = ("gtc", "ioc", "fok")
# ``,"side":...,"tif":...,"type":"submit"}}]`` by [side][tif]
cdef tuple R_SUBMIT_TAIL = tuple(
    tuple(
        b',"side":' + _json(side) + b',"tif":' + _json(tif) + b',"type":"submit"}}]'
        for tif in _TIFS
    )
    for side in ("buy", "sell")
)
cdef bytes R_ORDER_ID = b',"order_id":'
cdef bytes R_CANCEL_TAIL = b',"type":"cancel"}}]'
cdef bytes R_PRICE = b',"price":'
cdef bytes R_AMEND_TAIL = b',"type":"amend"}}]'
cdef bytes A_HEAD = b"," + _json(ORDER_ACCEPTED) + b","
cdef tuple SIDE_FIELD = tuple(b"," + _json(side) + b"," for side in ("buy", "sell"))
# ``,null,null,null,{"order_type":...,"post_only":...,"tif":...}]`` by [limit][post_only][tif]
cdef tuple A_TAIL = tuple(
    tuple(
        tuple(
            _NULLS3 + b"," + _json({"order_type": order_type, "post_only": post_only, "tif": tif})
            + b"]"
            for tif in _TIFS
        )
        for post_only in (False, True)
    )
    for order_type in ("market", "limit")
)
cdef bytes F_HEAD = b"," + _json(FILL) + b","
cdef bytes F_TAIL = b",null]"
cdef bytes FEE_HEAD = b"," + _json(FEE) + b","
cdef bytes FEE_AMOUNT = b",null,null,null,"
cdef tuple FEE_TAIL = tuple(
    b",null,null," + _json({"role": role}) + b"]" for role in ("taker", "maker")
)
cdef bytes RESTED_HEAD = b"," + _json(ORDER_RESTED) + b","
cdef bytes RESTED_TAIL = b",null,null,null,null]"
cdef bytes C_HEAD = b"," + _json(ORDER_CANCELLED) + b","
cdef bytes C_QTY = b",null,null,"
#: the cancel reasons the order path gives, their codes and ``,null,null,null,{"reason":...}]``
cdef tuple REASONS = ("user", "stp", "ioc", "fok", "market")
cdef tuple C_TAIL = tuple(_NULLS3 + b"," + _json({"reason": r}) + b"]" for r in REASONS)
cdef bytes OR_HEAD = b"," + _json(ORDER_REJECTED) + b","
cdef bytes OR_NULLS = b",null,null,null,null,null,null,"
# an OrderRejected's data and the line's end, by reason (the book's codes' names: a few)
cdef dict OR_TAILS = {}
cdef bytes AM_HEAD = b"," + _json(ORDER_AMENDED) + b","
cdef tuple AM_TAIL = tuple(
    _NULLS3 + b"," + _json({"priority": p}) + b"]" for p in ("lost", "kept")
)
cdef enum:
    REASON_USER = 0
    REASON_STP = 1


cdef inline int _raw(Buf* b, const char* s, Py_ssize_t n) except -1:
    """``n`` bytes of ``s`` appended: copied in place when they fit, else by ``put_bytes``
    (which grows the buffer)."""
    if b.len + n > b.cap:
        return put_bytes(b, s, n)
    memcpy(b.data + b.len, s, n)
    b.len += n
    return 0


cdef inline int _put(Out* o, bytes s) except -1:
    """``s``, a piece of a typed line's JSON (a head, a key, a tail): its bytes, or its tokens
    (see ``Out.tw``). (Each writer of a typed line: its tokens' path inline, small; its
    JSON's a call.)"""
    if o.tw != NULL:
        return _tw_put(o, s)
    return _put_json(o, s)


cdef int _put_json(Out* o, bytes s) except -1:
    return _raw(o.buf, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))


cdef inline int _comma(Out* o) except -1:
    cdef Buf* b
    if o.tw != NULL:  # (the token form implies it)
        o.json += 1
        return 0
    b = o.buf
    if b.len < b.cap:
        b.data[b.len] = b","
        b.len += 1
        return 0
    return put_bytes(b, b",", 1)  # (it grows the buffer)


# the tokens of the pieces of JSON typed lines are made of (heads, keys, tails: module
# constants, an instrument's name, a rejection's tail), compiled once each, by the bytes
# object's address: an open-addressing table that holds (a strong reference to) each bytes
# object and never lets one go (they are few, and live as long as the module anyway)
cdef PyObject** _frag_keys = NULL
cdef Frag** _frags = NULL
cdef Py_ssize_t _frag_mask = -1  # slots - 1
cdef Py_ssize_t _frag_count = 0


cdef inline Py_ssize_t _frag_slot(PyObject* key, Py_ssize_t mask) noexcept:
    return <Py_ssize_t>((<uint64_t><size_t>key * 0x9E3779B97F4A7C15ULL) >> 40) & mask


cdef inline Frag* _frag_of(bytes s) except NULL:
    """The compiled tokens of ``s``."""
    cdef Py_ssize_t j
    if _frag_mask >= 0:
        j = _frag_slot(<PyObject*>s, _frag_mask)
        if _frag_keys[j] == <PyObject*>s:
            return _frags[j]
    return _frag_add(s)


cdef Frag* _frag_add(bytes s) except NULL:
    """:func:`_frag_of` past its first probe: found further on, or compiled and added."""
    global _frag_keys, _frags, _frag_mask, _frag_count
    cdef PyObject* key = <PyObject*>s
    cdef Py_ssize_t j, i, size
    cdef PyObject** keys
    cdef Frag** frags
    if _frag_mask >= 0:
        j = _frag_slot(key, _frag_mask)
        while _frag_keys[j] != NULL:
            if _frag_keys[j] == key:
                return _frags[j]
            j = (j + 1) & _frag_mask
    if 2 * (_frag_count + 1) > _frag_mask + 1:  # grow (and rehash) at half full
        size = 2 * (_frag_mask + 1) if _frag_mask >= 0 else 256
        keys = <PyObject**>PyMem_RawCalloc(size, sizeof(PyObject*))
        frags = <Frag**>PyMem_RawCalloc(size, sizeof(Frag*))
        if keys == NULL or frags == NULL:
            PyMem_RawFree(keys)
            PyMem_RawFree(frags)
            raise MemoryError()
        for i in range(_frag_mask + 1):
            if _frag_keys[i] != NULL:
                j = _frag_slot(_frag_keys[i], size - 1)
                while keys[j] != NULL:
                    j = (j + 1) & (size - 1)
                keys[j] = _frag_keys[i]
                frags[j] = _frags[i]
        PyMem_RawFree(_frag_keys)
        PyMem_RawFree(_frags)
        _frag_keys, _frags, _frag_mask = keys, frags, size - 1
    f = frag_compile(<const unsigned char*>PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))
    j = _frag_slot(key, _frag_mask)
    while _frag_keys[j] != NULL:
        j = (j + 1) & _frag_mask
    Py_INCREF(s)
    _frag_keys[j] = key
    _frags[j] = f
    _frag_count += 1
    return f


cdef inline int _tw_put(Out* o, bytes s) except -1:
    """:func:`_put` as tokens."""
    cdef Frag* f = _frag_of(s)
    o.json += f.size
    return tokens_frag(o.tw, f)


cdef const char* _DIGITS2 = (
    b"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    b"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    b"8081828384858687888990919293949596979899"
)


cdef int _digits(char* out, long long v) noexcept:
    """``v`` in decimal (a minus sign first if negative), right-aligned to end at ``out +
    24``, two digits a division (a ``t`` has 19); returns its length."""
    cdef unsigned long long u = (<unsigned long long>0) - <unsigned long long>v if v < 0 else v
    cdef unsigned long long r
    cdef int n = 0
    while u >= 100:
        r = u % 100
        u //= 100
        n += 2
        out[24 - n] = _DIGITS2[2 * r]
        out[25 - n] = _DIGITS2[2 * r + 1]
    if u >= 10:
        n += 2
        out[24 - n] = _DIGITS2[2 * u]
        out[25 - n] = _DIGITS2[2 * u + 1]
    else:
        n += 1
        out[24 - n] = <char>(48 + u)
    if v < 0:
        n += 1
        out[24 - n] = b"-"
    return n


cdef inline int _put_int(Out* o, long long v) except -1:
    if o.tw != NULL:
        o.json += 1  # (a lower bound of its digits: see Out.json)
        return tokens_int(o.tw, v)
    return _put_int_json(o, v)


cdef int _put_int_json(Out* o, long long v) except -1:
    if v < 0:
        return put_u64(o.buf, (<unsigned long long>0) - <unsigned long long>v, True)
    return put_u64(o.buf, <unsigned long long>v, False)


cdef inline bint _put_i128(Out* o, i128 v) except -1:
    """``v`` written (1) as the encoder writes a Python int of that value, or not (0): past
    uint64 or below int64, which orjson refuses (the generic path then gives it the Event)."""
    cdef char digits[24]
    cdef int n
    if -(<i128>1 << 63) <= v < (<i128>1 << 63):
        _put_int(o, <long long>v)
        return 1
    if 0 <= v < (<i128>1 << 64):
        if o.tw != NULL:  # past int64: a raw number
            n = _u64_digits(digits, <unsigned long long>v)
            o.json += n
            tokens_number(o.tw, <const unsigned char*>digits + 24 - n, n)
            return 1
        put_u64(o.buf, <unsigned long long>v, False)
        return 1
    return 0


cdef int _u64_digits(char* out, unsigned long long u) noexcept:
    """``u`` in decimal, right-aligned to end at ``out + 24``; returns its length."""
    cdef int n = 0
    while True:
        n += 1
        out[24 - n] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            return n


# the canonical bytes of the last strings written as fields (an account's or instrument's
# name, written in most lines), by the object's address: a direct-mapped cache that holds
# (a strong reference to) each key object, so no other object can come to have its address
# while it is cached, and its bytes object
cdef enum:
    N_BYTES_CACHE = 64  # a power of two
cdef PyObject* _name_keys[N_BYTES_CACHE]
cdef PyObject* _name_bytes[N_BYTES_CACHE]  # (static: all NULL at first)


cdef inline bint _put_obj(Out* o, object value) except -1:
    """A top-level field from its object (the generic walk's bytes): 1 written, 0 not."""
    if o.tw != NULL:
        return _tw_obj(o, value)
    return _put_obj_json(o, value)


cdef bint _put_obj_json(Out* o, object value) except -1:
    cdef Py_ssize_t h, start
    cdef Buf* b = o.buf
    if type(value) is not str:
        return put_value(b, <PyObject*>value, 1) == 0
    h = (<Py_ssize_t><PyObject*>value >> 4) & (N_BYTES_CACHE - 1)
    if _name_keys[h] == <PyObject*>value:
        _raw(b, PyBytes_AS_STRING(<object>_name_bytes[h]),
             PyBytes_GET_SIZE(<object>_name_bytes[h]))
        return 1
    start = b.len
    if put_value(b, <PyObject*>value, 1) != 0:
        return 0
    canonical = b.data[start:b.len]
    Py_INCREF(value)
    Py_INCREF(canonical)
    Py_XDECREF(_name_keys[h])
    Py_XDECREF(_name_bytes[h])
    _name_keys[h] = <PyObject*>value
    _name_bytes[h] = <PyObject*>canonical
    return 1


# a name's string token in the open batch of a stored form: its index there, while the
# table's generation (``tokens_gen``) is the one noted, and its JSON's bytes; by the name
# object's address, as _name_keys (a strong reference held); one entry a cache line's quarter
cdef struct TokName:
    PyObject* key
    Py_ssize_t gen
    Py_ssize_t index
    Py_ssize_t json
cdef enum:
    N_TOK_CACHE = 1024  # a power of two (a batch names a few hundred accounts on `flow`)
cdef TokName _tok_names[N_TOK_CACHE]


cdef inline TokName* _tok_name(object value) noexcept:
    return &_tok_names[
        <Py_ssize_t>((<uint64_t><size_t><PyObject*>value * 0x9E3779B97F4A7C15ULL) >> 54)
    ]


cdef inline bint _tw_obj(Out* o, object value) except -1:
    """:func:`_put_obj` as tokens: the tokens the encoder makes of the JSON :func:`_put_obj`
    writes (1), or nothing (0) where that writes nothing. Inline, the two cases of nearly
    every call (a name in the open batch's table, an int); the rest :func:`_tw_obj_slow`'s."""
    cdef TokName* e
    cdef long long v
    cdef int overflow = 0
    if type(value) is str:
        e = _tok_name(value)
        if e.key == <PyObject*>value and e.gen == tokens_gen(o.tw):
            o.json += e.json
            tokens_indexed(o.tw, e.index)
            return 1
    elif type(value) is int:
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if not overflow:
            _put_int(o, v)
            return 1
    return _tw_obj_slow(o, value)


cdef bint _tw_obj_slow(Out* o, object value) except -1:
    """:func:`_tw_obj` past its inline cases (only it calls this): a name new to the open
    batch, None, an int past int64, anything else."""
    cdef Py_ssize_t n, index, start
    cdef TokName* e
    cdef Frag* f
    cdef Buf* b
    if type(value) is str:
        e = _tok_name(value)
        # its JSON into the line buffer (empty while a typed line is written as tokens),
        # with the 16 readable bytes the table's reads need past the content
        b = o.buf
        start = b.len
        if put_value(b, <PyObject*>value, 1) != 0:
            b.len = start
            return 0
        n = b.len - start - 2  # the content, between the quotes
        try:
            if b.len + 16 > b.cap:
                put_bytes(b, b"\0" * 16, 16)
            memset(b.data + start + 1 + n, 0, 16)
            tokens_string(o.tw, <const unsigned char*>b.data + start + 1, n, &index)
        finally:
            b.len = start
        Py_INCREF(value)
        Py_XDECREF(e.key)
        e.key = <PyObject*>value
        e.gen = tokens_gen(o.tw)
        e.index = index
        e.json = n + 2
        o.json += n + 2
        return 1
    if value is None:
        o.json += 4
        tokens_code(o.tw, 0x05)
        return 1
    # anything else (an int past int64 among them): its JSON (put_value's, into the line buffer, which a typed line in
    # tokens leaves empty), read as tokens
    b = o.buf
    start = b.len
    try:
        if put_value(b, <PyObject*>value, 1) != 0:
            return 0
        f = frag_compile(<const unsigned char*>b.data + start, b.len - start)
        try:
            o.json += f.size
            tokens_frag(o.tw, f)
        finally:
            frag_free(f)
        return 1
    finally:
        b.len = start


# the last t _begin wrote in decimal, and its digits (as Out.t_digits holds them)
cdef long long _t_last = -1
cdef char _t_last_digits[24]
cdef int _t_last_len = _digits(_t_last_digits, -1)


cdef inline int _begin(Out* o, dict E) except -1:
    """Start a command's events: with a LineBatch sink whose next line is the engine's next
    seq, and int ``seq`` and ``t``, the typed lines (``seq`` kept in ``o`` until
    :func:`_done`); else the generic path, event by event. No held ledger (a command that
    moves one sets ``o.kernel``)."""
    o.kernel = NULL
    return _reread(o, E)


cdef int _python(Out* o) except -1:
    """Python is about to run in the command: the held ledger written back (and read again
    when next used)."""
    if o.kernel != NULL:
        _release(<Kernel>o.kernel)
    return 0


cdef int _reread(Out* o, dict E) except -1:
    """:func:`_begin`'s reading of the engine (again after Python ran), ``o.kernel`` kept."""
    cdef LineBatch lines
    cdef int overflow = 0
    cdef long long seq, t
    o.E = <PyObject*>E
    o.lines = NULL
    lines = lines_of(E["_sink"])
    if lines is None:
        return 0
    seq_value = E["seq"]
    t_value = E["t"]
    if type(seq_value) is not int or type(t_value) is not int:
        return 0
    seq = PyLong_AsLongLongAndOverflow(seq_value, &overflow)
    if (overflow or seq != lines.first + lines.count - 1
            or not 0 <= seq < (<long long>1 << 62)):  # (a C bound: no int object)
        return 0
    t = PyLong_AsLongLongAndOverflow(t_value, &overflow)
    if overflow:
        return 0
    o.lines = <PyObject*>lines
    o.buf = &lines.buf
    o.tw = &lines.tok if lines.stored else NULL
    o.seq = seq
    o.t = t
    o.tapped = lines.tap is not None
    if o.tapped:
        o.wanted = _wanted_by(lines.tap)
    if o.tw != NULL:
        return 0  # (tokens need no digits)
    return _stamp(o, seq, t)


cdef inline int _stamp(Out* o, long long seq, long long t) except -1:
    """``o``'s seq and t digits (see :class:`Out`) for a command at ``seq``, ``t`` ns."""
    o.seq_len = _digits(o.seq_digits, seq)
    return _stamp_t(o, t)


cdef inline int _stamp_t(Out* o, long long t) except -1:
    """``o``'s t digits for a command at ``t`` ns."""
    global _t_last, _t_last_len
    if t != _t_last:  # (the commands of an instant share their t: its digits kept)
        _t_last_len = _digits(_t_last_digits, t)
        _t_last = t
    memcpy(o.t_digits, _t_last_digits, 24)
    o.t_len = _t_last_len
    return 0


cdef inline int _done(Out* o) except -1:
    """The engine's ``seq`` brought up to the last event written (typed lines): held by the
    kernel while it holds the counters."""
    cdef Kernel k
    if o.lines != NULL:
        if o.kernel != NULL and (<Kernel>o.kernel).counters is not None:
            k = <Kernel>o.kernel
            k.seq = o.seq
            if o.tw != NULL:
                k.digits_seq = -1  # (lines as tokens keep no digits)
            else:
                memcpy(k.seq_digits, o.seq_digits, 24)
                k.seq_len = o.seq_len
                k.digits_seq = o.seq
        else:
            (<dict>o.E)["seq"] = o.seq
    return 0


cdef int _begin_k(Out* o, dict E, Kernel k) except -1:
    """:func:`_begin` for a command that moves ``k``'s held ledger: while the flow driver
    holds it, the engine's seq, clock and the sink's lines as the kernel holds them (taken
    from the engine at the burst's first command, written back with the ledger)."""
    cdef long long t
    o.kernel = <PyObject*>k
    if not k.holding:
        return _reread(o, E)
    if k.counters is None:
        _reread(o, E)
        if o.lines != NULL and not o.tapped:
            k.counters = E
            k.orders = E["orders"]
            k.lines = <LineBatch>o.lines
            k.seq = o.seq
            k.t = o.t
        return 0
    t = k.t
    o.E = <PyObject*>E
    o.lines = <PyObject*>k.lines
    o.buf = &k.lines.buf
    o.tw = &k.lines.tok if k.lines.stored else NULL
    o.seq = k.seq
    o.t = t
    o.tapped = False
    if o.tw != NULL:
        return 0  # (tokens need no digits)
    if k.digits_seq != k.seq:
        return _stamp(o, k.seq, t)
    memcpy(o.seq_digits, k.seq_digits, 24)
    o.seq_len = k.seq_len
    return _stamp_t(o, t)


cdef inline int _head(Out* o, bytes head) except -1:
    """Open the next line: ``[seq,t`` and ``head``."""
    o.seq += 1
    if o.tw != NULL:  # as tokens: its batch opened first if it is the batch's first line
        if o.seq >= (<LineBatch>o.lines).next_open:
            (<LineBatch>o.lines).open_batch(o.seq)
        tokens_open(o.tw, &o.mark, o.seq, o.t)
        o.json = 4  # ``[seq,t``: seq and t one digit each, at least (see Out.json)
        return _tw_put(o, head)
    return _head_json(o, head)


cdef int _head_json(Out* o, bytes head) except -1:
    cdef Buf* b = o.buf
    cdef int i = 23
    # seq + 1, in its digits (seq >= 0: see _begin)
    while i >= 24 - o.seq_len and o.seq_digits[i] == b"9":
        o.seq_digits[i] = b"0"
        i -= 1
    if i < 24 - o.seq_len:
        o.seq_len += 1
        o.seq_digits[i] = b"1"
    else:
        o.seq_digits[i] += 1
    _raw(b, b"[", 1)
    _raw(b, o.seq_digits + 24 - o.seq_len, o.seq_len)
    _comma(o)
    _raw(b, o.t_digits + 24 - o.t_len, o.t_len)
    _put(o, head)
    return 0


cdef inline int _close(Out* o, bytes tail, int kind) except -1:
    """Close the line (of kind ``kind``, K_RECEIVED...): ``tail``, then its end. With a tap
    that may run Python at this line's end -- the line is of a kind it wants and its ``t``
    is not announced yet (``Tap.line_ended``: else it returns at once, no Python) -- the
    engine's ``seq`` is written first, for that Python, and the engine read again after."""
    cdef Py_ssize_t count
    if o.tw != NULL:  # (no tap reads lines kept as tokens)
        _tw_put(o, tail)
        tokens_close(o.tw, o.seq, o.t)
        # the line held (as LineBatch.end_line notes one; see _lines.pxd), the batch read
        # through the borrowed pointer (no reference taken)
        count = (<LineBatch>o.lines).count
        if count == (<LineBatch>o.lines).lines_cap:
            (<LineBatch>o.lines)._grow_lines()
        (<LineBatch>o.lines).raws[count] = o.json + 1
        (<LineBatch>o.lines).ends[count] = o.tw.n
        (<LineBatch>o.lines).ts[count] = o.t
        (<LineBatch>o.lines).count = count + 1
        return 0
    return _close_json(o, tail, kind)


cdef int _close_json(Out* o, bytes tail, int kind) except -1:
    cdef LineBatch lines = <LineBatch>o.lines
    _put(o, tail)
    if o.tapped and (o.wanted >> kind) & 1 and not quiet_at(lines, o.t):
        (<dict>o.E)["seq"] = o.seq
        _python(o)
        lines.end_line(o.t)
        return _reread(o, <dict>o.E)
    lines.end_line(o.t)
    return 0


cdef inline int _undo(Out* o, Py_ssize_t start) except -1:
    """Drop the line being written (for the generic path to write the event)."""
    o.seq -= 1
    if o.tw != NULL:
        tokens_undo(o.tw, &o.mark)
    else:
        o.buf.len = start
        o.seq_len = _digits(o.seq_digits, o.seq)
    return 0


cdef int _emit_o(
    Out* o,
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
    """One event through :func:`_emit_with` (the engine's ``seq`` synced around it)."""
    cdef dict E = <dict>o.E
    _python(o)  # (the sink, or a tap, may run Python)
    if o.lines == NULL:
        _emit_with(E, kind, instrument, account, order_id, side, price, qty, amount,
                   counterparty, counter_order_id, data, key)
        return 0
    E["seq"] = o.seq
    _emit_with(E, kind, instrument, account, order_id, side, price, qty, amount, counterparty,
               counter_order_id, data, key)
    return _reread(o, E)  # (the engine read again: a tap may have run Python)


cdef inline int _received_head(Out* o, object name) except -1:
    """A CommandReceived line opened up to its command's account (``name`` a proven name,
    the event's account and the command's): what follows is the command's other fields."""
    _head(o, R_HEAD)
    _put_obj(o, name)
    _put(o, R_COMMAND)
    _put_obj(o, name)
    return 0


cdef int _received_submit(
    Out* o,
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
    int tif,
    object tif_value,
    object post_only_value,
) except -1:
    """A submit's CommandReceived: its command, every field of the model (``name`` and
    ``instrument`` proven names, the literals proven, ``post_only_value`` a bool)."""
    if o.lines == NULL:
        return _emit_o(
            o, COMMAND_RECEIVED, None, name, None, None, None, None, None, None, None,
            {
                "account": name,
                "type": "submit",
                "instrument": instrument,
                "side": side_name,
                "order_type": order_type,
                "price": price_value,
                "qty": qty_value,
                "tif": tif_value,
                "post_only": post_only_value,
            },
            "command",
        )
    _received_head(o, name)
    _put(o, R_INSTRUMENT)
    _put_obj(o, instrument)
    _put(o, <bytes>(<tuple>R_TYPE_POST[limit])[post_only_value is True])
    _put_int(o, price)
    _put(o, R_QTY)
    _put_int(o, qty)
    return _close(o, <bytes>(<tuple>R_SUBMIT_TAIL[side])[tif], K_RECEIVED)


cdef int _received_cancel(Out* o, object name, int64_t order_id, object order_id_value) except -1:
    if o.lines == NULL:
        return _emit_o(
            o, COMMAND_RECEIVED, None, name, None, None, None, None, None, None, None,
            {"account": name, "type": "cancel", "order_id": order_id_value},
            "command",
        )
    _received_head(o, name)
    _put(o, R_ORDER_ID)
    _put_int(o, order_id)
    return _close(o, R_CANCEL_TAIL, K_RECEIVED)


cdef int _received_amend(
    Out* o,
    object name,
    int64_t order_id,
    object order_id_value,
    int64_t price,
    object price_value,
    int64_t qty,
    object qty_value,
) except -1:
    if o.lines == NULL:
        return _emit_o(
            o, COMMAND_RECEIVED, None, name, None, None, None, None, None, None, None,
            {
                "account": name,
                "type": "amend",
                "order_id": order_id_value,
                "price": price_value,
                "qty": qty_value,
            },
            "command",
        )
    _received_head(o, name)
    _put(o, R_ORDER_ID)
    _put_int(o, order_id)
    _put(o, R_PRICE)
    _put_int(o, price)
    _put(o, R_QTY)
    _put_int(o, qty)
    return _close(o, R_AMEND_TAIL, K_RECEIVED)


cdef inline int _order_terms(
    Out* o, object name, int64_t order_id, int side, int64_t price, int64_t qty
) except -1:
    """An order's account (``name``, a proven name), id, side, price and quantity: the fields
    OrderAccepted and OrderAmended write alike."""
    _put_obj(o, name)
    _comma(o)
    _put_int(o, order_id)
    _put(o, <bytes>SIDE_FIELD[side])
    _put_int(o, price)
    _comma(o)
    return _put_int(o, qty)


cdef int _accepted(
    Out* o,
    _Listing info,
    object name,
    int64_t order_id,
    object order_id_value,
    int side,
    object side_name,
    bint limit,
    object order_type,
    int64_t price,
    object price_value,
    int64_t qty,
    object qty_value,
    int tif,
    object tif_value,
    object post_only_value,
) except -1:
    """OrderAccepted (``name`` a proven name, ``info.name`` the instrument)."""
    if o.lines == NULL:
        return _emit_o(
            o, ORDER_ACCEPTED, info.name, name, order_id_value, side_name, price_value,
            qty_value, None, None, None,
            {"order_type": order_type, "tif": tif_value, "post_only": post_only_value}, None,
        )
    _head(o, info.a_head)
    _order_terms(o, name, order_id, side, price, qty)
    return _close(
        o, <bytes>(<tuple>(<tuple>A_TAIL[limit])[post_only_value is True])[tif], K_ACCEPTED
    )


cdef int _fill(
    Out* o,
    _Listing info,
    object taker_name,
    object order_id,
    int side,
    int64_t px,
    int64_t qty,
    i128 cash,
    object maker_name,
    int64_t maker_id,
) except -1:
    """Fill (``taker_name`` a proven name; ``order_id`` the taker's, an int)."""
    cdef Py_ssize_t start
    if o.lines != NULL:
        start = o.buf.len
        _head(o, info.f_head)
        _put_obj(o, taker_name)
        _comma(o)
        if _put_obj(o, order_id):
            _put(o, <bytes>SIDE_FIELD[side])
            _put_int(o, px)
            _comma(o)
            _put_int(o, qty)
            _comma(o)
            if _put_i128(o, cash):
                _comma(o)
                if _put_obj(o, maker_name):
                    _comma(o)
                    _put_int(o, maker_id)
                    return _close(o, F_TAIL, K_FILL)
        _undo(o, start)
    return _emit_o(o, FILL, info.name, taker_name, order_id, _SIDE_NAME[side], px, qty,
                   py128(cash), maker_name, maker_id, None, None)


cdef int _fee_event(
    Out* o, _Listing info, object account, object order_id, i128 amount, int role
) except -1:
    """Fee of ``amount`` (minor units, negative: paid); ``role`` 0 taker, 1 maker."""
    cdef Py_ssize_t start
    if o.lines != NULL:
        start = o.buf.len
        _head(o, info.fee_head)
        if _put_obj(o, account):
            _comma(o)
            if _put_obj(o, order_id):
                _put(o, FEE_AMOUNT)
                if _put_i128(o, amount):
                    return _close(o, <bytes>FEE_TAIL[role], K_FEE)
        _undo(o, start)
    return _emit_o(o, FEE, info.name, account, order_id, None, None, None, py128(amount),
                   None, None, ("taker", "maker")[role], "role")


cdef int _rested(
    Out* o, _Listing info, object name, object order_id, int side, object price, int64_t qty
) except -1:
    cdef Py_ssize_t start
    if o.lines != NULL:
        start = o.buf.len
        _head(o, info.rested_head)
        if _put_obj(o, name):
            _comma(o)
            if _put_obj(o, order_id):
                _put(o, <bytes>SIDE_FIELD[side])
                if _put_obj(o, price):
                    _comma(o)
                    _put_int(o, qty)
                    return _close(o, RESTED_TAIL, K_RESTED)
        _undo(o, start)
    return _emit_o(o, ORDER_RESTED, info.name, name, order_id, _SIDE_NAME[side], price, qty,
                   None, None, None, None, None)


cdef bint _order_line(
    Out* o, bytes head, object instrument, object head_json, object account, object order_id
) except -1:
    """Open the line of an event about an order: ``head``, then its instrument (written
    from ``instrument``; or ``head_json``, when known: ``head``, the instrument's bytes and a
    comma, as a listing has them), account and order id: 1. 0 when one of them is not the
    typed path's (nothing written: the generic path writes the event)."""
    cdef Py_ssize_t start = o.buf.len
    if head_json is not None:
        _head(o, <bytes>head_json)
    else:
        _head(o, head)
        if not _put_obj(o, instrument):
            _undo(o, start)
            return 0
        _comma(o)
    if _put_obj(o, account):
        _comma(o)
        if _put_obj(o, order_id):
            return 1
    _undo(o, start)
    return 0


cdef int _cancelled(
    Out* o, object instrument, object head_json, object account, object order_id,
    int64_t qty, int reason
) except -1:
    """OrderCancelled of ``qty`` lots with ``REASONS[reason]``; ``head_json`` the line's
    opening when known (a listing's ``c_head``), else None (written from ``instrument``)."""
    if o.lines != NULL and _order_line(o, C_HEAD, instrument, head_json, account, order_id):
        _put(o, C_QTY)
        _put_int(o, qty)
        return _close(o, <bytes>C_TAIL[reason], K_CANCELLED)
    return _emit_o(o, ORDER_CANCELLED, instrument, account, order_id, None, None, qty, None,
                   None, None, REASONS[reason], "reason")


cdef int _order_rejected(
    Out* o, object instrument, object head_json, object account, object order_id,
    object reason
) except -1:
    """OrderRejected of ``order_id`` with ``reason`` (a str); ``head_json`` as
    :func:`_cancelled` takes it (a listing's ``or_head``). Typed: the generic path would let go of a held ledger (Python
    may run there), which then has to be read again -- ~0.1 M instructions a rejection."""
    cdef object tail
    if o.lines != NULL and type(reason) is str:
        tail = OR_TAILS.get(reason)
        if tail is None:
            tail = _json({"reason": reason}) + b"]"
            OR_TAILS[reason] = tail
        if _order_line(o, OR_HEAD, instrument, head_json, account, order_id):
            _put(o, OR_NULLS)
            return _close(o, <bytes>tail, K_ORDER_REJECTED)
    return _emit_o(o, ORDER_REJECTED, instrument, account, order_id, None, None, None, None,
                   None, None, reason, "reason")


cdef int _amended(
    Out* o,
    object instrument,
    object name,
    int64_t order_id,
    object order_id_value,
    int side,
    int64_t price,
    object price_value,
    int64_t qty,
    object qty_value,
    bint kept,
) except -1:
    cdef Py_ssize_t start
    if o.lines != NULL:
        start = o.buf.len
        _head(o, AM_HEAD)
        if _put_obj(o, instrument):
            _comma(o)
            _order_terms(o, name, order_id, side, price, qty)
            return _close(o, <bytes>AM_TAIL[kept], K_AMENDED)
        _undo(o, start)
    return _emit_o(o, ORDER_AMENDED, instrument, name, order_id_value, _SIDE_NAME[side],
                   price_value, qty_value, None, None, None,
                   {"priority": "kept" if kept else "lost"}, None)


cdef inline i128 _fee(i128 notional, int64_t bps):
    """``exchange.products.instruments.fee``: rounded half away from zero, once."""
    cdef i128 numerator = (notional if notional >= 0 else -notional) * (bps if bps >= 0 else -bps)
    cdef i128 magnitude = (numerator + 5_000) // 10_000
    return magnitude if bps >= 0 else -magnitude


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
# a typed line's opening up to its account (a kind's head, an instrument's bytes, a comma),
# one object per distinct opening: the tokens' fragments are kept by the object
# (:func:`_frag_of`), and the listings of every engine made in a process share them
cdef dict _LINE_HEADS = {}


cdef bytes _line_head(bytes head, bytes name_json):
    opening = head + name_json + b","
    return <bytes>_LINE_HEADS.setdefault(opening, opening)


cdef class _Listing:
    """What the order path needs of one listing, typed once (the spec is frozen; the cache
    entry is dropped when the instrument's ``Listing`` or its spec is no longer the same
    object)."""

    cdef object listing
    cdef object spec
    # the listing's book when it is an OrderBook (its calls and counters read in C), else None
    # (and the listing not fast: another book is the reference's, command by command)
    cdef OrderBook book
    cdef object name
    cdef bytes name_json  # the name's canonical bytes (a fast listing's name is a str)
    # (a fast listing's) the openings of its typed lines up to their account: the kind's head,
    # the name's bytes and a comma, one piece of JSON (one fragment of tokens) each
    cdef bytes a_head, f_head, fee_head, rested_head, c_head, or_head
    cdef int kind
    cdef bint fast  # every value below fits the bounds this file computes in
    # the book's fills buffer (OrderBook.fill_arr) last seen, held, and where its records are:
    # the book replaces the array when it grows (never resizes it in place, which numpy
    # refuses anyway while this reference holds it), so the pointer stays valid while held
    cdef object fills
    cdef const char* fills_data
    cdef Py_ssize_t fills_len
    cdef int64_t tick_value, min_price, max_price
    cdef int64_t maker_bps, taker_bps
    cdef int64_t r_position, r_basis, r_price, r_cash

    def __init__(self, listing):
        spec = listing.spec
        rates = listing.limits
        self.listing = listing
        self.spec = spec
        book = listing.book
        self.book = <OrderBook>book if type(book) is OrderBook else None
        self.name = spec.name
        kind = spec.kind
        self.kind = SPOT if kind == "spot" else PERP if kind == "perp" else RVS
        self.fast = False
        self.fills = None
        self.fills_data = NULL
        self.fills_len = 0
        if type(listing) is not Listing or kind not in ("spot", "perp", "rvs"):
            return
        if self.book is None:
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
        if self.book.max_qty > FAST_MAX_QTY:  # a fill's lots, at most the book's largest
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
        if type(self.name) is not str:
            return
        try:
            self.name_json = _json(self.name)
        except _orjson.JSONEncodeError:  # a lone surrogate: the generic path's, the reference's
            return
        self.a_head = _line_head(A_HEAD, self.name_json)
        self.f_head = _line_head(F_HEAD, self.name_json)
        self.fee_head = _line_head(FEE_HEAD, self.name_json)
        self.rested_head = _line_head(RESTED_HEAD, self.name_json)
        self.c_head = _line_head(C_HEAD, self.name_json)
        self.or_head = _line_head(OR_HEAD, self.name_json)
        self.fast = True


cdef inline bint _bilateral(dict E):
    """``exchange.risk.bilateral.is_bilateral``."""
    margin = E["margin"]
    return margin is not None and margin.clearing == "bilateral"


# the held ledger's slots (see "held ledger" below)
cdef enum:
    D_CASH = 1
    D_POSITION = 2
    D_VM = 4
    D_BASIS = 8
    D_LOTS = 16


cdef struct Pending:
    int64_t order_id
    Py_ssize_t slot  # its account's
    int64_t side
    int64_t price  # ticks: the order's price as the command gave it (an int)
    bint alive  # not filled, cancelled or amended away since


cdef struct Slot:
    PyObject* attrs  # the Account's attributes (Kernel.held holds the reference)
    PyObject* name  # the Account's ``name`` (its attributes hold it)
    int64_t epoch  # Kernel.epoch when read; in another, read again before use
    int64_t index  # the account's book index
    i128 cash
    i128 position  # of Kernel.bound
    i128 vm
    i128 basis
    i128 lots[2]
    bint has_position  # the key is in the account's dict (read there, or made since)
    bint has_vm
    bint has_basis
    bint has_lots
    bint called  # under a collateral call when read
    bint checked  # resolved as a command's account this epoch: known, not defaulted
    int dirty  # the D_* fields changed since read


# ----------------------------------------------------------------------------- the kernel
# (the generator expressions of Kernel.usable's rare checks live here: a function holding
# one allocates its closure at every call, and usable runs at every command)
def _reference_hooks(cls) -> bool:
    """Whether ``cls``'s :data:`HOOKS` are the reference's own functions."""
    return all(
        getattr(cls, name) is reference for name, reference in zip(HOOKS, _REFERENCE_HOOKS)
    )


def _patched(dict E) -> bool:
    """Whether an engine's attributes ``E`` hold one of :data:`HOOKS` or lack one of
    :data:`ENGINE_ATTRS`."""
    return any(name in E for name in HOOKS) or not all(name in E for name in ENGINE_ATTRS)


cdef enum:
    N_NAME_CACHE = 16  # :func:`_slot_of`'s entries (a power of two; `flow` has 8 accounts)


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
    # the held ledger (see "held ledger" below): slot i is account slot_names[i]'s, its
    # attributes held[i]; the accounts' book indices to slots (-1: none yet)
    cdef Slot* slots
    cdef Py_ssize_t n_slots, cap_slots
    cdef Py_ssize_t* dirty  # the slots changed since the last write-back, in that order
    cdef Py_ssize_t n_dirty
    cdef dict slot_of
    cdef list held
    cdef list slot_names
    cdef Py_ssize_t* by_index
    cdef Py_ssize_t n_by_index
    cdef int64_t epoch
    cdef _Listing bound  # the listing whose fields the slots hold
    cdef bint holding  # the compiled flow driver holds the ledger between rows
    cdef i128 fees  # the fee pool, held in fees_epoch
    cdef int64_t fees_epoch
    cdef bint fees_dirty
    cdef object pools
    # while holding: the engine's seq and next order id (``counters``: E, the engine's
    # attributes they are written back to; None when not held), the sink's lines, the
    # listing of the last row (``last_name``'s, found this epoch: listed, not expired)
    cdef object counters
    cdef object orders  # while the counters are held: the engine's ``orders`` (_orders_of)
    # ``seq``'s decimal digits as the last command left them (``Out.seq_digits``), valid when
    # ``digits_seq == seq``: the next command starts from them instead of dividing again
    cdef char seq_digits[24]
    cdef int seq_len
    cdef int64_t digits_seq
    cdef int64_t seq
    cdef int64_t t
    cdef int64_t next_id
    cdef bint next_held
    cdef LineBatch lines
    cdef object last_name
    cdef _Listing last_info
    cdef int64_t info_epoch
    # while the counters are held: the orders that came to rest, not yet in the engine's
    # ``orders`` (written there in this order as the ledger is: "held orders" below)
    cdef Pending* pend
    cdef Py_ssize_t n_pend, cap_pend
    cdef Py_ssize_t* pend_table  # open addressing by order id: entry + 1 (0: empty)
    cdef Py_ssize_t pend_mask
    # ``slot_of`` by the name object's address (see :func:`_slot_of`): each key a strong
    # reference, so that no other object can come to have its address while it is cached
    cdef PyObject* name_keys[N_NAME_CACHE]
    cdef Py_ssize_t name_slots[N_NAME_CACHE]
    # :meth:`rows` held true for the engine the flow driver holds, this epoch (no Python has
    # run since, so it still does: see :func:`_handle_row`)
    cdef bint rows_held

    def __cinit__(self):
        self.slots = NULL
        self.dirty = NULL
        self.by_index = NULL
        self.n_slots = self.cap_slots = self.n_dirty = self.n_by_index = 0
        self.pend = NULL
        self.pend_table = NULL
        self.n_pend = self.cap_pend = 0
        self.pend_mask = -1
        self.digits_seq = -1
        memset(self.name_keys, 0, sizeof(self.name_keys))
        self.rows_held = False

    def __dealloc__(self):
        cdef int h
        for h in range(N_NAME_CACHE):
            Py_XDECREF(self.name_keys[h])
        PyMem_RawFree(self.slots)
        PyMem_RawFree(self.dirty)
        PyMem_RawFree(self.by_index)
        PyMem_RawFree(self.pend)
        PyMem_RawFree(self.pend_table)

    def __init__(self):
        self.slot_of = {}
        self.held = []
        self.slot_names = []
        self.epoch = 1
        self.bound = None
        self.holding = False
        self.fees_epoch = 0
        self.fees_dirty = False
        self.pools = None
        self.counters = None
        self.orders = None
        self.next_held = False
        self.lines = None
        self.last_name = None
        self.last_info = None
        self.info_epoch = 0
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
            self.type_ok = plain_attributes(cls, ENGINE_ATTRS) and _reference_hooks(cls)
            self.rows_ok = getattr(cls, "handle", None) is handle
            # (the look-ups above gave the class a version if it had none)
            self.type_version = gpuex_type_version(<PyTypeObject*>cls)
            self.dict_size = -1
        if not self.type_ok:
            return False
        size = PyDict_Size(E)
        if size != self.dict_size:
            self.dict_size = size
            self.patched = _patched(E)
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
        cdef PyObject* found = PyDict_GetItemWithError(self.listings, name)  # (a str)
        if found != NULL:
            info = <_Listing>found
            if info.listing is listing and _attrs(listing)["spec"] is info.spec:
                return info
        info = _Listing(listing)
        self.listings[name] = info
        return info

# ----------------------------------------------------------------------------- held ledger
# The ledger fields the order path moves -- each account's cash, and one listing's position,
# VM basis, premium basis and open lots; the fee pool -- are read from the engine's Python
# objects into typed slots at their first use and written back (the same values, the same
# keys created in the same dicts) before any Python can run: at the end of every command from
# Python (``handle``, a row's ``handle_row``), before every call into Python inside one (an
# event through the generic encoder, a tap that runs Python, the reference's limit check,
# the reference itself), and, while the compiled flow driver holds them (:func:`_hold`),
# before it calls Python (its chunk, cash and malformed messages, the recorder's drain) and at
# the end of its burst of rows. No Python runs between two rows of a burst, so nothing else
# can read or write what the slots hold (decision 92). Every release starts a new epoch: a
# slot read in an older one is read again before use.

cdef bint _i128_of(object v, i128* out) except -1:
    """``v`` as a 128-bit integer when it is an exact int that fits; else 0."""
    cdef int overflow = 0
    cdef long long x
    cdef long long hi
    if type(v) is not int:
        return 0
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if not overflow:
        out[0] = x
        return 1
    high = v >> 64
    if not -(1 << 62) <= high < (1 << 62):
        return 0
    hi = high
    out[0] = ((<i128>hi) << 64) | <i128>(<unsigned long long>(v & 0xFFFFFFFFFFFFFFFF))
    return 1


cdef bint _read_field(dict d, object key, i128* out, bint* has) except -1:
    """``d.get(key)`` into ``out`` (0 and ``has`` false when absent); 0 when it is not an int
    this file holds."""
    cdef PyObject* found = PyDict_GetItemWithError(d, key)
    if found == NULL:
        out[0] = 0
        has[0] = False
        return 1
    has[0] = True
    return _i128_of(<object>found, out)


cdef bint _read(Kernel k, dict E, Slot* s, object name) except -1:
    """Read slot ``s`` (its ``attrs`` set) for ``k.bound``; 0 when a value is not one this
    file holds (the caller gives the command to the reference)."""
    cdef dict A = <dict>s.attrs
    cdef object lname = k.bound.name
    cdef int64_t index = 0
    cdef bint ok
    positions = A["positions"]
    vm_basis = A["vm_basis"]
    basis = A["basis"]
    open_lots = A["open_lots"]
    if not (type(positions) is dict and type(vm_basis) is dict and type(basis) is dict
            and type(open_lots) is dict and _int_of(A["index"], 0, &index)):
        return 0
    ok = (_i128_of(A["cash"], &s.cash)
          and _read_field(<dict>positions, lname, &s.position, &s.has_position)
          and _read_field(<dict>vm_basis, lname, &s.vm, &s.has_vm)
          and _read_field(<dict>basis, lname, &s.basis, &s.has_basis))
    if not ok:
        return 0
    lots = (<dict>open_lots).get(lname)
    s.has_lots = lots is not None
    if lots is None:
        s.lots[0] = 0
        s.lots[1] = 0
    elif not (type(lots) is list and len(<list>lots) == 2
              and _i128_of((<list>lots)[0], &s.lots[0])
              and _i128_of((<list>lots)[1], &s.lots[1])):
        return 0
    account_name = A["name"]
    s.name = <PyObject*>account_name
    s.index = index
    s.called = name in E["calls"]
    s.checked = False
    s.dirty = 0
    s.epoch = k.epoch
    return 1


cdef inline void _cache_name(Kernel k, object name, Py_ssize_t i) noexcept:
    """Remember ``k.slot_of[name] == i`` by ``name``'s address (see :func:`_slot_of`)."""
    cdef Py_ssize_t h = (<Py_ssize_t><PyObject*>name >> 4) & (N_NAME_CACHE - 1)
    Py_INCREF(name)
    Py_XDECREF(k.name_keys[h])
    k.name_keys[h] = <PyObject*>name
    k.name_slots[h] = i


cdef inline Py_ssize_t _slot_of(Kernel k, object name) except -2:
    """``k.slot_of.get(name, -1)``: the slot number of account ``name``, -1 if it has none.
    The same name object comes with every row of an account (the flow driver's list of
    names), and ``slot_of`` only grows (a slot is never renumbered): its entries are kept by
    the name's address, a pointer comparison instead of a hash look-up."""
    cdef Py_ssize_t h = (<Py_ssize_t><PyObject*>name >> 4) & (N_NAME_CACHE - 1)
    cdef PyObject* found
    if k.name_keys[h] == <PyObject*>name:
        return k.name_slots[h]
    found = PyDict_GetItemWithError(k.slot_of, name)
    if found == NULL:
        return -2 if PyErr_Occurred() != NULL else -1
    _cache_name(k, name, <Py_ssize_t><object>found)
    return <Py_ssize_t><object>found


cdef Py_ssize_t _slot(Kernel k, dict E, object name, dict A) except -2:
    """The number of account ``name``'s slot (``A`` its attributes), read for ``k.bound``
    unless it is this epoch's; -1 when it holds a value this file does not (the
    reference's)."""
    cdef Py_ssize_t i = _slot_of(k, name)
    cdef Slot* s
    if i < 0:
        i = k.n_slots
        if i == k.cap_slots:
            _grow(k)
        k.n_slots += 1
        k.held.append(A)
        k.slot_names.append(name)
        k.slot_of[name] = i
        _cache_name(k, name, i)
        k.slots[i].epoch = 0
        k.slots[i].dirty = 0
    s = &k.slots[i]
    if s.epoch == k.epoch and s.attrs == <PyObject*>A:
        return i
    if s.dirty:  # (never: a release writes back before a new epoch)
        raise RuntimeError("a held slot changed hands before it was written back")
    k.held[i] = A
    s.attrs = <PyObject*>A
    if not _read(k, E, s, name):
        s.epoch = 0
        return -1
    return i


cdef int _grow(Kernel k) except -1:
    cdef Py_ssize_t cap = k.cap_slots * 2 if k.cap_slots else 16
    cdef Slot* slots = <Slot*>PyMem_RawRealloc(k.slots, cap * sizeof(Slot))
    cdef Py_ssize_t* dirty
    if slots == NULL:
        raise MemoryError("held ledger")
    k.slots = slots
    dirty = <Py_ssize_t*>PyMem_RawRealloc(k.dirty, cap * sizeof(Py_ssize_t))
    if dirty == NULL:
        raise MemoryError("held ledger")
    k.dirty = dirty
    k.cap_slots = cap
    return 0


cdef inline Slot* _S(Kernel k, dict E, Py_ssize_t i) except NULL:
    """Slot ``i``, read again if a release came since (Python ran: the same account's
    fields as they are now)."""
    cdef Slot* s = &k.slots[i]
    if s.epoch != k.epoch:
        if not _read(k, E, s, k.slot_names[i]):
            raise TypeError(
                f"account {k.slot_names[i]!r}: a ledger value changed during the command to "
                f"one the compiled kernel does not hold"
            )
    return s


cdef inline void _dirty(Kernel k, Slot* s, int field) noexcept:
    if s.dirty == 0:
        k.dirty[k.n_dirty] = s - k.slots
        k.n_dirty += 1
    s.dirty |= field


cdef Py_ssize_t _named(Kernel k, dict E, object name) except -1:
    """The slot of the account named ``name`` as the engine's ``accounts`` holds it now
    (a maker, an STP cancel's owner)."""
    cdef Py_ssize_t i = _slot_of(k, name)
    if i >= 0 and k.slots[i].epoch == k.epoch:
        return i
    i = _slot(k, E, name, _attrs((<dict>E["accounts"])[name]))
    if i < 0:
        raise TypeError(
            f"account {name!r}: a ledger value the compiled kernel does not hold"
        )
    return i


cdef Py_ssize_t _maker(Kernel k, dict E, int64_t index) except -1:
    """The slot of the account whose book index is ``index`` (``Exchange._by_index``)."""
    cdef Py_ssize_t i, n
    cdef Py_ssize_t* grown
    if index < k.n_by_index:
        i = k.by_index[index]
        if i >= 0 and k.slots[i].epoch == k.epoch:
            return i
    i = _named(k, E, (<list>E["_by_index"])[index])
    if index >= k.n_by_index:
        n = (index + 1) * 2
        grown = <Py_ssize_t*>PyMem_RawRealloc(k.by_index, n * sizeof(Py_ssize_t))
        if grown == NULL:
            raise MemoryError("held ledger")
        for j in range(k.n_by_index, n):
            grown[j] = -1
        k.by_index = grown
        k.n_by_index = n
    k.by_index[index] = i
    return i


cdef int _bind(Kernel k, _Listing info) except -1:
    """Hold ``info``'s fields from here on (the slots' fields of another listing written
    back and read again)."""
    if k.bound is not info:
        _release(k)
        k.bound = info
    return 0


cdef int _add_fee(Kernel k, dict E, i128 fee) except -1:
    """``pools["fees"] += fee``, held."""
    if k.fees_epoch != k.epoch:
        pools = E["pools"]
        if type(pools) is not dict or not _i128_of((<dict>pools)["fees"], &k.fees):
            pools["fees"] = pools["fees"] + py128(fee)
            return 0
        k.pools = pools
        k.fees_epoch = k.epoch
    k.fees += fee
    k.fees_dirty = True
    return 0


cdef int _flush(Kernel k) except -1:
    """Write every changed field back to the engine's objects (the same keys created, in
    the same dicts, as the reference's own writes)."""
    cdef Py_ssize_t j, n = k.n_dirty
    cdef Slot* s
    cdef int d
    cdef dict A
    k.n_dirty = 0
    if k.fees_dirty:
        k.fees_dirty = False
        (<dict>k.pools)["fees"] = py128(k.fees)
    if k.counters is not None:
        E = <dict>k.counters
        if k.n_pend:
            _write_pending(k, E)
        k.counters = None
        k.orders = None
        E["seq"] = k.seq
        if E["t"] != k.t:
            E["t"] = k.t
        if k.next_held:
            k.next_held = False
            E["next_order_id"] = k.next_id
    if n == 0:
        return 0
    lname = k.bound.name
    for j in range(n):
        s = &k.slots[k.dirty[j]]
        d = s.dirty
        s.dirty = 0
        A = <dict>s.attrs
        if d & D_CASH:
            A["cash"] = py128(s.cash)
        if d & D_POSITION:
            A["positions"][lname] = py128(s.position)
        if d & D_VM:
            A["vm_basis"][lname] = py128(s.vm)
        if d & D_BASIS:
            A["basis"][lname] = py128(s.basis)
        if d & D_LOTS:
            lots = A["open_lots"].get(lname)
            if lots is None:
                A["open_lots"][lname] = [py128(s.lots[0]), py128(s.lots[1])]
            else:
                lots[0] = py128(s.lots[0])
                lots[1] = py128(s.lots[1])
    return 0


# ----------------------------------------------------------------------------- held orders
# While the counters are held, an order that comes to rest is kept here (its id, account slot,
# side and price) instead of as a ``LiveOrder`` in the engine's ``orders``; a held order that
# is filled, cancelled or amended away within the burst never reaches ``orders`` at all. The
# write-back adds the live ones in the order they came to rest -- where the reference's
# inserts put them: a resting order's id is new, or an amended order's taken out of
# ``orders`` just before (decision 92). An order found in ``orders`` is removed from it at
# once, as before.

cdef Py_ssize_t _pending(Kernel k, int64_t order_id) noexcept:
    """The entry of held order ``order_id`` (its latest), or -1."""
    cdef Py_ssize_t h, e
    if k.n_pend == 0:
        return -1
    h = <Py_ssize_t>((<uint64_t>order_id * <uint64_t>0x9E3779B97F4A7C15) >> 20) & k.pend_mask
    while True:
        e = k.pend_table[h]
        if e == 0:
            return -1
        if k.pend[e - 1].order_id == order_id:
            return e - 1
        h = (h + 1) & k.pend_mask


cdef int _hold_order(
    Kernel k, int64_t order_id, Py_ssize_t slot, int64_t side, int64_t price
) except -1:
    """Keep a resting order (see "held orders")."""
    cdef Py_ssize_t h, e, cap, i
    cdef Pending* grown
    if k.n_pend == k.cap_pend:
        cap = k.cap_pend * 2 if k.cap_pend else 1024
        grown = <Pending*>PyMem_RawRealloc(k.pend, cap * sizeof(Pending))
        if grown == NULL:
            raise MemoryError("held orders")
        k.pend = grown
        k.cap_pend = cap
        PyMem_RawFree(k.pend_table)
        k.pend_table = <Py_ssize_t*>PyMem_RawCalloc(2 * cap, sizeof(Py_ssize_t))
        if k.pend_table == NULL:
            raise MemoryError("held orders")
        k.pend_mask = 2 * cap - 1
        for i in range(k.n_pend):  # (again: the table is new)
            _place(k, i)
    e = k.n_pend
    k.pend[e].order_id = order_id
    k.pend[e].slot = slot
    k.pend[e].side = side
    k.pend[e].price = price
    k.pend[e].alive = True
    k.n_pend += 1
    _place(k, e)
    return 0


cdef inline void _place(Kernel k, Py_ssize_t e) noexcept:
    """Entry ``e`` into the table, over an older entry of its id."""
    cdef int64_t order_id = k.pend[e].order_id
    cdef Py_ssize_t h = (
        <Py_ssize_t>((<uint64_t>order_id * <uint64_t>0x9E3779B97F4A7C15) >> 20) & k.pend_mask
    )
    while k.pend_table[h] != 0 and k.pend[k.pend_table[h] - 1].order_id != order_id:
        h = (h + 1) & k.pend_mask
    k.pend_table[h] = e + 1


cdef int _write_pending(Kernel k, dict E) except -1:
    """The live held orders into the engine's ``orders``, as ``LiveOrder``s, in the order
    they came to rest (their accounts' own names, the held listing's)."""
    cdef Py_ssize_t i, n = k.n_pend
    cdef Pending* p
    orders = E["orders"]
    name = k.bound.name
    k.n_pend = 0
    memset(k.pend_table, 0, (k.pend_mask + 1) * sizeof(Py_ssize_t))
    for i in range(n):
        p = &k.pend[i]
        if not p.alive:
            continue
        # (object's own setattr, which LiveOrder's is (checked at import): into the
        # instance's inline values, no dict made until one is asked for)
        live = gpuex_new(<PyTypeObject*>LiveOrder)
        PyObject_GenericSetAttr(live, "account", <object>k.slots[p.slot].name)
        PyObject_GenericSetAttr(live, "instrument", name)
        PyObject_GenericSetAttr(live, "side", p.side)
        PyObject_GenericSetAttr(live, "price", p.price)
        orders[p.order_id] = live
    return 0


cdef int _release(Kernel k) except -1:
    """Write back, and start a new epoch: Python may run next, and change anything."""
    _flush(k)
    k.epoch += 1
    k.rows_held = False
    return 0


# the engine the flow driver holds the ledger of, and its kernel (None: none)
cdef object _held_engine = None
cdef Kernel _held_kernel = None


cdef int _hold(object engine, bint on) except -1:
    """The compiled flow driver's (:data:`HOLD`): with ``on``, the engine's rows keep the
    ledger held between them (the driver runs no Python until it calls this again); without,
    write back and let go. An engine without the compiled kernel: nothing to do."""
    global _held_engine, _held_kernel
    cdef PyObject** attributes
    cdef PyObject* found
    cdef Kernel k
    if engine is _held_engine:
        if on and _held_kernel.holding:
            return 0  # (held already: the driver's every row asks)
    elif not on:
        return 0  # (not held: a command that ran since wrote back as it ended)
    _held_engine = None
    _held_kernel = None
    attributes = _PyObject_GetDictPtr(engine)
    if attributes == NULL or attributes[0] == NULL:
        return 0
    found = PyDict_GetItemWithError(<dict>attributes[0], "_kernel")
    if found == NULL or type(<object>found) is not Kernel:
        return 0
    k = <Kernel>found
    if on:
        # only into a sink of lines that no tap reads (a tap's Python may run between rows)
        found = PyDict_GetItemWithError(<dict>attributes[0], "_sink")
        lines = lines_of(<object>found) if found != NULL else None
        k.holding = lines is not None and lines.tap is None
        if k.holding:
            _held_engine = engine
            _held_kernel = k
    else:
        k.holding = False
        _release(k)
    return 0


cdef int _advance(object engine, int64_t t) except -1:
    """The session's step moving the engine's clock to ``t`` ns while the flow driver holds
    the ledger and, with it, the engine's ``t`` (:data:`ADVANCE`): 1 when done here (``t``
    not before the held one); 0 when not held (the caller moves the engine's own ``t``)."""
    if engine is not _held_engine or not _held_kernel.holding:
        return 0
    if _held_kernel.counters is None or t < _held_kernel.t:
        return 0
    _held_kernel.t = t
    return 1


#: :func:`_hold`'s address, for the compiled flow driver: a C function ``int (object engine,
#: bint on)`` (-1 with an exception set)
HOLD = PyCapsule_New(<void*>_hold, b"exchange.kernel._kernel.hold", NULL)
#: :func:`_advance`'s address, for the session's compiled step: a C function ``int (object
#: engine, int64_t t)`` (-1 with an exception set)
ADVANCE = PyCapsule_New(<void*>_advance, b"exchange.kernel._kernel.advance", NULL)


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
    found = PyDict_GetItemWithError(E, "_kernel")
    if found == NULL or type(<object>found) is not Kernel:
        self._kernel = Kernel()  # an engine made without __init__ (a copy): its own
        return Exchange.handle(self, raw)
    kernel = <Kernel>found
    result = None
    if type(raw) is dict and kernel.usable(self, E):
        # Python ran since the kernel's last command (a command from Python: it may hold the
        # ledger only if the flow driver's row did not let it go, which it always does)
        kernel.holding = False
        _release(kernel)
        try:
            result = _run(kernel, self, E, <dict>raw)
        finally:
            _release(kernel)
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
    return _handle_row(self, name, instrument, op, order_id, price, qty, side, order_type, tif,
                       post_only, NULL)


cdef object _row_id(
    object engine,
    object name,
    object instrument,
    int64_t op,
    object order_id,
    int64_t price,
    int64_t qty,
    int64_t side,
    int64_t order_type,
    int64_t tif,
    int64_t post_only,
):
    """``engine.handle_row(...).order_id`` (:func:`handle_row` itself: the caller checks
    that the engine's method is it), with the row's price, quantity and codes as C values:
    the flow driver's entry (:data:`ROW_ID`), with no Python call, no argument tuple and, on
    the compiled path, no ``Result`` (its order id is the object the engine numbered the
    order with, as before). A code out of its range raises ValueError, as :func:`handle_row`'s
    do."""
    cdef bint done = False
    if not (0 <= op <= 2 and 0 <= side <= 1 and 0 <= order_type <= 1 and 0 <= tif <= 2
            and 0 <= post_only <= 1):
        raise ValueError(
            f"handle_row: a code out of range (op {op}, side {side}, order_type {order_type}, "
            f"tif {tif}, post_only {post_only})"
        )
    result = _handle_row(engine, name, instrument, op, order_id, price, qty, side, order_type,
                         tif, post_only, &done)
    if done:  # the compiled path's order id itself
        return result
    if type(result) is Result:
        return (<tuple>result)[1]
    return result.order_id  # (a patched engine's handle: read as the driver reads it)


#: :func:`_row_id`'s address, for a compiled caller (``exchange.sessions._flow``): a C
#: function ``object (object engine, object name, object instrument, int64_t op, object
#: order_id, int64_t price, int64_t qty, int64_t side, int64_t order_type, int64_t tif,
#: int64_t post_only)`` (a new reference; NULL with an exception set), named as below
ROW_ID = PyCapsule_New(<void*>_row_id, b"exchange.kernel._kernel.row_id", NULL)


cdef object _handle_row(
    object self,
    object name,
    object instrument,
    int op,
    object order_id,
    object price,
    object qty,
    int side,
    int order_type,
    int tif,
    int post_only,
    bint* row_id,
):
    """:func:`handle_row`'s body: its ``Result``. With ``row_id`` (:func:`_row_id`), a row
    the compiled path runs through gives no ``Result`` but its order id, and sets
    ``row_id[0]`` (any other row still gives the ``Result``)."""
    cdef bint want_result = row_id == NULL
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
    if self is _held_engine and _held_kernel.holding and _held_kernel.rows_held:
        # a row of the flow driver's burst after the first: no Python has run since that
        # one's checks (the engine's kernel, rows()), so they hold still
        kernel = _held_kernel
    else:
        found = PyDict_GetItemWithError(E, "_kernel")
        if (found == NULL or type(<object>found) is not Kernel
                or not (<Kernel>found).rows(self, E)):
            return self.handle(row_command(name, instrument, op, order_id, price, qty, side,
                                           order_type, tif, post_only))
        kernel = <Kernel>found
        kernel.rows_held = kernel.holding and self is _held_engine
    if kernel.holding:
        try:
            result = _row(kernel, self, E, name, instrument, op, order_id, price, qty, side,
                          order_type, tif, post_only, want_result, &c_order_id, &c_price,
                          &c_qty)
        except BaseException:
            kernel.holding = False
            _release(kernel)
            raise
        if result is None or (type(result) is str and op == ROW_ADD):
            kernel.holding = False  # (the driver holds the ledger again at its next row)
            _release(kernel)
    else:
        _release(kernel)
        try:
            result = _row(kernel, self, E, name, instrument, op, order_id, price, qty, side,
                          order_type, tif, post_only, want_result, &c_order_id, &c_price,
                          &c_qty)
        finally:
            _release(kernel)
    if type(result) is str and op != ROW_ADD:
        # a cancel's or an amend's refusal (an order no longer resting, on flow): its line
        # typed, when the sink takes lines
        refused = _refuse_row(kernel, E, name, op, c_order_id, c_price, c_qty, result)
        if refused is not None:
            return refused
        kernel.holding = False
        _release(kernel)
    if result is None or type(result) is str:
        raw = row_command(name, instrument, op, order_id, price, qty, side, order_type, tif,
                          post_only)
        if result is None:
            # not proven: the mapping's own path would decline it the same way
            return Exchange.handle(self, raw)
        return _refuse(E, raw, result)
    if not want_result and type(result) is int:
        # the order id _submit_checked or _cancel_checked gave (an amend gives its Result)
        row_id[0] = True
    return result


cdef object _row(
    Kernel kernel,
    object self,
    dict E,
    object name,
    object instrument,
    int op,
    object order_id,
    object price,
    object qty,
    int side,
    int order_type,
    int tif,
    int post_only,
    bint want_result,
    int64_t* c_order_id_out,
    int64_t* c_price_out,
    int64_t* c_qty_out,
):
    """:func:`_handle_row`'s command: its ``Result`` (or order id), its refusal, or None
    (the reference's); the row's order id, price and quantity as C values, when proven."""
    cdef int64_t c_order_id = 0, c_price = 0, c_qty = 0
    cdef Py_ssize_t i
    cdef Slot* s
    result = None
    if _name_ok(name):
        A = None
        if kernel.holding:
            # an account this burst has found already is still known, and not defaulted
            # (no Python ran since): its attributes as found
            i = _slot_of(kernel, name)
            if i >= 0:
                s = &kernel.slots[i]
                if s.epoch == kernel.epoch and s.checked:
                    A = <dict>s.attrs
        if A is None:
            A = _account(E, name)
        if A is None:
            pass
        elif op == ROW_ADD:
            if _name_ok(instrument) and _int_of(qty, 1, &c_qty) and _int_of(price, 0, &c_price):
                if order_type == 0:
                    result = _submit_checked(
                        kernel, self, E, A, name, instrument, side, _ROW_SIDES[side], True,
                        "limit", c_price, price, c_qty, qty, _ROW_TIFS[tif], post_only != 0,
                        True if post_only else False, want_result,
                    )
                else:
                    result = _submit_checked(
                        kernel, self, E, A, name, instrument, side, _ROW_SIDES[side], False,
                        "market", c_price, price, c_qty, qty, "gtc", False, False, want_result,
                    )
        elif op == ROW_CANCEL:
            if _int_of(order_id, 1, &c_order_id):
                result = _cancel_checked(kernel, E, A, name, c_order_id, order_id, want_result)
        elif (_int_of(order_id, 1, &c_order_id) and _int_of(price, 1, &c_price)
              and _int_of(qty, 1, &c_qty)):
            result = _amend_checked(
                kernel, self, E, A, name, c_order_id, order_id, c_price, price, c_qty, qty
            )
    c_order_id_out[0] = c_order_id
    c_price_out[0] = c_price
    c_qty_out[0] = c_qty
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


cdef bytes J_HEAD = b"," + _json(COMMAND_REJECTED) + b",null,"
cdef bytes J_NULL = b"null"
cdef bytes J_CANCEL_TAIL = b',"type":"cancel"},"reason":'
cdef bytes J_AMEND_TAIL = b',"type":"amend"},"reason":'


cdef object _refuse_row(
    Kernel kernel,
    dict E,
    object name,
    int op,
    int64_t order_id,
    int64_t price,
    int64_t qty,
    str reason,
):
    """:func:`_refuse` of a cancel or amend row (``name`` a proven name; ``order_id``,
    ``price``, ``qty`` proven ints, as the row's mapping holds them), its CommandRejected
    written as a typed line: the mapping's keys are ``row_command``'s, sorted. None when the
    sink does not take lines (the caller refuses it through the mapping)."""
    cdef Out o
    cdef Py_ssize_t start
    _begin_k(&o, E, kernel)  # (nothing held moves: the held seq goes on)
    if o.lines == NULL:
        return None
    try:
        known = name in E["accounts"]
        start = o.buf.len
        _head(&o, J_HEAD)
        if known:
            _put_obj(&o, name)
        else:
            _put(&o, J_NULL)
        _put(&o, R_COMMAND)
        _put_obj(&o, name)
        _put(&o, R_ORDER_ID)
        _put_int(&o, order_id)
        if op == ROW_AMEND:
            _put(&o, R_PRICE)
            _put_int(&o, price)
            _put(&o, R_QTY)
            _put_int(&o, qty)
            _put(&o, J_AMEND_TAIL)
        else:
            _put(&o, J_CANCEL_TAIL)
        if not _put_obj(&o, reason):
            _undo(&o, start)
            return None
        _close(&o, b"}]", K_REJECTED)
    finally:
        _done(&o)
    return _result(False, None, reason)


#: What :func:`_account` gives for an account that is not one, or has defaulted.
cdef object UNKNOWN = object()
cdef object DEFAULTED = object()


cdef object _account(dict E, object name):
    """``name``'s ``Account`` attributes (a dict); :data:`UNKNOWN` or :data:`DEFAULTED`
    (``Exchange._execute``'s two refusals, once the command is proven to parse); None when
    anything is unusual (the reference's)."""
    cdef dict accounts
    try:
        # typed: the dict's own get, not a method call (a dict subclass raises: the
        # reference's)
        accounts = E["accounts"]
        account = accounts.get(name)
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


# ----------------------------------------------------------------------------- the fields
# A command mapping is read once (:func:`_fields`): each key found among the models' field
# names, its value kept (borrowed: the mapping holds it) by the field's index.
cdef enum:
    F_TYPE = 0
    F_ACCOUNT = 1
    F_INSTRUMENT = 2
    F_SIDE = 3
    F_QTY = 4
    F_ORDER_TYPE = 5
    F_PRICE = 6
    F_TIF = 7
    F_POST_ONLY = 8
    F_ORDER_ID = 9
    F_AMOUNT = 10
    N_FIELDS = 11
# the names, interned: a command's keys written as literals (the bots' Context, the
# gateway's parser) are these very objects, found by identity; an equal str by comparison
cdef tuple _FIELD_KEYS = tuple(
    _intern(key)
    for key in (
        "type", "account", "instrument", "side", "qty", "order_type", "price", "tif",
        "post_only", "order_id", "amount",
    )
)
cdef PyObject* _KEYS[N_FIELDS]
for _k in range(N_FIELDS):
    _KEYS[_k] = <PyObject*>_FIELD_KEYS[_k]
# the fields each command's model has (extra="forbid": any other is the reference's)
cdef int M_SUBMIT = (
    (1 << F_TYPE) | (1 << F_ACCOUNT) | (1 << F_INSTRUMENT) | (1 << F_SIDE) | (1 << F_QTY)
    | (1 << F_ORDER_TYPE) | (1 << F_PRICE) | (1 << F_TIF) | (1 << F_POST_ONLY)
)
cdef int M_CANCEL = (1 << F_TYPE) | (1 << F_ACCOUNT) | (1 << F_ORDER_ID)
cdef int M_AMEND = M_CANCEL | (1 << F_PRICE) | (1 << F_QTY)
cdef int M_CASH = (1 << F_TYPE) | (1 << F_ACCOUNT) | (1 << F_AMOUNT)
cdef int M_CANCEL_ALL = (1 << F_TYPE) | (1 << F_ACCOUNT) | (1 << F_INSTRUMENT)


cdef int _fields(dict raw, PyObject** f) except -2:
    """Read ``raw`` once: the bits of the fields it holds (``1 << F_...``), each value in
    ``f`` at its field's index (borrowed); -1 when a key is not an exact ``str`` (``jsonable``
    refuses any other, a ``str`` subclass too: the reference would not parse the command)
    or is no field of any model this file runs (the reference's: a refusal or another
    command). Keys are looked for from the one after the last found: a command's keys come
    in their usual order."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef int mask = 0, k = N_FIELDS - 1, tried
    while PyDict_Next(raw, &pos, &key, &value):
        for tried in range(N_FIELDS):
            k += 1
            if k == N_FIELDS:
                k = 0
            if key == _KEYS[k]:
                break
        else:
            if type(<object>key) is not str:
                return -1
            for k in range(N_FIELDS):
                if <str>key == <str>_KEYS[k]:
                    break
            else:
                return -1
        f[k] = value
        mask |= 1 << k
    return mask


cdef object _run(Kernel kernel, object engine, dict E, dict raw):
    """The command's ``Result``; the reason the reference refuses it with (a ``str``:
    nothing emitted yet, the caller emits the ``CommandRejected``); or None: not proven, the
    reference's to run. A refusal is given only once the command is proven to parse (every
    field as the model takes it), in the order ``Exchange._execute`` and its callees check."""
    cdef PyObject* f[N_FIELDS]
    cdef int mask = _fields(raw, f)
    if mask < 0 or (mask & (1 << F_TYPE)) == 0 or (mask & (1 << F_ACCOUNT)) == 0:
        return None
    kind = <object>f[F_TYPE]
    if type(kind) is not str:
        return None
    name = <object>f[F_ACCOUNT]
    if not _name_ok(name):
        return None
    A = _account(E, name)
    if A is None:
        return None
    if kind == "submit":
        if mask & ~M_SUBMIT:
            return None
        return _submit(kernel, engine, E, f, mask, A, name)
    if kind == "cancel":
        if mask != M_CANCEL:
            return None
        return _cancel(kernel, E, f, A, name)
    if kind == "amend":
        if mask != M_AMEND:
            return None
        return _amend(kernel, engine, E, f, A, name)
    if kind == "deposit":
        if mask != M_CASH:
            return None
        return _deposit(E, f, A, name)
    if kind == "withdraw":
        if mask != M_CASH:
            return None
        return _withdraw(E, f, A, name)
    if kind == "cancel_all":
        if mask & ~M_CANCEL_ALL:
            return None
        return _cancel_all(E, f, mask, A, name)
    return None


cdef int _limits_ok(
    _Listing info, Slot* s, int side, int64_t qty, int64_t released
) except -1:
    """1 when ``Exchange._check_limits`` provably passes for an order of ``qty`` lots on
    ``side`` (an amend's ``released`` open lots off first) by the account of slot ``s`` (held
    for ``info``), without entering its past-a-limit branch; else 0 (the reference then
    decides)."""
    cdef i128 position = s.position
    cdef i128 buying = s.lots[0]
    cdef i128 selling = s.lots[1]
    cdef i128 basis = 0
    cdef i128 cash = s.cash
    cdef i128 new_buying, new_selling, new_lots, new_worst, exposure, swing
    if not (-FAST_MAX_LOTS <= position <= FAST_MAX_LOTS and 0 <= buying <= FAST_MAX_LOTS
            and 0 <= selling <= FAST_MAX_LOTS and -C_MAX_INT <= cash <= C_MAX_INT):
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
        basis = s.basis
        if not -C_MAX_INT <= basis <= C_MAX_INT:
            return 0
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
cdef object _submit(
    Kernel kernel, object engine, dict E, PyObject** f, int mask, object A, object name
):
    """A raw submit (its fields ``f``, those of ``mask``: :func:`_fields`, none but the
    model's): the model's fields proven (``Submit``, as pydantic -- strict,
    ``extra="forbid"`` -- takes them), then :func:`_submit_checked`."""
    cdef int64_t price = 0, qty = 0
    cdef int side
    if (mask & (1 << F_INSTRUMENT)) == 0 or not _name_ok(<object>f[F_INSTRUMENT]):
        return None
    instrument = <object>f[F_INSTRUMENT]
    if (mask & (1 << F_SIDE)) == 0 or type(<object>f[F_SIDE]) is not str:
        return None
    side_name = <object>f[F_SIDE]
    if side_name == "buy":
        side = 0
    elif side_name == "sell":
        side = 1
    else:
        return None
    if (mask & (1 << F_QTY)) == 0 or not _int_of(<object>f[F_QTY], 1, &qty):
        return None
    qty_value = <object>f[F_QTY]
    if (mask & (1 << F_ORDER_TYPE)) == 0:
        order_type = "limit"
    else:
        order_type = <object>f[F_ORDER_TYPE]
        if type(order_type) is not str or (order_type != "limit" and order_type != "market"):
            return None
    if (mask & (1 << F_PRICE)) == 0:
        price_value = 0
    else:
        price_value = <object>f[F_PRICE]
        if not _int_of(price_value, 0, &price):
            return None
    if (mask & (1 << F_TIF)) == 0:
        tif = "gtc"
    else:
        tif = <object>f[F_TIF]
        if type(tif) is not str or (tif != "gtc" and tif != "ioc" and tif != "fok"):
            return None
    if (mask & (1 << F_POST_ONLY)) == 0:
        post_only_value = False
    else:
        post_only_value = <object>f[F_POST_ONLY]
        if type(post_only_value) is not bool:
            return None
    return _submit_checked(
        kernel, engine, E, A, name, instrument, side, side_name, order_type == "limit",
        order_type, price, price_value, qty, qty_value, tif, post_only_value is True,
        post_only_value, True,
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
    bint want_result,
):
    """A submit whose fields parse (``A`` from :func:`_account`): ``Exchange._execute``'s
    and ``Exchange._submit``'s checks in their order -- each proven to pass, or its refusal
    (a ``str``), or None (the reference's) -- then the events, and the ``Result`` (without
    ``want_result``: only its order id, an int, for :func:`_row_id`)."""
    cdef int code, tif_code, remainder
    cdef int64_t order_id
    cdef _Listing info
    cdef dict instruments
    cdef Out o
    cdef Py_ssize_t slot
    cdef Slot* s
    if type(A) is not dict:
        return _account_refusal(A, name)
    try:
        if (kernel.info_epoch == kernel.epoch and kernel.holding
                and instrument is kernel.last_name):
            info = kernel.last_info  # (this burst's last: listed, not expired, fast)
            listing = info.listing
        else:
            instruments = E["instruments"]
            listing = instruments.get(instrument)
            if listing is None:
                return f"instrument: unknown instrument {instrument!r}"
            info = kernel.listing(listing, instrument)
            if not info.fast:
                return None
            if _attrs(listing)["expired"]:
                return f"instrument: {instrument!r} has expired"
            if kernel.holding:
                kernel.last_name = instrument
                kernel.last_info = info
                kernel.info_epoch = kernel.epoch
        if (limit or price) and not info.min_price <= price <= info.max_price:
            return _price_refusal(info, price_value, "price" if limit else "price (protection)")
        if not limit and (post_only or tif != "gtc"):
            return "order_type: market orders take neither tif nor post_only"
        if post_only and tif != "gtc":
            return "post_only: only a gtc limit order can be post-only"
        _bind(kernel, info)
        slot = _slot(kernel, E, name, <dict>A)
        if slot < 0:
            return None
        s = &kernel.slots[slot]
        s.checked = True
        if s.called:
            # under a collateral call only an order that reduces the position passes
            position = py128(s.position)
            reduces = -position if side == 0 else position
            if qty_value > max(reduces, 0):
                return (
                    f"account: {name!r} is under a collateral call; only orders that reduce "
                    f"its position are accepted ({info.name} position {position:+})"
                )
        if info.kind == RVS and _bilateral(E):
            return None  # its fills record bilateral contracts: the reference's
        if qty > FAST_MAX_QTY or not _limits_ok(info, s, side, qty, 0):
            _release(kernel)  # (the reference's check reads the engine's objects)
            return _limits_refusal(engine, E, listing, name, side, qty_value, 0)
        book_account = s.index
        if kernel.next_held:
            order_id = kernel.next_id
            order_id_value = order_id
        else:
            order_id_value = E["next_order_id"]
            # (compared as C values: no int object made for the bound)
            if not _int_of(order_id_value, 1, &order_id) or order_id >= C_MAX_INT:
                return None  # an engine's counter this file does not write: the reference's
    except Exception:
        return None
    tif_code = 0 if tif == "gtc" else 1 if tif == "ioc" else 2
    # ---- proven: the events (Exchange._submit from _received on)
    _begin_k(&o, E, kernel)
    try:
        _received_submit(
            &o, name, instrument, side, side_name, limit, order_type, price, price_value, qty,
            qty_value, tif_code, tif, post_only_value,
        )
        if kernel.next_held:
            kernel.next_id = order_id + 1
        elif kernel.counters is E and order_id + 1 < C_MAX_INT:
            kernel.next_id = order_id + 1  # (held from here on, with the seq)
            kernel.next_held = True
        else:
            E["next_order_id"] = order_id + 1
        if limit:
            code = info.book.submit(
                order_id, book_account, side, price, qty, tif_code, post_only
            )
        else:
            code = info.book.submit_market(order_id, book_account, side, qty, price)
        if code:
            reason = _REJECT_NAMES.get(code) or Reject(code).name.lower()
            _order_rejected(&o, info.name, info.or_head, name, order_id_value, reason)
            return _result(False, order_id_value, reason) if want_result else order_id_value
        _accepted(
            &o, info, name, order_id, order_id_value, side, side_name, limit, order_type, price,
            price_value, qty, qty_value, tif_code, tif, post_only_value,
        )
        if limit:
            remainder = 1 + tif_code  # REASONS: "stp" (gtc: only STP cancels it), "ioc", "fok"
        else:
            remainder = 4  # "market"
        _after_match(&o, kernel, info, slot, name, order_id_value, side, price_value,
                     remainder)
    finally:
        _done(&o)
    return _result(True, order_id_value, None) if want_result else order_id_value


cdef inline bint _held_int(object value, int64_t* out) except -1:
    """``value`` as an int64 when it is an exact int that fits (a held order's id or
    price); else 0."""
    cdef int overflow = 0
    if type(value) is not int:
        return 0
    out[0] = PyLong_AsLongLongAndOverflow(value, &overflow)
    return not overflow


cdef inline int _forget(Kernel k, dict E, dict orders, int64_t order_id) except -1:
    """``orders.pop(order_id, None)`` of a maker order the book has filled: a held order's
    entry let go instead."""
    cdef Py_ssize_t e = _pending(k, order_id) if k.counters is E else -1
    if e >= 0 and k.pend[e].alive:
        k.pend[e].alive = False
    else:
        orders.pop(order_id, None)
    return 0


cdef int _after_match(
    Out* o,
    Kernel k,
    _Listing info,
    Py_ssize_t taker,
    object taker_name,
    object order_id,
    int side,
    object price,
    int remainder_reason,
) except -1:
    """``Exchange._after_match`` (``taker`` the taker's slot, held for ``info``): the book's
    last outcome as fills, fees, STP cancels, the rest or the remainder's cancel
    (``REASONS[remainder_reason]``) -- each state change before its event."""
    cdef dict E = <dict>o.E
    cdef OrderBook book = info.book
    cdef object name = info.name
    cdef int maker_side = 1 - side
    cdef int kind = info.kind
    cdef int64_t tick_value = info.tick_value
    cdef int64_t px, qty, i, n, resting, cancelled
    cdef i128 notional, cash, change, delta, taker_fee, maker_fee
    cdef Py_ssize_t maker, owner_slot, e
    cdef int64_t c_id = 0, c_price = 0
    cdef Slot* t
    cdef Slot* m
    cdef dict listing, orders
    cdef object maker_name
    cdef BookFill fill
    cdef BookCancel cancel
    cdef Py_buffer view
    cdef const char* records
    n = book.n_fills
    if n:
        orders = _orders_of(k, E)
        taker_account = <object>k.slots[taker].name  # (the taker Account's own name)
        listing = _attrs(info.listing)
        # the fills' buffer, looked up once per array (see _Listing.fills): each record is
        # copied out before it is used, and nothing below touches the book's fills
        array = book.fill_arr
        if array is not info.fills:
            PyObject_GetBuffer(array, &view, PyBUF_SIMPLE)
            info.fills_data = <const char*>view.buf
            info.fills_len = view.len
            PyBuffer_Release(&view)
            info.fills = array
        if n * <Py_ssize_t>sizeof(BookFill) > info.fills_len:
            raise IndexError("record past the book's buffer")
        records = info.fills_data
        for i in range(n):
            memcpy(&fill, records + i * sizeof(BookFill), sizeof(BookFill))
            px = fill.price
            qty = fill.qty
            maker = _maker(k, E, fill.maker_account)
            m = &k.slots[maker]
            maker_name = <object>m.name  # (for the Fill and the maker's Fee)
            if not m.has_lots:  # (the reference's maker.open_lots[name] raises alike)
                raise KeyError(name)
            m.lots[maker_side] -= qty
            _dirty(k, m, D_LOTS)
            # the book has already matched: a maker order it filled is gone, and the last
            # price is this fill's, before the Fill announces them
            if book.order_qty(fill.maker_order_id) == 0:
                _forget(k, E, orders, fill.maker_order_id)
            listing["last_price"] = px
            notional = <i128>px * qty * tick_value
            # spot pays the notional at the trade; perpetuals and swaps move no cash there
            if kind == SPOT:
                cash = -notional if side == 0 else notional
            else:
                cash = 0
            # ---- Exchange._trade (exchange.risk.variation.move_lots, then cash, then Fill)
            delta = qty if side == 0 else -qty
            change = delta * px * tick_value if kind == PERP else 0
            t = _S(k, E, taker)
            _move_lots(k, t, delta, change, kind == RVS, px * delta)
            m = _S(k, E, maker)
            _move_lots(k, m, -delta, -change, kind == RVS, -(px * delta))
            t = _S(k, E, taker)
            t.cash += cash
            _dirty(k, t, D_CASH)
            m.cash -= cash
            _dirty(k, m, D_CASH)
            _fill(o, info, taker_name, order_id, side, px, qty, cash, maker_name,
                  fill.maker_order_id)
            # ---- Exchange._fee, taker then maker: the cash to the fee pool, then Fee;
            # none when 0
            taker_fee = _fee(notional, info.taker_bps)
            if taker_fee:
                t = _S(k, E, taker)
                t.cash -= taker_fee
                _dirty(k, t, D_CASH)
                _add_fee(k, E, taker_fee)
                _fee_event(o, info, taker_account, order_id, -taker_fee, 0)
            maker_fee = _fee(notional, info.maker_bps)
            if maker_fee:
                m = _S(k, E, maker)
                m.cash -= maker_fee
                _dirty(k, m, D_CASH)
                _add_fee(k, E, maker_fee)
                _fee_event(o, info, maker_name, fill.maker_order_id, -maker_fee, 1)
    n = book.n_cancels
    for i in range(n):
        _book_record(book.cancel_arr, i, &cancel, sizeof(BookCancel))
        maker_id = cancel.order_id
        e = _pending(k, cancel.order_id) if k.counters is E else -1
        if e >= 0 and k.pend[e].alive:
            k.pend[e].alive = False
            owner_slot = k.pend[e].slot
            owner_name = <object>k.slots[owner_slot].name
            owner_side = k.pend[e].side
        else:
            owner = _attrs(E["orders"].pop(maker_id))
            owner_name = owner["account"]
            owner_side = owner["side"]
            owner_slot = _named(k, E, owner_name)
        m = &k.slots[owner_slot]
        if not m.has_lots:
            raise KeyError(name)
        m.lots[<int>owner_side] -= cancel.qty
        _dirty(k, m, D_LOTS)
        _cancelled(o, name, info.c_head, owner_name, maker_id, cancel.qty, REASON_STP)
    resting = book.last_resting
    if resting:
        if k.counters is E and _held_int(order_id, &c_id) and _held_int(price, &c_price):
            _hold_order(k, c_id, taker, side, c_price)  # (see "held orders")
        else:
            if k.n_pend:
                _release(k)  # (the held orders first: they came to rest before it)
            # LiveOrder(taker.name, name, side, price)
            # (object's own setattr, which LiveOrder's is (checked at import): into the
            # instance's inline values, no dict made until one is asked for)
            live = gpuex_new(<PyTypeObject*>LiveOrder)
            PyObject_GenericSetAttr(live, "account", taker_name)
            PyObject_GenericSetAttr(live, "instrument", name)
            PyObject_GenericSetAttr(live, "side", side)
            PyObject_GenericSetAttr(live, "price", price)
            E["orders"][order_id] = live
        t = _S(k, E, taker)
        t.has_lots = True
        t.lots[side] += resting
        _dirty(k, t, D_LOTS)
        _rested(o, info, taker_name, order_id, side, price, resting)
    cancelled = book.last_cancelled
    if cancelled:
        _cancelled(o, name, info.c_head, taker_name, order_id, cancelled, remainder_reason)
    return 0


cdef inline int _move_lots(
    Kernel k, Slot* s, i128 delta, i128 change, bint swap, i128 premium
) except -1:
    """One side of ``exchange.risk.variation.move_lots``, held: ``delta`` lots into the
    position, the VM basis by ``change`` (when not 0), a swap's premium basis by
    ``premium``."""
    s.position += delta
    s.has_position = True
    _dirty(k, s, D_POSITION)
    if change:
        s.vm += change
        s.has_vm = True
        _dirty(k, s, D_VM)
    if swap:
        s.basis += premium
        s.has_basis = True
        _dirty(k, s, D_BASIS)
    return 0


# ----------------------------------------------------------------------------- cancel, amend
cdef inline object _orders_of(Kernel k, dict E):
    """``E["orders"]``: while ``k`` holds the engine's counters, as read when it took them
    (no Python has run since to put another there)."""
    if k.counters is E:
        return k.orders
    return E["orders"]


cdef object _own_order(Kernel k, dict E, object name, object order_id, int64_t c_order_id):
    """``Exchange._own_order``: the attributes of ``name``'s resting ``LiveOrder``
    ``order_id`` (``c_order_id`` as a C value), or the number of its held entry (an int: see
    "held orders"); its refusal (a ``str``) when there is none; None when the engine's record
    is not a ``LiveOrder`` (the reference's). Raises on an unusual engine (the caller falls
    back)."""
    cdef dict orders
    cdef Py_ssize_t e
    if k.counters is E:
        e = _pending(k, c_order_id)
        if e >= 0:
            # (a dead entry's order left the book this burst, and never reached ``orders``)
            if not k.pend[e].alive or <object>k.slots[k.pend[e].slot].name != name:
                return _no_order(order_id, name)
            return e
    orders = _orders_of(k, E)
    order = orders.get(order_id)
    if order is None:
        return _no_order(order_id, name)
    if type(order) is not LiveOrder:
        return None
    fields = _attrs(order)
    account = fields["account"]
    if account is not name and account != name:
        return _no_order(order_id, name)
    return fields


cdef inline object _cancel_in(object book, int64_t order_id):
    """``book.cancel(order_id)``; the lots it cancelled (``book.last_cancelled``): as C calls
    on an ``OrderBook``."""
    cdef OrderBook ob
    if type(book) is OrderBook:
        ob = <OrderBook>book
        ob.cancel(order_id)
        return ob.last_cancelled
    book.cancel(order_id)
    return book.last_cancelled


cdef object _cancel(Kernel kernel, dict E, PyObject** f, object A, object name):
    """A raw cancel (its fields ``f``: type, account and order_id, no other)."""
    cdef int64_t order_id
    if not _int_of(<object>f[F_ORDER_ID], 1, &order_id):
        return None
    return _cancel_checked(kernel, E, A, name, order_id, <object>f[F_ORDER_ID], True)


cdef object _cancel_checked(
    Kernel kernel,
    dict E,
    object A,
    object name,
    int64_t order_id,
    object order_id_value,
    bint want_result,
):
    """A cancel whose fields parse: the account, the order, then the events, and the
    ``Result`` (without ``want_result``: only its order id, for :func:`_row_id`)."""
    cdef dict order
    cdef _Listing info
    cdef Py_ssize_t slot
    cdef Slot* s
    cdef int64_t cancelled
    cdef Out o
    if type(A) is not dict:
        return _account_refusal(A, name)
    cdef Py_ssize_t held = -1
    try:
        found = _own_order(kernel, E, name, order_id_value, order_id)
        if type(found) is int:
            held = found
            instrument = kernel.bound.name
            side = kernel.pend[held].side
        elif type(found) is not dict:
            return found  # the refusal, or None
        else:
            order = found
            instrument = order["instrument"]
            side = order["side"]
        if held >= 0:
            info = kernel.bound
        elif (kernel.info_epoch == kernel.epoch and kernel.holding
                and instrument is kernel.last_info.name):
            info = kernel.last_info  # (this burst's last listing: the order's own)
        else:
            info = kernel.listing(E["instruments"][instrument], instrument)
        slot = -1
        if info.fast:
            _bind(kernel, info)
            slot = _slot(kernel, E, name, <dict>A)
            if slot < 0:
                return None
            kernel.slots[slot].checked = True
        else:
            _release(kernel)  # (another book: the engine's objects, as the reference moves them)
        if not (type(side) is int and 0 <= side <= 1):
            return None
    except Exception:
        return None
    if slot < 0:
        _begin(&o, E)
    else:
        _begin_k(&o, E, kernel)
    try:
        _received_cancel(&o, name, order_id, order_id_value)
        if slot < 0:
            cancelled_value = _cancel_in(E["instruments"][instrument].book, order_id)
            del E["orders"][order_id_value]
            _add_lots(A, instrument, side, -cancelled_value)
            _cancelled(&o, instrument, None, name, order_id_value, cancelled_value, REASON_USER)
        else:
            info.book.cancel(order_id)
            cancelled = info.book.last_cancelled
            # (held still: no write-back since -- the typed lines of a proven name run none)
            if held >= 0 and kernel.counters is E:
                kernel.pend[held].alive = False
            else:
                del _orders_of(kernel, E)[order_id_value]
            s = _S(kernel, E, slot)
            if not s.has_lots:
                raise KeyError(instrument)
            s.lots[<int>side] -= cancelled
            _dirty(kernel, s, D_LOTS)
            _cancelled(&o, instrument, info.c_head, name, order_id_value, cancelled, REASON_USER)
    finally:
        _done(&o)
    return _result(True, order_id_value, None) if want_result else order_id_value


cdef object _amend(Kernel kernel, object engine, dict E, PyObject** f, object A, object name):
    """A raw amend (its fields ``f``: type, account, order_id, price and qty, no other)."""
    cdef int64_t order_id = 0, price = 0, qty = 0
    if (
        not _int_of(<object>f[F_ORDER_ID], 1, &order_id)
        or not _int_of(<object>f[F_PRICE], 1, &price)
        or not _int_of(<object>f[F_QTY], 1, &qty)
    ):
        return None
    return _amend_checked(
        kernel, engine, E, A, name, order_id, <object>f[F_ORDER_ID], price, <object>f[F_PRICE],
        qty, <object>f[F_QTY],
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
    cdef OrderBook book
    cdef _Listing info
    cdef dict order
    cdef Py_ssize_t slot
    cdef Slot* s
    cdef Out o
    if type(A) is not dict:
        return _account_refusal(A, name)
    cdef Py_ssize_t held = -1
    try:
        found = _own_order(kernel, E, name, order_id_value, order_id)
        if type(found) is int:
            held = found
            info = kernel.bound
            instrument = info.name
            listing = info.listing
            order_side = kernel.pend[held].side
            order_price = kernel.pend[held].price
        elif type(found) is not dict:
            return found  # the refusal, or None
        else:
            order = found
            instrument = order["instrument"]
            listing = E["instruments"][instrument]
            info = kernel.listing(listing, instrument)
            order_side = order["side"]
            order_price = order["price"]
        if not info.fast:
            return None
        if not info.min_price <= price <= info.max_price:
            return _price_refusal(info, price_value, "price")
        if info.kind == RVS and _bilateral(E):
            return None
        book = info.book
        open_qty = book.order_qty(order_id)
        side = order_side
        if not 0 <= side <= 1:
            return None
        _bind(kernel, info)
        slot = _slot(kernel, E, name, <dict>A)
        if slot < 0:
            return None
        s = &kernel.slots[slot]
        s.checked = True
        if qty > FAST_MAX_QTY or not _limits_ok(info, s, side, qty, open_qty):
            _release(kernel)  # (the reference's check reads the engine's objects)
            return _limits_refusal(engine, E, listing, name, side, qty_value, open_qty)
        kept = price_value == order_price and qty <= open_qty
    except Exception:
        return None
    _begin_k(&o, E, kernel)
    try:
        _received_amend(&o, name, order_id, order_id_value, price, price_value, qty, qty_value)
        code = book.amend(order_id, price, qty)
        if code:
            reason = _REJECT_NAMES.get(code) or Reject(code).name.lower()
            _order_rejected(&o, instrument, None, name, order_id_value, reason)
            return _result(False, order_id_value, reason)
        s = _S(kernel, E, slot)
        if not s.has_lots:
            raise KeyError(instrument)
        if kept:
            s.lots[side] += qty - open_qty
        else:  # leaves the book and comes back as a new order (which may trade)
            s.lots[side] -= open_qty
            if held >= 0 and kernel.counters is E:
                kernel.pend[held].alive = False
            else:
                del E["orders"][order_id_value]
        _dirty(kernel, s, D_LOTS)
        _amended(&o, instrument, name, order_id, order_id_value, side, price, price_value, qty,
                 qty_value, kept)
        if not kept:
            _after_match(&o, kernel, info, slot, name, order_id_value, side, price_value,
                         REASON_STP)
    finally:
        _done(&o)
    return _result(True, order_id_value, None)


cdef bytes R_ALL_INSTRUMENT = b',"instrument":'
cdef bytes R_ALL_NONE = b',"instrument":null'
cdef bytes R_ALL_TAIL = b',"type":"cancel_all"}}]'


cdef int _received_cancel_all(Out* o, object name, object instrument) except -1:
    """A cancel-all's CommandReceived (``name`` a proven name; ``instrument`` one, or None)."""
    if o.lines == NULL:
        return _emit_o(
            o, COMMAND_RECEIVED, None, name, None, None, None, None, None, None, None,
            {"account": name, "type": "cancel_all", "instrument": instrument},
            "command",
        )
    _received_head(o, name)
    if instrument is None:
        _put(o, R_ALL_NONE)
    else:
        _put(o, R_ALL_INSTRUMENT)
        _put_obj(o, instrument)
    return _close(o, R_ALL_TAIL, K_RECEIVED)


cdef object _cancel_all(dict E, PyObject** f, int mask, object A, object name):
    """A raw cancel-all (its fields ``f``: type, account, and instrument if ``mask`` has
    it), ``Exchange._cancel_all_command`` then ``Exchange._cancel_all`` in C."""
    cdef dict order, instruments
    cdef list books, listed
    cdef Py_ssize_t nb, b, i, n = 0
    cdef int64_t bound = 0, acct = 0, last = -1, cancelled
    cdef bint ordered = True
    cdef Resting few[64]
    cdef Resting* rows = few
    cdef OrderBook c
    cdef Out o
    if (mask & (1 << F_INSTRUMENT)) == 0:
        instrument = None
    else:
        instrument = <object>f[F_INSTRUMENT]
        if instrument is not None and not _name_ok(instrument):
            return None
    if type(A) is not dict:
        return _account_refusal(A, name)
    try:
        instruments = E["instruments"]
        if instrument is not None and instrument not in instruments:
            return f"instrument: unknown instrument {instrument!r}"
    except Exception:
        return None
    _begin(&o, E)
    try:
        _received_cancel_all(&o, name, instrument)
        # Exchange._cancel_all(name, "user", instrument), after the command's event as there
        # (a listener of it sees the orders still resting): the account's orders from the
        # books of the instruments it has open lots in (not a walk of every resting order),
        # found in the C books' levels, oldest entry first across them
        open_lots = A["open_lots"]
        index = A["index"]
        books = []
        listed = []  # per book: None for a C book, else its orders_of rows
        for held, lots in open_lots.items():
            if (lots[0] or lots[1]) and (instrument is None or instrument == held):
                book = instruments[held].book
                books.append(book)
                if type(book) is OrderBook:
                    bound += (<OrderBook>book).n_orders
                    listed.append(None)
                else:
                    got = list(book.orders_of(index))
                    bound += len(got)
                    listed.append(got)
        nb = len(books)
        if nb:
            acct = index
        if bound > 64:
            rows = <Resting*>PyMem_RawMalloc(bound * sizeof(Resting))
            if rows == NULL:
                raise MemoryError("cancel_all")
        for b in range(nb):
            book = books[b]
            if listed[b] is None:
                n = walk_resting(<OrderBook>book, acct, <int32_t>b, rows, n, &last, &ordered)
            else:
                for row in <list>listed[b]:
                    rows[n].entry = row[0]
                    rows[n].order_id = row[1]
                    rows[n].book = <int32_t>b
                    n += 1
                    ordered = ordered and rows[n - 1].entry > last
                    last = rows[n - 1].entry
        if not ordered:  # entries are unique across books: the reference's sort
            qsort(rows, n, sizeof(Resting), by_entry)
        # per order (Exchange._forget_cancelled): the book's cancel, the engine's record
        # popped, the owner's lots, then OrderCancelled
        # (a subclass's pop is a method call: nothing here walks or needs more of it)
        orders = E["orders"]
        for i in range(n):
            book = books[rows[i].book]
            order_id = rows[i].order_id
            if type(book) is OrderBook:
                c = <OrderBook>book
                c.cancel(rows[i].order_id)
                cancelled = c.last_cancelled
                cancelled_value = cancelled
            else:
                book.cancel(order_id)
                cancelled_value = book.last_cancelled
                cancelled = cancelled_value
            if type(orders) is dict:  # (the dict's own pop, not a method call)
                order = _attrs((<dict>orders).pop(order_id))
            else:
                order = _attrs(orders.pop(order_id))
            instrument_name = order["instrument"]
            _add_lots(A, instrument_name, order["side"], -cancelled_value)
            _cancelled(&o, instrument_name, None, order["account"], order_id, cancelled,
                       REASON_USER)
    finally:
        _done(&o)
        if rows != few:
            PyMem_RawFree(rows)
    return _result(True, None, None)


# ----------------------------------------------------------------------------- cash
cdef object _amount(PyObject** f):
    """The raw command's ``amount`` (its fields ``f``: type, account and amount, no other)
    when it is a PositiveInt; else None."""
    cdef int64_t amount
    if not _int_of(<object>f[F_AMOUNT], 1, &amount):
        return None
    return <object>f[F_AMOUNT]


cdef object _deposit(dict E, PyObject** f, object A, object name):
    amount = _amount(f)
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


cdef object _withdraw(dict E, PyObject** f, object A, object name):
    amount = _amount(f)
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
