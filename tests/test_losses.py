"""The loss ops (cross_entropy and its VJP) through the suite's own path: the correct float64
composition passes every loss case in every dtype, each planted bug of tests/bad_losses.py fails
on the cases aimed at it, the oracle's two routes to the gradient agree, and torch's float16
overflow on a large vocabulary is caught."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from softmax_suite.backends.registry import load
from softmax_suite.oracle import cache
from softmax_suite.oracle import cross_entropy as exact
from softmax_suite.oracle.losses import references
from softmax_suite.protocol import Backend
from softmax_suite.runner.targets import Selection, capabilities, questions
from softmax_suite.suites import invariants
from softmax_suite.suites.accuracy import Target, case_input, case_options, run, why_not_case
from softmax_suite.suites.cases import CASES, LOSS
from softmax_suite.suites.policy import Policy
from tests import bad_losses

SETTINGS = Policy()
# The vocabularies' oracle takes seconds per dtype: the planted bugs are aimed at the small cases.
SMALL = [case.name for case in LOSS if "long" not in case.tags]


@functools.cache
def backend(name: str) -> Backend:
    return bad_losses.backend(name)


def statuses(name: str, case: str) -> dict[tuple[str, str, str], str]:
    """(op, cotangent kind or "", dtype) -> status of every accuracy question and the invariants."""
    chosen, found = backend(name), {}
    for dtype in CASES[case].dtypes:
        for op, kinds in (("cross_entropy", [None]), ("cross_entropy_vjp", CASES[case].cotangents)):
            for kind in kinds:
                record = run(Target(op, chosen.name, "cpu", dtype, case, kind), chosen, SETTINGS)
                found[(op, kind or "", dtype)] = record["status"]
        record = invariants.run(Target("cross_entropy", chosen.name, "cpu", dtype, case, None, "invariants"),
                                chosen, SETTINGS)
        found[("invariants", "", dtype)] = record["status"]
    return found


def failing(name: str, case: str) -> set[tuple[str, str, str]]:
    return {key for key, status in statuses(name, case).items() if status != "pass"}


@pytest.mark.parametrize("case", SMALL)
def test_the_correct_composition_passes_every_loss_case(case: str) -> None:
    # Float64Loss: log_softmax by the log1p form in float64, torch's reductions, one rounding. No
    # false alarm on any question, invariants included.
    assert failing("Float64Loss", case) == set()


def test_a_loss_computed_as_minus_log_of_softmax_is_caught() -> None:
    # p_t rounded into the dtype is 1 for a confident correct row: the loss 0 where the exact one is
    # (C - 1) e^-gap, e.g. 1.1544e-9 in float32 (1.04e7 ULP) and 5.0e-22 in float64, in every dtype.
    assert {dtype for op, _, dtype in failing("NegLogOfSoftmax", "loss_confident_correct")
            if op == "cross_entropy"} == {"float16", "bfloat16", "float32", "float64"}
    # A target 1e4 below the others: p_t underflows to 0 and -log(0) = inf where the loss is 1e4.
    assert ("cross_entropy", "", "float32") in failing("NegLogOfSoftmax", "loss_confident_wrong")


def test_label_smoothing_over_the_other_classes_is_caught() -> None:
    # e / (C - 1) on the others instead of e / C on all: the float32 loss of loss_smoothing is
    # 8.210151 where the exact one is 8.209838 (328 ULP against a budget of 17.6); in the 16-bit
    # formats the loss's difference hides in the rounding, the gradient's does not (5.8 ULP against
    # 2.0 in float16).
    found = failing("SmoothingOverOthers", "loss_smoothing")
    assert {("cross_entropy", "", "float32"), ("cross_entropy", "", "float64")} <= found
    assert {("cross_entropy_vjp", "ones", dtype) for dtype in ("float16", "bfloat16", "float32", "float64")} \
        <= found
    assert ("invariants", "", "float32") in found  # the loss is not the backend's own sum h_c (-z_c)


def test_a_mean_that_counts_ignored_rows_is_caught() -> None:
    # 24 rows, every third ignored: the mean over 24 instead of 16 is 2/3 of the exact 5.7655 (3.8437).
    for case in ("loss_ignore_negative", "loss_ignore_in_range", "loss_weights"):
        assert {("cross_entropy", "", "float32"), ("cross_entropy_vjp", "ones", "float32")} <= \
            failing("MeanCountsIgnored", case), case
    # Every row ignored: 0 / 0 is NaN (torch's), 0 / 8 is 0.
    assert ("cross_entropy", "", "float32") in failing("MeanCountsIgnored", "loss_all_ignored")


def test_a_mean_gradient_without_its_one_over_n_is_caught() -> None:
    # loss_typical is a mean over 64 rows: the gradient comes back 64 times too large (-1.0 where the
    # exact is -0.015625), in every dtype; sum and per-row losses are not affected.
    found = failing("VjpWithoutMean", "loss_typical")
    assert {("cross_entropy_vjp", kind, dtype) for kind in ("ones", "random")
            for dtype in ("float16", "bfloat16", "float32", "float64")} <= found
    assert not {key for key in found if key[0] == "cross_entropy"}
    assert failing("VjpWithoutMean", "loss_sum") == set()


def test_the_loss_ops_ask_only_the_loss_cases_and_the_others_never() -> None:
    selection = Selection(devices=(), dtypes=("float32",), cases=[CASES["glossary"], CASES["loss_typical"]],
                          cotangents=("ones", "random"))
    chosen = backend("Float64Loss")
    asked = {(q.target.op, q.target.case) for op in ("log_softmax", "cross_entropy", "cross_entropy_vjp")
             for q in questions(chosen.name, chosen, op, "accuracy", selection)}
    assert asked == {("log_softmax", "glossary"), ("cross_entropy", "loss_typical"),
                     ("cross_entropy_vjp", "loss_typical")}
    assert why_not_case("softmax", CASES["loss_typical"]) == "loss_typical is a loss case: only the loss " \
        "ops ask it"
    record = run(Target("cross_entropy", chosen.name, "cpu", "float32", "glossary"), chosen, SETTINGS)
    assert (record["status"], record["message"]) == ("unsupported", "cross_entropy is asked on the loss "
                                                                    "cases only")


def test_an_option_the_backend_does_not_take_is_not_asked_and_says_why() -> None:
    plain = Backend(name="plain", version="test", ops=dict(backend("Float64Loss").ops),
                    to_device=lambda x, device: x, to_numpy=np.asarray)  # no options listed
    selection = Selection(devices=(), dtypes=("float32",), cotangents=("ones",),
                          cases=[CASES["loss_typical"], CASES["loss_weights"]])
    assert {q.target.case for q in questions("plain", plain, "cross_entropy", "accuracy", selection)} == \
        {"loss_typical"}
    found = capabilities("plain", plain, ["cross_entropy", "cross_entropy_vjp"], selection)
    assert [(entry["option"], entry["reason"]) for entry in found] == [
        ("weight", "plain takes no weight (its adapter lists none in its options)")]


def test_the_records_say_what_the_loss_was_asked() -> None:
    chosen = backend("Float64Loss")
    record = run(Target("cross_entropy", chosen.name, "cpu", "float16", "loss_ignore_negative"), chosen,
                 SETTINGS)
    # 24 rows, rows 0, 3, ..., 21 ignored: 8.
    assert record["loss"] == {"reduction": "mean", "rows": 24, "ignore_index": -1, "ignored_rows": 8}
    assert record["shape"] == [24, 50] and record["bound"]["formula"].startswith("sum_c h_c")
    weights = run(Target("cross_entropy", chosen.name, "cpu", "float16", "loss_weights"), chosen, SETTINGS)
    assert weights["loss"]["zero_weights"] == 10  # every third of 30 classes


@pytest.mark.parametrize("case", ["loss_typical", "loss_sum", "loss_confident_correct", "loss_special",
                                  "loss_target_masked", "loss_ignore_negative"])
def test_the_gradients_fast_route_is_the_loops_answer(case: str) -> None:
    # Where -F h is exact (no smoothing; F w_t exact), the gradient's exact values come from
    # log_softmax_vjp's fast path; they must be cross_entropy_vjp's own, bit for bit.
    for dtype in CASES[case].dtypes:
        x = case_input(case, dtype)
        options = dict(case_options(case, dtype))
        target, reduction = options.pop("target"), options.pop("reduction")
        # 0.5 and 1: exact factors for every reduction (the mean of loss_typical is over 64 rows).
        g = np.full(x.shape[0], 0.5) if reduction == "none" else np.array(1.0)
        found = references(True, x, -1, g, target, reduction, **options)["cross_entropy_vjp"]
        assert "double_double" in found.certificate  # the fast path's tiers: the route under test
        loop = exact.cross_entropy_vjp(x, target, g, reduction=reduction, **{
            key: value for key, value in options.items()})
        assert np.array_equal(found.rounded, loop, equal_nan=True), (case, dtype)


def test_a_reduced_loss_is_one_value_and_its_reference_is_kept_on_disk(tmp_path) -> None:
    x = case_input("loss_typical", "float32")
    options = case_options("loss_typical", "float32")
    cache.use_disk(tmp_path, None)
    try:
        first = cache.reference("cross_entropy", x, -1, **options)
        cache.clear()
        again = cache.reference("cross_entropy", x, -1, **options)
    finally:
        cache.use_disk(None, None)
        cache.clear()
    assert first.shape == again.shape == ()
    assert first.rounded == again.rounded and first.terms.keys() == again.terms.keys()
    assert float(first.rounded) == float(exact.cross_entropy(x, options["target"]))


def test_torch_float16_overflow_on_a_large_vocabulary_is_caught() -> None:
    torch = load("torch")
    if not isinstance(torch, Backend):
        pytest.skip(f"torch: {torch.reason}")
    # 2 rows of 128256 logits N(0, 0.02^2): torch's float16 cross_entropy sums its exponentials in
    # float16 and returns inf; the exact mean loss is 11.76. The gradient comes back 0 where it is
    # about 1/(2 * 128256) per class: 72 ULP against a budget of 5.
    record = run(Target("cross_entropy", "torch", "cpu", "float16", "vocab_128k"), torch, SETTINGS)
    assert record["status"] in ("fail", "known_failure") and record["failure"] == "semantic"
    assert record["semantic"] == {"inf_vs_finite": 1}
    assert "11.76" in record["message"]
    bfloat16 = run(Target("cross_entropy", "torch", "cpu", "bfloat16", "vocab_128k"), torch, SETTINGS)
    assert bfloat16["status"] == "pass"


def test_an_isolated_backend_gets_the_losss_arguments() -> None:
    # --isolate sends the keywords to the worker process: the targets, reduction, ignore_index and
    # weights reach numpy's cross_entropy there, and its verdicts are the in-process ones.
    from softmax_suite.backends import isolation

    isolated = isolation.Isolated.load("numpy", 60.0)
    try:
        for case, op, kind in (("loss_weights", "cross_entropy", None), ("loss_ignore_negative",
                                                                          "cross_entropy_vjp", "ones")):
            record = run(Target(op, "numpy", "cpu", "float32", case, kind), isolated, SETTINGS)
            assert record["status"] == "pass", record["message"]
    finally:
        isolation.shutdown()
