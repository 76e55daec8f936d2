"""Plate reader, plate grammars, consolidation and the ``read`` command.

The real shipped recogniser (the ONNX export of plate_g2); every image is drawn here
with OpenCV: a plate-shaped patch with thick black characters inside a larger
textured scene, some rotated or blurred. No shared benchmark data is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatekeeper.vision.reader import (
    PlateConsolidator,
    PlateRead,
    PlateReader,
    TextRow,
    row_crop,
    find_text_rows,
    looks_like_overlay,
    same_line,
)
from gatekeeper.vision.votes import pooled_votes
from gatekeeper.vision.recognizer import ModelNotFoundError
from gatekeeper.vision.plate_formats import (
    PLATE_CHARS, Decoded, PlateGrammar, compile_layout, raw_reading, reduce_probabilities,
)
from tests.test_lane_evidence import matrix   # a folded matrix spelling a plate, one glyph split

WHITE = (255, 255, 255)
YELLOW = (0, 220, 255)


# --------------------------------------------------------------------------- drawing


def _scene(seed: int, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A busy background: blurred noise crossed by random coloured lines."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(60, 140, size=(*size, 3), dtype=np.uint8), (0, 0), 3)
    for _ in range(25):
        p1 = tuple(int(v) for v in rng.integers(0, size[1], 2))
        p2 = tuple(int(v) for v in rng.integers(0, size[1], 2))
        cv2.line(img, p1, p2, tuple(int(v) for v in rng.integers(0, 255, 3)), int(rng.integers(1, 4)))
    return img


def _plate(text: str, colour: tuple[int, int, int]) -> np.ndarray:
    font, scale, thick = cv2.FONT_HERSHEY_DUPLEX, 2.0, 4
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    w, h = tw + 40, th + base + 30
    patch = np.full((h, w, 3), colour, np.uint8)
    cv2.rectangle(patch, (2, 2), (w - 3, h - 3), (0, 0, 0), 2)
    cv2.putText(patch, text, (20, 15 + th), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return patch


def _place(scene: np.ndarray, patch: np.ndarray, x: int, y: int, *, angle: float = 0.0,
           blur: float = 0.0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Paste ``patch`` (rotated by ``angle``) at x, y; returns the image and the patch's box."""
    out = scene.copy()
    h, w = patch.shape[:2]
    mask = np.full((h, w), 255, np.uint8)
    if angle:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        cos, sin = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
        m[0, 2] += nw / 2 - w / 2
        m[1, 2] += nh / 2 - h / 2
        patch, mask = cv2.warpAffine(patch, m, (nw, nh)), cv2.warpAffine(mask, m, (nw, nh))
        h, w = nh, nw
    region = out[y: y + h, x: x + w]
    region[mask > 0] = patch[mask > 0]
    if blur:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out, (x, y, w, h)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Share of box ``a`` that lies inside box ``b``."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, a[2] * a[3])


# --------------------------------------------------------------------------- reader


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    with PlateReader(region="eu", min_confidence=0.5) as plate_reader:
        yield plate_reader


@pytest.mark.parametrize(
    ("region", "drawn", "colour", "angle", "blur", "expected"),
    [
        ("br", "ABC-1234", WHITE, 0.0, 0.0, "ABC1234"),
        ("br", "XYZ 9876", YELLOW, 4.0, 0.0, "XYZ9876"),
        ("eu", "RK 346-AL", WHITE, -3.0, 0.0, "RK346AL"),
        ("us", "7ABC123", WHITE, 0.0, 1.2, "7ABC123"),
    ],
)
def test_drawn_plate_is_found_and_read(reader: PlateReader, region: str, drawn: str, colour: tuple[int, int, int],
                                       angle: float, blur: float, expected: str) -> None:
    image, plate_box = _place(_scene(0), _plate(drawn, colour), 150, 200, angle=angle, blur=blur)
    read = reader.read(image, region=region)
    assert read is not None
    assert read.normalised == expected
    assert read.region == region
    assert 0.5 <= read.confidence <= 1.0
    assert _overlap(read.box, plate_box) > 0.6, (read.box, plate_box)
    assert read.crop is not None and read.crop.ndim == 2
    assert read.timings["total"] > 0


def test_scene_without_plate_gives_none(reader: PlateReader) -> None:
    assert reader.read(_scene(99)) is None
    assert reader.read(np.full((480, 640, 3), 128, np.uint8)) is None


def test_roi_limits_the_search_and_box_is_in_full_image_coordinates(reader: PlateReader) -> None:
    image, plate_box = _place(_scene(5), _plate("DEF-5678", WHITE), 300, 300)
    assert reader.read(image, region="br", roi=(0, 0, 640, 250)) is None
    read = reader.read(image, region="br", roi=(250, 250, 390, 230))
    assert read is not None and read.normalised == "DEF5678"
    assert _overlap(read.box, plate_box) > 0.6


def test_grey_input_is_accepted(reader: PlateReader) -> None:
    image, _ = _place(_scene(7), _plate("HPT-2468", WHITE), 120, 150)
    read = reader.read(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), region="br")
    assert read is not None and read.normalised == "HPT2468"


def test_empty_image_is_a_clear_error(reader: PlateReader) -> None:
    with pytest.raises(ValueError, match="not an image"):
        reader.read(np.zeros((0, 0, 3), np.uint8))


def test_unknown_region_is_rejected(reader: PlateReader) -> None:
    with pytest.raises(ValueError, match="unknown plate region 'xx'"):
        reader.read(_scene(1), region="xx")


def test_missing_models_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"recognizers\.json not found"):
        PlateReader(model_dir=tmp_path)
    assert issubclass(ModelNotFoundError, RuntimeError)


# --------------------------------------------------------------------------- grammar


def _frames(spec: list[dict[str, float]]) -> np.ndarray:
    """A reduced probability matrix: one row per frame; '_' is the CTC blank."""
    rows = []
    for frame in spec:
        row = np.full(1 + len(PLATE_CHARS), 1e-4)
        for ch, p in frame.items():
            row[0 if ch == "_" else 1 + PLATE_CHARS.index(ch)] = p
        rows.append(row / row.sum())
    return np.array(rows)


def _plain(text: str) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for ch in text:
        out += [{ch: 1.0}, {"_": 1.0}]
    return out


def test_grammar_resolves_o_and_0_by_position() -> None:
    # "0" looks likelier than "O" in a letter position, "O" likelier than "0" in a digit position.
    spec = _plain("AB") + [{"0": 0.6, "O": 0.4}, {"_": 1.0}] + [{"O": 0.55, "0": 0.45}, {"_": 1.0}] + _plain("234")
    best = PlateGrammar.for_region("br").decode(_frames(spec))[0]
    assert best.plate == "ABO0234"
    assert best.text == "ABO-0234"


def test_grammar_resolves_i_and_1_by_position() -> None:
    spec = _plain("QR") + [{"1": 0.7, "I": 0.3}, {"_": 1.0}] + [{"I": 0.6, "1": 0.4}, {"_": 1.0}] + _plain("987")
    assert PlateGrammar.for_region("br").decode(_frames(spec))[0].plate == "QRI1987"


def test_grammar_skips_an_emblem_between_groups() -> None:
    # A coat of arms between "RK" and "346" reads as a stray "E": the layout skips it as junk.
    spec = _plain("RK") + [{"E": 0.9}, {"_": 1.0}] + _plain("346AL")
    best = PlateGrammar.for_region("eu").decode(_frames(spec))[0]
    assert best.plate == "RK346AL"
    assert best.junk == 1


def test_confident_lookalike_letter_yields_to_a_digit_position() -> None:
    # The recogniser is sure of "O" and "B" where the Brazilian layout wants digits: the
    # position decides, instead of a fallback layout keeping the letters.
    spec = _plain("ABC") + [{"O": 0.97, "0": 0.01}, {"_": 1.0}] + _plain("1") + [{"B": 0.97, "8": 0.01}, {"_": 1.0}]
    spec += _plain("2")
    best = PlateGrammar.for_region("br").decode(_frames(spec))[0]
    assert best.plate == "ABC0182"
    assert best.confidence > 0.3


def test_a_footed_one_read_as_j_yields_to_a_digit_position() -> None:
    # Missouri's LLN-LNL with its 1 read as a sure J: the layout takes the 1, not the fallback's J.
    spec = _plain("UH") + [{"J": 0.95, "1": 0.02}, {"_": 1.0}] + _plain("F0F")
    best = PlateGrammar.for_region("us").decode(_frames(spec))[0]
    assert best.plate == "UH1F0F"
    assert not best.fallback


def test_punctuation_lookalikes_feed_plate_characters() -> None:
    alphabet = "0123456789|$ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    raw = np.full((3, 1 + len(alphabet)), 1e-4)
    raw[0, 1 + alphabet.index("|")] = 1.0     # a narrow 1 read as a bar
    raw[1, 0] = 1.0
    raw[2, 1 + alphabet.index("$")] = 1.0     # an S read as a dollar sign
    reduced = reduce_probabilities(raw, alphabet)
    assert reduced[0, 1 + PLATE_CHARS.index("1")] > 0.9
    assert reduced[0, 1 + PLATE_CHARS.index("I")] > 0.9
    assert reduced[2, 1 + PLATE_CHARS.index("S")] > 0.9
    assert raw_reading(raw, alphabet) == "|$"


@pytest.mark.parametrize("raw, overlay", [
    ("2014-06-17", True), ("17.06.2014", True), ("014-05-12", True), ("2014-05", True), ("12:30", True),
    ("ABC-1234", False), ("RK-857AI", False), ("8FV-4801", False), ("2014-567", False), ("7ABC123", False),
    ("3B9 : 7236", False), ("12:75", False),
])
def test_camera_timestamps_are_not_plates(raw: str, overlay: bool) -> None:
    assert looks_like_overlay(raw) is overlay


def test_a_bar_shaped_i_at_the_end_belongs_to_the_row() -> None:
    """I (and 1 in many typefaces) is a solid bar: it used to fail the blob fill test and be cut off."""
    img = np.full((200, 500), 230, np.uint8)
    cv2.putText(img, "RK857AI", (40, 120), cv2.FONT_HERSHEY_SIMPLEX, 2.0, 20, 6)
    ink = np.where((img < 128).any(axis=0))[0]
    row = find_text_rows(img)[0]
    assert row.count == 7
    assert row.box[0] + row.box[2] >= ink.max()


@pytest.mark.parametrize("y, expected", [(0, None), (200, "2024051")])
def test_digits_burned_in_at_the_frame_edge_are_a_timestamp(reader: PlateReader, y: int, expected: str | None) -> None:
    """The same digits read as a plate in mid-frame, and as the camera's timestamp at the top edge."""
    scene = np.full((480, 640, 3), 90, np.uint8)
    cv2.rectangle(scene, (10, y), (260, y + 36), (0, 0, 0), -1)
    cv2.putText(scene, "2024051", (16, y + 30), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 3, cv2.LINE_AA)
    read = reader.read(scene, region="us")
    assert (read.normalised if read else None) == expected


def _row(x: int, y: int, h: int) -> TextRow:
    return TextRow(box=(x, y, 5 * h, h), angle=0.0, char_height=float(h), count=5, score=1.0)


@pytest.mark.parametrize("other, expected", [
    (_row(300, 12, 15), True),     # the time beside the date on the timestamp line
    (_row(300, 20, 15), False),    # half a character lower: another line
    (_row(300, 10, 30), False),    # twice as tall: a plate, not the overlay
    (_row(300, 400, 15), False),
])
def test_pieces_of_a_timestamp_line(other: TextRow, expected: bool) -> None:
    assert same_line(_row(10, 10, 15), other) is expected


def test_row_crop_pads_with_plate_tone_not_the_frame() -> None:
    # A light plate with dark characters and a dark frame bar just left of them.
    grey = np.full((100, 300), 200, np.uint8)
    for i in range(5):
        grey[30:70, 60 + 40 * i: 80 + 40 * i] = 20
    grey[20:80, 40:48] = 0
    row = TextRow(box=(60, 30, 180, 40), angle=0.0, char_height=40.0, count=5, score=1.0)
    real, _ = row_crop(grey, row, 1.0, pad_x=1.0, pad_y=0.1, real_x=None)
    synthetic, box = row_crop(grey, row, 1.0, pad_x=1.0, pad_y=0.1, real_x=0.12)
    assert real.shape == synthetic.shape
    assert real[:, 15:35].min() == 0             # the frame bar is in the plain crop ...
    assert synthetic[:, :32].min() == 200        # ... and replaced by the plate's tone here
    assert box[0] >= 50


def test_configured_patterns_extend_or_create_regions() -> None:
    grammar = PlateGrammar.for_region("cz", {"cz": ["NLL-NNNN"]})
    spec = _plain("5A") + [{"8": 0.6, "B": 0.4}, {"_": 1.0}] + _plain("1234")
    assert grammar.decode(_frames(spec))[0].plate == "5AB1234"
    extended = PlateGrammar.for_region("br", {"br": ["LL-NNNN"]})
    assert extended.decode(_frames(_plain("QR9876")))[0].plate == "QR9876"
    assert compile_layout("N[AB]N NNNN").allowed[1] == "AB"
    with pytest.raises(ValueError, match="cannot parse"):
        compile_layout("LL_NNN")
    with pytest.raises(ValueError, match="unknown plate region"):
        PlateGrammar.for_region("nowhere")


def test_rarer_layout_loses_a_close_call_but_reads_its_own_plates() -> None:
    grammar = PlateGrammar.for_region("x", {"x": ["LLL-NNNN", "LLLNLNN?"]})
    assert not compile_layout("LLLNLNN?").fallback and compile_layout("LLLNLNN?").penalty > 0
    # A bar between 6 and 57 that reads more like I than 1: the commoner all-digit layout wins ...
    spec = _plain("OUG6") + [{"I": 0.7, "1": 0.3}, {"_": 1.0}] + _plain("57")
    best = grammar.decode(_frames(spec))[0]
    assert best.plate == "OUG6157" and not best.fallback
    # ... while a letter that no digit looks like keeps the rarer layout.
    best = grammar.decode(_frames(_plain("BRA2E19")))[0]
    assert best.plate == "BRA2E19" and not best.fallback


def test_fallback_layout_reads_vanity_plates() -> None:
    best = PlateGrammar.for_region("us").decode(_frames(_plain("GOHAWKS")))[0]
    assert best.plate == "GOHAWKS"


# --------------------------------------------------------------------------- consolidation


def _read(plate: str, confidence: float) -> PlateRead:
    return PlateRead(text=plate, normalised=plate, confidence=confidence, box=(0, 0, 10, 5), crop=None,
                     timings={"total": 1.0}, region="eu")


def test_consolidation_outvotes_an_ocr_slip() -> None:
    c = PlateConsolidator(accept_confidence=0.95, max_frames=5)
    for read in (_read("AB123CD", 0.8), _read("A8123CD", 0.84), _read("AB123CD", 0.75), None):
        c.add(read)
        assert not c.done
    result = c.result()
    assert result is not None and result.normalised == "AB123CD"


def test_consolidation_keeps_apart_a_different_vehicle_text() -> None:
    c = PlateConsolidator(accept_confidence=0.99, max_frames=4)
    for read in (_read("XY987ZZ", 0.9), _read("AB123CD", 0.7), _read("AB123CD", 0.7), _read("AB128CD", 0.6)):
        c.add(read)
    assert c.done  # max_frames reached
    result = c.result()
    assert result is not None and result.normalised == "AB123CD"


def test_consolidation_stops_early_when_confident() -> None:
    c = PlateConsolidator(accept_confidence=0.85, max_frames=5)
    c.add(_read("AB123CD", 0.7))
    assert not c.done
    c.add(_read("AB123CD", 0.93))
    assert c.done
    result = c.result()
    assert result is not None and result.normalised == "AB123CD" and result.confidence >= 0.85


# --------------------------------------------------------------------------- one row's views pooled


def _decoded(plate: str, confidence: float, *, fallback: bool = False) -> Decoded:
    return Decoded(plate, plate, "test", 0.0, (confidence,) * len(plate), fallback=fallback)


def test_views_that_each_hesitate_on_another_glyph_pool_into_the_plate() -> None:
    # Four views of one plate: each reads it whole but one glyph is a near tie, and the grammar's
    # reading goes the other way on three of them. By string none of the readings has half the votes.
    read = [
        (_decoded("00256M1", 0.66), matrix("00256M1", {})),
        (_decoded("0O256M1", 0.60), matrix("00256M1", {1: {"O": 0.5, "0": 0.45}})),
        (_decoded("00256N1", 0.61), matrix("00256M1", {5: {"N": 0.5, "M": 0.45}})),
        (_decoded("0O256M1", 0.62), matrix("00256M1", {1: {"O": 0.5, "0": 0.45}})),
    ]
    by_string: dict[str, float] = {}
    for decoded, _ in read:
        by_string[decoded.plate] = by_string.get(decoded.plate, 0.0) + decoded.confidence
    assert max(by_string.values()) / len(read) < 0.5
    pooled = pooled_votes(read)
    assert max(pooled, key=lambda p: pooled[p]) == "00256M1"
    assert pooled["00256M1"] / len(read) >= 0.55
    assert all(pooled[p] <= pooled["00256M1"] for p in pooled)


def test_pooling_keeps_apart_views_that_read_different_text_and_keeps_the_fallback_weight() -> None:
    read = [
        (_decoded("AB123CD", 0.9), matrix("AB123CD", {})),
        (_decoded("XY987ZZ", 0.8), matrix("XY987ZZ", {})),
        (_decoded("NICE1", 0.9, fallback=True), matrix("NICE1", {})),
    ]
    pooled = pooled_votes(read)
    assert pooled["AB123CD"] == pytest.approx(0.9, abs=0.01)     # the other text lends it nothing
    assert pooled["XY987ZZ"] == pytest.approx(0.8, abs=0.01)
    assert pooled["NICE1"] == pytest.approx(0.9 * 0.7, abs=0.01)  # FALLBACK_WEIGHT
    one = [(_decoded("AB123CD", 0.9), matrix("AB123CD", {}))] * 2
    assert pooled_votes(one) == pytest.approx({"AB123CD": 1.8})  # one reading: the string votes


@pytest.mark.parametrize("reading, confidence, fallback, bonus, settled", [
    ("OO2S6M", 0.71, False, 0.15, False),   # a plate box's bonus alone does not settle an unsure row
    ("AB123CD", 0.85, False, 0.0, True),
    ("AB123CD", 0.85, False, 0.15, True),
    ("NICE1", 0.95, True, 0.15, True),      # a sure personalised plate in a plate box, as before
    ("NICE1", 0.95, True, 0.0, False),      # ... and not outside one (0.7 of its confidence)
])
def test_one_view_settles_a_row_only_when_its_reading_is_sure(
    reading: str, confidence: float, fallback: bool, bonus: float, settled: bool,
) -> None:
    from gatekeeper.vision.votes import RowCandidate

    candidate = RowCandidate(TextRow((0, 0, 60, 12), 0.0, 10.0, 6, 1.0), 0, bonus=bonus)
    candidate.add(_decoded(reading, confidence, fallback=fallback), np.zeros((12, 60), np.uint8), (0, 0, 60, 12),
                  matrix(reading, {}))
    assert candidate.settled() is settled


def test_consolidation_without_reads_gives_none() -> None:
    c = PlateConsolidator(max_frames=2)
    c.add(None)
    assert c.result() is None and not c.done
    c.add(None)
    assert c.done and c.result() is None


# --------------------------------------------------------------------------- CLI


def _gatekeeper_command() -> list[str]:
    script = Path(sys.executable).with_name("gatekeeper")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gatekeeper.cli.read"]


def test_read_command_prints_one_json_line_per_image_and_reports_corrupt_files(tmp_path: Path) -> None:
    image, _ = _place(_scene(3), _plate("JKL-4321", WHITE), 100, 220)
    good = tmp_path / "car.png"
    cv2.imwrite(str(good), image)
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), _scene(4))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    env = {k: v for k, v in os.environ.items() if k != "GATEKEEPER_CONFIG" and not k.startswith("GATEKEEPER_ANPR")}
    proc = subprocess.run(
        [*_gatekeeper_command(), "read", "--json", "--region", "br", str(good), str(corrupt), str(empty)]
        if "gatekeeper.cli.read" not in _gatekeeper_command()
        else [*_gatekeeper_command(), "--json", "--region", "br", str(good), str(corrupt), str(empty)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1, proc.stderr
    assert [line["image"] for line in lines] == [str(good), str(corrupt), str(empty)]
    assert lines[0]["plate"] == "JKL4321" and lines[0]["ms"] > 0 and len(lines[0]["box"]) == 4
    assert set(lines[0]) == {"image", "plate", "confidence", "ms", "box"}
    assert "error" in lines[1] and "decodable" in lines[1]["error"]
    assert lines[2]["plate"] == "" and lines[2]["box"] is None
    assert "corrupt.jpg" in proc.stderr


def test_a_sure_first_row_spares_the_other_candidates(reader: PlateReader) -> None:
    """A clear plate that is the most plate-like row is read from one crop, not four."""
    from gatekeeper.sim.plates import draw_plate_scene

    inner = reader.recognizer
    crops_read: list[int] = []

    class Counting:
        alphabet, input_height = inner.alphabet, inner.input_height

        def probabilities(self, crops):  # type: ignore[no-untyped-def]
            crops_read.append(len(crops))
            return inner.probabilities(crops)

        def close(self) -> None: ...

    counted = PlateReader(region="eu", recognizer=Counting(), min_confidence=0.5)
    image = draw_plate_scene("KA 482 BD", seed=5)
    cv2.putText(image, "AUTO HAUS 24", (180, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3, cv2.LINE_AA)
    assert len(find_text_rows(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))) > 1, "the scene offers other rows too"
    crops_read.clear()   # the reader's own warm-up
    read = counted.read(image)
    assert read is not None and read.normalised == "KA482BD" and read.confidence >= 0.9
    assert crops_read == [1]


def test_the_shared_reader_hands_out_reads_down_to_the_lowest_lane_floor() -> None:
    """One reader serves every lane; each lane keeps its own floor (entry 0.2, exit 0.5 by default)."""
    from gatekeeper.config import AnprConfig
    from gatekeeper.lane.runner import lane_min_confidence

    anpr = AnprConfig(plate_detector=False)
    with PlateReader.from_config(anpr) as reader:
        assert reader.min_confidence == anpr.entry_min_confidence == 0.2
    assert (lane_min_confidence(anpr, "entry"), lane_min_confidence(anpr, "exit")) == (0.2, 0.5)
    with PlateReader.from_config(AnprConfig(plate_detector=False, entry_min_confidence=0.7)) as reader:
        assert reader.min_confidence == 0.5
