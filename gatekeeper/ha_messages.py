"""Home Assistant MQTT discovery payloads: the lot as one device, and the small state messages only it needs.

Pure builders (no I/O); :mod:`gatekeeper.sync.homeassistant` publishes them. Everything else an entity
shows is read, with a template, from what the lot publishes anyway (occupancy, gate state: see
:mod:`gatekeeper.messages`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from gatekeeper.messages import (
    HEALTH_TOPIC,
    LAST_READ_TOPIC,
    LANE_EVENT_TOPIC,
    OCCUPANCY_TOPIC,
    OFFLINE,
    ONLINE,
    OPEN_BUTTON_TOPIC,
    STATUS_TOPIC,
)

#: The barrier states the gate entity knows; any other state is shown as ``fault``.
HA_GATE_STATES = ("open", "opening", "closing", "closed")
#: Lane event kinds that fire the per-lane event entity.
HA_EVENT_TYPES = ("entry", "exit", "denied", "no_read")
#: What the open button sends; nothing else on the button topic opens anything.
HA_PRESS = "PRESS"
HA_MODEL = "gatekeeper lane controller"


def _ha_id(text: str) -> str:
    """Home Assistant's discovery ids allow ``[A-Za-z0-9_-]`` only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def ha_device_id(lot: str) -> str:
    return f"gatekeeper_{_ha_id(lot)}"


def ha_discovery_message(
    *,
    discovery_prefix: str,
    base: str,
    lot: str,
    lot_name: str,
    lanes: list[str],
    sw_version: str,
    include_plates: bool,
    allow_open: bool,
) -> tuple[str, dict[str, Any]]:
    """``(topic, payload)`` of the lot's retained device-based discovery config
    (``{discovery_prefix}/device/gatekeeper_{lot}/config``, Home Assistant 2024.11+).

    One device per lot; availability is the lot's ``status`` topic (its last will), so every entity goes
    unavailable when the daemon dies. Plates only with ``include_plates``; the open buttons only with ``allow_open``.
    """
    device_id = ha_device_id(lot)
    status, occupancy, health = (f"{base}/{t}" for t in (STATUS_TOPIC, OCCUPANCY_TOPIC, HEALTH_TOPIC))
    states = ", ".join(f"'{s}'" for s in HA_GATE_STATES)
    cmps: dict[str, dict[str, Any]] = {
        "occupied": {
            "platform": "sensor", "name": "Occupied", "icon": "mdi:car-multiple",
            "state_topic": occupancy, "value_template": "{{ value_json.occupied }}",
            "unit_of_measurement": "vehicles", "state_class": "measurement",
            "json_attributes_topic": occupancy,
            "json_attributes_template": "{{ {'capacity': value_json.capacity, 'at': value_json.at} | tojson }}",
        },
        "free": {
            "platform": "sensor", "name": "Free spaces", "icon": "mdi:parking",
            "state_topic": occupancy, "value_template": "{{ value_json.free }}",
            "unit_of_measurement": "spaces", "state_class": "measurement",
        },
        "outbox_backlog": {
            "platform": "sensor", "name": "Outbox backlog", "icon": "mdi:tray-full",
            "state_topic": health, "value_template": "{{ value_json.outbox_backlog }}",
            "unit_of_measurement": "messages", "state_class": "measurement", "entity_category": "diagnostic",
        },
    }
    for lane in lanes:
        key = _ha_id(lane)
        lane_base = f"{base}/lanes/{lane}"
        cmps[f"{key}_gate"] = {
            "platform": "sensor", "name": f"{lane} gate", "icon": "mdi:boom-gate",
            "device_class": "enum", "options": [*HA_GATE_STATES, "fault"],
            "state_topic": f"{lane_base}/gate",
            "value_template": f"{{{{ value_json.state if value_json.state in ({states}) else 'fault' }}}}",
            "json_attributes_topic": f"{lane_base}/gate",
            "json_attributes_template": "{{ {'at': value_json.at, 'detail': value_json.detail} | tojson }}",
        }
        cmps[f"{key}_event"] = {
            "platform": "event", "name": f"{lane} vehicle", "icon": "mdi:car-arrow-right",
            "state_topic": f"{base}/{LANE_EVENT_TOPIC.format(lane=lane)}", "event_types": list(HA_EVENT_TYPES),
        }
        cmps[f"{key}_problem"] = {
            "platform": "binary_sensor", "name": f"{lane} problem", "device_class": "problem",
            "entity_category": "diagnostic", "state_topic": health,
            "value_template": f"{{{{ 'OFF' if value_json.lanes.get('{lane}') == 'ok' else 'ON' }}}}",
        }
        if include_plates:
            cmps[f"{key}_last_plate"] = {
                "platform": "sensor", "name": f"{lane} last plate", "icon": "mdi:card-text-outline",
                "state_topic": f"{base}/{LAST_READ_TOPIC.format(lane=lane)}", "value_template": "{{ value_json.plate }}",
                "json_attributes_topic": f"{base}/{LAST_READ_TOPIC.format(lane=lane)}",
            }
        if allow_open:
            cmps[f"{key}_open"] = {
                "platform": "button", "name": f"Open {lane}", "icon": "mdi:gate-open",
                "command_topic": f"{base}/{OPEN_BUTTON_TOPIC.format(lane=lane)}", "payload_press": HA_PRESS,
                "retain": False, "qos": 0,
            }
    for key, cmp in cmps.items():
        cmp["unique_id"] = f"{device_id}_{key}"
    payload = {
        "device": {
            "identifiers": [device_id],
            "name": f"Gatekeeper {lot_name}",
            "manufacturer": "gatekeeper",
            "model": HA_MODEL,
            "sw_version": sw_version,
            "serial_number": lot,
        },
        "origin": {"name": "gatekeeper", "sw_version": sw_version},
        "availability_topic": status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "qos": 1,
        "components": cmps,
    }
    return f"{discovery_prefix}/device/{device_id}/config", payload


def ha_lane_messages(topic: str, event: Mapping[str, Any], *, include_plates: bool) -> list[tuple[str, dict[str, Any], bool]]:
    """``(relative topic, payload, retain)`` for Home Assistant derived from one outbox row (an event):
    the lane's event entity (``lanes/{lane}/event``) and, with ``include_plates``, its last plate read."""
    kind, lane = event.get("kind"), event.get("lane")
    if not topic.startswith("events/") or kind not in HA_EVENT_TYPES or not isinstance(lane, str):
        return []
    fired: dict[str, Any] = {"event_type": kind, "at": event.get("at"), "reason": event.get("reason"),
                             "direction": event.get("direction"), "open": event.get("open", False)}
    if include_plates:
        fired["plate"] = event.get("plate")
        fired["message"] = event.get("message")
    out = [(LANE_EVENT_TOPIC.format(lane=lane), fired, False)]
    if include_plates and kind != "no_read" and event.get("plate"):
        read = {"plate": event.get("plate"), "plate_read": event.get("plate_read"), "confidence": event.get("confidence"),
                "kind": kind, "at": event.get("at")}
        out.append((LAST_READ_TOPIC.format(lane=lane), read, True))
    return out


def health_payload(*, at: str, outbox_backlog: int, lanes: Mapping[str, str]) -> dict[str, Any]:
    """``health``, retained, only with Home Assistant on: the backlog and each lane's health (``ok`` or why not)."""
    return {"at": at, "outbox_backlog": outbox_backlog, "lanes": dict(lanes)}
