"""Attention's forms of the ops (scale, mask, fully masked rows): the exact oracle of scale * x over a
mask, the product's rounding in the budget, and self-tests that the planted online-softmax bugs of
fused kernels (tests/online_softmax.py) are each caught by the catalogue's attention cases."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest

from softmax_suite.formats import format_of
from softmax_suite.oracle import fastpath, scaled
from softmax_suite.oracle.budget import budget_ulp
from softmax_suite.oracle.exact import forward_references
from softmax_suite.runner.api import check
from softmax_suite.suites.cases import CASES
from tests import online_softmax

REPO = Path(__file__).resolve().parents[1]
ATTENTION_CASES = "attention_*,online_*"
D96 = float(np.float32(1 / math.sqrt(96)))  # the scale a float32 framework multiplies by


def exact_softmax(row: np.ndarray, keep: np.ndarray, scale: float) -> list[float]:
    """softmax(scale * row) over the kept entries at 300 bits, 0 where masked."""
    with mpmath.workprec(300):
        logits = [mpmath.mpf(float(v)) * mpmath.mpf(scale) for v, k in zip(row, keep, strict=True) if k]
        top = max(logits)
        total = mpmath.fsum(mpmath.exp(z - top) for z in logits)
        return [float(mpmath.exp(mpmath.mpf(float(v)) * scale - top) / total) if k else 0.0
                for v, k in zip(row, keep, strict=True)]


def test_the_oracle_rounds_the_exact_masked_and_scaled_softmax() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(scale=3.0, size=(3, 200)).astype(np.float32)
    keep = rng.random(x.shape) < 0.7
    # Masked entries hold what a kernel must ignore: they do not reach the oracle at all.
    x[~keep] = np.resize(np.array([np.nan, np.inf, -np.inf, 3e38], np.float32), int((~keep).sum()))
    softmax = scaled.references(False, x, -1, None, D96, keep)["softmax"]
    for row in range(3):
        # Correctly rounded: float32 of the 300-bit value, bit for bit.
        expected = np.array(exact_softmax(x[row], keep[row], D96), dtype=np.float32)
        assert np.array_equal(softmax.rounded[row], expected)
    assert softmax.certificate["mpmath"] == 0  # the fast path decided every row


def test_the_vjps_oracle_takes_the_scale_into_the_cotangent() -> None:
    # s J(z)^T g = J(z)^T (s g): the VJP of the scaled op is the plain VJP at z = s x of s g.
    rng = np.random.default_rng(8)
    x = rng.normal(scale=3.0, size=(2, 64)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    g_row = rng.normal(size=2).astype(np.float32)
    keep = np.ones(x.shape, dtype=bool)
    keep[:, :5] = False
    found = scaled.references(True, x, -1, (g, g_row), D96, keep)
    y = [exact_softmax(x[r], keep[r], D96) for r in range(2)]
    for r in range(2):
        kept_g = np.where(keep[r], g[r].astype(np.float64), 0.0)
        inner = float(np.dot(kept_g, y[r]))
        expected = [D96 * y_j * (g_j - inner) for y_j, g_j in zip(y[r], kept_g, strict=True)]
        # 1 float32 ULP: the float64 sum here is not exact, the oracle's value is correctly rounded.
        np.testing.assert_allclose(found["softmax_vjp"].rounded[r], expected, rtol=2.0**-23, atol=1e-30)
        assert not found["softmax_vjp"].rounded[r][:5].any()  # exactly 0 where masked


def test_a_scale_the_oracle_cannot_multiply_exactly_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"scale 0.1 has 52 significant bits; with float32 inputs the "
                                         r"exact oracle takes at most 29 \(round the scale into float32"):
        scaled.check_scale(0.1, format_of("float32"))
    with pytest.raises(ValueError, match="use a positive finite number"):
        scaled.check_scale(-0.5, format_of("float32"))
    scaled.check_scale(0.125, format_of("float64"))  # a power of two: exact in every format


def test_the_products_rounding_widens_each_softmax_budget_by_u_p_j() -> None:
    # The same logits and scale with and without the product's term: softmax_j's budget grows by
    # [expm1(u (G_j + P_j)) - expm1(u G_j)] |y_j| / ulp(y_j) ULP (c_exp = 1; G_j = |z_j - a| + W, the
    # terms it had; about u P_j for small ones), P_j = (1 - y_j)|z_j| + sum_{k != j} y_k |z_k|.
    x = np.array([[40.0, 0.0, -1.0, 1.0], [30000.0, 0.0, -1.0, 1.0]], dtype=np.float32)
    z = x.astype(np.float64) * D96
    with fastpath.inputs_of(24 + scaled.significant_bits(D96)):
        without = forward_references(z, -1, format_of("float32"))
    with_term = scaled.with_product_rounding(without, z, -1)
    grown = budget_ulp(with_term["softmax"]) - budget_ulp(without["softmax"])
    y = without["softmax"].rounded.astype(np.float64)
    p = (1 - y) * np.abs(z) + (np.sum(y * np.abs(z), axis=1, keepdims=True) - y * np.abs(z))
    ulp = np.ldexp(1.0, np.frexp(y)[1] - 24)
    u = 2.0**-24
    had = without["softmax"].terms["gap"] + without["softmax"].terms["weighted_gap"]
    # (rtol: the budget takes |v| unrounded, this test the rounded y.)
    np.testing.assert_allclose(grown[0], (np.expm1(u * (had + p)) - np.expm1(u * had))[0] * y[0] / ulp[0],
                               rtol=1e-7)
    # Row 0: y_0 ~ 0.95 gains ~0.19 ULP; y_1 ~ 0.016 (z = 0) gains ~2 ULP from the argmax's 4.08.
    assert grown[0, 0] < 0.25 and 1.5 < grown[0, 1] < 2.5
    # Row 1: the argmax of 3060 takes every share; its own rounding moves all logits alike, so its
    # budget does not grow at all (the others underflow to 0 either way).
    assert grown[1, 0] == 0


def test_a_products_rounding_of_nats_is_budgeted_as_exp_moves_it() -> None:
    # bfloat16 [-1456, -1544] at scale 1/sqrt(32) (0.1767578125 in bfloat16): the products -257.4 and
    # -272.9 round with errors of up to 0.5 and 1 (u = 2^-8), so a correct softmax's second entry,
    # e^-15.6 = 1.76e-7, may come back e^(+-1.5) times it: torch gives 8.31e-7 (4.7x, 703 ULP). The
    # first-order u P_j (P_1 = 530: 2.07) would allow 3.07x; exp's e^2.07 - 1 = 6.9 allows it.
    torch = pytest.importorskip("torch")
    import ml_dtypes

    scale = float(np.float32(1 / math.sqrt(32)).astype(ml_dtypes.bfloat16))
    x = np.array([[-1456, -1544]], dtype=ml_dtypes.bfloat16)
    softmax = scaled.references(False, x, -1, None, scale, None)["softmax"]
    got = torch.softmax(torch.tensor([[-1456.0, -1544.0]], dtype=torch.bfloat16) * scale, -1)
    got = got.float().numpy()[0, 1]
    ulps = abs(got - float(softmax.rounded[0, 1])) / 2.0**-30  # ulp of 1.76e-7 in bfloat16: 2^-22-8
    assert 600 < ulps < budget_ulp(softmax)[0, 1] < 1500


@pytest.mark.parametrize("planted, case, why", [
    (online_softmax.RunningMaxFromZero, "online_below_sentinel",
     "logits near -2e4: exp(z - 0) underflows to 0, and the row sum with it"),
    (online_softmax.MaxBeforeMask, "attention_causal",
     "the max over the masked entries too is +inf or the format's max: every kept exp is 0 or NaN"),
    (online_softmax.ScaleInBfloat16, "attention_scaled_d96",
     "1/sqrt(96) in bfloat16 is off by 1.1e-4 relative: logits of ~20 move by 2e-3, 2e-3 relative"),
    (online_softmax.NanGradientUnderMask, "attention_causal",
     "a masked NaN reaches the gradient through 0 * NaN"),
])
def test_each_planted_online_softmax_bug_is_caught_by_an_attention_case(planted, case, why) -> None:
    checked = check(planted, cases=case, dtypes="float32", invariants=False)
    assert checked.failures, why
    assert {record["case"] for record in checked.failures} == {case}


def test_the_correct_online_softmax_passes_every_attention_case() -> None:
    # What attention kernels compute: P = softmax and its VJP, and the row's logsumexp (saved for the
    # backward). The model's log_softmax, z - m - log(l), loses log1p's tail on a dominant row
    # (-3.5e-28 comes out 0), which the budget rejects as for any log(sum) implementation.
    checked = check(online_softmax.OnlineSoftmax, cases=ATTENTION_CASES, dtypes="float32", invariants=False,
                    ops="softmax,softmax_vjp,logsumexp,logsumexp_vjp")
    assert checked.passed, checked.summary()
    fully = [r for r in checked.records if r["case"] == "attention_fully_masked" and r["op"] == "softmax"]
    assert fully[0]["fully_masked"] == "zero" and fully[0]["mask"]["fully_masked_rows"] == 2


class UniformRows(online_softmax.OnlineSoftmax):
    """Declares "zero" but gives a fully masked row 1/n everywhere: neither convention."""

    name = "uniform-rows"

    def softmax(self, x, axis, *, scale=None, mask=None):
        y = super().softmax(x, axis, scale=scale, mask=mask)
        rows = ~np.broadcast_to(mask, x.shape).any(axis=axis, keepdims=True)
        return np.where(rows, np.float32(1 / x.shape[axis]), y)


class DeclaresNan(online_softmax.OnlineSoftmax):
    """Gives zeros on a fully masked row but declares the IEEE convention."""

    name = "declares-nan"
    fully_masked = "nan"


@pytest.mark.parametrize("backend", [UniformRows, DeclaresNan])
def test_a_fully_masked_row_against_its_declaration(backend) -> None:
    checked = check(backend, cases="attention_fully_masked", ops="softmax", dtypes="float32",
                    invariants=False)
    (record,) = checked.records
    # 1/n where 0 is expected is an accuracy failure; 0 where NaN is, a semantic one.
    assert record["status"] == "fail" and record["failure"] in ("accuracy", "semantic"), record["message"]
    assert record["special_values"]["input"] == "fully masked row"


def test_a_backend_without_options_is_not_asked_attention_cases_and_says_why() -> None:
    def softmax(x, axis):
        return online_softmax.OnlineSoftmax().softmax(x, axis)

    checked = check(softmax, cases="attention_causal,glossary", dtypes="float32", invariants=False)
    assert {record["case"] for record in checked.records} == {"glossary"}
    options = [entry for entry in checked.capabilities if "option" in entry]
    assert {entry["option"] for entry in options} == {"scale", "mask"}
    assert "takes no scale" in options[0]["reason"] or "takes no mask" in options[0]["reason"]


def test_jax_jit_fma_of_a_scaled_row_is_a_known_deviation_not_a_pass() -> None:
    pytest.importorskip("jax")
    checked = check("jax", cases="attention_large_products", ops="softmax,log_softmax", dtypes="float32",
                    invariants=False)
    statuses = {record["op"]: record["status"] for record in checked.records}
    # Without the entry these fail: NaN softmax and a positive log-probability (known_deviations.toml).
    assert statuses == {"softmax": "known_failure", "log_softmax": "known_failure"}
    assert all(record["failure"] == "semantic" for record in checked.records)


def test_every_attention_case_names_its_options() -> None:
    attention = [CASES[name] for name in CASES if "attention" in CASES[name].tags]
    assert {case.name for case in attention if "mask" in case.options} >= {
        "attention_causal", "attention_fully_masked", "online_first_tile_masked", "online_tile_aligned",
        "online_last_tile_one", "online_below_sentinel", "online_long_one_kept"}
    # A non-power-of-two scale only where the products are exact in float64 (oracle.scaled).
    for case in attention:
        if case.scale is not None and scaled.significant_bits(case.scale) > 1:
            assert "float64" not in case.dtypes, case.name


@pytest.mark.parametrize("case, op", [("attention_causal", "softmax_vjp"),  # embedded: x, g and the mask
                                      ("online_long_one_kept", "log_softmax_vjp")])  # rebuilt: 65536 columns
def test_a_reproducer_passes_the_scale_and_mask_and_judges_like_the_run(tmp_path, case, op) -> None:
    checked = check(online_softmax.NanGradientUnderMask, cases=case, ops=op, dtypes="float32",
                    cotangents="random", invariants=False)
    (record,) = checked.failures
    script = checked.reproducer(record)
    assert ("MASK_BITS" in script) == (case == "attention_causal")
    paths = [str(REPO), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    for backend, expected in (("NanGradientUnderMask", 1), ("OnlineSoftmax", 0)):
        path = tmp_path / f"{backend}.py"
        path.write_text(script.replace("online_softmax:NanGradientUnderMask", f"online_softmax:{backend}"))
        done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=300)
        assert done.returncode == expected, done.stdout[-2000:] + done.stderr[-2000:]


class ShortRows(online_softmax.OnlineSoftmax):
    """A kernel whose head dimension is at most 64, through an embedding that needs finite entries."""

    name = "short-rows"
    max_length = 64
    finite_only = True


def test_a_kernel_is_asked_only_rows_it_takes_and_the_capabilities_say_so() -> None:
    checked = check(ShortRows, cases="attention_causal,attention_scaled_d64,glossary,pos_inf",
                    dtypes="float32", ops="softmax", invariants=False)
    # attention_causal's rows are 64 long (its masked inf and NaN do not count), attention_scaled_d64's
    # 128; pos_inf keeps +inf entries.
    assert {record["case"] for record in checked.records} == {"attention_causal", "glossary"}
    (entry,) = [entry for entry in checked.capabilities if entry.get("option") == "length"]
    assert entry["reason"] == ("short-rows takes rows of at most 64 entries: the cases with longer rows are "
                               "not asked")
    # The verdict's "not run" line, one phrase per backend: its limits, short.
    assert "not run: short-rows: rows over 64; cases with inf or NaN" in " ".join(checked.summary().split())


class FiveOnFullyMaskedRows(online_softmax.OnlineSoftmax):
    """Right everywhere but on rows with nothing kept, where every output is 5."""

    name = "five"

    def _planted(self, y, x, axis, mask):
        rows = ~np.broadcast_to(mask, x.shape).any(axis=axis, keepdims=True)
        return np.where(rows, np.float32(5), y)

    def softmax(self, x, axis, *, scale=None, mask=None):
        return self._planted(super().softmax(x, axis, scale=scale, mask=mask), x, axis, mask)

    def softmax_vjp(self, x, g, axis, *, scale=None, mask=None):
        return self._planted(super().softmax_vjp(x, g, axis, scale=scale, mask=mask), x, axis, mask)


@pytest.mark.parametrize("op", ["softmax", "softmax_vjp"])
def test_a_wrong_value_on_a_fully_masked_row_fails(op) -> None:
    # The oracle's row is 0/0 (NaN terms); the convention's exact 0 must come with a finite budget,
    # or any value would pass there (a NaN ratio is no failure).
    checked = check(FiveOnFullyMaskedRows, cases="attention_fully_masked", ops=op, dtypes="float32",
                    cotangents="random", invariants=False)
    (record,) = checked.records
    assert record["status"] == "fail" and record["metrics"]["worst"]["got"] == 5.0, record["message"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_exp_errors_past_any_value_stay_finite_budgets(dtype) -> None:
    # huge_range holds gaps of up to 2 max: exp's argument error there is ~1e31 nats in float32, and
    # e^t - 1 of it is inf, which times the exact value's vanishing ULP count made the budget NaN
    # (a NaN budget fails every invariant that sums budgets). Capped, the budget is the underflow's.
    from softmax_suite.oracle import cache
    from softmax_suite.suites.accuracy import case_input

    for op in ("softmax", "log_softmax", "logsumexp"):
        budgets = budget_ulp(cache.reference(op, case_input("huge_range", dtype), -1))
        assert not np.isnan(budgets).any(), op


def test_a_direct_call_past_a_kernels_limits_is_unsupported_with_why() -> None:
    # accuracy.run outside the runner (a user's own loop): the same answers as the capabilities give.
    from softmax_suite.backends.registry import load
    from softmax_suite.runner.config import Settings
    from softmax_suite.suites.accuracy import Target, run

    backend = load("tests.test_attention:ShortRows")
    for case, why in (("attention_scaled_d64", "takes rows of at most 64 entries"),
                      ("pos_inf", "takes only finite kept entries")):
        record = run(Target("softmax", "short-rows", "cpu", "float32", case), backend, Settings())
        assert record["status"] == "unsupported" and why in record["message"], record
