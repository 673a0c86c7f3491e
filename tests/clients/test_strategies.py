"""The reference strategies (issue #6), each in a real seeded session: the ``products`` market
(H100 rental index and perpetual, two H100 residual value swap series, margin on) with
``ProductsScenario.setup`` and ``schedule_market`` but no scripted participants — the bots are
the only traders. Bots run under the default latency (1 ms each way) and budget.
"""

from __future__ import annotations

import pytest

from clients.bot import Bot, MarginCall
from clients.latency import Latency
from clients.runner import BotRunner
from clients.strategies import (
    STRATEGIES,
    CdsBasisTrader,
    CdsDealer,
    CdsProtectionBuyer,
    GpuOwner,
    Guarantor,
    Lender,
    MarketMaker,
    Momentum,
    NoiseTaker,
    Speculator,
    make_bot,
)
from exchange.core import events as ev
from exchange.core.clock import Simulator
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.sessions.scenario_products import HOUR_NS, ProductsScenario
from exchange.store.fold import Fold

PERP, SHORT, LONG = "H100-PERP", "H100-RVS-SHORT", "H100-RVS-LONG"
RENTAL = "H100-RENTAL"
MS = 1_000_000


class Session:
    """A products market with bots instead of the scripted participants."""

    def __init__(self, seed: int = 1, days: int = 45, accounts=(), **overrides) -> None:
        self.scenario = ProductsScenario(days=days, **overrides)
        self.seed = seed
        self.events: list[ev.Event] = []
        self.engine = Exchange(self.events.append)
        self.sim = Simulator()
        self.engine.start("products", seed, {})
        self.scenario.setup(self.engine)
        for name, cash in accounts:  # extra participants, funded like the scenario's
            self.engine.open_account(name, stp="cancel-resting")
            self.engine.credit(name, cash)
        self.scenario.schedule_market(self.engine, self.sim, seed)
        self.runner = BotRunner(self.engine, self.sim, seed)
        self.bots: dict[str, Bot] = {}

    def add(self, account: str, bot: Bot, **options) -> Bot:
        self.runner.add(account, account, bot, **options)
        self.bots[account] = bot
        return bot

    def run(self) -> Session:
        end = self.scenario.end_ns
        self.runner.start(end)
        self.sim.run(end, on_step=self.engine.advance)
        return self

    def of(self, kind: str, account: str | None = None, instrument: str | None = None):
        return [
            e
            for e in self.events
            if e.kind == kind
            and account in (None, e.account)
            and instrument in (None, e.instrument)
        ]

    def fills(self, account: str, instrument: str):
        """(t, signed lots, price) of every fill of ``account`` in ``instrument``."""
        out = []
        for e in self.of(ev.FILL, instrument=instrument):
            taker = 1 if e.side == "buy" else -1
            if e.account == account:
                out.append((e.t, taker * e.qty, e.price))
            elif e.counterparty == account:
                out.append((e.t, -taker * e.qty, e.price))
        return out

    def position(self, account: str, instrument: str) -> int:
        return self.engine.accounts[account].positions.get(instrument, 0)

    def index_before(self, t: int, name: str = RENTAL) -> int:
        value = None
        for e in self.events:
            if e.t >= t:
                break
            if e.kind == ev.INDEX_PUBLISHED and e.instrument == name:
                value = e.price
        return value


class SellOnce(Bot):
    """Sells ``qty`` lots at market once, at ``at`` ns."""

    def __init__(self, at: int, qty: int) -> None:
        self.at, self.qty = at, qty

    def on_start(self, ctx):
        ctx.schedule(self.at, "sell")

    def on_timer(self, ctx, tag):
        ctx.submit(PERP, "sell", 0, self.qty, order_type="market")


# ------------------------------------------------------------------ registry and parameters
def test_registry_names_every_strategy_in_snake_case():
    expected = {
        "market_maker": MarketMaker,
        "noise_taker": NoiseTaker,
        "momentum": Momentum,
        "gpu_owner": GpuOwner,
        "lender": Lender,
        "guarantor": Guarantor,
        "speculator": Speculator,
        "cds_protection_buyer": CdsProtectionBuyer,
        "cds_basis_trader": CdsBasisTrader,
        "cds_dealer": CdsDealer,
    }
    assert expected == STRATEGIES
    for name, cls in STRATEGIES.items():
        bot = make_bot(name, {})
        assert type(bot) is cls and isinstance(bot, Bot)


def test_make_bot_builds_from_a_mapping_like_the_keyword_constructor():
    bot = make_bot("market_maker", {"size": 7, "half_spread": 25})
    assert bot.params == MarketMaker(size=7, half_spread=25).params
    assert (bot.params.size, bot.params.half_spread) == (7, 25)
    owner = make_bot("gpu_owner", {"gpus": 8, "series": {LONG: 45}})
    assert owner.params.series == {LONG: 45} and owner.target(LONG) == 8


def test_make_bot_rejects_unknown_params():
    with pytest.raises(ValueError, match=r"'market_maker'.*half_sprd.*not permitted"):
        make_bot("market_maker", {"half_sprd": 10})


def test_make_bot_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match=r"'noise_taker'.*min_qty"):
        make_bot("noise_taker", {"min_qty": 0})
    with pytest.raises(ValueError, match=r"'guarantor'.*offers\.0\.premium"):
        make_bot("guarantor", {"offers": [{"instrument": LONG, "premium": 0, "max_contracts": 1}]})
    with pytest.raises(ValueError, match=r"'momentum'.*fast must be shorter than slow"):
        make_bot("momentum", {"fast": 30, "slow": 20})
    with pytest.raises(ValueError, match=r"'lender'.*params must be a mapping"):
        make_bot("lender", [("collateral_gpus", 3)])


def test_make_bot_rejects_unknown_strategies_naming_them():
    with pytest.raises(ValueError, match=r"unknown strategy 'market_taker'.*market_maker"):
        make_bot("market_taker", {})


# ------------------------------------------------------------------ market maker
def test_market_maker_quotes_symmetrically_around_each_index_print_when_flat():
    s = Session()
    s.add("maker", MarketMaker(levels=2, size=10, half_spread=40, level_step=10))
    s.run()
    accepted = s.of(ev.ORDER_ACCEPTED, "maker")
    assert len(accepted) >= 4 * 24 * 40  # 2 levels x 2 sides, at least hourly
    for e in accepted:
        index = s.index_before(e.t)
        offset = e.price - index
        assert offset in ((-40, -50) if e.side == "buy" else (40, 50)), e
    # stale quotes are cancelled: never more than one set resting
    assert len(s.engine.account_view("maker")[2]) == 4


def test_market_maker_skews_quotes_against_inventory():
    """After the maker buys 20 lots, both quotes move down 20 x 1 tick: it now bids 60 under
    the index and asks 20 over (40 each way when flat)."""
    s = Session()
    maker = s.add("maker", MarketMaker(levels=1, size=30, half_spread=40, skew_per_lot=1))
    s.add("taker", SellOnce(at=5 * DAY_NS + HOUR_NS // 2, qty=20))
    s.run()
    (fill,) = s.fills("maker", PERP)
    assert fill[1] == 20 and s.position("maker", PERP) == 20
    before = [e for e in s.of(ev.ORDER_ACCEPTED, "maker") if e.t < fill[0]]
    after = [e for e in s.of(ev.ORDER_ACCEPTED, "maker") if e.t > fill[0] + HOUR_NS]
    assert before and after
    for group, (bid, ask) in ((before, (-40, 40)), (after, (-60, 20))):
        for e in group:
            assert e.price - s.index_before(e.t) == (bid if e.side == "buy" else ask), e
    assert maker.skew(20) == 20 and maker.skew(-10_000) == -maker.params.max_skew


def test_market_maker_stops_adding_at_its_position_limit():
    s = Session()
    s.add("maker", MarketMaker(levels=1, size=30, max_position=20))
    s.add("taker", SellOnce(at=2 * DAY_NS + HOUR_NS // 2, qty=25))
    s.run()
    assert s.position("maker", PERP) == 25
    late = [e for e in s.of(ev.ORDER_ACCEPTED, "maker") if e.t > 3 * DAY_NS]
    assert late and {e.side for e in late} == {"sell"}


# ------------------------------------------------------------------ noise taker
def noise_session(seed: int) -> Session:
    s = Session(seed=seed)
    s.add("maker", MarketMaker())
    s.add("taker", NoiseTaker(mean_interval_ns=HOUR_NS, limit_ppm=300_000, max_qty=8))
    return s.run()


def test_noise_taker_is_deterministic_for_a_seed():
    first, again, other = noise_session(7), noise_session(7), noise_session(8)
    encoded = [ev.encode(e) for e in first.events]
    assert encoded == [ev.encode(e) for e in again.events]
    assert encoded != [ev.encode(e) for e in other.events]
    assert first.engine.state_hash() == again.engine.state_hash() != other.engine.state_hash()


def test_noise_taker_sends_random_market_and_limit_orders_at_poisson_times():
    s = noise_session(7)
    orders = s.of(ev.ORDER_ACCEPTED, "taker")
    # about one an hour for 45 days
    assert 800 < len(orders) < 1_360
    types = {e.data["order_type"] for e in orders}
    assert types == {"market", "limit"}
    assert {e.side for e in orders} == {"buy", "sell"}
    assert {e.qty for e in orders} == set(range(1, 9))
    gaps = [b.t - a.t for a, b in zip(orders, orders[1:], strict=False)]
    assert len(set(gaps)) > len(gaps) // 2  # irregular, not a fixed timer
    assert s.fills("taker", PERP)


# ------------------------------------------------------------------ momentum
def test_momentum_trades_with_the_crossover_within_its_position_limit():
    s = Session(days=60, accounts=[("momo", 1_000_000_00)])
    s.add("maker", MarketMaker(size=25, max_position=5_000))
    momo = s.add("momo", Momentum(fast=4, slow=12, clip=10, max_position=30))
    s.run()
    fills = s.fills("momo", PERP)
    assert len(momo.signals) >= 4 and len(fills) >= 10
    position = 0
    for t, lots, _price in fills:
        position += lots
        assert abs(position) <= 30
        # every trade goes the way of the signal the bot had when it sent the order
        signal = [sig for when, sig in momo.signals if when < t][-1]
        assert (lots > 0) == (signal > 0), (t, lots, signal)
    assert position == s.position("momo", PERP)


# ------------------------------------------------------------------ protection buyers and writer
def guarantor(max_contracts: int = 2_000, clip: int = 2_000, **params) -> Guarantor:
    offers = [
        {"instrument": SHORT, "premium": 320, "max_contracts": max_contracts, "clip": clip},
        {"instrument": LONG, "premium": 30, "max_contracts": max_contracts, "clip": clip},
    ]
    return Guarantor(offers=offers, **params)


def test_gpu_owner_buys_protection_and_shorts_perp():
    """40 GPUs: 40 contracts on each series, bought from the guarantor's asks at its premium;
    a hedge of 40 GPUs x 720 h x 50 % / 100 GPU-hours = 144 lots short, sold in clips of 25."""
    s = Session()
    s.add("guarantor", guarantor())
    s.add("maker", MarketMaker(size=50, max_position=5_000))
    owner = s.add("owner", GpuOwner(gpus=40, hedge_ratio_ppm=500_000, hedge_clip=25))
    s.run()
    assert owner.hedge_lots == 144
    for series, premium in ((SHORT, 320), (LONG, 30)):
        fills = s.fills("owner", series)
        assert sum(lots for _, lots, _ in fills) == 40
        assert {price for _, _, price in fills} == {premium}
    assert s.of(ev.SWAP_SETTLED, "owner", SHORT)  # the short series matured in the session
    assert s.position("owner", LONG) == 40
    assert s.position("owner", PERP) == -144
    perp_orders = s.of(ev.ORDER_ACCEPTED, "owner", PERP)
    assert [e.qty for e in perp_orders] == [25] * 5 + [19]
    assert {e.side for e in perp_orders} == {"sell"}


def test_lender_buys_protection_on_its_collateral_without_a_perp_hedge():
    s = Session()
    s.add("guarantor", guarantor())
    s.add("maker", MarketMaker())
    s.add("lender", Lender(collateral_gpus=12, coverage_ppm=500_000, series={LONG: 40}))
    s.run()
    assert s.position("lender", LONG) == 6
    assert s.position("lender", PERP) == 0 and not s.of(ev.ORDER_ACCEPTED, "lender", PERP)
    assert not s.of(ev.ORDER_ACCEPTED, "lender", SHORT)


def test_speculator_sizes_protection_by_its_premium_budget():
    """$10,000 over 3 periods at up to 40 ticks ($40 a GPU a period): 83 contracts."""
    s = Session(accounts=[("spec", 500_000_00)])
    s.add("guarantor", guarantor())
    spec = s.add("spec", Speculator(budget=10_000_00, periods=3, series={LONG: 40}))
    s.run()
    assert spec.target(LONG) == 83
    assert s.position("spec", LONG) == 83
    assert all(price <= 40 for _, _, price in s.fills("spec", LONG))
    assert s.of(ev.PREMIUM_PAID, "spec", LONG)  # it pays its premiums


def test_guarantor_reposts_after_fills_up_to_its_max_contracts():
    """Clips of 10 up to 35: asks of 10, 10, 10 and 5, one at a time; the lender wants 50."""
    s = Session()
    s.add("guarantor", guarantor(max_contracts=35, clip=10))
    s.add("lender", Lender(collateral_gpus=50, series={LONG: 40}))
    s.run()
    asks = s.of(ev.ORDER_ACCEPTED, "guarantor", LONG)
    assert [e.qty for e in asks] == [10, 10, 10, 5]
    assert s.position("guarantor", LONG) == -35 and s.position("lender", LONG) == 35
    assert s.engine.account_view("lender")[2][0][4] == 15  # the rest of its bid still rests


def test_guarantor_meets_calls_from_reserve_then_asset_sales_then_defaults():
    """A guarantor with $30,000 of capital writes 2,000 contracts on each series: the first
    margin cycle calls it for far more than it has. It deposits its $5,000 reserve, then sells
    all $20,000 of its assets at a 40 % haircut and deposits the $12,000 raised, then can pay no
    more: the deadline cycle raises the call to the grown shortfall (the guarantor, told, still
    cannot pay) and declares the default for that amount."""
    s = Session(
        days=60,
        guarantor_cash=30_000_00,
        insurance_fund=5_000_00,
        default_fund_contribution=2_000_00,
    )
    g = s.add("guarantor", guarantor(reserve=5_000_00, assets=20_000_00, haircut_ppm=400_000))
    s.add("maker", MarketMaker())
    s.add("owner", GpuOwner(gpus=2_000, perp=None))
    s.run()
    (call,) = s.of(ev.COLLATERAL_CALL, "guarantor")
    (default,) = s.of(ev.DEFAULT, "guarantor")
    deposits = [e for e in s.of(ev.DEPOSIT, "guarantor") if e.t > call.t]
    assert [e.amount for e in deposits] == [5_000_00, 12_000_00]
    assert all(call.t < e.t < call.data["deadline"] for e in deposits)
    assert default.t >= call.data["deadline"]
    # once called it wrote nothing new
    assert not [e for e in s.of(ev.ORDER_ACCEPTED, "guarantor") if e.t > call.t]
    steps = [step for _, step, _ in g.actions]
    assert steps == [
        "called",
        "reserve",
        "asset_sale",
        "deposit_proceeds",
        "unable",
        "increased",
        "unable",
        "defaulted",
    ]
    (raised,) = s.of(ev.CALL_INCREASED, "guarantor")
    assert raised.t == default.t and default.amount == raised.amount == g.actions[5][2]
    assert g.actions[2][2] == 20_000_00 and (g.reserve, g.assets) == (0, 0)
    assert g.actions[4][2] == call.amount - 17_000_00
    assert not s.of(ev.BOT_FAILED)  # it never raised


def test_guarantor_cures_a_small_call_from_its_reserve_and_keeps_its_assets():
    s = Session(days=45, guarantor_cash=30_000_00)
    g = s.add("guarantor", guarantor(reserve=100_000_00, assets=100_000_00))
    s.add("owner", GpuOwner(gpus=10, perp=None, series={LONG: 40}))
    s.run()
    (call,) = s.of(ev.COLLATERAL_CALL, "guarantor")
    assert [e.amount for e in s.of(ev.DEPOSIT, "guarantor") if e.t > call.t] == [call.amount]
    assert s.of(ev.CALL_CURED, "guarantor") and not s.of(ev.DEFAULT)
    assert [step for _, step, _ in g.actions] == ["called", "reserve", "cured"]
    assert g.assets == 100_000_00 and g.reserve == 100_000_00 - call.amount


def test_a_protection_buyer_meets_its_calls_from_its_reserve():
    """833 contracts on $500,000 of capital: the buyer is called on day 1 and deposits the
    amount from its reserve, so it is cured and keeps its protection."""
    s = Session(accounts=[("spec", 500_000_00)])
    s.add("guarantor", guarantor())
    spec = s.add("spec", Speculator(budget=100_000_00, series={LONG: 40}, reserve=2_000_000_00))
    s.run()
    (call,) = s.of(ev.COLLATERAL_CALL, "spec")
    assert [e.amount for e in s.of(ev.DEPOSIT, "spec") if e.t > call.t] == [call.amount]
    assert s.of(ev.CALL_CURED, "spec") and not s.of(ev.DEFAULT, "spec")
    assert spec.reserve == 2_000_000_00 - call.amount
    assert s.position("spec", LONG) == 833


class _CallContext:
    """The part of a bot's context a margin-call callback uses: the time, deposits, cancels."""

    now = 7 * DAY_NS

    def __init__(self) -> None:
        self.deposits: list[int] = []
        self.cancels: list[str | None] = []

    def deposit(self, amount: int) -> None:
        self.deposits.append(amount)

    def cancel_all(self, instrument: str | None = None) -> None:
        self.cancels.append(instrument)


def test_guarantor_meets_a_raised_call_like_a_call():
    """A call raised to 900 (``increased``: the new whole amount due) is paid the way a call
    is: from the reserve first, and the guarantor stops writing."""
    g = guarantor(reserve=600, assets=1_000, haircut_ppm=500_000)
    ctx = _CallContext()
    g.on_margin_call(ctx, MarginCall("increased", ctx.now, 900, 9 * DAY_NS))
    assert ctx.deposits == [600, 300] and ctx.cancels == [None]
    assert [step for _, step, _ in g.actions] == [
        "increased",
        "reserve",
        "asset_sale",
        "deposit_proceeds",
    ]
    assert not g.writing


def test_market_maker_quotes_only_the_reducing_side_under_a_raised_call():
    maker = MarketMaker()
    ctx = _CallContext()
    maker.on_margin_call(ctx, MarginCall("increased", ctx.now, 900, 9 * DAY_NS))
    assert maker.called and ctx.cancels == [maker.params.instrument]


# ------------------------------------------------------------------ isolation
class Explodes(Bot):
    """Rests a bid, then raises on the second day."""

    def on_start(self, ctx):
        ctx.submit(PERP, "buy", 1_000, 5)
        ctx.schedule(2 * DAY_NS, "boom")

    def on_timer(self, ctx, tag):
        raise RuntimeError("strategy bug")


class Spins(Bot):
    """Loops forever in its first index callback."""

    def on_index(self, ctx, index):
        while True:
            pass


def test_a_bot_that_raises_is_stopped_with_its_orders_cancelled_while_others_trade():
    s = Session(accounts=[("buggy", 100_000_00)])
    s.add("maker", MarketMaker())
    s.add("taker", NoiseTaker())
    s.add("buggy", Explodes())
    s.run()
    (failed,) = s.of(ev.BOT_FAILED)
    assert failed.account == "buggy" and failed.t >= 2 * DAY_NS
    assert failed.data["cause"] == "raised" and failed.data["callback"] == "on_timer"
    assert failed.data["detail"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: strategy bug" in failed.data["detail"]
    cancelled = [e for e in s.of(ev.ORDER_CANCELLED, "buggy") if e.data["reason"] == "bot failed"]
    assert len(cancelled) == 1 and not s.engine.account_view("buggy")[2]
    assert not [e for e in s.of(ev.COMMAND_RECEIVED, "buggy") if e.t > failed.t]
    later = [e for e in s.of(ev.FILL) if e.t > failed.t + DAY_NS]
    assert later and {e.account for e in later} == {"taker"}


def test_a_bot_that_loops_forever_is_stopped_by_its_budget_and_the_session_finishes():
    s = Session(accounts=[("spin", 100_000_00)])
    s.add("maker", MarketMaker())
    s.add("spin", Spins(), budget_lines=20_000, latency=Latency(fixed_ns=5 * MS))
    s.run()
    (failed,) = s.of(ev.BOT_FAILED)
    assert failed.account == "spin" and failed.t < HOUR_NS
    assert failed.data["cause"] == "budget" and failed.data["callback"] == "on_index"
    assert "BudgetExceeded" in failed.data["detail"]
    assert s.sim.now == s.scenario.end_ns
    # the maker kept quoting to the end
    assert s.of(ev.ORDER_ACCEPTED, "maker")[-1].t > s.scenario.end_ns - 2 * HOUR_NS


# ------------------------------------------------------------------ conservation
def every_strategy_session() -> Session:
    """All seven strategies in one 60-day session with a thin guarantor that is called and
    defaults, run to the end (test_bot_isolation checks the runner's snapshots on it too)."""
    s = Session(
        days=60,
        seed=3,
        accounts=[("momo", 1_000_000_00), ("spec", 500_000_00)],
        guarantor_cash=60_000_00,
        insurance_fund=5_000_00,
        default_fund_contribution=2_000_00,
    )
    s.add("guarantor", guarantor(reserve=10_000_00, assets=30_000_00))
    s.add("maker", MarketMaker(size=25))
    s.add("taker", NoiseTaker(limit_ppm=200_000))
    s.add("momo", Momentum())
    s.add("owner", GpuOwner(gpus=1_000))
    s.add("lender", Lender(collateral_gpus=200))
    s.add("spec", Speculator(budget=50_000_00))
    s.run()
    return s


def test_a_session_of_every_strategy_conserves_cash_and_positions_after_every_event():
    """All seven strategies together, with a thin guarantor that is called and defaults:
    after every event, cash plus the exchange's pools equals the money brought in less the
    money taken out, every instrument's positions net to zero, and the fold of the log
    reaches the live state hash."""
    s = every_strategy_session()
    kinds = {e.kind for e in s.events}
    assert {ev.FILL, ev.COLLATERAL_CALL, ev.DEFAULT, ev.PREMIUM_PAID} <= kinds
    assert ev.BOT_FAILED not in kinds
    fold = Fold()
    for e in s.events:
        fold.apply(*e)
        total = sum(fold.cash.values()) + sum(fold.pools.values())
        assert total == fold.deposited - fold.withdrawn, f"seq {e.seq}"
        for instrument in fold.books:
            assert sum(p.get(instrument, 0) for p in fold.positions.values()) == 0, e.seq
    assert fold.state_hash() == s.engine.state_hash()
    (call,) = s.of(ev.COLLATERAL_CALL, "guarantor")
    assert [e.amount for e in s.of(ev.DEPOSIT, "guarantor") if e.t > call.t] == [
        10_000_00,
        21_000_00,  # all $30,000 of assets at the default 30 % haircut
    ]
