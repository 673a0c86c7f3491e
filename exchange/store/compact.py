"""The stored form of a batch's events (event store schemas 4 and 5): its JSON lines, compacted.

``compact(blob)`` takes a batch's blob as schema 3 stored it (each event's canonical line,
``events.encode(e)``, followed by ``b"\\n"``) and returns the bytes schemas 4 and 5 store;
``expand(data)`` gives the blob back, byte for byte. Schema 4 kept the digest and the chain
those of the blob (the JSON lines); schema 5 hashes the stored form itself (a fifth of the
bytes), which names the events as well since the encoding is deterministic. On ``flow`` the
stored form is about a fifth of the blob (31 bytes an event against 150): the bytes SQLite
writes and checkpoints shrink with it.

Both functions run the C twin (``exchange.core._compact``, its loops without the GIL: the
journaller compacts on its committing thread while its main thread folds) when it is built,
else the plain-Python reference, :func:`compact_reference` / :func:`expand_reference` (always
available; differential tests hold the two byte-identical).

The format (the specification; both twins follow it)
----------------------------------------------------
Stored form = 1 format byte, then:

``FORMAT_RAW`` (0)
    The blob as it is. ``compact`` uses it for an empty blob, for a blob whose last byte is
    not ``\\n`` (a token form holds whole lines only), and whenever the token form would not
    be smaller than this one.

``FORMAT_TOKENS`` (1)
    The blob's lines (at least one), each a *token stream*. Per batch (self-contained: nothing
    carries over between batches) a string table starts empty; a string token's content (the
    bytes between its quotes, escapes kept verbatim) gets the next index (0, 1, ...) the first
    time it appears, as a key or a value, and is written by reference afterwards.

    Each token is one code byte, then its payload. *varint* = unsigned LEB128, minimal, at
    most 10 bytes (the 10th holds bit 63 only); *zigzag* maps a signed ``n`` to
    ``(n << 1) ^ (n >> 63)``.

    ====================  ==========================================================
    ``0x00``              end of line (``\\n``); the line's value must be complete
    ``0x01`` / ``0x02``   ``[`` / ``]``
    ``0x03`` / ``0x04``   ``{`` / ``}``
    ``0x05 0x06 0x07``    ``null`` ``true`` ``false``
    ``0x08``              int: zigzag varint; only for a canonical integer token that fits
                          int64 (``-?(0|[1-9][0-9]*)``, not ``-0``), written back in decimal
    ``0x09``              raw number: varint length, its bytes: any JSON number that is not
                          such an int (a fraction or exponent, ``-0``, past int64)
    ``0x0A``              new string: varint length, content bytes (appended to the table)
    ``0x0B``              string by index: varint index (< the table's size)
    ``0x0C``              the int ``p + 1``, ``p`` the previous line's element 0 (the seq)
    ``0x0D``              the int ``p + d``, ``p`` the previous line's element 1 (the t),
                          ``d`` a zigzag varint
    ``0x0E``              raw line: varint length, the line's bytes (no ``\\n`` among them);
                          the decoder writes them and ``\\n``: the line is complete
    ``0x10..0x5F``        small int ``code - 0x10`` (0..79)
    ``0x80..0xFF``        string by index ``code - 0x80`` (0..127)
    ====================  ==========================================================

    ``0x0F`` and ``0x60..0x7F`` are unused. Commas and colons are implied (compact JSON): the
    decoder writes ``,`` between the elements of an array and between the pairs of an object
    and ``:`` after a key, from a stack of open containers (at most :data:`MAX_DEPTH` deep).
    An object's key is a string token (``0x0A``, ``0x0B`` or ``0x80..0xFF``).

    ``0x0C`` is valid only as element 0, ``0x0D`` only as element 1, of a line's top-level
    array, when the line just before (in the same batch) is a token line whose top-level
    array's element 0 (resp. 1) was an int (``0x08``, a small int, ``0x0C``/``0x0D``); the
    sum must fit int64. The encoder writes ``0x0C`` exactly when that element 0 is a
    canonical int64 int equal to ``p + 1``, and ``0x0D`` whenever element 1 is one and
    ``d`` fits int64; otherwise ints are small ints (0..79) or ``0x08``, and strings take
    ``0x80 + i`` below 128, else ``0x0B``.

    The tokenizer takes a line only if the decoder regenerates it exactly: one JSON value
    without whitespace, at most :data:`MAX_DEPTH` containers deep, its strings' contents free
    of an unescaped ``"``, a control byte (< 0x20) and any escape but ``\\" \\\\ \\/ \\b \\f
    \\n \\r \\t \\uXXXX``, its numbers as JSON defines them. Any other line (whitespace, bytes
    after the value, malformed JSON, not a value at all, an empty line) is a raw line.

Exactness is the contract: ``expand(compact(b)) == b`` for every ``bytes`` ``b``, and the
encoding is deterministic (the same blob gives the same bytes, from either twin). ``expand``
raises :class:`CompactError` on anything malformed (an empty input, an unknown format, a
truncated token, an unused code, an index past the table, a varint that overflows or is not
minimal, a structure the tokenizer never writes: an unbalanced bracket, a key that is not a
string, two values on a line, an unfinished line at the end, ``0x0C``/``0x0D`` out of place,
an int past int64, a raw number or a new string that the tokenizer would not have written, a
raw line holding ``\\n``); it never reads out of bounds. What it cannot detect (bytes changed
into other well-formed tokens) the store's digest check catches.
"""

from __future__ import annotations

import re

#: First byte of the stored form: the blob follows as it is.
FORMAT_RAW = 0x00
#: First byte of the stored form: the blob's lines as token streams (see the module docstring).
FORMAT_TOKENS = 0x01
#: Deepest nesting of containers the token form holds (a deeper line is a raw line).
MAX_DEPTH = 1024


class CompactError(ValueError):
    """Stored bytes that are not a well-formed compact form (a damaged or tampered log)."""


# Token codes (the module docstring's table).
_END, _OPEN_ARRAY, _CLOSE_ARRAY, _OPEN_OBJECT, _CLOSE_OBJECT = 0x00, 0x01, 0x02, 0x03, 0x04
_NULL, _TRUE, _FALSE, _INT, _NUMBER, _NEW_STRING, _STRING = 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B
_NEXT_SEQ, _DELTA_T, _RAW_LINE = 0x0C, 0x0D, 0x0E
_SMALL_INT, _SMALL_INT_END = 0x10, 0x60  # 0x10..0x5F: 0..79
_SMALL_STRING = 0x80  # 0x80..0xFF: string by index 0..127

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# A string token (group 1: its content) and a number token, as JSON defines them. The
# possessive quantifiers keep a failing match linear (no backtracking into the runs).
_STRING_TOKEN = re.compile(rb'"((?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+)"')
_CONTENT = re.compile(rb'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+')
_NUMBER_TOKEN = re.compile(rb"-?(?:0|[1-9][0-9]*+)(\.[0-9]++)?([eE][+-]?[0-9]++)?")

# The decoder's container states: an array before its first element / after one; an object
# before its first key / after a pair; an object after a key (its value next).
_A0, _A1, _K0, _K1, _V = 0, 1, 2, 3, 4

try:  # the C twin, when built
    from exchange.core import _compact as _c
except ImportError:  # pragma: no cover - the reference alone (an unbuilt tree)
    _c = None


def compact(blob: bytes | memoryview) -> bytes:
    """The stored form of ``blob`` (a batch's JSON lines, each ending ``\\n``; ``bytes`` or
    a contiguous ``memoryview`` of them, read in place): ``expand`` gives ``blob`` back, byte
    for byte, whatever the bytes. Runs the C twin without the GIL when it is built, else
    :func:`compact_reference` (the same bytes)."""
    if _c is not None:
        return _c.compact(blob)
    return compact_reference(blob)


def expand(data: bytes) -> bytes:
    """The blob whose stored form ``data`` is. Raises :class:`CompactError` if ``data`` is
    not a well-formed stored form. Runs the C twin without the GIL when it is built, else
    :func:`expand_reference` (the same bytes, the same errors)."""
    if _c is not None:
        try:
            return _c.expand(data if type(data) is bytes else bytes(data))
        except ValueError as exc:  # the C twin's refusal, as the module's error
            raise CompactError(str(exc)) from None
    return expand_reference(data)


# -- the reference encoder ----------------------------------------------------------------


def _varint(out: bytearray, value: int) -> None:
    """Append ``value`` (0 <= value < 2**64) as unsigned LEB128."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    """The unsigned image of a signed int64 (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...)."""
    return (value << 1) ^ (value >> 63) if value >= 0 else ((-value) << 1) - 1


def _int(out: bytearray, value: int) -> None:
    """Append an int64 as a small int or ``0x08``."""
    if 0 <= value < _SMALL_INT_END - _SMALL_INT:
        out.append(_SMALL_INT + value)
    else:
        out.append(_INT)
        _varint(out, _zigzag(value))


def _line_tokens(
    line: bytes, out: bytearray, table: dict[bytes, int], added: list[bytes], prev: list
) -> list | None:
    """Append ``line``'s token stream (without its end code) to ``out``; the line's
    ``[element 0, element 1]`` ints (``None`` where not an int) or ``None`` if the tokenizer
    does not take the line (the caller rolls ``out`` and ``table`` back). ``prev`` is the
    previous line's pair. New strings go into ``table`` and, in order, ``added``."""
    n = len(line)
    pos = 0
    stack: list[int] = []  # 0: array, 1: object
    expect = 0  # 0: a value, 1: a value or ']', 2: a key, 3: a key or '}', 4: after a value
    top_count = 0  # elements of the line's top-level array so far
    cur: list = [None, None]
    while True:
        if expect == 4:
            if not stack:
                return cur if pos == n else None
            if pos >= n:
                return None
            c = line[pos]
            if c == 0x2C:  # ','
                pos += 1
                expect = 2 if stack[-1] else 0
            elif c == (0x7D if stack[-1] else 0x5D):  # '}' / ']'
                pos += 1
                out.append(_CLOSE_OBJECT if stack.pop() else _CLOSE_ARRAY)
            else:
                return None
            continue
        if pos >= n:
            return None
        c = line[pos]
        if expect >= 2:  # a key
            if c == 0x7D and expect == 3:
                pos += 1
                stack.pop()
                out.append(_CLOSE_OBJECT)
                expect = 4
                continue
            m = _STRING_TOKEN.match(line, pos)
            if m is None:
                return None
            pos = m.end()
            if pos >= n or line[pos] != 0x3A:  # ':'
                return None
            pos += 1
            _string(out, m.group(1), table, added)
            expect = 0
            continue
        if c == 0x5D and expect == 1:
            pos += 1
            stack.pop()
            out.append(_CLOSE_ARRAY)
            expect = 4
            continue
        elem = -1
        if len(stack) == 1 and stack[0] == 0:
            elem = top_count
            top_count += 1
        expect = 4
        if c == 0x5B or c == 0x7B:  # '[' '{'
            if len(stack) >= MAX_DEPTH:
                return None
            is_object = c == 0x7B
            stack.append(int(is_object))
            out.append(_OPEN_OBJECT if is_object else _OPEN_ARRAY)
            expect = 3 if is_object else 1
            pos += 1
        elif c == 0x22:  # '"'
            m = _STRING_TOKEN.match(line, pos)
            if m is None:
                return None
            pos = m.end()
            _string(out, m.group(1), table, added)
        elif c == 0x6E or c == 0x74 or c == 0x66:  # null true false
            for word, code in ((b"null", _NULL), (b"true", _TRUE), (b"false", _FALSE)):
                if line.startswith(word, pos):
                    out.append(code)
                    pos += len(word)
                    break
            else:
                return None
        else:
            m = _NUMBER_TOKEN.match(line, pos)
            if m is None:
                return None
            pos = m.end()
            text = m.group()
            value = None
            if m.group(1) is None and m.group(2) is None and text != b"-0":
                value = int(text)
                if not _INT64_MIN <= value <= _INT64_MAX:
                    value = None
            if value is None:
                out.append(_NUMBER)
                _varint(out, len(text))
                out += text
                continue
            if elem == 0 or elem == 1:
                cur[elem] = value
            p = prev[elem] if elem == 0 or elem == 1 else None
            if p is not None and elem == 0 and value == p + 1:
                out.append(_NEXT_SEQ)
            elif p is not None and elem == 1 and _INT64_MIN <= value - p <= _INT64_MAX:
                out.append(_DELTA_T)
                _varint(out, _zigzag(value - p))
            else:
                _int(out, value)


def _string(out: bytearray, content: bytes, table: dict[bytes, int], added: list[bytes]) -> None:
    index = table.get(content)
    if index is None:
        table[content] = len(table)
        added.append(content)
        out.append(_NEW_STRING)
        _varint(out, len(content))
        out += content
    elif index < 0x80:
        out.append(_SMALL_STRING + index)
    else:
        out.append(_STRING)
        _varint(out, index)


def compact_reference(blob: bytes) -> bytes:
    """:func:`compact` in plain Python (the specification the C twin is held to)."""
    blob = bytes(blob)
    if not blob or blob[-1] != 0x0A:
        return bytes((FORMAT_RAW,)) + blob
    out = bytearray((FORMAT_TOKENS,))
    table: dict[bytes, int] = {}
    prev: list = [None, None]
    for line in blob[:-1].split(b"\n"):
        mark = len(out)
        added: list[bytes] = []
        cur = _line_tokens(line, out, table, added, prev)
        if cur is None:  # not taken: roll back, write it raw
            del out[mark:]
            for content in added:
                del table[content]
            out.append(_RAW_LINE)
            _varint(out, len(line))
            out += line
            prev = [None, None]
        else:
            out.append(_END)
            prev = cur
    if len(out) >= len(blob) + 1:
        return bytes((FORMAT_RAW,)) + blob
    return bytes(out)


# -- the reference decoder ----------------------------------------------------------------


class _Fault(Exception):
    """A malformed token (:func:`expand_reference` adds where it starts)."""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it."""
    value = 0
    for i in range(10):
        if pos >= len(data):
            raise _Fault("truncated token")
        b = data[pos]
        pos += 1
        if i == 9 and b > 1:
            raise _Fault("varint overflows 64 bits")
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            if b == 0 and i > 0:
                raise _Fault("varint not minimal")
            return value, pos
    raise AssertionError("unreachable")  # pragma: no cover - the 10th byte ends it


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """A varint length, then that many bytes."""
    length, pos = _read_varint(data, pos)
    if length > len(data) - pos:
        raise _Fault("truncated token")
    return data[pos : pos + length], pos + length


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def expand_reference(data: bytes) -> bytes:
    """:func:`expand` in plain Python (the specification the C twin is held to: the same
    bytes, the same refusals with the same messages)."""
    data = bytes(data)
    if not data:
        raise CompactError("empty stored batch")
    if data[0] == FORMAT_RAW:
        return data[1:]
    if data[0] != FORMAT_TOKENS:
        raise CompactError(f"unknown stored batch format {data[0]}")
    if len(data) == 1:
        raise CompactError("token form without a line")
    where = [1]
    try:
        return _expand_tokens(data, where)
    except _Fault as fault:
        raise CompactError(f"{fault} at byte {where[0]}") from None


def _expand_tokens(data: bytes, where: list[int]) -> bytes:
    """The blob of the token form ``data``; a malformed token raises :class:`_Fault`
    (``where[0]``: its offset)."""
    n = len(data)
    out = bytearray()
    table: list[bytes] = []
    stack: list[int] = []  # the open containers' states (_A0.._V)
    have_value = False  # the line's top-level value has begun
    top_count = 0
    prev: list = [None, None]
    cur: list = [None, None]
    pos = 1
    while pos < n:
        where[0] = pos
        code = data[pos]
        pos += 1
        if code == _END:
            if stack or not have_value:
                raise _Fault("end of line inside a value")
            out.append(0x0A)
            prev, cur = cur, [None, None]
            have_value = False
            top_count = 0
            continue
        if code == _RAW_LINE:
            if stack or have_value:
                raise _Fault("raw line inside a line")
            line, pos = _read_bytes(data, pos)
            if b"\n" in line:
                raise _Fault("raw line holding a newline")
            out += line
            out.append(0x0A)
            prev = [None, None]
            continue
        if code in (_CLOSE_ARRAY, _CLOSE_OBJECT):
            wanted = (_A0, _A1) if code == _CLOSE_ARRAY else (_K0, _K1)
            if not stack or stack[-1] not in wanted:
                raise _Fault("unbalanced close")
            stack.pop()
            out.append(0x5D if code == _CLOSE_ARRAY else 0x7D)
            continue
        # a value, or a key: the comma or colon before it
        text: bytes | None = None  # a string's content
        if code >= _SMALL_STRING:
            index = code - _SMALL_STRING
            if index >= len(table):
                raise _Fault("string index past the table")
            text = table[index]
        elif code == _STRING:
            index, pos = _read_varint(data, pos)
            if index >= len(table):
                raise _Fault("string index past the table")
            text = table[index]
        elif code == _NEW_STRING:
            text, pos = _read_bytes(data, pos)
            if _CONTENT.fullmatch(text) is None:
                raise _Fault("string content not JSON")
            table.append(text)
        elif not (0x01 <= code <= 0x0D or _SMALL_INT <= code < _SMALL_INT_END):
            raise _Fault("unknown code")
        elem = -1
        if not stack:
            if have_value:
                raise _Fault("second value on a line")
            have_value = True
        else:
            state = stack[-1]
            if state in (_K0, _K1):
                if text is None:
                    raise _Fault("key not a string")
                if state == _K1:
                    out.append(0x2C)
                out.append(0x22)
                out += text
                out += b'":'
                stack[-1] = _V
                continue
            if state == _A0:
                stack[-1] = _A1
            elif state == _A1:
                out.append(0x2C)
            else:
                stack[-1] = _K1
            if len(stack) == 1 and state <= _A1:
                elem = top_count
                top_count += 1
        if text is not None:
            out.append(0x22)
            out += text
            out.append(0x22)
        elif code in (_OPEN_ARRAY, _OPEN_OBJECT):
            if len(stack) >= MAX_DEPTH:
                raise _Fault(f"nesting past {MAX_DEPTH}")
            stack.append(_A0 if code == _OPEN_ARRAY else _K0)
            out.append(0x5B if code == _OPEN_ARRAY else 0x7B)
        elif code == _NULL:
            out += b"null"
        elif code == _TRUE:
            out += b"true"
        elif code == _FALSE:
            out += b"false"
        elif code == _NUMBER:
            number, pos = _read_bytes(data, pos)
            m = _NUMBER_TOKEN.fullmatch(number)
            if (
                m is None
                or m.group(1) is None
                and m.group(2) is None
                and number != b"-0"
                and _INT64_MIN <= int(number) <= _INT64_MAX
            ):
                raise _Fault("raw number not written by the encoder")
            out += number
        else:
            if code == _INT:
                raw, pos = _read_varint(data, pos)
                value = _unzigzag(raw)
            elif code in (_NEXT_SEQ, _DELTA_T):
                slot = code - _NEXT_SEQ
                if elem != slot or prev[slot] is None:
                    raise _Fault("seq/t code out of place")
                if code == _NEXT_SEQ:
                    delta = 1
                else:
                    raw, pos = _read_varint(data, pos)
                    delta = _unzigzag(raw)
                value = prev[slot] + delta
                if not _INT64_MIN <= value <= _INT64_MAX:
                    raise _Fault("int past int64")
            else:
                value = code - _SMALL_INT
            if elem == 0 or elem == 1:
                cur[elem] = value
            out += str(value).encode()
    if stack or have_value:
        raise CompactError("stored batch ends inside a line")
    return bytes(out)
