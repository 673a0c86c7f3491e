# cython: language_level=3
"""The event store's batch blob in C: check a batch's events, encode them into one buffer.

Schema 3 stores a batch as one row whose ``events`` blob is every event's canonical payload
(:func:`exchange.core.events.encode`) followed by ``b"\\n"``, in seq order. Building that blob is
the whole per-event cost of an append, so it runs in C, without a Python call per event:

* :func:`first_bad` checks every event before anything is written: a tuple (or list) of the
  ``Event`` fields, seqs contiguous from ``first``, each typed field of its column's type
  (the checks SQLite's STRICT columns made in schema 2, when every event was a row);
* :func:`encode_batch` writes every event's canonical bytes (``encode``'s: orjson's
  ``dumps(tuple(event), option=OPT_SORT_KEYS)``, byte for byte) and a newline into one
  buffer; an event holding anything the C encoder does not write (a float, a subclass, a
  value orjson refuses) is given to orjson whole, so its bytes or its error are orjson's
  (:func:`encode_event` encodes one event, for tests);
* the journaller's hand-off is that blob too (:mod:`exchange.store.journal`): the run encodes
  a batch once, and the journaller folds and stores the same bytes.

The encoder itself lives in ``exchange/core/_lines.pyx`` (with ``LineBatch``, the sink of
lines the compiled kernel writes into): the kernel sits below the store in the package's
rooms, and one encoder serves both. This module is the store's name for it.
"""

from exchange.core._lines import (  # noqa: F401 - the store's API
    INT,
    INT_OR_NULL,
    TEXT,
    TEXT_OR_NULL,
    encode_batch,
    encode_event,
    first_bad,
)
