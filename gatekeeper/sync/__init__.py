"""Cloud sync over MQTT: outbox up, signed commands down, photo uploads."""

from gatekeeper.sync.cloud import REJECT_EVENTS_PER_MINUTE, CloudSync

__all__ = ["REJECT_EVENTS_PER_MINUTE", "CloudSync"]
