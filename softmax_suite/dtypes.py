"""The dtype names the suite speaks, and the names other libraries give the same formats: plain
strings, so that naming a dtype imports no array library."""

DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
# The names other libraries and papers use for the same formats: accepted wherever a dtype is named.
DTYPE_ALIASES: dict[str, str] = {
    "fp16": "float16", "f16": "float16", "half": "float16",
    "bf16": "bfloat16",
    "fp32": "float32", "f32": "float32", "single": "float32",
    "fp64": "float64", "f64": "float64", "double": "float64",
}
