"""The bilateral books' plain data and the moves on them, shared by the engine's side
(:mod:`exchange.risk.bilateral`) and the store's fold (:mod:`exchange.store.fold`).

Apart from :mod:`exchange.risk.bilateral` so that the fold imports no pydantic: the journaller
process imports the fold at its start, and ``CsaTerms``'s pydantic was ~60 ms of its CPU.
"""

from __future__ import annotations

#: The pool holding posted collateral (``Exchange.pools``; present once the books are open).
COLLATERAL = "collateral"

#: ``(a, b, instrument)``, ``a < b`` -> ``[lots b holds from a, b's premium basis]``.
Contracts = dict[tuple[str, str, str], list[int]]
#: ``(poster, receiver)`` -> collateral posted, minor units (> 0).
Posted = dict[tuple[str, str], int]


def add_to_contract(
    contracts: Contracts, holder: str, giver: str, instrument: str, lots: int, basis: int
) -> None:
    """``holder`` takes ``lots`` of protection (signed) from ``giver`` on ``basis`` (ticks x
    lots, ``holder``'s side): the pair's contract moves, netting within the pair; a contract
    with neither lots nor basis is dropped. A trade of an account with itself (a wash trade
    its self-trade prevention allowed) makes no contract: nobody owes anybody."""
    if holder == giver:
        return
    if holder < giver:
        key, lots, basis = (holder, giver, instrument), -lots, -basis
    else:
        key = (giver, holder, instrument)
    contract = contracts.get(key)
    if contract is None:
        contract = contracts[key] = [0, 0]
    contract[0] += lots
    contract[1] += basis
    if not contract[0] and not contract[1]:
        del contracts[key]


def held(contracts: Contracts, holder: str, giver: str, instrument: str) -> tuple[int, int]:
    """``(lots, basis)`` of ``holder``'s protection from ``giver`` in ``instrument``."""
    if holder < giver:
        lots, basis = contracts.get((holder, giver, instrument), (0, 0))
        return -lots, -basis
    lots, basis = contracts.get((giver, holder, instrument), (0, 0))
    return lots, basis


def move_posted(posted: Posted, poster: str, receiver: str, amount: int) -> None:
    """``poster``'s collateral with ``receiver`` moves by ``amount`` (negative: returned)."""
    left = posted.get((poster, receiver), 0) + amount
    if left:
        posted[(poster, receiver)] = left
    else:
        posted.pop((poster, receiver), None)


def state_of(contracts: Contracts, posted: Posted) -> dict[str, list]:
    """The canonical form of the books (``exchange.core.state``): sorted, integers and names."""
    return {
        "contracts": [[*key, lots, basis] for key, (lots, basis) in sorted(contracts.items())],
        "collateral": [[*key, amount] for key, amount in sorted(posted.items()) if amount],
    }


# ---------------------------------------------------------------- the engine's side
def drop_instrument(contracts: Contracts, instrument: str) -> None:
    """An expired series' contracts are settled and gone (``InstrumentExpired``)."""
    for key in [k for k in contracts if k[2] == instrument]:
        del contracts[key]
