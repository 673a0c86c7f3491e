"""What must hold after every input the fuzz suite sends: the ledger balances, every event and
the whole state fit the store's int64 columns, and a rejection is exactly one event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exchange.core import events as ev
from exchange.core.events import encode
from exchange.store.event_store import EventStore
from exchange.store.fold import Fold
from exchange.store.journal import Journal

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def out_of_int64(value: Any, where: str = "") -> str | None:
    """The path to the first int in ``value`` (nested lists, tuples, dicts) outside int64, or
    None if every one fits."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return None
    if isinstance(value, int):
        return None if INT64_MIN <= value <= INT64_MAX else f"{where}={value}"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return f"{where}: a {type(value).__name__}"
    for key, item in items:
        found = out_of_int64(item, f"{where}.{key}")
        if found:
            return found
    return None


def assert_storable(event: ev.Event) -> None:
    """The event encodes (orjson) and every number the exchange put in it fits int64 (the
    typed columns, and the data: amounts a reader may put in an int64 column of its own). A
    rejected command is logged as the client sent it: JSON, which orjson holds up to 2**64 - 1
    (test_engine.py states that rule), so it is only required to encode."""
    encode(event)
    fields = tuple(event)
    if event.kind == ev.COMMAND_REJECTED:
        fields = fields[:12] + ({k: v for k, v in event.data.items() if k != "command"},)
    bad = out_of_int64(fields)
    assert bad is None, f"event seq {event.seq} ({event.kind}) holds {bad}: past int64"


class LedgerCheck:
    """Folds events one at a time and checks the ledger identity after each: the sum of all
    cash and pools plus withdrawals less deposits is zero, and positions sum to zero in every
    instrument (docs/exchange.md, "Events")."""

    def __init__(self) -> None:
        self.fold = Fold()

    def apply(self, events: list[ev.Event]) -> None:
        fold = self.fold
        for event in events:
            assert_storable(event)
            fold.apply(*event)
            total = (
                sum(fold.cash.values()) + sum(fold.pools.values()) + fold.withdrawn - fold.deposited
            )
            assert total == 0, f"cash created or lost at seq {event.seq} ({event.kind})"
            net: dict[str, int] = {}
            for positions in fold.positions.values():
                for name, lots in positions.items():
                    net[name] = net.get(name, 0) + lots
            assert not any(net.values()), f"positions do not net to zero at seq {event.seq}"


def assert_state_storable(engine: Any) -> None:
    """The engine's canonical state fits int64 everywhere and hashes (what a snapshot and the
    final ``SessionEnded`` need)."""
    state = engine.canonical_state()
    bad = out_of_int64(state, "state")
    assert bad is None, f"the state holds {bad}: past int64"
    engine.state_hash()


def record_through_store(path: Path, events: list[ev.Event], state_hash: str) -> None:
    """Append ``events`` to a real event store through the journal (fold, int64 columns,
    snapshots every 64 events) and seal it with the live ``state_hash``, which the fold must
    reproduce."""
    store = EventStore.create(path, scenario="fuzz", seed=1, config={}, code_version="fuzz")
    try:
        journal = Journal(store, snapshot_every=64)
        for start in range(0, len(events), 64):
            journal.record(events[start : start + 64])
        journal.finish(events[-1].t, state_hash)
    finally:
        store.close()
