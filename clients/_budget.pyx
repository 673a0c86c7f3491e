# cython: language_level=3
"""The per-callback budget's counter, compiled: a C trace function (``PyEval_SetTrace``).

:mod:`clients.budget` holds the reference, a Python trace function installed with
``sys.settrace``; this module counts exactly the same units (see that module's docstring), so a
session's log is byte-identical whichever counter runs, and ``tests/clients/test_bot_budget.py``
holds the two equal. What differs is the cost: the interpreter calls a C function per event
instead of its trampoline calling a Python one, and the kind of a code object (does it loop?)
is cached on the code object itself (``co_extra``: a slot read, where hashing a code object
to look it up in a dict costs 0.07-0.2 us).

The interpreter's trampoline for ``sys.settrace`` (``trace_trampoline`` in CPython 3.11's
``sysmodule.c``) is mirrored step by step, since the Python counter's semantics are its
semantics: a ``call`` event goes to the counter whatever the frame; the frame's own trace
function (``f_trace``) is set when the counter asks for local tracing (the Python counter
returns itself); ``line`` and ``opcode`` events count only in frames whose ``f_trace`` is this
counter (a C trace function receives them for every frame); and when the counter fails (an
overrun, or an error while it classifies a code object), it uninstalls itself and clears the
frame's ``f_trace`` before the interpreter raises the error in the frame, as the trampoline
does. The error is set with ``PyErr_SetObject``, not Cython's ``raise``, so that no frame of
this file enters the traceback a failed bot's log shows (the Python counter's frame is left out
of it by file name).

Written against CPython 3.11 (the frame's fields come from its internal ``pycore_frame.h``, as
Cython's own generated code includes it); :data:`clients.budget.COUNTER` picks this counter
only there.
"""

from cpython.object cimport PyObject, PyTypeObject
from cpython.exc cimport PyErr_SetObject
from cpython.long cimport PyLong_AsLongLongAndOverflow

from types import CodeType as _CodeType

cdef extern from *:
    """
    #ifndef Py_BUILD_CORE
    #define Py_BUILD_CORE 1
    #endif
    #include "internal/pycore_frame.h"

    /* The frame fields sys.settrace's trampoline reads and writes (3.11: struct _frame). */
    static inline PyObject *gpuex_frame_trace(PyFrameObject *f) { return f->f_trace; }
    static inline void gpuex_set_frame_trace(PyFrameObject *f, PyObject *t) {
        Py_XINCREF(t);
        Py_XSETREF(f->f_trace, t);
    }
    static inline void gpuex_trace_opcodes(PyFrameObject *f) { f->f_trace_opcodes = 1; }
    static inline PyObject *gpuex_frame_code(PyFrameObject *f) {
        PyObject *code = (PyObject *)PyFrame_GetCode(f);
        Py_DECREF(code);  /* borrowed: the frame holds it */
        return code;
    }
    /* The thread's installed trace function and its object (what sys.gettrace returns). */
    static inline Py_tracefunc gpuex_tracefunc(void) {
        return PyThreadState_Get()->c_tracefunc;
    }
    static inline PyObject *gpuex_traceobj(void) { return PyThreadState_Get()->c_traceobj; }
    /* Is tracing paused (inside a trace function: no events), and how many recursion levels
       are left before a Python call fails (3.11: one counter for C and Python calls)? Other
       versions (where this counter is not used) answer so that ``charge`` never charges. */
    #if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    static inline int gpuex_tracing(void) { return PyThreadState_Get()->tracing; }
    static inline int gpuex_recursion_left(void) {
        return PyThreadState_Get()->recursion_remaining;
    }
    #else
    static inline int gpuex_tracing(void) { return 1; }
    static inline int gpuex_recursion_left(void) { return 0; }
    #endif
    """
    ctypedef struct PyFrameObject:
        pass
    ctypedef int (*Py_tracefunc)(PyObject*, PyFrameObject*, int, PyObject*)
    int PyTrace_CALL
    int PyTrace_LINE
    int PyTrace_OPCODE
    void PyEval_SetTrace(Py_tracefunc, PyObject*)
    Py_ssize_t _PyEval_RequestCodeExtraIndex(void*)
    int _PyCode_GetExtra(PyObject*, Py_ssize_t, void**)
    int _PyCode_SetExtra(PyObject*, Py_ssize_t, void*)
    PyObject* gpuex_frame_trace(PyFrameObject*)
    void gpuex_set_frame_trace(PyFrameObject*, PyObject*)
    void gpuex_trace_opcodes(PyFrameObject*)
    PyObject* gpuex_frame_code(PyFrameObject*)
    Py_tracefunc gpuex_tracefunc()
    PyObject* gpuex_traceobj()
    int gpuex_tracing()
    int gpuex_recursion_left()
    int Py_EnterRecursiveCall(const char*)
    PyObject* PyObject_CallOneArg(PyObject*, PyObject*)
    PyObject* PyDict_GetItem(object, object)
    PyTypeObject* Py_TYPE(PyObject*)
    Py_ssize_t PyLong_AsSsize_t(object) noexcept
    void Py_DECREF(object)
    void Py_LeaveRecursiveCall()

# How a code object is traced (clients.budget's _FREE, _LOOPS, _SPINS), cached in the code
# object's extra slot as kind + 1 (a null slot: not classified yet).
cdef enum:
    FREE = 0
    SPINS = 2

#: The code-extra slot this module caches kinds in (one per interpreter; nothing to free).
cdef Py_ssize_t _SLOT = _PyEval_RequestCodeExtraIndex(NULL)
#: clients.budget's ``_KINDS``, ``_kind`` and ``_overrun`` (set by :func:`bind`).
cdef dict _KINDS = {}
cdef object _KIND = None
cdef object _OVERRUN = None


def bind(kinds, kind, overrun):
    """Give this module :mod:`clients.budget`'s ``_KINDS`` (its cache: code object -> kind),
    ``_kind`` (code object -> kind, filling that cache) and ``_overrun`` (budget -> the
    exception to raise), so that both counters classify code and word an overrun with the same
    functions, and call ``_kind`` (a Python call, one recursion level deeper) when the Python
    counter would: when ``_KINDS`` lacks the code."""
    global _KINDS, _KIND, _OVERRUN
    _KINDS, _KIND, _OVERRUN = kinds, kind, overrun


cdef class Counter:
    """One budgeted callback's counter and trace object: ``lines`` units (int) to spend,
    ``left`` of them left (below zero once overrun; it only decreases). Its fields are
    declared in ``clients/_budget.pxd`` (clients._runner reads ``left`` and calls
    ``start``/``stop`` in C)."""

    def __cinit__(self, lines):
        self.lines = lines
        # beyond int64 the budget cannot be spent anyway; any negative one overruns at once
        # (an int's clamp in C: min() and max() are Python calls, one each per callback)
        cdef int overflow = 0
        cdef long long value
        if type(lines) is int:
            value = PyLong_AsLongLongAndOverflow(lines, &overflow)
            self.left = 2**63 - 1 if overflow > 0 else -1 if overflow < 0 or value < -1 else value
        else:
            self.left = min(max(lines, -1), 2**63 - 1)

    cpdef start(self):
        """Install this counter as the thread's trace function, keeping the one installed
        (C function and object) to put back at :meth:`stop`."""
        self._previous = <void*>gpuex_tracefunc()
        cdef PyObject* obj = gpuex_traceobj()
        self._saved = <object>obj if obj != NULL else None
        PyEval_SetTrace(_trace, <PyObject*>self)

    cpdef bint stop(self):
        """Put back the trace function :meth:`start` found; return whether this counter was
        still the installed one (bool)."""
        cdef bint installed = (
            gpuex_tracefunc() == _trace and gpuex_traceobj() == <PyObject*>self
        )
        saved = self._saved
        self._saved = None
        PyEval_SetTrace(
            <Py_tracefunc>self._previous, NULL if saved is None else <PyObject*>saved
        )
        return installed


cdef int _fail(PyFrameObject* frame) noexcept:
    # The trampoline's answer to a trace function that raised: uninstall it, clear the frame's
    # f_trace, and let the interpreter raise the error (already set) in the frame (-1).
    PyEval_SetTrace(NULL, NULL)
    gpuex_set_frame_trace(frame, NULL)
    return -1


cdef int _raise(PyObject* call, PyObject* argument) noexcept:
    # Set the exception ``call(argument)`` returns (``_overrun``), or the error it raises. The
    # C API, not Cython's ``raise``: that would add a frame of this file to the traceback that
    # a failed bot's log shows. Returns -1.
    cdef PyObject* exc = PyObject_CallOneArg(call, argument)
    if exc != NULL:
        PyErr_SetObject(<object>Py_TYPE(exc), <object>exc)
        Py_DECREF(<object>exc)
    return -1


cdef inline Py_ssize_t _kind_of(PyObject* code) noexcept:
    # The kind of ``code`` (cached in its extra slot; else from _KINDS, else from _kind, a
    # Python call): 0, 1 or 2, or -1 with an exception set.
    cdef void* extra = NULL
    cdef PyObject* found
    cdef Py_ssize_t kind
    _PyCode_GetExtra(code, _SLOT, &extra)  # fails only for a non-code object
    if extra != NULL:
        return <Py_ssize_t>extra - 1
    found = PyDict_GetItem(<object>_KINDS, <object>code)  # borrowed
    if found != NULL:
        kind = PyLong_AsSsize_t(<object>found)
    else:
        found = PyObject_CallOneArg(<PyObject*>_KIND, code)
        if found == NULL:
            return -1  # raised in the frame, as the trampoline would
        kind = PyLong_AsSsize_t(<object>found)
        Py_DECREF(<object>found)
    if kind < 0:
        return -1  # not an int (never: _kind returns 0, 1 or 2)
    if _PyCode_SetExtra(code, _SLOT, <void*>(kind + 1)) < 0:
        return -1
    return kind


cdef inline int _count(Counter counter, PyFrameObject* frame, int what) noexcept:
    # The body of clients.budget.run_within's ``count``: 0, or -1 with an exception set.
    cdef Py_ssize_t kind
    if what == PyTrace_CALL:
        counter.left -= 1
        if counter.left < 0:
            return _raise(<PyObject*>_OVERRUN, <PyObject*>counter.lines)
        kind = _kind_of(gpuex_frame_code(frame))
        if kind < 0:
            return -1
        if kind == FREE:
            return 0  # no local tracing: the frame's line events are not counted
        if kind == SPINS:
            gpuex_trace_opcodes(frame)
        gpuex_set_frame_trace(frame, <PyObject*>counter)  # the Python counter returns itself
        return 0
    if what == PyTrace_LINE or what == PyTrace_OPCODE:
        counter.left -= 1
        if counter.left < 0:
            return _raise(<PyObject*>_OVERRUN, <PyObject*>counter.lines)
    return 0  # return, exception: not counted


cdef int _trace(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg) noexcept:
    # What sys.settrace's trampoline does around the Python counter, event for event: a call
    # event goes to the counter; any other to the frame's f_trace, if it is this counter.
    if what != PyTrace_CALL and gpuex_frame_trace(frame) != obj:
        return 0
    # Calling the Python counter takes one level of recursion: at the recursion limit its call
    # raises RecursionError in the frame, and the trampoline uninstalls it. Same here (the
    # kind of a new code object is found one level deeper too, as from the Python counter).
    if Py_EnterRecursiveCall(""):
        return _fail(frame)
    cdef int result = _count(<Counter>obj, frame, what)
    Py_LeaveRecursiveCall()
    if result < 0:
        return _fail(frame)
    return 0


# ---------------------------------------------------------------- compiled stand-ins
# clients._context's Context runs in C what the reference runs as loop-free Python functions:
# under this counter it charges their ``call`` events itself (``charge``), and where it cannot
# be sure of doing exactly what they would (an overrun, the recursion limit near, another
# trace function) it calls the Python functions instead, which the interpreter traces as ever.


cdef int charge(long long units, int levels) noexcept:
    """Charge ``units`` to the running callback's budget, as that many ``call`` events of
    loop-free Python functions would, none of them failing: 1 when done, or when there is
    nothing to charge (no trace function installed: no events); 0, charging nothing, when the
    caller must run the reference's Python functions instead -- no more than ``levels``
    recursion levels are left (a Python call, or this counter's, could fail), the trace
    function is not this module's counter (the Python counter, a debugger), tracing is paused
    (inside a trace function), or fewer than ``units`` units are left (the reference overruns
    at a precise point, in a precise frame)."""
    if gpuex_recursion_left() <= levels:
        return 0
    cdef Py_tracefunc installed = gpuex_tracefunc()
    if installed == NULL:
        return 1
    if installed != _trace or gpuex_tracing():
        return 0
    cdef Counter counter = <Counter>gpuex_traceobj()  # _trace is only installed with one
    if counter.left < units:
        return 0
    counter.left -= units
    return 1


def prime(code):
    """Classify ``code`` (a code object) now, as this counter does at its first ``call``
    event (cached on the code object; :func:`clients.budget._kind` caches it in its dict
    too). For code that compiled stand-ins call only when they cannot be sure
    (``clients._context``): when the reference calls it, it is classified already, at no
    recursion level, as in a run that called it before."""
    if type(code) is not _CodeType:
        raise TypeError(f"expected a code object, got {type(code).__name__}")
    _raised(_kind_of(<PyObject*>code))


cdef int _raised(Py_ssize_t kind) except -1:
    # -1 (the error _kind_of set, raised) if ``kind`` is -1, else 0
    return -1 if kind < 0 else 0
