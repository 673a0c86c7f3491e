"""The whole kernel: a seeded `flow` session of over a million events, recorded and replayed.

Measures, in one run: orders/s and events/s of `session.run` (validation, matching, events, fold
for snapshots, SQLite persistence with `normal` durability), with the time of each part, as a
run records by default (a journaller process takes over the recording after 100,000 events, or
20,000 in a run whose pace projects 200,000 or more, as this one does) and,
as the reference, all in line; events/s of a replay fold over the same log (straight from the
typed columns, no snapshots); ``session.verify`` of that log, with its store check beside the
re-execution and in line; and the *storage floor*: SQLite alone inserting the same rows in the
same batches, with no Python per row -- the fastest any kernel on this event store could go
here, as orders/s (the post-mortem indexes, off the run's path since issue #20, are timed beside
it). Goals from issue #3: the kernel at least 200,000 orders/s and the fold at least 500,000
events/s. From issue #20: the compiled kernel (the default engine) at least 300,000 orders/s and
at least 15x the reference engine (the plain-Python ``Exchange``), both recording the same
session in the same run of the benches, each three times, the median recording's figures
compared (every recording's printed). They are reported PASS/MISS (figures depend on the
machine; see benches/README.md); what is asserted is that the replay reaches the live state
hash, that both engines record the same log (same chain digest) and that the floor's copy holds
the recorded rows, so a broken kernel cannot report a figure."""

from __future__ import annotations

import contextlib
import resource
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.sessions import session
from exchange.sessions.scenarios import _FlowDriver
from exchange.sessions.session import Recorder
from exchange.store import journal
from exchange.store.event_store import EventStore
from exchange.store.fold import CompiledFold, Fold
from exchange.store.journal import Journaller

MESSAGES = 320_000  # about 1.05 million events
KERNEL_GOAL_ORDERS_S = 200_000
COMPILED_GOAL_ORDERS_S = 300_000  # issue #20
COMPILED_GOAL_RATIO = 15.0  # issue #20: compiled / reference orders/s, same run
FOLD_GOAL_EVENTS_S = 500_000
REPLAY_GOAL_EVENTS_S = 2_000_000  # issue #20: read from SQLite and fold

RESULTS: dict = {}
#: Recordings of the session by each engine for the issue #20 figures: the median one's are
#: reported (a single recording of the compiled run, a fifth of a second, took a slow moment
#: of a shared machine whole: its ratio spread over 7-12x for the same code in one session's
#: CI runs; the reference's 3 s average such moments out), every one's orders/s printed.
ROUNDS = 3


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernel")


@pytest.fixture(scope="module")
def flow_log(log_dir):
    """The recorded session (made by the kernel benchmark, or here if it was deselected)."""
    if "log" not in RESULTS:
        _record(log_dir / "flow-fixture.db")
    return RESULTS["log"]


#: The parts of a run timed separately (class or module, function, label); the rest of the run
#: is the engine's: driver, clock, validation, matching and event construction.
PARTS = (
    # a run's batches travel as their blobs (decision 67): the recorder takes each batch's
    # lines from its sink (into the journaller's buffer once it has taken over), and in line
    # folds and stores the blob, or hands it to the journaller
    (Recorder, "_take", "taking each batch's lines from the sink (checks)"),
    (journal, "compact", "compacting each batch in line (the stored form)"),
    (EventStore, "append_stored", "store append in line (checksums, insert, commit)"),
    (EventStore, "finish", "store finish in line (seal)"),
    (EventStore, "close", "store close (final checkpoint)"),
    # the compiled fold (the default) folds a blob in C; with GPUEX_FOLD=reference the events
    # are decoded and folded by Fold.apply_all (timed under the same label)
    (CompiledFold, "apply_stored", "recorder's fold in line"),
    (Fold, "apply_all", "recorder's fold in line"),
    # a blob goes where the journaller reserves it (waiting while the ring is a lap ahead) and
    # its header down the pipe (decision 104); record_blob where there is no shared buffer
    (Journaller, "reserve", "hand-off to the journaller (the pipe, its backlog)"),
    (Journaller, "record_placed", "hand-off to the journaller (the pipe, its backlog)"),
    (Journaller, "record_blob", "hand-off to the journaller (the pipe, its backlog)"),
    (Journaller, "finish", "wait for the journaller (its last batches, seal)"),
    # issue #20 puts the input stream's generation outside the timed figure; the compiled
    # run (compiled clock and driver, exchange.sessions._flow) generates its chunks with
    # this same method, so the part is timed alike on both engines
    (_FlowDriver, "_load", "generating the input stream (seeded orders, times)"),
)
GENERATION = PARTS[-1][2]


@contextlib.contextmanager
def _timing_parts(seconds: dict[str, float]) -> Iterator[None]:
    """Accumulate the wall time of each of :data:`PARTS` into ``seconds`` (by label) while
    the block runs; a few hundred calls in a run, so the timers cost nothing measurable."""
    originals = [(cls, name, getattr(cls, name)) for cls, name, _label in PARTS]

    def timed(method, label):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - t0

        return wrapper

    for (cls, name, method), (_c, _n, label) in zip(originals, PARTS, strict=True):
        setattr(cls, name, timed(method, label))
    try:
        yield
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


def _children_cpu_s() -> float:
    """CPU seconds (user and system) of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_for_reaped_journaller() -> None:
    """Wait until the run's journaller process, which exits on its own after the seal, has
    been waited for (``Journaller.close``'s reaper thread), so that its CPU is counted."""
    for thread in threading.enumerate():
        if thread.name == "gpuex-reap":
            thread.join()


def _record(path, journal_after=session.DEFAULT_JOURNAL_AFTER, key="", engine="compiled"):
    """Record the flow session at ``path`` (``journal_after`` and ``engine`` as
    ``session.run`` takes them) and keep its figures in RESULTS under ``key``: wall times,
    and the CPU of the run's thread and of its journaller process (the run and its
    journaller share the machine's cores: their sum over the cores bounds the wall)."""
    parts: dict[str, float] = {}
    _wait_for_reaped_journaller()  # (a previous run's)
    children_before = _children_cpu_s()
    with _timing_parts(parts):
        t0 = time.perf_counter()
        cpu0 = time.thread_time()
        summary = session.run(
            "flow",
            path,
            seed=7,
            overrides={"messages": MESSAGES},
            journal_after=journal_after,
            engine=engine,
        )
        seconds = time.perf_counter() - t0
        run_cpu_s = time.thread_time() - cpu0
    _wait_for_reaped_journaller()
    journaller_cpu_s = _children_cpu_s() - children_before
    parts = {"engine, driver, validation, matching, events": seconds - sum(parts.values())} | {
        label: parts[label] for _c, _n, label in PARTS if label in parts
    }
    RESULTS.update(
        {
            f"{key}log": (path, summary),
            f"{key}kernel_s": seconds,
            f"{key}parts": parts,
            f"{key}orders_per_s": MESSAGES / (seconds - parts.get(GENERATION, 0.0)),
            f"{key}events_per_s": summary.events / seconds,
            # (the generation runs on the run's thread: its wall is its CPU)
            f"{key}run_cpu_s": run_cpu_s - parts.get(GENERATION, 0.0),
            f"{key}journaller_cpu_s": journaller_cpu_s,
        }
    )
    return summary


def _record_rounds(path, journal_after=session.DEFAULT_JOURNAL_AFTER, key="", engine="compiled"):
    """:func:`_record` :data:`ROUNDS` times (``path`` with ``-1``, ``-2``... before its
    suffix) and keep the median recording's figures and log in RESULTS under ``key`` (every
    recording's orders/s, sorted, under ``key + "rounds"``); the other logs are removed."""
    path = Path(path)
    recordings = []
    for i in range(ROUNDS):
        round_key = f"{key}round{i}_"
        summary = _record(
            path.with_name(f"{path.stem}-{i + 1}{path.suffix}"), journal_after, round_key, engine
        )
        recordings.append((RESULTS[f"{round_key}orders_per_s"], i, summary))
    recordings.sort(key=lambda r: r[0])
    _rate, median, summary = recordings[len(recordings) // 2]
    for name in (
        "log",
        "kernel_s",
        "parts",
        "orders_per_s",
        "events_per_s",
        "run_cpu_s",
        "journaller_cpu_s",
    ):
        RESULTS[f"{key}{name}"] = RESULTS[f"{key}round{median}_{name}"]
    RESULTS[f"{key}rounds"] = [rate for rate, _i, _s in recordings]
    for _rate, i, other in recordings:
        if i != median:
            Path(other.path).unlink(missing_ok=True)
    return summary


def _rounds_line(rates: list[float]) -> str:
    return (
        f"its {len(rates)} recordings: "
        + ", ".join(f"{rate:,.0f}" for rate in rates)
        + " orders/s (the median's figures reported)"
    )


def report(capsys, line: str) -> None:
    """Print past pytest's capture, so the figures appear in every log (CI's included)."""
    with capsys.disabled():
        print(f"\n[kernel] {line}")


def test_kernel_run_throughput(benchmark, log_dir, capsys):
    # the session recorded ROUNDS times, each in a file of its own (a log cannot be recorded
    # again in place): one pytest-benchmark round, the median recording's figures
    summary = benchmark.pedantic(
        _record_rounds, args=(log_dir / "flow.db",), rounds=1, iterations=1
    )
    assert summary.events >= 1_000_000
    assert session.replay(summary.path).state_hash() == summary.state_hash
    benchmark.extra_info.update(
        events=summary.events,
        orders_per_s=round(RESULTS["orders_per_s"]),
        events_per_s=round(RESULTS["events_per_s"]),
    )
    report(
        capsys,
        f"kernel: {RESULTS['orders_per_s']:,.0f} orders/s (the input's generation not "
        f"counted), {RESULTS['events_per_s']:,.0f} "
        f"events/s ({summary.events:,} events in {RESULTS['kernel_s']:.1f} s); goal "
        f"{KERNEL_GOAL_ORDERS_S:,} orders/s: "
        f"{'PASS' if RESULTS['orders_per_s'] >= KERNEL_GOAL_ORDERS_S else 'MISS'}",
    )
    report(capsys, "  " + _rounds_line(RESULTS["rounds"]))
    for label, part_s in RESULTS["parts"].items():
        report(capsys, f"  {label}: {part_s:.2f} s ({part_s / RESULTS['kernel_s']:.0%})")
    counted_s = MESSAGES / RESULTS["orders_per_s"]
    run_cpu, journaller_cpu = RESULTS["run_cpu_s"], RESULTS["journaller_cpu_s"]
    benchmark.extra_info.update(
        run_cpu_s=round(run_cpu, 3), journaller_cpu_s=round(journaller_cpu, 3)
    )
    report(
        capsys,
        f"  CPU: the run's thread {run_cpu:.2f} s (the generation not counted), its journaller "
        f"process {journaller_cpu:.2f} s (start-up included): {run_cpu + journaller_cpu:.2f} s "
        f"on this machine's cores, against {counted_s:.2f} s counted",
    )
    size = Path(summary.path).stat().st_size
    benchmark.extra_info.update(file_bytes=size)
    report(
        capsys,
        f"  the log's file: {size:,} bytes, {size / summary.events:.1f} bytes an event "
        "(schema 5: each batch stored compact)",
    )


@pytest.mark.acceptance  # a figure with no goal (the journaller against in line); CI's budget
def test_kernel_in_line_throughput(benchmark, log_dir, capsys):
    """The same session recorded without a journaller process (``journal_after=None``): the
    reference the journaller's gain is measured against, in the same run of the benches."""
    summary = benchmark.pedantic(
        _record,
        args=(log_dir / "flow-in-line.db", None, "in_line_"),
        rounds=1,
        iterations=1,
    )
    assert session.replay(summary.path).state_hash() == summary.state_hash
    in_line = RESULTS["in_line_orders_per_s"]
    benchmark.extra_info.update(orders_per_s=round(in_line))
    line = f"kernel in line (no journaller): {in_line:,.0f} orders/s"
    if "orders_per_s" in RESULTS:
        assert RESULTS["log"][1].state_hash == summary.state_hash
        line += f"; with the journaller {RESULTS['orders_per_s'] / in_line:.2f}x that"
    report(capsys, line)
    for label, part_s in RESULTS["in_line_parts"].items():
        report(capsys, f"  {label}: {part_s:.2f} s ({part_s / RESULTS['in_line_kernel_s']:.0%})")


def test_kernel_against_the_reference_engine(benchmark, log_dir, capsys):
    """The same session recorded by the reference engine (``--engine reference``, the plain-
    Python ``Exchange``) as the compiled kernel recorded it above, journaller and all: the
    issue #20 ratio, measured in one run. Both logs must be the same bytes (same chain)."""
    summary = benchmark.pedantic(
        _record_rounds,
        args=(log_dir / "flow-reference.db", session.DEFAULT_JOURNAL_AFTER, "reference_"),
        kwargs={"engine": "reference"},
        rounds=1,
        iterations=1,
    )
    reference = RESULTS["reference_orders_per_s"]
    benchmark.extra_info.update(orders_per_s=round(reference))
    line = f"reference engine (plain Python): {reference:,.0f} orders/s"
    if "orders_per_s" in RESULTS:
        compiled_path, compiled = RESULTS["log"]
        assert compiled.state_hash == summary.state_hash
        with EventStore.open(compiled_path) as a, EventStore.open(summary.path) as b:
            assert a.digest() == b.digest(), "the engines recorded different logs"
        ratio = RESULTS["orders_per_s"] / reference
        benchmark.extra_info.update(compiled_ratio=round(ratio, 2))
        ratio_status = "PASS" if ratio >= COMPILED_GOAL_RATIO else "MISS"
        speed_status = "PASS" if RESULTS["orders_per_s"] >= COMPILED_GOAL_ORDERS_S else "MISS"
        line += (
            f"; the compiled kernel {RESULTS['orders_per_s']:,.0f} orders/s, {ratio:.2f}x it "
            f"(goal {COMPILED_GOAL_RATIO:.0f}x: {ratio_status}; goal "
            f"{COMPILED_GOAL_ORDERS_S:,} orders/s: {speed_status})"
        )
    report(capsys, line)
    report(capsys, "  " + _rounds_line(RESULTS["reference_rounds"]))
    for label, part_s in RESULTS["reference_parts"].items():
        report(capsys, f"  {label}: {part_s:.2f} s ({part_s / RESULTS['reference_kernel_s']:.0%})")


def test_replay_fold_throughput(benchmark, flow_log, capsys):
    """Replay of the kernel's log: the fold in memory, the compiled fold (the default) against
    its reference on the same rows (issue #3's fold goal; the ratio, in the same run), and the
    replay from SQLite with the compiled fold (read, checksums, parse, fold: issue #20's
    replay goal). Each figure is the median of its three rounds, the two folds' rounds
    interleaved; asserted: every fold reaches the live state hash and the compiled one is the
    faster."""
    path, summary = flow_log
    with EventStore.open(path, mode="r") as store:
        rows = list(store.rows(1, store.last_seq))
    seconds: dict[str, list[float]] = {}

    def timed(key, make):
        t0 = time.perf_counter()
        fold = make()
        seconds.setdefault(key, []).append(time.perf_counter() - t0)
        assert fold.state_hash() == summary.state_hash, key
        return fold

    def fold_both():
        timed("reference", lambda: Fold().apply_all(rows))
        return timed("compiled", lambda: CompiledFold().apply_all(rows))

    benchmark.pedantic(fold_both, rounds=3, iterations=1)
    for _round in range(3):
        replayed = timed(
            "replay", lambda: session.replay(path, use_snapshots=False, fold="compiled")
        )
        assert type(replayed) is CompiledFold
    per_s = {key: len(rows) / statistics.median(times) for key, times in seconds.items()}
    fold_ratio = per_s["compiled"] / per_s["reference"]
    benchmark.extra_info.update(
        fold_events_per_s=round(per_s["reference"]),
        compiled_fold_events_per_s=round(per_s["compiled"]),
        replay_events_per_s=round(per_s["replay"]),
        compiled_fold_ratio=round(fold_ratio, 2),
    )

    def status(value, goal):
        return "PASS" if value >= goal else "MISS"

    report(
        capsys,
        f"fold in memory: compiled {per_s['compiled']:,.0f} events/s, reference "
        f"{per_s['reference']:,.0f} ({fold_ratio:.2f}x; goal {FOLD_GOAL_EVENTS_S:,}: "
        f"{status(per_s['compiled'], FOLD_GOAL_EVENTS_S)})",
    )
    report(
        capsys,
        f"replay from SQLite (read, checksums, parse, compiled fold): {per_s['replay']:,.0f} "
        f"events/s; goal {REPLAY_GOAL_EVENTS_S:,} events/s: "
        f"{status(per_s['replay'], REPLAY_GOAL_EVENTS_S)}",
    )
    assert fold_ratio > 1, per_s


# two verifies of the million-event log (26 s): on request (`python -m pytest -m acceptance`),
# outside CI's 15-minute budget; the run's replay hash is checked above in every run
@pytest.mark.acceptance
def test_verify_session(benchmark, flow_log, capsys):
    """``session.verify`` of the recorded session (checksums, re-execution, replay), with the
    store check in a helper process beside the other two stages (the default on a log this
    long), against the same verify with every stage in line, in the same run. No goal."""
    path, summary = flow_log
    timings = {}

    def verify_both():
        for key, after in (("in_line", None), ("beside", session.CHECK_ASIDE_AFTER)):
            t0 = time.perf_counter()
            verdict = session.verify(path, check_aside_after=after)
            timings[key] = time.perf_counter() - t0
            assert verdict.ok and verdict.state_hash == summary.state_hash, verdict.problems

    benchmark.pedantic(verify_both, rounds=1, iterations=1)
    benchmark.extra_info.update(
        verify_s=round(timings["beside"], 3), verify_in_line_s=round(timings["in_line"], 3)
    )
    report(
        capsys,
        f"verify: {summary.events / timings['beside']:,.0f} events/s with the store check "
        f"beside ({timings['beside']:.1f} s), {summary.events / timings['in_line']:,.0f} "
        f"events/s in line ({timings['in_line']:.1f} s): "
        f"{timings['in_line'] / timings['beside']:.2f}x",
    )


@pytest.mark.acceptance  # a figure with no goal (14 s): what SQLite alone costs; CI's budget
def test_storage_floor(benchmark, flow_log, tmp_path, capsys):
    """SQLite alone: the recorded batch rows (schema 5: one row per batch, its events' compact
    form in a blob) copied into a fresh store (same schema, pragmas and page size, made by
    ``EventStore.create``) by ``INSERT ... SELECT``, one transaction per batch as the run
    commits them. No Python runs per event, so no kernel writing this store could be faster
    than this on this machine. The projection and its indexes are then built as `gpuex
    index` builds them, timed apart: a run does not build them (issue #20)."""
    path, summary = flow_log
    store = EventStore.create(
        tmp_path / "floor.db", scenario="floor", seed=0, config={}, code_version="bench"
    )
    conn = store._conn  # the store's own connection: its pragmas, no writer in between
    try:
        conn.execute("ATTACH DATABASE ? AS recorded", (f"file:{path}?mode=ro",))
        last = summary.events
        timings = {}

        def insert_rows():
            t0 = time.perf_counter()
            batches = conn.execute("SELECT count(*) FROM recorded.batches").fetchone()[0]
            for number in range(1, batches + 1):
                with store._db.atomic():
                    conn.execute(
                        "INSERT INTO main.batches SELECT * FROM recorded.batches WHERE batch = ?",
                        (number,),
                    )
            timings["insert_s"] = time.perf_counter() - t0
            # the batches came in behind the store's back: tell the session and the writer
            with store._db.atomic():
                conn.execute("UPDATE main.sessions SET last_seq = ?", (last,))
            store._last_seq, store._batch_count = last, batches
            t0 = time.perf_counter()
            store.build_indexes()
            timings["index_s"] = time.perf_counter() - t0

        benchmark.pedantic(insert_rows, rounds=1, iterations=1)
        copied = conn.execute("SELECT count(*), max(seq) FROM main.events").fetchone()
        chains = "SELECT group_concat(chain) FROM (SELECT chain FROM {}.batches ORDER BY batch)"
        assert (
            conn.execute(chains.format("main")).fetchone()
            == conn.execute(chains.format("recorded")).fetchone()
        )
        assert copied == (last, last)
        conn.execute("DETACH DATABASE recorded")
    finally:
        store.close()
    floor_s = timings["insert_s"]
    ceiling = MESSAGES / floor_s
    benchmark.extra_info.update(
        insert_rows_per_s=round(last / timings["insert_s"]),
        index_build_s=round(timings["index_s"], 3),
        ceiling_orders_per_s=round(ceiling),
    )
    report(
        capsys,
        f"storage floor: SQLite alone inserts the {last:,} events (one row per batch) at "
        f"{last / timings['insert_s']:,.0f} events/s ({timings['insert_s']:.2f} s): at most "
        f"{ceiling:,.0f} orders/s for any kernel on this store; goal "
        f"{KERNEL_GOAL_ORDERS_S:,} orders/s (the projection and its indexes, built on "
        f"request by `gpuex index`, take {timings['index_s']:.2f} s more)",
    )
