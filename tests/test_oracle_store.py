"""The oracle's disk cache: stored references come back bit for bit, damage is warned about and
recomputed, writers never leave half an entry, and `softmax-suite cache` reports and clears."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.formats import DTYPES, FORMATS
from softmax_suite.oracle import cache, store
from softmax_suite.oracle.exact import forward_references
from softmax_suite.oracle.gradients import vjp_references

REPO = Path(__file__).resolve().parents[1]


def inputs(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    dtype = FORMATS[name].np_dtype
    x = (3 * rng.standard_normal((5, 40))).astype(dtype)
    x[1, :7] = -np.inf
    return x, rng.standard_normal((5, 40)).astype(dtype), rng.standard_normal(5).astype(dtype)


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for op in a:
        left, right = a[op], b[op]
        assert left.rounded.dtype == right.rounded.dtype
        # Bits, not values: -0.0 and NaN must survive the trip (bfloat16 included).
        assert left.rounded.tobytes() == right.rounded.tobytes(), op
        for field in ("mant", "mant_lo", "scale"):
            np.testing.assert_array_equal(getattr(left, field), getattr(right, field))
        assert left.terms.keys() == right.terms.keys()
        for name in left.terms:
            np.testing.assert_array_equal(left.terms[name], right.terms[name])
        assert (left.row_length, left.max_precision, left.dtype) == (
            right.row_length, right.max_precision, right.dtype)


@pytest.fixture
def disk(tmp_path: Path):
    cache.use_disk(tmp_path)
    cache.clear()
    yield tmp_path
    cache.use_disk(None)
    cache.clear()


@pytest.mark.parametrize("name", DTYPES)
def test_entries_come_back_bit_for_bit(tmp_path: Path, name: str) -> None:
    x, g, g_row = inputs(name)
    for family, computed, arrays in (("forward", forward_references(x, -1), [x]),
                                     ("vjp", vjp_references(x, g, g_row, -1), [x, g, g_row])):
        key = store.entry_key(family, 1, arrays)
        store.save(tmp_path, key, computed)
        assert_identical(store.load(tmp_path, key), computed)


def test_an_entry_stores_each_array_once(tmp_path: Path) -> None:
    x, _, _ = inputs("float32")
    key = store.entry_key("forward", 1, [x])
    store.save(tmp_path, key, forward_references(x, -1))
    with np.load(store._path(tmp_path, key), allow_pickle=False) as stored:
        shapes = {name: stored[name].shape for name in stored.files}
    # Full size: rounded, mant and mant_lo of softmax and log_softmax, and the gap they share.
    # Per row: logsumexp's fields and the row terms the three ops share (weighted_gap, max_gap,
    # tail, log_tail, n_subnormal, subnormal_tail), once per row although softmax's and
    # log_softmax's repeat along it.
    assert shapes["float:5x40"] == (7, 5, 40)
    assert shapes["float:5"] == (3 + 6, 5)
    assert shapes["int:5x40"] == (2, 5, 40) and shapes["int:5"] == (1, 5)


def test_the_key_is_the_content() -> None:
    x, g, g_row = inputs("float32")
    key = store.entry_key("vjp", 1, [x, g, g_row])
    assert key == store.entry_key("vjp", 1, [x.copy(), g.copy(), g_row.copy()])
    flipped = g.copy()
    flipped.view(np.uint32)[0, 0] ^= 1  # one bit of the cotangent
    others = [store.entry_key("forward", 1, [x, g, g_row]), store.entry_key("vjp", 0, [x, g, g_row]),
              store.entry_key("vjp", 1, [x, flipped, g_row]),
              store.entry_key("vjp", 1, [x.astype(np.float64), g, g_row]),
              store.entry_key("vjp", 1, [x.reshape(10, 20), g, g_row])]
    assert len({key, *others}) == 6


def test_a_second_process_reads_what_the_first_computed(disk: Path, monkeypatch) -> None:
    x, _, _ = inputs("float16")
    first = cache.reference("softmax", x, -1)
    assert store.info(disk)["entries"] == 1
    cache.clear()
    # A fresh process has an empty memory; the oracle must not run again.
    monkeypatch.setattr(cache, "forward_references", lambda *args: pytest.fail("recomputed"))
    assert_identical({"softmax": cache.reference("softmax", x, -1)}, {"softmax": first})


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def damage_checksum(path: Path) -> None:
    # A well-formed archive whose arrays no longer match its checksum (one flipped value).
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    meta = json.loads(str(arrays["meta"]))
    stack, index, _, _ = meta["softmax"]["fields"]["mant"]
    arrays[stack] = arrays[stack].copy()
    arrays[stack][index].flat[0] = -arrays[stack][index].flat[0]
    with path.open("wb") as file:
        np.savez(file, **arrays)


def damage_flip_array_byte(path: Path) -> None:
    # One byte of one stored array flipped, the archive otherwise whole (its zip CRCs recomputed):
    # only the entry's own checksum can tell.
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name].copy() for name in stored.files}
    name = next(name for name in sorted(arrays) if name.startswith("float:"))
    arrays[name].view(np.uint8).flat[arrays[name].nbytes // 2] ^= 0x10
    with path.open("wb") as file:
        np.savez_compressed(file, **arrays)


def damage_flip_file_byte(path: Path) -> None:
    # A byte flipped on disk, in the middle of the compressed data: zip's CRC or zlib refuses it.
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_pickle(path: Path) -> None:
    # An object array can only be read with pickle, which the store never allows.
    with path.open("wb") as file:
        np.savez(file, meta=np.array([{"evil": 1}], dtype=object))


@pytest.mark.parametrize("damage", [damage_truncate, damage_checksum, damage_flip_array_byte,
                                    damage_flip_file_byte, damage_pickle])
def test_a_damaged_entry_is_warned_about_recomputed_and_replaced(disk: Path, damage) -> None:
    x, _, _ = inputs("bfloat16")
    good = forward_references(x, -1)
    cache.reference("softmax", x, -1)
    (path,) = disk.glob("*/*.npz")
    damage(path)
    cache.clear()
    with pytest.warns(store.OracleCacheWarning, match=r"oracle cache entry .* is unusable.*recomputing"):
        again = cache.reference("log_softmax", x, -1)
    assert_identical({"log_softmax": again}, {"log_softmax": good["log_softmax"]})
    cache.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the replaced entry is whole
        assert_identical({"softmax": cache.reference("softmax", x, -1)}, {"softmax": good["softmax"]})


def test_an_unwritable_folder_is_warned_about_and_the_run_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    x, _, _ = inputs("float32")
    with pytest.warns(store.OracleCacheWarning, match="cannot write the oracle cache"):
        store.save(blocker / "cache", "ab" * 32, forward_references(x, -1))


def _write_same_entry(folder: str, rounds: int) -> None:
    x, _, _ = inputs("float64")
    references = forward_references(x, -1)
    key = store.entry_key("forward", 1, [x])
    for _ in range(rounds):
        store.save(Path(folder), key, references)
        loaded = store.load(Path(folder), key)
        assert loaded is not None


def test_concurrent_writers_of_one_entry_leave_it_whole(tmp_path: Path) -> None:
    # Four processes write and read the same entry 20 times each: a reader sees the old or the
    # new file, never a partial one (a partial one would warn and return None).
    context = multiprocessing.get_context("spawn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        workers = [context.Process(target=_write_same_entry, args=(str(tmp_path), 20)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert store.info(tmp_path)["entries"] == 1
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_the_folder_comes_from_the_option_the_environment_or_the_user_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(store.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.folder_for(None) == tmp_path / "xdg" / "softmax-suite" / "oracle"
    monkeypatch.setenv(store.ENVIRONMENT_VARIABLE, str(tmp_path / "env"))
    assert store.folder_for(None) == tmp_path / "env"
    assert store.folder_for(str(tmp_path / "given")) == tmp_path / "given"
    assert store.folder_for("off") is None


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli",
                           *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_cache_info_and_clear(tmp_path: Path) -> None:
    x, _, _ = inputs("float32")
    for shape in ((5, 40), (8, 25)):
        store.save(tmp_path, store.entry_key("forward", 1, [x.reshape(shape)]), forward_references(x, -1))
    info = cli("cache", "info", "--oracle-cache", str(tmp_path))
    assert info.returncode == 0 and f"folder:  {tmp_path}" in info.stdout and "entries: 2" in info.stdout
    cleared = cli("cache", "clear", "--oracle-cache", str(tmp_path))
    assert cleared.returncode == 0 and f"removed 2 entries from {tmp_path}" in cleared.stdout
    assert store.info(tmp_path)["entries"] == 0
    assert cli("cache", "info", "--oracle-cache", "off").returncode == 2


def test_a_warm_run_gives_the_same_records(tmp_path: Path) -> None:
    def run(out: str) -> list[dict]:
        done = cli("run", "--backend", "numpy", "--case", "glossary,neg_inf_mask", "--dtype", "bfloat16",
                   "--oracle-cache", str(tmp_path / "cache"), "--out", str(tmp_path / out), "-n", "0")
        assert done.returncode == 0, done.stdout + done.stderr
        lines = [json.loads(line) for line in (tmp_path / out / "results.jsonl").read_text().splitlines()]
        return [{k: v for k, v in line.items() if k not in ("duration_s",)}
                for line in lines if line["kind"] == "result"]

    cold = run("cold")
    entries = store.info(tmp_path / "cache")["entries"]
    # 2 cases: one forward entry and one VJP entry per cotangent kind each, and the invariants'
    # shift check asks about inputs rounded to a grid (one more here).
    assert entries >= 2 * (1 + 4)
    assert run("warm") == cold
    assert store.info(tmp_path / "cache")["entries"] == entries
