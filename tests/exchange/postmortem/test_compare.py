"""``gpuex compare`` (exchange/postmortem/compare.py): where the same default's loss lands in two
logs.

End to end on two cleared ``products`` sessions that differ only in the guarantor's capital
(the conftest's SPIRAL session, and the same with twice the capital): every figure is checked
against the raw events and the fold. The bilateral kinds (no engine yet in this test) on a
hand-built log: a buyer's loss is V x (1 + s) - C - R, and the pools are the collateral applied,
the recoveries and the re-hedge payments.
"""

from __future__ import annotations

import shutil

import orjson
import pytest
from click.testing import CliRunner

from exchange.cli import main
from exchange.core import events as ev
from exchange.core.events import Event
from exchange.postmortem import analysis as pm
from exchange.postmortem import compare as cmp
from exchange.postmortem.report import dollars, narrative
from exchange.sessions import session
from exchange.store.event_store import EventStore
from exchange.store.fold import Fold
from tests.exchange.conftest import SPIRAL

DAY = pm.DAY_NS


@pytest.fixture(scope="module")
def richer_log(tmp_path_factory):
    """SPIRAL with twice the guarantor's capital: the same default, a smaller haircut."""
    path = tmp_path_factory.mktemp("compare") / "richer.db"
    session.run("products", path, seed=2, overrides={**SPIRAL, "guarantor_cash": 60_000_00})
    return path


@pytest.fixture(scope="module")
def both(spiral_log, richer_log):
    return cmp.compare(spiral_log, richer_log)


def _raw(path):
    with EventStore.open(path) as store:
        return list(store.events())


# ------------------------------------------------------------------ cleared, end to end
def test_each_accounts_loss_is_its_default_fund_losses_and_haircuts_in_the_log(
    both, spiral_log, richer_log
):
    for world, path in ((both.a, spiral_log), (both.b, richer_log)):
        raw = _raw(path)
        for name, row in world.accounts.items():
            fund = sum(
                e.amount for e in raw if e.kind == ev.DEFAULT_FUND_LOSS and e.account == name
            )
            cut = -sum(e.amount for e in raw if e.kind == ev.HAIRCUT and e.account == name)
            assert (row.default_fund, row.haircut) == (fund, cut), name
            assert (row.unsecured, row.rehedge) == (0, 0)
            assert row.loss == fund + cut
            landed = [e for e in raw if e.kind in (ev.DEFAULT_FUND_LOSS, ev.HAIRCUT)]
            landed = [e for e in landed if e.account == name]
            if landed:
                assert row.first_landed.seq == landed[0].seq
                assert row.first_landed.day == landed[0].t // DAY
                assert row.last_landed.seq == landed[-1].seq
            else:
                assert row.first_landed is None
    # the two sessions differ where the loss lands: the owner's haircut
    assert both.a.accounts["owner"].haircut != both.b.accounts["owner"].haircut


def test_pools_used_are_the_waterfall_draws_default_fund_losses_and_haircuts(
    both, spiral_log, richer_log
):
    for world, path in ((both.a, spiral_log), (both.b, richer_log)):
        raw = _raw(path)
        draws = [e for e in raw if e.kind == ev.WATERFALL_DRAW]
        assert world.pools["own_contributions"] == sum(e.amount for e in draws if e.side == "own")
        assert world.pools["insurance"] == sum(e.amount for e in draws if e.side != "own")
        assert world.pools["default_fund"] == sum(
            e.amount for e in raw if e.kind == ev.DEFAULT_FUND_LOSS
        )
        assert world.pools["haircuts"] == -sum(e.amount for e in raw if e.kind == ev.HAIRCUT)
        for key in ("collateral_applied", "recoveries", "rehedge_payments"):
            assert world.pools[key] == 0
        assert world.clearing == "cleared" and not world.claims


def test_differences_are_b_minus_a_per_account_and_per_pool(both, spiral_log, richer_log):
    raw_a, raw_b = _raw(spiral_log), _raw(richer_log)

    def haircut(raw, name):
        return -sum(e.amount for e in raw if e.kind == ev.HAIRCUT and e.account == name)

    assert both.accounts == sorted(both.a.accounts)
    for name in both.accounts:
        d = both.differences[name]
        assert d["haircut"] == haircut(raw_b, name) - haircut(raw_a, name)
        for key in cmp.DIFF_FIELDS:
            assert d[key] == getattr(both.b.accounts[name], key) - getattr(
                both.a.accounts[name], key
            )
    assert both.differences["owner"]["haircut"] < 0  # more capital: less lands on the owner
    cuts = [-sum(e.amount for e in raw if e.kind == ev.HAIRCUT) for raw in (raw_a, raw_b)]
    assert both.pool_differences["haircuts"] == cuts[1] - cuts[0]
    for key, _ in cmp.POOLS:
        assert both.pool_differences[key] == both.b.pools[key] - both.a.pools[key]


def test_cash_and_net_pnl_agree_with_the_fold_and_the_deposits_after_the_start(both, spiral_log):
    with EventStore.open(spiral_log) as store:
        rows = list(store.rows())
    first_instant = max(r[0] for r in rows if r[1] == 0)
    start = Fold().apply_all(r for r in rows if r[0] <= first_instant)
    end = Fold().apply_all(rows)
    raw = _raw(spiral_log)
    for name, row in both.a.accounts.items():
        later = sum(
            e.amount
            for e in raw
            if e.kind in (ev.DEPOSIT, ev.WITHDRAWAL) and e.account == name and e.t > 0
        )
        assert (row.start_cash, row.final_cash, row.external) == (
            start.cash[name],
            end.cash[name],
            later,
        )
        wealth_end = end.cash[name] + end.contributions.get(name, 0)
        wealth_start = start.cash[name] + start.contributions.get(name, 0)
        assert row.pnl == wealth_end - wealth_start - later, name


def test_defaults_say_who_when_as_day_and_date_and_the_call_missed(both, spiral_log):
    raw = [e for e in _raw(spiral_log) if e.kind == ev.DEFAULT]
    assert [(d.account, d.when.seq, d.missed_call) for d in both.a.defaults] == [
        (e.account, e.seq, e.amount) for e in raw
    ]
    first = both.a.defaults[0]
    assert first.when.day == raw[0].t // DAY
    assert first.when.date == f"2024-06-{1 + first.when.day:02d}"  # day 0 = 2024-06-01


def test_the_table_shows_both_logs_in_dollars_with_dates_and_differences(both):
    text = cmp.table(both)
    owner = both.a.accounts["owner"], both.b.accounts["owner"]
    assert dollars(owner[0].haircut) in text and dollars(owner[1].haircut) in text
    assert dollars(both.differences["owner"]["haircut"]) in text
    assert both.a.defaults[0].when.text() in text and "(2024-06-" in text
    for _, label in cmp.POOLS:
        assert label in text


def test_an_account_in_one_log_only_is_shown_with_a_dash(both):
    a = cmp.read_world(both.a.path)
    del a.accounts["taker"]
    c = cmp.diff(a, both.b)
    assert c.differences["taker"] is None and "taker" in c.accounts
    lines = cmp.table(c).splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:2] == ["taker", "A"])
    assert lines[at].split()[2:] == [cmp.DASH] * 3
    assert cmp.DASH in lines[at + 2]  # B - A
    assert "taker" in cmp.html_page(c)


# ------------------------------------------------------------------ the command
def test_the_command_prints_the_table_and_writes_the_page_beside_a(
    spiral_log, richer_log, tmp_path
):
    a, b = tmp_path / "thin.db", tmp_path / "rich.db"
    shutil.copy(spiral_log, a)
    shutil.copy(richer_log, b)
    result = CliRunner().invoke(main, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    page = tmp_path / "thin-vs-rich.html"
    assert f"wrote {page}" in result.output
    assert "Pools used" in result.output and "B - A" in result.output
    text = page.read_text(encoding="utf-8")
    assert 'id="chart-compare-losses"' in text and "<script src" not in text  # offline
    assert dollars(cmp.compare(a, b).differences["owner"]["haircut"]) in text

    out = tmp_path / "pages" / "mine.html"
    shown = CliRunner().invoke(main, ["compare", str(a), str(b), "--json", "--html", str(out)])
    assert shown.exit_code == 0, shown.output
    data = orjson.loads(shown.stdout)
    assert data["a"]["path"] == str(a) and data["b"]["seed"] == 2
    assert data["differences"]["owner"]["haircut"] < 0
    assert out.is_file()


def _hand_log(path, events, *, finish=True):
    store = EventStore.create(
        path, scenario="hand", seed=1, config=CONFIG, code_version="test", durability="normal"
    )
    with store:
        store.append(events)
        if finish:
            store.finish(events[-1].t, "0" * 64)


def test_bad_paths_and_unfinished_logs_are_refused_with_a_reason(spiral_log, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a log")
    running = tmp_path / "running.db"
    _hand_log(running, bilateral_events()[:5], finish=False)
    for args, said in (
        ([tmp_path / "missing.db", spiral_log], "no such event log"),
        ([spiral_log, tmp_path / "missing.db"], "Invalid value for B"),
        ([spiral_log, junk], "not a gpuex event log"),
        ([running, spiral_log], "unfinished"),
    ):
        result = CliRunner().invoke(main, ["compare", *map(str, args)])
        assert result.exit_code == 2, result.output
        assert said in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("*.html"))


# ------------------------------------------------------------------ bilateral kinds
CONFIG = {"start": "2024-06-01", "margin": {"clearing": "bilateral"}}
V_OWNER, C_OWNER, R_OWNER = 900_000, 250_000, 260_000
V_LENDER, C_LENDER, R_LENDER, ESTATE = 200_000, 100_000, 40_000, 10_000
SPREAD_PPM = 200_000
HEDGER_OWES = 30_000


def _paid(value):
    return -(-value * (1_000_000 + SPREAD_PPM) // 1_000_000)  # V x (1 + s), rounded up


def bilateral_events() -> list[Event]:
    """A guarantor sells protection bilaterally to the owner (10 lots) and the lender (5), and
    buys 3 lots from the hedger; it posts collateral (and takes some back) and defaults on day
    3: the hedger's contract is terminated and it pays what it owes (HEDGER_OWES); each buyer's
    protection is terminated at V, it takes its collateral C, recovers R and re-hedges with
    the dealer."""
    e: list[Event] = []

    def add(t, kind, **kw):
        e.append(Event(len(e) + 1, t, kind, **kw))

    add(0, ev.SESSION_STARTED, data={"scenario": "hand", "seed": 1, "config": CONFIG})
    for name, cash in (("guarantor", 500_000), ("owner", 1_000_000), ("lender", 1_000_000)):
        add(0, ev.ACCOUNT_OPENED, account=name)
        add(0, ev.DEPOSIT, account=name, amount=cash)
    for name, cash in (("dealer", 2_000_000), ("hedger", 1_000_000)):
        add(0, ev.ACCOUNT_OPENED, account=name)
        add(0, ev.DEPOSIT, account=name, amount=cash)
    for buyer, qty, seller in (("owner", 10, "guarantor"), ("lender", 5, "guarantor")) + (
        ("guarantor", 3, "hedger"),
    ):
        add(
            DAY // 2,
            ev.FILL,
            instrument="RVS",
            account=buyer,
            order_id=len(e),
            side="buy",
            price=100,
            qty=qty,
            amount=0,
            counterparty=seller,
            counter_order_id=100 + len(e),
        )
    terms = {"exposure": 0, "threshold": 0, "support": 0, "rating": "BBB"}
    add(
        DAY,
        cmp.COLLATERAL_POSTED,
        account="guarantor",
        counterparty="owner",
        amount=300_000,
        data=terms,
    )
    add(
        DAY,
        cmp.COLLATERAL_POSTED,
        account="guarantor",
        counterparty="lender",
        amount=C_LENDER,
        data=terms,
    )
    add(
        2 * DAY,
        cmp.COLLATERAL_POSTED,
        account="guarantor",
        counterparty="owner",
        amount=C_OWNER - 300_000,
        data=terms,
    )
    add(3 * DAY, ev.DEFAULT, account="guarantor", amount=999_999, data={"reason": "missed call"})
    # the hedger owes the guarantor on net: it pays first (into the defaulter's cash)
    add(
        3 * DAY,
        cmp.PROTECTION_TERMINATED,
        instrument="RVS",
        account="hedger",
        counterparty="guarantor",
        qty=-3,
        amount=-HEDGER_OWES,
        price=90,
    )
    add(
        3 * DAY,
        cmp.TERMINATION_PAID,
        account="hedger",
        counterparty="guarantor",
        amount=-HEDGER_OWES,
    )
    for buyer, qty, v, c, r, estate in (
        ("lender", 5, V_LENDER, C_LENDER, R_LENDER, ESTATE),
        ("owner", 10, V_OWNER, C_OWNER, R_OWNER, 0),
    ):
        add(
            3 * DAY,
            cmp.PROTECTION_TERMINATED,
            instrument="RVS",
            account=buyer,
            counterparty="guarantor",
            qty=qty,
            amount=v,
            price=90,
        )
        add(3 * DAY, cmp.COLLATERAL_APPLIED, account=buyer, counterparty="guarantor", amount=c)
        add(
            3 * DAY,
            cmp.RECOVERY_PAID,
            account=buyer,
            counterparty="guarantor",
            amount=r,
            data={"claim": v - c, "recovery_ppm": 400_000, "from_estate": estate},
        )
        add(
            3 * DAY + 1,
            cmp.REHEDGED,
            instrument="RVS",
            account=buyer,
            counterparty="dealer",
            qty=qty,
            price=100,
            amount=-_paid(v),
            data={"value": v, "spread_ppm": SPREAD_PPM},
        )
    add(4 * DAY, ev.SESSION_ENDED, data={"state_hash": "0" * 64})
    return e


@pytest.fixture
def bilateral_log(tmp_path):
    path = tmp_path / "bilateral.db"
    _hand_log(path, bilateral_events())
    return path


def test_a_bilateral_buyers_loss_is_the_rehedge_cost_less_collateral_and_recovery(
    bilateral_log,
):
    facts = pm.facts(bilateral_log)
    world = cmp.analyse(facts, bilateral_events())  # the pure function, fed a sequence
    assert world.clearing == "bilateral"
    for buyer, v, c, r in (
        ("owner", V_OWNER, C_OWNER, R_OWNER),
        ("lender", V_LENDER, C_LENDER, R_LENDER),
    ):
        [claim] = [x for x in world.claims if x.buyer == buyer]
        assert (claim.defaulter, claim.value, claim.collateral, claim.recovery) == (
            "guarantor",
            v,
            c,
            r,
        )
        assert claim.rehedge_paid == _paid(v)
        assert claim.loss == _paid(v) - c - r  # V x (1 + s) - C - R
        row = world.accounts[buyer]
        assert (row.unsecured, row.rehedge) == (v - c - r, _paid(v) - v)
        assert row.loss == _paid(v) - c - r and row.default_fund == row.haircut == 0
        assert (row.first_landed.day, row.first_landed.date) == (3, "2024-06-04")
    assert world.pools == {
        "own_contributions": 0,
        "insurance": 0,
        "default_fund": 0,
        "haircuts": 0,
        "collateral_applied": C_OWNER + C_LENDER,
        "recoveries": R_OWNER + R_LENDER,
        "rehedge_payments": _paid(V_OWNER) + _paid(V_LENDER),
        "uncovered": 0,
    }
    # a counterparty that owed the defaulter pays it and loses nothing to the default
    [owed] = [x for x in world.claims if x.buyer == "hedger"]
    assert (owed.value, owed.termination_paid, owed.loss) == (-HEDGER_OWES, HEDGER_OWES, 0)
    assert world.accounts["hedger"].loss == 0 and world.pools["rehedge_payments"] > 0
    assert [(d.account, d.when.day) for d in world.defaults] == [("guarantor", 3)]
    # the log read through the store gives the same world
    assert cmp.read_world(bilateral_log) == world


def test_bilateral_kinds_move_cash_and_positions_in_the_post_mortem(bilateral_log):
    world = cmp.read_world(bilateral_log)
    owner, lender = world.accounts["owner"], world.accounts["lender"]
    assert owner.final_cash == 1_000_000 + C_OWNER + R_OWNER - _paid(V_OWNER)
    assert lender.final_cash == 1_000_000 + C_LENDER + R_LENDER - _paid(V_LENDER)
    # the guarantor posted C_OWNER + C_LENDER (all applied), the hedger paid it what it owed
    # and its cash paid ESTATE of the lender's recovery
    guarantor = world.accounts["guarantor"]
    assert guarantor.final_cash == 500_000 - C_OWNER - C_LENDER + HEDGER_OWES - ESTATE
    hedger = world.accounts["hedger"]
    assert hedger.final_cash == 1_000_000 - HEDGER_OWES
    assert hedger.loss == 0  # it paid what it owed: not a loss to the default
    assert guarantor.collateral_out == 0
    assert world.accounts["dealer"].final_cash == 2_000_000 + _paid(V_OWNER) + _paid(V_LENDER)
    # no premiums, no VM: a buyer's cash P&L is minus its loss
    assert owner.pnl == -owner.loss and lender.pnl == -lender.loss
    positions = {n: a.positions for n, a in pm.facts(bilateral_log).accounts.items()}
    assert positions == {
        "dealer": {"RVS": -15},
        "guarantor": {},
        "hedger": {},
        "lender": {"RVS": 5},
        "owner": {"RVS": 10},
    }


def test_collateral_still_posted_counts_in_the_posters_pnl(bilateral_log, tmp_path):
    before_default = [e for e in bilateral_events() if e.t < 3 * DAY]
    path = tmp_path / "posted.db"
    _hand_log(path, before_default)
    guarantor = cmp.read_world(path).accounts["guarantor"]
    assert guarantor.collateral_out == C_OWNER + C_LENDER
    assert guarantor.final_cash == 500_000 - C_OWNER - C_LENDER
    assert guarantor.pnl == 0  # collateral posted is still its money


def test_cleared_against_bilateral_shows_accounts_of_one_log_with_a_dash(spiral_log, bilateral_log):
    c = cmp.compare(spiral_log, bilateral_log)
    assert (c.a.clearing, c.b.clearing) == ("cleared", "bilateral")
    assert c.differences["dealer"] is None and c.differences["maker"] is None
    assert c.differences["owner"]["unsecured"] == V_OWNER - C_OWNER - R_OWNER
    text = cmp.table(c)
    assert "Bilateral claims" in text and dollars(_paid(V_OWNER)) in text
    page = cmp.html_page(c)
    assert 'id="claims"' in page and dollars(V_OWNER - C_OWNER - R_OWNER) in page


# ------------------------------------------------------------------ cleared against bilateral
#: SPIRAL with its swaps cleared bilaterally: the guarantor posts collateral to the owner under
#: a CSA (thresholds by rating A / BBB / BB), 40 % recovery, a 20 % re-hedge spread.
BILATERAL = {
    **SPIRAL,
    "margin": {
        **SPIRAL["margin"],
        "clearing": "bilateral",
        "csa": {
            "threshold_by_rating": [10_000_00, 2_500_00, 0],
            "minimum_transfer": 0,
            "recovery_ppm": 400_000,
            "rehedge_spread_ppm": 200_000,
        },
    },
}


@pytest.fixture(scope="module")
def bilateral_spiral(tmp_path_factory):
    path = tmp_path_factory.mktemp("compare") / "bilateral-spiral.db"
    session.run("products", path, seed=2, overrides=BILATERAL)
    return path


def test_the_same_default_lands_on_the_funds_cleared_and_on_the_buyer_bilateral(
    spiral_log, bilateral_spiral
):
    """Two real sessions of one market: cleared, the guarantor's default is paid by the
    waterfall (funds, haircuts) and no buyer has a bilateral claim; bilateral, no fund is
    touched and the owner's loss is exactly its re-hedge payment less the collateral and the
    recovery it got, each read from the raw events."""
    c = cmp.compare(spiral_log, bilateral_spiral)
    assert (c.a.clearing, c.b.clearing) == ("cleared", "bilateral")
    assert "guarantor" in {d.account for d in c.a.defaults}
    assert "guarantor" in {d.account for d in c.b.defaults}
    assert c.a.pools["default_fund"] + c.a.pools["haircuts"] > 0 and not c.a.claims
    fund_pools = ("own_contributions", "insurance", "default_fund", "haircuts")
    assert all(c.b.pools[p] == 0 for p in fund_pools), c.b.pools
    raw = _raw(bilateral_spiral)

    def paid(kind, account):
        return sum(e.amount for e in raw if e.kind == kind and e.account == account)

    applied = paid(ev.COLLATERAL_APPLIED, "owner")
    recovered = paid(ev.RECOVERY_PAID, "owner")
    rehedge = -paid(ev.REHEDGED, "owner")
    assert rehedge > 0 and recovered > 0
    owner = c.b.accounts["owner"]
    assert owner.loss == rehedge - applied - recovered
    assert owner.default_fund == 0 and owner.haircut == 0
    assert c.b.pools["rehedge_payments"] == rehedge and c.b.pools["recoveries"] == recovered
    assert c.b.pools["collateral_applied"] == applied
    # the post-mortem (the run summary, the report, a sweep's losses) counts it the same way
    assert pm.facts(bilateral_spiral).accounts["owner"].lost == owner.loss
    story = " ".join(narrative(pm.facts(bilateral_spiral)))
    assert "Its swaps were bilateral" in story and f"owner {dollars(owner.loss)}" in story
    assert "Its swaps were bilateral" not in " ".join(narrative(pm.facts(spiral_log)))
