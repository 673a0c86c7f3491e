"""Fixtures for the exchange tests: an engine with an in-memory event sink."""

import importlib
import os

import pytest
from hypothesis import strategies as st

from exchange.kernel.engines import DEFAULT_ENGINE, ENGINES, engine_class
from exchange.products.instruments import InstrumentSpec
from exchange.sessions import session

SPEC = InstrumentSpec(
    name="H100-RENTAL",
    tick_size="0.001",
    contract_multiplier="100",
    max_price=100_000,
    maker_fee_bps=-1,
    taker_fee_bps=5,
)


def order(account, side, price, qty, **extra):
    """A submit command for ``SPEC``: ``qty`` lots at ``price`` ticks."""
    return {
        "type": "submit",
        "account": account,
        "instrument": SPEC.name,
        "side": side,
        "price": price,
        "qty": qty,
        **extra,
    }


class Harness:
    """An engine plus the list of events it emitted: the engine sessions run by default (the
    compiled kernel), or the one named (``exchange.kernel.engines``)."""

    def __init__(self, engine: str = DEFAULT_ENGINE):
        self.events = []
        self.engine = engine_class(engine)(self.events.append)
        self.engine.start("test", 1, {})
        self.engine.list_instrument(SPEC)

    def open(self, name, cash=0, stp="none"):
        self.engine.open_account(name, stp=stp)
        if cash:
            self.engine.credit(name, cash)

    def submit(self, account, side, price, qty, **extra):
        command = order(account, side, price, qty, **extra)
        return self.engine.handle(command)

    def since(self, mark):
        return self.events[mark:]

    def kinds(self, mark=0):
        return [e.kind for e in self.events[mark:]]


def order_actions(max_size: int):
    """Hypothesis: lists of ``(kind, account, side, price, qty, tif, target)`` for
    :func:`play` -- submits, cancels and amends (``target``: which earlier order), deposits
    and withdrawals by alice, bob and carol."""
    return st.lists(
        st.tuples(
            st.sampled_from(
                ["submit", "submit", "submit", "cancel", "amend", "deposit", "withdraw"]
            ),
            st.sampled_from(["alice", "bob", "carol"]),
            st.sampled_from(["buy", "sell"]),
            st.integers(9_990, 10_010),
            st.integers(1, 20),
            st.sampled_from(["gtc", "gtc", "ioc", "fok"]),
            st.integers(1, 30),
        ),
        max_size=max_size,
    )


def play(steps) -> Harness:
    """A :class:`Harness` (the default engine) with alice, bob and carol ($50,000 each; carol
    cancels both sides of a self-trade) after ``steps`` from :func:`order_actions`."""
    h = Harness()
    for name in ("alice", "bob", "carol"):
        h.open(name, 5_000_000, stp="cancel-both" if name == "carol" else "none")
    ids = []
    for kind, account, side, price, qty, tif, target in steps:
        if kind == "submit":
            result = h.submit(account, side, price, qty, tif=tif)
            if result.order_id:
                ids.append(result.order_id)
        elif kind in ("cancel", "amend") and ids:
            command = {"type": kind, "account": account, "order_id": ids[target % len(ids)]}
            if kind == "amend":
                command.update(price=price, qty=qty)
            h.engine.handle(command)
        elif kind == "deposit":
            h.engine.handle({"type": "deposit", "account": account, "amount": qty * 1_000})
        elif kind == "withdraw":
            h.engine.handle({"type": "withdraw", "account": account, "amount": qty * 100_000})
    return h


@pytest.fixture(params=list(ENGINES))
def ex(request):
    """Alice and Bob with $10,000 each, on each engine in turn: the engine's rules are
    specified once and checked on the compiled kernel and on its reference."""
    h = Harness(request.param)
    h.open("alice", 1_000_000)
    h.open("bob", 1_000_000)
    return h


#: A ``products`` session in which the guarantor defaults, the maker takes 600 lots of its book at a
#: steep discount in the default auction, the shortfall runs through every step of the
#: waterfall, and the maker then defaults too (seed 2): the post-mortem and report tests read it.
SPIRAL = {
    "days": 75,
    "guarantor_cash": 30_000_00,
    "owner_contracts": 1_000,
    "insurance_fund": 5_000_00,
    "default_fund_contribution": 2_000_00,
    "margin": {"auction_bidders": [{"account": "maker", "discount_ppm": 400_000, "max_lots": 600}]},
}


@pytest.fixture(scope="session")
def spiral_log(tmp_path_factory):
    """The SPIRAL session's event log (run once per test session)."""
    path = tmp_path_factory.mktemp("spiral") / "spiral.db"
    session.run("products", path, seed=2, overrides=SPIRAL)
    return path


def import_or_skip_unless_ci(module: str, reason: str):
    """Import a test-only dependency: without it, skip locally with ``reason``, but fail under
    CI (``CI`` set), whose install has every dev extra, so a test cannot vanish from CI."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{reason}, and CI must run this test")
        pytest.skip(reason)
