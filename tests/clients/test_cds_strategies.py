"""The CDS strategies (issue #21): a protection buyer hedging a loan, a basis trader and a
dealer, each rule on its own.

The unit tests drive a bot through the real :class:`~clients.context.Context` and the runner's
own ``dispatch`` (each callback under the default budget), handing it the account view and the
messages a session would, and read the commands it sends. Prices are spreads in ticks of 1 bp,
quantities contracts, a buy is bought protection.
"""

from __future__ import annotations

import numpy as np
import pytest

from clients.bot import (
    BookLevel,
    BookView,
    FillReport,
    IndexPrint,
    MarginCall,
    Mark,
    OrderUpdate,
)
from clients.budget import DEFAULT_LINES
from clients.context import AccountView, Context, OpenOrder
from clients.runner import dispatch
from clients.strategies import (
    STRATEGIES,
    CdsBasisTrader,
    CdsDealer,
    CdsProtectionBuyer,
    make_bot,
)
from clients.strategies.base import DAY_NS, HOUR_NS

pytestmark = pytest.mark.usefixtures("twin")  # the harness's Context and dispatch, both twins

SERIES = "CRWV-CDS-2030-12-C500"
MILLION = 100_000_000  # $1m in cents: one contract's notional


class Harness:
    """One bot, its real context, and the account view a session would hand it."""

    def __init__(self, bot) -> None:
        self.bot = bot
        self.ctx = Context("bot", "bot", np.random.default_rng(0))
        self.positions: dict[str, int] = {}
        self.orders: list[OpenOrder] = []
        self.timers: list = []
        self.refs: list[int] = []  # refs of the submits of the last delivery

    def deliver(self, now: int, *messages) -> list[dict]:
        """Deliver ``messages`` (``(callback, payload)``) at ``now`` ns; the commands sent."""
        view = AccountView(0, dict(self.positions), tuple(self.orders))
        self.ctx._begin(now, view)
        outbox, self.timers = dispatch(self.bot, self.ctx, list(messages), DEFAULT_LINES)
        self.refs = [ref for ref, _ in outbox if ref is not None]
        return [command for _, command in outbox]

    def hold(self, position: int) -> None:
        self.positions = {SERIES: position} if position else {}


def mark(t: int, price, source: str = "model", instrument: str = SERIES):
    return ("on_mark", Mark(instrument, t, price, source))


def book(t: int, bid=None, ask=None, qty: int = 10):
    bids = (BookLevel(bid, qty),) if bid is not None else ()
    asks = (BookLevel(ask, qty),) if ask is not None else ()
    return ("on_book", BookView(SERIES, t, bids, asks))


def timer(tag):
    return ("on_timer", tag)


def accepted(ref: int, t: int = 0):
    return ("on_order", OrderUpdate("accepted", t, SERIES, 100 + ref, ref, "buy", 1, 1, None))


def orders(commands):
    """``(side, price, qty, tif)`` of the submits among ``commands``."""
    return [(c["side"], c["price"], c["qty"], c["tif"]) for c in commands if c["type"] == "submit"]


# ------------------------------------------------------------------ registry
def test_the_cds_strategies_are_registered_by_snake_case_name():
    assert STRATEGIES["cds_protection_buyer"] is CdsProtectionBuyer
    assert STRATEGIES["cds_basis_trader"] is CdsBasisTrader
    assert STRATEGIES["cds_dealer"] is CdsDealer
    for name in ("cds_protection_buyer", "cds_basis_trader", "cds_dealer"):
        bot = make_bot(name, {"series": "ORCL-CDS-2030-12-C100"})
        assert type(bot) is STRATEGIES[name] and bot.books == ("ORCL-CDS-2030-12-C100",)


def test_cds_strategy_parameters_are_validated_naming_the_field():
    with pytest.raises(ValueError, match=r"'cds_protection_buyer'.*hedge_ppm"):
        make_bot("cds_protection_buyer", {"hedge_ppm": 1_000_001})
    with pytest.raises(ValueError, match=r"hedge_ppm must not exceed max_hedge_ppm"):
        make_bot("cds_protection_buyer", {"hedge_ppm": 600_000, "max_hedge_ppm": 500_000})
    with pytest.raises(ValueError, match=r"exit_ticks must not exceed threshold"):
        make_bot("cds_basis_trader", {"threshold": 10, "exit_ticks": 11})
    with pytest.raises(ValueError, match=r"'cds_dealer'.*fair"):
        make_bot("cds_dealer", {"fair": "index"})
    with pytest.raises(ValueError, match=r"'cds_dealer'.*half_sprd.*not permitted"):
        make_bot("cds_dealer", {"half_sprd": 3})


# ------------------------------------------------------------------ protection buyer
def buyer(ask: int | None = 600, **params) -> Harness:
    """A started protection buyer ($100m loan, 50 % hedged, $1m contracts) that has seen a
    book offering protection at ``ask`` ticks (None: an empty book)."""
    defaults = {"loan": 100 * MILLION, "notional": MILLION, "hedge_ppm": 500_000}
    h = Harness(CdsProtectionBuyer(**{**defaults, **params}))
    h.deliver(0, ("on_start", None))
    h.deliver(0, timer("protect"), book(0, ask=ask))
    return h


def test_protection_buyer_hedges_its_share_of_the_loan_at_the_mark_plus_pay_up():
    """$100m loan, 50 % hedged, $1m contracts: 50 contracts, an IOC buy at 640 + 25 bps."""
    h = buyer(ask=650, pay_up=25)
    assert orders(h.deliver(HOUR_NS, mark(HOUR_NS, 640))) == [("buy", 665, 50, "ioc")]


def test_protection_buyer_sends_nothing_when_nothing_is_offered_at_its_limit():
    h = buyer(ask=None, pay_up=25)
    assert h.deliver(0, mark(0, 640)) == []  # an empty book
    assert h.deliver(1, book(1, bid=600, ask=666)) == []  # 1 bp over its limit
    assert orders(h.deliver(2, book(2, bid=600, ask=665))) == [("buy", 665, 50, "ioc")]


def test_protection_buyer_starts_at_its_start_time_and_retries_on_its_timer():
    h = Harness(CdsProtectionBuyer(start_ns=DAY_NS, retry_ns=HOUR_NS))
    h.deliver(0, ("on_start", None))
    assert h.timers == [(DAY_NS, "protect")]
    assert h.deliver(1, book(1, ask=600), mark(1, 640)) == []  # before start_ns
    assert orders(h.deliver(DAY_NS, timer("protect"))) == [("buy", 665, 50, "ioc")]
    assert h.timers == [(DAY_NS + HOUR_NS, "protect")]
    assert buyer().timers == []  # by default, rounds only on book and mark changes


def test_protection_buyer_buys_only_what_it_lacks_and_nothing_when_hedged():
    h = buyer()
    h.hold(30)
    assert orders(h.deliver(0, mark(0, 640))) == [("buy", 665, 20, "ioc")]
    h.deliver(HOUR_NS, accepted(1))
    h.hold(50)
    assert h.deliver(2 * HOUR_NS, book(2 * HOUR_NS, ask=600)) == []


def test_protection_buyer_adds_a_step_for_each_whole_widening_past_the_anchor():
    """Anchor: the first mark (640). Each full 100 bps of widening adds 10 % of the loan."""
    h = buyer(widen_ticks=100, step_ppm=100_000)
    h.hold(50)
    assert h.deliver(0, mark(0, 640)) == []
    assert h.deliver(DAY_NS, mark(DAY_NS, 739)) == []  # 99 bps wider: not a whole step
    assert h.bot.share == 500_000
    assert orders(h.deliver(2 * DAY_NS, mark(2 * DAY_NS, 740))) == [("buy", 765, 10, "ioc")]
    h.deliver(2 * DAY_NS, accepted(1))
    h.hold(60)
    assert orders(h.deliver(3 * DAY_NS, mark(3 * DAY_NS, 960))) == [("buy", 985, 20, "ioc")]
    assert h.bot.share == 800_000


def test_protection_buyer_measures_widening_from_a_given_anchor():
    h = buyer(anchor=360, widen_ticks=100, step_ppm=100_000)
    h.deliver(0, mark(0, 640))  # 280 bps over the anchor: two whole steps
    assert h.bot.share == 700_000 and h.bot.target() == 70


def test_protection_buyer_never_hedges_more_than_the_loan():
    """However wide the spread, at most the loan is protected, in whole contracts (rounded
    down): $10.5m of loan is 10 contracts of $1m."""
    h = buyer(loan=1_050_000_000, hedge_ppm=900_000, step_ppm=500_000, widen_ticks=1)
    h.hold(9)
    h.deliver(0, mark(0, 640))
    h.deliver(1, accepted(1))
    assert orders(h.deliver(DAY_NS, mark(DAY_NS, 9_000))) == [("buy", 5_000, 1, "ioc")]
    assert h.bot.share == 1_000_000 and h.bot.target() == 10


def test_protection_buyer_pays_no_more_than_its_max_spread():
    h = buyer(ask=700, max_spread=700, pay_up=100)
    assert orders(h.deliver(0, mark(0, 640))) == [("buy", 700, 50, "ioc")]


def test_protection_buyer_never_sells_protection():
    """A tightening keeps the share it reached (the ratchet), an over-hedged position is left
    alone, and over a random path of marks, books and positions it sends only buys."""
    h = buyer(ask=None, widen_ticks=50, step_ppm=100_000)
    h.deliver(0, mark(0, 640))
    h.deliver(DAY_NS, mark(DAY_NS, 760))
    assert h.bot.share == 700_000
    h.deliver(2 * DAY_NS, mark(2 * DAY_NS, 300))  # far tighter than the anchor
    assert h.bot.share == 700_000 and h.bot.target() == 70
    h.hold(120)  # more than the whole loan
    assert h.deliver(2 * DAY_NS, book(2 * DAY_NS, bid=200, ask=250)) == []
    rng = np.random.default_rng(21)
    sent = []
    for step in range(200):
        t = (3 + step) * DAY_NS
        h.hold(int(rng.integers(-20, 150)))
        spread = int(rng.integers(100, 3_000))
        bid, ask = spread - int(rng.integers(1, 50)), spread + int(rng.integers(1, 50))
        sent += orders(h.deliver(t, mark(t, spread), book(t, bid=bid, ask=ask)))
        for ref in h.refs:
            h.deliver(t + 1, accepted(ref))
    assert len(sent) > 20 and {side for side, *_ in sent} == {"buy"}


def test_protection_buyer_sends_one_order_at_a_time():
    h = buyer()
    assert len(orders(h.deliver(0, mark(0, 640)))) == 1
    assert h.deliver(1, book(1, ask=600)) == []  # the first is still travelling
    h.deliver(2, accepted(1))
    assert len(orders(h.deliver(3, book(3, ask=610)))) == 1


def test_protection_buyer_does_nothing_without_a_usable_mark():
    """No mark yet, a mark older than max_age_ns, or bad data (not a whole positive number of
    ticks): no order, and no exception."""
    h = buyer(max_age_ns=10 * DAY_NS)
    assert h.deliver(0, book(0, ask=600)) == []
    for bad in (None, 0, -640, 640.5, True, "640", 10**12):
        assert h.deliver(0, mark(0, bad)) == []
    assert h.bot.mark is None and h.bot.ignored == 7
    h.deliver(DAY_NS, mark(DAY_NS, 640))
    h.deliver(DAY_NS + 1, accepted(1))
    assert h.deliver(11 * DAY_NS + 1, book(11 * DAY_NS + 1, ask=610)) == []
    assert h.deliver(12 * DAY_NS, mark(12 * DAY_NS, 640, instrument="OTHER")) == []


def test_protection_buyer_pauses_under_a_call_and_meets_it_from_its_reserve():
    h = buyer(reserve=700)
    commands = h.deliver(DAY_NS, ("on_margin_call", MarginCall("called", DAY_NS, 500, 2 * DAY_NS)))
    assert commands == [{"type": "deposit", "amount": 500, "account": "bot"}]
    assert h.deliver(DAY_NS, mark(DAY_NS, 640)) == []
    h.deliver(DAY_NS, ("on_margin_call", MarginCall("increased", DAY_NS, 900, 2 * DAY_NS)))
    assert h.bot.reserve == 0  # the last 200 of it
    h.deliver(2 * DAY_NS, ("on_margin_call", MarginCall("cured", 2 * DAY_NS, 0, None)))
    assert orders(h.deliver(2 * DAY_NS, mark(2 * DAY_NS, 640)))


def test_protection_buyer_stops_once_the_series_is_gone_or_its_account_defaulted():
    h = buyer()
    h.deliver(0, mark(0, 640))
    gone = OrderUpdate("rejected", 0, SERIES, None, 1, "buy", None, None,
                       f"instrument: {SERIES!r} has expired")  # fmt: skip
    h.deliver(0, ("on_order", gone))
    assert h.deliver(HOUR_NS, mark(HOUR_NS, 700), book(HOUR_NS, ask=600)) == []
    h = buyer()
    h.deliver(0, ("on_margin_call", MarginCall("defaulted", 0, 0, None)))
    assert h.deliver(HOUR_NS, mark(HOUR_NS, 640), book(HOUR_NS, ask=600)) == []


# ------------------------------------------------------------------ basis trader
def basis(**params) -> Harness:
    defaults = {"threshold": 25, "size": 5, "max_position": 50}
    return Harness(CdsBasisTrader(**{**defaults, **params}))


def test_basis_trader_buys_protection_when_the_book_is_below_the_implied_spread():
    """Implied 640: an offer at 600 is 40 below, past the 25 threshold: an IOC buy at 614, the
    dearest price still more than 25 under the implied."""
    h = basis()
    h.deliver(0, mark(0, 640))
    assert orders(h.deliver(1, book(1, bid=580, ask=600))) == [("buy", 614, 5, "ioc")]


def test_basis_trader_sells_protection_when_the_book_is_above_the_implied_spread():
    h = basis()
    h.deliver(0, mark(0, 640))
    assert orders(h.deliver(1, book(1, bid=700, ask=720))) == [("sell", 666, 5, "ioc")]


def test_basis_trader_leaves_a_basis_within_its_threshold_alone():
    h = basis(exit_ticks=None)
    h.deliver(0, mark(0, 640))
    assert h.deliver(1, book(1, bid=665)) == []  # 25 over: not more than the threshold
    assert h.deliver(2, book(2, ask=615)) == []  # 25 under
    assert h.deliver(3, book(3)) == []  # an empty book


def test_basis_trader_trades_when_the_implied_spread_moves_away_from_the_book():
    h = basis()
    h.deliver(0, book(0, bid=620, ask=630))
    h.deliver(1, mark(1, 640))  # within the threshold
    assert orders(h.deliver(DAY_NS, mark(DAY_NS, 700))) == [("buy", 674, 5, "ioc")]


def test_basis_trader_takes_only_the_models_mark_as_the_implied_spread():
    """A mark made from the book is the book's own mid, not the implied spread."""
    h = basis()
    assert h.deliver(0, mark(0, 640, source="book")) == []
    assert h.deliver(1, book(1, bid=560, ask=570)) == []
    assert h.bot.implied is None and h.bot.mark == 640


def test_basis_trader_can_take_the_implied_spread_from_an_index():
    h = basis(implied_index="CDS-IMPLIED:CoreWeave")
    h.deliver(0, ("on_index", IndexPrint("OTHER", 0, 900)))
    assert h.bot.implied is None
    h.deliver(0, ("on_index", IndexPrint("CDS-IMPLIED:CoreWeave", 0, 640)))
    assert orders(h.deliver(1, book(1, bid=580, ask=600))) == [("buy", 614, 5, "ioc")]


def test_basis_trader_stays_within_its_position_limit():
    h = basis(max_position=50, exit_ticks=None)
    h.deliver(0, mark(0, 640))
    h.hold(48)
    assert orders(h.deliver(1, book(1, ask=600))) == [("buy", 614, 2, "ioc")]
    h.deliver(1, accepted(1))
    h.hold(50)
    assert h.deliver(2, book(2, ask=590)) == []
    h.hold(-47)
    assert orders(h.deliver(3, book(3, bid=700))) == [("sell", 666, 3, "ioc")]
    h.deliver(3, accepted(2))
    h.hold(-50)
    assert h.deliver(4, book(4, bid=710)) == []


def test_basis_trader_unwinds_once_the_basis_has_converged():
    h = basis(exit_ticks=5)
    h.deliver(0, mark(0, 640))
    h.hold(12)
    assert orders(h.deliver(1, book(1, bid=634, ask=650))) == []  # 6 below: not yet
    assert orders(h.deliver(2, book(2, bid=635, ask=650))) == [("sell", 635, 5, "ioc")]
    h.deliver(2, accepted(1))
    h.hold(-3)
    assert orders(h.deliver(3, book(3, bid=600, ask=645))) == [("buy", 645, 3, "ioc")]


def test_basis_trader_holds_its_position_without_an_exit():
    h = basis(exit_ticks=None)
    h.deliver(0, mark(0, 640))
    h.hold(12)
    assert h.deliver(1, book(1, bid=640, ask=641)) == []


def test_basis_trader_does_nothing_on_a_stale_or_bad_implied_spread():
    h = basis(max_age_ns=10 * DAY_NS)
    h.deliver(0, mark(0, 640))
    assert h.deliver(10 * DAY_NS + 1, book(10 * DAY_NS + 1, ask=500)) == []
    for bad in (None, -1, 0, 3.5, False):
        assert h.deliver(11 * DAY_NS, mark(11 * DAY_NS, bad)) == []
    assert h.bot.implied == 640 and h.bot.ignored == 5
    bad_book = ("on_book", BookView(SERIES, 0, (BookLevel(None, 3),), (BookLevel(-5, 3),)))
    assert h.deliver(12 * DAY_NS, bad_book, mark(12 * DAY_NS, 640)) == []
    assert h.bot.implied_t == 12 * DAY_NS  # a fresh implied spread, but no usable book


def test_basis_trader_under_a_call_only_reduces_its_position():
    h = basis()
    h.deliver(0, mark(0, 640), ("on_margin_call", MarginCall("called", 0, 100, DAY_NS)))
    h.hold(10)
    assert h.deliver(1, book(1, ask=600)) == []  # buying would add to the long
    h.hold(-3)
    assert orders(h.deliver(2, book(2, ask=600))) == [("buy", 614, 3, "ioc")]  # cut to flat


def test_basis_trader_sends_one_order_at_a_time():
    h = basis()
    h.deliver(0, mark(0, 640))
    assert len(orders(h.deliver(1, book(1, ask=600)))) == 1
    assert h.deliver(2, book(2, ask=599)) == []
    h.deliver(3, accepted(1))
    assert len(orders(h.deliver(4, book(4, ask=598)))) == 1


# ------------------------------------------------------------------ dealer
def dealer(**params) -> Harness:
    defaults = {
        "size": 5,
        "half_spread": 10,
        "widen_per_contract": 1,
        "max_inventory_widen": 100,
        "move_ppm": 500_000,
        "skew_per_contract": 0,
        "max_position": 100,
    }
    return Harness(CdsDealer(**{**defaults, **params}))


def quotes(commands):
    """(bid, ask) prices among ``commands`` (None for a side not quoted)."""
    submitted = orders(commands)
    bid = [price for side, price, _, _ in submitted if side == "buy"]
    ask = [price for side, price, _, _ in submitted if side == "sell"]
    return (bid[0] if bid else None), (ask[0] if ask else None)


def test_dealer_quotes_both_sides_around_the_mark_when_flat():
    h = dealer()
    assert orders(h.deliver(0, mark(0, 640))) == [("buy", 630, 5, "gtc"), ("sell", 650, 5, "gtc")]


def test_dealer_quotes_widen_with_its_inventory_either_way():
    widths = {}
    for position in (0, 10, -10, 40, 500):
        h = dealer(max_position=1_000)
        h.hold(position)
        bid, ask = quotes(h.deliver(0, mark(0, 640)))
        widths[position] = ask - bid
    assert widths == {0: 20, 10: 40, -10: 40, 40: 100, 500: 220}  # capped at 100 a side


def test_dealer_quotes_widen_with_the_spreads_recent_moves():
    """Marks 640, 700, 660: a 60 bps range, half of it (move_ppm 50 %) added to each side."""
    h = dealer(move_window=3)
    h.deliver(0, mark(0, 640))
    h.deliver(1, mark(1, 700))
    assert quotes(h.deliver(2, mark(2, 660))) == (660 - 40, 660 + 40)
    h.deliver(3, mark(3, 660))
    assert quotes(h.deliver(4, mark(4, 660))) == (650, 670)  # the window has forgotten 640/700


def test_dealer_widening_for_moves_is_capped():
    h = dealer(max_move_widen=15)
    h.deliver(0, mark(0, 300))
    assert quotes(h.deliver(1, mark(1, 900))) == (900 - 25, 900 + 25)


def test_dealer_skews_its_quotes_against_its_inventory():
    h = dealer(skew_per_contract=1, max_skew=50, widen_per_contract=0)
    h.hold(20)  # long protection: both quotes lower, it sells protection more readily
    assert quotes(h.deliver(0, mark(0, 640))) == (610, 630)
    h = dealer(skew_per_contract=1, max_skew=50, widen_per_contract=0)
    h.hold(-80)
    assert quotes(h.deliver(0, mark(0, 640))) == (680, 700)


def test_dealer_stays_within_its_position_limit():
    h = dealer(max_position=100)
    h.hold(98)
    assert [(s, q) for s, _, q, _ in orders(h.deliver(0, mark(0, 640)))] == [
        ("buy", 2),
        ("sell", 5),
    ]
    h = dealer(max_position=100)
    h.hold(-100)
    assert [s for s, *_ in orders(h.deliver(0, mark(0, 640)))] == ["buy"]


def test_dealer_under_a_call_quotes_only_the_side_that_reduces_its_position():
    h = dealer()
    h.hold(3)
    commands = h.deliver(0, mark(0, 640), ("on_margin_call", MarginCall("called", 0, 9, DAY_NS)))
    assert [(s, q) for s, _, q, _ in orders(commands)][-1:] == [("sell", 3)]
    h.orders = [OpenOrder(1, SERIES, "sell", 653, 3)]
    h.deliver(1, accepted(3))
    h.hold(0)
    commands = h.deliver(HOUR_NS, mark(HOUR_NS, 640))
    assert commands == [{"type": "cancel_all", "instrument": SERIES, "account": "bot"}]


def test_dealer_leaves_unchanged_quotes_resting():
    h = dealer()
    h.deliver(0, mark(0, 640))
    h.deliver(1, accepted(1), accepted(2))
    h.orders = [OpenOrder(101, SERIES, "buy", 630, 5), OpenOrder(102, SERIES, "sell", 650, 5)]
    assert h.deliver(HOUR_NS, mark(HOUR_NS, 640)) == []
    commands = h.deliver(2 * HOUR_NS, mark(2 * HOUR_NS, 641))
    assert commands[0]["type"] == "cancel_all" and len(orders(commands)) == 2


def test_dealer_requotes_once_after_its_quotes_trade():
    """Two fills in one batch: one requote, at the next nanosecond, for the new inventory."""
    h = dealer(skew_per_contract=1)
    h.deliver(0, mark(0, 640))
    h.deliver(1, accepted(1), accepted(2))
    fills = [
        ("on_fill", FillReport(SERIES, 5, 102, 2, "sell", 650, qty, 0, "maker")) for qty in (2, 3)
    ]
    h.orders = [OpenOrder(101, SERIES, "buy", 630, 5)]
    h.hold(-5)
    assert h.deliver(5, *fills) == [] and h.timers == [(5, "filled")]
    commands = h.deliver(6, timer("filled"))
    assert commands[0]["type"] == "cancel_all"
    assert quotes(commands) == (640 - 15 + 5, 640 + 15 + 5)  # 5 wider, skewed 5 up


def test_dealer_cancels_quotes_still_in_flight_when_it_requotes():
    """Quotes sent but not yet acknowledged are not in the account view: a requote cancels
    them anyway (the cancel arrives after them) rather than leaving two sets."""
    h = dealer()
    h.deliver(0, mark(0, 640))
    commands = h.deliver(1, mark(1, 650))
    assert commands[0]["type"] == "cancel_all" and len(orders(commands)) == 2


def test_dealer_pulls_quotes_still_in_flight_when_the_fair_spread_goes_stale():
    h = dealer(requote_ns=HOUR_NS, max_age_ns=HOUR_NS // 2)
    h.deliver(0, mark(0, 640))
    commands = h.deliver(HOUR_NS, timer("requote"))  # the quotes were never acknowledged
    assert commands == [{"type": "cancel_all", "instrument": SERIES, "account": "bot"}]


def test_dealer_pulls_its_quotes_when_the_fair_spread_is_stale():
    h = dealer(requote_ns=HOUR_NS, max_age_ns=DAY_NS)
    h.deliver(0, ("on_start", None))
    h.deliver(0, mark(0, 640))
    h.deliver(1, accepted(1), accepted(2))
    h.orders = [OpenOrder(101, SERIES, "buy", 630, 5), OpenOrder(102, SERIES, "sell", 650, 5)]
    assert h.deliver(DAY_NS, timer("requote")) == []
    commands = h.deliver(DAY_NS + 1, timer("requote"))
    assert commands == [{"type": "cancel_all", "instrument": SERIES, "account": "bot"}]


def test_dealer_on_the_implied_spread_ignores_marks_from_the_book():
    h = dealer(fair="implied")
    assert h.deliver(0, mark(0, 600, source="book")) == []
    assert quotes(h.deliver(1, mark(1, 640))) == (630, 650)


def test_dealer_on_the_implied_spread_counts_only_implied_values_as_recent_moves():
    """Implied 600 then 700 (a 100 bps range, 50 each side); a book mark in between is not an
    implied value and pushes neither out of the two-value window."""
    h = dealer(fair="implied", move_window=2)
    h.deliver(0, mark(0, 600))
    h.deliver(1, mark(1, 700))
    assert h.deliver(2, mark(2, 690, source="book")) == []
    assert quotes(h.deliver(3, timer("filled"))) == (700 - 60, 700 + 60)


def test_dealer_quotes_both_sides_again_once_its_call_is_cured():
    h = dealer()
    h.hold(3)
    h.deliver(0, mark(0, 640), ("on_margin_call", MarginCall("called", 0, 9, DAY_NS)))
    commands = h.deliver(DAY_NS, ("on_margin_call", MarginCall("cured", DAY_NS, 0, None)))
    assert [side for side, *_ in orders(commands)] == ["buy", "sell"]


def test_dealer_ignores_bad_marks():
    h = dealer()
    for bad in (None, 0, -3, 1.5, True):
        assert h.deliver(0, mark(0, bad)) == []
    assert h.bot.ignored == 5 and not h.bot.recent


def test_dealer_stops_quoting_once_its_account_defaulted():
    h = dealer(requote_ns=HOUR_NS)
    h.deliver(0, mark(0, 640))
    h.deliver(1, accepted(1), accepted(2))
    h.orders = [OpenOrder(101, SERIES, "buy", 630, 5)]
    commands = h.deliver(2, ("on_margin_call", MarginCall("defaulted", 2, 0, None)))
    assert commands == [{"type": "cancel_all", "instrument": SERIES, "account": "bot"}]
    h.orders = []
    assert h.deliver(HOUR_NS, mark(HOUR_NS, 700), timer("requote")) == [] and h.timers == []


def test_an_ordinary_rejection_clears_the_order_but_only_a_gone_series_stops_the_bot():
    h = basis()
    h.deliver(0, mark(0, 640))
    assert orders(h.deliver(1, book(1, ask=600)))
    refused = OrderUpdate("rejected", 2, SERIES, None, 1, "buy", None, None, "insufficient margin")
    h.deliver(2, ("on_order", refused))
    assert orders(h.deliver(3, book(3, ask=601))) and not h.bot.closed
    expired = OrderUpdate("rejected", 4, SERIES, None, 2, "buy", None, None,
                          f"instrument: {SERIES!r} has expired")  # fmt: skip
    h.deliver(4, ("on_order", expired))
    assert h.bot.closed and h.deliver(5, book(5, ask=602)) == []


# ------------------------------------------------------------------ in a session
# Four years of the credit economy (seed 7: CoreWeave defaults in its 48th month) with two
# listed series: CoreWeave's, which a dealer quotes and a lender hedging its loan buys, and
# OpenAI's, whose implied spread moves every month, quoted by a slower dealer and traded by a
# faster basis trader, which picks off the dealer's quotes left behind when the implied spread
# jumps (the dealer's requote arrives after the basis trader's order).
CDS_SESSION = """
name = "cds-bots"
start = 2024-01-01
days = 1460
seed = 7

[[accounts]]
name = "dealer-crwv"
cash = "$50M"

[[accounts]]
name = "dealer-oai"
cash = "$50M"

[[accounts]]
name = "hedger"
cash = "$20M"

[[accounts]]
name = "basis"
cash = "$20M"

[[cds]]
name = "CRWV-CDS-2030-12-C500"
reference_entity = "CoreWeave"
coupon_bps = 500
initial_spread_bps = 640
effective = 2024-01-01
maturity = 2030-12-20

[[cds]]
name = "OAI-CDS-2030-12-C100"
reference_entity = "OpenAI"
coupon_bps = 100
effective = 2024-01-01
maturity = 2030-12-20

[margin]
interval_ns = "7d"

[economy]

[[bots]]
name = "dealer-crwv"
account = "dealer-crwv"
strategy = "cds_dealer"
params = { series = "CRWV-CDS-2030-12-C500" }

[[bots]]
name = "hedger"
account = "hedger"
strategy = "cds_protection_buyer"
params = { series = "CRWV-CDS-2030-12-C500", pay_up = 120 }

[[bots]]
name = "dealer-oai"
account = "dealer-oai"
strategy = "cds_dealer"
latency = { fixed_ns = 2_000_000 }
params = { series = "OAI-CDS-2030-12-C100", max_position = 40 }

[[bots]]
name = "basis"
account = "basis"
strategy = "cds_basis_trader"
latency = { fixed_ns = 500_000 }
params = { series = "OAI-CDS-2030-12-C100", threshold = 25, size = 5, max_position = 30 }
"""
CRWV, OAI = "CRWV-CDS-2030-12-C500", "OAI-CDS-2030-12-C100"


def run_cds_session(engine: str):
    """The session above on ``engine``: its events and the runner (with the bots)."""
    from clients.scenario import load_scenario
    from exchange.core.clock import Simulator
    from exchange.kernel.engines import engine_class

    scenario = load_scenario(CDS_SESSION)
    events: list = []
    exchange = engine_class(engine)(events.append)
    exchange.start(scenario.name, scenario.seed, {})
    sim = Simulator()
    scenario.setup(exchange)
    scenario.schedule_market(exchange, sim, scenario.seed)
    runner = scenario.drive(exchange, sim, scenario.seed)
    sim.run(scenario.end_ns, on_step=exchange.advance)
    exchange.end()
    return events, runner


@pytest.fixture(scope="module")
def cds_sessions():
    return {engine: run_cds_session(engine) for engine in ("reference", "compiled")}


def _fills(events, account: str, instrument: str):
    """(t, signed contracts, price) of ``account``'s fills in ``instrument``."""
    from exchange.core import events as ev

    out = []
    for e in events:
        if e.kind != ev.FILL or e.instrument != instrument:
            continue
        sign = 1 if e.side == "buy" else -1
        if e.account == account:
            out.append((e.t, sign * e.qty, e.price))
        elif e.counterparty == account:
            out.append((e.t, -sign * e.qty, e.price))
    return out


def test_the_cds_bots_give_the_same_log_on_both_engines(cds_sessions):
    from exchange.core.events import encode

    (ref, _), (compiled, _) = cds_sessions["reference"], cds_sessions["compiled"]
    assert [encode(e) for e in ref] == [encode(e) for e in compiled]


def test_in_a_session_the_cds_bots_trade_by_their_rules_through_a_credit_event(cds_sessions):
    from exchange.core import events as ev

    events, _ = cds_sessions["reference"]
    assert not [e for e in events if e.kind == ev.BOT_FAILED]
    (settled,) = [e for e in events if e.kind == ev.INSTRUMENT_EXPIRED and e.instrument == CRWV]
    assert settled.data["reason"] == "credit event"
    # the hedger only ever bought protection, up to its target (50 % of $100m), and the
    # credit event paid it; the dealer that sold it stayed within its limit
    hedger = _fills(events, "hedger", CRWV)
    assert hedger and all(qty > 0 for _, qty, _ in hedger)
    assert sum(qty for _, qty, _ in hedger) == 50
    (payout,) = [e for e in events if e.kind == ev.SWAP_SETTLED and e.account == "hedger"]
    assert payout.amount > 0
    # after the series closed, no bot kept sending orders into it
    late = [e for e in events if e.t > settled.t and e.kind == ev.COMMAND_RECEIVED]
    assert not [e for e in late if (e.data or {}).get("command", {}).get("instrument") == CRWV]
    # the basis trader bought below the implied spread and sold above it, by more than its
    # threshold, within its position limit; the implied spread: the last model mark
    implied, position, basis_fills = None, 0, 0
    for e in events:
        if e.kind == ev.MARK_PRICE and e.instrument == OAI and e.data["source"] == "model":
            implied = e.price
        elif e.kind == ev.FILL and e.instrument == OAI and "basis" in (e.account, e.counterparty):
            ((_, qty, price),) = _fills([e], "basis", OAI)
            assert (implied - price > 25) if qty > 0 else (price - implied > 25), e
            position += qty
            basis_fills += 1
            assert abs(position) <= 30
    assert basis_fills >= 2
    dealer = 0
    for _, qty, _ in _fills(events, "dealer-oai", OAI):
        dealer += qty
        assert abs(dealer) <= 40


def test_a_session_of_the_cds_bots_conserves_cash_and_positions(cds_sessions):
    from exchange.store.fold import Fold

    events, _ = cds_sessions["reference"]
    fold = Fold()
    for e in events:
        fold.apply(*e)
        total = sum(fold.cash.values()) + sum(fold.pools.values())
        assert total == fold.deposited - fold.withdrawn, f"seq {e.seq}"
        for instrument in (CRWV, OAI):
            assert sum(p.get(instrument, 0) for p in fold.positions.values()) == 0, e.seq
