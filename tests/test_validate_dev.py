"""``nips-adv validate --images DIR --dataset CSV``: the dev-set smoke test with score thresholds.

Submissions here are tiny Python entry points (no model); the attacks' outputs are scored by the
real EfficientNet-Lite0 on four of the shared dev images (skipped where the data is absent).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nips_adv.cli.submission import validate_command
from nips_adv.contract.csv_files import read_dataset_csv, read_label_file
from nips_adv.contract.epsilon import epsilon_box
from nips_adv.contract.images import list_png_files, read_png
from nips_adv.evaluation.accuracy import wilson_interval

DEV_IMAGES = 4

ATTACK = """#!/usr/bin/env python
import sys
from pathlib import Path
import numpy as np
from PIL import Image

MODE = {mode!r}
source, target = Path(sys.argv[1]), Path(sys.argv[2])
if MODE == "targets":  # a targeted attack checks it was given target_class.csv
    assert (source / "target_class.csv").is_file()
for path in sorted(source.glob("*.png")):
    pixels = np.asarray(Image.open(path).convert("RGB"))
    if MODE == "black":  # far beyond eps: the organisers clip it back into the box before scoring
        pixels = np.zeros_like(pixels)
    Image.fromarray(pixels).save(target / path.name)
"""

DEFENSE = """#!/usr/bin/env python
import sys
from pathlib import Path

LABELS = {labels!r}
names = sorted(path.name for path in Path(sys.argv[1]).glob("*.png"))
Path(sys.argv[2]).write_text("".join(f"{{name}},{{LABELS[name]}}\\n" for name in names))
"""


def submission(path: Path, submission_type: str, script: str) -> Path:
    entry = "run_defense.sh" if submission_type == "defense" else "run_attack.sh"
    metadata = {"type": submission_type, "container": "me/x:1", "container_gpu": "me/x:1-gpu", "entry_point": entry}
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("metadata.json", json.dumps(metadata))
        info = zipfile.ZipInfo(entry)
        info.create_system, info.external_attr = 3, (0o100755) << 16
        bundle.writestr(info, script)
    return path


@pytest.fixture(scope="module")
def dev(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four shared dev images and the shared dataset CSV (whose other rows have no image here)."""
    folder = tmp_path_factory.mktemp("dev_images")
    for path in list_png_files(shared_data / "dev_images")[:DEV_IMAGES]:
        shutil.copy(path, folder / path.name)
    return folder, shared_data / "dev_dataset.csv"


def labels_of(dev: tuple[Path, Path], column: str) -> dict[str, int]:
    frame = read_dataset_csv(dev[1]).set_index("ImageId")
    return {path.name: int(frame.loc[path.stem, column]) for path in list_png_files(dev[0])}


def run(archive: Path, submission_type: str, dev: tuple[Path, Path], *options: str):
    arguments = [str(archive), "--type", submission_type, "--images", str(dev[0]), "--dataset", str(dev[1]), "--seed", "1", *options]
    return CliRunner().invoke(validate_command, arguments)


@pytest.mark.parametrize("successes, count", [(3, 4), (0, 200), (191, 200), (7, 7)])
def test_wilson_interval_is_the_score_test_inversion(successes: int, count: int) -> None:
    """Wilson (1927): the bounds are the p with (rate - p)^2 = z^2 p (1 - p) / count, roots of a quadratic."""
    rate, z2 = successes / count, 1.96**2
    roots = sorted(np.roots([1 + z2 / count, -(2 * rate + z2 / count), rate * rate]).real)
    assert wilson_interval(successes, count) == pytest.approx((max(0.0, roots[0]), min(1.0, roots[1])), abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_defense_accuracy_against_its_threshold(tmp_path: Path, dev: tuple[Path, Path]) -> None:
    """A defense right on 3 of 4 images: 0.750 with its interval; met at 0.7, missed at 0.8 (exit 1, said so)."""
    truth = labels_of(dev, "TrueLabel")
    wrong = sorted(truth)[0]
    answers = {name: (label % 1000) + 1 if name == wrong else label for name, label in truth.items()}
    archive = submission(tmp_path / "defense.zip", "defense", DEFENSE.format(labels=answers))
    figure = "accuracy of the defense: 0.750 (3 of 4 images, 95% Wilson interval 0.301-0.954)"

    met = run(archive, "defense", dev, "--min-accuracy", "0.7")
    assert met.exit_code == 0, met.output
    assert f"{figure}; --min-accuracy 0.7: met" in met.output
    assert met.output.rstrip().endswith("defense.zip: VALID")

    missed = run(archive, "defense", dev, "--min-accuracy", "0.8", "--quiet")
    assert missed.exit_code == 1, missed.output
    assert f"ERROR: SCORE THRESHOLD MISSED: {figure}; --min-accuracy 0.8" in missed.output
    assert missed.output.rstrip().endswith(
        "defense.zip: INVALID (score threshold missed: --min-accuracy 0.8; the submission itself ran correctly)"
    )


@pytest.mark.e2e
def test_attack_outputs_are_scored_by_the_model_after_clipping(tmp_path: Path, dev: tuple[Path, Path]) -> None:
    """The figure is Lite0's accuracy on the outputs clipped to the eps box, measured here independently."""
    from nips_adv.models.classifier import Classifier

    truth = labels_of(dev, "TrueLabel")
    clean = np.stack([read_png(dev[0] / name) for name in sorted(truth)])
    lower, upper = epsilon_box(clean, 4)
    with Classifier.create("efficientnet_lite0") as model:
        expected = {
            "copy": int((model.predict(clean) == [truth[name] for name in sorted(truth)]).sum()),
            "black": int((model.predict(np.clip(np.zeros_like(clean), lower, upper)) == [truth[n] for n in sorted(truth)]).sum()),
        }
    # An ensemble of one model with itself fuses to the same logits: the same figure, through the ensemble path.
    scorers = {"copy": "efficientnet_lite0", "black": "efficientnet_lite0,efficientnet_lite0:0.5"}
    for mode, correct in expected.items():
        archive = submission(tmp_path / f"{mode}.zip", "attack", ATTACK.format(mode=mode))
        result = run(archive, "attack", dev, "--eps", "4", "--max-accuracy", "1", "--model", scorers[mode])
        assert f"accuracy of {scorers[mode]} on the outputs: {correct / DEV_IMAGES:.3f} ({correct} of {DEV_IMAGES} images" in result.output
        assert "--max-accuracy 1: met" in result.output
        # "black" writes outputs far beyond eps: a warning (the organisers clip), the verdict stays theirs.
        assert result.exit_code == 0, result.output
    assert expected["copy"] >= 3  # Lite0 gets these dev images right: the bar below is missed for a reason
    missed = run(tmp_path / "copy.zip", "attack", dev, "--eps", "4", "--max-accuracy", "0.5")
    assert missed.exit_code == 1 and "SCORE THRESHOLD MISSED: accuracy of efficientnet_lite0" in missed.output


@pytest.mark.slow
def test_targeted_attack_gets_the_dataset_targets_and_a_hit_rate(tmp_path: Path, dev: tuple[Path, Path]) -> None:
    from nips_adv.submission.dev_check import load_dev_set
    from nips_adv.submission.validate import validate_submission

    archive = submission(tmp_path / "targeted.zip", "targeted_attack", ATTACK.format(mode="targets"))
    result = run(archive, "targeted_attack", dev, "--eps", "8", "--min-hit-rate", "0.5", "--max-accuracy", "1")
    assert result.exit_code == 1, result.output  # copying the image hits no target
    assert "SCORE THRESHOLD MISSED: target hit rate of efficientnet_lite0 on the outputs: 0.000 (0 of 4 images" in result.output
    assert "--max-accuracy 1: met" in result.output

    report = validate_submission(
        archive, submission_type="targeted_attack", epsilon=8, keep=True, time_limit=120,
        dev_set=load_dev_set(dev[0], dev[1]),
    )
    try:
        assert report.run is not None and report.run.ok, report.lines()
        given = read_label_file(report.work_dir / "input_images" / "target_class.csv").labels
        assert given == labels_of(dev, "TargetClass")
        assert set(report.figures) == {"accuracy", "hit rate"} and report.figures["hit rate"].count == DEV_IMAGES
    finally:
        shutil.rmtree(report.work_dir, ignore_errors=True)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--max-accuracy", "0.1"], "--max-accuracy needs --images DIR --dataset CSV"),
        (["--images", "{dev}"], "--images and --dataset go together"),
        (["--images", "{dev}", "--dataset", "{csv}", "--min-accuracy", "0.5"], "--min-accuracy applies to defense submissions, not to attack"),
        (["--images", "{dev}", "--dataset", "{csv}", "--max-accuracy", "1.5"], "--max-accuracy 1.5 is not a fraction in 0..1"),
        (["--images", "{dev}", "--dataset", "{csv}", "--model", "efficientnet_lite0,nope"], "unknown model 'nope'"),
        (["--images", "{dev}", "--dataset", "{csv}", "--model", "efficientnet_lite0:-1"], "weight '-1' of model efficientnet_lite0"),
        (["--images", "{dev}", "--dataset", "{csv}", "--checkpoint", "a,b"], "2 checkpoint(s) 'a,b' for 1 model(s)"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, options: list[str], message: str) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    csv = tmp_path / "dev.csv"
    csv.write_text("ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass\na,u,0,0,1,1,3,4\n")
    from nips_adv.contract.images import write_png

    write_png(np.zeros((299, 299, 3), np.uint8), folder / "a.png")
    archive = submission(tmp_path / "a.zip", "attack", ATTACK.format(mode="copy"))
    arguments = [part.format(dev=folder, csv=csv) for part in options]
    result = CliRunner().invoke(validate_command, [str(archive), "--type", "attack", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
