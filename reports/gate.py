"""The regression gate: results against a baseline, rule by rule (thresholds from pyproject.toml
[tool.softmax-suite.gate], with overrides per op, dtype or op/dtype; read by suites.config).

* status: a result that passed and now fails (or errs), or a semantic difference the baseline
  did not have: fail.
* accuracy: the gated error above factor x baseline + margin: fail; below (baseline - margin) /
  factor: noted (a changed algorithm deserves a look).
* throughput: the median roofline fraction down by more than throughput_drop (or, for a
  baseline saved from several runs, by more than those runs drifted apart), and the drop
  significant (one-sided Mann-Whitney U over the rounds' fractions, p < significance): fail;
  such a drop that is not significant is noted. Gating the fraction of the same run's copy, not
  seconds, cancels the machine's speed; the test sees the noise within a run, and only several
  baseline runs show the drift between runs (measured here: one benchmark 2.2x slower in a
  second run, with rounds within 3% of each other in both).
* a result new since the baseline: noted; one missing from the run: warned, or, when the run
  is partial (killed or interrupted before its end), noted as not run yet: its absence says
  nothing about it, and `softmax-suite run --resume` will run it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, fields

FAIL, NOTE, WARN = "fail", "note", "warn"
NOT_RUN_YET = "not run yet (partial run)"
FAILING = ("fail", "error")


@dataclass(frozen=True)
class Thresholds:
    accuracy_factor: float = 2.0
    accuracy_margin: float = 1.0
    throughput_drop: float = 0.15
    significance: float = 0.01


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


def mann_whitney_greater(before: list[float], after: list[float]) -> float:
    """One-sided p-value that `before` tends to exceed `after` (Mann-Whitney U, normal
    approximation with tie and continuity corrections)."""
    n1, n2 = len(before), len(after)
    if not n1 or not n2:
        return 1.0
    pooled = sorted((value, group) for group, values in ((0, before), (1, after)) for value in values)
    ranks: list[float] = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        size = j - i + 1
        ties += size**3 - size
        i = j + 1
    rank_before = sum(rank for rank, (_, group) in zip(ranks, pooled, strict=True) if group == 0)
    u = rank_before - n1 * (n1 + 1) / 2
    total = n1 + n2
    variance = n1 * n2 / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))


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
    if check == "throughput" and "round_fractions" in before and "round_fractions" in after:
        old = statistics.median(before["round_fractions"])
        new = statistics.median(after["round_fractions"])
        drop = 1 - new / old if old > 0 else 0.0
        runs = before.get("run_fractions", [])
        # The drift between the baseline's own runs is not a regression either.
        allowed = max(limits.throughput_drop, 1 - min(runs) / max(runs) if len(runs) > 1 else 0.0)
        if drop > allowed:
            p = mann_whitney_greater(before["round_fractions"], after["round_fractions"])
            significant = p < limits.significance
            found.append(Finding(name, FAIL if significant else NOTE,
                                 "slower" if significant else "slower, not significant",
                                 f"{old:.3g} of copy", f"{new:.3g} of copy (-{drop:.0%}, p={p:.2g})",
                                 f"drop <= {allowed:.0%} or p >= {limits.significance:g}"))
    return found


def gate(baseline: dict[str, dict], current: dict[str, dict], rules: GateRules,
         partial: bool = False) -> list[Finding]:
    """Every finding of a run (entries by key) against a baseline (entries by key); a partial run's
    missing results are noted as not run yet rather than warned about."""
    found = []
    for name in sorted(current):
        if name in baseline:
            found += compare(name, baseline[name], current[name], rules)
        else:
            found.append(Finding(name, NOTE, "new since the baseline", "-", current[name]["status"], "-"))
    missing = (NOTE, NOT_RUN_YET) if partial else (WARN, "missing from the run")
    found += [Finding(name, *missing, baseline[name]["status"], "-", "-")
              for name in sorted(set(baseline) - set(current))]
    return found


def format_table(findings: list[Finding]) -> str:
    """A plain-text table of the findings, failures first; what a partial run has not run yet is
    counted in one line below it, not listed."""
    if not findings:
        return "gate: no regressions, nothing new, nothing missing"
    order = {FAIL: 0, WARN: 1, NOTE: 2}
    shown, not_run = _not_run_yet(findings)
    rows = [("", "what", "rule", "before", "after", "threshold")] + [
        (f.severity.upper(), f.key, f.rule, f.before, f.after, f.threshold)
        for f in sorted(shown, key=lambda f: (order[f.severity], f.key))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows] if shown else []
    if not_run:
        table.append(f"{not_run} result(s) of the baseline not run yet (partial run)")
    return "\n".join(table)


def _not_run_yet(findings: list[Finding]) -> tuple[list[Finding], int]:
    shown = [f for f in findings if f.rule != NOT_RUN_YET]
    return shown, len(findings) - len(shown)


def format_markdown(findings: list[Finding], partial: bool = False) -> str:
    """The findings as a Markdown summary (for $GITHUB_STEP_SUMMARY)."""
    failures = sum(f.severity == FAIL for f in findings)
    verdict = f"**{failures} regression(s)**" if failures else "**no regressions**"
    lines = [f"## softmax-suite gate: {verdict}", ""]
    listed, not_run = _not_run_yet(findings)
    if partial:
        lines += [f"**Partial results**: the run did not finish; {not_run} result(s) of the baseline "
                  "not run yet.", ""]
    shown = [f for f in listed if f.severity != NOTE or f.rule != "new since the baseline"]
    new = len(listed) - len(shown)
    if shown:
        lines += ["| | what | rule | before | after | threshold |", "|---|---|---|---|---|---|"]
        lines += [f"| {f.severity} | `{f.key}` | {f.rule} | {f.before} | {f.after} | {f.threshold} |"
                  for f in shown]
    if new:
        lines += ["", f"{new} result(s) new since the baseline."]
    return "\n".join(lines) + "\n"
