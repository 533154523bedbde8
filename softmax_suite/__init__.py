"""softmax-suite: the softmax family checked against an exact oracle and timed against the copy.

The public API: `check` and `assert_accurate` test a function or backend from Python (another
project's tests); a backend adapter is a `Backend` (its `load()` raises `BackendUnavailable` when its
framework is missing); the ops and dtypes are named as in `OPS`, `FORWARD_OPS`, `VJP_OPS` and
`DTYPES`. Everything else lives in the rooms: `softmax_suite.oracle`, `.backends`, `.suites`,
`.reports` and `.runner`. Names load on first use: pytest imports this package in every project
where softmax-suite is installed (its plugin), and that costs no array library.

PYTEST_DONT_REWRITE: the package holds a pytest plugin, whose modules pytest would rewrite for its
assertions, and warn of when `softmax-suite run` has imported them before it starts pytest.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and the module that holds it.
_PUBLIC = {
    "DTYPES": "softmax_suite.dtypes",
    "FORWARD_OPS": "softmax_suite.ops",
    "OPS": "softmax_suite.ops",
    "VJP_OPS": "softmax_suite.ops",
    "Backend": "softmax_suite.protocol",
    "BackendUnavailable": "softmax_suite.protocol",
    "check": "softmax_suite.runner.api",
    "assert_accurate": "softmax_suite.runner.api",
    "Checked": "softmax_suite.runner.api",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'softmax_suite' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
