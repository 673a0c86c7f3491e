"""Perpetual margin: tiers enforced by the engine, a funding cap that fits inside every tier's
buffer, and maintenance checked at every mark (issue #18, defect 5 and the per-mark check).

Numbers are worked by hand in the comments.
"""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.products.perp import (
    PPM,
    FundingIndex,
    MarginTier,
    PerpSpec,
    funding_rate,
    settle_funding,
    tier_margin,
)
from exchange.risk.margin import MarginParams
from exchange.risk.margin_cycle import MarginConfig
from tests.exchange.products.test_products import Market
from tests.markets import START, perp_spec, rvs_spec

HOUR = 3_600 * 10**9
#: Margin on, but no cycle runs unless a test calls one: the grid for swaps, no add-ons.
CONFIG = MarginConfig(
    interval_ns=DAY_NS,
    index_move_trigger_ppm=0,
    params=MarginParams(credit_tiers=[], concentration_addon_ppm=0),
)
#: Tier 1 has a 5 % buffer (IM 10 %, MM 5 %); tier 2 only 2 % (IM 20 %, MM 18 %).
NARROW_SECOND_TIER = [
    MarginTier(max_position_lots=100, initial_margin_ppm=100_000, maintenance_margin_ppm=50_000),
    MarginTier(max_position_lots=1_000, initial_margin_ppm=200_000, maintenance_margin_ppm=180_000),
]


def _capped_payment(spec: PerpSpec, lots: int, mark: int, sign: int) -> dict[str, int]:
    """Cash deltas of one funding interval at the capped rate (``sign`` +1: longs pay), via
    the library functions ``Exchange.fund`` uses: a premium far beyond the cap, the rate,
    ``FundingIndex.accrue`` and ``settle_funding``."""
    rate = funding_rate(Fraction(2 * sign), spec)
    assert rate == Fraction(sign * spec.funding_cap_ppm, PPM)
    index = FundingIndex()
    index.accrue(rate, mark, spec.tick_value)
    return settle_funding(
        {"long": lots, "short": -lots}, {"long": 0, "short": 0}, index.cumulative, "pool"
    )


# ------------------------------------------------------------------------------ the cap
def test_the_funding_cap_is_the_narrowest_tier_buffer_so_a_capped_payment_fits_in_tier_two():
    """500 lots at 2,000 ticks and 10 cents a tick: notional 10,000,000 cents, in tier 2: IM
    20 % = 2,000,000, MM 18 % = 1,800,000. A cap taken from tier 1 (5 %) would charge
    500,000 and leave 1,500,000, below MM; the cap is min(5 %, 2 %) = 2 %: 200,000 is paid
    and 1,800,000 is left, exactly MM."""
    spec = perp_spec(margin_tiers=NARROW_SECOND_TIER)
    assert spec.funding_cap_ppm == 20_000
    for sign, payer in ((1, "long"), (-1, "short")):
        deltas = _capped_payment(spec, 500, 2_000, sign)
        assert deltas[payer] == -200_000
        assert 2_000_000 + deltas[payer] >= 1_800_000


@st.composite
def _tiers(draw):
    n = draw(st.integers(1, 4))
    sizes = sorted(draw(st.sets(st.integers(1, 10**6), min_size=n, max_size=n)))
    mms = sorted(draw(st.lists(st.integers(1, PPM - 1), min_size=n, max_size=n)))
    tiers, im = [], 0
    for size, mm in zip(sizes, mms, strict=True):
        im = draw(st.integers(max(im, mm + 1), PPM))
        tiers.append(
            MarginTier(max_position_lots=size, initial_margin_ppm=im, maintenance_margin_ppm=mm)
        )
    return tiers


@settings(max_examples=400, deadline=None)
@given(
    tiers=_tiers(),
    gpu_hours=st.integers(1, 10_000),
    lot_size=st.integers(1, 20),
    mark=st.integers(1, 10**7),
    size_share=st.floats(0, 1.5),
    sign=st.sampled_from([1, -1]),
)
def test_one_capped_funding_payment_never_takes_a_position_opened_at_tier_im_below_tier_mm(
    tiers, gpu_hours, lot_size, mark, size_share, sign
):
    """Any tiers, any size (beyond the last tier too), any mark and tick value: a position
    whose account holds exactly the tier IM the engine demands, charged one interval at the
    cap at an unchanged mark (its equity is then its cash), keeps at least the tier MM."""
    spec = perp_spec(
        margin_tiers=tiers,
        tick_size="0.01",  # 1 cent x GPU-hours x lot size: every tick value is whole
        gpu_hours_per_contract=gpu_hours,
        lot_size=lot_size,
        max_price=10**7,
    )
    lots = max(1, int(size_share * tiers[-1].max_position_lots))
    im, mm = tier_margin(spec, lots, mark)
    payer = "long" if sign > 0 else "short"
    deltas = _capped_payment(spec, lots, mark, sign)
    assert deltas[payer] < 0
    assert im + deltas[payer] >= mm


def test_tier_margin_picks_the_first_tier_that_holds_the_size_and_the_last_beyond_them():
    """Tiers up to 1,000 lots at 10 % / 5 % and up to 10,000 at 20 % / 10 %, 10 cents a tick,
    mark 3 ticks (30 cents a lot): 1,000 lots (notional 30,000) are tier 1: IM 3,000, MM
    1,500; 1,001 lots (30,030) tier 2: IM 6,006, MM 3,003; 20,000 lots (600,000), past the
    last tier, at the last: 120,000 / 60,000. 7 lots (210): IM ceil(21.0) = 21, MM
    floor(10.5) = 10 -- IM rounds up, MM down. Shorts are margined on their size."""
    spec = perp_spec(
        margin_tiers=[
            MarginTier(
                max_position_lots=1_000, initial_margin_ppm=100_000, maintenance_margin_ppm=50_000
            ),
            MarginTier(
                max_position_lots=10_000,
                initial_margin_ppm=200_000,
                maintenance_margin_ppm=100_000,
            ),
        ]
    )
    assert tier_margin(spec, 1_000, 3) == (3_000, 1_500)
    assert tier_margin(spec, -1_000, 3) == (3_000, 1_500)
    assert tier_margin(spec, 1_001, 3) == (6_006, 3_003)
    assert tier_margin(spec, -20_000, 3) == (120_000, 60_000)
    assert tier_margin(spec, 7, 3) == (21, 10)
    assert tier_margin(spec, 0, 3) == (0, 0)


# ------------------------------------------------------------------- the engine's margin
def _long_20(spec: PerpSpec, config: MarginConfig = CONFIG) -> Market:
    """c long 20 lots at 2,000 ticks against a (10 cents a tick: notional 400,000)."""
    m = Market(spec)
    m.engine.margin = config
    m.engine.publish_index("H100-RENTAL", 2_000)
    m.send(type="submit", account="a", instrument="H100-PERP", side="sell", price=2_000, qty=20)
    m.send(type="submit", account="c", instrument="H100-PERP", side="buy", price=2_000, qty=20)
    return m


def test_the_engine_margins_a_perpetual_by_its_tier_not_by_the_scenario_grid():
    """Tier 1 (10 % / 5 %): the 20-lot long and short each need IM 40,000 and MM 20,000 (the
    grid's -40 % scenario would have asked 160,000)."""
    m = _long_20(perp_spec())
    reqs = m.engine.margin.requirements(m.engine)
    assert reqs == {"a": (40_000, 20_000), "c": (40_000, 20_000)}
    mark = len(m.events)
    m.engine.margin_cycle()
    published = {
        e.account: (e.amount, e.data["mm"])
        for e in m.after(mark)
        if e.kind == ev.MARGIN_REQUIREMENT
    }
    assert published == reqs
    m.check_ledger()


def test_min_im_floors_the_total_once_and_mm_follows_the_floor():
    """min_im 50,000 over a tier IM of 40,000: IM 50,000; MM is the larger of the tier MM
    (20,000) and 75 % of the floor, ceil(37,500) = 37,500."""
    config = CONFIG.model_copy(
        update={"params": CONFIG.params.model_copy(update={"min_im": 50_000})}
    )
    m = _long_20(perp_spec(), config)
    assert m.engine.margin.requirements(m.engine)["c"] == (50_000, 37_500)


def test_an_account_with_swaps_and_a_perpetual_pays_the_grid_on_the_swaps_plus_the_tier():
    """b and c buy the same 10 swaps from a; c is also long 20 perpetual lots: c's margin is
    b's (the swaps alone, on the grid) plus the perpetual's tier, 40,000 / 20,000 -- the
    perpetual does not net against the swaps, and the swaps' margin is the grid's."""
    from datetime import date

    rvs = rvs_spec(maturity=date(2025, 6, 1))
    m = Market(perp_spec(), rvs)
    m.engine.margin = CONFIG
    m.engine.publish_index("H100-RENTAL", 2_000)
    m.engine.publish_index("H100-RESALE", 22_000)
    mark_ticks = m.engine.instruments[rvs.name].mark
    for buyer in ("b", "c"):
        m.send(
            type="submit", account="a", instrument=rvs.name, side="sell", price=mark_ticks, qty=10
        )
        m.send(
            type="submit", account=buyer, instrument=rvs.name, side="buy", price=mark_ticks, qty=10
        )
    m.send(type="submit", account="a", instrument="H100-PERP", side="sell", price=2_000, qty=20)
    m.send(type="submit", account="c", instrument="H100-PERP", side="buy", price=2_000, qty=20)
    reqs = m.engine.margin.requirements(m.engine)
    im_b, mm_b = reqs["b"]
    assert im_b > 0
    assert reqs["c"] == (im_b + 40_000, mm_b + 20_000)


# ------------------------------------------------------ maintenance at every mark update
def _hyperliquid(side: str) -> tuple[Exchange, list, int]:
    """Hyperliquid's example: entry 10,000.00, 10x (IM 10 %), maintenance 1.25 %. A tick is
    $0.01 on 1 GPU-hour (1 cent a lot), so 10,000.00 is 1,000,000 ticks; 1,000 lots are
    10,000,000 cents of notional and the trader deposits exactly the tier IM, 1,000,000 x
    1,000 x 10 % = 100,000,000. "deep" takes the other side; "bidder" rests the order the
    liquidation hits, inside the 10 % band. The margin cycle is daily and never runs."""
    spec = perp_spec(
        tick_size="0.01",
        gpu_hours_per_contract=1,
        max_price=10**7,
        margin_tiers=[
            MarginTier(
                max_position_lots=10_000,
                initial_margin_ppm=100_000,
                maintenance_margin_ppm=12_500,
            )
        ],
    )
    events: list = []
    engine = Exchange(events.append)
    engine.epoch = START
    engine.start("test", 1, {})
    engine.list_instrument(spec)
    engine.margin = CONFIG
    for name, cash in (("trader", 100_000_000), ("deep", 10**12), ("bidder", 10**12)):
        engine.open_account(name)
        engine.credit(name, cash)
    engine.publish_index("H100-RENTAL", 1_000_000)
    other, exit_side, exit_price = (
        ("sell", "buy", 850_000) if side == "buy" else ("buy", "sell", 1_150_000)
    )

    def send(**command):
        result = engine.handle({"instrument": "H100-PERP", **command})
        assert result.ok, result.reason
        return result

    send(type="submit", account="deep", side=other, price=1_000_000, qty=1_000)
    send(type="submit", account="trader", side=side, price=1_000_000, qty=1_000)
    send(type="submit", account="bidder", side=exit_side, price=exit_price, qty=1_000)
    # a resting order of the trader's far away, which the liquidation cancels first
    resting = send(
        type="submit",
        account="trader",
        side=exit_side,
        price=2_000_000 if side == "buy" else 1,
        qty=5,
    ).order_id
    return engine, events, resting


@pytest.mark.parametrize(
    ("side", "path", "safe", "liquidated"),
    [
        # long: equity 100,000,000 + 1,000 x (p - 1,000,000) < MM floor(1,000 x p x 1.25 %)
        # first at p = 911,392: equity 11,392,000 < 11,392,400; at 911,393: 11,393,000 >=
        # 11,392,412. Liquidation price 10,000 - 875 / (1 - 0.0125) = 9,113.92
        ("buy", [990_000, 950_000, 920_000, 911_400, 911_394], 911_393, 911_392),
        # short: equity 100,000,000 - 1,000 x (p - 1,000,000) < floor(1,000 x p x 1.25 %)
        # first at p = 1,086,420: 13,580,000 < 13,580,250; at 1,086,419: 13,581,000 >=
        # 13,580,237. Liquidation price 10,000 + 875 / (1 + 0.0125) = 10,864.20
        ("sell", [1_010_000, 1_050_000, 1_080_000, 1_086_400, 1_086_418], 1_086_419, 1_086_420),
    ],
)
def test_hyperliquid_example_a_perpetual_is_liquidated_at_the_first_mark_past_its_price(
    side, path, safe, liquidated
):
    engine, events, resting = _hyperliquid(side)
    t = 0
    for price in [*path, safe]:
        t += HOUR
        engine.advance(t)
        engine.publish_index("H100-RENTAL", price)
        # the book has no impact ask and bid pair (one side only): the mark is the index
        assert engine.instruments["H100-PERP"].mark == price
        assert not [e for e in events if e.kind == ev.CLOSE_OUT], f"liquidated at {price}"
    t += HOUR
    engine.advance(t)
    since = len(events)
    engine.publish_index("H100-RENTAL", liquidated)
    assert engine.instruments["H100-PERP"].mark == liquidated
    after = events[since:]
    cancelled = [(e.order_id, e.data["reason"]) for e in after if e.kind == ev.ORDER_CANCELLED]
    assert cancelled[0] == (resting, "liquidation")
    close = next(e for e in after if e.kind == ev.CLOSE_OUT)
    assert (close.account, close.qty, close.data["reason"]) == ("trader", 1_000, "liquidation")
    assert close.t == t < DAY_NS  # at this mark's nanosecond, not at a daily cycle
    assert ev.MARGIN_REQUIREMENT not in [e.kind for e in events]
    fills = [(e.account, e.qty, e.counterparty) for e in after if e.kind == ev.FILL]
    assert fills == [("trader", 1_000, "bidder")]  # the liquidation takes the resting order
    assert engine.accounts["trader"].positions.get("H100-PERP", 0) == 0


def test_the_credit_add_on_sees_only_the_swaps_and_the_capital_the_perpetuals_leave():
    """b and c sell the same 10 swaps (gross notional 10 x 20,000 x 100 = 20,000,000 cents);
    c is also long 20 perpetual lots (tier IM 40,000) and holds 1,000,000 of cash, b 960,000.
    The capital ratio is (equity - perpetual IM) / swap gross notional: 960,000 / 20,000,000
    = 4.8 % for both, below the 4.9 % tier, so both are rated into it, pay the +100 % add-on
    on their swaps, and c pays exactly b's margin plus the tier. (On its full cash c's ratio
    would be 5 %, above the tier: no add-on.) Since issue #19 the add-on is the rating's, so
    the two are rated into the tier here as a margin cycle would; and they sell, because a
    buyer's gross notional is now only the premiums it owes
    (tests/exchange/risk/test_ratings.py)."""
    from datetime import date

    rvs = rvs_spec(maturity=date(2025, 6, 1))
    config = CONFIG.model_copy(
        update={"params": CONFIG.params.model_copy(update={"credit_tiers": [(49_000, PPM)]})}
    )
    m = Market(perp_spec(), rvs)
    m.engine.margin = config
    m.engine.publish_index("H100-RENTAL", 2_000)
    m.engine.publish_index("H100-RESALE", 22_000)
    premium = m.engine.instruments[rvs.name].mark
    for seller in ("b", "c"):
        m.send(type="submit", account="a", instrument=rvs.name, side="buy", price=premium, qty=10)
        m.send(
            type="submit", account=seller, instrument=rvs.name, side="sell", price=premium, qty=10
        )
    m.send(type="submit", account="a", instrument="H100-PERP", side="sell", price=2_000, qty=20)
    m.send(type="submit", account="c", instrument="H100-PERP", side="buy", price=2_000, qty=20)
    for name, keep in (("b", 960_000), ("c", 1_000_000)):
        m.send(type="withdraw", account=name, amount=m.engine.accounts[name].cash - keep)
    from exchange.risk.margin_cycle import equity

    standing = m.engine.margin.credit_standing(m.engine)
    # about 4.8 % (equity is cash plus the trade's unsettled variation margin): the 4.9 % tier
    capital = {"b": equity(m.engine, "b"), "c": equity(m.engine, "c") - 40_000}
    for name in ("b", "c"):
        assert standing[name] == (1, capital[name] * PPM // 20_000_000)
    reqs = m.engine.margin.requirements(m.engine, ratings={"b": 1, "c": 1})
    plain = CONFIG.requirements(m.engine)  # the same book without the credit add-on
    assert reqs["b"][0] > plain["b"][0]  # b pays the add-on
    assert reqs["c"] == (reqs["b"][0] + 40_000, reqs["b"][1] + 20_000)


@settings(max_examples=60, deadline=None)
@given(
    resale=st.integers(2_000, 60_000),
    rental=st.integers(1, 10_000),
    swap_lots=st.integers(-500, 500),
    perp_lots=st.integers(-3_000, 3_000),
    days=st.integers(0, 300),
    conc=st.integers(0, 2 * PPM),
    credit=st.integers(0, 2 * PPM),
    cash=st.integers(-(10**6), 10**9),
)
def test_the_per_mark_bound_on_maintenance_is_never_below_the_exact_requirement(
    resale, rental, swap_lots, perp_lots, days, conc, credit, cash
):
    """The per-mark check skips the grid for an account whose equity is at or above
    ``_maintenance_at_most``: that is only sound if the bound is at or above the exact MM of
    ``MarginConfig.requirements`` -- for buyers and sellers of protection, with perpetuals,
    any add-ons, at any time to maturity."""
    from datetime import date

    from exchange.risk.default import _maintenance_at_most

    rvs = rvs_spec(maturity=date(2025, 6, 1))
    config = CONFIG.model_copy(
        update={
            "params": MarginParams(
                concentration_addon_ppm=conc, credit_tiers=[(100_000, credit)], min_im=1_000
            )
        }
    )
    m = Market(perp_spec(), rvs)
    m.engine.margin = config
    m.engine.advance(days * DAY_NS)
    m.engine.publish_index("H100-RENTAL", min(rental, 1_000_000))
    m.engine.publish_index("H100-RESALE", resale)
    accounts = m.engine.accounts
    accounts["a"].positions.update({rvs.name: swap_lots, "H100-PERP": perp_lots})
    accounts["b"].positions.update({rvs.name: -swap_lots, "H100-PERP": -perp_lots})
    accounts["c"].positions.update({rvs.name: swap_lots // 3})  # concentration differs
    accounts["b"].positions[rvs.name] -= swap_lots // 3
    for account in accounts.values():
        account.cash = cash
    m.engine.ratings = dict.fromkeys(accounts, 1)  # the add-on is the rating's: charge it
    reqs = m.engine.margin.requirements(m.engine)
    for name, (_im, mm) in reqs.items():
        assert _maintenance_at_most(m.engine, accounts[name]) >= mm, name
