"""Variation margin, collateral calls, cures and defaults inside the engine."""

from functools import partial

import pytest

from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS
from exchange.products.perp import MarginTier
from exchange.risk.margin import MarginParams
from exchange.risk.margin_cycle import MarginConfig
from tests.exchange.products.test_products import Market
from tests.markets import perp_spec

#: The perpetual of these tests is margined, as every perpetual is, by its tier: here one tier
#: of 40 % initial and 30 % maintenance margin of notional (a tight account is called after
#: moves of a few percent). A 20-lot long at 2,000 ticks and 10 cents a tick (notional
#: 400,000) needs IM 160,000 and MM 120,000; at 1,900 (notional 380,000) 152,000 and 114,000.
PERP = perp_spec(
    margin_tiers=[
        MarginTier(
            max_position_lots=1_000, initial_margin_ppm=400_000, maintenance_margin_ppm=300_000
        )
    ]
)

CONFIG = MarginConfig(
    interval_ns=DAY_NS,
    cure_ns=2 * DAY_NS,
    index_move_trigger_ppm=0,
    params=MarginParams(credit_tiers=[], concentration_addon_ppm=0),
)


def leveraged(keep=100_000):
    """c is long 20 lots of the perpetual at 2,000 ticks (notional 20 x 2,000 x 10 cents =
    $4,000) against a's short; c then withdraws down to ``keep`` cents of cash."""
    m = Market(PERP)
    m.engine.margin = CONFIG
    m.engine.publish_index("H100-RENTAL", 2_000)
    m.send(type="submit", account="a", instrument="H100-PERP", side="sell", price=2_000, qty=20)
    m.send(type="submit", account="c", instrument="H100-PERP", side="buy", price=2_000, qty=20)
    m.send(type="withdraw", account="c", amount=m.engine.accounts["c"].cash - keep)
    return m


def kinds(m, since):
    return [e.kind for e in m.after(since)]


def test_variation_margin_pays_the_change_in_mark_both_ways():
    m = leveraged()
    m.engine.advance(DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_900)  # mark falls 100 ticks: c loses 20 x 100 x 10
    mark = len(m.events)
    m.engine.margin_cycle()
    vm = {e.account: e.amount for e in m.after(mark) if e.kind == ev.VARIATION_MARGIN}
    assert vm == {"a": 20_000, "c": -20_000}
    assert m.engine.accounts["c"].cash == 80_000
    m.check_ledger()


def test_im_is_the_tier_rate_of_notional_and_an_account_below_mm_is_called():
    """IM of a 20-lot long at 1,900 ticks: 40 % of the notional 20 x 1,900 x 10 = 380,000 is
    152,000 cents; MM 30 % of it, 114,000. c has 80,000: called for 152,000 - 80,000."""
    m = leveraged()
    m.engine.advance(DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_900)
    mark = len(m.events)
    m.engine.margin_cycle()
    reqs = {
        e.account: (e.amount, e.data["mm"])
        for e in m.after(mark)
        if e.kind == ev.MARGIN_REQUIREMENT
    }
    assert reqs["c"] == (152_000, 114_000)
    call = m.events[-1]
    assert (call.kind, call.account, call.amount) == (ev.COLLATERAL_CALL, "c", 72_000)
    assert call.data["deadline"] == 3 * DAY_NS
    assert m.engine.calls == {"c": [72_000, DAY_NS]}
    m.check_ledger()


def test_partial_then_full_deposit_reduces_then_cures_the_call():
    m = called()
    mark = len(m.events)
    m.send(type="deposit", account="c", amount=30_000)
    assert kinds(m, mark) == [ev.COMMAND_RECEIVED, ev.DEPOSIT, ev.CALL_REDUCED]
    assert m.events[-1].amount == 42_000
    mark = len(m.events)
    m.send(type="deposit", account="c", amount=42_000)
    assert kinds(m, mark) == [ev.COMMAND_RECEIVED, ev.DEPOSIT, ev.CALL_CURED]
    assert m.engine.calls == {}
    m.check_ledger()


def test_called_account_may_only_reduce_its_position():
    m = called()
    more = m.engine.handle(
        {
            "type": "submit",
            "account": "c",
            "instrument": "H100-PERP",
            "side": "buy",
            "price": 1_900,
            "qty": 1,
        }
    )
    assert not more.ok and "collateral call" in more.reason
    too_much = m.engine.handle(
        {
            "type": "submit",
            "account": "c",
            "instrument": "H100-PERP",
            "side": "sell",
            "price": 1_900,
            "qty": 21,
        }
    )
    assert not too_much.ok
    assert m.engine.handle(
        {
            "type": "submit",
            "account": "c",
            "instrument": "H100-PERP",
            "side": "sell",
            "price": 1_900,
            "qty": 5,
        }
    ).ok
    m.check_ledger()


def test_a_call_still_open_after_its_deadline_defaults_and_orders_are_cancelled():
    m = called()
    m.send(type="submit", account="c", instrument="H100-PERP", side="sell", price=2_500, qty=3)
    m.engine.advance(2 * DAY_NS)
    m.engine.margin_cycle()
    assert "c" in m.engine.calls  # deadline (day 3) not reached yet: still called
    m.engine.advance(3 * DAY_NS)
    mark = len(m.events)
    m.engine.margin_cycle()
    defaulted = [e for e in m.after(mark) if e.kind == ev.DEFAULT]
    assert [(e.account, e.data["reason"]) for e in defaulted] == [("c", "missed call")]
    cancels = [e for e in m.after(mark) if e.kind == ev.ORDER_CANCELLED]
    # its resting order went at day 2's liquidation attempt; today the liquidation order and
    # then the close-out order find no bids, and both are cancelled unfilled
    assert [e.data["reason"] for e in cancels] == ["liquidation", "closeout"]
    moved = [(e.account, e.qty, e.counterparty) for e in m.after(mark) if e.kind == ev.DELEVERAGED]
    assert moved == [("a", 20, "c")]  # the only opposite position takes the remainder
    assert m.engine.accounts["c"].positions.get("H100-PERP", 0) == 0
    assert m.engine.accounts["a"].positions.get("H100-PERP", 0) == 0
    assert m.engine.defaulted == ["c"] and "c" not in m.engine.calls
    late = m.engine.handle(
        {
            "type": "submit",
            "account": "c",
            "instrument": "H100-PERP",
            "side": "sell",
            "price": 1_900,
            "qty": 1,
        }
    )
    assert not late.ok and "defaulted" in late.reason
    m.check_ledger()


def test_a_large_index_move_triggers_a_cycle_at_once():
    """c holds 130,000 against an MM of 120,000 at 2,000 ticks; at 1,890 it has lost 22,000
    and its MM is 113,400: the print itself triggers the cycle that calls it."""
    m = leveraged(keep=130_000)
    m.engine.margin = CONFIG.model_copy(update={"index_move_trigger_ppm": 50_000})
    m.engine.margin_cycle()  # records the index the trigger is measured from
    assert m.engine.calls == {}
    m.engine.advance(3_600 * 10**9)
    mark = len(m.events)
    m.engine.publish_index("H100-RENTAL", 1_890)  # -5.5 %: beyond the 5 % trigger
    assert ev.VARIATION_MARGIN in kinds(m, mark) and ev.COLLATERAL_CALL in kinds(m, mark)
    m.check_ledger()


def called():
    """c, called for 72,000 cents on day 1."""
    m = leveraged()
    m.engine.advance(DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_900)
    m.engine.margin_cycle()
    assert m.engine.calls["c"][0] == 72_000
    return m


def test_a_thin_guarantor_is_called_and_defaults_and_the_session_replays(tmp_path):
    from exchange.sessions import session
    from exchange.store.event_store import EventStore

    summary = session.run(
        "products",
        tmp_path / "thin.db",
        seed=5,
        overrides={"days": 75, "guarantor_cash": 30_000_00, "owner_contracts": 400},
    )
    with EventStore.open(summary.path, mode="r") as store:
        calls = list(store.events(kind=ev.COLLATERAL_CALL, account="guarantor"))
        defaults = list(store.events(kind=ev.DEFAULT))
    assert calls, "the thin guarantor should be called"
    assert [e.account for e in defaults] == ["guarantor"]
    assert defaults[0].t >= calls[0].t + CONFIG.cure_ns
    assert session.replay(summary.path).state_hash() == summary.state_hash
    verdict = session.verify(summary.path)
    assert verdict.ok, verdict.problems


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sessions_with_defaults_conserve_cash_and_respect_the_waterfall_order(tmp_path, seed):
    """Random index paths (the seed drives the index noise) and a thin guarantor: after every
    event cash plus pools equals external money in less out and positions net to zero; no
    member loses default-fund money while the insurance fund has any, and no one is haircut
    while either fund has any; the replay reaches the live hash."""
    from exchange.sessions import session
    from exchange.store.event_store import EventStore
    from exchange.store.fold import Fold

    summary = session.run(
        "products",
        tmp_path / "d.db",
        seed=seed,
        overrides={
            "days": 75,
            "guarantor_cash": 30_000_00,
            "owner_contracts": 1_000,
            "insurance_fund": 5_000_00,
            "default_fund_contribution": 2_000_00,
            # the maker takes the whole book at a steep discount: the close-out costs the
            # guarantor more than it has, and the loss runs down the waterfall
            "margin": {
                "auction_bidders": [{"account": "maker", "discount_ppm": 400_000, "max_lots": 600}]
            },
        },
    )
    with EventStore.open(summary.path, mode="r") as store:
        rows = list(store.rows(1, store.last_seq))
    fold = Fold()
    seen = set()
    for row in rows:
        kind = row[2]
        if kind == ev.DEFAULT_FUND_LOSS:
            assert fold.pools["insurance"] == 0, f"member debited before insurance, {row[0]}"
        if kind == ev.HAIRCUT:
            assert fold.pools["insurance"] == 0 and fold.pools["default_fund"] == 0
        fold.apply(*row)
        seen.add(kind)
        assert sum(fold.cash.values()) + sum(fold.pools.values()) == (
            fold.deposited - fold.withdrawn
        ), f"seq {row[0]}"
        for instrument in fold.books:
            assert sum(p.get(instrument, 0) for p in fold.positions.values()) == 0
    assert ev.DEFAULT in seen and ev.WATERFALL_DRAW in seen
    assert fold.state_hash() == summary.state_hash


def crashed(insurance, contributions):
    """c is called on day 1, the index halves before its deadline, and it defaults on day 3
    owing 100,000 cents: the day-3 cycle pays a 20 x 900 x 10 = 180,000 loss out of 80,000."""
    m = leveraged()
    m.engine.fund_pool("insurance", insurance)
    for member, amount in contributions.items():
        m.engine.contribute(member, amount)
    m.engine.advance(DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_900)
    m.engine.margin_cycle()
    m.engine.advance(3 * DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_000)
    mark = len(m.events)
    m.engine.margin_cycle()
    return m, m.after(mark)


def test_waterfall_runs_own_contribution_then_insurance_then_the_default_fund():
    m, events = crashed(30_000, {"a": 40_000, "b": 20_000, "c": 10_000})
    steps = [
        (e.kind, e.account, e.side, e.amount)
        for e in events
        if e.kind in (ev.WATERFALL_DRAW, ev.DEFAULT_FUND_LOSS, ev.HAIRCUT)
    ]
    # c's cash is 80,000 - 10,000 (its contribution) - 180,000 = -110,000
    assert steps == [
        (ev.WATERFALL_DRAW, "c", "own", 10_000),
        (ev.WATERFALL_DRAW, "c", "insurance", 30_000),
        (ev.DEFAULT_FUND_LOSS, "a", None, 40_000),  # pro rata 40 : 20 of 60,000 ...
        (ev.DEFAULT_FUND_LOSS, "b", None, 20_000),  # ... all of it
        (ev.HAIRCUT, "a", None, -10_000),  # a takes c's 20 lots at the bankruptcy price
    ]
    haircut = next(e for e in events if e.kind == ev.HAIRCUT)
    assert haircut.data["step"] == "adl"
    # the bankruptcy price: 10,000 cents over 20 lots of 10 cents a tick is 50 ticks worse
    # than the 1,000 mark for a, who received the lots -- its position is now flat
    assert m.engine.accounts["a"].positions.get("H100-PERP", 0) == 0
    assert m.engine.accounts["c"].cash == 0
    assert m.engine.pools["insurance"] == 0 and m.engine.pools["default_fund"] == 0
    m.check_ledger()


def test_a_small_loss_stops_at_the_insurance_fund_and_debits_no_member():
    m, events = crashed(500_000, {"a": 40_000, "c": 10_000})
    kinds_seen = [e.kind for e in events]
    assert ev.DEFAULT_FUND_LOSS not in kinds_seen and ev.HAIRCUT not in kinds_seen
    draws = [(e.side, e.amount) for e in events if e.kind == ev.WATERFALL_DRAW]
    assert draws == [("own", 10_000), ("insurance", 100_000)]
    assert m.engine.contributions == {"a": 40_000, "c": 0}
    m.check_ledger()


def test_members_share_a_default_fund_loss_pro_rata_exactly():
    from exchange.risk.default import _pro_rata

    assert _pro_rata(100, {"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    assert _pro_rata(7, {"x": 3, "y": 1}) == {"x": 5, "y": 2}  # 5.25 and 1.75: y's .75 wins
    assert sum(_pro_rata(999, {"p": 5, "q": 7, "r": 11}).values()) == 999


def test_a_perpetual_below_maintenance_is_liquidated_through_the_book_within_the_band():
    """b bids 12 lots at 1,850 and 50 at 1,600; the band is 10 % of the 1,900 mark, so c's
    20-lot liquidation sells 12 at 1,850 and stops above 1,710: the 1,600 bid is not hit.
    It happens at the mark itself (c's equity 100,000 - 20,000 = 80,000 is below the MM of
    114,000 at 1,900), before the day's cycle."""
    m = leveraged()
    m.send(type="submit", account="b", instrument="H100-PERP", side="buy", price=1_850, qty=12)
    m.send(type="submit", account="b", instrument="H100-PERP", side="buy", price=1_600, qty=50)
    m.engine.advance(DAY_NS)
    mark = len(m.events)
    m.engine.publish_index("H100-RENTAL", 1_900)
    printed = len(m.events)
    assert ev.CLOSE_OUT in kinds(m, mark)
    m.engine.margin_cycle()
    assert ev.CLOSE_OUT not in kinds(m, printed)  # 8 lots left, 74,000 over an MM of 45,600
    events = m.after(mark)
    close = next(e for e in events if e.kind == ev.CLOSE_OUT)
    assert (close.account, close.side, close.qty, close.price) == ("c", "sell", 20, 1_710)
    assert close.data["reason"] == "liquidation"
    fills = [(e.price, e.qty, e.counterparty) for e in events if e.kind == ev.FILL]
    assert fills == [(1_850, 12, "b")]
    assert m.engine.accounts["c"].positions["H100-PERP"] == 8
    # selling 12 lots 50 ticks under the mark cost 6,000: c keeps 74,000 against an IM of
    # 40 % of 8 x 1,900 x 10 = 60,800 (MM 30 %, 45,600) for what is left, so the liquidation
    # spared it the call
    assert m.engine.accounts["c"].cash == 74_000
    assert m.engine.requirements["c"] == (60_800, 45_600)
    assert ev.COLLATERAL_CALL not in [e.kind for e in events]
    m.check_ledger()


def test_with_no_lots_left_to_deleverage_the_gainers_give_back_variation_margin():
    """b bids for all 20 lots inside the band at 950 ticks: that cycle's liquidation sells
    c's position into it, so at the default there is nothing to deleverage; the shortfall
    left after the funds comes from the accounts paid variation margin this cycle, largest
    first (a gained 180,000)."""
    m = leveraged()
    m.engine.fund_pool("insurance", 5_000)
    m.engine.advance(DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_900)
    m.engine.margin_cycle()
    m.engine.advance(3 * DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_000)
    m.send(type="submit", account="b", instrument="H100-PERP", side="buy", price=950, qty=20)
    mark = len(m.events)
    m.engine.margin_cycle()
    events = m.after(mark)
    assert ev.DELEVERAGED not in [e.kind for e in events]
    cuts = [(e.account, e.amount, e.data["step"]) for e in events if e.kind == ev.HAIRCUT]
    assert len(cuts) == 1 and cuts[0][0] == "a" and cuts[0][2] == "vm_gains"
    assert m.engine.accounts["c"].cash == 0
    m.check_ledger()


def test_what_the_book_cannot_take_is_auctioned_to_standing_bidders_before_deleveraging():
    """b stands ready to take up to 15 lots at 5 % from the mark. c defaults holding 20 lots
    at a 1,000 mark with no bids: b is awarded 15 at 950, and the last 5 are deleveraged to a
    (the only opposite position). Variation margin then pays b the 5 % it bid below the mark:
    15 x 50 x 10 = 7,500 cents, at the defaulter's expense."""
    from exchange.risk.margin_cycle import AuctionBidder

    m = leveraged()
    m.engine.margin = CONFIG.model_copy(
        update={"auction_bidders": [AuctionBidder(account="b", discount_ppm=50_000, max_lots=15)]}
    )
    m.engine.advance(DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_900)
    m.engine.margin_cycle()
    m.engine.advance(3 * DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_000)
    mark = len(m.events)
    m.engine.margin_cycle()
    events = m.after(mark)
    awards = [(e.account, e.qty, e.price) for e in events if e.kind == ev.AUCTION_AWARD]
    assert awards == [("b", 15, 950)]
    moved = [(e.account, e.qty) for e in events if e.kind == ev.DELEVERAGED]
    assert moved == [("a", 5)]
    vm_b = [e.amount for e in events if e.kind == ev.VARIATION_MARGIN and e.account == "b"]
    assert vm_b == [7_500]
    assert m.engine.accounts["b"].positions["H100-PERP"] == 15
    m.check_ledger()


def test_deleveraging_takes_the_most_profitable_relative_to_cash_first():
    """a and b are both short against c's long; a has earned more variation margin per unit
    of cash, so c's remainder goes to a first."""
    from exchange.risk.default import _ranked

    m = leveraged()
    m.send(type="submit", account="b", instrument="H100-PERP", side="sell", price=2_000, qty=5)
    m.send(type="submit", account="c", instrument="H100-PERP", side="buy", price=2_000, qty=5)
    m.engine.vm_profit = {"a": {"H100-PERP": 500_000}, "b": {"H100-PERP": 10}}
    assert [acc.name for acc in _ranked(m.engine, "H100-PERP", -1, "c")] == ["a", "b"]
    m.engine.vm_profit = {"a": {"H100-PERP": 10}, "b": {"H100-PERP": 500_000}}
    assert [acc.name for acc in _ranked(m.engine, "H100-PERP", -1, "c")] == ["b", "a"]


def test_a_liquidation_that_leaves_a_debt_and_no_position_is_called_and_defaults():
    """c is liquidated in full through the book, but the fills cost more than its cash: with
    no position left it has no margin requirement, yet its negative cash is a debt — it is
    called for it and, not paying, defaults, so the waterfall (not the others' cash) covers it."""
    m = leveraged(keep=10_000)
    m.engine.fund_pool("insurance", 1_000_000)
    m.send(type="submit", account="b", instrument="H100-PERP", side="buy", price=1_750, qty=20)
    m.engine.advance(DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_900)
    mark = len(m.events)
    m.engine.margin_cycle()
    assert m.engine.accounts["c"].positions.get("H100-PERP", 0) == 0
    debt = -m.engine.accounts["c"].cash
    assert debt > 0
    call = next(e for e in m.after(mark) if e.kind == ev.COLLATERAL_CALL)
    assert (call.account, call.amount) == ("c", debt)
    m.engine.advance(3 * DAY_NS)
    m.engine.margin_cycle()
    events = m.after(mark)
    assert any(e.kind == ev.DEFAULT and e.account == "c" for e in events)
    draws = [e for e in events if e.kind == ev.WATERFALL_DRAW and e.account == "c"]
    assert sum(e.amount for e in draws) == debt
    assert m.engine.accounts["c"].cash == 0
    m.check_ledger()


# ---------------------------------------------------------------- calls that escalate (#18)
# On the swap market of the margin-accounting tests (swap margin is the SPAN grid's): guarantor
# b sells 10 contracts of protection at the mark premium, 134 ticks at index 8,000.
def _call_events(m, account, since=0):
    wanted = (ev.COLLATERAL_CALL, ev.CALL_INCREASED, ev.CALL_REDUCED, ev.CALL_CURED, ev.DEFAULT)
    return [e for e in m.after(since) if e.account == account and e.kind in wanted]


def _swap_guarantor(keep, trigger_ppm=0):
    """b short 10 swaps at 134 ticks against a, left with ``keep`` cents of cash, at t = 0."""
    from tests.exchange.risk.test_margin_accounting import CONFIG as SWAP_CONFIG
    from tests.exchange.risk.test_margin_accounting import INDEX, SWAP, _trade

    m = Market(SWAP)
    m.engine.margin = SWAP_CONFIG.model_copy(update={"index_move_trigger_ppm": trigger_ppm})
    m.engine.publish_index(INDEX, 8_000)
    _trade(m, "b", "a", 134)
    m.send(type="withdraw", account="b", amount=m.engine.accounts["b"].cash - keep)
    return m


def _day(m, day, index):
    m.engine.advance(day * DAY_NS)
    m.engine.publish_index("H100-RESALE", index)
    m.engine.margin_cycle()


def _keep_for_a_call_of(amount):
    """The cash that leaves b exactly ``amount`` short of its IM at the day-1 cycle (index
    still 8,000), found by a dry run with cash to spare."""
    dry = _swap_guarantor(keep=5_000_000)
    _day(dry, 1, 8_000)
    im, _mm = dry.engine.requirements["b"]
    vm = dry.engine.accounts["b"].cash - 5_000_000  # day 1's variation margin, cash-blind
    return im - amount - vm


def _swap_called():
    """b called for 664,445 cents at the day-1 cycle (the issue's scripted check)."""
    m = _swap_guarantor(keep=_keep_for_a_call_of(664_445))
    _day(m, 1, 8_000)
    assert m.engine.calls["b"] == [664_445, DAY_NS]
    return m


def test_a_call_is_raised_when_the_shortfall_grows_and_defaults_only_for_an_amount_called():
    """Call 664,445 on day 1; the index falls 8,000 -> 7,000 on day 2: the call is raised to
    the new shortfall (variation margin: b's equity fell), the deposit of 664,445 only
    reduces the raised call, and at the deadline (day 3) b defaults for the amount its call
    stands at in the log -- never for a figure no event called (before: a default for less
    than the deposit left due, after a call of 664,445 that was never raised)."""
    m = _swap_called()
    _day(m, 2, 7_000)
    raised = _call_events(m, "b")[-1]
    assert raised.kind == ev.CALL_INCREASED
    assert raised.data["previous"] == 664_445
    assert raised.data["reason"] == "variation margin"
    assert raised.amount == raised.data["im"] - raised.data["equity"] == m.engine.calls["b"][0]
    assert m.engine.calls["b"][1] == DAY_NS  # still the first call's time: same deadline
    m.send(type="deposit", account="b", amount=664_445)
    assert _call_events(m, "b")[-1].kind == ev.CALL_REDUCED
    assert "b" in m.engine.calls  # 664,445 no longer meets the call
    _day(m, 3, 7_000)
    history = _call_events(m, "b")
    assert history[-1].kind == ev.DEFAULT
    assert history[-2].kind in (ev.CALL_INCREASED, ev.CALL_REDUCED)
    assert history[-1].amount == history[-2].amount  # the amount last called, in the log
    m.check_ledger()


def test_a_raised_call_keeps_its_original_deadline():
    """Called on day 1 (deadline day 3), raised on day 2, one day before the deadline: the
    raise gives no more time -- not met, b defaults at day 3's cycle."""
    m = _swap_called()
    _day(m, 2, 7_000)
    raised = _call_events(m, "b")[-1]
    assert (raised.kind, raised.t) == (ev.CALL_INCREASED, 2 * DAY_NS)
    _day(m, 3, 7_000)
    default = _call_events(m, "b")[-1]
    assert (default.kind, default.t) == (ev.DEFAULT, 3 * DAY_NS)
    assert m.engine.defaulted == ["b"]
    m.check_ledger()


def test_a_shortfall_that_grew_by_the_deadline_is_called_before_the_default():
    """The index falls only on the deadline's day: that cycle raises the call to the new
    shortfall first, then declares the default for exactly that amount."""
    m = _swap_called()
    since = len(m.events)
    _day(m, 3, 7_000)
    history = _call_events(m, "b", since)
    assert [e.kind for e in history] == [ev.CALL_INCREASED, ev.DEFAULT]
    increased, default = history
    assert increased.data["previous"] == 664_445 and increased.amount > 664_445
    assert default.amount == increased.amount
    m.check_ledger()


def test_a_raise_says_initial_margin_when_the_requirement_grew_more_than_equity_fell():
    """On day 2 the index is unchanged but the exchange lifts every account's initial margin
    to at least 5,000,000 cents: b's shortfall grows with its requirement, not from a loss,
    and the raise says so."""
    m = _swap_called()
    params = m.engine.margin.params.model_copy(update={"min_im": 5_000_000})
    m.engine.margin = m.engine.margin.model_copy(update={"params": params})
    _day(m, 2, 8_000)
    raised = _call_events(m, "b")[-1]
    assert raised.kind == ev.CALL_INCREASED
    assert raised.data["im"] == 5_000_000
    assert raised.data["reason"] == "initial margin"
    m.check_ledger()


def test_a_deposit_after_the_deadline_reduces_the_call_but_never_defaults():
    """Only a margin cycle declares a default: a partial deposit past the deadline, before
    that ns's cycle, reduces the call and nothing more."""
    m = _swap_called()
    m.engine.advance(3 * DAY_NS)
    mark = len(m.events)
    m.send(type="deposit", account="b", amount=10_000)
    assert kinds(m, mark) == [ev.COMMAND_RECEIVED, ev.DEPOSIT, ev.CALL_REDUCED]
    assert m.engine.defaulted == []
    m.check_ledger()


def _simulated(trigger_ppm=0):
    """The swap guarantor, to be called for 664,445 at day 1's cycle, run by a simulator with
    the market schedule's margin cycles (daily, at CLEARING priority) and, if
    ``trigger_ppm``, its index-move trigger; the index prints 8,000 at day 1."""
    from exchange.core.clock import MARKET, Simulator
    from exchange.sessions.market import schedule_market
    from tests.markets import START

    m = _swap_guarantor(keep=_keep_for_a_call_of(664_445), trigger_ppm=trigger_ppm)
    sim = Simulator()
    schedule_market(m.engine, sim, epoch=START, indices=[], end_ns=4 * DAY_NS, seed=1)
    sim.schedule(DAY_NS, m.engine.publish_index, "H100-RESALE", 8_000, priority=MARKET)
    return m, sim


def test_a_deposit_at_the_deadline_nanosecond_is_applied_before_the_cycle_that_checks_it():
    """b is called at day 1's cycle (deadline: day 3, 0 ns). Its deposit arrives at exactly
    day 3, 0 ns, the deadline cycle's own nanosecond: it counts, the call is cured, and the
    cycle finds nothing to default."""
    m, sim = _simulated()
    sim.schedule(3 * DAY_NS, partial(m.send, type="deposit", account="b", amount=1_000_000))
    sim.run(4 * DAY_NS, on_step=m.engine.advance)
    history = _call_events(m, "b")
    assert (history[0].kind, history[0].t) == (ev.COLLATERAL_CALL, DAY_NS)
    assert (history[-1].kind, history[-1].t) == (ev.CALL_CURED, 3 * DAY_NS)
    assert ev.DEFAULT not in [e.kind for e in history] and m.engine.defaulted == []
    m.check_ledger()


def test_an_index_move_cycle_under_a_simulator_runs_once_after_that_nanoseconds_commands():
    """Two prints at one ns, both past the 5 % trigger, and a deposit at that ns: one
    triggered cycle, queued behind the deposit (it closes the ns like a scheduled cycle)."""
    from exchange.core.clock import MARKET

    m, sim = _simulated(trigger_ppm=50_000)
    at = DAY_NS + 3_600 * 10**9
    sim.schedule(at, m.engine.publish_index, "H100-RESALE", 7_000, priority=MARKET)
    sim.schedule(at, m.engine.publish_index, "H100-RESALE", 6_500, priority=MARKET)
    sim.schedule(at, partial(m.send, type="deposit", account="c", amount=1))
    sim.run(at, on_step=m.engine.advance)
    now = [e for e in m.events if e.t == at]
    order = [(e.kind, e.account) for e in now if e.kind in (ev.DEPOSIT, ev.MARGIN_REQUIREMENT)]
    assert order == [
        (ev.DEPOSIT, "c"),
        (ev.MARGIN_REQUIREMENT, "a"),
        (ev.MARGIN_REQUIREMENT, "b"),
    ]
    m.check_ledger()


def test_a_triggered_cycle_at_a_scheduled_cycles_nanosecond_does_not_run_twice():
    """A print past the trigger at the ns of day 2's cycle: that cycle runs after the print
    and sees it, so the cycle the print triggers is not run a second time."""
    from exchange.core.clock import MARKET

    m, sim = _simulated(trigger_ppm=50_000)
    sim.schedule(2 * DAY_NS, m.engine.publish_index, "H100-RESALE", 7_000, priority=MARKET)
    sim.run(2 * DAY_NS, on_step=m.engine.advance)
    measured = [
        e.account for e in m.events if e.kind == ev.MARGIN_REQUIREMENT and e.t == 2 * DAY_NS
    ]
    assert measured == ["a", "b"]
    m.check_ledger()
