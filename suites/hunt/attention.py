"""A hunted row, and attention's dimensions of it: the scale the op is of, the mask of the entries it
keeps and what lies under the mask (docs/attention.md); the mutations that set and change them.

A Row's values are a plain hunt row (suites.hunt.mutations: in the format, within the fast oracle's
spread), which the row mutations work on as ever. Its input x is those values with `garbage` written
where the mask drops entries (None: the values' own stay there), so that the values stay a plain row
whatever lies under the mask, and an entry the mask keeps again shows a value of the row, never
garbage. A row of a hunt without these dimensions has neither scale nor mask, and x is its values.

The scales are attention's usual ones, 1/sqrt(d) for head dimensions d and 0.1, rounded into the
format as a framework multiplies by them (Case.scale_in), and only those the exact oracle takes for
the format (oracle.scaled.check_scale: every one for 16-bit and float32 inputs, the powers of two
0.125 and 0.0625 for float64). The masks drop a random subset, blocks aligned to a tile width,
all entries but one, or every entry (a fully masked row, judged by the backend's declared
convention: suites.masking).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from softmax_suite.formats import Format, format_of
from softmax_suite.oracle.rounding import round_values
from softmax_suite.oracle.scaled import check_scale

HEAD_DIMENSIONS = (32, 64, 80, 96, 128, 256)
SCALES = (*(1 / math.sqrt(d) for d in HEAD_DIMENSIONS), 0.1)
TILES = (16, 32, 64, 128, 256)
# What a masked entry holds: the format's max and lowest, +-inf, NaN, or those four in turn (as the
# catalogue's attention cases write them); None: the row's own value.
GARBAGE = ("max", "-max", "inf", "-inf", "nan", "mixed")


@dataclass(frozen=True, eq=False)
class Row:
    """A candidate input: values (1-D, in the format), the scale (rounded into the format; None: no
    scale argument), the mask (bool of the values' length, True = keep; None: no mask argument) and
    the garbage written under the mask (GARBAGE, or None for the values' own)."""

    values: np.ndarray
    scale: float | None = None
    mask: np.ndarray | None = None
    garbage: str | None = None

    @property
    def plain(self) -> bool:
        return self.scale is None and self.mask is None

    @functools.cached_property
    def x(self) -> np.ndarray:
        """The input the backend and the oracle see: the values, garbage where the mask drops them."""
        if self.mask is None or self.garbage is None or self.mask.all():
            return self.values
        fmt = format_of(self.values.dtype)
        fill = {"max": [fmt.max], "-max": [-fmt.max], "inf": [math.inf], "-inf": [-math.inf],
                "nan": [math.nan], "mixed": [fmt.max, math.inf, -math.inf, math.nan]}[self.garbage]
        x = self.values.copy()
        dropped = ~self.mask
        x[dropped] = round_values(np.resize(fill, int(dropped.sum())), fmt)
        return x

    @property
    def masked(self) -> int:
        """How many entries the mask drops."""
        return 0 if self.mask is None else int(self.mask.size - self.mask.sum())

    @functools.cached_property
    def key(self) -> bytes:
        """Equal keys, the same question."""
        mask = b"-" if self.mask is None else np.packbits(self.mask).tobytes() + bytes([self.mask.size % 8])
        return b"|".join([self.values.tobytes(), repr(self.scale).encode(), mask,
                          str(self.garbage if self.masked else None).encode()])

    def with_values(self, values: np.ndarray) -> Row:
        """The row with other values: the mask fitted to their length (cut, or repeated as a tile)."""
        mask = self.mask
        if mask is not None and mask.size != values.size:
            mask = np.resize(mask, values.size)
        return dataclasses.replace(self, values=values, mask=mask)

    def kept(self) -> np.ndarray:
        """The values the mask keeps (float64)."""
        values = self.values.astype(np.float64)
        return values if self.mask is None else values[self.mask]


def as_row(row: np.ndarray | Row) -> Row:
    return row if isinstance(row, Row) else Row(row)


def asks(row: Row) -> bool:
    """Whether the row is an accuracy question: a finite value, and a finite one among those kept or
    none kept at all (a fully masked row). Kept entries that are all -inf are the special input
    'all -inf', which the catalogue's special cases ask."""
    if not np.isfinite(row.values.astype(np.float64)).any():
        return False
    if row.mask is not None and not row.mask.any():
        return True
    return bool(np.isfinite(row.kept()).any())


def settled(row: Row) -> Row:
    """A row of to_format's values (with a finite one) as a question (asks): where the mask keeps only
    -inf entries, it keeps the row's max too."""
    if asks(row) or row.mask is None:
        return row
    mask = row.mask.copy()
    mask[int(np.argmax(row.values.astype(np.float64)))] = True
    return dataclasses.replace(row, mask=mask)


@functools.cache
def scales(fmt: Format) -> tuple[float, ...]:
    """SCALES rounded once into fmt (as Case.scale_in rounds a case's scale), those check_scale
    takes for fmt, each once."""
    found: list[float] = []
    for scale in SCALES:
        rounded = float(round_values(np.array([scale]), fmt)[0])
        try:
            check_scale(rounded, fmt)
        except ValueError:
            continue
        if rounded not in found:
            found.append(rounded)
    return tuple(found)


OptionMutation = Callable[[np.random.Generator, Format, Row], Row]


def _set_scale(rng: np.random.Generator, fmt: Format, row: Row) -> Row:
    """Another of the scales, or (a quarter of the time when it has one) none."""
    choices = [s for s in scales(fmt) if s != row.scale]
    if not choices or (row.scale is not None and rng.random() < 0.25):
        return dataclasses.replace(row, scale=None)
    return dataclasses.replace(row, scale=choices[int(rng.integers(len(choices)))])


def _masked(rng: np.random.Generator, row: Row, dropped: np.ndarray) -> Row:
    """The row with dropped masked: on top of its mask half the time, else instead of it. A row that
    had no mask draws what lies under it."""
    keep = ~dropped
    if row.mask is not None and rng.random() < 0.5:
        keep &= row.mask
    garbage = row.garbage
    if row.mask is None:
        pick = int(rng.integers(len(GARBAGE) + 1))
        garbage = GARBAGE[pick] if pick < len(GARBAGE) else None
    return dataclasses.replace(row, mask=keep, garbage=garbage)


def _random_mask(rng: np.random.Generator, fmt: Format, row: Row) -> Row:
    """A random subset masked, from a few entries to most of them."""
    return _masked(rng, row, rng.random(row.values.size) < rng.uniform(0.05, 0.95))


def _tile_mask(rng: np.random.Generator, fmt: Format, row: Row) -> Row:
    """Blocks of a tile width w (16 to 256, shorter than the row) masked, beginning and ending on tile
    boundaries: one block, every other block, or the leading blocks (the first tile holds nothing)."""
    n = row.values.size
    widths = [w for w in TILES if w < n]
    if not widths:
        return _random_mask(rng, fmt, row)
    w = widths[int(rng.integers(len(widths)))]
    block = np.arange(n) // w
    k = int(rng.integers(block[-1] + 1))
    pick = rng.random()
    dropped = block == k if pick < 0.4 else block % 2 == k % 2 if pick < 0.7 else block <= k
    return _masked(rng, row, dropped)


def _all_but_one(rng: np.random.Generator, fmt: Format, row: Row) -> Row:
    """Every entry masked but one: the max, the last or any."""
    n = row.values.size
    pick = rng.random()
    kept = int(np.argmax(row.values.astype(np.float64))) if pick < 0.3 else n - 1 if pick < 0.6 \
        else int(rng.integers(n))
    dropped = np.ones(n, dtype=bool)
    dropped[kept] = False
    return _masked(rng, row, dropped)


def _all_masked(rng: np.random.Generator, fmt: Format, row: Row) -> Row:
    """Every entry masked: a fully masked row."""
    return _masked(rng, row, np.ones(row.values.size, dtype=bool))


def _flip(rng: np.random.Generator, fmt: Format, row: Row) -> Row:
    """A few entries of the mask flipped (a row without a mask gets a random one)."""
    if row.mask is None:
        return _random_mask(rng, fmt, row)
    mask = row.mask.copy()
    mask[rng.choice(mask.size, size=min(mask.size, int(rng.integers(1, 4))), replace=False)] ^= True
    return dataclasses.replace(row, mask=mask)


def _garbage(rng: np.random.Generator, fmt: Format, row: Row) -> Row:
    """Other garbage under the mask (a row without a mask gets a random one)."""
    if row.mask is None:
        return _random_mask(rng, fmt, row)
    choices = [g for g in (*GARBAGE, None) if g != row.garbage]
    return dataclasses.replace(row, garbage=choices[int(rng.integers(len(choices)))])


def _unmask(rng: np.random.Generator, fmt: Format, row: Row) -> Row:
    """No mask."""
    return dataclasses.replace(row, mask=None, garbage=None)


SCALE_MUTATIONS: tuple[OptionMutation, ...] = (_set_scale,)
MASK_MUTATIONS: tuple[OptionMutation, ...] = (_random_mask, _tile_mask, _all_but_one, _all_masked, _flip,
                                              _garbage, _garbage, _unmask)


def option_mutations(options: tuple[str, ...]) -> tuple[OptionMutation, ...]:
    """The mutations of the options a backend takes: the scale's weighted like two of the mask's."""
    return (*(SCALE_MUTATIONS * 2 if "scale" in options else ()),
            *(MASK_MUTATIONS if "mask" in options else ()))


def mutate_options(rng: np.random.Generator, fmt: Format, row: Row, options: tuple[str, ...]) -> Row:
    """row after one or two mutations of its scale and mask (of the options given), as a question."""
    mutations = option_mutations(options)
    for _ in range(min(2, int(rng.geometric(0.5)))):
        row = mutations[int(rng.integers(len(mutations)))](rng, fmt, row)
    return settled(row)
