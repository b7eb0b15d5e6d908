"""Scoring against the official dataset CSV: the library, and ``nips-adv score`` through CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nips_adv.cli.main import main
from nips_adv.contract.csv_files import ContractFileError, read_label_file
from nips_adv.contract.images import read_png, write_png
from nips_adv.evaluation.accuracy import read_dataset_labels, score_directory, score_prediction_file, score_predictions

DATASET_HEADER = "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,AuthorProfileURL\n"


def _write_dataset(path: Path, rows: dict[str, tuple[object, object]]) -> Path:
    """An official-format dataset CSV: ImageId -> (TrueLabel, TargetClass)."""
    lines = [
        f"{image_id},https://example.org/{image_id}.jpg,0.0,0.0,1.0,1.0,{true},{target},https://example.org,CC-BY,someone,x\n"
        for image_id, (true, target) in rows.items()
    ]
    path.write_text(DATASET_HEADER + "".join(lines))
    return path


@pytest.fixture()
def dataset_csv(tmp_path: Path) -> Path:
    # ImageIds that look like numbers must stay strings ("00017" is not "17").
    return _write_dataset(
        tmp_path / "dataset.csv",
        {"00017": (306, 779), "a1b2": (10, 20), "c3d4": (30, 40), "e5f6": (50, 60), "unseen": (70, 80)},
    )


def test_prediction_file_accuracy_hits_and_named_gaps(tmp_path: Path, dataset_csv: Path) -> None:
    predictions = tmp_path / "result.csv"
    predictions.write_text(
        "00017.png,306\n"  # correct
        "a1b2.png,20\n"  # the target class: wrong, one hit
        "c3d4.PNG,30\n"  # correct; the suffix's case does not matter
        "e5f6.png,999\n"  # wrong
        "stranger.png,5\n"  # not in the dataset
        "broken.png,zero\n"  # does not parse
    )
    report = score_prediction_file(predictions, dataset_csv)
    assert report.images_scored == 4
    assert (report.correct, report.accuracy) == (2, 0.5)
    assert (report.target_hits, report.target_hit_rate) == (1, 0.25)
    assert report.images_not_in_dataset == ["stranger.png"]
    assert report.rows_without_image == ["unseen"]
    assert len(report.failures) == 1 and "result.csv:6" in report.failures[0]
    assert not report.ok
    assert report.predictions() == {"00017.png": 306, "a1b2.png": 20, "c3d4.PNG": 30, "e5f6.png": 999}
    summary = report.to_dict()
    assert summary["predictions"][0] == {"image": "00017.png", "predicted": 306, "true_label": 306, "target_class": 779}


def test_bad_dataset_rows_are_named_and_skipped(tmp_path: Path) -> None:
    dataset = _write_dataset(tmp_path / "d.csv", {"good": (1, 2), "bad": (0, 2), "twice": (3, 4)})
    with open(dataset, "a") as stream:
        stream.write("twice,u,0,0,1,1,5,6,l,c,a,p\n")
    labels = read_dataset_labels(dataset)
    assert labels.true_labels == {"good": 1, "twice": 3}
    assert any("bad" in problem and "d.csv:3" in problem for problem in labels.problems)
    assert any("twice appears twice" in problem for problem in labels.problems)
    assert score_predictions({"good.png": 1}, labels).accuracy == 1.0


def test_dataset_without_label_columns_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,URL\nx,y\n")
    with pytest.raises(ContractFileError, match="TrueLabel"):
        read_dataset_labels(bad)


def test_nothing_scored_has_no_accuracy(dataset_csv: Path) -> None:
    report = score_predictions({}, read_dataset_labels(dataset_csv))
    assert report.images_scored == 0 and report.accuracy is None and report.target_hit_rate is None
    assert len(report.rows_without_image) == 5


def test_score_directory_matches_predictions_computed_one_by_one(tmp_path: Path, inception_v3_checkpoint: Path) -> None:
    from nips_adv.models.classifier import Classifier

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a1b2", "c3d4", "e5f6", "extra"):
        write_png(rng.integers(0, 256, size=(299, 299, 3), dtype=np.uint8), images / f"{name}.png")
    (images / "broken.png").write_bytes(b"not a png")
    with Classifier.create("inception_v3", inception_v3_checkpoint) as model:
        own = {name: int(model.predict(read_png(images / f"{name}.png")[None])[0]) for name in ("a1b2", "c3d4", "e5f6")}
        other = {name: label % 1000 + 1 for name, label in own.items()}
        dataset = _write_dataset(
            tmp_path / "dataset.csv",
            {"a1b2": (own["a1b2"], other["a1b2"]), "c3d4": (own["c3d4"], own["c3d4"]), "e5f6": (other["e5f6"], own["e5f6"])},
        )
        report = score_directory(images, dataset, model=model, batch_size=2, progress=False)
    assert report.predictions() == {f"{name}.png": label for name, label in own.items()}
    assert (report.correct, report.target_hits, report.images_scored) == (2, 2, 3)
    assert report.images_not_in_dataset == ["extra.png"]
    assert len(report.failures) == 1 and "broken.png" in report.failures[0]
    assert report.rows_without_image == []


def test_cli_scores_a_prediction_file_as_text_and_json(tmp_path: Path, dataset_csv: Path) -> None:
    predictions = tmp_path / "result.csv"
    predictions.write_text("00017.png,306\na1b2.png,20\nc3d4.png,31\n")
    runner = CliRunner()
    result = runner.invoke(main, ["score", "--from-predictions", str(predictions), "--dataset", str(dataset_csv)])
    assert result.exit_code == 0, result.output
    assert "accuracy         0.333  (1 of 3" in result.stdout
    assert "target hit rate  0.333  (1 of 3" in result.stdout
    assert "2 dataset rows have no image" in result.stdout

    result = runner.invoke(main, ["score", "--from-predictions", str(predictions), "--dataset", str(dataset_csv), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["accuracy"] == pytest.approx(1 / 3) and summary["target_hits"] == 1
    assert summary["rows_without_image"] == ["e5f6", "unseen"]
    assert summary["predictions_file"] == str(predictions)


def test_cli_exit_1_names_images_without_a_row(tmp_path: Path, dataset_csv: Path) -> None:
    predictions = tmp_path / "result.csv"
    predictions.write_text("00017.png,306\nstranger.png,4\n")
    result = CliRunner().invoke(main, ["score", "--from-predictions", str(predictions), "--dataset", str(dataset_csv)])
    assert result.exit_code == 1
    assert "1 image(s) have no row in the dataset" in result.stderr and "stranger.png" in result.stderr
    assert "accuracy         1.000" in result.stdout


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "give either IMAGES_DIR"),
        (["IMAGES", "--from-predictions", "PREDICTIONS"], "give either IMAGES_DIR"),
        (["--from-predictions", "PREDICTIONS", "--predictions", "out.csv"], "--predictions writes"),
    ],
)
def test_cli_usage_errors(tmp_path: Path, dataset_csv: Path, arguments: list[str], message: str) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "result.csv").write_text("")
    substitutions = {"IMAGES": str(tmp_path / "images"), "PREDICTIONS": str(tmp_path / "result.csv")}
    arguments = [substitutions.get(argument, argument) for argument in arguments]
    result = CliRunner().invoke(main, ["score", *arguments, "--dataset", str(dataset_csv)])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_classifies_a_folder_and_writes_reusable_predictions(
    tmp_path: Path, dataset_csv: Path, inception_v3_checkpoint: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    for name in ("00017", "a1b2"):
        write_png(rng.integers(0, 256, size=(299, 299, 3), dtype=np.uint8), images / f"{name}.png")
    predictions = tmp_path / "predictions.csv"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["score", str(images), "--dataset", str(dataset_csv), "--model", "inception_v3",
         "--checkpoint", str(inception_v3_checkpoint), "--predictions", str(predictions), "--json", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "inception_v3" and summary["images_scored"] == 2
    written = read_label_file(predictions).labels
    assert written == {entry["image"]: entry["predicted"] for entry in summary["predictions"]}

    again = runner.invoke(main, ["score", "--from-predictions", str(predictions), "--dataset", str(dataset_csv), "--json"])
    assert json.loads(again.stdout)["predictions"] == summary["predictions"]


def test_cli_missing_checkpoint_is_a_set_up_error(tmp_path: Path, dataset_csv: Path) -> None:
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(
        main,
        ["score", str(tmp_path / "images"), "--dataset", str(dataset_csv), "--model", "inception_v3",
         "--checkpoint", str(tmp_path / "nothing.ckpt")],
    )
    assert result.exit_code == 2
    assert "nips-adv score: error:" in result.stderr and "nothing.ckpt" in result.stderr
