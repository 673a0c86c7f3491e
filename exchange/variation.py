"""Variation margin: what a position is worth, so that cash can follow it every cycle.

Each account keeps, per instrument, a **VM basis**: the mark-to-market value (minor units) its
position was last settled at. A trade adds the value of the lots it moves at the trade
(:func:`mtm_change`); a margin cycle pays each account ``value now - basis`` and resets the
basis to the value now. Over the life of a position the variation margin paid is exactly the
change in its value, and because every trade adds to one side what it takes from the other,
the payments of a cycle sum to zero.
"""

from __future__ import annotations

from typing import Any


def mtm_change(
    kind: str, delta: int, price: int, tick_value: int, unit_value: int, periods_left: int
) -> int:
    """The mark-to-market value (minor units) that ``delta`` lots traded at ``price`` add to an
    account, which variation margin then settles from. A perpetual lot is worth
    ``price x tick_value``. A swap position is worth its protection (``unit_value`` per
    contract, the model at the last mark) less the premiums it still owes at the premium it
    traded at (``price x tick_value`` per period, ``periods_left`` periods): so a trade at a
    fair premium is worth about nothing, and paying a scheduled premium changes no one's
    wealth (cash falls, the position's value rises by as much)."""
    if kind == "perp":
        return delta * price * tick_value
    return delta * (unit_value - price * tick_value * periods_left)


def position_value(
    kind: str,
    position: int,
    mark: int,
    tick_value: int,
    unit_value: int,
    premium_basis: int,
    periods_left: int,
) -> int:
    """The mark-to-market value of a whole position, minor units: a perpetual at its mark; a
    swap at the model value of its protection less the premiums still owed on its basis."""
    if kind == "perp":
        return position * mark * tick_value
    return position * unit_value - premium_basis * tick_value * periods_left


def move_lots(listing: Any, receiver: Any, giver: Any, delta: int, price: int) -> int:
    """Move ``delta`` lots of ``listing`` at ``price`` ticks from ``giver`` to ``receiver``:
    positions, a swap's premium basis (``price x delta``) and the VM basis (what the lots are
    worth now, ``variation.mtm_change``, so the next cycle pays only what changes from here).
    Used by every trade and by auto-deleveraging; returns the VM-basis change."""
    instrument = listing.spec.name
    change = 0
    if listing.kind != "spot":
        change = mtm_change(
            listing.kind,
            delta,
            price,
            listing.spec.tick_value,
            listing.unit_value,
            listing.periods_left,
        )
    for account, sign in ((receiver, 1), (giver, -1)):
        account.positions[instrument] = account.positions.get(instrument, 0) + sign * delta
        if change:
            account.vm_basis[instrument] = account.vm_basis.get(instrument, 0) + sign * change
        if listing.kind == "rvs":
            account.basis[instrument] = account.basis.get(instrument, 0) + sign * price * delta
    return change
