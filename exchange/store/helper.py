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

Messages are pickled tuples, framed as :mod:`multiprocessing.connection` frames them
(:class:`Channel`); pickle only ever passes between a process and the helper it started.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
#: A frame's length: a 4-byte signed big-endian int; a message past its range is framed as
#: -1 and an 8-byte length (as :mod:`multiprocessing.connection` frames them).
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")
_MAX_SHORT = 0x7FFFFFFF


class Channel:
    """One end of a pipe to or from a helper process, carrying whole messages (``bytes``):
    :meth:`send_bytes`, :meth:`recv_bytes`, :meth:`poll`, :meth:`close`, as
    :class:`multiprocessing.connection.Connection` has them, and framed as it frames them, so
    either end may be one. Not that class: its module imports ``tempfile``, ``socket``,
    ``multiprocessing``'s context and more, ~11 ms of every helper's start-up, on a
    journaller's way to taking over its run (decision 110). It owns its descriptor."""

    __slots__ = ("_fd", "_poller")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poller: select.poll | None = None  # made at the first poll (where there is one)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        self._check()
        return self._fd

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            self._poller = None
            os.close(fd)

    def _check(self) -> None:
        if self._fd < 0:
            raise OSError("handle is closed")

    def send_bytes(self, data: bytes) -> None:
        """Write one message (BrokenPipeError if the other end is closed)."""
        self.send_many(data)

    def send_many(self, *messages: bytes) -> None:
        """Write ``messages`` as :meth:`send_bytes` would one by one, in one ``writev``
        (more where the pipe takes part of them): the bytes go from the caller's objects to
        the pipe, with no copy into a joined buffer between (0.01-0.02 s of a 1M-event run's
        hand-off, measured)."""
        self._check()
        views: list[memoryview] = []
        for message in messages:
            size = len(message)
            if size > _MAX_SHORT:
                header = _LENGTH.pack(-1) + _LONG_LENGTH.pack(size)
            else:
                header = _LENGTH.pack(size)
            views += [memoryview(header), memoryview(message)]
        while views:
            written = os.writev(self._fd, views)
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if written:
                views[0] = views[0][written:]

    def recv_bytes(self) -> bytes:
        """The next message, waiting for it; EOFError at the end of the pipe."""
        self._check()
        (size,) = _LENGTH.unpack(self._read(4))
        if size == -1:
            (size,) = _LONG_LENGTH.unpack(self._read(8))
        return self._read(size)

    def _read(self, size: int) -> bytes:
        data = os.read(self._fd, size)
        if len(data) == size:
            return data
        parts = [data]
        left = size - len(data)
        while True:
            if not data:
                raise EOFError
            if not left:
                return b"".join(parts)
            data = os.read(self._fd, left)
            parts.append(data)
            left -= len(data)

    def poll(self, timeout: float = 0.0) -> bool:
        """Whether a message (or the end of the pipe) is there to read, waiting up to
        ``timeout`` seconds. (``poll(2)``, registered once: ``select`` refuses a descriptor
        past 1023, which a process with many files open gives its pipes.)"""
        self._check()
        if not hasattr(select, "poll"):
            return bool(select.select([self._fd], [], [], timeout)[0])
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self._fd, select.POLLIN)
        return bool(self._poller.poll(timeout * 1000))


class Helper(NamedTuple):
    """A started helper process and the parent's ends of its two pipes."""

    proc: subprocess.Popen
    to_child: Channel
    from_child: Channel


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
    # the Channels own duplicates; the Popen's file objects are closed at once
    to_child = Channel(os.dup(proc.stdin.fileno()))
    from_child = Channel(os.dup(proc.stdout.fileno()))
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


def child_pipes(parent_pid: int) -> tuple[Channel, Channel]:
    """The helper's side, at the start of its ``main``: die with the parent, ignore Ctrl-C
    (it reaches the whole process group, and the parent decides), and return ``(requests,
    replies)`` on stdin and the original stdout. Anything else the helper prints then goes
    to stderr, so that it cannot garble a reply."""
    die_with(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = Channel(os.dup(1))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = Channel(os.dup(0))
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
