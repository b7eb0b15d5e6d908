"""The three competition tools end to end, as the organisers run them, on a random-weight Inception V3."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nips_adv.cli.attack import attack_command, targeted_attack_command
from nips_adv.cli.defense import defense_command
from nips_adv.contract.images import read_png


def _make_inputs(folder: Path, *, count: int = 3, odd_size: bool = False, broken: bool = False) -> dict[str, np.ndarray]:
    """PNGs in several modes (and optionally an odd size and a broken file); returns name -> RGB pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    clean: dict[str, np.ndarray] = {}
    modes = ["RGB", "P", "L", "RGBA"]
    for index in range(count):
        pixels = rng.integers(0, 256, size=(299, 299, 3), dtype=np.uint8)
        pixels[:8, :8] = 0
        pixels[-8:, -8:] = 255
        image = Image.fromarray(pixels).convert(modes[index % len(modes)])
        name = f"img{index:02d}.png"
        image.save(folder / name)
        clean[name] = read_png(folder / name)
    if odd_size:
        Image.fromarray(rng.integers(0, 256, size=(210, 333, 3), dtype=np.uint8)).save(folder / "odd.png")
        clean["odd.png"] = read_png(folder / "odd.png")
    if broken:
        (folder / "truncated.png").write_bytes((folder / "img00.png").read_bytes()[:200])
        (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    (folder / "nested").mkdir()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(folder / "nested" / "inner.png")
    return clean


def _assert_within_eps(output_dir: Path, clean: dict[str, np.ndarray], eps: float) -> None:
    assert sorted(path.name for path in output_dir.iterdir()) == sorted(clean)
    for name, pixels in clean.items():
        with Image.open(output_dir / name) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == pixels.shape[1::-1]
        written = np.asarray(Image.open(output_dir / name)).astype(np.int16)
        assert np.abs(written - pixels.astype(np.int16)).max() <= eps, name


@pytest.mark.e2e
def test_console_script_positional_contract_with_broken_inputs(
    tmp_path: Path, inception_v3_checkpoint: Path, console_env: dict[str, str]
) -> None:
    clean = _make_inputs(tmp_path / "in", odd_size=True, broken=True)
    completed = subprocess.run(
        ["nips-attack", str(tmp_path / "in"), str(tmp_path / "out"), "16", "--checkpoint", str(inception_v3_checkpoint),
         "--method", "bsr:iterations=2", "--quiet"],
        capture_output=True, text=True, env=console_env, timeout=600,
    )
    assert completed.returncode == 1, completed.stderr
    assert "truncated.png" in completed.stderr and "empty.png" in completed.stderr
    assert "Could not find cuda" not in completed.stderr  # TensorFlow's start-up noise stays hidden
    _assert_within_eps(tmp_path / "out", clean, 16)
    changed = [name for name, pixels in clean.items() if not np.array_equal(read_png(tmp_path / "out" / name), pixels)]
    assert len(changed) == len(clean)

    defended = subprocess.run(
        ["nips-defense", str(tmp_path / "out"), str(tmp_path / "result.csv"), "--model", "inception_v3",
         "--checkpoint", str(inception_v3_checkpoint), "-q"],
        capture_output=True, text=True, env=console_env, timeout=600,
    )
    assert defended.returncode == 0, defended.stderr
    rows = [line.split(",") for line in (tmp_path / "result.csv").read_text().splitlines()]
    assert sorted(name for name, _ in rows) == sorted(clean)
    assert all(label.isdigit() and 1 <= int(label) <= 1000 for _, label in rows)


@pytest.mark.slow
@pytest.mark.parametrize("eps", ["0", "2.5", "4", "255"])
def test_epsilon_bound_on_decoded_pngs(tmp_path: Path, inception_v3_checkpoint: Path, eps: str) -> None:
    clean = _make_inputs(tmp_path / "in", count=2)
    result = CliRunner().invoke(
        attack_command,
        [str(tmp_path / "in"), str(tmp_path / "out"), "--eps", eps, "--checkpoint", str(inception_v3_checkpoint),
         "--method", "fgsm", "-q"],
    )
    assert result.exit_code == 0, result.output
    _assert_within_eps(tmp_path / "out", clean, float(eps))
    if eps == "0":
        assert all(np.array_equal(read_png(tmp_path / "out" / name), pixels) for name, pixels in clean.items())


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    ["i-fgsm:iterations=2", "di-mi-fgsm:iterations=2", "ti-di-mi-fgsm:iterations=2", "bsr:iterations=2,loss=margin"],
)
def test_each_method_and_loss_runs_through_the_tool(tmp_path: Path, inception_v3_checkpoint: Path, spec: str) -> None:
    clean = _make_inputs(tmp_path / "in", count=1)
    result = CliRunner().invoke(
        attack_command,
        [str(tmp_path / "in"), str(tmp_path / "out"), "8", "--checkpoint", str(inception_v3_checkpoint),
         "--method", spec, "-q"],
    )
    assert result.exit_code == 0, result.output
    _assert_within_eps(tmp_path / "out", clean, 8)
    assert not np.array_equal(read_png(tmp_path / "out" / "img00.png"), clean["img00.png"])


def test_targeted_attack_reads_targets_and_falls_back_to_least_likely(tmp_path: Path, inception_v3_checkpoint: Path) -> None:
    clean = _make_inputs(tmp_path / "in", count=3)
    (tmp_path / "in" / "target_class.csv").write_text("img00.png,5\nimg01.png,notalabel\n")
    result = CliRunner().invoke(
        targeted_attack_command,
        [str(tmp_path / "in"), str(tmp_path / "out"), "12", "--checkpoint", str(inception_v3_checkpoint),
         "--method", "logit-ti-di-mi-fgsm:iterations=2", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert "target_class.csv:2" in result.stderr
    assert "img01.png: not in target_class.csv; attacking toward its least-likely class" in result.stderr
    assert "img02.png: not in target_class.csv" in result.stderr
    _assert_within_eps(tmp_path / "out", clean, 12)


def test_targeted_attack_without_target_file_is_a_usage_error(tmp_path: Path) -> None:
    _make_inputs(tmp_path / "in", count=1)
    result = CliRunner().invoke(targeted_attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), "4"])
    assert result.exit_code == 2
    assert "target_class.csv: missing" in result.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "in" / "target_class.csv").mkdir()
    result = CliRunner().invoke(targeted_attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), "4"])
    assert result.exit_code == 2 and "target_class.csv: is a folder" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["abc"], "not a number"),
        (["--eps", "-1"], "outside 0..255"),
        (["256"], "outside 0..255"),
        (["nan"], "outside 0..255"),
        ([], "give MAX_EPSILON"),
        (["4", "--eps", "8"], "disagree"),
        (["4", "--method", "bsr:copies=100000"], "copies 100000: one image's copies must fit in one run"),
    ],
)
def test_bad_epsilon_is_a_usage_error(tmp_path: Path, arguments: list[str], message: str) -> None:
    (tmp_path / "in").mkdir()
    result = CliRunner().invoke(attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), *arguments])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_output_dir_equal_to_input_dir_is_refused(tmp_path: Path) -> None:
    clean = _make_inputs(tmp_path / "in", count=1)
    result = CliRunner().invoke(attack_command, [str(tmp_path / "in"), str(tmp_path / "in" / ".." / "in"), "4"])
    assert result.exit_code == 2
    assert "would overwrite the clean images" in result.stderr
    assert np.array_equal(read_png(tmp_path / "in" / "img00.png"), clean["img00.png"])


def test_empty_input_dir_writes_nothing(tmp_path: Path, inception_v3_checkpoint: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("no images here")
    result = CliRunner().invoke(
        attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), "4", "--checkpoint", str(inception_v3_checkpoint)]
    )
    assert result.exit_code == 0, result.output
    assert "no PNG images found" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_inputs(tmp_path / "in", count=1)
    monkeypatch.setenv("NIPS_ADV_CHECKPOINTS", str(tmp_path / "ckpts"))
    result = CliRunner().invoke(defense_command, [str(tmp_path / "in"), str(tmp_path / "result.csv"), "--model", "inception_v3"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(tmp_path / "ckpts" / "inception_v3.ckpt") in lines[0]
    assert "nips-adv download checkpoint inception_v3" in lines[0]


def test_checkpoint_of_another_model_is_one_line(tmp_path: Path, inception_v3_checkpoint: Path) -> None:
    _make_inputs(tmp_path / "in", count=1)
    result = CliRunner().invoke(
        defense_command,
        [str(tmp_path / "in"), str(tmp_path / "result.csv"), "--model", "inception_v3",
         "--checkpoint", str(tmp_path / "missing.ckpt")],
    )
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "missing.ckpt" in result.stderr


@pytest.mark.e2e
def test_verbose_defense_names_each_predicted_class(tmp_path: Path, inception_v3_checkpoint: Path) -> None:
    from nips_adv.contract.labels import class_name

    _make_inputs(tmp_path / "in", count=2)
    result = CliRunner().invoke(
        defense_command,
        [str(tmp_path / "in"), str(tmp_path / "result.csv"), "--model", "inception_v3", "--checkpoint", str(inception_v3_checkpoint), "-q", "-v"],
    )
    assert result.exit_code == 0, result.output
    for line in (tmp_path / "result.csv").read_text().splitlines():
        name, label = line.split(",")
        assert f"{name}: {label} ({class_name(int(label))})" in result.stderr


# Named as TensorFlow's out-of-memory error is: the CLI's edge matches it by name, without importing TensorFlow.
_ResourceExhaustedError = type("ResourceExhaustedError", (Exception,), {})


@pytest.mark.parametrize("kind", [MemoryError, _ResourceExhaustedError])
@pytest.mark.parametrize("written_first", [0, 1])
def test_out_of_memory_is_one_line_and_keeps_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: type[Exception], written_first: int
) -> None:
    import contextlib

    import nips_adv.attacks.directory as attack_module
    import nips_adv.defenses.directory as defense_module
    from nips_adv.models.classifier import Classifier

    clean = _make_inputs(tmp_path / "in", count=2)
    first = sorted(clean)[0]

    def attack_then_exhaust(input_dir: Path, output_dir: Path, *args: object, **kwargs: object) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        if written_first:
            Image.fromarray(clean[first]).save(output_dir / first)
        raise kind("OOM when allocating tensor with shape[320,150,150,32]")

    def classify_then_exhaust(input_dir: Path, output_file: Path, **kwargs: object) -> None:
        output_file.write_text(f"{first},1\n" if written_first else "")
        raise kind("OOM when allocating tensor with shape[320,150,150,32]")

    monkeypatch.setattr(attack_module, "attack_directory", attack_then_exhaust)
    monkeypatch.setattr(defense_module, "classify_directory", classify_then_exhaust)
    monkeypatch.setattr(Classifier, "create", classmethod(lambda cls, *args, **kwargs: contextlib.nullcontext(None)))
    runs = [
        (attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), "8", "--method", "bsr:copies=20"], "copies"),
        (defense_command, [str(tmp_path / "in"), str(tmp_path / "out.csv"), "--passes", "100000"], "--passes"),
    ]
    for command, arguments, option in runs:
        result = CliRunner().invoke(command, arguments)
        assert result.exit_code == (1 if written_first else 2), result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "out of memory" in lines[0] and option in lines[0], result.stderr
        assert f"{written_first} outputs written and kept" in lines[0] and "Traceback" not in result.output
    assert (tmp_path / "out" / first).is_file() == bool(written_first)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("pgd:iterations=3", "unknown method 'pgd'; known: auto, fgsm"),
        ("bsr:copies=5,colour=red", "'colour' is not a setting; settings: copies, copy_transform"),
        ("bsr:iterations=many", "--method 'bsr:iterations=many':"),
        ("auto:copies=5", "settings pin a recipe; give a method with them, e.g. bsr:copies=5"),
        ("bsr:copies=0", "copies must be at least 1"),
        ("bsr:iterations=0", "iterations must be at least 1"),
        ("mi-fgsm:copies=2", "copies need a copy transform"),
        ("bsr:loss=hinge", "loss must be one of"),
    ],
)
def test_a_bad_method_spec_is_one_line_and_writes_nothing(tmp_path: Path, spec: str, message: str) -> None:
    _make_inputs(tmp_path / "in", count=1)
    result = CliRunner().invoke(attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), "4", "--method", spec])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_method_spec_sets_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import nips_adv.attacks.directory as attack_module
    from nips_adv.models.classifier import Classifier

    seen = []
    monkeypatch.setattr(attack_module, "attack_directory", lambda *args, config, **kwargs: seen.append(config) or attack_module.JobReport())
    monkeypatch.setattr(Classifier, "create", classmethod(lambda cls, *args, **kwargs: contextlib.nullcontext(None)))
    _make_inputs(tmp_path / "in", count=1)
    for spec in ("bsr:copies=5,iterations=20", "mi-fgsm:own_classes=1,step_size=2"):
        result = CliRunner().invoke(attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), "4", "--method", spec])
        assert result.exit_code == 0, result.output
    assert (seen[0].copy_transform, seen[0].copies, seen[0].iterations) == ("bsr", 5, 20)
    assert (seen[1].copy_transform, seen[1].own_classes, seen[1].step_size) == ("", 1, 2)
