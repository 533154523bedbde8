"""The hunt's moves along the length ladder (suites.ladder.LENGTHS): rows moved to a rung (or its
neighbour) with their own entries, and toward uniform rows, within the generation's oracle budget; a
hunt from short rows finds the planted float16 row-sum overflow of tests.ladder_bug at a rung, and a
correct backend raises no alarm."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from softmax_suite.backends.registry import load
from softmax_suite.formats import format_of
from softmax_suite.runner.config import Settings
from softmax_suite.suites import corpus
from softmax_suite.suites.hunt.attention import Row
from softmax_suite.suites.hunt.mutations import (
    MUTATIONS,
    SPREAD_KEPT_BELOW,
    _ladder,
    _uniform,
    mutate,
    random_row,
    to_format,
)
from softmax_suite.suites.hunt.search import (
    LADDER_COST,
    OFFSPRING,
    Plan,
    hunt,
    ladder_ceiling,
    row_cost,
    within_ladder_budget,
)
from softmax_suite.suites.ladder import LENGTHS
from tests.test_hunt import run_cli

PLANTED = "tests.ladder_bug:HalfRowSum"
CORRECT = "tests.bad_softmax:Float64Upcast"
ON_THE_LADDER = {n + step for n in LENGTHS for step in (-1, 0, 1)}


def test_the_ladder_move_lands_on_rungs_and_keeps_the_format() -> None:
    rng = np.random.default_rng(0)
    for dtype in ("float16", "bfloat16", "float32"):
        fmt = format_of(dtype)
        for _ in range(60):
            row = random_row(rng, fmt, 64).astype(np.float64)
            row[rng.random(row.size) < 0.2] = -np.inf
            # A finite max stays; tiled to SPREAD_KEPT_BELOW entries or more, the row is already
            # within FAR of its max, as every rung's row will be.
            row = to_format(np.resize(row, max(row.size, SPREAD_KEPT_BELOW)), fmt).astype(np.float64)
            moved = to_format(_ladder(rng, fmt, row, row, 2**17), fmt)
            assert moved.dtype == fmt.np_dtype and moved.size in ON_THE_LADDER and moved.size <= 2**17
            values = moved.astype(np.float64)
            assert not np.isnan(values).any() and not np.isposinf(values).any()
            assert np.isfinite(values).any()
            # Its own entries: every finite value of the new row was one of the row's (or its max).
            assert set(values[np.isfinite(values)].tolist()) <= set(row.tolist())
            if np.isneginf(values).any():
                assert np.isneginf(row).any()
    # Never past the ceiling; without a rung below it the length stays.
    for _ in range(100):
        assert _ladder(rng, format_of("float16"), np.zeros(5), np.zeros(5), 2048).size in {5, *ON_THE_LADDER}
        assert _ladder(rng, format_of("float16"), np.zeros(5), np.zeros(5), 2048).size <= 2048
    assert _ladder(rng, format_of("float16"), np.zeros(5), np.zeros(5), 100).size == 5


def test_the_uniform_move_makes_rows_equal_or_within_a_few_ulps() -> None:
    rng = np.random.default_rng(1)
    fmt = format_of("float16")
    kinds = set()
    for _ in range(200):
        row = to_format(rng.normal(size=int(rng.integers(2, 300))) * 8, fmt).astype(np.float64)
        moved = to_format(_uniform(rng, fmt, row, row, 1024), fmt)
        assert moved.size == row.size and moved.dtype == np.float16
        finite = moved[np.isfinite(moved.astype(np.float64))].astype(np.float64)
        top = finite.max()
        spacing = float(np.spacing(np.float16(top)))
        if (finite == top).all():
            kinds.add("equal")
        elif top - finite.min() <= 4 * spacing:
            kinds.add("ulps")
        else:
            kinds.add("toward")
            assert np.unique(finite, return_counts=True)[1].max() >= 0.3 * finite.size
    assert kinds == {"equal", "ulps", "toward"}


def test_mutate_reaches_the_ladder_only_within_its_ceiling_and_is_reproducible() -> None:
    fmt = format_of("float16")
    assert _ladder in MUTATIONS and _uniform in MUTATIONS

    def lengths(seed: int, ladder: int | None) -> list[int]:
        rng = np.random.default_rng(seed)
        row = to_format(np.arange(6.0), fmt)
        return [mutate(rng, fmt, row, row, 1024, ladder).size for _ in range(400)]

    assert lengths(3, 2**17) == lengths(3, 2**17)
    assert max(lengths(3, 2**17)) > 1024 and set(lengths(3, 2**17)) & {65519, 65520, 65536}
    assert max(lengths(3, None)) <= 1024  # without a ladder ceiling the move stays within max_length
    # The backend's max_length bounds the ladder; an explicit --max-length does too.
    backend = load("numpy")
    assert ladder_ceiling(backend, Plan("softmax", "float16")) == 2**17
    assert ladder_ceiling(backend, Plan("softmax", "float16", max_length=4096)) == 4096
    capped = dataclasses.replace(load(CORRECT), max_length=3000)
    assert ladder_ceiling(capped, Plan("softmax", "float16")) == 3000


def test_the_long_rows_of_a_generation_stay_within_its_budget() -> None:
    rng = np.random.default_rng(2)
    fmt = format_of("float16")
    plan = Plan("softmax", "float16")
    rows = [Row(to_format(rng.normal(size=65536), fmt)) for _ in range(6)]
    rows += [Row(np.zeros(65520, np.float16)) for _ in range(4)] + [Row(np.zeros(7, np.float16))]
    fitted = within_ladder_budget(rng, fmt, rows, plan, vjp=False)
    long = [row for row in fitted if row.values.size > plan.longest]
    assert long and sum(row_cost(row, False, plan.longest) for row in long) <= LADDER_COST
    assert all(row.values.size <= plan.longest for row in fitted if row not in long)
    assert fitted[-1] is rows[-1]
    # A VJP's uniform rows go to mpmath: beyond the budget they are an ulp off (the fast path).
    uniform = [Row(np.full(1024, 2.0, np.float16)) for _ in range(12)]
    fitted = within_ladder_budget(rng, fmt, uniform, plan, vjp=True)
    assert sum(row_cost(row, True) for row in fitted) <= LADDER_COST + 1024 * 12
    assert any(len(np.unique(row.values)) == 2 for row in fitted)


def test_a_hunt_from_short_rows_finds_the_float16_row_sum_overflow_at_a_rung(tmp_path: Path) -> None:
    saved = tmp_path / "found.json"
    # Measured: 10 generations find it for seeds 1, 2, 4, 5 and 6 (not 3); a found row of 2^16 entries
    # is shrunk by its values only (search.shrink_long): to zeros, its length kept.
    for seed in ("1", "4", "6"):
        saved.unlink(missing_ok=True)
        done = run_cli("hunt", "--backend", PLANTED, "--op", "softmax", "--dtype", "float16",
                       "--evaluations", str(10 * OFFSPRING), "--seed", seed, "--keep", "1",
                       "--corpus", str(saved), cwd=tmp_path)
        if done.returncode == 1:
            break
    assert done.returncode == 1, done.stdout + done.stderr
    worst = corpus.read(saved)[0]
    assert worst.backend == PLANTED and worst.dtype == "float16"
    assert worst.x.size in ON_THE_LADDER and worst.x.size >= 65520, worst.description
    assert not worst.x.astype(np.float64).any()  # shrunk to zeros: equal entries, their sum rounds to inf
    assert f"seed {seed}" in done.stdout


def test_a_correct_backend_hunted_along_the_ladder_raises_no_alarm() -> None:
    plan = Plan("softmax", "float16", evaluations=6 * OFFSPRING)
    outcome = hunt(load(CORRECT), CORRECT, "cpu", Settings(), plan)
    assert outcome.found
    for found in outcome.found:
        assert found.record["status"] == "pass", found.record["message"]
