"""The order of state and events in a default, and the moment a missed call defaults.

Every event announces a change that has already happened: a listener subscribed to the
exchange (``Exchange.subscribe``) that reads the engine's state while it handles an event sees
that event's change, and nothing that a later event announces.
"""

from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS
from exchange.risk.margin_cycle import AuctionBidder
from tests.exchange.kernel.test_event_order import StateAtEveryEvent
from tests.exchange.risk.test_calls import leveraged


def crash_with_waterfall(insurance, contributions, bid_lots=0, bidder_lots=0):
    """c (long 20 perpetual lots, 80,000 cents after day 1's VM) is called on day 1; the
    index halves and it defaults at its day-3 deadline owing 100,000 cents more than it has,
    which runs down the waterfall. With ``bid_lots``, b bids that many lots at 950 ticks on
    day 3 (inside the band: the book takes them); with ``bidder_lots``, b stands ready to take
    that many in the default auction at 5 % from the mark. Returns the market and the
    listener."""
    m = leveraged()
    if bidder_lots:
        m.engine.margin = m.engine.margin.model_copy(
            update={
                "auction_bidders": [
                    AuctionBidder(account="b", discount_ppm=50_000, max_lots=bidder_lots)
                ]
            }
        )
    m.engine.fund_pool("insurance", insurance)
    for member, amount in contributions.items():
        m.engine.contribute(member, amount)
    listener = StateAtEveryEvent(m)
    m.engine.advance(DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_900)
    m.engine.margin_cycle()
    m.engine.advance(3 * DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_000)
    if bid_lots:
        m.send(
            type="submit", account="b", instrument="H100-PERP", side="buy", price=950, qty=bid_lots
        )
    m.engine.margin_cycle()
    return m, listener


def test_every_waterfall_event_is_emitted_after_the_pools_and_contributions_it_announces():
    """Own contribution, insurance, the members' contributions and a haircut: at each of
    these events (and every other) the default fund equals the contributions left, and the
    engine's pools, contributions, cash and positions equal the fold of the events so far."""
    m, listener = crash_with_waterfall(30_000, {"a": 40_000, "b": 20_000, "c": 10_000})
    for kind in (ev.DEFAULT, ev.WATERFALL_DRAW, ev.DEFAULT_FUND_LOSS, ev.HAIRCUT):
        assert kind in listener.kinds, f"the scenario should reach {kind}"
    assert listener.problems == []
    m.check_ledger()


def test_a_default_stopped_by_its_own_contribution_shows_the_fund_drawn_at_its_event():
    """The smallest waterfall: the own contribution and the insurance fund cover the loss."""
    m, listener = crash_with_waterfall(500_000, {"a": 40_000, "c": 10_000})
    assert ev.WATERFALL_DRAW in listener.kinds and ev.DEFAULT_FUND_LOSS not in listener.kinds
    assert listener.problems == []
    assert m.engine.contributions == {"a": 40_000, "c": 0}
    m.check_ledger()


def test_a_default_through_the_book_the_auction_and_deleveraging_keeps_state_and_events_in_step():
    """Fills, an auction award and deleveraging move positions and cash before their events,
    and the waterfall that follows keeps the default fund equal to the contributions."""
    m, listener = crash_with_waterfall(
        10_000, {"a": 40_000, "b": 20_000, "c": 10_000}, bid_lots=5, bidder_lots=5
    )
    for kind in (ev.FILL, ev.AUCTION_AWARD, ev.DELEVERAGED, ev.DEFAULT, ev.WATERFALL_DRAW):
        assert kind in listener.kinds, f"the scenario should reach {kind}"
    assert listener.problems == []
    m.check_ledger()


def test_a_call_still_open_at_a_cycle_at_its_deadline_defaults_at_that_cycle():
    """The deadline is ``time of the call + cure_ns``; a cycle one nanosecond before it leaves
    the call open, a cycle at exactly the deadline (``t >= deadline``) declares the default."""
    m = leveraged()
    m.engine.advance(DAY_NS)
    m.engine.publish_index("H100-RENTAL", 1_900)
    m.engine.margin_cycle()
    call = m.events[-1]
    assert call.kind == ev.COLLATERAL_CALL and call.account == "c"
    deadline = call.data["deadline"]
    assert deadline == DAY_NS + m.engine.margin.cure_ns
    m.engine.advance(deadline - 1)
    m.engine.margin_cycle()
    assert "c" in m.engine.calls and m.engine.defaulted == []
    m.engine.advance(deadline)
    mark = len(m.events)
    m.engine.margin_cycle()
    defaults = [e for e in m.after(mark) if e.kind == ev.DEFAULT]
    assert [(e.account, e.t) for e in defaults] == [("c", deadline)]
    assert m.engine.defaulted == ["c"]
    m.check_ledger()
