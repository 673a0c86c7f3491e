"""``gpuex``: run, replay, verify and inspect exchange sessions.

    gpuex run SCENARIO --db PATH [--seed N] [--resume] [--durability full|normal] [--set K=V]
    gpuex replay PATH [--until SEQ]
    gpuex verify PATH
    gpuex inspect PATH [--at SEQ] [--account NAME] [--kind KIND] [--limit N]

Exit codes: 0 success; 1 a check failed (verify) or the session could not be run; 2 bad usage
or bad input (click's convention).
"""

from __future__ import annotations

import heapq
import itertools
import sys
from pathlib import Path

import click
import orjson
from tqdm import tqdm

from exchange import session as sessions
from exchange.events import KINDS
from exchange.scenarios import SCENARIOS
from exchange.store import EventStore, StoreError


def _parse_overrides(pairs: tuple[str, ...]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        try:
            overrides[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            overrides[key] = value
    return overrides


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """gpuex: an event-sourced exchange simulator for compute derivatives."""


@main.command()
@click.argument("scenario", type=click.Choice(sorted(SCENARIOS)))
@click.option(
    "--db",
    "db",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file for the session's event log.",
)
@click.option(
    "--seed",
    default=None,
    type=int,
    help="Seed of every random source [default: 7; on --resume, the stored one].",
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
    metavar="KEY=VALUE",
    help="Override a scenario field, e.g. --set messages=50000 (repeatable).",
)
@click.option(
    "--batch-size",
    default=sessions.DEFAULT_BATCH,
    show_default=True,
    type=int,
    help="Events per committed batch.",
)
@click.option(
    "--snapshot-every",
    default=sessions.DEFAULT_SNAPSHOT_EVERY,
    show_default=True,
    type=int,
    help="Events between state snapshots (multiple of --batch-size; 0 = none).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(
    scenario, db, seed, resume, overwrite, durability, settings, batch_size, snapshot_every, quiet
):
    """Run SCENARIO into a new event log (or --resume a crashed one)."""
    overrides = _parse_overrides(settings)
    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume contradict each other")
    if overwrite:
        for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            stale.unlink(missing_ok=True)
    db.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(unit=" events", unit_scale=True, desc=scenario, disable=quiet, file=sys.stderr)
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
            on_batch=bar.update,
        )
    except (sessions.SessionError, StoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
    click.echo(f"session   {summary.path}")
    click.echo(f"scenario  {summary.scenario} (seed {summary.seed})")
    resumed = f" (resumed after {summary.resumed_from:,})" if summary.resumed_from else ""
    click.echo(f"events    {summary.events:,}{resumed}")
    with EventStore.open(db, mode="r") as store:
        for kind_name, count in store.kind_counts().items():
            click.echo(f"  {kind_name:<18} {count:>12,}")
    fold = sessions.replay(db)
    click.echo("accounts at the end (cash in currency units, positions in lots)")
    _print_accounts(fold, sorted(fold.cash), orders=False)
    click.echo(f"fees      {_money(fold.pools['fees'])} to the exchange")
    click.echo(f"state     {summary.state_hash}")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--until", type=int, default=None, help="Stop after this event (seq).")
@click.option("--no-snapshots", is_flag=True, help="Fold from the first event (ignore the cache).")
def replay(path, until, no_snapshots):
    """Fold the log's events into state and print the state hash."""
    try:
        fold = sessions.replay(path, until, use_snapshots=not no_snapshots)
    except (sessions.SessionError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"seq {fold.seq} t {fold.t} ns")
    click.echo(fold.state_hash())


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify(path):
    """Check checksums, re-execute the commands and compare the replayed state.

    Exits 0 only if the log is sound; otherwise names the first bad event.
    """
    verdict = sessions.verify(path)
    if verdict.ok:
        click.echo(f"ok: {verdict.events:,} events, state {verdict.state_hash}")
        return
    where = f" (first bad seq {verdict.first_bad_seq})" if verdict.first_bad_seq else ""
    click.echo(f"FAILED{where}", err=True)
    for problem in verdict.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(1)


def _money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--at", "at", type=int, default=None, help="State just after this seq.")
@click.option("--account", default=None, help="Only this account.")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="List events of this kind.")
@click.option("--limit", default=20, show_default=True, help="Events to list.")
def inspect(path, at, account, kind, limit):
    """Balances, positions, open orders and filtered events of a log."""
    try:
        fold = sessions.replay(path, at)
        with EventStore.open(path, mode="r") as store:
            info = store.session
            click.echo(
                f"{info['scenario']} seed {info['seed']} {info['status']}, "
                f"{store.last_seq:,} events; state at seq {fold.seq} (t {fold.t} ns)"
            )
            _print_accounts(fold, [account] if account else sorted(fold.cash), orders=True)
            if kind or account:
                _list_events(store, fold.seq, kind, account, limit)
    except (sessions.SessionError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None


def _print_accounts(fold, names: list[str], orders: bool) -> None:
    """Cash (currency units), positions (lots) and, with ``orders``, resting orders."""
    for name in names:
        if name not in fold.cash:
            raise click.ClickException(f"no account {name!r} in this log")
        held = [f"{i} {p:+,}" for i, p in sorted(fold.positions[name].items()) if p]
        click.echo(f"  {name:<16} cash {_money(fold.cash[name]):>18}  {', '.join(held) or 'flat'}")
        if orders:
            for instrument in sorted(fold.books):
                for side, price, oid, owner, qty in fold.resting(instrument):
                    if owner == name:
                        click.echo(f"      open {instrument} #{oid} {side} {qty} @ {price}")


def _list_events(
    store: EventStore, until: int, kind: str | None, account: str | None, limit: int
) -> None:
    """Print up to ``limit`` events to ``until``: of ``kind``, and where ``account`` is either
    side (its own events, and fills in which it was the maker)."""
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
        fields = {
            k: v
            for k, v in event._asdict().items()
            if v is not None and k not in ("seq", "t", "kind")
        }
        click.echo(
            f"  {event.seq:>9} {event.t:>15} {event.kind:<16} " + orjson.dumps(fields).decode()
        )
    if len(shown) > limit:
        click.echo("  ... (more; raise --limit)")


if __name__ == "__main__":  # pragma: no cover
    main()
