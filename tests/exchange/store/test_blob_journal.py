"""A batch travels as its stored blob from the run to the disk (issue #20).

The run checks and encodes each batch once (``EventStore.encode_batch``: the checks an in-line
append makes), the journaller folds that blob as a replay folds it (``CompiledFold.apply_blob``:
parsed in C) and stores it as it is (``EventStore.append_blob``). What must not change: the log
(byte for byte), the refusals, the check of the fold against the live state at the seal, and the
reference fold selected with ``GPUEX_FOLD=reference``.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core.events import Event, encode
from exchange.sessions import session
from exchange.store import fold as fold_module
from exchange.store.event_store import EventStore
from exchange.store.fold import CompiledFold, Fold, FoldError
from exchange.store.journal import JournalError

from .test_journal import (
    BATCH,
    _events,
    _journaller_for,
    _journaller_start_up_hook,
    hand_overs,
    handed_off_store,
    record,
)

__all__ = ["hand_overs", "handed_off_store"]  # fixtures used here


def blob_of(events):
    return b"".join(encode(e) + b"\n" for e in events)


def test_the_run_refuses_a_batch_the_store_would_refuse_before_sending_it(handed_off_store):
    journaller = _journaller_for(handed_off_store)
    sent = []
    send = journaller._send

    def keeping_send(message):
        sent.append(message)
        return send(message)

    journaller._send = keeping_send
    with pytest.raises(ValueError, match=r"expected 4 \(the log ends at seq 3"):
        journaller.record(_events(5, 6))  # a gap after the store's last seq
    bad = _events(4, 4)[0]._replace(price=1.5)
    with pytest.raises(ValueError, match="price is 1.5 .float., not an integer"):
        journaller.record([bad])
    assert sent == []  # checked in the run: nothing went to the journaller
    journaller.record(_events(4, 5))  # the next batch is still seq 4
    journaller.finish(5, Fold().apply_all(_events(1, 5)).state_hash())
    with EventStore.open(handed_off_store.path) as store:
        assert store.last_seq == 5 and store.session["status"] == "finished"


def test_a_store_appends_a_blob_only_where_it_continues_the_log(tmp_path):
    store = EventStore.create(tmp_path / "b.db", scenario="u", seed=1, config={}, code_version="t")
    try:
        store.append(_events(1, 2))
        with pytest.raises(ValueError, match=r"does not continue the log \(the log ends at seq 2"):
            store.append_blob(blob_of(_events(4, 4)), 4, 1)
        store.append_blob(blob_of(_events(3, 5)), 3, 3)
        assert store.last_seq == 5 and store.batch_count == 2
    finally:
        store.close()
    with EventStore.open(tmp_path / "b.db") as store:
        assert list(store.payloads()) == [encode(e) for e in _events(1, 5)]


def _deposits(texts, amounts):
    """Accounts opened and funded, their names any text (escapes send lines to orjson)."""
    events, seq = [], 0
    for text, amount in zip(texts, amounts, strict=True):
        seq += 1
        events.append(Event(seq, seq, "AccountOpened", None, text, data={"name": text}))
        seq += 1
        events.append(Event(seq, seq, "Deposit", None, text, amount=amount, data={"note": text}))
    return events


_TEXT = st.text(alphabet=st.sampled_from('ab,[]{}":\\\n\t\u00e9\u2603 '), max_size=8)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(_TEXT, st.integers(-(10**17), 10**17)),  # their sums fit in int64
        min_size=1,
        max_size=6,
    )
)
def test_a_fold_from_the_blob_is_the_reference_fold_of_the_events(fields):
    texts = [t for t, _ in fields]
    amounts = [a for _, a in fields]
    events = _deposits(texts, amounts)
    reference = Fold().apply_all(events)
    compiled = CompiledFold().apply_blob(blob_of(events), 1, len(events))
    assert compiled.seq == reference.seq
    assert compiled.to_json() == reference.to_json()
    assert compiled.state_hash() == reference.state_hash()


def test_a_fold_from_the_blob_refuses_what_the_reference_refuses_naming_the_seq():
    events = _events(1, 2) + [Event(3, 3, "Deposit", None, "nobody", amount=5)]
    with pytest.raises(FoldError, match=r"seq 3: the event cannot be folded \(KeyError"):
        CompiledFold().apply_blob(blob_of(events), 1, 3)
    with pytest.raises(ValueError, match="holds 3 lines"):
        CompiledFold().apply_blob(blob_of(_events(1, 3)), 1, 2)  # not the count it came with


@pytest.mark.parametrize("live_amount, seals", [(7, True), (8, False)])
def test_the_journallers_fold_from_the_blob_seals_only_the_live_state(
    handed_off_store, live_amount, seals
):
    journaller = _journaller_for(handed_off_store)
    account = 'b\u00e9\n"'  # escapes: a line the C parser leaves to orjson
    batch = [
        Event(4, 4, "AccountOpened", None, account, data={}),
        Event(5, 5, "Deposit", None, account, amount=7, data={}),
    ]
    journaller.record(batch)
    live = Fold().apply_all(_events(1, 3) + [batch[0], batch[1]._replace(amount=live_amount)])
    if seals:
        journaller.finish(5, live.state_hash())
    else:
        with pytest.raises(JournalError, match="disagrees with the live state"):
            journaller.finish(5, live.state_hash())
        journaller.close()
    with EventStore.open(handed_off_store.path) as store:
        assert store.last_seq == 5
        assert store.session["status"] == ("finished" if seals else "running")


#: loaded by the journaller (``sitecustomize``): its fold from the blob gets one batch wrong
#: (a cent too much deposited), as a broken rule would
WRONG_FOLD = """\
from exchange.store.fold import CompiledFold

apply_stored = CompiledFold.apply_stored


def wrong(self, stored, first, count):
    apply_stored(self, stored, first, count)
    if first == 1 + 5 * count:
        self.deposited += 1
    return self


CompiledFold.apply_stored = wrong
"""


def test_a_run_whose_journaller_folds_a_batch_wrong_fails_at_the_seal(
    tmp_path, hand_overs, monkeypatch
):
    path = tmp_path / "wrong.db"
    with monkeypatch.context() as patch:
        _journaller_start_up_hook(tmp_path, patch, WRONG_FOLD)
        with pytest.raises(session.SessionError, match="disagrees with the live state"):
            record(path, 0)
    assert hand_overs["hand_overs"]
    with EventStore.open(path) as store:
        assert store.session["status"] == "running"  # never sealed
        assert store.last_seq > 5 * BATCH  # the batches were stored: the seal caught it


#: loaded by the journaller: marks that the reference fold's apply_all ran there
REFERENCE_MARK = """\
import pathlib

from exchange.store.fold import Fold

apply_all = Fold.apply_all


def marking(self, rows):
    pathlib.Path(__file__).with_name("reference-fold").touch()
    return apply_all(self, rows)


Fold.apply_all = marking
"""


def test_gpuex_fold_reference_folds_the_journallers_batches_with_the_reference(
    tmp_path, hand_overs, monkeypatch
):
    reference = record(tmp_path / "compiled.db", None)
    with monkeypatch.context() as patch:
        hook = _journaller_start_up_hook(tmp_path, patch, REFERENCE_MARK)
        patch.setenv("GPUEX_FOLD", "reference")
        patch.setattr(fold_module, "DEFAULT_FOLD", "reference")
        summary = record(tmp_path / "reference.db", 0)
    assert hand_overs["hand_overs"]
    assert (hook / "reference-fold").exists(), "the journaller did not fold with the reference"
    assert summary.state_hash == reference.state_hash
    with (
        EventStore.open(tmp_path / "reference.db") as a,
        EventStore.open(tmp_path / "compiled.db") as b,
    ):
        assert a.digest() == b.digest()


@pytest.mark.parametrize("journal_after", [None, 0], ids=["in-line", "journaller"])
def test_an_event_the_store_refuses_fails_the_run_with_a_session_error_either_way(
    tmp_path, hand_overs, monkeypatch, journal_after
):
    """An event the store cannot hold (here a float amount, emitted by a timer's code) stops
    the run with the same :class:`SessionError` whether the batch was to be stored in line or
    handed to the journaller, naming the batch and the field, and the log ends at the last
    whole batch before it."""
    from exchange.sessions.scenarios import _FlowDriver

    malformed = _FlowDriver.malformed

    def and_a_bad_event(self, i):
        malformed(self, i)
        self.engine.emit("PoolFunded", side="insurance", amount=1.5)

    monkeypatch.setattr(_FlowDriver, "malformed", and_a_bad_event)
    path = tmp_path / "refused.db"
    with pytest.raises(session.SessionError, match=r"not stored: event seq \d+: amount is 1\.5"):
        record(path, journal_after)
    assert bool(hand_overs["hand_overs"]) == (journal_after == 0)
    with EventStore.open(path) as store:
        assert store.session["status"] == "running"
        assert store.last_seq % BATCH == 0 and store.last_seq > 0
