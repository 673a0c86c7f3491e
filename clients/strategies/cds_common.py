"""What the CDS strategies share: the series' spread as a bot sees it, orders in flight, calls,
and bad data left alone.

A listed credit default swap series trades on the book like any instrument: the price is the
**running spread** in ticks of the spec's ``tick_bps`` (1 bp by default), the quantity is
**contracts** (``notional`` minor units each), and a **buy is bought protection** (a long
position gains when the spread widens). A bot sees the spread in three ways:

- **marks** (``on_mark`` for its series): ``source`` says how the exchange made the mark. The
  model's mark (``source`` in ``implied_sources``, ``("model",)`` by default) is the par spread
  of the reference entity's hazard, which the exchange takes from the credit economy's implied
  spread (``EconomyMonth``'s ``cds_spread_bps``): that is the **implied spread** the bots
  trade against. A mark from the book (``source="book"``) is only the book's mid, so it is a
  mark but not the implied spread;
- optionally, the prints of an index (``implied_index``) in the series' ticks, also taken as
  the implied spread (for a session that publishes the economy's spread as an index);
- the book (``ctx.book(series)``): best bid and ask.

A spread or mark older than ``max_age_ns`` is **stale** and not used. Any value that is not a
whole number of ticks in ``1..MAX_SPREAD_TICKS`` (a ``None``, a float, a bool, zero, a negative
or an absurd spread) is **bad data**: the bot ignores it rather than raising, and acts on what
it had before (or does nothing).

A rejection that says the series can no longer trade (unknown, expired, delisted, halted or
settled: after a credit event the series is settled and closed) stops the bot from trading
it; other rejections only clear the order in flight.
"""

from __future__ import annotations

from pydantic import Field

from clients.bot import IndexPrint, MarginCall, Mark, OrderUpdate
from clients.context import Context
from clients.strategies.base import DAY_NS, InFlight, Strategy, StrategyParams

#: The widest spread the bots accept, in ticks (10,000 % a year at 1 bp): anything past it is
#: bad data, not a spread.
MAX_SPREAD_TICKS = 1_000_000

#: Words of a rejection's reason saying the series can no longer trade at all.
_GONE = ("unknown instrument", "expired", "delisted", "halted", "settled", "credit event")

#: The series in the built-in ``second-derivative``: CoreWeave, 5 years, 500 bps coupon.
DEFAULT_SERIES = "CRWV-CDS-2030-12-C500"


def spread_ticks(value: object) -> int | None:
    """``value`` if it is a usable spread: an ``int`` (not a ``bool``) in
    ``1..MAX_SPREAD_TICKS`` ticks; otherwise ``None`` (bad data)."""
    if type(value) is not int or not 1 <= value <= MAX_SPREAD_TICKS:
        return None
    return value


def gone(reason: str | None) -> bool:
    """Whether a rejection's ``reason`` says the series can no longer trade."""
    text = (reason or "").lower()
    return any(word in text for word in _GONE)


class CdsParams(StrategyParams):
    """Parameters every CDS strategy has."""

    series: str = Field(
        default=DEFAULT_SERIES, min_length=1, description="the CDS series traded (its symbol)"
    )
    implied_sources: tuple[str, ...] = Field(
        default=("model",),
        description="mark sources taken as the implied spread (the model's, from the economy)",
    )
    implied_index: str | None = Field(
        default=None,
        description="an index whose prints (series ticks) are the implied spread; None: none",
    )
    max_age_ns: int = Field(
        default=35 * DAY_NS,
        ge=1,
        description="a mark or implied spread older than this (ns) is stale; the economy's "
        "spread moves once a month",
    )


class CdsStrategy(Strategy):
    """A bot trading one CDS series: keeps the latest mark and implied spread (ticks), its
    orders in flight, and whether it is under a collateral call or has defaulted."""

    Params = CdsParams
    params: CdsParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.books = (self.params.series,)  # marks reach a bot only for the books it watches
        self.mark: int | None = None  # latest mark, any source, ticks
        self.mark_t = 0
        self.implied: int | None = None  # latest implied spread, ticks
        self.implied_t = 0
        self.in_flight = InFlight()
        self.called = False  # under a collateral call: only orders that reduce the position
        self.defaulted = False  # the account defaulted: no more orders
        self.closed = False  # the series can no longer trade (settled, delisted, unknown)
        self.ignored = 0  # bad values met (marks, prints, book prices)

    # ------------------------------------------------------------------ what the bot sees
    def on_mark(self, ctx: Context, mark: Mark) -> None:
        if mark.instrument != self.params.series:
            return
        ticks = spread_ticks(mark.price)
        if ticks is None:
            self.ignored += 1
            return
        self.mark, self.mark_t = ticks, ctx.now
        implied = mark.source in self.params.implied_sources
        if implied:
            self.implied, self.implied_t = ticks, ctx.now
        self.on_spread(ctx, implied)

    def on_index(self, ctx: Context, index: IndexPrint) -> None:
        if self.params.implied_index is None or index.index != self.params.implied_index:
            return
        ticks = spread_ticks(index.value)
        if ticks is None:
            self.ignored += 1
            return
        self.implied, self.implied_t = ticks, ctx.now
        self.on_spread(ctx, True)

    def on_spread(self, ctx: Context, implied: bool) -> None:
        """A new mark or implied spread arrived (hook; nothing by default): ``implied`` says
        whether it is a new implied spread (else only a mark)."""

    def fresh_mark(self, ctx: Context) -> int | None:
        """The latest mark (ticks), or ``None`` before any or when stale."""
        if self.mark is None or ctx.now - self.mark_t > self.params.max_age_ns:
            return None
        return self.mark

    def fresh_implied(self, ctx: Context) -> int | None:
        """The latest implied spread (ticks), or ``None`` before any or when stale."""
        if self.implied is None or ctx.now - self.implied_t > self.params.max_age_ns:
            return None
        return self.implied

    def top(self, ctx: Context) -> tuple[int | None, int | None]:
        """The best bid and ask of the series' book (ticks), each ``None`` when that side is
        empty, unseen, or bad data."""
        book = ctx.book(self.params.series)
        if book is None:
            return None, None
        try:
            bid, ask = book.best_bid, book.best_ask
        except (AttributeError, IndexError, TypeError):  # a malformed view: ignore it
            self.ignored += 1
            return None, None
        return spread_ticks(bid), spread_ticks(ask)

    def position(self, ctx: Context) -> int:
        """The bot's position in the series, contracts (long = bought protection)."""
        return ctx.positions().get(self.params.series, 0)

    def can_trade(self) -> bool:
        """Neither defaulted nor trading a series that is gone."""
        return not (self.defaulted or self.closed)

    # ------------------------------------------------------------------ its own account
    def on_order(self, ctx: Context, update: OrderUpdate) -> None:
        self.in_flight.update(update)
        if (
            update.status == "rejected"
            and update.instrument == self.params.series
            and gone(update.reason)
        ):
            self.closed = True

    def on_margin_call(self, ctx: Context, call: MarginCall) -> None:
        # a raised call (``increased``) is still a call; ``reduced`` leaves it open
        if call.status in ("called", "increased"):
            self.called = True
            self.meet_call(ctx, call)
        elif call.status == "cured":
            self.called = False
        elif call.status == "defaulted":
            self.defaulted = True

    def meet_call(self, ctx: Context, call: MarginCall) -> None:
        """Answer a call (hook; nothing by default: the bot only stops adding)."""
