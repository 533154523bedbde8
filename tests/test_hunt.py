"""`softmax-suite hunt` finds what the fixed catalogue misses (the planted bug of tests.narrow_bug),
shrinks and saves it; the corpus round-trips bits, merges, and refuses bad files; hunts are
reproducible; a correct backend shows nothing over budget. Over attention's scale and mask: a hunt
finds the planted online-softmax bugs (tests.online_softmax) with the mask or scale they need, and the
catalogue replays them with those options."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.backends import isolation
from softmax_suite.backends.registry import load
from softmax_suite.formats import DTYPES, format_of
from softmax_suite.oracle.scaled import check_scale
from softmax_suite.runner import cli
from softmax_suite.runner.config import Settings
from softmax_suite.suites import accuracy, cases, corpus
from softmax_suite.suites.accuracy import Target
from softmax_suite.suites.cases import CATALOGUE, FIXED, found_case, select_cases
from softmax_suite.suites.cotangents import build_cotangents
from softmax_suite.suites.hunt.attention import SCALES, Row, scales
from softmax_suite.suites.hunt.fitness import REFUSED, WORST, Evaluator
from softmax_suite.suites.hunt.search import OFFSPRING, Plan, hunt, parse_duration, search
from softmax_suite.suites.hunt.shrink import shrink
from tests.narrow_bug import BAND, SHORT_ROW

REPO = Path(__file__).resolve().parents[1]
NARROW = "tests.narrow_bug:ExpTableSegment"
CORRECT = "tests.bad_softmax:Float64Upcast"
# Right but on rows of 3 entries (a segfault) and of 5 (a hang); HangsOnShortRows hangs only.
FAULTY = "tests.faulty_backend:FaultsOnShortRows"
HANGS = "tests.faulty_backend:HangsOnShortRows"
LIMIT = 1.0  # seconds: a hang must cost about this
ONLINE = "tests.online_softmax:OnlineSoftmax"  # correct, takes scale and mask, the "zero" convention
MAX_BEFORE_MASK = "tests.online_softmax:MaxBeforeMask"


def run_cli(*args: str, cwd: Path, corpus_variable: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """softmax-suite in a subprocess from cwd; SOFTMAX_SUITE_CORPUS as given (unset for None)."""
    env = {k: v for k, v in os.environ.items() if k != corpus.ENVIRONMENT_VARIABLE}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if corpus_variable is not None:
        env[corpus.ENVIRONMENT_VARIABLE] = corpus_variable
    return subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def entry_of(x: np.ndarray, op: str = "softmax", **fields) -> corpus.Entry:
    x = np.asarray(x)
    x.flags.writeable = False
    values = {"cotangent": None, "backend": "numpy", "backend_version": "1", "date": "2026-11-03",
              "seed": 7, "max_ulp": 1.5, "ratio": 0.25, "failure": None, "message": "",
              "description": "a test entry"}
    return corpus.Entry(op=op, dtype=x.dtype.name, x=x, **{**values, **fields})


def test_the_fixed_catalogue_misses_the_narrow_bug() -> None:
    # Every fixed case that applies to float32 passes: the bug needs a row of at most 4 entries
    # with a gap in [9, 9.25), and no fixed case has one.
    backend = load(NARROW)
    names = [case.name for case in select_cases(None) if "float32" in case.dtypes and not case.options
             and not case.loss and "ladder" not in case.tags]
    assert len(names) >= 25
    for name in names:
        record = accuracy.run(Target("softmax", NARROW, "cpu", "float32", name), backend, Settings())
        assert record["status"] == "pass", (name, record["message"])


def test_a_short_hunt_finds_shrinks_and_saves_the_narrow_bug(tmp_path: Path) -> None:
    saved = tmp_path / "found.json"
    # The search is random and any change to a score moves its path: over seeds 1 to 8, 4000 rows met
    # the band for 3 to 6 of them as the budgets changed (measured; the others end on long rows within
    # their budgets). So it is given up to five seeds, and one must find it.
    for seed in ("8", "5", "1", "3", "6"):
        saved.unlink(missing_ok=True)  # a passing hunt saves its best rows too
        done = run_cli("hunt", "--backend", NARROW, "--op", "softmax", "--dtype", "float32",
                       "--evaluations", "4000", "--seed", seed, "--corpus", str(saved), cwd=tmp_path)
        if done.returncode == 1:
            break
    assert done.returncode == 1, done.stdout + done.stderr  # a saved case fails its budget
    assert f"seed {seed}" in done.stdout and f"to {saved}" in done.stdout
    # 32 generations of 128:
    assert f"reproduce this hunt with --seed {seed} --evaluations 4096" in done.stdout
    entries = corpus.read(saved)
    worst = entries[0]
    assert worst.name.startswith("found_softmax_float32_") and worst.backend == NARROW
    assert worst.failure == "accuracy" and worst.ratio > 100  # about 2000 ULP against a budget of 8
    # Shrunk to the bug's core: two entries, a gap in the band, values of few bits ([0, -9]).
    values = worst.x.astype(np.float64)
    assert values.size == 2 and BAND[0] <= values.max() - values.min() < BAND[1]
    assert "shrunk from" in worst.description and worst.name in done.stdout

    # The catalogue now holds the found case, and the accuracy path fails the planted backend on it.
    listed = run_cli("cases", "--case", "found_*", cwd=tmp_path, corpus_variable=str(saved))
    assert listed.returncode == 0, listed.stderr
    assert worst.name in listed.stdout and "found" in listed.stdout
    out = tmp_path / "out"
    ran = run_cli("run", "--backend", NARROW, "--case", worst.name, "--op", "softmax", "--throughput", "off",
                  "-n", "0", "--out", str(out), cwd=tmp_path, corpus_variable=str(saved))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    record = next(r for r in records if r.get("kind") == "result" and r["check"] == "accuracy")
    assert record["case"] == worst.name and record["status"] == "fail"
    assert record["bound"]["ratio"] == pytest.approx(worst.ratio)


def test_shrinking_keeps_the_error_and_drops_the_rest() -> None:
    evaluate = Evaluator(load(NARROW), "softmax", "float32", "cpu", Settings())
    # A gap of 9.1796875 between 0.4375 and -8.7421875, and two entries that do not matter.
    row = np.array([0.4375, -1.3125, -8.7421875, -2.53125], dtype=np.float32)
    assert row.size <= SHORT_ROW
    score = evaluate([row])[0]
    assert score > 100
    shrunk = shrink(evaluate, row, score)
    assert shrunk.score >= 0.9 * score
    assert (shrunk.before.length, shrunk.after.length) == (4, 2)
    assert shrunk.after.bits < shrunk.before.bits and shrunk.after.bits <= 6
    assert shrunk.evaluations < 500


def test_a_correct_backend_hunted_briefly_shows_nothing_over_budget() -> None:
    for name, op, kind in (("numpy", "softmax", None), (CORRECT, "log_softmax", None),
                           (CORRECT, "logsumexp", None), ("numpy", "softmax_vjp", "mixed")):
        outcome = hunt(load(name), name, "cpu", Settings(), Plan(op, "float32", kind, evaluations=600))
        assert outcome.found, name
        for found in outcome.found:
            assert found.record["status"] == "pass", (name, op, found.record["message"])
            assert found.entry.ratio <= 1 and found.entry.cotangent == kind


def test_a_vjp_find_gets_the_hunts_cotangent_back_from_the_catalogue() -> None:
    plan = Plan("log_softmax_vjp", "float32", "random", seed=5, evaluations=200, keep=1)
    outcome = hunt(load("numpy"), "numpy", "cpu", Settings(), plan)
    entry = outcome.found[0].entry
    case = found_case(entry)
    n = entry.x.shape[0]
    assert case.resolved_seed == 5 and case.dtypes == ("float32",) and "found" in case.tags
    hunted = Evaluator(load("numpy"), plan.op, "float32", "cpu", Settings(), "random", 5).cotangents(n)
    catalogued = build_cotangents("random", case.resolved_seed, case.build("float32").shape, -1,
                                  format_of("float32"))
    for ours, theirs in zip(hunted, catalogued, strict=True):
        assert ours.tobytes() == theirs.tobytes()


def test_the_same_seed_and_evaluations_give_the_same_corpus(tmp_path: Path) -> None:
    texts = []
    for attempt in ("first", "second"):
        outcome = hunt(load(NARROW), NARROW, "cpu", Settings(), Plan("softmax", "float32", evaluations=1500))
        path = tmp_path / f"{attempt}.json"
        corpus.merge(path, [found.entry for found in outcome.found])
        # Runs either side of midnight differ in their date only.
        texts.append(path.read_text().replace(outcome.found[0].entry.date, "DATE"))
    assert texts[0] == texts[1]
    # Merging the same finds again adds nothing: one entry per input.
    again = corpus.read(tmp_path / "first.json")
    assert corpus.merge(tmp_path / "first.json", again) == []
    assert len(corpus.read(tmp_path / "first.json")) == len(again)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_under_isolate_a_row_that_crashes_or_hangs_costs_its_own_call_only() -> None:
    # Each row alone: the crash and the hang score WORST (above any error, as a call that raises),
    # the row between them is scored as ever by the worker started afresh after the crash.
    backend = isolation.Isolated.load(FAULTY, LIMIT)
    try:
        evaluate = Evaluator(backend, "softmax", "float32", "cpu", Settings(case_timeout=LIMIT))
        rows = [np.linspace(0, -4, n, dtype=np.float32) for n in (3, 4, 5)]
        scores = evaluate(rows)
        assert scores[0] == scores[2] == WORST and scores[1] <= 1, scores
        assert evaluate.failed_calls == {"crash": 1, "timeout": 1}
        record = evaluate.judged(rows[0])  # what a saved case says of it
        assert record["status"] == "error" and "died with SIGSEGV (signal 11)" in record["message"]
    finally:
        isolation.shutdown()


@pytest.mark.parametrize(("backend", "options", "failed", "struck"), [
    (FAULTY, ["--isolate"], "1 crash, 1 timeout", ["crashed", "hung"]),
    (HANGS, [], "1 timeout", ["hung"]),  # in the hunt's own process: SIGALRM stops a Python hang
])
def test_a_hunted_backend_that_crashes_or_hangs_costs_that_call_not_the_hunt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, options: list[str], failed: str,
        struck: list[str]) -> None:
    # Each fault strikes once (FAULTS_ONCE): the call that met it fails, its rows are scored again one
    # by one and pass, and the hunt goes on to its end; a correct backend otherwise, so it exits 0.
    once = tmp_path / "once"
    once.mkdir()
    monkeypatch.setenv("FAULTS_ONCE", str(once))
    done = run_cli("hunt", "--backend", backend, "--op", "softmax", "--dtype", "float32", "--evaluations",
                   "128", "--keep", "1", "--case-timeout", str(LIMIT), *options,
                   "--corpus", str(tmp_path / "found.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scored 128 rows in 1 generations" in done.stdout
    assert f"failed backend calls: {failed} " in done.stdout
    assert sorted(marker.name for marker in once.iterdir()) == struck  # each fault did strike


def test_search_stops_at_the_first_generation_boundary_after_its_limits() -> None:
    evaluate = Evaluator(load("numpy"), "softmax", "float32", "cpu", Settings())
    _, generations = search(evaluate, Plan("softmax", "float32", evaluations=1))
    assert (generations, evaluate.evaluations) == (1, OFFSPRING)
    # A clock that advances 1 s per reading: started at 0, checked at 1, 2, 3: stops at 3 >= 2.5.
    ticks = iter(range(100))
    evaluate = Evaluator(load("numpy"), "softmax", "float32", "cpu", Settings())
    _, generations = search(evaluate, Plan("softmax", "float32", seconds=2.5), clock=lambda: next(ticks))
    assert generations == 3


@pytest.mark.parametrize(("text", "seconds"), [("60", 60), ("60s", 60), ("2m", 120), ("1.5m", 90),
                                               ("1h", 3600), (" 5 s ", 5), (".5", 0.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "0", "5x", "2 minutes", "1e3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="positive duration"):
        parse_duration(text)


def special_values(dtype: str) -> np.ndarray:
    """Zeros of both signs, subnormals, the extremes, -inf, a rounded third, the exp overflow edge,
    and a NaN with a payload bit."""
    fmt = format_of(dtype)
    unsigned = f"u{fmt.np_dtype.itemsize}"
    nan = (np.array([np.nan], fmt.np_dtype).view(unsigned) | 1).view(fmt.np_dtype)
    values = np.array([0.0, -0.0, fmt.min_subnormal, -fmt.min_subnormal, fmt.min_normal, fmt.max, -fmt.max,
                       -np.inf, 1 / 3, fmt.exp_overflow]).astype(fmt.np_dtype)
    return np.concatenate([values, nan])


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_corpus_round_trips_bits(tmp_path: Path, dtype: str) -> None:
    x = special_values(dtype)
    path = tmp_path / "corpus.json"
    corpus.merge(path, [entry_of(x)])
    (back,) = corpus.read(path)
    assert back.x.dtype == format_of(dtype).np_dtype and back.x.tobytes() == x.tobytes()
    # And the catalogue's case builds exactly those bits (the NaN's payload included).
    assert found_case(back).build(dtype).tobytes() == x.tobytes()
    assert back.name == f"found_softmax_{dtype}_{corpus.input_digest(x)[:8]}"


def test_the_corpus_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(corpus.ENVIRONMENT_VARIABLE, raising=False)
    assert corpus.location() is None  # nothing here yet
    assert corpus.hunt_location(None) == Path(corpus.DEFAULT_FILE)
    Path(corpus.DEFAULT_FILE).write_text(corpus.dumps([]))
    assert corpus.location() == Path(corpus.DEFAULT_FILE)
    monkeypatch.setenv(corpus.ENVIRONMENT_VARIABLE, "off")
    assert corpus.location() is None and corpus.hunt_location(None) == Path(corpus.DEFAULT_FILE)
    monkeypatch.setenv(corpus.ENVIRONMENT_VARIABLE, "elsewhere.json")
    assert corpus.location() == corpus.hunt_location(None) == Path("elsewhere.json")
    assert corpus.hunt_location("given.json") == Path("given.json")


def valid_text() -> str:
    return corpus.dumps([entry_of(np.array([0.0, -9.0], dtype=np.float32))])


def edited(change) -> str:
    document = json.loads(valid_text())
    change(document)
    return json.dumps(document)


def drop(key: str):
    return lambda document: document["cases"][0].pop(key)


BAD_FILES = [
    ("truncated", valid_text()[:200], ["line 10 column 23: not valid JSON", "truncated?"]),
    ("not_json", "hello", ["line 1 column 1: not valid JSON"]),
    ("other_format", json.dumps({"cases": []}), ["not a softmax-suite corpus"]),
    ("other_version", edited(lambda d: d.update(version=2)),
     ["version 2, this softmax-suite reads version 1"]),
    ("cases_not_a_list", edited(lambda d: d.update(cases={})), ['"cases" must be a list']),
    ("missing_key", edited(drop("date")), ["entry 1 (found_softmax_float32_", "lacks date"]),
    ("unknown_op", edited(lambda d: d["cases"][0].update(op="softmx")), ["'op' is 'softmx'"]),
    ("short_bits", edited(lambda d: d["cases"][0].update(bits="00000000")),
     ["'bits' holds 1 words for shape [2]"]),
    ("bad_word", edited(lambda d: d["cases"][0].update(bits="00000000 c11000")),
     ["'bits' word 2 is 'c11000', not 8 lowercase hexadecimal digits"]),
    ("edited_bits", edited(lambda d: d["cases"][0].update(bits="00000000 c1200000")),
     ["does not match its op, dtype and bits", "edited or damaged"]),
    ("duplicate", edited(lambda d: d["cases"].append(d["cases"][0])),
     ["entry 2 (found_softmax_float32_", "the same input as entry 1"]),
    ("forward_with_cotangent", edited(lambda d: d["cases"][0].update(cotangent="random")),
     ["'cotangent' is 'random', expected null for a forward op"]),
]


@pytest.mark.parametrize(("text", "words"), [(text, words) for _, text, words in BAD_FILES],
                         ids=[name for name, _, _ in BAD_FILES])
def test_bad_corpus_files_are_named_with_the_fix(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(corpus.CorpusError) as raised:
        corpus.read(path)
    message = str(raised.value)
    for word in [str(path), *words, f"{corpus.ENVIRONMENT_VARIABLE}=off"]:
        assert word in message


def test_a_named_corpus_that_is_missing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(corpus.ENVIRONMENT_VARIABLE, str(tmp_path / "nowhere.json"))
    with pytest.raises(corpus.CorpusError, match=r"nowhere\.json: no such file"):
        corpus.read(corpus.location())


def test_a_bad_corpus_stops_run_and_hunt_with_exit_two(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(valid_text()[:200])
    ran = run_cli("run", "--backend", "numpy", "--case", "glossary", "--throughput", "off", "-n", "0",
                  "--out", str(tmp_path / "out"), cwd=tmp_path, corpus_variable=str(bad))
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert f"corpus {bad} line 10" in ran.stdout + ran.stderr and "Traceback" not in ran.stderr
    listed = run_cli("cases", cwd=tmp_path, corpus_variable=str(bad))
    assert listed.returncode == 2 and f"corpus {bad} line 10" in listed.stderr
    assert "Traceback" not in listed.stderr
    assert cli.main(["hunt", "--backend", "numpy", "--op", "softmax", "--dtype", "float32",
                     "--evaluations", "1", "--corpus", str(bad)]) == 2
    assert f"corpus {bad} line 10" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "words"), [
    (["--backend", "numpi"], ["unknown backend 'numpi'", "did you mean 'numpy'?"]),
    (["--op", "softmx"], ["unknown op 'softmx'", "valid are softmax, log_softmax, logsumexp, softmax_vjp"]),
    (["--dtype", "flaot32"], ["unknown dtype 'flaot32'", "valid are float16, bfloat16, float32, float64"]),
    (["--time", "soon"], ["--time 'soon'", "60s", "2m"]),
    (["--time", "0"], ["--time '0'"]),
    (["--evaluations", "0"], ["--evaluations 0: must be at least 1"]),
    (["--cotangent", "random"], ["--cotangent applies to the VJPs only, not to softmax"]),
    (["--op", "softmax_vjp", "--cotangent", "randm"], ["unknown cotangent kind 'randm'",
                                                       "random, one_hot, constant, mixed"]),
    (["--device", "cuda9"], ["no device 'cuda9'", "valid are cpu"]),
    (["--corpus", "/nonexistent-folder/c.json"], ["no folder /nonexistent-folder"]),
    (["--corpus", "."], ["corpus . is a folder"]),
    (["--backend", "tests.no_such_module:Softmax"], ["cannot import 'tests.no_such_module'"]),
])
def test_hunt_usage_errors_exit_two_with_the_valid_names(args: list[str], words: list[str], capsys) -> None:
    defaults = {"--backend": "numpy", "--op": "softmax", "--dtype": "float32", "--evaluations": "1"}
    for flag, value in defaults.items():
        if flag not in args:
            args = [*args, flag, value]
    assert cli.main(["hunt", *args]) == 2
    message = capsys.readouterr().err
    for word in words:
        assert word in message


def test_the_self_tests_see_the_fixed_catalogue_only() -> None:
    assert not [case.name for case in CATALOGUE if "found" in case.tags]


def test_a_corpus_in_the_current_folder_does_not_reach_the_self_tests(tmp_path: Path) -> None:
    (tmp_path / corpus.DEFAULT_FILE).write_text(valid_text())
    # `softmax-suite cases` there lists the found case (the default file is read) ...
    listed = run_cli("cases", "--case", "found_*", cwd=tmp_path)
    assert listed.returncode == 0 and "found_softmax_float32_" in listed.stdout, listed.stderr
    # ... while the self-tests run from there still see the fixed catalogue (tests/conftest.py).
    env = {k: v for k, v in os.environ.items() if k != corpus.ENVIRONMENT_VARIABLE}
    test = f"{REPO / 'tests' / 'test_hunt.py'}::test_the_self_tests_see_the_fixed_catalogue_only"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-p", "no:hypothesispytest", test], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


# Attention's scale and mask.

def replayed(entry: corpus.Entry, backend: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The accuracy path's record of a corpus entry, asked of backend from a catalogue that holds it
    (the fixed cases and found_case(entry), as `run` reads a corpus)."""
    case = found_case(entry)
    catalogue = (*FIXED, case)
    monkeypatch.setattr(cases, "_catalogue", lambda: (catalogue, {c.name: c for c in catalogue}))
    target = Target(entry.op, backend, "cpu", entry.dtype, case.name, entry.cotangent)
    return accuracy.run(target, load(backend), Settings())


@pytest.mark.parametrize(("planted", "op", "kind", "needs"), [
    # The max taken before masking: a masked huge, +inf or NaN entry becomes the row's max and every
    # kept exponential 0 (0/0 = NaN); nothing but a mask over such garbage shows it.
    (MAX_BEFORE_MASK, "softmax", None, "mask"),
    # The backward's mask applied after the product (0 * NaN): a NaN gradient under the mask.
    ("tests.online_softmax:NanGradientUnderMask", "softmax_vjp", "random", "mask"),
    # The scale rounded to bfloat16: 0.1 is off by 9.8e-5 relative, so a logit of -512 (-51.2 scaled)
    # moves by 5e-3 and the small share by as much relative: thousands of times its budget.
    ("tests.online_softmax:ScaleInBfloat16", "softmax", None, "scale"),
])
def test_a_short_hunt_over_scale_and_mask_finds_the_planted_bug_and_the_catalogue_replays_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: str, op: str, kind: str | None,
        needs: str) -> None:
    monkeypatch.chdir(tmp_path)  # the default settings, as Settings() below
    saved = tmp_path / "found.json"
    # Measured (seed 1): the first generation (128 rows, half the fresh ones given a scale or a mask)
    # holds the bug for every seed from 1 to 10, so 256 rows (0.2 s) leave it no chance to miss.
    args = ["hunt", "--backend", planted, "--op", op, "--dtype", "float32", "--evaluations", "256",
            "--keep", "1", "--corpus", str(saved), *(["--cotangent", kind] if kind else [])]
    assert cli.main(args) == 1  # the saved case fails
    (entry,) = corpus.read(saved)
    assert entry.backend == planted and entry.cotangent == kind
    if needs == "mask":
        # A semantic failure (NaN where the policy expects a number), with entries masked.
        assert entry.failure == "semantic" and entry.mask is not None and not entry.mask.all()
        assert entry.mask.shape == entry.x.shape and entry.x.size <= 2  # shrunk to its core
    else:
        # About 4.5e5 ULP at 7554 x its budget: [0, -512] or [-512, 0] with scale 0.1 (float32's).
        assert entry.failure == "accuracy" and entry.ratio > 1000
        assert entry.scale == float(np.float32(0.1)) and entry.mask is None
    # It needs its option: without it (the same row unscaled, or 0 where it was masked and no mask)
    # the planted backend passes.
    evaluate = Evaluator(load(planted), op, "float32", "cpu", Settings(), kind, entry.seed)
    x = entry.x if needs == "scale" else np.where(entry.mask, entry.x, np.float32(0))
    assert evaluate([Row(x.copy())])[0] <= 1

    # The catalogue's case asks with the entry's options and bits (no garbage of its own).
    case = found_case(entry)
    assert case.options == tuple(o for o in ("scale", "mask") if getattr(entry, o) is not None)
    assert case.build("float32").tobytes() == entry.x.tobytes() and not case.garbage_under_mask
    assert case.scale_in("float32") == entry.scale
    # Replayed through the accuracy path: the planted backend fails it as the hunt judged it, the
    # correct online softmax passes it.
    failed = replayed(entry, planted, monkeypatch)
    assert failed["status"] == "fail" and failed["failure"] == entry.failure, failed["message"]
    assert failed["message"] == entry.message
    if entry.mask is not None:
        assert failed["mask"]["masked"] == int((~entry.mask).sum()) and failed["fully_masked"] == "zero"
    # (The VJP's find is one fully masked entry: the correct backend's exact 0 there is judged against
    # a finite budget, masking.under_convention.)
    passed = replayed(entry, ONLINE, monkeypatch)
    assert passed["status"] == "pass", passed["message"]


def test_without_the_search_over_scale_and_mask_the_max_before_mask_bug_hides(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # The same hunt with --no-attention: plain rows only (their -inf masks are no masks), which the
    # planted backend gets right.
    monkeypatch.chdir(tmp_path)
    args = ["hunt", "--backend", MAX_BEFORE_MASK, "--op", "softmax", "--dtype", "float32", "--evaluations",
            "256", "--keep", "1", "--corpus", str(tmp_path / "found.json")]
    assert cli.main([*args, "--no-attention"]) == 0
    out = capsys.readouterr().out
    assert "over rows, scale and mask" not in out and "--evaluations 256 --no-attention" in out
    assert " masked " not in out.splitlines()[2]  # the table has no scale or mask columns
    (entry,) = corpus.read(tmp_path / "found.json")
    assert entry.scale is None and entry.mask is None and "scale" not in entry.as_json()
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "on cpu over rows, scale and mask for 256 rows" in out
    assert "scale  masked  status" in out and "     1/2  semantic" in out  # a row of 2, 1 masked


def test_shrinking_keeps_the_mask_with_its_entries_and_drops_the_scale_it_does_not_need() -> None:
    evaluate = Evaluator(load(MAX_BEFORE_MASK), "softmax", "float32", "cpu", Settings())
    keep = np.array([True, True, False, True, False, True])
    row = Row(np.array([-1.5, 0.25, -3.0, -2.0, 0.0, -0.75], dtype=np.float32), scale=scales(
        format_of("float32"))[3], mask=keep, garbage="inf")
    assert row.x[2] == row.x[4] == np.inf  # the garbage under the mask
    score = evaluate([row])[0]
    assert score == WORST  # every kept share NaN
    shrunk = shrink(evaluate, row, score)
    # Two entries, one kept and one masked +inf; no scale (the bug does not need it); the kept value
    # simplified to 0.
    kept, masked = shrunk.row.x[shrunk.row.mask], shrunk.row.x[~shrunk.row.mask]
    assert shrunk.row.mask.size == shrunk.row.values.size == 2 and shrunk.row.scale is None
    assert kept.tolist() == [0.0] and masked.tolist() == [np.inf] and shrunk.score == WORST
    assert (shrunk.before.length, shrunk.after.length) == (6, 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_scales_a_hunt_tries_are_rounded_into_the_dtype_and_taken_by_the_oracle(dtype: str) -> None:
    fmt = format_of(dtype)
    expected = {float(x) for x in np.array(SCALES).astype(fmt.np_dtype)} if dtype != "float64" \
        else {0.125, 0.0625}  # for float64 only the powers of two (1/sqrt(64), 1/sqrt(256))
    assert set(scales(fmt)) == expected
    for scale in scales(fmt):
        check_scale(scale, fmt)

    class Recording(Evaluator):
        def __call__(self, rows):
            self.seen.extend(rows)
            return super().__call__(rows)

    # numpy takes scale and mask: two generations of a hunt give its rows both.
    evaluate = Recording(load("numpy"), "softmax", dtype, "cpu", Settings())
    evaluate.seen = []
    search(evaluate, Plan("softmax", dtype, evaluations=256))
    tried = {row.scale for row in evaluate.seen} - {None}
    assert tried and tried <= set(scales(fmt))
    assert any(row.mask is not None for row in evaluate.seen)
    assert any(row.mask is not None and not row.mask.any() for row in evaluate.seen)  # fully masked


def test_a_corpus_entry_round_trips_its_scale_and_mask(tmp_path: Path) -> None:
    x = np.array([0.0, np.inf, -3.0, np.nan], dtype=np.float32)
    mask = np.array([True, False, True, False])
    mask.flags.writeable = False
    entry = entry_of(x, scale=float(np.float32(1 / math.sqrt(96))), mask=mask)
    plain = entry_of(x)
    assert entry.name != plain.name  # the same bits, another question
    path = tmp_path / "corpus.json"
    corpus.merge(path, [entry, plain])
    back, back_plain = corpus.read(path)
    assert back.scale == entry.scale and back.mask.tolist() == mask.tolist() and back.name == entry.name
    assert back.x.tobytes() == x.tobytes() and back_plain.scale is None and back_plain.mask is None
    assert json.loads(path.read_text())["cases"][0]["mask"] == "1010"
    case = found_case(back)
    assert case.options == ("scale", "mask") and case.build_mask((4,)).tolist() == mask.tolist()


def test_a_corpus_file_without_scale_or_mask_still_loads(tmp_path: Path) -> None:
    # As a softmax-suite before the search over scale and mask wrote it: no "scale", no "mask".
    x = np.array([0.0, -9.0], dtype=np.float32)
    name = f"found_softmax_float32_{corpus.input_digest(x)[:8]}"
    old = {"format": "softmax-suite corpus", "version": 1, "cases": [{
        "name": name, "op": "softmax", "dtype": "float32", "cotangent": None, "backend": "numpy",
        "backend_version": "2.0", "date": "2026-10-01", "seed": 1, "max_ulp": 2070.0, "ratio": 273.0,
        "failure": "accuracy", "message": "", "shape": [2], "axis": -1, "bits": "00000000 c1100000",
        "description": "an entry of an older corpus"}]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    (entry,) = corpus.read(path)
    assert entry.name == name and entry.scale is None and entry.mask is None
    assert found_case(entry).options == () and found_case(entry).build("float32").tobytes() == x.tobytes()
    corpus.merge(path, [])  # rewritten as it was: no new keys for an entry without options
    assert json.loads(path.read_text()) == old


EDITED = "does not match its op, dtype and bits (with its scale and mask)"


def with_options() -> str:
    mask = np.array([True, False])
    return corpus.dumps([entry_of(np.array([0.0, np.inf], dtype=np.float32), scale=0.125, mask=mask)])


def edited_options(change) -> str:
    document = json.loads(with_options())
    change(document["cases"][0])
    return json.dumps(document)


@pytest.mark.parametrize(("text", "words"), [
    (edited_options(lambda e: e.update(mask="1")), ["'mask' must be 2 characters 0 or 1"]),
    (edited_options(lambda e: e.update(mask="1x")), ["'mask' must be 2 characters 0 or 1"]),
    (edited_options(lambda e: e.update(mask=[1, 0])), ["'mask' is [1, 0], expected a string of 0 and 1"]),
    (edited_options(lambda e: e.update(scale=0.1)), ["'scale' is 0.1, expected a number in float32"]),
    (edited_options(lambda e: e.update(scale=-0.125)), ["use a positive finite number"]),
    (edited_options(lambda e: e.update(mask="11")), [EDITED]),
    (edited_options(lambda e: e.update(scale=0.25)), [EDITED]),
    (edited_options(lambda e: e.update(colour="red")), ["has unknown keys colour"]),
], ids=["short_mask", "bad_mask", "mask_not_text", "scale_not_in_dtype", "negative_scale", "edited_mask",
        "edited_scale", "unknown_key"])
def test_bad_scales_and_masks_in_a_corpus_are_named(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(corpus.CorpusError) as raised:
        corpus.read(path)
    for word in [str(path), *words]:
        assert word in str(raised.value)


def test_a_float64_row_the_oracle_cannot_scale_exactly_is_no_question() -> None:
    # 0.125 * 2^-1074 lies below 2^-969, where the oracle's product would not be exact: the row is
    # refused (scored below everything, never saved) rather than judged, and its batch still scored.
    evaluate = Evaluator(load("numpy"), "softmax", "float64", "cpu", Settings())
    tiny = Row(np.array([0.0, 5e-324]), scale=0.125)
    fine = Row(np.array([0.0, -1.0]), scale=0.125)
    scores = evaluate([tiny, fine])
    assert scores[0] == -math.inf and 0 <= scores[1] <= 1
    assert evaluate([dataclasses.replace(tiny, scale=None)])[0] <= 1  # unscaled, it is a question


def test_the_hunt_asks_a_kernel_only_the_rows_a_run_would() -> None:
    # tests.test_attention:ShortRows takes rows of at most 64 entries, all of them finite where kept
    # (an exact embedding's limits): longer rows, and rows with a kept inf or NaN, score as refused,
    # never as a failure of the kernel; a masked inf is no kept entry.
    evaluate = Evaluator(load("tests.test_attention:ShortRows"), "softmax", "float32", "cpu", Settings())
    f32 = np.float32
    rows = [Row(np.zeros(65, f32)), Row(np.array([0, np.inf], f32)), Row(np.array([0, np.nan], f32)),
            Row(np.array([0, 1], f32)), Row(np.array([0, np.inf], f32), mask=np.array([True, False]))]
    scores = evaluate(rows)
    assert scores[:3] == [REFUSED] * 3
    assert all(0 <= score <= 1 for score in scores[3:])  # asked, and within budget
