"""Read a PyTorch ``.pth`` state dict into numpy arrays without PyTorch, and without running its pickle.

A ``.pth`` file is a pickle that names Python callables; ``torch.load`` imports and calls them,
so a crafted file runs arbitrary code. Here the pickles go through an unpickler that knows only
the few names a state dict of plain tensors needs (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2``, ``torch._utils._rebuild_parameter`` and the typed storage
classes such as ``torch.FloatStorage``), each mapped to a stand-in defined here; any other name
is an error and is never imported.

Both serialisations are read:
- legacy (``torch.save(..., _use_new_zipfile_serialization=False)``, PyTorch < 1.6): pickles of the
  magic number, the protocol version and sys_info, then the object, then the list of storage keys,
  then for each storage an int64 little-endian element count and the raw elements;
- zip (PyTorch >= 1.6): ``ARCHIVE/data.pkl`` plus one raw file ``ARCHIVE/data/KEY`` per storage.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoints import CheckpointError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class WeightFileError(CheckpointError):
    """A weight file that is not a readable PyTorch state dict of tensors; the message is one line."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by the pickle; its bytes come later in the file."""

    key: str
    dtype: np.dtype
    numel: int
    view: tuple[str, int, int] | None  # (view key, element offset, element count) of old-style views


@dataclass(frozen=True)
class _TensorRef:
    """A tensor over a storage not yet read: ``_rebuild_tensor_v2``'s arguments."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 got no storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(n) for n in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *more):
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names in ``_ALLOWED_GLOBALS``; storages become ``_StorageRef``s."""

    def __init__(self, stream: io.BufferedIOBase, path: Path) -> None:
        super().__init__(stream)
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise WeightFileError(
                f"{self._path}: refusing to load {module}.{name} (only plain tensor state dicts are read)"
            ) from None

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) >= 5 and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r:.80}")
        storage_type, key, _location, numel = saved_id[1:5]
        view = saved_id[5] if len(saved_id) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"storage of unknown type {storage_type!r:.80}")
        if view is not None:
            view_key, view_offset, view_numel = view
            view = (str(view_key), int(view_offset), int(view_numel))
        return _StorageRef(str(key), storage_type.dtype, int(numel), view)


def read_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of the PyTorch state dict in ``path`` (legacy or zip ``.pth``), by name, in file order.

    Raises WeightFileError (a CheckpointError) naming ``path`` when the file is missing, truncated,
    corrupted, not a state dict of tensors, or names a class outside the short allowed list.
    """
    path = Path(path)
    try:
        is_zip = zipfile.is_zipfile(path)
        if is_zip:
            return _read_zip(path)
        data = path.read_bytes()
    except WeightFileError:
        raise
    except OSError as error:
        raise WeightFileError(f"cannot read weight file {path}: {error.strerror or error}") from None
    except (zipfile.BadZipFile, KeyError, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError) as error:
        raise WeightFileError(f"{path}: corrupted PyTorch zip file ({error})") from None
    except MemoryError:
        raise WeightFileError(f"{path}: declares more data than fits in memory") from None
    try:
        return _read_legacy(path, data)
    except MemoryError:
        raise WeightFileError(f"{path}: declares more data than fits in memory") from None


def _read_legacy(path: Path, data: bytes) -> dict[str, np.ndarray]:
    if data.startswith(b"PK\x03\x04"):
        raise WeightFileError(f"{path}: corrupted or truncated PyTorch zip file")
    stream = io.BytesIO(data)
    try:
        magic = _unpickle(stream, path)
        if magic != LEGACY_MAGIC_NUMBER:
            raise WeightFileError(f"{path} is not a PyTorch weight file (bad magic number)")
        protocol = _unpickle(stream, path)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise WeightFileError(f"{path}: unsupported PyTorch serialisation protocol {protocol!r:.40}")
        sys_info = _unpickle(stream, path)
        little_endian = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
        state = _unpickle(stream, path)
        storage_keys = _unpickle(stream, path)
    except EOFError:
        raise WeightFileError(f"{path} is truncated (ends inside its pickled part)") from None
    if not isinstance(storage_keys, list):
        raise WeightFileError(f"{path}: corrupted PyTorch weight file (no storage key list)")

    references = _tensor_references(path, state)
    dtypes = {}
    for reference in references.values():
        dtypes[reference.storage.key] = (reference.storage.dtype, reference.storage.numel)
    storages: dict[str, np.ndarray] = {}
    position = stream.tell()
    for key in storage_keys:
        if key not in dtypes:
            raise WeightFileError(f"{path}: corrupted PyTorch weight file (storage {key!r:.40} of no tensor)")
        dtype, numel = dtypes[key]
        dtype = dtype.newbyteorder("<" if little_endian else ">")
        if position + 8 > len(data):
            raise WeightFileError(f"{path} is truncated (ends before storage {key})")
        (count,) = struct.unpack_from("<q", data, position)
        if count != numel or count < 0:
            raise WeightFileError(f"{path}: corrupted PyTorch weight file (storage {key} holds {count}, expected {numel})")
        end = position + 8 + count * dtype.itemsize
        if end > len(data):
            raise WeightFileError(f"{path} is truncated (ends inside storage {key})")
        storages[key] = np.frombuffer(data, dtype=dtype, count=count, offset=position + 8)
        position = end
    return _materialise(path, references, storages)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    file_bytes = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
        if len(pickles) != 1:
            raise WeightFileError(f"{path}: a zip file but not a PyTorch weight file (no single data.pkl)")
        root = pickles[0][: -len("data.pkl")]
        byteorder = archive.read(f"{root}byteorder").decode().strip() if f"{root}byteorder" in names else "little"
        try:
            state = _unpickle(io.BytesIO(archive.read(pickles[0])), path)
        except EOFError:
            raise WeightFileError(f"{path}: corrupted PyTorch weight file (data.pkl ends early)") from None
        references = _tensor_references(path, state)
        storages = {}
        for reference in references.values():
            storage = reference.storage
            if storage.key in storages:
                continue
            member = f"{root}data/{storage.key}"
            if member not in names:
                raise WeightFileError(f"{path}: corrupted PyTorch weight file (no {member})")
            dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
            needed = storage.numel * dtype.itemsize
            # Checked against the member's declared size and the file's before reading a byte.
            if storage.numel < 0 or archive.getinfo(member).file_size < needed or needed > file_bytes:
                raise WeightFileError(f"{path}: corrupted PyTorch weight file ({member} is short of its {storage.numel} elements)")
            with archive.open(member) as stream:
                raw = stream.read(needed)
            if len(raw) < needed:
                raise WeightFileError(f"{path}: corrupted PyTorch weight file ({member} is short)")
            storages[storage.key] = np.frombuffer(raw, dtype=dtype, count=storage.numel)
    return _materialise(path, references, storages)


def _unpickle(stream: io.BytesIO, path: Path):
    try:
        return _RestrictedUnpickler(stream, path).load()
    except (WeightFileError, EOFError):
        raise
    except pickle.UnpicklingError as error:
        if "truncated" in str(error):
            raise EOFError from None
        raise WeightFileError(f"{path}: corrupted PyTorch weight file (UnpicklingError: {error!s:.80})") from None
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, struct.error,
            OverflowError, MemoryError, RecursionError, UnicodeDecodeError) as error:
        raise WeightFileError(f"{path}: corrupted PyTorch weight file ({type(error).__name__}: {error!s:.80})") from None


def _tensor_references(path: Path, state) -> dict[str, _TensorRef]:
    if not isinstance(state, dict):
        raise WeightFileError(f"{path} holds a {type(state).__name__}, not a state dict")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise WeightFileError(f"{path}: entry {name!r:.60} of the state dict is not a tensor")
    return dict(state)


def _materialise(path: Path, references: dict[str, _TensorRef], storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    arrays = {}
    for name, reference in references.items():
        storage = reference.storage
        if storage.key not in storages:
            raise WeightFileError(f"{path}: corrupted PyTorch weight file (storage {storage.key} of {name} missing)")
        elements = storages[storage.key]
        if storage.view is not None:
            _, view_offset, view_numel = storage.view
            elements = elements[view_offset : view_offset + view_numel]
        shape, strides = reference.shape, reference.strides
        if len(shape) != len(strides) or min(shape, default=1) < 0 or min(strides, default=0) < 0:
            raise WeightFileError(f"{path}: corrupted PyTorch weight file (tensor {name} has shape {shape})")
        extent = reference.offset + sum((n - 1) * s for n, s in zip(shape, strides)) + 1 if all(shape) else 0
        if extent > len(elements):
            raise WeightFileError(f"{path}: corrupted PyTorch weight file (tensor {name} overruns its storage)")
        # A weight tensor never repeats elements: more elements than its storage holds (a zero
        # stride, overlapping strides) would make the copy below allocate what the file never held.
        if math.prod(shape) > len(elements) - reference.offset:
            raise WeightFileError(
                f"{path}: corrupted PyTorch weight file (tensor {name} of shape {shape} declares more elements "
                f"than its storage of {len(elements)} holds)"
            )
        view = np.lib.stride_tricks.as_strided(
            elements[reference.offset :],
            shape=shape,
            strides=tuple(s * elements.itemsize for s in strides),
            writeable=False,
        )
        try:
            arrays[name] = np.array(view, dtype=elements.dtype.newbyteorder("="))
        except MemoryError:
            raise WeightFileError(f"{path}: tensor {name} of shape {shape} does not fit in memory") from None
    return arrays
