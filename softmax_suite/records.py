"""The vocabulary of a results file's records that every room reads: the ULP histogram's bins."""

from __future__ import annotations

# Upper edges of the ULP histogram's bins (metrics.ulp_histogram of a record): (0, 0.5] is
# correctly rounded, then one bin per power of two up to 2^20; one more bin counts the errors
# above it.
ULP_BIN_EDGES: tuple[float, ...] = (0.5, *(2.0**k for k in range(21)))
