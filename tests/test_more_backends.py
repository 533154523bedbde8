"""The onnxruntime, mlx, tensorflow, cupy and triton adapters: each is skipped with its load() reason
where it cannot run; where it runs, cases go through the real path (softmax_suite.suites.accuracy.run)."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from softmax_suite.backends import cupy_backend, triton_backend
from softmax_suite.backends.registry import Unavailable, load
from softmax_suite.protocol import ATTENTION_OPTIONS, LOSS_OPTIONS, Backend, BackendUnavailable
from softmax_suite.runner.config import DEFAULT_DEVIATIONS, Settings
from softmax_suite.suites.accuracy import Target, case_input, run
from softmax_suite.suites.deviations import load_deviations

REPO = Path(__file__).resolve().parents[1]
DEVIATIONS = load_deviations(DEFAULT_DEVIATIONS)
FORWARD = ("softmax", "log_softmax", "logsumexp")
UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@functools.cache
def loaded(name: str) -> Backend | Unavailable:
    return load(name)


def backend(name: str) -> Backend:
    """The loaded backend, or a skip that carries load()'s reason."""
    found = loaded(name)
    if isinstance(found, Unavailable):
        pytest.skip(found.reason)
    return found


def ask(name: str, op: str, dtype: str, case: str, cotangent: str | None = None) -> dict:
    """One result record, judged with the project's known deviations, as a run writes it."""
    chosen = backend(name)
    return run(Target(op, name, chosen.devices[0], dtype, case, cotangent), chosen, Settings(), DEVIATIONS)


def every_pattern(dtype: str) -> np.ndarray:
    """Every 16-bit pattern of dtype (NaN payloads, subnormals, -0.0, infinities), or 4096 random
    patterns of a wider one."""
    numpy_dtype = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    unsigned = UNSIGNED[numpy_dtype.itemsize]
    if numpy_dtype.itemsize == 2:
        bits = np.arange(2**16, dtype=unsigned)
    else:
        bits = np.random.default_rng(7).integers(0, np.iinfo(unsigned).max, 4096, dtype=unsigned,
                                                 endpoint=True)
    return bits.view(numpy_dtype).reshape(64, -1)


def assert_bits_cross_exactly(chosen: Backend, dtype: str) -> None:
    x = every_pattern(dtype)
    back = np.asarray(chosen.to_numpy(chosen.to_device(x, chosen.devices[0])))
    unsigned = UNSIGNED[x.dtype.itemsize]
    assert back.dtype == x.dtype
    assert np.array_equal(back.view(unsigned), x.view(unsigned))


# onnxruntime ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("op", FORWARD)
def test_onnxruntime_forward_ops_pass_on_the_worked_example(op: str, dtype: str) -> None:
    result = ask("onnxruntime", op, dtype, "glossary")
    assert result["status"] == "pass", result["message"]
    # Measured: float16 is computed in float32 and rounded once, so it is correctly rounded (at most
    # 0.4996 ULP here); float32 at most 0.79 ULP, float64 at most 2.29 (softmax), all budgets above 2.2.
    assert result["metrics"]["max_ulp"] <= {"float16": 0.5, "float32": 0.8, "float64": 2.3}[dtype]


def test_onnxruntime_reports_its_missing_kernels_and_gradients() -> None:
    # No bfloat16 kernel in ORT's CPU provider: measured at load by building the session, and the
    # reason is ORT's own message. The VJPs are absent: ONNX graphs here have no gradient.
    bfloat16 = ask("onnxruntime", "softmax", "bfloat16", "glossary")
    assert bfloat16["status"] == "unsupported"
    assert "cannot run Softmax on bfloat16" in bfloat16["message"]
    assert "NOT_IMPLEMENTED" in bfloat16["message"]
    vjp = ask("onnxruntime", "softmax_vjp", "float32", "glossary", "random")
    assert (vjp["status"], vjp["message"]) == ("unsupported", "onnxruntime has no softmax_vjp")


def test_onnxruntime_reads_a_transposed_input_in_its_own_order() -> None:
    chosen = backend("onnxruntime")
    x = case_input("transposed", "float32")  # (16, 300) in Fortran order
    placed = chosen.to_device(x, "cpu")
    assert placed.flags.c_contiguous and np.array_equal(placed, x)
    result = ask("onnxruntime", "softmax", "float32", "transposed")
    # 23.4 ULP measured where the budget at the worst element allows 49.3 (rows of 300, scale 10).
    assert result["status"] == "pass", result["message"]


def test_onnxruntime_log_softmax_deviation_is_known() -> None:
    # (x - max) - log(sum): on dominant_gap_above float64 the dominant entry, exactly -2.13e-16,
    # comes back as 0, 8.6e15 ULP off: a known deviation, not a pass and not an unexplained fail.
    result = ask("onnxruntime", "log_softmax", "float64", "dominant_gap_above")
    assert result["status"] == "known_failure"
    assert result["metrics"]["max_ulp"] > 1e15


# mlx --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_mlx_passes_the_exact_bits(dtype: str) -> None:
    assert_bits_cross_exactly(backend("mlx"), dtype)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("op", [*FORWARD, *(f"{op}_vjp" for op in FORWARD)])
def test_mlx_ops_pass_on_the_worked_example(op: str, dtype: str) -> None:
    result = ask("mlx", op, dtype, "glossary", "random" if op.endswith("_vjp") else None)
    assert result["status"] == "pass", result["message"]
    # Measured at most 1.27 ULP (bfloat16 softmax) and 1.13 (float32 logsumexp VJP); budgets >= 2.2.
    assert result["metrics"]["max_ulp"] < 1.3


def test_mlx_float64_is_computed_with_a_float32_exp() -> None:
    # mlx's CPU exp of a float64 is float32's exp widened: log_softmax of [1.5, 2.2, -0.3, 0.8] errs
    # by 9.25e7 ULP of float64 (a relative 1e-8), which the known deviations record.
    result = ask("mlx", "log_softmax", "float64", "glossary")
    assert result["status"] == "known_failure"
    assert 1e7 < result["metrics"]["max_ulp"] < 1e9
    assert "float64 exp in float32" in result["known_deviation"]["reason"]


def test_mlx_rows_of_one_entry_do_not_crash_the_run() -> None:
    # mlx.nn.log_softmax (compiled, shapeless) kills the process with SIGSEGV on rows of length 1 in
    # mlx 0.32.4; the adapter runs the same formula uncompiled, so 512 single-entry rows give 0.
    result = ask("mlx", "log_softmax", "float32", "single_element")
    assert result["status"] == "pass", result["message"]


def test_mlx_empty_rows_raise_a_known_error() -> None:
    result = ask("mlx", "logsumexp", "float32", "empty")
    assert result["status"] == "known_failure"
    assert "[logsumexp] Received empty array." in result["message"]


# tensorflow -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_tensorflow_passes_the_exact_bits(dtype: str) -> None:
    assert_bits_cross_exactly(backend("tensorflow"), dtype)


@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
@pytest.mark.parametrize("op", [*FORWARD, *(f"{op}_vjp" for op in FORWARD)])
def test_tensorflow_ops_pass_on_the_worked_example(op: str, dtype: str) -> None:
    result = ask("tensorflow", op, dtype, "glossary", "random" if op.endswith("_vjp") else None)
    assert result["status"] == "pass", result["message"]
    # Measured with tensorflow-cpu 2.21: at most 3.30 ULP (float64 logsumexp VJP, budget 10.0), and
    # 1.95 in bfloat16; every budget here is at least 2.26 ULP.
    assert result["metrics"]["max_ulp"] < 3.4


def test_tensorflow_onednn_softmax_keeps_nan_to_its_entry() -> None:
    # oneDNN's float32 softmax returns [0, NaN, 0, 0] for [0, NaN, 2, 3]: a known semantic deviation.
    result = ask("tensorflow", "softmax", "float32", "nan")
    if result["status"] == "pass":
        pytest.skip("this TensorFlow runs its Eigen softmax (oneDNN off), which makes NaN rows")
    assert result["status"] == "known_failure" and result["failure"] == "semantic"


# cupy and triton: GPU only -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cupy", "triton"])
def test_gpu_backends_without_a_gpu_say_what_is_missing(name: str) -> None:
    found = loaded(name)
    if isinstance(found, Backend):
        pytest.skip(f"{name} runs here: {', '.join(found.devices)}")
    missing = f"{name} is not installed" in found.reason
    assert missing or "CUDA device" in found.reason, found.reason


def fake_module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def test_cupy_without_a_cuda_device_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    # cupy imports without a GPU; its first runtime call fails. A stand-in cupy whose device count
    # raises what cupy raises on a machine with no driver.
    def no_device() -> int:
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    special = fake_module("cupyx.scipy.special")
    monkeypatch.setitem(sys.modules, "cupy", fake_module("cupy", __version__="0.test", cuda=cuda))
    monkeypatch.setitem(sys.modules, "cupyx", fake_module("cupyx", scipy=fake_module("cupyx.scipy")))
    monkeypatch.setitem(sys.modules, "cupyx.scipy", sys.modules["cupyx"].scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", special)
    with pytest.raises(BackendUnavailable, match=r"cupy 0\.test finds no CUDA device \(RuntimeError: "
                                                 r"cudaErrorInsufficientDriver"):
        cupy_backend.load()


def test_cupy_reports_bfloat16_unsupported_with_why() -> None:
    assert cupy_backend.device_index("cuda") == 0 and cupy_backend.device_index("cuda:3") == 3
    assert "no bfloat16" in cupy_backend.BFLOAT16_REASON


def test_triton_without_a_cuda_device_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    monkeypatch.setattr(triton_backend, "triton", types.SimpleNamespace(__version__="0.test"))
    with pytest.raises(BackendUnavailable, match=r"triton 0\.test needs a CUDA device: "
                                                 r"torch\.cuda\.is_available\(\) is False"):
        triton_backend.load()


INTERPRETED = """
import numpy as np, torch
from softmax_suite.backends import numpy_backend, triton_backend
from softmax_suite.suites.accuracy import case_input
from softmax_suite.suites.cases import CASES
worst = 0.0
for case in ("glossary", "random_n31_s3", "neg_inf_mask", "all_neg_inf", "pos_inf", "nan", "empty",
             "single_element", "axis1_3d", "transposed"):
    for dtype, u in (("float32", 2.0**-24), ("float64", 2.0**-53), ("float16", 2.0**-11)):
        x = case_input(case, dtype)
        for op in ("softmax", "log_softmax", "logsumexp"):
            got = triton_backend.launch(op, torch.from_numpy(x.copy()), CASES[case].axis).numpy()
            ref = getattr(numpy_backend, op)(x, CASES[case].axis)
            assert got.shape == ref.shape and got.dtype == ref.dtype, (case, dtype, op)
            g, r = got.astype(np.float64), ref.astype(np.float64)
            assert np.array_equal(np.isnan(g), np.isnan(r)), (case, dtype, op)
            assert np.array_equal(g[np.isinf(r)], r[np.isinf(r)]), (case, dtype, op)
            finite = np.isfinite(r)
            if finite.any():
                # log_softmax's error is absolute (its form is (x - max) - log(sum)): relative to 1.
                scale = np.maximum(np.abs(r[finite]), 1.0) if op == "log_softmax" else np.abs(r[finite])
                error = np.abs(g[finite] - r[finite]) / np.maximum(scale, np.finfo(x.dtype).tiny)
                worst = max(worst, float(np.max(error)) / u)
print("worst", worst)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernel_is_right_under_the_interpreter() -> None:
    # TRITON_INTERPRET=1 runs the @triton.jit kernel on the CPU (numpy underneath): the same masked
    # loads, max shift and special-value handling as on a GPU, against the numpy backend.
    done = subprocess.run([sys.executable, "-c", INTERPRETED], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TRITON_INTERPRET": "1",
                                            "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    # Both compute in float32 (float64) and round once into the dtype: measured at most 5.3 u apart,
    # well inside the suite's budgets for these rows (above 10 u).
    assert float(done.stdout.split()[-1]) <= 8


def test_torch_compile_is_torch_compiled_and_judged_on_its_own() -> None:
    torch = pytest.importorskip("torch")
    from torch._dynamo.utils import counters

    backend = load("torch-compile")
    assert backend.name == "torch-compile" and backend.options == (*ATTENTION_OPTIONS, *LOSS_OPTIONS)
    before = counters["stats"]["unique_graphs"]
    # The scaled row whose jitted jax softmax is NaN (an FMA of x * c - max): inductor keeps [1, 0].
    record = run(Target("softmax", "torch-compile", "cpu", "float32", "attention_large_products"), backend,
                 Settings(), DEVIATIONS)
    assert record["status"] == "pass", record["message"]
    assert counters["stats"]["unique_graphs"] > before  # dynamo traced and compiled it
    # Its VJP goes through autograd of the compiled forward.
    record = run(Target("softmax_vjp", "torch-compile", "cpu", "float32", "attention_causal", "random"),
                 backend, Settings(), DEVIATIONS)
    assert record["status"] == "pass", record["message"]
    assert torch.__version__ in backend.version
