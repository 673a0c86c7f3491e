"""The compiled clock (``exchange.core._clock.Simulator``) against its Python reference
(``exchange.core.clock.Simulator``): the same actions fire in the same order at the same times,
with the same clock, queue length and errors, whatever is scheduled (issue #20, point 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core import _clock, clock
from exchange.core.clock import CLEARING, MARKET, OBSERVER, PARTICIPANT

CLOCKS = {"python": clock.Simulator, "compiled": _clock.Simulator}
PRIORITIES = (MARKET, PARTICIPANT, CLEARING, OBSERVER)


class Boom(Exception):
    """What a raising action raises."""


@dataclass
class Node:
    """One scheduled action: when it fires it records itself, schedules its children
    (``delay`` ns after the clock, each with its priority), may run the clock further from
    inside (``nested``, ns ahead) and may raise after that."""

    delay: int
    priority: int
    children: list[Node] = field(default_factory=list)
    nested: int | None = None
    raises: bool = False


def nodes(depth: int = 3):
    """A tree of actions ``depth`` deep: small delays (many equal times), the four
    priorities and a few others, about one action in four running the clock from inside and
    one in ten raising."""
    return st.builds(
        Node,
        delay=st.integers(0, 6),
        priority=st.sampled_from(PRIORITIES) | st.integers(-2, 6),
        children=st.lists(nodes(depth - 1), max_size=3) if depth else st.just([]),
        nested=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 4)),
        raises=st.integers(0, 9).map(lambda k: k == 0),
    )


def play(make, roots: list[Node], untils: list[int], start: int) -> list:
    """Everything observable of a clock running ``roots`` (scheduled at ``start`` + delay) in
    runs up to each of ``untils``: the steps, the actions with the clock they saw, the clock
    and the queue's length after each run, and what each run raised."""
    sim = make(start)
    trace: list = []
    names: dict[int, str] = {}

    def name(node: Node, path: str) -> str:
        names[id(node)] = path
        for k, child in enumerate(node.children):
            name(child, f"{path}.{k}")
        return path

    def fire(node: Node) -> None:
        trace.append(("fire", names[id(node)], sim.now, len(sim)))
        for child in node.children:
            sim.schedule(sim.now + child.delay, fire, child, priority=child.priority)
        if node.nested is not None:
            sim.run(sim.now + node.nested, on_step=on_step)
            trace.append(("nested", names[id(node)], sim.now, len(sim)))
        if node.raises:
            raise Boom(names[id(node)])

    def on_step(t: int) -> None:
        trace.append(("step", t, sim.now))

    for k, root in enumerate(roots):
        name(root, str(k))
        sim.schedule(start + root.delay, fire, root, priority=root.priority)
    for until in untils:
        try:
            sim.run(until, on_step=on_step)
            trace.append(("ran", until, sim.now, len(sim)))
        except Boom as exc:
            trace.append(("raised", str(exc), sim.now, len(sim)))
    return trace


#: Deterministic and cheap (about 1.2 s: CI's budget); 60 examples catch a clock that breaks
#: ties last-in-first-out, ignores priorities, calls ``on_step`` after the action or moves the
#: clock to ``until`` when an action raises.
DIFFERENTIAL = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@DIFFERENTIAL
@given(
    roots=st.lists(nodes(), min_size=1, max_size=8),
    untils=st.lists(st.integers(-2, 30), min_size=1, max_size=6),
    start=st.integers(0, 3),
)
def test_compiled_clock_fires_what_the_python_clock_fires_in_its_order(roots, untils, start):
    """Random schedules (equal times, every priority, actions that schedule more, run the
    clock from inside and raise; runs in several steps, some before the clock): the compiled
    clock's steps, actions, clock and queue length are the Python clock's, step by step."""
    expected = play(CLOCKS["python"], roots, untils, start)
    got = play(CLOCKS["compiled"], roots, untils, start)
    assert got == expected


@pytest.mark.parametrize("kind", list(CLOCKS))
def test_equal_keys_fire_in_the_order_they_were_scheduled(kind):
    """At one time and priority the order of scheduling decides; a lower priority goes
    first whatever the order of scheduling, and an earlier time before any priority."""
    sim = CLOCKS[kind]()
    fired = []
    for k in range(200):  # past the heap's first growth
        sim.schedule(10 + k % 3, fired.append, k, priority=PRIORITIES[(k * 7) % 4])
    sim.run(100)
    expected = sorted(range(200), key=lambda k: (10 + k % 3, PRIORITIES[(k * 7) % 4], k))
    assert fired == expected


@pytest.mark.parametrize("kind", list(CLOCKS))
def test_scheduling_before_the_clock_is_the_same_error(kind):
    sim = CLOCKS[kind](5)
    sim.run(40)
    with pytest.raises(ValueError, match="cannot schedule at 39 ns: the clock is already at 40 ns"):
        sim.schedule(39, print)
    sim.schedule(40, print)  # at the clock is allowed
    assert len(sim) == 1


def test_a_raising_action_leaves_both_clocks_alike():
    """The action's entry is gone, the clock is at its time (not at ``until``), the rest of
    the queue stays and the next run carries on from there."""
    seen = {}
    for kind, make in CLOCKS.items():
        sim = make()
        fired = []

        def boom():
            raise Boom("at 20")

        sim.schedule(10, fired.append, "a")
        sim.schedule(20, boom)
        sim.schedule(20, fired.append, "b")
        sim.schedule(30, fired.append, "c")
        with pytest.raises(Boom):
            sim.run(100)
        after_raise = (sim.now, len(sim), list(fired))
        sim.run(100)
        seen[kind] = (after_raise, sim.now, len(sim), fired)
    assert seen["compiled"] == seen["python"] == (((20, 2, ["a"])), 100, 0, ["a", "b", "c"])


def test_numpy_integer_times_fire_as_ints_on_both_clocks():
    """A time given as a numpy integer fires at the same place as the same int."""
    orders = {}
    for kind, make in CLOCKS.items():
        sim = make()
        fired = []
        sim.schedule(np.int64(7), fired.append, "numpy")
        sim.schedule(7, fired.append, "int", priority=MARKET)
        sim.schedule(np.uint32(3), fired.append, "early")
        sim.run(10)
        orders[kind] = (fired, sim.now)
    assert orders["compiled"] == orders["python"] == (["early", "int", "numpy"], 10)


def test_a_time_past_int64_is_held_and_never_due_on_both_clocks():
    """A bot's timer past int64 (an int the runner lets through) is kept, counted by
    ``len`` and never fires in a run, as on the Python clock."""
    for make in CLOCKS.values():
        sim = make()
        sim.schedule(2**80, print)
        sim.schedule(5, print)
        sim.run(2**63 - 1)
        assert (len(sim), sim.now) == (1, 2**63 - 1)
