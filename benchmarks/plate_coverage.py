"""Plate coverage: is the true plate among the crops the reader hands to the recogniser?

    PYTHONPATH=. python benchmarks/plate_coverage.py --data ../shared/bench/plates
        [--regions us,eu,br] [--limit N] [--copies 2] [--seed 11] [--threads 1]
        [--detector off|on] [--model-dir DIR] [--opt NAME=VALUE ...] [--set MODULE.NAME=VALUE ...] [--json OUT] [--compare OLD.json]

Validation only, nothing is trained. Closed-vocabulary matching (gatekeeper/vision/scoring.py)
can only find a session whose plate is in one of the reader's crops, so this measures that
directly. For every bench photo (an entry camera) and ``--copies`` seeded perturbed copies of it
(an exit camera: ``perturb`` of benchmarks/lane_outcome.py, the same seeds as
benchmarks/calibrate_matching.py) the real reader runs once through a recording wrapper around
the ONNX recogniser; the truth's CTC log-probability per character
(:func:`gatekeeper.vision.scoring.ctc_log_probs` / ``per_char``, no look-alike lift) is taken on
every matrix the reader computed, and the best one counts:

- **covered**: best per-character log-probability >= -3 (the truth is in some crop, maybe noisy),
- **clear**: >= -1.5 (a crop reads it about as well as a clean read does),
- **exact**: the reader's own read equals the truth,
- **no crop**: the reader computed no matrix at all.

Printed per region and overall, entry photos and exit copies apart, with the CPU ms per image
(median, 90th percentile and mean of process time: steadier than wall time on a shared machine),
and for exit copies per perturbation kind. ``--opt`` sets a PlateReader keyword (e.g. ``--opt max_candidates=6``) to
compare variants; ``--json`` keeps one record per view, ``--compare`` prints views that changed
against an earlier ``--json``.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lane_outcome import encode_jpeg, load_region, perturb, seeded_rng  # noqa: E402

from gatekeeper.vision.scoring import ctc_log_probs, fold, per_char  # noqa: E402
from tests.recording import Recording  # noqa: E402  (keeps every matrix the reader computed)

COVERED, CLEAR = -3.0, -1.5
KINDS = ("motion", "gauss", "scale<0.8", "crop", "light")


def op_kinds(ops: list[str]) -> list[str]:
    kinds = []
    for op in ops:
        if op.startswith("motion"):
            kinds.append("motion")
        elif op.startswith("gauss"):
            kinds.append("gauss")
        elif op.startswith("scale") and float(op[5:]) < 0.8:
            kinds.append("scale<0.8")
        elif op.startswith("crop"):
            kinds.append("crop")
        elif op.startswith("light"):
            kinds.append("light")
    return kinds


def parse_opts(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def shots(car, copies: int, seed: int):
    image = cv2.imread(str(car.path), cv2.IMREAD_COLOR)
    yield "entry", image, []
    for c in range(copies):
        rng = seeded_rng(seed, car.region, car.name, "exit" if c == 0 else f"exit{c + 1}")
        view, ops = perturb(image, car.box, rng)
        data = encode_jpeg(view, rng.randint(75, 95))
        yield f"exit{c + 1}", cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), ops


def summary_line(rows: list[dict[str, Any]]) -> str:
    n = len(rows)
    if not n:
        return "-"
    cov = sum(r["best"] >= COVERED for r in rows)
    clear = sum(r["best"] >= CLEAR for r in rows)
    exact = sum(r["exact"] for r in rows)
    none = sum(r["crops"] == 0 for r in rows)
    cpu = [r["cpu_ms"] for r in rows]
    return (f"n={n:3d} covered {100 * cov / n:5.1f}% ({cov:3d})  clear {100 * clear / n:5.1f}%  "
            f"exact {100 * exact / n:5.1f}% ({exact:3d})  no crop {none:3d}  CPU ms median "
            f"{statistics.median(cpu):4.0f} p90 {np.percentile(cpu, 90):4.0f} mean {statistics.mean(cpu):4.0f}  "
            f"crops {statistics.mean(r['crops'] for r in rows):.1f}")


def report(rows: list[dict[str, Any]], regions: list[str]) -> None:
    for kind in ("entry", "exit"):
        sel = [r for r in rows if r["kind"].startswith(kind)]
        print(f"== {kind}")
        for region in regions:
            print(f"  {region:7s} " + summary_line([r for r in sel if r["region"] == region]))
        print(f"  overall " + summary_line(sel))
        if kind == "exit":
            for k in KINDS:
                print(f"   {k:9s} " + summary_line([r for r in sel if k in r["ops_kinds"]]))
    print("== all    " + summary_line(rows))


def compare(rows: list[dict[str, Any]], old_file: Path) -> None:
    old = {(r["region"], r["image"], r["kind"]): r for r in json.loads(old_file.read_text())["views"]}
    gained = lost = fixed = broken = 0
    for r in rows:
        o = old.get((r["region"], r["image"], r["kind"]))
        if o is None:
            continue
        if (r["best"] >= COVERED) != (o["best"] >= COVERED):
            if r["best"] >= COVERED:
                gained += 1
            else:
                lost += 1
        if r["exact"] != o["exact"]:
            tag = "fixed " if r["exact"] else "broken"
            fixed += r["exact"]
            broken += not r["exact"]
            print(f"  {tag} {r['region']}/{r['image']} {r['kind']} {r['truth']}: {o['read'] or '-'} -> "
                  f"{r['read'] or '-'}  {' '.join(r['ops'])}")
    print(f"against {old_file}: covered +{gained} -{lost}, exact +{fixed} -{broken}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/bench/plates"))
    parser.add_argument("--regions", default="us,eu,br")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--detector", choices=("off", "on"), default="off")
    parser.add_argument("--opt", action="append", default=[], help="PlateReader keyword NAME=VALUE")
    parser.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                        help="override a module constant for this run, e.g. gatekeeper.vision.reader.SECOND_LOOK_BELOW=0.5")
    parser.add_argument("--exit-only", action="store_true", help="skip entry photos")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--model-dir", type=Path, help="recogniser folder (anpr.model_dir), e.g. a new fine-tune's export")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    from gatekeeper.vision.onnx_recognizer import OnnxRecognizer
    from gatekeeper.vision.reader import PlateReader

    import importlib
    for name, value in parse_opts(args.set).items():
        module, _, const = name.rpartition(".")
        setattr(importlib.import_module(module), const, value)
    recording = Recording(OnnxRecognizer(threads=args.threads, model_dir=args.model_dir))
    extra = parse_opts(args.opt)
    if args.detector == "on":
        from gatekeeper.vision.plate_detector import PlateDetector
        extra["detector"] = PlateDetector(threads=1)
    reader = PlateReader(region="eu", recognizer=recording, min_confidence=0.0, **extra)
    regions = args.regions.split(",")
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    for region in regions:
        for car in load_region(args.data, region, args.limit):
            for kind, shot, ops in shots(car, args.copies, args.seed):
                if args.exit_only and kind == "entry":
                    continue
                recording.seen = []
                c0 = time.process_time()
                read = reader.read(shot, region=region)
                cpu_ms = (time.process_time() - c0) * 1000
                scores = [per_char(float(ctc_log_probs(fold(m, recording.alphabet), [car.truth])[0]), car.truth)
                          for m in recording.seen]
                got = read.normalised if read else ""
                rows.append({
                    "region": region, "image": car.name, "kind": kind, "truth": car.truth, "ops": ops,
                    "ops_kinds": op_kinds(ops), "read": got, "exact": got == car.truth,
                    "best": max(scores, default=-99.0), "crops": len(scores), "cpu_ms": round(cpu_ms, 1),
                })
            if not args.quiet:
                last = rows[-(1 if args.exit_only else 0) - args.copies:]
                print(f"[{region}] {car.truth:9s} " + " ".join(
                    f"{r['kind']}:{r['read'] or '-'}({r['best']:.1f})" for r in last)
                    + f"  {time.monotonic() - t_start:.0f} s", flush=True)
    reader.close()
    print(f"\nreader options {extra or '{}'}, set {args.set}, detector {args.detector}, {len(rows)} views, "
          f"{time.monotonic() - t_start:.0f} s")
    report(rows, regions)
    if args.compare:
        compare(rows, args.compare)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "options": {k: repr(v) for k, v in extra.items()},
                                         "views": rows}, indent=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
