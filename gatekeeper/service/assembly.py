"""Putting the daemon's parts together: the plate reader, one lane's runner, the cloud sync."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

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


def load_readers(anpr: AnprConfig, directions: Iterable[str]) -> dict[str, ReaderLike]:
    """A plate reader per lane direction in ``directions``, each network loaded once.

    Entry lanes read with ``anpr.recognizer``. Exit lanes read with the first of
    ``anpr.exit_recognizers``; the others read the same crops again as second opinions, whose
    probabilities join the evidence the sessions are scored on: an exit camera's blur is read by
    a network trained on it, a clean plate by the one that reads it best. With no exit
    recognisers, or only the entry's, every lane shares one reader.
    """
    from gatekeeper.vision.reader import PlateReader

    t0 = time.monotonic()
    wanted = sorted(set(directions)) or ["entry"]
    exit_names = list(anpr.exit_recognizers) or [anpr.recognizer]
    if "exit" not in wanted or exit_names == [anpr.recognizer]:
        shared = PlateReader.from_config(anpr)
        log.info("plate reader loaded in %.1f s", time.monotonic() - t0)
        return {direction: shared for direction in wanted}

    from gatekeeper.vision.onnx_recognizer import load_recognizer
    from gatekeeper.vision.recognizer import PLATE_RECOGNIZER, ModelNotFoundError

    networks: dict[str, Any] = {}

    def network(name: str) -> Any:
        if name not in networks:
            try:
                networks[name] = load_recognizer(
                    runtime=anpr.runtime, name=name, model_dir=anpr.model_dir, threads=anpr.threads,
                    tuning_file=anpr.tuning_file if name == PLATE_RECOGNIZER else None,
                )
            except ModelNotFoundError as exc:
                if name == anpr.recognizer:
                    raise
                # A model_dir exported before this recogniser existed: say which setting asks for it.
                raise ModelNotFoundError(f"{exc} (anpr.exit_recognizers names {name!r}; export it, or set "
                                         f"anpr.exit_recognizers = [] to read exits as entries)") from None
        return networks[name]

    readers: dict[str, ReaderLike] = {}
    detector = None
    if "entry" in wanted:
        entry = PlateReader.from_config(anpr, recognizer=network(anpr.recognizer))
        readers["entry"], detector = entry, entry.detector
    readers["exit"] = PlateReader.from_config(
        anpr, recognizer=network(exit_names[0]), second_opinions=[network(name) for name in exit_names[1:]],
        detector=detector,
    )
    log.info("plate readers loaded in %.1f s: entry %s, exit %s", time.monotonic() - t0, anpr.recognizer,
             " with second opinion ".join(exit_names))
    return readers


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
