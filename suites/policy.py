"""What the checks judge by: the budget constants, the flush-to-zero policy, the known deviations
and the time a case may take (read from pyproject.toml by the runner's config)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from softmax_suite.backends.calls import DEFAULT_CASE_TIMEOUT
from softmax_suite.oracle.budget import BudgetConstants

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["DEFAULT_DEVIATIONS", "FLUSH_POLICIES", "ConfigError", "Policy", "tomllib"]

FLUSH_POLICIES = ("note", "fail")
DEFAULT_DEVIATIONS = Path(__file__).with_name("known_deviations.toml")


class ConfigError(ValueError):
    """Malformed [tool.softmax-suite] settings; the message names the key and the fix."""


@dataclass(frozen=True)
class Policy:
    budget: BudgetConstants = field(default_factory=BudgetConstants)
    flush_to_zero: str = "note"
    known_deviations: Path = DEFAULT_DEVIATIONS
    # Not a pyproject key: --case-timeout sets it for the run.
    case_timeout: float = DEFAULT_CASE_TIMEOUT
