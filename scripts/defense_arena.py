#!/usr/bin/env python
"""Defense arena: defense recipes against transfer attacks, router-aware attacks, and adaptive attacks on themselves.

For each recipe in front of the defense's models (EfficientNet-Lite1 + Lite2 by default; the
attacker's Lite0 is never used by the defense), prints top-1 accuracy against the dataset's true
labels with 95% Wilson intervals and image counts, for:

- clean images;
- transfer: adversarial folders crafted elsewhere (``nips-attack DEV OUT 16 --model efficientnet_lite0
  --method bsr:copies=5``), ``--transfer NAME=FOLDER``; ``--cycled NAME=FOLDER`` for a folder whose quarters
  (by name) were crafted at eps 4, 8, 12 and 16, as the final round cycled them: one figure per eps too;
  ``--chroma-removed NAME`` adds that set with its chroma removed (its luminance change alone, shared by R,
  G and B: ``adaptive.luminance_only``);
- crafted here on ``--attacker`` at ``--eps``: ``--craft NAME=METHOD[:FIELD=VALUE,...]`` (e.g.
  ``bsr:copies=5,shared_channels=true``, one perturbation for the three channels), and ``--evading
  NAME=METHOD...``, the same leaving untouched the ``--untouched`` smoothest share of each image, where
  the router reads its level (``adaptive.LevelEvadingModel``: the textured rest takes the perturbation);
- adaptive (``--adaptive KIND``, on the first ``--adaptive-limit`` images): MI-FGSM at ``--eps`` on the
  defended model itself, gradients averaged over ``--eot`` random passes (EOT) and straight through JPEG
  and bit depth (BPDA; Athalye, Carlini & Wagner 2018, arXiv 1802.00420): ``eot-bpda``; the same with one
  perturbation for R, G and B: ``colour-free``; and leaving the smoothest parts alone: ``level-evading``.

Images: the dev images sorted by name, ``--split tune`` (1-100: choose there) or ``confirm`` (101-200:
report there) or ``all``; each figure is also given on the images the packaged denoiser never saw
(after the first ``--denoiser-train-count`` by name). A routed recipe's rows say how many images each
branch's level range took.

    .venv/bin/python scripts/defense_arena.py --split confirm --recipe plain --recipe default \\
        --transfer BSR=/tmp/adv/conf_bsr_16 --chroma-removed BSR --craft "BSR shared=bsr:copies=5,shared_channels=true" \\
        --evading "BSR evading=bsr:copies=5" --adaptive eot-bpda --adaptive level-evading --adaptive-limit 10

Uses only nips_adv's public API: Classifier, parse_recipe, DefendedClassifier, sign_gradient_attack, adaptive.
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
SPLITS = {"tune": slice(0, 100), "confirm": slice(100, 200), "all": slice(None)}
ADAPTIVE = ("eot-bpda", "colour-free", "level-evading")


def cell(correct: np.ndarray) -> str:
    if len(correct) == 0:
        return "-"
    low, high = wilson_interval(int(correct.sum()), len(correct))
    return f"{correct.mean():.3f} [{low:.2f}, {high:.2f}] n={len(correct)}"


def load_folder(folder: Path, names: list[str]) -> np.ndarray:
    from nips_adv.contract.images import read_png

    return np.stack([read_png(folder / name) for name in names])


def batches(count: int, size: int) -> list[np.ndarray]:
    return np.array_split(np.arange(count), max(1, math.ceil(count / size)))


def predict(model, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([model.predict(pixels[rows]) for rows in batches(len(pixels), batch_size)])


def attack(model, clean: np.ndarray, eps: float, spec: str, batch_size: int, labels: np.ndarray | None = None) -> np.ndarray:
    """``clean`` attacked by the method ``spec`` on ``model``, non-targeted (true ``labels``, or the model's own)."""
    from nips_adv.attacks.sign_gradient import method_config, parse_method_spec, sign_gradient_attack

    method, overrides = parse_method_spec(spec)
    config = method_config(method, **overrides)
    return np.concatenate([
        sign_gradient_attack(model, clean[rows], eps, labels=None if labels is None else labels[rows], targeted=False, config=config)
        for rows in batches(len(clean), batch_size)
    ])


def named(item: str, option: str) -> tuple[str, str]:
    label, separator, value = item.partition("=")
    if not separator or not label or not value:
        raise SystemExit(f"defense_arena: {option} wants NAME=VALUE, got {item!r}")
    return label, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SHARED_DATA / "dev_images")
    parser.add_argument("--dataset", type=Path, default=SHARED_DATA / "dev_dataset.csv")
    parser.add_argument("--split", choices=tuple(SPLITS), default="confirm")
    parser.add_argument("--model", default="efficientnet_lite1,efficientnet_lite2")
    parser.add_argument("--recipe", action="append", dest="recipes", metavar="RECIPE",
                        help="A recipe to measure, repeatable (default: plain and the default recipe); 'default': nips-defense's.")
    parser.add_argument("--passes", type=int, default=4, help="Random passes averaged when classifying.")
    parser.add_argument("--transfer", action="append", default=[], metavar="NAME=FOLDER")
    parser.add_argument("--cycled", action="append", default=[], metavar="NAME=FOLDER")
    parser.add_argument("--chroma-removed", action="append", default=[], metavar="NAME", help="Also this transfer set, chroma removed.")
    parser.add_argument("--attacker", default="efficientnet_lite0", help="The surrogate --craft and --evading attacks are crafted on.")
    parser.add_argument("--craft", action="append", default=[], metavar="NAME=METHOD[:FIELD=VALUE,...]")
    parser.add_argument("--evading", action="append", default=[], metavar="NAME=METHOD[:FIELD=VALUE,...]")
    parser.add_argument("--untouched", type=float, default=None, help="Share of each image --evading leaves alone [0.3].")
    parser.add_argument("--denoiser-train-count", type=int, default=150,
                        help="The packaged denoiser's training images: the first N dev images by name.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N images of the split.")
    parser.add_argument("--adaptive", action="append", default=[], choices=ADAPTIVE)
    parser.add_argument("--adaptive-limit", type=int, default=10, help="Images attacked adaptively (the first of the split).")
    parser.add_argument("--eps", type=float, default=16.0)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--eot", type=int, default=2, help="Random passes averaged per adaptive gradient.")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from nips_adv.contract.csv_files import read_dataset_csv
    from nips_adv.defenses.adaptive import UNTOUCHED_FRACTION, LevelEvadingModel, luminance_only, noise_levels
    from nips_adv.defenses.noise_level import colour_noise_level
    from nips_adv.defenses.recipes import DEFAULT_RECIPE, DefendedClassifier, parse_recipe
    from nips_adv.models.classifier import Classifier

    frame = read_dataset_csv(args.dataset)
    true_label = dict(zip(frame["ImageId"] + ".png", frame["TrueLabel"].astype(int)))
    every = sorted(path.name for path in args.images.glob("*.png") if path.name in true_label)
    names = every[SPLITS[args.split]][: args.limit]
    unseen_names = set(every[args.denoiser_train_count:])
    unseen = np.array([name in unseen_names for name in names])
    labels = np.array([true_label[name] for name in names])
    clean = load_folder(args.images, names)
    inputs: dict[str, np.ndarray] = {"clean": clean}
    cycled: set[str] = set()
    for option, items in (("--transfer", args.transfer), ("--cycled", args.cycled)):
        for item in items:
            label, folder = named(item, option)
            inputs[f"transfer {label}"] = load_folder(Path(folder), names)
            if option == "--cycled":
                cycled.add(f"transfer {label}")
    for label in args.chroma_removed:
        if f"transfer {label}" not in inputs:
            raise SystemExit(f"defense_arena: --chroma-removed {label!r} names no --transfer or --cycled set")
        inputs[f"transfer {label}, chroma removed"] = luminance_only(clean, inputs[f"transfer {label}"], 255)
        if f"transfer {label}" in cycled:
            cycled.add(f"transfer {label}, chroma removed")
    untouched = UNTOUCHED_FRACTION if args.untouched is None else args.untouched
    if args.craft or args.evading:
        attacker = Classifier.create(args.attacker, seed=args.seed)
        for option, items in (("--craft", args.craft), ("--evading", args.evading)):
            for item in items:
                label, spec = named(item, option)
                started = time.monotonic()
                crafting = attacker if option == "--craft" else LevelEvadingModel(attacker, untouched=untouched)
                inputs[f"crafted {label}"] = attack(crafting, clean, args.eps, spec, args.batch_size)
                print(f"crafted {label} ({spec}{', evading the level' if option == '--evading' else ''}) on {args.attacker} at eps "
                      f"{args.eps:g}: {time.monotonic() - started:.0f} s", flush=True)
        attacker.close()

    print(f"defense {args.model}; split {args.split}: {len(names)} images, {unseen.sum()} of them unseen by the packaged denoiser; "
          f"classify passes {args.passes}; attacks at eps {args.eps:g}; adaptive: MI-FGSM {args.iterations} iterations, EOT {args.eot}")
    for label, pixels in inputs.items():
        levels = noise_levels(pixels)
        print(f"  {label:40s} levels: colour median {np.median(levels[:, 0]):.1f} (min {levels[:, 0].min():.1f}), "
              f"luminance median {np.median(levels[:, 1]):.1f} (min {levels[:, 1].min():.1f})")
    classifier = Classifier.create(args.model, seed=args.seed)
    for recipe_text in args.recipes or ["plain", "default"]:
        recipe = parse_recipe(DEFAULT_RECIPE if recipe_text == "default" else recipe_text, seed=args.seed)
        model = DefendedClassifier(classifier, recipe, passes=args.passes, gradient_passes=args.eot)
        rows: dict[str, tuple[np.ndarray, np.ndarray, float, np.ndarray]] = {}  # correct, which images, seconds, those images
        classified_by: dict[str, np.ndarray] = {}
        for label, pixels in inputs.items():
            started = time.monotonic()
            model.classified_by_branch[:] = 0
            rows[label] = (predict(model, pixels, args.batch_size) == labels, np.ones(len(names), bool), time.monotonic() - started, pixels)
            classified_by[label] = model.classified_by_branch.copy()
        chosen = np.arange(len(names)) < args.adaptive_limit
        for kind in args.adaptive:
            target = LevelEvadingModel(model, untouched=untouched) if kind == "level-evading" else model
            spec = f"mi-fgsm:iterations={args.iterations}" + (",shared_channels=true" if kind == "colour-free" else "")
            started = time.monotonic()
            adversarial = attack(target, clean[chosen], args.eps, spec, args.batch_size, labels=labels[chosen])
            correct = np.zeros(len(names), bool)
            correct[chosen] = predict(model, adversarial, args.batch_size) == labels[chosen]
            rows[f"adaptive {kind}"] = (correct, chosen, time.monotonic() - started, adversarial)
        print(f"\n## {recipe.name}  ({model.passes} pass(es))")
        for label, (correct, mask, seconds, pixels) in rows.items():
            routed = ""
            if recipe.branches:  # by level alone: a consensus branch passes its disagreements on to the next
                counts = np.bincount(recipe.branch_of(colour_noise_level(pixels)), minlength=len(recipe.branches))
                routed = " | levels send " + "/".join(str(count) for count in counts)
                if label in classified_by and any(branch.consensus for branch in recipe.branches):
                    routed += ", classified by " + "/".join(str(count) for count in classified_by[label])
            print(f"  {label:40s} {cell(correct[mask])} | unseen {cell(correct[mask & unseen])} | {seconds:.0f} s{routed}")
            if label in cycled:
                for quarter, rows_of_eps in enumerate(np.array_split(np.arange(len(names)), 4)):
                    print(f"    eps {4 * (quarter + 1):2d}: {cell(correct[rows_of_eps])} | unseen {cell(correct[rows_of_eps][unseen[rows_of_eps]])}")
        sys.stdout.flush()
    classifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
