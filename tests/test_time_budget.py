"""The time budget: fewer iterations for later batches when the configured ones would not fit, never fewer images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from attack_fakes import CountingModel, FakeClock, write_inputs
from click.testing import CliRunner

from nips_adv.attacks.directory import attack_directory
from nips_adv.attacks.sign_gradient import method_config
from nips_adv.attacks.time_budget import TimeBudget, auto_budget_seconds
from nips_adv.cli.attack import attack_command
from nips_adv.contract.images import read_png, write_png


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


def test_a_tight_budget_cuts_iterations_of_later_batches_and_writes_every_image(tmp_path: Path) -> None:
    clean = write_inputs(tmp_path / "in", 10)
    clock = FakeClock()
    model = CountingModel(clock)
    # Batch of 2 at 10 iterations costs 20 s; 10 images at 10 iterations would need 100 s, the budget is 60 s.
    budget = TimeBudget.starting_now(60.0, clock=clock)
    report = attack_directory(
        tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("i-fgsm", iterations=10),
        batch_size=2, progress=False, time_budget=budget,
    )
    assert report.ok and report.images_done == 10
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(clean)
    # First batch: 10 calls; then (40 s / 8 images) / 1 s = 5 iterations per image for the rest.
    assert len(model.call_sizes) == 10 + 4 * 5
    assert clock.now - 1000.0 <= 60.0
    assert any("time budget" in warning and "from 002.png on, 5 of the 10 iterations" in warning for warning in report.warnings)
    for name, pixels in clean.items():
        written = read_png(tmp_path / "out" / name).astype(int)
        # The gradient is all ones, so every pixel moves by the whole eps even with fewer iterations.
        assert np.array_equal(written, np.clip(pixels.astype(int) + 8, 0, 255)), name


def test_iterations_come_back_when_the_machine_speeds_up(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 6)
    clock = FakeClock()
    # The first batch's 4 calls cost 2 s per image, later ones 0.5 s.
    model = CountingModel(clock, seconds_per_image=lambda call: 2.0 if call < 4 else 0.5)
    report = attack_directory(
        tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("i-fgsm", iterations=4),
        batch_size=2, progress=False, time_budget=TimeBudget.starting_now(40.0, clock=clock),
    )
    assert report.ok and report.images_done == 6
    # Batch 1: 16 s, so 24 s for 4 images = 3 iterations; batch 2 then measures 19 s over 14
    # image-iterations, and 21 s for the last 2 images fit all 4.
    assert len(model.call_sizes) == 4 + 3 + 4
    assert [warning.split(" (")[0] for warning in report.warnings] == [
        "time budget: from 002.png on, 3 of the 4 iterations",
        "time budget: from 004.png on, all 4 iterations",
    ]


def test_a_loose_budget_changes_nothing(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 4)
    clock = FakeClock()
    model = CountingModel(clock)
    report = attack_directory(
        tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("mi-fgsm", iterations=3),
        batch_size=2, progress=False, time_budget=TimeBudget.starting_now(1000.0, clock=clock),
    )
    assert report.ok and not report.warnings
    assert len(model.call_sizes) == 2 * 3


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
         "--iterations", "3", "--batch-size", "1", "--time-budget", "0.5", "-q"],
    )
    assert result.exit_code == 0, result.output
    # The model's restore alone outlasts 0.5 s: one step each (FGSM-like), every image written, a warning.
    assert "time budget: not even one step fits; from img0.png on, 1 of the 3 iterations" in result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    for name in ("img0.png", "img1.png", "img2.png"):
        changed = np.abs(read_png(tmp_path / "out" / name).astype(int) - read_png(tmp_path / "in" / name).astype(int))
        assert changed.max() <= 8 and changed.mean() > 2  # one step of the whole eps
