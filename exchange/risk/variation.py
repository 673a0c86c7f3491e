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
    """The value (minor units) that ``delta`` lots traded at ``price`` add to an account's VM
    basis — the value the trade itself is taken to be worth, which variation margin then
    settles from. A perpetual lot is worth ``price x tick_value``: the next cycle pays the
    mark's difference from the trade price. A swap lot traded at premium ``price`` is worth
    nothing at that premium (its protection is what the premiums buy), so it adds nothing:
    the next cycle pays the whole difference between the model's value of the protection and
    the premiums still owed at ``price``. A trade away from the model's premium is thereby
    marked to the model at once, exactly as a perpetual trade away from the mark is, and over
    a position's life the buyer pays exactly the premiums it traded at and receives exactly
    the payoff (decision 11). ``unit_value`` and ``periods_left`` are unused for swaps; they
    stay in the signature so every kind is valued through one function."""
    if kind == "perp":
        return delta * price * tick_value
    return 0


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
        if listing.kind in ("rvs", "cds"):  # a swap's premium (a CDS's spread) basis
            account.basis[instrument] = account.basis.get(instrument, 0) + sign * price * delta
    return change
