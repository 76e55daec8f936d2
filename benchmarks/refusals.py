"""How hard a refused lot hits the broker: connection attempts and publishes per minute.

    python benchmarks/refusals.py [--seconds 60] [--code DIR]

Against a real mosquitto started here with the shipped set-up (mosquitto/gatekeeper.conf: TLS,
password file, mosquitto/gatekeeper.acl) and the shipped sync defaults (reconnect 0.5-5 s,
``mqtt.refused_retry_s`` 60 s where the code has it):

1. wrong password: the lot's connection attempts the broker refused ("not authorised" in its log);
2. refused publish: the ACL lacks ``events/+``; one event is committed; the publishes of that row
   (the sync's own counter) and whether the row is still unsent at the end.

``--code DIR`` imports ``gatekeeper`` from another checkout (e.g. an older commit) to compare; the
broker, certificates and measuring stay those of this checkout.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def run(seconds: float) -> dict[str, Any]:
    from pydantic import SecretStr

    from gatekeeper.config import MqttConfig
    from gatekeeper.store import Store
    from gatekeeper.sync import CloudSync
    from tests.broker import Mosquitto, free_port, sync_settings
    from tests.identities import SHIPPED, make_pki, shipped_broker_config, write_password_file

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki = make_pki(root / "pki")
        passwords = write_password_file(root / "passwd", {"lot-a": "right-password"})
        acl = root / "gatekeeper.acl"
        shipped_acl = (SHIPPED / "gatekeeper.acl").read_text(encoding="utf-8")
        acl.write_text(shipped_acl.replace("pattern write gatekeeper/%u/events/+\n", ""), encoding="utf-8")
        port, cert_port = free_port(), free_port()
        config = shipped_broker_config(pki=pki, passwords=passwords, acl=acl, password_port=port,
                                       certificate_port=cert_port)
        with Mosquitto(root / "broker", port=port, config=config, max_queued_messages=100_000) as broker:
            def settings(data: str, password: str) -> Any:
                options: dict[str, Any] = {"tls": True, "ca_file": pki.ca, "username": "lot-a",
                                           "password": SecretStr(password), "reconnect_min_s": 0.5,
                                           "reconnect_max_s": 5.0}
                if "refused_retry_s" in MqttConfig.model_fields:
                    options["refused_retry_s"] = 60.0
                return sync_settings(broker, root / data, lot="lot-a", **options)

            wrong = settings("wrong", "not-the-password")
            with Store.from_settings(wrong) as store, CloudSync(wrong, store):
                threading.Event().wait(seconds)
            attempts = broker.log_text().count("disconnected, not authorised")
            figures["wrong password: refused connections"] = attempts
            figures["wrong password: per minute"] = round(attempts * 60 / seconds, 1)

            right = settings("right", "right-password")
            with Store.from_settings(right) as store, CloudSync(right, store) as sync:
                deadline = time.monotonic() + 30
                while not sync.connected and time.monotonic() < deadline:
                    threading.Event().wait(0.05)
                store.record_event("alarm", reason="bench", message="refused by the ACL")
                sync.wake()
                threading.Event().wait(seconds)
                published = sync.pump.published
                pending = store.outbox_stats()["pending"]
            figures["refused publish: publishes of the row"] = published
            figures["refused publish: per minute"] = round(published * 60 / seconds, 1)
            figures["refused publish: rows still unsent at the end"] = pending
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each case runs")
    parser.add_argument("--code", type=Path, help="import gatekeeper from this checkout instead")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import tests.broker  # noqa: F401  (this checkout's broker helpers, before --code shadows anything)
    import tests.identities  # noqa: F401

    if args.code:
        sys.path.insert(0, str(args.code.resolve()))
    import gatekeeper

    print(f"gatekeeper from {Path(gatekeeper.__file__).parent.parent}, {args.seconds:g} s per case, "
          f"mosquitto {shutil.which('mosquitto') or '/usr/sbin/mosquitto'}")
    for name, value in run(args.seconds).items():
        print(f"{name:48} {value}")


if __name__ == "__main__":
    main()
