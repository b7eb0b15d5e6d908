"""The validator: broken and hostile archives each rejected for their own reason; exit statuses; cleanup."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from click.testing import CliRunner

from nips_adv.cli.submission import validate_command
from nips_adv.submission.runner import Runner
from nips_adv.submission.validate import COULD_NOT_RUN, INVALID, VALID, validate_submission

MiB = 1024 * 1024

# A Python entry point standing in for a real attack: it copies each input, changed as MODE says.
FAKE_ATTACK = """#!/usr/bin/env python
import sys, time
from pathlib import Path
import numpy as np
from PIL import Image

MODE = {mode!r}
source, target, eps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
if MODE == "nothing":
    sys.exit(0)
if MODE == "hang":
    time.sleep(60)
if MODE == "crash":
    print("Traceback: model exploded", file=sys.stderr)
    sys.exit(3)
if MODE == "tamper":
    (source / "IMG0000.png").write_bytes(b"overwritten")
for index, path in enumerate(sorted(source.glob("*.png"))):
    if MODE == "missing" and index == 0:
        continue
    clean = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    step = eps + 1 if MODE == "over" else eps
    adversarial = np.where(clean + step <= 255, clean + step, clean - step).astype(np.uint8)
    image = Image.fromarray(adversarial)
    if MODE == "size":
        image = image.resize((300, 300))
    if MODE == "grey":
        image = image.convert("L")
    image.save(target / path.name, format="JPEG" if MODE == "jpeg" else "PNG")
"""

FAKE_DEFENSE = """#!/usr/bin/env python
import sys
from pathlib import Path

MODE = {mode!r}
names = sorted(path.name for path in Path(sys.argv[1]).glob("*.png"))
if MODE == "nothing":
    sys.exit(0)
rows = [f"{{name}},{{index + 1}}" for index, name in enumerate(names)]
if MODE == "missing":
    rows = rows[1:]
if MODE == "bad-labels":
    rows[0] = names[0] + ",0"
    rows[1] = names[1] + ",cat"
if MODE == "lenient":
    rows[0] = names[0][:-4] + ",5"
    rows[1] = names[1] + ",0"
Path(sys.argv[2]).write_text("\\n".join(rows) + "\\n")
"""


def metadata_json(submission_type: str = "attack", entry_point: str = "run_attack.sh", **changes: object) -> bytes:
    document = {
        "type": submission_type,
        "container": "nips-adv:test",
        "container_gpu": "nips-adv:test-gpu",
        "entry_point": entry_point,
    }
    document.update(changes)
    return json.dumps(document).encode()


Member = tuple[bytes, int]  # content, mode


def make_archive(path: Path, members: dict[str, Member], folder: str = "") -> Path:
    """Write ``members`` into a .zip/.tar/.tar.gz at ``path``, optionally under one top-level ``folder``."""
    prefix = f"{folder}/" if folder else ""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as bundle:
            for name, (content, mode) in members.items():
                info = zipfile.ZipInfo(prefix + name)
                info.create_system = 3
                info.external_attr = (0o100000 | mode) << 16
                bundle.writestr(info, content)
    else:
        with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as bundle:
            for name, (content, mode) in members.items():
                info = tarfile.TarInfo(prefix + name)
                info.size, info.mode = len(content), mode
                bundle.addfile(info, io.BytesIO(content))
    return path


def attack_members(mode: str = "copy", submission_type: str = "attack") -> dict[str, Member]:
    return {
        "metadata.json": (metadata_json(submission_type), 0o644),
        "run_attack.sh": (FAKE_ATTACK.format(mode=mode).encode(), 0o755),
    }


def defense_members(mode: str = "ok") -> dict[str, Member]:
    return {
        "metadata.json": (metadata_json("defense", "run_defense.sh"), 0o644),
        "run_defense.sh": (FAKE_DEFENSE.format(mode=mode).encode(), 0o755),
    }


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile at an empty folder, to check the validator leaves nothing behind."""
    folder = tmp_path / "tempdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    assert list(folder.iterdir()) == [], "the validator left files in the temporary folder"


def validate(archive: Path, submission_type: str = "attack", **options: object):
    options = {"num_images": 3, "seed": 7, "time_limit": 60, **options}
    return validate_submission(archive, submission_type=submission_type, **options)


@pytest.mark.parametrize("submission_type, suffix", [("attack", ".zip"), ("targeted_attack", ".tar.gz")])
def test_good_attack_is_valid(tmp_path: Path, submission_type: str, suffix: str) -> None:
    archive = make_archive(tmp_path / f"good{suffix}", attack_members(submission_type=submission_type), folder="sub")
    report = validate(archive, submission_type, epsilon=16)
    assert report.status == VALID, report.lines()
    assert report.epsilon == 16 and report.run is not None and report.run.ok
    assert "3 of 3 images written; largest change 16 (eps 16); 0 unchanged" in "\n".join(report.lines())
    assert report.lines()[-1] == f"good{suffix}: VALID"


def test_seed_fixes_the_epsilon_draw(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "fast.tar", {**attack_members(), "run_attack.sh": (b"#!/bin/sh\n", 0o755)})
    first, second = validate(archive, seed=11), validate(archive, seed=11)
    assert first.epsilon == second.epsilon and first.epsilon in (4, 8, 12, 16)
    assert {validate(archive, seed=seed, num_images=1).epsilon for seed in range(12)} == {4, 8, 12, 16}


class Broken(NamedTuple):
    label: str
    members: dict[str, Member]
    message: str
    submission_type: str = "attack"


BROKEN = [
    Broken(
        "over-eps",
        attack_members("over"),
        "3 output image(s) exceed eps 8 (the organisers would clip them): IMG0000.png, IMG0001.png, IMG0002.png; "
        "worst IMG0000.png by 1 (max |adv - clean| = 9)",
    ),
    Broken("missing-image", attack_members("missing"), "1 of 3 output images missing: IMG0000.png"),
    Broken("writes-nothing", attack_members("nothing"), "3 of 3 output images missing"),
    Broken("wrong-size", attack_members("size"), "not 299x299 (the organisers would resize them): IMG0000.png is 300x300"),
    Broken("jpeg", attack_members("jpeg"), "3 output image(s) not PNG: IMG0000.png is JPEG"),
    Broken("grey", attack_members("grey"), "3 output image(s) not RGB (the organisers convert them with convert('RGB')): IMG0000.png is L"),
    Broken("exits-non-zero", attack_members("crash"), "entry point exited with status 3"),
    Broken("tampers-input", attack_members("tamper"), "the entry point changed its input images"),
    Broken("no-metadata", {"run_attack.sh": attack_members()["run_attack.sh"]}, "no metadata.json at the top level of the archive or in its"),
    Broken("broken-metadata", {**attack_members(), "metadata.json": (b'{"type": attack}', 0o644)}, "metadata.json: invalid JSON"),
    Broken("missing-field", {**attack_members(), "metadata.json": (b'{"type": "attack"}', 0o644)}, "missing field(s) container"),
    Broken("wrong-type", attack_members(), "type is 'attack' but the submission is for the 'defense' track", "defense"),
    Broken("entry-missing", {"metadata.json": (metadata_json(), 0o644)}, "entry point 'run_attack.sh' not found"),
    Broken("not-executable", {**attack_members(), "run_attack.sh": (b"#!/bin/sh\n", 0o644)}, "entry point is not executable"),
    Broken("no-shebang", {**attack_members(), "run_attack.sh": (b"echo hi\n", 0o755)}, "could not be started: [Errno 8] Exec"),
    Broken("defense-nothing", defense_members("nothing"), "result.csv not written", "defense"),
    Broken("defense-missing", defense_members("missing"), "result.csv: 1 of 3 images not classified: IMG0000.png", "defense"),
    Broken("defense-labels", defense_members("bad-labels"), "result.csv:1: label '0' is not an integer 1..1000", "defense"),
]


@pytest.mark.parametrize("case", BROKEN, ids=lambda case: case.label)
def test_broken_submission_rejected_for_its_reason(tmp_path: Path, case: Broken) -> None:
    archive = make_archive(tmp_path / "broken.tar.gz", case.members, folder="sub")
    report = validate(archive, case.submission_type, epsilon=8, strict=True)  # --strict: today's errors
    assert report.status == INVALID
    assert any(case.message in error for error in report.errors), report.lines()


def test_crash_reports_stderr_tail(tmp_path: Path) -> None:
    report = validate(make_archive(tmp_path / "crash.zip", attack_members("crash")))
    assert "Traceback: model exploded" in "\n".join(report.lines())


def test_hang_is_killed_at_the_time_limit(tmp_path: Path) -> None:
    report = validate(make_archive(tmp_path / "hang.zip", attack_members("hang")), time_limit=1)
    assert report.status == INVALID and report.run is not None and report.run.timed_out
    assert report.run.seconds < 10
    assert any("exceeded the time limit of 1 s for 3 images" in error for error in report.errors)


def test_good_defense_is_valid(tmp_path: Path) -> None:
    report = validate(make_archive(tmp_path / "defense.tar", defense_members()), "defense")
    assert report.status == VALID, report.lines()
    assert "3 of 3 images classified (3 distinct labels)" in "\n".join(report.lines())


class Hostile(NamedTuple):
    label: str
    build: object  # callable(path) -> archive
    message: str


def _traversal(path: Path) -> Path:
    return make_archive(path / "t.zip", {**attack_members(), "../../escaped.txt": (b"x", 0o644)})


def _absolute(path: Path) -> Path:
    return make_archive(path / "a.tar", {**attack_members(), "/tmp/nips_adv_escaped.txt": (b"x", 0o644)})


def _link_out(path: Path) -> Path:
    archive = path / "l.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        info = tarfile.TarInfo("sub/run_attack.sh")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../../bin/sh"
        bundle.addfile(info)
    return archive


def _bomb(path: Path) -> Path:
    archive = path / "bomb.zip"
    real = 2 * MiB + 5
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("metadata.json", metadata_json())
        bundle.writestr("weights.bin", bytes(real))
    data = archive.read_bytes()
    assert data.count(real.to_bytes(4, "little")) == 2
    archive.write_bytes(data.replace(real.to_bytes(4, "little"), (1000).to_bytes(4, "little")))
    return archive


def _two_folders(path: Path) -> Path:
    return make_archive(path / "two.zip", {"a/metadata.json": (metadata_json(), 0o644), "b/x": (b"x", 0o644)})


def _rar(path: Path) -> Path:
    (path / "sub.rar").write_bytes(b"Rar!\x1a\x07")
    return path / "sub.rar"


HOSTILE = [
    Hostile("traversal", _traversal, "member '../../escaped.txt': '..' in its path"),
    Hostile("absolute", _absolute, "member '/tmp/nips_adv_escaped.txt': absolute path"),
    Hostile("link-out", _link_out, "member 'sub/run_attack.sh': link to '../../../../bin/sh' points outside"),
    Hostile("zip-bomb", _bomb, "member 'weights.bin' expands past its declared size of 1000 bytes"),
    Hostile("two-folders", _two_folders, "2 top-level entries (a, b) where at most one folder is allowed"),
    Hostile("extension", _rar, "unsupported archive type"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=lambda case: case.label)
def test_hostile_archive_rejected_and_nothing_escapes(tmp_path: Path, case: Hostile) -> None:
    (tmp_path / "deep" / "down").mkdir(parents=True)
    archive = case.build(tmp_path / "deep" / "down")
    before = sorted(tmp_path.rglob("*"))
    report = validate(archive, max_unpacked_bytes=MiB)
    assert report.status == INVALID and report.run is None
    assert any(case.message in error for error in report.errors), report.lines()
    assert sorted(tmp_path.rglob("*")) == before
    assert not Path("/tmp/nips_adv_escaped.txt").exists()


def test_cli_exit_statuses_and_report(tmp_path: Path) -> None:
    runner = CliRunner()
    good = make_archive(tmp_path / "good.zip", attack_members())
    result = runner.invoke(validate_command, [str(good), "--type", "attack", "--num-images", "2", "--eps", "4", "--seed", "1"])
    assert result.exit_code == VALID, result.output
    assert "eps 4, seed 1" in result.output and result.output.rstrip().endswith("good.zip: VALID")

    bad = make_archive(tmp_path / "bad.zip", attack_members("over"))
    result = runner.invoke(validate_command, [str(bad), "--type", "attack", "--num-images", "2", "--quiet", "--strict"])
    assert result.exit_code == INVALID
    lines = result.output.rstrip().splitlines()
    assert lines[-1] == "bad.zip: INVALID (1 error)" and lines[0].startswith("  ERROR: 2 output image(s) exceed eps")

    result = runner.invoke(validate_command, [str(good), "--type", "attack", "--gpu"])
    assert result.exit_code == 2 and "--gpu needs --docker" in result.output


def test_keep_leaves_the_work_folder(tmp_path: Path, private_tempdir: Path) -> None:
    report = validate(make_archive(tmp_path / "good.zip", attack_members()), keep=True)
    assert report.work_dir is not None and report.work_dir.parent == private_tempdir
    assert sorted(path.name for path in report.work_dir.iterdir()) == ["extracted", "input_images", "logs", "output_images"]
    assert len(list((report.work_dir / "output_images").iterdir())) == 3
    import shutil

    shutil.rmtree(report.work_dir)


@pytest.fixture
def docker_without_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``docker`` client on PATH whose engine does not answer (as on this machine)."""
    bin_dir = tmp_path / "fake_bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_docker_without_engine_could_not_run(tmp_path: Path, docker_without_engine: Path) -> None:
    archive = make_archive(tmp_path / "good.zip", attack_members())
    report = validate(archive, runner=Runner("docker"))
    assert report.status == COULD_NOT_RUN
    assert any("no Docker engine answers" in error for error in report.errors)
    assert "COULD NOT RUN" in report.lines()[-1]
    result = CliRunner().invoke(validate_command, [str(archive), "--type", "attack", "--docker"])
    assert result.exit_code == COULD_NOT_RUN, result.output


def organisers_verify_attack_output(output_dir: Path, names: list[str]) -> bool:
    """submission_validator_lib.py's _verify_output for attacks, restated: each image opens and converts to 299x299 RGB."""
    from PIL import Image as PILImage

    try:
        return all(np.array(PILImage.open(output_dir / name).convert("RGB")).shape == (299, 299, 3) for name in names)
    except OSError:
        return False


@pytest.mark.parametrize("mode, warning", [("over", "the organisers would clip them"), ("grey", "the organisers convert them")])
def test_outputs_the_organisers_fixed_are_warnings(tmp_path: Path, mode: str, warning: str) -> None:
    """Their verdict (the run succeeded; outputs open as 299x299 RGB) stays ours; what they did is said in a warning."""
    archive = make_archive(tmp_path / f"{mode}.zip", attack_members(mode))
    report = validate(archive, epsilon=8, keep=True)
    try:
        names = [f"IMG{i:04d}.png" for i in range(3)]
        assert organisers_verify_attack_output(report.work_dir / "output_images", names)
        assert report.status == VALID, report.lines()
        assert any(warning in line for line in report.warnings)
    finally:
        shutil.rmtree(report.work_dir, ignore_errors=True)


def test_defense_rows_the_organisers_accepted_are_warnings(tmp_path: Path) -> None:
    """load_defense_output: a name without .png gets it, any integer label (0 too) counts as a classification."""
    archive = make_archive(tmp_path / "d.zip", defense_members("lenient"))
    report = validate(archive, "defense")
    assert report.status == VALID, report.lines()
    assert any("without .png (the organisers add it)" in line for line in report.warnings)
    assert any("outside 1..1000" in line for line in report.warnings)
    assert validate(archive, "defense", strict=True).status == INVALID


def test_docker_validation_pulls_container_gpu_before_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the organisers' validator: an image that cannot be pulled is INVALID, and nothing is run."""
    calls = tmp_path / "calls.txt"
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = info ] && exit 0\necho "pull access denied" >&2\nexit 1\n')
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{docker.parent}{os.pathsep}{os.environ['PATH']}")
    archive = make_archive(tmp_path / "a.zip", attack_members())
    report = validate(archive, runner=Runner("docker"))
    assert report.status == INVALID
    assert any("container_gpu nips-adv:test-gpu: cannot be pulled (pull access denied)" in error for error in report.errors), report.lines()
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["info", "pull", "inspect"]
