"""Synthetic street scenes with plates, for training the plate detector.

Each sample is a grey patch as the detector sees a frame (already brought down to its
working size) and a mask of where plates are. Nothing here comes from a photo: the
backgrounds are drawn (road, sky, kerbs, car bodies with grilles, lights and windows,
signs and shop fronts with text, a camera's burned-in timestamp, foliage-like noise),
the plates are drawn in US (2:1, state name and slogan), EU (4.7:1, blue strip) and
Brazilian (3:1, Mercosur band or old grey) styles with characters from
:mod:`training.plate_synth` (same layouts and typefaces as the recogniser's training),
often mounted in a dealer frame or a bumper recess (warped with the plate, not labelled),
and then warped in perspective and spoilt as cameras spoil them (blur, motion, glare,
exposure, noise, JPEG). Plates span 18..440 px of a 960 px-wide working frame: a
40x20 px plate in 1920x1080 up to half the frame.

Text on signs and timestamps is the detector's hardest negative: it is drawn with the
same typefaces as the plates, so the detector must learn the plate itself (a bright or
dark panel of one tone with a border, characters of one height across most of it).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.plate_synth import LAYOUTS, PlateSynth, plate_text

#: The detector's output stride: the mask is this much smaller than the patch.
STRIDE = 4

WORDS = ["PARKING", "EXIT", "STOP", "ONE WAY", "NO ENTRY", "SALE", "OPEN", "CAFE", "PHARMACY", "HOTEL", "BANK",
         "TAXI", "BUS", "SLOW", "P", "24H", "ENTRANCE", "PAY HERE", "TOYOTA", "FORD", "SERVICE", "TIRES", "SHOP",
         "MARKET", "GARAGE", "LEVEL 2", "RESERVED", "VISITORS", "SPEED LIMIT 25", "AUTO", "DEALER", "CITY"]
STATES = ["CALIFORNIA", "TEXAS", "NEW YORK", "FLORIDA", "ARIZONA", "OHIO", "ILLINOIS", "GEORGIA", "NEVADA",
          "OREGON", "VIRGINIA", "MICHIGAN", "COLORADO", "UTAH", "Maryland", "Texas", "New Jersey"]
SLOGANS = ["SUNSHINE STATE", "EMPIRE STATE", "GRAND CANYON STATE", "dmv.ca.gov", "THE LONE STAR STATE",
           "LAND OF LINCOLN", "GARDEN STATE", "PEACH STATE"]
DEALERS = ["TOYOTA OF HOLLYWOOD", "HONDA WORLD", "DRIVE SAFE", "CARMAX", "SUBARU", "FORD COUNTRY", "AUTONATION",
           "www.bestautos.com", "LAKESIDE MOTORS", "I'D RATHER BE FISHING", "VALLEY CHEVROLET", "UNIVERSITY OF TEXAS",
           "NISSAN", "BMW OF SAN DIEGO", "855-555-0142", "ARMY", "MOTORS", "HYUNDAI"]
CITIES = ["SAO PAULO", "RIO DE JANEIRO", "CURITIBA", "BELO HORIZONTE", "PORTO ALEGRE", "RECIFE"]


class SceneSynth:
    """Draws (patch, mask) pairs; seeded, so a run is reproducible."""

    def __init__(self, fonts: list[Path], *, seed: int = 0, size: int = 256, photos: list[Path] | None = None) -> None:
        self.rng = random.Random(seed)
        # Public-domain / CC0 photos (scikit-image's sample data, see training/README.md): real textures.
        self.photos = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(photos or [])]
        self.photos = [p.astype(np.float32) for p in self.photos if p is not None]
        self.np_rng = np.random.default_rng(seed)
        self.size = size
        self.fonts = fonts
        self.plates = PlateSynth(fonts, seed=seed + 1)
        self._fonts: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}

    # ----------------------------------------------------------------- helpers
    def _font(self, size: int) -> ImageFont.FreeTypeFont:
        path = self.rng.choice(self.fonts)
        size = int(np.clip(size, 6, 300))
        key = (path, size)
        if key not in self._fonts:
            if len(self._fonts) > 400:
                self._fonts.clear()
            self._fonts[key] = ImageFont.truetype(str(path), size)
        return self._fonts[key]

    def _text(self, img: np.ndarray, text: str, xy: tuple[int, int], height: int, tone: float) -> None:
        """Draw ``text`` with a random typeface into a float image, cap height ~``height``."""
        if height < 4:
            return
        font = self._font(int(height * 1.35))
        box = font.getbbox(text)
        w, h = box[2] - box[0] + 4, box[3] - box[1] + 4
        if w <= 0 or h <= 0 or w > 4000:
            return
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).text((2 - box[0], 2 - box[1]), text, font=font, fill=255)
        ink = np.asarray(canvas, np.float32) / 255.0
        self._blend(img, ink, xy, tone)

    @staticmethod
    def _blend(img: np.ndarray, ink: np.ndarray, xy: tuple[int, int], tone: float) -> None:
        x, y = xy
        H, W = img.shape
        h, w = ink.shape
        x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
        if x1 <= x0 or y1 <= y0:
            return
        a = ink[y0 - y: y1 - y, x0 - x: x1 - x]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + tone * a

    # ----------------------------------------------------------------- background
    def background(self, H: int, W: int) -> np.ndarray:
        rng = self.rng
        img = np.empty((H, W), np.float32)
        horizon = rng.uniform(-0.2, 0.7) * H
        sky, road = rng.uniform(60, 250), rng.uniform(30, 170)
        yy = np.arange(H, dtype=np.float32)[:, None]
        img[:] = np.where(yy < horizon, sky, road + (yy - horizon) / H * rng.uniform(-40, 40))
        if self.photos and rng.random() < 0.5:
            photo = rng.choice(self.photos)
            z = rng.uniform(0.4, 2.5)
            photo = cv2.resize(photo, None, fx=z, fy=z, interpolation=cv2.INTER_AREA if z < 1 else cv2.INTER_LINEAR)
            reps = (math.ceil(H / photo.shape[0]) + 1, math.ceil(W / photo.shape[1]) + 1)
            photo = np.tile(photo, reps)
            y0, x0 = rng.randint(0, photo.shape[0] - H), rng.randint(0, photo.shape[1] - W)
            img[:] = photo[y0: y0 + H, x0: x0 + W]
            if rng.random() < 0.5:
                img[:] = img[:, ::-1]
        # Texture: asphalt grain, foliage, walls.
        noise = self.np_rng.normal(0, 1, (H // 4 + 1, W // 4 + 1)).astype(np.float32)
        noise = cv2.resize(cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.5, 3)), (W, H))
        img += noise * rng.uniform(3, 25)
        for _ in range(rng.randint(3, 14)):
            self._thing(img)
        return img

    def _thing(self, img: np.ndarray) -> None:
        """One background object: building, window, pole, lane mark, sign, car, text, tree."""
        rng = self.rng
        H, W = img.shape
        kind = rng.random()
        x, y = rng.randint(-W // 4, W), rng.randint(-H // 4, H)
        w, h = int(W * rng.uniform(0.03, 0.6)), int(H * rng.uniform(0.03, 0.6))
        tone = rng.uniform(0, 255)
        if kind < 0.2:     # block: wall, window, door, shadow
            cv2.rectangle(img, (x, y), (x + w, y + h), tone, -1)
            if rng.random() < 0.4:   # window grid
                n = rng.randint(2, 8)
                for k in range(1, n):
                    cv2.line(img, (x + k * w // n, y), (x + k * w // n, y + h), rng.uniform(0, 255), rng.randint(1, 4))
        elif kind < 0.26:  # plate-shaped blank panel, or one with a logo: not a plate without characters
            pw = int(W * rng.uniform(0.04, 0.4))
            ph = max(4, int(pw / rng.uniform(1.8, 5)))
            cv2.rectangle(img, (x, y), (x + pw, y + ph), tone, -1)
            cv2.rectangle(img, (x, y), (x + pw, y + ph), rng.uniform(0, 255), max(1, ph // 15))
            if rng.random() < 0.4:
                cv2.ellipse(img, (x + pw // 2, y + ph // 2), (max(1, pw // 6), max(1, ph // 3)), 0, 0, 360,
                            rng.uniform(0, 255), max(1, ph // 10))
        elif kind < 0.3:   # pole / lane mark / kerb
            cv2.line(img, (x, y), (x + rng.randint(-W // 2, W // 2), y + rng.randint(-H, H)), tone, rng.randint(1, 12))
        elif kind < 0.55:  # sign or shop front with text: the hard negative
            th = int(np.clip(rng.lognormvariate(math.log(14), 0.7), 5, H // 3))
            text = rng.choice([rng.choice(WORDS), rng.choice(WORDS) + " " + rng.choice(WORDS),
                               "".join(plate_text(rng)), str(rng.randint(1, 99999)),
                               rng.choice(WORDS) + " " + str(rng.randint(1, 999))])
            bg = rng.uniform(0, 255)
            fg = (bg + rng.uniform(80, 175)) % 256
            panel_w = int(th * (0.7 * len(text) + rng.uniform(0.5, 2)))
            panel_h = int(th * rng.uniform(1.4, 3.5))
            if rng.random() < 0.7:
                cv2.rectangle(img, (x, y), (x + panel_w, y + panel_h), bg, -1)
            self._text(img, text, (x + th // 3, y + (panel_h - th) // 2), th, fg)
        elif kind < 0.75:  # another car, no plate visible (side view, far away)
            self._car_body(img, (x, y, w, max(8, h // 2)), with_plate_space=False)
        elif kind < 0.85:  # headlights / reflections
            cv2.ellipse(img, (x, y), (max(2, w // 8), max(2, h // 10)), rng.uniform(0, 180), 0, 360,
                        rng.uniform(200, 255), -1)
        elif kind < 0.93:  # stripes: grille, fence, railing, zebra crossing
            n = rng.randint(3, 15)
            t = rng.randint(1, 6)
            for k in range(n):
                yy = y + k * max(2, h // n)
                cv2.line(img, (x, yy), (x + w, yy), tone, t)
        else:              # tree / bush: blotchy texture
            blob = self.np_rng.normal(0, 1, (max(2, h // 6), max(2, w // 6))).astype(np.float32)
            blob = cv2.resize(blob, (max(2, w), max(2, h)))
            y0, x0 = max(0, y), max(0, x)
            y1, x1 = min(H, y + h), min(W, x + w)
            if y1 > y0 and x1 > x0:
                img[y0:y1, x0:x1] += blob[y0 - y: y1 - y, x0 - x: x1 - x] * rng.uniform(10, 40)

    def _car_body(self, img: np.ndarray, box: tuple[int, int, int, int], *, with_plate_space: bool) -> None:
        """A car's rear or front: body, bumper, lights, grille or window above the plate."""
        rng = self.rng
        x, y, w, h = box
        body = rng.uniform(10, 245)
        pts = np.array([[x, y + h], [x, y + h // 3], [x + w // 6, y], [x + 5 * w // 6, y], [x + w, y + h // 3],
                        [x + w, y + h]], np.int32)
        cv2.fillPoly(img, [pts], body)
        # Window (dark or sky reflection) in the upper part.
        if rng.random() < 0.8:
            cv2.rectangle(img, (x + w // 5, y + h // 12), (x + 4 * w // 5, y + h // 3), rng.uniform(10, 120), -1)
        # Lights.
        lt = rng.uniform(90, 255)
        lw, lh = max(2, w // 7), max(2, h // 9)
        for lx in (x + w // 20, x + w - w // 20 - lw):
            cv2.rectangle(img, (lx, y + int(h * 0.42)), (lx + lw, y + int(h * 0.42) + lh), lt, -1)
        # Bumper line and grille.
        cv2.line(img, (x, y + int(h * 0.8)), (x + w, y + int(h * 0.8)), body * rng.uniform(0.4, 1.2), max(1, h // 30))
        if not with_plate_space or rng.random() < 0.5:
            gy, gh = y + int(h * 0.45), max(3, int(h * 0.15))
            for k in range(rng.randint(2, 7)):
                yy = gy + k * max(2, gh // 4)
                cv2.line(img, (x + w // 3, yy), (x + 2 * w // 3, yy), rng.uniform(0, 255), max(1, h // 60))
        # Badge text or dealer sticker.
        if rng.random() < 0.4:
            th = max(4, int(h * rng.uniform(0.03, 0.07)))
            self._text(img, rng.choice(WORDS), (x + w // 2 - 2 * th, y + int(h * 0.38)), th, rng.uniform(0, 255))
        # Where US detections strayed: the bumper's lit edge with its shadow, exhausts, reflectors.
        if rng.random() < 0.5:
            by, bt = y + int(h * rng.uniform(0.7, 0.9)), max(2, int(h * rng.uniform(0.02, 0.08)))
            cv2.rectangle(img, (x, by), (x + w, by + bt), rng.uniform(150, 255), -1)
            cv2.rectangle(img, (x, by + bt), (x + w, by + 2 * bt), rng.uniform(0, 60), -1)
        if rng.random() < 0.4:
            ex = x + int(w * rng.choice([rng.uniform(0.1, 0.3), rng.uniform(0.7, 0.9)]))
            ey, ew = y + int(h * rng.uniform(0.88, 0.98)), max(2, int(w * rng.uniform(0.03, 0.08)))
            rim = (ew, max(1, int(ew * rng.uniform(0.4, 0.8))))
            cv2.ellipse(img, (ex, ey), rim, 0, 0, 360, rng.uniform(150, 240), -1)
            bore = (max(1, int(ew * 0.75)), max(1, int(ew * 0.45)))
            cv2.ellipse(img, (ex, ey), bore, 0, 0, 360, rng.uniform(0, 50), -1)
        if rng.random() < 0.3:
            rw, rh = max(2, w // 10), max(1, h // 30)
            ry = y + int(h * rng.uniform(0.75, 0.9))
            for rx in (x + w // 15, x + w - w // 15 - rw):
                cv2.rectangle(img, (rx, ry), (rx + rw, ry + rh), rng.uniform(40, 200), -1)

    # ----------------------------------------------------------------- plates
    def plate(self, width: int) -> np.ndarray:
        """A flat plate image (grey float32), ``width`` px wide, with its characters."""
        rng = self.rng
        style = rng.choice(["us", "us", "eu", "br_mercosur", "br_old", "plain"])
        aspect = {"us": 2.0, "eu": 4.6, "br_mercosur": 3.1, "br_old": 3.1, "plain": rng.uniform(1.8, 5.0)}[style]
        width = max(width, 24)
        height = max(8, int(width / aspect * rng.uniform(0.92, 1.08)))
        light = rng.random() < 0.85
        bg = rng.uniform(150, 250) if light else rng.uniform(10, 90)
        fg = rng.uniform(0, 90) if light else rng.uniform(160, 255)
        if style == "br_old":
            bg, fg = rng.uniform(120, 190), rng.uniform(0, 50)
        plate = np.full((height, width), bg, np.float32)
        if rng.random() < 0.5:   # background art (US scenic plates), sheeting texture
            art = self.np_rng.normal(0, 1, (4, 8)).astype(np.float32)
            plate += cv2.resize(art, (width, height), interpolation=cv2.INTER_CUBIC) * rng.uniform(5, 30)
        cap = height * {"us": 0.45, "eu": 0.7, "br_mercosur": 0.5, "br_old": 0.45, "plain": 0.6}[style]
        left = 0
        if style == "eu":   # blue country strip: darker band with two small letters
            left = int(width * 0.08)
            plate[:, :left] = rng.uniform(40, 100)
            self._text(plate, rng.choice(["D", "F", "SK", "PL", "CZ", "NL", "I", "E"]),
                       (left // 5, int(height * 0.55)), max(3, int(height * 0.2)), 230)
        elif style == "br_mercosur":
            band = int(height * 0.22)
            plate[:band] = rng.uniform(40, 110)
            self._text(plate, "BRASIL", (width // 2 - band, band // 6), max(3, int(band * 0.6)), 235)
        elif style == "br_old":
            self._text(plate, rng.choice(CITIES), (width // 5, int(height * 0.05)), max(3, int(height * 0.14)), fg)
        elif style == "us":
            self._text(plate, rng.choice(STATES), (int(width * rng.uniform(0.2, 0.35)), int(height * 0.05)),
                       max(3, int(height * rng.uniform(0.1, 0.18))), rng.uniform(0, 120) if light else 230)
            if rng.random() < 0.6:
                self._text(plate, rng.choice(SLOGANS), (int(width * 0.25), int(height * 0.8)),
                           max(3, int(height * 0.09)), fg)
        # Characters: plate_synth's glyph line, fitted into the free area.
        groups = plate_text(self.plates.rng)
        font_path = rng.choice(self.fonts)
        glyph_cap = 48
        font = self.plates._font(font_path, int(glyph_cap * 1.4))
        real = font.getbbox("H")
        real_cap = max(1, real[3] - real[1])
        font = self.plates._font(font_path, max(8, int(glyph_cap * 1.4 * glyph_cap / real_cap)))
        ink, top, bottom = self.plates._glyph_line(groups, font, glyph_cap, rng.uniform(0.6, 1.1),
                                                   rng.uniform(0.03, 0.2), rng.choice(["", " ", "-", "emblem"]))
        ink = ink[top - 4: bottom + 4]
        avail_w = (width - left) * rng.uniform(0.72, 0.9)
        s = min(cap / glyph_cap, avail_w / ink.shape[1])
        iw, ih = max(2, int(ink.shape[1] * s)), max(2, int(ink.shape[0] * s))
        ink = cv2.resize(ink, (iw, ih), interpolation=cv2.INTER_AREA)
        cy = {"us": 0.5, "eu": 0.5, "br_mercosur": 0.6, "br_old": 0.58, "plain": 0.5}[style]
        self._blend(plate, ink, (left + (width - left - iw) // 2, int(height * cy - ih / 2)), fg)
        # Border and bolts.
        if rng.random() < 0.7:
            t = max(1, int(height * rng.uniform(0.02, 0.06)))
            cv2.rectangle(plate, (0, 0), (width - 1, height - 1), fg if rng.random() < 0.5 else rng.uniform(0, 255), t)
        if rng.random() < 0.3:
            for bx in (width // 5, 4 * width // 5):
                cv2.circle(plate, (bx, max(2, height // 8)), max(1, height // 25), rng.uniform(60, 200), -1)
        return plate

    def _mount(self, flat: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The plate in a dealer frame and/or a bumper recess: (the mounted image, the plate's offset in it).

        US photos are full of both: a frame's bars and its dealer text, and the recess's edges, look
        like a larger plate to a detector that has never seen them apart from one."""
        rng = self.rng
        img, (ox, oy) = flat, (0, 0)
        ph, pw = flat.shape
        if rng.random() < 0.6:      # dealer frame: side bars, a thin top bar, a deep bottom bar with text
            side, top, bottom = (max(1, int(pw * rng.uniform(0.02, 0.07))), max(1, int(ph * rng.uniform(0.04, 0.2))),
                                 max(2, int(ph * rng.uniform(0.1, 0.35))))
            tone = rng.choice([rng.uniform(0, 60), rng.uniform(150, 240)])
            framed = np.full((ph + top + bottom, pw + 2 * side), tone, np.float32)
            framed[top: top + ph, side: side + pw] = img
            ink = (tone + rng.uniform(90, 200)) % 256
            if bottom >= 5:
                self._text(framed, rng.choice(DEALERS), (int(pw * rng.uniform(0.1, 0.3)), top + ph + bottom // 6),
                           max(3, int(bottom * 0.55)), ink)
            if top >= 5 and rng.random() < 0.5:
                self._text(framed, rng.choice(DEALERS), (int(pw * rng.uniform(0.15, 0.35)), top // 8),
                           max(3, int(top * 0.6)), ink)
            img, ox, oy = framed, ox + side, oy + top
        if rng.random() < 0.6:      # bumper recess: a shaded pocket wider and taller than the plate
            h, w = img.shape
            mx, my = int(pw * rng.uniform(0.08, 0.45)), int(ph * rng.uniform(0.15, 0.7))
            tone = rng.uniform(10, 230)
            pocket = np.full((h + 2 * my, w + 2 * mx), tone, np.float32)
            shade = np.linspace(rng.uniform(-50, 0), rng.uniform(0, 50), pocket.shape[0], dtype=np.float32)[:, None]
            pocket += shade
            edge = max(1, int(min(mx, my) * rng.uniform(0.1, 0.4)))
            cv2.rectangle(pocket, (0, 0), (pocket.shape[1] - 1, pocket.shape[0] - 1),
                          float(np.clip(tone + rng.choice([-1, 1]) * rng.uniform(30, 100), 0, 255)), edge)
            if rng.random() < 0.3:  # a lamp or a handle in the pocket's top edge
                lx = int(pocket.shape[1] * rng.uniform(0.3, 0.6))
                lamp = (lx + max(2, pw // 6), edge + max(1, my // 3))
                cv2.rectangle(pocket, (lx, edge), lamp, rng.uniform(150, 255), -1)
            pocket[my: my + h, mx: mx + w] = img
            img, ox, oy = pocket, ox + mx, oy + my
        return img, (ox, oy)

    # ----------------------------------------------------------------- composition
    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(grey uint8 size x size, float32 mask size/STRIDE square in 0..1)."""
        rng = self.rng
        S = self.size
        # Render at 2x and shrink: plates and text get real anti-aliasing and optical blur.
        up = 2
        H = W = S * up
        img = self.background(H, W)
        mask = np.zeros((H, W), np.float32)
        n_plates = rng.choices([0, 1, 2], weights=[0.25, 0.65, 0.1])[0]
        for _ in range(n_plates):
            # Plate width in working pixels, log-uniform 16..300 (a patch is a piece of a 960 px frame).
            pw = int(math.exp(rng.uniform(math.log(16), math.log(300))) * up)
            flat = self.plate(pw)
            ph = flat.shape[0]
            cx, cy = rng.uniform(0.1, 0.9) * W, rng.uniform(0.1, 0.9) * H
            on_car = rng.random() < 0.8
            if on_car:   # the car around it
                cw, ch = int(pw * rng.uniform(3.0, 5.0)), int(pw * rng.uniform(1.6, 3.0))
                self._car_body(img, (int(cx - cw / 2), int(cy - ch * 0.72), cw, ch), with_plate_space=True)
            # The plate's mount: a dealer frame and a bumper recess are drawn around it and warped with
            # it, but only the plate is labelled, so the detector's blob stops at the plate's edge.
            mount, (ox, oy) = self._mount(flat) if on_car and rng.random() < 0.6 else (flat, (0, 0))
            # Perspective: rotation, yaw/pitch foreshortening, shear.
            src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
            ang = math.radians(rng.gauss(0, 6))
            yaw = rng.uniform(-0.35, 0.35)
            pitch = rng.uniform(-0.2, 0.2)
            dst = []
            for px, py in src:
                u, v = px - pw / 2, py - ph / 2
                depth = 1 + yaw * u / pw + pitch * v / ph
                u, v = u / depth, v / depth
                u *= rng.uniform(0.97, 1.03)
                dst.append([cx + u * math.cos(ang) - v * math.sin(ang), cy + u * math.sin(ang) + v * math.cos(ang)])
            dst = np.float32(dst)
            m = cv2.getPerspectiveTransform(src, dst) @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]], np.float64)
            flags = cv2.INTER_AREA if pw > 200 else cv2.INTER_LINEAR
            warped = cv2.warpPerspective(mount, m, (W, H), flags=flags)
            alpha = cv2.warpPerspective(np.ones_like(mount), m, (W, H), flags=cv2.INTER_LINEAR)
            on_plate = np.zeros_like(mount)
            on_plate[oy: oy + ph, ox: ox + pw] = 1.0
            img = img * (1 - alpha) + warped * alpha
            mask = np.maximum(mask, cv2.warpPerspective(on_plate, m, (W, H), flags=cv2.INTER_LINEAR))
            if rng.random() < 0.15:   # glare across the plate
                g = np.zeros((H, W), np.float32)
                cv2.ellipse(g, (int(cx + rng.uniform(-0.4, 0.4) * pw), int(cy)),
                            (int(pw * rng.uniform(0.1, 0.5)), int(ph * rng.uniform(0.3, 1.0))), rng.uniform(0, 180),
                            0, 360, 1.0, -1)
                g = cv2.GaussianBlur(g, (0, 0), max(1.0, pw * 0.05))
                img = img + g * rng.uniform(60, 200)
        if rng.random() < 0.5:   # timestamp overlay as cameras burn it in
            th = rng.randint(7, 16) * up
            stamp = f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} " \
                    f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
            if rng.random() < 0.3:
                stamp = rng.choice(["CAM 1", "CAM2 ENTRY", "LANE 3", "EXIT"]) + " " + stamp
            self._text(img, stamp, (rng.randint(0, W // 2), rng.choice([rng.randint(0, H // 10), H - th * 2])),
                       th, rng.choice([255, 0]))
        img = cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (S // STRIDE, S // STRIDE), interpolation=cv2.INTER_AREA)
        return self._spoil(img), mask

    def _spoil(self, img: np.ndarray) -> np.ndarray:
        """Camera effects: exposure, gamma, blur, motion, noise, JPEG (a second camera is worse)."""
        rng = self.rng
        img = np.clip(img, 0, 255)
        if rng.random() < 0.6:
            img = cv2.GaussianBlur(img, (0, 0), rng.choice([rng.uniform(0.3, 1.0), rng.uniform(1.0, 2.5)]))
        if rng.random() < 0.2:
            k = rng.randint(3, 7)
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2] = 1.0 / k
            rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1.0)
            img = cv2.filter2D(img, -1, cv2.warpAffine(kernel, rot, (k, k)))
        gain, gamma = rng.uniform(0.35, 1.8), rng.uniform(0.6, 1.6)
        img = 255.0 * (np.clip(img * gain, 0, 255) / 255.0) ** gamma
        img = img + self.np_rng.normal(0, rng.uniform(0, 10), img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if rng.random() < 0.6:
            _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(30, 92)])
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        return img


__all__ = ["LAYOUTS", "STRIDE", "SceneSynth"]
