"""The online-softmax model (tests/online_softmax.py) itself: the correct class against a plain float64
reference, its masked and fully masked rows, and each planted bug shown on an input that exposes it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.online_softmax import (
    MaxBeforeMask,
    NanGradientUnderMask,
    OnlineSoftmax,
    RunningMaxFromZero,
    ScaleInBfloat16,
    online_rows,
)

# A few float32 roundings (2^-24 each) per op, a few more through the tile rescalings and the pairwise
# sums; 1e-5 is about 170 of them, far below what any planted bug moves.
RTOL = 1e-5
# Below this, float32's subnormals have lost the relative precision that RTOL asks for.
TINY = 1e-30
EPS32 = float(np.finfo(np.float32).eps)
ATTENTION_SCALE = 1 / math.sqrt(96)
FORWARD = ("softmax", "log_softmax", "logsumexp")
VJPS = ("softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")
PLANTED = (RunningMaxFromZero, MaxBeforeMask, ScaleInBfloat16, NanGradientUnderMask)


def reference(x: np.ndarray, g: np.ndarray | None, g_row: np.ndarray | None, axis: int,
              scale: float | None, mask: np.ndarray | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every op in float64, the plain way (mask first, then the max-shifted formulas over whole rows),
    each with the elementwise size of the terms it adds or subtracts: what its rounding error scales with."""
    s = 1.0 if scale is None else scale
    keep = np.ones(x.shape, bool) if mask is None else np.broadcast_to(mask, x.shape)
    keep = np.moveaxis(keep, axis, -1)
    with np.errstate(all="ignore"):
        z = np.where(keep, s * np.moveaxis(x.astype(np.float64), axis, -1), -np.inf)
        m = np.max(z, axis=-1, keepdims=True, initial=-np.inf)
        empty = m == -np.inf
        shift = np.where(empty, 0.0, m)
        e = np.exp(z - shift)
        total = np.sum(e, axis=-1, keepdims=True)
        live = keep & ~empty
        y = np.where(live, e / total, 0.0)
        log_y = np.where(live, z - shift - np.log(total), -np.inf)
        lse = np.where(empty, -np.inf, shift + np.log(total))[..., 0]
        # log_softmax and logsumexp subtract or add logits of size |z|: their error is an ULP of that,
        # which a relative tolerance on a result near 0 cannot bound.
        big = np.max(np.where(live, np.abs(z), 0.0), axis=-1, keepdims=True, initial=0.0)
        out = {"softmax": (y, y), "log_softmax": (log_y, np.maximum(np.abs(log_y), big)),
               "logsumexp": (lse, np.maximum(np.abs(lse), big[..., 0]))}
        if g is not None:
            gm = np.where(keep, np.moveaxis(g.astype(np.float64), axis, -1), 0.0)
            dot = np.sum(gm * y, axis=-1, keepdims=True)
            total = np.sum(gm, axis=-1, keepdims=True)
            out["softmax_vjp"] = (s * y * (gm - dot), s * y * (np.abs(gm) + np.abs(dot)))
            out["log_softmax_vjp"] = (np.where(keep, s * (gm - y * total), 0.0),
                                      np.where(keep, s * (np.abs(gm) + y * np.abs(total)), 0.0))
            lse_vjp = s * g_row.astype(np.float64)[..., None] * y
            out["logsumexp_vjp"] = (lse_vjp, lse_vjp)
    return {op: (value if op == "logsumexp" else np.moveaxis(value, -1, axis),
                 size if op == "logsumexp" else np.moveaxis(size, -1, axis))
            for op, (value, size) in out.items()}


def run(model: OnlineSoftmax, op: str, x: np.ndarray, g: np.ndarray, g_row: np.ndarray, axis: int,
        scale: float | None, mask: np.ndarray | None) -> np.ndarray:
    if op in FORWARD:
        return getattr(model, op)(x, axis, scale=scale, mask=mask)
    return getattr(model, op)(x, g_row if op == "logsumexp_vjp" else g, axis, scale=scale, mask=mask)


def assert_close(actual: np.ndarray, expected: np.ndarray, size: np.ndarray) -> None:
    """Non-finite values in the same places, finite ones within RTOL of the size of their terms."""
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    error = np.abs(actual[finite].astype(np.float64) - expected[finite])
    bound = RTOL * np.abs(size[finite]) + TINY
    assert np.all(error <= bound), f"worst error/bound {np.max(error / bound)}"


def inputs(n: int, axis: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, g (x's shape), g_row (x's shape without axis) and a random mask, the softmax axis of length n."""
    rng = np.random.default_rng(seed)
    shape = (n, 3, 2) if axis == 0 else (3, 2, n)
    row_shape = (3, 2)
    x = rng.normal(0.0, 4.0, shape).astype(np.float32)
    mask = rng.random(shape) < 0.7
    return (x, rng.normal(size=shape).astype(np.float32), rng.normal(size=row_shape).astype(np.float32),
            mask)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("scale", [None, 1.0, ATTENTION_SCALE])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("masked", [False, True])
def test_agrees_with_float64_reference(n: int, scale: float | None, axis: int, masked: bool) -> None:
    x, g, g_row, mask = inputs(n, axis, seed=n)
    mask = mask if masked else None
    expected = reference(x, g, g_row, axis, scale, mask)
    model = OnlineSoftmax()
    for op in (*FORWARD, *VJPS):
        assert_close(run(model, op, x, g, g_row, axis, scale, mask), *expected[op])


@pytest.mark.parametrize("axis", [-1, 0])
def test_mask_broadcasts(axis: int) -> None:
    # One mask for every row (a padding mask over keys): the same as the mask broadcast by hand.
    x, g, g_row, _ = inputs(65, axis, seed=4)
    n_axis_shape = [1, 1, 1]
    n_axis_shape[axis] = 65
    mask = (np.arange(65) % 3 != 1).reshape(n_axis_shape)
    full = np.broadcast_to(mask, x.shape).copy()
    model = OnlineSoftmax()
    expected = reference(x, g, g_row, axis, ATTENTION_SCALE, full)
    for op in (*FORWARD, *VJPS):
        actual = run(model, op, x, g, g_row, axis, ATTENTION_SCALE, mask)
        np.testing.assert_array_equal(actual, run(model, op, x, g, g_row, axis, ATTENTION_SCALE, full))
        assert_close(actual, *expected[op])


def test_tiles_do_not_change_the_answer_beyond_rounding() -> None:
    # One tile, tiles of one column and the default all compute the same row sum in different orders:
    # they differ by roundings only.
    z = np.random.default_rng(1).normal(0.0, 5.0, (4, 200)).astype(np.float32)
    whole = online_rows(z, None, 200)
    for tile in (1, 7, 64):
        parts = online_rows(z, None, tile)
        np.testing.assert_allclose(parts.softmax, whole.softmax, rtol=RTOL)
        np.testing.assert_allclose(parts.logsumexp, whole.logsumexp, rtol=RTOL)


POISON = (np.nan, np.inf, -np.inf, np.float32(1e38))


@pytest.mark.parametrize("n", [10, 65, 200])
@pytest.mark.parametrize("scale", [None, ATTENTION_SCALE, 4.0])
def test_masked_values_do_not_matter(n: int, scale: float | None) -> None:
    x, g, g_row, mask = inputs(n, -1, seed=7 + n)
    # At least one kept entry per row, and every poison under the mask in every row, in every tile.
    mask[..., 0] = True
    mask[..., 1:5] = False
    poisoned = x.copy()
    poisoned[..., 1:5] = POISON
    poisoned[..., -4:][~mask[..., -4:]] = np.nan
    clean = np.where(mask, x, np.float32(0))
    model = OnlineSoftmax()
    for op in (*FORWARD, *VJPS):
        dirty = run(model, op, poisoned, g, g_row, -1, scale, mask)
        # The same answer bit for bit as with zeros there: the kernel masks before it looks.
        np.testing.assert_array_equal(dirty, run(model, op, clean, g, g_row, -1, scale, mask))
        if op == "logsumexp":
            assert np.all(np.isfinite(dirty))
        elif op == "log_softmax":
            assert np.all(dirty[~mask] == -np.inf) and np.all(np.isfinite(dirty[mask]))
        else:
            # 0 exactly, +0 or -0, and no NaN anywhere in the row.
            assert np.all(dirty[~mask] == 0) and np.all(np.isfinite(dirty))
    # With scale 4, 1e38 * 4 overflows float32 to inf under the mask: still invisible.
    assert_close(model.softmax(poisoned, -1, scale=scale, mask=mask),
                 *reference(clean, None, None, -1, scale, mask)["softmax"])


@pytest.mark.parametrize("n", [5, 64, 130])
def test_fully_masked_row_gives_the_zero_convention(n: int) -> None:
    x, g, g_row, mask = inputs(n, -1, seed=3)
    mask[0, 0] = False
    x[0, 0, :4] = POISON
    mask[0, 1] = True
    model = OnlineSoftmax()
    # No kept entry: softmax 0 and log_softmax -inf everywhere, and logsumexp -inf, the log of an
    # empty sum (FlashAttention and torch's SDPA); the gradients of constants are 0.
    assert np.all(model.softmax(x, -1, mask=mask)[0, 0] == 0)
    assert np.all(model.log_softmax(x, -1, mask=mask)[0, 0] == -np.inf)
    assert model.logsumexp(x, -1, mask=mask)[0, 0] == -np.inf
    for op in VJPS:
        assert np.all(run(model, op, x, g, g_row, -1, None, mask)[0, 0] == 0)
    # A row beside it, fully kept, is untouched.
    softmax = model.softmax(x, -1, mask=mask)
    assert_close(softmax[0, 1], *(part[0, 1] for part in reference(x, None, None, -1, None, mask)["softmax"]))


@pytest.mark.parametrize("planted", PLANTED)
def test_planted_bugs_hide_on_ordinary_input(planted: type[OnlineSoftmax]) -> None:
    # Logits near 0 (the max of every row is above 0), finite values under the mask and no scale: none
    # of the triggers, so each planted bug must agree here and be found only by the inputs below.
    x, g, g_row, mask = inputs(130, -1, seed=11)
    mask[..., 0] = True
    x[..., 0] = 1.0
    x = np.clip(x, -8, 8)
    expected = reference(x, g, g_row, -1, None, mask)
    for op in (*FORWARD, *VJPS):
        assert_close(run(planted(), op, x, g, g_row, -1, None, mask), *expected[op])


def test_running_max_from_zero_underflows_on_very_negative_rows() -> None:
    # Logits all near -200: a max started at 0 stays 0, and exp(-200) underflows to 0 in float32
    # (below e^-103.3, float32's smallest subnormal), so l = 0 and softmax = 0 / 0 = NaN; logsumexp is
    # 0 + log(0) = -inf where the truth is about -200 + log(100) = -195.4.
    rng = np.random.default_rng(5)
    x = (-200 + rng.uniform(-1, 1, (2, 100))).astype(np.float32)
    expected = reference(x, None, None, -1, None, None)
    assert_close(OnlineSoftmax().softmax(x, -1), *expected["softmax"])
    assert_close(OnlineSoftmax().logsumexp(x, -1), *expected["logsumexp"])
    assert np.all(np.isnan(RunningMaxFromZero().softmax(x, -1)))
    assert np.all(RunningMaxFromZero().logsumexp(x, -1) == -np.inf)


@pytest.mark.parametrize("hidden", [np.float32(1e38), np.inf])
def test_max_before_mask_lets_a_masked_value_set_the_shift(hidden: float) -> None:
    # A masked 1e38 in the second tile becomes the running max: every kept exp(z - 1e38) is 0, so l = 0
    # and softmax = 0 / 0 = NaN. A masked +inf does the same, and its rescale exp(inf - inf) is NaN too.
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 100)).astype(np.float32)
    mask = np.ones(x.shape, bool)
    mask[:, 80] = False
    x[:, 80] = hidden
    expected = reference(x, None, None, -1, None, mask)
    assert_close(OnlineSoftmax().softmax(x, -1, mask=mask), *expected["softmax"])
    assert np.all(np.isnan(MaxBeforeMask().softmax(x, -1, mask=mask)[mask]))


def test_bfloat16_scale_moves_large_logits() -> None:
    # 1/sqrt(96) = 0x1.a20bd8p-4 in float32 rounds to 0x1.a2p-4 in bfloat16 (8 significant bits), a
    # relative error of 1.107e-4 (2^-9 is only the bound). Each softmax entry moves relatively by that
    # times its logit's gap to the softmax-weighted mean logit; with scaled logits spread over [0, 30.6]
    # the mean sits 0.85 below the top, the bottom entry 29.8 below it: 29.8 * 1.107e-4 = 3.3e-3, over
    # 300 times RTOL. logsumexp = 31.9, of which the top logit's 30.6 moves by 1.107e-4 and the log of
    # the sum (1.3) hardly: 1.03e-4 of it.
    x = np.linspace(0, 300, 100, dtype=np.float32)[None]
    expected = reference(x, None, None, -1, ATTENTION_SCALE, None)
    assert_close(OnlineSoftmax().softmax(x, -1, scale=ATTENTION_SCALE), *expected["softmax"])
    assert_close(OnlineSoftmax().logsumexp(x, -1, scale=ATTENTION_SCALE), *expected["logsumexp"])
    bug = ScaleInBfloat16().softmax(x, -1, scale=ATTENTION_SCALE)
    assert np.max(np.abs(bug / expected["softmax"][0] - 1)) > 2.5e-3
    lse = ScaleInBfloat16().logsumexp(x, -1, scale=ATTENTION_SCALE)
    assert np.max(np.abs(lse / expected["logsumexp"][0] - 1)) > 5e-5


def test_nan_gradient_under_mask() -> None:
    # A masked NaN: the forward masks first and is right, but the backward's exp(z - m) / l over the
    # unmasked logits is NaN there, and multiplying by the mask keeps it (0 * NaN = NaN); in softmax_vjp
    # the NaN also enters the row's sum(g * y) and spreads to every entry of the row.
    x, g, g_row, mask = inputs(100, -1, seed=9)
    mask[..., 0] = True
    mask[..., 50] = False
    x[..., 50] = np.nan
    bug, right = NanGradientUnderMask(), OnlineSoftmax()
    for op in FORWARD:
        np.testing.assert_array_equal(run(bug, op, x, g, g_row, -1, None, mask),
                                      run(right, op, x, g, g_row, -1, None, mask))
    for op in VJPS:
        assert np.all(run(right, op, x, g, g_row, -1, None, mask)[..., 50] == 0)
        assert np.all(np.isnan(run(bug, op, x, g, g_row, -1, None, mask)[..., 50]))
    assert np.all(np.isnan(bug.softmax_vjp(x, g, -1, mask=mask)))
