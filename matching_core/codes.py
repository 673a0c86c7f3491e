"""Codes and record layouts shared by the Cython book, the reference book and their callers.

Everything here is plain integers: the book never sees a float, a string or a Python object
on its hot path. The enums are ``IntEnum`` so that ``Side.BUY == 0`` and they can be stored
straight into the numpy records below.

Record layouts (all fields little-endian, native alignment):

``MESSAGE_DTYPE`` (40 bytes), one order-entry message for :meth:`OrderBook.process`:

=============  =======  ==============================================================
field          type     meaning
=============  =======  ==============================================================
``order_id``   int64    the order's id (any int64; unique among resting orders)
``account``    int64    the account that owns the order (used for self-trade prevention)
``price``      int64    limit price in ticks; for ``AMEND`` the new price; for a market
                        order the protection price (0 = none); ignored for ``CANCEL``
``qty``        int64    quantity in lots; for ``AMEND`` the new open quantity
``op``         uint8    :class:`Op`: ``ADD`` / ``CANCEL`` / ``AMEND``
``side``       uint8    :class:`Side`: ``BUY`` / ``SELL`` (``ADD`` only)
``type``       uint8    :class:`OrderType`: ``LIMIT`` / ``MARKET`` (``ADD`` only)
``tif``        uint8    :class:`TimeInForce`: ``GTC`` / ``IOC`` / ``FOK`` (limit ``ADD`` only)
``post_only``  uint8    1 = post-only (limit GTC ``ADD`` only), else 0
=============  =======  ==============================================================

``FILL_DTYPE`` (56 bytes), one trade, in match order:

=====================  =====  =========================================================
``taker_order_id``     int64  the incoming (aggressing) order
``maker_order_id``     int64  the resting order it traded against
``taker_account``      int64
``maker_account``      int64
``price``              int64  the maker's price, in ticks
``qty``                int64  lots traded
``msg_index``          int64  index of the message that caused it (per-call API: the
                              book's running call counter)
=====================  =====  =========================================================

``REPORT_DTYPE`` (32 bytes), the outcome of one message:

=================  =====  ==============================================================
``reject``         int64  a :class:`Reject` code; ``OK`` (0) when accepted
``filled``         int64  lots the message's order traded as taker
``resting``        int64  lots of the order left resting on the book afterwards
``cancelled``      int64  lots of the order removed without trading: an IOC/FOK/market
                          remainder, a self-trade-prevention cancel of the incoming order,
                          or the open quantity removed by a ``CANCEL`` (or by an amend's
                          quantity reduction)
=================  =====  ==============================================================

``CANCEL_DTYPE`` (32 bytes), a *resting* order removed by self-trade prevention (the only
way a resting order leaves the book without its owner asking or a trade):

===============  =====  =====================================================
``order_id``     int64
``account``      int64
``qty``          int64  lots removed
``msg_index``    int64  index of the message that caused it
===============  =====  =====================================================
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Side(IntEnum):
    """Order side."""

    BUY = 0
    SELL = 1


class OrderType(IntEnum):
    """Limit orders carry a price; market orders take liquidity at any price (or up to a
    protection price) and never rest."""

    LIMIT = 0
    MARKET = 1


class TimeInForce(IntEnum):
    """``GTC`` rests its remainder; ``IOC`` cancels it; ``FOK`` trades its whole quantity at
    once or nothing at all."""

    GTC = 0
    IOC = 1
    FOK = 2


class Op(IntEnum):
    """The message kinds of :data:`MESSAGE_DTYPE`."""

    ADD = 0
    CANCEL = 1
    AMEND = 2


class StpMode(IntEnum):
    """Self-trade prevention, set per account (off by default).

    When an incoming order would trade against a resting order of the same account:
    ``CANCEL_RESTING`` removes the resting order and matching continues;
    ``CANCEL_INCOMING`` stops matching and cancels the incoming order's remainder;
    ``CANCEL_BOTH`` does both.
    """

    NONE = 0
    CANCEL_RESTING = 1
    CANCEL_INCOMING = 2
    CANCEL_BOTH = 3


class Reject(IntEnum):
    """Why a message was rejected. A rejected message leaves the book untouched."""

    OK = 0
    NON_POSITIVE_QTY = 1
    NON_POSITIVE_PRICE = 2
    PRICE_OUT_OF_RANGE = 3
    QTY_OUT_OF_RANGE = 4
    DUPLICATE_ORDER_ID = 5
    UNKNOWN_ORDER_ID = 6
    POST_ONLY_WOULD_CROSS = 7
    FOK_NOT_FILLABLE = 8
    INVALID_SIDE = 9
    INVALID_TYPE = 10
    INVALID_TIF = 11
    INVALID_OP = 12
    INVALID_POST_ONLY = 13


#: Default largest accepted price, in ticks (2**53: exact in a float64, far beyond any price).
DEFAULT_MAX_PRICE = 1 << 53
#: Default largest accepted order quantity, in lots. Keeps every level total and every
#: account's traded sum far from int64 overflow (2**40 lots x 2**22 orders < 2**63).
DEFAULT_MAX_QTY = 1 << 40

MESSAGE_DTYPE = np.dtype(
    [
        ("order_id", "<i8"),
        ("account", "<i8"),
        ("price", "<i8"),
        ("qty", "<i8"),
        ("op", "u1"),
        ("side", "u1"),
        ("type", "u1"),
        ("tif", "u1"),
        ("post_only", "u1"),
    ],
    align=True,
)

FILL_DTYPE = np.dtype(
    [
        ("taker_order_id", "<i8"),
        ("maker_order_id", "<i8"),
        ("taker_account", "<i8"),
        ("maker_account", "<i8"),
        ("price", "<i8"),
        ("qty", "<i8"),
        ("msg_index", "<i8"),
    ],
    align=True,
)

REPORT_DTYPE = np.dtype(
    [("reject", "<i8"), ("filled", "<i8"), ("resting", "<i8"), ("cancelled", "<i8")],
    align=True,
)

CANCEL_DTYPE = np.dtype(
    [("order_id", "<i8"), ("account", "<i8"), ("qty", "<i8"), ("msg_index", "<i8")],
    align=True,
)

#: One resting order, as returned by ``snapshot()``: bids best-first, then asks best-first,
#: time priority within a price level.
RESTING_DTYPE = np.dtype(
    [("side", "u1"), ("price", "<i8"), ("order_id", "<i8"), ("account", "<i8"), ("qty", "<i8")],
    align=True,
)
