"""The compiled `flow` driver and run step (``exchange.sessions._flow``) against the Python
driver they are held to (``exchange.sessions.scenarios._FlowDriver``): the same session gives
the same log, byte for byte, whichever drives it (issue #20, point 1)."""

from __future__ import annotations

import random

import pytest
from exchange.sessions._flow import FlowDriver, IdMap, RunStep

from exchange.core import _clock, clock
from exchange.kernel import engines
from exchange.kernel.compiled import CompiledExchange
from exchange.sessions import scenarios, session
from exchange.sessions.scenarios import _FlowDriver
from exchange.store.event_store import EventStore
from matching_core import Op

#: Small chunks and frequent cash and malformed messages, so a short session crosses chunk
#: boundaries (the id map pruned, the next chunk loaded) and every path of the driver runs.
OVERRIDES = {"messages": 2_500, "traders": 4, "cash_every": 37, "malformed_every": 29}


def _record(path, seed: int, engine: str) -> tuple[str, str, int]:
    """The session's chain digest and state hash, and how many messages the Python driver's
    ``step`` ran."""
    summary = session.run("flow", path, seed=seed, overrides=OVERRIDES, engine=engine)
    with EventStore.open(path, mode="r") as store:
        return store.digest(), summary.state_hash, summary.events


@pytest.mark.parametrize("seed", [3, 11])
def test_the_compiled_driver_records_the_python_drivers_log(tmp_path, monkeypatch, seed):
    """Compiled engine on the compiled clock and driver; the same engine on the Python clock,
    so driven by the Python ``_FlowDriver``; the reference engine: one chain digest."""
    monkeypatch.setattr(_FlowDriver, "CHUNK", 300)
    steps = []
    python_step = _FlowDriver.step
    monkeypatch.setattr(
        _FlowDriver, "step", lambda self, i: (steps.append(i), python_step(self, i))
    )

    compiled = _record(tmp_path / "compiled.db", seed, "compiled")
    assert steps == []  # the compiled driver ran every message
    with monkeypatch.context() as m:
        m.setitem(engines.CLOCKS, "compiled", clock.Simulator)
        python_driver = _record(tmp_path / "python-driver.db", seed, "compiled")
    assert steps == list(range(OVERRIDES["messages"]))
    steps.clear()
    reference = _record(tmp_path / "reference.db", seed, "reference")
    assert len(steps) == OVERRIDES["messages"]

    assert compiled == python_driver == reference


def test_each_engine_runs_on_its_own_clock():
    assert engines.clock_class("compiled") is _clock.Simulator
    assert engines.clock_class("reference") is clock.Simulator
    with pytest.raises(ValueError, match="unknown engine 'fast'"):
        engines.clock_class("fast")


@pytest.mark.parametrize("direct", [True, False])
def test_the_run_step_moves_the_engines_clock_and_drains_full_batches(direct):
    """Before each action the engine's clock is at the action's time (set directly or by
    ``advance``), and the batches are drained once ``batch_size`` events are pending."""
    engine = CompiledExchange(lambda event: None)
    pending: list = []
    drains = []
    seen = []

    def drain():
        drains.append(len(pending))
        pending.clear()

    def action(t):
        seen.append(engine.t)
        pending.append(t)

    sim = _clock.Simulator()
    for t in (5, 5, 9, 12, 15):
        sim.schedule(t, action, t)
    sim.run(20, on_step=RunStep(engine, pending, 2, drain, direct))
    assert (seen, engine.t) == ([5, 5, 9, 12, 15], 15)
    assert drains == [2, 2]  # before the third action and before the fifth


def test_the_run_step_refuses_a_time_before_the_engines_clock_as_advance_does():
    engine = CompiledExchange(lambda event: None)
    engine.advance(100)
    sim = _clock.Simulator()
    sim.schedule(50, print)
    with pytest.raises(ValueError, match="time runs forward: 50 ns is before 100 ns"):
        sim.run(60, on_step=RunStep(engine, [], 10, print, True))
    assert engine.t == 100


def test_a_burst_of_rows_stops_for_every_other_action_due_and_each_sees_the_ledger_written(
    tmp_path, monkeypatch
):
    """The compiled driver runs its next messages in place while nothing else is due first
    (``Simulator.runs_next``), holding the compiled engine's ledger: timers at the rows'
    own times, before them (``MARKET``) and after them (``CLEARING``, ``OBSERVER``), fire
    in the Python clock's order (one at a row's time and priority, scheduled first, before
    the row) and read every account as the reference engine has it; small batches drain
    (Python) in the middle of bursts."""
    from exchange.core.clock import CLEARING, MARKET, OBSERVER, PARTICIPANT
    from exchange.sessions.scenarios import FlowScenario

    seen: list = []

    def look(engine, priority):
        accounts = {
            name: (a.cash, dict(a.positions), {k: list(v) for k, v in a.open_lots.items()})
            for name, a in engine.accounts.items()
        }
        orders = [(order_id, vars(order)) for order_id, order in engine.orders.items()]
        seen.append((priority, engine.t, engine.seq, accounts, engine.pools["fees"], orders))

    def schedule_market(self, engine, sim, seed):
        # the rows' times are 2i+2..2i+3 ns (interval 2 ns): every t below is some row's
        # one priority a time, in turn (a MARKET timer at a row's time would stop the burst
        # before a PARTICIPANT one at that time could be overtaken)
        for n, t in enumerate(range(2, 2 * 400, 3)):
            priority = (MARKET, PARTICIPANT, CLEARING, OBSERVER)[n % 4]
            sim.schedule(t, look, engine, priority, priority=priority)

    monkeypatch.setattr(FlowScenario, "schedule_market", schedule_market)
    overrides = {"messages": 400, "traders": 3, "interval_ns": 2, "cash_every": 41}
    logs = {}
    for engine in ("compiled", "reference"):
        seen.clear()
        summary = session.run(
            "flow",
            tmp_path / f"{engine}.db",
            seed=5,
            overrides=overrides,
            engine=engine,
            batch_size=16,
        )
        with EventStore.open(tmp_path / f"{engine}.db", mode="r") as store:
            logs[engine] = (store.digest(), summary.state_hash, list(seen))
    assert len(logs["compiled"][2]) == len(range(2, 800, 3))
    assert logs["compiled"] == logs["reference"]


def test_the_id_map_is_the_dict_it_replaces_through_growth_and_pruning():
    """``IdMap`` against the dict the Python driver keeps: puts (new ids in sequence, as the
    generator numbers them, and some replaced), reads of ids it has and lacks (0), and prunes
    to random live sets (``{gen: oid for gen, oid in ids.items() if gen in live}``), over
    tables grown from 16 slots to thousands and shrunk back; given room for a round's new
    ids, the table does not grow in it (given none, every other round, it does)."""
    rng = random.Random(20)
    adds = [rng.randrange(0, 3_000) for _ in range(41)]  # new ids per round
    rooms = [0 if k % 2 else n for k, n in enumerate(adds)]  # (room given for them)
    table = IdMap(rooms[0])
    model: dict[int, int] = {}
    gen = 0
    grown = 0
    for n in range(40):
        capacity = table.capacity
        for _ in range(adds[n]):
            gen += rng.randrange(1, 4)
            table[gen] = model[gen] = rng.randrange(1, 2**62)
            if rng.random() < 0.05:  # (a replaced value)
                key = rng.choice(list(model))
                table[key] = model[key] = rng.randrange(1, 2**62)
        assert rooms[n] < adds[n] or table.capacity == capacity  # (room: no growth)
        grown += table.capacity > capacity
        assert len(table) == len(model)
        assert sorted(table.items()) == sorted(model.items())
        for key in rng.sample(range(1, gen + 2), min(gen + 1, 500)):
            assert table[key] == model.get(key, 0)
        # (a fifth of what it holds, and ids it lacks: rejected adds, as the generator's)
        live = {key for key in model if rng.random() < 0.2}
        live |= set(rng.sample(range(1, gen + 2), 50))
        kept = min(len(live), len(model))  # (at most)
        table.prune(live, rooms[n + 1])
        model = {key: value for key, value in model.items() if key in live}
        assert sorted(table.items()) == sorted(model.items())
        # at most half full, sized for what it can keep and the next round's new ids: the
        # memory follows the live ids and a chunk's adds, not the run's length
        assert 2 * len(model) < table.capacity <= max(16, 4 * (kept + rooms[n + 1]) + 4)
        assert all(table[key] == value for key, value in model.items())
    assert gen > 40_000 and grown > 10  # (the table grew, well past its first slots)
    with pytest.raises(ValueError, match="a generator order id is > 0, not 0"):
        table[0] = 5
    assert table[0] == table[-3] == 0


def test_the_compiled_drivers_id_map_is_the_python_drivers_across_every_chunk(
    tmp_path, monkeypatch
):
    """Chunks of 7 messages: the id map is pruned about 360 times, and many cancels and amends
    name orders added chunks before. At each chunk's load the compiled driver's map holds
    exactly what the Python driver's dict holds (pruned at the last load, then the last
    chunk's adds: no id lost, none kept that is not live, no value changed), the source's own
    dict stays empty, and the logs are one."""
    monkeypatch.setattr(_FlowDriver, "CHUNK", 7)
    maps: dict[str, list] = {"compiled": [], "python": [], "reference": []}
    run = ["compiled"]
    drivers: list = []
    earlier = []  # (the Python driver) cancels and amends of an order from an earlier chunk

    def capture(source):
        drivers.append(FlowDriver(source))
        return drivers[-1]

    monkeypatch.setattr(scenarios, "FlowDriver", capture)
    python_load = _FlowDriver._load

    def load(self, first):
        # each map as the chunk before left it: pruned at that chunk's load, then its adds
        if first and self.typed:
            assert self.ids == {}
            maps["compiled"].append(dict(drivers[-1].ids.items()))
        elif first:
            maps[run[0]].append(dict(self.ids))
        python_load(self, first)

    monkeypatch.setattr(_FlowDriver, "_load", load)
    python_step = _FlowDriver.step

    def step(self, i):
        j = i - self._first
        gen = self._gen_ids[j]
        if self._ops[j] != Op.ADD and gen <= self._first and self.ids.get(gen):
            earlier.append(i)
        python_step(self, i)

    monkeypatch.setattr(_FlowDriver, "step", step)

    compiled = _record(tmp_path / "compiled.db", 5, "compiled")
    assert len(drivers) == 1
    with monkeypatch.context() as m:
        m.setitem(engines.CLOCKS, "compiled", clock.Simulator)
        run[0] = "python"
        python_driver = _record(tmp_path / "python-driver.db", 5, "compiled")
    run[0] = "reference"
    reference = _record(tmp_path / "reference.db", 5, "reference")

    assert compiled == python_driver == reference
    assert len(maps["compiled"]) == len(maps["python"]) == -(-OVERRIDES["messages"] // 7) - 1
    assert maps["compiled"] == maps["python"] == maps["reference"]
    assert sum(map(len, maps["python"])) > 1_000  # (the maps are not trivially empty)
    assert len(earlier) > 200
