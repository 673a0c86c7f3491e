"""The store check of a long ``verify`` (:func:`exchange.store.event_store.verify_store`), on the
machine's other core.

``session.verify`` checks a log in three stages: the store (checksums, chain, typed columns),
the re-execution of its commands and the replay of its events. The first reads the file and
nothing else, so on a long log it runs in ``python -m exchange.store.check`` while the other two
run in the caller (:func:`exchange.sessions.session.verify`): the wait is the longer of the two
rather
than their sum. The verdict is the same either way: the store's findings come first, as when
the stages run one after the other.

Protocol (pickled tuples; see :mod:`exchange.store.helper`): the helper sends ``("progress", done,
total)`` as it scans, then ``("report", VerifyReport)``, or ``("error", pickled_exception,
text)`` if the check itself failed. The parent sends nothing: it kills the helper when it no
longer needs the report, and the helper dies with it (see :func:`exchange.store.helper.die_with`).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.store.event_store import VerifyReport, verify_store
from exchange.store.helper import (
    child_pipes,
    error_reply,
    exit_status,
    raise_error_reply,
    spawn,
)

if TYPE_CHECKING:
    import subprocess

#: Seconds to wait for the helper to exit once its report is in, before killing it.
_EXIT_WAIT_S = 10.0


class StoreCheckError(RuntimeError):
    """The helper process died without a report."""


class StoreCheck:
    """The caller's side of a store check running in a helper process.

    Made with :meth:`start`; :meth:`poll` (never blocks) and :meth:`report` (waits) pass its
    progress on and return its :class:`~exchange.store.event_store.VerifyReport`; :meth:`close`
    stops it.
    """

    def __init__(self, proc: subprocess.Popen, to_child, from_child) -> None:
        self._proc = proc
        self._to = to_child
        self._from = from_child
        self._report: VerifyReport | None = None
        self._died: str | None = None  # why there will be no report

    @classmethod
    def start(cls, path: str | Path) -> StoreCheck | None:
        """Start checking the store at ``path`` in a helper process; None if no process can
        be started here."""
        helper = spawn("store.check", str(Path(path).resolve()))
        return None if helper is None else cls(*helper)

    def poll(self, progress: Callable[[int, int], None] | None = None) -> VerifyReport | None:
        """The report if it has arrived (else None), after passing every progress message
        received so far to ``progress(done, total)``. Never blocks, and never raises for a
        helper that died: :meth:`report` does."""
        while self._report is None and self._died is None and self._from.poll():
            with contextlib.suppress(StoreCheckError):
                self._receive(progress)
        return self._report

    def report(self, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """Wait for the report, passing progress on as it comes. Raises the helper's own
        exception, or :class:`StoreCheckError` if it died without a word."""
        while self._report is None:
            self._receive(progress)
        return self._report

    def close(self) -> None:
        """Stop the helper, wherever it is, and wait for it. Idempotent."""
        for conn in (self._to, self._from):
            conn.close()
        if self._report is None and self._proc.poll() is None:
            self._proc.kill()  # still scanning: nobody wants its answer any more
        exit_status(self._proc, _EXIT_WAIT_S, kill=True)

    def _receive(self, progress: Callable[[int, int], None] | None) -> None:
        if self._died is not None:
            raise StoreCheckError(self._died)
        try:
            message = pickle.loads(self._from.recv_bytes())
        except (EOFError, OSError):
            self._died = (
                f"the store check process exited (status {self._proc.wait()}) without a report"
            )
            raise StoreCheckError(self._died) from None
        tag = message[0]
        if tag == "progress":
            if progress is not None:
                progress(message[1], message[2])
        elif tag == "report":
            self._report = message[1]
        elif tag == "error":
            raise_error_reply(
                message, "the store check process, exchange.store.check", StoreCheckError
            )
        else:
            raise StoreCheckError(f"store check: unexpected message {tag!r}")


# ---------------------------------------------------------------------- the process
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m exchange.store.check PARENT_PID PATH`` (started by
    :meth:`StoreCheck.start`; not a user command)."""
    args = sys.argv[1:] if argv is None else argv
    _requests, replies = child_pipes(int(args[0]))

    def send(*message) -> None:
        replies.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    try:
        report = verify_store(args[1], lambda done, total: send("progress", done, total))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        send(*error_reply(exc, "store check"))
        return 1
    send("report", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
