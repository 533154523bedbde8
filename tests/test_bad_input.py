"""Bad input costs one clear message and exit status 2, never a traceback: unknown names (with the
valid ones and the closest), malformed settings, damaged or foreign results and baseline files, and
outputs that cannot be written. pytest itself answers a bad selection with its usage error, 4."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from softmax_suite.reports import baseline as baseline_io
from softmax_suite.reports.results import SCHEMA_VERSION, end_line
from softmax_suite.runner import cli

REPO = Path(__file__).resolve().parents[1]
RECORDS = [{"check": "accuracy", "backend": "numpy", "device": "cpu", "dtype": "float32", "op": "softmax",
            "case": case, "status": "pass", "metrics": {"max_ulp": 0.5}, "nodeid": f"t[{case}]"}
           for case in ("glossary", "tied_max")]
SETTINGS = {
    "unknown": '[tool.softmax-suite]\nflush_to_zro = "note"\n',
    "broken": '[tool.softmax-suite]\nflush_to_zero = "note"\n[tool.softmax-suite.budget\n',
    "budget": "[tool.softmax-suite]\nbudget = 3\n",
    "numbers": '[tool.softmax-suite.budget]\nc_sum = "two"\n',
    "override": "[tool.softmax-suite.gate.overrides]\nsoftmx = {accuracy_factor = 3}\n",
    "deviations": "[tool.softmax-suite]\nknown_deviations = 3\n",
}


def lines(*objects: dict) -> str:
    return "".join(json.dumps(obj) + "\n" for obj in objects)


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of bad inputs beside good ones (a finished results file and its baseline)."""
    folder = tmp_path_factory.mktemp("bad")
    header = {"kind": "run", "schema": SCHEMA_VERSION}
    results = [{"kind": "result", **record} for record in RECORDS]
    good = lines(header, *results, end_line(RECORDS))
    (folder / "good.jsonl").write_text(good)
    good_lines = good.splitlines(keepends=True)
    (folder / "mid.jsonl").write_text(good_lines[0] + good_lines[1][:40] + "\n" + "".join(good_lines[2:]))
    (folder / "v2.jsonl").write_text(lines({**header, "schema": 2}, *results))
    (folder / "status.jsonl").write_text(lines(header, {**results[0], "status": "passed"}))
    (folder / "nohead.jsonl").write_text(lines(*results))
    (folder / "empty.jsonl").write_text("")
    (folder / "joined.jsonl").write_text(good + good)
    (folder / "report.html").write_text("<!DOCTYPE html>\n<html><body>a report</body></html>\n")
    baseline_io.save([folder / "good.jsonl"], folder / "base.json")
    text = (folder / "base.json").read_text()
    (folder / "trunc.json").write_text(text[: len(text) // 2])
    # a baseline of a later softmax-suite: one schema past this one's
    later = f'"schema": {baseline_io.BASELINE_SCHEMA + 1}'
    (folder / "v3.json").write_text(text.replace(f'"schema": {baseline_io.BASELINE_SCHEMA}', later))
    broken = json.loads(text)
    broken["entries"]["accuracy/numpy/cpu/float32/softmax/glossary"] = {"value": 1.0}
    (folder / "badentry.json").write_text(json.dumps(broken, indent=1, sort_keys=True))
    for name, content in SETTINGS.items():
        (folder / f"{name}.toml").write_text(content)
    (folder / "afile").write_text("a file, where a folder is needed")
    (folder / "resdir" / "results.jsonl").mkdir(parents=True)
    (folder / "nothing").mkdir()
    return folder


# (command line, phrases the message must hold, whether it needs a process of its own: `run` starts
# pytest in its process). {dir} is the folder of bad inputs; every line exits 2.
TABLE = [
    # Unknown names: the valid ones and the closest.
    ("run --backend numpi --out {dir}/o", ["unknown backend 'numpi'", "numpy, scipy, torch",
                                           "did you mean 'numpy'?"], True),
    ("run --backend numpy --op softmx --out {dir}/o",
     ["no op matches 'softmx'", "valid are softmax, log_softmax, logsumexp", "did you mean 'softmax'?"],
     True),
    ("run --backend numpy --dtype flaot32 --out {dir}/o",
     ["no dtype matches 'flaot32'", "float16, bfloat16, float32, float64", "did you mean 'float32'?"], True),
    # Another library's name for an op: the suite's own is suggested, never guessed.
    ("run --backend numpy --op softmax_grad --out {dir}/o",
     ["no op matches 'softmax_grad'", "did you mean 'softmax_vjp'?"], True),
    # An HTML report given where its results files belong: named as what it is.
    ("report {dir}/report.html -o {dir}/again.html",
     ["report.html is an HTML report, not a results file", "results.jsonl"], False),
    ("run --backend numpy --case glosary --out {dir}/o",
     ["no case matches 'glosary'", "glossary, random_n2", "did you mean 'glossary'?"], True),
    ("run --backend numpy --cotangent randm --out {dir}/o",
     ["no cotangent matches 'randm'", "random, one_hot, constant, mixed", "did you mean 'random'?"], True),
    ("run --backend numpy --device cpy --out {dir}/o",
     ["no device matches 'cpy': valid are cpu", "did you mean 'cpu'?"], True),
    ("run --throughput quik", ["no throughput sweep matches 'quik': valid are quick, full, off",
                               "did you mean 'quick'?"], False),
    ("cases --dtype flaot32", ["unknown dtype 'flaot32'", "did you mean 'float32'?"], False),
    ("cases --case glosary", ["no case matches 'glosary'", "did you mean 'glossary'?"], False),
    ("hunt --backend numpi --op softmax --dtype float32",
     ["unknown backend 'numpi'", "did you mean 'numpy'?"], False),
    ("hunt --backend numpy --op softmx --dtype float32", ["unknown op 'softmx'", "did you mean 'softmax'?"],
     False),
    ("hunt --backend numpy --op softmax --dtype flaot32",
     ["unknown dtype 'flaot32'", "did you mean 'float32'?"], False),
    ("hunt --backend numpy --op softmax_vjp --dtype float32 --cotangent randm",
     ["unknown cotangent kind 'randm'", "did you mean 'random'?"], False),
    ("hunt --backend numpy --op softmax --dtype float32 --device cpy",
     ["no device 'cpy' for numpy: valid are cpu", "did you mean 'cpu'?"], False),
    # Malformed [tool.softmax-suite]: the file, the key (or line) and the fix.
    ("gate {dir}/good.jsonl --baseline {dir}/base.json --config {dir}/unknown.toml",
     ["unknown.toml [tool.softmax-suite]: unknown key 'flush_to_zro'", "did you mean 'flush_to_zero'?"],
     False),
    ("gate {dir}/good.jsonl --baseline {dir}/base.json --config {dir}/broken.toml",
     ["broken.toml:3: not valid TOML"], False),
    ("gate {dir}/good.jsonl --baseline {dir}/base.json --config {dir}/budget.toml",
     ["budget = 3: must be a table"], False),
    ("gate {dir}/good.jsonl --baseline {dir}/base.json --config {dir}/numbers.toml",
     ["budget.c_sum = 'two': must be a number >= 0"], False),
    ("gate {dir}/good.jsonl --baseline {dir}/base.json --config {dir}/override.toml",
     ["overrides: unknown key 'softmx'", "did you mean 'softmax'?"], False),
    ("gate {dir}/good.jsonl --baseline {dir}/base.json --config {dir}/deviations.toml",
     ["known_deviations = 3: must be a path"], False),
    ("gate {dir}/good.jsonl --baseline {dir}/base.json --config {dir}/missing.toml",
     ["--config {dir}/missing.toml: no such file"], False),
    ("run --backend numpy --case glossary --out {dir}/o -- --suite-config {dir}/broken.toml",
     ["broken.toml:3: not valid TOML"], True),
    # Results files: damaged, foreign, another version; the file and line named.
    ("report {dir}/mid.jsonl -o {dir}/r.html", ["mid.jsonl:2: not a JSON line", "damaged"], False),
    ("gate {dir}/v2.jsonl --baseline {dir}/base.json",
     ["v2.jsonl:1: results schema 2, this softmax-suite reads schema 1"], False),
    ("baseline save {dir}/status.jsonl -o {dir}/b.json",
     ["status.jsonl:2: a result line whose 'status' is 'passed', not one of pass"], False),
    ("merge {dir}/nohead.jsonl -o {dir}/m.jsonl", ["nohead.jsonl:1: no run header before this line"], False),
    ("report {dir}/empty.jsonl -o {dir}/r.html", ["empty.jsonl: empty, not even a run header"], False),
    ("report {dir}/joined.jsonl -o {dir}/r.html", ["joined.jsonl:5: a line after the end line"], False),
    ("report {dir}/base.json -o {dir}/r.html", ["base.json:1: not a JSON line", "one JSON document"], False),
    ("report {dir}/absent.jsonl -o {dir}/r.html", ["cannot read results file", "No such file"], False),
    # Baselines, likewise.
    ("gate {dir}/good.jsonl --baseline {dir}/trunc.json", ["trunc.json:", "not JSON"], False),
    ("gate {dir}/good.jsonl --baseline {dir}/v3.json",
     ["v3.json:", f"not a softmax-suite baseline of schema {baseline_io.BASELINE_SCHEMA} "
                  f"(schema {baseline_io.BASELINE_SCHEMA + 1})"], False),
    ("gate {dir}/good.jsonl --baseline {dir}/good.jsonl",
     ["good.jsonl:2: not JSON", "this is a results file", "baseline save"], False),
    ("gate {dir}/good.jsonl --baseline {dir}/badentry.json",
     ["entry 'accuracy/numpy/cpu/float32/softmax/glossary' has no status"], False),
    # Outputs that cannot be written.
    ("run --backend numpy --out {dir}/afile/out", ["cannot create output folder", "Not a directory"], False),
    ("run --backend numpy --case glossary --out {dir}/resdir -n 0 --throughput off",
     ["--results {dir}/resdir/results.jsonl: cannot write (Is a directory)"], True),
    ("report {dir}/good.jsonl -o {dir}/afile/r.html", ["cannot write the report", "Not a directory"], False),
    ("baseline save {dir}/good.jsonl -o {dir}/afile/b.json", ["cannot write the baseline", "Not a directory"],
     False),
    ("merge {dir}/good.jsonl -o {dir}/afile/m.jsonl", ["cannot write the merged results", "Not a directory"],
     False),
    # Nothing to resume.
    ("run --resume {dir}/nothing", ["no results.jsonl there, nothing to resume"], False),
]


@pytest.mark.parametrize(("line", "phrases", "own_process"), TABLE, ids=[row[0][:60] for row in TABLE])
def test_bad_input_is_one_clear_message_and_exit_two(bad: Path, capsys, line: str, phrases: list[str],
                                                     own_process: bool) -> None:
    argv = line.replace("{dir}", str(bad)).split()
    if own_process:
        done = subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli",
                               *argv], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        code, said = done.returncode, done.stdout + done.stderr
    else:
        code = cli.main(argv)
        captured = capsys.readouterr()
        said = captured.out + captured.err
    assert code == 2, said
    for phrase in phrases:
        assert phrase.replace("{dir}", str(bad)) in said, said
    assert "Traceback" not in said


@pytest.mark.parametrize(("args", "phrases"), [
    (["--backend", "numpi"], ["unknown backend 'numpi'", "did you mean 'numpy'?"]),
    (["--backend", "numpy", "--op", "softmx"], ["did you mean 'softmax'?"]),
    (["--backend", "numpy", "--resume"], ["--resume continues the file of --results PATH"]),
    (["--backend", "numpy", "--resume", "--results", "{dir}/mid.jsonl"], ["--resume:", "mid.jsonl:2"]),
])
def test_pytest_answers_bad_input_with_its_usage_error(bad: Path, args: list[str],
                                                       phrases: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "suites", "-p", "softmax_suite.runner.plugin",
                           "-p",
                           "no:cacheprovider", "--collect-only", "-q",
                           *(arg.replace("{dir}", str(bad)) for arg in args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, said
    for phrase in phrases:
        assert phrase in said, said
    assert "Traceback" not in said
