"""The paho transport's connection habits: jittered capped backoff, TCP_NODELAY, manual acknowledgement."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from gatekeeper.store import Store
from gatekeeper.sync import CloudSync
from gatekeeper.sync.paho_transport import Backoff, PahoTransport, route_up
from tests.broker import LOT, Mosquitto, Subscriber, sync_settings

BASE = f"gatekeeper/{LOT}"


def test_backoff_is_full_jitter_under_a_capped_exponential() -> None:
    top = Backoff(base=0.5, cap=5.0, rng=lambda: 1.0)
    assert [top.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    top.reset()
    assert top.next() == 0.5  # after a good connection the first retry is short again
    bottom = Backoff(base=0.5, cap=5.0, rng=lambda: 0.0)
    assert [bottom.next() for _ in range(3)] == [0.0, 0.0, 0.0]
    import random

    rng = random.Random(7)
    waits = [Backoff(base=0.5, cap=5.0, rng=rng.random) for _ in range(200)]
    tenth = [b.next() for b in waits for _ in range(10)][9::10]
    assert max(tenth) <= 5.0 and min(tenth) < 1.0 and len({round(w, 2) for w in tenth}) > 150  # spread out


def test_route_up_on_loopback() -> None:
    assert route_up("127.0.0.1", 1883)
    assert not route_up("no-such-host.invalid", 1883)


def _wait(check, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    waiter = threading.Event()
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        waiter.wait(0.02)
    return True


def test_socket_has_tcp_nodelay_and_reconnects_within_the_cap(mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings = sync_settings(mosquitto, tmp_path / "data", reconnect_min_s=0.5, reconnect_max_s=5.0)
    with Store.from_settings(settings) as store, Subscriber(mosquitto, f"{BASE}/status") as status:
        sync = CloudSync(settings, store).start()
        try:
            status.get(where=lambda m: m.payload == b"online")
            transport = sync._transport
            assert isinstance(transport, PahoTransport)
            sock = transport._client.socket()
            assert isinstance(sock, socket.socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            mosquitto.stop()
            assert _wait(lambda: not sync.connected, 10)
            time.sleep(6)  # several failed attempts: the backoff has reached its cap
            mosquitto.start()
            started = time.monotonic()
            assert _wait(lambda: sync.connected, 5.0 + 5.0), "not reconnected within the 5 s cap (+ slack)"
            print(f"reconnected {time.monotonic() - started:.2f} s after the broker came back")
        finally:
            sync.close()
