"""Synthetic plate text lines for fine-tuning the recogniser.

Each sample looks like what :func:`gatekeeper.vision.plate_finder.row_crop` hands the recogniser
on a real photo: one deskewed plate text line, tight above and below, a little real
context at the ends (frame edge, bolt, a sliver of the state name) and plain plate
tone beyond, after the same contrast stretch. What varies is what varies on plates:
typeface (condensed gothics, DIN-like, Mercosur-like), stroke weight, condensing,
separators and emblems between groups, polarity, blur, resolution, JPEG, noise,
shading, small rotation and shear.

Fonts: any ``*.ttf``/``*.otf`` under the folders given (see training/README.md for
where the ones used came from), plus the DejaVu faces Debian ships.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

DIGITS = string.digits
LETTERS = string.ascii_uppercase

#: Layouts to draw text from (``L`` letter, ``N`` digit, ``A`` either, ``-`` a group break).
LAYOUTS = [
    # us
    "NLLL-NNN", "LLL-NNNN", "LLL-NNN", "NNN-LLL", "LL-NNNNN", "LLN-LNL", "LL-NNNN", "NNNNNNN", "NNN-NNN",
    "LLN-NLL", "NLL-NNN", "NN-LLNN", "LLLL-NN", "LNN-LLL", "NLLNNNN",
    # eu
    "LL-NNN-LL", "LL-NNNN-LL", "LL-NNN-L", "LL-NNNNN", "LLL-NNNNN", "LL-NNNLL", "NNNN-LLL", "LLNN-LLL",
    "NLNNNNN", "L-LL-NNNN", "LL-LL-NNNN", "LLL-L-NNN", "NLL-NNNN",
    # br
    "LLL-NNNN", "LLLNLNN",
    # free
    "AAAAA", "AAAAAA", "AAAAAAA", "AAAA",
]

#: Characters the recogniser confuses on plate typefaces: drawn more often.
HARD = "WMHNQODUK0871I4AVYXZ2S5B8G6"


def plate_text(rng: random.Random) -> list[str]:
    """A list of groups, e.g. ``["ABC", "1234"]``."""
    layout = rng.choice(LAYOUTS)
    groups = []
    for part in layout.split("-"):
        chars = []
        for slot in part:
            pool = {"L": LETTERS, "N": DIGITS, "A": LETTERS + DIGITS}[slot]
            if rng.random() < 0.35:
                hard = [c for c in HARD if c in pool]
                chars.append(rng.choice(hard))
            else:
                chars.append(rng.choice(pool))
        groups.append("".join(chars))
    return groups


def find_fonts(folders: list[Path]) -> list[Path]:
    fonts: list[Path] = []
    for folder in folders:
        fonts += sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    fonts = [p for p in fonts if "Oblique" not in p.name and "Italic" not in p.name and "ExtraLight" not in p.name
             and "Math" not in p.name]
    if not fonts:
        raise SystemExit("no fonts found")
    return fonts


@dataclass
class Sample:
    image: np.ndarray   # grey uint8, any width, height of the crop
    label: str          # letters and digits only


class PlateSynth:
    """Plate text lines as the reader crops them.

    ``second_camera`` is the share of lines that also pass through what an exit camera adds
    to a photo the entry camera took well: motion blur at an angle, defocus, an exposure
    curve, a second JPEG (see :meth:`_second_camera`). 0 (the default) draws exactly the lines
    the shipped ``plate_g2`` was trained on.
    """

    def __init__(self, fonts: list[Path], seed: int = 0, *, second_camera: float = 0.0) -> None:
        self.fonts = fonts
        self.rng = random.Random(seed)
        self.second_camera = second_camera
        self._cache: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}

    def _font(self, path: Path, size: int) -> ImageFont.FreeTypeFont:
        key = (path, size)
        if key not in self._cache:
            self._cache[key] = ImageFont.truetype(str(path), size)
        return self._cache[key]

    def _glyph_line(self, groups: list[str], font: ImageFont.FreeTypeFont, cap: int, condense: float,
                    spacing: float, sep: str) -> tuple[np.ndarray, int, int]:
        """Ink mask (float 0..1) of the line at cap height ``cap``; returns mask, text top, text bottom."""
        pieces: list[np.ndarray] = []
        gap = max(1, int(spacing * cap))
        for gi, group in enumerate(groups):
            if gi:
                pieces.append(self._separator(sep, cap, font))
            for ch in group:
                box = font.getbbox(ch)
                w = box[2] - box[0]
                canvas = Image.new("L", (w + 4, cap * 2), 0)
                # One baseline for all glyphs: the top of "H" lands at cap // 2.
                ImageDraw.Draw(canvas).text((2 - box[0], cap // 2 - font.getbbox("H")[1]), ch, font=font, fill=255)
                glyph = np.asarray(canvas, dtype=np.float32) / 255.0
                nw = max(2, int(round(glyph.shape[1] * condense)))
                glyph = cv2.resize(glyph, (nw, glyph.shape[0]), interpolation=cv2.INTER_AREA)
                pieces.append(glyph)
                pieces.append(np.zeros((cap * 2, gap), np.float32))
        line = np.hstack(pieces[:-1]) if pieces else np.zeros((cap * 2, 8), np.float32)
        return line, cap // 2, cap // 2 + cap

    def _separator(self, sep: str, cap: int, font: ImageFont.FreeTypeFont) -> np.ndarray:
        rng = self.rng
        width = int(cap * {"": 0.15, " ": rng.uniform(0.3, 0.6), "-": 0.5, "dot": 0.4, "emblem": 0.9}[sep])
        piece = np.zeros((cap * 2, max(width, 1)), np.float32)
        mid = cap // 2 + cap // 2
        if sep == "-":
            t = max(1, int(cap * rng.uniform(0.08, 0.14)))
            cv2.rectangle(piece, (int(width * 0.15), mid - t // 2), (int(width * 0.85), mid + t // 2), 1.0, -1)
        elif sep == "dot":
            r = max(1, int(cap * rng.uniform(0.06, 0.1)))
            cv2.circle(piece, (width // 2, mid), r, 1.0, -1)
        elif sep == "emblem":
            kind = rng.random()
            c = (width // 2, mid)
            size = int(cap * rng.uniform(0.2, 0.4))
            if kind < 0.4:   # star
                pts = []
                for k in range(10):
                    rad = size if k % 2 == 0 else size * 0.45
                    ang = -np.pi / 2 + k * np.pi / 5
                    pts.append((c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)))
                cv2.fillPoly(piece, [np.array(pts, np.int32)], 1.0)
            elif kind < 0.7:  # sticker / seal: a blob with texture
                cv2.ellipse(piece, c, (size, int(size * rng.uniform(1.0, 2.0))), 0, 0, 360, rng.uniform(0.4, 1.0), -1)
            else:            # small stacked text, like "NY" or a county name
                for k in range(rng.randint(2, 4)):
                    y = int(cap * 0.5 + k * cap * 0.3)
                    cv2.line(piece, (int(width * 0.2), y + cap // 2), (int(width * 0.8), y + cap // 2),
                             rng.uniform(0.3, 0.8), max(1, cap // 12))
        return piece

    def _second_camera(self, small: np.ndarray, cap: float) -> np.ndarray:
        """What a second camera adds: one or more of motion blur, defocus, an exposure curve.

        Sizes are in photo pixels, where characters are ``cap`` px high: an exit camera's
        motion blur of 3-13 px (a 1920-wide frame) at up to 30 degrees off horizontal, capped at
        half a character's height (beyond that nobody reads it); defocus sigma 0.5-2.2 (at most
        cap/12) px; gamma 0.55-1.8, gain 0.6-1.35 and an offset of +-25 grey levels, then JPEG again.
        """
        rng = self.rng
        ops = [op for op in ("motion", "defocus", "light") if rng.random() < 0.5] or [
            rng.choice(("motion", "defocus", "light"))]
        img = small.astype(np.float32)
        for op in ops:
            if op == "motion":
                length = int(round(min(rng.uniform(3, 13), max(2.0, cap / 2))))
                if length >= 2:
                    kernel = np.zeros((length, length), np.float32)
                    kernel[length // 2, :] = 1.0 / length
                    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(-30, 30), 1.0)
                    kernel = cv2.warpAffine(kernel, rot, (length, length))
                    img = cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6),
                                       borderType=cv2.BORDER_REPLICATE)
            elif op == "defocus":
                img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, min(2.2, max(0.6, cap / 12))))
            else:
                gamma, gain, bias = rng.uniform(0.55, 1.8), rng.uniform(0.6, 1.35), rng.uniform(-25, 25)
                img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma * gain + bias
        out = np.clip(img, 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 90])
        return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else out

    def sample(self) -> Sample:
        rng = self.rng
        groups = plate_text(rng)
        label = "".join(groups)
        font_path = rng.choice(self.fonts)
        cap = 48
        font = self._font(font_path, int(cap * 1.4))
        # Scale so that capital height is ~cap.
        box = font.getbbox("H")
        real_cap = box[3] - box[1]
        if real_cap <= 0:
            real_cap = cap
        font = self._font(font_path, max(8, int(cap * 1.4 * cap / real_cap)))
        condense = rng.choice([rng.uniform(0.55, 0.85), rng.uniform(0.8, 1.15)])
        spacing = rng.uniform(0.02, 0.25)
        sep = rng.choice(["", " ", " ", "-", "dot", "emblem"])
        ink, top, bottom = self._glyph_line(groups, font, cap, condense, spacing, sep)
        # Stroke weight.
        k = rng.random()
        if k < 0.2:
            ink = cv2.dilate(ink, np.ones((3, 3), np.uint8))
        elif k < 0.3:
            ink = cv2.erode(ink, np.ones((2, 2), np.uint8))

        pad_y = rng.uniform(0.03, 0.35)
        real_x = rng.uniform(0.05, 0.3)
        y0 = max(0, int(top - pad_y * cap))
        y1 = min(ink.shape[0], int(bottom + pad_y * cap))
        # Real context at the ends: the line itself is padded with real_x of plate, then frame bits.
        margin = int(real_x * cap)
        h_full = ink.shape[0]
        ink = np.hstack([np.zeros((h_full, margin), np.float32), ink, np.zeros((h_full, margin), np.float32)])
        context = np.zeros_like(ink)
        # Distractors: text above/below (state name, slogan), frame edge, bolts.
        if rng.random() < 0.5:
            band_y = top - int(cap * rng.uniform(0.25, 0.45)) if rng.random() < 0.5 else bottom + int(cap * rng.uniform(0.1, 0.3))
            x = rng.randint(0, max(1, ink.shape[1] // 3))
            while x < ink.shape[1]:
                w = rng.randint(cap // 8, cap // 4)
                cv2.rectangle(context, (x, band_y - cap // 8), (x + w, band_y + cap // 8), rng.uniform(0.4, 1.0), -1)
                x += w + rng.randint(1, cap // 6)
        if rng.random() < 0.3:
            side = rng.choice([0, ink.shape[1] - 1])
            t = rng.randint(1, max(2, cap // 10))
            cv2.line(context, (side, 0), (side, h_full), 1.0, t)
        if rng.random() < 0.2:
            cv2.circle(context, (rng.randint(0, ink.shape[1]), rng.choice([top - cap // 5, bottom + cap // 5])),
                       cap // 10, 1.0, -1)
        ink = np.maximum(ink, context)
        ink = ink[y0:y1]

        # Tones: plate and ink.
        if rng.random() < 0.8:
            bg, fg = rng.uniform(140, 255), rng.uniform(0, 90)
        else:
            bg, fg = rng.uniform(0, 90), rng.uniform(150, 255)
        h, w = ink.shape
        plate = np.full((h, w), bg, np.float32)
        if rng.random() < 0.5:  # shading gradient
            gx = np.linspace(0, 1, w)[None, :] * rng.uniform(-50, 50)
            gy = np.linspace(0, 1, h)[:, None] * rng.uniform(-30, 30)
            plate = plate + gx + gy
        if rng.random() < 0.3:  # texture (Mercosur pattern, reflective sheeting)
            noise = cv2.GaussianBlur(np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2)
            plate = plate + noise * rng.uniform(5, 25)
        img = plate * (1 - ink) + fg * ink

        # Geometry: small rotation and shear, as a deskew leaves them.
        if rng.random() < 0.6:
            ang = rng.uniform(-3, 3)
            shear = rng.uniform(-0.15, 0.15)
            m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
            m[0, 1] += shear
            m[0, 2] -= shear * h / 2
            img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)

        # Resolution: characters 10..50 px high in the photo, blur, noise, JPEG.
        target_cap = rng.choice([rng.uniform(10, 22), rng.uniform(18, 50)])
        s = target_cap / cap
        small = cv2.resize(img, (max(4, int(w * s)), max(4, int(h * s))), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.7:
            small = cv2.GaussianBlur(small, (0, 0), rng.uniform(0.3, 1.3))
        if rng.random() < 0.2:  # horizontal motion blur
            k = rng.randint(2, 4)
            small = cv2.filter2D(small, -1, np.ones((1, k), np.float32) / k)
        small = small + np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, rng.uniform(0, 8), small.shape)
        small = np.clip(small, 0, 255).astype(np.uint8)
        if rng.random() < 0.7:
            ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(25, 90)])
            small = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        if self.second_camera and rng.random() < self.second_camera:
            small = self._second_camera(small, target_cap)
        # Plain plate tone beyond the real context, as the reader pads.
        pad = int(rng.uniform(0.3, 0.9) * target_cap)
        tone = int(np.median(small))
        small = cv2.copyMakeBorder(small, 0, 0, pad, pad, cv2.BORDER_CONSTANT, value=tone)
        # Same contrast stretch as the reader.
        lo, hi = np.percentile(small, (5, 95))
        small = np.clip((small.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)
        return Sample(small, label)
