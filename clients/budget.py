"""The per-callback budget: a bot that loops forever is stopped, deterministically.

Wall-clock timeouts would make a session's log depend on the machine's speed, so the budget is
counted in executed Python code instead: while a callback runs, a trace function
(``sys.settrace``) counts the ``line`` events of every Python frame it runs — the bot's own code
and any pure-Python code it calls — and raises :class:`BudgetExceeded` in the bot's frame once
the count passes the budget. The same code on the same inputs executes the same lines, so a
budget overrun happens at the same point on every machine.

**What is counted.** Python emits a ``line`` event for every line started and for every backward
jump (a loop's next turn), with one exception: a jump to itself, the one-instruction loop that
``while True: pass`` compiles to, emits none. A function whose code holds such a jump (found
once per code object, when its frame starts) is traced by instruction (``f_trace_opcodes``) and
each of its instructions counts as one. So the budget is *executed lines, plus every instruction
of a function that can spin on one*; for ordinary code that is the line count, as before, and no
line can run forever unseen. Time inside C code (a numpy call, ``deque(itertools.count(),
maxlen=0)``) is not counted: one C call that never returns is beyond any trace function, and
beyond this budget (run untrusted code behind the socket gateway, whose wall-clock step timeout
covers it).

**Escapes that fail the bot instead.** :class:`BudgetExceeded` derives from ``BaseException``
so that ``except Exception`` in a bot does not swallow it; a callback that catches it and
returns still fails (``budget``), since the overrun is remembered. A callback that calls
``sys.settrace`` (to remove the counter, or to install a tracer of its own) does not reach the
interpreter: while a budgeted callback runs, ``sys.settrace`` called from its thread is
refused (ignored, so the counting goes on) and the callback fails with ``budget`` when it
returns; and if the counter is no longer the installed trace function when the callback returns
(removed some other way), the callback fails the same way.

**What remains unsupported.** Python in-process is not a sandbox: a bot that catches
``BaseException`` and keeps looping after its overrun (the interpreter removes a trace function
that raised), one that clears its own frame's ``f_trace``, or one that reaches the real
``sys.settrace`` some other way (a reference taken before the session, ``ctypes``) defeats the
budget. Untrusted code belongs in its own process behind the socket gateway.

Tracing costs time: a traced callback runs about twice as slow as an untraced one
(``benches/test_bench_bots.py``). A trusted bot can opt out with ``budget_lines=None`` (``0`` in
its scenario entry).
"""

from __future__ import annotations

import dis
import sys
from collections.abc import Callable
from types import CodeType
from typing import Any

#: Default budget per callback, in executed Python lines (see the module docstring for the
#: instructions of a function that can spin on one, which count one each).
DEFAULT_LINES = 1_000_000


class BudgetExceeded(BaseException):
    """A callback executed more than its budget, or tampered with the budget's tracing."""


#: The interpreter's own ``sys.settrace``, which the guard below delegates to.
_SETTRACE = sys.settrace
#: Budget counters (trace functions) whose callback called ``sys.settrace``.
_REFUSED: set[Callable[..., Any]] = set()
#: Code object -> whether it holds a jump to itself (cached: found once per code object).
_SPINS: dict[CodeType, bool] = {}
_SPINS_MAX = 65_536
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)


def _guarded_settrace(function: Any) -> None:
    """``sys.settrace`` while budgets are in use: refused inside a budgeted callback (the
    thread's trace function is a budget counter; recorded, so the callback fails when it
    returns), the interpreter's own everywhere else."""
    tracer = sys.gettrace()
    if getattr(tracer, "__code__", None) is _COUNTER_CODE:
        _REFUSED.add(tracer)
        return
    _SETTRACE(function)


def _spins(code: CodeType) -> bool:
    """Whether ``code`` holds a jump to itself: a loop of one instruction, which emits no
    ``line`` events."""
    found = _SPINS.get(code)
    if found is None:
        found = any(i.opcode in _JUMPS and i.argval == i.offset for i in dis.get_instructions(code))
        if len(_SPINS) >= _SPINS_MAX:
            _SPINS.clear()  # code made on the fly (exec) must not grow this forever
        _SPINS[code] = found
    return found


def run_within(lines: int | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)``; raise :class:`BudgetExceeded` inside it after ``lines`` lines (see
    the module docstring for what counts), or after it returns if it swallowed the overrun or
    tampered with the tracing."""
    if lines is None:
        return fn(*args)
    left = lines
    exceeded = False

    def count(frame, event, arg):
        nonlocal left, exceeded
        if event == "line":
            left -= 1
            if left < 0:
                exceeded = True
                raise BudgetExceeded(f"callback exceeded its budget of {lines:,} lines")
        elif event == "call":
            spins = _SPINS.get(frame.f_code)
            if spins is None:
                spins = _spins(frame.f_code)
            if spins:
                frame.f_trace_opcodes = True
        elif event == "opcode":
            left -= 1
            if left < 0:
                exceeded = True
                raise BudgetExceeded(f"callback exceeded its budget of {lines:,} lines")
        return count

    if sys.settrace is not _guarded_settrace:
        sys.settrace = _guarded_settrace
    previous = sys.gettrace()
    _SETTRACE(count)
    try:
        result = fn(*args)
        installed = sys.gettrace()
    except BudgetExceeded:
        raise
    except BaseException:
        if not exceeded:
            raise
        result = installed = None  # it caught its overrun and raised something else
    finally:
        _SETTRACE(previous)
        refused = bool(_REFUSED) and count in _REFUSED
        if refused:
            _REFUSED.discard(count)
    if exceeded:
        raise BudgetExceeded(
            f"callback exceeded its budget of {lines:,} lines (and caught the overrun)"
        )
    if refused:
        raise BudgetExceeded("callback called sys.settrace, which a budgeted bot may not")
    if installed is not count:
        raise BudgetExceeded("callback removed the budget's trace function")
    return result


#: The code of every budget counter (``count`` above), by which the guard knows one.
_COUNTER_CODE = next(
    c for c in run_within.__code__.co_consts if isinstance(c, CodeType) and c.co_name == "count"
)
