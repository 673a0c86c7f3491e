"""The compiled engine's margin grid (``exchange.kernel._mark.scenario_pnl`` and
``initial_margin``, ``CompiledExchange.initial_margin_twin``) against the numpy reference
(``exchange.risk.margin.scenario_pnl`` / ``initial_margin``): on random books -- perpetuals and
swaps in one to three families, swaps in and out of the money, expired, without volatility or
floor, concentrated legs, credit tiers -- the twin gives the reference's P&L array (every
element's bits; a zero's sign aside, which no figure reads) and the same ``MarginResult``, or
declines (None) where the reference raises or has no tiers to charge.

Units: minor units for money, lots for positions, ticks for perpetual marks, currency units per
GPU for swap index levels and floors.
"""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exchange.kernel import _mark
from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import Exchange
from exchange.risk import margin
from exchange.risk.margin import (
    PERP,
    RVS,
    Book,
    MarginParams,
    capital_ratios_ppm,
    gross_notional,
    indicated_tiers,
    initial_margin,
    scenario_pnl,
)

FIELDS = ("im", "mm", "worst_scenario", "scenario_loss", "concentration_addon", "credit_addon")


def bits(array: np.ndarray) -> bytes:
    """The array's bytes with every zero made +0.0 (numpy's own maximum keeps either sign)."""
    return (array + 0.0).tobytes()


@st.composite
def legs(draw) -> dict:
    """One instrument: a perpetual, or a swap anywhere from deep in to far out of the money
    (its put's erfc in every region of fdlibm's), expired or not, with or without volatility."""
    family = draw(st.integers(0, 2))
    oi = draw(st.integers(0, 400))
    if draw(st.booleans()):
        return {"kind": PERP, "u": family, "oi": oi, "mark": draw(st.integers(0, 10**6)),
                "tick": draw(st.integers(1, 1_000))}  # fmt: skip
    # magnitudes drawn on a log scale: generic floats, not hypothesis's simplest ones
    power = lambda low, high: st.floats(low, high).map(lambda e: 10.0**e)  # noqa: E731
    index = draw(power(-3.0, 6.0))
    return {
        "kind": RVS,
        "u": family,
        "oi": oi,
        "index": index,
        "floor": draw(st.one_of(st.just(0.0), power(-2.0, 1.7).map(lambda r: index * r))),
        "sigma": draw(st.one_of(st.just(0.0), power(-4.0, 0.7))),
        "t": draw(st.one_of(st.just(0.0), st.floats(-1.0, 0.0), power(-12.0, 1.5))),
        "gpus": draw(st.integers(1, 100)),
    }


@st.composite
def cases(draw) -> tuple[Book, MarginParams, np.ndarray | None]:
    """A checked book (``Book``), the rule's parameters and the tiers to charge."""
    insts = draw(st.lists(legs(), min_size=0, max_size=5))
    n, m = len(insts), draw(st.integers(0, 5))
    positions = np.array(
        draw(st.lists(st.lists(st.integers(-300, 300), min_size=n, max_size=n), min_size=m,
                      max_size=m)),
        dtype=np.int64,
    ).reshape(m, n)  # fmt: skip
    field = lambda key, default: np.array([i.get(key, default) for i in insts])  # noqa: E731
    book = Book(
        kind=field("kind", PERP),
        underlying=field("u", 0),
        mark=field("mark", 0),
        tick_value=field("tick", 1),
        index=field("index", 1.0).astype(float),
        floor=field("floor", 0.0).astype(float),
        sigma=field("sigma", 0.0).astype(float),
        t_years=field("t", 0.0).astype(float),
        gpus_per_contract=field("gpus", 1),
        positions=positions,
        open_interest=field("oi", 0),
        equity=np.array(draw(st.lists(st.integers(-(10**9), 10**10), min_size=m, max_size=m))),
    )
    shocks = st.lists(st.floats(-0.99, 3.0), min_size=1, max_size=7)
    addons = sorted(draw(st.lists(st.integers(0, 10**7), max_size=3)))
    thresholds = sorted(draw(st.sets(st.integers(1, 10**6), min_size=len(addons),
                                     max_size=len(addons))), reverse=True)  # fmt: skip
    params = MarginParams(
        index_shocks=draw(st.one_of(shocks, shocks.map(lambda s: [*s, 0.0]))),
        vol_shocks=draw(st.one_of(shocks, shocks.map(lambda s: [0.0, *s]))),
        concentration_threshold_ppm=draw(st.sampled_from([0, 1, 200_000, 10**6])),
        concentration_addon_ppm=draw(st.sampled_from([0, 250_000, 10**7])),
        credit_tiers=list(zip(thresholds, addons, strict=True)),
        min_im=draw(st.sampled_from([0, 1_000, 10**6])),
        maintenance_ppm=draw(st.integers(0, 10**6)),
    )
    tiers = np.array(draw(st.lists(st.integers(0, len(addons)), min_size=m, max_size=m)))
    return book, params, tiers.astype(np.int64)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(cases())
# deep in the money: the formula a rounding below the intrinsic value (the clamp)
@example(
    (
        Book(
            kind=np.array([RVS, RVS]),
            underlying=np.array([0, 1]),
            mark=np.zeros(2, dtype=np.int64),
            tick_value=np.ones(2, dtype=np.int64),
            index=np.array([0.7054363327130675, 40205.05779641038]),
            floor=np.array([683.8265396963637, 153336.67842296572]),
            sigma=np.array([0.44035664282073805, 0.05682352749060063]),
            t_years=np.array([4.168263666705413, 8.233769328313796]),
            gpus_per_contract=np.array([3, 1]),
            positions=np.array([[-5, 7], [2, -1]]),
            open_interest=np.array([7, 7]),
            equity=np.array([10**6, 10**6]),
        ),
        MarginParams(index_shocks=[0.0, -0.5], vol_shocks=[0.0, 0.25]),
        np.array([0, 2]),
    )
)
def test_the_twin_is_the_numpy_grid_to_the_bit(case):
    book, params, tiers = case
    grid = margin._grid_of(params)
    compiled = _mark.scenario_pnl(book, grid)
    assert compiled is not None and compiled.dtype == np.float64
    assert bits(compiled) == bits(scenario_pnl(book, grid))
    reference = initial_margin(book, params, tiers)
    twin = _mark.initial_margin(book, params, tiers)
    assert twin is not None
    for name in FIELDS:
        mine, theirs = getattr(twin, name), getattr(reference, name)
        assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes(), name


def test_the_twin_declines_what_the_reference_refuses_or_has_no_tiers_for():
    book = Book(
        kind=np.array([RVS]),
        underlying=np.array([0]),
        mark=np.zeros(1, dtype=np.int64),
        tick_value=np.ones(1, dtype=np.int64),
        index=np.array([10_000.0]),
        floor=np.array([8_000.0]),
        sigma=np.array([0.35]),
        t_years=np.array([1.0]),
        gpus_per_contract=np.array([1]),
        positions=np.array([[-3]]),
        open_interest=np.array([3]),
        equity=np.array([10**6]),
    )
    params = MarginParams()
    assert _mark.initial_margin(book, params, None) is None  # indicated tiers: the reference's
    assert _mark.initial_margin(book, params, np.array([3])) is None  # no tier 3: it raises
    fields = {name: getattr(book, name).copy() for name in margin._BOOK_FIELDS}
    fields["sigma"] = np.array([np.nan])  # a book no check made: the put refuses it
    assert _mark.scenario_pnl(Book.built(**fields), margin._grid_of(params)) is None
    assert _mark.initial_margin(Book.built(**fields), params, np.array([0])) is None


def test_only_the_compiled_engine_offers_the_twin():
    for name, twin in (
        ("initial_margin_twin", _mark.initial_margin),
        ("credit_standing_twin", _mark.credit_standing),
    ):
        assert not hasattr(Exchange, name)  # the reference runs the numpy
        assert getattr(CompiledExchange, name, None) in (None, twin)  # (None until named)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(cases(), st.data())
def test_the_credit_standing_twin_is_the_reference_s_tiers_and_ratios(case, data):
    book, params, _ = case
    gross = gross_notional(book)
    if book.n_accounts:  # equities at a tier's edge, a minor unit either side of it
        threshold = data.draw(st.sampled_from([t for t, _ in params.credit_tiers] or [1]))
        edge = int(max(gross[0], 1)) * threshold // 10**6
        fields = {name: getattr(book, name).copy() for name in margin._BOOK_FIELDS}
        fields["equity"][0] = edge + data.draw(st.integers(-1, 1))
        book = Book.built(**fields)
    expected = indicated_tiers(book, params, gross).tolist(), capital_ratios_ppm(book, gross)
    assert _mark.credit_standing(book, params) == expected


def test_the_credit_standing_twin_s_tiers_are_strictly_below_the_threshold():
    # one seller of one contract protecting 100.00 a GPU: a gross notional of 10,000 minor
    # units; at the 10 % tier's threshold exactly (equity 1,000) it is not below, 999 is
    fields = dict(
        kind=np.array([RVS]),
        underlying=np.array([0]),
        mark=np.zeros(1, dtype=np.int64),
        tick_value=np.ones(1, dtype=np.int64),
        index=np.array([120.0]),
        floor=np.array([100.0]),
        sigma=np.array([0.35]),
        t_years=np.array([1.0]),
        gpus_per_contract=np.array([1]),
        positions=np.array([[-1], [-1]]),
        open_interest=np.array([2]),
        equity=np.array([1_000, 999]),
    )
    book = Book(**fields)
    params = MarginParams(credit_tiers=[(100_000, 500_000)], rating_names=["A", "B"])
    assert _mark.credit_standing(book, params) == ([0, 1], [100_000, 99_900])
