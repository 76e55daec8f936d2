"""One lane: frames -> read -> decide -> durable record -> barrier -> display."""

from gatekeeper.lane.runner import (
    ConsolidatorFactory,
    GrabberLike,
    LaneOutcome,
    LaneRunner,
    ReaderLike,
    default_consolidator_factory,
    policy_from_settings,
)

__all__ = [
    "ConsolidatorFactory",
    "GrabberLike",
    "LaneOutcome",
    "LaneRunner",
    "ReaderLike",
    "default_consolidator_factory",
    "policy_from_settings",
]
