"""torch's CPU softmax over the last axis sums in SIMD lanes, as the known deviations on absorb_gap_n1k
say: a model of that summation gives torch's output bits on the case, for each of ATen's CPU kernels
this host can run, and pairwise summation does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.suites.cases import CASES

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
CASE = "absorb_gap_n1k"
DTYPES = ("float32", "float64")
# Bytes in one vector register of ATen's Vectorized<T>, by the capability torch reports, and whether
# that kernel adds float32's lanes by a halving tree (its specialised horizontal reduction) rather
# than in lane order (float64's, and everything on the DEFAULT kernel).
KERNELS = {"AVX512": (64, True), "AVX2": (32, True), "DEFAULT": (32, False)}
CHILD = ("import sys, torch; from softmax_suite.suites.cases import CASES\n"
         "print(torch.backends.cpu.get_cpu_capability())\n"
         "for dtype in sys.argv[1:]:\n"
         "    x = torch.from_numpy(CASES['absorb_gap_n1k'].build(dtype))\n"
         "    print(torch.softmax(x, -1).numpy().tobytes().hex())\n")


def lane_softmax(row: np.ndarray, register: int, halving: bool) -> np.ndarray:
    """exp(x - max) rounded into the row's format (at this case's three values the kernel's own exp
    gives the same bits), summed in L = register / itemsize lanes, lane k a running sum of the entries
    k, k + L, k + 2L, ... (the row's length is a multiple of L), the lanes then added by a halving
    tree or in order, and each exp multiplied by the rounded 1 / sum."""
    kind = row.dtype.type
    e = np.exp(row.astype(np.float64) - row.max()).astype(kind)
    lanes = np.cumsum(e.reshape(-1, register // row.itemsize), axis=0, dtype=kind)[-1]
    while halving and lanes.size > 1:
        lanes = lanes[:lanes.size // 2] + lanes[lanes.size // 2:]
    total = np.cumsum(lanes, dtype=kind)[-1]
    return e * (kind(1) / total)


def torch_softmax_bits(capability: str) -> tuple[str, dict[str, np.ndarray]]:
    """The capability torch runs with when asked for `capability` (a lesser one where the CPU lacks
    it), and its softmax of the case per dtype, computed in a child process: ATen picks its kernel
    once, from ATEN_CPU_CAPABILITY, when torch loads."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability.lower(), "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", CHILD, *DTYPES], env=env, cwd=REPO, capture_output=True,
                           text=True, check=True)
    used, *outputs = child.stdout.split()
    shape = CASES[CASE].build("float32").shape
    return used, {dtype: np.frombuffer(bytes.fromhex(hex_bits), dtype=dtype).reshape(shape)
                  for dtype, hex_bits in zip(DTYPES, outputs, strict=True)}


@pytest.mark.parametrize("capability", list(KERNELS))
def test_lane_model_gives_torch_softmax_bits(capability: str) -> None:
    used, outputs = torch_softmax_bits(capability)
    if used != capability:
        pytest.skip(f"this CPU runs torch's {used} kernel, not {capability}")
    register, float32_halving = KERNELS[capability]
    for dtype in DTYPES:
        x = CASES[CASE].build(dtype)
        model = np.stack([lane_softmax(row, register, float32_halving and dtype == "float32") for row in x])
        assert model.tobytes() == outputs[dtype].tobytes(), dtype
        # The model is not some summation that happens to agree: numpy's pairwise sum gives other bits
        # on the row with the maximum first.
        e = np.exp(x[0].astype(np.float64) - x[0].max()).astype(x.dtype)
        assert (e * (x.dtype.type(1) / np.sum(e))).tobytes() != outputs[dtype][0].tobytes(), dtype
