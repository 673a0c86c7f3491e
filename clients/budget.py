"""The per-callback budget: a bot that loops forever is stopped, deterministically.

Wall-clock timeouts would make a session's log depend on the machine's speed, so the budget is
counted in executed Python code instead: while a callback runs, a trace function counts the
work of every Python frame it runs — the bot's own code and any pure-Python code it calls — and
raises :class:`BudgetExceeded` in the bot's code once the count passes the budget. The same
code on the same inputs does the same work, so a budget overrun happens at the same point on
every machine.

**Two counters, one count.** The counter that runs by default (:data:`COUNTER`
``"compiled"``) is :mod:`clients._budget`, a C trace function (``PyEval_SetTrace``) written
against CPython 3.11. The reference is the Python counter in :func:`run_within` (a
``sys.settrace`` function, ``COUNTER = "python"`` or ``run_within(..., counter="python")``;
the default on other Python versions). The compiled one mirrors, event for event, what the
interpreter's trampoline does around the Python one — which events reach it, the frame's
``f_trace``, the recursion level the Python function's call takes, uninstalling itself when it
fails — so both spend the same units at every event, stop a callback at the same point with
the same error, and a session's log is byte-identical whichever runs
(``tests/clients/test_bot_budget.py`` holds them equal, callback by callback and session by
session).

**What is counted** (the unit of ``budget_lines``). Each Python call (a frame started, or a
generator resumed) counts one. A function whose code holds no backward jump (no loop) runs each
of its instructions at most once per call, so it cannot run long without calling something: its
lines are not traced, and its call is all it costs. A function whose code holds a backward jump
(a loop; found once per code object with :mod:`dis`, cached) is traced by line: each ``line``
event counts one too (Python emits one for every line started and every loop turn). A jump to
itself, the one-instruction loop ``while True: pass`` compiles to, emits no ``line`` event, so a
function holding one is traced by instruction (``f_trace_opcodes``) and each instruction counts
one. So the budget is *calls, plus executed lines in functions that loop, plus instructions of
functions that can spin on one*: no loop and no recursion can run forever unseen (recursion is
bounded by the call count). A budget of N lets a callback make N calls of loop-free functions,
or run about N lines in functions that loop (a one-line loop body: one or two a turn). A
loop-free call costs one instead of its lines and a looping call one more than its lines, so
ordinary code costs at most about what it did in lines and :data:`DEFAULT_LINES` keeps its
meaning: a margin far above what a bot's callback does, small enough to stop a runaway in well
under a second. Time inside C code (a numpy call,
``deque(itertools.count(), maxlen=0)``) is not counted, except the Python functions C calls
back (``map(f, ...)``: one each): one C call that never returns is beyond any trace function,
and beyond this budget (run untrusted code behind the socket gateway, whose wall-clock step
timeout covers it).

**Compiled stand-ins.** Code compiled in place of Python functions that a callback calls (the
compiled :class:`~clients._context.Context`, whose reference's methods are Python) makes no
frames for a counter to see, so it charges the units those functions' calls would have cost
itself (``clients._budget.charge``), and runs the Python functions instead wherever it could
differ: near an overrun, near the recursion limit, under the Python counter or another trace
function. The counts, the overrun points and the logs stay those of the Python functions.

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
that raised), one that clears its own frame's ``f_trace``, one that reaches the real
``sys.settrace`` some other way (a reference taken before the session, ``ctypes``), one that
opens a budget of its own (:func:`run_within` with a larger one: the callback's counter waits
meanwhile), or one that runs a hand-made code object looping through its exception table with
no backward jump instruction (the compiler makes no such loop) defeats the budget, whichever
counter counts it. Untrusted code belongs in its own process behind the socket gateway.

Tracing costs time. In ``benches/test_bench_bots.py`` (CPU time, loaded machine) the compiled
counter costs about +1-2 us a callback and the Python one +4-5 us (+4.2 us of wall time before
calls were counted instead of every line); what is left of the compiled counter's cost is
mostly CPython's own slower dispatch of every instruction while any trace function is
installed, and the frame objects it makes for the trace events. A trusted bot can opt out with
``budget_lines=None`` (``0`` in its scenario entry).
"""

from __future__ import annotations

import dis
import sys
from collections.abc import Callable
from types import CodeType
from typing import Any

from clients import _budget
from clients._budget import Counter as _Counter

#: Default budget per callback: calls, plus executed lines in functions that loop, plus
#: instructions of functions that can spin on one (see the module docstring).
DEFAULT_LINES = 1_000_000


class BudgetExceeded(BaseException):
    """A callback executed more than its budget, or tampered with the budget's tracing."""


#: The interpreter's own ``sys.settrace``, which the guard below delegates to.
_SETTRACE = sys.settrace
#: Budget counters (trace functions) whose callback called ``sys.settrace``.
_REFUSED: set[Callable[..., Any]] = set()
#: Code object -> how it is traced: :data:`_FREE` (no backward jump: the ``call`` counts, no
#: local tracing), :data:`_LOOPS` (a backward jump: its ``line`` events count too) or
#: :data:`_SPINS` (a jump to itself: its instructions count too). Found once per code object.
_KINDS: dict[CodeType, int] = {}
_KINDS_MAX = 65_536
_FREE, _LOOPS, _SPINS = 0, 1, 2
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
#: The counter :func:`run_within` uses unless told: ``"compiled"`` (:mod:`clients._budget`, a C
#: trace function; written against CPython 3.11's frames, so only there) or ``"python"`` (the
#: reference, a ``sys.settrace`` function). The same units, the same failures, the same logs.
COUNTER = "compiled" if sys.version_info[:2] == (3, 11) else "python"


def _guarded_settrace(function: Any) -> None:
    """``sys.settrace`` while budgets are in use: refused inside a budgeted callback (the
    thread's trace function is a budget counter; recorded, so the callback fails when it
    returns), the interpreter's own everywhere else."""
    tracer = sys.gettrace()
    if type(tracer) is _Counter or getattr(tracer, "__code__", None) is _COUNTER_CODE:
        _REFUSED.add(tracer)
        return
    _SETTRACE(function)


def _kind(code: CodeType) -> int:
    """How ``code`` must be traced: :data:`_SPINS` if it holds a jump to itself (a loop of one
    instruction, which emits no ``line`` events), else :data:`_LOOPS` if it holds any backward
    jump (a loop: the only way compiled code returns to an earlier instruction), else
    :data:`_FREE` (it runs each instruction at most once per call)."""
    kind = _KINDS.get(code)
    if kind is None:
        kind = _FREE
        for i in dis.get_instructions(code):
            if i.opcode in _JUMPS and i.argval <= i.offset:
                if i.argval == i.offset:
                    kind = _SPINS
                    break
                kind = _LOOPS
        if len(_KINDS) >= _KINDS_MAX:
            _KINDS.clear()  # code made on the fly (exec) must not grow this forever
        _KINDS[code] = kind
    return kind


def _overrun(lines: int) -> BudgetExceeded:
    return BudgetExceeded(f"callback exceeded its budget of {lines:,} lines")


def run_within(
    lines: int | None, fn: Callable[..., Any], *args: Any, counter: str | None = None
) -> Any:
    """Call ``fn(*args)``; raise :class:`BudgetExceeded` inside it once it has spent more than
    ``lines`` units (calls, plus lines of functions that loop, plus instructions of functions
    that can spin on one: see the module docstring), or after it returns if it swallowed the
    overrun or tampered with the tracing. ``counter``: ``"compiled"`` or ``"python"`` (the
    reference); default :data:`COUNTER`. Both count the same units and fail the same way."""
    if lines is None:
        return fn(*args)
    if (counter or COUNTER) == "python":
        # the reference counter, inline: both counters run ``fn`` at the same stack depth
        left = lines  # below zero once the budget is overrun (it only decreases)

        def count(frame, event, arg):
            # Global trace function (``call``) and local one of the frames that loop. One closure,
            # and no "exceeded" flag beside ``left``: each costs time on every callback.
            nonlocal left
            if event == "call":
                left -= 1
                if left < 0:
                    raise _overrun(lines)
                kind = _KINDS.get(frame.f_code)
                if kind is None:
                    kind = _kind(frame.f_code)
                if kind == _FREE:
                    return None  # no local tracing: no Python call per line of this frame
                if kind == _SPINS:
                    frame.f_trace_opcodes = True
                return count
            if event == "line" or event == "opcode":
                left -= 1
                if left < 0:
                    raise _overrun(lines)
            return None  # a local tracer returning None stays installed

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
            if left >= 0:
                raise
            result = installed = None  # it caught its overrun and raised something else
        finally:
            _SETTRACE(previous)
            refused = bool(_REFUSED) and count in _REFUSED
            if refused:
                _REFUSED.discard(count)
        if left < 0:
            raise BudgetExceeded(
                f"callback exceeded its budget of {lines:,} lines (and caught the overrun)"
            )
        if refused:
            raise BudgetExceeded("callback called sys.settrace, which a budgeted bot may not")
        if installed is not count:
            raise BudgetExceeded("callback removed the budget's trace function")
        return result
    tracer = _Counter(lines)
    if sys.settrace is not _guarded_settrace:
        sys.settrace = _guarded_settrace
    tracer.start()
    try:
        result = fn(*args)
    except BudgetExceeded:
        raise
    except BaseException:
        if tracer.left >= 0:
            raise
        result = None  # it caught its overrun and raised something else
    finally:
        installed = tracer.stop()
        refused = bool(_REFUSED) and tracer in _REFUSED
        if refused:
            _REFUSED.discard(tracer)
    if tracer.left < 0:
        raise BudgetExceeded(
            f"callback exceeded its budget of {lines:,} lines (and caught the overrun)"
        )
    if refused:
        raise BudgetExceeded("callback called sys.settrace, which a budgeted bot may not")
    if not installed:
        raise BudgetExceeded("callback removed the budget's trace function")
    return result


#: The code of every Python budget counter (``count`` above), by which the guard knows one.
_COUNTER_CODE = next(
    c for c in run_within.__code__.co_consts if isinstance(c, CodeType) and c.co_name == "count"
)
_budget.bind(_KINDS, _kind, _overrun)
