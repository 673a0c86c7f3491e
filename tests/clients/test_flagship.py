"""The flagship, ``guarantor-spiral``: from the event log alone, on several seeds, the guarantor
is called on many days, at a higher initial margin each time the index has slid further, and
while still solvent; it defaults on a call long before any swap it wrote matures (with no
payout realised), and the close-out hands its book to the auction bidders at a cost its own
margin covers. The 20-seed and capital acceptance is tests/clients/test_flagship_acceptance.py
(``-m acceptance``)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS
from exchange.postmortem.analysis import facts
from exchange.sessions import session
from exchange.store.event_store import EventStore

SEEDS = (7, 11, 23)
GUARANTOR = "guarantor"


def _run(args: tuple[int, str]) -> str:
    seed, db = args
    session.run("guarantor-spiral", db, seed=seed)
    return db


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[int, str]:
    folder = tmp_path_factory.mktemp("flagship")
    jobs = [(seed, str(folder / f"seed{seed}.db")) for seed in SEEDS]
    with ProcessPoolExecutor(max_workers=2) as pool:  # a year each: both cores
        done = list(pool.map(_run, jobs))
    return dict(zip(SEEDS, done, strict=True))


def _calls_before_default(f) -> list:
    default = next(d for d in f.defaults if d.account == GUARANTOR)
    return [c for c in f.calls if c.account == GUARANTOR and c.t <= default.t]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_guarantor_is_called_on_many_days_before_it_defaults(logs, seed):
    """A spiral, not one cliff: at least four calls on four different days before the
    default (the scripted flagship had two small calls, then the one that sank it)."""
    calls = _calls_before_default(facts(logs[seed]))
    assert len({c.t // DAY_NS for c in calls}) >= 4, [c.t // DAY_NS for c in calls]


@pytest.mark.parametrize("seed", SEEDS)
def test_each_call_finds_the_guarantor_solvent_and_the_margin_higher_than_at_the_first(logs, seed):
    """Calls come while the guarantor still has equity (liquidity, not insolvency, sinks it:
    the scripted flagship's decisive call came after one cycle's variation margin had taken
    its equity to -$4.3M), and the initial margin they restore grows as the index slides and
    the rating falls: the last call's is above the first's."""
    calls = _calls_before_default(facts(logs[seed]))
    assert all(c.equity is not None and c.equity > 0 for c in calls), [c.equity for c in calls]
    assert calls[-1].im > calls[0].im


@pytest.mark.parametrize("seed", SEEDS)
def test_the_calls_dwarf_the_guarantors_premium_income(logs, seed):
    f = facts(logs[seed])
    default = next(d for d in f.defaults if d.account == GUARANTOR)
    calls = [c.amount for c in _calls_before_default(f)]
    with EventStore.open(logs[seed], mode="r") as store:
        premiums = sum(
            e.amount
            for e in store.events(kind=ev.PREMIUM_PAID)
            if e.account == GUARANTOR and e.t <= default.t and e.amount > 0
        )
    assert premiums > 0
    assert sum(calls) > 5 * premiums


@pytest.mark.parametrize("seed", SEEDS)
def test_the_guarantor_defaults_on_a_call_before_any_swap_matures_with_no_payout(logs, seed):
    f = facts(logs[seed])
    defaults = [d for d in f.defaults if d.account == GUARANTOR]
    assert len(defaults) == 1
    default = defaults[0]
    assert default.reason == "missed call" and default.call_seq is not None
    maturities = [i.maturity_t for i in f.instruments.values() if i.kind == "rvs"]
    assert maturities and default.t < min(maturities)
    # months, not days, before the first maturity: the loss was never realised
    assert min(maturities) - default.t > 365 * 86_400 * 10**9
    with EventStore.open(logs[seed], mode="r") as store:
        assert not [e for e in store.events(kind=ev.SWAP_SETTLED) if e.t <= default.t]
    g = f.accounts[GUARANTOR]
    assert g.payouts_paid == 0 and g.payouts_received == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_the_closed_out_guarantor_pays_no_premium_and_gets_no_variation_margin(logs, seed):
    """After its default's nanosecond the guarantor takes part in nothing (issue #18): it used
    to be charged its locked-in premiums and refunded them by variation margin the next day,
    so the report showed premiums paid by an account that never bought protection."""
    f = facts(logs[seed])
    [default] = [d for d in f.defaults if d.account == GUARANTOR]
    payments = (ev.PREMIUM_PAID, ev.VARIATION_MARGIN, ev.FUNDING_PAID, ev.SWAP_SETTLED)
    with EventStore.open(logs[seed], mode="r") as store:
        late = [e for e in store.events(kind=payments) if e.account == GUARANTOR]
    assert late and not [e for e in late if e.t > default.t]
    assert f.accounts[GUARANTOR].premiums_paid == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_the_close_out_is_covered_by_the_guarantors_own_margin(logs, seed):
    """Cleared, the buyers keep their protection: the defaulter's book goes to the auction
    bidders, and the margin it was called for while still solvent pays the auction's
    discount, so no fund and no other member loses anything (the bilateral twin,
    guarantor-spiral-bilateral, shows where the loss lands without a clearing house)."""
    f = facts(logs[seed])
    [closeout] = [c for c in f.closeouts if c.defaulter == GUARANTOR]
    assert closeout.lots_by_step().get("auction", 0) > 0
    assert closeout.shortfall == 0 and closeout.covered == 0 and closeout.uncovered == 0
    assert not [s for s in closeout.steps if s.paid], closeout.steps
    assert not [n for n, a in f.accounts.items() if a.lost_to_defaults.get(GUARANTOR)]


@pytest.mark.parametrize("seed", SEEDS)
def test_cash_is_conserved_and_positions_net_to_zero_at_the_end(logs, seed):
    fold = session.replay(logs[seed])
    with EventStore.open(logs[seed], mode="r") as store:
        deposits = sum(e.amount for e in store.events(kind=(ev.DEPOSIT, ev.POOL_FUNDED)))
        withdrawals = sum(e.amount for e in store.events(kind=ev.WITHDRAWAL))
    assert sum(fold.cash.values()) + sum(fold.pools.values()) == deposits + withdrawals
    by_instrument: dict[str, int] = {}
    for positions in fold.positions.values():
        for instrument, qty in positions.items():
            by_instrument[instrument] = by_instrument.get(instrument, 0) + qty
    assert all(total == 0 for total in by_instrument.values())


def test_the_flagship_log_verifies(logs):
    verdict = session.verify(logs[SEEDS[0]])
    assert verdict.ok, verdict.problems
