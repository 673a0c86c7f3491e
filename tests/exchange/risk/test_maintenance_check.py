"""The per-mark maintenance check, made cheap without changing a decision (issue #20): the
bound that spares the grid charges the add-ons the grid charges (the account's rating, the
legs it finds concentrated), what one mark's check reads once it reads afresh at the next,
and the engine's books skip the checked constructor's copies but not its arithmetic.
"""

from datetime import date

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.kernel.engine import DAY_NS
from exchange.products.perp import MarginTier
from exchange.risk import default
from exchange.risk.default import _maintenance_at_most, _put_at_worst, check_maintenance
from exchange.risk.margin import PPM, Book, MarginParams
from exchange.risk.margin_cycle import MarginConfig, equity, valued_listings
from tests.exchange.products.test_products import Market
from tests.markets import perp_spec, rvs_spec

SWAP = "H100-RVS"
PERP = "H100-PERP"
#: Two credit tiers: +50 % below 10 % capital, +100 % below 5 % (the defaults).
TIERS = [(100_000, 500_000), (50_000, 1_000_000)]


def _market(params: MarginParams, days: int = 30, resale: int = 24_000) -> Market:
    """A perpetual and a swap maturing a year after ``START``, margin on (no cycle runs unless
    called), ``days`` in, the resale index at ``resale`` ticks, the rental at 2,000."""
    m = Market(perp_spec(), rvs_spec(maturity=date(2025, 6, 1)))
    m.engine.margin = MarginConfig(interval_ns=DAY_NS, index_move_trigger_ppm=0, params=params)
    m.engine.advance(days * DAY_NS)
    m.engine.publish_index("H100-RENTAL", 2_000)
    m.engine.publish_index("H100-RESALE", resale)
    return m


def _hold(m: Market, positions: dict[str, dict[str, int]]) -> None:
    for name, held in positions.items():
        m.engine.accounts[name].positions.update(held)


def _mm(m: Market, name: str) -> int:
    return m.engine.margin.requirements(m.engine, [name])[name][1]


def _slack(lots: int, mm: int) -> int:
    """What the bound may exceed a lone seller's exact MM by: its rounding slack (2 minor
    units and 10**-6 a contract, 1 overall, each x the add-ons) and the grid's rounding."""
    return 8 * abs(lots) + mm // 100_000 + 8


# ------------------------------------------------------------------------- the add-ons
@pytest.mark.parametrize("rating", [0, 1, 2])
def test_the_bound_charges_the_credit_add_on_of_the_account_s_rating_not_the_largest(rating):
    """A lone seller at rating ``rating``: the grid charges that rating's add-on (0, +50 %,
    +100 %), and so does the bound -- within its rounding slack of the exact MM, where the
    largest add-on would put a top-rated seller's bound at twice it."""
    m = _market(MarginParams(credit_tiers=TIERS, concentration_threshold_ppm=PPM))
    _hold(m, {"a": {SWAP: 6}, "b": {SWAP: -10}, "c": {SWAP: 4}})
    m.engine.ratings = {"b": rating}
    mm = _mm(m, "b")
    bound = _maintenance_at_most(m.engine, m.engine.accounts["b"])
    assert mm <= bound <= mm + _slack(10, mm)


def test_the_bound_adds_concentration_only_on_the_legs_the_grid_finds_concentrated():
    """Concentration at 20 % of the open interest (10 lots): the seller of 9 is concentrated
    and charged +25 % on its leg, the seller of 1 is not and pays the scenario loss alone; the
    bound of each is within its slack of its exact MM (before: +25 % on every leg)."""
    m = _market(MarginParams(credit_tiers=[], concentration_addon_ppm=250_000))
    _hold(m, {"a": {SWAP: 10}, "b": {SWAP: -9}, "c": {SWAP: -1}})
    for name, lots in (("b", 9), ("c", 1)):
        mm = _mm(m, name)
        bound = _maintenance_at_most(m.engine, m.engine.accounts[name])
        assert mm <= bound <= mm + _slack(lots, mm), name


@settings(max_examples=60, deadline=None)
@given(
    resale=st.integers(2_000, 60_000),
    swaps=st.lists(st.integers(-500, 500), min_size=3, max_size=3),
    perp_lots=st.integers(-3_000, 3_000),
    days=st.integers(0, 300),
    conc=st.integers(0, 2 * PPM),
    threshold=st.integers(0, PPM),
    addons=st.lists(st.integers(0, 2 * PPM), min_size=2, max_size=2),
    ratings=st.lists(st.integers(0, 2), min_size=3, max_size=3),
)
def test_the_bound_at_the_engine_s_ratings_is_never_below_the_exact_requirement(
    resale, swaps, perp_lots, days, conc, threshold, addons, ratings
):
    """Sound for every account (buyers, sellers, with perpetuals, any add-ons and ratings,
    concentrated or not, any time to maturity), and tight for a lone seller (within its
    rounding slack of the exact MM): the grid is run only where the two can disagree."""
    low, high = sorted(addons)
    params = MarginParams(
        concentration_addon_ppm=conc,
        concentration_threshold_ppm=threshold,
        credit_tiers=[(100_000, low), (50_000, high)],
        min_im=1_000,
    )
    m = _market(params, days=days, resale=resale)
    names = ("a", "b", "c")
    # swap positions net to 0 (the third takes what the first two leave)
    swaps[2] = -(swaps[0] + swaps[1])
    _hold(m, {name: {SWAP: lots} for name, lots in zip(names, swaps, strict=True)})
    _hold(m, {"a": {PERP: perp_lots}, "b": {PERP: -perp_lots}})
    m.engine.ratings = dict(zip(names, ratings, strict=True))
    requirements = m.engine.margin.requirements(m.engine)
    for name, (_im, mm) in requirements.items():
        account = m.engine.accounts[name]
        bound = _maintenance_at_most(m.engine, account)
        assert bound >= mm, name
        lots = account.positions.get(SWAP, 0)
        if lots < 0 and not account.positions.get(PERP, 0):  # a lone seller
            assert bound <= mm + _slack(lots, mm), name


@settings(max_examples=40, deadline=None)
@given(
    lots=st.lists(st.integers(-3_000, 3_000), min_size=2, max_size=2),
    rental=st.integers(1, 100_000),
    min_im=st.integers(0, 10**6),
)
def test_the_bound_of_an_account_without_swaps_is_its_exact_maintenance_margin(
    lots, rental, min_im
):
    """Perpetuals only: the bound (the tiers' MM inlined, every holder at every mark) is the
    exact MM of ``requirements`` -- ``tier_margin``'s tier (the first that holds the size, the
    last beyond them: 100 and 1,000 lots here) and rounding, and the ``min_im`` floor."""
    tiers = [
        MarginTier(
            max_position_lots=100, initial_margin_ppm=100_000, maintenance_margin_ppm=50_000
        ),
        MarginTier(
            max_position_lots=1_000, initial_margin_ppm=200_000, maintenance_margin_ppm=180_000
        ),
    ]
    m = Market(perp_spec(margin_tiers=tiers))
    params = MarginParams(credit_tiers=[], min_im=min_im)
    m.engine.margin = MarginConfig(interval_ns=DAY_NS, index_move_trigger_ppm=0, params=params)
    m.engine.publish_index("H100-RENTAL", rental)
    _hold(m, {"a": {PERP: lots[0]}, "b": {PERP: lots[1]}, "c": {PERP: -sum(lots)}})
    for name, (_im, mm) in m.engine.margin.requirements(m.engine).items():
        assert _maintenance_at_most(m.engine, m.engine.accounts[name]) == mm, name


# ------------------------------------------------------------------------- the check
def test_the_per_mark_check_skips_the_grid_for_a_top_rated_seller_the_largest_add_on_flagged(
    monkeypatch,
):
    """A top-rated seller of protection that also holds a perpetual, with equity 1.3x its
    exact MM: safe, and known safe without the grid (its bound is within slack of the MM; the
    largest credit add-on, +100 %, would have put the bound near 2x and run the grid at every
    mark). It is not liquidated either way."""
    m = _market(MarginParams(credit_tiers=TIERS, concentration_threshold_ppm=PPM))
    _hold(m, {"a": {SWAP: 10, PERP: -5}, "b": {SWAP: -10, PERP: 5}})
    m.engine.accounts["a"].cash = 10**12  # the other holder: safe by any measure
    account = m.engine.accounts["b"]
    mm = _mm(m, "b")
    account.cash += mm * 13 // 10 - equity(m.engine, "b")
    grids = []
    real = MarginConfig.requirements
    monkeypatch.setattr(
        MarginConfig, "requirements", lambda self, *a, **k: grids.append(a) or real(self, *a, **k)
    )
    check_maintenance(m.engine, PERP)
    assert grids == []
    assert account.positions[PERP] == 5


def test_the_per_mark_check_measures_the_holders_after_a_liquidation_afresh(monkeypatch):
    """What a check reads once for all holders (the open interest, the worst puts) is read
    again after a liquidation: here the liquidation (faked) hands the first holder's swap
    lots to the next, whose bound must count them."""
    m = _market(MarginParams(credit_tiers=[], concentration_threshold_ppm=PPM))
    _hold(m, {"a": {SWAP: 10, PERP: 5}, "b": {SWAP: -10, PERP: -5}, "c": {}})
    m.engine.accounts["a"].cash = -(10**9)  # far below MM: liquidated
    m.engine.accounts["b"].cash = 10**12  # far above: measured, not liquidated
    seen = {}

    def liquidate(engine, account, listing, position, reason="closeout"):
        account.positions[PERP] = 0
        engine.accounts["b"].positions[SWAP] -= 90  # b sells 90 more: open interest 100
        engine.accounts["c"].positions[SWAP] = 90

    real = default._MaintenanceBound.at_most

    def at_most(self, account):
        fresh = real(default._MaintenanceBound(m.engine), account)
        seen[account.name] = (real(self, account), fresh)
        return seen[account.name][0]

    monkeypatch.setattr(default, "_through_book", liquidate)
    monkeypatch.setattr(default._MaintenanceBound, "at_most", at_most)
    check_maintenance(m.engine, PERP)
    assert seen["b"][0] == seen["b"][1]  # the check's bound is the fresh one
    assert seen["b"][0] >= _mm(m, "b")


# ------------------------------------------------------------------------- what is read once
def test_the_worst_put_follows_the_index_within_one_instant():
    """Two prints of the resale index at one nanosecond: the seller's worst loss per
    contract, and its bound, follow the second print (nothing is kept by time alone)."""
    m = _market(MarginParams(credit_tiers=[]))
    _hold(m, {"a": {SWAP: 10}, "b": {SWAP: -10}})
    spec, params = m.engine.instruments[SWAP].spec, m.engine.margin.params
    before = (
        _put_at_worst(m.engine, spec, params),
        _maintenance_at_most(m.engine, m.engine.accounts["b"]),
    )
    m.engine.publish_index("H100-RESALE", 19_000)  # the same t
    after = (
        _put_at_worst(m.engine, spec, params),
        _maintenance_at_most(m.engine, m.engine.accounts["b"]),
    )
    assert after[0] > before[0] and after[1] > before[1]
    assert after[1] >= _mm(m, "b")


@pytest.mark.parametrize(
    "change", [{"floor": 22_000}, {"volatility": 0.7}, {"gpus_per_contract": 16}]
)
def test_the_worst_put_follows_a_changed_spec_of_the_same_name(change):
    """The swap's constants are kept by the spec's fields, not by its name or its object: a
    spec of the same name with another floor, volatility or contract size is priced afresh."""
    m = _market(MarginParams(credit_tiers=[]))
    spec, params = m.engine.instruments[SWAP].spec, m.engine.margin.params
    changed = spec.model_copy(update=change)
    assert _put_at_worst(m.engine, spec, params) != _put_at_worst(m.engine, changed, params)
    listing = m.engine.instruments[SWAP]
    listing.spec = changed
    _hold(m, {"a": {SWAP: 10}, "b": {SWAP: -10}})
    m.engine.publish_index("H100-RESALE", 24_000)  # re-mark with the changed spec
    assert _maintenance_at_most(m.engine, m.engine.accounts["b"]) >= _mm(m, "b")


def test_the_perpetual_s_tiers_follow_a_changed_spec_of_the_same_name():
    """The tiers are kept by the spec object: a listing given a spec of the same name with
    other tiers (MM 5 % -> 20 %) is measured by the new ones at once."""
    m = _market(MarginParams(credit_tiers=[]))
    _hold(m, {"a": {PERP: 50}, "b": {PERP: -50}})
    account = m.engine.accounts["a"]
    before = _maintenance_at_most(m.engine, account)
    assert before == _mm(m, "a") > 0
    listing = m.engine.instruments[PERP]
    tier = MarginTier(
        max_position_lots=1_000, initial_margin_ppm=300_000, maintenance_margin_ppm=200_000
    )
    listing.spec = listing.spec.model_copy(update={"margin_tiers": [tier]})
    assert _maintenance_at_most(m.engine, account) == _mm(m, "a") == 4 * before


def test_equity_over_listings_read_once_is_equity_read_afresh():
    """``equity`` given ``valued_listings`` (read once for many accounts) is ``equity`` alone,
    for holders of both kinds, and follows positions that move after the listings were
    read."""
    m = _market(MarginParams(credit_tiers=[]))
    _hold(m, {"a": {SWAP: 10, PERP: 7}, "b": {SWAP: -10, PERP: -7}})
    listings = valued_listings(m.engine)
    for name in ("a", "b", "c"):
        assert equity(m.engine, name, listings) == equity(m.engine, name)
    m.engine.accounts["a"].positions[PERP] = 12
    assert equity(m.engine, "a", listings) == equity(m.engine, "a") != 0


# ------------------------------------------------------------------------- the engine's books
def test_the_engine_s_book_is_the_book_the_checked_constructor_makes_of_it():
    """``MarginConfig._swap_book`` builds with ``Book.built`` (no copies, no checks): its
    arrays pass the checked constructor, which returns them equal, of the same dtypes."""
    m = _market(MarginParams())
    _hold(m, {"a": {SWAP: 10, PERP: 3}, "b": {SWAP: -7}, "c": {SWAP: -3, PERP: -3}})
    m.engine.accounts["a"].basis[SWAP] = 1_500
    config = m.engine.margin
    names, swaps, span_names, perp_im, _ = config._measured(m.engine, None)
    built = config._swap_book(m.engine, swaps, span_names, perp_im)
    fields = {name: getattr(built, name) for name in Book.__dataclass_fields__}
    checked = Book(**fields)
    for name, array in fields.items():
        assert array.dtype == getattr(checked, name).dtype, name
        assert np.array_equal(array, getattr(checked, name)), name
        assert not array.flags.writeable, name


def test_book_built_refuses_a_missing_field_or_another_dtype():
    m = _market(MarginParams())
    _hold(m, {"a": {SWAP: 10}, "b": {SWAP: -10}})
    config = m.engine.margin
    _, swaps, span_names, perp_im, _ = config._measured(m.engine, None)
    book = config._swap_book(m.engine, swaps, span_names, perp_im)
    fields = {name: np.array(getattr(book, name)) for name in Book.__dataclass_fields__}
    with pytest.raises(TypeError, match="fields"):
        Book.built(**{k: v for k, v in fields.items() if k != "equity"})
    with pytest.raises(TypeError, match="sigma"):
        Book.built(**{**fields, "sigma": fields["sigma"].astype(np.float32)})
    assert Book.built(**fields).n_accounts == 2
