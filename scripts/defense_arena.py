#!/usr/bin/env python
"""Defense arena: defense recipes against transfer attacks and against adaptive attacks on themselves.

For each recipe in front of the defense's models (EfficientNet-Lite1 + Lite2 by default; the
attacker's Lite0 is never used by the defense), prints top-1 accuracy against the dataset's true
labels with 95% Wilson intervals and image counts:

- clean images;
- transfer: adversarial folders crafted elsewhere (e.g. ``nips-attack DEV OUT 16 --model
  efficientnet_lite0 --method mi-fgsm``), given as ``--transfer NAME=FOLDER``;
- adaptive: MI-FGSM at eps on the defended model itself (``DefendedClassifier.gradient_function``):
  gradients averaged over ``--eot`` random passes (EOT) and straight through JPEG and bit depth
  (BPDA; Athalye, Carlini & Wagner 2018, arXiv 1802.00420), on the first ``--adaptive-limit`` images
  of the validation split (the adaptive attack is the costly one).

Figures are split into the denoiser's training images (dev images sorted by name, the first
``--train-count``) and its validation images (the rest), so a recipe with the denoiser is not
judged on images it was trained on.

    .venv/bin/python scripts/defense_arena.py --recipe plain --recipe denoiser+crops --recipe default \\
        --transfer MI-FGSM=/tmp/adv/lite0_mi --transfer DI-MI-FGSM=/tmp/adv/lite0_di --adaptive-limit 50

Uses only nips_adv's public API: Classifier, parse_recipe, DefendedClassifier, sign_gradient_attack.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from nips_adv.evaluation.accuracy import wilson_interval

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def cell(correct: np.ndarray) -> str:
    if len(correct) == 0:
        return "-"
    low, high = wilson_interval(int(correct.sum()), len(correct))
    return f"{correct.mean():.3f} [{low:.2f}, {high:.2f}] n={len(correct)}"


def load_folder(folder: Path, names: list[str]) -> np.ndarray:
    from nips_adv.contract.images import read_png

    return np.stack([read_png(folder / name) for name in names])


def predict(model, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([model.predict(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SHARED_DATA / "dev_images")
    parser.add_argument("--dataset", type=Path, default=SHARED_DATA / "dev_dataset.csv")
    parser.add_argument("--model", default="efficientnet_lite1,efficientnet_lite2")
    parser.add_argument("--recipe", action="append", dest="recipes", metavar="RECIPE",
                        help="A recipe to measure, repeatable (default: plain and the default recipe); 'default': nips-defense's.")
    parser.add_argument("--passes", type=int, default=4, help="Random passes averaged when classifying.")
    parser.add_argument("--transfer", action="append", default=[], metavar="NAME=FOLDER")
    parser.add_argument("--train-count", type=int, default=150)
    parser.add_argument("--limit", type=int, default=None, help="Only the first N images (sorted by name).")
    parser.add_argument("--adaptive-limit", type=int, default=0, help="Validation images attacked adaptively (0: none).")
    parser.add_argument("--eps", type=float, default=16.0)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--eot", type=int, default=2, help="Random passes averaged per adaptive gradient.")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from nips_adv.attacks.sign_gradient import method_config, sign_gradient_attack
    from nips_adv.contract.csv_files import read_dataset_csv
    from nips_adv.defenses.recipes import DEFAULT_RECIPE, DefendedClassifier, parse_recipe
    from nips_adv.models.classifier import Classifier

    frame = read_dataset_csv(args.dataset)
    true_label = dict(zip(frame["ImageId"] + ".png", frame["TrueLabel"].astype(int)))
    names = sorted(path.name for path in args.images.glob("*.png") if path.name in true_label)[: args.limit]
    labels = np.array([true_label[name] for name in names])
    split = {"train": np.arange(len(names)) < args.train_count}
    split["validation"] = ~split["train"]
    clean = load_folder(args.images, names)
    transfer = {}
    for item in args.transfer:
        label, _, folder = item.partition("=")
        transfer[label] = load_folder(Path(folder), names)

    print(f"defense {args.model}; {len(names)} images ({split['train'].sum()} train, {split['validation'].sum()} validation); "
          f"classify passes {args.passes}; adaptive: MI-FGSM eps {args.eps:g}, {args.iterations} iterations, EOT {args.eot}")
    classifier = Classifier.create(args.model, seed=args.seed)
    for recipe_text in args.recipes or ["plain", "default"]:
        recipe = parse_recipe(DEFAULT_RECIPE if recipe_text == "default" else recipe_text, seed=args.seed)
        model = DefendedClassifier(classifier, recipe, passes=args.passes, gradient_passes=args.eot)
        rows: dict[str, np.ndarray] = {}
        started = time.monotonic()
        rows["clean"] = predict(model, clean, args.batch_size) == labels
        seconds_per_image = (time.monotonic() - started) / len(names)
        for label, pixels in transfer.items():
            rows[f"transfer {label}"] = predict(model, pixels, args.batch_size) == labels
        if args.adaptive_limit:
            chosen = np.flatnonzero(split["validation"])[: args.adaptive_limit]
            config = method_config("mi-fgsm", iterations=args.iterations)
            adversarial = np.concatenate([
                sign_gradient_attack(model, clean[batch], args.eps, labels=labels[batch], targeted=False, config=config)
                for batch in np.array_split(chosen, max(1, math.ceil(len(chosen) / args.batch_size)))
            ])
            correct = np.zeros(len(names), bool)
            correct[chosen] = predict(model, adversarial, args.batch_size) == labels[chosen]
            rows["adaptive MI-FGSM (EOT+BPDA)"] = correct
            split[f"adaptive:{recipe.name}"] = np.isin(np.arange(len(names)), chosen)
        print(f"\n## {recipe.name}  ({seconds_per_image:.2f} s per image to classify, {model.passes} pass(es))")
        for row, correct in rows.items():
            if row.startswith("adaptive"):
                chosen_mask = split[f"adaptive:{recipe.name}"]
                print(f"  {row:32s} validation {cell(correct[chosen_mask])}")
                continue
            print(f"  {row:32s} all {cell(correct)} | train {cell(correct[split['train']])} | "
                  f"validation {cell(correct[split['validation']])}")
        sys.stdout.flush()
    classifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
