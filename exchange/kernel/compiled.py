"""The compiled exchange kernel: :class:`CompiledExchange`, the engine sessions run by default.

Its order path (submit, cancel, amend, cancel-all, deposit, withdraw: validation, checks,
matching, fills, fees, events) runs in Cython (``exchange.kernel._kernel``), and so do a
perpetual's marks at an index print and its funding (``exchange.kernel._mark``: the impact
walk, the damped mark, the ``MarkPrice`` event and the per-mark maintenance check where no
holder is liquidated; the premium, rate, accrual and payments of a funding interval);
everything else -- the other timers (swap marks, premiums, margin cycles), liquidations,
defaults and bilateral clearing -- is the reference engine's
(:class:`exchange.kernel.engine.Exchange`), which it subclasses. The two are held
byte-identical by differential tests (tests/exchange/kernel/test_engine_differential.py,
test_mark_compiled.py), as ``ReferenceBook`` and ``OrderBook`` are for the book (issue #20).

The commonest refusals of a command that parses -- an unknown or defaulted account, an order
id that is not the account's resting order, an unknown or expired instrument, a price outside
the range, a market order with a time in force, a post-only order that is not gtc, an order
under a collateral call that does not reduce the position, a limit, a withdrawal past the cash
or a deposit past the ledger's bound -- are compiled too: one ``CommandRejected``, the
reference's reason word for word. A command it cannot prove -- one that does not parse, and
the rare cases it leaves to the reference (a deposit that reviews a call or of a defaulted
account, a swap under bilateral clearing, an order past a limit the reference lets through, a
value past the bounds it computes in) -- runs through ``Exchange.handle`` unchanged: every
check runs before a command's first event, so handing it over changes nothing and gives the
reference's exact events (``exchange/kernel/_kernel.pyx``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exchange.core.events import Event
from exchange.kernel import _kernel, _mark, _views
from exchange.kernel.engine import Exchange

#: The command mapping a `flow` generator row stands for (what :meth:`CompiledExchange.
#: handle_row` runs, and the flow driver sends the reference engine)
row_command = _kernel.row_command


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

    #: ``handle`` of the command a `flow` generator row stands for
    #: (``exchange.kernel._kernel.row_command``), taken as the row's values -- account name,
    #: instrument, op (0 submit, 1 cancel, 2 amend), order id, price (ticks), qty (lots),
    #: side, order type, time in force, post-only -- without a mapping to build and parse; a
    #: row it cannot prove takes the mapping's path (``exchange.kernel._kernel.handle_row``)
    handle_row = _kernel.handle_row

    #: ``Exchange.publish_index`` and ``Exchange.mark``'s contracts (same events and state
    #: changes), compiled for perpetuals: the impact walk, the damped mark, the ``MarkPrice``
    #: event and the maintenance check's proof that no holder is liquidated, in one step per
    #: index print; swaps, CDS and whatever it does not prove run the reference's code
    #: (``exchange.kernel._mark``)
    publish_index = _mark.publish_index
    mark = _mark.mark

    #: ``Exchange.fund``'s contract, compiled the same way: the premium, the rate and the
    #: accrual as exact fractions, ``FundingRate`` and each holder's ``FundingPaid``
    #: (``exchange.kernel._mark.fund``)
    fund = _mark.fund

    #: the daily margin cycle's grid and credit standing, compiled (``exchange.kernel._mark.
    #: initial_margin`` / ``credit_standing``: the same results, or None where they decline):
    #: ``MarginConfig.requirements`` and ``credit_standing`` ask them; the reference has none
    initial_margin_twin = staticmethod(_mark.initial_margin)
    credit_standing_twin = staticmethod(_mark.credit_standing)

    #: ``Exchange.account_view``'s contract (cash, non-zero positions by name, resting orders
    #: oldest entry first), with the account's orders found in the C books' levels and merged
    #: across books in C: a tuple only for each order listed (``exchange.kernel._views``)
    account_view = _views.account_view
