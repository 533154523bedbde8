"""The length ladder: rows straddling the lengths where a narrow accumulator gives out (a float16
sum of ones stalls at 2048 and overflows at 65520, a bfloat16 one stalls at 256), so that a report
can say how long a row each backend gets right in each dtype (docs/low-precision.md)."""

from __future__ import annotations

# Each length and the one past it where an accumulator's limit lies between them: 256 and 2048
# (bfloat16's and float16's sums of ones stall there), 65504 (float16's max), 65519/65520 (65520
# rounds to inf in float16), 65536 = 2^16, then 2^17 and 2^20 for wider accumulators.
LENGTHS: tuple[int, ...] = (256, 257, 2048, 2049, 4096, 8192, 65504, 65519, 65520, 65536, 2**17, 2**20)
# 2^24 + 1: a float32 sum of ones stalls at 2^24 (tagged slow: 2^24 entries per dtype).
SLOW_LENGTHS: tuple[int, ...] = (2**24 + 1,)

