"""The flagship, ``guarantor-spiral``: from the event log alone, on several seeds, the guarantor
is called more and more, defaults on a call long before any swap it wrote matures (with no
payout realised), and the close-out and waterfall move the loss onto the mutualised funds and
the other members."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from exchange import events as ev
from exchange import session
from exchange.postmortem import facts
from exchange.store import EventStore

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


@pytest.mark.parametrize("seed", SEEDS)
def test_calls_to_the_guarantor_grow_faster_than_its_premium_income(logs, seed):
    f = facts(logs[seed])
    default = next(d for d in f.defaults if d.account == GUARANTOR)
    calls = [c.amount for c in f.calls if c.account == GUARANTOR and c.t <= default.t]
    assert len(calls) >= 2
    assert all(a < b for a, b in zip(calls, calls[1:], strict=False)), calls
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
def test_the_close_out_moves_the_loss_to_the_funds_and_the_other_members(logs, seed):
    f = facts(logs[seed])
    [closeout] = [c for c in f.closeouts if c.defaulter == GUARANTOR]
    assert closeout.shortfall > 0
    assert closeout.covered + closeout.uncovered == closeout.shortfall
    if closeout.uncovered:  # only once every layer is spent
        assert (
            f.funds.insurance == 500_000_00 and f.funds.default_fund == 8 * 250_000_00 - 250_000_00
        )
        assert any(s.step == "haircut_vm_gains" for s in closeout.steps)
    steps = [s.step for s in closeout.steps if s.paid]
    # the waterfall's order: its own contribution, the insurance fund, then the default fund
    assert steps.index("own") < steps.index("insurance") < steps.index("default_fund")
    bearers = {s.bearer for s in closeout.steps if s.step == "default_fund" and s.paid}
    assert GUARANTOR not in bearers
    assert {"owner", "lender", "speculator"} <= bearers  # its own counterparties pay too
    assert f.funds.insurance > 0 and f.funds.default_fund > 0
    assert sum(s.paid for s in closeout.steps) == closeout.covered


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
