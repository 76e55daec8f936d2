"""The durable record: SQLite sessions, events, outbox, lists, reservations, tariff, uploads.

Callers use :class:`Store`; the table families live in the modules beside it.
"""

from gatekeeper.store.db import SCHEMA_VERSION
from gatekeeper.store.facade import Store
from gatekeeper.store.lists import tariff_from_config
from gatekeeper.store.records import (
    Clock,
    OutboxRow,
    Recorded,
    StoreError,
    UnknownSession,
    from_iso,
    new_id,
    to_iso,
    utcnow,
)
from gatekeeper.store.sessions import session_view

__all__ = [
    "SCHEMA_VERSION",
    "Clock",
    "OutboxRow",
    "Recorded",
    "Store",
    "StoreError",
    "UnknownSession",
    "from_iso",
    "new_id",
    "session_view",
    "tariff_from_config",
    "to_iso",
    "utcnow",
]
