"""The compiled mark and funding (``exchange.kernel._mark``: ``CompiledExchange.publish_index``,
``mark`` and ``fund``) against the reference's (``Exchange.publish_index`` / ``Exchange.mark``
/ ``exchange.risk.default.check_maintenance`` / ``Exchange.fund``): the same calls must give
byte-identical events (also as a recorded run's lines), equal results and equal state.

Hypothesis writes the markets -- a perpetual with a random impact size, margin tiers, basis
half-life and price cap, a swap, accounts whose cash puts them anywhere from safe to under
maintenance, a margin floor -- and the call streams: resting and crossing orders (books of
many levels), index prints small and large, clocks that stand still or run for days, margin
cycles, funding, direct marks. A pair of engines runs each stream and is compared after every
call. The unit tests below pin what the compiled step proves by itself (no hand-over on a
healthy market), what it hands over (a holder below its bound, values past int64) and that the
hand-over gives the reference's liquidation.
"""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from exchange.core import events as ev
from exchange.core.events import Event
from exchange.kernel import _mark
from exchange.kernel import engine as engine_module
from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import Exchange
from exchange.products.perp import MarginTier
from exchange.products.pricing import black76_put, rvs_model_value
from exchange.risk import default, margin_cycle
from exchange.risk.default import _MaintenanceBound
from exchange.risk.margin import MarginParams
from exchange.risk.margin_cycle import AuctionBidder, MarginConfig, equity
from tests.exchange.kernel.test_engine_differential import EnginePair
from tests.markets import HOUR_NS, START, perp_spec, rvs_spec

PERP = "H100-PERP"
RVS = "H100-RVS"
RENTAL, RESALE = "H100-RENTAL", "H100-RESALE"
ACCOUNTS = ("alice", "bob", "carol", "maker")
PERP_SPEC_TICK_VALUE = perp_spec().tick_value  # minor units a tick is worth on a lot


class Pair(EnginePair):
    """A reference and a compiled engine on one market: :meth:`call` makes the same call on
    both and checks the events it produced and the value it returned (or what it raised)."""

    def __init__(
        self,
        perp: Any,
        cash: tuple[int, ...],
        margin: MarginConfig | None,
        lines: bool = False,
        seed: int = 1,
    ) -> None:
        super().__init__(lines)
        for engine in self.engines.values():
            engine.epoch = START
            engine.margin = margin
        self.call("start", "marks", seed, {})
        self.call("list_instrument", perp)
        self.call("list_instrument", rvs_spec(maturity=START.replace(year=START.year + 2)))
        for name, amount in zip(ACCOUNTS, cash, strict=True):
            self.call("open_account", name)
            self.call("credit", name, amount)
            if margin is not None:
                self.call("contribute", name, 10**6)
        if margin is not None:
            self.call("fund_pool", "insurance", 10**9)
        self.call("publish_index", RENTAL, 10_000)
        self.call("publish_index", RESALE, 15_000)

    def call(self, method: str, *args: Any) -> Any:
        self.trail.append(f"{method}{args!r:.200}")
        outcomes = self.outcomes(method, args)
        self.check()
        assert repr(outcomes["reference"]) == repr(outcomes["compiled"]), self.trail[-1]
        return outcomes["reference"]

    def order(self, account: str, instrument: str, side: str, price: int, qty: int, tif: str):
        return self.call(
            "handle",
            {
                "type": "submit",
                "account": account,
                "instrument": instrument,
                "side": side,
                "price": price,
                "qty": qty,
                "tif": tif,
            },
        )

    def later(self, ns: int) -> None:
        self.call("advance", self.engines["reference"].t + ns)


# ---------------------------------------------------------------------- the markets
@st.composite
def tiers(draw) -> list[MarginTier]:
    """One to three tiers, bounds small enough that positions cross them."""
    bounds = sorted(
        draw(st.sets(st.sampled_from([1, 2, 3, 5, 8, 13, 40, 1_000]), min_size=1, max_size=3))
    )
    rates = sorted(
        draw(st.lists(st.integers(1, 400_000), min_size=len(bounds), max_size=len(bounds)))
    )
    return [
        MarginTier(max_position_lots=most, initial_margin_ppm=2 * mm, maintenance_margin_ppm=mm)
        for most, mm in zip(bounds, rates, strict=True)
    ]


@st.composite
def perps(draw) -> Any:
    return perp_spec(
        impact_notional_lots=draw(st.sampled_from([1, 2, 3, 5, 7, 20, 64, 200])),
        margin_tiers=draw(tiers()),
        mark_basis_halflife_ns=draw(st.sampled_from([1, 7, HOUR_NS, 2 * HOUR_NS, 10**15])),
        max_price=draw(st.sampled_from([10_050, 10_300, 1_000_000])),
    )


@st.composite
def margins(draw) -> MarginConfig | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    return MarginConfig(
        cure_ns=8 * HOUR_NS,
        index_move_trigger_ppm=draw(st.sampled_from([0, 20_000, 100_000])),
        auction_bidders=[AuctionBidder(account="maker", discount_ppm=100_000, max_lots=10**6)],
        params=MarginParams(
            min_im=draw(st.sampled_from([0, 0, 1_000, 50_000, 10**6])),
            concentration_addon_ppm=draw(st.sampled_from([0, 250_000])),
        ),
    )


cash = st.tuples(
    *[st.sampled_from([10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6, 10**8]) for _ in range(3)],
    st.just(10**10),
)
sides = st.sampled_from(["buy", "sell"])
step = st.one_of(
    # the book: resting orders of the maker a few ticks from 10,000, and takers crossing
    st.tuples(
        st.just("order"),
        st.sampled_from(ACCOUNTS + ("maker", "maker")),
        sides,
        st.integers(-40, 40),
        st.integers(1, 30),
        st.sampled_from(["gtc", "gtc", "ioc"]),
    ),
    st.tuples(st.just("swap"), st.sampled_from(ACCOUNTS), sides, st.integers(1, 8)),
    st.tuples(
        st.just("index"),
        st.one_of(st.integers(9_800, 10_200), st.integers(8_000, 12_000), st.integers(1, 20_000)),
    ),
    st.tuples(st.just("resale"), st.integers(8_000, 20_000)),
    st.tuples(st.just("advance"), st.sampled_from([0, 1, 3, 10**6, HOUR_NS, 5 * HOUR_NS])),
    st.tuples(st.sampled_from(["cycle", "mark", "fund", "mark swap"])),
)


def play(pair: Pair, move: tuple) -> None:
    kind = move[0]
    if kind == "order":
        _, account, side, offset, qty, tif = move
        pair.order(account, PERP, side, 10_000 + offset, qty, tif)
    elif kind == "swap":
        _, account, side, qty = move
        pair.order(account, RVS, side, 500 if side == "buy" else 400, qty, "gtc")
    elif kind == "index":
        pair.call("publish_index", RENTAL, move[1])
    elif kind == "resale":
        pair.call("publish_index", RESALE, move[1])
    elif kind == "advance":
        pair.later(move[1])
    elif kind == "cycle":
        pair.call("margin_cycle")
    elif kind == "mark":
        pair.call("mark", PERP)
    elif kind == "mark swap":
        pair.call("mark", RVS)
    else:
        pair.call("fund", PERP)


def bound_verdict(engine: Exchange, instrument: str) -> bool:
    """The reference's check's verdict before it asks the grid: every holder's equity at or
    above ``_MaintenanceBound.at_most`` (``check_maintenance``'s loop, read only)."""
    holders = [
        a
        for a in engine.sorted_accounts()
        if a.positions.get(instrument, 0) and a.name not in engine.defaulted
    ]
    if not holders:
        return True
    bound = _MaintenanceBound(engine)
    return all(equity(engine, a.name, bound.valued) >= bound.at_most(a) for a in holders)


def assert_the_proof_s_edge_is_the_bound(engine: Exchange) -> None:
    """With every holder's equity put exactly at its ``_MaintenanceBound.at_most`` (cash moved,
    then put back), the compiled check proves the mark; with any one a minor unit below, it
    does not: the compiled bound is the reference's to the unit, swap legs, concentration and
    credit add-ons included."""
    holders = [
        a
        for a in engine.sorted_accounts()
        if a.positions.get(PERP, 0) and a.name not in engine.defaulted
    ]
    if not holders:
        return
    bound = _MaintenanceBound(engine)
    cash = {a.name: a.cash for a in holders}
    try:
        for a in holders:
            a.cash += bound.at_most(a) - equity(engine, a.name, bound.valued)
        assert _mark.proven(engine, PERP)
        for a in holders:
            a.cash -= 1
            assert not _mark.proven(engine, PERP), a.name
            a.cash += 1
    finally:
        for a in holders:
            a.cash = cash[a.name]


MARKS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@MARKS
@given(perps(), margins(), cash, st.lists(step, min_size=20, max_size=90), st.booleans())
def test_random_books_positions_prints_and_margin_states_mark_the_same_on_both_engines(
    perp, margin, amounts, stream, lines
):
    pair = Pair(perp, amounts, margin, lines=lines)
    # a book on both sides first: levels of the maker at distinct prices
    for offset, qty in ((-3, 4), (-7, 9), (-12, 30), (2, 3), (5, 11), (9, 40)):
        pair.order("maker", PERP, "buy" if offset < 0 else "sell", 10_000 + offset, qty, "gtc")
    for number, move in enumerate(stream, 1):
        play(pair, move)
        if number % 15 == 0:
            pair.call("state_hash")
        # the compiled proof hands over exactly where the reference's bound says a holder
        # may be short (a looser bound would hand over more, and still log the same bytes)
        engine = pair.engines["compiled"]
        if margin is not None and engine.instruments[PERP].mark is not None:
            assert _mark.proven(engine, PERP) == bound_verdict(engine, PERP), pair.trail[-1]
            assert_the_proof_s_edge_is_the_bound(engine)
    pair.call("state_hash")


# ---------------------------------------------------------------------- what it proves alone
@pytest.fixture
def handed(monkeypatch) -> dict[str, int]:
    """Counts of what the compiled engine hands the reference: whole marks of a perpetual (a
    swap's are always the reference's), and per-mark maintenance checks."""
    counts = {"mark": 0, "check": 0, "fund": 0, "pay": 0}
    reference_mark = Exchange.mark
    reference_check = engine_module.check_maintenance
    reference_fund = Exchange.fund
    reference_pay = Exchange._pay_funding

    def fund(self, name):
        counts["fund"] += 1
        return reference_fund(self, name)

    def pay(self, name, previous):
        counts["pay"] += 1
        return reference_pay(self, name, previous)

    def mark(self, name):
        counts["mark"] += self.instruments[name].spec.kind == "perp"
        return reference_mark(self, name)

    def check(engine, name):
        if isinstance(engine, CompiledExchange):
            counts["check"] += 1
        return reference_check(engine, name)

    monkeypatch.setattr(_mark, "_REFERENCE_MARK", mark)
    monkeypatch.setattr(_mark, "_REFERENCE_FUND", fund)
    monkeypatch.setattr(_mark, "_REFERENCE_PAY", pay)
    monkeypatch.setattr(engine_module, "check_maintenance", check)
    return counts


def _market(cash_alice: int = 10**8) -> Pair:
    margin = MarginConfig(
        cure_ns=8 * HOUR_NS,
        auction_bidders=[AuctionBidder(account="maker", discount_ppm=100_000, max_lots=10**6)],
    )
    pair = Pair(perp_spec(impact_notional_lots=5), (cash_alice, 10**8, 10**8, 10**10), margin)
    for offset, qty in ((-2, 3), (-5, 50), (4, 2), (6, 50)):
        pair.order("maker", PERP, "buy" if offset < 0 else "sell", 10_000 + offset, qty, "gtc")
    pair.order("alice", PERP, "buy", 10_004, 2, "ioc")  # alice long 2, the maker short 2
    return pair


def test_a_healthy_market_s_marks_are_proven_by_the_compiled_step_alone(handed):
    pair = _market()
    for ticks in (10_010, 10_020, 9_990, 10_000):
        pair.later(HOUR_NS)
        pair.call("publish_index", RENTAL, ticks)
    assert handed == {"mark": 0, "check": 0, "fund": 0, "pay": 0}
    events = pair.events["reference"]
    marks = [e for e in events if e.kind == ev.MARK_PRICE and e.instrument == PERP]
    assert len(marks) >= 5 and all(e.data["source"] == "index+basis" for e in marks)
    pair.call("state_hash")


def test_a_holder_below_its_bound_is_the_reference_s_check_and_is_liquidated_alike(handed):
    pair = _market(cash_alice=30_000)  # 2 lots of 100,000 minor units: 5 % MM is 10,000
    pair.later(HOUR_NS)
    pair.call("publish_index", RENTAL, 8_700)  # a 13 % fall: alice is under maintenance
    assert handed["check"] >= 1 and handed["mark"] == 0
    closes = [e for e in pair.events["compiled"] if e.kind == ev.CLOSE_OUT]
    assert closes and closes[0].account == "alice" and closes[0].data == {"reason": "liquidation"}
    pair.call("state_hash")


def test_the_impact_walk_reads_64_levels_a_side_and_a_level_that_completes_the_size(handed):
    pair = Pair(perp_spec(impact_notional_lots=65), (10**8, 10**8, 10**8, 10**10), None)
    # bids: 65 levels of one lot, of which the walk reads 64: short of the size; asks: 63
    # levels of one lot and a 64th of two, which completes the size exactly
    for level in range(65):
        pair.order("maker", PERP, "buy", 9_990 - level, 1, "gtc")
    for level in range(63):
        pair.order("maker", PERP, "sell", 10_010 + level, 1, "gtc")
    pair.order("maker", PERP, "sell", 10_200, 2, "gtc")
    pair.later(HOUR_NS)
    pair.call("publish_index", RENTAL, 10_000)
    model = pair.engines["compiled"].instruments[PERP].mark_model
    assert model.sample_nano == 0  # no impact bid: no basis sample
    pair.order("maker", PERP, "buy", 9_995, 2, "gtc")  # now 64 bid levels hold the size too
    pair.later(HOUR_NS)
    pair.call("publish_index", RENTAL, 10_000)
    assert model.sample_nano != 0  # both impact prices
    pair.later(HOUR_NS)
    pair.call("publish_index", RENTAL, 10_000)
    assert handed["mark"] == 0
    pair.call("state_hash")


def test_the_proof_s_edges_a_position_at_a_tier_s_bound_and_equity_at_the_bound(handed):
    tiers = [
        MarginTier(max_position_lots=5, initial_margin_ppm=100_000, maintenance_margin_ppm=50_000),
        MarginTier(
            max_position_lots=1_000, initial_margin_ppm=200_000, maintenance_margin_ppm=100_000
        ),
    ]
    margin = MarginConfig(cure_ns=8 * HOUR_NS)
    pair = Pair(perp_spec(margin_tiers=tiers), (10**8, 10**8, 10**8, 10**10), margin)
    pair.order("maker", PERP, "sell", 10_000, 50, "gtc")
    pair.order("alice", PERP, "buy", 10_000, 5, "ioc")  # 5 lots: the first tier's last size
    engine = pair.engines["compiled"]
    alice = engine.accounts["alice"]
    listing = engine.instruments[PERP]
    at_most = 5 * listing.mark * PERP_SPEC_TICK_VALUE * 50_000 // 10**6  # the 5 % tier's MM
    assert at_most == _MaintenanceBound(engine).at_most(alice)
    for shortfall, verdict in ((0, True), (1, False)):
        alice.cash += at_most - shortfall - equity(engine, "alice")
        assert bound_verdict(engine, PERP) is verdict
        assert _mark.proven(engine, PERP) is verdict


def test_an_index_move_of_exactly_the_trigger_runs_a_cycle_and_one_tick_less_does_not():
    pair = _market()  # the trigger: 10 % from the index at the last cycle
    pair.call("margin_cycle")  # the base: 10,000
    for ticks, cycles in ((10_999, False), (11_000, True)):
        since = len(pair.events["reference"])
        pair.later(HOUR_NS)
        pair.call("publish_index", RENTAL, ticks)
        kinds = {e.kind for e in pair.events["reference"][since:]}
        assert (ev.MARGIN_REQUIREMENT in kinds) is cycles


def test_funding_is_compiled_payers_first_at_every_premium_and_cap(handed):
    tiers = [
        MarginTier(
            max_position_lots=1_000, initial_margin_ppm=100_000, maintenance_margin_ppm=97_000
        )
    ]  # a 0.3 % cap on the rate: a wide book's premium reaches it
    pair = Pair(
        perp_spec(impact_notional_lots=3, margin_tiers=tiers), (10**8,) * 3 + (10**10,), None
    )
    pair.order("maker", PERP, "sell", 10_001, 20, "gtc")
    for account, side, qty in (("alice", "buy", 7), ("bob", "buy", 3), ("carol", "buy", 1)):
        pair.order(account, PERP, side, 10_001, qty, "ioc")
    pair.order("carol", PERP, "sell", 9_990, 2, "gtc")  # carol: long 1, resting sell
    pair.order("alice", PERP, "sell", 9_990, 1, "ioc")  # carol short 1 now
    books = [  # (side, price, qty) added before each interval: the premium moves
        [],
        [("buy", 9_999, 3), ("sell", 10_002, 5)],
        [("buy", 10_080, 4)],  # impact bid above the index: a premium past the band
        [("sell", 9_700, 9)],  # a deep discount: past the cap the other way
        [("buy", 10_500, 40), ("sell", 10_600, 40)],
    ]
    for orders in books:
        for side, price, qty in orders:
            pair.order("maker", PERP, side, price, qty, "gtc")
        pair.later(8 * HOUR_NS)
        pair.call("publish_index", RENTAL, 10_000)
        pair.call("fund", PERP)
    assert handed["fund"] == handed["pay"] == 0
    events = pair.events["reference"]
    rates = {e.data["rate"] for e in events if e.kind == ev.FUNDING_RATE}
    assert {"1/10000", "3/1000", "-3/1000"} <= rates  # the interest, the cap both ways
    paid = [e for e in events if e.kind == ev.FUNDING_PAID]
    assert paid and any(e.amount > 0 for e in paid) and any(e.amount < 0 for e in paid)
    pair.call("state_hash")


def test_funding_the_reference_refuses_is_handed_to_it(handed):
    pair = Pair(perp_spec(), (10**8,) * 3 + (10**10,), None)
    pair.order("maker", PERP, "sell", 10_001, 20, "gtc")
    pair.order("alice", PERP, "buy", 10_001, 2, "ioc")
    for engine in pair.engines.values():  # lots that do not net to zero
        engine.accounts["bob"].positions[PERP] = 1
    pair.later(8 * HOUR_NS)
    outcome = pair.call("fund", PERP)
    assert outcome.startswith("raised ValueError")
    assert handed["fund"] == 0 and handed["pay"] == 1  # the rate is compiled, not the payments
    kinds = [e.kind for e in pair.events["compiled"]]
    assert kinds[-1] == ev.FUNDING_RATE  # the reference's events up to its refusal


def test_values_past_int64_are_handed_to_the_reference_and_give_its_events(handed):
    pair = _market()
    for engine in pair.engines.values():  # the same state on both: past what C computes in
        engine.accounts["bob"].cash = 1 << 70
        engine.accounts["bob"].positions[PERP] = 1
        engine.accounts["maker"].positions[PERP] -= 1
    pair.later(HOUR_NS)
    pair.call("publish_index", RENTAL, 10_010)
    assert handed == {"mark": 0, "check": 1, "fund": 0, "pay": 0}
    for engine in pair.engines.values():
        engine.instruments[PERP].mark_model.basis_nano = 1 << 70
    pair.later(HOUR_NS)
    pair.call("publish_index", RENTAL, 10_020)
    assert handed["mark"] == 1
    pair.call("state_hash")


def test_an_engine_with_its_own_hooks_takes_the_reference_path(handed):
    class Watched(CompiledExchange):
        def _emit(self, kind, **fields):  # a subclass hook: the compiled step must not skip it
            return super()._emit(kind, **fields)

    events: list[Event] = []
    engine = Watched(events.append)
    engine.epoch = START
    engine.start("hooks", 1, {})
    engine.list_instrument(perp_spec())
    engine.publish_index(RENTAL, 10_000)
    assert handed["mark"] == 1
    assert [e.kind for e in events][-2:] == [ev.INDEX_PUBLISHED, ev.MARK_PRICE]


# ---------------------------------------------------------------------- the swap's put in C
#: (index tick, GPUs a contract) pairs whose payoff tick is whole minor units: ticks as
#: coefficient x 10**exponent, exponents from -5 to +3
SWAP_TICKS = [
    ("1", 1),
    ("0.01", 1),
    ("0.5", 2),
    ("0.10", 3),
    ("0.25", 4),
    ("2.5", 2),
    ("0.001", 1_000),
    ("0.00001", 100_000),
    ("7", 8),
    ("1E+3", 1),
]


@st.composite
def swaps(draw) -> tuple[Any, Exchange, MarginParams]:
    """A swap series (floor, index tick, GPUs, volatility, maturity), an engine whose clock and
    resale index are anywhere from the listing past the maturity, and a grid of shocks."""
    tick, gpus = draw(st.sampled_from(SWAP_TICKS))
    spec = rvs_spec(
        maturity=START + timedelta(days=draw(st.integers(1, 4_000))),
        floor=draw(st.one_of(st.integers(1, 40_000), st.integers(1, 10**12))),
        index_tick_size=tick,
        gpus_per_contract=gpus,
        volatility=draw(st.one_of(st.sampled_from([0.35, 5.0]), st.floats(1e-9, 5.0))),
    )
    engine = Exchange(lambda event: None)
    engine.epoch = START
    maturity_ns = engine.date_ns(spec.maturity)
    engine.t = draw(
        st.one_of(
            st.integers(0, maturity_ns + 10**17),
            st.sampled_from([maturity_ns, maturity_ns - 1, maturity_ns + 1]),
        )
    )
    engine.indices[spec.resale_index] = draw(
        st.one_of(st.integers(1, 10**6), st.integers(1, 2**60), st.just(spec.floor))
    )
    shocks = st.floats(-0.99, 3.0)
    params = MarginParams(
        index_shocks=draw(st.lists(shocks, min_size=1, max_size=7)),
        vol_shocks=draw(st.lists(shocks, min_size=1, max_size=3)),
    )
    return spec, engine, params


@settings(max_examples=400, deadline=None, derandomize=True)
@given(swaps())
def test_the_compiled_put_is_the_reference_s_int_or_declines_past_the_exact_doubles(swap):
    spec, engine, params = swap
    compiled = _mark.put_at_worst(engine, spec, params)
    reference = default._put_at_worst(engine, spec, params)
    _, digits, exponent = Decimal(spec.index_tick_size).as_tuple()
    coefficient = int("".join(map(str, digits)))
    level = engine.indices[spec.resale_index] * coefficient * 10 ** max(exponent, 0)
    if level <= 2**53:  # the level is an exact double: computed in C, never declined
        assert compiled == reference
    else:
        assert compiled is None


def reference_put_values(engine: Exchange, spec: Any, params: MarginParams) -> tuple:
    """The doubles ``default._put_at_worst`` computes, by its own expressions: the level, the
    years, the contract's value in the grid's worst corner and now."""
    tick, _, floor = default._swap_terms(spec.floor, spec.index_tick_size, spec.gpus_per_contract)
    years = max(0, engine.date_ns(spec.maturity) - engine.t) / default.YEAR_NS
    level = float(engine.indices[spec.resale_index] * tick)
    worst = rvs_model_value(
        level * (1.0 + min(params.index_shocks)),
        floor,
        spec.volatility * (1.0 + max(params.vol_shocks)),
        years,
        spec.gpus_per_contract,
    )
    now = rvs_model_value(level, floor, spec.volatility, years, spec.gpus_per_contract)
    return level, years, worst, now


@settings(max_examples=300, deadline=None, derandomize=True)
@given(swaps())
def test_the_compiled_put_s_doubles_are_the_reference_s_bits(swap):
    spec, engine, params = swap
    compiled = _mark.put_values(engine, spec, params)
    assume(compiled is not None)  # (past the exact doubles: the test above)
    reference = reference_put_values(engine, spec, params)
    assert [x.hex() for x in compiled] == [x.hex() for x in reference]


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    st.one_of(st.floats(1e-6, 1e7), finite, st.just(100.0)),
    st.one_of(st.floats(1e-6, 1e7), finite, st.sampled_from([0.0, 100.0, 5e-324])),
    st.one_of(st.floats(0.0, 6.0), finite, st.just(0.0)),
    st.one_of(st.floats(-1.0, 30.0), finite, st.sampled_from([0.0, -0.0, 1e-300])),
)
# deep in the money: the formula's value a rounding below the intrinsic value, which clamps it
@example(0.7054363327130675, 683.8265396963637, 0.44035664282073805, 4.168263666705413)
@example(40205.05779641038, 153336.67842296572, 0.05682352749060063, 8.233769328313796)
def test_the_compiled_black76_put_is_the_python_function_s_bits_or_declines(f, k, sigma, t):
    compiled = _mark.black76(f, k, sigma, t)
    try:
        reference = black76_put(f, k, sigma, t)
    except ValueError:  # refused: the compiled one declines (the caller asks Python)
        assert compiled is None
        return
    if compiled is None:  # declined: only past the log's domain or the finite values
        assert not 0.0 < f / k < math.inf or max(f, k) > 1e307
        return
    assert compiled.hex() == reference.hex()


def test_the_compiled_put_declines_what_it_cannot_compute_as_the_reference_does():
    spec = rvs_spec(maturity=START + timedelta(days=400))
    engine = Exchange(lambda event: None)
    engine.epoch = START
    engine.indices[spec.resale_index] = 15_000
    params = MarginParams()
    assert _mark.put_at_worst(engine, spec, params) == default._put_at_worst(engine, spec, params)
    engine.indices[spec.resale_index] = 2**53 + 1  # the level past the exact doubles
    assert _mark.put_at_worst(engine, spec, params) is None
    engine.indices[spec.resale_index] = 15_000
    before = _mark.put_at_worst(engine, spec, params)
    engine.epoch = START - timedelta(days=300)  # another calendar: the maturity read afresh
    assert _mark.put_at_worst(engine, spec, params) == default._put_at_worst(engine, spec, params)
    assert _mark.put_at_worst(engine, spec, params) != before
    engine.epoch = None  # no calendar: the reference's function raises
    assert _mark.put_at_worst(engine, spec, params) is None
    with pytest.raises(ValueError):
        default._put_at_worst(engine, spec, params)


def test_a_swap_seller_s_put_is_compiled_in_the_proof_and_the_reference_s_past_it(
    handed, monkeypatch
):
    asked: list[str] = []  # the compiled engine's calls of the Python put
    reference_put = default._put_at_worst

    def put(engine, spec, params):
        if isinstance(engine, CompiledExchange):
            asked.append(spec.name)
        return reference_put(engine, spec, params)

    monkeypatch.setattr(default, "_put_at_worst", put)
    pair = _market()
    pair.order("maker", RVS, "sell", 400, 5, "gtc")
    pair.order("bob", RVS, "buy", 400, 5, "ioc")  # the maker (short the perpetual) sold 5
    for ticks in (10_010, 9_990):
        pair.later(HOUR_NS)
        pair.call("publish_index", RENTAL, ticks)
    assert handed["check"] == 0 and asked == []  # proven, the put in C
    engine = pair.engines["compiled"]
    assert_the_proof_s_edge_is_the_bound(engine)  # the put to the unit: the bound's
    for each in pair.engines.values():  # a resale index past the exact doubles
        each.indices[RESALE] = 2**60
    pair.later(HOUR_NS)
    pair.call("publish_index", RENTAL, 10_000)
    assert asked and set(asked) == {RVS} and handed["check"] == 0  # asked of Python, proven
    assert_the_proof_s_edge_is_the_bound(engine)
    pair.call("state_hash")


def test_the_compiled_engine_s_margin_twins_log_the_reference_s_bytes(
    monkeypatch,
):
    calls = {"twin": 0, "declined": 0, "numpy": 0, "standing": 0}
    numpy_margin = margin_cycle.initial_margin

    def twin(book, params, tiers):
        calls["twin"] += 1
        result = _mark.initial_margin(book, params, tiers)
        calls["declined"] += result is None
        return result

    def standing(book, params):
        result = _mark.credit_standing(book, params)
        calls["standing"] += result is not None
        return result

    def numpy(book, params, tiers=None):
        calls["numpy"] += 1
        return numpy_margin(book, params, tiers)

    # (``raising=False``: the engine names its twins itself once the lead wires them)
    monkeypatch.setattr(CompiledExchange, "initial_margin_twin", staticmethod(twin), raising=False)
    monkeypatch.setattr(
        CompiledExchange, "credit_standing_twin", staticmethod(standing), raising=False
    )
    monkeypatch.setattr(margin_cycle, "initial_margin", numpy)
    pair = _market()
    for seller, buyer, qty in (("maker", "bob", 5), ("carol", "alice", 3)):
        pair.order(seller, RVS, "sell", 400, qty, "gtc")
        pair.order(buyer, RVS, "buy", 400, qty, "ioc")
    for ticks, resale in ((10_010, 15_000), (9_700, 9_000), (10_300, 22_000)):
        pair.later(24 * HOUR_NS)
        pair.call("publish_index", RESALE, resale)
        pair.call("publish_index", RENTAL, ticks)
        pair.call("margin_cycle")
    # every grid the compiled engine asked was the twin's, none declined; the reference's
    # were numpy's: the same count, and the same events (Pair.call compares them)
    assert calls["twin"] >= 3 and calls["declined"] == 0 and calls["standing"] >= 3
    assert calls["numpy"] == calls["twin"]
    kinds = {e.kind for e in pair.events["compiled"]}
    assert ev.MARGIN_REQUIREMENT in kinds
    pair.call("state_hash")
