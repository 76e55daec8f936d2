"""The command thread: what the broker delivers is carried out one at a time, in arrival order.

Paho's network thread must never block, so it only queues each message (:meth:`CommandInbox.put`).
:meth:`CommandInbox.run` (the ``mqtt-commands`` thread) takes them in order: a Home Assistant button
press goes to the bridge, anything else to :class:`~gatekeeper.sync.commands.CommandHandler`. Only
after that returned (the command, its effect and its reply committed) is the message acknowledged
to the broker; one dropped here (queue full, a stop) is never acknowledged, so the broker delivers
it again after the next reconnect or restart.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Protocol

from gatekeeper.messages import REPLY_TOPIC, Reply
from gatekeeper.sync.commands import CommandHandler
from gatekeeper.sync.homeassistant import HomeAssistantBridge
from gatekeeper.sync.transport import Transport

log = logging.getLogger(__name__)

#: Messages waiting for the command thread; beyond that they stay unacknowledged (sent again later).
INBOX_SIZE = 10_000


class PublishUntracked(Protocol):
    """Publish QoS 1 outside the outbox, PUBACK only bookkept (the sync's path for status and replies)."""

    def __call__(self, transport: Transport, topic: str, payload: bytes, *,
                 retain: bool = False, correlation: bytes | None = None) -> None: ...


class CommandInbox:
    """Queue of received messages and the loop that carries them out and acknowledges them."""

    def __init__(
        self,
        *,
        commands: CommandHandler,
        ha: HomeAssistantBridge | None,
        base: str,
        transport: Callable[[], Transport | None],
        publish: PublishUntracked,
        wake: Callable[[], None],
    ) -> None:
        self.commands = commands
        self.ha = ha
        self.base = base
        self._transport = transport  # None while not started or after close
        self._publish = publish
        self._wake = wake  # a reply is in the outbox: the drain thread sends it now
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[str, bytes, bytes | None, int, int, bool] | None] = queue.Queue(
            maxsize=INBOX_SIZE)

    def put(self, topic: str, payload: bytes, *, correlation: bytes | None, mid: int, qos: int,
            retain: bool) -> None:
        """From the transport's thread: never blocks."""
        try:
            self._queue.put_nowait((topic, payload, correlation, mid, qos, retain))
        except queue.Full:
            # Not acknowledged: the broker delivers it again after the next reconnect.
            log.error("command queue full: message %d on %s left unacknowledged", mid, topic)

    def stop(self) -> None:
        """Make :meth:`run` return after the command in hand; what is still queued stays unacknowledged."""
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # run() checks the stop after each command

    def run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return  # an unacknowledged command is delivered again after the restart
            topic, payload, correlation, mid, qos, retain = item
            try:
                if self.ha is not None and self.ha.is_button(topic):
                    self.ha.press(topic, payload, retained=retain)
                else:
                    self.handle(topic, payload, correlation)
            except Exception:  # the thread outlives any command
                log.exception("command on %s failed unexpectedly", topic)
            transport = self._transport()
            if transport is not None and qos > 0:
                try:
                    transport.ack(mid, qos)
                except Exception as exc:
                    log.warning("could not acknowledge command message %d: %s", mid, exc)

    def handle(self, topic: str, payload: bytes, correlation: bytes | None = None) -> Reply:
        """Carry out one command; its reply goes through the outbox (stored) or, when nothing was
        stored (refused before authentication), straight to the broker. See :meth:`CommandHandler.process`."""
        outcome = self.commands.process(topic, payload, correlation=correlation)
        reply = outcome.reply
        transport = self._transport()
        if outcome.queued:
            self._wake()
        elif transport is not None:
            try:
                self._publish(transport, f"{self.base}/{REPLY_TOPIC.format(name=reply.command)}",
                              reply.model_dump_json().encode(), correlation=correlation)
            except Exception as exc:
                log.error("could not send the reply to %s %s: %s", reply.command, reply.id, exc)
        return reply
