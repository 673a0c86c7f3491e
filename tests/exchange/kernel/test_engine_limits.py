"""The ledger's limits (issue #17, point 2): no client input takes a balance, a position or an
amount derived from one past what the log's int64 columns hold, and none raises out of the
engine. Each refusal is one ``CommandRejected`` with the reason and changes nothing else; what
is accepted is recorded through a real event store (int64 columns, fold, snapshots)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import events as ev
from exchange.core.commands import MAX_BALANCE, MAX_EXPOSURE, MAX_POSITION_LOTS
from exchange.kernel.engine import exposure_rates
from exchange.products.instruments import InstrumentSpec
from exchange.products.perp import MarginTier
from tests.exchange.conftest import SPEC, Harness, order
from tests.fuzz.invariants import (
    LedgerCheck,
    assert_state_storable,
    assert_storable,
    record_through_store,
)
from tests.markets import HOUR_NS as HOUR
from tests.markets import START, perp_spec, rvs_spec

TOP = SPEC.max_price * SPEC.tick_value  # what one lot can be worth: 100,000 ticks x 10 cents
MAX_LOTS = MAX_EXPOSURE // TOP


def deposit(h: Harness, account: str, amount: int):
    return h.engine.handle({"type": "deposit", "account": account, "amount": amount})


def refused(h: Harness, command: dict, words: str) -> str:
    """Send ``command``; assert it is refused with ``words`` in the reason, as exactly one
    ``CommandRejected``, and that the state is unchanged."""
    before, mark = h.engine.state_hash(), len(h.events)
    result = h.engine.handle(command)
    assert not result.ok and words in result.reason, result.reason
    assert h.kinds(mark) == [ev.COMMAND_REJECTED]
    assert h.events[-1].data["reason"] == result.reason
    assert h.engine.state_hash() == before
    return result.reason


# ------------------------------------------------------------------ deposits, withdrawals
def test_five_deposits_of_two_to_the_62_are_refused_and_the_log_stores(tmp_path):
    """The issue's attack: five deposits of 2**62 (each within the command's own bounds). Each
    would take the cash past MAX_BALANCE, so each is one rejection naming the bound; the
    state hashes and the log appends, folds and seals through a real store."""
    h = Harness()
    h.open("bot")
    for _ in range(5):
        reason = refused(h, {"type": "deposit", "account": "bot", "amount": 1 << 62}, "bound")
        assert str(MAX_BALANCE) in reason and "'bot'" in reason
    assert h.engine.accounts["bot"].cash == 0
    assert_state_storable(h.engine)
    LedgerCheck().apply(h.events)
    record_through_store(tmp_path / "deposits.db", h.events, h.engine.state_hash())


def test_deposits_are_accepted_up_to_the_bound_and_refused_past_it(tmp_path):
    h = Harness()
    h.open("bot")
    step = 4 * 10**16
    results = [deposit(h, "bot", step) for _ in range(5)]
    assert [r.ok for r in results] == [True, True, False, False, False]
    assert all("bound" in r.reason for r in results[2:])
    assert h.engine.accounts["bot"].cash == 2 * step
    assert deposit(h, "bot", MAX_BALANCE - 2 * step).ok  # exactly the bound is allowed
    assert not deposit(h, "bot", 1).ok
    assert_state_storable(h.engine)
    LedgerCheck().apply(h.events)
    record_through_store(tmp_path / "deposits.db", h.events, h.engine.state_hash())


def test_the_sessions_running_deposits_are_bounded():
    h = Harness()
    h.open("a")
    h.open("b")
    assert deposit(h, "a", 6 * 10**16).ok
    refused(h, {"type": "deposit", "account": "b", "amount": 6 * 10**16}, "session's deposits")


def test_the_sessions_running_withdrawals_are_bounded():
    h = Harness()
    h.open("a", MAX_BALANCE)  # scenario money (credit), not a deposit command
    h.open("b", MAX_BALANCE)
    assert h.engine.handle({"type": "withdraw", "account": "a", "amount": MAX_BALANCE}).ok
    refused(h, {"type": "withdraw", "account": "b", "amount": 1}, "session's withdrawals")


# ------------------------------------------------------------------ orders
def test_an_order_whose_exposure_could_pass_the_limit_is_refused_before_any_event():
    h = Harness()
    h.open("a", 10**12)
    reason = refused(h, order("a", "buy", 1, MAX_LOTS + 1), "exposure")
    assert str(MAX_EXPOSURE) in reason and SPEC.name in reason
    # valued at the largest price whatever the limit: a fill of a sell can come at any bid
    refused(h, order("a", "sell", 100_000, MAX_LOTS + 1), "exposure")
    refused(h, order("a", "buy", 0, 1 << 62, order_type="market"), "exposure")
    assert h.engine.handle(order("a", "buy", 1, MAX_LOTS)).ok


def test_resting_orders_count_towards_the_limit_until_they_trade_or_are_cancelled():
    h = Harness()
    h.open("a", 10**12)
    h.open("b", 10**12)
    first = h.engine.handle(order("a", "buy", 10, MAX_LOTS // 2)).order_id
    assert h.engine.handle(order("a", "buy", 10, MAX_LOTS - MAX_LOTS // 2)).ok
    refused(h, order("a", "buy", 10, 1), "exposure")
    assert h.engine.handle({"type": "cancel", "account": "a", "order_id": first}).ok
    assert h.engine.handle(order("a", "buy", 10, MAX_LOTS // 2)).ok  # the cancel freed them
    assert h.engine.accounts["a"].open_lots[SPEC.name] == [MAX_LOTS, 0]
    # b sells into a's bids: a's lots move from the book to its position, the total stays
    assert h.engine.handle(order("b", "sell", 10, 5)).ok
    assert h.engine.accounts["a"].positions[SPEC.name] == 5
    refused(h, order("a", "buy", 10, 1), "exposure")


def test_an_order_that_reduces_a_position_at_the_limit_is_accepted():
    h = Harness()
    h.open("a", 10**12)
    h.open("b", 10**12)
    assert h.engine.handle(order("b", "sell", 1, MAX_LOTS)).ok
    assert h.engine.handle(order("a", "buy", 1, MAX_LOTS)).ok  # a is long the limit
    refused(h, order("a", "buy", 1, 1), "exposure")
    assert h.engine.handle(order("a", "sell", 2, MAX_LOTS)).ok  # flat if it fills
    assert h.engine.handle(order("a", "sell", 2, MAX_LOTS)).ok  # short the limit if it fills
    refused(h, order("a", "sell", 2, 1), "exposure")


def test_an_amend_that_adds_lots_past_the_limit_is_refused_one_that_takes_lots_off_is_not():
    h = Harness()
    h.open("a", 10**12)
    order_id = h.engine.handle(order("a", "buy", 10, MAX_LOTS)).order_id
    amend = {"type": "amend", "account": "a", "order_id": order_id, "price": 10}
    refused(h, {**amend, "qty": MAX_LOTS + 1}, "exposure")
    assert h.engine.handle({**amend, "qty": MAX_LOTS - 1}).ok  # kept priority, fewer lots
    assert h.engine.handle({**amend, "price": 11, "qty": MAX_LOTS}).ok  # lost priority
    assert h.engine.accounts["a"].open_lots[SPEC.name] == [MAX_LOTS, 0]


def test_positions_are_limited_in_lots_where_lots_are_cheap():
    cheap = InstrumentSpec(name="CHEAP", tick_size="0.01", max_price=1)  # 1 cent a lot at most
    assert exposure_rates(cheap).position == 1
    h = Harness()
    h.engine.list_instrument(cheap)
    h.open("a", 10**12)
    command = {"type": "submit", "account": "a", "instrument": "CHEAP", "side": "buy", "price": 1}
    reason = refused(h, {**command, "qty": MAX_POSITION_LOTS + 1}, "past the limit")
    assert str(MAX_POSITION_LOTS) in reason
    assert h.engine.handle({**command, "qty": MAX_POSITION_LOTS}).ok


def test_an_order_that_could_move_cash_past_the_bound_is_refused():
    h = Harness()
    h.open("rich", MAX_BALANCE - TOP)  # one lot's notional (and a fee) from the bound
    refused(h, order("rich", "sell", 1, 1), "past the ledger's bound")
    h.open("poor")
    h.engine.credit("poor", 1)
    h.engine.accounts["poor"].cash = -MAX_BALANCE + TOP  # a debt near the bound
    refused(h, order("poor", "buy", 1, 1), "past the ledger's bound")


def test_colluding_accounts_trading_at_the_limits_leave_a_storable_log(tmp_path):
    """Two accounts pass cash from one to the other as fast as they can -- the largest orders,
    sold at the top and bought back at the bottom, round after round -- and try orders of
    2**62 lots: what is accepted keeps every event, balance and the state inside int64 and the
    ledger balanced; the rest is refused; the store takes it all."""
    h = Harness()
    h.open("seller", 10**12)
    h.open("buyer", 10**12)
    outcomes = []
    for _ in range(120):
        for qty in (1 << 62, MAX_LOTS):
            h.engine.handle(order("seller", "sell", 100_000, qty))
            outcomes.append(h.engine.handle(order("buyer", "buy", 100_000, qty)).ok)
            h.engine.handle(order("buyer", "sell", 1, qty))
            outcomes.append(h.engine.handle(order("seller", "buy", 1, qty)).ok)
    assert any(outcomes) and not all(outcomes)
    assert h.engine.accounts["seller"].cash > MAX_BALANCE // 2  # the bound, not luck, stopped it
    for account in h.engine.accounts.values():
        assert abs(account.cash) <= MAX_BALANCE + 2 * MAX_EXPOSURE
    assert_state_storable(h.engine)
    LedgerCheck().apply(h.events)
    record_through_store(tmp_path / "collude.db", h.events, h.engine.state_hash())


PERP = perp_spec(
    impact_notional_lots=1,
    mark_basis_halflife_ns=HOUR,
    margin_tiers=[
        MarginTier(max_position_lots=1_000, initial_margin_ppm=900_000, maintenance_margin_ppm=1)
    ],
)


def test_a_perpetual_position_at_the_limit_has_variation_margin_and_funding_inside_int64(
    tmp_path,
):
    """A perpetual position as big as the limits allow, opened at the lowest price and marked
    at the highest, with funding at its cap: every payment fits; 2**62 lots are refused."""
    h = Harness()
    h.engine.list_instrument(PERP)
    h.open("long", 10**12)
    h.open("short", 10**12)
    lots = MAX_EXPOSURE // exposure_rates(PERP).position
    perp = {"type": "submit", "instrument": PERP.name, "price": 1}
    refused(h, {**perp, "account": "short", "side": "sell", "qty": 1 << 62}, "exposure")
    assert h.engine.handle({**perp, "account": "short", "side": "sell", "qty": lots}).ok
    assert h.engine.handle({**perp, "account": "long", "side": "buy", "qty": lots}).ok
    # an ask at the bottom (and no bid) holds the premium, and so funding, at its cap
    assert h.engine.handle({**perp, "account": "long", "side": "sell", "qty": 1}).ok
    h.engine.publish_index("H100-RENTAL", 1_000_000)
    for step in range(1, 4):
        h.engine.advance(step * 8 * HOUR)
        h.engine.publish_index("H100-RENTAL", 1_000_000)
        h.engine.fund(PERP.name)
        h.engine.margin_cycle()
    kinds = {e.kind for e in h.events}
    assert {ev.VARIATION_MARGIN, ev.FUNDING_PAID} <= kinds
    assert_state_storable(h.engine)
    LedgerCheck().apply(h.events)
    record_through_store(tmp_path / "perp.db", h.events, h.engine.state_hash())


RVS = rvs_spec(maturity=date(2025, 6, 1))


def test_swap_round_trips_cannot_grow_the_premium_basis_past_the_limit(tmp_path):
    """Buying protection at the top premium and selling it back at the bottom, again and
    again, locks in an ever larger premium basis with no position: the limits count the
    basis, so the round trips stop, and premiums, marks and settlement all fit."""
    h = Harness()
    h.engine.epoch = START
    h.engine.list_instrument(RVS)
    h.open("a", 10**12)
    h.open("b", 10**12)
    h.engine.publish_index("H100-RESALE", 15_000)
    rates = exposure_rates(RVS)
    lots = MAX_EXPOSURE // (rates.position + rates.price * rates.basis) // 4
    swap = {"type": "submit", "instrument": RVS.name, "qty": lots}
    refused(h, {**swap, "account": "a", "side": "buy", "price": 1, "qty": 1 << 62}, "exposure")
    accepted = []
    for _ in range(20):  # b sells a protection at the top, then buys it back at the bottom
        h.engine.handle({**swap, "account": "b", "side": "sell", "price": RVS.max_price})
        accepted.append(
            h.engine.handle({**swap, "account": "a", "side": "buy", "price": RVS.max_price}).ok
        )
        h.engine.handle({**swap, "account": "b", "side": "buy", "price": 1})
        accepted.append(h.engine.handle({**swap, "account": "a", "side": "sell", "price": 1}).ok)
    assert any(accepted) and not all(accepted)
    assert abs(h.engine.accounts["a"].basis[RVS.name]) > lots * RVS.max_price
    for day in (31, 61, 365):
        h.engine.advance(day * 86_400 * 10**9)
        h.engine.publish_index("H100-RESALE", 1)
        h.engine.charge_premium(RVS.name)
        h.engine.margin_cycle()
    h.engine.expire(RVS.name)
    assert ev.SWAP_SETTLED in {e.kind for e in h.events}
    assert_state_storable(h.engine)
    LedgerCheck().apply(h.events)
    record_through_store(tmp_path / "rvs.db", h.events, h.engine.state_hash())


# ------------------------------------------------------------------ the book's lots, tracked
steps = st.lists(
    st.tuples(
        st.sampled_from(["submit", "submit", "cancel", "amend", "cancel_all"]),
        st.sampled_from(["alice", "bob", "carol"]),
        st.sampled_from(["buy", "sell"]),
        st.integers(9_995, 10_005),
        st.integers(1, 20),
        st.sampled_from(["gtc", "gtc", "ioc"]),
        st.integers(0, 30),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(steps)
def test_the_lots_the_limits_count_are_the_lots_on_the_book(actions):
    h = Harness()
    for name in ("alice", "bob", "carol"):
        h.open(name, 10**9, stp="cancel-resting" if name == "carol" else "none")
    ids = []
    for kind, account, side, price, qty, tif, target in actions:
        if kind == "submit":
            result = h.submit(account, side, price, qty, tif=tif)
            ids += [result.order_id] if result.order_id else []
        elif kind == "cancel_all":
            h.engine.handle({"type": kind, "account": account})
        elif ids:
            command = {"type": kind, "account": account, "order_id": ids[target % len(ids)]}
            if kind == "amend":
                command.update(price=price, qty=qty)
            h.engine.handle(command)
    on_book = {name: [0, 0] for name in h.engine.accounts}
    for side, _price, _oid, owner, qty in dict(h.engine.canonical_state()["books"])[SPEC.name]:
        on_book[owner][0 if side == "buy" else 1] += qty
    for name, account in h.engine.accounts.items():
        assert account.open_lots.get(SPEC.name, [0, 0]) == on_book[name], name


# ------------------------------------------------------------------ nothing raises out
def _engine_bug(*args, **kwargs):
    """Stands in for an engine step, to see what an unexpected error in it does."""
    raise ZeroDivisionError("an engine bug")


def test_an_unexpected_error_before_any_event_is_one_rejection_and_changes_nothing(monkeypatch):
    h = Harness()
    h.open("a", 1_000)
    monkeypatch.setattr(h.engine, "_check_limits", _engine_bug)
    reason = refused(h, order("a", "buy", 10, 1), "cannot be checked")
    assert "ZeroDivisionError: an engine bug" in reason


def test_an_unexpected_error_after_events_is_raised_not_passed_off_as_a_rejection(monkeypatch):
    h = Harness()
    h.open("a", 1_000)
    monkeypatch.setattr(h.engine, "_after_match", _engine_bug)
    mark = len(h.events)
    with pytest.raises(ZeroDivisionError):
        h.engine.handle(order("a", "buy", 10, 1))
    assert ev.COMMAND_REJECTED not in h.kinds(mark)


class Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr")


def nested(depth: int) -> list:
    outer = inner = []
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


class Exiting:
    def __repr__(self):
        raise SystemExit(0)


@pytest.mark.parametrize(
    "raw", [Unprintable(), {"type": Unprintable()}, nested(100_000), [Exiting()]]
)
def test_a_command_nothing_can_print_is_one_rejection_with_a_placeholder(raw):
    h = Harness()
    h.open("a", 1_000)
    before, mark = h.engine.state_hash(), len(h.events)
    assert not h.engine.handle(raw).ok
    assert h.kinds(mark) == [ev.COMMAND_REJECTED]
    assert "without a repr" in h.events[-1].data["command"]["unserialisable"]
    assert h.engine.state_hash() == before
    assert_storable(h.events[-1])


def test_a_rejection_recorded_for_the_gateway_has_a_one_line_reason():
    h = Harness()
    h.open("a")
    result = h.engine.reject({"x": 1}, "bad\nframe\x00" + "y" * 2_000, account="a")
    reason = h.events[-1].data["reason"]
    assert reason == result.reason and reason.isprintable() and len(reason) <= 1_000


# ------------------------------------------------------------------ the issue's attack, end to end
class FiveDeposits:
    """The issue's bot: answers its first step with five deposits of 2**62 (and a perpetual
    order of 2**62 lots at the top)."""

    def on_start(self, ctx):
        for _ in range(5):
            ctx.deposit(1 << 62)
        ctx.submit("H100-PERP", "buy", 1_000_000, 1 << 62)


def test_the_issues_five_deposits_from_an_in_process_bot_are_refused_and_the_log_verifies(
    tmp_path,
):
    from clients.bot import Bot
    from clients.demo import DemoTaker
    from clients.gateway import BotEntry, serve_session
    from clients.latency import Latency
    from exchange.sessions.session import verify
    from exchange.store.event_store import EventStore
    from tests.clients.test_gateway import ShortProducts

    class Hostile(FiveDeposits, Bot):
        pass

    latency = Latency(fixed_ns=1_000_000, jitter_ns=0)
    bots = [
        BotEntry("bad", "maker", Hostile(), latency),
        BotEntry("tk", "taker", DemoTaker(), latency),
    ]
    db = tmp_path / "five.db"
    serve_session(ShortProducts(2), 7, db, [], bots=bots, port=0)
    with EventStore.open(db, mode="r") as store:
        rejected = [e for e in store.events(kind=ev.COMMAND_REJECTED) if e.account == "maker"]
        failed = [e for e in store.events(kind=ev.BOT_FAILED) if e.account == "maker"]
    reasons = [e.data["reason"] for e in rejected]
    assert sum("past the ledger's bound" in r for r in reasons) == 5
    assert sum("exposure" in r for r in reasons) == 1
    assert not failed  # refused, the bot goes on
    verdict = verify(db)
    assert verdict.ok, verdict.problems
