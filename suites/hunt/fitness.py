"""A hunt's fitness: per row, the backend's error over its budget (as `judge` measures it), with the
rows of one length evaluated together, one oracle call and one backend call per length."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from softmax_suite.formats import format_of
from softmax_suite.ops import LIKE_X, cotangent_of, is_vjp, op_named
from softmax_suite.oracle.budget import budget
from softmax_suite.oracle.exact import Reference, forward_references
from softmax_suite.oracle.gradients import vjp_references
from softmax_suite.oracle.metrics import SEMANTIC_CATEGORIES, compare
from softmax_suite.protocol import Backend
from softmax_suite.suites.accuracy import BackendFailure, Target, call_backend, flushes
from softmax_suite.suites.cotangents import build_cotangents
from softmax_suite.suites.judging import judge
from softmax_suite.suites.policy import Policy

# A row's score is the largest error/budget over its elements; a semantic difference (NaN where
# a number is expected, inf versus finite) or a failed call scores WORST, above every finite error.
WORST = math.inf


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

    def __call__(self, rows: list[np.ndarray]) -> list[float]:
        """The score of each row, in order; rows of one length share one oracle and one backend call."""
        scores = [0.0] * len(rows)
        by_length: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            by_length.setdefault(row.shape[0], []).append(index)
        for indices in by_length.values():
            for index, score in zip(indices, self._batch(np.stack([rows[i] for i in indices])), strict=True):
                scores[index] = score
        self.evaluations += len(rows)
        return scores

    def inputs(self, x: np.ndarray) -> tuple[Reference, list[np.ndarray]]:
        """The reference of op for x (rows along the last axis) and the backend's inputs. Straight
        from the oracle, not its cache: every candidate is new, and the cache would hold up to
        softmax_suite.oracle.cache.MAX_ELEMENTS of references for nothing."""
        if not self.vjp:
            return forward_references(x, -1)[self.op], [x]
        g, g_row = self.cotangents(x.shape[-1])
        full = np.ascontiguousarray(np.broadcast_to(g, x.shape))
        per_row = np.full(x.shape[:-1], g_row, dtype=g_row.dtype)
        reference = vjp_references(x, full, per_row, -1)[self.op]
        return reference, [x, cotangent_of(self.op, full, per_row)]

    def judged(self, x: np.ndarray) -> dict:
        """The accuracy path's judgement of x alone (suites.judging.judge): what a found case of
        these bits will show in `softmax-suite run`."""
        reference, inputs = self.inputs(x)
        try:
            got = call_backend(self.backend, self.op, self.device, -1, inputs, reference.shape,
                               limit=self.settings.case_timeout)
        except BackendFailure as failure:
            return {"status": "error", "failure": "error", "message": str(failure),
                    "metrics": {"max_ulp": None}, "bound": {}}
        return judge(reference, got, self.settings, -1, self.flush)

    def _batch(self, x: np.ndarray) -> list[float]:
        reference, inputs = self.inputs(x)
        # The backend sees a power-of-two number of rows (the last one repeated): a compiling
        # backend (jax's jit) then compiles once per length and size class, not per batch size.
        rows = x.shape[0]
        padding = (1 << (rows - 1).bit_length()) - rows
        padded = [np.concatenate([a, np.repeat(a[-1:], padding, axis=0)]) for a in inputs]
        try:
            got = call_backend(self.backend, self.op, self.device, -1, padded, (rows + padding,
                               *reference.shape[1:]), limit=self.settings.case_timeout)[:rows]
        except BackendFailure as failure:
            self.failed_calls[failure.kind] += 1
            if x.shape[0] == 1:
                return [WORST]
            # Find the rows that fail: a backend may raise (crash, hang) on some inputs only.
            return [score for row in x for score in self._batch(row[None])]
        return self._scores(reference, got)

    def _scores(self, reference: Reference, got: np.ndarray) -> list[float]:
        comparison = compare(reference, got, self.flush)
        budgets = budget(reference, self.settings.budget, flush_to_zero=self.flush)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(comparison.measured,
                             comparison.in_units(budgets.exponent) / budgets.units, 0.0)
        failing = np.any([comparison.categories[name] for name in SEMANTIC_CATEGORIES], axis=0)
        if op_named(reference.op).output == LIKE_X:  # a reduced op has one value per row already
            ratio, failing = ratio.max(axis=-1), failing.any(axis=-1)
        return np.where(failing, WORST, ratio).tolist()
