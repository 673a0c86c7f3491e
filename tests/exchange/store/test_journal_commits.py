"""The journaller's commits: on a thread of their own, several queued batches in one transaction.

The journaller folds a batch while a thread commits the ones before it
(``exchange.store.journal._Committer``), and the batches that queued up behind a commit go in
one transaction (``EventStore.append_blobs``). What must not change: the file (the same
statements in the same order: the same pages), what is committed when something fails (every
batch before the one refused, as one transaction per batch left it), and that nothing sent is
dropped when the journaller stops.
"""

import hashlib
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exchange.core.events import encode
from exchange.store.compact import compact
from exchange.store.event_store import EventStore, verify_store
from exchange.store.fold import Fold
from exchange.store.journal import Journaller, _Committer, _ThreadedJournal

from .test_journal import _events, hand_overs, outside_the_change_counter, record

__all__ = ["hand_overs"]  # a fixture used here


def blob_of(events):
    return b"".join(encode(e) + b"\n" for e in events)


#: five batches of 7 events after the store's first 3, as (blob, first, count)
BATCHES = [(blob_of(_events(f, f + 6)), f, 7) for f in range(4, 39, 7)]


def new_store(path):
    store = EventStore.create(path, scenario="unit", seed=1, config={}, code_version="test")
    store.append(_events(1, 3))
    return store


def test_batches_committed_together_make_the_file_batches_committed_one_by_one_make(tmp_path):
    snapshot = (17, Fold().apply_all(_events(1, 17)).to_json(), "h17")
    one_by_one = new_store(tmp_path / "one.db")
    together = new_store(tmp_path / "together.db")
    rows = [
        (blob, first, count, snapshot if first == 11 else None) for blob, first, count in BATCHES
    ]
    for row in rows:
        one_by_one.append_blob(*row)
    together.append_blobs([(*rows[0], None)])
    together.append_blobs([(*row, None) for row in rows[1:4]])  # batches 3-5: one commit
    # a digest given: the stored (compact) form's, as the store computes it (schema 5)
    together.append_blobs([(*rows[4], hashlib.sha256(compact(rows[4][0])).hexdigest())])
    for store in (one_by_one, together):
        assert (store.last_seq, store.batch_count) == (38, 6)
    assert together.digest() == one_by_one.digest()
    one_by_one.close()
    together.close()
    assert outside_the_change_counter(tmp_path / "together.db") == outside_the_change_counter(
        tmp_path / "one.db"
    )
    assert verify_store(tmp_path / "together.db").ok


def test_a_batch_refused_among_several_leaves_the_ones_before_it_committed(tmp_path):
    store = new_store(tmp_path / "r.db")
    blob, first, count = BATCHES[2]
    rows = [(*b, None, None) for b in BATCHES[:2]] + [(blob, first + 1, count, None, None)]
    with pytest.raises(ValueError, match=r"batch 4 \(seqs 19\.\.25\) not stored"):
        store.append_blobs(rows + [(*BATCHES[3], None, None)])
    assert (store.last_seq, store.batch_count) == (17, 3)  # as one transaction per batch
    store.append_blobs([(*b, None, None) for b in BATCHES[2:]])  # the log goes on from there
    assert store.last_seq == 38
    store.close()
    assert verify_store(tmp_path / "r.db").ok


def test_a_committer_commits_the_batches_queued_behind_a_commit_in_one_and_drops_none(
    tmp_path, monkeypatch
):
    new_store(tmp_path / "c.db").close()
    groups = []
    first_commit = threading.Event()
    go_on = threading.Event()
    append_blobs = EventStore.append_blobs

    def held_append_blobs(self, batches, **options):
        groups.append([first for _stored, first, *_rest in batches])
        if len(groups) == 1:
            first_commit.set()
            assert go_on.wait(30)
        return append_blobs(self, batches, **options)

    monkeypatch.setattr(EventStore, "append_blobs", held_append_blobs)
    committer = _Committer(str(tmp_path / "c.db"))
    blob, first, count = BATCHES[0]
    committer.put(compact(blob), first, count, None, len(blob))
    assert first_commit.wait(30)
    for blob, first, count in BATCHES[1:]:  # queued while the first commit is under way
        committer.put(compact(blob), first, count, None, len(blob))
    go_on.set()
    committer.close()  # commits what is queued, then lets go of the file
    assert groups == [[4], [11, 18, 25, 32]]
    with EventStore.open(tmp_path / "c.db") as store:
        assert (store.last_seq, store.batch_count, store.session["status"]) == (38, 6, "running")


def test_the_batches_of_one_message_are_queued_together_once_folded(tmp_path, monkeypatch):
    """A message of the run carries up to eight batches (the ring's): the journaller folds
    them all, then queues them in one go, so that an idle committer commits them in one
    transaction, not the first alone and the rest after (the commits, and the WAL frames
    each one writes, were 8x as many: measured, decision 101)."""
    new_store(tmp_path / "m.db").close()
    queued = []
    put_many = _Committer.put_many

    def spying(self, batches):
        queued.append([(first, count, size) for _stored, first, count, _snap, size in batches])
        return put_many(self, batches)

    monkeypatch.setattr(_Committer, "put_many", spying)
    journal = _ThreadedJournal(str(tmp_path / "m.db"), 0, Fold().apply_all(_events(1, 3)))
    journal.record_blobs(BATCHES[:4])
    journal.record_blob(*BATCHES[4])
    journal.finish(39, Fold().apply_all(_events(1, 38)).state_hash())
    journal.close()
    assert queued == [
        [(first, count, len(blob)) for blob, first, count in BATCHES[:4]],
        [(32, 7, len(BATCHES[4][0]))],
    ]
    with EventStore.open(tmp_path / "m.db") as store:
        assert (store.last_seq, store.session["status"]) == (38, "finished")


def test_a_fold_that_fails_among_a_messages_batches_commits_the_ones_folded_before_it(tmp_path):
    new_store(tmp_path / "e.db").close()
    journal = _ThreadedJournal(str(tmp_path / "e.db"), 0, Fold().apply_all(_events(1, 3)))
    blob, first, count = BATCHES[2]
    broken = (blob.replace(b"[18,", b"[99,", 1), first, count)  # seq 18 is not 18
    with pytest.raises(ValueError, match="events out of order"):
        journal.record_blobs([BATCHES[0], BATCHES[1], broken, BATCHES[3]])
    journal.close()
    with EventStore.open(tmp_path / "e.db") as store:
        assert (store.last_seq, store.batch_count) == (17, 3)


def test_a_store_that_fails_in_the_committer_fails_the_journallers_next_call(tmp_path, monkeypatch):
    new_store(tmp_path / "f.db").close()
    write = EventStore._write

    def full_disk_at_seq_18(self, n, blob, batch, first, *rest):
        if first == 18:
            raise sqlite3.OperationalError("database or disk is full")
        return write(self, n, blob, batch, first, *rest)

    monkeypatch.setattr(EventStore, "_write", full_disk_at_seq_18)
    journal = _ThreadedJournal(str(tmp_path / "f.db"), 0, Fold().apply_all(_events(1, 3)))
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        for batch in BATCHES:  # the error comes back at a later call, not lost
            journal.record_blob(*batch)
        journal.finish(39, journal.fold.state_hash())
    journal.close()
    with EventStore.open(tmp_path / "f.db") as store:
        assert (store.last_seq, store.session["status"]) == (17, "running")


def test_the_journallers_store_loads_neither_the_c_encoder_nor_pydantic(tmp_path):
    """The journaller stores the run's blobs as they are: its store never encodes, so it does
    not import the encoder's extension, which pulls in numpy (40 ms of its start-up and an
    OpenBLAS thread spinning ~0.1 s of CPU on the core it commits from); its fold takes the
    bilateral books' rules from ``exchange.risk.contracts``, not the pydantic models of
    ``exchange.risk.bilateral`` (~60 ms of its start-up)."""
    new_store(tmp_path / "n.db").close()
    probe = (
        "import sys\n"
        "from exchange.store.fold import fold_class\n"
        "from exchange.store.journal import _ThreadedJournal\n"
        f"journal = _ThreadedJournal({str(tmp_path / 'n.db')!r}, 0, fold_class()())\n"
        "journal.close()\n"
        "print(sorted(m for m in ('numpy', 'pydantic', 'exchange.store._writer')"
        " if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(root)},
    )
    assert out.stdout.strip() == "[]"


def test_a_run_whose_batches_go_round_the_ring_many_times_records_the_log_in_line_gives(
    tmp_path, hand_overs, monkeypatch
):
    """The run copies each blob into the buffer it shares with the journaller and tells it
    where; with a ring of a few batches, the blobs go round it many times (the run waiting for
    the journaller to release the bytes it writes over), and the log is the in-line one."""
    from exchange.store import journal as journal_module

    # a few of the compiled engine's batches (stored form, ~6 KB each at 200 events)
    monkeypatch.setattr(journal_module, "_RING_BYTES", 32 << 10)
    told = []
    send = Journaller._send

    def telling_send(self, message):
        if message[0] == "ring":
            told.extend(message[1])
        return send(self, message)

    monkeypatch.setattr(Journaller, "_send", telling_send)
    in_line = record(tmp_path / "in-line.db", None)
    journalled = record(tmp_path / "ring.db", 0)
    assert hand_overs["hand_overs"], "the journaller never took over"
    assert journalled.state_hash == in_line.state_hash
    ends = [end for _first, _count, _offset, _size, end, _stored in told]
    assert ends[-1] > 4 * (32 << 10)  # round the ring more than four times
    assert any(offset == 0 for _first, _count, offset, _size, _end, _stored in told[1:])
    assert [first for first, *_ in told] == sorted(first for first, *_ in told)
    assert outside_the_change_counter(tmp_path / "ring.db") == outside_the_change_counter(
        tmp_path / "in-line.db"
    )
