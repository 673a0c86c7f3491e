"""Helper processes: work a run or a check hands to the machine's other core.

Two parts of the exchange run beside the process that needs them: the journaller, which
records a long run's batches (:mod:`exchange.store.journal`), and the store check of a long
``verify`` (:mod:`exchange.store.check`). Both are ``python -P -m exchange.<room>.<module>
PARENT_PID
...`` started with this process's interpreter and this ``exchange`` package
(``docs/decisions.md`` #20 says why a process with pipes, not a thread or ``multiprocessing``).
This module holds what they share: starting one (:func:`spawn`), the child's side of its pipes
(:func:`child_pipes`), dying with the parent (:func:`die_with`), and passing an exception
back (:func:`error_reply`, :func:`raise_error_reply`).

Messages are pickled tuples framed by :mod:`multiprocessing.connection`; pickle only ever
passes between a process and the helper it started.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Helper(NamedTuple):
    """A started helper process and the parent's ends of its two pipes."""

    proc: subprocess.Popen
    to_child: Connection
    from_child: Connection


def spawn(module: str, *args: str, pass_fds: tuple[int, ...] = ()) -> Helper | None:
    """Start ``python -P -m exchange.<room>.<module> PARENT_PID *args`` with this process's
    interpreter and this ``exchange`` package, its stdin and stdout piped to the returned
    connections (and the descriptors ``pass_fds`` inherited, under the same numbers); None if
    no process can be started here (the caller then does the work itself)."""
    if os.name != "posix":
        return None
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            # -P: not the working directory first on sys.path, so that the package imported
            # is this one (PYTHONPATH), never a folder that happens to be there
            [sys.executable, "-P", "-m", f"exchange.{module}", str(os.getpid()), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=pass_fds,
        )
    except OSError:
        return None
    assert proc.stdin is not None and proc.stdout is not None
    # the Connections own duplicates; the Popen's file objects are closed at once
    to_child = Connection(os.dup(proc.stdin.fileno()), readable=False)
    from_child = Connection(os.dup(proc.stdout.fileno()), writable=False)
    proc.stdin.close()
    proc.stdout.close()
    return Helper(proc, to_child, from_child)


def exit_status(proc: subprocess.Popen, timeout: float, *, kill: bool = False) -> int | None:
    """``proc``'s exit status, waited for up to ``timeout`` seconds; past that None, or, with
    ``kill``, the process killed and its status."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if not kill:
            return None
        proc.kill()
        return proc.wait()


def die_with(parent_pid: int) -> None:
    """Be killed the moment the parent dies (Linux ``PR_SET_PDEATHSIG``): a killed run must
    not leave a helper committing batches, or checking a file, after its death. Elsewhere a
    helper stops the next time it uses its pipes (the journaller at its next read, the store
    check when it reports)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before the line above
        os._exit(0)


def child_pipes(parent_pid: int) -> tuple[Connection, Connection]:
    """The helper's side, at the start of its ``main``: die with the parent, ignore Ctrl-C
    (it reaches the whole process group, and the parent decides), and return ``(requests,
    replies)`` on stdin and the original stdout. Anything else the helper prints then goes
    to stderr, so that it cannot garble a reply."""
    die_with(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = Connection(os.dup(0), writable=False)
    return requests, replies


def error_reply(exc: BaseException, who: str) -> tuple:
    """``("error", pickled_exception, text)``: what a helper sends when it fails (``text``
    for an exception that cannot be rebuilt in the parent)."""
    text = f"{who}: {type(exc).__name__}: {exc}"
    try:
        pickled = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - not picklable: the parent gets the text
        pickled = b""
    return ("error", pickled, text)


def raise_error_reply(reply: tuple, where: str, fallback: type[Exception]) -> None:
    """Raise the helper's exception from an :func:`error_reply` (as ``fallback(text)`` if it
    cannot be rebuilt here), with a note saying it was raised ``where``."""
    _tag, pickled, text = reply
    try:
        exc = pickle.loads(pickled)
    except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt here
        exc = fallback(text)
    exc.add_note(f"(raised in {where})")
    raise exc
