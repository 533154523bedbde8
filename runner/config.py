"""Settings from pyproject.toml [tool.softmax-suite]: budget constants and policies."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from softmax_suite.oracle.budget import BudgetConstants
from softmax_suite.protocol import DTYPES, OPS
from softmax_suite.reports.gate import GateRules, Thresholds
from softmax_suite.runner.selection import suggestion
from softmax_suite.suites.policy import DEFAULT_DEVIATIONS, FLUSH_POLICIES, ConfigError, Policy, tomllib

__all__ = ["ConfigError", "Settings", "gate_rules", "load_settings"]


@dataclass(frozen=True)
class Settings(Policy):
    """The checks' policy, the gate's rules, and where they were read from."""

    gate: GateRules = field(default_factory=GateRules)
    source: str = "defaults"


def load_settings(pyproject: Path | None) -> Settings:
    """Settings from a pyproject.toml's [tool.softmax-suite] table; defaults when absent."""
    if pyproject is None or not pyproject.is_file():
        return Settings()
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read {pyproject}: {why}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{pyproject}:{_toml_line(error)}: not valid TOML ({error})") from None
    tool = data.get("tool", {})
    table = tool.get("softmax-suite") if isinstance(tool, dict) else None
    if table is None:
        return Settings()
    where = f"{pyproject} [tool.softmax-suite]"
    _check_table(table, where)
    known = ["budget", "flush_to_zero", "gate", "known_deviations"]
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys are {', '.join(known)}"
                              f"{suggestion(key, known)}")
    budget_table = table.get("budget", {})
    _check_table(budget_table, f"{where}.budget")
    _check_numbers(budget_table, list(BudgetConstants().as_dict()), f"{where}.budget", "constant")
    flush = table.get("flush_to_zero", "note")
    if flush not in FLUSH_POLICIES:
        raise ConfigError(f"{where}.flush_to_zero = {flush!r}: must be one of "
                          f"{', '.join(FLUSH_POLICIES)}")
    deviations = table.get("known_deviations")
    if deviations is not None and not isinstance(deviations, str):
        raise ConfigError(f"{where}.known_deviations = {deviations!r}: must be a path (a string)")
    path = (pyproject.parent / deviations) if deviations else DEFAULT_DEVIATIONS
    if deviations and not path.is_file():
        raise ConfigError(f"{where}.known_deviations = {deviations!r}: no such file {path}")
    gate_table = table.get("gate", {})
    _check_table(gate_table, f"{where}.gate", "must be a table of thresholds")
    gate = gate_rules(gate_table, f"{where}.gate")
    return Settings(
        budget=BudgetConstants(**{k: float(v) for k, v in budget_table.items()}),
        flush_to_zero=flush,
        known_deviations=path,
        gate=gate,
        source=str(pyproject),
    )


def _toml_line(error: Exception) -> int:
    """The line of a TOML error (tomllib says it in the message before Python 3.14)."""
    found = re.search(r"at line (\d+)", str(error))
    return getattr(error, "lineno", None) or (int(found[1]) if found else 1)


def _check_table(value: object, where: str, why: str = "must be a table") -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} = {value!r}: {why}")


def _check_numbers(values: dict, valid: list[str], where: str, noun: str) -> None:
    """Every key of values one of valid, every value a number >= 0."""
    for name, value in values.items():
        if name not in valid:
            raise ConfigError(f"{where}: unknown {noun} {name!r}; valid {noun}s are {', '.join(valid)}"
                              f"{suggestion(name, valid)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}.{name} = {value!r}: must be a number >= 0")


def gate_rules(table: dict, where: str) -> GateRules:
    """GateRules from a [tool.softmax-suite.gate] table: thresholds, then overrides per op,
    dtype or 'op/dtype', each on top of the table's own thresholds."""
    def thresholds(values: object, base: Thresholds, at: str) -> Thresholds:
        _check_table(values, at, "must be a table of thresholds")
        _check_numbers(values, sorted(f.name for f in fields(Thresholds)), at, "key")
        if values.get("accuracy_factor", 1) < 1:
            raise ConfigError(f"{at}.accuracy_factor = {values['accuracy_factor']!r}: must be >= 1")
        return replace(base, **{k: float(v) for k, v in values.items()})

    overrides = table.get("overrides", {})
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}.overrides: must be a table of op, dtype or 'op/dtype' keys")
    # A misspelt override would apply to nothing, silently.
    names = [*OPS, *DTYPES, *(f"{op}/{dtype}" for op in OPS for dtype in DTYPES)]
    for name in overrides:
        if name not in names:
            raise ConfigError(f"{where}.overrides: unknown key {name!r}; an override names an op "
                              f"({', '.join(OPS)}), a dtype ({', '.join(DTYPES)}) or op/dtype"
                              f"{suggestion(name, names)}")
    default = thresholds({k: v for k, v in table.items() if k != "overrides"}, Thresholds(), where)
    return GateRules(default, {name: thresholds(values, default, f"{where}.overrides.{name!r}")
                               for name, values in overrides.items()})
