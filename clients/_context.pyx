# cython: language_level=3, embedsignature=False
"""The context a bot acts through, compiled (issue #20): the :class:`Context` that in-process
bots get when their session runs the compiled runner (``clients._runner.CompiledRunner``).

:class:`clients.context.Context` is the reference and stays plain Python (the reference
engine's runner, the remote side and ``RUNNER``/``COUNTER = "python"`` use it). This twin has
the same public API, docstrings, attributes and results -- the same command dicts, key for
key in the same order, the same ``rng``, the same exceptions and messages -- and the same
runner-side protocol (``_books``, ``_outbox``, ``_timers``, ``_account``, ``_next_ref``,
``_begin``, ``_drain``). What differs is where the hot methods run: in C, not in Python frames
that a budgeted callback's trace function sees one by one (each call a frame object and a
trace event: most of the reference's cost inside a bot's callback).

**The same budget, charged the same way.** A budgeted callback is charged per Python call and
per line of looping functions (``clients.budget``). The reference's methods are Python
functions, so a compiled method charges what they would have: ``submit`` two units (its call
and ``_send``'s), ``open_orders`` four plus one per resting order (its call, ``_view``'s, the
list comprehension's call and its first line, and a line event per item), and so on, through
:func:`clients._budget.charge`. It does so only where it is sure to do exactly what the
reference's Python would: the counter installed is the compiled one, it has the units left,
the recursion limit is not near, and every argument and attribute it touches is of the plain
type the fast path knows (so no Python code of a bot's -- a ``__eq__``, an ``__index__`` --
runs in between). Anywhere else (a budget about to be overrun, a stopped bot, a call outside a
callback, unusual arguments, the Python counter or a debugger's trace function, a call with
the wrong arguments) it calls the reference's Python function on itself, which the interpreter
runs and traces as ever: the overrun, ``BotStopped``, ``RuntimeError``, ``TypeError`` or
``RecursionError`` comes from the same Python line, at the same point, with the same message
and the same traceback, frame for frame (no frame of this file is added to it). The methods
are objects of a small C type with vectorcall, not C method descriptors: a call of one takes
no recursion level (a method descriptor takes one when the call is not specialized, as under
a trace function), and the fallback calls the reference's function through
``PyObject_Vectorcall``, so its frames take the levels they take when a bot calls it
directly.

The methods the flagship calls often (``submit``, ``cancel``, ``amend``, ``cancel_all``,
``schedule``, ``balance``, ``positions``, ``open_orders``, ``_begin``, ``_drain``) are C
functions; the others (``deposit``, ``withdraw``, ``log``, ``book``, ``_send``, ``_view``) are
the reference's own Python functions, so a bot calling them -- or the fallback -- runs the
reference's code. The class is a Python subclass of a C state (the fields in C, an instance
``__dict__`` as the reference has) named ``Context``, so that messages naming the type read
the same. Units: prices in ticks, quantities in lots, cash in minor units, times in simulated
ns.
"""

from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

import inspect
import traceback

from clients import context as _reference
from clients import runner as _runner_module
from clients._budget import prime as _prime
from clients.budget import _kind
from clients.context import AccountView, OpenOrder

from clients._budget cimport charge


cdef extern from *:
    """
    #include "structmember.h"

    /* A compiled method of the Context (clients/_context.pyx): a callable with vectorcall
       that the interpreter calls like any object, so that a call takes no recursion level of
       its own. (A C method descriptor takes one -- " while calling a Python object" -- when
       the call is not specialized, as under a trace function; a reference method's Python
       frame takes exactly one, and the fallback's call of it takes that one.) Bound like a
       function (METHOD_DESCRIPTOR: ``ctx.submit(...)`` calls it with ``ctx`` first, no bound
       object made); ``impl`` receives the instance, the other arguments and ``kwnames``. */
    typedef PyObject *(*gpuex_impl)(PyObject *, PyObject **, Py_ssize_t, PyObject *);
    typedef struct {
        PyObject_HEAD
        vectorcallfunc vectorcall;
        gpuex_impl impl;
        PyTypeObject *owner;
        PyObject *name, *qualname, *doc, *signature;
    } gpuex_method;

    static PyObject *gpuex_method_call(PyObject *callable, PyObject *const *args,
                                       size_t nargsf, PyObject *kwnames) {
        gpuex_method *m = (gpuex_method *)callable;
        Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
        if (nargs < 1 || !PyObject_TypeCheck(args[0], m->owner)) {
            PyErr_Format(PyExc_TypeError, "%U() needs a Context as its first argument",
                         m->qualname);
            return NULL;
        }
        return m->impl(args[0], (PyObject **)(args + 1), nargs - 1, kwnames);
    }

    static PyObject *gpuex_method_get(PyObject *self, PyObject *obj, PyObject *type) {
        if (obj == NULL || obj == Py_None) {
            Py_INCREF(self);
            return self;
        }
        return PyMethod_New(self, obj);
    }

    static void gpuex_method_dealloc(PyObject *self) {
        gpuex_method *m = (gpuex_method *)self;
        Py_XDECREF(m->owner);
        Py_XDECREF(m->name);
        Py_XDECREF(m->qualname);
        Py_XDECREF(m->doc);
        Py_XDECREF(m->signature);
        PyObject_Free(self);
    }

    static PyMemberDef gpuex_method_members[] = {
        {"__name__", T_OBJECT, offsetof(gpuex_method, name), READONLY, NULL},
        {"__qualname__", T_OBJECT, offsetof(gpuex_method, qualname), READONLY, NULL},
        {"__doc__", T_OBJECT, offsetof(gpuex_method, doc), READONLY, NULL},
        {"__signature__", T_OBJECT, offsetof(gpuex_method, signature), READONLY, NULL},
        {"__objclass__", T_OBJECT, offsetof(gpuex_method, owner), READONLY, NULL},
        {NULL}
    };

    static PyTypeObject gpuex_method_type = {
        PyVarObject_HEAD_INIT(NULL, 0)
        .tp_name = "clients._context.method",
        .tp_basicsize = sizeof(gpuex_method),
        .tp_dealloc = gpuex_method_dealloc,
        .tp_vectorcall_offset = offsetof(gpuex_method, vectorcall),
        .tp_call = PyVectorcall_Call,
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL
                    | Py_TPFLAGS_METHOD_DESCRIPTOR,
        .tp_members = gpuex_method_members,
        .tp_descr_get = gpuex_method_get,
    };

    static PyObject *gpuex_method_new(gpuex_impl impl, PyObject *owner, PyObject *name,
                                      PyObject *qualname, PyObject *doc,
                                      PyObject *signature) {
        if (!(gpuex_method_type.tp_flags & Py_TPFLAGS_READY)
                && PyType_Ready(&gpuex_method_type) < 0)
            return NULL;
        gpuex_method *m = PyObject_New(gpuex_method, &gpuex_method_type);
        if (m == NULL)
            return NULL;
        m->vectorcall = gpuex_method_call;
        m->impl = impl;
        Py_INCREF(owner); m->owner = (PyTypeObject *)owner;
        Py_INCREF(name); m->name = name;
        Py_INCREF(qualname); m->qualname = qualname;
        Py_INCREF(doc); m->doc = doc;
        Py_INCREF(signature); m->signature = signature;
        return (PyObject *)m;
    }
    """
    ctypedef PyObject* (*gpuex_impl)(PyObject*, PyObject**, Py_ssize_t, PyObject*) except NULL
    object gpuex_method_new(gpuex_impl impl, object owner, object name, object qualname,
                            object doc, object signature)


cdef extern from "Python.h":
    ctypedef PyObject* (*getter)(PyObject*, void*)
    ctypedef int (*setter)(PyObject*, PyObject*, void*)
    ctypedef struct PyGetSetDef:
        const char* name
        getter get
        setter set
        const char* doc
        void* closure
    object PyDescr_NewGetSet(PyTypeObject* type, PyGetSetDef* getset)
    void PyErr_SetObject(object type, object value)
    PyObject* PyObject_Vectorcall(PyObject* callable, PyObject** args, size_t nargsf,
                                  PyObject* kwnames)


#: An attribute deleted (``del ctx.now``): reading it raises AttributeError, as the reference's
#: instance attribute would. (``GONE`` below: clients._runner reads the fields of a plain
#: Context in C, and uses the attribute protocol for one that is gone.)
cdef object _GONE = object()
cdef object _ACCOUNT_VIEW = AccountView
cdef object _OPEN_ORDER = OpenOrder
cdef object _REFERENCE = _reference.Context
cdef list _KEEP = []  # the attribute names the C definitions below point into


cdef class _ContextState:
    """The compiled :class:`Context`'s state in C: the reference's instance attributes (any
    value may be assigned or deleted, as there; read and written through the descriptors
    below). Its fields are declared in ``clients/_context.pxd`` (clients._runner reads and
    sets them on a :func:`plain` Context)."""

    def __init__(self, name, account, rng):
        self.c_name = name
        self.c_account = account
        self.c_rng = rng
        self.c_now = 0
        self.c_view = None
        self.c_books = {}
        self.c_outbox = []
        self.c_timers = []
        self.c_next_ref = 1
        self.c_stopped = False


# ---------------------------------------------------------------- the attributes
# Getset descriptors whose functions are C functions of CPython's signatures (not Cython
# properties): a missing attribute's AttributeError is set without a frame of this file in its
# traceback, as the reference's instance attribute raises it (a bot that formats a traceback
# under its budget pays the same for it).
cdef tuple _FIELDS = (
    "name",
    "account",
    "rng",
    "now",
    "_account",
    "_books",
    "_outbox",
    "_timers",
    "_next_ref",
    "stopped",
)


cdef inline object _field(_ContextState self, Py_ssize_t i):
    if i == 0:
        return self.c_name
    if i == 1:
        return self.c_account
    if i == 2:
        return self.c_rng
    if i == 3:
        return self.c_now
    if i == 4:
        return self.c_view
    if i == 5:
        return self.c_books
    if i == 6:
        return self.c_outbox
    if i == 7:
        return self.c_timers
    if i == 8:
        return self.c_next_ref
    return self.c_stopped


cdef inline void _set_field(_ContextState self, Py_ssize_t i, object value) noexcept:
    if i == 0:
        self.c_name = value
    elif i == 1:
        self.c_account = value
    elif i == 2:
        self.c_rng = value
    elif i == 3:
        self.c_now = value
    elif i == 4:
        self.c_view = value
    elif i == 5:
        self.c_books = value
    elif i == 6:
        self.c_outbox = value
    elif i == 7:
        self.c_timers = value
    elif i == 8:
        self.c_next_ref = value
    else:
        self.c_stopped = value


cdef void _no_attribute(PyObject* obj, Py_ssize_t i) noexcept:
    # what the interpreter raises for a missing instance attribute (message, name, obj)
    name = _FIELDS[i]
    self = <object>obj
    exc = AttributeError(
        f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
    )
    PyErr_SetObject(AttributeError, exc)


cdef PyObject* _get(PyObject* obj, void* closure) noexcept:
    cdef Py_ssize_t i = <Py_ssize_t>closure
    value = _field(<_ContextState>obj, i)
    if value is _GONE:
        _no_attribute(obj, i)
        return NULL
    Py_INCREF(value)
    return <PyObject*>value


cdef int _set(PyObject* obj, PyObject* value, void* closure) noexcept:
    cdef Py_ssize_t i = <Py_ssize_t>closure
    if value == NULL:  # del ctx.name
        if _field(<_ContextState>obj, i) is _GONE:
            _no_attribute(obj, i)
            return -1
        _set_field(<_ContextState>obj, i, _GONE)
    else:
        _set_field(<_ContextState>obj, i, <object>value)
    return 0


cdef PyGetSetDef _GETSETS[10]


def _attribute(Py_ssize_t i):
    name = _FIELDS[i]
    encoded = name.encode()
    _KEEP.append(encoded)
    _GETSETS[i].name = encoded
    _GETSETS[i].get = _get
    _GETSETS[i].set = _set
    _GETSETS[i].doc = NULL
    _GETSETS[i].closure = <void*>i
    return PyDescr_NewGetSet(<PyTypeObject*>_ContextState, &_GETSETS[i])


# ---------------------------------------------------------------- the fallback
cdef inline PyObject* _fallback(object fn, PyObject* obj, PyObject** args, Py_ssize_t nargs,
                                PyObject* kwnames) noexcept:
    """``fn(obj, *args, **kwargs)``: the reference's Python function, called with the
    arguments as the bot passed them (``args[-1]`` is ``obj``: gpuex_method_call passed
    ``args + 1``), through vectorcall (no recursion level but its frame's). Returns a new
    reference, or NULL with the error it raised set -- returned as it is by the method
    (``noexcept``: Cython adds no frame of this file to its traceback, which is the
    reference's exactly)."""
    return PyObject_Vectorcall(<PyObject*>fn, args - 1, nargs + 1, kwnames)


cdef inline PyObject* _new(object value):
    # a new reference to ``value``, as a METH_FASTCALL function returns
    Py_INCREF(value)
    return <PyObject*>value


cdef inline bint _exact_str(PyObject* key):
    return type(<object>key) is str


# ---------------------------------------------------------------- commands
# Each: the bot's arguments as vectorcall passes them (``args[:nargs]`` positional, then one
# value per name in ``kwnames``); the fast path, or the reference's function.
cdef object _SUBMIT = _REFERENCE.submit
cdef object _CANCEL = _REFERENCE.cancel
cdef object _AMEND = _REFERENCE.amend
cdef object _CANCEL_ALL = _REFERENCE.cancel_all
cdef object _SCHEDULE = _REFERENCE.schedule
cdef object _BALANCE = _REFERENCE.balance
cdef object _POSITIONS = _REFERENCE.positions
cdef object _OPEN_ORDERS = _REFERENCE.open_orders
cdef object _BEGIN = _REFERENCE._begin
cdef object _DRAIN = _REFERENCE._drain


cdef inline bint _can_send(_ContextState self):
    # what the reference's _send touches is plain: it neither raises nor runs a bot's code
    return (
        self.c_stopped is False
        and type(self.c_outbox) is list
        and self.c_account is not _GONE
    )


cdef PyObject* _impl_submit(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                       PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    cdef Py_ssize_t i
    cdef bint fast = nargs == 4
    order_type, tif, post_only = "limit", "gtc", False
    if fast and kwnames != NULL:
        for i in range(PyTuple_GET_SIZE(<object>kwnames)):
            key = <object>PyTuple_GET_ITEM(<object>kwnames, i)
            if type(key) is not str:
                fast = False
            elif key == "order_type":
                order_type = <object>args[4 + i]
            elif key == "tif":
                tif = <object>args[4 + i]
            elif key == "post_only":
                post_only = <object>args[4 + i]
            else:
                fast = False
    if fast and type(self.c_next_ref) is int and type(order_type) is str and _can_send(self):
        price = <object>args[2]
        market = order_type == "market"
        # ``if price:`` of a plain value runs no Python code
        if (not market or type(price) is int or type(price) is bool or price is None) and charge(
            2, 3  # submit's and _send's calls; their frames and the counter's level
        ):
            ref = self.c_next_ref
            self.c_next_ref = ref + 1
            command = {
                "type": "submit",
                "instrument": <object>args[0],
                "side": <object>args[1],
                "qty": <object>args[3],
                "order_type": order_type,
            }
            if market:
                if price:
                    command["price"] = price
            else:
                command["price"] = price
                command["tif"] = tif
                command["post_only"] = post_only
            command["account"] = self.c_account
            (<list>self.c_outbox).append((ref, command))
            return _new(ref)
    return _fallback(_SUBMIT, obj, args, nargs, kwnames)


cdef PyObject* _impl_cancel(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                       PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    if nargs == 1 and kwnames == NULL and _can_send(self) and charge(2, 3):
        command = {"type": "cancel", "order_id": <object>args[0], "account": self.c_account}
        (<list>self.c_outbox).append((None, command))
        return _new(None)
    return _fallback(_CANCEL, obj, args, nargs, kwnames)


cdef PyObject* _impl_amend(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                      PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    if nargs == 3 and kwnames == NULL and _can_send(self) and charge(2, 3):
        command = {
            "type": "amend",
            "order_id": <object>args[0],
            "price": <object>args[1],
            "qty": <object>args[2],
            "account": self.c_account,
        }
        (<list>self.c_outbox).append((None, command))
        return _new(None)
    return _fallback(_AMEND, obj, args, nargs, kwnames)


cdef PyObject* _impl_cancel_all(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                           PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    instrument = None
    cdef bint fast = nargs <= 1 and (kwnames == NULL or nargs == 0)
    if fast and kwnames != NULL:
        fast = PyTuple_GET_SIZE(<object>kwnames) == 1 and _exact_str(
            PyTuple_GET_ITEM(<object>kwnames, 0)
        ) and <object>PyTuple_GET_ITEM(<object>kwnames, 0) == "instrument"
    if fast and (nargs == 1 or kwnames != NULL):
        instrument = <object>args[0]
    if fast and _can_send(self) and charge(2, 3):
        command = {"type": "cancel_all"}
        if instrument is not None:
            command["instrument"] = instrument
        command["account"] = self.c_account
        (<list>self.c_outbox).append((None, command))
        return _new(None)
    return _fallback(_CANCEL_ALL, obj, args, nargs, kwnames)


cdef PyObject* _impl_schedule(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                         PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    tag = None
    cdef bint fast = (nargs == 1 or nargs == 2) and (kwnames == NULL or nargs == 1)
    if fast and kwnames != NULL:
        fast = PyTuple_GET_SIZE(<object>kwnames) == 1 and _exact_str(
            PyTuple_GET_ITEM(<object>kwnames, 0)
        ) and <object>PyTuple_GET_ITEM(<object>kwnames, 0) == "tag"
    if fast and (nargs == 2 or kwnames != NULL):
        tag = <object>args[1]
    # int(at) of an int is the int itself
    if fast and self.c_stopped is False and type(<object>args[0]) is int and type(
        self.c_timers
    ) is list and charge(1, 2):
        (<list>self.c_timers).append((<object>args[0], tag))
        return _new(None)
    return _fallback(_SCHEDULE, obj, args, nargs, kwnames)


# ---------------------------------------------------------------- queries
cdef inline bint _is_view(object view):
    # an AccountView of its three fields (one made otherwise raises in the reference)
    return type(view) is _ACCOUNT_VIEW and PyTuple_GET_SIZE(view) == 3


cdef PyObject* _impl_balance(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                        PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    view = self.c_view
    if nargs == 0 and kwnames == NULL and _is_view(view) and charge(2, 3):
        return _new((<tuple>view)[0])  # balance's and _view's calls
    return _fallback(_BALANCE, obj, args, nargs, kwnames)


cdef PyObject* _impl_positions(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                          PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    view = self.c_view
    if nargs == 0 and kwnames == NULL and _is_view(view):
        positions = (<tuple>view)[1]
        # dict() of a dict copies its entries: no hash or comparison runs
        if type(positions) is dict and charge(2, 3):
            return _new(dict(<dict>positions))
    return _fallback(_POSITIONS, obj, args, nargs, kwnames)


cdef PyObject* _impl_open_orders(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                            PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    cdef Py_ssize_t i, n
    cdef tuple orders
    cdef list found
    instrument = None
    cdef bint fast = nargs <= 1 and (kwnames == NULL or nargs == 0)
    if fast and kwnames != NULL:
        fast = PyTuple_GET_SIZE(<object>kwnames) == 1 and _exact_str(
            PyTuple_GET_ITEM(<object>kwnames, 0)
        ) and <object>PyTuple_GET_ITEM(<object>kwnames, 0) == "instrument"
    if fast and (nargs == 1 or kwnames != NULL):
        instrument = <object>args[0]
    view = self.c_view
    if fast and (instrument is None or type(instrument) is str) and _is_view(view) and type(
        (<tuple>view)[2]
    ) is tuple:
        # ``instrument in (None, o.instrument)`` compares only plain strs (or is None)
        orders = <tuple>(<tuple>view)[2]
        n = len(orders)
        for i in range(n):
            if type(orders[i]) is not _OPEN_ORDER or PyTuple_GET_SIZE(orders[i]) != 5 or (
                instrument is not None and type((<tuple>orders[i])[1]) is not str
            ):
                fast = False
                break
        # open_orders', _view's and the comprehension's calls, its first line and a line
        # event per order (each turn of its loop)
        if fast and charge(4 + n, 3):
            found = []
            for i in range(n):
                if instrument is None or (<tuple>orders[i])[1] == instrument:
                    found.append(orders[i])
            return _new(found)
    return _fallback(_OPEN_ORDERS, obj, args, nargs, kwnames)


# ---------------------------------------------------------------- runner side
cdef PyObject* _impl_begin(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                      PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    if nargs == 2 and kwnames == NULL and charge(1, 2):
        self.c_now = <object>args[0]
        self.c_view = <object>args[1]
        return _new(None)
    return _fallback(_BEGIN, obj, args, nargs, kwnames)


cdef PyObject* _impl_drain(PyObject* obj, PyObject** args, Py_ssize_t nargs,
                      PyObject* kwnames) except NULL:
    cdef _ContextState self = <_ContextState>obj
    outbox, timers = self.c_outbox, self.c_timers
    if (
        nargs == 0
        and kwnames == NULL
        and outbox is not _GONE
        and timers is not _GONE
        and charge(1, 2)
    ):
        self.c_outbox, self.c_timers = [], []
        return _new((outbox, timers))
    return _fallback(_DRAIN, obj, args, nargs, kwnames)


# ---------------------------------------------------------------- the runner's entries in C
# clients._runner's _dispatch and _quiet call ``ctx._begin(now, view)``, ``ctx._drain()`` and
# read ``ctx._books``, ``_outbox``, ``_timers`` for every delivery: on a plain Context they do
# what those do here, in C (no attribute look-up, bound method or getset call).


cdef inline bint begun(_ContextState self, object now, object view) noexcept:
    """What ``self._begin(now, view)`` does when it runs in C (``_impl_begin``), if it would:
    1 when done, 0 (nothing done) when the caller must call ``self._begin`` instead."""
    if charge(1, 2):
        self.c_now = now
        self.c_view = view
        return 1
    return 0


cdef object drained(_ContextState self):
    """What ``self._drain()`` returns when it runs in C (``_impl_drain``), if it would; None
    (nothing done) when the caller must call ``self._drain`` instead."""
    outbox, timers = self.c_outbox, self.c_timers
    if outbox is not _GONE and timers is not _GONE and charge(1, 2):
        self.c_outbox, self.c_timers = [], []
        return (outbox, timers)
    return None


cdef extern from *:
    """
    /* Is the type's method cache tag still the one ``tag`` recorded (no attribute of the
       class, or of a base, set or deleted since)? */
    static inline int gpuex_type_tag_is(PyTypeObject *t, unsigned int tag) {
        return (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) && t->tp_version_tag == tag;
    }
    static inline unsigned int gpuex_type_tag(PyTypeObject *t) {
        return (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? t->tp_version_tag : 0;
    }
    /* Does getattr on the type's instances run the generic look-up (no __getattr[ibute]__)? */
    static inline int gpuex_generic_getattr(PyTypeObject *t) {
        return t->tp_getattro == PyObject_GenericGetAttr;
    }
    static inline PyTypeObject *gpuex_type_of(PyObject *o) { return Py_TYPE(o); }
    """
    bint gpuex_type_tag_is(PyTypeObject* t, unsigned int tag) noexcept
    unsigned int gpuex_type_tag(PyTypeObject* t) noexcept
    PyObject* _PyType_Lookup(PyTypeObject* t, PyObject* name)
    PyObject** _PyObject_GetDictPtr(PyObject* obj) except? NULL
    Py_ssize_t PyDict_GET_SIZE(PyObject* d)
    PyObject* PyDict_GetItemWithError(PyObject* d, PyObject* key) except? NULL
    bint gpuex_generic_getattr(PyTypeObject* t) noexcept
    PyTypeObject* gpuex_type_of(PyObject* o) noexcept


#: The class attributes the runner's entries stand in for, and what they were at import.
cdef tuple _PROTOCOL = ("_begin", "_drain", "_books", "_outbox", "_timers")
cdef list _ORIGINALS = []
#: Context's type tag when its attributes were last found to be the originals (0: not yet).
cdef unsigned int _CHECKED_TAG = 0
cdef PyTypeObject* _CONTEXT_TYPE = NULL


cdef bint _class_plain() except -1:
    # Context's protocol attributes are this module's (looked up as getattr would) and its
    # attribute look-up is the generic one; record the type tag that says so
    global _CHECKED_TAG
    cdef Py_ssize_t i
    if not gpuex_generic_getattr(_CONTEXT_TYPE):
        return 0
    for i in range(len(_PROTOCOL)):
        if _PyType_Lookup(_CONTEXT_TYPE, <PyObject*>_PROTOCOL[i]) != <PyObject*>_ORIGINALS[i]:
            return 0
    _CHECKED_TAG = gpuex_type_tag(_CONTEXT_TYPE)
    return 1


cdef bint plain(object ctx) except -1:
    """Whether ``ctx`` is a :class:`Context` (not a subclass) whose ``_begin``, ``_drain``,
    ``_books``, ``_outbox`` and ``_timers`` are this module's (the class's untouched, none
    shadowed by the instance's ``__dict__``): then :func:`begun`, :func:`drained` and its C
    fields do what those would."""
    if gpuex_type_of(<PyObject*>ctx) != _CONTEXT_TYPE:
        return 0
    if not (_CHECKED_TAG and gpuex_type_tag_is(_CONTEXT_TYPE, _CHECKED_TAG)) and not (
        _class_plain()
    ):
        return 0
    # _begin and _drain are not data descriptors: an instance attribute would win
    cdef PyObject** dictptr = _PyObject_GetDictPtr(<PyObject*>ctx)
    if dictptr == NULL or dictptr[0] == NULL or PyDict_GET_SIZE(dictptr[0]) == 0:
        return 1
    return (
        PyDict_GetItemWithError(dictptr[0], <PyObject*>"_begin") == NULL
        and PyDict_GetItemWithError(dictptr[0], <PyObject*>"_drain") == NULL
    )


#: The sentinel of a deleted attribute, for clients._runner (a field that is GONE: it reads
#: the attribute, which raises as the reference's).
GONE = _GONE


# ---------------------------------------------------------------- the methods
cdef object _compiled(gpuex_impl impl, str name):
    """The compiled method ``name`` of :class:`Context`: ``impl`` with the reference's name,
    docstring and signature."""
    reference = getattr(_REFERENCE, name)
    return gpuex_method_new(
        impl,
        _ContextState,
        name,
        f"Context.{name}",
        reference.__doc__,
        inspect.signature(reference),
    )


class Context(_ContextState):
    __doc__ = _REFERENCE.__doc__

    name = _attribute(0)
    account = _attribute(1)
    rng = _attribute(2)
    now = _attribute(3)
    _account = _attribute(4)
    _books = _attribute(5)
    _outbox = _attribute(6)
    _timers = _attribute(7)
    _next_ref = _attribute(8)
    stopped = _attribute(9)

    submit = _compiled(_impl_submit, "submit")
    cancel = _compiled(_impl_cancel, "cancel")
    amend = _compiled(_impl_amend, "amend")
    cancel_all = _compiled(_impl_cancel_all, "cancel_all")
    schedule = _compiled(_impl_schedule, "schedule")
    balance = _compiled(_impl_balance, "balance")
    positions = _compiled(_impl_positions, "positions")
    open_orders = _compiled(_impl_open_orders, "open_orders")
    _begin = _compiled(_impl_begin, "_begin")
    _drain = _compiled(_impl_drain, "_drain")
    # the reference's own functions (a bot calling them, and the fallback, run its code)
    _send = _REFERENCE._send
    deposit = _REFERENCE.deposit
    withdraw = _REFERENCE.withdraw
    log = _REFERENCE.log
    _view = _REFERENCE._view
    book = _REFERENCE.book


#: The compiled twin of :class:`clients.context.Context` (this module's :class:`Context`).
CompiledContext = Context
# a bot's ``isinstance(ctx, clients.context.Context)`` holds under either runner
_REFERENCE.register(Context)

_CONTEXT_TYPE = <PyTypeObject*>Context
_ORIGINALS.extend(Context.__dict__[_name] for _name in _PROTOCOL)


# The reference's functions are classified by the budget's counter now (their kind cached on
# their code), so the fallback's first call finds them classified as a reference that called
# them before does, taking no extra recursion level.
for _function in vars(_REFERENCE).values():
    _code = getattr(_function, "__code__", None)
    if _code is not None:
        for _inner in (_code, *[c for c in _code.co_consts if type(c) is type(_code)]):
            _kind(_inner)
            _prime(_inner)


def _here():
    raise ValueError


def _own_file():
    """The file name Cython gives this module's frames in a traceback."""
    try:
        _here()
    except ValueError as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        return frames[len(frames) - 1].filename


#: The file name of this module's frames, which a failed bot's traceback leaves out (as the
#: runner's): none is added to a bot's error, but an error of this file's own (a MemoryError)
#: would carry one.
FILE = _own_file()
_runner_module._OWN_FILES.add(FILE)
