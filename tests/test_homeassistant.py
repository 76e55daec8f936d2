"""Home Assistant MQTT discovery against a real mosquitto: the retained device config, the entities' state
topics, plates only when asked, the open button only when asked, nothing at all when it is off, and
availability that the last will turns offline when the process is SIGKILLed."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from gatekeeper import __version__
from gatekeeper.config import HomeAssistantConfig, LaneConfig, Settings, load_settings
from gatekeeper.store import Store
from gatekeeper.sync import CloudSync
from tests.broker import LOT, Mosquitto, Subscriber, sync_settings
from tests.test_sync import OpenRecorder
from tests.test_sync_outage import _start_sync, _write_config, wait_until

BASE = f"gatekeeper/{LOT}"
CONFIG_TOPIC = f"homeassistant/device/gatekeeper_{LOT}/config"
LANES = ("in-1", "out-1")


def _settings(broker: Mosquitto, tmp_path: Path, **ha: Any) -> Settings:
    settings = sync_settings(broker, tmp_path / "data")
    settings.lanes = [LaneConfig(id=lane, direction="entry" if lane.startswith("in") else "exit", camera="0",
                                 relay_pin=17 + i) for i, lane in enumerate(LANES)]
    settings.homeassistant = HomeAssistantConfig(**ha)
    return settings


@pytest.fixture
def store_for(tmp_path: Path) -> Iterator[Any]:
    stores: list[Store] = []

    def make(settings: Settings) -> Store:
        stores.append(Store.from_settings(settings).__enter__())
        return stores[-1]

    yield make
    for store in stores:
        store.__exit__(None, None, None)


def _entry(store: Store, lane: str = "in-1", plate: str = "AB123CD") -> str:
    return store.record_event("entry", lane=lane, plate=plate, reason="ok", message=f"Welcome {plate}",
                              data={"direction": "entry", "open": True, "plate_read": plate, "confidence": 0.93})


def _discovery(broker: Mosquitto) -> tuple[dict[str, Any], bool]:
    with Subscriber(broker, "homeassistant/#") as ha:
        msg = ha.get(where=lambda m: m.topic == CONFIG_TOPIC)
    return msg.json(), msg.retain


def test_discovery_config_is_retained_with_device_availability_and_no_plates_or_button(
        mosquitto: Mosquitto, tmp_path: Path, store_for: Any) -> None:
    settings = _settings(mosquitto, tmp_path, enabled=True)
    store = store_for(settings)
    with CloudSync(settings, store, open_handler=OpenRecorder(), lane_health=lambda: {"in-1": "ok",
                                                                                       "out-1": "stalled"}) as sync:
        wait_until(lambda: sync.connected, "connection")
        config, retained = _discovery(mosquitto)  # subscribed after it was sent: only a retained copy arrives
        assert retained
        assert config["device"] == {"identifiers": [f"gatekeeper_{LOT}"], "name": f"Gatekeeper {settings.site.name}",
                                    "manufacturer": "gatekeeper", "model": "gatekeeper lane controller",
                                    "sw_version": __version__, "serial_number": LOT}
        assert config["origin"]["name"] == "gatekeeper"
        assert (config["availability_topic"], config["payload_available"], config["payload_not_available"]) == (
            f"{BASE}/status", "online", "offline")
        cmps = config["components"]
        assert set(cmps) == {"occupied", "free", "outbox_backlog",
                             *(f"{lane}_{what}" for lane in LANES for what in ("gate", "event", "problem"))}
        assert len({c["unique_id"] for c in cmps.values()}) == len(cmps)
        assert cmps["in-1_gate"]["state_topic"] == f"{BASE}/lanes/in-1/gate"
        assert cmps["occupied"]["state_topic"] == cmps["free"]["state_topic"] == f"{BASE}/occupancy"
        assert cmps["in-1_event"]["platform"] == "event"
        assert cmps["in-1_event"]["event_types"] == ["entry", "exit", "denied", "no_read"]
        assert "last_read" not in json.dumps(config) and not [k for k in cmps if "plate" in k]

        # health: the backlog and each lane's health, retained
        with Subscriber(mosquitto, f"{BASE}/health") as health:
            body = health.get().json()
        assert body["lanes"] == {"in-1": "ok", "out-1": "stalled"}
        assert isinstance(body["outbox_backlog"], int)

        # a lane event fires the event entity, without the plate; no last_read topic is published
        with Subscriber(mosquitto, f"{BASE}/#") as lot:
            _entry(store)
            sync.wake()
            fired = lot.get(where=lambda m: m.topic == f"{BASE}/lanes/in-1/event").json()
            assert fired["event_type"] == "entry" and fired["open"] is True
            assert "AB123CD" not in json.dumps(fired)
            store.record_event("alarm", lane="in-1", reason="marker")
            sync.wake()
            lot.get(where=lambda m: m.topic == f"{BASE}/events/alarm")
            assert not [m for m in lot.history if m.topic.endswith("/last_read")]


def test_plates_and_open_button_only_when_enabled(mosquitto: Mosquitto, tmp_path: Path, store_for: Any) -> None:
    settings = _settings(mosquitto, tmp_path, enabled=True, include_plates=True, allow_open=True,
                         discovery_prefix="homeassistant")
    store = store_for(settings)
    opener = OpenRecorder()
    with CloudSync(settings, store, open_handler=opener) as sync:
        wait_until(lambda: sync.connected, "connection")
        cmps = _discovery(mosquitto)[0]["components"]
        assert cmps["in-1_last_plate"]["state_topic"] == f"{BASE}/lanes/in-1/last_read"
        assert cmps["in-1_open"]["command_topic"] == f"{BASE}/lanes/in-1/open"
        assert cmps["in-1_open"]["payload_press"] == "PRESS"

        with Subscriber(mosquitto, f"{BASE}/lanes/+/last_read") as reads:
            _entry(store, plate="XY987ZZ")
            sync.wake()
            last = reads.get().json()
        assert (last["plate"], last["kind"]) == ("XY987ZZ", "entry")

        assert sync.ha is not None
        with Subscriber(mosquitto, f"{BASE}/status") as button:
            button.publish(f"{BASE}/lanes/in-1/open", "PRESS")
            wait_until(lambda: opener.calls, "the open")
            assert opener.calls == [("in-1", "Home Assistant button", "homeassistant")]
            button.publish(f"{BASE}/lanes/in-1/open", "OPEN NOW")  # not the button's payload
            button.publish(f"{BASE}/lanes/nope/open", "PRESS")  # no such lane
            wait_until(lambda: sync.ha.ignored == 2, "both refused")
            # a retained press: opens once (live), never again when the lot reconnects
            button.client.publish(f"{BASE}/lanes/out-1/open", "PRESS", qos=1, retain=True).wait_for_publish(10)
            wait_until(lambda: len(opener.calls) == 2, "the live press")
    with CloudSync(settings, store, open_handler=opener) as again:
        wait_until(lambda: again.ha is not None and again.ha.ignored == 1, "the retained copy refused")
    assert len(opener.calls) == 2


def test_disabled_publishes_nothing_for_home_assistant(mosquitto: Mosquitto, tmp_path: Path,
                                                      store_for: Any) -> None:
    settings = _settings(mosquitto, tmp_path)  # the default: off
    assert settings.homeassistant.enabled is False
    store = store_for(settings)
    with Subscriber(mosquitto, "#") as everything, CloudSync(settings, store, open_handler=OpenRecorder()) as sync:
        wait_until(lambda: sync.connected, "connection")
        marker = _entry(store)
        sync.wake()
        # one publisher's messages arrive in order: anything sent on connect came before the event
        everything.get(where=lambda m: m.topic == f"{BASE}/events/entry" and m.json()["id"] == marker)
        topics = {m.topic for m in everything.history}
        assert f"{BASE}/status" in topics
        assert not [t for t in topics if t.startswith("homeassistant/") or t == f"{BASE}/health"
                    or t.endswith(("/event", "/last_read"))]
        assert sync.ha is None


def test_env_switches_it_on_and_a_misspelt_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEKEEPER_HOMEASSISTANT__ENABLED", "true")
    monkeypatch.setenv("GATEKEEPER_HOMEASSISTANT__DISCOVERY_PREFIX", "ha-test")
    cfg = Settings().homeassistant
    assert (cfg.enabled, cfg.discovery_prefix, cfg.include_plates, cfg.allow_open) == (True, "ha-test", False, False)
    with pytest.raises(ValueError, match="include_plate"):
        HomeAssistantConfig(include_plate=True)  # type: ignore[call-arg]


def test_entities_go_unavailable_when_the_process_is_killed(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = _write_config(tmp_path, mosquitto)
    config.write_text(config.read_text() + "\n[homeassistant]\nenabled = true\n", encoding="utf-8")
    assert load_settings(config).homeassistant.enabled
    proc = _start_sync(config, tmp_path / "sync.log")
    try:
        with Subscriber(mosquitto, f"{BASE}/status") as status:
            status.get(where=lambda m: m.payload == b"online")
            availability = _discovery(mosquitto)[0]["availability_topic"]
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
            status.get(where=lambda m: m.payload == b"offline")
        with Subscriber(mosquitto, availability) as late:  # what Home Assistant reads after a restart
            assert late.get().payload == b"offline"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
