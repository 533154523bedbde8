"""A hunt's fitness: per row, the backend's error over its budget (as `judge` measures it), with the
rows of one question evaluated together, one oracle call and one backend call per length (and, for a
backend that takes them, per scale and presence of a mask: suites.hunt.attention). A row with a
scale or a mask asks what the accuracy path asks of a case with them: the backend called with the
options, the oracle of the same options (oracle.scaled), a fully masked row by the backend's declared
convention (suites.masking), a VJP's cotangent 0 where masked (as accuracy.case_cotangents).

The loss ops are scored by LossEvaluator, one input (suites.hunt.losses.Batch: logits, targets, the
reduction and the options) per oracle call and per backend call, as the accuracy path asks a loss
case: the backend called with target=, reduction= and the options, the oracle of the same
arguments (oracle.losses), the cotangents built as the catalogue builds them for a found case of
the hunt's seed and the input's shape."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from softmax_suite.formats import format_of
from softmax_suite.ops import LIKE_X, cotangent_of, is_vjp, op_named
from softmax_suite.oracle import losses as loss_oracle
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
from softmax_suite.suites.hunt.losses import LONG, Batch
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
        # Keyed by the row length (a loss's evaluator: by the logits' shape).
        self._cotangents: dict = {}
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


class Unanswered(Exception):
    """The oracle could not answer an input (an OverflowError or a ValueError of its own)."""


# What an input of a loss op costs the exact oracle, in units of one element of the forward
# (LossEvaluator.cost: about 7 to 20 us each on 2 cores): a call's fixed cost, and per element the
# forward's, the VJP's on log_softmax_vjp's fast path (0.3 to 1 us measured; counted high, since a
# row the fast path cannot decide goes element by element: 8 to 100 us measured for float16 rows
# at initialisation), and the VJP's off it (its own mpmath loop, ~30 us).
CALL_COST = 250.0
ELEMENT_COST = {"forward": 1.0, "fast": 0.5, "slow": 5.0}


class LossEvaluator:
    """Scores inputs of a loss op (suites.hunt.losses.Batch) for one backend, op, dtype and device, as
    Evaluator scores rows: the largest error over its budget of any output (a per-row loss, the
    reduced loss, or an element of the gradient), WORST for a semantic difference or a failed call.
    A VJP's cotangents for logits of shape (N, C) are build_cotangents(kind, seed, (N, C), -1), of
    which the op takes one per row (reduction "none") or the first as its scalar, as the catalogue
    asks a found case of that seed. Counts the inputs it evaluated, the calls that failed, and what
    the oracle's answers cost (spent, in the units of cost: by the path each element took, so the
    same inputs always count the same)."""

    def __init__(self, backend: Backend, op: str, dtype: str, device: str, settings: Policy,
                 cotangent: str | None = None, seed: int = 0) -> None:
        Evaluator.__init__(self, backend, op, dtype, device, settings, cotangent, seed)
        self.spent = 0.0
        self.unanswered = 0
        # What each input scored showed (kind_of), and what its oracle cost per element (cost), by the
        # digest of its key.
        self._kinds: dict[bytes, tuple] = {}
        self._rates: dict[bytes, float] = {}

    def cotangents(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(g, g_row) for logits of this shape (kept for rows of up to losses.LONG classes: the long
        ones come in many lengths, each cut to its budget)."""
        if shape in self._cotangents:
            return self._cotangents[shape]
        built = build_cotangents(self.kind, self.seed, shape, -1, self.fmt)
        if shape[-1] <= LONG:
            self._cotangents[shape] = built
        return built

    def cotangent(self, batch: Batch) -> np.ndarray | None:
        """The cotangent the VJP takes for the input (None for the forward)."""
        if not self.vjp:
            return None
        return cotangent_of(self.op, *self.cotangents(batch.values.shape), batch.reduction)

    def cost(self, batch: Batch, like: Batch | None = None) -> float:
        """What scoring the input is expected to cost the oracle, in units of one element of the
        forward: by what an input `like` it (scored before: its variant, in shrinking) cost per
        element where given, else by the path its oracle takes."""
        rate = self._rates.get(hashlib.sha1(like.key).digest()) if like is not None else None
        if rate is None:
            kind = "forward" if not self.vjp else "fast" if self._fast(batch) else "slow"
            rate = ELEMENT_COST[kind]
        return CALL_COST + rate * batch.values.size

    def _charge(self, batch: Batch, reference: Reference) -> None:
        """Count what the oracle's answer cost, by the elements its certificate says each path decided
        (the fast path's at "fast", its rows done element by element at "slow"), and remember the
        rate per element."""
        size = max(batch.values.size, 1)
        if self.vjp:
            slow = min(int(reference.certificate.get("mpmath", 0)), size)
            spent = ELEMENT_COST["slow"] * slow + ELEMENT_COST["fast"] * (size - slow)
        else:
            spent = ELEMENT_COST["forward"] * size
        self.spent += CALL_COST + spent
        self._rates[hashlib.sha1(batch.key).digest()] = spent / size

    def _fast(self, batch: Batch) -> bool:
        """Whether the gradient's oracle takes log_softmax_vjp's fast path: no smoothing, and every
        factor F w_t exact in float64 (oracle.losses)."""
        if batch.label_smoothing > 0:
            return False
        if batch.reduction != "mean":
            return True  # the cotangent times a weight: two numbers of the format, exact in float64
        g = Fraction(float(np.asarray(self.cotangent(batch)).reshape(-1)[0]))
        kept = batch.kept
        options = {"weight": None if batch.weight is None else batch.weight.astype(np.float64)}
        denominator = loss_oracle.kept_weight(batch.target, kept, options)
        if not denominator:
            return False
        weights = [1.0 if batch.weight is None else float(batch.weight[t]) for t in batch.target[kept]]
        return all(Fraction(float(g / denominator * Fraction(w))) == g / denominator * Fraction(w)
                   for w in weights)

    def askable(self, batch: Batch) -> bool:
        """Whether the run would ask the backend this input: rows no longer than its max_length, and
        for a backend that takes only finite entries, none inf or NaN."""
        if self.backend.why_not_length(batch.classes):
            return False
        return not self.backend.why_not_finite(bool(np.isfinite(batch.values.astype(np.float64)).all()))

    def inputs(self, batch: Batch) -> tuple[Reference, list[np.ndarray], dict]:
        """The exact reference of the op for the input, the backend's inputs (the logits, a VJP's
        cotangent) and its keyword arguments (target, reduction and the options, arrays read-only as a
        case's: accuracy.case_options)."""
        arguments = {name: _frozen(value) if isinstance(value, np.ndarray) else value
                     for name, value in batch.arguments().items()}
        cotangent = self.cotangent(batch)
        inputs = [batch.values] + ([] if cotangent is None else [cotangent])
        try:
            reference = loss_oracle.references(self.vjp, batch.values, -1, cotangent, **arguments)[self.op]
        except (OverflowError, ValueError) as error:
            # Beyond what the oracle decides (losses.SPREAD keeps the hunt's inputs within it).
            self.spent += self.cost(batch)
            raise Unanswered(str(error)) from error
        self._charge(batch, reference)
        return reference, inputs, arguments

    def __call__(self, batches: Sequence[Batch]) -> list[float]:
        """The score of each input, in order (REFUSED for one the run would not ask, or the oracle
        cannot answer)."""
        scores = []
        for batch in batches:
            try:
                scores.append(self._score(batch) if self.askable(batch) else REFUSED)
            except Unanswered:
                self.unanswered += 1
                scores.append(REFUSED)
        self.evaluations += len(batches)
        return scores

    def _call(self, batch: Batch) -> tuple[Reference, np.ndarray]:
        reference, inputs, arguments = self.inputs(batch)
        got = call_backend(self.backend, self.op, self.device, -1, inputs, reference.shape,
                           limit=self.settings.case_timeout, options=arguments)
        return reference, got

    def kind_of(self, batch: Batch) -> tuple:
        """What the input showed when scored: its failure as judge names it (None, accuracy, semantic,
        error) and which semantic differences; whether its rows are longer than losses.LONG, and
        whether it smooths its labels."""
        failure = self._kinds.get(hashlib.sha1(batch.key).digest(), (None, ()))
        return (*failure, batch.classes > LONG, batch.label_smoothing > 0)

    def _score(self, batch: Batch) -> float:
        digest = hashlib.sha1(batch.key).digest()
        try:
            reference, got = self._call(batch)
        except BackendFailure as failure:
            self.failed_calls[failure.kind] += 1
            self._kinds[digest] = ("error", ())
            return WORST
        comparison = compare(reference, got, self.flush)
        budgets = budget(reference, self.settings.budget, flush_to_zero=self.flush)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(comparison.measured, comparison.in_units(budgets.exponent) / budgets.units, 0.0)
        semantic = tuple(name for name in SEMANTIC_CATEGORIES if np.any(comparison.categories[name]))
        # An output the budget leaves out (NaN), as judge's nanargmax does.
        score = WORST if semantic else float(np.max(np.where(np.isnan(ratio), 0.0, ratio), initial=0.0))
        self._kinds[digest] = ("semantic" if semantic else "accuracy" if score > 1 else None, semantic)
        return score

    def judged(self, batch: Batch) -> dict:
        """The accuracy path's judgement of the input (suites.judging.judge): what a found case of
        these logits, targets and options will show in `softmax-suite run`."""
        try:
            reference, got = self._call(batch)
        except BackendFailure as failure:
            return {"status": "error", "failure": "error", "message": str(failure),
                    "metrics": {"max_ulp": None}, "bound": {}}
        return judge(reference, got, self.settings, -1, self.flush)


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only copy (a case's arrays are read-only: accuracy.case_options)."""
    copy = np.array(array)
    copy.flags.writeable = False
    return copy
