"""The glut on the exchange, end to end (needs the wiring in clients/scenario.py and
exchange/sessions/market.py): a session with an economy and a rental index publishes the index below
the same session's without the economy from the first pull-back on, by the economy's factor;
the borrowed-time analysis of its log has the index's series."""

from __future__ import annotations

import numpy as np

from clients.scenario import load
from exchange.core import events as ev
from exchange.core.clock import Simulator
from exchange.kernel.engine import Exchange
from exchange.postmortem import borrowed as bt
from exchange.sessions import session

SCENARIO = "second-derivative"
INDEX = {"calibration": "H100-RENTAL", "interval_ns": "1d"}


def _prints(scenario, seed=7):
    events: list[ev.Event] = []
    engine = Exchange(events.append)
    engine.start(scenario.name, seed, {})
    scenario.setup(engine)
    sim = Simulator()
    scenario.schedule_market(engine, sim, seed)
    sim.run(until=scenario.end_ns, on_step=engine.advance)
    prints = [e for e in events if e.kind == ev.INDEX_PUBLISHED]
    months = [e for e in events if e.kind == ev.ECONOMY_MONTH]
    pulled = next((e for e in events if e.kind == ev.COMMITMENT_PULLED), None)
    return prints, months, pulled


def test_a_session_with_the_economy_prints_its_rental_index_below_the_one_without_by_the_factor():
    with_economy = load(SCENARIO, {"indices": [INDEX], "cds": [], "bots": []})
    without = with_economy.model_copy(update={"economy": None})
    fed, months, pulled = _prints(with_economy)
    plain, none, _ = _prints(without)
    assert none == [] and months and pulled is not None
    assert [e.t for e in fed] == [e.t for e in plain]
    t = np.array([e.t for e in fed])
    a = np.array([e.price for e in fed], dtype=np.float64)
    b = np.array([e.price for e in plain], dtype=np.float64)
    before = t < pulled.t
    np.testing.assert_array_equal(a[before], b[before])
    assert (a[~before] < b[~before]).all()
    month_t = np.array([m.t for m in months])
    price = np.array([m.data["rental_price"] for m in months], dtype=np.float64)
    factor = (price / price[0])[np.searchsorted(month_t, t, side="right") - 1]
    # by the factor, within the two roundings to a tick ($0.001)
    assert (np.abs(a - b * factor) <= 1 + factor).all()


def test_borrowed_time_has_the_exchanges_rental_index_in_a_log_with_the_economy(tmp_path):
    db = tmp_path / "glut.db"
    session.run(SCENARIO, db, overrides={"indices": [INDEX], "cds": [], "bots": []})
    result = bt.from_log(db)
    series = result.get("index:H100-RENTAL")
    assert len(series.values) == 72 and series.periods == tuple(range(72))
