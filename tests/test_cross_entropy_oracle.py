"""The exact cross-entropy oracle (softmax_suite.oracle.cross_entropy) against an independent 400-bit
evaluation of torch.nn.functional.cross_entropy's definition, its options and special rows."""

from __future__ import annotations

import math

import ml_dtypes
import mpmath
import numpy as np
import pytest

from softmax_suite.oracle.cross_entropy import cross_entropy, cross_entropy_vjp

DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)


def naive(x: np.ndarray, targets, *, reduction="mean", ignore_index=-100, label_smoothing=0.0,
          weight=None) -> float | list:
    """The definition, term by term at 400 bits: -w_t log p_t mixed with the smoothed mean of
    -w_c log p_c, summed or averaged over the kept rows' weights."""
    with mpmath.workprec(400):
        rows = x.astype(np.float64)
        c = rows.shape[1]
        w = [mpmath.mpf(1)] * c if weight is None else [mpmath.mpf(float(v)) for v in weight]
        losses, weights = [], []
        for row, t in zip(rows, targets, strict=True):
            if t == ignore_index:
                losses.append(mpmath.mpf(0))
                continue
            lse = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in row))
            nll = [lse - mpmath.mpf(float(v)) for v in row]
            smooth = mpmath.fsum(wc * v for wc, v in zip(w, nll, strict=True)) / c
            e = mpmath.mpf(label_smoothing)
            losses.append((1 - e) * w[t] * nll[t] + e * smooth)
            weights.append(w[t])
        if reduction == "none":
            return [float(v) for v in losses]
        total = mpmath.fsum(losses)
        return float(total) if reduction == "sum" else float(total / mpmath.fsum(weights))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("options", [
    {}, {"reduction": "none"}, {"reduction": "sum"}, {"label_smoothing": 0.1},
    {"weight": "random"}, {"weight": "random", "label_smoothing": 0.25, "reduction": "none"},
    {"ignore_index": 2}, {"ignore_index": -1, "reduction": "sum"},
])
def test_the_oracle_rounds_the_definition_correctly(dtype, options) -> None:
    rng = np.random.default_rng(5)
    x = (rng.normal(scale=4.0, size=(12, 7))).astype(dtype)
    targets = rng.integers(0, 7, size=12)
    targets[3] = options.get("ignore_index", -100)
    if options.get("weight") == "random":
        options = {**options, "weight": rng.uniform(0.0, 2.0, size=7)}
    got = cross_entropy(x, targets, **options)
    # Correctly rounded: the 400-bit value rounded once into the dtype, bit for bit.
    expected = np.asarray(naive(x, list(targets), **options), dtype=np.float64).astype(dtype)
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, expected)


def test_a_confident_correct_row_keeps_its_relative_accuracy() -> None:
    # [0, -80, -80]: the loss is log1p(2 e^-80) = 3.6097e-35, which -log(softmax[t]) computed in float32
    # (torch's cross_entropy gives -0.0) loses entirely; the log1p form keeps every bit.
    x = np.array([[0.0, -80.0, -80.0]], dtype=np.float32)
    loss = cross_entropy(x, [0], reduction="none")[0]
    assert loss == np.float32(2 * math.exp(-80))
    # Down to the subnormal range: log1p(e^-100) = 3.72e-44, 27 units of float32's smallest subnormal.
    loss = cross_entropy(np.array([[0.0, -100.0]], np.float32), [0], reduction="sum")
    assert loss == np.float32(math.exp(-100)) == 27 * np.float32(2.0**-149)


def test_special_rows_follow_the_policy() -> None:
    x = np.array([[0.0, -np.inf, 1.0], [0.0, 1.0, 2.0], [np.nan, 0.0, 0.0]], dtype=np.float32)
    none = cross_entropy(x, [1, 2, 0], reduction="none")
    assert np.isposinf(none[0]) and np.isfinite(none[1]) and np.isnan(none[2])
    # A -inf logit that is not the target is a class of probability 0: no loss from it, unless label
    # smoothing puts weight on it (then its -log p is +inf).
    assert np.isfinite(cross_entropy(x[:1], [2], reduction="sum"))
    assert np.isposinf(cross_entropy(x[:1], [2], reduction="sum", label_smoothing=0.1))
    # Every row ignored under mean: 0/0.
    assert np.isnan(cross_entropy(x[1:2], [-100], reduction="mean"))
    # One class: L = log1p(0) = 0 exactly.
    assert cross_entropy(np.array([[3.0]], np.float32), [0], reduction="sum") == 0.0
    # A row of only -inf has no distribution: NaN, as log_softmax's policy gives (not the +inf of a
    # -inf target beside finite logits).
    assert np.isnan(cross_entropy(np.full((1, 3), -np.inf, np.float32), [1], reduction="none")[0])


def test_the_gradients_special_rows_are_log_softmax_vjps() -> None:
    # A -inf target beside finite logits: the loss is +inf, its gradient the limit p - onehot (what
    # log_softmax's VJP at -onehot gives): p = softmax([0, 1]) on the finite classes and -1 at the
    # target, exactly representable where p's are not: compared to float64's rounding.
    x = np.array([[0.0, -np.inf, 1.0]], dtype=np.float64)
    dx = cross_entropy_vjp(x, [1], np.array([1.0]), reduction="none")[0]
    p = np.exp([0.0, 1.0]) / np.sum(np.exp([0.0, 1.0]))
    assert dx[1] == -1.0 and np.allclose(dx[[0, 2]], p, rtol=1e-15, atol=0)
    # With smoothing on a -inf class (loss +inf): its own gradient is -e/C (p_c = 0), the float 0.3
    # over 3 correctly rounded (0.09999999999999999, not 0.1).
    smoothed = cross_entropy_vjp(x, [0], np.array([1.0]), reduction="none", label_smoothing=0.3)[0]
    assert smoothed[1] == -(0.3 / 3)
    # NaN, +inf or only -inf: NaN everywhere in the row.
    for row in ([np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0], [-np.inf] * 3):
        got = cross_entropy_vjp(np.array([row]), [1], np.array([1.0]), reduction="none")
        assert np.isnan(got).all(), row


def test_bad_arguments_say_what_to_give() -> None:
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"give one integer class index per row, shape \(2,\)"):
        cross_entropy(x, [0.5, 1.0])
    with pytest.raises(ValueError, match=r"a target outside 0\.\.2 that is not ignore_index"):
        cross_entropy(x, [0, 3])
    with pytest.raises(ValueError, match="reduction 'avg': use one of none, mean, sum"):
        cross_entropy(x, [0, 1], reduction="avg")
    with pytest.raises(ValueError, match="one finite, non-negative weight per class"):
        cross_entropy(x, [0, 1], weight=np.array([1.0, -1.0, 1.0]))


def naive_vjp(x: np.ndarray, targets, g, *, reduction="mean", ignore_index=-100, label_smoothing=0.0,
              weight=None) -> np.ndarray:
    """The gradient's definition at 400 bits: g ((1 - e) w_t (p - onehot_t) + e / C sum_k w_k
    (p - onehot_k)) per kept row, over the kept rows' weight for mean."""
    with mpmath.workprec(400):
        rows = x.astype(np.float64)
        c = rows.shape[1]
        w = [mpmath.mpf(1)] * c if weight is None else [mpmath.mpf(float(v)) for v in weight]
        e = mpmath.mpf(label_smoothing)
        kept = [t != ignore_index for t in targets]
        scale = [mpmath.mpf(float(v)) for v in np.broadcast_to(g, (rows.shape[0],))]
        if reduction == "mean":
            scale = [s / mpmath.fsum(w[t] for t, k in zip(targets, kept, strict=True) if k) for s in scale]
        out = np.zeros(rows.shape)
        for i, (row, t) in enumerate(zip(rows, targets, strict=True)):
            if not kept[i]:
                continue
            exps = [mpmath.exp(mpmath.mpf(float(v))) for v in row]
            total = mpmath.fsum(exps)
            p = [v / total for v in exps]
            for j in range(c):
                value = (1 - e) * w[t] * (p[j] - (j == t)) + e / c * mpmath.fsum(
                    w[k] * (p[j] - (j == k)) for k in range(c))
                out[i, j] = float(scale[i] * value)
        return out


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("options", [
    {}, {"reduction": "none"}, {"reduction": "sum"}, {"label_smoothing": 0.1},
    {"weight": "random", "label_smoothing": 0.25}, {"ignore_index": 2, "reduction": "none"},
])
def test_the_gradient_oracle_rounds_the_definition_correctly(dtype, options) -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(scale=4.0, size=(10, 6)).astype(dtype)
    targets = rng.integers(0, 6, size=10)
    targets[4] = options.get("ignore_index", -100)
    if options.get("weight") == "random":
        options = {**options, "weight": rng.uniform(0.0, 2.0, size=6)}
    g = rng.normal(size=10) if options.get("reduction") == "none" else np.array(0.75)
    got = cross_entropy_vjp(x, targets, g, **options)
    expected = naive_vjp(x, list(targets), g, **options).astype(dtype)
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, expected)
    assert not got[4].any()  # the ignored row's gradient is 0


def test_a_confident_rows_gradient_keeps_its_relative_accuracy() -> None:
    # [0, -80, -80], target 0: dx_0 = -(1 - p_0) = -2 e^-80 / (1 + 2 e^-80) = -3.6e-35, which
    # softmax - onehot computed in float32 gives as 0 (p_0 rounds to 1); the oracle forms 1 - p_0 as
    # S / (1 + S) and keeps every bit.
    x = np.array([[0.0, -80.0, -80.0]], dtype=np.float32)
    dx = cross_entropy_vjp(x, [0], np.array([1.0]), reduction="none")[0]
    assert dx[0] == np.float32(-2 * math.exp(-80)) and dx[1] == dx[2] == np.float32(math.exp(-80))
    with pytest.raises(ValueError, match=r"reduction 'mean' takes one of shape \(\)"):
        cross_entropy_vjp(x, [0], np.array([1.0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_a_target_far_below_the_largest_logit(dtype) -> None:
    # exp(x_c - x_t) of a gap of 6e38 fits no number mpmath forms (it raised OverflowError): a target
    # more than 64 nats below pivots on the largest logit, L = (a - x_t) + log sum exp(x_c - a). The
    # loss of [3e38, -3e38, 0] at target 1 is 6e38: past float32's largest, so inf there.
    x = np.array([[0.0, -100.0, 5.0], [1e4, -1e4, 0.5], [3e38, -3e38, 0.0], [70.0, 0.0, 69.0]], dtype=dtype)
    targets = [1, 1, 1, 1]
    got = cross_entropy(x, targets, reduction="none")
    assert np.array_equal(got, np.array(naive(x, targets, reduction="none")).astype(dtype))
    assert (dtype == np.float32) == bool(np.isinf(got[2]))
    g = np.array([1.0, 0.5, 2.0, 1.0])
    assert np.array_equal(cross_entropy_vjp(x, targets, g, reduction="none"),
                          naive_vjp(x, targets, g, reduction="none").astype(dtype))
