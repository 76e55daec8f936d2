"""One lane: frames -> read -> decide -> durable record -> barrier -> display.

``runner`` is the worker loop; ``evidence`` gathers one vehicle's reads;
``recorder`` decides (pure rules) and records (one store transaction);
``actuation`` drives barrier and display and records gate events; ``sequence``
holds their order; ``ports`` types every seam; ``clock`` the one injected clock.
"""

from gatekeeper.lane.clock import FakeClock, SystemClock
from gatekeeper.lane.outcome import LaneOutcome
from gatekeeper.lane.ports import (
    Barrier,
    Clock,
    ConsolidatorFactory,
    Display,
    FrameSource,
    LaneStore,
    PlateReader,
)
from gatekeeper.lane.runner import LaneRunner, default_consolidator_factory, policy_from_settings

#: Old names of the reader and grabber seams (daemon and tests import them).
GrabberLike = FrameSource
ReaderLike = PlateReader

__all__ = [
    "Barrier",
    "Clock",
    "ConsolidatorFactory",
    "Display",
    "FakeClock",
    "FrameSource",
    "GrabberLike",
    "LaneOutcome",
    "LaneRunner",
    "LaneStore",
    "PlateReader",
    "ReaderLike",
    "SystemClock",
    "default_consolidator_factory",
    "policy_from_settings",
]
