"""The guarantor's rating as state (issue #19, point 2): a rating per account that falls at once
to the tier its capital ratio indicates and climbs back one notch only after
``upgrade_after_cycles`` better cycles; ``RatingChanged`` before the account's
``MarginRequirement``; the credit add-on by the rating; a buyer measured by the premiums it
still owes; the rating in the fold, the hash, replay and verify; the report's markers and
narrative.

The market (``tests.markets``): one swap of a $20,000 floor, 1 GPU a contract, so a seller of
10 lots can owe 10 x 20,000 x 100 = 20,000,000 cents; default tiers: below 10 % capital +50 %
(``BBB``), below 5 % +100 % (``BB``).
"""

from datetime import date

import numpy as np

from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS
from exchange.postmortem import analysis as pm
from exchange.postmortem import report as rp
from exchange.risk.margin import RVS, Book, MarginParams, gross_notional
from exchange.risk.margin_cycle import MarginConfig
from exchange.sessions import session
from exchange.store.event_store import EventStore
from tests.exchange.products.test_products import Market
from tests.markets import rvs_spec

SWAP = rvs_spec(maturity=date(2025, 6, 1))
PROTECTED = 10 * 20_000 * 100  # what the seller of 10 lots can owe, cents


def config(**params) -> MarginConfig:
    return MarginConfig(
        interval_ns=DAY_NS,
        cure_ns=30 * DAY_NS,  # long enough that no call defaults within a test
        index_move_trigger_ppm=0,
        params=MarginParams(concentration_addon_ppm=0, **params),
    )


def swap_market(seller_cash: int, buyer_cash: int = 9_000_000, **params) -> Market:
    """b sells 10 lots of protection to a at the mark premium, then each side's cash is brought
    to the amount given (cents)."""
    m = Market(SWAP)
    m.engine.margin = config(**params)
    m.engine.publish_index("H100-RESALE", 22_000)
    premium = m.engine.instruments[SWAP.name].mark
    m.send(type="submit", account="b", instrument=SWAP.name, side="sell", price=premium, qty=10)
    m.send(type="submit", account="a", instrument=SWAP.name, side="buy", price=premium, qty=10)
    for name, keep in (("a", buyer_cash), ("b", seller_cash)):
        keep_cash(m, name, keep)
    return m


def keep_cash(m: Market, name: str, keep: int) -> None:
    """Withdraw or deposit to bring the account's cash to ``keep`` cents."""
    gap = m.engine.accounts[name].cash - keep
    if gap > 0:
        m.send(type="withdraw", account=name, amount=gap)
    elif gap < 0:
        m.send(type="deposit", account=name, amount=-gap)


def cycle(m: Market, day: int) -> list:
    """Run the margin cycle of ``day``; its events."""
    mark = len(m.events)
    m.engine.advance(day * DAY_NS)
    m.engine.margin_cycle()
    return m.after(mark)


def of(events, kind, account):
    return [e for e in events if e.kind == kind and e.account == account]


def im_at(m: Market, account: str, rating: int) -> int:
    """The account's initial margin now, were its rating ``rating`` (0 = the top)."""
    return m.engine.margin.requirements(m.engine, ratings={account: rating})[account][0]


# ------------------------------------------------------------------------------ the rule
def test_a_downgrade_is_at_once_steps_up_the_margin_and_is_announced_before_the_requirement():
    """b keeps $15,000 against 20,000,000 cents it can owe: 7.5 %, below the 10 % tier. At the
    first cycle it is downgraded A -> BBB, and its requirement is the +50 % margin of BBB."""
    m = swap_market(seller_cash=1_500_000)
    events = cycle(m, 1)
    (changed,) = of(events, ev.RATING_CHANGED, "b")
    cash = m.engine.accounts["b"].cash  # after the cycle's variation margin
    assert changed.side == "BBB"
    assert changed.data["from"] == "A" and changed.data["to"] == "BBB"
    assert changed.data["reason"] == "downgrade"
    assert changed.data["capital_ratio_ppm"] == cash * 1_000_000 // PROTECTED
    assert m.engine.ratings == {"b": 1}
    (requirement,) = of(events, ev.MARGIN_REQUIREMENT, "b")
    assert changed.seq < requirement.seq  # the state, its event, then the requirement it moves
    top, bbb = im_at(m, "b", 0), im_at(m, "b", 1)
    assert requirement.amount == bbb > top
    assert changed.data["im_change"] == bbb - top
    assert not of(events, ev.RATING_CHANGED, "a")  # the buyer keeps its A
    m.check_ledger()  # the fold reaches the engine's hash, ratings included


def test_a_downgrade_goes_straight_to_the_indicated_tier():
    """$4,000 against 20,000,000: 2 %, below both tiers: A -> BB in one step."""
    m = swap_market(seller_cash=400_000)
    (changed,) = of(cycle(m, 1), ev.RATING_CHANGED, "b")
    assert (changed.data["from"], changed.data["to"]) == ("A", "BB")
    assert m.engine.ratings["b"] == 2


def test_no_upgrade_until_the_ratio_has_been_better_for_n_cycles_then_one_notch_at_a_time():
    """Downgraded to BB, b deposits enough for a ratio above every tier. With
    ``upgrade_after_cycles = 3`` it stays BB for two cycles, goes to BBB at the third, and to A
    three cycles later; a cycle whose ratio falls back restarts the count."""
    m = swap_market(seller_cash=400_000, upgrade_after_cycles=3)
    cycle(m, 1)
    assert m.engine.ratings["b"] == 2
    m.send(type="deposit", account="b", amount=10_000_000)  # about 52 % capital
    moves = []
    for day in range(2, 9):
        moves += [(day, e.data["to"]) for e in of(cycle(m, day), ev.RATING_CHANGED, "b")]
    assert moves == [(4, "BBB"), (7, "A")]
    # the count restarts when the ratio is not better at one cycle
    keep_cash(m, "b", 1_500_000)
    (down,) = of(cycle(m, 9), ev.RATING_CHANGED, "b")
    assert down.data["to"] == "BBB"
    m.send(type="deposit", account="b", amount=10_000_000)
    cycle(m, 10)
    cycle(m, 11)
    keep_cash(m, "b", 1_500_000)
    assert not of(cycle(m, 12), ev.RATING_CHANGED, "b")  # BBB indicated: no better, count 0
    m.send(type="deposit", account="b", amount=10_000_000)
    assert not of(cycle(m, 13) + cycle(m, 14), ev.RATING_CHANGED, "b")
    assert of(cycle(m, 15), ev.RATING_CHANGED, "b")[0].data["to"] == "A"
    m.check_ledger()


def test_the_credit_add_on_follows_the_rating_not_the_capital_ratio_of_the_day():
    """Downgraded to BBB, b restores its capital: the next cycle's requirement is still the
    BBB margin (the add-on stays stepped up); the ratio alone would charge none."""
    m = swap_market(seller_cash=1_500_000)
    cycle(m, 1)
    m.send(type="deposit", account="b", amount=10_000_000)
    events = cycle(m, 2)
    assert not of(events, ev.RATING_CHANGED, "b")
    (requirement,) = of(events, ev.MARGIN_REQUIREMENT, "b")
    assert requirement.amount == im_at(m, "b", 1) > im_at(m, "b", 0)
    indicated, _ratio = m.engine.margin.credit_standing(m.engine)["b"]
    assert indicated == 0


# ------------------------------------------------------------------------------ buyers
def test_a_buyers_gross_notional_is_the_premiums_it_still_owes_a_sellers_the_protection():
    """One swap, buyer long 10 owing 123,456 cents of premiums, seller short 10 of a $8,000
    floor: the buyer's gross notional is what it owes, the seller's 10 x 8,000 x 100."""
    book = Book(
        kind=np.array([RVS]),
        underlying=np.array([0]),
        mark=np.array([0]),
        tick_value=np.array([1]),
        index=np.array([10_000.0]),
        floor=np.array([8_000.0]),
        sigma=np.array([0.35]),
        t_years=np.array([1.0]),
        gpus_per_contract=np.array([1]),
        positions=np.array([[10], [-10]]),
        open_interest=np.array([10]),
        equity=np.array([10**6, 10**6]),
        premiums_owed=np.array([[123_456], [0]]),
    )
    assert gross_notional(book).tolist() == [123_456, 8_000_000]


def test_a_buyer_with_a_small_budget_is_measured_by_its_premiums_and_not_downgraded():
    """a buys 10 lots and keeps $5,000: 2.5 % of the 20,000,000 cents protected (BB on the
    old measure, +100 %), but about a quarter of the premiums it still owes (basis x tick
    value x periods left): it stays A and pays no credit add-on. b, selling with the same
    cash, is downgraded to BB."""
    m = swap_market(seller_cash=500_000, buyer_cash=500_000)
    events = cycle(m, 1)
    listing = m.engine.instruments[SWAP.name]
    owed = m.engine.accounts["a"].basis[SWAP.name] * SWAP.tick_value * listing.periods_left
    cash = m.engine.accounts["a"].cash
    assert 0 < owed < PROTECTED
    standing = m.engine.margin.credit_standing(m.engine)
    assert standing["a"] == (0, cash * 1_000_000 // owed)
    assert cash * 1_000_000 // PROTECTED < 50_000  # the old measure: below 5 %
    assert not of(events, ev.RATING_CHANGED, "a")
    plain = config(credit_tiers=[]).requirements(m.engine, ratings={})
    (requirement,) = of(events, ev.MARGIN_REQUIREMENT, "a")
    assert requirement.amount == plain["a"][0]  # no credit add-on
    (seller,) = of(events, ev.RATING_CHANGED, "b")
    assert seller.data["to"] == "BB"


# ------------------------------------------------------------------------------ the log
def test_a_session_with_rating_changes_replays_and_verifies_to_the_same_hash(spiral_log):
    """The spiral session (tests/exchange/conftest.py): its guarantor is downgraded; the fold
    tracks the rating from the events and reaches the recorded hash; verify re-executes it."""
    with EventStore.open(spiral_log, mode="r") as store:
        changes = list(store.events(kind=(ev.RATING_CHANGED,)))
        ended = list(store.events(kind=(ev.SESSION_ENDED,)))[-1]
    assert any(e.data["reason"] == "downgrade" for e in changes)
    fold = session.replay(spiral_log)
    assert fold.ratings  # the rating is state the fold holds...
    assert "ratings" in fold.canonical_state()  # ...and hashes
    assert fold.state_hash() == ended.data["state_hash"]
    assert session.replay(spiral_log, use_snapshots=False).state_hash() == ended.data["state_hash"]
    assert session.verify(spiral_log).ok


def test_postmortem_and_report_mark_the_rating_changes_and_tell_the_downgrades(spiral_log):
    f = pm.facts(spiral_log)
    down = [r for r in f.ratings if r.reason == "downgrade" and r.account == "guarantor"]
    assert down and all(r.t <= f.defaults[0].t for r in down[:1])
    first = down[0]
    report = rp.build_report(spiral_log)
    index_traces = [
        trace for chart in report.charts if chart.section == "index" for trace in chart.figure.data
    ]
    marked = [t for t in index_traces if t.name == "rating change"]
    assert marked and any(f"{first.from_rating} → {first.to_rating}" in x for x in marked[0].text)
    text = " ".join(rp.narrative(f))
    assert (
        f"downgraded from {first.from_rating} to {first.to_rating} on day {f.day(first.t)}" in text
    )
    assert f"raising its margin by {rp.dollars(first.im_change)}" in text


def test_inspect_shows_a_rating_changes_margin_step_in_dollars(spiral_log):
    """``gpuex inspect --kind RatingChanged`` prints the IM the new rating added as money, the
    way it prints the call amounts, not as raw cents."""
    from click.testing import CliRunner

    from exchange.cli import main

    with EventStore.open(spiral_log, mode="r") as store:
        first = next(iter(store.events(kind=(ev.RATING_CHANGED,))))
    shown = CliRunner().invoke(main, ["inspect", str(spiral_log), "--kind", "RatingChanged"])
    assert shown.exit_code == 0, shown.output
    cents = abs(first.data["im_change"])
    assert f"${cents // 100:,}.{cents % 100:02d}" in shown.output
