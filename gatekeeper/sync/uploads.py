"""Entry and exit photos to the cloud HTTP API, from the durable ``uploads`` queue.

The store queues a photo in the same transaction as its event, so a photo is never
forgotten; this module only drains that queue. The request (documented in docs/mqtt.md,
"Photos"): ``POST {cloud.base_url}/photos/{event_id}`` with the raw JPEG as the body,
``Content-Type: image/jpeg``, ``Authorization: Bearer <token>`` and the headers
``X-Gatekeeper-Lot``, ``X-Gatekeeper-Session`` and ``X-Gatekeeper-Image`` (the reference the
event carries). Any 2xx is success; a failure is retried with exponential backoff until
``cloud.retries`` is used up, then given up on with an ``upload_failed`` event. A missing
file is given up on at once: retrying cannot bring it back.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import requests

from gatekeeper.config import read_secret
from gatekeeper.store import Store, utcnow

log = logging.getLogger(__name__)

#: ``next_try_at`` of an upload that will never be tried again (the store has no "given up" state).
GIVEN_UP_AT = datetime(9999, 12, 31, tzinfo=utcnow().tzinfo)
MAX_BACKOFF = timedelta(hours=6)
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


class PhotoUploader:
    """Drains ``store.uploads_due()`` with requests; one background thread, ``close()`` to stop."""

    def __init__(
        self,
        settings: Any,
        store: Store,
        *,
        session: requests.Session | None = None,
        poll_interval_s: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        cloud = settings.cloud
        self.store = store
        self.lot_id: str = settings.site.lot_id
        self.base_url: str = cloud.base_url.rstrip("/")
        self.timeout_s: float = cloud.timeout_s
        self.retries: int = cloud.retries
        self.backoff_s: float = cloud.backoff_s
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self._token = read_secret(cloud.token, cloud.token_file, "cloud.token")
        if not self._token:
            log.warning("cloud.token is not set: photo uploads are sent without authorisation")
        self._http = session or requests.Session()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.uploaded = 0
        self.failed = 0
        self.last_error: str | None = None

    # -- one pass ----------------------------------------------------------------------

    def run_once(self, *, limit: int = 20) -> int:
        """Try every upload that is due now; returns how many succeeded."""
        done = 0
        for row in self.store.uploads_due(now=self.clock(), limit=limit):
            if self._stop.is_set():
                break
            if self._upload(row):
                done += 1
        return done

    def _upload(self, row: dict[str, Any]) -> bool:
        path = Path(row["path"])
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            self._give_up(row, f"photo file is missing: {path}")
            return False
        except OSError as exc:
            return self._failed(row, f"cannot read {path}: {exc.strerror}")
        headers = {
            "Content-Type": CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
            "X-Gatekeeper-Lot": self.lot_id,
            "X-Gatekeeper-Image": f"{self.lot_id}/{path.name}",
        }
        if row.get("session_id") is not None:
            headers["X-Gatekeeper-Session"] = str(row["session_id"])
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        url = f"{self.base_url}/photos/{row['event_id']}"
        try:
            response = self._http.post(url, data=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            return self._failed(row, f"POST {url}: {type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            self.store.upload_done(row["id"])
            self.uploaded += 1
            log.info("photo for event %s uploaded (%d bytes)", row["event_id"], len(body))
            return True
        return self._failed(row, f"POST {url}: HTTP {response.status_code} {response.text[:200]!r}")

    def _failed(self, row: dict[str, Any], error: str) -> bool:
        attempts = int(row.get("attempts") or 0) + 1
        self.last_error = error
        if attempts > self.retries:
            self._give_up(row, f"{error} (gave up after {attempts} attempts)")
            return False
        delay = min(timedelta(seconds=self.backoff_s * 2 ** (attempts - 1)), MAX_BACKOFF)
        self.store.upload_failed(row["id"], error, next_try_at=self.clock() + delay)
        log.warning("photo upload for event %s failed (attempt %d, next in %ss): %s",
                    row["event_id"], attempts, int(delay.total_seconds()), error)
        return False

    def _give_up(self, row: dict[str, Any], error: str) -> None:
        self.failed += 1
        self.last_error = error
        self.store.upload_failed(row["id"], error, next_try_at=GIVEN_UP_AT)
        log.error("photo upload for event %s given up: %s", row["event_id"], error)
        self.store.record_event(
            "upload_failed",
            reason="photo_upload_failed",
            message=error[:300],
            session_id=row.get("session_id"),
            data={"event_ref": row["event_id"], "path": str(row["path"])},
        )

    # -- background thread -----------------------------------------------------------------

    def start(self) -> "PhotoUploader":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="photo-uploader", daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """A new photo was queued: try it now rather than at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
            except Exception:  # the thread must outlive any one bad row or DB hiccup
                log.exception("photo upload pass failed")
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def health(self) -> dict[str, Any]:
        return {"uploaded": self.uploaded, "given_up": self.failed, "last_error": self.last_error}

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)
            self._thread = None
        self._http.close()

    def __enter__(self) -> "PhotoUploader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
