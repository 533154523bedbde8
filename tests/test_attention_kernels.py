"""Fused attention kernels as softmax backends (softmax_suite.backends.attention_backend): the exact
embedding Q = X, K = V = I_n makes a kernel's output its own softmax of scale * X over the mask, and dQ
the VJP of it; each kernel's capabilities and fully-masked convention as measured; a user's attention
function through the torch-attention framework, with a planted bug caught."""

from __future__ import annotations

import numpy as np
import pytest

from softmax_suite.backends import registry
from softmax_suite.backends.builtin import BUILTIN, FRAMEWORKS
from softmax_suite.oracle import scaled
from softmax_suite.protocol import BackendUnavailable
from softmax_suite.runner.api import check
from softmax_suite.suites.judging import judge
from softmax_suite.suites.policy import Policy

# (backend, the module whose absence skips it)
KERNELS = [("torch-sdpa-math", "torch"), ("torch-sdpa-flash", "torch"), ("torch-attention", "torch"),
           ("jax-attention", "jax"), ("mlx-attention", "mlx.core")]
# Where a kernel computes float64 in float32 (measured; docs/attention.md): jax's XLA attention takes the
# softmax in float32 by design, and mlx computes float64 exp in float32 on the CPU. There the output is
# float32's softmax widened: the embedding still adds nothing, so it agrees with the exact values to
# float32's precision (a few units of 2^-24 relative), far from what a broken embedding gives (NaN from
# 0 * inf, a wrong scale: errors of order 1).
FLOAT32_INSIDE = {("jax-attention", "float64"), ("mlx-attention", "float64")}
SCALE = 0.125  # a power of two: the product rounds nothing, the budget is a plain case's


def loaded(name: str, module: str):
    pytest.importorskip(module)
    backend = registry.load(name)
    if isinstance(backend, registry.Unavailable):
        pytest.skip(backend.reason)
    return backend


def masked_case(dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (6, 24) N(0, 3^2) with a random mask (row 0 keeps one entry, every row keeps one), the garbage
    the catalogue puts under masks (+-inf, NaN, the format's max) there, and a cotangent that is 0 at
    the masked outputs (as the suite gives it: docs/attention.md)."""
    rng = np.random.default_rng(11)
    x = rng.normal(scale=3.0, size=(6, 24)).astype(dtype)
    keep = rng.random(x.shape) < 0.6
    keep[np.arange(6), rng.integers(0, 24, size=6)] = True
    keep[0] = False
    keep[0, 7] = True
    garbage = np.array([np.inf, -np.inf, np.nan, np.finfo(dtype).max], dtype=dtype)
    x[~keep] = np.resize(garbage, int((~keep).sum()))
    g = np.where(keep, rng.normal(size=x.shape), 0.0).astype(dtype)
    return x, keep, g


def call(backend, op: str, *inputs: np.ndarray, keep: np.ndarray) -> np.ndarray:
    arrays = [backend.to_device(array, "cpu") for array in inputs]
    out = backend.ops[op](*arrays, -1, scale=SCALE, mask=backend.to_device(keep, "cpu"))
    backend.synchronize("cpu", out)
    return np.asarray(backend.to_numpy(out))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, module", KERNELS)
def test_the_embedding_is_exact_the_kernel_answers_the_oracle(name, module, dtype) -> None:
    backend = loaded(name, module)
    x, keep, g = masked_case(dtype)
    forward = scaled.references(False, x, -1, None, SCALE, keep)["softmax"]
    vjp = scaled.references(True, x, -1, (g, np.zeros(6, dtype)), SCALE, keep)["softmax_vjp"]
    got = call(backend, "softmax", x, keep=keep)
    dx = call(backend, "softmax_vjp", x, g, keep=keep)
    # Masked entries give exactly 0 in both ops: their value (inf, NaN) never reached Q K^T.
    assert not got[~keep].any() and not dx[~keep].any()
    assert got[0, 7] == 1  # row 0 keeps one entry: softmax 1 there, exactly
    if (name, dtype) in FLOAT32_INSIDE:
        np.testing.assert_allclose(got, forward.rounded, rtol=2.0**-21, atol=0)
        assert judge(forward, got, Policy())["status"] == "fail"  # float32's, not float64's, accuracy
        return
    for reference, output in ((forward, got), (vjp, dx)):
        judged = judge(reference, output, Policy())
        assert judged["status"] == "pass", f"{reference.op}: {judged['message']}"


@pytest.mark.parametrize("name, module", KERNELS)
def test_the_capabilities_say_what_a_kernel_is_not_asked(name, module) -> None:
    loaded(name, module)
    # glossary is asked; pos_inf keeps +inf entries (finite_only) and online_long_one_kept's rows are 65536
    # long (max_length 4096); log_softmax is no op of theirs.
    checked = check(name, cases="glossary,pos_inf,online_long_one_kept", dtypes="float32",
                    ops="softmax,log_softmax,softmax_vjp", invariants=False)
    assert {record["case"] for record in checked.records} == {"glossary"}
    assert {record["op"] for record in checked.records} == {"softmax", "softmax_vjp"}
    assert checked.passed, checked.summary()
    reasons = {entry.get("option", entry["op"]): entry["reason"] for entry in checked.capabilities
               if entry["device"] == "cpu"}
    assert reasons["log_softmax"] == f"{name} has no log_softmax"
    assert reasons["length"] == (f"{name} takes rows of at most 4096 entries: the cases with longer rows "
                                 "are not asked")
    assert reasons["finite"] == (f"{name} takes only finite kept entries: the cases with inf or NaN are "
                                 "not asked")


def test_a_dtype_a_kernel_refuses_is_unsupported_with_its_own_reason() -> None:
    # Measured at load: under jax.jit on the cpu, jax.nn.dot_product_attention's float16 dot (precision
    # F16_F16_F32) is refused at compilation (jax 0.10); an eager call would fall back, the suite's cannot.
    jax_attention = loaded("jax-attention", "jax")
    reason = jax_attention.why_unsupported("softmax", "float16")
    if reason is None:
        pytest.skip("this jax takes float16 in jax.nn.dot_product_attention under jit on the cpu")
    assert reason.startswith("jax-attention on cpu refuses float16: ")
    assert jax_attention.why_unsupported("softmax_vjp", "float16") == reason


# What each kernel gives on attention_fully_masked's rows 1 and 4 (32 entries each, all masked), measured:
# torch's SDPA kernels 0 ("zero", as declared); jax's XLA attention and mlx's fill masked scores with a
# finite sentinel, so such a row is uniform, 1/32 everywhere: neither convention. They declare "zero", the
# nearer truth (a finite row, never NaN), and the suite reports the 1/32 as an accuracy failure.
FULLY_MASKED = {"torch-sdpa-math": "zero", "torch-sdpa-flash": "zero", "torch-attention": "zero",
                "jax-attention": "other", "mlx-attention": "other"}


@pytest.mark.parametrize("name, module", KERNELS)
def test_the_declared_fully_masked_convention_against_what_the_kernel_gives(name, module) -> None:
    backend = loaded(name, module)
    checked = check(name, cases="attention_fully_masked", ops="softmax", dtypes="float32", invariants=False)
    (record,) = checked.records
    assert record["fully_masked"] == backend.fully_masked == "zero"
    assert record["fully_masked_returned"] == FULLY_MASKED[name]
    if FULLY_MASKED[name] == "zero":
        assert record["status"] == "pass", record["message"]
    else:
        # A uniform row, neither convention: a failure, known (suites/known_deviations.toml) and measured.
        assert record["status"] == "known_failure" and record["failure"] == "accuracy"
        assert record["metrics"]["worst"]["got"] == 1 / 32 and record["metrics"]["worst"]["rounded"] == 0


def composed_attention(q, k, v, *, scale, mask):
    """Attention as a torch user writes it: exact under the embedding."""
    import torch

    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def bfloat16_probabilities(q, k, v, *, scale, mask):
    """A planted bug of mixed-precision kernels: P rounded to bfloat16 before P V."""
    import torch

    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1).to(torch.bfloat16).to(q.dtype) @ v


def test_a_users_attention_function_runs_through_the_embedding_and_a_planted_bug_is_caught() -> None:
    pytest.importorskip("torch")
    from softmax_suite.backends.attention_backend import load_torch_attention

    cases = "glossary,attention_scaled_d64,attention_causal"
    good = load_torch_attention({"softmax": composed_attention})
    assert (good.options, good.max_length, good.finite_only) == (("scale", "mask"), 4096, True)
    checked = check(good, cases=cases, dtypes="float32", ops="softmax,softmax_vjp", invariants=False)
    assert checked.passed, checked.summary()
    planted = check(load_torch_attention({"softmax": bfloat16_probabilities}), cases=cases, dtypes="float32",
                    ops="softmax", invariants=False)
    # bfloat16 keeps 8 significant bits: P is off by up to 2^-9 relative, about 2^15 float32 ULP, where
    # the budget is a few ULP; every case catches it.
    assert {record["case"] for record in planted.failures} == set(cases.split(","))
    assert all(record["failure"] == "accuracy" for record in planted.failures)
    assert min(record["metrics"]["max_ulp"] for record in planted.failures) > 1000


def test_the_spec_runs_a_users_attention_function_through_the_embedding() -> None:
    # `--backend torch-attention:package.module:attr` needs custom.wrap to take the framework's ops and
    # declarations for a plain function (EMBEDS_FUNCTIONS, base.options ...) and torch-attention in
    # FRAMEWORKS: changes outside this feature's files, described in docs/attention.md.
    pytest.importorskip("torch")
    if "torch-attention" not in FRAMEWORKS:
        pytest.skip("torch-attention is not yet a framework of custom.wrap (builtin.FRAMEWORKS)")
    spec = "torch-attention:tests.test_attention_kernels:bfloat16_probabilities"
    planted = check(spec, cases="glossary,attention_causal", dtypes="float32", ops="softmax",
                    invariants=False)
    assert [record["failure"] for record in planted.records] == ["accuracy", "accuracy"]
    good = check(composed_attention, framework="torch-attention", cases="glossary,attention_causal,pos_inf",
                 dtypes="float32", ops="softmax,softmax_vjp", invariants=False)
    assert good.passed and {record["case"] for record in good.records} == {"glossary", "attention_causal"}


def test_the_kernels_are_built_in_names_each_with_a_function_to_load() -> None:
    from softmax_suite.backends import attention_backend
    from softmax_suite.backends.builtin import loader

    names = [name for name, target in BUILTIN.items() if target.startswith(attention_backend.__name__ + ":")]
    assert len(names) == 7
    for name in names:
        assert loader(name) is getattr(attention_backend, BUILTIN[name].partition(":")[2])


def test_a_cuda_only_kernel_without_cuda_is_unavailable_with_why() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    unavailable = registry.load("torch-sdpa-efficient")
    assert isinstance(unavailable, registry.Unavailable)
    assert unavailable.reason.startswith("torch-sdpa-efficient: torch's EFFICIENT_ATTENTION kernel of "
                                         "scaled_dot_product_attention runs on cuda only, and here ")


def test_a_missing_framework_makes_the_kernel_unavailable(monkeypatch) -> None:
    from softmax_suite.backends import attention_backend

    def missing(functions=None):
        raise BackendUnavailable("jax is not installed (No module named 'jax'); pip install jax")

    monkeypatch.setattr(attention_backend.jax_backend, "load", missing)
    unavailable = registry.load("jax-attention")
    assert isinstance(unavailable, registry.Unavailable)
    assert unavailable.reason == "jax is not installed (No module named 'jax'); pip install jax"
