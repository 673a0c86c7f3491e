"""The per-callback budget: a bot that loops forever is stopped, deterministically.

Wall-clock timeouts would make a session's log depend on the machine's speed, so the budget is
counted in executed Python lines instead: while a callback runs, a trace function
(``sys.settrace``) counts the ``line`` events of every Python frame it runs — the bot's own code
and any pure-Python code it calls — and raises :class:`BudgetExceeded` in the bot's frame once
the count passes the budget. The same code on the same inputs executes the same lines, so a
budget overrun happens at the same point on every machine. Time spent inside C code (a numpy
call) is not counted; one C call cannot loop forever on its own.

:class:`BudgetExceeded` derives from ``BaseException`` so that ``except Exception`` in a bot does
not swallow it; a bot that catches ``BaseException`` and keeps looping defeats the budget (the
trace function is removed once it has raised), which is documented as unsupported.

Tracing costs time: a traced callback runs several times slower than an untraced one. A trusted
bot can opt out with ``budget_lines=None`` in its scenario entry.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: Default budget per callback, in executed Python lines.
DEFAULT_LINES = 1_000_000


class BudgetExceeded(BaseException):
    """A callback executed more lines than its budget."""


def run_within(lines: int | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)``; raise :class:`BudgetExceeded` inside it after ``lines`` lines."""
    if lines is None:
        return fn(*args)
    left = lines

    def count(frame, event, arg):
        nonlocal left
        if event == "line":
            left -= 1
            if left < 0:
                raise BudgetExceeded(f"callback exceeded its budget of {lines:,} lines")
        return count

    previous = sys.gettrace()
    sys.settrace(count)
    try:
        return fn(*args)
    finally:
        sys.settrace(previous)
