"""Post-mortem facts (exchange/postmortem/analysis.py) against independent recomputation from the
raw
events and the fold, on real seeded sessions: a thin guarantor that is called, defaults and
runs the whole waterfall (own contribution, insurance, the default fund, deleveraging and a
haircut), and a quiet session with no default."""

from __future__ import annotations

import pytest

from exchange.core import events as ev
from exchange.postmortem import analysis as pm
from exchange.sessions import session
from exchange.store.event_store import EventStore, StoreError
from exchange.store.fold import Fold


@pytest.fixture(scope="module")
def spiral(spiral_log):
    return pm.facts(spiral_log, track_cash=["guarantor"])


@pytest.fixture(scope="module")
def rows(spiral_log):
    with EventStore.open(spiral_log) as store:
        return list(store.rows())


@pytest.fixture(scope="module")
def raw(spiral_log):
    with EventStore.open(spiral_log) as store:
        return list(store.events())


def fold_to(rows, seq):
    return Fold().apply_all(r for r in rows if r[0] <= seq)


def test_calls_are_the_collateral_call_events_with_their_outcomes(spiral, raw):
    calls = [e for e in raw if e.kind == ev.COLLATERAL_CALL]
    assert [(c.seq, c.account, c.amount) for c in spiral.calls] == [
        (e.seq, e.account, e.amount) for e in calls
    ]
    assert [c.deadline for c in spiral.calls] == [e.data["deadline"] for e in calls]
    defaults = {e.account: e for e in raw if e.kind == ev.DEFAULT}
    reduced = [e for e in raw if e.kind == ev.CALL_REDUCED]
    for call in spiral.calls:
        assert call.outcome == pm.DEFAULTED  # nobody cures in this session
        assert call.outcome_seq == defaults[call.account].seq
        assert call.due == defaults[call.account].amount
        assert [r[0] for r in call.reductions] == [
            e.seq for e in reduced if e.account == call.account
        ]
    assert spiral.summary()["calls"] == len(calls)
    assert sum(a.calls for a in spiral.accounts.values()) == len(calls)
    by = spiral.calls_by_account()
    assert sorted(by) == sorted({e.account for e in calls})


def test_defaults_name_the_missed_call_and_the_state_before(spiral, raw, rows):
    defaults = [e for e in raw if e.kind == ev.DEFAULT]
    assert [d.account for d in spiral.defaults] == [e.account for e in defaults]
    assert spiral.defaults[0].account == "guarantor"
    for fact, event in zip(spiral.defaults, defaults, strict=True):
        assert (fact.seq, fact.t, fact.missed_call) == (event.seq, event.t, event.amount)
        assert fact.reason == event.data["reason"]
        before = fold_to(rows, event.seq - 1)
        assert fact.cash == before.cash[event.account]
        assert fact.positions == {k: v for k, v in before.positions[event.account].items() if v}
        call = next(c for c in spiral.calls if c.seq == fact.call_seq)
        assert call.account == fact.account


def test_the_waterfall_balances_with_the_defaulters_shortfall(spiral, raw, rows):
    """The shortfall (the defaulter's negative cash once closed out, read from a fold just
    before the first fund pays) equals what the steps paid plus what is left uncovered, and
    the steps are exactly the waterfall events naming the defaulter."""
    fund_kinds = (ev.WATERFALL_DRAW, ev.DEFAULT_FUND_LOSS, ev.HAIRCUT)
    guarantor = spiral.closeouts[0]
    assert guarantor.defaulter == "guarantor"
    first_fund = next(
        e
        for e in raw
        if e.kind in fund_kinds and guarantor.defaulter in (e.account, e.counterparty)
    )
    before = fold_to(rows, first_fund.seq - 1)
    assert guarantor.shortfall == -before.cash["guarantor"] > 0
    assert guarantor.covered + guarantor.uncovered == guarantor.shortfall
    last_step = guarantor.steps[-1].seq
    assert guarantor.uncovered == max(0, -fold_to(rows, last_step).cash["guarantor"])
    # every step present, in order, and nothing else
    names = [s.step for s in guarantor.steps]
    for step in (pm.STEP_AUCTION, pm.STEP_OWN, pm.STEP_INSURANCE, pm.STEP_DEFAULT_FUND):
        assert step in names
    assert pm.STEP_ADL in names and pm.STEP_HAIRCUT_ADL in names
    assert [pm.STEPS.index(n) for n in names] == sorted(pm.STEPS.index(n) for n in names)
    mine = [
        e
        for e in raw
        if (e.kind in (ev.WATERFALL_DRAW,) and e.account == "guarantor")
        or (
            e.kind in (ev.DEFAULT_FUND_LOSS, ev.HAIRCUT, ev.AUCTION_AWARD, ev.DELEVERAGED)
            and e.counterparty == "guarantor"
        )
    ]
    assert [s.seq for s in guarantor.steps if s.kind != ev.FILL] == [e.seq for e in mine]
    paid = sum(
        e.amount if e.kind != ev.HAIRCUT else -e.amount for e in mine if e.kind in fund_kinds
    )
    assert guarantor.covered == paid == sum(guarantor.paid_by_step().values())
    # a close-out with no shortfall pays nothing: the maker, which took 600 lots of the
    # guarantor's book in the auction, defaults in turn with enough cash to close out
    second = spiral.closeouts[1]
    assert second.defaulter == "maker" and second.shortfall == 0 and second.covered == 0


def test_funds_used_and_losses_by_account_add_up(spiral, raw):
    f = spiral.funds
    draws = [e for e in raw if e.kind == ev.WATERFALL_DRAW]
    assert f.own_contributions == sum(e.amount for e in draws if e.side == "own")
    assert f.insurance == sum(e.amount for e in draws if e.side == "insurance")
    assert f.default_fund == sum(e.amount for e in raw if e.kind == ev.DEFAULT_FUND_LOSS)
    assert f.haircuts == -sum(e.amount for e in raw if e.kind == ev.HAIRCUT)
    assert f.adl_lots == sum(abs(e.qty) for e in raw if e.kind == ev.DELEVERAGED)
    assert f.auction_lots == sum(abs(e.qty) for e in raw if e.kind == ev.AUCTION_AWARD)
    assert f.total == sum(c.covered for c in spiral.closeouts)
    losses = spiral.losses()
    assert sum(losses.values()) == f.default_fund + f.haircuts
    assert "guarantor" not in losses  # its own contribution is not a loss to others
    assert losses["owner"] > losses["maker"] > 0  # the protection buyer was haircut
    row = spiral.summary()
    assert row["defaulted"] and row["first_default_account"] == "guarantor"
    assert row["first_default_day"] == spiral.defaults[0].t // pm.DAY_NS
    assert row["insurance_used"] == f.insurance and row["haircuts"] == f.haircuts
    assert all(row[f"loss.{name}"] == lost for name, lost in losses.items())
    assert all(v is None or isinstance(v, int | str | bool) for v in row.values())


def test_who_owes_whom_matches_losses_and_positions(spiral, rows):
    borne = spiral.who_owes_whom.borne
    for name, account in spiral.accounts.items():
        for defaulter, lost in account.lost_to_defaults.items():
            entry = next(b for b in borne if (b.defaulter, b.counterparty) == (defaulter, name))
            assert entry.total == lost
    assert borne[0].defaulter == "guarantor" and borne[0].counterparty == "owner"
    # pair positions sum to each account's position, which the fold agrees with
    fold = fold_to(rows, spiral.until)
    for name, account in spiral.accounts.items():
        assert account.positions == {k: v for k, v in fold.positions[name].items() if v}
        from_pairs: dict[str, int] = {}
        for p in spiral.who_owes_whom.positions:
            if name in (p.long, p.short):
                sign = 1 if p.long == name else -1
                from_pairs[p.instrument] = from_pairs.get(p.instrument, 0) + sign * p.qty
        assert {k: v for k, v in from_pairs.items() if v} == account.positions


def test_cash_and_income_agree_with_the_fold_and_the_events(spiral, raw, rows):
    fold = fold_to(rows, spiral.until)
    first_instant = max(r[0] for r in rows if r[1] == 0)
    start = fold_to(rows, first_instant)
    for name, account in spiral.accounts.items():
        assert account.final_cash == fold.cash[name]
        assert account.start_cash == start.cash[name]
        mine = [e for e in raw if e.account == name]
        premiums = sum(e.amount for e in mine if e.kind == ev.PREMIUM_PAID)
        assert account.premiums_received - account.premiums_paid == premiums
        assert sum(account.premiums_by_instrument.values()) == premiums
        payouts = sum(e.amount for e in mine if e.kind == ev.SWAP_SETTLED)
        assert account.payouts_received - account.payouts_paid == payouts
        assert account.contribution_left == fold.contributions.get(name, 0)
    guarantor = spiral.accounts["guarantor"]
    assert guarantor.defaulted and guarantor.premiums_received == 0  # out before any was due
    # the maker took over the protection sold, then defaulted on day 15, before the first
    # premium was due: closed out, it takes part in nothing, so it neither pays nor receives
    # the premiums its locked-in basis would have (issue #18; they were paid and refunded)
    maker = spiral.accounts["maker"]
    assert maker.defaulted and maker.premiums_received == maker.premiums_paid == 0
    path = spiral.cash_paths["guarantor"]
    assert path[0] == (0, 0, 0) and path[-1][2] == guarantor.final_cash
    assert all(a[0] < b[0] for a, b in zip(path, path[1:], strict=False))
    assert spiral.epoch is not None and spiral.epoch.isoformat() == "2024-06-01"
    long = spiral.instruments["H100-RVS-LONG"]
    assert long.maturity_t == (long.maturity - spiral.epoch).days * pm.DAY_NS


def test_until_sees_the_log_as_it_was(spiral_log, spiral):
    first = spiral.defaults[0]
    before = pm.facts(spiral_log, until=first.seq - 1)
    assert not before.defaults and not before.closeouts and before.until == first.seq - 1
    assert all(c.outcome in (pm.OPEN, pm.REDUCED) for c in before.calls)
    assert before.summary()["losses"] == 0
    at = pm.facts(spiral_log, until=first.seq)
    assert [d.account for d in at.defaults] == ["guarantor"]
    assert at.t_end == first.t
    # the same question twice gives the same answer
    assert pm.facts(spiral_log) == pm.facts(spiral_log)
    assert spiral.until == spiral.last_seq


def test_bad_inputs_raise_clear_errors(spiral_log, tmp_path):
    with pytest.raises(ValueError, match="outside the log"):
        pm.facts(spiral_log, until=10**9)
    with pytest.raises(ValueError, match="outside the log"):
        pm.facts(spiral_log, until=0)
    with pytest.raises(FileNotFoundError):
        pm.facts(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError):
        pm.facts(junk)


def test_a_session_without_defaults_has_empty_facts(tmp_path):
    path = tmp_path / "quiet.db"
    session.run("products", path, overrides={"days": 45})
    quiet = pm.facts(path)
    assert not quiet.defaulted and not quiet.closeouts and quiet.funds == pm.FundsUsed()
    assert quiet.summary()["first_default_t"] is None and quiet.losses() == {}
    assert quiet.accounts["guarantor"].premiums_received > 0


def test_a_calls_increases_are_its_call_increased_events_with_their_reasons(spiral, raw):
    """The maker's call grows (variation margin) before it defaults: each call's record lists
    its raises beside its reductions, and its due at the default is the amount last called."""
    increased = [e for e in raw if e.kind == ev.CALL_INCREASED]
    assert increased
    for call in spiral.calls:
        assert call.increases == [
            (e.seq, e.t, e.amount, e.data["reason"]) for e in increased if e.account == call.account
        ]
        changes = [e for e in raw if e.account == call.account and e.seq > call.seq]
        last = [e for e in changes if e.kind in (ev.CALL_INCREASED, ev.CALL_REDUCED)]
        if last and call.outcome == pm.DEFAULTED:
            assert call.due == [e for e in last if e.seq < call.outcome_seq][-1].amount
