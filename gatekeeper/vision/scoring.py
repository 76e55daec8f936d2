"""Closed-vocabulary plate scoring: how well does each known plate explain the recogniser's output?

At an exit the plausible answers are the plates of the open sessions (tens, not 36^7). Instead
of reading a string and then searching the sessions by edit distance, each candidate plate is
scored directly on the recogniser's per-frame class probabilities with the CTC forward
algorithm (the probability that the network emits that exact string, summed over all its
alignments), and the best is accepted only when it clearly beats the runner-up and is nearly as
good as the unconstrained reading of the same crop. Pure numpy: no I/O, no clock.

Conventions (decided here, measured in benchmarks/calibrate_matching.py, see docs/anpr.md):

- Input matrices are ``(frames, 1 + len(alphabet))`` softmax rows, class 0 = CTC blank, class
  ``i`` = ``alphabet[i - 1]`` (the :class:`~gatekeeper.vision.recognizer.Recognizer` protocol).
  :func:`fold` maps them onto blank + ``0-9A-Z``: classes that normalise to the same plate
  character are **summed** ('a' and 'A' are one event, "the network wrote an A"; summing is
  its marginal probability), the punctuation glyphs plate characters come out as (``|`` ``!``
  for 1/I, ``$`` for S) feed those characters, every other class (space, '-', '.', ...) counts
  as blank (a separator between characters is no character of the normalised plate). Each row
  is renormalised to sum 1.
- A candidate is a normalised plate (upper-case letters and digits). Its score is
  ``log P(candidate | matrix)`` (natural log, log-space recursion, never underflows); the
  length-normalised score divides by the number of characters (``exp`` of it is the geometric
  mean per-character probability), so short and long plates share one threshold.
- Several matrices of one vehicle (the reader's candidate rows and views of one photo, and
  several photos) are combined per candidate by their **maximum**: most matrices of a photo
  are other text rows (dealer text, stickers) on which every plate scores badly, so a product
  or mean would be dominated by them. The runner-up and the free reading are taken on the
  same matrix as the best candidate's maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Sequence

import numpy as np

DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Class order of a folded matrix: blank, then these 36.
CHARS = DIGITS + LETTERS
_INDEX = {ch: i + 1 for i, ch in enumerate(CHARS)}

#: Punctuation classes a plate glyph is often emitted as: their mass goes to these characters.
GLYPHS: dict[str, str] = {"|": "1I", "!": "1I", "]": "1I", "$": "S"}

#: Look-alike groups (the exit matcher's, rules.LOOKALIKE_GROUPS): used only with ``lookalike_weight``.
LOOKALIKES: tuple[str, ...] = ("0ODQ", "1IL", "2Z", "5S", "8B", "6G")

_NEG = -1e30

#: With grammar readings given, compare with them only (not also the raw best path).
GRAMMAR_FREE = True
_TINY = 1e-12


def fold(probs: np.ndarray, alphabet: str) -> np.ndarray:
    """A recogniser's ``(frames, 1 + len(alphabet))`` matrix as ``(frames, 37)``: blank + 0-9A-Z."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(alphabet) + 1:
        raise ValueError(f"expected a (frames, {len(alphabet) + 1}) matrix, got {probs.shape}")
    out = np.zeros((probs.shape[0], 1 + len(CHARS)))
    out[:, 0] = probs[:, 0]
    for i, ch in enumerate(alphabet, start=1):
        up = ch.upper()
        if up in _INDEX and len(up) == 1:
            out[:, _INDEX[up]] += probs[:, i]
        elif ch in GLYPHS:
            targets = GLYPHS[ch]
            for t in targets:
                out[:, _INDEX[t]] += probs[:, i] / len(targets)
        else:
            out[:, 0] += probs[:, i]
    out /= np.maximum(out.sum(axis=1, keepdims=True), _TINY)
    return out


#: A wide view's padding frames may pass as nothing at this probability at least (``loosen_edges``).
EDGE_BLANK_FLOOR = math.exp(-1.0)


def loosen_edges(folded: np.ndarray, share: float, floor: float = EDGE_BLANK_FLOOR) -> np.ndarray:
    """``folded`` with the blank of its first and last ``share`` of frames raised to at least ``floor``.

    A wide view (:data:`gatekeeper.vision.candidates.WIDE_VIEWS`) holds what lies beside the row: the
    rest of the plate, but also a coat of arms, a bolt, the plate's edge, which the network reads as
    characters no plate has. There each frame may be read as nothing for at most ``-log(floor)`` nats,
    so a plate's characters are scored without the junk beside them, while a character the frames do
    show still counts. Not renormalised: a frame's characters keep their probability.
    """
    out = np.array(folded, dtype=np.float64, copy=True)
    edge = int(round(share * len(out)))
    if edge > 0:
        for part in (out[:edge], out[len(out) - edge:]):
            part[:, 0] = np.maximum(part[:, 0], floor)
    return out


def normalise(plate: str) -> str:
    """Upper-case letters and digits only (the key plates are stored and matched by)."""
    return "".join(ch for ch in plate.upper() if ch in _INDEX)


def _lift(folded: np.ndarray, weight: float) -> np.ndarray:
    """Each character's probability raised to ``weight`` x its best look-alike's (0: unchanged)."""
    if weight <= 0:
        return folded
    out = folded.copy()
    for group in LOOKALIKES:
        idx = [_INDEX[ch] for ch in group]
        block = folded[:, idx]
        for j, i in enumerate(idx):
            others = np.delete(block, j, axis=1).max(axis=1)
            out[:, i] = np.maximum(folded[:, i], weight * others)
    return out


def ctc_log_probs(folded: np.ndarray, candidates: Sequence[str], *, lookalike_weight: float = 0.0) -> np.ndarray:
    """``log P(candidate)`` under CTC for each candidate, from one folded ``(frames, 37)`` matrix.

    Batched over candidates (padded extended label sequences ``blank c1 blank c2 ... blank``);
    the empty string is the all-blank path. A candidate longer than the matrix can emit
    (with the blanks its repeated letters need) gets ``-inf``.
    """
    folded = np.asarray(folded, dtype=np.float64)
    n_frames = folded.shape[0]
    plates = [normalise(c) for c in candidates]
    if not plates:
        return np.empty(0)
    logp = np.log(np.maximum(_lift(folded, lookalike_weight), _TINY))   # (T, 37)
    lengths = np.array([len(p) for p in plates])
    width = 2 * int(lengths.max()) + 1
    labels = np.zeros((len(plates), width), dtype=np.int64)            # blank-padded
    for n, p in enumerate(plates):
        if p:
            labels[n, 1:2 * len(p):2] = [_INDEX[ch] for ch in p]
    valid = np.arange(width)[None, :] < (2 * lengths + 1)[:, None]
    # A skip from s-2 to s is allowed into a character that differs from the one two back.
    skip = np.zeros_like(valid)
    skip[:, 2:] = (labels[:, 2:] != 0) & (labels[:, 2:] != labels[:, :-2])
    if n_frames == 0:
        return np.where(lengths == 0, 0.0, -np.inf)
    alpha = np.full((len(plates), width), _NEG)
    emit = logp[0][labels]
    alpha[:, 0] = emit[:, 0]
    alpha[:, 1] = np.where(lengths > 0, emit[:, 1], _NEG)
    for t in range(1, n_frames):
        emit = logp[t][labels]
        prev1 = np.full_like(alpha, _NEG)
        prev1[:, 1:] = alpha[:, :-1]
        prev2 = np.full_like(alpha, _NEG)
        prev2[:, 2:] = np.where(skip[:, 2:], alpha[:, :-2], _NEG)
        alpha = np.logaddexp(np.logaddexp(alpha, prev1), prev2) + emit
        alpha = np.where(valid, np.maximum(alpha, _NEG), _NEG)
    rows = np.arange(len(plates))
    last = alpha[rows, 2 * lengths]
    before = np.where(lengths > 0, alpha[rows, np.maximum(2 * lengths - 1, 0)], _NEG)
    out = np.logaddexp(last, before)
    return np.where(out < _NEG / 2, -np.inf, out)


def best_path(folded: np.ndarray) -> str:
    """The unconstrained reading: most likely class per frame, repeats merged, blanks dropped."""
    out: list[str] = []
    prev = 0
    for k in np.asarray(folded).argmax(axis=1):
        if k != 0 and k != prev:
            out.append(CHARS[k - 1])
        prev = int(k)
    return "".join(out)


def per_char(log_prob: float, plate: str) -> float:
    """Length-normalised score: log-probability per character (the empty plate: per one)."""
    return log_prob / max(1, len(normalise(plate)))


@dataclass(frozen=True)
class Ranking:
    """The candidates ranked against one vehicle's evidence.

    Scores are natural-log CTC probabilities; ``*_norm`` are per character. ``free`` is the
    best unconstrained reading on the matrix where ``best`` scored highest (the best-path
    reading, or a caller's grammar reading), and ``free_gap`` how much more likely it is than
    ``best`` there (0 when it *is* ``best``; >= 0 in practice).
    """

    best: str
    score: float
    score_norm: float
    runner_up: str
    runner_up_score: float
    free: str
    free_score: float
    free_gap: float
    matrix: int                              # index of the matrix that gave ``best`` its score
    scores: tuple[tuple[str, float], ...]    # every candidate, best first
    twin: str = ""                           # a free reading that is ``best`` with look-alikes swapped
    shadow: str = ""                         # the likeliest plate outside the candidates that ``best`` could be
    shadow_score: float = -math.inf          # its score, combined as the candidates' are

    @property
    def margin(self) -> float:
        """``best`` over the runner-up or its shadow, in nats (a log likelihood ratio); inf without either."""
        rival = max(self.runner_up_score, self.shadow_score)
        if not math.isfinite(rival):
            return math.inf
        return self.score - rival


_LOOKALIKE_GROUP = {ch: i for i, group in enumerate(LOOKALIKES) for ch in group}


def twin_refuses(twin: str, inside: Collection[str], shadow_prior: float) -> bool:
    """A twin read in the evidence refuses outright: it is inside too, or outside plates count as likely."""
    return shadow_prior >= 0 or twin in inside


def lookalike_twins(a: str, b: str) -> bool:
    """Same length, and every differing character is a look-alike of the other (0/O, 8/B, 2/Z ...)."""
    return len(a) == len(b) and all(
        x == y or (_LOOKALIKE_GROUP.get(x) is not None and _LOOKALIKE_GROUP.get(x) == _LOOKALIKE_GROUP.get(y))
        for x, y in zip(a, b)
    )


def _same_group(group: Callable[[str], str] | None) -> Callable[[str, str], bool]:
    """Whether two candidates stand for the same vehicle (without groups: the same string)."""
    if group is None:
        return lambda a, b: a == b
    return lambda a, b: group(a) == group(b)


def rank(
    evidence: Sequence[np.ndarray],
    candidates: Iterable[str],
    *,
    free: Sequence[Sequence[str]] | None = None,
    lookalike_weight: float = 0.0,
    prior: Callable[[str], float] | None = None,
    shadows: Callable[[str], Iterable[str]] | None = None,
    shadow_prior: float = 0.0,
    inside: Collection[str] | None = None,
    group: Callable[[str], str] | None = None,
) -> Ranking | None:
    """Rank ``candidates`` (normalised plates) against folded matrices of one vehicle.

    ``shadows(best)`` names plates that are not candidates but could be the vehicle instead of
    ``best`` (its look-alike twins that are valid plates: a car not inside whose plate differs
    from one inside by 0/O or 8/B); the best must beat them by the margin as it must beat the
    runner-up, after ``shadow_prior`` (the log prior of such a car against one inside).

    A grammar reading of the evidence that is ``best`` with look-alikes swapped (``twin``)
    refuses outright when that twin is ``inside`` (default: the candidates): two cars one
    look-alike apart. A twin that is not inside refuses only with ``shadow_prior`` 0; below 0 it
    is one of the outside plates the shadows weigh (:func:`twin_refuses`).

    ``free`` optionally gives, per matrix, readings of that matrix to compare with (e.g. the
    grammar's); the best-path reading is always among them. ``prior`` adds a log prior per
    plate (candidates and free readings alike), e.g. the grammar's penalty for a plate that no
    listed layout fits. ``group`` names the vehicle a candidate stands for (default: itself):
    several spellings of one session (its entry's alternative readings) are one candidate, so
    the runner-up is the best of *another* group and a twin in the same group refuses nothing.
    None when there is no evidence or no candidate.
    """
    plates = list(dict.fromkeys(p for p in (normalise(c) for c in candidates) if p))
    if not evidence or not plates:
        return None
    same = _same_group(group)
    bias = np.array([prior(p) for p in plates]) if prior is not None else np.zeros(len(plates))
    table = np.stack([ctc_log_probs(m, plates, lookalike_weight=lookalike_weight) for m in evidence]) + bias  # (M, N)
    combined = table.max(axis=0)
    order = np.argsort(-combined, kind="stable")
    b = int(order[0])
    k = int(table[:, b].argmax())
    grammar_readings: set[str] = set()
    if free is not None and k < len(free):
        grammar_readings = {normalise(r) for r in free[k] if normalise(r)}
    # The free reading: the grammar's (layout and look-alikes by position), else the raw best path.
    readings = set(grammar_readings) if grammar_readings and GRAMMAR_FREE else {best_path(evidence[k])} | grammar_readings
    readings.discard("")
    twins = sorted(r for r in grammar_readings if r != plates[b] and lookalike_twins(r, plates[b])
                   and not same(r, plates[b])
                   and twin_refuses(r, plates if inside is None else inside, shadow_prior))
    others = sorted(readings - {plates[b]})
    if others:
        free_scores = ctc_log_probs(evidence[k], others, lookalike_weight=lookalike_weight)
        if prior is not None:
            free_scores = free_scores + np.array([prior(p) for p in others])
        j = int(free_scores.argmax())
        free_plate, free_score = others[j], float(free_scores[j])
    else:
        free_plate, free_score = plates[b], float(combined[b])
    score = float(combined[b])
    runner = next((int(i) for i in order[1:] if not same(plates[int(i)], plates[b])), None)
    shadow, shadow_score = "", -math.inf
    if shadows is not None:
        extra = [p for p in dict.fromkeys(normalise(x) for x in shadows(plates[b])) if p and p not in plates]
        if extra:
            sbias = np.array([prior(p) for p in extra]) if prior is not None else np.zeros(len(extra))
            stable = np.stack([ctc_log_probs(m, extra, lookalike_weight=lookalike_weight) for m in evidence])
            stable = stable + sbias + shadow_prior
            j = int(stable.max(axis=0).argmax())
            shadow, shadow_score = extra[j], float(stable.max(axis=0)[j])
    return Ranking(
        best=plates[b],
        score=score,
        score_norm=per_char(score, plates[b]),
        runner_up=plates[runner] if runner is not None else "",
        runner_up_score=float(combined[runner]) if runner is not None else -math.inf,
        free=free_plate,
        free_score=free_score,
        free_gap=max(0.0, free_score - score) if math.isfinite(free_score) else 0.0,
        matrix=k,
        scores=tuple((plates[i], float(combined[i])) for i in order),
        twin=twins[0] if twins else "",
        shadow=shadow,
        shadow_score=shadow_score,
    )


@dataclass(frozen=True)
class Thresholds:
    """When a ranking's best candidate is taken (calibrated in benchmarks/calibrate_matching.py).

    ``min_score_norm``: per-character log-probability of the best candidate (T);
    ``min_margin``: nats over the runner-up (M); ``max_free_gap``: nats the unconstrained
    reading may be more likely than the best candidate (the evidence says something else).
    """

    min_score_norm: float
    min_margin: float
    max_free_gap: float


def accept(ranking: Ranking | None, thresholds: Thresholds) -> bool:
    """True when ``ranking.best`` clears the threshold and both margins."""
    return (
        ranking is not None
        and not ranking.twin
        and ranking.score_norm >= thresholds.min_score_norm
        and ranking.margin >= thresholds.min_margin
        and ranking.free_gap <= thresholds.max_free_gap
    )


#: A photo whose best candidate scores below this per character shows none of them (the plate
#: was not among its crops): it is left out of a vehicle's combined evidence, not counted as noise.
PHOTO_FLOOR = -3.0


def rank_photos(
    photos: Sequence[Sequence[np.ndarray]],
    candidates: Iterable[str],
    *,
    free: Sequence[Sequence[Sequence[str]]] | None = None,
    lookalike_weight: float = 0.0,
    prior: Callable[[str], float] | None = None,
    shadows: Callable[[str], Iterable[str]] | None = None,
    shadow_prior: float = 0.0,
    floor: float = PHOTO_FLOOR,
    group: Callable[[str], str] | None = None,
) -> Ranking | None:
    """Rank ``candidates`` on several photos (frames) of one vehicle: evidence accumulates.

    Within a photo the candidate's best crop counts (:func:`rank`: the other crops are other
    text); across photos its log-probabilities are **averaged** (the geometric mean of the
    likelihoods): a second clear photo lifts a look-alike margin that one blurred photo left
    too small, while the same photo twice (a watch folder re-sent, frames of a car that has not
    moved: correlated, not independent, looks) changes nothing, so the calibrated one-photo
    thresholds hold. Photos that show none of the candidates (best below ``floor`` per
    character) are left out. One photo: exactly :func:`rank`.
    """
    plates = list(dict.fromkeys(p for p in (normalise(c) for c in candidates) if p))
    same = _same_group(group)
    looks = [(i, list(m)) for i, m in enumerate(photos) if len(m)]
    if not looks or not plates:
        return None
    per: list[tuple[int, Ranking]] = []
    for i, mats in looks:
        r = rank(mats, plates, free=free[i] if free is not None else None, lookalike_weight=lookalike_weight,
                 prior=prior, shadows=shadows, shadow_prior=shadow_prior, group=group)
        if r is not None:
            per.append((i, r))
    if not per:
        return None
    if len(per) == 1:
        return per[0][1]
    kept = [(i, r) for i, r in per if r.score_norm >= floor] or [max(per, key=lambda ir: ir[1].score_norm)]
    if len(kept) == 1:
        return kept[0][1]
    combined = {p: sum(dict(r.scores)[p] for _, r in kept) / len(kept) for p in plates}
    order = sorted(plates, key=lambda p: -combined[p])
    best = order[0]
    gaps: list[tuple[float, str, float]] = []
    twins: list[str] = []
    shadowed: list[tuple[float, str]] = []
    for i, _ in kept:
        one = rank(photos[i], [best], free=free[i] if free is not None else None, lookalike_weight=lookalike_weight,
                   prior=prior, shadows=shadows, shadow_prior=shadow_prior,
                   inside=[p for p in plates if not same(p, best)], group=group)
        if one is not None:
            gaps.append((one.free_gap, one.free, one.free_score))
            if one.twin:
                twins.append(one.twin)
            if one.shadow:
                shadowed.append((one.shadow_score, one.shadow))
    gap, free_plate, free_score = max(gaps) if gaps else (0.0, best, combined[best])
    runner = next((p for p in order[1:] if not same(p, best)), "")
    return Ranking(
        best=best,
        score=combined[best],
        score_norm=per_char(combined[best], best),
        runner_up=runner,
        runner_up_score=combined[runner] if runner else -math.inf,
        free=free_plate,
        free_score=free_score,
        free_gap=sum(g for g, _, _ in gaps) / max(1, len(gaps)),
        matrix=-1,
        scores=tuple((p, combined[p]) for p in order),
        twin=twins[0] if twins else "",
        shadow=max(shadowed)[1] if shadowed else "",
        shadow_score=sum(sc for sc, _ in shadowed) / len(kept) if len(shadowed) == len(kept) else -math.inf,
    )


def single_swaps(plate: str) -> list[str]:
    """``plate`` with one character swapped for a look-alike (each group member in turn)."""
    out = []
    for i, ch in enumerate(plate):
        group = _LOOKALIKE_GROUP.get(ch)
        if group is None:
            continue
        out += [plate[:i] + other + plate[i + 1:] for other in LOOKALIKES[group] if other != ch]
    return out


def one_edit(plate: str) -> list[str]:
    """Every plate one character away from ``plate``: substituted, inserted or deleted."""
    out: set[str] = set()
    for i in range(len(plate) + 1):
        for ch in CHARS:
            out.add(plate[:i] + ch + plate[i:])
            if i < len(plate) and ch != plate[i]:
                out.add(plate[:i] + ch + plate[i + 1:])
        if i < len(plate):
            out.add(plate[:i] + plate[i + 1:])
    out.discard(plate)
    return sorted(out)


def alternatives(
    photos: Sequence[Sequence[np.ndarray]],
    plate: str,
    *,
    readings: Iterable[str] = (),
    keep: Callable[[str], bool] | None = None,
    window: float = 4.0,
    limit: int = 6,
) -> dict[str, float]:
    """Other spellings the evidence of ``plate``'s read supports nearly as well: ``{spelling: log ratio}``.

    An entry read can be one character off (``BT77148`` for ``BTZ7148``, ``RK300A`` for
    ``RK300AS``) and the exit camera then reads the car right. The candidates are every plate
    one edit from ``plate`` and the other ``readings`` of the evidence (e.g. other crops'),
    those ``keep`` accepts (whole plates); each is scored like ``plate`` (best crop per photo,
    averaged over photos) and kept when within ``window`` nats of it, with its log-likelihood
    ratio against ``plate`` (<= 0) as the prior it carries at the exit. At most ``limit``, best first.
    """
    plate = normalise(plate)
    looks = [list(m) for m in photos if len(m)]
    if not plate or not looks:
        return {}
    pool = [p for p in dict.fromkeys([*one_edit(plate), *(normalise(r) for r in readings)])
            if p and p != plate and (keep is None or keep(p))]
    if not pool:
        return {}
    strings = [plate, *pool]
    per_photo = [np.stack([ctc_log_probs(m, strings) for m in mats]).max(axis=0) for mats in looks]
    total = np.mean(per_photo, axis=0)
    base = float(total[0])
    if not math.isfinite(base):
        return {}
    ranked = sorted(((float(s) - base, p) for p, s in zip(pool, total[1:]) if s >= base - window), reverse=True)
    return {p: min(0.0, d) for d, p in ranked[:limit]}
