"""Plate localisation benchmark: does a plate finder put a candidate on the labelled plate?

    python benchmarks/plate_localisation.py --data ../shared/bench/plates [--finder opencv|detector|both]
        [--perturb none,blur,dark,bright,small,crop] [--reads DIR/anpr-summary.json] [--json OUT]

A candidate *hits* the plate when most of it (half its area) lies inside the labelled
box and it spans at least 30 % of the box's width: a text row of the plate's characters
or a detector box around the plate both count; a dealer sticker beside it does not.
Perturbations (blur, exposure, scale, crop) are drawn on the fly with a fixed seed, as a
second camera would see the same car; nothing is written to disk.

With ``--reads`` (the JSON that ``benchmarks/anpr.py`` writes), misread images are split
into "not localised" (no OpenCV candidate on the plate) and "localised but misread".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatekeeper.vision.reader import find_text_rows, rows_in_plate_box  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
Box = tuple[float, float, float, float]


def label_of(path: Path) -> tuple[Box, str]:
    fields = path.with_suffix(".txt").read_text(encoding="utf-8").strip().split("\t")
    x, y, w, h = (float(v) for v in fields[1:5])
    return (x, y, w, h), fields[-1]


def hits(candidate: Box, truth: Box) -> bool:
    cx, cy, cw, ch = candidate
    tx, ty, tw, th = truth
    ix = max(0.0, min(cx + cw, tx + tw) - max(cx, tx))
    iy = max(0.0, min(cy + ch, ty + th) - max(cy, ty))
    return ix * iy >= 0.5 * cw * ch and ix >= 0.3 * tw


def covers(detected: Box, truth: Box) -> bool:
    """A detector box is on the plate: mostly inside it, or around it and at most 4x its area."""
    dx, dy, dw, dh = detected
    tx, ty, tw, th = truth
    ix = max(0.0, min(dx + dw, tx + tw) - max(dx, tx))
    iy = max(0.0, min(dy + dh, ty + th) - max(dy, ty))
    return hits(detected, truth) or (ix * iy >= 0.5 * tw * th and dw * dh <= 4 * tw * th)


def perturb(image: np.ndarray, truth: Box, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, Box]:
    """A second camera's view of the same car: blur, exposure, scale or crop (box follows)."""
    x, y, w, h = truth
    if kind == "blur":
        k = float(rng.uniform(1.5, 3.0))
        return cv2.GaussianBlur(image, (0, 0), k), truth
    if kind in ("dark", "bright"):
        gain = rng.uniform(0.35, 0.55) if kind == "dark" else rng.uniform(1.6, 2.2)
        out = np.clip(image.astype(np.float32) * gain + rng.normal(0, 4, image.shape), 0, 255)
        return out.astype(np.uint8), truth
    if kind == "small":
        s = float(rng.uniform(0.5, 0.7))
        out = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        return out, (x * s, y * s, w * s, h * s)
    if kind == "crop":   # a tighter framing around the plate, at the same resolution
        H, W = image.shape[:2]
        keep = float(rng.uniform(0.55, 0.8))
        cw, ch = int(W * keep), int(H * keep)
        x0 = int(np.clip(x + w / 2 - cw * rng.uniform(0.3, 0.7), 0, W - cw))
        y0 = int(np.clip(y + h / 2 - ch * rng.uniform(0.3, 0.7), 0, H - ch))
        return image[y0: y0 + ch, x0: x0 + cw].copy(), (x - x0, y - y0, w, h)
    return image, truth


def opencv_boxes(image: np.ndarray, *, work_size: int = 1280, max_rows: int = 4) -> list[Box]:
    """Today's reader candidates (top ``max_rows`` text rows), in image pixels."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    scale = min(1.0, work_size / max(grey.shape[:2]))
    work = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return [tuple(v / scale for v in r.box) for r in find_text_rows(work, max_rows=max_rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--finder", choices=("opencv", "detector", "both"), default="both")
    parser.add_argument("--perturb", default="none", help="comma list of none,blur,dark,bright,small,crop")
    parser.add_argument("--reads", type=Path, help="anpr-summary.json of benchmarks/anpr.py, to split misses")
    parser.add_argument("--json", type=Path, help="write per-image results here")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", type=Path, help="another plate detector .onnx (no checksum)")
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--truth-rows", action="store_true", help="also: rows found inside the labelled box")
    args = parser.parse_args(argv)

    detector = None
    if args.finder in ("detector", "both"):
        from gatekeeper.vision.plate_detector import PlateDetector
        model = {"model_file": args.model, "sha256": None} if args.model else {}
        detector = PlateDetector(threads=1, threshold=args.threshold, **model)
    reads = {}
    if args.reads:
        for region, rows in json.loads(args.reads.read_text())["reads"].items():
            reads.update({f"{region}/{r['image']}": r for r in rows})
    results: list[dict] = []
    for kind in args.perturb.split(","):
        rng = np.random.default_rng(args.seed)
        for region_dir in sorted(p for p in args.data.iterdir() if p.is_dir()):
            for path in sorted(p for p in region_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                if not path.with_suffix(".txt").exists():
                    continue
                truth, _ = label_of(path)
                image, box = perturb(cv2.imread(str(path)), truth, kind, rng)
                row = {"image": f"{region_dir.name}/{path.name}", "region": region_dir.name, "perturb": kind}
                if args.finder in ("opencv", "both"):
                    row["opencv"] = any(hits(c, box) for c in opencv_boxes(image))
                if args.truth_rows:   # the rows-in-box step given a perfect detector: its ceiling
                    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                    row["truth_rows"] = any(hits(r.box, box) for r in rows_in_plate_box(grey, box, 1.0))
                if detector is not None:
                    t0 = time.perf_counter()
                    dets = detector.detect(image)
                    row["detector_ms"] = (time.perf_counter() - t0) * 1000
                    row["detector"] = any(covers(d.box, box) for d in dets[:4])
                    row["detector_boxes"] = len(dets)
                    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                    rows = [r for d in dets[:4] for r in rows_in_plate_box(grey, d.box, 1.0)]
                    row["detector_rows"] = any(hits(r.box, box) for r in rows)
                results.append(row)
    finders = [f for f in ("opencv", "truth_rows", "detector", "detector_rows") if results and f in results[0]]
    for kind in args.perturb.split(","):
        print(f"== {kind}")
        for region in ("us", "eu", "br", None):
            rows = [r for r in results if r["perturb"] == kind and (region is None or r["region"] == region)]
            if not rows:
                continue
            parts = [f"{f} {100 * sum(r[f] for r in rows) / len(rows):.1f}%" for f in finders]
            if "opencv" in finders and "detector_rows" in finders:
                either = sum(r["opencv"] or r["detector_rows"] for r in rows)
                parts.append(f"opencv or detector rows {100 * either / len(rows):.1f}%")
            if detector is not None:
                parts.append(f"detector median {statistics.median(r['detector_ms'] for r in rows):.0f} ms")
            print(f"  {region or 'overall'} ({len(rows)}): " + ", ".join(parts))
    if reads and "opencv" in finders:
        print("== misreads (from --reads), clean images")
        for region in ("us", "eu", "br", None):
            rows = [r for r in results if r["perturb"] == "none" and (region is None or r["region"] == region)
                    and r["image"] in reads and not reads[r["image"]]["exact"]]
            lost = sum(not r["opencv"] for r in rows)
            print(f"  {region or 'overall'}: {len(rows)} misses = {lost} not localised + "
                  f"{len(rows) - lost} localised but misread")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
