"""Parallel runs: `pytest suites -n 2` writes the same result records as a serial run, and
`softmax-suite run` falls back to one process, with a note, where pytest-xdist is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SELECTION = ["--backend", "numpy", "--case", "glossary,neg_inf_mask,axis1_3d", "--dtype", "float32,float16",
             "--op", "softmax,logsumexp,softmax_vjp,log_softmax_vjp", "--cotangent", "random,mixed"]
# What may differ from run to run: how long a result took.
VARYING = {"duration_s"}


def records(path: Path) -> list[str]:
    """The result records of a results file, each as canonical JSON without the VARYING fields."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [json.dumps({k: v for k, v in line.items() if k not in VARYING}, sort_keys=True)
            for line in lines if line["kind"] == "result"]


def test_two_workers_write_the_same_records_as_one_process(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.chdir(REPO)  # node ids relative to the checkout, as a user runs it
    runs = {}
    for name, workers in (("serial", "0"), ("parallel", "2")):
        path = pytester.path / f"{name}.jsonl"
        result = pytester.runpytest_subprocess(
            "suites", "-p", "softmax_suite.runner.plugin", "-p", "no:cacheprovider",
            "-p", "no:hypothesispytest", "-n", workers, "-m", "not throughput",
            *SELECTION, "--results", str(path), "--oracle-cache", str(pytester.path / f"cache-{name}"))
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        runs[name] = records(path)
    # 3 cases x 2 dtypes x (2 forward ops + 2 VJPs x 2 cotangents + the invariants of 2 forward ops)
    assert len(runs["serial"]) == 3 * 2 * (2 + 2 * 2 + 2)
    assert len(set(runs["parallel"])) == len(runs["parallel"]), "a result was written twice"
    assert set(runs["parallel"]) == set(runs["serial"])


def test_run_is_serial_with_a_note_without_pytest_xdist(tmp_path: Path) -> None:
    # As on a machine without pytest-xdist: `import xdist` fails and pytest loads no xdist plugin.
    code = ("import sys\n"
            "class NoXdist:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.partition('.')[0] == 'xdist':\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, NoXdist())\n"
            "from softmax_suite.runner.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run(
        [sys.executable, "-c", code, "run", "--backend", "numpy", "--case", "glossary", "--dtype", "float32",
         "--op", "softmax", "--out", str(tmp_path), "--", "-p", "no:xdist", "-p", "no:xdist.looponfail"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pytest-xdist is not installed: running in one process" in done.stderr
    assert len(records(tmp_path / "results.jsonl")) == 2  # softmax and its invariants
