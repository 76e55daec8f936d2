"""Calibrate closed-vocabulary exit matching (gatekeeper/vision/scoring.py) on the bench: T, M, G.

    PYTHONPATH=. python benchmarks/calibrate_matching.py --data ../shared/bench/plates [--out DIR]
        [--regions us,eu,br] [--limit N] [--copies 2] [--seed 11] [--cache FILE] [--threads 1] [--model-dir DIR] [--detector on|off]
        [--exit-recognizers plate_g2,plate_g3] [--closer-look] [--wide-from OLD_CACHE]

Validation/calibration only, nothing is trained. For every bench photo the real reader runs on
the photo itself (an entry camera) and on ``--copies`` seeded perturbed copies (blur, light,
scale, crop: an exit camera, the same perturbation as benchmarks/lane_outcome.py). A recording
wrapper around the recogniser keeps every probability matrix the reader computed (its candidate
rows, first and extra views): that is the evidence of one photo. Per matrix the free readings
are the best path and the region grammar's reading.

Candidate sets, like a lot's open sessions: the true plate, hard distractors (the true plate
with one look-alike swap, with two, and with one random substitution: 0/O/D/Q, 1/I/L, 2/Z, 5/S,
8/B, 6G) and other bench plates of the same region, 30-60 in all (seeded). Two scenarios per
photo: **inside** (the true plate is among the candidates; a correct accept is the true plate,
any other accept is wrong) and **not inside** (the same set without the true plate: any accept
is wrong, e.g. a car with no entry record, or whose look-alike twin is inside).

A decision accepts the best candidate when its per-character log-probability >= T, it beats the
runner-up by >= M nats and the free reading is at most G nats more likely. The grid search keeps
0 wrong accepts over both scenarios (hard constraint) and picks, among the points that stay at
0 wrong with each threshold loosened by a safety step (T - 0.1, M - 1, G + 1), the one with the
highest true accept rate. Also reported: a two-fold check (choose on even-numbered photos, count
on odd ones and the reverse), two photos of one vehicle combined (max vs mean), and today's
matcher (the reader's string, exact or unique within 1.0 look-alike-cheap edits) on the same sets.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import pickle
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lane_outcome import encode_jpeg, load_region, perturb, seeded_rng  # noqa: E402

from gatekeeper.vision.scoring import Thresholds, fold, rank  # noqa: E402
from tests.recording import Recording  # noqa: E402  (keeps every matrix the reader computed)

LOOKALIKE_GROUPS = ("0ODQ", "1IL", "2Z", "5S", "8B", "6G")
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: The floor of a whole read at an exit (``anpr.min_confidence``): the cache's "read".
SURE_READ = 0.5


def _reader_parts():
    """The reader, the recogniser the lane runs (ONNX, no torch) and the grammar."""
    from gatekeeper.vision.onnx_recognizer import OnnxRecognizer
    from gatekeeper.vision.plate_formats import PlateGrammar, reduce_probabilities
    from gatekeeper.vision.reader import PlateReader

    return PlateReader, OnnxRecognizer, PlateGrammar, reduce_probabilities


def plate_distance(a: str, b: str) -> float:
    try:
        from gatekeeper.rules import plate_distance as distance
    except ImportError:  # pragma: no cover
        raise SystemExit("gatekeeper.rules.plate_distance not found")
    return distance(a, b)


# --------------------------------------------------------------------------- evidence


def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per photo view: folded matrices, free readings per matrix, the reader's own read."""
    if args.cache and args.cache.is_file():
        with open(args.cache, "rb") as fh:
            cached = pickle.load(fh)
        if cached.get("key") == cache_key(args):
            print(f"evidence from {args.cache}")
            return cached["views"]
    wide_from = args.wide_from
    old: dict[tuple[str, str, str], dict[str, Any]] = {}
    if wide_from is not None:     # a cache made before the closer look read rows wide: reuse all but those
        with open(wide_from, "rb") as fh:
            before = pickle.load(fh)
        if before.get("key") != cache_key(args, wide=False):
            raise SystemExit(f"{wide_from} is not this command's evidence without the wide views")
        old = {(v["region"], v["image"], v["kind"]): v for v in before["views"]}
    PlateReader, EasyOcrRecognizer, PlateGrammar, reduce_probabilities = _reader_parts()
    recording = Recording(EasyOcrRecognizer(threads=args.threads, model_dir=args.model_dir))
    detector = None
    if args.detector == "on":       # as the lane runs by default (anpr.plate_detector)
        from gatekeeper.vision.plate_detector import PlateDetector
        detector = PlateDetector(threads=1)
    # Floor 0: every read comes back with its confidence; "read" keeps the exit's floor (0.5), and
    # calibrate_alternates.py applies the entry's own (anpr.entry_min_confidence) to "read_any".
    reader = PlateReader(region="eu", recognizer=recording, detector=detector, min_confidence=0.0)
    exit_recording, exit_reader = recording, reader
    if args.exit_recognizers:       # as the lane's anpr.exit_recognizers: exit views read by their own reader
        nets = {"plate_g2": recording.inner}
        members = [Recording(nets.get(n) or EasyOcrRecognizer(name=n, threads=args.threads, model_dir=args.model_dir))
                   for n in args.exit_recognizers.split(",")]
        exit_recording = Recordings(members)
        exit_reader = PlateReader(region="eu", recognizer=members[0], second_opinions=members[1:],
                                  detector=detector, min_confidence=0.0)
    views: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for region in args.regions.split(","):
        grammar = PlateGrammar.for_region(region)
        cars = load_region(args.data, region, args.limit)
        for n, car in enumerate(cars):
            image = cv2.imread(str(car.path), cv2.IMREAD_COLOR)
            shots = [("entry", image, [])]
            for c in range(args.copies):
                rng = seeded_rng(args.seed, region, car.name, "exit" if c == 0 else f"exit{c + 1}")
                view, ops = perturb(image, car.box, rng)
                data = encode_jpeg(view, rng.randint(75, 95))
                shots.append((f"exit{c + 1}", cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), ops))
            for kind, shot, ops in shots:
                rec, rdr = (recording, reader) if kind == "entry" else (exit_recording, exit_reader)
                kept = old.get((region, car.name, kind))
                if kept is not None:
                    views.append(kept)
                    if args.closer_look and kind != "entry":
                        mats, free = _glimpses(rdr.wide_look(shot, region=region))
                        kept["closer_matrices"] = kept.get("closer_matrices", []) + mats
                        kept["closer_free"] = kept.get("closer_free", []) + free
                    continue
                rec.seen = []
                read = rdr.read(shot, region=region)
                mats, free = _evidence(rec, grammar)
                views.append({
                    "region": region, "image": car.name, "truth": car.truth, "index": n, "kind": kind,
                    "ops": ops, "read": read.normalised if read and read.confidence >= SURE_READ else "",
                    "read_any": read.normalised if read else "", "confidence": read.confidence if read else 0.0,
                    "matrices": mats, "free": free,
                })
                if args.closer_look and kind != "entry":   # what an exit lane adds before calling the attendant
                    # As the lane gets them: the wide views' padding loosened (scoring.loosen_edges).
                    closer = rdr.closer_look(shot, region=region)
                    views[-1]["closer_matrices"], views[-1]["closer_free"] = _glimpses(closer)
            print(f"[{region}] {n + 1}/{len(cars)} {car.truth:10s} reads "
                  f"{[v['read'] or '-' for v in views[-len(shots):]]}  {time.monotonic() - t0:.0f} s", flush=True)
    reader.close()
    if args.cache:
        with open(args.cache, "wb") as fh:
            pickle.dump({"key": cache_key(args), "views": views}, fh)
    return views


class Recordings:
    """Several recordings (an exit reader's recogniser and its second opinions) seen as one."""

    def __init__(self, members: list[Recording]) -> None:
        self.members = members
        self.alphabet = members[0].alphabet

    @property
    def seen(self) -> list[np.ndarray]:
        return [m for r in self.members for m in r.seen]

    @seen.setter
    def seen(self, value: list[np.ndarray]) -> None:
        for r in self.members:
            r.seen = list(value)


def _evidence(recording: Recording, grammar: Any) -> tuple[list[np.ndarray], list[list[str]]]:
    """The recorded matrices, folded, and the grammar's reading of each."""
    _, _, _, reduce_probabilities = _reader_parts()
    mats = [fold(m, recording.alphabet).astype(np.float32) for m in recording.seen]
    free = []
    for m in recording.seen:
        decoded = grammar.decode(reduce_probabilities(m, recording.alphabet), top=1)
        free.append([decoded[0].plate] if decoded else [])
    return mats, free


def _glimpses(glimpses: Any) -> tuple[list[np.ndarray], list[list[str]]]:
    """The reader's own evidence (folded matrices, the grammar's reading of each), as ``_evidence``'s."""
    return [g.matrix.astype(np.float32) for g in glimpses], [list(g.readings) for g in glimpses]


def cache_key(args: argparse.Namespace, *, wide: bool = True) -> str:
    """What the evidence depends on; ``wide``: the closer look reads the rows wide too (stop 29)."""
    model = f"|{args.model_dir.resolve()}" if args.model_dir else ""
    model += "|detector" if args.detector == "on" else ""
    model += ("|closer+wide" if wide else "|closer") if args.closer_look else ""
    model += f"|exit:{args.exit_recognizers}" if args.exit_recognizers else ""
    return f"{args.data.resolve()}|{args.regions}|{args.limit}|{args.copies}|{args.seed}{model}|reads-with-confidence"


# --------------------------------------------------------------------------- candidate sets


def swap_lookalike(plate: str, rng: random.Random, swaps: int) -> str | None:
    positions = [i for i, ch in enumerate(plate) if any(ch in g for g in LOOKALIKE_GROUPS)]
    if len(positions) < swaps:
        return None
    out = list(plate)
    for i in rng.sample(positions, swaps):
        group = next(g for g in LOOKALIKE_GROUPS if out[i] in g)
        out[i] = rng.choice([c for c in group if c != out[i]])
    return "".join(out)


def substitute(plate: str, rng: random.Random) -> str:
    out = list(plate)
    i = rng.randrange(len(out))
    out[i] = rng.choice([c for c in ALNUM if c != out[i]])
    return "".join(out)


def candidate_set(view: dict[str, Any], region_plates: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(set with the true plate, hard distractors) for one photo view."""
    rng = seeded_rng(seed, view["region"], view["image"], view["kind"], "candidates")
    truth = view["truth"]
    hard = [p for p in (swap_lookalike(truth, rng, 1), swap_lookalike(truth, rng, 2), substitute(truth, rng))
            if p and p != truth]
    size = rng.randint(30, 60)
    others = [p for p in region_plates if p != truth and p not in hard]
    rng.shuffle(others)
    pool = [truth, *dict.fromkeys(hard), *others]
    return list(dict.fromkeys(pool))[:size], list(dict.fromkeys(hard))


# --------------------------------------------------------------------------- scoring


def rankings(views: list[dict[str, Any]], seed: int, lookalike_weight: float) -> list[dict[str, Any]]:
    plates_by_region: dict[str, list[str]] = {}
    for v in views:
        plates_by_region.setdefault(v["region"], [])
        if v["truth"] not in plates_by_region[v["region"]]:
            plates_by_region[v["region"]].append(v["truth"])
    rows = []
    for v in views:
        candidates, hard = candidate_set(v, plates_by_region[v["region"]], seed)
        mats = [m.astype(np.float64) for m in v["matrices"]]
        for scenario, cands in (("inside", candidates), ("not_inside", [c for c in candidates if c != v["truth"]])):
            r = rank(mats, cands, free=v["free"], lookalike_weight=lookalike_weight) if mats else None
            rows.append({
                "region": v["region"], "image": v["image"], "index": v["index"], "kind": v["kind"],
                "scenario": scenario, "truth": v["truth"], "read": v["read"],
                "best": r.best if r else "", "norm": r.score_norm if r else -math.inf,
                "margin": r.margin if r else 0.0, "gap": r.free_gap if r else math.inf,
                "runner_up": r.runner_up if r else "", "free": r.free if r else "",
                "baseline": baseline_match(v["read"], cands),
                "hard": v["truth"] in cands and r is not None and r.runner_up in hard,
            })
    return rows


def baseline_match(read: str, candidates: list[str]) -> str:
    """Today's exit matcher (rules.match_session): exact, else the unique best within 1.0 edits."""
    if not read:
        return ""
    if read in candidates:
        return read
    near = sorted((plate_distance(read, c), c) for c in candidates)
    near = [(d, c) for d, c in near if d <= 1.0]
    if not near:
        return ""
    if len(near) == 1 or near[1][0] - near[0][0] >= 0.5:
        return near[0][1]
    return ""


def tally(rows: list[dict[str, Any]] | "Columns", t: Thresholds) -> dict[str, int]:
    c = rows if isinstance(rows, Columns) else Columns(rows)
    ok = (c.norm >= t.min_score_norm) & (c.margin >= t.min_margin) & (c.gap <= t.max_free_gap)
    return {
        "inside": int(c.inside.sum()),
        "correct": int((ok & c.inside & c.right).sum()),
        "wrong_inside": int((ok & c.inside & ~c.right).sum()),
        "not_inside": int((~c.inside).sum()),
        "wrong_not_inside": int((ok & ~c.inside).sum()),
    }


class Columns:
    """The rows as numpy columns: the grid search tallies thousands of threshold points."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.norm = np.array([r["norm"] for r in rows], dtype=float)
        self.margin = np.array([r["margin"] for r in rows], dtype=float)
        self.gap = np.array([r["gap"] for r in rows], dtype=float)
        self.inside = np.array([r["scenario"] == "inside" for r in rows], dtype=bool)
        self.right = np.array([r["best"] == r["truth"] for r in rows], dtype=bool)


GRID_T = [round(float(x), 2) for x in np.arange(-3.0, 0.01, 0.1)]
GRID_M = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
GRID_G = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 1e9]
SAFETY = (0.1, 1.0, 1.0)   # T lowered, M lowered, G raised: still 0 wrong


def search(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The best 0-wrong point, and the best point that keeps 0 wrong after a safety step."""
    cache: dict[tuple[float, float, float], dict[str, int]] = {}
    columns = Columns(rows)

    def at(t: float, m: float, g: float) -> dict[str, int]:
        key = (t, m, g)
        if key not in cache:
            cache[key] = tally(columns, Thresholds(t, m, g))
        return cache[key]

    return grid_search(at)


def grid_search(at: Callable[[float, float, float], dict[str, int]]) -> dict[str, Any]:
    """Over the T x M x G grid: the best point with 0 wrong accepts (``at`` tallies one point),
    and the best that still has 0 wrong when loosened by :data:`SAFETY` (ties: larger margin)."""
    best = safe = None
    for t, m, g in itertools.product(GRID_T, GRID_M, GRID_G):
        c = at(t, m, g)
        if c["wrong_inside"] or c["wrong_not_inside"]:
            continue
        if best is None or c["correct"] > best[1]["correct"]:
            best = ((t, m, g), c)
        loose = at(round(t - SAFETY[0], 2), max(0.0, m - SAFETY[1]), g + SAFETY[2])
        if loose["wrong_inside"] or loose["wrong_not_inside"]:
            continue
        if safe is None or c["correct"] > safe[1]["correct"] or (
                c["correct"] == safe[1]["correct"] and (m, -g, t) > (safe[0][1], -safe[0][2], safe[0][0])):
            safe = ((t, m, g), c)
    return {"best": best, "safe": safe}


def rate(c: dict[str, int]) -> str:
    return f"{c['correct']}/{c['inside']} = {100 * c['correct'] / max(1, c['inside']):.1f}%"


def baseline_tally(rows: list[dict[str, Any]]) -> dict[str, int]:
    out = {"inside": 0, "correct": 0, "wrong_inside": 0, "not_inside": 0, "wrong_not_inside": 0}
    for r in rows:
        if r["scenario"] == "inside":
            out["inside"] += 1
            out["correct"] += r["baseline"] == r["truth"]
            out["wrong_inside"] += bool(r["baseline"]) and r["baseline"] != r["truth"]
        else:
            out["not_inside"] += 1
            out["wrong_not_inside"] += bool(r["baseline"])
    return out


def two_photo(views: list[dict[str, Any]], seed: int, weight: float, t: Thresholds) -> dict[str, Any]:
    """Exit copies 1 and 2 of one car as two frames of one vehicle: max over all matrices vs mean."""
    by_car: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for v in views:
        if v["kind"].startswith("exit"):
            by_car.setdefault((v["region"], v["image"]), []).append(v)
    plates_by_region: dict[str, list[str]] = {}
    for v in views:
        plates_by_region.setdefault(v["region"], [])
        if v["truth"] not in plates_by_region[v["region"]]:
            plates_by_region[v["region"]].append(v["truth"])
    out = {"max": [0, 0, 0], "mean": [0, 0, 0]}   # correct, wrong, cars
    from gatekeeper.vision.scoring import ctc_log_probs, per_char
    for (region, _), group in by_car.items():
        if len(group) < 2:
            continue
        cands, _ = candidate_set(group[0], plates_by_region[region], seed)
        for scenario, cs in (("inside", cands), ("not_inside", [c for c in cands if c != group[0]["truth"]])):
            mats = [[m.astype(np.float64) for m in v["matrices"]] for v in group]
            if not all(mats):
                continue
            per_photo = []   # (photos, candidates): best matrix per photo
            for ms in mats:
                per_photo.append(np.stack([ctc_log_probs(m, cs, lookalike_weight=weight) for m in ms]).max(axis=0))
            table = np.stack(per_photo)
            for how in ("max", "mean"):
                combined = table.max(axis=0) if how == "max" else (
                    np.logaddexp.reduce(table, axis=0) - math.log(len(table)))
                order = np.argsort(-combined)
                b, r2 = int(order[0]), int(order[1])
                margin = combined[b] - combined[r2]
                # The free gap: on each photo's own best matrix, as rank() does; the vehicle takes the smaller.
                gaps = []
                for ms, free in zip(mats, (v["free"] for v in group)):
                    rk = rank(ms, [cs[b]], free=free, lookalike_weight=weight)
                    gaps.append(rk.free_gap if rk else math.inf)
                ok = (per_char(float(combined[b]), cs[b]) >= t.min_score_norm and margin >= t.min_margin
                      and min(gaps) <= t.max_free_gap)
                truth = group[0]["truth"]
                if scenario == "inside":
                    out[how][2] += 1
                    out[how][0] += ok and cs[b] == truth
                    out[how][1] += ok and cs[b] != truth
                else:
                    out[how][1] += ok
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/bench/plates"))
    parser.add_argument("--regions", default="us,eu,br")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--copies", type=int, default=2, help="perturbed exit copies per photo")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None, help="keep the evidence here (pickle) to re-score")
    parser.add_argument("--out", type=Path, default=Path("calibration"))
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="recogniser folder (anpr.model_dir), e.g. a new fine-tune's export")
    parser.add_argument("--exit-recognizers", default="",
                        help="exit views read with the first, the others' probabilities added, e.g. plate_g2,plate_g3 "
                             "(anpr.exit_recognizers; default: as the entry)")
    parser.add_argument("--detector", choices=("on", "off"), default="off",
                        help="read with the plate detector, as the lane does by default (anpr.plate_detector)")
    parser.add_argument("--wide-from", type=Path, default=None,
                        help="a --closer-look cache made before the closer look read rows wide: its evidence is "
                        "kept and only the wide views are read (minutes instead of most of an hour)")
    parser.add_argument("--closer-look", action="store_true",
                        help="also keep each exit view's deblurred closer look (anpr.closer_look; needs --detector on)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    views = collect(args)
    report: dict[str, Any] = {"command": " ".join(sys.argv), "views": len(views)}
    for weight in (0.0, 0.4):
        rows = rankings(views, args.seed, weight)
        exit_rows = [r for r in rows if r["kind"].startswith("exit")]
        entry_rows = [r for r in rows if r["kind"] == "entry"]
        found = search(rows)
        block: dict[str, Any] = {}
        print(f"\n== look-alike weight {weight}: {len(exit_rows) // 2} exit photos, {len(entry_rows) // 2} entry photos "
              f"(x2 scenarios), 0 wrong accepts required over all")
        for label in ("best", "safe"):
            if found[label] is None:
                print(f"  {label}: no 0-wrong point on the grid")
                continue
            (t, m, g), _ = found[label]
            th = Thresholds(t, m, g)
            ex, en = tally(exit_rows, th), tally(entry_rows, th)
            print(f"  {label:4s} T={t:+.2f} M={m:.1f} G={g:g}: exit true accepts {rate(ex)} "
                  f"(wrong {ex['wrong_inside']}+{ex['wrong_not_inside']}); entry photos {rate(en)}")
            per_region = {}
            for region in args.regions.split(","):
                rr = tally([r for r in exit_rows if r["region"] == region], th)
                per_region[region] = rr
                print(f"       {region}: exit {rate(rr)}")
            block[label] = {"T": t, "M": m, "G": g, "exit": ex, "entry": en, "per_region": per_region}
        # Two-fold: choose on one half of the photos, count on the other.
        folds = []
        for half in (0, 1):
            choose = [r for r in rows if r["index"] % 2 == half]
            check = [r for r in rows if r["index"] % 2 != half and r["kind"].startswith("exit")]
            f = search(choose)["safe"]
            if f is None:
                continue
            c = tally(check, Thresholds(*f[0]))
            folds.append({"chosen_on": "even" if half == 0 else "odd", "thresholds": f[0], "held_out_exit": c})
            print(f"  two-fold: chosen on {'even' if half == 0 else 'odd'} photos {f[0]} -> held-out exit "
                  f"{rate(c)}, wrong {c['wrong_inside']}+{c['wrong_not_inside']}")
        block["two_fold"] = folds
        base_ex = baseline_tally(exit_rows)
        print(f"  today's matcher on the same exit sets: {rate(base_ex)}, wrong {base_ex['wrong_inside']} (inside) + "
              f"{base_ex['wrong_not_inside']} (not inside)")
        block["baseline_exit"] = base_ex
        if found["safe"] is not None:
            tp = two_photo(views, args.seed, weight, Thresholds(*found["safe"][0]))
            print(f"  two exit photos per car at the safe point: max {tp['max'][0]}/{tp['max'][2]} "
                  f"(wrong {tp['max'][1]}), mean {tp['mean'][0]}/{tp['mean'][2]} (wrong {tp['mean'][1]})")
            block["two_photos"] = tp
        report[f"weight_{weight}"] = block
        (args.out / f"rows-w{weight}.json").write_text(json.dumps(rows, default=float), encoding="utf-8")
    (args.out / "calibration.json").write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    print(f"written {args.out / 'calibration.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
