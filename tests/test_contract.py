"""Contract I/O: the epsilon box, PNG reading and writing, batching, the CSV formats. No model needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nips_adv.contract.csv_files import ContractFileError, read_dataset_csv, read_label_file, read_target_classes
from nips_adv.contract.epsilon import epsilon_box, max_perturbation, project_to_epsilon_box, validate_epsilon
from nips_adv.contract.images import ImageReadError, iter_image_batches, list_png_files, read_png, write_png


@pytest.mark.parametrize("eps", [0, 0.4, 1, 2.5, 4, 8, 12, 16, 16.7, 100, 254.5, 255])
def test_projection_never_exceeds_eps_after_rounding(eps: float) -> None:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, size=(2, 17, 13, 3), dtype=np.uint8)
    clean[0, 0, 0] = [0, 255, 128]
    wild = clean.astype(np.float32) + rng.uniform(-400, 400, size=clean.shape).astype(np.float32)
    wild[0, 0, 0] = [np.nan, np.inf, -np.inf]
    projected = project_to_epsilon_box(wild, clean, eps)
    assert projected.dtype == np.uint8
    assert max_perturbation(projected, clean) <= eps
    assert projected[0, 0, 0, 0] == clean[0, 0, 0, 0]  # NaN falls back to the clean pixel


def test_projection_keeps_admissible_values_and_rounds_to_nearest() -> None:
    clean = np.array([[[[10, 10, 250]]]], dtype=np.uint8)
    adversarial = np.array([[[[13.4, 6.6, 260.0]]]], dtype=np.float32)
    assert project_to_epsilon_box(adversarial, clean, 4).tolist() == [[[[13, 7, 254]]]]
    assert project_to_epsilon_box(adversarial, clean, 3.5).tolist() == [[[[13, 7, 253]]]]


def test_epsilon_box_is_integer_and_inside_the_range() -> None:
    clean = np.array([0, 1, 128, 254, 255], dtype=np.uint8)
    lower, upper = epsilon_box(clean, 2.5)
    assert lower.tolist() == [0, 0, 126, 252, 253]
    assert upper.tolist() == [2, 3, 130, 255, 255]


@pytest.mark.parametrize("bad", ["abc", -1, 255.5, float("nan"), float("inf"), None])
def test_validate_epsilon_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        validate_epsilon(bad)  # type: ignore[arg-type]


def test_read_png_converts_every_mode_to_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((5, 7), 9, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(tmp_path / "grey16.png")
    assert np.array_equal(read_png(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(read_png(tmp_path / "rgba.png"), rgb)  # alpha dropped, not composited
    assert np.array_equal(read_png(tmp_path / "grey.png"), np.repeat(rgb[:, :, :1], 3, axis=2))
    assert np.array_equal(read_png(tmp_path / "grey16.png"), np.repeat(rgb[:, :, :1], 3, axis=2))
    palette = read_png(tmp_path / "palette.png")
    assert palette.shape == (5, 7, 3) and palette.dtype == np.uint8


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"not a png at all", "cannot identify"), (None, "truncated")],
)
def test_read_png_names_the_broken_file(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "broken.png"
    if content is None:
        Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(path)
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as caught:
        read_png(path)
    assert str(path) in str(caught.value)


def test_write_png_round_trips_and_leaves_no_temporary(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    write_png(pixels, tmp_path / "out.png")
    assert [entry.name for entry in tmp_path.iterdir()] == ["out.png"]
    with Image.open(tmp_path / "out.png") as image:
        assert image.mode == "RGB" and image.format == "PNG"
    assert np.array_equal(read_png(tmp_path / "out.png"), pixels)


def test_list_png_files_ignores_other_files_and_folders(tmp_path: Path) -> None:
    for name in ["b.png", "a.PNG", "c.jpg", "notes.txt", "target_class.csv"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    (tmp_path / "sub.png" / "d.png").write_bytes(b"x")
    assert [path.name for path in list_png_files(tmp_path)] == ["a.PNG", "b.png"]


def test_batches_group_sizes_skip_broken_and_keep_every_image(tmp_path: Path) -> None:
    sizes = {"a": (4, 4), "b": (4, 4), "c": (5, 3), "d": (4, 4), "e": (4, 4), "f": (5, 3)}
    for name, (height, width) in sizes.items():
        write_png(np.full((height, width, 3), ord(name), np.uint8), tmp_path / f"{name}.png")
    (tmp_path / "zz.png").write_bytes(b"broken")
    errors: list[ImageReadError] = []
    batches = list(iter_image_batches(list_png_files(tmp_path), 2, errors.append))
    assert [batch.names for batch in batches] == [("a.png", "b.png"), ("d.png", "e.png"), ("c.png", "f.png")]
    for batch in batches:
        assert batch.pixels.shape[0] == len(batch.names) <= 2
        assert [int(image[0, 0, 0]) for image in batch.pixels] == [ord(name[0]) for name in batch.names]
    assert len(errors) == 1 and "zz.png" in str(errors[0])


def test_label_file_keeps_good_rows_and_names_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "target_class.csv"
    path.write_text("a.png,5\nb.png,1000\nc.png,0\nd.png,x\ne.png\n\nf.png, 7 \n")
    parsed = read_label_file(path)
    assert parsed.labels == {"a.png": 5, "b.png": 1000, "f.png": 7}
    assert len(parsed.problems) == 3
    assert all(str(path) in problem for problem in parsed.problems)
    assert any(":3:" in problem for problem in parsed.problems)


def test_target_class_file_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ContractFileError, match="target_class.csv"):
        read_target_classes(tmp_path)
    (tmp_path / "target_class.csv").mkdir()
    with pytest.raises(ContractFileError, match="target_class.csv: is a folder"):
        read_target_classes(tmp_path)


def test_conflicting_duplicate_rows_are_named_and_the_last_is_used(tmp_path: Path) -> None:
    path = tmp_path / "target_class.csv"
    path.write_text("a.png,5\nb.png,7\na.png,9\nb.png,7\n")
    parsed = read_label_file(path)
    assert parsed.labels == {"a.png": 9, "b.png": 7} and not parsed.problems
    assert parsed.conflicts == [f"{path}:3: a.png has label 9 here and 5 on line 1; 9, the last row's, is used"]


def test_dataset_csv_keeps_ids_as_text_and_names_missing_columns(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("ImageId,URL,TrueLabel,TargetClass\n00012,u,3,4\n")
    frame = read_dataset_csv(good)
    assert frame["ImageId"].tolist() == ["00012"]
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,URL\n1,u\n")
    with pytest.raises(ContractFileError, match="TrueLabel, TargetClass"):
        read_dataset_csv(bad)


def test_one_checker_of_attack_outputs_with_the_size_policy_as_a_parameter(tmp_path: Path) -> None:

    from nips_adv.contract.attack_outputs import check_attack_output

    clean = np.full((20, 30, 3), 100, np.uint8)
    write_png(np.full((20, 30, 3), 120, np.uint8), tmp_path / "far.png")
    far = check_attack_output(tmp_path / "far.png", clean, 8, wrong_size="refuse")
    assert far.problems == () and far.distance == 20 and far.scored is not None and int(far.scored.max()) == 108
    write_png(np.full((10, 15, 3), 104, np.uint8), tmp_path / "small.png")
    refused = check_attack_output(tmp_path / "small.png", clean, 8, wrong_size="refuse")
    assert refused.problem("size") == "small.png is 15x10" and refused.scored is None and refused.distance is None
    resized = check_attack_output(tmp_path / "small.png", clean, 8, wrong_size="resize")
    assert resized.problem("size") and resized.scored is not None and resized.scored.shape == clean.shape and resized.distance == 4
    Image.fromarray(np.full((20, 30), 100, np.uint8), mode="L").save(tmp_path / "grey.png")
    grey = check_attack_output(tmp_path / "grey.png", clean, 8, wrong_size="refuse")
    assert grey.problem("mode") == "grey.png is L" and grey.distance == 0
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert check_attack_output(tmp_path / "junk.png", clean, 8, wrong_size="resize").problem("unreadable")
