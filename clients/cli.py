"""``gpuex``: the exchange's command line (``exchange.cli``) plus the commands that need bots.

The ``gpuex`` group lives in ``exchange.cli``; the exchange may not import ``clients``, so the
console script points here (``gpuex=clients.cli:main``) and this module adds to the group:

    gpuex serve SCENARIO --db PATH [--seed N] [--host H] [--port P] [--tokens-file PATH]
                [--step-timeout S] [--connect-timeout S] [--remote ACCOUNT ...] [--quiet]
                [--resume]

``SCENARIO`` is ``demo`` (the products market with a demo market maker on account ``maker`` and
a demo taker on account ``taker``; see ``clients.demo``) or a scenario with bots that
``clients.scenario.load`` knows (a built-in name or a ``.toml`` file).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import click

from clients.gateway import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_STEP_TIMEOUT,
    GatewayError,
    serve_session,
)
from exchange.cli import (
    RunBar,
    Seconds,
    engine_option,
    main,
    plan_or_fail,
    store_failed,
    writable_dir_or_fail,
)
from exchange.core.limits import MAX_SEED
from exchange.sessions.session import SessionError, committed_session
from exchange.store.event_store import EventStore, StoreError


def _load(scenario: str):
    """``(model, bots or None)`` for ``scenario``."""
    if scenario == "demo":
        from clients.demo import demo_session

        return demo_session()
    try:
        from clients.scenario import load
    except ImportError:  # pragma: no cover - scenario files not installed
        raise click.BadParameter(f"unknown scenario {scenario!r}", param_hint="SCENARIO") from None
    try:
        return load(scenario), None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SCENARIO") from None


@main.command()
@click.argument("scenario")
@click.option(
    "--db",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file for the session's event log (must not exist, unless --resume).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=None,
    help="Session seed, 0..2**63-1 [default: the scenario's, or 7; on --resume, the stored one].",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65_535),
    help="Port (0: any free one).",
)
@click.option(
    "--tokens-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the URL and the bots' tokens to this JSON file (mode 0600).",
)
@click.option(
    "--step-timeout",
    default=DEFAULT_STEP_TIMEOUT,
    show_default=True,
    type=Seconds(),
    help="Wall-clock seconds a remote bot has to answer a step (and to read one).",
)
@click.option(
    "--connect-timeout",
    default=DEFAULT_CONNECT_TIMEOUT,
    show_default=True,
    type=Seconds(),
    help="Wall-clock seconds every remote bot has to connect before the session starts.",
)
@click.option(
    "--remote",
    "remote",
    multiple=True,
    metavar="ACCOUNT",
    help="Serve this account's bot over the socket instead of in-process (repeatable).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a crashed session in --db: it is re-run from its start, the remote bots "
    "included, and must regenerate every committed event.",
)
@engine_option("runs the session")
def serve(
    scenario,
    db,
    seed,
    host,
    port,
    tokens_file,
    step_timeout,
    connect_timeout,
    remote,
    quiet,
    resume,
    engine,
):
    """Run SCENARIO with some bots connected over a WebSocket (lockstep).

    Prints the gateway's URL and one token per remote bot, waits for every remote bot to
    connect, runs the session into --db and prints a summary. Protocol: docs/protocol.md.

    With --resume, a crashed session is re-run from its start (the remote bots connect again,
    with new tokens, and are sent every step from the first) and continued; a bot that acts
    otherwise than it did fails the resume, naming the first event that differs.
    """
    model, bots = _load(scenario)
    # everything validated before a gateway opens or a file is made (as `gpuex run` does)
    try:
        stored = committed_session(db) if resume else None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if stored is None:
        plan_or_fail(getattr(model, "name", scenario), seed, {}, model=model, engine=engine)
    writable_dir_or_fail(db, "--db")
    if tokens_file is not None:
        writable_dir_or_fail(tokens_file, "--tokens-file")

    def ready(url: str, tokens: dict[str, str]) -> None:
        click.echo(f"gateway   {url} (protocol 1)")
        for account, token in tokens.items():
            click.echo(f"  token   {account:<12} {token}")
        if tokens_file is not None:
            click.echo(f"tokens    {tokens_file}")
        click.echo(f"waiting   up to {connect_timeout:g} s for {len(tokens)} remote bot(s)")

    bar = RunBar(getattr(model, "name", scenario), disable=quiet)
    try:
        summary = serve_session(
            model,
            seed,
            db,
            remote,
            bots=bots,
            host=host,
            port=port,
            tokens_file=tokens_file,
            step_timeout=step_timeout,
            connect_timeout=connect_timeout,
            on_ready=ready,
            resume=resume,
            engine=engine,
            on_batch=bar.recorded,
            on_time=bar.reached,
            on_seal=bar.sealing,
        )
    except (GatewayError, SessionError, StoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except (sqlite3.Error, OSError) as exc:
        raise click.ClickException(store_failed(db, exc)) from None
    finally:
        bar.close()
    click.echo(f"session   {summary.path}")
    click.echo(f"scenario  {summary.scenario} (seed {summary.seed})")
    resumed = f" (resumed after {summary.resumed_from:,})" if summary.resumed_from else ""
    click.echo(f"events    {summary.events:,}{resumed}")
    with EventStore.open(db, mode="r") as store:
        for kind_name, count in store.kind_counts().items():
            click.echo(f"  {kind_name:<18} {count:>12,}")
    click.echo(f"state     {summary.state_hash}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
