"""The store room: the system of record: the SQLite event store, its reader and writer, the
journaller that records a run, the store check, and the fold that replays a log.

Rooms import only the rooms before them: core < products < risk < kernel < store < credit <
postmortem < sessions.
"""

# exchange.store was the event store's module until issue #20's rooms: its
# users' imports keep working
from exchange.store.event_store import (  # noqa: E402, F401
    DamagedLogError,
    EventStore,
    IndexBuildError,
    StoreError,
    VerifyReport,
    verify_store,
)
