"""Export a log's events for analysis elsewhere (pandas, R, a spreadsheet, ``jq``).

Two formats, both one record per event in seq order, both deterministic (the same log and
filters give the same bytes):

* ``csv``: a header row of the :class:`~exchange.core.events.Event` fields, then one row per event;
  a field that does not apply to the event's kind is an empty cell, ``data`` is its JSON
  object (keys sorted, as stored).
* ``jsonl``: JSON Lines, one object per event with the same fields in the same order; fields
  that do not apply are ``null``.

Units as in the log: ``t`` in simulated ns since the session epoch, ``price`` in ticks, ``qty``
in lots, ``amount`` in minor units (cents). Nothing is converted or rounded.

An ``account`` filter selects the events in which the account is either side: its own (the
``account`` column) and those where it is the ``counterparty`` (the maker of a fill), as
``gpuex inspect --account`` does.
"""

from __future__ import annotations

import csv
import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

import orjson

from exchange.core import events as ev
from exchange.core.events import Event
from exchange.store.event_store import EventStore

#: The formats :func:`export_events` writes.
FORMATS = ("csv", "jsonl")


def select(
    store: EventStore,
    start: int = 1,
    stop: int | None = None,
    *,
    kinds: Iterable[str] = (),
    accounts: Iterable[str] = (),
    instruments: Iterable[str] = (),
) -> Iterator[Event]:
    """The events with ``start <= seq <= stop`` (``stop`` None: to the end) of any of
    ``kinds``, any of ``instruments`` and, for ``accounts``, with any of them on either side;
    an empty filter selects everything. In seq order, each event once."""
    filters = {"kind": list(kinds) or None, "instrument": list(instruments) or None}
    accounts = list(accounts)
    if not accounts:
        yield from store.events(start, stop, **filters)
        return
    own = store.events(start, stop, account=accounts, **filters)
    made = store.events(start, stop, counterparty=accounts, **filters)
    last = 0
    for event in heapq.merge(own, made, key=lambda e: e.seq):
        if event.seq != last:  # an event with the account on both sides comes twice
            last = event.seq
            yield event


def export_events(
    events: Iterable[Event],
    out: TextIO,
    fmt: str = "csv",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``events`` to ``out`` (a text stream opened with ``newline=""`` for CSV) in
    ``fmt`` (one of :data:`FORMATS`); returns how many were written. ``progress(seq)`` is
    called after each event with its seq."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(Event._fields)

        def write(event: Event) -> None:
            writer.writerow(_csv_row(event))
    else:

        def write(event: Event) -> None:
            out.write(orjson.dumps(dict(zip(Event._fields, event, strict=True))).decode())
            out.write("\n")

    count = 0
    for event in events:
        write(event)
        count += 1
        if progress is not None:
            progress(event.seq)
    return count


def _csv_row(event: Event) -> list:
    # data's keys are already sorted: decode keeps the stored order, which is canonical
    *fields, data = event
    return [
        *("" if f is None else f for f in fields),
        "" if data is None else orjson.dumps(data).decode(),
    ]


def known_accounts(store: EventStore) -> set[str]:
    """The accounts opened in the log."""
    return {e.account for e in store.events(kind=ev.ACCOUNT_OPENED) if e.account is not None}


def known_instruments(store: EventStore) -> set[str]:
    """The instruments listed in the log."""
    return {
        e.instrument for e in store.events(kind=ev.INSTRUMENT_LISTED) if e.instrument is not None
    }
