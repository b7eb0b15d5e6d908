"""nips-adv evaluate / report: the organisers' scoring, checked against values computed here.

Defenses here are tiny deterministic Python scripts (the label is a function of the pixels),
so every expected count can be recomputed in the test from the clean images alone (noop,
shift) or from the clipped adversarial images (random noise). Images are 16x16 and batches
are cut at 2 images (the code uses BATCH_IMAGES from plan), so pieces, the epsilon cycle and
resume are exercised in seconds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nips_adv.cli.evaluate import evaluate_command, report_command
from nips_adv.contract.images import read_png, resize_pixels, write_png
from nips_adv.evaluation import plan as plan_module
from nips_adv.evaluation.matrices import compute_scores
from nips_adv.evaluation.plan import DatasetImage
from nips_adv.evaluation.pool import Pool, PoolEntry

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "submissions" / "samples"
CYCLE = (4, 8, 12, 16)
IMAGE_IDS = ["img_a", "img_b", "img_c", "img_d", "img_e"]


def mean_label(pixels: np.ndarray) -> int:
    """Defense 'mean': robust to zero-mean noise."""
    return 1 + int(pixels.astype(np.float64).mean()) % 1000


def corner_label(pixels: np.ndarray) -> int:
    """Defense 'corner': the red value of the top-left pixel (changed by any attack)."""
    return 1 + int(pixels[0, 0, 0])


DEFENSE_SCRIPT = """\
import sys, numpy as np
from pathlib import Path
from PIL import Image
rule = sys.argv[3]
with open(sys.argv[2], "w") as out:
    for path in sorted(Path(sys.argv[1]).glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        label = 1 + int(pixels.astype(np.float64).mean()) % 1000 if rule == "mean" else 1 + int(pixels[0, 0, 0])
        out.write(f"{path.name},{label}\\n")
        if rule == "corner":
            out.write("garbage row without label\\n")
"""

SHIFT_SCRIPT = """\
import sys, numpy as np
from pathlib import Path
from PIL import Image
for path in sorted(Path(sys.argv[1]).glob("*.png")):
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(np.int32)
    # Twice the allowed change: the evaluator must clip it back to eps.
    Image.fromarray(np.clip(pixels + 2 * int(sys.argv[3]), 0, 255).astype(np.uint8)).save(Path(sys.argv[2]) / path.name)
"""


def _submission(folder: Path, kind: str, script: str, *, entry: str | None = None, helper: str | None = None) -> Path:
    folder.mkdir(parents=True)
    entry = entry or ("run_defense.sh" if kind == "defense" else "run_attack.sh")
    (folder / "metadata.json").write_text(
        json.dumps({"type": kind, "container": "python:3.11", "container_gpu": "python:3.11", "entry_point": entry})
    )
    (folder / entry).write_text("#!/bin/bash\nset -eu\n" + textwrap.dedent(script))
    (folder / entry).chmod(0o755)
    if helper:
        (folder / "helper.py").write_text(helper)
    return folder


@pytest.fixture()
def arena(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Dataset of 5 images (+1 without a CSV row, +1 CSV row without image) and submissions, good and bad."""
    monkeypatch.setattr(plan_module, "BATCH_IMAGES", 2)
    rng = np.random.default_rng(7)
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    rows = []
    for index, image_id in enumerate(IMAGE_IDS):
        pixels = rng.integers(30, 220, size=(16, 16, 3), dtype=np.uint8)
        write_png(pixels, dataset / f"{image_id}.png")
        eps = CYCLE[(index // 2) % 4]
        shifted = np.clip(pixels.astype(np.int32) + eps, 0, 255)
        # Some true labels match the 'mean' defense, the others not; targets match 'corner' after a shift.
        true_label = mean_label(pixels) if index % 2 == 0 else 999
        target = corner_label(shifted) if index < 3 else 500
        rows.append((image_id, true_label, target))
    write_png(rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8), dataset / "not_in_csv.png")
    metadata = tmp_path / "dataset.csv"
    with open(metadata, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["ImageId", "URL", "x1", "y1", "x2", "y2", "TrueLabel", "TargetClass"])
        for image_id, true_label, target in rows:
            writer.writerow([image_id, "http://x", 0, 0, 1, 1, true_label, target])
        writer.writerow(["absent_image", "http://x", 0, 0, 1, 1, 5, 6])

    attacks, targeted, defenses = tmp_path / "attacks", tmp_path / "targeted", tmp_path / "defenses"
    shutil.copytree(SAMPLES / "attacks" / "noop", attacks / "noop")
    # One submission as an archive, as entrants ship them.
    shutil.make_archive(str(attacks / "random_noise"), "zip", root_dir=SAMPLES / "attacks", base_dir="random_noise")
    _submission(attacks / "shift", "attack", 'python "$(dirname "$0")/helper.py" "$@"\n', helper=SHIFT_SCRIPT)
    # Bad attacks: crashes after one image; writes garbage and a wrong size; bad metadata; unknown type; no entry point.
    _submission(
        attacks / "crasher",
        "attack",
        'for f in "$1"/*.png; do cp "$f" "$2"/; break; done\necho "boom" >&2\nexit 3\n',
    )
    _submission(
        attacks / "garbage",
        "attack",
        'for f in "$1"/*.png; do echo "not a png" > "$2/$(basename "$f")"; done\n'
        'python -c "from PIL import Image; import sys; Image.new(\'RGB\', (40, 30), (255, 0, 0)).save(sys.argv[1])" "$2/img_a.png" 2>/dev/null || true\n',
    )
    (attacks / "broken_json").mkdir()
    (attacks / "broken_json" / "metadata.json").write_text("{not json")
    (attacks / "no_metadata").mkdir()
    _submission(attacks / "weird_type", "attack", "exit 0\n")
    meta = json.loads((attacks / "weird_type" / "metadata.json").read_text())
    (attacks / "weird_type" / "metadata.json").write_text(json.dumps({**meta, "type": "sorcery"}))
    _submission(attacks / "no_entry", "attack", "exit 0\n")
    (attacks / "no_entry" / "run_attack.sh").unlink()

    _submission(targeted / "shift_targeted", "targeted_attack", 'test -f "$1/target_class.csv"\npython "$(dirname "$0")/helper.py" "$@"\n', helper=SHIFT_SCRIPT)
    _submission(defenses / "mean", "defense", 'python "$(dirname "$0")/helper.py" "$1" "$2" mean\n', helper=DEFENSE_SCRIPT)
    _submission(defenses / "corner", "defense", 'python "$(dirname "$0")/helper.py" "$1" "$2" corner\n', helper=DEFENSE_SCRIPT)
    return {
        "dataset": dataset,
        "metadata": metadata,
        "attacks": attacks,
        "targeted": targeted,
        "defenses": defenses,
        "rows": rows,
        "work": tmp_path / "work",
        "out": tmp_path / "out",
    }


def _arguments(arena: dict, *extra: str) -> list[str]:
    return [
        "--attacks_dir", str(arena["attacks"]),  # the organisers' spelling
        "--targeted-attacks-dir", str(arena["targeted"]),
        "--defenses-dir", str(arena["defenses"]),
        "--dataset-dir", str(arena["dataset"]),
        "--dataset-metadata", str(arena["metadata"]),
        "--intermediate-results-dir", str(arena["work"]),
        "--output-dir", str(arena["out"]),
        "--epsilon", "cycle",
        "--save-all-classification",
        "--jobs", "2",
        "--quiet",
        *extra,
    ]


def _read_matrix(path: Path) -> dict[tuple[str, str], int]:
    lines = path.read_text().splitlines()
    columns = lines[0].split(",")
    assert columns[0] == ""
    return {(cells[0], columns[j]): int(cells[j]) for cells in (line.split(",") for line in lines[1:]) for j in range(1, len(columns))}


def _read_ranking(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    return [(name, int(score)) for name, score in rows[1:]], rows[0]


def _expected(arena: dict, adversarial: dict[str, dict[str, np.ndarray]], targeted: dict[str, dict[str, np.ndarray]]) -> dict:
    rows = {image_id: (true, target) for image_id, true, target in arena["rows"]}
    rules = {"mean": mean_label, "corner": corner_label}
    accuracy = {(a, d): sum(rules[d](img) == rows[i][0] for i, img in images.items()) for a, images in adversarial.items() for d in rules}
    t_accuracy = {(a, d): sum(rules[d](img) == rows[i][0] for i, img in images.items()) for a, images in targeted.items() for d in rules}
    hits = {(a, d): sum(rules[d](img) == rows[i][1] for i, img in images.items()) for a, images in targeted.items() for d in rules}
    defense_scores = {d: sum(v for (a, dd), v in {**accuracy, **t_accuracy}.items() if dd == d) for d in rules}
    attack_scores = {a: len(images) * 2 - sum(accuracy[(a, d)] for d in rules) for a, images in adversarial.items()}
    target_scores = {a: sum(hits[(a, d)] for d in rules) for a in targeted}
    return dict(accuracy=accuracy, t_accuracy=t_accuracy, hits=hits, defense=defense_scores, attack=attack_scores, targeted=target_scores)


def _clean(arena: dict) -> dict[str, np.ndarray]:
    return {image_id: read_png(arena["dataset"] / f"{image_id}.png") for image_id in IMAGE_IDS}


def _eps(image_id: str) -> int:
    return CYCLE[(IMAGE_IDS.index(image_id) // 2) % 4]


def _shifted(clean: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i: np.clip(img.astype(np.int32) + _eps(i), 0, 255).astype(np.uint8) for i, img in clean.items()}


def _ranked(scores: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


@pytest.mark.e2e
def test_evaluate_end_to_end(arena: dict) -> None:
    result = CliRunner().invoke(evaluate_command, _arguments(arena, "--time-limit", "60", "--rules", "dev"))
    assert result.exit_code == 1, result.output  # bad submissions are reported
    out, work = arena["out"], arena["work"]
    clean = _clean(arena)

    assert (work / "submissions" / "attack" / "random_noise" / "random_noise" / "metadata.json").is_file()  # the archive, extracted
    # Random noise: read back what the evaluator clipped and check the bound per batch epsilon.
    noise = {}
    for image_id in IMAGE_IDS:
        batch = IMAGE_IDS.index(image_id) // 2
        pixels = read_png(work / "pieces" / "attack" / "random_noise" / f"batch_{batch:04d}" / "clipped" / f"{image_id}.png")
        assert np.abs(pixels.astype(int) - clean[image_id].astype(int)).max() <= _eps(image_id)
        noise[image_id] = pixels
    # The crasher wrote the first image of each batch before exiting 3; garbage: the red 40x30 image resized back and clipped.
    crasher = {i: clean[i] for i in ("img_a", "img_c", "img_e")}
    red = resize_pixels(np.full((30, 40, 3), (255, 0, 0), dtype=np.uint8), (16, 16)).astype(np.int32)
    garbage = {"img_a": np.clip(red, clean["img_a"].astype(np.int32) - 4, clean["img_a"].astype(np.int32) + 4).astype(np.uint8)}
    adversarial = {"noop": clean, "random_noise": noise, "shift": _shifted(clean), "crasher": crasher, "garbage": garbage}
    expected = _expected(arena, adversarial, {"shift_targeted": _shifted(clean)})

    assert _read_matrix(out / "accuracy_on_attacks.csv") == expected["accuracy"]
    assert _read_matrix(out / "accuracy_on_targeted_attacks.csv") == expected["t_accuracy"]
    assert _read_matrix(out / "hit_target_class.csv") == expected["hits"]
    assert sum(expected["hits"].values()) >= 3  # the dataset makes 'corner' hit the targets of images a-c
    ranking, header = _read_ranking(out / "defense_ranking.csv")
    assert header == ["DefenseName", "Score"] and ranking == _ranked(expected["defense"])
    ranking, header = _read_ranking(out / "attack_ranking.csv")
    assert header == ["AttackName", "Score"] and ranking == _ranked(expected["attack"])
    assert _read_ranking(out / "targeted_attack_ranking.csv")[0] == _ranked(expected["targeted"])

    with open(out / "all_classification.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 * (5 + 5 + 5 + 3 + 1 + 5)
    assert {row["IsTargeted"] for row in rows} == {"True", "False"}

    results = json.loads((out / "results.json").read_text())
    assert results["images"] == 5
    normalised = {row["Name"]: row["NormalizedScore"] for row in results["rankings"]["attack"]}
    assert normalised["shift"] == pytest.approx(expected["attack"]["shift"] / (5 * 2))
    clean_accuracy = {row["DefenseName"]: row["Correct"] for row in results["clean_accuracy"]}
    assert clean_accuracy == {"mean": 3, "corner": sum(corner_label(clean[i]) == t for i, t, _ in arena["rows"])}

    problems = "\n".join(results["problems"])
    log = (work / "evaluation.log").read_text()
    for name in ("broken_json", "no_metadata", "weird_type", "no_entry", "crasher", "garbage", "not_in_csv", "absent_image", "corner"):
        assert name in log, name
    assert "attack/crasher/batch_0000: exited with status 3" in problems
    assert "wrong size" in problems and "cannot read image" in problems
    assert "expected FILENAME,LABEL" in problems  # the 'corner' defense's malformed rows
    report = (out / "report.html").read_text()
    assert "accuracy_on_attacks" in report and "shift_targeted" in report
    for key in ("accuracy_on_attacks", "accuracy_on_targeted_attacks", "hit_target_class"):
        assert (out / "report_files" / f"{key}.png").stat().st_size > 1000
    # Each run's logs and exit status are kept.
    crash_done = json.loads((work / "pieces" / "attack" / "crasher" / "batch_0000" / "done.json").read_text())
    assert crash_done["returncode"] == 3 and crash_done["status"] == "failed"
    assert "boom" in (work / "pieces" / "attack" / "crasher" / "batch_0000" / "stderr.log").read_text()

    # Rebuild the report from the intermediate folder alone.
    shutil.rmtree(out)
    rebuilt = CliRunner().invoke(report_command, [str(work), "--output-dir", str(out)])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads((out / "results.json").read_text())["matrices"] == results["matrices"]


@pytest.mark.e2e
def test_report_renders_in_chromium(arena: dict) -> None:
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    for name in ("crasher", "garbage", "broken_json", "no_metadata", "weird_type", "no_entry"):
        shutil.rmtree(arena["attacks"] / name)
    (arena["attacks"] / "random_noise.zip").unlink()
    result = CliRunner().invoke(evaluate_command, _arguments(arena))
    assert result.exit_code == 1, result.output
    clean = _clean(arena)
    expected = _expected(arena, {"noop": clean, "shift": _shifted(clean)}, {"shift_targeted": _shifted(clean)})
    report = arena["out"] / "report.html"
    profile = report.parent / "chromium-profile"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    for key in ("accuracy_on_attacks", "accuracy_on_targeted_attacks", "hit_target_class"):
        assert f'id="{key}"' in dom
    # Each matrix row as the browser parsed it: <tr><td class="name">ATTACK</td><td>COUNT</td>...
    for attack in ("noop", "shift"):
        cells = "".join(f"<td>{expected['accuracy'][(attack, defense)]}</td>" for defense in ("corner", "mean"))
        assert f'<td class="name">{attack}</td>{cells}' in dom
    cells = "".join(f"<td>{expected['hits'][('shift_targeted', defense)]}</td>" for defense in ("corner", "mean"))
    assert f'<td class="name">shift_targeted</td>{cells}' in dom


def test_resume_reruns_only_unfinished_pieces(arena: dict) -> None:
    for name in ("crasher", "garbage", "broken_json", "no_metadata", "weird_type", "no_entry"):
        shutil.rmtree(arena["attacks"] / name)
    counter = arena["work"].parent / "runs.txt"
    # Count how often the shift attack runs.
    script = arena["attacks"] / "shift" / "run_attack.sh"
    script.write_text(script.read_text() + f'echo run >> "{counter}"\n')
    first = CliRunner().invoke(evaluate_command, _arguments(arena))
    assert first.exit_code == 1, first.output  # the dataset's stray image and row, the 'corner' defense's bad rows
    assert len(counter.read_text().splitlines()) == 3
    # Scores do not change on resume; the *_results.csv files hold run times, which do.
    before = {p.name: p.read_text() for p in arena["out"].glob("*.csv") if not p.name.endswith("results.csv")}
    # Simulate an interrupted run: one attack piece and one defense piece lost their done.json midway.
    (arena["work"] / "pieces" / "attack" / "shift" / "batch_0001" / "done.json").unlink()
    (arena["work"] / "pieces" / "attack" / "shift" / "batch_0001" / "clipped" / "img_c.png").unlink()
    (arena["work"] / "pieces" / "defense" / "mean" / "batch_0002" / "done.json").unlink()
    second = CliRunner().invoke(evaluate_command, _arguments(arena))
    assert second.exit_code == 1, second.output
    assert len(counter.read_text().splitlines()) == 4  # only the unfinished shift piece ran again
    assert {p.name: p.read_text() for p in arena["out"].glob("*.csv") if not p.name.endswith("results.csv")} == before


@pytest.mark.e2e
def test_hanging_attack_is_killed_and_scores_what_it_wrote(arena: dict) -> None:
    for name in ("crasher", "garbage", "broken_json", "no_metadata", "weird_type", "no_entry", "shift"):
        shutil.rmtree(arena["attacks"] / name)
    (arena["attacks"] / "random_noise.zip").unlink()
    _submission(arena["attacks"] / "hang", "attack", 'for f in "$1"/*.png; do cp "$f" "$2"/; break; done\nsleep 300 &\nwait\n')
    result = CliRunner().invoke(evaluate_command, _arguments(arena, "--time-limit", "4"))
    assert result.exit_code == 1, result.output
    done = json.loads((arena["work"] / "pieces" / "attack" / "hang" / "batch_0000" / "done.json").read_text())
    assert done["status"] == "timed_out" and done["seconds"] < 30
    assert done["written"] == ["img_a"]
    ranking = dict(_read_ranking(arena["out"] / "attack_ranking.csv")[0])
    clean = _clean(arena)
    rows = {i: t for i, t, _ in arena["rows"]}
    correct = sum(rule(clean[i]) == rows[i] for i in ("img_a", "img_c", "img_e") for rule in (mean_label, corner_label))
    assert ranking["hang"] == 3 * 2 - correct  # three images written (one per batch), two defenses
    assert "killed after the time limit" in (arena["work"] / "evaluation.log").read_text()


def test_scoring_counts_missing_images_and_classifications() -> None:
    images = [DatasetImage("x", "x.png", 10, 20), DatasetImage("y", "y.png", 11, 21)]
    pool = Pool(
        {
            "0": PoolEntry("attack", "a", "x"),
            "1": PoolEntry("clean", "clean", "x"),
            "2": PoolEntry("clean", "clean", "y"),
            "3": PoolEntry("targeted_attack", "t", "y"),
            "4": PoolEntry("attack", "a", "y"),
        },
        "f",
    )
    predictions = {"d1": {"0": 10, "1": 10, "2": 11, "3": 21}, "d2": {"0": 5, "3": 11, "4": 11}}
    scores = compute_scores(images, pool, predictions, attacks=["a", "b"], targeted_attacks=["t"], defenses=["d1", "d2"], rules="dev")
    assert scores.matrices["accuracy_on_attacks"].loc["a"].tolist() == [1, 1]
    assert scores.matrices["accuracy_on_attacks"].loc["b"].tolist() == [0, 0]
    assert scores.matrices["hit_target_class"].loc["t"].tolist() == [1, 0]
    attack = scores.rankings["attack"].set_index("Name")["Score"].to_dict()
    # 'a': 2 images x 2 defenses - 2 correct (d1 did not classify 'y': wrong); 'b' wrote nothing: zero.
    assert attack == {"a": 2, "b": 0}
    assert scores.rankings["defense"].set_index("Name")["Score"].to_dict() == {"d1": 1, "d2": 2}
    assert scores.rankings["defense"]["NormalizedScore"].tolist() == [2 / (2 * 3), 1 / (2 * 3)]
    assert scores.clean_accuracy.set_index("DefenseName")["Correct"].to_dict() == {"d1": 2, "d2": 0}


@pytest.mark.e2e
def test_evaluate_on_ray(arena: dict) -> None:
    ray = pytest.importorskip("ray")
    for name in ("crasher", "garbage", "broken_json", "no_metadata", "weird_type", "no_entry"):
        shutil.rmtree(arena["attacks"] / name)
    (arena["attacks"] / "random_noise.zip").unlink()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = CliRunner().invoke(evaluate_command, _arguments(arena, "--executor", "ray"))
    finally:
        ray.shutdown()
    assert result.exit_code == 1, result.output
    assert "not run" not in result.output
    clean = _clean(arena)
    expected = _expected(arena, {"noop": clean, "shift": _shifted(clean)}, {"shift_targeted": _shifted(clean)})
    assert _read_matrix(arena["out"] / "accuracy_on_attacks.csv") == expected["accuracy"]
    assert _read_matrix(arena["out"] / "hit_target_class.csv") == expected["hits"]


def test_dataset_csv_without_true_label_is_a_usage_error(arena: dict) -> None:
    arena["metadata"].write_text("ImageId,TargetClass\nimg_a,3\n")
    result = CliRunner().invoke(evaluate_command, _arguments(arena))
    assert result.exit_code == 2
    assert "TrueLabel" in result.output


def test_epsilon_option_rejects_nonsense(arena: dict) -> None:
    result = CliRunner().invoke(evaluate_command, _arguments(arena)[:-6] + ["--epsilon", "huge"])
    assert result.exit_code == 2 and "cycle" in result.output


@pytest.mark.e2e
def test_samples_with_a_real_model(shared_data: Path, tmp_path: Path) -> None:
    """The shipped samples (noop, random noise, FGSM, the EfficientNet-Lite0 defense) on two dev images."""
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    image_ids = ["000b7d55b6184b08", "001b5e6f1b89fd3b"]
    for image_id in image_ids:
        shutil.copyfile(shared_data / "dev_images" / f"{image_id}.png", dataset / f"{image_id}.png")
    attacks, defenses = tmp_path / "attacks", tmp_path / "defenses"
    for name in ("noop", "random_noise", "fgsm"):
        shutil.copytree(SAMPLES / "attacks" / name, attacks / name)
    shutil.copytree(SAMPLES / "defenses" / "defense_lite0", defenses / "defense_lite0")
    _submission(defenses / "mean", "defense", 'python "$(dirname "$0")/helper.py" "$1" "$2" mean\n', helper=DEFENSE_SCRIPT)
    work, out = tmp_path / "work", tmp_path / "out"
    result = CliRunner().invoke(
        evaluate_command,
        [
            "--attacks-dir", str(attacks), "--defenses-dir", str(defenses), "--dataset-dir", str(dataset),
            "--dataset-metadata", str(shared_data / "dev_dataset.csv"), "--intermediate-results-dir", str(work),
            "--output-dir", str(out), "--epsilon", "16", "--jobs", "2", "--quiet",
        ],
    )
    # The dev CSV has 1000 rows for our 2 images: a warning (exit 0); nothing else may go wrong.
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["problems"] == [] and any("absent from" in line for line in results["warnings"])

    from nips_adv.contract.csv_files import read_dataset_csv
    from nips_adv.models.classifier import Classifier

    frame = read_dataset_csv(shared_data / "dev_dataset.csv").set_index("ImageId")
    true = {image_id: int(frame.loc[image_id, "TrueLabel"]) for image_id in image_ids}
    adversarial = {
        name: np.stack([read_png(work / "pieces" / "attack" / name / "batch_0000" / "clipped" / f"{i}.png") for i in image_ids])
        for name in ("noop", "random_noise", "fgsm")
    }
    clean = np.stack([read_png(dataset / f"{i}.png") for i in image_ids])
    assert np.abs(adversarial["fgsm"].astype(int) - clean.astype(int)).max() == 16
    with Classifier.create("efficientnet_lite0") as model:
        predicted = {name: model.predict(pixels) for name, pixels in adversarial.items()}
    matrix = _read_matrix(out / "accuracy_on_attacks.csv")
    for name, pixels in adversarial.items():
        assert matrix[(name, "defense_lite0")] == sum(int(p) == true[i] for p, i in zip(predicted[name], image_ids))
        assert matrix[(name, "mean")] == sum(mean_label(pixels[k]) == true[i] for k, i in enumerate(image_ids))
    # Lite0 gets both clean images right and FGSM against Lite0 itself (white box) fools it on at least one.
    assert matrix[("noop", "defense_lite0")] == 2
    assert matrix[("fgsm", "defense_lite0")] < 2
    report = (out / "report.html").read_text()
    assert "fgsm" in report and "defense_lite0" in report
    # The gallery names the true class of each example.
    from markupsafe import escape

    from nips_adv.evaluation.report import class_label_text

    assert str(escape(class_label_text(true[image_ids[0]]))) in report


def test_docker_runner_uses_the_organisers_command_lines(arena: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Docker engine here: a `docker` on PATH records its arguments, so the command lines are checked up to the engine."""
    for name in ("crasher", "garbage", "broken_json", "no_metadata", "weird_type", "no_entry", "shift"):
        shutil.rmtree(arena["attacks"] / name)
    (arena["attacks"] / "random_noise.zip").unlink()
    shutil.rmtree(arena["targeted"])
    arena["targeted"].mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker_calls.txt"
    (bin_dir / "docker").write_text(f'#!/bin/bash\necho "$*" >> "{calls}"\n')
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = CliRunner().invoke(evaluate_command, _arguments(arena, "--runner", "docker", "--gpu"))
    assert result.exit_code == 1, result.output  # the recorded 'containers' wrote nothing
    lines = calls.read_text().splitlines()
    attack_lines = [line for line in lines if "run_attack.sh" in line]
    defense_lines = [line for line in lines if "run_defense.sh" in line]
    assert len(attack_lines) == 3 and len(defense_lines) == 2 * 3  # noop x 3 batches; 2 defenses x 3 pool batches (5 clean images)
    for line in attack_lines:
        assert line.startswith("create --runtime=nvidia") and "--network=none" in line and "-m=24g" in line and "--cpus=3.75" in line
        assert ":/input_images:ro" in line and ":/output_images " in line and "-w /code" in line
        # The noop sample's container_gpu, and the epsilon of each batch.
        assert line.endswith(tuple(f"nips-adv:0.1.0-gpu ./run_attack.sh /input_images /output_images {eps}" for eps in (4, 8, 12)))
    assert all(line.endswith("./run_defense.sh /input_images /output_data/result.csv") for line in defense_lines)


# --- The final round's rules (eval_infra/code/master.py), run on the same fixtures and compared. ---


def organisers_final_scores(acc, err, hit, count_adv_images, classified_images_count, expected_images, targeted):
    """master.py's compute_results scoring loop, restated: matrices are keyed [defense, attack]."""
    attacks_to_use = [k for k, v in count_adv_images.items() if v == expected_images]
    total_num_adversarial = sum(count_adv_images.values())
    defenses_to_use = [k for k, v in classified_images_count.items() if v == total_num_adversarial]
    attack_scores, targeted_scores, defense_scores = {}, {}, {}
    for defense_id in {d for d, _ in acc}:
        for attack_id in {a for _, a in acc}:
            if attack_id in attacks_to_use:
                defense_scores[defense_id] = defense_scores.get(defense_id, 0) + acc.get((defense_id, attack_id), 0)
            if defense_id in defenses_to_use:
                if attack_id in targeted:
                    targeted_scores[attack_id] = targeted_scores.get(attack_id, 0) + hit.get((defense_id, attack_id), 0)
                else:
                    attack_scores[attack_id] = attack_scores.get(attack_id, 0) + err.get((defense_id, attack_id), 0)
    return attack_scores, targeted_scores, defense_scores


def _organisers_matrices(images, pool, predictions):
    """analyze_one_classification_result, restated: counts per [defense, attack] over classified adversarial images."""
    by_id = {image.image_id: image for image in images}
    acc, err, hit, classified = {}, {}, {}, {}
    for defense, labels in predictions.items():
        for name, label in labels.items():
            entry = pool.entries[name]
            if entry.track == "clean":
                continue
            image = by_id[entry.image_id]
            key = (defense, entry.attack)
            classified[defense] = classified.get(defense, 0) + 1
            acc[key] = acc.get(key, 0) + int(label == image.true_label)
            err[key] = err.get(key, 0) + int(label != image.true_label)
            hit[key] = hit.get(key, 0) + int(label == image.target_class)
    return acc, err, hit, classified


def test_final_round_scoring_matches_master_py() -> None:
    """A crashing defense (d_partial) hands no attack free points; an incomplete attack (b) scores no defense."""
    images = [DatasetImage(f"i{k}", f"i{k}.png", 10 + k, 20 + k) for k in range(3)]
    entries, predictions = {}, {"d_full": {}, "d_partial": {}, "d_wrong": {}}
    made = {("attack", "a"): 3, ("attack", "b"): 2, ("targeted_attack", "t"): 3}
    rng = np.random.default_rng(3)
    for (track, attack), count in made.items():
        for k in range(count):
            name = f"{len(entries):08d}"
            entries[name] = PoolEntry(track, attack, f"i{k}")
            predictions["d_full"][name] = int(rng.choice([10 + k, 20 + k, 7]))
            predictions["d_wrong"][name] = 999
            if len(entries) % 3:  # d_partial misses every third image
                predictions["d_partial"][name] = 10 + k
    pool = Pool(entries, "f")
    scores = compute_scores(images, pool, predictions, attacks=["a", "b"], targeted_attacks=["t"], defenses=list(predictions))
    acc, err, hit, classified = _organisers_matrices(images, pool, predictions)
    count_adv = {attack: count for (_, attack), count in made.items()}
    attack_scores, targeted_scores, defense_scores = organisers_final_scores(acc, err, hit, count_adv, classified, 3, {"t"})
    ours = {key: frame.set_index("Name")["Score"].to_dict() for key, frame in scores.rankings.items()}
    assert ours["attack"] == attack_scores and ours["targeted_attack"] == targeted_scores
    assert ours["defense"] == {d: defense_scores.get(d, 0) for d in predictions}
    assert scores.complete_defenses == ["d_full", "d_wrong"] and scores.complete_attacks == ["a", "t"]
    # The development tool's rule would have let d_partial's gaps count as wins for the attacks.
    dev = compute_scores(images, pool, predictions, attacks=["a", "b"], targeted_attacks=["t"], defenses=list(predictions), rules="dev")
    assert dev.rankings["attack"].set_index("Name")["Score"]["a"] > ours["attack"]["a"]


def test_final_round_takes_png_outputs_only() -> None:
    images = [DatasetImage("x", "x.png", 10, 20), DatasetImage("y", "y.png", 11, 21)]
    pool = Pool({"0": PoolEntry("attack", "a", "x"), "1": PoolEntry("attack", "a", "y")}, "f")
    predictions = {"d": {"0": 1, "1": 1}}
    arguments = dict(attacks=["a"], targeted_attacks=[], defenses=["d"], not_png=frozenset({("attack", "a", "y")}))
    final = compute_scores(images, pool, predictions, **arguments)
    dev = compute_scores(images, pool, predictions, rules="dev", **arguments)
    assert final.produced[("attack", "a")] == 1 and dev.produced[("attack", "a")] == 2
    assert final.rankings["attack"]["Score"].tolist() == [1] and dev.rankings["attack"]["Score"].tolist() == [2]


@pytest.mark.e2e
def test_final_round_files_and_rules_on_the_arena(arena: dict) -> None:
    """Default rules: the final round's files, compared with master.py's rule on the same images."""
    for name in ("broken_json", "no_metadata", "weird_type", "no_entry", "garbage"):
        shutil.rmtree(arena["attacks"] / name)
    (arena["attacks"] / "random_noise.zip").unlink()
    # An attack writing IMAGEID.jpg: the development tool took it, the final round did not.
    _submission(arena["attacks"] / "jpeg", "attack", 'for f in "$1"/*.png; do cp "$f" "$2/$(basename "$f" .png).jpg"; done\n')
    result = CliRunner().invoke(evaluate_command, _arguments(arena))
    assert result.exit_code == 1, result.output
    out, work = arena["out"], arena["work"]
    clean = _clean(arena)
    crasher = {i: clean[i] for i in ("img_a", "img_c", "img_e")}
    expected = _expected(arena, {"noop": clean, "shift": _shifted(clean), "crasher": crasher}, {"shift_targeted": _shifted(clean)})
    # master.py's matrices are [defense, attack]; both defenses classify every image here.
    acc = {(d, a): v for (a, d), v in {**expected["accuracy"], **expected["t_accuracy"]}.items()}
    counts = {"noop": 5, "shift": 5, "crasher": 3, "shift_targeted": 5}
    err = {(d, a): counts[a] - v for (d, a), v in acc.items()}
    hit = {(d, a): v for (a, d), v in expected["hits"].items()}
    classified = {d: sum(counts.values()) for d in ("mean", "corner")}
    attack_scores, targeted_scores, defense_scores = organisers_final_scores(acc, err, hit, counts, classified, 5, {"shift_targeted"})
    assert _read_matrix(out / "accuracy_matrix.csv") == {**acc, **{(d, "jpeg"): 0 for d in ("mean", "corner")}}
    assert {k: v for k, v in _read_matrix(out / "error_matrix.csv").items() if k[1] != "jpeg"} == err
    with open(out / "attack_results.csv", newline="") as stream:
        rows = {row["SubmissionID"]: row for row in csv.DictReader(stream)}
    assert {name: int(row["Score"]) for name, row in rows.items()} == {**attack_scores, "jpeg": 0}
    assert rows["crasher"]["CompletedBatches"] == "3" and rows["crasher"]["BatchesWithError"] == "3"
    assert rows["noop"]["BatchesWithError"] == "0" and float(rows["noop"]["MinEvalTime"]) <= float(rows["noop"]["MaxEvalTime"])
    assert rows["jpeg"]["ProcessedImages"] == "0" and rows["crasher"]["ProcessedImages"] == "3"
    assert dict(_read_ranking(out / "defense_ranking.csv")[0]) == defense_scores  # crasher and jpeg are left out
    assert dict(_read_ranking(out / "targeted_attack_ranking.csv")[0]) == targeted_scores
    # The same intermediate folder scored by the development tool's rules counts the .jpg images.
    from nips_adv.evaluation.run import finish

    dev = finish(work, output_dir=arena["out"].parent / "dev", rules="dev")
    assert dev.scores.produced[("attack", "jpeg")] == 5
    assert not (arena["out"].parent / "dev" / "attack_results.csv").exists()


def test_epsilon_cycle_follows_sorted_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """image_batches.py: images sorted by file name, batches of 100, eps 4/8/12/16 in turn."""
    monkeypatch.setattr(plan_module, "BATCH_IMAGES", 2)
    names = ["e", "a", "d", "b", "c"]  # CSV row order, not name order
    for name in names:
        write_png(np.zeros((4, 4, 3), dtype=np.uint8), tmp_path / f"{name}.png")
    (tmp_path / "d.csv").write_text("ImageId,TrueLabel,TargetClass\n" + "".join(f"{n},1,2\n" for n in names))
    images = plan_module.load_dataset(tmp_path, tmp_path / "d.csv", plan_module.Problems())
    submission = plan_module.Submission("s", "attack", str(tmp_path), None)  # type: ignore[arg-type]
    pieces = plan_module.attack_pieces([submission], images, "cycle", tmp_path / "p")
    organisers = sorted(f"{n}.png" for n in names)  # their _read_image_list
    assert [[i.image_id + ".png" for i in p.images] for p in pieces] == [organisers[0:2], organisers[2:4], organisers[4:]]
    assert [p.epsilon for p in pieces] == [4, 8, 12]


def test_metadata_covering_more_images_is_a_warning(arena: dict) -> None:
    """Evaluating on a subset of the dataset CSV: exit 0, the rows without images named in a warning."""
    for name in ("broken_json", "no_metadata", "weird_type", "no_entry", "garbage", "crasher", "shift"):
        shutil.rmtree(arena["attacks"] / name)
    (arena["attacks"] / "random_noise.zip").unlink()
    shutil.rmtree(arena["defenses"] / "corner")
    (arena["dataset"] / "not_in_csv.png").unlink()
    result = CliRunner().invoke(evaluate_command, _arguments(arena))
    assert result.exit_code == 0, result.output + result.stderr
    assert "absent_image" in result.stderr and "warning" in result.stderr
