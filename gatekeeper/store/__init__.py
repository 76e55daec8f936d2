"""The durable record: SQLite sessions, events, outbox, lists, reservations, tariff, uploads.

Callers use :class:`Store`; the table families live in the modules beside it.
"""

from gatekeeper.store.facade import (
    SCHEMA_VERSION,
    Clock,
    OutboxRow,
    Recorded,
    Store,
    StoreError,
    UnknownSession,
    from_iso,
    new_id,
    session_view,
    tariff_from_config,
    to_iso,
    utcnow,
)

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
