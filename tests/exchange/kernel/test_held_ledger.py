"""The held ledger (decision 92): while the compiled flow driver holds it
(``exchange.kernel._kernel.HOLD``, called here through the capsule's address as the driver
calls it), the compiled engine's rows keep the accounts' cash, positions, VM and premium
bases, open lots and the fee pool in typed slots, and write them back -- the same values,
the same keys in the same dicts as the reference's own writes -- when it lets go, and before
any Python runs: a command from Python, the reference's own limit check, a tap that runs
Python (a sink a tap reads is never held)."""

from __future__ import annotations

import ctypes

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import _lines
from exchange.core.events import encode
from exchange.kernel import _kernel
from exchange.kernel.compiled import CompiledExchange, row_command
from exchange.kernel.engine import Exchange
from tests.exchange.core.test_lines_tap import tapped
from tests.exchange.kernel.test_compiled import ACCOUNTS, _open_market
from tests.exchange.kernel.test_row_entry import row_id
from tests.fuzz.mutator import PERP, RVS, SPOT

_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
#: HOLD's C signature: ``int (object engine, bint on)``, -1 with an exception set
_HOLD = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_int)


def hold(engine, on: bool) -> None:
    """The driver's hold (``on``) or let-go (not ``on``) of ``engine``'s ledger."""
    _HOLD(_get_pointer(_kernel.HOLD, b"exchange.kernel._kernel.hold"))(engine, int(on))


def ledger(engine: Exchange) -> dict:
    """Everything the held ledger holds, as the engine's Python objects have it: each
    account's cash, positions, bases and open lots (dicts in their key order), the pools,
    the resting orders (in their key order)."""
    return (
        {
            "orders": [(order_id, vars(order)) for order_id, order in engine.orders.items()],
        }
        | {
            name: (
                account.cash,
                list(account.positions.items()),
                list(account.vm_basis.items()),
                list(account.basis.items()),
                [(key, list(lots)) for key, lots in account.open_lots.items()],
            )
            for name, account in engine.accounts.items()
        }
        | {"pools": dict(engine.pools)}
    )


class Held:
    """A reference engine and a compiled one recording into lines (a recorded run's sink,
    which the driver may hold), on the same market."""

    def __init__(self, lines: _lines.LineBatch | None = None) -> None:
        self.events: list = []
        self.reference = Exchange(self.events.append)
        self.lines = lines if lines is not None else _lines.LineBatch(1)
        self.compiled = CompiledExchange(self.lines.append)
        for engine in (self.reference, self.compiled):
            _open_market(engine)
        self.checked = 0

    def row(self, *row) -> None:
        """A row through the driver's entry on the compiled engine, its mapping through
        ``handle`` on the reference: the same order id."""
        expected = self.reference.handle(row_command(*row))
        assert row_id()(self.compiled, *row) == expected.order_id

    def command(self, raw: dict) -> None:
        """A command from Python on both: the same result."""
        assert self.compiled.handle(dict(raw)) == self.reference.handle(dict(raw))

    def check_events(self) -> None:
        blob = self.lines.take(len(self.lines))[0] if len(self.lines) else b""
        got = blob.split(b"\n")[:-1]
        expected = [encode(e) for e in self.events[self.checked :]]
        assert got == expected
        self.checked += len(expected)


def _trade(held: Held, instrument: str, qty: int = 3) -> None:
    """alice rests a bid, bob sells into it (a fill, fees, both ledgers moved)."""
    held.row("alice", instrument, 0, 0, 1_000, qty + 2, 0, 0, 0, 0)
    held.row("bob", instrument, 0, 0, 1_000, qty, 1, 0, 0, 0)


def test_held_rows_reach_the_engine_s_objects_when_the_driver_lets_go():
    held = Held()
    before = ledger(held.compiled)
    hold(held.compiled, True)
    _trade(held, SPOT.name)
    # held: the rows' fills, fees and open lots are in the slots only
    assert ledger(held.compiled) == before
    assert ledger(held.reference) != before
    hold(held.compiled, False)
    assert ledger(held.compiled) == ledger(held.reference)
    assert held.compiled.state_hash() == held.reference.state_hash()
    held.check_events()


def test_a_row_of_another_listing_writes_back_the_fields_of_the_first():
    held = Held()
    hold(held.compiled, True)
    _trade(held, SPOT.name)
    held.row("carol", PERP.name, 0, 0, 1_000, 1, 0, 0, 0, 0)  # carol's bid rests, held
    compiled, reference = ledger(held.compiled), ledger(held.reference)
    for written in ("alice", "bob", "pools"):
        assert compiled[written] == reference[written]
    assert compiled["carol"] != reference["carol"]
    hold(held.compiled, False)
    assert ledger(held.compiled) == ledger(held.reference)
    held.check_events()


def test_a_command_from_python_while_held_sees_the_ledger_written_back():
    held = Held()
    hold(held.compiled, True)
    _trade(held, SPOT.name)
    # bob's whole cash as the reference has it after the trade: refused on a stale ledger
    held.command(
        {"type": "withdraw", "account": "bob", "amount": held.reference.accounts["bob"].cash}
    )
    assert held.compiled.accounts["bob"].cash == held.reference.accounts["bob"].cash == 0
    _trade(held, SPOT.name, qty=1)  # (the hold is let go by the command: rows as before)
    assert ledger(held.compiled) == ledger(held.reference)
    held.check_events()


def test_a_sink_a_tap_reads_is_never_held():
    lines, _tap, _calls = tapped()
    held = Held(lines)
    hold(held.compiled, True)
    _trade(held, SPOT.name)
    assert ledger(held.compiled) == ledger(held.reference)


def test_a_maker_s_ledger_past_int64_is_held_and_written_back_exactly():
    held = Held()
    held.row("alice", PERP.name, 0, 0, 1_000, 5, 0, 0, 0, 0)  # alice's bid rests
    for engine in (held.reference, held.compiled):
        # past int64 once it rests (a maker's ledger: no limit reads it when it fills)
        engine.accounts["alice"].cash = (1 << 90) + 7
        engine.accounts["alice"].positions[PERP.name] = -(1 << 70)
        engine.accounts["alice"].vm_basis[PERP.name] = (1 << 100) + 3
    hold(held.compiled, True)
    held.row("bob", PERP.name, 0, 0, 1_000, 3, 1, 0, 0, 0)  # bob's sell fills it
    assert held.compiled.accounts["alice"].vm_basis[PERP.name] == (1 << 100) + 3  # (held)
    hold(held.compiled, False)
    assert ledger(held.compiled) == ledger(held.reference)
    assert held.compiled.accounts["alice"].vm_basis[PERP.name] != (1 << 100) + 3  # moved
    held.check_events()


NAMES = sorted(ACCOUNTS)
rows = st.tuples(
    st.sampled_from(NAMES),
    st.sampled_from([SPOT.name, PERP.name, RVS.name]),
    st.integers(0, 2),  # op
    st.integers(1, 30),  # order id (cancel, amend)
    st.integers(990, 1_010),  # price
    st.integers(1, 20),  # qty
    st.integers(0, 1),  # side
    st.integers(0, 1),  # order type
    st.integers(0, 2),  # tif
    st.integers(0, 1),  # post-only
)
steps = st.one_of(
    rows,
    st.just("hold"),
    st.just("let go"),
    st.sampled_from(NAMES).map(lambda name: {"type": "deposit", "account": name, "amount": 7}),
    st.sampled_from(NAMES).map(lambda name: {"type": "cancel_all", "account": name}),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(steps, min_size=1, max_size=60))
def test_any_rows_held_let_go_and_mixed_with_commands_give_the_reference_s_events_and_ledger(
    script,
):
    held = Held()
    for step in script:
        if step == "hold":
            hold(held.compiled, True)
        elif step == "let go":
            hold(held.compiled, False)
        elif type(step) is dict:
            held.command(step)
        else:
            held.row(*step)
    hold(held.compiled, False)
    assert ledger(held.compiled) == ledger(held.reference)
    assert held.compiled.state_hash() == held.reference.state_hash()
    held.check_events()


def test_an_account_named_by_another_string_object_of_the_same_name_is_the_same_account():
    # the rows' account names by object identity first (the kernel's name cache): an equal
    # name that is another object, or a name freed and another made at its address, is
    # still found by its value
    held = Held()
    hold(held.compiled, True)
    for i in range(60):
        name = "".join(["al", "ice"]) if i % 3 else "".join(["b", "ob"])  # (fresh objects)
        held.row(name, SPOT.name, 0, 0, 1_000 - i % 7, 2, i % 2, 0, 0, 0)
        del name  # (its address free for the next name)
    hold(held.compiled, False)
    assert ledger(held.compiled) == ledger(held.reference)
    held.check_events()


def test_a_handle_patched_between_two_bursts_sees_the_rows_of_the_second():
    # the checks of a burst's first row (the engine's kernel, its hooks) hold for the rest
    # of the burst only: a let-go ends the burst, and Python may patch the engine after it
    held = Held()
    hold(held.compiled, True)
    _trade(held, SPOT.name)
    hold(held.compiled, False)
    seen = []

    def handle(raw):
        seen.append(raw)
        return Exchange.handle(held.compiled, raw)

    held.compiled.handle = handle
    hold(held.compiled, True)
    held.row("carol", SPOT.name, 0, 0, 1_000, 1, 0, 0, 0, 0)
    held.row("carol", SPOT.name, 0, 0, 1_001, 1, 0, 0, 0, 0)
    hold(held.compiled, False)
    assert [raw["price"] for raw in seen] == [1_000, 1_001]
    assert ledger(held.compiled) == ledger(held.reference)
    held.check_events()
