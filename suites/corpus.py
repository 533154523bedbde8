"""The corpus of found cases: a JSON file of the inputs that hunts (suites.hunt.search) found, read by the
catalogue (softmax_suite.suites.cases) and merged into by every hunt, written atomically.

The file, version 1:

    {"format": "softmax-suite corpus", "version": 1, "cases": [ENTRY, ...]}

Each entry: name (found_<op>_<dtype>_<first 8 hex of the input's sha256>), op, dtype, cotangent
(the kind a VJP hunt used, else null), backend and backend_version (what found it), date (ISO),
seed (the hunt's; the catalogue builds the case's cotangents from it), max_ulp, ratio (error over
budget at the worst element), failure (null, accuracy, semantic or error), message, shape, axis
(-1), bits (the input's bit patterns, one hexadecimal word per element in C order, separated by
spaces; the words are authoritative) and description.

An entry found with attention's options (docs/attention.md) has two more keys, each only when it has
that option: scale (the number the op multiplies by, already in the entry's dtype, one the exact
oracle takes for it: oracle.scaled.check_scale) and mask (one character per element in C order, 1 =
keep, 0 = masked; bits holds what lay under the mask). Their name's digest covers them too. A file
without them (an older one) reads as ever.

An entry of a loss op (cross_entropy, cross_entropy_vjp: softmax_suite.ops) holds logits of shape
[N, C] and the rest of its question: target (N integers, each a class index or the ignore_index)
and reduction ("none", "mean" or "sum") always, and each only when the hunt passed it:
ignore_index (an integer), label_smoothing (a number in [0, 1]) and weight (the C class weights'
bit patterns in the entry's dtype, as bits; finite and >= 0). Their name's digest covers them, and
the catalogue asks the entry of the loss ops only, with exactly these arguments. An entry of
another op has none of these keys.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.formats import format_of
from softmax_suite.ops import REDUCTIONS, is_vjp, op_named
from softmax_suite.oracle.rounding import round_values
from softmax_suite.oracle.scaled import check_scale
from softmax_suite.protocol import DTYPES, OPS
from softmax_suite.suites.cotangents import COTANGENTS

FORMAT = "softmax-suite corpus"
VERSION = 1
ENVIRONMENT_VARIABLE = "SOFTMAX_SUITE_CORPUS"
DEFAULT_FILE = "softmax-suite-corpus.json"
FAILURES = (None, "accuracy", "semantic", "error")
NAME = re.compile(r"found_(?P<op>[a-z_]+)_(?P<dtype>[a-z0-9]+)_(?P<digest>[0-9a-f]{8})")


class CorpusError(pytest.UsageError):
    """A corpus file that cannot be used; the message names the file, the entry and the fix.

    A pytest.UsageError because the catalogue is first read while pytest configures the suite
    (runner.plugin): pytest then prints the message and exits with its usage status (softmax-suite
    run: 2) instead of an internal error with a traceback."""


@dataclass(frozen=True)
class Entry:
    """One found case. x is read-only, in its dtype, in the shape it was saved with; scale (in the dtype)
    and mask (bool of x's shape, True = keep, read-only) where the hunt found it with them."""

    op: str
    dtype: str
    cotangent: str | None
    backend: str
    backend_version: str
    date: str
    seed: int
    max_ulp: float | None
    ratio: float | None
    failure: str | None
    message: str
    x: np.ndarray
    description: str
    axis: int = -1
    scale: float | None = None
    mask: np.ndarray | None = None
    # A loss op's question beyond its logits (None where not passed); target read-only int64, weight
    # read-only in the dtype.
    target: np.ndarray | None = None
    reduction: str | None = None
    ignore_index: int | None = None
    label_smoothing: float | None = None
    weight: np.ndarray | None = None

    @property
    def digest(self) -> str:
        return question_digest(self.x, self.scale, self.mask, self.loss_json() or None)

    @property
    def name(self) -> str:
        return f"found_{self.op}_{self.dtype}_{self.digest[:8]}"

    def as_json(self) -> dict:
        return {"name": self.name, "op": self.op, "dtype": self.dtype, "cotangent": self.cotangent,
                "backend": self.backend, "backend_version": self.backend_version, "date": self.date,
                "seed": self.seed, "max_ulp": self.max_ulp, "ratio": self.ratio, "failure": self.failure,
                "message": self.message, "shape": list(self.x.shape), "axis": self.axis,
                "bits": encode_bits(self.x), **self.options_json(), "description": self.description}

    def options_json(self) -> dict:
        """The scale and mask keys, for the options it has, and a loss's keys (loss_json)."""
        given = {}
        if self.scale is not None:
            given["scale"] = self.scale
        if self.mask is not None:
            given["mask"] = encode_mask(self.mask)
        return {**given, **self.loss_json()}

    def loss_json(self) -> dict:
        """A loss's keys: target and reduction, and the options it passes; {} for another op's entry."""
        return loss_json(self.target, self.reduction, self.ignore_index, self.label_smoothing, self.weight)


def loss_json(target: np.ndarray | None = None, reduction: str | None = None, ignore_index: int | None = None,
              label_smoothing: float | None = None, weight: np.ndarray | None = None) -> dict:
    """A loss's question beyond its logits as the corpus writes it: target (a list of integers) and
    reduction, and ignore_index, label_smoothing and weight (bits) where passed; {} for no loss."""
    if target is None:
        return {}
    given: dict = {"target": [int(t) for t in np.asarray(target).reshape(-1).tolist()],
                   "reduction": reduction}
    if ignore_index is not None:
        given["ignore_index"] = int(ignore_index)
    if label_smoothing is not None:
        given["label_smoothing"] = float(label_smoothing)
    if weight is not None:
        given["weight"] = encode_bits(np.asarray(weight))
    return given


def input_digest(x: np.ndarray) -> str:
    """sha256 of the dtype, the shape and the bits in C order: equal digests, the same input."""
    header = f"{np.dtype(x.dtype).name}:{list(x.shape)}:".encode()
    return hashlib.sha256(header + np.ascontiguousarray(x).tobytes()).hexdigest()


def question_digest(x: np.ndarray, scale: float | None = None, mask: np.ndarray | None = None,
                    loss: dict | None = None) -> str:
    """input_digest of x, with the scale and the mask where given, and a loss's keys (loss_json)
    (equal digests, the same question): for an input alone, its input_digest."""
    if scale is None and mask is None and not loss:
        return input_digest(x)
    options = f"scale={scale!r}:mask={'-' if mask is None else encode_mask(mask)}".encode()
    if loss:
        options += b":loss=" + json.dumps(loss, sort_keys=True).encode()
    return hashlib.sha256(input_digest(x).encode() + b":" + options).hexdigest()


def encode_mask(mask: np.ndarray) -> str:
    """The mask's elements in C order, 1 = keep, 0 = masked."""
    return "".join("1" if keep else "0" for keep in np.asarray(mask, dtype=bool).reshape(-1).tolist())


def decode_mask(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """The mask encode_mask wrote, read-only (ValueError naming what does not fit)."""
    if len(text) != math.prod(shape) or set(text) - {"0", "1"}:
        raise ValueError(f"'mask' must be {math.prod(shape)} characters 0 or 1 (1 = keep), one per "
                         f"element of shape {list(shape)}")
    mask = np.frombuffer(text.encode("ascii"), dtype=np.uint8).reshape(shape) == ord("1")
    mask.flags.writeable = False
    return mask


def _unsigned(dtype: np.dtype) -> np.dtype:
    """The unsigned integer of dtype's width, in the machine's byte order (as the values are)."""
    return np.dtype(f"u{dtype.itemsize}")


def encode_bits(x: np.ndarray) -> str:
    """The bit patterns of x's elements in C order, as fixed-width hexadecimal words."""
    width = 2 * x.dtype.itemsize
    words = np.ascontiguousarray(x).reshape(-1).view(_unsigned(x.dtype))
    return " ".join(f"{int(word):0{width}x}" for word in words)


def decode_bits(text: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The array encode_bits wrote (ValueError naming what does not fit)."""
    np_dtype = format_of(dtype).np_dtype
    width = 2 * np_dtype.itemsize
    words = text.split()
    if len(words) != math.prod(shape):
        raise ValueError(f"'bits' holds {len(words)} words for shape {list(shape)} "
                         f"({math.prod(shape)} elements)")
    for position, word in enumerate(words):
        if len(word) != width or not all(c in "0123456789abcdef" for c in word):
            raise ValueError(f"'bits' word {position + 1} is {word[:20]!r}, not {width} lowercase "
                             f"hexadecimal digits (a {dtype} bit pattern)")
    values = np.array([int(word, 16) for word in words], dtype=_unsigned(np_dtype))
    x = values.view(np_dtype).reshape(shape)
    x.flags.writeable = False
    return x


def location() -> Path | None:
    """The corpus the catalogue reads: $SOFTMAX_SUITE_CORPUS (a path, or off), else
    ./softmax-suite-corpus.json where it exists; None for no corpus."""
    named = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if named == "off":
        return None
    if named:
        return Path(named)
    default = Path(DEFAULT_FILE)
    return default if default.exists() else None


def hunt_location(given: str | None) -> Path:
    """Where a hunt saves: --corpus, else $SOFTMAX_SUITE_CORPUS when it names a file, else
    ./softmax-suite-corpus.json (where the next `softmax-suite run` in this folder reads it)."""
    named = os.environ.get(ENVIRONMENT_VARIABLE, "")
    return Path(given or (named if named not in ("", "off") else DEFAULT_FILE))


def _fix(path: Path) -> str:
    return (f"fix or delete {path}, or set {ENVIRONMENT_VARIABLE}=off to run without a corpus "
            "(a hunt writes a new one)")


def read(path: Path) -> list[Entry]:
    """The entries of the corpus at path; CorpusError for a missing, unreadable or malformed file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorpusError(f"corpus {path}: no such file (named by {ENVIRONMENT_VARIABLE}); "
                          f"run a hunt with --corpus {path} to make it, or set "
                          f"{ENVIRONMENT_VARIABLE}=off") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(f"corpus {path}: cannot read it ({error}); {_fix(path)}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        ending = " (the file ends early: truncated?)" if error.pos >= len(text.rstrip()) else ""
        raise CorpusError(f"corpus {path} line {error.lineno} column {error.colno}: not valid JSON, "
                          f"{error.msg}{ending}; {_fix(path)}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CorpusError(f"corpus {path}: not a softmax-suite corpus (no \"format\": \"{FORMAT}\" at "
                          f"the top); {_fix(path)}")
    if data.get("version") != VERSION:
        raise CorpusError(f"corpus {path}: version {data.get('version')!r}, this softmax-suite reads "
                          f"version {VERSION}; use the softmax-suite that wrote it, or hunt again into "
                          f"a new file, or set {ENVIRONMENT_VARIABLE}=off")
    if not isinstance(data.get("cases"), list):
        raise CorpusError(f"corpus {path}: \"cases\" must be a list of entries; {_fix(path)}")
    entries: list[Entry] = []
    names: dict[str, int] = {}
    for number, item in enumerate(data["cases"], start=1):
        label = item.get("name") if isinstance(item, dict) else None
        where = f"corpus {path} entry {number}" + (f" ({label})" if isinstance(label, str) else "")
        try:
            entry = _entry(item)
        except (ValueError, TypeError) as error:
            raise CorpusError(f"{where}: {error}; {_fix(path)}") from None
        if entry.name in names:
            raise CorpusError(f"{where}: the same input as entry {names[entry.name]}; {_fix(path)}")
        names[entry.name] = number
        entries.append(entry)
    return entries


KEYS = ("name", "op", "dtype", "cotangent", "backend", "backend_version", "date", "seed", "max_ulp",
        "ratio", "failure", "message", "shape", "axis", "bits", "description")
# Keys an entry has only with those options (older files have none); a loss op's entry has the first two
# of LOSS_KEYS always.
LOSS_KEYS = ("target", "reduction", "ignore_index", "label_smoothing", "weight")
OPTIONAL_KEYS = ("scale", "mask", *LOSS_KEYS)


def _entry(item: object) -> Entry:
    """An Entry from its JSON object (ValueError or TypeError saying what is wrong)."""
    if not isinstance(item, dict):
        raise TypeError(f"an entry must be an object, not {type(item).__name__}")
    missing = [key for key in KEYS if key not in item]
    unknown = [key for key in item if key not in KEYS + OPTIONAL_KEYS]
    if missing or unknown:
        raise ValueError("; ".join(filter(None, [missing and f"lacks {', '.join(missing)}",
                                                 unknown and f"has unknown keys {', '.join(unknown)}"])))
    _check(item["op"] in OPS, "op", item, f"one of {', '.join(OPS)}")
    _check(item["dtype"] in DTYPES, "dtype", item, f"one of {', '.join(DTYPES)}")
    vjp = is_vjp(str(item["op"]))
    kind = item["cotangent"]
    _check(isinstance(kind, str) and kind in COTANGENTS if vjp else kind is None, "cotangent", item,
           f"one of {', '.join(COTANGENTS)} for a VJP" if vjp else "null for a forward op")
    for key in ("backend", "backend_version", "message", "description", "bits", "name"):
        _check(isinstance(item[key], str), key, item, "a string")
    _check(_is_date(item["date"]), "date", item, "an ISO date (YYYY-MM-DD)")
    _check(_is_int(item["seed"]) and item["seed"] >= 0, "seed", item, "an integer >= 0")
    for key in ("max_ulp", "ratio"):
        _check(item[key] is None or (_is_number(item[key]) and item[key] >= 0), key, item,
               "a number >= 0 or null")
    _check(item["failure"] in FAILURES, "failure", item, "null, accuracy, semantic or error")
    shape = item["shape"]
    _check(isinstance(shape, list) and len(shape) >= 1 and all(_is_int(s) and s >= 0 for s in shape),
           "shape", item, "a list of sizes")
    _check(item["axis"] == -1, "axis", item, "-1 (found cases are rows)")
    x = decode_bits(item["bits"], item["dtype"], tuple(shape))
    scale = item.get("scale")
    if scale is not None:
        _check(_is_number(scale) and _in_dtype(scale, item["dtype"]), "scale", item,
               f"a number in {item['dtype']} (the scale the op multiplies by)")
        check_scale(float(scale), format_of(item["dtype"]))
    mask = item.get("mask")
    _check(mask is None or isinstance(mask, str), "mask", item, "a string of 0 and 1")
    loss = _loss_fields(item, x)
    entry = Entry(op=item["op"], dtype=item["dtype"], cotangent=item["cotangent"], backend=item["backend"],
                  backend_version=item["backend_version"], date=item["date"], seed=item["seed"],
                  max_ulp=item["max_ulp"], ratio=item["ratio"], failure=item["failure"],
                  message=item["message"], x=x, description=item["description"],
                  scale=None if scale is None else float(scale),
                  mask=None if mask is None else decode_mask(mask, tuple(shape)), **loss)
    if item["name"] != entry.name:
        options = "" if entry.scale is None and entry.mask is None else " (with its scale and mask)"
        options = " (with its targets and options)" if loss else options
        raise ValueError(f"the name {item['name']!r} does not match its op, dtype and bits{options} "
                         f"({entry.name!r}): the entry was edited or damaged")
    return entry


def _loss_fields(item: dict, x: np.ndarray) -> dict:
    """A loss op's entry's target, reduction and options as Entry's fields ({} for another op's);
    ValueError saying what is wrong."""
    given = [key for key in LOSS_KEYS if key in item]
    if not op_named(item["op"]).loss:
        if given:
            raise ValueError(f"has {', '.join(given)}, which only an entry of a loss op "
                             "(cross_entropy, cross_entropy_vjp) has")
        return {}
    missing = [key for key in LOSS_KEYS[:2] if key not in item]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)} (an entry of {item['op']} has target and reduction)")
    _check(x.ndim == 2, "shape", item, "[N, C] for a loss op (a row of C class logits per sample)")
    rows, classes = x.shape
    _check(item["reduction"] in REDUCTIONS, "reduction", item, f"one of {', '.join(REDUCTIONS)}")
    ignore_index = item.get("ignore_index")
    _check(ignore_index is None or _is_int(ignore_index), "ignore_index", item, "an integer")
    target = item["target"]
    _check(isinstance(target, list) and len(target) == rows and all(
        _is_int(t) and (0 <= t < classes or t == ignore_index) for t in target), "target", item,
        f"a list of {rows} class indices (0 to {classes - 1}, or the ignore_index), one per row")
    smoothing = item.get("label_smoothing")
    _check(smoothing is None or (_is_number(smoothing) and 0 <= smoothing <= 1), "label_smoothing", item,
           "a number in [0, 1]")
    weight = item.get("weight")
    if weight is not None:
        _check(isinstance(weight, str), "weight", item, f"the bits of {classes} class weights")
        try:
            weight = decode_bits(weight, item["dtype"], (classes,))
        except ValueError as error:
            raise ValueError(f"'weight': {error}".replace("'bits' ", "")) from None
        values = weight.astype(np.float64)
        _check(bool(np.all(np.isfinite(values) & (values >= 0))), "weight", item,
               "finite class weights >= 0")
    target_array = np.array(target, dtype=np.int64)
    target_array.flags.writeable = False
    return {"target": target_array, "reduction": item["reduction"], "ignore_index": ignore_index,
            "label_smoothing": None if smoothing is None else float(smoothing), "weight": weight}


def _check(ok: bool, key: str, item: dict, expected: str) -> None:
    if not ok:
        raise ValueError(f"{key!r} is {item[key]!r}, expected {expected}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _in_dtype(value: float, dtype: str) -> bool:
    """Whether value is one of dtype's numbers (rounding it into dtype leaves it)."""
    return float(round_values(np.array([float(value)]), format_of(dtype))[0]) == float(value)


def _is_date(value: object) -> bool:
    try:
        datetime.date.fromisoformat(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def check_writable(path: Path) -> list[Entry]:
    """Before a hunt: the entries already at path (none when it does not exist yet); CorpusError
    when it could not be merged into afterwards."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CorpusError(f"corpus {path} is a folder; give a file name with --corpus")
    if not folder.is_dir():
        raise CorpusError(f"corpus {path}: no folder {folder}; create it or give another --corpus")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CorpusError(f"corpus {path}: the folder {folder} is not writable; give another --corpus")
    return read(path) if path.exists() else []


def merge(path: Path, new: list[Entry]) -> list[Entry]:
    """Add the entries whose inputs path does not hold yet (written atomically: a temporary file
    beside it, then os.replace); the entries added."""
    existing = read(path) if path.exists() else []
    held = {entry.digest for entry in existing}
    added = []
    for entry in new:
        if entry.digest not in held:
            held.add(entry.digest)
            added.append(entry)
    _write_atomically(path, dumps([*existing, *added]))
    return added


def dumps(entries: list[Entry]) -> str:
    """The corpus file's text: one key of an entry per line, each value on its line (diffs of a
    corpus under version control then show which entries came and went)."""
    def entry(item: Entry) -> str:
        return "  {\n" + ",\n".join(f"   {json.dumps(key)}: {json.dumps(value, allow_nan=False)}"
                                     for key, value in item.as_json().items()) + "\n  }"

    cases = ",\n".join(entry(item) for item in entries)
    return (f'{{\n "format": {json.dumps(FORMAT)},\n "version": {VERSION},\n "cases": ['
            + (f"\n{cases}\n ]" if entries else "]") + "\n}\n")


def _write_atomically(path: Path, text: str) -> None:
    # A reader (a pytest-xdist worker starting up) sees the old file or the new one, never half.
    folder = path.parent if str(path.parent) else Path(".")
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise _unwritable(path, error) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise _unwritable(path, error) from None


def _unwritable(path: Path, error: OSError) -> CorpusError:
    return CorpusError(f"cannot write the corpus {path}: {error.strerror}; give another --corpus")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
