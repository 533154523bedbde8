"""The generic array API adapter: array-api-strict held to the 2023.12 standard over the whole
catalogue, `array-api:numpy` answering the same bits, conversions keeping the bits, and the specs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from softmax_suite.backends.array_api_backend import adapter
from softmax_suite.backends.custom import SpecError
from softmax_suite.backends.registry import Unavailable, check_names, load
from softmax_suite.ops import LOSS_OPS
from softmax_suite.protocol import DTYPES, FLOAT8_DTYPES, OPS, Backend
from softmax_suite.runner.config import Settings
from softmax_suite.suites import accuracy
from softmax_suite.suites.accuracy import Target, why_not_case
from softmax_suite.suites.cases import CASES, CATALOGUE

strict = pytest.importorskip("array_api_strict")

REPO = Path(__file__).resolve().parent.parent
# Only what the 2023.12 standard requires: no newer functions, no boolean indexing, no
# data-dependent shapes.
STANDARD = {"api_version": "2023.12", "boolean_indexing": False, "data_dependent_shapes": False}
SPECIAL_BITS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -2.5]


def runs(case_names: list[str], dtypes: tuple[str, ...]) -> list[Target]:
    """Every accuracy question on these cases and dtypes: each op, each cotangent kind of a VJP (the
    standard has no cross-entropy: not the loss ops)."""
    return [Target(op, "?", "cpu", dtype, name, kind)
            for name in case_names for dtype in dtypes if dtype in CASES[name].dtypes
            for op in OPS if op not in LOSS_OPS and not why_not_case(op, CASES[name])
            for kind in (CASES[name].cotangents if op.endswith("_vjp") else [None])]


def test_the_whole_catalogue_passes_on_array_api_strict(tmp_path: Path) -> None:
    environment = {**os.environ, **{f"ARRAY_API_STRICT_{key.upper()}": str(value)
                                    for key, value in STANDARD.items()}}
    done = subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli",
                           "run", "--backend", "array_api_strict",
                           "--out", str(tmp_path), "-n", "0", "--throughput", "off"],
                          cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert lines[0]["backends"]["array_api_strict"]["version"] == strict.__version__
    records = [line for line in lines if line["kind"] == "result"]
    # Every case that applies to float32 or float64 (the others are only the 16-bit formats').
    # Attention's cases too: the adapter takes their scale and mask (docs/attention.md). The standard
    # has no cross-entropy: the loss cases are not asked.
    assert {r["case"] for r in records} == {c.name for c in CATALOGUE if "slow" not in c.tags
                                           and {"float32", "float64"} & set(c.dtypes) and not c.loss}
    assert {r["status"] for r in records if r["dtype"] in ("float32", "float64")} == {"pass"}
    # The standard has no half precision (nor float8), and array-api-strict offers none: no item asks
    # it, the capability table says so once per op and dtype.
    assert not [r for r in records if r["dtype"] in ("float16", "bfloat16")]
    assert {(e["dtype"], e["op"]) for e in lines[0]["capabilities"] if "option" not in e} == {
        (dtype, op) for dtype in ("float16", "bfloat16", *FLOAT8_DTYPES) for op in OPS} | {
        (dtype, op) for dtype in DTYPES for op in LOSS_OPS}
    assert not [e for e in lines[0]["capabilities"] if "option" in e]


def test_array_api_numpy_answers_the_same_bits() -> None:
    check_names(["array-api:numpy"])
    numpy_namespace = load("array-api:numpy")
    assert isinstance(numpy_namespace, Backend)
    assert (numpy_namespace.name, numpy_namespace.version) == ("array-api:numpy", np.__version__)
    with strict.ArrayAPIStrictFlags(**STANDARD):
        strict_backend = load("array_api_strict")
        targets = runs([c.name for c in CATALOGUE if not {"slow", "ladder"} & c.tags], ("float32", "float64"))
        assert len(targets) > 700
        for target in targets:
            x = accuracy.case_input(target.case, target.dtype)
            inputs = [x]
            if target.cotangent:
                g, g_row = accuracy.case_cotangents(target.case, target.cotangent, target.dtype)
                inputs.append(g_row if target.op == "logsumexp_vjp" else g)
            axis = CASES[target.case].axis
            reduced = tuple(size for i, size in enumerate(x.shape) if i != axis % x.ndim)
            shape = reduced if target.op == "logsumexp" else x.shape
            got = [accuracy.call_backend(backend, target.op, "cpu", axis, inputs, shape)
                   for backend in (strict_backend, numpy_namespace)]
            assert accuracy.output_digest(got[0]) == accuracy.output_digest(got[1]), target


def test_array_api_numpy_float16_passes() -> None:
    """numpy offers float16 beyond the standard: computed in float32, rounded once."""
    backend = load("array-api:numpy")
    assert isinstance(backend, Backend) and backend.dtypes == ("float16", "float32", "float64")
    cases = ["glossary", "dominant_gap_above", "underflow_gaps", "neg_inf_mask", "all_neg_inf", "pos_inf",
             "nan", "empty", "single_element", "tied_max", "huge_range", "long_random_n65k",
             "long_equal_n65k", "axis0_4d", "transposed"]
    for target in runs(cases, ("float16",)):
        record = accuracy.run(target, backend, Settings())
        assert record["status"] == "pass", (target, record["message"])


def _round_trip_values(dtype: str) -> np.ndarray:
    numpy_dtype = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    info = ml_dtypes.finfo(numpy_dtype)
    values = np.array([*SPECIAL_BITS, info.max, -info.max, info.smallest_subnormal,
                       -info.smallest_subnormal, info.smallest_normal], dtype=np.float64)
    random = np.random.default_rng(3).normal(0, 100, size=64)
    return np.concatenate([values, random]).astype(numpy_dtype).reshape(-1, 4).T


@pytest.mark.parametrize("spec", ["array_api_strict", "array-api:numpy", "array-api:torch"])
def test_conversions_keep_the_bits(spec: str) -> None:
    backend = load(spec)
    if isinstance(backend, Unavailable):
        pytest.skip(backend.reason)
    for dtype in backend.dtypes:
        x = _round_trip_values(dtype)  # transposed: a strided layout, as the catalogue has
        back = np.asarray(backend.to_numpy(backend.to_device(x, "cpu")))
        assert back.dtype == x.dtype and back.shape == x.shape
        if dtype == "bfloat16":  # through float32: the namespace's casts may rewrite a NaN's bits
            assert accuracy.output_digest(back) == accuracy.output_digest(x)
        else:
            assert back.tobytes() == np.ascontiguousarray(x).tobytes(), dtype


def test_dtypes_follow_the_namespace_and_its_device() -> None:
    assert load("array_api_strict").dtypes == ("float32", "float64")
    devices = strict.__array_namespace_info__().devices()
    no_float64 = next(device for device in devices if "no_float64" in repr(device))
    backend = adapter(strict, "strict-no-float64", device=no_float64)
    assert backend.dtypes == ("float32",)
    y = backend.ops["softmax"](backend.to_device(np.zeros((2, 3), np.float32), "cpu"), -1)
    assert y.device == no_float64 and np.all(backend.to_numpy(y) == np.float32(1 / 3))


def test_array_api_specs_and_their_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = load("array-api:no_such_module_here")
    assert isinstance(missing, Unavailable) and "cannot import 'no_such_module_here'" in missing.reason
    with pytest.raises(SpecError, match="names no module"):
        load("array-api:")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "array_api_compat", None)
        wrapped = load("array-api:json")
        assert isinstance(wrapped, Unavailable) and "pip install array-api-compat" in wrapped.reason
        patch.setitem(sys.modules, "array_api_strict", None)
        absent = load("array_api_strict")
        assert isinstance(absent, Unavailable) and "pip install array-api-strict" in absent.reason
    pytest.importorskip("array_api_compat")
    with pytest.raises(SpecError, match="'json' is not an array library"):
        load("array-api:json")


def test_torch_through_array_api_compat() -> None:
    """A module that is not a namespace itself (torch), wrapped by array_api_compat, in all four
    dtypes: bfloat16 travels through float32 both ways."""
    pytest.importorskip("array_api_compat")
    backend = load("array-api:torch")
    if isinstance(backend, Unavailable):
        pytest.skip(backend.reason)
    assert backend.dtypes == ("float16", "bfloat16", "float32", "float64")
    for target in runs(["glossary", "pos_inf", "nan", "empty", "neg_inf_mask", "random_n1k_s10", "axis1_3d",
                        "long_equal_n65k"], backend.dtypes):
        record = accuracy.run(target, backend, Settings())
        assert record["status"] == "pass", (target, record["message"])
