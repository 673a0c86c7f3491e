"""``Exchange.sorted_accounts``: the accounts in name order, kept from one call to the next
(every mark and cycle walks them) and rebuilt when an account is opened, on both engines."""

import pytest

from exchange.kernel.engines import ENGINES


@pytest.fixture(params=sorted(ENGINES))
def engine(request):
    return ENGINES[request.param]([].append)


def names(accounts):
    return [a.name for a in accounts]


def test_an_account_opened_after_a_walk_is_in_every_later_walk_in_name_order(engine):
    for name in ("m", "c"):
        engine.open_account(name)
    assert names(engine.sorted_accounts()) == ["c", "m"]
    assert names(engine._sorted_accounts()) == ["c", "m"]  # the walk the engine's steps take
    engine.open_account("a")  # sorts first: a kept order would leave it out or misplace it
    assert names(engine.sorted_accounts()) == ["a", "c", "m"]
    assert names(engine._sorted_accounts()) == ["a", "c", "m"]
    engine.open_account("z")
    assert names(engine._sorted_accounts()) == ["a", "c", "m", "z"]
    assert [a is engine.accounts[a.name] for a in engine.sorted_accounts()] == [True] * 4


def test_a_walk_under_way_is_not_changed_by_an_account_opened_during_it(engine):
    for name in ("b", "d"):
        engine.open_account(name)
    walked = []
    for account in engine._sorted_accounts():
        walked.append(account.name)
        if account.name == "b":
            engine.open_account("c")  # joins the next walk, not this one
    assert walked == ["b", "d"]
    assert names(engine._sorted_accounts()) == ["b", "c", "d"]


def test_a_caller_changing_its_list_does_not_change_the_engine_order(engine):
    for name in ("b", "a"):
        engine.open_account(name)
    mine = engine.sorted_accounts()
    mine.reverse()
    mine.pop()
    assert names(engine.sorted_accounts()) == ["a", "b"]
    assert names(engine._sorted_accounts()) == ["a", "b"]
