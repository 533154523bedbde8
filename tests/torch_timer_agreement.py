"""The suite's time for torch.softmax on 1024 x 1024 float32 beside torch.utils.benchmark's, in a
process of its own: `python -m tests.torch_timer_agreement TRIES OUT` writes {"ours": [...],
"theirs": [...]} (seconds per call, one pair per try) to OUT.

A process of its own because both clocks are CPU time, which counts every thread of the process:
in a pytest-xdist worker, work left running by an earlier test (a backend's pool draining what it
was handed, a framework's spinning threads) lands on whichever side is timed beside it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch.utils import benchmark as torch_benchmark

from softmax_suite.runner.options import any_project
from softmax_suite.suites import throughput
from softmax_suite.suites.throughput import Shape

THROUGHPUT = str(Path(__file__).resolve().parents[1] / "suites" / "test_throughput.py")


def ours(folder: Path) -> float:
    """The suite's fastest CPU time per call: its rounds, synchronised, interleaved with the copy."""
    results = folder / "throughput.jsonl"
    results.unlink(missing_ok=True)
    selection = ["--backend", "torch", "--device", "cpu", "--op", "softmax", "--dtype", "float32"]
    code = pytest.main([THROUGHPUT, "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                        "--softmax-suite-results", str(results), *any_project(selection)])
    if code != pytest.ExitCode.OK:
        raise SystemExit(f"the suite's run exited {code}")
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    return min(next(line for line in lines if line["kind"] == "result")["cpu_rounds_s"])


def theirs(x: torch.Tensor) -> float:
    """torch.utils.benchmark's fastest block, on the same clock."""
    timer = torch_benchmark.Timer("torch.softmax(x, -1)", globals={"x": x, "torch": torch}, num_threads=1,
                                  timer=time.process_time)
    return min(timer.blocked_autorange(min_run_time=0.5).times)


def main(tries: int, out: str) -> None:
    torch.set_num_threads(1)
    shape = Shape("batch_1024x1024", 1024, 1024)
    throughput.SHAPES[shape.name] = shape
    throughput.QUICK = (shape,)
    x = torch.randn(1024, 1024)
    timed: dict[str, list[float]] = {"ours": [], "theirs": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(tries):
            timed["ours"].append(ours(Path(folder)))
            timed["theirs"].append(theirs(x))
    Path(out).write_text(json.dumps(timed))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
