# cython: language_level=3, boundscheck=False, wraparound=False
"""Events as their canonical lines, in C: the encoder and the :class:`LineBatch` sink.

An event's canonical bytes are :func:`exchange.core.events.encode`'s (orjson's ``dumps(tuple(
event), option=OPT_SORT_KEYS)``); the store keeps a batch as those bytes plus ``b"\\n"`` per
event, in seq order. This module writes them without a Python call per event:

* :func:`encode_batch` / :func:`encode_event` (the store's blob, a test's one event) and
  :func:`first_bad` (the checks the store makes before it writes) -- moved here from
  ``exchange.store._writer`` (which re-exports them) so that the kernel, below the store in
  the package's rooms, can use the same encoder;
* :class:`LineBatch`, an engine sink that keeps the lines instead of the events: ``append(event)``
  checks and encodes an event in C, the compiled kernel writes its own events' lines straight
  into its buffer (``exchange/kernel/_kernel.pyx``, through ``_lines.pxd``), and ``take(n)``
  gives the first ``n`` lines as one blob, as the store keeps it.

An event holding anything the C encoder does not write (a float, a subclass, a value orjson
refuses) is given to orjson whole, so its bytes or its error are orjson's.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Tuple
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy, memmove

cdef extern from "Python.h":
    # borrowed PyObject* throughout: the walk takes no reference and runs no Python code
    ctypedef struct PyTypeObject:
        pass
    PyTypeObject PyUnicode_Type
    PyTypeObject PyLong_Type
    PyTypeObject PyBool_Type
    PyTypeObject PyDict_Type
    PyTypeObject PyList_Type
    PyTypeObject PyTuple_Type
    PyObject* Py_None
    PyObject* Py_True
    PyTypeObject* Py_TYPE(PyObject* o)
    int PyTuple_Check(object o)
    int PyList_CheckExact(object o)
    const char* PyUnicode_AsUTF8AndSize(PyObject* s, Py_ssize_t* size)
    int PyUnicode_IS_COMPACT_ASCII(PyObject* s)
    void* PyUnicode_DATA(PyObject* s)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject* s)
    long long PyLong_AsLongLongAndOverflow(PyObject* o, int* overflow)
    unsigned long long PyLong_AsUnsignedLongLong(PyObject* o)
    void PyErr_Clear()
    PyObject* PyErr_Occurred()
    int PyDict_Next(PyObject* d, Py_ssize_t* pos, PyObject** key, PyObject** value)
    Py_ssize_t PyDict_GET_SIZE(PyObject* d)
    Py_ssize_t _tuple_size "PyTuple_GET_SIZE"(PyObject* o)
    PyObject* _tuple_item "PyTuple_GET_ITEM"(PyObject* o, Py_ssize_t i)
    Py_ssize_t _list_size "PyList_GET_SIZE"(PyObject* o)
    PyObject* _list_item "PyList_GET_ITEM"(PyObject* o, Py_ssize_t i)


cdef extern from *:
    """
    /* The value of an exact int of at most two digits (|v| < 2**60), read in place: what
       PyLong_AsLongLongAndOverflow does first, without the call. 0 for a larger int. */
    static CYTHON_INLINE int gpuex_small_int(PyObject* o, long long* v) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject*)o)) {
            *v = (long long)PyUnstable_Long_CompactValue((PyLongObject*)o);
            return 1;
        }
        return 0;
    #else
        Py_ssize_t size = Py_SIZE(o);
        const digit* d = ((PyLongObject*)o)->ob_digit;
        switch (size) {
            case 0: *v = 0; return 1;
            case 1: *v = (long long)d[0]; return 1;
            case -1: *v = -(long long)d[0]; return 1;
            case 2: *v = ((long long)d[1] << PyLong_SHIFT) | (long long)d[0]; return 1;
            case -2: *v = -(((long long)d[1] << PyLong_SHIFT) | (long long)d[0]); return 1;
            default: return 0;
        }
    #endif
    }
    """
    bint _small_int "gpuex_small_int"(PyObject* o, long long* v) noexcept


cdef extern from *:
    """
    /* A tuple whose items tuple(o) gives as they are stored: a tuple, or a subclass (Event,
       a namedtuple) that iterates as a tuple does. */
    static CYTHON_INLINE int gpuex_plain_tuple(PyObject* o) {
        return PyTuple_Check(o) && Py_TYPE(o)->tp_iter == PyTuple_Type.tp_iter;
    }
    """
    bint _plain_tuple "gpuex_plain_tuple"(PyObject* o) noexcept


#: Column codes of :func:`first_bad`'s ``codes``: an integer or a text, NOT NULL or nullable.
INT, INT_OR_NULL, TEXT, TEXT_OR_NULL = b"i", b"I", b"s", b"S"


cdef inline PyObject* _item(object event, Py_ssize_t i, bint is_tuple):
    if is_tuple:
        return PyTuple_GET_ITEM(event, i)
    return PyList_GET_ITEM(event, i)


cdef object _WRONG_SEQ = object()  # what _check says of an event whose seq is not the next


cdef object _check(object event, long long seq, Py_ssize_t n_fields, const char* code,
                   Py_ssize_t n_typed, object names):
    """None if ``event`` can be stored as seq ``seq``, else why not (a str), or _WRONG_SEQ.
    The checks run on borrowed pointers and C ints (no Python object made per event); the
    reasons are worded from the objects, on the way out."""
    cdef Py_ssize_t i
    cdef bint is_tuple
    cdef PyObject* item
    cdef PyTypeObject* t
    cdef long long v
    cdef int overflow
    if PyTuple_Check(event):
        is_tuple = True
        if PyTuple_GET_SIZE(event) != n_fields:
            return f"events must have the {n_fields} fields of Event"
    elif type(event) is list:
        is_tuple = False
        if PyList_GET_SIZE(event) != n_fields:
            return f"events must have the {n_fields} fields of Event"
    else:
        return f"an event must be a tuple (exchange.core.events.Event), not {event!r:.200}"
    item = _item(event, 0, is_tuple)
    if Py_TYPE(item) is not &PyLong_Type:
        return _WRONG_SEQ
    v = PyLong_AsLongLongAndOverflow(item, &overflow)
    if overflow or v != seq:
        return _WRONG_SEQ
    for i in range(1, n_typed):
        item = _item(event, i, is_tuple)
        t = Py_TYPE(item)
        if item is Py_None:
            if code[i] == b"i" or code[i] == b"s":
                return f"event seq {seq}: {names[i]} is None (NOT NULL)"
        elif code[i] == b"i" or code[i] == b"I":
            if t is not &PyLong_Type:
                value = <object>item
                return (
                    f"event seq {seq}: {names[i]} is {value!r:.80} "
                    f"({type(value).__name__}), not an integer"
                )
            PyLong_AsLongLongAndOverflow(item, &overflow)
            if overflow:
                value = <object>item
                return f"event seq {seq}: {names[i]} {value} does not fit in int64"
        elif t is not &PyUnicode_Type:
            value = <object>item
            return (
                f"event seq {seq}: {names[i]} is {value!r:.80} "
                f"({type(value).__name__}), not text"
            )
    return None


def first_bad(events, long long first, Py_ssize_t n_fields, bytes codes, names):
    """The first event of ``events`` that cannot be stored, as ``(position, reason)``, or
    None if every one can. An event must be a tuple or a list of ``n_fields`` items whose
    seq (item 0) is ``first`` + its position, and whose leading ``len(codes)`` items match
    their column's code (``INT``/``INT_OR_NULL``: an int within int64, ``TEXT``/
    ``TEXT_OR_NULL``: a str; ``None`` only where nullable). ``names``: the typed fields'
    names, for the reason. ``reason`` is None for a wrong seq (the caller words it)."""
    cdef Py_ssize_t k = 0
    cdef Py_ssize_t n_typed = len(codes)
    cdef const char* code = codes
    for event in events:
        why = _check(event, first + k, n_fields, code, n_typed, names)
        if why is not None:
            return k, (None if why is _WRONG_SEQ else why)
        k += 1
    return None


# ---------------------------------------------------------------------- the canonical bytes in C
# An event's canonical bytes are ``orjson.dumps(tuple(event), option=OPT_SORT_KEYS)``
# (exchange.core.events.encode, the definition). The encoder below writes the same bytes for
# the values events hold -- exact ``str``, ``int``, ``bool``, ``None``, ``dict`` (str keys),
# ``list`` and ``tuple`` -- and hands any event holding anything else (a float, a subclass, an
# int past 64 bits, a lone surrogate, a non-str key, nesting deeper than _MAX_DEPTH) to orjson
# whole, so that the bytes, or the error, are orjson's own. It calls no Python code while it
# walks an event (no __hash__, __eq__ or __str__ of anything), so the borrowed references it
# holds stay valid.

import orjson as _orjson

#: the options whose output the C encoder writes (exchange.core.events.ENCODE_OPTIONS); any
#: other options send every event to ``dumps``
_SORT_KEYS = _orjson.OPT_SORT_KEYS

cdef enum:
    # nesting (the event's own array is level 1) past which an event goes to orjson, which
    # refuses past its own limit (254): events nest two or three levels deep
    _MAX_DEPTH = 64
    # dict sizes sorted on the stack
    _STACK_KEYS = 16
    # what writing a value gives: written, or not the C encoder's (the event goes to orjson)
    _DONE = 0
    _ORJSON = 1

cdef struct _Key:
    const char* s
    Py_ssize_t n
    PyObject* value

# what a byte of a string becomes: 0 copied as it is, else the character after the backslash
# ('u' for \u00XX), as orjson escapes it: control characters, the quote and the backslash;
# DEL and every byte of a non-ASCII character (UTF-8, all >= 0x80) are copied
cdef char _ESCAPE[256]
cdef int _b
for _b in range(256):
    _ESCAPE[_b] = 0
for _b in range(0x20):
    _ESCAPE[_b] = b"u"
_ESCAPE[0x08] = b"b"
_ESCAPE[0x09] = b"t"
_ESCAPE[0x0A] = b"n"
_ESCAPE[0x0C] = b"f"
_ESCAPE[0x0D] = b"r"
_ESCAPE[0x22] = b'"'
_ESCAPE[0x5C] = b"\\"
cdef const char* _HEX = b"0123456789abcdef"
cdef const char* _DIGITS2 = (
    b"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    b"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    b"8081828384858687888990919293949596979899"
)


cdef int _grow(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.len + extra
    cdef Py_ssize_t cap = b.cap * 2 if b.cap else 1 << 16
    cdef char* data
    while cap < need:
        cap *= 2
    data = <char*>realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline int _put(Buf* b, const char* s, Py_ssize_t n) except -1:
    if b.len + n > b.cap:
        _grow(b, n)
    memcpy(b.data + b.len, s, n)
    b.len += n
    return 0


cdef inline int _put1(Buf* b, char c) except -1:
    if b.len >= b.cap:
        _grow(b, 1)
    b.data[b.len] = c
    b.len += 1
    return 0


cdef int put_u64(Buf* b, unsigned long long v, bint negative) except -1:
    """``v`` in decimal, after a minus sign if ``negative``: written backwards two digits a
    division into a scratch area, then moved as one fixed 24-byte copy (the bytes past the
    number are scratch in the buffer's spare room, overwritten by what follows)."""
    cdef char tmp[48]
    cdef char* p = tmp + 24
    cdef unsigned long long r
    cdef Py_ssize_t n
    if b.len + 24 > b.cap:
        _grow(b, 24)
    while v >= 100:
        r = v % 100
        v //= 100
        p -= 2
        p[0] = _DIGITS2[2 * r]
        p[1] = _DIGITS2[2 * r + 1]
    if v >= 10:
        p -= 2
        p[0] = _DIGITS2[2 * v]
        p[1] = _DIGITS2[2 * v + 1]
    else:
        p -= 1
        p[0] = <char>(48 + v)
    if negative:
        p -= 1
        p[0] = b"-"
    n = tmp + 24 - p
    memcpy(b.data + b.len, p, 24)
    b.len += n
    return 0


cdef inline bint _needs_escape(unsigned long long w) noexcept nogil:
    """Whether one of the eight bytes of ``w`` is a control character (< 0x20), a quote or a
    backslash (the classic bit tricks: a byte is zero in ``w ^ (c * ONES)`` where it was
    ``c``; the high bit of a byte below 0x20 survives ``w - 0x20 * ONES`` and ``~w``; bytes
    of non-ASCII characters, all >= 0x80, never match)."""
    cdef unsigned long long ones = 0x0101010101010101ULL
    cdef unsigned long long high = 0x8080808080808080ULL
    cdef unsigned long long q = w ^ (ones * 0x22)
    cdef unsigned long long bs = w ^ (ones * 0x5C)
    return (
        ((w - ones * 0x20) & ~w)
        | ((q - ones) & ~q)
        | ((bs - ones) & ~bs)
    ) & high != 0


cdef int put_text(Buf* b, const char* s, Py_ssize_t n) except -1:
    """``s`` (``n`` bytes of UTF-8) as a JSON string, escaped as orjson escapes it."""
    cdef Py_ssize_t i
    cdef unsigned char c
    cdef char e
    cdef char* out
    cdef unsigned long long w
    if b.len + 6 * n + 2 > b.cap:  # the worst case: every byte as \u00XX
        _grow(b, 6 * n + 2)
    out = b.data + b.len
    out[0] = b'"'
    out += 1
    i = 0
    while i + 8 <= n:  # eight bytes at a time while none of them needs escaping
        memcpy(&w, s + i, 8)
        if _needs_escape(w):
            break
        memcpy(out, &w, 8)
        out += 8
        i += 8
    while i < n:
        c = <unsigned char>s[i]
        i += 1
        e = _ESCAPE[c]
        if e == 0:
            out[0] = <char>c
            out += 1
        elif e == b"u":
            out[0] = b"\\"
            out[1] = b"u"
            out[2] = b"0"
            out[3] = b"0"
            out[4] = _HEX[c >> 4]
            out[5] = _HEX[c & 15]
            out += 6
        else:
            out[0] = b"\\"
            out[1] = e
            out += 2
    out[0] = b'"'
    b.len = out + 1 - b.data
    return 0


cdef inline const char* _utf8(PyObject* s, Py_ssize_t* n) noexcept:
    """The UTF-8 bytes of the str ``s``, or NULL (no error set) for a lone surrogate, which
    orjson refuses. An ASCII str is its own UTF-8."""
    cdef const char* u
    if PyUnicode_IS_COMPACT_ASCII(s):
        n[0] = PyUnicode_GET_LENGTH(s)
        return <const char*>PyUnicode_DATA(s)
    u = PyUnicode_AsUTF8AndSize(s, n)
    if u == NULL:
        PyErr_Clear()
    return u


cdef int _key_order(const void* a, const void* b) noexcept nogil:
    """Keys by their UTF-8 bytes (code point order), shorter first on a common prefix: the
    order orjson's OPT_SORT_KEYS gives (it compares the keys as Rust strs)."""
    cdef const _Key* x = <const _Key*>a
    cdef const _Key* y = <const _Key*>b
    cdef Py_ssize_t n = x.n if x.n < y.n else y.n
    cdef int c = memcmp(x.s, y.s, n)
    if c != 0:
        return c
    return (x.n > y.n) - (x.n < y.n)


cdef int _put_sorted(Buf* b, PyObject* d, _Key* keys, Py_ssize_t n, int depth) except -1:
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j
    cdef PyObject* key
    cdef PyObject* value
    cdef _Key k
    cdef int r
    while PyDict_Next(d, &pos, &key, &value):
        if Py_TYPE(key) is not &PyUnicode_Type:
            return _ORJSON  # orjson refuses it ("Dict key must be str"): its error
        keys[i].s = _utf8(key, &keys[i].n)
        if keys[i].s == NULL:
            return _ORJSON
        keys[i].value = value
        i += 1
    if n <= _STACK_KEYS:  # insertion sort: a few keys
        for i in range(1, n):
            k = keys[i]
            j = i - 1
            while j >= 0 and _key_order(&keys[j], &k) > 0:
                keys[j + 1] = keys[j]
                j -= 1
            keys[j + 1] = k
    else:
        qsort(keys, n, sizeof(_Key), _key_order)
    _put1(b, b"{")
    for i in range(n):
        if i:
            _put1(b, b",")
        put_text(b, keys[i].s, keys[i].n)
        _put1(b, b":")
        r = put_value(b, keys[i].value, depth)
        if r != _DONE:
            return r
    _put1(b, b"}")
    return _DONE


cdef int _put_dict(Buf* b, PyObject* d, int depth) except -1:
    cdef Py_ssize_t n = PyDict_GET_SIZE(d)
    cdef _Key stack[_STACK_KEYS]
    cdef _Key* keys
    cdef int r
    if n == 0:
        return _put(b, b"{}", 2)
    if n <= _STACK_KEYS:
        return _put_sorted(b, d, stack, n, depth)
    keys = <_Key*>malloc(n * sizeof(_Key))
    if keys == NULL:
        raise MemoryError()
    try:
        r = _put_sorted(b, d, keys, n, depth)
    finally:
        free(keys)
    return r


cdef int _put_items(Buf* b, PyObject* seq, bint is_tuple, int depth) except -1:
    cdef Py_ssize_t n = _tuple_size(seq) if is_tuple else _list_size(seq)
    cdef Py_ssize_t i
    cdef int r
    _put1(b, b"[")
    for i in range(n):
        if i:
            _put1(b, b",")
        r = put_value(b, _tuple_item(seq, i) if is_tuple else _list_item(seq, i), depth)
        if r != _DONE:
            return r
    _put1(b, b"]")
    return _DONE


cdef int put_value(Buf* b, PyObject* value, int depth) except -1:
    cdef PyTypeObject* t = Py_TYPE(value)
    cdef const char* s
    cdef Py_ssize_t n
    cdef long long v
    cdef unsigned long long u
    cdef int overflow
    if t is &PyUnicode_Type:
        s = _utf8(value, &n)
        if s == NULL:
            return _ORJSON
        return put_text(b, s, n)
    if t is &PyLong_Type:
        if _small_int(value, &v):
            if v < 0:
                return put_u64(b, (<unsigned long long>0) - <unsigned long long>v, True)
            return put_u64(b, <unsigned long long>v, False)
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0:
            if v < 0:
                return put_u64(b, (<unsigned long long>0) - <unsigned long long>v, True)
            return put_u64(b, <unsigned long long>v, False)
        if overflow < 0:
            return _ORJSON  # below int64: orjson refuses it
        u = PyLong_AsUnsignedLongLong(value)
        if u == <unsigned long long>-1 and PyErr_Occurred() != NULL:
            PyErr_Clear()
            return _ORJSON  # past uint64: orjson refuses it
        return put_u64(b, u, False)
    if value is Py_None:
        return _put(b, b"null", 4)
    if t is &PyBool_Type:
        if value is Py_True:
            return _put(b, b"true", 4)
        return _put(b, b"false", 5)
    if depth >= _MAX_DEPTH:
        return _ORJSON
    if t is &PyDict_Type:
        return _put_dict(b, value, depth + 1)
    if t is &PyList_Type:
        return _put_items(b, value, False, depth + 1)
    if t is &PyTuple_Type:
        return _put_items(b, value, True, depth + 1)
    return _ORJSON  # a float, a subclass, anything else: orjson's bytes or orjson's error


cdef int put_event(Buf* b, object event, object dumps, object options, bint c) except -1:
    """``event``'s canonical bytes, in C where it can, else ``dumps(tuple(event), None,
    options)`` (a list as it is), appended to ``b``."""
    cdef Py_ssize_t start = b.len
    cdef bytes payload
    cdef bint is_tuple = _plain_tuple(<PyObject*>event)
    if c and (is_tuple or PyList_CheckExact(event)):
        if _put_items(b, <PyObject*>event, is_tuple, 1) == _DONE:
            return 0
        b.len = start  # not mine: orjson writes it, or refuses it
    if type(event) is not list:
        event = PySequence_Tuple(event)  # orjson writes a tuple, not a namedtuple
    payload = dumps(event, None, options)
    return _put(b, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))


#: the output buffer kept between batches (growing a fresh one and faulting its pages in cost
#: more than encoding a small batch), unless it grew past _SPARE_MAX bytes
cdef Buf _spare
_spare.data = NULL
_spare.len = 0
_spare.cap = 0
cdef bint _spare_busy = False
cdef Py_ssize_t _SPARE_MAX = 16 << 20


cdef bytes _encode(events, dumps, options):
    global _spare, _spare_busy
    cdef Buf b
    cdef bint c = options == _SORT_KEYS
    cdef bint spare = not _spare_busy
    if spare:  # the buffer of the last batch, its pages already mapped
        b = _spare
        _spare_busy = True
    else:  # a call in the middle of another (a thread switch in a fallback's dumps)
        b.data = NULL
        b.cap = 0
    b.len = 0
    try:
        for event in events:
            put_event(&b, event, dumps, options, c)
            _put1(&b, b"\n")
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        if spare and b.cap <= _SPARE_MAX:
            _spare = b
            _spare_busy = False
        else:
            free(b.data)
            if spare:
                _spare.data = NULL
                _spare.cap = 0
                _spare_busy = False


def encode_event(event, dumps, options):
    """``event``'s canonical bytes (:func:`exchange.core.events.encode`: ``dumps(tuple(event),
    None, options)``), written in C for ``options`` = ``OPT_SORT_KEYS`` wherever orjson's bytes
    are known (see above), else by ``dumps``: the same bytes or the same error either way."""
    cdef Buf b
    b.data = NULL
    b.len = 0
    b.cap = 0
    try:
        put_event(&b, event, dumps, options, options == _SORT_KEYS)
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        free(b.data)


def encode_batch(events, dumps, options):
    """Every event's canonical payload (``dumps(tuple(event), None, options)``, see
    :func:`encode_event`) followed by a newline, in order, as one ``bytes``: a batch's
    ``events`` blob. ``events`` are tuples (``Event``) or lists of the fields. Raises what
    ``dumps`` raises for the first event it refuses."""
    return _encode(events, dumps, options)


cdef int put_bytes(Buf* b, const char* s, Py_ssize_t n) except -1:
    """``n`` bytes of ``s`` as they are (a constant fragment of a line)."""
    return _put(b, s, n)


# ---------------------------------------------------------------------- the sink of lines
class BadLine(ValueError):
    """An event a :class:`LineBatch` took cannot be stored: raised by :meth:`LineBatch.take`
    for the batch that holds it (where :meth:`EventStore.append` would refuse that batch).
    ``seq``: the seq its line holds; ``position``: its place in the batch; ``reason``: why,
    or None for a seq that does not follow the one before (``got``: the event's seq then)."""

    def __init__(self, seq, position, reason, got):
        super().__init__(reason or f"event seq {got!r} at position {position}")
        self.seq, self.position, self.reason, self.got = seq, position, reason, got


cdef class LineBatch:
    """An engine's sink that keeps each event as its canonical line (``encode(event) +
    b"\\n"``) in one growing C buffer, with the line's end and the event's ``t`` (ns): no
    Python object kept per event.

    ``append(event)`` checks ``event`` as the store would (``codes``/``names``/``n_fields``:
    :func:`first_bad`'s; ``codes`` None: no checks) and writes its line; the compiled kernel
    writes its own events' lines (``end_line``). The lines' seqs run from ``first`` (the
    engine's first event: 1). :meth:`take` hands the first ``n`` lines over as one blob.
    A refused event does not raise here, in the middle of the engine's command: the
    :meth:`take` of its batch raises :class:`BadLine`, as the store refuses that batch."""

    def __cinit__(self):
        self.buf.data = NULL
        self.buf.len = 0
        self.buf.cap = 0
        self.ends = NULL
        self.ts = NULL
        self.count = 0
        self.lines_cap = 0
        self.appended = 0

    def __init__(self, long long first=1, bytes codes=None, names=None, Py_ssize_t n_fields=13):
        self.first = first
        self.dumps = _orjson.dumps
        self.options = _SORT_KEYS
        self.codes = codes
        self.names = names
        self.n_fields = n_fields
        self.bad_check = None
        self.bad_encode = None

    def __dealloc__(self):
        free(self.buf.data)
        free(self.ends)
        free(self.ts)

    def __len__(self):
        """The lines held (events appended and not yet taken)."""
        return self.count

    @property
    def first(self):
        """The seq of the first line held (of the next one, when none is)."""
        return self.first

    @property
    def appended(self):
        """How many lines :meth:`append` wrote (from Event tuples), taken or not; the others
        were written by the compiled kernel, with no Event made."""
        return self.appended

    @property
    def nbytes(self):
        """The bytes of the lines held."""
        return self.buf.len

    cdef int end_line(self, long long t) except -1:
        """Close the line just written (its newline, its end, ``t``)."""
        cdef Py_ssize_t cap
        cdef void* p
        _put1(&self.buf, b"\n")
        if self.count == self.lines_cap:
            cap = self.lines_cap * 2 if self.lines_cap else 4096
            p = realloc(self.ends, cap * sizeof(Py_ssize_t))
            if p == NULL:
                raise MemoryError()
            self.ends = <Py_ssize_t*>p
            p = realloc(self.ts, cap * sizeof(long long))
            if p == NULL:
                raise MemoryError()
            self.ts = <long long*>p
            self.lines_cap = cap
        self.ends[self.count] = self.buf.len
        self.ts[self.count] = t
        self.count += 1
        return 0

    def append(self, event):
        """Check ``event`` (an ``Event``) and write its line. Never raises for the event
        itself (see :class:`LineBatch`); MemoryError only."""
        cdef long long seq = self.first + self.count
        cdef Py_ssize_t start = self.buf.len
        cdef long long t = 0
        cdef int overflow = 0
        cdef PyObject* item
        if self.codes is not None and self.bad_check is None:
            why = _check(event, seq, self.n_fields, self.codes, len(self.codes), self.names)
            if why is not None:
                got = event[0] if isinstance(event, (tuple, list)) and len(event) else None
                self.bad_check = (seq, None if why is _WRONG_SEQ else why, got)
        try:
            put_event(&self.buf, event, self.dumps, self.options, True)
        except _orjson.JSONEncodeError as exc:
            self.buf.len = start  # a placeholder: the batch holding it is never stored
            _put(&self.buf, b"null", 4)
            if self.bad_encode is None:
                self.bad_encode = (seq, str(exc))
        if _plain_tuple(<PyObject*>event) and PyTuple_GET_SIZE(event) > 1:
            item = PyTuple_GET_ITEM(event, 1)
            if Py_TYPE(item) is &PyLong_Type:
                t = PyLong_AsLongLongAndOverflow(item, &overflow)
                if overflow:
                    t = 0
        self.end_line(t)
        self.appended += 1

    def take(self, Py_ssize_t n):
        """The first ``n`` lines (all there are, if fewer), removed, as ``(blob, first, count,
        last_t)``: the bytes as the store keeps them, the seq of the first line, the lines'
        count and the ``t`` of the last one (ns). Raises :class:`BadLine` (the lines are
        gone) if one of them is an event the store refuses, the first one refused; the
        checks' refusals before orjson's, as :meth:`EventStore.encode_batch` reports them."""
        cdef Py_ssize_t end
        cdef long long first = self.first
        cdef long long last_t
        cdef Py_ssize_t i
        if n > self.count:
            n = self.count
        if n <= 0:
            raise ValueError("no lines to take")
        end = self.ends[n - 1]
        last_t = self.ts[n - 1]
        blob = PyBytes_FromStringAndSize(self.buf.data, end)
        # the lines left move to the front (a batch's worth at most, in a run's drain)
        memmove(self.buf.data, self.buf.data + end, self.buf.len - end)
        self.buf.len -= end
        self.count -= n
        for i in range(self.count):
            self.ends[i] = self.ends[i + n] - end
            self.ts[i] = self.ts[i + n]
        self.first = first + n
        for bad in (self.bad_check, self.bad_encode):
            if bad is not None and bad[0] < first + n:
                self.bad_check = self.bad_encode = None
                raise BadLine(bad[0], bad[0] - first, bad[1], bad[2] if len(bad) > 2 else None)
        return blob, first, n, last_t
