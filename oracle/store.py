"""The oracle's disk cache: references stored by the hash of what determines them, shared by runs
and by parallel workers.

An entry is one .npz file (numpy arrays only, read with allow_pickle=False) named by the
sha256 of the oracle version, the op family, axis, dtype, shape and the exact bits of every
input (x, and the cotangents for the VJPs). It holds every op of the family, its arrays stacked
by kind and shape (per-row terms once per row, shared terms once), and a CRC-32 of them; an
entry that fails to load or to match its checksum is reported, recomputed and replaced. Files
are written to a temporary name in the same folder and renamed into place, so a reader never
sees half an entry and two workers writing the same entry leave one whole. No fsync: an entry
that a power cut leaves empty or short is a damaged entry, recomputed.

The folder is bounded ($SOFTMAX_SUITE_ORACLE_CACHE_LIMIT, default 4 GB): a hit touches its entry's
mtime, and a write that takes the folder past the limit evicts the entries unused longest until
it holds 90% of it. A process keeps a running total of the folder instead of listing it on every
write: it lists it on its first write, then every SCAN_EVERY writes (what other processes wrote
meanwhile) or when its own total crosses the limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from softmax_suite import formats
from softmax_suite.formats import format_of
from softmax_suite.oracle.exact import Reference

# Part of every key: the source of the modules that compute stored values, so that any change
# to them starts a fresh set of entries instead of reading values the new code would not give.
ORACLE_SOURCES = (Path(formats.__file__), *(Path(__file__).parent / name for name in (
    "rounding.py", "doubleword.py", "exponential.py", "fastpath.py", "exact.py", "gradients.py", "store.py")))
ORACLE_VERSION = hashlib.sha256(b"".join(path.read_bytes() for path in ORACLE_SOURCES)).hexdigest()[:16]
ENVIRONMENT_VARIABLE = "SOFTMAX_SUITE_ORACLE_CACHE"
LIMIT_VARIABLE = "SOFTMAX_SUITE_ORACLE_CACHE_LIMIT"
# A default run keeps 1.6 GB (docs/oracle.md; most of it the length ladder's rows of 2^20): 4 GB
# keeps it warm, and beside it a second oracle version's entries (an upgrade; a checkout beside an
# installed release).
DEFAULT_LIMIT = 4 * 10**9
# Parallel processes overshoot the limit by at most this many entries each between listings.
SCAN_EVERY = 64
LOW_WATER = 0.9  # an eviction leaves this fraction of the limit, so that the next write does not evict again
SUFFIX = ".npz"
FIELDS = ("rounded", "mant", "mant_lo", "scale")
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
SIZE = re.compile(r"\s*(\d+\.?\d*|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)


class OracleCacheWarning(UserWarning):
    """A cache entry could not be used (corrupt, truncated, unreadable); it was recomputed."""


def default_folder() -> Path:
    """$SOFTMAX_SUITE_ORACLE_CACHE, else $XDG_CACHE_HOME/softmax-suite/oracle (~/.cache/...)."""
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return Path(os.environ[ENVIRONMENT_VARIABLE])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "softmax-suite" / "oracle"


def folder_for(option: str | None) -> Path | None:
    """The folder an --oracle-cache value names: the default when not given, None for 'off'."""
    if option == "off":
        return None
    return Path(option) if option else default_folder()


def parse_limit(text: str) -> int | None:
    """Bytes of a size such as '500MB', '2GB', '1.5GiB' or '1000000' (decimal units as cache info
    prints them, binary ones too); None, no limit, for '0' or 'off'."""
    found = SIZE.fullmatch(text)
    if text.strip().lower() == "off":
        return None
    if found is None or found[2].lower() not in UNITS:
        raise ValueError(f"oracle cache limit {text!r} (${LIMIT_VARIABLE}): give a size like 500MB or 2GB "
                         f"(units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), or 0 or off for no limit")
    return math.ceil(float(found[1]) * UNITS[found[2].lower()]) or None


def limit() -> int | None:
    """The folder's size limit in bytes from $SOFTMAX_SUITE_ORACLE_CACHE_LIMIT (None: no limit);
    DEFAULT_LIMIT when unset. Raises ValueError, naming the fix, for a value that is not a size."""
    text = os.environ.get(LIMIT_VARIABLE, "")
    return parse_limit(text) if text else DEFAULT_LIMIT


def entry_key(family: str, axis: int, inputs: list[np.ndarray]) -> str:
    """The sha256 that names an entry."""
    digest = hashlib.sha256(f"softmax-suite oracle {ORACLE_VERSION} {family} axis={axis}".encode())
    for array in inputs:
        digest.update(f"|{array.dtype.name}{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _path(folder: Path, key: str) -> Path:
    return folder / key[:2] / f"{key}{SUFFIX}"


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    # Against damage, not an adversary (the entry is the user's own file): CRC-32 reads 2.3x as fast
    # as sha256, which took 3.5 ms of a warm item's read.
    crc = 0
    for name in sorted(arrays):
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]), zlib.crc32(name.encode(), crc))
    return f"crc32:{crc:08x}"


def _write_archive(file: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that np.load reads, deflated at level 1: the float64 stacks of narrower formats'
    values shrink 2.7x (numpy's level 6 gives 2.9x), written 4x as fast (the default level's
    compression was the larger part of a cold run's oracle time)."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _compact(array: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The array without its broadcast axes (stride 0: a per-row term repeated along the row),
    and where they were: np.broadcast_to(np.expand_dims(compact, axes), shape) gives it back."""
    axes = [i for i, (stride, size) in enumerate(zip(array.strides, array.shape, strict=True))
            if stride == 0 and size > 1]
    if axes and len(axes) == array.ndim:  # a constant: keep one axis, of length 1, to stay an array view
        axes.pop()
    if not axes:
        return array, axes
    return array[tuple(0 if i in axes else slice(None) for i in range(array.ndim))], axes


def _pack(references: dict[str, Reference]) -> dict[str, np.ndarray]:
    """Few arrays per entry, since each costs a header to parse on every read: the fields and
    terms of every op, stacked by kind and shape; an array several ops share is stored once."""
    stacks: dict[str, list[np.ndarray]] = {}
    places: dict[tuple, list] = {}

    def place(array: np.ndarray) -> list:
        compact, axes = _compact(np.asarray(array))
        identity = (compact.__array_interface__["data"][0], compact.shape, compact.strides, compact.dtype.str)
        if identity not in places:
            integer = compact.dtype.kind in "iu"
            name = f"{'int' if integer else 'float'}:{'x'.join(map(str, compact.shape))}"
            stack = stacks.setdefault(name, [])
            # bfloat16 has no numpy descriptor that loads without pickle: every float goes as float64.
            stack.append(compact.astype(np.int32 if integer else np.float64))
            places[identity] = [name, len(stack) - 1]
        return [*places[identity], list(array.shape), axes]

    meta = {}
    for op, reference in references.items():
        meta[op] = {"dtype": reference.dtype, "row_length": reference.row_length,
                    "max_precision": reference.max_precision, "certificate": dict(reference.certificate),
                    "fields": {field: place(getattr(reference, field)) for field in FIELDS},
                    "terms": {name: place(values) for name, values in sorted(reference.terms.items())}}
    arrays = {name: np.stack(stack) for name, stack in stacks.items()}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    arrays["checksum"] = np.array(_checksum(arrays))
    return arrays


def _unpack(arrays: dict[str, np.ndarray]) -> dict[str, Reference]:
    checksum = str(arrays.pop("checksum"))
    if checksum != _checksum(arrays):
        raise ValueError("checksum mismatch")
    meta = json.loads(str(arrays["meta"]))

    def placed(where: list) -> np.ndarray:
        name, index, shape, axes = where
        value = arrays[name][index]
        return np.broadcast_to(np.expand_dims(value, axes), shape) if axes else value.reshape(shape)

    references = {}
    for op, info in meta.items():
        fields = {field: placed(where) for field, where in info["fields"].items()}
        references[op] = Reference(
            op=op,
            dtype=info["dtype"],
            rounded=fields["rounded"].astype(format_of(info["dtype"]).np_dtype),
            mant=fields["mant"],
            mant_lo=fields["mant_lo"],
            scale=fields["scale"],
            terms={name: placed(where) for name, where in info["terms"].items()},
            row_length=info["row_length"],
            max_precision=info["max_precision"],
            certificate=info["certificate"],
        )
    return references


def load(folder: Path, key: str) -> dict[str, Reference] | None:
    """The stored references, or None when absent; a damaged entry is warned about and removed,
    a hit marked as used now (what eviction goes by)."""
    path = _path(folder, key)
    try:
        # Once open, the entry reads whole even if another process evicts or replaces it meanwhile.
        with path.open("rb") as file, np.load(file, allow_pickle=False) as stored:
            references = _unpack({name: stored[name] for name in stored.files})
    except FileNotFoundError:  # absent, or evicted by another process since
        return None
    except Exception as error:  # any damage: truncation, bad zip, bad checksum, missing arrays
        warnings.warn(f"oracle cache entry {path} is unusable ({type(error).__name__}: {error}); "
                      "recomputing it", OracleCacheWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        return None
    # Fails when evicted meanwhile or in a folder this user may only read: the hit still counts.
    with contextlib.suppress(OSError):
        os.utime(path)
    return references


@dataclass
class _Tally:
    """One process's idea of a folder's size: the total when last listed plus its own writes."""

    bytes: int
    writes: int = 0


_tallies: dict[Path, _Tally] = {}


def save(folder: Path, key: str, references: dict[str, Reference], limit: int | None = None) -> None:
    """Store the references atomically, then keep the folder within limit bytes (None: unbounded);
    a folder that cannot be written is warned about once per call and skipped (the run goes on
    without the cache)."""
    path = _path(folder, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            _write_archive(file, _pack(references))
            size = file.tell()
        os.replace(temporary, path)
        if limit is not None:
            tally = _tallies.get(folder)
            if tally is not None:
                tally.bytes += size
                tally.writes += 1
            if tally is None or tally.bytes > limit or tally.writes >= SCAN_EVERY:
                _tallies[folder] = _Tally(evict(folder, limit))
    except OSError as error:
        warnings.warn(f"cannot write the oracle cache in {folder} ({error.strerror}); going on "
                      "without it", OracleCacheWarning, stacklevel=2)


def _entries(folder: Path) -> list[tuple[int, int, Path]]:
    """(mtime in ns, size, path) of every entry, oldest first."""
    found = []
    for path in folder.glob(f"*/*{SUFFIX}") if folder.is_dir() else []:
        try:
            stat = path.stat()
        except FileNotFoundError:  # evicted or damaged and removed by another process since listed
            continue
        found.append((stat.st_mtime_ns, stat.st_size, path))
    return sorted(found)


def evict(folder: Path, limit: int) -> int:
    """Remove the entries unused longest until the folder holds LOW_WATER of limit, if it holds
    more than limit; the bytes left."""
    entries = _entries(folder)
    total = sum(size for _, size, _ in entries)
    if total > limit:
        for _, size, path in entries:
            if total <= LOW_WATER * limit:
                break
            path.unlink(missing_ok=True)
            total -= size
    return total


def info(folder: Path) -> dict:
    """Where the cache is, how many entries it holds and their size in bytes."""
    entries = _entries(folder)
    return {"folder": str(folder), "entries": len(entries),
            "bytes": sum(size for _, size, _ in entries), "oracle_version": ORACLE_VERSION}


def clear(folder: Path) -> int:
    """Remove every entry (and stray temporary files); the number of entries removed."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in [*folder.glob(f"*/*{SUFFIX}"), *folder.glob("*/.*.tmp")]:
        removed += path.suffix == SUFFIX
        path.unlink(missing_ok=True)
    for sub in folder.iterdir():
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    return removed
