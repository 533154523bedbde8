"""A copy-paste Python script that rebuilds one accuracy result's exact input bits and calls its backend,
so that a failure can be reproduced outside the suite (the HTML report shows one per failure).

A loss op's script rebuilds the call's keyword arguments too: the targets, the reduction and the
loss's options (ignore_index, label_smoothing, class weights), each array digest-checked."""

from __future__ import annotations

import base64
import math
import textwrap
import zlib

import numpy as np

from softmax_suite.backends.array_api_backend import SPEC_PREFIX
from softmax_suite.backends.registry import BUILTIN
from softmax_suite.formats import DTYPES, FLOAT8_DTYPES
from softmax_suite.ops import OPS, PER_ROW, VJP_OPS, op_named, output_shape, shaped
from softmax_suite.oracle.budget import BudgetConstants
from softmax_suite.reports.results import loss_words
from softmax_suite.suites import losses
from softmax_suite.suites.accuracy import bits_digest, case_cotangent, case_input, case_options, why_not_case
from softmax_suite.suites.cases import CASES, LAYOUTS
from softmax_suite.suites.cotangents import COTANGENTS
from softmax_suite.suites.invariants import OP_INVARIANTS

# Above this many raw bytes of input (x and the cotangent) the snippet rebuilds them with the suite's
# catalogue instead of embedding them: a report carries one snippet per failure.
EMBED_LIMIT_BYTES: int = 64 * 1024

# Base64 characters per line of an embedded literal: with its indent and quotes a line stays within 100.
_B64_WIDTH = 92
# A message can be a backend's whole error text: the snippet keeps its start, the results file has it all.
_MESSAGE_PIECE = 80
_MESSAGE_PIECES = 12
# The run's message as printed by the script, in characters.
_RUN_LINE = 150
# A loss call's keyword arguments in the order case_options gives them; the arrays among them
# travel like x: embedded or rebuilt, and digest-checked.
_LOSS_ARGUMENTS = ("target", "reduction", "ignore_index", "label_smoothing", "weight")
_LOSS_ARRAYS = {"target": "targets", "weight": "class weights"}
# The dtypes a script takes from ml_dtypes (numpy has none of these types).
ML_DTYPES = ("bfloat16", *FLOAT8_DTYPES)


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
    op, name, device, dtype, case_name = (_field(record, key) for key in
                                          ("op", "backend", "device", "dtype", "case"))
    # The --backend spec the run was given, where the backend shows under another name.
    backend = _field(record, "backend_spec") if record.get("backend_spec") else name
    if op not in OPS:
        raise ReproduceError(f"unknown op {op!r}: the ops are {', '.join(OPS)}")
    if check == "invariants" and op not in OP_INVARIANTS:
        raise ReproduceError(f"{op} has no invariants: the invariants are measured for "
                             f"{', '.join(OP_INVARIANTS)}")
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
    mismatch = why_not_case(op, case)
    if mismatch:
        raise ReproduceError(f"{mismatch}: the record pairs {op} with case {case_name!r}")

    x = case_input(case_name, dtype)
    # The cotangent the op takes (a reduced loss's: one value), as the suite hands it over.
    g = case_cotangent(op, case_name, kind, dtype) if kind is not None else None
    options = case_options(case_name, dtype)
    _check_catalogue(record, case_name, x, g, options)
    mask = options.get("mask")
    loss = {name: options[name] for name in _LOSS_ARGUMENTS if name in options}
    reduction = loss.get("reduction", "none")

    arrays = [x, g, mask, *(loss.get(name) for name in _LOSS_ARRAYS)]
    embed = sum(array.nbytes for array in arrays if array is not None) <= embed_limit
    worst = _worst(record, x.shape, op, case.axis, reduction)
    values = {
        "check": check, "backend": backend, "name": name, "device": device, "op": op, "dtype": dtype,
        "case": case_name, "kind": kind, "axis": case.axis, "layout": case.layout, "shape": tuple(x.shape),
        "expected_shape": output_shape(op, x.shape, case.axis, reduction), "seed": case.resolved_seed,
        "input_sha256": _text(record.get("input_sha256")),
        "cotangent_sha256": _text(record.get("cotangent_sha256")) if g is not None else None,
        "output_sha256": _text(record.get("output_sha256")), "status": str(status),
        "the_run": _the_run(record, worst),
        "worst": worst["index"] if worst else _broken_at(record, x.shape, case.axis),
        "flush": record.get("flushes") is True, "known": _known(record),
        "scale": options.get("scale"), "masked": mask is not None,
        # The convention the run judged a fully masked row by (the backend's declaration).
        "fully_masked": str(record.get("fully_masked") or "nan"),
        "per_row_cotangent": kind is not None and op_named(op).cotangent == PER_ROW,
        # A loss call's keyword arguments (none for another op), and its arrays' digests.
        "loss": loss,
        "loss_sha256": {name: bits_digest(loss[name]) for name in _LOSS_ARRAYS if name in loss},
        "loss_words": loss_words(losses.summary(loss)) if loss else None,
        **_budget(record),
    }
    parts = [
        _header(record, values, embed, embed_limit),
        _imports(values, embed),
        _constants(values),
        _rebuild_embedded(values, x, g, mask, loss) if embed else _rebuild_from_catalogue(values),
        _checks(values),
        _load(values),
        _run_accuracy(values) if check == "accuracy" else _run_invariants(values),
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


def _check_catalogue(record: dict, case_name: str, x: np.ndarray, g: np.ndarray | None,
                     options: dict) -> None:
    """The catalogue must still make the run's input, or the snippet would reproduce something else
    (of a loss case's targets and options the record keeps their summary: that must agree)."""
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
    if "target" in options and "loss" in record and record["loss"] != losses.summary(options):
        raise ReproduceError(f"case {case_name!r}'s loss is now {losses.summary(options)!r}, the run's was "
                             f"{record['loss']!r}: {rerun}")


def _number(value: object) -> float | None:
    """A float of the record: JSON writes non-finite ones as "nan", "inf", "-inf"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return None


def _the_run(record: dict, worst: dict | None) -> str:
    """What the run found, in one line."""
    status = str(record.get("status"))
    if worst is not None:
        return (f"{status}, worst {worst['ulp']:.4g} ULP at index {list(worst['index'])} "
                f"(got {worst['got']!r}, exact {worst['exact']})")
    message = " ".join(str(record.get("message") or "").split())
    if not message:
        return status
    return f"{status}: {message if len(message) <= _RUN_LINE else message[:_RUN_LINE] + ' ...'}"


def _known(record: dict) -> str | None:
    """Why a known failure is known (its known-deviations entry's reason); None for any other result."""
    if record.get("status") != "known_failure":
        return None
    known = record.get("known_deviation")
    return str((known.get("reason") if isinstance(known, dict) else None) or "no reason recorded")


def _budget(record: dict) -> dict:
    """The budget constants the run judged by (the record's bound), as code: the verdict is then the run's."""
    bound = record.get("bound")
    constants = bound.get("constants") if isinstance(bound, dict) else None
    names = list(BudgetConstants().as_dict())
    numbers = {name: _number(constants.get(name)) for name in names} if isinstance(constants, dict) else {}
    if numbers and set(constants) == set(names) and all(
            value is not None and math.isfinite(value) for value in numbers.values()):
        return {"budget": f"BudgetConstants({', '.join(f'{k}={v!r}' for k, v in numbers.items())})",
                "why_policy": "The run's budget constants and flush-to-zero allowance: its verdict's."}
    return {"budget": "BudgetConstants()",
            "why_policy": "The record carries no budget constants: the suite's defaults (a pyproject.toml "
                          "may set others)."}


def _worst(record: dict, shape: tuple[int, ...], op: str, axis: int, reduction: str = "none") -> dict | None:
    """metrics.worst when it is well formed for this output (a reduced loss's: index []), else None
    (nothing is printed for it)."""
    metrics = record.get("metrics")
    worst = metrics.get("worst") if isinstance(metrics, dict) else None
    if not isinstance(worst, dict):
        return None
    index = worst.get("index")
    numbers = {key: _number(worst.get(key)) for key in ("got", "rounded", "ulp")}
    if (not _index_in(index, output_shape(op, shape, axis, reduction)) or None in numbers.values()
            or not isinstance(worst.get("exact"), str)):
        return None
    return {"index": tuple(index), "exact": worst["exact"], **numbers}


def _index_in(index: object, shape: tuple[int, ...]) -> bool:
    return (isinstance(index, list) and len(index) == len(shape)
            and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n
                    for i, n in zip(index, shape, strict=True)))


def _broken_at(record: dict, shape: tuple[int, ...], axis: int) -> tuple[int, ...] | None:
    """Where the first broken invariant of the record broke (an element of x, or a row), if well formed."""
    outcomes = record.get("invariants")
    for outcome in outcomes.values() if isinstance(outcomes, dict) else ():
        index = outcome.get("index") if isinstance(outcome, dict) and outcome.get("ok") is False else None
        if _index_in(index, shape) or _index_in(index, shaped(PER_ROW, shape, axis)):
            return tuple(index)
    return None


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
    lines = [f"# Reproduces one softmax-suite {values['check']} result outside the suite:"]
    for label, key in (("backend", "backend"), ("device", "device"), ("op", "op"), ("dtype", "dtype"),
                       ("case", "case"), ("cotangent", "kind")):
        if values[key] is not None:
            lines.append(_comment(label, values[key]))
    if values["loss_words"] is not None:
        lines.append(_comment("loss", values["loss_words"]))
    if values["name"] != values["backend"]:
        lines.append(_comment("shown as", values["name"]))
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
        "# Needs softmax-suite installed (its adapter calls the backend exactly as the suite does, its",
        "# oracle gives the exact values and its judge the verdict), and",
        f"# {package}.",
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
    lines += [
        "# Run it (python repro.py): it prints the input, what the backend returns beside the exact values,",
        "# and the suite's verdict. Exit status 1: the backend still fails (a known deviation too), 0: it",
        "# passes now, 2: this script cannot run here (the backend or its device missing, other input bits).",
    ]
    return "\n".join(lines)


def _imports(values: dict, embed: bool) -> str:
    lines = ["import base64", "import sys", "import zlib"] if embed else ["import sys"]
    lines += [
        "",
        "",
        "def cannot_run(why: str) -> None:",
        '    print(f"cannot reproduce here: {why}", file=sys.stderr)',
        "    sys.exit(2)",
        "",
        "",
        "try:",
    ]
    imports = []
    if embed or values["masked"]:
        imports.append("import numpy as np")
        if values["dtype"] in ML_DTYPES:  # numpy has no such type: ml_dtypes' (bits unchanged)
            imports.append(f"from ml_dtypes import {values['dtype']}")
        imports.append("")
    accuracy = ["BackendFailure", "bits_digest"]
    if values["check"] == "accuracy":
        accuracy += ["call_backend", "output_digest"]
    else:
        accuracy.append("Target")
    imports += ["from softmax_suite.backends.registry import load"]
    if not embed:
        imports.append("from softmax_suite.formats import format_of")
    if not embed and values["kind"] is not None and values["loss"]:
        imports.append("from softmax_suite.ops import cotangent_of")
    imports += ["from softmax_suite.oracle.budget import BudgetConstants",
                "from softmax_suite.runner import explain",
                f"from softmax_suite.suites.accuracy import {', '.join(sorted(accuracy))}"]
    if not embed:
        imports.append("from softmax_suite.suites.cases import CASES")
        if values["kind"] is not None:
            imports.append("from softmax_suite.suites.cotangents import build_cotangents")
    if values["masked"]:
        imports.append("from softmax_suite.suites.masking import under_convention")
    if values["check"] == "accuracy":
        imports.append("from softmax_suite.suites.judging import judge")
    imports.append("from softmax_suite.suites.policy import Policy")
    lines += [f"    {line}" if line else "" for line in imports]
    lines += [
        "except ImportError as error:",
        '    cannot_run(f"{error}; this script needs softmax-suite installed")',
    ]
    return "\n".join(lines) + "\n"


def _constants(values: dict) -> str:
    lines = [f"{name} = {values[key]!r}" for name, key in (
        ("BACKEND", "backend"), ("DEVICE", "device"), ("OP", "op"), ("DTYPE", "dtype"), ("CASE", "case"),
        ("COTANGENT", "kind"), ("AXIS", "axis"), ("SHAPE", "shape")) if name != "COTANGENT" or values["kind"]]
    accuracy = values["check"] == "accuracy"
    if accuracy:
        lines.append(f"OUTPUT_SHAPE = {values['expected_shape']!r}")
    if values["scale"] is not None:
        lines.append(f"SCALE = {values['scale']!r}  # the op is of SCALE * x (attention's form)")
    if values["masked"]:
        lines.append(f"FULLY_MASKED = {values['fully_masked']!r}  # the backend's declared convention")
    loss = values["loss"]
    if loss:
        lines.append("# The loss's keyword arguments beside its targets (softmax_suite.protocol).")
        lines += [f"{name.upper()} = {loss[name]!r}" for name in loss if name not in _LOSS_ARRAYS]
    lines.append(f"INPUT_SHA256 = {values['input_sha256']!r}")
    if values["kind"] is not None:
        lines.append(f"COTANGENT_SHA256 = {values['cotangent_sha256']!r}")
    for name, digest in values["loss_sha256"].items():
        # The record keeps no digest of these: the catalogue's, checked against the record's summary.
        lines.append(f"{name.upper()}_SHA256 = {digest!r}")
    if accuracy:
        lines += [
            f"RECORDED_OUTPUT_SHA256 = {values['output_sha256']!r}",
            "# What the run found, and its worst element (None: none measured), whose row is shown.",
            f"THE_RUN = {values['the_run']!r}",
            f"WORST = {values['worst']!r}",
        ]
    else:
        lines += [
            f"SEED = {values['seed']!r}  # the case's: the permutation invariant draws from it",
            "# Where the first broken invariant broke (None: none recorded): its row is shown.",
            f"WORST = {values['worst']!r}",
        ]
    lines.append(f"# {values['why_policy']}")
    lines.append(f"POLICY = Policy(budget={values['budget']})")
    if accuracy:
        lines.append(f"FLUSH = {values['flush']!r}")
    if values["known"] is not None:
        lines.append(f"KNOWN_DEVIATION = {values['known']!r}")
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


def _rebuild_embedded(values: dict, x: np.ndarray, g: np.ndarray | None, mask: np.ndarray | None,
                      loss: dict) -> str:
    dtype = values["dtype"] if values["dtype"] in ML_DTYPES else f"np.{values['dtype']}"
    lines = [_literal("X_BITS", x)]
    if g is not None:
        lines.append(_literal("G_BITS", g))
    if mask is not None:
        lines.append(_literal("MASK_BITS", mask))
    for name in _LOSS_ARRAYS:
        if name in loss:
            lines.append(_literal(f"{name.upper()}_BITS", loss[name]))
    lines += [
        "",
        "",
        f"def unpack(data: str, shape: tuple, dtype: type = {dtype}) -> np.ndarray:",
        "    return np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype=dtype).reshape(shape)",
        "",
        "",
        "x = unpack(X_BITS, SHAPE)",
        *_layout(values["layout"]),
    ]
    if g is not None:
        lines.append(f"g = unpack(G_BITS, {tuple(g.shape)!r})")
    if mask is not None:
        lines.append("MASK = unpack(MASK_BITS, SHAPE, np.bool_)  # True = keep")
    if "target" in loss:
        lines.append(f"TARGET = unpack(TARGET_BITS, {tuple(loss['target'].shape)!r}, "
                     f"np.{loss['target'].dtype.name})  # the class index of each row")
    if "weight" in loss:
        lines.append(f"WEIGHT = unpack(WEIGHT_BITS, {tuple(loss['weight'].shape)!r})  # a weight per class")
    lines.append(_options_line(values))
    return "\n".join(lines) + "\n"


def _options_line(values: dict) -> str:
    """OPTIONS: the keyword arguments the op is called with (attention's scale and mask, a loss's
    targets, reduction and options; none), each a constant of the script named after it."""
    given = [name for name, present in (("scale", values["scale"] is not None), ("mask", values["masked"]))
             if present] + list(values["loss"])
    entries = ", ".join(f'"{name}": {name.upper()}' for name in given)
    return f"OPTIONS = {{{entries}}}"


def _rebuild_from_catalogue(values: dict) -> str:
    lines = [
        "# Case.build makes the case's memory layout too (some bugs depend on strides).",
        "x = CASES[CASE].build(DTYPE)",
    ]
    if values["kind"] is not None and values["loss"]:
        lines += [
            "# The loss's cotangent, as the suite builds it: one per row, or a reduced loss's one value.",
            "g = cotangent_of(OP, *build_cotangents(COTANGENT, CASES[CASE].resolved_seed, x.shape, AXIS, "
            "format_of(DTYPE)), REDUCTION)",
        ]
    elif values["kind"] is not None:
        op = op_named(values["op"])
        which = 1 if op.cotangent == PER_ROW else 0
        why = f"The per-row cotangent of {op.forward}'s output" if which else "The full cotangent"
        lines += [
            f"# {why}, as the suite builds it.",
            f"g = build_cotangents(COTANGENT, CASES[CASE].resolved_seed, x.shape, AXIS, "
            f"format_of(DTYPE))[{which}]",
        ]
    if values["masked"]:
        lines.append("MASK = CASES[CASE].build_mask(x.shape)  # True = keep")
        if values["kind"] is not None and not values["per_row_cotangent"]:
            lines.append("g = np.where(MASK, g, g.dtype.type(0))  # 0 at masked outputs, as the suite has it")
    loss = values["loss"]
    if loss:
        lines += ["# The targets (and class weights) as the suite builds them, seeded by the case.",
                  "LOSS_ARGUMENTS = CASES[CASE].loss_arguments(DTYPE)"]
        lines += [f'{name.upper()} = LOSS_ARGUMENTS["{name}"]' for name in _LOSS_ARRAYS if name in loss]
    lines.append(_options_line(values))
    return "\n".join(lines) + "\n"


def _checks(values: dict) -> str:
    checked = ['(x, INPUT_SHA256, "input")']
    if values["kind"] is not None:
        checked.append('(g, COTANGENT_SHA256, "cotangent")')
    checked += [f'({name.upper()}, {name.upper()}_SHA256, "{_LOSS_ARRAYS[name]}")'
                for name in values["loss_sha256"]]
    arrays = ", ".join(checked) + ("," if len(checked) == 1 else "")
    return "\n".join([
        f"for array, digest, what in ({arrays}):",
        "    if digest is not None and bits_digest(array) != digest:",
        '        cannot_run(f"the rebuilt {what} is not the run\'s: sha256 {bits_digest(array)}, "',
        "                   f\"recorded {digest}\")",
        "    # The suite hands out read-only inputs: a backend that writes to its input fails here too.",
        "    array.flags.writeable = False",
    ]) + "\n"


def _load(values: dict) -> str:
    what = "{OP} of {BACKEND!r} on {DEVICE}, {DTYPE}, case {CASE!r}"
    if values["kind"] is not None:
        what += ", cotangent {COTANGENT!r}"
    g = "g" if values["kind"] is not None else "None"
    lines = [f'print(f"reproducing {what}")']
    if values["check"] == "accuracy":
        lines.append('print("the run:", THE_RUN)')
    lines += [
        f"explain.show_input(x, {g}, AXIS, WORST{', OPTIONS' if values['loss'] else ''})",
        "",
        "try:",
        "    backend = load(BACKEND)",
        "except Exception as error:  # a module:attr spec raises when it cannot be imported here",
        '    cannot_run(f"backend {BACKEND!r} cannot be loaded: {type(error).__name__}: {error}")',
        "problem = explain.unusable(backend, OP, DTYPE, DEVICE)",
        "if problem:",
        "    cannot_run(problem)",
    ]
    return "\n".join(lines) + "\n"


def _still_fails(values: dict, why: str) -> list[str]:
    lines = [f'print("still fails:", {why})']
    if values["known"] is not None:
        lines.append('print("a known deviation, still there:", KNOWN_DEVIATION)')
    return [*lines, "sys.exit(1)"]


def _passes(values: dict, why: str) -> list[str]:
    lines = [f'    print("passes now:", {why})']
    if values["known"] is not None:
        lines.append('    print("the known deviation no longer reproduces (its entry can go):", '
                     'KNOWN_DEVIATION)')
    return [*lines, "    sys.exit(0)"]


def _run_accuracy(values: dict) -> str:
    inputs = "[x, g]" if values["kind"] is not None else "[x]"
    g = "g" if values["kind"] is not None else "None"
    return "\n".join([
        "try:",
        "    # As the suite calls it: each input to the device, the op, synchronize, back to numpy; then the",
        "    # suite's checks of the output's shape and dtype.",
        f"    got = call_backend(backend, OP, DEVICE, AXIS, {inputs}, OUTPUT_SHAPE, options=OPTIONS)",
        "except BackendFailure as failure:",
        '    print(failure.trace.rstrip() or "(no traceback)")',
        *("    " + line for line in _still_fails(values, "failure")),
        "digest = output_digest(got)",
        "if digest == RECORDED_OUTPUT_SHA256:",
        '    print(f"output: the same bits as the run (sha256 {digest})")',
        "else:",
        '    print(f"output: sha256 {digest}, the run\'s {RECORDED_OUTPUT_SHA256}")',
        "",
        "# The exact values from the suite's oracle; the verdict of the suite's judge, by the run's budget.",
        f"reference = explain.exact(OP, x, AXIS, {g}, **OPTIONS)",
        *(["reference = under_convention(reference, MASK, AXIS, FULLY_MASKED)"] if values["masked"] else []),
        "verdict = judge(reference, got, POLICY, AXIS, FLUSH)",
        f"explain.show_output(OP, x, {g}, got, reference, verdict, POLICY, FLUSH, AXIS, WORST"
        f"{', OPTIONS' if values['loss'] else ''})",
        'if verdict["status"] == "pass":',
        *_passes(values, 'verdict["message"] or "every element within its error budget"'),
        *_still_fails(values, 'verdict["message"]'),
    ]) + "\n"


def _run_invariants(values: dict) -> str:
    return "\n".join([
        "target = Target(OP, BACKEND, DEVICE, DTYPE, CASE, check=\"invariants\")",
        "try:",
        "    # As the suite measures them: the op called on x (three times), on x shifted, permuted, ...",
        "    invariants = explain.measure_invariants(target, backend, POLICY, x, AXIS, SEED)",
        "except BackendFailure as failure:",
        '    print(failure.trace.rstrip() or "(no traceback)")',
        *("    " + line for line in _still_fails(values, "failure")),
        "broken = explain.show_invariants(invariants)",
        "if not broken:",
        *_passes(values, '"every invariant holds"'),
        *_still_fails(values, '"; ".join(broken)'),
    ]) + "\n"
