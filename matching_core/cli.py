"""Command line for the matching core: ``gpuex-match`` / ``python -m matching_core``.

``match`` runs an ``ORDERS.csv`` (format in :mod:`matching_core.orders_csv`) through an order
book and writes ``FILLS.csv``, ``BOOK.csv`` and optionally ``REPORTS.csv``. ``demo`` runs a
seeded synthetic order stream through the Cython book and prints what happened.

Prices are in ticks and quantities in lots throughout. Exit codes: 0 success; 1 an output could
not be written; 2 a malformed orders file or a usage error (nothing is written).
"""

from __future__ import annotations

import time
from fractions import Fraction

import click
import numpy as np

from matching_core.codes import (
    MESSAGE_DTYPE,
    REPORT_DTYPE,
    Op,
    OrderType,
    Reject,
    Side,
    StpMode,
)
from matching_core.orders_csv import ENGINES, OrdersFileError, OutputPathError, run_orders

STP_CHOICES = {
    "none": StpMode.NONE,
    "cancel-resting": StpMode.CANCEL_RESTING,
    "cancel-incoming": StpMode.CANCEL_INCOMING,
    "cancel-both": StpMode.CANCEL_BOTH,
}

DEPTH_LEVELS = 5


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """gpuex matching core: a price-time-priority limit order book (prices in integer ticks,
    quantities in integer lots)."""


@main.command(short_help="Match an ORDERS.csv; write FILLS.csv, BOOK.csv (and REPORTS.csv).")
@click.argument(
    "orders", metavar="ORDERS.csv", type=click.Path(exists=True, dir_okay=False, readable=True)
)
@click.option(
    "--fills",
    "fills_path",
    required=True,
    metavar="FILLS.csv",
    type=click.Path(dir_okay=False, writable=True),
    help="Where to write the trades, in match order: taker_order_id, maker_order_id, "
    "taker_account, maker_account, price (ticks), qty (lots).",
)
@click.option(
    "--book",
    "book_path",
    required=True,
    metavar="BOOK.csv",
    type=click.Path(dir_okay=False, writable=True),
    help="Where to write the final resting orders: side, price (ticks), order_id, account, "
    "qty (lots); bids best-first, then asks best-first, oldest first within a price.",
)
@click.option(
    "--reports",
    "reports_path",
    metavar="REPORTS.csv",
    default=None,
    type=click.Path(dir_okay=False, writable=True),
    help="Also write one outcome per message: line, op, order_id, result (ok or the reject "
    "reason), filled, resting, cancelled (lots).",
)
@click.option(
    "--stp",
    type=click.Choice(list(STP_CHOICES)),
    default="none",
    show_default=True,
    help="Self-trade prevention for every account when an order would trade with a resting "
    "order of its own account: none (allow the trade), cancel-resting, cancel-incoming or "
    "cancel-both.",
)
@click.option(
    "--engine",
    type=click.Choice(list(ENGINES)),
    default="cython",
    show_default=True,
    help="cython: the fast OrderBook; reference: the pure-Python ReferenceBook (same results, "
    "slower; for cross-checking).",
)
def match(
    orders: str,
    fills_path: str,
    book_path: str,
    reports_path: str | None,
    stp: str,
    engine: str,
) -> None:
    """Run the orders in ORDERS.csv through a fresh order book and write the fills and the final
    book.

    ORDERS.csv has the header op,order_id,account,side,type,price,qty,tif,post_only; op is
    add|cancel|amend, side buy|sell, type limit|market, price integer ticks (empty for a market
    order without protection, and for cancel), qty integer lots, tif gtc|ioc|fok (empty = gtc),
    post_only 0|1 (empty = 0). A malformed row is reported with its line number and nothing is
    written (exit code 2); orders the book refuses are rejected, not errors (see --reports).
    """
    try:
        summary = run_orders(
            orders, fills_path, book_path, reports_path, stp=STP_CHOICES[stp], engine=engine
        )
    except OrdersFileError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(2) from None
    except OutputPathError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write output: {exc}") from None
    click.echo(summary.line())


@main.command(short_help="Run a seeded synthetic order stream and print a summary.")
@click.option(
    "--messages",
    "n_messages",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Number of messages in the generated order stream.",
)
@click.option(
    "--seed",
    type=int,
    default=7,
    show_default=True,
    help="Seed of the stream generator; the same seed gives the same stream and book.",
)
def demo(n_messages: int, seed: int) -> None:
    """Generate a seeded order stream, run it through the Cython OrderBook and print a summary:
    message mix, rejects by reason, fills, VWAP, final top of book and depth, throughput.

    Every figure except the throughput depends only on --messages and --seed.
    """
    from matching_core import OrderBook
    from matching_core.streams import generate_stream

    click.echo(f"generating {n_messages:,} messages (seed {seed})...", err=True)
    messages = generate_stream(n_messages, seed)
    if not isinstance(messages, np.ndarray) or messages.dtype != MESSAGE_DTYPE:
        raise click.ClickException("generate_stream did not return a MESSAGE_DTYPE array")
    click.echo("matching...", err=True)
    book = OrderBook()
    reports = np.zeros(len(messages), dtype=REPORT_DTYPE)
    started = time.perf_counter()  # wall clock for the throughput line only
    fills = book.process(messages, reports)
    elapsed = time.perf_counter() - started
    for line in demo_summary(messages, reports, fills, book):
        click.echo(line)
    rate = f"{len(messages) / elapsed:,.0f}" if elapsed > 0 else "n/a"
    click.echo(_row("throughput", rate, f"messages/s ({elapsed:.3f} s in OrderBook.process)"))


def demo_summary(messages: np.ndarray, reports: np.ndarray, fills: np.ndarray, book) -> list[str]:
    """The deterministic lines of the ``demo`` report: message mix, accepted and rejected by
    reason, fills and traded lots, VWAP (ticks), best bid/ask and spread (ticks), resting
    orders and the top levels of both sides (price in ticks, quantity in lots)."""
    n = len(messages)
    ops = messages["op"]
    adds = int(np.count_nonzero(ops == Op.ADD))
    market = int(np.count_nonzero((ops == Op.ADD) & (messages["type"] == OrderType.MARKET)))
    cancels = int(np.count_nonzero(ops == Op.CANCEL))
    amends = int(np.count_nonzero(ops == Op.AMEND))
    other = n - adds - cancels - amends

    def pct(count: int) -> str:
        return f"({100 * count / n:.1f}%)" if n else ""

    lines = [
        _row("messages", f"{n:,}"),
        _row("  adds", f"{adds:,}", f"{pct(adds)}, of which market {market:,}"),
        _row("  cancels", f"{cancels:,}", pct(cancels)),
        _row("  amends", f"{amends:,}", pct(amends)),
    ]
    if other:
        lines.append(_row("  other ops", f"{other:,}", pct(other)))

    codes, counts = np.unique(reports["reject"], return_counts=True)
    by_code = dict(zip(codes.tolist(), counts.tolist(), strict=True))
    accepted = by_code.pop(int(Reject.OK), 0)
    lines.append(_row("accepted", f"{accepted:,}", pct(accepted)))
    lines.append(_row("rejected", f"{n - accepted:,}", pct(n - accepted)))
    for code, count in sorted(by_code.items(), key=lambda item: (-item[1], item[0])):
        name = Reject(code).name.lower() if code in Reject._value2member_map_ else str(code)
        lines.append(_row(f"  {name}", f"{count:,}"))

    traded = int(fills["qty"].sum())
    lines.append(_row("fills", f"{len(fills):,}", f"traded {traded:,} lots"))
    vwap = exact_vwap(fills["price"], fills["qty"])
    lines.append(_row("VWAP", "n/a" if vwap is None else f"{float(vwap):,.3f}", "ticks"))

    bid, ask = book.best_bid(), book.best_ask()
    spread = f"spread {ask - bid:,} ticks" if bid is not None and ask is not None else ""
    lines.append(_row("best bid / ask", f"{_price(bid)} / {_price(ask)}", spread))
    lines.append(_row("resting orders", f"{len(book):,}"))

    bid_px, bid_qty = book.depth(Side.BUY, DEPTH_LEVELS)
    ask_px, ask_qty = book.depth(Side.SELL, DEPTH_LEVELS)
    title = f"depth (top {DEPTH_LEVELS})"
    lines.append(f"{title:<16}{'bid lots':>10} {'bid px':>10} | {'ask px':>10} {'ask lots':>10}")
    for level in range(max(len(bid_px), len(ask_px))):
        left = (
            f"{int(bid_qty[level]):>10,} {int(bid_px[level]):>10,}"
            if level < len(bid_px)
            else " " * 21
        )
        right = (
            f"{int(ask_px[level]):>10,} {int(ask_qty[level]):>10,}" if level < len(ask_px) else ""
        )
        lines.append(f"{'':<16}{left} | {right}".rstrip())
    return lines


def exact_vwap(prices: np.ndarray, qtys: np.ndarray) -> Fraction | None:
    """Volume-weighted average price in ticks, exact (``None`` when nothing traded): the sum of
    price x qty over the fills, computed per price level in Python integers so it cannot
    overflow, divided by the lots traded."""
    if len(qtys) == 0:
        return None
    levels, index = np.unique(prices, return_inverse=True)
    lots = np.zeros(len(levels), dtype=np.int64)
    np.add.at(lots, index, qtys)
    total = sum(lots.tolist())
    if total == 0:
        return None
    notional = sum(p * q for p, q in zip(levels.tolist(), lots.tolist(), strict=True))
    return Fraction(notional, total)


def _row(label: str, value: str, note: str = "") -> str:
    return f"{label:<24}{value:>14}  {note}".rstrip()


def _price(price: int | None) -> str:
    return "-" if price is None else f"{price:,}"


if __name__ == "__main__":  # pragma: no cover
    main()
