"""The compiled ``handle_row``'s C entry (``exchange.kernel._kernel.ROW_ID``), the one the
compiled flow driver (``exchange.sessions._flow.FlowDriver``) calls: a row's price, quantity
and codes as C values, and the ``Result``'s order id back instead of the ``Result``. It is
called here as the driver calls it, through the capsule's address (ctypes), against the
reference engine given the row's mapping: the same order ids, events, results and state."""

from __future__ import annotations

import ctypes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.kernel import _kernel
from exchange.kernel.compiled import CompiledExchange, row_command
from tests.exchange.kernel.test_compiled import ACCOUNTS, CASH, Twin
from tests.fuzz.mutator import PERP, SPOT

_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

#: The entry's C signature (see ROW_ID's comment); PYFUNCTYPE: called with the GIL held, an
#: exception it sets raised here
_ROW_ID = ctypes.PYFUNCTYPE(
    ctypes.py_object,
    ctypes.py_object,  # engine
    ctypes.py_object,  # account name
    ctypes.py_object,  # instrument
    ctypes.c_int64,  # op
    ctypes.py_object,  # order id
    ctypes.c_int64,  # price, ticks
    ctypes.c_int64,  # qty, lots
    ctypes.c_int64,  # side
    ctypes.c_int64,  # order type
    ctypes.c_int64,  # tif
    ctypes.c_int64,  # post-only
)


def row_id():
    """The entry, from the capsule as the driver takes it."""
    return _ROW_ID(_get_pointer(_kernel.ROW_ID, b"exchange.kernel._kernel.row_id"))


row_ints = st.integers(1, 40) | st.sampled_from([10**9 + 1, 1 << 62, (1 << 62) + 1])


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*ACCOUNTS, "mallory"]),
            st.sampled_from([SPOT.name, PERP.name, "NOPE"]),
            st.integers(0, 2),  # op
            st.integers(1, 40) | st.just(0),  # order id (0: the driver's unknown id)
            st.integers(990, 1_010) | st.sampled_from([0, 1_000_001, 1 << 62]),  # price
            row_ints,  # qty
            st.integers(0, 1),  # side
            st.integers(0, 1),  # order type
            st.integers(0, 2),  # tif
            st.integers(0, 1),  # post-only
        ),
        min_size=1,
        max_size=60,
    )
)
def test_the_row_entry_gives_the_order_id_of_the_result_the_mapping_gets(rows):
    """Run by the kernel, refused by it or handed to the mapping's path, a row through the
    entry gives the order id ``handle(row_command(*row))`` gives the reference, and the same
    events and state."""
    twin = Twin()
    entry = row_id()
    for row in rows:
        expected = twin.reference.handle(row_command(*row))
        assert entry(twin.compiled, *row) == expected.order_id
        twin.check()


def test_the_row_entry_gives_the_engine_s_own_order_id_object():
    """A submit's order id is the object the engine numbered the order with (the key of its
    ``orders``), as the ``Result`` carries it: the driver's later cancel finds it by
    identity."""
    twin = Twin()
    engine = twin.compiled
    got = row_id()(engine, "alice", SPOT.name, 0, 0, 1_000, 3, 0, 0, 0, 0)
    assert got == 1
    assert next(iter(engine.orders)) is got
    assert row_id()(engine, "alice", SPOT.name, 1, got, 0, 0, 0, 0, 0, 0) == got
    assert engine.orders == {}


def test_a_row_through_the_entry_with_a_code_out_of_range_is_a_driver_s_error():
    engine = CompiledExchange(lambda event: None)
    engine.list_instrument(SPOT)
    engine.open_account("alice")
    engine.credit("alice", CASH)
    seq = engine.seq
    for codes in ((3, 0, 0, 0, 0), (0, 2, 0, 0, 0), (0, 0, 2, 0, 0), (0, 0, 0, 3, 0)):
        op, side, order_type, tif, post_only = codes
        with pytest.raises(ValueError, match="out of range"):
            row_id()(engine, "alice", SPOT.name, op, 0, 1_000, 3, side, order_type, tif, post_only)
    # a code past a C int is out of range too, not truncated into it
    with pytest.raises(ValueError, match="out of range"):
        row_id()(engine, "alice", SPOT.name, 0, 0, 1_000, 3, 1 << 32, 0, 0, 0)
    assert engine.seq == seq  # nothing emitted
