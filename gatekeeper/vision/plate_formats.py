"""Plate grammars per region, and CTC decoding constrained to them.

A recogniser alone confuses O/0, I/1, B/8, S/5 ... A plate format says, per
position, whether a letter or a digit belongs there, so decoding the recogniser's
per-frame probabilities *through* the format resolves look-alikes by position
instead of guessing afterwards.

Pattern syntax (one string per layout):

``L``  a letter A-Z            ``N``  a digit 0-9           ``A``  a letter or a digit
``[ABC]`` one of the listed characters; any other letter/digit stands for itself;
space, ``-`` and ``.`` are display separators only (the plate text keeps them,
the normalised text does not). A trailing ``~`` marks a layout as a *fallback*:
allowed, but less likely than the listed layouts (it carries a score penalty). A
trailing ``?`` marks a *rarer* listed layout: a smaller penalty, so that where a
character could be read either way, the commoner layout's reading wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Class order of the reduced probability matrix: blank, then these 36.
PLATE_CHARS = DIGITS + LETTERS
SEPARATORS = " -."
_NEG = -1e9

#: Log-probability penalty of a fallback layout (trailing ``~``) against a listed one.
FALLBACK_PENALTY = 3.0
#: Log-probability penalty of a rarer listed layout (trailing ``?``).
RARER_PENALTY = 1.0
#: Log-probability cost of skipping one stretch of non-plate glyphs (emblem, sticker, country strip).
JUNK_PENALTY = 1.5


def _free(lo: int, hi: int) -> list[str]:
    return ["A" * n + "~" for n in range(lo, hi + 1)]


#: Built-in layouts. Regions are permissive on purpose: the specific layouts win
#: when the evidence fits them, the ``~`` fallbacks still read vanity/foreign plates.
BUILTIN_FORMATS: dict[str, list[str]] = {
    "br": ["LLL-NNNN", "LLLNLNN"],
    "us": [
        "NLLLNNN",   # California and others
        "LLL-NNNN", "LLL-NNN", "NNN-LLL", "NNN-NNN",
        "NLL-NNN", "NNLL-NNN", "LL-NNNNN", "LLN-LNL", "LL-NNNN", "NNNNNNN", "NNNNNN",
        # More states' standard seven-character serials (public state formats, not the bench sample).
        # Measured and left out (docs/anpr.md): FL ABC-D12, NJ A12-BCD, MA 1ABC23, IN 1234ABC absorb
        # 1/I and 8/B confusions of the formats above; MD 1AB2345 absorbs a frame edge read as a
        # trailing 1 on six-character plates (7ABC12|).
        "LNN-NNNN",  # Illinois A12-3456
        "LLN-LNNN",  # Texas (2000s) AB1-C234
        *_free(2, 8),
    ],
    "eu": [
        "LL-NNN-LL", "LL-NNNN-LL", "LL-NNN-L", "LL-NNNN-L",     # HR, FR, IT, ...
        "LL-NNNNN", "LLL-NNNNN", "LL-NNNLL", "LLL-NNNN",        # PL, ...
        "NNNN-LLL", "LLNN-LLL", "NLNNNNN", "NNNLNNN",          # ES, UK, SI/BA ...
        "L-LL-NNNN", "L-LL-NNN", "LL-LL-NNNN", "LL-L-NNNN", "LLL-LL-NNN", "LLL-L-NNNN",  # DE
        *_free(2, 8),
    ],
}

_TOKEN = re.compile(r"\[[A-Z0-9]+\]|[A-Z0-9]|[ .-]")


def normalise(text: str) -> str:
    """Upper-case letters and digits only, the key plates are matched by."""
    try:
        from gatekeeper.rules import normalise_plate
    except ImportError:  # pragma: no cover - rules.py is the lead's; same behaviour
        return re.sub(r"[^A-Z0-9]", "", text.upper())
    return normalise_plate(text)


@dataclass(frozen=True)
class Layout:
    """One compiled plate layout."""

    pattern: str
    allowed: tuple[str, ...]        # per character position, the characters allowed there
    separators: tuple[str, ...]     # display separator placed *before* each position ("" if none)
    penalty: float
    fallback: bool = False

    @property
    def length(self) -> int:
        return len(self.allowed)

    def fits(self, plate: str) -> bool:
        plate = normalise(plate)
        return len(plate) == self.length and all(ch in ok for ch, ok in zip(plate, self.allowed))

    def display(self, plate: str) -> str:
        """``ABC1234`` -> ``ABC-1234`` following the layout's separators."""
        return "".join(sep + ch for sep, ch in zip(self.separators, plate)).strip()


def compile_layout(pattern: str) -> Layout:
    """Parse one pattern string (see the module doc); ValueError when malformed."""
    body = pattern.strip().upper()
    penalty, fallback = 0.0, False
    if body.endswith("~"):
        body, penalty, fallback = body[:-1], FALLBACK_PENALTY, True
    elif body.endswith("?"):
        body, penalty = body[:-1], RARER_PENALTY
    allowed: list[str] = []
    seps: list[str] = []
    pending = ""
    pos = 0
    for m in _TOKEN.finditer(body):
        if m.start() != pos:
            raise ValueError(f"plate pattern {pattern!r}: cannot parse {body[pos:m.start()]!r}")
        pos = m.end()
        tok = m.group()
        if tok in SEPARATORS:
            pending = " " if tok == "." else tok
            continue
        if tok == "L":
            chars = LETTERS
        elif tok == "N":
            chars = DIGITS
        elif tok == "A":
            chars = PLATE_CHARS
        elif tok.startswith("["):
            chars = "".join(sorted(set(tok[1:-1])))
        else:
            chars = tok
        allowed.append(chars)
        seps.append(pending if allowed[:-1] else "")
        pending = ""
    if pos != len(body) or not allowed:
        raise ValueError(f"plate pattern {pattern!r}: expected L, N, A, [..], letters, digits and separators")
    if len(allowed) > 12:
        raise ValueError(f"plate pattern {pattern!r}: longer than 12 characters")
    return Layout(pattern=pattern, allowed=tuple(allowed), separators=tuple(seps), penalty=penalty,
                  fallback=fallback)


@dataclass(frozen=True)
class Decoded:
    """A plate string decoded through one layout."""

    plate: str                      # normalised
    text: str                       # with the layout's separators
    layout: str
    log_score: float                # best-path log-probability minus layout penalty
    char_confidences: tuple[float, ...]
    junk: int = 0                   # stretches of non-plate glyphs skipped
    fallback: bool = False          # read through a fallback (``~``) layout rather than a listed one

    @property
    def confidence(self) -> float:
        if not self.char_confidences:
            return 0.0
        return float(np.exp(np.mean(np.log(np.maximum(self.char_confidences, 1e-6)))))


class PlateGrammar:
    """The layouts of one region, decoded all at once (vectorised Viterbi over CTC paths).

    Besides blanks, a path may pass through *junk*: a stretch of glyphs that are
    not part of the plate (a country strip, a coat of arms or sticker between
    character groups, a frame edge). Junk is allowed only at the ends and where the
    layout has a separator, and each visit costs :data:`JUNK_PENALTY`.
    """

    def __init__(self, layouts: Sequence[Layout], *, region: str = "") -> None:
        if not layouts:
            raise ValueError(f"region {region!r} has no plate layouts")
        self.region = region
        self.layouts = tuple(layouts)
        k = max(l.length for l in layouts)
        mask = np.full((len(layouts), k, len(PLATE_CHARS)), _NEG, dtype=np.float64)
        junk = np.full((len(layouts), k + 1), _NEG, dtype=np.float64)
        for p, layout in enumerate(layouts):
            for i, chars in enumerate(layout.allowed):
                for ch in chars:
                    mask[p, i, PLATE_CHARS.index(ch)] = 0.0
                if i > 0 and layout.separators[i]:
                    junk[p, i] = -JUNK_PENALTY
            # Ends cost a little more, so a glyph between groups is preferably the junk (an emblem).
            junk[p, 0] = junk[p, layout.length] = -JUNK_PENALTY - 0.01
        self._mask = mask
        self._junk_cost = junk
        self._lengths = np.array([l.length for l in layouts])
        self._penalty = np.array([l.penalty for l in layouts])

    @classmethod
    def for_region(cls, region: str, extra: Mapping[str, Iterable[str]] | None = None) -> "PlateGrammar":
        """Built-in layouts of ``region`` plus configured extra ones (a new region needs only extras)."""
        patterns = list(BUILTIN_FORMATS.get(region, []))
        patterns += list((extra or {}).get(region, []))
        if not patterns:
            known = sorted(set(BUILTIN_FORMATS) | set(extra or {}))
            raise ValueError(f"unknown plate region {region!r} (known: {', '.join(known)})")
        return cls([compile_layout(p) for p in dict.fromkeys(patterns)], region=region)

    def listed(self, plate: str) -> bool:
        """True for a plate that fits one of the listed (non-fallback) layouts: a whole plate."""
        key = normalise(plate)
        return bool(key) and any(layout.fits(key) for layout in self.layouts if not layout.fallback)

    def decode(self, probs: np.ndarray, *, top: int = 3) -> list[Decoded]:
        """Best reading per layout from a reduced ``(frames, 37)`` matrix, best first."""
        probs = _lift_lookalikes(_collapse_blanks(probs))
        logq = np.log(np.maximum(probs, 1e-12))
        scores, back, end = self._viterbi(logq)
        order = np.argsort(-scores)
        out: list[Decoded] = []
        seen: set[str] = set()
        for p in order:
            if scores[p] <= _NEG / 2 or len(out) >= top:
                break
            plate, confs, junk = self._backtrack(int(p), back, end, probs)
            if plate in seen:
                continue
            seen.add(plate)
            layout = self.layouts[p]
            out.append(Decoded(plate, layout.display(plate), layout.pattern, float(scores[p]), confs, junk,
                               fallback=layout.fallback))
        return out

    def _viterbi(self, logq: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]:
        n_frames = logq.shape[0]
        P, K, C = self._mask.shape
        lb = logq[:, 0]
        lc = logq[:, 1:]
        lj = lc.max(axis=1)
        jc = self._junk_cost
        char = np.full((P, K, C), _NEG)
        blank = np.full((P, K + 1), _NEG)   # blank[:, j]: j characters emitted, now in a blank
        junk = np.full((P, K + 1), _NEG)    # junk[:, j]: j characters emitted, now in junk
        blank[:, 0] = lb[0]
        junk[:, 0] = jc[:, 0] + lj[0]
        char[:, 0, :] = lc[0] + self._mask[:, 0, :]
        back: list[tuple[np.ndarray, ...]] = []
        cidx = np.arange(C)
        for t in range(1, n_frames):
            best_arg = char.argmax(axis=2)                                    # (P, K)
            best = np.take_along_axis(char, best_arg[..., None], axis=2)[..., 0]
            masked = char.copy()
            np.put_along_axis(masked, best_arg[..., None], _NEG, axis=2)
            second_arg = masked.argmax(axis=2)
            second = np.take_along_axis(masked, second_arg[..., None], axis=2)[..., 0]
            # Entering position k straight from position k-1 (no blank) needs a different character.
            prev_char = np.full((P, K, C), _NEG)
            prev_char[:, 1:, :] = np.where(
                cidx[None, None, :] == best_arg[:, :-1, None], second[:, :-1, None], best[:, :-1, None]
            )
            gap = np.maximum(blank[:, :K], junk[:, :K])
            gap_src = np.where(blank[:, :K] >= junk[:, :K], 1, 3).astype(np.int8)
            from_gap = np.broadcast_to(gap[:, :, None], (P, K, C))
            use_prev = prev_char > from_gap
            src = np.where(use_prev, 2, gap_src[:, :, None]).astype(np.int8)
            enter = np.where(use_prev, prev_char, from_gap)
            stay = char >= enter
            src_char = np.where(stay, 0, src).astype(np.int8)
            new_char = np.maximum(char, enter) + lc[t][None, None, :] + self._mask
            after_char = np.full((P, K + 1), _NEG)
            after_char[:, 1:] = best
            # blank: stay (0), from the character before (1), from junk (2)
            cand_b = np.stack([blank, after_char, junk])
            src_blank = cand_b.argmax(axis=0).astype(np.int8)
            new_blank = cand_b.max(axis=0) + lb[t]
            # junk: stay (0), from blank (1), from the character before (2)
            cand_j = np.stack([junk, blank + jc, after_char + jc])
            src_junk = cand_j.argmax(axis=0).astype(np.int8)
            new_junk = cand_j.max(axis=0) + lj[t]
            back.append((src_char, src_blank, src_junk, best_arg, second_arg))
            char = np.maximum(new_char, _NEG)
            blank = np.maximum(new_blank, _NEG)
            junk = np.maximum(new_junk, _NEG)
        rows = np.arange(P)
        lengths = self._lengths
        end_char_arg = char[rows, lengths - 1].argmax(axis=1)
        ends = np.stack([blank[rows, lengths], char[rows, lengths - 1, end_char_arg], junk[rows, lengths]])
        scores = ends.max(axis=0) - self._penalty
        return scores, back, (ends.argmax(axis=0), end_char_arg)

    def _backtrack(
        self, p: int, back: list[tuple[np.ndarray, ...]], end: tuple[np.ndarray, ...], probs: np.ndarray
    ) -> tuple[str, tuple[float, ...], int]:
        K = int(self._lengths[p])
        end_kind, end_arg = end
        kind = ("b", "c", "j")[int(end_kind[p])]
        k = K - 1 if kind == "c" else K
        c = int(end_arg[p]) if kind == "c" else -1
        chars: dict[int, int] = {}
        conf: dict[int, float] = {}
        junk_visits = 0
        for t in range(len(back), -1, -1):
            if kind == "c":
                chars[k] = c
                conf[k] = max(conf.get(k, 0.0), float(probs[t, 1 + c]))
            if t == 0:
                break
            src_char, src_blank, src_junk, best_arg, second_arg = back[t - 1]
            if kind == "c":
                src = int(src_char[p, k, c])
                if src == 1:
                    kind = "b"
                elif src == 3:
                    kind = "j"
                elif src == 2:
                    prev = int(best_arg[p, k - 1])
                    k, c = k - 1, (prev if prev != c else int(second_arg[p, k - 1]))
            elif kind == "b":
                src = int(src_blank[p, k])
                if src == 1:
                    kind, k, c = "c", k - 1, int(best_arg[p, k - 1])
                elif src == 2:
                    kind = "j"
            else:
                src = int(src_junk[p, k])
                if src:
                    junk_visits += 1
                if src == 1:
                    kind = "b"
                elif src == 2:
                    kind, k, c = "c", k - 1, int(best_arg[p, k - 1])
        if kind == "j":
            junk_visits += 1
        plate = "".join(PLATE_CHARS[chars[i]] for i in range(K) if i in chars)
        return plate, tuple(conf.get(i, 0.0) for i in range(K)), junk_visits


#: Glyphs a recogniser mixes up in plate fonts. Where a layout wants a digit, a
#: confident look-alike letter (and the reverse) still counts for LOOKALIKE_WEIGHT of
#: its probability: the position decides, not a coin toss inside the recogniser. One
#: such swap costs less than skipping junk (JUNK_PENALTY), two cost more. Not
#: rules.LOOKALIKE_GROUPS (the exit matcher's cheap substitutions, from the issue): this
#: list is this recogniser's measured habits (no 1/L; 4/A, 4/L, 7/T added; 1/J for the flagged,
#: footed 1 of Missouri-style plates, read as J: docs/anpr.md).
PLATE_LOOKALIKES: tuple[str, ...] = ("0ODQ", "1I", "1J", "2Z", "5S", "8B", "6G", "4A", "4L", "7T")
LOOKALIKE_WEIGHT = 0.4


def _lookalike_matrix() -> np.ndarray:
    m = np.eye(1 + len(PLATE_CHARS))
    for group in PLATE_LOOKALIKES:
        for a in group:
            for b in group:
                if a != b:
                    m[1 + PLATE_CHARS.index(b), 1 + PLATE_CHARS.index(a)] = LOOKALIKE_WEIGHT
    return m


_LIFT = _lookalike_matrix()


def _lift_lookalikes(probs: np.ndarray) -> np.ndarray:
    """Each class's probability raised to the weighted best of its look-alikes'."""
    return (probs[:, :, None] * _LIFT[None, :, :]).max(axis=1)


def _collapse_blanks(probs: np.ndarray, sure: float = 0.995) -> np.ndarray:
    """Merge runs of near-certain blank frames into one frame: same best paths, far fewer steps."""
    is_blank = probs[:, 0] >= sure
    if is_blank.sum() < 2:
        return probs
    keep = ~is_blank | np.concatenate([[True], ~is_blank[:-1]])
    # Keep leading/trailing blanks out entirely; a single blank frame stands for each inner run.
    idx = np.flatnonzero(keep)
    nz = np.flatnonzero(~is_blank)
    if len(nz) == 0:
        return probs[:1]
    idx = idx[(idx >= max(0, nz[0] - 1)) & (idx <= nz[-1] + 1)]
    return probs[idx]


#: Recogniser classes that are not plate characters but are what a plate glyph often
#: comes out as (a narrow 1 or I read as ``|`` or ``!``, an S as ``$``): their mass goes to
#: those characters instead of the blank. A class may feed several characters.
GLYPH_LOOKALIKES: dict[str, str] = {
    "1": "|!]l",
    "I": "|!][l",
    "S": "$",
    "0": "o",
}


def reduce_probabilities(probs: np.ndarray, alphabet: str) -> np.ndarray:
    """Fold a recogniser's classes onto blank + 0-9A-Z.

    Lower-case letters add to their capitals (plates have none; the model still
    spreads mass there), the :data:`GLYPH_LOOKALIKES` classes to the characters they
    stand for, and every other class (space, '-', '.', ...) to the blank, because
    separators and emblems may sit between characters.
    """
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}
    out = np.zeros((probs.shape[0], 1 + len(PLATE_CHARS)), dtype=np.float64)
    out[:, 0] = probs[:, 0]
    used = {0}
    for j, ch in enumerate(PLATE_CHARS, start=1):
        for variant in {ch, ch.lower()} | set(GLYPH_LOOKALIKES.get(ch, "")):
            i = index.get(variant)
            if i is not None:
                out[:, j] += probs[:, i]
                used.add(i)
    rest = [i for i in range(probs.shape[1]) if i not in used]
    if rest:
        out[:, 0] += probs[:, rest].sum(axis=1)
    return out


def raw_reading(probs: np.ndarray, alphabet: str) -> str:
    """Best-path reading over the recogniser's own classes, punctuation kept."""
    out = []
    prev = 0
    for b in probs.argmax(axis=1):
        if b != 0 and b != prev:
            out.append(alphabet[b - 1])
        prev = b
    return "".join(out)
