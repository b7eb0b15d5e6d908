"""ImageNet class names shipped with the package, for labels 1..1000."""

from __future__ import annotations

import pytest

from nips_adv.contract.labels import class_name, class_names


def test_class_names_follow_the_ilsvrc_label_order() -> None:
    assert len(class_names()) == 1000
    assert len(set(class_names())) == 999  # WordNet names two synsets just "crane": the bird and the machine
    assert class_name(135) == class_name(518) == "crane"
    assert class_name(1) == "tench, Tinca tinca"
    assert class_name(282) == "tabby, tabby cat"
    assert class_name(968) == "espresso"
    assert class_name(1000) == "toilet tissue, toilet paper, bathroom tissue"
    assert all(name.strip() == name and name for name in class_names())


@pytest.mark.parametrize("label", [0, 1001, -5])
def test_labels_outside_1_to_1000_have_no_name(label: int) -> None:
    with pytest.raises(ValueError, match=f"label {label} is not in 1..1000"):
        class_name(label)
