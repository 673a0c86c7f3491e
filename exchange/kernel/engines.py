"""Which exchange engine runs a session: the compiled kernel (the default) or the reference.

``compiled`` is :class:`exchange.kernel.compiled.CompiledExchange`; ``reference`` is the
plain-Python
:class:`exchange.kernel.engine.Exchange` it is held byte-identical to (issue #20, point 2). Both
give
the same event log and state hash for the same scenario and seed, so the engine is not part of
a session's stored settings: a log recorded with one verifies and resumes with the other.
"""

from __future__ import annotations

from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import Exchange

#: The engines by name, as ``gpuex run --engine`` takes them.
ENGINES: dict[str, type[Exchange]] = {"compiled": CompiledExchange, "reference": Exchange}
DEFAULT_ENGINE = "compiled"


def engine_class(name: str) -> type[Exchange]:
    """The engine class called ``name`` (``compiled`` or ``reference``); ValueError otherwise."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}") from None
