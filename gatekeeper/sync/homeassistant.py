"""Home Assistant MQTT discovery: the lot appears as one device with its lanes' entities.

Off unless ``homeassistant.enabled``. On every connect the retained discovery config goes up
(built in :mod:`gatekeeper.ha_messages`); the entities read the lot's own retained topics
(occupancy, gate state) plus three small ones published here: ``health`` (outbox backlog, lane
health), ``lanes/{lane}/event`` (fires the event entity) and, with ``include_plates``,
``lanes/{lane}/last_read``. These are best effort (QoS 0): the outbox stays the record.

With ``allow_open`` a button per lane publishes ``PRESS`` on ``lanes/{lane}/open``; it opens through
the same ``open_handler`` as a verified cloud open (recorded with who and why before the relay
moves; closing stays with the barrier's own safety logic). Retained or other payloads open nothing.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any, Callable, Mapping

from gatekeeper import __version__
from gatekeeper.config import Settings
from gatekeeper.ha_messages import HA_PRESS, ha_discovery_message, ha_lane_messages, health_payload
from gatekeeper.messages import HEALTH_TOPIC, OPEN_BUTTON_TOPIC, encode
from gatekeeper.store import Store, to_iso, utcnow
from gatekeeper.sync.transport import PublishError, Transport

log = logging.getLogger(__name__)

#: ``lane id -> "ok"`` or why not (e.g. ``stalled``); the daemon's view of its lane workers.
LaneHealth = Callable[[], Mapping[str, str]]
OpenHandler = Callable[[str, str, str], None]

#: How often the health message is recomputed, and re-sent even when unchanged.
HEALTH_CHECK_S = 2.0
HEALTH_REFRESH_S = 60.0
OPEN_REASON = "Home Assistant button"
OPEN_BY = "homeassistant"


class HomeAssistantBridge:
    """Discovery config on connect, the derived state messages, the optional open buttons."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        base: str,
        lane_health: LaneHealth | None = None,
        open_handler: OpenHandler | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.cfg = settings.homeassistant
        self.settings = settings
        self.store = store
        self.base = base
        self.lanes = [lane.id for lane in settings.lanes]
        self._lane_health = lane_health
        self._open_handler = open_handler
        self._clock = clock
        self._last_health: dict[str, Any] | None = None
        self._checked_at = 0.0
        self._sent_at = 0.0
        self.opens = 0
        self.ignored = 0

    def discovery(self) -> tuple[str, bytes]:
        topic, payload = ha_discovery_message(
            discovery_prefix=self.cfg.discovery_prefix, base=self.base, lot=self.settings.site.lot_id,
            lot_name=self.settings.site.name, lanes=self.lanes, sw_version=__version__,
            include_plates=self.cfg.include_plates, allow_open=self.cfg.allow_open,
        )
        return topic, encode(payload).encode()

    def open_filter(self) -> str:
        return f"{self.base}/{OPEN_BUTTON_TOPIC.format(lane='+')}"

    def on_connected(self, transport: Transport, publish_retained: Callable[[str, bytes], None]) -> int | None:
        """Send the discovery config (QoS 1, retained) and subscribe to the buttons (QoS 0: a press made
        while the lot was offline is not queued for it and opens nothing later); the SUBSCRIBE's id."""
        publish_retained(*self.discovery())
        self._last_health = None
        self._checked_at = 0.0
        if self.cfg.allow_open:
            return transport.subscribe(self.open_filter(), qos=0)
        return None

    # ------------------------------------------------------------------ state

    def on_outbox_row(self, transport: Transport, topic: str, payload: str) -> None:
        """An outbox row just went up: fire the lane's event entity (and its last plate)."""
        if not topic.startswith("events/"):
            return
        try:
            event = json.loads(payload)
        except ValueError:
            return
        for relative, body, retain in ha_lane_messages(topic, event, include_plates=self.cfg.include_plates):
            self._publish(transport, relative, body, retain=retain)

    def tick(self, transport: Transport, *, force: bool = False) -> None:
        """Publish ``health`` when it changed (checked every few seconds) or once a minute."""
        now = time.monotonic()
        if not force and now - self._checked_at < HEALTH_CHECK_S:
            return
        self._checked_at = now
        lanes = dict(self._lane_health()) if self._lane_health else {lane: "not_running" for lane in self.lanes}
        state = {"outbox_backlog": int(self.store.outbox_stats()["pending"]), "lanes": lanes}
        if state == self._last_health and now - self._sent_at < HEALTH_REFRESH_S:
            return
        body = health_payload(at=to_iso(self._clock()), **state)
        if self._publish(transport, HEALTH_TOPIC, body, retain=True):
            self._last_health, self._sent_at = state, now

    def _publish(self, transport: Transport, relative: str, body: Mapping[str, Any], *, retain: bool) -> bool:
        try:
            transport.publish(f"{self.base}/{relative}", encode(body).encode(), qos=0, retain=retain)
        except (PublishError, ValueError) as exc:
            log.debug("Home Assistant state %s not sent: %s", relative, exc)
            return False
        return True

    # ------------------------------------------------------------------ open button

    def is_button(self, topic: str) -> bool:
        """``{base}/lanes/{lane}/open`` (any lane: an unknown one is refused by :meth:`press`)."""
        prefix = f"{self.base}/lanes/"
        lane, _, last = topic[len(prefix):].partition("/") if topic.startswith(prefix) else ("", "", "")
        return bool(lane) and last == "open"

    def press(self, topic: str, payload: bytes, *, retained: bool) -> bool:
        """A button press: open the lane once. False (logged, counted in ``ignored``) when it was not a
        fresh ``PRESS`` for a configured lane."""
        lane = topic.split("/")[-2]
        why = None
        if not self.cfg.allow_open or self._open_handler is None:
            why = "homeassistant.allow_open is off or this process drives no barriers"
        elif retained:
            why = "a retained message is not a press"
        elif payload != HA_PRESS.encode():
            why = f"the payload is not {HA_PRESS}"
        elif lane not in self.lanes:
            why = "no such lane"
        if why is None:
            try:
                self._open_handler(lane, OPEN_REASON, OPEN_BY)
            except Exception as exc:
                why = f"the open failed: {exc}"
        if why is not None:
            self.ignored += 1
            log.warning("Home Assistant open of lane %r ignored: %s", lane, why)
            return False
        self.opens += 1
        log.info("lane %s opened from Home Assistant", lane)
        return True
