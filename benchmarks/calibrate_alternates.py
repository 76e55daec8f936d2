"""The lane outcome modelled on cached evidence: sessions under the entry's own read, with alternates.

    PYTHONPATH=. python benchmarks/calibrate_alternates.py --cache FILE [--window 0 4 6] [--limit 6]
        [--vanity 5] [--vanity-floor 0.56] [--entry-floor 0.2] [--T -1.75] [--M 3] [--G 8] [--kind exit1] [--show]

``FILE`` is the evidence of ``benchmarks/calibrate_matching.py --detector on --cache FILE`` (the real
reader on every bench photo and two seeded exit copies; ``exit1`` is the copy
``benchmarks/lane_outcome.py`` sends). Unlike ``calibrate_lot_scenarios.py``, whose sessions carry
the true plates, a session here carries what the lane would store: the entry photo's whole read
(no whole read: the car never entered), and, with ``--window W > 0``, the alternates
``vision.scoring.alternatives`` keeps within W nats. Each exit view is decided by the lane's own
code (``lane.recorder.score`` + ``rules.decide_exit``) in a lot of 30-60 cars of its region
(seeded), **inside** (its session among them: opening another is a wrong opening) and
**outside** (the same lot without it: any opening is wrong). ``--vanity N`` lets an entry read no
listed layout fits start a session when it has N+ characters and is ``--vanity-floor`` sure (the
lane's ``anpr.vanity_min_length`` and entry floor for a personalised read); ``--entry-floor F`` lets an entry read of
confidence F and up count (the lane's ``anpr.entry_min_confidence``). Runs in about a minute; the daemon
benchmark takes seven. Validation and calibration only: the photos stay outside the repository.
"""

from __future__ import annotations

import argparse
import math
import pickle
import random
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatekeeper.config import AnprConfig  # noqa: E402
from gatekeeper.lane.evidence import ENTRY_VANITY_MIN_CONFIDENCE, whole_plate_check  # noqa: E402
from gatekeeper.lane.recorder import ALTERNATE_LIMIT, ALTERNATE_WINDOW  # noqa: E402
from gatekeeper.rules import MatchThresholds, Policy, SessionView, Tariff  # noqa: E402
from gatekeeper.vision.reader import Glimpse  # noqa: E402
from gatekeeper.vision.scoring import alternatives, ctc_log_probs  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from calibrate_lot_scenarios import decide  # noqa: E402  (the lane's exit decision, closer look included)

ENTERED = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)


def photos_of(view: dict) -> list[tuple[Glimpse, ...]]:
    return [tuple(Glimpse(m.astype(np.float64), tuple(f)) for m, f in zip(view["matrices"], view["free"]))]


def entry_session(view: dict, whole, window: float, limit: int, vanity: int,
                  floor: float = 0.5, vanity_floor: float = ENTRY_VANITY_MIN_CONFIDENCE,
                  ) -> tuple[str, dict[str, float]] | None:
    """(plate, alternates) the lane would store for this entry photo, or None (no whole read: not let in).

    ``floor``: the entry's ``anpr.entry_min_confidence``; ``vanity_floor``: its floor for a
    personalised read (the reader's confidence, fallback weight included). A cache without the
    reads' confidences (before ``calibrate_matching.py`` kept them) has only the reads of 0.5 and
    up, and a personalised read there counts when the evidence scores it 0.9 sure per character."""
    seen = view.get("read_any", view["read"]) if view.get("confidence", 1.0) >= floor else view["read"]
    read = seen if seen and whole(seen) else ""
    if not read and vanity and len(seen) >= vanity:
        if "confidence" in view:
            read = seen if view["confidence"] >= vanity_floor else ""
        else:
            sure = max(float(ctc_log_probs(m.astype(np.float64), [seen])[0]) for m in view["matrices"])
            read = seen if sure / len(seen) >= math.log(0.9) else ""
    if not read:
        return None
    alts: dict[str, float] = {}
    if window > 0:
        alts = alternatives([[m.astype(np.float64) for m in view["matrices"]]], read,
                            readings=[r for f in view["free"] for r in f], keep=whole, window=window, limit=limit)
    return read, alts


def run(views: list[dict], args: argparse.Namespace, window: float, show: bool) -> Counter:
    entry = {(v["region"], v["image"]): v for v in views if v["kind"] == "entry"}
    exits = {(v["region"], v["image"]): v for v in views if v["kind"] == args.kind}
    whole = {r: whole_plate_check(r) for r in {k[0] for k in entry}}
    policy = Policy(thresholds=MatchThresholds(args.T, args.M, args.G, MatchThresholds.outside_prior, args.C))
    tariff = Tariff(free_minutes=0)
    sessions_of = {k: s for k, v in entry.items()
                   if (s := entry_session(v, whole[k[0]], window, args.limit, args.vanity, args.entry_floor,
                                          args.vanity_floor)) is not None}
    res: Counter = Counter()
    for key, view in sorted(exits.items()):
        region = key[0]
        if key not in sessions_of:
            res["entry no-read"] += 1
            continue
        rng = random.Random(f"{region}|{key[1]}|lot")
        others = [k for k in sessions_of if k[0] == region and k != key and entry[k]["truth"] != view["truth"]]
        rng.shuffle(others)
        crowd = others[: rng.randint(30, 60) - 1]
        is_whole = whole[region]
        read = view["read"] if view["read"] and is_whole(view["read"]) else ""
        for scenario, keys in (("inside", [key, *crowd]), ("outside", crowd)):
            sessions, seen = [], set()
            for i, k in enumerate(keys):
                plate, alts = sessions_of[k]
                if plate not in seen:
                    seen.add(plate)
                    sessions.append(SessionView(i + 1, plate, ENTERED, "open", alternates=tuple(alts.items())))
            d = decide(view, photos_of(view), read, sessions, is_whole, policy, tariff,
                       alternates={s.plate: dict(s.alternates) for s in sessions if s.alternates},
                       closer_look=not args.no_closer_look)
            own = sessions[0].id if scenario == "inside" else None
            if scenario == "inside" and d.session_id == own:
                res["out"] += 1
            elif d.session_id is None:
                res["shut " + d.reason] += scenario == "inside"
            else:
                res[f"WRONG {scenario}"] += 1
                print(f"  WRONG {scenario} {region} {view['truth']} opened for {d.plate}")
            if show and scenario == "inside" and d.session_id != own:
                print(f"  shut {region} {view['truth']:9s} entry {sessions_of[key][0]:9s} "
                      f"alternates {list(sessions_of[key][1])[:4]} exit read {read or '-'} {d.reason}")
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--window", type=float, nargs="+", default=[0.0, ALTERNATE_WINDOW])
    parser.add_argument("--limit", type=int, default=ALTERNATE_LIMIT)
    parser.add_argument("--vanity", type=int, default=AnprConfig().vanity_min_length,
                        help="0: only listed layouts start sessions")
    parser.add_argument("--vanity-floor", type=float, default=ENTRY_VANITY_MIN_CONFIDENCE,
                        help="the entry's floor for a personalised read (the lane's: 0.56, 0.8 before the "
                        "fallback weight)")
    parser.add_argument("--entry-floor", type=float, default=AnprConfig().entry_min_confidence,
                        help="the entry's anpr.entry_min_confidence (0.5: the exit's floor, as before it)")
    parser.add_argument("--T", type=float, default=MatchThresholds.min_score_norm)
    parser.add_argument("--M", type=float, default=MatchThresholds.min_margin)
    parser.add_argument("--G", type=float, default=MatchThresholds.max_free_gap)
    parser.add_argument("--C", type=float, default=MatchThresholds.closer_min_score,
                        help="min score of a match that rests on the closer look")
    parser.add_argument("--kind", default="exit1", choices=("exit1", "exit2"))
    parser.add_argument("--show", action="store_true", help="list every exit that stays shut")
    parser.add_argument("--no-closer-look", action="store_true", help="ignore the cache's deblurred crops")
    args = parser.parse_args(argv)
    with open(args.cache, "rb") as fh:
        views = pickle.load(fh)["views"]
    print(f"T {args.T} M {args.M} G {args.G} C {args.C}, vanity {args.vanity} from {args.vanity_floor}, "
          f"entry floor {args.entry_floor}, "
          f"{args.kind} views")
    for window in args.window:
        res = run(views, args, window, args.show)
        n = sum(1 for v in views if v["kind"] == args.kind)
        print(f"window {window}: out {res['out']}/{n} ({100 * res['out'] / max(1, n):.1f}%), "
              f"wrong inside {res['WRONG inside']}, wrong outside {res['WRONG outside']}; "
              + ", ".join(f"{k} {c}" for k, c in sorted(res.items()) if k not in ("out", "WRONG inside", "WRONG outside")),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
