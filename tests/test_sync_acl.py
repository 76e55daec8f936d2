"""Per-lot broker identities against a real mosquitto running the shipped configuration
(mosquitto/gatekeeper.conf: TLS only, a password file, mosquitto/gatekeeper.acl): each lot is confined
to gatekeeper/<its lot>/..., and the lot says clearly when the broker refuses it instead of retrying
silently (docs/security.md)."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydantic import SecretStr

from gatekeeper.store import Store
from gatekeeper.sync import CloudSync
from gatekeeper.sync.signing import sign
from tests.broker import SECRET, Login, Mosquitto, Subscriber, free_port, sync_settings
from tests.identities import SHIPPED, Pki, make_pki, shipped_broker_config, write_dynsec_file, write_password_file
from tests.test_sync_outage import wait_until

LOT_A, LOT_B, CLOUD = "lot-a", "lot-b", "gatekeeper-cloud"
PASSWORDS = {LOT_A: "a-secret-of-lot-a", LOT_B: "a-secret-of-lot-b", CLOUD: "the-cloud-consumer-secret"}
NOT_AUTHORIZED = 0x87
#: Finite: with max_queued_messages 0, mosquitto 2.0.11 disconnects a client after each publish its ACL refuses.
QUEUE_LIMIT = 100_000


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), clients=[LOT_A, LOT_B], foreign_clients=["lot-x"])


@dataclass
class Fleet:
    """The shipped broker set-up: TLS + password on ``broker.port``, TLS + client certificate on ``cert_port``."""

    broker: Mosquitto
    pki: Pki
    passwords: Path
    acl: Path
    cert_port: int

    def login(self, user: str, password: str | None = None) -> Login:
        return Login(username=user, password=password or PASSWORDS[user], ca=self.pki.ca)

    def cert_login(self, name: str) -> Login:
        return Login(ca=self.pki.ca, cert=self.pki.cert(name), key=self.pki.key(name), port=self.cert_port)

    def lot(self, lot: str, data: Path, **mqtt: Any) -> Any:
        """A lot's settings: TLS against the test CA, user name = lot id, its password (unless overridden)."""
        options: dict[str, Any] = {"tls": True, "ca_file": self.pki.ca, "username": lot,
                                   "password": SecretStr(PASSWORDS.get(lot, "")), "refused_retry_s": 2.0}
        options.update(mqtt)
        return sync_settings(self.broker, data, lot=lot, **options)


@pytest.fixture
def fleet(tmp_path: Path, pki: Pki) -> Iterator[Fleet]:
    work = tmp_path / "broker"
    work.mkdir()
    passwords = write_password_file(work / "gatekeeper.passwd", PASSWORDS)
    acl = work / "gatekeeper.acl"
    shutil.copy(SHIPPED / "gatekeeper.acl", acl)
    port, cert_port = free_port(), free_port()
    config = shipped_broker_config(pki=pki, passwords=passwords, acl=acl, password_port=port,
                                   certificate_port=cert_port)
    broker = Mosquitto(work, port=port, config=config, max_queued_messages=QUEUE_LIMIT)
    broker.start()
    try:
        yield Fleet(broker, pki, passwords, acl, cert_port)
    finally:
        broker.close()


def signed(name: str, body: dict[str, Any], *, lot: str) -> bytes:
    full = {"id": uuid.uuid4().hex, "ts": datetime.now().astimezone().isoformat(), **body}
    return json.dumps(sign(full, SECRET, lot=lot, command=name)).encode()


def allow(plate: str, *, lot: str) -> bytes:
    return signed("lists", {"kind": "allow", "op": "add", "entries": [{"plate": plate}]}, lot=lot)


def event(store: Store, sync: CloudSync, message: str) -> None:
    store.record_event("alarm", reason="test", message=message)
    sync.wake()


def refused(sync: CloudSync, kind: str) -> dict[str, Any] | None:
    return next((r for r in sync.health()["refused"] if r["kind"] == kind), None)


def alarms(store: Store, kind: str = "alarm") -> list[dict[str, Any]]:
    return store.events(kinds=[kind])


# --------------------------------------------------------------------------- confinement


def test_a_lot_cannot_publish_another_lots_events_nor_read_its_commands(fleet: Fleet, tmp_path: Path) -> None:
    settings_a, settings_b = fleet.lot(LOT_A, tmp_path / "a"), fleet.lot(LOT_B, tmp_path / "b")
    with Subscriber(fleet.broker, "gatekeeper/+/events/+", login=fleet.login(CLOUD)) as cloud, \
            Store.from_settings(settings_a) as store_a, Store.from_settings(settings_b) as store_b, \
            CloudSync(settings_a, store_a) as lot_a, CloudSync(settings_b, store_b) as lot_b:
        assert cloud.subscribe("gatekeeper/+/reply/+")[0].value == 1  # the cloud may read every lot
        # Each lot's own traffic works, over TLS, as its own user.
        event(store_a, lot_a, "A's own event")
        event(store_b, lot_b, "B's own event")
        # Either may arrive first (get() drops what does not match): wait for both, in any order.
        wanted = {(f"gatekeeper/{LOT_A}/events/alarm", b"A's own"), (f"gatekeeper/{LOT_B}/events/alarm", b"B's own")}
        while wanted:
            got = cloud.get(where=lambda m: any(m.topic == t and text in m.payload for t, text in wanted))
            wanted = {(t, text) for t, text in wanted if not (got.topic == t and text in got.payload)}

        # Someone holding lot A's credentials tries B's topics.
        with Subscriber(fleet.broker, f"gatekeeper/{LOT_B}/cmd/+", login=fleet.login(LOT_A)) as thief:
            thief.subscribe("gatekeeper/+/cmd/+")
            thief.subscribe("gatekeeper/#")
            forged = json.dumps({"id": "forged-1", "lot": LOT_B, "kind": "entry", "message": "forged by A"})
            for topic in (f"gatekeeper/{LOT_B}/events/entry", f"gatekeeper/{LOT_B}/status",
                          f"gatekeeper/{LOT_B}/cmd/open", f"gatekeeper/{LOT_A}/cmd/open"):
                reason = thief.publish(topic, forged)
                assert reason.is_failure and reason.value == NOT_AUTHORIZED, (topic, reason)  # MQTT 5 says so
            event(store_b, lot_b, "B after the forgery")  # B's next event: the forgery would have come first
            cloud.get(where=lambda m: b"B after the forgery" in m.payload)
            assert not [m for m in cloud.history if b"forged" in m.payload]

            # The cloud commands B: B carries it out and replies; A's identity never sees it.
            cloud.publish(f"gatekeeper/{LOT_B}/cmd/lists", allow("BBB 1", lot=LOT_B))
            cloud.get(where=lambda m: m.topic == f"gatekeeper/{LOT_B}/reply/lists" and b'"ok"' in m.payload)
            cloud.publish(f"gatekeeper/{LOT_A}/cmd/lists", allow("AAA 1", lot=LOT_A))  # A may read its own
            thief.get(where=lambda m: m.topic == f"gatekeeper/{LOT_A}/cmd/lists")
            cloud.get(where=lambda m: m.topic == f"gatekeeper/{LOT_A}/reply/lists" and b'"ok"' in m.payload)
            assert [m.topic for m in thief.history if LOT_B in m.topic] == []
            assert all(m.topic.startswith(f"gatekeeper/{LOT_A}/") for m in thief.history)

        # The cloud's identity reads everything and writes commands, but cannot speak for a lot.
        reason = cloud.publish(f"gatekeeper/{LOT_A}/events/entry", "the cloud is not a lot")
        assert reason.is_failure and reason.value == NOT_AUTHORIZED
        assert lot_a.health()["refused"] == [] and lot_b.health()["refused"] == []


def test_a_lot_with_a_client_certificate_is_confined_the_same_way(fleet: Fleet, tmp_path: Path) -> None:
    settings = fleet.lot(LOT_A, tmp_path / "a", port=fleet.cert_port, username=None, password=None,
                         cert_file=fleet.pki.cert(LOT_A), key_file=fleet.pki.key(LOT_A))
    with Subscriber(fleet.broker, "gatekeeper/+/events/+", login=fleet.login(CLOUD)) as cloud, \
            Store.from_settings(settings) as store, CloudSync(settings, store) as lot_a:
        event(store, lot_a, "sent with a certificate")
        cloud.get(where=lambda m: m.topic == f"gatekeeper/{LOT_A}/events/alarm" and b"certificate" in m.payload)
        with Subscriber(fleet.broker, f"gatekeeper/{LOT_A}/cmd/+", login=fleet.cert_login(LOT_A)) as same_cert:
            reason = same_cert.publish(f"gatekeeper/{LOT_B}/events/entry", "forged with A's certificate")
            assert reason.is_failure and reason.value == NOT_AUTHORIZED  # the CN is the user the ACL sees


def test_a_certificate_from_another_ca_is_refused_and_said_so(fleet: Fleet, tmp_path: Path) -> None:
    settings = fleet.lot("lot-x", tmp_path / "x", port=fleet.cert_port, username=None, password=None,
                         cert_file=fleet.pki.cert("lot-x"), key_file=fleet.pki.key("lot-x"))
    with Store.from_settings(settings) as store, CloudSync(settings, store) as lot_x:
        wait_until(lambda: lot_x.link == "refused", "the foreign certificate refused")
        refusal = refused(lot_x, "connect")
        assert refusal is not None and "client certificate" in refusal["reason"]
        assert not lot_x.connected


def test_trusting_the_wrong_ca_is_a_refusal_naming_ca_file(fleet: Fleet, tmp_path: Path) -> None:
    settings = fleet.lot(LOT_A, tmp_path / "a", ca_file=fleet.pki.other_ca)
    with Store.from_settings(settings) as store, CloudSync(settings, store) as lot_a:
        wait_until(lambda: lot_a.link == "refused", "the broker's certificate not trusted")
        refusal = refused(lot_a, "connect")
        assert refusal is not None and "not trusted" in refusal["reason"] and "mqtt.ca_file" in refusal["reason"]


# --------------------------------------------------------------------------- refusals reported


def test_a_wrong_password_is_reported_retried_slowly_and_recovers_when_fixed(
        fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = fleet.lot(LOT_A, tmp_path / "a", password=SecretStr("not-the-password"), refused_retry_s=2.0,
                         reconnect_min_s=0.1, reconnect_max_s=0.5)
    caplog.set_level(logging.INFO, logger="gatekeeper.sync")
    with Subscriber(fleet.broker, f"gatekeeper/{LOT_A}/events/+", login=fleet.login(CLOUD)) as cloud, \
            Store.from_settings(settings) as store, CloudSync(settings, store) as lot_a:
        wait_until(lambda: (refused(lot_a, "connect") or {}).get("attempts", 0) >= 3, "three refused attempts")
        refusal = refused(lot_a, "connect")
        assert refusal is not None and lot_a.link == "refused" and not lot_a.connected
        assert "Not authorized" in refusal["reason"] and "0x87" in refusal["reason"]
        assert lot_a.refusal is not None and lot_a.refusal.startswith("connection refused: Not authorized")
        # The backoff for a refusal: each wait is at least refused_retry_s / 2 = 1 s (the reconnect backoff
        # alone would have tried again within 0.5 s).
        spent = (datetime.fromisoformat(refusal["last_at"]) - datetime.fromisoformat(refusal["since"]))
        assert spent.total_seconds() >= (refusal["attempts"] - 1) * 1.0, refusal
        seen = fleet.broker.log_text().count("disconnected, not authorised")  # what the broker saw
        assert refusal["attempts"] <= seen <= refusal["attempts"] + 1
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and "connection refused" in r.getMessage()]
        assert len(errors) == 1 and "mqtt.username" in errors[0].getMessage()  # once, then warnings
        wait_until(lambda: [a for a in alarms(store) if a["reason"] == "broker_refused"], "the alarm event")

        # The operator gives the lot the password it has; the broker reloads; the lot gets in on its own.
        write_password_file(fleet.passwords, {**PASSWORDS, LOT_A: "not-the-password"})
        fleet.broker.reload()
        wait_until(lambda: lot_a.connected, "connected after the password file was fixed", timeout=15)
        assert lot_a.link == "connected" and refused(lot_a, "connect") is None
        wait_until(lambda: [a for a in alarms(store, "alarm_cleared") if a["reason"] == "broker_ok"], "cleared")
        got = [cloud.get(where=lambda m: m.topic.endswith("/events/alarm") or m.topic.endswith("/alarm_cleared"))
               for _ in range(2)]
        assert [m.json()["reason"] for m in got] == ["broker_refused", "broker_ok"]  # the cloud learns afterwards


def test_a_refused_publish_keeps_the_row_until_the_acl_allows_it(fleet: Fleet, tmp_path: Path) -> None:
    shipped = (SHIPPED / "gatekeeper.acl").read_text(encoding="utf-8")
    fleet.acl.write_text(shipped.replace("pattern write gatekeeper/%u/events/+\n", ""), encoding="utf-8")
    fleet.broker.reload()
    settings = fleet.lot(LOT_A, tmp_path / "a", refused_retry_s=1.0)
    with Subscriber(fleet.broker, f"gatekeeper/{LOT_A}/#", login=fleet.login(CLOUD)) as cloud, \
            Store.from_settings(settings) as store, CloudSync(settings, store) as lot_a:
        cloud.get(where=lambda m: m.topic.endswith("/status") and m.payload == b"online")  # status is allowed
        event(store, lot_a, "held back by the ACL")
        wait_until(lambda: (refused(lot_a, "publish") or {}).get("attempts", 0) >= 2, "refused twice")
        refusal = refused(lot_a, "publish")
        assert refusal is not None and "Not authorized" in refusal["reason"] and "events/alarm" in refusal["detail"]
        first = store.outbox_pending(limit=5)
        assert first and json.loads(first[0].payload)["message"] == "held back by the ACL"  # not lost
        assert lot_a.connected and lot_a.link == "connected"  # the connection itself is fine
        spent = datetime.fromisoformat(refusal["last_at"]) - datetime.fromisoformat(refusal["since"])
        assert spent.total_seconds() >= 0.5 * (refusal["attempts"] - 1)  # at most one try per 0.5-1 s
        wait_until(lambda: [a for a in alarms(store) if a["reason"] == "publish_refused"], "the alarm event")
        assert not [m for m in cloud.history if "/events/" in m.topic]

        fleet.acl.write_text(shipped, encoding="utf-8")  # the ACL is fixed
        fleet.broker.reload()
        messages = [cloud.get(where=lambda m: "/events/" in m.topic, timeout=15).json() for _ in range(3)]
        assert [(m["kind"], m["reason"]) for m in messages] == [
            ("alarm", "test"), ("alarm", "publish_refused"), ("alarm_cleared", "publish_ok")]
        assert [m["seq"] for m in messages] == sorted(m["seq"] for m in messages)  # in order, nothing lost
        wait_until(lambda: store.outbox_stats()["pending"] == 0, "the outbox empty")
        assert refused(lot_a, "publish") is None


# --------------------------------------------------------------------------- a refused subscription


def _dynsec_plugin() -> Path | None:
    return next(iter(sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))), None)


def test_a_refused_command_subscription_is_reported_and_retried(tmp_path: Path) -> None:
    """mosquitto's acl_file grants every subscription and filters delivery; its dynamic-security plugin (like
    EMQX or HiveMQ) refuses in the SUBACK. Here the lot may publish but not subscribe to its commands until
    an administrator adds the missing ACL over $CONTROL, without restarting anything."""
    plugin = _dynsec_plugin()
    if plugin is None:
        pytest.skip("mosquitto's dynamic security plugin is not installed")
    work = tmp_path / "broker"
    work.mkdir()
    lot_acls = [("publishClientSend", f"gatekeeper/{LOT_A}/#"), ("publishClientReceive", f"gatekeeper/{LOT_A}/#")]
    dynsec = write_dynsec_file(
        work / "dynsec.json", clients={LOT_A: PASSWORDS[LOT_A], CLOUD: PASSWORDS[CLOUD], "admin": "admin-pw"},
        roles={LOT_A: lot_acls,
               CLOUD: [("publishClientSend", "gatekeeper/#"), ("publishClientReceive", "gatekeeper/#"),
                       ("subscribePattern", "gatekeeper/#")],
               "admin": [("publishClientSend", "$CONTROL/dynamic-security/#"),
                         ("publishClientReceive", "$CONTROL/dynamic-security/#"),
                         ("subscribePattern", "$CONTROL/dynamic-security/#")]})
    port = free_port()
    broker = Mosquitto(work, port=port, config=[f"listener {port} 127.0.0.1", "allow_anonymous false",
                                                f"plugin {plugin}", f"plugin_opt_config_file {dynsec}"],
                       max_queued_messages=QUEUE_LIMIT)
    with broker:
        settings = sync_settings(broker, tmp_path / "a", lot=LOT_A, username=LOT_A,
                                 password=SecretStr(PASSWORDS[LOT_A]), refused_retry_s=1.0)
        cloud_login = Login(username=CLOUD, password=PASSWORDS[CLOUD])
        with Subscriber(broker, f"gatekeeper/{LOT_A}/#", login=cloud_login) as cloud, \
                Store.from_settings(settings) as store, CloudSync(settings, store) as lot_a:
            wait_until(lambda: (refused(lot_a, "subscribe") or {}).get("attempts", 0) >= 2, "refused, retried")
            refusal = refused(lot_a, "subscribe")
            assert refusal is not None and refusal["detail"] == f"gatekeeper/{LOT_A}/cmd/+"
            assert "Not authorized" in refusal["reason"] and "subscription refused" in (lot_a.refusal or "")
            event(store, lot_a, "events still go up")  # the lot keeps publishing meanwhile
            cloud.get(where=lambda m: b"events still go up" in m.payload)
            wait_until(lambda: [a for a in alarms(store) if a["reason"] == "subscription_refused"], "alarm")

            with Subscriber(broker, "$CONTROL/dynamic-security/#", login=Login("admin", "admin-pw")) as admin:
                admin.publish("$CONTROL/dynamic-security/v1", json.dumps({"commands": [{
                    "command": "addRoleACL", "rolename": LOT_A, "acltype": "subscribePattern",
                    "topic": f"gatekeeper/{LOT_A}/cmd/+", "priority": 0, "allow": True}]}))
                admin.get(where=lambda m: m.topic == "$CONTROL/dynamic-security/v1/response")
            wait_until(lambda: refused(lot_a, "subscribe") is None, "subscribed on a later retry", timeout=15)
            cloud.publish(f"gatekeeper/{LOT_A}/cmd/lists", allow("AAA 2", lot=LOT_A))
            cloud.get(where=lambda m: m.topic == f"gatekeeper/{LOT_A}/reply/lists" and b'"ok"' in m.payload)


# --------------------------------------------------------------------------- Home Assistant under the ACL


def test_home_assistant_topics_work_under_the_acl(fleet: Fleet, tmp_path: Path) -> None:
    """The lot's Home Assistant lines of the ACL (discovery config, health, the open button) with the commented
    Home Assistant user of mosquitto/gatekeeper.acl switched on."""
    from gatekeeper.config import HomeAssistantConfig, LaneConfig
    from tests.test_sync import OpenRecorder

    acl = (SHIPPED / "gatekeeper.acl").read_text(encoding="utf-8")
    ha_block = acl[acl.index("# user homeassistant"):]
    fleet.acl.write_text(acl + "\n" + "\n".join(line.removeprefix("# ") for line in ha_block.splitlines()) + "\n",
                         encoding="utf-8")
    write_password_file(fleet.passwords, {**PASSWORDS, "homeassistant": "ha-secret"})
    fleet.broker.reload()
    settings = fleet.lot(LOT_A, tmp_path / "a")
    settings.lanes = [LaneConfig(id="in-1", direction="entry", camera="0", relay_pin=17)]
    settings.homeassistant = HomeAssistantConfig(enabled=True, allow_open=True)
    opener = OpenRecorder()
    with Subscriber(fleet.broker, "homeassistant/#", login=fleet.login("homeassistant", "ha-secret")) as ha, \
            Store.from_settings(settings) as store, CloudSync(settings, store, open_handler=opener) as lot_a:
        config = ha.get(where=lambda m: m.topic == f"homeassistant/device/gatekeeper_{LOT_A}/config").json()
        assert config["availability_topic"] == f"gatekeeper/{LOT_A}/status"
        ha.subscribe(f"gatekeeper/{LOT_A}/health")
        ha.get(where=lambda m: m.topic == f"gatekeeper/{LOT_A}/health")
        wait_until(lambda: lot_a.connected and not lot_a.subscriptions.awaiting(), "both subscriptions granted")
        assert ha.publish(f"gatekeeper/{LOT_A}/lanes/in-1/open", "PRESS").value < 0x80
        wait_until(lambda: opener.calls, "the button opened the lane")
        assert opener.calls[0][0] == "in-1"
        # Another lot's discovery config is not this lot's to write.
        with Subscriber(fleet.broker, f"gatekeeper/{LOT_A}/cmd/+", login=fleet.login(LOT_A)) as same_user:
            reason = same_user.publish(f"homeassistant/device/gatekeeper_{LOT_B}/config", "{}")
            assert reason.value == NOT_AUTHORIZED
        assert lot_a.health()["refused"] == [] and lot_a.last_error is None
