"""Putting the daemon's parts together: the plate reader, one lane's runner, the cloud sync."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from gatekeeper.config import AnprConfig, LaneConfig, Settings
from gatekeeper.hardware.barrier import Barrier
from gatekeeper.lane import ConsolidatorFactory, GrabberLike, LaneRunner, ReaderLike
from gatekeeper.service.memory import release_free_heap
from gatekeeper.store import Store

if TYPE_CHECKING:
    from gatekeeper.sync import CloudSync  # imported when sync is on (it loads paho)

log = logging.getLogger(__name__)

GrabberFactory = Callable[[LaneConfig], GrabberLike | None]
BarrierFactory = Callable[[LaneConfig, Any], Any]


def load_reader(anpr: AnprConfig) -> ReaderLike:
    """The plate reader (models loaded once, shared by every lane)."""
    from gatekeeper.vision.reader import PlateReader

    t0 = time.monotonic()
    reader = PlateReader.from_config(anpr)
    log.info("plate reader loaded in %.1f s", time.monotonic() - t0)
    return reader


def build_lane(
    settings: Settings,
    lane: LaneConfig,
    *,
    store: Store,
    reader: ReaderLike,
    pin_factory: Any,
    consolidator_factory: ConsolidatorFactory | None,
    reader_lock: threading.Lock,
    decision_lock: threading.RLock,
    on_change: Callable[[], None],
    grabber_factory: GrabberFactory | None = None,
    barrier_factory: BarrierFactory | None = None,
) -> LaneRunner:
    """One lane's runner with its barrier and camera (the factories stand in for tests)."""
    if barrier_factory is not None:
        barrier = barrier_factory(lane, pin_factory)
    else:
        barrier = Barrier.from_config(lane, pin_factory=pin_factory)
    if grabber_factory is not None:
        grabber = grabber_factory(lane)
    else:
        from gatekeeper.vision.camera.grabber import FrameGrabber

        grabber = FrameGrabber.from_config(lane)
    return LaneRunner.from_settings(
        settings,
        lane,
        store=store,
        reader=reader,
        barrier=barrier,
        grabber=grabber,
        consolidator_factory=consolidator_factory,
        reader_lock=reader_lock,
        decision_lock=decision_lock,
        on_change=on_change,
        after_read=release_free_heap,
    )


def start_sync(
    settings: Settings,
    store: Store,
    *,
    open_handler: Callable[[str, str, str], None],
    on_config_change: Callable[[], None],
    lane_health: Callable[[], dict[str, str]] | None = None,
) -> CloudSync | None:
    """The started cloud sync, or None when it is off or cannot start (the lanes run regardless)."""
    if not settings.mqtt.enabled and not settings.cloud.enabled:
        log.info("cloud sync disabled (mqtt.enabled = false): events stay in the outbox")
        return None
    # With MQTT off but cloud.enabled, CloudSync runs only the photo uploader.
    try:
        from gatekeeper.sync import CloudSync

        sync = CloudSync(settings, store, open_handler=open_handler, on_config_change=on_config_change,
                         lane_health=lane_health)
        sync.start()
        return sync
    except Exception as exc:
        # No broker, a bad certificate...: the lanes must run regardless; events wait in the outbox.
        log.error("cloud sync not started: %s (events wait in the outbox)", exc)
        return None
