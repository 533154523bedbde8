"""The cotangents g that the VJP cases pair with an input: named, seeded, built in the dtype.

Each kind gives a full cotangent (the input's shape, for softmax_vjp and log_softmax_vjp) and
a per-row one (the shape without the reduction axis, for logsumexp_vjp and a per-row loss; a
reduced loss takes the first of these as its scalar).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from softmax_suite.formats import Format
from softmax_suite.oracle.rounding import round_values

Draw = Callable[[np.random.Generator, Format, tuple[int, ...], int], np.ndarray]


@dataclass(frozen=True)
class Cotangent:
    name: str
    description: str
    full: Draw
    per_row: Draw


def _normal(rng: np.random.Generator, fmt: Format, shape: tuple[int, ...], axis: int) -> np.ndarray:
    return rng.normal(size=shape)


def _one_hot(rng: np.random.Generator, fmt: Format, shape: tuple[int, ...], axis: int) -> np.ndarray:
    g = np.zeros(shape)
    if shape[axis]:
        hot = rng.integers(0, shape[axis], size=tuple(s for i, s in enumerate(shape) if i != axis))
        np.put_along_axis(g, np.expand_dims(hot, axis), 1.0, axis=axis)
    return g


def _constant(rng: np.random.Generator, fmt: Format, shape: tuple[int, ...], axis: int) -> np.ndarray:
    return np.full(shape, 0.75)


def _ones(rng: np.random.Generator, fmt: Format, shape: tuple[int, ...], axis: int) -> np.ndarray:
    return np.ones(shape)


def _mixed(rng: np.random.Generator, fmt: Format, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Random signs and magnitudes spread over 2^-k .. 2^k, k = min(24, (emax - 2) // 2), so
    that products with y and sums over a row stay inside the format."""
    k = min(24, (fmt.emax - 2) // 2)
    return rng.choice([-1.0, 1.0], size=shape) * np.exp2(rng.uniform(-k, k, size=shape))


COTANGENTS: dict[str, Cotangent] = {c.name: c for c in (
    Cotangent("random", "g ~ N(0, 1)", _normal, _normal),
    Cotangent("one_hot", "one 1 per row, zeros elsewhere (the logsumexp cotangent is 1)",
              _one_hot, _ones),
    Cotangent("constant", "g = 0.75 everywhere: the exact softmax VJP is 0 (shift invariance)",
              _constant, _constant),
    Cotangent("mixed", "random signs, magnitudes spread over many binades", _mixed, _mixed),
    Cotangent("ones", "g = 1 everywhere: a loss's own gradient, as backward() starts it", _ones, _ones),
)}
ALL: tuple[str, ...] = tuple(COTANGENTS)
# The softmax family's cases' (a loss case's are softmax_suite.suites.losses.LOSS_COTANGENTS).
FAMILY: tuple[str, ...] = ("random", "one_hot", "constant", "mixed")


def build_cotangents(name: str, seed: int, shape: tuple[int, ...], axis: int,
                     fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """(g, g_row) of kind name in the format, seeded by the case's seed and the kind's name."""
    cotangent = COTANGENTS[name]
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    axis = axis % len(shape)
    reduced = tuple(size for i, size in enumerate(shape) if i != axis)
    full = round_values(cotangent.full(rng, fmt, shape, axis), fmt)
    per_row = round_values(cotangent.per_row(rng, fmt, reduced, axis), fmt)
    return full, per_row
