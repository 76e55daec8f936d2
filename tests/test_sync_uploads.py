"""Photo uploads against a local HTTP server that fails first and then succeeds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from pydantic import SecretStr

from gatekeeper.config import CloudConfig, Settings, SiteConfig, StorageConfig
from gatekeeper.rules import decide_entry
from gatekeeper.store import Store
from gatekeeper.sync.uploads import PhotoUploader


class FakeCloud:
    """A local HTTP API: answers ``fail_first`` requests with 503, then 201; keeps what it got."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                cloud.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = 503 if len(cloud.requests) <= cloud.fail_first else 201
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                cloud.arrived.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_cloud() -> Iterator[FakeCloud]:
    cloud = FakeCloud(fail_first=2)
    yield cloud
    cloud.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def photo(tmp_path: Path, name: str) -> Path:
    image = np.full((120, 320, 3), 230, np.uint8)
    cv2.putText(image, "B AB 123", (10, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 0, 0), 3)
    path = tmp_path / name
    assert cv2.imwrite(str(path), image)
    return path


def make(tmp_path: Path, url: str, clock: Clock, retries: int = 5) -> tuple[Store, PhotoUploader]:
    settings = Settings(
        site=SiteConfig(lot_id="lot-9", capacity=5),
        cloud=CloudConfig(enabled=True, base_url=url, token=SecretStr("t0ken"), timeout_s=5, retries=retries,
                          backoff_s=30),
        storage=StorageConfig(data_dir=tmp_path / "data"),
    )
    store = Store.from_settings(settings, clock=clock)
    return store, PhotoUploader(settings, store, clock=clock)


def queue_entry(store: Store, plate: str, picture: Path) -> str:
    decision = decide_entry(plate, now=store.clock(), lot=store.lot_state())
    return store.record_decision(decision, lane="entry-1", direction="entry", plate_read=plate, confidence=0.9,
                                 photo=str(picture), upload=True).event_id


def test_upload_retries_with_backoff_until_the_cloud_accepts(tmp_path: Path, fake_cloud: FakeCloud) -> None:
    clock = Clock()
    store, uploader = make(tmp_path, fake_cloud.url, clock)
    with store, uploader:
        picture = photo(tmp_path, "entry.jpg")
        event_id = queue_entry(store, "B-AB 123", picture)

        assert uploader.run_once() == 0 and len(fake_cloud.requests) == 1  # 503
        row = store._rows("SELECT * FROM uploads")[0]
        assert (row["attempts"], row["next_try_at"]) == (1, "2026-05-04T08:00:30.000+00:00")
        assert uploader.run_once() == 0 and len(fake_cloud.requests) == 1  # not due yet: no request

        clock.now += timedelta(seconds=30)
        assert uploader.run_once() == 0 and len(fake_cloud.requests) == 2  # 503 again, backoff doubles
        assert store._rows("SELECT next_try_at FROM uploads")[0]["next_try_at"] == "2026-05-04T08:01:30.000+00:00"

        clock.now += timedelta(seconds=60)
        assert uploader.run_once() == 1 and len(fake_cloud.requests) == 3
        assert store.uploads_due(now=clock.now + timedelta(days=1)) == []
        last = fake_cloud.requests[-1]
        assert last["path"] == f"/api/photos/{event_id}"
        assert last["body"] == picture.read_bytes()
        assert last["headers"]["Authorization"] == "Bearer t0ken"
        assert last["headers"]["Content-Type"] == "image/jpeg"
        assert last["headers"]["X-Gatekeeper-Image"] == "lot-9/entry.jpg"
        # The event references the same photo.
        event = store.events(kinds=["entry"])[0]
        assert '"image": "lot-9/entry.jpg"' in event["data"]


def test_missing_photo_is_a_recorded_failure_not_retried(tmp_path: Path, fake_cloud: FakeCloud) -> None:
    clock = Clock()
    store, uploader = make(tmp_path, fake_cloud.url, clock)
    with store, uploader:
        picture = photo(tmp_path, "gone.jpg")
        queue_entry(store, "GO 1", picture)
        picture.unlink()
        assert uploader.run_once() == 0
        assert fake_cloud.requests == []
        assert store.uploads_due(now=clock.now + timedelta(days=3650)) == []
        row = store._rows("SELECT last_error FROM uploads")[0]
        assert "missing" in row["last_error"]
        assert [e["reason"] for e in store.events(kinds=["upload_failed"])] == ["photo_upload_failed"]


def test_retries_run_out_and_the_failure_is_reported(tmp_path: Path) -> None:
    cloud = FakeCloud(fail_first=100)
    clock = Clock()
    store, uploader = make(tmp_path, cloud.url, clock, retries=2)
    try:
        queue_entry(store, "NO 1", photo(tmp_path, "no.jpg"))
        for _ in range(5):
            uploader.run_once()
            clock.now += timedelta(hours=1)
        assert len(cloud.requests) == 3  # first try + 2 retries
        assert store.uploads_due(now=clock.now + timedelta(days=3650)) == []
        assert len(store.events(kinds=["upload_failed"])) == 1
    finally:
        uploader.close()
        store.close()
        cloud.close()


def test_background_thread_uploads_on_wake(tmp_path: Path) -> None:
    cloud = FakeCloud(fail_first=0)
    store, uploader = make(tmp_path, cloud.url, Clock())
    uploader.poll_interval_s = 60  # only wake() can make it go promptly
    try:
        uploader.start()
        queue_entry(store, "WK 1", photo(tmp_path, "wk.jpg"))
        uploader.wake()
        assert cloud.arrived.wait(10)
    finally:
        uploader.close()
        store.close()
        cloud.close()
