"""Attention's keyword arguments (scale, mask) in the scipy, array API, mlx, onnxruntime, tensorflow and
cupy adapters (docs/attention.md): each declares them, passes the attention cases through the real path
(softmax_suite.suites.accuracy.run) in the dtypes it takes, returns its declared convention on a fully
masked row, and gives a masked NaN a gradient of exactly 0. An adapter whose library is absent is
skipped with its load() reason; the deviations these tests pin (mlx's where gradient, onnxruntime's
ReduceLogSumExp) are real library behaviour, measured with mlx 0.32.4 and onnxruntime 1.32.0."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from softmax_suite.backends.calls import output_of
from softmax_suite.ops import SOFTMAX_FORWARD_OPS as FORWARD_OPS
from softmax_suite.ops import SOFTMAX_VJP_OPS as VJP_OPS
from softmax_suite.protocol import ATTENTION_OPTIONS, Backend
from softmax_suite.runner.config import DEFAULT_DEVIATIONS, Settings
from softmax_suite.suites.accuracy import Target, run
from softmax_suite.suites.cases import CASES
from softmax_suite.suites.deviations import load_deviations
from tests.test_more_backends import backend

DEVIATIONS = load_deviations(DEFAULT_DEVIATIONS)
# Every adapter given the options here; tensorflow and cupy are skipped where they are not installed.
ADAPTERS = ("scipy", "array_api_strict", "array-api:numpy", "mlx", "onnxruntime", "tensorflow", "cupy")
CASES_ASKED = ("attention_causal", "attention_scaled_d96", "attention_fully_masked")
# attention_fully_masked's rows 1 and 4 keep nothing: 2 rows of 32 entries.
FULLY_MASKED_ENTRIES = 2 * 32


def call(chosen: Backend, op: str, inputs: list[np.ndarray], **options: Any) -> np.ndarray:
    """op of chosen on its first device, through the suite's own call path (the mask by to_device)."""
    return output_of(chosen, op, chosen.devices[0], -1, inputs, options)


def outcome_allowed(name: str, dtype: str, op: str, case: str, record: dict) -> str | None:
    """None when the record is what this adapter measurably gives; else why not."""
    status = record["status"]
    if name == "mlx" and case == "attention_fully_masked" and op.endswith("_vjp"):
        # mx.where's VJP is cond * cotangent (mlx Select::vjp), not a select: the op's VJP is NaN on
        # both fully masked rows (their softmax is NaN), and 0 * NaN = NaN reaches every one of their
        # 64 entries, where the exact gradient is 0. A real mlx deviation (the run reports it).
        nan = record.get("metrics", {}).get("categories", {}).get("nan_unexpected")
        if status in ("fail", "known_failure") and nan == FULLY_MASKED_ENTRIES:
            return None
        return f"expected mlx's where-gradient NaN on {FULLY_MASKED_ENTRIES} entries, got {status} ({nan})"
    if status == "pass":
        return None
    known = record.get("known_deviation", {}).get("reason", "")
    # Deviations of the plain ops that hold for these cases too (known_deviations.toml): scipy sums
    # bfloat16 in bfloat16 and its logsumexp returns float64 for bfloat16; mlx's float64 exp is
    # float32's, widened.
    if status == "known_failure" and name == "scipy" and dtype == "bfloat16":
        return None
    if status == "known_failure" and name == "mlx" and dtype == "float64" and "exp in float32" in known:
        return None
    return f"{status}: {record.get('message', '')}"


@pytest.mark.parametrize("name", ADAPTERS)
def test_the_adapter_declares_the_options_and_the_nan_convention(name: str) -> None:
    chosen = backend(name)
    assert set(ATTENTION_OPTIONS) <= set(chosen.options)
    # Every one composes with -inf and a shifted softmax (or builds that graph): 0/0 on a row with
    # nothing kept, the IEEE convention (measured below where the library runs).
    assert chosen.fully_masked == "nan"


def test_a_user_function_backend_takes_no_options_it_would_not_pass_on() -> None:
    pytest.importorskip("mlx.core")
    from softmax_suite.backends import mlx_backend

    chosen = mlx_backend.load({"softmax": lambda x, axis: x})
    assert (chosen.options, chosen.fully_masked) == ((), "nan")


@pytest.mark.parametrize("case", CASES_ASKED)
@pytest.mark.parametrize("name", ["scipy", "array_api_strict", "array-api:numpy", "mlx", "onnxruntime"])
def test_attention_cases_through_the_real_path(name: str, case: str) -> None:
    chosen = backend(name)
    problems = []
    asked = 0
    for dtype in CASES[case].dtypes:
        for op in (*FORWARD_OPS, *VJP_OPS):
            if chosen.why_unsupported(op, dtype):
                continue
            for cotangent in CASES[case].cotangents if op.endswith("_vjp") else [None]:
                target = Target(op, chosen.name, chosen.devices[0], dtype, case, cotangent)
                record = run(target, chosen, Settings(), DEVIATIONS)
                asked += 1
                problem = outcome_allowed(name, dtype, op, case, record)
                if problem:
                    problems.append(f"{target.id} {op}: {problem}")
                if "mask" in record and record.get("fully_masked_returned"):
                    # What came back on the fully masked rows is what the adapter declares (the VJPs'
                    # rows are 0 under either convention, so only the forward ops are compared).
                    if op in ("softmax", "log_softmax") and record["status"] == "pass":
                        assert record["fully_masked_returned"] == chosen.fully_masked == "nan"
                    if op == "logsumexp" and record["status"] == "pass":
                        assert record["fully_masked_returned"] == "zero"  # -inf, under both
    assert asked, f"{name} was asked nothing of {case}"
    assert not problems, "\n".join(problems)


def masked_rows(dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x, mask): row 0 keeps 1 and 2 with NaN, +inf, -inf and the format's max under its mask; row 1
    keeps nothing."""
    top = float(np.finfo(dtype).max)
    x = np.array([[1.0, 2.0, np.nan, np.inf, -np.inf, top],
                  [np.nan, np.inf, -np.inf, top, 0.5, -1.0]], dtype=dtype)
    mask = np.zeros(x.shape, dtype=bool)
    mask[0, :2] = True
    x.flags.writeable = mask.flags.writeable = False  # as the suite hands them out
    return x, mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["scipy", "array_api_strict", "array-api:numpy", "mlx", "onnxruntime"])
def test_a_fully_masked_row_gives_the_declared_convention(name: str, dtype: Any) -> None:
    chosen = backend(name)
    x, mask = masked_rows(dtype)
    if np.dtype(dtype).name not in chosen.dtypes:
        pytest.skip(f"{name} takes no {np.dtype(dtype).name}")
    softmax = call(chosen, "softmax", [x], scale=0.5, mask=mask)
    log_softmax = call(chosen, "log_softmax", [x], scale=0.5, mask=mask)
    logsumexp = call(chosen, "logsumexp", [x], scale=0.5, mask=mask)
    # "nan": row 1 (nothing kept) is NaN throughout for softmax and log_softmax; logsumexp is -inf.
    assert np.isnan(softmax[1]).all() and np.isnan(log_softmax[1]).all()
    assert logsumexp[1] == -np.inf
    # Row 0 is the softmax of 0.5 * [1, 2] = [0.5, 1]: [1 / (1 + e^0.5), e^0.5 / (1 + e^0.5)], exactly
    # 0 (and -inf) under the mask whatever it holds; logsumexp 1 + log1p(e^-0.5) = 1.474077.
    exact = np.array([1.0, np.exp(0.5)]) / (1.0 + np.exp(0.5))
    np.testing.assert_allclose(softmax[0, :2], exact, rtol=1e-6)
    assert (softmax[0, 2:] == 0).all() and (log_softmax[0, 2:] == -np.inf).all()
    np.testing.assert_allclose(log_softmax[0, :2], np.log(exact), rtol=1e-6)
    np.testing.assert_allclose(logsumexp[0], 1.0 + np.log1p(np.exp(-0.5)), rtol=1e-6)


@pytest.mark.parametrize("op", VJP_OPS)
@pytest.mark.parametrize("name", ["array_api_strict", "array-api:numpy", "mlx"])
def test_a_masked_nan_has_a_zero_gradient(name: str, op: str) -> None:
    chosen = backend(name)
    x, mask = masked_rows(np.float32)
    # The cotangent is 0 at masked outputs, as the suite gives it; one per row for logsumexp.
    g = np.array([0.75, 0.0]) if op == "logsumexp_vjp" else np.where(mask, 0.75, 0.0)
    g = g.astype(np.float32)
    dx = call(chosen, op, [x, g], scale=0.5, mask=mask)
    # Row 0: NaN, +inf, -inf and max under the mask, 0 gradient there, and a finite one at the kept
    # entries, times the scale (the chain rule): the softmax VJP of a constant cotangent is 0, the
    # log_softmax one 0.5 * (0.75 - 1.5 y), the logsumexp one 0.5 * 0.75 y.
    assert (dx[0, 2:] == 0).all(), dx[0]
    y = np.array([1.0, np.exp(0.5)]) / (1.0 + np.exp(0.5))
    exact = {"softmax_vjp": np.zeros(2), "log_softmax_vjp": 0.5 * (0.75 - 1.5 * y),
             "logsumexp_vjp": 0.5 * 0.75 * y}[op]
    np.testing.assert_allclose(dx[0, :2], exact, rtol=1e-6, atol=1e-7)
    if name == "mlx":
        # Row 1 keeps nothing: its softmax is NaN, so the op's own VJP is NaN there, and mx.where's
        # VJP (cond * cotangent, mlx 0.32.4) turns that into NaN, not 0: the deviation the run reports.
        assert np.isnan(dx[1]).all(), dx[1]
    else:
        assert (dx[1] == 0).all(), dx[1]


def test_mx_where_multiplies_its_cotangent_by_the_condition() -> None:
    """The root of mlx's NaN gradient on fully masked rows, in three lines of mlx: the gradient of
    where(cond, v, -inf) at an unselected entry is 0 * cotangent, NaN for a NaN cotangent, where jax,
    torch (masked_fill) and tensorflow select 0."""
    mx = pytest.importorskip("mlx.core")
    cond = mx.array([True, False])
    v = mx.array([1.0, 2.0])
    _, (dv,) = mx.vjp(lambda a: mx.where(cond, a, float("-inf")), [v], [mx.array([np.nan, np.nan])])
    got = np.array(dv)
    assert np.isnan(got[0]) and np.isnan(got[1])  # the second would be 0 under a select
    _, (dv,) = mx.vjp(lambda a: mx.where(cond, a, float("-inf")), [v], [mx.array([5.0, 7.0])])
    assert np.array(dv).tolist() == [5.0, 0.0]


def test_onnxruntime_logsumexp_starts_its_max_at_0_after_a_leading_inf() -> None:
    """ORT's ReduceAggregatorLogSumExp starts its running max at 0 when a row's first entry is +-inf
    (max_ = isinf(init) ? 0 : init) and skips every entry below it: a masked first entry (-inf) and
    kept entries far below 0 give exp(v - 0) = 0 and log(0) = -inf (onnxruntime 1.32.0)."""
    chosen = backend("onnxruntime")
    # float32: exp(-200) underflows to 0, so [-inf, -200] gives -inf where the exact value is -200;
    # float64 still holds exp(-200) and gives -200; [-200, -inf] (finite first) is right in both.
    assert call(chosen, "logsumexp", [np.array([[-np.inf, -200.0]], np.float32)]).tolist() == [-np.inf]
    assert call(chosen, "logsumexp", [np.array([[-np.inf, -200.0]], np.float64)]).tolist() == [-200.0]
    assert call(chosen, "logsumexp", [np.array([[-200.0, -np.inf]], np.float32)]).tolist() == [-200.0]
    # online_below_sentinel masks its even columns, column 0 first: every row's kept logits (about
    # -2e4, -6e4 and the format's lowest) give -inf in every dtype where the exact values are
    # -19992.5, -59992.6 and -max + log(128) (3 x inf_vs_finite per dtype in the run).
    for dtype in ("float16", "float32", "float64"):
        target = Target("logsumexp", "onnxruntime", "cpu", dtype, "online_below_sentinel")
        record = run(target, chosen, Settings(), DEVIATIONS)
        assert record["status"] in ("fail", "known_failure"), record
        assert record["metrics"]["categories"] == {"inf_vs_finite": 3}
    # Its Softmax and LogSoftmax take the true max: the same case passes for them.
    for op in ("softmax", "log_softmax"):
        record = run(Target(op, "onnxruntime", "cpu", "float32", "online_below_sentinel"), chosen,
                     Settings(), DEVIATIONS)
        assert record["status"] == "pass", record.get("message")
