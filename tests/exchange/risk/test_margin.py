"""exchange.risk.margin: hand-worked margins (perpetuals, swaps, hedges, add-ons, rounding), the
validation of parameters and books, exactness against rational arithmetic, and properties
(non-negative, subadditive without add-ons, homogeneous, deterministic).

Units: minor units (cents) for money, lots for positions, ticks for perpetual marks, currency
units per GPU for swap index levels and floors.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from exchange.products.pricing import black76_put
from exchange.risk.margin import (
    MAX_LOTS,
    PERP,
    RVS,
    SNAP_MAX,
    SNAP_REL,
    Book,
    MarginParams,
    ScenarioGrid,
    gross_notional,
    initial_margin,
    scenario_pnl,
)

RICH = 10**12  # equity that never triggers the credit add-on here (minor units)
WIDE_OI = 10**9  # open interest that never makes a position concentrated here (lots)
NO_ADDONS = MarginParams(concentration_addon_ppm=0, credit_tiers=[])


def make_book(instruments, positions, equity=None, open_interest=None) -> Book:
    """A book from a list of instrument dicts: ``{"kind": "perp", "mark": .., "tick": ..}`` or
    ``{"kind": "rvs", "index": .., "floor": .., "sigma": .., "t": .., "gpus": ..}``, plus an
    optional ``"u"`` (underlying id) and ``"oi"`` (open interest, lots)."""
    positions = np.array(positions, dtype=np.int64)
    positions = positions.reshape(len(positions), len(instruments))
    perp = [i["kind"] == "perp" for i in instruments]
    return Book(
        kind=np.array([PERP if p else RVS for p in perp]),
        underlying=np.array([i.get("u", 0) for i in instruments]),
        mark=np.array([i.get("mark", 0) for i in instruments]),
        tick_value=np.array([i.get("tick", 0) for i in instruments]),
        index=np.array([i.get("index", 0.0) for i in instruments], dtype=float),
        floor=np.array([i.get("floor", 0.0) for i in instruments], dtype=float),
        sigma=np.array([i.get("sigma", 0.0) for i in instruments], dtype=float),
        t_years=np.array([i.get("t", 0.0) for i in instruments], dtype=float),
        gpus_per_contract=np.array([i.get("gpus", 1) for i in instruments]),
        positions=positions,
        open_interest=np.array(
            open_interest
            if open_interest is not None
            else [i.get("oi", WIDE_OI) for i in instruments]
        ),
        equity=np.array(equity if equity is not None else [RICH] * len(positions)),
    )


PERP_2000 = {"kind": "perp", "mark": 2_000, "tick": 10}  # 20,000 cents ($200) a lot
RVS_8000 = {"kind": "rvs", "index": 10_000.0, "floor": 8_000.0, "sigma": 0.35, "t": 1.0}
GRID = ScenarioGrid()


def k_of(index_shock: float, vol_shock: float) -> int:
    return GRID.index(index_shock, vol_shock)


def margin(instruments, positions, params: MarginParams | None = None, **book_kw):
    return initial_margin(make_book(instruments, positions, **book_kw), params or MarginParams())


def put_cents(index: float, floor: float, sigma: float, t: float) -> float:
    """The scalar Black-76 put (an implementation independent of the array one), cents/GPU."""
    return black76_put(index, floor, sigma, t) * 100


# --------------------------------------------------------------------------------------------
# the grid and the parameters


def test_default_grid_is_21_scenarios_index_major():
    assert len(GRID) == 21
    assert GRID.scenarios[0] == (-0.40, -0.25)
    assert GRID.scenarios[1] == (-0.40, 0.0)
    assert GRID.scenarios[20] == (0.20, 0.25)
    s, v = GRID.arrays()
    assert list(zip(s.tolist(), v.tolist(), strict=True)) == list(GRID.scenarios)
    assert MarginParams().grid == GRID


@pytest.mark.parametrize("bad", [[-1.0], [-1.5], [], [float("nan")], [float("inf")], [True]])
def test_shocks_must_be_finite_and_above_minus_one(bad):
    with pytest.raises(ValueError):
        ScenarioGrid(index_shocks=tuple(bad))
    with pytest.raises(ValidationError):
        MarginParams(index_shocks=bad)
    with pytest.raises(ValidationError):
        MarginParams(vol_shocks=bad)


def test_params_are_strict():
    with pytest.raises(ValidationError):
        MarginParams(unknown=1)
    with pytest.raises(ValidationError):
        MarginParams(maintenance_ppm=750_000.0)
    with pytest.raises(ValidationError):
        MarginParams(maintenance_ppm=1_000_001)
    with pytest.raises(ValidationError):
        MarginParams(min_im=-1)
    with pytest.raises(ValidationError):  # two tiers on one threshold
        MarginParams(credit_tiers=[(100_000, 1), (100_000, 2)])
    with pytest.raises(ValidationError):  # less capital must not cost less
        MarginParams(credit_tiers=[(100_000, 1_000_000), (50_000, 500_000)])
    with pytest.raises(ValidationError):
        MarginParams(credit_tiers=[(0, 1)])


def test_credit_tiers_are_sorted_descending_and_accept_lists():
    params = MarginParams(credit_tiers=[[50_000, 1_000_000], [100_000, 500_000]])
    assert params.credit_tiers == [(100_000, 500_000), (50_000, 1_000_000)]
    assert MarginParams.model_validate_json(params.model_dump_json()) == params


# --------------------------------------------------------------------------------------------
# the book


def test_book_validates_and_copies():
    positions = np.array([[10]])
    book = make_book([PERP_2000], positions)
    positions[0, 0] = 99
    assert book.positions[0, 0] == 10  # a copy
    with pytest.raises(ValueError):
        book.positions[0, 0] = 1  # read-only
    for bad in (np.array([[1.0]]), np.array([[True]]), np.array([1])):
        with pytest.raises(ValueError, match="integer"):
            Book(**{**book.__dict__, "positions": bad})
    with pytest.raises(ValueError, match="positions"):
        make_book([PERP_2000], [[MAX_LOTS + 1]])
    with pytest.raises(ValueError, match="tick_value"):
        make_book([{**PERP_2000, "tick": 0}], [[1]])
    with pytest.raises(ValueError, match="index"):
        make_book([{**RVS_8000, "index": 0.0}], [[1]])
    with pytest.raises(ValueError, match="sigma"):
        make_book([{**RVS_8000, "sigma": float("nan")}], [[1]])
    with pytest.raises(ValueError, match="gpus"):
        make_book([{**RVS_8000, "gpus": 0}], [[1]])
    with pytest.raises(ValueError, match="equity"):
        make_book([PERP_2000], [[1]], equity=[1, 2])
    with pytest.raises(ValueError, match="open_interest"):
        make_book([PERP_2000], [[1]], open_interest=[1, 2])
    with pytest.raises(ValueError, match="kind"):
        Book(**{**book.__dict__, "kind": np.array([2])})


def test_ignored_fields_may_hold_anything_numeric():
    perp = {**PERP_2000, "index": float("nan"), "sigma": -1.0}
    rvs = {**RVS_8000, "mark": -5, "tick": 0}
    result = margin([perp, rvs], [[1, 1]])
    assert result.im[0] > 0


# --------------------------------------------------------------------------------------------
# hand-worked perpetuals


def test_long_perp_worst_case_is_the_index_falling_40_percent():
    # 10 lots x 2,000 ticks x 10 cents x 40 % = 80,000 cents
    result = margin([PERP_2000], [[10]])
    assert result.im.tolist() == [80_000]
    assert result.mm.tolist() == [60_000]
    assert result.scenario_loss.tolist() == [80_000]
    assert result.concentration_addon.tolist() == [0] and result.credit_addon.tolist() == [0]
    assert result.worst_scenario.tolist() == [k_of(-0.40, -0.25)]  # first of the three ties
    assert result.im.dtype == np.int64 and result.mm.dtype == np.int64


def test_short_perp_worst_case_is_the_index_rising_20_percent():
    # 10 lots x 2,000 x 10 x 20 % = 40,000
    result = margin([PERP_2000], [[-10]])
    assert result.im.tolist() == [40_000]
    assert result.mm.tolist() == [30_000]
    assert result.worst_scenario.tolist() == [k_of(0.20, -0.25)]


def test_maintenance_rounds_up():
    # 1 lot x 2,001 ticks x 1 cent x 40 % = 800.4 -> IM 801; MM = ceil(600.75) = 601
    result = margin([{"kind": "perp", "mark": 2_001, "tick": 1}], [[1]])
    assert result.im.tolist() == [801]
    assert result.mm.tolist() == [601]
    params = MarginParams(maintenance_ppm=333_333)  # 801 x 0.333333 = 266.999733 -> 267
    assert margin([{"kind": "perp", "mark": 2_001, "tick": 1}], [[1]], params).mm.tolist() == [267]


def test_float_noise_does_not_add_a_cent():
    # 10 lots x 3 ticks x 1 cent x 10 % = 3 cents exactly; in floats 3 x -0.1 x 10 comes out
    # as 3.0000000000000004, whose plain ceil would charge 4
    params = MarginParams(index_shocks=[-0.1], vol_shocks=[0.0])
    book = make_book([{"kind": "perp", "mark": 3, "tick": 1}], [[10]])
    loss = -(book.positions.astype(float) @ scenario_pnl(book, params.grid))[0, 0]
    assert loss > 3.0 and math.ceil(loss) == 4  # the noise is really there
    assert initial_margin(book, params).im.tolist() == [3]


def test_no_positions_means_min_im():
    book = make_book([PERP_2000, RVS_8000], [[0, 0], [10, 0]], equity=[0, RICH])
    assert initial_margin(book, MarginParams()).im.tolist() == [0, 80_000]
    result = initial_margin(book, MarginParams(min_im=500))
    assert result.im.tolist() == [500, 80_000]
    assert result.mm.tolist() == [375, 60_000]
    assert result.scenario_loss.tolist() == [0, 80_000]
    assert result.worst_scenario.tolist() == [0, 0]


def test_empty_books():
    no_accounts = initial_margin(make_book([PERP_2000], np.zeros((0, 1))), MarginParams())
    assert no_accounts.im.shape == (0,) and no_accounts.im.dtype == np.int64
    no_instruments = initial_margin(make_book([], np.zeros((2, 0))), MarginParams(min_im=7))
    assert no_instruments.im.tolist() == [7, 7]


# --------------------------------------------------------------------------------------------
# hand-worked swaps (RVS): index $10,000, floor $8,000, sigma 35 %, one year, 1 GPU a contract


def test_rvs_scenario_pnl_matches_the_scalar_put():
    pnl = scenario_pnl(make_book([RVS_8000], [[1]]), GRID)
    base = put_cents(10_000.0, 8_000.0, 0.35, 1.0)  # 49,236.73 cents
    for k, (s, v) in enumerate(GRID.scenarios):
        want = put_cents(10_000.0 * (1 + s), 8_000.0, 0.35 * (1 + v), 1.0) - base
        assert pnl[0, k] == pytest.approx(want, rel=1e-12, abs=1e-9)
    assert pnl[0, k_of(0.0, 0.0)] == 0.0  # exactly


def test_long_protection_worst_case_is_the_index_rising():
    # the buyer's put loses value when the index rises and the volatility falls:
    # 10 x (P(10,000, 35 %) - P(12,000, 26.25 %)) x 100 = 10 x (492.3673 - 67.6059) x 100
    result = margin([RVS_8000], [[10]])
    want = 10 * (
        put_cents(10_000.0, 8_000.0, 0.35, 1.0) - put_cents(12_000.0, 8_000.0, 0.2625, 1.0)
    )
    assert want == pytest.approx(424_761.39, abs=0.01)
    assert result.worst_scenario.tolist() == [k_of(0.20, -0.25)]
    assert result.im.tolist() == [math.ceil(want)] == [424_762]
    assert result.mm.tolist() == [318_572]  # ceil(424,762 x 0.75) = ceil(318,571.5)


def test_short_protection_worst_case_is_the_index_falling_with_vol_up():
    # the guarantor: 10 x (P(6,000, 43.75 %) - P(10,000, 35 %)) x 100
    result = margin([RVS_8000], [[-10]])
    want = 10 * (put_cents(6_000.0, 8_000.0, 0.4375, 1.0) - put_cents(10_000.0, 8_000.0, 0.35, 1.0))
    assert want == pytest.approx(1_966_584.24, abs=0.01)
    assert result.worst_scenario.tolist() == [k_of(-0.40, 0.25)]
    assert result.im.tolist() == [math.ceil(want)] == [1_966_585]


def test_expired_swap_is_worth_its_intrinsic_value():
    expired = {**RVS_8000, "t": 0.0}  # index 10,000 above the floor: worth 0 now
    pnl = scenario_pnl(make_book([expired], [[1]]), GRID)
    # at -40 % the index is 6,000: intrinsic 2,000 dollars = 200,000 cents per GPU
    assert pnl[0, k_of(-0.40, 0.0)] == pytest.approx(200_000.0)
    assert pnl[0, k_of(-0.10, 0.25)] == 0.0  # still above the floor; vol is irrelevant


# --------------------------------------------------------------------------------------------
# netting


def alone_and_together(instruments, legs):
    """IM of each leg alone and of all legs together (add-ons off)."""
    alone = [margin(instruments, [leg], NO_ADDONS).im[0] for leg in legs]
    together = margin(instruments, [np.sum(legs, axis=0)], NO_ADDONS).im[0]
    return alone, together


def test_protected_long_nets():
    # long 100 perps (falls lose) + long 10 protection (falls gain): the put caps the
    # perp's downside. Alone: perp 800,000 (at -40 %), protection 424,762 (at +20 %, vol
    # down). Together the worst is the premium's vega loss at an unchanged index: 235,535.
    (perp, rvs), both = alone_and_together([RVS_8000, PERP_2000], [[0, 100], [10, 0]])
    assert (perp, rvs) == (800_000, 424_762)
    assert both == 235_535
    assert both < min(perp, rvs)


def test_delta_hedged_guarantor_nets():
    # short 10 protection (falls lose) + short 200 perps (falls gain). Alone: 1,966,585
    # (at -40 %, vol up) and 800,000 (at +20 %); together 711,402 (at +20 %, vol up).
    instruments = [RVS_8000, PERP_2000]
    (rvs, perp), both = alone_and_together(instruments, [[-10, 0], [0, -200]])
    assert (rvs, perp) == (1_966_585, 800_000)
    assert both == 711_402
    assert both < min(rvs, perp)
    result = margin(instruments, [[-10, -200]], NO_ADDONS)
    assert result.worst_scenario.tolist() == [k_of(0.20, 0.25)]


def test_long_protection_and_short_perps_do_not_net_on_the_exchange():
    # Both legs gain when the index falls and lose when it rises: the same direction, so their
    # worst cases coincide (+20 %, vol down) and the margins add. (A GPU owner's offset is the
    # GPUs themselves, which the exchange does not hold.)
    (rvs, perp), both = alone_and_together([RVS_8000, PERP_2000], [[10, 0], [0, -100]])
    assert (rvs, perp) == (424_762, 400_000)
    assert both == 824_762 == rvs + perp


def test_different_underlyings_do_not_net():
    # Each GPU family is shocked on its own and the families' worst losses add: a long of
    # one family loses 80,000 at -40 %, a short of another 10 x 2,000 x 0.2 x 10 = 40,000 at
    # +20 %, so a long/short pair across families needs both (SPAN, no inter-commodity credit)
    a100 = {**PERP_2000, "u": 1}
    assert margin([PERP_2000, a100], [[10, -10]]).im.tolist() == [120_000]
    # the same pair within one family nets to nothing
    assert margin([PERP_2000, dict(PERP_2000)], [[10, -10]]).im.tolist() == [0]


# --------------------------------------------------------------------------------------------
# concentration


def test_concentration_triggers_only_strictly_above_the_threshold():
    # 10 lots: 20 % of an open interest of 50 is not above the threshold, of 49 it is
    at = margin([PERP_2000], [[10]], open_interest=[50])
    assert at.im.tolist() == [80_000] and at.concentration_addon.tolist() == [0]
    above = margin([PERP_2000], [[10]], open_interest=[49])
    # + 25 % of the position's own worst-scenario loss (80,000) = 20,000
    assert above.concentration_addon.tolist() == [20_000]
    assert above.im.tolist() == [100_000]
    assert above.mm.tolist() == [75_000]
    assert above.scenario_loss.tolist() == [80_000]


def test_concentration_uses_each_legs_own_loss_floored_at_zero():
    instruments = [PERP_2000, dict(PERP_2000)]  # one family, so the legs net
    # long 10 of A, short 5 of B; worst scenario -40 %: A loses 80,000, B gains 40,000
    # (net 40,000). B concentrated: its leg gains there, so no add-on.
    result = margin(instruments, [[10, -5]], open_interest=[1_000, 10])
    assert result.scenario_loss.tolist() == [40_000]
    assert result.concentration_addon.tolist() == [0]
    assert result.im.tolist() == [40_000]
    # A concentrated: 25 % of A's own loss (80,000, not the net) = 20,000
    result = margin(instruments, [[10, -5]], open_interest=[20, 1_000])
    assert result.concentration_addon.tolist() == [20_000]
    assert result.im.tolist() == [60_000]


def test_concentration_threshold_zero_and_addon_rate():
    params = MarginParams(concentration_threshold_ppm=0, concentration_addon_ppm=1_000_000)
    result = margin([PERP_2000], [[10]], params, open_interest=[10**6])
    assert result.im.tolist() == [160_000]  # any position is concentrated; +100 %


# --------------------------------------------------------------------------------------------
# credit (the capital-ratio trigger)


@pytest.mark.parametrize(
    ("equity", "credit", "im"),
    [
        (RICH, 0, 80_000),
        (20_000, 0, 80_000),  # ratio 20,000 / 200,000 = 10 %: not below the 10 % tier
        (19_999, 40_000, 120_000),  # below 10 %: +50 % of 80,000
        (10_000, 40_000, 120_000),  # exactly 5 %: still the first tier only
        (9_999, 80_000, 160_000),  # below 5 %: +100 %
        (0, 80_000, 160_000),
        (-5_000, 80_000, 160_000),  # negative equity: the most severe tier
    ],
)
def test_credit_addon_steps_at_each_tier(equity, credit, im):
    # long 10 perps: gross notional 10 x 2,000 x 10 = 200,000 cents; pre-credit IM 80,000
    book = make_book([PERP_2000], [[10]], equity=[equity])
    assert gross_notional(book).tolist() == [200_000]
    result = initial_margin(book, MarginParams())
    assert result.credit_addon.tolist() == [credit]
    assert result.im.tolist() == [im]
    assert result.mm.tolist() == [im * 3 // 4]


def test_credit_addon_applies_to_the_concentrated_margin():
    # 80,000 + 20,000 concentration = 100,000 pre-credit; below 5 % capital: +100 %
    result = margin([PERP_2000], [[10]], equity=[0], open_interest=[10])
    assert result.concentration_addon.tolist() == [20_000]
    assert result.credit_addon.tolist() == [100_000]
    assert result.im.tolist() == [200_000]


def test_thin_guarantor_pays_the_credit_addon_on_swap_notional():
    # short 10 contracts of an $8,000 floor: gross notional 10 x 8,000 x 100 = 8,000,000
    # cents (the most it can owe), whatever the put is worth today
    book = make_book([RVS_8000], [[-10]], equity=[799_999])  # 9.99999 % capital
    assert gross_notional(book).tolist() == [8_000_000]
    result = initial_margin(book, MarginParams())
    assert result.scenario_loss.tolist() == [1_966_585]
    assert result.credit_addon.tolist() == [983_293]  # 50 % of 1,966,584.24 -> 983,292.12
    assert result.im.tolist() == [2_949_877]  # ceil(1,966,584.24 x 1.5) = ceil(2,949,876.36)


def test_exact_capital_ratio_comparison_for_huge_accounts():
    # 2**58 +- 1 cents of equity against a 10 x 2**58 gross notional: 3e-18 off 10 %, a
    # difference float64 cannot see; the exact comparison can
    perp = {"kind": "perp", "mark": 1, "tick": 2**40}
    book = make_book([perp], [[10 * 2**18]])
    assert gross_notional(book).tolist() == [10 * 2**58]
    for equity, addon in ((2**58 + 1, 0), (2**58, 0), (2**58 - 1, 1)):
        book = make_book([perp], [[10 * 2**18]], equity=[equity])
        params = MarginParams(credit_tiers=[(100_000, 1)], index_shocks=[-1e-9])
        assert (initial_margin(book, params).credit_addon[0] > 0) == bool(addon)


# --------------------------------------------------------------------------------------------
# exactness and properties

SHOCK_LISTS = st.lists(
    st.floats(min_value=-0.9, max_value=2.0, allow_nan=False), min_size=1, max_size=5
)


@st.composite
def instruments(draw, n=None):
    n = n or draw(st.integers(1, 5))
    out = []
    for _ in range(n):
        if draw(st.booleans()):
            out.append(
                {
                    "kind": "perp",
                    "mark": draw(st.integers(0, 10**6)),
                    "tick": draw(st.integers(1, 1_000)),
                    "u": draw(st.integers(0, 2)),
                    "oi": draw(st.integers(0, 1_000)),
                }
            )
        else:
            index = draw(st.floats(100.0, 50_000.0))
            out.append(
                {
                    "kind": "rvs",
                    "index": index,
                    "floor": round(index * draw(st.floats(0.0, 1.5)), 2),
                    "sigma": draw(st.floats(0.0, 1.5)),
                    "t": draw(st.floats(-0.5, 5.0)),
                    "gpus": draw(st.integers(1, 8)),
                    "u": draw(st.integers(0, 2)),
                    "oi": draw(st.integers(0, 1_000)),
                }
            )
    return out


@st.composite
def books(draw, max_lots=200):
    insts = draw(instruments())
    m = draw(st.integers(1, 4))
    positions = draw(
        st.lists(
            st.lists(st.integers(-max_lots, max_lots), min_size=len(insts), max_size=len(insts)),
            min_size=m,
            max_size=m,
        )
    )
    equity = draw(st.lists(st.integers(-(10**9), 10**10), min_size=m, max_size=m))
    return make_book(insts, positions, equity=equity)


@st.composite
def params(draw):
    return MarginParams(
        index_shocks=draw(SHOCK_LISTS),
        vol_shocks=draw(SHOCK_LISTS),
        concentration_threshold_ppm=draw(st.integers(0, 1_000_000)),
        concentration_addon_ppm=draw(st.integers(0, 2_000_000)),
        min_im=draw(st.integers(0, 1_000)),
    )


@settings(max_examples=300, deadline=None)
@given(books(), params())
def test_margin_is_a_non_negative_integer_and_mm_follows(book, p):
    result = initial_margin(book, p)
    for array in (result.im, result.mm, result.scenario_loss, result.credit_addon):
        assert array.dtype == np.int64 and np.all(array >= 0)
    assert np.all(result.im >= p.min_im)
    assert np.all(result.mm <= result.im)
    for im, mm in zip(result.im.tolist(), result.mm.tolist(), strict=True):
        assert mm == -(-im * p.maintenance_ppm // 1_000_000)
    parts = result.scenario_loss + result.concentration_addon + result.credit_addon
    binding = result.im > p.min_im
    assert np.all(result.im[binding] <= parts[binding] + 1)
    assert np.all(result.im[binding] >= parts[binding] - 2)
    assert np.all((result.worst_scenario >= 0) & (result.worst_scenario < len(p.grid)))


@settings(max_examples=200, deadline=None)
@given(books(), SHOCK_LISTS, SHOCK_LISTS)
def test_portfolio_margin_is_at_most_the_sum_of_its_legs(book, index_shocks, vol_shocks):
    # max_k sum_j L_jk <= sum_j max_k L_jk, and ceil(a + b) <= ceil(a) + ceil(b)
    p = MarginParams(
        index_shocks=index_shocks, vol_shocks=vol_shocks, concentration_addon_ppm=0, credit_tiers=[]
    )
    whole = initial_margin(book, p).im
    legs = np.zeros_like(whole)
    for j in range(book.n_instruments):
        only = np.zeros_like(book.positions)
        only[:, j] = book.positions[:, j]
        legs += initial_margin(Book(**{**book.__dict__, "positions": only}), p).im
    assert np.all(whole <= legs)


@settings(max_examples=200, deadline=None)
@given(books(), params())
def test_doubling_positions_doubles_the_scenario_loss(book, p):
    once = initial_margin(book, p)
    twice = initial_margin(Book(**{**book.__dict__, "positions": 2 * book.positions}), p)
    # x 2 is exact in floats: the same worst scenario, the loss doubled up to the rounding
    assert np.array_equal(once.worst_scenario, twice.worst_scenario)
    assert np.all(np.abs(twice.scenario_loss - 2 * once.scenario_loss) <= 1)


@settings(max_examples=100, deadline=None)
@given(books(), params())
def test_results_are_deterministic(book, p):
    first, second = initial_margin(book, p), initial_margin(book, p)
    for name in first.__dataclass_fields__:
        assert np.array_equal(getattr(first, name), getattr(second, name))


@settings(max_examples=100, deadline=None)
@given(books(max_lots=10**7), SHOCK_LISTS, SHOCK_LISTS)
def test_float_margin_is_exact_to_a_cent(book, index_shocks, vol_shocks):
    """Against exact rational arithmetic on the same per-lot P&Ls (add-ons off): the float
    total is within the documented bound, and the margin is the exact ceiling, or one minor
    unit below it only within ``tau`` of a whole number."""
    p = MarginParams(
        index_shocks=index_shocks, vol_shocks=vol_shocks, concentration_addon_ppm=0, credit_tiers=[]
    )
    pnl = scenario_pnl(book, p.grid)
    result = initial_margin(book, p)
    exact_pnl = [[Fraction(x) for x in row] for row in pnl.tolist()]
    families = book.underlying.tolist()
    for a, q in enumerate(book.positions.tolist()):
        worst = Fraction(0)
        for family in sorted(set(families)):  # each family its own worst case, then summed
            legs = [j for j, u in enumerate(families) if u == family]
            losses = [-sum(q[j] * exact_pnl[j][k] for j in legs) for k in range(len(p.grid))]
            worst += max(Fraction(0), max(losses))
        size = sum(abs(qj) * max(abs(x) for x in pnl[j]) for j, qj in enumerate(q))
        held = sum(1 for qj in q if qj)
        bound = (held + 10) * 2.0**-53 * size  # the documented float error
        tau = min(SNAP_REL * (size + float(worst)), SNAP_MAX)
        im = int(result.im[a])
        assert abs(float(worst) - im) <= 1 + bound + tau
        assert (
            math.ceil(worst - Fraction(bound + 2 * tau)) <= im <= math.ceil(worst + Fraction(bound))
        )
        if bound <= tau:  # the snap covers the noise: never above the exact ceiling
            assert im <= math.ceil(worst)
        if held <= 4 and size < 6e14:
            assert bound < 1


def test_large_seeded_portfolios_are_exact_to_a_cent():
    """500 seeded accounts of 1-4 of 8 instruments with gross scenario P&Ls from 1e9 to about
    5e14 minor units: the float worst loss is within the documented error bound of the exact
    rational one (given the same per-lot P&Ls), and that bound is under a cent."""
    rng = np.random.default_rng(11)
    insts = [
        {"kind": "perp", "mark": int(m), "tick": int(t)}
        for m, t in zip(rng.integers(1_000, 10**6, 4), rng.integers(1, 1_000, 4), strict=True)
    ]
    insts += [{"kind": "rvs", "index": float(x), "floor": float(round(x * f)), "sigma": 0.4,
               "t": 2.0, "gpus": 8} for x, f in
              zip(rng.uniform(5e3, 4e4, 4), rng.uniform(0.5, 1.2, 4), strict=True)]  # fmt: skip
    m = 500
    positions = np.zeros((m, len(insts)), dtype=np.int64)
    for a in range(m):
        held = rng.choice(len(insts), rng.integers(1, 5), replace=False)
        positions[a, held] = rng.integers(-999, 1_000, len(held)) * 10 ** rng.integers(0, 6)
    p = NO_ADDONS
    pnl = scenario_pnl(make_book(insts, positions), p.grid)
    sizes = np.abs(positions).astype(float) @ np.abs(pnl).max(axis=1)
    positions //= np.ceil(sizes / 5e14).astype(np.int64)[:, None]  # keep G_a under 5e14
    book = make_book(insts, positions)
    result = initial_margin(book, p)
    loss = -(book.positions.astype(float) @ pnl)
    exact_pnl = [[Fraction(x) for x in row] for row in pnl.tolist()]
    sizes = np.abs(book.positions).astype(float) @ np.abs(pnl).max(axis=1)
    assert sizes.min() < 1e10 and sizes.max() > 1e14
    for a, q in enumerate(book.positions.tolist()):
        held = [(j, qj) for j, qj in enumerate(q) if qj]
        exact = [-sum(qj * exact_pnl[j][k] for j, qj in held) for k in range(len(p.grid))]
        bound = (len(held) + 10) * 2.0**-53 * sizes[a]
        assert bound < 1
        assert all(abs(loss[a, k] - float(e)) <= bound for k, e in enumerate(exact))
        worst = max(Fraction(0), max(exact))
        assert math.ceil(worst) - 1 <= result.im[a] <= math.ceil(worst) + 1
