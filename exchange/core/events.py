"""Events: the truth of a gpuex session.

Every input the exchange receives and every outcome it produces is an :class:`Event` with a
contiguous sequence number and the simulated time. An event's canonical bytes
(:func:`encode`) are what the event store persists, checksums and compares; the typed fields
are duplicated into indexed SQLite columns for post-mortem queries.

Units: ``t`` in simulated nanoseconds since the session epoch; ``price`` in ticks; ``qty`` in
lots (signed where the kind says so); ``amount`` in the settlement currency's minor units
(cents), signed from the account's point of view (a debit is negative).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

# --- event kinds --------------------------------------------------------------------------
SESSION_STARTED = "SessionStarted"  # data: scenario, seed, config
SESSION_ENDED = "SessionEnded"  # data: state_hash
INSTRUMENT_LISTED = "InstrumentListed"  # instrument, side (the kind: spot|perp|rvs|cds);
#                                        data: spec
ACCOUNT_OPENED = "AccountOpened"  # account
COMMAND_RECEIVED = "CommandReceived"  # account; data: command (the validated command)
COMMAND_REJECTED = "CommandRejected"  # account; data: reason, command (raw, maybe invalid)
ORDER_ACCEPTED = "OrderAccepted"  # instrument, account, order_id, side, price, qty; data
ORDER_REJECTED = "OrderRejected"  # instrument, account, order_id; data: reason
ORDER_RESTED = "OrderRested"  # instrument, account, order_id, side, price, qty: joins the queue
ORDER_CANCELLED = "OrderCancelled"  # instrument, account, order_id, qty removed; data: reason
ORDER_AMENDED = "OrderAmended"  # instrument, account, order_id, price, qty; data: priority
FILL = "Fill"  # one trade, both sides: instrument, account/order_id/side/amount of the taker,
#               price, qty, counterparty/counter_order_id of the maker (who gets -amount)
FEE = "Fee"  # instrument, account, order_id, amount (negative = paid); data: role
DEPOSIT = "Deposit"  # account, amount
WITHDRAWAL = "Withdrawal"  # account, amount (negative)
INDEX_PUBLISHED = "IndexPublished"  # instrument (the index), price (index ticks)
MARK_PRICE = "MarkPrice"  # instrument, price (mark ticks); data: source, index / model
FUNDING_RATE = "FundingRate"  # instrument, price (mark), amount (cumulative funding index,
#                              nano-minor units per lot); data: rate, premium (exact fractions)
FUNDING_PAID = "FundingPaid"  # instrument, account, qty (position), amount (cash, - = paid)
PREMIUM_PAID = "PremiumPaid"  # instrument, account, qty (position), amount (cash, - = paid);
#                              a CDS's: data: days (ACT/360 accrual), reason ("accrued" at
#                              a credit event)
SWAP_SETTLED = "SwapSettled"  # instrument, account, qty, price (settlement index; a CDS's:
#                              the recovery, ppm), amount; a CDS's data: protection, vm_basis
INSTRUMENT_EXPIRED = "InstrumentExpired"  # instrument: positions and premium bases close; a
#                                          CDS's data: reason (matured, credit event),
#                                          recovery_ppm
VARIATION_MARGIN = "VariationMargin"  # instrument, account, qty (position), price (mark), amount
MARGIN_REQUIREMENT = "MarginRequirement"  # account, amount (initial margin); data: mm, equity
RATING_CHANGED = "RatingChanged"  # account, side (the new rating); data: from, to,
#                                  capital_ratio_ppm, reason (downgrade|upgrade), im_change
COLLATERAL_CALL = "CollateralCall"  # account, amount (to restore initial margin); data: deadline
CALL_INCREASED = "CallIncreased"  # account, amount (the raised amount due); data: previous,
#                                  deadline (unchanged), im, mm, equity, reason
CALL_REDUCED = "CallReduced"  # account, amount (what is still due)
CALL_CURED = "CallCured"  # account
DEFAULT = "Default"  # account, amount (the call it missed, as last called); data: reason
POOL_FUNDED = "PoolFunded"  # side (the pool), amount: external money into a pool
FUND_CONTRIBUTION = "FundContribution"  # account, amount (negative: into the default fund)
CLOSE_OUT = "CloseOut"  # instrument, account, order_id, side, price (the bound), qty
AUCTION_AWARD = "AuctionAward"  # instrument, account (bidder, receives qty), qty, price,
#                                amount (VM-basis change), counterparty (the defaulter)
DELEVERAGED = "Deleveraged"  # instrument, account (receives qty), qty, price, amount (its value),
#                              counterparty (the defaulter, who gives them up)
WATERFALL_DRAW = "WaterfallDraw"  # account (the defaulter), side (own|insurance), amount
DEFAULT_FUND_LOSS = "DefaultFundLoss"  # account (member), amount lost, counterparty (defaulter)
HAIRCUT = "Haircut"  # account, amount (negative), counterparty (the defaulter it covers)
BOT_FAILED = "BotFailed"  # account; data: bot, cause, callback, detail (traceback or reason)
# bilateral clearing of swaps (exchange.risk.bilateral): collateral under a CSA, and a default
COLLATERAL_POSTED = "CollateralPosted"  # account (poster), counterparty (the one it is posted
#                                        to), amount (negative: returned); data: exposure,
#                                        threshold, support (minor units), rating (poster's)
PROTECTION_TERMINATED = "ProtectionTerminated"  # instrument, account (holder), counterparty
#                       (defaulter), qty (lots it held), amount (V owed to it), price (mark)
COLLATERAL_APPLIED = "CollateralApplied"  # account, counterparty (defaulter), amount (pool ->
#                                          account: the defaulter's collateral it keeps)
TERMINATION_PAID = "TerminationPaid"  # account, counterparty (defaulter), amount (negative:
#                                      the net close-out amount it owed, into the defaulter's cash)
RECOVERY_PAID = "RecoveryPaid"  # account, counterparty (defaulter), amount (R); data: claim,
#                                recovery_ppm, from_estate (the part paid from its exchange cash)
REHEDGED = "Rehedged"  # instrument, account (buyer), counterparty (dealer), qty (lots), price
#                       (the premium basis carried over, ticks x lots), amount (paid, negative);
#                       data: value (V), spread_ppm
# the credit economy (exchange.credit.economy, announced by exchange.credit.economy_schedule): one
# kind per
# record type, naming no exchange account (account is None); counterparty is the economy's
# entity (a lab, neocloud or hyperscaler); amount is the record's main money field in cents,
# signed as the record signs it (None if it has none); data holds period (months since January
# 2024), record (its index in the economy's run), cause (the log seqs of the events it follows
# from) and the record's other fields (money in cents, ratios in ppm)
ROUND_PRICED = "RoundPriced"  # counterparty (lab), amount (raised); data: mark, last_mark,
#                              step_up_ppm, required_step_up_ppm
ROUND_FAILED = "RoundFailed"  # counterparty (lab), amount (need); data: offered_mark,
#                              required_mark, last_mark, raisable, step_up_ppm,
#                              required_step_up_ppm: the trigger
GUARANTEE_CALLED = "GuaranteeCalled"  # counterparty (wrapped lab), amount; data: guarantor
COMMITMENT_PULLED = "CommitmentPulled"  # counterparty (lab), amount (backlog_cut); data:
#                                        provider, share_ppm, monthly_cut, gpus_released
BACKLOG_IMPAIRED = "BacklogImpaired"  # counterparty (hyperscaler), amount (written off)
COVENANT_BREACHED = "CovenantBreached"  # counterparty (neocloud), amount (cash_flow); data:
#                                        dscr_ppm, covenant_ppm, debt_service
SPREAD_INVERTED = "SpreadInverted"  # counterparty (neocloud), amount (spread, < 0); data:
#                                    cash_flow, debt_service
BORROWER_DEFAULTED = "BorrowerDefaulted"  # counterparty (neocloud or lab), amount (debt);
#                                          data: reason, recovery_ppm (the auction of its
#                                          GPUs over its debt; a lab: the fixed rate), not
#                                          the exchange's Default
CAPACITY_RELEASED = "CapacityReleased"  # counterparty (neocloud), amount None; data: gpus,
#                                        price (ticks/GPU-hour), discount_ppm, term_months
CAPEX_CUT = "CapexCut"  # counterparty (hyperscaler), amount (capex after the cut, cents/month);
#                        data: planned (cents/month), leader (the first cut: the flip)
REFINANCING_FAILED = "RefinancingFailed"  # counterparty (neocloud), amount (due: principal that
#                                          had to roll); data: reason ("covenant breach" or
#                                          "collateral"), dscr_ppm, ltv_ppm, max_ltv_ppm
SPREAD_GAPPED = "SpreadGapped"  # counterparty (lab or neocloud), amount None; data: spread_bps,
#                                previous_bps, change_bps (int bps), hazard_ppm (per year)
EQUITY_MARKED = "EquityMarked"  # counterparty (neocloud or hyperscaler), amount (the new mark,
#                                cents); data: previous (cents), fall_ppm
CAPACITY_ACQUIRED = "CapacityAcquired"  # counterparty (the defaulted neocloud), amount (price
#                                        for the fleet, cents); data: buyer, gpus,
#                                        price_per_gpu (cents), discount_ppm
ECONOMY_MONTH = "EconomyMonth"  # once a month, before the month's records; counterparty and
#                              amount None; data: period, labs (names, the naked lab first),
#                              revenue and mark ({lab: cents/month, cents}), capex (sector,
#                              cents/month), capex_by ({hyperscaler: cents/month}), spread
#                              ({neocloud: cents/month, cash flow - debt service; 0 once
#                              defaulted}), rental_price (ticks of $0.001/GPU-hour, after the
#                              glut), cds_spread_bps ({lab or neocloud: implied 5-year CDS
#                              spread, int bps}): the model's series after the month's step

#: The credit economy's kinds, the only ones :meth:`exchange.kernel.engine.Exchange.announce` emits:
#: they name no exchange account and move no cash, position or order. All but
#: ``EconomyMonth`` announce one record of the model each (with ``data.cause``).
ECONOMY_KINDS = (
    ROUND_PRICED,
    ROUND_FAILED,
    GUARANTEE_CALLED,
    COMMITMENT_PULLED,
    BACKLOG_IMPAIRED,
    COVENANT_BREACHED,
    SPREAD_INVERTED,
    BORROWER_DEFAULTED,
    CAPACITY_RELEASED,
    CAPEX_CUT,
    REFINANCING_FAILED,
    SPREAD_GAPPED,
    EQUITY_MARKED,
    CAPACITY_ACQUIRED,
    ECONOMY_MONTH,
)

KINDS = (
    SESSION_STARTED,
    SESSION_ENDED,
    INSTRUMENT_LISTED,
    ACCOUNT_OPENED,
    COMMAND_RECEIVED,
    COMMAND_REJECTED,
    ORDER_ACCEPTED,
    ORDER_REJECTED,
    ORDER_RESTED,
    ORDER_CANCELLED,
    ORDER_AMENDED,
    FILL,
    FEE,
    DEPOSIT,
    WITHDRAWAL,
    INDEX_PUBLISHED,
    MARK_PRICE,
    FUNDING_RATE,
    FUNDING_PAID,
    PREMIUM_PAID,
    SWAP_SETTLED,
    INSTRUMENT_EXPIRED,
    VARIATION_MARGIN,
    MARGIN_REQUIREMENT,
    COLLATERAL_CALL,
    CALL_INCREASED,
    CALL_REDUCED,
    CALL_CURED,
    DEFAULT,
    POOL_FUNDED,
    FUND_CONTRIBUTION,
    CLOSE_OUT,
    AUCTION_AWARD,
    DELEVERAGED,
    WATERFALL_DRAW,
    DEFAULT_FUND_LOSS,
    HAIRCUT,
    BOT_FAILED,
    RATING_CHANGED,
    COLLATERAL_POSTED,
    PROTECTION_TERMINATED,
    COLLATERAL_APPLIED,
    TERMINATION_PAID,
    RECOVERY_PAID,
    REHEDGED,
    *ECONOMY_KINDS,
)

#: Names of the typed (indexed) fields, in column order.
TYPED_FIELDS = (
    "seq",
    "t",
    "kind",
    "instrument",
    "account",
    "order_id",
    "side",
    "price",
    "qty",
    "amount",
    "counterparty",
    "counter_order_id",
)


class Event(NamedTuple):
    """One event. Fields that do not apply to a kind are ``None``; ``data`` holds the rest
    (JSON-serialisable, with ints for every number)."""

    seq: int
    t: int
    kind: str
    instrument: str | None = None
    account: str | None = None
    order_id: int | None = None
    side: str | None = None
    price: int | None = None
    qty: int | None = None
    amount: int | None = None
    counterparty: str | None = None
    counter_order_id: int | None = None
    data: dict[str, Any] | None = None


#: orjson options of the canonical bytes (:func:`encode`; the store's C append loop calls
#: ``orjson.dumps(tuple(event), None, ENCODE_OPTIONS)`` itself).
ENCODE_OPTIONS = orjson.OPT_SORT_KEYS


def encode(event: Event) -> bytes:
    """The canonical bytes of an event: a compact JSON array of its thirteen fields in
    ``Event`` order (``[seq, t, kind, instrument, account, order_id, side, price, qty, amount,
    counterparty, counter_order_id, data]``), keys inside ``data`` sorted, no floats. An array
    rather than an object: the field names are the schema's (and the typed columns carry
    them), and leaving them out of a million payloads halves the bytes hashed and written."""
    return orjson.dumps(tuple(event), option=ENCODE_OPTIONS)


_N_FIELDS = len(Event._fields)
_new_tuple = tuple.__new__


def decode(payload: bytes | str) -> Event:
    """The inverse of :func:`encode`."""
    fields = orjson.loads(payload)
    if type(fields) is list and len(fields) == _N_FIELDS:
        # every field given: the tuple itself, without namedtuple's Python __new__ (about a
        # quarter of a decode's cost, profiled over verify's million events)
        return _new_tuple(Event, fields)
    return Event(*fields)  # anything else is taken, or refused, as Event(...) would
