"""State first, then the event that announces it: at every event a listener reads the engine
and finds exactly the state the events so far imply (the fold of them), book aside.

The book is the one exception, and a documented one: a command's matching is one step of the
matching core, done before the engine announces its outcome event by event (``OrderAccepted``,
then each ``Fill``...), so the resting orders a listener would read from the book run ahead of
the events. Everything the engine itself keeps -- cash, positions, premium and VM bases, open
lots, live orders, last price, calls, pools -- moves with its own event.
"""

from datetime import date

from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS
from exchange.store.fold import Fold
from tests.exchange.products.test_products import PERP, Market
from tests.markets import rvs_spec

SWAP = rvs_spec(maturity=date(2025, 6, 1), floor=9_000)


def _without_books(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "books"}


class StateAtEveryEvent:
    """Folds each event as it is emitted and compares the engine's canonical state (books
    aside) with the fold's, and the engine's own record of live orders and open lots with the
    orders the events left resting, and checks that the default fund equals the contributions
    left; records every mismatch with the event it happened at."""

    def __init__(self, m: Market) -> None:
        self.engine = m.engine
        self.fold = Fold()
        self.kinds: list[str] = []
        self.problems: list[str] = []
        for event in m.events:
            self.fold.apply(*event)
        m.engine.subscribe(self)

    def __call__(self, event) -> None:
        engine, fold = self.engine, self.fold
        fold.apply(*event)
        self.kinds.append(event.kind)
        where = f"seq {event.seq} {event.kind} {event.side or ''}"
        pool = engine.pools["default_fund"]
        if sum(engine.contributions.values()) != pool:
            self.problems.append(
                f"{where}: contributions sum to {sum(engine.contributions.values())}, "
                f"the default fund holds {pool}"
            )
        live, folded = engine.canonical_state(), fold.canonical_state()
        for part, value in _without_books(live).items():
            if value != folded[part]:
                self.problems.append(f"{where}: engine {part} {value} != events {folded[part]}")
        resting = {
            order_id: (account, side)
            for name in fold.books
            for side, _price, order_id, account, _qty in fold.resting(name)
        }
        known = {
            oid: (o.account, "buy" if o.side == 0 else "sell") for oid, o in engine.orders.items()
        }
        if known != resting:
            self.problems.append(f"{where}: live orders {known} != resting by events {resting}")
        for account in engine.accounts.values():
            for name, (buy, sell) in account.open_lots.items():
                rested = {"buy": 0, "sell": 0}
                for side, _price, _oid, owner, qty in fold.resting(name):
                    if owner == account.name:
                        rested[side] += qty
                if (buy, sell) != (rested["buy"], rested["sell"]):
                    self.problems.append(
                        f"{where}: {account.name} open lots {(buy, sell)} in {name} != "
                        f"resting by events {rested}"
                    )


def test_a_sweep_of_several_makers_removes_each_filled_order_and_sets_the_last_price_at_its_fill():
    m = Market(PERP)
    m.engine.publish_index("H100-RENTAL", 2_000)
    for account, price in (("a", 2_000), ("b", 2_001), ("a", 2_002)):
        m.send(
            type="submit", account=account, instrument="H100-PERP", side="sell", price=price, qty=5
        )
    listener = StateAtEveryEvent(m)
    m.send(type="submit", account="c", instrument="H100-PERP", side="buy", price=2_002, qty=12)
    assert listener.kinds.count(ev.FILL) == 3
    assert listener.problems == []


def test_an_amend_moves_open_lots_and_live_orders_before_its_event_kept_or_lost():
    m = Market(PERP)
    m.engine.publish_index("H100-RENTAL", 2_000)
    m.send(type="submit", account="a", instrument="H100-PERP", side="sell", price=2_010, qty=5)
    order = m.send(
        type="submit", account="b", instrument="H100-PERP", side="buy", price=1_990, qty=8
    )
    listener = StateAtEveryEvent(m)
    m.send(type="amend", account="b", order_id=order.order_id, price=1_990, qty=3)  # kept
    m.send(type="amend", account="b", order_id=order.order_id, price=1_995, qty=6)  # lost, rests
    m.send(type="amend", account="b", order_id=order.order_id, price=2_010, qty=9)  # lost, trades
    assert listener.kinds.count(ev.ORDER_AMENDED) == 3 and ev.FILL in listener.kinds
    assert listener.problems == []


def test_each_variation_margin_payment_moves_only_its_own_accounts_basis_before_its_event():
    m = Market(SWAP)
    m.engine.publish_index(SWAP.resale_index, 10_000)
    for seller, buyer, price in (("a", "b", 50), ("b", "c", 40), ("a", "c", 45)):
        m.send(
            type="submit", account=seller, instrument=SWAP.name, side="sell", price=price, qty=10
        )
        m.send(type="submit", account=buyer, instrument=SWAP.name, side="buy", price=price, qty=10)
    listener = StateAtEveryEvent(m)
    for day in (1, 2, 30, 31):  # a premium date (2024-07-01) among the cycles
        m.engine.advance(day * DAY_NS)
        m.engine.publish_index(SWAP.resale_index, 10_000 - 150 * day)
        if any(m.engine.date_ns(d) == day * DAY_NS for d in SWAP.premium_dates()):
            m.engine.charge_premium(SWAP.name)
        m.engine.margin_cycle()
    assert listener.kinds.count(ev.VARIATION_MARGIN) >= 6 and ev.PREMIUM_PAID in listener.kinds
    assert listener.problems == []


def test_bilateral_collateral_and_a_bilateral_default_move_the_state_before_their_events():
    """A bilateral session (``exchange.risk.bilateral``) through deliveries, a downgrade, a call,
    the seller's default, terminations, collateral applied, a recovery and re-hedges: at each
    event the engine's contracts, collateral and pools (the ``bilateral`` part of the state)
    equal the fold of the events so far."""
    from tests.exchange.risk.test_bilateral import Session

    s = Session(20_000_000)
    listener = StateAtEveryEvent(s)
    for day, resale in ((1, 9_400), (2, 7_000), (3, 6_800), (4, 6_500), (5, 6_000)):
        s.day(day, resale)
    for kind in (
        ev.COLLATERAL_POSTED,
        ev.RATING_CHANGED,
        ev.COLLATERAL_CALL,
        ev.DEFAULT,
        ev.PROTECTION_TERMINATED,
        ev.COLLATERAL_APPLIED,
        ev.RECOVERY_PAID,
        ev.REHEDGED,
    ):
        assert kind in listener.kinds, f"the session should reach {kind}"
    assert "bilateral" in s.engine.canonical_state()
    assert listener.problems == []
