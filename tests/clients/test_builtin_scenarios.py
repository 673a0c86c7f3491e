"""The built-in scenario files ``h100-depreciation`` and ``generation-shock``: each does what
its description says, checked from the event log alone (``exchange.store.event_store.EventStore``,
``exchange.postmortem.analysis.facts``, ``exchange.store.fold.Fold``), on several seeds where the
claim is
about the calibration rather than one path.

Runtimes on the development machine: a full ``h100-depreciation`` (180 days) takes 10-15 s,
a ``generation-shock`` cut at day 35 about 2 s; the full-length extra seeds of the calm market
run two at a time and are marked ``slow``.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from datetime import date
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.cli import main
from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS
from exchange.postmortem.analysis import facts
from exchange.sessions import session
from exchange.sessions.scenarios import load_scenario
from exchange.sessions.sweep import parse_param
from exchange.store.event_store import EventStore
from exchange.store.fold import Fold

CALM = "h100-depreciation"
SHOCK = "generation-shock"
SHOCK_SEEDS = (7, 1, 2)  # the default seed and two others
SHOCK_DAYS = 35  # the shock is on day 31, the default two days later: the facts all hold by 35


def _run(name: str, folder: str, seed: int, overrides: dict | None = None) -> str:
    """Run built-in ``name`` into a fresh log in ``folder``; returns the log's path. (Top
    level, so a process pool can run it.)"""
    db = Path(folder) / f"{name}-{seed}.db"
    session.run(name, db, seed=seed, overrides=overrides)
    return str(db)


def _shock_t(config: dict, index: str = "H100-RENTAL") -> int:
    """When the scenario's extra jump on ``index`` happens, ns since the start (from the
    stored configuration)."""
    start = date.fromisoformat(config["start"])
    (entry,) = [i for i in config["indices"] if i.get("calibration") == index]
    ((day, _size),) = entry["extra_jumps"]
    return (date.fromisoformat(day) - start).days * DAY_NS


# ------------------------------------------------------------------ h100-depreciation
@pytest.fixture(scope="module")
def calm(tmp_path_factory) -> str:
    """The calm market, full length, default seed."""
    return _run(CALM, str(tmp_path_factory.mktemp("calm")), 7)


def test_the_calm_market_runs_to_its_end_with_no_call_and_no_default(calm):
    pm = facts(calm)
    assert pm.t_end == pm.config["days"] * DAY_NS
    assert pm.calls == [] and pm.defaults == []
    assert pm.funds.total == 0
    with EventStore.open(calm) as store:
        kinds = store.kind_counts()
    assert ev.BOT_FAILED not in kinds and ev.CLOSE_OUT not in kinds


def test_in_the_calm_market_funding_is_paid_both_ways_on_each_perpetual(calm):
    rates: dict[str, set[int]] = {}
    payments: dict[str, set[tuple[int, int]]] = {}  # instrument -> {(sign of qty, sign paid)}
    with EventStore.open(calm) as store:
        for e in store.events(kind=ev.FUNDING_RATE):
            rate = Fraction(e.data["rate"])
            rates.setdefault(e.instrument, set()).add((rate > 0) - (rate < 0))
        for e in store.events(kind=ev.FUNDING_PAID):
            payments.setdefault(e.instrument, set()).add(
                ((e.qty > 0) - (e.qty < 0), (e.amount > 0) - (e.amount < 0))
            )
    assert set(rates) == {"H100-PERP", "H200-PERP"}
    for instrument in rates:
        assert {1, -1} <= rates[instrument], instrument
        # longs paid on some intervals and were paid on others; shorts likewise
        assert {(1, -1), (1, 1), (-1, -1), (-1, 1)} <= payments[instrument], instrument


def test_in_the_calm_market_the_makers_trade_with_the_takers(calm):
    pairs: dict[tuple[str, str], int] = {}
    with EventStore.open(calm) as store:
        for e in store.events(kind=ev.FILL):
            pairs[(e.account, e.counterparty)] = pairs.get((e.account, e.counterparty), 0) + e.qty
    # the noise takers take the makers' quotes, lots of them, on both perpetuals
    assert pairs.get(("taker-h100", "maker-h100"), 0) > 1_000
    assert pairs.get(("taker-h200", "maker-h200"), 0) > 1_000
    assert pairs.get(("momentum", "maker-h100"), 0) > 0


def test_the_calm_market_log_verifies(calm):
    verdict = session.verify(calm)
    assert verdict.ok, verdict.problems


@pytest.mark.slow
def test_the_calm_market_has_no_default_on_two_other_seeds(tmp_path):
    with ProcessPoolExecutor(max_workers=2) as pool:
        logs = list(pool.map(_run, [CALM, CALM], [str(tmp_path)] * 2, [1, 2]))
    for db in logs:
        pm = facts(db)
        assert pm.calls == [] and pm.defaults == [], db


# ------------------------------------------------------------------ generation-shock
@pytest.fixture(scope="module")
def shock(tmp_path_factory) -> dict[int, str]:
    """The shock on three seeds, cut at day 35 (a couple of seconds each)."""
    folder = str(tmp_path_factory.mktemp("shock"))
    return {seed: _run(SHOCK, folder, seed, {"days": SHOCK_DAYS}) for seed in SHOCK_SEEDS}


@pytest.mark.parametrize("seed", SHOCK_SEEDS)
def test_the_shock_drops_the_h100_index_by_half_and_the_h200_by_a_third(shock, seed):
    pm = facts(shock[seed])
    for index, least in (("H100-RENTAL", Fraction(50, 100)), ("H200-RENTAL", Fraction(35, 100))):
        t_shock = _shock_t(pm.config, index)
        assert 0 < t_shock < pm.t_end
        with EventStore.open(shock[seed]) as store:
            prints = [
                (e.t, e.price) for e in store.events(kind=ev.INDEX_PUBLISHED, instrument=index)
            ]
        before = [p for t, p in prints if t < t_shock][-1]
        after = next(p for t, p in prints if t >= t_shock)
        assert Fraction(before - after, before) >= least, (index, before, after)


@pytest.mark.parametrize("seed", SHOCK_SEEDS)
def test_after_the_shock_a_long_perp_account_is_liquidated_and_defaults(shock, seed):
    pm = facts(shock[seed])
    t_shock = _shock_t(pm.config)
    assert pm.defaults, "nobody defaulted"
    longs = [d for d in pm.defaults if d.positions.get("H100-PERP", 0) > 0]
    assert longs and all(d.t >= t_shock for d in pm.defaults)
    defaulter = longs[0].account
    with EventStore.open(shock[seed]) as store:
        liquidations = [
            e.t
            for e in store.events(kind=ev.CLOSE_OUT, account=defaulter)
            if e.data["reason"] == "liquidation"
        ]
        calls = [e.t for e in store.events(kind=ev.COLLATERAL_CALL, account=defaulter)]
    # liquidated through the book at the shock's margin cycle, not before; called, then out
    assert liquidations and min(liquidations) == t_shock
    assert calls and min(calls) >= t_shock
    (call,) = [c for c in pm.calls if c.account == defaulter]
    assert call.outcome == "defaulted"


@pytest.mark.parametrize("seed", SHOCK_SEEDS)
def test_the_book_and_the_auction_cannot_take_the_close_out_so_it_is_deleveraged(shock, seed):
    pm = facts(shock[seed])
    (closeout,) = pm.closeouts
    lots = closeout.lots_by_step()
    bidders = pm.config["margin"]["auction_bidders"]
    # the auction bidders took all they are committed to, and more was left
    assert lots["auction"] == sum(b["max_lots"] for b in bidders)
    assert lots["adl"] > lots["auction"] + lots.get("book", 0)
    assert pm.funds.adl_lots == lots["adl"]
    receivers = set()
    fold = Fold()
    with EventStore.open(shock[seed]) as store:
        for row in store.rows():
            if row[2] == ev.DELEVERAGED:
                instrument, account, qty = row[3], row[4], row[8]
                # the defaulter's long goes to holders of shorts, no more than each holds
                held = fold.positions[account].get(instrument, 0)
                assert held < 0 and 0 < qty <= -held
                receivers.add(account)
            fold.apply(*row)
        deleveraged = list(store.events(kind=ev.DELEVERAGED))
    assert deleveraged and all(e.counterparty == closeout.defaulter for e in deleveraged)
    assert "owner" in receivers  # the GPU owner's hedge is the most profitable short


@pytest.mark.parametrize("seed", SHOCK_SEEDS)
def test_the_shock_conserves_cash_and_positions_after_every_event(shock, seed):
    """Cash plus the exchange's pools equals the money brought in less the money taken out,
    and every instrument's positions net to zero, after every event; the fold of the log
    reaches the recorded final state."""
    fold = Fold()
    with EventStore.open(shock[seed]) as store:
        for row in store.rows():
            fold.apply(*row)
            total = sum(fold.cash.values()) + sum(fold.pools.values())
            assert total == fold.deposited - fold.withdrawn, f"seq {row[0]}"
            for instrument in fold.books:
                assert sum(p.get(instrument, 0) for p in fold.positions.values()) == 0, row[0]
        assert fold.state_hash() == store.session["final_state_hash"]
    assert set(fold.books) == {"H100-PERP", "H200-PERP"}


# ------------------------------------------------------------------ the command line
def test_gpuex_scenarios_lists_both_files():
    result = CliRunner().invoke(main, ["scenarios"])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert CALM in names and SHOCK in names


@pytest.mark.parametrize("name", [SHOCK, CALM])
def test_gpuex_scenario_show_prints_a_file_that_loads_back_to_the_same_model(name, tmp_path):
    result = CliRunner().invoke(main, ["scenario", "show", name])
    assert result.exit_code == 0, result.output
    path = tmp_path / f"{name}.toml"
    path.write_text(result.output, encoding="utf-8")
    assert load_scenario(str(path)) == load_scenario(name)


@pytest.mark.parametrize("name", [CALM, SHOCK])
def test_every_sweep_alias_of_the_files_names_a_field_a_sweep_can_set(name):
    model = load_scenario(name)
    assert model.sweep_aliases
    sample = {"dollars": "100k", "duration": "1d", "int": "20"}
    for alias, (path, unit) in model.sweep_aliases.items():
        param = parse_param(name, f"{alias}={sample[unit]}")
        assert param.path == path, alias


# ------------------------------------------------------------------ guarantor-spiral-bilateral
FLAGSHIP, BILATERAL = "guarantor-spiral", "guarantor-spiral-bilateral"
BILATERAL_DAYS = 60  # about 8 s: the swaps are written and the books of contracts open


def test_the_bilateral_flagship_is_the_flagship_with_only_its_swaps_clearing_changed():
    """Same paths and bots, other clearing: the two files differ only in their name, their
    description and the margin's ``clearing`` and ``csa`` (re-copy the flagship into the
    bilateral file, keeping those, whenever the flagship changes)."""
    import tomllib

    builtin = Path(__file__).resolve().parents[2] / "clients" / "builtin"
    cleared, bilateral = (
        tomllib.loads((builtin / f"{name}.toml").read_text(encoding="utf-8"))
        for name in (FLAGSHIP, BILATERAL)
    )
    assert (
        bilateral["margin"].pop("clearing") == "bilateral" and "clearing" not in cleared["margin"]
    )
    assert bilateral["margin"].pop("csa") and "csa" not in cleared["margin"]
    for data in (cleared, bilateral):
        del data["name"], data["description"]
    assert bilateral == cleared
    assert load_scenario(BILATERAL).margin.clearing == "bilateral"


def test_the_bilateral_flagship_runs_conserves_and_folds_to_its_recorded_state(tmp_path):
    """Its first two months: cash plus pools (the collateral pool among them) is the money
    brought in less the money taken out and positions net to zero after every event, the swaps
    pay no variation margin, and the fold of the log (the bilateral contracts with it)
    reaches the recorded final state hash."""
    db = _run(BILATERAL, str(tmp_path), 7, {"days": BILATERAL_DAYS})
    fold = Fold()
    with EventStore.open(db) as store:
        for row in store.rows():
            fold.apply(*row)
            total = sum(fold.cash.values()) + sum(fold.pools.values())
            assert total == fold.deposited - fold.withdrawn, f"seq {row[0]}"
            for instrument in fold.books:
                assert sum(p.get(instrument, 0) for p in fold.positions.values()) == 0, row[0]
            if row[2] == ev.VARIATION_MARGIN:
                assert fold.kind[row[3]] == "perp", row[0]
        assert fold.state_hash() == store.session["final_state_hash"]
    assert fold.contracts, "no swap was written"
    assert {seller for seller, _buyer, _i in fold.contracts} | {
        buyer for _s, buyer, _i in fold.contracts
    } >= {"guarantor", "owner", "lender", "speculator"}
