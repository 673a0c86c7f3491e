"""The journal of a run: folding, snapshotting and committing its batches, in line or from a
second process (the *journaller*) on the machine's other core.

Recording a batch means checking and encoding it, folding it (the fold gives the snapshots and
the final check against the live state hash), checksumming it and inserting it into SQLite: about
40 % of a long run when done in line (benches/README.md). As in LMAX's architecture, where the
business logic processor never waits on its journaller, a long run hands most of that work to
``python -m exchange.store.journal``: the engine checks and encodes each complete batch into the
blob the store keeps (one C loop, :meth:`EventStore.encode_batch`; the compiled engine's run
keeps each batch's stored form already, decision 106), sends it down a pipe and goes on with
the next one while the journaller compacts that blob once into the stored form (where it is
not that already) and folds that form (its tokens parsed in C, no Python object per event:
:meth:`CompiledFold.apply_stored`), then commits it. The blobs travel through a
buffer the two processes share (:class:`_Ring`, ``_RING_BYTES``; the pipe where there is no
``memfd_create``), so that the run waits only when the journaller is that far behind, never
for the journaller's threads to be scheduled. The journaller reads the pipe on a thread of its
own (:class:`_Inbox`), compacts and folds on its main thread, and checksums (the stored form:
schema 5) and commits on a third (:class:`_Committer`), the batches of one message (and any
queued behind them) to a transaction: the fold of the next batches and the writing of the last
ones run on both cores when the run waits.

The log is the same, byte for byte, either way: :class:`Journal` folds, snapshots and appends
the same batches in the same order in both places; only the process differs. Crash safety is
the same too: a batch is durable when its transaction commits, whichever process commits it.
If the run dies, so does the journaller (on Linux at once; elsewhere at the end of its pipe),
leaving the file as a crash leaves it (not sealed, no indexes), and ``--resume`` continues
from the last committed batch. If the journaller fails, the run raises its error at the next
batch. The run's own connection stays open (idle) throughout and closes the file at the end, as
it does when it records in line. The closed file then differs from an in-line run's in one
place only: SQLite's file change counter (header bytes 24-27 and 92-95), which counts one more
writing connection. Every page below the header is the same, and so is the file of any two
runs with the same scenario, seed and ``journal_after``, whenever the hand-over happened.

Protocol (each message one pickled tuple, or a batch's blob as it is, framed by
:class:`~exchange.store.helper.Channel` as :mod:`multiprocessing.connection` frames them;
pickle only ever passes between two processes of the same run):

* run -> journaller: ``("start", path, snapshot_every, fold_json)``, then the batches, then
  ``("end", t, state_hash)`` to seal, or ``("close",)`` if the run failed; the end of the pipe
  means the run died. A batch is its ``events`` blob as the store keeps it (``encode(e) +
  b"\\n"`` per event, of the ``count`` events of seqs ``first``, ``first + 1``...), or its
  stored form already (``stored``: ``compact`` of that blob, written line by line by the run's
  sink, decision 106), sent either way: ``("ring", [(first, count, offset, size, end,
  stored), ...])`` for batches whose blobs the run has written into the shared buffer (at
  ``offset``, ``size`` bytes; ``end``: the position after it, counted since the start: see
  :class:`_Ring`), up to ``_PLACED_PER_MESSAGE`` to a message; or ``("batch", None, first,
  count, stored)`` followed by its blob as a message of its own, unpickled (written from the
  run's bytes in one ``writev`` with its header, never copied into a pickle; ``("batch", blob,
  first, count[, stored])``, the blob inside, is read too). No digest
  travels: the batch's digest is its stored (compact) form's, computed by the journaller's
  store from the stored form its journal made (schema 5; decision 98's digest computed by the
  run, over the JSON lines, is gone with schema 4).
* journaller -> run: ``("ready",)`` once it has started; ``("released", end)`` once it has
  compacted the blobs of the shared buffer up to position ``end``, reading them where they
  lie (the run may write there again); ``("done",)`` after sealing the store; ``("error",
  pickled_exception, text)`` if anything failed (``text`` for an exception that cannot be
  rebuilt in the run), after which it exits.

Who checks what (the store refuses what an in-line append refuses, split between the two
processes): the run checks every event of a batch before sending it -- the ``Event`` fields,
each typed field's type and int64 range, seqs contiguous from the one after the last batch
sent -- and encodes it: a recorded run's sink, :class:`~exchange.core._lines.LineBatch`, makes
:meth:`EventStore.encode_batch`'s checks as each event arrives and holds its line (the
compiled kernel writes its own events' lines there), and :meth:`Journaller.record_blob` sends
the batch's lines as they are (:meth:`Journaller.record` checks and encodes a batch of events
with :meth:`EventStore.encode_batch`); the journaller's fold parses the blob as ``count``
events of seqs ``first``... and folds them onto its state (a seq that does not follow the
fold's: :class:`FoldError`), and its store appends the stored form only where ``first``
continues the log (:meth:`EventStore.append_stored`). ``GPUEX_FOLD=reference`` folds each event
decoded whole by orjson, with :class:`~exchange.store.fold.Fold`, as before the blob.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import pickle
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from exchange.store.compact import compact
from exchange.store.event_store import EventStore
from exchange.store.fold import Fold, blob_events, fold_class
from exchange.store.helper import (
    child_pipes,
    error_reply,
    exit_status,
    raise_error_reply,
    spawn,
)

if TYPE_CHECKING:
    import subprocess

    from exchange.store.helper import Channel

#: Bytes of pipe buffer asked for (Linux ``F_SETPIPE_SZ``): several batches in flight, so
#: the run does not wait while the journaller commits the one before.
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, linux/fcntl.h
#: Bytes of the buffer a run shares with its journaller (:class:`_Ring`; Linux
#: ``memfd_create``): the run copies each batch's blob there and sends only its header down the
#: pipe. A pipe holds 1 MiB (about three batches), so a run sending its blobs down the pipe
#: waited whenever the journaller's reading thread was not scheduled within a few batches:
#: 0.35 s of a 1M-event run on a loaded machine, in ~100 waits of ~3.5 ms each (measured),
#: though the journaller kept pace. The run waits on the ring only when the journaller is
#: this far behind: 4 MiB of batches in their stored form (~31 bytes an event on ``flow``,
#: about 135k events; 16 MiB held ~100k JSON events before decision 106). The run maps all of
#: it at once (``MAP_POPULATE``): a constant in the run's resident memory from the hand-over
#: on, not a part that grows with the bytes the run has written until the ring first wraps
#: (which made a run of 160k events look 1.67x smaller than one of 1.6M in the memory bench,
#: decision 84). Mapping 16 MiB so was ~0.015 s of the run's thread (its pages faulted in
#: at once) for bytes a run of a million events barely wrapped (decision 108).
_RING_BYTES = 4 << 20
#: Batches placed in the ring that the run tells the journaller of in one message. Each
#: message down the pipe wakes the journaller, and Linux runs the woken thread on the
#: waker's core (a pipe's wake-up is a "sync" one: the writer is expected to sleep), where it
#: takes the core from the run: 0.2-0.5 s of a 1M-event run on a loaded machine with one
#: message per batch (measured). Told in eights, the journaller is at most eight batches
#: late to see them, well within the ring.
_PLACED_PER_MESSAGE = 8
#: glibc's ``mallopt`` parameters (malloc.h) and the largest block the journaller's malloc
#: serves from its heap, which is also kept that large (see :func:`_keep_freed_memory`;
#: 32 MiB is the most glibc takes for the mmap threshold on 64-bit).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_KEEP_BYTES = 32 << 20
#: Seconds to wait for a journaller to exit after its pipe is closed, before killing it.
_EXIT_WAIT_S = 30.0
#: Bytes of messages the journaller reads ahead of the batch it commits (:class:`_Inbox`).
#: The pipe alone holds about three batches (1 MiB, the most Linux lets a user ask for), and
#: the journaller stops reading for up to 0.1 s at a time (the checkpoint that restarts its
#: WAL, every ~48 MiB): 10-30k events of the run, which then waited on a full pipe (0.12-0.18
#: s of a 1M-event run, measured). 32 MiB holds about 250k events' batches, and bounds
#: the journaller's memory whatever the length of the run.
_INBOX_BYTES = 32 << 20
#: Bytes of batches folded and not yet committed (:class:`_Committer`): the fold of the next
#: batches goes on while SQLite writes these, up to this much ahead.
_COMMIT_QUEUE_BYTES = 8 << 20
#: The most bytes of batches one transaction of the journaller commits (:class:`_Committer`
#: commits in one transaction the batches that queued up behind the last commit).
_GROUP_BYTES = 4 << 20


class JournalError(RuntimeError):
    """The journal cannot go on: the fold disagrees with the live state, or the journaller
    process died (the message says why)."""


class Journal:
    """Folds and commits a run's batches into ``store``; snapshots every ``snapshot_every``
    events (0 = none). The same code runs in line and in the journaller process."""

    def __init__(self, store: EventStore, snapshot_every: int, fold: Fold | None = None):
        self.store = store
        self.snapshot_every = snapshot_every
        self.fold = fold_class()() if fold is None else fold  # the compiled fold by default

    def record(self, batch: Sequence[tuple], encoded: bytes | None = None) -> None:
        """Fold ``batch`` (events or plain tuples of their fields) and commit it as one
        transaction, with the fold's snapshot when its last seq is a multiple of
        ``snapshot_every``. ``encoded``: the batch's blob when the caller has it (see
        :meth:`EventStore.append`).

        In line the fold reads the tuples themselves (:meth:`CompiledFold.apply_all`): they
        exist already, and reading them costs less than parsing the blob back (measured on
        ``flow``; :meth:`record_blob` is the journaller's way, where only the blob travels)."""
        fold = self.fold
        fold.apply_all(batch)
        self.store.append(batch, self._snapshot(), encoded=encoded)

    def record_blob(self, blob: bytes, first: int, count: int) -> None:
        """:meth:`record` of a batch given as its blob (``count`` events of seqs ``first``...,
        checked and encoded by :meth:`EventStore.encode_batch`), compacted once into the form
        the store keeps (``compact(blob)``, schema 5), folded straight from that form
        (:meth:`CompiledFold.apply_stored`: its tokens parsed in C, cheaper than the JSON
        lines; the reference :class:`Fold` folds the events decoded whole) and stored as it
        is (:meth:`EventStore.append_stored`: the row :meth:`EventStore.append_blob` of the
        blob writes): no event decoded into Python objects, none encoded again."""
        stored = compact(blob)
        self.fold_stored(stored, first, count)
        self.store.append_stored(stored, first, count, self._snapshot())

    def record_stored(self, stored: bytes, first: int, count: int) -> None:
        """:meth:`record_blob` of a batch given as its stored form already (``compact(blob)``:
        a run's sink that keeps its lines so, ``LineBatch.store_compact``)."""
        self.fold_stored(stored, first, count)
        self.store.append_stored(stored, first, count, self._snapshot())

    def fold_stored(self, stored: bytes, first: int, count: int) -> None:
        """Fold a batch given as its stored form (``compact(blob)``, see :meth:`record_blob`)
        without storing it (:meth:`Fold.apply_stored`)."""
        self.fold.apply_stored(stored, first, count)

    def fold_blob(self, blob: bytes, first: int, count: int) -> None:
        """Fold a batch given as its blob (see :meth:`record_blob`) without storing it: a
        resumed run's catch-up over batches the log holds already."""
        apply_blob = getattr(self.fold, "apply_blob", None)
        if apply_blob is not None:
            apply_blob(blob, first, count)
        else:
            self.fold.apply_all(blob_events(blob, count))

    def _snapshot(self) -> tuple[int, str, str] | None:
        """The fold's snapshot if its seq is a multiple of ``snapshot_every``, else None."""
        fold = self.fold
        last = fold.seq
        if self.snapshot_every and last % self.snapshot_every == 0:
            return (last, fold.to_json(), fold.state_hash())
        return None

    def finish(self, t: int, state_hash: str) -> None:
        """Seal the store at simulated time ``t`` (ns) with the live ``state_hash``, which the
        fold of the recorded events must reproduce (else :class:`JournalError`, unsealed)."""
        if self.fold.state_hash() != state_hash:
            raise JournalError("the fold of the recorded events disagrees with the live state")
        self.store.finish(t, state_hash)


def _widen(fd: int) -> None:
    if sys.platform.startswith("linux"):
        import fcntl

        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep 64 KiB
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_BYTES)


class _Ring:
    """The run's side of the buffer it shares with its journaller (see ``_RING_BYTES``): a
    shared memory file (``memfd_create``) the journaller maps too. The run writes each blob at
    ``head`` (at the start of the buffer when it would not fit before its end) once the
    journaller has released the bytes there; the journaller compacts each blob where it lies
    as it takes its header (:meth:`_ThreadedJournal.compact_all`: the stored form is a
    ``bytes`` of its own, the blob never copied), and says so (``("released", end)``): the
    bytes up to ``end`` may be written again. Positions count bytes since the start (they
    never wrap); a blob lies at ``position % size``."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        self.head = 0  # where the next blob goes
        self.released = 0  # the journaller has compacted everything before

    @classmethod
    def make(cls, size: int | None = None) -> _Ring | None:
        """A new ring of ``size`` bytes (default ``_RING_BYTES``), or None where there is no
        ``memfd_create`` (the blobs then travel down the pipe)."""
        size = _RING_BYTES if size is None else size
        memfd_create = getattr(os, "memfd_create", None)
        if memfd_create is None:
            return None
        try:
            fd = memfd_create("gpuex-journal", os.MFD_CLOEXEC)
        except OSError:
            return None
        try:
            os.ftruncate(fd, size)
            return cls(fd, size)
        except (OSError, ValueError):
            os.close(fd)
            return None

    def place(self, size: int) -> tuple[int, int]:
        """Where a blob of ``size`` bytes goes: ``(start, end)`` positions (see the class);
        ``end - released`` may exceed the ring's size: the caller waits until it does not."""
        start = self.head
        offset = start % self.size
        if offset + size > self.size:  # the rest of the ring is skipped
            start += self.size - offset
        return start, start + size

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError, BufferError):
            self.map.close()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class Journaller:
    """The run's side of a journaller process.

    Made with :meth:`spawn` (the process starts and imports in the background while the run
    goes on recording in line); :meth:`ready` says when it can take over; :meth:`hand_over`
    gives it the store (which the run has handed off) and the fold; :meth:`record` sends each
    batch; :meth:`finish` seals the store (the journaller has closed it when it returns, and
    exits on its own); :meth:`close` stops it wherever it is (on an error of the run).
    """

    def __init__(
        self,
        proc: subprocess.Popen,
        to_child: Channel,
        from_child: Channel,
        ring: _Ring | None = None,
    ):
        self._proc = proc
        self._to = to_child
        self._from = from_child
        self._ring = ring  # None: the blobs travel down the pipe
        #: batches placed in the ring, not yet told: (first, count, offset, size, end, stored)
        self._placed: list[tuple[int, int, int, int, int, bool]] = []
        self._reserved: tuple[int, int] | None = None  # (start, end) of reserve's place
        self._ready = False
        self._dead = False
        self._started = False  # sent the store (hand_over)
        self._sealed = False  # it sealed and closed the store, and is exiting (finish)
        self._reaper: threading.Thread | None = None  # waits for that exit
        self._next_seq = 1  # the seq the next batch sent starts at (set by hand_over)
        self._batch = 1  # its number in the log

    @classmethod
    def spawn(cls) -> Journaller | None:
        """Start ``python -m exchange.store.journal`` with this process's interpreter and this
        ``exchange`` package; None if no process can be started here (the run then records
        in line)."""
        ring = _Ring.make()
        if ring is None:
            helper = spawn("store.journal")
        else:
            helper = spawn("store.journal", str(ring.fd), pass_fds=(ring.fd,))
            os.close(ring.fd)  # the journaller has its own; the map stays
            ring.fd = -1
        if helper is None:
            if ring is not None:
                ring.close()
            return None
        _widen(helper.to_child.fileno())
        return cls(*helper, ring=ring)

    def ready(self) -> bool:
        """True once the journaller has started and waits for the store (never blocks). A
        journaller that died on its way up is never ready."""
        if not self._ready and not self._dead and self._from.poll():
            try:
                self._ready = self._receive()[0] == "ready"
            except JournalError:
                self._dead = True  # no need to ask again at every batch
        return self._ready

    def hand_over(self, store: EventStore, snapshot_every: int, fold: Fold) -> None:
        """Give the journaller ``store`` (handed off by the run with
        :meth:`EventStore.hand_off`: its file) and ``fold`` (the state after the last committed
        batch); it records every batch from now on."""
        self._next_seq = store.last_seq + 1
        self._batch = store.batch_count + 1
        self._started = True
        self._send(("start", str(store.path), snapshot_every, fold.to_json()))

    def record(self, batch: Sequence[tuple]) -> None:
        """Check and encode ``batch`` as the store's next batch (:meth:`EventStore.append`'s
        checks, here in the run: ValueError as it raises) and send its blob to be folded and
        committed; raises the journaller's error if it has failed since the last batch."""
        self._drain()
        first = self._next_seq
        blob = EventStore.encode_batch(batch, first, self._batch)
        self._send(("batch", blob, first, len(batch)))
        self._next_seq = first + len(batch)
        self._batch += 1

    @property
    def next_batch(self) -> int:
        """The number in the log of the next batch sent."""
        return self._batch

    def record_blob(self, blob: bytes, first: int, count: int, stored: bool = False) -> None:
        """:meth:`record` of a batch the run holds as its blob already (``count`` events of
        seqs ``first``..., checked and encoded by the run's
        :class:`~exchange.core._lines.LineBatch`, the checks of :meth:`EventStore.encode_batch`):
        sent as it is; ``stored``: the blob is the batch's stored form already (the journaller
        then stores it as it is). Raises ValueError if ``first`` does not follow the last batch
        sent, and the journaller's error if it has failed since the last batch."""
        self._check_next(first, count)
        self._drain()
        place = self.reserve(len(blob))
        if place is not None:
            ring, offset = place
            ring[offset : offset + len(blob)] = blob
            self.record_placed(first, count, stored)
        else:
            self._send(("batch", blob, first, count, stored))
            self._sent(count)

    def reserve(self, size: int) -> tuple[mmap.mmap, int] | None:
        """Where the run writes the blob of its next batch, ``size`` bytes, for
        :meth:`record_placed` to send: ``(buffer, offset)`` in the buffer shared with the
        journaller (waiting, if need be, until the journaller has released the bytes
        there), or None if it goes down the pipe (:meth:`record_blob`: no shared buffer, or
        a blob over a quarter of it). Raises the journaller's error if it has failed."""
        ring = self._ring
        if ring is None or size > ring.size // 4:
            return None
        self._drain()
        start, end = ring.place(size)
        if end - ring.released > ring.size:
            self._send_placed()  # the journaller must see them to release them
            while end - ring.released > ring.size:
                self._reply(self._receive_any())  # the journaller is a ring behind
        self._reserved = (start, end)
        return ring.map, start % ring.size

    def record_placed(self, first: int, count: int, stored: bool = False) -> None:
        """Send the batch whose blob the run has written where :meth:`reserve` said
        (``count`` events of seqs ``first``..., checked and encoded as for
        :meth:`record_blob`; ``stored``: as there); ValueError as :meth:`record_blob` raises it
        (nothing sent)."""
        self._check_next(first, count)
        reserved, self._reserved = self._reserved, None
        if reserved is None:
            raise ValueError("no place reserved for the batch")
        start, end = reserved
        ring = self._ring
        ring.head = end
        self._placed.append((first, count, start % ring.size, end - start, end, stored))
        if len(self._placed) >= _PLACED_PER_MESSAGE:
            self._send_placed()
        self._sent(count)

    def _check_next(self, first: int, count: int) -> None:
        if first != self._next_seq:
            raise ValueError(
                f"batch {self._batch} (seqs {first}..{first + count - 1}) not sent: it does "
                f"not continue the log (the log ends at seq {self._next_seq - 1})"
            )

    def _sent(self, count: int) -> None:
        self._next_seq += count
        self._batch += 1

    def _send_placed(self) -> None:
        """Tell the journaller of the batches placed in the ring since the last time."""
        if self._placed:
            placed, self._placed = self._placed, []
            self._send(("ring", placed))

    def finish(self, t: int, state_hash: str) -> None:
        """Commit what was sent and seal the store (see :meth:`Journal.finish`): the
        journaller has closed it when this returns, and is exiting. Raises its error, if
        any."""
        self._send(("end", t, state_hash))
        reply = self._receive()
        if reply[0] != "done":
            raise JournalError(f"journaller: unexpected reply {reply[0]!r}")
        self._sealed = True
        self._to.close()  # it is exiting: nothing more to tell it
        self.close()

    def close(self) -> None:
        """Stop the journaller after the batches sent so far, closing the store as a run
        closes it after an error (:meth:`EventStore.close`), and wait for it to exit; kill
        it if it does not. A journaller never given the store is killed at once: it holds
        nothing, and a run that ends while it is still starting (importing, 0.4-0.9 s
        measured on a loaded machine) would otherwise wait for it. One that has sealed the
        store (:meth:`finish`) has closed it before it said so, and holds nothing either: its
        exit is not waited for (the end of a process that held the store's cache, 10-12 ms
        measured, on the run's path before it closes its own store); a thread reaps it.
        Idempotent."""
        if self._sealed:
            for conn in (self._to, self._from):
                conn.close()
            if self._reaper is None and self._proc.poll() is None:
                self._reaper = threading.Thread(
                    target=self._proc.wait, name="gpuex-reap", daemon=True
                )
                self._reaper.start()
            if self._ring is not None:
                self._ring.close()
            return
        if not self._started and self._proc.poll() is None:
            self._proc.kill()
        elif not self._to.closed:
            with contextlib.suppress(OSError, JournalError):
                self._send_placed()  # placed in the ring, so sent: committed like the rest
                self._to.send_bytes(pickle.dumps(("close",)))
        for conn in (self._to, self._from):
            conn.close()
        exit_status(self._proc, _EXIT_WAIT_S, kill=True)
        if self._ring is not None:
            self._ring.close()

    def _send(self, message: tuple) -> None:
        """Send ``message``; a batch's blob travels as a message of its own, after its
        header (see the module's protocol). The batches placed in the ring and not yet told
        go first."""
        if message[0] != "ring" and self._placed:
            self._send_placed()
        try:
            if message[0] == "batch":
                header = pickle.dumps(("batch", None, *message[2:]), pickle.HIGHEST_PROTOCOL)
                self._to.send_many(header, message[1])
            else:
                self._to.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, ConnectionResetError):
            # it died: say why if it managed to, else that it is gone
            self._receive()
            raise JournalError("the journaller process exited") from None

    def _receive(self) -> tuple:
        """The journaller's next reply other than a release of the ring (those are noted on
        the way); raises its error."""
        while True:
            reply = self._reply(self._receive_any())
            if reply is not None:
                return reply

    def _drain(self) -> None:
        """Take the replies already there (releases; raises the journaller's error), without
        waiting: only a release or an error can arrive while batches are sent."""
        while self._from.poll():
            reply = self._reply(self._receive_any())
            if reply is not None:
                raise JournalError(f"journaller: unexpected reply {reply[0]!r}")

    def _reply(self, reply: tuple) -> tuple | None:
        """None for a release of the ring (noted), else ``reply``; raises an error reply."""
        if reply[0] == "released":
            if self._ring is not None:
                self._ring.released = max(self._ring.released, reply[1])
            return None
        if reply[0] == "error":
            raise_error_reply(reply, "the journaller process, exchange.store.journal", JournalError)
        return reply

    def _receive_any(self) -> tuple:
        try:
            return pickle.loads(self._from.recv_bytes())
        except (EOFError, OSError):
            code = exit_status(self._proc, _EXIT_WAIT_S)
            raise JournalError(
                f"the journaller process exited (status {code}) without saying why"
            ) from None


# ---------------------------------------------------------------------- the process
class _Inbox:
    """The journaller's reading of the run's pipe, on a thread of its own: it keeps the pipe
    drained while the journaller commits, checkpoints or fsyncs (SQLite releases the GIL), so
    that the run never waits on a full pipe for a moment the journaller is busy, only when
    the journaller is ``_INBOX_BYTES`` of messages behind. Messages come out in the order they
    were sent; the end of the pipe comes out as None, after every message before it.

    The thread owns ``requests`` and closes it when it stops: at the end of the pipe, or at
    the first message it reads after :meth:`stop` (a run then blocked on a full pipe gets
    EPIPE, and reads the journaller's error)."""

    def __init__(self, requests: Channel, limit: int = _INBOX_BYTES) -> None:
        self._requests = requests
        self._limit = limit
        self._queue: collections.deque[bytes | None] = collections.deque()
        self._bytes = 0
        self._stopped = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="gpuex-inbox", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        requests, changed, queue = self._requests, self._changed, self._queue
        try:
            while True:
                with changed:
                    while self._bytes >= self._limit and not self._stopped:
                        changed.wait()
                    if self._stopped:
                        return
                try:
                    data: bytes | None = requests.recv_bytes()
                except (EOFError, OSError):
                    data = None  # the run stopped, or died
                with changed:
                    if self._stopped:
                        return
                    queue.append(data)
                    if data is not None:
                        self._bytes += len(data)
                    changed.notify_all()
                if data is None:
                    return
        finally:
            requests.close()

    def get(self) -> bytes | None:
        """The next message (waits for it); None at the end of the pipe."""
        with self._changed:
            while not self._queue:
                self._changed.wait()
            data = self._queue.popleft()
            if data is not None:
                self._bytes -= len(data)
                self._changed.notify_all()
            return data

    def stop(self) -> None:
        """Read no more (see the class)."""
        with self._changed:
            self._stopped = True
            self._queue.clear()
            self._changed.notify_all()


class _Committer:
    """The journaller's store, written on a thread of its own: the journaller folds a batch
    while SQLite commits the batches before it (``sqlite3`` and ``hashlib`` release the GIL
    while they write and hash, which is most of a commit), so that a journaller behind its
    run catches up on both cores while the run waits on the pipe.

    Batches are committed in the order :meth:`put` is given them; those that queued up while
    a commit was under way are committed together, in one transaction
    (:meth:`EventStore.append_blobs`: the same statements, so the same file, with fewer
    commits). A batch is durable once its transaction commits, as in line; :meth:`close`
    commits every batch put before it. The thread opens the store itself and is the only
    one to use it (an SQLite connection stays on its thread). A failure of the store is kept
    and raised by the next call of the journaller's thread, after which nothing more is
    committed."""

    def __init__(self, path: str, limit: int = _COMMIT_QUEUE_BYTES) -> None:
        self._limit = limit
        # ("batch", (stored, first, count, snapshot, None), size) | ("finish", t,
        # state_hash) | ("stop",); size: the batch's blob's bytes (what the limits count, as
        # when the blobs themselves were queued)
        self._queue: collections.deque[tuple] = collections.deque()
        self._bytes = 0  # of the blobs in the queue
        self._busy = False  # items taken off the queue and not yet done
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, args=(path,), name="gpuex-commit", daemon=True
        )
        self._thread.start()

    def put(
        self,
        stored: bytes,
        first: int,
        count: int,
        snapshot: tuple | None,
        size: int | None = None,
    ) -> None:
        """Queue a folded batch given as its stored form (``compact(blob)``, see
        :meth:`EventStore.append_stored`; its digest is computed by the store, on the
        committing thread) to be committed; ``size``: its blob's bytes (None: the stored
        form's), which the limits count. Waits while ``limit`` bytes are queued. Raises the
        store's error, if it has failed."""
        self.put_many([(stored, first, count, snapshot, size)])

    def put_many(self, batches: Sequence[tuple[bytes, int, int, tuple | None, int | None]]) -> None:
        """:meth:`put` of several batches, ``(stored, first, count, snapshot, size)`` each, at
        once: a committer waiting for work takes them together (one transaction), where one
        :meth:`put` each would have woken it for the first alone."""
        with self._changed:
            while self._bytes >= self._limit and self._error is None:
                self._changed.wait()
            self._raise_error()
            for stored, first, count, snapshot, size in batches:
                size = len(stored) if size is None else size
                # None: no digest given (EventStore.append_blobs computes it)
                self._queue.append(("batch", (stored, first, count, snapshot, None), size))
                self._bytes += size
            self._changed.notify_all()

    def finish(self, t: int, state_hash: str) -> None:
        """Commit every batch queued, then seal the store (:meth:`EventStore.finish`)."""
        self._call(("finish", t, state_hash))

    def close(self) -> None:
        """Commit every batch queued (unless the store has failed) and close the store as a
        crash leaves it (:meth:`EventStore.detach`); the thread ends. Idempotent."""
        if self._thread.is_alive():
            with self._changed:
                self._queue.append(("stop",))
                self._changed.notify_all()
            self._thread.join()

    def _call(self, item: tuple) -> None:
        """Queue ``item`` and wait until it is done; raises the store's error."""
        with self._changed:
            self._raise_error()
            self._queue.append(item)
            self._changed.notify_all()
            while (self._queue or self._busy) and self._error is None:
                self._changed.wait()
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _take(self) -> list[tuple]:
        """The next items to do: one control item, or the batches at the head of the queue
        up to ``_GROUP_BYTES`` (at least one). Waits for one."""
        queue = self._queue
        with self._changed:
            while not queue:
                self._changed.wait()
            self._busy = True
            if queue[0][0] != "batch":
                return [queue.popleft()]
            taken = [queue.popleft()]
            size = taken[0][2]
            while queue and queue[0][0] == "batch" and size < _GROUP_BYTES:
                taken.append(queue.popleft())
                size += taken[-1][2]
            return taken

    def _done(self, items: list[tuple]) -> None:
        with self._changed:
            self._bytes -= sum(item[2] for item in items if item[0] == "batch")
            self._busy = False
            self._changed.notify_all()

    def _run(self, path: str) -> None:
        store: EventStore | None = None
        try:
            store = EventStore.open(path, mode="a")
            while True:
                items = self._take()
                tag = items[0][0]
                if tag == "stop":
                    return
                if tag == "finish":
                    store.finish(items[0][1], items[0][2])
                else:
                    store.append_blobs([item[1] for item in items], stored=True)
                self._done(items)
        except BaseException as exc:  # noqa: BLE001 - raised in the journaller's thread
            with self._changed:
                self._error = exc
                self._queue.clear()
                self._bytes = 0
                self._busy = False
                self._changed.notify_all()
        finally:
            if store is not None:
                store.detach()  # the run's store closes the file
            with self._changed:
                self._busy = False
                self._changed.notify_all()


class _ThreadedJournal(Journal):
    """The journaller's :class:`Journal`: it folds and snapshots each batch on the calling
    thread and has a :class:`_Committer` commit it (:meth:`close` when done)."""

    def __init__(self, path: str, snapshot_every: int, fold: Fold) -> None:
        super().__init__(None, snapshot_every, fold)  # type: ignore[arg-type]
        self.committer = _Committer(path)

    def record_blob(self, blob: bytes, first: int, count: int) -> None:
        """:meth:`Journal.record_blob`, the commit queued (:meth:`_Committer.put`): the blob
        compacted here once, folded from that form and queued as it (the committing thread
        only hashes and inserts it). The digest is not computed here: it is the stored
        (compact) form's (schema 5), and the store computes it on the committing thread."""
        self.record_blobs([(blob, first, count)])

    def record_blobs(
        self, blobs: Sequence[tuple[bytes | memoryview, int, int]], stored: bool = False
    ) -> None:
        """:meth:`record_blob` of each ``(blob, first, count)`` in turn (the batches of one
        message from the run): :meth:`compact_all`, then :meth:`record_all`. ``stored``: the
        blobs are the batches' stored forms already."""
        self.record_all(self.compact_all([(*blob, stored) for blob in blobs]))

    def record_stored(self, stored: bytes, first: int, count: int) -> None:
        """:meth:`Journal.record_stored`, the commit queued (see :meth:`record_blob`)."""
        self.record_blobs([(stored, first, count)], stored=True)

    @staticmethod
    def compact_all(
        blobs: Sequence[tuple[bytes | memoryview, int, int, bool]],
    ) -> list[tuple[bytes, int, int, int]]:
        """The stored form of each ``(blob, first, count, stored)`` (``compact(blob)``, or the
        blob's bytes where ``stored`` says it is that form already; a blob may be a view of
        the buffer shared with the run, read in place), as ``(stored, first, count, size)``:
        ``size`` the blob's bytes. Nothing refers to the blobs afterwards."""
        return [
            (bytes(blob) if stored else compact(blob), first, count, len(blob))
            for blob, first, count, stored in blobs
        ]

    def record_all(self, batches: Sequence[tuple[bytes, int, int, int]]) -> None:
        """Fold each ``(stored, first, count, size)`` of :meth:`compact_all` in turn, their
        commits queued together once all are folded (:meth:`_Committer.put_many`): one
        transaction for the lot, not one for the first and another for the rest. A fold that
        fails queues the batches folded before it, then raises."""
        folded = []
        try:
            for stored, first, count, size in batches:
                self.fold_stored(stored, first, count)
                folded.append((stored, first, count, self._snapshot(), size))
        finally:
            if folded:
                self.committer.put_many(folded)

    def finish(self, t: int, state_hash: str) -> None:
        """:meth:`Journal.finish`: the batches queued are committed either way."""
        if self.fold.state_hash() != state_hash:
            raise JournalError("the fold of the recorded events disagrees with the live state")
        self.committer.finish(t, state_hash)

    def close(self) -> None:
        """Commit what is queued and close the store as a crash leaves it (see
        :meth:`_Committer.close`)."""
        self.committer.close()


def serve(requests: Channel, replies: Channel, ring: mmap.mmap | None = None) -> int:
    """The journaller's loop: returns the process's exit status. ``ring``: the buffer shared
    with the run (:class:`_Ring`), where the blobs of ``("ring", ...)`` batches are."""

    def reply(*message: Any) -> None:
        replies.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    try:
        reply("ready")
    except BrokenPipeError:
        return 0  # the run ended (a short one) before this process was up: nothing to do
    inbox = _Inbox(requests)
    journal: _ThreadedJournal | None = None
    try:
        while True:
            data = inbox.get()
            if data is None:
                return 0  # the run stopped (or died): leave the file as a crash leaves it
            message = pickle.loads(data)
            tag = message[0]
            if tag == "ring":
                assert journal is not None and ring is not None, "ring batch before start"
                # compacted where they lie (no copy: decision 104), then released: the run
                # may write there again; folded in turn, committed together (decision 101)
                with memoryview(ring) as shared:
                    stored = journal.compact_all(
                        [
                            (shared[offset : offset + size], first, count, compacted)
                            for first, count, offset, size, _end, compacted in message[1]
                        ]
                    )
                # a run that has stopped listening (closing after an error of its own) needs
                # no release: what it sent is committed all the same
                with contextlib.suppress(OSError):
                    reply("released", message[1][-1][4])
                journal.record_all(stored)
            elif tag == "batch":
                assert journal is not None, "batch before start"
                blob = message[1]
                if blob is None:  # the blob follows, as a message of its own
                    blob = inbox.get()
                    if blob is None:
                        return 0  # the run died mid-batch: as at the end of the pipe
                compacted = len(message) > 4 and message[4]
                journal.record_blobs([(blob, message[2], message[3])], compacted)
            elif tag == "start":
                _tag, path, snapshot_every, fold_json = message
                journal = _ThreadedJournal(path, snapshot_every, fold_class().from_json(fold_json))
            elif tag == "close":  # the run failed; its store closes the file
                return 0
            elif tag == "end":
                assert journal is not None, "end before start"
                journal.finish(message[1], message[2])
                journal.close()  # the run's store closes the file
                journal = None
                reply("done")
                return 0
            else:
                raise JournalError(f"unknown message {tag!r}")
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the run
        # stop reading first: a run blocked on a full pipe then gets EPIPE and reads this
        inbox.stop()
        if journal is not None:  # what came before the failure is committed, as in line
            with contextlib.suppress(BaseException):
                journal.close()
        with contextlib.suppress(OSError):
            reply(*error_reply(exc, "journaller"))
        return 1
    finally:
        if journal is not None:  # the run stopped, or died: commit what it sent
            journal.close()


def _keep_freed_memory() -> None:
    """Have glibc's malloc keep the journaller's freed blocks for reuse (``mallopt``). Each
    batch's stored form (~60 KB on ``flow``; its blob, ~300 KB, when it came down the pipe)
    is allocated and freed twice in this process: made by ``compact``, and copied again by
    ``sqlite3`` as it binds it. Above glibc's
    mmap threshold each such block was a fresh mapping, its pages faulted in and zeroed by
    the kernel, then unmapped: ~0.02-0.03 s of the journaller's system time (a fifth of its
    page faults) on the 1,055,811-event ``flow`` log (measured). With blocks up to
    ``_MALLOC_KEEP_BYTES`` served from the heap and the heap not trimmed below that, the same
    pages serve every batch; the journaller's memory stays bounded by its queues
    (``_INBOX_BYTES``, ``_COMMIT_QUEUE_BYTES``; its peak resident size is unchanged, ~125 MB
    on that log). Nothing stored depends on it. Elsewhere than glibc: nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # imported by the helper's start already (die_with)

    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(_M_MMAP_THRESHOLD, _MALLOC_KEEP_BYTES)
        mallopt(_M_TRIM_THRESHOLD, 2 * _MALLOC_KEEP_BYTES)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m exchange.store.journal RUN_PID`` (started by
    :meth:`Journaller.spawn`; not a user command): requests on stdin, replies on the original
    stdout. Anything else the process prints goes to stderr, so it cannot garble a reply."""
    args = sys.argv[1:] if argv is None else argv
    _keep_freed_memory()
    ring = None
    if len(args) > 1:  # the buffer shared with the run (see _Ring)
        fd = int(args[1])
        ring = mmap.mmap(fd, os.fstat(fd).st_size)
        os.close(fd)
    requests, replies = child_pipes(int(args[0]))
    return serve(requests, replies, ring)


def _exit_now(code: int) -> None:
    """End the process with status ``code`` without the interpreter's finalisation: when
    :func:`serve` returns, the store is closed (or was never opened) and every reply sent,
    and a run waits for this process to exit after its seal (80-120 ms of finalisation
    measured on a loaded machine, all of it on the run's path)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
