"""The regression gate: results against a baseline, rule by rule (thresholds from pyproject.toml
[tool.softmax-suite.gate], with overrides per op, dtype or op/dtype; read by softmax_suite.runner.config).

* status: a result that passed and now fails (or errs), or a semantic difference the baseline
  did not have: fail.
* accuracy: the gated error above factor x baseline + margin: fail; below (baseline - margin) /
  factor: noted (a changed algorithm deserves a look).
* throughput: the op's speed (its basis, baseline.entry: on one CPU thread the GB/s of its fastest
  round by CPU time; on several, by the wall clock; on a GPU its fastest round against the copy
  interleaved with it), the best of the run's measurements against the median of the baseline's,
  down by more than throughput_drop, or than the baseline's own runs drifted apart, at a size:
  "slower at this size", noted; at two or more of the sizes the op, backend, device and dtype
  were timed at (at its one size when only one was): fail, each. A busy machine slows a spell of
  benchmarks, timed size by size so that it rarely holds every size of one op; a slower op is
  slower at every size, and again when `softmax-suite run --baseline` times it a second time.
  Not gated: a call shorter than throughput_min_call_s (its time is the scheduler's and the
  timer's as much as the op's), a result not resolvable on either side (a multi-threaded backend
  timed while other processes held the cores, a copy that never ran at speed), or one measured
  on another basis. Up by as much: noted as faster. Rounds within a run are not independent of
  the run's state (a test over them once called an identical re-run 33% slower at p = 1e-29), so
  no such test is made.
* a result new since the baseline: noted; one missing from the run: warned, or, when the run
  is partial (killed or interrupted before its end), noted as not run yet: its absence says
  nothing about it, and `softmax-suite run --resume` will run it; a check the run did not make
  at all (throughput off): one note for all its results.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

FAIL, NOTE, WARN = "fail", "note", "warn"
NOT_RUN_YET = "not run yet (partial run)"
NOT_GATED = "not gated (calls too short to time)"
NOT_RESOLVED = "not gated (timed on busy cores)"
ANOTHER_BASIS = "not gated (measured another way)"
UNGATED = (NOT_GATED, NOT_RESOLVED, ANOTHER_BASIS)
SLOWER_HERE = "slower at this size"
IMPROVED = ("accuracy improved", "faster")
FAILING = ("fail", "error")


@dataclass(frozen=True)
class Thresholds:
    accuracy_factor: float = 2.0
    accuracy_margin: float = 1.0
    throughput_drop: float = 0.3
    throughput_min_call_s: float = 1e-4


@dataclass(frozen=True)
class GateRules:
    default: Thresholds = field(default_factory=Thresholds)
    overrides: dict[str, Thresholds] = field(default_factory=dict)

    def thresholds(self, op: str, dtype: str) -> Thresholds:
        """The most specific thresholds: op/dtype, then op, then dtype, then the defaults."""
        for name in (f"{op}/{dtype}", op, dtype):
            if name in self.overrides:
                return self.overrides[name]
        return self.default


@dataclass(frozen=True)
class Finding:
    key: str
    severity: str
    rule: str
    before: str
    after: str
    threshold: str

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def compare(name: str, before: dict, after: dict, rules: GateRules) -> list[Finding]:
    """The findings for one result against its baseline entry."""
    check, _, _, dtype, op = name.split("/")[:5]
    limits = rules.thresholds(op, dtype)
    found = []
    if before["status"] == "pass" and after["status"] in FAILING:
        found.append(Finding(name, FAIL, "newly failing", before["status"], after["status"], "status pass"))
    new_semantic = sorted(set(after.get("semantic", [])) - set(before.get("semantic", [])))
    if new_semantic:
        had = ", ".join(before.get("semantic", [])) or "none"
        found.append(Finding(name, FAIL, "new semantic difference", had, ", ".join(new_semantic), "none new"))
    if check == "accuracy" and "value" in before and after.get("metric") == before.get("metric"):
        old, new, unit = before["value"], after["value"], before["metric"]
        ceiling = old * limits.accuracy_factor + limits.accuracy_margin
        floor = (old - limits.accuracy_margin) / limits.accuracy_factor
        if new > ceiling:
            rule = f"<= {ceiling:.4g} (x{limits.accuracy_factor:g} + {limits.accuracy_margin:g})"
            found.append(Finding(name, FAIL, "accuracy regressed", f"{old:.4g} {unit}", f"{new:.4g} {unit}",
                                 rule))
        elif new < floor:
            found.append(Finding(name, NOTE, "accuracy improved", f"{old:.4g} {unit}", f"{new:.4g} {unit}",
                                 f">= {floor:.4g}"))
    if check == "throughput" and "median_s" in before and "median_s" in after:
        found += _throughput(name, before, after, limits)
    return found


def _throughput(name: str, before: dict, after: dict, limits: Thresholds) -> list[Finding]:
    """A throughput result at one size: not gated, slower at this size (a candidate that gate()
    fails where the op is slower at other sizes too), faster, or nothing."""
    call = min(before["median_s"], after["median_s"])
    if call < limits.throughput_min_call_s:
        return [Finding(name, NOTE, NOT_GATED, f"{before['median_s'] * 1e6:.3g} us",
                        f"{after['median_s'] * 1e6:.3g} us", f">= {limits.throughput_min_call_s * 1e6:g} us")]
    if before.get("basis") != after.get("basis"):
        # The thread count changed, or the baseline predates the basis: two different clocks.
        return [Finding(name, NOTE, ANOTHER_BASIS, before.get("basis") or "none",
                        after.get("basis") or "none", "the same basis")]
    if not (before["resolvable"] and after["resolvable"] and before.get("run_speeds")
            and after.get("run_speeds")):
        # A multi-threaded backend timed while other processes held the cores, or a copy that never
        # ran at the machine's speed (softmax_suite.suites.throughput): the scheduler's time, not the op's.
        return [Finding(name, NOTE, NOT_RESOLVED, "resolvable" if before["resolvable"] else "busy cores",
                        "resolvable" if after["resolvable"] else "busy cores", "both resolvable")]
    runs = before["run_speeds"]
    # The run's best measurement (softmax-suite run --baseline times a slower op again before it
    # fails it; load only ever slows a measurement down) against the baseline's typical one.
    old, new = statistics.median(runs), max(after["run_speeds"])
    unit = "GB/s" if "GB/s" in before.get("basis", "") else "of copy"
    # The drift between the baseline's own runs is not a regression either.
    allowed = max(limits.throughput_drop, 1 - min(runs) / max(runs))
    change = new / old - 1 if old > 0 else 0.0
    if -change > allowed:
        return [Finding(name, NOTE, SLOWER_HERE, f"{old:.3g} {unit}", f"{new:.3g} {unit} ({change:.0%})",
                        f"drop <= {allowed:.0%}")]
    if change > allowed:
        return [Finding(name, NOTE, "faster", f"{old:.3g} {unit}", f"{new:.3g} {unit} (+{change:.0%})",
                        f"rise <= {allowed:.0%}")]
    return []


def group_of(name: str) -> str:
    """check/backend/device/dtype/op of a result's key: the sizes of one op timed alike."""
    return "/".join(name.split("/")[:5])


def judged(name: str, before: dict, after: dict, findings: list[Finding]) -> bool:
    """Whether the gate judged a throughput result's speed: timed on both sides, long enough, on
    cores the backend had, on one basis (compare's findings for it say which)."""
    return (name.startswith("throughput/") and "median_s" in before and "median_s" in after
            and not {f.rule for f in findings} & set(UNGATED))


def consistent(findings: list[Finding], gated: dict[str, int]) -> list[Finding]:
    """The findings with each "slower at this size" made a failure where its op (group_of) is
    slower at two or more of its gated sizes, or at its only one; gated counts the sizes gated
    per group."""
    slower: dict[str, int] = {}
    for finding in findings:
        if finding.rule == SLOWER_HERE:
            slower[group_of(finding.key)] = slower.get(group_of(finding.key), 0) + 1
    out = []
    for finding in findings:
        group = group_of(finding.key)
        if finding.rule == SLOWER_HERE and slower[group] >= min(2, gated.get(group, 1)):
            finding = Finding(finding.key, FAIL, f"slower (at {slower[group]} of {gated[group]} sizes)",
                              finding.before, finding.after, finding.threshold)
        out.append(finding)
    return out


def cannot_ask(name: str, capabilities: Sequence[dict]) -> str | None:
    """Why the run could not ask the question of a baseline key (check/backend/device/dtype/op/...),
    from its capability table ("any" matches every device, op or dtype); None where it could."""
    _, backend, device, dtype, op, *_ = [*name.split("/"), "", "", "", "", ""]
    for entry in capabilities:
        # An option's entry covers attention's cases only, which a key does not tell apart.
        if "option" in entry:
            continue
        if entry["backend"] == backend and all(entry[field] in ("any", value) for field, value in
                                               (("device", device), ("dtype", dtype), ("op", op))):
            return str(entry["reason"])
    return None


def gate(baseline: dict[str, dict], current: dict[str, dict], rules: GateRules,
         partial: bool = False, capabilities: Sequence[dict] = ()) -> list[Finding]:
    """Every finding of a run (entries by key) against a baseline (entries by key); a partial run's
    missing results are noted as not run yet rather than warned about, and those the run could not ask
    (its capability table: a device absent here, an op the backend lost) are warned about with why."""
    found = []
    gated: dict[str, int] = {}  # per op (group_of), its throughput results the gate judged
    for name in sorted(current):
        if name not in baseline:
            found.append(Finding(name, NOTE, "new since the baseline", "-", current[name]["status"], "-"))
            continue
        here = compare(name, baseline[name], current[name], rules)
        found += here
        if judged(name, baseline[name], current[name], here):
            gated[group_of(name)] = gated.get(group_of(name), 0) + 1
    found = consistent(found, gated)
    checks = {name.split("/")[0] for name in current}
    absent: dict[str, int] = {}
    missing = (NOTE, NOT_RUN_YET) if partial else (WARN, "missing from the run")
    for name in sorted(set(baseline) - set(current)):
        check = name.split("/")[0]
        why = cannot_ask(name, capabilities)
        if why is not None:
            found.append(Finding(name, WARN, f"cannot be asked here: {why}", baseline[name]["status"],
                                 "-", "-"))
        elif check in checks:
            found.append(Finding(name, *missing, baseline[name]["status"], "-", "-"))
        else:
            absent[check] = absent.get(check, 0) + 1
    # A check the run did not make (throughput off) says nothing of its results: one note each.
    found += [Finding(f"{check}/*", NOTE, f"not in this run (no {check} results)", f"{count} results",
                      "-", "-") for check, count in sorted(absent.items())]
    return found


def tally(findings: list[Finding], compared: int) -> str:
    """The gate's last line, over the results both sides hold: regressions, improvements, the
    unchanged rest, and those too short to gate; then what was missing or new."""
    def keys(test) -> set[str]:
        return {f.key for f in findings if test(f)}

    regressions = keys(lambda f: f.severity == FAIL)
    improvements = keys(lambda f: f.rule in IMPROVED) - regressions
    short = keys(lambda f: f.rule in UNGATED)
    noted = keys(lambda f: f.rule == SLOWER_HERE) - regressions
    unchanged = compared - len(regressions | improvements | short | noted)
    parts = [f"{len(regressions)} regressions", f"{len(improvements)} improvements", f"{unchanged} unchanged"]
    parts += [f"{len(noted)} slower at one size only"] if noted else []
    parts += [f"{len(short)} not gated (too short, on busy cores, or measured another way)"] if short else []
    for rule in ("missing from the run", "new since the baseline"):
        count = len(keys(lambda f, rule=rule: f.rule == rule))
        parts += [f"{count} {rule}"] if count else []
    return ", ".join(parts)


def format_table(findings: list[Finding], compared: int) -> str:
    """A plain-text table of the findings, failures first; what a partial run has not run yet and
    the throughput results too short to gate are counted in a line each below it, not listed;
    the last line is the tally."""
    order = {FAIL: 0, WARN: 1, NOTE: 2}
    shown, not_run = _not_run_yet(findings)
    short = sum(f.rule == NOT_GATED for f in shown)
    busy = sum(f.rule == NOT_RESOLVED for f in shown)
    shown = [f for f in shown if f.rule not in (NOT_GATED, NOT_RESOLVED)]
    rows = [("", "what", "rule", "before", "after", "threshold")] + [
        (f.severity.upper(), f.key, f.rule, f.before, f.after, f.threshold)
        for f in sorted(shown, key=lambda f: (order[f.severity], f.key))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows] if shown else []
    if not_run:
        table.append(f"{not_run} result(s) of the baseline not run yet (partial run)")
    if short:
        table.append(f"{short} throughput result(s) not gated: calls shorter than throughput_min_call_s")
    if busy:
        table.append(f"{busy} throughput result(s) not gated: a multi-threaded backend timed while other "
                     "processes kept the cores busy, or a copy that never ran at the machine's speed")
    table.append(f"gate: {tally(findings, compared)}")
    return "\n".join(table)


def _not_run_yet(findings: list[Finding]) -> tuple[list[Finding], int]:
    shown = [f for f in findings if f.rule != NOT_RUN_YET]
    return shown, len(findings) - len(shown)


def format_markdown(findings: list[Finding], compared: int, partial: bool = False) -> str:
    """The findings as a Markdown summary (for $GITHUB_STEP_SUMMARY)."""
    failures = sum(f.severity == FAIL for f in findings)
    verdict = f"**{failures} regression(s)**" if failures else "**no regressions**"
    lines = [f"## softmax-suite gate: {verdict}", "", tally(findings, compared), ""]
    listed, not_run = _not_run_yet(findings)
    if partial:
        lines += [f"**Partial results**: the run did not finish; {not_run} result(s) of the baseline "
                  "not run yet.", ""]
    shown = [f for f in listed
             if f.severity != NOTE or f.rule not in ("new since the baseline", NOT_GATED, NOT_RESOLVED)]
    new = len(listed) - len(shown)
    if shown:
        lines += ["| | what | rule | before | after | threshold |", "|---|---|---|---|---|---|"]
        lines += [f"| {f.severity} | `{f.key}` | {f.rule} | {f.before} | {f.after} | {f.threshold} |"
                  for f in shown]
    if new:
        lines += ["", f"{new} result(s) new since the baseline."]
    return "\n".join(lines) + "\n"
