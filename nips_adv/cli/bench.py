"""``nips-adv bench``: how fast the attack runs on this machine, against its own matmul peak; for an ensemble,
its one-graph step against the sum of its members' own steps."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ..contract.constants import BATCH_TIME_LIMIT_S
from ..contract.epsilon import validate_epsilon
from .common import fail, parse_model_option

ENSEMBLE_STEP_TARGET = 1.05
"""Issue 11: an ensemble step costs at most the sum of its members' steps plus 5%."""


@click.command(name="bench")
@click.option(
    "--model",
    "model_name",
    default="inception_v3",
    show_default=True,
    metavar="NAME[:WEIGHT],...",
    help="Model to time, or an ensemble (a,b): then also each member alone and the ensemble step's ratio to their sum.",
)
@click.option(
    "--checkpoint",
    default=None,
    metavar="PREFIX,...",
    help="Checkpoint prefixes, one per model; default: random-weight ones (speed does not depend on the weights).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="PNG folder for the 100-image run [default: random images].")
@click.option("--skip-attack-run", is_flag=True, help="Only the gradient throughput figures.")
@click.option("--eps", "eps_list", default="4,8,12,16", show_default=True, metavar="EPS,...",
              help="The epsilons of the 100-image runs, one run each (the final round cycles these four).")
@click.option("--attack-time-budget", default="auto", show_default=True,
              help="--time-budget of the 100-image run (the default plan needs one: 'off' plans for the contract's 500 s).")
def bench_command(
    model_name: str,
    checkpoint: str | None,
    batch_size: int,
    images_dir: Path | None,
    skip_attack_run: bool,
    eps_list: str,
    attack_time_budget: str,
) -> None:
    """Print image-gradients/s in float32 and bfloat16 and the fraction of the matmul peak (Inception V3); for an
    ensemble, each member's own float32 figure, the ensemble step's and its ratio to the members' sum; the default
    plan's step throughput and the plan a 100-image run would get; then, at each of --eps, the wall time of
    nips-attack with defaults on 100 images, its plan lines, where its time went and the share of its budget spent
    on gradients. Every figure is measured in this run."""
    from ..apps.bench import (
        GRADIENT_FLOP_FACTOR,
        INCEPTION_V3_FORWARD_GFLOP,
        attack_wall_time,
        cleverhans_mi_fgsm_throughput,
        ensemble_step,
        gradient_throughput,
        matmul_gflops,
        plan_throughput,
    )
    from ..models import CheckpointError, ModelListError, get_model_spec
    from ..models.classifier import Member, resolve_networks
    from ..models.random_weights import write_random_checkpoint

    members = parse_model_option("nips-adv bench", model_name, checkpoint)
    try:
        epsilons = [validate_epsilon(text) for text in eps_list.split(",")]
    except ValueError as error:
        fail("nips-adv bench", f"--eps {eps_list!r}: {error}")
    with tempfile.TemporaryDirectory(prefix="nips_adv_bench_ckpt_") as scratch:
        random_ones: dict[str, Path] = {}
        for member in members:
            if member.checkpoint is None and member.model not in random_ones:
                click.echo(f"writing a random-weight {member.model} checkpoint ...", err=True)
                random_ones[member.model] = write_random_checkpoint(
                    get_model_spec(member.model), Path(scratch) / member.model / "model.ckpt"
                )
        members = [Member(m.model, m.weight, m.checkpoint or random_ones[m.model]) for m in members]
        try:
            resolve_networks(members)  # a missing file or another architecture's: one line, before any timing
        except (CheckpointError, ModelListError) as error:
            fail("nips-adv bench", str(error))

        single_inception = [member.model for member in members] == ["inception_v3"]
        peak = matmul_gflops()
        click.echo(f"fp32 matmul 4096x4096: {peak:.0f} GFLOP/s")
        if len(members) > 1:
            step = ensemble_step(members, precision="float32", batch_size=batch_size)
            for figures in step.members:
                click.echo(f"member {figures.label}: {figures.per_second:.2f} image-gradients/s ({figures.seconds_per_call:.3f} s per step)")
            fp32 = step.ensemble
            click.echo(
                f"ensemble {fp32.label} (one graph, one session.run): {fp32.per_second:.2f} image-gradients/s "
                f"({fp32.seconds_per_call:.3f} s per step)"
            )
            verdict = "within" if step.ratio <= ENSEMBLE_STEP_TARGET else "OVER"
            click.echo(
                f"ensemble step / sum of the members' steps: {fp32.seconds_per_call:.3f} / {step.members_seconds:.3f} s = "
                f"{step.ratio:.2f} ({verdict} the target <= {ENSEMBLE_STEP_TARGET:.2f}; best of 3, measured together)"
            )
        else:
            # One model: float32 and bfloat16 (an ensemble's figures are its members' and its one-graph step's).
            fp32 = gradient_throughput(members, precision="float32", batch_size=batch_size)
            bf16 = gradient_throughput(members, precision="bfloat16", batch_size=batch_size)
            for figures in (fp32, bf16):
                line = f"{figures.label}: {figures.per_second:.2f} image-gradients/s"
                if single_inception:  # the FLOP count is Inception V3's
                    achieved = figures.per_second * INCEPTION_V3_FORWARD_GFLOP * GRADIENT_FLOP_FACTOR
                    line += f" ({achieved:.0f} GFLOP/s = {achieved / peak:.0%} of the fp32 matmul peak; target >= 75% in fp32)"
                click.echo(line)
            click.echo(
                f"bfloat16 / float32: {bf16.per_second / fp32.per_second:.2f}x (target >= 1.5x where the CPU has bfloat16 units)"
            )
        # A comparison is printed only when both sides were measured in this run (cleverhans: the [peers] extra).
        peer = cleverhans_mi_fgsm_throughput(batch_size) if single_inception else None
        if peer is not None:
            click.echo(
                f"cleverhans 4.0 MI-FGSM on Keras InceptionV3, measured now: {peer.per_second:.2f} image-iterations/s; "
                f"ours {fp32.per_second:.2f} ({fp32.per_second / peer.per_second:.2f}x)"
            )
        plan = plan_throughput(members, batch_size=batch_size)
        click.echo(
            f"default plan's step ({plan.step.label}): {plan.step.per_second:.2f} image-gradients/s "
            f"({plan.step.seconds_per_call:.3f} s per step; opening the models took {plan.start_up_seconds:.1f} s)"
        )
        click.echo(f"  at this speed a 100-image run would plan: {plan.plan_description} ({plan.plan_reason})")
        if not skip_attack_run:
            model_list = ",".join(f"{m.model}:{m.weight!r}" if m.weight != 1 else m.model for m in members)
            checkpoints = ",".join(str(m.checkpoint) for m in members)
            shares = []
            for eps in epsilons:
                run = attack_wall_time(model_list, checkpoints, images_dir=images_dir, eps=eps, time_budget=attack_time_budget)
                click.echo(
                    f"nips-attack defaults (--method auto, --time-budget {attack_time_budget}) on 100 images at eps {eps:g}: "
                    f"{run.seconds:.0f} s wall (competition limit {BATCH_TIME_LIMIT_S:.0f} s per 100 images)"
                )
                for message in run.plan_messages + run.budget_messages:
                    click.echo(f"  {message}")
                click.echo("  where the time went:")
                for message in run.time_messages:
                    for part in message.removeprefix("time: ").split("; "):
                        click.echo(f"    {part}")
                if run.budget_seconds:
                    shares.append(f"eps {eps:g}: {run.gradient_seconds:.0f} of {run.budget_seconds:.0f} s "
                                  f"({run.gradient_seconds / run.budget_seconds:.0%})")
            if shares:
                click.echo("share of the tool's budget spent on gradients: " + "; ".join(shares))
