"""The throughput gate's false-alarm rate and power, and the impossibility check, on a busy machine.

    python -m benchmarks.gate_noise [--runs 20] [--backend numpy,torch] [--hog 2] [--slowdowns 2,1.5]

With --hog processes spinning beside it (default: one per core), this runs the quick throughput
sweep (the throughput pass of `softmax-suite run`) runs + 1 times for the backends and
tests.planted_backend:Softmax; saves a baseline of the first run; gates each later run against it
(softmax_suite.reports.gate, with the rules of this checkout's pyproject.toml), first on its own
and then as `softmax-suite run --baseline` does, after timing the ops it would fail a second
time; it counts the runs with a failing finding or a measurement error ("impossible" throughput)
both ways, and the largest drop of a gated result. Then, per planted slowdown, it runs the
planted backend --runs times slowed down (its PLANTED_SLOWDOWN) and counts the runs whose gate
fails it, both ways; and it runs the backend of tests/lazy_backend.py that skips
synchronisation --lazy-runs times (default --runs) and counts the runs that call it a
measurement error. Prints one Markdown table; every results file stays in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from softmax_suite.reports import baseline as baseline_io
from softmax_suite.reports import gate as gate_rules
from softmax_suite.runner.config import load_settings

REPO = Path(__file__).resolve().parents[1]
PLANTED = "tests.planted_backend:Softmax"
LAZY = "tests.lazy_backend:LazySoftmax"
RULES = load_settings(REPO / "pyproject.toml").gate


def sweep(backends: str, results: Path, environment: dict | None = None, *selection: str) -> list[dict]:
    """One throughput pass, as `softmax-suite run` makes it; its result records."""
    command = [sys.executable, "-m", "pytest", str(REPO / "suites"), "-p", "softmax_suite.runner.plugin",
               "-q", "-m", "throughput", "-p", "no:xdist", "-p", "no:cacheprovider", "--sweep", "quick",
               "--backend", backends, *selection, "--results", str(results)]
    subprocess.run(command, cwd=REPO, env={**os.environ, **(environment or {})}, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    return [line for line in lines if line.get("kind") == "result"]


def gated(baseline: dict, records: list[dict]) -> list[gate_rules.Finding]:
    current, _ = baseline_io.entries(records)
    return gate_rules.gate(baseline, current, RULES)


def failing(baseline: dict, records: list[dict]) -> list[gate_rules.Finding]:
    return [f for f in gated(baseline, records) if f.severity == gate_rules.FAIL]


def confirmed(baseline: dict, records: list[dict], path: Path,
              environment: dict | None = None) -> list[gate_rules.Finding]:
    """The failing findings after timing the slower ops again, as `softmax-suite run --baseline`
    does (runner.cli._confirm_slower): the gate takes the better of the two measurements."""
    slower = sorted({gate_rules.group_of(f.key) for f in failing(baseline, records)
                     if f.key.startswith("throughput/")})
    if not slower:
        return failing(baseline, records)
    groups = [key.split("/")[1:5] for key in slower]
    backends, devices, dtypes, ops = (",".join(sorted({group[i] for group in groups})) for i in range(4))
    again = sweep(backends, path.with_name(f"{path.stem}-again.jsonl"), environment,
                  "--device", devices, "--dtype", dtypes, "--op", ops)
    return failing(baseline, records + again)


def largest_drop(baseline: dict, records: list[dict]) -> float:
    """The largest drop of speed among the results the gate judges (long enough calls, on cores
    the backend had)."""
    current, _ = baseline_io.entries(records)
    drops = [0.0]
    for name, after in current.items():
        before = baseline.get(name)
        if before and gate_rules.judged(name, before, after, gate_rules.compare(name, before, after, RULES)):
            drops.append(1 - after["run_speeds"][0] / statistics.median(before["run_speeds"]))
    return max(drops)


def errors(records: list[dict], backend: str | None = None) -> list[dict]:
    return [r for r in records if r["status"] == "error" and (backend is None or r["backend"] == backend)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", default="numpy,torch")
    parser.add_argument("--hog", type=int, default=os.cpu_count() or 2, help="busy processes beside the runs")
    parser.add_argument("--slowdowns", default="2,1.5", help="planted slowdown factors to try")
    parser.add_argument("--baseline-runs", type=int, default=1, help="runs the baseline is saved from")
    parser.add_argument("--lazy-runs", type=int, default=None,
                        help="runs of the lazy backend (default: --runs)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="gate-noise-"))
    out.mkdir(parents=True, exist_ok=True)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hog)]
    started = time.perf_counter()
    rows = []
    try:
        backends = f"{args.backend},{PLANTED}"
        first = sweep(backends, out / "run0.jsonl")
        saved = [out / "run0.jsonl"]
        for i in range(1, args.baseline_runs):
            sweep(backends, out / f"base{i}.jsonl")
            saved.append(out / f"base{i}.jsonl")
        baseline_io.save(saved, out / "baseline.json")
        baseline = baseline_io.load(out / "baseline.json")["entries"]
        alarms, impossible, first_bad, bad_runs, drop = [], [], 0, 0, 0.0
        for i in range(1, args.runs + 1):
            records = sweep(backends, out / f"run{i}.jsonl")
            first_bad += bool(failing(baseline, records) or errors(records))
            found = confirmed(baseline, records, out / f"run{i}.jsonl")
            alarms += found
            impossible += errors(records)
            bad_runs += bool(found or errors(records))
            drop = max(drop, largest_drop(baseline, records))
        rows += [("identical re-runs failing on their first measurement", f"{first_bad} of {args.runs}"),
                 ("identical re-runs failing after the slower ops are timed again (`run --baseline`), "
                  "or with a measurement error", f"{bad_runs} of {args.runs}"),
                 ("failing findings / measurement errors over all re-runs",
                  f"{len(alarms)} / {len(impossible)}"),
                 ("largest drop of a gated result in a first measurement", f"{drop:.0%}")]
        for factor in args.slowdowns.split(","):
            at_first, caught = 0, 0
            for i in range(1, args.runs + 1):
                path, environment = out / f"slow{factor}x{i}.jsonl", {"PLANTED_SLOWDOWN": factor}
                records = sweep(PLANTED, path, environment)
                at_first += any(f.key.split("/")[1] == PLANTED for f in failing(baseline, records))
                caught += any(f.key.split("/")[1] == PLANTED
                              for f in confirmed(baseline, records, path, environment))
            rows.append((f"runs of the planted {factor}x slowdown whose gate fails (first measurement; "
                         "after timing again)", f"{at_first} of {args.runs}; {caught} of {args.runs}"))
        lazy, lazy_runs = 0, args.runs if args.lazy_runs is None else args.lazy_runs
        for i in range(1, lazy_runs + 1):
            records = sweep(LAZY, out / f"lazy{i}.jsonl")
            lazy += any(r.get("failure") == "measurement" for r in errors(records, LAZY))
        rows.append(("runs of the backend without synchronisation called a measurement error",
                     f"{lazy} of {lazy_runs}"))
    finally:
        for process in hogs:
            process.kill()
    gated_first = sum(r["status"] == "pass" for r in first)
    print(f"quick sweep of {backends} ({gated_first} results), {args.hog} busy processes beside it, "
          f"load average {os.getloadavg()[0]:.1f} at the end, {time.perf_counter() - started:.0f} s; "
          f"files in {out}\n")
    print("| measured | result |\n|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")
    for finding in alarms[:10]:
        print(f"  false alarm: {finding.key} {finding.rule} {finding.before} -> {finding.after}")
    for record in impossible[:10]:
        print(f"  measurement error: {record['backend']}/{record['dtype']}/{record['op']}/{record['case']}: "
              f"{record['message'][:160]}")


if __name__ == "__main__":
    main()
