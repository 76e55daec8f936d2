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
allowed, but less likely than the listed layouts (it carries a score penalty).
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
FALLBACK_PENALTY = 2.0


def _free(lo: int, hi: int) -> list[str]:
    return ["A" * n + "~" for n in range(lo, hi + 1)]


#: Built-in layouts. Regions are permissive on purpose: the specific layouts win
#: when the evidence fits them, the ``~`` fallbacks still read vanity/foreign plates.
BUILTIN_FORMATS: dict[str, list[str]] = {
    "br": ["LLL-NNNN", "LLLNLNN"],
    "us": [
        "NLLLNNN",   # California and others
        "LLL-NNNN", "LLL-NNN", "NNN-LLL", "NNN-NNN",
        "NLL-NNN", "NNLL-NNN", "LL-NNNNN", "LLNLNL", "LLNNNN", "NNNNNNN", "NNNNNN",
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
    penalty = 0.0
    if body.endswith("~"):
        body, penalty = body[:-1], FALLBACK_PENALTY
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
    return Layout(pattern=pattern, allowed=tuple(allowed), separators=tuple(seps), penalty=penalty)


@dataclass(frozen=True)
class Decoded:
    """A plate string decoded through one layout."""

    plate: str                      # normalised
    text: str                       # with the layout's separators
    layout: str
    log_score: float                # best-path log-probability minus layout penalty
    char_confidences: tuple[float, ...]

    @property
    def confidence(self) -> float:
        if not self.char_confidences:
            return 0.0
        return float(np.exp(np.mean(np.log(np.maximum(self.char_confidences, 1e-6)))))


class PlateGrammar:
    """The layouts of one region, decoded all at once (vectorised Viterbi over CTC paths)."""

    def __init__(self, layouts: Sequence[Layout], *, region: str = "") -> None:
        if not layouts:
            raise ValueError(f"region {region!r} has no plate layouts")
        self.region = region
        self.layouts = tuple(layouts)
        k = max(l.length for l in layouts)
        self._kmax = k
        mask = np.full((len(layouts), k, len(PLATE_CHARS)), _NEG, dtype=np.float64)
        for p, layout in enumerate(layouts):
            for i, chars in enumerate(layout.allowed):
                for ch in chars:
                    mask[p, i, PLATE_CHARS.index(ch)] = 0.0
        self._mask = mask
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

    def decode(self, probs: np.ndarray, *, top: int = 3) -> list[Decoded]:
        """Best reading per layout from a reduced ``(frames, 37)`` matrix, best first."""
        logq = np.log(np.maximum(probs, 1e-12))
        scores, back = self._viterbi(logq)
        order = np.argsort(-scores)
        out: list[Decoded] = []
        seen: set[str] = set()
        for p in order:
            if scores[p] <= _NEG / 2 or len(out) >= top:
                break
            plate, confs = self._backtrack(p, back, probs)
            if plate in seen:
                continue
            seen.add(plate)
            layout = self.layouts[p]
            out.append(Decoded(plate, layout.display(plate), layout.pattern, float(scores[p]), confs))
        return out

    def _viterbi(self, logq: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
        n_frames = logq.shape[0]
        P, K, C = self._mask.shape
        lb = logq[:, 0]
        lc = logq[:, 1:]
        char = np.full((P, K, C), _NEG)
        blank = np.full((P, K + 1), _NEG)   # blank[:, j]: j characters emitted, now in a blank
        blank[:, 0] = lb[0]
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
            prev_best = np.full((P, K, C), _NEG)
            prev_best[:, 1:, :] = np.where(
                cidx[None, None, :] == best_arg[:, :-1, None], second[:, :-1, None], best[:, :-1, None]
            )
            from_blank = np.broadcast_to(blank[:, :K, None], (P, K, C))
            stacked = np.stack([char, from_blank, prev_best])                 # (3, P, K, C)
            src_char = stacked.argmax(axis=0).astype(np.int8)
            new_char = np.take_along_axis(stacked, src_char[None].astype(np.int64), axis=0)[0]
            new_char = new_char + lc[t][None, None, :] + self._mask
            enter_blank = np.full((P, K + 1), _NEG)
            enter_blank[:, 1:] = best
            src_blank = (enter_blank > blank).astype(np.int8)
            new_blank = np.maximum(blank, enter_blank) + lb[t]
            back.append((src_char, src_blank, best_arg, second_arg))
            char = np.maximum(new_char, _NEG)
            blank = new_blank
        lengths = self._lengths
        rows = np.arange(P)
        end_blank = blank[rows, lengths]
        end_char_arg = char[rows, lengths - 1].argmax(axis=1)
        end_char = char[rows, lengths - 1, end_char_arg]
        scores = np.maximum(end_blank, end_char) - self._penalty
        self._end = (end_blank >= end_char, end_char_arg)
        return scores, back

    def _backtrack(self, p: int, back: list[tuple[np.ndarray, ...]], probs: np.ndarray) -> tuple[str, tuple[float, ...]]:
        K = int(self._lengths[p])
        in_blank, end_arg = self._end
        state: tuple[str, int, int]
        state = ("b", K, -1) if in_blank[p] else ("c", K - 1, int(end_arg[p]))
        chars: dict[int, int] = {}
        conf: dict[int, float] = {}
        for t in range(len(back), -1, -1):
            kind, k, c = state
            if kind == "c":
                chars[k] = c
                conf[k] = max(conf.get(k, 0.0), float(probs[t, 1 + c]))
            if t == 0:
                break
            src_char, src_blank, best_arg, second_arg = back[t - 1]
            if kind == "c":
                src = int(src_char[p, k, c])
                if src == 0:
                    state = ("c", k, c)
                elif src == 1:
                    state = ("b", k, -1)
                else:
                    prev = int(best_arg[p, k - 1])
                    state = ("c", k - 1, prev if prev != c else int(second_arg[p, k - 1]))
            else:
                if src_blank[p, k]:
                    state = ("c", k - 1, int(best_arg[p, k - 1]))
        plate = "".join(PLATE_CHARS[chars[i]] for i in range(K) if i in chars)
        return plate, tuple(conf.get(i, 0.0) for i in range(K))


def reduce_probabilities(probs: np.ndarray, alphabet: str) -> np.ndarray:
    """Fold a recogniser's classes onto blank + 0-9A-Z.

    Lower-case letters add to their capitals (plates have none; the model still
    spreads mass there), and every non-alphanumeric class (space, '-', '.', ...)
    adds to the blank, because separators and emblems may sit between characters.
    """
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}
    out = np.zeros((probs.shape[0], 1 + len(PLATE_CHARS)), dtype=np.float64)
    out[:, 0] = probs[:, 0]
    used = {0}
    for j, ch in enumerate(PLATE_CHARS, start=1):
        for variant in {ch, ch.lower()}:
            i = index.get(variant)
            if i is not None:
                out[:, j] += probs[:, i]
                used.add(i)
    rest = [i for i in range(probs.shape[1]) if i not in used]
    if rest:
        out[:, 0] += probs[:, rest].sum(axis=1)
    return out


def greedy_plate(probs: np.ndarray) -> str:
    """Unconstrained best-path reading of a reduced matrix (for diagnostics)."""
    best = probs.argmax(axis=1)
    out = []
    prev = 0
    for b in best:
        if b != 0 and b != prev:
            out.append(PLATE_CHARS[b - 1])
        prev = b
    return "".join(out)
