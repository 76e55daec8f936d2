"""Plate-reader benchmark: accuracy, speed and memory on a folder of labelled photos.

    python benchmarks/anpr.py --data ../shared/bench/plates [--out DIR] [--region us] [--limit N] [--misses]
                              [--runtime onnx|torch] [--model-dir DIR]
        [--detector on|off] [--detector-rows N] [--perturb blur|dark|bright|small|crop] [--second-look on|off] [--plate-bands on|off]

The data folder holds one sub-folder per region (``us``, ``eu``, ``br``); each
image ``NAME.jpg`` has ``NAME.txt`` beside it: ``NAME<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``.
A read is correct when its letters and digits, upper-cased, equal ``PLATE`` with
everything else removed. Writes ``anpr-summary.json``, ``anpr-summary.md`` and
``anpr-chart.png`` (drawn with OpenCV: matplotlib is not a dependency) to --out.

Besides accuracy and time per image it reports the process's peak RSS, the reader's load
time (recogniser + its warm-up), the first read's time, and the median split of a read
between plate finding (OpenCV), the first recognition pass and the extra views.
``--runtime torch`` runs EasyOCR's network through torch, for comparison; it needs the
``train`` extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatekeeper.vision.reader import PlateReader  # noqa: E402
from gatekeeper.vision.recognizer import PLATE_RECOGNIZER, RECOGNIZERS  # noqa: E402
from gatekeeper.vision.onnx_recognizer import RUNTIMES  # noqa: E402
from plate_localisation import label_of, perturb  # noqa: E402  (benchmarks/ is sys.path[0])

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def truth_of(label_file: Path) -> str:
    fields = label_file.read_text(encoding="utf-8").strip().split("\t")
    return re.sub(r"[^A-Z0-9]", "", fields[-1].upper())


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def summarise(rows: list[dict]) -> dict:
    n = len(rows)
    if not n:
        return {"images": 0}
    ms = [r["ms"] for r in rows]
    return {
        "images": n,
        "exact": round(sum(r["exact"] for r in rows) / n, 4),
        "within_one": round(sum(r["distance"] <= 1 for r in rows) / n, 4),
        "no_plate": round(sum(r["read"] == "" for r in rows) / n, 4),
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        # CPU time of all the reader's threads: steadier than wall time on a shared machine.
        "median_cpu_ms": round(statistics.median(r["cpu_ms"] for r in rows), 1),
        **{f"median_{k}_ms": round(statistics.median(r["timings"].get(k, 0.0) for r in rows), 1)
           for k in ("find", "recognise", "refine")},
    }


def draw_chart(summary: dict, path: Path) -> None:
    """Bar chart of exact / within-one rates per region, with the 65% target line."""
    groups = [k for k in ("us", "eu", "br", "overall") if k in summary["regions"] or k == "overall"]
    width, height, left, bottom, top = 760, 420, 60, 60, 50
    img = np.full((height, width, 3), 255, np.uint8)
    plot_h = height - bottom - top
    cv2.line(img, (left, height - bottom), (width - 20, height - bottom), (0, 0, 0), 1)
    cv2.line(img, (left, top), (left, height - bottom), (0, 0, 0), 1)
    for pct in (0, 25, 50, 75, 100):
        yy = height - bottom - int(plot_h * pct / 100)
        cv2.line(img, (left - 4, yy), (width - 20, yy), (225, 225, 225), 1)
        cv2.putText(img, f"{pct}%", (8, yy + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    target_y = height - bottom - int(plot_h * 0.65)
    cv2.line(img, (left, target_y), (width - 20, target_y), (0, 0, 200), 1)
    cv2.putText(img, "target 65%", (width - 110, target_y - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 200), 1, cv2.LINE_AA)
    slot = (width - left - 40) // len(groups)
    colours = {"exact": (180, 110, 30), "within_one": (90, 180, 240)}
    for i, g in enumerate(groups):
        s = summary["overall"] if g == "overall" else summary["regions"][g]
        x0 = left + 20 + i * slot
        for j, key in enumerate(("exact", "within_one")):
            bh = int(plot_h * s[key])
            xa = x0 + j * (slot // 3)
            cv2.rectangle(img, (xa, height - bottom - bh), (xa + slot // 3 - 6, height - bottom), colours[key], -1)
            cv2.putText(img, f"{s[key] * 100:.0f}", (xa, height - bottom - bh - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{g} ({s['images']})  {s['median_ms']:.0f} ms", (x0, height - bottom + 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "gatekeeper plate reader: exact top-1 (dark) and within one edit (light)", (left, 30),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def markdown(summary: dict) -> str:
    lines = [
        "| region | images | exact top-1 | within one edit | no plate | median ms | p90 ms | median CPU ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    items = list(summary["regions"].items()) + [("overall", summary["overall"])]
    for name, s in items:
        lines.append(
            f"| {name} | {s['images']} | {s['exact'] * 100:.1f}% | {s['within_one'] * 100:.1f}% | "
            f"{s['no_plate'] * 100:.1f}% | {s['median_ms']:.0f} | {s['p90_ms']:.0f} | {s['median_cpu_ms']:.0f} |"
        )
    lines.append("")
    o = summary["overall"]
    lines.append(f"Runtime {summary['runtime']}, recogniser {summary['recognizer']}, threads {summary['threads']}: "
                 f"reader load {summary['model_load_s']:.2f} s, first read {summary['first_read_ms']:.0f} ms, "
                 f"peak RSS {summary['peak_rss_mb']:.0f} MB. Median split of a read: find "
                 f"{o['median_find_ms']:.0f} ms, recognise {o['median_recognise_ms']:.0f} ms, "
                 f"extra views {o['median_refine_ms']:.0f} ms.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with us/ eu/ br/ sub-folders")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--region", action="append", help="only these regions (repeatable)")
    parser.add_argument("--limit", type=int, default=0, help="at most N images per region")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--misses", action="store_true", help="print every wrong read")
    parser.add_argument("--recognizer", default=PLATE_RECOGNIZER, choices=RECOGNIZERS,
                        help="plate_g2: fine-tuned on plates (default); english_g2: EasyOCR's stock")
    parser.add_argument("--tuning-file", type=Path, help="plate_g2 tensors from this file (runtime torch)")
    parser.add_argument("--runtime", default="onnx", choices=RUNTIMES,
                        help="onnx: the shipped exports (default); torch: EasyOCR's network (train extra)")
    parser.add_argument("--model-dir", type=Path, help="recogniser folder (see anpr.model_dir)")
    parser.add_argument("--detector", choices=("on", "off"), default="off",
                        help="on (as anpr.plate_detector = true): the ONNX plate detector adds and ranks rows; off: OpenCV only")
    parser.add_argument("--detector-model", type=Path, help="another plate detector .onnx (no checksum)")
    parser.add_argument("--plate-bonus", type=float, help="score added to rows inside a detected box (0.15)")
    parser.add_argument("--detector-rows", type=int, help="rows from detected plate boxes added to OpenCV's (2)")
    parser.add_argument("--plate-bands", choices=("on", "off"), default="on",
                        help="read the surest plate box in bands when no row reads well (PlateReader plate_bands)")
    parser.add_argument("--second-look", choices=("on", "off"), default="on",
                        help="off: no second look at frames whose first-look rows read nothing sure (as before)")
    parser.add_argument("--perturb", choices=("none", "blur", "dark", "bright", "small", "crop"), default="none",
                        help="read a seeded perturbed copy of each photo (a second camera), made in memory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    extra = {} if args.second_look == "on" else {"second_look_rows": 0}
    if args.plate_bands == "off":
        extra["plate_bands"] = False
    if args.detector == "on":
        from gatekeeper.vision.plate_detector import DETECTOR_SHA256, PlateDetector
        model = {"model_file": args.detector_model, "sha256": None} if args.detector_model else {"sha256": DETECTOR_SHA256}
        extra["detector"] = PlateDetector(threads=1, **model)
        if args.detector_rows is not None:
            extra["detector_rows"] = args.detector_rows
        if args.plate_bonus is not None:
            extra["plate_bonus"] = args.plate_bonus
    reader = PlateReader(region="eu", threads=args.threads, min_confidence=0.0, runtime=args.runtime,
                         model_dir=args.model_dir, recognizer_name=args.recognizer, tuning_file=args.tuning_file,
                         **extra)
    load_s = time.perf_counter() - started
    first_read_ms: float | None = None

    regions = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    if args.region:
        regions = [r for r in regions if r in args.region]
    per_region: dict[str, list[dict]] = {}
    perturb_rng = np.random.default_rng(7)
    for region in regions:
        images = sorted(p for p in (args.data / region).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if args.limit:
            images = images[: args.limit]
        rows = []
        for img_path in images:
            label = img_path.with_suffix(".txt")
            if not label.exists():
                continue
            truth = truth_of(label)
            image = cv2.imread(str(img_path))
            if args.perturb != "none":
                image, _ = perturb(image, label_of(img_path)[0], args.perturb, perturb_rng)
            t0, c0 = time.perf_counter(), time.process_time()
            read = reader.read(image, region=region)
            ms = (time.perf_counter() - t0) * 1000
            cpu_ms = (time.process_time() - c0) * 1000
            if first_read_ms is None:
                first_read_ms = ms
            got = read.normalised if read else ""
            rows.append({"image": img_path.name, "truth": truth, "read": got, "exact": got == truth,
                         "distance": edit_distance(got, truth), "ms": round(ms, 1), "cpu_ms": round(cpu_ms, 1),
                         "confidence": read.confidence if read else 0.0,
                         "timings": {k: round(v, 1) for k, v in (read.timings if read else {}).items()},
                         "box": list(read.box) if read else None})
            if args.misses and got != truth:
                print(f"  miss {region}/{img_path.name}: truth {truth} read {got or '-'} "
                      f"({rows[-1]['confidence']:.2f})")
        per_region[region] = rows
        s = summarise(rows)
        print(f"{region}: {s}")
    all_rows = [r for rows in per_region.values() for r in rows]
    summary = {
        "regions": {r: summarise(rows) for r, rows in per_region.items()},
        "overall": summarise(all_rows),
        "model_load_s": round(load_s, 2),
        "first_read_ms": round(first_read_ms or 0.0, 1),
        "runtime": args.runtime,
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "threads": args.threads,
        "recognizer": args.recognizer,
        "detector": args.detector,
        "perturb": args.perturb,
        "second_look": args.second_look,
        "plate_bands": args.plate_bands,
    }
    print(f"overall: {summary['overall']}")
    print(f"runtime {args.runtime}: reader load {load_s:.2f} s, first read {summary['first_read_ms']:.0f} ms, "
          f"peak RSS {summary['peak_rss_mb']:.0f} MB")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "anpr-summary.json").write_text(json.dumps({**summary, "reads": per_region}, indent=1))
    (args.out / "anpr-summary.md").write_text(markdown(summary))
    draw_chart(summary, args.out / "anpr-chart.png")
    reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
