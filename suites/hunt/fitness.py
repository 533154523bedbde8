"""A hunt's fitness: per row, the backend's error over its budget (as `judge` measures it), with the
rows of one question evaluated together, one oracle call and one backend call per length (and, for a
backend that takes them, per scale and presence of a mask: suites.hunt.attention). A row with a
scale or a mask asks what the accuracy path asks of a case with them: the backend called with the
options, the oracle of the same options (oracle.scaled), a fully masked row by the backend's declared
convention (suites.masking), a VJP's cotangent 0 where masked (as accuracy.case_cotangents)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from softmax_suite.formats import format_of
from softmax_suite.ops import LIKE_X, cotangent_of, is_vjp, op_named
from softmax_suite.oracle.budget import budget
from softmax_suite.oracle.exact import Reference, forward_references
from softmax_suite.oracle.gradients import vjp_references
from softmax_suite.oracle.metrics import SEMANTIC_CATEGORIES, compare
from softmax_suite.oracle.scaled import references as scaled_references
from softmax_suite.protocol import Backend
from softmax_suite.suites import masking
from softmax_suite.suites.accuracy import BackendFailure, Target, call_backend, flushes
from softmax_suite.suites.cotangents import build_cotangents
from softmax_suite.suites.hunt.attention import Row, as_row
from softmax_suite.suites.judging import judge
from softmax_suite.suites.policy import Policy

# A row's score is the largest error/budget over its elements; a semantic difference (NaN where
# a number is expected, inf versus finite) or a failed call scores WORST, above every finite error.
WORST = math.inf
# A row the exact oracle refuses (a scale that takes an entry below 2^-969, where the product is not
# exact: oracle.scaled.logits) is no question: it scores below every other and is never saved.
REFUSED = -math.inf


class Evaluator:
    """Scores rows (1-D arrays in the dtype) for one backend, op, dtype and device; a VJP's
    cotangent of each length n is build_cotangents(kind, seed, (n,), -1), as the catalogue builds
    it for a found case of that seed. Each backend call has the settings' case timeout (under
    --isolate a crash or hang costs that call: an Isolated backend's worker is started afresh).
    Counts the rows it evaluated, and the calls that failed by their failure (error, timeout, crash)."""

    def __init__(self, backend: Backend, op: str, dtype: str, device: str, settings: Policy,
                 cotangent: str | None = None, seed: int = 0) -> None:
        self.backend, self.op, self.dtype, self.device = backend, op, dtype, device
        self.settings, self.kind, self.seed = settings, cotangent, seed
        self.fmt = format_of(dtype)
        self.vjp = is_vjp(op)
        self.evaluations = 0
        self.failed_calls: Counter[str] = Counter()
        self._cotangents: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # The flush-to-zero allowance as the run grants it: measured on this backend (suites.flushing).
        self.flush = flushes(backend, Target(op, backend.name, device, dtype, "hunt"), settings)

    def cotangents(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(g, g_row) for rows of length n."""
        if n not in self._cotangents:
            self._cotangents[n] = build_cotangents(self.kind, self.seed, (n,), -1, self.fmt)
        return self._cotangents[n]

    def __call__(self, rows: Sequence[np.ndarray | Row]) -> list[float]:
        """The score of each row (an array, or a Row with its scale and mask), in order; rows of one
        length, scale and presence of a mask share one oracle and one backend call."""
        rows = [as_row(row) for row in rows]
        scores = [0.0] * len(rows)
        by_question: dict[tuple, list[int]] = {}
        for index, row in enumerate(rows):
            if not self.askable(row):
                scores[index] = REFUSED
                continue
            by_question.setdefault((row.values.shape[0], row.scale, row.mask is not None), []).append(index)
        for indices in by_question.values():
            for index, score in zip(indices, self._batch([rows[i] for i in indices]), strict=True):
                scores[index] = score
        self.evaluations += len(rows)
        return scores

    def askable(self, row: Row) -> bool:
        """Whether the run would ask the backend this row: no longer than its max_length and, for a
        backend that takes only finite kept entries (an exact embedding), none inf or NaN."""
        if self.backend.why_not_length(row.values.shape[0]):
            return False
        kept = row.x.astype(np.float64) if row.mask is None else row.x.astype(np.float64)[row.mask]
        return not self.backend.why_not_finite(bool(np.isfinite(kept).all()))

    def inputs(self, x: np.ndarray, scale: float | None = None, mask: np.ndarray | None = None
               ) -> tuple[Reference, list[np.ndarray], dict]:
        """The reference of op for x (rows along the last axis) with the scale and mask given, the
        backend's inputs and options (for call_backend; empty without either). Straight from the
        oracle, not its cache: every candidate is new, and the cache would hold up to
        softmax_suite.oracle.cache.MAX_ELEMENTS of references for nothing. ValueError where the
        oracle refuses the scale for x."""
        options = {name: value for name, value in (("scale", scale), ("mask", mask)) if value is not None}
        cotangents = None
        inputs = [x]
        if self.vjp:
            g, g_row = self.cotangents(x.shape[-1])
            full = np.ascontiguousarray(np.broadcast_to(g, x.shape))
            if mask is not None:
                # 0 at masked outputs, as accuracy.case_cotangents gives a masked case.
                full = np.where(mask, full, full.dtype.type(0))
            per_row = np.full(x.shape[:-1], g_row, dtype=g_row.dtype)
            cotangents = (full, per_row)
            inputs.append(cotangent_of(self.op, full, per_row))
        if options:
            # What oracle.cache.reference computes for these options, as accuracy.run judges a case.
            reference = scaled_references(self.vjp, x, -1, cotangents, scale, mask)[self.op]
            if mask is not None:
                reference = masking.under_convention(reference, mask, -1, self.backend.fully_masked)
        elif self.vjp:
            reference = vjp_references(x, *cotangents, -1)[self.op]
        else:
            reference = forward_references(x, -1)[self.op]
        return reference, inputs, options

    def judged(self, x: np.ndarray | Row) -> dict:
        """The accuracy path's judgement of x alone (suites.judging.judge): what a found case of
        these bits (and this scale and mask) will show in `softmax-suite run`."""
        row = as_row(x)
        reference, inputs, options = self.inputs(row.x, row.scale, _read_only(row.mask))
        try:
            got = call_backend(self.backend, self.op, self.device, -1, inputs, reference.shape,
                               limit=self.settings.case_timeout, options=options or None)
        except BackendFailure as failure:
            return {"status": "error", "failure": "error", "message": str(failure),
                    "metrics": {"max_ulp": None}, "bound": {}}
        return judge(reference, got, self.settings, -1, self.flush)

    def _batch(self, rows: list[Row]) -> list[float]:
        """The scores of rows of one length, scale and presence of a mask."""
        x = np.stack([row.x for row in rows])
        scale = rows[0].scale
        mask = None if rows[0].mask is None else np.stack([row.mask for row in rows])
        try:
            reference, inputs, options = self.inputs(x, scale, mask)
        except ValueError:
            if scale is None:
                raise
            if len(rows) == 1:
                return [REFUSED]
            return [score for row in rows for score in self._batch([row])]
        # The backend sees a power-of-two number of rows (the last one repeated): a compiling
        # backend (jax's jit) then compiles once per length and size class, not per batch size.
        count = x.shape[0]
        padding = (1 << (count - 1).bit_length()) - count

        def padded(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, np.repeat(a[-1:], padding, axis=0)])

        if mask is not None:
            options = {**options, "mask": _read_only(padded(mask))}
        try:
            got = call_backend(self.backend, self.op, self.device, -1, [padded(a) for a in inputs],
                               (count + padding, *reference.shape[1:]), limit=self.settings.case_timeout,
                               options=options or None)[:count]
        except BackendFailure as failure:
            self.failed_calls[failure.kind] += 1
            if count == 1:
                return [WORST]
            # Find the rows that fail: a backend may raise (crash, hang) on some inputs only.
            return [score for row in rows for score in self._batch([row])]
        return self._scores(reference, got, masked=mask is not None)

    def _scores(self, reference: Reference, got: np.ndarray, masked: bool = False) -> list[float]:
        comparison = compare(reference, got, self.flush)
        budgets = budget(reference, self.settings.budget, flush_to_zero=self.flush)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(comparison.measured,
                             comparison.in_units(budgets.exponent) / budgets.units, 0.0)
        if masked:
            # A fully masked row's VJP has a NaN budget (its terms are the oracle's NaN row, where
            # masking.under_convention sets the values only): judge leaves such ratios out (nanargmax),
            # and so does the score, which a NaN would make unorderable.
            ratio = np.where(np.isnan(ratio), 0.0, ratio)
        failing = np.any([comparison.categories[name] for name in SEMANTIC_CATEGORIES], axis=0)
        if op_named(reference.op).output == LIKE_X:  # a reduced op has one value per row already
            ratio, failing = ratio.max(axis=-1), failing.any(axis=-1)
        return np.where(failing, WORST, ratio).tolist()


def _read_only(mask: np.ndarray | None) -> np.ndarray | None:
    """The mask as a backend gets it from a case (accuracy.case_options): read-only."""
    if mask is None:
        return None
    mask = np.array(mask, dtype=bool)
    mask.flags.writeable = False
    return mask
