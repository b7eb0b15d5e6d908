"""``nips-adv bench``: how fast the attack runs on this machine, against its own matmul peak."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ..contract.constants import BATCH_TIME_LIMIT_S


@click.command(name="bench")
@click.option("--model", "model_name", default="inception_v3", show_default=True, help="Model to time.")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint prefix; default: a random-weight one (speed does not depend on the weights).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="PNG folder for the 100-image run [default: random images].")
@click.option("--skip-attack-run", is_flag=True, help="Only the gradient throughput figures.")
@click.option("--attack-time-budget", default="auto", show_default=True,
              help="--time-budget of the 100-image run; 'off' times all 10 iterations whatever it takes.")
def bench_command(
    model_name: str,
    checkpoint: Path | None,
    batch_size: int,
    images_dir: Path | None,
    skip_attack_run: bool,
    attack_time_budget: str,
) -> None:
    """Print image-gradients/s in float32 and bfloat16, the fraction of the matmul peak, and the
    wall time of nips-attack with defaults on 100 images at eps 16."""
    from ..bench import (
        GRADIENT_FLOP_FACTOR,
        INCEPTION_V3_FORWARD_GFLOP,
        attack_wall_time,
        cleverhans_mi_fgsm_throughput,
        gradient_throughput,
        matmul_gflops,
    )
    from ..models import get_model_spec
    from ..models.random_weights import write_random_checkpoint

    with tempfile.TemporaryDirectory(prefix="nips_adv_bench_ckpt_") as scratch:
        if checkpoint is None:
            click.echo(f"writing a random-weight {model_name} checkpoint ...", err=True)
            checkpoint = write_random_checkpoint(get_model_spec(model_name), Path(scratch) / "model.ckpt")
        peak = matmul_gflops()
        click.echo(f"fp32 matmul 4096x4096: {peak:.0f} GFLOP/s")
        fp32 = gradient_throughput(model_name, checkpoint, precision="float32", batch_size=batch_size)
        bf16 = gradient_throughput(model_name, checkpoint, precision="bfloat16", batch_size=batch_size)
        gflop = INCEPTION_V3_FORWARD_GFLOP * GRADIENT_FLOP_FACTOR
        for figures in (fp32, bf16):
            achieved = figures.per_second * gflop
            click.echo(
                f"{figures.label}: {figures.per_second:.2f} image-gradients/s "
                f"({achieved:.0f} GFLOP/s = {achieved / peak:.0%} of the fp32 matmul peak; target >= 75% in fp32)"
            )
        click.echo(f"bfloat16 / float32: {bf16.per_second / fp32.per_second:.2f}x (target >= 1.5x where the CPU has bfloat16 units)")
        # A comparison is printed only when both sides were measured in this run (cleverhans: the [peers] extra).
        peer = cleverhans_mi_fgsm_throughput(batch_size)
        if peer is not None:
            click.echo(
                f"cleverhans 4.0 MI-FGSM on Keras InceptionV3, measured now: {peer.per_second:.2f} image-iterations/s; "
                f"ours {fp32.per_second:.2f} ({fp32.per_second / peer.per_second:.2f}x)"
            )
        if not skip_attack_run:
            run = attack_wall_time(model_name, checkpoint, images_dir=images_dir, time_budget=attack_time_budget)
            full_estimate = 100 * 10 / fp32.per_second
            click.echo(
                f"nips-attack defaults (MI-FGSM, 10 iterations, --time-budget {attack_time_budget}) on 100 images "
                f"at eps 16: {run.seconds:.0f} s (competition limit {BATCH_TIME_LIMIT_S:.0f} s per 100 images; "
                f"the 1000 image-gradients alone take ~{full_estimate:.0f} s at the rate above)"
            )
            for message in run.budget_messages or ("time budget: every image got all 10 iterations",):
                click.echo(f"  {message}")
