"""A hunt's moves: random rows from a format's hard regions, and the mutations that carry a row
toward them. Rows are 1-D arrays in the format's dtype; a mutation works on their float64 values
(exact) and rounds its result once into the format.

The hard regions, from the error analysis (docs/numerics.md, softmax_suite/formats.py): gaps between the top
entries on every scale (log-uniform 1e-3 .. 1e3) and near p ln2, where 1 + e^-d stops changing;
gaps near the underflow edges of exp (emin ln2: subnormal, (emin - p) ln2: zero); the exp overflow
edge; tied maxima; -inf masks; large offsets (shift invariance); short and long rows; the lengths
where narrow accumulators give out (suites.ladder.LENGTHS: a float16 sum of ones stalls at 2048 and
overflows at 65520) and uniform rows, which sum to their length there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from softmax_suite.formats import Format
from softmax_suite.oracle.exponential import MAX_GAP
from softmax_suite.oracle.rounding import round_values
from softmax_suite.suites.ladder import LENGTHS

# Half the fast oracle's largest gap, so that rounding max - FAR into the format stays within it;
# exp(-FAR) is far below float64's smallest subnormal (e^-744.4).
FAR = MAX_GAP / 2
# Rows this long or longer are kept within FAR of their max (to_format); shorter ones cost mpmath
# little, entry by entry, and keep whatever spread the hunt gave them.
SPREAD_KEPT_BELOW = 16
Mutation = Callable[[np.random.Generator, Format, np.ndarray, np.ndarray, int], np.ndarray]


def to_format(values: np.ndarray, fmt: Format) -> np.ndarray:
    """values rounded once into the format: finite ones clipped to +-max first (so that rounding
    makes no +inf, which the hunt leaves to the catalogue's special cases), -inf kept, and a row
    left with no finite entry given a 0 in front. In a row of SPREAD_KEPT_BELOW entries or more,
    entries further than FAR below the max are raised to max - FAR: their exponentials are 0 in
    every format either way, and a row whose spread exceeds the fast oracle's MAX_GAP goes to
    mpmath entry by entry, some 1000 times slower (a short row costs little there and keeps any
    spread)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isneginf(v), -np.inf, np.clip(v, -fmt.max, fmt.max))
    finite = np.isfinite(v)
    if v.size and not finite.any():
        v[0] = 0.0
    elif v.size >= SPREAD_KEPT_BELOW:
        v = np.where(finite, np.maximum(v, v[finite].max() - FAR), v)
    return round_values(v, fmt)


def step_ulps(x: np.ndarray, picks: np.ndarray, steps: int) -> np.ndarray:
    """x (in its dtype) with the finite entries at picks moved by steps units in the last place
    (through zero and across binades); an entry that would leave the finite range stays."""
    width = 8 * x.itemsize
    unsigned = x.view(f"u{x.itemsize}")
    # Sign and magnitude as one ordered integer: the next float up is the next integer.
    magnitude = (unsigned & ((1 << (width - 1)) - 1)).astype(np.int64)
    ordered = np.where(unsigned >> (width - 1) == 1, -magnitude, magnitude)
    ordered[picks] += steps
    bits = np.abs(ordered).astype(unsigned.dtype)
    moved = np.where(ordered < 0, bits | (1 << (width - 1)), bits).astype(unsigned.dtype).view(x.dtype)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(x.astype(np.float64)) & np.isfinite(moved.astype(np.float64))
    chosen = np.zeros(x.shape, dtype=bool)
    chosen[picks] = True
    return np.where(chosen & keep, moved, x)


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def gap(rng: np.random.Generator, fmt: Format) -> float:
    """A gap between two entries: on every scale, near p ln2, or near an underflow edge of exp."""
    pick = rng.random()
    if pick < 0.6:
        return log_uniform(rng, 1e-3, 1e3)
    if pick < 0.85:
        return fmt.absorb_gap + rng.uniform(-1.0, 1.0)
    edge = -fmt.exp_subnormal_below if rng.random() < 0.5 else -fmt.exp_zero_below
    return edge + rng.uniform(-1.0, 1.0)


def length(rng: np.random.Generator, max_length: int) -> int:
    """Half the rows short (1 .. 8: special paths, remainder loops), the rest log-uniform."""
    if rng.random() < 0.5:
        return int(rng.integers(1, min(8, max_length) + 1))
    return int(min(max_length, round(log_uniform(rng, 1.0, max_length))))


def random_row(rng: np.random.Generator, fmt: Format, max_length: int) -> np.ndarray:
    """A fresh row from one of the hard regions, in the format."""
    n = length(rng, max_length)
    values = rng.normal(scale=log_uniform(rng, 0.1, 100.0), size=n)
    family = rng.integers(4)
    if family == 1:  # one entry dominates the rest by about a gap
        values = -(gap(rng, fmt) + rng.uniform(0.0, 0.5, size=n))
        values[rng.integers(n)] = 0.0
    elif family == 2:
        values = _set_gap(rng, fmt, values, values, max_length)
    elif family == 3:
        values = _edge(rng, fmt, values, values, max_length)
    if rng.random() < 0.3:
        values = values + rng.normal() * 10.0 ** rng.uniform(0.0, 3.0)
    if rng.random() < 0.1:
        values = _mask(rng, fmt, values, values, max_length)
    return to_format(values, fmt)


def _top(values: np.ndarray) -> int:
    return int(np.argmax(values))


def _nudge(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
           max_length: int) -> np.ndarray:
    """A few entries moved by +-1, 2, 4 or 8 ulps."""
    picks = rng.choice(v.size, size=min(v.size, int(rng.integers(1, 4))), replace=False)
    steps = int(rng.choice([-1, 1]) * 2 ** rng.integers(0, 4))
    return step_ulps(to_format(v, fmt), picks, steps).astype(np.float64)


def _scale(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
           max_length: int) -> np.ndarray:
    """The row scaled by 2^U(-4, 4), about 0 or about its max (which keeps the max)."""
    factor = 2.0 ** rng.uniform(-4.0, 4.0)
    if rng.random() < 0.5:
        return v * factor
    top = v[_top(v)]
    return top + (v - top) * factor


def _shift(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
           max_length: int) -> np.ndarray:
    """The row shifted: by a random amount on any scale, or its max to 0."""
    if rng.random() < 0.25:
        return v - v[_top(v)]
    return v + rng.normal() * 10.0 ** rng.uniform(-2.0, 3.0)


def _set_gap(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
             max_length: int) -> np.ndarray:
    """One entry (mostly the runner-up) put a gap below the max; a single entry gains a partner."""
    if v.size == 1:
        v = np.append(v, v[0])
    v = v.copy()
    top = _top(v)
    rest = np.delete(np.arange(v.size), top)
    runner_up = rest[np.argmax(v[rest])]
    j = runner_up if rng.random() < 0.7 else rng.choice(rest)
    v[j] = v[top] - gap(rng, fmt)
    return v


def _edge(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
          max_length: int) -> np.ndarray:
    """The max put at the exp overflow edge (or an ulp either side), an entry put at an underflow
    edge below the max, or an entry set to an extreme of the format."""
    pick = rng.random()
    if pick < 0.4:
        edge = step_ulps(np.array([fmt.exp_overflow], fmt.np_dtype), np.array([0]),
                         int(rng.integers(-1, 2))).astype(np.float64)[0]
        return v - v[_top(v)] + edge
    v = v.copy()
    j = rng.integers(v.size)
    if pick < 0.8:
        threshold = -fmt.exp_subnormal_below if rng.random() < 0.5 else -fmt.exp_zero_below
        v[j] = v[_top(v)] - threshold + rng.uniform(-1.0, 1.0)
    else:
        v[j] = rng.choice([fmt.max, -fmt.max, fmt.min_subnormal, -fmt.min_subnormal, 0.0,
                           fmt.exp_overflow])
    return v


def _duplicate_max(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
                   max_length: int) -> np.ndarray:
    """A few entries tied with the max."""
    v = v.copy()
    v[rng.choice(v.size, size=min(v.size, int(rng.integers(1, 4))), replace=False)] = v[_top(v)]
    return v


def _mask(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
          max_length: int) -> np.ndarray:
    """An entry, or a random fraction of them, masked with -inf (the max stays)."""
    v = v.copy()
    others = np.delete(np.arange(v.size), _top(v))
    if others.size:
        count = 1 if rng.random() < 0.5 else int(rng.integers(1, others.size + 1))
        v[rng.choice(others, size=count, replace=False)] = -np.inf
    return v


def _grow(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
          max_length: int) -> np.ndarray:
    """Up to as many entries again inserted at random places: copies of entries, or entries a gap
    below the max."""
    room = max_length - v.size
    if room <= 0:
        return v
    count = int(rng.integers(1, min(room, v.size) + 1))
    finite = v[np.isfinite(v)]
    if rng.random() < 0.5:
        new = rng.choice(finite, size=count)
    else:
        new = np.array([finite.max() - gap(rng, fmt) for _ in range(count)])
    return np.insert(v, rng.integers(0, v.size + 1, size=count), new)


def _cut(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
         max_length: int) -> np.ndarray:
    """Some entries dropped (a finite one always stays)."""
    if v.size == 1:
        return v
    kept = np.sort(rng.choice(v.size, size=int(rng.integers(1, v.size)), replace=False))
    return v[kept] if np.isfinite(v[kept]).any() else v


def _cross(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
           max_length: int) -> np.ndarray:
    """Crossed with another row of the elite: entry by entry when of one length, else a head of
    one and a tail of the other."""
    if v.size == other.size and rng.random() < 0.5:
        return np.where(rng.random(v.size) < 0.5, v, other)
    child = np.concatenate([v[:rng.integers(0, v.size + 1)], other[rng.integers(0, other.size):]])
    return child[:max_length] if child.size else v


def _permute(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
             max_length: int) -> np.ndarray:
    """The entries shuffled, reversed or rotated (where an entry stands may matter to a kernel)."""
    pick = rng.integers(3)
    if pick == 0:
        return rng.permutation(v)
    return v[::-1].copy() if pick == 1 else np.roll(v, int(rng.integers(1, max(2, v.size))))


def rungs(ceiling: int) -> tuple[int, ...]:
    """The ladder's lengths (suites.ladder.LENGTHS) up to ceiling."""
    return tuple(n for n in LENGTHS if n <= ceiling)


def rung(rng: np.random.Generator, n: int, ceiling: int) -> int:
    """A length on the ladder for a row of n entries: the nearest rung above (30%) or below (20%), else
    any rung up to ceiling; then the rung itself (half the time) or its neighbour L - 1 or L + 1 (a
    limit lies between L and one of them). n where no rung is at most ceiling."""
    ladder = rungs(ceiling)
    if not ladder:
        return n
    above = [length for length in ladder if length > n]
    below = [length for length in ladder if length < n]
    pick = rng.random()
    if pick < 0.3 and above:
        base = above[0]
    elif pick < 0.5 and below:
        base = below[-1]
    else:
        base = ladder[rng.integers(len(ladder))]
    return int(np.clip(base + (0 if rng.random() < 0.5 else rng.choice([-1, 1])), 1, ceiling))


def resample(rng: np.random.Generator, v: np.ndarray, n: int) -> np.ndarray:
    """The row's own entries at length n: tiled (its pattern repeated), or padded with entries drawn
    from it (its distribution kept); fewer of them kept in order, its max among them."""
    if n == v.size:
        return v
    if n > v.size:
        if rng.random() < 0.5:
            return np.resize(v, n)
        return np.concatenate([v, rng.choice(v, size=n - v.size)])
    top = _top(v)
    rest = np.delete(np.arange(v.size), top)
    kept = np.sort(np.append(rng.choice(rest, size=n - 1, replace=False), top))
    return v[kept]


def _ladder(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
            max_length: int) -> np.ndarray:
    """The row moved to a length of the ladder (rung: the nearest rung above or below, any rung, or
    a neighbour of one) with its own entries (resample), or, a quarter of the time, as that many
    copies of its max (a uniform row: n equal entries sum to n, the ladder's own question);
    max_length here is the ladder's ceiling (mutate's ladder), which may lie above the other moves'
    longest row."""
    n = rung(rng, v.size, max_length)
    if rng.random() < 0.25:
        return np.full(n, v[_top(v)])
    return resample(rng, v, n)


def _uniform(rng: np.random.Generator, fmt: Format, v: np.ndarray, other: np.ndarray,
             max_length: int) -> np.ndarray:
    """The row made uniform, where an accumulator fails first (n equal entries sum to n): every finite
    entry set to the max or to one of its entries (half the time; its -inf entries kept or set too),
    every entry within 1 to 4 ulps below that value, or a random half or more of the entries set to
    it (a step toward uniform)."""
    finite = np.isfinite(v)
    value = v[_top(v)] if rng.random() < 0.7 else rng.choice(v[finite])
    pick = rng.random()
    if pick < 0.5:
        return np.where(finite | (rng.random() < 0.5), value, v)
    if pick < 0.8:
        # Equal within a few ulps: most entries the value itself, the rest a few ulps below it.
        row = np.full(v.size, value)
        ulps = rng.integers(0, int(rng.integers(1, 5)) + 1, size=v.size) * (rng.random(v.size) < 0.5)
        exact = to_format(row, fmt)
        for steps in np.unique(ulps[ulps > 0]):
            exact = step_ulps(exact, np.flatnonzero(ulps == steps), -int(steps))
        return exact.astype(np.float64)
    v = v.copy()
    v[rng.random(v.size) < rng.uniform(0.5, 1.0)] = value
    return v


MUTATIONS: tuple[Mutation, ...] = (_nudge, _scale, _shift, _set_gap, _edge, _duplicate_max, _mask,
                                   _grow, _cut, _cross, _permute, _uniform, _ladder)


def mutate(rng: np.random.Generator, fmt: Format, row: np.ndarray, other: np.ndarray,
           max_length: int, ladder: int | None = None) -> np.ndarray:
    """row after one to three random mutations (other: a second parent for crossing), in the format;
    rows of up to max_length entries, but the ladder's (_ladder) of up to ladder (None: max_length)."""
    values, partner = row.astype(np.float64), other.astype(np.float64)
    for _ in range(min(3, int(rng.geometric(0.5)))):
        mutation = MUTATIONS[rng.integers(len(MUTATIONS))]
        longest = (max_length if ladder is None else ladder) if mutation is _ladder else max_length
        values = to_format(mutation(rng, fmt, values, partner, longest), fmt).astype(np.float64)
    return to_format(values, fmt)
