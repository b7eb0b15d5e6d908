"""``nips-adv train-denoiser OUTPUT.npz``: train the LGD denoiser in front of the defense's models."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..defenses.denoiser import ARCHITECTURE, ARCHITECTURES
from .common import EXIT_SOME_FAILED, configure_logging, fail

DEFAULT_DEFENSE_MODELS = "efficientnet_lite1,efficientnet_lite2"


def _with_clean(clean, adversarial, source, repeats: int = 1):
    """The adversarial images followed by the clean ones ``repeats`` times, each its own source."""
    import numpy as np

    return (np.concatenate([adversarial, *[clean] * repeats]),
            np.concatenate([source, *[np.arange(len(clean))] * repeats]))


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@click.command(name="train-denoiser", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder of PNGs (e.g. the dev images); sorted by name, the first --train-count train, the rest validate.")
@click.option("--train-count", type=click.IntRange(min=1), default=150, show_default=True)
@click.option("--skimage/--no-skimage", "with_skimage", default=True, show_default=True,
              help="Add scikit-image's bundled colour photos to the training images.")
@click.option("--model", "model_name", default=DEFAULT_DEFENSE_MODELS, show_default=True,
              help="The defense's classifiers, whose logits guide the denoiser (frozen).")
@click.option("--surrogates", default=DEFAULT_DEFENSE_MODELS, show_default=True,
              help="Models the training attacks are crafted on, one set of adversarial images each.")
@click.option("--methods", default="mi-fgsm,di-mi-fgsm", show_default=True, help="Attacks drawn per image.")
@click.option("--eps", "epsilons", default="8,16", show_default=True, help="Epsilons drawn per image (pixels).")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Adversarial images per training image and surrogate, each with its own (method, eps) draw.")
@click.option("--extra-round", "extra_rounds", multiple=True, metavar="METHOD[:FIELD=VALUE,...]",
              help="One more round, every image attacked with this method (its eps drawn from --eps), e.g. "
              "bsr:copies=5; repeatable. Earlier rounds' cached images are kept.")
@click.option("--adaptive-round", "adaptive_rounds", multiple=True, metavar="METHOD[:FIELD=VALUE,...]",
              help="One more round attacking each surrogate behind the --init denoiser (white-box through it, "
              "eps drawn from --eps): the images that denoiser lets through, to train it against; repeatable.")
@click.option("--view-rounds", type=click.IntRange(min=0), default=0, show_default=True,
              help="More rounds, each on a new random view of every training image (a crop of 50-100% of it "
              "rescaled, mirrored or not, brightness and contrast within 15%), attacked like --rounds: the views "
              "join the clean images with their own target logits, so the denoiser sees more photos than it has.")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Mirror a random half of each batch (targets: the mirrored clean images' logits).")
@click.option("--input-noise", type=click.FloatRange(min=0, max=255), default=0.0, show_default=True,
              help="Gaussian noise of this deviation (pixels) on every training input, for defenses that put "
              "the noise step in front of the denoiser (noise:S+denoiser).")
@click.option("--init", "initial_weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from these denoiser weights (.npz) instead of the identity: fine-tuning. Ignored when resuming.")
@click.option("--architecture", type=click.Choice(list(ARCHITECTURES)), default=None,
              help=f"The denoiser to train [default: that of --init, else {ARCHITECTURE}]. Weights of the "
              "three-level one grow into the four-level one (--init): it starts as the same function.")
@click.option("--clean-repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --clean: each clean training image appears this many times per epoch (more weight on clean accuracy).")
@click.option("--clean/--no-clean", "with_clean", default=True, show_default=True,
              help="Also train on the clean images themselves (denoised clean -> clean logits), so that clean accuracy holds.")
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True, help="Optimiser steps in all.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Save the training state (denoiser, Adam, step) and validate every N steps.")
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which weights OUTPUT gets: those of the best validation loss, or the last step's "
              "(when the validation images are attacked unlike the training ones, e.g. after --extra-round).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache of adversarial images, target logits and the checkpoint; a run resumes from it "
              "[default: OUTPUT's name + '.work'].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--verbose", "-v", is_flag=True)
def train_denoiser_command(
    output: Path, images: Path, train_count: int, with_skimage: bool, model_name: str, surrogates: str, methods: str,
    epsilons: str, rounds: int, extra_rounds: tuple[str, ...], adaptive_rounds: tuple[str, ...], view_rounds: int, flip: bool, input_noise: float, initial_weights: Path | None, architecture: str | None, clean_repeats: int, with_clean: bool, steps: int, batch_size: int, learning_rate: float, checkpoint_every: int, keep: str, work_dir: Path | None,
    seed: int, quiet: bool, verbose: bool,
) -> None:
    """Train the denoiser (Liao et al. 2018, logit-guided) on adversarial images crafted here, write OUTPUT.npz.

    Resumable: run the same command again to continue from the last checkpoint.
    """
    configure_logging("nips-adv train-denoiser", verbose=verbose)
    import numpy as np

    from ..attacks.sign_gradient import parse_method_spec
    from ..defenses.denoiser import DenoiserWeightsError, architecture_of, read_denoiser_weights
    from ..defenses.training import (
        TrainingSet,
        clean_logits,
        craft_adversarial,
        load_images,
        random_views,
        split_dev_images,
        train_denoiser,
    )
    from ..models.catalogue import ModelListError
    from ..models.checkpoints import CheckpointError
    from ..models.classifier import Classifier, parse_members

    program = "nips-adv train-denoiser"
    try:
        parse_members(model_name)
        surrogate_list = [member.model for member in parse_members(surrogates)]
        method_list = _list(methods)
        eps_list = [float(value) for value in _list(epsilons)]
    except (ModelListError, ValueError) as error:
        fail(program, str(error))
    if not method_list:
        fail(program, f"--methods {methods!r}: name at least one attack method")
    for spec in [*method_list, *extra_rounds, *adaptive_rounds]:
        try:
            parse_method_spec(spec)
        except ValueError as error:
            fail(program, f"attack method {error}")
    if not eps_list or any(not 0 < value <= 255 for value in eps_list):
        fail(program, f"--eps {epsilons!r}: give epsilons in (0, 255]")
    if adaptive_rounds and initial_weights is None:
        fail(program, "--adaptive-round attacks through the --init denoiser: give --init WEIGHTS.npz")
    if initial_weights is not None:
        try:
            initial = architecture_of(read_denoiser_weights(initial_weights))
        except DenoiserWeightsError as error:
            fail(program, str(error))
        if architecture is not None and not initial.grows_into(ARCHITECTURES[architecture]):
            fail(program, f"{initial_weights}: weights of architecture {initial.tag!r} do not fit --architecture {architecture}")
    work_dir = work_dir or output.with_name(output.name + ".work")
    train_paths, validation_paths = split_dev_images(images, train_count)
    if not train_paths:
        fail(program, f"{images}: no PNG images")
    unreadable: list[str] = []

    def skip(error: Exception) -> None:
        unreadable.append(str(error))
        click.echo(f"{program}: warning: {error}; left out", err=True)

    try:
        train_clean = load_images(train_paths, with_skimage=with_skimage, on_unreadable=skip)
        validation_clean = load_images(validation_paths, on_unreadable=skip) if validation_paths else None
        if validation_clean is not None and not len(validation_clean):
            validation_clean = None
        if not len(train_clean):
            fail(program, f"{images}: none of the {len(train_paths)} training images could be read")
        # The work folder is made once the inputs are known good: a usage error leaves nothing behind.
        work_dir.mkdir(parents=True, exist_ok=True)
        # Each round its own seed; extra rounds follow the drawn ones, so adding one keeps their caches.
        round_methods = [method_list] * rounds + [[spec] for spec in extra_rounds]
        crafted = [
            craft_adversarial(
                train_clean, surrogates=surrogate_list, methods=chosen, epsilons=eps_list,
                seed=seed + 1000 * round_index, cache=work_dir / "train.npz", progress=not quiet,
            )
            for round_index, chosen in enumerate(round_methods)
        ]
        crafted += [
            craft_adversarial(
                train_clean, surrogates=surrogate_list, methods=[spec], epsilons=eps_list,
                seed=seed + 1000 * (len(round_methods) + index), cache=work_dir / "train.npz", progress=not quiet,
                through=initial_weights,
            )
            for index, spec in enumerate(adaptive_rounds)
        ]
        # View rounds: new photos as far as the denoiser can tell, each its own clean image (and target).
        views = [random_views(train_clean, [seed, view]) for view in range(view_rounds)]
        crafted += [
            (adversarial, source + (view + 1) * len(train_clean))
            for view, (adversarial, source) in enumerate(
                craft_adversarial(
                    pixels, surrogates=surrogate_list, methods=method_list, epsilons=eps_list,
                    seed=seed + 1000 * view + 500, cache=work_dir / f"train-view{view}-seed{seed}.npz", progress=not quiet,
                )
                for view, pixels in enumerate(views)
            )
        ]
        all_clean = np.concatenate([train_clean, *views])  # the photos, then each round's views
        train_adversarial = np.concatenate([images for images, _ in crafted])
        train_source = np.concatenate([source for _, source in crafted])
        validation_set = None
        if validation_clean is not None:
            validation_adversarial, validation_source = craft_adversarial(
                validation_clean, surrogates=surrogate_list, methods=method_list, epsilons=eps_list,
                seed=seed + 1, cache=work_dir / "validation.npz", progress=not quiet,
            )
        if with_clean:
            train_adversarial, train_source = _with_clean(all_clean, train_adversarial, train_source, clean_repeats)
            if validation_clean is not None:
                validation_adversarial, validation_source = _with_clean(validation_clean, validation_adversarial, validation_source)
        with Classifier.create(model_name, seed=seed) as classifier:
            parts = [("train", train_clean)] + [(f"train-view{view}-seed{seed}", pixels) for view, pixels in enumerate(views)]
            train_targets = np.concatenate([clean_logits(classifier, pixels, work_dir / f"{name}-logits.npz") for name, pixels in parts])
            flipped_targets = np.concatenate([
                clean_logits(classifier, np.ascontiguousarray(pixels[:, :, ::-1]), work_dir / f"{name}-logits-flipped.npz")
                for name, pixels in parts
            ]) if flip else None
            if validation_clean is not None:
                validation_targets = clean_logits(classifier, validation_clean, work_dir / "validation-logits.npz")
                validation_set = TrainingSet(validation_clean, validation_adversarial, validation_source, validation_targets)
            figures = train_denoiser(
                classifier, TrainingSet(all_clean, train_adversarial, train_source, train_targets, flipped_targets),
                validation_set, output, work_dir=work_dir, steps=steps, batch_size=batch_size,
                learning_rate=learning_rate, checkpoint_every=checkpoint_every, seed=seed, progress=not quiet,
                initial_weights=initial_weights, keep=keep, architecture=architecture, input_noise=input_noise,
            )
    except (CheckpointError, ModelListError, DenoiserWeightsError) as error:
        fail(program, str(error))
    except OSError as error:
        fail(program, f"{error.filename or output}: {error.strerror or error}")
    details = ", ".join(f"{key} {value:.4g}" for key, value in figures.items())
    click.echo(f"{program}: wrote {output} ({details or f'the checkpoint had already reached step {steps}'})")
    if unreadable:
        click.echo(f"{program}: {len(unreadable)} unreadable image(s) left out (named above)", err=True)
        sys.exit(EXIT_SOME_FAILED)
