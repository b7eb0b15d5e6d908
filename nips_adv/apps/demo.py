"""The offline demo behind ``make demo``: real photos, the three competition tools, a picture of the result.

The photos are scikit-image's bundled samples (no download), cropped to a box and resized to
299x299 as the official dataset's images are. Their true labels were checked by hand against
the photos; the target classes are fixed here, chosen far from the true ones. The tools run as
subprocesses, exactly as a user (or the organisers) would call them, and the defense's
``result.csv`` files are scored with ``nips_adv.evaluation.accuracy``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from ..contract.constants import IMAGE_SIZE, TARGET_CLASS_FILE
from ..contract.csv_files import write_label_file
from ..contract.images import read_png, write_png
from ..contract.labels import class_name
from ..download.dataset import crop_and_resize
from ..evaluation.accuracy import ScoreReport, score_prediction_file

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_EPSILON = 16.0


class DemoError(Exception):
    """The demo cannot go on (scikit-image missing, a tool failed); the message is one line."""


@dataclass(frozen=True)
class SamplePhoto:
    """One of scikit-image's bundled photos with its ImageNet labels (TF-slim, 1..1000)."""

    image_id: str
    loader: str
    """Function of ``skimage.data`` returning the photo."""
    box: tuple[float, float, float, float]
    """Crop ``x1, y1, x2, y2`` relative to the width and height, as in the official dataset CSV."""
    true_label: int
    target_class: int


SAMPLE_PHOTOS: tuple[SamplePhoto, ...] = (
    # Chelsea's spotted, ticked tabby coat is the look of ImageNet's "Egyptian cat" class; "tabby"
    # (282) and "tiger cat" (283) are its near neighbours, and models rank the three close together.
    SamplePhoto("chelsea", "chelsea", (0.15, 0.0, 0.85, 1.0), true_label=286, target_class=2),  # -> goldfish
    SamplePhoto("coffee", "coffee", (0.12, 0.0, 0.82, 1.0), true_label=968, target_class=341),  # espresso -> zebra
    # A Falcon 9 on its launch pad: "missile" ("projectile, missile", 745, is next).
    SamplePhoto("rocket", "rocket", (0.35, 0.25, 0.65, 0.95), true_label=658, target_class=955),  # -> banana
    # ImageNet has no "motorcycle" class; the closest is "moped" ("motor scooter", 671, is next).
    SamplePhoto("motorcycle", "stereo_motorcycle", (0.12, 0.15, 0.95, 0.92), true_label=666, target_class=146),  # -> king penguin
    SamplePhoto("camera", "camera", (0.0, 0.0, 1.0, 1.0), true_label=873, target_class=981),  # tripod -> volcano
)
"""Photos whose true class is an ImageNet class, verified by looking at them."""


@dataclass(frozen=True)
class DemoLayout:
    """Where the demo writes, all inside the one output folder the user named."""

    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def adversarial(self) -> Path:
        return self.root / "adversarial"

    @property
    def targeted(self) -> Path:
        return self.root / "targeted_adversarial"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def dataset_csv(self) -> Path:
        return self.root / "dataset.csv"

    @property
    def grid_png(self) -> Path:
        return self.root / "grid.png"

    @property
    def index_html(self) -> Path:
        return self.root / "index.html"


@dataclass
class DemoResult:
    """Scores of the defense on the clean, attacked and target-attacked photos, and the pictures written."""

    model_name: str
    eps: float
    clean: ScoreReport
    adversarial: ScoreReport
    targeted: ScoreReport
    layout: DemoLayout
    seconds: float


def load_sample_photo(photo: SamplePhoto) -> np.ndarray:
    """The photo cropped to its box and resized to ``(299, 299, 3)`` uint8, as the dataset downloader does."""
    try:
        from skimage import data as skimage_data
    except ImportError:
        raise DemoError("the demo's photos come with scikit-image: pip install 'nips_adv[demo]'") from None
    loaded = getattr(skimage_data, photo.loader)()
    pixels = loaded[0] if isinstance(loaded, tuple) else loaded  # stereo_motorcycle: (left, right, disparity)
    return crop_and_resize(Image.fromarray(np.asarray(pixels)), photo.box)


def write_sample_photos(folder: Path, photos: tuple[SamplePhoto, ...] = SAMPLE_PHOTOS) -> pd.DataFrame:
    """Write ``IMAGEID.png`` per photo and ``target_class.csv`` into ``folder``; return the dataset rows.

    The rows have the official dataset columns that describe an image (``ImageId,URL,x1,y1,x2,y2,
    TrueLabel,TargetClass``); URL names the scikit-image function the photo comes from.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        write_png(load_sample_photo(photo), folder / f"{photo.image_id}.png")
    write_label_file(folder / TARGET_CLASS_FILE, {f"{photo.image_id}.png": photo.target_class for photo in photos})
    return pd.DataFrame(
        {
            "ImageId": [photo.image_id for photo in photos],
            "URL": [f"skimage.data.{photo.loader}" for photo in photos],
            "x1": [photo.box[0] for photo in photos],
            "y1": [photo.box[1] for photo in photos],
            "x2": [photo.box[2] for photo in photos],
            "y2": [photo.box[3] for photo in photos],
            "TrueLabel": [photo.true_label for photo in photos],
            "TargetClass": [photo.target_class for photo in photos],
        }
    )


def find_tool(name: str) -> str:
    """The console script ``name``: next to the running Python first (a venv used without activating it), else on PATH."""
    sibling = Path(sys.executable).parent / name
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which(name)
    if found is None:
        raise DemoError(f"{name} not found next to {sys.executable} or on PATH: install nips_adv (pip install -e .)")
    return found


def run_tool(name: str, arguments: list[str], *, echo: bool = True) -> None:
    """Run a console tool as a user would; its stderr (progress, errors) passes through. DemoError when it fails."""
    command = [find_tool(name), *arguments]
    if echo:
        print(f"$ {shlex.join([name, *arguments])}", flush=True)
    completed = subprocess.run(command, stdin=subprocess.DEVNULL, check=False)
    if completed.returncode != 0:
        raise DemoError(f"{name} exited with status {completed.returncode}: {shlex.join(command)}")


def run_demo(
    out_dir: Path,
    *,
    model_name: str = DEFAULT_MODEL,
    checkpoint: str | Path | None = None,
    eps: float = DEFAULT_EPSILON,
    iterations: int | None = None,
    photos: tuple[SamplePhoto, ...] = SAMPLE_PHOTOS,
    progress: bool = True,
) -> DemoResult:
    """Write the photos, attack them (non-targeted and targeted), classify all three sets, draw the result.

    Everything goes under ``out_dir`` (see DemoLayout); PNGs left in its image folders by an
    earlier run are removed first, so that only this run's photos are attacked and shown.
    The attacks run MI-FGSM (white-box, all iterations) and the defense classifies plainly.
    ``iterations`` overrides MI-FGSM's defaults (10 non-targeted, 20 targeted). ``model_name`` and
    ``checkpoint`` are the tools' ``--model`` and ``--checkpoint``: a model list (``a,b:0.5``) runs the
    ensemble in all three tools.
    """
    started = time.perf_counter()
    layout = DemoLayout(Path(out_dir))
    for folder in (layout.images, layout.adversarial, layout.targeted):
        _remove_pngs(folder)
    dataset = write_sample_photos(layout.images, photos)
    dataset.to_csv(layout.dataset_csv, index=False)
    layout.predictions.mkdir(parents=True, exist_ok=True)

    common = ["--model", model_name]
    if checkpoint is not None:
        common += ["--checkpoint", str(checkpoint)]
    if not progress:
        common.append("--quiet")
    # A white-box demonstration: the classic recipes with all their steps (the time-fitted default plan
    # spends most of a 5-image budget on start-up), and the model's own plain classification to score them.
    method = "mi-fgsm" if iterations is None else f"mi-fgsm:iterations={iterations}"
    attack_options = common + ["--method", method, "--time-budget", "off"]
    eps_text = f"{eps:g}"
    run_tool("nips-attack", [str(layout.images), str(layout.adversarial), eps_text, *attack_options])
    run_tool("nips-targeted-attack", [str(layout.images), str(layout.targeted), eps_text, *attack_options])
    reports = {}
    for kind, folder in (("clean", layout.images), ("adversarial", layout.adversarial), ("targeted", layout.targeted)):
        result_csv = layout.predictions / f"{kind}.csv"
        run_tool("nips-defense", [str(folder), str(result_csv), "--plain", *common])
        reports[kind] = score_prediction_file(result_csv, layout.dataset_csv)

    result = DemoResult(
        model_name=model_name,
        eps=eps,
        clean=reports["clean"],
        adversarial=reports["adversarial"],
        targeted=reports["targeted"],
        layout=layout,
        seconds=0.0,
    )
    rows = demo_rows(result, photos)
    draw_grid(rows, layout)
    write_index_html(result, rows)
    result.seconds = time.perf_counter() - started
    return result


def _remove_pngs(folder: Path) -> None:
    if folder.is_dir():
        for path in folder.iterdir():
            if path.suffix.lower() == ".png" and path.is_file():
                path.unlink()


@dataclass(frozen=True)
class DemoRow:
    """One photo across the three columns of the grid."""

    image: str
    true_label: int
    target_class: int
    clean_prediction: int | None
    adversarial_prediction: int | None
    targeted_prediction: int | None


def demo_rows(result: DemoResult, photos: tuple[SamplePhoto, ...]) -> list[DemoRow]:
    clean, adversarial, targeted = (
        report.predictions() for report in (result.clean, result.adversarial, result.targeted)
    )
    rows = []
    for photo in photos:
        name = f"{photo.image_id}.png"
        rows.append(
            DemoRow(name, photo.true_label, photo.target_class, clean.get(name), adversarial.get(name), targeted.get(name))
        )
    return rows


def short_class_name(label: int | None) -> str:
    """The first synonym of the class name (``tabby, tabby cat`` -> ``tabby``), or ``-`` for no prediction."""
    return "-" if label is None else class_name(label).split(",")[0]


GRID_COLUMNS = ("original", "non-targeted attack", "targeted attack")
CELL_PADDING = 8
CAPTION_LINES = 2
FONT_SIZE = 15
RIGHT_COLOUR = (20, 120, 40)
WRONG_COLOUR = (190, 30, 30)
TEXT_COLOUR = (30, 30, 30)


def draw_grid(rows: list[DemoRow], layout: DemoLayout) -> None:
    """``grid.png``: one row per photo; original, non-targeted and targeted images, each with its caption.

    Captions give the defense's prediction (green when it is the true class, red otherwise)
    and, per column, the true class or the target class.
    """
    font = _font(FONT_SIZE)
    line_height = FONT_SIZE + 5
    header = line_height + CELL_PADDING
    cell_width = IMAGE_SIZE + 2 * CELL_PADDING
    cell_height = IMAGE_SIZE + CELL_PADDING + CAPTION_LINES * line_height + CELL_PADDING
    canvas = Image.new("RGB", (cell_width * len(GRID_COLUMNS), header + cell_height * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(GRID_COLUMNS):
        draw.text((column * cell_width + CELL_PADDING, CELL_PADDING // 2), title, fill=TEXT_COLOUR, font=font)
    for row_index, row in enumerate(rows):
        top = header + row_index * cell_height
        cells = (
            (layout.images, row.clean_prediction, f"true: {short_class_name(row.true_label)}"),
            (layout.adversarial, row.adversarial_prediction, f"true: {short_class_name(row.true_label)}"),
            (layout.targeted, row.targeted_prediction, f"target: {short_class_name(row.target_class)}"
             + (" (hit)" if row.targeted_prediction == row.target_class else " (missed)")),
        )
        for column, (folder, prediction, reference) in enumerate(cells):
            left = column * cell_width + CELL_PADDING
            image_path = folder / row.image
            if image_path.is_file():
                canvas.paste(Image.fromarray(read_png(image_path)), (left, top))
            caption_top = top + IMAGE_SIZE + CELL_PADDING // 2
            colour = RIGHT_COLOUR if prediction == row.true_label else WRONG_COLOUR
            predicted_text = _fit(draw, f"predicted: {short_class_name(prediction)}", font, IMAGE_SIZE)
            draw.text((left, caption_top), predicted_text, fill=colour, font=font)
            draw.text((left, caption_top + line_height), _fit(draw, reference, font, IMAGE_SIZE), fill=TEXT_COLOUR, font=font)
    canvas.save(layout.grid_png, format="PNG")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` shortened with an ellipsis until it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def write_index_html(result: DemoResult, rows: list[DemoRow]) -> None:
    """``index.html``: a page with the figures and, per photo, the three images with full class names."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(loader=PackageLoader("nips_adv", "templates"), autoescape=select_autoescape(["html", "j2"]))
    template = environment.get_template("demo_index.html.j2")
    layout = result.layout

    def relative(folder: Path, name: str) -> str:
        return (folder / name).relative_to(layout.root).as_posix()

    def label_text(label: int | None) -> str:
        return "no prediction" if label is None else f"{class_name(label)} ({label})"

    photos = [
        {
            "name": row.image,
            "true": label_text(row.true_label),
            "target": label_text(row.target_class),
            "cells": [
                {"title": GRID_COLUMNS[0], "src": relative(layout.images, row.image), "predicted": label_text(row.clean_prediction),
                 "right": row.clean_prediction == row.true_label},
                {"title": GRID_COLUMNS[1], "src": relative(layout.adversarial, row.image),
                 "predicted": label_text(row.adversarial_prediction), "right": row.adversarial_prediction == row.true_label},
                {"title": GRID_COLUMNS[2], "src": relative(layout.targeted, row.image),
                 "predicted": label_text(row.targeted_prediction), "right": row.targeted_prediction == row.true_label,
                 "hit": row.targeted_prediction == row.target_class},
            ],
        }
        for row in rows
    ]
    html = template.render(
        model_name=result.model_name,
        eps=f"{result.eps:g}",
        figures=summary_lines(result),
        grid=layout.grid_png.name,
        photos=photos,
    )
    layout.index_html.write_text(html, encoding="utf-8")


def summary_lines(result: DemoResult) -> list[tuple[str, str]]:
    """(what, figure) pairs: clean accuracy, accuracy after the attack, target hit rate."""

    def figure(count: int, total: int) -> str:
        return f"{count}/{total} = {count / total:.2f}" if total else "no image scored"

    return [
        ("clean accuracy", figure(result.clean.correct, result.clean.images_scored)),
        ("accuracy after nips-attack (non-targeted)", figure(result.adversarial.correct, result.adversarial.images_scored)),
        ("target hit rate after nips-targeted-attack", figure(result.targeted.target_hits, result.targeted.images_scored)),
        ("accuracy after nips-targeted-attack", figure(result.targeted.correct, result.targeted.images_scored)),
    ]
