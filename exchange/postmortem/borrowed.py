"""Borrowed time measured from the log: the credit economy's series, their S, S', S'' and the
windows between S'' rolling over and S' crossing zero, with every default placed against them
(issue #21, "The cascade, measured").

The seed essay: *"There is a window - call it borrowed time - between the moment the second
derivative rolls over and the moment the first derivative crosses zero."* This module finds
that window, from the log alone, for the series the economy announces each month
(``EconomyMonth``, :func:`exchange.credit.economy_schedule.month_data`):

- ``revenue:<lab>`` (cents/month), each lab's revenue: the seed's S;
- ``mark:<lab>`` (cents), each lab's equity mark: the last round that priced;
- ``capex`` (cents/month), the hyperscalers' capex, all of them;
- ``rental_price`` (ticks of $0.001 per GPU-hour), the open-market rental after the glut;
- ``index:<name>`` (ticks of the index, $0.001 per GPU-hour), each of the **exchange's rental
  indices** of a session with the economy (the glut feeds them: exchange/products/index.py,
  :class:`~exchange.products.index.RentalGlut`), sampled at each month's step time (its last print
  at
  or before it; months before its first print are left out).

For each, :func:`exchange.postmortem.trend.trend` (a trailing local quadratic fit) gives S, S', S''
at
every month, and :func:`exchange.postmortem.trend.borrowed_time` the windows. Then each default-like
event
of the log (``RoundFailed``, the trigger; ``CovenantBreached``; ``BorrowerDefaulted``; an
exchange ``Default`` if any) is placed against each series: before its window, inside it (the
fraction elapsed) or after it.

**The trend windows for monthly data** (docs/report.md, "Credit cascade"): a trailing window
of :data:`SMOOTH_WINDOW_DAYS` (12 months: 13 monthly samples) for the smooth series (revenue,
capex, rental price): long enough that a 1 % monthly noise does not flip the sign of S'', short
enough that the roll-over shows at most about half a window (6 months) late, the fit's
documented lag; S' crosses zero practically on time. :data:`STAIRCASE_WINDOW_DAYS` (24 months)
for the marks: a mark moves only when a round prices (the seed's rounds come every 6 to 10
months), so it is a staircase, and a quadratic over a window holding a single step overshoots
(S' < 0 right after a step up) and opens and closes windows that are artefacts of the steps. 24
months hold three or more rounds, so the fit sees the staircase's curvature, not one step; the
price is a later roll-over (about a year). The trend's S' is per year, S'' per year², in the
series' own unit (cents or ticks); floats, as all of ``exchange.postmortem.trend`` (analysis, not
ledger).

**Times** are int64 ns since the session's epoch (the sample times: midnight of the first of
each month); dates where the session has an epoch (its configured ``start``). A window opens at
the first month whose S'' is negative after one that was not, while S' > 0; it closes at the
first later month with S' <= 0 (``None``: still open at the end of the log).

**Placement** of an event at ``t`` against a series' windows: the window that holds it
(``start <= t <= end``, or ``t >= start`` for an open one) -- ``inside``, with ``elapsed_ns`` and,
for a closed window, ``fraction_ppm`` (``end`` itself is 1,000,000: the month borrowed time ran
out; the month's events share its sample time); otherwise the latest window that closed before
``t`` -- ``after``; otherwise the first window that opens after ``t`` -- ``before``; a series
without a window: ``none``.

Pure functions over the log's events (:func:`analyse`) or a log path (:func:`from_log`); results
are typed and frozen. :func:`credit_record` turns one log into the plain, integer record a
sweep keeps per run (the cascade's steps, the order of defaults, :func:`order_held`, the
windows; docs/sweeps.md, "The credit cascade"). Deterministic: the events in log order, the
series in a fixed order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import orjson

from exchange.core import events as ev
from exchange.postmortem.trend import borrowed_time, trend
from exchange.products.index import CALIBRATIONS, DAY_NS
from exchange.store.event_store import EventStore

__all__ = [
    "CASCADE_KINDS",
    "DEFAULT_KINDS",
    "READ_KINDS",
    "SMOOTH_WINDOW_DAYS",
    "STAIRCASE_WINDOW_DAYS",
    "BorrowedTime",
    "CreditEvent",
    "Placement",
    "Series",
    "Window",
    "analyse",
    "credit_record",
    "from_log",
    "order_held",
    "place",
    "read_kinds",
    "rental_indices",
]

#: Trailing trend window of the smooth monthly series (revenue, capex, rental price), days:
#: 12 months (366 days hold the 13 firsts of month of any 12-month span, no more).
SMOOTH_WINDOW_DAYS = 366
#: Trailing trend window of the marks (staircases moving at rounds), days: 24 months.
STAIRCASE_WINDOW_DAYS = 731
#: The default-like kinds placed against the windows: the trigger, a breach, a borrower's
#: default, and the exchange's own ``Default`` (an account that missed a call).
DEFAULT_KINDS = (ev.ROUND_FAILED, ev.COVENANT_BREACHED, ev.BORROWER_DEFAULTED, ev.DEFAULT)
#: Kinds :func:`from_log` reads (and the index prints, for a session with rental indices:
#: :func:`read_kinds`).
READ_KINDS = (ev.ECONOMY_MONTH, *DEFAULT_KINDS)

#: Units of the series, by the prefix of their key.
UNITS = {
    "revenue": "cents/month",
    "mark": "cents",
    "capex": "cents/month",
    "rental_price": "ticks ($0.001)/GPU-hour",
    "index": "ticks ($0.001)/GPU-hour",
}


@dataclass(frozen=True)
class Window:
    """One borrowed-time window: from the month S'' rolled over to the month S' reached zero.

    Attributes:
        start_ns, end_ns: the sample times (ns since the epoch); ``end_ns`` None: still open.
        start, end: their dates (None without an epoch, or for an open end).
        start_period, end_period: the economy's periods (months since January 2024).
    """

    start_ns: int
    end_ns: int | None
    start: date | None
    end: date | None
    start_period: int
    end_period: int | None

    @property
    def length_ns(self) -> int | None:
        """``end_ns - start_ns``, ns (None: open)."""
        return None if self.end_ns is None else self.end_ns - self.start_ns


@dataclass(frozen=True)
class Series:
    """One monthly series of the economy, its trend and its windows.

    Attributes:
        key: ``revenue:<lab>``, ``mark:<lab>``, ``capex`` or ``rental_price``.
        label: a readable name.
        unit: the values' unit (:data:`UNITS`); S' is that per year, S'' per year².
        window_ns: the trend's trailing window, ns.
        t: sample times, ns; ``periods``: their economy periods; ``values``: ints.
        S, S1, S2: the trend at each sample (floats; NaN before a whole window).
        windows: the borrowed-time windows, in time order.
    """

    key: str
    label: str
    unit: str
    window_ns: int
    t: tuple[int, ...]
    periods: tuple[int, ...]
    values: tuple[int, ...]
    S: tuple[float, ...]
    S1: tuple[float, ...]
    S2: tuple[float, ...]
    windows: tuple[Window, ...]


@dataclass(frozen=True)
class CreditEvent:
    """A default-like event of the log (:data:`DEFAULT_KINDS`).

    Attributes:
        seq, t: the event's log seq and time (ns).
        kind: its kind; ``entity``: the economy's entity (counterparty), or the exchange
            account for a ``Default``; ``amount``: its amount (cents, as the log has it).
        period: the economy's period (None for an exchange ``Default``); ``day``: its date.
    """

    seq: int
    t: int
    kind: str
    entity: str
    amount: int | None
    period: int | None
    day: date | None


@dataclass(frozen=True)
class Placement:
    """Where an event falls against a series' borrowed time.

    Attributes:
        seq: the event's seq; ``series``: the series' key.
        where: ``before``, ``inside``, ``after`` or ``none`` (the series has no window).
        window: the window it is placed against (None for ``none``).
        elapsed_ns: ``t - window.start_ns`` (negative before; None for ``none``).
        fraction_ppm: inside a closed window, the part elapsed, ppm (0 at the roll-over,
            1,000,000 at the month S' reached zero); None otherwise.
    """

    seq: int
    series: str
    where: str
    window: Window | None
    elapsed_ns: int | None
    fraction_ppm: int | None


@dataclass(frozen=True)
class BorrowedTime:
    """Borrowed time in one log: the series, the default-like events, and every placement."""

    epoch: date | None
    labs: tuple[str, ...]
    series: tuple[Series, ...]
    events: tuple[CreditEvent, ...]
    placements: tuple[Placement, ...]

    def get(self, key: str) -> Series:
        """The series ``key`` (KeyError if absent)."""
        for s in self.series:
            if s.key == key:
                return s
        raise KeyError(key)

    def placement(self, seq: int, key: str) -> Placement:
        """The placement of event ``seq`` against series ``key`` (KeyError if absent)."""
        for p in self.placements:
            if p.seq == seq and p.series == key:
                return p
        raise KeyError((seq, key))

    @property
    def naked(self) -> str:
        """The naked lab's name (the economy's first lab)."""
        return self.labs[0]


def place(t: int, seq: int, key: str, windows: Iterable[Window]) -> Placement:
    """The placement of an event at ``t`` (ns) against ``windows`` (time order; module
    docstring): inside the window that holds it, else after the latest one closed before it,
    else before the first one after it; ``none`` without windows."""
    windows = list(windows)
    for w in windows:
        if t >= w.start_ns and (w.end_ns is None or t <= w.end_ns):
            fraction = None
            if w.end_ns is not None and w.end_ns > w.start_ns:
                fraction = (t - w.start_ns) * 1_000_000 // (w.end_ns - w.start_ns)
            return Placement(seq, key, "inside", w, t - w.start_ns, fraction)
    closed = [w for w in windows if w.end_ns is not None and w.end_ns < t]
    if closed:
        w = closed[-1]
        return Placement(seq, key, "after", w, t - w.start_ns, None)
    later = [w for w in windows if w.start_ns > t]
    if later:
        w = later[0]
        return Placement(seq, key, "before", w, t - w.start_ns, None)
    return Placement(seq, key, "none", None, None, None)


def _date(epoch: date | None, t: int | None) -> date | None:
    if epoch is None or t is None:
        return None
    return epoch + timedelta(days=t // DAY_NS)


def _series(
    key: str,
    label: str,
    window_days: int,
    t: np.ndarray,
    periods: list[int],
    values: list[int],
    epoch: date | None,
) -> Series:
    window_ns = window_days * DAY_NS
    tr = trend(t, np.asarray(values, dtype=np.float64), window_ns)
    period_at = {int(ti): p for ti, p in zip(t.tolist(), periods, strict=True)}
    windows = tuple(
        Window(
            start_ns=s,
            end_ns=e,
            start=_date(epoch, s),
            end=_date(epoch, e),
            start_period=period_at[s],
            end_period=None if e is None else period_at[e],
        )
        for s, e in borrowed_time(tr)
    )
    unit = UNITS[key.split(":")[0]]
    return Series(
        key=key,
        label=label,
        unit=unit,
        window_ns=window_ns,
        t=tuple(int(x) for x in t.tolist()),
        periods=tuple(periods),
        values=tuple(int(v) for v in values),
        S=tuple(float(x) for x in tr.S),
        S1=tuple(float(x) for x in tr.S1),
        S2=tuple(float(x) for x in tr.S2),
        windows=windows,
    )


def analyse(
    events: Iterable[ev.Event], epoch: date | None = None, rental: Iterable[str] = ()
) -> BorrowedTime | None:
    """Borrowed time from a log's events (any kinds; only ``EconomyMonth``, the prints of the
    indices ``rental`` and :data:`DEFAULT_KINDS` are read), in log order; ``epoch``: the
    session's date at t = 0 (None: no dates); ``rental``: the session's rental indices
    (:func:`rental_indices`), each a series ``index:<name>``. None if the events hold no
    ``EconomyMonth`` (a log without an economy)."""
    months: list[ev.Event] = []
    credit: list[CreditEvent] = []
    rental = tuple(rental)
    prints: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in rental}
    for e in events:
        if e.kind == ev.ECONOMY_MONTH:
            months.append(e)
        elif e.kind == ev.INDEX_PUBLISHED:
            if e.instrument in prints:
                times, values = prints[e.instrument]
                times.append(e.t)
                values.append(int(e.price))
        elif e.kind in DEFAULT_KINDS:
            data = e.data or {}
            entity = e.account if e.kind == ev.DEFAULT else e.counterparty
            credit.append(
                CreditEvent(
                    seq=e.seq,
                    t=e.t,
                    kind=e.kind,
                    entity=str(entity),
                    amount=e.amount,
                    period=data.get("period") if e.kind != ev.DEFAULT else None,
                    day=_date(epoch, e.t),
                )
            )
    if not months:
        return None
    labs = tuple(months[0].data["labs"])
    t = np.asarray([m.t for m in months], dtype=np.int64)
    periods = [int(m.data["period"]) for m in months]
    roles = ["the naked lab", "the second lab"]
    specs: list[tuple[str, str, int, list[int]]] = []
    for i, lab in enumerate(labs):
        role = roles[i] if i < len(roles) else "a lab"
        specs.append(
            (
                f"revenue:{lab}",
                f"{lab}'s revenue ({role})",
                SMOOTH_WINDOW_DAYS,
                [m.data["revenue"][lab] for m in months],
            )
        )
        specs.append(
            (
                f"mark:{lab}",
                f"{lab}'s mark ({role})",
                STAIRCASE_WINDOW_DAYS,
                [m.data["mark"][lab] for m in months],
            )
        )
    specs.append(
        ("capex", "hyperscalers' capex", SMOOTH_WINDOW_DAYS, [m.data["capex"] for m in months])
    )
    specs.append(
        (
            "rental_price",
            "open-market rental price (after the glut)",
            SMOOTH_WINDOW_DAYS,
            [m.data["rental_price"] for m in months],
        )
    )
    series = [
        _series(key, label, days, t, periods, values, epoch) for key, label, days, values in specs
    ]
    for name in rental:  # the exchange's rental index at each month's step time
        at, values = prints[name]
        if not at:
            continue
        last = np.searchsorted(np.asarray(at, dtype=np.int64), t, side="right") - 1
        keep = np.flatnonzero(last >= 0)
        if len(keep) == 0:
            continue
        series.append(
            _series(
                f"index:{name}",
                f"the exchange's {name} index (fed by the glut)",
                SMOOTH_WINDOW_DAYS,
                t[keep],
                [periods[i] for i in keep.tolist()],
                [values[last[i]] for i in keep.tolist()],
                epoch,
            )
        )
    series = tuple(series)
    placements = tuple(place(c.t, c.seq, s.key, s.windows) for c in credit for s in series)
    return BorrowedTime(epoch, labs, series, tuple(credit), placements)


def read_kinds(rental: Iterable[str]) -> tuple[str, ...]:
    """The kinds :func:`analyse` needs from a log whose rental indices are ``rental``:
    :data:`READ_KINDS`, and ``IndexPublished`` if there is one (a log without them is not
    read for its prints)."""
    return (*READ_KINDS, ev.INDEX_PUBLISHED) if tuple(rental) else READ_KINDS


def rental_indices(store: EventStore) -> tuple[str, ...]:
    """The rental indices of the session's configuration (a calibration's name, or a spec's,
    of kind ``rental``), in its order, if it has the credit economy (the glut feeds them only
    then); () otherwise or for a configuration that cannot be read."""
    config = store.session.get("config")
    try:
        data = orjson.loads(config) if config else None
        if not isinstance(data, dict) or data.get("economy") is None:
            return ()
        names: list[str] = []
        for entry in data.get("indices") or ():
            spec = entry.get("spec")
            if spec is not None:
                if spec.get("kind") == "rental":
                    names.append(str(spec["name"]))
            elif entry.get("calibration") in CALIBRATIONS:
                calibrated = CALIBRATIONS[entry["calibration"]]
                if calibrated.kind == "rental":
                    names.append(calibrated.name)
        return tuple(names)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return ()


def _epoch(store: EventStore) -> date | None:
    config = store.session.get("config")
    try:
        start = orjson.loads(config).get("start") if config else None
        return date.fromisoformat(start) if isinstance(start, str) else None
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        return None


def from_log(
    db: str | Path | EventStore, until: int | None = None, *, checked: bool = True
) -> BorrowedTime | None:
    """:func:`analyse` of the log ``db`` (a path or an open store) up to event ``until``
    (None: all of it), dated from the session's configured ``start``. None: no economy."""
    if isinstance(db, EventStore):
        rental = rental_indices(db)
        return analyse(db.events(1, until, kind=read_kinds(rental)), _epoch(db), rental)
    with EventStore.open(db, mode="r", checked=checked) as store:
        rental = rental_indices(store)
        return analyse(store.events(1, until, kind=read_kinds(rental)), _epoch(store), rental)


# ---------------------------------------------------------------------- one run's credit record
#: Kinds :func:`credit_record` reads besides the months: the cascade's steps.
CASCADE_KINDS = (
    ev.ROUND_FAILED,
    ev.COMMITMENT_PULLED,
    ev.COVENANT_BREACHED,
    ev.BORROWER_DEFAULTED,
    ev.REFINANCING_FAILED,
    ev.SPREAD_GAPPED,
    ev.EQUITY_MARKED,
    ev.CAPACITY_ACQUIRED,
)


def _neoclouds(store: EventStore) -> tuple[list[str], str | None, str | None]:
    """The neoclouds of the session's economy (configuration order), the concentrated one
    (largest share of its contracts owed by the naked lab) and the diversified one (smallest);
    the first in configuration order on a tie. (None, None) without them."""
    config = store.session.get("config")
    try:
        economy = (orjson.loads(config) or {}).get("economy") if config else None
        neos = [(str(n["name"]), float(n["naked_share"])) for n in economy["neoclouds"]]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return [], None, None
    if not neos:
        return [], None, None
    names = [name for name, _ in neos]
    concentrated = max(neos, key=lambda n: n[1])[0]  # max/min keep the first on a tie
    diversified = min(neos, key=lambda n: n[1])[0]
    return names, concentrated, diversified if diversified != concentrated else None


def _step(e: ev.Event, epoch: date | None) -> dict:
    day = _date(epoch, e.t)
    return {
        "entity": str(e.counterparty),
        "period": (e.data or {}).get("period"),
        "date": None if day is None else day.isoformat(),
        "t": e.t,
        "seq": e.seq,
    }


def order_held(credit: dict) -> bool:
    """Whether a run's cascade followed the seed's order, from its :func:`credit_record`: the
    first ``RoundFailed`` (the trigger) comes before the first ``CommitmentPulled``, which comes
    before the first ``CovenantBreached`` of a neocloud; the concentrated neocloud breaches, and
    the diversified one breaches only after it, if at all, and never defaults (it survives);
    then (steps 4-6) a neocloud's first ``RefinancingFailed`` or ``SpreadGapped`` (its loan
    cannot roll, its spread gaps) after that first breach, the first ``EquityMarked`` after
    it, and the first ``CapacityAcquired`` after that. A neocloud's spread may gap earlier,
    on its customer's failed round (the contagion of docs/credit.md): that gap is the market
    seeing the trigger, not step 4, so step 4 counts only records after the first breach.
    "Before" is log order (seq): a pull-back and the breach it causes share a month, and so do
    the steps after it.

    The one definition: the sweep's records (``held``) and the tests use it."""
    trigger, pull = credit.get("trigger"), credit.get("first_pullback")
    if trigger is None or pull is None or not trigger["seq"] < pull["seq"]:
        return False
    neos = set(credit.get("neoclouds") or ())
    breaches = {k: v for k, v in (credit.get("first_breach") or {}).items() if k in neos}
    if not breaches or min(b["seq"] for b in breaches.values()) <= pull["seq"]:
        return False
    concentrated, diversified = credit.get("concentrated"), credit.get("diversified")
    if concentrated not in breaches or diversified is None:
        return False
    other = breaches.get(diversified)
    if other is not None and other["seq"] < breaches[concentrated]["seq"]:
        return False
    if diversified in (credit.get("first_default") or {}):
        return False
    first = min(b["seq"] for b in breaches.values())
    step4 = [
        v["seq"]
        for key in ("first_refinancing_failed", "first_gap")
        for k, v in (credit.get(key) or {}).items()
        if k in neos and v["seq"] > first
    ]
    marked, acquired = credit.get("first_equity_marked"), credit.get("first_acquired")
    if not step4 or marked is None or acquired is None:
        return False
    return min(b["seq"] for b in breaches.values()) < min(step4) < marked["seq"] < acquired["seq"]


def credit_record(store: EventStore) -> dict | None:
    """The credit economy's outcome of one log (an open store), for a sweep's run record; None
    if the log has no ``EconomyMonth`` (no economy). Integers only (periods are the economy's
    months since January 2024, ``t`` ns since the epoch, ``seq`` the event's), dates as ISO
    text (None without an epoch):

    - ``trigger``: the first ``RoundFailed`` (``entity`` the lab, ``period``, ``date``, ``t``,
      ``seq``), None if no round failed; ``first_pullback``: the first ``CommitmentPulled``
      (the same keys, ``entity`` the lab, plus ``provider``);
    - ``first_breach``, ``first_default``: entity -> the first ``CovenantBreached`` /
      ``BorrowerDefaulted`` of it (``period``, ``date``, ``t``, ``seq``);
    - ``defaults``: the economy's entities in the order they defaulted (``BorrowerDefaulted``;
      the exchange's own defaults are the record's ``defaults``); ``recovery``: entity -> the
      ``recovery_ppm`` of its first ``BorrowerDefaulted``;
    - steps 4-6: ``first_refinancing_failed`` and ``first_gap``: entity -> its first
      ``RefinancingFailed`` / ``SpreadGapped`` (as ``first_breach``); ``first_equity_marked``
      and ``first_acquired``: the first ``EquityMarked`` / ``CapacityAcquired`` (the
      ``trigger``'s keys, ``entity`` the marked entity / the defaulted neocloud; the
      acquisition also ``buyer``), None if none;
    - ``neoclouds``, ``concentrated``, ``diversified``: from the session's configuration
      (the largest and smallest share of contracts owed by the naked lab);
    - ``held``: :func:`order_held`;
    - ``windows``: series key (:class:`Series`) -> its borrowed-time windows, each
      ``start_period``, ``end_period``, ``start``, ``end``, ``start_ns``, ``end_ns``,
      ``months`` (``end_period - start_period``) and ``length_ns`` (None while open).
    """
    bt = from_log(store)
    if bt is None:
        return None
    names, concentrated, diversified = _neoclouds(store)
    trigger = pull = marked = acquired = None
    breach: dict[str, dict] = {}
    default: dict[str, dict] = {}
    refi: dict[str, dict] = {}
    gap: dict[str, dict] = {}
    recovery: dict[str, int] = {}
    for e in store.events(1, None, kind=CASCADE_KINDS):
        if e.kind == ev.ROUND_FAILED and trigger is None:
            trigger = _step(e, bt.epoch)
        elif e.kind == ev.COMMITMENT_PULLED and pull is None:
            pull = {**_step(e, bt.epoch), "provider": (e.data or {}).get("provider")}
        elif e.kind == ev.COVENANT_BREACHED:
            breach.setdefault(str(e.counterparty), _step(e, bt.epoch))
        elif e.kind == ev.BORROWER_DEFAULTED:
            if str(e.counterparty) not in default:
                default[str(e.counterparty)] = _step(e, bt.epoch)
                recovery[str(e.counterparty)] = (e.data or {}).get("recovery_ppm")
        elif e.kind == ev.REFINANCING_FAILED:
            refi.setdefault(str(e.counterparty), _step(e, bt.epoch))
        elif e.kind == ev.SPREAD_GAPPED:
            gap.setdefault(str(e.counterparty), _step(e, bt.epoch))
        elif e.kind == ev.EQUITY_MARKED and marked is None:
            marked = _step(e, bt.epoch)
        elif e.kind == ev.CAPACITY_ACQUIRED and acquired is None:
            acquired = {**_step(e, bt.epoch), "buyer": (e.data or {}).get("buyer")}
    for d in (*breach.values(), *default.values(), *refi.values(), *gap.values()):
        del d["entity"]
    credit = {
        "trigger": trigger,
        "first_pullback": pull,
        "first_breach": breach,
        "first_default": default,
        "defaults": list(default),  # insertion order: the log's
        "recovery": recovery,
        "first_refinancing_failed": refi,
        "first_gap": gap,
        "first_equity_marked": marked,
        "first_acquired": acquired,
        "neoclouds": names,
        "concentrated": concentrated,
        "diversified": diversified,
        "windows": {
            s.key: [
                {
                    "start_period": w.start_period,
                    "end_period": w.end_period,
                    "start": None if w.start is None else w.start.isoformat(),
                    "end": None if w.end is None else w.end.isoformat(),
                    "start_ns": w.start_ns,
                    "end_ns": w.end_ns,
                    "months": None if w.end_period is None else w.end_period - w.start_period,
                    "length_ns": w.length_ns,
                }
                for w in s.windows
            ]
            for s in bt.series
        },
    }
    credit["held"] = order_held(credit)
    return credit
