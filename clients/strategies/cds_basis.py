"""A CDS basis trader: trades the book's spread against the model's implied spread.

The implied spread (the "bond" side of the basis) is the economy's spread for the reference
entity as the exchange's model marks it (``on_mark`` with a source in ``implied_sources``), or
an index's prints (``implied_index``); see :mod:`clients.strategies.cds_common`. The basis is
the book against it, in ticks. Whenever the book or the implied spread changes, with ``implied``
fresh, the book's best ``bid``/``ask``, ``threshold`` (ticks) and its position ``pos``
(contracts, long = bought protection):

- **buys protection** when the offer is below the implied by more than the threshold,
  ``implied - ask > threshold``: an immediate-or-cancel buy at ``implied - threshold - 1``
  (every offer that cheap, none dearer) of ``min(size, max_position - pos)`` contracts;
- **sells protection** when the bid is above the implied by more than the threshold,
  ``bid - implied > threshold``: an IOC sell at ``implied + threshold + 1`` of
  ``min(size, max_position + pos)``;
- otherwise, with ``exit_ticks`` set, **unwinds** once the basis has converged: long and
  ``bid >= implied - exit_ticks``, an IOC sell at ``implied - exit_ticks`` of
  ``min(size, pos)``; short and ``ask <= implied + exit_ticks``, an IOC buy at
  ``implied + exit_ticks`` of ``min(size, -pos)``. ``exit_ticks <= threshold``, so an unwind
  never sells below (or buys above) the entry's limit.

The position stays within ``max_position`` contracts either way. One order at a time (the
next waits for the exchange's answer to the last). Nothing is sent without a fresh implied
spread (none yet, or older than ``max_age_ns``), against an empty side or bad data; under a
collateral call only an order that reduces the position is sent, cut to the position (the
exchange refuses the others); after its account defaults, or once the series is settled or
gone, nothing.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from clients.bot import BookView
from clients.context import Context
from clients.strategies.cds_common import CdsParams, CdsStrategy


class CdsBasisParams(CdsParams):
    """Parameters of :class:`CdsBasisTrader` (and every CDS strategy's, see ``CdsParams``)."""

    threshold: int = Field(
        default=25, ge=0, description="basis (ticks) beyond which it trades, either way"
    )
    exit_ticks: int | None = Field(
        default=0,
        ge=0,
        description="unwind once the book is within this many ticks of the implied spread "
        "(None: hold the position)",
    )
    size: int = Field(default=5, ge=1, description="contracts per order")
    max_position: int = Field(
        default=50, ge=1, description="the largest position either way, contracts"
    )

    @model_validator(mode="after")
    def _exit_inside_entry(self) -> CdsBasisParams:
        if self.exit_ticks is not None and self.exit_ticks > self.threshold:
            raise ValueError("exit_ticks must not exceed threshold")
        return self


class CdsBasisTrader(CdsStrategy):
    """Buys protection when the book is below the implied spread, sells it when above."""

    Params = CdsBasisParams
    params: CdsBasisParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.trades: list[tuple[int, str, int, int, int]] = []  # (t, side, price, qty, implied)

    def on_book(self, ctx: Context, book: BookView) -> None:
        if book.instrument == self.params.series:
            self.check(ctx)

    def on_spread(self, ctx: Context, implied: bool) -> None:
        self.check(ctx)

    def decide(self, implied: int, bid: int | None, ask: int | None, pos: int):
        """The order the rules call for: ``(side, price, qty)`` or ``None``."""
        p = self.params
        if ask is not None and implied - ask > p.threshold and pos < p.max_position:
            return "buy", implied - p.threshold - 1, min(p.size, p.max_position - pos)
        if bid is not None and bid - implied > p.threshold and pos > -p.max_position:
            return "sell", implied + p.threshold + 1, min(p.size, p.max_position + pos)
        if p.exit_ticks is not None:
            if pos > 0 and bid is not None and bid >= implied - p.exit_ticks:
                return "sell", implied - p.exit_ticks, min(p.size, pos)
            if pos < 0 and ask is not None and ask <= implied + p.exit_ticks:
                return "buy", implied + p.exit_ticks, min(p.size, -pos)
        return None

    def check(self, ctx: Context) -> None:
        """Trade the basis if the rules call for it (see the module's docstring)."""
        p = self.params
        if not self.can_trade() or self.in_flight.busy(p.series):
            return
        implied = self.fresh_implied(ctx)
        if implied is None:
            return
        bid, ask = self.top(ctx)
        pos = self.position(ctx)
        order = self.decide(implied, bid, ask, pos)
        if order is None:
            return
        side, price, qty = order
        if price < 1:
            return
        if self.called:  # under a call the exchange accepts only what reduces the position
            reducible = pos if side == "sell" else -pos
            if reducible <= 0:
                return
            qty = min(qty, reducible)
        ref = ctx.submit(p.series, side, price, qty, tif="ioc")
        self.in_flight.sent(ref, p.series)
        self.trades.append((ctx.now, side, price, qty, implied))
