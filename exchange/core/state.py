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

#: The exchange's own balances: ``clearing`` (premiums, settlements and variation margin in
#: transit within one cycle), ``default_fund`` (members' contributions), ``fees`` (trading fees
#: collected), ``funding`` (perpetual funding remainders), ``insurance`` (the insurance fund).
#: A bilateral session adds ``collateral`` (what the parties have posted to each other under
#: their CSAs, ``exchange.risk.bilateral``) when its books open.
POOLS = ("clearing", "default_fund", "fees", "funding", "insurance")


def canonical_state(
    *,
    t: int,
    accounts: dict[str, tuple[int, dict[str, int], dict[str, int], dict[str, int]]],
    pools: dict[str, int],
    deposited: int,
    withdrawn: int,
    instruments: dict[str, list],
    indices: dict[str, int],
    books: dict[str, list[tuple[str, int, int, str, int]]],
    next_order_id: int,
    calls: dict[str, list[int]] | None = None,
    defaulted: list[str] | None = None,
    contributions: dict[str, int] | None = None,
    ratings: dict[str, str] | None = None,
    bilateral: dict[str, list] | None = None,
) -> dict[str, Any]:
    """Build the canonical state.

    Args:
        t: simulated time of the last event, ns.
        accounts: name -> (cash in minor units, {instrument: position in lots},
            {instrument: premium basis in ticks x lots} for residual value swaps,
            {instrument: variation-margin basis in minor units}).
        pools: the exchange's own balances, minor units: ``fees`` collected, ``funding``
            (perpetual funding's rounding remainders), ``clearing`` (premiums and settlements
            in transit within one cycle; zero between cycles).
        deposited, withdrawn: external cash in and out so far, minor units (both >= 0).
        instruments: name -> :func:`instrument_state`.
        indices: index name -> its last published value, in index ticks.
        books: instrument -> resting orders ``(side, price, order_id, account, qty)`` in
            priority order (bids best-first, then asks best-first, time within a level).
        next_order_id: the id the next accepted submit will get.
        calls: open collateral calls, account -> [amount due, time of the call in ns].
        defaulted: accounts that have defaulted, in the order they did.
        contributions: default-fund contributions left, by member (minor units).
        ratings: every account that has had a ``RatingChanged``, with the name of its
            rating now. The key is left out while no account has one, so a session without
            rating changes hashes as it did before ratings existed.
        bilateral: the books of bilateral clearing once open (``exchange.risk.bilateral.state_of``:
            contracts ``[a, b, instrument, lots b holds from a, basis]`` and collateral
            ``[poster, receiver, amount]``); left out while they are not, so cleared sessions
            hash as before. (The ``collateral`` pool is in ``pools`` from the same moment.)
    """
    state = {
        "t": t,
        "accounts": [
            [
                name,
                cash,
                [[i, p] for i, p in sorted(positions.items()) if p],
                [[i, b] for i, b in sorted(basis.items()) if b],
                [[i, v] for i, v in sorted(vm_basis.items()) if v],
            ]
            for name, (cash, positions, basis, vm_basis) in sorted(accounts.items())
        ],
        "pools": [[name, amount] for name, amount in sorted(pools.items())],
        "external": [deposited, withdrawn],
        "instruments": [[name, state] for name, state in sorted(instruments.items())],
        "indices": [[name, value] for name, value in sorted(indices.items())],
        "books": [[name, [list(o) for o in orders]] for name, orders in sorted(books.items())],
        "next_order_id": next_order_id,
        "calls": [[name, *call] for name, call in sorted((calls or {}).items())],
        "defaulted": list(defaulted or []),
        "contributions": [[n, c] for n, c in sorted((contributions or {}).items()) if c],
    }
    if ratings:
        state["ratings"] = [[name, rating] for name, rating in sorted(ratings.items())]
    if bilateral is not None:
        state["bilateral"] = bilateral
    return state


def instrument_state(
    kind: str, last: int | None, mark: int | None, funding_cum: int, expired: bool
) -> list:
    """One instrument's state: kind, last trade price and mark (ticks, None before the
    first), cumulative funding index (perpetuals; nano-minor units per lot), expired flag."""
    return [kind, last, mark, funding_cum, expired]


def state_hash(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical serialisation of ``state``."""
    return hashlib.sha256(orjson.dumps(state, option=orjson.OPT_SORT_KEYS)).hexdigest()
