"""The credit economy in a session: its monthly steps as events in the session's log (issue #21).

:mod:`exchange.credit.economy` is a pure agent model that steps one month at a time and returns
typed
records, each naming the earlier records it follows from. This module runs it beside the
exchange: one step at midnight UTC of the first day of every month of the session's calendar,
each record of the step announced, in order, as one event of an economy kind
(``events.ECONOMY_KINDS``) through :meth:`exchange.kernel.engine.Exchange.announce`.

The mapping, record -> event (docs/credit.md, "In the log"):

- ``kind``: the record's class name (``RoundFailed`` ...), except the economy's ``Default``,
  which becomes ``BorrowerDefaulted``: ``Default`` is the exchange's own (an account that missed
  a call);
- ``account`` None (the entity is not an exchange account); ``counterparty`` the entity (a lab,
  neocloud or hyperscaler: an indexed column, so ``WHERE counterparty = 'CoreWeave'`` finds its
  events);
- ``amount`` the record's main money field (:data:`AMOUNT_FIELD`), cents, signed as the record
  signs it; None for ``CapacityReleased``, which has none;
- ``data``: ``period`` (months since January 2024), ``record`` (the record's index in the
  economy's run), ``cause`` (the **log seqs** of the events of the records it follows from, so
  a post-mortem walks a cascade back to its trigger in SQL) and every other field of the record.

Calendar: period ``p`` is the month ``p`` months after January 2024 (:data:`ECONOMY_EPOCH`, the
economy's period 0), stepped at midnight UTC of its first day if that instant is inside the
session (``0 <= t <= end``, as the other timed actions). A session with an economy must start
on or before 2024-01-01 (:func:`check_calendar`): a month before the session's start could not
be logged at its date, and the economy cannot skip one.

The month's series: before its records, each step announces one ``EconomyMonth`` event
(:func:`month_data`): the period and the model's series after the step that the report's
borrowed-time analysis reads (:mod:`exchange.postmortem.borrowed`): each lab's revenue and mark, the
sector's capex and each hyperscaler's, each neocloud's spread, the rental price after the glut.
The log holds the records; without this it would not hold the paths they follow from.

Priority and order: ``MARKET``, scheduled before the market's own actions, so at an instant
where both fall (an index print at midnight) the economy's news comes first. All of a month's
records are announced one after the other in the step's action: the economy's state changes
(the step) first, then the events that announce it.

Determinism: the economy's seed is :func:`economy_seed` of the session's seed, so its streams
(``default_rng([economy seed, stream])``) are not those of another of the session's components
that seeds ``default_rng([seed, small int])``. The whole run is computed when it is scheduled
(a few hundredths of a second for six years): a pure function of the parameters, the seed and
the calendar, so a live run and a verification announce the same events; and a run that would
put a number past int64 in the log is refused then, before the store exists (the session's
rehearsal schedules the market).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import date
from typing import Any

from exchange.core import events as ev
from exchange.core.clock import MARKET, Simulator
from exchange.credit.economy import (
    BacklogImpaired,
    CapacityAcquired,
    CapacityReleased,
    CapexCut,
    CommitmentPulled,
    CovenantBreached,
    Default,
    Economy,
    EconomyParams,
    EquityMarked,
    GuaranteeCalled,
    Record,
    RefinancingFailed,
    RoundFailed,
    RoundPriced,
    SpreadGapped,
    SpreadInverted,
)
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.products.index import RentalGlut, stable_int_from_name

__all__ = [
    "AMOUNT_FIELD",
    "ECONOMY_EPOCH",
    "EVENT_KIND",
    "EconomyFeed",
    "cds_names",
    "check_calendar",
    "economy_seed",
    "event_fields",
    "month_data",
    "period_date",
    "schedule_economy",
    "step_times",
]

#: The economy's period 0 (``exchange.credit.economy``: January 2024).
ECONOMY_EPOCH = date(2024, 1, 1)

#: Record class -> event kind.
EVENT_KIND: dict[type[Record], str] = {
    RoundPriced: ev.ROUND_PRICED,
    RoundFailed: ev.ROUND_FAILED,
    GuaranteeCalled: ev.GUARANTEE_CALLED,
    CommitmentPulled: ev.COMMITMENT_PULLED,
    BacklogImpaired: ev.BACKLOG_IMPAIRED,
    CovenantBreached: ev.COVENANT_BREACHED,
    SpreadInverted: ev.SPREAD_INVERTED,
    Default: ev.BORROWER_DEFAULTED,
    CapacityReleased: ev.CAPACITY_RELEASED,
    CapexCut: ev.CAPEX_CUT,
    RefinancingFailed: ev.REFINANCING_FAILED,
    SpreadGapped: ev.SPREAD_GAPPED,
    EquityMarked: ev.EQUITY_MARKED,
    CapacityAcquired: ev.CAPACITY_ACQUIRED,
}

#: Record class -> the field that becomes the event's ``amount`` (cents), None: no amount.
#: The money that moves or is lost where there is one (raised, written off, the debt), the
#: test's own number for the covenant and the spread, the new capex for a cut.
AMOUNT_FIELD: dict[type[Record], str | None] = {
    RoundPriced: "raised",
    RoundFailed: "need",
    GuaranteeCalled: "amount",
    CommitmentPulled: "backlog_cut",
    BacklogImpaired: "amount",
    CovenantBreached: "cash_flow",
    SpreadInverted: "spread",
    Default: "debt",
    CapacityReleased: None,
    CapexCut: "capex",
    RefinancingFailed: "due",
    SpreadGapped: None,  # a spread is bps, not money: in data
    EquityMarked: "mark",
    CapacityAcquired: "price",
}

#: A record's fields that every event carries elsewhere (``period`` and ``cause`` go into
#: ``data`` under their own rules, ``entity`` is the counterparty, ``seq`` is ``record``).
_FRAME = ("seq", "period", "entity", "cause")

_INT64 = 2**63 - 1


def economy_seed(seed: int) -> int:
    """The economy's seed in a session with seed ``seed``: the first 8 bytes of the SHA-256 of
    ``"economy:<seed>"`` (:func:`exchange.products.index.stable_int_from_name`), a 64-bit
    integer."""
    return stable_int_from_name(f"economy:{int(seed)}")


def period_date(period: int) -> date:
    """The first day of the economy's month ``period`` (0: 2024-01-01)."""
    year, month = divmod(ECONOMY_EPOCH.month - 1 + period, 12)
    return date(ECONOMY_EPOCH.year + year, month + 1, 1)


def check_calendar(start: date) -> None:
    """A session with an economy starts on or before the economy's period 0 (ValueError)."""
    if start > ECONOMY_EPOCH:
        raise ValueError(
            f"economy: the session starts on {start}, after {ECONOMY_EPOCH} (the economy's "
            "first month): start it on or before that day"
        )


def step_times(start: date, end_ns: int) -> list[int]:
    """The ns (since ``start``) of each monthly step inside ``0..end_ns``: item ``p`` is the
    time of period ``p``. ``start`` must pass :func:`check_calendar`."""
    check_calendar(start)
    times: list[int] = []
    while True:
        t = (period_date(len(times)) - start).days * DAY_NS
        if t > end_ns:
            return times
        times.append(t)


def event_fields(record: Record, cause: list[int]) -> tuple[str, int | None, str, dict[str, Any]]:
    """``(kind, amount, counterparty, data)`` of the event announcing ``record``, whose causes'
    events have the log seqs ``cause`` (in the record's order)."""
    cls = type(record)
    amount_field = AMOUNT_FIELD[cls]
    data: dict[str, Any] = {"period": record.period, "record": record.seq, "cause": cause}
    for f in fields(record):
        if f.name not in _FRAME and f.name != amount_field:
            data[f.name] = getattr(record, f.name)
    amount = None if amount_field is None else getattr(record, amount_field)
    return EVENT_KIND[cls], amount, record.entity, data


def month_data(economy: Economy, series: dict[str, Any], period: int) -> dict[str, Any]:
    """The ``data`` of the ``EconomyMonth`` event of ``period``: the period and, as ints, the
    model's series values of that month (``series``: :meth:`Economy.series`, whole run):
    ``labs`` (names, the naked lab first), ``revenue`` and ``mark`` ({lab: cents/month, cents}),
    ``capex`` (the sector, cents/month), ``capex_by`` ({hyperscaler: cents/month}), ``spread``
    ({neocloud: cash flow - debt service, cents/month; 0 once defaulted}), ``rental_price``
    (ticks of $0.001 per GPU-hour, after the glut) and ``cds_spread_bps`` ({lab or neocloud:
    its implied 5-year CDS spread, int bps}: the labs then the neoclouds, the mark listed CDS
    take)."""
    p = economy.params
    labs = [lab.name for lab in p.labs]

    def at(key: str) -> int:
        return int(series[key][period])

    return {
        "period": period,
        "labs": labs,
        "revenue": {name: at(f"revenue:{name}") for name in labs},
        "mark": {name: at(f"mark:{name}") for name in labs},
        "capex": at("capex"),
        "capex_by": {h.name: at(f"capex:{h.name}") for h in p.hyperscalers},
        "spread": {n.name: at(f"spread:{n.name}") for n in p.neoclouds},
        "rental_price": at("rental_price"),
        "cds_spread_bps": {name: at(f"cds:{name}") for name in cds_names(p)},
    }


def cds_names(params: EconomyParams) -> list[str]:
    """The borrowers with an implied CDS spread (series ``cds:<name>``): the labs, then the
    neoclouds, in configuration order."""
    return [x.name for x in (*params.labs, *params.neoclouds)]


def _check_storable(record: Record) -> None:
    """Every integer of ``record`` fits the log's int64 (ValueError naming it otherwise)."""
    for f in fields(record):
        value = getattr(record, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, int) and not -_INT64 <= v <= _INT64:
                raise ValueError(
                    f"economy: {type(record).__name__}.{f.name} of {record.entity} in month "
                    f"{record.period} is {v:,}, past what the log holds (int64): the economy's "
                    "parameters are too large"
                )


class EconomyFeed:
    """The economy of one session, run for its months, and the log seqs its records got.

    Attributes:
        economy: the model, stepped through every period the session holds (its ``records``
            and ``series()`` are the whole run's).
        times: ns of each period's step (item ``p``: period ``p``).
        months: the ``EconomyMonth`` data of each period (:func:`month_data`, item ``p``).
        event_seq: record index -> the seq of the event that announced it (filled as the
            session runs).
    """

    def __init__(
        self, engine: Exchange, params: EconomyParams, seed: int, times: list[int]
    ) -> None:
        self.engine = engine
        self.times = times
        self.economy = Economy(params, economy_seed(seed))
        self._by_period: list[list[Record]] = []
        try:
            for _ in times:
                self._by_period.append(self.economy.step())
        except (ArithmeticError, ValueError) as exc:  # a float past its range: bad parameters
            raise ValueError(f"economy: the model cannot run on these parameters ({exc})") from None
        for records in self._by_period:
            for record in records:
                _check_storable(record)
        try:
            series = self.economy.series()
        except OverflowError:  # a series value past int64 (the model's records fit)
            raise ValueError(
                "economy: a monthly series value is past what the log holds (int64): the "
                "economy's parameters are too large"
            ) from None
        self.months = [month_data(self.economy, series, p) for p in range(len(times))]
        self.event_seq: list[int] = []

    def glut(self) -> RentalGlut | None:
        """The rental-price factor the session's rental indices take (:class:`RentalGlut`:
        each month's ``rental_price`` after the glut over the first month's, from the step
        times); None for a session without a month. The economy is computed up front, so the
        index prints can be generated with it before the session runs."""
        if not self.times:
            return None
        return RentalGlut(self.times, [m["rental_price"] for m in self.months])

    def announce(self, period: int) -> None:
        """Announce the month's series (``EconomyMonth``), then every record of month
        ``period``, in order (the simulator's action)."""
        self.engine.announce(ev.ECONOMY_MONTH, data=self.months[period])
        for record in self._by_period[period]:
            kind, amount, entity, data = event_fields(
                record, [self.event_seq[c] for c in record.cause]
            )
            event = self.engine.announce(kind, amount=amount, counterparty=entity, data=data)
            self.event_seq.append(event.seq)


def schedule_economy(
    engine: Exchange,
    sim: Simulator,
    *,
    params: EconomyParams,
    start: date,
    end_ns: int,
    seed: int,
) -> EconomyFeed:
    """Schedule the economy's monthly steps of a session from ``start`` (its calendar epoch)
    to ``end_ns`` on ``sim`` at ``MARKET`` priority; returns the feed (its economy, and the
    log seqs of the records once announced). ValueError: a calendar :func:`check_calendar`
    refuses, or parameters that put a number past int64 in the log."""
    times = step_times(start, end_ns)
    feed = EconomyFeed(engine, params, seed, times)
    for period, t in enumerate(times):
        sim.schedule(t, feed.announce, period, priority=MARKET)
    return feed
