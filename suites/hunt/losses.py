"""A hunted input of the loss ops (cross_entropy and its VJP), and the moves that make and change it.

A loss's question is a whole batch, not a row: its reduction ("mean", "sum") is over the rows, and
its targets, ignore_index, label smoothing and class weights are part of it. So a Batch is the
logits (N, C) in the format, one target per row and the loss's options, and it is scored as one
input (one oracle call, one backend call: suites.hunt.fitness.LossEvaluator).

The moves aim at what the loss adds to log_softmax: a confident correct row (the target leads by a
gap from 1 to past where exp rounds to 0 in the format: the loss goes from normal to subnormal to
an exact 0), a confidently wrong one (the target trails by up to 1e4: a loss of that size), long
rows (the vocabularies of language models, 32k to 256k classes, at initialisation or padded with
the row's own entries), -inf (a vocabulary mask, or on the target: loss +inf), NaN and +inf
entries, other targets (right, wrong, random, an ignored row with the ignore_index), the
reductions, label smoothing and class weights with zeros (on the targets too: a mean of weight 0
is 0/0). Only the options the backend lists (Backend.options) are set. Each row's logits go
through suites.hunt.mutations (their moves on one row, and to_format's range), so a row of a
loss is a row of the other hunts, but that its finite logits span at most SPREAD (the oracle's
limit).

The oracle is exact and slow (mpmath per element: ~10 to 20 us per element for the forward, a few
times that for a VJP off the fast path), so every input has a cost (LossEvaluator.cost) and a
generation a budget (GENERATION_COST, and LONG_COST for the one input with long rows it may hold):
an input that does not fit what is left has its classes cut.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from softmax_suite.formats import Format
from softmax_suite.oracle.rounding import round_values
from softmax_suite.protocol import LOSS_OPTIONS
from softmax_suite.suites.cases import FIXED
from softmax_suite.suites.hunt.mutations import (
    _duplicate_max,
    _edge,
    _mask,
    _nudge,
    _permute,
    _scale,
    _set_gap,
    _shift,
    gap,
    length,
    log_uniform,
    to_format,
)

REDUCTIONS = ("none", "mean", "sum")
# Fresh inputs: rows of up to IMMIGRANT_CLASSES classes (longer ones come by lengthening, and as
# vocabularies: vocabulary_batch), at most MAX_ROWS rows in any input.
IMMIGRANT_CLASSES = 1024
MAX_ROWS = 64
# The vocabularies of language models (Llama 2, GPT-2, 2^16, cl100k, Llama 3, Qwen 2, Gemma), which
# the lengthening moves toward; rows that long are at most LONG_ROWS per input.
VOCABULARIES = (32000, 50257, 65536, 100277, 128256, 151936, 256000)
LONG = 4096
LONG_ROWS = 2
# The standard deviations of logits at initialisation (0.02: a language model's head).
INITIAL_SCALES = (0.02, 0.1, 1.0, 3.0)
SMOOTHINGS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
IGNORE_INDICES = (-100, -1)
# The share of fresh inputs given some of the loss's options.
DRESSED = 0.5
# A generation's oracle budget, in units of one element of the forward oracle (LossEvaluator.cost), and
# the long input's own (at most one a generation: within_budget).
GENERATION_COST = 2.0**17
LONG_COST = 2.0**17
# The widest spread of a row's finite logits: where the target leads, the oracle forms 1 + S exactly,
# an integer of about spread / ln 2 bits (a spread of 1e8 takes it 0.07 s).
SPREAD = 2.0**20


@dataclass(frozen=True, eq=False)
class Batch:
    """One input of a loss op: logits (N, C) in the format, targets (N,) int64 (each a class index,
    or the ignore_index), the reduction, and the options passed (None, 0: not passed): ignore_index,
    label_smoothing and weight (C class weights in the format, finite and >= 0)."""

    values: np.ndarray
    target: np.ndarray
    reduction: str = "mean"
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    weight: np.ndarray | None = None

    # What the search's archive and the shrinker read of any candidate (suites.hunt.attention.Row).
    scale = None
    mask = None

    @property
    def x(self) -> np.ndarray:
        return self.values

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def classes(self) -> int:
        return int(self.values.shape[1])

    @property
    def options(self) -> tuple[str, ...]:
        """The loss options this input passes (softmax_suite.protocol.LOSS_OPTIONS)."""
        given = (self.ignore_index is not None, self.label_smoothing > 0, self.weight is not None)
        return tuple(name for name, passed in zip(LOSS_OPTIONS, given, strict=True) if passed)

    @property
    def plain(self) -> bool:
        return not self.options

    @property
    def kept(self) -> np.ndarray:
        """Which rows count (their target is not the ignore_index)."""
        if self.ignore_index is None:
            return np.ones(self.rows, dtype=bool)
        return self.target != self.ignore_index

    @property
    def ignored(self) -> int:
        return int(self.rows - self.kept.sum())

    def arguments(self) -> dict:
        """The keyword arguments of a call (and of the oracle): target and reduction, and the options
        passed."""
        found: dict = {"target": self.target, "reduction": self.reduction}
        if self.ignore_index is not None:
            found["ignore_index"] = int(self.ignore_index)
        if self.label_smoothing > 0:
            found["label_smoothing"] = float(self.label_smoothing)
        if self.weight is not None:
            found["weight"] = self.weight
        return found

    @functools.cached_property
    def key(self) -> bytes:
        """Equal keys, the same question."""
        weight = b"-" if self.weight is None else self.weight.tobytes()
        return b"|".join([repr(self.values.shape).encode(), self.values.tobytes(),
                          self.target.astype(np.int64).tobytes(), self.reduction.encode(),
                          repr((self.ignore_index, float(self.label_smoothing))).encode(), weight])

    def replace(self, **changes) -> Batch:
        return dataclasses.replace(self, **changes)


def loss_row(values: np.ndarray, fmt: Format) -> np.ndarray:
    """A row of float64 logits rounded into the format (to_format), its finite entries further than
    SPREAD below their max raised to about max - SPREAD. A +inf stays (_specials puts it there: a
    loss's special row), and counts for neither."""
    v = np.asarray(values, dtype=np.float64)
    posinf = np.isposinf(v)
    v = np.where(posinf, np.nan, v)
    finite = np.isfinite(v)
    if finite.any():
        v = np.where(finite, np.maximum(v, v[finite].max() - SPREAD), v)
    formatted = to_format(v, fmt)
    return np.where(posinf, np.array(np.inf, dtype=formatted.dtype), formatted)


def batch(values: np.ndarray, target, fmt: Format, reduction: str = "mean", ignore_index: int | None = None,
          label_smoothing: float = 0.0, weight: np.ndarray | None = None) -> Batch:
    """A Batch of float64 values (N, C), each row rounded into the format (loss_row), its targets
    made valid (a target outside the classes that is not the ignore_index wraps around) and the
    weights fitted to the classes."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    formatted = np.stack([loss_row(row, fmt) for row in values])
    return settled(Batch(formatted, np.asarray(target, dtype=np.int64), reduction, ignore_index,
                         float(label_smoothing), weight), fmt)


def settled(found: Batch, fmt: Format) -> Batch:
    """found with valid targets (each a class or the ignore_index) and weights of its classes."""
    classes = found.classes
    target = np.asarray(found.target, dtype=np.int64).copy()
    if target.shape != (found.rows,):
        target = np.resize(target, found.rows) if target.size else np.zeros(found.rows, dtype=np.int64)
    outside = (target < 0) | (target >= classes)
    if found.ignore_index is not None:
        outside &= target != found.ignore_index
    target[outside] = np.mod(target[outside], classes)
    weight = found.weight
    if weight is not None and weight.size != classes:
        weight = round_values(np.resize(weight.astype(np.float64), classes), fmt)
    return found.replace(target=target, weight=weight)


def _float(found: Batch) -> np.ndarray:
    return found.values.astype(np.float64)


def _with_values(found: Batch, values: np.ndarray, fmt: Format) -> Batch:
    """found with other float64 values (rows rounded into the format), targets and weights refitted."""
    return batch(values, found.target, fmt, found.reduction, found.ignore_index, found.label_smoothing,
                 found.weight)


def _finite_max(row: np.ndarray, without: int | None = None) -> float | None:
    """The largest finite entry of a float64 row (leaving out one index), None when there is none."""
    entries = row if without is None else np.delete(row, without)
    finite = entries[np.isfinite(entries)]
    return float(finite.max()) if finite.size else None


def _argmax(row: np.ndarray) -> int:
    finite = np.isfinite(row)
    return int(np.argmax(np.where(finite, row, -np.inf))) if finite.any() else 0


def _argmin(row: np.ndarray) -> int:
    finite = np.isfinite(row)
    return int(np.argmin(np.where(finite, row, np.inf))) if finite.any() else 0


def _some_rows(rng: np.random.Generator, found: Batch) -> np.ndarray:
    """One row (most often), or every row."""
    if found.rows == 1 or rng.random() < 0.6:
        return np.array([int(rng.integers(found.rows))])
    return np.arange(found.rows)


def confident_gap(rng: np.random.Generator, fmt: Format) -> float:
    """How far a confident target leads: up to past where exp rounds to 0 in the format (the loss,
    about (C - 1) e^-gap, from normal to subnormal to 0), or a gap of the hard regions."""
    pick = rng.random()
    if pick < 0.6:
        return float(rng.uniform(1.0, -fmt.exp_zero_below + 4.0))
    if pick < 0.9:
        return gap(rng, fmt)
    return log_uniform(rng, 1.0, 1e4)


Move = Callable[[np.random.Generator, Format, Batch, Batch, int, tuple[str, ...]], Batch]


def _confident(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
               options: tuple[str, ...]) -> Batch:
    """Rows made confident and correct: the target's logit raised a gap above the rest, or the rest
    put a gap below it (spread a little), or the target moved to the argmax."""
    values = _float(found)
    target = found.target.copy()
    how = rng.random()
    for i in _some_rows(rng, found):
        if not found.kept[i]:
            continue
        row, t = values[i], int(target[i])
        if how < 0.2 or found.classes == 1:
            target[i] = _argmax(row)
            continue
        top = _finite_max(row, t)
        if top is None:
            continue
        width = confident_gap(rng, fmt)
        if how < 0.6 or not np.isfinite(row[t]):
            row[t] = top + width
        else:
            others = np.arange(found.classes) != t
            row[others] = np.where(np.isfinite(row[others]),
                                   row[t] - width - rng.uniform(0.0, 0.25, size=found.classes - 1),
                                   row[others])
    return _with_values(found.replace(target=target), values, fmt)


def _wrong(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
           options: tuple[str, ...]) -> Batch:
    """Rows made confidently wrong: the target's logit a gap of 1 to 1e4 below the rest, or the
    target moved to the argmin."""
    values = _float(found)
    target = found.target.copy()
    for i in _some_rows(rng, found):
        if not found.kept[i] or found.classes == 1:
            continue
        row, t = values[i], int(target[i])
        if rng.random() < 0.3:
            target[i] = _argmin(row)
            continue
        rest = np.delete(row, t)
        finite = rest[np.isfinite(rest)]
        if finite.size:
            row[t] = float(finite.min()) - min(log_uniform(rng, 1.0, 1e4), fmt.max / 2)
    return _with_values(found.replace(target=target), values, fmt)


def _retarget(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
              options: tuple[str, ...]) -> Batch:
    """Other targets for some rows (kept rows only): random classes, the argmax, the argmin, or a
    class tied with the max."""
    values = _float(found)
    target = found.target.copy()
    pick = rng.random()
    for i in _some_rows(rng, found):
        if not found.kept[i]:
            continue
        if pick < 0.5:
            target[i] = int(rng.integers(found.classes))
        elif pick < 0.75:
            target[i] = _argmax(values[i])
        else:
            target[i] = _argmin(values[i])
    return found.replace(target=target)


def _ignore(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
            options: tuple[str, ...]) -> Batch:
    """Rows ignored: an ignore_index (-100, -1 or a class index) given to one row, every other row or
    every row; or (a quarter of the time, when it has one) no ignore_index, its rows given classes."""
    if found.ignore_index is not None and rng.random() < 0.25:
        target = found.target.copy()
        ignored = ~found.kept
        target[ignored] = rng.integers(found.classes, size=int(ignored.sum()))
        return found.replace(target=target, ignore_index=None)
    index = found.ignore_index
    if index is None or rng.random() < 0.3:
        index = int(rng.integers(found.classes)) if rng.random() < 0.25 else \
            IGNORE_INDICES[int(rng.integers(len(IGNORE_INDICES)))]
    # The rows ignored so far stay ignored, under the new index.
    target = np.where(found.kept, found.target, index)
    pick = rng.random()
    rows = np.arange(found.rows)
    chosen = rows == rng.integers(found.rows) if pick < 0.6 else rows % 2 == int(rng.integers(2)) \
        if pick < 0.85 else np.ones(found.rows, dtype=bool)
    target = np.where(chosen, index, target)
    return found.replace(target=target.astype(np.int64), ignore_index=index)


def _reduce(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
            options: tuple[str, ...]) -> Batch:
    """Another reduction."""
    choices = [r for r in REDUCTIONS if r != found.reduction]
    return found.replace(reduction=choices[int(rng.integers(len(choices)))])


def _smooth(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
            options: tuple[str, ...]) -> Batch:
    """Another label smoothing: one of SMOOTHINGS or any in (0, 1), or (a quarter of the time, when it
    has some) none."""
    if found.label_smoothing > 0 and rng.random() < 0.25:
        return found.replace(label_smoothing=0.0)
    if rng.random() < 0.8:
        return found.replace(label_smoothing=SMOOTHINGS[int(rng.integers(len(SMOOTHINGS)))])
    return found.replace(label_smoothing=float(rng.uniform(0.0, 1.0)))


def class_weights(rng: np.random.Generator, fmt: Format, target: np.ndarray, classes: int) -> np.ndarray:
    """Class weights in [0.5, 2] (or powers of two) with zeros: every k-th class, a random subset,
    some or all of the targets' classes, or all but one class; rounded into the format."""
    if rng.random() < 0.25:
        weights = 2.0 ** rng.integers(-2, 3, size=classes).astype(np.float64)
    else:
        weights = rng.uniform(0.5, 2.0, size=classes)
    pick = rng.random()
    if pick < 0.25:
        weights[int(rng.integers(classes))::int(rng.integers(2, 6))] = 0.0
    elif pick < 0.5:
        weights[rng.random(classes) < rng.uniform(0.1, 0.9)] = 0.0
    elif pick < 0.75:
        aimed = target[(target >= 0) & (target < classes)]
        if aimed.size:
            weights[aimed if rng.random() < 0.5 else aimed[:1]] = 0.0
    elif pick < 0.9:
        kept = int(rng.integers(classes))
        weights[np.arange(classes) != kept] = 0.0
    return round_values(weights, fmt)


def _weigh(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
           options: tuple[str, ...]) -> Batch:
    """New class weights (class_weights), or (a quarter of the time, when it has some) none."""
    if found.weight is not None and rng.random() < 0.25:
        return found.replace(weight=None)
    return found.replace(weight=class_weights(rng, fmt, found.target, found.classes))


def _specials(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
              options: tuple[str, ...]) -> Batch:
    """Special entries in a row: -inf on some classes that are not the target (a vocabulary mask), -inf
    on the target (loss +inf), a NaN, or a +inf."""
    values = found.values.copy()
    i = int(rng.integers(found.rows))
    row, t = values[i], int(found.target[i]) if found.kept[i] else -1
    pick = rng.random()
    others = np.delete(np.arange(found.classes), t) if 0 <= t < found.classes else np.arange(found.classes)
    if pick < 0.5 and others.size:
        count = 1 if rng.random() < 0.5 else int(rng.integers(1, others.size + 1))
        row[rng.choice(others, size=count, replace=False)] = -np.inf
    elif pick < 0.75 and t >= 0:
        row[t] = -np.inf
    else:
        row[int(rng.integers(found.classes))] = np.nan if pick < 0.9 else np.inf
    return found.replace(values=values)


def initial_logits(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    """A model's logits at initialisation: N(0, s^2) for s of INITIAL_SCALES (0.02 most often),
    sometimes shifted."""
    scale = INITIAL_SCALES[0 if rng.random() < 0.5 else int(rng.integers(len(INITIAL_SCALES)))]
    values = rng.normal(scale=scale, size=(rows, classes))
    return values + (rng.normal() * 10.0 ** rng.uniform(0.0, 2.0) if rng.random() < 0.2 else 0.0)


def _lengthen(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
              options: tuple[str, ...]) -> Batch:
    """Longer rows: a language model's vocabulary (at most LONG_ROWS rows) at initialisation or
    padded with the rows' own entries (the target kept where it was, unique), or 2 to 8 times as
    many classes padded so."""
    classes = found.classes
    vocabularies = [v for v in VOCABULARIES if classes < v <= max_length]
    if vocabularies and rng.random() < 0.5:
        wanted = vocabularies[int(rng.integers(len(vocabularies)))]
        found = found.replace(values=found.values[:LONG_ROWS], target=found.target[:LONG_ROWS])
    else:
        wanted = min(max_length, classes * int(rng.integers(2, 9)))
    if wanted <= classes:
        return found
    if wanted > LONG and found.rows > LONG_ROWS:
        found = found.replace(values=found.values[:LONG_ROWS], target=found.target[:LONG_ROWS])
    if rng.random() < 0.4:
        values = initial_logits(rng, found.rows, wanted)
        target = np.where(found.kept, rng.integers(wanted, size=found.rows), found.target)
        weight = None if found.weight is None else class_weights(rng, fmt, target, wanted)
        return batch(values, target, fmt, found.reduction, found.ignore_index, found.label_smoothing, weight)
    old = _float(found)
    values = np.empty((found.rows, wanted))
    values[:, :classes] = old
    for i in range(found.rows):
        t = int(found.target[i]) if found.kept[i] else -1
        pool = np.delete(old[i], t) if 0 <= t < classes and classes > 1 else old[i]
        values[i, classes:] = rng.choice(pool, size=wanted - classes)
    weight = found.weight
    if weight is not None:
        weight = round_values(np.concatenate([weight.astype(np.float64), rng.choice(
            weight.astype(np.float64), size=wanted - classes)]), fmt)
    return _with_values(found.replace(weight=weight), values, fmt)


def cut_classes(found: Batch, keep: int, fmt: Format, rng: np.random.Generator | None = None) -> Batch:
    """found with at most keep classes: its targets' classes and the first (or random) others, the
    targets renumbered."""
    if found.classes <= keep:
        return found
    aimed = np.unique(found.target[found.kept & (found.target >= 0) & (found.target < found.classes)])
    rest = np.setdiff1d(np.arange(found.classes), aimed)
    room = max(0, keep - aimed.size)
    others = rest[:room] if rng is None else rng.choice(rest, size=min(room, rest.size), replace=False)
    columns = np.sort(np.concatenate([aimed, others]).astype(np.int64))
    return keep_columns(found, columns, fmt)


def keep_columns(found: Batch, columns: np.ndarray, fmt: Format) -> Batch:
    """found with only these classes (sorted indices holding every kept row's target), renumbered."""
    renumber = np.full(found.classes, -1, dtype=np.int64)
    renumber[columns] = np.arange(columns.size)
    target = found.target.copy()
    aimed = found.kept & (target >= 0) & (target < found.classes)
    target[aimed] = renumber[target[aimed]]
    weight = None if found.weight is None else found.weight[columns]
    ignore_index = found.ignore_index
    if ignore_index is not None and 0 <= ignore_index < found.classes:
        # A class index as the ignore_index: it follows its class (or leaves the classes).
        moved = int(renumber[ignore_index]) if renumber[ignore_index] >= 0 else -100
        target[~found.kept] = moved
        ignore_index = moved
    return settled(found.replace(values=found.values[:, columns], target=target, weight=weight,
                                 ignore_index=ignore_index), fmt)


def _shorten(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
             options: tuple[str, ...]) -> Batch:
    """Fewer classes (the targets' kept): down to 1 to C - 1 of them."""
    if found.classes == 1:
        return found
    return cut_classes(found, int(rng.integers(1, found.classes)), fmt, rng)


def _rows(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
          options: tuple[str, ...]) -> Batch:
    """A row dropped, or one to a few added (copies of rows with new targets, or fresh rows)."""
    if found.rows > 1 and rng.random() < 0.4:
        keep = np.delete(np.arange(found.rows), int(rng.integers(found.rows)))
        return found.replace(values=found.values[keep], target=found.target[keep])
    limit = LONG_ROWS if found.classes > LONG else MAX_ROWS
    count = min(limit - found.rows, int(rng.integers(1, 4)))
    if count <= 0:
        return found
    values, target = _float(found), found.target
    if rng.random() < 0.5:
        new = values[rng.integers(found.rows, size=count)]
    else:
        new = np.stack([fresh_row(rng, fmt, found.classes) for _ in range(count)])
    targets = np.concatenate([target, rng.integers(found.classes, size=count)])
    return batch(np.concatenate([values, new]), targets, fmt, found.reduction, found.ignore_index,
                 found.label_smoothing, found.weight)


ROW_MOVES = (_nudge, _scale, _shift, _set_gap, _edge, _duplicate_max, _mask, _permute)


def _row_moves(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
               options: tuple[str, ...]) -> Batch:
    """A move of the plain hunt's (suites.hunt.mutations: ulp nudges, scaling, shifts, a gap below
    the max, the exp edges, tied maxima, -inf masks, permutations) on one row or on every row (but
    a row holding a NaN or a +inf); the classes stay, and so do the targets."""
    values = _float(found)
    move = ROW_MOVES[int(rng.integers(len(ROW_MOVES)))]
    for i in _some_rows(rng, found):
        if np.isnan(values[i]).any() or np.isposinf(values[i]).any():
            continue  # a special row: the moves would spread its NaN (the max they take) over it
        with np.errstate(all="ignore"):
            moved = move(rng, fmt, values[i], values[i], found.classes)
        if moved.size == found.classes:
            values[i] = moved
    return _with_values(found, values, fmt)


def _cross(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
           options: tuple[str, ...]) -> Batch:
    """Crossed with another input: of the same classes, rows of each (with their targets); else its
    reduction and options."""
    if other.classes == found.classes and other.ignore_index == found.ignore_index:
        rows = np.concatenate([found.values, other.values])
        target = np.concatenate([found.target, other.target])
        limit = LONG_ROWS if found.classes > LONG else MAX_ROWS
        chosen = rng.choice(rows.shape[0], size=min(limit, int(rng.integers(1, rows.shape[0] + 1))),
                            replace=False)
        return found.replace(values=rows[np.sort(chosen)], target=target[np.sort(chosen)])
    ignore_index = other.ignore_index if "ignore_index" in options else found.ignore_index
    crossed = found.replace(reduction=other.reduction, label_smoothing=other.label_smoothing,
                            weight=other.weight)
    if ignore_index != found.ignore_index:
        crossed = crossed.replace(target=np.where(found.kept, found.target, 0), ignore_index=ignore_index)
    return settled(crossed, fmt)


# The moves of the logits and targets, and those of each option (taken only where the backend lists it).
MOVES: tuple[Move, ...] = (_confident, _confident, _wrong, _retarget, _reduce, _specials, _lengthen,
                           _shorten, _rows, _row_moves, _row_moves, _row_moves, _cross)
OPTION_MOVES: dict[str, Move] = {"ignore_index": _ignore, "label_smoothing": _smooth, "weight": _weigh}


def moves(options: tuple[str, ...]) -> tuple[Move, ...]:
    return (*MOVES, *(OPTION_MOVES[option] for option in LOSS_OPTIONS if option in options))


def mutate(rng: np.random.Generator, fmt: Format, found: Batch, other: Batch, max_length: int,
           options: tuple[str, ...]) -> Batch:
    """found after one to three random moves (other: a second parent for crossing)."""
    chosen = moves(options)
    for _ in range(min(3, int(rng.geometric(0.5)))):
        found = settled(chosen[int(rng.integers(len(chosen)))](rng, fmt, found, other, max_length, options),
                        fmt)
    return found


def dress(rng: np.random.Generator, fmt: Format, found: Batch, options: tuple[str, ...]) -> Batch:
    """found given one or two of the options (those listed)."""
    for _ in range(min(2, int(rng.geometric(0.5)))):
        option = options[int(rng.integers(len(options)))]
        found = settled(OPTION_MOVES[option](rng, fmt, found, found, found.classes, options), fmt)
    return found


def fresh_row(rng: np.random.Generator, fmt: Format, classes: int) -> np.ndarray:
    """A row of logits (float64) from one of the hard regions: N(0, s^2) for s from 0.02 to 30, one
    entry leading by a gap, the runner-up a gap below, or an exp edge; sometimes shifted."""
    values = rng.normal(scale=log_uniform(rng, 0.02, 30.0), size=classes)
    family = int(rng.integers(4))
    if family == 1:
        values = -(gap(rng, fmt) + rng.uniform(0.0, 0.5, size=classes))
        values[rng.integers(classes)] = 0.0
    elif family == 2:
        values = _set_gap(rng, fmt, values, values, classes)[:classes]
    elif family == 3:
        values = _edge(rng, fmt, values, values, classes)
    if rng.random() < 0.3:
        values = values + rng.normal() * 10.0 ** rng.uniform(0.0, 3.0)
    return values


def random_batch(rng: np.random.Generator, fmt: Format, max_length: int, options: tuple[str, ...]) -> Batch:
    """A fresh input: 1 to 16 rows of up to IMMIGRANT_CLASSES classes, random, right or wrong targets,
    often made confident or wrong, any reduction, and DRESSED of the time some of the options."""
    pick = rng.random()
    rows = 1 if pick < 0.4 else int(rng.integers(2, 5)) if pick < 0.75 else int(rng.integers(5, 17))
    classes = length(rng, min(max_length, IMMIGRANT_CLASSES))
    if classes == 1 and rng.random() < 0.75:
        classes = 2  # one class is a loss of 0 whatever the logits: seldom a question
    values = initial_logits(rng, rows, classes) if rng.random() < 0.15 else \
        np.stack([fresh_row(rng, fmt, classes) for _ in range(rows)])
    aim = rng.random()
    target = np.array([_argmax(row) if aim < 0.3 else _argmin(row) if aim < 0.45
                       else int(rng.integers(classes)) for row in values], dtype=np.int64)
    found = batch(values, target, fmt, REDUCTIONS[int(rng.integers(len(REDUCTIONS)))])
    pick = rng.random()
    if pick < 0.35:
        found = settled(_confident(rng, fmt, found, found, max_length, options), fmt)
    elif pick < 0.5:
        found = settled(_wrong(rng, fmt, found, found, max_length, options), fmt)
    if options and rng.random() < DRESSED:
        found = dress(rng, fmt, found, options)
    return found


def vocabulary_batch(rng: np.random.Generator, fmt: Format, max_length: int,
                     options: tuple[str, ...]) -> Batch | None:
    """A fresh input of a language model's vocabulary (VOCABULARIES, up to max_length classes) at
    initialisation: one or two rows, random targets, any reduction, and DRESSED of the time some of
    the options; None where no vocabulary fits."""
    sizes = [v for v in VOCABULARIES if v <= max_length]
    if not sizes:
        return None
    classes = sizes[int(rng.integers(len(sizes)))]
    rows = int(rng.integers(1, LONG_ROWS + 1))
    found = batch(initial_logits(rng, rows, classes), rng.integers(classes, size=rows), fmt,
                  REDUCTIONS[int(rng.integers(len(REDUCTIONS)))])
    return dress(rng, fmt, found, options) if options and rng.random() < DRESSED else found


def catalogue_batches(fmt: Format, max_length: int, options: tuple[str, ...], rows: int = 8) -> list[Batch]:
    """The fixed catalogue's loss cases in the format (but the long ones: lengthening goes there), each
    as an input of its first `rows` rows, with its options where the backend takes them all."""
    found = []
    for case in FIXED:
        if case.loss is None or fmt.name not in case.dtypes or "long" in case.tags:
            continue
        if any(option not in options for option in case.loss.options):
            continue
        x = case.build(fmt.name)
        if x.ndim != 2 or not 1 <= x.shape[1] <= max_length:
            continue
        arguments = case.loss_arguments(fmt.name)
        target = np.asarray(arguments["target"][:rows], dtype=np.int64)
        found.append(Batch(np.ascontiguousarray(x[:rows]), target,
                           arguments["reduction"], arguments.get("ignore_index"),
                           float(arguments.get("label_smoothing", 0.0)), arguments.get("weight")))
    return found


def within_budget(rng: np.random.Generator, fmt: Format, batches: list[Batch], cost: Callable[[Batch], float],
                  budget: float = GENERATION_COST, long_budget: float = LONG_COST) -> list[Batch]:
    """The inputs of a generation within its oracle budgets. The first input with rows longer than LONG
    has long_budget of its own (its rows cut to one, then its classes, where it costs more); any
    other long one is cut to LONG classes. The rest share budget: each in turn, its classes cut to
    what is left where it costs more (a fresh short input where even a few classes cost more)."""
    fitted = []
    left = budget
    long = False
    for found in batches:
        if found.classes > LONG and not long:
            long = True
            if cost(found) > long_budget and found.rows > 1:
                found = found.replace(values=found.values[:1], target=found.target[:1])
            fitted.append(_cut_to(rng, fmt, found, cost, long_budget))
            continue
        if found.classes > LONG:
            found = cut_classes(found, LONG, fmt, rng)
        found = _cut_to(rng, fmt, found, cost, left)
        left -= cost(found)
        fitted.append(found)
    return fitted


def _cut_to(rng: np.random.Generator, fmt: Format, found: Batch, cost: Callable[[Batch], float],
            left: float) -> Batch:
    """found with its classes cut to cost at most left (a fresh input of 4 classes where even a few
    classes cost more)."""
    spent = cost(found)
    if spent <= left:
        return found
    least = cost(cut_classes(found, 1, fmt))
    per_class = (spent - least) / max(found.classes - 1, 1)
    keep = int((left - least) // max(per_class, 1e-9)) + 1
    if keep >= 2:
        return cut_classes(found, keep, fmt, rng)
    return batch(np.stack([fresh_row(rng, fmt, 4)]), [0], fmt, found.reduction)


def cell(found: Batch) -> tuple[int, ...]:
    """The archive's cell of an input: binades of its classes and rows, its reduction, which options it
    passes (and whether a row is ignored), and the binade of its most confident kept row's lead (the
    target's logit minus the largest other; negative: wrong; -100 for none finite)."""
    leads = []
    values = _float(found)
    for i in np.flatnonzero(found.kept):
        t = int(found.target[i])
        if found.classes < 2 or not np.isfinite(values[i, t]):
            continue
        top = _finite_max(values[i], t)
        if top is not None:
            leads.append(values[i, t] - top)
    if not leads or not np.isfinite(max(leads)):
        lead = -100
    else:
        best = max(leads)
        binade = 5 + int(np.clip(np.floor(np.log2(abs(best))), -4, 10)) if best else 0
        lead = int(math.copysign(binade, best))
    return (found.classes.bit_length(), min(found.rows.bit_length(), 4), REDUCTIONS.index(found.reduction),
            found.ignored > 0, found.label_smoothing > 0, found.weight is not None, lead)


def describe(found: Batch) -> str:
    """'reduction mean, label smoothing 0.1, weights (2 of 3 zero), ignore_index -100 (1 of 2 rows)'."""
    parts = [f"reduction {found.reduction}"]
    if found.label_smoothing > 0:
        parts.append(f"label smoothing {found.label_smoothing:g}")
    if found.weight is not None:
        parts.append(f"weights ({int(np.sum(found.weight == 0))} of {found.classes} zero)")
    if found.ignore_index is not None:
        parts.append(f"ignore_index {found.ignore_index} ({found.ignored} of {found.rows} rows)")
    return ", ".join(parts)


def options_text(found: Batch) -> str:
    """The report's short form of the options: 'ls=0.1 w=2/3 ign=1/2', '-' for none."""
    parts = []
    if found.label_smoothing > 0:
        parts.append(f"ls={found.label_smoothing:g}")
    if found.weight is not None:
        parts.append(f"w0={int(np.sum(found.weight == 0))}/{found.classes}")
    if found.ignore_index is not None:
        parts.append(f"ign={found.ignored}/{found.rows}")
    return " ".join(parts) or "-"
