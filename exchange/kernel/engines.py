"""Which exchange kernel runs a session: the compiled one (the default) or the reference.

The engine's name selects the whole kernel: the engine, the simulated clock and (for `flow`)
the driver. ``compiled`` is :class:`exchange.kernel.compiled.CompiledExchange` on the compiled
clock (``exchange.core._clock.Simulator``; the `flow` scenario then drives it with
``exchange.sessions._flow.FlowDriver``); ``reference`` is the plain-Python
:class:`exchange.kernel.engine.Exchange` on the Python clock
(:class:`exchange.core.clock.Simulator`) with the Python driver, which the compiled ones are
held byte-identical to (issue #20, points 1 and 2). Both give the same event log and state
hash for the same scenario and seed, so the engine is not part of a session's stored settings:
a log recorded with one verifies and resumes with the other.
"""

from __future__ import annotations

from exchange.core import _clock, clock
from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import Exchange

#: The engines by name, as ``gpuex run --engine`` takes them.
ENGINES: dict[str, type[Exchange]] = {"compiled": CompiledExchange, "reference": Exchange}
#: The simulated clock each engine runs on, by the same names.
CLOCKS: dict[str, type] = {"compiled": _clock.Simulator, "reference": clock.Simulator}
DEFAULT_ENGINE = "compiled"
#: The engines whose recorded runs keep their lines in the stored form as they are written
#: (``LineBatch.store_compact``: the run compacts each line while it is in its cache, the
#: journaller only folds and commits; decision 106). The reference's run is the slower of its
#: two processes by far, so its journaller compacts, as before: each engine records the way
#: that is fastest for it, and both give the same file.
STORED_LINES = frozenset({"compiled"})


def engine_class(name: str) -> type[Exchange]:
    """The engine class called ``name`` (``compiled`` or ``reference``); ValueError otherwise."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}") from None


def clock_class(name: str) -> type:
    """The clock class the engine called ``name`` runs on (``exchange.core._clock.Simulator``
    for ``compiled``, ``exchange.core.clock.Simulator`` for ``reference``); ValueError for an
    unknown name, as :func:`engine_class`."""
    engine_class(name)
    return CLOCKS[name]
