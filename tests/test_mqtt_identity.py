"""The lot's broker identity in the configuration, the production example, and how refusals read
(the broker side is tested in test_sync_acl.py)."""

from __future__ import annotations

import json
import re
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gatekeeper.cli.status import sync_lines
from gatekeeper.config import ConfigError, MqttConfig, load_settings
from gatekeeper.service.status import status_line
from gatekeeper.store import Store
from gatekeeper.sync.paho_transport import classify_connect_error, configure_identity
from gatekeeper.sync.refusals import Refusals, refused_wait
from tests.identities import make_pki

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def load(tmp_path: Path, mqtt_lines: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[mqtt]\n{mqtt_lines}\n", encoding="utf-8")
    load_settings(path)


@pytest.mark.parametrize(("lines", "expected"), [
    ('tls = true\ncert_file = "lot.crt"', "mqtt.cert_file needs mqtt.key_file"),
    ('tls = true\nkey_file = "lot.key"', "mqtt.key_file needs mqtt.cert_file"),
    ('ca_file = "ca.crt"', "mqtt.ca_file set but mqtt.tls is false"),
    ('cert_file = "a.crt"\nkey_file = "a.key"', "mqtt.cert_file, mqtt.key_file set but mqtt.tls is false"),
    ('password_file = "pw"', "needs mqtt.username"),
])
def test_a_half_configured_identity_is_a_config_error(tmp_path: Path, lines: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)) as error:
        load(tmp_path, lines)
    assert str(error.value).startswith("mqtt:")  # names the section, one readable line


def test_a_password_from_the_environment_needs_a_user_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEKEEPER_MQTT__PASSWORD", "s3cret")
    with pytest.raises(ConfigError, match="needs mqtt.username"):
        load(tmp_path, "")
    monkeypatch.setenv("GATEKEEPER_MQTT__USERNAME", "demo-lot")
    load(tmp_path, "")


def test_the_password_itself_is_never_accepted_in_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="secrets may not be written in the config file"):
        load(tmp_path, 'username = "lot-1"\npassword = "hunter2"')


def test_identity_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "config.toml"
    path.write_text('[mqtt]\ntls = true\nca_file = "ca.crt"\ncert_file = "lot.crt"\nkey_file = "/abs/lot.key"\n'
                    'username = "u"\npassword_file = "pw"\n', encoding="utf-8")
    cfg = load_settings(path).mqtt
    assert cfg.ca_file == tmp_path / "etc" / "ca.crt" and cfg.cert_file == tmp_path / "etc" / "lot.crt"
    assert cfg.key_file == Path("/abs/lot.key") and cfg.password_file == tmp_path / "etc" / "pw"


def test_the_production_example_has_tls_on_and_its_secrets_as_systemd_credentials() -> None:
    settings = load_settings(REPO / "config.production.toml")
    cfg = settings.mqtt
    assert cfg.tls and cfg.port == 8883 and cfg.protocol == "5" and cfg.ca_file is not None
    assert cfg.username == settings.site.lot_id  # the ACL's %u
    assert cfg.password is None and cfg.hmac_secret is None
    dropin = (REPO / "systemd" / "gatekeeper.service.d" / "credentials.conf").read_text(encoding="utf-8")
    loaded = dict(re.findall(r"^LoadCredential=([\w.-]+):(\S+)$", dropin, re.M))
    run = Path("/run/credentials/gatekeeper.service")
    for secret_file in (cfg.password_file, cfg.hmac_secret_file):
        assert secret_file is not None and secret_file.parent == run and secret_file.name in loaded
        assert loaded[secret_file.name].startswith("/etc/gatekeeper/credentials/")
    demo = load_settings(REPO / "config.toml").mqtt  # the laptop demo stays on a local plain broker
    assert not demo.tls and demo.port == 1883


def test_unusable_tls_files_are_a_config_error_naming_the_keys(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", clients=["lot-a", "lot-b"])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    missing = MqttConfig(tls=True, ca_file=tmp_path / "nope.crt")
    with pytest.raises(ConfigError, match=r"mqtt.ca_file: cannot use for TLS: No such file"):
        configure_identity(client, missing, None)
    mismatched = MqttConfig(tls=True, ca_file=pki.ca, cert_file=pki.cert("lot-a"), key_file=pki.key("lot-b"))
    with pytest.raises(ConfigError, match="the private key does not belong to the certificate"):
        configure_identity(mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5), mismatched, None)
    good = MqttConfig(tls=True, ca_file=pki.ca, cert_file=pki.cert("lot-a"), key_file=pki.key("lot-a"))
    configure_identity(mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5), good, None)


def test_connect_errors_say_which_side_refused() -> None:
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate in certificate chain"
    text, refused = classify_connect_error(untrusted, "mqtts://b:8883")
    assert refused and "not trusted" in text and "mqtt.ca_file" in text
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    text, refused = classify_connect_error(alert, "mqtts://b:8884")
    assert refused and "mqtt.cert_file" in text
    plain = ssl.SSLError(1, "wrong version number")
    plain.reason = "WRONG_VERSION_NUMBER"
    assert classify_connect_error(plain, "mqtts://b:1883") == (
        "TLS: mqtts://b:1883 does not speak TLS (WRONG_VERSION_NUMBER); is mqtt.port the broker's TLS listener?",
        True)
    text, refused = classify_connect_error(ConnectionRefusedError(111, "Connection refused"), "mqtt://b:1883")
    assert not refused and text == "cannot connect to mqtt://b:1883: Connection refused"


def test_the_refused_wait_is_between_half_and_all_of_it() -> None:
    assert refused_wait(60.0, rng=lambda: 0.0) == 30.0 and refused_wait(60.0, rng=lambda: 1.0) == 60.0


def test_refusals_become_one_alarm_and_one_cleared_event(tmp_path: Path) -> None:
    clock = [NOW]
    refusals = Refusals(clock=lambda: clock[0])
    with Store(tmp_path / "gk.db", lot_id="lot-r", capacity=5, clock=lambda: clock[0]) as store:
        refusals.refused("connect", "Not authorized (CONNACK 0x87)", detail="mqtts://b:8883 as lot-r")
        clock[0] += timedelta(seconds=45)
        refusals.refused("connect", "Not authorized (CONNACK 0x87)", detail="mqtts://b:8883 as lot-r")
        assert refusals.record_alarms(store) and not refusals.record_alarms(store)  # once, not per attempt
        clock[0] += timedelta(seconds=45)
        refusals.cleared("connect")
        assert refusals.record_alarms(store)
        alarm, cleared = [{**e, "data": json.loads(e["data"])} for e in store.events(kinds=["alarm", "alarm_cleared"])]
    assert (alarm["kind"], alarm["reason"]) == ("alarm", "broker_refused")
    assert alarm["data"]["broker_reason"] == "Not authorized (CONNACK 0x87)" and alarm["data"]["attempts"] == 2
    assert (cleared["kind"], cleared["reason"]) == ("alarm_cleared", "broker_ok")
    assert cleared["data"]["attempts"] == 2 and cleared["data"]["until"].startswith("2026-05-04T08:01:30")


def test_a_refusal_that_ends_before_the_drain_looks_leaves_no_alarm(tmp_path: Path) -> None:
    refusals = Refusals(clock=lambda: NOW)
    with Store(tmp_path / "gk.db", lot_id="lot-r", capacity=5, clock=lambda: NOW) as store:
        refusals.refused("publish", "Not authorized (PUBACK 0x87)", detail="outbox row 3 on events/entry")
        refusals.cleared("publish")
        assert not refusals.record_alarms(store) and store.events(kinds=["alarm"]) == []


def test_status_shows_a_refused_link_with_what_and_since_when() -> None:
    settings = load_settings(REPO / "config.toml")
    refusal = {"kind": "connect", "reason": "Not authorized (CONNACK 0x87)", "detail": "mqtts://b:8883 as lot-a",
               "since": "2026-05-04T08:00:00.000+00:00", "attempts": 4}
    lines = sync_lines({"connected": False, "link": "refused", "refused": [refusal]}, settings)
    assert lines[0] == "sync: REFUSED by the broker"
    assert "REFUSED connect: Not authorized (CONNACK 0x87) (mqtts://b:8883 as lot-a); since " in lines[1]
    assert "4 attempt(s), tried again every 30-60 s" in lines[1]
    offline = sync_lines({"connected": False, "link": "offline", "refused": [],
                          "last_error": "cannot connect to mqtt://localhost:1883: Connection refused"}, settings)
    assert offline == ["sync: offline (cannot connect to mqtt://localhost:1883: Connection refused)"]
    assert sync_lines({"connected": True, "rejections_total": 2}, settings) == [
        "sync: connected, 2 command(s) rejected since start"]


class _RefusedSync:
    connected = False
    refusal = "connection refused: Not authorized (CONNACK 0x87) (mqtts://b:8883 as lot-a)"

    def health(self) -> dict[str, object]:
        return {}


def test_systemd_status_line_names_the_refusal(tmp_path: Path) -> None:
    with Store(tmp_path / "gk.db", lot_id="lot-a", capacity=5) as store:
        line = status_line(store=store, sync=_RefusedSync(), lanes={})
    assert line.endswith("; cloud offline - MQTT connection refused: Not authorized (CONNACK 0x87) "
                         "(mqtts://b:8883 as lot-a)")


def test_the_acl_in_docs_security_is_the_shipped_file() -> None:
    """docs/security.md shows the ACL's rules; they must be the shipped mosquitto/gatekeeper.acl's."""
    doc = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- acl: mosquitto/gatekeeper.acl -->\s*```conf\n(.*?)```", doc, re.S)
    assert block, "docs/security.md has no ACL block"

    def rules(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    assert rules(block.group(1)) == rules((REPO / "mosquitto" / "gatekeeper.acl").read_text(encoding="utf-8"))
