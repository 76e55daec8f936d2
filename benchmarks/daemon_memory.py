"""Peak memory of the daemon with two lanes reading full-size photos (issue 12's 300 MB budget).

    PYTHONPATH=. python benchmarks/daemon_memory.py --data ../shared/bench/plates [--photos 30]
        [--regions us,br] [--threads 2] [--set anpr.plate_detector=true ...]

The real daemon (``gatekeeper run --sim``, two watch-folder lanes, the shipped reader) gets the
same ``--photos`` bench photos (the large 1920x1080 US and BR scenes by default) dropped into each
lane's folder, one pair at a time, and the script waits until both lanes have read every
photo. It prints the daemon's resident set at READY, after the photos (``VmRSS``) and its peak
(``VmHWM`` from /proc), in MB. ``--set SECTION.KEY=VALUE`` reaches the daemon as
``GATEKEEPER_SECTION__KEY`` (e.g. ``anpr.plate_detector=true``, ``anpr.second_look=false``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from lane_outcome import Daemon, cli_base, load_region, write_config  # noqa: E402


def proc_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/bench/plates"))
    parser.add_argument("--regions", default="us,br", help="where the photos come from (us and br: 1920x1080)")
    parser.add_argument("--photos", type=int, default=30, help="photos per lane")
    parser.add_argument("--threads", type=int, default=2, help="anpr.threads of the daemon")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            parser.error(f"--set wants SECTION.KEY=VALUE, got {item!r}")
        os.environ["GATEKEEPER_" + key.replace(".", "__").upper()] = value
    cars = [car for region in args.regions.split(",") for car in load_region(args.data, region, None)]
    cars = sorted(cars, key=lambda c: c.name)[: args.photos]
    work = Path(tempfile.mkdtemp(prefix="gk-mem-"))
    try:
        for lane in ("entry-1", "exit-1"):
            (work / "cameras" / lane).mkdir(parents=True)
        config = write_config(work, region=args.regions.split(",")[0], threads=args.threads, capacity=500)
        daemon = Daemon(work, config, cli_base(config), args.threads)
        try:
            daemon.wait_ready()
            ready = proc_mb(daemon.proc.pid)
            t0 = time.monotonic()
            for n, car in enumerate(cars):
                for lane in ("entry-1", "exit-1"):
                    before = daemon.frames(lane)
                    shutil.copy(car.path, work / "cameras" / lane / f"{n:03d}{car.path.suffix}")
                    while daemon.frames(lane) <= before:
                        if time.monotonic() - t0 > args.timeout:
                            raise SystemExit("photos not read in time")
                        time.sleep(0.05)
            time.sleep(1.0)  # the last decision's photo and event are written after the frame count moves
            after = proc_mb(daemon.proc.pid)
        finally:
            code = daemon.stop()
        settings = ", ".join(args.overrides) or "shipped defaults"
        print(f"daemon, two lanes, {len(cars)} photos each ({args.regions}), {settings}, threads {args.threads}:")
        print(f"  RSS at READY {ready['VmRSS']:.0f} MB; after the photos {after['VmRSS']:.0f} MB; "
              f"peak (VmHWM) {after['VmHWM']:.0f} MB; {time.monotonic() - t0:.0f} s; daemon exit {code}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
