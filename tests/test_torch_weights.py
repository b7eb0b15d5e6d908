"""The PyTorch weight reader: real package files, both serialisations, refused classes, damaged files."""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import struct
import sys
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nips_adv.models import CheckpointError
from nips_adv.models.catalogue import packaged_file
from nips_adv.models.torch_weights import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, WeightFileError, read_torch_state_dict

LITE0_FILE = packaged_file("efficientnet_lite0")


# --- a writer of both .pth formats, with stand-ins for torch's pickled names -----------------------------


@dataclass(frozen=True)
class _Storage:
    key: str
    elements: np.ndarray


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.shape, self.strides, False, collections.OrderedDict())


_STORAGE_CLASS_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage", np.dtype(np.float16): "HalfStorage"}


class _StateDictPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            storage_class = getattr(sys.modules["torch"], _STORAGE_CLASS_NAMES[obj.elements.dtype])
            return ("storage", storage_class, obj.key, "cpu", obj.elements.size, None)
        return None


def _pickle_state_dict(state: dict[str, _Tensor], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Pickle ``state`` as torch.save would name things, with a throw-away fake ``torch`` module."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in _STORAGE_CLASS_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    buffer = io.BytesIO()
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "torch", torch)
        patch.setitem(sys.modules, "torch._utils", utils)
        _StateDictPickler(buffer, protocol=2).dump(collections.OrderedDict(state))
    return buffer.getvalue()


def _storages(state: dict[str, _Tensor]) -> list[_Storage]:
    return list({tensor.storage.key: tensor.storage for tensor in state.values()}.values())


def _legacy_file(main_pickle: bytes, storages: list[_Storage]) -> bytes:
    parts = [
        pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2),
        pickle.dumps(LEGACY_PROTOCOL_VERSION, protocol=2),
        pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, protocol=2),
        main_pickle,
        pickle.dumps([storage.key for storage in storages], protocol=2),
    ]
    for storage in storages:
        parts.append(struct.pack("<q", storage.elements.size) + storage.elements.astype(storage.elements.dtype.newbyteorder("<")).tobytes())
    return b"".join(parts)


def _zip_file(path: Path, main_pickle: bytes, storages: list[_Storage]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", main_pickle)
        archive.writestr("archive/byteorder", "little")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.elements.tobytes())


@pytest.fixture
def sample_state() -> dict[str, _Tensor]:
    shared = _Storage("0", np.arange(10, dtype=np.float32))
    return {
        "conv.weight": _Tensor(shared, 0, (2, 3), (1, 2)),  # a transposed (non-contiguous) view
        "conv.bias": _Tensor(shared, 6, (4,), (1,)),  # same storage, at an offset
        "bn.num_batches_tracked": _Tensor(_Storage("1", np.array([7], dtype=np.int64)), 0, (), ()),
        "half": _Tensor(_Storage("2", np.array([0.5, -2.0], dtype=np.float16)), 0, (2,), (1,)),
    }


def _check_sample(arrays: dict[str, np.ndarray]) -> None:
    assert list(arrays) == ["conv.weight", "conv.bias", "bn.num_batches_tracked", "half"]
    np.testing.assert_array_equal(arrays["conv.weight"], np.arange(6, dtype=np.float32).reshape(3, 2).T)
    np.testing.assert_array_equal(arrays["conv.bias"], [6, 7, 8, 9])
    assert arrays["bn.num_batches_tracked"].shape == () and arrays["bn.num_batches_tracked"] == 7
    assert arrays["half"].dtype == np.float16 and arrays["half"].tolist() == [0.5, -2.0]


# --- reading --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "keys", "parameters"),
    [("efficientnet_lite0", 296, 4_652_008), ("efficientnet_lite1", 386, 5_416_680), ("efficientnet_lite2", 386, 6_092_072)],
)
def test_reads_the_packaged_weight_files(name: str, keys: int, parameters: int) -> None:
    arrays = read_torch_state_dict(packaged_file(name))
    assert len(arrays) == keys
    learned = {key: value for key, value in arrays.items() if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    # The published parameter counts of EfficientNet-Lite0/1/2 (4.65M, 5.42M, 6.09M).
    assert sum(value.size for value in learned.values()) == parameters
    assert arrays["_conv_stem.weight"].shape == (32, 3, 3, 3) and arrays["_conv_stem.weight"].dtype == np.float32
    assert arrays["_blocks.1._expand_conv.weight"].shape == (96, 16, 1, 1)
    assert arrays["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert arrays["_fc.weight"].shape == (1000, 1280) and arrays["_fc.bias"].shape == (1000,)
    assert arrays["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(value).all() for value in learned.values())
    assert (arrays["_bn1.running_var"] > 0).all()


def test_reads_both_serialisations_with_views_offsets_and_dtypes(tmp_path: Path, sample_state, monkeypatch) -> None:
    main_pickle = _pickle_state_dict(sample_state, monkeypatch)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(_legacy_file(main_pickle, _storages(sample_state)))
    _check_sample(read_torch_state_dict(legacy))
    zipped = tmp_path / "zipped.pth"
    _zip_file(zipped, main_pickle, _storages(sample_state))
    _check_sample(read_torch_state_dict(zipped))


# --- refusing other classes ------------------------------------------------------------------------------


def _calling_pickle(module: str, name: str, argument: str) -> bytes:
    """A protocol-2 pickle that imports ``module.name`` (GLOBAL) and calls it with ``argument`` (REDUCE)."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(argument)) + argument.encode() + b"\x85R."


@pytest.mark.parametrize(("module", "name"), [("os", "system"), ("builtins", "eval"), ("posix", "system"), ("torch", "load")])
def test_refuses_a_pickle_that_names_another_class_without_running_it(tmp_path: Path, module: str, name: str) -> None:
    marker = tmp_path / "ran"
    command = f"open({str(marker)!r}, 'w')" if name == "eval" else f"touch {marker}"
    evil = _calling_pickle(module, name, command)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(_legacy_file(evil, []))
    zipped = tmp_path / "zipped.pth"
    _zip_file(zipped, evil, [])
    for path in (legacy, zipped):
        with pytest.raises(WeightFileError, match=rf"{path}: refusing to load {module}\.{name}"):
            read_torch_state_dict(path)
    assert not marker.exists()


def test_the_calling_pickle_would_run_under_plain_pickle(tmp_path: Path) -> None:
    """The refusal test above is only meaningful if its pickle really executes when unrestricted."""
    marker = tmp_path / "ran"
    pickle.loads(_calling_pickle("builtins", "eval", f"open({str(marker)!r}, 'w').close()"))
    assert marker.exists()


def test_refuses_a_state_dict_entry_that_is_not_a_tensor(tmp_path: Path) -> None:
    path = tmp_path / "not_tensors.pth"
    path.write_bytes(_legacy_file(pickle.dumps({"weight": [1.0, 2.0]}, protocol=2), []))
    with pytest.raises(WeightFileError, match="entry 'weight' of the state dict is not a tensor"):
        read_torch_state_dict(path)


# --- damaged files ----------------------------------------------------------------------------------------


def _pickle_ends(data: bytes, count: int) -> list[int]:
    """Offsets where each of the first ``count`` pickles of a legacy file ends (read with pickletools, never executed)."""
    stream, ends = io.BytesIO(data), []
    for _ in range(count):
        for _operation in pickletools.genops(stream):
            pass
        ends.append(stream.tell())
    return ends


@pytest.fixture(scope="module")
def lite0_bytes() -> bytes:
    return LITE0_FILE.read_bytes()


def test_truncated_files_give_a_clear_error(tmp_path: Path, lite0_bytes: bytes) -> None:
    header_end, main_end, keys_end = _pickle_ends(lite0_bytes, 5)[2:]
    cuts = {
        "header": 20,
        "state dict": header_end + 500,
        "storage keys": main_end + 100,
        "storage count": keys_end + 4,
        "last storage": len(lite0_bytes) - 100,
        "empty": 0,
    }
    for where, cut in cuts.items():
        path = tmp_path / f"cut_{cut}.pth"
        path.write_bytes(lite0_bytes[:cut])
        with pytest.raises(WeightFileError) as error:
            read_torch_state_dict(path)
        message = str(error.value)
        assert str(path) in message and "\n" not in message, where
        assert "truncated" in message or "corrupted" in message, (where, message)


def test_corrupted_files_give_a_clear_error(tmp_path: Path, lite0_bytes: bytes) -> None:
    header_end, main_end, keys_end = _pickle_ends(lite0_bytes, 5)[2:]
    damaged = {
        "garbage": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "bad opcode": lite0_bytes[: header_end + 2] + b"\xff" + lite0_bytes[header_end + 3 :],
        "bad count": lite0_bytes[:keys_end] + struct.pack("<q", 12345) + lite0_bytes[keys_end + 8 :],
        "bad magic": pickle.dumps(42, protocol=2) + lite0_bytes[_pickle_ends(lite0_bytes, 1)[0] :],
    }
    expected = {"bad count": "storage .* holds 12345", "bad magic": "not a PyTorch weight file"}
    for what, data in damaged.items():
        path = tmp_path / f"{what.replace(' ', '_')}.pth"
        path.write_bytes(data)
        with pytest.raises(WeightFileError, match=expected.get(what)) as error:
            read_torch_state_dict(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value), what
        assert isinstance(error.value, CheckpointError)


def test_a_truncated_zip_file_gives_a_clear_error(tmp_path: Path, sample_state, monkeypatch) -> None:
    zipped = tmp_path / "zipped.pth"
    _zip_file(zipped, _pickle_state_dict(sample_state, monkeypatch), _storages(sample_state))
    zipped.write_bytes(zipped.read_bytes()[:-30])
    with pytest.raises(WeightFileError, match=f"{zipped}: corrupted or truncated PyTorch zip file"):
        read_torch_state_dict(zipped)


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(WeightFileError, match=f"cannot read weight file {tmp_path / 'absent.pth'}"):
        read_torch_state_dict(tmp_path / "absent.pth")
