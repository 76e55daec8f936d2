"""Cloud sync over MQTT: outbox up, signed commands down, photo uploads.

:class:`CloudSync` (cloud.py) coordinates a :class:`~gatekeeper.sync.transport.Transport`
(paho_transport.py), the outbox pump (outbox.py) and the command handlers (commands.py);
signing.py holds the HMAC rules, uploads.py the photo uploader.
"""

from gatekeeper.sync.cloud import REJECT_EVENTS_PER_MINUTE, CloudSync

__all__ = ["REJECT_EVENTS_PER_MINUTE", "CloudSync"]
