"""The time budget: fewer iterations for later batches when the configured ones would not fit, never fewer images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from attack_fakes import CountingModel, FakeClock, write_inputs
from click.testing import CliRunner

from nips_adv.attacks.directory import attack_directory
from nips_adv.attacks.sign_gradient import method_config
from nips_adv.cli.attack import attack_command
from nips_adv.contract.images import read_png, write_png
from nips_adv.jobs.time_budget import TimeBudget, auto_budget_seconds


def test_no_measurement_means_the_configured_iterations() -> None:
    budget = TimeBudget.starting_now(1.0, clock=FakeClock())
    assert budget.iterations_for(10, images_left=100) == 10


def test_iterations_follow_the_measured_cost() -> None:
    clock = FakeClock()
    budget = TimeBudget.starting_now(100.0, clock=clock)
    # 16 images x 10 iterations in 16 s (0.1 s per image-iteration) plus 1.6 s of I/O (0.1 s per image).
    budget.record(images=16, iterations=10, attack_seconds=16.0, other_seconds=1.6)
    clock.now += 17.6
    assert budget.seconds_per_image_iteration == pytest.approx(0.1)
    # 82.4 s left for 84 images: (82.4 / 84 - 0.1) / 0.1 = 8.8 -> 8 iterations.
    assert budget.iterations_for(10, images_left=84) == 8
    assert budget.iterations_for(10, images_left=10) == 10  # fits: never more than configured
    clock.now += 80.0
    assert budget.iterations_for(10, images_left=84) == 1  # never fewer than one, even when late


def test_auto_budget_is_ninety_percent_of_the_contract_rate() -> None:
    assert auto_budget_seconds(100) == pytest.approx(450.0)
    assert auto_budget_seconds(0) == 0.0


def test_a_tight_budget_writes_every_image_first_then_cuts_iterations(tmp_path: Path) -> None:
    clean = write_inputs(tmp_path / "in", 10)
    clock = FakeClock()
    model = CountingModel(clock)
    # One image-gradient costs 1 s: the one-step pass takes 10 s, 10 iterations on 10 images would need 100 more.
    budget = TimeBudget.starting_now(60.0, clock=clock)
    report = attack_directory(
        tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("i-fgsm", iterations=10),
        batch_size=2, progress=False, time_budget=budget,
    )
    assert report.ok and report.images_done == 10
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(clean)
    assert model.call_sizes[:5] == [2] * 5  # the one-step pass over every image comes first
    assert clock.now - 1000.0 <= 60.0
    # 50 s left for 10 images at 1 s per image-iteration: 5 iterations each, from the first batch on.
    assert len(model.call_sizes) == 5 + 5 * 5
    assert any("from 000.png on, 5 of the 10 iterations" in warning for warning in report.warnings)
    assert report.warnings[-1] == "time budget: planned 10 iterations on 10 images; ran them all on 0, fewer on 10, and 0 keep their one-step version"
    for name, pixels in clean.items():
        written = read_png(tmp_path / "out" / name).astype(int)
        # The gradient is all ones, so every pixel moves by the whole eps even with fewer iterations.
        assert np.array_equal(written, np.clip(pixels.astype(int) + 8, 0, 255)), name


@pytest.mark.parametrize("images", [1, 16])
@pytest.mark.parametrize("slows_down", [False, True])
def test_the_budget_binds_inside_a_single_batch(tmp_path: Path, images: int, slows_down: bool) -> None:
    """A run of one batch (16 images or fewer) with absurd iterations ends at its deadline, every image written.

    At a steady speed the one-step pass's measure cuts the iterations to what fits; on a machine that
    slows down after it, the clock read before every iteration stops the attack at the deadline.
    """
    clean = write_inputs(tmp_path / "in", images)
    clock = FakeClock()
    model = CountingModel(clock, seconds_per_image=lambda call: 0.5 if slows_down and call > 0 else 0.1)
    report = attack_directory(
        tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("mi-fgsm", iterations=1_000_000),
        batch_size=16, progress=False, time_budget=TimeBudget.starting_now(30.0, clock=clock),
    )
    step_seconds = 0.5 * images
    assert clock.now - 1000.0 <= 30.0 + step_seconds  # the clock is read before every iteration
    assert report.ok and sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(clean)
    assert report.warnings[-1].startswith(f"time budget: planned 1000000 iterations on {images} images; ran them all on 0, ")
    ending = f"fewer on 0, and {images} keep their one-step version" if slows_down else f"fewer on {images}, and 0 keep their one-step version"
    assert report.warnings[-1].endswith(ending)
    for name, pixels in clean.items():
        changed = np.abs(read_png(tmp_path / "out" / name).astype(int) - pixels.astype(int))
        assert changed.max() <= 8


def test_iterations_come_back_when_the_machine_speeds_up(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 6)
    clock = FakeClock()
    # The one-step pass (3 calls) and the first refinement batch cost 2 s per image, later calls 0.5 s.
    model = CountingModel(clock, seconds_per_image=lambda call: 2.0 if call < 3 + 3 else 0.5)
    report = attack_directory(
        tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("i-fgsm", iterations=4),
        batch_size=2, progress=False, time_budget=TimeBudget.starting_now(52.0, clock=clock),
    )
    assert report.ok and report.images_done == 6
    # One-step pass: 12 s. 40 s left for 6 images at 2 s: 3 iterations; then the measured speed brings all 4 back.
    changes = [warning.split(" (")[0] for warning in report.warnings]
    assert changes[0] == "time budget: from 000.png on, 3 of the 4 iterations"
    assert any(change.endswith("on, all 4 iterations") for change in changes[1:])
    assert clock.now - 1000.0 <= 52.0


def test_a_loose_budget_changes_nothing_but_the_first_pass(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 4)
    clock = FakeClock()
    model = CountingModel(clock)
    report = attack_directory(
        tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("mi-fgsm", iterations=3),
        batch_size=2, progress=False, time_budget=TimeBudget.starting_now(1000.0, clock=clock),
    )
    assert report.ok and not report.warnings
    assert len(model.call_sizes) == 2 + 2 * 3


def test_without_a_budget_the_recipe_runs_in_full_and_alone(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 4)
    model = CountingModel(FakeClock())
    report = attack_directory(tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("mi-fgsm", iterations=3),
                              batch_size=2, progress=False, time_budget=None)
    assert report.ok and len(model.call_sizes) == 2 * 3


@pytest.mark.parametrize(
    ("value", "message"),
    [("soon", "not a number of seconds"), ("-5", "positive"), ("0", "positive"), ("inf", "positive")],
)
def test_bad_time_budget_is_a_usage_error(tmp_path: Path, value: str, message: str) -> None:
    (tmp_path / "in").mkdir()
    result = CliRunner().invoke(attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), "8", "--time-budget", value])
    assert result.exit_code == 2
    assert message in result.output


def test_the_tool_keeps_every_image_under_a_tiny_budget(tmp_path: Path, inception_v3_checkpoint: Path) -> None:
    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    for index in range(3):
        write_png(rng.integers(0, 256, size=(299, 299, 3), dtype=np.uint8), tmp_path / "in" / f"img{index}.png")
    result = CliRunner().invoke(
        attack_command,
        [str(tmp_path / "in"), str(tmp_path / "out"), "8", "--checkpoint", str(inception_v3_checkpoint),
         "--method", "bsr:iterations=3", "--batch-size", "1", "--time-budget", "0.5", "-q"],
    )
    assert result.exit_code == 0, result.output
    # The model's restore alone outlasts 0.5 s: the one-step pass still writes every image; one line says so.
    assert "time budget: planned 3 iterations on 3 images; ran them all on 0, fewer on 0, and 3 keep their one-step version" in result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    for name in ("img0.png", "img1.png", "img2.png"):
        changed = np.abs(read_png(tmp_path / "out" / name).astype(int) - read_png(tmp_path / "in" / name).astype(int))
        assert changed.max() <= 8 and changed.mean() > 2  # one step of the whole eps
