"""The daily margin cycle, cheaper without changing a figure (issue #20): one measure of the
engine serves the requirements and the ratings, the grid of a params object is built once,
and the swap put evaluates its two ``erfc`` in one call, element for element the same.
"""

from datetime import date

import numpy as np

from exchange.kernel.engine import DAY_NS
from exchange.products import pricing
from exchange.risk import margin
from exchange.risk.margin import PPM, Book, MarginParams, ScenarioGrid, initial_margin
from exchange.risk.margin_cycle import MarginConfig
from tests.exchange.products.test_products import Market
from tests.markets import perp_spec, rvs_spec

SWAP = "H100-RVS"
PERP = "H100-PERP"
#: Two credit tiers: +50 % below 10 % capital, +100 % below 5 % (the defaults).
TIERS = [(100_000, 500_000), (50_000, 1_000_000)]


def _market() -> Market:
    """A perpetual and a swap, margin on with credit tiers, 30 days in; a swap buyer, two
    sellers (one thinly capitalised, one also long the perpetual) and a perpetual-only
    account."""
    m = Market(perp_spec(), rvs_spec(maturity=date(2025, 6, 1)))
    params = MarginParams(credit_tiers=TIERS, concentration_threshold_ppm=300_000)
    m.engine.margin = MarginConfig(interval_ns=DAY_NS, index_move_trigger_ppm=0, params=params)
    m.engine.advance(30 * DAY_NS)
    m.engine.publish_index("H100-RENTAL", 2_000)
    m.engine.publish_index("H100-RESALE", 24_000)
    m.engine.open_account("d")
    m.engine.credit("d", 10_000_000)
    held = {"a": {SWAP: 12}, "b": {SWAP: -9}, "c": {SWAP: -3, PERP: 5}, "d": {PERP: -4}}
    for name, positions in held.items():
        m.engine.accounts[name].positions.update(positions)
    m.engine.accounts["b"].cash = 1_000  # thin: a low capital ratio, a credit tier
    return m


def test_requirements_and_credit_standing_from_one_measure_equal_each_measuring_itself():
    """What the cycle hands both (one ``measure``) gives the same requirements, at the
    engine's ratings and at others, and the same credit standing as each measuring alone."""
    m = _market()
    config, engine = m.engine.margin, m.engine
    measured = config.measure(engine)
    assert config.requirements(engine, measured=measured) == config.requirements(engine)
    ratings = {"b": 2, "c": 1}
    assert config.requirements(engine, ratings=ratings, measured=measured) == (
        config.requirements(engine, ratings=ratings)
    )
    standing = config.credit_standing(engine, measured=measured)
    assert standing == config.credit_standing(engine)
    assert standing["b"][0] == 2  # the thin seller is measured below both tiers


def test_the_margin_cycle_builds_the_swap_book_once(monkeypatch):
    """A cycle with no liquidation and no rating change builds the swaps' SPAN book once (it
    built it twice: for the requirements, then for the ratings)."""
    m = _market()
    m.engine.ratings = {"b": 2}  # already where its capital ratio puts it: no change
    built = []
    swap_book = MarginConfig._swap_book

    def counted(*args, **kwargs):
        built.append(1)
        return swap_book(*args, **kwargs)

    monkeypatch.setattr(MarginConfig, "_swap_book", staticmethod(counted))
    m.engine.margin_cycle()
    assert len(built) == 1
    assert m.engine.ratings == {"b": 2}


def test_initial_margin_builds_the_grid_of_a_params_object_once(monkeypatch):
    """Two margin runs with one params object build its scenario grid and shock arrays once;
    the shared arrays are read-only, so no caller can change the next run's grid."""
    params = MarginParams(credit_tiers=TIERS)
    made = []
    arrays = ScenarioGrid.arrays

    def counted(self):
        made.append(1)
        return arrays(self)

    monkeypatch.setattr(ScenarioGrid, "arrays", counted)
    book = Book(
        kind=[margin.RVS],
        underlying=[0],
        mark=[0],
        tick_value=[1],
        index=[24_000.0],
        floor=[20_000.0],
        sigma=[0.35],
        t_years=[0.9],
        gpus_per_contract=[8],
        positions=[[-3], [3]],
        open_interest=[3],
        equity=[10**9, 10**9],
        premiums_owed=[[0], [0]],
    )
    first = initial_margin(book, params)
    second = initial_margin(book, params)
    assert len(made) == 1
    assert first.im.tolist() == second.im.tolist() and first.im[0] > 0
    s, v = margin._grid_of(params)._shared_arrays()
    assert not s.flags.writeable and not v.flags.writeable


def test_black76_put_array_evaluates_both_erfc_in_one_call_element_for_element(monkeypatch):
    """One ``_erfc_array`` call per put array (there were two: d1 and d2), and each element's
    value is bit for bit the one it has alone: no element depends on its neighbours."""
    rng = np.random.default_rng(20)
    forward = rng.uniform(1_000.0, 40_000.0, (3, 7))
    strike = rng.uniform(0.0, 40_000.0, (3, 1))
    sigma = rng.uniform(0.0, 1.5, (3, 7))
    t_years = rng.uniform(-0.5, 5.0, (3, 1))
    calls = []
    erfc = pricing._erfc_array

    def counted(x):
        calls.append(x.size)
        return erfc(x)

    monkeypatch.setattr(pricing, "_erfc_array", counted)
    together = pricing.black76_put_array(forward, strike, sigma, t_years)
    assert calls == [2 * 21]
    monkeypatch.setattr(pricing, "_erfc_array", erfc)
    alone = np.array(
        [
            [
                pricing.black76_put_array(forward[i, j], strike[i, 0], sigma[i, j], t_years[i, 0])
                for j in range(7)
            ]
            for i in range(3)
        ]
    )
    assert together.view(np.uint64).tolist() == alone.view(np.uint64).tolist()
    assert (together >= 0.0).all() and together.max() * PPM > 0
