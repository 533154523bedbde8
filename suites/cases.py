"""The case catalogue: named, seeded inputs, built once in the target dtype (bit-identical for all).

A case is data: a name, a generator of float64 values (given the target format, so that
thresholds follow from p, emin and emax), an axis, a seed, the dtypes it applies to, a memory
layout, tags and the cotangent kinds its VJP questions use (softmax_suite.suites.cotangents). `build`
rounds the values into the dtype once; the oracle and every backend then see exactly those bits.
CATALOGUE is the fixed cases (FIXED) followed by the found ones of the corpus (softmax_suite.suites.corpus).
"""

from __future__ import annotations

import fnmatch
import functools
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from softmax_suite.dtypes import DTYPES, FLOAT8_DTYPES, STANDARD_DTYPES
from softmax_suite.formats import Format, format_of
from softmax_suite.oracle.rounding import round_values
from softmax_suite.suites import corpus, cotangents, ladder, losses, patterns
from softmax_suite.suites.losses import Loss

Generator = Callable[[np.random.Generator, Format], np.ndarray]
MaskGenerator = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
LAYOUTS = ("contiguous", "strided", "transposed")


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    generate: Generator
    axis: int = -1
    dtypes: tuple[str, ...] = STANDARD_DTYPES  # DTYPES: the float8 formats too
    layout: str = "contiguous"
    tags: frozenset[str] = field(default_factory=frozenset)
    seed: int | None = None
    cotangents: tuple[str, ...] = cotangents.FAMILY
    # The special input this case stands for in the special-value table (docs/invariants.md, policy).
    special_input: str | None = None
    # Attention's forms: the op is of scale * x (the scale rounded into each dtype: the one a
    # framework multiplies by), over the entries mask(rng, shape) keeps (True = keep).
    scale: float | None = None
    mask: MaskGenerator | None = None
    # Masked entries hold garbage (the format's max, +inf, -inf and NaN in turn), which must not
    # count; False keeps the generated values there (a kernel's own sentinels).
    garbage_under_mask: bool = True
    # A loss case (asked of the loss ops only, and only they ask it): its targets and options.
    loss: Loss | None = None
    # A rung of the length ladder: the kind of its one row (LADDER_ROWS).
    ladder: str | None = None
    # Every bit pattern of the format as the varying entry of a short row: the row's key in
    # softmax_suite.suites.patterns.ROWS (results then carry the error per binade of |x|).
    pattern: str | None = None

    @property
    def options(self) -> tuple[str, ...]:
        """The optional keyword arguments its ops are called with (softmax_suite.protocol.OPTIONS)."""
        given = (("scale", self.scale), ("mask", self.mask))
        loss = self.loss.options if self.loss else ()
        return tuple(name for name, value in given if value is not None) + loss

    def loss_arguments(self, dtype: str) -> dict:
        """A loss case's target, reduction and options in dtype (Loss.arguments); {} for another case."""
        return {} if self.loss is None else self.loss.arguments(self.generate(
            np.random.default_rng(self.resolved_seed), format_of(dtype)), self.resolved_seed, dtype)

    @property
    def widest(self) -> str:
        """float64 where the case runs it, else its first dtype (every bit pattern of float64
        would be 2^64 rows): the dtype its shape and finiteness are read from."""
        return "float64" if "float64" in self.dtypes else self.dtypes[0]

    @functools.cached_property
    def row_length(self) -> int:
        """The length of its rows (the reduced axis), from its values in its widest dtype."""
        values = self.build(self.widest)
        return int(values.shape[self.axis]) if values.ndim else 1

    @functools.cached_property
    def finite(self) -> bool:
        """Whether every entry its mask keeps is finite (in its widest dtype: a narrower one may
        overflow more)."""
        values = self.build(self.widest)
        kept = values if self.mask is None else values[self.build_mask(values.shape)]
        return bool(np.isfinite(kept).all())

    def scale_in(self, dtype: str) -> float | None:
        """The scale rounded once into dtype, as a Python float; None for no scale."""
        if self.scale is None:
            return None
        return float(round_values(np.array([self.scale]), format_of(dtype))[0])

    def build_mask(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The mask for an input of shape (its own seed, one past the values'); None for no mask."""
        if self.mask is None:
            return None
        mask = np.asarray(self.mask(np.random.default_rng(self.resolved_seed + 1), shape), dtype=bool)
        return np.broadcast_to(mask, shape).copy()

    @property
    def resolved_seed(self) -> int:
        """The explicit seed, or a stable one derived from the name."""
        return self.seed if self.seed is not None else zlib.crc32(self.name.encode())

    def build(self, dtype: str) -> np.ndarray:
        """The input in dtype (values rounded once from float64), in the case's memory layout."""
        fmt = format_of(dtype)
        values = np.asarray(self.generate(np.random.default_rng(self.resolved_seed), fmt))
        if self.mask is not None and self.garbage_under_mask:
            values = values.astype(np.float64)
            dropped = ~self.build_mask(values.shape)
            values[dropped] = np.resize([fmt.max, math.inf, -math.inf, math.nan], int(dropped.sum()))
        # Values already in the dtype (a found case's bits) are kept as they are: a NaN's payload
        # would not survive the way through float64 in every format.
        x = values if values.dtype == fmt.np_dtype else round_values(values, fmt)
        if self.layout == "strided":
            base = np.zeros((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype)
            base[..., ::2] = x
            return base[..., ::2]
        if self.layout == "transposed":
            return np.ascontiguousarray(x.T).T
        return x


# Generators. Each returns float64 values; `build` rounds them into the format.

def fixed(rows: list) -> Generator:
    return lambda rng, fmt: np.array(rows, dtype=np.float64)


def normal(shape: tuple[int, ...], scale: float) -> Generator:
    return lambda rng, fmt: rng.normal(scale=scale, size=shape)


def dominant(rows: int, n: int, gap: Callable[[Format], float]) -> Generator:
    """One entry per row leads the others by about `gap` (offset rows by 0, 0.5, -2, 40)."""

    def generate(rng: np.random.Generator, fmt: Format) -> np.ndarray:
        offsets = np.resize([0.0, 0.5, -2.0, 40.0], rows)[:, None]
        spread = rng.uniform(0.0, 0.5, size=(rows, n - 1))
        values = np.concatenate([np.zeros((rows, 1)), -(gap(fmt) + spread)], axis=1) + offsets
        return rng.permuted(values, axis=1)

    return generate


def at_absorb_gap(n: int, rows: tuple[tuple[int, int], ...]) -> Generator:
    """Rows of n: a maximum of 0 at a given index, a given count of entries (at seeded positions)
    at -p ln2, where e^(x_j - a) is about u = 2^-p, and the rest at -2 p ln2 (about u^2 each).
    Pairwise summation adds the small terms among themselves first and keeps them; a running sum
    that already holds the maximum (about 1) turns each into 0 or 2u, about u lost or gained per
    term, so the error grows with the number of them it takes after the maximum."""

    def generate(rng: np.random.Generator, fmt: Format) -> np.ndarray:
        values = np.full((len(rows), n), -2.0 * fmt.absorb_gap)
        for row, (leader, count) in zip(values, rows, strict=True):
            row[rng.choice(np.delete(np.arange(n), leader), size=count, replace=False)] = -fmt.absorb_gap
            row[leader] = 0.0
        return values

    return generate


def equal_large(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    levels = [min(1e4, fmt.max), fmt.max, fmt.exp_overflow, -fmt.max]
    return np.repeat(np.array(levels)[:, None], 6, axis=1)


def overflow_edge(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    """Logits at the largest x with finite exp(x) in the format, and the next value above it."""
    edge = fmt.exp_overflow
    above = float(np.nextafter(np.array(edge, fmt.np_dtype), np.array(np.inf, fmt.np_dtype)))
    return np.array([
        [edge, edge, 0.0, -1.0],
        [above, edge - 1.0, 1.0, 0.0],
        [above, above, above, edge],
        [edge, -edge, 0.5 * edge, 2.0],
    ])


def underflow_gaps(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    """Gaps spanning the range where exp(x_j - a) is subnormal (emin ln 2) and rounds to zero
    ((emin - p) ln 2), so that softmax outputs are normal, subnormal and zero in one row."""
    gaps = np.linspace(-fmt.exp_subnormal_below - 1.0, -fmt.exp_zero_below + 2.0, 63)
    row = np.concatenate([[0.0], -gaps])
    return np.stack([row, row + 3.0, rng.permuted(row) - 1.0])


def underflowed_sum(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    """Rows of 384 with the max at 0 whose other exponentials exp(x_i) lie below the smallest
    normal: spread over the subnormal range, at the edge where they round to zero (logsumexp is
    then a subnormal sum of terms each below one unit of the smallest subnormal), at the edge of
    the normal range, and half of them beside normal terms."""
    subnormal, zero = -fmt.exp_subnormal_below, -fmt.exp_zero_below  # gaps, e.g. 87.3 and 104.0
    n = 383
    gaps = [rng.uniform(subnormal, zero + 1.0, n), rng.uniform(zero - 1.0, zero + 1.0, n),
            rng.uniform(subnormal - 2.0, subnormal + 2.0, n),
            np.concatenate([np.full(n // 2, 1.0), rng.uniform(subnormal, zero, n - n // 2)])]
    return np.stack([rng.permuted(np.concatenate([[0.0], -row])) for row in gaps])


def masked(shape: tuple[int, ...], scale: float, fraction: float) -> Generator:
    """-inf masks over a fraction of the entries; every row keeps at least one finite entry, and
    the last row keeps exactly one."""

    def generate(rng: np.random.Generator, fmt: Format) -> np.ndarray:
        values = rng.normal(scale=scale, size=shape)
        mask = rng.random(shape) < fraction
        mask[:, 0] = False
        mask[-1, 1:] = True
        return np.where(mask, -np.inf, values)

    return generate


def with_rows(base: Generator, rows: dict[int, list]) -> Generator:
    """Replace some rows of a generated batch by fixed special rows."""

    def generate(rng: np.random.Generator, fmt: Format) -> np.ndarray:
        values = base(rng, fmt)
        for index, row in rows.items():
            values[index] = row
        return values

    return generate


def single_elements(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    values = rng.normal(scale=10.0, size=(512, 1))
    values[:6, 0] = [fmt.max, -fmt.max, 0.0, fmt.min_subnormal, -np.inf, fmt.exp_overflow]
    return values


def tied(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    values = rng.normal(scale=2.0, size=(6, 16)) - 8.0
    for row, ties in enumerate([2, 3, 4, 7, 16, 2]):
        columns = rng.choice(16, size=ties, replace=False)
        values[row, columns] = 1.25 * row
    return values


def huge_range(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    row = np.array([fmt.max, -fmt.max, 0.0, fmt.max / 2, -fmt.max / 2, fmt.min_subnormal, 1.0, -1.0])
    return np.stack([row, rng.permuted(-np.abs(row)), rng.permuted(row)])


def constant(shape: tuple[int, ...], value: float) -> Generator:
    return lambda rng, fmt: np.full(shape, value)


# Attention's cases: generators of the logits and of their masks (True = keep; a mask has its own
# seed, and Case.build writes garbage where it drops entries).

def causal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Query i keeps keys 0..i (a square's lower triangle)."""
    return np.tril(np.ones(shape[-2:], dtype=bool))


def some_rows_fully_masked(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random masks keeping about half, with rows 1 and 4 keeping nothing and row 6 one entry."""
    mask = rng.random(shape) < 0.5
    mask[:, 0] |= True
    mask[1] = mask[4] = False
    mask[6] = False
    mask[6, shape[-1] // 3] = True
    return mask


def leading_columns_masked(count: int) -> MaskGenerator:
    """The first count columns masked: the first tile of every width up to count holds nothing."""
    return lambda rng, shape: np.arange(shape[-1]) >= count


def tile_aligned(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Row r masks every other block of w = 16, 32, 64, 128, 256 columns (in turn), starting with
    the first or the second block: masked slices that begin and end on tile boundaries."""
    columns = np.arange(shape[-1])
    widths = np.resize([16, 32, 64, 128, 256], shape[0])
    return np.array([(columns // w + r // 5) % 2 == 1 for r, w in enumerate(widths)])


def only_columns(*kept: int) -> MaskGenerator:
    """Every row keeps only these columns (negative: from the end)."""

    def mask(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        keep = np.zeros(shape[-1], dtype=bool)
        keep[list(kept)] = True
        return np.broadcast_to(keep, shape)

    return mask


def rising(rows: int, n: int, rise: float) -> Generator:
    """A row maximum rising slowly from tile to tile (by rise over the row), with noise below it:
    an online softmax rescales its running sum at almost every tile."""
    return lambda rng, fmt: np.linspace(0.0, rise, n) - rng.uniform(0.0, 0.5, size=(rows, n))


def large_products(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    """Logits of 2^10 to 2^40 (within the format) beside 0 and each other: where a compiler fuses
    x * c - max into one FMA, the argmax's own difference is the product's rounding error, not 0
    (jax.jit's softmax of 0.1 * [2^35 1.2345, 0] in float32 gave NaN)."""
    top = min(40, int(math.log2(fmt.max)) - 2)
    rows = []
    for k in (10, 20, 30, top):
        m = 1.2345 * 2.0 ** min(k, top)
        rows += [[m, 0.0, 0.0, 0.0], [0.0, m, -m, 1.0], [m, m / 2, m / 3, -m]]
    return np.array(rows)


def below_sentinels(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    """Kept logits (the odd columns) below the finite sentinels kernels write into masked entries
    (the even columns hold them: -1e4, -5e4 and the format's lowest), so that a kernel that masks
    with its sentinel instead of -inf gives the masked entries most of the weight."""
    rows = []
    for sentinel, kept in ((-1e4, -2e4), (-5e4, -6e4), (-fmt.max, -fmt.max)):
        sentinel, kept = max(sentinel, -fmt.max), max(kept, -fmt.max)
        row = np.empty(256)
        row[0::2] = sentinel
        row[1::2] = kept + rng.uniform(0.0, 4.0, 128) * (kept != -fmt.max)
        rows.append(row)
    return np.array(rows)


def odd_columns(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.arange(shape[-1]) % 2 == 1, shape)


def short_count(n: int) -> str:
    """A count as case names write it: 512, 65k, 1M."""
    return f"{n}" if n < 1000 else f"{n // 1000}k" if n < 10**6 else f"{n // 10**6}M"


SIXTEEN_BIT = ("float16", "bfloat16")
# (index of the maximum, entries at the absorb gap) per row of absorb_gap_n1k: all the others,
# then 500 with the maximum first, in the middle and last.
ABSORB_GAP_ROWS = ((0, 1023), (0, 500), (511, 500), (1023, 500))
LONG_ROW_COTANGENTS = ("random", "constant")
SPECIAL = frozenset({"special"})
FOUND = frozenset({"found"})

# softmax(scale * x) over a mask, as attention computes it (docs/attention.md). A non-power-of-two
# scale only where its products with the format's values are exact in float64 (oracle.scaled):
# 16-bit and float32 inputs. Masked entries hold garbage (Case.build).
NOT_FLOAT64 = ("float16", "bfloat16", "float32")
ATTENTION_TAGS = frozenset({"attention"})
ATTENTION: tuple[Case, ...] = (
    Case("attention_scaled_d96", "16 rows of 128 logits, N(0, 8^2), scale 1/sqrt(96)",
         normal((16, 128), 8.0), dtypes=NOT_FLOAT64, tags=ATTENTION_TAGS, scale=1 / math.sqrt(96)),
    Case("attention_scaled_d64", "16 rows of 128 logits, N(0, 8^2), scale 1/sqrt(64) = 0.125 (exact)",
         normal((16, 128), 8.0), tags=ATTENTION_TAGS, scale=0.125),
    Case("attention_large_products", "logits of 1.2345 * 2^10 to 2^40 beside 0, scale 0.1: the FMA of "
         "x * c - max", large_products, dtypes=NOT_FLOAT64, tags=ATTENTION_TAGS, scale=0.1),
    Case("attention_causal", "a 64 x 64 causal mask over N(0, 3^2) logits, scale 0.125; masked entries "
         "hold max, +inf, -inf, NaN", normal((64, 64), 3.0), tags=ATTENTION_TAGS,
         scale=0.125, mask=causal),
    Case("attention_fully_masked", "random masks, rows 1 and 4 fully masked, row 6 one entry kept",
         normal((8, 32), 3.0), tags=ATTENTION_TAGS,
         mask=some_rows_fully_masked, special_input="fully masked row"),
    Case("online_first_tile_masked", "4 rows of 512, the first 256 columns masked (the first tile of "
         "every width to 256)", normal((4, 512), 3.0),
         tags=ATTENTION_TAGS, mask=leading_columns_masked(256)),
    Case("online_rising_max", "4 rows of 1024 whose maximum rises by 30 over the row, tile by tile",
         rising(4, 1024, 30.0), tags=ATTENTION_TAGS),
    Case("online_tile_aligned", "10 rows of 512, every other block of 16 to 256 columns masked",
         normal((10, 512), 3.0), tags=ATTENTION_TAGS, mask=tile_aligned),
    Case("online_last_tile_one", "4 rows of 512 keeping only the last column",
         normal((4, 512), 3.0), tags=ATTENTION_TAGS, mask=only_columns(-1)),
    Case("online_below_sentinel", "kept logits below the masked entries' sentinels -1e4, -5e4 and the "
         "format's lowest", below_sentinels, tags=ATTENTION_TAGS, mask=odd_columns,
         garbage_under_mask=False),
    Case("online_long_one_kept", "one row of 65536 with every entry masked but one (index 40000)",
         normal((1, 65536), 3.0), tags=ATTENTION_TAGS | {"long"},
         mask=only_columns(40000), cotangents=LONG_ROW_COTANGENTS),
)

# Cross-entropy as training calls it (docs/cross-entropy.md): logits (N, C), targets and the loss's
# options; asked of the loss ops only. The vocabularies are a language model's at initialisation.
LOSS_TAGS = frozenset({"loss"})


def _loss_case(name: str, description: str, generate: Generator, loss: Loss, **more) -> Case:
    return Case(name, description, generate, tags=LOSS_TAGS | more.pop("tags", frozenset()), loss=loss,
                cotangents=more.pop("cotangents", losses.LOSS_COTANGENTS), **more)


LOSS: tuple[Case, ...] = (
    _loss_case("loss_typical", "64 rows of 1000 logits N(0, 2^2), random targets, mean",
               normal((64, 1000), 2.0), Loss(losses.random_targets)),
    _loss_case("loss_sum", "32 rows of 100 logits N(0, 4^2), random targets, sum",
               normal((32, 100), 4.0), Loss(losses.random_targets, reduction="sum")),
    _loss_case("loss_confident_correct", "16 rows of 8 whose target leads by 1 to past the gap where "
               "exp rounds to 0: losses from normal to subnormal to 0, per row",
               losses.confident(16, 8), Loss(losses.argmax_targets, reduction="none")),
    _loss_case("loss_confident_wrong", "rows of 64 N(0, 1) whose target trails by 10 to 1e4: losses "
               "up to 1e4, per row", losses.wrong_by((10.0, 100.0, 1000.0, 1e4), 64),
               Loss(losses.argmin_targets, reduction="none")),
    *(_loss_case(f"vocab_{short_count(n)}", f"{rows} rows of a {n}-class vocabulary at initialisation, "
                 "N(0, 0.02^2), mean", normal((rows, n), 0.02), Loss(losses.random_targets),
                 dtypes=SIXTEEN_BIT, tags=frozenset({"long"}), cotangents=("ones",))
      for rows, n in ((4, 32000), (2, 128256), (2, 256000))),
    _loss_case("loss_target_masked", "rows of 16 with -inf logits (a vocabulary mask), targets on them "
               "where a row has one: loss +inf, per row", losses.with_masked,
               Loss(losses.on_masked, reduction="none")),
    _loss_case("loss_special", "rows holding a NaN, a +inf, only -inf, one -inf, and a plain row, per "
               "row", losses.with_special_rows, Loss(losses.random_targets, reduction="none"),
               special_input="NaN, +inf, -inf logits"),
    _loss_case("loss_all_ignored", "every row's target is the ignore_index -100, mean: 0/0 = NaN",
               normal((8, 10), 1.0), Loss(losses.every_row(-100), ignore_index=-100)),
    _loss_case("loss_ignore_negative", "ignore_index -1 on every third row, mean over the others",
               normal((24, 50), 2.0), Loss(losses.with_ignored(-1, 3), ignore_index=-1)),
    _loss_case("loss_ignore_in_range", "ignore_index 3, a class index, on every fourth row, mean",
               normal((24, 50), 2.0), Loss(losses.with_ignored(3, 4), ignore_index=3)),
    _loss_case("loss_smoothing", "label smoothing 0.1 over 32 rows of 100 logits N(0, 3^2), mean",
               normal((32, 100), 3.0), Loss(losses.random_targets, label_smoothing=0.1)),
    _loss_case("loss_smoothing_masked", "label smoothing 0.1 with -inf logits (the smoothed term is "
               "+inf), per row", losses.with_masked,
               Loss(losses.random_targets, reduction="none", label_smoothing=0.1)),
    _loss_case("loss_weights", "class weights in [0.5, 2] with every third 0, 48 rows of 30, mean",
               normal((48, 30), 2.0), Loss(losses.random_targets, weight=losses.some_zero_weights)),
)

# The length ladder (docs/low-precision.md): one row per case at each length where a narrow
# accumulator gives out, for every op and dtype. A uniform row's exact values are one per op
# (cheap at any length) and its cotangent is constant; the others take a random one.
# The kinds of row, by the name cases and records give them: equal logits (every exponential is 1,
# the sum n), a language model's logits at initialisation (exponentials near 1 but not equal).
LADDER_ROWS: dict[str, tuple[Callable[[int], Generator], str]] = {
    "uniform": (lambda n: constant((1, n), 0.0), "equal logits (0)"),
    "near_uniform": (lambda n: normal((1, n), 0.02), "logits N(0, 0.02^2)"),
    "random": (lambda n: normal((1, n), 1.0), "logits N(0, 1)"),
}


def _ladder_case(n: int, rows: str) -> Case:
    generate, text = LADDER_ROWS[rows]
    slow = n in ladder.SLOW_LENGTHS
    tags = {"ladder"} | ({"long"} if n >= 65504 else set()) | ({"slow"} if slow else set())
    return Case(f"ladder_{rows}_n{n}", f"one row of {n} {text}", generate(n),
                dtypes=("float32",) if slow else STANDARD_DTYPES, ladder=rows, tags=frozenset(tags),
                cotangents=("constant",) if rows == "uniform" else ("random",))


LADDER: tuple[Case, ...] = tuple(_ladder_case(n, rows) for n in (*ladder.LENGTHS, *ladder.SLOW_LENGTHS)
                                 for rows in LADDER_ROWS)

# Every bit pattern of a 16-bit or float8 format as the varying entry of a short row
# (docs/low-precision.md):
# the finite ones, and apart (so that a special value's known deviation covers no number) every
# NaN payload and both infinities.
NARROW = (*SIXTEEN_BIT, *FLOAT8_DTYPES)
PATTERNS: tuple[Case, ...] = tuple(
    case for kind, row in patterns.ROWS.items() for case in (
        Case(f"patterns_{kind}", f"each finite bit pattern of the format as x in {row}, one row each",
             patterns.rows_of(kind), dtypes=NARROW, tags=frozenset({"patterns"}), pattern=kind,
             cotangents=("random",)),
        Case(f"patterns_{kind}_nonfinite", f"each NaN payload and infinity of the format as x in {row}",
             patterns.rows_of(kind, finite=False), dtypes=NARROW, tags=SPECIAL | {"patterns"},
             pattern=kind, cotangents=("random",), special_input="every NaN and infinity")))

FIXED: tuple[Case, ...] = (
    Case("glossary", "the worked example [1.5, 2.2, -0.3, 0.8]; softmax ~ [0.272, 0.548, 0.045, 0.135]",
         fixed([1.5, 2.2, -0.3, 0.8]), dtypes=DTYPES),
    Case("random_n2", "256 rows of 2 logits, N(0, 1)", normal((256, 2), 1.0), dtypes=DTYPES),
    Case("random_n31_s3", "64 rows of 31 logits, N(0, 3^2)", normal((64, 31), 3.0), dtypes=DTYPES),
    *(Case(f"random_n1k_s{scale}", f"8 rows of 1000 logits, N(0, {scale}^2)",
           normal((8, 1000), float(scale)), dtypes=DTYPES if scale == 1 else STANDARD_DTYPES)
      for scale in (1, 10, 100)),
    Case("random_n100k_s10", "one row of 100000 logits, N(0, 10^2)", normal((1, 100_000), 10.0),
         cotangents=LONG_ROW_COTANGENTS),
    Case("dominant_gap_below", "one entry leads by p ln2 - 1 (the others still count in 1 + t)",
         dominant(8, 8, lambda fmt: fmt.absorb_gap - 1.0)),
    Case("dominant_gap_above",
         "one entry leads by p ln2 + 1 (each 1 + e^-d alone rounds to 1; log1p keeps t)",
         dominant(8, 8, lambda fmt: fmt.absorb_gap + 1.0)),
    Case("absorb_gap_n1k",
         "4 rows of 1024: a maximum of 0 at index 0, 0, 511, 1023, with 1023, 500, 500, 500 entries at "
         "-p ln2 (e^(x_j - a) ~ u: a running sum that holds the maximum rounds each to 0 or 2u) and the "
         "rest at -2 p ln2", at_absorb_gap(1024, ABSORB_GAP_ROWS)),
    Case("equal_large", "rows of equal logits at 1e4, the format's max, the exp overflow edge, -max",
         equal_large, dtypes=DTYPES),
    Case("overflow_edge", "logits at the largest x with finite exp(x), and the next value above",
         overflow_edge),
    Case("underflow_gaps", "gaps that make outputs normal, subnormal and zero in one row",
         underflow_gaps, dtypes=DTYPES, special_input="subnormal outputs"),
    Case("underflowed_sum", "4 rows of 384 whose other exponentials all lie below the smallest normal "
         "(logsumexp a subnormal sum of terms that round to 0 or 1 unit)", underflowed_sum),
    Case("neg_inf_mask", "-inf masks over 40% of the entries; one row with a single finite entry",
         masked((16, 64), 3.0, 0.4), dtypes=(*STANDARD_DTYPES, "float8_e5m2"),
         special_input="-inf mask"),
    Case("all_neg_inf", "rows that are all -inf among ordinary rows",
         with_rows(normal((4, 8), 2.0), {1: [-math.inf] * 8, 3: [-math.inf] * 8}), tags=SPECIAL,
         special_input="all -inf"),
    Case("pos_inf", "+inf entries: one, two, with -inf",
         with_rows(normal((4, 6), 2.0), {0: [math.inf, 1, 2, 3, 4, 5],
                                         1: [math.inf, 0, math.inf, -1, 2, 0],
                                         2: [math.inf, -math.inf, 0, 1, 2, 3]}), tags=SPECIAL,
         special_input="+inf"),
    Case("nan", "NaN entries: alone, with +inf, with -inf",
         with_rows(normal((4, 6), 2.0), {0: [0, math.nan, 2, 3, 4, 5],
                                         1: [math.nan, math.inf, 0, 1, 2, 3],
                                         2: [-math.inf, 0, 1, math.nan, 2, 3]}), tags=SPECIAL,
         special_input="NaN"),
    Case("empty", "rows of length zero (shape (3, 0))", constant((3, 0), 0.0), tags=SPECIAL,
         special_input="empty"),
    Case("single_element", "512 rows of one element, including +-max, 0, the smallest subnormal, -inf",
         single_elements, dtypes=(*STANDARD_DTYPES, "float8_e5m2"), special_input="single element"),
    Case("tied_max", "rows whose maximum is shared by 2, 3, 4, 7 and all 16 entries", tied, dtypes=DTYPES),
    Case("huge_range", "entries from -max to max in one row (x - a overflows to -inf)", huge_range,
         dtypes=DTYPES),
    Case(f"long_random_n{short_count(65536)}", "one row of 65536 logits, N(0, 1): needs a wide accumulator",
         normal((1, 65536), 1.0), dtypes=SIXTEEN_BIT, tags=frozenset({"long"}),
         cotangents=LONG_ROW_COTANGENTS),
    Case(f"long_equal_n{short_count(65536)}", "65536 equal logits: the sum 65536 overflows float16",
         constant((1, 65536), 0.0), dtypes=SIXTEEN_BIT, tags=frozenset({"long"}),
         cotangents=LONG_ROW_COTANGENTS),
    Case(f"long_random_n{short_count(2**20)}", "one row of 2^20 logits, N(0, 4)",
         normal((1, 2**20), 2.0), tags=frozenset({"long"}), cotangents=("random",)),
    Case(f"long_random_n{short_count(2**22)}", "one row of 2^22 logits, N(0, 4)",
         normal((1, 2**22), 2.0), tags=frozenset({"long", "slow"}), cotangents=("random",)),
    *LADDER,
    *PATTERNS,
    *ATTENTION,
    *LOSS,
    Case("axis1_3d", "reduce the middle axis of a (6, 64, 5) array", normal((6, 64, 5), 4.0), axis=1),
    Case("axis0_4d", "reduce the first axis of a (48, 3, 4, 5) array", normal((48, 3, 4, 5), 4.0),
         axis=0),
    Case("axis2_4d", "reduce axis 2 of a (2, 3, 40, 7) array", normal((2, 3, 40, 7), 4.0), axis=2),
    Case("strided", "every other element of a wider buffer (row stride 2 elements)",
         normal((8, 500), 5.0), layout="strided"),
    Case("transposed", "a Fortran-ordered (16, 300) array reduced along its strided last axis",
         normal((16, 300), 5.0), layout="transposed"),
)


def found_case(entry: corpus.Entry) -> Case:
    """A corpus entry as a case: its dtype only, and build(dtype) gives back exactly its bits. The
    seed is the hunt's, from which a VJP hunt built its cotangents: the catalogue builds the same.
    An entry found with attention's options asks with them: its scale (already in its dtype, which
    scale_in keeps) and its mask; the bits already hold what lay under the mask, so no garbage is
    written there. An entry of a loss op is a loss case (asked of the loss ops only): its targets,
    reduction and options exactly as saved (the weights already in its dtype), its cotangents the
    loss cases' kinds and the hunt's."""
    mask = entry.mask
    loss, kinds = None, cotangents.FAMILY
    if entry.target is not None:
        target, weight = entry.target, entry.weight
        loss = Loss(lambda rng, values: target.copy(), reduction=entry.reduction,
                    ignore_index=entry.ignore_index, label_smoothing=entry.label_smoothing or 0.0,
                    weight=None if weight is None else (lambda rng, classes: weight.astype(np.float64)))
        kinds = tuple(dict.fromkeys((*losses.LOSS_COTANGENTS, *filter(None, [entry.cotangent]))))
    return Case(entry.name, entry.description, lambda rng, fmt: entry.x.copy(), dtypes=(entry.dtype,),
                tags=FOUND | (LOSS_TAGS if loss else frozenset()), seed=entry.seed, scale=entry.scale,
                mask=None if mask is None else (lambda rng, shape: mask.copy()), garbage_under_mask=False,
                loss=loss, cotangents=kinds)


@functools.cache
def _catalogue() -> tuple[tuple[Case, ...], dict[str, Case]]:
    # Read at first use, not at import: pytest imports this module (through the plugin) before a
    # conftest can set SOFTMAX_SUITE_CORPUS; a CorpusError is raised again at every use.
    where = corpus.location()
    cases = (*FIXED, *(found_case(entry) for entry in (corpus.read(where) if where else [])))
    return cases, {case.name: case for case in cases}


class _Catalogue(Sequence):
    """The fixed cases, then the corpus's found cases."""

    def __getitem__(self, index):
        return _catalogue()[0][index]

    def __len__(self) -> int:
        return len(_catalogue()[0])

    def __iter__(self) -> Iterator[Case]:
        return iter(_catalogue()[0])


class _ByName(Mapping):
    """Every case of CATALOGUE by name, in catalogue order."""

    def __getitem__(self, name: str) -> Case:
        return _catalogue()[1][name]

    def __len__(self) -> int:
        return len(_catalogue()[1])

    def __iter__(self) -> Iterator[str]:
        return iter(_catalogue()[1])


CATALOGUE: Sequence[Case] = _Catalogue()
CASES: Mapping[str, Case] = _ByName()


def select_cases(patterns: list[str] | None, include_slow: bool = False) -> list[Case]:
    """Cases whose names match any glob pattern (all when none given); slow ones on request."""
    chosen = [case for case in CATALOGUE
              if not patterns or any(fnmatch.fnmatchcase(case.name, p) for p in patterns)]
    if include_slow:
        return chosen
    return [case for case in chosen if "slow" not in case.tags or _named(case, patterns)]


def _named(case: Case, patterns: list[str] | None) -> bool:
    """A slow case asked for by its exact name runs without --slow."""
    return bool(patterns) and case.name in patterns
