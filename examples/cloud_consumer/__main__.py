"""``python -m examples.cloud_consumer``: run one consumer process of a group until SIGTERM.

    python -m examples.cloud_consumer --db cloud.db --host broker --port 1883 \\
        --mode partitioned --partition 0/2 --lots-file lots.txt      # the lots hashed to partition 0
    python -m examples.cloud_consumer --db cloud.db --mode shared --client-id cloud-1 [--lots-file lots.txt]

Every process of a group uses the same ``--db`` (or, in a real cloud, the same database) and its own,
fixed ``--client-id`` (default ``{group}-p{i}`` for a partition): the id names the broker session
that holds the messages while the process is away.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from examples.cloud_consumer.consumer import Consumer, ConsumerConfig
from examples.cloud_consumer.store import ConsumerStore
from examples.cloud_consumer.topics import owned_lots


def _partition(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/K (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"partition {index} is not in 0..{count - 1}")
    return index, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.cloud_consumer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, type=Path, help="the group's store (SQLite file)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--mode", choices=("shared", "partitioned"), default="partitioned")
    parser.add_argument("--group", default="cloud", help="share group name / client id prefix")
    parser.add_argument("--partition", type=_partition, default=(0, 1), help="partitioned: i/K")
    parser.add_argument("--client-id", help="default: {group}-p{i} (partitioned), {group}-shared (shared)")
    parser.add_argument("--lots-file", type=Path, help="one lot id a line: partitioned consumes the lots hashed to "
                                                        "its partition; both modes register them (gaps from seq 1)")
    parser.add_argument("--prefix", default="gatekeeper")
    parser.add_argument("--session-expiry-s", type=int, default=7 * 86_400)
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lots: list[str] = []
    if args.lots_file:
        lots = [line.strip() for line in args.lots_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    index, count = args.partition
    if args.mode == "partitioned":
        if not lots:
            parser.error("--mode partitioned needs --lots-file (a consumer subscribes to the lots it owns)")
        mine = owned_lots(lots, partition=index, partitions=count)
        client_id = args.client_id or f"{args.group}-p{index}"
    else:
        mine = []
        client_id = args.client_id or f"{args.group}-shared"
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with ConsumerStore(args.db, consumer=client_id) as store:
        store.add_lots(mine if args.mode == "partitioned" else lots)
        cfg = ConsumerConfig(host=args.host, port=args.port, client_id=client_id, mode=args.mode, group=args.group,
                             prefix=args.prefix, lots=tuple(mine), session_expiry_s=args.session_expiry_s,
                             receive_maximum=args.receive_maximum)
        consumer = Consumer(cfg, store).start()
        logging.info("consumer %s: %s, %d lots, store %s", client_id, args.mode,
                     len(mine) if args.mode == "partitioned" else len(lots), args.db)
        try:
            stop.wait()
        finally:
            consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
