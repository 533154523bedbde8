"""`softmax-suite hunt` over the loss ops (cross_entropy, cross_entropy_vjp): it searches logits, targets,
reductions and the loss's options the backend lists; finds torch's float32 confident-correct loss of
-0.0 (with the catalogue's rows and without them) and a planted VJP that forgets the mean's 1/N
(tests.planted_losses); reports nothing for a correct composition; saves what it finds with its
targets and options, which the catalogue reads back as a loss case and a run re-asks with the same
verdict. Old corpus files read as ever."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.backends.registry import load
from softmax_suite.formats import format_of
from softmax_suite.protocol import LOSS_OPTIONS
from softmax_suite.runner import cli
from softmax_suite.runner.config import Settings
from softmax_suite.suites import accuracy, cases, corpus
from softmax_suite.suites.accuracy import Target, why_not_case
from softmax_suite.suites.cases import FIXED, found_case
from softmax_suite.suites.hunt import losses, search
from softmax_suite.suites.hunt.fitness import REFUSED, WORST, LossEvaluator
from softmax_suite.suites.hunt.losses import Batch
from softmax_suite.suites.hunt.search import LOSS_OFFSPRING, Plan, hunt
from softmax_suite.suites.hunt.shrink import shrink
from tests.test_hunt import run_cli

CORRECT = "tests.planted_losses:Float64Loss"
NO_MEAN = "tests.planted_losses:MeanWithoutOneOverN"




def replayed(entry: corpus.Entry, backend: str, monkeypatch: pytest.MonkeyPatch,
             op: str | None = None) -> dict:
    """The accuracy path's record of a corpus entry, asked of backend from a catalogue that holds it."""
    case = found_case(entry)
    catalogue = (*FIXED, case)
    monkeypatch.setattr(cases, "_catalogue", lambda: (catalogue, {c.name: c for c in catalogue}))
    op = op or entry.op
    kind = (entry.cotangent or "random") if op.endswith("_vjp") else None
    return accuracy.run(Target(op, backend, "cpu", entry.dtype, case.name, kind), load(backend), Settings())


def minus_zero(entry: corpus.Entry) -> bool:
    """A confident correct row's loss returned as a zero (-0.0, or 0.0 once reduced) for a positive
    exact loss."""
    return entry.failure == "accuracy" and ("got -0.0" in entry.message or "got 0.0" in entry.message) \
        and "exact -" not in entry.message


# torch's float32 confident-correct bug.

def test_a_hunt_of_torchs_cross_entropy_finds_the_confident_correct_minus_zero(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    saved = tmp_path / "found.json"
    # Measured: the first generation holds it for each of seeds 1 to 10 (the catalogue's confident
    # rows and the confident move both make it); two generations leave it no chance to miss.
    done = run_cli("hunt", "--backend", "torch", "--op", "cross_entropy", "--dtype", "float32",
                   "--evaluations", str(2 * LOSS_OFFSPRING), "--corpus", str(saved), cwd=tmp_path,
                   timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "over logits, targets, reductions, ignore_index, label_smoothing, weight" in done.stdout
    assert f"scored {2 * LOSS_OFFSPRING} inputs in 2 generations" in done.stdout
    assert "shape  shrunk" in done.stdout and "reduction  options" in done.stdout
    entries = corpus.read(saved)
    entry = next(e for e in entries if minus_zero(e))
    assert entry.name.startswith("found_cross_entropy_float32_") and entry.backend == "torch"
    # Shrunk to its core: one row of two logits, the target leading by a gap (-log p_t ~ e^-gap, which
    # float32's log(1 + t) rounds to 0), an integer gap of a few bits.
    assert entry.x.shape == (1, 2) and entry.reduction == "none" and entry.ratio > 1000
    lead = float(entry.x[0, entry.target[0]]) - float(entry.x[0, 1 - entry.target[0]])
    assert 17 <= lead <= 110 and lead == int(lead)
    assert entry.ignore_index is entry.label_smoothing is entry.weight is None

    # A run over the corpus re-asks it: the same verdict, the same ratio.
    out = tmp_path / "out"
    ran = run_cli("run", "--backend", "torch", "--case", entry.name, "--op", "cross_entropy",
                  "--throughput", "off", "-n", "0", "--out", str(out), cwd=tmp_path,
                  corpus_variable=str(saved), timeout=600)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    record = next(r for r in records if r.get("kind") == "result" and r["check"] == "accuracy"
                  and r["case"] == entry.name)
    assert record["status"] == "fail" and record["failure"] == "accuracy"
    assert record["bound"]["ratio"] == pytest.approx(entry.ratio) and record["message"] == entry.message
    assert record["loss"] == {"reduction": "none", "rows": 1}
    # The correct composition passes it.
    assert replayed(entry, CORRECT, monkeypatch)["status"] == "pass"


def test_the_loss_moves_alone_find_the_confident_correct_minus_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the catalogue's rows in the first generation: the fresh inputs and the moves (a target
    # raised a gap above the rest) find it. Measured: in the first generation for each of seeds 1 to
    # 10; the search is random and any change to a score moves its path, so up to five seeds are tried.
    pytest.importorskip("torch")
    monkeypatch.setattr(search, "catalogue_batches", lambda evaluate, plan: [])
    backend = load("torch")
    for seed in (1, 2, 3, 4, 5):
        evaluate = LossEvaluator(backend, "cross_entropy", "float32", "cpu", Settings(), None, seed)
        elite, generations = search.search(evaluate, Plan("cross_entropy", "float32", seed=seed,
                                                          evaluations=2 * LOSS_OFFSPRING))
        found = [c.row for c in elite if c.score > 1000]
        if any(_zero_for_a_positive_loss(evaluate, row) for row in found):
            break
    else:
        pytest.fail("no seed found torch's float32 -0.0 for a confident correct row")
    assert generations == 2


def _zero_for_a_positive_loss(evaluate: LossEvaluator, row: Batch) -> bool:
    record = evaluate.judged(row)
    worst = record["metrics"].get("worst")
    return worst is not None and worst["got"] == 0 and worst["rounded"] > 0


# The planted VJP bug and the correct composition.

def test_a_hunt_finds_the_vjp_that_forgets_the_means_one_over_n(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default settings, as Settings() below
    saved = tmp_path / "found.json"
    args = ["hunt", "--backend", NO_MEAN, "--op", "cross_entropy_vjp", "--dtype", "float32",
            "--evaluations", str(LOSS_OFFSPRING), "--keep", "2", "--corpus", str(saved)]
    assert cli.main(args) == 1
    entries = corpus.read(saved)
    assert entries and all(e.backend == NO_MEAN and e.cotangent == "random" for e in entries)
    # Every find is a mean over more than one row's weight (else 1/N is 1 and the bug hides).
    for entry in entries:
        assert entry.reduction == "mean" and entry.failure in ("accuracy", "semantic")
        weights = np.ones(entry.x.shape[1]) if entry.weight is None else entry.weight.astype(np.float64)
        kept = entry.target != (-100 if entry.ignore_index is None else entry.ignore_index)
        assert np.sum(weights[entry.target[kept]]) != 1
        # The catalogue's case asks the loss ops only, with the saved targets and options.
        case = found_case(entry)
        assert case.loss is not None and "loss" in case.tags and "found" in case.tags
        assert why_not_case("cross_entropy_vjp", case) is None and why_not_case("softmax", case)
        # Replayed through the accuracy path: the planted VJP fails as the hunt judged it (the same
        # message), its forward and the correct composition pass.
        failed = replayed(entry, NO_MEAN, monkeypatch)
        assert failed["status"] == "fail" and failed["failure"] == entry.failure
        assert failed["message"] == entry.message
        assert replayed(entry, CORRECT, monkeypatch)["status"] == "pass"
        assert replayed(entry, NO_MEAN, monkeypatch, op="cross_entropy")["status"] == "pass"


def test_the_same_seed_and_evaluations_give_the_same_loss_corpus(tmp_path: Path) -> None:
    texts = []
    for attempt in ("first", "second"):
        outcome = hunt(load(NO_MEAN), NO_MEAN, "cpu", Settings(),
                       Plan("cross_entropy_vjp", "float32", "ones", seed=3, evaluations=2 * LOSS_OFFSPRING,
                            keep=2))
        path = tmp_path / f"{attempt}.json"
        corpus.merge(path, [found.entry for found in outcome.found])
        texts.append(path.read_text().replace(outcome.found[0].entry.date, "DATE"))
    assert texts[0] == texts[1] and '"target": [' in texts[0]


@pytest.mark.parametrize(("op", "dtype"), [("cross_entropy", "float32"), ("cross_entropy_vjp", "float32"),
                                           ("cross_entropy", "float16")])
def test_a_correct_composition_hunted_for_a_few_generations_shows_nothing_over_budget(
        op: str, dtype: str) -> None:
    # A false alarm is as bad as a missed bug: three generations (192 inputs, the catalogue's loss
    # rows among them) and their shrinking, every saved case within its budget.
    kind = "random" if op.endswith("_vjp") else None
    outcome = hunt(load(CORRECT), CORRECT, "cpu", Settings(),
                   Plan(op, dtype, kind, evaluations=3 * LOSS_OFFSPRING))
    assert outcome.generations == 3 and outcome.found
    for found in outcome.found:
        assert found.record["status"] == "pass", (op, dtype, found.record["message"])
        assert found.entry.ratio is not None and found.entry.ratio <= 1


# What the search asks.

class Recording(LossEvaluator):
    def __call__(self, batches):
        self.seen.extend(batches)
        return super().__call__(batches)


def recorded(backend: str, plan: Plan) -> list[Batch]:
    evaluate = Recording(load(backend), plan.op, plan.dtype, "cpu", Settings(), plan.cotangent, plan.seed)
    evaluate.seen = []
    search.search(evaluate, plan)
    return evaluate.seen


def test_the_search_covers_targets_reductions_and_the_options_the_backend_lists() -> None:
    seen = recorded(CORRECT, Plan("cross_entropy", "float32", evaluations=2 * LOSS_OFFSPRING))
    assert all(isinstance(b, Batch) and b.scale is None and b.mask is None for b in seen)
    assert {b.reduction for b in seen} == {"none", "mean", "sum"}
    for option in LOSS_OPTIONS:
        assert any(option in b.options for b in seen), option
    assert any(b.ignored for b in seen)  # a row ignored by its ignore_index
    assert any(b.weight is not None and (b.weight == 0).any() for b in seen)  # zero class weights
    assert any(np.isneginf(b.values.astype(np.float64)).any() for b in seen)
    assert any(np.isnan(b.values.astype(np.float64)).any() for b in seen)
    # Confident correct rows (the target leads by 20 and more) and confident wrong ones (trails by 100).
    leads = [float(b.values[i, t]) - float(np.max(np.delete(b.values[i].astype(np.float64), t)))
             for b in seen for i, t in enumerate(b.target) if b.kept[i] and b.classes > 1
             and np.isfinite(b.values[i].astype(np.float64)).all()]
    assert max(leads) > 20 and min(leads) < -100
    # Every input is a valid question: targets in range or ignored, weights of its classes.
    for b in seen:
        assert ((b.target >= 0) & (b.target < b.classes) | ~b.kept).all()
        assert b.weight is None or (b.weight.shape == (b.classes,) and (b.weight >= 0).all())
        assert 0 <= b.label_smoothing <= 1 and b.values.dtype == np.float32


def test_a_backend_without_the_loss_options_or_with_them_turned_off_is_hunted_without_them() -> None:
    plan = Plan("cross_entropy", "float32", evaluations=LOSS_OFFSPRING)
    backend = load(CORRECT)
    assert search.loss_options(backend, plan) == LOSS_OPTIONS
    assert search.attention_options(load("numpy"), plan) == ()  # no scale or mask for a loss
    off = Plan("cross_entropy", "float32", evaluations=LOSS_OFFSPRING, loss_options=False)
    assert search.loss_options(backend, off) == ()
    assert not any(b.options for b in recorded(CORRECT, off))
    # The catalogue's loss cases with options are not among the first generation's rows either.
    plain = [case for case in FIXED if case.loss and not case.loss.options and "long" not in case.tags]
    evaluate = LossEvaluator(backend, "cross_entropy", "float32", "cpu", Settings())
    assert len(search.catalogue_batches(evaluate, off)) == len(plain) >= 5
    assert len(search.catalogue_batches(evaluate, plan)) > len(plain)


def test_rows_grow_to_a_vocabulary_within_the_generations_budget() -> None:
    rng = np.random.default_rng(3)
    fmt = format_of("float16")
    found = losses.batch(rng.normal(size=(3, 50)), [1, 2, 3], fmt)
    sizes = set()
    for _ in range(40):
        grown = losses._lengthen(rng, fmt, found, found, search.LOSS_MAX_LENGTH, LOSS_OPTIONS)
        sizes.add(grown.classes)
        assert grown.rows <= 3 and (grown.classes <= losses.LONG or grown.rows <= losses.LONG_ROWS)
        assert ((grown.target >= 0) & (grown.target < grown.classes)).all()
    assert sizes & set(losses.VOCABULARIES) and max(sizes) >= 128256
    # A generation stays within its budgets: the first long input within its own (its rows cut to one,
    # then its classes), a second long one cut to LONG classes, the rest within what is left.
    evaluate = LossEvaluator(load(CORRECT), "cross_entropy", "float16", "cpu", Settings())
    long = losses.batch(losses.initial_logits(rng, 2, 256000), [5, 6], fmt)
    small = [losses.random_batch(rng, fmt, 64, ()) for _ in range(4)]
    fitted = losses.within_budget(rng, fmt, [*small, long, long], evaluate.cost)
    assert fitted[:4] == small
    first, second = fitted[4:]
    assert first.rows == 1 and first.classes > losses.LONG and evaluate.cost(first) <= losses.LONG_COST
    assert first.values[0, first.target[0]] == long.values[0, 5]  # the target's logit kept
    assert second.classes <= losses.LONG
    assert sum(evaluate.cost(b) for b in [*small, second]) <= losses.GENERATION_COST


def test_a_far_target_is_answered_and_no_row_spreads_too_far() -> None:
    # Logits of -3e38 and 3e38 with the target at the bottom: the oracle once formed 1 + e^(6e38) and
    # failed (OverflowError; an input it cannot answer scores REFUSED, is never saved, and the hunt goes
    # on). It now pivots on the largest logit: the loss 6e38 is inf in float32, as the correct
    # composition returns, and nothing is refused.
    evaluate = LossEvaluator(load(CORRECT), "cross_entropy", "float32", "cpu", Settings())
    far = Batch(np.array([[3e38, -3e38]], dtype=np.float32), np.array([1]), "none")
    near = losses.batch(np.array([[0.0, -2.0]]), [0], format_of("float32"), "none")
    scores = evaluate([far, near])
    assert REFUSED not in scores and all(0 <= score <= 1 for score in scores)
    assert evaluate.unanswered == 0
    # The moves keep every row's finite logits within SPREAD of each other; a +inf (a special row's)
    # stays, and counts for neither (rounded into the format it would be the format's max: 3.4e38
    # beside 237.7 is such an input).
    made = losses.batch(np.array([[3e38, -3e38, 1.0]]), [1], format_of("float32"))
    assert float(made.values.max()) - float(made.values.min()) <= 1.001 * losses.SPREAD
    special = losses.batch(np.array([[237.75, np.inf, -3e38]]), [0], format_of("float32"))
    assert special.values[0].tolist() == [237.75, np.inf, 237.75 - losses.SPREAD]


def test_shrinking_a_loss_input_drops_options_rows_and_classes_it_does_not_need() -> None:
    pytest.importorskip("torch")
    evaluate = LossEvaluator(load("torch"), "cross_entropy", "float32", "cpu", Settings())
    values = np.random.default_rng(0).normal(size=(2, 9))
    values[0, 4] = 40.0  # row 0's target leads by about 40: torch's loss 0 for about 1e-17
    # The sum over one kept row (the other ignored), with class weights of 1 and 0.5.
    found = losses.batch(values, [4, -100], format_of("float32"), "sum", ignore_index=-100,
                         weight=np.array([1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5], dtype=np.float32))
    score = evaluate([found])[0]
    assert score > 1000
    shrunk = shrink(evaluate, found, score)
    # One row of two classes, the target on its max; no weights, no ignore_index, a loss per row.
    assert shrunk.row.values.shape == (1, 2) and shrunk.row.reduction == "none" and shrunk.row.plain
    assert shrunk.before.shape == "2x9" and shrunk.after.shape == "1x2" and shrunk.score >= 0.9 * score
    assert shrunk.after.bits < shrunk.before.bits and shrunk.evaluations < 300


# The corpus.

def loss_entry(op: str = "cross_entropy", **fields) -> corpus.Entry:
    x = np.array([[0.0, -18.0, np.nan], [1.5, -np.inf, 2.0]], dtype=np.float32)
    x.flags.writeable = False
    target = np.array([0, -1])
    weight = np.array([1.0, 0.0, 0.5], dtype=np.float32)
    values = {"cotangent": "random" if op.endswith("_vjp") else None, "backend": "torch",
              "backend_version": "2", "date": "2026-12-01", "seed": 4, "max_ulp": 8.5e6, "ratio": 5.8e5,
              "failure": "accuracy", "message": "got -0.0", "description": "a test entry",
              "target": target, "reduction": "mean", "ignore_index": -1, "label_smoothing": 0.1,
              "weight": weight}
    return corpus.Entry(op=op, dtype="float32", x=x, **{**values, **fields})


@pytest.mark.parametrize("op", ["cross_entropy", "cross_entropy_vjp"])
def test_a_loss_entry_round_trips_through_the_corpus_and_the_catalogue(tmp_path: Path, op: str) -> None:
    entry = loss_entry(op)
    bare = loss_entry(op, ignore_index=None, label_smoothing=None, weight=None, target=np.array([0, 2]))
    assert entry.name != bare.name and entry.name.startswith(f"found_{op}_float32_")
    path = tmp_path / "corpus.json"
    corpus.merge(path, [entry, bare])
    written = json.loads(path.read_text())["cases"]
    assert written[0]["target"] == [0, -1] and written[0]["reduction"] == "mean"
    assert written[0]["ignore_index"] == -1 and written[0]["label_smoothing"] == 0.1
    assert written[0]["weight"] == corpus.encode_bits(entry.weight)
    assert not {"ignore_index", "label_smoothing", "weight"} & set(written[1])
    back, back_bare = corpus.read(path)
    assert back.name == entry.name and back.x.tobytes() == entry.x.tobytes()
    assert back.target.tolist() == [0, -1] and back.reduction == "mean" and back.ignore_index == -1
    assert back.label_smoothing == 0.1 and back.weight.tobytes() == entry.weight.tobytes()
    assert back_bare.weight is None and back_bare.ignore_index is None and back_bare.label_smoothing is None
    assert corpus.merge(path, [back]) == []  # the same question: not added twice

    case = found_case(back)
    assert case.options == ("ignore_index", "label_smoothing", "weight") and case.dtypes == ("float32",)
    assert why_not_case(op, case) is None and why_not_case("log_softmax", case) is not None
    arguments = case.loss_arguments("float32")
    assert arguments["target"].tolist() == [0, -1] and arguments["reduction"] == "mean"
    assert arguments["ignore_index"] == -1 and arguments["label_smoothing"] == 0.1
    assert arguments["weight"].tobytes() == entry.weight.tobytes()
    assert case.build("float32").tobytes() == entry.x.tobytes()
    assert set(case.cotangents) >= {"ones", "random"}
    plain = found_case(back_bare)
    assert plain.options == () and plain.loss.reduction == "mean"


def test_a_hunted_loss_input_and_its_corpus_entry_ask_the_same_question(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the hunt scores for an input with every option is what the catalogue's found case asks:
    # the same reference, the same call, the same verdict (the cotangents built from the seed).
    fmt = format_of("float32")
    found = losses.batch(np.array([[0.5, -3.0, 2.0, 0.0], [1.0, 4.0, -1.0, 2.0], [0.0, 1.0, 2.0, 3.0]]),
                         [2, 1, 3], fmt, "mean", ignore_index=3, label_smoothing=0.2,
                         weight=np.array([1.0, 0.0, 2.0, 0.5], dtype=np.float32))
    plan = Plan("cross_entropy_vjp", "float32", "random", seed=11, evaluations=1, keep=1)
    evaluate = LossEvaluator(load(NO_MEAN), plan.op, "float32", "cpu", Settings(), "random", 11)
    record = evaluate.judged(found)
    fields = search._loss_fields(found)
    entry = corpus.Entry(op=plan.op, dtype="float32", cotangent="random", backend=NO_MEAN,
                         backend_version="1", date="2026-12-01", seed=11,
                         max_ulp=record["metrics"].get("max_ulp"), ratio=record["bound"].get("ratio"),
                         failure=record["failure"], message=record["message"], x=found.values,
                         description="", **fields)
    path = tmp_path / "corpus.json"
    corpus.merge(path, [entry])
    (back,) = corpus.read(path)
    again = replayed(back, NO_MEAN, monkeypatch)
    assert again["status"] == record["status"] == "fail"
    assert again["message"] == record["message"]
    assert again["loss"] == {"reduction": "mean", "rows": 3, "ignore_index": 3, "ignored_rows": 1,
                             "label_smoothing": 0.2, "zero_weights": 1}


def test_an_old_corpus_file_without_the_loss_keys_still_reads(tmp_path: Path) -> None:
    x = np.array([0.0, -9.0], dtype=np.float32)
    old = {"format": "softmax-suite corpus", "version": 1, "cases": [{
        "name": f"found_softmax_float32_{corpus.input_digest(x)[:8]}", "op": "softmax", "dtype": "float32",
        "cotangent": None, "backend": "numpy", "backend_version": "2.0", "date": "2026-10-01", "seed": 1,
        "max_ulp": 2070.0, "ratio": 273.0, "failure": "accuracy", "message": "", "shape": [2], "axis": -1,
        "bits": "00000000 c1100000", "description": "an entry of an older corpus"}]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    (entry,) = corpus.read(path)
    assert entry.target is None and entry.reduction is None and found_case(entry).loss is None
    corpus.merge(path, [])
    assert json.loads(path.read_text()) == old  # rewritten as it was


def edited(change) -> str:
    document = json.loads(corpus.dumps([loss_entry()]))
    change(document["cases"][0])
    return json.dumps(document)


@pytest.mark.parametrize(("text", "words"), [
    (edited(lambda e: e.pop("target")), ["lacks target"]),
    (edited(lambda e: e.update(reduction="avg")), ["'reduction' is 'avg', expected one of none, mean, sum"]),
    (edited(lambda e: e.update(target=[0, 3])), ["'target' is [0, 3], expected a list of 2 class indices"]),
    (edited(lambda e: e.update(target=[0])), ["expected a list of 2 class indices"]),
    (edited(lambda e: e.update(label_smoothing=1.5)), ["'label_smoothing' is 1.5"]),
    (edited(lambda e: e.update(weight="3f800000")), ["'weight': holds 1 words"]),
    (edited(lambda e: e.update(weight="bf800000 00000000 3f000000")), ["finite class weights >= 0"]),
    (edited(lambda e: e.update(shape=[6], bits=e["bits"])), ["[N, C] for a loss op"]),
    (edited(lambda e: e.update(op="softmax", name=e["name"].replace("cross_entropy", "softmax"))),
     ["has target, reduction, ignore_index, label_smoothing, weight, which only an entry of a loss op"]),
    (edited(lambda e: e.update(target=[0, 1])), ["does not match", "(with its targets and options)"]),
], ids=["no_target", "bad_reduction", "target_out_of_range", "short_target", "smoothing_above_1",
        "short_weight", "negative_weight", "not_2d", "softmax_with_target", "edited_target"])
def test_bad_loss_entries_are_named(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(corpus.CorpusError) as raised:
        corpus.read(path)
    for word in [str(path), *words]:
        assert word in str(raised.value)


def test_the_loss_options_flag_is_for_the_loss_ops(capsys) -> None:
    assert cli.main(["hunt", "--backend", "numpy", "--op", "softmax", "--dtype", "float32", "--evaluations",
                     "1", "--no-loss-options"]) == 2
    assert "--no-loss-options applies to the loss ops only, not to softmax" in capsys.readouterr().err
    assert Plan("cross_entropy", "float32").longest == search.LOSS_MAX_LENGTH
    assert Plan("softmax", "float32").longest == search.MAX_LENGTH
    assert Plan("cross_entropy", "float32", max_length=64).longest == 64


def test_a_failed_loss_call_scores_worst() -> None:
    class Raises:
        options = LOSS_OPTIONS

        def cross_entropy(self, x, axis, target, reduction, **options):
            raise RuntimeError("no")

    from softmax_suite.backends.custom import wrap

    evaluate = LossEvaluator(wrap(Raises, "raises"), "cross_entropy", "float32", "cpu", Settings())
    row = losses.batch(np.array([[0.0, -1.0]]), [0], format_of("float32"))
    assert evaluate([row]) == [WORST] and evaluate.failed_calls == {"error": 1}
    assert evaluate.judged(row)["status"] == "error"
