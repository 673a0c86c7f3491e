"""gpuex matching core: a price-time-priority limit order book, integers in, fills out.

``OrderBook`` is the Cython engine; ``ReferenceBook`` is the pure-Python oracle with the same
specification (``docs/matching_core.md``). Both take prices in ticks, quantities in lots and
order ids / accounts as int64, and know nothing of money, instruments or time.
"""

from matching_core.codes import (
    CANCEL_DTYPE,
    DEFAULT_MAX_PRICE,
    DEFAULT_MAX_QTY,
    FILL_DTYPE,
    MESSAGE_DTYPE,
    REPORT_DTYPE,
    RESTING_DTYPE,
    Op,
    OrderType,
    Reject,
    Side,
    StpMode,
    TimeInForce,
)
from matching_core.reference import ReferenceBook

try:
    from matching_core._book import OrderBook
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "matching_core._book is not built; run `pip install -e .` (needs a C compiler)"
    ) from exc

__all__ = [
    "CANCEL_DTYPE",
    "DEFAULT_MAX_PRICE",
    "DEFAULT_MAX_QTY",
    "FILL_DTYPE",
    "MESSAGE_DTYPE",
    "REPORT_DTYPE",
    "RESTING_DTYPE",
    "Op",
    "OrderBook",
    "OrderType",
    "ReferenceBook",
    "Reject",
    "Side",
    "StpMode",
    "TimeInForce",
]
