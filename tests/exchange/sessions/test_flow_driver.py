"""The compiled `flow` driver and run step (``exchange.sessions._flow``) against the Python
driver they are held to (``exchange.sessions.scenarios._FlowDriver``): the same session gives
the same log, byte for byte, whichever drives it (issue #20, point 1)."""

from __future__ import annotations

import pytest
from exchange.sessions._flow import RunStep

from exchange.core import _clock, clock
from exchange.kernel import engines
from exchange.kernel.compiled import CompiledExchange
from exchange.sessions import session
from exchange.sessions.scenarios import _FlowDriver
from exchange.store.event_store import EventStore

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
        seen.append((priority, engine.t, engine.seq, accounts, engine.pools["fees"]))

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
