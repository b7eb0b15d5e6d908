"""The folder job's labels: targets from target_class.csv, own belief, or true labels given for a study."""

from __future__ import annotations

from pathlib import Path

import pytest
from attack_fakes import CountingModel, FakeClock, write_inputs

from nips_adv.attacks.directory import attack_directory
from nips_adv.attacks.sign_gradient import method_config
from nips_adv.contract.csv_files import write_label_file


def test_true_labels_replace_the_own_belief_and_a_missing_one_falls_back_to_the_prediction(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 3)
    model = CountingModel(FakeClock())
    report = attack_directory(
        tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("i-fgsm", iterations=2),
        batch_size=3, progress=False, true_labels={"000.png": 7, "002.png": 9},
    )
    assert report.images_done == 3
    # 001.png has no true label: away from the fake model's prediction, label 3.
    assert [labels.ravel().tolist() for labels in model.call_labels] == [[7, 3, 9]] * 2
    assert report.warnings == ["001.png: no true label given; attacking away from its predicted class 3"]


def test_without_true_labels_the_attack_takes_the_model_s_own(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 2)
    model = CountingModel(FakeClock())
    attack_directory(tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("i-fgsm", iterations=2),
                     batch_size=2, progress=False)
    # The fake model's top 5 on the clean batch (label 3, then the ties in label order), kept for every step.
    assert [labels.tolist() for labels in model.call_labels] == [[[3, 1, 2, 4, 5]] * 2] * 2


def test_targets_come_from_the_target_file_and_a_missing_one_is_the_least_likely_class(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 2)
    write_label_file(tmp_path / "in" / "target_class.csv", {"001.png": 11})
    model = CountingModel(FakeClock())
    report = attack_directory(
        tmp_path / "in", tmp_path / "out", 8, model=model, config=method_config("mi-fgsm", targeted=True, iterations=2),
        targeted=True, batch_size=2, progress=False,
    )
    assert [labels.ravel().tolist() for labels in model.call_labels] == [[1000, 11]] * 2
    assert report.warnings == ["000.png: not in target_class.csv; attacking toward its least-likely class 1000"]


def test_true_labels_are_refused_for_a_targeted_attack(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 1)
    with pytest.raises(ValueError, match="true_labels are for non-targeted attacks"):
        attack_directory(tmp_path / "in", tmp_path / "out", 8, model=CountingModel(FakeClock()),
                         config=method_config("mi-fgsm"), targeted=True, true_labels={"000.png": 1})
    assert not (tmp_path / "out").exists()
