"""softmax-suite: the softmax family checked against an exact oracle and timed against the copy.

The public API: a backend adapter is a `Backend` (its `load()` raises `BackendUnavailable` when its
framework is missing); the ops and dtypes are named as in `OPS`, `FORWARD_OPS`, `VJP_OPS` and
`DTYPES`. Everything else lives in the rooms: `softmax_suite.oracle`, `.backends`, `.suites`,
`.reports` and `.runner`.
"""

from softmax_suite.formats import DTYPES
from softmax_suite.protocol import FORWARD_OPS, OPS, VJP_OPS, Backend, BackendUnavailable

__all__ = ["DTYPES", "FORWARD_OPS", "OPS", "VJP_OPS", "Backend", "BackendUnavailable"]
