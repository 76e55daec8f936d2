"""The outbound payload builders in messages.py produce what the published models accept."""

from __future__ import annotations

import json

from gatekeeper import messages
from gatekeeper.messages import Event, Occupancy, validate_outbound

AT = "2026-05-04T08:00:00.000+00:00"


def test_event_payload_keeps_the_common_keys_first_and_adds_the_kinds_own() -> None:
    payload = messages.event_payload(event_id="e1", lot="lot-1", lane=None, kind="alarm", at=AT, plate="",
                                     session_id=None, reason="outbox_full", message="m", data={"pending": 3})
    assert list(payload)[:9] == ["id", "lot", "lane", "kind", "at", "plate", "session_id", "reason", "message"]
    model = validate_outbound(messages.event_topic("alarm"), messages.encode(payload))
    assert isinstance(model, Event) and model.model_extra == {"pending": 3}


def test_occupancy_payload_never_reports_negative_free_spaces() -> None:
    payload = messages.occupancy_payload(msg_id="o1", lot="lot-1", at=AT, capacity=2, occupied=3)
    model = validate_outbound(messages.OCCUPANCY_TOPIC, messages.encode(payload))
    assert isinstance(model, Occupancy) and (model.occupied, model.free) == (3, 0)


def test_encode_is_compact_json() -> None:
    assert messages.encode({"a": 1, "b": [1, 2]}) == '{"a":1,"b":[1,2]}'
    assert json.loads(messages.encode({"x": None})) == {"x": None}
