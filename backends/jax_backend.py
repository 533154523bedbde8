"""jax: jax.nn.softmax, log_softmax and logsumexp, jitted, on the devices jax reports; their
VJPs through jax.vjp, jitted as a whole (forward and pullback in one compiled function).

x64 is switched on at load: without it jax silently computes float64 inputs in float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.protocol import Backend, BackendUnavailable

PLATFORMS = ("cpu", "gpu", "tpu")


def _platform_devices(jax: Any) -> tuple[dict[str, Any], dict[str, str]]:
    present, absent = {}, {}
    for platform in PLATFORMS:
        try:
            present[platform] = jax.devices(platform)[0]
        except RuntimeError as error:
            absent[platform] = f"jax reports no {platform} ({str(error).splitlines()[0]})"
    return present, absent


def load() -> Backend:
    try:
        import jax
    except ImportError as error:
        raise BackendUnavailable(f"jax is not installed ({error}); pip install jax") from None
    jax.config.update("jax_enable_x64", True)
    present, absent = _platform_devices(jax)

    def jitted(function: Any) -> Any:
        return jax.jit(function, static_argnames="axis")

    forwards = {"softmax": jax.nn.softmax, "log_softmax": jax.nn.log_softmax,
                "logsumexp": jax.nn.logsumexp}

    def forward(function: Any) -> Any:
        compiled = jitted(lambda x, axis: function(x, axis=axis))
        return lambda x, axis: compiled(x, axis=axis)

    def vjp(function: Any) -> Any:
        def pullback(x: Any, g: Any, axis: int) -> Any:
            _, apply = jax.vjp(lambda v: function(v, axis=axis), x)
            return apply(g)[0]

        compiled = jitted(pullback)
        return lambda x, g, axis: compiled(x, g, axis=axis)

    return Backend(
        name="jax",
        version=jax.__version__,
        ops={**{op: forward(f) for op, f in forwards.items()},
             **{f"{op}_vjp": vjp(f) for op, f in forwards.items()}},
        to_device=lambda x, device: jax.device_put(x, present[device]),
        to_numpy=np.asarray,
        devices=tuple(present),
        absent_devices=absent,
        synchronize=lambda device, value: jax.block_until_ready(value),
        copy=jax.jit(lambda x: x.copy()),
    )
