"""``Exchange.publish_index`` marks every listing that refers to the index, in listing order,
including one listed after an earlier print of it (the engine keeps the index -> listings map
between prints and rebuilds it when an instrument is listed), on both engines."""

from datetime import date

import pytest

from exchange.core import events as ev
from exchange.kernel.engines import ENGINES
from tests.markets import START, perp_spec, rvs_spec


@pytest.fixture(params=sorted(ENGINES))
def market(request):
    events = []
    engine = ENGINES[request.param](events.append)
    engine.epoch = START
    engine.start("test", 1, {})
    return engine, events


def marked(events, since):
    return [e.instrument for e in events[since:] if e.kind == ev.MARK_PRICE]


def test_a_listing_added_after_a_print_is_marked_by_the_next_print_in_listing_order(market):
    engine, events = market
    engine.list_instrument(perp_spec(name="B-PERP"))
    engine.publish_index("H100-RENTAL", 2_000)
    assert marked(events, 0) == ["B-PERP"]
    engine.list_instrument(perp_spec(name="A-PERP"))  # listed second: marked second
    engine.list_instrument(rvs_spec(maturity=date(2024, 8, 30)))  # another index
    since = len(events)
    engine.publish_index("H100-RENTAL", 2_100)
    assert marked(events, since) == ["B-PERP", "A-PERP"]
    assert engine.instruments["A-PERP"].mark is not None
    since = len(events)
    engine.publish_index("H100-RESALE", 25_000)
    assert marked(events, since) == ["H100-RVS"]


def test_an_index_nothing_refers_to_marks_nothing_until_a_listing_refers_to_it(market):
    engine, events = market
    engine.publish_index("H100-RESALE", 25_000)
    assert marked(events, 0) == []
    engine.list_instrument(rvs_spec(maturity=date(2024, 8, 30)))
    since = len(events)
    engine.publish_index("H100-RESALE", 25_000)
    assert marked(events, since) == ["H100-RVS"]
