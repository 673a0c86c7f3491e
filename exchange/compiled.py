"""The compiled exchange kernel: :class:`CompiledExchange`, the engine sessions run by default.

Its order path (submit, cancel, amend, cancel-all, deposit, withdraw: validation, checks,
matching, fills, fees, events) runs in Cython (``exchange._kernel``); everything else -- timers
(index prints, marks, funding, premiums, margin cycles), defaults and bilateral clearing -- is
the reference engine's (:class:`exchange.engine.Exchange`), which it subclasses. The two are
held byte-identical by differential tests (tests/exchange/test_engine_differential.py), as
``ReferenceBook`` and ``OrderBook`` are for the book (issue #20).

A command the compiled path cannot prove valid -- every rejection among them, and the rare
cases it leaves to the reference (a submit under a collateral call, a deposit that reviews a
call, a swap under bilateral clearing, a value past the bounds it computes in) -- runs through
``Exchange.handle`` unchanged: every check runs before a command's first event, so handing it
over changes nothing and gives the reference's exact events (``exchange/_kernel.pyx``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exchange import _kernel
from exchange.engine import Exchange
from exchange.events import Event


class CompiledExchange(Exchange):
    """The deterministic exchange with its order path compiled (see the module docstring).

    Args:
        sink: called with every event, in sequence order (a recorder's ``append``).
    """

    def __init__(self, sink: Callable[[Event], Any]) -> None:
        super().__init__(sink)
        # the compiled path's per-engine state: the listings' typed values, and whether this
        # engine's order-path methods are still the reference's
        self._kernel = _kernel.Kernel()

    #: ``Exchange.handle``'s contract (same events, state changes and ``Result``), run by the
    #: compiled function itself, bound as the method: no Python frame in between
    handle = _kernel.handle
