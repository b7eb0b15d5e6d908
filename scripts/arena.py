#!/usr/bin/env python
"""Attack arena: craft with chosen recipes on a surrogate ensemble, score on victim models, per eps.

For each recipe, the dev images (sorted by name) are split by eps as the final round did: eps
4/8/12/16 cycled per batch of ``--eps-batch`` images (the final round: 100), or every eps on every
image (``--all-eps``). Each group is attacked as the contract runs an attack (one folder, one
``attack_directory`` call, the time budget of its image count less the surrogate's load time), then
every victim classifies the outputs. Printed per recipe, victim and eps: accuracy against the
dataset's TrueLabel (non-targeted; lower is stronger) or hit rate of its TargetClass (``--targeted``;
higher is stronger), with the image count and the 95% Wilson interval, and the attack's seconds
per 100 images; then the mean over eps.

    .venv/bin/python scripts/arena.py --surrogates efficientnet_lite0,efficientnet_lite1 \\
        --victim efficientnet_lite2 --recipe auto --eps-batch 50
    .venv/bin/python scripts/arena.py --recipe si-ni-ti-di-fgsm --recipe bsr:copies=5,diversity_prob=0.5 \\
        --eps 4 --limit 48 --victim efficientnet_lite2 --victim efficientnet_lite0

A recipe is ``auto`` (the tools' default plan), a method name (``nips-attack --help``), or either
with overrides of ``SignGradientConfig`` fields: ``bsr:copies=5,iterations=10``. A victim is a
model list (``efficientnet_lite2``, or an ensemble ``a,b:0.5``); ``make_victim`` is the one place
that turns a spec into something with ``predict(pixels) -> labels``, so a defended classifier can
be added there as another kind of spec.

Uses only nips_adv's public API: Classifier, attack_directory, method_config, TimeBudget.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nips_adv.evaluation.accuracy import wilson_interval

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FINAL_ROUND_EPS = (4.0, 8.0, 12.0, 16.0)


class Victim(Protocol):
    def predict(self, pixels: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def make_victim(spec: str) -> Victim:
    """The victim a spec names: a model list for ``Classifier.create`` (the only kind so far)."""
    from nips_adv.models.classifier import Classifier

    return Classifier.create(spec)


@dataclass(frozen=True)
class Recipe:
    spec: str
    method: str
    overrides: dict

    def config(self, targeted: bool) -> Any:
        """The pinned SignGradientConfig, or None for ``auto`` (the tools' plan)."""
        from nips_adv.attacks import method_config

        if self.method == "auto":
            return None
        return method_config(self.method, targeted=targeted, **self.overrides)


def parse_recipe(spec: str) -> Recipe:
    """``auto`` or ``method[:field=value,...]`` (nips_adv's one method-spec parser) -> Recipe."""
    from nips_adv.attacks import parse_method_spec

    if spec.partition(":")[0].strip() == "auto":
        if spec.strip() != "auto":
            raise ValueError(f"recipe {spec!r}: auto takes no overrides (it plans them)")
        return Recipe(spec, "auto", {})
    try:
        method, overrides = parse_method_spec(spec)
    except ValueError as error:
        raise ValueError(f"recipe {error}") from None
    return Recipe(spec, method, overrides)


def eps_groups(names: list[str], eps_values: tuple[float, ...], eps_batch: int, all_eps: bool) -> list[tuple[float, list[str]]]:
    """(eps, image names) pairs: every eps on every image, or eps cycled per batch of ``eps_batch`` names."""
    if all_eps:
        return [(eps, list(names)) for eps in eps_values]
    groups = []
    for index, start in enumerate(range(0, len(names), eps_batch)):
        groups.append((eps_values[index % len(eps_values)], names[start : start + eps_batch]))
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED_DATA / "dev_images", help="Folder of 299x299 PNGs.")
    parser.add_argument("--dataset", type=Path, default=SHARED_DATA / "dev_images.csv", help="Official dataset CSV.")
    parser.add_argument("--surrogates", default="efficientnet_lite0,efficientnet_lite1", help="Model list the attacks are crafted on.")
    parser.add_argument("--victim", action="append", default=None, help="Victim spec (repeatable) [default: efficientnet_lite2].")
    parser.add_argument("--recipe", action="append", default=None, help="Recipe (repeatable) [default: auto].")
    parser.add_argument("--targeted", action="store_true", help="Targeted attacks toward the dataset's TargetClass.")
    parser.add_argument("--eps", default=",".join(f"{eps:g}" for eps in FINAL_ROUND_EPS), help="Comma-separated eps values.")
    parser.add_argument("--eps-batch", type=int, default=100, help="Images per eps before cycling to the next [default: 100].")
    parser.add_argument("--all-eps", action="store_true", help="Every eps on every image instead of cycling.")
    parser.add_argument("--split", choices=["tune", "confirm"], default=None,
                        help="tune: dev images 1-100 by name, where choices are made; confirm: 101-200, where they are "
                        "reported (sets --offset and --limit).")
    parser.add_argument("--offset", type=int, default=0, help="Skip the first N images (by name).")
    parser.add_argument("--limit", type=int, default=None, help="Use N images (by name, after --offset) [default: all].")
    parser.add_argument("--time-budget", default="auto",
                        help="Seconds per group, 'auto' (the tools' 4.5 s per image less the surrogate's load time) or 'off'.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", type=Path, default=None, help="Keep the adversarial images here [default: a temp folder].")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="As the tools' --precision: auto times bfloat16 on the plan's first pass where the CPU has its units.")
    arguments = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import logging

    from nips_adv.attacks import attack_directory
    from nips_adv.contract.csv_files import write_label_file
    from nips_adv.contract.images import list_png_files, read_png
    from nips_adv.evaluation.accuracy import read_dataset_labels
    from nips_adv.jobs.time_budget import TimeBudget, auto_budget_seconds
    from nips_adv.models.classifier import Classifier, cpu_has_bfloat16

    logging.basicConfig(format="  %(message)s", level=logging.INFO)
    try:
        recipes = [parse_recipe(spec) for spec in (arguments.recipe or ["auto"])]
        eps_values = tuple(float(value) for value in arguments.eps.split(","))
    except ValueError as error:
        print(f"arena: {error}", file=sys.stderr)
        return 2
    victims = arguments.victim or ["efficientnet_lite2"]
    if not arguments.images.is_dir() or not arguments.dataset.is_file():
        print(f"arena: need --images DIR and --dataset CSV (looked for {arguments.images}, {arguments.dataset})", file=sys.stderr)
        return 2
    dataset = read_dataset_labels(arguments.dataset)
    true_labels, target_classes = dataset.true_labels, dataset.target_classes
    paths = [path for path in list_png_files(arguments.images) if path.stem in true_labels]
    if arguments.split is not None:
        arguments.offset, arguments.limit = (0, 100) if arguments.split == "tune" else (100, 100)
    paths = paths[arguments.offset :][: arguments.limit]
    names = [path.name for path in paths]
    groups = eps_groups(names, eps_values, arguments.eps_batch, arguments.all_eps)
    goal = "hit rate" if arguments.targeted else "accuracy"
    print(f"{len(names)} images from {arguments.images} (offset {arguments.offset}); crafted on {arguments.surrogates}; "
          f"{'targeted' if arguments.targeted else 'non-targeted'}; groups: "
          + ", ".join(f"eps {eps:g} x {len(group)}" for eps, group in groups), flush=True)

    outcomes: dict[tuple[str, str, float], list[bool]] = {}
    seconds: dict[tuple[str, float], list[tuple[float, int]]] = {}
    clean_correct: dict[str, list[bool]] = {}
    with tempfile.TemporaryDirectory(prefix="arena_") as temporary:
        work = arguments.work or Path(temporary)
        folders: list[tuple[Recipe, float, Path, list[str]]] = []
        for recipe_index, recipe in enumerate(recipes):
            load_started = time.monotonic()
            precision = "float32" if arguments.precision == "auto" else arguments.precision
            with Classifier.create(arguments.surrogates, seed=arguments.seed, precision=precision) as surrogate:
                load_seconds = time.monotonic() - load_started
                for group_index, (eps, group) in enumerate(groups):
                    clean_dir = work / f"clean_{group_index}"
                    if not clean_dir.is_dir():
                        clean_dir.mkdir(parents=True)
                        for name in group:
                            (clean_dir / name).symlink_to((arguments.images / name).resolve())
                        write_label_file(clean_dir / "target_class.csv", {name: target_classes[name[:-4]] for name in group})
                    out_dir = work / f"recipe{recipe_index}_group{group_index}"
                    if arguments.time_budget == "off":
                        budget_seconds = None if recipe.method != "auto" else auto_budget_seconds(len(group)) - load_seconds
                    elif arguments.time_budget == "auto":
                        budget_seconds = auto_budget_seconds(len(group)) - load_seconds
                    else:
                        budget_seconds = float(arguments.time_budget)
                    started = time.monotonic()
                    budget = TimeBudget.starting_now(budget_seconds) if budget_seconds is not None else None
                    attack_directory(
                        clean_dir, out_dir, eps, model=surrogate, config=recipe.config(arguments.targeted),
                        targeted=arguments.targeted, batch_size=arguments.batch_size, progress=False,
                        time_budget=budget, seed=arguments.seed,
                        compare_precisions=arguments.precision == "auto" and recipe.method == "auto" and cpu_has_bfloat16(),
                    )
                    elapsed = time.monotonic() - started
                    seconds.setdefault((recipe.spec, eps), []).append((elapsed + load_seconds, len(group)))
                    print(f"  crafted {recipe.spec} eps {eps:g}: {len(group)} images in {elapsed:.1f} s "
                          f"(+{load_seconds:.1f} s load)", flush=True)
                    folders.append((recipe, eps, out_dir, group))
        for victim_spec in victims:
            victim = make_victim(victim_spec)
            try:
                clean_correct[victim_spec] = _correct(victim, arguments.images, names, true_labels, read_png,
                                                      arguments.batch_size, targeted=False)
                for recipe, eps, out_dir, group in folders:
                    labels = target_classes if arguments.targeted else true_labels
                    outcomes.setdefault((recipe.spec, victim_spec, eps), []).extend(
                        _correct(victim, out_dir, group, labels, read_png, arguments.batch_size, targeted=arguments.targeted)
                    )
            finally:
                victim.close()

    print()
    for victim_spec in victims:
        correct = clean_correct[victim_spec]
        print(f"clean accuracy of {victim_spec}: {_cell(correct)}")
    print(f"\n| recipe | victim | eps | {goal} (95% interval) | images | s per 100 images |")
    print("|---|---|---|---|---|---|")
    for recipe in recipes:
        for victim_spec in victims:
            pooled: list[bool] = []
            rates = []
            for eps in dict.fromkeys(eps for eps, _ in groups):
                values = outcomes[(recipe.spec, victim_spec, eps)]
                pooled += values
                rates.append(float(np.mean(values)))
                spent = seconds[(recipe.spec, eps)]
                per_100 = 100 * sum(s for s, _ in spent) / sum(n for _, n in spent)
                print(f"| {recipe.spec} | {victim_spec} | {eps:g} | {_cell(values)} | {len(values)} | {per_100:.0f} |")
            print(f"| {recipe.spec} | {victim_spec} | mean | {np.mean(rates):.3f} (pooled {_cell(pooled)}) | {len(pooled)} | |")
    return 0


def _correct(victim: Victim, folder: Path, names: list[str], labels: dict[str, int], read_png: Any, batch_size: int,
             *, targeted: bool) -> list[bool]:
    """Per image: the victim's prediction equals the image's label (true label, or target when ``targeted``)."""
    outcome = []
    for start in range(0, len(names), batch_size):
        batch = names[start : start + batch_size]
        predictions = victim.predict(np.stack([read_png(folder / name) for name in batch]))
        outcome += [int(prediction) == int(labels[name[:-4]]) for prediction, name in zip(predictions, batch)]
    return outcome


def _cell(values: list[bool]) -> str:
    if not values:
        return "-"
    low, high = wilson_interval(int(sum(values)), len(values))
    return f"{np.mean(values):.3f} ({low:.3f}-{high:.3f})"


if __name__ == "__main__":
    sys.exit(main())
