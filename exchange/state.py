"""The canonical state of an exchange and its hash.

Both the live engine and the replay fold describe their state in this one shape, so that "the
replay reached the live run's state" is a comparison of two SHA-256 digests. The shape lists
everything in a fixed order (accounts by name, instruments by name, resting orders in priority
order), holds only integers and strings, and is serialised as compact JSON with sorted keys.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

BUY, SELL = "buy", "sell"


def canonical_state(
    *,
    t: int,
    accounts: dict[str, tuple[int, dict[str, int]]],
    fee_pool: int,
    deposited: int,
    withdrawn: int,
    instruments: dict[str, int | None],
    books: dict[str, list[tuple[str, int, int, str, int]]],
    next_order_id: int,
) -> dict[str, Any]:
    """Build the canonical state.

    Args:
        t: simulated time of the last event, ns.
        accounts: name -> (cash in minor units, {instrument: position in lots}).
        fee_pool: fees collected by the exchange, minor units.
        deposited, withdrawn: external cash in and out so far, minor units (both >= 0).
        instruments: name -> last trade price in ticks (None before the first trade).
        books: instrument -> resting orders ``(side, price, order_id, account, qty)`` in
            priority order (bids best-first, then asks best-first, time within a level).
        next_order_id: the id the next accepted submit will get.
    """
    return {
        "t": t,
        "accounts": [
            [name, cash, [[i, p] for i, p in sorted(positions.items()) if p]]
            for name, (cash, positions) in sorted(accounts.items())
        ],
        "fee_pool": fee_pool,
        "external": [deposited, withdrawn],
        "instruments": [[name, last] for name, last in sorted(instruments.items())],
        "books": [[name, [list(o) for o in orders]] for name, orders in sorted(books.items())],
        "next_order_id": next_order_id,
    }


def state_hash(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical serialisation of ``state``."""
    return hashlib.sha256(orjson.dumps(state, option=orjson.OPT_SORT_KEYS)).hexdigest()
