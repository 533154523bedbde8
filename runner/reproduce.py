"""A copy-paste Python script that rebuilds one accuracy result's exact input bits and calls its backend,
so that a failure can be reproduced outside the suite (the HTML report shows one per failure)."""

from __future__ import annotations

import base64
import math
import textwrap
import zlib

import numpy as np

from softmax_suite.backends.array_api_backend import SPEC_PREFIX
from softmax_suite.backends.registry import BUILTIN
from softmax_suite.formats import DTYPES
from softmax_suite.ops import OPS, PER_ROW, VJP_OPS, cotangent_of, op_named, output_shape
from softmax_suite.suites.accuracy import bits_digest, case_cotangents, case_input
from softmax_suite.suites.cases import CASES, LAYOUTS
from softmax_suite.suites.cotangents import COTANGENTS

# Above this many raw bytes of input (x and the cotangent) the snippet rebuilds them with the suite's
# catalogue instead of embedding them: a report carries one snippet per failure.
EMBED_LIMIT_BYTES: int = 64 * 1024

# Base64 characters per line of an embedded literal: with its indent and quotes a line stays within 100.
_B64_WIDTH = 92
# A message can be a backend's whole error text: the snippet keeps its start, the results file has it all.
_MESSAGE_PIECE = 80
_MESSAGE_PIECES = 12


class ReproduceError(ValueError):
    """Why no reproducer can be made for a record; the message names the problem and what to do."""


def snippet(record: dict, embed_limit: int = EMBED_LIMIT_BYTES) -> str:
    """A standalone Python script reproducing the accuracy result `record` (a results-file dict);
    inputs of at most embed_limit raw bytes are embedded, larger ones rebuilt from the catalogue.

    The input is built here with the catalogue and checked against the record's digests, so that a
    snippet never claims to reproduce bits the run did not see; raises ReproduceError when it cannot be.
    """
    if not isinstance(record, dict):
        raise ReproduceError(f"a result record is a dict, not {type(record).__name__}")
    check = record.get("check", "accuracy")
    if check not in ("accuracy", "invariants"):
        raise ReproduceError(f"a {check!r} result has no reproducer script: a timing is measured again by "
                             "re-running its test")
    status = record.get("status")
    if status in ("unsupported", "skip"):
        raise ReproduceError(f"the result's status is {status!r}: nothing was run, so there is nothing "
                             "to reproduce")
    op, backend, device, dtype, case_name = (_field(record, key) for key in
                                             ("op", "backend", "device", "dtype", "case"))
    if op not in OPS:
        raise ReproduceError(f"unknown op {op!r}: the ops are {', '.join(OPS)}")
    if dtype not in DTYPES:
        raise ReproduceError(f"unknown dtype {dtype!r}: the dtypes are {', '.join(DTYPES)}")
    case = CASES.get(case_name)
    if case is None:
        raise ReproduceError(f"case {case_name!r} is not in this softmax-suite's catalogue (list it with "
                             "`softmax-suite cases`); make the report with the softmax-suite version "
                             "that ran it")
    kind = record.get("cotangent")
    if op in VJP_OPS:
        if not isinstance(kind, str) or kind not in COTANGENTS:
            raise ReproduceError(f"{op} needs a cotangent kind, one of {', '.join(COTANGENTS)}; the "
                                 f"record has {kind!r}")
    elif kind is not None:
        raise ReproduceError(f"{op} takes no cotangent, yet the record names {kind!r}")

    x = case_input(case_name, dtype)
    g = None
    if kind is not None:
        g = cotangent_of(op, *case_cotangents(case_name, kind, dtype))
    _check_catalogue(record, case_name, x, g)

    embed = x.nbytes + (g.nbytes if g is not None else 0) <= embed_limit
    values = {
        "backend": backend, "device": device, "op": op, "dtype": dtype, "case": case_name,
        "kind": kind, "axis": case.axis, "layout": case.layout, "shape": tuple(x.shape),
        "expected_shape": output_shape(op, x.shape, case.axis),
        "input_sha256": _text(record.get("input_sha256")),
        "cotangent_sha256": _text(record.get("cotangent_sha256")) if g is not None else None,
        "output_sha256": _text(record.get("output_sha256")), "status": str(status),
    }
    parts = [
        _header(record, values, embed, embed_limit),
        _imports(values, embed),
        _constants(values),
        _rebuild_embedded(values, x, g) if embed else _rebuild_from_catalogue(values),
        _checks(values),
        _call(values),
        _compare(values, _worst(record, x.shape, op, case.axis)),
    ]
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def _field(record: dict, key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise ReproduceError(f"the record's {key!r} is {value!r}, not a name: it is not a result record "
                             "of this suite")
    return value


def _text(value: object) -> str | None:
    # Only strings are embedded: the repr of another JSON value (a float nan) need not be Python.
    return None if value is None else str(value)


def _check_catalogue(record: dict, case_name: str, x: np.ndarray, g: np.ndarray | None) -> None:
    """The catalogue must still make the run's input, or the snippet would reproduce something else."""
    rerun = "the catalogue changed since the run: re-run the suite to get a record of today's input"
    case = CASES[case_name]
    for key, now in (("shape", list(x.shape)), ("axis", case.axis), ("layout", case.layout)):
        # Older records may lack a field; what they have must agree.
        if key in record and record[key] != now:
            raise ReproduceError(f"case {case_name!r} now has {key} {now!r}, the run had {record[key]!r}: "
                                 f"{rerun}")
    for key, array, what in (("input_sha256", x, "input"), ("cotangent_sha256", g, "cotangent")):
        if array is not None and key in record and record[key] != bits_digest(array):
            raise ReproduceError(f"the catalogue's {what} bits for case {case_name!r} in "
                                 f"{record['dtype']} differ from the run's ({key} "
                                 f"{record[key]!r}): {rerun}")


def _number(value: object) -> float | None:
    """A float of the record: JSON writes non-finite ones as "nan", "inf", "-inf"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return None


def _float_literal(value: float) -> str:
    return repr(value) if math.isfinite(value) else f"float({str(value)!r})"


def _worst(record: dict, shape: tuple[int, ...], op: str, axis: int) -> dict | None:
    """metrics.worst when it is well formed for this output, else None (nothing is printed for it)."""
    metrics = record.get("metrics")
    worst = metrics.get("worst") if isinstance(metrics, dict) else None
    if not isinstance(worst, dict):
        return None
    out_shape = output_shape(op, shape, axis)
    index = worst.get("index")
    numbers = {key: _number(worst.get(key)) for key in ("got", "rounded", "ulp")}
    if (not isinstance(index, list) or len(index) != len(out_shape)
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n
                       for i, n in zip(index, out_shape, strict=True))
            or None in numbers.values() or not isinstance(worst.get("exact"), str)):
        return None
    return {"index": tuple(index), "exact": worst["exact"], **numbers}


def _comment(label: str, value: str) -> str:
    # repr() escapes newlines, so a record's string cannot end the comment and start code.
    return f"#   {label:<10} {value!r}"


def _message_lines(message: str) -> list[str]:
    # Cut at spaces where it can, keeping them, so that the pieces joined are the message again.
    pieces = [piece for line in message.splitlines()
              for piece in textwrap.wrap(line, _MESSAGE_PIECE, expand_tabs=False, replace_whitespace=False,
                                         drop_whitespace=False, break_on_hyphens=False) or [""]]
    lines = [f"#   {piece!r}" for piece in pieces[:_MESSAGE_PIECES]]
    if len(pieces) > _MESSAGE_PIECES:
        cut = sum(len(piece) for piece in pieces[_MESSAGE_PIECES:])
        lines.append(f"#   ... ({cut} more characters cut; the results file has the whole message)")
    return lines


def _broken_invariants(record: dict) -> list[str]:
    """Comment lines naming each invariant the result broke, with its value and budget."""
    outcomes = record.get("invariants")
    if not isinstance(outcomes, dict):
        return []
    lines = []
    for name, outcome in outcomes.items():
        if isinstance(outcome, dict) and not outcome.get("ok", True):
            value, budget = _number(outcome.get("value")), _number(outcome.get("budget"))
            lines.append(f"#   {str(name)!r}: {value!r} {str(outcome.get('units', ''))!r}, budget {budget!r}")
    if lines:
        lines = ["# Invariants it broke (suites/invariants.py compares calls like the one below, on the",
                 "# input transformed as each invariant says):", *lines]
    return lines


def _header(record: dict, values: dict, embed: bool, embed_limit: int) -> str:
    check = "invariants" if record.get("check") == "invariants" else "accuracy"
    lines = [f"# Reproduces one softmax-suite {check} result outside the suite:"]
    for label, key in (("backend", "backend"), ("device", "device"), ("op", "op"), ("dtype", "dtype"),
                       ("case", "case"), ("cotangent", "kind")):
        if values[key] is not None:
            lines.append(_comment(label, values[key]))
    if record.get("nodeid") is not None:
        lines.append(_comment("test", str(record["nodeid"])))
    message = str(record.get("message") or "")
    lines.append(f"# The run recorded status {values['status']!r}" + (" and the message:" if message else
                                                                        ", no message."))
    lines += _message_lines(message) if message else []
    lines += _broken_invariants(record)
    backend = values["backend"]
    if backend.startswith(SPEC_PREFIX):
        package = f"the array API library {backend.removeprefix(SPEC_PREFIX)!r}"
    elif ":" in backend:
        package = f"the backend's module, {backend.partition(':')[0]!r}, importable (on PYTHONPATH)"
    elif backend in BUILTIN:
        package = f"the backend's package, {backend!r}"
    else:
        package = f"the plugin package that provides backend {backend!r}"
    lines += [
        "# Needs softmax-suite installed (its adapter calls the backend exactly as the suite does)",
        f"# and {package}.",
        ("# The input bits are embedded below, so they do not depend on the suite's case generators."
         if embed else
         f"# The input is over {embed_limit} bytes, too big to embed here: it is rebuilt with "
         "the suite's catalogue."),
    ]
    if values["input_sha256"] is None:
        lines.append("# The record carries no input sha256 (written before digests were recorded): the "
                     "rebuilt bits are not checked.")
    if values["kind"] is not None and values["cotangent_sha256"] is None:
        lines.append("# The record carries no cotangent sha256: the rebuilt cotangent is not checked.")
    return "\n".join(lines)


def _imports(values: dict, embed: bool) -> str:
    lines = ["import hashlib", "import sys"]
    if embed:
        lines = ["import base64", *lines, "import zlib"]
    lines += ["", "import numpy as np"]
    if embed and values["dtype"] == "bfloat16":
        lines.append("from ml_dtypes import bfloat16")
    lines.append("")
    lines.append("from softmax_suite.backends.registry import load")
    if not embed:
        lines += ["from softmax_suite.formats import format_of",
                  "from softmax_suite.suites.cases import CASES"]
        if values["kind"] is not None:
            lines.append("from softmax_suite.suites.cotangents import build_cotangents")
    return "\n".join(lines) + "\n"


def _constants(values: dict) -> str:
    lines = [
        f"BACKEND = {values['backend']!r}",
        f"DEVICE = {values['device']!r}",
        f"OP = {values['op']!r}",
        f"AXIS = {values['axis']!r}",
        f"SHAPE = {values['shape']!r}",
        f"INPUT_SHA256 = {values['input_sha256']!r}",
    ]
    if values["kind"] is not None:
        lines.append(f"COTANGENT_SHA256 = {values['cotangent_sha256']!r}")
    lines.append(f"RECORDED_OUTPUT_SHA256 = {values['output_sha256']!r}")
    return "\n".join(lines) + "\n"


def _literal(name: str, array: np.ndarray) -> str:
    """array's C-order bits, zlib-compressed and base64-encoded, as one implicitly concatenated string."""
    encoded = base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes(), 9)).decode("ascii")
    chunks = [encoded[i:i + _B64_WIDTH] for i in range(0, len(encoded), _B64_WIDTH)]
    return "\n".join([f"{name} = (", *(f'    "{chunk}"' for chunk in chunks), ")"])


def _layout(layout: str) -> list[str]:
    # Some bugs depend on strides: the layout is rebuilt as Case.build makes it.
    if layout == "strided":
        return ["# The case's layout: every other element of a twice-as-wide buffer (some bugs depend on "
                "strides).",
                "base = np.zeros((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype)",
                "base[..., ::2] = x",
                "x = base[..., ::2]"]
    if layout == "transposed":
        return ["# The case's layout: Fortran order, the reduced last axis strided (some bugs depend on "
                "strides).",
                "x = np.ascontiguousarray(x.T).T"]
    assert layout in LAYOUTS
    return []


def _rebuild_embedded(values: dict, x: np.ndarray, g: np.ndarray | None) -> str:
    dtype = "bfloat16" if values["dtype"] == "bfloat16" else f"np.{values['dtype']}"
    lines = [_literal("X_BITS", x)]
    if g is not None:
        lines.append(_literal("G_BITS", g))
    lines += [
        "",
        "",
        "def unpack(data: str, shape: tuple) -> np.ndarray:",
        f"    return np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype={dtype}).reshape(shape)",
        "",
        "",
        "x = unpack(X_BITS, SHAPE)",
        *_layout(values["layout"]),
    ]
    if g is not None:
        lines.append(f"g = unpack(G_BITS, {tuple(g.shape)!r})")
    return "\n".join(lines) + "\n"


def _rebuild_from_catalogue(values: dict) -> str:
    lines = [
        f"CASE = {values['case']!r}",
        f"DTYPE = {values['dtype']!r}",
        "# Case.build makes the case's memory layout too (some bugs depend on strides).",
        "x = CASES[CASE].build(DTYPE)",
    ]
    if values["kind"] is not None:
        op = op_named(values["op"])
        which = 1 if op.cotangent == PER_ROW else 0
        why = f"The per-row cotangent of {op.forward}'s output" if which else "The full cotangent"
        lines += [
            f"# {why}, as the suite builds it.",
            f"g = build_cotangents({values['kind']!r}, CASES[CASE].resolved_seed, x.shape, AXIS, "
            f"format_of(DTYPE))[{which}]",
        ]
    return "\n".join(lines) + "\n"


def _checks(values: dict) -> str:
    lines = [
        "",
        "def sha256(array: np.ndarray) -> str:",
        "    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()",
        "",
        "",
    ]
    arrays = [("x", "INPUT_SHA256", "input")]
    if values["kind"] is not None:
        arrays.append(("g", "COTANGENT_SHA256", "cotangent"))
    for array, digest, what in arrays:
        lines += [
            f"if {digest} is not None and sha256({array}) != {digest}:",
            f'    sys.exit(f"the rebuilt {what} is not the run\'s: sha256 {{sha256({array})}}, '
            f'recorded {{{digest}}}")',
        ]
    # The suite hands out read-only inputs: a backend that writes to its input fails the same way here.
    lines += [f"{array}.flags.writeable = False" for array, _, _ in arrays]
    return "\n".join(lines) + "\n"


def _call(values: dict) -> str:
    inputs = "x, g" if values["kind"] is not None else "x,"
    return "\n".join([
        "backend = load(BACKEND)",
        'if not hasattr(backend, "ops"):',
        '    sys.exit(f"backend {BACKEND!r} is unavailable here: {backend.reason}")',
        "if OP not in backend.ops:",
        '    sys.exit(f"backend {BACKEND!r} has no {OP}")',
        "# As the suite calls it: each input to the device, the op, synchronize, back to numpy.",
        "with np.errstate(all=\"ignore\"):",
        f"    out = backend.ops[OP](*(backend.to_device(a, DEVICE) for a in ({inputs})), AXIS)",
        "    backend.synchronize(DEVICE, out)",
        "    got = np.asarray(backend.to_numpy(out))",
    ]) + "\n"


def _compare(values: dict, worst: dict | None) -> str:
    lines = [
        "# NaN's sign and payload carry no meaning: every NaN is hashed as one canonical NaN.",
        "canonical = np.where(np.isnan(got.astype(np.float64)), np.array(np.nan, got.dtype), got)",
        "digest = sha256(canonical.astype(got.dtype))",
        f"print(f\"output: shape {{got.shape}}, dtype {{got.dtype.name}} (the suite expects "
        f"{values['expected_shape']!r} and {{x.dtype.name}})\")",
        'print("output sha256:  ", digest)',
        "if RECORDED_OUTPUT_SHA256 is None:",
        f"    print(\"the run recorded no output; its status:\", {values['status']!r})",
        "else:",
        '    print("recorded sha256:", RECORDED_OUTPUT_SHA256)',
        '    print("the same bits as the run" if digest == RECORDED_OUTPUT_SHA256 else '
        '"differs from the run\'s output")',
    ]
    if worst is not None:
        lines += [
            f"WORST = {worst['index']!r}",
            f"if got.shape == {values['expected_shape']!r}:",
            '    print("the worst element of the run, at index", list(WORST))',
            '    print("  got now:          ", repr(float(got[WORST])))',
            f'    print("  got in the run:   ", {_float_literal(worst["got"])})',
            f'    print("  exact:            ", {worst["exact"]!r})',
            f'    print("  correctly rounded:", {_float_literal(worst["rounded"])})',
            f'    print("  ULP error in run: ", {_float_literal(worst["ulp"])})',
        ]
    return "\n".join(lines) + "\n"
