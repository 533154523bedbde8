"""jax: jax.nn.softmax, log_softmax and logsumexp, jitted, on the devices jax reports; their
VJPs through jax.vjp, jitted as a whole (forward and pullback in one compiled function). load(functions)
runs a user's own functions f(x, axis) the same way (`--backend jax:package.module:attr`): a
jax.custom_vjp's rule is what its VJP tests.

Attention's forms go to jax's own API: the op of x * scale (jitted, the scale an argument) with
where=mask; their VJPs through jax.vjp of that.

cross_entropy is optax.softmax_cross_entropy_with_integer_labels (one loss per row), reduced as a jax
user reduces it, jnp.mean or jnp.sum of the rows; its VJP through jax.vjp. optax is an optional extra
(pip install softmax-suite[optax]): without it the loss ops are absent and unsupported, with the
command. optax's function takes no class weights, no label smoothing and no ignore_index, so none is
listed in `options` (its `where` masks logits, not targets). A loss's reduction, ignore_index and
label_smoothing are static arguments of the jitted function (a user's loss may branch on them); its
target and weight are traced.

x64 is switched on at load: without it jax silently computes float64 inputs in float32.
Compiled functions persist in jax's compilation cache (compilation_cache_folder), so a second
run skips XLA compilation, which is most of jax's time in a run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from softmax_suite.ops import LOSS_OPS
from softmax_suite.protocol import ATTENTION_OPTIONS, DTYPES, STANDARD_DTYPES, Backend, BackendUnavailable

PLATFORMS = ("cpu", "gpu", "tpu")
CACHE_VARIABLE = "SOFTMAX_SUITE_JAX_CACHE"
# The loss's keyword arguments that are Python values, passed to the jitted function as static ones.
STATIC_OPTIONS = ("reduction", "ignore_index", "label_smoothing")
WITHOUT_OPTAX = "jax's cross_entropy is optax's: pip install softmax-suite[optax] (or pip install optax)"


def compilation_cache_folder(configured: str | None) -> Path | None:
    """Where compiled functions persist: a folder the user gave jax (JAX_COMPILATION_CACHE_DIR,
    configured) is kept as it is (None: nothing to change); else $SOFTMAX_SUITE_JAX_CACHE ('off':
    no cache), else $XDG_CACHE_HOME/softmax-suite/jax (~/.cache/...)."""
    if configured:
        return None
    chosen = os.environ.get(CACHE_VARIABLE)
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "softmax-suite" / "jax"


def _platform_devices(jax: Any) -> tuple[dict[str, Any], dict[str, str]]:
    present, absent = {}, {}
    for platform in PLATFORMS:
        try:
            present[platform] = jax.devices(platform)[0]
        except RuntimeError as error:
            absent[platform] = f"jax reports no {platform} ({str(error).splitlines()[0]})"
    return present, absent


def _not_differentiable(jax: Any, op: str, function: Any) -> str | None:
    """Why jax cannot take the VJP of a user's function (a kernel with no differentiation rule), or
    None; undecided (None) when the forward itself fails on the probe, as its own results then show."""
    probe = jax.numpy.asarray([[0.5, 1.0, 2.0]], dtype=jax.numpy.float32)
    # A loss op is probed on one row whose target is class 0, summed.
    keywords = {"target": jax.numpy.asarray([0]), "reduction": "sum"} if op in LOSS_OPS else {}
    try:
        jax.jit(lambda x: function(x, -1, **keywords))(probe)
    except Exception:  # the forward's own results report it
        return None
    try:
        _, pullback = jax.vjp(lambda x: function(x, -1, **keywords), probe)
        pullback(jax.numpy.ones_like(function(probe, -1, **keywords)))
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        signature = "x, g, axis, target, reduction, ..." if keywords else "x, g, axis"
        return (f"jax cannot differentiate {op} ({type(error).__name__}: {first}); give it a rule "
                f"(jax.custom_vjp), or the object an {op}_vjp({signature}) method, to test its VJP")
    return None


def _optax_cross_entropy(jax: Any) -> Callable[..., Any] | None:
    """optax's cross-entropy of integer labels, reduced as a jax user reduces it; None without optax."""
    try:
        import optax
    except ImportError:
        return None
    reduce = {"none": lambda losses: losses, "mean": jax.numpy.mean, "sum": jax.numpy.sum}

    def cross_entropy(x: Any, axis: int, target: Any, reduction: str) -> Any:
        return reduce[reduction](optax.softmax_cross_entropy_with_integer_labels(x, target, axis=axis))

    return cross_entropy


def load(functions: Mapping[str, Callable[..., Any]] | None = None) -> Backend:
    """jax's own ops, or the user's forward functions f(x, axis) on jax arrays (functions; a jitted one
    marks axis static), jitted, with their VJPs through jax.vjp."""
    try:
        import jax
    except ImportError as error:
        raise BackendUnavailable(f"jax is not installed ({error}); pip install jax") from None
    jax.config.update("jax_enable_x64", True)
    folder = compilation_cache_folder(jax.config.jax_compilation_cache_dir)
    if folder is not None:
        jax.config.update("jax_compilation_cache_dir", str(folder))
        # Every compile is kept: the suite's are many small ones, each below jax's 1 s default.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    present, absent = _platform_devices(jax)

    def composed(function: Any) -> Any:
        def call(x: Any, axis: int, scale: Any = None, mask: Any = None) -> Any:
            if scale is not None:
                x = x * scale
            return function(x, axis) if mask is None else function(x, axis, where=mask)

        return call

    forwards = dict(functions) if functions is not None else {
        op: composed(f) for op, f in (("softmax", jax.nn.softmax), ("log_softmax", jax.nn.log_softmax),
                                      ("logsumexp", jax.nn.logsumexp))}
    unsupported = {}
    if functions is None:
        loss = _optax_cross_entropy(jax)
        if loss is None:
            unsupported.update({(op, dtype): WITHOUT_OPTAX for op in LOSS_OPS for dtype in DTYPES})
        else:
            forwards["cross_entropy"] = loss

    def split(options: dict) -> tuple[dict, tuple]:
        """The options as traced arrays (scale, mask, target, weight) and static Python values."""
        static = tuple(sorted((name, value) for name, value in options.items() if name in STATIC_OPTIONS))
        return {name: value for name, value in options.items() if name not in STATIC_OPTIONS}, static

    def forward(function: Any) -> Any:
        compiled = jax.jit(lambda x, axis, options, static: function(x, axis, **options, **dict(static)),
                           static_argnames=("axis", "static"))

        def call(x: Any, axis: int, **options: Any) -> Any:
            traced, static = split(options)
            return compiled(x, axis=axis, options=traced, static=static)

        return call

    def vjp(function: Any) -> Any:
        def pullback(x: Any, g: Any, axis: int, options: dict, static: tuple) -> Any:
            _, apply = jax.vjp(lambda v: function(v, axis, **options, **dict(static)), x)
            return apply(g)[0]

        compiled = jax.jit(pullback, static_argnames=("axis", "static"))

        def call(x: Any, g: Any, axis: int, **options: Any) -> Any:
            traced, static = split(options)
            return compiled(x, g, axis=axis, options=traced, static=static)

        return call

    if functions is not None:
        for op, function in forwards.items():
            reason = _not_differentiable(jax, op, function)
            unsupported.update({(f"{op}_vjp", dtype): reason for dtype in DTYPES if reason})
    return Backend(
        name="jax",
        version=jax.__version__,
        ops={**{op: forward(f) for op, f in forwards.items()},
             **{f"{op}_vjp": vjp(f) for op, f in forwards.items()}},
        unsupported=unsupported,
        to_device=lambda x, device: jax.device_put(x, present[device]),
        to_numpy=np.asarray,
        devices=tuple(present),
        absent_devices=absent,
        synchronize=lambda device, value: jax.block_until_ready(value),
        copy=jax.jit(lambda x: x.copy()),
        options=ATTENTION_OPTIONS if functions is None else (),
        # jax computes the float8 formats (ml_dtypes' types are jax's); a user's functions declare theirs.
        dtypes=DTYPES if functions is None else STANDARD_DTYPES,
        # jax.nn's where= gives a row with nothing kept softmax 0 and log_softmax -inf (measured).
        fully_masked="zero" if functions is None else "nan",
        describe=lambda device: {"platform": present[device].platform,
                                 "device_kind": present[device].device_kind,
                                 # XLA's CPU client runs one intra-op thread per core.
                                 "threads": os.cpu_count() if device == "cpu" else None},
    )
