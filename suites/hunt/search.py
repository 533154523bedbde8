"""`softmax-suite hunt`: an evolutionary search for the logits a backend gets most wrong, then the
shrinking of the worst rows found and their entries for the corpus (softmax_suite.suites.corpus).

The search keeps an Archive: the worst row of each cell of (length, top gap), MAP-Elites style.
Each generation is OFFSPRING rows: IMMIGRANTS fresh rows from the hard regions
(suites.hunt.mutations.random_row) and the rest mutations of archived rows (parents: any cell's, or one
of the ELITE worst), all scored in batches by suites.hunt.fitness. The first generation also holds rows
of the fixed catalogue, so the hunt starts where the catalogue stops. It stops at the first
generation boundary after --evaluations rows or --time seconds; one seed and one number of
evaluations give one hunt.

A backend that takes attention's options (Backend.options: scale, mask) is hunted over them too,
unless the plan says not (--no-attention): a row then carries a scale and a mask
(suites.hunt.attention), an immigrant gets them half the time, an offspring has its row mutated
(the mask fitted to a new length), its scale and mask mutated, or both, and the archive keeps rows
with and without them apart. A backend without options is hunted as before: the same rows for the
same seed.

The loss ops (cross_entropy, cross_entropy_vjp) are hunted over whole inputs instead of rows
(suites.hunt.losses.Batch: logits, targets, the reduction and the loss's options the backend lists
in Backend.options, unless the plan says not: --no-loss-options), scored one by one by
suites.hunt.fitness.LossEvaluator. A generation is LOSS_OFFSPRING inputs (LOSS_IMMIGRANTS fresh)
within an oracle budget (losses.within_budget), the first one seeded with the catalogue's loss
cases; rows reach the vocabularies of language models (up to LOSS_MAX_LENGTH classes), by moves
and, every other generation, as a fresh input at initialisation. A saved input keeps its targets,
reduction and options in the corpus.

Rows also move to the lengths of the ladder (suites.ladder.LENGTHS: where narrow accumulators give
out) by mutations._ladder, up to ladder_ceiling: the plan's --max-length where given, else
LADDER_LONGEST (and never past the backend's max_length). Rows longer than the plan's longest are
costly (the oracle's work and the backend's grow with their length), so those of one generation
share LADDER_COST (within_ladder_budget); a long row found is shrunk within SHRINK_COST.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from softmax_suite.formats import Format
from softmax_suite.ops import op_named
from softmax_suite.oracle.fastpath import regular_rows
from softmax_suite.oracle.metrics import SEMANTIC_CATEGORIES
from softmax_suite.oracle.scaled import logits
from softmax_suite.protocol import ATTENTION_OPTIONS, LOSS_OPTIONS, Backend
from softmax_suite.suites import corpus
from softmax_suite.suites.cases import FIXED
from softmax_suite.suites.hunt import losses
from softmax_suite.suites.hunt.attention import Row, mutate_options, settled
from softmax_suite.suites.hunt.fitness import REFUSED, Evaluator, LossEvaluator
from softmax_suite.suites.hunt.losses import Batch
from softmax_suite.suites.hunt.mutations import mutate, random_row, resample, step_ulps, to_format
from softmax_suite.suites.hunt.shrink import BUDGET, KEEP, RULES, Shrunk, shrink, size
from softmax_suite.suites.policy import Policy

DEFAULT_SEED = 1
DEFAULT_COTANGENT = "random"
DEFAULT_SECONDS = 60.0
MAX_LENGTH = 1024
ELITE = 32
OFFSPRING = 128
IMMIGRANTS = 32
# Of the offspring of a hunt over scale and mask: the share with only their row mutated, and with only
# their scale and mask (the rest: both); and the share of immigrants given a scale and a mask.
ROW_ONLY = 0.45
OPTIONS_ONLY = 0.8
DRESSED = 0.5
# The loss ops: inputs per generation, of which fresh, and the longest rows (classes) by default.
LOSS_OFFSPRING = 64
LOSS_IMMIGRANTS = 16
LOSS_MAX_LENGTH = 262144
# The ladder's longest rows where --max-length is not given (2^17: past float16's 65520 and 2^16), and
# the oracle's budget of a generation's rows of the ladder's moves (longer than the plan's longest, or
# of equal entries), and of shrinking a row longer than the plan's longest, in units of an element of
# the oracle's fast path (150 to 350 ns scored, on 2 cores). ELEMENT_COST, per element: a row the
# fast path takes ("fast"; two distinct finite values at least), one longer than the plan's longest
# ("long": about 1 in 12 has an element the fast path cannot decide and goes to mpmath whole, at 10
# to 45 us an element, measured), a row of equal entries (the forward oracle's shortcut: about 1
# us), and any other row (mpmath, entry by entry: about 25 us; a VJP's row of equal entries too).
LADDER_LONGEST = 2**17
LADDER_COST = 2**19
SHRINK_COST = 2**23
ELEMENT_COST = {"fast": 1, "long": 8, "equal": 4, "slow": 100}
DURATION = re.compile(r"(?P<amount>\d+(\.\d*)?|\.\d+)\s*(?P<unit>s|m|h)?")
UNITS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from '60', '60s', '2m' or '1h' (ValueError otherwise)."""
    match = DURATION.fullmatch(text.strip())
    if match is None or float(match["amount"]) <= 0:
        raise ValueError(f"--time {text!r}: give a positive duration in seconds (60, 60s), minutes (2m) "
                         "or hours (1h)")
    return float(match["amount"]) * UNITS[match["unit"]]


@dataclass(frozen=True)
class Plan:
    """What to hunt and for how long: rows of up to max_length entries (None: MAX_LENGTH, for the loss
    ops LOSS_MAX_LENGTH); stop after `evaluations` rows (inputs of a loss op) or `seconds`, whichever
    comes first (at a generation boundary); save the `keep` worst."""

    op: str
    dtype: str
    cotangent: str | None = None
    seed: int = DEFAULT_SEED
    evaluations: int | None = None
    seconds: float | None = None
    max_length: int | None = None
    keep: int = 3
    # Search over scale and mask where the backend takes them (attention_options).
    attention: bool = True
    # Search over ignore_index, label_smoothing and weight where the backend takes them (loss_options).
    loss_options: bool = True

    @property
    def loss(self) -> bool:
        return op_named(self.op).loss

    @property
    def longest(self) -> int:
        """The longest row to try."""
        return self.max_length or (LOSS_MAX_LENGTH if self.loss else MAX_LENGTH)


@dataclass(frozen=True)
class Candidate:
    row: Row
    score: float

    @property
    def x(self) -> np.ndarray:
        return self.row.x


@dataclass(frozen=True)
class Found:
    """A saved case: the corpus entry, the accuracy path's record of it, and its shrinking."""

    entry: corpus.Entry
    record: dict
    shrunk: Shrunk

    @property
    def fails(self) -> bool:
        return self.record["status"] != "pass"


@dataclass(frozen=True)
class Outcome:
    found: list[Found]
    evaluations: int
    generations: int
    seconds: float
    shrink_evaluations: int
    # Backend calls that failed, by failure (error, timeout, crash): a batch's rows are scored again one
    # by one, and a row whose own call fails scores WORST.
    failed_calls: dict[str, int] = field(default_factory=dict)
    # Inputs of a loss op the oracle could not answer (scored as refused).
    unanswered: int = 0


def catalogue_rows(fmt: Format, max_length: int) -> list[np.ndarray]:
    """The rows of the fixed catalogue's plain cases in the format (short enough, reduced along the
    last axis, without NaN or +inf: those are the special-value table's questions)."""
    rows = []
    for case in FIXED:
        # Attention's cases ask about scale * x over a mask: their raw rows are not their question.
        if fmt.name not in case.dtypes or "long" in case.tags or case.options:
            continue
        x = case.build(fmt.name)
        if x.ndim != 2 or case.axis % 2 != 1 or not 1 <= x.shape[1] <= max_length:
            continue
        for row in np.ascontiguousarray(x):
            values = row.astype(np.float64)
            if np.isfinite(values).any() and not (np.isnan(values).any() or np.isposinf(values).any()):
                rows.append(row)
    return rows


class Archive:
    """The best row found in each cell of (binade of the length, binade of the gap between the two
    largest entries), as in MAP-Elites: one plateau of equal errors (say the subnormal rounding
    every correct backend shows) cannot fill the search with rows of one kind, and every scale of
    length and gap keeps a row to mutate. Of equal scores the shorter row wins: it is simpler and
    cheaper to score."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, ...], Candidate] = {}

    def add(self, candidate: Candidate) -> None:
        cell = losses.cell(candidate.row) if isinstance(candidate.row, Batch) else _cell(candidate.row)
        held = self.cells.get(cell)
        if held is None or _key(candidate) < _key(held):
            self.cells[cell] = candidate

    def best(self, count: int) -> list[Candidate]:
        """The count highest-scoring rows, worst error first."""
        return sorted(self.cells.values(), key=_key)[:count]

    def parent(self, rng: np.random.Generator) -> Row | Batch:
        """Half the time any cell's row; else one of the ELITE worst, the worst most often."""
        if rng.random() < 0.5:
            cells = list(self.cells.values())
            return cells[rng.integers(len(cells))].row
        elite = self.best(ELITE)
        return elite[int(len(elite) * rng.random() ** 2)].row


def _key(candidate: Candidate) -> tuple[float, int, int]:
    """Worst first; of equal scores the shorter row (the smaller input), then the one with fewer options."""
    row = candidate.row
    if isinstance(row, Batch):
        return -candidate.score, row.values.size, len(row.options)
    return -candidate.score, row.values.size, (row.scale is not None) + (row.mask is not None)


def _cell(row: Row) -> tuple[int, ...]:
    """(binade of the length, binade of the top gap of the kept entries: -100 for a single finite
    entry, -99 for a tie), and for a row with a scale or a mask: whether it has a scale, and what its
    mask keeps (0: no mask, 1: some entries, 2: one, 3: none)."""
    n = row.values.size
    finite = np.sort(row.kept()[np.isfinite(row.kept())])
    if finite.size < 2:
        cell: tuple[int, ...] = (n.bit_length(), -100)
    elif finite[-1] == finite[-2]:
        cell = (n.bit_length(), -99)
    else:
        cell = (n.bit_length(), int(np.clip(np.floor(np.log2(finite[-1] - finite[-2])), -12, 12)))
    if row.plain:
        return cell
    kept = -1 if row.mask is None else int(row.mask.sum())
    return *cell, int(row.scale is not None), 0 if kept < 0 else 3 if kept == 0 else 2 if kept == 1 else 1


def attention_options(backend: Backend, plan: Plan) -> tuple[str, ...]:
    """The options the hunt searches over: those of scale and mask the backend takes, unless the plan
    says not."""
    if not plan.attention or plan.loss:
        return ()
    return tuple(option for option in ATTENTION_OPTIONS if option in backend.options)


def loss_options(backend: Backend, plan: Plan) -> tuple[str, ...]:
    """The loss's options the hunt of a loss op searches over: those of ignore_index, label_smoothing
    and weight the backend takes, unless the plan says not."""
    if not plan.loss_options or not plan.loss:
        return ()
    return tuple(option for option in LOSS_OPTIONS if option in backend.options)


def ladder_ceiling(backend: Backend, plan: Plan) -> int:
    """The longest row the ladder's move proposes: the plan's --max-length where given, else
    LADDER_LONGEST (or the plan's longest, if longer); never past the backend's max_length."""
    ceiling = plan.max_length or max(LADDER_LONGEST, plan.longest)
    return min(ceiling, backend.max_length) if backend.max_length is not None else ceiling


def row_cost(row: Row, vjp: bool, longest: int = MAX_LENGTH) -> float:
    """What the oracle's answer to row is expected to cost, in ELEMENT_COST's units: by the path its
    logits (the scaled, masked ones the oracle sees) take, a fast one's as a long row's past longest."""
    n = row.values.size
    try:
        z = logits(row.x, row.scale, row.mask)
    except ValueError:
        return 0.0  # refused: the oracle does not answer it
    if not np.isfinite(z).any():  # a special input: the policy's answer
        return ELEMENT_COST["fast"] * n
    if regular_rows(z[None, :])[0]:
        return ELEMENT_COST["long" if n > longest else "fast"] * n
    if not vjp and np.isfinite(z[0]) and (z == z[0]).all():
        return ELEMENT_COST["equal"] * n
    return ELEMENT_COST["slow"] * n


def within_ladder_budget(rng: np.random.Generator, fmt: Format, rows: list[Row], plan: Plan,
                         vjp: bool) -> list[Row]:
    """The rows of a generation with the costly ones of the ladder's moves within LADDER_COST together,
    in turn: those longer than the plan's longest and those whose finite entries are all equal
    (mutations._uniform; a VJP's oracle answers them entry by entry). One that costs more than is left
    is resampled to the plan's longest (mutations.resample: its own entries, its mask fitted) where
    longer, and then, where its entries are equal and the oracle would still answer it entry by entry,
    gets one of them an ulp off (equal within an ulp: the fast path)."""
    left = float(LADDER_COST)
    fitted = []
    for row in rows:
        n = row.values.size
        if n > plan.longest or _equal(row):
            cost = row_cost(row, vjp, plan.longest)
            if cost <= left:
                left -= cost
            else:
                if n > plan.longest:
                    row = settled(row.with_values(resample(rng, row.values, plan.longest)))
                if _equal(row) and row_cost(row, vjp) > ELEMENT_COST["equal"] * row.values.size:
                    row = _unequal(rng, row)
        fitted.append(row)
    return fitted


def _equal(row: Row) -> bool:
    """Whether the values the oracle sees hold two or more finite entries, all equal."""
    kept = row.kept()
    finite = kept[np.isfinite(kept)]
    return finite.size > 1 and bool((finite == finite[0]).all())


def _unequal(rng: np.random.Generator, row: Row) -> Row:
    """row with one of its kept finite entries an ulp below (or, at the format's lowest, above) the rest."""
    values = row.values.astype(np.float64)
    kept = np.isfinite(values) if row.mask is None else np.isfinite(values) & row.mask
    candidates = np.flatnonzero(kept)
    pick = np.array([candidates[rng.integers(candidates.size)]])
    moved = step_ulps(row.values, pick, -1)
    if moved[pick[0]] == row.values[pick[0]]:
        moved = step_ulps(row.values, pick, 1)
    return row.with_values(moved)


def shrink_budget(row: Row, plan: Plan, vjp: bool) -> int:
    """Evaluations to shrink row: shrink's BUDGET, but for a row longer than the plan's longest as many
    as SHRINK_COST pays for at its cost (at least 8)."""
    if row.values.size <= plan.longest:
        return BUDGET
    return int(min(BUDGET, max(8, SHRINK_COST // max(row_cost(row, vjp, plan.longest), 1.0))))


def shrink_long(evaluate: Evaluator, row: Row, score: float, budget: int) -> Shrunk:
    """A row longer than the plan's longest (the ladder's) shrunk by its values only, its length kept
    (the rung is its question): its max moved to 0, then each of shrink's RULES on every finite entry
    at once, while the score holds KEEP of it, within budget evaluations. (shrink itself would build
    every one-entry deletion of 2^16 entries, minutes of work.)"""
    started, best, held = evaluate.evaluations, row, score
    threshold = score * KEEP if np.isfinite(score) else score
    values = row.values.astype(np.float64)
    finite = np.isfinite(values)
    steps = [lambda v: v - v[np.isfinite(v)].max(), *RULES]
    for step in steps:
        if evaluate.evaluations - started >= budget:
            break
        current = best.values.astype(np.float64)
        with np.errstate(all="ignore"):
            simpler = np.where(finite, step(np.where(finite, current, 0.0) if step in RULES else current),
                               current)
        candidate = settled(best.with_values(to_format(simpler, evaluate.fmt)))
        if candidate.key == best.key:
            continue
        got = evaluate([candidate])[0]
        if got >= threshold:
            best, held = candidate, got
    return Shrunk(best, held, size(row), size(best), evaluate.evaluations - started)


def _immigrant(rng: np.random.Generator, fmt: Format, plan: Plan, options: tuple[str, ...]) -> Row:
    """A fresh row; with options, given a scale or a mask DRESSED of the time."""
    row = Row(random_row(rng, fmt, plan.longest))
    return mutate_options(rng, fmt, row, options) if options and rng.random() < DRESSED else row


def _offspring(rng: np.random.Generator, fmt: Format, row: Row, other: Row, plan: Plan,
               options: tuple[str, ...], ladder: int) -> Row:
    """row after mutations of its values (other: a second parent for crossing; ladder: the ladder's
    longest row), of its scale and mask, or of both; without options, of its values only."""
    if not options:
        return Row(mutate(rng, fmt, row.values, other.values, plan.longest, ladder))
    pick = rng.random()
    if pick < OPTIONS_ONLY:
        row = row.with_values(mutate(rng, fmt, row.values, other.values, plan.longest, ladder))
    if pick >= ROW_ONLY:
        row = mutate_options(rng, fmt, row, options)
    return settled(row)


def search(evaluate: Evaluator, plan: Plan, clock: Callable[[], float] = time.monotonic
           ) -> tuple[list[Candidate], int]:
    """The ELITE worst rows after the search, worst first (for a loss op every cell's input:
    _search_losses), and the number of generations."""
    if plan.loss:
        return _search_losses(evaluate, plan, clock)
    rng = np.random.default_rng(plan.seed)
    fmt = evaluate.fmt
    options = attention_options(evaluate.backend, plan)
    ladder = ladder_ceiling(evaluate.backend, plan)
    started = clock()
    seeds = catalogue_rows(fmt, plan.longest)
    picked = rng.choice(len(seeds), size=min(len(seeds), OFFSPRING // 2), replace=False) if seeds else []
    rows = [Row(seeds[i]) for i in picked]
    rows += [_immigrant(rng, fmt, plan, options) for _ in range(OFFSPRING - len(rows))]
    archive = Archive()
    generations = 0
    while True:
        for x, score in zip(rows, evaluate(rows), strict=True):
            archive.add(Candidate(x, score))
        generations += 1
        if plan.evaluations is not None and evaluate.evaluations >= plan.evaluations:
            break
        if plan.seconds is not None and clock() - started >= plan.seconds:
            break
        rows = [_immigrant(rng, fmt, plan, options) for _ in range(IMMIGRANTS)]
        rows += [_offspring(rng, fmt, archive.parent(rng), archive.parent(rng), plan, options, ladder)
                 for _ in range(OFFSPRING - IMMIGRANTS)]
        rows = within_ladder_budget(rng, fmt, rows, plan, evaluate.vjp)
    return archive.best(ELITE), generations


def catalogue_batches(evaluate: LossEvaluator, plan: Plan) -> list[Batch]:
    """The inputs of the catalogue's loss cases the first generation starts from (losses.catalogue_batches),
    with the options the hunt searches over."""
    return losses.catalogue_batches(evaluate.fmt, plan.longest, loss_options(evaluate.backend, plan))


def _search_losses(evaluate: LossEvaluator, plan: Plan, clock: Callable[[], float]
                   ) -> tuple[list[Candidate], int]:
    """search for a loss op: inputs (losses.Batch) instead of rows, each generation within its oracle
    budget; every cell's input, worst first, and the number of generations."""
    rng = np.random.default_rng(plan.seed)
    fmt, longest = evaluate.fmt, plan.longest
    options = loss_options(evaluate.backend, plan)
    started = clock()
    seeds = catalogue_batches(evaluate, plan)
    picked = rng.choice(len(seeds), size=min(len(seeds), LOSS_OFFSPRING // 2), replace=False) if seeds else []
    batches = [seeds[i] for i in picked]
    batches += [losses.random_batch(rng, fmt, longest, options) for _ in range(LOSS_OFFSPRING - len(batches))]
    archive = Archive()
    generations = 0
    while True:
        batches = losses.within_budget(rng, fmt, batches, evaluate.cost)
        for found, score in zip(batches, evaluate(batches), strict=True):
            archive.add(Candidate(found, score))
        generations += 1
        if plan.evaluations is not None and evaluate.evaluations >= plan.evaluations:
            break
        if plan.seconds is not None and clock() - started >= plan.seconds:
            break
        # Every other generation its long input (the first: losses.within_budget) is a fresh vocabulary.
        vocabulary = losses.vocabulary_batch(rng, fmt, longest, options) if generations % 2 else None
        batches = [vocabulary] if vocabulary is not None else []
        batches += [losses.random_batch(rng, fmt, longest, options)
                    for _ in range(LOSS_IMMIGRANTS - len(batches))]
        batches += [losses.mutate(rng, fmt, archive.parent(rng), archive.parent(rng), longest, options)
                    for _ in range(LOSS_OFFSPRING - LOSS_IMMIGRANTS)]
    # Every cell's input, worst first: the worst of a kind of failure may lie past the ELITE worst
    # (hunt saves one of each kind).
    return archive.best(len(archive.cells)), generations


def hunt(backend: Backend, backend_name: str, device: str, settings: Policy, plan: Plan,
         clock: Callable[[], float] = time.monotonic) -> Outcome:
    """Search, then shrink the worst distinct rows and judge each as the accuracy path will. Of the
    inputs of a loss op, one of each kind of failure is saved (_kind)."""
    evaluator = LossEvaluator if plan.loss else Evaluator
    evaluate = evaluator(backend, plan.op, plan.dtype, device, settings, plan.cotangent, plan.seed)
    started = clock()
    elite, generations = search(evaluate, plan, clock)
    searched, seconds = evaluate.evaluations, clock() - started
    today = datetime.date.today().isoformat()
    found: list[Found] = []
    digests = set()
    kinds: set[tuple] = set()
    # Worst first; two rows often shrink to one input, so a few more are tried than are kept (for a loss
    # op, the worst of each kind of failure first, and more of them: one mechanism fills many cells).
    pool = [c for c in elite if c.score != REFUSED]
    if plan.loss:
        pool = _diverse(pool, evaluate)
    for candidate in pool[:(4 if plan.loss else 2) * plan.keep]:
        if len(found) == plan.keep:
            break
        if plan.loss and evaluate.kind_of(candidate.row) in kinds:
            continue  # not worth shrinking: a kind already saved
        if not plan.loss and candidate.row.values.size > plan.longest:
            shrunk = shrink_long(evaluate, candidate.row, candidate.score,
                                 shrink_budget(candidate.row, plan, evaluate.vjp))
        else:
            shrunk = shrink(evaluate, candidate.row, candidate.score)
        x, mask = _read_only(shrunk.x), None if shrunk.row.mask is None else _read_only(shrunk.row.mask)
        loss = _loss_fields(shrunk.row)
        digest = corpus.question_digest(x, shrunk.row.scale, mask, corpus.loss_json(**loss) if loss else None)
        if digest in digests:
            continue
        digests.add(digest)
        record = evaluate.judged(shrunk.row)
        if plan.loss:
            if _kind(record, shrunk.row) in kinds:
                continue
            kinds.add(_kind(record, shrunk.row))
        entry = corpus.Entry(
            op=plan.op, dtype=plan.dtype, cotangent=plan.cotangent, backend=backend_name,
            backend_version=backend.version, date=today, seed=plan.seed,
            max_ulp=record["metrics"].get("max_ulp"), ratio=record["bound"].get("ratio"),
            failure=record["failure"], message=record["message"], x=x,
            description=_describe(backend_name, backend.version, today, plan, record, shrunk),
            scale=shrunk.row.scale, mask=mask, **loss)
        found.append(Found(entry, record, shrunk))
    return Outcome(found, searched, generations, seconds, evaluate.evaluations - searched,
                   dict(evaluate.failed_calls), getattr(evaluate, "unanswered", 0))


def _diverse(candidates: list[Candidate], evaluate: LossEvaluator) -> list[Candidate]:
    """Inputs of a loss op: the worst of each failure (accuracy, each semantic difference) first, then
    the worst of each finer kind (LossEvaluator.kind_of: which semantic differences, long rows or
    not, label smoothing or not), then the rest, worst first: one mechanism, say 0 * inf where a weight is 0,
    fills many cells of the archive and would take every place of the saved cases from another (a
    confident row's -0.0)."""
    failures: set[tuple] = set()
    kinds: set[tuple] = set()
    first, second = [], []
    for candidate in candidates:
        kind = evaluate.kind_of(candidate.row)
        if kind[0] is None or kind in kinds:
            continue
        kinds.add(kind)
        # An input that shows two semantic differences (0 * inf and an overflow, say) is of its first.
        failure = (kind[0], kind[1][:1])
        (second if failure in failures else first).append(candidate)
        failures.add(failure)
    chosen = first + second
    return chosen + [candidate for candidate in candidates if candidate not in chosen]


def _kind(record: dict, batch: Batch) -> tuple:
    """What an input of a loss op shows, as LossEvaluator.kind_of says it: its failure, which
    semantic differences, whether its rows are long and whether it smooths its labels (a float16
    overflow of the smoothed sum and one of a long row's sum are both inf for a finite loss)."""
    semantic = record.get("semantic") or {}
    return record["failure"], tuple(name for name in SEMANTIC_CATEGORIES if semantic.get(name)), \
        batch.classes > losses.LONG, batch.label_smoothing > 0


def _read_only(array: np.ndarray) -> np.ndarray:
    copy = array.copy()
    copy.flags.writeable = False
    return copy


def _loss_fields(row: Row | Batch) -> dict:
    """A loss's input's fields of corpus.Entry (arrays read-only); {} for a row."""
    if not isinstance(row, Batch):
        return {}
    return {"target": _read_only(row.target.astype(np.int64)), "reduction": row.reduction,
            "ignore_index": row.ignore_index,
            "label_smoothing": row.label_smoothing if row.label_smoothing > 0 else None,
            "weight": None if row.weight is None else _read_only(row.weight)}


def _describe(backend_name: str, version: str, today: str, plan: Plan, record: dict, shrunk: Shrunk) -> str:
    question = plan.op + (f" ({plan.cotangent} cotangent)" if plan.cotangent else "")
    if record["failure"] in ("semantic", "error"):
        error = record["message"]
    else:
        error = (f"{_number(record['metrics'].get('max_ulp'))} ULP, "
                 f"{_number(record['bound'].get('ratio'))} x its budget")
    if isinstance(shrunk.row, Batch):
        row = shrunk.row
        rows = [", ".join(repr(v) for v in values[:4]) + (", ..." if len(values) > 4 else "")
                for values in row.values.astype(np.float64).tolist()[:2]]
        shown = ", ".join(f"[{text}]" for text in rows) + (", ..." if row.rows > 2 else "")
        targets = row.target.tolist()
        return (f"found by {backend_name} {version} on {today} hunting {plan.dtype} {question} (seed "
                f"{plan.seed}): {error}; shrunk from {shrunk.before.shape} to {shrunk.after.shape} "
                f"logits: [{shown}], targets {targets[:8]}{' ...' if len(targets) > 8 else ''}, "
                f"{losses.describe(row)}")
    values = shrunk.x.astype(np.float64).tolist()
    shown = ", ".join(repr(v) for v in values[:4]) + (", ..." if len(values) > 4 else "")
    return (f"found by {backend_name} {version} on {today} hunting {plan.dtype} {question} (seed "
            f"{plan.seed}): {error}; shrunk from {shrunk.before.length} to {shrunk.after.length} "
            f"entries: [{shown}]{_options_text(shrunk.row)}")


def _options_text(row: Row) -> str:
    """', scale S, K of N entries masked' for what the row has (nothing for a plain row)."""
    parts = [f"scale {row.scale!r}" if row.scale is not None else "",
             f"{row.masked} of {row.values.size} entries masked" if row.mask is not None else ""]
    return "".join(f", {part}" for part in parts if part)


def _masked_text(row: Row) -> str:
    return "-" if row.mask is None else f"{row.masked}/{row.values.size}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_report(outcome: Outcome) -> str:
    """The table of saved cases, worst first: error, ratio to budget, length before and after
    shrinking, significant bits before and after, status and name; where a saved row has a scale or
    a mask, its scale and its masked entries (of its length) too, before the status. A loss op's
    inputs show their shape (rows x classes) for the length, and their reduction and options."""
    loss = any(isinstance(found.shrunk.row, Batch) for found in outcome.found)
    attention = not loss and any(not found.shrunk.row.plain for found in outcome.found)
    extra = ("scale", "masked") if attention else ("reduction", "options") if loss else ()
    rows = [("max ULP", "ratio", "shape" if loss else "length", "shrunk", "bits", *extra, "status", "name")]
    for found in outcome.found:
        record, shrunk = found.record, found.shrunk
        shown = (_scale_text(shrunk.row.scale), _masked_text(shrunk.row)) if attention else \
            (shrunk.row.reduction, losses.options_text(shrunk.row)) if loss else ()
        rows.append((_number(record["metrics"].get("max_ulp")), _number(record["bound"].get("ratio")),
                     shrunk.before.shape, shrunk.after.shape,
                     f"{shrunk.before.bits} -> {shrunk.after.bits}", *shown,
                     record["failure"] or record["status"], found.entry.name))
    right = len(rows[0]) - 2  # numbers to the right, the status and name to the left
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) if i < right else cell.ljust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    return "\n".join(lines)


def _scale_text(scale: float | None) -> str:
    return "-" if scale is None else f"{scale:.6g}"
