"""Each oracle value is computed once: references keyed by op family and input bits, in memory
and, where a folder is configured, on disk (softmax_suite.oracle.store) for later runs and other workers.

The key is the content, not the case name: two cases (or two backends) that ask about the
same bits share one computation. The memory bound counts elements, oldest out first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softmax_suite.ops import cotangent_of, is_vjp, op_named
from softmax_suite.oracle import losses, scaled, store
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


def reference(op: str, x: np.ndarray, axis: int, cotangents: tuple[np.ndarray, np.ndarray] | None = None,
              scale: float | None = None, mask: np.ndarray | None = None, **loss) -> Reference:
    """The exact reference of op on x along axis; a VJP needs the cotangents (g, g_row). With scale
    or mask, of softmax(scale * x) over the entries mask keeps (softmax_suite.oracle.scaled). The
    forward ops share one computation, and so do the three VJPs of one (x, g, g_row). A loss op
    takes its keyword arguments (target, reduction and the loss's options: oracle.losses)."""
    vjp = is_vjp(op)
    if vjp and cotangents is None:
        raise ValueError(f"{op} needs cotangents (g, g_row)")
    if op_named(op).loss != bool(loss):
        raise ValueError(f"{op} takes {'a target and a reduction' if op_named(op).loss else 'no target'}: "
                         f"got {', '.join(loss) or 'none'}")
    question = Question(vjp, scale, None if mask is None else np.broadcast_to(mask, x.shape),
                        Loss.of(loss) if loss else None)
    key = (*content_key(question.family, x, axis), *map(_digest, question.arrays(cotangents)))
    if key in _memory:
        _memory.move_to_end(key)
    else:
        _memory[key] = _from_disk_or_computed(question, x, axis, cotangents)
        _held[key] = sum(reference.rounded.size for reference in _memory[key].values())
        while sum(_held.values()) > MAX_ELEMENTS and len(_memory) > 1:
            del _held[_memory.popitem(last=False)[0]]
    return _memory[key][op]


@dataclass(frozen=True)
class Loss:
    """A loss op's question beyond x: its targets, reduction and options (oracle.losses)."""

    target: np.ndarray
    reduction: str
    ignore_index: int | None = None
    label_smoothing: float | None = None
    weight: np.ndarray | None = None

    @classmethod
    def of(cls, given: dict) -> Loss:
        unknown = set(given) - {"target", "reduction", "ignore_index", "label_smoothing", "weight"}
        if unknown or "target" not in given or "reduction" not in given:
            raise ValueError("a loss takes target=, reduction= and optionally ignore_index=, "
                             f"label_smoothing=, weight=; got {', '.join(sorted(given))}")
        return cls(**given)

    @property
    def family(self) -> str:
        return (f"loss reduction={self.reduction} ignore_index={self.ignore_index!r} "
                f"label_smoothing={self.label_smoothing!r} weight={self.weight is not None}")

    def arrays(self) -> list[np.ndarray]:
        return [np.asarray(self.target, dtype=np.int64),
                *(() if self.weight is None else (np.asarray(self.weight),))]


@dataclass(frozen=True)
class Question:
    """What a reference answers beyond x: the VJPs or the forward ops, and an attention call's
    scale and mask; family names it in the keys."""

    vjp: bool
    scale: float | None = None
    mask: np.ndarray | None = None
    loss: Loss | None = None

    @property
    def family(self) -> str:
        family = "vjp" if self.vjp else "forward"
        if self.loss is not None:
            return f"{family} {self.loss.family}"
        # repr: the float's exact value, so that two scales never share an entry.
        return family if self.scale is None and self.mask is None else \
            f"{family} scale={self.scale!r} mask={self.mask is not None}"

    def arrays(self, cotangents: tuple[np.ndarray, np.ndarray] | None) -> list[np.ndarray]:
        """The inputs beyond x that the reference depends on."""
        return [*(cotangents if self.vjp else ()), *(() if self.mask is None else (self.mask,)),
                *(() if self.loss is None else self.loss.arrays())]

    def compute(self, x: np.ndarray, axis: int,
                cotangents: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Reference]:
        if self.loss is not None:
            loss = self.loss
            cotangent = cotangent_of("cross_entropy_vjp", *cotangents, loss.reduction) if self.vjp else None
            return losses.references(self.vjp, x, axis, cotangent, loss.target, loss.reduction,
                                     loss.ignore_index, loss.label_smoothing, loss.weight)
        if self.scale is not None or self.mask is not None:
            return scaled.references(self.vjp, x, axis, cotangents, self.scale, self.mask)
        return vjp_references(x, *cotangents, axis) if self.vjp else forward_references(x, axis)


def clear() -> None:
    """Forget every reference held in memory (the disk cache stays)."""
    _memory.clear()
    _held.clear()


def _from_disk_or_computed(question: Question, x: np.ndarray, axis: int,
                           cotangents: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Reference]:
    if not _disk:
        return question.compute(x, axis, cotangents)
    folder, limit = _disk[0]
    key = store.entry_key(question.family, axis % max(x.ndim, 1), [x, *question.arrays(cotangents)])
    stored = store.load(folder, key)
    if stored is not None:
        return stored
    references = question.compute(x, axis, cotangents)
    store.save(folder, key, references, limit)
    return references
