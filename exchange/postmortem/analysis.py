"""Post-mortem facts: who was called for how much, when, who failed, and who paid for it.

:func:`facts` reads an event log -- nothing else: no engine, no scenario code, no randomness --
and returns a :class:`PostMortem`, plain dataclasses of integers and strings:

* every **collateral call** (amount, deadline, what came of it: cured, reduced, defaulted, or
  still open at the end of the log) and every **default** (the call it missed, the reason,
  the positions and cash the account held);
* every **rating change** (``RatingChanged``: who, from which rating to which, at what capital
  ratio, and how much it moved the account's initial margin);
* each **close-out** and its **waterfall**, step by step (close-out fills, auction awards,
  the defaulter's own default-fund contribution, the insurance fund, the other members'
  contributions, auto-deleveraging, haircuts), with what each step paid and who bore it;
* per account: cash at the start and at the end, deposits, fees, funding, premiums received
  and paid, realised swap payouts, variation margin, default-fund contribution left, and what
  it lost to other accounts' defaults;
* the **funds used** (insurance fund, default fund, haircuts, auto-deleveraging) and a
  **who-owes-whom** view: for each defaulter, which counterparty bore how much; and the open
  positions by pair of accounts, from the trades (fills name both sides) and the hand-overs
  of a close-out.

Units: money in the settlement currency's minor units (cents), always ``int``; times ``t`` in
simulated nanoseconds since the session epoch; ``seq`` the event's sequence number;
quantities in lots. A **day** is ``t // DAY_NS`` (the session starts on day 0). Signs: an
amount an account *lost*, *paid* or *bore* is reported as a positive number in fields whose
name says so (``premiums_paid``, ``lost_to_defaults``, ``WaterfallStep.paid``); net fields
(``funding``, ``variation_margin``, ``fees``) keep the ledger's sign (negative = paid).

Reading: one pass over the typed columns of the events that move money or positions (the
store's ``(kind)`` index), plus the JSON payload of the few kinds whose facts are in
``data`` (calls, defaults, haircuts, listings, the session start). A million-event log whose
events are mostly orders reads in a few seconds. ``facts(db, until=N)`` sees the log as it was
just after event ``N``.

This module's API is stable: sweeps import :func:`facts` and :meth:`PostMortem.summary`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from exchange.core import events as ev
from exchange.store.event_store import EventStore

DAY_NS = 86_400 * 10**9

#: Call outcomes.
CURED, REDUCED, INCREASED, DEFAULTED, OPEN = "cured", "reduced", "increased", "defaulted", "open"

#: Waterfall step names (:attr:`WaterfallStep.step`), in the order the engine runs them.
STEP_BOOK = "book"  # close-out order filled on the book
STEP_AUCTION = "auction"  # lots awarded to a standing bidder
STEP_OWN = "own"  # the defaulter's own default-fund contribution
STEP_INSURANCE = "insurance"  # the insurance fund
STEP_DEFAULT_FUND = "default_fund"  # another member's default-fund contribution
STEP_ADL = "adl"  # lots auto-deleveraged to an opposite holder (positions only)
STEP_HAIRCUT_ADL = "haircut_adl"  # a deleveraged holder pays at the bankruptcy price
STEP_HAIRCUT_VM = "haircut_vm_gains"  # variation-margin gains haircut
STEPS = (
    STEP_BOOK,
    STEP_AUCTION,
    STEP_OWN,
    STEP_INSURANCE,
    STEP_DEFAULT_FUND,
    STEP_ADL,
    STEP_HAIRCUT_ADL,
    STEP_HAIRCUT_VM,
)

#: The kinds whose typed columns the scan folds.
_SCANNED = (
    ev.ACCOUNT_OPENED,
    ev.INSTRUMENT_LISTED,
    ev.DEPOSIT,
    ev.WITHDRAWAL,
    ev.FEE,
    ev.FILL,
    ev.FUNDING_PAID,
    ev.PREMIUM_PAID,
    ev.SWAP_SETTLED,
    ev.INSTRUMENT_EXPIRED,
    ev.VARIATION_MARGIN,
    ev.COLLATERAL_CALL,
    ev.CALL_INCREASED,
    ev.CALL_REDUCED,
    ev.CALL_CURED,
    ev.DEFAULT,
    ev.POOL_FUNDED,
    ev.FUND_CONTRIBUTION,
    ev.CLOSE_OUT,
    ev.AUCTION_AWARD,
    ev.DELEVERAGED,
    ev.WATERFALL_DRAW,
    ev.DEFAULT_FUND_LOSS,
    ev.HAIRCUT,
    ev.RATING_CHANGED,
    # bilateral clearing (exchange/risk/bilateral.py) moves cash and swap positions with these
    # kinds: see the ``on_*`` handlers below
    ev.COLLATERAL_POSTED,
    ev.PROTECTION_TERMINATED,
    ev.COLLATERAL_APPLIED,
    ev.TERMINATION_PAID,
    ev.RECOVERY_PAID,
    ev.REHEDGED,
)
#: The kinds whose ``data`` payload the facts need.
_WITH_DATA = (
    ev.SESSION_STARTED,
    ev.INSTRUMENT_LISTED,
    ev.COLLATERAL_CALL,
    ev.CALL_INCREASED,
    ev.DEFAULT,
    ev.HAIRCUT,
    ev.RATING_CHANGED,
    ev.RECOVERY_PAID,  # data: from_estate (the part paid out of the defaulter's exchange cash)
)
#: Steps of a close-out that pay toward its shortfall (the defaulter's cash rises by each).
_FUND_KINDS = (ev.WATERFALL_DRAW, ev.DEFAULT_FUND_LOSS, ev.HAIRCUT)


# ---------------------------------------------------------------------- the facts
@dataclass
class Call:
    """One collateral call.

    Attributes:
        account: the account called.
        seq, t: the ``CollateralCall`` event.
        amount: what was first called (restores initial margin), minor units.
        deadline: when it had to be met (ns), from the event's data (None if absent).
        im, mm, equity: initial and maintenance margin and equity when called (None if absent).
        reductions: ``(seq, t, still_due)`` of every ``CallReduced``.
        increases: ``(seq, t, new_amount, reason)`` of every ``CallIncreased`` (the call
            raised to a grown shortfall; reason: ``variation margin`` or ``initial margin``).
        outcome: ``cured``, ``defaulted``, ``reduced`` / ``increased`` (open at the end of the
            log, smaller / larger than first called) or ``open``.
        outcome_seq, outcome_t: the ``CallCured`` / ``Default`` event (None while open).
        due: what was still due at the outcome (0 when cured; at a default, the amount last
            called), or at the end of the log.
    """

    account: str
    seq: int
    t: int
    amount: int
    deadline: int | None = None
    im: int | None = None
    mm: int | None = None
    equity: int | None = None
    reductions: list[tuple[int, int, int]] = field(default_factory=list)
    increases: list[tuple[int, int, int, str]] = field(default_factory=list)
    outcome: str = OPEN
    outcome_seq: int | None = None
    outcome_t: int | None = None
    due: int = 0


@dataclass
class RatingChange:
    """One ``RatingChanged``.

    Attributes:
        seq, t: the event.
        account: the account rated.
        from_rating, to_rating: the rating's names before and after.
        capital_ratio_ppm: the capital ratio that moved it (ppm, rounded down; None if absent).
        reason: ``downgrade`` or ``upgrade``.
        im_change: the account's initial margin at the new rating less at the old one, at
            that cycle, minor units (None if absent): what the change added to its margin.
    """

    seq: int
    t: int
    account: str
    from_rating: str
    to_rating: str
    capital_ratio_ppm: int | None
    reason: str
    im_change: int | None


def _open_outcome(call: Call) -> str:
    """An open call's outcome: ``increased`` / ``reduced`` when it stands above / below the
    amount first called, else ``open``."""
    if call.due > call.amount:
        return INCREASED
    return REDUCED if call.due < call.amount else OPEN


@dataclass
class Default:
    """One default.

    Attributes:
        account, seq, t: the ``Default`` event.
        missed_call: the amount of the call it missed (the event's amount), minor units.
        reason: the event's reason (``missed call``, ...).
        call_seq: the seq of the call it missed (None if there was no open call).
        cash: the account's cash just before the default, minor units.
        positions: its non-zero positions just before the default, lots by instrument.
    """

    account: str
    seq: int
    t: int
    missed_call: int
    reason: str
    call_seq: int | None
    cash: int
    positions: dict[str, int]


@dataclass
class WaterfallStep:
    """One step of a close-out.

    Attributes:
        seq, t, kind: the event (``Fill``, ``AuctionAward``, ``WaterfallDraw``,
            ``DefaultFundLoss``, ``Deleveraged``, ``Haircut``).
        defaulter: whose close-out it belongs to.
        step: one of :data:`STEPS`.
        paid: what it paid toward the defaulter's shortfall, minor units (>= 0; 0 for the steps
            that move positions: ``book``, ``auction``, ``adl``).
        bearer: the account that bore ``paid`` (the defaulter for ``own``, the member for
            ``default_fund``, the account haircut), or that took the lots (``book``:
            the trade's other side; ``auction``: the bidder; ``adl``: the receiver); None for
            the insurance fund.
        pool: ``insurance`` or ``default_fund`` for the steps paid out of a pool, else None.
        instrument, qty, price: for the steps that move lots: the instrument, lots the
            ``bearer`` received (signed, its side), and the price (ticks).
        value: ``AuctionAward``/``Deleveraged``: the event's amount (the variation-margin
            basis moved: the lots' value at that price), minor units; else 0.
    """

    seq: int
    t: int
    kind: str
    defaulter: str
    step: str
    paid: int
    bearer: str | None
    pool: str | None = None
    instrument: str | None = None
    qty: int = 0
    price: int | None = None
    value: int = 0


@dataclass
class CloseOut:
    """The close-out of one defaulter and the waterfall that covered its loss.

    Attributes:
        defaulter, default_seq, t: the ``Default`` event.
        shortfall: how far below zero the defaulter's cash was once its positions were closed
            out and marked (before the first fund paid), minor units, >= 0.
        covered: what the waterfall paid toward it (the sum of ``paid`` over the steps).
        uncovered: what was left on the defaulter (max(0, -cash) after the last step).
        steps: in event order.

    ``shortfall == covered + uncovered`` whenever the close-out is complete in the log.
    """

    defaulter: str
    default_seq: int
    t: int
    shortfall: int = 0
    covered: int = 0
    uncovered: int = 0
    steps: list[WaterfallStep] = field(default_factory=list)

    def paid_by_step(self) -> dict[str, int]:
        """What each step name paid, minor units (only steps that occurred)."""
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.step] = out.get(s.step, 0) + s.paid
        return out

    def lots_by_step(self) -> dict[str, int]:
        """Lots moved by the ``book``, ``auction`` and ``adl`` steps (absolute)."""
        out: dict[str, int] = {}
        for s in self.steps:
            if s.qty:
                out[s.step] = out.get(s.step, 0) + abs(s.qty)
        return out


@dataclass
class FundsUsed:
    """What the defaults cost the mutualised resources, minor units (lots for ``*_lots``).

    Attributes:
        own_contributions: defaulters' own default-fund contributions drawn.
        insurance: the insurance fund drawn.
        default_fund: the other members' default-fund contributions lost.
        haircut_adl: haircuts on deleveraged holders (at the bankruptcy price).
        haircut_vm_gains: variation-margin gains haircut.
        adl_lots, adl_value: lots auto-deleveraged and their value at the mark.
        auction_lots: lots awarded in default auctions.
        book_lots: lots of close-out orders filled on the book.
    """

    own_contributions: int = 0
    insurance: int = 0
    default_fund: int = 0
    haircut_adl: int = 0
    haircut_vm_gains: int = 0
    adl_lots: int = 0
    adl_value: int = 0
    auction_lots: int = 0
    book_lots: int = 0

    @property
    def haircuts(self) -> int:
        return self.haircut_adl + self.haircut_vm_gains

    @property
    def total(self) -> int:
        """Everything paid toward defaulters' shortfalls."""
        return self.own_contributions + self.insurance + self.default_fund + self.haircuts


@dataclass
class AccountFacts:
    """One account's money, minor units.

    Attributes:
        start_cash: cash at the end of the instant the account was opened (its capital once
            set up: deposits less its default-fund contribution).
        final_cash: cash at the end of the log (or at ``until``).
        deposited, withdrawn: external money in and out (both >= 0).
        fees: net fees (negative = paid).
        funding: net perpetual funding (negative = paid).
        premiums_received, premiums_paid: swap premiums (both >= 0).
        premiums_by_instrument: net premiums per swap series.
        payouts_received, payouts_paid: realised swap payouts at maturity (``SwapSettled``;
            both >= 0).
        variation_margin: net variation margin received.
        contribution: default-fund money put in (>= 0); contribution_left: what is left of it.
        calls: number of collateral calls; called: their total amount.
        defaulted: whether it defaulted (by the end of the log).
        lost_to_defaults: what it lost to other accounts' defaults (bilateral: re-hedge and
            termination paid less collateral applied and recovery; cleared: default-fund losses and
            haircuts), by defaulter (>= 0).
        positions: non-zero positions at the end, lots by instrument.
    """

    name: str
    start_cash: int = 0
    final_cash: int = 0
    deposited: int = 0
    withdrawn: int = 0
    fees: int = 0
    funding: int = 0
    premiums_received: int = 0
    premiums_paid: int = 0
    premiums_by_instrument: dict[str, int] = field(default_factory=dict)
    payouts_received: int = 0
    payouts_paid: int = 0
    variation_margin: int = 0
    contribution: int = 0
    contribution_left: int = 0
    calls: int = 0
    called: int = 0
    defaulted: bool = False
    lost_to_defaults: dict[str, int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Total lost to other accounts' defaults."""
        return sum(self.lost_to_defaults.values())


@dataclass
class Borne:
    """What one counterparty bore for one defaulter.

    Attributes:
        defaulter, counterparty: the two accounts.
        default_fund: its default-fund contribution lost; haircut: cash haircut (both >= 0).
        lots_taken: lots it received in the close-out (auction or deleveraging, absolute).
        value_taken: the value of those lots at the price they moved (the events' amounts).
    """

    defaulter: str
    counterparty: str
    default_fund: int = 0
    haircut: int = 0
    lots_taken: int = 0
    value_taken: int = 0

    @property
    def total(self) -> int:
        """Money it bore: default-fund loss plus haircut."""
        return self.default_fund + self.haircut


@dataclass
class PairPosition:
    """An open position between two accounts: ``long`` holds ``qty`` lots (> 0) of
    ``instrument`` against ``short``. Built from fills (taker and maker) and from close-out
    hand-overs (``AuctionAward``, ``Deleveraged``: receiver against the defaulter), netted per
    pair; expired instruments drop out. The exchange is the legal counterparty of every trade:
    this is attribution -- who traded with whom -- not a bilateral claim."""

    instrument: str
    long: str
    short: str
    qty: int


@dataclass
class WhoOwesWhom:
    """``borne``: per defaulter, per counterparty, what it bore (sorted by defaulter's default
    order, then by total borne, largest first, then name). ``positions``: open pair positions
    (sorted by instrument, then qty descending, then names)."""

    borne: list[Borne] = field(default_factory=list)
    positions: list[PairPosition] = field(default_factory=list)


@dataclass
class Instrument:
    """A listing: ``kind`` (spot, perp, rvs), ``seq``/``t`` listed, its spec (the listing's
    data), and for a swap its ``maturity`` date and ``maturity_t`` (ns, None without an epoch)
    and ``floor``; ``expired_t`` when it expired in the log."""

    name: str
    kind: str
    seq: int
    t: int
    spec: dict[str, Any]
    maturity: date | None = None
    maturity_t: int | None = None
    floor: int | None = None
    expired_t: int | None = None


@dataclass
class PostMortem:
    """Everything :func:`facts` found (see the module doc for units).

    Attributes:
        path: the log; scenario, seed, config: the session's (config parsed from the
            ``SessionStarted`` event, {} if absent).
        until: the last seq read; last_seq: the log's last seq; t_end: the t of event ``until``.
        epoch: the session's calendar date at t = 0 (config ``start``, else derived from a
            swap's listing date), None if unknown.
        accounts: by name (sorted).
        instruments: by name (listing order).
        calls, defaults, closeouts: in seq order.
        funds: the totals over every close-out.
        who_owes_whom: see :class:`WhoOwesWhom`.
        cash_paths: for the accounts asked for with ``track_cash``, every change of cash as
            ``(seq, t, cash after)``, starting with ``(0, 0, 0)``.
        ratings: every rating change, in seq order.
    """

    path: str
    scenario: str
    seed: int
    config: dict[str, Any]
    until: int
    last_seq: int
    t_end: int
    epoch: date | None
    accounts: dict[str, AccountFacts]
    instruments: dict[str, Instrument]
    calls: list[Call]
    defaults: list[Default]
    closeouts: list[CloseOut]
    funds: FundsUsed
    who_owes_whom: WhoOwesWhom
    cash_paths: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    ratings: list[RatingChange] = field(default_factory=list)

    # ------------------------------------------------------------ views
    @property
    def defaulted(self) -> bool:
        return bool(self.defaults)

    @property
    def first_default(self) -> Default | None:
        return self.defaults[0] if self.defaults else None

    def calls_by_account(self) -> dict[str, list[Call]]:
        """Calls grouped by account (accounts in name order, calls in seq order)."""
        out: dict[str, list[Call]] = {}
        for call in sorted(self.calls, key=lambda c: (c.account, c.seq)):
            out.setdefault(call.account, []).append(call)
        return out

    def losses(self) -> dict[str, int]:
        """What each account lost to other accounts' defaults (only accounts that lost)."""
        return {n: a.lost for n, a in self.accounts.items() if a.lost}

    def day(self, t: int) -> int:
        """The session day of ``t`` (day 0 starts at t = 0)."""
        return t // DAY_NS

    def date_of(self, t: int) -> date | None:
        """The calendar date of ``t``, if the session has an epoch."""
        return None if self.epoch is None else self.epoch + timedelta(days=t // DAY_NS)

    def summary(self) -> dict[str, Any]:
        """One flat row for sweeps: scalars only (ints, strs, bools, None), plus
        ``loss.<account>`` for each account that lost to a default."""
        first = self.first_default
        row: dict[str, Any] = {
            "defaulted": self.defaulted,
            "defaults": len(self.defaults),
            "first_default_account": first.account if first else None,
            "first_default_seq": first.seq if first else None,
            "first_default_t": first.t if first else None,
            "first_default_day": self.day(first.t) if first else None,
            "calls": len(self.calls),
            "called": sum(c.amount for c in self.calls),
            "calls_cured": sum(c.outcome == CURED for c in self.calls),
            "calls_defaulted": sum(c.outcome == DEFAULTED for c in self.calls),
            "shortfall": sum(c.shortfall for c in self.closeouts),
            "uncovered": sum(c.uncovered for c in self.closeouts),
            "own_contributions_used": self.funds.own_contributions,
            "insurance_used": self.funds.insurance,
            "default_fund_used": self.funds.default_fund,
            "haircuts": self.funds.haircuts,
            "adl_lots": self.funds.adl_lots,
            "losses": sum(self.losses().values()),
        }
        for name, lost in sorted(self.losses().items()):
            row[f"loss.{name}"] = lost
        return row


# ---------------------------------------------------------------------- the scan
def facts(
    db: str | Path | EventStore,
    until: int | None = None,
    *,
    track_cash: Iterable[str] = (),
    checked: bool = True,
) -> PostMortem:
    """The post-mortem facts of the log ``db`` (a path or an open :class:`EventStore`), as of
    just after event ``until`` (None: the whole log).

    ``track_cash``: account names whose every cash change to record in
    :attr:`PostMortem.cash_paths` (for charts). ``checked``: read ``db`` (a path) with the
    store's checked reads (:meth:`EventStore.events`); False only for a log the caller has
    just written itself.

    Raises:
        FileNotFoundError: no file at ``db``.
        exchange.store.event_store.StoreError: not a gpuex event store.
        ValueError: ``until`` outside ``1..last_seq`` (or the log is empty).
    """
    if isinstance(db, EventStore):
        return _facts(db, until, set(track_cash))
    with EventStore.open(db, mode="r", checked=checked) as store:
        return _facts(store, until, set(track_cash))


class BadRequest(ValueError):
    """A report or post-mortem asked of a log for what it does not hold (an ``until`` outside
    it, an unknown account): the caller's mistake, not damage."""


def check_until(store: EventStore, until: int | None) -> int:
    """``until`` resolved against the log (None: its last seq); :class:`BadRequest` if
    outside it."""
    last = store.last_seq
    if last < 1:
        raise BadRequest(f"{store.path}: the log is empty")
    if until is None:
        return last
    if not 1 <= until <= last:
        raise BadRequest(f"--until {until} is outside the log (seqs 1..{last})")
    return until


def _epoch(config: dict[str, Any], instruments: dict[str, Instrument]) -> date | None:
    start = config.get("start")
    if isinstance(start, str):
        try:
            return date.fromisoformat(start)
        except ValueError:
            pass
    for info in instruments.values():
        listed = info.spec.get("listed")
        if isinstance(listed, str):
            try:
                return date.fromisoformat(listed) - timedelta(days=info.t // DAY_NS)
            except ValueError:
                continue
    return None


def _snake(kind: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in kind).lstrip("_")


class _Scan:
    """The running state of the one pass."""

    def __init__(self, data: dict[int, dict], track: set[str]) -> None:
        self.data = data
        self.track = track
        self.cash: dict[str, int] = {}
        self.accounts: dict[str, AccountFacts] = {}
        self.opened_t: dict[str, int] = {}
        self.pending_start: list[str] = []
        self.positions: dict[str, dict[str, int]] = {}
        # (instrument, account) -> counterparty -> the account's lots against it
        self.pairs: dict[tuple[str, str], dict[str, int]] = {}
        self.instruments: dict[str, Instrument] = {}
        self.calls: list[Call] = []
        self.ratings: list[RatingChange] = []
        self.open_call: dict[str, Call] = {}
        self.defaults: list[Default] = []
        self.closeouts: list[CloseOut] = []
        self.closeout_of: dict[str, CloseOut] = {}  # the latest close-out of each defaulter
        self.closeout_orders: dict[int, CloseOut] = {}  # close-out order id -> its close-out
        self.awaiting_funds: dict[str, CloseOut] = {}  # shortfall not yet measured
        self.borne: dict[tuple[str, str], Borne] = {}
        self.funds = FundsUsed()
        self.paths: dict[str, list[tuple[int, int, int]]] = {n: [(0, 0, 0)] for n in track}
        self.t = 0
        # bilateral: account -> the defaulter whose contract with it was last terminated (its
        # re-hedge, paid to a dealer, is a loss to that default)
        self.terminated_by: dict[str, str] = {}

    # -- helpers
    def credit(self, seq: int, t: int, name: str, amount: int) -> None:
        if not amount:
            return
        cash = self.cash.get(name, 0) + amount
        self.cash[name] = cash
        if name in self.track:
            self.paths[name].append((seq, t, cash))

    def account(self, name: str) -> AccountFacts:
        facts_ = self.accounts.get(name)
        if facts_ is None:  # an event naming an account never opened: keep it anyway
            facts_ = self.accounts[name] = AccountFacts(name)
            self.cash.setdefault(name, 0)
            self.positions.setdefault(name, {})
        return facts_

    def move(
        self, instrument: str, receiver: str, giver: str, delta: int, novation: bool = False
    ) -> None:
        """``receiver`` gets ``delta`` lots from ``giver``: positions, and the pair book --
        as a trade between the two, or (``novation``, a close-out) with the receiver stepping
        into the giver's (the defaulter's) pair positions."""
        for name, sign in ((receiver, 1), (giver, -1)):
            self.account(name)
            held = self.positions[name]
            q = held.get(instrument, 0) + sign * delta
            if q:
                held[instrument] = q
            else:
                held.pop(instrument, None)
        if novation:
            self.novate(instrument, receiver, giver, delta)
        else:
            self.pair_add(instrument, receiver, giver, delta)

    def pair_add(self, instrument: str, a: str, b: str, delta: int) -> None:
        """``a`` receives ``delta`` lots from ``b`` (pair book, both directions)."""
        for x, y, d in ((a, b, delta), (b, a, -delta)):
            book = self.pairs.setdefault((instrument, x), {})
            q = book.get(y, 0) + d
            if q:
                book[y] = q
            else:
                book.pop(y, None)

    def novate(self, instrument: str, receiver: str, defaulter: str, delta: int) -> None:
        """The receiver takes over ``delta`` lots of the defaulter's pair positions: its own
        position against the defaulter first (it is closed), then the other counterparties'
        in name order; anything the pair book cannot place stays a trade with the defaulter."""
        book = self.pairs.get((instrument, defaulter), {})
        left = delta
        for other in sorted(book, key=lambda c: (c != receiver, c)):
            q = book.get(other, 0)
            if not left:
                break
            if q * left <= 0:
                continue
            take = min(abs(q), abs(left)) * (1 if left > 0 else -1)
            self.pair_add(instrument, other, defaulter, take)  # the defaulter's leg is gone
            if other != receiver:
                self.pair_add(instrument, receiver, other, take)  # the receiver's is new
            left -= take
        if left:
            self.pair_add(instrument, receiver, defaulter, left)

    def advance(self, t: int) -> None:
        """Time moves on: settle what is measured at the end of an instant."""
        if self.pending_start:
            keep = []
            for name in self.pending_start:
                if self.opened_t[name] < t:
                    self.accounts[name].start_cash = self.cash.get(name, 0)
                else:
                    keep.append(name)
            self.pending_start = keep
        for name in [n for n, c in self.awaiting_funds.items() if c.t < t]:
            self.measure_shortfall(self.awaiting_funds.pop(name))
        self.t = t

    def measure_shortfall(self, closeout: CloseOut) -> None:
        closeout.shortfall = closeout.uncovered = max(0, -self.cash.get(closeout.defaulter, 0))

    def step(self, closeout: CloseOut, step: WaterfallStep) -> None:
        closeout.steps.append(step)
        closeout.covered += step.paid

    def bear(self, defaulter: str, who: str) -> Borne:
        key = (defaulter, who)
        borne = self.borne.get(key)
        if borne is None:
            borne = self.borne[key] = Borne(defaulter, who)
        return borne

    def closeout_for(self, defaulter: str, seq: int, t: int) -> CloseOut:
        closeout = self.closeout_of.get(defaulter)
        if closeout is None:  # a waterfall step without a Default in the log: keep it
            closeout = CloseOut(defaulter, seq, t)
            self.closeout_of[defaulter] = closeout
            self.closeouts.append(closeout)
        return closeout

    def fund_step(self, defaulter: str) -> None:
        """The first step that pays toward a shortfall fixes the shortfall."""
        closeout = self.awaiting_funds.pop(defaulter, None)
        if closeout is not None:
            self.measure_shortfall(closeout)

    # -- the rows
    def run(self, rows: Iterable[tuple]) -> tuple[int, int]:
        handlers = {kind: getattr(self, "on_" + _snake(kind)) for kind in _SCANNED}
        last_seq, last_t = 0, 0
        for row in rows:
            seq, t, kind, instrument, account, order_id, side, price, qty, amount, cp, cp_oid = row
            if t != self.t:
                self.advance(t)
            last_seq, last_t = seq, t
            handlers[kind](
                seq, t, instrument, account, order_id, side, price, qty, amount, cp, cp_oid
            )
        self.advance(last_t + 1)
        return last_seq, last_t

    def on_account_opened(self, seq, t, instrument, account, *_):
        self.accounts.setdefault(account, AccountFacts(account))
        self.cash.setdefault(account, 0)
        self.positions.setdefault(account, {})
        self.opened_t[account] = t
        self.pending_start.append(account)

    def on_instrument_listed(self, seq, t, instrument, account, order_id, side, *_):
        spec = self.data.get(seq, {}) or {}
        maturity = spec.get("maturity")
        try:
            maturity_date = date.fromisoformat(maturity) if isinstance(maturity, str) else None
        except ValueError:
            maturity_date = None
        floor = spec.get("floor")
        self.instruments[instrument] = Instrument(
            name=instrument,
            kind=side or spec.get("kind", ""),
            seq=seq,
            t=t,
            spec=spec,
            maturity=maturity_date,
            floor=floor if isinstance(floor, int) else None,
        )

    def on_deposit(self, seq, t, instrument, account, order_id, side, price, qty, amount, *_):
        self.account(account).deposited += amount
        self.credit(seq, t, account, amount)

    def on_withdrawal(self, seq, t, instrument, account, order_id, side, price, qty, amount, *_):
        self.account(account).withdrawn -= amount
        self.credit(seq, t, account, amount)

    def on_fee(self, seq, t, instrument, account, order_id, side, price, qty, amount, *_):
        self.account(account).fees += amount
        self.credit(seq, t, account, amount)

    def on_fill(self, seq, t, instrument, account, order_id, side, price, qty, amount, maker, moid):
        self.credit(seq, t, account, amount)
        self.credit(seq, t, maker, -amount)
        delta = qty if side == "buy" else -qty
        if order_id in self.closeout_orders:  # the defaulter's close-out order took
            self.move(instrument, maker, account, -delta, novation=True)
        elif moid in self.closeout_orders:  # (close-out orders are IOC: never a maker)
            self.move(instrument, account, maker, delta, novation=True)
        else:
            self.move(instrument, account, maker, delta)
        for oid, other, got in ((order_id, maker, -delta), (moid, account, delta)):
            closeout = self.closeout_orders.get(oid)
            if closeout is not None:
                self.step(
                    closeout,
                    WaterfallStep(
                        seq,
                        t,
                        ev.FILL,
                        closeout.defaulter,
                        STEP_BOOK,
                        0,
                        other,
                        instrument=instrument,
                        qty=got,
                        price=price,
                    ),
                )
                self.funds.book_lots += abs(delta)

    def on_funding_paid(self, seq, t, instrument, account, order_id, side, price, qty, amount, *_):
        self.account(account).funding += amount
        self.credit(seq, t, account, amount)

    def on_premium_paid(self, seq, t, instrument, account, order_id, side, price, qty, amount, *_):
        facts_ = self.account(account)
        if amount >= 0:
            facts_.premiums_received += amount
        else:
            facts_.premiums_paid -= amount
        by = facts_.premiums_by_instrument
        by[instrument] = by.get(instrument, 0) + amount
        self.credit(seq, t, account, amount)

    def on_swap_settled(self, seq, t, instrument, account, order_id, side, price, qty, amount, *_):
        facts_ = self.account(account)
        if amount >= 0:
            facts_.payouts_received += amount
        else:
            facts_.payouts_paid -= amount
        self.credit(seq, t, account, amount)

    def on_instrument_expired(self, seq, t, instrument, *_):
        for held in self.positions.values():
            held.pop(instrument, None)
        for key in [k for k in self.pairs if k[0] == instrument]:
            del self.pairs[key]
        info = self.instruments.get(instrument)
        if info is not None:
            info.expired_t = t

    def on_variation_margin(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, *_
    ):
        self.account(account).variation_margin += amount
        self.credit(seq, t, account, amount)

    def on_collateral_call(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, *_
    ):
        data = self.data.get(seq) or {}
        call = Call(
            account,
            seq,
            t,
            amount,
            deadline=data.get("deadline"),
            im=data.get("im"),
            mm=data.get("mm"),
            equity=data.get("equity"),
            due=amount,
        )
        self.calls.append(call)
        self.open_call[account] = call
        facts_ = self.account(account)
        facts_.calls += 1
        facts_.called += amount

    def on_call_increased(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, *_
    ):
        call = self.open_call.get(account)
        if call is not None:
            reason = str((self.data.get(seq) or {}).get("reason", ""))
            call.increases.append((seq, t, amount, reason))
            call.due = amount
            call.outcome = _open_outcome(call)

    def on_call_reduced(self, seq, t, instrument, account, order_id, side, price, qty, amount, *_):
        call = self.open_call.get(account)
        if call is not None:
            call.reductions.append((seq, t, amount))
            call.due = amount
            call.outcome = _open_outcome(call)

    def on_rating_changed(self, seq, t, instrument, account, order_id, side, *_):
        data = self.data.get(seq) or {}
        ratio, change = data.get("capital_ratio_ppm"), data.get("im_change")
        self.ratings.append(
            RatingChange(
                seq,
                t,
                account,
                str(data.get("from", "")),
                str(data.get("to", side or "")),
                ratio if isinstance(ratio, int) else None,
                str(data.get("reason", "")),
                change if isinstance(change, int) else None,
            )
        )

    def on_call_cured(self, seq, t, instrument, account, *_):
        call = self.open_call.pop(account, None)
        if call is not None:
            call.outcome, call.outcome_seq, call.outcome_t, call.due = CURED, seq, t, 0

    def on_default(self, seq, t, instrument, account, order_id, side, price, qty, amount, *_):
        data = self.data.get(seq) or {}
        call = self.open_call.pop(account, None)
        if call is not None:
            call.outcome, call.outcome_seq, call.outcome_t = DEFAULTED, seq, t
            call.due = amount
        facts_ = self.account(account)
        facts_.defaulted = True
        self.defaults.append(
            Default(
                account,
                seq,
                t,
                amount or 0,
                str(data.get("reason", "")),
                call.seq if call is not None else None,
                self.cash.get(account, 0),
                dict(sorted(self.positions[account].items())),
            )
        )
        closeout = CloseOut(account, seq, t)
        self.closeouts.append(closeout)
        self.closeout_of[account] = closeout
        self.awaiting_funds[account] = closeout

    def on_pool_funded(self, *_):
        pass

    def on_fund_contribution(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, *_
    ):
        facts_ = self.account(account)
        facts_.contribution -= amount
        facts_.contribution_left -= amount
        self.credit(seq, t, account, amount)

    def on_close_out(self, seq, t, instrument, account, order_id, *_):
        # a defaulter's close-out order (a liquidation of a live account is not a close-out)
        if self.accounts.get(account) is not None and self.accounts[account].defaulted:
            self.closeout_orders[order_id] = self.closeout_for(account, seq, t)

    def _hand_over(self, seq, t, kind, step, instrument, receiver, qty, price, amount, defaulter):
        self.move(instrument, receiver, defaulter, qty, novation=True)
        closeout = self.closeout_for(defaulter, seq, t)
        self.step(
            closeout,
            WaterfallStep(
                seq,
                t,
                kind,
                defaulter,
                step,
                0,
                receiver,
                instrument=instrument,
                qty=qty,
                price=price,
                value=amount or 0,
            ),
        )
        borne = self.bear(defaulter, receiver)
        borne.lots_taken += abs(qty)
        borne.value_taken += amount or 0

    def on_auction_award(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, cp, _
    ):
        self._hand_over(
            seq, t, ev.AUCTION_AWARD, STEP_AUCTION, instrument, account, qty, price, amount, cp
        )
        self.funds.auction_lots += abs(qty)

    def on_deleveraged(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, cp, _
    ):
        self.fund_step(cp)
        self._hand_over(
            seq, t, ev.DELEVERAGED, STEP_ADL, instrument, account, qty, price, amount, cp
        )
        self.funds.adl_lots += abs(qty)
        self.funds.adl_value += abs(amount or 0)

    def on_waterfall_draw(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, *_
    ):
        self.fund_step(account)
        closeout = self.closeout_for(account, seq, t)
        if side == "own":
            step, bearer, pool = STEP_OWN, account, "default_fund"
            self.funds.own_contributions += amount
            self.account(account).contribution_left -= amount
        else:
            step, bearer, pool = STEP_INSURANCE, None, side
            self.funds.insurance += amount
        self.step(
            closeout,
            WaterfallStep(seq, t, ev.WATERFALL_DRAW, account, step, amount, bearer, pool=pool),
        )
        self.credit(seq, t, account, amount)
        self.settle_uncovered(closeout)

    def on_default_fund_loss(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, defaulter, _
    ):
        self.fund_step(defaulter)
        closeout = self.closeout_for(defaulter, seq, t)
        self.step(
            closeout,
            WaterfallStep(
                seq,
                t,
                ev.DEFAULT_FUND_LOSS,
                defaulter,
                STEP_DEFAULT_FUND,
                amount,
                account,
                pool="default_fund",
            ),
        )
        self.funds.default_fund += amount
        member = self.account(account)
        member.contribution_left -= amount
        member.lost_to_defaults[defaulter] = member.lost_to_defaults.get(defaulter, 0) + amount
        self.bear(defaulter, account).default_fund += amount
        self.credit(seq, t, defaulter, amount)
        self.settle_uncovered(closeout)

    def on_haircut(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, defaulter, _
    ):
        self.fund_step(defaulter)
        closeout = self.closeout_for(defaulter, seq, t)
        cut = -amount
        label = (self.data.get(seq) or {}).get("step", "adl")
        step = STEP_HAIRCUT_VM if label == "vm_gains" else STEP_HAIRCUT_ADL
        self.step(closeout, WaterfallStep(seq, t, ev.HAIRCUT, defaulter, step, cut, account))
        if step == STEP_HAIRCUT_VM:
            self.funds.haircut_vm_gains += cut
        else:
            self.funds.haircut_adl += cut
        victim = self.account(account)
        victim.lost_to_defaults[defaulter] = victim.lost_to_defaults.get(defaulter, 0) + cut
        self.bear(defaulter, account).haircut += cut
        self.credit(seq, t, account, amount)
        self.credit(seq, t, defaulter, cut)
        self.settle_uncovered(closeout)

    # -- bilateral clearing: cash and positions only (exchange/postmortem/compare.py attributes the
    # loss)
    def on_collateral_posted(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, *_
    ):
        # the poster's cash goes to the collateral pool (a negative amount comes back)
        self.credit(seq, t, account, -amount)

    def on_protection_terminated(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, defaulter, _
    ):
        # the contract with the defaulter is gone: the lots the account held from it (signed:
        # negative if it sold the defaulter protection) go back; V is a claim, no cash moves
        if defaulter is not None:
            self.move(instrument, defaulter, account, qty or 0)
            self.terminated_by[account] = defaulter

    def lose(self, account: str, defaulter: str | None, amount: int) -> None:
        """Add ``amount`` (minor units; negative: what it got back) to what ``account`` lost
        to ``defaulter``'s default. Bilateral: re-hedge paid (and termination paid) less the
        collateral applied and the recovery, so ``V x (1 + spread) - C - R`` in all."""
        if defaulter is None or not amount:
            return
        lost = self.account(account).lost_to_defaults
        lost[defaulter] = lost.get(defaulter, 0) + amount

    def on_collateral_applied(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, defaulter, _
    ):
        self.credit(seq, t, account, amount)  # the collateral pool -> the buyer
        self.lose(account, defaulter, -amount)

    def on_termination_paid(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, defaulter, _
    ):
        # what the account owed the defaulter on net (amount < 0) goes into the defaulter's cash
        self.credit(seq, t, account, amount)
        if defaulter is not None:
            self.credit(seq, t, defaulter, -amount)
        self.lose(account, defaulter, -amount)

    def on_recovery_paid(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, defaulter, _
    ):
        # external money from the defaulter's estate, except what its exchange cash paid
        estate = (self.data.get(seq) or {}).get("from_estate", 0)
        self.credit(seq, t, account, amount)
        if isinstance(estate, int) and defaulter is not None:
            self.credit(seq, t, defaulter, -estate)
        self.lose(account, defaulter, -amount)

    def on_rehedged(
        self, seq, t, instrument, account, order_id, side, price, qty, amount, dealer, _
    ):
        # the buyer pays the replacement dealer (amount < 0) and holds the lots from it
        self.credit(seq, t, account, amount)
        if dealer is not None:
            self.credit(seq, t, dealer, -amount)
            self.move(instrument, account, dealer, qty or 0)
        self.lose(account, self.terminated_by.get(account), -amount)

    def settle_uncovered(self, closeout: CloseOut) -> None:
        closeout.uncovered = max(0, -self.cash.get(closeout.defaulter, 0))


def _load_data(store: EventStore, until: int) -> tuple[dict[int, dict], dict[str, Any]]:
    data: dict[int, dict] = {}
    started: dict[str, Any] = {}
    for event in store.events(1, until, kind=_WITH_DATA):
        if event.kind == ev.SESSION_STARTED:
            started = event.data or {}
        else:
            data[event.seq] = event.data or {}
    return data, started


def _facts(store: EventStore, until: int | None, track: set[str]) -> PostMortem:
    until = check_until(store, until)
    info = store.session
    data, started = _load_data(store, until)
    scan = _Scan(data, track)
    scan.run(store.rows(1, until, kind=_SCANNED))
    # the t of event ``until`` itself (it need not be a scanned kind)
    t_end = next(iter(store.rows(until, until)))[1]
    accounts = {}
    for name in sorted(scan.accounts):
        facts_ = scan.accounts[name]
        facts_.final_cash = scan.cash.get(name, 0)
        facts_.positions = dict(sorted(scan.positions.get(name, {}).items()))
        facts_.lost_to_defaults = dict(sorted(facts_.lost_to_defaults.items()))
        facts_.premiums_by_instrument = dict(sorted(facts_.premiums_by_instrument.items()))
        accounts[name] = facts_
    config = started.get("config") if isinstance(started.get("config"), dict) else None
    if config is None:
        try:
            config = orjson.loads(info.get("config") or "{}")
        except orjson.JSONDecodeError:
            config = {}
        config.pop("_recorder", None)
    epoch = _epoch(config, scan.instruments)
    for inst in scan.instruments.values():
        if inst.maturity is not None and epoch is not None:
            inst.maturity_t = (inst.maturity - epoch).days * DAY_NS
    order = {c.defaulter: i for i, c in enumerate(scan.closeouts)}
    borne = sorted(
        scan.borne.values(),
        key=lambda b: (order.get(b.defaulter, len(order)), -b.total, -b.lots_taken, b.counterparty),
    )
    positions = []
    for (instrument, a), book in scan.pairs.items():
        for b, q in book.items():
            if q > 0:
                positions.append(PairPosition(instrument, a, b, q))
    positions.sort(key=lambda p: (p.instrument, -p.qty, p.long, p.short))
    return PostMortem(
        path=str(store.path),
        scenario=str(info.get("scenario", "")),
        seed=int(info.get("seed") or 0),
        config=config,
        until=until,
        last_seq=store.last_seq,
        t_end=t_end,
        epoch=epoch,
        accounts=accounts,
        instruments=scan.instruments,
        calls=scan.calls,
        defaults=scan.defaults,
        closeouts=scan.closeouts,
        funds=scan.funds,
        who_owes_whom=WhoOwesWhom(borne, positions),
        cash_paths={n: scan.paths[n] for n in sorted(scan.paths)},
        ratings=scan.ratings,
    )
