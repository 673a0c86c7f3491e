"""The compact stored form of a batch (``exchange.store.compact``): its C twin
(``exchange.core._compact``) against the plain-Python reference -- the same stored bytes and
the same blob back for every JSON line and every ``bytes`` -- the format pinned on event lines,
every malformed stored form refused by both decoders, and a recorded ``flow`` log's batches."""

from __future__ import annotations

import json
import sqlite3
import threading

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exchange.core import _compact
from exchange.sessions import session
from exchange.store import compact as compact_module
from exchange.store.compact import (
    FORMAT_RAW,
    FORMAT_TOKENS,
    MAX_DEPTH,
    CompactError,
    compact,
    compact_reference,
    expand,
    expand_reference,
)
from exchange.store.event_store import EventStore

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# Lines of the ``flow`` log (the shapes the seq/t codes and the string table are for).
COMMAND = (
    b'[19,1770140,"CommandReceived",null,"trader-05",null,null,null,null,null,null,null,'
    b'{"command":{"account":"trader-05","instrument":"H100-SPOT","order_type":"limit",'
    b'"post_only":false,"price":9993,"qty":10,"side":"buy","tif":"gtc","type":"submit"}}]'
)
FILL = b'[90,27369991,"Fill","H100-SPOT","trader-01",17,"buy",9999,3,-299970,"trader-02",16,null]'
FILL_NEXT = (
    b'[91,27369991,"Fill","H100-SPOT","trader-02",16,"sell",9999,3,299970,"trader-01",17,null]'
)


def both_compact(blob: bytes) -> bytes:
    """The stored form of ``blob``, asserted the same from both encoders and expanding to
    ``blob`` in both decoders."""
    stored = _compact.compact(blob)
    assert stored == compact_reference(blob)
    assert _compact.expand(stored) == blob
    assert expand_reference(stored) == blob
    assert compact(blob) == stored and expand(stored) == blob  # the dispatch
    return stored


def refused(data: bytes) -> str:
    """Both decoders' refusal of ``data``: each must raise CompactError, with one message."""
    with pytest.raises(CompactError) as c_error:
        expand(data)
    with pytest.raises(CompactError) as py_error:
        expand_reference(data)
    assert str(c_error.value) == str(py_error.value)
    return str(c_error.value)


def test_the_c_twin_is_the_one_dispatched():
    assert compact_module._c is _compact


# -- the format, pinned -------------------------------------------------------------------------


def test_event_lines_take_the_seq_t_and_table_codes():
    blob = FILL + b"\n" + FILL_NEXT + b"\n"
    stored = both_compact(blob)
    first = (
        b"\x01\x01"  # the format, '['
        + b"\x08\xb4\x01"  # 90 (zigzag 180)
        + b"\x08\x8e\x88\x8d\x1a"  # 27369991
        + b"\x0a\x04Fill\x0a\x09H100-SPOT\x0a\x09trader-01"  # strings 0..2
        + b"\x21"  # small int 17
        + b"\x0a\x03buy"  # string 3
        + b"\x08\x9e\x9c\x01"  # 9999
        + b"\x13"  # small int 3
        + b"\x08\x83\xcf\x24"  # -299970
        + b"\x0a\x09trader-02"  # string 4
        + b"\x20\x05\x02\x00"  # 16, null, ']', end of line
    )
    second = (
        b"\x01\x0c\x0d\x00"  # '[', seq + 1, t + 0
        + b"\x80\x81\x84\x20"  # Fill, H100-SPOT, trader-02 by index, 16
        + b"\x0a\x04sell"
        + b"\x08\x9e\x9c\x01\x13\x08\x84\xcf\x24"  # 9999, 3, 299970
        + b"\x82\x21\x05\x02\x00"  # trader-01, 17, null
    )
    assert stored == first + second
    # the command line: keys through the same table, commas and colons implied
    once = both_compact(COMMAND + b"\n")
    twice = both_compact(COMMAND + b"\n" + COMMAND + b"\n")
    assert once.count(b"\x0a\x09trader-05") == twice.count(b"\x0a\x09trader-05") == 1
    assert twice[len(once) :] == (
        b"\x01\x23\x0d\x00\x80\x05\x81\x05\x05\x05\x05\x05\x05\x05"  # [19,t,... nulls
        + b"\x03\x82\x03\x83\x81\x84\x85\x86\x87\x88\x07"  # ..."post_only":false
        + b"\x89\x08\x92\x9c\x01\x8a\x1a"  # "price":9993,"qty":10
        + b"\x8b\x8c\x8d\x8e\x8f\x90\x04\x04\x02\x00"  # ..."type":"submit"}}]
    )


def test_raw_form_for_empty_unterminated_and_incompressible_blobs():
    assert both_compact(b"") == bytes((FORMAT_RAW,))
    assert both_compact(b"[1]") == bytes((FORMAT_RAW,)) + b"[1]"  # no final newline
    assert both_compact(b"1\n") == bytes((FORMAT_RAW,)) + b"1\n"  # tokens: 3 bytes, no smaller
    assert both_compact(b"[1,2,3]\n")[0] == FORMAT_TOKENS


def test_lines_the_tokenizer_does_not_take_are_raw_and_roll_back():
    # whitespace, bytes after the value, a bad escape, -0, a leading zero, an empty line: raw;
    # the strings of a line rolled back are new again on the next line
    lines = [
        COMMAND,
        FILL,
        FILL_NEXT,
        b'["abc", 1]',
        b'["abc",1] ',
        b'["abc\\x"]',
        b"",
        b"[01]",
        b'["abc",-0,1.5e3,18446744073709551616]',
        b'["abc"]',
    ]
    stored = both_compact(b"\n".join(lines) + b"\n")
    assert stored.count(b"\x0e") == 5  # five raw lines
    assert stored.count(b"\x0a\x03abc") == 1  # first taken on the sixth line
    assert b"\x09\x02-0\x09\x051.5e3\x09\x1418446744073709551616" in stored


# -- round trips, both twins ------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=INT64_MIN, max_value=(1 << 64) - 1),  # orjson writes up to uint64
    st.sampled_from([0, 79, 80, -1, INT64_MIN, INT64_MAX, INT64_MAX + 1, (1 << 64) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.sampled_from(["trader-01", "H100-SPOT", "buy", "", '"', "\\", "\n\x00\x1f", "é€𝄞"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
seq_t = st.integers(min_value=INT64_MIN, max_value=INT64_MAX) | st.sampled_from(
    [0, 1, 79, 80, INT64_MAX, INT64_MAX - 1, INT64_MIN]
)


@st.composite
def event_lines(draw) -> list[bytes]:
    """Lines shaped like events (``[seq, t, ...]``): a seq that mostly steps by one (across
    int64's edges too), a t that mostly moves a little, then any values."""
    seq, t = draw(seq_t), draw(seq_t)
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        row = [seq, t, *draw(st.lists(json_values, max_size=3))]
        lines.append(dumps_line(row))
        seq = draw(st.sampled_from([seq + 1, seq + 1, seq, INT64_MIN, draw(seq_t)]))
        t = draw(st.sampled_from([t, t + draw(st.integers(-5, 5)), draw(seq_t)]))
        seq = min(max(seq, INT64_MIN), INT64_MAX + 1)  # one past: a raw number
        t = min(max(t, INT64_MIN - 1), INT64_MAX)
    return lines


def dumps_line(value) -> bytes:
    """``value`` as orjson writes it (sorted keys), or as ``json`` writes it in ASCII
    (``\\uXXXX`` escapes) where orjson refuses it."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            json_values.map(dumps_line),
            json_values.map(
                lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True).encode()
            ),
            event_lines(),
        ),
        min_size=1,
        max_size=6,
    )
)
@example([[COMMAND, FILL, FILL_NEXT]])
@example([[b"[9223372036854775807,1]", b"[-9223372036854775808,1]"]])  # seq + 1 overflows
@example([[b"[1,9223372036854775807]", b"[2,-9223372036854775808]"]])  # t - t' overflows
@example([[b'["\\/\\u00E9\\b\\f\\r\\t"]', b'["\\/\\u00E9\\b\\f\\r\\t"]']])  # every escape
def test_json_lines_round_trip_in_both_twins(parts):
    lines = [line for part in parts for line in (part if isinstance(part, list) else [part])]
    both_compact(b"".join(line + b"\n" for line in lines))
    for line in lines:  # JSON lines are token lines, never raw ones
        assert taken(line)


def taken(line: bytes) -> bool:
    """Whether the reference's tokenizer takes ``line`` (else it is a raw line)."""
    return compact_module._line_tokens(line, bytearray(), {}, [], [None, None]) is not None


def test_json_lines_are_tokenized_not_raw():
    values = [{"a": [1, -2.5, None, True, False, "x\u00e9\\"]}, [[], {}, [[[]]]], "s", -7, 1e300]
    blob = b"".join(dumps_line(v) + b"\n" for v in values)
    assert both_compact(blob)[0] == FORMAT_TOKENS
    assert all(taken(dumps_line(v)) for v in values)
    assert not any(taken(line) for line in (b"[1, 2]", b"[1]x", b"", b"nul", b'"\\x"', b"[-]"))


fragments = st.sampled_from(
    [
        b"[",
        b"]",
        b"{",
        b"}",
        b",",
        b":",
        b'"',
        b'"k"',
        b'"\\',
        b"\\u12",
        b"\\n",
        b" ",
        b"\t",
        b"\n",
        b"\n",
        b"\r",
        b"null",
        b"tru",
        b"false",
        b"0",
        b"-",
        b"-0",
        b"12",
        b"1.5",
        b"e",
        b"E+",
        b"9223372036854775808",
        b"\x00",
        b"\x7f",
        b"\xff",
        b"\xc3\xa9",
        b"[1,2]",
        b'{"a":1}',
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.lists(fragments, max_size=40).map(b"".join)))
@example(b'["abc" x]\n["abc"]\n')  # a line rolled back after its string went in the table
@example(b"\n\n\n")
@example(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"\n")  # too deep: raw
@example(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"\n" + b"{}\n")
def test_any_bytes_round_trip_in_both_twins(blob):
    both_compact(blob)
    both_compact(blob + b"\n")


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(fragments, max_size=40).map(b"".join), st.integers(0, 16), st.integers(0, 16))
def test_a_view_of_a_larger_buffer_compacts_as_its_bytes(lines, before, after):
    # the journaller compacts each blob where it lies in the buffer it shares with the run
    for blob in (lines, lines + b"\n"):
        shared = bytearray(b"\n" * before + blob + b'"x' * after)
        view = memoryview(shared)[before : before + len(blob)]
        assert compact(view) == compact(blob) == compact_reference(view)
        assert expand(compact(view)) == blob


def test_many_strings_past_the_small_index_and_the_hash_table_growth():
    lines = [
        orjson.dumps([i, i, f"s{i % 700}", {f"k{i % 300}": f"s{i % 500}"}]) for i in range(3000)
    ]
    blob = b"".join(line + b"\n" for line in lines)
    stored = both_compact(blob)
    assert b"\x0b" in stored and stored[0] == FORMAT_TOKENS


def test_threads_compacting_and_expanding_at_once_get_their_own_bytes():
    # the C loops run without the GIL, the decoder in a scratch buffer kept between calls:
    # concurrent calls must neither share it nor mix their outputs
    blobs = [
        b"".join(orjson.dumps([i, i * 7, f"s{i % k}", "x" * (i % 40)]) + b"\n" for i in range(n))
        for n, k in ((3000, 7), (500, 300), (1, 1), (4000, 2))
    ]
    stored = [both_compact(blob) for blob in blobs]
    wrong = []

    def work(offset: int) -> None:
        for i in range(40):
            j = (i + offset) % len(blobs)
            if _compact.expand(stored[j]) != blobs[j] or _compact.compact(blobs[j]) != stored[j]:
                wrong.append(j)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


# -- the C encoder's fast path --------------------------------------------------------------

# The C encoder tokenizes a line with 16 bytes of the blob after its '\n' on a fast path (the
# event lines: a top-level array, ints of up to 18 digits, strings under 16 bytes without
# escapes from a cache), giving anything else back to its general tokenizer. These lines sit
# on that edge; each is followed by FILL (its 16 bytes) or stands with others in one batch.
FAST_EDGES = [
    b"[]",
    b"[[]]",
    b"[{}]",
    b'[{"a":[],"b":{}}]',
    b'{"a":1}',
    b'"s"',
    b"7",
    b" [1]",
    b"[1] ",
    b"[1]x",
    b"[1,2,]",
    b"[1,,2]",
    b'[{"a"}]',
    b'[{"a",1}]',
    b'[{"a"1}]',
    b'[{"a":}]',
    b"[{1:2}]",
    b"[-0,-0]",
    b"[1,-0]",
    b"[0,00]",
    b"[01]",
    b"[-]",
    b"[-a]",
    b"[1.5,1e5,1E+5,-0.0]",
    b"[999999999999999999,-999999999999999999]",  # 18 digits: the fast path's
    b"[9223372036854775807,-9223372036854775808]",  # 19 digits: the general tokenizer's
    b"[9223372036854775808]",  # past int64: raw numbers
    b"[1,2,-9223372036854775809]",
    b"[1,2,10000000000000000000]",
    b"[null,true,false]",
    b"[nul]",
    b"[nulll]",
    b"[tru]",
    b"[truex]",
    b"[fals]",
    b"[falsx]",
    b"[falsee]",
    b'[""]',
    b'["\\u00e9","\\"","\\\\\\\\"]',
    b'["\\u00g9"]',
    b'["a\\x"]',
    b'["' + b"\xff" * 8 + b'","' + b"a" * 8 + b"\xff" * 8 + b'","' + b"\xff" * 15 + b'"]',
    b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),  # too deep: raw
]
# strings of 0 to 17 bytes, plain or with '"', '\\', an escape or a control byte at each
# position around the fast path's 8- and 16-byte words
for size in range(18):
    FAST_EDGES.append(b'["' + b"k" * size + b'",{"' + b"v" * size + b'":1}]')
    for at in (0, 1, 7, 8, 15, 16):
        if at < size:
            for odd in (b'"', b"\\", b"\\n", b"\\u0041", b"\x01", b"\x1f", b"\n"):
                FAST_EDGES.append(b'["' + b"k" * at + odd + b"k" * (size - at) + b'"]')
for depth in (30, 31, 32, 33):  # around the fast path's deepest nesting
    FAST_EDGES.append(b"[" * depth + b"1" + b"]" * depth)
    FAST_EDGES.append(b'{"a":' * depth + b"1" + b"}" * depth)
    FAST_EDGES.append(b"[1,2," + b'{"a":[' * depth + b"1" + b"]}" * depth + b"]")


def test_the_fast_path_and_the_general_tokenizer_agree_on_edge_lines():
    for line in FAST_EDGES:
        both_compact(line + b"\n" + FILL + b"\n")
        both_compact(FILL + b"\n" + line + b"\n" + FILL_NEXT + b"\n")  # seq/t after FILL's
    # all in one batch: one string table and short cache, lines given back among them
    stored = both_compact(b"".join(line + b"\n" for line in FAST_EDGES) + FILL + b"\n")
    assert stored[0] == FORMAT_TOKENS


def test_a_line_given_back_leaves_no_string_behind():
    # the first line's strings go into the table and the short cache, then the line is raw;
    # the next line must number its strings afresh ("b" is index 0, "a" new after it)
    blob = b'["a","b",1] \n["b","a",2]\n' + FILL + b"\n"
    stored = both_compact(blob)
    assert stored[0] == FORMAT_TOKENS
    assert b"\x01\x0a\x01b\x0a\x01a\x12\x02\x00" in stored  # ["b","a",2]: both new


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([COMMAND, FILL, FILL_NEXT]),
            st.integers(0, len(COMMAND)),
            st.lists(fragments, min_size=1, max_size=3).map(b"".join),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_edited_event_lines_agree_with_the_reference(edits):
    # event lines with bytes put in or written over anywhere: the fast path takes them or
    # gives them back, and the stored form is the reference's either way
    lines = [
        line[:at] + part + line[at + len(part) * overwrite :] for line, at, part, overwrite in edits
    ]
    both_compact(b"".join(line + b"\n" for line in lines) + FILL + b"\n")


# -- malformed stored forms -----------------------------------------------------------------


def test_every_truncation_of_a_line_is_refused():
    for line in (COMMAND, FILL, b'[1,{"a":[[],{}],"b":-1.5}]'):
        stored = both_compact(line + b"\n")
        assert stored[0] == FORMAT_TOKENS
        for cut in range(len(stored)):
            refused(stored[:cut])


def test_truncations_of_a_batch_give_whole_lines_or_a_refusal():
    blob = b"".join(line + b"\n" for line in (COMMAND, FILL, FILL_NEXT, b"[1, 2]"))
    stored = both_compact(blob)
    boundaries = 0
    for cut in range(1, len(stored)):
        try:
            got = expand(stored[:cut])
        except CompactError:
            refused(stored[:cut])
            continue
        assert got == expand_reference(stored[:cut])
        assert blob.startswith(got) and got.endswith(b"\n")
        boundaries += 1
    assert boundaries == 3


LINE = b"\x01\x01\x10\x11\x02\x00"  # the format, [0,1]
MALFORMED = {  # name: (stored form, the refusal's message)
    "empty": (b"", "empty stored batch"),
    "unknown format": (b"\x02[1]\n", "unknown stored batch format 2"),
    "no line": (b"\x01", "token form without a line"),
    "code 0x0f": (b"\x01\x01\x0f\x02\x00", "unknown code at byte 2"),
    "code 0x60": (b"\x01\x01\x60\x02\x00", "unknown code at byte 2"),
    "code 0x7f": (b"\x01\x7f\x00", "unknown code at byte 1"),
    "small index past the table": (b"\x01\x01\x0a\x01a\x81\x02\x00", "past the table at byte 5"),
    "index past the table": (b"\x01\x01\x0a\x01a\x0b\x01\x02\x00", "past the table at byte 5"),
    "huge index": (b"\x01\x0b" + b"\xff" * 9 + b"\x01\x00", "past the table at byte 1"),
    "varint past 10 bytes": (b"\x01\x08" + b"\xff" * 10 + b"\x01\x00", "overflows 64 bits"),
    "varint past 64 bits": (b"\x01\x08" + b"\xff" * 9 + b"\x02\x00", "overflows 64 bits"),
    "varint not minimal": (b"\x01\x08\x80\x00\x00", "varint not minimal"),
    "seq without a previous line": (b"\x01\x01\x0c\x02\x00", "out of place at byte 2"),
    "t without a previous line": (b"\x01\x01\x10\x0d\x02\x02\x00", "out of place at byte 3"),
    "seq as element 1": (LINE + b"\x01\x10\x0c\x02\x00", "out of place at byte 8"),
    "t as element 0": (LINE + b"\x01\x0d\x02\x02\x00", "out of place at byte 7"),
    "seq outside the top array": (LINE + b"\x01\x01\x0c\x02\x02\x00", "out of place at byte 8"),
    "seq at top level": (LINE + b"\x0c\x00", "out of place at byte 6"),
    "seq after a raw line": (LINE + b"\x0e\x01x\x01\x0c\x02\x00", "out of place at byte 10"),
    "seq after a non-int element 0": (b"\x01\x01\x05\x02\x00\x01\x0c\x02\x00", "out of place"),
    "seq past int64": (
        b"\x01\x01\x08\xfe" + b"\xff" * 8 + b"\x01\x02\x00\x01\x0c\x02\x00",
        "int past int64 at byte 16",
    ),
    "t past int64": (
        b"\x01\x01\x10\x08\xfe" + b"\xff" * 8 + b"\x01\x02\x00\x01\x0c\x0d\x02\x02\x00",
        "int past int64 at byte 18",
    ),
    "close at top level": (b"\x01\x02\x00", "unbalanced close at byte 1"),
    "close of the other kind": (b"\x01\x01\x04\x00", "unbalanced close at byte 2"),
    "object closed after a key": (b"\x01\x03\x0a\x01a\x04\x00", "unbalanced close at byte 5"),
    "key not a string": (b"\x01\x03\x10\x10\x04\x00", "key not a string at byte 2"),
    "key a seq code": (LINE + b"\x01\x03\x0c\x10\x04\x02\x00", "key not a string at byte 8"),
    "two values on a line": (b"\x01\x10\x10\x00", "second value on a line at byte 2"),
    "end of line inside a value": (b"\x01\x01\x00", "end of line inside a value at byte 2"),
    "empty line": (b"\x01\x00", "end of line inside a value at byte 1"),
    "raw line inside a line": (b"\x01\x01\x0e\x01x\x02\x00", "raw line inside a line"),
    "raw line holding a newline": (b"\x01\x0e\x03a\nb", "raw line holding a newline"),
    "raw line past the end": (b"\x01\x0e\x05abc", "truncated token at byte 1"),
    "unfinished line at the end": (LINE + b"\x05", "ends inside a line"),
    "nesting too deep": (
        b"\x01" + b"\x01" * (MAX_DEPTH + 1) + b"\x02" * (MAX_DEPTH + 1) + b"\x00",
        f"nesting past {MAX_DEPTH}",
    ),
    "raw number that is an int": (b"\x01\x09\x015\x00", "raw number not written"),
    "raw number that is int64's least": (b"\x01\x09\x14-9223372036854775808\x00", "raw number"),
    "raw number not a number": (b"\x01\x09\x021.\x00", "raw number not written"),
    "raw number with a plus": (b"\x01\x09\x02+1\x00", "raw number not written"),
    "raw number empty": (b"\x01\x09\x00\x00", "raw number not written"),
    "string with a quote": (b'\x01\x0a\x03a"b\x00', "string content not JSON"),
    "string with a control byte": (b"\x01\x0a\x03a\x01b\x00", "string content not JSON"),
    "string with a bad escape": (b"\x01\x0a\x02\\x\x00", "string content not JSON"),
    "string with a short unicode escape": (b"\x01\x0a\x05\\u12g\x00", "string content not"),
    "string ending in a backslash": (b"\x01\x0a\x01\\\x00", "string content not JSON"),
    "string past the end": (b"\x01\x0a\x09abc", "truncated token at byte 1"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_stored_forms_are_refused_by_both_decoders(name):
    data, fault = MALFORMED[name]
    assert fault in refused(data)  # the fault named, not another one on the way


def decoded(expand_function, data: bytes) -> tuple[str, object]:
    try:
        return "blob", expand_function(data)
    except CompactError as exc:
        return "refused", str(exc)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([COMMAND, FILL, FILL_NEXT, b"[1, 2]", b'[3,"x",1.5,-0]']), min_size=1),
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_damaged_stored_forms_decode_alike_in_both_twins(lines, edits):
    # a stored form with bytes changed, inserted, removed or cut off: both decoders give the
    # same blob, or the same refusal (the C one never reads past its input)
    data = bytearray(both_compact(b"".join(line + b"\n" for line in lines)))
    for op, at, byte in edits:
        at %= len(data) + 1
        if op == 0 and at < len(data):
            data[at] = byte
        elif op == 1:
            data.insert(at, byte)
        elif op == 2 and at < len(data):
            del data[at]
        else:
            del data[at:]
    assert decoded(expand, bytes(data)) == decoded(expand_reference, bytes(data))


def test_the_malformed_forms_are_one_change_from_well_formed_ones():
    # the refusals above are of the faults named, not of a broken frame around them
    assert (
        expand(LINE + b"\x01\x10\x0c\x02\x00".replace(b"\x10\x0c", b"\x0c\x10"))
        == b"[0,1]\n[1,0]\n"
    )
    assert expand(b"\x01\x09\x021.5\x00".replace(b"\x02", b"\x03")) == b"1.5\n"
    assert expand(b"\x01\x08" + b"\xff" * 9 + b"\x01\x00") == b"-9223372036854775808\n"
    assert expand(b"\x01\x01\x0a\x01a\x80\x02\x00") == b'["a","a"]\n'
    assert expand(b"\x01\x09\x13" + b"9223372036854775808\x00") == b"9223372036854775808\n"
    deep = b"\x01" + b"\x01" * MAX_DEPTH + b"\x02" * MAX_DEPTH + b"\x00"
    assert expand(deep) == expand_reference(deep) == b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"\n"
    assert expand(b"\x01\x0a\x06\\u00E9\x00") == b'"\\u00E9"\n'


def test_the_raw_form_expands_as_it_is():
    assert expand(b"\x00") == expand_reference(b"\x00") == b""
    assert expand(b"\x00\x01\xff") == b"\x01\xff"


# -- a recorded log -----------------------------------------------------------------------------


def test_a_recorded_flow_log_round_trips_at_under_a_third(tmp_path):
    result = session.run("flow", tmp_path / "flow.db", seed=7, overrides={"messages": 2000})
    with EventStore.open(result.path) as store:
        lines = list(store.payloads())
    conn = sqlite3.connect(result.path)
    try:
        ranges = conn.execute("SELECT first_seq, last_seq FROM batches ORDER BY batch").fetchall()
    finally:
        conn.close()
    assert len(ranges) >= 3 and ranges[-1][1] == len(lines) > 6000
    assert all(taken(line) for line in lines)  # no raw line
    for first, last in ranges:
        blob = b"".join(line + b"\n" for line in lines[first - 1 : last])
        stored = both_compact(blob)
        assert stored[0] == FORMAT_TOKENS
        assert len(stored) * 3 <= len(blob)
