"""jax: jax.nn.softmax, log_softmax and logsumexp, jitted, on the devices jax reports.

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

    softmax = jitted(lambda x, axis: jax.nn.softmax(x, axis=axis))
    log_softmax = jitted(lambda x, axis: jax.nn.log_softmax(x, axis=axis))
    logsumexp = jitted(lambda x, axis: jax.nn.logsumexp(x, axis=axis))

    return Backend(
        name="jax",
        version=jax.__version__,
        ops={
            "softmax": lambda x, axis: softmax(x, axis=axis),
            "log_softmax": lambda x, axis: log_softmax(x, axis=axis),
            "logsumexp": lambda x, axis: logsumexp(x, axis=axis),
        },
        to_device=lambda x, device: jax.device_put(x, present[device]),
        to_numpy=np.asarray,
        devices=tuple(present),
        absent_devices=absent,
        synchronize=lambda device, value: jax.block_until_ready(value),
        copy=jax.jit(lambda x: x.copy()),
    )
