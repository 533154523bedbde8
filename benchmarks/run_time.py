"""Where the time of `softmax-suite run` goes: wall times cold and warm, broken down by step, and
the same for an earlier revision beside it.

    python -m benchmarks.run_time [--selection default four] [--before REV] [--out DIR]

For each selection (default: every installed backend; four: numpy, scipy, torch and jax) and each
revision (this checkout; with --before, git revision REV installed into a folder of its own, put
first on PYTHONPATH, with this environment's libraries), it runs `softmax-suite run` twice on one
oracle cache: cold (an empty cache folder) and then warm. Runs of the two revisions alternate, so
that a spell of load on a shared machine falls on both. Each pass loads benchmarks/phase_probe.py,
which times the suite's steps in every process; `softmax-suite report` is timed again alone on the
run's files.

The table is in seconds. The accuracy pass runs on several workers: its steps are summed over
them (worker-seconds; divide by the workers for their share of the wall). Its rows:

* backend calls: the backends' own work (accuracy, invariants and the flush probe);
* oracle: computed (the certified evaluation of a reference), disk read and write (the oracle
  cache), memory (the in-memory cache's lookup and bookkeeping);
* judging: errors against budgets, special values, known deviations; invariants: their own
  arithmetic (their backend calls and oracle are in the rows above); accuracy item: inputs,
  digests, the record;
* pytest per item: the items' time beyond the steps (fixtures, hooks, reports); workers' start-up
  and idle: their lives beyond their items (interpreter, imports, collection, waiting for work);
* results file: the controlling process writing records as they arrive (beside the workers).

The throughput pass runs in one process: its timed rounds (the op's and the copy's, from
throughput.jsonl) and the rest of its items (inputs, warm-up, pytest-benchmark, the contention
probe). `own share` is the part of the warm wall time that is neither backend work nor oracle:
the suite's own overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "phase_probe.py"
SELECTIONS = {"default": [], "four": ["--backend", "numpy,scipy,torch,jax"]}
ORACLE_STEPS = ("oracle: computed", "oracle: disk read", "oracle: disk write", "oracle: memory")
ACCURACY_STEPS = ("backend calls", *ORACLE_STEPS, "judging", "invariants",
                  "accuracy item: inputs, digests, record")


def install_revision(revision: str, folder: Path) -> Path:
    """A folder holding softmax-suite at revision, installed from a git worktree; first on
    PYTHONPATH, it is the softmax_suite this interpreter imports (its libraries are this one's)."""
    tree = folder / "tree"
    subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", str(tree), revision],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(folder / "site"), str(tree)], check=True)
    return folder / "site"


def timed_run(installed: Path | None, selection: list[str], cache: Path, folder: Path) -> dict:
    """One `softmax-suite run` with the probe, in folder: its wall time, the probe's files, the
    report's time alone, the throughput records' timed rounds."""
    probes = folder / "probe"
    probes.mkdir(parents=True)
    shutil.copy(PROBE, probes / "phase_probe.py")
    path = [str(folder) for folder in (installed, probes) if folder]
    environment = {**os.environ, "SOFTMAX_SUITE_ORACLE_CACHE": str(cache),
                   "SOFTMAX_SUITE_PHASE_PROBE": str(probes), "PYTHONPATH": os.pathsep.join(path)}
    command = [sys.executable, "-c", "from softmax_suite.runner.cli import main; raise SystemExit(main())"]
    out = folder / "out"
    started = time.perf_counter()
    completed = subprocess.run([*command, "run", "--out", str(out), *selection, "--", "-p", "phase_probe"],
                               cwd=folder, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode not in (0, 1):
        sys.exit(f"softmax-suite run exited {completed.returncode}:\n{completed.stderr[-3000:]}")
    files = [str(path) for path in (out / "results.jsonl", out / "throughput.jsonl") if path.exists()]
    started = time.perf_counter()
    subprocess.run([*command, "report", *files, "-o", str(folder / "again.html")], cwd=folder,
                   env=environment, capture_output=True, check=False)
    report = time.perf_counter() - started
    processes = [json.loads(path.read_text()) for path in probes.glob("*.json")]
    results = out / "results.jsonl"
    return {"wall": wall, "report": report, "processes": processes,
            "rounds": timed_rounds(out / "throughput.jsonl"),
            "results": sum(1 for _ in results.open()) - 2 if results.exists() else 0}


def timed_rounds(path: Path) -> float:
    """Seconds of the op's and the copy's timed rounds and first calls in a throughput file."""
    if not path.exists():
        return 0.0
    total = 0.0
    for text in path.open():
        line = json.loads(text)
        if line.get("kind") == "result" and "timing" in line:
            total += sum(line["timing"]["rounds_s"]) + sum(line["copy"]["rounds_s"]) + line["first_call_s"]
    return total


def breakdown(measured: dict) -> dict[str, float]:
    """The rows of one run's column (seconds; the accuracy pass's steps in worker-seconds)."""
    processes = measured["processes"]
    accuracy = [p for p in processes if p["markexpr"] != "throughput"]
    workers = [p for p in accuracy if p["role"] == "worker"] or [p for p in accuracy if p["role"] == "single"]
    controller = next((p for p in accuracy if p["role"] in ("controller", "single")), None)
    timing = next((p for p in processes if p["markexpr"] == "throughput"), None)

    def summed(step: str, among: list[dict]) -> float:
        return sum(p["seconds"].get(step, 0.0) for p in among)

    rows = {"command (wall)": measured["wall"],
            "accuracy pass (wall)": controller["wall_s"] if controller else 0.0,
            "throughput pass (wall)": timing["wall_s"] if timing else 0.0,
            "workers": float(len(workers))}
    for step in ACCURACY_STEPS:
        rows[step] = summed(step, workers)
    items = summed("items", workers)
    inside = sum(rows[step] for step in ACCURACY_STEPS)
    rows["pytest per item"] = items - inside
    rows["workers' start-up and idle"] = sum(p["wall_s"] for p in workers) - items
    rows["results file"] = controller["seconds"].get("results file", 0.0) if controller else 0.0
    rows["throughput: timed rounds"] = measured["rounds"]
    rows["throughput: rest of its items"] = summed("items", [timing]) - measured["rounds"] if timing else 0.0
    rows["report (alone)"] = measured["report"]
    count = max(len(workers), 1)
    useful = (rows["backend calls"] + sum(rows[step] for step in ORACLE_STEPS)) / count + measured["rounds"]
    rows["own share"] = 1 - useful / measured["wall"]
    rows["results"] = float(measured["results"])
    return rows


def table(columns: dict[str, dict[str, float]]) -> str:
    names = list(columns)
    steps = list(next(iter(columns.values())))
    width = max(map(len, steps))
    lines = [" " * width + "".join(f"{name:>16}" for name in names)]
    for step in steps:
        cells = []
        for name in names:
            value = columns[name][step]
            cells.append(f"{value:>16.0%}" if step == "own share" else
                         f"{value:>16.0f}" if step in ("workers", "results") else f"{value:>16.1f}")
        lines.append(f"{step:<{width}}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--selection", nargs="+", choices=list(SELECTIONS), default=list(SELECTIONS))
    parser.add_argument("--before", metavar="REV",
                        help="an earlier git revision to measure beside this checkout")
    parser.add_argument("--out", metavar="DIR",
                        help="keep the runs' folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    folder = Path(args.out or tempfile.mkdtemp(prefix="run-time-"))
    folder.mkdir(parents=True, exist_ok=True)
    revisions: dict[str, Path | None] = {"after": None}
    try:
        if args.before:
            revisions = {"before": install_revision(args.before, folder / "before"), **revisions}
        for selection in args.selection:
            columns: dict[str, dict[str, float]] = {}
            for state in ("cold", "warm"):
                for revision, installed in revisions.items():
                    cache = folder / selection / revision / "cache"
                    here = folder / selection / revision / state
                    column = breakdown(timed_run(installed, SELECTIONS[selection], cache, here))
                    columns[f"{revision} {state}"] = column
                    print(f"{selection}: {revision} {state} {column['command (wall)']:.0f} s",
                          file=sys.stderr, flush=True)
            print(f"\n{selection} ({' '.join(SELECTIONS[selection]) or 'every installed backend'})")
            print(table(columns), flush=True)
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "remove", "--force",
                            str(folder / "before" / "tree")], check=False, capture_output=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
