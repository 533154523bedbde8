"""Each oracle value is computed once: references keyed by op family and input bits, in memory
and, where a folder is configured, on disk (softmax_suite.oracle.store) for later runs and other workers.

The key is the content, not the case name: two cases (or two backends) that ask about the
same bits share one computation. The memory bound counts elements, oldest out first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from softmax_suite.ops import is_vjp
from softmax_suite.oracle import store
from softmax_suite.oracle.exact import Reference, forward_references
from softmax_suite.oracle.gradients import vjp_references

MAX_ELEMENTS = 8_000_000
_memory: OrderedDict[tuple, dict[str, Reference]] = OrderedDict()
_held: dict[tuple, int] = {}  # elements per entry of _memory
_disk: list[tuple[Path, int | None]] = []


def use_disk(folder: Path | None, limit: int | None) -> None:
    """Keep references in folder from now on (None: in memory only), evicting the least recently
    used past limit bytes (None: no limit; store.limit() is the user's setting)."""
    _disk[:] = [(folder, limit)] if folder is not None else []


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def content_key(family: str, x: np.ndarray, axis: int) -> tuple:
    """(family, dtype, shape, axis, sha256 of the bits in C order)."""
    return family, x.dtype.name, x.shape, axis % max(x.ndim, 1), _digest(x)


def reference(op: str, x: np.ndarray, axis: int,
              cotangents: tuple[np.ndarray, np.ndarray] | None = None) -> Reference:
    """The exact reference of op on x along axis; a VJP needs the cotangents (g, g_row). The
    forward ops share one computation, and so do the three VJPs of one (x, g, g_row)."""
    vjp = is_vjp(op)
    if vjp and cotangents is None:
        raise ValueError(f"{op} needs cotangents (g, g_row)")
    key = (*content_key("vjp", x, axis), *map(_digest, cotangents)) if vjp \
        else content_key("forward", x, axis)
    if key in _memory:
        _memory.move_to_end(key)
    else:
        _memory[key] = _from_disk_or_computed(vjp, x, axis, cotangents)
        _held[key] = sum(reference.rounded.size for reference in _memory[key].values())
        while sum(_held.values()) > MAX_ELEMENTS and len(_memory) > 1:
            del _held[_memory.popitem(last=False)[0]]
    return _memory[key][op]


def clear() -> None:
    """Forget every reference held in memory (the disk cache stays)."""
    _memory.clear()
    _held.clear()


def _from_disk_or_computed(vjp: bool, x: np.ndarray, axis: int,
                           cotangents: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Reference]:
    compute = (lambda: vjp_references(x, *cotangents, axis)) if vjp else (lambda: forward_references(x, axis))
    if not _disk:
        return compute()
    folder, limit = _disk[0]
    inputs = [x, *cotangents] if vjp else [x]
    key = store.entry_key("vjp" if vjp else "forward", axis % max(x.ndim, 1), inputs)
    stored = store.load(folder, key)
    if stored is not None:
        return stored
    references = compute()
    store.save(folder, key, references, limit)
    return references
