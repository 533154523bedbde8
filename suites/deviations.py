"""Known deviations of real libraries: a failing result they match is reported as known_failure.

The data file is TOML, one [[deviation]] table per entry: backend, op, dtype, case and
(optionally) device, cotangent, check (accuracy, the default, invariants or throughput) and
failure (accuracy, semantic, invariant, error, timeout, crash or measurement) are glob patterns
or lists of them; reason says why; link points upstream where an issue exists. The first
matching entry wins, for every check alike (suites.judging.judged). An entry that matches a
result which now passes is reported so it can be removed.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from softmax_suite.suites.policy import ConfigError, tomllib

FIELDS = ("check", "backend", "device", "dtype", "op", "case", "cotangent", "failure")
CHECKS = ("accuracy", "invariants", "throughput")


@dataclass(frozen=True)
class Deviation:
    backend: tuple[str, ...]
    op: tuple[str, ...]
    dtype: tuple[str, ...]
    case: tuple[str, ...]
    reason: str
    device: tuple[str, ...] = ("*",)
    check: tuple[str, ...] = ("accuracy",)
    cotangent: tuple[str, ...] = ("*",)
    failure: tuple[str, ...] = ("*",)
    link: str = ""

    def matches(self, result: dict) -> bool:
        return all(any(fnmatch.fnmatchcase(str(result.get(name) or ""), pattern)
                       for pattern in getattr(self, name))
                   for name in FIELDS)


def _patterns(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def load_deviations(path: Path) -> tuple[Deviation, ...]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"known deviations file {path}: {error}") from None
    entries = []
    for number, entry in enumerate(data.get("deviation", []), start=1):
        missing = [k for k in ("backend", "op", "dtype", "case", "reason") if k not in entry]
        unknown = [k for k in entry if k not in (*FIELDS, "reason", "link")]
        if missing or unknown:
            raise ConfigError(f"{path}: deviation #{number} "
                              + (f"lacks {', '.join(missing)}" if missing else "")
                              + ("; " if missing and unknown else "")
                              + (f"has unknown keys {', '.join(unknown)}" if unknown else ""))
        entries.append(Deviation(**{k: (str(v) if k in ("reason", "link") else _patterns(v))
                                    for k, v in entry.items()}))
    return tuple(entries)


def find(deviations: tuple[Deviation, ...], result: dict) -> Deviation | None:
    return next((d for d in deviations if d.matches(result)), None)


def stale(deviations: tuple[Deviation, ...], results: list[dict]) -> list[Deviation]:
    """Entries that apply to results of this run (ignoring the failure kind) yet explain none
    of them: the deviation no longer reproduces and the entry can go.

    results must hold the whole selection of each check they hold results of. An entry is judged
    only if results hold every check it covers: softmax-suite run times throughput in a process
    of its own, and an entry of `check = "*"` may explain a failure only the other process saw."""
    used = {r["known_deviation"]["entry"] for r in results if r.get("known_deviation")}
    ran = {r.get("check") for r in results}
    stale_entries = []
    for number, deviation in enumerate(deviations, start=1):
        covered = {c for c in CHECKS if any(fnmatch.fnmatchcase(c, p) for p in deviation.check)}
        if not covered <= ran:
            continue
        in_scope = [r for r in results if r.get("status") not in ("skip", "unsupported")
                    and all(any(fnmatch.fnmatchcase(str(r.get(name) or ""), pattern)
                                for pattern in getattr(deviation, name))
                            for name in FIELDS if name != "failure")]
        if in_scope and number not in used:
            stale_entries.append(deviation)
    return stale_entries
