# cython: language_level=3, boundscheck=False, wraparound=False
"""The event store's batch blob in C: check a batch's events, encode them into one buffer.

Schema 3 stores a batch as one row whose ``events`` blob is every event's canonical payload
(:func:`exchange.core.events.encode`) followed by ``b"\\n"``, in seq order. Building that blob is
the whole per-event cost of an append, so it runs here without a Python call per event:

* :func:`first_bad` checks every event before anything is written: a tuple (or list) of the
  ``Event`` fields, seqs contiguous from ``first``, each typed field of its column's type
  (the checks SQLite's STRICT columns made in schema 2, when every event was a row);
* :func:`encode_batch` calls orjson with the options ``exchange.core.events`` defines
  (``dumps(tuple(event), None, ENCODE_OPTIONS)``, what ``encode`` does) and copies each
  payload into one ``bytearray`` as soon as it is made (holding a batch of orjson's bytes
  objects alive cost 2-10 us an event; see the store's notes);
* :func:`array_to_lines` turns the journaller's one JSON array of a batch's events (each
  encoded as ``encode`` encodes it) into the same blob without encoding any event again: it
  replaces the separators of the outer array by newlines.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Tuple
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

#: Column codes of :func:`first_bad`'s ``codes``: an integer or a text, NOT NULL or nullable.
INT, INT_OR_NULL, TEXT, TEXT_OR_NULL = b"i", b"I", b"s", b"S"
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


cdef inline PyObject* _item(object event, Py_ssize_t i, bint is_tuple):
    if is_tuple:
        return PyTuple_GET_ITEM(event, i)
    return PyList_GET_ITEM(event, i)


def first_bad(events, long long first, Py_ssize_t n_fields, bytes codes, names):
    """The first event of ``events`` that cannot be stored, as ``(position, reason)``, or
    None if every one can. An event must be a tuple or a list of ``n_fields`` items whose
    seq (item 0) is ``first`` + its position, and whose leading ``len(codes)`` items match
    their column's code (``INT``/``INT_OR_NULL``: an int within int64, ``TEXT``/
    ``TEXT_OR_NULL``: a str; ``None`` only where nullable). ``names``: the typed fields'
    names, for the reason. ``reason`` is None for a wrong seq (the caller words it)."""
    cdef Py_ssize_t k = 0
    cdef Py_ssize_t i
    cdef Py_ssize_t n_typed = len(codes)
    cdef const char* code = codes
    cdef bint is_tuple
    cdef PyObject* item
    for event in events:
        if isinstance(event, tuple):
            is_tuple = True
            if PyTuple_GET_SIZE(event) != n_fields:
                return k, f"events must have the {n_fields} fields of Event"
        elif type(event) is list:
            is_tuple = False
            if PyList_GET_SIZE(event) != n_fields:
                return k, f"events must have the {n_fields} fields of Event"
        else:
            return k, f"an event must be a tuple (exchange.core.events.Event), not {event!r:.200}"
        value = <object>_item(event, 0, is_tuple)
        if type(value) is not int or value != first + k:
            return k, None
        for i in range(1, n_typed):
            value = <object>_item(event, i, is_tuple)
            if value is None:
                if code[i] == b"i" or code[i] == b"s":
                    return k, f"event seq {first + k}: {names[i]} is None (NOT NULL)"
            elif code[i] == b"i" or code[i] == b"I":
                if type(value) is not int:
                    return k, (
                        f"event seq {first + k}: {names[i]} is {value!r:.80} "
                        f"({type(value).__name__}), not an integer"
                    )
                if not (_INT64_MIN <= value <= _INT64_MAX):
                    return k, f"event seq {first + k}: {names[i]} {value} does not fit in int64"
            elif type(value) is not str:
                return k, (
                    f"event seq {first + k}: {names[i]} is {value!r:.80} "
                    f"({type(value).__name__}), not text"
                )
        k += 1
    return None


def encode_batch(events, dumps, options):
    """Every event's canonical payload (``dumps(tuple(event), None, options)``) followed by
    a newline, in order, as one ``bytearray``: a batch's ``events`` blob. ``events`` are
    tuples (``Event``) or lists of the fields."""
    cdef bytearray joined = bytearray()
    for event in events:
        if type(event) is not list:
            event = PySequence_Tuple(event)  # orjson writes a tuple, not a namedtuple
        joined += dumps(event, None, options)
        joined += b"\n"
    return joined


def array_to_lines(bytes array):
    """The JSON array ``array`` (``[e1,e2,...]``, compact, as orjson writes it) as its
    elements each followed by a newline (``e1\\ne2\\n...``): the separators of the outer
    array become newlines, nothing else changes. Raises ValueError for text that is not one
    compact array (an element may hold anything; strings are followed through their escapes,
    so a comma or bracket inside one is left alone). Compact JSON holds no raw newline (orjson
    escapes one inside a string), so the elements are the lines."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(array)
    cdef const char* src = PyBytes_AS_STRING(array)
    if n < 2 or src[0] != b"[" or src[n - 1] != b"]":
        raise ValueError("not a JSON array")
    if n == 2:
        return b""
    out = PyBytes_FromStringAndSize(NULL, n - 1)  # n - 2 elements' bytes + the last newline
    cdef char* dst = PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    cdef Py_ssize_t depth = 0
    cdef bint in_string = False
    cdef bint escaped = False
    cdef char c
    for i in range(1, n - 1):
        c = src[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == b"\\":
                escaped = True
            elif c == b'"':
                in_string = False
        elif c == b'"':
            in_string = True
        elif c == b"[" or c == b"{":
            depth += 1
        elif c == b"]" or c == b"}":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced JSON array")
        elif c == b"," and depth == 0:
            c = b"\n"
        elif c == b"\n":
            raise ValueError("a raw newline in compact JSON")
        dst[i - 1] = c
    if depth != 0 or in_string:
        raise ValueError("unbalanced JSON array")
    dst[n - 2] = b"\n"
    return out
