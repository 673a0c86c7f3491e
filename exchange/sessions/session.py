"""Sessions: run a scenario into an event log, resume it after a crash, replay and verify it.

* :func:`plan` validates everything a run needs — the scenario with its overrides, the seed,
  the recorder's settings, the sizes they imply — and rehearses the scenario's setup and market
  schedule on a throwaway engine, without touching the disk; :func:`run` plans before it
  creates anything, so bad input leaves no file behind.
* :func:`run` drives a scenario through the engine on the simulated clock and records every
  event. Events are committed in batches of exactly ``batch_size`` (the last one may be
  shorter), so batch boundaries — and with them the checksum chain — depend only on the
  events, never on when a crash happened.
* ``run(..., resume=True)`` re-executes the scenario from the start with the same seed,
  checking each regenerated event against the committed log byte for byte, and appends from
  the first event that was not committed: the finished log is identical to an uninterrupted
  run's.
* :func:`replay` / :func:`state_at` fold the stored events (no engine, no randomness), starting
  from the nearest snapshot when one exists; snapshots are a cache written every
  ``snapshot_every`` events and never change the answer.
* :func:`verify` checks the checksum chain, re-executes the recorded commands through a fresh
  engine and requires byte-identical events, and checks the replayed state hash against the
  one the live run recorded.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from exchange.core import events as ev
from exchange.core._lines import BadLine, LineBatch
from exchange.core.clock import Simulator
from exchange.core.events import TYPED_FIELDS, Event, encode
from exchange.core.limits import check_recorder, check_seed
from exchange.kernel.engine import Exchange
from exchange.kernel.engines import DEFAULT_ENGINE, STORED_LINES, clock_class, engine_class
from exchange.sessions._flow import RunStep
from exchange.sessions.scenarios import (
    is_registered,
    load_scenario,
    scenario_from_config,
)
from exchange.store.check import StoreCheck, StoreCheckError
from exchange.store.compact import expand
from exchange.store.event_store import _CODES as STORE_CODES  # first_bad's column codes
from exchange.store.event_store import (
    PROGRESS_EVERY,
    EventStore,
    VerifyReport,
    _connect_ro,
    verify_store,
)
from exchange.store.fold import Fold, FoldError, fold_class
from exchange.store.journal import Journal, JournalError, Journaller

CODE_VERSION = "gpuex-0.1.0"
DEFAULT_BATCH = 2_000
DEFAULT_SNAPSHOT_EVERY = 100_000
#: Events a run records in line before a journaller process takes over (see ``run``): a
#: journaller takes 0.3 s or more to start (its imports alone 0.23 s, and up to 1 s from the
#: spawn to its first batch on a machine loaded at 5), during which the run records 100k
#: events or more in line anyway, and each process started costs the run 2-8 ms (started,
#: then killed if the run ends first): runs shorter than a few hundred thousand events gain
#: little and most tests' runs none at all (measured, issue #20).
DEFAULT_JOURNAL_AFTER = 100_000
#: A run whose pace projects at least :data:`LONG_RUN_EVENTS` events by its end (its events so
#: far, scaled by the simulated time left: ``events x end_ns / t``) starts its journaller
#: once :data:`EARLY_JOURNAL_AFTER` events are in (when ``journal_after`` is larger): such a
#: run outlasts the journaller's start-up by far, and every event it records in line costs
#: the engine's core time the journaller's would not (the flagship year: ~5 % of its CPU;
#: a 70,000-event run that started one at 20,000 waited 0.1-0.5 s at its end for it: runs that
#: short keep the 100,000). The hand-over never changes the log.
EARLY_JOURNAL_AFTER = 20_000
LONG_RUN_EVENTS = 200_000
#: Allocations between young-generation collections during a run (Python's default: 700).
_GC_YOUNG_THRESHOLD = 10_000
_COLLECTOR_LOCK = threading.Lock()
_COLLECTOR_STATE: dict[str, Any] = {"depth": 0, "threshold": None}


class SessionError(RuntimeError):
    """A session cannot be run, resumed or read as asked (the message says why)."""


class _Diverged(Exception):
    def __init__(self, seq: int, expected: bytes | None, got: bytes | None):
        super().__init__(seq)
        self.seq, self.expected, self.got = seq, expected, got


class Recorder:
    """Batches the engine's events into the store through a :class:`~exchange.store.journal.Journal`
    (fold, snapshots, commits).

    The engine's sink is ``pending.append``: ``pending`` is a
    :class:`~exchange.core._lines.LineBatch`, which keeps each event as its canonical line (in
    C: no Python object kept per event, and the compiled kernel writes its own events' lines
    there without making them). Whoever drives the engine calls :meth:`drain` between commands,
    :meth:`flush` and :meth:`finish` at the end and :meth:`close` in any case. Every batch
    travels as its blob: folded from it and stored as it is (:meth:`Journal.record_blob`), or
    sent as it is to the journaller. With ``committed`` (an iterator over the stored payloads
    of a crashed run), the first events are compared with the log instead of written: that is
    how resume catches up.

    Once ``journal_after`` events are in the log (None: never), a journaller process is
    started; as soon as it is up it takes the store and records every further batch, on
    another core, while the engine goes on (see :mod:`exchange.store.journal`). The log is the same
    either way. With ``end_ns`` (the session's end, simulated ns), a run whose pace projects
    :data:`LONG_RUN_EVENTS` or more starts it after :data:`EARLY_JOURNAL_AFTER` events
    instead, if that is fewer. With ``projected_events`` (what the run will make at least,
    known before its first event: :func:`projected_events`), a run of
    :data:`LONG_RUN_EVENTS` or more starts it at its first :meth:`drain` (before its first
    event, once the engine is set up), so that its start-up overlaps the run's, and hands
    over at the first batch after it is up (the run's first batch is always its own).

    ``on_batch(count, last_t)``: after each batch, its number of events and the ``t`` (ns) of
    its last one.
    """

    def __init__(
        self,
        store: EventStore,
        batch_size: int,
        snapshot_every: int,
        committed: Iterator[bytes] | None = None,
        committed_count: int = 0,
        on_batch: Callable[[int, int], None] | None = None,
        journal_after: int | None = None,
        end_ns: int | None = None,
        projected_events: int | None = None,
        stored_lines: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if snapshot_every and snapshot_every % batch_size:
            raise ValueError("snapshot_every must be a multiple of batch_size")
        if journal_after is not None and journal_after < 0:
            raise ValueError("journal_after must be >= 0 (or None: never)")
        self.journal = Journal(store, snapshot_every)
        self.batch_size = batch_size
        # the engine's first event is seq 1; each event is checked as the store checks it
        self.pending = LineBatch(1, STORE_CODES, TYPED_FIELDS, len(Event._fields))
        if stored_lines:  # each batch taken as its stored form (a tap turns it back to lines)
            self.pending.store_compact(batch_size)
        self._committed = committed
        self._committed_count = committed_count
        self._on_batch = on_batch
        self._journal_after = journal_after
        # the early start applies to runs that say when they end and would start later
        self._end_ns = (
            end_ns
            if end_ns is not None
            and journal_after is not None
            and journal_after > EARLY_JOURNAL_AFTER
            else None
        )
        self._journaller: Journaller | None = None
        self._handed_over = False
        # this run's connection has committed a batch: only then may the journaller take
        # over, so that the file is the same whenever it does (SQLite's file change counter
        # counts each connection that wrote, and so always counts both)
        self._wrote = False
        # a run known to be long starts its journaller at its first drain (the run drains
        # once its engine is set up, inside the block that closes the recorder), so that
        # the journaller's start-up (0.1-0.3 s) runs beside the run's own; as with the early
        # start, an explicit journal_after at or below EARLY_JOURNAL_AFTER is kept as given
        self._start_at_once = (
            projected_events is not None
            and projected_events >= LONG_RUN_EVENTS
            and journal_after is not None
            and journal_after > EARLY_JOURNAL_AFTER
        )

    def drain(self) -> None:
        """Commit every complete batch pending (batches of exactly ``batch_size`` events,
        whenever this is called)."""
        if self._start_at_once:
            self._start_at_once = False
            self._start_journaller()
        pending = self.pending
        size = self.batch_size
        while len(pending) >= size:
            self._commit(size)

    def flush(self) -> None:
        """Commit everything pending (the last batch may be short)."""
        self.drain()
        if len(self.pending):
            self._commit(len(self.pending))

    def finish(self, t: int, state_hash: str) -> None:
        """After :meth:`flush`: check the fold of the log against the live ``state_hash`` and
        seal the store at simulated time ``t`` (ns). Raises :class:`SessionError` if they
        disagree (the store is left unsealed)."""
        try:
            if self._handed_over:
                self._journaller.finish(t, state_hash)  # type: ignore[union-attr]
            else:
                self.journal.finish(t, state_hash)
        except JournalError as exc:
            raise SessionError(str(exc)) from None

    def close(self) -> None:
        """Stop the journaller process, if one was started, after the batches it was sent
        (on an error of the run it leaves the closing of the file to the run's store).
        Idempotent."""
        if self._journaller is not None:
            self._journaller.close()

    def _take(
        self, n: int, batch: int, into: tuple[Any, int] | None = None
    ) -> tuple[bytes | None, int, int, int]:
        """The next ``n`` lines pending as ``(blob, first, count, last_t)``; an event among
        them the store refuses raises ValueError as :meth:`EventStore.encode_batch` words it
        (``batch``: the batch's number in the log). With ``into`` (``(buffer, offset)``:
        :meth:`Journaller.reserve`'s place), the blob is written there instead (None)."""
        try:
            if into is not None:
                first, count, last_t, _size = self.pending.take_into(n, *into)
                return None, first, count, last_t
            return self.pending.take(n)
        except BadLine as exc:
            first = exc.seq - exc.position
            reason = exc.reason
            if reason is None:
                reason = (
                    f"event seq {exc.got!r} at position {exc.position} of the batch: expected "
                    f"{exc.seq} (the log ends at seq {first - 1}; seqs must be contiguous)"
                )
            raise ValueError(
                f"batch {batch} (seqs {first}..{first + n - 1}) not stored: {reason}"
            ) from None

    def _commit(self, n: int) -> None:
        """Commit the next ``n`` pending events as one batch (one transaction), or check them
        against the log when resuming."""
        first = self.pending.first
        if first <= self._committed_count:
            blob, first, count, last_t = self._take(n, self.journal.store.batch_count + 1)
            self._catch_up(blob, first, count)
        else:
            journaller = self._journaller
            if (
                journaller is not None
                and not self._handed_over
                and self._wrote
                and journaller.ready()
            ):
                self._hand_over(journaller)
            if self._handed_over:
                assert journaller is not None
                try:
                    # the blob written straight into the buffer shared with the journaller
                    # where there is one (no bytes object, no second copy: decision 104)
                    place = journaller.reserve(self.pending.size_of(n))
                    try:
                        blob, first, count, last_t = self._take(n, journaller.next_batch, place)
                    except ValueError as exc:  # refused before it was sent: as in line
                        path = self.journal.store.path
                        raise SessionError(_unwritten(path, first, first + n - 1, exc)) from None
                    stored = self.pending.stored
                    if blob is None:
                        journaller.record_placed(first, count, stored)
                    else:
                        journaller.record_blob(blob, first, count, stored)
                except JournalError as exc:
                    raise SessionError(str(exc)) from None
            else:
                try:
                    blob, first, count, last_t = self._take(n, self.journal.store.batch_count + 1)
                    if self.pending.stored:
                        self.journal.record_stored(blob, first, count)
                    else:
                        self.journal.record_blob(blob, first, count)
                except (sqlite3.Error, ValueError) as exc:
                    # the batch's transaction rolled back: the log ends at the last whole batch
                    path = self.journal.store.path
                    raise SessionError(_unwritten(path, first, first + n - 1, exc)) from None
                self._wrote = True
                last = first + count - 1
                if (
                    journaller is None
                    and self._journal_after is not None
                    and (last >= self._journal_after or self._runs_long(last, last_t))
                ):
                    self._start_journaller()
        if self._on_batch is not None:
            self._on_batch(count, last_t)

    def _runs_long(self, events: int, t: int) -> bool:
        """Whether ``events`` recorded by simulated time ``t`` (ns) project at least
        :data:`LONG_RUN_EVENTS` by the run's end (at the same pace), once
        :data:`EARLY_JOURNAL_AFTER` are in."""
        end_ns = self._end_ns
        return (
            end_ns is not None
            and events >= EARLY_JOURNAL_AFTER
            and events * end_ns >= LONG_RUN_EVENTS * max(t, 0)
        )

    def _start_journaller(self) -> None:
        """Start the journaller process (it takes over once it is up: :meth:`_commit`), or,
        where none can start, record in line to the end."""
        self._journaller = Journaller.spawn()
        if self._journaller is None:  # no process here: go on in line
            self._journal_after = None

    def _hand_over(self, journaller: Journaller) -> None:
        """Give the store to ``journaller`` (up and waiting), after the last batch recorded
        in line."""
        store = self.journal.store
        store.hand_off()
        journaller.hand_over(store, self.journal.snapshot_every, self.journal.fold)
        self._handed_over = True

    def _catch_up(self, blob: bytes, first: int, count: int) -> None:
        if first + count - 1 > self._committed_count:
            raise SessionError("committed log does not end on a batch boundary")
        if self.pending.stored:
            blob = expand(blob)
        # the stored payloads against this run's lines (a resume only: one bytes object each)
        for seq, mine in enumerate(blob.split(b"\n")[:count], first):
            stored = next(self._committed, None)
            if stored != mine:
                raise _Diverged(seq, stored, mine)
        self.journal.fold_blob(blob, first, count)


def projected_events(model: Any) -> int | None:
    """The fewest events a run of the scenario ``model`` will make, when that is known before
    it starts (the model's ``projected_events`` attribute: an int; ``flow``'s is its
    ``messages``), else None. The :class:`Recorder` starts the journaller of a run projected
    :data:`LONG_RUN_EVENTS` or more at once (issue #20); other scenarios are projected from
    their pace as they run."""
    projected = getattr(model, "projected_events", None)
    if type(projected) is int and projected >= 0:
        return projected
    return None


def _unwritten(path: Path, first: int, last: int, exc: BaseException) -> str:
    """Why a batch (seqs ``first..last``) could not be committed (a full disk, say), and that
    the log is resumable."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    return (
        f"{path}: events {first:,}..{last:,} could not be written ({root}); the "
        f"{first - 1:,} events committed before are intact: free the space and continue "
        "with --resume"
    )


@dataclass(frozen=True)
class RunPlan:
    """A run, validated in full by :func:`plan` and not yet started: what ``run(plan=...)``
    records.

    Attributes:
        scenario: the name stored with the session.
        model: the validated scenario object.
        seed: the session's seed.
        batch_size, snapshot_every: the recorder's settings.
        config: the scenario's configuration (the model as JSON), as ``SessionStarted``
            carries it.
    """

    scenario: str
    model: Any
    seed: int
    batch_size: int
    snapshot_every: int
    config: dict[str, Any]

    @property
    def stored_config(self) -> dict[str, Any]:
        """What the store records: :attr:`config` with the recorder's settings under
        ``_recorder``."""
        return {
            **self.config,
            "_recorder": {"batch_size": self.batch_size, "snapshot_every": self.snapshot_every},
        }


def plan(
    scenario: str,
    *,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
    model: Any = None,
    batch_size: int = DEFAULT_BATCH,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    engine: str = DEFAULT_ENGINE,
) -> RunPlan:
    """Validate a whole run without touching the disk, and return its :class:`RunPlan`.

    Checks, in order: the engine's name (``exchange.kernel.engines``: ``compiled`` or ``reference``,
    the one the rehearsal runs on; not part of the plan, since both give the same log), the
    recorder's settings (``exchange.core.limits.check_recorder``), the
    scenario with its ``overrides`` (or the given ``model``) against its model and the bounds
    of ``exchange.core.limits`` (money, durations, dates, and the timed actions the market implies),
    the seed (``0..2**63 - 1``), that the configuration survives being stored (JSON in, the
    same scenario out: what ``verify`` and ``--resume`` rebuild), and a rehearsal of the
    scenario's ``setup`` and ``schedule_market`` on a throwaway engine, so that nothing the
    run does before its participants act can fail once the store exists.

    Raises:
        SessionError: one line naming the field or option and the problem.
    """
    _engine_class(engine)
    try:
        check_recorder(batch_size, snapshot_every)
    except ValueError as exc:
        raise SessionError(str(exc)) from None
    given = model
    if model is None:
        try:
            model = load_scenario(scenario, overrides)
        except ValueError as exc:
            raise SessionError(str(exc)) from None
    if seed is None:
        seed = getattr(model, "seed", 7)
    try:
        check_seed(seed)
    except ValueError as exc:
        raise SessionError(str(exc)) from None
    config = model.model_dump(mode="json")
    # a model handed in through the Python API under a name the registry does not know (a
    # test's or a bench's own market) cannot be rebuilt from its stored form by anyone: only
    # its JSON form is checked then
    rebuild = given is None or is_registered(scenario, config)
    _check_stored_round_trip(scenario, model, config, rebuild)
    _rehearse(scenario, model, seed, config, engine)
    return RunPlan(scenario, model, seed, batch_size, snapshot_every, config)


def _check_stored_round_trip(
    scenario: str, model: Any, config: dict[str, Any], rebuild: bool = True
) -> None:
    """The stored configuration must give back the same scenario: a value JSON cannot hold
    (NaN is stored as null) would make the finished log unverifiable. With ``rebuild`` off
    only the JSON form itself must survive the round trip."""
    try:
        stored = orjson.loads(orjson.dumps(config))
        if not rebuild:
            if stored != config:
                raise ValueError("a value JSON cannot hold, such as NaN")
            return
        again = scenario_from_config(scenario, stored)
    except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
        raise SessionError(f"the scenario cannot be stored: {' '.join(str(exc).split())}") from None
    if again != model:
        raise SessionError(
            "the scenario cannot be stored as given: read back from its stored form it differs "
            "(a value JSON cannot hold, such as NaN?)"
        )


def _rehearse(
    scenario: str, model: Any, seed: int, config: dict[str, Any], engine: str = DEFAULT_ENGINE
) -> None:
    """Run the scenario's setup and market schedule on a throwaway ``engine`` (its name, see
    ``exchange.kernel.engines``) and clock (events discarded): what a run does before its first
    participant acts, done once without a store. The market's size is bounded by the
    scenario's own validation (``exchange.core.limits``)."""
    rehearsal = _engine_class(engine)(_discard)
    try:
        rehearsal.start(scenario, seed, config)
        model.setup(rehearsal)
        model.schedule_market(rehearsal, Simulator(), seed)
    except Exception as exc:  # noqa: BLE001 - whatever fails here would fail the run later
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SessionError(f"the scenario cannot be set up: {reason}") from None


def _discard(event: Event) -> None:
    """The rehearsal's event sink."""


def _engine_class(name: str) -> type[Exchange]:
    """The engine class called ``name`` (``exchange.kernel.engines``); an unknown name is a
    :class:`SessionError` listing the choices."""
    try:
        return engine_class(name)
    except ValueError as exc:
        raise SessionError(str(exc)) from None


@dataclass
class RunSummary:
    """What a run produced."""

    path: str
    scenario: str
    seed: int
    events: int
    state_hash: str
    resumed_from: int = 0


def run(
    scenario: str,
    db: str | Path,
    *,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    model: Any = None,
    drive: Callable[[Exchange, Simulator], Any] | None = None,
    durability: str = "normal",
    batch_size: int = DEFAULT_BATCH,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    on_batch: Callable[[int], None] | None = None,
    on_time: Callable[[int, int], None] | None = None,
    on_seal: Callable[[], None] | None = None,
    journal_after: int | None = DEFAULT_JOURNAL_AFTER,
    planned: RunPlan | None = None,
    engine: str = DEFAULT_ENGINE,
) -> RunSummary:
    """Run (or resume) a built-in scenario into the SQLite log at ``db``.

    A fresh run is planned first (:func:`plan`): bad input raises :class:`SessionError` before
    any file is created.

    Args:
        scenario: a built-in scenario name (``flow``).
        db: the session's SQLite file; must not exist unless ``resume``.
        seed: the seed of every random source in the scenario (default 7).
        overrides: scenario fields to change (validated).
        resume: continue a crashed session in ``db`` with its stored scenario, seed and
            settings (``seed``, ``overrides`` and ``model``, if given, must match them). A
            file that was killed before its first commit holds nothing, and is started
            afresh. The session is re-run from its start and every regenerated event must
            equal the committed one (with ``drive``, the bots it attaches must act as they
            did: remote bots are re-run over the gateway).
        durability: ``full`` or ``normal`` (see ``docs/event_store.md``).
        batch_size: events per committed batch.
        snapshot_every: events between fold snapshots (a multiple of ``batch_size``; 0 = none).
        on_batch: called with the number of events after each batch (progress; once a
            journaller records the batches, when a batch is handed to it).
        on_time: called after each batch, as ``on_batch``, with the simulated time of its
            last event and the time the session ends (ns): progress in simulated time.
        on_seal: called once, after the last batch, when the store is about to be sealed.
            The run builds no post-mortem index (``gpuex index`` does, on demand; see
            ``docs/event_store.md``).
        journal_after: events recorded in this process before a journaller process takes
            over the recording, on another core (:mod:`exchange.store.journal`); None: never. The
            log is byte-identical either way; short runs never start one, a run whose pace
            projects :data:`LONG_RUN_EVENTS` events or more starts it after
            :data:`EARLY_JOURNAL_AFTER` (if fewer), and one known to make that many
            (:func:`projected_events`) starts it before its first event and hands over after
            its first batch.
        model: an already validated scenario object to run instead of loading ``scenario``
            (``scenario`` is then only the name stored with the session).
        drive: ``drive(engine, sim)`` instead of ``model.drive`` (the socket gateway attaches
            remote bots this way); it may return a function called with the engine at the end
            time, just before ``SessionEnded``.
        planned: the :class:`RunPlan` of an earlier :func:`plan` (its scenario, seed, model
            and recorder settings are used instead of the arguments; for a fresh run).
        engine: the engine that runs the session, by name (``exchange.kernel.engines``):
            ``compiled`` (the default) or ``reference``, the plain-Python engine it is held
            byte-identical to. The name selects the whole kernel: the compiled engine runs on
            the compiled clock (and `flow` on the compiled driver), the reference on the
            Python ones. Not recorded: a log made by one resumes and verifies with the other.

    Raises:
        SessionError: the run cannot start or resume as asked (a finished session has
            nothing to resume), or its log disagrees with it.
    """
    path = Path(db)
    make_engine = _engine_class(engine)  # an unknown name fails before any file exists
    make_clock = clock_class(engine)  # the engine's name selects its clock too
    committed_count = 0
    committed: Iterator[bytes] | None = None
    reader = None
    if seed is not None:
        try:
            check_seed(seed)
        except ValueError as exc:
            raise SessionError(str(exc)) from None
    if resume and not _has_session(path):
        resume = False  # killed before its first commit: nothing to keep, start afresh
    if resume:
        store = EventStore.open(path, mode="a")
        info = store.session
        try:
            config = orjson.loads(info["config"])
            settings = config.pop("_recorder")
            if model is None:
                model = scenario_from_config(info["scenario"], config)
            elif model.model_dump(mode="json") != config:
                raise SessionError(
                    f"{path}: the stored session ran other scenario settings than the ones given"
                )
            _check_same_session(info, model, scenario, seed, overrides)
            if info["status"] == "finished":
                # with or without its post-mortem indexes: a run never builds them, so a
                # sealed log is all a run (or its resume) makes (issue #20)
                raise SessionError(
                    f"{path}: session already finished; nothing to resume (`gpuex index "
                    f"{path}` builds its post-mortem indexes)"
                )
        except BaseException:
            store.close()
            raise
        scenario, seed = info["scenario"], info["seed"]
        batch_size, snapshot_every = settings["batch_size"], settings["snapshot_every"]
        committed_count = store.last_seq
        reader = EventStore.open(path, mode="r")
        committed = reader.payloads(1, committed_count)
    else:
        if planned is None:
            planned = plan(
                scenario,
                seed=seed,
                overrides=overrides,
                model=model,
                batch_size=batch_size,
                snapshot_every=snapshot_every,
                engine=engine,
            )
        scenario, model, seed = planned.scenario, planned.model, planned.seed
        batch_size, snapshot_every = planned.batch_size, planned.snapshot_every
        config = planned.config
        try:
            store = EventStore.create(
                path,
                scenario=scenario,
                seed=seed,
                config=planned.stored_config,
                code_version=CODE_VERSION,
                durability=durability,
            )
        except FileExistsError:
            raise SessionError(
                f"{path} already exists; use --resume to continue it or choose a new path"
            ) from None
        except sqlite3.Error as exc:
            _remove_shell(path)
            raise SessionError(f"{path}: cannot create the event log ({exc})") from None

    def after_batch(count: int, last_t: int) -> None:
        if on_batch is not None:
            on_batch(count)
        if on_time is not None:
            on_time(last_t, model.end_ns)

    recorder = Recorder(
        store,
        batch_size,
        snapshot_every,
        committed,
        committed_count,
        after_batch,
        journal_after,
        model.end_ns,
        projected_events(model),
        stored_lines=engine in STORED_LINES,
    )
    pending = recorder.pending
    engine = make_engine(pending.append)  # from here on, the engine itself
    sim = make_clock()
    step: Callable[[int], None]
    if isinstance(sim, Simulator):

        def step(t: int) -> None:
            # before each action: move the clock and commit the batches the last one completed
            engine.advance(t)
            if len(pending) >= batch_size:
                recorder.drain()

    else:
        # the compiled clock runs the same step as C (``exchange.sessions._flow.RunStep``);
        # an engine whose ``advance`` is the reference's has its clock set without the call
        direct = "advance" not in vars(engine) and type(engine).advance is Exchange.advance
        step = RunStep(engine, pending, batch_size, recorder.drain, direct)

    try:
        engine.start(scenario, seed, config)
        model.setup(engine)
        recorder.drain()
        model.schedule_market(engine, sim, seed)
        finish = model.drive(engine, sim, seed) if drive is None else drive(engine, sim)
        with _collector_for_long_runs():
            sim.run(model.end_ns, on_step=step)
        engine.advance(model.end_ns)
        if drive is not None and finish is not None:
            finish(engine)
        digest = engine.end()
        recorder.flush()
        if on_seal is not None:
            on_seal()
        recorder.finish(engine.t, digest)
    except _Diverged as exc:
        raise SessionError(
            f"{path}: cannot resume: the scenario regenerates a different event at seq {exc.seq} "
            "(a different code version, a bot that acts differently, or a damaged log)"
        ) from None
    finally:
        recorder.close()
        if reader is not None:
            reader.close()
        store.close()
    return RunSummary(str(path), scenario, seed, engine.seq, digest, committed_count)


@contextlib.contextmanager
def _collector_for_long_runs() -> Iterator[None]:
    """Tune Python's cyclic garbage collector for the run loop, and restore it after.

    A run allocates millions of short-lived, acyclic objects (events, commands); with the
    default settings the collector runs thousands of young and a few dozen full collections,
    each full one walking every object alive (the modules, the scenario), and finds nothing:
    12-17 % of the flow kernel's time, measured. Freezing what exists before the loop moves it
    out of the collector's sight, and a larger young-generation threshold makes the young
    collections rarer. Cycles are still collected; nothing the events depend on changes.
    """
    # runs may overlap (threads of one process): only the first to enter tunes the
    # collector, and only the last to leave restores it
    with _COLLECTOR_LOCK:
        _COLLECTOR_STATE["depth"] += 1
        if _COLLECTOR_STATE["depth"] == 1:
            threshold = gc.get_threshold()
            _COLLECTOR_STATE["threshold"] = threshold
            gc.freeze()
            gc.set_threshold(max(threshold[0], _GC_YOUNG_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        with _COLLECTOR_LOCK:
            _COLLECTOR_STATE["depth"] -= 1
            if _COLLECTOR_STATE["depth"] == 0:
                gc.set_threshold(*_COLLECTOR_STATE["threshold"])
                gc.unfreeze()


def committed_session(db: str | Path) -> dict[str, Any] | None:
    """The ``sessions`` row (:attr:`EventStore.session`) of the session committed in ``db``,
    or None if there is none: no file, or the empty shell of a run killed before its first
    commit (removed, as :func:`run` with ``resume`` removes it). Raises
    :class:`~exchange.store.event_store.StoreError` for a file that is not a gpuex store."""
    path = Path(db)
    if not _has_session(path):
        return None
    with EventStore.open(path, mode="r") as store:
        return store.session


def _remove_shell(path: Path) -> None:
    """Remove what a failed creation left at ``path`` (an empty or partial file: nothing was
    committed), and its ``-wal``/``-shm``/``-journal`` files and the ``-creating`` file
    :meth:`EventStore.create` builds a store in."""
    for suffix in ("", "-wal", "-shm", "-journal", "-creating"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _has_session(path: Path) -> bool:
    """Does ``path`` hold a committed session? A missing file does not; nor does an SQLite
    file with no tables (what a process killed while creating a store left, before creation
    was atomic, see :meth:`EventStore.create`), read as a reader reads it: its hot journal
    rolled back first. Such a shell, with every file beside it, is removed so the run can
    start afresh. Any other file holds one, or is for :meth:`EventStore.open` to refuse."""
    if not path.exists():
        return False
    if _tables(path):
        return True
    _remove_shell(path)
    return False


def _tables(path: Path) -> int:
    """The entries of ``path``'s schema, as :meth:`EventStore.open` would read them (a hot
    journal left by a writer killed mid-transaction rolled back first: the file it covers
    may be an uncommitted header over nothing); 1 for a file SQLite cannot read, which is
    not ours to judge empty."""
    try:
        con = _connect_ro(path)
        try:
            return con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            con.close()
    except (sqlite3.DatabaseError, OSError):
        return 1  # let EventStore.open say what is wrong


def _check_same_session(
    info: dict[str, Any], model, scenario: str, seed: int | None, overrides: dict[str, Any] | None
) -> None:
    if scenario != info["scenario"]:
        raise SessionError(
            f"the stored session runs scenario {info['scenario']!r}, not {scenario!r}"
        )
    if seed is not None and seed != info["seed"]:
        raise SessionError(f"the stored session has seed {info['seed']}, not {seed}")
    if overrides and load_scenario(scenario, overrides) != model:
        raise SessionError("the stored session's scenario settings differ from --set")


# ---------------------------------------------------------------------- replay
def _fold_from(
    store: EventStore,
    until: int | None,
    use_snapshots: bool,
    progress: Callable[[int, int], None] | None = None,
    fold_name: str | None = None,
) -> Fold:
    last = store.last_seq if until is None else min(until, store.last_seq)
    if until is not None and until > store.last_seq:
        raise SessionError(f"seq {until} is beyond the log's last event ({store.last_seq})")
    cls = fold_class(fold_name)
    fold = cls()
    if use_snapshots:
        snap = store.latest_snapshot(last)
        if snap is not None:
            fold = cls.from_snapshot(*snap)  # checked against its recorded hash
    if progress is None:
        if fold.seq < last:
            fold.fold_store(store, fold.seq + 1, last)
        return fold
    # in slices, to say how far it is (the same fold: the rows are applied in the same order)
    for first in range(fold.seq + 1, last + 1, PROGRESS_EVERY * 4):
        fold.fold_store(store, first, min(first + PROGRESS_EVERY * 4 - 1, last))
        progress(fold.seq, last)
    return fold


def replay(
    db: str | Path,
    until: int | None = None,
    *,
    use_snapshots: bool = True,
    fold: str | None = None,
) -> Fold:
    """Fold the log at ``db`` up to event ``until`` (inclusive; default: the end).

    ``fold``: ``compiled`` (:class:`~exchange.store.fold.CompiledFold`) or ``reference``
    (:class:`~exchange.store.fold.Fold`); None: :data:`exchange.store.fold.DEFAULT_FOLD`.
    Both give the same state."""
    with EventStore.open(db, mode="r") as store:
        return _fold_from(store, until, use_snapshots, fold_name=fold)


def state_at(db: str | Path, seq: int, *, fold: str | None = None) -> Fold:
    """The exchange state just after event ``seq``, from the nearest snapshot at or before it
    (``fold`` as in :func:`replay`)."""
    return replay(db, seq, fold=fold)


# ---------------------------------------------------------------------- verify
@dataclass
class Verdict:
    """The result of :func:`verify`: ``ok`` only if every check passed."""

    ok: bool
    events: int
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None
    state_hash: str | None = None


#: The stages of :func:`verify`, in order, as its ``progress`` callback names them.
VERIFY_STAGES = ("checksums", "re-execution", "replay")


#: Logs of at least this many events are verified with their store check in a helper process
#: (:mod:`exchange.store.check`), beside the re-execution and the replay; shorter logs in line
#: (the helper takes about 0.3 s to start).
CHECK_ASIDE_AFTER = 100_000


def verify(
    db: str | Path,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    check_aside_after: int | None = CHECK_ASIDE_AFTER,
    engine: str = DEFAULT_ENGINE,
) -> Verdict:
    """Check a log: checksum chain, byte-identical re-execution, replayed state hash.

    ``progress(stage, done, total)``, if given, is called as each of :data:`VERIFY_STAGES`
    goes on (events done and to do; every few thousand events and at the end of a stage).
    On a log of at least ``check_aside_after`` events (None: never) the store check runs in a
    helper process on the machine's other core while this one re-executes and replays; the
    verdict is the same either way (the store's problems first, as when the stages run one
    after the other), and so the ``checksums`` stage then overlaps the other two.

    ``engine`` names the engine that re-executes (``exchange.kernel.engines``: ``compiled``, the
    default, or ``reference``): either verifies a log recorded by either. An unknown name
    raises :class:`SessionError` before anything is read."""
    _engine_class(engine)

    def reporter(stage: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(stage, done, total)

    checksums, reexecution, replaying = (reporter(stage) for stage in VERIFY_STAGES)
    aside = None
    if check_aside_after is not None and _claimed_events(db) >= check_aside_after:
        aside = StoreCheck.start(db)
    if aside is None:
        report = verify_store(db, checksums)
        if not report.ok:
            return _store_verdict(report)
        return _verify_execution(db, reexecution, replaying, engine)
    try:
        return _verify_beside(aside, db, checksums, reexecution, replaying, engine)
    finally:
        aside.close()


class _StoreDamaged(Exception):
    """The store check has failed: the re-execution beside it can stop."""


def _verify_beside(
    aside: StoreCheck,
    db: str | Path,
    checksums: Callable[[int, int], None] | None,
    reexecution: Callable[[int, int], None] | None,
    replaying: Callable[[int, int], None] | None,
    engine: str = DEFAULT_ENGINE,
) -> Verdict:
    """:func:`verify` with the store check in ``aside``: re-execute and replay here, looking
    in on the check at every progress step, and give its verdict first."""

    def store_report() -> VerifyReport:
        try:
            return aside.report(checksums)
        except StoreCheckError:  # the helper died: check here, the verdict is the same
            return verify_store(db, checksums)

    def looking_in(then: Callable[[int, int], None] | None) -> Callable[[int, int], None]:
        def step(done: int, total: int) -> None:
            if then is not None:
                then(done, total)
            report = aside.poll(checksums)
            if report is not None and not report.ok:
                raise _StoreDamaged

        return step

    try:
        verdict = _verify_execution(db, looking_in(reexecution), looking_in(replaying), engine)
    except _StoreDamaged:
        verdict = None
    except Exception:
        # a damaged file can fail the re-execution in any way; the store check says how
        report = store_report()
        if not report.ok:
            return _store_verdict(report)
        raise
    report = store_report()
    if not report.ok or verdict is None:
        return _store_verdict(report)
    return verdict


def _claimed_events(db: str | Path) -> int:
    """The number of events the log says it holds (0 if it cannot be read: the store check,
    in line, then says why)."""
    try:
        with EventStore.open(db, mode="r") as store:
            return store.last_seq
    except Exception:  # noqa: BLE001 - any damage: verify_store reports it
        return 0


def _store_verdict(report: VerifyReport) -> Verdict:
    return Verdict(False, report.events, list(report.problems), report.first_bad_seq)


def _verify_execution(
    db: str | Path,
    reexecution: Callable[[int, int], None] | None,
    replaying: Callable[[int, int], None] | None,
    engine: str = DEFAULT_ENGINE,
) -> Verdict:
    """The second and third stages of :func:`verify`, on a store already found sound, the
    re-execution on ``engine`` (its name)."""
    # checked=False: the store check (verify_store, in line before or beside) checks every row
    with EventStore.open(db, mode="r", checked=False) as store:
        info = store.session
        problem = _reexecute(store, info, reexecution, engine)
        if problem is not None:
            seq, text = problem
            return Verdict(False, store.last_seq, [text], seq)
        fold = _fold_from(store, None, use_snapshots=False, progress=replaying)
        digest = fold.state_hash()
        if info["status"] == "finished" and digest != info["final_state_hash"]:
            return Verdict(
                False,
                store.last_seq,
                ["replayed state hash differs from the recorded one"],
                store.last_seq,
            )
        for seq, state_json, snap_hash in store.snapshots():
            try:
                Fold.from_snapshot(seq, state_json, snap_hash)
            except FoldError:
                return Verdict(False, store.last_seq, [f"snapshot at seq {seq} is damaged"], seq)
        return Verdict(True, store.last_seq, [], None, digest)


def _reexecute(
    store: EventStore,
    info: dict[str, Any],
    progress: Callable[[int, int], None] | None = None,
    engine: str = DEFAULT_ENGINE,
) -> tuple[int, str] | None:
    """Feed the recorded commands, at their recorded times, to a fresh ``engine`` (its name,
    ``exchange.kernel.engines``) running the scenario's own market schedule; the first event that
    differs from the log, if any. ``progress(done, total)``: events compared so far, of the
    log's."""
    make_engine = _engine_class(engine)
    engine_name = engine
    config = orjson.loads(info["config"])
    config.pop("_recorder", None)
    model = scenario_from_config(info["scenario"], config)
    stored = store.payloads(1, store.last_seq)
    last = store.last_seq
    if last == 0:
        return None

    def compare(event: Event) -> None:
        seq = event.seq
        if seq > last:
            return  # a crashed log's prefix ends here; what follows was never committed
        if next(stored, None) != encode(event):
            raise _Diverged(seq, None, None)
        if progress is not None and (seq == last or not seq % PROGRESS_EVERY):
            progress(seq, last)

    engine = make_engine(compare)  # from here on, the engine itself
    sim = clock_class(engine_name)()  # the engine's own clock, as ``run`` runs it
    commands = store.events(kind=(ev.COMMAND_RECEIVED, ev.COMMAND_REJECTED))

    def feed(event: Event) -> None:
        data = event.data
        if event.kind == ev.COMMAND_REJECTED and data.get("source") in ("gateway", "runner"):
            # refused at the socket gateway or the bot runner, never reached ``handle``:
            # record it again
            engine.reject(data["command"], data["reason"], data["source"], event.account)
        else:
            engine.handle(data["command"])
        following = next(commands, None)
        if following is not None:
            sim.schedule(following.t, feed, following)

    finished = info["status"] == "finished"
    # a run killed after committing SessionEnded but before sealing the file is unfinished
    # in name only: its last event is still the end of the session
    end = next(iter(store.events(kind=ev.SESSION_ENDED)), None)
    if finished and end is None:
        return last, "finished session has no SessionEnded event"
    until = end.t if end is not None else next(iter(store.events(last, last))).t
    try:
        engine.start(info["scenario"], info["seed"], config)
        model.setup(engine)
        model.schedule_market(engine, sim, info["seed"])
        first = next(commands, None)
        if first is not None:
            sim.schedule(first.t, feed, first)
        sim.run(until, on_step=engine.advance)
        if end is not None:
            engine.advance(end.t)
            engine.end()
    except _Diverged as exc:
        return exc.seq, f"re-execution differs from the log at seq {exc.seq}"
    if engine.seq < last:
        return engine.seq + 1, f"the log has events after seq {engine.seq} that nothing produced"
    return None
