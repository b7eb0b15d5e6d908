"""``nips-adv bench --model a,b``: each member's figure, the ensemble step's, and their ratio, all measured in the run.

Speed itself is not asserted (no timed tests); what is asserted is that the printed figures are the
ones measured and agree with each other. Random-weight EfficientNet-Lite0 at batch 1 keeps it quick.
"""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from nips_adv.cli.bench import bench_command


@pytest.fixture
def no_matmul_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 4096x4096 matmul peak takes ~15 s on 2 cores and is not what these tests check."""
    from nips_adv.apps import bench

    monkeypatch.setattr(bench, "matmul_gflops", lambda: 50.0)


@pytest.mark.e2e
def test_ensemble_bench_prints_members_ensemble_and_their_ratio(no_matmul_peak: None) -> None:
    result = CliRunner().invoke(
        bench_command, ["--model", "efficientnet_lite0,efficientnet_lite0:0.5", "--batch-size", "1", "--skip-attack-run"]
    )
    assert result.exit_code == 0, result.output
    members = re.findall(r"^member (\S+) float32 batch 1: ([\d.]+) image-gradients/s \(([\d.]+) s per step\)$", result.stdout, re.M)
    assert [name for name, _, _ in members] == ["efficientnet_lite0", "efficientnet_lite0:0.5"]
    ensemble = re.search(
        r"^ensemble efficientnet_lite0,efficientnet_lite0:0.5 float32 batch 1 \(one graph, one session.run\): "
        r"([\d.]+) image-gradients/s \(([\d.]+) s per step\)$", result.stdout, re.M,
    )  # fmt: skip
    assert ensemble is not None, result.stdout
    ratio = re.search(r"^ensemble step / sum of the members' steps: ([\d.]+) / ([\d.]+) s = ([\d.]+) \((within|OVER) the target <= 1.05", result.stdout, re.M)
    assert ratio is not None, result.stdout
    step, total, shown = (float(value) for value in ratio.groups()[:3])
    assert step == pytest.approx(float(ensemble.group(2)), abs=1e-3)
    assert total == pytest.approx(sum(float(seconds) for _, _, seconds in members), abs=2e-3)
    assert shown == pytest.approx(step / total, abs=0.011)
    for per_second, seconds in [(per_second, seconds) for _, per_second, seconds in members] + [ensemble.groups()]:
        assert float(per_second) == pytest.approx(1 / float(seconds), rel=0.02)  # batch 1
    assert "GFLOP/s =" not in result.stdout and "cleverhans" not in result.stdout  # Inception V3's FLOPs, its peer
    plan = re.search(
        r"^default plan's step \(efficientnet_lite0,efficientnet_lite0:0.5 bsr step, 20 copies, batch 1\): "
        r"([\d.]+) image-gradients/s \(([\d.]+) s per step; opening the models took ([\d.]+) s\)$", result.stdout, re.M,
    )  # fmt: skip
    assert plan is not None, result.stdout
    assert float(plan.group(1)) == pytest.approx(20 / float(plan.group(2)), rel=0.02)  # 20 copies of one image per step
    assert re.search(r"^  at this speed a 100-image run would plan: .+ \(\d+ image-gradients per image fit", result.stdout, re.M)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--model", "efficientnet_lite0,nope"], "unknown model 'nope'"),
        (["--model", "efficientnet_lite0,efficientnet_lite1", "--checkpoint", "x"], "1 checkpoint(s) 'x' for 2 model(s)"),
        (["--model", "efficientnet_lite0", "--checkpoint", "/nonexistent/x.ckpt"], "checkpoint /nonexistent/x.ckpt not found"),
    ],
)
def test_bad_lists_are_one_line_exit_2(no_matmul_peak: None, options: list[str], message: str) -> None:
    result = CliRunner().invoke(bench_command, [*options, "--skip-attack-run"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nips-adv bench: error: ") and message in lines[0], lines


def test_the_budget_share_is_read_from_the_tools_time_lines() -> None:
    from nips_adv.apps.bench import AttackRunTime

    run = AttackRunTime(432.0, (), (), (
        "time: first pass 20.0 s for 100 images (attack 17.8 s: 100 image-gradients at 5.62/s, reading and writing 2.2 s); "
        "refinement 405.6 s for 100 images (attack 404.1 s: 4840 image-gradients at 11.98/s, reading and writing 1.5 s)",
        "time: start-up 4.4 s (checks, graph, weights), folder 425.6 s, closing 0.1 s, total 430.1 s of the 450 s budget",
    ))  # fmt: skip
    assert run.gradient_seconds == pytest.approx(421.9) and run.budget_seconds == 450.0
    assert AttackRunTime(1.0, ()).budget_seconds is None


def test_a_bad_eps_list_is_one_line() -> None:
    result = CliRunner().invoke(bench_command, ["--eps", "4,x", "--skip-attack-run"])
    assert result.exit_code == 2 and "--eps '4,x': epsilon 'x' is not a number" in result.stderr
