"""Hostile commands at the exchange (issue #17): whatever a client sends, ``Exchange.handle``
returns; a refusal is exactly one ``CommandRejected`` with a one-line reason and changes
nothing else (state hash before == after); anything accepted keeps the ledger balanced and every
event storable (int64 columns), through a real event store at the end.

Hypothesis explores the shapes (deterministic: ``derandomize``); the seeded mutation fuzzer of
``tests.fuzz.mutator`` sends volume (benches/test_bench_fuzz.py sends a million)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core.commands import MAX_BALANCE

from .invariants import LedgerCheck, assert_state_storable, record_through_store
from .mutator import ACCOUNTS, HOSTILE, INSTRUMENTS, Fuzzer

#: Deterministic, modest: the whole fuzz package stays within a few minutes of CI.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

big_ints = st.sampled_from([1 << 62, (1 << 63) - 1, 1 << 63, 1 << 64, -(1 << 63), 10**17 + 1])
ints = st.integers() | big_ints | st.integers(-3, 3)
floats = st.floats(allow_nan=True, allow_infinity=True)
texts = st.text(max_size=80) | st.sampled_from(["x" * 70, "x" * 20_000, "\x00", "é🙂漢字"])
scalars = st.none() | st.booleans() | ints | floats | texts
json_ish = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(ACCOUNTS) | st.sampled_from(["mallory", "", "ALICE"]) | texts
field_values = {
    "account": names,
    "instrument": st.sampled_from(INSTRUMENTS) | texts,
    "side": st.sampled_from(["buy", "sell"]) | scalars,
    "order_type": st.sampled_from(["limit", "market"]) | scalars,
    "tif": st.sampled_from(["gtc", "ioc", "fok"]) | scalars,
    "post_only": st.booleans() | scalars,
    "price": st.integers(0, 1_100_000) | ints | floats,
    "qty": st.integers(1, 20) | ints | floats,
    "order_id": st.integers(1, 60) | ints,
    "amount": st.integers(1, MAX_BALANCE) | ints | floats,
    "bot": texts,
    "cause": st.sampled_from(["raised", "budget", "timeout", "disconnected"]) | texts,
}
TYPES = ["submit", "cancel", "amend", "deposit", "withdraw", "cancel_all", "bot_failed"]


@st.composite
def shaped_commands(draw) -> dict[str, Any]:
    """A command of a real type with any subset of real fields, each drawn from values that
    are often valid and often extreme, plus now and then an unknown field."""
    command: dict[str, Any] = {"type": draw(st.sampled_from(TYPES) | scalars)}
    for key in draw(st.lists(st.sampled_from(sorted(field_values)), unique=True, max_size=7)):
        command[key] = draw(field_values[key])
    if draw(st.integers(0, 9)) == 0:
        command[draw(texts)] = draw(json_ish)
    return command


hostile_inputs = shaped_commands() | json_ish | st.sampled_from(HOSTILE)


def check_one(fuzzer: Fuzzer, command: Any) -> None:
    """Send ``command`` with the full state-hash check, then check the state is storable."""
    fuzzer.full_check_every = 1
    fuzzer.send(0, command)
    assert_state_storable(fuzzer.engine)


@FUZZ
@given(hostile_inputs)
def test_any_input_is_one_rejection_that_changes_nothing_or_a_balanced_outcome(command):
    check_one(Fuzzer(seed=0), command)


@FUZZ
@given(shaped_commands())
def test_commands_with_extreme_fields_never_raise_and_never_overflow(command):
    check_one(Fuzzer(seed=0), command)


@settings(FUZZ, max_examples=60)
@given(st.lists(hostile_inputs | shaped_commands(), min_size=1, max_size=40), st.integers(0, 3))
def test_valid_and_invalid_commands_interleaved_keep_every_invariant_and_store(
    tmp_path_factory, commands, seed
):
    """Sequences: the fuzzer's own valid traffic between hypothesis' inputs, the exchange's
    timed actions in between; then the whole log through a real store, whose fold must reach
    the live state hash."""
    fuzzer = Fuzzer(seed=seed, full_check_every=1, keep=True)
    for number, command in enumerate(commands, 1):
        fuzzer.send(number, command)
        fuzzer.send(number, fuzzer.valid())
        if number % 10 == 0:
            fuzzer.timed()
    assert_state_storable(fuzzer.engine)
    LedgerCheck().apply(fuzzer.log)
    path = tmp_path_factory.mktemp("fuzz") / "sequence.db"
    record_through_store(path, fuzzer.log, fuzzer.engine.state_hash())


def test_a_hundred_thousand_mutated_commands_keep_every_invariant():
    """The seeded mutation fuzzer, 100,000 inputs (a few seconds): the million-input run is
    benches/test_bench_fuzz.py."""
    summary = Fuzzer(seed=17).run(100_000)
    assert summary.inputs == 100_000
    assert summary.rejected > 10_000 and summary.accepted > 10_000  # both paths exercised


def test_fifty_thousand_mutated_commands_with_margin_calls_and_defaults_keep_every_invariant():
    """With margin on: calls, liquidations, defaults, close-outs, auctions, auto-deleveraging
    and the waterfall run on the positions hostile commands build."""
    fuzzer = Fuzzer(seed=2, margin=True)
    summary = fuzzer.run(50_000)
    assert summary.rejected > 10_000 and summary.accepted > 5_000
    assert fuzzer.engine.defaulted  # the default path ran
