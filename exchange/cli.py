"""``gpuex``: run, replay, verify and inspect exchange sessions.

    gpuex run SCENARIO [--db PATH] [--seed N] [--resume | --overwrite] [--set NAME=VALUE]
              [--engine compiled|reference] ...
    gpuex replay PATH [--until SEQ]
    gpuex verify PATH [--engine compiled|reference]
    gpuex inspect PATH [--at SEQ] [--account NAME] [--kind KIND] [--limit N] [--owed] [--json]
    gpuex export PATH [-o FILE] [--format csv|jsonl] [--from SEQ] [--to SEQ] [--kind KIND ...]
                 [--account NAME ...] [--instrument NAME ...]
    gpuex sweep SCENARIO --param NAME=V1,V2 [--seeds N] [--scheduler ADDR] [--retry-failed]
                [--engine compiled|reference] -o DIR
    gpuex report PATH -o report.html [--until SEQ] [--account NAME] [--window-days N]
    gpuex compare A B [--html FILE] [--json]
    gpuex index PATH [--quiet]

Exit codes: 0 success; 1 a check failed (verify: a damaged log) or the session could not be run;
2 bad usage or bad input (click's convention); 3 verify found a sound but unfinished log.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import orjson
from tqdm import tqdm

from exchange.core.events import KINDS
from exchange.core.limits import (
    MAX_BATCH_SIZE,
    MAX_SEED,
    MAX_SNAPSHOT_EVERY,
    check_recorder,
    check_seed,
)
from exchange.kernel.engine import DAY_NS
from exchange.kernel.engines import DEFAULT_ENGINE, ENGINES
from exchange.postmortem.export import (
    FORMATS,
    export_events,
    known_accounts,
    known_instruments,
    select,
)
from exchange.sessions import session as sessions
from exchange.sessions.scenarios import SCENARIOS, load_scenario, providers, scenario_names
from exchange.store.event_store import DamagedLogError, EventStore, StoreError, verify_store
from exchange.store.fold import FoldError


def engine_option(what: str):
    """``--engine compiled|reference``: the engine that ``what`` (help text). Not recorded in
    the log: both engines give byte-identical logs (docs/exchange.md, "Two engines")."""
    return click.option(
        "--engine",
        type=click.Choice(list(ENGINES)),
        default=DEFAULT_ENGINE,
        show_default=True,
        help=f"The engine that {what}: the compiled kernel, or the reference, the plain-Python "
        "engine it is tested byte-identical against (to cross-check a result or bisect a "
        "suspected kernel bug; slower).",
    )


def settings_or_fail(scenario: str, pairs: tuple[str, ...]) -> dict:
    """``--set NAME=VALUE`` pairs -> the scenario's overrides, in ``gpuex sweep --param``'s
    vocabulary (``exchange.sessions.sweep.settings_overrides``): a field path (``days=60``,
    ``margin.cure_ns=3d`` in a scenario file) or one of the scenario's aliases
    (``guarantor.capital=$5.7M``, ``margin.cure_period=1d``), the value converted by the
    alias's unit (dollars, a duration, an integer) or else read as a number, JSON or text.
    A bad setting is click's bad parameter (exit 2); a scenario that cannot load is left to
    :func:`plan_or_fail`, which names SCENARIO."""
    from exchange.sessions import sweep as sweeps

    try:
        return sweeps.settings_overrides(scenario, pairs)
    except sweeps.SweepError as exc:
        message = _one_line(str(exc)).removeprefix("--set ")
        raise click.BadParameter(message, param_hint="--set") from None
    except ValueError:
        return {}  # plan_or_fail reports the scenario's own error


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """gpuex: an event-sourced exchange simulator for compute derivatives."""


@main.command()
@click.argument("scenario", metavar="SCENARIO|FILE.toml")
@click.option(
    "--db",
    "db",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file for the session's event log [default: runs/SCENARIO.db].",
)
@click.option(
    "--seed",
    default=None,
    type=click.IntRange(0, MAX_SEED),
    help="Session seed, 0..2**63-1 [default: the scenario's, or 7; on --resume, the stored one].",
)
@click.option("--resume", is_flag=True, help="Continue a crashed session in --db.")
@click.option("--overwrite", is_flag=True, help="Replace --db if it already exists.")
@click.option(
    "--durability",
    type=click.Choice(["full", "normal"]),
    default="normal",
    show_default=True,
    help="SQLite synchronous mode (see docs/event_store.md).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a scenario field by its path or by an alias `gpuex sweep --param` takes, e.g. "
    "--set days=60 or, for guarantor-spiral, --set guarantor.capital=2e6 (dollars; repeatable; "
    "`gpuex scenario show NAME` shows the fields; a wrong name lists the aliases).",
)
@click.option(
    "--batch-size",
    default=sessions.DEFAULT_BATCH,
    show_default=True,
    type=click.IntRange(1, MAX_BATCH_SIZE),
    help="Events per committed batch.",
)
@click.option(
    "--snapshot-every",
    default=sessions.DEFAULT_SNAPSHOT_EVERY,
    show_default=True,
    type=click.IntRange(0, MAX_SNAPSHOT_EVERY),
    help="Events between state snapshots (multiple of --batch-size; 0 = none).",
)
@click.option(
    "--journal-after",
    default=sessions.DEFAULT_JOURNAL_AFTER,
    show_default=True,
    type=click.IntRange(min=0),
    help="Events recorded in this process before a journaller process takes over the "
    "recording, on another core (the log is the same; see docs/event_store.md).",
)
@click.option(
    "--no-journaller",
    is_flag=True,
    help="Record every batch in this process (no journaller process).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--report",
    "report_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the post-mortem HTML [default: the log's path with .html].",
)
@click.option("--no-report", is_flag=True, help="Do not write the post-mortem report.")
@engine_option("runs the session (the log is the same with either)")
def run(
    scenario,
    db,
    seed,
    resume,
    overwrite,
    durability,
    settings,
    batch_size,
    snapshot_every,
    journal_after,
    no_journaller,
    quiet,
    report_path,
    no_report,
    engine,
):
    """Run SCENARIO (a built-in name, see `gpuex scenarios`, or a scenario file) into a new
    event log (or --resume a crashed one).

    Everything is validated before any file is created or replaced: the scenario with its
    --set overrides and the limits of docs/scenarios.md, the options, and that --db's and the
    report's directories can be written."""
    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume contradict each other")
    overrides = settings_or_fail(scenario, settings)
    planned = plan_or_fail(
        scenario,
        seed,
        overrides,
        batch_size=batch_size,
        snapshot_every=snapshot_every,
        engine=engine,
    )
    if db is None:
        db = Path("runs") / f"{Path(scenario).stem}.db"
    writable_dir_or_fail(db, "--db")
    out = None if no_report else (report_path or db.with_suffix(".html"))
    if out is not None:
        writable_dir_or_fail(out, "--report")
    if db.exists() and not (resume or overwrite):
        # session.run would refuse it too, but only a command line knows --overwrite
        raise click.ClickException(
            f"{db} already exists: --overwrite replaces it, --resume continues a crashed "
            "session in it, or give another --db"
        )
    if overwrite:
        for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            stale.unlink(missing_ok=True)
    bar = RunBar(scenario, disable=quiet)
    try:
        summary = sessions.run(
            scenario,
            db,
            seed=seed,
            overrides=overrides,
            resume=resume,
            durability=durability,
            batch_size=batch_size,
            snapshot_every=snapshot_every,
            on_batch=bar.recorded,
            on_time=bar.reached,
            on_seal=bar.sealing,
            journal_after=None if no_journaller else journal_after,
            planned=planned,
            engine=engine,
        )
    except (sessions.SessionError, StoreError, ValueError) as exc:
        raise click.ClickException(_one_line(str(exc))) from None
    except (sqlite3.Error, OSError) as exc:
        raise click.ClickException(store_failed(db, exc)) from None
    finally:
        bar.close()
    click.echo(f"session   {summary.path}")
    click.echo(f"scenario  {summary.scenario} (seed {summary.seed})")
    resumed = f" (resumed after {summary.resumed_from:,})" if summary.resumed_from else ""
    click.echo(f"events    {summary.events:,}{resumed}")
    click.echo(f"state     {summary.state_hash}")
    _print_summary(db)
    if out is not None:
        from exchange.postmortem.report import write_report

        try:
            built = write_report(db, out, checked=False)  # the log this run has just written
        except OSError as exc:
            raise click.ClickException(
                f"--report: cannot write {out} ({exc.strerror or exc}); the session's log is "
                f"complete: write the report later with `gpuex report {db} -o FILE`"
            ) from None
        click.echo(f"report    {out} ({_count(len(built.charts), 'chart')}; open it in a browser)")


def plan_or_fail(
    scenario: str,
    seed: int | None,
    overrides: dict,
    *,
    model=None,
    batch_size: int = sessions.DEFAULT_BATCH,
    snapshot_every: int = sessions.DEFAULT_SNAPSHOT_EVERY,
    engine: str = DEFAULT_ENGINE,
) -> sessions.RunPlan:
    """``session.plan`` (its rehearsal on ``engine``), its error as click's bad parameter
    (exit 2) naming the option, or SCENARIO for the scenario and its --set overrides."""
    try:
        check_recorder(batch_size, snapshot_every)
    except ValueError as exc:
        option = "--batch-size" if str(exc).startswith("batch_size") else "--snapshot-every"
        raise click.BadParameter(str(exc).partition(": ")[2], param_hint=option) from None
    if seed is not None:
        try:
            check_seed(seed)
        except ValueError as exc:
            raise click.BadParameter(str(exc).partition(": ")[2], param_hint="--seed") from None
    try:
        return sessions.plan(
            scenario,
            seed=seed,
            overrides=overrides,
            model=model,
            batch_size=batch_size,
            snapshot_every=snapshot_every,
            engine=engine,
        )
    except sessions.SessionError as exc:
        raise click.BadParameter(_one_line(str(exc)), param_hint="SCENARIO") from None


def writable_dir_or_fail(path: Path, option: str) -> None:
    """Make ``path``'s directory if needed and check a file can be created in it (by creating
    and removing one: permissions, a read-only or full filesystem, whoever runs this); a
    clear error naming ``option`` otherwise, before the run creates or replaces anything."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise click.ClickException(
            f"{option}: cannot write in {folder} ({exc.strerror or exc})"
        ) from None


class Seconds(click.ParamType):
    """A wall-clock duration in seconds for an option: a finite number, more than 0 and at
    most ``most`` (``click.FloatRange`` lets NaN through: every comparison with it is false,
    and a NaN timeout never passes)."""

    name = "seconds"

    def __init__(self, most: float = 1_000_000.0) -> None:
        self.most = most

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float):
            seconds = value
        else:
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not (math.isfinite(seconds) and 0 < seconds <= self.most):
            self.fail(f"{value!r} is not in the range 0<x<={self.most:g} seconds", param, ctx)
        return seconds


def store_failed(db: Path, exc: BaseException) -> str:
    """The error of a run whose log could not be written (a full disk, say)."""
    return (
        f"{db}: the event log could not be written ({_one_line(str(exc))}); the batches "
        "committed before are intact: free the space and continue with --resume"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


class RunBar:
    """A run's progress bar (stderr): the share of the session's simulated time done and the
    wall time left, with the events recorded so far; at the end, that the run is sealing.

    Its methods are ``session.run``'s callbacks: ``on_batch=bar.recorded``,
    ``on_time=bar.reached``, ``on_seal=bar.sealing``; :meth:`close` it in any case. The bar
    appears at the first batch (so not while a server waits for its bots to connect).
    """

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"
    #: The bar counts ten-thousandths of the session's simulated time, not nanoseconds: tqdm
    #: computes in floats, and a year in ns (3.2e16) is past their 2**53 exact integers.
    STEPS = 10_000

    def __init__(self, scenario: str, disable: bool) -> None:
        self._scenario = scenario
        self._disable = disable
        self._bar: tqdm | None = None  # made at the first batch, when the end time is known
        self._events = 0

    def recorded(self, events: int) -> None:
        self._events += events

    def reached(self, t: int, end: int) -> None:
        if self._bar is None:
            self._bar = tqdm(
                total=self.STEPS,
                desc=self._scenario,
                bar_format=self.FORMAT,
                disable=self._disable,
                file=sys.stderr,
            )
        self._bar.set_postfix_str(f"{self._events:,} events", refresh=False)
        self._bar.update(t * self.STEPS // end - self._bar.n if end > 0 else 0)

    def sealing(self) -> None:
        # the last second or two of a long run: a bar standing still at 100 % looks hung
        if self._bar is not None:
            self._bar.set_description_str(f"{self._scenario}: sealing")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _print_summary(db: Path) -> None:
    """The session in one table: each account's money and calls, then the defaults and what
    the waterfall used (from the log alone, ``exchange.postmortem.analysis``)."""
    from exchange.postmortem.analysis import facts

    f = facts(db, checked=False)  # the log the run has just written: no need to check it
    click.echo("")
    click.echo(
        f"{'account':<14}{'start':>16}{'end':>16}{'calls':>7}{'called':>16}"
        f"{'lost to defaults':>18}  defaulted"
    )
    for name, a in f.accounts.items():
        when = next((f"day {f.day(d.t)}" for d in f.defaults if d.account == name), "")
        click.echo(
            f"{name:<14}{_money(a.start_cash):>16}{_money(a.final_cash):>16}{a.calls:>7}"
            f"{_money(a.called):>16}{_money(sum(a.lost_to_defaults.values())):>18}  {when}"
        )
    funds = f.funds
    click.echo("")
    called = sum(c.amount for c in f.calls)
    click.echo(
        f"{_count(len(f.defaults), 'default')}; {_count(len(f.calls), 'call')} for {_money(called)}"
    )
    click.echo(
        f"funds used: own contributions {_money(funds.own_contributions)}, insurance "
        f"{_money(funds.insurance)}, default fund {_money(funds.default_fund)}, haircuts "
        f"{_money(funds.haircuts)}, deleveraged {_count(funds.adl_lots, 'lot')}"
    )


@main.command("scenarios")
def list_scenarios():
    """List the built-in scenarios, each with its description (wrapped at words to the
    terminal's width, 100 columns when it has none)."""
    names = scenario_names()
    indent = max(20, *(len(n) for n in names)) + 1
    width = max(shutil.get_terminal_size((100, 24)).columns - indent, 30)
    for name in names:
        # "55 %" stays on one line: a no-break space is not a place textwrap breaks
        text = _describe(name).replace(" %", "\N{NO-BREAK SPACE}%")
        lines = textwrap.wrap(text, width, break_on_hyphens=False) or [""]
        for i, line in enumerate(lines):
            line = line.replace("\N{NO-BREAK SPACE}", " ")
            click.echo(f"{name if i == 0 else '':<{indent}}{line}")


def _describe(name: str) -> str:
    if name in SCENARIOS:
        doc = (SCENARIOS[name].__doc__ or "").strip()
    else:
        doc = load_scenario(name).description
    return " ".join(doc.split("\n\n")[0].split())  # its first paragraph, whole


@main.group()
def scenario():
    """Look at one scenario."""


@scenario.command("show")
@click.argument("name")
def show_scenario(name):
    """Print built-in scenario NAME as a TOML file to copy and edit (`gpuex run FILE.toml`)."""
    for provider in providers():
        if name in provider.builtin_names():
            click.echo(provider.builtin_text(name), nl=False)
            return
    if name not in SCENARIOS:
        raise click.BadParameter(
            f"unknown scenario {name!r}; built-ins: {', '.join(scenario_names())}",
            param_hint="NAME",
        )
    import tomli_w

    config = load_scenario(name).model_dump(mode="python", exclude_none=True)
    click.echo(f"# built-in scenario {name!r} (run the built-in by name; its fields are these)")
    click.echo(tomli_w.dumps(config), nl=False)


#: ``gpuex verify``'s exit status for a sound log whose session is unfinished (killed, or
#: still running): its events check out, but no recorded end vouches for the whole session.
#: 0 is a sound finished log, 1 a damaged one, 2 bad usage (click's own).
EXIT_UNFINISHED = 3


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Run a read command's body: whatever a damaged or hostile file makes the reading fail
    with ends the command with one line (exit 1) that names the seq where the log is
    damaged, never a traceback."""
    try:
        yield
    except click.ClickException:
        raise
    except FoldError as exc:
        raise click.ClickException(
            _line(
                f"{path}: damaged log at seq {exc.seq}: {exc.reason}; `gpuex verify` lists every "
                "problem"
            )
        ) from None
    except DamagedLogError as exc:
        raise click.ClickException(_line(f"{exc}; `gpuex verify` lists every problem")) from None
    except (StoreError, sessions.SessionError) as exc:
        if isinstance(exc.__cause__, sqlite3.DatabaseError):  # SQLite cannot read the file
            raise click.ClickException(_line(_damage(path, exc))) from None
        raise click.ClickException(_line(str(exc))) from None
    except (
        sqlite3.DatabaseError,
        ValueError,
        LookupError,
        TypeError,
        ArithmeticError,
        AttributeError,
    ) as exc:
        # forged consistently (crc recomputed) or damaged where the row checks do not look:
        # the full store check says where
        raise click.ClickException(_line(_damage(path, exc))) from None


def _damage(path: Path, exc: BaseException) -> str:
    """A read failure explained: where the store check finds the log damaged."""
    what = f"{type(exc).__name__}: {exc}"
    try:
        found = verify_store(path)
    except Exception:  # noqa: BLE001 - the check of a hostile file: say what failed first
        found = None
    if found is None or found.ok:
        return f"{path}: cannot read the log ({what}); `gpuex verify` says more"
    where = f" at seq {found.first_bad_seq}" if found.first_bad_seq else ""
    said = [found.problems[0], *(p for p in found.problems[1:] if "intact" in p)]
    return f"{path}: damaged log{where}: {'; '.join(said)} (reading failed with {what})"


def _line(text: str) -> str:
    return " ".join(text.split())


def _recorded_end(store: EventStore, fold) -> tuple[str | None, str]:
    """The replayed ``fold`` against the log's recorded final state hash (its last event,
    ``SessionEnded``): ``(None, note)`` if there is nothing to compare with, ``("ok", note)``
    or ``("differs", note)``."""
    last = store.last_seq
    if fold.seq != last:
        return (
            None,
            f"state after seq {fold.seq} of {last}: the recorded final hash is not compared",
        )
    end = next(iter(store.events(last, last)), None) if last else None
    status = store.session
    if end is None or end.kind != "SessionEnded":
        if status["status"] == "finished":
            return "differs", (
                f"the session is finished but its last event (seq {last}) is not SessionEnded: "
                "the log was cut short; `gpuex verify` locates it"
            )
        return None, "no recorded final hash to compare with: the session is unfinished"
    recorded = (end.data or {}).get("state_hash")
    if recorded != fold.state_hash() or (
        status["status"] == "finished" and status["final_state_hash"] != recorded
    ):
        return "differs", (
            f"the replayed state hash differs from the recorded final hash {recorded} "
            f"(SessionEnded, seq {end.seq}): the log was edited; `gpuex verify` locates it"
        )
    return "ok", f"matches the recorded final hash (SessionEnded, seq {end.seq})"


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--until", type=click.IntRange(min=1), default=None, help="Stop after this event (seq)."
)
@click.option("--no-snapshots", is_flag=True, help="Fold from the first event (ignore the cache).")
def replay(path, until, no_snapshots):
    """Fold the log's events into state and print the state hash.

    Replayed to its end, a finished log's hash is compared with the one it recorded
    (SessionEnded): a match says ok, a difference is an error (exit 1); an unfinished log
    has none, and the output says so. A damaged log stops the replay with an error naming
    the seq (exit 1).
    """
    with _reading(path):
        fold = sessions.replay(path, until, use_snapshots=not no_snapshots)
        with EventStore.open(path, mode="r") as store:
            verdict, note = _recorded_end(store, fold)
    click.echo(f"seq {fold.seq} t {fold.t} ns: {note}")
    click.echo(fold.state_hash())
    if verdict == "differs":
        raise click.ClickException(note)


class _StageBars:
    """A progress bar (stderr) for each stage of a long check, made when the stage first
    reports and kept in the stages' order (stages may overlap: a long log's store check runs
    beside its re-execution): the ``progress(stage, done, total)`` callback of
    ``session.verify``."""

    def __init__(self, stages: Sequence[str], disable: bool) -> None:
        self._stages = list(stages)
        self._disable = disable
        self._bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(
                total=total,
                desc=stage,
                unit=" events",
                unit_scale=True,
                disable=self._disable,
                file=sys.stderr,
                position=self._stages.index(stage),
            )
        bar.update(done - bar.n)

    def close(self) -> None:
        for stage in self._stages:
            bar = self._bars.pop(stage, None)
            if bar is not None:
                bar.close()


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bars.")
@engine_option("re-executes the recorded commands (either verifies a log made by either)")
def verify(path, quiet, engine):
    """Check checksums, indexes, re-execute the commands and compare the replayed state.

    Exit status: 0 the log is sound and its session finished; 1 the log is damaged (the
    first bad event and every problem found are named); 3 the log is sound but its session
    is unfinished (killed or still running: `gpuex run ... --resume` finishes it); 2 bad
    usage. Shows a progress bar for each stage (checksums, re-execution, replay) on stderr.
    """
    bars = _StageBars(sessions.VERIFY_STAGES, disable=quiet)
    try:
        verdict = sessions.verify(path, progress=bars, engine=engine)
        status = None
        if verdict.ok:
            with EventStore.open(path, mode="r") as store:
                status = store.session["status"]
    except Exception as exc:  # noqa: BLE001 - a hostile file may fail the check anywhere
        verdict = sessions.Verdict(False, 0, [_line(_damage(path, exc))])
    finally:
        bars.close()
    if verdict.ok and status == "finished":
        click.echo(f"ok: {verdict.events:,} events, state {verdict.state_hash}")
        return
    if verdict.ok:
        click.echo(
            f"ok but UNFINISHED: {verdict.events:,} sound events, state {verdict.state_hash}; "
            f"the session is {status} (killed, or still being written): no recorded end vouches "
            "for it; `gpuex run ... --resume` finishes a killed one"
        )
        sys.exit(EXIT_UNFINISHED)
    where = f" (first bad seq {verdict.first_bad_seq})" if verdict.first_bad_seq else ""
    click.echo(f"FAILED{where}", err=True)
    for problem in verdict.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(1)


def _money(minor: int) -> str:
    """Minor units (cents) as dollars, exactly: ``-123456 -> "-$1,234.56"``."""
    sign = "-" if minor < 0 else ""
    return f"{sign}${abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def _count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: ``1 chart``, ``9 charts``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--at", "at", type=click.IntRange(min=1), default=None, help="State just after this seq."
)
@click.option("--account", default=None, help="Only this account.")
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default=None,
    metavar="KIND",
    help="List only the events of this kind, e.g. Fill, CollateralCall, Default (no balances; "
    "a wrong name lists them all).",
)
@click.option(
    "--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Events to list."
)
@click.option(
    "--owed", is_flag=True, help="Also print who owes whom: what each defaulter cost whom."
)
@click.option(
    "--json",
    "raw",
    is_flag=True,
    help="List events as the log holds them: JSON, t in ns, price in ticks, amount in cents.",
)
def inspect(path, at, account, kind, limit, owed, raw):
    """Balances, positions, open orders and filtered events of the log at PATH.

    Without --kind: every account's cash (dollars), positions (lots) and open orders, or
    with --account that account's and its events. With --kind: only the events of that kind
    (of --account, if given). Events show their time as a date and time (a session day when
    the log has no start date), prices in dollars (ticks x tick size), quantities in lots
    and money in dollars; --json shows them as the log holds them. A damaged log stops it
    with an error naming the seq (exit 1)."""
    with _reading(path):
        EventStore.ensure_projection(path)  # a closed log's filtered reads: the projection
        with EventStore.open(path, mode="r") as store:
            info = store.session
            units = _Units(store)
            head = (
                f"{info['scenario']} seed {info['seed']} {info['status']}, "
                f"{_count(store.last_seq, 'event')}"
            )
            if kind:  # only the events asked for: no state to fold
                until = store.last_seq if at is None else at
                if until > store.last_seq:  # as the replay below says it
                    raise click.ClickException(
                        f"seq {at} is beyond the log's last event ({store.last_seq})"
                    )
                if account and account not in known_accounts(store):
                    raise click.ClickException(f"no account {account!r} in this log")
                click.echo(f"{head}; {kind} events to seq {until:,}")
                _list_events(store, until, kind, account, limit, units, raw)
                if owed:
                    _print_owed(store, until)
                return
        fold = sessions.replay(path, at)
        with EventStore.open(path, mode="r") as store:
            click.echo(f"{head}; state at seq {fold.seq:,} ({units.when(fold.t)})")
            _print_accounts(
                fold, [account] if account else sorted(fold.cash), orders=True, units=units
            )
            if account:
                _list_events(store, fold.seq, None, account, limit, units, raw)
            if owed:
                _print_owed(store, fold.seq)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default="-",
    help="File to write (replaced only once the export is complete) [default: stdout].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="csv or jsonl [default: from the output's suffix, else csv].",
)
@click.option("--from", "start", type=click.IntRange(min=1), default=1, help="First seq.")
@click.option("--to", "stop", type=click.IntRange(min=1), default=None, help="Last seq.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="Only this kind.")
@click.option("--account", "accounts", multiple=True, help="Only events with this account.")
@click.option("--instrument", "instruments", multiple=True, help="Only this instrument.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export(path, output, fmt, start, stop, kinds, accounts, instruments, quiet):
    """Write the events of a log as CSV or JSON Lines, one record per event, for analysis
    elsewhere (pandas, R, jq).

    Columns: the event fields (seq, t in ns, kind, instrument, account, order_id, side, price
    in ticks, qty in lots, amount in minor units, counterparty, counter_order_id) and data,
    the rest of the event as a JSON object. Each filter may be repeated (any of the values);
    --account selects the events with the account on either side, its fills as maker
    included. See docs/exchange.md, Export.
    """
    if fmt is None:
        fmt = "jsonl" if output.suffix in (".jsonl", ".ndjson") else "csv"
    EventStore.ensure_projection(path)  # a closed log's filtered reads: the projection
    try:
        with _reading(path), EventStore.open(path, mode="r") as store:
            last = store.last_seq
            if start > last:
                raise click.BadParameter(
                    f"seq {start} is beyond the log's last event ({last})", param_hint="--from"
                )
            if stop is not None and stop > last:
                raise click.BadParameter(
                    f"seq {stop} is beyond the log's last event ({last})", param_hint="--to"
                )
            if stop is not None and stop < start:
                raise click.BadParameter(f"{stop} is before --from {start}", param_hint="--to")
            for option, asked, known in (
                ("--account", accounts, known_accounts(store)),
                ("--instrument", instruments, known_instruments(store)),
            ):
                unknown = ", ".join(sorted(set(asked) - known))
                if unknown:
                    raise click.BadParameter(
                        f"not in this log: {unknown} (it has {', '.join(sorted(known))})",
                        param_hint=option,
                    )
            chosen = select(
                store, start, stop, kinds=kinds, accounts=accounts, instruments=instruments
            )
            to_stdout = str(output) == "-"
            end = last if stop is None else stop
            bar = tqdm(
                total=max(end - start + 1, 0),
                unit=" seq",
                unit_scale=True,
                disable=quiet or to_stdout,
                desc="export",
                file=sys.stderr,
            )
            done = start - 1

            def advance(seq: int) -> None:
                nonlocal done
                if seq - done >= 65_536:
                    bar.update(seq - done)
                    done = seq

            try:
                if to_stdout:
                    try:
                        count = export_events(chosen, sys.stdout, fmt, advance)
                        sys.stdout.flush()
                    except BrokenPipeError:
                        # the reader stopped (`| head`): not an error, and nothing to flush
                        # at exit into a closed pipe
                        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                        return
                else:
                    count = _export_to_file(output, chosen, fmt, advance)
                    # every seq to --to has been read: the bar ends at 100 %, and closing it
                    # ends its line, so the result below gets one of its own
                    bar.update(bar.total - bar.n)
            finally:
                bar.close()
    except OSError as exc:
        raise click.ClickException(_line(f"cannot write {output}: {exc}")) from None
    if not to_stdout:
        click.echo(f"{count:,} events -> {output} ({fmt})", err=True)


def _export_to_file(output: Path, chosen, fmt: str, advance) -> int:
    """Write to a temporary file beside ``output`` and put it in place once complete, so a
    failed or interrupted export leaves no partial file behind."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.part")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            count = export_events(chosen, out, fmt, advance)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def _print_accounts(fold, names: list[str], orders: bool, units: _Units) -> None:
    """Cash (dollars), positions (lots) and, with ``orders``, resting orders (dollars)."""
    for name in names:
        if name not in fold.cash:
            raise click.ClickException(f"no account {name!r} in this log")
        held = [f"{i} {p:+,}" for i, p in sorted(fold.positions[name].items()) if p]
        click.echo(f"  {name:<16} cash {_money(fold.cash[name]):>18}  {', '.join(held) or 'flat'}")
        if orders:
            for instrument in sorted(fold.books):
                for side, price, oid, owner, qty in fold.resting(instrument):
                    if owner == name:
                        click.echo(
                            f"      open {instrument} #{oid} {side} {_count(qty, 'lot')} @ "
                            f"{units.price(instrument, price)}"
                        )


def _list_events(
    store: EventStore,
    until: int,
    kind: str | None,
    account: str | None,
    limit: int,
    units: _Units,
    raw: bool,
) -> None:
    """Print up to ``limit`` events to ``until``: of ``kind``, and where ``account`` is either
    side (its own events, and fills in which it was the maker); in dollars, dates and lots
    (:class:`_Units`), or with ``raw`` as the log holds them (JSON, ns, ticks, cents)."""
    if account:
        streams = [
            store.events(1, until, kind=kind, account=account),
            store.events(1, until, kind=kind, counterparty=account),
        ]
        selected = heapq.merge(*streams, key=lambda e: e.seq)
    else:
        selected = store.events(1, until, kind=kind)
    shown = list(itertools.islice(selected, limit + 1))
    for event in shown[:limit]:
        if raw:
            fields = {
                k: v
                for k, v in event._asdict().items()
                if v is not None and k not in ("seq", "t", "kind")
            }
            click.echo(
                f"  {event.seq:>9} {event.t:>15} {event.kind:<16} " + orjson.dumps(fields).decode()
            )
        else:
            click.echo(
                f"  {event.seq:>9}  {units.when(event.t)}  {event.kind:<{_KIND_WIDTH}} "
                + units.describe(event)
            )
    if not shown:
        click.echo("  (none)")
    if len(shown) > limit:
        click.echo("  ... (more; raise --limit)")


_KIND_WIDTH = max(map(len, KINDS))


class _Units:
    """How ``inspect`` shows a log's numbers to a person: times as dates and times from the
    session's start date (``config.start``, else a swap's listing date; else session days),
    prices as dollars (ticks x the instrument's tick size; an index's ticks x the tick size
    of a listing on it), money (minor units) as dollars, quantities in lots."""

    #: ``data`` fields in minor units (calls' requirement, equity and previous amount due).
    MONEY = frozenset({"previous", "im", "mm", "equity", "im_change"})
    #: ``data`` fields that are a simulated time (ns since the epoch).
    TIMES = frozenset({"deadline"})
    #: Text or JSON longer than this is cut (``--json`` shows it whole).
    WIDTH = 80

    def __init__(self, store: EventStore) -> None:
        listed = store.events(1, store.last_seq, kind="InstrumentListed")
        self.specs: dict[str, dict] = {}
        listed_t: dict[str, int] = {}
        for event in listed:
            self.specs[event.instrument] = event.data or {}
            listed_t[event.instrument] = event.t
        self.epoch = self._epoch(store, listed_t)

    def _epoch(self, store: EventStore, listed_t: dict[str, int]) -> date | None:
        try:
            config = orjson.loads(store.session["config"] or "{}")
            return date.fromisoformat(config["start"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        for name, spec in self.specs.items():
            try:
                return date.fromisoformat(spec["listed"]) - timedelta(days=listed_t[name] // DAY_NS)
            except (KeyError, TypeError, ValueError):
                continue
        return None

    def when(self, t: int) -> str:
        """``t`` (ns since the epoch) as ``2024-06-01 01:00:00``, or ``day 3 01:00:00``
        without a start date; milliseconds (``00:00:00.014``) when it has some (a market
        that lives for seconds), never the nanosecond a bot acts after a print."""
        day, rest = divmod(t, DAY_NS)
        seconds, ns = divmod(rest, 10**9)
        clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if ns >= 10**6:
            clock += f".{ns // 10**6:03d}"
        if self.epoch is None:
            return f"day {day} {clock}"
        return f"{self.epoch + timedelta(days=day)} {clock}"

    def _tick(self, instrument: str | None, index: bool = False) -> Decimal | None:
        spec = self.specs.get(instrument or "")
        if spec is not None:
            key = "index_tick_size" if index and "index_tick_size" in spec else "tick_size"
            if index and spec.get("kind") == "perp":
                key = "tick_size"  # a perpetual's marks and its index share its ticks
            return _decimal_or_none(spec.get(key))
        for other in self.specs.values():  # an index: the tick of a listing on it
            if other.get("resale_index") == instrument:
                return _decimal_or_none(other.get("index_tick_size"))
            if other.get("underlying") == instrument:
                return _decimal_or_none(other.get("tick_size"))
        return None

    def price(self, instrument: str | None, ticks: int, index: bool = False) -> str:
        """``ticks`` of ``instrument`` (of its index with ``index``) in dollars, as many
        decimals as the tick size has; ticks as such when the log does not say their size."""
        tick = self._tick(instrument, index)
        if tick is None:
            return f"{ticks:,} ticks"
        places = max(-tick.as_tuple().exponent, 0)
        value = Decimal(ticks) * tick
        sign = "-" if value < 0 else ""
        return f"{sign}${abs(value):,.{places}f}"

    def describe(self, event) -> str:
        """The event's fields in a person's units, the ones that apply to its kind."""
        parts: list[str] = []
        for value in (event.instrument, event.account, event.side):
            if value is not None:
                parts.append(str(value))
        if event.order_id is not None:
            parts.append(f"#{event.order_id}")
        if event.qty is not None:
            parts.append(_count(event.qty, "lot"))
        if event.price is not None:
            # an index's publication and a swap's settlement are in index ticks
            index = event.kind in ("IndexPublished", "SwapSettled")
            parts.append(f"@ {self.price(event.instrument, event.price, index)}")
        if event.amount is not None:
            if event.kind == "FundingRate":  # a cumulative index, not a payment
                parts.append(f"funding index {event.amount:,} nano-cents per lot")
            elif event.kind == "InstrumentListed":
                parts.append(f"tick value {_money(event.amount)} per lot")
            else:
                parts.append(f"amount {_money(event.amount)}")
        if event.counterparty is not None:
            order = f" #{event.counter_order_id}" if event.counter_order_id is not None else ""
            parts.append(f"counterparty {event.counterparty}{order}")
        for key, value in sorted((event.data or {}).items()):
            parts.append(f"{key} {self._datum(event, key, value)}")
        return " ".join(parts)

    def _datum(self, event, key: str, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            if key in self.MONEY:
                return _money(value)
            if key in self.TIMES:
                return self.when(value)
            if event.kind == "MarkPrice" and key in ("index", "model"):
                return self.price(event.instrument, value, index=key == "index")
            return f"{value:,}"
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        text = _one_line(text)
        return (
            text if len(text) <= self.WIDTH else text[: self.WIDTH - 1] + "\N{HORIZONTAL ELLIPSIS}"
        )


def _decimal_or_none(text: Any) -> Decimal | None:
    try:
        tick = Decimal(str(text))
    except ArithmeticError:
        return None
    return tick if tick.is_finite() and tick > 0 else None


@main.command()
@click.argument("scenario")
@click.option(
    "--param",
    "param_specs",
    multiple=True,
    metavar="NAME=V1,V2,...",
    help="A swept parameter: a field path (margin.cure_ns) or a scenario alias "
    "(guarantor.capital, margin.cure_period) with its values (repeatable; the grid is the "
    "cartesian product).",
)
@click.option(
    "--seeds",
    type=click.IntRange(1, 1_000_000),
    default=None,
    help="Run seeds 1..N [default: 1].",
)
@click.option("--seed-list", default=None, metavar="S1,S2,...", help="Run exactly these seeds.")
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="A running Dask scheduler (tcp://host:8786) [default: a local cluster].",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Local cluster size, one process per worker [default: the machine's cores].",
)
@click.option("--keep-logs", is_flag=True, help="Keep every run's SQLite log under OUT/logs/.")
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (runs/, results.csv, points.csv, summary.html); rerun to resume.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Run again the runs a previous sweep into -o recorded as failed.",
)
@click.option(
    "--scheduler-timeout",
    type=Seconds(),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for --scheduler to answer before giving up.",
)
@engine_option("runs each session (not part of a run's id or record)")
def sweep(
    scenario,
    param_specs,
    seeds,
    seed_list,
    scheduler,
    workers,
    keep_logs,
    out,
    quiet,
    retry_failed,
    scheduler_timeout,
    engine,
):
    """Run SCENARIO (a built-in name or a scenario file) over a grid of parameters x seeds
    on Dask (see docs/sweeps.md).

    Example: gpuex sweep products --param guarantor.capital=1e6,5.7e6,2e7
    --param margin.cure_period=1d,3d --seeds 200 -o sweep/
    """
    from exchange.sessions import sweep as sweeps

    if seeds is not None and seed_list is not None:
        raise click.UsageError("give --seeds or --seed-list, not both")
    if Path(scenario).is_file():  # a scenario file: the workers need a path that resolves
        scenario = str(Path(scenario).resolve())
    if seed_list is not None:
        try:
            seed_values = [int(s) for s in seed_list.split(",")]
        except ValueError:
            raise click.BadParameter(
                f"{seed_list!r} is not a list of integers", param_hint="--seed-list"
            ) from None
    else:
        seed_values = list(range(1, (seeds or 1) + 1))
    if scheduler is not None and workers is not None:
        raise click.UsageError("--workers sizes the local cluster; not with --scheduler")
    if workers is not None and not 1 <= workers <= sweeps.MAX_WORKERS:
        raise click.BadParameter(
            f"must be 1..{sweeps.MAX_WORKERS} (one process each)", param_hint="--workers"
        )
    try:
        params = sweeps.parse_params(scenario, param_specs)
        specs = sweeps.expand_grid(scenario, params, seed_values)
    except sweeps.SweepError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(
        f"{_count(len(specs), 'run')}: {_count(len(specs) // len(seed_values), 'grid point')} "
        f"x {_count(len(seed_values), 'seed')} (a run-time estimate follows the first run)",
        err=True,
    )
    try:
        result = sweeps.run_sweep(
            specs,
            out,
            scheduler=scheduler,
            workers=workers,
            keep_logs=keep_logs,
            progress=not quiet,
            retry_failed=retry_failed,
            connect_timeout=scheduler_timeout,
            notify=lambda text: click.echo(text, err=True),
            engine=engine,
        )
    except sweeps.SweepError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"runs      {len(result.records):,} ({result.executed:,} run now, "
        f"{result.skipped:,} already finished)"
    )
    click.echo(f"failed    {result.failed:,}")
    click.echo(f"results   {result.files['csv']}")
    click.echo(f"points    {result.files['points']}")
    click.echo(f"summary   {result.files['html']}")
    if result.failed:
        sys.exit(1)


def _print_owed(store: EventStore, until: int) -> None:
    """The who-owes-whom tables of exchange.postmortem.analysis (money in currency units)."""
    from exchange.postmortem.analysis import facts

    owed = facts(store, until).who_owes_whom
    click.echo("who owes whom: what each counterparty bore for each defaulter")
    if not owed.borne:
        click.echo("  (no defaults)")
    for b in owed.borne:
        click.echo(
            f"  {b.defaulter:<14} -> {b.counterparty:<14} default fund "
            f"{_money(b.default_fund):>16}  haircut {_money(b.haircut):>16}  "
            f"total {_money(b.total):>16}  lots taken {b.lots_taken:,}"
        )
    click.echo("open positions by pair (long vs short, lots)")
    if not owed.positions:
        click.echo("  (none)")
    for p in owed.positions:
        click.echo(f"  {p.instrument:<16} {p.long:<14} long vs {p.short:<14} {p.qty:>10,}")


@main.command()
@click.argument("log", metavar="PATH", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write (one self-contained page; opens offline).",
)
@click.option(
    "--until",
    type=click.IntRange(min=1),
    default=None,
    help="Report the log as of this event (seq).",
)
@click.option(
    "--account",
    default=None,
    help="Draw this account's timeline [default: every account that defaulted].",
)
@click.option(
    "--window-days",
    type=click.IntRange(min=1),
    default=None,
    help="Trailing window of the S, S', S'' trend [default: a quarter of the index span, "
    "7..90 days].",
)
def report(log, output, until, account, window_days):
    """Write the post-mortem of the log at PATH as one HTML page: indices with S, S', S''
    and borrowed time, perpetuals, swaps, margin, the failed accounts' timelines, the
    close-out waterfall and a narrative (see docs/report.md)."""
    from exchange.postmortem.analysis import BadRequest
    from exchange.postmortem.report import write_report

    if not log.is_file():
        raise click.ClickException(f"{log}: no such event log")
    EventStore.ensure_projection(log)  # a closed log's filtered reads: the projection
    try:
        with _reading(log):
            try:
                built = write_report(log, output, until, account=account, window_days=window_days)
            except BadRequest as exc:
                raise click.ClickException(str(exc)) from None
    except OSError as exc:  # nothing is left at --output (see write_report)
        raise click.ClickException(_line(f"cannot write {output}: {exc}")) from None
    f = built.facts
    click.echo(
        f"wrote {output} ({_count(len(built.charts), 'chart')}, "
        f"{_count(output.stat().st_size, 'byte')}): {f.until:,} of {_count(f.last_seq, 'event')}, "
        f"{_count(len(f.calls), 'call')}, {_count(len(f.defaults), 'default')}"
    )


def _finished_log_or_fail(path: Path, name: str) -> None:
    """Refuse (exit 2, naming the argument) a missing file, a file that is not a gpuex event
    log, and an unfinished session: a comparison needs two whole sessions. A damaged log is
    left to the read itself (``_reading``: exit 1, naming the seq)."""
    if not path.is_file():
        raise click.BadParameter(f"{path}: no such event log", param_hint=name)
    try:
        with EventStore.open(path, mode="r") as store:
            status = store.session["status"]
    except DamagedLogError:
        return
    except StoreError as exc:
        raise click.BadParameter(_line(f"not a gpuex event log ({exc})"), param_hint=name) from None
    if status != "finished":
        raise click.BadParameter(
            f"{path}: the session is unfinished (status {status!r}); finish it with "
            "`gpuex run ... --resume`, or compare finished logs",
            param_hint=name,
        )


@main.command()
@click.argument("a", metavar="A", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("b", metavar="B", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--html",
    "output",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML page to write [default: beside A, A-vs-B.html; with --json: none].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the comparison as JSON (money in cents, t in ns) instead of the table.",
)
def compare(a, b, output, as_json):
    """Compare two finished logs A and B (paths): where each default's loss landed, per
    account (default-fund share, haircut, unsecured claim, re-hedge cost, and when), cash and
    net P&L, and the pools each world used, with the differences B - A. Prints a table and
    writes one HTML page (see docs/compare.md). Two seeds, two capitals, or cleared against
    bilateral: `gpuex compare runs/guarantor-spiral.db runs/guarantor-spiral-bilateral.db`."""
    from exchange.postmortem import compare as comparing

    for path, name in ((a, "A"), (b, "B")):
        _finished_log_or_fail(path, name)
    worlds = []
    for path in (a, b):
        with _reading(path):
            worlds.append(comparing.read_world(path))
    result = comparing.diff(*worlds)
    if as_json:
        click.echo(result.to_json().decode())
    else:
        click.echo(comparing.table(result), nl=False)
    if output is None and as_json:
        return
    output = output or comparing.default_html_path(a, b)
    try:
        comparing.write_html(result, output)
    except OSError as exc:  # nothing is left at --html (see write_html)
        raise click.ClickException(_line(f"cannot write {output}: {exc}")) from None
    click.echo(f"wrote {output} ({_count(output.stat().st_size, 'byte')})", err=as_json)


@main.command("index")
@click.argument("path", metavar="PATH", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def index_log(path, quiet):
    """Build the post-mortem indexes of the finished log at PATH, for plain-SQL queries.

    A run does not build them (they are off its critical path) and no gpuex command reads
    through them; they only speed up users' own SQL (see docs/event_store.md). Builds the
    missing ones in one transaction, prints which and how long it took; a log that has them
    all is left as it is (exit 0). An unfinished session is refused (exit 2); a file SQLite
    cannot index ends with one line (exit 1), the log untouched.
    """
    import time

    from exchange.store.event_store import INDEXES, IndexBuildError

    if not path.is_file():
        raise click.BadParameter(f"{path}: no such event log", param_hint="PATH")
    try:
        with EventStore.open(path, mode="r") as store:
            status, events = store.session["status"], store.last_seq
            missing = store.missing_indexes()
    except DamagedLogError:
        # as compare's check: damage is left to the reading below (exit 1, naming the seq)
        status, events, missing = None, 0, list(INDEXES)
    except StoreError as exc:
        raise click.BadParameter(
            _line(f"not a gpuex event log ({exc})"), param_hint="PATH"
        ) from None
    if status not in (None, "finished"):
        # a live writer's file is not ours to change; a killed one is finished by --resume
        raise click.BadParameter(
            f"{path}: the session is unfinished (status {status!r}); finish it with "
            "`gpuex run ... --resume`, then index it",
            param_hint="PATH",
        )
    if not missing:  # idempotent: the file is not even opened for writing
        click.echo(f"{path}: all {len(INDEXES)} indexes present ({events:,} events); nothing built")
        return
    bar = tqdm(
        total=len(missing),
        desc=f"indexing {events:,} events",
        unit=" indexes",
        disable=quiet,
        file=sys.stderr,
    )
    started = time.perf_counter()  # reported to the user only; nothing in the log
    try:
        with _reading(path):
            try:
                with EventStore.open(path, mode="a") as store:
                    built = store.build_indexes(lambda done, _total: bar.update(done - bar.n))
            except IndexBuildError as exc:  # not a damaged log: _reading would say it is
                raise click.ClickException(_line(str(exc))) from None
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    click.echo(
        f"{path}: built {len(built)} {'index' if len(built) == 1 else 'indexes'} "
        f"({', '.join(built)}) over {_count(events, 'event')} in {seconds:.1f} s"
    )


@main.command("migrate")
@click.argument("path", metavar="PATH", type=click.Path(dir_okay=False, path_type=Path))
def migrate_log(path):
    """Convert the event log at PATH from schema 2 (one row per event: a gpuex from before
    2026-12-05), schema 3 (one row per batch, its events stored as plain JSON lines) or
    schema 4 (stored compact, each batch's digest over its JSON lines: both before
    2026-12-06) to schema 5 (stored compact, each batch's digest over its stored bytes), in
    place.

    The events, their batches, the session row and the snapshots carry over unchanged; each
    batch is checked against its old digest and the old chain as it is read, then written
    under a new digest and chain (so the chain printed is new). The new file is written
    beside PATH, verified, then renamed over it, so a failure leaves PATH as it was (exit 1).
    A log of another schema is refused (exit 2). Build the projection for plain SQL
    afterwards with `gpuex index PATH`.
    """
    from exchange.store.event_store import SCHEMA_VERSION, migrate_store

    if not path.is_file():
        raise click.BadParameter(f"{path}: no such event log", param_hint="PATH")
    try:
        events, batches = migrate_store(path)
    except StoreError as exc:
        if "nothing to migrate" in str(exc) or "can be migrated" in str(exc):
            raise click.BadParameter(_line(str(exc)), param_hint="PATH") from None
        raise click.ClickException(_line(str(exc))) from None
    with EventStore.open(path, mode="r") as store:
        chain = store.digest()
    click.echo(
        f"{path}: migrated to schema_version {SCHEMA_VERSION}: {_count(events, 'event')} in "
        f"{batches:,} batch{'' if batches == 1 else 'es'}, new chain {chain[:16]}"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
