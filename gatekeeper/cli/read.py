"""``gatekeeper read``: read the plates in image files, the technician's check of the reader.

The model loads once; then each image gives one line. With ``--json`` each line
is a JSON object ``{"image", "plate", "confidence", "ms", "box"}`` (``plate`` is
"" when none is found; ``ms`` is reading time, file decoding excluded). An image
that cannot be decoded gives a line with an ``"error"`` key, the remaining images
are still read, and the exit code is 1 at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from gatekeeper.cli.progress import Progress
from gatekeeper.vision.plate_formats import BUILTIN_FORMATS, PlateGrammar

log = logging.getLogger(__name__)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``read`` subcommand to the gatekeeper CLI."""
    parser = sub.add_parser(
        "read",
        help="read licence plates in image files",
        description="Read the licence plate in each image with the configured reader.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", type=Path, help="JPEG/PNG files")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--progress", action="store_true",
                        help="progress on stderr even when it is not a terminal (always shown on one)")
    parser.add_argument("--region", help=f"plate grammar ({', '.join(BUILTIN_FORMATS)} or a key of anpr.formats); "
                        "default: anpr.region")


def _decode(path: Path) -> np.ndarray:
    """The image's pixels, or ValueError saying why not."""
    data = np.fromfile(str(path), dtype=np.uint8)  # raises OSError for a missing/unreadable file
    if data.size == 0:
        raise ValueError("empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable image (corrupt or unsupported format)")
    return image


def _emit(result: dict[str, Any], as_json: bool, progress: Progress | None = None) -> None:
    if progress is not None:
        progress.done()  # a result line never lands in the middle of a progress line
    if as_json:
        print(json.dumps(result), flush=True)
    elif "error" in result:
        print(f"{result['image']}: error: {result['error']}", flush=True)
    else:
        plate = result["plate"] or "(no plate)"
        print(f"{result['image']}: {plate}  confidence {result['confidence']:.2f}  {result['ms']:.0f} ms", flush=True)


def run(args: argparse.Namespace) -> int:
    """Read every image; 0 when all could be decoded, 1 otherwise, 2 on bad configuration."""
    from gatekeeper.vision.reader import PlateReader
    from gatekeeper.cli.util import settings_from_args
    from gatekeeper.vision.recognizer import ModelNotFoundError

    # The one command that may run without a config file: reading images touches no lot state.
    settings = settings_from_args(args, require_file=False)
    if settings.source is None:
        print("gatekeeper: note: no config file found; using the built-in [anpr] defaults", file=sys.stderr)
    anpr = settings.anpr
    region = args.region or anpr.region
    try:
        PlateGrammar.for_region(region, anpr.formats)  # a typo fails before the model loads
    except ValueError as exc:
        print(f"gatekeeper: error: {exc}", file=sys.stderr)
        return 2
    progress = Progress(enabled=getattr(args, "progress", False))
    progress.say("loading the plate reader...")
    try:
        reader = PlateReader.from_config(anpr.model_copy(update={"region": region}))
    except (ModelNotFoundError, ValueError) as exc:
        progress.done()
        print(f"gatekeeper: error: {exc}", file=sys.stderr)
        return 1
    failures = 0
    total = len(args.images)
    with reader:
        for number, path in enumerate(args.images, start=1):
            if total > 1:
                progress.count(number, total, "reading image")
            name = str(path)
            try:
                image = _decode(path)
            except (OSError, ValueError) as exc:
                failures += 1
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                log.error("cannot read %s: %s", name, reason)
                _emit({"image": name, "error": reason}, args.json, progress)
                continue
            started = time.perf_counter()
            try:
                read = reader.read(image, region=region)
            except Exception as exc:  # one bad image must not stop the batch
                failures += 1
                log.exception("reading %s failed", name)
                _emit({"image": name, "error": f"reader failed: {exc}"}, args.json, progress)
                continue
            ms = round((time.perf_counter() - started) * 1000, 1)
            _emit(
                {
                    "image": name,
                    "plate": read.normalised if read else "",
                    "confidence": read.confidence if read else 0.0,
                    "ms": ms,
                    "box": list(read.box) if read else None,
                },
                args.json,
                progress,
            )
    progress.done()
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gatekeeper.cli.read``: the same command without the full CLI."""
    parser = argparse.ArgumentParser(prog="gatekeeper read", description="Read licence plates in image files.")
    parser.add_argument("--config", help="config file (default: $GATEKEEPER_CONFIG, ./config.toml, /etc/gatekeeper/config.toml, else built-in defaults)")
    _add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
