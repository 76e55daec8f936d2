"""Closed-vocabulary scoring: CTC forward probabilities of known plates, ranking and acceptance."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gatekeeper.vision.scoring import (
    CHARS,
    Thresholds,
    accept,
    best_path,
    ctc_log_probs,
    fold,
    per_char,
    rank,
)


def matrix(frames: list[dict[str, float]], floor: float = 1e-4) -> np.ndarray:
    """A folded (frames, 37) matrix; each frame gives probabilities for a few classes ('-' = blank)."""
    out = np.full((len(frames), 1 + len(CHARS)), floor)
    for t, frame in enumerate(frames):
        for ch, p in frame.items():
            out[t, 0 if ch == "-" else 1 + CHARS.index(ch)] = p
    return out / out.sum(axis=1, keepdims=True)


def spell(text: str, *, p: float = 0.9, floor: float = 1e-4) -> np.ndarray:
    """Frames that say ``text`` with a blank between characters (and around them)."""
    frames: list[dict[str, float]] = [{"-": p}]
    for ch in text:
        frames += [{ch: p}, {"-": p}]
    return matrix(frames, floor)


def test_forward_probability_equals_the_sum_over_all_paths() -> None:
    rng = np.random.default_rng(3)
    # 4 frames over blank + 3 classes, embedded in the 37-class layout (others ~0).
    small = rng.dirichlet(np.ones(4), size=4)
    folded = np.full((4, 37), 0.0)
    folded[:, [0, 1 + CHARS.index("A"), 1 + CHARS.index("B"), 1 + CHARS.index("8")]] = small
    sub = folded[:, [0, 1 + CHARS.index("A"), 1 + CHARS.index("B"), 1 + CHARS.index("8")]]

    def brute(plate: str) -> float:
        # brute force over the 4 live classes, mapping them back to characters
        letters = "AB8"
        total = 0.0
        for path in itertools.product(range(4), repeat=4):
            out, prev = [], 0
            for k in path:
                if k != 0 and k != prev:
                    out.append(letters[k - 1])
                prev = k
            if "".join(out) == plate:
                total += math.prod(sub[t, k] for t, k in enumerate(path))
        return math.log(total) if total > 0 else -math.inf

    plates = ["A", "AB", "AA", "B8A", "ABAB", "8", ""]
    got = ctc_log_probs(folded, plates)
    for plate, value in zip(plates, got):
        assert value == pytest.approx(brute(plate), abs=1e-6), plate
    assert ctc_log_probs(folded, ["ABABA"])[0] == -math.inf   # five characters do not fit in four frames


def test_repeated_letters_need_a_blank_between() -> None:
    no_blank = matrix([{"-": 0.9}, {"A": 0.9}, {"A": 0.9}, {"-": 0.9}])
    with_blank = matrix([{"A": 0.9}, {"-": 0.9}, {"A": 0.9}, {"-": 0.9}])
    a, aa = ctc_log_probs(no_blank, ["A", "AA"])
    assert a > aa + 5                       # two A frames in a row are one A
    a2, aa2 = ctc_log_probs(with_blank, ["A", "AA"])
    assert aa2 > a2 + 5                     # a blank between makes two


def test_the_spelt_plate_wins_and_lookalikes_score_close() -> None:
    m = spell("AB123CD")
    true, lookalike, other, shorter, longer = ctc_log_probs(m, ["AB123CD", "A8123CD", "AB723CD", "AB123C", "AB123CDE"])
    assert true > lookalike and true > other and true > shorter and true > longer
    # Only floor mass at the swapped position: a look-alike is no better than any other swap...
    assert lookalike == pytest.approx(other, abs=1e-6)
    # ...unless the network itself hesitated between the look-alikes.
    hesitant = matrix([{"-": 0.9}, {"A": 0.9}, {"-": 0.9}, {"B": 0.55, "8": 0.4}, {"-": 0.9}, {"1": 0.9}, {"-": 0.9}])
    t, l, o = ctc_log_probs(hesitant, ["AB1", "A81", "A71"])
    assert t > l > o + 5
    assert t - l == pytest.approx(math.log(0.55 / 0.4), abs=0.05)


def test_lookalike_weight_lifts_a_lookalike_of_a_clear_character() -> None:
    m = spell("AB1")
    plain = ctc_log_probs(m, ["A81"])[0]
    lifted = ctc_log_probs(m, ["A81"], lookalike_weight=0.4)[0]
    assert lifted > plain + 5
    assert ctc_log_probs(m, ["AB1"], lookalike_weight=0.4)[0] > lifted   # the true spelling still wins


def test_empty_candidate_and_empty_matrix() -> None:
    blanks = matrix([{"-": 0.99}] * 5)
    empty, one = ctc_log_probs(blanks, ["", "A"])
    assert empty == pytest.approx(5 * math.log(blanks[0, 0]), abs=1e-9)
    assert one < empty - 5
    assert list(ctc_log_probs(np.zeros((0, 37)), ["", "A"])) == [0.0, -math.inf]
    assert ctc_log_probs(blanks, []).shape == (0,)


def test_long_plates_do_not_underflow() -> None:
    m = spell("ABCDEFGH" * 16, p=0.001, floor=0.999 / 36)   # 257 frames, each unlikely
    value = ctc_log_probs(m, ["ABCDEFGH" * 16])[0]
    assert math.isfinite(value) and value < math.log(np.finfo(float).tiny)   # below what a product could hold


def test_fold_sums_case_and_sends_punctuation_to_blank() -> None:
    alphabet = "0123456789!|-aAbB"
    probs = np.zeros((3, 1 + len(alphabet)))
    probs[0, 1 + alphabet.index("a")] = 0.3
    probs[0, 1 + alphabet.index("A")] = 0.5
    probs[0, 1 + alphabet.index("-")] = 0.2
    probs[1, 1 + alphabet.index("|")] = 1.0
    probs[2, 0] = 1.0
    folded = fold(probs, alphabet)
    assert folded.shape == (3, 37)
    assert folded[0, 1 + CHARS.index("A")] == pytest.approx(0.8)
    assert folded[0, 0] == pytest.approx(0.2)
    assert folded[1, 1 + CHARS.index("1")] == pytest.approx(0.5)
    assert folded[1, 1 + CHARS.index("I")] == pytest.approx(0.5)
    assert np.allclose(folded.sum(axis=1), 1.0)
    with pytest.raises(ValueError):
        fold(probs[:, :-1], alphabet)


def test_rank_picks_the_true_plate_with_margin_and_free_reading() -> None:
    evidence = [matrix([{"X": 0.9}, {"-": 0.9}]), spell("AB123CD")]   # a junk row, then the plate row
    ranking = rank(evidence, ["ZZ999ZZ", "AB123CD", "A8123CD", "ab-123-cd"])
    assert ranking is not None
    assert ranking.best == "AB123CD" and ranking.matrix == 1
    assert ranking.runner_up in {"A8123CD", "ZZ999ZZ"}
    assert ranking.margin > 5
    assert ranking.free_gap == pytest.approx(0.0, abs=1e-9)    # the free reading is the best candidate
    assert ranking.score_norm == pytest.approx(per_char(ranking.score, "AB123CD"))
    assert accept(ranking, Thresholds(min_score_norm=-1.0, min_margin=3.0, max_free_gap=1.0))
    assert not accept(ranking, Thresholds(min_score_norm=-1.0, min_margin=ranking.margin + 1, max_free_gap=1.0))


def test_a_car_that_is_not_inside_is_not_accepted() -> None:
    evidence = [spell("AB123CD")]
    ranking = rank(evidence, ["AB128CD", "XY555ZZ"])           # the true plate has no session
    assert ranking is not None and ranking.best == "AB128CD"
    assert ranking.free == "AB123CD" and ranking.free_gap > 5
    assert not accept(ranking, Thresholds(min_score_norm=-3.0, min_margin=0.0, max_free_gap=2.0))


def test_two_cars_one_lookalike_apart_stay_shut_when_the_network_hesitates() -> None:
    hesitant = matrix([{"-": 0.9}, {"A": 0.9}, {"-": 0.9}, {"B": 0.5, "8": 0.45}, {"-": 0.9}, {"1": 0.9}, {"-": 0.9}])
    ranking = rank([hesitant], ["AB1", "A81"])
    assert ranking is not None and ranking.margin < 0.2
    assert not accept(ranking, Thresholds(min_score_norm=-2.0, min_margin=1.0, max_free_gap=2.0))


def test_no_evidence_or_no_candidates() -> None:
    assert rank([], ["AB1"]) is None
    assert rank([spell("AB1")], []) is None
    assert rank([spell("AB1")], ["--", ""]) is None
    assert not accept(None, Thresholds(-1.0, 1.0, 1.0))


def test_best_path() -> None:
    assert best_path(spell("AABB1")) == "AABB1"
    assert best_path(matrix([{"A": 0.9}, {"A": 0.9}, {"-": 0.9}, {"A": 0.9}])) == "AA"


# --------------------------------------------------------------------------- through the real recogniser


@pytest.fixture(scope="module")
def recogniser_evidence():
    """Matrices the real reader computes for drawn plates (gatekeeper/sim_plates.py)."""
    from gatekeeper.sim.plates import draw_plate_scene
    from gatekeeper.vision.onnx_recognizer import OnnxRecognizer
    from gatekeeper.vision.reader import PlateReader
    from tests.recording import Recording

    recording = Recording(OnnxRecognizer(threads=1))  # the runtime the lane runs
    reader = PlateReader(region="eu", recognizer=recording)
    evidence = {}
    for i, plate in enumerate(["KB-482-TR", "ZG-3081-AE", "SE-56-HGN"]):
        recording.seen = []
        read = reader.read(draw_plate_scene(plate, seed=i))
        evidence[plate.replace("-", "")] = ([fold(m, recording.alphabet) for m in recording.seen], read)
    reader.close()
    return evidence


def test_drawn_plates_rank_first_among_open_sessions(recogniser_evidence) -> None:
    sessions = ["KB482TR", "ZG3081AE", "SE56HGN", "K8482TR", "KB482IR", "ZG3O81AE", "SE56HCN", "AB123CD", "KB48TR"]
    for plate, (evidence, read) in recogniser_evidence.items():
        assert evidence, plate
        ranking = rank(evidence, sessions)
        assert ranking is not None
        assert ranking.best == plate, (plate, ranking.scores[:3])
        assert ranking.margin > 1.0, (plate, ranking.scores[:3])
        assert ranking.score_norm > -0.5
        assert ranking.free_gap < 1.0


def test_drawn_plate_whose_car_is_not_inside_is_refused(recogniser_evidence) -> None:
    evidence, _ = recogniser_evidence["KB482TR"]
    sessions = ["K8482TR", "KB482IR", "KB48TR", "ZG3081AE"]      # the car itself has no session
    ranking = rank(evidence, sessions)
    assert ranking is not None and ranking.best != "KB482TR"
    assert ranking.free_gap > 2.0 or ranking.score_norm < -1.0
    assert not accept(ranking, Thresholds(min_score_norm=-0.5, min_margin=2.0, max_free_gap=2.0))


# --------------------------------------------------------------------------- several photos of one vehicle


def _spelled(plate: str, split: dict[int, dict[str, float]] | None = None) -> np.ndarray:
    """A folded matrix spelling ``plate``, one frame per character (``split`` spreads one), blanks between."""
    from gatekeeper.vision.scoring import CHARS

    def row(chars: dict[str, float]) -> np.ndarray:
        r = np.full(1 + len(CHARS), 1e-4)
        for ch, p in chars.items():
            r[1 + CHARS.index(ch)] = p
        r[0] = max(1e-4, 1.0 - r[1:].sum()) if chars else 0.99
        return r / r.sum()

    rows = [row({})]
    for i, ch in enumerate(plate):
        rows += [row((split or {}).get(i, {ch: 0.97})), row({})]
    return np.array(rows)


def test_rank_photos_one_photo_is_rank() -> None:
    from gatekeeper.vision.scoring import rank, rank_photos

    m = _spelled("AB812CD", {2: {"8": 0.6, "B": 0.38}})
    one, many = rank([m], ["AB812CD", "ABB12CD"]), rank_photos([[m]], ["AB812CD", "ABB12CD"])
    assert one == many


def test_rank_photos_a_clear_second_photo_separates_look_alikes_the_same_photo_twice_does_not() -> None:
    from gatekeeper.vision.scoring import rank_photos

    blurred = _spelled("AB812CD", {2: {"8": 0.49, "B": 0.49}})
    clear = _spelled("ABB12CD")
    cands = ["AB812CD", "ABB12CD"]
    alone = rank_photos([[blurred]], cands)
    twice = rank_photos([[blurred], [blurred]], cands)
    both = rank_photos([[blurred], [clear]], cands)
    assert alone is not None and twice is not None and both is not None
    assert alone.margin < 0.5 and twice.margin == pytest.approx(alone.margin)
    assert both.best == "ABB12CD" and both.margin > 3.0


def test_rank_photos_leaves_out_a_photo_that_shows_no_candidate() -> None:
    from gatekeeper.vision.scoring import rank_photos

    junk = _spelled("ZZZ")
    clear = _spelled("ABB12CD")
    with_junk = rank_photos([[junk], [clear]], ["AB812CD", "ABB12CD"])
    alone = rank_photos([[clear]], ["AB812CD", "ABB12CD"])
    assert with_junk == alone


def test_a_twin_read_in_the_evidence_refuses_when_inside_and_is_weighed_when_outside() -> None:
    """The evidence's grammar reading ``ABB12CD`` is the best's look-alike twin. With an outside
    prior it refuses outright only when that twin is inside too, on one photo and on several."""
    from gatekeeper.vision.scoring import rank, rank_photos

    m = _spelled("AB812CD")
    read_twin = [["ABB12CD"]]  # the grammar reads the twin on this matrix
    crowd = ["AB812CD", "XY123ZW"]
    assert rank([m], crowd, free=read_twin).twin == "ABB12CD"                      # prior 0: refuses
    assert rank([m], crowd, free=read_twin, shadow_prior=-8).twin == ""             # twin outside: weighed
    assert rank([m], [*crowd, "ABB12CD"], free=read_twin, shadow_prior=-8).twin == "ABB12CD"  # inside
    photos, free = [[m], [m]], [read_twin, read_twin]
    assert rank_photos(photos, crowd, free=free, shadow_prior=-8).twin == ""
    assert rank_photos(photos, [*crowd, "ABB12CD"], free=free, shadow_prior=-8).twin == "ABB12CD"


# --------------------------------------------------------------------------- entry alternates, groups


def test_one_edit_covers_substitutions_insertions_and_deletions() -> None:
    from gatekeeper.vision.scoring import one_edit

    near = one_edit("AB1")
    assert {"AB", "A1", "B1", "ZAB1", "AB1Z", "A81", "AB7"} <= set(near) and "AB1" not in near
    assert len(near) == 3 * 35 + 4 * 36 + 3 - 3   # substitutions + insertions + deletions, minus repeats


def test_alternatives_keep_the_hesitant_glyph_and_drop_what_the_evidence_does_not_say() -> None:
    from gatekeeper.vision.scoring import alternatives

    hesitant = _spelled("AB7123", split={2: {"7": 0.6, "Z": 0.37}})
    found = alternatives([[hesitant]], "AB7123", window=4.0)
    assert "ABZ123" in found and -1.0 < found["ABZ123"] <= 0
    assert "AB7128" not in found and "ABZ12" not in found
    assert list(found) == sorted(found, key=lambda p: -found[p])
    assert alternatives([[hesitant]], "AB7123", keep=lambda p: not p.startswith("ABZ"), window=4.0).get("ABZ123") is None
    assert alternatives([[_spelled("AB7123")]], "AB7123", window=3.0) == {}   # a sure read (a deletion costs 3.5)
    assert alternatives([], "AB7123") == {} and alternatives([[hesitant]], "") == {}


def test_group_makes_spellings_of_one_session_one_candidate() -> None:
    from gatekeeper.vision.scoring import rank_photos

    evidence = [[_spelled("ABZ123")]]
    plain = rank_photos(evidence, ["ABZ123", "AB7123", "XY9876"])
    assert plain is not None and plain.runner_up == "AB7123"
    owner = {"ABZ123": "AB7123", "AB7123": "AB7123", "XY9876": "XY9876"}
    grouped = rank_photos(evidence, ["ABZ123", "AB7123", "XY9876"], group=owner.__getitem__)
    assert grouped is not None and grouped.best == "ABZ123" and grouped.runner_up == "XY9876"
    assert grouped.margin > plain.margin


def test_loosened_edges_let_junk_beside_the_plate_pass_and_keep_the_characters_there() -> None:
    """A wide view: junk read as characters in the padding (a coat of arms read "W", a bolt "I")
    sinks the plate under plain CTC; loosened, each junk frame costs at most -log(floor), the
    middle is untouched, and a plate character in the padding (the row was cut short) still counts."""
    from gatekeeper.vision.scoring import EDGE_BLANK_FLOOR, loosen_edges

    junk = [{"W": 0.95}, {"W": 0.95}, {"I": 0.95}]
    wide = matrix(junk + [{"-": 0.9}] + [{ch: 0.9} for ch in "RK485AF"] + [{"-": 0.9}] + junk[::-1])
    plain = float(ctc_log_probs(wide, ["RK485AF"])[0])
    loose_m = loosen_edges(wide, 3 / len(wide))
    loose = float(ctc_log_probs(loose_m, ["RK485AF"])[0])
    assert plain < -40 and loose > plain + 30
    assert loose >= 6 * math.log(EDGE_BLANK_FLOOR) + float(ctc_log_probs(wide[3:-3], ["RK485AF"])[0]) - 1e-6
    assert np.array_equal(loose_m[3:-3], wide[3:-3]) and np.array_equal(loose_m[:3, 1:], wide[:3, 1:])
    # The row cut short before "5AF": those characters are in the padding and still spelt there.
    cut = matrix([{"-": 0.9}] + [{ch: 0.9} for ch in "RK485AF"] + [{"W": 0.95}, {"W": 0.95}])
    loose_cut = loosen_edges(cut, 5 / len(cut))
    assert float(ctc_log_probs(loose_cut, ["RK485AF"])[0]) > float(ctc_log_probs(loose_cut, ["RK48"])[0]) + 2
    assert np.array_equal(loosen_edges(wide, 0.0), wide)
