"""Exit decisions on cached evidence, in four kinds of lot: the shipped matching point, and a grid.

    PYTHONPATH=. python benchmarks/calibrate_lot_scenarios.py --cache FILE
        [--prior -8] [--T -2.5] [--M 3] [--G 6] [--C -0.75] [--CS -1.5] [--CM 5] [--CG 6]
        [--kinds exit1,exit2] [--show]

``FILE`` is the evidence of ``benchmarks/calibrate_matching.py --cache FILE`` (the real reader on
every bench photo and two seeded perturbed exit copies). Every exit view is decided by the lane's
own code: ``gatekeeper.lane.recorder.score`` (grammar prior, look-alike shadows weighted by the
outside prior) and ``rules.decide_exit`` (thresholds, string fallback, twin refusal), against
sessions built for four lots (30-60 cars, seeded):

- ``inside``: the car's plate and other plates of its region (a normal lot): accepting the car's
  plate is right, any other plate wrong;
- ``outside``: the same lot without the car (a car with no entry record): any accept is wrong;
- ``twin_in``: the car's plate *and* a look-alike twin of it inside (8/B, 0/O ...): any accept of
  the twin is wrong (the issue's "two cars one look-alike apart");
- ``twin_out``: the twin inside, the car not (a car with no session whose plate is one look-alike
  away from a car inside). This is what the outside prior weighs: a car at the exit has a session
  unless its entry was missed, and a missed car's plate is a specific look-alike of one of the
  30-60 inside far less often than e^-8 (docs/anpr.md). Reported, not a constraint.

Validation and calibration only: nothing is trained, the photos stay outside the repository.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import random
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatekeeper.lane.evidence import whole_plate_check  # noqa: E402
from gatekeeper.lane.recorder import score  # noqa: E402
from gatekeeper.rules import (  # noqa: E402
    MatchThresholds, Policy, SessionView, Tariff, closer_choice, decide_exit, unmatched_refusal,
)
from gatekeeper.vision.reader import Glimpse  # noqa: E402
from gatekeeper.vision.scoring import single_swaps  # noqa: E402

SCENARIOS = ("inside", "outside", "twin_in", "twin_out")
NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
ENTERED = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)


def lots(views: list[dict], kinds: set[str]) -> list[tuple[dict, list, str, Any, dict[str, list[str] | None]]]:
    """Per exit view: (view, photos, whole read, the region's whole-plate check, lot plates per scenario)."""
    by_region: dict[str, list[str]] = {}
    for v in views:
        by_region.setdefault(v["region"], [])
        if v["truth"] not in by_region[v["region"]]:
            by_region[v["region"]].append(v["truth"])
    whole = {r: whole_plate_check(r) for r in by_region}
    out = []
    for v in views:
        if v["kind"] not in kinds:
            continue
        rng = random.Random(f"{v['region']}|{v['image']}|{v['kind']}|lot")
        others = [p for p in by_region[v["region"]] if p != v["truth"]]
        rng.shuffle(others)
        crowd = others[: rng.randint(30, 60) - 1]
        swaps = single_swaps(v["truth"])
        twin = rng.choice(swaps) if swaps else None
        photos = [tuple(Glimpse(m.astype(np.float64), tuple(f)) for m, f in zip(v["matrices"], v["free"]))]
        is_whole = whole[v["region"]]
        read = v["read"] if v["read"] and is_whole(v["read"]) else ""
        out.append((v, photos, read, is_whole, {
            "inside": [v["truth"], *crowd],
            "outside": crowd,
            "twin_in": [v["truth"], twin, *crowd] if twin else None,
            "twin_out": [twin, *crowd] if twin else None,
        }))
    return out


def decide(view: dict, photos: list, read: str, sessions: list, is_whole: Any, policy: Policy, tariff: Tariff,
           alternates: dict[str, dict[str, float]] | None = None, closer_look: bool = True) -> Any:
    """The exit decision as the lane makes it: with ``closer_look`` and a view that has one (the cache of
    ``calibrate_matching.py --closer-look``), an unread or unmatched vehicle is decided again with its
    deblurred crops added to the photo (``DecisionSequence._closer``, ``DecisionRecorder.decide_closer``)."""
    plates = [s.plate for s in sessions]

    def ranked(evidence: list) -> Any:
        return score(evidence, plates, is_whole=is_whole, outside_prior=policy.thresholds.outside_prior,
                     alternates=alternates)

    def once(scores: Any) -> Any:
        return decide_exit(read, now=NOW, sessions=sessions, tariff=tariff, policy=policy, scores=scores,
                           read_confidence=view.get("confidence"))

    d = once(ranked(photos))
    if closer_look and "closer_matrices" in view and unmatched_refusal(d):
        extra = tuple(Glimpse(m.astype(np.float64), tuple(f)) for m, f in zip(view["closer_matrices"], view["closer_free"]))
        if extra:
            closer = ranked([*photos[:-1], (*photos[-1], *extra)])
            if closer_choice(closer, policy.thresholds) is not None:
                d = once(closer)
    return d


def tally(cases, thresholds: MatchThresholds, show: bool = False, closer_look: bool = True) -> dict[str, list[int]]:
    """Per scenario: [decided views, right accepts, wrong accepts]."""
    policy = Policy(thresholds=thresholds)
    tariff = Tariff(free_minutes=0)
    res = {s: [0, 0, 0] for s in SCENARIOS}
    for v, photos, read, is_whole, sets in cases:
        for scenario, plates in sets.items():
            if plates is None:
                continue
            sessions = [SessionView(i + 1, p, ENTERED, "open") for i, p in enumerate(plates)]
            d = decide(v, photos, read, sessions, is_whole, policy, tariff, closer_look=closer_look)
            res[scenario][0] += 1
            if d.session_id is None:
                if show and scenario == "inside":
                    print(f"  shut {v['region']} {v['truth']:9s} read {read or '-':9s} {d.reason}")
                continue
            right = d.plate == v["truth"]
            res[scenario][1 if right else 2] += 1
            if not right and show:
                print(f"  WRONG {scenario} {v['region']} {v['truth']} opened for {d.plate}")
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--prior", type=float, nargs="+", default=[MatchThresholds.outside_prior])
    parser.add_argument("--T", type=float, nargs="+", default=[MatchThresholds.min_score_norm])
    parser.add_argument("--M", type=float, nargs="+", default=[MatchThresholds.min_margin])
    parser.add_argument("--G", type=float, nargs="+", default=[MatchThresholds.max_free_gap])
    parser.add_argument("--C", type=float, nargs="+", default=[MatchThresholds.closer_min_score],
                        help="min score of a match that rests on the closer look")
    parser.add_argument("--CS", type=float, nargs="+", default=[MatchThresholds.closer_clear_score],
                        help="min score of a clear closer-look match (with --CM margin and --CG gap)")
    parser.add_argument("--CM", type=float, nargs="+", default=[MatchThresholds.closer_clear_margin])
    parser.add_argument("--CG", type=float, nargs="+", default=[MatchThresholds.closer_clear_gap])
    parser.add_argument("--kinds", default="exit1,exit2", help="views to decide (entry, exit1, exit2)")
    parser.add_argument("--show", action="store_true", help="list every shut and wrong decision")
    parser.add_argument("--no-closer-look", action="store_true", help="ignore the cache's deblurred crops")
    args = parser.parse_args(argv)
    with open(args.cache, "rb") as fh:
        views = pickle.load(fh)["views"]
    cases = lots(views, set(args.kinds.split(",")))
    print(f"{len(cases)} views ({args.kinds}); scenarios {', '.join(SCENARIOS)}")
    print("| prior | T | M | G | C | CS/CM/CG | inside right | inside wrong | outside wrong | twin_in right "
          "| twin_in wrong | twin_out wrong |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for prior, t, m, g, c, cs, cm, cg in itertools.product(args.prior, args.T, args.M, args.G, args.C,
                                                           args.CS, args.CM, args.CG):
        r = tally(cases, MatchThresholds(t, m, g, prior, c, cs, cm, cg), show=args.show,
                  closer_look=not args.no_closer_look)
        n = r["inside"][0]
        print(f"| {prior} | {t} | {m} | {g} | {c} | {cs}/{cm}/{cg} "
              f"| {r['inside'][1]}/{n} ({100 * r['inside'][1] / max(1, n):.1f}%) "
              f"| {r['inside'][2]} | {r['outside'][2]} | {r['twin_in'][1]}/{r['twin_in'][0]} | {r['twin_in'][2]} "
              f"| {r['twin_out'][2]}/{r['twin_out'][0]} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
