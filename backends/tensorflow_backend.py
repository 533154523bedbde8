"""tensorflow: tf.nn.softmax, tf.nn.log_softmax and tf.reduce_logsumexp, eager, on the cpu and the
gpu TF reports; their VJPs through tf.GradientTape. Every dtype crosses as its bit pattern (tf.bitcast).

Attention's forms are composed as a tensorflow user writes them (tf.nn.softmax has neither a scale nor a
mask argument): tf.where(mask, x * scale, -inf), the scale and -inf as constants of x's dtype, then the
op; their VJPs through tf.GradientTape of that composition (tf.where's gradient selects the cotangent,
0 at the unselected entries). A row with nothing kept is all -inf: tf.nn.softmax and log_softmax
subtract the row max, -inf - -inf = NaN, and tf.reduce_logsumexp replaces a non-finite max by 0 and
gives log(0) = -inf: the "nan" convention, read from tensorflow's source (not measured here: the
development machine has no tensorflow).

cross_entropy is tf.nn.sparse_softmax_cross_entropy_with_logits (classes last: moved there by
tf.transpose where the case has them elsewhere), one loss per row, reduced as a tensorflow user
reduces it, tf.reduce_mean or tf.reduce_sum; its VJP through tf.GradientTape. It takes no class
weights, no label smoothing and no ignore_index: none is listed in `options` (Keras's losses are
another API). Integer targets cross as tf.int64 constants. Written from tensorflow's documentation
and not run here (no tensorflow on the development machine).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from softmax_suite.protocol import ATTENTION_OPTIONS, Backend, BackendUnavailable

DEVICES = {"cpu": "/CPU:0", "gpu": "/GPU:0"}


def load() -> Backend:
    try:
        import ml_dtypes
        import tensorflow as tf
    except ImportError as error:
        raise BackendUnavailable(
            f"tensorflow is not installed ({error}); pip install tensorflow-cpu (or tensorflow)") from None
    floats = {np.dtype(np.float16): tf.float16, np.dtype(ml_dtypes.bfloat16): tf.bfloat16,
              np.dtype(np.float32): tf.float32, np.dtype(np.float64): tf.float64}
    to_numpy_dtype = {tf_type: numpy_type for numpy_type, tf_type in floats.items()}
    unsigned = {2: (np.uint16, tf.uint16), 4: (np.uint32, tf.uint32), 8: (np.uint64, tf.uint64)}
    absent = {}
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        absent["gpu"] = (f"tensorflow {tf.__version__} reports no GPU (tf.config.list_physical_devices"
                         "('GPU') is empty; the tensorflow-cpu wheel has no GPU support)")

    def to_device(x: np.ndarray, device: str) -> Any:
        with tf.device(DEVICES[device]):
            if x.dtype.kind in "biu":  # a mask or a loss's targets: no bit pattern to keep
                return tf.constant(x)
            bits = tf.constant(x.view(unsigned[x.dtype.itemsize][0]))
            return tf.bitcast(bits, floats[x.dtype])

    def to_numpy(tensor: Any) -> np.ndarray:
        bits = tf.bitcast(tensor, unsigned[tensor.dtype.size][1]).numpy()
        return bits.view(to_numpy_dtype[tensor.dtype])

    def synchronize(device: str, value: Any) -> None:
        # Eager CPU kernels have finished when they return; GPU kernels are only enqueued.
        if device == "gpu":
            tf.test.experimental.sync_devices()

    def composed(function: Any) -> Any:
        def call(x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
            # The scale is already rounded into x's dtype: its constant is exact.
            if scale is not None:
                x = x * tf.constant(scale, dtype=x.dtype)
            if mask is not None:
                x = tf.where(mask, x, tf.constant(float("-inf"), dtype=x.dtype))
            return function(x, axis=axis)

        return call

    def cross_entropy(x: Any, axis: int, target: Any, reduction: str) -> Any:
        rank = len(x.shape)
        axis %= rank
        if axis != rank - 1:
            x = tf.transpose(x, [*(i for i in range(rank) if i != axis), axis])
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=x)
        reduce = {"none": lambda found: found, "mean": tf.reduce_mean, "sum": tf.reduce_sum}
        return reduce[reduction](losses)

    def forward(function: Any) -> Any:
        def call(x: Any, axis: int, **options: Any) -> Any:
            # Eager ops would otherwise go to a GPU when one exists, wherever x lies.
            with tf.device(x.device):
                return function(x, axis, **options)

        return call

    def vjp(function: Any) -> Any:
        def pullback(x: Any, g: Any, axis: int, **options: Any) -> Any:
            with tf.device(x.device), tf.GradientTape() as tape:
                tape.watch(x)
                y = function(x, axis, **options)
            return tape.gradient(y, x, output_gradients=g)

        return pullback

    def describe(device: str) -> dict[str, Any]:
        # 0 is TF's default: as many threads as the machine has logical cores.
        info: dict[str, Any] = {
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        }
        if device == "gpu":
            info.update(tf.config.experimental.get_device_details(gpus[0]))
        return info

    forwards = {**{op: composed(f) for op, f in (("softmax", tf.nn.softmax),
                                                 ("log_softmax", tf.nn.log_softmax),
                                                 ("logsumexp", tf.reduce_logsumexp))},
                "cross_entropy": cross_entropy}
    return Backend(
        name="tensorflow",
        version=tf.__version__,
        ops={**{op: forward(f) for op, f in forwards.items()},
             **{f"{op}_vjp": vjp(f) for op, f in forwards.items()}},
        to_device=to_device,
        to_numpy=to_numpy,
        devices=tuple(d for d in DEVICES if d not in absent),
        absent_devices=absent,
        synchronize=synchronize,
        # tf.identity may hand back the same buffer; DeepCopy always writes a new one.
        copy=lambda x: tf.raw_ops.DeepCopy(x=x),
        describe=describe,
        options=ATTENTION_OPTIONS,
        # Read from tensorflow's source, not measured here (see the docstring): NaN softmax and
        # log_softmax, -inf logsumexp on a fully masked row.
        fully_masked="nan",
    )
