"""The compiled kernel's reading of a command mapping and its cancel-all (issue #20,
``exchange/kernel/_kernel.pyx``), against the reference engine.

* A command mapping is read once (``_fields``): each key is found among the models' field
  names by identity (a literal key is the interned name) or, failing that, by equality; a
  mapping whose keys come in any order, or are equal copies of the names, is run by the
  compiled path with the reference's events and result. A key that is not an exact ``str``
  (a subclass too), or is no field of the command's model, is handed to the reference, as
  ``jsonable``/pydantic refuse it there.
* A cancel-all walks the account's resting orders in the C books and writes its events as
  typed lines, oldest entry first across instruments, with and without an instrument, for
  an account with none or many resting orders, an unknown one and a defaulted one.
* A reader of the lines (a ``Tap``) may run Python as a wanted line ends: there the engine's
  ``seq`` is that line's, for every kind of typed line (the kernel syncs only where a line's
  end can run Python: its kind wanted, its instant not yet announced).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core import _lines
from exchange.core import events as ev
from exchange.core.events import Event, decode
from tests.exchange.kernel.handed import handed_to_reference
from tests.exchange.kernel.test_engine_differential import INDICES, Twin
from tests.fuzz.mutator import ACCOUNTS, PERP, RVS, SPOT

QUICK = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Key(str):
    """A ``str`` subclass: ``jsonable`` refuses it as a key, so the reference does not
    parse a command holding one."""


def _copy(key: str) -> str:
    """An equal str that is not the interned name (the kernel finds it by equality)."""
    copy = "".join(list(key))
    assert copy == key and copy is not key
    return copy


#: Well-formed commands of every kind the compiled path runs, each field shape at least once
#: (the order ids those of the submits before them: 1 rests, 2 trades with it, ...)
COMMANDS: list[dict[str, Any]] = [
    {
        "type": "submit",
        "account": "alice",
        "instrument": SPOT.name,
        "side": "buy",
        "qty": 3,
        "price": 9_990,
    },
    {
        "type": "submit",
        "account": "bob",
        "instrument": SPOT.name,
        "side": "sell",
        "qty": 1,
        "price": 9_990,
        "order_type": "limit",
        "tif": "ioc",
        "post_only": False,
    },
    {
        "type": "submit",
        "account": "carol",
        "instrument": PERP.name,
        "side": "buy",
        "qty": 2,
        "price": 9_995,
        "tif": "gtc",
        "post_only": True,
    },
    {
        "type": "submit",
        "account": "dave",
        "instrument": PERP.name,
        "side": "sell",
        "qty": 1,
        "order_type": "market",
    },
    {
        "type": "submit",
        "account": "dave",
        "instrument": PERP.name,
        "side": "sell",
        "qty": 1,
        "order_type": "market",
        "price": 9_000,
    },
    {
        "type": "submit",
        "account": "carol",
        "instrument": RVS.name,
        "side": "sell",
        "qty": 2,
        "price": 505,
    },
    {"type": "amend", "account": "alice", "order_id": 1, "price": 9_991, "qty": 4},
    {"type": "cancel", "account": "carol", "order_id": 3},
    {"type": "cancel", "account": "carol", "order_id": 99},  # a compiled refusal
    {"type": "deposit", "account": "dave", "amount": 1_000},
    {"type": "withdraw", "account": "dave", "amount": 10},
    {"type": "cancel_all", "account": "carol", "instrument": RVS.name},
    {"type": "cancel_all", "account": "bob", "instrument": None},
    {"type": "cancel_all", "account": "alice"},
    {"type": "cancel_all", "account": "mallory"},  # an unknown account: refused
]


@QUICK
@given(st.data())
def test_a_mapping_s_keys_in_any_order_or_equal_copies_are_the_compiled_path_s(data):
    twin = Twin()
    with handed_to_reference() as handed:
        for command in COMMANDS:
            items = data.draw(st.permutations(list(command.items())))
            copied = data.draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
            raw = {(_copy(k) if c else k): v for (k, v), c in zip(items, copied, strict=True)}
            twin.handle(raw)
    assert handed == []
    twin.finish()


def _spoilt(command: dict[str, Any], how: str) -> dict[str, Any]:
    """``command`` with one key the models refuse (``how``)."""
    if how == "subclass":  # an exact field name, as a str subclass
        return {(Key(k) if k == "account" else k): v for k, v in command.items()}
    if how == "not-str":
        return {**command, 7: "seven"}
    if how == "unknown":
        return {**command, "Type": command["type"]}
    # a field of another command's model
    other = {
        "submit": "amount",
        "cancel": "instrument",
        "amend": "amount",
        "deposit": "order_id",
        "withdraw": "qty",
        "cancel_all": "price",
    }
    return {**command, other[command["type"]]: 1}


@QUICK
@given(
    st.lists(
        st.tuples(
            st.sampled_from(COMMANDS), st.sampled_from(["subclass", "not-str", "unknown", "other"])
        ),
        min_size=1,
        max_size=8,
    )
)
def test_a_key_no_model_takes_is_handed_to_the_reference(spoilt):
    twin = Twin()
    for command in COMMANDS[:3]:  # orders to cancel, amend and cancel all
        twin.handle(command)
    with handed_to_reference() as handed:
        for command, how in spoilt:
            before = len(handed)
            result = twin.handle(_spoilt(command, how))
            assert not result.ok
            assert len(handed) == before + 1  # the reference's refusal, not the kernel's
    twin.finish()


# ---------------------------------------------------------------------- cancel-all, typed
#: The kinds the reader below wants: every typed line's but the command's own and the fee
#: (whose ends run no Python: the kernel writes them without syncing the engine)
TAPPED = [
    ev.ORDER_ACCEPTED,
    ev.FILL,
    ev.ORDER_RESTED,
    ev.ORDER_CANCELLED,
    ev.ORDER_AMENDED,
    ev.COMMAND_REJECTED,
    ev.ORDER_REJECTED,
]


def _tapped(twin: Twin) -> list[tuple[int, int]]:
    """A Tap on the compiled engine's lines that runs Python at every wanted line (it resets
    itself, so each is announced) and notes the line's seq and the engine's ``seq`` there."""
    lines = twin.lines
    engine = twin.engines["compiled"]
    seen: list[tuple[int, int]] = []
    tap: _lines.Tap

    def on_wanted(t: int) -> None:
        seen.append((lines.first + len(lines) - 1, engine.seq))
        tap.reset()

    tap = _lines.Tap(TAPPED, (), list(ACCOUNTS), on_wanted, lambda: tap.scan(lines), Event, decode)
    lines.watch(tap)
    return seen


resting = st.fixed_dictionaries(
    {
        "type": st.just("submit"),
        "account": st.sampled_from(ACCOUNTS),
        "instrument": st.sampled_from([SPOT.name, PERP.name, RVS.name]),
        "side": st.sampled_from(["buy", "sell"]),
        "qty": st.integers(1, 4),
        "price": st.integers(-6, 6),  # off the instrument's centre, below
    }
)
cancel_alls = st.fixed_dictionaries(
    {"type": st.just("cancel_all"), "account": st.sampled_from([*ACCOUNTS, "mallory"])},
    optional={"instrument": st.sampled_from([SPOT.name, PERP.name, RVS.name, "nope", None])},
)
CENTRE = {SPOT.name: 10_000, PERP.name: 10_000, RVS.name: 500}


@QUICK
@given(
    st.lists(
        st.one_of(
            resting,
            resting,
            cancel_alls,
            st.tuples(st.sampled_from(INDICES), st.integers(1, 30_000)),
        ),
        min_size=5,
        max_size=40,
    ),
    st.booleans(),
)
def test_cancel_all_s_typed_lines_are_the_reference_s_and_a_tap_sees_the_engine_at_each(
    steps, margin
):
    """Orders resting across instruments (and some trading), cancel-alls of accounts with
    none or many of them, with and without an instrument; with margin and little cash, an
    index gap defaults accounts, whose cancel-all is then refused."""
    twin = Twin(margin=margin, cash=3 * 10**6 if margin else 10**12, lines=True)
    seen = _tapped(twin)
    with handed_to_reference() as handed:
        for step in steps:
            if isinstance(step, tuple):
                twin.call("publish_index", *step)
                twin.later(1)
                twin.call("margin_cycle")
                continue
            command = dict(step)
            if command["type"] == "submit":
                command["price"] += CENTRE[command["instrument"]]
            twin.handle(command)
            twin.later(1)
    if not margin:
        assert handed == []
    twin.finish()
    assert all(line == engine for line, engine in seen)
    cancelled = [e for e in twin.events["reference"] if e.kind == ev.ORDER_CANCELLED]
    if any(isinstance(s, dict) and s["type"] == "cancel_all" for s in steps) and cancelled:
        assert seen  # the reader ran Python at wanted lines, and saw the engine there


def test_cancel_all_walks_the_c_books_oldest_entry_first_across_instruments():
    """An account's orders on three books, one re-entered by an amend: cancelled in their
    entries' order, the command and each cancel a typed line (none through ``append``)."""
    twin = Twin(lines=True)
    seen = _tapped(twin)
    for instrument, price in (
        (SPOT.name, 9_990),
        (PERP.name, 9_980),
        (RVS.name, 490),
        (SPOT.name, 9_989),
    ):
        twin.handle(
            {
                "type": "submit",
                "account": "bob",
                "instrument": instrument,
                "side": "buy",
                "qty": 1,
                "price": price,
            }
        )
    twin.handle({"type": "amend", "account": "bob", "order_id": 1, "price": 9_988, "qty": 1})
    twin.handle({"type": "cancel_all", "account": "carol"})  # none resting
    appended = twin.lines.appended
    mark = len(twin.events["reference"])
    result = twin.handle({"type": "cancel_all", "account": "bob"})
    assert result.ok and result.order_id is None
    assert twin.lines.appended == appended  # typed lines only
    events = twin.events["reference"][mark:]
    assert [e.kind for e in events] == [ev.COMMAND_RECEIVED] + [ev.ORDER_CANCELLED] * 4
    assert [e.order_id for e in events[1:]] == [2, 3, 4, 1]
    assert all(line == engine for line, engine in seen) and len(seen) >= 5
    twin.finish()


def test_a_tap_says_which_kinds_it_wants():
    tap = _lines.Tap(["Fill"], ["IndexPublished"], [], print, print, Event, decode)
    assert tap.wants("Fill")
    assert not tap.wants("IndexPublished") and not tap.wants("Fee")
