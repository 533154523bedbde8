"""onnxruntime on its CPU execution provider: one-node ONNX graphs (Softmax, LogSoftmax and
ReduceLogSumExp, opset 13), one InferenceSession per (op, dtype, axis, rank). No gradients.

The graphs are built with the `onnx` helper API and checked by onnx.checker: ORT itself ships no
model builder. Which dtypes each op supports is measured at load, by building and running every
(op, dtype) once: a missing CPU kernel (bfloat16 in ORT 1.32) is reported as unsupported with
ORT's own message.

Attention's forms are built into the graph as an ONNX user builds them (Softmax has neither a scale nor
a mask input): Mul by the scale, a scalar initializer in the input's dtype, then Where(mask, x, -inf)
with the mask a bool input and -inf a scalar initializer, then the op; one session per option set
(the scale's value, the mask's rank). A row with nothing kept gives Softmax and LogSoftmax NaN (0/0),
ReduceLogSumExp -inf (measured, onnxruntime 1.32): the "nan" convention.

cross_entropy is a SoftmaxCrossEntropyLoss node (opset 13) with its reduction, ignore_index and
weights (an input in x's dtype), the classes moved to axis 1 by a Transpose where they lie elsewhere;
one session per (dtype, axis, rank, reduction, ignore_index, weighted). ONNX has no label smoothing
(not listed in `options`) and ORT no gradients here: cross_entropy_vjp is absent. Its dtypes are
measured at load like the other ops'.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import numpy as np

from softmax_suite.ops import SOFTMAX_FORWARD_OPS
from softmax_suite.protocol import ATTENTION_OPTIONS, STANDARD_DTYPES, Backend, BackendUnavailable

OPSET = 13
NODES = {"softmax": "Softmax", "log_softmax": "LogSoftmax", "logsumexp": "ReduceLogSumExp",
         "cross_entropy": "SoftmaxCrossEntropyLoss"}
# The loss's options SoftmaxCrossEntropyLoss takes: it has no label smoothing.
SCE_OPTIONS = ("ignore_index", "weight")
# Set rather than left at ORT's default (one per physical core, found differently per platform)
# so that a throughput record states the thread count the sessions really used.
THREADS = os.cpu_count() or 1


def load() -> Backend:
    try:
        import ml_dtypes
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as error:
        raise BackendUnavailable(
            f"onnxruntime or onnx is not installed ({error}); pip install onnxruntime onnx") from None
    if "CPUExecutionProvider" not in ort.get_available_providers():
        raise BackendUnavailable(f"onnxruntime {ort.__version__} has no CPUExecutionProvider "
                                 f"(providers: {', '.join(ort.get_available_providers())})")
    element_types = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16,
                     "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}
    numpy_types = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                   "float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
    names = {dtype: name for name, dtype in numpy_types.items()}

    def options() -> Any:
        chosen = ort.SessionOptions()
        chosen.intra_op_num_threads = THREADS
        chosen.inter_op_num_threads = 1
        chosen.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return chosen

    def constant(name: str, value: float, dtype: str) -> Any:
        """A scalar initializer of the input's dtype."""
        return numpy_helper.from_array(np.array(value, dtype=numpy_types[dtype]), name)

    @cache
    def session(op: str, dtype: str, axis: int, rank: int, scale: float | None = None,
                mask_rank: int | None = None) -> Any:
        element = element_types[dtype]
        nodes, initializers, source = [], [], "x"
        inputs = [helper.make_tensor_value_info("x", element, [f"d{i}" for i in range(rank)])]
        if scale is not None:
            initializers.append(constant("scale", scale, dtype))
            nodes.append(helper.make_node("Mul", [source, "scale"], ["scaled"]))
            source = "scaled"
        if mask_rank is not None:
            # Its own symbolic dimensions: a mask broadcastable to x, as Where broadcasts.
            inputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL,
                                                        [f"m{i}" for i in range(mask_rank)]))
            initializers.append(constant("minus_inf", -np.inf, dtype))
            nodes.append(helper.make_node("Where", ["mask", source, "minus_inf"], ["masked"]))
            source = "masked"
        if op == "logsumexp":
            nodes.append(helper.make_node(NODES[op], [source], ["y"], axes=[axis], keepdims=0))
            out_rank = rank - 1
        else:
            nodes.append(helper.make_node(NODES[op], [source], ["y"], axis=axis))
            out_rank = rank
        # Every dimension symbolic: one session serves every shape of this rank.
        graph = helper.make_graph(
            nodes, f"{op}_{dtype}_axis{axis}_rank{rank}", inputs,
            [helper.make_tensor_value_info("y", element, [None] * out_rank)], initializer=initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="softmax-suite")
        onnx.checker.check_model(model)
        return ort.InferenceSession(model.SerializeToString(), sess_options=options(),
                                    providers=["CPUExecutionProvider"])

    @cache
    def loss_session(dtype: str, axis: int, rank: int, reduction: str, ignore_index: int | None,
                     weighted: bool) -> Any:
        element = element_types[dtype]
        axis %= rank
        dims = [f"d{i}" for i in range(rank)]
        # SoftmaxCrossEntropyLoss takes the classes along axis 1 of (N, C, d1, ...).
        order = [i for i in range(rank) if i != axis]
        perm = [order[0], axis, *order[1:]]
        inputs = [helper.make_tensor_value_info("x", element, dims),
                  helper.make_tensor_value_info("target", TensorProto.INT64, [dims[i] for i in order])]
        nodes, scores = [], "x"
        if perm != list(range(rank)):
            nodes.append(helper.make_node("Transpose", ["x"], ["scores"], perm=perm))
            scores = "scores"
        if weighted:
            inputs.append(helper.make_tensor_value_info("weight", element, [dims[axis]]))
        attributes = {"reduction": reduction}
        if ignore_index is not None:
            attributes["ignore_index"] = ignore_index
        node_inputs = [scores, "target", *(["weight"] if weighted else [])]
        nodes.append(helper.make_node(NODES["cross_entropy"], node_inputs, ["y"], **attributes))
        out_rank = rank - 1 if reduction == "none" else 0
        graph = helper.make_graph(
            nodes, f"cross_entropy_{dtype}_axis{axis}_rank{rank}_{reduction}", inputs,
            [helper.make_tensor_value_info("y", element, [None] * out_rank)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="softmax-suite")
        onnx.checker.check_model(model)
        return ort.InferenceSession(model.SerializeToString(), sess_options=options(),
                                    providers=["CPUExecutionProvider"])

    def cross_entropy(x: np.ndarray, axis: int, target: np.ndarray, reduction: str,
                      ignore_index: int | None = None, weight: np.ndarray | None = None) -> np.ndarray:
        feeds = {"x": x, "target": np.asarray(target, dtype=np.int64)}
        if weight is not None:
            feeds["weight"] = weight
        chosen = loss_session(names[x.dtype], axis, x.ndim, reduction,
                              None if ignore_index is None else int(ignore_index), weight is not None)
        return chosen.run(None, feeds)[0]

    def forward(op: str) -> Any:
        def call(x: np.ndarray, axis: int, scale: float | None = None,
                 mask: np.ndarray | None = None) -> np.ndarray:
            feeds = {"x": x}
            if mask is not None:
                feeds["mask"] = mask
            chosen = session(op, names[x.dtype], axis, x.ndim, scale, None if mask is None else mask.ndim)
            return chosen.run(None, feeds)[0]

        return call

    ops = {**{op: forward(op) for op in SOFTMAX_FORWARD_OPS}, "cross_entropy": cross_entropy}
    unsupported = {}
    for op in ops:
        # The loss is probed on one row whose target is class 0, averaged.
        keywords = {"target": np.array([0]), "reduction": "mean"} if op == "cross_entropy" else {}
        for dtype in STANDARD_DTYPES:  # the float8 formats it does not declare (Backend.dtypes)
            probe = np.array([[0.5, -1.0, 2.0]], dtype=numpy_types[dtype])
            try:
                ops[op](probe, -1, **keywords)
            except Exception as error:  # whatever ORT raises is the measured reason
                first_line = str(error).strip().splitlines()[0]
                unsupported[(op, dtype)] = (f"onnxruntime {ort.__version__} CPUExecutionProvider cannot "
                                            f"run {NODES[op]} on {dtype}: {first_line}")
    return Backend(
        name="onnxruntime",
        version=ort.__version__,
        ops=ops,
        # ORT's tensors are C-ordered: a strided or transposed case is made contiguous here, once,
        # outside the op's timing, rather than by the binding's implicit copy inside every run.
        to_device=lambda x, device: np.ascontiguousarray(x),
        to_numpy=np.asarray,
        # Every dtype stays listed so that a missing kernel is reported with ORT's reason.
        unsupported=unsupported,
        copy=np.copy,
        describe=lambda device: {"threads": THREADS, "inter_op_threads": 1, "execution_mode": "sequential",
                                 "provider": "CPUExecutionProvider"},
        options=(*ATTENTION_OPTIONS, *SCE_OPTIONS),
        # Measured (onnxruntime 1.32): a fully masked row gives Softmax and LogSoftmax NaN,
        # ReduceLogSumExp -inf.
        fully_masked="nan",
    )
