"""Perpetuals and residual value swaps inside the engine: marks, funding, premiums, settlement.

Numbers are worked by hand in the comments; every test also folds the events and checks the
ledger balances after each one and that the fold reaches the live state hash.
"""

from datetime import date

import pytest

from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.store.fold import Fold
from tests.markets import HOUR_NS as HOUR
from tests.markets import START, perp_spec, rvs_spec

PERP = perp_spec()
RVS = rvs_spec(maturity=date(2024, 8, 30))


class Market:
    def __init__(self, *specs):
        self.events = []
        self.engine = Exchange(self.events.append)
        self.engine.epoch = START
        self.engine.start("test", 1, {})
        for spec in specs:
            self.engine.list_instrument(spec)
        for name in ("a", "b", "c"):
            self.engine.open_account(name)
            self.engine.credit(name, 10_000_000)

    def send(self, **command):
        result = self.engine.handle(command)
        assert result.ok, result.reason
        return result

    def after(self, mark):
        return self.events[mark:]

    def check_ledger(self):
        fold = Fold()
        for event in self.events:
            fold.apply(*event)
            total = sum(fold.cash.values()) + sum(fold.pools.values())
            assert total + fold.withdrawn - fold.deposited == 0, f"seq {event.seq}"
            for instrument in fold.books:
                net = sum(p.get(instrument, 0) for p in fold.positions.values())
                assert net == 0, f"positions of {instrument} at seq {event.seq}"
        assert fold.state_hash() == self.engine.state_hash()
        return fold


def test_tick_values_are_whole_cents():
    assert PERP.tick_value == 10  # $0.001 x 100 GPU-hours = 10 cents a tick a lot
    assert RVS.tick_value == 100 and RVS.payoff_tick_value == 100  # $1 a GPU a contract


def test_index_print_marks_its_perpetual_at_the_index_first():
    m = Market(PERP)
    mark = len(m.events)
    m.engine.publish_index("H100-RENTAL", 2_000)
    kinds = [e.kind for e in m.after(mark)]
    assert kinds == [ev.INDEX_PUBLISHED, ev.MARK_PRICE]
    assert m.events[-1].price == 2_000 and m.engine.instruments["H100-PERP"].mark == 2_000
    m.check_ledger()


def test_perpetual_trades_move_positions_not_cash():
    m = Market(PERP)
    m.engine.publish_index("H100-RENTAL", 2_000)
    m.send(type="submit", account="a", instrument="H100-PERP", side="sell", price=2_040, qty=30)
    before = m.engine.accounts["c"].cash
    m.send(
        type="submit", account="c", instrument="H100-PERP", side="buy", order_type="market", qty=5
    )
    assert m.engine.accounts["c"].positions["H100-PERP"] == 5
    assert m.engine.accounts["c"].cash == before
    m.check_ledger()


def test_funding_worked_example_longs_pay_shorts():
    """Impact bid 2,020 and impact ask 2,040 over an index of 2,000: P = 1 %, and
    F = P + clamp(0.01 % - P, -0.05 %, 0.05 %) = 0.95 %. At a mark of 2,000 ticks and 10 cents
    a tick, one lot owes 0.95 % x 20,000 = 190 cents; a long of 5 pays 950 to the short."""
    m = Market(PERP)
    m.engine.publish_index("H100-RENTAL", 2_000)
    m.send(type="submit", account="a", instrument="H100-PERP", side="buy", price=2_020, qty=30)
    m.send(type="submit", account="a", instrument="H100-PERP", side="sell", price=2_040, qty=30)
    m.send(
        type="submit", account="c", instrument="H100-PERP", side="buy", order_type="market", qty=5
    )
    cash_a, cash_c = m.engine.accounts["a"].cash, m.engine.accounts["c"].cash
    m.engine.advance(8 * HOUR)
    mark = len(m.events)
    m.engine.fund("H100-PERP")
    rate, paid_c, paid_a = m.after(mark)  # the payer first, so the pool never lends
    assert rate.kind == ev.FUNDING_RATE and rate.data["rate"] == "19/2000"  # 0.95 %
    assert rate.amount == 190 * 10**9  # the cumulative index, nano-cents per lot
    assert (paid_a.account, paid_a.qty, paid_a.amount) == ("a", -5, 950)
    assert (paid_c.account, paid_c.qty, paid_c.amount) == ("c", 5, -950)
    assert m.engine.accounts["a"].cash == cash_a + 950
    assert m.engine.accounts["c"].cash == cash_c - 950
    assert m.engine.pools["funding"] == 0
    m.check_ledger()


def test_funding_with_no_positions_only_moves_the_index():
    m = Market(PERP)
    m.engine.publish_index("H100-RENTAL", 2_000)
    mark = len(m.events)
    m.engine.fund("H100-PERP")
    assert [e.kind for e in m.after(mark)] == [ev.FUNDING_RATE]
    # no impact prices either side: P = 0, so F = I = 0.01 % of 20,000 cents = 2 cents a lot
    assert m.events[-1].amount == 2 * 10**9
    m.check_ledger()


def _rvs_trade(m, qty=10, premium=150):
    m.engine.publish_index("H100-RESALE", 21_000)
    m.send(type="submit", account="b", instrument="H100-RVS", side="sell", price=premium, qty=qty)
    m.send(type="submit", account="a", instrument="H100-RVS", side="buy", price=premium, qty=qty)


def test_swap_premium_is_paid_by_the_buyer_to_the_seller_each_period():
    """10 contracts at $150 a GPU a period, one GPU a contract: $1,500 a period."""
    m = Market(RVS)
    _rvs_trade(m)
    assert m.engine.accounts["a"].basis["H100-RVS"] == 1_500
    cash_a, cash_b = m.engine.accounts["a"].cash, m.engine.accounts["b"].cash
    m.engine.advance(30 * DAY_NS)
    mark = len(m.events)
    m.engine.charge_premium("H100-RVS")
    paid = [(e.account, e.amount) for e in m.after(mark) if e.kind == ev.PREMIUM_PAID]
    assert paid == [("a", -150_000), ("b", 150_000)]
    # the period falls due, so the series is re-marked without it and its variation margin
    # settled with the premium (issue #18): cash moves by both, the pool ends where it began
    vm = {e.account: e.amount for e in m.after(mark) if e.kind == ev.VARIATION_MARGIN}
    assert m.engine.accounts["a"].cash == cash_a - 150_000 + vm["a"]
    assert m.engine.accounts["b"].cash == cash_b + 150_000 + vm["b"]
    assert m.engine.pools["clearing"] == 0
    m.check_ledger()


def test_offset_at_another_premium_keeps_the_locked_in_difference():
    m = Market(RVS)
    _rvs_trade(m)  # a buys 10 at 150 from b
    m.send(type="submit", account="c", instrument="H100-RVS", side="buy", price=170, qty=10)
    m.send(type="submit", account="a", instrument="H100-RVS", side="sell", price=170, qty=10)
    assert m.engine.accounts["a"].positions["H100-RVS"] == 0
    assert m.engine.accounts["a"].basis["H100-RVS"] == -200  # (150 - 170) x 10: it now earns
    m.engine.advance(30 * DAY_NS)
    mark = len(m.events)
    m.engine.charge_premium("H100-RVS")
    paid = {e.account: e.amount for e in m.after(mark) if e.kind == ev.PREMIUM_PAID}
    assert paid == {"a": 20_000, "b": 150_000, "c": -170_000}
    m.check_ledger()


def test_swap_settles_max_floor_minus_index_at_maturity_and_closes():
    """Floor $20,000, resale index $18,500 at maturity: the seller pays $1,500 a GPU, so
    10 contracts pay $15,000 to the buyer."""
    m = Market(RVS)
    _rvs_trade(m)
    m.send(type="submit", account="c", instrument="H100-RVS", side="sell", price=400, qty=1)
    m.engine.advance(60 * DAY_NS)
    m.engine.publish_index("H100-RESALE", 19_000)
    m.engine.margin_cycle()  # variation margin pays part of the protection's value early
    early = {e.account: e.amount for e in m.events if e.kind == ev.VARIATION_MARGIN}
    assert early["a"] > 0 and early["b"] == -early["a"]
    m.engine.advance(90 * DAY_NS)
    m.engine.publish_index("H100-RESALE", 18_500)
    basis_a = m.engine.accounts["a"].vm_basis["H100-RVS"]
    mark = len(m.events)
    m.engine.expire("H100-RVS")
    kinds = [e.kind for e in m.after(mark)]
    assert kinds == [ev.ORDER_CANCELLED, ev.SWAP_SETTLED, ev.SWAP_SETTLED, ev.INSTRUMENT_EXPIRED]
    cancelled, settled_b, settled_a = m.after(mark)[:3]  # the seller pays in first
    assert cancelled.data["reason"] == "expired"
    assert (settled_a.account, settled_a.amount) == ("a", 1_500_000 - basis_a)
    assert (settled_b.account, settled_b.amount) == ("b", -1_500_000 + basis_a)
    # over the life of the swap the buyer received exactly the payoff, in two parts:
    # value changes through variation margin, the rest at settlement
    received = [
        e.amount
        for e in m.events
        if e.account == "a" and e.kind in (ev.VARIATION_MARGIN, ev.SWAP_SETTLED)
    ]
    assert sum(received) == 1_500_000  # (no premium was charged in this test)
    assert "H100-RVS" not in m.engine.accounts["a"].positions
    late = m.engine.handle(
        {
            "type": "submit",
            "account": "a",
            "instrument": "H100-RVS",
            "side": "buy",
            "price": 10,
            "qty": 1,
        }
    )
    assert not late.ok and "expired" in late.reason
    m.check_ledger()


def test_swap_above_the_floor_pays_no_payoff():
    m = Market(RVS)
    _rvs_trade(m)
    m.engine.publish_index("H100-RESALE", 25_000)
    # a trade at a premium is carried at nothing until a cycle marks it: no cycle ran here
    basis_a = m.engine.accounts["a"].vm_basis.get("H100-RVS", 0)
    assert basis_a == 0
    mark = len(m.events)
    m.engine.expire("H100-RVS")
    settled = {e.account: e.amount for e in m.after(mark) if e.kind == ev.SWAP_SETTLED}
    # no payoff and nothing carried: nobody pays anything at settlement
    assert settled == {"a": 0, "b": 0}
    m.check_ledger()


def test_swap_is_marked_from_the_model_when_its_book_is_empty():
    m = Market(RVS)
    m.engine.publish_index("H100-RESALE", 18_000)  # below the floor: the put is in the money
    marked = m.events[-1]
    assert marked.kind == ev.MARK_PRICE and marked.data["source"] == "model"
    # intrinsic alone is $2,000 over 3 premium periods: the model premium is at least $666
    assert marked.price >= 666
    m.check_ledger()


@pytest.mark.parametrize("seed", range(3))
def test_products_session_replays_to_the_live_hash(tmp_path, seed):
    from exchange.sessions import session

    summary = session.run("products", tmp_path / "p.db", seed=seed, overrides={"days": 60})
    assert session.replay(summary.path, use_snapshots=False).state_hash() == summary.state_hash
    verdict = session.verify(summary.path)
    assert verdict.ok, verdict.problems


@pytest.mark.parametrize("seed", [11, 12])
def test_products_session_balances_after_every_event(tmp_path, seed):
    """Funding, premiums and settlement over a whole seeded session: after every event the
    cash plus the pools equals the deposits, positions net to zero, no pool ever goes negative
    (payers pay in before receivers are paid), and the clearing pool is back at zero after every
    run of premium, variation-margin or settlement payments."""
    from exchange.sessions import session
    from exchange.store.event_store import EventStore

    summary = session.run("products", tmp_path / "p.db", seed=seed, overrides={"days": 75})
    fold = Fold()
    with EventStore.open(summary.path, mode="r") as store:
        rows = list(store.rows(1, store.last_seq))
    kinds_seen = set()
    for i, row in enumerate(rows):
        fold.apply(*row)
        kinds_seen.add(row[2])
        assert sum(fold.cash.values()) + sum(fold.pools.values()) == fold.deposited - fold.withdrawn
        assert fold.pools["funding"] >= 0 and fold.pools["clearing"] >= 0
        for instrument in fold.books:
            assert sum(p.get(instrument, 0) for p in fold.positions.values()) == 0
        following = rows[i + 1][2] if i + 1 < len(rows) else None
        # a premium date pays variation margin and premiums interleaved, payers first (#18)
        payments = (ev.PREMIUM_PAID, ev.VARIATION_MARGIN, ev.SWAP_SETTLED)
        if row[2] in payments and following not in payments:
            assert fold.pools["clearing"] == 0, f"clearing not flat after seq {row[0]}"
    assert {ev.FUNDING_PAID, ev.PREMIUM_PAID, ev.SWAP_SETTLED, ev.INSTRUMENT_EXPIRED} <= kinds_seen
    assert fold.state_hash() == summary.state_hash


@pytest.mark.parametrize("premium", [50, 150, 400])
def test_the_traded_premium_is_what_the_buyer_pays_over_the_life_of_a_swap(premium):
    """Held to maturity, a protection buyer's cash changes by exactly the payoff less the
    premiums at the price it traded, whatever the model said in between: a seller who asks more
    earns more. (Premiums, variation margin and settlement are three routes for one total.)"""
    m = Market(RVS)
    _rvs_trade(m, premium=premium)
    start_a = m.engine.accounts["a"].cash
    for day, index in ((30, 20_500), (60, 19_000), (75, 19_400), (90, 18_700)):
        m.engine.advance(day * DAY_NS)
        m.engine.publish_index("H100-RESALE", index)
        if day in (30, 60, 90):
            m.engine.charge_premium("H100-RVS")
        m.engine.margin_cycle()
    m.engine.advance(150 * DAY_NS)
    m.engine.publish_index("H100-RESALE", 18_500)
    m.engine.margin_cycle()
    m.engine.expire("H100-RVS")
    premiums = sum(e.amount for e in m.events if e.kind == ev.PREMIUM_PAID and e.account == "a")
    assert premiums == -premium * 100 * 10 * 3  # three periods, $1 a tick, 10 contracts
    payoff = (20_000 - 18_500) * 100 * 10
    assert m.engine.accounts["a"].cash - start_a == payoff + premiums
    m.check_ledger()
