"""Delivering a batch to an in-process bot: callbacks the bot does not override are skipped."""

from __future__ import annotations

import numpy as np
import pytest

import clients.runner as runner
from clients.bot import BookLevel, BookView, Bot, IndexPrint, OrderUpdate, Trade
from clients.budget import DEFAULT_LINES
from clients.context import AccountView, Context
from clients.runner import BotFailure, LocalDriver, dispatch

# every test here runs with both runner twins (tests/clients/conftest.py)
pytestmark = pytest.mark.usefixtures("twin")

TRADE = ("on_trade", Trade("H100-PERP", 5, 100, 2, "buy"))
INDEX = ("on_index", IndexPrint("H100-RENTAL", 5, 101))
ORDER = ("on_order", OrderUpdate("accepted", 5, "H100-PERP", 7, 1, "buy", 99, 3, None))
BOOK = ("on_book", BookView("H100-PERP", 5, (BookLevel(99, 3),), (BookLevel(101, 4),)))
ACCOUNT = AccountView(1_000, {"H100-PERP": 2}, ())


class IndexOnly(Bot):
    """Overrides one callback: remembers the index prints and the cash it saw at each."""

    def __init__(self):
        self.seen: list[tuple[int, int]] = []

    def on_index(self, ctx, index):
        self.seen.append((index.value, ctx.balance()))


def _context() -> Context:
    return Context("b", "acct", np.random.default_rng(1))


@pytest.mark.parametrize("twin", ["python"], indirect=True)  # patches the reference's run_within
def test_a_callback_the_bot_does_not_override_is_not_run_under_a_budget(monkeypatch):
    called: list[str] = []
    run_within = runner.run_within

    def counting(lines, fn, *args):
        called.append(fn.__name__)
        return run_within(lines, fn, *args)

    monkeypatch.setattr(runner, "run_within", counting)
    bot = IndexOnly()
    ctx = _context()
    ctx._begin(5, ACCOUNT)
    assert dispatch(bot, ctx, [TRADE, INDEX, ORDER, BOOK], DEFAULT_LINES) == ([], [])
    assert called == ["on_index"]  # Bot's own on_trade, on_order, on_book do nothing
    assert bot.seen == [(101, 1_000)]
    assert ctx.book("H100-PERP") == BOOK[1]  # a skipped on_book still updates the view
    # without a budget they are skipped too; under a budget of 0 units even a no-op call
    # overruns, so there every callback runs (and the first one fails)
    called.clear()
    dispatch(bot, ctx, [TRADE, INDEX], None)
    assert called == ["on_index"]
    called.clear()
    with pytest.raises(BotFailure) as failure:
        dispatch(bot, ctx, [TRADE, INDEX], 0)
    assert failure.value.cause == "budget" and failure.value.callback == "on_trade"
    assert called[0] == "on_trade" and "on_index" not in called


def test_a_delivery_whose_callbacks_are_all_skipped_builds_no_account_snapshot():
    snapshots: list[int] = []

    def account() -> AccountView:
        snapshots.append(1)
        return ACCOUNT

    bot = IndexOnly()
    ctx = _context()
    driver = LocalDriver(bot, ctx, DEFAULT_LINES)
    assert driver.deliver(5, [TRADE, ORDER, BOOK], account) == ([], [])
    assert snapshots == []  # nothing ran, so nothing could ask for the account
    assert ctx.book("H100-PERP") == BOOK[1]
    driver.deliver(6, [TRADE, INDEX, INDEX], account)
    assert snapshots == [1]  # made once, just before the first callback that runs
    assert ctx.now == 6 and bot.seen == [(101, 1_000), (101, 1_000)]
