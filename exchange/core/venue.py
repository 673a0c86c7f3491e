"""What the risk room asks of the engine it works for, as a Protocol.

Margin cycles, close-out, default and bilateral clearing act on an exchange: they read its
accounts, listings, pools and indices and announce what they do through its event stream. They
type against :class:`Venue` rather than import the engine, which imports them: rooms import
only the rooms below them, and no two modules import each other (not even for type hints).
``exchange.kernel.engine.Exchange`` (and so its compiled twin) is a Venue.

Units as the engine's: cash and amounts in minor units (cents), prices in ticks, quantities in
lots, times in simulated ns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, Protocol

from exchange.core.accounts import Account, Listing


class Venue(Protocol):
    """The engine as the risk room sees it (attributes and methods it uses)."""

    t: int  # simulated ns of the event being handled
    accounts: dict[str, Account]
    instruments: dict[str, Listing]
    pools: dict[str, int]  # minor units per pool
    margin: Any  # the session's MarginConfig, or None
    indices: dict[str, Any]
    ratings: dict[str, Any]
    defaulted: set[str]
    contributions: dict[str, int]
    next_order_id: int
    orders: dict[int, Any]  # resting orders by id
    epoch: Any  # the session's first day (a date), for calendar dates
    cds_spread_bps: dict[str, int]  # the economy's latest 5-year spread per entity
    request_cycle: Callable[[], None] | None

    def date_ns(self, day: date) -> int: ...

    def emit(self, kind: str, **fields: Any) -> Any: ...

    def after_match(self, *args: Any, **kwargs: Any) -> Any: ...

    def cancel_orders_in(self, name: str, instrument: str) -> None: ...

    def sorted_accounts(self) -> list[Account]: ...

    def settle_variation(self, name: str, listing: Listing) -> None: ...

    def is_closed_out(self, account: Account, instrument: str) -> bool: ...

    def variation_dues(self, name: str, listing: Listing) -> dict[str, tuple[int, int]]: ...

    def pay_variation(self, *args: Any) -> None: ...

    def mark(self, name: str) -> None: ...

    def cancel_book(self, instrument: str, reason: str) -> None: ...

    def charge_cds_premium(self, name: str) -> None: ...
