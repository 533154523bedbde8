"""The regression gate (reports.gate, reports.baseline, `softmax-suite baseline|gate|merge`): each
rule fires on crafted results and only then, noise at one size does not fail it, and a planted 2x
slowdown and a planted accuracy regression do. (The false-alarm rate and the power on a busy
machine are measured by benchmarks/gate_noise.py, not here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from softmax_suite.reports import baseline as baseline_io
from softmax_suite.reports.gate import FAIL, NOTE, WARN, GateRules, Thresholds, gate, tally
from softmax_suite.runner.config import ConfigError, gate_rules, load_settings

REPO = Path(__file__).resolve().parents[1]


def accuracy(status: str = "pass", value: float = 2.0, semantic: tuple = (), op: str = "softmax",
             dtype: str = "float32") -> dict:
    return {"check": "accuracy", "backend": "b", "device": "cpu", "dtype": dtype, "op": op, "case": "c",
            "status": status, "semantic": dict.fromkeys(semantic, 1), "metrics": {"max_ulp": value}}


def timed(seconds: float, case: str = "row_n1M", fastest: float | None = None, cpu: float | None = None,
          threads: int = 1) -> dict:
    # 8 MB moved per call and a copy at 100 GB/s: a fastest round of 1 ms is 0.08 of the copy.
    # cpu: the fastest round's CPU time (by default its wall time: a round no one preempted).
    best = fastest or seconds
    return {"check": "throughput", "backend": "b", "device": "cpu", "dtype": "float32", "op": "softmax",
            "case": case, "status": "pass", "traffic_bytes": 8_000_000, "copy": {"gb_per_s": 100.0},
            "timing": {"median_s": seconds}, "gb_per_s": 8e6 / best / 1e9,
            "cpu_gb_per_s": 8e6 / (cpu or best) / 1e9, "contention": {"threads": threads, "other_cores": 0.0},
            "roofline_fraction": 8e6 / best / 1e9 / 100.0}


def sizes(seconds: float, *, other: float | None = None) -> list[dict]:
    """One op at the quick sweep's two 1M-element sizes (other: the second size's time)."""
    return [timed(seconds), timed(seconds if other is None else other, case="batch_4096x256")]


DEFAULT_RULES = GateRules()


def findings(before: list[dict], after: list[dict], rules: GateRules = DEFAULT_RULES) -> list[tuple]:
    old, _ = baseline_io.entries(before)
    new, _ = baseline_io.entries(after)
    return [(f.severity, f.rule) for f in gate(old, new, rules)]


def test_identical_results_pass_the_gate() -> None:
    records = [accuracy(), *sizes(1e-3)]
    assert findings(records, records) == []


@pytest.mark.parametrize(("before", "after", "expected"), [
    (accuracy(), accuracy(status="fail"), [(FAIL, "newly failing")]),
    (accuracy(), accuracy(status="error"), [(FAIL, "newly failing")]),
    (accuracy(status="fail"), accuracy(status="fail"), []),  # failing before: not a regression
    (accuracy(status="known_failure"), accuracy(status="pass"), []),
    (accuracy(), accuracy(semantic=("nan_for_number",)), [(FAIL, "new semantic difference")]),
    (accuracy(semantic=("nan_for_number",)), accuracy(semantic=("nan_for_number",)), []),
    # Defaults: factor 2, margin 1 ULP: from 2 ULP, above 5 fails and below 0.5 is noted.
    (accuracy(value=2.0), accuracy(value=5.0), []),
    (accuracy(value=2.0), accuracy(value=5.01), [(FAIL, "accuracy regressed")]),
    (accuracy(value=2.0), accuracy(value=0.51), []),
    (accuracy(value=2.0), accuracy(value=0.49), [(NOTE, "accuracy improved")]),
])
def test_each_status_and_accuracy_rule_fires_only_on_its_change(before, after, expected) -> None:
    assert findings([before], [after]) == expected


def test_new_and_missing_results() -> None:
    base = [accuracy(), accuracy(op="log_softmax")]
    run = [accuracy(), accuracy(op="logsumexp")]
    assert sorted(findings(base, run)) == [(NOTE, "new since the baseline"), (WARN, "missing from the run")]


def test_overrides_take_the_most_specific_thresholds() -> None:
    rules = gate_rules({"accuracy_factor": 3.0, "overrides": {
        "softmax": {"accuracy_factor": 4.0}, "softmax/float16": {"accuracy_factor": 8.0},
        "float16": {"accuracy_margin": 0.0}}}, "[gate]")
    assert rules.thresholds("softmax", "float16").accuracy_factor == 8.0
    assert rules.thresholds("softmax", "float32").accuracy_factor == 4.0
    assert rules.thresholds("log_softmax", "float16") == Thresholds(accuracy_factor=3.0, accuracy_margin=0.0)
    assert rules.thresholds("log_softmax", "float32") == Thresholds(accuracy_factor=3.0)
    # from 2 ULP to 12: past x3 + 1 = 7, within x8 + 1 = 17
    assert findings([accuracy(value=2.0)], [accuracy(value=12.0)], rules) == [(FAIL, "accuracy regressed")]
    half = {"dtype": "float16"}
    assert findings([accuracy(value=2.0, **half)], [accuracy(value=12.0, **half)], rules) == []


def test_noise_at_one_size_is_noted_and_never_fails() -> None:
    # A busy machine hits one benchmark at a time: one size 60% slower, the other as before.
    assert findings(sizes(1e-3), sizes(1e-3, other=2.5e-3)) == [(NOTE, "slower at this size")]
    # Within throughput_drop (25%) at both sizes: nothing at all.
    assert findings(sizes(1e-3), sizes(1.3e-3)) == []


def test_a_2x_slowdown_at_every_size_fails_each_size() -> None:
    assert findings(sizes(1e-3), sizes(2e-3)) == [(FAIL, "slower (at 2 of 2 sizes)")] * 2
    # A result timed at one size only is judged on it.
    assert findings([timed(1e-3)], [timed(2e-3)]) == [(FAIL, "slower (at 1 of 1 sizes)")]
    # Faster by as much: noted, an improvement in the tally.
    found = gate(*(baseline_io.entries(r)[0] for r in (sizes(2e-3), sizes(1e-3))), DEFAULT_RULES)
    assert {(f.severity, f.rule) for f in found} == {(NOTE, "faster")}
    assert tally(found, 2) == "0 regressions, 2 improvements, 0 unchanged"


def test_the_fastest_rounds_are_compared_not_the_median() -> None:
    # A run whose median doubled under load but whose fastest round did not: no finding.
    assert findings(sizes(1e-3), [timed(2e-3, fastest=1.05e-3),
                                  timed(2e-3, case="batch_4096x256", fastest=1.05e-3)]) == []


def test_one_thread_is_gated_on_cpu_time_several_on_wall_time() -> None:
    # One thread preempted in every round (both cores busy with other work): its fastest wall
    # time doubled, its CPU time did not. No finding; twice the CPU time fails.
    preempted = [timed(2e-3, cpu=1e-3), timed(2e-3, case="batch_4096x256", cpu=1e-3)]
    assert findings(sizes(1e-3), preempted) == []
    slower = [timed(2e-3, cpu=2e-3), timed(2e-3, case="batch_4096x256", cpu=2e-3)]
    assert findings(sizes(1e-3), slower) == [(FAIL, "slower (at 2 of 2 sizes)")] * 2
    # On two threads the CPU time counts their waiting for each other: the wall time is compared.
    def two(records: list[dict]) -> list[dict]:
        return [{**record, "contention": {"threads": 2, "other_cores": 0.0}} for record in records]

    assert findings(two(sizes(1e-3)), two(preempted)) == [(FAIL, "slower (at 2 of 2 sizes)")] * 2
    # A baseline saved on one thread and a run on two are measured on different clocks: a note
    # naming both, never a comparison.
    old, _ = baseline_io.entries(sizes(1e-3))
    new, _ = baseline_io.entries(two(sizes(1e-3)))
    assert {(f.severity, f.rule, f.before, f.after) for f in gate(old, new, DEFAULT_RULES)} == {
        (NOTE, "not gated (measured another way)", "fastest round's CPU time, GB/s", "fastest round, GB/s")}


def test_calls_too_short_to_time_are_not_gated() -> None:
    # 50 us calls: below throughput_min_call_s (100 us), whatever their change.
    short = [timed(5e-5, case="row_n4k")]
    found = gate(*(baseline_io.entries(r)[0] for r in (short, [timed(2e-4, case="row_n4k")])), DEFAULT_RULES)
    assert [(f.severity, f.rule) for f in found] == [(NOTE, "not gated (calls too short to time)")]
    assert tally(found, 1) == ("0 regressions, 0 improvements, 0 unchanged, "
                               "1 not gated (too short, on busy cores, or measured another way)")
    # ...and they do not count among an op's gated sizes: the two long ones must both drop.
    assert findings([*sizes(1e-3), *short], [timed(2e-3), timed(1e-3, case="batch_4096x256"),
                                             timed(5e-4, case="row_n4k")]) == [
        (NOTE, "slower at this size"), (NOTE, "not gated (calls too short to time)")]


def test_results_timed_on_busy_cores_are_not_gated() -> None:
    # A multi-threaded backend timed while other processes held the cores (softmax_suite.suites.throughput's
    # resolvable), or a copy that never ran at speed (no roofline fraction): a note, however slow.
    busy = [{**record, "resolvable": False} for record in sizes(4e-3)]
    assert findings(sizes(1e-3), busy) == [(NOTE, "not gated (timed on busy cores)")] * 2
    contended = [{**record, "roofline_fraction": None, "resolvable": False} for record in sizes(4e-3)]
    assert findings(sizes(1e-3), contended) == [(NOTE, "not gated (timed on busy cores)")] * 2
    assert findings(busy, sizes(4e-3)) == [(NOTE, "not gated (timed on busy cores)")] * 2


def test_a_gpu_is_gated_on_its_fraction_of_the_copy() -> None:
    # Off the CPU the fastest round's fraction of the copy timed beside it is compared: a device
    # whose clocks and copy slowed alike is no regression; the op alone twice as slow is.
    def on_gpu(records: list[dict], fraction: float) -> list[dict]:
        return [{**record, "device": "cuda", "roofline_fraction": fraction} for record in records]

    assert findings(on_gpu(sizes(1e-3), 0.5), on_gpu(sizes(2e-3), 0.49)) == []
    assert findings(on_gpu(sizes(1e-3), 0.5), on_gpu(sizes(1e-3), 0.25)) == [
        (FAIL, "slower (at 2 of 2 sizes)")] * 2


def test_a_baseline_of_several_runs_allows_their_drift() -> None:
    runs = [*sizes(1e-3), *sizes(1.5e-3)]  # the machine's two runs drifted 33% apart
    assert findings(runs, sizes(1.45e-3)) == []
    assert findings(runs, sizes(3e-3)) == [(FAIL, "slower (at 2 of 2 sizes)")] * 2


def test_the_run_is_judged_on_its_best_measurement() -> None:
    # A run timed twice (run --baseline times a slower op again): load only slows a measurement,
    # so the better one counts; a real 2x slowdown is slow both times.
    assert findings(sizes(1e-3), [*sizes(2e-3), *sizes(1.1e-3)]) == []
    assert findings(sizes(1e-3), [*sizes(2e-3), *sizes(2.1e-3)]) == [(FAIL, "slower (at 2 of 2 sizes)")] * 2


def test_a_check_the_run_did_not_make_is_one_note_not_a_warning_per_result() -> None:
    base = [accuracy(), *sizes(1e-3)]
    found = gate(*(baseline_io.entries(r)[0] for r in (base, [accuracy()])), DEFAULT_RULES)
    assert [(f.severity, f.key, f.rule, f.before) for f in found] == [
        (NOTE, "throughput/*", "not in this run (no throughput results)", "2 results")]
    assert tally(found, 1) == "0 regressions, 0 improvements, 1 unchanged"


def test_malformed_gate_settings_name_the_key(tmp_path: Path) -> None:
    for table, words in (("accuracy_factr = 2", "unknown key 'accuracy_factr'"),
                         ("throughput_drop = -1", "throughput_drop = -1: must be a number >= 0"),
                         ("accuracy_factor = 0.5", "accuracy_factor = 0.5: must be >= 1"),
                         ("[tool.softmax-suite.gate.overrides.softmax]\nthroughput_dorp = 0.1",
                          "unknown key 'throughput_dorp'")):
        path = tmp_path / "pyproject.toml"
        header = "" if table.startswith("[") else "[tool.softmax-suite.gate]\n"
        path.write_text(header + table + "\n")
        with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
            load_settings(path)


def cli(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli",
                           *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=600)


def planted_run(out: Path, **env: str) -> list[str]:
    done = cli("run", "--backend", "tests.planted_backend:Softmax", "--op", "softmax",
               "--case", "random_n1k_s10", "--out", str(out), "-n", "0",
               "--", "-k", "random_n1k_s10 or row_n1M",
               env={f"PLANTED_{k.upper()}": v for k, v in env.items()})
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return [str(out / "results.jsonl"), str(out / "throughput.jsonl")]


def test_a_planted_slowdown_and_accuracy_regression_fail_the_gate(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    saved = cli("baseline", "save", *planted_run(tmp_path / "before"), "-o", str(baseline))
    assert saved.returncode == 0, saved.stderr
    text = baseline.read_text()
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"  # stable, diffable
    summary = tmp_path / "summary.md"
    worse = cli("gate", *planted_run(tmp_path / "worse", error="64"), "--baseline", str(baseline),
                env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "accuracy regressed" in worse.stdout and "accuracy/planted/" in worse.stdout
    assert summary.read_text().startswith("## softmax-suite gate: **")
    # Twice the work per call, at the one size this run times.
    slower = cli("gate", *planted_run(tmp_path / "slower", slowdown="2"), "--baseline", str(baseline))
    assert slower.returncode == 1 and "FAIL  throughput/" in slower.stdout, slower.stdout
    assert slower.stdout.rstrip().splitlines()[-1].startswith("gate: 1 regressions, 0 improvements, ")
    # run --baseline times a slower op a second time before failing it: still twice as slow.
    again = cli("run", "--backend", "tests.planted_backend:Softmax", "--op", "softmax", "--case",
                "random_n1k_s10", "--out", str(tmp_path / "again"), "-n", "0", "--baseline", str(baseline),
                "--", "-k", "random_n1k_s10 or row_n1M", env={"PLANTED_SLOWDOWN": "2"})
    assert again.returncode == 1, again.stdout + again.stderr
    assert "timing them again before the gate decides: throughput/planted/" in (
        again.stdout)
    assert (tmp_path / "again" / "throughput-again.jsonl").is_file()
    assert "FAIL  throughput/planted/cpu/float32/softmax/row_n1M" in again.stdout


def test_gate_and_baseline_file_errors_exit_two(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{\n  nope")
    done = cli("gate", str(tmp_path / "missing.jsonl"), "--baseline", str(tmp_path / "bad.json"))
    assert done.returncode == 2 and "bad.json:2: not JSON" in done.stderr
    (tmp_path / "other.json").write_text('{"schema": 7, "entries": {}}')
    done = cli("gate", str(tmp_path / "missing.jsonl"), "--baseline", str(tmp_path / "other.json"))
    assert done.returncode == 2 and "not a softmax-suite baseline of schema 2" in done.stderr
    (tmp_path / "old.json").write_text('{"schema": 1, "entries": {}}')
    done = cli("gate", str(tmp_path / "missing.jsonl"), "--baseline", str(tmp_path / "old.json"))
    assert done.returncode == 2 and "a baseline of an older softmax-suite (schema 1" in done.stderr
    assert "save it again" in done.stderr
    # `run --baseline` reads the baseline before it runs anything: a missing one is said at once.
    started = time.perf_counter()
    done = cli("run", "--baseline", str(tmp_path / "nope.json"), "--out", str(tmp_path / "never"))
    assert done.returncode == 2 and "cannot read baseline" in done.stderr and "nope.json" in done.stderr
    assert not (tmp_path / "never").exists() and time.perf_counter() - started < 60


def test_the_gating_commands_create_their_output_folders(tmp_path: Path) -> None:
    results = write_results(tmp_path / "r.jsonl", [accuracy()])
    done = cli("baseline", "save", results, "-o", str(tmp_path / "ci" / "baseline.json"))
    assert done.returncode == 0, done.stderr
    done = cli("merge", results, "-o", str(tmp_path / "merged" / "all.jsonl"))
    assert done.returncode == 0, done.stderr
    done = cli("report", results, "--baseline", str(tmp_path / "ci" / "baseline.json"), "-o",
               str(tmp_path / "site" / "report.html"))
    assert done.returncode == 0 and (tmp_path / "site" / "report.html").is_file(), done.stderr
    assert done.stdout.splitlines()[0] == "gate: 0 regressions, 0 improvements, 1 unchanged"


def write_results(path: Path, records: list[dict]) -> str:
    from softmax_suite.reports.results import SCHEMA_VERSION, end_line

    # A finished run's file: the end line counts its results.
    lines = [{"kind": "run", "schema": SCHEMA_VERSION}, *({**r, "kind": "result"} for r in records),
             end_line(records)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def test_merge_joins_hosts_and_reports_conflicts(tmp_path: Path) -> None:
    cpu = write_results(tmp_path / "cpu.jsonl", [accuracy()])
    gpu = write_results(tmp_path / "gpu.jsonl", [{**accuracy(), "device": "cuda"}])
    done = cli("merge", cpu, gpu, "-o", str(tmp_path / "all.jsonl"))
    assert done.returncode == 0, done.stderr
    merged = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert [r["device"] for r in merged if r["kind"] == "result"] == ["cpu", "cuda"]
    assert [h["file"] for h in merged[0]["merged_from"]] == [cpu, gpu]
    other = write_results(tmp_path / "other.jsonl", [accuracy(status="fail")])
    done = cli("merge", cpu, other, "-o", str(tmp_path / "conflict.jsonl"))
    assert done.returncode == 1 and "accuracy/b/cpu/float32/softmax/c" in done.stderr
    assert not (tmp_path / "conflict.jsonl").exists()


def test_pytest_baseline_fails_the_regressed_items_in_junit(tmp_path: Path) -> None:
    # 3 ULP up is within softmax's budget on random_n1k_s10 (about 50 ULP) but past the baseline's
    # 0.5 ULP x 2 + 1: the status stays "pass", only the gate fails the item.
    baseline = tmp_path / "baseline.json"
    assert cli("baseline", "save", *planted_run(tmp_path / "before"), "-o", str(baseline)).returncode == 0
    junit = tmp_path / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "suites" / "test_forward.py"),
         "-p", "softmax_suite.runner.plugin", "-p", "no:cacheprovider",
         "--softmax-suite-backend", "tests.planted_backend:Softmax", "--softmax-suite-op", "softmax",
         "--softmax-suite-case", "random_n1k_s10", "--softmax-suite-baseline", str(baseline),
         "--junitxml", str(junit), "--softmax-suite-results", str(tmp_path / "r.jsonl")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "PLANTED_ERROR": "3"})
    assert done.returncode == 1, done.stdout + done.stderr
    xml = junit.read_text()
    assert 'failures="1"' in xml and "regressed against the baseline: accuracy regressed" in xml
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    record = next(line for line in lines if line["kind"] == "result" and line["status"] != "unsupported")
    assert record["status"] == "pass" and record["gate"][0]["rule"] == "accuracy regressed"
    # `run --baseline` gates what it wrote: exit 1 for the same regression.
    again = cli("run", "--backend", "tests.planted_backend:Softmax", "--op", "softmax", "--case",
                "random_n1k_s10", "--throughput", "off", "--out", str(tmp_path / "again"), "-n", "0",
                "--baseline", str(baseline), env={"PLANTED_ERROR": "3"})
    assert again.returncode == 1 and "accuracy regressed" in again.stdout, again.stdout + again.stderr
