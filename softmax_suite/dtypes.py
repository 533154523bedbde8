"""The dtype names the suite speaks, and the names other libraries give the same formats: plain
strings, so that naming a dtype imports no array library."""

# The four IEEE 754 formats every backend is asked by default (Backend.dtypes, Case.dtypes).
STANDARD_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
# The OCP 8-bit formats, as ml_dtypes names them: asked only of a backend that declares them in its
# `dtypes` and on the cases that list them (softmax_suite.suites.cases FLOAT8).
FLOAT8_DTYPES: tuple[str, ...] = ("float8_e4m3fn", "float8_e5m2")
# Every dtype name the suite knows: what --dtype, a corpus entry or a reproducer may name.
DTYPES: tuple[str, ...] = STANDARD_DTYPES + FLOAT8_DTYPES
# The names other libraries and papers use for the same formats: accepted wherever a dtype is named.
# (Not "float8_e4m3": ml_dtypes gives that name to an IEEE-like E4M3 with infinities, max 240.)
DTYPE_ALIASES: dict[str, str] = {
    "fp16": "float16", "f16": "float16", "half": "float16",
    "bf16": "bfloat16",
    "fp32": "float32", "f32": "float32", "single": "float32",
    "fp64": "float64", "f64": "float64", "double": "float64",
    "fp8_e4m3": "float8_e4m3fn", "fp8_e4m3fn": "float8_e4m3fn", "e4m3": "float8_e4m3fn",
    "e4m3fn": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2", "e5m2": "float8_e5m2",
}
