"""The oracle's disk cache: stored references come back bit for bit, damage is warned about and
recomputed, writers never leave half an entry, the folder stays within its limit by evicting the
least recently used, and `softmax-suite cache` reports and clears."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.formats import FORMATS
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # float8: tests/test_float8.py
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
    cache.use_disk(tmp_path, None)
    cache.clear()
    yield tmp_path
    cache.use_disk(None, None)
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


def small_references(count: int) -> list[dict]:
    """count distinct forward entries of 4 rows of 32 float32 logits (about 6 kB each)."""
    rng = np.random.default_rng(11)
    return [forward_references((3 * rng.standard_normal((4, 32))).astype(np.float32), -1)
            for _ in range(count)]


def entry_sizes(folder: Path) -> dict[str, int]:
    return {path.stem: path.stat().st_size for path in folder.glob("*/*.npz")}


def test_eviction_keeps_the_folder_under_the_limit_least_recently_used_first(tmp_path: Path) -> None:
    (references,) = small_references(1)
    a, b, c, d, e = (f"{i:02d}" * 32 for i in range(5))
    for key in (a, b, c, d):
        store.save(tmp_path, key, references)  # no limit
    (size,) = set(entry_sizes(tmp_path).values())  # the same arrays: the same bytes
    for age, key in enumerate((a, b, c, d)):  # written in this order, a second apart
        os.utime(store._path(tmp_path, key), ns=(0, (1000 + age) * 10**9))
    assert store.load(tmp_path, a) is not None  # a hit: a is now the most recently used
    # A limit of 4.5 entries: the fifth takes the folder to 5, past it; eviction goes down to
    # 90% of it (4.05 entries), which removing one entry reaches: b, the oldest once a was read.
    limit = 9 * size // 2
    store.save(tmp_path, e, references, limit)
    assert sorted(entry_sizes(tmp_path)) == sorted((a, c, d, e))
    assert sum(entry_sizes(tmp_path).values()) == 4 * size <= store.LOW_WATER * limit


def test_a_process_lists_the_folder_only_when_its_running_total_says_so(tmp_path: Path, monkeypatch) -> None:
    (references,) = small_references(1)
    scans = []
    evict = store.evict
    monkeypatch.setattr(store, "evict", lambda folder, limit: scans.append(len(entry_sizes(folder))) or
                        evict(folder, limit))
    store.save(tmp_path / "size", "ff" * 32, references)
    size = store.info(tmp_path / "size")["bytes"]
    # Room for 10.5 entries. The first write lists the folder (1 entry); the 11th takes this
    # process's total past the limit: listed, down to 9 entries (90% of 10.5 is 9.45); then every
    # second write does it again (10 fit, 11 do not): writes 1, 11, 13, ..., 29 of 30 list it.
    limit = 21 * size // 2
    for i in range(30):
        store.save(tmp_path, f"{i:064x}", references, limit)
        assert store.info(tmp_path)["bytes"] <= limit
    assert scans == [1] + [11] * 10
    assert store.info(tmp_path)["entries"] == 10
    # Without its own writes taking it past the limit, a process lists the folder every
    # SCAN_EVERY writes, to count what other processes wrote meanwhile.
    scans.clear()
    for i in range(2 * store.SCAN_EVERY):
        store.save(tmp_path / "other", f"{i:064x}", references, 10**9)
    assert scans == [1, store.SCAN_EVERY + 1]


def test_no_limit_means_the_folder_is_never_listed(tmp_path: Path, monkeypatch) -> None:
    (references,) = small_references(1)
    monkeypatch.setattr(store, "evict", lambda *args: pytest.fail("listed"))
    for i in range(3):
        store.save(tmp_path, f"{i:064x}", references, store.parse_limit("0"))
        store.save(tmp_path, f"{i + 3:064x}", references, store.parse_limit("off"))
    assert store.info(tmp_path)["entries"] == 6


def test_an_entry_evicted_while_read_reads_whole(tmp_path: Path, monkeypatch) -> None:
    (references,) = small_references(1)
    key = "ab" * 32
    store.save(tmp_path, key, references)
    path = store._path(tmp_path, key)
    load = np.load

    def evicted_after_open(file, **options):  # another process evicts it between open and read
        path.unlink()
        return load(file, **options)

    monkeypatch.setattr(store.np, "load", evicted_after_open)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_identical(store.load(tmp_path, key), references)  # the open file still reads
        assert store.load(tmp_path, key) is None  # then it is a miss, not damage


def _write_and_read_many(folder: str, process: int, limit: int, hits) -> None:
    warnings.simplefilter("error")  # a partial or damaged entry warns: here, it fails the process
    references = small_references(8)
    rng = np.random.default_rng(process)
    found = 0
    def key(writer: int, index: int) -> str:
        return hashlib.sha256(f"{writer} {index}".encode()).hexdigest()

    for i in range(40):
        store.save(Path(folder), key(process, i), references[i % 8], limit)
        for other, j in ((process, i), (int(rng.integers(4)), int(rng.integers(i + 1)))):
            loaded = store.load(Path(folder), key(other, j))
            if loaded is not None:  # a miss is fine: evicted
                assert_identical(loaded, references[j % 8])
                found += 1
    hits.put(found)


def test_concurrent_processes_writing_and_reading_under_a_small_limit(tmp_path: Path) -> None:
    # Four processes each write 40 entries (160 of about 6 kB) into a folder limited to 8, and
    # after each write read theirs and a random one of any process's back: every entry read is
    # the one written under its key (8 different ones, by key), whole, while others evict.
    limit = 8 * 6200
    context = multiprocessing.get_context("spawn")
    hits = context.Queue()
    workers = [context.Process(target=_write_and_read_many, args=(str(tmp_path), process, limit, hits))
               for process in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert sum(hits.get(timeout=10) for _ in workers) > 0
    # Each process lists the folder (and evicts down to 90%) once its own count passes the
    # limit, so after the last listing every process has added at most a limit and one entry
    # more: 0.9 x 8 + 4 x 9 = 43.2 entries, of the 160 written.
    assert store.info(tmp_path)["bytes"] <= store.LOW_WATER * limit + 4 * (limit + 6200)
    assert not list(tmp_path.glob("*/.*.tmp"))


@pytest.mark.parametrize(("text", "size"), [
    ("500MB", 500 * 10**6), ("2GB", 2 * 10**9), ("2gb", 2 * 10**9), (" 64 kB ", 64_000),
    ("1.5GiB", 3 * 2**29), ("1000000", 10**6), ("0", None), ("0MB", None), ("off", None)])
def test_a_limit_is_a_size_and_0_or_off_is_none(text: str, size: int | None) -> None:
    assert store.parse_limit(text) == size


@pytest.mark.parametrize("text", ["lots", "-1GB", "2 GBs", "1e9", "2 G B", "MB"])
def test_a_bad_limit_says_what_to_give(text: str) -> None:
    expected = rf"oracle cache limit {text!r} \(\${store.LIMIT_VARIABLE}\): give a size like 500MB or 2GB"
    with pytest.raises(ValueError, match=expected + r" \(units .*\), or 0 or off for no limit"):
        store.parse_limit(text)


def test_the_limit_comes_from_the_environment_else_the_default(monkeypatch) -> None:
    monkeypatch.delenv(store.LIMIT_VARIABLE, raising=False)
    assert store.limit() == store.DEFAULT_LIMIT == 4 * 10**9
    monkeypatch.setenv(store.LIMIT_VARIABLE, "")
    assert store.limit() == store.DEFAULT_LIMIT
    monkeypatch.setenv(store.LIMIT_VARIABLE, "700MB")
    assert store.limit() == 700 * 10**6
    monkeypatch.setenv(store.LIMIT_VARIABLE, "off")
    assert store.limit() is None


def test_the_folder_comes_from_the_option_the_environment_or_the_user_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(store.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.folder_for(None) == tmp_path / "xdg" / "softmax-suite" / "oracle"
    monkeypatch.setenv(store.ENVIRONMENT_VARIABLE, str(tmp_path / "env"))
    assert store.folder_for(None) == tmp_path / "env"
    assert store.folder_for(str(tmp_path / "given")) == tmp_path / "given"
    assert store.folder_for("off") is None


def cli(*args: str, limit: str | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != store.LIMIT_VARIABLE}
    if limit is not None:
        environment[store.LIMIT_VARIABLE] = limit
    return subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli",
                           *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=environment)


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


def test_cache_info_shows_the_limit_and_how_full(tmp_path: Path) -> None:
    (references,) = small_references(1)
    store.save(tmp_path, "ab" * 32, references)
    size = store.info(tmp_path)["bytes"]  # about 6 kB
    default = cli("cache", "info", "--oracle-cache", str(tmp_path))
    assert "limit:   4 GB, 0% full (the default; $SOFTMAX_SUITE_ORACLE_CACHE_LIMIT sets it)" in default.stdout
    given = cli("cache", "info", "--oracle-cache", str(tmp_path), limit="20kB")
    assert f"limit:   20 kB, {size / 20e3:.0%} full ($SOFTMAX_SUITE_ORACLE_CACHE_LIMIT=20kB)" in given.stdout
    over = cli("cache", "info", "--oracle-cache", str(tmp_path), limit="1kB")
    assert f"{size / 1000:.0%} full: the next entry written evicts the least recently used" in over.stdout
    assert "limit:   none ($SOFTMAX_SUITE_ORACLE_CACHE_LIMIT=off)" in cli(
        "cache", "info", "--oracle-cache", str(tmp_path), limit="off").stdout


def test_a_bad_limit_is_a_usage_error(tmp_path: Path) -> None:
    info = cli("cache", "info", "--oracle-cache", str(tmp_path), limit="lots")
    assert info.returncode == 2 and "oracle cache limit 'lots'" in info.stderr and not info.stdout
    run = cli("run", "--backend", "numpy", "--case", "glossary", "--dtype", "float32", "--throughput", "off",
              "--oracle-cache", str(tmp_path), "--out", str(tmp_path / "out"), "-n", "0", limit="2 gigs")
    assert run.returncode == 2 and "oracle cache limit '2 gigs'" in run.stdout + run.stderr


def records_of_a_small_run(folder: Path, out: str, limit: str | None = None) -> list[dict]:
    done = cli("run", "--backend", "numpy", "--case", "glossary,neg_inf_mask", "--dtype", "bfloat16",
               "--oracle-cache", str(folder / "cache"), "--out", str(folder / out), "-n", "0", limit=limit)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in (folder / out / "results.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in ("duration_s",)}
            for line in lines if line["kind"] == "result"]


def test_a_warm_run_gives_the_same_records(tmp_path: Path) -> None:
    cold = records_of_a_small_run(tmp_path, "cold")
    entries = store.info(tmp_path / "cache")["entries"]
    # 2 cases: one forward entry and one VJP entry per cotangent kind each, and the invariants'
    # shift check asks about inputs rounded to a grid (one more here).
    assert entries >= 2 * (1 + 4)
    assert records_of_a_small_run(tmp_path, "warm") == cold
    assert store.info(tmp_path / "cache")["entries"] == entries


def test_a_run_under_a_limit_too_small_for_it_gives_the_same_records(tmp_path: Path) -> None:
    unbounded = records_of_a_small_run(tmp_path / "unbounded", "out", limit="off")
    needed = store.info(tmp_path / "unbounded" / "cache")["bytes"]
    # A third of what the run keeps: it evicts as it goes. One process, whose running total is
    # the folder's, lists it whenever a write crosses the limit: never past it.
    limit = needed // 3
    assert records_of_a_small_run(tmp_path / "bounded", "out", limit=str(limit)) == unbounded
    assert 0 < store.info(tmp_path / "bounded" / "cache")["bytes"] <= limit
