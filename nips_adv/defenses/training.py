"""Training the LGD denoiser on adversarial examples made with nips_adv's own attacks.

Liao, Liang, Dong, Pang, Hu & Zhu 2018 (arXiv 1712.02976): the denoiser is trained so that the
defense's classifiers see on denoised adversarial images the logits they see on the clean ones.
Here the adversarial images are crafted by ``sign_gradient_attack`` on surrogate models (each image
gets one (method, eps) per surrogate and round, drawn under the seed) and cached in a work folder,
with the clean images' target logits (and those of their mirror images, for flipped batches), so a
resumed or repeated run attacks nothing twice. Checkpoints hold the denoiser, Adam's state and the
step, so a resumed run continues the same trajectory.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..contract.atomic import atomic_write, write_bytes_atomically
from ..contract.images import ImageReadError, list_png_files, read_png
from .denoiser import build_denoiser_training, save_denoiser_weights

logger = logging.getLogger("nips_adv")

IMAGE_SIDE = 299
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "retina")
"""Colour photos bundled with scikit-image (no download); cropped to a square and resized to 299."""


@dataclass
class TrainingSet:
    """Clean images ``(N, 299, 299, 3)`` uint8, adversarial ones ``(M, ...)`` uint8, and for each
    adversarial image the index of its clean one; ``targets`` ``(N, 1000)``: the clean images' logits;
    ``flipped_targets``, when given, those of the clean images mirrored left to right: training then
    mirrors a random half of each batch (adversarial image and target alike)."""

    clean: np.ndarray
    adversarial: np.ndarray
    source: np.ndarray
    targets: np.ndarray
    flipped_targets: np.ndarray | None = None


def split_dev_images(folder: Path, train_count: int) -> tuple[list[Path], list[Path]]:
    """The PNGs of ``folder`` sorted by name: the first ``train_count`` train, the rest validate."""
    paths = sorted(list_png_files(Path(folder)), key=lambda path: path.name)
    return paths[:train_count], paths[train_count:]


def load_images(
    paths: Sequence[Path], *, with_skimage: bool = False, on_unreadable: Callable[[ImageReadError], None] | None = None
) -> np.ndarray:
    """``(N, 299, 299, 3)`` uint8: the PNGs (resized when another size), then scikit-image's photos.

    An unreadable PNG raises ImageReadError, or goes to ``on_unreadable`` and is left out."""
    from PIL import Image

    images = []
    for path in paths:
        try:
            pixels = read_png(path)
        except ImageReadError as error:
            if on_unreadable is None:
                raise
            on_unreadable(error)
            continue
        if pixels.shape[:2] != (IMAGE_SIDE, IMAGE_SIDE):
            pixels = np.asarray(Image.fromarray(pixels).resize((IMAGE_SIDE, IMAGE_SIDE), Image.BICUBIC))
        images.append(pixels)
    if with_skimage:
        import skimage.data

        for name in SKIMAGE_PHOTOS:
            try:
                photo = np.asarray(getattr(skimage.data, name)())
            except Exception as error:  # a photo that needs a download: skip it
                logger.debug("scikit-image photo %s unavailable: %s", name, error)
                continue
            if photo.ndim != 3 or photo.shape[2] < 3:
                continue
            photo = photo[..., :3].astype(np.uint8)
            side = min(photo.shape[:2])
            top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
            square = Image.fromarray(photo[top : top + side, left : left + side])
            images.append(np.asarray(square.resize((IMAGE_SIDE, IMAGE_SIDE), Image.BICUBIC)))
    return np.stack(images) if images else np.zeros((0, IMAGE_SIDE, IMAGE_SIDE, 3), np.uint8)


@dataclass(frozen=True)
class ViewJitter:
    """How far ``random_views`` moves a photo: crops keep ``min_area``-1 of it at aspect ratios within
    ``max_aspect`` (and its inverse); brightness and contrast gains are drawn within 1 +- ``max_gain``."""

    min_area: float = 0.5
    max_aspect: float = 4 / 3
    max_gain: float = 0.15


def view_parameters(count: int, seed: int | Sequence[int], jitter: ViewJitter = ViewJitter(), side: int = IMAGE_SIDE) -> np.ndarray:
    """``(count, 7)`` float: for each view the crop box (left, top, right, bottom, pixels), a mirror flag,
    and the brightness and contrast gains, drawn under ``seed``."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(jitter.min_area, 1.0, count) * side * side
    aspect = np.exp(rng.uniform(-np.log(jitter.max_aspect), np.log(jitter.max_aspect), count))
    width = np.clip(np.round(np.sqrt(area * aspect)), 1, side)
    height = np.clip(np.round(np.sqrt(area / aspect)), 1, side)
    left = np.floor(rng.random(count) * (side - width + 1))
    top = np.floor(rng.random(count) * (side - height + 1))
    mirror = rng.random(count) < 0.5
    brightness, contrast = (rng.uniform(1 - jitter.max_gain, 1 + jitter.max_gain, count) for _ in range(2))
    return np.stack([left, top, left + width, top + height, mirror, brightness, contrast], axis=1)


def apply_view(image: np.ndarray, parameters: np.ndarray) -> np.ndarray:
    """One view of ``image`` (uint8 ``(H, W, 3)``): crop, bicubic resize back to its size, mirror, then
    contrast about its mean and brightness, rounded and clipped to uint8."""
    from PIL import Image

    left, top, right, bottom, mirror, brightness, contrast = (float(value) for value in parameters)
    crop = Image.fromarray(image).crop((int(left), int(top), int(right), int(bottom)))
    pixels = np.asarray(crop.resize((image.shape[1], image.shape[0]), Image.BICUBIC), dtype=np.float64)
    if mirror:
        pixels = pixels[:, ::-1]
    pixels = (pixels - pixels.mean()) * contrast + pixels.mean() * brightness
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def random_views(images: np.ndarray, seed: int | Sequence[int], jitter: ViewJitter = ViewJitter()) -> np.ndarray:
    """A new view of each image (random crop and rescale, mirror, brightness and contrast), drawn under
    ``seed``: the training photos seen anew, for rounds that attack these views instead of the photos."""
    parameters = view_parameters(len(images), seed, jitter, side=images.shape[1])
    return np.stack([apply_view(image, row) for image, row in zip(images, parameters)])


def craft_adversarial(
    clean: np.ndarray,
    *,
    surrogates: Sequence[str],
    methods: Sequence[str],
    epsilons: Sequence[float],
    seed: int,
    cache: Path,
    batch_size: int = 8,
    progress: bool = True,
    through: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Adversarial images ``(len(surrogates) * N, ...)`` uint8 and their clean indices, cached in ``cache``.

    For each surrogate (one classifier at a time), each image gets a (method, eps) drawn under
    ``seed``, a method being a ``method[:field=value,...]`` spec such as ``bsr:copies=5``; images
    sharing one are attacked together. A surrogate's images are saved as soon as they are done
    (``cache``-``name``.npz), so an interrupted run resumes where it stopped. ``through``: denoiser
    weights put in front of each surrogate, attacked with it (an adaptive round); the cache name
    then holds the weights' digest, so other weights never reuse it.
    """
    from tqdm import tqdm

    from ..attacks.sign_gradient import method_spec_config, sign_gradient_attack
    from ..models.classifier import Classifier
    from .denoiser import DenoiserTransform
    from .recipes import DefendedClassifier, Recipe

    denoiser = DenoiserTransform(through) if through is not None else None
    tag = _draw_tag(methods, epsilons, seed)
    if through is not None:
        tag += "-through-" + hashlib.sha256(Path(through).read_bytes()).hexdigest()[:10]
    rng = np.random.default_rng(seed)
    outputs, sources = [], []
    for surrogate in surrogates:
        method_index = rng.integers(len(methods), size=len(clean))
        eps_index = rng.integers(len(epsilons), size=len(clean))
        part = cache.with_name(f"{cache.stem}-{surrogate}-{tag}.npz")
        if part.is_file():
            with np.load(part) as stored:
                if stored["adversarial"].shape == clean.shape:
                    outputs.append(stored["adversarial"])
                    sources.append(np.arange(len(clean)))
                    continue
        adversarial = np.empty_like(clean)
        with Classifier.create(surrogate, seed=seed) as classifier, tqdm(
            total=len(clean), desc=f"attacks on {'denoiser+' if denoiser else ''}{surrogate}", unit="img",
            file=sys.stderr, disable=not progress,
        ) as bar:
            model = classifier if denoiser is None else DefendedClassifier(classifier, Recipe("denoiser", denoiser, False))
            for chosen_method in range(len(methods)):
                for chosen_eps in range(len(epsilons)):
                    indices = np.flatnonzero((method_index == chosen_method) & (eps_index == chosen_eps))
                    config = method_spec_config(methods[chosen_method])
                    for start in range(0, len(indices), batch_size):
                        batch = indices[start : start + batch_size]
                        adversarial[batch] = sign_gradient_attack(
                            model, clean[batch], float(epsilons[chosen_eps]), labels=None, targeted=False, config=config
                        )
                        bar.update(len(batch))
        with atomic_write(part) as stream:
            np.savez(stream, adversarial=adversarial)
        outputs.append(adversarial)
        sources.append(np.arange(len(clean)))
    return np.concatenate(outputs), np.concatenate(sources)


def _draw_tag(methods: Sequence[str], epsilons: Sequence[float], seed: int) -> str:
    text = f"{','.join(methods)}|{','.join(f'{value:g}' for value in epsilons)}|{seed}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def clean_logits(classifier, clean: np.ndarray, cache: Path, batch_size: int = 16) -> np.ndarray:
    """The fused logits ``(N, 1000)`` of ``clean`` under ``classifier``, cached in ``cache``."""
    if cache.is_file():
        with np.load(cache) as stored:
            if stored["logits"].shape[0] == len(clean):
                return stored["logits"]
    logits = np.concatenate([classifier.logits(clean[start : start + batch_size]) for start in range(0, len(clean), batch_size)])
    with atomic_write(cache) as stream:
        np.savez(stream, logits=logits)
    return logits


def save_training_state(session, training, path: Path) -> None:
    """Every variable training changes, by graph name, into ``path`` (.npz, atomic)."""
    values = session.run({variable.op.name: variable for variable in training.state})
    with atomic_write(path) as stream:
        np.savez(stream, **values)


def load_training_state(session, training, path: Path) -> int:
    """Restore a checkpoint written by ``save_training_state``; returns the step it was taken at.

    Raises ``DenoiserWeightsError`` (one line naming the file) when it is unreadable or holds
    another denoiser's state (another architecture).
    """
    from .denoiser import DenoiserWeightsError

    try:
        with np.load(path, allow_pickle=False) as stored:
            unexpected = sorted(set(stored.files) - {variable.op.name for variable in training.state})
            for variable in training.state:
                name = variable.op.name
                if unexpected or name not in stored.files or tuple(stored[name].shape) != tuple(variable.shape):
                    raise DenoiserWeightsError(
                        f"{path}: a checkpoint of another denoiser ({(unexpected or [name])[0]} unexpected, missing "
                        "or of another shape); resume with the architecture it was trained with, or use another work folder"
                    )
                variable.load(stored[name], session)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DenoiserWeightsError(f"{path}: unreadable training checkpoint (truncated or corrupt: {reason})") from None
    return int(session.run(_global_step(training)))


def _global_step(training):
    return next(variable for variable in training.state if variable.op.name == "global_step")


def train_denoiser(
    classifier,
    train: TrainingSet,
    validation: TrainingSet | None,
    output: Path,
    *,
    work_dir: Path,
    steps: int,
    batch_size: int = 4,
    learning_rate: float = 1e-3,
    checkpoint_every: int = 50,
    seed: int = 0,
    progress: bool = True,
    initial_weights: Path | None = None,
    keep: str = "best",
    architecture: str | None = None,
    input_noise: float = 0.0,
) -> dict[str, float]:
    """Train the denoiser in front of ``classifier`` (its graph, weights frozen) for ``steps`` steps.

    Resumes from ``work_dir/checkpoint.npz`` when it exists; otherwise starts from
    ``initial_weights`` (a denoiser .npz: fine-tuning, or growing three levels into four) or the identity.
    ``architecture``: the denoiser's tag; default that of ``initial_weights``, else ``ARCHITECTURE``.
    ``input_noise``: Gaussian noise of this deviation (pixels) added to every training input, drawn
    per step under ``seed`` (the ``noise`` recipe step's, in front of the denoiser); validation stays noiseless. Every ``checkpoint_every`` steps (and
    at the end) the state is saved and, with ``validation``, its loss measured; ``work_dir/weights.npz``
    keeps the weights of the best validation loss so far (``keep="best"``; without validation, or with
    ``keep="last"``, the latest: for validation images attacked unlike the training ones), and ``output``
    gets them when training has finished. Batches are drawn
    from a permutation per epoch seeded by ``seed`` and the epoch, so a resumed run sees the same ones.
    Returns the final figures (train loss of the last interval, validation loss and agreement).
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if not 0 <= input_noise <= 255:
        raise ValueError(f"input noise must be in [0, 255], got {input_noise:g}")
    # Variables are looked up, loaded and saved through the default graph: make it the classifier's.
    with classifier.graph.as_default():
        return _train(classifier, train, validation, output, work_dir, steps, batch_size, learning_rate,
                      checkpoint_every, seed, progress, initial_weights, keep, architecture, input_noise)


def _train(classifier, train, validation, output, work_dir, steps, batch_size, learning_rate, checkpoint_every,
           seed, progress, initial_weights, keep, architecture, input_noise) -> dict[str, float]:
    from tqdm import tqdm

    from ..models.tf_compat import tf1
    from .denoiser import architecture_of, load_denoiser_weights, read_denoiser_weights

    if architecture is None and initial_weights is not None:
        architecture = architecture_of(read_denoiser_weights(initial_weights)).tag
    checkpoint = work_dir / "checkpoint.npz"
    kept = work_dir / "weights.npz"  # the weights --keep chooses, so far
    tf1.set_random_seed(seed)
    training = build_denoiser_training(
        classifier.fused_logits_tensor, learning_rate=learning_rate, target_logits=True, architecture=architecture
    )
    session = classifier.session
    session.run(training.initializer)
    step = load_training_state(session, training, checkpoint) if checkpoint.is_file() else 0
    if step:
        logger.info("resumed from %s at step %d", checkpoint, step)
    elif initial_weights is not None:
        load_denoiser_weights(session, initial_weights)
        logger.info("starting from the denoiser weights in %s", initial_weights)
    per_epoch = max(1, len(train.adversarial) // batch_size)
    best = float("inf")
    figures: dict[str, float] = {}
    recent: list[float] = []
    with tqdm(total=steps, initial=min(step, steps), unit="step", file=sys.stderr, disable=not progress) as bar:
        while step < steps:
            epoch, position = divmod(step, per_epoch)
            order = np.random.default_rng([seed, epoch]).permutation(len(train.adversarial))
            batch = order[position * batch_size : (position + 1) * batch_size]
            adversarial = train.adversarial[batch].astype(np.float32)
            targets = train.targets[train.source[batch]]
            if train.flipped_targets is not None:
                # Mirrored images are new views of the same photos: seeded by the step, so a resumed run flips alike.
                flip = np.random.default_rng([seed, step]).random(len(batch)) < 0.5
                adversarial[flip] = adversarial[flip][:, :, ::-1]
                targets = np.where(flip[:, None], train.flipped_targets[train.source[batch]], targets)
            if input_noise:
                # Seeded by the step (a stream of its own), so a resumed run draws the same noise.
                draw = np.random.default_rng([seed, step, 1]).normal(0.0, input_noise, adversarial.shape)
                adversarial = np.clip(adversarial + draw.astype(np.float32), 0.0, 255.0)
            recent.append(training.step(session, targets, adversarial))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(recent[-20:]):.3f}")
            if step % checkpoint_every == 0 or step == steps:
                save_training_state(session, training, checkpoint)
                figures = {"step": step, "train_loss": float(np.mean(recent))}
                recent = []
                if validation is not None:
                    figures.update(validation_figures(session, training, validation))
                    logger.info(
                        "step %d: train loss %.4f, validation loss %.4f, top-1 agreement with clean %.3f",
                        step, figures["train_loss"], figures["validation_loss"], figures["validation_agreement"],
                    )
                    if figures["validation_loss"] < best or keep == "last":
                        best = min(best, figures["validation_loss"])
                        save_denoiser_weights(session, kept)
                else:
                    save_denoiser_weights(session, kept)
    if not kept.is_file() or (keep == "last" and step == steps):
        save_denoiser_weights(session, kept)
    # OUTPUT appears only now, whole: a run killed earlier leaves its weights in the work folder only.
    write_bytes_atomically(Path(output), kept.read_bytes())
    return figures


def validation_figures(session, training, validation: TrainingSet, batch_size: int = 8) -> dict[str, float]:
    """The validation loss, and the share of denoised adversarial images whose top class is the clean image's."""
    losses, agree = [], []
    for start in range(0, len(validation.adversarial), batch_size):
        index = np.arange(start, min(start + batch_size, len(validation.adversarial)))
        targets = validation.targets[validation.source[index]]
        feed = {training.clean: targets, training.adversarial: validation.adversarial[index].astype(np.float32)}
        loss, logits = session.run([training.loss_tensor, training.denoised_logits], feed)
        losses.append(loss * len(index))
        agree.extend(np.argmax(logits, axis=1) == np.argmax(targets, axis=1))
    return {"validation_loss": float(np.sum(losses) / len(agree)), "validation_agreement": float(np.mean(agree))}
