"""Files: modes from the umask, writing where we must not, other editors' encodings, weight files."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nips_adv.contract.atomic import atomic_write, write_bytes_atomically
from nips_adv.contract.csv_files import read_dataset_csv, read_label_file, read_target_classes
from nips_adv.contract.images import write_png
from nips_adv.jobs.folder_job import JobReport, input_batches


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_files_get_the_umask_mode_like_open(tmp_path: Path, umask_022) -> None:
    from nips_adv.download.dataset import FAILED_FILE, ImageFailure, write_failures

    write_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png")
    write_bytes_atomically(tmp_path / "b.bin", b"x")
    write_failures(tmp_path / FAILED_FILE, [ImageFailure("1", "http://x/1.png", "gone")])
    with open(tmp_path / "plain.txt", "w"):
        pass
    modes = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()}
    assert modes == {"a.png": 0o644, "b.bin": 0o644, FAILED_FILE: 0o644, "plain.txt": 0o644}
    os.umask(0o077)
    write_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "private.png")
    assert (tmp_path / "private.png").stat().st_mode & 0o777 == 0o600


def test_atomic_write_replaces_a_link_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    (tmp_path / "link.txt").symlink_to(target)
    write_bytes_atomically(tmp_path / "link.txt", b"new")
    assert target.read_text() == "keep me" and not (tmp_path / "link.txt").is_symlink()
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "failed.txt") as stream:
        stream.write(b"half")
        raise RuntimeError
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.txt", "target.txt"]


@pytest.mark.e2e
def test_defense_refuses_an_output_named_like_an_input_and_replaces_a_link(tmp_path: Path, inception_v3_checkpoint: Path) -> None:
    from nips_adv.cli.defense import defense_command

    (tmp_path / "in").mkdir()
    write_png(np.full((299, 299, 3), 9, np.uint8), tmp_path / "in" / "x.png")
    original = (tmp_path / "in" / "x.png").read_bytes()
    for name in ("x.png", "new.PNG", "target_class.csv"):
        refused = CliRunner().invoke(defense_command, [str(tmp_path / "in"), str(tmp_path / "in" / name), "--quiet"])
        assert refused.exit_code == 2 and "named like an input" in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    assert (tmp_path / "in" / "x.png").read_bytes() == original
    precious = tmp_path / "precious.txt"
    precious.write_text("not a CSV")
    (tmp_path / "result.csv").symlink_to(precious)
    done = CliRunner().invoke(
        defense_command,
        [str(tmp_path / "in"), str(tmp_path / "result.csv"), "--model", "inception_v3", "--checkpoint", str(inception_v3_checkpoint),
         "--quiet"],
    )
    assert done.exit_code == 0, done.output
    assert precious.read_text() == "not a CSV"
    assert not (tmp_path / "result.csv").is_symlink() and (tmp_path / "result.csv").read_text().startswith("x.png,")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_target_and_dataset_csvs_from_other_editors_are_read(tmp_path: Path, encoding: str) -> None:
    (tmp_path / "target_class.csv").write_bytes("a.png,7\r\nb.png,9\r\n".encode(encoding))
    assert read_target_classes(tmp_path).labels == {"a.png": 7, "b.png": 9}
    (tmp_path / "set.csv").write_bytes("ImageId,TrueLabel,TargetClass\n00a1,3,4\n".encode(encoding))
    frame = read_dataset_csv(tmp_path / "set.csv")
    assert list(frame["ImageId"]) == ["00a1"] and list(frame["TrueLabel"]) == [3]
    assert read_label_file(tmp_path / "target_class.csv").problems == []


def test_a_dangling_link_in_input_dir_is_named(tmp_path: Path) -> None:
    write_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "good.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    report = JobReport()
    names = [name for batch in input_batches(tmp_path, 4, report, progress=False) for name in batch.names]
    assert names == ["good.png"]
    assert len(report.failures) == 1 and "gone.png" in report.failures[0] and "dangling" in report.failures[0]


def _torch_file(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], stride: tuple[int, ...], numel: int, *, zip_path: Path | None = None) -> bytes:
    """A legacy (or zip) .pth whose one float tensor declares ``shape``/``stride`` over ``numel`` elements."""
    from nips_adv.models.torch_weights import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION

    torch_module, utils_module = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils_module._rebuild_tensor_v2 = _rebuild_tensor_v2
    float_storage = type("FloatStorage", (), {"__module__": "torch"})
    torch_module.FloatStorage = float_storage
    monkeypatch.setitem(sys.modules, "torch", torch_module)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_module)
    marker = object()

    class Tensor:
        def __reduce__(self):
            return _rebuild_tensor_v2, (marker, 0, shape, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", float_storage, "0", "cpu", numel) if obj is marker else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"weight": Tensor()})
    if zip_path is not None:
        with zipfile.ZipFile(zip_path, "w") as bundle:
            bundle.writestr("archive/data.pkl", buffer.getvalue())
            bundle.writestr("archive/data/0", struct.pack("<f", 1.0))
        return zip_path.read_bytes()
    header = b"".join(pickle.dumps(value, protocol=2) for value in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}))
    return header + buffer.getvalue() + pickle.dumps(["0"], protocol=2) + struct.pack("<q", numel) + struct.pack("<f", 1.0) * numel


@pytest.mark.parametrize(
    "shape, stride, numel, serialisation",
    [
        ((100_000, 100_000), (0, 0), 1, "legacy"),  # 40 GB from one float
        ((50_000, 50_000), (1, 0), 50_000, "legacy"),
        ((1,), (1,), 10**12, "zip"),  # a storage the file cannot hold
    ],
)
def test_weight_files_declaring_more_than_they_hold_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape, stride, numel, serialisation
) -> None:
    from nips_adv.models.torch_weights import WeightFileError, read_torch_state_dict

    path = tmp_path / "weights.pth"
    if serialisation == "zip":
        _torch_file(monkeypatch, shape, stride, numel, zip_path=path)
    else:
        path.write_bytes(_torch_file(monkeypatch, shape, stride, numel))
    monkeypatch.undo()
    with pytest.raises(WeightFileError) as refused:
        read_torch_state_dict(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
