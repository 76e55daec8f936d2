"""A reference cloud consumer for a fleet of gatekeeper lots (docs/fleet.md). An example, not a product.

* topics.py: what to subscribe to (shared or partitioned by lot), what a message is.
* gaps.py: gap detection on the lots' ``seq`` numbers (pure).
* store.py: the durable store (SQLite): dedupe by event id, per-lot seq state, commands and replies.
* consumer.py: one MQTT 5 persistent session; a message is acknowledged after its batch is committed.
* commands.py: signed commands (scheme v2) and their replies, matched by command id.
* ``python -m examples.cloud_consumer``: one consumer process of a group.
"""

from examples.cloud_consumer.commands import CommandSender
from examples.cloud_consumer.consumer import Consumer, ConsumerConfig
from examples.cloud_consumer.store import ConsumerStore, Gap
from examples.cloud_consumer.topics import owned_lots, partition_of, topic_filters

__all__ = ["CommandSender", "Consumer", "ConsumerConfig", "ConsumerStore", "Gap", "owned_lots", "partition_of",
           "topic_filters"]
