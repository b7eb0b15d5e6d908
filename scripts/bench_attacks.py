#!/usr/bin/env python
"""Attack strength: attacks crafted on one model (white box), scored on several (transfer).

Crafts FGSM, I-FGSM (10 iterations), MI-FGSM (10) and targeted MI-FGSM (20) at eps 16 on the
source model (EfficientNet-Lite0 by default) over the dev images, classifies the adversarial
images with each model, and prints accuracy (non-targeted: lower is stronger) and target hit
rate (targeted: higher is stronger) next to the reference figures of the reference PyTorch
implementation, saying whether ours is at least as strong. ``--variants`` adds DI, TI and the
targeted attack with the margin loss; ``--true-labels`` adds the non-targeted attacks given
the dataset's true labels, the way attack libraries are usually benchmarked (the contract gives an
attack none, so the tools move away from the model's own belief).

    .venv/bin/python scripts/bench_attacks.py --limit 50
    .venv/bin/python scripts/bench_attacks.py --source-model efficientnet_lite0,efficientnet_lite1 --only 'MI-FGSM (10)' \
        --intervals --defense-ensemble efficientnet_lite1,efficientnet_lite2 --step-time

``--source-model`` takes a model list (an ensemble, ``a,b:0.5``); ``--defense-ensemble`` adds the clean
accuracy of an ensemble under both fusions (mean of logits, mean of probabilities); ``--step-time``
times one gradient step of the source ensemble against the sum of its members' own steps.

Uses only nips_adv's public API: Classifier, attack_directory, method_config, score_directory.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from nips_adv.evaluation.accuracy import wilson_interval

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EVAL_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@dataclass(frozen=True)
class AttackRun:
    label: str
    method: str
    iterations: int | None
    targeted: bool
    loss: str | None = None
    """None: the library's default (the cross-entropy)."""
    true_labels: bool = False
    """Non-targeted: move away from the dataset's TrueLabel instead of the model's own belief."""
    reference: tuple[float, float, float] | None = None
    """Reference figures on Lite0 / Lite1 / Lite2 (accuracy, or hit rate when targeted), crafted on Lite0."""


ATTACKS = (
    AttackRun("FGSM", "fgsm", None, False, reference=(0.19, 0.44, 0.48)),
    AttackRun("I-FGSM (10)", "i-fgsm", 10, False, reference=(0.01, 0.28, 0.40)),
    AttackRun("MI-FGSM (10)", "mi-fgsm", 10, False, reference=(0.01, 0.13, 0.15)),
    AttackRun("targeted MI-FGSM (20)", "mi-fgsm", 20, True, reference=(1.00, 0.06, 0.02)),
)
VARIANTS = (
    AttackRun("DI-MI-FGSM (10)", "di-mi-fgsm", 10, False),
    AttackRun("TI-DI-MI-FGSM (10)", "ti-di-mi-fgsm", 10, False),
    AttackRun("targeted DI-MI-FGSM (20)", "di-mi-fgsm", 20, True),
    AttackRun("targeted MI-FGSM (20) margin", "mi-fgsm", 20, True, loss="margin"),
)


def with_true_labels(attack: AttackRun) -> AttackRun:
    return replace(attack, label=f"{attack.label}, true labels", true_labels=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED_DATA / "dev_images", help="Folder of 299x299 PNGs.")
    parser.add_argument("--dataset", type=Path, default=SHARED_DATA / "dev_images.csv", help="Official dataset CSV.")
    parser.add_argument("--limit", type=int, default=None, help="Use the first N images (by name) only [default: all].")
    parser.add_argument("--eps", type=float, default=16.0)
    parser.add_argument("--source-model", default="efficientnet_lite0", help="Model (or model list: an ensemble) the attacks are crafted on.")
    parser.add_argument("--intervals", action="store_true", help="Print every cell's 95%% Wilson interval.")
    parser.add_argument("--defense-ensemble", default=None,
                        help="Model list whose clean accuracy is measured with both fusions (logits, probabilities).")
    parser.add_argument("--step-time", action="store_true",
                        help="Time one gradient step (batch --batch-size) of the source ensemble and of each member alone.")
    parser.add_argument("--eval-models", default=",".join(EVAL_MODELS), help="Comma-separated models that score them.")
    parser.add_argument("--variants", action="store_true", help="Also DI-MI-FGSM, TI-DI-MI-FGSM, targeted DI-MI-FGSM and targeted MI-FGSM with the margin loss.")
    parser.add_argument("--only", default=None,
                        help="Semicolon-separated row names to run, e.g. 'FGSM;targeted MI-FGSM (20)' [default: all].")
    parser.add_argument("--true-labels", action="store_true",
                        help="Also run the non-targeted attacks given the dataset's true labels (outside the contract).")
    parser.add_argument("--own-classes", type=int, default=None,
                        help="Non-targeted attacks move away from the source model's top K classes [default: the library's].")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", type=Path, default=None, help="Keep the adversarial images here [default: a temp folder].")
    arguments = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from nips_adv.attacks import attack_directory, method_config
    from nips_adv.contract.csv_files import write_label_file
    from nips_adv.contract.images import list_png_files
    from nips_adv.evaluation.accuracy import read_dataset_labels, score_directory
    from nips_adv.models.classifier import Classifier

    if not arguments.images.is_dir() or not arguments.dataset.is_file():
        print(f"bench_attacks: need --images DIR and --dataset CSV (looked for {arguments.images}, {arguments.dataset})",
              file=sys.stderr)
        return 2
    eval_models = [name.strip() for name in arguments.eval_models.split(",") if name.strip()]
    attacks = ATTACKS + (VARIANTS if arguments.variants else ())
    if arguments.true_labels:
        attacks += tuple(with_true_labels(attack) for attack in ATTACKS if not attack.targeted)
    if arguments.only:
        wanted = {name.strip().lower() for name in arguments.only.split(";")}
        unknown = wanted - {attack.label.lower() for attack in attacks}
        if unknown:
            print(f"bench_attacks: no row named {'; '.join(sorted(unknown))}; rows: {'; '.join(a.label for a in attacks)}",
                  file=sys.stderr)
            return 2
        attacks = tuple(attack for attack in attacks if attack.label.lower() in wanted)
    dataset = read_dataset_labels(arguments.dataset)

    with tempfile.TemporaryDirectory(prefix="bench_attacks_") as temporary:
        work = arguments.work or Path(temporary)
        clean_dir = work / "clean"
        clean_dir.mkdir(parents=True, exist_ok=True)
        paths = [path for path in list_png_files(arguments.images) if path.stem in dataset.true_labels][: arguments.limit]
        for path in paths:
            link = clean_dir / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
        write_label_file(clean_dir / "target_class.csv", {path.name: dataset.target_classes[path.stem] for path in paths})
        true_labels = {path.name: dataset.true_labels[path.stem] for path in paths}
        print(f"{len(paths)} images from {arguments.images}, eps {arguments.eps:g}, crafted on {arguments.source_model}",
              flush=True)

        folders = {"clean": clean_dir}
        with Classifier.create(arguments.source_model) as source:
            for attack in attacks:
                started = time.perf_counter()
                folders[attack.label] = work / re.sub(r"[^A-Za-z0-9-]+", "_", attack.label).strip("_")
                attack_directory(
                    clean_dir,
                    folders[attack.label],
                    arguments.eps,
                    model=source,
                    config=method_config(attack.method, targeted=attack.targeted, iterations=attack.iterations,
                                         loss=attack.loss, own_classes=arguments.own_classes),
                    targeted=attack.targeted,
                    batch_size=arguments.batch_size,
                    progress=False,
                    true_labels=true_labels if attack.true_labels else None,
                )
                print(f"  crafted {attack.label:<30} {time.perf_counter() - started:7.1f} s", flush=True)

        figures: dict[tuple[str, str], tuple[float, float]] = {}
        correct_images: dict[tuple[str, str], set[str]] = {}
        for model_name in eval_models:
            started = time.perf_counter()
            with Classifier.create(model_name) as model:
                for label, folder in folders.items():
                    report = score_directory(folder, dataset_csv=arguments.dataset, model=model,
                                             batch_size=arguments.batch_size, progress=False)
                    figures[label, model_name] = (report.accuracy, report.target_hit_rate)
                    correct_images[label, model_name] = {score.image for score in report.scores if score.correct}
            print(f"  scored on {model_name:<22} {time.perf_counter() - started:7.1f} s", flush=True)

        defense_lines = []
        for fusion in ("logits", "probabilities") if arguments.defense_ensemble else ():
            with Classifier.create(arguments.defense_ensemble, fusion=fusion) as model:
                report = score_directory(clean_dir, dataset_csv=arguments.dataset, model=model,
                                         batch_size=arguments.batch_size, progress=False)
            low, high = wilson_interval(round(report.accuracy * report.images_scored), report.images_scored)
            defense_lines.append(
                f"defense {arguments.defense_ensemble}, fusion {fusion}: clean accuracy {report.accuracy:.3f} "
                f"({report.correct} of {report.images_scored}; 95% interval {low:.3f}-{high:.3f})")

    print()
    print_table(attacks, eval_models, figures, len(paths))
    if arguments.intervals:
        print_intervals(attacks, eval_models, figures, len(paths))
    for line in defense_lines:
        print(line)
    if arguments.step_time:
        print_step_times(arguments.source_model, arguments.batch_size)
    if arguments.source_model in eval_models:
        print_label_leaks(attacks, arguments.source_model, correct_images)
    return 0


def print_intervals(attacks: tuple[AttackRun, ...], eval_models: list[str], figures: dict, images: int) -> None:
    rows = [("clean", False)] + [(attack.label, attack.targeted) for attack in attacks]
    for label, targeted in rows:
        cells = []
        for name in eval_models:
            rate = figures[label, name][1 if targeted else 0]
            low, high = wilson_interval(round(rate * images), images)
            cells.append(f"{name.replace('efficientnet_', '')} {rate:.3f} [{low:.3f}-{high:.3f}]")
        print(f"{label:<30} " + "  ".join(cells))


def print_step_times(models: str, batch_size: int, repeats: int = 3) -> None:
    """Best-of-``repeats`` seconds of one cross-entropy gradient step on ``batch_size`` 299x299 images:
    the ensemble in one graph against each member alone."""
    import numpy as np

    from nips_adv.attacks.losses import cross_entropy
    from nips_adv.models.classifier import Classifier, parse_members

    pixels = np.random.default_rng(0).integers(0, 256, size=(batch_size, 299, 299, 3), dtype=np.uint8)
    labels = np.arange(1, batch_size + 1)

    def step_seconds(model_list) -> float:
        with Classifier.create(model_list) as model:
            gradient_of = model.gradient_function(cross_entropy)
            gradient_of(pixels, labels)
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                gradient_of(pixels, labels)
                best = min(best, time.perf_counter() - started)
        return best

    members = parse_members(models)
    alone = [step_seconds([member]) for member in members]
    together = step_seconds(members)
    print(f"gradient step, batch {batch_size}: {models} {together:.2f} s; members alone "
          + " + ".join(f"{seconds:.2f}" for seconds in alone)
          + f" = {sum(alone):.2f} s (ensemble / sum = {together / sum(alone):.3f})", flush=True)


def print_label_leaks(attacks: tuple[AttackRun, ...], source_model: str, correct_images: dict) -> None:
    """White box: how many images right after a non-targeted attack were wrong before it.

    The contract gives the attack no true label, so it moves away from the model's own
    prediction; on an image the model got wrong, that can move it onto the true class.
    """
    clean_correct = correct_images["clean", source_model]
    for attack in attacks:
        if attack.targeted:
            continue
        still = correct_images[attack.label, source_model]
        leaked = sorted(still - clean_correct)
        print(f"{attack.label} on {source_model}: {len(still)} images right after the attack, "
              f"{len(leaked)} of them wrong before it" + (f" ({', '.join(leaked)})" if leaked else ""))


def print_table(attacks: tuple[AttackRun, ...], eval_models: list[str], figures: dict, images: int) -> None:
    short = [name.replace("efficientnet_", "") for name in eval_models]
    print(f"{'attack':<30} {'metric':<9} " + " ".join(f"{name + ' (ref)':>20}" for name in short))
    clean = " ".join(f"{figures['clean', name][0]:>20.3f}" for name in eval_models)
    print(f"{'clean':<30} {'accuracy':<9} {clean}")
    weaker = []
    for attack in attacks:
        cells = []
        for name in eval_models:
            accuracy, hit_rate = figures[attack.label, name]
            ours = hit_rate if attack.targeted else accuracy
            reference = dict(zip(EVAL_MODELS, attack.reference)).get(name) if attack.reference else None
            if reference is None:
                cells.append(f"{ours:>20.3f}")
                continue
            # Stronger means lower accuracy (non-targeted) or a higher hit rate (targeted).
            at_least_as_strong = ours >= reference if attack.targeted else ours <= reference
            if not at_least_as_strong:
                low, high = wilson_interval(round(ours * images), images)
                inside = "inside" if low <= reference <= high else "outside"
                weaker.append(f"{attack.label} on {name}: {ours:.3f} vs reference {reference:.2f} "
                              f"({round(ours * images)} of {images} images; the reference is {inside} "
                              f"our 95% interval {low:.3f}-{high:.3f})")
            cells.append(f"{ours:.3f} ({reference:.2f}) {'ok' if at_least_as_strong else 'WEAK':>4}")
        metric = "hit rate" if attack.targeted else "accuracy"
        print(f"{attack.label:<30} {metric:<9} " + " ".join(f"{cell:>20}" for cell in cells))
    print()
    if weaker:
        print("weaker than the reference:\n  " + "\n  ".join(weaker))
    else:
        print("every attack is at least as strong as the reference figures")


if __name__ == "__main__":
    sys.exit(main())
